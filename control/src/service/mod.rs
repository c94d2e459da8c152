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
mod leases;
mod master;
mod projects;
mod providers;
mod signing;
mod snapshot;
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

pub use leases::{Clock, ManualClock, SystemClock};
pub use master::{MasterKeyError, RotationReport};
pub use projects::{NewProject, ProjectPatch};
pub use providers::NewProvider;
pub use tokens::{DEFAULT_TTL, MintRequest};

/// Who performs a mutation, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// API key id, or `system` for control itself / `iron up`.
    pub id: String,
    pub request_id: String,
}

impl Actor {
    pub fn system() -> Self {
        Actor {
            id: "system".into(),
            request_id: new_id("req"),
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
    /// Set when the server stops: event streams end so graceful shutdown can finish.
    shutdown: tokio::sync::watch::Sender<bool>,
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
        Service {
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
        }
    }

    /// Ends every open event stream (called when the server begins shutting down).
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`Service::begin_shutdown`] was called.
    pub fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
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

    /// Writes the audit entry of a mutation. `details` must never hold secrets.
    pub(crate) async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        project: Option<&str>,
        details: serde_json::Value,
    ) -> Result<(), ApiError> {
        let event = AuditEvent {
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
