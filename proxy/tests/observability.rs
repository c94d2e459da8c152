//! Issue 7 acceptance 1 and 3 (proxy side): after a run with a stream, a non-stream call, a
//! 402, a PII redaction, a cut-off and an open breaker, `/metrics` shows each §12 metric with
//! the expected values; every proxy metric that a dashboard or alert rule references exists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use iron_testkit::{Fault, Scenario};

/// Parsed exposition: series (`name{labels}`) → value, plus the family names seen.
struct Exposition {
    samples: BTreeMap<String, f64>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            samples.insert(series.to_owned(), value.parse().unwrap());
        }
        Exposition { samples }
    }

    fn has_metric(&self, name: &str) -> bool {
        self.samples
            .keys()
            .any(|s| s == name || s.starts_with(&format!("{name}{{")))
    }

    /// Sum over all series of `name` whose labels contain every `k="v"` in `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(s, _)| s.as_str() == name || s.starts_with(&format!("{name}{{")))
            .filter(|(s, _)| {
                labels
                    .iter()
                    .all(|(k, v)| s.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

fn referenced_metrics() -> Vec<String> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/iron/ci/check-observability.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("--list-metrics")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("metric: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_full_run() {
    let h = Harness::start().await;
    let c = reqwest::Client::new();
    // A provider 503: retried twice on the only deployment, then passed through.
    h.mock.set_scenario(Scenario {
        fault: Some(Fault::Status503),
        ..Default::default()
    });
    assert_eq!(
        c.post(h.url("/v1/chat/completions"))
            .bearer_auth(h.token())
            .json(&chat_body(false))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    h.mock.set_scenario(Scenario::default());
    // A stream and a non-stream call.
    assert!(
        c.post(h.url("/v1/chat/completions"))
            .bearer_auth(h.token())
            .json(&chat_body(true))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("[DONE]")
    );
    assert_eq!(
        c.post(h.url("/v1/chat/completions"))
            .bearer_auth(h.token())
            .json(&chat_body(false))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A 402.
    assert_eq!(
        c.post(h.url("/v1/chat/completions"))
            .bearer_auth(h.token_for("prj_broke"))
            .json(&chat_body(false))
            .send()
            .await
            .unwrap()
            .status(),
        402
    );
    // A PII redaction.
    let pii = serde_json::json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"mail jane.doe@example.com"}]});
    assert_eq!(
        c.post(h.url("/v1/chat/completions"))
            .bearer_auth(h.token())
            .json(&pii)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A cut-off.
    let cut = c
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token_for("prj_budget"))
        .header("x-mock-tokens", "5000")
        .json(&chat_body(true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cut.contains("budget_exceeded"));
    // An open breaker.
    h.mock.set_scenario(Scenario {
        fault: Some(Fault::Status500),
        ..Default::default()
    });
    for _ in 0..5 {
        assert_eq!(
            c.post(h.url("/v1/chat/completions"))
                .bearer_auth(h.token())
                .json(&chat_body(false))
                .send()
                .await
                .unwrap()
                .status(),
            500
        );
    }
    assert_eq!(
        c.post(h.url("/v1/chat/completions"))
            .bearer_auth(h.token())
            .json(&chat_body(false))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    // 12 requests in all; wait until the last one is logged.
    let total = "iron_proxy_requests_total{code=\"upstream_unavailable\",model=\"gpt-4o-mini\",provider=\"mock-openai\",route=\"chat_completions\"}";
    let m = Exposition::parse(&h.wait_metric(total, 1.0).await);
    let req = |code: &str| {
        m.sum(
            "iron_proxy_requests_total",
            &[("code", code), ("route", "chat_completions")],
        )
    };
    assert_eq!(
        req("ok"),
        4.0,
        "stream, non-stream, pii, cut-off stream (200)"
    );
    assert_eq!(req("500"), 5.0, "provider 500s passed through");
    assert_eq!(req("503"), 1.0, "provider 503 after the retries");
    assert_eq!(
        m.sum(
            "iron_proxy_upstream_retries_total",
            &[("provider", "mock-openai")]
        ),
        2.0
    );
    assert_eq!(req("budget_exceeded"), 1.0);
    assert_eq!(req("upstream_unavailable"), 1.0);
    assert_eq!(
        m.sum("iron_proxy_request_duration_seconds_count", &[]),
        12.0
    );
    assert_eq!(
        m.sum(
            "iron_proxy_overhead_seconds_count",
            &[("route", "chat_completions")]
        ),
        12.0
    );
    assert_eq!(
        m.sum(
            "iron_proxy_upstream_ttfb_seconds_count",
            &[("provider", "mock-openai")]
        ),
        10.0,
        "10 requests reached the upstream"
    );
    assert!(m.sum("iron_proxy_tokens_total", &[("direction", "output")]) > 0.0);
    assert!(m.sum("iron_proxy_tokens_total", &[("direction", "input")]) > 0.0);
    assert!(
        m.sum(
            "iron_proxy_cost_microdollars_total",
            &[("project", PROJECT)]
        ) > 0.0
    );
    assert_eq!(
        m.sum(
            "iron_proxy_cost_microdollars_total",
            &[("project", "prj_budget")]
        ),
        1000.0,
        "the cut-off stream spent its whole $0.001"
    );
    assert_eq!(
        m.sum(
            "iron_proxy_budget_denials_total",
            &[("project", "prj_broke")]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "iron_proxy_stream_cutoffs_total",
            &[("project", "prj_budget")]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "iron_proxy_pii_detections_total",
            &[
                ("type", "EMAIL"),
                ("direction", "request"),
                ("action", "redact")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.sum("iron_proxy_breaker_state", &[("deployment", "mock-openai")]),
        1.0
    );
    assert!(m.has_metric("iron_proxy_lease_remaining_microdollars"));
    assert_eq!(
        m.sum("iron_proxy_control_connected", &[]),
        1.0,
        "static mode has no control to lose"
    );
    assert_eq!(
        m.sum("iron_proxy_stage_runs_total", &[("stage", "auth")]),
        12.0
    );

    // Every proxy metric a dashboard or rule uses exists in the live output.
    let referenced = referenced_metrics();
    assert!(referenced.len() > 10, "{referenced:?}");
    for name in referenced.iter().filter(|n| n.starts_with("iron_proxy_")) {
        assert!(
            m.has_metric(name),
            "dashboards/rules use {name}, which the proxy does not export"
        );
    }
}
