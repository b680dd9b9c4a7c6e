//! Errors as clients see them: `{"error": {"code", "message", "field"}}` with its status,
//! from the coordinator's gRPC statuses and from bad requests; the caller's token and role
//! checks.

use super::*;

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
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub(super) fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub(super) fn not_found(id: u64) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no batch {id}"))
    }

    pub(super) fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A coordinator error as the client should see it. Invalid arguments carry
    /// `field: rule` messages (the `SpecError` form), so the field is split back out.
    pub(super) fn from_status(s: tonic::Status) -> Self {
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
        r.extensions_mut().insert(super::audit::AuditOutcome {
            code: self.code,
            message: self.message,
        });
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // No coordinator answered (or none leads, during an election): nothing was done,
        // and the same request may be sent again.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // A tenant at its limits: room comes back as its batches finish, so the same request
        // may succeed later (RFC 6585 4).
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
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

pub(super) fn require(caller: &Caller, role: Role) -> Result<(), ApiError> {
    if caller.role >= role {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this needs the {role:?} role; the token grants {:?}",
            caller.role
        )))
    }
}
