//! The control store (`design.md` §10): one trait, two implementations.
//!
//! Every request handler and background task reaches persistent state through [`Store`]:
//! - [`embedded::EmbeddedStore`] (redb, one file on disk) — the single-node default used by
//!   `iron up`;
//! - [`redis::RedisStore`] — production; control replicas share it and stay stateless.
//!
//! Both pass the same conformance suite (`tests/store_conformance.rs`). The trait speaks in
//! records from [`crate::model`]; validation, authorization, sealing and event fan-out happen
//! above it (`service`). Mutations that must not interleave (name claims, revocation,
//! event-log appends) are atomic inside each implementation (a redb write transaction or a
//! Lua script).
//!
//! Budgets: [`Store::budget_usage`] reads per-project (and per-token) counters kept in the
//! project's own keyspace (`iron:{prj_…}:budget` in Redis, the `budgets` table in redb). The
//! lease protocol (§6) will add `grant_lease` / `report_lease` / `release_lease` here as one
//! atomic step each against those same counters (a versioned Lua function touching only the
//! project's hash slot; one redb write transaction).

pub mod embedded;
pub mod redis;

use async_trait::async_trait;
use iron_core::wire::ControlEvent;

use crate::model::{
    ApiKeyRecord, AuditEvent, AuditFilter, BudgetUsage, EventBatch, Page, PageRequest,
    PriceOverride, Project, Provider, SigningKeyRecord, Timestamp, TokenRecord,
};

/// Store failures. Messages name the object, never secret values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} `{id}` not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} `{name}` already exists")]
    Conflict { kind: &'static str, name: String },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store error: {0}")]
    Backend(String),
}

impl StoreError {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            kind,
            id: id.into(),
        }
    }

    pub fn conflict(kind: &'static str, name: impl Into<String>) -> Self {
        StoreError::Conflict {
            kind,
            name: name.into(),
        }
    }
}

/// Result of revoking a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub token: TokenRecord,
    /// False when the token was already revoked (no new event is due).
    pub newly_revoked: bool,
}

/// Persistent state of the control service. See the module docs.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `embedded` or `redis` (logs, `/ready`).
    fn kind(&self) -> &'static str;

    /// Succeeds when the backend answers (`/ready`).
    async fn ping(&self) -> Result<(), StoreError>;

    // --- projects -----------------------------------------------------------------------

    /// Creates a project. `Conflict` when the id or the name is taken.
    async fn create_project(&self, project: &Project) -> Result<(), StoreError>;
    async fn get_project(&self, id: &str) -> Result<Option<Project>, StoreError>;
    async fn project_by_name(&self, name: &str) -> Result<Option<Project>, StoreError>;
    /// Projects in id (creation) order.
    async fn list_projects(&self, page: &PageRequest) -> Result<Page<Project>, StoreError>;
    /// Replaces a project (by id). `NotFound`, or `Conflict` when renamed onto a taken name.
    async fn update_project(&self, project: &Project) -> Result<(), StoreError>;
    /// Deletes a project and its tokens; unexpired tokens join the revocation set. Returns
    /// the tokens that were newly revoked.
    async fn delete_project(
        &self,
        id: &str,
        now: Timestamp,
    ) -> Result<Vec<TokenRecord>, StoreError>;

    // --- providers ----------------------------------------------------------------------

    async fn create_provider(&self, provider: &Provider) -> Result<(), StoreError>;
    async fn get_provider(&self, id: &str) -> Result<Option<Provider>, StoreError>;
    async fn provider_by_name(&self, name: &str) -> Result<Option<Provider>, StoreError>;
    /// Providers in id order.
    async fn list_providers(&self, page: &PageRequest) -> Result<Page<Provider>, StoreError>;
    async fn update_provider(&self, provider: &Provider) -> Result<(), StoreError>;
    async fn delete_provider(&self, id: &str) -> Result<(), StoreError>;

    // --- tokens -------------------------------------------------------------------------

    /// Records a minted token. `NotFound` when its project does not exist.
    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Tokens in id order, of one project or of all.
    async fn list_tokens(
        &self,
        project_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<TokenRecord>, StoreError>;
    /// Marks a token revoked (idempotent) and adds it to the revocation set.
    async fn revoke_token(&self, id: &str, now: Timestamp) -> Result<Revocation, StoreError>;
    /// Ids of revoked tokens that have not expired at `now`.
    async fn revoked_tokens(&self, now: Timestamp) -> Result<Vec<String>, StoreError>;

    // --- API keys -----------------------------------------------------------------------

    /// Creates or replaces (by id) an API key. `Conflict` when another key has the same hash.
    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    async fn list_api_keys(&self, page: &PageRequest) -> Result<Page<ApiKeyRecord>, StoreError>;
    async fn delete_api_key(&self, id: &str) -> Result<(), StoreError>;

    // --- signing keys and metadata ------------------------------------------------------

    /// Creates or replaces a signing key by kid.
    async fn put_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError>;
    /// All signing keys, oldest first.
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    // --- audit --------------------------------------------------------------------------

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Matching audit events, newest first.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError>;

    // --- control events -----------------------------------------------------------------

    /// Appends to the event log; returns the new event id (previous + 1). The log keeps the
    /// newest `retain` events (set at construction).
    async fn append_event(&self, event: &ControlEvent, now: Timestamp) -> Result<u64, StoreError>;
    /// Up to `limit` events with id > `after`, oldest first.
    async fn events_since(&self, after: u64, limit: usize) -> Result<EventBatch, StoreError>;
    /// The id of the newest event (0 when none).
    async fn last_event_id(&self) -> Result<u64, StoreError>;

    // --- budgets and pricing ------------------------------------------------------------

    /// Spent and leased amounts of a project, or of one of its tokens, in the current period.
    async fn budget_usage(
        &self,
        project_id: &str,
        token_id: Option<&str>,
    ) -> Result<BudgetUsage, StoreError>;
    async fn put_price(&self, price: &PriceOverride) -> Result<(), StoreError>;
    /// Price overrides sorted by model.
    async fn list_prices(&self) -> Result<Vec<PriceOverride>, StoreError>;
}

/// Default number of control events kept for `Last-Event-ID` replay.
pub const DEFAULT_EVENT_RETENTION: usize = 10_000;

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("encode: {e}")))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
