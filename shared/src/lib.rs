//! Types and contracts shared by every crate of the cluster: a symbol's bars and
//! their validation, the sources bars come from, universes with point-in-time
//! membership, the batch spec, and the Arrow schemas of the result tables.
//!
//! This crate depends on no other crate of ours, does no scheduling and runs no
//! backtest; it only says what the data is and what it must look like.

pub mod bars;
pub mod date;
pub mod job;
pub mod market;
pub mod metrics;
pub mod open;
pub mod portfolio;
pub mod schema;
pub mod source;
pub mod spec;
pub mod synthetic;
pub mod universe;

/// The cluster's gRPC contract, generated from `proto/cluster.proto`.
pub mod wire {
    tonic::include_proto!("xt.v1");
}

pub use bars::{Bars, BarsError};
pub use date::Date;
pub use market::{Costs, Market};
pub use source::{BarSource, CsvDir, DataError, ParquetDir};
pub use spec::{BatchSpec, SpecError};
pub use synthetic::SyntheticMarket;
pub use universe::{Member, Universe, UniverseError};
