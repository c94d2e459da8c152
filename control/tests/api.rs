//! REST API tests through the real router (`oneshot`): the auth matrix generated from the
//! OpenAPI document (acceptance 4), bad input (acceptance 7), audit on every mutation,
//! and provider keys never leaving control in plaintext (acceptance 5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::{Harness, PROXY_SECRET};
use serde_json::{Value, json};

const PROVIDER_KEY: &str = "sk-test-FIXTURE-provider-key-0123456789";

struct Fixture {
    provider: String,
    project_a: String,
    project_b: String,
    token_a: String,
    token_b: String,
    spare_key_id: String,
    kid: String,
    viewer: String,
    proj_a_key: String,
}

async fn fixture(h: &Harness) -> Fixture {
    let p = h
        .admin(
            "POST",
            "/v1/providers",
            Some(json!({"name":"openai","kind":"openai","base_url":"https://api.openai.com/v1","api_key":PROVIDER_KEY})),
        )
        .await;
    let a = h
        .admin(
            "POST",
            "/v1/projects",
            Some(json!({"name":"alpha","budget_usd":"10"})),
        )
        .await;
    let b = h
        .admin(
            "POST",
            "/v1/projects",
            Some(json!({"name":"beta","budget_usd":20})),
        )
        .await;
    let ta = h
        .admin(
            "POST",
            "/v1/projects/alpha/tokens",
            Some(json!({"name":"ta"})),
        )
        .await;
    let tb = h
        .admin(
            "POST",
            "/v1/projects/beta/tokens",
            Some(json!({"name":"tb"})),
        )
        .await;
    let spare = h
        .admin(
            "POST",
            "/v1/api-keys",
            Some(json!({"name":"spare","role":"viewer"})),
        )
        .await;
    let keys = h.admin("GET", "/v1/signing-keys", None).await;
    Fixture {
        provider: p["id"].as_str().unwrap().into(),
        project_a: a["id"].as_str().unwrap().into(),
        project_b: b["id"].as_str().unwrap().into(),
        token_a: ta["id"].as_str().unwrap().into(),
        token_b: tb["id"].as_str().unwrap().into(),
        spare_key_id: spare["id"].as_str().unwrap().into(),
        kid: keys["data"][0]["kid"].as_str().unwrap().into(),
        viewer: h.key("viewer", "viewer").await,
        proj_a_key: h.key("alpha-key", "project:alpha").await,
    }
}

