//! Where bars come from. The engine asks a [`BarSource`] for a symbol and never
//! learns whether the answer came from CSV files, Parquet files or the synthetic
//! market. Directory sources resolve a symbol only to a file inside their root:
//! symbols are plain names, and a file that is a link out of the root is refused.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Date32Array, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::bars::{Bars, BarsError, dates_in_range};
use crate::date::{Date, parse_date};

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
    #[error("{symbol}: missing column {column:?} (need date, open, high, low, close, volume)")]
    MissingColumn {
        symbol: String,
        column: &'static str,
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

/// A directory of `SYMBOL.<ext>` files.
/// How long after its last modification a file's size and time are trusted to tell its
/// version.
pub const RACY: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Clone)]
struct SymbolDir {
    root: PathBuf,
    ext: &'static str,
}

impl SymbolDir {
    fn open(root: &Path, ext: &'static str) -> Result<Self, DataError> {
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
        Ok(SymbolDir { root, ext })
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
        let meta = std::fs::metadata(&path).ok()?;
        let modified = meta.modified().ok()?;
        if modified.elapsed().map_or(true, |age| age < RACY) {
            return None;
        }
        let modified = modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos();
        Some((
            path.display().to_string(),
            format!("{}:{modified}", meta.len()),
        ))
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
        SymbolDir::open(root.as_ref(), "csv").map(CsvDir)
    }

    pub fn root(&self) -> &Path {
        &self.0.root
    }
}

impl BarSource for CsvDir {
    fn read(&self, symbol: &str) -> Result<Bars, DataError> {
        let path = self.0.path_of(symbol)?;
        let file = File::open(&path).map_err(|e| DataError::Io {
            path: self.0.shown(symbol),
            message: e.to_string(),
        })?;
        read_csv(symbol, file)
    }

    fn dates(
        &self,
        symbol: &str,
        start: Option<Date>,
        end: Option<Date>,
    ) -> Result<Vec<Date>, DataError> {
        let path = self.0.path_of(symbol)?;
        let file = File::open(&path).map_err(|e| DataError::Io {
            path: self.0.shown(symbol),
            message: e.to_string(),
        })?;
        let dates = read_csv_dates(symbol, file)?;
        Ok(dates_in_range(symbol, &dates, start, end)?)
    }

    fn symbols(&self) -> Result<Vec<String>, DataError> {
        self.0.symbols()
    }

    fn identity(&self, symbol: &str) -> Option<(String, String)> {
        self.0.identity(symbol)
    }
}

/// Reads bars from CSV text; does not validate them.
pub fn read_csv(symbol: &str, reader: impl std::io::Read) -> Result<Bars, DataError> {
    // Headers are trimmed by the reader, values as they are parsed (the reader's own trim
    // rebuilds every record).
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .from_reader(reader);
    let io = |e: csv::Error| DataError::Io {
        path: format!("{symbol}.csv"),
        message: e.to_string(),
    };
    let headers = csv.headers().map_err(io)?.clone();
    let mut idx = [0usize; 6];
    for (slot, column) in idx.iter_mut().zip(BAR_COLUMNS) {
        *slot = headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case(column))
            .ok_or(DataError::MissingColumn {
                symbol: symbol.to_string(),
                column,
            })?;
    }
    let mut bars = Bars::new(symbol);
    let mut record = csv::StringRecord::new();
    while csv.read_record(&mut record).map_err(io)? {
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize| record.get(idx[i]).unwrap_or("").trim();
        let date = parse_date(field(0)).ok_or_else(|| DataError::Parse {
            symbol: symbol.to_string(),
            at: format!("line {line}"),
            column: "date",
            value: field(0).to_string(),
            expected: "a date YYYY-MM-DD",
        })?;
        let mut v = [0.0; 5];
        for k in 0..5 {
            v[k] = field(k + 1).parse::<f64>().map_err(|_| DataError::Parse {
                symbol: symbol.to_string(),
                at: format!("line {line}"),
                column: BAR_COLUMNS[k + 1],
                value: field(k + 1).to_string(),
                expected: "a number",
            })?;
        }
        bars.push(date, v[0], v[1], v[2], v[3], v[4]);
    }
    Ok(bars)
}

