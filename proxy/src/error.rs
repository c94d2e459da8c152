//! Proxy errors and how they reach the agent (`design.md` §11).
//!
//! Every stage returns [`ProxyError`]; `proxy.rs` turns it into one response in the route's
//! wire shape (OpenAI or Anthropic) with the `x-iron-error` header. Messages are fixed text
//! or sanitised: never a token, key, PII value or request body.

use std::borrow::Cow;

use iron_core::{ErrorCode, WireShape};

/// A request that Iron refuses or cannot complete.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProxyError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ProxyError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        ProxyError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The JSON body for `shape`.
    pub fn body(&self, shape: WireShape) -> Vec<u8> {
        iron_core::error::error_body(shape, self.code, &self.message)
    }
}
