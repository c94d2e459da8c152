//! Acceptance 5: a provider key is never returned by the API or logged after creation —
//! responses (including errors and the OpenAPI document) and every log line are captured
//! and grepped. The proxy snapshot carries it sealed for transit only. Its own test binary,
//! so the global log subscriber sees everything.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Harness, LogCapture, PROXY_SECRET};
use iron_core::transit::transit_key;
use iron_core::wire::{SealedSecret, Snapshot};
use serde_json::json;

const PROVIDER_KEY: &str = "sk-test-FIXTURE-provider-key-0123456789";

#[tokio::test]
async fn provider_keys_never_appear_in_responses_or_logs() {
    let logs = LogCapture::start();
    let h = Harness::new().await;
    let rotated = "sk-live-ROTATED-0987654321-secret";
    let mut seen = String::new();
    let mut record = |r: &common::Resp| {
        seen.push_str(&r.text());
        seen.push_str(&format!("{:?}", r.headers));
    };
    let admin = h.admin.clone();
    let create = h
        .call(
            "POST",
            "/v1/providers",
            Some(&admin),
            Some(json!({"name":"openai","kind":"openai","base_url":"https://api.openai.com","api_key":PROVIDER_KEY,"models":["gpt-4o*"]})),
        )
        .await;
    assert_eq!(create.status, 201);
    assert_eq!(create.json()["api_key_masked"], "sk-…789");
    record(&create);
    let short = h
        .call(
            "POST",
            "/v1/providers",
            Some(&admin),
            Some(json!({"name":"short","kind":"anthropic","base_url":"https://api.anthropic.com","api_key":"sk-tiny"})),
        )
        .await;
    assert_eq!(short.json()["api_key_masked"], "…");
    record(&short);
    for path in [
        "/v1/providers",
        "/v1/providers/openai",
        "/v1/audit",
        "/openapi.json",
    ] {
        record(&h.call("GET", path, Some(&admin), None).await);
    }
    let rot = h
        .call(
            "POST",
            "/v1/providers/openai/rotate-key",
            Some(&admin),
            Some(json!({"api_key": rotated})),
        )
        .await;
    assert_eq!(rot.json()["api_key_masked"], "sk-…ret");
    record(&rot);
    record(&h.call("GET", "/v1/providers", Some(&admin), None).await);
    // Duplicate create and a bad request echo nothing either.
    let dup = h
        .call(
            "POST",
            "/v1/providers",
            Some(&admin),
            Some(json!({"name":"openai","kind":"openai","base_url":"https://api.openai.com","api_key":PROVIDER_KEY})),
        )
        .await;
    assert_eq!(dup.status, 409);
    record(&dup);
    let bad = h
        .call(
            "POST",
            "/v1/providers",
            Some(&admin),
            Some(json!({"name":"x","kind":"nope","base_url":"https://a.example.com","api_key":PROVIDER_KEY})),
        )
        .await;
    assert_eq!(bad.status, 400);
    record(&bad);

    // The proxy snapshot carries the key sealed for transit only.
    let snap = h
        .call("GET", "/internal/v1/snapshot", Some(PROXY_SECRET), None)
        .await;
    assert_eq!(snap.status, 200, "{snap:?}");
    record(&snap);
    let snap: Snapshot = serde_json::from_slice(&snap.body).unwrap();
    let p = snap.providers.iter().find(|p| p.name == "openai").unwrap();
    let opened = transit_key(PROXY_SECRET.as_bytes())
        .open(&p.api_key, p.id.as_bytes())
        .unwrap();
    assert_eq!(&opened[..], rotated.as_bytes());
    assert!(
        transit_key(b"another-secret-entirely")
            .open(&p.api_key, p.id.as_bytes())
            .is_err()
    );

    let logged = logs.text();
    assert!(
        logged.contains("/v1/providers"),
        "log capture is not working: {logged}"
    );
    for k in [PROVIDER_KEY, rotated, "sk-tiny"] {
        assert!(
            !seen.contains(k),
            "a response contains the provider key {k}"
        );
        assert!(!logged.contains(k), "the log contains the provider key {k}");
    }
    // Nor does the store keep it in plaintext (the sealed form only).
    let stored = h
        .control
        .state
        .svc
        .store
        .get_provider(&p.id)
        .await
        .unwrap()
        .unwrap();
    let stored: SealedSecret = stored.api_key;
    assert!(!stored.ciphertext.contains("ROTATED"));
}
