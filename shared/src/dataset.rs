//! A long Parquet dataset: many symbols' bars in one table with a `symbol` column, as most
//! vendors' and Kaggle exports come. One file, many, or hive-partitioned directories
//! (`symbol=600519.SH/`, `year=2024/`). An index built once when the dataset is opened
//! (each file's row groups and the symbols in them, read from the symbol column alone)
//! lets a job read only the row groups that hold its symbol, never the whole dataset.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};

use crate::bars::Bars;
use crate::source::{BAR_COLUMNS, BarSource, DataError, RACY, append_batch, check_symbol};

/// The names a column goes by in the exports users have, lower case; the first is ours.
const ALIASES: [(&str, &[&str]); 7] = [
    (
        "symbol",
        &[
            "symbol",
            "ts_code",
            "ticker",
            "code",
            "instrument",
            "sec_code",
        ],
    ),
    (
        "date",
        &["date", "trade_date", "datetime", "timestamp", "day", "time"],
    ),
    ("open", &["open"]),
    ("high", &["high"]),
    ("low", &["low"]),
    ("close", &["close"]),
    ("volume", &["volume", "vol"]),
];

/// Which of `fields` is column `name` (by any of its aliases, case aside).
fn find(fields: &[Arc<Field>], name: &str) -> Option<usize> {
    let aliases = ALIASES.iter().find(|(n, _)| *n == name)?.1;
    aliases
        .iter()
        .find_map(|a| fields.iter().position(|f| f.name().eq_ignore_ascii_case(a)))
}

struct DatasetFile {
    path: PathBuf,
    /// Relative to the dataset's root: how errors name it.
    shown: String,
    /// The `symbol=` partition its directory names, if any.
    partition: Option<String>,
    /// Its footer, parsed once when the dataset is opened: each read goes straight to its
    /// row groups.
    meta: ArrowReaderMetadata,
}

/// A long Parquet dataset under one root directory.
pub struct ParquetDataset {
    root: PathBuf,
    files: Vec<DatasetFile>,
    /// Per symbol: the files and row groups holding its rows.
    index: BTreeMap<String, Vec<(usize, Vec<usize>)>>,
}

/// Deepest directory nesting walked under a dataset's root.
const MAX_DEPTH: usize = 6;

impl ParquetDataset {
    /// Opens the dataset under `root` (a directory), indexing its files.
    pub fn open(root: impl AsRef<Path>) -> Result<ParquetDataset, DataError> {
        let root = root.as_ref().canonicalize().map_err(|e| DataError::Io {
            path: root.as_ref().display().to_string(),
            message: format!("cannot open dataset: {e}"),
        })?;
        let mut paths = Vec::new();
        walk(&root, &root, 0, &mut paths)?;
        paths.sort();
        if paths.is_empty() {
            return Err(DataError::Io {
                path: root.display().to_string(),
                message: "no .parquet file in the dataset".into(),
            });
        }
        let mut files = Vec::new();
        let mut index: BTreeMap<String, Vec<(usize, Vec<usize>)>> = BTreeMap::new();
        for path in paths {
            let shown = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let partition = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .components()
                .filter_map(|c| c.as_os_str().to_str())
                .find_map(|seg| seg.strip_prefix("symbol=").map(str::to_string));
            let k = files.len();
            let (meta, symbols) = index_file(&path, &shown, partition.as_deref())?;
            for (symbol, groups) in symbols {
                check_symbol(&symbol)?;
                index.entry(symbol).or_default().push((k, groups));
            }
            files.push(DatasetFile {
                path,
                shown,
                partition,
                meta,
            });
        }
        Ok(ParquetDataset { root, files, index })
    }

    /// The row groups a read of `symbol` opens, over all files.
    pub fn row_groups(&self, symbol: &str) -> usize {
        self.index
            .get(symbol)
            .map_or(0, |parts| parts.iter().map(|(_, g)| g.len()).sum())
    }

