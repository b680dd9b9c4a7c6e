//! Benchmarks of the engine and the cluster against the numbers we must beat: the engine
//! against backtrader and vectorbt, scaling over cores and worker processes, growth of time
//! and memory with the work, the cluster's overheads and the HTTP API under load. The
//! `bench` binary runs them (`cargo run --release -p bench -- all`); `benches/engine.rs` is
//! the criterion microbenchmark of the engine per strategy.

pub mod api;
pub mod cluster;
pub mod data;
pub mod distributed;
pub mod growth;
pub mod load;
pub mod machine;
pub mod peers;
pub mod report;
pub mod research;
pub mod scaling;
pub mod versus;
