//! OpenAI routes of the mock against the fixtures: JSON and stream shapes, include_usage on and
//! off, tool calls, legacy completions, embeddings, Responses API, models, errors, usage
//! consistency between JSON and stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::*;
use iron_testkit::{MockUpstream, SseEvent, fixtures, parse_sse};
use serde_json::{Value, json};

/// Role of a chat chunk in the stream: role / content / tool_start / tool_args / finish /
/// usage / error / [DONE].
fn chat_class(e: &SseEvent) -> String {
    if e.data == "[DONE]" {
        return "[DONE]".into();
    }
    let v = e.json().expect("chunk is JSON");
    if v.get("error").is_some() {
        return "error".into();
    }
    let choices = v["choices"].as_array().expect("choices array");
    if choices.is_empty() {
        return "usage".into();
    }
    let c = &choices[0];
    if !c["finish_reason"].is_null() {
        return "finish".into();
    }
    let d = &c["delta"];
    match (d.get("role").is_some(), d.get("tool_calls").is_some()) {
        (true, true) => "tool_start".into(),
        (true, false) => "role".into(),
        (false, true) => "tool_args".into(),
        (false, false) => "content".into(),
    }
}

fn classes(events: &[SseEvent]) -> Vec<String> {
    collapse(events.iter().map(chat_class).collect())
}

