//! Issue 5 acceptance 3–5: PII redaction through the proxy, JSON and streamed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures::StreamExt;

const EMAIL: &str = "jane.doe@example.com";
const PHONE: &str = "+1 415 555 0132";
const CARD: &str = "4111 1111 1111 1111";
const SSN: &str = "536-22-8751";
const IBAN: &str = "DE89 3704 0044 0532 0130 00";
const SECRET: &str = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z";
const ALL: [&str; 6] = [EMAIL, PHONE, CARD, SSN, IBAN, SECRET];

fn prompt() -> String {
    format!(
        "Customer {EMAIL} called from {PHONE}. Card {CARD}, SSN {SSN}, IBAN {IBAN}. Our key is {SECRET}. Please summarise."
    )
}

/// The provider sees placeholders only; the agent gets its values back in the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_pii_is_replaced_and_restored_in_json_answers() {
    let h = Harness::start().await;
    let resp = reqwest::Client::new()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .header("x-mock-echo", "1")
        .json(&serde_json::json!({"model":"gpt-4o-mini","messages":[
            {"role":"system","content":"You are helpful."},
            {"role":"user","content":[{"type":"text","text": prompt()}]}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    let sent = h.mock.requests()[0].body_text();
    for value in ALL {
        assert!(
            !sent.contains(value),
            "{value} reached the provider: {sent}"
        );
        assert!(
            answer.contains(value),
            "{value} was not restored for the agent: {answer}"
        );
    }
    for placeholder in [
        "[EMAIL_1]",
        "[PHONE_1]",
        "[CREDIT_CARD_1]",
        "[US_SSN_1]",
        "[IBAN_1]",
        "[SECRET_1]",
    ] {
        assert!(
            sent.contains(placeholder),
            "{placeholder} missing upstream: {sent}"
        );
    }
    let series =
        "iron_proxy_pii_detections_total{action=\"redact\",direction=\"request\",type=\"EMAIL\"}";
    let m = h.wait_metric(series, 1.0).await;
    assert_eq!(metric(&m, series), 1.0, "{m}");
}

/// A streamed answer that contains a card number and an email split across 7-byte chunks:
/// no chunk the agent receives contains the raw values; the request's own values come back
/// restored even when their placeholders are split across chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answers_are_redacted_across_chunk_boundaries() {
    let h = Harness::start().await;
    let leaked_card = "5500 0000 0000 0004";
    let leaked_email = "bob@corp.example.org";
    let answer = format!("Found card {leaked_card} and contact {leaked_email} in the records.");
    let chunks = answer.len().div_ceil(7);
    let resp = reqwest::Client::new()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .header("x-mock-answer", &answer)
        .header("x-mock-chunks", chunks.to_string())
        .json(&chat_body(true))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut all = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = String::from_utf8(chunk.unwrap().to_vec()).unwrap();
        assert!(
            !chunk.contains(leaked_card) && !chunk.contains(leaked_email),
            "raw PII in a chunk: {chunk}"
        );
        all.push_str(&chunk);
    }
    let text: String = iron_testkit::parse_sse(&all)
        .iter()
        .filter_map(|e| e.json())
        .filter_map(|j| {
            j["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        text,
        "Found card [REDACTED:CREDIT_CARD] and contact [REDACTED:EMAIL] in the records."
    );
    assert!(all.trim_end().ends_with("data: [DONE]"));

    // The request's own values: placeholders echoed back in 7-byte pieces are restored.
    let prompt = format!("Mail {EMAIL} about card {CARD}.");
    let echoed_len = prompt.len() + 20;
    let resp = reqwest::Client::new()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .header("x-mock-echo", "1")
        .header("x-mock-chunks", echoed_len.div_ceil(7).to_string())
        .json(&serde_json::json!({"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":prompt}]}))
        .send()
        .await
        .unwrap();
    let all = resp.text().await.unwrap();
    let text: String = iron_testkit::parse_sse(&all)
        .iter()
        .filter_map(|e| e.json())
        .filter_map(|j| {
            j["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, prompt, "placeholders restored in the stream");
    let upstream = h.mock.requests().last().unwrap().body_text();
    assert!(upstream.contains("[EMAIL_1]") && !upstream.contains(EMAIL));
}

/// Anthropic streams are redacted and restored the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_stream_restores_placeholders() {
    let h = Harness::start().await;
    let prompt = format!("Call {PHONE} or write to {EMAIL}.");
    let resp = reqwest::Client::new()
        .post(h.url("/v1/messages"))
        .header("x-api-key", h.token())
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-echo", "1")
        .header("x-mock-chunks", "9")
        .json(
            &serde_json::json!({"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,
            "system":"Be brief.","messages":[{"role":"user","content":prompt}]}),
        )
        .send()
        .await
        .unwrap();
    let all = resp.text().await.unwrap();
    let text: String = iron_testkit::parse_sse(&all)
        .iter()
        .filter_map(|e| e.json())
        .filter(|j| j["type"] == "content_block_delta")
        .filter_map(|j| j["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, prompt);
    let upstream = h.mock.requests()[0].body_text();
    assert!(
        !upstream.contains(EMAIL) && !upstream.contains(PHONE),
        "{upstream}"
    );
}

/// `block` → 400 pii_blocked naming the types (never the values); nothing goes upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_types_are_refused_before_upstream() {
    let h = Harness::start().await;
    let resp = reqwest::Client::new()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token_for("prj_block"))
        .json(&serde_json::json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":prompt()}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-iron-error"], "pii_blocked");
    let body = resp.text().await.unwrap();
    assert!(body.contains("EMAIL") && body.contains("US_SSN"), "{body}");
    for value in ALL {
        assert!(!body.contains(value), "the error names a value: {body}");
    }
    assert_eq!(h.mock.request_count(), 0);
    // Allowed types in the same project still pass (phone only).
    let resp = reqwest::Client::new()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token_for("prj_block"))
        .json(&serde_json::json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":format!("call {PHONE}")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
