//! Issue 3 (control mode, polling fallback): when control's event stream fails
//! (`GET /internal/v1/events` → 500) but its snapshot still answers, a revocation made at
//! control reaches the proxy through the snapshot poll (`control_sync`, one poll per second)
//! and the token is refused with 401 `token_revoked` within one polling interval.
//!
//! Control is an in-test fake that speaks the proxy-facing half of the protocol: the
//! snapshot (keys, one project, one provider sealed under the transit key), leases that are
//! always granted, reports that are always acknowledged (never with `revoked`, so the
//! snapshot is the only way the revocation can arrive) and a broken event stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http_body_util::BodyExt;
use iron_core::Money;
use iron_core::lease::{LeaseGrant, LeaseRequest, ReportAck};
use iron_core::token::{SigningKey, new_token_id, unix_now};
use iron_core::transit::transit_key;
use iron_core::wire::{ProjectSpec, ProviderKind, ProviderSpec, Snapshot};
use iron_proxy::config::ProxyConfig;
use iron_testkit::MockUpstream;

const SECRET: &str = "control-poll-proxy-secret-0123456789";

/// The fake control's state: what the next snapshot says, and what the proxy asked for.
struct Fake {
    snapshot: Mutex<Snapshot>,
    snapshots_served: AtomicUsize,
    events_failed: AtomicUsize,
}

fn json_response(status: u16, body: String) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap()
}

async fn handle(
    fake: Arc<Fake>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let authorized = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {SECRET}").as_bytes());
    if !authorized {
        return json_response(401, "{}".into());
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let far = unix_now() + 3600;
    match (method.as_str(), path.as_str()) {
        ("GET", "/internal/v1/snapshot") => {
            fake.snapshots_served.fetch_add(1, Ordering::SeqCst);
            let snap = fake.snapshot.lock().unwrap().clone();
            json_response(200, serde_json::to_string(&snap).unwrap())
        }
        // The broken part: the event stream never comes up.
        ("GET", "/internal/v1/events") => {
            fake.events_failed.fetch_add(1, Ordering::SeqCst);
            json_response(500, r#"{"error":"event stream down"}"#.into())
        }
        ("POST", "/internal/v1/leases") => {
            let req: LeaseRequest = serde_json::from_slice(&body).unwrap();
            let grant = LeaseGrant {
                lease_id: format!("lse_{}", req.token_id),
                granted: req.requested,
                expires_at: far,
                budget_remaining: Money::from_usd(1000),
                denied: None,
            };
            json_response(200, serde_json::to_string(&grant).unwrap())
        }
        ("POST", p) if p.starts_with("/internal/v1/leases/") && p.ends_with("/extend") => {
            let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let requested: Money = serde_json::from_value(req["requested"].clone()).unwrap();
            let grant = LeaseGrant {
                lease_id: p
                    .trim_end_matches("/extend")
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .into(),
                granted: requested,
                expires_at: far,
                budget_remaining: Money::from_usd(1000),
                denied: None,
            };
            json_response(200, serde_json::to_string(&grant).unwrap())
        }
        ("POST", p) if p.starts_with("/internal/v1/leases/") && p.ends_with("/report") => {
            let ack = ReportAck {
                lease_remaining: Money::from_usd(1),
                budget_remaining: Money::from_usd(1000),
                revoked: false,
            };
            json_response(200, serde_json::to_string(&ack).unwrap())
        }
        ("DELETE", p) if p.starts_with("/internal/v1/leases/") => json_response(200, "{}".into()),
        ("PUT", p) if p.starts_with("/internal/v1/proxies/") => json_response(200, "{}".into()),
        _ => json_response(404, "{}".into()),
    }
}

async fn start_fake(fake: Arc<Fake>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let fake = fake.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fake = fake.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(fake, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn chat(addr: std::net::SocketAddr, token: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_arrives_by_snapshot_polling_when_the_event_stream_fails() {
    let mock = MockUpstream::start().await.unwrap();
    let key = SigningKey::generate().unwrap();
    let provider_id = "prv_mock".to_owned();
    let sealed = transit_key(SECRET.as_bytes()).seal(OPENAI_KEY.as_bytes(), provider_id.as_bytes());
    let fake = Arc::new(Fake {
        snapshot: Mutex::new(Snapshot {
            version: 1,
            keys: vec![key.public_key()],
            projects: vec![ProjectSpec {
                id: PROJECT.into(),
                name: "poll".into(),
                providers: Vec::new(),
                allowed_models: Vec::new(),
                pii: None,
                rate_limits: Default::default(),
            }],
            providers: vec![ProviderSpec {
                id: provider_id,
                name: "mock".into(),
                kind: ProviderKind::Openai,
                base_url: mock.base_url(),
                models: vec!["*".into()],
                priority: 0,
                api_key: sealed,
                timeouts: Default::default(),
            }],
            revoked: Vec::new(),
            prices: BTreeMap::new(),
        }),
        snapshots_served: AtomicUsize::new(0),
        events_failed: AtomicUsize::new(0),
    });
    let control = start_fake(fake.clone()).await;

    let (addr, admin) = (free_addr(), free_addr());
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\nthreads = 2\nshutdown_grace_secs = 0\n\n\
         [security]\nallow_private_upstreams = true\n\n\
         [control]\nurl = \"http://{control}\"\n"
    );
    let env: BTreeMap<String, String> =
        [("IRON_PROXY_SECRET".to_owned(), SECRET.to_owned())].into();
    let config = ProxyConfig::from_toml(&toml, &env).unwrap();
    let proxy = tokio::task::spawn_blocking(move || iron_proxy::start(&config))
        .await
        .unwrap()
        .unwrap();

    let now = unix_now();
    let token_id = new_token_id();
    let token = key.mint(&token_id, PROJECT, now, now + 3600).unwrap();
    let other = key.mint(&new_token_id(), PROJECT, now, now + 3600).unwrap();

    // The token works (the routing table came from the snapshot) although the event stream
    // has never come up.
    let start = Instant::now();
    loop {
        let (status, body) = chat(addr, &token).await;
        if status == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "proxy never served from the snapshot: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mock.request_count(), 1);
    assert_eq!(
        mock.requests()[0].header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str()),
        "the provider key was opened from the sealed snapshot"
    );
    assert!(
        fake.events_failed.load(Ordering::SeqCst) >= 1,
        "the proxy tried the event stream and got 500"
    );

    // Revoke at control: only the snapshot says so (no event can be delivered).
    let polls_before = fake.snapshots_served.load(Ordering::SeqCst);
    let revoked_at = Instant::now();
    {
        let mut snap = fake.snapshot.lock().unwrap();
        snap.version += 1;
        snap.revoked.push(token_id.clone());
    }
    // One polling interval (1 s) plus room for the snapshot round trip on a loaded machine.
    let bound = Duration::from_millis(1500);
    let took = loop {
        let (status, body) = chat(addr, &token).await;
        if status == 401 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"]["code"], "token_revoked", "{body}");
            break revoked_at.elapsed();
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            revoked_at.elapsed() < bound,
            "revocation not applied by polling within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("revocation applied by snapshot polling after {took:?}");
    assert!(took <= bound, "took {took:?} > {bound:?}");
    assert!(
        fake.snapshots_served.load(Ordering::SeqCst) > polls_before,
        "it came from a new snapshot"
    );
    // Only the revoked token is refused.
    assert_eq!(chat(addr, &other).await.0, 200);
    proxy.shutdown();
}
