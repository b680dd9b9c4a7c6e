//! `xt data import`: market data in the layouts users have (a directory of CSV files, one
//! per symbol; Qlib's binary layout) converted to the layout batches read fastest, one
//! Arrow IPC file per symbol (or Parquet, when asked: smaller when prices compress). Every row that is not a bar by SEMANTICS section 1 is left out
//! and reported with the rule it breaks: nothing is dropped silently.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::bars::{Bars, broken_rule};
use crate::date::{Date, format_date};
use crate::layout::{ColumnMap, Format, Layout};
use crate::source::{CsvRows, DataError, check_symbol, write_ipc, write_parquet};

/// What an import did.
#[derive(Debug, Default)]
pub struct Report {
    /// Symbols written.
    pub symbols: usize,
    /// Bars written, over all symbols.
    pub bars: u64,
    /// Rows left out, each with why.
    pub rejected: Vec<Rejected>,
    /// Inputs that could not be read at all (a missing column, unreadable text), and why.
    pub failed: Vec<(String, String)>,
}

/// A row left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The input it came from: `AAA.csv`, or Qlib's `features/sh600000`.
    pub file: String,
    /// Where in it: `line 12`, or the calendar's `day 2020-01-02`.
    pub at: String,
    /// The row's date, when it could be read.
    pub date: Option<Date>,
    /// The rule it breaks.
    pub rule: String,
}

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// One CSV file per symbol, columns named as [`ColumnMap`] finds them.
    Csv(PathBuf, ColumnMap),
    /// Qlib's layout: `calendars/day.txt`, `instruments/all.txt`, `features/<sym>/<f>.day.bin`.
    Qlib(PathBuf),
}

impl Input {
    /// What `src` holds: Qlib's layout when it has `calendars/day.txt` and `features/`,
    /// else a directory of CSV files (with its manifest's column names, if any).
    pub fn detect(src: &Path) -> Result<Input, DataError> {
        if src.join("calendars/day.txt").is_file() && src.join("features").is_dir() {
            return Ok(Input::Qlib(src.to_path_buf()));
        }
        let d = crate::layout::describe(src)?;
        if d.format != Format::Csv || d.layout != Layout::PerSymbol {
            return Err(DataError::Io {
                path: src.display().to_string(),
                message: "not a directory of CSV files, one per symbol, nor Qlib's layout (calendars/day.txt, features/)".into(),
            });
        }
        Ok(Input::Csv(src.to_path_buf(), d.columns))
    }
}

/// One symbol's rows as read, before the rules: `(where, date, [open, high, low, close,
/// volume])`, or where and why a row could not be read.
type Rows = Vec<(String, Result<(Date, [f64; 5]), String>)>;

/// Converts `input` into one file per symbol under `dst` (created; files of the same
/// symbols replaced), in `format` (Arrow or Parquet), calling `progress(done, total)` as
/// symbols finish.
pub fn import(
    input: &Input,
    dst: &Path,
    format: Format,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<Report, DataError> {
    if format == Format::Csv {
        return Err(DataError::Io {
            path: dst.display().to_string(),
            message: "imports write Arrow or Parquet files".into(),
        });
    }
    let io = |path: &Path, e: std::io::Error| DataError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dst).map_err(|e| io(dst, e))?;
    // Universe files (CSV with a `symbol` column and no prices) are not symbols; they go
    // along, so that batches over the new directory find them as they found the old ones.
    let (symbols, calendar, universes) = match input {
        Input::Csv(dir, columns) => {
            let real = dir.canonicalize().unwrap_or_else(|_| dir.clone());
            let universes = crate::open::universe_files(&[real]);
            let mut symbols = crate::source::CsvDir::with_columns(dir, columns.clone())
                .and_then(|d| crate::source::BarSource::symbols(&d))?;
            symbols.retain(|s| !universes.contains(&format!("{s}.csv")));
            (symbols, Vec::new(), universes)
        }
        Input::Qlib(dir) => (qlib::instruments(dir)?, qlib::calendar(dir)?, Vec::new()),
    };
    let total = symbols.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<_> = symbols
        .par_iter()
        .map(|input_symbol| {
            let (file, symbol, rows) = match input {
                Input::Csv(dir, columns) => {
                    let file = format!("{input_symbol}.csv");
                    let rows = csv_rows(&dir.join(&file), input_symbol, columns);
                    (file, input_symbol.clone(), rows)
                }
                Input::Qlib(dir) => {
                    let file = format!("features/{}", input_symbol.to_lowercase());
                    let rows = qlib::rows(&dir.join(&file), &calendar);
                    (file, qlib::symbol(input_symbol), rows)
                }
            };
            let out = rows.and_then(|rows| {
                let (bars, rejected) = keep_bars(&file, &symbol, rows);
                if !bars.is_empty() {
                    let path = dst.join(format!("{symbol}.{}", format.extensions()[0]));
                    let f = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
                    let written = match format {
                        Format::Parquet => write_parquet(&bars, f).map_err(|e| e.to_string()),
                        _ => write_ipc(&bars, f).map_err(|e| e.to_string()),
                    };
                    written.map_err(|message| DataError::Io {
                        path: path.display().to_string(),
                        message,
                    })?;
                }
                Ok((bars.len() as u64, rejected))
            });
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(n, total);
            (file, out)
        })
        .collect();
    let mut report = Report::default();
    for (file, out) in results {
        match out {
            Ok((bars, rejected)) => {
                report.symbols += usize::from(bars > 0);
                report.bars += bars;
                report.rejected.extend(rejected);
            }
            Err(e) => report.failed.push((file, e.to_string())),
        }
    }
    if let Input::Csv(dir, _) = input {
        for name in universes.iter().filter(|n| !n.contains('/')) {
            std::fs::copy(dir.join(name), dst.join(name)).map_err(|e| io(Path::new(name), e))?;
        }
    }
    Ok(report)
}

