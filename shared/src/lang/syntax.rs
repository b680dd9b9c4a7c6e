//! The strategy language's syntax: tokens and the tree of statements and expressions,
//! each carrying the byte span it came from so that every later error can point at it.
//!
//! One statement a line (a line may continue while a parenthesis is open):
//!
//! ```text
//! strategy NAME
//! param NAME: int|float = DEFAULT [in LOW..HIGH]
//! rule EXPR
//! let NAME = EXPR
//! entry when EXPR
//! exit when EXPR
//! qty = EXPR
//! ```
//!
//! Expressions: `or` < `and` < `not` < comparisons (one per level, not chained) < `+ -` <
//! `* /` < unary `-` < calls, names, numbers, `true`, `false` and parentheses.

use super::lex::{Tok, Token, lex};
use super::{LangError, MAX_DEPTH, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "and",
            BinOp::Or => "or",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64, Span),
    Bool(bool, Span),
    Name(String, Span),
    Call {
        name: String,
        name_span: Span,
        args: Vec<Expr>,
        span: Span,
    },
    Neg(Box<Expr>, Span),
    Not(Box<Expr>, Span),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
        span: Span,
    },
}

impl Expr {
    pub fn span(&self) -> Span {
        match self {
            Expr::Number(_, s) | Expr::Bool(_, s) | Expr::Name(_, s) => *s,
            Expr::Call { span, .. } | Expr::Binary { span, .. } => *span,
            Expr::Neg(_, s) | Expr::Not(_, s) => *s,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Float,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Strategy {
        name: String,
        span: Span,
    },
    Param {
        name: String,
        span: Span,
        kind: Kind,
        default: f64,
        default_span: Span,
        range: Option<(f64, f64, Span)>,
    },
    Rule(Expr),
    Let {
        name: String,
        span: Span,
        expr: Expr,
    },
    Entry(Expr, Span),
    Exit(Expr, Span),
    Qty(Expr, Span),
}

pub fn parse(src: &str) -> Result<Vec<Stmt>, LangError> {
    let tokens = lex(src)?;
    let mut p = Parser {
        tokens,
        at: 0,
        depth: 0,
    };
    let mut out = Vec::new();
    loop {
        while p.peek() == &Tok::Newline {
            p.at += 1;
        }
        if p.peek() == &Tok::End {
            return Ok(out);
        }
        out.push(p.statement()?);
        match p.peek() {
            Tok::Newline => p.at += 1,
            _ => return Err(p.unexpected("the end of the line")),
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

const STATEMENTS: &str = "`strategy`, `param`, `rule`, `let`, `entry when`, `exit when` or `qty =`";

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.at].tok
    }

    fn span(&self) -> Span {
        self.tokens[self.at].span
    }

    fn next(&mut self) -> Token {
        let t = self.tokens[self.at].clone();
        if t.tok != Tok::End {
            self.at += 1;
        }
        t
    }

    fn unexpected(&self, wanted: &str) -> LangError {
        let found = match self.peek() {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Number(n) => format!("the number {n}"),
            Tok::Sym(s) => format!("`{s}`"),
            Tok::Newline => "the end of the line".into(),
            Tok::End => "the end of the source".into(),
        };
        LangError::at(self.span(), format!("expected {wanted}, found {found}"))
    }

    fn sym(&mut self, s: &'static str) -> Result<Span, LangError> {
        if self.peek() == &Tok::Sym(s) {
            Ok(self.next().span)
        } else {
            Err(self.unexpected(&format!("`{s}`")))
        }
    }

    fn keyword(&mut self, k: &str) -> Result<Span, LangError> {
        match self.peek() {
            Tok::Ident(s) if s == k => Ok(self.next().span),
            _ => Err(self.unexpected(&format!("`{k}`"))),
        }
    }

    fn ident(&mut self, what: &str) -> Result<(String, Span), LangError> {
        match self.peek().clone() {
            Tok::Ident(s) => Ok((s, self.next().span)),
            _ => Err(self.unexpected(what)),
        }
    }

    fn statement(&mut self) -> Result<Stmt, LangError> {
        let (word, span) = match self.peek().clone() {
            Tok::Ident(w) => (w, self.span()),
            _ => return Err(self.unexpected(&format!("a statement ({STATEMENTS})"))),
        };
        self.at += 1;
        match word.as_str() {
            "strategy" => {
                let (name, span) = self.ident("the strategy's name")?;
                Ok(Stmt::Strategy { name, span })
            }
            "param" => self.param(),
            "rule" => Ok(Stmt::Rule(self.expr()?)),
            "let" => {
                let (name, span) = self.ident("a name")?;
                self.sym("=")?;
                Ok(Stmt::Let {
                    name,
                    span,
                    expr: self.expr()?,
                })
            }
            "entry" => {
                self.keyword("when")?;
                Ok(Stmt::Entry(self.expr()?, span))
            }
            "exit" => {
                self.keyword("when")?;
                Ok(Stmt::Exit(self.expr()?, span))
            }
            "qty" => {
                self.sym("=")?;
                Ok(Stmt::Qty(self.expr()?, span))
            }
            _ => Err(LangError::at(
                span,
                format!("`{word}` does not start a statement; a line starts with {STATEMENTS}"),
            )),
        }
    }

    fn param(&mut self) -> Result<Stmt, LangError> {
        let (name, span) = self.ident("the parameter's name")?;
        self.sym(":")?;
        let (kind_name, kind_span) = self.ident("`int` or `float`")?;
        let kind = match kind_name.as_str() {
            "int" => Kind::Int,
            "float" => Kind::Float,
            other => {
                return Err(LangError::at(
                    kind_span,
                    format!("a parameter is `int` or `float`, not `{other}`"),
                ));
            }
        };
        self.sym("=")?;
        let (default, default_span) = self.signed_number("the default value")?;
        let range = if matches!(self.peek(), Tok::Ident(w) if w == "in") {
            self.at += 1;
            let (low, low_span) = self.signed_number("the range's low end")?;
            self.sym("..")?;
            let (high, high_span) = self.signed_number("the range's high end")?;
            Some((low, high, low_span.to(high_span)))
        } else {
            None
        };
        Ok(Stmt::Param {
            name,
            span,
            kind,
            default,
            default_span,
            range,
        })
    }

    fn signed_number(&mut self, what: &str) -> Result<(f64, Span), LangError> {
        let start = self.span();
        let sign = if self.peek() == &Tok::Sym("-") {
            self.at += 1;
            -1.0
        } else {
            1.0
        };
        match self.peek().clone() {
            Tok::Number(n) => {
                let end = self.next().span;
                Ok((sign * n, start.to(end)))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn too_deep(span: Span) -> LangError {
        LangError::at(
            span,
            format!("expressions nest deeper than {MAX_DEPTH} levels"),
        )
    }

    /// Parses one level deeper, refused past `MAX_DEPTH` (an error at `span`), so no
    /// source can overflow the stack of this parser or of what walks its tree.
    fn nested(
        &mut self,
        span: Span,
        inner: impl FnOnce(&mut Self) -> Result<Expr, LangError>,
    ) -> Result<Expr, LangError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Self::too_deep(span));
        }
        let e = inner(self);
        self.depth -= 1;
        e
    }

    fn expr(&mut self) -> Result<Expr, LangError> {
        self.nested(self.span(), Self::or)
    }

    /// A chain `a + b + c ...` nests one level per operator, like parentheses do.
    fn chain(&self, links: usize) -> Result<(), LangError> {
        if self.depth + links > MAX_DEPTH {
            return Err(Self::too_deep(self.span()));
        }
        Ok(())
    }

    fn binary(lhs: Expr, op: BinOp, rhs: Expr) -> Expr {
        let span = lhs.span().to(rhs.span());
        Expr::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
            span,
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == w)
    }

    fn or(&mut self) -> Result<Expr, LangError> {
        let mut lhs = self.and()?;
        let mut chain = 0;
        while self.is_word("or") {
            chain += 1;
            self.chain(chain)?;
            self.at += 1;
            let rhs = self.and()?;
            lhs = Self::binary(lhs, BinOp::Or, rhs);
        }
        Ok(lhs)
    }

    fn and(&mut self) -> Result<Expr, LangError> {
        let mut lhs = self.not()?;
        let mut chain = 0;
        while self.is_word("and") {
            chain += 1;
            self.chain(chain)?;
            self.at += 1;
            let rhs = self.not()?;
            lhs = Self::binary(lhs, BinOp::And, rhs);
        }
        Ok(lhs)
    }

    fn not(&mut self) -> Result<Expr, LangError> {
        if self.is_word("not") {
            let span = self.next().span;
            let arg = self.nested(span, Self::not)?;
            let span = span.to(arg.span());
            return Ok(Expr::Not(Box::new(arg), span));
        }
        self.comparison()
    }

    fn comparison_op(&self) -> Option<BinOp> {
        Some(match self.peek() {
            Tok::Sym("<") => BinOp::Lt,
            Tok::Sym("<=") => BinOp::Le,
            Tok::Sym(">") => BinOp::Gt,
            Tok::Sym(">=") => BinOp::Ge,
            Tok::Sym("==") => BinOp::Eq,
            Tok::Sym("!=") => BinOp::Ne,
            _ => return None,
        })
    }

    fn comparison(&mut self) -> Result<Expr, LangError> {
        let lhs = self.additive()?;
        let Some(op) = self.comparison_op() else {
            return Ok(lhs);
        };
        self.at += 1;
        let rhs = self.additive()?;
        if let Some(next) = self.comparison_op() {
            return Err(LangError::at(
                self.span(),
                format!(
                    "comparisons do not chain; write `a {} b and b {} c`",
                    op.symbol(),
                    next.symbol()
                ),
            ));
        }
        Ok(Self::binary(lhs, op, rhs))
    }

    fn additive(&mut self) -> Result<Expr, LangError> {
        let mut lhs = self.multiplicative()?;
        let mut chain = 0;
        loop {
            let op = match self.peek() {
                Tok::Sym("+") => BinOp::Add,
                Tok::Sym("-") => BinOp::Sub,
                _ => return Ok(lhs),
            };
            chain += 1;
            self.chain(chain)?;
            self.at += 1;
            let rhs = self.multiplicative()?;
            lhs = Self::binary(lhs, op, rhs);
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, LangError> {
        let mut lhs = self.unary()?;
        let mut chain = 0;
        loop {
            let op = match self.peek() {
                Tok::Sym("*") => BinOp::Mul,
                Tok::Sym("/") => BinOp::Div,
                _ => return Ok(lhs),
            };
            chain += 1;
            self.chain(chain)?;
            self.at += 1;
            let rhs = self.unary()?;
            lhs = Self::binary(lhs, op, rhs);
        }
    }

    fn unary(&mut self) -> Result<Expr, LangError> {
        if self.peek() == &Tok::Sym("-") {
            let span = self.next().span;
            let arg = self.nested(span, Self::unary)?;
            let span = span.to(arg.span());
            return Ok(Expr::Neg(Box::new(arg), span));
        }
        if self.peek() == &Tok::Sym("!") {
            return Err(LangError::at(self.span(), "write `not`, not `!`"));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, LangError> {
        let span = self.span();
        match self.peek().clone() {
            Tok::Number(n) => {
                self.at += 1;
                Ok(Expr::Number(n, span))
            }
            Tok::Sym("(") => {
                self.at += 1;
                let e = self.expr()?;
                self.sym(")")?;
                Ok(e)
            }
            Tok::Ident(w) if w == "true" || w == "false" => {
                self.at += 1;
                Ok(Expr::Bool(w == "true", span))
            }
            Tok::Ident(w) if matches!(w.as_str(), "and" | "or" | "not") => {
                Err(self.unexpected("a value"))
            }
            Tok::Ident(name) => {
                self.at += 1;
                if self.peek() != &Tok::Sym("(") {
                    return Ok(Expr::Name(name, span));
                }
                self.at += 1;
                let mut args = Vec::new();
                if self.peek() != &Tok::Sym(")") {
                    loop {
                        args.push(self.expr()?);
                        if self.peek() == &Tok::Sym(",") {
                            self.at += 1;
                            continue;
                        }
                        break;
                    }
                }
                let end = self.sym(")")?;
                Ok(Expr::Call {
                    name,
                    name_span: span,
                    args,
                    span: span.to(end),
                })
            }
            _ => Err(self.unexpected("a value")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_spans() {
        let s = parse("entry when a + b * 2 > 3 and not c < d\n").unwrap();
        let Stmt::Entry(Expr::Binary { op, lhs, rhs, .. }, _) = &s[0] else {
            panic!("{s:?}")
        };
        assert_eq!(*op, BinOp::And);
        let Expr::Binary { op, lhs: sum, .. } = lhs.as_ref() else {
            panic!()
        };
        assert_eq!(*op, BinOp::Gt);
        assert!(matches!(sum.as_ref(), Expr::Binary { op: BinOp::Add, .. }));
        assert!(matches!(rhs.as_ref(), Expr::Not(..)));
        assert_eq!(sum.span(), Span::new(11, 20));
    }

    #[test]
    fn lines_continue_inside_parentheses_and_ranges_lex() {
        let s = parse("param k: float = 2.5 in 0.5..10\nlet x = max(\n  a,\n  b)\n").unwrap();
        assert!(matches!(
            &s[0],
            Stmt::Param { default, range: Some((lo, hi, _)), .. } if *default == 2.5 && *lo == 0.5 && *hi == 10.0
        ));
        assert!(matches!(&s[1], Stmt::Let { .. }));
        let s = parse("param n: int = 3 in 1..5").unwrap();
        assert!(
            matches!(&s[0], Stmt::Param { range: Some((lo, hi, _)), .. } if *lo == 1.0 && *hi == 5.0)
        );
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        let e = parse("rule 0 < a < 1").unwrap_err();
        assert!(e.message.contains("do not chain"), "{e}");
        assert_eq!(e.span, Span::new(11, 12));
        let e = parse("entry sma(close, 5) > 1").unwrap_err();
        assert!(e.message.contains("expected `when`"), "{e}");
        let e = parse("buy when x").unwrap_err();
        assert!(e.message.contains("does not start a statement"), "{e}");
        let deep = format!("let x = {}1{}", "(".repeat(200), ")".repeat(200));
        assert!(parse(&deep).unwrap_err().message.contains("nest deeper"));
        let deep = format!("let x = 1{}", " + 1".repeat(10_000));
        assert!(parse(&deep).unwrap_err().message.contains("nest deeper"));
        let deep = format!("let x = {}1", "-".repeat(10_000));
        assert!(parse(&deep).unwrap_err().message.contains("nest deeper"));
    }
}
