//! Rate limits in static mode (`docs/decisions/0003-rate-limits.md`): the project's `rpm`
//! from the config and a token's `rpm` claim, enforced in-process with the same window maths
//! as control; 429 `rate_limited` in the route's shape with `Retry-After` and OpenAI's
//! `x-ratelimit-*` headers; a refused request never reaches the provider; unlimited
//! traffic never touches the limiter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use iron_core::ratelimit::RateLimits;
use iron_core::token::{new_token_id, unix_now};

async fn chat(h: &Harness, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&chat_body(false))
        .send()
        .await
        .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_rpm_from_static_config() {
    let h = Harness::start().await;
    let token = h.token_for("prj_rpm");
    for i in 0..3 {
        let r = chat(&h, &token).await;
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "3");
        assert_eq!(
            header(&r, "x-ratelimit-remaining-requests"),
            (2 - i).to_string()
        );
    }
    let upstream_before = h.mock.request_count();
    let r = chat(&h, &token).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-iron-error"), "rate_limited");
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=61).contains(&retry), "Retry-After {retry}");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
    assert!(header(&r, "x-ratelimit-reset-requests").ends_with('s'));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 requests per minute"),
        "{body}"
    );
    // Anthropic routes get the Anthropic shape.
    let r = reqwest::Client::new()
        .post(h.url("/v1/messages"))
        .header("x-api-key", &token)
        .header("anthropic-version", "2023-06-01")
        .json(&serde_json::json!({"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // Refused requests never reached the provider.
    assert_eq!(h.mock.request_count(), upstream_before);
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "iron_proxy_rate_limited_total{kind=\"requests\",scope_kind=\"project\"}"
        ),
        2.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_claim_limits_and_unlimited_tokens() {
    let h = Harness::start().await;
    // Unlimited token and project: no limiter state; the provider's own headers pass.
    let r = chat(&h, &h.token()).await;
    assert_eq!(r.status(), 200);
    let provider_tokens_limit = header(&r, "x-ratelimit-limit-tokens");
    assert!(h.proxy.shared.rate.is_empty());

    let now = unix_now();
    let limited = h
        .key
        .mint_with_limits(
            &new_token_id(),
            PROJECT,
            now,
            now + 600,
            RateLimits {
                rpm: Some(2),
                tpm: None,
            },
        )
        .unwrap();
    let r = chat(&h, &limited).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "2");
    // Iron's headers replace all of the provider's on a limited route (no tpm here).
    if !provider_tokens_limit.is_empty() {
        assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "");
    }
    assert_eq!(chat(&h, &limited).await.status(), 200);
    let r = chat(&h, &limited).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "2");
    // Another token of the same (unlimited) project is unaffected.
    assert_eq!(chat(&h, &h.token()).await.status(), 200);
}
