//! The symbols a batch trades, their weights and price limits, and point-in-time
//! membership (SEMANTICS section 5): a symbol trades only while it is a member.

use std::collections::BTreeMap;
use std::path::Path;

use crate::date::{Date, format_date, parse_date};
use crate::source::check_symbol;

/// One symbol of a universe, its rows merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub symbol: String,
    /// Raw weight as given; normalised over the symbols that get jobs.
    pub weight: Option<f64>,
    /// Overrides the market's price limit (0.20 for ChiNext/STAR, 0.05 for ST).
    pub price_limit: Option<f64>,
    /// Inclusive membership intervals, sorted and disjoint; `[]` means always a member.
    pub intervals: Vec<(Date, Date)>,
}

impl Member {
    pub fn always(symbol: impl Into<String>) -> Self {
        Member {
            symbol: symbol.into(),
            weight: None,
            price_limit: None,
            intervals: Vec::new(),
        }
    }

    pub fn is_member(&self, date: Date) -> bool {
        self.intervals.is_empty() || self.intervals.iter().any(|&(s, e)| s <= date && date <= e)
    }

    /// `member[t]` for each of `dates`.
    pub fn mask(&self, dates: &[Date]) -> Vec<bool> {
        dates.iter().map(|&d| self.is_member(d)).collect()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UniverseError {
    #[error("universe: {0}")]
    Io(String),
    /// `at`: where, as the user sees it: `line 12` of a file (the header's 1), `entry 3`
    /// of an inline list.
    #[error("universe {at}: column {column}: {message}")]
    Field {
        at: String,
        column: &'static str,
        message: String,
    },
    #[error("universe: symbol {symbol}: {message}")]
    Symbol { symbol: String, message: String },
    #[error("universe: weight must be given for every symbol or for none ({symbol} has none)")]
    MixedWeights { symbol: String },
    #[error("universe has no symbols")]
    Empty,
}

/// The symbols of a batch, in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Universe {
    pub members: Vec<Member>,
}

/// Largest universe file read, in bytes: checked before it is read.
pub const MAX_UNIVERSE_BYTES: usize = 16 << 20;

/// Most rows a universe file may have.
pub const MAX_UNIVERSE_ROWS: usize = 200_000;

/// A universe file of `bytes` bytes, or why it is refused unread.
pub fn check_size(bytes: usize) -> Result<(), UniverseError> {
    if bytes > MAX_UNIVERSE_BYTES {
        return Err(UniverseError::Io(format!(
            "the file has {bytes} bytes; a universe file has at most {MAX_UNIVERSE_BYTES}"
        )));
    }
    Ok(())
}

/// One row of a universe file before rows of the same symbol are merged.
#[derive(Debug, Clone)]
struct Row {
    /// Where it was given: `line 12` of a file, `entry 3` of a list.
    at: String,
    symbol: String,
    weight: Option<f64>,
    price_limit: Option<f64>,
    start: Option<Date>,
    end: Option<Date>,
}

impl Universe {
    /// Every symbol always a member, equal weights.
    pub fn from_symbols<S: AsRef<str>>(symbols: &[S]) -> Result<Self, UniverseError> {
        let rows = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| Row {
                at: format!("entry {}", i + 1),
                symbol: s.as_ref().trim().to_string(),
                weight: None,
                price_limit: None,
                start: None,
                end: None,
            })
            .collect();
        Self::from_rows(rows)
    }

    pub fn load(path: &Path) -> Result<Self, UniverseError> {
        // Named by the file's name only: the rest is the service's, not the client's.
        let name = path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let file =
            std::fs::File::open(path).map_err(|e| UniverseError::Io(format!("{name}: {e}")))?;
        let bytes = file
            .metadata()
            .map_err(|e| UniverseError::Io(format!("{name}: {e}")))?
            .len();
        check_size(bytes as usize)?;
        Self::read_csv(file)
    }

