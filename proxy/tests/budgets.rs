//! Issue 4 acceptance 1–4 in static mode (in-process budgets): exact spend, hidden usage
//! chunk, mid-stream cut-off, 402 before upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use iron_core::Money;
use iron_core::pricing::{PriceTable, TokenUsage};

fn price(model: &str) -> iron_core::pricing::ModelPrice {
    *PriceTable::builtin().price_for(model, None).unwrap()
}

/// Waits until the reporter (1 s period) has delivered the usage of `n` requests.
async fn reported(h: &Harness, n: usize) -> Vec<iron_core::lease::UsageEvent> {
    let local = h.proxy.shared.local_leases.clone().unwrap();
    for _ in 0..100 {
        let events = local.events.lock().unwrap().clone();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("usage events were not reported");
}

/// Non-stream and stream: spend == the provider's usage × price, to the micro-dollar, and
/// Σ usage events == the ledger's spend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_equals_provider_usage_times_price() {
    let h = Harness::start().await;
    let c = reqwest::Client::new();
    let json: serde_json::Value = c
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .header("x-mock-tokens", "40")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let u1 = TokenUsage::from_usage_json(&json["usage"]).unwrap();
    // A stream whose client asked for usage: the final chunk carries it.
    let text = c
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .header("x-mock-tokens", "300")
        .header("x-mock-cached-tokens", "3")
        .json(&serde_json::json!({"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},
            "messages":[{"role":"user","content":"count to three hundred please, slowly and carefully"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let usage_chunk = iron_testkit::parse_sse(&text)
        .iter()
        .filter_map(|e| e.json())
        .find(|j| j["usage"].is_object())
        .unwrap();
    let u2 = TokenUsage::from_usage_json(&usage_chunk["usage"]).unwrap();
    // Anthropic stream: usage from message_start + message_delta.
    let text = c
        .post(h.url("/v1/messages"))
        .header("x-api-key", h.token())
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-tokens", "25")
        .json(&serde_json::json!({"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi there"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<_> = iron_testkit::parse_sse(&text)
        .iter()
        .filter_map(|e| e.json())
        .collect();
    let start = events
        .iter()
        .find(|e| e["type"] == "message_start")
        .unwrap();
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    let mut u3 = TokenUsage::from_usage_json(&start["message"]["usage"]).unwrap();
    u3.output_tokens = delta["usage"]["output_tokens"].as_u64().unwrap();

    let expected = [
        price("gpt-4o-mini").cost(&u1),
        price("gpt-4o-mini").cost(&u2),
        price("claude-sonnet-4-5").cost(&u3),
    ];
    // Each h.token() is a new token (own lease slot), so reports may arrive in any order.
    let events = reported(&h, 3).await;
    let mut costs: Vec<Money> = events.iter().map(|e| e.cost).collect();
    costs.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(
        costs, want,
        "each request costs the provider's usage × price"
    );
    let streamed = events.iter().find(|e| e.output_tokens == 300).unwrap();
    assert_eq!(streamed.cached_input_tokens, 3);
    let total: u64 = expected.iter().map(|m| m.micros()).sum();
    let ledger: u64 = h
        .proxy
        .shared
        .ledger
        .slots()
        .iter()
        .map(|s| s.spent().micros())
        .sum();
    assert_eq!(ledger, total, "ledger spend == Σ usage events");
    let local = h.proxy.shared.local_leases.clone().unwrap();
    assert_eq!(
        local.spent(PROJECT).micros(),
        total,
        "the budget authority saw the same spend"
    );
    let m = h.metrics().await;
    let cost_series = format!(
        "iron_proxy_cost_microdollars_total{{model=\"gpt-4o-mini\",project=\"{PROJECT}\",provider=\"mock-openai\"}}"
    );
    assert_eq!(
        metric(&m, &cost_series) as u64,
        expected[0].micros() + expected[1].micros()
    );
}

/// The agent did not ask for usage: no usage chunk reaches it, but the spend still comes
/// from the provider's usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_usage_chunk_still_charges() {
    let h = Harness::start().await;
    let text = reqwest::Client::new()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .header("x-mock-tokens", "50")
        .json(&chat_body(true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("\"usage\""),
        "no usage for an agent that did not ask: {text}"
    );
    let sent = h.mock.requests()[0].json().unwrap();
    let events = reported(&h, 1).await;
    assert_eq!(
        events[0].output_tokens, 50,
        "usage read from the hidden chunk"
    );
    // The mock's prompt count for this body (see testkit plan.rs): recompute from the event.
    let u = TokenUsage {
        input_tokens: events[0].input_tokens,
        output_tokens: 50,
        ..Default::default()
    };
    assert_eq!(events[0].cost, price("gpt-4o-mini").cost(&u));
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

/// A $0.001 budget and a 10,000-token stream: partial content, then a budget_exceeded
/// event and the end of the stream; the upstream connection is closed early; spend stays
/// within the limit + one chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_cut_off_when_the_budget_is_gone() {
    let h = Harness::start().await;
    let resp = reqwest::Client::new()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token_for("prj_budget"))
        .header("x-mock-tokens", "10000")
        .json(&chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let events: Vec<_> = iron_testkit::parse_sse(&text)
        .iter()
        .filter_map(|e| e.json())
        .collect();
    let content = events
        .iter()
        .filter(|e| e["choices"][0]["delta"]["content"].is_string())
        .count();
    assert!(content > 100, "partial content first ({content} chunks)");
    assert!(content < 10_000, "but not the whole answer");
    let last = events.last().unwrap();
    assert_eq!(last["error"]["code"], "budget_exceeded", "{last}");
    assert!(text.trim_end().ends_with("data: [DONE]"));
    h.mock
        .wait_for(Duration::from_secs(5), |m| m.streams_aborted() == 1)
        .await
        .unwrap();
    assert_eq!(
        h.mock.streams_completed(),
        0,
        "the upstream stream was closed early"
    );

    let events = reported(&h, 1).await;
    let one_chunk = price("gpt-4o-mini").output_cost(1).micros();
    let spent = events[0].cost.micros();
    println!("cut-off: {content} chunks delivered, spent {spent} µ$ of a 1000 µ$ budget");
    assert!(
        spent <= 1_000 + one_chunk,
        "spent {spent} µ$ > limit + one chunk"
    );
    assert!(spent >= 900, "most of the budget was usable: {spent}");
    assert!(events[0].cut_off);
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "iron_proxy_stream_cutoffs_total{project=\"prj_budget\"}"
        ),
        1.0
    );
}

/// An exhausted budget → 402 budget_exceeded and the mock records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_budget_is_refused_before_upstream() {
    let h = Harness::start().await;
    for (path, shape_check) in [("/v1/chat/completions", "code"), ("/v1/messages", "type")] {
        let mut req = reqwest::Client::new().post(h.url(path));
        req = if path == "/v1/messages" {
            req.header("x-api-key", h.token_for("prj_broke")).header("anthropic-version", "2023-06-01").json(
                &serde_json::json!({"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}),
            )
        } else {
            req.bearer_auth(h.token_for("prj_broke"))
                .json(&chat_body(false))
        };
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 402, "{path}");
        assert_eq!(resp.headers()["x-iron-error"], "budget_exceeded");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert!(v["error"].get(shape_check).is_some(), "{v}");
    }
    assert_eq!(h.mock.request_count(), 0);
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "iron_proxy_budget_denials_total{project=\"prj_broke\"}"),
        2.0
    );
    // An unknown model is never free.
    let resp = reqwest::Client::new()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .json(&serde_json::json!({"model":"gpt-99-ultra","messages":[]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-iron-error"], "unknown_model_price");
    assert_eq!(h.mock.request_count(), 0);
}

/// Issue 4 acceptance 3 in the Anthropic shape: the same $0.001 budget and a 10,000-token
/// `/v1/messages` stream: partial content, then `event: error` (`budget_exceeded`) as the
/// last event; the upstream stream was aborted; spend stays within the limit + one chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_stream_is_cut_off_when_the_budget_is_gone() {
    let h = Harness::start().await;
    let model = "claude-haiku-4-5";
    let resp = reqwest::Client::new()
        .post(h.url("/v1/messages"))
        .header("x-api-key", h.token_for("prj_budget"))
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-tokens", "10000")
        .json(
            &serde_json::json!({"model": model, "max_tokens": 20000, "stream": true,
            "messages": [{"role": "user", "content": "Say hello"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let events = iron_testkit::parse_sse(&text);
    let content = events
        .iter()
        .filter_map(|e| e.json())
        .filter(|j| j["type"] == "content_block_delta" && j["delta"]["text"].is_string())
        .count();
    assert!(content > 10, "partial content first ({content} deltas)");
    assert!(content < 10_000, "but not the whole answer");
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"), "{text}");
    let last = last.json().unwrap();
    assert_eq!(last["type"], "error", "{last}");
    // Anthropic shape (core::error): `error.type` is Anthropic's own taxonomy so its SDKs
    // map it; Iron's code is `error.code` (and the message prefix).
    assert_eq!(last["error"]["code"], "budget_exceeded", "{last}");
    assert_eq!(last["error"]["type"], "billing_error", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("budget_exceeded: "),
        "{last}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.event.as_deref() == Some("message_stop")),
        "the stream did not end normally"
    );
    h.mock
        .wait_for(Duration::from_secs(5), |m| m.streams_aborted() == 1)
        .await
        .unwrap();
    assert_eq!(
        h.mock.streams_completed(),
        0,
        "the upstream stream was closed early"
    );

    let events = reported(&h, 1).await;
    let one_chunk = price(model).output_cost(1).micros();
    let spent = events[0].cost.micros();
    println!("anthropic cut-off: {content} deltas delivered, spent {spent} µ$ of 1000 µ$");
    assert!(
        spent <= 1_000 + one_chunk,
        "spent {spent} µ$ > limit + one chunk ({one_chunk} µ$)"
    );
    assert!(events[0].cut_off);
    assert_eq!(events[0].model, model);
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "iron_proxy_stream_cutoffs_total{project=\"prj_budget\"}"
        ),
        1.0
    );
}
