//! Where bars come from. The engine asks a [`BarSource`] for a symbol and never
//! learns whether the answer came from CSV files, Parquet files or the synthetic
//! market. Directory sources resolve a symbol only to a file inside their root:
//! symbols are plain names, and a file that is a link out of the root is refused.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::bars::{Bars, BarsError, dates_in_range};
use crate::date::Date;
use crate::layout::{ColumnMap, Format};

mod columns;
mod text;

pub use crate::date::parse_data_date;
pub(crate) use columns::{append_batch, bars_batch, bars_fields, column};
pub use columns::{read_ipc, read_parquet, write_ipc, write_parquet};
pub use text::{CsvRow, CsvRows, read_csv, read_csv_dates, read_csv_mapped, write_csv};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "symbol {symbol:?} is not a valid symbol name (letters, digits, '.', '_', '-'; not starting with '.')"
    )]
    InvalidSymbol { symbol: String },
    #[error("{symbol}: no data for this symbol (looked for {path})")]
    UnknownSymbol { symbol: String, path: String },
    #[error("{symbol}: {path} resolves outside the data directory")]
    OutsideRoot { symbol: String, path: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{symbol}: missing column {column:?} (looked for a column named {looked_for})")]
    MissingColumn {
        symbol: String,
        column: &'static str,
        looked_for: String,
    },
    /// `at`: `line 12` of a CSV file (the header's 1), `row 11` of a Parquet file's rows
    /// (from 1).
    #[error("{symbol}: {at}: column {column}: cannot read {value:?} as {expected}")]
    Parse {
        symbol: String,
        at: String,
        column: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(transparent)]
    Invalid(#[from] BarsError),
}

/// A store of daily bars keyed by symbol.
pub trait BarSource: Send + Sync {
    /// Reads one symbol's full history as stored, without validating it.
    fn read(&self, symbol: &str) -> Result<Bars, DataError>;

    /// One symbol's full history, validated per SEMANTICS section 1.
    fn load(&self, symbol: &str) -> Result<Bars, DataError> {
        let bars = self.read(symbol)?;
        bars.validate()?;
        Ok(bars)
    }

    /// One symbol's bars inside `[start, end]`, validated (the range is applied first).
    fn load_range(
        &self,
        symbol: &str,
        start: Option<Date>,
        end: Option<Date>,
    ) -> Result<Bars, DataError> {
        Ok(self.read(symbol)?.validated_range(start, end)?)
    }

    /// One symbol's trading dates inside `[start, end]`: all that planning a batch needs
    /// (which members have a bar in range, and the portfolio's calendar). Sources override
    /// it when dates cost less to read than whole bars; the prices are checked by whoever
    /// runs the job.
    fn dates(
        &self,
        symbol: &str,
        start: Option<Date>,
        end: Option<Date>,
    ) -> Result<Vec<Date>, DataError> {
        let bars = self.read(symbol)?;
        Ok(dates_in_range(symbol, &bars.dates, start, end)?)
    }

    /// Every symbol the source holds, sorted.
    fn symbols(&self) -> Result<Vec<String>, DataError>;

    /// What identifies `symbol`'s stored bars without reading them, for the bar cache:
    /// `(key, version)`, a file's path and its size and modification time. `None`: no
    /// cheap identity, the bars are read every time.
    fn identity(&self, symbol: &str) -> Option<(String, String)> {
        let _ = symbol;
        None
    }

    /// The bytes of a file kept beside the bars (a universe file), `name` relative to the
    /// source's root; `None` when there is none. Only sources whose files are not local
    /// paths (objects in a store) hold any: directories' files are read as paths.
    fn side_file(&self, name: &str) -> Result<Option<Vec<u8>>, DataError> {
        let _ = name;
        Ok(None)
    }
}

/// The columns every bar file has.
pub const BAR_COLUMNS: [&str; 6] = ["date", "open", "high", "low", "close", "volume"];

/// Accepts the symbol names data vendors use (`600519.SH`, `BRK-B`) and nothing that could
/// name a path: no separators, no leading dot, nothing empty.
pub fn check_symbol(symbol: &str) -> Result<(), DataError> {
    let ok = !symbol.is_empty()
        && symbol.len() <= 64
        && !symbol.starts_with('.')
        && symbol
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DataError::InvalidSymbol {
            symbol: symbol.to_string(),
        })
    }
}

/// How long after its last modification a file's size and time are trusted to tell its
/// version.
pub const RACY: std::time::Duration = std::time::Duration::from_secs(2);

/// A file's version: its size and modification time in nanoseconds.
pub(crate) type Version = (u64, u128);

/// The version of the file at `path` now, and whether it is too fresh to be trusted (see
/// [`RACY`]).
pub(crate) fn file_version(path: &Path) -> Option<(Version, bool)> {
    let meta = std::fs::metadata(path).ok()?;
    let modified = meta.modified().ok()?;
    let racy = modified.elapsed().map_or(true, |age| age < RACY);
    let nanos = modified
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(((meta.len(), nanos), racy))
}

