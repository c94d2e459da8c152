//! Outages with the real binaries (`design.md` §6, §8): `iron-control` on a private
//! redis-server and `iron-proxy` replicas under load while control stops, a proxy is
//! killed with SIGKILL, Redis stops, or a proxy dies with reports spilled to disk. In each
//! case: requests inside a lease keep working, new spend is refused (503, fail closed) once
//! the lease is gone, no usage event is lost or counted twice, and spend never exceeds the
//! limit (an unreported lease counts as fully spent when it expires).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use iron_e2e::*;
use iron_testkit::{MockUpstream, RedisServer};
use serde_json::Value;

const PROVIDER_KEY: &str = "sk-outage-PROVIDER-key-5678";
/// Proxies borrow $0.01 per lease (e2e proxy config).
const LEASE: u64 = 10_000;

async fn until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the usage log of `project` holds `n` events; returns them.
async fn usage_reaches(admin: &Admin, project: &str, n: usize, timeout: Duration) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let usage = admin.usage(project).await;
        if usage.len() >= n || start.elapsed() > timeout {
            return usage;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Spends 1,500-token streams (~900 µ$ each) until the proxy refuses with 503, at most 100;
/// returns how many were served and the refusal's body (`None`: never refused). Any other
/// status fails the test.
async fn spend_until_refused(
    client: &reqwest::Client,
    proxy_url: &str,
    token: &str,
) -> (usize, Option<String>) {
    let mut served = 0;
    for _ in 0..100 {
        let (status, body) = stream_chat(client, proxy_url, token, 1_500, 0).await;
        match status {
            200 => served += 1,
            503 => return (served, Some(body)),
            other => panic!("{proxy_url}: unexpected {other}: {body}"),
        }
    }
    (served, None)
}

/// Waits until the proxy serves `token`, spends three more requests of `tokens` output tokens
/// and waits until their usage reached control; returns the requests served and that usage.
async fn warm_up(
    client: &reqwest::Client,
    proxy_url: &str,
    token: &str,
    admin: &Admin,
    project: &str,
    tokens: u32,
) -> (usize, Vec<Value>) {
    until("the proxy serves", Duration::from_secs(10), || async {
        stream_chat(client, proxy_url, token, 10, 0).await.0 == 200
    })
    .await;
    let mut served = 1;
    for _ in 0..3 {
        assert_eq!(
            stream_chat(client, proxy_url, token, tokens, 0).await.0,
            200
        );
        served += 1;
    }
    let usage = usage_reaches(admin, project, served, Duration::from_secs(10)).await;
    (served, usage)
}

/// No event twice, and how many there are.
fn unique_ids(usage: &[Value]) -> usize {
    let ids: HashSet<&str> = usage.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), usage.len(), "an event was recorded twice");
    ids.len()
}

fn cost_sum(usage: &[Value]) -> u64 {
    usage
        .iter()
        .map(|u| u["cost_microdollars"].as_u64().unwrap())
        .sum()
}

fn budget_numbers(b: &Value) -> (u64, u64, u64) {
    (
        b["spent_microdollars"].as_u64().unwrap(),
        b["leased_microdollars"].as_u64().unwrap(),
        b["active_leases"].as_u64().unwrap(),
    )
}

