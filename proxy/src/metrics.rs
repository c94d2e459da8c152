//! Prometheus metrics of the proxy (`design.md` §12), served on the admin port.
//!
//! Recorded by `proxy.rs` once per stage run and once per request (in pingora's `logging`
//! hook, after the response). Labels are low-cardinality: route, provider id, model, code;
//! the `project` and `model` labels are capped by `[metrics]` ([`CappedLabel`]): the model
//! comes from the agent's request body, so an agent could otherwise mint a series per request.
//!
//! `iron_proxy_overhead_seconds` is the time spent inside Iron: the request's total time
//! minus the time spent waiting on the upstream (connect, time to first byte, every read of
//! the answer body) and on the agent's socket (reading the request body, writing the
//! answer). See [`overhead`].

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::config::MetricsConfig;
use crate::ctx::RequestCtx;
use crate::stage::Stage;

/// Label value of every project when `[metrics] project_label = false`.
pub const ALL_PROJECTS: &str = "all";
/// Label value of the projects (models) beyond `[metrics] max_projects` (`max_models`).
pub const OTHER: &str = "other";

/// Maps values (project ids, model names) to label values: the value itself for the first
/// `max` distinct values seen, [`OTHER`] after that, [`ALL_PROJECTS`] for all of them when
/// the label is switched off. The label itself is always present, so `sum by (project)` and
/// `{project=~"$project"}` in dashboards stay valid.
#[derive(Debug)]
pub struct CappedLabel {
    enabled: bool,
    max: usize,
    seen: RwLock<HashSet<String>>,
}

impl CappedLabel {
    pub fn new(enabled: bool, max: usize) -> Self {
        CappedLabel {
            enabled,
            max,
            seen: RwLock::new(HashSet::new()),
        }
    }

    /// The label value for `value`.
    pub fn label<'a>(&self, value: &'a str) -> &'a str {
        if !self.enabled {
            return ALL_PROJECTS;
        }
        match self.seen.read() {
            Ok(seen) if seen.contains(value) => return value,
            Ok(seen) if seen.len() >= self.max => return OTHER,
            Ok(_) => {}
            Err(_) => return OTHER,
        }
        match self.seen.write() {
            Ok(mut seen) => {
                if seen.contains(value) {
                    value
                } else if seen.len() < self.max {
                    seen.insert(value.to_owned());
                    value
                } else {
                    OTHER
                }
            }
            Err(_) => OTHER,
        }
    }
}

/// Time spent inside Iron for a request that has run for `total`: `total` minus the time
/// awaiting the upstream and the agent's socket (both recorded on `ctx` as they happen).
pub fn overhead(total: Duration, ctx: &RequestCtx) -> Duration {
    total
        .saturating_sub(ctx.upstream_wait)
        .saturating_sub(ctx.client_wait)
}

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
    pub usage_events_dropped: IntCounter,
    pub fail_open_spend: IntCounterVec,
    pub control_connected: prometheus::IntGauge,
    /// Label values for the `project` label (`[metrics]` switch and cap).
    pub projects: CappedLabel,
    pub models: CappedLabel,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(config: MetricsConfig) -> Result<Self, prometheus::Error> {
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
            "Usage reports waiting for control (spill file and in-memory queue)",
        )?;
        registry.register(Box::new(reports_pending.clone()))?;
        let usage_events_dropped = IntCounter::new(
            "iron_proxy_usage_events_dropped_total",
            "Usage events dropped because the in-memory report queue was full and no spill file took them",
        )?;
        registry.register(Box::new(usage_events_dropped.clone()))?;
        let fail_open_spend = counter(
            "iron_proxy_fail_open_spend_microdollars_total",
            "Unleased spend admitted while control was unreachable (budget.fail_mode = open)",
            &["project"],
        )?;
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
            usage_events_dropped,
            fail_open_spend,
            control_connected,
            projects: CappedLabel::new(config.project_label, config.max_projects),
            models: CappedLabel::new(true, config.max_models),
        })
    }

    /// Counts one run of `stage`.
    pub fn stage(&self, stage: Stage) {
        if let Some(c) = self.stage_runs.get(stage as usize) {
            c.inc();
        }
    }

    /// The `project` label value for `project` (see [`CappedLabel`]).
    pub fn project<'a>(&self, project: &'a str) -> &'a str {
        self.projects.label(project)
    }

    /// The `model` label value for `model` (see [`CappedLabel`]).
    pub fn model<'a>(&self, model: &'a str) -> &'a str {
        self.models.label(model)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_labels_are_capped_or_switched_off() {
        let capped = CappedLabel::new(true, 2);
        assert_eq!(capped.label("prj_a"), "prj_a");
        assert_eq!(capped.label("prj_b"), "prj_b");
        assert_eq!(capped.label("prj_c"), OTHER);
        assert_eq!(capped.label("prj_a"), "prj_a", "a project keeps its label");
        let off = CappedLabel::new(false, 2);
        assert_eq!(off.label("prj_a"), ALL_PROJECTS);
    }

    #[test]
    fn model_labels_are_capped_even_with_project_labels_off() {
        let m = Metrics::new(MetricsConfig {
            project_label: false,
            max_projects: 100,
            max_models: 2,
        })
        .unwrap();
        assert_eq!(m.model("gpt-4o"), "gpt-4o");
        assert_eq!(m.model("gpt-4o-mini"), "gpt-4o-mini");
        assert_eq!(
            m.model("gpt-made-up-1"),
            OTHER,
            "a third model name is not a new series"
        );
        assert_eq!(m.model("gpt-4o"), "gpt-4o");
        assert_eq!(m.project("prj_a"), ALL_PROJECTS);
    }
}
