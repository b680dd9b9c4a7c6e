use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::{ProptestConfig, prop, prop_assert_eq, proptest};
use xt_shared::lang::Script;
use xt_shared::strategy::script_combos;
use xt_shared::{BarSource, Market, SyntheticMarket};

use super::*;
use crate::exchange::Exchange;
use crate::interrupt::Never;
use crate::job::{Job, run_job};
use crate::strategy::{self, expand};

fn example(name: &str) -> String {
    let path = format!(
        "{}/../../examples/strategies/{name}.xts",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn written(src: &str, grid: &serde_json::Value) -> (ScriptStrategy, Vec<ParamSet>) {
    let grid: BTreeMap<String, Vec<serde_json::Value>> =
        serde_json::from_value(grid.clone()).unwrap();
    let script = Arc::new(Script::compile(src).unwrap_or_else(|e| panic!("{e}")));
    let (script, combos, plans) = script_combos(script, None, Some(&grid)).unwrap();
    (ScriptStrategy { script, plans }, combos)
}

/// Every set's trades and equity, bit for bit, as `(trades, equity)` debug strings.
fn outcomes(
    bars: &Bars,
    market: Market,
    strategy: &dyn Strategy,
    combos: &[ParamSet],
) -> Vec<(String, Vec<u64>)> {
    let member = vec![true; bars.len()];
    let exchange = Exchange::new(bars, market, market.default_costs(), None);
    let job = Job {
        bars,
        member: &member,
        exchange: &exchange,
        capital: 1e6,
    };
    let mut out = Vec::new();
    run_job(&job, strategy, combos, &Never, |_, run, _| {
        let equity = run.equity.iter().map(|v| v.to_bits()).collect();
        out.push((format!("{:?}", run.trades), equity));
    })
    .unwrap();
    out
}

#[test]
fn each_builtin_written_in_the_language_trades_the_same_on_synthetic_markets() {
    let cases = [
        (
            "sma_cross",
            serde_json::json!({"fast": [3, 10], "slow": [20, 30]}),
        ),
        (
            "macd",
            serde_json::json!({"fast": [8, 12], "slow": [26], "signal": [5, 9]}),
        ),
        (
            "bollinger",
            serde_json::json!({"period": [10, 20], "k": [1.0, 2.0]}),
        ),
        (
            "rsi",
            serde_json::json!({"period": [7, 14], "lower": [30], "upper": [60, 70]}),
        ),
        (
            "turtle",
            serde_json::json!({"entry": [10, 20], "exit": [5, 10], "stop_atr": [1.0, 2.0]}),
        ),
        ("buy_and_hold", serde_json::json!({})),
    ];
    for seed in 1..=4 {
        let synth = SyntheticMarket {
            symbols: 3,
            years: 4,
            seed,
        };
        for s in 0..3 {
            let bars = synth.load(&synth.symbol(s)).unwrap();
            for market in [Market::Cn, Market::Us] {
                for (name, grid) in &cases {
                    let builtin = strategy::find(name).unwrap();
                    let g = serde_json::from_value(grid.clone()).unwrap();
                    let combos = expand(builtin.def(), None, Some(&g)).unwrap();
                    let (script, script_combos) = written(&example(name), grid);
                    let names: Vec<_> = combos.iter().map(|c| c.json()).collect();
                    let script_names: Vec<_> = script_combos.iter().map(|c| c.json()).collect();
                    assert_eq!(names, script_names, "{name}");
                    let want = outcomes(&bars, market, builtin, &combos);
                    let got = outcomes(&bars, market, &script, &script_combos);
                    assert!(want.iter().any(|(t, _)| t != "[]"), "{name} never trades");
                    assert_eq!(got, want, "{name}, seed {seed}, symbol {s}, {market:?}");
                }
            }
        }
    }
}

#[test]
fn an_exit_can_read_how_long_the_position_is_held() {
    let synth = SyntheticMarket {
        symbols: 1,
        years: 3,
        seed: 9,
    };
    let bars = synth.load(&synth.symbol(0)).unwrap();
    let src = "strategy hold5\nparam days: int = 5\nentry when close > delay(close, 1)\nexit when bars_held >= days\n";
    let (s, combos) = written(src, &serde_json::json!({"days": [1, 5]}));
    let member = vec![true; bars.len()];
    let exchange = Exchange::new(&bars, Market::Us, Market::Us.default_costs(), None);
    let job = Job {
        bars: &bars,
        member: &member,
        exchange: &exchange,
        capital: 1e6,
    };
    let mut checked = 0;
    run_job(&job, &s, &combos, &Never, |i, run, _| {
        let days = [1, 5][i];
        // Signalled at the close `days` bars after the fill; filled at the next open that
        // trades (a suspended day postpones it).
        for t in run.trades.iter().filter(|t| t.exit.is_some()) {
            let want = (t.entry + days + 1..bars.len()).find(|&b| bars.volume[b] > 0.0);
            assert_eq!(t.exit, want, "days {days}: {t:?}");
            checked += 1;
        }
    })
    .unwrap();
    assert!(checked > 20, "{checked} trades");
}

#[test]
fn a_grid_computes_each_shared_operation_once() {
    let synth = SyntheticMarket {
        symbols: 1,
        years: 2,
        seed: 3,
    };
    let bars = synth.load(&synth.symbol(0)).unwrap();
    let (s, combos) = written(
        &example("sma_cross"),
        &serde_json::json!({"fast": [5, 10], "slow": [20, 30]}),
    );
    let mut ind = Indicators::new(&bars);
    let mut out = Signals::default();
    for (i, p) in combos.iter().enumerate() {
        out.reset(bars.len());
        s.signals(i, p, &mut ind, &mut out);
    }
    // close, four SMAs, and a cross above and below for each of the four sets.
    assert_eq!(ind.computed.values.len(), 1 + 4 + 8);
}

/// Every operator, as the language writes it, with a window of 3 where it takes one.
const OPERATORS: [&str; 30] = [
    "close + volume",
    "close / (close - open)",
    "-close",
    "abs(close - open)",
    "sign(close - open)",
    "log(close - open)",
    "pow(close, 0.5)",
    "min(close, open)",
    "max(close, open)",
    "if(close > open, close, open)",
    "delay(close, 3)",
    "delta(close, 3)",
    "sum(close, 3)",
    "mean(close, 3)",
    "std(close, 3)",
    "ts_min(close, 3)",
    "ts_max(close, 3)",
    "argmin(close, 3)",
    "argmax(close, 3)",
    "rank(close, 3)",
    "corr(close, volume, 3)",
    "sma(close, 3)",
    "ema(close, 3)",
    "rsi(close, 3)",
    "atr(high, low, close, 3)",
    "macd(close, 2, 4, 3)",
    "macd_signal(close, 2, 4, 3)",
    "bbands_upper(close, 3, 1.5)",
    "bbands_lower(close, 3, 2)",
    "ema(log(close - open), 3)",
];

/// The value of `expr` on `bars` at every bar, as bits (missing as one NaN).
fn evaluate(expr: &str, bars: &Bars) -> Vec<u64> {
    let src = format!("strategy t\nentry when defined({expr})\nexit when false\nqty = {expr}\n");
    let (s, combos) = written(&src, &serde_json::json!({}));
    let mut ind = Indicators::new(bars);
    let mut out = Signals::default();
    out.reset(bars.len());
    s.signals(0, &combos[0], &mut ind, &mut out);
    let rule = out.qty_rule.expect("a quantity rule");
    let flat = Held {
        entry_price: f64::NAN,
        bars_held: f64::NAN,
        signal: 0,
        cash: 0.0,
    };
    (0..bars.len())
        .map(|t| {
            let v = rule.value(t, &flat);
            assert_eq!(out.enter[t], !v.is_nan(), "{expr} at {t}");
            if v.is_nan() {
                f64::NAN.to_bits()
            } else {
                v.to_bits()
            }
        })
        .collect()
}

fn series(values: &[(f64, f64)]) -> Bars {
    let mut bars = Bars::new("X");
    for (i, &(o, c)) in values.iter().enumerate() {
        bars.push(
            i as i32,
            o,
            o.max(c) + 0.5,
            o.min(c) * 0.9,
            c,
            1000.0 + c * 7.0,
        );
    }
    bars
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No look-ahead: every operator's values on the first `k` bars are the first `k` of
    /// its values on all bars.
    #[test]
    fn every_operator_sees_only_the_past(
        values in prop::collection::vec((1.0f64..20.0, 1.0f64..20.0), 8..60),
        cut in 1usize..60,
    ) {
        let bars = series(&values);
        let k = cut.min(bars.len());
        let mut head = Bars::new("X");
        for t in 0..k {
            head.push(t as i32, bars.open[t], bars.high[t], bars.low[t], bars.close[t], bars.volume[t]);
        }
        for expr in OPERATORS {
            let all = evaluate(expr, &bars);
            prop_assert_eq!(&evaluate(expr, &head)[..], &all[..k], "{}", expr);
        }
    }
}
