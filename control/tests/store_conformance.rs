//! Store conformance suite (acceptance 6): one generic async suite, run against the embedded
//! store (redb in a temp dir) and the Redis store (a private redis-server from the testkit).
//! Every behaviour the service relies on is asserted here, so both backends are
//! interchangeable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use iron_control::model::{
    ApiKeyRecord, AuditEvent, AuditFilter, Budget, PageRequest, Period, PriceOverride, Project,
    Provider, Role, SigningKeyRecord, SigningKeyState, TokenRecord,
};
use iron_control::store::embedded::EmbeddedStore;
use iron_control::store::redis::RedisStore;
use iron_control::store::{Store, StoreError};
use iron_core::Money;
use iron_core::token::SigningKey;
use iron_core::transit::MasterKey;
use iron_core::wire::{ControlEvent, ProviderKind};

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
    event_log(&*store).await;
    budgets_and_prices(&*store).await;
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
    let u = s.budget_usage("prj_BU", None).await.unwrap();
    assert_eq!((u.spent, u.leased), (Money::ZERO, Money::ZERO));
    assert_eq!(
        s.budget_usage("prj_BU", Some("tok_x")).await.unwrap().spent,
        Money::ZERO
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
    assert!(keys.contains(&"iron:{prj_A}:token:tok_1".to_string()));
}
