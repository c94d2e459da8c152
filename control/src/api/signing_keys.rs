//! `/v1/signing-keys`: the Ed25519 keys that sign IC tokens (public parts only), rotation
//! and retirement.

use axum::Json;
use axum::extract::{Path, State};

use super::extract::{Admin, GlobalReader};
use super::views::{List, SigningKeyView};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};

#[utoipa::path(get, path = "/v1/signing-keys", tag = "signing-keys",
    security(("api_key" = [])),
    responses((status = 200, body = List<SigningKeyView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_signing_keys(
    State(s): State<AppState>,
    _reader: GlobalReader,
) -> Result<Json<List<SigningKeyView>>, ApiError> {
    let keys = s.svc.signing_keys().await?;
    Ok(Json(List {
        data: keys.into_iter().map(Into::into).collect(),
        next_cursor: None,
    }))
}

#[utoipa::path(post, path = "/v1/signing-keys/rotate", tag = "signing-keys",
    security(("api_key" = [])),
    responses((status = 200, description = "The new active key", body = SigningKeyView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn rotate_signing_key(
    State(s): State<AppState>,
    Admin(caller): Admin,
) -> Result<Json<SigningKeyView>, ApiError> {
    Ok(Json(
        s.svc.rotate_signing_key(&caller.actor()).await?.into(),
    ))
}

#[utoipa::path(delete, path = "/v1/signing-keys/{kid}", tag = "signing-keys",
    params(("kid" = String, Path, description = "Key id")),
    security(("api_key" = [])),
    responses((status = 200, description = "Retired", body = SigningKeyView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn retire_signing_key(
    State(s): State<AppState>,
    Admin(caller): Admin,
    Path(kid): Path<String>,
) -> Result<Json<SigningKeyView>, ApiError> {
    Ok(Json(
        s.svc
            .retire_signing_key(&caller.actor(), &kid)
            .await?
            .into(),
    ))
}
