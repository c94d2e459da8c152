//! Stored entities (`design.md` §5): what the [`Store`](crate::store::Store) persists.
//!
//! These are storage records, not API shapes: the REST layer (`api`) turns them into views
//! (masking provider keys, formatting money and times). Records never hold a secret in
//! plaintext: provider keys and signing-key seeds are [`SealedSecret`]s under the master key,
//! API keys are SHA-256 hashes, IC tokens are not stored at all (only their id and metadata).
//! Times are unix seconds.

use iron_core::Money;
use iron_core::token::PublicKey;
use iron_core::wire::{ControlEvent, DeploymentTimeouts, ProviderKind, SealedSecret};
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
    /// RPM/TPM limits (`PATCH … {"rate_limits":…}`); none = unlimited.
    #[serde(
        default,
        skip_serializing_if = "iron_core::ratelimit::RateLimits::is_none"
    )]
    pub rate_limits: iron_core::ratelimit::RateLimits,
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
    /// Per-deployment timeouts (ms); unset ones use the proxy's `[upstream]` values. Absent in
    /// records written before they existed.
    #[serde(default, skip_serializing_if = "DeploymentTimeouts::is_none")]
    pub timeouts: DeploymentTimeouts,
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
    /// The token's own RPM/TPM limits (also carried in the token as `rpm`/`tpm` claims).
    #[serde(
        default,
        skip_serializing_if = "iron_core::ratelimit::RateLimits::is_none"
    )]
    pub rate_limits: iron_core::ratelimit::RateLimits,
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
    /// API key id of the caller, `session:<key id>` for a dashboard session, or `system`.
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
    /// The client address (the TCP peer, or `X-Forwarded-For` from a trusted proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// The object before and after the change (`null` when created / deleted), secrets
    /// masked (provider keys only as their hint, no key hashes or sealed values).
    #[serde(default)]
    pub before: serde_json::Value,
    #[serde(default)]
    pub after: serde_json::Value,
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
    /// Spent in the current period (reported spend + leases that expired unreported).
    pub spent: Money,
    /// Granted to proxies in open leases, not yet reported as spent.
    pub leased: Money,
    /// Open leases.
    pub leases: u64,
}

impl BudgetUsage {
    /// `limit − spent − leased` (saturating), `None` when `limit` is `None` (unlimited).
    pub fn remaining(&self, limit: Option<Money>) -> Option<Money> {
        limit.map(|l| l.saturating_sub(self.spent).saturating_sub(self.leased))
    }
}

/// Where a lease is in its life (`design.md` §6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Held by a proxy: `granted − spent` is outstanding on the budgets.
    #[default]
    Open,
    /// Passed `expires_at` without a final report: the unreported part was charged as
    /// spent. A later report revives it; a release corrects it to the real spend.
    Expired,
    /// Returned by the proxy (`DELETE`); kept as a tombstone so replays are idempotent.
    Released,
}

/// A budget lease (`lse_<ulid>`) as stored. Money is cumulative for the lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: String,
    pub token_id: String,
    pub project_id: String,
    pub proxy_id: String,
    /// Everything granted on this lease (first grant + extensions).
    pub granted: Money,
    /// Cumulative spend of the last applied report.
    pub spent: Money,
    /// `seq` of the last applied report (0 = none yet).
    pub seq: u64,
    /// Unix seconds; pushed by every extension and report.
    pub expires_at: Timestamp,
    pub state: LeaseState,
    /// The token's budget period when the lease was granted.
    pub token_period: Period,
    /// What the expiry charged as spent (state `Expired`), and to which period keys.
    pub expiry_charge: Money,
    pub expiry_project_key: String,
    pub expiry_token_key: String,
    pub created_at: Timestamp,
    /// When the tombstone of an expired or released lease is dropped (0 while open).
    pub purge_at: Timestamp,
}

impl LeaseRecord {
    /// What this lease holds on its budgets: `granted − spent` while open, else nothing.
    pub fn outstanding(&self) -> Money {
        match self.state {
            LeaseState::Open => self.granted.saturating_sub(self.spent),
            LeaseState::Expired | LeaseState::Released => Money::ZERO,
        }
    }
}

