//! The lease protocol through the real router (`/internal/v1/leases`) and what it feeds:
//! `/v1/budgets`, `/v1/usage` (JSON and CSV), `/metrics`; proxy-secret auth, 404/400 rules,
//! the expiry sweep and the daily UTC rollover with an injected clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{Harness, PROXY_SECRET};
use iron_control::service::ManualClock;
use serde_json::{Value, json};

/// 2026-11-28T23:59:00Z.
const T0: u64 = 1_795_910_340;

async fn harness(clock: &Arc<ManualClock>) -> Harness {
    Harness::with_clock(clock.clone(), |_| {}).await
}

/// A project (budget in USD, period) with one token; returns (project id, token id).
async fn project(h: &Harness, name: &str, budget: &str, period: &str) -> (String, String) {
    let p = h
        .admin(
            "POST",
            "/v1/projects",
            Some(json!({"name": name, "budget_usd": budget, "period": period})),
        )
        .await;
    let t = h
        .admin(
            "POST",
            &format!("/v1/projects/{name}/tokens"),
            Some(json!({})),
        )
        .await;
    (
        p["id"].as_str().unwrap().to_owned(),
        t["id"].as_str().unwrap().to_owned(),
    )
}

async fn proxy(h: &Harness, method: &str, path: &str, body: Value) -> common::Resp {
    h.call(method, path, Some(PROXY_SECRET), Some(body)).await
}

fn event(id: &str, cost: u64, model: &str) -> Value {
    json!({"id": id, "token_id": "tok_x", "project_id": "prj_x", "provider_id": "prv_1",
        "model": model, "input_tokens": 12, "cached_input_tokens": 2, "cache_write_tokens": 0,
        "output_tokens": 34, "cost": cost, "status": 200, "cut_off": id.ends_with('c'),
        "at_ms": 1_795_910_340_123u64})
}

