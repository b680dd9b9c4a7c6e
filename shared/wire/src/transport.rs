//! HTTP/2 settings of the cluster's connections, the coordinator's server and its clients
//! (workers, the API, `xt`) alike. Result uploads are tens to hundreds of kilobytes: the
//! default 64 KiB windows and 16 KiB frames would cost a window update round trip and
//! several frames each. Small request/response exchanges on loopback stall on Nagle and
//! delayed ACKs (tens of milliseconds a call) unless the sockets say otherwise.

use tonic::service::InterceptorLayer;
use tonic::transport::{Endpoint, Server};

use crate::auth::{ClusterSecret, RequireSecret, with_secret};

pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;
pub const MAX_FRAME: u32 = 1 << 20;

/// The largest gRPC message the coordinator decodes (a submission, a lease call).
pub const MAX_JOBS_MESSAGE: usize = 64 << 20;
/// The largest Flight message the coordinator decodes (one record batch of an upload).
pub const MAX_FLIGHT_MESSAGE: usize = 256 << 20;

/// A client endpoint of the coordinator at `url`, with the cluster's settings.
/// With the process's TLS identity installed ([`crate::tls`]), the connection is mutual TLS.
pub fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    // Under TLS every coordinator URL is https, whatever the flag or etcd said.
    let url = match url.strip_prefix("http://") {
        Some(rest) if crate::tls::enabled() => format!("https://{rest}"),
        _ => url.to_string(),
    };
    let endpoint = Endpoint::from_shared(url)?
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .tcp_nodelay(true);
    match crate::tls::client_config() {
        Some(tls) => endpoint.tls_config(tls),
        None => Ok(endpoint),
    }
}

/// The coordinator's server builder, with the cluster's settings (accepted sockets still
/// need `set_nodelay`), refusing every call without `secret` when there is one.
/// With the process's TLS identity installed, it speaks only mutual TLS.
pub fn server(
    secret: Option<ClusterSecret>,
) -> Result<
    Server<tower_layer::Stack<InterceptorLayer<RequireSecret>, tower_layer::Identity>>,
    tonic::transport::Error,
> {
    let builder = match crate::tls::server_config() {
        Some(tls) => Server::builder().tls_config(tls)?,
        None => Server::builder(),
    };
    Ok(builder
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .layer(InterceptorLayer::new(RequireSecret::new(secret))))
}

/// Connects to the coordinator at `url`, sending `secret` on every call.
pub async fn connect(
    url: &str,
    secret: Option<ClusterSecret>,
) -> Result<crate::auth::Channel, tonic::transport::Error> {
    Ok(with_secret(endpoint(url)?.connect().await?, secret))
}
