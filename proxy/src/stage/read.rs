//! Stage 3, *read*: the whole request body, before anything goes upstream.
//!
//! A declared `Content-Length` above `max_request_bytes` is refused without reading; chunked
//! bodies are refused as soon as they cross the limit (413 `request_too_large`). The body is
//! never truncated. JSON routes are parsed once here (400 `invalid_json`), and the fields
//! later stages need (`model`, `stream`, `stream_options.include_usage`) are extracted.

use bytes::{Bytes, BytesMut};
use iron_core::ErrorCode;
use pingora_proxy::Session;
use serde_json::Value;

use crate::error::ProxyError;
use crate::stage::route::ApiRoute;

/// The request body and what Iron learned from it.
#[derive(Debug, Clone)]
pub struct RequestBody {
    /// The bytes as received.
    pub raw: Bytes,
    /// Parsed JSON (routes that inspect the body).
    pub json: Option<Value>,
    pub model: Option<String>,
    pub stream: bool,
    /// `stream_options.include_usage` as sent by the client.
    pub include_usage: bool,
}

fn too_large(limit: usize) -> ProxyError {
    ProxyError::new(
        ErrorCode::RequestTooLarge,
        format!("request body is larger than the limit of {limit} bytes"),
    )
}

/// Reads the whole body (at most `limit` bytes).
pub async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, ProxyError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
    loop {
        let chunk = session.read_request_body().await.map_err(|e| {
            ProxyError::new(
                ErrorCode::InvalidRequest,
                format!("could not read the request body: {}", e.etype().as_str()),
            )
        })?;
        let Some(chunk) = chunk else { break };
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        if buf.is_empty() && declared == Some(chunk.len()) {
            // Common case: the whole declared body in one chunk, no copy.
            return Ok(chunk);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Parses the body of an inspected route.
pub fn parse(raw: Bytes, route: ApiRoute) -> Result<RequestBody, ProxyError> {
    if !route.inspects_body() {
        return Ok(RequestBody {
            raw,
            json: None,
            model: None,
            stream: false,
            include_usage: false,
        });
    }
    let json: Value = serde_json::from_slice(&raw).map_err(|e| {
        ProxyError::new(
            ErrorCode::InvalidJson,
            format!(
                "request body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let Value::Object(obj) = &json else {
        return Err(ProxyError::new(
            ErrorCode::InvalidJson,
            "request body must be a JSON object",
        ));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
        None if route == ApiRoute::Responses => None,
        _ => {
            return Err(ProxyError::new(
                ErrorCode::InvalidRequest,
                "`model` must be a non-empty string",
            ));
        }
    };
    let stream = matches!(obj.get("stream"), Some(Value::Bool(true)));
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(RequestBody {
        raw,
        json: Some(json),
        model,
        stream,
        include_usage,
    })
}
