//! The backtest engine: pure functions from one symbol's bars to its results. No I/O, no
//! clock, no global state; the same inputs give the same bits on any machine, which is what
//! lets the golden and peer tests pin it down and rayon spread it over every core.

pub mod exchange;
pub mod indicators;
pub mod interrupt;
pub mod job;
pub mod script;
pub mod sleeve;
pub mod strategy;

pub use exchange::Exchange;
pub use interrupt::{Halt, Interrupt, Never};
pub use job::{Job, run_job};
pub use script::ScriptStrategy;
pub use sleeve::{SleeveRun, Trade, simulate};
pub use strategy::{ParamSet, Signals, Strategy};
pub use xt_shared::tables;
