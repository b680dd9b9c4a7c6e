//! Saved strategies (`/v1/strategies`): a tenant's written strategies, saved as immutable
//! versions addressed by the hash of their source, listed beside the built-ins, fetched
//! and deleted by name (the newest version; for a delete, every version) or by hash. A
//! batch names one in its `strategy` field like a built-in.

use super::*;
use xt_wire::{
    DeleteStrategyRequest, GetStrategyRequest, ListStrategiesRequest, SaveStrategyRequest,
};

/// A strategy to save: its source in the strategy language.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStrategy {
    /// The source, starting with `strategy NAME` (docs/strategy-language.md).
    source: String,
}

/// A saved version of a written strategy.
#[derive(Serialize, ToSchema)]
pub struct SavedStrategy {
    name: String,
    /// `sha256:` and the hex digest of the source: this version's identity.
    hash: String,
    source: String,
    owner: String,
    /// RFC 3339, UTC.
    saved: String,
    params: Vec<ParamInfo>,
    rules: String,
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// Versions deleted.
    deleted: u32,
}

impl SavedStrategy {
    fn from_json(json: &str) -> Result<Self, ApiError> {
        #[derive(Deserialize)]
        struct Stored {
            name: String,
            hash: String,
            source: String,
            owner: String,
            saved_ms: u64,
        }
        let s: Stored = serde_json::from_str(json).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("a saved strategy: {e}"),
            )
        })?;
        let (params, rules) = match xt_shared::lang::Script::compile(&s.source) {
            Ok(script) => (script_params(&script), script.rules()),
            Err(_) => (Vec::new(), String::new()),
        };
        Ok(SavedStrategy {
            name: s.name,
            hash: s.hash,
            source: s.source,
            owner: s.owner,
            saved: rfc3339(s.saved_ms),
            params,
            rules,
        })
    }

    /// The strategy as the catalog lists it.
    pub(super) fn info(self) -> StrategyInfo {
        StrategyInfo {
            name: self.name,
            kind: "saved".into(),
            hash: Some(self.hash),
            params: self.params,
            rules: self.rules,
        }
    }
}

/// A written strategy's parameters as the catalog shows them (`int` as `integer`).
pub(super) fn script_params(script: &xt_shared::lang::Script) -> Vec<ParamInfo> {
    script
        .params()
        .iter()
        .zip(script.ranges())
        .map(|(p, range)| ParamInfo {
            name: p.name.to_string(),
            r#type: if p.kind == xt_shared::strategy::ParamKind::Number {
                "number".into()
            } else {
                "integer".into()
            },
            default: p.default,
            minimum: range.map(|r| r.0),
            maximum: range.map(|r| r.1),
        })
        .collect()
}

/// The caller's tenant's saved strategies, newest version first within a name.
pub(super) async fn saved_list(app: &App, caller: &Caller) -> Result<Vec<StrategyInfo>, ApiError> {
    let reply = app
        .jobs
        .clone()
        .list_strategies(ListStrategiesRequest {
            tenant: caller.tenant.clone(),
        })
        .await
        .map_err(ApiError::from_status)?
        .into_inner();
    reply
        .strategy_json
        .iter()
        .map(|j| SavedStrategy::from_json(j).map(SavedStrategy::info))
        .collect()
}

/// Saves a written strategy for the caller's tenant after compiling it; an error names the
/// line and column. Saving a version already saved returns it.
#[utoipa::path(post, path = "/v1/strategies", request_body = NewStrategy,
    responses(
        (status = 201, description = "Saved (or already saved)", body = SavedStrategy),
        (status = 400, description = "The body could not be read", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "The source does not compile: `field` is `source`, the message names line and column", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn save_strategy(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(&caller, Role::Researcher)?;
    let body = read_limited(&headers, body).await?;
    let new: NewStrategy = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("the body must be {{\"source\": \"strategy NAME ...\"}}: {e}"),
        )
    })?;
    let reply = app
        .jobs
        .clone()
        .save_strategy(SaveStrategyRequest {
            tenant: caller.tenant.clone(),
            owner: caller.sub.clone(),
            source: new.source,
        })
        .await
        .map_err(ApiError::from_status)?
        .into_inner();
    let saved = SavedStrategy::from_json(&reply.strategy_json)?;
    let location = format!("/v1/strategies/{}", saved.hash);
    let mut r = (StatusCode::CREATED, Json(saved)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// A saved strategy of the caller's tenant: by name its newest version, or by hash.
#[utoipa::path(get, path = "/v1/strategies/{reference}",
    params(("reference" = String, Path, description = "A saved strategy's name or hash")),
    responses((status = 200, body = SavedStrategy), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_strategy(
    State(app): State<App>,
    caller: Caller,
    Path(reference): Path<String>,
) -> Result<Json<SavedStrategy>, ApiError> {
    let reply = app
        .jobs
        .clone()
        .get_strategy(GetStrategyRequest {
            tenant: caller.tenant.clone(),
            reference,
        })
        .await
        .map_err(ApiError::from_status)?
        .into_inner();
    Ok(Json(SavedStrategy::from_json(&reply.strategy_json)?))
}

/// Deletes a saved strategy of the caller's tenant: by name every version, by hash one.
/// Batches that ran it keep its source.
#[utoipa::path(delete, path = "/v1/strategies/{reference}",
    params(("reference" = String, Path, description = "A saved strategy's name or hash")),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_strategy(
    State(app): State<App>,
    caller: Caller,
    Path(reference): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    require(&caller, Role::Researcher)?;
    let reply = app
        .jobs
        .clone()
        .delete_strategy(DeleteStrategyRequest {
            tenant: caller.tenant.clone(),
            reference,
        })
        .await
        .map_err(ApiError::from_status)?
        .into_inner();
    Ok(Json(Deleted {
        deleted: reply.deleted,
    }))
}
