//! Market data in an object store: one `SYMBOL.csv`, `SYMBOL.parquet` or Arrow IPC object
//! per symbol under a prefix, read as [`xt_shared::source::CsvDir`] and `ColumnarDir` read
//! files, with the column names of the prefix's manifest.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use xt_shared::bars::{Bars, dates_in_range};
use xt_shared::date::Date;
use xt_shared::layout::{ColumnMap, Format, Layout, MANIFEST, Manifest};
use xt_shared::source::{
    BarSource, DataError, check_symbol, read_csv_dates, read_csv_mapped, read_ipc, read_parquet,
};

use crate::cache::DiskCache;

/// Objects larger than this are fetched in ranges of this size, several at once.
const RANGE: u64 = 8 << 20;
const RANGES_AT_ONCE: usize = 4;

/// A prefix of an object store holding one object per symbol; objects are fetched through
/// the process's [`DiskCache`] and checked against the store on every read.
pub struct ObjectDir {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    ext: &'static str,
    format: Format,
    columns: ColumnMap,
    symbols: Vec<String>,
    cache: Arc<DiskCache>,
    rt: tokio::runtime::Handle,
    range: u64,
}

impl ObjectDir {
    /// Lists the prefix once: the format its manifest states, else Parquet, Arrow or CSV
    /// (the first it has objects of), as a directory is read. An empty or missing prefix is
    /// an error, as a missing directory is.
    pub fn open(
        url: String,
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        cache: Arc<DiskCache>,
        rt: tokio::runtime::Handle,
    ) -> Result<ObjectDir, DataError> {
        let listed = {
            let (store, prefix) = (store.clone(), prefix.clone());
            run(&rt, async move {
                store.list_with_delimiter(Some(&prefix)).await
            })
        }
        .map_err(|e| io(&url, format!("cannot list: {e}")))?;
        let names: Vec<String> = listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .collect();
        let found = Format::among(names.iter().map(String::as_str));
        // Laid out once the manifest, an object under the prefix, is read through it.
        let dir = ObjectDir {
            url: url.clone(),
            store,
            prefix,
            ext: "csv",
            format: Format::Csv,
            columns: ColumnMap::default(),
            symbols: Vec::new(),
            cache,
            rt,
            range: RANGE,
        };
        let manifest = match names.iter().any(|n| n == MANIFEST) {
            true => dir
                .fetch(MANIFEST)?
                .map(|b| Manifest::parse(&b))
                .transpose()?,
            false => None,
        }
        .unwrap_or_default();
        if manifest.layout == Some(Layout::Long) {
            return Err(io(
                &url,
                "long datasets are read from directories; in a store, one object per symbol".into(),
            ));
        }
        let (format, ext) = match (manifest.format, found) {
            (Some(f), _) => (
                f,
                f.extension_among(names.iter().map(String::as_str))
                    .unwrap_or(f.extensions()[0]),
            ),
            (None, Some(found)) => found,
            (None, None) => (Format::Csv, "csv"),
        };
        let mut symbols: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_suffix(ext)?.strip_suffix('.'))
            .filter(|s| check_symbol(s).is_ok())
            .map(str::to_string)
            .collect();
        symbols.sort();
        if symbols.is_empty() {
            return Err(io(
                &url,
                "no SYMBOL.csv, SYMBOL.parquet or SYMBOL.arrow objects under it".into(),
            ));
        }
        Ok(ObjectDir {
            ext,
            format,
            columns: manifest.columns,
            symbols,
            ..dir
        })
    }

    /// Fetches objects larger than `bytes` in ranges of `bytes` (8 MiB unless told).
    pub fn with_range(mut self, bytes: u64) -> ObjectDir {
        self.range = bytes.max(1);
        self
    }

    /// The bytes of object `name` under the prefix (`None`: there is none): the cached copy
    /// when the store says it has not changed, else fetched (in ranges when large) and
    /// cached.
    fn fetch(&self, name: &str) -> Result<Option<Bytes>, DataError> {
        let key = format!("{}/{name}", self.url);
        let location = name
            .split('/')
            .fold(self.prefix.clone(), |p, part| p.join(part));
        let (store, cache, range) = (self.store.clone(), self.cache.clone(), self.range);
        let shown = key.clone();
        run(&self.rt, async move {
            if let Some(e_tag) = cache.e_tag(&key) {
                let options = GetOptions {
                    if_none_match: Some(e_tag),
                    ..GetOptions::default()
                };
                match store.get_opts(&location, options).await {
                    Err(object_store::Error::NotModified { .. }) => {
                        if let Some(bytes) = cache.read(&key) {
                            return Ok(Some(Bytes::from(bytes)));
                        }
                    }
                    Err(object_store::Error::NotFound { .. }) => {
                        cache.remove(&key);
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                    Ok(changed) => {
                        let e_tag = changed.meta.e_tag.clone();
                        let bytes = changed.bytes().await?;
                        cache.insert(&key, e_tag.as_deref(), &bytes);
                        return Ok(Some(bytes));
                    }
                }
            }
            // Changed between the size and the ranges: once more, from the start.
            for _ in 0..3 {
                match fetch_whole(store.as_ref(), &location, range).await {
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(object_store::Error::Precondition { .. }) => continue,
                    Err(e) => return Err(e),
                    Ok((bytes, e_tag)) => {
                        cache.insert(&key, e_tag.as_deref(), &bytes);
                        return Ok(Some(bytes));
                    }
                }
            }
            Err(object_store::Error::Generic {
                store: "xt-objects",
                source: "the object changed on every attempt to read it".into(),
            })
        })
        .map_err(|e| io(&shown, e.to_string()))
    }

    fn symbol_object(&self, symbol: &str) -> Result<Bytes, DataError> {
        check_symbol(symbol)?;
        let name = format!("{symbol}.{}", self.ext);
        self.fetch(&name)?.ok_or_else(|| DataError::UnknownSymbol {
            symbol: symbol.to_string(),
            path: format!("{}/{name}", self.url),
        })
    }
}

