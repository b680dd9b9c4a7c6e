//! Strategies: what each built-in says after every bar's close (SEMANTICS section 7), its
//! parameters with their defaults and rules, and the catalog the batch spec names them from.
//!
//! A strategy turns one parameter set and the job's indicators into `Signals`: an enter and
//! an exit flag per bar, plus an optional risk rule (sizing and a stop tied to the fill
//! price). Everything about fills, costs and market rules lives in the exchange and the
//! sleeve, so a new strategy is one file: a `ParamDef` list, a `check` and a `signals`.

mod bollinger;
mod buy_and_hold;
mod macd;
mod rsi;
mod sma_cross;
mod turtle;

use std::collections::BTreeMap;

use serde_json::Value;

use super::indicators::{Indicators, Series};

/// Whether a parameter takes integers (periods) or any number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// An integer >= 1.
    Period,
    Number,
}

/// One parameter of a strategy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamDef {
    pub name: &'static str,
    pub kind: ParamKind,
    pub default: f64,
}

impl ParamDef {
    pub const fn period(name: &'static str, default: usize) -> Self {
        ParamDef {
            name,
            kind: ParamKind::Period,
            default: default as f64,
        }
    }
    pub const fn number(name: &'static str, default: f64) -> Self {
        ParamDef {
            name,
            kind: ParamKind::Number,
            default,
        }
    }
}

/// One parameter combination: values in the order of the strategy's `ParamDef`s, and the
/// canonical JSON that names it in every result table (keys sorted, no spaces, periods as
/// integers), e.g. `{"fast":12,"signal":9,"slow":26}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSet {
    defs: &'static [ParamDef],
    values: Vec<f64>,
    json: String,
}

impl ParamSet {
    pub fn new(defs: &'static [ParamDef], values: Vec<f64>) -> Self {
        let map: serde_json::Map<String, Value> = defs
            .iter()
            .zip(&values)
            .map(|(d, &v)| {
                let value = match d.kind {
                    ParamKind::Period => Value::from(v as i64),
                    ParamKind::Number => Value::from(v),
                };
                (d.name.to_string(), value)
            })
            .collect();
        // serde_json's map is a BTreeMap here (no `preserve_order`), so keys come out sorted.
        let json = Value::Object(map).to_string();
        ParamSet { defs, values, json }
    }

    pub fn json(&self) -> &str {
        &self.json
    }

    /// The value of a parameter the strategy declared; asking for another is a bug in the
    /// strategy, caught by the catalog test that runs every strategy on its defaults.
    pub fn get(&self, name: &str) -> f64 {
        match self.defs.iter().position(|d| d.name == name) {
            Some(i) => self.values[i],
            None => panic!("parameter {name} is not declared by this strategy"),
        }
    }

    pub fn period(&self, name: &str) -> usize {
        self.get(name) as usize
    }
}

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
}

impl Signals {
    /// Clears the flags for `n` bars, keeping the allocations for the next combination.
    pub fn reset(&mut self, n: usize) {
        self.enter.clear();
        self.enter.resize(n, false);
        self.exit.clear();
        self.exit.resize(n, false);
        self.risk = None;
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

/// A trading rule: its parameters, their rules, and its signals.
pub trait Strategy: Send + Sync {
    fn name(&self) -> &'static str;

    fn params(&self) -> &'static [ParamDef];

    /// The rules between parameters that `check` enforces, for people (`fast < slow`).
    fn rules(&self) -> &'static str {
        ""
    }

    /// Rules between parameters (`fast < slow`, `0 < lower < upper < 100`); the per-kind
    /// rules (periods are integers >= 1, numbers are finite) are checked before this.
    fn check(&self, _params: &ParamSet) -> Result<(), String> {
        Ok(())
    }

    /// Writes the enter and exit flags of every bar into `out` (already reset to the bar count).
    fn signals(&self, params: &ParamSet, indicators: &mut Indicators<'_>, out: &mut Signals);
}

/// Every built-in strategy, by name.
pub fn catalog() -> &'static [&'static dyn Strategy] {
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

pub fn find(name: &str) -> Option<&'static dyn Strategy> {
    catalog().iter().copied().find(|s| s.name() == name)
}

/// The most combinations one batch may sweep.
pub const MAX_COMBINATIONS: usize = 100_000;

/// A parameter problem, naming the field of the batch spec it came from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParamError {
    pub field: String,
    pub message: String,
}

fn param_error(field: impl Into<String>, message: impl Into<String>) -> ParamError {
    ParamError {
        field: field.into(),
        message: message.into(),
    }
}

