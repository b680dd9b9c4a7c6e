//! A strategy resolved for one parameter set: a list of operations on whole series, each
//! reading earlier ones, with every parameter folded into a constant or a window. Equal
//! operations on equal inputs appear once, and an engine that keys its cache by them
//! computes each one once for all the sets of a grid.
//!
//! The scalar arithmetic here is the language's, shared by the front end (which folds
//! parameters with it) and the engine (which applies it bar by bar): missing is `NaN`,
//! and an operation without a defined result gives missing, never an infinity.

use std::hash::{Hash, Hasher};

use super::syntax::BinOp;

/// A float that compares and hashes by its bits, so plans can be keys.
#[derive(Debug, Clone, Copy)]
pub struct Real(pub f64);

impl PartialEq for Real {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Real {}

impl Hash for Real {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    Open,
    High,
    Low,
    Close,
    Volume,
}

/// What a sleeve knows about its open position (SEMANTICS section 13), read bar by bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateVar {
    /// The last entry's fill price.
    EntryPrice,
    /// Bars since the entry's fill, 0 on its bar.
    BarsHeld,
    /// Cash when an entry is sized.
    Cash,
}

/// One operation. Windows and shifts are resolved to integers, constants to values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Column(Column),
    Number(Real),
    Bool(bool),
    Neg,
    Not,
    Binary(BinOp),
    If,
    Abs,
    Sign,
    Log,
    Pow,
    Min,
    Max,
    Delay(usize),
    Delta(usize),
    Sum(usize),
    Mean(usize),
    Std(usize),
    TsMin(usize),
    TsMax(usize),
    ArgMin(usize),
    ArgMax(usize),
    Rank(usize),
    Corr(usize),
    Sma(usize),
    Ema(usize),
    Rsi(usize),
    /// `atr(high, low, close, n)`.
    Atr(usize),
    /// The MACD line, `(fast, slow, signal)`.
    Macd(usize, usize, usize),
    MacdSignal(usize, usize, usize),
    BbUpper(usize, Real),
    BbLower(usize, Real),
    CrossAbove,
    CrossBelow,
    State(StateVar),
    /// Its argument's value at the bar whose close signalled the open position's entry.
    AtEntry,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    pub op: Op,
    /// Indexes of earlier nodes.
    pub args: Vec<u32>,
    /// Reads the position's state (directly or through an argument): evaluated bar by bar
    /// while a position is open, never as a whole series.
    pub stateful: bool,
}

/// One parameter set's strategy: nodes in evaluation order and which ones decide.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub nodes: Vec<Node>,
    pub entry: u32,
    pub exit: u32,
    /// The quantity rule, when the strategy sizes its entries itself.
    pub qty: Option<u32>,
    /// The most bars any of entry, exit or qty needs before its first defined value.
    pub lookback: usize,
}

fn defined(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// A binary operation on two values, booleans as 0 and 1. Comparisons with a missing side
/// are false (even `!=`); arithmetic without a finite result is missing.
pub fn binary(op: BinOp, a: f64, b: f64) -> f64 {
    let truth = |c: bool| if c { 1.0 } else { 0.0 };
    match op {
        BinOp::Add => defined(a + b).unwrap_or(f64::NAN),
        BinOp::Sub => defined(a - b).unwrap_or(f64::NAN),
        BinOp::Mul => defined(a * b).unwrap_or(f64::NAN),
        BinOp::Div => defined(a / b).unwrap_or(f64::NAN),
        BinOp::Lt => truth(a < b),
        BinOp::Le => truth(a <= b),
        BinOp::Gt => truth(a > b),
        BinOp::Ge => truth(a >= b),
        BinOp::Eq => truth(a == b),
        BinOp::Ne => truth(a != b && !a.is_nan() && !b.is_nan()),
        BinOp::And => truth(a != 0.0 && b != 0.0),
        BinOp::Or => truth(a != 0.0 || b != 0.0),
    }
}

/// A one-argument operation (`Neg`, `Not`, `Abs`, `Sign`, `Log`) or a two-argument one
/// (`Pow`, `Min`, `Max`, with `b`), with missing in, missing out.
pub fn unary(op: &Op, a: f64, b: f64) -> f64 {
    if a.is_nan() || (matches!(op, Op::Pow | Op::Min | Op::Max) && b.is_nan()) {
        return if matches!(op, Op::Not) { 1.0 } else { f64::NAN };
    }
    match op {
        Op::Neg => -a,
        Op::Not => {
            if a == 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Op::Abs => a.abs(),
        Op::Sign => {
            if a > 0.0 {
                1.0
            } else if a < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        Op::Log => {
            if a > 0.0 {
                a.ln()
            } else {
                f64::NAN
            }
        }
        Op::Pow => defined(a.powf(b)).unwrap_or(f64::NAN),
        Op::Min => a.min(b),
        Op::Max => a.max(b),
        _ => f64::NAN,
    }
}
