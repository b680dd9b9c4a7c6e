//! The worker: the backtest engine (indicators, strategies, fills, costs, metrics) and the
//! runner that spreads a batch's jobs over every core.

pub mod client;
pub mod engine;
pub mod runner;
pub mod stop;
