//! The cluster's wire contract, what both ends of a connection must agree on: the gRPC
//! services (generated from `proto/cluster.proto`: `Workers`, what workers call on the
//! coordinator, and `Batches`, what clients call), the Flight upload format of job results
//! (`upload`), and the HTTP/2 settings of every connection (`transport`).

pub mod auth;
pub mod leader;
pub mod members;
pub mod tls;
pub mod transport;
pub mod upload;

tonic::include_proto!("xt.v1");
