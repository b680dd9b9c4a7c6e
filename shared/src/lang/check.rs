//! Checking a parsed strategy (names, types, where position state may be read, unused
//! parameters) once, and resolving it for each parameter set: rules evaluated, windows
//! made integers, constants folded and equal operations shared.

use std::collections::{HashMap, HashSet};

use super::plan::{Column, Node, Op, Plan, Real, StateVar, binary, unary};
use super::syntax::{BinOp, Expr, Kind, Stmt};
use super::{LangError, MAX_NODES, MAX_WINDOW, Span, nearest};
use crate::strategy::{ParamDef, ParamSet};

/// How a function reads each argument.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Arg {
    /// A number or a numeric series.
    Num,
    /// A window: an integer >= 1, fixed for the run.
    Window,
    /// A shift: an integer >= 0, fixed for the run.
    Shift,
    /// A number fixed for the run.
    Fixed,
    /// A condition.
    Cond,
    /// Any value; `if`'s branches, which must agree.
    Any,
}

/// Every function: its name, how it reads its arguments, and their names for messages.
pub const FUNCTIONS: [(&str, &str); 31] = [
    ("if", "if(cond, a, b)"),
    ("abs", "abs(x)"),
    ("sign", "sign(x)"),
    ("log", "log(x)"),
    ("pow", "pow(x, y)"),
    ("min", "min(x, y)"),
    ("max", "max(x, y)"),
    ("delay", "delay(x, k)"),
    ("delta", "delta(x, k)"),
    ("sum", "sum(x, n)"),
    ("mean", "mean(x, n)"),
    ("std", "std(x, n)"),
    ("ts_min", "ts_min(x, n)"),
    ("ts_max", "ts_max(x, n)"),
    ("argmin", "argmin(x, n)"),
    ("argmax", "argmax(x, n)"),
    ("rank", "rank(x, n)"),
    ("corr", "corr(x, y, n)"),
    ("sma", "sma(x, n)"),
    ("ema", "ema(x, n)"),
    ("rsi", "rsi(x, n)"),
    ("atr", "atr(high, low, close, n)"),
    ("macd", "macd(x, fast, slow, signal)"),
    ("macd_signal", "macd_signal(x, fast, slow, signal)"),
    ("bbands_upper", "bbands_upper(x, n, k)"),
    ("bbands_middle", "bbands_middle(x, n)"),
    ("bbands_lower", "bbands_lower(x, n, k)"),
    ("cross_above", "cross_above(a, b)"),
    ("cross_below", "cross_below(a, b)"),
    ("at_entry", "at_entry(x)"),
    ("defined", "defined(x)"),
];

fn signature(name: &str) -> Option<&'static [Arg]> {
    use Arg::*;
    Some(match name {
        "if" => &[Cond, Any, Any],
        "abs" | "sign" | "log" | "at_entry" | "defined" => &[Num],
        "pow" | "min" | "max" | "cross_above" | "cross_below" => &[Num, Num],
        "delay" | "delta" => &[Num, Shift],
        "sum" | "mean" | "std" | "ts_min" | "ts_max" | "argmin" | "argmax" | "rank" | "sma"
        | "ema" | "rsi" | "bbands_middle" => &[Num, Window],
        "corr" => &[Num, Num, Window],
        "atr" => &[Num, Num, Num, Window],
        "macd" | "macd_signal" => &[Num, Window, Window, Window],
        "bbands_upper" | "bbands_lower" => &[Num, Window, Fixed],
        _ => return None,
    })
}

/// The names an expression may read besides parameters and `let`s.
pub const NAMES: [&str; 8] = [
    "open",
    "high",
    "low",
    "close",
    "volume",
    "entry_price",
    "bars_held",
    "cash",
];

const RESERVED: [&str; 6] = ["true", "false", "and", "or", "not", "in"];

/// What an expression is: a condition or a number, the same every bar or a series, and
/// whether it reads the open position or the cash being sized.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Ty {
    boolean: bool,
    series: bool,
    position: bool,
    cash: bool,
}

impl Ty {
    fn join(self, other: Ty) -> Ty {
        Ty {
            boolean: self.boolean,
            series: self.series || other.series,
            position: self.position || other.position,
            cash: self.cash || other.cash,
        }
    }

