//! What the language can call and name: each function with how it reads its arguments
//! (what the checker holds them to), and the names an expression may read.

/// How a function reads each argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Arg {
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

pub(super) fn signature(name: &str) -> Option<&'static [Arg]> {
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

pub(super) const RESERVED: [&str; 6] = ["true", "false", "and", "or", "not", "in"];

pub(super) fn usage(name: &str) -> &'static str {
    FUNCTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, u)| *u)
}
