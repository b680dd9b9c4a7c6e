//! The cluster store's object side: which object store a `--results` URL names, and a
//! finished table written to one.

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::*;

/// The object store at `url` (`file:///dir`, `s3://bucket/prefix`, `memory:///`; a plain
/// path is a directory) and the path under it. `options` configure the client: for S3,
/// `AWS_*` keys as the AWS tools name them (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`,
/// `AWS_ACCESS_KEY_ID`...); other keys are ignored.
pub fn object_store_at(
    url: &str,
    options: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    let url = if url.contains("://") {
        url::Url::parse(url).map_err(|e| anyhow::anyhow!("results {url}: {e}"))?
    } else {
        let dir = Path::new(url);
        std::fs::create_dir_all(dir)?;
        url::Url::from_directory_path(dir.canonicalize()?)
            .map_err(|_| anyhow::anyhow!("results {url}: not a directory path"))?
    };
    if url.scheme() == "file" {
        std::fs::create_dir_all(url.path())?;
    }
    let options = options
        .into_iter()
        .filter(|(k, _)| k.to_ascii_uppercase().starts_with("AWS_"));
    let (store, path) = object_store::parse_url_opts(&url, options)
        .map_err(|e| anyhow::anyhow!("results {url}: {e}"))?;
    Ok((Arc::from(store), path))
}

/// A finished table of the cluster store: Parquet in a local file, uploaded whole when
/// committed (a table is written once, by the batch's finish).
pub(super) struct ObjectSink {
    pub(super) writer: parquet::arrow::ArrowWriter<File>,
    pub(super) temporary: PathBuf,
    pub(super) objects: Arc<dyn ObjectStore>,
    pub(super) path: ObjectPath,
    pub(super) rt: Option<tokio::runtime::Handle>,
}

impl TableSink for ObjectSink {
    fn write(&mut self, rows: &RecordBatch) -> io::Result<()> {
        self.writer.write(rows).map_err(other)
    }

    fn commit(self: Box<Self>) -> io::Result<()> {
        let ObjectSink {
            writer,
            temporary,
            objects,
            path,
            rt,
        } = *self;
        writer.close().map_err(other)?;
        let bytes = std::fs::read(&temporary);
        let _ = std::fs::remove_file(&temporary);
        let bytes = bytes?;
        let rt = rt.ok_or_else(|| other("the store is closed"))?;
        futures::executor::block_on(rt.spawn(async move {
            objects
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(|e| other(format!("writing {path}: {e}")))
        }))
        .map_err(other)??;
        Ok(())
    }
}