/// Every (method, path template) in the served OpenAPI document.
async fn operations(h: &Harness) -> Vec<(String, String)> {
    let doc = h.call("GET", "/openapi.json", None, None).await.json();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in ["get", "post", "put", "patch", "delete"] {
            if item.get(m).is_some() {
                ops.push((m.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// Fills path parameters; `{project}` / `{token}` point at project B's objects.
fn fill(template: &str, f: &Fixture) -> String {
    template
        .replace("{project}", &f.project_b)
        .replace("{token}", &f.token_b)
        .replace("{provider}", &f.provider)
        .replace("{id}", &f.spare_key_id)
        .replace("{kid}", &f.kid)
        .replace("{model}", "gpt-4o")
}

fn body_for(method: &str) -> Option<Value> {
    (method != "GET" && method != "DELETE").then(|| json!({}))
}

fn assert_error(r: &common::Resp, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{r:?}");
    let v = r.json();
    let e = &v["error"];
    assert!(
        e["type"].is_string() && e["message"].is_string(),
        "error shape: {r:?}"
    );
    assert_eq!(e["code"], code, "{r:?}");
    assert_eq!(r.headers.get("x-iron-error").unwrap(), code);
}

/// Project B and its token are untouched.
async fn assert_b_untouched(h: &Harness, f: &Fixture) {
    let b = h
        .admin("GET", &format!("/v1/projects/{}", f.project_b), None)
        .await;
    assert_eq!(b["name"], "beta");
    assert_eq!(b["budget_usd"], "20.00");
    let t = h
        .admin("GET", &format!("/v1/tokens/{}", f.token_b), None)
        .await;
    assert_eq!(t["status"], "active");
    h.admin("GET", &format!("/v1/providers/{}", f.provider), None)
        .await;
}

#[tokio::test]
async fn auth_matrix_every_v1_route_needs_a_key_and_viewers_cannot_mutate() {
    let h = Harness::new().await;
    let f = fixture(&h).await;
    let ops = operations(&h).await;
    let v1: Vec<_> = ops.iter().filter(|(_, p)| p.starts_with("/v1/")).collect();
    assert!(
        v1.len() >= 25,
        "only {} /v1 operations documented",
        v1.len()
    );
    let admin_only_reads = ["/v1/api-keys"];
    // Sign-in is the one /v1 route without a key (it takes one in the body).
    assert!(
        v1.iter().any(|(m, p)| m == "POST" && p == "/v1/session"),
        "sign-in is not documented"
    );
    let r = h
        .call(
            "POST",
            "/v1/session",
            None,
            Some(json!({"api_key": "iron_ak_notarealkey0000000000000000000000000"})),
        )
        .await;
    assert_error(&r, 401, "invalid_api_key");
    let r = h
        .call(
            "POST",
            "/v1/session",
            None,
            Some(json!({"api_key": &f.proj_a_key[..f.proj_a_key.len() - 1]})),
        )
        .await;
    assert_error(&r, 401, "invalid_api_key");
    for (m, t) in &v1 {
        if m == "POST" && t == "/v1/session" {
            continue;
        }
        let path = fill(t, &f);
        let r = h.call(m, &path, None, body_for(m)).await;
        assert_error(&r, 401, "invalid_api_key");
        let r = h
            .call(
                m,
                &path,
                Some("iron_ak_notarealkey0000000000000000000000000"),
                body_for(m),
            )
            .await;
        assert_error(&r, 401, "invalid_api_key");
        let r = h
            .call(
                m,
                &path,
                Some(&f.proj_a_key[..f.proj_a_key.len() - 1]),
                body_for(m),
            )
            .await;
        assert_error(&r, 401, "invalid_api_key");
        let r = h.call(m, &path, Some(&f.viewer), body_for(m)).await;
        // Any key may sign its own session out.
        if m == "DELETE" && t == "/v1/session" {
            assert_eq!(r.status, 204, "viewer sign-out: {r:?}");
            continue;
        }
        if m != "GET" || admin_only_reads.contains(&t.as_str()) {
            assert_error(&r, 403, "forbidden");
        } else {
            assert!(r.status.is_success(), "viewer {m} {path}: {r:?}");
        }
    }
    assert_b_untouched(&h, &f).await;
    // The spare key survived the viewer's DELETE attempt.
    let keys = h.admin("GET", "/v1/api-keys", None).await;
    assert!(
        keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == f.spare_key_id.as_str())
    );
}

/// What a `project:<alpha>` key gets on each route when it names project B's objects.
fn expected_for_project_key(method: &str, template: &str) -> u16 {
    match (method, template) {
        (_, t) if t.contains("{project}") => 403,
        (_, t) if t.contains("{token}") => 404,
        (_, t)
            if t.starts_with("/v1/providers")
                || t.starts_with("/v1/audit")
                || t.starts_with("/v1/events")
                || t.starts_with("/v1/api-keys")
                || t.starts_with("/v1/signing-keys") =>
        {
            403
        }
        ("PUT", "/v1/pricing/{model}") | ("POST", "/v1/projects") => 403,
        ("GET", "/v1/session") => 200,
        ("DELETE", "/v1/session") => 204,
        // Sign-in ignores the header and wants `api_key` in the body.
        ("POST", "/v1/session") => 400,
        ("GET", "/v1/projects" | "/v1/tokens" | "/v1/usage" | "/v1/pricing") => 200,
        // Scoped to the key's own project.
        ("GET", "/v1/stats/overview" | "/v1/stats/usage") => 200,
        _ => panic!("no expectation for project keys on {method} {template}: add one"),
    }
}

#[tokio::test]
async fn project_keys_cannot_see_or_change_other_projects() {
    let h = Harness::new().await;
    let f = fixture(&h).await;
    for (m, t) in operations(&h)
        .await
        .iter()
        .filter(|(_, p)| p.starts_with("/v1/"))
    {
        let path = fill(t, &f);
        let r = h.call(m, &path, Some(&f.proj_a_key), body_for(m)).await;
        let want = expected_for_project_key(m, t);
        assert_eq!(r.status.as_u16(), want, "project key {m} {path}: {r:?}");
        // Nothing about B beyond the id the caller itself sent.
        for b in [f.project_b.as_str(), f.token_b.as_str(), "beta"] {
            if !path.contains(b) {
                assert!(!r.text().contains(b), "{m} {path} leaked {b}: {r:?}");
            }
        }
    }
    // Names work like ids, and filters naming B are refused.
    for path in [
        "/v1/projects/beta",
        "/v1/budgets/beta",
        "/v1/tokens?project=beta",
        "/v1/usage?project=beta",
    ] {
        let r = h.call("GET", path, Some(&f.proj_a_key), None).await;
        assert_error(&r, 403, "forbidden");
    }
    let r = h
        .call(
            "POST",
            "/v1/projects/beta/tokens",
            Some(&f.proj_a_key),
            Some(json!({})),
        )
        .await;
    assert_error(&r, 403, "forbidden");
    assert_b_untouched(&h, &f).await;

    // Its own project works: read, list, mint, revoke.
    let own = h
        .call("GET", "/v1/projects/alpha", Some(&f.proj_a_key), None)
        .await;
    assert_eq!(own.json()["id"], f.project_a.as_str());
    let list = h
        .call("GET", "/v1/projects", Some(&f.proj_a_key), None)
        .await
        .json();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let toks = h
        .call("GET", "/v1/tokens", Some(&f.proj_a_key), None)
        .await
        .json();
    let ids: Vec<&str> = toks["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [f.token_a.as_str()]);
    let minted = h
        .call(
            "POST",
            "/v1/projects/alpha/tokens",
            Some(&f.proj_a_key),
            Some(json!({"ttl":"1h"})),
        )
        .await;
    assert_eq!(minted.status, 201, "{minted:?}");
    let id = minted.json()["id"].as_str().unwrap().to_owned();
    let r = h
        .call(
            "DELETE",
            &format!("/v1/tokens/{id}"),
            Some(&f.proj_a_key),
            None,
        )
        .await;
    assert_eq!(r.json()["status"], "revoked");
    // But not the project's settings.
    let r = h
        .call(
            "PUT",
            "/v1/projects/alpha/budget",
            Some(&f.proj_a_key),
            Some(json!({"budget_usd":"999"})),
        )
        .await;
    assert_error(&r, 403, "forbidden");
}

/// Everything a bad request could have written.
async fn state_fingerprint(h: &Harness) -> String {
    let s = &h.control.state.svc.store;
    let p = iron_control::model::PageRequest::first(500);
    format!(
        "{:?}|{:?}|{:?}|{:?}|{}|{}",
        s.list_projects(&p).await.unwrap(),
        s.list_providers(&p).await.unwrap(),
        s.list_tokens(None, &p).await.unwrap(),
        s.list_api_keys(&p).await.unwrap(),
        h.audit_count().await,
        s.last_event_id().await.unwrap(),
    )
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_writes_nothing() {
    let h = Harness::new().await;
    let _f = fixture(&h).await;
    let huge = "a".repeat(1 << 20);
    let long = "a".repeat(65);
    let provider = |extra: Value| {
        let mut b = json!({"name":"p2","kind":"openai","base_url":"https://api.example.com","api_key":"sk-abcdefghijklmnop"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string().into_bytes()
    };
    let j = |v: Value| v.to_string().into_bytes();
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "POST",
            "/v1/projects",
            b"{not json".to_vec(),
            400,
            "invalid_json",
            "JSON",
        ),
        (
            "POST",
            "/v1/projects",
            b"".to_vec(),
            400,
            "invalid_json",
            "empty",
        ),
        (
            "POST",
            "/v1/projects",
            b"{\"name\":\"x\"} trailing".to_vec(),
            400,
            "invalid_json",
            "JSON",
        ),
        (
            "POST",
            "/v1/projects",
            b"[]".to_vec(),
            400,
            "invalid_request",
            "",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"x","colour":"red"})),
            400,
            "unknown_field",
            "colour",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({})),
            400,
            "missing_field",
            "name",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"neg","budget_usd":-5})),
            400,
            "invalid_request",
            "budget_usd",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"neg","budget_usd":"-5"})),
            400,
            "invalid_request",
            "negative",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"neg","budget_usd":-0.01})),
            400,
            "invalid_request",
            "negative",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"big","budget_usd":1e12})),
            400,
            "invalid_request",
            "1000000000",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"big","budget_usd":"1000000000.01"})),
            400,
            "invalid_request",
            "budget_usd",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"big","budget_usd":"99999999999999999999999"})),
            400,
            "invalid_request",
            "budget_usd",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"nan","budget_usd":"NaN"})),
            400,
            "invalid_request",
            "budget_usd",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"nan","budget_usd":"inf"})),
            400,
            "invalid_request",
            "budget_usd",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"prec","budget_usd":"0.0000001"})),
            400,
            "invalid_request",
            "decimal",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"bool","budget_usd":true})),
            400,
            "invalid_request",
            "budget_usd",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"Bad Name"})),
            400,
            "invalid_request",
            "name",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":""})),
            400,
            "invalid_request",
            "name",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"prj_fake"})),
            400,
            "invalid_request",
            "prefix",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name": long})),
            400,
            "invalid_request",
            "64",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name": huge})),
            413,
            "request_too_large",
            "limit",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"alpha"})),
            409,
            "already_exists",
            "alpha",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"x","period":"weekly"})),
            400,
            "invalid_request",
            "period",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"x","providers":["nope"]})),
            400,
            "unknown_provider",
            "nope",
        ),
        (
            "POST",
            "/v1/projects",
            j(json!({"name":"x","allowed_models":[""]})),
            400,
            "invalid_request",
            "allowed_models",
        ),
        (
            "PATCH",
            "/v1/projects/alpha",
            j(json!({"name":"beta"})),
            409,
            "already_exists",
            "beta",
        ),
        (
            "PATCH",
            "/v1/projects/alpha",
            j(json!({"budget_usd":-1})),
            400,
            "invalid_request",
            "negative",
        ),
        (
            "PATCH",
            "/v1/projects/alpha",
            j(json!({"nmae":"x"})),
            400,
            "unknown_field",
            "nmae",
        ),
        (
            "PUT",
            "/v1/projects/alpha/budget",
            j(json!({})),
            400,
            "missing_field",
            "budget_usd",
        ),
        (
            "PUT",
            "/v1/projects/alpha/budget",
            j(json!({"budget_usd":"-3"})),
            400,
            "invalid_request",
            "negative",
        ),
        (
            "PUT",
            "/v1/projects/alpha/budget",
            j(json!({"budget_usd":"2000000000"})),
            400,
            "invalid_request",
            "1000000000",
        ),
        (
            "PUT",
            "/v1/projects/nope/budget",
            j(json!({"budget_usd":"1"})),
            404,
            "not_found",
            "nope",
        ),
        (
            "POST",
            "/v1/projects/alpha/tokens",
            j(json!({"ttl":"10y"})),
            400,
            "invalid_request",
            "ttl",
        ),
        (
            "POST",
            "/v1/projects/alpha/tokens",
            j(json!({"ttl":"5s"})),
            400,
            "invalid_request",
            "ttl",
        ),
        (
            "POST",
            "/v1/projects/alpha/tokens",
            j(json!({"budget_usd":-1})),
            400,
            "invalid_request",
            "negative",
        ),
        (
            "POST",
            "/v1/projects/alpha/tokens",
            j(json!({"token":"ic_x"})),
            400,
            "unknown_field",
            "token",
        ),
        (
            "POST",
            "/v1/projects/nope/tokens",
            j(json!({})),
            404,
            "not_found",
            "nope",
        ),
        (
            "POST",
            "/v1/providers",
            provider(json!({"base_url":"http://api.example.com"})),
            400,
            "invalid_base_url",
            "https",
        ),
        (
            "POST",
            "/v1/providers",
            provider(json!({"base_url":"https://10.0.0.1"})),
            400,
            "invalid_base_url",
            "private",
        ),
        (
            "POST",
            "/v1/providers",
            provider(json!({"base_url":"https://localhost:9"})),
            400,
            "invalid_base_url",
            "loopback",
        ),
        (
            "POST",
            "/v1/providers",
            provider(json!({"base_url":"https://169.254.169.254"})),
            400,
            "invalid_base_url",
            "link-local",
        ),
        (
            "POST",
            "/v1/providers",
            provider(json!({"kind":"gopher"})),
            400,
            "invalid_request",
            "kind",
        ),
        (
            "POST",
            "/v1/providers",
            provider(json!({"api_key":""})),
            400,
            "invalid_request",
            "api_key",
        ),
        (
            "POST",
            "/v1/providers",
            provider(json!({"api_key":"sk has spaces"})),
            400,
            "invalid_request",
            "api_key",
        ),
        (
            "POST",
            "/v1/providers",
            provider(json!({"name":"openai"})),
            409,
            "already_exists",
            "openai",
        ),
        (
            "POST",
            "/v1/providers",
            provider(json!({"priority":"high"})),
            400,
            "invalid_request",
            "priority",
        ),
        (
            "POST",
            "/v1/providers/openai/rotate-key",
            j(json!({"api_key":""})),
            400,
            "invalid_request",
            "api_key",
        ),
        (
            "POST",
            "/v1/api-keys",
            j(json!({"name":"k","role":"root"})),
            400,
            "invalid_request",
            "role",
        ),
        (
            "POST",
            "/v1/api-keys",
            j(json!({"name":"k","role":"project:nope"})),
            400,
            "unknown_project",
            "nope",
        ),
        (
            "PUT",
            "/v1/pricing/gpt-4o",
            j(json!({"input_per_mtok_usd":"-1","output_per_mtok_usd":"1"})),
            400,
            "invalid_request",
            "negative",
        ),
        (
            "GET",
            "/v1/projects?limit=0",
            vec![],
            400,
            "invalid_query",
            "limit",
        ),
        (
            "GET",
            "/v1/projects?bogus=1",
            vec![],
            400,
            "invalid_query",
            "bogus",
        ),
        (
            "GET",
            "/v1/usage?since=yesterday",
            vec![],
            400,
            "invalid_query",
            "since",
        ),
        (
            "GET",
            "/v1/usage?format=xml",
            vec![],
            400,
            "invalid_query",
            "format",
        ),
        ("GET", "/v1/nope", vec![], 404, "not_found", "route"),
    ];
    for (m, path, body, status, code, needle) in cases {
        let before = state_fingerprint(&h).await;
        let body = (!body.is_empty() || m != "GET").then_some(body);
        let r = h.call_bytes(m, path, Some(&h.admin.clone()), body).await;
        assert_error(&r, status, code);
        let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            msg.contains(needle),
            "{m} {path}: message {msg:?} should mention {needle:?}"
        );
        assert!(
            r.body.len() < 2048,
            "{m} {path}: error body is {} bytes",
            r.body.len()
        );
        assert_eq!(
            before,
            state_fingerprint(&h).await,
            "{m} {path} wrote something"
        );
    }
}

