//! Store conformance suite (acceptance 6): one generic async suite, run against the embedded
//! store (redb in a temp dir), the Redis store on a private redis-server and the Redis store
//! on a private 3-master Redis Cluster (both from the testkit).
//! Every behaviour the service relies on is asserted here, so both backends are
//! interchangeable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use iron_control::model::{
    ApiKeyRecord, AuditEvent, AuditFilter, Budget, LeasePolicy, LeaseState, PageRequest, Period,
    PriceOverride, Project, Provider, Role, SigningKeyRecord, SigningKeyState, TokenRecord,
    UsageFilter,
};
use iron_control::store::embedded::EmbeddedStore;
use iron_control::store::redis::RedisStore;
use iron_control::store::{Store, StoreError};
use iron_core::Money;
use iron_core::lease::{Denial, LeaseGrant, LeaseReport, LeaseRequest, UsageEvent};
use iron_core::ratelimit::{RateKind, RateTake};
use iron_core::token::SigningKey;
use iron_core::transit::MasterKey;
use iron_core::wire::{ControlEvent, ProviderKind};
use iron_testkit::redis::RedisCluster;

const NOW: u64 = 1_800_000_000;

fn project(id: &str, name: &str) -> Project {
    Project {
        id: id.into(),
        name: name.into(),
        budget: Budget {
            limit: Some(Money::from_usd(10)),
            period: Period::Monthly,
        },
        providers: vec![],
        allowed_models: vec!["gpt-4o*".into()],
        pii: Some(iron_core::pii::PiiPolicy {
            reversible: false,
            ..Default::default()
        }),
        rate_limits: iron_core::ratelimit::RateLimits {
            rpm: Some(60),
            tpm: None,
        },
        created_at: NOW,
        updated_at: NOW,
    }
}

fn provider(id: &str, name: &str) -> Provider {
    let mk = MasterKey::generate();
    Provider {
        id: id.into(),
        name: name.into(),
        kind: ProviderKind::Openai,
        base_url: "https://api.openai.com".into(),
        models: vec!["*".into()],
        priority: 1,
        api_key: mk.seal(b"sk-secret", id.as_bytes()),
        key_hint: "sk-…ret".into(),
        timeouts: iron_core::wire::DeploymentTimeouts {
            connect_ms: Some(2_000),
            first_byte_ms: None,
            idle_ms: Some(30_000),
        },
        created_at: NOW,
        updated_at: NOW,
    }
}

fn token(id: &str, project_id: &str, expires_at: u64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        project_id: project_id.into(),
        name: Some("ci".into()),
        budget: Budget::default(),
        kid: "k_1".into(),
        created_at: NOW,
        expires_at,
        revoked_at: None,
        rate_limits: iron_core::ratelimit::RateLimits {
            rpm: None,
            tpm: Some(1000),
        },
    }
}

fn audit(id: &str, action: &str, project: Option<&str>, time: u64) -> AuditEvent {
    AuditEvent {
        id: id.into(),
        time,
        actor: "ak_1".into(),
        action: action.into(),
        target: "x".into(),
        project: project.map(Into::into),
        request_id: "req_1".into(),
        details: serde_json::json!({"name": "n"}),
        source_ip: Some("127.0.0.1".into()),
        before: serde_json::Value::Null,
        after: serde_json::json!({"id": "x"}),
    }
}

fn page(limit: usize, cursor: Option<String>) -> PageRequest {
    PageRequest { limit, cursor }
}

/// The suite. `retain` is the event retention the store was built with (must be 5).
async fn conformance(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    projects(&*store).await;
    providers(&*store).await;
    tokens(&*store).await;
    api_keys(&*store).await;
    signing_keys_and_meta(&*store).await;
    audit_log(&*store).await;
    sessions(&*store).await;
    event_log(&*store).await;
    budgets_and_prices(&*store).await;
    leases_grant_and_deny(&*store).await;
    leases_report_extend_release(&*store).await;
    leases_expire_and_late_reports(&*store).await;
    leases_charge_token_and_project(&*store).await;
    leases_daily_rollover_at_utc_midnight(&*store).await;
    leases_monthly_period(&*store).await;
    usage_listing(&*store).await;
    leases_concurrent_grants_never_exceed_the_limit(store.clone()).await;
    leases_gone_with_their_project(&*store).await;
}

async fn projects(s: &dyn Store) {
    assert!(s.get_project("prj_A").await.unwrap().is_none());
    s.create_project(&project("prj_A", "alpha")).await.unwrap();
    s.create_project(&project("prj_B", "beta")).await.unwrap();
    s.create_project(&project("prj_C", "gamma")).await.unwrap();
    // Duplicate name or id: conflict, nothing written.
    let dup = s
        .create_project(&project("prj_D", "alpha"))
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict { .. }), "{dup:?}");
    assert!(s.get_project("prj_D").await.unwrap().is_none());
    let dup_id = s
        .create_project(&project("prj_A", "delta"))
        .await
        .unwrap_err();
    assert!(matches!(dup_id, StoreError::Conflict { .. }), "{dup_id:?}");
    assert!(s.project_by_name("delta").await.unwrap().is_none());

    assert_eq!(
        s.get_project("prj_A").await.unwrap().unwrap(),
        project("prj_A", "alpha")
    );
    assert_eq!(
        s.project_by_name("beta").await.unwrap().unwrap().id,
        "prj_B"
    );

    // Pagination in id order.
    let p1 = s.list_projects(&page(2, None)).await.unwrap();
    assert_eq!(
        p1.items.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["prj_A", "prj_B"]
    );
    let p2 = s
        .list_projects(&page(2, p1.next_cursor.clone()))
        .await
        .unwrap();
    assert_eq!(
        p2.items.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["prj_C"]
    );
    assert!(p1.next_cursor.is_some());
    assert!(p2.next_cursor.is_none());
    assert!(
        s.list_projects(&page(3, None))
            .await
            .unwrap()
            .next_cursor
            .is_none()
    );

    // Rename frees the old name; renaming onto a taken name conflicts.
    let mut a = project("prj_A", "alpha2");
    a.budget.limit = Some(Money(5));
    s.update_project(&a).await.unwrap();
    assert!(s.project_by_name("alpha").await.unwrap().is_none());
    assert_eq!(
        s.project_by_name("alpha2")
            .await
            .unwrap()
            .unwrap()
            .budget
            .limit,
        Some(Money(5))
    );
    let taken = s
        .update_project(&project("prj_A", "beta"))
        .await
        .unwrap_err();
    assert!(matches!(taken, StoreError::Conflict { .. }), "{taken:?}");
    assert_eq!(
        s.get_project("prj_A").await.unwrap().unwrap().name,
        "alpha2"
    );
    let missing = s
        .update_project(&project("prj_Z", "zeta"))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, StoreError::NotFound { .. }),
        "{missing:?}"
    );
    assert!(s.project_by_name("zeta").await.unwrap().is_none());
    s.create_project(&project("prj_D", "alpha")).await.unwrap();

    // Delete.
    s.delete_project("prj_D", NOW).await.unwrap();
    assert!(s.get_project("prj_D").await.unwrap().is_none());
    assert!(s.project_by_name("alpha").await.unwrap().is_none());
    let gone = s.delete_project("prj_D", NOW).await.unwrap_err();
    assert!(matches!(gone, StoreError::NotFound { .. }), "{gone:?}");
    // The name can be reused.
    s.create_project(&project("prj_E", "alpha")).await.unwrap();
    s.delete_project("prj_E", NOW).await.unwrap();
}

