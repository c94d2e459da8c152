//! Middleware, outermost first (built in `api::app`):
//!
//! 1. [`observe`] — request id (`x-request-id`, generated when absent or invalid), one log
//!    line per request (method, path without query, status, latency, and the detail of
//!    server-side errors; never headers or bodies) and `iron_control_http_requests_total`
//!    (route template from [`tag_route`], a route layer inside the router).
//! 2. body limit (`DefaultBodyLimit`, enforced by `ApiJson` → 413).
//! 3. per route group: [`require_api_key`] on `/v1` (401 without a valid key or session
//!    cookie, 429 after too many failed attempts from one source IP or for one key prefix
//!    ([`AuthFailures`]), 403 for mutations by a viewer key or for cookie-authenticated
//!    mutations whose `Origin`/`Referer` does not match `Host`) or [`require_proxy_secret`]
//!    on `/internal/v1`. `POST /v1/session` (sign-in) sits outside the layer and applies the
//!    same failure limits itself.
//!
//! Finer checks (admin-only routes, project scoping) happen in the handlers via `Caller`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method};

use super::extract::Caller;
use crate::AppState;
use crate::config::Cidr;
use crate::error::{ApiError, ErrorDetail};
use crate::model::{Role, new_id, now};

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

/// How a `/v1` request authenticates.
enum Credential<'a> {
    /// `Authorization: Bearer` or `x-api-key`.
    Key(&'a str),
    /// The dashboard session cookie (used only when no key header is sent).
    Session(&'a str),
}

/// `/v1` authentication: API key header, else session cookie. Order: brute-force limit
/// (429 before any key check) → key or session check (401, counted as a failure) → viewer
/// keys read-only (403) → CSRF check on cookie-authenticated mutations (403).
pub async fn require_api_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let svc = &state.svc;
    let ip = source_ip(&req, &svc.security.trusted_proxies);
    let credential = match bearer(&req) {
        Some(k) => Credential::Key(k),
        None => match super::session::cookie(req.headers()) {
            Some(c) => Credential::Session(c),
            None => {
                return ApiError::Unauthorized(
                    "missing API key: send `Authorization: Bearer iron_ak_…` (see IRON_API_KEY)"
                        .into(),
                )
                .into_response();
            }
        },
    };
    let prefix = match &credential {
        Credential::Key(k) => Some(key_prefix(k)),
        Credential::Session(_) => None,
    };
    if let Some(resp) = svc.auth_failures.check(ip, prefix) {
        return resp;
    }
    let (key, via_session) = match credential {
        Credential::Key(presented) => match svc.authenticate(presented).await {
            Ok(Some(k)) => (k, false),
            Ok(None) => {
                svc.auth_failures.record(ip, prefix);
                return ApiError::Unauthorized("invalid API key".into()).into_response();
            }
            Err(e) => return e.into_response(),
        },
        Credential::Session(jwt) => match session_key(svc, jwt).await {
            Ok(Some(k)) => (k, true),
            Ok(None) => {
                svc.auth_failures.record(ip, None);
                return ApiError::Unauthorized(
                    "invalid or expired session: sign in again (POST /v1/session)".into(),
                )
                .into_response();
            }
            Err(e) => return e.into_response(),
        },
    };
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    // Any key may end its own session.
    let sign_out = *req.method() == Method::DELETE && req.uri().path() == "/v1/session";
    if key.role == Role::Viewer && !read_only && !sign_out {
        return ApiError::forbidden("viewer API keys are read-only").into_response();
    }
    if via_session && !read_only && !same_origin(req.headers()) {
        return ApiError::forbidden(
            "cross-site request refused: a session-authenticated change needs an Origin (or \
             Referer) matching the Host",
        )
        .into_response();
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
        via_session,
        source_ip: ip.map(|i| i.to_string()),
    });
    next.run(req).await
}

/// The API key behind a session cookie: valid signature and expiry, not revoked, and the
/// key still exists. `None` otherwise.
async fn session_key(
    svc: &crate::service::Service,
    jwt: &str,
) -> Result<Option<crate::model::ApiKeyRecord>, ApiError> {
    let Some(claims) = super::session::verify(svc, jwt) else {
        return Ok(None);
    };
    if svc.store.session_revoked(&claims.jti, now()).await? {
        return Ok(None);
    }
    Ok(svc.store.get_api_key(&claims.sub).await?)
}

