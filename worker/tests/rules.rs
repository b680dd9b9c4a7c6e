//! Market rules that change by date (SEMANTICS section 12) against backtrader: a batch on
//! the CSI 300 data whose range spans ChiNext's move to a 20% band (2020-08-24) and the
//! stamp duty's halving (2023-08-28), planned and run as every batch is, its universe with
//! no `price_limit` and its costs with no `stamp_duty`, so the built-in schedule applies.
//! `peers/bt_harness.py` resolves the same schedule rows by itself, fill by fill.

mod common;

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Float64Type, Int64Type};
use common::*;
use serde_json::{Value, json};
use xt_shared::date::format_date;
use xt_shared::spec::{Table, UniverseSpec};
use xt_shared::{BatchSpec, CsvDir, Universe};

/// A fill: date, side, price, quantity, commission and stamp duty.
type Fill = (String, String, f64, f64, f64);

/// Each symbol's fills from a batch's `trades` table, in order. A trade's `costs` are its
/// entry's and exit's together: the entry's commission is `max(rate * notional, minimum)`.
fn fills(trades: &RecordBatch, rate: f64, minimum: f64) -> BTreeMap<String, Vec<Fill>> {
    let text = |n: &str| trades.column_by_name(n).unwrap().as_string::<i32>().clone();
    let float = |n: &str| {
        trades
            .column_by_name(n)
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone()
    };
    let date = |n: &str| {
        trades
            .column_by_name(n)
            .unwrap()
            .as_primitive::<Date32Type>()
            .clone()
    };
    let (symbol, entry, exit) = (text("symbol"), date("entry_date"), date("exit_date"));
    let (entry_price, exit_price, costs) =
        (float("entry_price"), float("exit_price"), float("costs"));
    let qty = trades
        .column_by_name("qty")
        .unwrap()
        .as_primitive::<Int64Type>()
        .clone();
    let mut out: BTreeMap<String, Vec<Fill>> = BTreeMap::new();
    for i in 0..trades.num_rows() {
        let q = qty.value(i) as f64;
        let buy_cost = (entry_price.value(i) * q * rate).max(minimum);
        let v = out.entry(symbol.value(i).to_string()).or_default();
        v.push((
            format_date(entry.value(i)),
            "buy".into(),
            entry_price.value(i),
            q,
            buy_cost,
        ));
        if exit.is_valid(i) {
            let sell_cost = costs.value(i) - buy_cost;
            v.push((
                format_date(exit.value(i)),
                "sell".into(),
                exit_price.value(i),
                q,
                sell_cost,
            ));
        }
    }
    out
}

fn spec(
    data: &std::path::Path,
    strategy: &str,
    symbols: &[String],
    (start, end): (&str, &str),
) -> BatchSpec {
    let mut spec = BatchSpec::new(format!("file://{}", data.display()), strategy);
    spec.universe = Some(UniverseSpec::Symbols(symbols.to_vec()));
    spec.start = Some(start.into());
    spec.end = Some(end.into());
    if strategy == "rsi" {
        spec.params =
            Some(serde_json::from_value(json!({"period": 6, "lower": 30, "upper": 60})).unwrap());
    }
    spec.capital = 2_000_000.0 * symbols.len() as f64;
    spec.tables = Some(vec![Table::Metrics, Table::Trades]);
    spec
}

fn run(spec: &BatchSpec, data: &std::path::Path) -> (RecordBatch, Vec<xt_shared::job::JobSpec>) {
    let source = CsvDir::open(data).unwrap();
    let Some(UniverseSpec::Symbols(symbols)) = &spec.universe else {
        unreachable!("the batches here name their symbols")
    };
    let universe = Universe::from_symbols(symbols).unwrap();
    let plan = xt_shared::job::plan(spec, &source, &universe).unwrap();
    let r = xt_worker::runner::run_batch(spec, &source, &universe).unwrap();
    assert_eq!(r.outcome.failed, 0);
    (
        r.trades.unwrap(),
        plan.jobs.into_iter().map(|j| j.spec).collect(),
    )
}

