//! Writing result tables where users open them: Parquet files and a JSON summary.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// Writes one table as `dir/<name>.parquet` (zstd).
pub fn write_parquet(dir: &Path, name: &str, batch: &RecordBatch) -> Result<()> {
    let path = dir.join(format!("{name}.parquet"));
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer
        .close()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
