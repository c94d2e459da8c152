//! The control store (`design.md` §10): one trait, two implementations.
//!
//! Every request handler and background task reaches persistent state through [`Store`]:
//! - [`embedded::EmbeddedStore`] (redb, one file on disk) — the single-node default used by
//!   `iron up`;
//! - [`redis::RedisStore`] — production, on one Redis endpoint or a Redis Cluster
//!   (`redis+cluster://…`); control replicas share it and stay stateless.
//!
//! Both pass the same conformance suite (`tests/store_conformance.rs`). The trait speaks in
//! records from [`crate::model`]; validation, authorization, sealing and event fan-out happen
//! above it (`service`). Mutations that must not interleave (name claims, revocation,
//! event-log appends) are atomic inside each implementation (a redb write transaction or a
//! Lua script).
//!
//! Budgets and leases (§6): every lease operation — [`Store::grant_lease`],
//! [`Store::extend_lease`], [`Store::report_lease`], [`Store::release_lease`],
//! [`Store::expire_leases`] — is one atomic step (a versioned Lua script touching only the
//! project's hash slot; one redb write transaction) against per-project and per-token
//! counters kept in the project's own keyspace:
//!
//! - `spent` per budget period key ([`crate::model::period_key`]: `total`, `d2026-11-28`,
//!   `m2026-11`, UTC) — a new day or month starts at zero;
//! - `outstanding` = Σ over open leases of `granted − spent` (never negative per lease);
//! - the number of open leases (for the adaptive size).
//!
//! The rules, identical in both implementations (the conformance suite holds them):
//!
//! - **grant / extend**: `granted = min(requested, share, remaining)` for the project budget
//!   and for the token's own budget when it has one, where `remaining = limit − spent −
//!   outstanding` and `share = max(min_lease, ⌊remaining / (2 × other_open_leases + 1)⌋)`.
//!   Unlimited budgets take no part (both unlimited → `requested`). Nothing left →
//!   `denied: budget_exceeded` and no lease. Revoked or expired token → `token_revoked`;
//!   unknown token → `unknown_token`. An extension of an overspent lease first absorbs the
//!   overspend into `granted`, so everything it grants is backed.
//! - **report** (`seq`, cumulative `spent`, events): applied only when `seq` is above the last
//!   applied one (a replay returns the current ack and changes nothing); moves `spent −
//!   previous spent` from outstanding to spent on the project and the token (spend beyond the
//!   grant is recorded too), appends the events to the usage log (skipping event ids already
//!   recorded), pushes `expires_at`.
//! - **release**: a report, then the lease's unspent part goes back to the budget and the
//!   lease becomes a tombstone; a replayed release changes nothing.
//! - **expiry** (sweep): an open lease past `expires_at` counts as fully spent (its
//!   outstanding part moves to spent). A later report on it revives it (the charge moves back
//!   to outstanding: the proxy that reports still holds that money) and applies; a later
//!   release corrects it to the real spend and returns the rest.
//! - Tombstones (expired and released leases) and recorded event ids are kept for
//!   `retain_secs`; after that a report on the lease is a 404.
//!
//! Rate limits (RPM/TPM, `docs/decisions/0003-rate-limits.md`): [`Store::rate_take`] keeps
//! one sliding window of 60 one-second buckets per `(scope, kind)`; the embedded store keeps
//! them in memory (a restart forgets at most one minute of history), the Redis store in
//! `iron:{prj_…}:rl:…` hashes with a two-minute TTL, changed by one versioned Lua script.

pub mod embedded;
mod embedded_ledger;
pub mod redis;
pub mod redis_ledger;
pub mod redis_ratelimit;
mod rules;

use async_trait::async_trait;
use iron_core::Money;
use iron_core::lease::{LeaseGrant, LeaseReport, LeaseRequest, ReportAck, UsageEvent};
use iron_core::wire::ControlEvent;

