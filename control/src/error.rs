//! API errors: the one type every handler returns, rendered as
//! `{"error":{"type","message","code"}}` with an `x-iron-error: <code>` header.
//!
//! One exhaustive `status()` match, no side effects when rendering: the detail of an
//! internal error is never sent to the client; it travels in a response extension
//! ([`ErrorDetail`]) that the request-log middleware (`api::middleware`) writes to the log.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use iron_core::error::ERROR_HEADER;

use crate::store::StoreError;

/// Errors returned by the REST and internal APIs.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400. `code` is specific: `invalid_json`, `unknown_field`, `invalid_request`, …
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401.
    #[error("{0}")]
    Unauthorized(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: duplicate name (`already_exists`) or a state conflict (`in_use`, …).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 413.
    #[error("request body is larger than the {0}-byte limit")]
    TooLarge(usize),
    /// 503: the store does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// 500. The string is logged, never returned.
    #[error("internal error")]
    Internal(String),
}

/// Detail of a server-side error, attached to the response for the request log.
#[derive(Clone, Debug)]
pub struct ErrorDetail(pub String);

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::bad_request("invalid_request", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound(message.into())
    }

    pub const fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error category (`error.type`).
    pub const fn error_type(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "invalid_request_error",
            ApiError::Unauthorized(_) => "authentication_error",
            ApiError::Forbidden(_) => "permission_error",
            ApiError::NotFound(_) => "not_found_error",
            ApiError::MethodNotAllowed => "invalid_request_error",
            ApiError::Conflict { .. } => "conflict_error",
            ApiError::TooLarge(_) => "invalid_request_error",
            ApiError::Unavailable(_) => "unavailable_error",
            ApiError::Internal(_) => "api_error",
        }
    }

    /// The specific, low-cardinality code (`error.code`, `x-iron-error`).
    pub const fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthorized(_) => "invalid_api_key",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict { code, .. } => code,
            ApiError::TooLarge(_) => "request_too_large",
            ApiError::Unavailable(_) => "store_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

/// The error body, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorObject {
    /// Category, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    /// Specific code, e.g. `unknown_field`; also in the `x-iron-error` header.
    pub code: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = match &self {
            ApiError::Internal(d) | ApiError::Unavailable(d) => Some(ErrorDetail(d.clone())),
            _ => None,
        };
        let message = match &self {
            ApiError::Unavailable(_) => "the store is unavailable; retry shortly".to_owned(),
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorObject {
                kind: self.error_type().into(),
                message,
                code: self.code().into(),
            },
        };
        let mut resp = (self.status(), [(ERROR_HEADER, self.code())], Json(body)).into_response();
        if let Some(d) = detail {
            resp.extensions_mut().insert(d);
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            StoreError::Conflict { .. } => ApiError::Conflict {
                code: "already_exists",
                message: e.to_string(),
            },
            StoreError::Unavailable(d) => ApiError::Unavailable(d),
            StoreError::Corrupt(_) | StoreError::Backend(_) => ApiError::Internal(e.to_string()),
        }
    }
}
