//! Benchmarks of the engine and the cluster; see `benches/` and the README.
