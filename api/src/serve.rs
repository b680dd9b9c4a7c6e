//! The HTTP API (`xt serve`): a thin axum service in front of a coordinator. Everything it
//! knows it asks the coordinator over gRPC; result tables stream from the coordinator's
//! Flight `DoGet` through a format encoder to the client, batch by batch, so a table of
//! any size passes in bounded memory. The same tables are served over Arrow Flight to
//! programs (`--flight-listen`), behind the same tokens.

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
use tonic::transport::Channel;
use utoipa::{IntoParams, OpenApi, ToSchema};
use xt_shared::BatchSpec;
use xt_shared::spec::Table;
use xt_wire::jobs_client::JobsClient;
use xt_wire::{
    CancelRequest, ListRequest, StatsRequest, StatusReply, StatusRequest, SubmitRequest,
    UniversesRequest,
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
    pub jobs: JobsClient<Channel>,
    pub flight: FlightServiceClient<Channel>,
    pub verifier: Arc<Verifier>,
    /// Smallest gap between two progress events of one stream.
    pub event_interval: Duration,
}

impl App {
    pub fn new(channel: Channel, verifier: Verifier) -> Self {
        App {
            jobs: JobsClient::new(channel.clone()),
            flight: FlightServiceClient::new(channel).max_decoding_message_size(256 << 20),
            verifier: Arc::new(verifier),
            event_interval: Duration::from_millis(250),
        }
    }
}

/// Every error the API returns: `{"error": {"code", "message", "field"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code (`invalid_field`, `not_found`, `unauthorized`, ...).
    code: String,
    message: String,
    /// The request field at fault, dotted (`grid.fast`), when there is one.
    #[schema(nullable)]
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    fn not_found(id: u64) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no batch {id}"))
    }

    fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A coordinator error as the client should see it. Invalid arguments carry
    /// `field: rule` messages (the `SpecError` form), so the field is split back out.
    fn from_status(s: tonic::Status) -> Self {
        use tonic::Code;
        let message = s.message().to_string();
        match s.code() {
            Code::InvalidArgument => {
                let (field, rule) = message
                    .split_once(": ")
                    .filter(|(f, _)| !f.contains(' '))
                    .map_or((None, message.clone()), |(f, r)| {
                        (Some(f.to_string()), r.to_string())
                    });
                let mut e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", rule);
                e.field = field;
                e
            }
            Code::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            Code::ResourceExhausted => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "limit_exceeded", message)
            }
            Code::FailedPrecondition => ApiError::new(StatusCode::CONFLICT, "not_ready", message),
            _ => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "coordinator_unavailable",
                format!("the coordinator did not answer: {message}"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "field": self.field}});
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        app.verifier
            .caller(header)
            .map_err(|m| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m))
    }
}

fn require(caller: &Caller, role: Role) -> Result<(), ApiError> {
    if caller.role >= role {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this needs the {role:?} role; the token grants {:?}",
            caller.role
        )))
    }
}

/// A batch as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct BatchStatus {
    id: u64,
    #[schema(nullable)]
    name: Option<String>,
    tenant: String,
    owner: String,
    /// RFC 3339, UTC.
    submitted: String,
    /// `running` until every job has ended, then `done` (or `cancelled`).
    state: String,
    jobs: u32,
    counts: Counts,
    /// Bar evaluations (bars x parameter sets) so far.
    bars: u64,
    elapsed_seconds: f64,
    eta_seconds: f64,
    /// Once done: jobs, failures, and per parameter set the portfolio's metrics against
    /// the benchmark.
    #[schema(value_type = Option<Object>, nullable)]
    summary: Option<Value>,
}

#[derive(Serialize, ToSchema, PartialEq, Clone, Copy)]
pub struct Counts {
    queued: u32,
    running: u32,
    done: u32,
    failed: u32,
    cancelled: u32,
}