/// An object's bytes and ETag: its size first, then one get when small, else ranges several
/// at once, each required to be of that same version.
async fn fetch_whole(
    store: &dyn ObjectStore,
    location: &ObjectPath,
    range: u64,
) -> object_store::Result<(Bytes, Option<String>)> {
    let meta = store.head(location).await?;
    let if_match = meta.e_tag.clone();
    if meta.size <= range {
        let options = GetOptions {
            if_match: if_match.clone(),
            ..GetOptions::default()
        };
        let bytes = store.get_opts(location, options).await?.bytes().await?;
        return Ok((bytes, if_match));
    }
    let ranges = (0..meta.size).step_by(range as usize).map(|start| {
        let options = GetOptions {
            if_match: if_match.clone(),
            range: Some(GetRange::Bounded(start..(start + range).min(meta.size))),
            ..GetOptions::default()
        };
        async move { store.get_opts(location, options).await?.bytes().await }
    });
    let parts: Vec<Bytes> = futures::stream::iter(ranges)
        .buffered(RANGES_AT_ONCE)
        .try_collect()
        .await?;
    let mut whole = Vec::with_capacity(meta.size as usize);
    for part in parts {
        whole.extend_from_slice(&part);
    }
    Ok((Bytes::from(whole), if_match))
}

/// Runs `f` on the reader's runtime and waits for it: callable from the rayon pool and from
/// inside another runtime alike.
fn run<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    futures::executor::block_on(rt.spawn(f)).expect("a read does not panic")
}

fn io(path: &str, message: String) -> DataError {
    DataError::Io {
        path: path.to_string(),
        message,
    }
}

impl BarSource for ObjectDir {
    fn read(&self, symbol: &str) -> Result<Bars, DataError> {
        let bytes = self.symbol_object(symbol)?;
        let shown = format!("{}/{symbol}.{}", self.url, self.ext);
        match self.format {
            Format::Parquet => read_parquet(symbol, &shown, bytes, &self.columns),
            Format::Arrow => read_ipc(
                symbol,
                &shown,
                std::io::Cursor::new(bytes.as_ref()),
                &self.columns,
            ),
            Format::Csv => read_csv_mapped(symbol, bytes.as_ref(), &self.columns),
        }
    }

    fn dates(
        &self,
        symbol: &str,
        start: Option<Date>,
        end: Option<Date>,
    ) -> Result<Vec<Date>, DataError> {
        let dates = if self.format == Format::Csv {
            read_csv_dates(symbol, self.symbol_object(symbol)?.as_ref(), &self.columns)?
        } else {
            self.read(symbol)?.dates
        };
        Ok(dates_in_range(symbol, &dates, start, end)?)
    }

    fn symbols(&self) -> Result<Vec<String>, DataError> {
        Ok(self.symbols.clone())
    }

    /// The object's key and ETag (its size and time when the store gives none), asked of
    /// the store on every call: one small request, not the object, when the bars are in the
    /// process's bar cache.
    fn identity(&self, symbol: &str) -> Option<(String, String)> {
        check_symbol(symbol).ok()?;
        let name = format!("{symbol}.{}", self.ext);
        let location = self.prefix.clone().join(name.as_str());
        let store = self.store.clone();
        let meta = run(&self.rt, async move { store.head(&location).await }).ok()?;
        let version = meta.e_tag.clone().unwrap_or_else(|| {
            let nanos = meta.last_modified.timestamp_nanos_opt().unwrap_or(0);
            format!("{}:{nanos}", meta.size)
        });
        Some((format!("{}/{name}", self.url), version))
    }

    fn side_file(&self, name: &str) -> Result<Option<Vec<u8>>, DataError> {
        xt_shared::spec::check_object_key(name).map_err(|why| io(name, why))?;
        Ok(self.fetch(name)?.map(|b| b.to_vec()))
    }
}
