//! `/v1/session`: dashboard sign-in (`design.md` §4). Sits in front of the `/v1` API: the
//! browser exchanges an API key for a short-lived session cookie, and
//! `middleware::require_api_key` then accepts that cookie instead of a key header.
//!
//! - `POST /v1/session` `{"api_key":"iron_ak_…"}` → the key's identity and
//!   `Set-Cookie: iron_session=<HS256 JWT>; HttpOnly; SameSite=Strict; Path=/; Max-Age=<ttl>`
//!   (`Secure` with `security.secure_cookie`). Not behind the API-key layer (there is no key
//!   yet) but behind the same brute-force limits.
//! - `GET /v1/session` → the same identity (cookie or key header), 401 otherwise.
//! - `DELETE /v1/session` → 204, clears the cookie and revokes the session id (`jti`) in the
//!   store, so every replica refuses it until it would have expired.
//!
//! The JWT key is derived from the master key with HKDF (`Service::session_key`), so all
//! replicas sharing the master key accept each other's sessions. Claims: `sub` (API key id),
//! `role`, `iat`, `exp`, `jti`, `iss = "iron-control/session"`. Every request re-checks that
//! the API key still exists (deleting it ends its sessions) and takes the role from the key.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::extract::{ApiBytes, Caller, parse_json};
use super::middleware::{self, RequestId};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::{ApiKeyRecord, Role, new_id, now};
use crate::service::{Actor, Service};

/// Name of the session cookie.
pub const COOKIE: &str = "iron_session";
const ISSUER: &str = "iron-control/session";

/// Claims of a session JWT.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionClaims {
    pub iss: String,
    /// API key id.
    pub sub: String,
    /// The key's role when the session began (informational: requests use the key's
    /// current role).
    pub role: String,
    pub iat: u64,
    pub exp: u64,
    /// Session id (`ses_<ulid>`), the unit of revocation.
    pub jti: String,
}

/// Sign-in request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// An Iron API key (`iron_ak_…`).
    pub api_key: String,
}

/// Who a session (or key) is.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub key_id: String,
    /// `admin`, `viewer` or `project`.
    pub role: String,
    /// The project id of a `project` key, else `null`.
    pub project: Option<String>,
}

impl SessionView {
    fn new(key_id: &str, role: &Role) -> Self {
        let (role, project) = match role {
            Role::Admin => ("admin", None),
            Role::Viewer => ("viewer", None),
            Role::Project(p) => ("project", Some(p.clone())),
        };
        SessionView {
            key_id: key_id.to_owned(),
            role: role.into(),
            project,
        }
    }
}

/// Signs a new session for `key`.
fn mint(svc: &Service, key: &ApiKeyRecord) -> Result<(String, SessionClaims), ApiError> {
    let iat = now();
    let claims = SessionClaims {
        iss: ISSUER.into(),
        sub: key.id.clone(),
        role: key.role.to_string(),
        iat,
        exp: iat.saturating_add(svc.security.session_ttl.as_secs()),
        jti: new_id("ses"),
    };
    let jwt = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(svc.session_key()),
    )
    .map_err(|e| ApiError::Internal(format!("session: {e}")))?;
    Ok((jwt, claims))
}

/// Checks a session JWT's signature, issuer and expiry (not revocation).
pub(crate) fn verify(svc: &Service, jwt: &str) -> Option<SessionClaims> {
    if jwt.len() > 2048 {
        return None;
    }
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[ISSUER]);
    v.set_required_spec_claims(&["exp", "iss", "sub"]);
    v.leeway = 0;
    jsonwebtoken::decode::<SessionClaims>(jwt, &DecodingKey::from_secret(svc.session_key()), &v)
        .ok()
        .map(|d| d.claims)
        .filter(|c| c.jti.starts_with("ses_") && c.jti.len() <= 64)
}

/// The session cookie's value, when the request carries one.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then_some(value)
        })
}

fn set_cookie(svc: &Service, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if svc.security.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// Sign in: exchanges an API key for a session cookie.
#[utoipa::path(post, path = "/v1/session", tag = "session", request_body = SignIn,
    responses((status = 200, body = SessionView,
            headers(("set-cookie" = String, description = "iron_session=<JWT>; HttpOnly; SameSite=Strict"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn create_session(State(s): State<AppState>, req: Request) -> Response {
    match sign_in(s, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn sign_in(s: AppState, req: Request) -> Result<Response, ApiError> {
    let ip = middleware::source_ip(&req, &s.svc.security.trusted_proxies);
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| new_id("req"));
    let ApiBytes(body) =
        <ApiBytes as axum::extract::FromRequest<AppState>>::from_request(req, &s).await?;
    let body: SignIn = parse_json(&body)?;
    let presented = body.api_key.trim();
    let prefix = middleware::key_prefix(presented);
    if let Some(resp) = s.svc.auth_failures.check(ip, Some(prefix)) {
        return Ok(resp);
    }
    let Some(key) = s.svc.authenticate(presented).await? else {
        s.svc.auth_failures.record(ip, Some(prefix));
        return Err(ApiError::Unauthorized("invalid API key".into()));
    };
    let (jwt, claims) = mint(&s.svc, &key)?;
    let project = match &key.role {
        Role::Project(p) => Some(p.as_str()),
        _ => None,
    };
    s.svc
        .audit_change(
            &Actor {
                id: key.id.clone(),
                request_id,
                source_ip: ip.map(|i| i.to_string()),
            },
            "session.create",
            &claims.jti,
            project,
            json!({"key_id": key.id, "expires_at": claims.exp}),
            serde_json::Value::Null,
            json!({"jti": claims.jti, "key_id": key.id, "role": claims.role, "exp": claims.exp}),
        )
        .await?;
    let mut resp = axum::Json(SessionView::new(&key.id, &key.role)).into_response();
    if let Some(c) = set_cookie(&s.svc, &jwt, s.svc.security.session_ttl.as_secs()) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The current session (or API key).
#[utoipa::path(get, path = "/v1/session", tag = "session",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody)))]
pub async fn get_session(caller: Caller) -> axum::Json<SessionView> {
    axum::Json(SessionView::new(&caller.key_id, &caller.role))
}

/// Sign out: revokes the session cookie and clears it.
#[utoipa::path(delete, path = "/v1/session", tag = "session",
    security(("api_key" = []), ("session" = [])),
    responses((status = 204, description = "Signed out; the cookie is cleared"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn delete_session(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = cookie(&headers).and_then(|c| verify(&s.svc, c));
    let target = match &claims {
        Some(c) => {
            s.svc.store.revoke_session(&c.jti, c.exp).await?;
            c.jti.clone()
        }
        None => caller.key_id.clone(),
    };
    s.svc
        .audit_change(
            &caller.actor(),
            "session.delete",
            &target,
            caller.project_scope(),
            json!({"key_id": caller.key_id, "revoked": claims.is_some()}),
            claims
                .as_ref()
                .map(|c| json!({"jti": c.jti, "key_id": c.sub, "exp": c.exp}))
                .unwrap_or(serde_json::Value::Null),
            serde_json::Value::Null,
        )
        .await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(c) = set_cookie(&s.svc, "", 0) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(resp)
}