/// Reads only the `date` column of CSV bar text (the prices are not parsed).
pub fn read_csv_dates(symbol: &str, reader: impl std::io::Read) -> Result<Vec<Date>, DataError> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .from_reader(reader);
    let io = |e: csv::Error| DataError::Io {
        path: format!("{symbol}.csv"),
        message: e.to_string(),
    };
    let column = csv
        .headers()
        .map_err(io)?
        .iter()
        .position(|h| h.eq_ignore_ascii_case("date"))
        .ok_or(DataError::MissingColumn {
            symbol: symbol.to_string(),
            column: "date",
        })?;
    let mut dates = Vec::new();
    let mut record = csv::ByteRecord::new();
    while csv.read_byte_record(&mut record).map_err(io)? {
        let field = std::str::from_utf8(record.get(column).unwrap_or(b""))
            .unwrap_or("")
            .trim();
        let date = parse_date(field).ok_or_else(|| DataError::Parse {
            symbol: symbol.to_string(),
            at: format!("line {}", record.position().map_or(0, |p| p.line())),
            column: "date",
            value: field.to_string(),
            expected: "a date YYYY-MM-DD",
        })?;
        dates.push(date);
    }
    Ok(dates)
}

/// Writes bars as CSV with the standard header. Prices are written in Rust's shortest
/// round-trip form, so reading the file back gives the same `f64`s.
pub fn write_csv(bars: &Bars, writer: impl std::io::Write) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(writer);
    writeln!(w, "date,open,high,low,close,volume")?;
    for t in 0..bars.len() {
        writeln!(
            w,
            "{},{},{},{},{},{}",
            crate::date::format_date(bars.dates[t]),
            bars.open[t],
            bars.high[t],
            bars.low[t],
            bars.close[t],
            bars.volume[t]
        )?;
    }
    use std::io::Write;
    w.flush()
}

/// A directory with one `SYMBOL.parquet` per symbol: `date` as `date32` (or ISO text),
/// prices and volume as any numeric type.
#[derive(Debug, Clone)]
pub struct ParquetDir(SymbolDir);

impl ParquetDir {
    pub fn open(root: impl AsRef<Path>) -> Result<Self, DataError> {
        SymbolDir::open(root.as_ref(), "parquet").map(ParquetDir)
    }
}

impl BarSource for ParquetDir {
    fn read(&self, symbol: &str) -> Result<Bars, DataError> {
        let path = self.0.path_of(symbol)?;
        let shown = self.0.shown(symbol);
        let io = |m: String| DataError::Io {
            path: shown.clone(),
            message: m,
        };
        let file = File::open(&path).map_err(|e| io(e.to_string()))?;
        read_parquet(symbol, &shown, file)
    }

    fn symbols(&self) -> Result<Vec<String>, DataError> {
        self.0.symbols()
    }

    fn identity(&self, symbol: &str) -> Option<(String, String)> {
        self.0.identity(symbol)
    }
}

