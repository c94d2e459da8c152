//! Stage 1, *auth*: find the IC token in the request and verify it offline (`design.md` §4).
//!
//! OpenAI routes carry `Authorization: Bearer ic_…`; Anthropic routes `x-api-key: ic_…` (or
//! Bearer). Verification uses the routing table's cached verifier; revocation and expiry are
//! checked on every request. Failures are 401 `invalid_api_key` / `token_revoked`.

use std::sync::Arc;

use iron_core::ErrorCode;
use iron_core::token::{IcClaims, TokenError};
use pingora_http::RequestHeader;

use crate::error::ProxyError;
use crate::state::{AuthFailure, Project, Routing};

/// The token presented by the agent, if any.
pub fn presented_token(req: &RequestHeader) -> Option<&str> {
    if let Some(v) = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim());
        }
    }
    req.headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Runs the stage.
pub fn authenticate(
    routing: &Routing,
    req: &RequestHeader,
    now: u64,
) -> Result<(Arc<IcClaims>, Arc<Project>), ProxyError> {
    let token = presented_token(req)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ProxyError::new(
                ErrorCode::InvalidApiKey,
                "missing API key: send your Iron (ic_…) token as the API key",
            )
        })?;
    routing.authenticate(token, now).map_err(|f| match f {
        AuthFailure::Revoked => {
            ProxyError::new(ErrorCode::TokenRevoked, "this Iron token has been revoked")
        }
        AuthFailure::UnknownProject => ProxyError::new(
            ErrorCode::InvalidApiKey,
            "the project of this Iron token does not exist",
        ),
        AuthFailure::Token(TokenError::Expired) => {
            ProxyError::new(ErrorCode::InvalidApiKey, "this Iron token has expired")
        }
        AuthFailure::Token(TokenError::NotAnIcToken) => ProxyError::new(
            ErrorCode::InvalidApiKey,
            "the API key is not an Iron token (ic_…); provider keys are not accepted by Iron",
        ),
        AuthFailure::Token(_) => ProxyError::new(ErrorCode::InvalidApiKey, "invalid Iron token"),
    })
}
