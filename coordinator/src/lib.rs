//! The coordinator: expands batches into per-stock jobs, queues and leases them, collects results.
//! Built by the cluster issue; the engine it schedules lives in `xt-worker`.
