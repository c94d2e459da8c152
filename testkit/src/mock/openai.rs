//! OpenAI routes of the mock: chat completions, legacy completions, embeddings, Responses API
//! and models, in JSON and SSE, shaped after `testkit/fixtures/openai/`.
//!
//! Streams follow the fixtures: every chat chunk carries `service_tier`, `system_fingerprint`
//! and `obfuscation` padding (unless `stream_options.include_obfuscation` is false); with
//! `stream_options.include_usage` every chunk also carries `"usage":null` and a final chunk with
//! `"choices":[]` carries the usage; the stream ends with `data: [DONE]`.

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::body::sse_event;
use super::errors::{self, Provider};
use super::plan::{Output, Plan, PromptCounter, content_text, last_user_text};
use super::{Ctx, Reply, StreamPlan};

const SYSTEM_FINGERPRINT: &str = "fp_mock0001";
const DONE: &[u8] = b"data: [DONE]\n\n";
/// Default embedding size (text-embedding-3-small).
const DEFAULT_DIMENSIONS: usize = 1536;
const MAX_DIMENSIONS: usize = 8192;

/// Models listed by `GET /v1/models`.
pub(crate) const MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "o3-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "text-embedding-3-large",
];

fn require_model(ctx: &Ctx, body: &Value) -> Result<String, Reply> {
    match body.get("model").and_then(Value::as_str) {
        Some(m) => Ok(m.to_owned()),
        None => match &ctx.model_fallback {
            Some(m) => Ok(m.clone()),
            None => Err(bad(ctx, "you must provide a model parameter")),
        },
    }
}

fn bad(ctx: &Ctx, msg: &str) -> Reply {
    Reply::Error(errors::bad_request(Provider::OpenAi, msg, &ctx.request_id))
}

fn is_true(v: Option<&Value>) -> bool {
    v.and_then(Value::as_bool) == Some(true)
}

