//! Bars as CSV text.

use super::{BAR_COLUMNS, DataError, parse_data_date};
use crate::bars::Bars;
use crate::date::Date;
use crate::layout::ColumnMap;

/// The rows of CSV bar text one at a time, a bad row an error that does not end the
/// reading (`xt data import` reports each and carries on; a job stops at the first).
pub struct CsvRows<R: std::io::Read> {
    symbol: String,
    csv: csv::Reader<R>,
    idx: [usize; 6],
    record: csv::StringRecord,
}

/// One row read: its line in the file (the header's 1), and the bar or why it is not one.
pub type CsvRow = (u64, Result<(Date, [f64; 5]), DataError>);

impl<R: std::io::Read> CsvRows<R> {
    /// Reads the header: every column of bars must be there, under `columns`' names.
    pub fn new(symbol: &str, reader: R, columns: &ColumnMap) -> Result<Self, DataError> {
        // Headers are trimmed by the reader, values as they are parsed (the reader's own
        // trim rebuilds every record).
        let mut csv = csv::ReaderBuilder::new()
            .trim(csv::Trim::Headers)
            .from_reader(reader);
        let headers = csv.headers().map_err(|e| csv_io(symbol, e))?.clone();
        let mut idx = [0usize; 6];
        for (slot, column) in idx.iter_mut().zip(BAR_COLUMNS) {
            *slot = columns.require(headers.iter(), column, symbol)?;
        }
        Ok(CsvRows {
            symbol: symbol.to_string(),
            csv,
            idx,
            record: csv::StringRecord::new(),
        })
    }

    /// The next row; `Err` when the text itself cannot be read further.
    pub fn next_row(&mut self) -> Result<Option<CsvRow>, DataError> {
        let symbol = &self.symbol;
        if !self
            .csv
            .read_record(&mut self.record)
            .map_err(|e| csv_io(symbol, e))?
        {
            return Ok(None);
        }
        let line = self.record.position().map_or(0, |p| p.line());
        let field = |i: usize| self.record.get(self.idx[i]).unwrap_or("").trim();
        let bad = |k: usize, expected: &'static str| DataError::Parse {
            symbol: symbol.clone(),
            at: format!("line {line}"),
            column: BAR_COLUMNS[k],
            value: field(k).to_string(),
            expected,
        };
        let row = (|| {
            let date = parse_data_date(field(0)).ok_or_else(|| bad(0, "a date YYYY-MM-DD"))?;
            let mut v = [0.0; 5];
            for (k, slot) in v.iter_mut().enumerate() {
                *slot = field(k + 1)
                    .parse::<f64>()
                    .map_err(|_| bad(k + 1, "a number"))?;
            }
            Ok((date, v))
        })();
        Ok(Some((line, row)))
    }
}

fn csv_io(symbol: &str, e: csv::Error) -> DataError {
    DataError::Io {
        path: format!("{symbol}.csv"),
        message: e.to_string(),
    }
}

/// Reads bars from CSV text; does not validate them.
pub fn read_csv(symbol: &str, reader: impl std::io::Read) -> Result<Bars, DataError> {
    read_csv_mapped(symbol, reader, &ColumnMap::default())
}

/// [`read_csv`] with the columns under `columns`' names.
pub fn read_csv_mapped(
    symbol: &str,
    reader: impl std::io::Read,
    columns: &ColumnMap,
) -> Result<Bars, DataError> {
    let mut rows = CsvRows::new(symbol, reader, columns)?;
    let mut bars = Bars::new(symbol);
    while let Some((_, row)) = rows.next_row()? {
        let (date, v) = row?;
        bars.push(date, v[0], v[1], v[2], v[3], v[4]);
    }
    Ok(bars)
}

/// Reads only the date column of CSV bar text (the prices are not parsed).
pub fn read_csv_dates(
    symbol: &str,
    reader: impl std::io::Read,
    columns: &ColumnMap,
) -> Result<Vec<Date>, DataError> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .from_reader(reader);
    let headers = csv.headers().map_err(|e| csv_io(symbol, e))?;
    let column = columns.require(headers.iter(), "date", symbol)?;
    let mut dates = Vec::new();
    let mut record = csv::ByteRecord::new();
    while csv
        .read_byte_record(&mut record)
        .map_err(|e| csv_io(symbol, e))?
    {
        let field = std::str::from_utf8(record.get(column).unwrap_or(b""))
            .unwrap_or("")
            .trim();
        let date = parse_data_date(field).ok_or_else(|| DataError::Parse {
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
