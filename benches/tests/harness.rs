//! The `iron-bench` binary end to end (issue 11), in direct mode against its in-process mock.
//!
//! The harness fails loudly (acceptance 3: "a benchmark of failing requests is not a
//! benchmark"). These tests run the built `iron-bench` binary, whose in-process testkit mock is
//! told to fail every measured request (the hidden `--mock-fault` hook sends `x-mock-fault`),
//! and check that the report counts every failed request and that the process exits 1; a
//! healthy run of the same shape exits 0. They also check that a proxy rejecting the
//! `[features]` switch is a hard error, never a silent fall-back to the full configuration.
//! And `--ttft-ms` makes the mock wait before every answer.
//!
//! Direct mode only (no `iron-proxy` binary needed): the checks on answers, the error count
//! and the exit decision are the same for every mode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Open-loop requests per run: `--rate 100 --duration 0.5`.
const REQUESTS: u64 = 50;

fn iron_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iron-bench"))
        .args([
            "--no-pin",
            "--quick",
            "--warmup",
            "0",
            "--closed-duration",
            "0",
        ])
        .args(["--streams", "0", "--rate", "100", "--duration", "0.5"])
        .args(args)
        .env_remove("IRON_BENCH_PINNED")
        .output()
        .expect("run iron-bench")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs direct mode with `extra` args and returns the exit output and the JSON report.
fn direct_run(dir: &Path, scenario: &str, extra: &[&str]) -> (Output, Value) {
    let json = dir.join(format!("{scenario}.json"));
    let json_arg = json.to_str().unwrap();
    let mut args = vec![
        "--mode",
        "direct",
        "--scenario",
        scenario,
        "--json",
        json_arg,
    ];
    args.extend_from_slice(extra);
    let out = iron_bench(&args);
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr:\n{}", stderr(&out)));
    (out, serde_json::from_str(&text).unwrap())
}

/// `(ok, errors, error samples)` of the single open-loop run in a report.
fn open_counts(report: &Value) -> (u64, u64, String) {
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{report}");
    let open = &results[0]["open"];
    (
        open["ok"].as_u64().unwrap(),
        open["errors"].as_u64().unwrap(),
        open["error_samples"].to_string(),
    )
}

#[test]
fn a_healthy_run_exits_zero_with_no_errors() {
    let dir = tempfile::tempdir().unwrap();
    for scenario in ["nonstream", "stream"] {
        let (out, report) = direct_run(dir.path(), scenario, &[]);
        assert_eq!(out.status.code(), Some(0), "{scenario}: {}", stderr(&out));
        assert_eq!(open_counts(&report).0, REQUESTS, "{scenario}");
        assert_eq!(open_counts(&report).1, 0, "{scenario}");
        assert_eq!(report["settings"]["ttft_ms"], 0, "{scenario}");
    }
}

#[test]
fn upstream_errors_are_counted_and_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = direct_run(dir.path(), "nonstream", &["--mock-fault", "status500"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (ok, errors, samples) = open_counts(&report);
    assert_eq!((ok, errors), (0, REQUESTS), "{samples}");
    assert!(samples.contains("HTTP 500"), "{samples}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("FAILED: {REQUESTS} requests failed")),
        "{err}"
    );
}

#[test]
fn broken_streams_are_counted_and_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    // Cut after two events; garbage after the second event; an error event in a 200 stream.
    for fault in ["reset-mid-stream", "malformed-sse", "error-event"] {
        let (out, report) = direct_run(dir.path(), "stream", &["--mock-fault", fault]);
        assert_eq!(out.status.code(), Some(1), "{fault}: {}", stderr(&out));
        let (ok, errors, samples) = open_counts(&report);
        assert_eq!((ok, errors), (0, REQUESTS), "{fault}: {samples}");
        assert!(stderr(&out).contains("FAILED"), "{fault}: {}", stderr(&out));
    }
}

/// A stand-in `iron-proxy` that accepts every configuration except one with `[features]`.
fn proxy_without_features(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("old-iron-proxy");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         # iron-proxy --config PATH [--check-config]\n\
         if grep -q '^\\[features\\]' \"$2\"; then\n\
         \x20 echo 'unknown field `features`' >&2; exit 1\n\
         fi\n\
         exit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_proxy_rejecting_features_is_a_hard_error_even_with_quick() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_without_features(dir.path());
    for mode in ["passthrough", "all"] {
        let out = iron_bench(&[
            "--mode",
            mode,
            "--scenario",
            "nonstream",
            "--proxy-bin",
            proxy.to_str().unwrap(),
            "--allow-stale-proxy",
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{mode}: {err}");
        assert!(
            err.contains("rejects the [features] table"),
            "{mode}: {err}"
        );
        // Nothing was measured under a wrong name.
        assert!(
            out.stdout.is_empty(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn ttft_ms_delays_every_answer_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = direct_run(dir.path(), "nonstream", &["--ttft-ms", "40"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["settings"]["ttft_ms"], 40);
    assert_eq!(open_counts(&report).0, REQUESTS);
    // Every answer waited 40 ms for its head: even the fastest is slower than that.
    let latency = &report["results"][0]["open"]["latency"];
    let p50 = latency["p50_us"].as_f64().unwrap();
    assert!(p50 >= 40_000.0, "p50 {p50} µs with a 40 ms TTFT");
}
