//! Issue 7 acceptance 4 and 5 (proxy side): spans reach an in-test OTLP/HTTP receiver with
//! GenAI attributes, the upstream gets a `traceparent` of the same trace, and no secret
//! appears in logs, `/metrics` or spans.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use iron_core::token::{SigningKey, new_token_id, unix_now};
use iron_testkit::{ChildProcess, MockUpstream, wait_for_tcp};

/// A minimal OTLP/HTTP receiver: stores every JSON body posted to /v1/traces.
async fn otlp_receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if path == "/v1/traces"
                                && let Ok(v) = serde_json::from_slice(&body)
                            {
                                store.lock().unwrap().push(v);
                            }
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                        b"{}",
                                    )))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

fn spans(batches: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for b in batches {
        for rs in b["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                out.extend(ss["spans"].as_array().cloned().unwrap_or_default());
            }
        }
    }
    out
}

fn attr<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_gen_ai_attributes_and_the_trace_reaches_upstream() {
    let (otlp, received) = otlp_receiver().await;
    let mock = MockUpstream::start().await.unwrap();
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
        .env("K", OPENAI_KEY)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let mut proxy = ChildProcess::spawn(cmd).await.unwrap();
    wait_for_tcp(addr, Duration::from_secs(20)).await.unwrap();

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
        all = spans(&received.lock().unwrap());
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
    let spans_text = serde_json::to_string(&*received.lock().unwrap()).unwrap();
    for (what, text) in [
        ("logs", &logs),
        ("metrics", &metrics),
        ("spans", &spans_text),
    ] {
        assert!(!text.contains(OPENAI_KEY), "provider key in {what}");
        assert!(!text.contains(&token), "IC token in {what}");
    }
}
