//! Anthropic routes of the mock: `POST /v1/messages` (JSON and SSE) and
//! `POST /v1/messages/count_tokens`, shaped after `testkit/fixtures/anthropic/`.
//!
//! Stream order, as in the fixture: `message_start` (usage with input, cache-creation and
//! cache-read tokens, `output_tokens: 1`), `content_block_start`, `ping`, the
//! `content_block_delta`s (`text_delta`, or `input_json_delta` with `tools`),
//! `content_block_stop`, `message_delta` (stop reason + final `output_tokens`), `message_stop`.
//! The `error-event` fault cuts the stream after the first delta with an `error` event
//! (`overloaded_error`), exactly like `messages-stream-error.sse` (which has no ping).

use http::StatusCode;
use serde_json::{Value, json};

use super::body::sse_event;
use super::errors::{self, Provider};
use super::plan::{Output, Plan, PromptCounter, last_user_text};
use super::scenario::Fault;
use super::{Ctx, Reply, StreamPlan};

fn bad(ctx: &Ctx, msg: &str) -> Reply {
    Reply::Error(errors::bad_request(
        Provider::Anthropic,
        msg,
        &ctx.request_id,
    ))
}

/// Validate the common fields and count the input tokens (`system` + message contents).
fn prompt(ctx: &Ctx, body: &Value) -> Result<(String, usize), Reply> {
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return Err(bad(ctx, "model: Field required"));
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err(bad(ctx, "messages: Field required"));
    };
    let mut pc = PromptCounter::default();
    if let Some(system) = body.get("system") {
        pc.content(system);
    }
    for m in messages {
        if let Some(c) = m.get("content") {
            pc.content(c);
        }
    }
    Ok((model.to_owned(), pc.tokens()))
}

/// `POST /v1/messages/count_tokens`.
pub(crate) fn count_tokens(ctx: &Ctx, body: &Value) -> Reply {
    match prompt(ctx, body) {
        Ok((_, tokens)) => Reply::Json(StatusCode::OK, json!({ "input_tokens": tokens })),
        Err(r) => r,
    }
}

fn usage(plan: &Plan, output_tokens: usize) -> Value {
    json!({
        "input_tokens": plan.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": plan.cached_tokens,
        "output_tokens": output_tokens,
        "service_tier": "standard"
    })
}

/// `POST /v1/messages`.
pub(crate) fn messages(ctx: &Ctx, body: &Value) -> Reply {
    let (model, prompt_tokens) = match prompt(ctx, body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let tool_name = body
        .pointer("/tools/0/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let plan = Plan::new(
        &ctx.scenario,
        prompt_tokens,
        last_user_text(body.get("messages")),
        tool_name,
    );
    let msg_id = ctx.id("msg_");
    let tool_id = ctx.id("toolu_");
    let stop_reason = match plan.output {
        Output::Text { .. } => "end_turn",
        Output::Tool { .. } => "tool_use",
    };

    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let content = match &plan.output {
            Output::Text { text, .. } => json!([{"type": "text", "text": text}]),
            Output::Tool {
                name, arguments, ..
            } => {
                let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                json!([{"type": "tool_use", "id": tool_id, "name": name, "input": input}])
            }
        };
        return Reply::Json(
            StatusCode::OK,
            json!({
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": null,
                "usage": usage(&plan, plan.completion_tokens)
            }),
        );
    }

    let ev = |name: &str, data: &Value| sse_event(Some(name), &data.to_string());
    let message_start = ev(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "content": [],
            "model": model, "stop_reason": null, "stop_sequence": null,
            "usage": usage(&plan, 1)
        }}),
    );
    let (block, is_tool) = match &plan.output {
        Output::Text { .. } => (json!({"type": "text", "text": ""}), false),
        Output::Tool { name, .. } => (
            json!({"type": "tool_use", "id": tool_id, "name": name, "input": {}}),
            true,
        ),
    };
    let block_start = ev(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": block}),
    );
    // The real API sends `{"type": "ping"}` with a space; keep it byte for byte.
    let ping = (ctx.scenario.fault != Some(Fault::ErrorEvent))
        .then(|| sse_event(Some("ping"), r#"{"type": "ping"}"#));
    let deltas = plan.pieces().to_vec().into_iter().map(move |p| {
        let delta = if is_tool {
            json!({"type": "input_json_delta", "partial_json": p})
        } else {
            json!({"type": "text_delta", "text": p})
        };
        sse_event(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0, "delta": delta}).to_string(),
        )
    });
    let completion_tokens = plan.completion_tokens;
    let tail = std::iter::once_with(move || {
        [
            sse_event(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}).to_string(),
            ),
            sse_event(
                Some("message_delta"),
                &json!({
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                    "usage": {"output_tokens": completion_tokens}
                })
                .to_string(),
            ),
            sse_event(
                Some("message_stop"),
                &json!({"type": "message_stop"}).to_string(),
            ),
        ]
    })
    .flatten();
    let error_after = 3;
    let events = [message_start, block_start]
        .into_iter()
        .chain(ping)
        .chain(deltas)
        .chain(tail);
    Reply::Stream(StreamPlan {
        events: Box::new(events),
        error_after,
        error_event: sse_event(Some("error"), &errors::anthropic_stream_error().to_string()),
    })
}
