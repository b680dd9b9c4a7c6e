//! The coordinator: expands batches into per-stock jobs, queues them fairly across batches,
//! leases them to workers over gRPC, collects their result tables over Arrow Flight, and
//! aggregates each finished batch.
//!
//! `scheduler` is the decision core (no I/O, time passed in), so the failure rules (lease
//! deadlines, heartbeats, retries, duplicates, cancellation) are unit-tested directly;
//! `service` wraps it in the gRPC job service and the Flight result service.

pub mod http;
pub mod leader;
mod memory;
pub mod scheduler;
pub mod service;
pub mod store;