/// A directory of `SYMBOL.<ext>` files.
#[derive(Debug, Clone)]
struct SymbolDir {
    root: PathBuf,
    ext: &'static str,
    columns: ColumnMap,
}

impl SymbolDir {
    fn open(root: &Path, ext: &'static str, columns: ColumnMap) -> Result<Self, DataError> {
        let root = root.canonicalize().map_err(|e| DataError::Io {
            path: root.display().to_string(),
            message: format!("cannot open data directory: {e}"),
        })?;
        if !root.is_dir() {
            return Err(DataError::Io {
                path: root.display().to_string(),
                message: "not a directory".into(),
            });
        }
        Ok(SymbolDir { root, ext, columns })
    }

    /// The file of `symbol`, proven to lie inside the root after links are resolved.
    fn path_of(&self, symbol: &str) -> Result<PathBuf, DataError> {
        check_symbol(symbol)?;
        let path = self.root.join(self.shown(symbol));
        let real = path.canonicalize().map_err(|_| DataError::UnknownSymbol {
            symbol: symbol.to_string(),
            path: format!("{} in the data directory", self.shown(symbol)),
        })?;
        if !real.starts_with(&self.root) {
            return Err(DataError::OutsideRoot {
                symbol: symbol.to_string(),
                path: self.shown(symbol),
            });
        }
        Ok(real)
    }

    /// The file's path, and its size and modification time (nanoseconds) as its version.
    /// None for a file modified in the last [`RACY`]: file systems stamp times in ticks of
    /// milliseconds, so a write in the same tick as a read, keeping the size, would leave
    /// the version unchanged (git's "racily clean" files, handled the same way).
    fn identity(&self, symbol: &str) -> Option<(String, String)> {
        let path = self.path_of(symbol).ok()?;
        let ((len, nanos), racy) = file_version(&path)?;
        if racy {
            return None;
        }
        Some((path.display().to_string(), format!("{len}:{nanos}")))
    }

