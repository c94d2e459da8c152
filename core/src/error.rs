//! Agent-facing error codes (`design.md` §11).
//!
//! Every request the proxy refuses ends here: one [`ErrorCode`] per failure, one exhaustive
//! `status()` match, and one renderer per wire shape. OpenAI routes get
//! `{"error":{"message","type","code","param"}}`, Anthropic routes get
//! `{"type":"error","error":{"type","message"}}`; both carry the `x-iron-error` header.
//! Messages never contain secrets or PII values — callers pass fixed or sanitised text.

use serde::Serialize;

/// Name of the response header that carries the error code.
pub const ERROR_HEADER: &str = "x-iron-error";

/// The closed set of errors Iron returns to agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidApiKey,
    TokenRevoked,
    ForbiddenModel,
    NotFound,
    BudgetExceeded,
    RateLimited,
    PiiBlocked,
    RequestTooLarge,
    HeadersTooLarge,
    RequestTimeout,
    InvalidJson,
    InvalidRequest,
    UnknownModelPrice,
    UpstreamUnavailable,
    UpstreamTimeout,
    UpstreamError,
    Internal,
}

impl ErrorCode {
    /// HTTP status for this error. Exhaustive on purpose: a new code must choose its status.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidApiKey => 401,
            ErrorCode::TokenRevoked => 401,
            ErrorCode::ForbiddenModel => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::BudgetExceeded => 402,
            ErrorCode::RateLimited => 429,
            ErrorCode::PiiBlocked => 400,
            ErrorCode::RequestTooLarge => 413,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::InvalidJson => 400,
            ErrorCode::InvalidRequest => 400,
            ErrorCode::UnknownModelPrice => 400,
            ErrorCode::UpstreamUnavailable => 503,
            ErrorCode::UpstreamTimeout => 504,
            ErrorCode::UpstreamError => 502,
            ErrorCode::Internal => 500,
        }
    }

    /// The wire name, also used as a low-cardinality metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidApiKey => "invalid_api_key",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::ForbiddenModel => "forbidden_model",
            ErrorCode::NotFound => "not_found",
            ErrorCode::BudgetExceeded => "budget_exceeded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::PiiBlocked => "pii_blocked",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnknownModelPrice => "unknown_model_price",
            ErrorCode::UpstreamUnavailable => "upstream_unavailable",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::Internal => "internal_error",
        }
    }

    /// The Anthropic `error.type` closest to this code; Anthropic SDKs map on status, so
    /// Iron's own code stays in `x-iron-error` and in the message prefix.
    const fn anthropic_type(self) -> &'static str {
        match self {
            ErrorCode::InvalidApiKey | ErrorCode::TokenRevoked => "authentication_error",
            ErrorCode::ForbiddenModel => "permission_error",
            ErrorCode::NotFound => "not_found_error",
            ErrorCode::BudgetExceeded => "billing_error",
            ErrorCode::RateLimited => "rate_limit_error",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::PiiBlocked
            | ErrorCode::HeadersTooLarge
            | ErrorCode::RequestTimeout
            | ErrorCode::InvalidJson
            | ErrorCode::InvalidRequest
            | ErrorCode::UnknownModelPrice => "invalid_request_error",
            ErrorCode::UpstreamUnavailable => "overloaded_error",
            ErrorCode::UpstreamTimeout | ErrorCode::UpstreamError | ErrorCode::Internal => {
                "api_error"
            }
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which provider's error shape a route speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WireShape {
    OpenAi,
    Anthropic,
}

/// Renders the JSON error body for `shape`.
pub fn error_body(shape: WireShape, code: ErrorCode, message: &str) -> Vec<u8> {
    let value = match shape {
        WireShape::OpenAi => serde_json::json!({
            "error": {
                "message": message,
                "type": code.as_str(),
                "code": code.as_str(),
                "param": null,
            }
        }),
        WireShape::Anthropic => serde_json::json!({
            "type": "error",
            "error": {
                "type": code.anthropic_type(),
                "message": format!("{}: {message}", code.as_str()),
                "code": code.as_str(),
            }
        }),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape_carries_code_and_type() {
        let body = error_body(WireShape::OpenAi, ErrorCode::BudgetExceeded, "budget gone");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["error"]["code"], "budget_exceeded");
        assert_eq!(v["error"]["type"], "budget_exceeded");
        assert_eq!(v["error"]["message"], "budget gone");
        assert_eq!(ErrorCode::BudgetExceeded.status(), 402);
    }

    #[test]
    fn anthropic_shape_is_typed_error() {
        let body = error_body(WireShape::Anthropic, ErrorCode::InvalidApiKey, "bad token");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
    }
}