/// Reads bars from a Parquet file's bytes (`shown`: where they came from, for errors); does
/// not validate them.
pub fn read_parquet(
    symbol: &str,
    shown: &str,
    reader: impl parquet::file::reader::ChunkReader + 'static,
) -> Result<Bars, DataError> {
    let io = |m: String| DataError::Io {
        path: shown.to_string(),
        message: m,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(reader)
        .and_then(|b| b.build())
        .map_err(|e| io(e.to_string()))?;
    let mut bars = Bars::new(symbol);
    for batch in reader {
        let batch = batch.map_err(|e| io(e.to_string()))?;
        append_batch(symbol, &batch, &mut bars)?;
    }
    Ok(bars)
}

pub(crate) fn append_batch(
    symbol: &str,
    batch: &RecordBatch,
    bars: &mut Bars,
) -> Result<(), DataError> {
    let column = |name: &'static str| -> Result<&ArrayRef, DataError> {
        batch
            .schema()
            .fields()
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(name))
            .map(|i| batch.column(i))
            .ok_or(DataError::MissingColumn {
                symbol: symbol.to_string(),
                column: name,
            })
    };
    let offset = bars.len();
    let dates = column("date")?;
    match dates.data_type() {
        DataType::Date32 => {
            let a = dates
                .as_any()
                .downcast_ref::<Date32Array>()
                .expect("checked type");
            for i in 0..a.len() {
                if a.is_null(i) {
                    return Err(parse_error(symbol, offset + i, "date", "null", "a date"));
                }
                bars.dates.push(a.value(i));
            }
        }
        _ => {
            let text = arrow::compute::cast(dates, &DataType::Utf8).map_err(|_| {
                parse_error(
                    symbol,
                    offset,
                    "date",
                    &format!("{}", dates.data_type()),
                    "date32 or ISO text",
                )
            })?;
            let a = text
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8");
            for i in 0..a.len() {
                let value = if a.is_null(i) { "null" } else { a.value(i) };
                let d = parse_date(value).ok_or_else(|| {
                    parse_error(symbol, offset + i, "date", value, "a date YYYY-MM-DD")
                })?;
                bars.dates.push(d);
            }
        }
    }
    for (k, name) in BAR_COLUMNS.iter().enumerate().skip(1) {
        let raw = column(name)?;
        let cast = arrow::compute::cast(raw, &DataType::Float64).map_err(|_| {
            parse_error(
                symbol,
                offset,
                name,
                &format!("{}", raw.data_type()),
                "a number",
            )
        })?;
        let a = cast
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("cast to Float64");
        let out = match k {
            1 => &mut bars.open,
            2 => &mut bars.high,
            3 => &mut bars.low,
            4 => &mut bars.close,
            _ => &mut bars.volume,
        };
        for i in 0..a.len() {
            if a.is_null(i) {
                return Err(parse_error(symbol, offset + i, name, "null", "a number"));
            }
            out.push(a.value(i));
        }
    }
    Ok(())
}

fn parse_error(
    symbol: &str,
    row: usize,
    column: &'static str,
    value: &str,
    expected: &'static str,
) -> DataError {
    DataError::Parse {
        symbol: symbol.to_string(),
        at: format!("row {}", row + 1),
        column,
        value: value.to_string(),
        expected,
    }
}

/// Writes bars as Parquet (`date` as `date32`, the rest `float64`).
pub fn write_parquet(
    bars: &Bars,
    writer: impl std::io::Write + Send,
) -> parquet::errors::Result<()> {
    let schema = Arc::new(Schema::new(
        std::iter::once(Field::new("date", DataType::Date32, false))
            .chain(
                BAR_COLUMNS[1..]
                    .iter()
                    .map(|c| Field::new(*c, DataType::Float64, false)),
            )
            .collect::<Vec<_>>(),
    ));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Date32Array::from(bars.dates.clone())),
        Arc::new(Float64Array::from(bars.open.clone())),
        Arc::new(Float64Array::from(bars.high.clone())),
        Arc::new(Float64Array::from(bars.low.clone())),
        Arc::new(Float64Array::from(bars.close.clone())),
        Arc::new(Float64Array::from(bars.volume.clone())),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let mut w = ArrowWriter::try_new(writer, schema, None)?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
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
        assert_eq!(read_csv_dates("AAA", text.as_bytes()).unwrap().len(), 2);
        let e = read_csv_dates("AAA", "date,open\n2024-01-02,1\n2024-13-01,1\n".as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("2024-13-01"), "{e}");
        let e = dates_in_range("AAA", &[5, 4], None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("strictly ascend"), "{e}");
    }
}