    /// `symbol`'s file, opened, and how errors name it.
    fn file(&self, symbol: &str) -> Result<(File, String), DataError> {
        let path = self.path_of(symbol)?;
        let shown = self.shown(symbol);
        let file = File::open(&path).map_err(|e| DataError::Io {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        Ok((file, shown))
    }

    /// How errors name `symbol`'s file: relative to the data directory, which the batch
    /// named, so that no path of the host's shows.
    fn shown(&self, symbol: &str) -> String {
        format!("{symbol}.{}", self.ext)
    }

    fn symbols(&self) -> Result<Vec<String>, DataError> {
        let io = |e: std::io::Error| DataError::Io {
            path: self.root.display().to_string(),
            message: e.to_string(),
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(symbol) = name
                .strip_suffix(self.ext)
                .and_then(|s| s.strip_suffix('.'))
                && check_symbol(symbol).is_ok()
            {
                out.push(symbol.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// A directory with one `SYMBOL.csv` per symbol, header `date,open,high,low,close,volume`
/// (columns in any order; other columns are ignored).
#[derive(Debug, Clone)]
pub struct CsvDir(SymbolDir);

impl CsvDir {
    pub fn open(root: impl AsRef<Path>) -> Result<Self, DataError> {
        Self::with_columns(root, ColumnMap::default())
    }

    /// The directory with its columns under `columns`' names.
    pub fn with_columns(root: impl AsRef<Path>, columns: ColumnMap) -> Result<Self, DataError> {
        SymbolDir::open(root.as_ref(), "csv", columns).map(CsvDir)
    }

    pub fn root(&self) -> &Path {
        &self.0.root
    }
}

impl BarSource for CsvDir {
    fn read(&self, symbol: &str) -> Result<Bars, DataError> {
        let (file, _) = self.0.file(symbol)?;
        read_csv_mapped(symbol, file, &self.0.columns)
    }

    fn dates(
        &self,
        symbol: &str,
        start: Option<Date>,
        end: Option<Date>,
    ) -> Result<Vec<Date>, DataError> {
        let (file, _) = self.0.file(symbol)?;
        let dates = read_csv_dates(symbol, file, &self.0.columns)?;
        Ok(dates_in_range(symbol, &dates, start, end)?)
    }

    fn symbols(&self) -> Result<Vec<String>, DataError> {
        self.0.symbols()
    }

    fn identity(&self, symbol: &str) -> Option<(String, String)> {
        self.0.identity(symbol)
    }
}

/// A directory with one Parquet or Arrow IPC (Feather v2) file per symbol, `SYMBOL.parquet`
/// or `SYMBOL.arrow` (`.feather`, `.ipc`): `date` as `date32`, a timestamp or text, prices
/// and volume as any numeric type.
#[derive(Debug, Clone)]
pub struct ColumnarDir {
    dir: SymbolDir,
    format: Format,
}

/// The name most callers know a directory of Parquet files by.
pub type ParquetDir = ColumnarDir;

impl ColumnarDir {
    /// A directory of Parquet files with our column names.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, DataError> {
        Self::with_columns(root, Format::Parquet, ColumnMap::default())
    }

    /// A directory of `format` files (Parquet or Arrow) with their columns under `columns`'
    /// names; Arrow files' extension the first of `arrow`, `feather`, `ipc` it has.
    pub fn with_columns(
        root: impl AsRef<Path>,
        format: Format,
        columns: ColumnMap,
    ) -> Result<Self, DataError> {
        let root = root.as_ref();
        let names: Vec<String> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let ext = format
            .extension_among(names.iter().map(String::as_str))
            .unwrap_or(format.extensions()[0]);
        let dir = SymbolDir::open(root, ext, columns)?;
        Ok(ColumnarDir { dir, format })
    }
}

impl BarSource for ColumnarDir {
    fn read(&self, symbol: &str) -> Result<Bars, DataError> {
        let (file, shown) = self.dir.file(symbol)?;
        match self.format {
            Format::Arrow => read_ipc(symbol, &shown, file, &self.dir.columns),
            _ => read_parquet(symbol, &shown, file, &self.dir.columns),
        }
    }

    fn symbols(&self) -> Result<Vec<String>, DataError> {
        self.dir.symbols()
    }

    fn identity(&self, symbol: &str) -> Option<(String, String)> {
        self.dir.identity(symbol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xt-source-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample() -> Bars {
        crate::SyntheticMarket::new(1, 1, 7).generate(0)
    }

    #[test]
    fn csv_and_parquet_round_trip_exactly() {
        let dir = tempdir("roundtrip");
        let bars = sample();
        let sym = bars.symbol.clone();
        write_csv(&bars, File::create(dir.join(format!("{sym}.csv"))).unwrap()).unwrap();
        write_parquet(
            &bars,
            File::create(dir.join(format!("{sym}.parquet"))).unwrap(),
        )
        .unwrap();
        assert_eq!(CsvDir::open(&dir).unwrap().load(&sym).unwrap(), bars);
        assert_eq!(ParquetDir::open(&dir).unwrap().load(&sym).unwrap(), bars);
        assert_eq!(
            CsvDir::open(&dir).unwrap().symbols().unwrap(),
            vec![sym.clone()]
        );
        // Planning's date-only reads agree with the bars, range applied.
        let (start, end) = (Some(bars.dates[1]), Some(bars.dates[bars.len() - 2]));
        let cut = bars.in_range(start, end).dates;
        assert_eq!(
            CsvDir::open(&dir).unwrap().dates(&sym, start, end).unwrap(),
            cut
        );
        assert_eq!(
            ParquetDir::open(&dir)
                .unwrap()
                .dates(&sym, start, end)
                .unwrap(),
            cut
        );
    }

    #[test]
    fn symbols_cannot_name_paths_or_escape_by_link() {
        let dir = tempdir("escape");
        let outside = tempdir("escape-outside");
        std::fs::write(
            outside.join("SECRET.csv"),
            "date,open,high,low,close,volume\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.join("SECRET.csv"), dir.join("LINK.csv")).unwrap();
        let src = CsvDir::open(&dir).unwrap();
        for bad in [
            "../escape-outside/SECRET",
            "/etc/passwd",
            "",
            ".hidden",
            "a/b",
        ] {
            assert!(
                matches!(src.load(bad), Err(DataError::InvalidSymbol { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            src.load("LINK"),
            Err(DataError::OutsideRoot { .. })
        ));
        assert!(matches!(
            src.load("NOPE"),
            Err(DataError::UnknownSymbol { .. })
        ));
    }

    #[test]
    fn bad_csv_names_line_column_and_value() {
        // The file's line number, the header's 1 (as an editor shows it).
        let text = "date,open,high,low,close,volume\n2024-01-02,1,1,1,1,1\n2024-01-03,1,x,1,1,1\n";
        let e = read_csv("AAA", text.as_bytes()).unwrap_err().to_string();
        assert_eq!(e, "AAA: line 3: column high: cannot read \"x\" as a number");
        let e = read_csv("AAA", "date,open,high,low,close\n".as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing column \"volume\""), "{e}");
        // Dates alone do not look at prices, but still name a bad date and its row.
        assert_eq!(
            read_csv_dates("AAA", text.as_bytes(), &Default::default())
                .unwrap()
                .len(),
            2
        );
        let e = read_csv_dates(
            "AAA",
            "date,open\n2024-01-02,1\n2024-13-01,1\n".as_bytes(),
            &Default::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3") && e.contains("2024-13-01"), "{e}");
        let e = dates_in_range("AAA", &[5, 4], None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("strictly ascend"), "{e}");
    }
}
