//! Graceful shutdown in control mode (`design.md` §8, issue 6 acceptance 8, issue 4 "return
//! on shutdown"): SIGTERM to an `iron-proxy` with 50 streams in flight → every stream
//! completes, the proxy sends its final reports and returns its lease to `iron-control`
//! (on a private redis-server), and exits within the grace. The lease TTL is ten minutes, so
//! only the return (never an expiry) can leave nothing leased.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use iron_e2e::*;
use iron_testkit::{MockUpstream, RedisServer};

const PROVIDER_KEY: &str = "sk-shutdown-PROVIDER-key-2468";
const STREAMS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_streams_returns_the_lease_and_exits_within_the_grace() {
    let mock = MockUpstream::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let control = Control::start_redis_with(
        &redis.url(),
        free_addr(),
        "[leases]\nttl_secs = 600\nsweep_interval_ms = 200\n",
    )
    .await
    .unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    admin.provider("mock", &mock.base_url(), PROVIDER_KEY).await;
    let project = admin.project("shutdown", Some("100")).await;
    let (_, token) = admin.mint(&project).await;
    // `shutdown_grace_secs = 10` (e2e proxy config).
    let mut proxy = Proxy::start(&control.url()).await.unwrap();
    proxy.ready().await.unwrap();
    let client = reqwest::Client::new();
    let warmup = {
        let start = Instant::now();
        loop {
            if chat(&proxy.url(), &token, true).await.0 == 200 {
                break 1;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the proxy never served"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (client, url, token) = (client.clone(), proxy.url(), token.clone());
            tokio::spawn(async move {
                let resp = client
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(token)
                    .header("x-mock-chunks", "10")
                    .header("x-mock-delay-ms", "150")
                    .json(&serde_json::json!({"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"go"}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.text().await.unwrap()
            })
        })
        .collect();
    // Every stream is under way (upstream reached), then SIGTERM.
    mock.wait_for(Duration::from_secs(20), |m| {
        m.request_count() >= warmup + STREAMS
    })
    .await
    .unwrap();
    let (_, leased_before, active_before) = {
        let b = admin.budget(&project).await;
        (
            b["spent_microdollars"].as_u64().unwrap(),
            b["leased_microdollars"].as_u64().unwrap(),
            b["active_leases"].as_u64().unwrap(),
        )
    };
    assert!(
        leased_before > 0 && active_before == 1,
        "the proxy holds a lease: leased {leased_before}, active {active_before}"
    );
    let signalled = Instant::now();
    proxy.process.signal("TERM").await.unwrap();
    for s in streams {
        let text = s.await.unwrap();
        assert!(
            text.trim_end().ends_with("data: [DONE]"),
            "a stream was cut by the shutdown: {text}"
        );
    }
    let status = proxy
        .process
        .wait_exit(Duration::from_secs(12))
        .await
        .unwrap();
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        proxy.process.output()
    );
    assert!(
        took < Duration::from_secs(10),
        "exited after {took:?}, the grace is 10 s"
    );

    // Right after the exit — minutes before the 600 s TTL could expire anything — the lease
    // is back and every event is in.
    let b = admin.budget(&project).await;
    let (spent, leased, active) = (
        b["spent_microdollars"].as_u64().unwrap(),
        b["leased_microdollars"].as_u64().unwrap(),
        b["active_leases"].as_u64().unwrap(),
    );
    assert_eq!((leased, active), (0, 0), "the lease was returned: {b}");
    let usage = admin.usage(&project).await;
    let ids: HashSet<&str> = usage.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), usage.len(), "an event was recorded twice");
    assert_eq!(usage.len(), warmup + STREAMS, "one event per request");
    let sum: u64 = usage
        .iter()
        .map(|u| u["cost_microdollars"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, spent, "Σ usage events == spent");
    assert!(spent > 0);
    println!(
        "SIGTERM with {STREAMS} streams in flight: exited after {took:?}; leased {leased_before} µ$ → 0, spent {spent} µ$ == Σ {} events",
        usage.len()
    );
    assert!(!proxy.process.output().contains("panicked"));
}
