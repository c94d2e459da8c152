//! The control service's domain layer, between the HTTP handlers (`api`) and the store.
//!
//! Handlers authenticate and parse; [`Service`] methods take validated input, enforce the
//! cross-object rules (unique names, provider references, signing-key lifecycle), seal and
//! open secrets, write to the store, then emit control events and write the audit entry of
//! every mutation. `iron up` calls the same methods (as the `system` actor) to register
//! providers from the environment.
//!
//! Order inside a mutation: validate → store write → event (store log + broadcast) → audit.
//! Nothing is written when validation fails.

mod api_keys;
pub mod breakers;
mod leases;
mod master;
mod projects;
mod providers;
mod ratelimits;
mod signing;
mod snapshot;
pub mod stats;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use iron_core::transit::{MasterKeyring, TransitKey, transit_key};
use iron_core::wire::ControlEvent;

use crate::error::ApiError;
use crate::events::EventBus;
use crate::keys::Secret;
use crate::model::{AuditEvent, LeasePolicy, PageRequest, StoredEvent, new_id, now};
use crate::store::Store;
use zeroize::Zeroizing;

pub use leases::{Clock, ManualClock, SystemClock};
pub use master::{MasterKeyError, RotationReport};
pub use projects::{NewProject, ProjectPatch};
pub use providers::{NewProvider, ProviderUpdate};
pub use tokens::{DEFAULT_TTL, MintRequest};

/// Who performs a mutation, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// API key id, `session:<key id>` for a dashboard session, or `system` for control
    /// itself / `iron up`.
    pub id: String,
    pub request_id: String,
    /// The client address, when the mutation came over HTTP.
    pub source_ip: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Actor {
            id: "system".into(),
            request_id: new_id("req"),
            source_ip: None,
        }
    }
}

/// The control service. Shared by all handlers behind an `Arc`.
pub struct Service {
    pub store: Arc<dyn Store>,
    keyring: Arc<MasterKeyring>,
    transit: TransitKey,
    proxy_secret: Secret,
    pub bus: EventBus,
    /// Accept plain-http and private provider URLs.
    pub allow_private_upstreams: bool,
    /// SSE keep-alive interval.
    pub keepalive: Duration,
    /// Request body limit (for error messages).
    pub max_body_bytes: usize,
    /// Body limit of the lease routes (reports carry usage events).
    pub max_report_bytes: usize,
    /// Lease sizing and lifetimes (`[leases]`).
    pub leases: LeasePolicy,
    /// Time source of the lease protocol (tests inject a [`ManualClock`]).
    pub clock: Arc<dyn Clock>,
    /// Sessions, brute-force limits, trusted proxies (`[security]`).
    pub security: crate::config::SecurityConfig,
    /// Failed-authentication counters (per source IP and key prefix, in memory).
    pub auth_failures: crate::api::middleware::AuthFailures,
    /// HS256 key of dashboard session JWTs, derived from the master key.
    session_key: Zeroizing<[u8; 32]>,
    /// Set when the server stops: event streams end so graceful shutdown can finish.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Usage recorded by this replica, for the dashboards' live updates (`stats`).
    pub usage_ticks: tokio::sync::broadcast::Sender<stats::UsageTick>,
    /// The built Control Panel served at `/` (`[dashboard] dir`).
    pub dashboard_dir: Option<std::path::PathBuf>,
    /// Proxies' circuit-breaker reports (`breakers`).
    pub breakers: breakers::BreakerBoard,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("store", &self.store.kind())
            .field("allow_private_upstreams", &self.allow_private_upstreams)
            .finish_non_exhaustive()
    }
}

