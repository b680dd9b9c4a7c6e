//! The worker: the runner that spreads a batch's jobs over every core on the engine
//! (`xt-engine`, re-exported as `engine`), and the worker process's loop.

pub use xt_engine as engine;

pub mod client;
pub mod podcost;
pub mod runner;
pub mod stop;
