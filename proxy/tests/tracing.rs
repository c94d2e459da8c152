//! Issue 7 acceptance 4 and 5 (proxy side): spans reach an in-test OTLP/HTTP receiver with
//! GenAI attributes, the upstream gets a `traceparent` of the same trace, and no secret
//! appears in logs, `/metrics` or spans. Plus the one JSON summary line per request (§12):
//! route, project, token id, model, status, tokens, cost, overhead, upstream wait, PII counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use iron_core::token::{SigningKey, new_token_id, unix_now};
use iron_testkit::otlp::attr;
use iron_testkit::{ChildProcess, MockUpstream, OtlpReceiver, wait_for_tcp};

/// `iron-proxy` as a process (JSON logs) in front of `mock`, exporting spans to `otlp`.
struct Proxy {
    process: ChildProcess,
    addr: SocketAddr,
    admin: SocketAddr,
    key: SigningKey,
    _dir: tempfile::TempDir,
}

async fn spawn_proxy(mock: &MockUpstream, otlp: Option<&OtlpReceiver>) -> Proxy {
    let key = SigningKey::generate().unwrap();
    let pk = key.public_key();
    let (addr, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\nthreads = 2\nlog_format = \"json\"\nshutdown_grace_secs = 5\n\n\
             [security]\nallow_private_upstreams = true\n\n\
             [auth]\npublic_keys = [{{ kid = \"{}\", alg = \"EdDSA\", x = \"{}\" }}]\n\n[[projects]]\nid = \"{PROJECT}\"\n\n\
             [[providers]]\nid = \"openai\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"K\"\n",
            pk.kid,
            pk.x,
            mock.base_url()
        ),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_iron-proxy"));
    cmd.args(["--config", config.to_str().unwrap()])
        .env("K", OPENAI_KEY);
    if let Some(otlp) = otlp {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    }
    let process = ChildProcess::spawn(cmd).await.unwrap();
    wait_for_tcp(addr, Duration::from_secs(20)).await.unwrap();
    Proxy {
        process,
        addr,
        admin,
        key,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_gen_ai_attributes_and_the_trace_reaches_upstream() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let mock = MockUpstream::start().await.unwrap();
    let Proxy {
        process: mut proxy,
        addr,
        admin,
        key,
        _dir,
    } = spawn_proxy(&mock, Some(&otlp)).await;

    let now = unix_now();
    let token = key.mint(&new_token_id(), PROJECT, now, now + 600).unwrap();
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(&token)
        .header(
            "traceparent",
            format!("00-{client_trace}-00f067aa0ba902b7-01"),
        )
        .header("x-mock-tokens", "7")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // The upstream saw a traceparent in the agent's trace, with Iron's span as parent.
    let upstream_tp = mock.requests()[0].header("traceparent").unwrap().to_owned();
    let parts: Vec<&str> = upstream_tp.split('-').collect();
    assert_eq!(
        parts[1], client_trace,
        "same trace id upstream: {upstream_tp}"
    );
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "Iron's own span is the upstream parent"
    );

    let mut all = Vec::new();
    for _ in 0..100 {
        all = otlp.spans();
        if all.iter().any(|s| s["name"] == "iron.request")
            && all.iter().any(|s| s["name"] == "iron.upstream")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let request = all
        .iter()
        .find(|s| s["name"] == "iron.request")
        .unwrap_or_else(|| panic!("no request span: {all:?}"));
    assert_eq!(
        request["traceId"].as_str().unwrap().to_lowercase(),
        client_trace
    );
    assert_eq!(
        attr(request, "gen_ai.system").unwrap()["stringValue"],
        "openai"
    );
    assert_eq!(
        attr(request, "gen_ai.operation.name").unwrap()["stringValue"],
        "chat"
    );
    assert_eq!(
        attr(request, "gen_ai.request.model").unwrap()["stringValue"],
        "gpt-4o-mini"
    );
    let out_tokens = attr(request, "gen_ai.usage.output_tokens").unwrap();
    // OTLP/JSON encodes 64-bit integers as strings.
    assert!(
        out_tokens["intValue"] == "7" || out_tokens["intValue"] == 7,
        "{out_tokens}"
    );
    assert!(attr(request, "gen_ai.usage.input_tokens").is_some());
    let upstream = all.iter().find(|s| s["name"] == "iron.upstream").unwrap();
    assert_eq!(
        upstream["spanId"].as_str().unwrap().to_lowercase(),
        parts[2],
        "traceparent names the upstream span"
    );
    for stage in [
        "iron.auth",
        "iron.read",
        "iron.route",
        "iron.budget",
        "iron.redact",
        "iron.rewrite",
        "iron.stream",
        "iron.settle",
    ] {
        assert!(all.iter().any(|s| s["name"] == stage), "no {stage} span");
    }

    // No secret anywhere Iron wrote: JSON logs, metrics, spans.
    proxy.signal("TERM").await.unwrap();
    proxy.wait_exit(Duration::from_secs(10)).await.unwrap();
    let logs = proxy.output();
    assert!(
        logs.lines().any(|l| l.contains("\"message\":\"request\"")),
        "one JSON line per request: {logs}"
    );
    let spans_text = String::from_utf8_lossy(&otlp.raw()).into_owned();
    for (what, text) in [
        ("logs", &logs),
        ("metrics", &metrics),
        ("spans", &spans_text),
    ] {
        assert!(!text.contains(OPENAI_KEY), "provider key in {what}");
        assert!(!text.contains(&token), "IC token in {what}");
    }
}

/// The `request` line of `logs` (JSON format) whose `token_id` is `token_id`.
fn summary_line(logs: &str, token_id: &str) -> serde_json::Value {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["target"] == "iron::request"
                && v["fields"]["message"] == "request"
                && v["fields"]["token_id"] == token_id
        })
        .unwrap_or_else(|| panic!("no JSON request line for {token_id}: {logs}"))["fields"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_summary_line_per_request_with_every_field() {
    let mock = MockUpstream::start().await.unwrap();
    let mut proxy = spawn_proxy(&mock, None).await;
    let token_id = new_token_id();
    let now = unix_now();
    let token = proxy.key.mint(&token_id, PROJECT, now, now + 600).unwrap();
    let email = "jane.doe@example.com";
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": format!("write to {email} today")}]});
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", proxy.addr))
        .bearer_auth(&token)
        .header("x-mock-tokens", "7")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    // A second request that Iron refuses (bad JSON): its own line, status 400, no cost.
    let bad_id = new_token_id();
    let bad_token = proxy.key.mint(&bad_id, PROJECT, now, now + 600).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", proxy.addr))
        .bearer_auth(&bad_token)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let metrics = reqwest::get(format!("http://{}/metrics", proxy.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    proxy.process.signal("TERM").await.unwrap();
    proxy
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap();
    let logs = proxy.process.output();

    // What the provider saw and reported: the mock counts ceil(bytes / 4) prompt tokens of
    // the (redacted) message and exactly 7 completion tokens; gpt-4o-mini costs
    // $0.15 / $0.60 per million input / output tokens.
    let sent = mock.requests()[0].json().unwrap();
    let upstream_prompt = sent["messages"][0]["content"].as_str().unwrap().to_owned();
    assert!(!upstream_prompt.contains(email), "{upstream_prompt}");
    let input = upstream_prompt.len().div_ceil(4) as u64;
    assert_eq!(answer["usage"]["prompt_tokens"], input);
    let cost = (input * 150_000 + 7 * 600_000).div_ceil(1_000_000);

    let line = summary_line(&logs, &token_id);
    assert_eq!(line["route"], "chat_completions");
    assert_eq!(line["project"], PROJECT);
    assert_eq!(line["token_id"], token_id.as_str());
    assert_eq!(line["provider"], "openai");
    assert_eq!(line["model"], "gpt-4o-mini");
    assert_eq!(line["status"], 200);
    assert_eq!(line["code"], "ok");
    assert_eq!(line["input_tokens"], input);
    assert_eq!(line["output_tokens"], 7);
    assert_eq!(line["cost_microdollars"], cost);
    assert_eq!(line["pii"], "request:EMAIL:redact=1");
    let us = |k: &str| {
        line[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} is not a number: {line}"))
    };
    let (total, upstream, client, overhead) = (
        us("duration_us"),
        us("upstream_us"),
        us("client_us"),
        us("overhead_us"),
    );
    assert!(upstream > 0, "{line}");
    assert!(overhead > 0, "{line}");
    // overhead = total − upstream − client (each rounded down to the microsecond).
    assert!(
        total.abs_diff(upstream + client + overhead) <= 2,
        "overhead is total minus the waits: {line}"
    );

    let bad = summary_line(&logs, &bad_id);
    assert_eq!(bad["status"], 400);
    assert_eq!(bad["code"], "invalid_json");
    assert_eq!(bad["cost_microdollars"], 0);
    assert_eq!(bad["pii"], "");
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("\"target\":\"iron::request\""))
            .count(),
        2,
        "one summary line per request: {logs}"
    );

    // Never the value, nor the token, in logs or metrics.
    for (what, text) in [("logs", &logs), ("metrics", &metrics)] {
        assert!(!text.contains(email), "PII value in {what}");
        assert!(!text.contains(&token), "IC token in {what}");
        assert!(!text.contains(OPENAI_KEY), "provider key in {what}");
    }
}