fn rfc3339(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let date = xt_shared::date::format_date(days as i32);
    format!(
        "{date}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl From<StatusReply> for BatchStatus {
    fn from(s: StatusReply) -> Self {
        let state = if !s.finished {
            "running"
        } else if s.cancelled > 0 {
            "cancelled"
        } else {
            "done"
        };
        BatchStatus {
            id: s.batch,
            name: (!s.name.is_empty()).then(|| s.name.clone()),
            tenant: s.tenant.clone(),
            owner: s.owner.clone(),
            submitted: rfc3339(s.submitted_ms),
            state: state.into(),
            jobs: s.jobs,
            counts: Counts {
                queued: s.queued,
                running: s.running,
                done: s.done,
                failed: s.failed,
                cancelled: s.cancelled,
            },
            bars: s.bars,
            elapsed_seconds: s.elapsed_seconds,
            eta_seconds: s.eta_seconds,
            summary: serde_json::from_str(&s.summary_json).ok(),
        }
    }
}

/// The status of a batch the caller may see; another tenant's is a 404 like a missing one.
async fn visible(app: &App, caller: &Caller, id: u64) -> Result<StatusReply, ApiError> {
    let s = app
        .jobs
        .clone()
        .status(StatusRequest {
            batch: id,
            wait_ms: 0,
        })
        .await
        .map_err(|e| match e.code() {
            tonic::Code::NotFound => ApiError::not_found(id),
            _ => ApiError::from_status(e),
        })?
        .into_inner();
    if caller.sees(&s.tenant) {
        Ok(s)
    } else {
        Err(ApiError::not_found(id))
    }
}

#[derive(Serialize, ToSchema)]
pub struct Submitted {
    id: u64,
    jobs: u32,
    /// Where the batch's status is.
    location: String,
}

/// Reads a request body of at most [`MAX_BODY`] bytes; a larger one is a 413 with the limit
/// named, answered after the rest is drained (up to [`DRAIN_LIMIT`]).
async fn read_limited(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body must be at most {MAX_BODY} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut kept = Vec::with_capacity(declared.unwrap_or(0).min(MAX_BODY));
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                format!("the request body could not be read: {e}"),
            )
        })?;
        seen += chunk.len();
        if seen <= MAX_BODY {
            kept.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > MAX_BODY {
        return Err(too_large());
    }
    Ok(Bytes::from(kept))
}

