//! Issue 6 acceptance (data-plane part): breakers, fail-over, retries, timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use iron_core::pricing::{PriceTable, TokenUsage};
use iron_testkit::{Fault, Scenario};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn chat(h: &Harness, stream: bool) -> reqwest::Response {
    client()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .json(&chat_body(stream))
        .send()
        .await
        .unwrap()
}

fn fault(f: Fault) -> Scenario {
    Scenario {
        fault: Some(f),
        ..Default::default()
    }
}

/// 500s open the breaker after 5 failures; then fail fast with 503 + Retry-After without
/// touching the mock; after the cool-down a probe succeeds and traffic resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_fails_fast_then_recovers() {
    let h = Harness::start_opts(Options {
        upstream: "breaker_cooldown_secs = 1",
        ..Default::default()
    })
    .await;
    h.mock.set_scenario(fault(Fault::Status500));
    for i in 0..5 {
        let r = chat(&h, false).await;
        assert_eq!(
            r.status(),
            500,
            "attempt {i}: 500 is passed through, not retried"
        );
    }
    assert_eq!(h.mock.request_count(), 5);
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "iron_proxy_breaker_state{deployment=\"mock-openai\"}"),
        1.0,
        "{m}"
    );

    let r = chat(&h, false).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-iron-error"], "upstream_unavailable");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        h.mock.request_count(),
        5,
        "an open breaker does not touch the upstream"
    );

    h.mock.set_scenario(Scenario::default());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "iron_proxy_breaker_state{deployment=\"mock-openai\"}"),
        2.0,
        "half-open: {m}"
    );
    assert_eq!(
        chat(&h, false).await.status(),
        200,
        "the half-open probe succeeds"
    );
    assert_eq!(chat(&h, false).await.status(), 200);
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "iron_proxy_breaker_state{deployment=\"mock-openai\"}"),
        0.0,
        "closed again: {m}"
    );
}

/// Primary answers 503 or resets the connection: the fallback deployment serves, the agent
/// sees one clean answer, each mock saw exactly one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_next_deployment() {
    let h = Harness::start_opts(Options {
        fallback: true,
        ..Default::default()
    })
    .await;
    let fallback = h.fallback.as_ref().unwrap();
    for f in [Fault::Status503, Fault::Reset] {
        h.mock.clear();
        fallback.clear();
        h.mock.set_scenario(fault(f));
        let r = chat(&h, false).await;
        assert_eq!(r.status(), 200, "{f:?}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["choices"][0]["message"]["content"].is_string());
        assert_eq!(
            h.mock.request_count(),
            1,
            "{f:?}: one attempt on the primary"
        );
        assert_eq!(
            fallback.request_count(),
            1,
            "{f:?}: one attempt on the fallback"
        );
        // Streams fail over too (nothing was sent to the agent yet).
        h.mock.clear();
        fallback.clear();
        let r = chat(&h, true).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        assert_eq!(
            (h.mock.request_count(), fallback.request_count()),
            (1, 1),
            "{f:?} stream"
        );
    }
}