/// CSRF check: `Origin` (or else `Referer`) names the same host[:port] as `Host`.
fn same_origin(h: &http::HeaderMap) -> bool {
    let Some(host) = h
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    else {
        return false;
    };
    let origin = h
        .get(http::header::ORIGIN)
        .or_else(|| h.get(http::header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(origin) = origin else {
        return false;
    };
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.eq_ignore_ascii_case(host)
}

/// The first characters of a presented key, the unit of per-key failure counting.
pub fn key_prefix(presented: &str) -> &str {
    let mut end = presented.len().min(KEY_PREFIX_LEN);
    while !presented.is_char_boundary(end) {
        end -= 1;
    }
    &presented[..end]
}

/// Characters of a presented key that identify it for failure counting (`iron_ak_` + 4).
const KEY_PREFIX_LEN: usize = 12;

/// The client address: the TCP peer, or — when the peer is a trusted proxy — the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. `None` when the
/// server runs without connection info (router tests).
pub fn source_ip(req: &Request, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| canonical(c.0.ip()))?;
    if !trusted.iter().any(|c| c.contains(peer)) {
        return Some(peer);
    }
    let mut client = peer;
    let hops = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = canonical(ip);
        if !trusted.iter().any(|c| c.contains(client)) {
            break;
        }
    }
    Some(client)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Most distinct sources (IPs, key prefixes) tracked per table; beyond it new sources are
/// not counted until old windows expire (memory stays bounded under a flood).
const MAX_TRACKED: usize = 10_000;

/// Fixed-window counters of failed authentications per source IP and per key prefix
/// (limit 0 = off).
#[derive(Debug)]
pub struct AuthFailures {
    limit: u32,
    window: Duration,
    by_ip: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    by_prefix: Mutex<HashMap<String, (Instant, u32)>>,
}

impl AuthFailures {
    pub fn new(limit: u32, window: Duration) -> Self {
        AuthFailures {
            limit,
            window,
            by_ip: Mutex::new(HashMap::new()),
            by_prefix: Mutex::new(HashMap::new()),
        }
    }

    /// A 429 response when the source or the key prefix used up its failures.
    pub fn check(&self, ip: Option<IpAddr>, prefix: Option<&str>) -> Option<Response> {
        if self.limit == 0 {
            return None;
        }
        let now = Instant::now();
        let wait = |entry: Option<&(Instant, u32)>| {
            entry
                .filter(|(start, n)| *n >= self.limit && now < *start + self.window)
                .map(|(start, _)| (*start + self.window).saturating_duration_since(now))
        };
        let by_ip = ip.and_then(|ip| wait(lock(&self.by_ip).get(&ip)));
        let by_prefix = prefix.and_then(|p| wait(lock(&self.by_prefix).get(p)));
        let retry = by_ip.into_iter().chain(by_prefix).max()?;
        Some(rate_limited(retry.as_secs().max(1)))
    }

    /// Counts one failure for the source and the key prefix.
    pub fn record(&self, ip: Option<IpAddr>, prefix: Option<&str>) {
        if self.limit == 0 {
            return;
        }
        if let Some(ip) = ip {
            bump(&mut lock(&self.by_ip), ip, self.window);
        }
        if let Some(p) = prefix {
            bump(&mut lock(&self.by_prefix), p.to_owned(), self.window);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, (Instant, u32)>, key: K, window: Duration) {
    let now = Instant::now();
    if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
        map.retain(|_, (start, _)| now < *start + window);
        if map.len() >= MAX_TRACKED {
            return;
        }
    }
    let e = map.entry(key).or_insert((now, 0));
    if now >= e.0 + window {
        *e = (now, 0);
    }
    e.1 = e.1.saturating_add(1);
}

/// 429 `rate_limited` with `Retry-After`, in the control API's error shape.
fn rate_limited(retry_after: u64) -> Response {
    let body = crate::error::ErrorBody {
        error: crate::error::ErrorObject {
            kind: "rate_limited".into(),
            message: format!(
                "too many failed authentication attempts; retry after {retry_after} s"
            ),
            code: "rate_limited".into(),
        },
    };
    let mut resp = (http::StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        iron_core::error::ERROR_HEADER,
        HeaderValue::from_static("rate_limited"),
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
        h.insert(http::header::RETRY_AFTER, v);
    }
    resp
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn same_origin_compares_origin_or_referer_with_host() {
        let ok = [
            &[("host", "ctl:7070"), ("origin", "http://ctl:7070")][..],
            &[("host", "ctl.example"), ("origin", "https://CTL.example")],
            &[
                ("host", "ctl:7070"),
                ("referer", "http://ctl:7070/projects?x=1"),
            ],
        ];
        for h in ok {
            assert!(same_origin(&headers(h)), "{h:?}");
        }
        let refused = [
            &[("host", "ctl:7070")][..],
            &[("origin", "http://ctl:7070")],
            &[("host", "ctl:7070"), ("origin", "http://ctl:7071")],
            &[("host", "ctl:7070"), ("origin", "http://ctl:7070.evil")],
            &[("host", "ctl:7070"), ("origin", "null")],
            &[("host", "ctl"), ("origin", "http://evil/ctl")],
            // Origin wins over a matching Referer.
            &[
                ("host", "ctl"),
                ("origin", "http://evil"),
                ("referer", "http://ctl/"),
            ],
        ];
        for h in refused {
            assert!(!same_origin(&headers(h)), "{h:?}");
        }
    }

    #[test]
    fn failures_block_per_source_and_prefix_then_expire() {
        let f = AuthFailures::new(3, Duration::from_millis(200));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(f.check(Some(a), Some("iron_ak_AAAA")).is_none());
            f.record(Some(a), Some("iron_ak_AAAA"));
        }
        let r = f.check(Some(a), Some("iron_ak_BBBB")).unwrap();
        assert_eq!(r.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[http::header::RETRY_AFTER], "1");
        // Another address with another prefix is fine; the guessed prefix is not.
        assert!(f.check(Some(b), Some("iron_ak_BBBB")).is_none());
        assert!(f.check(Some(b), Some("iron_ak_AAAA")).is_some());
        std::thread::sleep(Duration::from_millis(250));
        assert!(f.check(Some(a), Some("iron_ak_AAAA")).is_none());
        // Limit 0 = off.
        let off = AuthFailures::new(0, Duration::from_secs(60));
        off.record(Some(a), None);
        assert!(off.check(Some(a), None).is_none());
        assert_eq!(key_prefix("iron_ak_0123456789"), "iron_ak_0123");
        assert_eq!(key_prefix("é"), "é");
    }
}
