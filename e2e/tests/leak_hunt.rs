//! Issue 12 acceptance 5, the leak hunt: a full scenario on the production split
//! (`iron-control` on its embedded store + `iron-proxy`) — OpenAI and Anthropic calls,
//! streams, PII, provider faults that trip the breaker, a provider 401, bad input, bad
//! tokens, revocation — then every byte the system emitted is scanned for the secrets it
//! holds (provider keys, master key, proxy secret, admin key, the minted IC token and the
//! forged one): agent responses (status line, headers, body), both processes' logs (the
//! proxy's as JSON), both `/metrics`, the proxy's spans as exported over OTLP/HTTP to an
//! in-test receiver, every control API answer (incl. usage and audit exports and the
//! proxies' internal API), the control data dir and the proxy's spill dir. The PII values
//! sent in a prompt must not appear anywhere but the agent's own answers. Zero hits allowed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use iron_e2e::*;
use iron_testkit::{MockUpstream, OtlpReceiver};
use reqwest::Method;
use serde_json::json;

const OPENAI_KEY: &str = "sk-leakhunt-OPENAI-9d8c7b6a5f4e3d2c1b0a";
const ANTHROPIC_KEY: &str = "sk-ant-leakhunt-ANTHROPIC-0a1b2c3d4e5f";
/// PII values sent in a prompt (Iron redacts them before the provider; the mock echoes the
/// placeholders, which Iron restores in the agent's answer only).
const PII_EMAIL: &str = "jane.doe@example.com";
const PII_PHONE: &str = "+1 415 555 2671";

/// Everything the system said, labelled by where it came from.
#[derive(Default)]
struct Emitted(Vec<(String, Vec<u8>)>);

impl Emitted {
    fn add(&mut self, label: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0.push((label.into(), bytes.into()));
    }

    fn add_dir(&mut self, dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                self.add_dir(&p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                self.add(p.display().to_string(), bytes);
            }
        }
    }

    /// Adds a whole HTTP answer (status line, headers, body); returns its status.
    async fn record(&mut self, label: String, resp: reqwest::Response) -> u16 {
        let status = resp.status().as_u16();
        let mut bytes = format!("{status} {:?}\n", resp.headers()).into_bytes();
        bytes.extend(resp.bytes().await.unwrap_or_default());
        self.add(label, bytes);
        status
    }

    /// Labels of the outputs that contain `needle`.
    fn hits(&self, needle: &[u8]) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, b)| b.windows(needle.len()).any(|w| w == needle))
            .map(|(l, _)| l.clone())
            .collect()
    }
}

/// One agent call; records status, headers and body.
async fn agent(
    out: &mut Emitted,
    label: &str,
    http: &reqwest::Client,
    url: String,
    auth: (&str, &str),
    headers: &[(&str, &str)],
    body: &[u8],
) -> u16 {
    let mut req = http
        .post(url)
        .header(auth.0, auth.1)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    out.record(format!("agent response: {label}"), resp).await
}

