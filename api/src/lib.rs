//! The user-facing edges of the cluster: the `xt` command line (and, later, the HTTP API).

pub mod local;
