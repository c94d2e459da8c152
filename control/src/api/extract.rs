//! Request extractors that fail with the API's JSON errors instead of axum's plain-text
//! rejections: [`ApiJson`] (body limit → 413, malformed JSON → 400 `invalid_json`, unknown
//! or invalid fields → 400 naming the field path), [`ApiQuery`], and [`Caller`] (set by the
//! auth middleware).

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;
use crate::model::{PageRequest, Role};
use crate::service::Actor;

/// Longest error message derived from a parser (values may be echoed by serde).
const MAX_MESSAGE: usize = 300;

fn clip(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// A JSON request body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let ApiBytes(bytes) = ApiBytes::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A raw request body within the size limit, for handlers that must authorize against
/// the target before parsing (`parse_json` afterwards).
#[derive(Debug)]
pub struct ApiBytes(pub Bytes);

impl FromRequest<AppState> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(ApiBytes)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge(state.svc.max_body_bytes)
                } else {
                    ApiError::bad_request("invalid_body", "could not read the request body")
                }
            })
    }
}

/// Parses a JSON body with field paths in errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_json",
            "request body is empty; expected a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let msg = inner.to_string();
                let code = if msg.starts_with("unknown field") {
                    "unknown_field"
                } else if msg.starts_with("missing field") {
                    "missing_field"
                } else {
                    "invalid_request"
                };
                let message = if path == "." {
                    msg
                } else {
                    format!("{path}: {msg}")
                };
                ApiError::bad_request(code, clip(message))
            }
            _ => ApiError::bad_request(
                "invalid_json",
                clip(format!("request body is not valid JSON: {inner}")),
            ),
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            clip(format!("request body is not valid JSON: {e}")),
        )
    })?;
    Ok(value)
}

/// Query parameters.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| {
                ApiError::bad_request("invalid_query", clip(format!("query: {}", e.body_text())))
            })
    }
}

/// `?limit=&cursor=` (limit 1–500, default 100).
#[derive(Clone, Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 500 (default 100).
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "limit must be between 1 and 500",
            ));
        }
        if self.cursor.as_ref().is_some_and(|c| c.len() > 200) {
            return Err(ApiError::bad_request("invalid_query", "cursor is invalid"));
        }
        Ok(PageRequest {
            limit: limit as usize,
            cursor: self.cursor.clone(),
        })
    }
}

/// The authenticated caller of a `/v1` route (inserted by the auth middleware).
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    pub request_id: String,
    /// Authenticated by a dashboard session cookie (not a key header).
    pub via_session: bool,
    /// The client address (see `middleware::source_ip`).
    pub source_ip: Option<String>,
}

impl Caller {
    /// The audit actor: the key id, or `session:<key id>` for a dashboard session.
    pub fn actor(&self) -> Actor {
        Actor {
            id: if self.via_session {
                format!("session:{}", self.key_id)
            } else {
                self.key_id.clone()
            },
            request_id: self.request_id.clone(),
            source_ip: self.source_ip.clone(),
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(ApiError::forbidden(
                "this operation requires an admin API key",
            )),
        }
    }

    /// Admin or viewer: reads across all projects.
    pub fn require_global_read(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::Viewer => Ok(()),
            Role::Project(_) => Err(ApiError::forbidden(
                "this API key is limited to one project and cannot read global resources",
            )),
        }
    }

    /// The project a `project:<id>` key is limited to.
    pub fn project_scope(&self) -> Option<&str> {
        match &self.role {
            Role::Project(p) => Some(p),
            _ => None,
        }
    }
}

/// A caller with the `admin` role (403 otherwise, before the body is read).
#[derive(Clone, Debug)]
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let c = Caller::from_request_parts(parts, state).await?;
        c.require_admin()?;
        Ok(Admin(c))
    }
}

/// A caller that may read global resources: `admin` or `viewer` (403 for project keys).
#[derive(Clone, Debug)]
pub struct GlobalReader(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for GlobalReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let c = Caller::from_request_parts(parts, state).await?;
        c.require_global_read()?;
        Ok(GlobalReader(c))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("missing API key".into()))
    }
}