async fn providers(s: &dyn Store) {
    let a = provider("prv_A", "openai");
    s.create_provider(&a).await.unwrap();
    s.create_provider(&provider("prv_B", "backup"))
        .await
        .unwrap();
    let dup = s
        .create_provider(&provider("prv_C", "openai"))
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict { .. }), "{dup:?}");
    assert!(s.get_provider("prv_C").await.unwrap().is_none());
    assert_eq!(s.get_provider("prv_A").await.unwrap().unwrap(), a);
    assert_eq!(
        s.provider_by_name("backup").await.unwrap().unwrap().id,
        "prv_B"
    );

    let l = s.list_providers(&page(1, None)).await.unwrap();
    assert_eq!(l.items[0].id, "prv_A");
    let l2 = s.list_providers(&page(1, l.next_cursor)).await.unwrap();
    assert_eq!(l2.items[0].id, "prv_B");
    assert!(l2.next_cursor.is_none());

    let mut b = provider("prv_B", "backup-2");
    b.priority = 7;
    s.update_provider(&b).await.unwrap();
    assert!(s.provider_by_name("backup").await.unwrap().is_none());
    assert_eq!(
        s.provider_by_name("backup-2")
            .await
            .unwrap()
            .unwrap()
            .priority,
        7
    );
    let taken = s
        .update_provider(&provider("prv_B", "openai"))
        .await
        .unwrap_err();
    assert!(matches!(taken, StoreError::Conflict { .. }), "{taken:?}");
    let missing = s
        .update_provider(&provider("prv_Z", "zz"))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, StoreError::NotFound { .. }),
        "{missing:?}"
    );
    assert!(s.provider_by_name("zz").await.unwrap().is_none());

    s.delete_provider("prv_B").await.unwrap();
    assert!(s.get_provider("prv_B").await.unwrap().is_none());
    assert!(s.provider_by_name("backup-2").await.unwrap().is_none());
    assert!(matches!(
        s.delete_provider("prv_B").await,
        Err(StoreError::NotFound { .. })
    ));
    s.delete_provider("prv_A").await.unwrap();
    assert!(
        s.list_providers(&page(10, None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn tokens(s: &dyn Store) {
    s.create_project(&project("prj_T1", "tokens-1"))
        .await
        .unwrap();
    s.create_project(&project("prj_T2", "tokens-2"))
        .await
        .unwrap();
    s.create_token(&token("tok_1", "prj_T1", NOW + 100))
        .await
        .unwrap();
    s.create_token(&token("tok_2", "prj_T2", NOW + 100))
        .await
        .unwrap();
    s.create_token(&token("tok_3", "prj_T1", NOW + 100))
        .await
        .unwrap();
    s.create_token(&token("tok_4", "prj_T1", NOW - 1))
        .await
        .unwrap();
    let orphan = s
        .create_token(&token("tok_9", "prj_nope", NOW + 100))
        .await
        .unwrap_err();
    assert!(matches!(orphan, StoreError::NotFound { .. }), "{orphan:?}");
    assert!(s.get_token("tok_9").await.unwrap().is_none());
    let dup = s
        .create_token(&token("tok_1", "prj_T1", NOW + 100))
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict { .. }), "{dup:?}");

    assert_eq!(
        s.get_token("tok_2").await.unwrap().unwrap(),
        token("tok_2", "prj_T2", NOW + 100)
    );
    let ids = |p: &iron_control::model::Page<TokenRecord>| {
        p.items.iter().map(|t| t.id.clone()).collect::<Vec<_>>()
    };
    let t1 = s.list_tokens(Some("prj_T1"), &page(2, None)).await.unwrap();
    assert_eq!(ids(&t1), ["tok_1", "tok_3"]);
    let t1b = s
        .list_tokens(Some("prj_T1"), &page(2, t1.next_cursor))
        .await
        .unwrap();
    assert_eq!(ids(&t1b), ["tok_4"]);
    assert!(t1b.next_cursor.is_none());
    let all = s.list_tokens(None, &page(10, None)).await.unwrap();
    assert_eq!(ids(&all), ["tok_1", "tok_2", "tok_3", "tok_4"]);
    assert!(
        s.list_tokens(Some("prj_none"), &page(10, None))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Revocation is idempotent and lists only unexpired tokens.
    let r = s.revoke_token("tok_1", NOW).await.unwrap();
    assert!(r.newly_revoked);
    assert_eq!(r.token.revoked_at, Some(NOW));
    let again = s.revoke_token("tok_1", NOW + 5).await.unwrap();
    assert!(!again.newly_revoked);
    assert_eq!(again.token.revoked_at, Some(NOW));
    assert_eq!(
        s.get_token("tok_1").await.unwrap().unwrap().revoked_at,
        Some(NOW)
    );
    s.revoke_token("tok_4", NOW).await.unwrap();
    assert!(matches!(
        s.revoke_token("tok_nope", NOW).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(s.revoked_tokens(NOW).await.unwrap(), ["tok_1"]);
    assert!(s.revoked_tokens(NOW + 100).await.unwrap().is_empty());

    // Deleting a project drops its tokens and revokes the live ones.
    let revoked = s.delete_project("prj_T1", NOW).await.unwrap();
    assert_eq!(
        revoked.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["tok_3"]
    );
    assert_eq!(revoked[0].revoked_at, Some(NOW));
    assert!(s.get_token("tok_3").await.unwrap().is_none());
    assert!(
        s.list_tokens(Some("prj_T1"), &page(10, None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        ids(&s.list_tokens(None, &page(10, None)).await.unwrap()),
        ["tok_2"]
    );
    let mut revoked_now = s.revoked_tokens(NOW).await.unwrap();
    revoked_now.sort();
    assert_eq!(revoked_now, ["tok_1", "tok_3"]);
    s.delete_project("prj_T2", NOW).await.unwrap();
}

/// Revoked dashboard sessions (wall-clock times: entries expire with the session) and the
/// API-key lookup by id that every session request makes.
async fn sessions(s: &dyn Store) {
    let now = iron_control::model::now();
    assert!(!s.session_revoked("ses_A", now).await.unwrap());
    s.revoke_session("ses_A", now + 3600).await.unwrap();
    s.revoke_session("ses_A", now + 3600).await.unwrap(); // idempotent
    assert!(s.session_revoked("ses_A", now).await.unwrap());
    assert!(!s.session_revoked("ses_B", now).await.unwrap());
    // Already expired: nothing to refuse (the token's own exp does).
    s.revoke_session("ses_old", now.saturating_sub(10))
        .await
        .unwrap();
    assert!(!s.session_revoked("ses_old", now).await.unwrap());
    let key = ApiKeyRecord {
        id: "ak_sess".into(),
        name: "s".into(),
        role: Role::Viewer,
        key_hash: "h_sess".into(),
        created_at: NOW,
    };
    s.put_api_key(&key).await.unwrap();
    assert_eq!(s.get_api_key("ak_sess").await.unwrap(), Some(key));
    s.delete_api_key("ak_sess").await.unwrap();
    assert!(s.get_api_key("ak_sess").await.unwrap().is_none());
    assert!(s.get_api_key("ak_none").await.unwrap().is_none());
}

async fn api_keys(s: &dyn Store) {
    let k = |id: &str, hash: &str, role: Role| ApiKeyRecord {
        id: id.into(),
        name: format!("key {id}"),
        role,
        key_hash: hash.into(),
        created_at: NOW,
    };
    s.put_api_key(&k("ak_1", "h1", Role::Admin)).await.unwrap();
    s.put_api_key(&k("ak_2", "h2", Role::Project("prj_X".into())))
        .await
        .unwrap();
    assert_eq!(
        s.api_key_by_hash("h2").await.unwrap().unwrap().role,
        Role::Project("prj_X".into())
    );
    assert!(s.api_key_by_hash("h3").await.unwrap().is_none());
    // Same hash on another id: conflict.
    assert!(matches!(
        s.put_api_key(&k("ak_3", "h1", Role::Viewer)).await,
        Err(StoreError::Conflict { .. })
    ));
    // Replacing by id moves the hash.
    s.put_api_key(&k("ak_1", "h1b", Role::Viewer))
        .await
        .unwrap();
    assert!(s.api_key_by_hash("h1").await.unwrap().is_none());
    assert_eq!(
        s.api_key_by_hash("h1b").await.unwrap().unwrap().role,
        Role::Viewer
    );
    let l = s.list_api_keys(&page(1, None)).await.unwrap();
    assert_eq!(l.items[0].id, "ak_1");
    let l2 = s.list_api_keys(&page(1, l.next_cursor)).await.unwrap();
    assert_eq!(l2.items[0].id, "ak_2");
    assert!(l2.next_cursor.is_none());
    s.delete_api_key("ak_2").await.unwrap();
    assert!(s.api_key_by_hash("h2").await.unwrap().is_none());
    assert!(matches!(
        s.delete_api_key("ak_2").await,
        Err(StoreError::NotFound { .. })
    ));
    s.delete_api_key("ak_1").await.unwrap();
}

async fn signing_keys_and_meta(s: &dyn Store) {
    let mk = MasterKey::generate();
    let rec = |key: &SigningKey, state| SigningKeyRecord {
        kid: key.kid().into(),
        public: key.public_key(),
        seed: mk.seal(&key.seed(), key.kid().as_bytes()),
        state,
        created_at: NOW,
    };
    let k1 = SigningKey::generate().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let k2 = SigningKey::generate().unwrap();
    s.put_signing_key(&rec(&k2, SigningKeyState::Active))
        .await
        .unwrap();
    s.put_signing_key(&rec(&k1, SigningKeyState::Active))
        .await
        .unwrap();
    s.put_signing_key(&rec(&k1, SigningKeyState::Verify))
        .await
        .unwrap();
    let all = s.list_signing_keys().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].kid, k1.kid());
    assert_eq!(all[0].state, SigningKeyState::Verify);
    assert_eq!(all[1].kid, k2.kid());

    assert!(s.get_meta("m").await.unwrap().is_none());
    s.put_meta("m", b"\x00\x01bytes").await.unwrap();
    s.put_meta("m", b"\x00\x02bytes").await.unwrap();
    assert_eq!(s.get_meta("m").await.unwrap().unwrap(), b"\x00\x02bytes");
}

async fn audit_log(s: &dyn Store) {
    for i in 0..7u64 {
        let prj = if i % 2 == 0 { Some("prj_even") } else { None };
        let action = if i == 3 {
            "token.revoke"
        } else {
            "project.create"
        };
        s.append_audit(&audit(&format!("aud_{i:02}"), action, prj, NOW + i))
            .await
            .unwrap();
    }
    let all = AuditFilter::default();
    let p1 = s.list_audit(&all, &page(3, None)).await.unwrap();
    let ids = |p: &iron_control::model::Page<AuditEvent>| {
        p.items.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&p1), ["aud_06", "aud_05", "aud_04"], "newest first");
    let p2 = s
        .list_audit(&all, &page(3, p1.next_cursor.clone()))
        .await
        .unwrap();
    assert_eq!(ids(&p2), ["aud_03", "aud_02", "aud_01"]);
    let p3 = s
        .list_audit(&all, &page(3, p2.next_cursor.clone()))
        .await
        .unwrap();
    assert_eq!(ids(&p3), ["aud_00"]);
    assert!(p3.next_cursor.is_none());
    assert_eq!(p1.items[0].details, serde_json::json!({"name": "n"}));

    let by_project = AuditFilter {
        project: Some("prj_even".into()),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let p = s.list_audit(&by_project, &page(2, cursor)).await.unwrap();
        seen.extend(ids(&p));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["aud_06", "aud_04", "aud_02", "aud_00"]);
    let by_action = AuditFilter {
        action: Some("token.revoke".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(&s.list_audit(&by_action, &page(10, None)).await.unwrap()),
        ["aud_03"]
    );
    let window = AuditFilter {
        since: Some(NOW + 2),
        until: Some(NOW + 4),
        ..Default::default()
    };
    assert_eq!(
        ids(&s.list_audit(&window, &page(10, None)).await.unwrap()),
        ["aud_03", "aud_02"]
    );
}

async fn event_log(s: &dyn Store) {
    // Built with retention 5.
    assert_eq!(s.last_event_id().await.unwrap(), 0);
    let empty = s.events_since(0, 10).await.unwrap();
    assert!(empty.events.is_empty() && !empty.gap && empty.last_id == 0);
    let mut ids = Vec::new();
    for i in 0..3 {
        let ev = ControlEvent::TokenRevoked {
            token_id: format!("tok_{i}"),
        };
        ids.push(s.append_event(&ev, NOW + i).await.unwrap());
    }
    assert_eq!(ids, [1, 2, 3]);
    let b = s.events_since(1, 10).await.unwrap();
    assert!(!b.gap);
    assert_eq!(b.last_id, 3);
    assert_eq!(b.events.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(
        b.events[0].event,
        ControlEvent::TokenRevoked {
            token_id: "tok_1".into()
        }
    );
    assert_eq!(b.events[0].time, NOW + 1);
    assert_eq!(s.events_since(0, 2).await.unwrap().events.len(), 2, "limit");
    let caught_up = s.events_since(3, 10).await.unwrap();
    assert!(caught_up.events.is_empty() && !caught_up.gap);
    for _ in 0..5 {
        s.append_event(&ControlEvent::ConfigChanged, NOW)
            .await
            .unwrap();
    }
    assert_eq!(s.last_event_id().await.unwrap(), 8);
    // Only 4..=8 retained: from 3 is complete, from 2 has a gap.
    let ok = s.events_since(3, 10).await.unwrap();
    assert!(!ok.gap);
    assert_eq!(
        ok.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        [4, 5, 6, 7, 8]
    );
    let gap = s.events_since(2, 10).await.unwrap();
    assert!(gap.gap, "events 3 is gone");
    assert_eq!(gap.last_id, 8);
    assert!(s.events_since(0, 10).await.unwrap().gap);
    // A position ahead of the log (store was reset) is a gap too.
    assert!(s.events_since(50, 10).await.unwrap().gap);
}

async fn budgets_and_prices(s: &dyn Store) {
    s.create_project(&project("prj_BU", "budget"))
        .await
        .unwrap();
    let u = s.budget_usage("prj_BU", None, NOW).await.unwrap();
    assert_eq!((u.spent, u.leased, u.leases), (Money::ZERO, Money::ZERO, 0));
    assert_eq!(
        s.budget_usage("prj_BU", Some("tok_x"), NOW)
            .await
            .unwrap()
            .spent,
        Money::ZERO
    );
    assert_eq!(
        s.budget_usage("prj_nope", None, NOW).await.unwrap(),
        Default::default()
    );
    let price = |model: &str, input| PriceOverride {
        model: model.into(),
        input: Money(input),
        cached_input: None,
        output: Money(10),
        updated_at: NOW,
    };
    s.put_price(&price("zeta", 1)).await.unwrap();
    s.put_price(&price("alpha", 2)).await.unwrap();
    s.put_price(&price("zeta", 3)).await.unwrap();
    let all = s.list_prices().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|p| (p.model.as_str(), p.input.0))
            .collect::<Vec<_>>(),
        [("alpha", 2), ("zeta", 3)]
    );
}

#[tokio::test]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("control.redb"), 5).unwrap();
    conformance(Arc::new(store)).await;
}

#[tokio::test]
async fn embedded_store_survives_reopen_and_locks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.redb");
    let store = EmbeddedStore::open(&path, 5).unwrap();
    store
        .create_project(&project("prj_A", "alpha"))
        .await
        .unwrap();
    store
        .append_event(&ControlEvent::ConfigChanged, NOW)
        .await
        .unwrap();
    assert!(matches!(
        EmbeddedStore::open(&path, 5),
        Err(StoreError::Unavailable(_))
    ));
    drop(store);
    let reopened = EmbeddedStore::open(&path, 5).unwrap();
    assert_eq!(
        reopened.project_by_name("alpha").await.unwrap().unwrap().id,
        "prj_A"
    );
    assert_eq!(reopened.last_event_id().await.unwrap(), 1);
}

#[tokio::test]
async fn redis_store_conforms() {
    let redis = iron_testkit::RedisServer::start().await.unwrap();
    let store = RedisStore::connect(&redis.url(), 5).await.unwrap();
    conformance(Arc::new(store)).await;
}

#[tokio::test]
async fn redis_store_reports_outage_and_reconnects() {
    let mut redis = iron_testkit::RedisServer::start().await.unwrap();
    let store = RedisStore::connect(&redis.url(), 5).await.unwrap();
    store.ping().await.unwrap();
    redis.stop().await.unwrap();
    let down = store.ping().await.unwrap_err();
    assert!(matches!(down, StoreError::Unavailable(_)), "{down:?}");
    redis.restart().await.unwrap();
    // The manager reconnects in the background; allow it a moment.
    let mut ok = false;
    for _ in 0..50 {
        if store.ping().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "store did not reconnect after redis restart");
    store
        .create_project(&project("prj_A", "alpha"))
        .await
        .unwrap();
}

#[tokio::test]
async fn redis_keys_are_hash_tagged_per_project() {
    let redis = iron_testkit::RedisServer::start().await.unwrap();
    let store = RedisStore::connect(&redis.url(), 5).await.unwrap();
    store
        .create_project(&project("prj_A", "alpha"))
        .await
        .unwrap();
    store
        .create_token(&token("tok_1", "prj_A", NOW + 100))
        .await
        .unwrap();
    store
        .append_event(&ControlEvent::ConfigChanged, NOW)
        .await
        .unwrap();
    // Lease activity: grant, report with an event, expiry, release.
    let lease = store
        .grant_lease(&ask("tok_1", 1_000), &new_lease(), NOW, &POLICY)
        .await
        .unwrap()
        .lease_id;
    store
        .report_lease(
            &lease,
            &rep(1, 10, vec![event("evt_k", 10, "m", 1)]),
            NOW,
            &POLICY,
        )
        .await
        .unwrap();
    store.expire_leases(NOW + 61, &POLICY).await.unwrap();
    store
        .release_lease(&lease, &rep(2, 10, vec![]), NOW + 62, &POLICY)
        .await
        .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(
            k.starts_with("iron:{g}:") || k.starts_with("iron:{prj_A}:"),
            "untagged key {k}"
        );
    }
    assert!(keys.contains(&"iron:{prj_A}:project".to_string()));
    for k in [
        "iron:{prj_A}:budget",
        "iron:{prj_A}:leases",
        "iron:{prj_A}:leases:gone",
        "iron:{prj_A}:usage",
        "iron:{prj_A}:usage:ids",
        "iron:{g}:leases",
    ] {
        assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
    }
    assert!(keys.contains(&"iron:{prj_A}:token:tok_1".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_store_conforms() {
    let cluster = RedisCluster::start(3).await.unwrap();
    let store = RedisStore::connect(&cluster.url(), 5).await.unwrap();
    assert!(store.is_cluster());
    conformance(Arc::new(store)).await;
}

/// Keys of one cluster node (`KEYS` on a node lists only the slots it serves).
async fn node_keys(url: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap()
}

fn rate(scope: &str, project: &str, limit: u64) -> RateTake {
    RateTake {
        scope: scope.into(),
        kind: RateKind::Requests,
        limit,
        want: 1,
        min: 0,
        force: false,
        project: Some(project.into()),
    }
}

/// Data really spreads over the masters, and every cross-project read (listings by index,
/// token lookups, the sweep, usage, multi-project rate takes) sees all of them.
#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_spreads_projects_over_masters() {
    let cluster = RedisCluster::start(3).await.unwrap();
    let store = RedisStore::connect(&cluster.url(), 5).await.unwrap();
    let n = 12;
    let mut leases = Vec::new();
    for i in 0..n {
        let (prj, tok) = (format!("prj_C{i:02}"), format!("tok_C{i:02}"));
        setup(
            &store,
            budget_project(&prj, Some(1_000_000), Period::Total),
            &[budget_token(&tok, &prj, None, Period::Total)],
        )
        .await;
        let lease = grant(&store, &tok, 1_000, NOW).await.lease_id;
        store
            .report_lease(
                &lease,
                &rep(1, 10, vec![event(&format!("evt_C{i:02}"), 10, "m", 1)]),
                NOW,
                &POLICY,
            )
            .await
            .unwrap();
        leases.push(lease);
    }
    store
        .append_event(&ControlEvent::ConfigChanged, NOW)
        .await
        .unwrap();
    store
        .append_audit(&audit("aud_C", "project.create", Some("prj_C00"), NOW))
        .await
        .unwrap();

    // Where the keys are: each project's keys on one master, projects on every master, all
    // `{g}` keys together on one.
    let mut per_node = Vec::new();
    for url in cluster.node_urls() {
        per_node.push(node_keys(&url).await);
    }
    let mut project_home = std::collections::BTreeMap::new();
    let mut global_nodes = std::collections::BTreeSet::new();
    for (node, keys) in per_node.iter().enumerate() {
        for k in keys {
            if k.starts_with("iron:{g}:") {
                global_nodes.insert(node);
                continue;
            }
            let tag = k
                .strip_prefix("iron:{")
                .and_then(|r| r.split_once('}'))
                .map(|(t, _)| t.to_owned())
                .unwrap_or_else(|| panic!("untagged key {k}"));
            let home = project_home.entry(tag.clone()).or_insert(node);
            assert_eq!(*home, node, "keys of {tag} on two masters");
        }
    }
    assert_eq!(project_home.len(), n, "{project_home:?}");
    let masters: std::collections::BTreeSet<_> = project_home.values().copied().collect();
    assert_eq!(
        masters.len(),
        3,
        "12 projects should land on all 3 masters: {project_home:?}"
    );
    assert_eq!(global_nodes.len(), 1, "{{g}} keys on one master");
    for i in 0..n {
        let prj = format!("prj_C{i:02}");
        let home = &per_node[project_home[&prj]];
        for k in ["project", "tokens", "budget", "leases", "usage"] {
            let key = format!("iron:{{{prj}}}:{k}");
            assert!(home.contains(&key), "{key} missing");
        }
    }

    // Reads across slots see every master.
    let all = store.list_projects(&page(100, None)).await.unwrap();
    assert_eq!(all.items.len(), n);
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let pg = store.list_tokens(None, &page(5, cursor)).await.unwrap();
        seen.extend(pg.items.into_iter().map(|t| t.id));
        cursor = pg.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(
        seen,
        (0..n).map(|i| format!("tok_C{i:02}")).collect::<Vec<_>>()
    );
    let usage = store
        .list_usage(&UsageFilter::default(), &page(100, None))
        .await
        .unwrap();
    assert_eq!(usage.items.len(), n);
    assert_eq!(
        store
            .budget_usage("prj_C07", None, NOW)
            .await
            .unwrap()
            .spent,
        Money(10)
    );
    store.revoke_token("tok_C03", NOW).await.unwrap();
    store.revoke_token("tok_C08", NOW).await.unwrap();
    let mut revoked = store.revoked_tokens(NOW).await.unwrap();
    revoked.sort();
    assert_eq!(revoked, ["tok_C03", "tok_C08"]);
    // The sweep visits every project's slot: all 12 leases expire.
    let swept = store.expire_leases(NOW + 61, &POLICY).await.unwrap();
    assert_eq!(swept.expired, n as u64);
    assert_eq!(
        store.get_lease(&leases[11]).await.unwrap().unwrap().state,
        LeaseState::Expired
    );
    // One rate call over projects on different masters: one script per project slot.
    let takes = [
        rate("token:tok_C00", "prj_C00", 1),
        rate("token:tok_C05", "prj_C05", 1),
        rate("token:tok_C00", "prj_C00", 1),
        rate("token:tok_C10", "prj_C10", 2),
    ];
    let grants = store.rate_take(&takes, NOW * 1000).await.unwrap();
    assert_eq!(
        grants.iter().map(|g| g.granted).collect::<Vec<_>>(),
        [1, 1, 0, 1]
    );
    let deleted = store.delete_project("prj_C09", NOW).await.unwrap();
    assert_eq!(deleted.len(), 1);
    assert!(store.get_token("tok_C09").await.unwrap().is_none());
    assert_eq!(
        store
            .list_projects(&page(100, None))
            .await
            .unwrap()
            .items
            .len(),
        n - 1
    );
}

/// A master that goes away makes the store `Unavailable`; once it is back (same port, its
/// `nodes.conf`), the cluster client reconnects without a new store.
#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_store_reports_outage_and_reconnects() {
    let mut cluster = RedisCluster::start(3).await.unwrap();
    let store = RedisStore::connect(&cluster.url(), 5).await.unwrap();
    store.ping().await.unwrap();
    let node = cluster.node_mut(1).unwrap();
    node.stop().await.unwrap();
    let down = store.ping().await.unwrap_err();
    assert!(matches!(down, StoreError::Unavailable(_)), "{down:?}");
    node.restart().await.unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if store.ping().await.is_ok()
            && store
                .create_project(&project("prj_A", "alpha"))
                .await
                .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "store did not recover after the master came back");
    assert_eq!(
        store.project_by_name("alpha").await.unwrap().unwrap().id,
        "prj_A"
    );
}