/// (a) Control stops mid-load: proxies serve inside their leases, then refuse new spend (503,
/// fail closed); control comes back and every queued report arrives, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_outage_serves_inside_leases_then_fails_closed_and_loses_no_report() {
    let mock = MockUpstream::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let control = Control::start_redis(&redis.url()).await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    admin.provider("mock", &mock.base_url(), PROVIDER_KEY).await;
    let project = admin.project("outage", Some("100")).await;
    let (_, token) = admin.mint(&project).await;
    let proxies = [
        Proxy::start(&control.url()).await.unwrap(),
        Proxy::start(&control.url()).await.unwrap(),
    ];
    let client = reqwest::Client::new();
    let mut served = 0usize;
    for p in &proxies {
        p.ready().await.unwrap();
        until("the proxy serves", Duration::from_secs(10), || async {
            stream_chat(&client, &p.url(), &token, 10, 0).await.0 == 200
        })
        .await;
        served += 1;
        for _ in 0..4 {
            assert_eq!(stream_chat(&client, &p.url(), &token, 200, 0).await.0, 200);
            served += 1;
        }
    }
    assert_eq!(
        unique_ids(&usage_reaches(&admin, &project, served, Duration::from_secs(10)).await),
        served
    );

    // Control down. ~900 µ$ per request: a $0.01 lease lasts about ten of them.
    let addr = control.addr;
    drop(control);
    for (i, p) in proxies.iter().enumerate() {
        let (inside, refused) = spend_until_refused(&client, &p.url(), &token).await;
        let body = refused.unwrap_or_else(|| panic!("proxy {i} never ran out of its lease"));
        assert!(
            body.contains("upstream_unavailable") && body.contains("fail closed"),
            "{body}"
        );
        assert!(
            inside >= 2,
            "proxy {i} served only {inside} requests inside its lease"
        );
        assert!(
            inside <= 2 * LEASE as usize / 900,
            "proxy {i} served {inside}: more than its lease"
        );
        assert_eq!(
            stream_chat(&client, &p.url(), &token, 10, 0).await.0,
            503,
            "still closed"
        );
        println!("proxy {i}: {inside} requests inside its lease while control was down, then 503");
        served += inside;
    }
    // Reports are queued (spilled) meanwhile.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Control back at the same address: every queued report arrives, exactly once.
    let control = Control::start_redis_at(&redis.url(), addr).await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    let usage = usage_reaches(&admin, &project, served, Duration::from_secs(20)).await;
    assert_eq!(
        unique_ids(&usage),
        served,
        "usage events == requests served"
    );
    let (spent, _, _) = budget_numbers(&admin.budget(&project).await);
    assert_eq!(cost_sum(&usage), spent, "Σ usage events == spent");
    // New spend works again.
    for p in &proxies {
        until(
            "spend after the outage",
            Duration::from_secs(10),
            || async { stream_chat(&client, &p.url(), &token, 10, 0).await.0 == 200 },
        )
        .await;
    }
    for p in &proxies {
        assert!(
            !p.process.output().contains("panicked"),
            "{}",
            p.process.output()
        );
    }
}

