//! Written strategies against a second implementation of the language (`peers/xts.py`:
//! numpy, pandas and TA-Lib, its own parser) and against backtrader: strategies generated
//! at random from the grammar, well typed, on real A-shares and US stocks. Their entry and
//! exit signals must agree bar by bar, and their fills with backtrader's (the harness
//! trading the second implementation's signals).
//!
//! `XT_LANG_SEEDS` sets how many strategies (default 24; the bench's long run uses more).

mod common;

use std::fmt::Write;
use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use xt_shared::date::format_date;
use xt_shared::lang::Script;
use xt_shared::strategy::script_combos;
use xt_shared::{Bars, Market};
use xt_worker::engine::indicators::Indicators;
use xt_worker::engine::strategy::{ParamSet, Signals, Strategy};
use xt_worker::engine::{Exchange, Job, Never, ScriptStrategy, run_job};

/// xorshift64*: a few lines, the same strategies on every machine.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }

    fn window(&mut self) -> usize {
        [2, 3, 5, 8, 10, 14, 20, 30][self.below(8)]
    }
}

/// A random numeric expression of depth at most `depth`.
fn number(r: &mut Rng, depth: usize) -> String {
    const LEAVES: [&str; 7] = ["close", "open", "high", "low", "volume", "close", "2.5"];
    if depth == 0 || r.below(4) == 0 {
        return LEAVES[r.below(LEAVES.len())].to_string();
    }
    let mut x = || number(r, depth - 1);
    let (a, b) = (x(), x());
    let (n, k) = (r.window(), r.below(4));
    match r.below(30) {
        0 => format!("({a} + {b})"),
        1 => format!("({a} - {b})"),
        2 => format!("({a} * {b})"),
        3 => format!("({a} / {b})"),
        4 => format!("(-{a})"),
        5 => format!("abs({a})"),
        6 => format!("log({a})"),
        7 => format!("sign({a} - {b})"),
        8 => format!("pow({a}, 0.5)"),
        9 => format!("min({a}, {b})"),
        10 => format!("max({a}, {b})"),
        11 => format!("delay({a}, {k})"),
        12 => format!("delta({a}, {k})"),
        13 => format!("sum({a}, {n})"),
        14 => format!("mean({a}, {n})"),
        15 => format!("std({a}, {n})"),
        16 => format!("ts_min({a}, {n})"),
        17 => format!("ts_max({a}, {n})"),
        18 => format!("argmin({a}, {n})"),
        19 => format!("argmax({a}, {n})"),
        20 => format!("rank({a}, {n})"),
        21 => format!("corr({a}, {b}, {n})"),
        22 => format!("sma({a}, {n})"),
        23 => format!("ema({a}, {n})"),
        24 => format!("rsi({a}, {n})"),
        25 => format!("atr(high, low, {a}, {n})"),
        26 => format!("macd({a}, {}, {}, {})", n, n + 7, k + 2),
        27 => format!("macd_signal({a}, {}, {}, {})", n, n + 7, k + 2),
        28 => format!("bbands_upper({a}, {n}, 2)"),
        _ => format!("if({a} > {b}, bbands_lower({a}, {n}, 1.5), {b})"),
    }
}

/// A random condition: comparisons shaped to change value now and then.
fn condition(r: &mut Rng, depth: usize) -> String {
    let x = number(r, depth);
    match r.below(7) {
        0 => format!("{x} > delay({x}, {})", 1 + r.below(3)),
        1 => format!("cross_above({x}, sma({x}, {}))", r.window()),
        2 => format!("cross_below({x}, ema({x}, {}))", r.window()),
        3 => format!("{x} < {}", number(r, depth)),
        4 => format!("({}) and not ({})", condition(r, 1), condition(r, 1)),
        5 => format!("({}) or not defined({x})", condition(r, 1)),
        _ => format!("{x} >= ts_max({x}, {})", r.window()),
    }
}

fn generated(seed: u64) -> String {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut s = format!("strategy gen{seed}\n");
    let shared = number(&mut r, 2);
    writeln!(s, "let x = {shared}").unwrap();
    writeln!(
        s,
        "entry when ({}) or cross_above(x, delay(x, 1))",
        condition(&mut r, 3)
    )
    .unwrap();
    writeln!(s, "exit when {}", condition(&mut r, 3)).unwrap();
    s
}

/// The engine's signals and trades for a source on one series.
fn engine(source: &str, bars: &Bars, market: Market) -> (Vec<bool>, Vec<bool>, Vec<Value>) {
    let script = Arc::new(Script::compile(source).unwrap_or_else(|e| panic!("{e}\n{source}")));
    let (script, combos, plans) = script_combos(script, None, None).unwrap();
    let strategy = ScriptStrategy { script, plans };
    let mut signals = Signals::default();
    signals.reset(bars.len());
    strategy.signals(0, &combos[0], &mut Indicators::new(bars), &mut signals);
    let member = vec![true; bars.len()];
    let exchange = Exchange::new(bars, market, market.default_costs(), None);
    let job = Job {
        bars,
        member: &member,
        exchange: &exchange,
        capital: 1e6,
    };
    let mut fills = Vec::new();
    let sets: Vec<ParamSet> = combos;
    run_job(&job, &strategy, &sets, &Never, |_, run, _| {
        for t in &run.trades {
            fills.push(json!([
                format_date(bars.dates[t.entry]),
                "buy",
                t.entry_price,
                t.qty
            ]));
            if let (Some(i), Some(p)) = (t.exit, t.exit_price) {
                fills.push(json!([format_date(bars.dates[i]), "sell", p, t.qty]));
            }
        }
    })
    .unwrap();
    (signals.enter, signals.exit, fills)
}

