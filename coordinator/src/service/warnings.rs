//! Warnings that catch a misleading result: a sweep can be computed correctly and still
//! say something untrue (a portfolio that is mostly cash, a best set on the grid's edge, a
//! Sharpe ratio resting on a handful of trades). Each says what it counts and what to
//! change; `xt`, the API and the web view show them as they are.

use serde_json::{Map, Value, json};

/// Fewer closed trades than this behind the best set cannot tell skill from luck.
const FEW_TRADES: u64 = 30;
/// A best set's annualised Sharpe ratio that many trades should stand behind.
const HIGH_SHARPE: f64 = 1.0;
/// A best set holding positions on less than this share of bars is mostly cash.
const LOW_EXPOSURE: f64 = 0.3;
/// The share of its bars below which a sleeve can rarely buy one lot.
const RARELY: f64 = 0.5;
/// Deflated Sharpe ratios below this are not significant at 95%.
const DSR_SIGNIFICANT: f64 = 0.95;
/// Walk-forward efficiency below this: out of sample keeps under half of in sample.
const LOW_EFFICIENCY: f64 = 0.5;

fn warning(code: &str, count: impl Into<Value>, message: String) -> Value {
    json!({"code": code, "count": count.into(), "message": message})
}

/// The warnings of a finished batch, from its summary so far, each sleeve's `affordable`
/// share and the market's lot.
pub(super) fn warnings(summary: &Map<String, Value>, affordable: &[f64], lot: f64) -> Vec<Value> {
    let mut out = Vec::new();
    let sleeves = affordable.len();
    let never = affordable.iter().filter(|&&a| a == 0.0).count();
    let rarely = affordable
        .iter()
        .filter(|&&a| a > 0.0 && a < RARELY)
        .count();
    if never > 0 {
        out.push(warning(
            "sleeves_cannot_buy_a_lot",
            never,
            format!(
                "{never} of {sleeves} sleeves could never buy one lot of {lot} shares with their capital (the batch's capital times their weight): their money stayed in cash all along; raise the capital or narrow the universe"
            ),
        ));
    }
    if rarely > 0 {
        out.push(warning(
            "sleeves_rarely_buy_a_lot",
            rarely,
            format!(
                "{rarely} of {sleeves} sleeves could buy one lot of {lot} shares on fewer than {:.0}% of their bars: their signals mostly went unfilled; raise the capital or narrow the universe",
                RARELY * 100.0
            ),
        ));
    }
    let failed = summary.get("failed").and_then(Value::as_u64).unwrap_or(0);
    if failed > 0 {
        out.push(warning(
            "symbols_failed",
            failed,
            format!(
                "{failed} symbols have no results (see failures by reason): their capital counted as cash; fix their data or leave them out of the universe"
            ),
        ));
    }
    let best = summary
        .get("best_params")
        .and_then(Value::as_str)
        .unwrap_or("");
    let sharpe = summary
        .get("portfolio")
        .and_then(|p| p.get(best))
        .and_then(|m| m.get("sharpe"))
        .and_then(Value::as_f64);
    let trading = summary.get("trading");
    let trades = trading
        .and_then(|t| t.get("trades"))
        .and_then(Value::as_u64);
    if let (Some(s), Some(n)) = (sharpe, trades)
        && s >= HIGH_SHARPE
        && n < FEW_TRADES
    {
        out.push(warning(
            "few_trades",
            n,
            format!(
                "the best set's Sharpe ratio of {s:.2} rests on {n} closed trades, too few to tell skill from luck; lengthen the date range or widen the universe"
            ),
        ));
    }
    if let Some(e) = trading
        .and_then(|t| t.get("mean_exposure"))
        .and_then(Value::as_f64)
        && e < LOW_EXPOSURE
    {
        out.push(warning(
            "low_exposure",
            sleeves,
            format!(
                "the best set's sleeves hold a position on {:.1}% of their bars on average: the portfolio is mostly cash, which flatters its volatility and drawdown; compare it with the benchmark's",
                e * 100.0
            ),
        ));
    }
    let o = summary.get("overfitting");
    let edge: Vec<&str> = o
        .and_then(|o| o.get("best_on_edge"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !edge.is_empty() {
        out.push(warning(
            "best_on_grid_edge",
            edge.len(),
            format!(
                "the best set {best} sits at the edge of the grid in {}: the optimum may lie outside it; extend the grid past that edge",
                edge.join(", ")
            ),
        ));
    }
    let field = |k: &str| o.and_then(|o| o.get(k)).and_then(Value::as_f64);
    if let Some(pbo) = field("pbo")
        && pbo > 0.5
    {
        let splits = o.and_then(|o| o.get("splits")).cloned().unwrap_or(json!(0));
        out.push(warning(
            "likely_overfit",
            splits,
            format!(
                "probability of backtest overfitting {:.0}%: in most splits the in-sample best set ranks in the lower half out of sample; do not trust the best set's figures, prefer a walk-forward",
                pbo * 100.0
            ),
        ));
    }
    if let (Some(dsr), Some(ne)) = (field("dsr"), field("effective_trials"))
        && dsr < DSR_SIGNIFICANT
    {
        out.push(warning(
            "sharpe_not_significant",
            ne.round() as u64,
            format!(
                "deflated Sharpe ratio {dsr:.2}: after {ne:.1} effective trials the best set's Sharpe ratio is not significant at 95%; fewer, better-founded parameter sets or a longer range would tell"
            ),
        ));
    }
    let w = summary.get("walk_forward");
    if let Some(e) = w.and_then(|w| w.get("efficiency")).and_then(Value::as_f64)
        && e < LOW_EFFICIENCY
    {
        let folds = w
            .and_then(|w| w.get("folds"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        out.push(warning(
            "walk_forward_decay",
            folds,
            format!(
                "walk-forward efficiency {e:.2}: out of sample the chosen sets kept less than half of their in-sample mean return; the in-sample figures overstate what to expect"
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(w: &[Value]) -> Vec<&str> {
        w.iter().map(|w| w["code"].as_str().unwrap()).collect()
    }

    #[test]
    fn a_clean_batch_has_none() {
        let s = json!({"failed": 0, "best_params": "{}", "portfolio": {"{}": {"sharpe": 0.8}},
                       "trading": {"trades": 400, "mean_exposure": 0.6}});
        assert!(warnings(s.as_object().unwrap(), &[1.0, 0.9], 100.0).is_empty());
    }

    #[test]
    fn each_warning_counts_what_it_says() {
        let s = json!({
            "failed": 3, "best_params": "{\"fast\":5}",
            "portfolio": {"{\"fast\":5}": {"sharpe": 1.4}},
            "trading": {"trades": 12, "mean_exposure": 0.1},
            "overfitting": {"best_on_edge": ["fast"], "pbo": 0.7, "splits": 12870, "dsr": 0.4, "effective_trials": 6.6},
            "walk_forward": {"efficiency": 0.2, "folds": [{}, {}, {}]},
        });
        let w = warnings(s.as_object().unwrap(), &[0.0, 0.0, 0.2, 1.0], 100.0);
        assert_eq!(
            codes(&w),
            [
                "sleeves_cannot_buy_a_lot",
                "sleeves_rarely_buy_a_lot",
                "symbols_failed",
                "few_trades",
                "low_exposure",
                "best_on_grid_edge",
                "likely_overfit",
                "sharpe_not_significant",
                "walk_forward_decay",
            ]
        );
        let counts: Vec<u64> = w.iter().map(|w| w["count"].as_u64().unwrap()).collect();
        assert_eq!(counts, [2, 1, 3, 12, 4, 1, 12870, 7, 3]);
        assert!(
            w[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("2 of 4 sleeves could never buy one lot of 100 shares")
        );
    }
}
