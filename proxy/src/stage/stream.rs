//! Stage 8, *stream*: relay the provider's answer to the agent.
//!
//! Server-sent events are decoded incrementally ([`iron_core::sse`]) and forwarded event by
//! event as they arrive — never buffered whole. Per event the stage reads the provider's
//! usage report, hides the usage chunk Iron forced when the agent did not ask for it, and
//! (later) meters, redacts and cuts off. Other answers (JSON, errors) are read whole — they
//! are small — so usage can be read and a provider key echoed in an error body scrubbed.
//! If the upstream fails or stalls mid-stream, the agent gets a final error event in its
//! API's shape instead of a silent truncation. If the agent goes away, the upstream is
//! closed at once.

use bytes::{Bytes, BytesMut};
use http::header;
use iron_core::sse::{SseDecoder, SseEvent, encode_event_into};
use iron_core::{ErrorCode, WireShape};
use pingora_error::ErrorType;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use serde_json::Value;

use crate::ctx::RequestCtx;
use crate::error::ProxyError;
use crate::stage::settle::Usage;
use crate::stage::upstream::Exchange;
use crate::state::Deployment;

/// Largest non-streamed answer Iron reads whole; larger ones are passed through as-is.
const MAX_BUFFERED_RESPONSE: usize = 64 * 1024 * 1024;

/// How the relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Upstream body fully read and delivered; the connection may be pooled.
    Complete,
    /// Upstream failed or stalled after the head; the agent got an error event.
    UpstreamFailed,
    /// The agent went away; the upstream was closed.
    ClientGone,
}

/// Response headers that are not forwarded (hop-by-hop, or recomputed by Iron).
const DROPPED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

fn response_head(
    up: &ResponseHeader,
    content_length: Option<usize>,
    chunked: bool,
) -> pingora_error::Result<ResponseHeader> {
    let mut head = ResponseHeader::build(up.status, Some(up.headers.len() + 2))?;
    for (name, value) in up.headers.iter() {
        if !DROPPED.contains(&name.as_str()) {
            head.append_header(name.clone(), value.clone())?;
        }
    }
    match content_length {
        Some(n) => head.insert_header(header::CONTENT_LENGTH, n)?,
        None if chunked => head.insert_header(header::TRANSFER_ENCODING, "chunked")?,
        None => {}
    }
    Ok(head)
}

