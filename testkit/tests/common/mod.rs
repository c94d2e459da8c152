//! Helpers shared by the testkit's integration tests: HTTP calls to the mock, SSE collection,
//! and the structural comparison with the fixtures ("every field the provider sends, with the
//! same JSON type").
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use iron_testkit::{MockUpstream, SseEvent, parse_sse};
use serde_json::Value;

pub const ANTHROPIC_HEADERS: &[(&str, &str)] = &[
    ("x-api-key", "sk-ant-test"),
    ("anthropic-version", "2023-06-01"),
];

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn post(
    mock: &MockUpstream,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().post(mock.url(path)).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

pub async fn post_json(
    mock: &MockUpstream,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let resp = post(mock, path, body, headers).await;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    (status, v)
}

/// POST and collect the whole SSE body.
pub async fn post_sse(
    mock: &MockUpstream,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Vec<SseEvent> {
    let resp = post(mock, path, body, headers).await;
    assert_eq!(resp.status(), 200, "stream status");
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream",
        "stream content-type"
    );
    let text = resp.text().await.unwrap();
    parse_sse(&text)
}

/// Chat request body.
pub fn chat_body(stream: bool, include_usage: Option<bool>) -> Value {
    let mut b = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of France?"}
        ],
        "stream": stream
    });
    if let Some(u) = include_usage {
        b["stream_options"] = serde_json::json!({"include_usage": u});
    }
    b
}

pub fn anthropic_body(stream: bool) -> Value {
    serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello to Iron."}]}],
        "stream": stream
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every `path:type` in a JSON value (`a.b[].c:string`).
pub fn type_paths(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(v, String::new(), &mut out);
    out
}

fn walk(v: &Value, path: String, out: &mut BTreeSet<String>) {
    out.insert(format!("{path}:{}", kind(v)));
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(c, p, out);
            }
        }
        Value::Array(a) => {
            for c in a {
                walk(c, format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// Assert that `actual` has every field of `fixture`, with the same JSON type.
pub fn assert_covers(fixture: &Value, actual: &Value, what: &str) {
    let want = type_paths(fixture);
    let have = type_paths(actual);
    let missing: Vec<&String> = want.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "{what}: mock lacks fixture fields {missing:?}\nfixture: {fixture}\nmock:    {actual}"
    );
}

/// Collapse runs of equal items (`a a b b b c` → `a b c`).
pub fn collapse(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if out.last() != Some(&i) {
            out.push(i);
        }
    }
    out
}

/// Event names (or `kind()`s) of a stream.
pub fn names(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(SseEvent::kind).collect()
}

/// The JSON data of every event, skipping `[DONE]`.
pub fn datas(events: &[SseEvent]) -> Vec<Value> {
    events.iter().filter_map(SseEvent::json).collect()
}
