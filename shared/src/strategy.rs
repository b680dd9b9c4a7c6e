//! Strategies as a batch names them: each built-in's name, parameters with their defaults
//! and kinds, and the rules between them (SEMANTICS section 7), and the expansion of a
//! spec's `params` or `grid` into checked parameter sets. What a strategy does with them
//! (its signals) is the engine's; the coordinator and the API need only this.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::lang::{Plan, Script};
use crate::spec::SpecError;

/// Whether a parameter takes integers (periods) or any number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// An integer >= 1.
    Period,
    /// Any integer (a strategy language's `int`).
    Integer,
    Number,
}

/// One parameter of a strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDef {
    pub name: Cow<'static, str>,
    pub kind: ParamKind,
    pub default: f64,
}

impl ParamDef {
    pub const fn period(name: &'static str, default: usize) -> Self {
        ParamDef {
            name: Cow::Borrowed(name),
            kind: ParamKind::Period,
            default: default as f64,
        }
    }
    pub const fn number(name: &'static str, default: f64) -> Self {
        ParamDef {
            name: Cow::Borrowed(name),
            kind: ParamKind::Number,
            default,
        }
    }
    /// A written strategy's `int` parameter.
    pub fn integer(name: String, default: f64) -> Self {
        ParamDef {
            name: Cow::Owned(name),
            kind: ParamKind::Integer,
            default,
        }
    }
    /// A written strategy's `float` parameter.
    pub fn float(name: String, default: f64) -> Self {
        ParamDef {
            name: Cow::Owned(name),
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
    defs: Arc<[ParamDef]>,
    values: Vec<f64>,
    json: String,
}

impl ParamSet {
    pub fn new(defs: Arc<[ParamDef]>, values: Vec<f64>) -> Self {
        let map: serde_json::Map<String, Value> = defs
            .iter()
            .zip(&values)
            .map(|(d, &v)| {
                let value = match d.kind {
                    ParamKind::Period | ParamKind::Integer => Value::from(v as i64),
                    ParamKind::Number => Value::from(v),
                };
                (d.name.to_string(), value)
            })
            .collect();
        // serde_json's map is a BTreeMap here (no `preserve_order`), so keys come out sorted.
        let json = Value::Object(map).to_string();
        ParamSet { defs, values, json }
    }

    /// The set of a strategy without parameters.
    pub fn empty() -> Self {
        ParamSet::new(Arc::from(Vec::new()), Vec::new())
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

    /// Each parameter's name and value, in the strategy's order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        self.defs
            .iter()
            .map(|d| d.name.as_ref())
            .zip(self.values.iter().copied())
    }

    pub fn period(&self, name: &str) -> usize {
        self.get(name) as usize
    }
}

/// A strategy's declaration: everything about it but its signals.
#[derive(Debug, Clone, Copy)]
pub struct StrategyDef {
    pub name: &'static str,
    pub params: &'static [ParamDef],
    /// The rules between parameters that `check` enforces, for people (`fast < slow`).
    pub rules: &'static str,
    /// Rules between parameters (`fast < slow`, `0 < lower < upper < 100`); the per-kind
    /// rules (periods are integers >= 1, numbers are finite) are checked before this.
    pub check: fn(&ParamSet) -> Result<(), String>,
}

fn no_rules(_: &ParamSet) -> Result<(), String> {
    Ok(())
}

fn fast_below_slow(p: &ParamSet) -> Result<(), String> {
    if p.get("fast") >= p.get("slow") {
        return Err("fast must be < slow".into());
    }
    Ok(())
}

/// Enter on every bar, never exit: the benchmark of every portfolio.
pub const BUY_AND_HOLD: StrategyDef = StrategyDef {
    name: "buy_and_hold",
    params: &[],
    rules: "",
    check: no_rules,
};

pub const SMA_CROSS: StrategyDef = StrategyDef {
    name: "sma_cross",
    params: &[ParamDef::period("fast", 10), ParamDef::period("slow", 30)],
    rules: "fast < slow",
    check: fast_below_slow,
};

pub const MACD: StrategyDef = StrategyDef {
    name: "macd",
    params: &[
        ParamDef::period("fast", 12),
        ParamDef::period("slow", 26),
        ParamDef::period("signal", 9),
    ],
    rules: "fast < slow",
    check: fast_below_slow,
};

pub const BOLLINGER: StrategyDef = StrategyDef {
    name: "bollinger",
    params: &[ParamDef::period("period", 20), ParamDef::number("k", 2.0)],
    rules: "k > 0",
    check: |p| {
        if p.get("k") <= 0.0 {
            return Err("k must be > 0".into());
        }
        Ok(())
    },
};

pub const RSI: StrategyDef = StrategyDef {
    name: "rsi",
    params: &[
        ParamDef::period("period", 14),
        ParamDef::number("lower", 30.0),
        ParamDef::number("upper", 70.0),
    ],
    rules: "0 < lower < upper < 100",
    check: |p| {
        let (lower, upper) = (p.get("lower"), p.get("upper"));
        if !(0.0 < lower && lower < upper && upper < 100.0) {
            return Err(format!(
                "0 < lower < upper < 100 must hold, got lower {lower}, upper {upper}"
            ));
        }
        Ok(())
    },
};

pub const TURTLE: StrategyDef = StrategyDef {
    name: "turtle",
    params: &[
        ParamDef::period("entry", 20),
        ParamDef::period("exit", 10),
        ParamDef::period("atr", 20),
        ParamDef::number("risk", 0.01),
        ParamDef::number("stop_atr", 2.0),
    ],
    rules: "0 < risk <= 1; stop_atr > 0",
    check: |p| {
        let risk = p.get("risk");
        if !(0.0 < risk && risk <= 1.0) {
            return Err(format!("0 < risk <= 1 must hold, got risk {risk}"));
        }
        if p.get("stop_atr") <= 0.0 {
            return Err("stop_atr must be > 0".into());
        }
        Ok(())
    },
};

/// Every built-in strategy, in the order the catalog lists them.
pub const CATALOG: [&StrategyDef; 6] =
    [&BUY_AND_HOLD, &SMA_CROSS, &MACD, &BOLLINGER, &RSI, &TURTLE];

pub fn find(name: &str) -> Option<&'static StrategyDef> {
    CATALOG.iter().copied().find(|s| s.name == name)
}

/// A batch's strategy: a built-in, or one written in the strategy language with its
/// plan for each parameter set (in the order of the sets).
#[derive(Debug, Clone)]
pub enum Chosen {
    Builtin(&'static StrategyDef),
    Script {
        script: Arc<Script>,
        plans: Arc<[Plan]>,
    },
}

/// Looks up (or compiles) the strategy and expands its parameters, or says which field is
/// wrong. `strategy` is a built-in's name or a written strategy's source.
pub fn strategy_combos(
    strategy: &str,
    params: Option<&BTreeMap<String, Value>>,
    grid: Option<&BTreeMap<String, Vec<Value>>>,
) -> Result<(Chosen, Vec<ParamSet>), SpecError> {
    if crate::lang::is_source(strategy) {
        let script =
            Script::compile(strategy).map_err(|e| SpecError::new("strategy", e.to_string()))?;
        let (script, combos, plans) = script_combos(Arc::new(script), params, grid)?;
        return Ok((Chosen::Script { script, plans }, combos));
    }
    let s = find(strategy).ok_or_else(|| {
        let names: Vec<_> = CATALOG.iter().map(|s| s.name).collect();
        SpecError::new(
            "strategy",
            format!(
                "unknown strategy {strategy:?}; built-ins are {} (or give a strategy's source)",
                names.join(", ")
            ),
        )
    })?;
    let combos = expand(s, params, grid).map_err(|e| SpecError::new(e.field, e.message))?;
    Ok((Chosen::Builtin(s), combos))
}

/// How results name a batch's strategy: a built-in's name, or a written strategy's
/// declared name and the hash of its source (the exact version that ran).
pub fn provenance(strategy: &str) -> (String, Option<String>) {
    if !crate::lang::is_source(strategy) {
        return (strategy.to_string(), None);
    }
    let name = Script::compile(strategy).map_or_else(|_| "(invalid)".into(), |s| s.name);
    (name, Some(crate::lang::source_hash(strategy)))
}

/// A written strategy, its parameter sets and each set's plan.
pub type Resolved = (Arc<Script>, Vec<ParamSet>, Arc<[Plan]>);

/// A compiled script's parameter sets, each checked against its ranges and rules and
/// resolved into its plan.
pub fn script_combos(
    script: Arc<Script>,
    params: Option<&BTreeMap<String, Value>>,
    grid: Option<&BTreeMap<String, Vec<Value>>>,
) -> Result<Resolved, SpecError> {
    let combos = expand_with(
        &script.name,
        script.params().clone(),
        &|_| Ok(()),
        params,
        grid,
    )
    .map_err(|e| SpecError::new(e.field, e.message))?;
    let field = if params.is_none() && grid.is_some() {
        "grid"
    } else {
        "params"
    };
    let plans = combos
        .iter()
        .map(|set| script.resolve(set).map_err(|m| SpecError::new(field, m)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((script, combos, plans.into()))
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
    strategy: &StrategyDef,
    params: Option<&BTreeMap<String, Value>>,
    grid: Option<&BTreeMap<String, Vec<Value>>>,
) -> Result<Vec<ParamSet>, ParamError> {
    expand_with(
        strategy.name,
        strategy.params.into(),
        &strategy.check,
        params,
        grid,
    )
}

/// `expand` for any strategy: its name (for messages), parameters and rules.
pub fn expand_with(
    name: &str,
    defs: Arc<[ParamDef]>,
    check: &dyn Fn(&ParamSet) -> Result<(), String>,
    params: Option<&BTreeMap<String, Value>>,
    grid: Option<&BTreeMap<String, Vec<Value>>>,
) -> Result<Vec<ParamSet>, ParamError> {
    let known = || {
        if defs.is_empty() {
            format!("{name} takes no parameters")
        } else {
            format!(
                "{name} takes {}",
                defs.iter()
                    .map(|d| d.name.as_ref())
                    .collect::<Vec<_>>()
                    .join(", ")
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
    for def in defs.iter() {
        let path = format!("{field}.{}", def.name);
        let values = match given.get(def.name.as_ref()) {
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
        let set = ParamSet::new(defs.clone(), values);
        check(&set).map_err(|m| param_error(field, format!("{}: {m}", set.json())))?;
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
        ParamKind::Integer => {
            if v.fract() != 0.0 || v.abs() > 1e15 {
                return Err(format!("must be an integer, got {value}"));
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
}
