//! The strategy language's tokens: names, numbers and symbols with their byte spans, a
//! newline ending each statement (none inside parentheses, where a line goes on), `#`
//! comments dropped.

use super::{LangError, Span};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Number(f64),
    Sym(&'static str),
    Newline,
    End,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) span: Span,
}

const SYMBOLS: [&str; 17] = [
    "<=", ">=", "==", "!=", "..", "(", ")", ",", ":", "=", "+", "-", "*", "/", "<", ">", "!",
];

pub(super) fn lex(src: &str) -> Result<Vec<Token>, LangError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut depth = 0usize;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'\n' {
            // Inside parentheses a line goes on; a statement ends only at depth 0.
            if depth == 0 {
                out.push(Token {
                    tok: Tok::Newline,
                    span: Span::new(i, i + 1),
                });
            }
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(src[start..i].to_string()),
                span: Span::new(start, i),
            });
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            // `1..5` is a range, not the number `1.` followed by `.5`.
            if i < bytes.len() && bytes[i] == b'.' && bytes.get(i + 1) != Some(&b'.') {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut j = i + 1;
                if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    i = j;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text = &src[start..i];
            let value: f64 = text.parse().map_err(|_| {
                LangError::at(Span::new(start, i), format!("{text:?} is not a number"))
            })?;
            out.push(Token {
                tok: Tok::Number(value),
                span: Span::new(start, i),
            });
            continue;
        }
        let Some(sym) = SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) else {
            let ch = src[i..].chars().next().unwrap_or('?');
            let len = ch.len_utf8();
            return Err(LangError::at(
                Span::new(i, i + len),
                format!("unexpected character {ch:?}"),
            ));
        };
        match *sym {
            "(" => depth += 1,
            ")" => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += sym.len();
        out.push(Token {
            tok: Tok::Sym(sym),
            span: Span::new(start, i),
        });
    }
    out.push(Token {
        tok: Tok::Newline,
        span: Span::new(src.len(), src.len()),
    });
    out.push(Token {
        tok: Tok::End,
        span: Span::new(src.len(), src.len()),
    });
    Ok(out)
}