    /// Reads a universe CSV: `symbol` and optional `weight`, `price_limit`, `start_date`,
    /// `end_date`; at most [`MAX_UNIVERSE_ROWS`] rows.
    pub fn read_csv(reader: impl std::io::Read) -> Result<Self, UniverseError> {
        let mut csv = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(reader);
        let headers = csv
            .headers()
            .map_err(|e| UniverseError::Io(e.to_string()))?
            .clone();
        let find = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let symbol_col = find("symbol").ok_or(UniverseError::Field {
            at: "line 1".into(),
            column: "symbol",
            message: "the header has no symbol column".into(),
        })?;
        let (weight_col, limit_col, start_col, end_col) = (
            find("weight"),
            find("price_limit"),
            find("start_date"),
            find("end_date"),
        );
        let mut rows = Vec::new();
        for (row, record) in csv.records().enumerate() {
            if row >= MAX_UNIVERSE_ROWS {
                return Err(UniverseError::Io(format!(
                    "more than {MAX_UNIVERSE_ROWS} rows; a universe has at most that many"
                )));
            }
            let record = record.map_err(|e| UniverseError::Io(e.to_string()))?;
            let line = record.position().map_or(row as u64 + 2, |p| p.line());
            let get =
                |col: Option<usize>| col.and_then(|c| record.get(c)).filter(|v| !v.is_empty());
            let number =
                |col: Option<usize>, column: &'static str| -> Result<Option<f64>, UniverseError> {
                    get(col)
                        .map(|v| {
                            v.parse::<f64>().map_err(|_| UniverseError::Field {
                                at: format!("line {line}"),
                                column,
                                message: format!("{v:?} is not a number"),
                            })
                        })
                        .transpose()
                };
            let date =
                |col: Option<usize>, column: &'static str| -> Result<Option<Date>, UniverseError> {
                    get(col)
                        .map(|v| {
                            parse_date(v).ok_or_else(|| UniverseError::Field {
                                at: format!("line {line}"),
                                column,
                                message: format!("{v:?} is not a date YYYY-MM-DD"),
                            })
                        })
                        .transpose()
                };
            rows.push(Row {
                at: format!("line {line}"),
                symbol: record.get(symbol_col).unwrap_or("").to_string(),
                weight: number(weight_col, "weight")?,
                price_limit: number(limit_col, "price_limit")?,
                start: date(start_col, "start_date")?,
                end: date(end_col, "end_date")?,
            });
            if let Some(w) = rows[row].weight
                && !(w.is_finite() && w > 0.0)
            {
                return Err(UniverseError::Field {
                    at: format!("line {line}"),
                    column: "weight",
                    message: format!("must be a finite number > 0, got {w}"),
                });
            }
            if let Some(l) = rows[row].price_limit
                && !(l > 0.0 && l < 1.0)
            {
                return Err(UniverseError::Field {
                    at: format!("line {line}"),
                    column: "price_limit",
                    message: format!("must be in (0, 1), got {l}"),
                });
            }
            if let (Some(s), Some(e)) = (rows[row].start, rows[row].end)
                && s > e
            {
                return Err(UniverseError::Field {
                    at: format!("line {line}"),
                    column: "start_date",
                    message: format!(
                        "start_date {} is after end_date {}",
                        format_date(s),
                        format_date(e)
                    ),
                });
            }
        }
        Self::from_rows(rows)
    }

    fn from_rows(rows: Vec<Row>) -> Result<Self, UniverseError> {
        let mut order: Vec<String> = Vec::new();
        let mut by_symbol: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for row in rows {
            check_symbol(&row.symbol).map_err(|e| UniverseError::Field {
                at: row.at.clone(),
                column: "symbol",
                message: e.to_string(),
            })?;
            if !by_symbol.contains_key(&row.symbol) {
                order.push(row.symbol.clone());
            }
            by_symbol.entry(row.symbol.clone()).or_default().push(row);
        }
        if order.is_empty() {
            return Err(UniverseError::Empty);
        }
        let mut members = Vec::with_capacity(order.len());
        for symbol in order {
            let rows = &by_symbol[&symbol];
            let first = &rows[0];
            let bad = |message: String| UniverseError::Symbol {
                symbol: symbol.clone(),
                message,
            };
            if rows.iter().any(|r| r.weight != first.weight) {
                return Err(bad("its rows disagree on weight".into()));
            }
            if rows.iter().any(|r| r.price_limit != first.price_limit) {
                return Err(bad("its rows disagree on price_limit".into()));
            }
            let mut intervals: Vec<(Date, Date)> = rows
                .iter()
                .map(|r| (r.start.unwrap_or(Date::MIN), r.end.unwrap_or(Date::MAX)))
                .collect();
            intervals.sort();
            for w in intervals.windows(2) {
                if w[1].0 <= w[0].1 {
                    return Err(bad(format!(
                        "membership intervals overlap ({} .. {} and {} .. {})",
                        show(w[0].0),
                        show(w[0].1),
                        show(w[1].0),
                        show(w[1].1)
                    )));
                }
            }
            if intervals == [(Date::MIN, Date::MAX)] {
                intervals.clear();
            }
            members.push(Member {
                symbol,
                weight: first.weight,
                price_limit: first.price_limit,
                intervals,
            });
        }
        if let Some(m) = members.iter().find(|m| m.weight.is_none())
            && members.iter().any(|m| m.weight.is_some())
        {
            return Err(UniverseError::MixedWeights {
                symbol: m.symbol.clone(),
            });
        }
        Ok(Universe { members })
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

fn show(d: Date) -> String {
    match d {
        Date::MIN | Date::MAX => "unbounded".into(),
        d => format_date(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_rows_into_membership() {
        let u = Universe::read_csv(
            "symbol,weight,price_limit,start_date,end_date\nA,2,,2020-01-01,2020-06-30\nB,1,0.2,,\nA,2,,2021-01-01,\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(u.members.len(), 2);
        let a = &u.members[0];
        assert_eq!(a.intervals.len(), 2);
        assert!(a.is_member(parse_date("2020-03-01").unwrap()));
        assert!(!a.is_member(parse_date("2020-07-01").unwrap()));
        assert!(a.is_member(parse_date("2030-01-01").unwrap()));
        assert!(u.members[1].is_member(0));
        assert_eq!(u.members[1].price_limit, Some(0.2));
    }

    #[test]
    fn rejects_overlaps_disagreement_and_bad_fields() {
        let e = Universe::read_csv(
            "symbol,start_date,end_date\nA,2020-01-01,2020-12-31\nA,2020-06-01,\n".as_bytes(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("symbol A: membership intervals overlap"),
            "{e}"
        );
        let e = Universe::read_csv(
            "symbol,weight,start_date\nA,1,2020-01-01\nA,2,2019-01-01\n".as_bytes(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("disagree on weight"), "{e}");
        let e = Universe::read_csv("symbol,weight\nA,1\nB,\n".as_bytes()).unwrap_err();
        assert!(matches!(e, UniverseError::MixedWeights { .. }));
        // Where: the file's line, the header's 1; an inline list's entry.
        let e = Universe::read_csv("symbol,weight\nA,1\nB,-1\n".as_bytes()).unwrap_err();
        assert!(
            e.to_string().starts_with("universe line 3: column weight"),
            "{e}"
        );
        let e = Universe::read_csv("symbol\nA\n../etc/passwd\n".as_bytes()).unwrap_err();
        assert!(
            e.to_string().starts_with("universe line 3: column symbol"),
            "{e}"
        );
        // Too big to read: refused by size before reading, by rows while reading.
        let many = format!("symbol\n{}", "A\n".repeat(MAX_UNIVERSE_ROWS + 1));
        let e = Universe::read_csv(many.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("more than 200000 rows"), "{e}");
        let big = std::env::temp_dir().join(format!("xt-big-universe-{}.csv", std::process::id()));
        std::fs::write(&big, vec![b'\n'; MAX_UNIVERSE_BYTES + 1]).unwrap();
        let e = Universe::load(&big).unwrap_err();
        let _ = std::fs::remove_file(&big);
        assert!(e.to_string().contains("a universe file has at most"), "{e}");
        let e = Universe::from_symbols(&["A", "B", "x/y"]).unwrap_err();
        assert!(
            e.to_string().starts_with("universe entry 3: column symbol"),
            "{e}"
        );
        assert_eq!(
            Universe::read_csv("symbol\n".as_bytes()).unwrap_err(),
            UniverseError::Empty
        );
        let e = Universe::read_csv("symbol,end_date\nA,2020-13-01\n".as_bytes()).unwrap_err();
        assert!(e.to_string().contains("column end_date"), "{e}");
    }

    #[test]
    fn reads_the_real_point_in_time_universe() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/cn-csi300/universe_pit.csv");
        if !path.exists() {
            eprintln!(
                "skipped: {} is absent (it ships beside the checkout in ../shared)",
                path.display()
            );
            return;
        }
        let u = Universe::load(&path).unwrap();
        let on = |d: &str| {
            u.members
                .iter()
                .filter(|m| m.is_member(parse_date(d).unwrap()))
                .count()
        };
        // The counts the data set's README states.
        assert_eq!(on("2016-06-30"), 257);
        assert_eq!(on("2019-12-31"), 271);
        assert_eq!(on("2023-06-30"), 284);
        assert_eq!(on("2026-05-08"), 300);
    }
}
