//! Invariants of every sleeve, on random bars and every built-in strategy (proptest):
//! cash never negative, `equity == cash + qty * close` on every bar, quantities in whole
//! lots, no look-ahead, no buy on a limit-up open and no sell on a limit-down open.

mod common;

use common::{Venue, run_one};
use proptest::prelude::*;
use serde_json::json;
use xt_shared::market::{Limit, limit_price};
use xt_shared::{Bars, Costs, Market};

/// One bar's randomness: close-to-close move, opening gap, range, suspension, limit open.
type Step = (f64, f64, f64, u8, u8);

fn build(start: f64, steps: &[Step]) -> Bars {
    let mut bars = Bars::new("P");
    let mut prev = start;
    for (i, &(ret, gap, range, suspend, limit)) in steps.iter().enumerate() {
        let tick = |x: f64| ((x * 100.0).round() / 100.0).max(0.01);
        if suspend == 0 {
            // Suspended: flat at the last close, nothing traded.
            bars.push(i as i32, prev, prev, prev, prev, 0.0);
            continue;
        }
        let open = match limit {
            0 => limit_price(prev, 0.1, Limit::Up),
            1 => limit_price(prev, 0.1, Limit::Down),
            _ => tick(prev * (1.0 + gap)),
        };
        let close = tick(prev * (1.0 + ret));
        let high = tick(open.max(close) * (1.0 + range));
        let low = tick(open.min(close) * (1.0 - range)).min(open.min(close));
        bars.push(
            i as i32,
            open,
            high.max(open.max(close)),
            low,
            close,
            1000.0,
        );
        prev = close;
    }
    bars
}

fn steps(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (
            -0.09f64..0.09,
            -0.05f64..0.05,
            0.0f64..0.03,
            0u8..20,
            0u8..15,
        ),
        len,
    )
}

fn strategy_case() -> impl Strategy<Value = (&'static str, serde_json::Value)> {
    prop_oneof![
        Just(("buy_and_hold", json!({}))),
        (2usize..8, 8usize..20).prop_map(|(f, s)| ("sma_cross", json!({"fast": f, "slow": s}))),
        (2usize..6, 7usize..15, 1usize..5)
            .prop_map(|(f, s, g)| ("macd", json!({"fast": f, "slow": s, "signal": g}))),
        (2usize..15, 0.5f64..2.5).prop_map(|(p, k)| ("bollinger", json!({"period": p, "k": k}))),
        (2usize..10).prop_map(|p| ("rsi", json!({"period": p, "lower": 40, "upper": 60}))),
        (2usize..10, 2usize..10, 1usize..10).prop_map(|(e, x, a)| (
            "turtle",
            json!({"entry": e, "exit": x, "atr": a, "risk": 0.5, "stop_atr": 1.0})
        )),
    ]
}

fn market() -> impl Strategy<Value = (Market, Costs)> {
    prop_oneof![
        Just((Market::Cn, Market::Cn.default_costs())),
        Just((
            Market::Cn,
            Costs {
                slippage: 0.003,
                ..Market::Cn.default_costs()
            }
        )),
        Just((
            Market::Us,
            Costs {
                commission_rate: 0.001,
                min_commission: 1.0,
                stamp_duty: 0.0,
                slippage: 0.001
            }
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn sleeve_invariants(start in 1.0f64..300.0, s in steps(20..250), (name, params) in strategy_case(),
                         (market, costs) in market(), capital in 1_000.0f64..2_000_000.0) {
        let bars = build(start, &s);
        prop_assert_eq!(bars.validate(), Ok(()));
        let member = vec![true; bars.len()];
        let run = run_one(&bars, &member, Venue { market, costs, price_limit: None, capital }, name, &params);
        let lot = market.lot();
        for t in 0..bars.len() {
            prop_assert!(run.cash[t] >= 0.0, "cash {} < 0 at {t}", run.cash[t]);
            prop_assert_eq!(run.equity[t], run.cash[t] + run.qty[t] * bars.close[t]);
            prop_assert_eq!(run.qty[t] % lot, 0.0);
        }
        for trade in &run.trades {
            let i = trade.entry;
            prop_assert!(bars.volume[i] > 0.0, "bought on a suspended bar {i}");
            prop_assert_eq!(trade.qty % lot, 0.0);
            prop_assert!(trade.qty > 0.0);
            if market == Market::Cn {
                prop_assert!(bars.open[i] < limit_price(bars.close[i - 1], 0.1, Limit::Up), "bought on a limit-up open at {i}");
            }
            if let Some(x) = trade.exit {
                prop_assert!(bars.volume[x] > 0.0, "sold on a suspended bar {x}");
                if market == Market::Cn {
                    prop_assert!(bars.open[x] > limit_price(bars.close[x - 1], 0.1, Limit::Down), "sold on a limit-down open at {x}");
                }
            }
        }
    }

    #[test]
    fn no_look_ahead(start in 1.0f64..300.0, s in steps(30..200), tail in steps(1..100), cut_at in 0.0f64..1.0,
                     (name, params) in strategy_case(), (market, costs) in market()) {
        let bars = build(start, &s);
        let cut = ((bars.len() - 1) as f64 * cut_at) as usize;
        // Same bars up to `cut`, a different future after it.
        let mut future = bars.in_range(None, Some(cut as i32));
        let other = build(bars.close[cut], &tail);
        for i in 0..other.len() {
            future.push((cut + 1 + i) as i32, other.open[i], other.high[i], other.low[i], other.close[i], other.volume[i]);
        }
        let venue = Venue { market, costs, price_limit: None, capital: 100_000.0 };
        let a = run_one(&bars, &vec![true; bars.len()], venue, name, &params);
        let b = run_one(&future, &vec![true; future.len()], venue, name, &params);
        prop_assert_eq!(&a.equity[..=cut], &b.equity[..=cut]);
        prop_assert_eq!(&a.qty[..=cut], &b.qty[..=cut]);
        let entries = |r: &xt_worker::engine::SleeveRun| r.trades.iter().filter(|t| t.entry <= cut).map(|t| (t.entry, t.entry_price, t.qty, t.exit.filter(|&x| x <= cut))).collect::<Vec<_>>();
        prop_assert_eq!(entries(&a), entries(&b));
    }
}
