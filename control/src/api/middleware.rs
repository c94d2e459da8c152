//! Middleware, outermost first (built in `api::app`):
//!
//! 1. [`observe`] — request id (`x-request-id`, generated when absent or invalid), one log
//!    line per request (method, path without query, status, latency, and the detail of
//!    server-side errors; never headers or bodies) and `iron_control_http_requests_total`
//!    (route template from [`tag_route`], a route layer inside the router).
//! 2. body limit (`DefaultBodyLimit`, enforced by `ApiJson` → 413).
//! 3. per route group: [`require_api_key`] on `/v1` (401 without a valid key, 403 for
//!    mutations by a viewer key) or [`require_proxy_secret`] on `/internal/v1`.
//!
//! Finer checks (admin-only routes, project scoping) happen in the handlers via `Caller`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method};

use super::extract::Caller;
use crate::AppState;
use crate::error::{ApiError, ErrorDetail};
use crate::model::{Role, new_id};

/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// The id of the current request.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn valid_request_id(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The matched route template of a response (for metrics labels).
#[derive(Clone, Debug)]
pub struct RouteTag(pub String);

/// Copies the matched route template into the response (`observe` runs outside routing).
pub async fn tag_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let mut resp = next.run(req).await;
    if let Some(r) = route {
        resp.extensions_mut().insert(RouteTag(r));
    }
    resp
}

pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let rid = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| new_id("req"));
    req.extensions_mut().insert(RequestId(rid.clone()));
    let method = req.method().clone();
    let path = req.uri().path().chars().take(200).collect::<String>();
    let start = Instant::now();
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    let latency_ms = start.elapsed().as_millis() as u64;
    let route = resp
        .extensions()
        .get::<RouteTag>()
        .map_or("unmatched", |r| r.0.as_str());
    state
        .metrics
        .http_requests
        .with_label_values(&[route, resp.status().as_str()])
        .inc();
    match resp.extensions().get::<ErrorDetail>() {
        Some(ErrorDetail(detail)) => tracing::warn!(
            %method, %path, status, latency_ms, request_id = %rid, error = %detail, "request failed"
        ),
        // Proxies call the lease routes every second: successes only at debug level.
        None if status < 400 && path.starts_with("/internal/v1/leases") => {
            tracing::debug!(%method, %path, status, latency_ms, request_id = %rid, "request");
        }
        None => tracing::info!(%method, %path, status, latency_ms, request_id = %rid, "request"),
    }
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

fn bearer(req: &Request) -> Option<&str> {
    let h = req.headers();
    if let Some(v) = h
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        return v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(str::trim);
    }
    h.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

pub async fn require_api_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(presented) = bearer(&req) else {
        return ApiError::Unauthorized(
            "missing API key: send `Authorization: Bearer iron_ak_…` (see IRON_API_KEY)".into(),
        )
        .into_response();
    };
    let key = match state.svc.authenticate(presented).await {
        Ok(Some(k)) => k,
        Ok(None) => return ApiError::Unauthorized("invalid API key".into()).into_response(),
        Err(e) => return e.into_response(),
    };
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if key.role == Role::Viewer && !read_only {
        return ApiError::forbidden("viewer API keys are read-only").into_response();
    }
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| new_id("req"));
    req.extensions_mut().insert(Caller {
        key_id: key.id,
        role: key.role,
        request_id,
    });
    next.run(req).await
}

pub async fn require_proxy_secret(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    match bearer(&req) {
        Some(s) if state.svc.is_proxy_secret(s) => next.run(req).await,
        _ => ApiError::Unauthorized("missing or invalid proxy secret (IRON_PROXY_SECRET)".into())
            .into_response(),
    }
}