/// Page size used when a service method walks a whole collection.
const WALK_PAGE: usize = 500;

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<MasterKeyring>,
        proxy_secret: Secret,
        allow_private_upstreams: bool,
    ) -> Self {
        let transit = transit_key(proxy_secret.expose().as_bytes());
        let session_key = session_key(&keyring);
        let security =
            crate::config::SecurityConfig::with_private_upstreams(allow_private_upstreams);
        Service {
            auth_failures: crate::api::middleware::AuthFailures::new(
                security.auth_failure_limit,
                security.auth_failure_window,
            ),
            security,
            session_key,
            store,
            keyring,
            transit,
            proxy_secret,
            bus: EventBus::new(),
            allow_private_upstreams,
            keepalive: Duration::from_secs(15),
            max_body_bytes: crate::config::DEFAULT_MAX_BODY,
            max_report_bytes: crate::config::DEFAULT_MAX_REPORT,
            leases: LeasePolicy::default(),
            clock: Arc::new(SystemClock),
            shutdown: tokio::sync::watch::channel(false).0,
            usage_ticks: tokio::sync::broadcast::channel(256).0,
            dashboard_dir: None,
            breakers: breakers::BreakerBoard::default(),
        }
    }

    /// Ends every open event stream (called when the server begins shutting down).
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`Service::begin_shutdown`] was called.
    pub fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static + use<> {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Constant-time check of a proxy's bearer secret.
    pub fn is_proxy_secret(&self, presented: &str) -> bool {
        crate::keys::secrets_equal(presented.as_bytes(), self.proxy_secret.expose().as_bytes())
    }

    /// Appends an event to the log and wakes subscribers.
    pub(crate) async fn emit(&self, event: ControlEvent) -> Result<u64, ApiError> {
        let time = now();
        let id = self.store.append_event(&event, time).await?;
        self.bus.publish(StoredEvent { id, time, event });
        Ok(id)
    }

    /// The HS256 key of dashboard sessions.
    pub(crate) fn session_key(&self) -> &[u8] {
        self.session_key.as_slice()
    }

    /// Sets the `[security]` settings (and resizes the failure counters to them).
    pub fn set_security(&mut self, security: crate::config::SecurityConfig) {
        self.auth_failures = crate::api::middleware::AuthFailures::new(
            security.auth_failure_limit,
            security.auth_failure_window,
        );
        self.allow_private_upstreams = security.allow_private_upstreams;
        self.security = security;
    }

    /// Writes the audit entry of a mutation without a before/after image.
    pub(crate) async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        project: Option<&str>,
        details: serde_json::Value,
    ) -> Result<(), ApiError> {
        self.audit_change(
            actor,
            action,
            target,
            project,
            details,
            serde_json::Value::Null,
            serde_json::Value::Null,
        )
        .await
    }

    /// Writes the audit entry of a mutation. `details` must never hold secrets; `before`
    /// and `after` go through [`audit_image`] (secret fields removed) and are `null` when
    /// the object did not exist before / does not exist after.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn audit_change(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        project: Option<&str>,
        details: serde_json::Value,
        before: serde_json::Value,
        after: serde_json::Value,
    ) -> Result<(), ApiError> {
        let event = AuditEvent {
            source_ip: actor.source_ip.clone(),
            before: scrub(before),
            after: scrub(after),
            id: new_id("aud"),
            time: now(),
            actor: actor.id.clone(),
            action: action.into(),
            target: target.into(),
            project: project.map(Into::into),
            request_id: actor.request_id.clone(),
            details,
        };
        self.store.append_audit(&event).await?;
        Ok(())
    }
}

/// HKDF `info` of the dashboard session key (distinct from every other derivation).
const SESSION_INFO: &[u8] = b"iron dashboard session hs256 v1";
/// HKDF salt of the dashboard session key.
const SESSION_SALT: &[u8] = b"iron-master-key";

/// Derives the session JWT key from the current master key, so every replica sharing the
/// master key accepts every session (rotating the master key ends all sessions).
fn session_key(keyring: &MasterKeyring) -> Zeroizing<[u8; 32]> {
    use base64::Engine;
    let b64 = keyring.current().to_base64();
    let ikm = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .unwrap_or_default(),
    );
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(SESSION_SALT), &ikm);
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's output limit: expand cannot fail.
    let _ = hk.expand(SESSION_INFO, okm.as_mut_slice());
    okm
}

/// Field names whose values never enter an audit image.
const SECRET_FIELDS: &[&str] = &["api_key", "key_hash", "seed", "token", "key", "secret"];

/// The audit image of a record: its JSON with secret-bearing fields removed (provider keys
/// stay visible only as `key_hint`).
pub(crate) fn audit_image<T: serde::Serialize>(record: &T) -> serde_json::Value {
    scrub(serde_json::to_value(record).unwrap_or(serde_json::Value::Null))
}

fn scrub(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(k, _)| !SECRET_FIELDS.contains(&k.as_str()) && !k.ends_with("_secret"))
                .map(|(k, v)| (k, scrub(v)))
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(scrub).collect())
        }
        other => other,
    }
}

/// Collects every item of a paged store listing.
pub(crate) async fn walk<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, ApiError>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<crate::model::Page<T>, crate::store::StoreError>>,
{
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = fetch(PageRequest {
            limit: WALK_PAGE,
            cursor,
        })
        .await?;
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// A user-supplied identifier shortened for an error message.
pub fn shown(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(64).collect::<String>())
    }
}
