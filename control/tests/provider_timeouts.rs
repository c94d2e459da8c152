//! Per-deployment timeouts through the REST API (issue 6): `timeouts: {connect_ms,
//! first_byte_ms, idle_ms}` on provider create / PATCH, shown by GET and the listing,
//! carried to proxies in the snapshot, validated (1..=600000 ms, 400 naming the field,
//! nothing written) and audited.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Harness, PROXY_SECRET};
use serde_json::{Value, json};

fn provider_body(name: &str, timeouts: Option<Value>) -> Value {
    let mut b = json!({"name": name, "kind": "openai", "base_url": "https://api.example.com",
        "api_key": "sk-timeouts-provider-key-0123456789"});
    if let Some(t) = timeouts {
        b["timeouts"] = t;
    }
    b
}

/// The provider `name` as the proxy snapshot carries it.
async fn snapshot_provider(h: &Harness, name: &str) -> Value {
    let snap = h
        .call("GET", "/internal/v1/snapshot", Some(PROXY_SECRET), None)
        .await
        .json();
    snap["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("provider {name} not in the snapshot: {snap}"))
}

/// Everything a bad request could have changed: providers, audit log, event log.
async fn fingerprint(h: &Harness) -> String {
    let s = &h.control.state.svc.store;
    let p = iron_control::model::PageRequest::first(500);
    format!(
        "{:?}|{}|{}",
        s.list_providers(&p).await.unwrap(),
        h.audit_count().await,
        s.last_event_id().await.unwrap(),
    )
}

#[tokio::test]
async fn create_with_timeouts_shows_them_in_get_list_and_snapshot() {
    let h = Harness::new().await;
    let created = h
        .admin(
            "POST",
            "/v1/providers",
            Some(provider_body(
                "slow",
                Some(json!({"connect_ms": 250, "first_byte_ms": 1000, "idle_ms": 600000})),
            )),
        )
        .await;
    let want = json!({"connect_ms": 250, "first_byte_ms": 1000, "idle_ms": 600000});
    assert_eq!(created["timeouts"], want);
    assert_eq!(
        h.admin("GET", "/v1/providers/slow", None).await["timeouts"],
        want
    );
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        h.admin("GET", &format!("/v1/providers/{id}"), None).await["timeouts"],
        want
    );
    let list = h.admin("GET", "/v1/providers", None).await;
    assert_eq!(list["data"][0]["timeouts"], want);
    assert_eq!(snapshot_provider(&h, "slow").await["timeouts"], want);

    // Partial: only first byte; the others stay the proxy's (`null`).
    h.admin(
        "POST",
        "/v1/providers",
        Some(provider_body(
            "partial",
            Some(json!({"first_byte_ms": 2000, "idle_ms": null})),
        )),
    )
    .await;
    assert_eq!(
        h.admin("GET", "/v1/providers/partial", None).await["timeouts"],
        json!({"connect_ms": null, "first_byte_ms": 2000, "idle_ms": null})
    );
    assert_eq!(
        snapshot_provider(&h, "partial").await["timeouts"],
        json!({"first_byte_ms": 2000})
    );

    // None given: all null in the API, no `timeouts` in the snapshot (older proxies).
    h.admin("POST", "/v1/providers", Some(provider_body("plain", None)))
        .await;
    assert_eq!(
        h.admin("GET", "/v1/providers/plain", None).await["timeouts"],
        json!({"connect_ms": null, "first_byte_ms": null, "idle_ms": null})
    );
    assert!(
        snapshot_provider(&h, "plain")
            .await
            .get("timeouts")
            .is_none()
    );

    // The create's audit event carries the timeouts.
    let audit = h
        .admin("GET", "/v1/audit?action=provider.create", None)
        .await;
    let slow = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["details"]["name"] == "slow")
        .unwrap();
    assert_eq!(
        slow["details"]["timeouts"],
        json!({"connect_ms": 250, "first_byte_ms": 1000, "idle_ms": 600000})
    );
    assert_eq!(slow["after"]["timeouts"]["first_byte_ms"], 1000);
}

