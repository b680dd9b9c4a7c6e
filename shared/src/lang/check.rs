//! Checking a parsed strategy once: names, types, where position state may be read,
//! unused parameters. What each parameter set makes of it is `resolve.rs`.

use std::collections::{HashMap, HashSet};

use super::functions::{Arg, FUNCTIONS, NAMES, RESERVED, signature, usage};
use super::syntax::{BinOp, Expr, Kind, Stmt};
use super::{LangError, Span, nearest};
use crate::strategy::ParamDef;

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
    pub(super) params: HashMap<String, usize>,
    pub(super) ranges: Vec<Option<(f64, f64)>>,
    pub(super) param_spans: Vec<Span>,
    pub(super) lets: HashMap<String, usize>,
    pub(super) let_exprs: Vec<Expr>,
    pub(super) rules: Vec<Expr>,
    pub(super) entry: Expr,
    pub(super) exit: Expr,
    pub(super) qty: Option<Expr>,
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
        if self.body.params.contains_key(name) {
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
