//! `/v1/providers`: provider deployments. Keys are write-only: responses show them masked.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use iron_core::wire::ProviderKind;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{Admin, ApiJson, ApiQuery, GlobalReader, PageQuery};
use super::views::{Deleted, List, ProviderView};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::service::NewProvider;
use crate::validate::{ModelPatterns, Name, ProviderKeyInput};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    #[schema(value_type = String, example = "openai")]
    pub name: Name,
    /// `openai`, `anthropic`, `openai-compatible` or `azure-openai`.
    #[schema(value_type = String, example = "openai")]
    pub kind: ProviderKind,
    /// https URL without `/v1` (a trailing `/v1` is removed).
    #[schema(example = "https://api.openai.com")]
    pub base_url: String,
    /// The provider's API key. Write-only: never returned.
    #[schema(value_type = String, example = "sk-…")]
    pub api_key: ProviderKeyInput,
    /// Model glob patterns served (default `*`).
    #[schema(value_type = Option<Vec<String>>)]
    pub models: Option<ModelPatterns>,
    /// Higher wins among healthy deployments of a family (default 0).
    pub priority: Option<i32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchProvider {
    pub base_url: Option<String>,
    #[schema(value_type = Option<Vec<String>>)]
    pub models: Option<ModelPatterns>,
    pub priority: Option<i32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// The new key. Write-only.
    #[schema(value_type = String)]
    pub api_key: ProviderKeyInput,
}

fn check_url_len(u: &str) -> Result<(), ApiError> {
    if u.len() > 2048 {
        return Err(ApiError::bad_request(
            "invalid_base_url",
            "base_url: at most 2048 characters",
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/providers", tag = "providers", params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = List<ProviderView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_providers(
    State(s): State<AppState>,
    _reader: GlobalReader,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<List<ProviderView>>, ApiError> {
    let page = s.svc.store.list_providers(&q.page()?).await?;
    Ok(Json(List {
        data: page
            .items
            .into_iter()
            .map(|p| ProviderView::from(p).with_breakers(&s.svc))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(post, path = "/v1/providers", tag = "providers", request_body = CreateProvider,
    security(("api_key" = [])),
    responses((status = 201, body = ProviderView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_provider(
    State(s): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<CreateProvider>,
) -> Result<(StatusCode, Json<ProviderView>), ApiError> {
    check_url_len(&body.base_url)?;
    let req = NewProvider {
        name: body.name,
        kind: body.kind,
        base_url: body.base_url,
        api_key: body.api_key,
        models: body.models.map(|m| m.0).unwrap_or_default(),
        priority: body.priority.unwrap_or(0),
    };
    let p = s.svc.create_provider(&caller.actor(), req).await?;
    Ok((StatusCode::CREATED, Json(p.into())))
}

#[utoipa::path(get, path = "/v1/providers/{provider}", tag = "providers",
    params(("provider" = String, Path, description = "Provider id or name")),
    security(("api_key" = [])),
    responses((status = 200, body = ProviderView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_provider(
    State(s): State<AppState>,
    _reader: GlobalReader,
    Path(provider): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    let p = s.svc.resolve_provider(&provider).await?;
    Ok(Json(ProviderView::from(p).with_breakers(&s.svc)))
}

#[utoipa::path(patch, path = "/v1/providers/{provider}", tag = "providers", request_body = PatchProvider,
    params(("provider" = String, Path, description = "Provider id or name")),
    security(("api_key" = [])),
    responses((status = 200, body = ProviderView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn patch_provider(
    State(s): State<AppState>,
    Admin(caller): Admin,
    Path(provider): Path<String>,
    ApiJson(body): ApiJson<PatchProvider>,
) -> Result<Json<ProviderView>, ApiError> {
    if let Some(u) = &body.base_url {
        check_url_len(u)?;
    }
    let current = s.svc.resolve_provider(&provider).await?;
    let p = s
        .svc
        .update_provider_settings(
            &caller.actor(),
            current,
            body.base_url.as_deref(),
            body.models.map(|m| m.0),
            body.priority,
        )
        .await?;
    Ok(Json(p.into()))
}

#[utoipa::path(post, path = "/v1/providers/{provider}/rotate-key", tag = "providers", request_body = RotateKey,
    params(("provider" = String, Path, description = "Provider id or name")),
    security(("api_key" = [])),
    responses((status = 200, body = ProviderView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rotate_key(
    State(s): State<AppState>,
    Admin(caller): Admin,
    Path(provider): Path<String>,
    ApiJson(body): ApiJson<RotateKey>,
) -> Result<Json<ProviderView>, ApiError> {
    let current = s.svc.resolve_provider(&provider).await?;
    Ok(Json(
        s.svc
            .rotate_provider_key(&caller.actor(), current, body.api_key)
            .await?
            .into(),
    ))
}

#[utoipa::path(delete, path = "/v1/providers/{provider}", tag = "providers",
    params(("provider" = String, Path, description = "Provider id or name")),
    security(("api_key" = [])),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_provider(
    State(s): State<AppState>,
    Admin(caller): Admin,
    Path(provider): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let p = s.svc.resolve_provider(&provider).await?;
    s.svc.delete_provider(&caller.actor(), &p).await?;
    Ok(Json(Deleted {
        id: p.id,
        deleted: true,
    }))
}
