//! Production split on a private 3-master **Redis Cluster** (`redis+cluster://…`, design §10,
//! ADR 0002): two `iron-control` replicas on the same cluster and one `iron-proxy` behind
//! each. What one control writes, the other serves (a token minted on B works through the
//! proxy of A); concurrent streams through both proxies keep one budget exact (refused before
//! the upstream or cut off mid-stream, Σ usage events == spend ≤ limit + one chunk per
//! stream); a revocation
//! made on control A reaches the proxy that follows control B.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use iron_e2e::*;
use iron_testkit::{MockUpstream, RedisCluster};

const PROVIDER_KEY: &str = "sk-cluster-mode-PROVIDER-key-77";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controls_on_a_cluster_keep_one_exact_budget_and_revoke_everywhere() {
    let mock = MockUpstream::start().await.unwrap();
    let cluster = RedisCluster::start(3).await.unwrap();
    let controls = [
        Control::start_redis(&cluster.url()).await.unwrap(),
        Control::start_redis(&cluster.url()).await.unwrap(),
    ];
    let admin_a = Admin::new(&controls[0].url(), ADMIN_KEY);
    let admin_b = Admin::new(&controls[1].url(), ADMIN_KEY);
    admin_a
        .provider("mock", &mock.base_url(), PROVIDER_KEY)
        .await;
    let project = admin_a.project("clustered", Some("0.02")).await;
    // Written through A, read and extended through B.
    let (token_id, token) = admin_b.mint(&project).await;
    let proxies = [
        Proxy::start(&controls[0].url()).await.unwrap(),
        Proxy::start(&controls[1].url()).await.unwrap(),
    ];
    for p in &proxies {
        p.ready().await.unwrap();
    }

    // 120 streams of 400 output tokens (≈ 240 µ$ each) against 20,000 µ$, half per proxy.
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..120 {
        let (client, url, token) = (client.clone(), proxies[i % 2].url(), token.clone());
        tasks.push(tokio::spawn(async move {
            stream_chat(&client, &url, &token, 400, 2).await
        }));
    }
    // A stream is refused (402) or admitted; an admitted one may be cut off mid-way with a
    // `budget_exceeded` error event when the budget runs out under it.
    let (mut admitted, mut refused, mut cut) = (0usize, 0usize, 0usize);
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => admitted += 1,
            402 => refused += 1,
            other => panic!("unexpected status {other}: {body}"),
        }
        cut += usize::from(status == 200 && body.contains("budget_exceeded"));
    }
    assert!(
        refused + cut > 0,
        "the budget never ran out: {admitted} admitted"
    );
    // The budget is gone for both proxies, and what they refused never reached the upstream.
    for p in &proxies {
        let (status, body) = chat(&p.url(), &token, true).await;
        assert_eq!(status, 402, "{body}");
        assert!(body.contains("budget_exceeded"), "{body}");
    }
    assert_eq!(
        mock.request_count(),
        admitted,
        "a refused request reached the upstream"
    );

    // Reports settle through either control: one event per admitted stream, Σ events == spend,
    // the spend within the limit plus one chunk (≤ 1 µ$) per stream that was in flight.
    let limit = 20_000u64;
    let settling = Instant::now();
    let (spent, events_total) = loop {
        let b = admin_b.budget(&project).await;
        let spent = micros(&b["spent_usd"]);
        let usage = admin_a.usage(&project).await;
        let total = usage.iter().map(|u| micros(&u["cost_usd"])).sum::<u64>();
        if usage.len() == admitted && total == spent {
            break (spent, total);
        }
        assert!(
            settling.elapsed() < Duration::from_secs(10),
            "reports did not settle within 10 s: spent {spent} µ$, Σ events {total} µ$ over {} \
             events for {admitted} admitted streams",
            usage.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "cluster: admitted {admitted}, refused {refused}, cut off {cut}; spent {spent} µ$ of {limit} µ$ (overshoot {} µ$)",
        spent.saturating_sub(limit)
    );
    assert!(spent <= limit + 120, "spent {spent} > limit {limit} + 120");
    assert!(spent >= limit * 9 / 10, "the budget was usable: {spent}");
    assert_eq!(events_total, spent);

    // A revocation made on control A reaches both proxies, including the one that follows B.
    let deadline = Instant::now() + Duration::from_secs(2);
    admin_a.revoke(&token_id).await;
    for p in &proxies {
        loop {
            let (status, body) = chat(&p.url(), &token, false).await;
            if status == 401 {
                assert!(body.contains("token_revoked"), "{body}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} still answers {status} 2 s after the revoke: {body}",
                p.url()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
