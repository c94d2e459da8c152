//! IC tokens: `/v1/projects/{project}/tokens` (mint, list) and `/v1/tokens` (list, get,
//! revoke).

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiBytes, ApiQuery, Caller, PageQuery, parse_json};
use super::views::{List, MintedToken, TokenView, time};
use super::{project_filter, scoped_project};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::{Period, TokenRecord};
use crate::service::MintRequest;
use crate::validate::{Name, Ttl, UsdAmount};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintToken {
    /// A label, same rules as project names.
    #[schema(value_type = Option<String>, example = "ci")]
    pub name: Option<Name>,
    /// The token's own budget in USD (on top of the project's).
    #[schema(value_type = Option<String>, example = "5")]
    pub budget_usd: Option<UsdAmount>,
    pub period: Option<Period>,
    /// Lifetime such as `30m`, `12h`, `7d` (default 30d, at most 366d).
    #[schema(value_type = Option<String>, example = "7d")]
    pub ttl: Option<Ttl>,
    /// The token's own limits `{"rpm":n,"tpm":n}` (also carried in the token as claims);
    /// the project's limits apply as well, the stricter wins.
    pub rate_limits: Option<super::ratelimits::RateLimitsInput>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Only tokens of this project (id or name).
    pub project: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[utoipa::path(post, path = "/v1/projects/{project}/tokens", tag = "tokens", request_body = MintToken,
    params(("project" = String, Path, description = "Project id or name")),
    security(("api_key" = [])),
    responses((status = 201, body = MintedToken), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn mint_token(
    State(s): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<MintedToken>), ApiError> {
    // Authorize against the project before looking at the body.
    let project = scoped_project(&s.svc, &caller, &project).await?;
    let body: MintToken = parse_json(&body)?;
    let rate_limits = match &body.rate_limits {
        Some(input) => input.apply(iron_core::ratelimit::RateLimits::NONE)?,
        None => iron_core::ratelimit::RateLimits::NONE,
    };
    let req = MintRequest {
        rate_limits,
        name: body.name.map(Name::into_string),
        budget: body.budget_usd.map(|u| u.0),
        period: body.period,
        ttl: body.ttl.map(|t| t.0).unwrap_or(crate::service::DEFAULT_TTL),
    };
    let (rec, token) = s.svc.mint_token(&caller.actor(), &project, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(MintedToken {
            id: rec.id,
            token: token.as_str().to_owned(),
            project: project.id,
            project_name: project.name,
            name: rec.name,
            expires_at: time(rec.expires_at),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/projects/{project}/tokens", tag = "tokens",
    params(("project" = String, Path, description = "Project id or name"), PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = List<TokenView>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_project_tokens(
    State(s): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<List<TokenView>>, ApiError> {
    let page = q.page()?;
    let project = scoped_project(&s.svc, &caller, &project).await?;
    let page = s.svc.store.list_tokens(Some(&project.id), &page).await?;
    let stats = s.svc.token_stats(&project.id).await?;
    Ok(Json(List {
        data: page
            .items
            .into_iter()
            .map(|t| {
                let st = stats.get(&t.id);
                TokenView::from(t).with_stats(st)
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", params(TokenQuery),
    security(("api_key" = [])),
    responses((status = 200, body = List<TokenView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_tokens(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TokenQuery>,
) -> Result<Json<List<TokenView>>, ApiError> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .page()?;
    let project = project_filter(&s.svc, &caller, q.project.as_deref()).await?;
    let page = s.svc.store.list_tokens(project.as_deref(), &page).await?;
    Ok(Json(List {
        data: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A token the caller may see (project keys: own project only, others read as missing).
async fn visible_token(s: &AppState, caller: &Caller, id: &str) -> Result<TokenRecord, ApiError> {
    let t = s.svc.get_token(id).await?;
    match caller.project_scope() {
        Some(own) if own != t.project_id => Err(ApiError::not_found(format!(
            "token `{}` not found",
            crate::service::shown(id)
        ))),
        _ => Ok(t),
    }
}

#[utoipa::path(get, path = "/v1/tokens/{token}", tag = "tokens",
    params(("token" = String, Path, description = "Token id (tok_…)")),
    security(("api_key" = [])),
    responses((status = 200, body = TokenView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_token(
    State(s): State<AppState>,
    caller: Caller,
    Path(token): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    Ok(Json(visible_token(&s, &caller, &token).await?.into()))
}

#[utoipa::path(delete, path = "/v1/tokens/{token}", tag = "tokens",
    params(("token" = String, Path, description = "Token id (tok_…)")),
    security(("api_key" = [])),
    responses((status = 200, description = "Revoked (idempotent)", body = TokenView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(s): State<AppState>,
    caller: Caller,
    Path(token): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    let t = visible_token(&s, &caller, &token).await?;
    Ok(Json(s.svc.revoke_token(&caller.actor(), &t).await?.into()))
}
