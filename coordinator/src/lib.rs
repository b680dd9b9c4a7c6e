//! The coordinator: expands batches into per-stock jobs, queues them fairly across batches,
//! leases them to workers, and tracks every job to exactly one completion.
//!
//! `scheduler` is the decision core (no I/O, time passed in), so the failure rules (lease
//! deadlines, heartbeats, retries, duplicates, cancellation) are unit-tested directly; the
//! gRPC and Flight services wrap it.

pub mod scheduler;