// --- leases -------------------------------------------------------------------------------

const POLICY: LeasePolicy = LeasePolicy {
    ttl_secs: 60,
    min_lease: Money(100),
    retain_secs: 3600,
};

fn budget_project(id: &str, limit: Option<u64>, period: Period) -> Project {
    Project {
        budget: Budget {
            limit: limit.map(Money),
            period,
        },
        ..project(id, id)
    }
}

fn budget_token(id: &str, project_id: &str, limit: Option<u64>, period: Period) -> TokenRecord {
    TokenRecord {
        budget: Budget {
            limit: limit.map(Money),
            period,
        },
        ..token(id, project_id, NOW + 10 * 365 * 86_400)
    }
}

async fn setup(s: &dyn Store, prj: Project, toks: &[TokenRecord]) {
    s.create_project(&prj).await.unwrap();
    for t in toks {
        s.create_token(t).await.unwrap();
    }
}

fn ask(token: &str, requested: u64) -> LeaseRequest {
    LeaseRequest {
        proxy_id: "px_test".into(),
        token_id: token.into(),
        requested: Money(requested),
    }
}

fn new_lease() -> String {
    iron_control::model::new_id("lse")
}

async fn grant(s: &dyn Store, token: &str, requested: u64, now: u64) -> LeaseGrant {
    s.grant_lease(&ask(token, requested), &new_lease(), now, &POLICY)
        .await
        .unwrap()
}

