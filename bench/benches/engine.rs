//! Engine throughput: bar evaluations (bars x parameter combinations) per second on one
//! core, for each built-in strategy on a 2,500-bar series, one parameter set and a
//! 100-combination grid. A job here is what a worker runs: indicators from scratch (shared
//! across the grid), signals, fills, the equity curve and the metrics of every combination.
//!
//! Run: `cargo bench -p bench --bench engine`. Criterion reports `thrpt` in elements/s,
//! which are bar evaluations per second per core.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use xt_shared::{BarSource, Market, SyntheticMarket};
use xt_worker::engine::strategy::{self, ParamSet};
use xt_worker::engine::tables::TableWriter;
use xt_worker::engine::{Exchange, Job, Never, run_job};

const BARS: usize = 2_500;

fn grids() -> Vec<(&'static str, Value)> {
    let ten = |from: i64, step: i64| (0..10).map(|i| from + i * step).collect::<Vec<_>>();
    vec![
        ("sma_cross", json!({"fast": ten(2, 2), "slow": ten(25, 5)})),
        (
            "macd",
            json!({"fast": ten(4, 1), "slow": ten(20, 2), "signal": [9]}),
        ),
        (
            "bollinger",
            json!({"period": ten(10, 2), "k": [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25]}),
        ),
        ("rsi", json!({"period": ten(5, 2), "lower": ten(20, 2)})),
        ("turtle", json!({"entry": ten(10, 5), "exit": ten(5, 2)})),
    ]
}

fn combos(name: &str, grid: Option<&Value>) -> Vec<ParamSet> {
    let s = strategy::find(name).expect("built-in");
    let grid = grid.map(|g| serde_json::from_value(g.clone()).expect("grid"));
    strategy::expand(s.def(), None, grid.as_ref()).expect("valid grid")
}

fn engine(c: &mut Criterion) {
    let synth = SyntheticMarket {
        symbols: 1,
        years: BARS / 252 + 1,
        seed: 42,
    };
    let full = synth.load("SYN00000").expect("synthetic");
    let bars = full.in_range(None, Some(full.dates[BARS - 1]));
    assert_eq!(bars.len(), BARS);
    let member = vec![true; BARS];

    let mut group = c.benchmark_group("engine");
    group.sample_size(20);
    let mut cases: Vec<(String, &'static str, Vec<ParamSet>)> = vec![(
        "single".into(),
        "buy_and_hold",
        combos("buy_and_hold", None),
    )];
    for (name, grid) in grids() {
        cases.push(("single".into(), name, combos(name, None)));
        cases.push(("grid100".into(), name, combos(name, Some(&grid))));
    }
    for (kind, name, sets) in &cases {
        assert!(
            kind == "single" || sets.len() == 100,
            "{name}: {} combinations",
            sets.len()
        );
        let s = strategy::find(name).expect("built-in");
        group.throughput(Throughput::Elements((BARS * sets.len()) as u64));
        group.bench_function(BenchmarkId::new(*name, kind), |b| {
            b.iter(|| {
                // The exchange (limit prices, suspensions) is built once per job, so it is timed.
                let exchange = Exchange::new(&bars, Market::Cn, Market::Cn.default_costs(), None);
                let job = Job {
                    bars: &bars,
                    member: &member,
                    exchange: &exchange,
                    capital: 1e6,
                };
                let mut last = 0.0;
                run_job(&job, s, sets, &Never, |_, run, m| {
                    last += run.equity[BARS - 1] + m.sharpe.unwrap_or(0.0)
                })
                .expect("never halted");
                last
            })
        });
    }
    // The same grid with every result table built, as a worker ships them.
    let sets = combos("sma_cross", Some(&grids()[0].1));
    group.throughput(Throughput::Elements((BARS * sets.len()) as u64));
    group.bench_function(BenchmarkId::new("sma_cross", "grid100+tables"), |b| {
        b.iter(|| {
            let exchange = Exchange::new(&bars, Market::Cn, Market::Cn.default_costs(), None);
            let job = Job {
                bars: &bars,
                member: &member,
                exchange: &exchange,
                capital: 1e6,
            };
            let mut w = TableWriter::new("SYN00000", true, true);
            run_job(
                &job,
                strategy::find("sma_cross").expect("built-in"),
                &sets,
                &Never,
                |i, run, m| w.push(sets[i].json(), &bars.dates, run, m),
            )
            .expect("never halted");
            w.finish().expect("tables").metrics.num_rows()
        })
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
