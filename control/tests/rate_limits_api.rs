//! Rate limits through the real router (`docs/decisions/0003-rate-limits.md`): set and clear
//! project limits, validation, mint with limits (record + `rpm`/`tpm` claims), RBAC, the
//! snapshot carrying project limits, and `POST /internal/v1/ratelimits`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine;
use common::{Harness, PROXY_SECRET};
use serde_json::{Value, json};

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[tokio::test]
async fn project_limits_set_clear_validate_and_reach_the_snapshot() {
    let h = Harness::new().await;
    let p = h
        .admin("POST", "/v1/projects", Some(json!({"name": "alpha"})))
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    assert_eq!(p["rate_limits"], json!({"rpm": null, "tpm": null}));

    let path = format!("/v1/projects/{id}");
    let v = h
        .admin(
            "PATCH",
            &path,
            Some(json!({"rate_limits": {"rpm": 600, "tpm": 100_000}})),
        )
        .await;
    assert_eq!(v["rate_limits"], json!({"rpm": 600, "tpm": 100_000}));
    // A missing key keeps that limit; null removes it.
    let v = h
        .admin("PATCH", &path, Some(json!({"rate_limits": {"rpm": null}})))
        .await;
    assert_eq!(v["rate_limits"], json!({"rpm": null, "tpm": 100_000}));
    let snap = h
        .call("GET", "/internal/v1/snapshot", Some(PROXY_SECRET), None)
        .await
        .json();
    let spec = snap["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(spec["rate_limits"], json!({"tpm": 100_000}));
    let v = h
        .admin("PATCH", &path, Some(json!({"rate_limits": null})))
        .await;
    assert_eq!(v["rate_limits"], json!({"rpm": null, "tpm": null}));
    assert_eq!(
        h.admin("GET", &path, None).await["rate_limits"],
        json!({"rpm": null, "tpm": null})
    );

    // 0, negative, fractional, unknown keys: 400 naming the field, nothing written.
    for bad in [
        json!({"rpm": 0}),
        json!({"tpm": 0}),
        json!({"rpm": -5}),
        json!({"rpm": 1.5}),
        json!({"rps": 5}),
        json!({"rpm": "ten"}),
    ] {
        let r = h
            .call(
                "PATCH",
                &path,
                Some(&h.admin.clone()),
                Some(json!({"rate_limits": bad})),
            )
            .await;
        assert_eq!(r.status.as_u16(), 400, "{bad}: {r:?}");
        let e = r.json();
        assert!(
            e["error"]["type"].is_string() && e["error"]["code"].is_string(),
            "{e}"
        );
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("rate_limits"),
            "{e}"
        );
    }
    assert_eq!(
        h.admin("GET", &path, None).await["rate_limits"],
        json!({"rpm": null, "tpm": null})
    );

    // RBAC: a viewer cannot set limits; a project-scoped key cannot either (admin only).
    let viewer = h.key("viewer", "viewer").await;
    let r = h
        .call(
            "PATCH",
            &path,
            Some(&viewer),
            Some(json!({"rate_limits": {"rpm": 1}})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 403, "{r:?}");
    let scoped = h.key("alpha-key", "project:alpha").await;
    let r = h
        .call(
            "PATCH",
            &path,
            Some(&scoped),
            Some(json!({"rate_limits": {"rpm": 1}})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 403, "{r:?}");
    // The audit log records the change (fields, values; never secrets).
    let audit = h.admin("GET", "/v1/audit?limit=50", None).await;
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "project.update"
                && e["details"]["fields"] == json!(["rate_limits"])),
        "{audit}"
    );
}

