//! The HTTP API and the `xt` command line; built by the API issue.