    /// Whether `dir` holds a long dataset rather than one file per symbol: a `k=v`
    /// partition directory, or a Parquet file with a symbol column.
    pub fn detect(dir: &Path) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        let mut first_file = None;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains('='))
            {
                return true;
            }
            if p.extension().is_some_and(|x| x == "parquet") && first_file.is_none() {
                first_file = Some(p);
            }
        }
        first_file.is_some_and(|p| {
            File::open(&p)
                .ok()
                .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).ok())
                .is_some_and(|b| find(b.schema().fields(), "symbol").is_some())
        })
    }
}

/// The `.parquet` files under `dir`, none outside `root` once links are resolved.
fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
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
            walk(root, &real, depth + 1, out)?;
        } else if real.is_file() && real.extension().is_some_and(|x| x == "parquet") {
            out.push(real);
        }
    }
    Ok(())
}

/// A file's footer, and each symbol in the file with the row groups that hold it: from its
/// partition, else from its symbol column read alone.
fn index_file(
    path: &Path,
    shown: &str,
    partition: Option<&str>,
) -> Result<(ArrowReaderMetadata, HashMap<String, Vec<usize>>), DataError> {
    let io = |m: String| DataError::Io {
        path: shown.to_string(),
        message: m,
    };
    let file = File::open(path).map_err(|e| io(e.to_string()))?;
    let meta =
        ArrowReaderMetadata::load(&file, Default::default()).map_err(|e| io(e.to_string()))?;
    let groups = meta.metadata().num_row_groups();
    let mut out: HashMap<String, Vec<usize>> = HashMap::new();
    if let Some(symbol) = partition {
        out.insert(symbol.to_string(), (0..groups).collect());
        return Ok((meta, out));
    }
    let Some(col) = find(meta.schema().fields(), "symbol") else {
        return Err(io(
            "no symbol column (symbol, ts_code, ticker, code or instrument) and no symbol= partition"
                .into(),
        ));
    };
    let mask = ProjectionMask::roots(meta.parquet_schema(), [col]);
    for g in 0..groups {
        let file = file.try_clone().map_err(|e| io(e.to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
            .with_projection(mask.clone())
            .with_row_groups(vec![g])
            .build()
            .map_err(|e| io(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| io(e.to_string()))?;
            let text = arrow::compute::cast(batch.column(0), &DataType::Utf8)
                .map_err(|_| io("the symbol column is not text".into()))?;
            let text = text.as_string::<i32>();
            for i in 0..text.len() {
                if text.is_valid(i) {
                    let groups = out.entry(text.value(i).to_string()).or_default();
                    if groups.last() != Some(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    Ok((meta, out))
}

/// `batch`'s rows of `symbol` (all of them when `partitioned`), with its columns under our
/// names: a missing one is an error naming what was looked for.
fn rows_of(batch: &RecordBatch, symbol: &str, partitioned: bool) -> Result<RecordBatch, DataError> {
    let fields = batch.schema().fields().clone();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut out_fields = Vec::new();
    for name in BAR_COLUMNS {
        let i = find(&fields, name).ok_or(DataError::MissingColumn {
            symbol: symbol.to_string(),
            column: name,
        })?;
        let mut c = batch.column(i).clone();
        // Timestamps and 64-bit dates are days for daily bars.
        if name == "date" && matches!(c.data_type(), DataType::Timestamp(_, _) | DataType::Date64) {
            c = arrow::compute::cast(&c, &DataType::Date32).map_err(|e| DataError::Io {
                path: symbol.to_string(),
                message: e.to_string(),
            })?;
        }
        out_fields.push(Field::new(name, c.data_type().clone(), true));
        columns.push(c);
    }
    let renamed =
        RecordBatch::try_new(Arc::new(Schema::new(out_fields)), columns).map_err(|e| {
            DataError::Io {
                path: symbol.to_string(),
                message: e.to_string(),
            }
        })?;
    if partitioned {
        return Ok(renamed);
    }
    let i = find(&fields, "symbol").ok_or(DataError::MissingColumn {
        symbol: symbol.to_string(),
        column: "symbol",
    })?;
    let text =
        arrow::compute::cast(batch.column(i), &DataType::Utf8).map_err(|e| DataError::Io {
            path: symbol.to_string(),
            message: e.to_string(),
        })?;
    let text = text.as_string::<i32>();
    let keep: arrow::array::BooleanArray = (0..text.len())
        .map(|k| Some(text.is_valid(k) && text.value(k) == symbol))
        .collect();
    arrow::compute::filter_record_batch(&renamed, &keep).map_err(|e| DataError::Io {
        path: symbol.to_string(),
        message: e.to_string(),
    })
}

impl BarSource for ParquetDataset {
    fn read(&self, symbol: &str) -> Result<Bars, DataError> {
        check_symbol(symbol)?;
        let Some(parts) = self.index.get(symbol) else {
            return Err(DataError::UnknownSymbol {
                symbol: symbol.to_string(),
                path: "no row of the dataset".into(),
            });
        };
        let mut rows: Vec<RecordBatch> = Vec::new();
        for (k, groups) in parts {
            let f = &self.files[*k];
            let io = |m: String| DataError::Io {
                path: f.shown.clone(),
                message: m,
            };
            let file = File::open(&f.path).map_err(|e| io(e.to_string()))?;
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, f.meta.clone())
                .with_row_groups(groups.clone())
                .build()
                .map_err(|e| io(e.to_string()))?;
            for batch in reader {
                let batch = batch.map_err(|e| io(e.to_string()))?;
                let mine = rows_of(&batch, symbol, f.partition.is_some())?;
                if mine.num_rows() > 0 {
                    rows.push(mine);
                }
            }
        }
        let mut bars = Bars::new(symbol);
        for b in &rows {
            append_batch(symbol, b, &mut bars)?;
        }
        sort_by_date(symbol, bars)
    }

    fn symbols(&self) -> Result<Vec<String>, DataError> {
        Ok(self.index.keys().cloned().collect())
    }

    /// The dataset's root and symbol, versioned by the size and time of every file holding
    /// the symbol (none while one of them is within the racy window).
    fn identity(&self, symbol: &str) -> Option<(String, String)> {
        let mut version = String::new();
        for (k, _) in self.index.get(symbol)? {
            let meta = std::fs::metadata(&self.files[*k].path).ok()?;
            let modified = meta.modified().ok()?;
            if modified.elapsed().map_or(true, |age| age < RACY) {
                return None;
            }
            let nanos = modified
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_nanos();
            version += &format!("{}:{}:{nanos};", self.files[*k].shown, meta.len());
        }
        Some((format!("{}#{symbol}", self.root.display()), version))
    }
}

/// The bars in date order (a dataset's files need not be); two rows of one date are an
/// error naming it, not a silent choice between them.
fn sort_by_date(symbol: &str, bars: Bars) -> Result<Bars, DataError> {
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

/// Writes `bars` as one long Parquet file (`symbol, date, open, high, low, close,
/// volume`), symbol after symbol, in row groups of `row_group` rows: the layout
/// [`ParquetDataset`] reads best (each symbol in few row groups).
pub fn write_long(
    bars: &[Bars],
    path: &Path,
    row_group: usize,
) -> Result<(), parquet::errors::ParquetError> {
    use arrow::array::{Date32Array, Float64Array, StringArray};
    let mut fields = vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("date", DataType::Date32, false),
    ];
    fields.extend(
        BAR_COLUMNS[1..]
            .iter()
            .map(|c| Field::new(*c, DataType::Float64, false)),
    );
    let schema = Arc::new(Schema::new(fields));
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group.max(1)))
        .build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(File::create(path)?, schema.clone(), Some(props))?;
    for b in bars {
        let floats = |v: &[f64]| Arc::new(Float64Array::from(v.to_vec())) as ArrayRef;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![b.symbol.as_str(); b.len()])),
                Arc::new(Date32Array::from(b.dates.clone())),
                floats(&b.open),
                floats(&b.high),
                floats(&b.low),
                floats(&b.close),
                floats(&b.volume),
            ],
        )?;
        w.write(&batch)?;
    }
    w.close()?;
    Ok(())
}
