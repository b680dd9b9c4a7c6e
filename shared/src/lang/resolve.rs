//! A checked strategy resolved for one parameter set: ranges and rules evaluated, windows
//! made integers, constants folded and equal operations shared, each with its lookback.

use std::collections::HashMap;

use super::check::Body;
use super::functions::{Arg, signature, usage};
use super::plan::{Column, Node, Op, Plan, Real, StateVar, binary, unary};
use super::syntax::{BinOp, Expr};
use super::{LangError, MAX_NODES, MAX_WINDOW, Span};
use crate::strategy::{ParamDef, ParamSet};

/// A value while resolving: folded to a constant, or a node of the plan.
#[derive(Debug, Clone, Copy)]
enum Val {
    Const(f64),
    Node(u32),
}

struct Resolver<'a> {
    body: &'a Body,
    values: Vec<f64>,
    nodes: Vec<Node>,
    lookbacks: Vec<usize>,
    index: HashMap<Node, u32>,
    lets: Vec<Option<Val>>,
}

pub fn resolve(body: &Body, defs: &[ParamDef], set: &ParamSet) -> Result<Plan, LangError> {
    let values: Vec<f64> = defs.iter().map(|d| set.get(&d.name)).collect();
    for (i, def) in defs.iter().enumerate() {
        if let Some((low, high)) = body.ranges[i]
            && !(low <= values[i] && values[i] <= high)
        {
            return Err(LangError::at(
                body.param_spans[i],
                format!(
                    "{} = {} is outside its range {low}..{high}",
                    def.name, values[i]
                ),
            ));
        }
    }
    let mut r = Resolver {
        body,
        values,
        nodes: Vec::new(),
        lookbacks: Vec::new(),
        index: HashMap::new(),
        lets: vec![None; body.let_exprs.len()],
    };
    for rule in &body.rules {
        if let Val::Const(v) = r.val(rule)?
            && v == 0.0
        {
            let names: Vec<String> = defs
                .iter()
                .zip(&r.values)
                .filter(|(d, _)| mentions(rule, &d.name))
                .map(|(d, v)| format!("{} = {v}", d.name))
                .collect();
            return Err(LangError::at(
                rule.span(),
                format!("this rule does not hold with {}", names.join(", ")),
            ));
        }
    }
    let entry = r.node(&body.entry)?;
    let exit = r.node(&body.exit)?;
    let qty = body.qty.as_ref().map(|q| r.node(q)).transpose()?;
    if r.nodes.len() > MAX_NODES {
        return Err(LangError::at(
            body.entry.span(),
            format!(
                "the strategy makes {} operations; at most {MAX_NODES}",
                r.nodes.len()
            ),
        ));
    }
    let lookback = [Some(entry), Some(exit), qty]
        .into_iter()
        .flatten()
        .map(|n| r.lookbacks[n as usize])
        .max()
        .unwrap_or(0);
    Ok(Plan {
        nodes: r.nodes,
        entry,
        exit,
        qty,
        lookback,
    })
}

fn mentions(e: &Expr, name: &str) -> bool {
    match e {
        Expr::Name(n, _) => n == name,
        Expr::Number(..) | Expr::Bool(..) => false,
        Expr::Neg(a, _) | Expr::Not(a, _) => mentions(a, name),
        Expr::Binary { lhs, rhs, .. } => mentions(lhs, name) || mentions(rhs, name),
        Expr::Call { args, .. } => args.iter().any(|a| mentions(a, name)),
    }
}

