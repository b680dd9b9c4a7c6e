//! The audit log: every state-changing request (submit, cancel, delete) and every refused token,
//! with who, tenant, what, when and the outcome, sent to the coordinator, which keeps it
//! with the batch state; and `GET /v1/audit`, a tenant's records for its admins.

use axum::extract::Request;
use axum::middleware::Next;

use super::*;

/// What a handler tells the audit log about the request it answered: the batch it made or
/// changed.
#[derive(Clone, Copy)]
pub(super) struct AuditTarget(pub(super) u64);

/// Why a request was refused, as its error body says (set by `ApiError::into_response`).
#[derive(Clone)]
pub(super) struct AuditOutcome {
    pub(super) code: &'static str,
    pub(super) message: String,
}

/// Records the request once answered when it changes state or its token was refused.
pub(super) async fn record(State(app): State<App>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let changes = !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS");
    // Kept, not checked: only a request that is recorded has its token read here.
    let header = request.headers().get(header::AUTHORIZATION).cloned();
    let response = next.run(request).await;
    let status = response.status();
    if !changes && status != StatusCode::UNAUTHORIZED {
        return response;
    }
    let caller = app
        .verifier
        .caller(header.as_ref().and_then(|h| h.to_str().ok()))
        .ok();
    let action = if status == StatusCode::UNAUTHORIZED {
        "token_refused"
    } else {
        match (method.as_str(), path.starts_with("/v1/batches/")) {
            ("POST", false) if path == "/v1/batches" => "submit",
            ("DELETE", true) if path.ends_with("/results") => "delete",
            ("DELETE", true) => "cancel",
            _ => "other",
        }
    };
    let outcome = response.extensions().get::<AuditOutcome>();
    let record = json!({
        "at": rfc3339(now_ms()),
        "who": caller.as_ref().map(|c| c.sub.clone()),
        "tenant": caller.as_ref().map(|c| c.tenant.clone()),
        "action": action,
        "method": method.as_str(),
        "path": path,
        "batch": response
            .extensions()
            .get::<AuditTarget>()
            .map(|t| t.0)
            .or_else(|| {
                let rest = path.strip_prefix("/v1/batches/")?;
                rest.split('/').next()?.parse::<u64>().ok()
            }),
        "status": status.as_u16(),
        "outcome": match outcome {
            None => "ok".to_string(),
            Some(o) => format!("{}: {}", o.code, o.message),
        },
    });
    tokio::spawn(send(app.jobs.clone(), record));
    response
}

/// Sends one record, retrying for about half a minute (an election, a restart); one that
/// cannot be stored is written to the log instead, never dropped silently.
async fn send(mut jobs: BatchesClient<Channel>, record: Value) {
    let record_json = record.to_string();
    let mut delay = Duration::from_millis(100);
    for _ in 0..9 {
        let sent = jobs
            .audit(AuditRequest {
                record_json: record_json.clone(),
            })
            .await;
        match sent {
            Ok(_) => return,
            Err(e) if e.code() == tonic::Code::InvalidArgument => break,
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    eprintln!("xt serve: audit record not stored, kept here: {record_json}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// At most this many records, newest first (1 to 10,000; default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditLog {
    /// Newest first: `at`, `who`, `tenant`, `action` (submit, cancel, token_refused),
    /// `method`, `path`, `batch`, `status`, `outcome`.
    records: Vec<Value>,
}

/// The caller's tenant's audit records (admins only).
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery),
    responses(
        (status = 200, body = AuditLog),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn audit(
    State(app): State<App>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditLog>, ApiError> {
    require(&caller, Role::Admin)?;
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit must be 1..=10000, got {limit}"),
        )
        .field("limit"));
    }
    let reply = app
        .jobs
        .clone()
        .audit_log(AuditLogRequest {
            tenant: caller.tenant.clone(),
            limit,
        })
        .await
        .map_err(ApiError::from_status)?
        .into_inner();
    let records = reply
        .records_json
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    Ok(Json(AuditLog { records }))
}
