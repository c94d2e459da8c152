//! Anthropic routes of the mock against the fixtures: Messages JSON and stream (ping, cache
//! tokens, usage in message_start/message_delta), tool_use blocks, count_tokens, header checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use iron_testkit::{MockUpstream, SseEvent, fixtures, parse_sse};
use serde_json::{Value, json};

/// Fixture events that belong to content block `index` (block start/delta/stop).
fn in_block(e: &SseEvent, index: u64) -> bool {
    let v = e.json().unwrap();
    v.get("index").and_then(Value::as_u64) == Some(index)
}

/// Sub-kind used to pick the matching fixture event: the block or delta type.
fn sub_kind(v: &Value) -> String {
    let block = v["content_block"]["type"].as_str();
    let delta = v["delta"]["type"].as_str();
    format!("{}/{}", block.unwrap_or("-"), delta.unwrap_or("-"))
}

fn assert_fields_like_fixture(events: &[SseEvent]) {
    let fx = parse_sse(fixtures::ANTHROPIC_MESSAGES_STREAM_SSE);
    for e in events {
        let v = e.json().unwrap();
        assert_eq!(
            v["type"],
            e.event.clone().unwrap(),
            "type field = event name"
        );
        let f = fx
            .iter()
            .find(|f| f.event == e.event && sub_kind(&f.json().unwrap()) == sub_kind(&v))
            .unwrap_or_else(|| panic!("no fixture event like {:?} {}", e.event, sub_kind(&v)));
        assert_covers(&f.json().unwrap(), &v, e.event.as_deref().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_stream_matches_fixture() {
    let mock = MockUpstream::start().await.unwrap();
    let events = post_sse(
        &mock,
        "/v1/messages",
        &anthropic_body(true),
        ANTHROPIC_HEADERS,
    )
    .await;
    let fx = parse_sse(fixtures::ANTHROPIC_MESSAGES_STREAM_SSE);
    // The fixture has a text block (index 0) then a tool_use block (index 1); a text answer is
    // the fixture without the tool block.
    let expected: Vec<SseEvent> = fx.iter().filter(|e| !in_block(e, 1)).cloned().collect();
    assert_eq!(collapse(names(&events)), collapse(names(&expected)));
    assert_fields_like_fixture(&events);

    let ping = events
        .iter()
        .find(|e| e.event.as_deref() == Some("ping"))
        .unwrap();
    assert_eq!(ping.data, r#"{"type": "ping"}"#, "ping byte for byte");
    let d = datas(&events);
    let start = &d[0]["message"];
    assert_eq!(start["model"], "claude-sonnet-4-5");
    // "Be brief." (9) + "Say hello to Iron." (18) = 27 bytes -> 7 tokens.
    assert_eq!(start["usage"]["input_tokens"], 7);
    assert_eq!(start["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(start["usage"]["cache_read_input_tokens"], 0);
    let text: String = d
        .iter()
        .filter_map(|x| x["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, iron_testkit::mock::scenario::DEFAULT_ANSWER);
    let delta = d.iter().find(|x| x["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 10);
    assert_eq!(
        d.iter()
            .filter(|x| x["type"] == "content_block_delta")
            .count(),
        8
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_json_and_usage_consistency() {
    let mock = MockUpstream::start().await.unwrap();
    let hdrs: Vec<(&str, &str)> = ANTHROPIC_HEADERS
        .iter()
        .copied()
        .chain([("x-mock-cached-tokens", "1024"), ("x-mock-tokens", "25")])
        .collect();
    let resp = post(&mock, "/v1/messages", &anthropic_body(false), &hdrs).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    assert!(
        resp.headers()
            .contains_key("anthropic-ratelimit-requests-remaining")
    );
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "end_turn");
    let fx = parse_sse(fixtures::ANTHROPIC_MESSAGES_STREAM_SSE);
    let fx_usage = fx[0].json().unwrap()["message"]["usage"].clone();
    assert_covers(&fx_usage, &v["usage"], "message usage");
    assert_eq!(v["usage"]["input_tokens"], 7);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 1024);
    assert_eq!(v["usage"]["output_tokens"], 25);

    let events = post_sse(&mock, "/v1/messages", &anthropic_body(true), &hdrs).await;
    let d = datas(&events);
    assert_eq!(
        d[0]["message"]["usage"]["input_tokens"],
        v["usage"]["input_tokens"]
    );
    assert_eq!(
        d[0]["message"]["usage"]["cache_read_input_tokens"],
        v["usage"]["cache_read_input_tokens"]
    );
    let delta = d.iter().find(|x| x["type"] == "message_delta").unwrap();
    assert_eq!(delta["usage"]["output_tokens"], v["usage"]["output_tokens"]);
    assert_eq!(
        d.iter()
            .filter(|x| x["type"] == "content_block_delta")
            .count(),
        25
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_tool_use_stream_and_json() {
    let mock = MockUpstream::start().await.unwrap();
    let mut body = anthropic_body(true);
    body["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
    let hdrs: Vec<(&str, &str)> = ANTHROPIC_HEADERS
        .iter()
        .copied()
        .chain([("x-mock-tools", "true"), ("x-mock-chunks", "2")])
        .collect();
    let events = post_sse(&mock, "/v1/messages", &body, &hdrs).await;
    assert_eq!(
        collapse(names(&events)),
        vec![
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_fields_like_fixture(&events);
    let d = datas(&events);
    assert_eq!(d[1]["content_block"]["type"], "tool_use");
    assert_eq!(d[1]["content_block"]["name"], "get_weather");
    let partial: String = d
        .iter()
        .filter_map(|x| x["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        json!({"location": "Paris"})
    );
    let delta = d.iter().find(|x| x["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");

    body["stream"] = json!(false);
    let (status, v) = post_json(&mock, "/v1/messages", &body, &hdrs).await;
    assert_eq!(status, 200);
    assert_eq!(v["content"][0]["type"], "tool_use");
    assert_eq!(v["content"][0]["input"], json!({"location": "Paris"}));
    assert_eq!(v["stop_reason"], "tool_use");
}

#[tokio::test(flavor = "multi_thread")]
async fn count_tokens_matches_messages_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let mut body = anthropic_body(false);
    body.as_object_mut().unwrap().remove("max_tokens");
    let (status, v) = post_json(&mock, "/v1/messages/count_tokens", &body, ANTHROPIC_HEADERS).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"input_tokens": 7}));
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_requires_key_and_version() {
    let mock = MockUpstream::start().await.unwrap();
    // No version header.
    let (status, v) = post_json(
        &mock,
        "/v1/messages",
        &anthropic_body(false),
        &[("x-api-key", "k")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-version")
    );
    // No credentials at all.
    let (status, v) = post_json(
        &mock,
        "/v1/messages",
        &anthropic_body(false),
        &[("anthropic-version", "2023-06-01")],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["type"], "authentication_error");
    // Bearer is accepted too, and recorded.
    let (status, _) = post_json(
        &mock,
        "/v1/messages",
        &anthropic_body(false),
        &[
            ("authorization", "Bearer ic_abc"),
            ("anthropic-version", "2023-06-01"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].header("x-api-key"), Some("k"));
    assert_eq!(reqs[2].header("Authorization"), Some("Bearer ic_abc"));
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_malformed_json_is_400_in_anthropic_shape() {
    let mock = MockUpstream::start().await.unwrap();
    let mut req = client().post(mock.url("/v1/messages")).body("not json");
    for (k, v) in ANTHROPIC_HEADERS {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_returns_last_user_message() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "mail [EMAIL_1] now"}]}
        ]
    });
    let hdrs: Vec<(&str, &str)> = ANTHROPIC_HEADERS
        .iter()
        .copied()
        .chain([("x-mock-echo", "1")])
        .collect();
    let (_, v) = post_json(&mock, "/v1/messages", &body, &hdrs).await;
    assert_eq!(v["content"][0]["text"], "mail [EMAIL_1] now");
    assert_eq!(v["usage"]["output_tokens"], 3);
}
