//! Stage 6, *rewrite*: the request as the provider will see it.
//!
//! Drops the agent's credentials (`Authorization`, `x-api-key`) and hop-by-hop headers,
//! injects the deployment's key (Bearer for the OpenAI family, `x-api-key` +
//! `anthropic-version` for Anthropic), keeps every other header (`OpenAI-Organization`,
//! `anthropic-beta`, …), asks for an identity encoding so later stages can read the answer,
//! and forces `stream_options.include_usage` on OpenAI streams (remembering whether the
//! agent asked, so the stream stage can hide the usage chunk again). The body is
//! re-serialised only when it changed; otherwise the received bytes go upstream untouched.

use bytes::Bytes;
use http::header::{self, HeaderName};
use iron_core::ErrorCode;
use iron_core::wire::ApiFamily;
use pingora_http::RequestHeader;
use serde_json::Value;

use crate::error::ProxyError;
use crate::stage::read::RequestBody;
use crate::stage::route::ApiRoute;
use crate::state::Deployment;

/// Anthropic API version sent when the agent did not choose one.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Headers never forwarded upstream: hop-by-hop (RFC 9110 §7.6.1), the agent's
/// credentials, and ones Iron sets itself.
const DROPPED: [&str; 12] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "x-api-key",
];

/// Whether the agent's header `name` is forwarded upstream.
fn forwarded(name: &HeaderName, nominated: &[String]) -> bool {
    let n = name.as_str();
    !DROPPED.contains(&n) && n != "accept-encoding" && !nominated.iter().any(|x| x == n)
}

/// Header names listed in `Connection:` are hop-by-hop too.
fn connection_nominated(req: &RequestHeader) -> Vec<String> {
    req.headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Forces `stream_options.include_usage = true` on OpenAI streaming chat/completions.
/// Returns true when the body changed.
pub fn force_include_usage(route: ApiRoute, body: &mut RequestBody) -> bool {
    if !body.stream
        || body.include_usage
        || !matches!(route, ApiRoute::ChatCompletions | ApiRoute::Completions)
    {
        return false;
    }
    let Some(Value::Object(obj)) = body.json.as_mut() else {
        return false;
    };
    let opts = obj
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Default::default()));
    match opts {
        Value::Object(o) => {
            o.insert("include_usage".into(), Value::Bool(true));
            true
        }
        _ => false,
    }
}

/// Builds the upstream request head and body for `deployment`.
pub fn rewrite(
    req: &RequestHeader,
    route: ApiRoute,
    deployment: &Deployment,
    body_len: Option<usize>,
) -> Result<RequestHeader, ProxyError> {
    let path = match req.uri.query() {
        Some(q) => deployment
            .endpoint
            .path_for(&format!("{}?{q}", req.uri.path())),
        None => deployment.endpoint.path_for(req.uri.path()),
    };
    let internal = |_| ProxyError::new(ErrorCode::Internal, "could not build the upstream request");
    let mut up = RequestHeader::build(
        req.method.clone(),
        path.as_bytes(),
        Some(req.headers.len() + 4),
    )
    .map_err(internal)?;
    let nominated = connection_nominated(req);
    for (name, value) in req.headers.iter() {
        if forwarded(name, &nominated) {
            up.append_header(name.clone(), value.clone())
                .map_err(internal)?;
        }
    }
    up.insert_header(header::HOST, deployment.endpoint.authority.as_str())
        .map_err(internal)?;
    up.insert_header(header::ACCEPT_ENCODING, "identity")
        .map_err(internal)?;
    match deployment.family() {
        ApiFamily::OpenAi => up.insert_header(header::AUTHORIZATION, deployment.credential.clone()),
        ApiFamily::Anthropic => {
            if !req.headers.contains_key("anthropic-version") {
                up.insert_header("anthropic-version", DEFAULT_ANTHROPIC_VERSION)
                    .map_err(internal)?;
            }
            up.insert_header("x-api-key", deployment.credential.clone())
        }
    }
    .map_err(internal)?;
    match body_len {
        Some(0) if route == ApiRoute::Models => {}
        Some(n) => up
            .insert_header(header::CONTENT_LENGTH, n)
            .map_err(internal)?,
        // Pass-through: the body streams unread, keep the agent's framing.
        None => {
            for name in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING] {
                if let Some(v) = req.headers.get(&name) {
                    up.insert_header(name, v.clone()).map_err(internal)?;
                }
            }
        }
    }
    Ok(up)
}

/// The upstream body: the received bytes, or the re-serialised JSON when a stage changed it.
pub fn upstream_body(body: &RequestBody, changed: bool) -> Result<Bytes, ProxyError> {
    match (&body.json, changed) {
        (Some(json), true) => serde_json::to_vec(json).map(Bytes::from).map_err(|_| {
            ProxyError::new(ErrorCode::Internal, "could not serialise the request body")
        }),
        _ => Ok(body.raw.clone()),
    }
}