impl Resolver<'_> {
    fn push(&mut self, op: Op, args: Vec<u32>, lookback: usize) -> u32 {
        let stateful = matches!(op, Op::State(_) | Op::AtEntry)
            || args.iter().any(|&a| self.nodes[a as usize].stateful);
        let node = Node { op, args, stateful };
        if let Some(&i) = self.index.get(&node) {
            return i;
        }
        let i = self.nodes.len() as u32;
        self.index.insert(node.clone(), i);
        self.nodes.push(node);
        self.lookbacks.push(lookback);
        i
    }

    /// A value as a node: constants become constant nodes.
    fn node(&mut self, e: &Expr) -> Result<u32, LangError> {
        match self.val(e)? {
            Val::Node(n) => Ok(n),
            Val::Const(v) => {
                let op = if is_bool(self.body, e) {
                    Op::Bool(v != 0.0)
                } else {
                    Op::Number(Real(v))
                };
                Ok(self.push(op, Vec::new(), 0))
            }
        }
    }

    fn lookback(&self, v: Val) -> usize {
        match v {
            Val::Const(_) => 0,
            Val::Node(n) => self.lookbacks[n as usize],
        }
    }

    fn val(&mut self, e: &Expr) -> Result<Val, LangError> {
        Ok(match e {
            Expr::Number(v, _) => Val::Const(*v),
            Expr::Bool(b, _) => Val::Const(f64::from(u8::from(*b))),
            Expr::Name(name, _) => {
                if let Some(&i) = self.body.params.get(name) {
                    return Ok(Val::Const(self.values[i]));
                }
                if let Some(&i) = self.body.lets.get(name) {
                    if let Some(v) = self.lets[i] {
                        return Ok(v);
                    }
                    let v = self.val(&self.body.let_exprs[i])?;
                    self.lets[i] = Some(v);
                    return Ok(v);
                }
                let op = match name.as_str() {
                    "open" => Op::Column(Column::Open),
                    "high" => Op::Column(Column::High),
                    "low" => Op::Column(Column::Low),
                    "close" => Op::Column(Column::Close),
                    "volume" => Op::Column(Column::Volume),
                    "entry_price" => Op::State(StateVar::EntryPrice),
                    "bars_held" => Op::State(StateVar::BarsHeld),
                    _ => Op::State(StateVar::Cash),
                };
                Val::Node(self.push(op, Vec::new(), 0))
            }
            Expr::Neg(a, _) => self.elementwise(Op::Neg, &[a])?,
            Expr::Not(a, _) => self.elementwise(Op::Not, &[a])?,
            Expr::Binary { op, lhs, rhs, .. } => self.elementwise(Op::Binary(*op), &[lhs, rhs])?,
            Expr::Call {
                name, args, span, ..
            } => self.call(name, args, *span)?,
        })
    }

    /// An operation applied bar by bar: folded when every argument is constant.
    fn elementwise(&mut self, op: Op, args: &[&Expr]) -> Result<Val, LangError> {
        let vals: Vec<Val> = args.iter().map(|a| self.val(a)).collect::<Result<_, _>>()?;
        if vals.iter().all(|v| matches!(v, Val::Const(_))) {
            let c: Vec<f64> = vals
                .iter()
                .map(|v| if let Val::Const(x) = v { *x } else { 0.0 })
                .collect();
            return Ok(Val::Const(match op {
                Op::Binary(b) => binary(b, c[0], c[1]),
                Op::If => {
                    if c[0] != 0.0 {
                        c[1]
                    } else {
                        c[2]
                    }
                }
                _ => unary(&op, c[0], c.get(1).copied().unwrap_or(f64::NAN)),
            }));
        }
        let lookback = vals.iter().map(|v| self.lookback(*v)).max().unwrap_or(0);
        let ids = args
            .iter()
            .map(|a| self.node(a))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Val::Node(self.push(op, ids, lookback)))
    }

    /// A window, shift or fixed number: the argument's value for this parameter set.
    fn fixed(&mut self, e: &Expr, what: Arg, function: &str) -> Result<f64, LangError> {
        let Val::Const(v) = self.val(e)? else {
            return Err(LangError::at(
                e.span(),
                "expected a value fixed for the run",
            ));
        };
        let min = if what == Arg::Shift { 0.0 } else { 1.0 };
        if what != Arg::Fixed && !(v.fract() == 0.0 && v >= min && v <= MAX_WINDOW as f64) {
            let noun = if what == Arg::Shift {
                "shift"
            } else {
                "window"
            };
            return Err(LangError::at(
                e.span(),
                format!(
                    "the {noun} of `{}` must be an integer from {min} to {MAX_WINDOW}, got {v}",
                    usage(function)
                ),
            ));
        }
        if what == Arg::Fixed && !v.is_finite() {
            return Err(LangError::at(
                e.span(),
                format!(
                    "argument of `{}` must be a finite number, got {v}",
                    usage(function)
                ),
            ));
        }
        Ok(v)
    }

    fn call(&mut self, name: &str, args: &[Expr], span: Span) -> Result<Val, LangError> {
        let refs: Vec<&Expr> = args.iter().collect();
        let op = match name {
            "if" => return self.elementwise(Op::If, &refs),
            "abs" => return self.elementwise(Op::Abs, &refs),
            "sign" => return self.elementwise(Op::Sign, &refs),
            "log" => return self.elementwise(Op::Log, &refs),
            "pow" => return self.elementwise(Op::Pow, &refs),
            "min" => return self.elementwise(Op::Min, &refs),
            "max" => return self.elementwise(Op::Max, &refs),
            _ => name,
        };
        let sig = signature(op).unwrap_or(&[]);
        let mut inputs = Vec::new();
        let mut fixed = Vec::new();
        for (a, kind) in args.iter().zip(sig) {
            match kind {
                Arg::Window | Arg::Shift | Arg::Fixed => fixed.push(self.fixed(a, *kind, name)?),
                _ => inputs.push(a),
            }
        }
        let w = |i: usize| fixed[i] as usize;
        let (op, extra) = match name {
            "delay" => (Op::Delay(w(0)), w(0)),
            "delta" => (Op::Delta(w(0)), w(0)),
            "sum" => (Op::Sum(w(0)), w(0) - 1),
            "mean" => (Op::Mean(w(0)), w(0) - 1),
            "std" => (Op::Std(w(0)), w(0) - 1),
            "ts_min" => (Op::TsMin(w(0)), w(0) - 1),
            "ts_max" => (Op::TsMax(w(0)), w(0) - 1),
            "argmin" => (Op::ArgMin(w(0)), w(0) - 1),
            "argmax" => (Op::ArgMax(w(0)), w(0) - 1),
            "rank" => (Op::Rank(w(0)), w(0) - 1),
            "corr" => (Op::Corr(w(0)), w(0) - 1),
            "sma" | "bbands_middle" => (Op::Sma(w(0)), w(0) - 1),
            "ema" => (Op::Ema(w(0)), w(0) - 1),
            "rsi" => (Op::Rsi(w(0)), w(0)),
            "atr" => (Op::Atr(w(0)), w(0)),
            "macd" | "macd_signal" => {
                let (f, s, g) = (w(0), w(1), w(2));
                let lb = f.max(s) - 1 + g - 1;
                if name == "macd" {
                    (Op::Macd(f, s, g), lb)
                } else {
                    (Op::MacdSignal(f, s, g), lb)
                }
            }
            "bbands_upper" => (Op::BbUpper(w(0), Real(fixed[1])), w(0) - 1),
            "bbands_lower" => (Op::BbLower(w(0), Real(fixed[1])), w(0) - 1),
            "cross_above" => (Op::CrossAbove, 1),
            "cross_below" => (Op::CrossBelow, 1),
            "at_entry" => (Op::AtEntry, 0),
            "defined" => (Op::Binary(BinOp::Eq), 0),
            _ => return Err(LangError::at(span, format!("unknown function `{name}`"))),
        };
        let ids = inputs
            .iter()
            .map(|a| self.node(a))
            .collect::<Result<Vec<_>, _>>()?;
        let base = ids
            .iter()
            .map(|&i| self.lookbacks[i as usize])
            .max()
            .unwrap_or(0);
        if name == "defined" {
            // `x == x` is false exactly where `x` is missing.
            return Ok(Val::Node(self.push(op, vec![ids[0], ids[0]], base)));
        }
        Ok(Val::Node(self.push(op, ids, base + extra)))
    }
}

/// Whether an expression is a condition (its type was checked; this re-derives it).
fn is_bool(body: &Body, e: &Expr) -> bool {
    match e {
        Expr::Bool(..) | Expr::Not(..) => true,
        Expr::Number(..) | Expr::Neg(..) => false,
        Expr::Binary { op, .. } => op.is_comparison() || matches!(op, BinOp::And | BinOp::Or),
        Expr::Name(n, _) => body
            .lets
            .get(n)
            .is_some_and(|&i| is_bool(body, &body.let_exprs[i])),
        Expr::Call { name, args, .. } => match name.as_str() {
            "if" => is_bool(body, &args[1]),
            "cross_above" | "cross_below" | "defined" => true,
            _ => false,
        },
    }
}
