//! Issue 5 acceptance 3–5: PII redaction through the proxy, JSON and streamed (OpenAI and
//! Anthropic streams cut into 7-byte deltas), irreversible mode, response-direction metrics.
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

/// Upstream deltas of 7 bytes: values arrive cut in the middle (`x-mock-chunk-bytes`).
const CHUNK_BYTES: usize = 7;

/// The two chat APIs whose streams the proxy redacts.
#[derive(Clone, Copy, Debug)]
enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::OpenAi => "/v1/chat/completions",
            Api::Anthropic => "/v1/messages",
        }
    }

    fn body(self, prompt: &str) -> serde_json::Value {
        match self {
            Api::OpenAi => serde_json::json!({"model":"gpt-4o-mini","stream":true,
                "messages":[{"role":"user","content":prompt}]}),
            Api::Anthropic => serde_json::json!({"model":"claude-sonnet-4-5","max_tokens":100,
                "stream":true,"messages":[{"role":"user","content":prompt}]}),
        }
    }

    /// A streaming request to `base` (the proxy with an IC token, or the mock directly with
    /// the provider key) with the mock steering headers `mock`.
    fn request(
        self,
        base: &str,
        key: &str,
        body: &serde_json::Value,
        mock: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut rb = reqwest::Client::new().post(format!("{base}{}", self.path()));
        rb = match self {
            Api::OpenAi => rb.bearer_auth(key),
            Api::Anthropic => rb
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01"),
        };
        for (k, v) in mock {
            rb = rb.header(*k, *v);
        }
        rb.json(body)
    }

    /// The answer-text deltas of a strictly parsed stream, in order.
    fn deltas(self, events: &[(Option<String>, serde_json::Value)]) -> Vec<String> {
        events
            .iter()
            .filter_map(|(_, j)| match self {
                Api::OpenAi => j["choices"][0]["delta"]["content"].as_str(),
                Api::Anthropic if j["type"] == "content_block_delta" => j["delta"]["text"].as_str(),
                Api::Anthropic => None,
            })
            .map(str::to_owned)
            .collect()
    }
}

/// Every event of an SSE body, parsed strictly: each line is an SSE field (`data:`, `event:`,
/// `id:`, `retry:`) or a comment, and every `data:` payload except `[DONE]` must be valid JSON
/// (an event the redactor re-emitted badly fails the test, it is not skipped). An `event:`
/// name must equal the JSON `type` (Anthropic). Returns `(event name, data)` in order.
fn strict_events(body: &str) -> Vec<(Option<String>, serde_json::Value)> {
    let body = body.replace("\r\n", "\n");
    let mut out = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            let field = |f: &str| {
                line.strip_prefix(f)
                    .map(|v| v.strip_prefix(' ').unwrap_or(v))
            };
            if let Some(v) = field("data:") {
                data.push(v);
            } else if let Some(v) = field("event:") {
                name = Some(v.to_owned());
            } else {
                assert!(
                    line.starts_with(':') || line.starts_with("id:") || line.starts_with("retry:"),
                    "not an SSE field line: {line:?} in block {block:?}"
                );
            }
        }
        let data = data.join("\n");
        if data == "[DONE]" {
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("invalid JSON in a re-emitted event ({e}): {data:?}"));
        if let Some(n) = &name {
            assert_eq!(
                json["type"].as_str(),
                Some(n.as_str()),
                "event name vs type"
            );
        }
        out.push((name, json));
    }
    out
}

/// Reads a streamed response chunk by chunk; no chunk (and not the whole body) may contain
/// any of `raw`. Returns the body.
async fn read_checked(resp: reqwest::Response, raw: &[&str]) -> String {
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut all = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = String::from_utf8_lossy(&chunk.unwrap()).into_owned();
        for value in raw {
            assert!(!chunk.contains(value), "raw {value} in a chunk: {chunk}");
        }
        all.push_str(&chunk);
    }
    for value in raw {
        assert!(!all.contains(value), "raw {value} in the body: {all}");
    }
    all
}