/// Submit a batch.
#[utoipa::path(post, path = "/v1/batches", request_body = BatchSpec,
    responses(
        (status = 202, description = "Accepted and queued", body = Submitted),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role cannot submit", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
        (status = 429, description = "The tenant is at its limits", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn submit(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(&caller, Role::Researcher)?;
    let body = read_limited(&headers, body).await?;
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let spec: BatchSpec = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // An unknown field is named by serde itself; point at it.
        let field = match inner.split('`').nth(1) {
            Some(name) if inner.starts_with("unknown field") => {
                if path == "." {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                }
            }
            _ if path == "." => String::new(),
            _ => path,
        };
        let e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", inner);
        if field.is_empty() { e } else { e.field(field) }
    })?;
    let reply = app
        .jobs
        .clone()
        .submit(SubmitRequest {
            spec_json: serde_json::to_string(&spec).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    e.to_string(),
                )
            })?,
            tenant: caller.tenant.clone(),
            owner: caller.sub.clone(),
        })
        .await
        .map_err(ApiError::from_status)?
        .into_inner();
    let location = format!("/v1/batches/{}", reply.batch);
    let mut r = (
        StatusCode::ACCEPTED,
        Json(Submitted {
            id: reply.batch,
            jobs: reply.jobs,
            location: location.clone(),
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Batches to skip (newest first).
    #[param(minimum = 0, maximum = 1000000)]
    offset: Option<u32>,
    /// At most this many (1..=1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchList {
    batches: Vec<BatchStatus>,
    /// Batches in all pages.
    total: u32,
    offset: u32,
    limit: u32,
}

/// The caller's batches, newest first (an admin's: every tenant's).
#[utoipa::path(get, path = "/v1/batches", params(Page),
    responses(
        (status = 200, body = BatchList),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn list(
    State(app): State<App>,
    caller: Caller,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BatchList>, ApiError> {
    let Query(page) =
        page.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let offset = page.offset.unwrap_or(0);
    let limit = page.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "limit must be 1..=1000",
        )
        .field("limit"));
    }
    let tenant = if caller.role == Role::Admin {
        String::new()
    } else {
        caller.tenant.clone()
    };
    let reply = app
        .jobs
        .clone()
        .list(ListRequest {
            tenant,
            offset,
            limit,
        })
        .await
        .map_err(ApiError::from_status)?
        .into_inner();
    Ok(Json(BatchList {
        batches: reply.batches.into_iter().map(BatchStatus::from).collect(),
        total: reply.total,
        offset,
        limit,
    }))
}

/// One batch: state, counts, progress and, when done, its metrics.
#[utoipa::path(get, path = "/v1/batches/{id}", params(("id" = u64, Path, description = "Batch id")),
    responses(
        (status = 200, body = BatchStatus),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such batch visible to the caller", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn status(
    State(app): State<App>,
    caller: Caller,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<BatchStatus>, ApiError> {
    let id = batch_id(id)?;
    Ok(Json(visible(&app, &caller, id).await?.into()))
}

fn batch_id(
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<u64, ApiError> {
    id.map(|Path(id)| id).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!("the batch id must be a whole number: {}", e.body_text()),
        )
        .field("id")
    })
}

/// Cancel a batch: queued jobs are dropped, running ones told on their next heartbeat.
#[utoipa::path(delete, path = "/v1/batches/{id}", params(("id" = u64, Path, description = "Batch id")),
    responses(
        (status = 202, description = "Cancelling", body = BatchStatus),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not the caller's to cancel", body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn cancel(
    State(app): State<App>,
    caller: Caller,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<(StatusCode, Json<BatchStatus>), ApiError> {
    let id = batch_id(id)?;
    let s = visible(&app, &caller, id).await?;
    require(&caller, Role::Researcher)?;
    if caller.role != Role::Admin && s.owner != caller.sub {
        return Err(ApiError::forbidden(format!(
            "batch {id} belongs to {}; a researcher cancels only their own",
            s.owner
        )));
    }
    app.jobs
        .clone()
        .cancel(CancelRequest { batch: id })
        .await
        .map_err(ApiError::from_status)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(visible(&app, &caller, id).await?.into()),
    ))
}

