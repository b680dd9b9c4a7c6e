//! Strategies' signals: what each built-in says after every bar's close (SEMANTICS section
//! 7). Their names, parameters and rules are declared in `xt_shared::strategy`; this is
//! what each does with a parameter set and the job's indicators.
//!
//! A strategy turns one parameter set into `Signals`: an enter and an exit flag per bar,
//! plus an optional risk rule (sizing and a stop tied to the fill price). Everything about
//! fills, costs and market rules lives in the exchange and the sleeve, so a new strategy is
//! a declaration and one file with its `signals`.

mod bollinger;
mod buy_and_hold;
mod macd;
mod rsi;
mod sma_cross;
mod turtle;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use xt_shared::SpecError;
pub use xt_shared::strategy::{
    Chosen, MAX_COMBINATIONS, MAX_PERIOD, ParamDef, ParamError, ParamKind, ParamSet, StrategyDef,
    expand,
};

use super::indicators::{Indicators, Series};
use super::script::{LiveRule, ScriptStrategy};

/// Sizing and stop of a strategy that risks a fixed share of cash per trade (turtle).
#[derive(Debug, Clone)]
pub struct RiskRule {
    /// The volatility measure the risk is expressed in (ATR), read at the signal bar.
    pub atr: Series,
    /// Share of cash risked per `atr` of adverse move: `qty = lot * floor(cash * risk / atr / lot)`.
    pub risk: f64,
    /// Exit when `close < entry_fill_price - stop_atr * atr[t_signal]`.
    pub stop_atr: f64,
}

/// What a strategy says after each bar's close, before market rules and position state.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    pub enter: Vec<bool>,
    pub exit: Vec<bool>,
    pub risk: Option<RiskRule>,
    /// An exit that reads the open position (a written strategy's stop), read at each
    /// close while the sleeve holds one, besides `exit`.
    pub exit_rule: Option<LiveRule>,
    /// A written strategy's quantity rule, read when an entry fills; all in without one.
    pub qty_rule: Option<LiveRule>,
}

impl Signals {
    /// Clears the flags for `n` bars, keeping the allocations for the next combination.
    pub fn reset(&mut self, n: usize) {
        self.enter.clear();
        self.enter.resize(n, false);
        self.exit.clear();
        self.exit.resize(n, false);
        self.risk = None;
        self.exit_rule = None;
        self.qty_rule = None;
    }
}

/// Both crosses in one pass: `enter` gets `cross_above(a, b)`, `exit` gets `cross_below(a, b)`.
pub fn crosses(a: &[f64], b: &[f64], out: &mut Signals) {
    let n = out.enter.len().min(a.len()).min(b.len());
    let (enter, exit) = (&mut out.enter[..n], &mut out.exit[..n]);
    for t in 1..n {
        let (now, before) = ((a[t], b[t]), (a[t - 1], b[t - 1]));
        enter[t] = now.0 > now.1 && before.0 <= before.1;
        exit[t] = now.0 < now.1 && before.0 >= before.1;
    }
}

/// `a[t] > b[t] && a[t-1] <= b[t-1]`, false where any of the four is undefined (NaN).
pub fn cross_above(a: &[f64], b: &[f64], out: &mut [bool]) {
    for t in 1..out.len() {
        out[t] = a[t] > b[t] && a[t - 1] <= b[t - 1];
    }
}

/// `a[t] < b[t] && a[t-1] >= b[t-1]`, false where any of the four is undefined (NaN).
pub fn cross_below(a: &[f64], b: &[f64], out: &mut [bool]) {
    for t in 1..out.len() {
        out[t] = a[t] < b[t] && a[t - 1] >= b[t - 1];
    }
}

/// A trading rule's signals.
pub trait Strategy: Send + Sync {
    fn name(&self) -> &str;

    /// Writes the enter and exit flags of every bar into `out` (already reset to the bar
    /// count) for parameter set number `set`, whose values are `params`.
    fn signals(
        &self,
        set: usize,
        params: &ParamSet,
        indicators: &mut Indicators<'_>,
        out: &mut Signals,
    );
}

/// A built-in strategy: signals and a declaration in `xt_shared::strategy`.
pub trait Builtin: Strategy {
    fn def(&self) -> &'static StrategyDef;
}

/// Every built-in strategy, in the order of `xt_shared::strategy::CATALOG`.
pub fn catalog() -> &'static [&'static dyn Builtin] {
    &[
        &buy_and_hold::BuyAndHold,
        &sma_cross::SmaCross,
        &macd::Macd,
        &bollinger::Bollinger,
        &rsi::Rsi,
        &turtle::Turtle,
    ]
}

/// The benchmark strategy of every portfolio.
pub fn buy_and_hold() -> &'static dyn Strategy {
    &buy_and_hold::BuyAndHold
}

pub fn find(name: &str) -> Option<&'static dyn Builtin> {
    catalog().iter().copied().find(|s| s.name() == name)
}

/// A built-in strategy, shared like a written one.
struct Shared(&'static dyn Builtin);

impl Strategy for Shared {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn signals(&self, set: usize, p: &ParamSet, ind: &mut Indicators<'_>, out: &mut Signals) {
        self.0.signals(set, p, ind, out)
    }
}

/// A batch's strategy as the engine runs it.
pub fn runnable(chosen: &Chosen) -> Result<Arc<dyn Strategy>, SpecError> {
    Ok(match chosen {
        Chosen::Builtin(def) => {
            let builtin = find(def.name).ok_or_else(|| {
                SpecError::new(
                    "strategy",
                    format!("{:?} has no signals in this engine", def.name),
                )
            })?;
            Arc::new(Shared(builtin))
        }
        Chosen::Script { script, plans } => Arc::new(ScriptStrategy {
            script: script.clone(),
            plans: plans.clone(),
        }),
    })
}

/// Looks up (or compiles) the strategy and expands its parameters, or says which field
/// is wrong.
pub fn strategy_combos(
    strategy: &str,
    params: Option<&BTreeMap<String, Value>>,
    grid: Option<&BTreeMap<String, Vec<Value>>>,
) -> Result<(Arc<dyn Strategy>, Vec<ParamSet>), SpecError> {
    let (chosen, combos) = xt_shared::strategy::strategy_combos(strategy, params, grid)?;
    Ok((runnable(&chosen)?, combos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xt_shared::Bars;

    #[test]
    fn every_declared_strategy_has_signals_and_the_catalogs_agree() {
        let names: Vec<_> = catalog().iter().map(|s| s.name()).collect();
        let declared: Vec<_> = xt_shared::strategy::CATALOG
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, declared);
    }

    #[test]
    fn every_strategy_runs_on_its_defaults() {
        let mut bars = Bars::new("X");
        for i in 0..300 {
            let c = 10.0 + (i as f64 * 0.1).sin() * 3.0;
            bars.push(i, c, c + 0.01, c - 0.01, c, 1000.0);
        }
        let mut ind = Indicators::new(&bars);
        for s in catalog() {
            let set = &expand(s.def(), None, None).unwrap()[0];
            let mut sig = Signals::default();
            sig.reset(bars.len());
            s.signals(0, set, &mut ind, &mut sig);
            assert!(sig.enter.iter().any(|&e| e), "{} never enters", s.name());
            if s.name() != "buy_and_hold" {
                assert!(sig.exit.iter().any(|&e| e), "{} never exits", s.name());
            }
        }
    }
}
