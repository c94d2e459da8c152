//! `/internal/v1`: the proxy-facing API, authenticated with `Authorization: Bearer
//! <IRON_PROXY_SECRET>` (constant-time compare). Proxies fetch the public keys and a
//! snapshot, then follow the event stream (`events::stream`).

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, Sse};
use futures::Stream;
use http::HeaderMap;
use http::StatusCode;
use iron_core::token::PublicKey;
use iron_core::wire::{BreakerReport, Snapshot};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::ApiJson;
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

#[utoipa::path(put, path = "/internal/v1/proxies/{proxy}/breakers", tag = "internal",
    params(("proxy" = String, Path, description = "The reporting proxy's id")),
    request_body(content = Object, description = "iron_core::wire::BreakerReport"),
    security(("proxy_secret" = [])),
    responses((status = 204, description = "Recorded"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn put_breakers(
    State(s): State<AppState>,
    Path(proxy): Path<String>,
    ApiJson(report): ApiJson<BreakerReport>,
) -> Result<StatusCode, ApiError> {
    let id_ok = (1..=128).contains(&proxy.len())
        && proxy
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !id_ok {
        return Err(ApiError::bad_request(
            "invalid_request",
            "proxy id: 1 to 128 characters of A-Z a-z 0-9 - _ .",
        ));
    }
    if report.breakers.len() > 10_000 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "at most 10000 breakers per report",
        ));
    }
    if let Some(b) = report.breakers.iter().find(|b| {
        !matches!(b.state.as_str(), "closed" | "open" | "half_open") || b.deployment.len() > 128
    }) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "breaker {}: state must be closed, open or half_open",
                crate::service::shown(&b.deployment)
            ),
        ));
    }
    s.svc
        .breakers
        .put(&proxy, report, iron_core::token::unix_now_ms());
    Ok(StatusCode::NO_CONTENT)
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