/// Progress as server-sent events: a `progress` event whenever the counts change (at most
/// one per 250 ms), then a `done` event with the final status and summary.
#[utoipa::path(get, path = "/v1/batches/{id}/events", params(("id" = u64, Path, description = "Batch id")),
    responses(
        (status = 200, description = "An event stream of BatchStatus objects", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn events(
    State(app): State<App>,
    caller: Caller,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = batch_id(id)?;
    let first = visible(&app, &caller, id).await?;
    let stream = async_stream::stream! {
        let mut last: Option<(Counts, u64)> = None;
        let mut current = first;
        loop {
            let status = BatchStatus::from(current.clone());
            let key = (status.counts, status.bars);
            if current.finished {
                yield Ok(Event::default().event("done").json_data(&status).unwrap_or_default());
                break;
            }
            if last != Some(key) {
                last = Some(key);
                yield Ok(Event::default().event("progress").json_data(&status).unwrap_or_default());
            }
            // Answered after the interval, or at once when the batch finishes.
            let wait_ms = app.event_interval.as_millis().min(u32::MAX as u128) as u32;
            match app.jobs.clone().status(StatusRequest { batch: id, wait_ms }).await {
                Ok(r) => current = r.into_inner(),
                Err(e) => {
                    let body = json!({"error": {"code": "coordinator_unavailable", "message": e.message(), "field": null}});
                    yield Ok(Event::default().event("error").data(body.to_string()));
                    break;
                }
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Download {
    /// `parquet` (default), `arrow` (IPC stream), `csv` or `json` (an array of rows).
    format: Option<String>,
    /// Only this symbol's rows (metrics, trades, equity).
    symbol: Option<String>,
    /// Only this parameter set's rows, as its canonical JSON (`{"fast":12,"signal":9,"slow":26}`).
    params: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Parquet,
    Arrow,
    Csv,
    Json,
}

/// One result table of a finished batch, streamed.
#[utoipa::path(get, path = "/v1/batches/{id}/results/{table}",
    params(("id" = u64, Path, description = "Batch id"), ("table" = String, Path, description = "metrics, trades, equity or portfolio"), Download),
    responses(
        (status = 200, description = "The table in the asked format", content_type = "application/octet-stream", body = String),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The batch has not finished", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn results(
    State(app): State<App>,
    caller: Caller,
    path: Result<Path<(u64, String)>, axum::extract::rejection::PathRejection>,
    query: Result<Query<Download>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((id, table)) = path.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text()).field("id")
    })?;
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let Some(table) = Table::parse(&table) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no table {table:?}; tables are metrics, trades, equity, portfolio"),
        )
        .field("table"));
    };
    let format = match q.format.as_deref().unwrap_or("parquet") {
        "parquet" => Format::Parquet,
        "arrow" => Format::Arrow,
        "csv" => Format::Csv,
        "json" => Format::Json,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("format {other:?} is not parquet, arrow, csv or json"),
            )
            .field("format"));
        }
    };
    if q.symbol.is_some() && table == Table::Portfolio {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "the portfolio table has no symbol column",
        )
        .field("symbol"));
    }
    let status = visible(&app, &caller, id).await?;
    if !status.finished {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!("batch {id} has not finished; its tables are written when it has"),
        ));
    }
    let ticket = Ticket::new(format!("{id}/{}", table.name()));
    let data = app
        .flight
        .clone()
        .do_get(ticket)
        .await
        .map_err(ApiError::from_status)?
        .into_inner();
    let batches = FlightRecordBatchStream::new_from_flight_data(
        data.map_err(arrow_flight::error::FlightError::from),
    );
    let filters = (q.symbol, q.params);
    let filtered = batches
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(move |b| {
            let r = filter(&b, &filters).map_err(|e| std::io::Error::other(e.to_string()));
            async move { r }
        });
    let (content_type, ext) = match format {
        Format::Parquet => ("application/vnd.apache.parquet", "parquet"),
        Format::Arrow => ("application/vnd.apache.arrow.stream", "arrow"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Json => ("application/json", "json"),
    };
    let body = Body::from_stream(encode(format, filtered.boxed()));
    let disposition = format!("attachment; filename=\"batch-{id}-{}.{ext}\"", table.name());
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// Keeps the rows matching the `symbol=` and `params=` filters.
fn filter(
    b: &RecordBatch,
    (symbol, params): &(Option<String>, Option<String>),
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut keep: Option<BooleanArray> = None;
    for (column, value) in [("symbol", symbol), ("params", params)] {
        let Some(value) = value else { continue };
        let Some(col) = b.column_by_name(column) else {
            continue;
        };
        let col = col.as_string::<i32>();
        let mask: BooleanArray = (0..col.len())
            .map(|i| Some(col.is_valid(i) && col.value(i) == value))
            .collect();
        keep = Some(match keep {
            None => mask,
            Some(k) => arrow::compute::and(&k, &mask)?,
        });
    }
    match keep {
        None => Ok(b.clone()),
        Some(k) => arrow::compute::filter_record_batch(b, &k),
    }
}

type Batches = futures::stream::BoxStream<'static, Result<RecordBatch, std::io::Error>>;

/// A writer whose bytes are taken out after each record batch.
#[derive(Clone, Default)]
struct Chunks(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Chunks {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(
            &mut *self.0.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// Encodes record batches as they arrive; each yields the bytes it produced.
fn encode(
    format: Format,
    mut batches: Batches,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let io = |e: arrow::error::ArrowError| std::io::Error::other(e.to_string());
    async_stream::try_stream! {
        let out = Chunks::default();
        let Some(first) = batches.next().await.transpose()? else {
            return;
        };
        let schema = first.schema();
        match format {
            Format::Arrow => {
                let mut w = arrow::ipc::writer::StreamWriter::try_new(out.clone(), &schema).map_err(io)?;
                w.write(&first).map_err(io)?;
                yield out.take();
                while let Some(b) = batches.next().await.transpose()? {
                    w.write(&b).map_err(io)?;
                    yield out.take();
                }
                w.finish().map_err(io)?;
                yield out.take();
            }
            Format::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .build();
                let mut w = parquet::arrow::ArrowWriter::try_new(out.clone(), schema, Some(props))
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                w.write(&first).map_err(|e| std::io::Error::other(e.to_string()))?;
                // One row group per incoming batch: memory stays at one batch.
                w.flush().map_err(|e| std::io::Error::other(e.to_string()))?;
                yield out.take();
                while let Some(b) = batches.next().await.transpose()? {
                    w.write(&b).map_err(|e| std::io::Error::other(e.to_string()))?;
                    w.flush().map_err(|e| std::io::Error::other(e.to_string()))?;
                    yield out.take();
                }
                w.close().map_err(|e| std::io::Error::other(e.to_string()))?;
                yield out.take();
            }
            Format::Csv => {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(out.clone());
                w.write(&first).map_err(io)?;
                yield out.take();
                while let Some(b) = batches.next().await.transpose()? {
                    w.write(&b).map_err(io)?;
                    yield out.take();
                }
            }
            Format::Json => {
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::JsonArray>(out.clone());
                w.write(&first).map_err(io)?;
                yield out.take();
                while let Some(b) = batches.next().await.transpose()? {
                    w.write(&b).map_err(io)?;
                    yield out.take();
                }
                w.finish().map_err(io)?;
                yield out.take();
            }
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct StrategyInfo {
    name: String,
    params: Vec<ParamInfo>,
    /// Rules between parameters (`fast < slow`); empty when there are none.
    rules: String,
}

#[derive(Serialize, ToSchema)]
pub struct ParamInfo {
    name: String,
    /// `integer` (a period) or `number`.
    r#type: String,
    default: f64,
    #[schema(nullable)]
    minimum: Option<f64>,
    #[schema(nullable)]
    maximum: Option<f64>,
}

/// The built-in strategies: their parameters, defaults and bounds.
#[utoipa::path(get, path = "/v1/strategies", responses((status = 200, body = Vec<StrategyInfo>), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
async fn strategies(_caller: Caller) -> Json<Vec<StrategyInfo>> {
    use xt_shared::strategy::{CATALOG, MAX_PERIOD, ParamKind};
    Json(
        CATALOG
            .iter()
            .map(|s| StrategyInfo {
                name: s.name.into(),
                rules: s.rules.into(),
                params: s
                    .params
                    .iter()
                    .map(|p| match p.kind {
                        ParamKind::Period => ParamInfo {
                            name: p.name.into(),
                            r#type: "integer".into(),
                            default: p.default,
                            minimum: Some(1.0),
                            maximum: Some(MAX_PERIOD),
                        },
                        ParamKind::Number => ParamInfo {
                            name: p.name.into(),
                            r#type: "number".into(),
                            default: p.default,
                            minimum: None,
                            maximum: None,
                        },
                    })
                    .collect(),
            })
            .collect(),
    )
}

#[derive(Serialize, ToSchema)]
pub struct Universes {
    /// Universe files under the service's data roots, as `{"universe": {"file": ...}}` takes
    /// them (relative to the data directory they sit in, or to the root).
    files: Vec<String>,
}

/// The universe files the service knows.
#[utoipa::path(get, path = "/v1/universes", responses((status = 200, body = Universes), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
async fn universes(State(app): State<App>, _caller: Caller) -> Result<Json<Universes>, ApiError> {
    let files = app
        .jobs
        .clone()
        .universes(UniversesRequest {})
        .await
        .map_err(ApiError::from_status)?
        .into_inner()
        .files;
    Ok(Json(Universes { files }))
}

/// Alive.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "The process answers", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the coordinator answers.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = String), (status = 503, body = String)))]
async fn readyz(State(app): State<App>) -> (StatusCode, &'static str) {
    match app.jobs.clone().stats(StatsRequest {}).await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the coordinator does not answer\n",
        ),
    }
}

/// Prometheus metrics: jobs by state, queue depth, workers, job durations, bars.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", body = String), (status = 503, body = String)))]
async fn metrics(State(app): State<App>) -> Response {
    let s = match app.jobs.clone().stats(StatsRequest {}).await {
        Ok(s) => s.into_inner(),
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the coordinator does not answer: {}\n", e.message()),
            )
                .into_response();
        }
    };
    let mut out = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP xt_jobs Jobs of all batches by state.\n# TYPE xt_jobs gauge"
    );
    for (state, n) in [
        ("queued", s.queued),
        ("running", s.running),
        ("done", s.done),
        ("failed", s.failed),
        ("cancelled", s.cancelled),
    ] {
        let _ = writeln!(out, "xt_jobs{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP xt_queue_depth Jobs waiting for a worker.\n# TYPE xt_queue_depth gauge\nxt_queue_depth {}",
        s.queued
    );
    let _ = writeln!(
        out,
        "# HELP xt_workers Registered workers.\n# TYPE xt_workers gauge\nxt_workers {}",
        s.workers
    );
    let _ = writeln!(
        out,
        "# HELP xt_batches Batches known, and those not finished.\n# TYPE xt_batches gauge\nxt_batches{{state=\"all\"}} {}\nxt_batches{{state=\"running\"}} {}",
        s.batches, s.batches_running
    );
    let _ = writeln!(
        out,
        "# HELP xt_bars_total Bar evaluations (bars x parameter sets) completed; its rate is bars per second.\n# TYPE xt_bars_total counter\nxt_bars_total {}",
        s.bars
    );
    let _ = writeln!(
        out,
        "# HELP xt_job_duration_seconds How long jobs ran on workers.\n# TYPE xt_job_duration_seconds histogram"
    );
    for (b, c) in s.duration_bounds.iter().zip(&s.duration_counts) {
        let _ = writeln!(out, "xt_job_duration_seconds_bucket{{le=\"{b}\"}} {c}");
    }
    let _ = writeln!(
        out,
        "xt_job_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        s.duration_count
    );
    let _ = writeln!(
        out,
        "xt_job_duration_seconds_sum {}\nxt_job_duration_seconds_count {}",
        s.duration_sum, s.duration_count
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
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
    paths(submit, list, status, cancel, events, results, strategies, universes, healthz, readyz, metrics),
    components(schemas(BatchSpec, ErrorBody, ErrorDetail, BatchStatus, Counts, Submitted, BatchList, StrategyInfo, ParamInfo, Universes)),
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
            "/v1/batches/{id}/results/{table}",
            get(results).fallback(method_not_allowed),
        )
        .route(
            "/v1/strategies",
            get(strategies).fallback(method_not_allowed),
        )
        .route("/v1/universes", get(universes).fallback(method_not_allowed))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .fallback(fallback)
        // `submit` reads its body itself (see `read_limited`); the other routes take none.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve_http(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
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
