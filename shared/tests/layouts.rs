//! Layouts besides the plain ones: Arrow IPC files (per symbol and long, compressed or not),
//! column names a manifest maps or aliases catch, vendors' compact dates; a long dataset's
//! index kept between opens and rebuilt when a file changes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use xt_shared::dataset::{LongDataset, write_long, write_long_ipc};
use xt_shared::layout::{Format, Layout, MANIFEST, describe};
use xt_shared::open::open_source;
use xt_shared::spec::DataSpec;
use xt_shared::{BarSource, Bars, DataError, SyntheticMarket};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xt-layouts-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn market(seed: u64) -> Vec<Bars> {
    let m = SyntheticMarket::new(4, 2, seed);
    m.symbols()
        .unwrap()
        .iter()
        .map(|s| m.load(s).unwrap())
        .collect()
}

fn open(dir: &Path) -> std::sync::Arc<dyn BarSource> {
    open_source(&DataSpec::Dir(dir.to_path_buf())).unwrap()
}

fn same_bars(source: &dyn BarSource, bars: &[Bars]) {
    let names: Vec<String> = bars.iter().map(|b| b.symbol.clone()).collect();
    assert_eq!(source.symbols().unwrap(), names);
    for b in bars {
        assert_eq!(&source.load(&b.symbol).unwrap(), b, "{}", b.symbol);
    }
}