/// A stream that breaks after its first byte is not retried; the agent gets an error event;
/// the budget is charged only for what streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_stream_is_not_retried_and_ends_with_an_error_event() {
    let h = Harness::start_opts(Options {
        fallback: true,
        ..Default::default()
    })
    .await;
    // 40 pieces `"tok "` planned; the fault sends the first 2 events, then drops the connection.
    h.mock.set_scenario(Scenario {
        fault: Some(Fault::ResetMidStream),
        tokens: Some(40),
        ..Default::default()
    });
    let r = chat(&h, true).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let events = iron_testkit::parse_sse(&text);
    let pieces: Vec<String> = events
        .iter()
        .filter_map(|e| e.json())
        .filter_map(|j| {
            j["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .filter(|c| !c.is_empty())
        .collect();
    let err = events
        .iter()
        .filter_map(|e| e.json())
        .find(|j| j.get("error").is_some())
        .expect("error event");
    assert_eq!(err["error"]["code"], "upstream_error", "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert_eq!(h.mock.request_count(), 1);
    assert_eq!(
        h.fallback.as_ref().unwrap().request_count(),
        0,
        "never retried after bytes reached the agent"
    );

    // Charged for exactly what streamed: no provider usage arrived, so the metered pieces.
    assert_eq!(pieces, ["tok "], "the one piece sent before the reset");
    let meter = iron_core::meter::Meter::global();
    let streamed: u64 = pieces.iter().map(|p| meter.count_text(p)).sum();
    let events = reported_usage(&h, 1).await;
    assert_eq!(events.len(), 1);
    let ev = &events[0];
    assert_eq!(
        ev.output_tokens, streamed,
        "output tokens == the streamed pieces"
    );
    assert!(!ev.cut_off);
    let usage = TokenUsage {
        input_tokens: ev.input_tokens,
        cached_input_tokens: ev.cached_input_tokens,
        cache_write_tokens: ev.cache_write_tokens,
        output_tokens: streamed,
    };
    let price = *PriceTable::builtin()
        .price_for("gpt-4o-mini", None)
        .unwrap();
    assert_eq!(
        ev.cost,
        price.cost(&usage),
        "cost == price × usage, exactly"
    );
    let local = h.proxy.shared.local_leases.clone().unwrap();
    assert_eq!(
        local.spent(PROJECT),
        ev.cost,
        "the budget saw the same spend"
    );
}

/// A hung upstream → 504 within the first-byte timeout + 10%; a stream that goes idle ends
/// with an error event within the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_enforced() {
    let h = Harness::start_opts(Options {
        upstream: "first_byte_timeout_ms = 1000\nidle_timeout_ms = 500",
        ..Default::default()
    })
    .await;
    h.mock.set_scenario(fault(Fault::Hang));
    let t = Instant::now();
    let r = chat(&h, false).await;
    let took = t.elapsed();
    assert_eq!(r.status(), 504);
    assert_eq!(r.headers()["x-iron-error"], "upstream_timeout");
    assert!(
        took >= Duration::from_millis(1000) && took <= Duration::from_millis(1100),
        "took {took:?}"
    );
    assert_eq!(
        h.mock.request_count(),
        1,
        "a timed-out request is not retried"
    );

    // The first event comes at once, the next after 3 s: the 500 ms idle timeout cuts in.
    h.mock.set_scenario(Scenario {
        delay_ms: Some(3000),
        chunks: Some(3),
        ..Default::default()
    });
    let mut r = chat(&h, true).await;
    assert_eq!(r.status(), 200);
    let mut text = String::new();
    let mut last_chunk: Option<Instant> = None;
    let gap = loop {
        let chunk = r
            .chunk()
            .await
            .unwrap()
            .expect("the stream ended without an error event");
        let now = Instant::now();
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("upstream_timeout") {
            let last = last_chunk.expect("a chunk before the error event");
            break now - last;
        }
        last_chunk = Some(now);
    };
    while let Some(chunk) = r.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    println!("idle stream: error event {gap:?} after the last chunk");
    // Idle 500 ms + 10% + 200 ms of scheduling slack, measured from the last chunk.
    assert!(
        gap >= Duration::from_millis(450) && gap <= Duration::from_millis(750),
        "error event {gap:?} after the last chunk (idle timeout 500 ms)"
    );
}

/// 429 with Retry-After: 2 → the deployment is skipped for 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_deployment_is_skipped_for_retry_after() {
    let h = Harness::start().await;
    h.mock.set_scenario(Scenario {
        fault: Some(Fault::Status429),
        retry_after: Some(2),
        ..Default::default()
    });
    let r = chat(&h, false).await;
    let limited_at = Instant::now();
    assert_eq!(
        r.status(),
        429,
        "single deployment: the provider's 429 is passed through"
    );
    h.mock.set_scenario(Scenario::default());
    let r = chat(&h, false).await;
    assert_eq!(r.status(), 503);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "retry-after {wait}");
    assert_eq!(h.mock.request_count(), 1, "skipped while rate limited");
    // Still skipped well into the 2 s.
    tokio::time::sleep_until((limited_at + Duration::from_millis(1500)).into()).await;
    let r = chat(&h, false).await;
    assert_eq!(r.status(), 503, "still rate limited at 1.5 s");
    assert_eq!(r.headers()["x-iron-error"], "upstream_unavailable");
    assert!(
        limited_at.elapsed() < Duration::from_millis(2000),
        "the 1.5 s probe ran late ({:?}): the machine is too loaded for this check",
        limited_at.elapsed()
    );
    assert_eq!(h.mock.request_count(), 1, "skipped at 1.5 s");
    tokio::time::sleep_until((limited_at + Duration::from_millis(2050)).into()).await;
    assert_eq!(chat(&h, false).await.status(), 200);
    assert_eq!(h.mock.request_count(), 2);
}

/// Two deployments with their own first-byte timeouts (1 s and 2 s, `[upstream]` says 5 s)
/// in front of a hung upstream: each 504 arrives within its own timeout + 10%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_timeout_is_per_deployment() {
    let h = Harness::start_opts(Options {
        upstream: "first_byte_timeout_ms = 5000",
        extra: r#"
[[providers]]
id = "timeout-1s"
kind = "openai-compatible"
base_url = "{mock}/v1"
api_key_env = "MOCK_OPENAI_KEY"
first_byte_timeout_ms = 1000

[[providers]]
id = "timeout-2s"
kind = "openai-compatible"
base_url = "{mock}/v1"
api_key_env = "MOCK_OPENAI_KEY"
first_byte_timeout_ms = 2000

[[projects]]
id = "prj_timeout_1s"
providers = ["timeout-1s"]

[[projects]]
id = "prj_timeout_2s"
providers = ["timeout-2s"]
"#,
        ..Default::default()
    })
    .await;
    h.mock.set_scenario(fault(Fault::Hang));
    for (n, (project, ms)) in [("prj_timeout_1s", 1000u64), ("prj_timeout_2s", 2000)]
        .into_iter()
        .enumerate()
    {
        let t = Instant::now();
        let r = client()
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(h.token_for(project))
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        let took = t.elapsed();
        assert_eq!(r.status(), 504, "{project}");
        assert_eq!(r.headers()["x-iron-error"], "upstream_timeout");
        let timeout = Duration::from_millis(ms);
        println!("{project}: 504 after {took:?} (first-byte timeout {timeout:?})");
        assert!(
            took >= timeout && took <= timeout.mul_f64(1.1),
            "{project}: 504 after {took:?}, first-byte timeout {timeout:?}"
        );
        assert_eq!(h.mock.request_count(), n + 1, "{project}: not retried");
    }
}