#[tokio::test]
async fn invalid_timeouts_are_a_400_naming_the_field_and_write_nothing() {
    let h = Harness::new().await;
    h.admin(
        "POST",
        "/v1/providers",
        Some(provider_body("base", Some(json!({"first_byte_ms": 1500})))),
    )
    .await;
    let before = fingerprint(&h).await;
    // (timeouts value, field the message must name, text the message must contain)
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"connect_ms": 0}),
            "timeouts.connect_ms",
            "1 to 600000",
        ),
        (
            json!({"first_byte_ms": -1}),
            "timeouts.first_byte_ms",
            "negative",
        ),
        (
            json!({"idle_ms": 600001}),
            "timeouts.idle_ms",
            "1 to 600000",
        ),
        (
            json!({"idle_ms": 1u64 << 60}),
            "timeouts.idle_ms",
            "1 to 600000",
        ),
        (
            json!({"first_byte_ms": "1000"}),
            "timeouts.first_byte_ms",
            "string",
        ),
        (
            json!({"first_byte_ms": 1.5}),
            "timeouts.first_byte_ms",
            "floating",
        ),
        (
            json!({"connect_ms": true}),
            "timeouts.connect_ms",
            "boolean",
        ),
        (json!({"read_ms": 10}), "timeouts", "read_ms"),
        (json!("fast"), "timeouts", ""),
        (json!(5000), "timeouts", ""),
    ];
    for (t, field, text) in &cases {
        for (method, path, body) in [
            (
                "POST",
                "/v1/providers",
                provider_body("new", Some(t.clone())),
            ),
            ("PATCH", "/v1/providers/base", json!({"timeouts": t})),
        ] {
            let r = h
                .call(method, path, Some(&h.admin.clone()), Some(body))
                .await;
            assert_eq!(r.status.as_u16(), 400, "{method} {t}: {r:?}");
            let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(
                msg.starts_with(field),
                "{method} {t}: message should name {field}: {msg}"
            );
            assert!(msg.contains(text), "{method} {t}: {msg}");
            let code = r.json()["error"]["code"].as_str().unwrap().to_owned();
            let want = if text == &"read_ms" {
                "unknown_field"
            } else {
                "invalid_request"
            };
            assert_eq!(code, want, "{method} {t}: {r:?}");
        }
    }
    assert_eq!(
        fingerprint(&h).await,
        before,
        "a rejected request wrote something"
    );
    assert_eq!(
        h.admin("GET", "/v1/providers/base", None).await["timeouts"],
        json!({"connect_ms": null, "first_byte_ms": 1500, "idle_ms": null})
    );
    let r = h
        .call("GET", "/v1/providers/new", Some(&h.admin.clone()), None)
        .await;
    assert_eq!(r.status.as_u16(), 404);
}

#[tokio::test]
async fn patch_changes_and_clears_timeouts_with_an_audit_event() {
    let h = Harness::new().await;
    h.admin(
        "POST",
        "/v1/providers",
        Some(provider_body(
            "p",
            Some(json!({"connect_ms": 300, "first_byte_ms": 1000})),
        )),
    )
    .await;
    let events = h.control.state.svc.store.last_event_id().await.unwrap();

    // A missing key keeps that timeout; a given one replaces it.
    let v = h
        .admin(
            "PATCH",
            "/v1/providers/p",
            Some(json!({"timeouts": {"first_byte_ms": 2500, "idle_ms": 7000}})),
        )
        .await;
    let want = json!({"connect_ms": 300, "first_byte_ms": 2500, "idle_ms": 7000});
    assert_eq!(v["timeouts"], want);
    assert_eq!(
        h.admin("GET", "/v1/providers/p", None).await["timeouts"],
        want
    );
    assert_eq!(snapshot_provider(&h, "p").await["timeouts"], want);
    assert!(
        h.control.state.svc.store.last_event_id().await.unwrap() > events,
        "proxies must be told (config_changed)"
    );
    let audit = h.admin("GET", "/v1/audit?limit=1", None).await;
    let e = &audit["data"][0];
    assert_eq!(e["action"], "provider.update");
    assert_eq!(e["details"]["timeouts"], want);
    assert_eq!(
        e["before"]["timeouts"],
        json!({"connect_ms": 300, "first_byte_ms": 1000})
    );
    assert_eq!(e["after"]["timeouts"], want);

    // A PATCH of something else leaves the timeouts alone.
    let v = h
        .admin("PATCH", "/v1/providers/p", Some(json!({"priority": 3})))
        .await;
    assert_eq!(v["timeouts"], want);

    // `null` removes one timeout, `"timeouts": null` all of them.
    let v = h
        .admin(
            "PATCH",
            "/v1/providers/p",
            Some(json!({"timeouts": {"connect_ms": null}})),
        )
        .await;
    assert_eq!(
        v["timeouts"],
        json!({"connect_ms": null, "first_byte_ms": 2500, "idle_ms": 7000})
    );
    let v = h
        .admin("PATCH", "/v1/providers/p", Some(json!({"timeouts": null})))
        .await;
    assert_eq!(
        v["timeouts"],
        json!({"connect_ms": null, "first_byte_ms": null, "idle_ms": null})
    );
    assert!(snapshot_provider(&h, "p").await.get("timeouts").is_none());
}
