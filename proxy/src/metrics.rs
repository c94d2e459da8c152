//! Prometheus metrics of the proxy (`design.md` §12), served on the admin port.
//!
//! Recorded by `proxy.rs` once per stage run and once per request (in pingora's `logging`
//! hook, after the response). Labels are low-cardinality: route, provider id, model, code.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::stage::Stage;

/// Buckets for sub-millisecond overhead up to multi-second streams.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

pub struct Metrics {
    registry: Registry,
    stage_runs: Vec<IntCounter>,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub overhead: HistogramVec,
    pub ttfb: HistogramVec,
    pub retries: IntCounterVec,
    pub breaker_state: IntGaugeVec,
    pub pii: IntCounterVec,
    pub tokens: IntCounterVec,
    pub cost: IntCounterVec,
    pub budget_denials: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub rate_limit_fail_open: IntCounter,
    pub cutoffs: IntCounterVec,
    pub lease_remaining: IntGaugeVec,
    pub reports_pending: prometheus::IntGauge,
    pub control_connected: prometheus::IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let stages = IntCounterVec::new(
            Opts::new(
                "iron_proxy_stage_runs_total",
                "Times each request stage ran",
            ),
            &["stage"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "iron_proxy_requests_total",
                "Agent requests by route, provider, model and result code",
            ),
            &["route", "provider", "model", "code"],
        )?;
        let hist = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
        };
        let duration = hist(
            "iron_proxy_request_duration_seconds",
            "Total request duration",
            &["route"],
        )?;
        let overhead = hist(
            "iron_proxy_overhead_seconds",
            "Time spent inside Iron per request (total minus upstream wait)",
            &["route"],
        )?;
        let ttfb = hist(
            "iron_proxy_upstream_ttfb_seconds",
            "Upstream time to response head",
            &["provider"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "iron_proxy_upstream_retries_total",
                "Upstream attempts beyond the first (retries and fail-overs)",
            ),
            &["provider"],
        )?;
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "iron_proxy_breaker_state",
                "Circuit breaker per deployment: 0 closed, 1 open, 2 half-open",
            ),
            &["deployment"],
        )?;
        let pii = IntCounterVec::new(
            Opts::new(
                "iron_proxy_pii_detections_total",
                "PII found, by type, direction and action taken (never values)",
            ),
            &["type", "direction", "action"],
        )?;
        registry.register(Box::new(pii.clone()))?;
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let tokens = counter(
            "iron_proxy_tokens_total",
            "Tokens by direction (input/output), provider and model",
            &["direction", "provider", "model"],
        )?;
        let cost = counter(
            "iron_proxy_cost_microdollars_total",
            "Cost charged, in micro-dollars",
            &["project", "provider", "model"],
        )?;
        let budget_denials = counter(
            "iron_proxy_budget_denials_total",
            "Requests refused with 402 budget_exceeded",
            &["project"],
        )?;
        let rate_limited = counter(
            "iron_proxy_rate_limited_total",
            "Requests refused with 429 rate_limited, by scope (token/project) and kind (requests/tokens)",
            &["scope_kind", "kind"],
        )?;
        // Every series exists from the start (at 0), so dashboards and `rate()` see it
        // before the first refusal.
        for scope in ["token", "project"] {
            for kind in ["requests", "tokens"] {
                rate_limited.with_label_values(&[scope, kind]);
            }
        }
        let rate_limit_fail_open = IntCounter::new(
            "iron_proxy_rate_limit_fail_open_total",
            "Requests admitted without a rate-limit check because control was unreachable",
        )?;
        registry.register(Box::new(rate_limit_fail_open.clone()))?;
        let cutoffs = counter(
            "iron_proxy_stream_cutoffs_total",
            "Streams cut off because the budget ran out",
            &["project"],
        )?;
        let lease_remaining = IntGaugeVec::new(
            Opts::new(
                "iron_proxy_lease_remaining_microdollars",
                "Budget left in this proxy's local lease slices",
            ),
            &["project"],
        )?;
        registry.register(Box::new(lease_remaining.clone()))?;
        let reports_pending = prometheus::IntGauge::new(
            "iron_proxy_usage_reports_pending",
            "Usage reports waiting in the spill file",
        )?;
        registry.register(Box::new(reports_pending.clone()))?;
        let control_connected = prometheus::IntGauge::new(
            "iron_proxy_control_connected",
            "1 while the event stream from control is connected (control mode)",
        )?;
        registry.register(Box::new(control_connected.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(breaker_state.clone()))?;
        registry.register(Box::new(stages.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(overhead.clone()))?;
        registry.register(Box::new(ttfb.clone()))?;
        let stage_runs = Stage::ALL
            .iter()
            .map(|s| stages.with_label_values(&[s.as_str()]))
            .collect();
        Ok(Metrics {
            registry,
            stage_runs,
            requests,
            duration,
            overhead,
            ttfb,
            retries,
            breaker_state,
            pii,
            tokens,
            cost,
            budget_denials,
            rate_limited,
            rate_limit_fail_open,
            cutoffs,
            lease_remaining,
            reports_pending,
            control_connected,
        })
    }

    /// Counts one run of `stage`.
    pub fn stage(&self, stage: Stage) {
        if let Some(c) = self.stage_runs.get(stage as usize) {
            c.inc();
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
