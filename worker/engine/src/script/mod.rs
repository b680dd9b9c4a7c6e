//! Strategies written in the strategy language: each parameter set's plan evaluated as
//! whole-series kernels, with every operation computed once per job however many sets
//! of the grid share it (the job's `Indicators` keeps them, keyed by operation and inputs).
//!
//! What reads the open position (an exit's stop, a quantity rule) cannot be a series
//! before the sleeve runs: those few operations are kept as a small expression over
//! already computed series and evaluated bar by bar, only while they can matter.

pub mod kernels;

use std::collections::HashMap;
use std::sync::Arc;

use xt_shared::Bars;
use xt_shared::lang::{BinOp, Column, Op, Plan, Script, StateVar, binary, unary};

use self::kernels as k;
use crate::indicators::{self as ind, Indicators};
use crate::strategy::{ParamSet, Signals, Strategy};

/// A computed operation: a series of numbers or conditions, or one value for every bar.
#[derive(Debug, Clone)]
pub enum Value {
    Num(Arc<[f64]>),
    Bool(Arc<[bool]>),
    Const(f64),
}

impl Value {
    #[inline]
    fn at(&self, t: usize) -> f64 {
        match self {
            Value::Num(v) => v[t],
            Value::Bool(v) => f64::from(u8::from(v[t])),
            Value::Const(c) => *c,
        }
    }

    /// The value as numbers, a constant spread over `n` bars.
    fn numbers(&self, n: usize) -> Arc<[f64]> {
        match self {
            Value::Num(v) => v.clone(),
            _ => (0..n).map(|t| self.at(t)).collect(),
        }
    }

    fn truth(&self, n: usize, out: &mut [bool]) {
        match self {
            Value::Bool(v) => out.copy_from_slice(&v[..n]),
            _ => (0..n).for_each(|t| out[t] = self.at(t) != 0.0),
        }
    }
}

/// One job's computed operations, shared by every parameter set: an operation with the
/// same inputs is looked up, not computed again.
#[derive(Default)]
pub struct Computed {
    index: HashMap<(Op, Vec<u32>), u32>,
    values: Vec<Value>,
}

/// A written strategy with its plan for each parameter set.
pub struct ScriptStrategy {
    pub script: Arc<Script>,
    pub plans: Arc<[Plan]>,
}

impl Strategy for ScriptStrategy {
    fn name(&self) -> &str {
        &self.script.name
    }

    fn signals(&self, set: usize, _: &ParamSet, ind: &mut Indicators<'_>, out: &mut Signals) {
        signals(&self.plans[set], ind, out);
    }
}

/// What a plan's stateful node is, bar by bar: a computed series, or arithmetic on others.
#[derive(Debug, Clone)]
enum Live {
    Value(Value),
    State(StateVar),
    AtEntry(Value),
    Apply(Op, Vec<u32>),
}

/// An expression of the open position, evaluated at one bar.
#[derive(Debug, Clone)]
pub struct LiveRule {
    nodes: Vec<Live>,
    root: u32,
}

/// What the position is when a live rule is read.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub entry_price: f64,
    pub bars_held: f64,
    /// The bar whose close signalled the entry.
    pub signal: usize,
    pub cash: f64,
}

impl LiveRule {
    pub fn value(&self, t: usize, held: &Held) -> f64 {
        self.eval(self.root, t, held)
    }

    fn eval(&self, node: u32, t: usize, held: &Held) -> f64 {
        match &self.nodes[node as usize] {
            Live::Value(v) => v.at(t),
            Live::State(StateVar::EntryPrice) => held.entry_price,
            Live::State(StateVar::BarsHeld) => held.bars_held,
            Live::State(StateVar::Cash) => held.cash,
            Live::AtEntry(v) => v.at(held.signal),
            Live::Apply(op, args) => {
                let a = self.eval(args[0], t, held);
                match op {
                    Op::Binary(b) => binary(*b, a, self.eval(args[1], t, held)),
                    Op::If => {
                        let pick = if a != 0.0 { args[1] } else { args[2] };
                        self.eval(pick, t, held)
                    }
                    Op::Pow | Op::Min | Op::Max => unary(op, a, self.eval(args[1], t, held)),
                    _ => unary(op, a, f64::NAN),
                }
            }
        }
    }
}

/// Evaluates `plan` on the job's bars into `out` (already reset to the bar count).
pub fn signals(plan: &Plan, ind: &mut Indicators<'_>, out: &mut Signals) {
    let bars = ind.bars();
    let n = bars.len();
    let computed = &mut ind.computed;
    // The global id of each plan node that is a whole series (none for stateful nodes).
    let mut ids: Vec<Option<u32>> = Vec::with_capacity(plan.nodes.len());
    for node in &plan.nodes {
        if node.stateful {
            ids.push(None);
            continue;
        }
        let args: Vec<u32> = node.args.iter().filter_map(|&a| ids[a as usize]).collect();
        let key = (node.op, args);
        let id = match computed.index.get(&key) {
            Some(&id) => id,
            None => {
                let inputs: Vec<&Value> = key
                    .1
                    .iter()
                    .map(|&a| &computed.values[a as usize])
                    .collect();
                let value = compute(&node.op, &inputs, bars, n);
                let id = computed.values.len() as u32;
                computed.values.push(value);
                computed.index.insert(key, id);
                id
            }
        };
        ids.push(Some(id));
    }
    let value = |node: u32| ids[node as usize].map(|id| &computed.values[id as usize]);
    if let Some(v) = value(plan.entry) {
        v.truth(n, &mut out.enter);
    }
    match value(plan.exit) {
        Some(v) => v.truth(n, &mut out.exit),
        None => out.exit_rule = Some(live(plan, plan.exit, &ids, computed)),
    }
    out.qty_rule = plan.qty.map(|q| live(plan, q, &ids, computed));
}