#[tokio::test]
async fn tokens_are_minted_with_limits_in_record_and_claims() {
    let h = Harness::new().await;
    h.admin("POST", "/v1/projects", Some(json!({"name": "alpha"})))
        .await;
    let t = h
        .admin(
            "POST",
            "/v1/projects/alpha/tokens",
            Some(json!({"rate_limits": {"rpm": 60, "tpm": 5000}})),
        )
        .await;
    let c = claims(t["token"].as_str().unwrap());
    assert_eq!(
        (c["rpm"].clone(), c["tpm"].clone()),
        (json!(60), json!(5000))
    );
    let rec = h
        .admin(
            "GET",
            &format!("/v1/tokens/{}", t["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(rec["rate_limits"], json!({"rpm": 60, "tpm": 5000}));

    // Without limits: no rpm/tpm claims at all (the payload old proxies expect).
    let plain = h
        .admin("POST", "/v1/projects/alpha/tokens", Some(json!({})))
        .await;
    let c = claims(plain["token"].as_str().unwrap());
    assert!(c.get("rpm").is_none() && c.get("tpm").is_none(), "{c}");

    for bad in [json!({"rpm": 0}), json!({"tpm": -1}), json!({"burst": 3})] {
        let r = h
            .call(
                "POST",
                "/v1/projects/alpha/tokens",
                Some(&h.admin.clone()),
                Some(json!({"rate_limits": bad})),
            )
            .await;
        assert_eq!(r.status.as_u16(), 400, "{bad}: {r:?}");
    }
    // A viewer cannot mint.
    let viewer = h.key("viewer", "viewer").await;
    let r = h
        .call(
            "POST",
            "/v1/projects/alpha/tokens",
            Some(&viewer),
            Some(json!({"rate_limits": {"rpm": 1}})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 403, "{r:?}");
}

#[tokio::test]
async fn internal_take_endpoint_grants_denies_and_validates() {
    let h = Harness::new().await;
    let url = "/internal/v1/ratelimits";
    let take = |want: u64| {
        json!({"takes": [
            {"scope": "token:tok_01J", "project": "prj_01J", "kind": "requests", "limit": 3, "want": want},
            {"scope": "project:prj_01J", "kind": "tokens", "limit": 1000, "want": 100, "min": 40}
        ]})
    };
    let r = h.call("POST", url, Some(PROXY_SECRET), Some(take(2))).await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    let g = r.json();
    assert_eq!(g["grants"][0]["granted"], 2);
    assert_eq!(g["grants"][0]["remaining"], 1);
    assert_eq!(g["grants"][1]["granted"], 100);
    let g = h
        .call("POST", url, Some(PROXY_SECRET), Some(take(2)))
        .await
        .json();
    assert_eq!(g["grants"][0]["granted"], 1, "partial grant: {g}");
    let g = h
        .call("POST", url, Some(PROXY_SECRET), Some(take(1)))
        .await
        .json();
    assert_eq!(g["grants"][0]["granted"], 0);
    let retry = g["grants"][0]["retry_after_ms"].as_u64().unwrap();
    assert!((1..=61_000).contains(&retry), "{g}");

    // Proxy secret only.
    let r = h
        .call("POST", url, Some(&h.admin.clone()), Some(take(1)))
        .await;
    assert_eq!(r.status.as_u16(), 401, "{r:?}");
    let r = h.call("POST", url, None, Some(take(1))).await;
    assert_eq!(r.status.as_u16(), 401);
    // Malformed batches: 400 with a clear message.
    for bad in [
        json!({"takes": []}),
        json!({"takes": [{"scope": "token:tok_1", "kind": "requests", "limit": 3, "want": 1}]}),
        json!({"takes": [{"scope": "user:x", "project": "prj_1", "kind": "requests", "limit": 3, "want": 1}]}),
        json!({"takes": [{"scope": "project:prj_1", "kind": "requests", "limit": 0, "want": 1}]}),
        json!({"takes": [{"scope": "project:prj_1", "kind": "minutes", "limit": 3, "want": 1}]}),
        json!({"takes": [{"scope": "project:prj_{x}", "kind": "requests", "limit": 3, "want": 1}]}),
    ] {
        let r = h
            .call("POST", url, Some(PROXY_SECRET), Some(bad.clone()))
            .await;
        assert_eq!(r.status.as_u16(), 400, "{bad}: {r:?}");
        assert!(r.json()["error"]["message"].is_string());
    }
}
