//! Issue 7 acceptance 1 and 3 (proxy side): after a run with a stream, a non-stream call, a
//! 402, a PII redaction, a cut-off and an open breaker, `/metrics` shows each §12 metric with
//! the expected values (exact tokens, cost and lease left from the mock's deterministic
//! usage); every proxy metric that a dashboard or alert rule references exists. Also: the
//! overhead histogram excludes a slow stream's upstream wait, and the `[metrics]` switch and
//! cap on the `project` label.
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
    // Exact token counts and cost so far, from the mock's deterministic usage: "Say hello"
    // is ceil(9 / 4) = 3 prompt tokens, the default answer 10 completion tokens; the PII
    // prompt is counted on its redacted text. gpt-4o-mini: $0.15 / $0.60 per 1M tokens.
    let ok = "iron_proxy_requests_total{code=\"ok\",model=\"gpt-4o-mini\",provider=\"mock-openai\",route=\"chat_completions\"}";
    let before_cut = Exposition::parse(&h.wait_metric(ok, 3.0).await);
    let sent = h.mock.requests().last().unwrap().json().unwrap();
    let redacted = sent["messages"][0]["content"].as_str().unwrap().to_owned();
    assert!(!redacted.contains("jane.doe"), "{redacted}");
    let pii_input = redacted.len().div_ceil(4) as f64;
    let cost = |input: f64, output: f64| ((input * 150_000.0 + output * 600_000.0) / 1e6).ceil();
    let tokens = |m: &Exposition, direction: &str| {
        m.sum(
            "iron_proxy_tokens_total",
            &[
                ("direction", direction),
                ("provider", "mock-openai"),
                ("model", "gpt-4o-mini"),
            ],
        )
    };
    assert_eq!(
        tokens(&before_cut, "input"),
        3.0 + 3.0 + pii_input,
        "stream + non-stream + PII; the provider 503 consumed none"
    );
    assert_eq!(tokens(&before_cut, "output"), 30.0);
    let project_cost = 2.0 * cost(3.0, 10.0) + cost(pii_input, 10.0);
    assert_eq!(cost(3.0, 10.0), 7.0, "7 µ$ per hello");
    assert_eq!(
        before_cut.sum(
            "iron_proxy_cost_microdollars_total",
            &[("project", PROJECT), ("model", "gpt-4o-mini")]
        ),
        project_cost
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
    let after_cut = Exposition::parse(&h.wait_metric(ok, 4.0).await);
    assert!(
        tokens(&after_cut, "output") > 30.0,
        "the cut-off stream's metered output is counted"
    );
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
    for direction in ["input", "output"] {
        assert_eq!(
            tokens(&m, direction),
            tokens(&after_cut, direction),
            "provider 500s and the open breaker consumed no {direction} tokens"
        );
    }
    assert_eq!(
        m.sum(
            "iron_proxy_cost_microdollars_total",
            &[("project", PROJECT)]
        ),
        project_cost,
        "errors cost nothing"
    );
    assert_eq!(
        m.sum(
            "iron_proxy_cost_microdollars_total",
            &[("project", "prj_budget")]
        ),
        999.0,
        "the cut-off stream spent its $0.001 but 1 µ$ (price × metered usage, rounded once)"
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
    assert_eq!(
        m.sum(
            "iron_proxy_lease_remaining_microdollars",
            &[("project", "prj_budget")]
        ),
        1.0,
        "the cut-off stream used prj_budget's lease but the 1 µ$ its settle gave back"
    );
    // Every PROJECT request used a fresh token, and each token gets its own $0.50 lease
    // slice: 10 tokens reserved (the 503, stream, non-stream, PII, five 500s and the
    // breaker refusal); what is left is 10 slices minus what the project spent.
    assert_eq!(
        m.sum(
            "iron_proxy_lease_remaining_microdollars",
            &[("project", PROJECT)]
        ),
        10.0 * 500_000.0 - project_cost
    );
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

/// `iron_proxy_overhead_seconds` is the time inside Iron: a slow stream's generation time
/// (every wait on the upstream body) is not overhead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overhead_excludes_the_upstream_generation_time() {
    let h = Harness::start().await;
    // 8 content chunks, 200 ms apart (the mock also paces its role, finish and usage events).
    h.mock.set_scenario(Scenario {
        chunks: Some(8),
        delay_ms: Some(200),
        ..Default::default()
    });
    let text = reqwest::Client::new()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(h.token())
        .json(&chat_body(true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    let ok = "iron_proxy_requests_total{code=\"ok\",model=\"gpt-4o-mini\",provider=\"mock-openai\",route=\"chat_completions\"}";
    let m = Exposition::parse(&h.wait_metric(ok, 1.0).await);
    let total = m.sum("iron_proxy_request_duration_seconds_sum", &[]);
    let overhead = m.sum("iron_proxy_overhead_seconds_sum", &[]);
    assert_eq!(m.sum("iron_proxy_overhead_seconds_count", &[]), 1.0);
    eprintln!(
        "slow stream: total {total:.3} s, overhead {:.3} ms",
        overhead * 1e3
    );
    assert!(total >= 1.4, "the stream took {total} s");
    // Iron's own work on one small stream is well under a millisecond; 100 ms leaves room
    // for a loaded 2-core machine while a generation time of >= 1.4 s would fail it.
    assert!(
        overhead < 0.1,
        "overhead {overhead} s of a {total} s stream: upstream wait counted as overhead"
    );
}

/// `server_extra` lines go into `[server]`; a `[metrics]` table after them ends that table.
async fn harness_with_metrics(metrics: &str) -> Harness {
    Harness::start_with(&format!("\n[metrics]\n{metrics}\n")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_label_switched_off_exports_no_project_ids() {
    let h = harness_with_metrics("project_label = false").await;
    let c = reqwest::Client::new();
    for (token, status) in [(h.token(), 200), (h.token_for("prj_broke"), 402)] {
        let resp = c
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(token)
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
    }
    let series = "iron_proxy_budget_denials_total{project=\"all\"}";
    let text = h.wait_metric(series, 1.0).await;
    assert_eq!(metric(&text, series), 1.0, "{text}");
    let m = Exposition::parse(&text);
    assert_eq!(
        m.sum("iron_proxy_cost_microdollars_total", &[("project", "all")]),
        7.0
    );
    assert!(
        !text.contains("prj_"),
        "project ids in /metrics with project_label = false:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_beyond_the_cap_are_labelled_other() {
    let h = harness_with_metrics("max_projects = 1").await;
    let c = reqwest::Client::new();
    for token in [h.token(), h.token_for("prj_budget")] {
        let resp = c
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(token)
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let other = "iron_proxy_cost_microdollars_total{model=\"gpt-4o-mini\",project=\"other\",provider=\"mock-openai\"}";
    let text = h.wait_metric(other, 7.0).await;
    assert_eq!(metric(&text, other), 7.0, "{text}");
    let m = Exposition::parse(&text);
    assert_eq!(
        m.sum(
            "iron_proxy_cost_microdollars_total",
            &[("project", PROJECT)]
        ),
        7.0,
        "the first project keeps its own label"
    );
    assert!(
        !text.contains("prj_budget"),
        "a project beyond the cap has its own series:\n{text}"
    );
}