/// Expands `params` (one set) or `grid` (a list per parameter) into every combination,
/// filling unnamed parameters with their defaults, and checks each one. The last
/// parameter varies fastest.
pub fn expand(
    strategy: &dyn Strategy,
    params: Option<&BTreeMap<String, Value>>,
    grid: Option<&BTreeMap<String, Vec<Value>>>,
) -> Result<Vec<ParamSet>, ParamError> {
    let defs = strategy.params();
    let known = || {
        if defs.is_empty() {
            format!("{} takes no parameters", strategy.name())
        } else {
            format!(
                "{} takes {}",
                strategy.name(),
                defs.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
            )
        }
    };
    let (field, given): (&str, BTreeMap<&str, Vec<&Value>>) = match (params, grid) {
        (Some(p), _) => (
            "params",
            p.iter().map(|(k, v)| (k.as_str(), vec![v])).collect(),
        ),
        (None, Some(g)) => (
            "grid",
            g.iter()
                .map(|(k, v)| (k.as_str(), v.iter().collect()))
                .collect(),
        ),
        (None, None) => ("params", BTreeMap::new()),
    };
    for name in given.keys() {
        if !defs.iter().any(|d| d.name == *name) {
            return Err(param_error(
                format!("{field}.{name}"),
                format!("unknown parameter; {}", known()),
            ));
        }
    }
    let mut axes: Vec<Vec<f64>> = Vec::with_capacity(defs.len());
    for def in defs {
        let path = format!("{field}.{}", def.name);
        let values = match given.get(def.name) {
            None => vec![def.default],
            Some(list) if list.is_empty() => {
                return Err(param_error(path, "the grid lists no values"));
            }
            Some(list) => list
                .iter()
                .map(|v| parse_value(def, v).map_err(|m| param_error(&path, m)))
                .collect::<Result<_, _>>()?,
        };
        axes.push(values);
    }
    let total = axes
        .iter()
        .try_fold(1usize, |acc, a| acc.checked_mul(a.len()))
        .unwrap_or(usize::MAX);
    if total > MAX_COMBINATIONS {
        return Err(param_error(
            field,
            format!("{total} combinations; at most {MAX_COMBINATIONS} per batch"),
        ));
    }
    let mut sets = Vec::with_capacity(total);
    let mut index = vec![0usize; axes.len()];
    for _ in 0..total {
        let values = index.iter().zip(&axes).map(|(&i, a)| a[i]).collect();
        let set = ParamSet::new(defs, values);
        strategy
            .check(&set)
            .map_err(|m| param_error(field, format!("{}: {m}", set.json())))?;
        sets.push(set);
        for axis in (0..axes.len()).rev() {
            index[axis] += 1;
            if index[axis] < axes[axis].len() {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(sets)
}

/// The largest period accepted; far beyond any daily history.
pub const MAX_PERIOD: f64 = 100_000.0;

fn parse_value(def: &ParamDef, value: &Value) -> Result<f64, String> {
    let Some(v) = value.as_f64() else {
        return Err(format!("must be a number, got {value}"));
    };
    match def.kind {
        ParamKind::Period => {
            if value.as_u64().is_none() || !(1.0..=MAX_PERIOD).contains(&v) {
                return Err(format!(
                    "a period must be an integer in 1..={MAX_PERIOD}, got {value}"
                ));
            }
        }
        ParamKind::Number => {
            if !v.is_finite() {
                return Err(format!("must be a finite number, got {value}"));
            }
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use xt_shared::Bars;

    fn map<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> BTreeMap<String, T> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn canonical_params_sort_keys_and_keep_integers() {
        let s = find("macd").unwrap();
        let sets = expand(s, None, None).unwrap();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].json(), r#"{"fast":12,"signal":9,"slow":26}"#);
        let b = expand(find("bollinger").unwrap(), None, None).unwrap();
        assert_eq!(b[0].json(), r#"{"k":2.0,"period":20}"#);
        assert_eq!(
            expand(find("buy_and_hold").unwrap(), None, None).unwrap()[0].json(),
            "{}"
        );
    }

    #[test]
    fn grid_is_the_cartesian_product_last_fastest() {
        let s = find("sma_cross").unwrap();
        let grid = map(json!({"fast": [5, 10], "slow": [20, 30, 40]}));
        let sets = expand(s, None, Some(&grid)).unwrap();
        let names: Vec<_> = sets.iter().map(|p| p.json().to_string()).collect();
        assert_eq!(
            names[..2],
            [r#"{"fast":5,"slow":20}"#, r#"{"fast":5,"slow":30}"#]
        );
        assert_eq!(sets.len(), 6);
    }

    #[test]
    fn bad_parameters_name_the_field_and_rule() {
        let s = find("sma_cross").unwrap();
        let err = |v| expand(s, Some(&map(v)), None).unwrap_err().to_string();
        assert_eq!(
            err(json!({"fast": 30, "slow": 10})),
            r#"params: {"fast":30,"slow":10}: fast must be < slow"#
        );
        assert!(
            err(json!({"fast": 2.5})).starts_with("params.fast: a period must be an integer"),
            "{}",
            err(json!({"fast": 2.5}))
        );
        assert!(err(json!({"fast": 0})).contains("integer in 1..="));
        assert!(
            err(json!({"colour": 1}))
                .contains("params.colour: unknown parameter; sma_cross takes fast, slow")
        );
        assert!(err(json!({"fast": "ten"})).contains("must be a number"));
        let e = expand(find("rsi").unwrap(), Some(&map(json!({"lower": 80}))), None).unwrap_err();
        assert!(e.message.contains("0 < lower < upper < 100"), "{e}");
        let e = expand(
            find("bollinger").unwrap(),
            Some(&map(json!({"k": -1}))),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("k must be > 0"), "{e}");
        let e = expand(
            find("turtle").unwrap(),
            Some(&map(json!({"risk": 1.5}))),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("0 < risk <= 1"), "{e}");
        let e = expand(
            find("turtle").unwrap(),
            Some(&map(json!({"stop_atr": 0}))),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("stop_atr must be > 0"), "{e}");
        let e = expand(s, None, Some(&map(json!({"fast": []})))).unwrap_err();
        assert_eq!(e.field, "grid.fast");
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
            let set = &expand(*s, None, None).unwrap()[0];
            let mut sig = Signals::default();
            sig.reset(bars.len());
            s.signals(set, &mut ind, &mut sig);
            assert!(sig.enter.iter().any(|&e| e), "{} never enters", s.name());
            if s.name() != "buy_and_hold" {
                assert!(sig.exit.iter().any(|&e| e), "{} never exits", s.name());
            }
        }
    }
}
