//! Rate-limit conformance (`Store::rate_take`, `docs/decisions/0003-rate-limits.md`): one
//! suite, run against the embedded store and the Redis store (private redis-server), so the
//! Lua script and `iron_core::ratelimit::Window` agree on every case. Includes concurrent
//! takes (and, for Redis, two store connections standing in for two control replicas).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use iron_control::store::Store;
use iron_control::store::embedded::EmbeddedStore;
use iron_control::store::redis::RedisStore;
use iron_core::ratelimit::{RateGrant, RateKind, RateTake};

/// A time in the middle of a second (ms).
const T0: u64 = 1_800_000_000_500;

fn take(scope: &str, kind: RateKind, limit: u64, want: u64) -> RateTake {
    RateTake {
        scope: scope.into(),
        kind,
        limit,
        want,
        min: 0,
        force: false,
        project: Some("prj_R".into()),
    }
}

async fn one(s: &dyn Store, t: RateTake, now: u64) -> RateGrant {
    s.rate_take(&[t], now).await.unwrap()[0]
}

async fn admits_to_the_limit_then_denies(s: &dyn Store) {
    let t = || take("token:tok_A", RateKind::Requests, 5, 1);
    for i in 0..5 {
        let g = one(s, t(), T0 + i * 100).await;
        assert_eq!((g.granted, g.remaining), (1, 4 - i), "take {i}");
        assert_eq!(g.retry_after_ms, 0);
    }
    let g = one(s, t(), T0 + 600).await;
    assert_eq!(g.granted, 0);
    assert_eq!(g.remaining, 0);
    // The bucket of second 1_800_000_000 ages out at 1_800_000_061 s (61 buckets counted).
    assert_eq!(g.retry_after_ms, 1_800_000_061_000 - (T0 + 600));
    assert_eq!(g.reset_ms, g.retry_after_ms);
    assert_eq!(one(s, t(), 1_800_000_060_999).await.granted, 0);
    assert_eq!(one(s, t(), 1_800_000_061_000).await.granted, 1);
    // Other scopes and kinds are separate counters.
    assert_eq!(
        one(s, take("token:tok_B", RateKind::Requests, 5, 5), T0)
            .await
            .granted,
        5
    );
    assert_eq!(
        one(s, take("token:tok_A", RateKind::Tokens, 5, 5), T0)
            .await
            .granted,
        5
    );
}

async fn partial_grants_min_and_force(s: &dyn Store) {
    let scope = "project:prj_R";
    let mut t = take(scope, RateKind::Tokens, 1000, 700);
    t.project = None;
    assert_eq!(one(s, t.clone(), T0).await.granted, 700);
    // Partial: only 300 fit.
    let g = one(s, t.clone(), T0 + 1000).await;
    assert_eq!((g.granted, g.remaining), (300, 0));
    // A minimum that does not fit grants nothing (and waits for the first bucket).
    let mut need = t.clone();
    need.want = 50;
    need.min = 50;
    let g = one(s, need.clone(), T0 + 2000).await;
    assert_eq!(g.granted, 0);
    assert_eq!(g.retry_after_ms, 1_800_000_061_000 - (T0 + 2000));
    // A forced charge (output tokens) always lands and may overdraw.
    let mut force = t.clone();
    force.want = 400;
    force.force = true;
    let g = one(s, force, T0 + 2000).await;
    assert_eq!((g.granted, g.remaining, g.retry_after_ms), (400, 0, 0));
    // 700 + 300 + 400 = 1400 counted; once the 700 ages out, 300 + 400 remain counted.
    let g = one(s, need, 1_800_000_061_500).await;
    assert_eq!((g.granted, g.remaining), (50, 250));
    // A need above the limit never fits: retry after a whole window.
    let mut huge = t;
    huge.want = 5000;
    huge.min = 5000;
    let g = one(s, huge, T0).await;
    assert_eq!((g.granted, g.retry_after_ms), (0, 61_000));
}

async fn batches_answer_in_order(s: &dyn Store) {
    let takes = vec![
        take("token:tok_C", RateKind::Requests, 10, 3),
        take("project:prj_C", RateKind::Requests, 2, 3),
        RateTake {
            project: Some("prj_D".into()),
            ..take("token:tok_D", RateKind::Tokens, 100, 100)
        },
    ];
    let mut takes = takes;
    takes[1].project = None;
    let g = s.rate_take(&takes, T0).await.unwrap();
    assert_eq!(
        g.iter().map(|g| g.granted).collect::<Vec<_>>(),
        vec![3, 2, 100]
    );
    assert_eq!(g[0].remaining, 7);
}

async fn concurrent_takes_never_exceed_the_limit(stores: Vec<Arc<dyn Store>>) {
    let limit = 50;
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let s = stores[(i as usize) % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let t = take("project:prj_CC", RateKind::Requests, limit, 1 + i % 3);
            let t = RateTake { project: None, ..t };
            s.rate_take(&[t], T0 + i).await.unwrap()[0].granted
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, limit, "granted in total");
}

async fn suite(stores: Vec<Arc<dyn Store>>) {
    let s = &*stores[0];
    admits_to_the_limit_then_denies(s).await;
    partial_grants_min_and_force(s).await;
    batches_answer_in_order(s).await;
    concurrent_takes_never_exceed_the_limit(stores).await;
}

#[tokio::test]
async fn embedded_store_rate_limits_conform() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("control.redb"), 5).unwrap();
    suite(vec![Arc::new(store)]).await;
}

#[tokio::test]
async fn redis_store_rate_limits_conform_across_replicas() {
    let redis = iron_testkit::RedisServer::start().await.unwrap();
    let a = RedisStore::connect(&redis.url(), 5).await.unwrap();
    let b = RedisStore::connect(&redis.url(), 5).await.unwrap();
    suite(vec![Arc::new(a), Arc::new(b)]).await;

    // Keys are hash-tagged per project and expire on their own.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("iron:*:rl:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    assert!(
        keys.contains(&"iron:{prj_R}:rl:token:tok_A:requests".to_owned()),
        "{keys:?}"
    );
    assert!(keys.contains(&"iron:{prj_D}:rl:token:tok_D:tokens".to_owned()));
    for k in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 120_000, "{k}: ttl {ttl}");
    }
}
