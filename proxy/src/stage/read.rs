//! Stage 3, *read*: the whole request body, before anything goes upstream.
//!
//! A declared `Content-Length` above `max_request_bytes` is refused without reading; chunked
//! bodies are refused as soon as they cross the limit (413 `request_too_large`). The body is
//! never truncated. The whole body must arrive within `body_read_timeout` (408
//! `request_timeout`: a client trickling its body byte by byte cannot hold the request
//! open). JSON routes are parsed once here (400 `invalid_json`), after a linear pre-scan that
//! refuses nesting deeper than `max_json_depth` (default 64), so the recursive walkers of
//! later stages (PII, metering) never see deep input; the fields later stages need
//! (`model`, `stream`, `stream_options.include_usage`) are extracted.

use std::time::Duration;

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

/// Reads the whole body (at most `limit` bytes, within `timeout`).
pub async fn read_body(
    session: &mut Session,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ProxyError> {
    match tokio::time::timeout(timeout, read_body_inner(session, limit)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

async fn read_body_inner(session: &mut Session, limit: usize) -> Result<Bytes, ProxyError> {
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

/// Default of `server.max_json_depth`.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;

/// True when objects/arrays in `json` nest at most `max` levels deep (stops at the first
/// level too deep). A byte scan that skips string contents (escapes included); it does not
/// validate, the parser does that next.
pub fn depth_within(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Skip the string: jump between quotes and backslashes (memchr, SIMD).
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &json[i..]) {
                        None => return true,
                        Some(n) if json[i + n] == b'\\' => i += n + 2,
                        Some(n) => {
                            i += n;
                            break;
                        }
                    }
                    if i >= json.len() {
                        return true;
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    true
}

/// Parses the body of an inspected route with the default depth limit.
pub fn parse(raw: Bytes, route: ApiRoute) -> Result<RequestBody, ProxyError> {
    parse_limited(raw, route, DEFAULT_MAX_JSON_DEPTH)
}

/// Parses the body of an inspected route (nesting at most `max_depth` levels).
pub fn parse_limited(
    raw: Bytes,
    route: ApiRoute,
    max_depth: usize,
) -> Result<RequestBody, ProxyError> {
    if !route.inspects_body() {
        return Ok(RequestBody {
            raw,
            json: None,
            model: None,
            stream: false,
            include_usage: false,
        });
    }
    if !depth_within(&raw, max_depth) {
        return Err(ProxyError::new(
            ErrorCode::InvalidJson,
            format!("request body nests JSON deeper than {max_depth} levels"),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_scan() {
        assert!(depth_within(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(!depth_within(br#"{"a":[1,{"b":2}]}"#, 2));
        // Brackets inside strings (with escaped quotes) do not count.
        assert!(depth_within(br#"{"a":"[[[[\"{{{{"}"#, 1));
        // An escaped backslash does not escape the closing quote.
        assert!(!depth_within(br#"{"a":"\\","b":[[1]]}"#, 2));
        assert!(depth_within(br#"{"a":"\\","b":[[1]]}"#, 3));
        // Unterminated strings and trailing backslashes end the scan without panicking.
        assert!(depth_within(br#"{"a":"abc"#, 1));
        assert!(depth_within(b"{\"a\\", 1));
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(!depth_within(deep.as_bytes(), 64));
        assert!(depth_within(deep.as_bytes(), 65));
        // Far beyond serde_json's own recursion limit: refused by the scan, no recursion.
        let very_deep = "[".repeat(1_000_000);
        assert!(!depth_within(very_deep.as_bytes(), 64));
    }
}
