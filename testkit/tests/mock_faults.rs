//! Every fault of the mock, for both providers: status errors (+ retry-after), hang, reset,
//! reset mid-stream, malformed SSE, mid-stream error events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use iron_testkit::{Fault, MockUpstream, Scenario, fixtures, parse_sse};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn status_faults_openai_shape() {
    let mock = MockUpstream::start().await.unwrap();
    for (fault, status, kind) in [
        ("status500", 500, "server_error"),
        ("status503", 503, "server_error"),
        ("status429", 429, "requests"),
    ] {
        let resp = post(
            &mock,
            "/v1/chat/completions",
            &chat_body(false, None),
            &[("x-mock-fault", fault), ("x-mock-retry-after", "7")],
        )
        .await;
        assert_eq!(resp.status().as_u16(), status, "{fault}");
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        if status == 500 {
            assert_eq!(retry, None, "no retry-after on 500");
        } else {
            assert_eq!(retry.as_deref(), Some("7"), "{fault}");
        }
        assert!(resp.headers().contains_key("x-request-id"));
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], kind, "{fault}: {v}");
        assert!(v["error"]["message"].is_string());
        assert!(v["error"].get("param").is_some() && v["error"].get("code").is_some());
    }
    // 401: the fixture body byte for byte.
    let resp = post(
        &mock,
        "/v1/embeddings",
        &json!({}),
        &[("x-mock-fault", "status401")],
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.text().await.unwrap(),
        fixtures::OPENAI_ERROR_JSON.trim_end()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_faults_anthropic_shape() {
    let mock = MockUpstream::start_with(Scenario {
        retry_after: Some(3),
        ..Default::default()
    })
    .await
    .unwrap();
    for (fault, status, kind) in [
        ("status500", 500, "api_error"),
        ("status503", 503, "overloaded_error"),
        ("status429", 429, "rate_limit_error"),
    ] {
        let hdrs: Vec<(&str, &str)> = ANTHROPIC_HEADERS
            .iter()
            .copied()
            .chain([("x-mock-fault", fault)])
            .collect();
        let resp = post(&mock, "/v1/messages", &anthropic_body(true), &hdrs).await;
        assert_eq!(resp.status().as_u16(), status, "{fault}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        if status != 500 {
            assert_eq!(resp.headers()["retry-after"], "3");
        }
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], kind);
    }
    let hdrs: Vec<(&str, &str)> = ANTHROPIC_HEADERS
        .iter()
        .copied()
        .chain([("x-mock-fault", "401")])
        .collect();
    let resp = post(&mock, "/v1/messages", &anthropic_body(false), &hdrs).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.text().await.unwrap(),
        fixtures::ANTHROPIC_ERROR_JSON.trim_end()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hang_never_answers() {
    let mock = MockUpstream::start().await.unwrap();
    let started = Instant::now();
    let res = client()
        .post(mock.url("/v1/chat/completions"))
        .header("x-mock-fault", "hang")
        .json(&chat_body(false, None))
        .timeout(Duration::from_millis(400))
        .send()
        .await;
    let err = res.expect_err("hang must not answer");
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(380));
    assert_eq!(
        mock.request_count(),
        1,
        "the hanging request was received and recorded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hang_is_released_when_the_mock_is_dropped() {
    let mock = MockUpstream::start_with(Scenario {
        fault: Some(Fault::Hang),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = mock.url("/v1/chat/completions");
    let pending = tokio::spawn(async move {
        client()
            .post(url)
            .json(&chat_body(false, None))
            .send()
            .await
    });
    mock.wait_for(Duration::from_secs(5), |m| m.request_count() == 1)
        .await
        .unwrap();
    drop(mock);
    let res = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the hanging request ends once the mock is dropped")
        .unwrap();
    assert!(res.is_err(), "connection closed without a response");
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_closes_without_a_response() {
    let mock = MockUpstream::start().await.unwrap();
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let mut req = client()
            .post(mock.url(path))
            .header("x-mock-fault", "reset")
            .json(&chat_body(true, None));
        for (k, v) in ANTHROPIC_HEADERS {
            req = req.header(*k, *v);
        }
        let err = req
            .send()
            .await
            .expect_err("reset must not produce a response");
        assert!(!err.is_timeout(), "{err:?}");
        assert!(err.status().is_none());
    }
    assert_eq!(mock.request_count(), 2);
}

/// Read a streaming body chunk by chunk until it ends or fails; returns the text received and
/// whether it ended with an error.
async fn read_until_end(mut resp: reqwest::Response) -> (String, bool) {
    let mut text = String::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => text.push_str(&String::from_utf8_lossy(&c)),
            Ok(None) => return (text, false),
            Err(_) => return (text, true),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_mid_stream_sends_two_events_then_drops() {
    let mock = MockUpstream::start().await.unwrap();
    let resp = post(
        &mock,
        "/v1/chat/completions",
        &chat_body(true, Some(true)),
        &[("x-mock-fault", "reset-mid-stream")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (text, failed) = read_until_end(resp).await;
    assert!(
        failed,
        "the body must end with an error, got clean end after {text:?}"
    );
    let events = parse_sse(&text);
    assert_eq!(events.len(), 2, "{text}");
    assert!(!text.contains("[DONE]"));

    // Anthropic too.
    let hdrs: Vec<(&str, &str)> = ANTHROPIC_HEADERS
        .iter()
        .copied()
        .chain([("x-mock-fault", "reset-mid-stream")])
        .collect();
    let resp = post(&mock, "/v1/messages", &anthropic_body(true), &hdrs).await;
    let (text, failed) = read_until_end(resp).await;
    assert!(failed);
    assert_eq!(
        names(&parse_sse(&text)),
        vec!["message_start", "content_block_start"]
    );

    // A JSON answer is cut in the middle.
    let resp = post(
        &mock,
        "/v1/chat/completions",
        &chat_body(false, None),
        &[("x-mock-fault", "reset-mid-stream")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.is_err(), "truncated JSON body must fail");

    // Cut on purpose: not counted as aborted by the client.
    assert_eq!(mock.streams_aborted(), 0);
    assert_eq!(mock.streams_completed(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_sse_inserts_garbage_lines() {
    let mock = MockUpstream::start().await.unwrap();
    let events = post_sse(
        &mock,
        "/v1/chat/completions",
        &chat_body(true, None),
        &[("x-mock-fault", "malformed-sse")],
    )
    .await;
    let garbage: Vec<&String> = events.iter().flat_map(|e| &e.garbage).collect();
    assert!(!garbage.is_empty(), "a line that is not SSE");
    let bad_json = events
        .iter()
        .filter(|e| e.data != "[DONE]" && e.json().is_none())
        .count();
    assert_eq!(bad_json, 1, "one data line with broken JSON");
    assert_eq!(
        events.last().unwrap().data,
        "[DONE]",
        "the stream still ends"
    );

    // JSON: 200 with a body that is not valid JSON.
    let resp = post(
        &mock,
        "/v1/chat/completions",
        &chat_body(false, None),
        &[("x-mock-fault", "malformed-sse")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn error_event_anthropic_matches_fixture() {
    let mock = MockUpstream::start().await.unwrap();
    let hdrs: Vec<(&str, &str)> = ANTHROPIC_HEADERS
        .iter()
        .copied()
        .chain([("x-mock-fault", "error-event")])
        .collect();
    let events = post_sse(&mock, "/v1/messages", &anthropic_body(true), &hdrs).await;
    let fx = parse_sse(fixtures::ANTHROPIC_MESSAGES_STREAM_ERROR_SSE);
    assert_eq!(names(&events), names(&fx));
    assert_eq!(
        events.last().unwrap().json(),
        fx.last().unwrap().json(),
        "error event data as in fixture"
    );
    for (m, f) in events.iter().zip(&fx) {
        assert_covers(&f.json().unwrap(), &m.json().unwrap(), &m.kind());
    }
    // The stream itself ended cleanly.
    mock.wait_for(Duration::from_secs(2), |m| m.streams_completed() == 1)
        .await
        .unwrap();

    // Non-streaming: 529 overloaded.
    let (status, v) = post_json(&mock, "/v1/messages", &anthropic_body(false), &hdrs).await;
    assert_eq!(status, 529);
    assert_eq!(v["error"]["type"], "overloaded_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn error_event_openai_chat_and_responses() {
    let mock = MockUpstream::start().await.unwrap();
    let events = post_sse(
        &mock,
        "/v1/chat/completions",
        &chat_body(true, Some(true)),
        &[("x-mock-fault", "error-event")],
    )
    .await;
    assert_eq!(
        events.len(),
        3,
        "role chunk, one content chunk, error chunk"
    );
    let err = events.last().unwrap().json().unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    // Same fields as the fixture's error object (`code` is null for server errors).
    let fixture_err: Value = serde_json::from_str(fixtures::OPENAI_ERROR_JSON).unwrap();
    for k in fixture_err["error"].as_object().unwrap().keys() {
        assert!(
            err["error"].get(k).is_some(),
            "error chunk lacks {k}: {err}"
        );
    }
    assert!(!events.iter().any(|e| e.data == "[DONE]"));

    let events = post_sse(
        &mock,
        "/v1/responses",
        &json!({"model": "gpt-4o-mini", "input": "hi", "stream": true}),
        &[("x-mock-fault", "error-event")],
    )
    .await;
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    let v = last.json().unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["sequence_number"], events.len() - 1);

    let (status, v) = post_json(
        &mock,
        "/v1/chat/completions",
        &chat_body(false, None),
        &[("x-mock-fault", "error-event")],
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(v["error"]["type"], "server_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn default_fault_applies_until_overridden() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_scenario(Scenario {
        fault: Some(Fault::Status503),
        ..Default::default()
    });
    let r = post(&mock, "/v1/chat/completions", &chat_body(false, None), &[]).await;
    assert_eq!(r.status(), 503);
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat_body(false, None),
        &[("x-mock-fault", "none")],
    )
    .await;
    assert_eq!(r.status(), 200);
    mock.set_scenario(Scenario::default());
    let r = post(&mock, "/v1/chat/completions", &chat_body(false, None), &[]).await;
    assert_eq!(r.status(), 200);
}
