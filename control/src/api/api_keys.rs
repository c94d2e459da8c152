//! `/v1/api-keys` (admin only): create (key shown once), list, delete.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{Admin, ApiJson, ApiQuery, PageQuery};
use super::views::{ApiKeyView, CreatedApiKey, Deleted, List, time};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::Role;
use crate::validate::Name;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    #[schema(value_type = String, example = "dashboard")]
    pub name: Name,
    /// `admin`, `viewer` or `project:<id or name>`.
    #[schema(value_type = String, example = "viewer")]
    pub role: Role,
}

#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = List<ApiKeyView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_api_keys(
    State(s): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<List<ApiKeyView>>, ApiError> {
    let page = s.svc.store.list_api_keys(&q.page()?).await?;
    Ok(Json(List {
        data: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    security(("api_key" = [])),
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_api_key(
    State(s): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let (rec, key) = s
        .svc
        .create_api_key(&caller.actor(), body.name, body.role)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            id: rec.id,
            key: key.as_str().to_owned(),
            name: rec.name,
            role: rec.role.to_string(),
            created_at: time(rec.created_at),
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "API key id (ak_…)")),
    security(("api_key" = [])),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_api_key(
    State(s): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    s.svc.delete_api_key(&caller.actor(), &id).await?;
    Ok(Json(Deleted { id, deleted: true }))
}