/// Compare a mock chat stream with a fixture stream: same chunk kinds in the same order, and
/// every fixture field present (same type) in the matching mock chunks.
fn assert_chat_stream_like(fixture: &str, mock: &[SseEvent]) {
    let fx = parse_sse(fixture);
    assert_eq!(classes(mock), classes(&fx), "chunk order vs fixture");
    for m in mock {
        let class = chat_class(m);
        if class == "[DONE]" {
            assert_eq!(m.data, "[DONE]");
            continue;
        }
        let f = fx.iter().find(|f| chat_class(f) == class).unwrap();
        assert_covers(&f.json().unwrap(), &m.json().unwrap(), &class);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_json_matches_fixture() {
    let mock = MockUpstream::start().await.unwrap();
    let resp = post(&mock, "/v1/chat/completions", &chat_body(false, None), &[]).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "application/json");
    assert!(h["x-request-id"].to_str().unwrap().starts_with("req_"));
    assert!(h.contains_key("openai-processing-ms"));
    assert!(h.contains_key("x-ratelimit-remaining-requests"));
    let v: Value = resp.json().await.unwrap();
    let fixture: Value = serde_json::from_str(fixtures::OPENAI_CHAT_JSON).unwrap();
    assert_covers(&fixture, &v, "chat.completion");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        iron_testkit::mock::scenario::DEFAULT_ANSWER
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // "You are terse." (14 bytes) + "What is the capital of France?" (30) = 44 bytes -> 11.
    assert_eq!(v["usage"]["prompt_tokens"], 11);
    assert_eq!(v["usage"]["completion_tokens"], 10);
    assert_eq!(v["usage"]["total_tokens"], 21);
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_stream_with_include_usage_matches_fixture() {
    let mock = MockUpstream::start().await.unwrap();
    let events = post_sse(
        &mock,
        "/v1/chat/completions",
        &chat_body(true, Some(true)),
        &[],
    )
    .await;
    assert_chat_stream_like(fixtures::OPENAI_CHAT_STREAM_USAGE_SSE, &events);
    // usage:null + obfuscation on every chunk; the usage chunk has choices [].
    let chunks = datas(&events);
    assert_eq!(
        chunks.len(),
        1 + 8 + 1 + 1,
        "role + 8 content + finish + usage"
    );
    for c in &chunks[..chunks.len() - 1] {
        assert!(c["usage"].is_null() && c.get("usage").is_some(), "{c}");
        assert!(c["obfuscation"].is_string(), "{c}");
        assert_eq!(c["model"], "gpt-4o-mini");
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 11);
    assert_eq!(last["usage"]["completion_tokens"], 10);
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, iron_testkit::mock::scenario::DEFAULT_ANSWER);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    mock.wait_for(std::time::Duration::from_secs(2), |m| {
        m.streams_completed() == 1
    })
    .await
    .unwrap();
    assert_eq!(mock.chunks_sent(), events.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_stream_without_include_usage_has_no_usage() {
    let mock = MockUpstream::start().await.unwrap();
    for include in [None, Some(false)] {
        let events = post_sse(
            &mock,
            "/v1/chat/completions",
            &chat_body(true, include),
            &[],
        )
        .await;
        let cls = classes(&events);
        assert_eq!(cls, vec!["role", "content", "finish", "[DONE]"]);
        for c in datas(&events) {
            assert!(
                c.get("usage").is_none(),
                "no usage field without include_usage: {c}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_stream_tool_call_matches_fixture() {
    let mock = MockUpstream::start().await.unwrap();
    let mut body = chat_body(true, None);
    body["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
    let events = post_sse(
        &mock,
        "/v1/chat/completions",
        &body,
        &[("x-mock-tools", "1"), ("x-mock-chunks", "3")],
    )
    .await;
    assert_chat_stream_like(fixtures::OPENAI_CHAT_STREAM_TOOLS_SSE, &events);
    let chunks = datas(&events);
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"location": "Paris"})
    );
    assert_eq!(
        chunks
            .iter()
            .filter(|c| chat_class_json(c) == "tool_args")
            .count(),
        3
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // Non-streaming tool call.
    body["stream"] = json!(false);
    let (status, v) = post_json(
        &mock,
        "/v1/chat/completions",
        &body,
        &[("x-mock-tools", "1")],
    )
    .await;
    assert_eq!(status, 200);
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    // Same completion tokens as the stream would report: words of the arguments.
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

fn chat_class_json(c: &Value) -> String {
    chat_class(&SseEvent {
        data: c.to_string(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_is_consistent_between_json_and_stream() {
    let mock = MockUpstream::start().await.unwrap();
    let hdrs: &[(&str, &str)] = &[
        ("x-mock-answer", "one two three four five six seven"),
        ("x-mock-cached-tokens", "4"),
    ];
    // Chat.
    let (_, j) = post_json(&mock, "/v1/chat/completions", &chat_body(false, None), hdrs).await;
    let s = post_sse(
        &mock,
        "/v1/chat/completions",
        &chat_body(true, Some(true)),
        hdrs,
    )
    .await;
    let su = datas(&s).last().unwrap()["usage"].clone();
    assert_eq!(j["usage"], su);
    assert_eq!(su["completion_tokens"], 7);
    assert_eq!(su["prompt_tokens_details"]["cached_tokens"], 4);
    // Legacy completions.
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say something nice"});
    let (_, j) = post_json(&mock, "/v1/completions", &body, hdrs).await;
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let s = post_sse(&mock, "/v1/completions", &sb, hdrs).await;
    assert_eq!(j["usage"], datas(&s).last().unwrap()["usage"]);
    assert_eq!(j["usage"]["prompt_tokens"], 5); // 18 bytes
    // Responses.
    let body =
        json!({"model": "gpt-4o-mini", "input": "Tell me a joke", "instructions": "Be funny"});
    let (_, j) = post_json(&mock, "/v1/responses", &body, hdrs).await;
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let s = post_sse(&mock, "/v1/responses", &sb, hdrs).await;
    let completed = datas(&s).last().unwrap().clone();
    assert_eq!(completed["type"], "response.completed");
    assert_eq!(j["usage"], completed["response"]["usage"]);
    assert_eq!(j["usage"]["input_tokens"], 6); // 14 + 8 bytes
    assert_eq!(j["usage"]["output_tokens"], 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_completions_json_and_stream() {
    let mock = MockUpstream::start().await.unwrap();
    let body =
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": ["Once upon a time"], "max_tokens": 5});
    let (status, v) = post_json(&mock, "/v1/completions", &body, &[("x-mock-echo", "1")]).await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "gpt-3.5-turbo-instruct");
    assert_eq!(v["choices"][0]["text"], "Once upon a time");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 4);

    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let events = post_sse(&mock, "/v1/completions", &sb, &[("x-mock-chunks", "2")]).await;
    let chunks = datas(&events);
    assert_eq!(
        chunks.len(),
        3,
        "2 text chunks + finish (no usage without include_usage)"
    );
    for c in &chunks {
        assert_eq!(c["object"], "text_completion");
        assert!(c.get("usage").is_none());
    }
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events.last().unwrap().data, "[DONE]");
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_float_base64_and_arrays() {
    let mock = MockUpstream::start().await.unwrap();
    let (status, v) = post_json(
        &mock,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "hello world"}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 1536);
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

    let (_, v) = post_json(
        &mock,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": ["a", "bb", "a"], "dimensions": 8}),
        &[],
    )
    .await;
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        assert_eq!(d["embedding"].as_array().unwrap().len(), 8);
    }
    assert_eq!(
        data[0]["embedding"], data[2]["embedding"],
        "deterministic per text"
    );
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert_eq!(v["usage"]["prompt_tokens"], 3);

    let (_, v) = post_json(
        &mock,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "hi", "encoding_format": "base64"}),
        &[],
    )
    .await;
    let b64 = v["data"][0]["embedding"].as_str().unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(raw.len(), 1536 * 4);

    let (status, v) = post_json(
        &mock,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "hi", "encoding_format": "hex"}),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_stream_matches_fixture() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"model": "gpt-4o-mini", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}], "stream": true});
    let events = post_sse(&mock, "/v1/responses", &body, &[("x-mock-chunks", "2")]).await;
    let fx = parse_sse(fixtures::OPENAI_RESPONSES_STREAM_SSE);
    assert_eq!(names(&events), names(&fx), "event order vs fixture");
    for (i, e) in events.iter().enumerate() {
        let v = e.json().unwrap();
        assert_eq!(
            v["type"],
            e.event.clone().unwrap(),
            "type field = event name"
        );
        assert_eq!(v["sequence_number"], i);
        let f = fx.iter().find(|f| f.event == e.event).unwrap();
        assert_covers(&f.json().unwrap(), &v, e.event.as_deref().unwrap());
    }
    let done = datas(&events);
    let text: String = done
        .iter()
        .filter(|d| d["type"] == "response.output_text.delta")
        .map(|d| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, iron_testkit::mock::scenario::DEFAULT_ANSWER);
    let completed = done.last().unwrap();
    assert_eq!(completed["response"]["model"], "gpt-4o-mini");
    assert_eq!(
        completed["response"]["output"][0]["content"][0]["text"],
        text
    );

    // JSON form.
    let mut jb = body.clone();
    jb["stream"] = json!(false);
    let (status, v) = post_json(&mock, "/v1/responses", &jb, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    let fx_completed = fx.last().unwrap().json().unwrap();
    assert_covers(&fx_completed["response"], &v, "response object");
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_tool_call_stream() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"model": "gpt-4o-mini", "input": "weather?", "stream": true,
                      "tools": [{"type": "function", "name": "lookup", "parameters": {}}]});
    let events = post_sse(
        &mock,
        "/v1/responses",
        &body,
        &[("x-mock-tools", "1"), ("x-mock-chunks", "3")],
    )
    .await;
    assert_eq!(
        collapse(names(&events)),
        vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let d = datas(&events);
    assert_eq!(d[2]["item"]["type"], "function_call");
    assert_eq!(d[2]["item"]["name"], "lookup");
    let args: String = d
        .iter()
        .filter(|x| x["type"] == "response.function_call_arguments.delta")
        .map(|x| x["delta"].as_str().unwrap())
        .collect();
    assert_eq!(args, r#"{"location": "Paris"}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn models_list_and_get() {
    let mock = MockUpstream::start().await.unwrap();
    let c = client();
    let v: Value = c
        .get(mock.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for want in ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"] {
        assert!(ids.contains(&want), "{want} in {ids:?}");
    }
    let r = c.get(mock.url("/v1/models/gpt-4o")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "gpt-4o");
    assert_eq!(v["object"], "model");
    let r = c.get(mock.url("/v1/models/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_path_is_404_and_malformed_json_is_400() {
    let mock = MockUpstream::start().await.unwrap();
    let c = client();
    let r = c
        .post(mock.url("/v1/nope"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("/v1/nope"));
    // Wrong method on a known path is also unknown.
    let r = c
        .get(mock.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = c
        .post(mock.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["param"].is_null());

    let (status, v) = post_json(&mock, "/v1/chat/completions", &json!({"messages": []}), &[]).await;
    assert_eq!(status, 400, "model is required: {v}");
    assert_eq!(
        mock.request_count(),
        4,
        "every request is recorded, errors included"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_deployment_paths_route_to_openai_handlers() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let (status, v) = post_json(
        &mock,
        "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21",
        &body,
        &[("api-key", "azure-key")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["model"], "my-gpt4o");
    let r = &mock.requests()[0];
    assert_eq!(
        r.path,
        "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(r.header("api-key"), Some("azure-key"));
}
