//! Bars out of Arrow columns: Parquet and Arrow IPC files, and a long table's rows.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Date32Array, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{BAR_COLUMNS, DataError, parse_data_date};
use crate::bars::Bars;
use crate::layout::ColumnMap;

/// Reads bars from a Parquet file's bytes (`shown`: where they came from, for errors); does
/// not validate them.
pub fn read_parquet(
    symbol: &str,
    shown: &str,
    reader: impl parquet::file::reader::ChunkReader + 'static,
    columns: &ColumnMap,
) -> Result<Bars, DataError> {
    let io = |m: String| DataError::Io {
        path: shown.to_string(),
        message: m,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(reader)
        .and_then(|b| b.build())
        .map_err(|e| io(e.to_string()))?;
    read_batches(symbol, shown, reader, columns)
}

/// Reads bars from an Arrow IPC file (Feather v2); does not validate them.
pub fn read_ipc(
    symbol: &str,
    shown: &str,
    reader: impl std::io::Read + std::io::Seek,
    columns: &ColumnMap,
) -> Result<Bars, DataError> {
    let io = |m: String| DataError::Io {
        path: shown.to_string(),
        message: m,
    };
    let reader =
        arrow::ipc::reader::FileReader::try_new(reader, None).map_err(|e| io(e.to_string()))?;
    read_batches(symbol, shown, reader, columns)
}

/// The bars of a file's record batches, as they come.
fn read_batches(
    symbol: &str,
    shown: &str,
    batches: impl Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>,
    columns: &ColumnMap,
) -> Result<Bars, DataError> {
    let mut bars = Bars::new(symbol);
    for batch in batches {
        let batch = batch.map_err(|e| DataError::Io {
            path: shown.to_string(),
            message: e.to_string(),
        })?;
        append_batch(symbol, &batch, &mut bars, columns)?;
    }
    Ok(bars)
}

/// The column of `batch` that is our `name` under `columns`' mapping.
pub(crate) fn column<'a>(
    symbol: &str,
    batch: &'a RecordBatch,
    name: &'static str,
    columns: &ColumnMap,
) -> Result<&'a ArrayRef, DataError> {
    let schema = batch.schema_ref();
    let names = schema.fields().iter().map(|f| f.name().as_str());
    Ok(batch.column(columns.require(names, name, symbol)?))
}

/// Appends `batch`'s rows to `bars`: dates as date32, date64 or timestamps (their day), or
/// text (ISO or `YYYYMMDD`) or integers `YYYYMMDD`; prices any numeric type, decimals
/// included.
pub(crate) fn append_batch(
    symbol: &str,
    batch: &RecordBatch,
    bars: &mut Bars,
    columns: &ColumnMap,
) -> Result<(), DataError> {
    let offset = bars.len();
    let dates = column(symbol, batch, "date", columns)?;
    let as_days = match dates.data_type() {
        DataType::Timestamp(_, _) | DataType::Date64 => Some(
            arrow::compute::cast(dates, &DataType::Date32)
                .map_err(|e| parse_error(symbol, offset, "date", &e.to_string(), "a date"))?,
        ),
        DataType::Date32 => Some(dates.clone()),
        _ => None,
    };
    if let Some(days) = as_days {
        let a = days.as_any().downcast_ref::<Date32Array>().expect("date32");
        for i in 0..a.len() {
            if a.is_null(i) {
                return Err(parse_error(symbol, offset + i, "date", "null", "a date"));
            }
            bars.dates.push(a.value(i));
        }
    } else {
        let text = arrow::compute::cast(dates, &DataType::Utf8).map_err(|_| {
            parse_error(
                symbol,
                offset,
                "date",
                &format!("{}", dates.data_type()),
                "a date: date32, a timestamp, or ISO text",
            )
        })?;
        let a = text
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("cast to Utf8");
        for i in 0..a.len() {
            let value = if a.is_null(i) { "null" } else { a.value(i) };
            let d = parse_data_date(value).ok_or_else(|| {
                parse_error(symbol, offset + i, "date", value, "a date YYYY-MM-DD")
            })?;
            bars.dates.push(d);
        }
    }
    for (k, name) in BAR_COLUMNS.iter().enumerate().skip(1) {
        let raw = column(symbol, batch, name, columns)?;
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
    let batch = bars_batch(bars)?;
    let mut w = ArrowWriter::try_new(writer, batch.schema(), None)?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

/// `bars` as one record batch: `date` as `date32`, the rest `float64`.
pub(crate) fn bars_batch(bars: &Bars) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Date32Array::from(bars.dates.clone())),
        Arc::new(Float64Array::from(bars.open.clone())),
        Arc::new(Float64Array::from(bars.high.clone())),
        Arc::new(Float64Array::from(bars.low.clone())),
        Arc::new(Float64Array::from(bars.close.clone())),
        Arc::new(Float64Array::from(bars.volume.clone())),
    ];
    RecordBatch::try_new(Arc::new(Schema::new(bars_fields())), columns)
}

/// The fields of bars written to a file: `date` as `date32`, the rest `float64`.
pub(crate) fn bars_fields() -> Vec<Field> {
    std::iter::once(Field::new("date", DataType::Date32, false))
        .chain(
            BAR_COLUMNS[1..]
                .iter()
                .map(|c| Field::new(*c, DataType::Float64, false)),
        )
        .collect()
}

/// Writes bars as an Arrow IPC file (the columns [`write_parquet`] writes), uncompressed.
pub fn write_ipc(bars: &Bars, writer: impl std::io::Write) -> Result<(), arrow::error::ArrowError> {
    let batch = bars_batch(bars)?;
    let mut w = arrow::ipc::writer::FileWriter::try_new(writer, &batch.schema())?;
    w.write(&batch)?;
    w.finish()
}