    fn describe(self) -> &'static str {
        match (self.boolean, self.series) {
            (true, true) => "a condition",
            (true, false) => "a fixed condition",
            (false, true) => "a series",
            (false, false) => "a number",
        }
    }
}

/// Which statement an expression belongs to, for what it may read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    Rule,
    Let,
    Entry,
    Exit,
    Qty,
}

/// A checked strategy's expressions.
#[derive(Debug)]
pub struct Body {
    params: HashMap<String, usize>,
    kinds: Vec<Kind>,
    pub(super) ranges: Vec<Option<(f64, f64)>>,
    param_spans: Vec<Span>,
    lets: HashMap<String, usize>,
    let_exprs: Vec<Expr>,
    pub(super) rules: Vec<Expr>,
    entry: Expr,
    exit: Expr,
    qty: Option<Expr>,
}

struct Checker {
    body: Body,
    let_types: Vec<Ty>,
    /// Names each `let` reads, and those entry, exit and qty read: what "used" follows.
    let_reads: Vec<HashSet<String>>,
    reads: HashSet<String>,
}

pub fn check(stmts: &[Stmt], len: usize) -> Result<(String, Vec<ParamDef>, Body), LangError> {
    let end = Span::new(len, len);
    let name = match stmts.first() {
        Some(Stmt::Strategy { name, .. }) => name.clone(),
        Some(s) => {
            return Err(LangError::at(
                stmt_span(s),
                "a strategy starts with `strategy NAME`",
            ));
        }
        None => {
            return Err(LangError::at(
                end,
                "the source is empty; a strategy starts with `strategy NAME`",
            ));
        }
    };
    let mut c = Checker {
        body: Body {
            params: HashMap::new(),
            kinds: Vec::new(),
            ranges: Vec::new(),
            param_spans: Vec::new(),
            lets: HashMap::new(),
            let_exprs: Vec::new(),
            rules: Vec::new(),
            entry: Expr::Bool(false, end),
            exit: Expr::Bool(false, end),
            qty: None,
        },
        let_types: Vec::new(),
        let_reads: Vec::new(),
        reads: HashSet::new(),
    };
    let mut defs = Vec::new();
    let (mut entry, mut exit) = (None, None);
    for stmt in &stmts[1..] {
        match stmt {
            Stmt::Strategy { span, .. } => {
                return Err(LangError::at(*span, "a source holds one strategy"));
            }
            Stmt::Param {
                name,
                span,
                kind,
                default,
                default_span,
                range,
            } => {
                c.fresh(name, *span)?;
                let int = |v: f64| v.fract() == 0.0 && v.abs() < 1e15;
                if *kind == Kind::Int && !int(*default) {
                    return Err(LangError::at(
                        *default_span,
                        format!("an int parameter's default must be an integer, got {default}"),
                    ));
                }
                if let Some((low, high, rspan)) = range {
                    if *kind == Kind::Int && !(int(*low) && int(*high)) {
                        return Err(LangError::at(
                            *rspan,
                            "an int parameter's range has integer ends",
                        ));
                    }
                    if !(low <= default && default <= high) {
                        return Err(LangError::at(
                            *default_span,
                            format!("the default {default} is outside the range {low}..{high}"),
                        ));
                    }
                }
                c.body.params.insert(name.clone(), defs.len());
                c.body.kinds.push(*kind);
                c.body.ranges.push(range.map(|(l, h, _)| (l, h)));
                c.body.param_spans.push(*span);
                defs.push(match kind {
                    Kind::Int => ParamDef::integer(name.clone(), *default),
                    Kind::Float => ParamDef::float(name.clone(), *default),
                });
            }
            Stmt::Rule(e) => {
                let (ty, _) = c.expr(e, Place::Rule)?;
                if !ty.boolean || ty.series {
                    return Err(LangError::at(
                        e.span(),
                        format!("a rule is a condition on parameters, got {}", ty.describe()),
                    ));
                }
                c.body.rules.push(e.clone());
            }
            Stmt::Let { name, span, expr } => {
                c.fresh(name, *span)?;
                let (ty, reads) = c.expr(expr, Place::Let)?;
                c.body.lets.insert(name.clone(), c.body.let_exprs.len());
                c.body.let_exprs.push(expr.clone());
                c.let_types.push(ty);
                c.let_reads.push(reads);
            }
            Stmt::Entry(e, span) => entry = Some(c.decision(e, *span, Place::Entry, &mut entry)?),
            Stmt::Exit(e, span) => exit = Some(c.decision(e, *span, Place::Exit, &mut exit)?),
            Stmt::Qty(e, span) => {
                if c.body.qty.is_some() {
                    return Err(LangError::at(*span, "`qty` is given twice"));
                }
                let (ty, reads) = c.expr(e, Place::Qty)?;
                if ty.boolean {
                    return Err(LangError::at(
                        e.span(),
                        format!("`qty` is a number of shares, got {}", ty.describe()),
                    ));
                }
                c.follow(reads);
                c.body.qty = Some(e.clone());
            }
        }
    }
    c.body.entry =
        entry.ok_or_else(|| LangError::at(end, "the strategy has no `entry when CONDITION`"))?;
    c.body.exit = exit.ok_or_else(|| LangError::at(end, "the strategy has no `exit when CONDITION` (write `exit when false` to hold to the end)"))?;
    for (i, def) in defs.iter().enumerate() {
        if !c.reads.contains(def.name.as_ref()) {
            return Err(LangError::at(
                c.body.param_spans[i],
                format!(
                    "parameter `{}` is declared but no entry, exit or qty uses it",
                    def.name
                ),
            ));
        }
    }
    Ok((name, defs, c.body))
}

