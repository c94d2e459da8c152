//! Issue 6 acceptance (data-plane part): breakers, fail-over, retries, timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
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

/// A stream that breaks after its first byte is not retried; the agent gets an error event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_stream_is_not_retried_and_ends_with_an_error_event() {
    let h = Harness::start_opts(Options {
        fallback: true,
        ..Default::default()
    })
    .await;
    h.mock.set_scenario(fault(Fault::ResetMidStream));
    let r = chat(&h, true).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let events = iron_testkit::parse_sse(&text);
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

    h.mock.set_scenario(Scenario {
        delay_ms: Some(3000),
        chunks: Some(3),
        ..Default::default()
    });
    let t = Instant::now();
    let r = chat(&h, true).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let took = t.elapsed();
    assert!(text.contains("upstream_timeout"), "{text}");
    assert!(
        took < Duration::from_millis(3000),
        "idle stream cut after {took:?}"
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
    tokio::time::sleep(Duration::from_millis(2050)).await;
    assert_eq!(chat(&h, false).await.status(), 200);
    assert_eq!(h.mock.request_count(), 2);
}
