//! What control does for the Control Panel: serves the built dashboard at `/` (files,
//! app-route fallback, security headers, no escape from the directory), computes the
//! Overview / Usage / token figures from lease reports, and pushes `usage` events to
//! dashboards' `/v1/events` streams as reports arrive.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use common::{Harness, PROXY_SECRET};
use http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn harness_with_dashboard(dir: Option<std::path::PathBuf>) -> Harness {
    Harness::with_clock(Arc::new(iron_control::service::SystemClock), move |c| {
        c.dashboard.dir = dir;
    })
    .await
}

async fn get(h: &Harness, path: &str) -> common::Resp {
    h.raw(Request::get(path).body(Body::empty()).unwrap()).await
}

fn header<'a>(r: &'a common::Resp, name: &str) -> &'a str {
    r.headers.get(name).map_or("", |v| v.to_str().unwrap_or(""))
}

#[tokio::test]
async fn serves_the_built_dashboard_with_app_routes_and_security_headers() {
    let site = tempfile::tempdir().unwrap();
    let dist = site.path().join("dist");
    std::fs::create_dir_all(dist.join("assets")).unwrap();
    std::fs::write(dist.join("index.html"), "<!doctype html><div id=app></div>").unwrap();
    std::fs::write(dist.join("assets/app-1a2b.js"), "console.log(1)").unwrap();
    std::fs::write(dist.join("favicon.svg"), "<svg/>").unwrap();
    std::fs::write(site.path().join("secret.txt"), "outside").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(site.path().join("secret.txt"), dist.join("leak.txt")).unwrap();
    let h = harness_with_dashboard(Some(dist.clone())).await;

    let index = get(&h, "/").await;
    assert_eq!(index.status, 200);
    assert_eq!(index.text(), "<!doctype html><div id=app></div>");
    assert_eq!(header(&index, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&index, "cache-control"), "no-cache");
    let csp = header(&index, "content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(header(&index, "x-frame-options"), "DENY");
    assert_eq!(header(&index, "x-content-type-options"), "nosniff");

    let js = get(&h, "/assets/app-1a2b.js").await;
    assert_eq!(
        (js.status.as_u16(), js.text().as_str()),
        (200, "console.log(1)")
    );
    assert_eq!(
        header(&js, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert!(header(&js, "cache-control").contains("immutable"));
    assert_eq!(
        header(&get(&h, "/favicon.svg").await, "content-type"),
        "image/svg+xml"
    );

    // Deep links to app routes get the app; missing files and API paths do not.
    let deep = get(&h, "/projects/prj_123").await;
    assert_eq!(
        (deep.status.as_u16(), deep.text().contains("id=app")),
        (200, true)
    );
    assert_eq!(get(&h, "/assets/missing.js").await.status, 404);
    let api = get(&h, "/v1/no-such-route").await;
    assert_eq!(api.status, 404);
    assert_eq!(api.json()["error"]["code"], "not_found", "{api:?}");
    let post = h.call("POST", "/", None, None).await;
    assert!(post.json()["error"].is_object(), "{post:?}");

    // Nothing outside the directory, by `..` or by symlink.
    for path in [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/leak.txt",
        "/%2e%2e/secret.txt",
    ] {
        let r = get(&h, path).await;
        assert!(!r.text().contains("outside"), "{path}: {r:?}");
    }
}

#[tokio::test]
async fn without_a_built_dashboard_root_says_how_to_build_it() {
    let h = harness_with_dashboard(None).await;
    let r = get(&h, "/").await;
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("npm --prefix dashboard run build"),
        "{r:?}"
    );
    // The API is unaffected.
    assert_eq!(
        h.call("GET", "/v1/projects", Some(&h.admin), None)
            .await
            .status,
        200
    );
}

/// A project with a token and a lease; returns (project id, token id, lease id).
async fn leased_project(h: &Harness, name: &str) -> (String, String, String) {
    let p = h
        .admin(
            "POST",
            "/v1/projects",
            Some(json!({"name": name, "budget_usd": "1"})),
        )
        .await;
    let t = h
        .admin(
            "POST",
            &format!("/v1/projects/{name}/tokens"),
            Some(json!({})),
        )
        .await;
    let tok = t["id"].as_str().unwrap().to_owned();
    let g = h
        .call(
            "POST",
            "/internal/v1/leases",
            Some(PROXY_SECRET),
            Some(json!({"proxy_id": "px_1", "token_id": tok, "requested": 100_000})),
        )
        .await;
    assert_eq!(g.status, 200, "{g:?}");
    (
        p["id"].as_str().unwrap().to_owned(),
        tok,
        g.json()["lease_id"].as_str().unwrap().to_owned(),
    )
}

fn event(id: &str, cost: u64, status: u16, overhead_us: u64, at_ms: u64) -> Value {
    json!({"id": id, "token_id": "tok_x", "project_id": "prj_x", "provider_id": "prv_1",
        "model": "gpt-4o-mini", "input_tokens": 10, "cached_input_tokens": 0,
        "cache_write_tokens": 0, "output_tokens": 5, "cost": cost, "status": status,
        "cut_off": false, "at_ms": at_ms, "overhead_us": overhead_us})
}

async fn report(h: &Harness, lease: &str, seq: u64, spent: u64, events: Vec<Value>) {
    let r = h
        .call(
            "POST",
            &format!("/internal/v1/leases/{lease}/report"),
            Some(PROXY_SECRET),
            Some(json!({"seq": seq, "spent": spent, "events": events})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn stats_and_token_listing_reflect_reported_usage() {
    let h = harness_with_dashboard(None).await;
    let (prj_a, tok_a, lease_a) = leased_project(&h, "alpha").await;
    let (_, _, lease_b) = leased_project(&h, "beta").await;
    let now = now_ms();
    report(
        &h,
        &lease_a,
        1,
        3_000,
        vec![
            event("evt_a1", 1_000, 200, 400, now - 2_000),
            event("evt_a2", 2_000, 502, 1_500, now - 1_000),
        ],
    )
    .await;
    report(
        &h,
        &lease_b,
        1,
        500,
        vec![event("evt_b1", 500, 200, 200, now - 500)],
    )
    .await;

    let o = h.admin("GET", "/v1/stats/overview", None).await;
    assert_eq!(o["spend_today_microdollars"], 3_500, "{o}");
    assert!(
        (o["requests_per_minute"].as_f64().unwrap() - 3.0 / 5.0).abs() < 1e-9,
        "{o}"
    );
    assert!(
        (o["error_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9,
        "{o}"
    );
    assert_eq!(o["p99_overhead_ms"], 1.5, "{o}");
    let series = o["series"].as_array().unwrap();
    assert_eq!(series.len(), 60);
    let total: u64 = series
        .iter()
        .map(|b| b["spend_microdollars"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3_500);

    // One project's view, and a project key sees only its own project.
    let only_a = h
        .admin("GET", "/v1/stats/overview?project=alpha", None)
        .await;
    assert_eq!(only_a["spend_today_microdollars"], 3_000);
    let pkey = h.key("alpha-key", &format!("project:{prj_a}")).await;
    let scoped = h.call("GET", "/v1/stats/overview", Some(&pkey), None).await;
    assert_eq!(
        scoped.json()["spend_today_microdollars"],
        3_000,
        "{scoped:?}"
    );
    let other = h
        .call("GET", "/v1/stats/overview?project=beta", Some(&pkey), None)
        .await;
    assert_eq!(other.status, 403);

    let by_model = h
        .admin(
            "GET",
            "/v1/stats/usage?since=1h&bucket_secs=60&group=model",
            None,
        )
        .await;
    let s = by_model["series"].as_array().unwrap();
    assert_eq!(s.len(), 1, "{by_model}");
    assert_eq!(s[0]["key"], "gpt-4o-mini");
    let points = s[0]["points"].as_array().unwrap();
    assert!((60..=61).contains(&points.len()), "{}", points.len());
    let spend: u64 = points
        .iter()
        .map(|p| p["spend_microdollars"].as_u64().unwrap())
        .sum();
    let input: u64 = points
        .iter()
        .map(|p| p["input_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!((spend, input), (3_500, 30));
    let by_project = h
        .admin("GET", "/v1/stats/usage?since=1h&bucket_secs=600", None)
        .await;
    assert_eq!(
        by_project["series"].as_array().unwrap().len(),
        2,
        "{by_project}"
    );
    for bad in [
        "bucket_secs=0",
        "bucket_secs=1&since=7d",
        "group=color",
        "since=2h&until=3h",
    ] {
        let r = h
            .call(
                "GET",
                &format!("/v1/stats/usage?{bad}"),
                Some(&h.admin),
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert_eq!(r.json()["error"]["code"], "invalid_query", "{bad}");
    }

    let tokens = h.admin("GET", "/v1/projects/alpha/tokens", None).await;
    let t = tokens["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == tok_a.as_str())
        .unwrap()
        .clone();
    assert_eq!(t["spent_microdollars"], 3_000, "{t}");
    assert_eq!(t["spent_usd"], "0.003");
    assert!(t["last_used_at"].as_str().unwrap().starts_with("20"), "{t}");
}

/// Reads the SSE body until a frame containing `needle` arrives (or the deadline passes).
async fn read_until(body: &mut Body, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains(needle) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within 5 s; got {seen:?}"))
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    seen
}

#[tokio::test]
async fn dashboard_event_stream_carries_usage_ticks() {
    let h = harness_with_dashboard(None).await;
    let (_, _, lease) = leased_project(&h, "live").await;
    let resp = h
        .app
        .clone()
        .oneshot(
            Request::get("/v1/events")
                .header("authorization", format!("Bearer {}", h.admin))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // Give the stream a moment to subscribe, then report.
    tokio::time::sleep(Duration::from_millis(100)).await;
    report(
        &h,
        &lease,
        1,
        700,
        vec![event("evt_l1", 700, 200, 100, now_ms())],
    )
    .await;
    let seen = read_until(&mut body, "event: usage").await;
    let data = seen
        .lines()
        .skip_while(|l| *l != "event: usage")
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let tick: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        (
            tick["cost_microdollars"].as_u64(),
            tick["requests"].as_u64()
        ),
        (Some(700), Some(1))
    );
    assert!(
        tick["project_id"].as_str().unwrap().starts_with("prj_"),
        "{tick}"
    );

    // The proxies' stream does not carry usage ticks.
    let internal = h
        .app
        .clone()
        .oneshot(
            Request::get("/internal/v1/events")
                .header("authorization", format!("Bearer {PROXY_SECRET}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut ibody = internal.into_body();
    tokio::time::sleep(Duration::from_millis(100)).await;
    report(
        &h,
        &lease,
        2,
        1_400,
        vec![event("evt_l2", 700, 200, 100, now_ms())],
    )
    .await;
    // The dashboard stream sees the second tick; the proxies' stream has none.
    let more = read_until(&mut body, "event: usage").await;
    assert!(more.contains("\"cost_microdollars\":700"), "{more}");
    let mut internal_seen = String::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(until, ibody.frame()).await {
        if let Ok(data) = frame.into_data() {
            internal_seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(!internal_seen.contains("usage"), "{internal_seen}");
}

#[tokio::test]
async fn proxies_breaker_reports_show_in_the_provider_listing() {
    let h = harness_with_dashboard(None).await;
    let p = h
        .admin(
            "POST",
            "/v1/providers",
            Some(
                json!({"name": "up", "kind": "openai", "base_url": "https://api.openai.com",
                "api_key": "sk-breaker-test-key-123456"}),
            ),
        )
        .await;
    let id = p["id"].as_str().unwrap();
    assert_eq!(p["breakers"], json!([]));
    let report = json!({"breakers": [{"deployment": id, "state": "open"}]});
    let path = "/internal/v1/proxies/px-east-1/breakers";
    assert_eq!(
        h.call("PUT", path, Some(&h.admin), Some(report.clone()))
            .await
            .status,
        401
    );
    let r = h.call("PUT", path, Some(PROXY_SECRET), Some(report)).await;
    assert_eq!(r.status, 204, "{r:?}");
    let bad = json!({"breakers": [{"deployment": id, "state": "melted"}]});
    assert_eq!(
        h.call("PUT", path, Some(PROXY_SECRET), Some(bad))
            .await
            .status,
        400
    );
    let bad_id = "/internal/v1/proxies/px%20east/breakers";
    let r = h
        .call(
            "PUT",
            bad_id,
            Some(PROXY_SECRET),
            Some(json!({"breakers": []})),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");

    let listed = h.admin("GET", "/v1/providers", None).await;
    let b = &listed["data"][0]["breakers"];
    assert_eq!(b.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        (b[0]["proxy"].as_str(), b[0]["state"].as_str()),
        (Some("px-east-1"), Some("open"))
    );
    let one = h.admin("GET", &format!("/v1/providers/{id}"), None).await;
    assert_eq!(one["breakers"][0]["state"], "open");
}
