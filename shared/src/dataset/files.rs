//! The files of a long dataset: found under its root, indexed by the symbols in each of
//! their chunks (Parquet row groups, Arrow IPC record batches), and read chunk by chunk.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};

use crate::bars::Bars;
use crate::layout::{ColumnMap, Format};
use crate::source::{DataError, Version, column, file_version};

/// Deepest directory nesting walked under a dataset's root.
const MAX_DEPTH: usize = 6;

/// What a file was when it was indexed.
pub(super) struct Listed {
    pub path: PathBuf,
    pub version: Version,
}

pub(super) enum Kind {
    /// Its footer, parsed once when the dataset is indexed: each read goes straight to
    /// its row groups.
    Parquet(ArrowReaderMetadata),
    Arrow,
}

pub(super) struct DatasetFile {
    pub path: PathBuf,
    pub version: Version,
    /// Relative to the dataset's root: how errors name it.
    pub shown: String,
    /// The `symbol=` partition its directory names, if any.
    pub partition: Option<String>,
    pub kind: Kind,
}

/// The files of `format` under `dir`, with their versions; none outside `root` once links
/// are resolved. `racy` is set when one was modified too recently to trust its version.
pub(super) fn walk(
    root: &Path,
    dir: &Path,
    format: Format,
    depth: usize,
    out: &mut Vec<Listed>,
    racy: &mut bool,
) -> Result<(), DataError> {
    let io = |e: std::io::Error| DataError::Io {
        path: dir.strip_prefix(root).unwrap_or(dir).display().to_string(),
        message: e.to_string(),
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Ok(real) = path.canonicalize() else {
            continue;
        };
        if !real.starts_with(root) {
            continue;
        }
        if real.is_dir() && depth < MAX_DEPTH {
            walk(root, &real, format, depth + 1, out, racy)?;
        } else if real.is_file() && Format::of(&real) == Some(format) {
            let Some((version, fresh)) = file_version(&real) else {
                continue;
            };
            *racy |= fresh;
            out.push(Listed {
                path: real,
                version,
            });
        }
    }
    Ok(())
}

/// Indexes one file: each symbol in it with the chunks that hold it, from its partition,
/// else from its symbol column read alone.
pub(super) fn index_file(
    root: &Path,
    listed: &Listed,
    format: Format,
    columns: &ColumnMap,
) -> Result<(DatasetFile, HashMap<String, Vec<usize>>), DataError> {
    let path = &listed.path;
    let rel = path.strip_prefix(root).unwrap_or(path);
    let shown = rel.display().to_string();
    let partition = rel
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .find_map(|seg| seg.strip_prefix("symbol=").map(str::to_string));
    let io = |m: String| DataError::Io {
        path: shown.clone(),
        message: m,
    };
    let no_symbol = || {
        io(format!(
            "no symbol column (looked for {}) and no symbol= partition",
            columns.looked_for("symbol")
        ))
    };
    let file = File::open(path).map_err(|e| io(e.to_string()))?;
    let mut symbols: HashMap<String, Vec<usize>> = HashMap::new();
    let mut note = |g: usize, batch: &RecordBatch| -> Result<(), DataError> {
        let text = arrow::compute::cast(batch.column(0), &DataType::Utf8)
            .map_err(|_| io("the symbol column is not text".into()))?;
        let text = text.as_string::<i32>();
        for i in 0..text.len() {
            if !text.is_valid(i) {
                continue;
            }
            // Looked up before inserting: a key is allocated once per symbol, not per row.
            match symbols.get_mut(text.value(i)) {
                Some(groups) if groups.last() == Some(&g) => {}
                Some(groups) => groups.push(g),
                None => {
                    symbols.insert(text.value(i).to_string(), vec![g]);
                }
            }
        }
        Ok(())
    };
    let (kind, chunks) = match format {
        Format::Parquet => {
            let meta = ArrowReaderMetadata::load(&file, Default::default())
                .map_err(|e| io(e.to_string()))?;
            let groups = meta.metadata().num_row_groups();
            if partition.is_none() {
                let names = meta.schema().fields().iter().map(|f| f.name().as_str());
                let col = columns.find(names, "symbol").ok_or_else(no_symbol)?;
                let mask = ProjectionMask::roots(meta.parquet_schema(), [col]);
                for g in 0..groups {
                    let file = file.try_clone().map_err(|e| io(e.to_string()))?;
                    let reader =
                        ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
                            .with_projection(mask.clone())
                            .with_row_groups(vec![g])
                            .build()
                            .map_err(|e| io(e.to_string()))?;
                    for batch in reader {
                        note(g, &batch.map_err(|e| io(e.to_string()))?)?;
                    }
                }
            }
            (Kind::Parquet(meta), groups)
        }
        Format::Arrow => {
            let reader = arrow::ipc::reader::FileReader::try_new(&file, None)
                .map_err(|e| io(e.to_string()))?;
            let batches = reader.num_batches();
            if partition.is_none() {
                let schema = reader.schema();
                let names = schema.fields().iter().map(|f| f.name().as_str());
                let col = columns.find(names, "symbol").ok_or_else(no_symbol)?;
                let reader = arrow::ipc::reader::FileReader::try_new(&file, Some(vec![col]))
                    .map_err(|e| io(e.to_string()))?;
                for (g, batch) in reader.enumerate() {
                    note(g, &batch.map_err(|e| io(e.to_string()))?)?;
                }
            }
            (Kind::Arrow, batches)
        }
        Format::Csv => return Err(io("a long dataset is Parquet or Arrow".into())),
    };
    if let Some(symbol) = &partition {
        symbols.insert(symbol.clone(), (0..chunks).collect());
    }
    let file = DatasetFile {
        path: path.clone(),
        version: listed.version,
        shown,
        partition,
        kind,
    };
    Ok((file, symbols))
}