fn is_event_stream(up: &ResponseHeader) -> bool {
    up.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// The final event sent when a stream cannot continue.
pub fn error_event(shape: WireShape, err: &ProxyError) -> Bytes {
    let mut out = BytesMut::new();
    match shape {
        WireShape::OpenAi => {
            encode_event_into(&mut out, None, &err.body(shape));
            encode_event_into(&mut out, None, b"[DONE]");
        }
        WireShape::Anthropic => encode_event_into(&mut out, Some("error"), &err.body(shape)),
    }
    out.freeze()
}

fn mid_stream_error(e: &pingora_error::Error, dep: &Deployment) -> ProxyError {
    if matches!(e.etype(), ErrorType::ReadTimedout) {
        ProxyError::new(
            ErrorCode::UpstreamTimeout,
            format!("provider `{}` stalled mid-stream", dep.name),
        )
    } else {
        ProxyError::new(
            ErrorCode::UpstreamError,
            format!("provider `{}` failed mid-stream", dep.name),
        )
    }
}

/// Per-stream state of the event transform.
struct EventFilter {
    hide_usage: bool,
    usage: Option<Usage>,
}

impl EventFilter {
    /// Appends the event (possibly changed) to `out`, or drops it.
    fn apply(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        let data = &ev.data[..];
        if memchr::memmem::find(data, b"\"usage\"").is_none() {
            out.extend_from_slice(&ev.raw);
            return;
        }
        let Ok(json) = serde_json::from_slice::<Value>(data) else {
            out.extend_from_slice(&ev.raw);
            return;
        };
        Usage::accumulate_event(&mut self.usage, &json);
        if !self.hide_usage {
            out.extend_from_slice(&ev.raw);
            return;
        }
        // The usage chunk Iron forced: `choices: []` with a usage object. Dropped.
        let is_usage_chunk = json
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
            && json.get("usage").is_some_and(|u| !u.is_null());
        if is_usage_chunk {
            return;
        }
        // Other chunks carry `"usage":null` only because Iron asked for usage: remove it.
        let name = ev.event_name();
        let mut cleaned = Vec::with_capacity(data.len());
        let mut rest = data;
        while let Some(i) = memchr::memmem::find(rest, b",\"usage\":null") {
            cleaned.extend_from_slice(&rest[..i]);
            rest = &rest[i + b",\"usage\":null".len()..];
        }
        cleaned.extend_from_slice(rest);
        encode_event_into(out, name, &cleaned);
    }
}

/// Runs the stage: relays the answer of `ex` to the agent.
pub async fn relay(
    session: &mut Session,
    ctx: &mut RequestCtx,
    ex: &mut Exchange,
    dep: &Deployment,
) -> Result<Outcome, ProxyError> {
    let internal = |_| ProxyError::new(ErrorCode::Internal, "could not build the response");
    let up_head = ex.session.response_header().cloned().ok_or_else(|| {
        ProxyError::new(ErrorCode::UpstreamError, "provider sent no response head")
    })?;
    ctx.status = up_head.status.as_u16();
    let shape = ctx.shape();
    let h1_downstream = !session.as_downstream().is_http2();

    if up_head.status.is_success() && is_event_stream(&up_head) {
        let head = response_head(&up_head, None, h1_downstream).map_err(internal)?;
        if session
            .write_response_header(Box::new(head), false)
            .await
            .is_err()
        {
            ex.session.shutdown().await;
            return Ok(Outcome::ClientGone);
        }
        let mut filter = EventFilter {
            hide_usage: !ctx.client_wants_usage,
            usage: None,
        };
        let mut decoder = SseDecoder::new();
        let mut out = BytesMut::new();
        let outcome = loop {
            match ex.session.read_response_body().await {
                Ok(Some(chunk)) => {
                    decoder.push(&chunk);
                    while let Ok(Some(ev)) = decoder.next_event() {
                        filter.apply(&ev, &mut out);
                    }
                    if decoder.buffered() > iron_core::sse::DEFAULT_MAX_EVENT_BYTES {
                        let err = ProxyError::new(
                            ErrorCode::UpstreamError,
                            "provider sent an oversized event",
                        );
                        out.extend_from_slice(&error_event(shape, &err));
                        let _ = session
                            .write_response_body(Some(out.split().freeze()), true)
                            .await;
                        ex.session.shutdown().await;
                        break Outcome::UpstreamFailed;
                    }
                    if !out.is_empty()
                        && session
                            .write_response_body(Some(out.split().freeze()), false)
                            .await
                            .is_err()
                    {
                        ex.session.shutdown().await;
                        break Outcome::ClientGone;
                    }
                }
                Ok(None) => {
                    if let Some(ev) = decoder.finish() {
                        filter.apply(&ev, &mut out);
                    }
                    let tail = (!out.is_empty()).then(|| out.split().freeze());
                    if session.write_response_body(tail, true).await.is_err() {
                        break Outcome::ClientGone;
                    }
                    break Outcome::Complete;
                }
                Err(e) => {
                    let err = mid_stream_error(&e, dep);
                    ctx.error = Some(err.code);
                    out.extend_from_slice(&error_event(shape, &err));
                    let _ = session
                        .write_response_body(Some(out.split().freeze()), true)
                        .await;
                    ex.session.shutdown().await;
                    break Outcome::UpstreamFailed;
                }
            }
        };
        ctx.usage = filter.usage;
        return Ok(outcome);
    }

    // Whole-body answers.
    let mut buf = BytesMut::new();
    loop {
        match ex.session.read_response_body().await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > MAX_BUFFERED_RESPONSE {
                    return pass_through_rest(session, ex, &up_head, buf, h1_downstream).await;
                }
            }
            Ok(None) => break,
            Err(e) => return Err(mid_stream_error(&e, dep)),
        }
    }
    let mut body = buf.freeze();
    if up_head.status.is_success() {
        if let Ok(json) = serde_json::from_slice::<Value>(&body) {
            ctx.usage = Usage::from_response(&json);
        }
    } else {
        body = scrub(body, dep.api_key.as_str());
    }
    let head = response_head(&up_head, Some(body.len()), false).map_err(internal)?;
    if session
        .write_response_header(Box::new(head), body.is_empty())
        .await
        .is_err()
    {
        return Ok(Outcome::ClientGone);
    }
    if !body.is_empty() && session.write_response_body(Some(body), true).await.is_err() {
        return Ok(Outcome::ClientGone);
    }
    Ok(Outcome::Complete)
}

