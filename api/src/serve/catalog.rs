//! What a client may name in a spec: the built-in strategies with their parameters, and the
//! universes under the data roots.

use super::*;

#[derive(Serialize, ToSchema)]
pub struct StrategyInfo {
    pub(super) name: String,
    /// `builtin`, or `saved` (a written strategy of the caller's tenant).
    pub(super) kind: String,
    /// A saved strategy's version (`sha256:...`); null for a built-in.
    #[schema(nullable)]
    pub(super) hash: Option<String>,
    pub(super) params: Vec<ParamInfo>,
    /// Rules between parameters (`fast < slow`); empty when there are none.
    pub(super) rules: String,
}

#[derive(Serialize, ToSchema)]
pub struct ParamInfo {
    pub(super) name: String,
    /// `integer` (a period, or a written strategy's `int`) or `number`.
    pub(super) r#type: String,
    pub(super) default: f64,
    #[schema(nullable)]
    pub(super) minimum: Option<f64>,
    #[schema(nullable)]
    pub(super) maximum: Option<f64>,
}

/// The built-in strategies, then the caller's tenant's saved ones: their parameters,
/// defaults and bounds.
#[utoipa::path(get, path = "/v1/strategies", responses((status = 200, body = Vec<StrategyInfo>), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn strategies(
    State(app): State<App>,
    caller: Caller,
) -> Result<Json<Vec<StrategyInfo>>, ApiError> {
    use xt_shared::strategy::{CATALOG, MAX_PERIOD, ParamKind};
    let mut all: Vec<StrategyInfo> = CATALOG
        .iter()
        .map(|s| StrategyInfo {
            name: s.name.into(),
            kind: "builtin".into(),
            hash: None,
            rules: s.rules.into(),
            params: s
                .params
                .iter()
                .map(|p| match p.kind {
                    ParamKind::Period => ParamInfo {
                        name: p.name.to_string(),
                        r#type: "integer".into(),
                        default: p.default,
                        minimum: Some(1.0),
                        maximum: Some(MAX_PERIOD),
                    },
                    ParamKind::Integer => ParamInfo {
                        name: p.name.to_string(),
                        r#type: "integer".into(),
                        default: p.default,
                        minimum: None,
                        maximum: None,
                    },
                    ParamKind::Number => ParamInfo {
                        name: p.name.to_string(),
                        r#type: "number".into(),
                        default: p.default,
                        minimum: None,
                        maximum: None,
                    },
                })
                .collect(),
        })
        .collect();
    all.extend(super::saved::saved_list(&app, &caller).await?);
    Ok(Json(all))
}

#[derive(Serialize, ToSchema)]
pub struct Universes {
    /// Universe files under the service's data roots, as `{"universe": {"file": ...}}` takes
    /// them (relative to the data directory they sit in, or to the root).
    files: Vec<String>,
}

/// The universe files the service knows.
#[utoipa::path(get, path = "/v1/universes", responses((status = 200, body = Universes), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn universes(
    State(app): State<App>,
    _caller: Caller,
) -> Result<Json<Universes>, ApiError> {
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