fn event(id: &str, cost: u64, model: &str, at_ms: u64) -> UsageEvent {
    UsageEvent {
        id: id.into(),
        token_id: "tok_claimed_by_proxy".into(),
        project_id: "prj_claimed_by_proxy".into(),
        provider_id: "prv_1".into(),
        model: model.into(),
        input_tokens: 10,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        output_tokens: 20,
        cost: Money(cost),
        status: 200,
        cut_off: false,
        at_ms,
        overhead_us: Some(250),
    }
}

fn rep(seq: u64, spent: u64, events: Vec<UsageEvent>) -> LeaseReport {
    LeaseReport {
        seq,
        spent: Money(spent),
        events,
    }
}

/// (spent, leased, open leases) of a project, or of a token, at `now`.
async fn usage_at(s: &dyn Store, prj: &str, tok: Option<&str>, now: u64) -> (u64, u64, u64) {
    let u = s.budget_usage(prj, tok, now).await.unwrap();
    (u.spent.0, u.leased.0, u.leases)
}

async fn events_of(s: &dyn Store, prj: &str) -> Vec<UsageEvent> {
    let filter = UsageFilter {
        project: Some(prj.into()),
        ..Default::default()
    };
    s.list_usage(&filter, &page(1000, None))
        .await
        .unwrap()
        .items
}