#[tokio::test]
async fn every_mutation_writes_an_audit_event_without_secrets() {
    let h = Harness::new().await;
    let admin_id = "ak_bootstrap";
    let mut covered: BTreeSet<(String, String)> = BTreeSet::new();
    let mut secrets: Vec<String> = vec![PROVIDER_KEY.into(), "sk-rotated-key-abcdefghijk".into()];
    // (method, template, concrete path, body, expected action)
    let steps: Vec<(&str, &str, String, Option<Value>, &str)> = vec![
        (
            "POST",
            "/v1/providers",
            "/v1/providers".into(),
            Some(
                json!({"name":"openai","kind":"openai","base_url":"https://api.openai.com","api_key":PROVIDER_KEY}),
            ),
            "provider.create",
        ),
        (
            "PATCH",
            "/v1/providers/{provider}",
            "/v1/providers/openai".into(),
            Some(json!({"priority":5})),
            "provider.update",
        ),
        (
            "POST",
            "/v1/providers/{provider}/rotate-key",
            "/v1/providers/openai/rotate-key".into(),
            Some(json!({"api_key":"sk-rotated-key-abcdefghijk"})),
            "provider.rotate_key",
        ),
        (
            "POST",
            "/v1/projects",
            "/v1/projects".into(),
            Some(json!({"name":"alpha","providers":["openai"]})),
            "project.create",
        ),
        (
            "PATCH",
            "/v1/projects/{project}",
            "/v1/projects/alpha".into(),
            Some(json!({"providers":[]})),
            "project.update",
        ),
        (
            "PUT",
            "/v1/projects/{project}/budget",
            "/v1/projects/alpha/budget".into(),
            Some(json!({"budget_usd":"5"})),
            "project.set_budget",
        ),
        (
            "POST",
            "/v1/projects/{project}/tokens",
            "/v1/projects/alpha/tokens".into(),
            Some(json!({"name":"t"})),
            "token.mint",
        ),
        (
            "DELETE",
            "/v1/tokens/{token}",
            "/v1/tokens/{token}".into(),
            None,
            "token.revoke",
        ),
        (
            "PUT",
            "/v1/pricing/{model}",
            "/v1/pricing/my-model".into(),
            Some(json!({"input_per_mtok_usd":"1","output_per_mtok_usd":"2"})),
            "pricing.set",
        ),
        (
            "POST",
            "/v1/api-keys",
            "/v1/api-keys".into(),
            Some(json!({"name":"k","role":"viewer"})),
            "api_key.create",
        ),
        (
            "DELETE",
            "/v1/api-keys/{id}",
            "/v1/api-keys/{id}".into(),
            None,
            "api_key.delete",
        ),
        (
            "POST",
            "/v1/signing-keys/rotate",
            "/v1/signing-keys/rotate".into(),
            None,
            "signing_key.rotate",
        ),
        (
            "DELETE",
            "/v1/signing-keys/{kid}",
            "/v1/signing-keys/{kid}".into(),
            None,
            "signing_key.retire",
        ),
        (
            "DELETE",
            "/v1/projects/{project}",
            "/v1/projects/alpha".into(),
            None,
            "project.delete",
        ),
        (
            "DELETE",
            "/v1/providers/{provider}",
            "/v1/providers/openai".into(),
            None,
            "provider.delete",
        ),
        (
            "POST",
            "/v1/session",
            "/v1/session".into(),
            Some(json!({"api_key": h.admin.clone()})),
            "session.create",
        ),
        (
            "DELETE",
            "/v1/session",
            "/v1/session".into(),
            None,
            "session.delete",
        ),
    ];
    let mut token_id = String::new();
    let mut key_id = String::new();
    let mut old_kid = String::new();
    for (m, template, path, body, action) in steps {
        if template == "/v1/signing-keys/rotate" {
            old_kid = h.admin("GET", "/v1/signing-keys", None).await["data"][0]["kid"]
                .as_str()
                .unwrap()
                .into();
        }
        let path = path
            .replace("{token}", &token_id)
            .replace("{id}", &key_id)
            .replace("{kid}", &old_kid);
        let before = h.audit_count().await;
        let r = h.call(m, &path, Some(&h.admin.clone()), body).await;
        assert!(r.status.is_success(), "{m} {path}: {r:?}");
        let v = r.json();
        if action == "token.mint" {
            token_id = v["id"].as_str().unwrap().into();
            secrets.push(v["token"].as_str().unwrap().into());
        }
        if action == "api_key.create" {
            key_id = v["id"].as_str().unwrap().into();
            secrets.push(v["key"].as_str().unwrap().into());
        }
        let audit = h.admin("GET", "/v1/audit?limit=1", None).await;
        assert_eq!(
            h.audit_count().await,
            before + 1,
            "{m} {path} should add exactly one audit event"
        );
        let e = &audit["data"][0];
        assert_eq!(e["action"], action, "{m} {path}: {e}");
        assert_eq!(e["actor"], admin_id);
        assert_eq!(
            e["request_id"],
            r.headers.get("x-request-id").unwrap().to_str().unwrap()
        );
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
        // Before/after images: nothing before a create, nothing after a delete.
        let verb = action.rsplit('.').next().unwrap();
        match verb {
            "create" | "mint" => {
                assert!(e["before"].is_null(), "{action}: {e}");
                assert!(e["after"].is_object(), "{action}: {e}");
            }
            "delete" if action != "session.delete" => {
                assert!(e["before"].is_object(), "{action}: {e}");
                assert!(e["after"].is_null(), "{action}: {e}");
            }
            "update" | "set_budget" | "rotate_key" | "revoke" | "retire" => {
                assert!(e["before"].is_object(), "{action}: {e}");
                assert!(e["after"].is_object(), "{action}: {e}");
                assert_ne!(e["before"], e["after"], "{action}: {e}");
            }
            _ => {}
        }
        covered.insert((m.to_string(), template.to_string()));
    }
    // Every documented /v1 mutation was exercised above.
    let mutations: BTreeSet<(String, String)> = operations(&h)
        .await
        .into_iter()
        .filter(|(m, p)| m != "GET" && p.starts_with("/v1/"))
        .collect();
    let missing: Vec<_> = mutations.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "mutations without an audit test: {missing:?}"
    );
    // No audit entry holds a secret.
    let all = h
        .call("GET", "/v1/audit?limit=500", Some(&h.admin.clone()), None)
        .await
        .text();
    for s in &secrets {
        assert!(!all.contains(s.as_str()), "audit log contains a secret");
    }
    for field in ["\"key_hash\"", "\"api_key\"", "\"seed\""] {
        assert!(!all.contains(field), "audit image holds {field}");
    }
    assert!(
        all.contains("\"key_hint\""),
        "provider images keep the key hint"
    );
    // Filters work.
    let only = h.admin("GET", "/v1/audit?action=token.revoke", None).await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tokens_mint_verify_list_and_revoke() {
    let h = Harness::new().await;
    h.admin("POST", "/v1/projects", Some(json!({"name":"alpha"})))
        .await;
    let r = h
        .call(
            "POST",
            "/v1/projects/alpha/tokens",
            Some(&h.admin.clone()),
            Some(json!({"name":"ci","ttl":"12h","budget_usd":"1.5"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let v = r.json();
    for k in ["id", "token", "project", "expires_at"] {
        assert!(v[k].is_string(), "{k} missing: {v}");
    }
    let token = v["token"].as_str().unwrap();
    assert!(token.starts_with("ic_"));
    // Offline verification with the published keys.
    let keys = h
        .call("GET", "/internal/v1/keys", Some(PROXY_SECRET), None)
        .await
        .json();
    let keys: Vec<iron_core::token::PublicKey> =
        serde_json::from_value(keys["keys"].clone()).unwrap();
    let claims = iron_core::token::TokenVerifier::new(&keys)
        .unwrap()
        .verify(token)
        .unwrap();
    assert_eq!(claims.sub, v["id"].as_str().unwrap());
    assert_eq!(claims.prj, v["project"].as_str().unwrap());
    assert_eq!(claims.exp - claims.iat, 12 * 3600);
    // Listing shows metadata, never the token.
    let list = h
        .call(
            "GET",
            "/v1/projects/alpha/tokens",
            Some(&h.admin.clone()),
            None,
        )
        .await;
    assert!(!list.text().contains(token));
    assert_eq!(list.json()["data"][0]["budget_usd"], "1.50");
    // The store never saw the token either.
    let rec = h
        .control
        .state
        .svc
        .store
        .get_token(claims.sub.as_str())
        .await
        .unwrap()
        .unwrap();
    assert!(!format!("{rec:?}").contains(&token[3..20]));
    // Revoke: idempotent, listed in the snapshot.
    let path = format!("/v1/tokens/{}", claims.sub);
    assert_eq!(h.admin("DELETE", &path, None).await["status"], "revoked");
    assert_eq!(h.admin("DELETE", &path, None).await["status"], "revoked");
    let snap = h
        .call("GET", "/internal/v1/snapshot", Some(PROXY_SECRET), None)
        .await
        .json();
    assert_eq!(snap["revoked"], json!([claims.sub]));
    // Signing key rotation keeps old tokens verifiable until retired.
    h.admin("POST", "/v1/signing-keys/rotate", None).await;
    let keys = h
        .call("GET", "/internal/v1/keys", Some(PROXY_SECRET), None)
        .await
        .json();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    let r = h
        .call(
            "DELETE",
            &format!("/v1/signing-keys/{}", claims.kid),
            Some(&h.admin.clone()),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let keys = h
        .call("GET", "/internal/v1/keys", Some(PROXY_SECRET), None)
        .await
        .json();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    assert_ne!(keys["keys"][0]["kid"], claims.kid.as_str());
}

#[tokio::test]
async fn internal_api_requires_the_proxy_secret() {
    let h = Harness::new().await;
    for path in [
        "/internal/v1/keys",
        "/internal/v1/snapshot",
        "/internal/v1/events",
    ] {
        assert_error(
            &h.call("GET", path, None, None).await,
            401,
            "invalid_api_key",
        );
        assert_error(
            &h.call("GET", path, Some("wrong-secret-wrong-secret"), None)
                .await,
            401,
            "invalid_api_key",
        );
        // An admin API key is not a proxy secret.
        assert_error(
            &h.call("GET", path, Some(&h.admin.clone()), None).await,
            401,
            "invalid_api_key",
        );
        assert_eq!(
            h.call("GET", path, Some(PROXY_SECRET), None).await.status,
            200
        );
    }
}

#[tokio::test]
async fn projects_pagination_budgets_and_health() {
    let h = Harness::new().await;
    for i in 0..5 {
        h.admin(
            "POST",
            "/v1/projects",
            Some(json!({"name": format!("p{i}"), "budget_usd": "12.5", "period": "monthly"})),
        )
        .await;
    }
    let p1 = h.admin("GET", "/v1/projects?limit=2", None).await;
    let names = |v: &Value| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&p1), ["p0", "p1"]);
    let c = p1["next_cursor"].as_str().unwrap();
    let p2 = h
        .admin("GET", &format!("/v1/projects?limit=2&cursor={c}"), None)
        .await;
    assert_eq!(names(&p2), ["p2", "p3"]);
    let b = h.admin("GET", "/v1/budgets/p1", None).await;
    assert_eq!(b["limit_usd"], "12.50");
    assert_eq!(b["spent_usd"], "0.00");
    assert_eq!(b["remaining_usd"], "12.50");
    assert_eq!(b["period"], "monthly");
    h.admin(
        "PUT",
        "/v1/projects/p1/budget",
        Some(json!({"budget_usd": null})),
    )
    .await;
    assert_eq!(
        h.admin("GET", "/v1/budgets/p1", None).await["remaining_usd"],
        Value::Null
    );
    let csv = h
        .call(
            "GET",
            "/v1/usage?format=csv&since=24h",
            Some(&h.admin.clone()),
            None,
        )
        .await;
    assert!(csv.text().starts_with("time,project,token"));
    assert_eq!(h.call("GET", "/health", None, None).await.status, 200);
    assert_eq!(
        h.call("GET", "/ready", None, None).await.json()["status"],
        "ok"
    );
    let pricing = h.admin("GET", "/v1/pricing", None).await;
    assert!(
        pricing["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["model"] == "gpt-4o")
    );
}

#[tokio::test]
async fn private_upstreams_are_allowed_only_when_configured() {
    let local = Harness::with_private(true).await;
    let v = local
        .admin(
            "POST",
            "/v1/providers",
            Some(json!({"name":"mock","kind":"openai-compatible","base_url":"http://127.0.0.1:9/v1","api_key":"sk-mock-0123456789"})),
        )
        .await;
    assert_eq!(v["base_url"], "http://127.0.0.1:9");
    let prod = Harness::new().await;
    let r = prod
        .call(
            "POST",
            "/v1/providers",
            Some(&prod.admin.clone()),
            Some(json!({"name":"mock","kind":"openai-compatible","base_url":"http://127.0.0.1:9/v1","api_key":"sk-mock-0123456789"})),
        )
        .await;
    assert_error(&r, 400, "invalid_base_url");
}

#[tokio::test]
async fn providers_in_use_cannot_be_deleted() {
    let h = Harness::new().await;
    h.admin("POST", "/v1/providers", Some(json!({"name":"openai","kind":"openai","base_url":"https://api.openai.com","api_key":PROVIDER_KEY}))).await;
    h.admin(
        "POST",
        "/v1/projects",
        Some(json!({"name":"alpha","providers":["openai"]})),
    )
    .await;
    let r = h
        .call(
            "DELETE",
            "/v1/providers/openai",
            Some(&h.admin.clone()),
            None,
        )
        .await;
    assert_error(&r, 409, "in_use");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("alpha")
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_report_budgets() {
    let h = Harness::new().await;
    let p = h
        .admin(
            "POST",
            "/v1/projects",
            Some(json!({"name":"alpha","budget_usd":"10"})),
        )
        .await;
    h.admin("POST", "/v1/projects", Some(json!({"name":"beta"})))
        .await;
    h.admin("GET", "/v1/projects/alpha", None).await;
    h.call("GET", "/v1/projects/nope", Some(&h.admin.clone()), None)
        .await;
    let m = h.call("GET", "/metrics", None, None).await;
    assert_eq!(m.status, 200);
    let text = m.text();
    for line in [
        r#"iron_control_http_requests_total{route="/v1/projects",status="201"} 2"#.to_string(),
        r#"iron_control_http_requests_total{route="/v1/projects/{project}",status="200"} 1"#
            .to_string(),
        r#"iron_control_http_requests_total{route="/v1/projects/{project}",status="404"} 1"#
            .to_string(),
        format!(
            r#"iron_control_budget_limit_microdollars{{project="{}"}} 10000000"#,
            p["id"].as_str().unwrap()
        ),
        format!(
            r#"iron_control_budget_spent_microdollars{{project="{}"}} 0"#,
            p["id"].as_str().unwrap()
        ),
        "iron_control_leases_active 0".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
