//! Lease protocol wire types (`design.md` §6): proxy ↔ control under `/internal/v1/leases`.
//!
//! A proxy borrows a slice of a token's budget (also charged to its project) and spends it
//! locally; it reports spend and usage events every second or 100 events, extends at a
//! low-water mark and returns the unspent part on shutdown. All amounts are micro-dollars.
//! Reports are idempotent by `seq`; a lease that expires unreported counts as fully spent.

use serde::{Deserialize, Serialize};

use crate::money::Money;

/// `POST /internal/v1/leases`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub proxy_id: String,
    pub token_id: String,
    pub requested: Money,
}

/// Answer to a lease request or extension. `denied` is set (and `granted` is zero) when the
/// budget cannot give anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    pub lease_id: String,
    pub granted: Money,
    /// Unix seconds.
    pub expires_at: u64,
    pub budget_remaining: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied: Option<Denial>,
}

/// Why control gave nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Denial {
    BudgetExceeded,
    TokenRevoked,
    UnknownToken,
}

/// `POST /internal/v1/leases/{id}/extend`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    pub requested: Money,
}

/// One metered request, as stored in the usage log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// Unique per event (`evt_<ulid>`), so replays are idempotent.
    pub id: String,
    pub token_id: String,
    pub project_id: String,
    pub provider_id: String,
    pub model: String,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    pub cost: Money,
    /// HTTP status the agent received (200 also for streams cut off for budget).
    pub status: u16,
    /// True when the stream was cut off because the budget ran out.
    #[serde(default)]
    pub cut_off: bool,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Time spent in Iron itself (excluding the upstream wait), in microseconds; the
    /// dashboard's p99 overhead. Absent from older proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead_us: Option<u64>,
}

/// `POST /internal/v1/leases/{id}/report` and the body of `DELETE /internal/v1/leases/{id}`.
/// `spent` is cumulative for the lease; `seq` increases by one per report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseReport {
    pub seq: u64,
    pub spent: Money,
    #[serde(default)]
    pub events: Vec<UsageEvent>,
}

/// Answer to a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    pub lease_remaining: Money,
    pub budget_remaining: Money,
    #[serde(default)]
    pub revoked: bool,
}