/// `value` reaches the client cut across deltas: no delta holds all of it, and a delta
/// boundary falls strictly inside it (some delta holds only a part).
fn assert_split(deltas: &[String], value: &str) {
    assert!(
        deltas.iter().all(|d| !d.contains(value)),
        "{value} arrived whole in one delta: {deltas:?}"
    );
    let text = deltas.concat();
    let start = text
        .find(value)
        .unwrap_or_else(|| panic!("{value} not in {text:?}"));
    let end = start + value.len();
    let mut at = 0;
    let cut = deltas.iter().any(|d| {
        at += d.len();
        start < at && at < end
    });
    assert!(cut, "{value} is not split across deltas: {deltas:?}");
}

fn series(direction: &str, kind: &str) -> String {
    format!(
        "iron_proxy_pii_detections_total{{action=\"redact\",direction=\"{direction}\",type=\"{kind}\"}}"
    )
}

/// Acceptance 4 for one API: an answer that carries a card number and an e-mail cut across
/// 7-byte upstream deltas never reaches the client raw (response policy `redact`), and the
/// request's own values come back restored although their placeholders are cut the same way.
async fn redacted_across_chunk_boundaries(api: Api) {
    let h = Harness::start().await;
    let direct = iron_testkit::MockUpstream::start().await.unwrap();
    let provider_key = match api {
        Api::OpenAi => OPENAI_KEY,
        Api::Anthropic => ANTHROPIC_KEY,
    };
    let bytes = CHUNK_BYTES.to_string();

    // 1. PII that first appears in the answer.
    let leaked_card = "5500 0000 0000 0004";
    let leaked_email = "bob@corp.example.org";
    let answer = format!("Found card {leaked_card} and contact {leaked_email} in the records.");
    let mock_headers = [
        ("x-mock-answer", answer.as_str()),
        ("x-mock-chunk-bytes", bytes.as_str()),
    ];
    let body = api.body("Say hello");
    // What the upstream sends: the same mock, asked directly.
    let upstream = direct_deltas(&direct, api, provider_key, &body, &mock_headers).await;
    assert_eq!(upstream.concat(), answer);
    assert!(
        upstream.iter().all(|d| d.len() <= CHUNK_BYTES),
        "{upstream:?}"
    );
    assert_split(&upstream, leaked_card);
    assert_split(&upstream, leaked_email);

    let resp = api
        .request(&h.url(""), &h.token(), &body, &mock_headers)
        .send()
        .await
        .unwrap();
    let all = read_checked(resp, &[leaked_card, leaked_email]).await;
    let deltas = api.deltas(&strict_events(&all));
    let text = deltas.concat();
    assert_eq!(
        text,
        "Found card [REDACTED:CREDIT_CARD] and contact [REDACTED:EMAIL] in the records."
    );
    for d in &deltas {
        assert!(!d.contains(leaked_card) && !d.contains(leaked_email), "{d}");
    }
    if let Api::OpenAi = api {
        assert!(all.trim_end().ends_with("data: [DONE]"), "{all}");
    }
    // PII found first in the answer is counted in the response direction.
    let m = h.wait_metric(&series("response", "EMAIL"), 1.0).await;
    assert_eq!(metric(&m, &series("response", "EMAIL")), 1.0, "{m}");
    assert_eq!(metric(&m, &series("response", "CREDIT_CARD")), 1.0, "{m}");
    assert_eq!(metric(&m, &series("request", "EMAIL")), 0.0, "{m}");

    // 2. The request's own values: the echoed placeholders are cut across 7-byte deltas.
    let prompt = format!("Mail {EMAIL} about card {CARD}.");
    let echo = [("x-mock-echo", "1"), ("x-mock-chunk-bytes", bytes.as_str())];
    let resp = api
        .request(&h.url(""), &h.token(), &api.body(&prompt), &echo)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let all = resp.text().await.unwrap();
    let text = api.deltas(&strict_events(&all)).concat();
    assert_eq!(text, prompt, "placeholders restored in the stream");
    let sent = h.mock.requests().last().unwrap().clone();
    let sent_text = sent.body_text();
    assert!(
        sent_text.contains("Mail [EMAIL_1] about card [CREDIT_CARD_1].")
            && !sent_text.contains(EMAIL)
            && !sent_text.contains(CARD),
        "{sent_text}"
    );
    // What the upstream answered to exactly that request, asked again directly.
    let upstream = direct_deltas(&direct, api, provider_key, &sent.json().unwrap(), &echo).await;
    assert_eq!(
        upstream.concat(),
        "Mail [EMAIL_1] about card [CREDIT_CARD_1]."
    );
    assert_split(&upstream, "[EMAIL_1]");
    assert_split(&upstream, "[CREDIT_CARD_1]");
    // Restoring the request's placeholders is not a new response detection.
    let m = h.wait_metric(&series("request", "EMAIL"), 1.0).await;
    assert_eq!(metric(&m, &series("request", "EMAIL")), 1.0, "{m}");
    assert_eq!(metric(&m, &series("request", "CREDIT_CARD")), 1.0, "{m}");
    assert_eq!(metric(&m, &series("response", "EMAIL")), 1.0, "{m}");
}

