//! Mock behaviour that tests across the workspace rely on: header overrides, recorded requests,
//! control routes, stream statistics (completed / aborted / chunks), pacing and TTFB, one event
//! per HTTP chunk, 10 000-token streams, h2c, and stopping on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use iron_testkit::mock::scenario::headers;
use iron_testkit::{MockUpstream, Scenario, parse_sse};
use serde_json::{Value, json};

fn content_of(events: &[iron_testkit::SseEvent]) -> Vec<String> {
    datas(events)
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .filter(|s| !s.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn header_overrides_field_by_field() {
    let mock = MockUpstream::start_with(Scenario {
        chunks: Some(2),
        answer: Some("alpha beta gamma delta".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let body = chat_body(true, Some(true));
    // Default scenario.
    let ev = post_sse(&mock, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(content_of(&ev), vec!["alpha beta ", "gamma delta"]);
    // chunks overridden, answer kept.
    let ev = post_sse(
        &mock,
        "/v1/chat/completions",
        &body,
        &[(headers::CHUNKS, "4")],
    )
    .await;
    assert_eq!(content_of(&ev), vec!["alpha ", "beta ", "gamma ", "delta"]);
    // answer overridden (UTF-8), chunks kept.
    let resp = client()
        .post(mock.url("/v1/chat/completions"))
        .header(
            headers::ANSWER,
            reqwest::header::HeaderValue::from_bytes("héllo wörld".as_bytes()).unwrap(),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    let ev = parse_sse(&resp.text().await.unwrap());
    assert_eq!(content_of(&ev).concat(), "héllo wörld");
    // tokens wins over answer.
    let ev = post_sse(
        &mock,
        "/v1/chat/completions",
        &body,
        &[(headers::TOKENS, "5")],
    )
    .await;
    assert_eq!(content_of(&ev), vec!["tok "; 5]);
    assert_eq!(datas(&ev).last().unwrap()["usage"]["completion_tokens"], 5);
    // echo (answer header absent but default answer set: explicit answer wins over echo).
    mock.set_scenario(Scenario::default());
    let mut b = body.clone();
    b["messages"] = json!([{"role": "user", "content": "contact [EMAIL_1] please"}]);
    let ev = post_sse(
        &mock,
        "/v1/chat/completions",
        &b,
        &[(headers::ECHO, "1"), (headers::CHUNKS, "3")],
    )
    .await;
    assert_eq!(content_of(&ev), vec!["contact ", "[EMAIL_1] ", "please"]);
    // A bad value is a 400 naming the header.
    let (status, v) = post_json(
        &mock,
        "/v1/chat/completions",
        &chat_body(false, None),
        &[(headers::DELAY_MS, "soon")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(headers::DELAY_MS)
    );
    let (status, _) = post_json(
        &mock,
        "/v1/chat/completions",
        &chat_body(false, None),
        &[(headers::FAULT, "explode")],
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_requests_in_order() {
    let mock = MockUpstream::start().await.unwrap();
    let c = client();
    c.post(mock.url("/v1/chat/completions?trace=1"))
        .header("Authorization", "Bearer sk-upstream")
        .header("X-Custom", "A")
        .json(&chat_body(false, None))
        .send()
        .await
        .unwrap();
    c.get(mock.url("/v1/models")).send().await.unwrap();
    c.get(mock.url("/__mock/stats")).send().await.unwrap();
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2, "control routes are not recorded");
    assert_eq!(mock.request_count(), 2);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions?trace=1");
    assert_eq!(r.header("authorization"), Some("Bearer sk-upstream"));
    assert_eq!(r.header("X-CUSTOM"), Some("A"));
    assert!(
        r.headers.iter().any(|(k, _)| k == "x-custom"),
        "names lowercased"
    );
    assert_eq!(r.json().unwrap(), chat_body(false, None));
    assert_eq!(reqs[1].method, "GET");
    assert_eq!(reqs[1].path, "/v1/models");
    assert!(reqs[1].body.is_empty());
    assert!(reqs[0].received_at <= reqs[1].received_at);
    mock.clear();
    assert_eq!(mock.requests().len(), 0);
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn control_routes() {
    let mock = MockUpstream::start().await.unwrap();
    let c = client();
    post(&mock, "/v1/chat/completions", &chat_body(true, None), &[])
        .await
        .text()
        .await
        .unwrap();
    let r: Value = c
        .get(mock.url("/__mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let arr = r.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    let body = serde_json::to_vec(&chat_body(true, None)).unwrap();
    assert_eq!(arr[0]["method"], "POST");
    assert_eq!(arr[0]["path"], "/v1/chat/completions");
    assert_eq!(arr[0]["body_len"], body.len());
    assert_eq!(arr[0]["body"], String::from_utf8(body.clone()).unwrap());
    assert_eq!(arr[0]["headers"]["content-type"], "application/json");
    let sha = arr[0]["body_sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    assert!(sha.chars().all(|c| c.is_ascii_hexdigit()));

    let s: Value = c
        .get(mock.url("/__mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["requests"], 1);
    assert_eq!(s["streams_completed"], 1);
    assert_eq!(s["streams_aborted"], 0);
    assert_eq!(s["chunks_sent"], 1 + 8 + 1 + 1);

    // PUT a scenario, then it applies.
    let r = c
        .put(mock.url("/__mock/scenario"))
        .json(&json!({"answer": "put works", "chunks": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.scenario().answer.as_deref(), Some("put works"));
    let (_, v) = post_json(&mock, "/v1/chat/completions", &chat_body(false, None), &[]).await;
    assert_eq!(v["choices"][0]["message"]["content"], "put works");
    let r = c
        .put(mock.url("/__mock/scenario"))
        .body("{\"chunkz\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "unknown scenario fields are rejected");
    let got: Value = c
        .get(mock.url("/__mock/scenario"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["answer"], "put works");

    // DELETE clears.
    let r = c.delete(mock.url("/__mock/requests")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.request_count(), 0);
    let r: Value = c
        .get(mock.url("/__mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!([]));
    let r = c.get(mock.url("/__mock/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_dropping_mid_stream_counts_as_aborted() {
    let mock = MockUpstream::start().await.unwrap();
    let mut resp = post(
        &mock,
        "/v1/chat/completions",
        &chat_body(true, None),
        &[(headers::CHUNKS, "100"), (headers::DELAY_MS, "20")],
    )
    .await;
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    resp.chunk().await.unwrap().unwrap();
    drop(resp);
    mock.wait_for(Duration::from_secs(5), |m| m.streams_aborted() == 1)
        .await
        .unwrap();
    assert_eq!(mock.streams_completed(), 0);
    assert!(
        mock.chunks_sent() < 100,
        "the stream stopped early: {}",
        mock.chunks_sent()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_token_stream() {
    let mock = MockUpstream::start().await.unwrap();
    let events = post_sse(
        &mock,
        "/v1/chat/completions",
        &chat_body(true, Some(true)),
        &[(headers::TOKENS, "10000")],
    )
    .await;
    let content = content_of(&events);
    assert_eq!(content.len(), 10_000);
    assert!(content.iter().all(|p| p == "tok "));
    let usage = datas(&events).last().unwrap()["usage"].clone();
    assert_eq!(usage["completion_tokens"], 10_000);
    mock.wait_for(Duration::from_secs(5), |m| m.streams_completed() == 1)
        .await
        .unwrap();
    // role + 10 000 content + finish + usage + [DONE]
    assert_eq!(mock.chunks_sent(), 10_004);
}

#[tokio::test(flavor = "multi_thread")]
async fn pacing_spreads_events_over_time() {
    let mock = MockUpstream::start().await.unwrap();
    let mut resp = post(
        &mock,
        "/v1/chat/completions",
        &chat_body(true, None),
        &[(headers::DELAY_MS, "200"), (headers::CHUNKS, "3")],
    )
    .await;
    let mut arrivals = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        arrivals.push((Instant::now(), chunk));
    }
    let first = arrivals.first().unwrap().0;
    let last = arrivals.last().unwrap().0;
    assert!(
        last.duration_since(first) >= Duration::from_millis(150),
        "first and last chunk {:?} apart",
        last.duration_since(first)
    );
    // Each HTTP chunk carries exactly one complete event (written as generated).
    for (_, c) in &arrivals {
        let text = String::from_utf8_lossy(c);
        assert!(text.ends_with("\n\n"), "{text:?}");
        assert_eq!(parse_sse(&text).len(), 1, "{text:?}");
    }
    // role + 3 content + finish + [DONE]
    assert_eq!(arrivals.len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn ttfb_delays_headers() {
    let mock = MockUpstream::start_with(Scenario {
        ttfb_ms: Some(1000),
        ..Default::default()
    })
    .await
    .unwrap();
    let t = Instant::now();
    let resp = post(&mock, "/v1/chat/completions", &chat_body(true, None), &[]).await;
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(resp.status(), 200);
    // The header overrides the default: no wait.
    let t = Instant::now();
    let resp = post(
        &mock,
        "/v1/chat/completions",
        &chat_body(false, None),
        &[(headers::TTFB_MS, "0")],
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_h2c() {
    let mock = MockUpstream::start().await.unwrap();
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = c
        .post(mock.url("/v1/chat/completions"))
        .header(headers::CHUNKS, "2")
        .json(&chat_body(true, Some(true)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let events = parse_sse(&resp.text().await.unwrap());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert_eq!(content_of(&events).len(), 2);
    let r = &mock.requests()[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header(headers::CHUNKS), Some("2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_streams_all_complete() {
    let mock = MockUpstream::start().await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = mock.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            client()
                .post(url)
                .header(headers::DELAY_MS, "5")
                .json(&chat_body(true, Some(true)))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        let text = t.await.unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
    mock.wait_for(Duration::from_secs(5), |m| m.streams_completed() == 20)
        .await
        .unwrap();
    assert_eq!(mock.request_count(), 20);
    assert_eq!(mock.streams_aborted(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_stops_the_server() {
    let mock = MockUpstream::start().await.unwrap();
    let addr = mock.addr();
    assert_eq!(mock.base_url(), format!("http://127.0.0.1:{}", addr.port()));
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    drop(mock);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recording_can_be_switched_off() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_recording(false);
    post(&mock, "/v1/chat/completions", &chat_body(false, None), &[]).await;
    assert_eq!(mock.request_count(), 1);
    assert!(mock.requests().is_empty());
}
