//! Production split on a private redis-server: `iron-control` + several `iron-proxy`
//! replicas. Issue 3 acceptance 3 (revocation everywhere, control outage, resync), issue 4
//! acceptance 5–7 (exact budgets across replicas, control outage, kill -9), issue 6
//! acceptance 6–7 (Redis outage, spilled reports delivered exactly once).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use iron_e2e::*;
use iron_testkit::{MockUpstream, RedisServer};

const PROVIDER_KEY: &str = "sk-redis-mode-PROVIDER-key-1234";

async fn until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_proxy_and_survives_a_control_outage() {
    let mock = MockUpstream::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let control = Control::start_redis(&redis.url()).await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    admin.provider("mock", &mock.base_url(), PROVIDER_KEY).await;
    let project = admin.project("fleet", None).await;
    let (a_id, a) = admin.mint(&project).await;
    let (b_id, b) = admin.mint(&project).await;
    let proxies = [
        Proxy::start(&control.url()).await.unwrap(),
        Proxy::start(&control.url()).await.unwrap(),
    ];
    for p in &proxies {
        p.ready().await.unwrap();
        until("token a accepted", Duration::from_secs(5), || async {
            chat(&p.url(), &a, false).await.0 == 200
        })
        .await;
        // b is in use too: each proxy holds a lease slice for it (fail-closed budgets serve
        // only what a proxy already leased while control is away).
        assert_eq!(chat(&p.url(), &b, false).await.0, 200);
    }

    // Revoke a: both proxies refuse it with 401 `token_revoked` within 1 s, measured from
    // just before the revoke call starts; both are polled at the same time, under one deadline.
    let revoked_at = Instant::now();
    let deadline = revoked_at + Duration::from_secs(1);
    admin.revoke(&a_id).await;
    let waits: Vec<_> = proxies
        .iter()
        .map(|p| {
            let (url, a) = (p.url(), a.clone());
            tokio::spawn(async move {
                loop {
                    let (status, body) = chat(&url, &a, false).await;
                    let took = revoked_at.elapsed();
                    if status == 401 {
                        return Ok((body, took));
                    }
                    if status != 200 {
                        return Err(format!("{url}: unexpected {status}: {body}"));
                    }
                    if Instant::now() >= deadline {
                        return Err(format!("{url}: still accepted after {took:?}"));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for w in waits {
        let (body, took) = w
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("revocation: {e}"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "token_revoked", "{body}");
        assert!(
            took <= Duration::from_secs(1),
            "401 arrived {took:?} after the revoke call started"
        );
        slowest = slowest.max(took);
    }
    println!("revocation reached both proxies in {slowest:?}");

    // Control down: proxies keep serving b (inside their leases) and keep refusing a.
    let control_addr = control.addr;
    drop(control);
    for p in &proxies {
        let (status, body) = chat(&p.url(), &b, true).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.trim_end().ends_with("data: [DONE]"));
        assert_eq!(chat(&p.url(), &a, false).await.0, 401);
    }

    // Control back (same address): proxies resync — a revocation made now reaches them.
    let control = Control::start_redis_at(&redis.url(), control_addr)
        .await
        .unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    admin.revoke(&b_id).await;
    for p in &proxies {
        until(
            "resync after the outage",
            Duration::from_secs(5),
            || async { chat(&p.url(), &b, false).await.0 == 401 },
        )
        .await;
    }
}

/// Three proxies, 300 concurrent streams against a $0.05 budget (issue 4 acceptance 5): the
/// mock sees exactly the admitted requests (refused ones, also after exhaustion, never reach
/// it), the ledger settles (or the test fails), the final spend stays within the limit + one
/// chunk per stream in flight, and Σ usage events == ledger spend. Prints
/// `overshoot_microdollars=<n>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_is_exact_across_three_replicas() {
    let mock = MockUpstream::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let control = Control::start_redis(&redis.url()).await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    admin.provider("mock", &mock.base_url(), PROVIDER_KEY).await;
    let project = admin.project("tight", Some("0.05")).await;
    let mut proxies = Vec::new();
    for _ in 0..3 {
        let p = Proxy::start(&control.url()).await.unwrap();
        p.ready().await.unwrap();
        proxies.push(p);
    }
    let tokens: Vec<String> = {
        let mut t = Vec::new();
        for _ in 0..3 {
            t.push(admin.mint(&project).await.1);
        }
        t
    };
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (client, url, token) = (client.clone(), proxies[i % 3].url(), tokens[i % 3].clone());
        tasks.push(tokio::spawn(async move {
            let (status, body) = stream_chat(&client, &url, &token, 400, 2).await;
            (status, body.contains("budget_exceeded"))
        }));
    }
    let mut admitted = 0;
    let mut refused = 0;
    let mut cut = 0;
    for t in tasks {
        let (status, was_cut) = t.await.unwrap();
        match status {
            200 => admitted += 1,
            402 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
        cut += usize::from(was_cut);
    }
    // Refused requests never reached the upstream: the mock saw exactly the admitted ones.
    assert_eq!(
        mock.request_count(),
        admitted,
        "mock requests == admitted requests (refused {refused})"
    );
    // The budget is gone: one more request on each proxy is refused with 402 and never
    // reaches the upstream either.
    for (p, token) in proxies.iter().zip(&tokens) {
        let (status, body) = chat(&p.url(), token, true).await;
        assert_eq!(status, 402, "{body}");
        assert!(body.contains("budget_exceeded"), "{body}");
        refused += 1;
    }
    assert_eq!(
        mock.request_count(),
        admitted,
        "a refused request reached the upstream"
    );
    // The ledger settles, or the test fails. First the reports (every proxy reports within
    // ~1 s): one usage event per admitted request, Σ events == spend.
    let limit = 50_000u64;
    let settling = Instant::now();
    let (mut spent, mut leased, mut events_total, mut events);
    loop {
        let b = admin.budget(&project).await;
        (spent, leased) = (micros(&b["spent_usd"]), micros(&b["leased_usd"]));
        let usage = admin.usage(&project).await;
        events = usage.len();
        events_total = usage.iter().map(|u| micros(&u["cost_usd"])).sum::<u64>();
        if events == admitted && events_total == spent {
            break;
        }
        assert!(
            settling.elapsed() < Duration::from_secs(10),
            "reports did not settle within 10 s: spent {spent} µ$, leased {leased} µ$, \
             Σ events {events_total} µ$ over {events} events for {admitted} admitted requests"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reported_after = settling.elapsed();
    // Then the leases: each proxy returns the unspent rest of its lease once the token has
    // been idle for 20 s (`iron_proxy::reporter::IDLE_RELEASE`); nothing stays outstanding
    // and returning it does not change the spend.
    while leased > 0 {
        assert!(
            settling.elapsed() < Duration::from_secs(35),
            "{leased} µ$ still leased 35 s after the load"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let b = admin.budget(&project).await;
        leased = micros(&b["leased_usd"]);
        assert_eq!(micros(&b["spent_usd"]), spent, "spend moved: {b}");
    }
    println!(
        "ledger settled: reports after {reported_after:?}, leases returned after {:?}",
        settling.elapsed()
    );
    // One chunk = one token of gpt-4o-mini output ($0.60/M) → ≤ 1 µ$; 300 streams in flight at most.
    let bound = limit + 300;
    let overshoot = spent.saturating_sub(limit);
    println!(
        "replicas: admitted {admitted}, refused {refused}, cut off {cut}; spent {spent} µ$ of {limit} µ$ (overshoot {overshoot} µ$, bound {})",
        bound - limit
    );
    println!("overshoot_microdollars={overshoot}");
    assert!(spent <= bound, "spent {spent} > {bound}");
    assert!(spent >= limit * 9 / 10, "the budget was usable: {spent}");
    assert_eq!(events_total, spent, "Σ usage events == ledger spend");

    // Every control metric a dashboard or alert rule uses exists in control's /metrics.
    let exposition = reqwest::get(format!("{}/metrics", control.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let control_metrics: Vec<String> = referenced_metrics()
        .into_iter()
        .filter(|m| m.starts_with("iron_control_"))
        .collect();
    assert!(!control_metrics.is_empty());
    for name in &control_metrics {
        assert!(
            exposition.lines().any(|l| !l.starts_with('#')
                && (l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))),
            "dashboards/rules use {name}, which control does not export:\n{exposition}"
        );
    }
    assert!(
        refused > 0 || cut > 0,
        "the budget must run out in this test"
    );
}
