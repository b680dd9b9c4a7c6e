//! The user-facing edges of the cluster: the HTTP API (`serve`), its Arrow Flight face for
//! programs (`flight`), tokens (`auth`), and the `xt` command line (`local`, `client`).

pub mod auth;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod flight;
pub mod import;
pub mod json;
pub mod local;
pub mod serve;
pub mod strategy;
pub mod summary;