fn chat_usage(plan: &Plan) -> Value {
    json!({
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.total_tokens(),
        "prompt_tokens_details": {"cached_tokens": plan.openai_cached(), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// Deterministic padding in the spirit of OpenAI's `obfuscation` field (1–16 characters).
fn obfuscation(seq: u64, index: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = seq
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index as u64 + 1);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = (next() % 16 + 1) as usize;
    (0..len)
        .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// POST /v1/chat/completions

pub(crate) fn chat(ctx: &Ctx, body: &Value) -> Reply {
    let model = match require_model(ctx, body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return bad(ctx, "Missing required parameter: 'messages'.");
    };
    let mut pc = PromptCounter::default();
    for m in messages {
        if let Some(c) = m.get("content") {
            pc.content(c);
        }
    }
    let tool_name = body
        .pointer("/tools/0/function/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let plan = Plan::new(
        &ctx.scenario,
        pc.tokens(),
        last_user_text(body.get("messages")),
        tool_name,
    );
    let id = ctx.id("chatcmpl-");
    let call_id = ctx.id("call_");

    if !is_true(body.get("stream")) {
        let (message, finish) = match &plan.output {
            Output::Text { text, .. } => (
                json!({"role": "assistant", "content": text, "refusal": null, "annotations": []}),
                "stop",
            ),
            Output::Tool {
                name, arguments, ..
            } => (
                json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments}
                    }],
                    "refusal": null,
                    "annotations": []
                }),
                "tool_calls",
            ),
        };
        return Reply::Json(
            StatusCode::OK,
            json!({
                "id": id,
                "object": "chat.completion",
                "created": ctx.created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": finish
                }],
                "usage": chat_usage(&plan),
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT
            }),
        );
    }

    let include_usage = is_true(body.pointer("/stream_options/include_usage"));
    let include_obfuscation =
        body.pointer("/stream_options/include_obfuscation") != Some(&Value::Bool(false));
    let seq = ctx.seq;
    let created = ctx.created;
    let mk = move |index: usize, choices: Value, usage: Option<Value>| -> Bytes {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        });
        if include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        if include_obfuscation {
            c["obfuscation"] = Value::String(obfuscation(seq, index));
        }
        sse_event(None, &c.to_string())
    };
    let choice = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);

    let usage = chat_usage(&plan);
    let (first_delta, finish, pieces, is_tool) = match plan.output {
        Output::Text { pieces, .. } => (
            json!({"role": "assistant", "content": "", "refusal": null}),
            "stop",
            pieces,
            false,
        ),
        Output::Tool { name, pieces, .. } => (
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "index": 0,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""}
                }],
                "refusal": null
            }),
            "tool_calls",
            pieces,
            true,
        ),
    };
    let n = pieces.len();
    let mk1 = mk.clone();
    let mk2 = mk.clone();
    let events = std::iter::once(mk(0, choice(first_delta, Value::Null), None))
        .chain(pieces.into_iter().enumerate().map(move |(i, p)| {
            let delta = if is_tool {
                json!({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
            } else {
                json!({"content": p})
            };
            mk1(i + 1, choice(delta, Value::Null), None)
        }))
        .chain(std::iter::once_with(move || {
            mk2(n + 1, choice(json!({}), json!(finish)), None)
        }))
        .chain(include_usage.then(move || mk(n + 2, json!([]), Some(usage))))
        .chain(std::iter::once(Bytes::from_static(DONE)));
    Reply::Stream(StreamPlan {
        events: Box::new(events),
        error_after: 2,
        error_event: sse_event(None, &errors::openai_stream_error().to_string()),
    })
}

// ---------------------------------------------------------------------------------------------
// POST /v1/completions (legacy)

pub(crate) fn completions(ctx: &Ctx, body: &Value) -> Reply {
    let model = match require_model(ctx, body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(prompt) = body.get("prompt") else {
        return bad(ctx, "Missing required parameter: 'prompt'.");
    };
    let mut pc = PromptCounter::default();
    pc.input(prompt);
    let last = match prompt {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.iter().rev().find_map(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let mut scn = ctx.scenario.clone();
    scn.tools = false;
    let plan = Plan::new(&scn, pc.tokens(), last, None);
    let usage = json!({
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.total_tokens()
    });
    let id = ctx.id("cmpl-");
    let created = ctx.created;
    let Output::Text { text, pieces } = plan.output else {
        return bad(ctx, "tool calls are not supported on /v1/completions");
    };

    if !is_true(body.get("stream")) {
        return Reply::Json(
            StatusCode::OK,
            json!({
                "id": id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
                "usage": usage
            }),
        );
    }
    let include_usage = is_true(body.pointer("/stream_options/include_usage"));
    let mk = move |choices: Value, u: Option<Value>| -> Bytes {
        let mut c = json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        });
        if include_usage {
            c["usage"] = u.unwrap_or(Value::Null);
        }
        sse_event(None, &c.to_string())
    };
    let choice = |text: &str, finish: Value| json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]);
    let mk1 = mk.clone();
    let mk2 = mk.clone();
    let events = pieces
        .into_iter()
        .map(move |p| mk1(choice(&p, Value::Null), None))
        .chain(std::iter::once_with(move || {
            mk2(choice("", json!("stop")), None)
        }))
        .chain(include_usage.then(move || mk(json!([]), Some(usage))))
        .chain(std::iter::once(Bytes::from_static(DONE)));
    Reply::Stream(StreamPlan {
        events: Box::new(events),
        error_after: 1,
        error_event: sse_event(None, &errors::openai_stream_error().to_string()),
    })
}

// ---------------------------------------------------------------------------------------------
// POST /v1/embeddings

/// The inputs of an embeddings request, each as a hashable key plus its token count.
fn embedding_inputs(input: &Value) -> Option<Vec<(String, usize)>> {
    let one = |v: &Value| -> Option<(String, usize)> {
        match v {
            Value::String(s) => Some((s.clone(), super::plan::tokens_for_bytes(s.len()))),
            Value::Array(t) if t.iter().all(Value::is_number) => {
                Some((Value::Array(t.clone()).to_string(), t.len().max(1)))
            }
            _ => None,
        }
    };
    match input {
        Value::String(_) => one(input).map(|x| vec![x]),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) if items.iter().all(Value::is_number) => one(input).map(|x| vec![x]),
        Value::Array(items) => items.iter().map(one).collect(),
        _ => None,
    }
}