async fn leases_grant_and_deny(s: &dyn Store) {
    let mut revoked = budget_token("tok_G_rev", "prj_LG", None, Period::Total);
    revoked.revoked_at = Some(NOW - 5);
    let expired = token("tok_G_exp", "prj_LG", NOW - 1);
    setup(
        s,
        budget_project("prj_LG", Some(10_000), Period::Total),
        &[
            budget_token("tok_G", "prj_LG", None, Period::Total),
            revoked,
            expired,
        ],
    )
    .await;
    s.revoke_token("tok_G_rev", NOW - 5).await.unwrap();

    let unknown = grant(s, "tok_nope", 1_000, NOW).await;
    assert_eq!(
        (unknown.denied, unknown.granted, unknown.lease_id.as_str()),
        (Some(Denial::UnknownToken), Money::ZERO, "")
    );
    for t in ["tok_G_rev", "tok_G_exp"] {
        let g = grant(s, t, 1_000, NOW).await;
        assert_eq!(
            (g.denied, g.granted),
            (Some(Denial::TokenRevoked), Money::ZERO),
            "{t}"
        );
    }
    assert_eq!(
        usage_at(s, "prj_LG", None, NOW).await,
        (0, 0, 0),
        "denials hold nothing"
    );

    // Alone: what is asked. The lease record holds what was granted.
    let id = new_lease();
    let g1 = s
        .grant_lease(&ask("tok_G", 4_000), &id, NOW, &POLICY)
        .await
        .unwrap();
    assert_eq!(
        g1,
        LeaseGrant {
            lease_id: id.clone(),
            granted: Money(4_000),
            expires_at: NOW + 60,
            budget_remaining: Money(6_000),
            denied: None,
        }
    );
    let l = s.get_lease(&id).await.unwrap().unwrap();
    assert_eq!(
        (
            l.state,
            l.granted,
            l.spent,
            l.seq,
            l.proxy_id.as_str(),
            l.token_id.as_str(),
            l.project_id.as_str()
        ),
        (
            LeaseState::Open,
            Money(4_000),
            Money::ZERO,
            0,
            "px_test",
            "tok_G",
            "prj_LG"
        )
    );
    assert!(l.id.starts_with("lse_"));
    assert_eq!(usage_at(s, "prj_LG", None, NOW).await, (0, 4_000, 1));
    assert_eq!(
        usage_at(s, "prj_LG", Some("tok_G"), NOW).await,
        (0, 4_000, 1)
    );

    // Adaptive: 6000 left, one other lease → a third; then 4000 left, two others → a fifth.
    let g2 = grant(s, "tok_G", 10_000, NOW).await;
    assert_eq!(
        (g2.granted, g2.budget_remaining),
        (Money(2_000), Money(4_000))
    );
    let g3 = grant(s, "tok_G", 10_000, NOW).await;
    assert_eq!(
        (g3.granted, g3.budget_remaining),
        (Money(800), Money(3_200))
    );
    // Near the end the slices are the minimum, never more than what is left.
    let mut total = 4_000 + 2_000 + 800;
    loop {
        let g = grant(s, "tok_G", 10_000, NOW).await;
        if g.denied.is_some() {
            assert_eq!(
                (g.denied, g.granted, g.budget_remaining),
                (Some(Denial::BudgetExceeded), Money::ZERO, Money::ZERO)
            );
            break;
        }
        assert!(
            g.granted.0 >= 100 || g.budget_remaining == Money::ZERO,
            "{g:?}"
        );
        total += g.granted.0;
        assert!(total <= 10_000);
    }
    assert_eq!(total, 10_000, "the whole budget was handed out");
    assert_eq!(usage_at(s, "prj_LG", None, NOW).await.1, 10_000);

    // Unlimited project: what is asked.
    setup(
        s,
        budget_project("prj_LG_unl", None, Period::Total),
        &[budget_token("tok_G_unl", "prj_LG_unl", None, Period::Total)],
    )
    .await;
    let g = grant(s, "tok_G_unl", 123_456_789, NOW).await;
    assert_eq!(
        (g.granted, g.denied, g.budget_remaining),
        (Money(123_456_789), None, Money(u64::MAX))
    );
}

