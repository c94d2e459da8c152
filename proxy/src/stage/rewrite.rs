//! Stage 6, *rewrite*: the request as the provider will see it.
//!
//! Drops the agent's credentials (`Authorization`, `x-api-key`) and hop-by-hop headers,
//! injects the deployment's key (Bearer for the OpenAI family, `x-api-key` +
//! `anthropic-version` for Anthropic), keeps every other header (`OpenAI-Organization`,
//! `anthropic-beta`, …), asks for an identity encoding so later stages can read the answer,
//! and forces `stream_options.include_usage` on OpenAI streams (remembering whether the
//! agent asked, so the stream stage can hide the usage chunk again). The received bytes go
//! upstream untouched unless a stage changed the body; when the only change is a missing
//! `stream_options`, it is spliced into the received bytes (no re-serialisation of a large
//! prompt); any other change re-serialises the parsed JSON.

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

/// How the upstream body is made from the received one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEdit {
    /// The received bytes, as they are.
    Unchanged,
    /// The received bytes with [`STREAM_OPTIONS_MEMBER`] spliced in before the closing brace
    /// (the object had members but no `stream_options`).
    AddStreamOptions,
    /// The parsed (and changed) JSON, serialised again.
    Reserialise,
}

impl BodyEdit {
    /// This edit after stage 5: a redaction changed the JSON, so it must be re-serialised.
    pub fn with_redaction(self, redacted: bool) -> BodyEdit {
        if redacted {
            BodyEdit::Reserialise
        } else {
            self
        }
    }
}

/// The member [`BodyEdit::AddStreamOptions`] appends to the top-level object.
pub const STREAM_OPTIONS_MEMBER: &[u8] = br#","stream_options":{"include_usage":true}"#;

/// Forces `stream_options.include_usage = true` on OpenAI streaming chat/completions, in the
/// parsed JSON, and says how the upstream body must change to match.
pub fn force_include_usage(route: ApiRoute, body: &mut RequestBody) -> BodyEdit {
    if !body.stream
        || body.include_usage
        || !matches!(route, ApiRoute::ChatCompletions | ApiRoute::Completions)
    {
        return BodyEdit::Unchanged;
    }
    let Some(Value::Object(obj)) = body.json.as_mut() else {
        return BodyEdit::Unchanged;
    };
    let edit = if obj.is_empty() || obj.contains_key("stream_options") {
        BodyEdit::Reserialise
    } else {
        BodyEdit::AddStreamOptions
    };
    let opts = obj
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Default::default()));
    match opts {
        Value::Object(o) => {
            o.insert("include_usage".into(), Value::Bool(true));
            edit
        }
        _ => BodyEdit::Unchanged,
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

/// The upstream body for `edit` (see [`BodyEdit`]).
pub fn upstream_body(body: &RequestBody, edit: BodyEdit) -> Result<Bytes, ProxyError> {
    let Some(json) = &body.json else {
        return Ok(body.raw.clone());
    };
    let spliced = match edit {
        BodyEdit::Unchanged => return Ok(body.raw.clone()),
        BodyEdit::AddStreamOptions => splice_stream_options(&body.raw),
        BodyEdit::Reserialise => None,
    };
    match spliced {
        Some(bytes) => Ok(bytes),
        None => serde_json::to_vec(json).map(Bytes::from).map_err(|_| {
            ProxyError::new(ErrorCode::Internal, "could not serialise the request body")
        }),
    }
}

/// `raw` (a JSON object with members) with [`STREAM_OPTIONS_MEMBER`] before its closing
/// brace; `None` when the last non-blank byte is not that brace.
fn splice_stream_options(raw: &[u8]) -> Option<Bytes> {
    let close = raw.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if raw[close] != b'}' {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + STREAM_OPTIONS_MEMBER.len());
    out.extend_from_slice(&raw[..close]);
    out.extend_from_slice(STREAM_OPTIONS_MEMBER);
    out.extend_from_slice(&raw[close..]);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::read::parse;

    fn edited(raw: &str) -> (BodyEdit, RequestBody, Bytes) {
        let mut body = parse(Bytes::from(raw.to_owned()), ApiRoute::ChatCompletions)
            .unwrap_or_else(|e| panic!("{raw}: {e:?}"));
        let edit = force_include_usage(ApiRoute::ChatCompletions, &mut body);
        let up = upstream_body(&body, edit).unwrap_or_else(|e| panic!("{e:?}"));
        (edit, body, up)
    }

    #[test]
    fn a_missing_stream_options_is_spliced_into_the_received_bytes() {
        let raw = "{ \"stream\": true,\n  \"model\":\"gpt-4o\", \"messages\":[{\"role\":\"user\",\"content\":\"}\"}] }\n\t";
        let (edit, body, up) = edited(raw);
        assert_eq!(edit, BodyEdit::AddStreamOptions);
        let up = std::str::from_utf8(&up).unwrap_or_else(|e| panic!("{e}"));
        // Everything the agent sent is kept byte for byte, key order and spacing included.
        let close = raw.rfind('}').unwrap_or_else(|| panic!("no brace"));
        assert_eq!(
            up,
            format!(
                "{}{}{}",
                &raw[..close],
                r#","stream_options":{"include_usage":true}"#,
                &raw[close..]
            )
        );
        let sent: Value = serde_json::from_str(up).unwrap_or_else(|e| panic!("{e}: {up}"));
        assert_eq!(Some(&sent), body.json.as_ref());
        assert_eq!(sent["stream_options"]["include_usage"], true);
    }

    #[test]
    fn an_existing_stream_options_is_rewritten_through_the_json() {
        for raw in [
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#,
            r#"{"model":"m","stream":true,"stream_options":{}}"#,
        ] {
            let (edit, _, up) = edited(raw);
            assert_eq!(edit, BodyEdit::Reserialise, "{raw}");
            let sent: Value = serde_json::from_slice(&up).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(sent["stream_options"]["include_usage"], true, "{raw}");
            assert_eq!(sent["model"], "m");
        }
    }

    #[test]
    fn bodies_that_need_no_usage_go_upstream_as_received() {
        for raw in [
            r#"{"model":"m","stream":false}"#,
            r#"{"model":"m"}"#,
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        ] {
            let (edit, _, up) = edited(raw);
            assert_eq!(edit, BodyEdit::Unchanged, "{raw}");
            assert_eq!(up, raw.as_bytes());
        }
    }

    #[test]
    fn a_redaction_forces_reserialisation() {
        let raw = r#"{"model":"m","stream":true}"#;
        let mut body = parse(
            Bytes::from_static(raw.as_bytes()),
            ApiRoute::ChatCompletions,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let edit = force_include_usage(ApiRoute::ChatCompletions, &mut body);
        assert_eq!(edit.with_redaction(true), BodyEdit::Reserialise);
        assert_eq!(
            BodyEdit::Unchanged.with_redaction(true),
            BodyEdit::Reserialise
        );
        assert_eq!(edit.with_redaction(false), BodyEdit::AddStreamOptions);
    }
}
