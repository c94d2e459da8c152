//! Issue 2 acceptance: the data plane against the testkit mock (in-process proxy).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use sha2::{Digest, Sha256};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// Every agent route reaches the mock with the provider key and never the IC token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_key_replaces_ic_token_on_every_route() {
    let h = Harness::start().await;
    let c = client();
    let token = h.token();
    let openai = [
        (
            "POST",
            "/v1/chat/completions",
            serde_json::json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}),
        ),
        (
            "POST",
            "/v1/completions",
            serde_json::json!({"model":"gpt-3.5-turbo-instruct","prompt":"hi"}),
        ),
        (
            "POST",
            "/v1/embeddings",
            serde_json::json!({"model":"text-embedding-3-small","input":"hi"}),
        ),
        (
            "POST",
            "/v1/responses",
            serde_json::json!({"model":"gpt-4o-mini","input":"hi"}),
        ),
        ("GET", "/v1/models", serde_json::Value::Null),
    ];
    for (method, path, body) in &openai {
        let req = if *method == "GET" {
            c.get(h.url(path))
        } else {
            c.post(h.url(path)).json(body)
        };
        let resp = req
            .bearer_auth(&token)
            .header("OpenAI-Organization", "org-keep")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}: {}", resp.text().await.unwrap());
    }
    let anthropic = [
        (
            "/v1/messages",
            serde_json::json!({"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}),
        ),
        (
            "/v1/messages/count_tokens",
            serde_json::json!({"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}),
        ),
    ];
    for (path, body) in &anthropic {
        let resp = c
            .post(h.url(path))
            .header("x-api-key", &token)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "keep-me")
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}: {}", resp.text().await.unwrap());
    }
    // A pass-through path (not metered) also gets the key swapped.
    let resp = c
        .get(h.url("/v1/files"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "mock has no /v1/files: its 404 passes through"
    );

    let recorded = h.mock.requests();
    assert_eq!(recorded.len(), openai.len() + anthropic.len() + 1);
    for r in &recorded {
        let all = format!("{:?} {}", r.headers, r.body_text());
        assert!(
            !all.contains(&token),
            "IC token leaked upstream on {}",
            r.path
        );
        assert!(
            !all.contains("ic_"),
            "IC token prefix upstream on {}",
            r.path
        );
        if r.path.starts_with("/v1/messages") {
            assert_eq!(r.header("x-api-key"), Some(ANTHROPIC_KEY), "{}", r.path);
            assert_eq!(r.header("authorization"), None);
            assert_eq!(r.header("anthropic-beta"), Some("keep-me"));
            assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
        } else {
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {OPENAI_KEY}").as_str()),
                "{}",
                r.path
            );
            assert_eq!(r.header("x-api-key"), None);
        }
    }
    assert_eq!(recorded[0].header("openai-organization"), Some("org-keep"));
}

/// An 8 MiB prompt reaches the mock byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_reaches_upstream_byte_identical() {
    let h = Harness::start().await;
    let filler = "lorem ipsum dolor sit amet ".repeat(8 * 1024 * 1024 / 27 + 1);
    let body = serde_json::to_vec(&serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": filler}],
    }))
    .unwrap();
    assert!(body.len() >= 8 * 1024 * 1024);
    let resp = client()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let recorded = h.mock.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(Sha256::digest(&recorded[0].body), Sha256::digest(&body));
}

/// Bodies over the limit get 413 and nothing reaches the mock — declared or chunked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused_before_upstream() {
    let h = Harness::start_with("max_request_bytes = 1048576").await;
    let big = vec![b'x'; 2 * 1024 * 1024];
    let resp = client()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.headers()["x-iron-error"], "request_too_large");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_too_large");

    // Chunked (no Content-Length): refused once the limit is crossed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let resp = client()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 413);
    }
    assert_eq!(h.mock.request_count(), 0);
    assert_eq!(h.mock.connections(), 0);
}