fn stmt_span(s: &Stmt) -> Span {
    match s {
        Stmt::Strategy { span, .. } | Stmt::Param { span, .. } | Stmt::Let { span, .. } => *span,
        Stmt::Rule(e) => e.span(),
        Stmt::Entry(_, s) | Stmt::Exit(_, s) | Stmt::Qty(_, s) => *s,
    }
}

impl Checker {
    fn fresh(&self, name: &str, span: Span) -> Result<(), LangError> {
        if NAMES.contains(&name) || RESERVED.contains(&name) {
            return Err(LangError::at(
                span,
                format!("`{name}` is a name of the language; choose another"),
            ));
        }
        if self.body.params.contains_key(name) || self.body.lets.contains_key(name) {
            return Err(LangError::at(span, format!("`{name}` is already declared")));
        }
        Ok(())
    }

    fn decision(
        &mut self,
        e: &Expr,
        span: Span,
        place: Place,
        seen: &mut Option<Expr>,
    ) -> Result<Expr, LangError> {
        let word = if place == Place::Entry {
            "entry"
        } else {
            "exit"
        };
        if seen.is_some() {
            return Err(LangError::at(span, format!("`{word} when` is given twice")));
        }
        let (ty, reads) = self.expr(e, place)?;
        if !ty.boolean {
            return Err(LangError::at(
                e.span(),
                format!(
                    "`{word} when` takes a condition, got {}; compare it (`>`, `cross_above`...)",
                    ty.describe()
                ),
            ));
        }
        self.follow(reads);
        Ok(e.clone())
    }

    /// Marks what `reads` names as used, through the `let`s it names.
    fn follow(&mut self, reads: HashSet<String>) {
        let mut todo: Vec<String> = reads.into_iter().collect();
        while let Some(name) = todo.pop() {
            if let Some(&i) = self.body.lets.get(&name) {
                todo.extend(self.let_reads[i].iter().cloned());
            }
            self.reads.insert(name);
        }
    }

    fn expr(&self, e: &Expr, place: Place) -> Result<(Ty, HashSet<String>), LangError> {
        let mut reads = HashSet::new();
        let ty = self.ty(e, place, false, &mut reads)?;
        Ok((ty, reads))
    }