async fn leases_report_extend_release(s: &dyn Store) {
    setup(
        s,
        budget_project("prj_LR", Some(100_000), Period::Total),
        &[budget_token("tok_R", "prj_LR", None, Period::Total)],
    )
    .await;
    let id = new_lease();
    s.grant_lease(&ask("tok_R", 10_000), &id, NOW, &POLICY)
        .await
        .unwrap();

    let r1 = rep(
        1,
        3_000,
        vec![
            event("evt_1", 1_000, "gpt-4o", 1),
            event("evt_2", 2_000, "gpt-4o-mini", 2),
        ],
    );
    let ack = s.report_lease(&id, &r1, NOW + 1, &POLICY).await.unwrap();
    assert_eq!(
        (ack.lease_remaining, ack.budget_remaining, ack.revoked),
        (Money(7_000), Money(90_000), false)
    );
    assert_eq!(
        usage_at(s, "prj_LR", None, NOW + 1).await,
        (3_000, 7_000, 1)
    );
    assert_eq!(
        usage_at(s, "prj_LR", Some("tok_R"), NOW + 1).await,
        (3_000, 7_000, 1)
    );
    let l = s.get_lease(&id).await.unwrap().unwrap();
    assert_eq!(
        (l.seq, l.spent, l.expires_at),
        (1, Money(3_000), NOW + 61),
        "a report pushes the expiry"
    );

    // The same report again (a replay): nothing changes, the same ack.
    let again = s.report_lease(&id, &r1, NOW + 2, &POLICY).await.unwrap();
    assert_eq!(again, ack);
    assert_eq!(
        usage_at(s, "prj_LR", None, NOW + 2).await,
        (3_000, 7_000, 1)
    );
    assert_eq!(events_of(s, "prj_LR").await.len(), 2);

    // Next seq; an event id already recorded is not recorded twice.
    let r2 = rep(
        2,
        5_000,
        vec![
            event("evt_2", 2_000, "gpt-4o-mini", 2),
            event("evt_3", 2_000, "gpt-4o", 3),
        ],
    );
    s.report_lease(&id, &r2, NOW + 3, &POLICY).await.unwrap();
    assert_eq!(
        usage_at(s, "prj_LR", None, NOW + 3).await,
        (5_000, 5_000, 1)
    );
    let evs = events_of(s, "prj_LR").await;
    assert_eq!(
        evs.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["evt_1", "evt_2", "evt_3"]
    );
    assert!(
        evs.iter()
            .all(|e| e.project_id == "prj_LR" && e.token_id == "tok_R"),
        "events are stored under the lease's project and token"
    );
    // An older seq changes nothing either.
    s.report_lease(
        &id,
        &rep(1, 9_999, vec![event("evt_old", 1, "m", 1)]),
        NOW + 3,
        &POLICY,
    )
    .await
    .unwrap();
    assert_eq!(
        usage_at(s, "prj_LR", None, NOW + 3).await,
        (5_000, 5_000, 1)
    );
    assert_eq!(events_of(s, "prj_LR").await.len(), 3);

    // Extend: alone on the budget → what is asked; the expiry moves.
    let e = s
        .extend_lease(&id, Money(5_000), NOW + 4, &POLICY)
        .await
        .unwrap();
    assert_eq!(
        (e.lease_id.as_str(), e.granted, e.expires_at, e.denied),
        (id.as_str(), Money(5_000), NOW + 64, None)
    );
    assert_eq!(
        usage_at(s, "prj_LR", None, NOW + 4).await,
        (5_000, 10_000, 1)
    );

    // Spend beyond the grant (15000) is recorded and reduces what is left.
    let ack = s
        .report_lease(&id, &rep(3, 16_000, vec![]), NOW + 5, &POLICY)
        .await
        .unwrap();
    assert_eq!(
        (ack.lease_remaining, ack.budget_remaining),
        (Money::ZERO, Money(84_000))
    );
    assert_eq!(usage_at(s, "prj_LR", None, NOW + 5).await, (16_000, 0, 1));
    // Extending an overspent lease backs the new grant in full.
    let e = s
        .extend_lease(&id, Money(1_000), NOW + 6, &POLICY)
        .await
        .unwrap();
    assert_eq!(e.granted, Money(1_000));
    assert_eq!(
        usage_at(s, "prj_LR", None, NOW + 6).await,
        (16_000, 1_000, 1)
    );

    // Release: final report, the unspent part goes back.
    let fin = rep(4, 16_500, vec![event("evt_4", 500, "gpt-4o", 4)]);
    let ack = s.release_lease(&id, &fin, NOW + 7, &POLICY).await.unwrap();
    assert_eq!(
        (ack.lease_remaining, ack.budget_remaining),
        (Money::ZERO, Money(83_500))
    );
    assert_eq!(usage_at(s, "prj_LR", None, NOW + 7).await, (16_500, 0, 0));
    assert_eq!(
        s.get_lease(&id).await.unwrap().unwrap().state,
        LeaseState::Released
    );
    // A replayed release (same seq) changes nothing and still answers.
    let again = s.release_lease(&id, &fin, NOW + 8, &POLICY).await.unwrap();
    assert_eq!(again, ack);
    assert_eq!(usage_at(s, "prj_LR", None, NOW + 8).await, (16_500, 0, 0));
    assert_eq!(events_of(s, "prj_LR").await.len(), 4);
    // A released lease cannot be extended; unknown leases are not found.
    for e in [
        s.extend_lease(&id, Money(1), NOW + 9, &POLICY)
            .await
            .unwrap_err(),
        s.extend_lease("lse_nope", Money(1), NOW + 9, &POLICY)
            .await
            .unwrap_err(),
        s.report_lease("lse_nope", &fin, NOW + 9, &POLICY)
            .await
            .unwrap_err(),
        s.release_lease("lse_nope", &fin, NOW + 9, &POLICY)
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
    }
    assert!(s.get_lease("lse_nope").await.unwrap().is_none());
    // Σ usage events == spent.
    let sum: u64 = events_of(s, "prj_LR").await.iter().map(|e| e.cost.0).sum();
    assert_eq!(sum, 5_500, "{sum}");

    // A revoked token: the ack says so, spend is still recorded, no extension.
    let id2 = new_lease();
    s.grant_lease(&ask("tok_R", 1_000), &id2, NOW + 10, &POLICY)
        .await
        .unwrap();
    s.revoke_token("tok_R", NOW + 11).await.unwrap();
    let ack = s
        .report_lease(&id2, &rep(1, 200, vec![]), NOW + 12, &POLICY)
        .await
        .unwrap();
    assert!(ack.revoked);
    let e = s
        .extend_lease(&id2, Money(1_000), NOW + 12, &POLICY)
        .await
        .unwrap();
    assert_eq!(
        (e.denied, e.granted),
        (Some(Denial::TokenRevoked), Money::ZERO)
    );
    s.release_lease(&id2, &rep(2, 200, vec![]), NOW + 13, &POLICY)
        .await
        .unwrap();
    assert_eq!(usage_at(s, "prj_LR", None, NOW + 13).await, (16_700, 0, 0));
}

