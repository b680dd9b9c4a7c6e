//! The batch resource: submit (a body read within its limit), list, status and cancel, each
//! seeing only the caller's tenant.

use super::*;

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
    pub(super) counts: Counts,
    /// Bar evaluations (bars x parameter sets) so far.
    pub(super) bar_evaluations: u64,
    elapsed_seconds: f64,
    eta_seconds: f64,
    /// Once done: `jobs`, `failed` (jobs without a result: given up, or their data
    /// unreadable), `cancelled`; `portfolio`, per parameter set the portfolio's metrics
    /// against the benchmark; `best_params` and `best_parameter_sets` (by portfolio Sharpe,
    /// ties in grid order); `best_symbols` and `worst_symbols` of the best set;
    /// `benchmark`, its own metrics; `failures`, the failed jobs by reason with examples.
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

pub(super) fn rfc3339(ms: u64) -> String {
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
            bar_evaluations: s.bar_evaluations,
            elapsed_seconds: s.elapsed_seconds,
            eta_seconds: s.eta_seconds,
            summary: serde_json::from_str(&s.summary_json).ok(),
        }
    }
}

/// The status of a batch the caller may see; another tenant's is a 404 like a missing one.
pub(super) async fn visible(app: &App, caller: &Caller, id: u64) -> Result<StatusReply, ApiError> {
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
pub(super) async fn read_limited(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
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
pub async fn submit(
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
    if !value.is_object() {
        let kind = match &value {
            Value::Array(_) => "an array",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!(
                "the body must be a JSON object, a batch spec such as {{\"data\": \"file://cn\", \"strategy\": \"macd\"}}, not {kind}"
            ),
        ));
    }
    // A key given twice would otherwise be read as its last value, silently.
    if let Some(path) = crate::json::duplicate_key(&body) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{path} is given more than once"),
        )
        .field(path));
    }
    let spec: BatchSpec = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // An unknown field is named by serde; the path may name it already.
        let field = match inner.split('`').nth(1) {
            Some(name) if inner.starts_with("unknown field") => {
                if path == "." {
                    name.to_string()
                } else if path == name || path.ends_with(&format!(".{name}")) {
                    path
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
    r.extensions_mut().insert(audit::AuditTarget(reply.batch));
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
pub async fn list(
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
pub async fn status(
    State(app): State<App>,
    caller: Caller,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<BatchStatus>, ApiError> {
    let id = batch_id(id)?;
    Ok(Json(visible(&app, &caller, id).await?.into()))
}

pub(super) fn batch_id(
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
pub async fn cancel(
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

/// Delete a finished batch: its record, tables and summary (an admin's, audited). A batch
/// still running is a 409: cancel it first.
#[utoipa::path(delete, path = "/v1/batches/{id}/results", params(("id" = u64, Path, description = "Batch id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The batch has not finished", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete_results(
    State(app): State<App>,
    caller: Caller,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = batch_id(id)?;
    visible(&app, &caller, id).await?;
    require(&caller, Role::Admin)?;
    app.jobs
        .clone()
        .delete(DeleteRequest { batch: id })
        .await
        .map_err(ApiError::from_status)?;
    Ok(StatusCode::NO_CONTENT)
}
