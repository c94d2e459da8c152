//! Control events over SSE against a real server on an ephemeral port: delivery latency,
//! `Last-Event-ID` replay, resync after the retained log, keep-alives, and fan-out between
//! two control replicas sharing one Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use iron_control::config::{Config, StoreConfig};
use iron_control::keys::{Secret, generate_api_key};
use iron_control::server::{self, Control};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use common::PROXY_SECRET;

struct Server {
    addr: SocketAddr,
    admin: String,
    control: Control,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start_with(cfg_edit: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let admin = generate_api_key().to_string();
    let mut cfg = common::config(dir.path(), &admin, false);
    cfg_edit(&mut cfg);
    start_cfg(cfg, admin, dir).await
}

async fn start_cfg(cfg: Config, admin: String, dir: tempfile::TempDir) -> Server {
    let control = server::build_state(&cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = control.state.clone();
    tokio::spawn(async move {
        let _ = server::serve(listener, state, async {
            let _ = stopped.await;
        })
        .await;
    });
    Server {
        addr,
        admin,
        control,
        _dir: dir,
        stop: Some(stop),
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = reqwest::Client::new()
            .request(method, self.url(path))
            .bearer_auth(&self.admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Opens an SSE stream; raw event blocks (without the blank line) arrive on the channel.
    async fn subscribe(
        &self,
        path: &str,
        secret: &str,
        last_id: Option<u64>,
    ) -> mpsc::Receiver<String> {
        let mut req = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(secret);
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let (tx, rx) = mpsc::channel(100);
        tokio::spawn(async move {
            let mut buf = String::new();
            let mut stream = resp.bytes_stream();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(i) = buf.find("\n\n") {
                    let block = buf[..i].to_owned();
                    buf.drain(..i + 2);
                    if tx.send(block).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }
}

/// The next non-comment block, parsed into (id, event, data).
async fn next_event(rx: &mut mpsc::Receiver<String>, within: Duration) -> (u64, String, Value) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let block = tokio::time::timeout(left, rx.recv())
            .await
            .expect("no event in time")
            .unwrap();
        if block.starts_with(':') {
            continue;
        }
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap_or_else(|| panic!("no {name} in {block:?}"))
                .to_owned()
        };
        return (
            field("id").parse().unwrap(),
            field("event"),
            serde_json::from_str(&field("data")).unwrap(),
        );
    }
}

async fn no_event(rx: &mut mpsc::Receiver<String>, for_: Duration) {
    let deadline = Instant::now() + for_;
    while let Ok(Some(block)) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        rx.recv(),
    )
    .await
    {
        assert!(block.starts_with(':'), "unexpected event {block:?}");
    }
}

async fn mint(s: &Server, project: &str) -> String {
    let t = s
        .admin(
            reqwest::Method::POST,
            &format!("/v1/projects/{project}/tokens"),
            Some(json!({})),
        )
        .await;
    t["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_subscribers_within_100ms() {
    let s = start_with(|_| {}).await;
    s.admin(
        reqwest::Method::POST,
        "/v1/projects",
        Some(json!({"name":"alpha"})),
    )
    .await;
    let tok = mint(&s, "alpha").await;
    let mut proxy = s.subscribe("/internal/v1/events", PROXY_SECRET, None).await;
    let mut dashboard = s.subscribe("/v1/events", &s.admin.clone(), None).await;
    // Let both subscribers reach the live phase.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let last = s.control.state.svc.store.last_event_id().await.unwrap();
    let t0 = Instant::now();
    s.admin(reqwest::Method::DELETE, &format!("/v1/tokens/{tok}"), None)
        .await;
    let answered = t0.elapsed();
    for rx in [&mut proxy, &mut dashboard] {
        let (id, name, data) = next_event(rx, Duration::from_millis(100)).await;
        assert_eq!(id, last + 1);
        assert_eq!(name, "token_revoked");
        assert_eq!(data, json!({"type":"token_revoked","token_id": tok}));
    }
    assert!(
        t0.elapsed() < answered + Duration::from_millis(100),
        "event later than 100 ms after the revocation"
    );
    // A config change follows as config_changed.
    s.admin(
        reqwest::Method::POST,
        "/v1/projects",
        Some(json!({"name":"beta"})),
    )
    .await;
    let (id, name, data) = next_event(&mut proxy, Duration::from_millis(500)).await;
    assert_eq!((id, name.as_str()), (last + 2, "config_changed"));
    assert_eq!(data, json!({"type":"config_changed"}));
}

#[tokio::test]
async fn last_event_id_replays_missed_events_in_order() {
    let s = start_with(|_| {}).await;
    s.admin(
        reqwest::Method::POST,
        "/v1/projects",
        Some(json!({"name":"alpha"})),
    )
    .await;
    let t1 = mint(&s, "alpha").await;
    let t2 = mint(&s, "alpha").await;
    let from = s.control.state.svc.store.last_event_id().await.unwrap();
    s.admin(reqwest::Method::DELETE, &format!("/v1/tokens/{t1}"), None)
        .await;
    s.admin(
        reqwest::Method::PATCH,
        "/v1/projects/alpha",
        Some(json!({"budget_usd":"3"})),
    )
    .await;
    s.admin(reqwest::Method::DELETE, &format!("/v1/tokens/{t2}"), None)
        .await;
    let mut rx = s
        .subscribe("/internal/v1/events", PROXY_SECRET, Some(from))
        .await;
    let got = [
        next_event(&mut rx, Duration::from_secs(2)).await,
        next_event(&mut rx, Duration::from_secs(2)).await,
        next_event(&mut rx, Duration::from_secs(2)).await,
    ];
    assert_eq!(
        got[0],
        (
            from + 1,
            "token_revoked".into(),
            json!({"type":"token_revoked","token_id":t1})
        )
    );
    assert_eq!(
        got[1],
        (
            from + 2,
            "config_changed".into(),
            json!({"type":"config_changed"})
        )
    );
    assert_eq!(
        got[2],
        (
            from + 3,
            "token_revoked".into(),
            json!({"type":"token_revoked","token_id":t2})
        )
    );
    no_event(&mut rx, Duration::from_millis(200)).await;
    // Caught up: live events continue from there.
    s.admin(
        reqwest::Method::POST,
        "/v1/projects",
        Some(json!({"name":"beta"})),
    )
    .await;
    assert_eq!(
        next_event(&mut rx, Duration::from_secs(1)).await.0,
        from + 4
    );
    // The snapshot version matches the log, so a proxy can resume from it.
    let snap: Value = reqwest::Client::new()
        .get(s.url("/internal/v1/snapshot"))
        .bearer_auth(PROXY_SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snap["version"], from + 4);
    assert!(snap["revoked"].as_array().unwrap().contains(&json!(t1)));
}

#[tokio::test]
async fn a_position_older_than_the_log_gets_one_config_changed() {
    let s = start_with(|c| c.events.retain = 3).await;
    for i in 0..6 {
        s.admin(
            reqwest::Method::POST,
            "/v1/projects",
            Some(json!({"name": format!("p{i}")})),
        )
        .await;
    }
    let last = s.control.state.svc.store.last_event_id().await.unwrap();
    let mut rx = s
        .subscribe("/internal/v1/events", PROXY_SECRET, Some(1))
        .await;
    assert_eq!(
        next_event(&mut rx, Duration::from_secs(2)).await,
        (
            last,
            "config_changed".into(),
            json!({"type":"config_changed"})
        )
    );
    no_event(&mut rx, Duration::from_millis(200)).await;
    // A position from before a store reset (ahead of the log) resyncs the same way.
    let mut rx = s
        .subscribe("/internal/v1/events", PROXY_SECRET, Some(last + 100))
        .await;
    assert_eq!(next_event(&mut rx, Duration::from_secs(2)).await.0, last);
}

#[tokio::test]
async fn keep_alive_comments_are_sent() {
    let s = start_with(|c| c.events.keepalive = Duration::from_millis(200)).await;
    let mut rx = s.subscribe("/internal/v1/events", PROXY_SECRET, None).await;
    let block = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(block, ": keep-alive");
    // A malformed Last-Event-ID is a clear 400.
    let r = reqwest::Client::new()
        .get(s.url("/internal/v1/events"))
        .bearer_auth(PROXY_SECRET)
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_relay_each_others_events() {
    let redis = iron_testkit::RedisServer::start().await.unwrap();
    let admin = generate_api_key().to_string();
    let master = iron_core::transit::MasterKey::generate().to_base64();
    let make = |dir: &std::path::Path| {
        let mut cfg = common::config(dir, &admin, false);
        cfg.secrets.master_keys = std::sync::Arc::new(iron_core::transit::MasterKeyring::new(
            iron_core::transit::MasterKey::from_base64(&master).unwrap(),
            vec![],
        ));
        cfg.store = StoreConfig::Redis {
            url: Secret::new(redis.url()),
        };
        cfg.events.poll_interval = Some(Duration::from_millis(50));
        cfg
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_cfg(make(da.path()), admin.clone(), da).await;
    let b = start_cfg(make(db.path()), admin.clone(), db).await;
    a.admin(
        reqwest::Method::POST,
        "/v1/projects",
        Some(json!({"name":"alpha"})),
    )
    .await;
    let tok = mint(&a, "alpha").await;
    // B sees A's data and A's signing key.
    assert_eq!(
        b.admin(reqwest::Method::GET, &format!("/v1/tokens/{tok}"), None)
            .await["status"],
        "active"
    );
    let mut rx = b.subscribe("/internal/v1/events", PROXY_SECRET, None).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    a.admin(reqwest::Method::DELETE, &format!("/v1/tokens/{tok}"), None)
        .await;
    let (_, name, data) = next_event(&mut rx, Duration::from_secs(1)).await;
    assert_eq!(name, "token_revoked");
    assert_eq!(data["token_id"], tok.as_str());
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_event_streams() {
    let dir = tempfile::tempdir().unwrap();
    let admin = generate_api_key().to_string();
    let cfg = common::config(dir.path(), &admin, false);
    let control = server::build_state(&cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server::serve(listener, control.state.clone(), async {
        let _ = stopped.await;
    }));
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/internal/v1/events"))
        .bearer_auth(PROXY_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    stop.send(()).unwrap();
    // Graceful shutdown completes although a subscriber is still connected.
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve did not stop")
        .unwrap()
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), resp.text())
        .await
        .expect("stream did not end");
    assert!(body.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_redis_reachability() {
    let mut redis = iron_testkit::RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin = generate_api_key().to_string();
    let mut cfg = common::config(dir.path(), &admin, false);
    cfg.store = StoreConfig::Redis {
        url: Secret::new(redis.url()),
    };
    let s = start_cfg(cfg, admin, dir).await;
    let ready = || async {
        reqwest::get(s.url("/ready"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);
    redis.stop().await.unwrap();
    assert_eq!(ready().await, 503);
    // API calls fail with a clear 503 while the store is down.
    let r = reqwest::Client::new()
        .get(s.url("/v1/projects"))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "store_unavailable"
    );
    redis.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ready().await != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after redis restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
