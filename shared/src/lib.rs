//! The domain every crate of the cluster shares: a symbol's bars and their validation, the
//! sources bars come from, universes with point-in-time membership, the batch spec and its
//! planning into jobs, the Arrow schemas of the result tables, metrics and portfolio sums.
//!
//! This crate depends on no other crate of ours and on no transport (the wire contract is
//! `xt-wire`, beside it); it does no scheduling and runs no backtest.

pub mod bars;
pub mod cache;
pub mod dataset;
pub mod date;
pub mod funding;
pub mod import;
pub mod job;
pub mod lang;
pub mod layout;
pub mod market;
pub mod metrics;
pub mod open;
pub mod portfolio;
pub mod research;
pub mod rules;
pub mod schema;
pub mod sleeve;
pub mod source;
pub mod spec;
pub mod strategy;
pub mod synthetic;
pub mod tables;
pub mod universe;

pub use bars::{Bars, BarsError};
pub use date::Date;
pub use market::{Costs, Market};
pub use source::{BarSource, ColumnarDir, CsvDir, DataError, ParquetDir};
pub use spec::{BatchSpec, SpecError};
pub use synthetic::SyntheticMarket;
pub use universe::{Member, Universe, UniverseError};