/// §8 retries, single deployment: 503 is retried (3 attempts in all, then the agent gets
/// the 503); 500 is not (1 attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_only_retryable_statuses_at_most_twice() {
    let h = Harness::start().await;
    h.mock.set_scenario(fault(Fault::Status503));
    let r = chat(&h, false).await;
    assert_eq!(
        r.status(),
        503,
        "the last attempt's answer reaches the agent"
    );
    assert_eq!(h.mock.request_count(), 3, "the first attempt + 2 retries");

    h.mock.clear();
    h.mock.set_scenario(fault(Fault::Status500));
    let r = chat(&h, false).await;
    assert_eq!(r.status(), 500);
    assert_eq!(h.mock.request_count(), 1, "a 500 is not retried");
}

/// A 429 with a fallback configured fails over: the primary once, the fallback once, 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_primary_fails_over_to_the_fallback() {
    let h = Harness::start_opts(Options {
        fallback: true,
        ..Default::default()
    })
    .await;
    let fallback = h.fallback.as_ref().unwrap();
    h.mock.set_scenario(Scenario {
        fault: Some(Fault::Status429),
        retry_after: Some(30),
        ..Default::default()
    });
    let r = chat(&h, false).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    assert_eq!(
        (h.mock.request_count(), fallback.request_count()),
        (1, 1),
        "primary once, fallback once"
    );
}

/// An upstream that never accepts the connection: each attempt ends at the deployment's own
/// connect timeout (300 ms; `[upstream]` says 5 s). Connect failures are retried (§8), so the
/// request makes 3 attempts — the breaker (3 failures) counts them — and the agent gets 504
/// `upstream_timeout` after 3 × 300 ms + the backoff (≤ 75 + 150 ms) + slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_per_deployment_and_retried() {
    let hole = unanswered_addr();
    let extra = format!(
        r#"
[[providers]]
id = "blackhole"
kind = "openai-compatible"
base_url = "http://{}/v1"
api_key_env = "MOCK_OPENAI_KEY"
connect_timeout_ms = 300

[[projects]]
id = "prj_blackhole"
providers = ["blackhole"]
"#,
        hole.addr
    );
    let h = Harness::start_opts(Options {
        upstream: "breaker_failures = 3",
        extra: &extra,
        ..Default::default()
    })
    .await;
    let send = || {
        client()
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(h.token_for("prj_blackhole"))
            .json(&chat_body(false))
            .send()
    };
    let t = Instant::now();
    let r = send().await.unwrap();
    let took = t.elapsed();
    println!("unanswered upstream: 504 after {took:?} (3 × 300 ms connect timeouts)");
    assert_eq!(r.status(), 504);
    assert_eq!(r.headers()["x-iron-error"], "upstream_timeout");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(1300),
        "3 attempts of 300 ms took {took:?}"
    );
    let m = h
        .wait_metric("iron_proxy_breaker_state{deployment=\"blackhole\"}", 1.0)
        .await;
    assert_eq!(
        metric(&m, "iron_proxy_breaker_state{deployment=\"blackhole\"}"),
        1.0,
        "3 failed attempts opened the breaker: {m}"
    );
    let t = Instant::now();
    let r = send().await.unwrap();
    assert_eq!(r.status(), 503, "open breaker: fail fast");
    assert!(t.elapsed() < Duration::from_millis(300));
}

/// A provider host that does not resolve: 502 `upstream_error`, no panic (the proxy keeps
/// serving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_provider_host_is_a_502() {
    let h = Harness::start_opts(Options {
        extra: r#"
[[providers]]
id = "nowhere"
kind = "openai-compatible"
base_url = "http://iron-test-host.invalid/v1"
api_key_env = "MOCK_OPENAI_KEY"

[[projects]]
id = "prj_nowhere"
providers = ["nowhere"]
"#,
        ..Default::default()
    })
    .await;
    let r = client()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token_for("prj_nowhere"))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-iron-error"], "upstream_error");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_error", "{v}");
    assert_eq!(chat(&h, false).await.status(), 200, "still serving");
    assert_eq!(h.mock.request_count(), 1);
}
