//! Long Parquet datasets in the layouts users have: one file, many files, hive partitions
//! by symbol and by year, other column names; each read gives the bars the per-symbol files
//! give, and every rejection rule names what is wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use xt_shared::dataset::LongDataset;
use xt_shared::{BarSource, Bars, DataError, SyntheticMarket};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xt-dataset-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn market() -> Vec<Bars> {
    let m = SyntheticMarket::new(5, 2, 9);
    m.symbols()
        .unwrap()
        .iter()
        .map(|s| m.load(s).unwrap())
        .collect()
}

/// Columns named `names` (symbol, date, open, high, low, close, volume; `None` leaves one
/// out), the dates as text when `text_dates`, over the rows of `bars` where `keep` holds.
struct Layout<'a> {
    names: [Option<&'a str>; 7],
    text_dates: bool,
}

const PLAIN: Layout<'static> = Layout {
    names: [
        Some("symbol"),
        Some("date"),
        Some("open"),
        Some("high"),
        Some("low"),
        Some("close"),
        Some("volume"),
    ],
    text_dates: false,
};

fn write(path: &Path, layout: &Layout, rows: &[(&Bars, usize)], row_group: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (k, name) in layout.names.iter().enumerate() {
        let Some(name) = name else { continue };
        let (ty, array): (DataType, ArrayRef) = match k {
            0 => (
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|(b, _)| b.symbol.clone()),
                )),
            ),
            1 if layout.text_dates => (
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(
                    rows.iter()
                        .map(|(b, t)| xt_shared::date::format_date(b.dates[*t])),
                )),
            ),
            1 => (
                DataType::Date32,
                Arc::new(Date32Array::from_iter_values(
                    rows.iter().map(|(b, t)| b.dates[*t]),
                )),
            ),
            _ => {
                let pick = |b: &Bars, t: usize| match k {
                    2 => b.open[t],
                    3 => b.high[t],
                    4 => b.low[t],
                    5 => b.close[t],
                    _ => b.volume[t],
                };
                (
                    DataType::Float64,
                    Arc::new(Float64Array::from_iter_values(
                        rows.iter().map(|(b, t)| pick(b, *t)),
                    )),
                )
            }
        };
        fields.push(Field::new(*name, ty, false));
        columns.push(array);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group))
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn all_rows(bars: &[Bars]) -> Vec<(&Bars, usize)> {
    bars.iter()
        .flat_map(|b| (0..b.len()).map(move |t| (b, t)))
        .collect()
}

fn same_bars(dir: &Path, bars: &[Bars]) -> LongDataset {
    let d = LongDataset::open(dir).unwrap();
    let names: Vec<String> = bars.iter().map(|b| b.symbol.clone()).collect();
    assert_eq!(d.symbols().unwrap(), names);
    for b in bars {
        assert_eq!(&d.load(&b.symbol).unwrap(), b, "{}", b.symbol);
    }
    let layout = xt_shared::layout::describe(dir).unwrap().layout;
    assert_eq!(layout, xt_shared::layout::Layout::Long, "{}", dir.display());
    // A batch's `data: file://DIR` opens it as a dataset.
    let opened =
        xt_shared::open::open_source(&xt_shared::spec::DataSpec::Dir(dir.to_path_buf())).unwrap();
    assert_eq!(&opened.load(&bars[1].symbol).unwrap(), &bars[1]);
    d
}

#[test]
fn one_file_reads_only_the_row_groups_of_its_symbol() {
    let bars = market();
    let dir = scratch("one");
    // Row groups of 100 bars: each symbol's 504 rows span 6 of the file's 26.
    write(&dir.join("bars.parquet"), &PLAIN, &all_rows(&bars), 100);
    let d = same_bars(&dir, &bars);
    for b in &bars {
        let groups = d.row_groups(&b.symbol);
        assert!(
            (6..=7).contains(&groups),
            "{}: {groups} row groups",
            b.symbol
        );
    }
}

#[test]
fn many_files_and_hive_partitions_by_year_and_by_symbol() {
    let bars = market();
    // Years in files of their own, dates shuffled across them: read back in date order.
    let dir = scratch("years");
    for year in [0, 1] {
        let rows: Vec<(&Bars, usize)> = all_rows(&bars)
            .into_iter()
            .filter(|(b, t)| (*t < b.len() / 2) == (year == 0))
            .collect();
        write(
            &dir.join(format!("year={}/part-0.parquet", 2000 + year)),
            &PLAIN,
            &rows,
            1000,
        );
    }
    same_bars(&dir, &bars);
    // By symbol: the partition names it, the files have no symbol column.
    let dir = scratch("symbols");
    let mut no_symbol = PLAIN;
    no_symbol.names[0] = None;
    for b in &bars {
        let rows: Vec<(&Bars, usize)> = (0..b.len()).map(|t| (b, t)).collect();
        write(
            &dir.join(format!("symbol={}/data.parquet", b.symbol)),
            &no_symbol,
            &rows,
            1000,
        );
    }
    same_bars(&dir, &bars);
    // Many flat files in reverse order of date.
    let dir = scratch("files");
    let rows = all_rows(&bars);
    for (k, chunk) in rows.chunks(700).rev().enumerate() {
        write(
            &dir.join(format!("part-{k:03}.parquet")),
            &PLAIN,
            chunk,
            1000,
        );
    }
    same_bars(&dir, &bars);
}

#[test]
fn other_column_names_and_text_dates_are_mapped() {
    let bars = market();
    let dir = scratch("names");
    let layout = Layout {
        names: [
            Some("ts_code"),
            Some("trade_date"),
            Some("Open"),
            Some("High"),
            Some("Low"),
            Some("Close"),
            Some("vol"),
        ],
        text_dates: true,
    };
    write(&dir.join("daily.parquet"), &layout, &all_rows(&bars), 1000);
    same_bars(&dir, &bars);
}

#[test]
fn every_rejection_names_what_is_wrong() {
    let bars = market();
    let first = bars[0].symbol.clone();
    // No close column.
    let dir = scratch("no-close");
    let mut layout = PLAIN;
    layout.names[5] = None;
    write(&dir.join("bars.parquet"), &layout, &all_rows(&bars), 1000);
    let e = LongDataset::open(&dir).unwrap().load(&first).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::MissingColumn {
                column: "close",
                ..
            }
        ),
        "{e}"
    );
    // No symbol column and no partition.
    let dir = scratch("no-symbol");
    let mut layout = PLAIN;
    layout.names[0] = None;
    write(&dir.join("bars.parquet"), &layout, &all_rows(&bars), 1000);
    let e = LongDataset::open(&dir).err().unwrap().to_string();
    assert!(
        e.contains("bars.parquet") && e.contains("no symbol column"),
        "{e}"
    );
    // A row twice.
    let dir = scratch("twice");
    let mut rows = all_rows(&bars);
    rows.push(rows[3]);
    write(&dir.join("bars.parquet"), &PLAIN, &rows, 1000);
    let e = LongDataset::open(&dir)
        .unwrap()
        .load(&first)
        .unwrap_err()
        .to_string();
    let day = xt_shared::date::format_date(bars[0].dates[3]);
    assert!(
        e.contains("duplicated (symbol, date)") && e.contains(&day),
        "{e}"
    );
    // A symbol it does not hold.
    let dir = scratch("unknown");
    write(&dir.join("bars.parquet"), &PLAIN, &all_rows(&bars), 1000);
    let d = LongDataset::open(&dir).unwrap();
    assert!(matches!(
        d.load("NOPE").unwrap_err(),
        DataError::UnknownSymbol { .. }
    ));
}
