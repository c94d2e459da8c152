//! Rate limits end to end (issue #12, `docs/decisions/0003-rate-limits.md`): a private
//! redis-server, `iron-control` on it and **two** `iron-proxy` replicas. Limits set on a
//! token at mint (`rate_limits.rpm`) and on a project (`PATCH … rate_limits.tpm`) hold across
//! both proxies, and refusals are 429 `rate_limited` with `Retry-After` and OpenAI's
//! `x-ratelimit-*` headers.
//!
//! `sixty_seconds_of_hammering_admits_about_the_limit` runs for a full minute on purpose
//! (the acceptance test of the window); nextest runs it in parallel with the rest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iron_e2e::*;
use iron_testkit::{MockUpstream, RedisServer};

const PROVIDER_KEY: &str = "sk-rate-limits-PROVIDER-key-1234";

/// One chat request; (status, headers, body).
async fn ask(
    http: &reqwest::Client,
    proxy_url: &str,
    token: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = http
        .post(format!("{proxy_url}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&serde_json::json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A 429 from the rate limiter, fully shaped.
fn assert_rate_limited(status: u16, h: &reqwest::header::HeaderMap, body: &str) {
    assert_eq!(status, 429, "{body}");
    assert_eq!(header(h, "x-iron-error"), "rate_limited");
    let retry: u64 = header(h, "retry-after").parse().unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "rate_limited", "{body}");
}

struct Fleet {
    _mock: MockUpstream,
    _redis: RedisServer,
    control: Control,
    admin: Admin,
    project: String,
}

async fn fleet(name: &str) -> Fleet {
    let mock = MockUpstream::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let control = Control::start_redis(&redis.url()).await.unwrap();
    let admin = Admin::new(&control.url(), ADMIN_KEY);
    admin.provider("mock", &mock.base_url(), PROVIDER_KEY).await;
    let project = admin.project(name, None).await;
    Fleet {
        _mock: mock,
        _redis: redis,
        control,
        admin,
        project,
    }
}

async fn mint_limited(admin: &Admin, project: &str, limits: serde_json::Value) -> String {
    let (status, v) = admin
        .call(
            reqwest::Method::POST,
            &format!("/v1/projects/{project}/tokens"),
            Some(serde_json::json!({"rate_limits": limits})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

async fn proxies(control_url: &str) -> [Proxy; 2] {
    let proxies = [
        Proxy::start(control_url).await.unwrap(),
        Proxy::start(control_url).await.unwrap(),
    ];
    for p in &proxies {
        p.ready().await.unwrap();
    }
    proxies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_5_admits_exactly_five_across_two_proxies() {
    let f = fleet("rpm5").await;
    let token = mint_limited(&f.admin, &f.project, serde_json::json!({"rpm": 5})).await;
    let proxies = proxies(&f.control.url()).await;
    let http = reqwest::Client::new();
    let mut admitted = 0;
    let mut first_refusal = None;
    for i in 0..10 {
        let p = &proxies[i % 2];
        let (status, h, body) = ask(&http, &p.url(), &token).await;
        if status == 200 {
            admitted += 1;
            assert_eq!(header(&h, "x-ratelimit-limit-requests"), "5", "request {i}");
            assert!(!header(&h, "x-ratelimit-reset-requests").is_empty());
        } else {
            assert_rate_limited(status, &h, &body);
            assert_eq!(header(&h, "x-ratelimit-limit-requests"), "5");
            assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "0");
            assert!(header(&h, "x-ratelimit-reset-requests").ends_with('s'));
            first_refusal.get_or_insert(i);
        }
    }
    assert_eq!(admitted, 5, "exactly the limit within one window");
    assert_eq!(
        first_refusal,
        Some(5),
        "the 6th request is the first refused"
    );
    // Another token of the same project is not affected (token-scoped limit).
    let (_, other) = f.admin.mint(&f.project).await;
    assert_eq!(ask(&http, &proxies[0].url(), &other).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_tpm_counts_prompt_and_output_tokens() {
    let f = fleet("tpm").await;
    // Set before the proxies start, so their first snapshot carries it.
    let (status, v) = f
        .admin
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/projects/{}", f.project),
            Some(serde_json::json!({"rate_limits": {"tpm": 100}})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rate_limits"]["tpm"], 100);
    let (_, token) = f.admin.mint(&f.project).await;
    let proxies = proxies(&f.control.url()).await;
    let http = reqwest::Client::new();
    let mut admitted = 0u64;
    let mut refused = None;
    for i in 0..40 {
        let (status, h, body) = ask(&http, &proxies[i % 2].url(), &token).await;
        if status == 200 {
            admitted += 1;
            assert_eq!(header(&h, "x-ratelimit-limit-tokens"), "100");
        } else {
            assert_rate_limited(status, &h, &body);
            assert_eq!(header(&h, "x-ratelimit-limit-tokens"), "100");
            refused = Some(i);
            break;
        }
        // Let the output-token charge of the answer reach control.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each answer is ≥ 8 prompt + 8 output tokens (mock usage), so at most 100 / 16 fit;
    // one more may pass while its output is charged after the fact.
    assert!(refused.is_some(), "never refused after {admitted} requests");
    assert!((2..=7).contains(&admitted), "admitted {admitted}");
    println!("tpm 100: {admitted} admitted, refused at request {refused:?}");
}

/// Acceptance: rpm 60, two proxies, 4 tasks each hammering for 60 s → 54–66 admitted in
/// total, every other answer a well-formed 429, both proxies admitted some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_seconds_of_hammering_admits_about_the_limit() {
    let f = fleet("rpm60").await;
    let token = mint_limited(&f.admin, &f.project, serde_json::json!({"rpm": 60})).await;
    let proxies = proxies(&f.control.url()).await;
    let urls: Vec<String> = proxies.iter().map(Proxy::url).collect();
    let admitted: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (url, token) = (urls[i % 2].clone(), token.clone());
        let (admitted, refused) = (admitted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while Instant::now() < deadline {
                let (status, h, body) = ask(&http, &url, &token).await;
                if status == 200 {
                    admitted[i % 2].fetch_add(1, Ordering::Relaxed);
                } else {
                    assert_rate_limited(status, &h, &body);
                    refused.fetch_add(1, Ordering::Relaxed);
                    // Refusals come from the local denial cache in microseconds: pause a
                    // little so eight tasks do not monopolise the shared CI machine.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (a, b) = (
        admitted[0].load(Ordering::Relaxed),
        admitted[1].load(Ordering::Relaxed),
    );
    let total = a + b;
    println!(
        "rpm 60 over 60 s: admitted {total} ({a} + {b}), refused {}",
        refused.load(Ordering::Relaxed)
    );
    assert!((54..=66).contains(&total), "admitted {total}");
    assert!(a > 0 && b > 0, "both proxies admitted some: {a} + {b}");
    assert!(refused.load(Ordering::Relaxed) > 0);
    // The refusals were counted by scope and kind.
    let metrics = reqwest::get(format!("http://{}/metrics", proxies[0].admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("iron_proxy_rate_limited_total{kind=\"requests\",scope_kind=\"token\"}"),
        "{metrics}"
    );
}