async fn leases_expire_and_late_reports(s: &dyn Store) {
    setup(
        s,
        budget_project("prj_LX", Some(50_000), Period::Total),
        &[budget_token("tok_X", "prj_LX", None, Period::Total)],
    )
    .await;
    let t0 = NOW + 1_000;
    // Leases of the earlier steps expire first, so the counts below are this project's.
    s.expire_leases(t0 - 1, &POLICY).await.unwrap();
    let id = new_lease();
    s.grant_lease(&ask("tok_X", 10_000), &id, t0, &POLICY)
        .await
        .unwrap();
    s.report_lease(
        &id,
        &rep(1, 2_000, vec![event("evt_x1", 2_000, "m", 1)]),
        t0,
        &POLICY,
    )
    .await
    .unwrap();
    assert_eq!(s.expire_leases(t0 + 59, &POLICY).await.unwrap().expired, 0);
    assert_eq!(
        usage_at(s, "prj_LX", None, t0 + 59).await,
        (2_000, 8_000, 1)
    );

    // Past expires_at without a final report: fully spent.
    assert_eq!(s.expire_leases(t0 + 60, &POLICY).await.unwrap().expired, 1);
    assert_eq!(usage_at(s, "prj_LX", None, t0 + 60).await, (10_000, 0, 0));
    assert_eq!(
        usage_at(s, "prj_LX", Some("tok_X"), t0 + 60).await,
        (10_000, 0, 0)
    );
    let l = s.get_lease(&id).await.unwrap().unwrap();
    assert_eq!(
        (l.state, l.expiry_charge),
        (LeaseState::Expired, Money(8_000))
    );
    assert_eq!(
        s.expire_leases(t0 + 61, &POLICY).await.unwrap().expired,
        0,
        "once"
    );

    // A late report: the proxy is alive and still holds the lease; the charge moves back to
    // outstanding and the real spend is recorded.
    let late = rep(2, 3_000, vec![event("evt_x2", 1_000, "m", 2)]);
    let ack = s.report_lease(&id, &late, t0 + 70, &POLICY).await.unwrap();
    assert_eq!(
        (ack.lease_remaining, ack.budget_remaining),
        (Money(7_000), Money(40_000))
    );
    assert_eq!(
        usage_at(s, "prj_LX", None, t0 + 70).await,
        (3_000, 7_000, 1)
    );
    assert_eq!(
        s.get_lease(&id).await.unwrap().unwrap().state,
        LeaseState::Open
    );
    s.report_lease(&id, &late, t0 + 71, &POLICY).await.unwrap();
    assert_eq!(
        usage_at(s, "prj_LX", None, t0 + 71).await,
        (3_000, 7_000, 1),
        "idempotent"
    );

    // Expires again (the report pushed the expiry to t0 + 130), then the final report
    // arrives late: corrected to the real spend, the rest returned.
    assert_eq!(s.expire_leases(t0 + 129, &POLICY).await.unwrap().expired, 0);
    assert_eq!(s.expire_leases(t0 + 130, &POLICY).await.unwrap().expired, 1);
    assert_eq!(usage_at(s, "prj_LX", None, t0 + 130).await, (10_000, 0, 0));
    let fin = rep(3, 3_500, vec![event("evt_x3", 500, "m", 3)]);
    let ack = s.release_lease(&id, &fin, t0 + 200, &POLICY).await.unwrap();
    assert_eq!(
        (ack.lease_remaining, ack.budget_remaining),
        (Money::ZERO, Money(46_500))
    );
    assert_eq!(usage_at(s, "prj_LX", None, t0 + 200).await, (3_500, 0, 0));
    s.release_lease(&id, &fin, t0 + 201, &POLICY).await.unwrap();
    assert_eq!(
        usage_at(s, "prj_LX", None, t0 + 201).await,
        (3_500, 0, 0),
        "idempotent"
    );
    let sum: u64 = events_of(s, "prj_LX").await.iter().map(|e| e.cost.0).sum();
    assert_eq!(sum, 3_500, "Σ usage events == spent");

    // An expired lease that is extended comes back to life with more money.
    let id2 = new_lease();
    s.grant_lease(&ask("tok_X", 5_000), &id2, t0 + 300, &POLICY)
        .await
        .unwrap();
    assert_eq!(s.expire_leases(t0 + 360, &POLICY).await.unwrap().expired, 1);
    assert_eq!(usage_at(s, "prj_LX", None, t0 + 360).await, (8_500, 0, 0));
    let e = s
        .extend_lease(&id2, Money(1_000), t0 + 361, &POLICY)
        .await
        .unwrap();
    assert_eq!(
        (e.granted, e.denied, e.expires_at),
        (Money(1_000), None, t0 + 421)
    );
    assert_eq!(
        usage_at(s, "prj_LX", None, t0 + 361).await,
        (3_500, 6_000, 1)
    );
    // A release without a report returns everything.
    s.release_lease(&id2, &rep(0, 0, vec![]), t0 + 362, &POLICY)
        .await
        .unwrap();
    assert_eq!(usage_at(s, "prj_LX", None, t0 + 362).await, (3_500, 0, 0));

    // Tombstones go after the retention; then the lease is unknown.
    let stats = s.expire_leases(t0 + 362 + 3_600, &POLICY).await.unwrap();
    assert!(stats.purged >= 2, "{stats:?}");
    assert!(s.get_lease(&id).await.unwrap().is_none());
    let e = s
        .report_lease(&id, &rep(9, 1, vec![]), t0 + 4_000, &POLICY)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
    assert_eq!(usage_at(s, "prj_LX", None, t0 + 4_000).await, (3_500, 0, 0));
}

async fn leases_charge_token_and_project(s: &dyn Store) {
    setup(
        s,
        budget_project("prj_LT", Some(100_000), Period::Total),
        &[
            budget_token("tok_T_own", "prj_LT", Some(3_000), Period::Total),
            budget_token("tok_T_free", "prj_LT", None, Period::Total),
        ],
    )
    .await;
    let id = new_lease();
    let g = s
        .grant_lease(&ask("tok_T_own", 10_000), &id, NOW, &POLICY)
        .await
        .unwrap();
    assert_eq!(
        (g.granted, g.budget_remaining),
        (Money(3_000), Money::ZERO),
        "the token's budget is the tighter one"
    );
    assert_eq!(usage_at(s, "prj_LT", None, NOW).await, (0, 3_000, 1));
    assert_eq!(
        usage_at(s, "prj_LT", Some("tok_T_own"), NOW).await,
        (0, 3_000, 1)
    );
    let denied = grant(s, "tok_T_own", 10_000, NOW).await;
    assert_eq!(denied.denied, Some(Denial::BudgetExceeded));
    s.release_lease(&id, &rep(1, 2_500, vec![]), NOW + 1, &POLICY)
        .await
        .unwrap();
    assert_eq!(usage_at(s, "prj_LT", None, NOW + 1).await, (2_500, 0, 0));
    assert_eq!(
        usage_at(s, "prj_LT", Some("tok_T_own"), NOW + 1).await,
        (2_500, 0, 0)
    );
    let g = grant(s, "tok_T_own", 10_000, NOW + 2).await;
    assert_eq!(g.granted, Money(500), "what is left of the token's budget");
    // The other token draws on the project alone; both charge the project.
    let g2 = grant(s, "tok_T_free", 200_000, NOW + 2).await;
    assert_eq!(g2.granted, Money((100_000 - 2_500 - 500) / 3));
    assert_eq!(
        usage_at(s, "prj_LT", Some("tok_T_free"), NOW + 2).await,
        (0, g2.granted.0, 1)
    );
    assert_eq!(
        usage_at(s, "prj_LT", None, NOW + 2).await,
        (2_500, 500 + g2.granted.0, 2)
    );
    // A project budget smaller than a token's is the binding one.
    setup(
        s,
        budget_project("prj_LT2", Some(1_000), Period::Total),
        &[budget_token(
            "tok_T2",
            "prj_LT2",
            Some(50_000),
            Period::Total,
        )],
    )
    .await;
    assert_eq!(grant(s, "tok_T2", 10_000, NOW).await.granted, Money(1_000));
    assert_eq!(
        grant(s, "tok_T2", 10_000, NOW).await.denied,
        Some(Denial::BudgetExceeded)
    );
}

/// 2026-11-29T00:00:00Z.
const MIDNIGHT: u64 = 1_795_910_400;

async fn leases_daily_rollover_at_utc_midnight(s: &dyn Store) {
    setup(
        s,
        budget_project("prj_LD", Some(1_000), Period::Daily),
        &[budget_token("tok_D", "prj_LD", None, Period::Total)],
    )
    .await;
    let before = MIDNIGHT - 10;
    let id = new_lease();
    let g = s
        .grant_lease(&ask("tok_D", 5_000), &id, before, &POLICY)
        .await
        .unwrap();
    assert_eq!(g.granted, Money(1_000));
    s.release_lease(&id, &rep(1, 1_000, vec![]), before + 1, &POLICY)
        .await
        .unwrap();
    assert_eq!(
        grant(s, "tok_D", 5_000, MIDNIGHT - 1).await.denied,
        Some(Denial::BudgetExceeded)
    );
    assert_eq!(
        usage_at(s, "prj_LD", None, MIDNIGHT - 1).await,
        (1_000, 0, 0)
    );

    // A new UTC day: a fresh budget; yesterday's spend stays yesterday's.
    assert_eq!(usage_at(s, "prj_LD", None, MIDNIGHT).await, (0, 0, 0));
    let id2 = new_lease();
    let g = s
        .grant_lease(&ask("tok_D", 600), &id2, MIDNIGHT, &POLICY)
        .await
        .unwrap();
    assert_eq!((g.granted, g.budget_remaining), (Money(600), Money(400)));
    assert_eq!(usage_at(s, "prj_LD", None, MIDNIGHT - 1).await.0, 1_000);
    // A lease open across the next midnight still counts against the new day.
    let next = MIDNIGHT + 86_400;
    s.report_lease(&id2, &rep(1, 100, vec![]), next - 5, &POLICY)
        .await
        .unwrap();
    assert_eq!(usage_at(s, "prj_LD", None, next - 5).await, (100, 500, 1));
    assert_eq!(usage_at(s, "prj_LD", None, next).await, (0, 500, 1));
    let g = grant(s, "tok_D", 5_000, next).await;
    assert_eq!(
        g.granted,
        Money(500 / 3),
        "1000 − 500 outstanding, shared with the open lease"
    );
}

