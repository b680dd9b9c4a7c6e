//! The cluster store's object side: a finished table written to an object store.

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::*;

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