/// The live rule rooted at `root`: series where the plan had them, arithmetic elsewhere.
fn live(plan: &Plan, root: u32, ids: &[Option<u32>], computed: &Computed) -> LiveRule {
    let nodes = plan
        .nodes
        .iter()
        .zip(ids)
        .map(|(node, id)| match id {
            Some(id) => Live::Value(computed.values[*id as usize].clone()),
            None => match node.op {
                Op::State(s) => Live::State(s),
                Op::AtEntry => match ids[node.args[0] as usize] {
                    Some(id) => Live::AtEntry(computed.values[id as usize].clone()),
                    None => Live::Value(Value::Const(f64::NAN)),
                },
                op => Live::Apply(op, node.args.clone()),
            },
        })
        .collect();
    LiveRule { nodes, root }
}

fn column(bars: &Bars, c: Column) -> &[f64] {
    match c {
        Column::Open => &bars.open,
        Column::High => &bars.high,
        Column::Low => &bars.low,
        Column::Close => &bars.close,
        Column::Volume => &bars.volume,
    }
}

/// One operation on computed inputs.
fn compute(op: &Op, args: &[&Value], bars: &Bars, n: usize) -> Value {
    let num = |i: usize| args[i].numbers(n);
    let series = |v: Vec<f64>| Value::Num(v.into());
    match *op {
        Op::Column(c) => Value::Num(column(bars, c).into()),
        Op::Number(r) => Value::Const(r.0),
        Op::Bool(b) => Value::Const(f64::from(u8::from(b))),
        Op::Binary(b) => {
            let (x, y) = (args[0], args[1]);
            let comparison = b.is_comparison() || matches!(b, BinOp::And | BinOp::Or);
            if comparison {
                Value::Bool((0..n).map(|t| binary(b, x.at(t), y.at(t)) != 0.0).collect())
            } else {
                series((0..n).map(|t| binary(b, x.at(t), y.at(t))).collect())
            }
        }
        Op::Not => Value::Bool((0..n).map(|t| args[0].at(t) == 0.0).collect()),
        Op::If => {
            let (c, a, b) = (args[0], args[1], args[2]);
            let pick = |t: usize| if c.at(t) != 0.0 { a.at(t) } else { b.at(t) };
            if matches!(a, Value::Bool(_)) || matches!(b, Value::Bool(_)) {
                Value::Bool((0..n).map(|t| pick(t) != 0.0).collect())
            } else {
                series((0..n).map(pick).collect())
            }
        }
        Op::Neg | Op::Abs | Op::Sign | Op::Log => {
            series((0..n).map(|t| unary(op, args[0].at(t), f64::NAN)).collect())
        }
        Op::Pow | Op::Min | Op::Max => series(
            (0..n)
                .map(|t| unary(op, args[0].at(t), args[1].at(t)))
                .collect(),
        ),
        Op::Delay(k) => series(k::delay(&num(0), k)),
        Op::Delta(k) => {
            let x = num(0);
            let before = k::delay(&x, k);
            series(
                (0..n)
                    .map(|t| binary(BinOp::Sub, x[t], before[t]))
                    .collect(),
            )
        }
        Op::Sum(w) => series(k::by_runs(&num(0), |x| k::sum(x, w))),
        Op::Mean(w) | Op::Sma(w) => series(k::by_runs(&num(0), |x| ind::sma(x, w))),
        Op::Std(w) => series(k::by_runs(&num(0), |x| k::std(x, w))),
        Op::TsMin(w) => series(k::by_runs(&num(0), |x| ind::min(x, w))),
        Op::TsMax(w) => series(k::by_runs(&num(0), |x| ind::max(x, w))),
        Op::ArgMin(w) => series(k::by_runs(&num(0), |x| k::argmin(x, w))),
        Op::ArgMax(w) => series(k::by_runs(&num(0), |x| k::argmax(x, w))),
        Op::Rank(w) => series(k::by_runs(&num(0), |x| k::rank(x, w))),
        Op::Corr(w) => series(k::by_runs2(&num(0), &num(1), |x, y| k::corr(x, y, w))),
        Op::BbUpper(w, m) => series(k::by_runs(&num(0), |x| ind::bbands(x, w, m.0).0)),
        Op::BbLower(w, m) => series(k::by_runs(&num(0), |x| ind::bbands(x, w, m.0).2)),
        Op::Ema(w) => series(k::recursive(&[&num(0)], |x| ind::ema(x[0], w))),
        Op::Rsi(w) => series(k::recursive(&[&num(0)], |x| ind::rsi(x[0], w))),
        Op::Atr(w) => {
            let (h, l, c) = (num(0), num(1), num(2));
            series(k::recursive(&[&h, &l, &c], |x| {
                ind::atr(x[0], x[1], x[2], w)
            }))
        }
        Op::Macd(f, s, g) => series(k::recursive(&[&num(0)], |x| ind::macd(x[0], f, s, g).0)),
        Op::MacdSignal(f, s, g) => series(k::recursive(&[&num(0)], |x| ind::macd(x[0], f, s, g).1)),
        Op::CrossAbove => Value::Bool(k::cross_above(&num(0), &num(1)).into()),
        Op::CrossBelow => Value::Bool(k::cross_below(&num(0), &num(1)).into()),
        // Stateful operations never reach here: the plan marks them and `live` keeps them.
        Op::State(_) | Op::AtEntry => Value::Const(f64::NAN),
    }
}

#[cfg(test)]
mod tests;
