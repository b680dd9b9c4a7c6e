//! `xt data import`'s conversion: CSV directories and Qlib's binary layout to one Arrow or
//! Parquet file per symbol, every row that is not a bar reported with its rule.

use std::path::{Path, PathBuf};

use xt_shared::import::{Input, Rejected, import, qlib};
use xt_shared::layout::Format;
use xt_shared::source::{ColumnarDir, write_csv};
use xt_shared::{BarSource, Bars, SyntheticMarket};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xt-import-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn market() -> Vec<Bars> {
    let m = SyntheticMarket::new(3, 1, 11);
    m.symbols()
        .unwrap()
        .iter()
        .map(|s| m.load(s).unwrap())
        .collect()
}

fn imported(dst: &Path, symbol: &str) -> Bars {
    xt_shared::open::open_source(&xt_shared::spec::DataSpec::Dir(dst.to_path_buf()))
        .unwrap()
        .load(symbol)
        .unwrap()
}

#[test]
fn csv_rows_that_are_not_bars_are_reported_and_the_rest_imported() {
    let bars = market();
    let src = scratch("csv-src");
    for b in &bars {
        write_csv(
            b,
            std::fs::File::create(src.join(format!("{}.csv", b.symbol))).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(src.join("universe.csv"), "symbol\nAAA\n").unwrap();
    // One bad row of each kind in the first symbol's file, which is also out of order.
    let b = &bars[0];
    let day = |t: usize| xt_shared::date::format_date(b.dates[t]);
    let mut lines: Vec<String> = std::fs::read_to_string(src.join(format!("{}.csv", b.symbol)))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let bad = [
        format!("{},x,1,1,1,1", day(10)),
        format!("{},-1,1,1,1,1", day(11)),
        format!("{},10,12,10.5,11,5", day(12)),
        format!("{},10,10.5,9,11,5", day(13)),
        format!("{},10,12,9,11,-5", day(14)),
        format!("{},10,12,9,11,NaN", day(15)),
        "2024-02-30,10,12,9,11,5".to_string(),
    ];
    for (k, row) in bad.iter().enumerate() {
        lines[11 + k] = row.clone();
    }
    lines.push(lines[30].clone()); // a date twice
    lines[1..].reverse();
    std::fs::write(
        src.join(format!("{}.csv", b.symbol)),
        lines.join("\n") + "\n",
    )
    .unwrap();
    // The second symbol's file has no volume column: it fails whole, named.
    let second = src.join(format!("{}.csv", bars[1].symbol));
    let text = std::fs::read_to_string(&second)
        .unwrap()
        .replacen("volume", "turnover", 1);
    std::fs::write(&second, text).unwrap();

    let dst = scratch("csv-dst");
    let input = Input::detect(&src).unwrap();
    assert!(matches!(input, Input::Csv(..)));
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let report = import(&input, &dst, Format::Arrow, |_, total| {
        assert_eq!(total, 3, "the universe file is not a symbol");
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(calls.into_inner(), 3);

    let rules: Vec<(String, String)> = report
        .rejected
        .iter()
        .map(|r: &Rejected| {
            (
                r.date.map(xt_shared::date::format_date).unwrap_or_default(),
                r.rule.clone(),
            )
        })
        .collect();
    // The rules as a job's validation words them (SEMANTICS section 1).
    let expect = [
        (day(11), "open must be finite and > 0, got -1"),
        (day(12), "low must be <= min(open, close), got low 10.5"),
        (day(13), "high must be >= max(open, close), got high 10.5"),
        (day(14), "volume must be finite and >= 0, got -5"),
        (day(15), "volume must be finite and >= 0, got NaN"),
        (day(29), "duplicate date, got 2 rows"),
        (day(29), "duplicate date, got 2 rows"),
    ];
    for (date, rule) in expect {
        assert!(
            rules.iter().any(|(d, r)| *d == date && r.contains(rule)),
            "{date} {rule}: {rules:?}"
        );
    }
    let unreadable: Vec<&String> = rules
        .iter()
        .filter(|(d, _)| d.is_empty())
        .map(|(_, r)| r)
        .collect();
    assert_eq!(unreadable.len(), 2, "{unreadable:?}");
    assert!(
        unreadable
            .iter()
            .any(|r| r.contains("column open") && r.contains("\"x\""))
    );
    assert!(unreadable.iter().any(|r| r.contains("\"2024-02-30\"")));
    assert_eq!(report.rejected.len(), 9);
    assert!(
        report
            .rejected
            .iter()
            .all(|r| r.file == format!("{}.csv", b.symbol) && r.at.starts_with("line ")),
        "{:?}",
        report.rejected
    );
    // What is left: the file's bars less the rejected dates, sorted.
    let gone: Vec<i32> = [10, 11, 12, 13, 14, 15, 16, 29]
        .map(|t| b.dates[t])
        .to_vec();
    let got = imported(&dst, &b.symbol);
    assert_eq!(got.len(), b.len() - gone.len());
    let mut k = 0;
    for t in 0..b.len() {
        if gone.contains(&b.dates[t]) {
            continue;
        }
        assert_eq!(
            (got.dates[k], got.close[k], got.volume[k]),
            (b.dates[t], b.close[t], b.volume[t])
        );
        k += 1;
    }
    assert_eq!(imported(&dst, &bars[2].symbol), bars[2]);
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(
        report.failed[0].0.starts_with(&bars[1].symbol) && report.failed[0].1.contains("volume"),
        "{:?}",
        report.failed
    );
    assert!(!dst.join(format!("{}.arrow", bars[1].symbol)).exists());
    assert_eq!(
        std::fs::read_to_string(dst.join("universe.csv")).unwrap(),
        "symbol\nAAA\n"
    );
}

/// Writes `bars` in Qlib's layout: a calendar of every date any has, instruments, and per
/// instrument each field as little-endian f32s after its first calendar index.
fn write_qlib(dir: &Path, bars: &[(String, &Bars)]) -> Vec<i32> {
    let mut calendar: Vec<i32> = bars.iter().flat_map(|(_, b)| b.dates.clone()).collect();
    calendar.sort();
    calendar.dedup();
    std::fs::create_dir_all(dir.join("calendars")).unwrap();
    std::fs::create_dir_all(dir.join("instruments")).unwrap();
    let days: Vec<String> = calendar
        .iter()
        .map(|d| xt_shared::date::format_date(*d))
        .collect();
    std::fs::write(dir.join("calendars/day.txt"), days.join("\n") + "\n").unwrap();
    let mut all = String::new();
    for (name, b) in bars {
        all += &format!("{name}\t2000-01-01\t2099-12-31\n");
        let feat = dir.join("features").join(name.to_lowercase());
        std::fs::create_dir_all(&feat).unwrap();
        let start = calendar.binary_search(&b.dates[0]).unwrap();
        let end = calendar.binary_search(b.dates.last().unwrap()).unwrap();
        for (field, values) in [
            ("open", &b.open),
            ("high", &b.high),
            ("low", &b.low),
            ("close", &b.close),
            ("volume", &b.volume),
        ] {
            let mut out = (start as f32).to_le_bytes().to_vec();
            for day in &calendar[start..=end] {
                let v = match b.dates.binary_search(day) {
                    Ok(i) => values[i] as f32,
                    Err(_) => f32::NAN,
                };
                out.extend(v.to_le_bytes());
            }
            std::fs::write(feat.join(format!("{field}.day.bin")), out).unwrap();
        }
    }
    std::fs::write(dir.join("instruments/all.txt"), all).unwrap();
    calendar
}

#[test]
fn qlib_binary_layout_is_imported_with_days_not_traded_reported() {
    let bars = market();
    // The second trades on every other day only: its gaps are NaN in Qlib's files.
    let mut sparse = Bars::new(&bars[1].symbol);
    for t in (0..bars[1].len()).step_by(2) {
        let b = &bars[1];
        sparse.push(
            b.dates[t],
            b.open[t],
            b.high[t],
            b.low[t],
            b.close[t],
            b.volume[t],
        );
    }
    let src = scratch("qlib-src");
    write_qlib(
        &src,
        &[("SH600000".into(), &bars[0]), ("AAPL".into(), &sparse)],
    );
    let dst = scratch("qlib-dst");
    let input = Input::detect(&src).unwrap();
    assert!(matches!(input, Input::Qlib(_)));
    // Parquet when asked.
    let report = import(&input, &dst, Format::Parquet, |_, _| {}).unwrap();
    let files = ColumnarDir::open(&dst).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.symbols, 2);
    assert_eq!(qlib::symbol("SH600000"), "600000.SH");
    // Values as Qlib stores them (f32); bars that f32 rounding leaves invalid are reported.
    let f32s = |v: &[f64]| v.iter().map(|x| f64::from(*x as f32)).collect::<Vec<f64>>();
    for (name, want) in [("600000.SH", &bars[0]), ("AAPL", &sparse)] {
        let got = files.load(name).unwrap();
        assert_eq!(got.dates, want.dates, "{name}");
        assert_eq!(got.close, f32s(&want.close), "{name}");
        assert_eq!(got.volume, f32s(&want.volume), "{name}");
    }
    let gaps = sparse.len() - 1;
    assert_eq!(report.rejected.len(), gaps, "{:?}", &report.rejected[..3]);
    assert!(report.rejected.iter().all(|r| r.file == "features/aapl"
        && r.rule.contains("not traded")
        && r.at.starts_with("day ")));
    assert_eq!(report.bars as usize, bars[0].len() + sparse.len());
}