/// Files older than the racy window, so that their versions are trusted.
fn age(dir: &Path) {
    let past = SystemTime::now() - Duration::from_secs(3600);
    for e in walk(dir) {
        std::fs::File::options()
            .write(true)
            .open(&e)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn arrow_ipc_files_per_symbol_and_long_compressed_or_not() {
    let bars = market(3);
    // One LZ4-compressed file per symbol, as pyarrow's `write_feather` writes them.
    let per = scratch("ipc-per-symbol");
    for b in &bars {
        let batch = {
            let mut buf = Vec::new();
            xt_shared::source::write_ipc(b, &mut buf).unwrap();
            let mut r =
                arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(buf), None).unwrap();
            r.next().unwrap().unwrap()
        };
        let options = arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
            .unwrap();
        let file = std::fs::File::create(per.join(format!("{}.feather", b.symbol))).unwrap();
        let mut w =
            arrow::ipc::writer::FileWriter::try_new_with_options(file, &batch.schema(), options)
                .unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    let d = describe(&per).unwrap();
    assert_eq!((d.layout, d.format), (Layout::PerSymbol, Format::Arrow));
    same_bars(open(&per).as_ref(), &bars);
    // One long file, a record batch per symbol: a read opens only its symbol's batch.
    let long = scratch("ipc-long");
    write_long_ipc(&bars, &long.join("bars.arrow")).unwrap();
    let d = describe(&long).unwrap();
    assert_eq!((d.layout, d.format), (Layout::Long, Format::Arrow));
    same_bars(open(&long).as_ref(), &bars);
    let dataset = LongDataset::open(&long).unwrap();
    assert_eq!(dataset.row_groups(&bars[2].symbol), 1);
}

#[test]
fn a_manifest_maps_columns_and_aliases_catch_the_usual_names() {
    let bars = market(5);
    // Names no alias knows, mapped by the manifest; dates as vendors' YYYYMMDD.
    let dir = scratch("manifest");
    for b in &bars {
        let mut text = String::from("Stamp,O,H,L,C,Shares,Extra\n");
        for t in 0..b.len() {
            let day = xt_shared::date::format_date(b.dates[t]).replace('-', "");
            text += &format!(
                "{day},{},{},{},{},{},x\n",
                b.open[t], b.high[t], b.low[t], b.close[t], b.volume[t]
            );
        }
        std::fs::write(dir.join(format!("{}.csv", b.symbol)), text).unwrap();
    }
    let manifest = r#"{"columns": {"date": "Stamp", "open": "O", "high": "H", "low": "L",
        "close": "C", "volume": "Shares"}}"#;
    std::fs::write(dir.join(MANIFEST), manifest).unwrap();
    same_bars(open(&dir).as_ref(), &bars);
    // A mapped column the files do not have names the manifest's name.
    std::fs::write(dir.join(MANIFEST), manifest.replace("\"C\"", "\"Last\"")).unwrap();
    let e = open(&dir).load(&bars[0].symbol).unwrap_err();
    assert!(
        matches!(&e, DataError::MissingColumn { column: "close", looked_for, .. } if looked_for.contains("Last")),
        "{e}"
    );
    // A column of ours it does not know, a field it does not know, a layout it cannot read.
    for (text, said) in [
        (
            r#"{"columns": {"price": "C"}}"#,
            "\"price\" is not a column",
        ),
        (r#"{"colums": {}}"#, "unknown field"),
        (r#"{"layout": "long"}"#, "not CSV"),
        (r#"{"format": "xlsx"}"#, "unknown variant"),
    ] {
        std::fs::write(dir.join(MANIFEST), text).unwrap();
        let e = open_source(&DataSpec::Dir(dir.clone())).err().unwrap();
        assert!(e.message.contains(said), "{text}: {e}");
    }
    // Without a manifest, the usual export names are found by alias, case aside.
    std::fs::remove_file(dir.join(MANIFEST)).unwrap();
    for b in &bars {
        let path = dir.join(format!("{}.csv", b.symbol));
        let text = std::fs::read_to_string(&path).unwrap().replacen(
            "Stamp,O,H,L,C,Shares",
            "trade_date,Open,HIGH,low,Close,vol",
            1,
        );
        std::fs::write(&path, text).unwrap();
    }
    same_bars(open(&dir).as_ref(), &bars);
}

#[test]
fn a_long_dataset_is_indexed_once_and_again_when_its_files_change() {
    let (before, after) = (market(7), market(8));
    let dir = scratch("kept");
    write_long(&before[..2], &dir.join("a.parquet"), 100).unwrap();
    write_long(&before[2..], &dir.join("b.parquet"), 100).unwrap();
    age(&dir);
    let first = LongDataset::open(&dir).unwrap();
    let second = LongDataset::open(&dir).unwrap();
    assert!(first.shares_index_with(&second), "the kept index is reused");
    same_bars(&first, &before);

    // A file rewritten under an open dataset (a worker keeps its sources): its new bars,
    // never the old index's row groups read from the new file.
    write_long(&after[2..], &dir.join("b.parquet"), 37).unwrap();
    let symbol = &before[3].symbol;
    assert_eq!(&first.load(symbol).unwrap(), &after[3]);
    assert_eq!(&first.load(&before[0].symbol).unwrap(), &before[0]);
    let third = LongDataset::open(&dir).unwrap();
    assert!(
        !third.shares_index_with(&second),
        "a changed file is indexed again"
    );
    // A file gone: its symbols with it.
    std::fs::remove_file(dir.join("b.parquet")).unwrap();
    assert!(matches!(
        first.load(symbol).unwrap_err(),
        DataError::UnknownSymbol { .. }
    ));
}

#[test]
fn decimal_prices_and_timestamp_dates_are_read() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Decimal128Array, RecordBatch, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    // Prices as decimal(12, 2) and dates as timestamps at midnight, as databases export them.
    let bars = &market(9)[0];
    let cents = |v: &[f64]| -> ArrayRef {
        Arc::new(
            Decimal128Array::from_iter_values(v.iter().map(|x| (x * 100.0).round() as i128))
                .with_precision_and_scale(12, 2)
                .unwrap(),
        )
    };
    let mut fields = vec![Field::new(
        "date",
        DataType::Timestamp(TimeUnit::Millisecond, None),
        false,
    )];
    for name in ["open", "high", "low", "close", "volume"] {
        fields.push(Field::new(name, DataType::Decimal128(12, 2), false));
    }
    let day_ms = 86_400_000i64;
    let columns = vec![
        Arc::new(TimestampMillisecondArray::from_iter_values(
            bars.dates.iter().map(|d| i64::from(*d) * day_ms),
        )) as ArrayRef,
        cents(&bars.open),
        cents(&bars.high),
        cents(&bars.low),
        cents(&bars.close),
        cents(&bars.volume),
    ];
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let dir = scratch("decimal");
    let file = std::fs::File::create(dir.join(format!("{}.parquet", bars.symbol))).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let got = open(&dir).read(&bars.symbol).unwrap();
    let rounded = |v: &[f64]| -> Vec<f64> {
        v.iter()
            .map(|x| (x * 100.0).round() as i128 as f64 / 100.0)
            .collect()
    };
    assert_eq!(got.dates, bars.dates);
    assert_eq!(got.close, rounded(&bars.close));
    assert_eq!(got.volume, rounded(&bars.volume));
}

#[test]
fn a_column_of_a_type_that_cannot_be_read_is_named() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BinaryArray, Date32Array, Float64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    let bars = &market(2)[0];
    let floats = |v: &[f64]| Arc::new(Float64Array::from(v.to_vec())) as ArrayRef;
    let bytes: Vec<&[u8]> = bars.close.iter().map(|_| b"\x01\x02".as_slice()).collect();
    let schema = Schema::new(vec![
        Field::new("date", DataType::Date32, false),
        Field::new("open", DataType::Float64, false),
        Field::new("high", DataType::Float64, false),
        Field::new("low", DataType::Float64, false),
        Field::new("close", DataType::Binary, false),
        Field::new("volume", DataType::Float64, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Date32Array::from(bars.dates.clone())),
            floats(&bars.open),
            floats(&bars.high),
            floats(&bars.low),
            Arc::new(BinaryArray::from(bytes)),
            floats(&bars.volume),
        ],
    )
    .unwrap();
    let dir = scratch("binary");
    let file = std::fs::File::create(dir.join(format!("{}.arrow", bars.symbol))).unwrap();
    let mut w = arrow::ipc::writer::FileWriter::try_new(file, &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let e = open(&dir).load(&bars.symbol).unwrap_err().to_string();
    assert!(
        e.contains("column close") && e.contains("Binary") && e.contains("a number"),
        "{e}"
    );
}
