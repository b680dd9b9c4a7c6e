//! The local batch runner end to end: grids, weights, membership, failed jobs, portfolio.

use std::collections::BTreeMap;
use std::io::Write;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Date32Type, Float64Type, Int64Type};
use serde_json::json;
use xt_shared::spec::Table;
use xt_shared::{BatchSpec, CsvDir, SyntheticMarket, Universe};
use xt_worker::runner::run_batch;

fn spec(strategy: &str) -> BatchSpec {
    BatchSpec::new("synthetic://?symbols=4&years=3&seed=5", strategy)
}

#[test]
fn a_grid_gives_one_row_per_symbol_and_combination() {
    let synth = SyntheticMarket {
        symbols: 4,
        years: 3,
        seed: 5,
    };
    let mut s = spec("sma_cross");
    s.grid = Some(serde_json::from_value(json!({"fast": [5, 10], "slow": [20, 30, 40]})).unwrap());
    let r = run_batch(&s, &synth, &synth.universe()).unwrap();
    assert_eq!(r.metrics.num_rows(), 4 * 6);
    assert_eq!(r.metrics.schema(), xt_shared::schema::METRICS.clone());
    let params = r
        .metrics
        .column_by_name("params")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(params.value(0), r#"{"fast":5,"slow":20}"#);
    let equity = r.equity.unwrap();
    let bars: i64 = r
        .metrics
        .column_by_name("bars")
        .unwrap()
        .as_primitive::<Int64Type>()
        .iter()
        .flatten()
        .sum();
    assert_eq!(equity.num_rows() as i64, bars);
    // Portfolio: one curve per combination over the union of dates, starting near capital.
    let p = &r.outcome.portfolio;
    assert_eq!(p.num_rows() % 6, 0);
    let first = p
        .column_by_name("equity")
        .unwrap()
        .as_primitive::<Float64Type>()
        .value(0);
    assert!((first - 1e6).abs() / 1e6 < 0.05, "{first}");
    assert_eq!(r.outcome.portfolio_metrics.len(), 6);
    assert!(
        r.outcome
            .portfolio_metrics
            .iter()
            .all(|(_, m)| m.beta.is_some())
    );
}

#[test]
fn the_portfolio_is_the_sum_of_sleeves() {
    let synth = SyntheticMarket {
        symbols: 3,
        years: 2,
        seed: 9,
    };
    let r = run_batch(&spec("rsi"), &synth, &synth.universe()).unwrap();
    let eq = r.equity.unwrap();
    let dates = eq
        .column_by_name("date")
        .unwrap()
        .as_primitive::<Date32Type>();
    let values = eq
        .column_by_name("equity")
        .unwrap()
        .as_primitive::<Float64Type>();
    let mut sums: BTreeMap<i32, f64> = BTreeMap::new();
    for i in 0..eq.num_rows() {
        *sums.entry(dates.value(i)).or_default() += values.value(i);
    }
    let p = &r.outcome.portfolio;
    let pd = p
        .column_by_name("date")
        .unwrap()
        .as_primitive::<Date32Type>();
    let pe = p
        .column_by_name("equity")
        .unwrap()
        .as_primitive::<Float64Type>();
    // The synthetic calendar is shared, so every sleeve has a bar on every date.
    for i in 0..p.num_rows() {
        let want = sums[&pd.value(i)];
        assert!(
            (pe.value(i) - want).abs() <= 1e-6 * want,
            "{} vs {want}",
            pe.value(i)
        );
    }
}

#[test]
fn a_broken_file_fails_only_its_own_job() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("runner-broken");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let synth = SyntheticMarket {
        symbols: 2,
        years: 1,
        seed: 1,
    };
    for sym in ["SYN00000", "SYN00001"] {
        let bars = xt_shared::BarSource::load(&synth, sym).unwrap();
        xt_shared::source::write_csv(
            &bars,
            std::fs::File::create(dir.join(format!("{sym}.csv"))).unwrap(),
        )
        .unwrap();
    }
    let mut f = std::fs::File::create(dir.join("BAD.csv")).unwrap();
    writeln!(
        f,
        "date,open,high,low,close,volume\n2015-01-05,10,9,8,10,100"
    )
    .unwrap();
    let source = CsvDir::open(&dir).unwrap();
    let universe = Universe::from_symbols(&["SYN00000", "BAD", "MISSING", "SYN00001"]).unwrap();
    let mut s = BatchSpec::new(format!("file://{}", dir.display()), "macd");
    s.tables = Some(vec![Table::Metrics, Table::Portfolio]);
    let r = run_batch(&s, &source, &universe).unwrap();
    assert_eq!((r.outcome.jobs, r.outcome.failed), (4, 2));
    assert!(r.trades.is_none() && r.equity.is_none());
    let errors = r
        .metrics
        .column_by_name("error")
        .unwrap()
        .as_string::<i32>();
    let symbols = r
        .metrics
        .column_by_name("symbol")
        .unwrap()
        .as_string::<i32>();
    let sharpe = r.metrics.column_by_name("final_equity").unwrap();
    for i in 0..r.metrics.num_rows() {
        match symbols.value(i) {
            "BAD" => assert!(
                errors
                    .value(i)
                    .contains("BAD: the bar of 2015-01-05: high must be >= max(open, close)"),
                "{}",
                errors.value(i)
            ),
            "MISSING" => assert!(errors.value(i).contains("MISSING"), "{}", errors.value(i)),
            _ => assert!(errors.is_null(i) && sharpe.is_valid(i)),
        }
        if errors.is_valid(i) {
            assert!(sharpe.is_null(i));
        }
    }
}

#[test]
fn bad_specs_are_named_errors() {
    let synth = SyntheticMarket {
        symbols: 2,
        years: 1,
        seed: 1,
    };
    let u = synth.universe();
    let err = |s: BatchSpec| run_batch(&s, &synth, &u).err().unwrap().to_string();
    assert!(err(spec("momentum")).contains("unknown strategy \"momentum\""));
    let mut s = spec("sma_cross");
    s.params = Some(serde_json::from_value(json!({"fast": 50, "slow": 10})).unwrap());
    assert!(err(s).contains("fast must be < slow"));
    let mut s = spec("sma_cross");
    s.start = Some("2030-01-01".into());
    assert!(err(s).contains("no symbol has a bar"));
}
