//! `/internal/v1`: the proxy-facing API, authenticated with `Authorization: Bearer
//! <IRON_PROXY_SECRET>` (constant-time compare). Proxies fetch the public keys and a
//! snapshot, then follow the event stream (`events::stream`).

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use futures::Stream;
use http::HeaderMap;
use iron_core::token::PublicKey;
use iron_core::wire::Snapshot;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

#[derive(Serialize, ToSchema)]
pub struct KeysResponse {
    /// Every non-retired signing key: `{kid, alg: "EdDSA", x: base64url}`.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<PublicKey>,
}

#[utoipa::path(get, path = "/internal/v1/keys", tag = "internal",
    security(("proxy_secret" = [])),
    responses((status = 200, body = KeysResponse), (status = 401, body = ErrorBody)))]
pub async fn keys(State(s): State<AppState>) -> Result<Json<KeysResponse>, ApiError> {
    Ok(Json(KeysResponse {
        keys: s.svc.public_keys().await?,
    }))
}

#[utoipa::path(get, path = "/internal/v1/snapshot", tag = "internal",
    security(("proxy_secret" = [])),
    responses((status = 200, description = "iron_core::wire::Snapshot; provider keys sealed with the transit key (AAD = provider id)", body = Object),
        (status = 401, body = ErrorBody)))]
pub async fn snapshot(State(s): State<AppState>) -> Result<Json<Snapshot>, ApiError> {
    Ok(Json(s.svc.snapshot().await?))
}

#[utoipa::path(get, path = "/internal/v1/events", tag = "internal",
    params(("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id")),
    security(("proxy_secret" = [])),
    responses((status = 200, description = "text/event-stream of control events", content_type = "text/event-stream"),
        (status = 401, body = ErrorBody)))]
pub async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    super::events::stream(&s, &headers)
}