/// (b) `kill -9` of a proxy mid-load: the reports it sent before dying are kept, its lease
/// counts as fully spent when it expires (short TTL here), and spend never exceeds the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_proxy_lease_counts_as_spent_and_the_limit_holds() {
    let mock = MockUpstream::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let control = Control::start_redis_with(
        &redis.url(),
        free_addr(),
        "[leases]\nttl_secs = 3\nsweep_interval_ms = 200\n",
    )
    .await
    .unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    admin.provider("mock", &mock.base_url(), PROVIDER_KEY).await;
    let limit = 50_000u64;
    let project = admin.project("killed", Some("0.05")).await;
    let (_, token_a) = admin.mint(&project).await;
    let (_, token_b) = admin.mint(&project).await;
    let mut a = Proxy::start(&control.url()).await.unwrap();
    let b = Proxy::start(&control.url()).await.unwrap();
    a.ready().await.unwrap();
    b.ready().await.unwrap();
    let client = reqwest::Client::new();

    // A serves and reports.
    until("A serves", Duration::from_secs(10), || async {
        stream_chat(&client, &a.url(), &token_a, 10, 0).await.0 == 200
    })
    .await;
    for _ in 0..4 {
        assert_eq!(
            stream_chat(&client, &a.url(), &token_a, 200, 0).await.0,
            200
        );
    }
    let reported = usage_reaches(&admin, &project, 5, Duration::from_secs(10)).await;
    assert_eq!(unique_ids(&reported), 5);
    let reported_cost = cost_sum(&reported);

    // Streams in flight on A, then SIGKILL.
    let mut inflight = Vec::new();
    for _ in 0..10 {
        let (client, url, token) = (client.clone(), a.url(), token_a.clone());
        inflight.push(tokio::spawn(async move {
            stream_chat(&client, &url, &token, 400, 5).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.process.kill().await.unwrap();
    for t in inflight {
        let _ = t.await.unwrap();
    }
    // What control holds for the dead proxy: the spend it reported before dying and its
    // outstanding grant (nothing changes these any more but the expiry).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (spent_at_kill, leased_at_kill, active_at_kill) =
        budget_numbers(&admin.budget(&project).await);
    assert!(
        leased_at_kill > 0 && active_at_kill == 1,
        "A's lease is still open with money on it: leased {leased_at_kill}, active {active_at_kill}"
    );

    // Its lease expires (TTL 3 s) and counts as fully spent: nothing stays leased, and the
    // whole grant (≥ one $0.01 slice) is spent although far less was reported.
    until(
        "the killed proxy's lease expires",
        Duration::from_secs(20),
        || async {
            let (_, leased, active) = budget_numbers(&admin.budget(&project).await);
            leased == 0 && active == 0
        },
    )
    .await;
    let (spent_after_expiry, _, _) = budget_numbers(&admin.budget(&project).await);
    let usage = admin.usage(&project).await;
    assert!(
        unique_ids(&usage) >= 5,
        "the reports A sent before dying are kept"
    );
    let kept: HashSet<&str> = usage.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert!(
        reported
            .iter()
            .all(|u| kept.contains(u["id"].as_str().unwrap()))
    );
    assert!(
        spent_after_expiry >= LEASE,
        "the unreported lease counts as spent: {spent_after_expiry}"
    );
    assert_eq!(
        spent_after_expiry,
        spent_at_kill + leased_at_kill,
        "fully spent: what A reported before the kill + its whole outstanding grant"
    );
    assert!(
        cost_sum(&usage) <= spent_at_kill,
        "the events A reported are part of its reported spend"
    );
    assert!(spent_after_expiry >= cost_sum(&usage) && cost_sum(&usage) >= reported_cost);
    println!(
        "killed proxy: {spent_at_kill} µ$ reported before the kill (Σ events {} µ$) + {leased_at_kill} µ$ outstanding = {spent_after_expiry} µ$ counted spent after expiry",
        cost_sum(&usage)
    );

    // B spends the rest of the budget: the limit holds.
    let mut refused = 0;
    let mut cut = 0;
    for round in 0..60 {
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (client, url, token) = (client.clone(), b.url(), token_b.clone());
            tasks.push(tokio::spawn(async move {
                stream_chat(&client, &url, &token, 400, 1).await
            }));
        }
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                200 => cut += usize::from(body.contains("budget_exceeded")),
                402 => refused += 1,
                other => panic!("round {round}: unexpected {other}: {body}"),
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(refused > 0 || cut > 0, "the budget ran out");
    until("B's lease settles", Duration::from_secs(20), || async {
        let (_, leased, active) = budget_numbers(&admin.budget(&project).await);
        leased == 0 && active == 0
    })
    .await;
    let (spent, _, _) = budget_numbers(&admin.budget(&project).await);
    let usage = admin.usage(&project).await;
    unique_ids(&usage);
    println!(
        "after the kill: spent {spent} µ$ of {limit} µ$ (Σ events {} µ$), {refused} refused, {cut} cut off",
        cost_sum(&usage)
    );
    assert!(spent <= limit + 300, "spent {spent} > limit {limit}");
    assert!(spent >= cost_sum(&usage));
}

/// (c) Redis stops for ~10 s under load and comes back with its data: nothing panics,
/// requests inside the leases keep succeeding, and afterwards Σ usage events == requests
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_under_load_loses_nothing() {
    let mock = MockUpstream::start().await.unwrap();
    let mut redis = RedisServer::start().await.unwrap();
    let mut control = Control::start_redis(&redis.url()).await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    admin.provider("mock", &mock.base_url(), PROVIDER_KEY).await;
    let project = admin.project("redis-down", Some("100")).await;
    let (_, token) = admin.mint(&project).await;
    let mut proxies = vec![
        Proxy::start(&control.url()).await.unwrap(),
        Proxy::start(&control.url()).await.unwrap(),
    ];
    let client = reqwest::Client::new();
    for p in &proxies {
        p.ready().await.unwrap();
        until("the proxy serves", Duration::from_secs(10), || async {
            stream_chat(&client, &p.url(), &token, 10, 0).await.0 == 200
        })
        .await;
    }
    let warmup = proxies.len();

    // Load: each proxy, one request after another (~30 µ$ each), until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let outage = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let served_in_outage = Arc::new(AtomicUsize::new(0));
    let refused_in_outage = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for p in &proxies {
        let (client, url, token) = (client.clone(), p.url(), token.clone());
        let (stop, outage, served, ok_out, no_out) = (
            stop.clone(),
            outage.clone(),
            served.clone(),
            served_in_outage.clone(),
            refused_in_outage.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = stream_chat(&client, &url, &token, 40, 0).await;
                let down = outage.load(Ordering::SeqCst);
                match status {
                    200 => {
                        served.fetch_add(1, Ordering::SeqCst);
                        if down {
                            ok_out.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    503 if body.contains("fail closed") => {
                        if down {
                            no_out.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("unexpected {other}: {body}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis_shutdown_save(redis.port()).await.unwrap();
    outage.store(true, Ordering::SeqCst);
    redis.stop().await.unwrap();
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    outage.store(false, Ordering::SeqCst);
    redis.restart().await.unwrap();
    println!("redis was down for {:?}", down_at.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    let served = served.load(Ordering::SeqCst) + warmup;
    let (ok_out, no_out) = (
        served_in_outage.load(Ordering::SeqCst),
        refused_in_outage.load(Ordering::SeqCst),
    );
    println!(
        "served {served} requests; during the outage {ok_out} inside leases and {no_out} refused (fail closed)"
    );
    assert!(
        ok_out > 0,
        "requests inside the leases kept succeeding during the outage"
    );
    // Nothing crashed.
    assert!(
        control.process.try_wait().unwrap().is_none(),
        "control exited: {}",
        control.process.output()
    );
    for p in &mut proxies {
        assert!(
            p.process.try_wait().unwrap().is_none(),
            "a proxy exited: {}",
            p.process.output()
        );
        assert!(
            !p.process.output().contains("panicked"),
            "{}",
            p.process.output()
        );
    }
    assert!(
        !control.process.output().contains("panicked"),
        "{}",
        control.process.output()
    );

    let usage = usage_reaches(&admin, &project, served, Duration::from_secs(30)).await;
    assert_eq!(
        unique_ids(&usage),
        served,
        "Σ usage events == requests served"
    );
    let (spent, _, _) = budget_numbers(&admin.budget(&project).await);
    assert_eq!(cost_sum(&usage), spent, "Σ usage events == spent");
    // And spending works again.
    assert_eq!(
        stream_chat(&client, &proxies[0].url(), &token, 10, 0)
            .await
            .0,
        200
    );
}

/// (d) A proxy killed while control is down has its reports spilled to disk; restarted on the
/// same directory (with control back), it delivers them exactly once — also when the spill
/// file is replayed a second time (a crash between sending and truncating).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_reports_of_a_killed_proxy_are_delivered_exactly_once() {
    let mock = MockUpstream::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let control = Control::start_redis(&redis.url()).await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    admin.provider("mock", &mock.base_url(), PROVIDER_KEY).await;
    let project = admin.project("spill", Some("100")).await;
    let (_, token) = admin.mint(&project).await;
    let proxy = Proxy::start(&control.url()).await.unwrap();
    proxy.ready().await.unwrap();
    let client = reqwest::Client::new();
    let (mut served, _) = warm_up(&client, &proxy.url(), &token, &admin, &project, 100).await;

    // Control down; the proxy serves inside its lease and spills its reports.
    let addr = control.addr;
    drop(control);
    let during = 6;
    for _ in 0..during {
        assert_eq!(
            stream_chat(&client, &proxy.url(), &token, 100, 0).await.0,
            200
        );
    }
    served += during;
    let spill = proxy.dir.path().join("spill").join("usage-spill.jsonl");
    until("reports spilled", Duration::from_secs(10), || async {
        std::fs::read_to_string(&spill).is_ok_and(|s| s.matches("evt_").count() >= during)
    })
    .await;
    // Everything served is in the file (the reporter spills every second).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let spilled = std::fs::read_to_string(&spill).unwrap();
    assert_eq!(
        spilled.matches("\"id\":\"evt_").count(),
        during,
        "{spilled}"
    );

    // kill -9, then control and the proxy (same directory) come back.
    let Proxy {
        mut process, dir, ..
    } = proxy;
    process.kill().await.unwrap();
    drop(process);
    let control = Control::start_redis_at(&redis.url(), addr).await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    let proxy = Proxy::start_in(&control.url(), dir).await.unwrap();
    let usage = usage_reaches(&admin, &project, served, Duration::from_secs(20)).await;
    assert_eq!(unique_ids(&usage), served, "every spilled report delivered");
    until(
        "the spill file is drained",
        Duration::from_secs(10),
        || async {
            !spill.exists()
                || std::fs::read_to_string(&spill)
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
        },
    )
    .await;
    let (spent, _, _) = budget_numbers(&admin.budget(&project).await);
    assert_eq!(cost_sum(&usage), spent, "Σ usage events == spent");

    // The same spill file replayed again (as after a crash before truncating): no change.
    let Proxy {
        mut process, dir, ..
    } = proxy;
    process.kill().await.unwrap();
    drop(process);
    std::fs::write(&spill, &spilled).unwrap();
    let _proxy = Proxy::start_in(&control.url(), dir).await.unwrap();
    until(
        "the replayed spill file is drained",
        Duration::from_secs(10),
        || async {
            !spill.exists()
                || std::fs::read_to_string(&spill)
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = admin.usage(&project).await;
    assert_eq!(unique_ids(&again), served, "delivered exactly once");
    assert_eq!(
        budget_numbers(&admin.budget(&project).await).0,
        spent,
        "spend counted once"
    );
}

/// (e) `fail_mode = "open"` with a $0.005 cap: control stops, the proxy serves inside its
/// lease, then beyond it up to the cap (counted in a metric), then refuses (503); control
/// comes back and the fail-open spend is ordinary spend: Σ usage events == spent, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_serves_beyond_the_lease_up_to_the_cap_then_refuses() {
    const CAP: u64 = 5_000;
    let mock = MockUpstream::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let control = Control::start_redis(&redis.url()).await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    admin.provider("mock", &mock.base_url(), PROVIDER_KEY).await;
    let project = admin.project("fail-open", Some("100")).await;
    let (_, token) = admin.mint(&project).await;
    let dir = tempfile::tempdir().unwrap();
    let budget = format!(
        "lease_usd = \"0.01\"\nfail_mode = \"open\"\nfail_open_cap_usd = \"0.005\"\nspill_dir = \"{}\"",
        dir.path().join("spill").display()
    );
    let proxy = Proxy::start_with_budget(&control.url(), dir, &budget)
        .await
        .unwrap();
    proxy.ready().await.unwrap();
    let client = reqwest::Client::new();
    let (mut served, before) = warm_up(&client, &proxy.url(), &token, &admin, &project, 200).await;
    assert_eq!(unique_ids(&before), served);
    // Every report is in: what control still has leased out is what the proxy holds.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, lease_left, _) = budget_numbers(&admin.budget(&project).await);
    assert!(lease_left > 0, "the proxy holds a lease");

    // Control down. ~900 µ$ per request: the lease, then the cap, then 503.
    let addr = control.addr;
    drop(control);
    // A stream the cap cuts off mid-way is served too (it pays what streamed).
    let (during, refused) = spend_until_refused(&client, &proxy.url(), &token).await;
    let body = refused.expect("the proxy never ran out of its lease and cap");
    assert!(
        body.contains("upstream_unavailable") && body.contains("fail-open allowance"),
        "{body}"
    );
    assert_eq!(
        stream_chat(&client, &proxy.url(), &token, 10, 0).await.0,
        503,
        "still refused"
    );
    let drawn = proxy
        .metric(
            "iron_proxy_fail_open_spend_microdollars_total",
            &[("project", project.as_str())],
        )
        .await as u64;
    served += during;

    // Control back at the same address: everything arrives, exactly once.
    let control = Control::start_redis_at(&redis.url(), addr).await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    let usage = usage_reaches(&admin, &project, served, Duration::from_secs(20)).await;
    assert_eq!(
        unique_ids(&usage),
        served,
        "usage events == requests served"
    );
    let (spent, _, _) = budget_numbers(&admin.budget(&project).await);
    assert_eq!(cost_sum(&usage), spent, "Σ usage events == spent");
    let outage_spend = cost_sum(&usage) - cost_sum(&before);
    println!(
        "fail-open: lease left {lease_left} µ$, served {during} requests for {outage_spend} µ$ while control was down, {drawn} µ$ drawn from the {CAP} µ$ cap"
    );
    assert!(
        outage_spend > lease_left,
        "served beyond the lease: {outage_spend} ≤ {lease_left}"
    );
    assert!(
        outage_spend <= lease_left + CAP,
        "never beyond lease + cap: {outage_spend} > {lease_left} + {CAP}"
    );
    assert!(drawn <= CAP, "drawn {drawn} > cap {CAP}");
    assert!(
        drawn >= outage_spend - lease_left,
        "the metric counts the unleased spend: {drawn} < {outage_spend} - {lease_left}"
    );
    assert!(
        outage_spend + 1_000 >= lease_left + CAP,
        "the cap was used (to within one request): {outage_spend} + 1000 < {lease_left} + {CAP}"
    );
    // Normal leases again.
    until(
        "spend after the outage",
        Duration::from_secs(10),
        || async { stream_chat(&client, &proxy.url(), &token, 10, 0).await.0 == 200 },
    )
    .await;
    assert!(!proxy.process.output().contains("panicked"));
}

/// (f) A control-mode proxy without `spill_dir`: while control is down its reports wait in
/// the bounded in-memory queue (visible in `iron_proxy_usage_reports_pending`) and are
/// delivered in order once control is back: every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_spill_dir_queued_reports_are_kept_in_memory_and_delivered() {
    let mock = MockUpstream::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let control = Control::start_redis(&redis.url()).await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    admin.provider("mock", &mock.base_url(), PROVIDER_KEY).await;
    let project = admin.project("memory-queue", Some("100")).await;
    let (_, token) = admin.mint(&project).await;
    let proxy = Proxy::start_with_budget(
        &control.url(),
        tempfile::tempdir().unwrap(),
        "lease_usd = \"0.01\"",
    )
    .await
    .unwrap();
    proxy.ready().await.unwrap();
    let client = reqwest::Client::new();
    let (mut served, _) = warm_up(&client, &proxy.url(), &token, &admin, &project, 100).await;

    // Control down: requests inside the lease (~60 µ$ each) keep working.
    let addr = control.addr;
    drop(control);
    let during = 8;
    for _ in 0..during {
        assert_eq!(
            stream_chat(&client, &proxy.url(), &token, 100, 0).await.0,
            200
        );
    }
    served += during;
    until(
        "the reports wait in memory",
        Duration::from_secs(10),
        || async { proxy.metric("iron_proxy_usage_reports_pending", &[]).await >= 1.0 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let control = Control::start_redis_at(&redis.url(), addr).await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    let usage = usage_reaches(&admin, &project, served, Duration::from_secs(20)).await;
    assert_eq!(unique_ids(&usage), served, "every event arrived");
    let (spent, _, _) = budget_numbers(&admin.budget(&project).await);
    assert_eq!(cost_sum(&usage), spent, "Σ usage events == spent");
    until("the queue drains", Duration::from_secs(10), || async {
        proxy.metric("iron_proxy_usage_reports_pending", &[]).await == 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        unique_ids(&admin.usage(&project).await),
        served,
        "nothing delivered twice"
    );
    let out = proxy.process.output();
    assert!(
        !out.contains("dropped the oldest") && !out.contains("panicked"),
        "{out}"
    );
}