#[test]
fn generated_strategies_agree_with_a_second_implementation_and_backtrader() {
    let (Some(data), Some(python)) = (
        shared_data("generated strategies on real data"),
        peer_python("generated strategies against xts.py and backtrader"),
    ) else {
        return;
    };
    let seeds: u64 = std::env::var("XT_LANG_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let series = [
        ("cn-csi300", "600519.SH", Market::Cn),
        ("cn-csi300", "601212.SH", Market::Cn),
        ("cn-csi300", "600733.SH", Market::Cn),
        ("us-backtrader", "NVDA", Market::Us),
    ];
    let loaded: Vec<(String, Bars, Market)> = series
        .iter()
        .map(|(set, symbol, market)| {
            let dir = data.join(set);
            let csv = dir.join(format!("{symbol}.csv")).display().to_string();
            (csv, load_csv(&dir, symbol), *market)
        })
        .collect();
    let mut sources: Vec<String> = (1..=seeds).map(generated).collect();
    for name in ["sma_cross", "macd", "bollinger", "rsi", "buy_and_hold"] {
        let path = workspace().join(format!("examples/strategies/{name}.xts"));
        sources.push(std::fs::read_to_string(path).unwrap());
    }
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for source in &sources {
        for (csv, bars, market) in &loaded {
            let costs = market.default_costs();
            cases.push(json!({
                "data": csv, "strategy": "written", "source": source, "params": {},
                "market": market.name(), "capital": 1e6, "price_limit": null, "member": null,
                "costs": {"commission_rate": costs.commission_rate, "min_commission": costs.min_commission,
                          "stamp_duty": costs.stamp_duty, "slippage": costs.slippage},
            }));
            ours.push(engine(source, bars, *market));
        }
    }
    let dir = xt_testkit::scratch("written-peers");
    let path = dir.join("cases.json");
    std::fs::write(&path, Value::from(cases.clone()).to_string()).unwrap();
    let signals = run_peer(&python, "xts.py", &[&path]);
    let trades = run_peer(&python, "bt_harness.py", &[&path]);
    let (mut bars_compared, mut fills_compared, mut entries) = (0, 0, 0);
    let mut near_ties = Vec::new();
    for (i, (enter, exit, fills)) in ours.iter().enumerate() {
        let case = &cases[i];
        let what = format!("{} on {}", case["source"].as_str().unwrap(), case["data"]);
        let bits = |key: &str| -> Vec<bool> {
            signals[i][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v == 1)
                .collect()
        };
        let mut tied = false;
        for (name, ours) in [("entry", enter), ("exit", exit)] {
            let (theirs, fragile) = (bits(name), bits(&format!("fragile_{name}")));
            assert_eq!(ours.len(), theirs.len(), "{what}");
            for t in (0..ours.len()).filter(|&t| ours[t] != theirs[t]) {
                // Decided by two numbers within 1e-9 of each other, which two correct
                // implementations may round to either side: counted, not failed.
                assert!(
                    fragile[t],
                    "{name} differs at bar {t}: ours {}, xts.py {}\n{what}",
                    ours[t], theirs[t]
                );
                tied = true;
            }
            bars_compared += ours.len();
        }
        entries += enter.iter().filter(|&&e| e).count();
        if tied {
            // The trades part ways at the tie; nothing to compare after it.
            near_ties.push(what);
            continue;
        }
        let theirs = trades[i]["fills"].as_array().unwrap();
        for (k, (o, t)) in fills.iter().zip(theirs).enumerate() {
            let same = o[0] == t[0]
                && o[1] == t[1]
                && rel_diff(o[2].as_f64().unwrap(), t[2].as_f64().unwrap()) <= 1e-12
                && o[3] == t[3];
            assert!(same, "fill {k}: ours {o}, backtrader {t}\n{what}");
        }
        assert_eq!(
            fills.len(),
            theirs.len(),
            "fills: ours {}, backtrader {}\n{what}",
            fills.len(),
            theirs.len()
        );
        fills_compared += fills.len();
    }
    eprintln!(
        "{} strategies x {} series: {bars_compared} signals and {fills_compared} fills compared; {} cases with a near tie: {near_ties:#?}",
        sources.len(),
        loaded.len(),
        near_ties.len()
    );
    assert!(
        near_ties.len() * 10 <= ours.len(),
        "{} of {} cases part ways at a near tie",
        near_ties.len(),
        ours.len()
    );
    assert!(
        entries > 1000 && fills_compared > 500,
        "{entries} entries, {fills_compared} fills"
    );
}