async fn pass_through_rest(
    session: &mut Session,
    ex: &mut Exchange,
    up_head: &ResponseHeader,
    first: BytesMut,
    chunked: bool,
) -> Result<Outcome, ProxyError> {
    let head = response_head(up_head, None, chunked)
        .map_err(|_| ProxyError::new(ErrorCode::Internal, "could not build the response"))?;
    if session
        .write_response_header(Box::new(head), false)
        .await
        .is_err()
        || session
            .write_response_body(Some(first.freeze()), false)
            .await
            .is_err()
    {
        ex.session.shutdown().await;
        return Ok(Outcome::ClientGone);
    }
    loop {
        match ex.session.read_response_body().await {
            Ok(Some(chunk)) => {
                if session
                    .write_response_body(Some(chunk), false)
                    .await
                    .is_err()
                {
                    ex.session.shutdown().await;
                    return Ok(Outcome::ClientGone);
                }
            }
            Ok(None) => {
                let _ = session.write_response_body(None, true).await;
                return Ok(Outcome::Complete);
            }
            Err(_) => {
                ex.session.shutdown().await;
                return Ok(Outcome::UpstreamFailed);
            }
        }
    }
}

/// Replaces every occurrence of the provider key in an upstream error body.
pub fn scrub(body: Bytes, key: &str) -> Bytes {
    if key.len() < 8 || memchr::memmem::find(&body, key.as_bytes()).is_none() {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = &body[..];
    while let Some(i) = memchr::memmem::find(rest, key.as_bytes()) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(b"[REDACTED]");
        rest = &rest[i + key.len()..];
    }
    out.extend_from_slice(rest);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_keys_from_error_bodies() {
        let b = scrub(
            Bytes::from_static(b"{\"error\":\"bad key sk-abcdef123456 sk-abcdef123456\"}"),
            "sk-abcdef123456",
        );
        assert_eq!(&b[..], b"{\"error\":\"bad key [REDACTED] [REDACTED]\"}");
    }

    fn run_filter(hide: bool, stream: &[u8]) -> (String, Option<Usage>) {
        let mut f = EventFilter {
            hide_usage: hide,
            usage: None,
        };
        let mut d = SseDecoder::new();
        d.push(stream);
        let mut out = BytesMut::new();
        while let Ok(Some(ev)) = d.next_event() {
            f.apply(&ev, &mut out);
        }
        (String::from_utf8_lossy(&out).into_owned(), f.usage)
    }

    #[test]
    fn hides_forced_usage_chunk_but_reads_it() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
        let (out, usage) = run_filter(true, stream);
        assert_eq!(
            out,
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n"
        );
        assert_eq!(
            usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((3, 1))
        );
        let (out, usage) = run_filter(false, stream);
        assert_eq!(out.as_bytes(), stream);
        assert!(usage.is_some());
    }
}