    fn ty(
        &self,
        e: &Expr,
        place: Place,
        at_entry: bool,
        reads: &mut HashSet<String>,
    ) -> Result<Ty, LangError> {
        let num = |ty: Ty, what: &Expr| -> Result<Ty, LangError> {
            if ty.boolean {
                return Err(LangError::at(
                    what.span(),
                    format!("expected a number, got {}", ty.describe()),
                ));
            }
            Ok(ty)
        };
        Ok(match e {
            Expr::Number(..) => Ty::default(),
            Expr::Bool(..) => Ty {
                boolean: true,
                ..Ty::default()
            },
            Expr::Name(name, span) => self.name(name, *span, place, at_entry, reads)?,
            Expr::Neg(a, _) => num(self.ty(a, place, at_entry, reads)?, a)?,
            Expr::Not(a, _) => {
                let ty = self.ty(a, place, at_entry, reads)?;
                if !ty.boolean {
                    return Err(LangError::at(
                        a.span(),
                        format!("`not` takes a condition, got {}", ty.describe()),
                    ));
                }
                ty
            }
            Expr::Binary { op, lhs, rhs, .. } => {
                let (a, b) = (
                    self.ty(lhs, place, at_entry, reads)?,
                    self.ty(rhs, place, at_entry, reads)?,
                );
                let logic = matches!(op, BinOp::And | BinOp::Or);
                for (ty, side) in [(a, lhs), (b, rhs)] {
                    if ty.boolean != logic {
                        let want = if logic { "a condition" } else { "a number" };
                        return Err(LangError::at(
                            side.span(),
                            format!(
                                "`{}` takes {want} on each side, got {}",
                                op.symbol(),
                                ty.describe()
                            ),
                        ));
                    }
                }
                let mut ty = a.join(b);
                ty.boolean = logic || op.is_comparison();
                ty
            }
            Expr::Call {
                name,
                name_span,
                args,
                span,
            } => self.call(name, *name_span, args, *span, place, at_entry, reads)?,
        })
    }

    fn name(
        &self,
        name: &str,
        span: Span,
        place: Place,
        at_entry: bool,
        reads: &mut HashSet<String>,
    ) -> Result<Ty, LangError> {
        reads.insert(name.to_string());
        let series = Ty {
            series: true,
            ..Ty::default()
        };
        if let Some(&i) = self.body.params.get(name) {
            let _ = i;
            return Ok(Ty::default());
        }
        if let Some(&i) = self.body.lets.get(name) {
            let ty = self.let_types[i];
            self.allowed(ty, span, place, at_entry, &format!("`{name}`"))?;
            return Ok(ty);
        }
        let ty = match name {
            "open" | "high" | "low" | "close" | "volume" => series,
            "entry_price" | "bars_held" => Ty {
                position: true,
                ..series
            },
            "cash" => Ty {
                cash: true,
                ..series
            },
            _ => {
                let known = NAMES
                    .iter()
                    .copied()
                    .chain(self.body.params.keys().map(String::as_str))
                    .chain(self.body.lets.keys().map(String::as_str));
                let hint = if signature(name).is_some() {
                    format!("; `{name}` is a function: call it as `{}`", usage(name))
                } else {
                    nearest(name, known)
                        .map(|n| format!("; did you mean `{n}`?"))
                        .unwrap_or_default()
                };
                return Err(LangError::at(span, format!("unknown name `{name}`{hint}")));
            }
        };
        self.allowed(ty, span, place, at_entry, &format!("`{name}`"))?;
        Ok(ty)
    }