/// How leases are sized and how long they live (`[leases]` in `control.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeasePolicy {
    /// Lifetime of a lease without a report or extension (default 60 s).
    pub ttl_secs: u64,
    /// Smallest adaptive slice (default 100 µ$); never more than what is left.
    pub min_lease: Money,
    /// How long tombstones of expired/released leases (and event ids for de-duplication)
    /// are kept, so late and replayed reports are still recognised (default 7 days).
    pub retain_secs: u64,
}

/// Largest amount granted at once: keeps every amount exact in Redis Lua numbers (2^53).
pub const MAX_GRANT: Money = Money(1_000_000_000_000_000);

impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy {
            ttl_secs: 60,
            min_lease: Money(100),
            retain_secs: 7 * 24 * 3600,
        }
    }
}

/// Result of one expiry sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Open leases past `expires_at` now counted as fully spent.
    pub expired: u64,
    /// Tombstones dropped after the retention.
    pub purged: u64,
}

/// Usage listing filters (all optional, combined with AND). Times are unix milliseconds of
/// the event (`at_ms`): `since` inclusive, `until` exclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub project: Option<String>,
    pub token: Option<String>,
    pub model: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

impl UsageFilter {
    pub fn matches(&self, e: &iron_core::lease::UsageEvent) -> bool {
        self.project.as_ref().is_none_or(|p| *p == e.project_id)
            && self.token.as_ref().is_none_or(|t| *t == e.token_id)
            && self.model.as_ref().is_none_or(|m| *m == e.model)
            && self.since_ms.is_none_or(|s| e.at_ms >= s)
            && self.until_ms.is_none_or(|u| e.at_ms < u)
    }
}

/// Usage entries examined per listing call before a partial page is returned with a
/// cursor to resume from (filters that match rarely).
pub const USAGE_SCAN_BUDGET: usize = 10_000;

/// The counter key of the budget period containing `now` (UTC): `total`, `d2026-11-28`
/// or `m2026-11`. Spend is kept per key, so a new day or month starts at zero.
pub fn period_key(period: Period, now: Timestamp) -> String {
    let (y, m, d) = civil_date(now);
    match period {
        Period::Total => "total".to_owned(),
        Period::Daily => format!("d{y:04}-{m:02}-{d:02}"),
        Period::Monthly => format!("m{y:04}-{m:02}"),
    }
}

/// The `(day, month)` parts used by [`period_key`]: `("2026-11-28", "2026-11")`.
pub fn period_parts(now: Timestamp) -> (String, String) {
    let (y, m, d) = civil_date(now);
    (format!("{y:04}-{m:02}-{d:02}"), format!("{y:04}-{m:02}"))
}

/// UTC calendar date of a unix timestamp (days-from-civil inverse, H. Hinnant).
pub fn civil_date(ts: Timestamp) -> (i64, u32, u32) {
    let days = i64::try_from(ts / 86_400).unwrap_or(i64::MAX / 2);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_and_period_keys() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        // 2026-11-28T23:59:59Z and one second later.
        let before = 1_795_910_399;
        assert_eq!(civil_date(before), (2026, 11, 28));
        assert_eq!(civil_date(before + 1), (2026, 11, 29));
        assert_eq!(period_key(Period::Daily, before), "d2026-11-28");
        assert_eq!(period_key(Period::Daily, before + 1), "d2026-11-29");
        assert_eq!(period_key(Period::Monthly, before), "m2026-11");
        assert_eq!(period_key(Period::Total, before), "total");
        // Leap day and year end.
        assert_eq!(civil_date(1_709_164_800), (2024, 2, 29));
        assert_eq!(civil_date(1_735_689_599), (2024, 12, 31));
        assert_eq!(civil_date(1_735_689_600), (2025, 1, 1));
        assert_eq!(
            period_parts(1_735_689_600),
            ("2025-01-01".to_owned(), "2025-01".to_owned())
        );
    }
}