async fn get_text(out: &mut Emitted, label: &str, url: String, bearer: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new().get(url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.unwrap();
    out.record(label.to_owned(), resp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaves_the_system() {
    let mock = MockUpstream::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let control = Control::start_embedded(data.path(), "").await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    let mut out = Emitted::default();
    let api = |label: String, v: &serde_json::Value| (label, v.to_string().into_bytes());

    // Providers, a project with the default PII policy, and a token.
    let mut answers = Vec::new();
    for (name, kind, key, models) in [
        ("leak-openai", "openai", OPENAI_KEY, json!(["gpt-*"])),
        (
            "leak-anthropic",
            "anthropic",
            ANTHROPIC_KEY,
            json!(["claude-*"]),
        ),
    ] {
        let (status, v) = admin
            .call(
                Method::POST,
                "/v1/providers",
                Some(
                    json!({"name": name, "kind": kind, "base_url": mock.base_url(),
                    "api_key": key, "models": models}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        answers.push(api(format!("provider create {name}"), &v));
    }
    let prv = "leak-openai";
    let (status, v) = admin
        .call(
            Method::POST,
            &format!("/v1/providers/{prv}/rotate-key"),
            Some(json!({"api_key": OPENAI_KEY})),
        )
        .await;
    assert!((200..300).contains(&status), "{v}");
    answers.push(api("provider rotate".into(), &v));
    admin.project("leaky", Some("5")).await;
    let (token_id, token) = admin.mint("leaky").await;

    let otlp = OtlpReceiver::start().await.unwrap();
    let proxy = Proxy::start_in_with_env(
        &control.url(),
        tempfile::tempdir().unwrap(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("IRON_SERVER__LOG_FORMAT", "json"),
        ],
    )
    .await
    .unwrap();
    proxy.ready().await.unwrap();
    let http = reqwest::Client::new();
    let chat = format!("{}/v1/chat/completions", proxy.url());
    let messages = format!("{}/v1/messages", proxy.url());
    let bearer = format!("Bearer {token}");
    let oa = ("authorization", bearer.as_str());
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
    let stream_body =
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;
    let pii_body = br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"mail jane.doe@example.com or call +1 415 555 2671"}]}"#;
    let anthropic_body = br#"{"model":"claude-3-5-haiku-latest","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hello"}]}"#;

    assert_eq!(
        agent(&mut out, "chat", &http, chat.clone(), oa, &[], body).await,
        200
    );
    assert_eq!(
        agent(
            &mut out,
            "stream",
            &http,
            chat.clone(),
            oa,
            &[],
            stream_body
        )
        .await,
        200
    );
    assert_eq!(
        agent(
            &mut out,
            "pii echo",
            &http,
            chat.clone(),
            oa,
            &[("x-mock-echo", "1")],
            pii_body
        )
        .await,
        200
    );
    let anth = ("x-api-key", token.as_str());
    let a = agent(
        &mut out,
        "anthropic",
        &http,
        messages.clone(),
        anth,
        &[("anthropic-version", "2023-06-01")],
        anthropic_body,
    )
    .await;
    assert_eq!(a, 200);
    // Provider errors: a 401 from the provider, a stream dropped mid-way, then 500s until
    // the breaker opens.
    for (label, fault) in [
        ("provider 401", "401"),
        ("mid-stream reset", "reset-mid-stream"),
        ("malformed sse", "malformed-sse"),
    ] {
        agent(
            &mut out,
            label,
            &http,
            chat.clone(),
            oa,
            &[("x-mock-fault", fault)],
            stream_body,
        )
        .await;
    }
    for i in 0..8 {
        agent(
            &mut out,
            &format!("500 #{i}"),
            &http,
            chat.clone(),
            oa,
            &[("x-mock-fault", "500")],
            body,
        )
        .await;
    }
    // The proxy reported the tripped breaker to control (shown on the Providers page).
    let mut states = serde_json::Value::Null;
    for _ in 0..60 {
        states = admin
            .call(Method::GET, &format!("/v1/providers/{prv}"), None)
            .await
            .1["breakers"]
            .clone();
        if states.to_string().contains("\"open\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        states.to_string().contains("\"open\""),
        "breaker not reported open: {states}"
    );
    // Bad input and bad tokens.
    assert_eq!(
        agent(&mut out, "bad json", &http, chat.clone(), oa, &[], b"{nope").await,
        400
    );
    let forged = format!("Bearer {}x", &token[..token.len() - 1]);
    agent(
        &mut out,
        "forged token",
        &http,
        chat.clone(),
        ("authorization", &forged),
        &[],
        body,
    )
    .await;
    agent(
        &mut out,
        "provider key as token",
        &http,
        chat.clone(),
        ("authorization", &format!("Bearer {OPENAI_KEY}")),
        &[],
        body,
    )
    .await;
    // Revocation.
    admin.revoke(&token_id).await;
    let mut revoked = 0;
    for _ in 0..40 {
        revoked = agent(&mut out, "after revoke", &http, chat.clone(), oa, &[], body).await;
        if revoked == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(revoked, 401);
    // Let the proxy report its usage.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Every read API, as admin, plus the proxies' internal API.
    for path in [
        "/v1/providers",
        &format!("/v1/providers/{prv}"),
        "/v1/projects",
        "/v1/projects/leaky",
        "/v1/projects/leaky/tokens",
        &format!("/v1/tokens/{token_id}"),
        "/v1/tokens",
        "/v1/budgets/leaky",
        "/v1/usage?project=leaky",
        "/v1/usage?project=leaky&format=csv",
        "/v1/audit?limit=500",
        "/v1/audit?format=csv",
        "/v1/audit?format=json",
        "/v1/stats/overview",
        "/v1/pricing",
        "/v1/api-keys",
        "/v1/signing-keys",
        "/openapi.json",
        "/metrics",
        "/health",
        "/ready",
    ] {
        get_text(
            &mut out,
            &format!("control GET {path}"),
            format!("{}{path}", control.url()),
            Some(ADMIN_KEY),
        )
        .await;
    }
    for path in ["/internal/v1/keys", "/internal/v1/snapshot"] {
        get_text(
            &mut out,
            &format!("control GET {path}"),
            format!("{}{path}", control.url()),
            Some(PROXY_SECRET),
        )
        .await;
    }
    get_text(
        &mut out,
        "proxy /metrics",
        format!("http://{}/metrics", proxy.admin),
        None,
    )
    .await;
    for (label, bytes) in answers {
        out.add(label, bytes);
    }

    // Spans: one `iron.request` span per agent call, exported in batches.
    let calls = out
        .0
        .iter()
        .filter(|(l, _)| l.starts_with("agent response"))
        .count();
    let mut request_spans = 0;
    for _ in 0..100 {
        request_spans = otlp
            .spans()
            .iter()
            .filter(|s| s["name"] == "iron.request")
            .count();
        if request_spans >= calls {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        request_spans >= calls,
        "{request_spans} request spans exported for {calls} agent calls"
    );
    out.add("proxy spans (OTLP)", otlp.raw());

    // Logs (one line per request, written as it ends) and files at rest.
    let spill = proxy.dir.path().to_owned();
    let proxy_log = proxy.process.output();
    out.add("proxy log", proxy_log.clone());
    out.add("control log", control.process.output());
    out.add_dir(&spill);
    out.add_dir(data.path());
    assert!(
        proxy_log.contains("\"message\":\"request\""),
        "the proxy logged no JSON request lines: {proxy_log}"
    );

    let master_raw = base64::engine::general_purpose::STANDARD
        .decode(MASTER_KEY)
        .unwrap();
    let forged_token = &forged["Bearer ".len()..];
    let needles: [(&str, &[u8]); 8] = [
        ("OpenAI provider key", OPENAI_KEY.as_bytes()),
        ("Anthropic provider key", ANTHROPIC_KEY.as_bytes()),
        ("master key (base64)", MASTER_KEY.as_bytes()),
        ("master key (raw)", &master_raw),
        ("proxy secret", PROXY_SECRET.as_bytes()),
        ("admin key", ADMIN_KEY.as_bytes()),
        ("IC token", token.as_bytes()),
        ("forged IC token", forged_token.as_bytes()),
    ];
    // The agent gets its own PII back (restored placeholders); nothing else may hold it.
    let pii_needles: [(&str, &[u8]); 2] = [
        ("PII e-mail from a prompt", PII_EMAIL.as_bytes()),
        ("PII phone number from a prompt", PII_PHONE.as_bytes()),
    ];
    // The scanner itself works: a planted copy is found.
    let mut planted = Emitted::default();
    planted.add("planted", format!("xx{OPENAI_KEY}yy"));
    assert_eq!(planted.hits(OPENAI_KEY.as_bytes()), ["planted"]);

    let scanned: usize = out.0.iter().map(|(_, b)| b.len()).sum();
    eprintln!(
        "leak hunt: {} outputs, {scanned} bytes scanned",
        out.0.len()
    );
    let mut leaks = Vec::new();
    for (name, needle) in needles {
        for label in out.hits(needle) {
            leaks.push(format!("{name} in {label}"));
        }
    }
    for (name, needle) in pii_needles {
        for label in out.hits(needle) {
            if !label.starts_with("agent response") {
                leaks.push(format!("{name} in {label}"));
            }
        }
    }
    assert_eq!(
        out.hits(PII_EMAIL.as_bytes()),
        ["agent response: pii echo"],
        "the agent gets its e-mail back (restored), so the PII scan can see it"
    );
    assert!(
        leaks.is_empty(),
        "secrets leaked ({} outputs, {scanned} bytes scanned):\n{}",
        out.0.len(),
        leaks.join("\n")
    );
    assert!(
        out.0.len() > 40 && scanned > 10_000,
        "too little was scanned: {scanned} bytes"
    );
}
