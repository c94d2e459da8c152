//! Prometheus metrics of control (`design.md` §12, `docs/operations.md`), served at
//! `GET /metrics`.
//!
//! `iron_control_http_requests_total{route,status}` is counted by the request-log
//! middleware (route = the matched route template, so cardinality stays low). Budget gauges
//! are computed from the store at scrape time, so every replica reports the same values.

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::error::ApiError;
use crate::service::{Service, walk};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    budget_limit: IntGaugeVec,
    budget_spent: IntGaugeVec,
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
        let leases_active = IntGauge::new(
            "iron_control_leases_active",
            "Budget leases currently held by proxies",
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(budget_limit.clone()))?;
        registry.register(Box::new(budget_spent.clone()))?;
        registry.register(Box::new(leases_active.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            budget_limit,
            budget_spent,
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
        for p in &projects {
            let usage = svc.store.budget_usage(&p.id, None).await?;
            let limit = p.budget.limit.map_or(0, |m| m.micros());
            self.budget_limit
                .with_label_values(&[p.id.as_str()])
                .set(i64::try_from(limit).unwrap_or(i64::MAX));
            self.budget_spent
                .with_label_values(&[p.id.as_str()])
                .set(i64::try_from(usage.spent.micros()).unwrap_or(i64::MAX));
        }
        // Leases arrive with the lease protocol.
        self.leases_active.set(0);
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
        String::from_utf8(buf).map_err(|e| ApiError::Internal(format!("metrics: {e}")))
    }
}
