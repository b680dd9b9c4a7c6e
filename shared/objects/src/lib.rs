//! Object stores for the distributed mode: which store a URL names ([`object_store_at`]),
//! and market data kept in one, one object per symbol as a directory keeps files
//! ([`ObjectDir`]), read with ranged gets through a bounded cache on local disk
//! ([`DiskCache`]) so that a worker on any machine runs any job.

mod cache;
mod source;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use xt_shared::BarSource;
use xt_shared::spec::{DataSpec, SpecError};

pub use cache::{CacheStats, DiskCache};
pub use source::ObjectDir;

/// The object store at `url` (`file:///dir`, `s3://bucket/prefix`, `memory:///`; a plain
/// path is a directory, made if missing) and the path under it. `options` configure the
/// client: for S3, `AWS_*` keys as the AWS tools name them (`AWS_ENDPOINT`,
/// `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`...); other keys are ignored.
pub fn object_store_at(
    url: &str,
    options: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    let url = if url.contains("://") {
        url::Url::parse(url).map_err(|e| anyhow::anyhow!("{url}: {e}"))?
    } else {
        let dir = Path::new(url);
        std::fs::create_dir_all(dir)?;
        url::Url::from_directory_path(dir.canonicalize()?)
            .map_err(|_| anyhow::anyhow!("{url}: not a directory path"))?
    };
    if url.scheme() == "file" {
        std::fs::create_dir_all(url.path())?;
    }
    let options = options
        .into_iter()
        .filter(|(k, _)| k.to_ascii_uppercase().starts_with("AWS_"));
    let (store, path) =
        object_store::parse_url_opts(&url, options).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    Ok((Arc::from(store), path))
}

/// How a process reads market data: directories and synthetic markets as `xt_shared` does,
/// objects in a store through one cache on disk and one small runtime of its own (readers
/// are called from the rayon pool and from async handlers alike), both made at the first
/// object read: a process that reads only files has neither.
pub struct DataAccess {
    cache_dir: PathBuf,
    capacity: u64,
    options: Vec<(String, String)>,
    objects: Mutex<Option<(Arc<DiskCache>, tokio::runtime::Handle)>>,
}

impl std::fmt::Debug for DataAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataAccess")
            .field("cache_dir", &self.cache_dir)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for DataAccess {
    fn default() -> Self {
        DataAccess::build(&default_cache_dir(), DEFAULT_CACHE_BYTES, std::env::vars())
    }
}

impl DataAccess {
    /// Objects cached under `cache_dir`, at most `capacity` bytes of them; `options` as
    /// [`object_store_at`] takes them (the process's `AWS_*` variables, usually).
    pub fn new(
        cache_dir: &Path,
        capacity: u64,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Arc<DataAccess> {
        Arc::new(DataAccess::build(cache_dir, capacity, options))
    }

    fn build(
        cache_dir: &Path,
        capacity: u64,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> DataAccess {
        DataAccess {
            cache_dir: cache_dir.to_path_buf(),
            capacity,
            // Only what the object store client reads is kept, not the whole environment.
            options: options
                .into_iter()
                .filter(|(k, _)| k.to_ascii_uppercase().starts_with("AWS_"))
                .collect(),
            objects: Mutex::new(None),
        }
    }

    /// The default cache ([`default_cache_dir`], [`DEFAULT_CACHE_BYTES`]) and the
    /// process's `AWS_*` variables.
    pub fn with_defaults() -> Arc<DataAccess> {
        Arc::default()
    }

    fn objects(&self) -> std::io::Result<(Arc<DiskCache>, tokio::runtime::Handle)> {
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = objects.as_ref() {
            return Ok(o.clone());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("xt-objects")
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        // The runtime lives as long as the process: a reader may be called until exit, and
        // a runtime cannot be dropped from async code.
        std::mem::forget(rt);
        let cache = Arc::new(DiskCache::open(&self.cache_dir, self.capacity)?);
        *objects = Some((cache, handle));
        Ok(objects.clone().expect("just made"))
    }

    /// The source `data` names.
    pub fn open(&self, data: &DataSpec) -> Result<Arc<dyn BarSource>, SpecError> {
        match data {
            DataSpec::Object(url) => {
                let bad = |e: String| SpecError::new("data", e);
                let (cache, rt) = self.objects().map_err(|e| {
                    bad(format!(
                        "the object cache in {}: {e}",
                        self.cache_dir.display()
                    ))
                })?;
                let (store, prefix) = object_store_at(url, self.options.clone())
                    .map_err(|e| bad(format!("{e:#}")))?;
                let dir = ObjectDir::open(url.clone(), store, prefix, cache, rt)
                    .map_err(|e| bad(e.to_string()))?;
                // Decoded bars in the process's bar cache, keyed by ETag; the objects
                // themselves in the disk cache above.
                Ok(Arc::new(xt_shared::cache::Cached::new(
                    Arc::new(dir),
                    xt_shared::cache::BarCache::global(),
                )))
            }
            // Files are read through the process's bar cache: a second batch over them
            // reads nothing.
            _ => Ok(Arc::new(xt_shared::cache::Cached::new(
                xt_shared::open::open_source(data)?,
                xt_shared::cache::BarCache::global(),
            ))),
        }
    }

    /// What the object cache has done so far.
    pub fn cache_stats(&self) -> CacheStats {
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        objects.as_ref().map(|(c, _)| c.stats()).unwrap_or_default()
    }
}

/// The default bound of the object cache on disk.
pub const DEFAULT_CACHE_BYTES: u64 = 2 << 30;

/// Where the object cache lives unless told: one directory per user, so that two users'
/// workers on one machine do not clear each other's.
pub fn default_cache_dir() -> std::path::PathBuf {
    let user = std::env::var("USER").unwrap_or_else(|_| "xt".into());
    std::env::temp_dir().join(format!("xt-data-cache-{user}"))
}
