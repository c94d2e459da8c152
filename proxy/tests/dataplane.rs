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
        assert_eq!(resp.headers()["x-iron-error"], "invalid_api_key", "{what}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error", "anthropic shape for {what}");
        assert_eq!(v["error"]["type"], "authentication_error", "{what}");
        assert_eq!(v["error"]["code"], "invalid_api_key", "{what}");
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
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_json");
    // The same on the Anthropic route, in Anthropic's error shape.
    let resp = c
        .post(h.url("/v1/messages"))
        .header("x-api-key", h.token())
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body("{\"model\": \"claude-sonnet-4-5\", \"max_tokens\": 5, \"messages\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-iron-error"], "invalid_json");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "anthropic shape: {v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(v["error"]["code"], "invalid_json", "{v}");
    assert!(v.get("param").is_none() && v["error"].get("param").is_none());
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

/// One stream as the agent saw it: events carrying `delta.content`, their joined text, usage
/// chunks, and whether it ended with `[DONE]`.
struct StreamSummary {
    contents: usize,
    text: String,
    usage: usize,
    done: bool,
}

async fn stream_chat(c: &reqwest::Client, url: &str, key: &str, i: usize) -> StreamSummary {
    // 16 words per prompt and `x-mock-echo`: the answer is this request's own prompt, cut into
    // exactly 16 word pieces, so a stream that lost, doubled or mixed up an event shows.
    let prompt = format!(
        "request {i} asks for a streamed answer of exactly sixteen words from the mock upstream please"
    );
    assert_eq!(prompt.split_whitespace().count(), 16);
    let resp = c
        .post(url)
        .bearer_auth(key)
        .header("x-mock-chunks", "16")
        .header("x-mock-delay-ms", "5")
        .header("x-mock-echo", "1")
        .json(&serde_json::json!({
            "model": "gpt-4o-mini", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": prompt}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let events = iron_testkit::parse_sse(&body);
    // Every event that carries `delta.content` counts, even when Iron's streaming redactor
    // emptied it while holding text back (it comes out in a later event: the text compares).
    let deltas: Vec<String> = events
        .iter()
        .filter_map(|e| e.json())
        .filter_map(|j| {
            j["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let usage = events
        .iter()
        .filter_map(|e| e.json())
        .filter(|j| j["usage"].is_object())
        .count();
    StreamSummary {
        contents: deltas.len(),
        text: deltas.concat(),
        usage,
        done: body.trim_end().ends_with("data: [DONE]"),
    }
}

/// 200 concurrent streams complete intact: each carries exactly its 16 content events, and
/// their text equals what the mock streams for the same request sent to it directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams_stay_intact() {
    let h = Harness::start().await;
    let c = client();
    let token = h.token();
    let url = h.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (c, token, url) = (c.clone(), token.clone(), url.clone());
            tokio::spawn(async move { stream_chat(&c, &url, &token, i).await })
        })
        .collect();
    let mut via_proxy = Vec::with_capacity(200);
    for t in tasks {
        via_proxy.push(t.await.unwrap());
    }
    assert_eq!(h.mock.streams_completed(), 200);

    // The same 200 requests straight to the mock (provider key), for the expected text.
    let direct_url = h.mock.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (c, url) = (c.clone(), direct_url.clone());
            tokio::spawn(async move { stream_chat(&c, &url, OPENAI_KEY, i).await })
        })
        .collect();
    for (i, (t, via)) in tasks.into_iter().zip(&via_proxy).enumerate() {
        let direct = t.await.unwrap();
        // The role chunk (`"content": ""`, as OpenAI sends it) + the 16 pieces.
        assert_eq!(
            direct.contents, 17,
            "the mock itself sends 1 + 16 content events"
        );
        // Through Iron: the same 17 events (the response redactor may empty one while it
        // holds a word back, e.g. the `{i} ` that could start a number) + exactly one event
        // it adds before `finish_reason` to flush the last word, `please`, which it held
        // until the text ended. Nothing lost, doubled or reordered: the text compares below.
        assert_eq!(via.contents, 17 + 1, "stream {i}: content events");
        assert_eq!(
            via.text, direct.text,
            "stream {i}: text differs from direct"
        );
        assert!(
            via.text.starts_with(&format!("request {i} asks")),
            "stream {i} carries another request's answer: {:?}",
            via.text
        );
        assert_eq!(
            via.usage, 1,
            "the agent asked for usage: exactly one usage chunk"
        );
        assert!(via.done, "stream {i} did not end with [DONE]");
    }
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

/// Hop-by-hop headers stay on the agent's hop (RFC 9110 §7.6.1), including names nominated
/// by `Connection`; ordinary headers go through. Provider response headers (request ids,
/// rate limits, processing time) come back to the agent on both providers' routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_dropped_and_provider_headers_returned() {
    let h = Harness::start().await;
    let c = client();
    let hop_by_hop = [
        ("connection", "keep-alive, x-foo"),
        ("x-foo", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("proxy-connection", "keep-alive"),
    ];
    let with_hop_by_hop = |mut req: reqwest::RequestBuilder| {
        for (k, v) in hop_by_hop {
            req = req.header(k, v);
        }
        req.header("x-custom-keep", "yes")
    };

    let resp = with_hop_by_hop(c.post(h.url("/v1/chat/completions")))
        .bearer_auth(h.token())
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for name in [
        "x-request-id",
        "openai-processing-ms",
        "openai-version",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
    ] {
        assert!(
            resp.headers().contains_key(name),
            "OpenAI route: `{name}` not returned: {:?}",
            resp.headers()
        );
    }
    assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "10000");
    assert_eq!(resp.headers()["x-ratelimit-remaining-tokens"], "9999000");
    assert!(
        resp.headers()["openai-processing-ms"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );

    let resp = with_hop_by_hop(c.post(h.url("/v1/messages")))
        .header("x-api-key", h.token())
        .header("anthropic-version", "2023-06-01")
        .json(&serde_json::json!({"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for (name, value) in [
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-tokens-limit", "2000000"),
        ("anthropic-ratelimit-tokens-remaining", "1999000"),
    ] {
        assert_eq!(
            resp.headers().get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "Anthropic route: `{name}`"
        );
    }
    assert!(
        resp.headers()["request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );

    let recorded = h.mock.requests();
    assert_eq!(recorded.len(), 2);
    for r in &recorded {
        for (name, _) in hop_by_hop {
            if name == "connection" {
                // The proxy's own upstream hop may say `keep-alive`, never the agent's list.
                let v = r.header(name).unwrap_or("").to_ascii_lowercase();
                assert!(!v.contains("x-foo"), "{}: connection: {v}", r.path);
            } else {
                assert_eq!(r.header(name), None, "{}: `{name}` went upstream", r.path);
            }
        }
        assert_eq!(r.header("x-custom-keep"), Some("yes"), "{}", r.path);
    }
}

/// A proxy whose providers are `https://127.0.0.1:PORT` on the TLS `mock`, with
/// `[upstream] ca_file = ca` (normally the mock's private CA). Loopback needs
/// `allow_private_upstreams`, as in the common harness.
async fn tls_harness(mock: iron_testkit::MockUpstream, ca: &std::path::Path) -> Harness {
    let key = iron_core::token::SigningKey::generate().unwrap();
    let pk = key.public_key();
    let (addr, admin) = (free_addr(), free_addr());
    let base = mock.base_url();
    assert!(base.starts_with("https://127.0.0.1:"));
    let toml = format!(
        r#"
[server]
listen = "{addr}"
admin_listen = "{admin}"
threads = 2
shutdown_grace_secs = 0

[upstream]
ca_file = "{ca}"

[security]
allow_private_upstreams = true

[auth]
public_keys = [{{ kid = "{kid}", alg = "EdDSA", x = "{x}" }}]

[[projects]]
id = "{PROJECT}"

[[providers]]
id = "mock-openai"
kind = "openai"
base_url = "{base}/v1"
api_key_env = "MOCK_OPENAI_KEY"

[[providers]]
id = "mock-anthropic"
kind = "anthropic"
base_url = "{base}"
api_key_env = "MOCK_ANTHROPIC_KEY"
"#,
        ca = ca.display(),
        kid = pk.kid,
        x = pk.x,
    );
    let env: std::collections::BTreeMap<String, String> = [
        ("MOCK_OPENAI_KEY".to_owned(), OPENAI_KEY.to_owned()),
        ("MOCK_ANTHROPIC_KEY".to_owned(), ANTHROPIC_KEY.to_owned()),
    ]
    .into();
    let config = iron_proxy::config::ProxyConfig::from_toml(&toml, &env).unwrap();
    let proxy = tokio::task::spawn_blocking(move || iron_proxy::start(&config))
        .await
        .unwrap()
        .unwrap();
    Harness {
        mock,
        fallback: None,
        proxy,
        key,
        addr,
        admin,
    }
}

/// TLS + HTTP/2 to the upstream with pooled connections: the proxy reaches an https mock
/// that it trusts only through `upstream.ca_file`, negotiates h2 by ALPN, answers JSON and
/// streams as the mock does directly, and 20 sequential requests reuse at most 2 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_speaks_h2_and_pools_connections() {
    let mock = iron_testkit::MockUpstream::start_tls().await.unwrap();
    let ca = mock.ca_file().unwrap().to_owned();
    let h = tls_harness(mock, &ca).await;
    let c = client();

    // Non-streaming chat.
    let resp = c
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-ratelimit-limit-requests"));
    let via_json: serde_json::Value = resp.json().await.unwrap();

    // Streaming chat.
    let resp = c
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .header("x-mock-tokens", "6")
        .json(&chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let via_stream = resp.text().await.unwrap();
    assert!(
        via_stream.trim_end().ends_with("data: [DONE]"),
        "{via_stream}"
    );

    // Anthropic over the same TLS upstream.
    let resp = c
        .post(h.url("/v1/messages"))
        .header("x-api-key", h.token())
        .header("anthropic-version", "2023-06-01")
        .json(&serde_json::json!({"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");

    // 20 sequential requests: the pooled (multiplexed) h2 connection is reused.
    for i in 0..20 {
        let resp = c
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(h.token())
            .json(&chat_body(i % 2 == 0))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        resp.bytes().await.unwrap();
    }

    let recorded = h.mock.requests();
    assert_eq!(recorded.len(), 23);
    for r in &recorded {
        assert_eq!(
            r.version,
            http::Version::HTTP_2,
            "{} over {:?}",
            r.path,
            r.version
        );
        let expected_key = if r.path.starts_with("/v1/messages") {
            r.header("x-api-key")
        } else {
            r.header("authorization")
        };
        assert!(expected_key.is_some_and(|k| k.contains("PROVIDERKEY")));
    }
    let connections = h.mock.connections();
    assert!(
        (1..=2).contains(&connections),
        "23 requests opened {connections} TLS connections at the mock"
    );

    // The answers equal what the mock sends directly (client trusting the same CA).
    let ca = reqwest::Certificate::from_pem(h.mock.ca_pem().unwrap().as_bytes()).unwrap();
    let direct_client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let direct: serde_json::Value = direct_client
        .post(h.mock.url("/v1/chat/completions"))
        .bearer_auth(OPENAI_KEY)
        .json(&chat_body(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(via_json["choices"], direct["choices"]);
    assert_eq!(via_json["usage"], direct["usage"]);
    let direct_stream = direct_client
        .post(h.mock.url("/v1/chat/completions"))
        .bearer_auth(OPENAI_KEY)
        .header("x-mock-tokens", "6")
        .json(&chat_body(true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let deltas = |text: &str| -> Vec<String> {
        iron_testkit::parse_sse(text)
            .iter()
            .filter_map(|e| e.json())
            .filter_map(|j| {
                j["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .filter(|s| !s.is_empty())
            .collect()
    };
    assert_eq!(deltas(&via_stream).len(), 6);
    assert_eq!(deltas(&via_stream), deltas(&direct_stream));
}

/// Without `upstream.ca_file` the proxy does not trust the mock's private CA: the TLS
/// handshake fails and the agent gets 502 `upstream_error`; no request reaches the mock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_with_an_untrusted_ca_is_refused() {
    let mock = iron_testkit::MockUpstream::start_tls().await.unwrap();
    // `ca_file` names another mock's CA: the certificate chain does not verify.
    let other = iron_testkit::MockUpstream::start_tls().await.unwrap();
    let h = tls_harness(mock, other.ca_file().unwrap()).await;
    let resp = client()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-iron-error"], "upstream_error");
    assert_eq!(h.mock.request_count(), 0);
    assert!(h.mock.connections() >= 1, "the handshake was attempted");
}