/// A deterministic unit vector for `key`.
fn embedding_vector(key: &str, dims: usize) -> Vec<f64> {
    // FNV-1a seed, splitmix64 stream.
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        seed ^= u64::from(*b);
        seed = seed.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut next = || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let raw: Vec<f64> = (0..dims)
        .map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    raw.iter()
        .map(|x| ((x / norm) * 1e6).round() / 1e6)
        .collect()
}

pub(crate) fn embeddings(ctx: &Ctx, body: &Value) -> Reply {
    let model = match require_model(ctx, body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(input) = body.get("input") else {
        return bad(ctx, "Missing required parameter: 'input'.");
    };
    let Some(inputs) = embedding_inputs(input) else {
        return bad(
            ctx,
            "'input' must be a string, an array of strings, an array of tokens or an array of token arrays",
        );
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return bad(
                ctx,
                &format!(
                    "Invalid value for 'encoding_format': '{other}'. Expected 'float' or 'base64'."
                ),
            );
        }
    };
    let dims = match body.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(v) => match v.as_u64() {
            Some(d) if d >= 1 && (d as usize) <= MAX_DIMENSIONS => d as usize,
            _ => return bad(ctx, "Invalid value for 'dimensions'."),
        },
    };
    let prompt_tokens: usize = inputs.iter().map(|(_, t)| *t).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, (key, _))| {
            let v = embedding_vector(key, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| (*f as f32).to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Reply::Json(
        StatusCode::OK,
        json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// POST /v1/responses

fn responses_usage(plan: &Plan) -> Value {
    json!({
        "input_tokens": plan.prompt_tokens,
        "input_tokens_details": {"cached_tokens": plan.openai_cached()},
        "output_tokens": plan.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": plan.total_tokens()
    })
}

/// The last user text of a Responses `input` (string, or list of items / messages).
fn responses_last_user(input: &Value) -> Option<String> {
    match input {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .and_then(|m| m.get("content"))
            .map(content_text),
        _ => None,
    }
}

pub(crate) fn responses(ctx: &Ctx, body: &Value) -> Reply {
    let model = match require_model(ctx, body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(input) = body.get("input") else {
        return bad(ctx, "Missing required parameter: 'input'.");
    };
    let mut pc = PromptCounter::default();
    if let Some(Value::String(i)) = body.get("instructions") {
        pc.text(i);
    }
    match input {
        Value::String(s) => pc.text(s),
        Value::Array(items) => {
            for item in items {
                match item.get("content") {
                    Some(c) => pc.content(c),
                    None => {
                        if let Some(Value::String(o)) = item.get("output") {
                            pc.text(o);
                        }
                    }
                }
            }
        }
        _ => return bad(ctx, "Invalid type for 'input'."),
    }
    let tool_name = body
        .pointer("/tools/0/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let plan = Plan::new(
        &ctx.scenario,
        pc.tokens(),
        responses_last_user(input),
        tool_name,
    );
    let resp_id = ctx.id("resp_");
    let item_id = match plan.output {
        Output::Text { .. } => ctx.id("msg_"),
        Output::Tool { .. } => ctx.id("fc_"),
    };
    let call_id = ctx.id("call_");
    let created = ctx.created;
    let usage = responses_usage(&plan);

    let final_item = match &plan.output {
        Output::Text { text, .. } => json!({
            "id": item_id, "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "text": text}]
        }),
        Output::Tool {
            name, arguments, ..
        } => json!({
            "id": item_id, "type": "function_call", "status": "completed",
            "arguments": arguments, "call_id": call_id, "name": name
        }),
    };
    let response = {
        let model = model.clone();
        let resp_id = resp_id.clone();
        move |status: &str, output: Value, usage: Value| {
            json!({
                "id": resp_id,
                "object": "response",
                "created_at": created,
                "status": status,
                "error": null,
                "incomplete_details": null,
                "model": model,
                "output": output,
                "parallel_tool_calls": true,
                "tool_choice": "auto",
                "tools": [],
                "usage": usage
            })
        }
    };

    if !is_true(body.get("stream")) {
        return Reply::Json(
            StatusCode::OK,
            response("completed", json!([final_item]), usage),
        );
    }

    let pieces = plan.pieces().to_vec();
    let mut head: Vec<(&'static str, Value)> = vec![
        (
            "response.created",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        (
            "response.in_progress",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
    ];
    let (deltas, tail): (
        Box<dyn Iterator<Item = (&'static str, Value)> + Send>,
        Vec<_>,
    ) = match &plan.output {
        Output::Text { text, .. } => {
            head.push((
                "response.output_item.added",
                json!({"output_index": 0, "item": {
                    "id": item_id, "type": "message", "status": "in_progress",
                    "content": [], "role": "assistant"
                }}),
            ));
            head.push((
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                           "part": {"type": "output_text", "annotations": [], "text": ""}}),
            ));
            let iid = item_id.clone();
            let deltas = pieces.into_iter().map(move |p| {
                (
                    "response.output_text.delta",
                    json!({"item_id": iid, "output_index": 0, "content_index": 0,
                               "delta": p, "logprobs": []}),
                )
            });
            let tail = vec![(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                           "text": text, "logprobs": []}),
            )];
            (Box::new(deltas), tail)
        }
        Output::Tool {
            name, arguments, ..
        } => {
            head.push((
                "response.output_item.added",
                json!({"output_index": 0, "item": {
                    "id": item_id, "type": "function_call", "status": "in_progress",
                    "arguments": "", "call_id": call_id, "name": name
                }}),
            ));
            let iid = item_id.clone();
            let deltas = pieces.into_iter().map(move |p| {
                (
                    "response.function_call_arguments.delta",
                    json!({"item_id": iid, "output_index": 0, "delta": p}),
                )
            });
            let tail = vec![
                (
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": 0, "arguments": arguments}),
                ),
                (
                    "response.output_item.done",
                    json!({"output_index": 0, "item": final_item}),
                ),
            ];
            (Box::new(deltas), tail)
        }
    };
    let error_after = head.len() + 1;
    let completed = std::iter::once_with(move || {
        (
            "response.completed",
            json!({"response": response("completed", json!([final_item]), usage)}),
        )
    });
    let events = head
        .into_iter()
        .chain(deltas)
        .chain(tail)
        .chain(completed)
        .enumerate()
        .map(|(seq, (name, mut data))| {
            let mut obj = serde_json::Map::new();
            obj.insert("type".into(), json!(name));
            obj.insert("sequence_number".into(), json!(seq));
            if let Value::Object(m) = &mut data {
                obj.append(m);
            }
            sse_event(Some(name), &Value::Object(obj).to_string())
        });
    let error = json!({
        "type": "error",
        "code": "server_error",
        "message": "The server had an error while processing your request. Sorry about that!",
        "param": null,
        "sequence_number": error_after
    });
    Reply::Stream(StreamPlan {
        events: Box::new(events),
        error_after,
        error_event: sse_event(Some("error"), &error.to_string()),
    })
}

// ---------------------------------------------------------------------------------------------
// GET /v1/models, GET /v1/models/{id}

fn model_object(id: &str) -> Value {
    let owner = if id.starts_with("text-embedding") || id.starts_with("gpt-3.5") {
        "openai-internal"
    } else {
        "system"
    };
    json!({"id": id, "object": "model", "created": 1_715_367_049u64, "owned_by": owner})
}

pub(crate) fn models() -> Reply {
    let data: Vec<Value> = MODELS.iter().map(|m| model_object(m)).collect();
    Reply::Json(StatusCode::OK, json!({"object": "list", "data": data}))
}

pub(crate) fn model(id: &str) -> Reply {
    if MODELS.contains(&id) {
        Reply::Json(StatusCode::OK, model_object(id))
    } else {
        Reply::Error(errors::model_not_found(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_vectors_are_deterministic_unit_vectors() {
        let a = embedding_vector("hello", 64);
        assert_eq!(a, embedding_vector("hello", 64));
        assert_ne!(a, embedding_vector("world", 64));
        let norm: f64 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }

    #[test]
    fn obfuscation_is_short_and_deterministic() {
        for i in 0..50 {
            let o = obfuscation(7, i);
            assert!((1..=16).contains(&o.len()));
            assert_eq!(o, obfuscation(7, i));
        }
    }
}
