//! A long dataset: many symbols' bars in one table with a `symbol` column, as most vendors'
//! and Kaggle exports come, in Parquet or Arrow IPC files. One file, many, or
//! hive-partitioned directories (`symbol=600519.SH/`, `year=2024/`). An index built when the
//! dataset is first opened (each file's chunks and the symbols in them, read from the symbol
//! column alone) lets a job read only the chunks that hold its symbol, never the whole
//! dataset. The index is kept for the process and shared by every batch over the same
//! files; a file that changes, appears or goes away makes it be built again.

mod files;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::bars::Bars;
use crate::layout::{ColumnMap, Format};
use crate::source::file_version;
use crate::source::{BarSource, DataError, check_symbol};
use files::{DatasetFile, Listed};

/// A dataset's files and where each symbol's rows are.
struct Indexed {
    files: Vec<DatasetFile>,
    /// Per symbol: the files and chunks holding its rows.
    index: BTreeMap<String, Vec<(usize, Vec<usize>)>>,
}

impl Indexed {
    /// Whether `listed` are the very files, in their versions, the index was built from.
    fn built_from(&self, listed: &[Listed]) -> bool {
        self.files.len() == listed.len()
            && self
                .files
                .iter()
                .zip(listed)
                .all(|(f, l)| f.path == l.path && f.version == l.version)
    }
}

/// A long dataset under one root directory.
pub struct LongDataset {
    root: PathBuf,
    format: Format,
    columns: ColumnMap,
    state: RwLock<Arc<Indexed>>,
}

type Key = (PathBuf, Format, ColumnMap);

/// The datasets this process has indexed, by root, format and column names. Few: one per
/// data directory batches name.
fn opened() -> &'static Mutex<HashMap<Key, Arc<Indexed>>> {
    static OPENED: OnceLock<Mutex<HashMap<Key, Arc<Indexed>>>> = OnceLock::new();
    OPENED.get_or_init(Default::default)
}

/// More datasets than this in one process and the kept indexes are dropped.
const MAX_OPENED: usize = 64;

impl LongDataset {
    /// Opens the dataset under `root`, its format and columns as
    /// [`crate::layout::describe`] finds them.
    pub fn open(root: impl AsRef<Path>) -> Result<LongDataset, DataError> {
        let described = crate::layout::describe(root.as_ref())?;
        Self::open_as(root, described.format, described.columns)
    }

    /// Opens the dataset under `root`, of `format` files with `columns`' names: the
    /// process's index of it when its files have not changed, else a new one.
    pub fn open_as(
        root: impl AsRef<Path>,
        format: Format,
        columns: ColumnMap,
    ) -> Result<LongDataset, DataError> {
        let root = root.as_ref().canonicalize().map_err(|e| DataError::Io {
            path: root.as_ref().display().to_string(),
            message: format!("cannot open dataset: {e}"),
        })?;
        let state = index(&root, format, &columns)?;
        Ok(LongDataset {
            root,
            format,
            columns,
            state: RwLock::new(state),
        })
    }

    /// The chunks (row groups, record batches) a read of `symbol` opens, over all files.
    pub fn row_groups(&self, symbol: &str) -> usize {
        self.snapshot()
            .index
            .get(symbol)
            .map_or(0, |parts| parts.iter().map(|(_, g)| g.len()).sum())
    }

    /// Whether `self` and `other` read through one index: the one the process kept.
    pub fn shares_index_with(&self, other: &LongDataset) -> bool {
        Arc::ptr_eq(&self.snapshot(), &other.snapshot())
    }

    fn snapshot(&self) -> Arc<Indexed> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The index again from the files as they are now.
    fn refresh(&self) -> Result<Arc<Indexed>, DataError> {
        let fresh = index(&self.root, self.format, &self.columns)?;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(fresh)
    }
}

