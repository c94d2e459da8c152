//! `/v1/providers`: provider deployments. Keys are write-only: responses show them masked.
//!
//! A provider may carry its own `timeouts` (connect, first byte, idle between chunks, in
//! ms); they travel in the proxy snapshot and override the proxy's `[upstream]` values for
//! that deployment only.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use iron_core::wire::{DeploymentTimeouts, ProviderKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Admin, ApiJson, ApiQuery, GlobalReader, PageQuery};
use super::views::{Deleted, List, ProviderView};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::service::{NewProvider, ProviderUpdate};
use crate::validate::{ModelPatterns, Name, ProviderKeyInput, TimeoutMs};

/// Distinguishes an absent field from an explicit `null`.
fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as Deserialize>::deserialize(d).map(Some)
}

/// `"timeouts"` of a provider: this deployment's own timeouts in milliseconds, each a whole
/// number from 1 to 600000; an unset one uses the proxy's `[upstream]` value. In `PATCH` a
/// missing key leaves that timeout unchanged and `null` removes it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsInput {
    /// TCP (+ TLS) connect timeout.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 600000, example = 5000)]
    pub connect_ms: Option<Option<TimeoutMs>>,
    /// From request sent to the first response byte (504 `upstream_timeout` when exceeded).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 600000, example = 30000)]
    pub first_byte_ms: Option<Option<TimeoutMs>>,
    /// Longest gap between two body chunks (a stream then ends with an error event).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 600000, example = 60000)]
    pub idle_ms: Option<Option<TimeoutMs>>,
}

impl TimeoutsInput {
    /// `current` with this input applied.
    pub fn apply(&self, current: DeploymentTimeouts) -> DeploymentTimeouts {
        let pick = |v: Option<Option<TimeoutMs>>, cur: Option<u64>| match v {
            None => cur,
            Some(v) => v.map(|t| t.0),
        };
        DeploymentTimeouts {
            connect_ms: pick(self.connect_ms, current.connect_ms),
            first_byte_ms: pick(self.first_byte_ms, current.first_byte_ms),
            idle_ms: pick(self.idle_ms, current.idle_ms),
        }
    }
}

/// A provider's own timeouts as the API shows them (`null` = the proxy's `[upstream]` value).
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct TimeoutsView {
    pub connect_ms: Option<u64>,
    pub first_byte_ms: Option<u64>,
    pub idle_ms: Option<u64>,
}

impl From<DeploymentTimeouts> for TimeoutsView {
    fn from(t: DeploymentTimeouts) -> Self {
        TimeoutsView {
            connect_ms: t.connect_ms,
            first_byte_ms: t.first_byte_ms,
            idle_ms: t.idle_ms,
        }
    }
}

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
    /// This deployment's own timeouts (default: the proxy's `[upstream]` ones).
    pub timeouts: Option<TimeoutsInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchProvider {
    pub base_url: Option<String>,
    #[schema(value_type = Option<Vec<String>>)]
    pub models: Option<ModelPatterns>,
    pub priority: Option<i32>,
    /// Changes to the timeouts: a missing key keeps that timeout, `null` removes it;
    /// `"timeouts": null` removes all three.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<TimeoutsInput>)]
    pub timeouts: Option<Option<TimeoutsInput>>,
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
        timeouts: body
            .timeouts
            .map(|t| t.apply(DeploymentTimeouts::default()))
            .unwrap_or_default(),
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
    let timeouts = match &body.timeouts {
        None => None,
        Some(None) => Some(DeploymentTimeouts::default()),
        Some(Some(input)) => Some(input.apply(current.timeouts)),
    };
    let update = ProviderUpdate {
        base_url: body.base_url,
        models: body.models.map(|m| m.0),
        priority: body.priority,
        timeouts,
    };
    let p = s
        .svc
        .update_provider(&caller.actor(), current, update)
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
