//! Stage 8, *stream*: relay the provider's answer to the agent.
//!
//! Server-sent events are decoded incrementally ([`iron_core::sse`]) and forwarded event by
//! event as they arrive — never buffered whole. Per event the stage reads the provider's
//! usage report, hides the usage chunk Iron forced when the agent did not ask for it, and
//! (later) meters, redacts and cuts off. Other answers (JSON, errors) are read whole — they
//! are small — so usage can be read and a provider key echoed in an error body scrubbed.
//! If the upstream fails or stalls mid-stream, the agent gets a final error event in its
//! API's shape instead of a silent truncation. If the agent goes away, the upstream is
//! closed at once. Time spent awaiting the upstream body and the agent's socket is added to
//! `ctx.upstream_wait` / `ctx.client_wait`, so Iron's overhead metric excludes it.

use bytes::{Bytes, BytesMut};
use http::header;
use iron_core::Money;
use iron_core::sse::{SseDecoder, SseEvent, encode_event_into};
use iron_core::{ErrorCode, WireShape};
use pingora_error::ErrorType;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use serde_json::Value;

use std::collections::BTreeMap;
use std::sync::Arc;

use iron_core::pii::{Detections, PiiPolicy, StreamRedactor, Vault, restore_response_json};

use crate::ctx::RequestCtx;
use crate::deltas::{Channel, Delta};
use crate::error::ProxyError;
use iron_core::meter::DeltaMeter;
use iron_core::pricing::{ModelPrice, TokenUsage};

use crate::stage::settle;
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