impl DatasetFile {
    /// Appends `symbol`'s rows in `chunks` of the file to `bars`.
    pub(super) fn read_into(
        &self,
        symbol: &str,
        chunks: &[usize],
        columns: &ColumnMap,
        bars: &mut Bars,
    ) -> Result<(), DataError> {
        let io = |m: String| DataError::Io {
            path: self.shown.clone(),
            message: m,
        };
        let file = File::open(&self.path).map_err(|e| io(e.to_string()))?;
        let mut take = |batch: RecordBatch| -> Result<(), DataError> {
            let mine = self.rows_of(&batch, symbol, columns)?;
            crate::source::append_batch(symbol, &mine, bars, columns)
        };
        match &self.kind {
            Kind::Parquet(meta) => {
                let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
                    .with_row_groups(chunks.to_vec())
                    .build()
                    .map_err(|e| io(e.to_string()))?;
                for batch in reader {
                    take(batch.map_err(|e| io(e.to_string()))?)?;
                }
            }
            Kind::Arrow => {
                let mut reader = arrow::ipc::reader::FileReader::try_new(file, None)
                    .map_err(|e| io(e.to_string()))?;
                for &g in chunks {
                    reader.set_index(g).map_err(|e| io(e.to_string()))?;
                    if let Some(batch) = reader.next() {
                        take(batch.map_err(|e| io(e.to_string()))?)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `batch`'s rows of `symbol` (all of them in a symbol's partition).
    fn rows_of(
        &self,
        batch: &RecordBatch,
        symbol: &str,
        columns: &ColumnMap,
    ) -> Result<RecordBatch, DataError> {
        if self.partition.is_some() {
            return Ok(batch.clone());
        }
        let io = |e: arrow::error::ArrowError| DataError::Io {
            path: self.shown.clone(),
            message: e.to_string(),
        };
        let symbols = column(symbol, batch, "symbol", columns)?;
        let text = arrow::compute::cast(symbols, &DataType::Utf8).map_err(io)?;
        let text = text.as_string::<i32>();
        let keep: arrow::array::BooleanArray = (0..text.len())
            .map(|k| Some(text.is_valid(k) && text.value(k) == symbol))
            .collect();
        arrow::compute::filter_record_batch(batch, &keep).map_err(io)
    }
}

/// The bars in date order (a dataset's files need not be); two rows of one date are an
/// error naming it, not a silent choice between them.
pub(super) fn sort_by_date(symbol: &str, bars: Bars) -> Result<Bars, DataError> {
    // Most tables are in date order already: nothing to move.
    if bars.dates.windows(2).all(|w| w[0] < w[1]) {
        return Ok(bars);
    }
    let mut order: Vec<usize> = (0..bars.len()).collect();
    order.sort_by_key(|&i| bars.dates[i]);
    if let Some(w) = order
        .windows(2)
        .find(|w| bars.dates[w[0]] == bars.dates[w[1]])
    {
        return Err(DataError::Io {
            path: symbol.to_string(),
            message: format!(
                "duplicated (symbol, date) rows: {symbol} has {} more than once",
                crate::date::format_date(bars.dates[w[0]])
            ),
        });
    }
    let pick = |v: &[f64]| order.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    Ok(Bars {
        symbol: bars.symbol.clone(),
        dates: order.iter().map(|&i| bars.dates[i]).collect(),
        open: pick(&bars.open),
        high: pick(&bars.high),
        low: pick(&bars.low),
        close: pick(&bars.close),
        volume: pick(&bars.volume),
    })
}

/// `bars` as one long record batch: `symbol`, then the columns of a per-symbol file.
pub(super) fn long_batch(bars: &Bars) -> Result<RecordBatch, arrow::error::ArrowError> {
    let batch = crate::source::bars_batch(bars)?;
    let symbol: ArrayRef = Arc::new(StringArray::from(vec![bars.symbol.as_str(); bars.len()]));
    let columns = std::iter::once(symbol).chain(batch.columns().iter().cloned());
    RecordBatch::try_new(long_schema(), columns.collect())
}

/// The long table's schema: `symbol`, then a per-symbol file's fields.
pub(super) fn long_schema() -> Arc<Schema> {
    let symbol = Field::new("symbol", DataType::Utf8, false);
    let all = std::iter::once(symbol).chain(crate::source::bars_fields());
    Arc::new(Schema::new(all.collect::<Vec<_>>()))
}
