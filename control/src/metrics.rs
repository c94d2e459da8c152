//! Prometheus metrics of control (`design.md` §12, `docs/operations.md`), served at
//! `GET /metrics`.
//!
//! `iron_control_http_requests_total{route,status}` is counted by the request-log
//! middleware (route = the matched route template, so cardinality stays low). Budget gauges
//! (`iron_control_budget_{limit,spent,leased}_microdollars{project}`, current period) and
//! `iron_control_leases_active` are computed from the store at scrape time, so every replica
//! reports the same values.

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::error::ApiError;
use crate::service::{Service, walk};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    budget_limit: IntGaugeVec,
    budget_spent: IntGaugeVec,
    budget_leased: IntGaugeVec,
    leases_active: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "iron_control_http_requests_total",
                "HTTP requests served by control",
            ),
            &["route", "status"],
        )?;
        let budget_limit = IntGaugeVec::new(
            Opts::new(
                "iron_control_budget_limit_microdollars",
                "Budget limit of the current period (0 = no limit)",
            ),
            &["project"],
        )?;
        let budget_spent = IntGaugeVec::new(
            Opts::new(
                "iron_control_budget_spent_microdollars",
                "Spent in the current period",
            ),
            &["project"],
        )?;
        let budget_leased = IntGaugeVec::new(
            Opts::new(
                "iron_control_budget_leased_microdollars",
                "Granted to proxies in open leases, not yet reported as spent",
            ),
            &["project"],
        )?;
        let leases_active = IntGauge::new(
            "iron_control_leases_active",
            "Budget leases currently held by proxies",
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(budget_limit.clone()))?;
        registry.register(Box::new(budget_spent.clone()))?;
        registry.register(Box::new(budget_leased.clone()))?;
        registry.register(Box::new(leases_active.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            budget_limit,
            budget_spent,
            budget_leased,
            leases_active,
        })
    }

    /// Refreshes the store-derived gauges and renders the text exposition format.
    pub async fn render(&self, svc: &Service) -> Result<String, ApiError> {
        let store = svc.store.clone();
        let projects = walk(|page| {
            let store = store.clone();
            async move { store.list_projects(&page).await }
        })
        .await?;
        self.budget_limit.reset();
        self.budget_spent.reset();
        self.budget_leased.reset();
        let gauge = |m: iron_core::Money| i64::try_from(m.micros()).unwrap_or(i64::MAX);
        let mut leases = 0u64;
        for p in &projects {
            let usage = svc.budget_usage(p).await?;
            let label = [p.id.as_str()];
            self.budget_limit
                .with_label_values(&label)
                .set(gauge(p.budget.limit.unwrap_or_default()));
            self.budget_spent
                .with_label_values(&label)
                .set(gauge(usage.spent));
            self.budget_leased
                .with_label_values(&label)
                .set(gauge(usage.leased));
            leases = leases.saturating_add(usage.leases);
        }
        self.leases_active
            .set(i64::try_from(leases).unwrap_or(i64::MAX));
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
        String::from_utf8(buf).map_err(|e| ApiError::Internal(format!("metrics: {e}")))
    }
}