use crate::model::{
    ApiKeyRecord, AuditEvent, AuditFilter, BudgetUsage, EventBatch, LeasePolicy, LeaseRecord, Page,
    PageRequest, PriceOverride, Project, Provider, SigningKeyRecord, SweepStats, Timestamp,
    TokenRecord, UsageFilter,
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

    // --- dashboard sessions -------------------------------------------------------------

    /// Refuses the session `jti` from now on; the entry may be dropped after `expires_at`
    /// (when the session would have expired anyway).
    async fn revoke_session(&self, jti: &str, expires_at: Timestamp) -> Result<(), StoreError>;
    /// Whether `jti` was revoked (and has not expired yet).
    async fn session_revoked(&self, jti: &str, now: Timestamp) -> Result<bool, StoreError>;
    /// The API key with this id (sessions re-check that their key still exists).
    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    // --- control events -----------------------------------------------------------------

    /// Appends to the event log; returns the new event id (previous + 1). The log keeps the
    /// newest `retain` events (set at construction).
    async fn append_event(&self, event: &ControlEvent, now: Timestamp) -> Result<u64, StoreError>;
    /// Up to `limit` events with id > `after`, oldest first.
    async fn events_since(&self, after: u64, limit: usize) -> Result<EventBatch, StoreError>;
    /// The id of the newest event (0 when none).
    async fn last_event_id(&self) -> Result<u64, StoreError>;

    // --- budgets, leases, usage ----------------------------------------------------------

    /// Spent (in the period containing `now`), leased (outstanding) and open leases of a
    /// project, or of one of its tokens. Unknown project or token → zeros.
    async fn budget_usage(
        &self,
        project_id: &str,
        token_id: Option<&str>,
        now: Timestamp,
    ) -> Result<BudgetUsage, StoreError>;

    /// Grants a new lease `lease_id` to `req.token_id` (see the module docs for the rule).
    /// A denial is a `LeaseGrant` with `denied` set, `granted` 0, and no lease created.
    async fn grant_lease(
        &self,
        req: &LeaseRequest,
        lease_id: &str,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<LeaseGrant, StoreError>;

    /// Grants more on an open (or expired: revived) lease and pushes its expiry.
    /// `NotFound` for unknown or released leases.
    async fn extend_lease(
        &self,
        lease_id: &str,
        requested: Money,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<LeaseGrant, StoreError>;

    /// Applies a report (idempotent by `seq`). `NotFound` for unknown leases.
    async fn report_lease(
        &self,
        lease_id: &str,
        report: &LeaseReport,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<ReportAck, StoreError>;

    /// Applies the final report (idempotent by `seq`) and returns the unspent part; the
    /// lease becomes a tombstone. Releasing a released lease changes nothing.
    async fn release_lease(
        &self,
        lease_id: &str,
        report: &LeaseReport,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<ReportAck, StoreError>;

    /// Expires open leases past `expires_at` (counted as fully spent) and drops tombstones
    /// and event ids older than the retention. Safe to run from several replicas at once.
    async fn expire_leases(
        &self,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<SweepStats, StoreError>;

    async fn get_lease(&self, lease_id: &str) -> Result<Option<LeaseRecord>, StoreError>;

    /// Recorded usage events, per project in the order they were recorded.
    async fn list_usage(
        &self,
        filter: &UsageFilter,
        page: &PageRequest,
    ) -> Result<Page<UsageEvent>, StoreError>;
    async fn put_price(&self, price: &PriceOverride) -> Result<(), StoreError>;
    /// Price overrides sorted by model.
    async fn list_prices(&self) -> Result<Vec<PriceOverride>, StoreError>;

    // --- rate limits ---------------------------------------------------------------------

    /// Applies rate-limit takes at `now_ms` (unix ms), one grant per take in order, each
    /// atomic on its `(scope, kind)` sliding window ([`iron_core::ratelimit::Window::take`]
    /// is the rule; the Redis store runs the same rule in Lua). Every take names its project
    /// (checked by the service).
    async fn rate_take(
        &self,
        takes: &[iron_core::ratelimit::RateTake],
        now_ms: u64,
    ) -> Result<Vec<iron_core::ratelimit::RateGrant>, StoreError>;
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
