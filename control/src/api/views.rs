//! Response shapes of the REST API (and their OpenAPI schemas): records from the store as
//! clients see them — money as decimal USD strings, times as RFC 3339, provider keys masked.

use std::time::{Duration, UNIX_EPOCH};

use iron_core::Money;
use serde::Serialize;
use utoipa::ToSchema;

use crate::model::{
    ApiKeyRecord, AuditEvent, Period, Project, Provider, SigningKeyRecord, SigningKeyState,
    Timestamp, TokenRecord, now,
};

/// RFC 3339 UTC, seconds precision.
pub fn time(ts: Timestamp) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(ts)).to_string()
}

/// Decimal USD without the `$`: `12.50`, `0.000001`.
pub fn usd(m: Money) -> String {
    m.to_string().trim_start_matches('$').to_owned()
}

/// A page of results.
#[derive(Serialize, ToSchema)]
pub struct List<T: ToSchema> {
    pub data: Vec<T>,
    /// Pass as `?cursor=` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Result of a delete.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectView {
    /// `prj_<ulid>`.
    pub id: String,
    pub name: String,
    /// Budget limit in USD (`null` = unlimited).
    pub budget_usd: Option<String>,
    pub period: Period,
    /// Provider ids this project may use; empty = all.
    pub providers: Vec<String>,
    /// Allowed model patterns; empty = all.
    pub allowed_models: Vec<String>,
    /// PII policy; `null` = the default (redact every type both ways, reversibly).
    #[schema(value_type = Option<Object>)]
    pub pii: Option<iron_core::pii::PiiPolicy>,
    /// RPM/TPM limits (`null` = unlimited).
    pub rate_limits: super::ratelimits::RateLimitsView,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Project> for ProjectView {
    fn from(p: Project) -> Self {
        ProjectView {
            id: p.id,
            name: p.name,
            budget_usd: p.budget.limit.map(usd),
            period: p.budget.period,
            providers: p.providers,
            allowed_models: p.allowed_models,
            pii: p.pii,
            rate_limits: p.rate_limits.into(),
            created_at: time(p.created_at),
            updated_at: time(p.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProviderView {
    /// `prv_<ulid>`.
    pub id: String,
    pub name: String,
    /// `openai`, `anthropic`, `openai-compatible` or `azure-openai`.
    pub kind: String,
    pub base_url: String,
    pub models: Vec<String>,
    pub priority: i32,
    /// The key, masked: first and last 3 characters (`sk-…abc`), or `…` for short keys.
    pub api_key_masked: String,
    /// This deployment's own timeouts (ms); a `null` one uses the proxy's `[upstream]` value.
    pub timeouts: super::providers::TimeoutsView,
    pub created_at: String,
    pub updated_at: String,
    /// This deployment's circuit breaker on each proxy that reported in the last 30 s.
    pub breakers: Vec<BreakerView>,
}

/// One proxy's circuit breaker for a deployment.
#[derive(Serialize, ToSchema)]
pub struct BreakerView {
    /// The proxy's id (`[budget] proxy_id`, default the host name).
    pub proxy: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    pub updated_at: String,
}

impl ProviderView {
    /// Adds the breaker states proxies reported for this provider.
    pub fn with_breakers(mut self, svc: &crate::service::Service) -> Self {
        let now_ms = iron_core::token::unix_now_ms();
        self.breakers = svc
            .breakers
            .for_deployment(&self.id, now_ms)
            .into_iter()
            .map(|b| BreakerView {
                proxy: b.proxy,
                state: b.state,
                updated_at: time(b.updated_ms / 1000),
            })
            .collect();
        self
    }
}

impl From<Provider> for ProviderView {
    fn from(p: Provider) -> Self {
        ProviderView {
            id: p.id,
            name: p.name,
            kind: p.kind.as_str().into(),
            base_url: p.base_url,
            models: p.models,
            priority: p.priority,
            api_key_masked: p.key_hint,
            timeouts: p.timeouts.into(),
            breakers: Vec::new(),
            created_at: time(p.created_at),
            updated_at: time(p.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TokenView {
    /// `tok_<ulid>`.
    pub id: String,
    /// Project id.
    pub project: String,
    pub name: Option<String>,
    /// The token's own budget in USD (`null` = only the project's).
    pub budget_usd: Option<String>,
    pub period: Period,
    /// Signing key id.
    pub kid: String,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    /// Time of the last metered request (project listings only; `null` = never or unknown).
    pub last_used_at: Option<String>,
    /// Spend recorded in the usage log (project listings only).
    pub spent_usd: Option<String>,
    pub spent_microdollars: Option<u64>,
    /// The token's own RPM/TPM limits (`null` = only the project's).
    pub rate_limits: super::ratelimits::RateLimitsView,
}

impl TokenView {
    /// Adds the token's usage totals (from [`crate::service::stats`]).
    pub fn with_stats(mut self, stats: Option<&crate::service::stats::TokenStats>) -> Self {
        let s = stats.copied().unwrap_or_default();
        self.last_used_at = (s.requests > 0).then(|| time(s.last_used_ms / 1000));
        self.spent_usd = Some(usd(Money(s.spent)));
        self.spent_microdollars = Some(s.spent);
        self
    }
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> Self {
        let status = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at <= now() {
            "expired"
        } else {
            "active"
        };
        TokenView {
            id: t.id,
            project: t.project_id,
            name: t.name,
            budget_usd: t.budget.limit.map(usd),
            period: t.budget.period,
            kid: t.kid,
            status: status.into(),
            created_at: time(t.created_at),
            expires_at: time(t.expires_at),
            revoked_at: t.revoked_at.map(time),
            last_used_at: None,
            spent_usd: None,
            spent_microdollars: None,
            rate_limits: t.rate_limits.into(),
        }
    }
}

/// A freshly minted token. `token` is shown only in this response.
#[derive(Serialize, ToSchema)]
pub struct MintedToken {
    pub id: String,
    /// The IC token (`ic_…`). Control does not keep it: store it now.
    pub token: String,
    /// Project id.
    pub project: String,
    pub project_name: String,
    pub name: Option<String>,
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    /// `ak_<ulid>`.
    pub id: String,
    pub name: String,
    /// `admin`, `viewer` or `project:<id>`.
    pub role: String,
    pub created_at: String,
}

impl From<ApiKeyRecord> for ApiKeyView {
    fn from(k: ApiKeyRecord) -> Self {
        ApiKeyView {
            id: k.id,
            name: k.name,
            role: k.role.to_string(),
            created_at: time(k.created_at),
        }
    }
}

/// A new API key. `key` is shown only in this response.
#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: String,
    /// The key (`iron_ak_…`). Only its SHA-256 is stored: keep it now.
    pub key: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    pub time: String,
    /// API key id of the caller, or `system`.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub project: Option<String>,
    pub request_id: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// The client address (TCP peer, or `X-Forwarded-For` from a trusted proxy).
    pub source_ip: Option<String>,
    /// The object before / after the change (`null` when created / deleted), secrets
    /// removed.
    #[schema(value_type = Object)]
    pub before: serde_json::Value,
    #[schema(value_type = Object)]
    pub after: serde_json::Value,
}

impl From<AuditEvent> for AuditView {
    fn from(e: AuditEvent) -> Self {
        AuditView {
            id: e.id,
            time: time(e.time),
            actor: e.actor,
            action: e.action,
            target: e.target,
            project: e.project,
            request_id: e.request_id,
            details: e.details,
            source_ip: e.source_ip,
            before: e.before,
            after: e.after,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct BudgetView {
    /// Project id.
    pub project: String,
    pub project_name: String,
    pub period: Period,
    /// `null` = unlimited.
    pub limit_usd: Option<String>,
    pub spent_usd: String,
    /// Granted to proxies in open leases.
    pub leased_usd: String,
    /// `limit − spent − leased`; `null` when unlimited.
    pub remaining_usd: Option<String>,
    /// The same amounts in micro-dollars (1 USD = 1,000,000).
    pub limit_microdollars: Option<u64>,
    pub spent_microdollars: u64,
    pub leased_microdollars: u64,
    pub remaining_microdollars: Option<u64>,
    /// Leases currently open on this project.
    pub active_leases: u64,
}

/// One recorded usage event (reported by proxies through their leases).
#[derive(Serialize, ToSchema)]
pub struct UsageView {
    /// `evt_<ulid>`.
    pub id: String,
    /// When the request happened (RFC 3339, milliseconds).
    pub time: String,
    pub project: String,
    pub token: String,
    pub provider: String,
    pub model: String,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: String,
    pub cost_microdollars: u64,
    /// HTTP status the agent received.
    pub status: u16,
    /// The stream was cut off because the budget ran out.
    pub cut_off: bool,
}

impl From<iron_core::lease::UsageEvent> for UsageView {
    fn from(e: iron_core::lease::UsageEvent) -> Self {
        UsageView {
            id: e.id,
            time: humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(e.at_ms))
                .to_string(),
            project: e.project_id,
            token: e.token_id,
            provider: e.provider_id,
            model: e.model,
            input_tokens: e.input_tokens,
            cached_input_tokens: e.cached_input_tokens,
            cache_write_tokens: e.cache_write_tokens,
            output_tokens: e.output_tokens,
            cost_usd: usd(e.cost),
            cost_microdollars: e.cost.micros(),
            status: e.status,
            cut_off: e.cut_off,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SigningKeyView {
    pub kid: String,
    pub state: SigningKeyState,
    pub alg: String,
    /// Base64url Ed25519 public key.
    pub x: String,
    pub created_at: String,
}

impl From<SigningKeyRecord> for SigningKeyView {
    fn from(k: SigningKeyRecord) -> Self {
        SigningKeyView {
            kid: k.kid,
            state: k.state,
            alg: k.public.alg,
            x: k.public.x,
            created_at: time(k.created_at),
        }
    }
}