/// The rows of one symbol's CSV file; `Err` when the file as a whole cannot be read.
fn csv_rows(path: &Path, symbol: &str, columns: &ColumnMap) -> Result<Rows, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut reader = CsvRows::new(symbol, std::io::BufReader::new(file), columns)?;
    let mut rows = Vec::new();
    while let Some((line, row)) = reader.next_row()? {
        let row = row.map_err(|e| match e {
            DataError::Parse {
                column,
                value,
                expected,
                ..
            } => format!("column {column} must be {expected}, got {value:?}"),
            other => other.to_string(),
        });
        rows.push((format!("line {line}"), row));
    }
    Ok(rows)
}

/// The bars among `rows` (sorted by date), and every other row with the rule it breaks, as
/// `RULE, got VALUES`: unreadable, a bar's values breaking [`broken_rule`], or a date that
/// appears more than once (all its rows: which one is right cannot be told).
fn keep_bars(file: &str, symbol: &str, rows: Rows) -> (Bars, Vec<Rejected>) {
    let mut rejected = Vec::new();
    let mut good: Vec<(String, Date, [f64; 5])> = Vec::new();
    for (at, row) in rows {
        match row {
            Err(rule) => rejected.push(Rejected {
                file: file.to_string(),
                at,
                date: None,
                rule,
            }),
            Ok((date, [o, h, l, c, v])) => match broken_rule(o, h, l, c, v) {
                Some(rule) => rejected.push(Rejected {
                    file: file.to_string(),
                    at,
                    date: Some(date),
                    rule,
                }),
                None => good.push((at, date, [o, h, l, c, v])),
            },
        }
    }
    good.sort_by_key(|(_, d, _)| *d);
    let mut bars = Bars::new(symbol);
    let mut i = 0;
    while i < good.len() {
        let mut j = i + 1;
        while j < good.len() && good[j].1 == good[i].1 {
            j += 1;
        }
        if j - i > 1 {
            for (at, date, _) in &good[i..j] {
                rejected.push(Rejected {
                    file: file.to_string(),
                    at: at.clone(),
                    date: Some(*date),
                    rule: format!(
                        "duplicate date, got {} rows of it (which is right cannot be told)",
                        j - i
                    ),
                });
            }
        } else {
            let (_, d, v) = &good[i];
            bars.push(*d, v[0], v[1], v[2], v[3], v[4]);
        }
        i = j;
    }
    (bars, rejected)
}

/// Writes the report's rejected rows as CSV: `file,at,date,rule`.
pub fn write_rejected(rejected: &[Rejected], path: &Path) -> std::io::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["file", "at", "date", "rule"])?;
    for r in rejected {
        let date = r.date.map(format_date).unwrap_or_default();
        w.write_record([r.file.as_str(), &r.at, &date, &r.rule])?;
    }
    w.flush()
}

