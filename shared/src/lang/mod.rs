//! The strategy language (SEMANTICS section 13): strategies users write themselves,
//! checked before anything runs and resolved, for each parameter set, into a plan of
//! whole-series operations the engine evaluates with its own kernels.
//!
//! This module is the front end every process shares: the API and `xt strategy check`
//! report errors with a caret under the offending source, the coordinator checks every
//! grid point before a job is leased, and workers receive the same `Plan` for each set.
//! What each operation computes lives in the engine; here are only its types, its
//! lookback and the scalar arithmetic that parameters fold with.

mod check;
mod functions;
mod lex;
mod plan;
mod resolve;
mod syntax;

use std::fmt;
use std::sync::Arc;

pub use functions::{FUNCTIONS, NAMES};
pub use plan::{Column, Node, Op, Plan, Real, StateVar, binary, unary};
pub use syntax::{BinOp, Kind};

use crate::strategy::{ParamDef, ParamSet};

/// The largest source accepted, in bytes.
pub const MAX_SOURCE: usize = 64 * 1024;
/// The deepest nesting of expressions (parentheses, operators and calls).
pub const MAX_DEPTH: usize = 64;
/// The longest window or shift, in bars (about forty years of days).
pub const MAX_WINDOW: usize = 10_000;
/// The most operations one parameter set's plan may hold, shared ones counted once.
pub const MAX_NODES: usize = 2_000;

/// A byte range of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// What is wrong with a strategy's source, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct LangError {
    pub span: Span,
    pub message: String,
    /// Set once the source is known: 1-based line and column, and the caret picture.
    pub line: usize,
    pub column: usize,
    pub excerpt: String,
}

impl LangError {
    pub fn at(span: Span, message: impl Into<String>) -> Self {
        LangError {
            span,
            message: message.into(),
            line: 0,
            column: 0,
            excerpt: String::new(),
        }
    }

    /// Places the error in `src`: line, column (in characters) and the line with a caret.
    fn locate(mut self, src: &str) -> Self {
        let start = self.span.start.min(src.len());
        let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
        self.line = src[..start].matches('\n').count() + 1;
        self.column = src[line_start..start].chars().count() + 1;
        let text = &src[line_start..line_end];
        let end = self.span.end.clamp(start, line_end);
        let width = src[start..end].chars().count().max(1);
        let gutter = self.line.to_string();
        self.excerpt = format!(
            "{gutter} | {text}\n{} | {}{}",
            " ".repeat(gutter.len()),
            " ".repeat(self.column - 1),
            "^".repeat(width)
        );
        self
    }
}

impl fmt::Display for LangError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}", self.message);
        }
        write!(
            f,
            "line {}, column {}: {}\n{}",
            self.line, self.column, self.message, self.excerpt
        )
    }
}

impl std::error::Error for LangError {}

/// A checked strategy: its declarations and expressions, ready to be resolved for any
/// parameter set that meets its rules.
#[derive(Debug)]
pub struct Script {
    pub name: String,
    source: String,
    hash: String,
    params: Arc<[ParamDef]>,
    body: check::Body,
}

impl Script {
    /// Parses and checks `source`; the error says where and what.
    pub fn compile(source: &str) -> Result<Script, LangError> {
        if source.len() > MAX_SOURCE {
            return Err(LangError::at(
                Span::new(0, 0),
                format!("the source is {} bytes; at most {MAX_SOURCE}", source.len()),
            ));
        }
        let stmts = syntax::parse(source).map_err(|e| e.locate(source))?;
        let (name, params, body) =
            check::check(&stmts, source.len()).map_err(|e| e.locate(source))?;
        Ok(Script {
            name,
            hash: source_hash(source),
            source: source.to_string(),
            params: params.into(),
            body,
        })
    }

    /// `sha256:` and the hex digest of the source's bytes: the version a batch ran.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn params(&self) -> &Arc<[ParamDef]> {
        &self.params
    }

    /// Each parameter's declared range, in the order of `params`.
    pub fn ranges(&self) -> &[Option<(f64, f64)>] {
        &self.body.ranges
    }

    /// The declared rules, as written, for people.
    pub fn rules(&self) -> String {
        self.body
            .rules
            .iter()
            .map(|r| self.source[r.span().start..r.span().end].to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Checks a parameter set against the ranges and rules and resolves it into a plan;
    /// the message names the rule or the window that fails.
    pub fn resolve(&self, set: &ParamSet) -> Result<Plan, String> {
        resolve::resolve(&self.body, &self.params, set).map_err(|e| {
            let e = e.locate(&self.source);
            format!("{}: {e}", set.json())
        })
    }
}

/// The identity of a source: what saved strategies are addressed by and provenance records.
pub fn source_hash(source: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(source.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Whether a batch's `strategy` field holds source text rather than a name or a hash.
pub fn is_source(strategy: &str) -> bool {
    strategy.contains('\n') || strategy.trim_start().starts_with("strategy ")
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The known name closest to `name`, if one is close enough to be a typo of it.
pub fn nearest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3) && *d < name.len().max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests;