/// On a rate-limited route, Iron's `x-ratelimit-*` headers (ratelimit stage) replace all of
/// the provider's, which describe Iron's own provider key rather than the agent's limits.
fn add_rate_headers(head: &mut ResponseHeader, ctx: &RequestCtx) {
    if ctx.rate_headers.is_empty() {
        return;
    }
    for kind in ["requests", "tokens"] {
        for what in ["limit", "remaining", "reset"] {
            let _ = head.remove_header(format!("x-ratelimit-{what}-{kind}").as_str());
        }
    }
    for (name, value) in &ctx.rate_headers {
        let _ = head.insert_header(*name, value.as_str());
    }
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

/// Response-side PII state of one stream: one redactor per text channel, plus the last
/// event of each channel as a template for the event that flushes its held-back tail.
struct StreamPii {
    policy: Arc<PiiPolicy>,
    vault: Arc<Vault>,
    channels: BTreeMap<Channel, (StreamRedactor, Option<String>, Value, Delta)>,
}

/// Per-stream state of the event transform.
struct EventPipeline {
    hide_usage: bool,
    /// Per-chunk metering: the output price, the stream's token counter, and the output
    /// cost charged so far (charged as the difference of running totals, so rounding to the
    /// micro-dollar happens once, not per chunk).
    meter: Option<(ModelPrice, DeltaMeter<'static>, Money)>,
    usage: Option<TokenUsage>,
    pii: Option<StreamPii>,
}

/// What one event yields besides its bytes.
#[derive(Default)]
struct EventResult {
    /// Generated text carried by the event (before redaction), for metering.
    text: String,
}

impl EventPipeline {
    fn new(
        hide_usage: bool,
        pii: Option<(Arc<PiiPolicy>, Arc<Vault>)>,
        price: Option<ModelPrice>,
    ) -> Self {
        EventPipeline {
            hide_usage,
            meter: price.map(|p| (p, DeltaMeter::new(), Money::ZERO)),
            usage: None,
            pii: pii.map(|(policy, vault)| StreamPii {
                policy,
                vault,
                channels: BTreeMap::new(),
            }),
        }
    }

    /// Appends the event (possibly changed) to `out`, or drops it.
    fn apply(
        &mut self,
        ev: &SseEvent,
        out: &mut BytesMut,
        det: &mut Detections,
    ) -> Result<EventResult, ProxyError> {
        let data = &ev.data[..];
        let is_json = data.first() == Some(&b'{');
        let has_usage = memchr::memmem::find(data, b"\"usage\"").is_some();
        if !is_json || (self.pii.is_none() && !has_usage && !self.needs_text()) {
            if !is_json && data == b"[DONE]" {
                self.flush(None, out, det)?;
            }
            out.extend_from_slice(&ev.raw);
            return Ok(EventResult::default());
        }
        let Ok(mut json) = serde_json::from_slice::<Value>(data) else {
            out.extend_from_slice(&ev.raw);
            return Ok(EventResult::default());
        };
        let mut changed = false;
        if has_usage {
            settle::accumulate_event(&mut self.usage, &json);
            if self.hide_usage {
                // The usage chunk Iron forced (`choices: []` + usage) is dropped; the
                // `"usage": null` it caused on other chunks is removed.
                let is_usage_chunk = json
                    .get("choices")
                    .and_then(Value::as_array)
                    .is_some_and(Vec::is_empty)
                    && json.get("usage").is_some_and(|u| !u.is_null());
                if is_usage_chunk {
                    return Ok(EventResult::default());
                }
                if let Some(obj) = json.as_object_mut()
                    && obj.get("usage").is_some_and(Value::is_null)
                {
                    obj.remove("usage");
                    changed = true;
                }
            }
        }
        let mut result = EventResult::default();
        let found: Vec<(Delta, String)> = crate::deltas::find(&json)
            .into_iter()
            .map(|(d, t)| (d, t.to_owned()))
            .collect();
        for (_, t) in &found {
            result.text.push_str(t);
        }
        // Channels that end with this event flush their held-back text first.
        let ending = ending_channels(&json);
        if !ending.is_empty() {
            self.flush(Some(&ending), out, det)?;
        }
        if let Some(pii) = self.pii.as_mut() {
            for (delta, text) in found {
                let entry = pii
                    .channels
                    .entry(delta.channel.clone())
                    .or_insert_with(|| {
                        (
                            StreamRedactor::new(pii.policy.clone(), pii.vault.clone()),
                            ev.event_name().map(str::to_owned),
                            Value::Null,
                            delta.clone(),
                        )
                    });
                let mut emitted = String::new();
                entry
                    .0
                    .push(&text, &mut emitted, det)
                    .map_err(|b| ProxyError::new(ErrorCode::PiiBlocked, b.to_string()))?;
                if emitted != text {
                    crate::deltas::set(&mut json, &delta, emitted);
                    changed = true;
                }
                entry.2 = json.clone();
                entry.3 = delta;
            }
            changed |= restore_full_texts(&mut json, pii, det)?;
        }
        if changed {
            let bytes = serde_json::to_vec(&json).unwrap_or_default();
            encode_event_into(out, ev.event_name(), &bytes);
        } else {
            out.extend_from_slice(&ev.raw);
        }
        if is_final_event(&json) {
            self.flush(None, out, det)?;
        }
        Ok(result)
    }

    fn needs_text(&self) -> bool {
        self.meter.is_some()
    }

    /// Output tokens and their cost for the text of one upstream chunk.
    fn meter(&mut self, text: &str) -> (u64, Money) {
        match self.meter.as_mut() {
            Some((price, m, charged)) if !text.is_empty() => {
                let tokens = m.push(text);
                let total = price.output_cost(m.total());
                let cost = total.saturating_sub(*charged);
                *charged = total;
                (tokens, cost)
            }
            _ => (0, Money::ZERO),
        }
    }

    /// Emits what the redactors of `channels` (all when `None`) still hold, each as one
    /// synthesized delta event shaped like the channel's last event.
    fn flush(
        &mut self,
        channels: Option<&[Channel]>,
        out: &mut BytesMut,
        det: &mut Detections,
    ) -> Result<(), ProxyError> {
        let Some(pii) = self.pii.as_mut() else {
            return Ok(());
        };
        let keys: Vec<Channel> = match channels {
            Some(c) => c
                .iter()
                .filter(|k| pii.channels.contains_key(k))
                .cloned()
                .collect(),
            None => pii.channels.keys().cloned().collect(),
        };
        for key in keys {
            let Some((mut redactor, name, mut template, delta)) = pii.channels.remove(&key) else {
                continue;
            };
            let mut tail = String::new();
            redactor
                .finish(&mut tail, det)
                .map_err(|b| ProxyError::new(ErrorCode::PiiBlocked, b.to_string()))?;
            if tail.is_empty() || template.is_null() {
                continue;
            }
            crate::deltas::set(&mut template, &delta, tail);
            let bytes = serde_json::to_vec(&template).unwrap_or_default();
            encode_event_into(out, name.as_deref(), &bytes);
        }
        Ok(())
    }
}

/// Channels that end with `event`: an OpenAI choice with a `finish_reason`, an Anthropic
/// `content_block_stop`, a Responses `*.done` event.
fn ending_channels(event: &Value) -> Vec<Channel> {
    let mut out = Vec::new();
    if let Some(choices) = event.get("choices").and_then(Value::as_array) {
        for c in choices {
            if c.get("finish_reason").is_some_and(|f| !f.is_null()) {
                let choice = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                out.push(Channel::Content { choice });
                for call in 0..64 {
                    out.push(Channel::ToolArguments { choice, call });
                }
            }
        }
        return out;
    }
    let idx = |k: &str| event.get(k).and_then(Value::as_u64).unwrap_or(0);
    match event.get("type").and_then(Value::as_str) {
        Some("content_block_stop") => out.push(Channel::Block {
            index: idx("index"),
        }),
        Some(
            "response.output_text.done"
            | "response.function_call_arguments.done"
            | "response.refusal.done",
        ) => out.push(Channel::Output {
            output: idx("output_index"),
            content: idx("content_index"),
        }),
        _ => {}
    }
    out
}

/// Events after which nothing more is generated: every redactor is flushed.
fn is_final_event(event: &Value) -> bool {
    matches!(
        event.get("type").and_then(Value::as_str),
        Some(
            "message_stop"
                | "response.completed"
                | "response.failed"
                | "response.incomplete"
                | "error"
        )
    )
}

/// Whole-text fields of summary events (`response.output_text.done.text`, the response
/// object of `response.completed`, Anthropic `message_start` content) get the non-stream
/// treatment: placeholders restored, new PII redacted.
fn restore_full_texts(
    json: &mut Value,
    pii: &StreamPii,
    det: &mut Detections,
) -> Result<bool, ProxyError> {
    let blocked =
        |b: iron_core::pii::Blocked| ProxyError::new(ErrorCode::PiiBlocked, b.to_string());
    match json.get("type").and_then(Value::as_str) {
        Some("response.output_text.done") => {
            let Some(text) = json.get("text").and_then(Value::as_str) else {
                return Ok(false);
            };
            let mut r = StreamRedactor::new(pii.policy.clone(), pii.vault.clone());
            let mut out = String::new();
            r.push(text, &mut out, det).map_err(blocked)?;
            r.finish(&mut out, det).map_err(blocked)?;
            if out == text {
                return Ok(false);
            }
            json["text"] = Value::String(out);
            Ok(true)
        }
        Some("response.completed" | "response.incomplete") => match json.get_mut("response") {
            Some(resp) => {
                restore_response_json(resp, &pii.policy, &pii.vault, det).map_err(blocked)
            }
            None => Ok(false),
        },
        _ => Ok(false),
    }
}

/// Awaits `fut` and adds the time it took to `wait`: time blocked on the upstream or on
/// the agent is not Iron's overhead (`crate::metrics::overhead`).
async fn timed<T>(wait: &mut std::time::Duration, fut: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = fut.await;
    *wait += started.elapsed();
    out
}

/// Ends a stream that cannot go on: what is ready, a final error event in the agent's API
/// shape, the end of the body; the upstream connection is closed.
async fn end_with_error(
    session: &mut Session,
    ex: &mut Exchange,
    mut out: BytesMut,
    shape: WireShape,
    err: &ProxyError,
) -> Outcome {
    out.extend_from_slice(&error_event(shape, err));
    let _ = session.write_response_body(Some(out.freeze()), true).await;
    ex.session.shutdown().await;
    Outcome::UpstreamFailed
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
        let mut head = response_head(&up_head, None, h1_downstream).map_err(internal)?;
        add_rate_headers(&mut head, ctx);
        if timed(
            &mut ctx.client_wait,
            session.write_response_header(Box::new(head), false),
        )
        .await
        .is_err()
        {
            ex.session.shutdown().await;
            return Ok(Outcome::ClientGone);
        }
        let price = if ctx.reservation.is_some() {
            ctx.price
        } else {
            None
        };
        let mut pipeline = EventPipeline::new(!ctx.client_wants_usage, ctx.pii.clone(), price);
        let mut det = Detections::new();
        let mut decoder = SseDecoder::new();
        let mut out = BytesMut::new();
        let outcome = loop {
            match timed(&mut ctx.upstream_wait, ex.session.read_response_body()).await {
                Ok(Some(chunk)) => {
                    decoder.push(&chunk);
                    let mut failed = None;
                    let mut text = String::new();
                    while let Ok(Some(ev)) = decoder.next_event() {
                        match pipeline.apply(&ev, &mut out, &mut det) {
                            Ok(r) => text.push_str(&r.text),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    // Pay for this chunk before the agent sees it; if the budget cannot,
                    // the stream ends here.
                    let (tokens, cost) = pipeline.meter(&text);
                    if tokens > 0
                        && let Some(r) = ctx.reservation.as_mut()
                    {
                        if r.charge(cost).await {
                            ctx.metered_output_tokens += tokens;
                        } else if failed.is_none() {
                            ctx.cut_off = true;
                            out.clear();
                            failed = Some(ProxyError::new(
                                ErrorCode::BudgetExceeded,
                                "the budget is exhausted: the stream was cut off",
                            ));
                        }
                    }
                    if failed.is_none()
                        && decoder.buffered() > iron_core::sse::DEFAULT_MAX_EVENT_BYTES
                    {
                        failed = Some(ProxyError::new(
                            ErrorCode::UpstreamError,
                            "provider sent an oversized event",
                        ));
                    }
                    if let Some(err) = failed {
                        if err.code != ErrorCode::BudgetExceeded {
                            ctx.error = Some(err.code);
                        }
                        break end_with_error(session, ex, out, shape, &err).await;
                    }
                    if !out.is_empty()
                        && timed(
                            &mut ctx.client_wait,
                            session.write_response_body(Some(out.split().freeze()), false),
                        )
                        .await
                        .is_err()
                    {
                        ex.session.shutdown().await;
                        break Outcome::ClientGone;
                    }
                }
                Ok(None) => {
                    if let Some(ev) = decoder.finish() {
                        let _ = pipeline.apply(&ev, &mut out, &mut det);
                    }
                    let _ = pipeline.flush(None, &mut out, &mut det);
                    let tail = (!out.is_empty()).then(|| out.split().freeze());
                    if timed(
                        &mut ctx.client_wait,
                        session.write_response_body(tail, true),
                    )
                    .await
                    .is_err()
                    {
                        break Outcome::ClientGone;
                    }
                    break Outcome::Complete;
                }
                Err(e) => {
                    let err = mid_stream_error(&e, dep);
                    ctx.error = Some(err.code);
                    break end_with_error(session, ex, out, shape, &err).await;
                }
            }
        };
        ctx.usage = pipeline.usage;
        ctx.detections.merge(&det);
        return Ok(outcome);
    }

    // Whole-body answers.
    let mut buf = BytesMut::new();
    loop {
        match timed(&mut ctx.upstream_wait, ex.session.read_response_body()).await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > MAX_BUFFERED_RESPONSE {
                    return pass_through_rest(session, ctx, ex, &up_head, buf, h1_downstream).await;
                }
            }
            Ok(None) => break,
            Err(e) => return Err(mid_stream_error(&e, dep)),
        }
    }
    let mut body = buf.freeze();
    if up_head.status.is_success() {
        if let Ok(mut json) = serde_json::from_slice::<Value>(&body) {
            ctx.usage = settle::from_response(&json);
            if let Some((policy, vault)) = &ctx.pii {
                let changed = restore_response_json(&mut json, policy, vault, &mut ctx.detections)
                    .map_err(|b| ProxyError::new(ErrorCode::PiiBlocked, b.to_string()))?;
                if changed {
                    body = Bytes::from(serde_json::to_vec(&json).unwrap_or_default());
                }
            }
        }
    } else {
        body = scrub(body, dep.api_key.as_str());
    }
    let mut head = response_head(&up_head, Some(body.len()), false).map_err(internal)?;
    add_rate_headers(&mut head, ctx);
    if timed(
        &mut ctx.client_wait,
        session.write_response_header(Box::new(head), body.is_empty()),
    )
    .await
    .is_err()
    {
        return Ok(Outcome::ClientGone);
    }
    if !body.is_empty()
        && timed(
            &mut ctx.client_wait,
            session.write_response_body(Some(body), true),
        )
        .await
        .is_err()
    {
        return Ok(Outcome::ClientGone);
    }
    Ok(Outcome::Complete)
}

async fn pass_through_rest(
    session: &mut Session,
    ctx: &mut RequestCtx,
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
        match timed(&mut ctx.upstream_wait, ex.session.read_response_body()).await {
            Ok(Some(chunk)) => {
                if timed(
                    &mut ctx.client_wait,
                    session.write_response_body(Some(chunk), false),
                )
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

    fn run_filter(hide: bool, stream: &[u8]) -> (String, Option<TokenUsage>) {
        let mut f = EventPipeline::new(hide, None, None);
        let mut d = SseDecoder::new();
        d.push(stream);
        let mut out = BytesMut::new();
        let mut det = Detections::new();
        while let Ok(Some(ev)) = d.next_event() {
            f.apply(&ev, &mut out, &mut det).unwrap();
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