#[test]
fn a_schedule_inside_the_range_equals_backtrader() {
    let Some(python) = peer_python("market rules by date against backtrader") else {
        return;
    };
    let Some(root) = shared_data("market rules by date on the CSI 300") else {
        return;
    };
    let data = root.join("cn-csi300");
    let mut names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".csv").map(str::to_string))
        .collect();
    names.sort();
    let board = |prefix: &str, n: usize| -> Vec<String> {
        names
            .iter()
            .filter(|s| s.starts_with(prefix))
            .take(n)
            .cloned()
            .collect()
    };
    let dir = xt_testkit::scratch("market-rules");
    // SEMANTICS section 12's table, as the harness reads it: written here from the text,
    // not taken from the engine's built-in schedule.
    let cn = json!([
        {"symbols": ["all"], "price_limit": 0.10},
        {"from": "2019-07-22", "symbols": ["688*"], "price_limit": 0.20},
        {"from": "2020-08-24", "symbols": ["300*", "301*"], "price_limit": 0.20},
        {"symbols": ["all"], "stamp_duty": 0.001},
        {"from": "2023-08-28", "symbols": ["all"], "stamp_duty": 0.0005},
    ]);
    // (strategy, symbols, range, whether the change must alter the fills). 300085.SZ opened
    // 17.6% above its close on 2020-10-12: a buy on that open fills under ChiNext's 20%
    // band and not under the 10% one. Every sell before 2023-08-28 pays 0.1% stamp duty.
    let changes = [
        ("rsi", board("300", 64), ("2020-06-01", "2020-12-31"), false),
        (
            "buy_and_hold",
            vec!["300085.SZ".to_string()],
            ("2020-10-09", "2020-12-31"),
            true,
        ),
        ("rsi", board("600", 8), ("2023-06-01", "2023-12-31"), true),
    ];
    for (strategy, symbols, range, must_change) in changes {
        let batch = spec(&data, strategy, &symbols, range);
        let costs = batch.resolved_costs();
        let (trades, jobs) = run(&batch, &data);
        let ours = fills(&trades, costs.commission_rate, costs.min_commission);
        let cases: Vec<Value> = jobs
            .iter()
            .map(|j| {
                json!({
                    "data": data.join(format!("{}.csv", j.symbol)), "symbol": j.symbol,
                    "strategy": strategy, "params": batch.params.clone().unwrap_or_default(), "market": "cn",
                    "capital": j.capital, "start": range.0, "end": range.1,
                    "costs": {"commission_rate": costs.commission_rate, "min_commission": costs.min_commission,
                              "stamp_duty": 0.0, "slippage": 0.0},
                    "price_limit": null, "rules": cn,
                })
            })
            .collect();
        let path = dir.join(format!("cases-{}.json", range.0));
        std::fs::write(&path, Value::from(cases).to_string()).unwrap();
        let theirs = run_peer(&python, "bt_harness.py", &[&path]);
        for (j, t) in jobs.iter().zip(theirs.as_array().unwrap()) {
            let mine = ours.get(&j.symbol).cloned().unwrap_or_default();
            let theirs: Vec<Fill> = t["fills"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f[0].as_str().unwrap().to_string(),
                        f[1].as_str().unwrap().to_string(),
                        f[2].as_f64().unwrap(),
                        f[3].as_f64().unwrap(),
                        f[4].as_f64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                mine.len(),
                theirs.len(),
                "{}: ours {mine:?}\nbacktrader {theirs:?}",
                j.symbol
            );
            for (o, t) in mine.iter().zip(&theirs) {
                assert!(
                    o.0 == t.0
                        && o.1 == t.1
                        && rel_diff(o.2, t.2) <= 1e-12
                        && o.3 == t.3
                        && (o.4 - t.4).abs() <= 1e-6,
                    "{}: ours {o:?}, backtrader {t:?}",
                    j.symbol
                );
            }
        }
        // The schedule is what made these fills: the same batch under the rules of
        // before the change (10% everywhere, 0.1% stamp duty) fills otherwise.
        let mut before = batch.clone();
        before.rules = Some(
            serde_json::from_value(json!([
                {"symbols": ["all"], "price_limit": 0.10},
                {"symbols": ["all"], "stamp_duty": 0.001},
            ]))
            .unwrap(),
        );
        let (trades, _) = run(&before, &data);
        let altered = fills(&trades, costs.commission_rate, costs.min_commission) != ours;
        assert!(
            altered || !must_change,
            "{strategy} over {range:?}: the change of rules altered nothing"
        );
    }
}