/// Qlib's binary layout: a trading calendar, the instruments, and per instrument one file
/// per field of little-endian `f32`s, the first the calendar index of the second.
pub mod qlib {
    use super::*;

    /// The fields read, in the order of a bar's values.
    pub const FIELDS: [&str; 5] = ["open", "high", "low", "close", "volume"];

    pub fn calendar(dir: &Path) -> Result<Vec<Date>, DataError> {
        let path = dir.join("calendars/day.txt");
        let text = std::fs::read_to_string(&path).map_err(|e| DataError::Io {
            path: "calendars/day.txt".into(),
            message: e.to_string(),
        })?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                crate::source::parse_data_date(l).ok_or_else(|| DataError::Io {
                    path: "calendars/day.txt".into(),
                    message: format!("line {}: {l:?} is not a date", i + 1),
                })
            })
            .collect()
    }

    /// The instruments: `instruments/all.txt`'s first column, else `features/`'s
    /// directories.
    pub fn instruments(dir: &Path) -> Result<Vec<String>, DataError> {
        let mut out: Vec<String> = match std::fs::read_to_string(dir.join("instruments/all.txt")) {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.split('\t').next())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            Err(_) => std::fs::read_dir(dir.join("features"))
                .map_err(|e| DataError::Io {
                    path: "features".into(),
                    message: e.to_string(),
                })?
                .flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_uppercase))
                .collect(),
        };
        out.retain(|s| dir.join("features").join(s.to_lowercase()).is_dir());
        out.sort();
        out.dedup();
        for s in &out {
            check_symbol(&symbol(s))?;
        }
        Ok(out)
    }

    /// Our name of Qlib's instrument: `SH600000` is `600000.SH` (as exchanges and
    /// universe files write it), others as they are.
    pub fn symbol(instrument: &str) -> String {
        let up = instrument.to_uppercase();
        let (market, code) = up.split_at(2.min(up.len()));
        if matches!(market, "SH" | "SZ" | "BJ")
            && code.len() == 6
            && code.bytes().all(|b| b.is_ascii_digit())
        {
            return format!("{code}.{market}");
        }
        up
    }

    /// One instrument's rows on the calendar: every day from its first value to its last
    /// field's end, a day where all fields are missing reported as no bar.
    pub(super) fn rows(dir: &Path, calendar: &[Date]) -> Result<Rows, DataError> {
        let mut fields: Vec<(usize, Vec<f32>)> = Vec::new();
        for f in FIELDS {
            let path = dir.join(format!("{f}.day.bin"));
            let bytes = std::fs::read(&path).map_err(|e| DataError::Io {
                path: path.display().to_string(),
                message: format!("{e} (Qlib's {f} field)"),
            })?;
            if bytes.len() < 4 || bytes.len() % 4 != 0 {
                return Err(DataError::Io {
                    path: path.display().to_string(),
                    message: "not a Qlib field file (little-endian f32s)".into(),
                });
            }
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let start = values[0];
            if !(start >= 0.0 && start.fract() == 0.0) {
                return Err(DataError::Io {
                    path: path.display().to_string(),
                    message: format!("its first value {start} is not a calendar index"),
                });
            }
            fields.push((start as usize, values[1..].to_vec()));
        }
        let first = fields.iter().map(|(s, _)| *s).min().unwrap_or(0);
        let last = fields.iter().map(|(s, v)| s + v.len()).max().unwrap_or(0);
        if last > calendar.len() {
            return Err(DataError::Io {
                path: dir.display().to_string(),
                message: format!(
                    "values run to calendar day {last}, past the calendar's {}",
                    calendar.len()
                ),
            });
        }
        let value = |k: usize, t: usize| {
            let (s, v) = &fields[k];
            t.checked_sub(*s)
                .and_then(|i| v.get(i))
                .map_or(f64::NAN, |x| f64::from(*x))
        };
        Ok((first..last)
            .map(|t| {
                let at = format!("day {}", format_date(calendar[t]));
                let v = [0, 1, 2, 3, 4].map(|k| value(k, t));
                if v.iter().all(|x| x.is_nan()) {
                    (
                        at,
                        Err("no values on this calendar day (not traded)".into()),
                    )
                } else {
                    (at, Ok((calendar[t], v)))
                }
            })
            .collect())
    }
}