async fn leases_monthly_period(s: &dyn Store) {
    // 2026-11-30T23:59:00Z → 2026-12-01.
    let end_of_month = 1_796_083_140;
    setup(
        s,
        budget_project("prj_LM", Some(5_000), Period::Monthly),
        &[budget_token("tok_M", "prj_LM", Some(2_000), Period::Daily)],
    )
    .await;
    let id = new_lease();
    s.grant_lease(&ask("tok_M", 2_000), &id, end_of_month, &POLICY)
        .await
        .unwrap();
    s.release_lease(&id, &rep(1, 2_000, vec![]), end_of_month, &POLICY)
        .await
        .unwrap();
    assert_eq!(
        grant(s, "tok_M", 1_000, end_of_month).await.denied,
        Some(Denial::BudgetExceeded),
        "the token's day is spent"
    );
    let next_day = end_of_month + 60;
    assert_eq!(
        usage_at(s, "prj_LM", None, next_day).await.0,
        0,
        "a new month"
    );
    assert_eq!(
        usage_at(s, "prj_LM", Some("tok_M"), next_day).await.0,
        0,
        "a new day"
    );
    assert_eq!(
        grant(s, "tok_M", 1_000, next_day).await.granted,
        Money(1_000)
    );
}

async fn usage_listing(s: &dyn Store) {
    setup(
        s,
        budget_project("prj_LU1", None, Period::Total),
        &[
            budget_token("tok_U1", "prj_LU1", None, Period::Total),
            budget_token("tok_U1b", "prj_LU1", None, Period::Total),
        ],
    )
    .await;
    setup(
        s,
        budget_project("prj_LU2", None, Period::Total),
        &[budget_token("tok_U2", "prj_LU2", None, Period::Total)],
    )
    .await;
    let a = grant(s, "tok_U1", 1_000_000, NOW).await.lease_id;
    let b = grant(s, "tok_U1b", 1_000_000, NOW).await.lease_id;
    let c = grant(s, "tok_U2", 1_000_000, NOW).await.lease_id;
    let evs = |prefix: &str, from: u64, n: u64, model: &str| -> Vec<UsageEvent> {
        (from..from + n)
            .map(|i| event(&format!("evt_{prefix}{i:03}"), i, model, 1_000 * i))
            .collect()
    };
    s.report_lease(&a, &rep(1, 1, evs("a", 0, 5, "gpt-4o")), NOW, &POLICY)
        .await
        .unwrap();
    s.report_lease(&c, &rep(1, 1, evs("c", 0, 3, "gpt-4o")), NOW, &POLICY)
        .await
        .unwrap();
    s.report_lease(&b, &rep(1, 1, evs("b", 5, 4, "gpt-4o-mini")), NOW, &POLICY)
        .await
        .unwrap();
    s.report_lease(&a, &rep(2, 2, evs("a", 9, 3, "gpt-4o-mini")), NOW, &POLICY)
        .await
        .unwrap();

    // One project, pages of 5, in the order recorded.
    let f = UsageFilter {
        project: Some("prj_LU1".into()),
        ..Default::default()
    };
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let p = s.list_usage(&f, &page(5, cursor)).await.unwrap();
        assert!(p.items.len() <= 5);
        ids.extend(p.items.into_iter().map(|e| e.id));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let want: Vec<String> = [
        "a000", "a001", "a002", "a003", "a004", "b005", "b006", "b007", "b008", "a009", "a010",
        "a011",
    ]
    .iter()
    .map(|s| format!("evt_{s}"))
    .collect();
    assert_eq!(ids, want);

    // Filters: token, model, time (at_ms; since inclusive, until exclusive).
    let count = |f: UsageFilter| async move {
        let mut n = 0;
        let mut cursor = None;
        loop {
            let p = s.list_usage(&f, &page(2, cursor)).await.unwrap();
            n += p.items.len();
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => return n,
            }
        }
    };
    let base = || UsageFilter {
        project: Some("prj_LU1".into()),
        ..Default::default()
    };
    assert_eq!(
        count(UsageFilter {
            token: Some("tok_U1b".into()),
            ..base()
        })
        .await,
        4
    );
    assert_eq!(
        count(UsageFilter {
            model: Some("gpt-4o-mini".into()),
            ..base()
        })
        .await,
        7
    );
    assert_eq!(
        count(UsageFilter {
            since_ms: Some(5_000),
            until_ms: Some(10_000),
            ..base()
        })
        .await,
        5
    );
    assert_eq!(
        count(UsageFilter {
            token: Some("tok_U2".into()),
            ..base()
        })
        .await,
        0
    );
    // Every project: all of them, each once.
    let mut all = Vec::new();
    let mut cursor = None;
    let only_u = |e: &UsageEvent| e.project_id.starts_with("prj_LU");
    loop {
        let p = s
            .list_usage(&UsageFilter::default(), &page(4, cursor))
            .await
            .unwrap();
        all.extend(p.items.into_iter().filter(only_u).map(|e| e.id));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(all.len(), 15);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 15);
}

async fn leases_concurrent_grants_never_exceed_the_limit(s: Arc<dyn Store>) {
    let limit = 200_000u64;
    let tokens: Vec<String> = (0..4).map(|i| format!("tok_C{i}")).collect();
    let toks: Vec<TokenRecord> = tokens
        .iter()
        .map(|t| budget_token(t, "prj_LC", None, Period::Total))
        .collect();
    setup(
        &*s,
        budget_project("prj_LC", Some(limit), Period::Total),
        &toks,
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..48u64 {
        let s = s.clone();
        let token = tokens[(i % 4) as usize].clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let requested = 1_000 + (i * 7_919) % 20_000;
                let g = grant(&*s, &token, requested, NOW).await;
                if g.denied.is_some() {
                    assert_eq!(g.denied, Some(Denial::BudgetExceeded));
                    return mine;
                }
                assert!(g.granted.0 > 0 && g.granted.0 <= requested);
                mine.push((g.lease_id, g.granted.0));
            }
        }));
    }
    let mut leases = Vec::new();
    for t in tasks {
        leases.extend(t.await.unwrap());
    }
    let total: u64 = leases.iter().map(|(_, g)| g).sum();
    assert_eq!(total, limit, "granted in total");
    assert_eq!(
        usage_at(&*s, "prj_LC", None, NOW).await,
        (0, limit, leases.len() as u64)
    );

    // Concurrent final reports: half of every lease spent, the rest back.
    let mut tasks = Vec::new();
    for (id, g) in leases.clone() {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let ev = event(&format!("evt_{id}"), g / 2, "m", 1);
            s.release_lease(&id, &rep(1, g / 2, vec![ev]), NOW + 1, &POLICY)
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let spent: u64 = leases.iter().map(|(_, g)| g / 2).sum();
    assert_eq!(usage_at(&*s, "prj_LC", None, NOW + 1).await, (spent, 0, 0));
    let sum: u64 = events_of(&*s, "prj_LC")
        .await
        .iter()
        .map(|e| e.cost.0)
        .sum();
    assert_eq!(sum, spent);
}

async fn leases_gone_with_their_project(s: &dyn Store) {
    setup(
        s,
        budget_project("prj_LZ", Some(10_000), Period::Total),
        &[budget_token("tok_Z", "prj_LZ", None, Period::Total)],
    )
    .await;
    let id = grant(s, "tok_Z", 1_000, NOW).await.lease_id;
    s.report_lease(
        &id,
        &rep(1, 10, vec![event("evt_z", 10, "m", 1)]),
        NOW,
        &POLICY,
    )
    .await
    .unwrap();
    s.delete_project("prj_LZ", NOW).await.unwrap();
    assert!(s.get_lease(&id).await.unwrap().is_none());
    let e = s
        .report_lease(&id, &rep(2, 20, vec![]), NOW, &POLICY)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
    assert!(events_of(s, "prj_LZ").await.is_empty());
    assert_eq!(usage_at(s, "prj_LZ", None, NOW).await, (0, 0, 0));
}