/// Missing, forged, foreign and expired tokens → 401 in the route's shape; malformed JSON →
/// 400; the mock sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_bad_json_never_reach_upstream() {
    let h = Harness::start().await;
    let c = client();
    let other = iron_core::token::SigningKey::generate().unwrap();
    let now = iron_core::token::unix_now();
    let foreign = other.mint("tok_x", PROJECT, now, now + 60).unwrap();
    // Flip one character in the middle of the signature (the last base64 character carries
    // padding bits, so changing it may not change the decoded signature).
    let mut forged: Vec<char> = h.token().chars().collect();
    let i = forged.len() - 20;
    forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing"),
        (Some("ic_not.a.jwt".into()), "garbage"),
        (Some(forged), "forged signature"),
        (Some(foreign), "foreign key"),
        (Some(h.expired_token()), "expired"),
        (Some(OPENAI_KEY.into()), "raw provider key"),
    ];
    for (token, what) in &cases {
        let mut req = c
            .post(h.url("/v1/chat/completions"))
            .json(&chat_body(false));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        assert_eq!(resp.headers()["x-iron-error"], "invalid_api_key", "{what}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key", "{what}");

        let mut req = c
            .post(h.url("/v1/messages"))
            .header("anthropic-version", "2023-06-01")
            .json(&serde_json::json!({"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}));
        if let Some(t) = token {
            req = req.header("x-api-key", t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error", "anthropic shape for {what}");
        assert_eq!(v["error"]["type"], "authentication_error", "{what}");
    }
    let resp = c
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .header("content-type", "application/json")
        .body("{\"model\": \"gpt-4o-mini\", \"messages\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-iron-error"], "invalid_json");
    let resp = c
        .post(h.url("/v2/other"))
        .bearer_auth(h.token())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // A model outside the project's allow-list.
    let resp = c
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token_for("prj_limited"))
        .json(&serde_json::json!({"model":"gpt-4o","messages":[]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-iron-error"], "forbidden_model");
    assert_eq!(
        h.mock.request_count(),
        0,
        "no request may reach the upstream"
    );
    assert_eq!(
        h.mock.connections(),
        0,
        "no upstream connection may even be opened"
    );
}

/// With 200 ms between upstream chunks, the first chunk reaches the agent long before the
/// stream ends (no buffering of the answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_forwarded_as_it_arrives() {
    let h = Harness::start().await;
    let started = Instant::now();
    let resp = client()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .header("x-mock-delay-ms", "200")
        .header("x-mock-chunks", "5")
        .json(&chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.bytes_stream();
    let mut first_content = None;
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        if first_content.is_none() && text.contains("\"content\"") {
            first_content = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    let first = first_content.expect("no content chunk");
    assert!(
        total >= Duration::from_millis(800),
        "5 chunks 200 ms apart took {total:?}"
    );
    assert!(
        total - first >= Duration::from_millis(600),
        "first chunk at {first:?}, end at {total:?}: the answer was buffered"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert!(
        !text.contains("\"usage\":{"),
        "the agent did not ask for usage: {text}"
    );
    // Iron forced include_usage upstream.
    let sent = h.mock.requests()[0].json().unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

/// 200 concurrent streams complete intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams_stay_intact() {
    let h = Harness::start().await;
    let c = client();
    let token = h.token();
    let url = h.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (c, token, url) = (c.clone(), token.clone(), url.clone());
            tokio::spawn(async move {
                let resp = c
                    .post(&url)
                    .bearer_auth(&token)
                    .header("x-mock-chunks", "16")
                    .header("x-mock-delay-ms", "5")
                    .json(&serde_json::json!({
                        "model": "gpt-4o-mini", "stream": true,
                        "stream_options": {"include_usage": true},
                        "messages": [{"role": "user", "content": format!("request {i}")}]
                    }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let text = resp.text().await.unwrap();
                let events = iron_testkit::parse_sse(&text);
                let contents = events
                    .iter()
                    .filter_map(|e| e.json())
                    .filter(|j| j["choices"][0]["delta"]["content"].is_string())
                    .count();
                let usage = events
                    .iter()
                    .filter_map(|e| e.json())
                    .filter(|j| j["usage"].is_object())
                    .count();
                (contents, usage, text.trim_end().ends_with("data: [DONE]"))
            })
        })
        .collect();
    for t in tasks {
        let (contents, usage, done) = t.await.unwrap();
        assert!(contents >= 16, "content events: {contents}");
        assert_eq!(
            usage, 1,
            "the agent asked for usage: exactly one usage chunk"
        );
        assert!(done);
    }
    assert_eq!(h.mock.streams_completed(), 200);
}

/// Non-streaming answers equal what the mock sends directly; stage seams ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_equal_direct_and_stages_run() {
    let h = Harness::start().await;
    let c = client();
    let via = c
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(via.status(), 200);
    assert!(
        via.headers().contains_key("x-request-id"),
        "provider headers are returned"
    );
    let via: serde_json::Value = via.json().await.unwrap();
    let direct: serde_json::Value = c
        .post(h.mock.url("/v1/chat/completions"))
        .bearer_auth(OPENAI_KEY)
        .json(&chat_body(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(via["choices"], direct["choices"]);
    assert_eq!(via["usage"], direct["usage"]);
    let m = h.wait_metric("iron_proxy_requests_total{code=\"ok\",model=\"gpt-4o-mini\",provider=\"mock-openai\",route=\"chat_completions\"}", 1.0).await;
    for stage in [
        "auth", "route", "read", "budget", "redact", "rewrite", "upstream", "stream", "settle",
    ] {
        assert_eq!(
            metric(
                &m,
                &format!("iron_proxy_stage_runs_total{{stage=\"{stage}\"}}")
            ),
            1.0,
            "stage {stage} should have run once:\n{m}"
        );
    }
}