#[tokio::test]
async fn lease_routes_need_the_proxy_secret_and_valid_input() {
    let clock = ManualClock::new(T0);
    let h = harness(&clock).await;
    let (_, tok) = project(&h, "alpha", "1", "total").await;
    let routes = [
        (
            "POST",
            "/internal/v1/leases",
            json!({"proxy_id":"px","token_id":tok,"requested":10}),
        ),
        (
            "POST",
            "/internal/v1/leases/lse_x/extend",
            json!({"requested":10}),
        ),
        (
            "POST",
            "/internal/v1/leases/lse_x/report",
            json!({"seq":1,"spent":1,"events":[]}),
        ),
        (
            "DELETE",
            "/internal/v1/leases/lse_x",
            json!({"seq":1,"spent":1,"events":[]}),
        ),
    ];
    for (m, path, body) in &routes {
        for key in [
            None,
            Some("wrong-secret-wrong-secret"),
            Some(h.admin.as_str()),
        ] {
            let r = h.call(m, path, key, Some(body.clone())).await;
            assert_eq!(r.status, 401, "{m} {path} with {key:?}: {r:?}");
            assert_eq!(r.json()["error"]["code"], "invalid_api_key");
        }
    }
    // Unknown leases: 404 on extend, report and release.
    for (m, path, body) in &routes[1..] {
        let r = proxy(&h, m, path, body.clone()).await;
        assert_eq!(r.status, 404, "{m} {path}: {r:?}");
    }
    // Bad bodies: 400, nothing granted.
    for body in [
        json!({"proxy_id":"px","token_id":tok}),
        json!({"proxy_id":"px","token_id":tok,"requested":-1}),
        json!({"proxy_id":"px","token_id":tok,"requested":0}),
        json!({"proxy_id":"","token_id":tok,"requested":10}),
        json!({"proxy_id":"px","token_id":tok,"requested":10,"extra":1}),
    ] {
        let r = proxy(&h, "POST", "/internal/v1/leases", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
    }
    let r = h
        .call_bytes(
            "POST",
            "/internal/v1/leases",
            Some(PROXY_SECRET),
            Some(b"{not json".to_vec()),
        )
        .await;
    assert_eq!(r.status, 400);
    let b = h.admin("GET", "/v1/budgets/alpha", None).await;
    assert_eq!(b["leased_microdollars"], 0);
    // A denial is a 200 with `denied` (the proxy reads the body).
    let r = proxy(
        &h,
        "POST",
        "/internal/v1/leases",
        json!({"proxy_id":"px","token_id":"tok_unknown","requested":10}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["denied"], "unknown_token");
    assert_eq!(r.json()["granted"], 0);
}

#[tokio::test]
async fn grant_report_release_feed_budgets_usage_and_metrics() {
    let clock = ManualClock::new(T0);
    let h = harness(&clock).await;
    let (prj, tok) = project(&h, "alpha", "0.05", "total").await;
    let g = proxy(
        &h,
        "POST",
        "/internal/v1/leases",
        json!({"proxy_id":"px_1","token_id":tok,"requested":10_000}),
    )
    .await;
    assert_eq!(g.status, 200, "{g:?}");
    let g = g.json();
    let lease = g["lease_id"].as_str().unwrap().to_owned();
    assert!(lease.starts_with("lse_"));
    assert_eq!(g["granted"], 10_000);
    assert_eq!(g["expires_at"], T0 + 60);
    assert_eq!(g["budget_remaining"], 40_000);
    assert!(g.get("denied").is_none());

    let b = h.admin("GET", "/v1/budgets/alpha", None).await;
    assert_eq!(
        (
            &b["limit_microdollars"],
            &b["spent_microdollars"],
            &b["leased_microdollars"],
            &b["remaining_microdollars"],
            &b["active_leases"]
        ),
        (
            &json!(50_000),
            &json!(0),
            &json!(10_000),
            &json!(40_000),
            &json!(1)
        )
    );
    assert_eq!(b["leased_usd"], "0.01");
    assert_eq!(b["remaining_usd"], "0.04");

    // A report with events (one of them a cut-off stream).
    let report = json!({"seq": 1, "spent": 3_500, "events": [
        event("evt_01", 1_500, "gpt-4o-mini"), event("evt_02c", 2_000, "gpt-4o")]});
    let ack = proxy(
        &h,
        "POST",
        &format!("/internal/v1/leases/{lease}/report"),
        report.clone(),
    )
    .await;
    assert_eq!(ack.status, 200, "{ack:?}");
    assert_eq!(
        ack.json(),
        json!({"lease_remaining": 6_500, "budget_remaining": 40_000, "revoked": false})
    );
    // Replayed: same answer, nothing added.
    let again = proxy(
        &h,
        "POST",
        &format!("/internal/v1/leases/{lease}/report"),
        report,
    )
    .await;
    assert_eq!(again.json(), ack.json());

    let ext = proxy(
        &h,
        "POST",
        &format!("/internal/v1/leases/{lease}/extend"),
        json!({"requested": 1_000}),
    )
    .await;
    assert_eq!(ext.status, 200);
    assert_eq!(ext.json()["granted"], 1_000);
    assert_eq!(ext.json()["lease_id"], lease.as_str());

    let usage = h
        .admin("GET", &format!("/v1/usage?project={prj}"), None)
        .await;
    let rows = usage["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let r = &rows[1];
    assert_eq!(r["id"], "evt_02c");
    assert_eq!(
        r["project"],
        prj.as_str(),
        "stored under the lease's project"
    );
    assert_eq!(r["token"], tok.as_str());
    assert_eq!(r["provider"], "prv_1");
    assert_eq!(r["model"], "gpt-4o");
    assert_eq!(r["input_tokens"], 12);
    assert_eq!(r["output_tokens"], 34);
    assert_eq!(r["cost_usd"], "0.002");
    assert_eq!(r["cost_microdollars"], 2_000);
    assert_eq!(r["cut_off"], true);
    assert_eq!(r["time"], "2026-11-28T23:59:00.123Z");
    // Filters and pagination.
    let only = h.admin("GET", "/v1/usage?model=gpt-4o-mini", None).await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1);
    let p1 = h.admin("GET", "/v1/usage?limit=1", None).await;
    assert_eq!(p1["data"][0]["id"], "evt_01");
    let c = p1["next_cursor"].as_str().unwrap();
    let p2 = h
        .admin("GET", &format!("/v1/usage?limit=1&cursor={c}"), None)
        .await;
    assert_eq!(p2["data"][0]["id"], "evt_02c");
    assert!(p2["next_cursor"].is_null());
    let by_token = h
        .admin("GET", &format!("/v1/usage?token={tok}"), None)
        .await;
    assert_eq!(by_token["data"].as_array().unwrap().len(), 2);
    let none = h
        .admin("GET", "/v1/usage?since=2030-01-01T00:00:00Z", None)
        .await;
    assert!(none["data"].as_array().unwrap().is_empty());
    let big = h.admin("GET", "/v1/usage?limit=1000", None).await;
    assert_eq!(big["data"].as_array().unwrap().len(), 2);
    // CSV export.
    let csv = h
        .call("GET", "/v1/usage?format=csv", Some(&h.admin.clone()), None)
        .await;
    assert_eq!(csv.status, 200);
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with(
            "time,project,token,provider,model,input_tokens,output_tokens,cost_usd,id"
        )
    );
    assert!(
        lines[2].contains("evt_02c")
            && lines[2].contains(",0.002,")
            && lines[2].ends_with(",200,true")
    );

    // Metrics from the store.
    let m = h.call("GET", "/metrics", None, None).await.text();
    assert!(
        m.contains(&format!(
            "iron_control_budget_spent_microdollars{{project=\"{prj}\"}} 3500"
        )),
        "{m}"
    );
    assert!(m.contains(&format!(
        "iron_control_budget_limit_microdollars{{project=\"{prj}\"}} 50000"
    )));
    assert!(m.contains(&format!(
        "iron_control_budget_leased_microdollars{{project=\"{prj}\"}} 7500"
    )));
    assert!(m.contains("iron_control_leases_active 1"), "{m}");

    // Release: the unspent part goes back; a second DELETE is a 200 and changes nothing.
    let fin = json!({"seq": 2, "spent": 4_000, "events": [event("evt_03", 500, "gpt-4o")]});
    let path = format!("/internal/v1/leases/{lease}");
    let r = proxy(&h, "DELETE", &path, fin.clone()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["lease_remaining"], 0);
    assert_eq!(r.json()["budget_remaining"], 46_000);
    let r = proxy(&h, "DELETE", &path, fin).await;
    assert_eq!(r.status, 200);
    let b = h.admin("GET", "/v1/budgets/alpha", None).await;
    assert_eq!(
        (
            &b["spent_microdollars"],
            &b["leased_microdollars"],
            &b["active_leases"]
        ),
        (&json!(4_000), &json!(0), &json!(0))
    );
    assert_eq!(b["spent_usd"], "0.004");
    let m = h.call("GET", "/metrics", None, None).await.text();
    assert!(m.contains("iron_control_leases_active 0"));
    // Extending a released lease: 404.
    let r = proxy(
        &h,
        "POST",
        &format!("/internal/v1/leases/{lease}/extend"),
        json!({"requested": 1}),
    )
    .await;
    assert_eq!(r.status, 404);

    // A token's own budget is enforced through the same grant.
    let t = h
        .admin(
            "POST",
            "/v1/projects/alpha/tokens",
            Some(json!({"budget_usd": "0.000300"})),
        )
        .await;
    let g = proxy(
        &h,
        "POST",
        "/internal/v1/leases",
        json!({"proxy_id":"px_1","token_id":t["id"],"requested":10_000}),
    )
    .await
    .json();
    assert_eq!(g["granted"], 300);
    let g = proxy(
        &h,
        "POST",
        "/internal/v1/leases",
        json!({"proxy_id":"px_1","token_id":t["id"],"requested":10_000}),
    )
    .await
    .json();
    assert_eq!(g["denied"], "budget_exceeded");
    // Revoked token: denied as such.
    h.admin("DELETE", &format!("/v1/tokens/{tok}"), None).await;
    let g = proxy(
        &h,
        "POST",
        "/internal/v1/leases",
        json!({"proxy_id":"px_1","token_id":tok,"requested":10}),
    )
    .await
    .json();
    assert_eq!(g["denied"], "token_revoked");
}

#[tokio::test]
async fn reports_larger_than_the_rest_api_limit_are_accepted() {
    let clock = ManualClock::new(T0);
    let h = harness(&clock).await;
    let (_, tok) = project(&h, "alpha", "100", "total").await;
    let g = proxy(
        &h,
        "POST",
        "/internal/v1/leases",
        json!({"proxy_id":"px_1","token_id":tok,"requested":1_000_000}),
    )
    .await
    .json();
    let lease = g["lease_id"].as_str().unwrap();
    let events: Vec<Value> = (0..2_000)
        .map(|i| event(&format!("evt_{i:05}"), 1, "gpt-4o"))
        .collect();
    let body = json!({"seq": 1, "spent": 2_000, "events": events});
    assert!(body.to_string().len() > 64 * 1024);
    let r = proxy(
        &h,
        "POST",
        &format!("/internal/v1/leases/{lease}/report"),
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let csv = h
        .call("GET", "/v1/usage?format=csv", Some(&h.admin.clone()), None)
        .await
        .text();
    assert_eq!(csv.lines().count(), 2_001, "every event, one CSV");
    // The REST API keeps its limit.
    let r = h
        .call_bytes(
            "POST",
            "/v1/projects",
            Some(&h.admin.clone()),
            Some(vec![b' '; 70 * 1024]),
        )
        .await;
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn expiry_sweep_counts_unreported_leases_as_spent() {
    let clock = ManualClock::new(T0);
    let h = Harness::with_clock(clock.clone(), |c| c.leases.policy.ttl_secs = 5).await;
    let (_, tok) = project(&h, "alpha", "1", "total").await;
    let g = proxy(
        &h,
        "POST",
        "/internal/v1/leases",
        json!({"proxy_id":"px_1","token_id":tok,"requested":20_000}),
    )
    .await
    .json();
    let lease = g["lease_id"].as_str().unwrap().to_owned();
    proxy(
        &h,
        "POST",
        &format!("/internal/v1/leases/{lease}/report"),
        json!({"seq":1,"spent":5_000,"events":[]}),
    )
    .await;
    let svc = h.control.state.svc.clone();
    assert_eq!(svc.sweep_leases().await.unwrap().expired, 0);
    clock.advance(5);
    assert_eq!(svc.sweep_leases().await.unwrap().expired, 1);
    let b = h.admin("GET", "/v1/budgets/alpha", None).await;
    assert_eq!(
        (&b["spent_microdollars"], &b["leased_microdollars"]),
        (&json!(20_000), &json!(0)),
        "fully spent"
    );
    // The proxy's late final report corrects it.
    let r = proxy(
        &h,
        "DELETE",
        &format!("/internal/v1/leases/{lease}"),
        json!({"seq":2,"spent":6_000,"events":[]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let b = h.admin("GET", "/v1/budgets/alpha", None).await;
    assert_eq!(b["spent_microdollars"], 6_000);
}

#[tokio::test]
async fn daily_budget_rolls_over_at_utc_midnight() {
    let clock = ManualClock::new(T0);
    let h = harness(&clock).await;
    let (_, tok) = project(&h, "alpha", "0.001", "daily").await;
    let ask = || json!({"proxy_id":"px_1","token_id":tok,"requested":10_000});
    let g = proxy(&h, "POST", "/internal/v1/leases", ask()).await.json();
    assert_eq!(g["granted"], 1_000);
    let lease = g["lease_id"].as_str().unwrap().to_owned();
    proxy(
        &h,
        "DELETE",
        &format!("/internal/v1/leases/{lease}"),
        json!({"seq":1,"spent":1_000,"events":[]}),
    )
    .await;
    let g = proxy(&h, "POST", "/internal/v1/leases", ask()).await.json();
    assert_eq!(g["denied"], "budget_exceeded");
    let b = h.admin("GET", "/v1/budgets/alpha", None).await;
    assert_eq!(
        (&b["period"], &b["spent_microdollars"]),
        (&json!("daily"), &json!(1_000))
    );

    clock.set(T0 + 60); // 2026-11-29T00:00:00Z
    let b = h.admin("GET", "/v1/budgets/alpha", None).await;
    assert_eq!(
        (&b["spent_microdollars"], &b["remaining_microdollars"]),
        (&json!(0), &json!(1_000))
    );
    let g = proxy(&h, "POST", "/internal/v1/leases", ask()).await.json();
    assert_eq!(g["granted"], 1_000, "a new UTC day, a new budget");
}