    /// Position state only in `exit when` (outside `at_entry`), cash only in `qty`, and
    /// nothing but parameters in rules.
    fn allowed(
        &self,
        ty: Ty,
        span: Span,
        place: Place,
        at_entry: bool,
        what: &str,
    ) -> Result<(), LangError> {
        if place == Place::Rule && ty.series {
            return Err(LangError::at(
                span,
                format!("a rule compares parameters only; {what} is a series"),
            ));
        }
        if ty.position && (at_entry || !matches!(place, Place::Exit | Place::Let)) {
            let why = if at_entry {
                "inside `at_entry`"
            } else {
                "here"
            };
            return Err(LangError::at(
                span,
                format!(
                    "{what} reads the open position, which only `exit when` may do (not {why})"
                ),
            ));
        }
        if ty.cash && !matches!(place, Place::Qty | Place::Let) {
            return Err(LangError::at(
                span,
                format!("{what} reads the cash being sized, which only `qty` may do"),
            ));
        }
        if ty.position && ty.cash {
            return Err(LangError::at(
                span,
                format!("{what} reads both the position and the cash; no statement may"),
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        name: &str,
        name_span: Span,
        args: &[Expr],
        span: Span,
        place: Place,
        at_entry: bool,
        reads: &mut HashSet<String>,
    ) -> Result<Ty, LangError> {
        let Some(sig) = signature(name) else {
            let hint = if NAMES.contains(&name)
                || self.body.params.contains_key(name)
                || self.body.lets.contains_key(name)
            {
                format!("; `{name}` is a value, not a function")
            } else {
                nearest(name, FUNCTIONS.iter().map(|(n, _)| *n))
                    .map(|n| format!("; did you mean `{}`?", usage(n)))
                    .unwrap_or_default()
            };
            return Err(LangError::at(
                name_span,
                format!("unknown function `{name}`{hint}"),
            ));
        };
        if args.len() != sig.len() {
            return Err(LangError::at(
                span,
                format!(
                    "`{name}` takes {} argument{}, `{}`; got {}",
                    sig.len(),
                    if sig.len() == 1 { "" } else { "s" },
                    usage(name),
                    args.len()
                ),
            ));
        }
        if name == "at_entry" {
            if place != Place::Exit && place != Place::Let {
                return Err(LangError::at(
                    name_span,
                    "`at_entry` reads the open position, which only `exit when` may do",
                ));
            }
            if at_entry {
                return Err(LangError::at(
                    name_span,
                    "`at_entry` inside `at_entry` reads the same bar; write it once",
                ));
            }
        }
        let inner = at_entry || name == "at_entry";
        let mut tys = Vec::with_capacity(args.len());
        for (i, (a, kind)) in args.iter().zip(sig).enumerate() {
            let ty = self.ty(a, place, inner, reads)?;
            let nth = format!("argument {} of `{}`", i + 1, usage(name));
            match kind {
                Arg::Num if ty.boolean => {
                    return Err(LangError::at(
                        a.span(),
                        format!("{nth} is a number, got {}", ty.describe()),
                    ));
                }
                Arg::Cond if !ty.boolean => {
                    return Err(LangError::at(
                        a.span(),
                        format!("{nth} is a condition, got {}", ty.describe()),
                    ));
                }
                Arg::Window | Arg::Shift | Arg::Fixed if ty.boolean || ty.series => {
                    let what = match kind {
                        Arg::Window => "a window",
                        Arg::Shift => "a shift",
                        _ => "a number",
                    };
                    return Err(LangError::at(
                        a.span(),
                        format!(
                            "{nth} is {what} fixed for the run (a parameter, a number, or arithmetic of them), got {}",
                            ty.describe()
                        ),
                    ));
                }
                _ => {}
            }
            let elementwise = matches!(name, "if" | "abs" | "sign" | "log" | "pow" | "min" | "max");
            if (ty.position || ty.cash) && !elementwise && name != "at_entry" {
                return Err(LangError::at(
                    a.span(),
                    format!(
                        "{nth} reads the position or the cash, which have no history; use them in arithmetic, comparisons and `if` only"
                    ),
                ));
            }
            tys.push(ty);
        }
        if name == "if" && tys[1].boolean != tys[2].boolean {
            return Err(LangError::at(
                args[2].span(),
                format!(
                    "`if`'s branches must agree: the first is {}, the second {}",
                    tys[1].describe(),
                    tys[2].describe()
                ),
            ));
        }
        let mut ty = tys.iter().fold(Ty::default(), |acc, t| acc.join(*t));
        ty.boolean = match name {
            "if" => tys[1].boolean,
            "cross_above" | "cross_below" | "defined" => true,
            _ => false,
        };
        // Every function of a series but the arithmetic ones gives a series even of numbers.
        if !matches!(name, "if" | "abs" | "sign" | "log" | "pow" | "min" | "max") {
            ty.series = true;
        }
        if name == "at_entry" {
            ty.position = true;
        }
        Ok(ty)
    }
}

fn usage(name: &str) -> &'static str {
    FUNCTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, u)| *u)
}

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
        let constant = matches!(op, Op::Number(_) | Op::Bool(_));
        let node = Node {
            op,
            args,
            stateful,
            constant,
        };
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