/// The answer-text deltas `mock` streams when asked directly (not through the proxy) for
/// `body` with the steering headers `headers`.
async fn direct_deltas(
    mock: &iron_testkit::MockUpstream,
    api: Api,
    key: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> Vec<String> {
    let resp = api
        .request(&mock.base_url(), key, body, headers)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    api.deltas(&strict_events(&resp.text().await.unwrap()))
}

/// Acceptance 4, OpenAI chat stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answers_are_redacted_across_chunk_boundaries() {
    redacted_across_chunk_boundaries(Api::OpenAi).await;
}

/// Acceptance 4, Anthropic messages stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_streamed_answers_are_redacted_across_chunk_boundaries() {
    redacted_across_chunk_boundaries(Api::Anthropic).await;
}

/// Anthropic streams restore placeholders split by the default chunking too (with a system
/// prompt), and every re-emitted event is valid.
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
    let text = Api::Anthropic.deltas(&strict_events(&all)).concat();
    assert_eq!(text, prompt);
    let upstream = h.mock.requests()[0].body_text();
    assert!(
        !upstream.contains(EMAIL) && !upstream.contains(PHONE),
        "{upstream}"
    );
}

/// Irreversible mode (`reversible = false`): the provider sees `[REDACTED:EMAIL]`, and the
/// client gets that text back as it is — nothing is restored, not even a `[EMAIL_1]` that
/// looks like a placeholder (in reversible mode it would become the address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irreversible_projects_never_restore() {
    let h = Harness::start().await;
    let prompt = format!("Literal [EMAIL_1] and mail {EMAIL}.");
    let redacted = "Literal [EMAIL_1] and mail [REDACTED:EMAIL].";
    let resp = reqwest::Client::new()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token_for("prj_irreversible"))
        .header("x-mock-echo", "1")
        .json(&serde_json::json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":prompt}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], redacted);
    let sent = h.mock.requests()[0].json().unwrap();
    assert_eq!(sent["messages"][0]["content"], redacted);

    let bytes = CHUNK_BYTES.to_string();
    let resp = Api::OpenAi
        .request(
            &h.url(""),
            &h.token_for("prj_irreversible"),
            &Api::OpenAi.body(&prompt),
            &[("x-mock-echo", "1"), ("x-mock-chunk-bytes", &bytes)],
        )
        .send()
        .await
        .unwrap();
    let all = read_checked(resp, &[EMAIL]).await;
    assert_eq!(Api::OpenAi.deltas(&strict_events(&all)).concat(), redacted);
    let sent = h.mock.requests()[1].json().unwrap();
    assert_eq!(sent["messages"][0]["content"], redacted);
    let m = h.wait_metric(&series("request", "EMAIL"), 2.0).await;
    assert_eq!(metric(&m, &series("request", "EMAIL")), 2.0, "{m}");
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