/// The index of the dataset at `root`: the kept one when every file is as it was, else
/// built and kept (unless a file is too fresh for its version to be trusted).
fn index(root: &Path, format: Format, columns: &ColumnMap) -> Result<Arc<Indexed>, DataError> {
    let mut listed = Vec::new();
    let mut racy = false;
    files::walk(root, root, format, 0, &mut listed, &mut racy)?;
    listed.sort_by(|a, b| a.path.cmp(&b.path));
    if listed.is_empty() {
        return Err(DataError::Io {
            path: root.display().to_string(),
            message: format!(
                "no .{} file in the dataset",
                format.extensions().join(" or .")
            ),
        });
    }
    let key = (root.to_path_buf(), format, columns.clone());
    if !racy
        && let Some(kept) = opened()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|kept| kept.built_from(&listed))
    {
        return Ok(kept.clone());
    }
    let built = Arc::new(build(root, &listed, format, columns)?);
    if !racy {
        let mut opened = opened().lock().unwrap_or_else(|e| e.into_inner());
        if opened.len() >= MAX_OPENED {
            opened.clear();
        }
        opened.insert(key, built.clone());
    }
    Ok(built)
}

fn build(
    root: &Path,
    listed: &[Listed],
    format: Format,
    columns: &ColumnMap,
) -> Result<Indexed, DataError> {
    let mut files = Vec::new();
    let mut index: BTreeMap<String, Vec<(usize, Vec<usize>)>> = BTreeMap::new();
    for l in listed {
        let (file, symbols) = files::index_file(root, l, format, columns)?;
        for (symbol, chunks) in symbols {
            check_symbol(&symbol)?;
            index.entry(symbol).or_default().push((files.len(), chunks));
        }
        files.push(file);
    }
    Ok(Indexed { files, index })
}

/// Whether every file holding `parts` is still the version the index was built from.
fn current(state: &Indexed, parts: &[(usize, Vec<usize>)]) -> bool {
    parts.iter().all(|(k, _)| {
        let f = &state.files[*k];
        file_version(&f.path).is_some_and(|(v, _)| v == f.version)
    })
}

impl BarSource for LongDataset {
    fn read(&self, symbol: &str) -> Result<Bars, DataError> {
        check_symbol(symbol)?;
        let mut state = self.snapshot();
        // A symbol the index does not know, or whose files changed since: the files
        // as they are now.
        if state
            .index
            .get(symbol)
            .is_none_or(|parts| !current(&state, parts))
        {
            state = self.refresh()?;
        }
        let Some(parts) = state.index.get(symbol) else {
            return Err(DataError::UnknownSymbol {
                symbol: symbol.to_string(),
                path: "no row of the dataset".into(),
            });
        };
        let mut bars = Bars::new(symbol);
        for (k, chunks) in parts {
            state.files[*k].read_into(symbol, chunks, &self.columns, &mut bars)?;
        }
        files::sort_by_date(symbol, bars)
    }

    fn symbols(&self) -> Result<Vec<String>, DataError> {
        Ok(self.snapshot().index.keys().cloned().collect())
    }

    /// The dataset's root and symbol, versioned by the size and time of every file holding
    /// the symbol now (none while one of them is within the racy window).
    fn identity(&self, symbol: &str) -> Option<(String, String)> {
        let state = self.snapshot();
        let mut version = String::new();
        for (k, _) in state.index.get(symbol)? {
            let f = &state.files[*k];
            let ((len, nanos), racy) = file_version(&f.path)?;
            if racy {
                return None;
            }
            version += &format!("{}:{len}:{nanos};", f.shown);
        }
        Some((format!("{}#{symbol}", self.root.display()), version))
    }
}

/// Writes `bars` as one long Parquet file (`symbol, date, open, high, low, close,
/// volume`), symbol after symbol, in row groups of `row_group` rows: the layout
/// [`LongDataset`] reads best (each symbol in few row groups).
pub fn write_long(
    bars: &[Bars],
    path: &Path,
    row_group: usize,
) -> Result<(), parquet::errors::ParquetError> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group.max(1)))
        .build();
    let file = std::fs::File::create(path)?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, files::long_schema(), Some(props))?;
    for b in bars {
        w.write(&files::long_batch(b)?)?;
    }
    w.close()?;
    Ok(())
}

/// Writes `bars` as one long Arrow IPC file, a record batch per symbol.
pub fn write_long_ipc(bars: &[Bars], path: &Path) -> Result<(), arrow::error::ArrowError> {
    let file = std::fs::File::create(path)?;
    let mut w = arrow::ipc::writer::FileWriter::try_new(file, &files::long_schema())?;
    for b in bars {
        w.write(&files::long_batch(b)?)?;
    }
    w.finish()
}
