//! The HTTP API (`xt serve`): a thin axum service in front of a coordinator. Everything it
//! knows it asks the coordinator over gRPC; result tables stream from the coordinator's
//! Flight `DoGet` through a format encoder to the client, batch by batch, so a table of
//! any size passes in bounded memory. The same tables are served over Arrow Flight to
//! programs (`--flight-listen`), behind the same tokens.

mod audit;
mod batches;
mod catalog;
mod downloads;
mod errors;
mod events;
mod health;
mod saved;

pub use audit::{__path_audit, AuditLog, AuditQuery, audit};
pub use batches::*;
pub use catalog::*;
pub use downloads::*;
pub use errors::*;
pub use events::*;
pub use health::*;
pub use saved::*;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Criteria, Ticket};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};
use xt_shared::BatchSpec;
use xt_shared::spec::Table;
use xt_wire::auth::Channel;
use xt_wire::batches_client::BatchesClient;
use xt_wire::{
    AuditLogRequest, AuditRequest, CancelRequest, DeleteRequest, ListRequest, StatsRequest,
    StatusReply, StatusRequest, SubmitRequest, UniversesRequest,
};

use crate::auth::{Caller, Role, Verifier};

/// Largest accepted request body.
pub const MAX_BODY: usize = 1 << 20;

/// How much of an oversized body is still read (and dropped) before the 413 goes out. A
/// server that answers while the client is still sending closes a socket with unread data,
/// the kernel resets it, and the client loses the answer; reading on lets an honest client
/// that sent too much see why. Beyond this the connection is simply closed.
const DRAIN_LIMIT: usize = 32 << 20;

#[derive(Clone)]
pub struct App {
    pub jobs: BatchesClient<Channel>,
    pub flight: FlightServiceClient<Channel>,
    pub verifier: Arc<Verifier>,
    /// Smallest gap between two progress events of one stream.
    pub event_interval: Duration,
}

impl App {
    pub fn new(channel: Channel, verifier: Verifier) -> Self {
        App {
            jobs: BatchesClient::new(channel.clone()),
            flight: FlightServiceClient::new(channel).max_decoding_message_size(256 << 20),
            verifier: Arc::new(verifier),
            event_interval: Duration::from_millis(250),
        }
    }
}

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "xTrading backtest cluster", description = "Submit batch backtests, follow them, download their results."),
    paths(submit, list, status, cancel, delete_results, events, results, strategies, save_strategy, get_strategy, delete_strategy, universes, audit, healthz, readyz, metrics),
    components(schemas(BatchSpec, ErrorBody, ErrorDetail, BatchStatus, Counts, Submitted, BatchList, StrategyInfo, ParamInfo, NewStrategy, SavedStrategy, Deleted, Universes, AuditLog)),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// The OpenAPI 3 document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

async fn fallback() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see /openapi.json",
    )
}

pub fn router(app: App) -> Router {
    Router::new()
        .route(
            "/v1/batches",
            get(list).post(submit).fallback(method_not_allowed),
        )
        .route(
            "/v1/batches/{id}",
            get(status).delete(cancel).fallback(method_not_allowed),
        )
        .route(
            "/v1/batches/{id}/events",
            get(events).fallback(method_not_allowed),
        )
        .route(
            "/v1/batches/{id}/results",
            axum::routing::delete(delete_results).fallback(method_not_allowed),
        )
        .route(
            "/v1/batches/{id}/results/{table}",
            get(results).fallback(method_not_allowed),
        )
        .route(
            "/v1/strategies",
            get(strategies)
                .post(save_strategy)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/strategies/{reference}",
            get(get_strategy)
                .delete(delete_strategy)
                .fallback(method_not_allowed),
        )
        .route("/v1/universes", get(universes).fallback(method_not_allowed))
        .route("/v1/audit", get(audit).fallback(method_not_allowed))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .fallback(fallback)
        // `submit` reads its body itself (see `read_limited`); the other routes take none.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            audit::record,
        ))
        .layer(axum::middleware::from_fn(bounded_head))
        .with_state(app)
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve_http(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    let service = hyper_util::service::TowerToHyperService::new(router(app));
    let mut builder = Builder::new(TokioExecutor::new());
    // The parser reads a head of up to READ_HEAD bytes, more than the API takes (MAX_HEAD):
    // an oversized header is then answered by the API, a 431 in its JSON shape, not by the
    // parser with an empty body.
    builder.http1().max_buf_size(READ_HEAD);
    builder.http2().max_header_list_size(READ_HEAD as u32);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // A failed accept (a client gone, out of descriptors for a moment) ends
                // that connection, not the server.
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service.clone());
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    // Requests under way are answered; event streams are cut after a grace period.
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

/// Largest request head (request line and headers) the API takes.
pub const MAX_HEAD: usize = 64 << 10;

/// Largest head the parser reads, so that one over [`MAX_HEAD`] reaches the API.
const READ_HEAD: usize = 2 << 20;

/// Refuses a request whose headers are over [`MAX_HEAD`] (431, RFC 6585 section 5).
async fn bounded_head(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + request.uri().to_string().len();
    if bytes > MAX_HEAD {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request's headers are {bytes} bytes; the API takes at most {MAX_HEAD}"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Lists the tables a Flight client may fetch: `tenant` empty for every tenant's.
pub fn flight_criteria(tenant: &str) -> Criteria {
    if tenant.is_empty() {
        Criteria::default()
    } else {
        Criteria {
            expression: json!({"tenant": tenant}).to_string().into(),
        }
    }
}
