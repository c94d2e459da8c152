//! Stored entities (`design.md` §5): what the [`Store`](crate::store::Store) persists.
//!
//! These are storage records, not API shapes: the REST layer (`api`) turns them into views
//! (masking provider keys, formatting money and times). Records never hold a secret in
//! plaintext: provider keys and signing-key seeds are [`SealedSecret`]s under the master key,
//! API keys are SHA-256 hashes, IC tokens are not stored at all (only their id and metadata).
//! Times are unix seconds.

use iron_core::Money;
use iron_core::token::PublicKey;
use iron_core::wire::{ControlEvent, ProviderKind, SealedSecret};
use serde::{Deserialize, Serialize};

/// Unix seconds.
pub type Timestamp = u64;

/// The period over which a budget limit applies.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    #[default]
    Total,
    Daily,
    Monthly,
}

impl Period {
    pub const fn as_str(self) -> &'static str {
        match self {
            Period::Total => "total",
            Period::Daily => "daily",
            Period::Monthly => "monthly",
        }
    }
}

/// A spending limit. `limit: None` = unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub limit: Option<Money>,
    pub period: Period,
}

/// A project: the unit that owns tokens and budgets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// `prj_<ulid>`.
    pub id: String,
    pub name: String,
    pub budget: Budget,
    /// Provider ids this project may use; empty = all.
    pub providers: Vec<String>,
    /// Glob patterns of allowed models; empty = all.
    pub allowed_models: Vec<String>,
    /// PII policy; `None` = the default (redact every type both ways, reversibly).
    #[serde(default)]
    pub pii: Option<iron_core::pii::PiiPolicy>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A provider deployment with its key sealed under the master key (AAD = provider id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    /// `prv_<ulid>`.
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub models: Vec<String>,
    pub priority: i32,
    pub api_key: SealedSecret,
    /// The masked key shown in listings (`sk-…abc`), computed once at write time.
    pub key_hint: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Metadata of a minted IC token. The token itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// `tok_<ulid>` (the JWT `sub`).
    pub id: String,
    pub project_id: String,
    pub name: Option<String>,
    /// The token's own budget, on top of the project's.
    pub budget: Budget,
    /// The signing key that signed it.
    pub kid: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// What an API key may do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Viewer,
    /// Only the project with this id.
    Project(String),
}

impl Role {
    /// Parses `admin`, `viewer` or `project:<id-or-name>` (the project part is not resolved).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => s
                .strip_prefix("project:")
                .filter(|p| !p.is_empty())
                .map(|p| Role::Project(p.to_owned())),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Viewer => f.write_str("viewer"),
            Role::Project(p) => write!(f, "project:{p}"),
        }
    }
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Role::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("role must be admin, viewer or project:<id>"))
    }
}

/// An API key for the REST API; only the SHA-256 of the key is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// `ak_<ulid>` (or `ak_bootstrap` for the configured bootstrap key).
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Lowercase hex SHA-256 of the key.
    pub key_hash: String,
    pub created_at: Timestamp,
}

/// Lifecycle of a signing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SigningKeyState {
    /// Signs new tokens (exactly one at a time) and verifies.
    Active,
    /// Verifies tokens it signed earlier; signs nothing new.
    Verify,
    /// Neither: its tokens are no longer accepted.
    Retired,
}

/// An Ed25519 signing key: public part in clear, seed sealed under the master key
/// (AAD = kid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub public: PublicKey,
    pub seed: SealedSecret,
    pub state: SigningKeyState,
    pub created_at: Timestamp,
}

/// One audit entry. Never holds secrets: `details` carries names and amounts only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// `aud_<ulid>`.
    pub id: String,
    pub time: Timestamp,
    /// API key id of the caller (or `system`).
    pub actor: String,
    /// e.g. `project.create`, `token.revoke`.
    pub action: String,
    /// The id of the object acted on.
    pub target: String,
    /// The project concerned, when there is one.
    pub project: Option<String>,
    pub request_id: String,
    #[serde(default)]
    pub details: serde_json::Value,
}

/// Audit listing filters (all optional, combined with AND).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub project: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == e.actor)
            && self.action.as_ref().is_none_or(|a| *a == e.action)
            && self.target.as_ref().is_none_or(|t| *t == e.target)
            && self
                .project
                .as_ref()
                .is_none_or(|p| e.project.as_ref() == Some(p))
            && self.since.is_none_or(|s| e.time >= s)
            && self.until.is_none_or(|u| e.time < u)
    }
}

/// A control event with its position in the event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Monotonic, starts at 1; the SSE `id:` and the snapshot `version`.
    pub id: u64,
    pub time: Timestamp,
    pub event: ControlEvent,
}

/// Events after a position, as returned by [`Store::events_since`](crate::store::Store::events_since).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventBatch {
    pub events: Vec<StoredEvent>,
    /// The requested position is older than the retained log (or ahead of it): some events
    /// cannot be replayed and the reader must refetch the snapshot.
    pub gap: bool,
    /// The id of the newest event in the log (0 when none).
    pub last_id: u64,
}

/// Budget consumption of a project (or a token) in the current period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetUsage {
    pub spent: Money,
    /// Granted to proxies in open leases, not yet reported.
    pub leased: Money,
}

/// An admin price override (micro-dollars per million tokens).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceOverride {
    pub model: String,
    pub input: Money,
    pub cached_input: Option<Money>,
    pub output: Money,
    pub updated_at: Timestamp,
}

/// A page request: at most `limit` items after the opaque `cursor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub fn first(limit: usize) -> Self {
        PageRequest {
            limit,
            cursor: None,
        }
    }
}

/// A page of results; `next_cursor` is set when more items may follow.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from items sorted by `key`, at most `limit + 1` of them fetched (the
    /// extra one only tells whether more follow).
    pub fn from_sorted(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more { items.last().map(key) } else { None };
        Page { items, next_cursor }
    }
}

/// A new id with a prefix: `prj_<ulid>`. ULIDs come from one monotonic generator, so ids
/// made by this process sort in creation order even within a millisecond.
pub fn new_id(prefix: &str) -> String {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let ulid = GENERATOR
        .lock()
        .map_err(|_| ())
        .and_then(|mut g| g.generate().map_err(|_| ()))
        .unwrap_or_else(|()| ulid::Ulid::new());
    format!("{prefix}_{ulid}")
}

/// Current unix time in seconds.
pub fn now() -> Timestamp {
    iron_core::token::unix_now()
}
