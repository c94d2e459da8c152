//! Results of a harness run and how they are shown: a console table, a Markdown table for
//! `docs/benchmarks.md` (`--markdown`), and JSON (`--json`). Added latency is computed against
//! the direct run of the same scenario; the issue's targets are evaluated and reported, never
//! enforced (only errors fail a run).

use serde::Serialize;

use crate::fixtures::FeatureSet;
use crate::load::{RunStats, StreamsStats};
use crate::machine::Machine;
use crate::run::{Mode, Scenario};

/// Other processes' CPU (% of one core) above which latency figures are not judged.
pub const DISTURBED_PCT: f64 = 25.0;

/// Run parameters, stored with the results.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub closed_duration_s: f64,
    pub closed_concurrency: usize,
    pub max_conns: usize,
    pub scheduler_spin_us: u64,
    pub streams: usize,
    pub stream_delay_ms: u64,
    pub proxy_threads: usize,
    pub proxy_rust_log: String,
    /// The `[features]` of pass-through runs; `None` only when no proxy mode ran (a proxy
    /// that rejects `[features]` fails the run instead).
    pub passthrough_features: Option<FeatureSet>,
    /// Mock time to first byte (`x-mock-ttfb-ms`) on every measured request, ms (0: none).
    pub ttft_ms: u64,
    /// Events in a correct `stream` answer (learned from the mock).
    pub stream_events: usize,
}

/// Proxy-side figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyFigures {
    /// Proxy CPU time (user + system) per request during the open-loop run.
    pub cpu_us_per_req: Option<f64>,
    /// Proxy CPU use during the open-loop run, % of one core.
    pub cpu_util_pct: Option<f64>,
    /// Proxy CPU time per request during the closed-loop (max throughput) run.
    pub cpu_us_per_req_closed: Option<f64>,
    /// `VmHWM` of the proxy process after the run (it served only this scenario).
    pub peak_rss_mib: f64,
}

/// One mode × scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub mode: Mode,
    pub scenario: Scenario,
    /// Open-loop arrival rate, req/s.
    pub rate: f64,
    pub features: Option<FeatureSet>,
    pub open: RunStats,
    pub closed: Option<RunStats>,
    pub proxy: Option<ProxyFigures>,
    /// CPU use of the harness process (load generator + mock) during the open loop, % of one
    /// core: near 100 means the generator, not the proxy, limits the run.
    pub harness_cpu_pct: f64,
    /// CPU used by other processes on the machine during the open loop, % of one core:
    /// above a few % the figures are disturbed.
    pub other_cpu_pct: f64,
    /// Connections the mock accepted during the open loop: near the request count means the
    /// upstream connections are not reused.
    pub upstream_conns: usize,
}

/// Many streams at once through one proxy.
#[derive(Debug, Clone, Serialize)]
pub struct StreamsResult {
    pub mode: Mode,
    pub features: Option<FeatureSet>,
    pub idle_rss_mib: f64,
    pub max_sampled_rss_mib: f64,
    /// `VmHWM` after the streams ended.
    pub peak_rss_mib: f64,
    /// (peak − idle) / most concurrent streams.
    pub per_stream_kib: f64,
    pub stats: StreamsStats,
}

/// One of the issue's targets, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub name: String,
    pub target: String,
    pub measured: String,
    /// `None` when it could not be evaluated (a mode or scenario was not run).
    pub met: Option<bool>,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub notes: Vec<String>,
    pub results: Vec<ScenarioResult>,
    pub streams: Vec<StreamsResult>,
    pub targets: Vec<TargetCheck>,
}

impl Report {
    pub fn new(
        machine: Machine,
        settings: Settings,
        notes: Vec<String>,
        results: Vec<ScenarioResult>,
        streams: Vec<StreamsResult>,
    ) -> Report {
        let mut r = Report {
            machine,
            settings,
            notes,
            results,
            streams,
            targets: Vec::new(),
        };
        r.targets = r.evaluate_targets();
        r
    }

    fn find(&self, mode: Mode, scenario: Scenario) -> Option<&ScenarioResult> {
        self.results
            .iter()
            .find(|r| r.mode == mode && r.scenario == scenario)
    }

    /// (added p50, added p99) vs the direct run of the same scenario, in µs.
    pub fn added(&self, r: &ScenarioResult) -> Option<(f64, f64)> {
        let d = self.find(Mode::Direct, r.scenario)?;
        (r.mode != Mode::Direct).then_some((
            r.open.latency.p50_us - d.open.latency.p50_us,
            r.open.latency.p99_us - d.open.latency.p99_us,
        ))
    }

    /// Requests that failed, over every run.
    pub fn total_errors(&self) -> u64 {
        self.results
            .iter()
            .map(|r| r.open.errors + r.closed.as_ref().map_or(0, |c| c.errors))
            .chain(self.streams.iter().map(|s| s.stats.errors))
            .sum()
    }

    /// Every error sample, labelled with its run.
    pub fn error_samples(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.results {
            for (kind, s) in [("open", Some(&r.open)), ("closed", r.closed.as_ref())] {
                if let Some(s) = s {
                    for e in &s.error_samples {
                        out.push(format!(
                            "{} {} ({kind} loop): {e}",
                            r.mode.as_str(),
                            r.scenario.as_str()
                        ));
                    }
                }
            }
        }
        for s in &self.streams {
            for e in &s.stats.error_samples {
                out.push(format!("{} streams: {e}", s.mode.as_str()));
            }
        }
        out
    }

    /// Runs during which other processes used more than [`DISTURBED_PCT`] of a core.
    pub fn disturbed(&self) -> Vec<String> {
        self.results
            .iter()
            .filter(|r| r.other_cpu_pct > DISTURBED_PCT)
            .map(|r| {
                format!(
                    "{} {} ({:.0}%)",
                    r.mode.as_str(),
                    r.scenario.as_str(),
                    r.other_cpu_pct
                )
            })
            .collect()
    }

    fn evaluate_targets(&self) -> Vec<TargetCheck> {
        let mut out = Vec::new();
        for (scenario, limit, label) in [
            (Scenario::Nonstream, 1.3, "non-stream 1 KiB"),
            (Scenario::Large, 1.3, "non-stream 256 KiB"),
            (Scenario::Stream, 1.5, "streaming"),
        ] {
            let cpu = |m| {
                self.find(m, scenario)
                    .and_then(|r| r.proxy.as_ref())
                    .and_then(|p| p.cpu_us_per_req)
            };
            let (measured, met) = match (cpu(Mode::Full), cpu(Mode::Passthrough)) {
                (Some(f), Some(p)) if p > 0.0 => {
                    let ratio = f / p;
                    (
                        format!("{ratio:.2}× ({f:.1} / {p:.1} µs)"),
                        Some(ratio <= limit),
                    )
                }
                _ => ("not measured".into(), None),
            };
            out.push(TargetCheck {
                name: format!("proxy CPU per request, full vs pass-through, {label}"),
                target: format!("≤ {limit}×"),
                measured,
                met,
            });
        }
        for mode in [Mode::Full, Mode::Passthrough] {
            let direct = self.find(Mode::Direct, Scenario::Nonstream);
            let (measured, met) = match self.find(mode, Scenario::Nonstream) {
                Some(r) => match (self.added(r), direct) {
                    (Some((_, p99)), Some(d)) => {
                        let other = r.other_cpu_pct.max(d.other_cpu_pct);
                        let measured = format!("{:+.3} ms at {:.0} req/s", p99 / 1000.0, r.rate);
                        if other > DISTURBED_PCT {
                            (
                                format!(
                                    "{measured} (disturbed: other processes used {other:.0}% CPU)"
                                ),
                                None,
                            )
                        } else {
                            // The target is stated at 2,000 req/s.
                            (
                                measured,
                                ((r.rate - 2000.0).abs() < 1.0).then_some(p99 <= 300.0),
                            )
                        }
                    }
                    _ => ("no direct run".into(), None),
                },
                None => ("not measured".into(), None),
            };
            out.push(TargetCheck {
                name: format!("added p99 vs direct, non-stream, {}", mode.as_str()),
                target: "≤ 0.3 ms at 2,000 req/s".into(),
                measured,
                met,
            });
        }
        let (measured, met) = match self.streams.iter().find(|s| s.mode == Mode::Full) {
            Some(s) => (
                format!(
                    "{:.1} MiB with {} streams open",
                    s.peak_rss_mib, s.stats.max_concurrent
                ),
                (s.stats.max_concurrent >= 1000).then_some(s.peak_rss_mib <= 40.0),
            ),
            None => ("not measured".into(), None),
        };
        out.push(TargetCheck {
            name: "proxy peak RSS, 1,000 concurrent streams, full".into(),
            target: "≤ 40 MiB".into(),
            measured,
            met,
        });
        out
    }

    /// The console report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("machine: {}\n", self.machine.summary()));
        s.push_str(&format!("pinning: {}\n", self.machine.pinning_summary()));
        s.push_str(&format!(
            "runs: warm-up {:.1} s, open loop {:.1} s, closed loop {:.1} s × {} connections; proxy threads {}, RUST_LOG {}; mock TTFT {} ms\n",
            self.settings.warmup_s,
            self.settings.duration_s,
            self.settings.closed_duration_s,
            self.settings.closed_concurrency,
            self.settings.proxy_threads,
            self.settings.proxy_rust_log,
            self.settings.ttft_ms,
        ));
        for n in &self.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        let disturbed = self.disturbed();
        if !disturbed.is_empty() {
            s.push_str(&format!(
                "WARNING: other processes used the CPUs during {}: latencies are not representative\n",
                disturbed.join(", ")
            ));
        }
        if let Some(f) = self
            .results
            .iter()
            .find(|r| r.mode == Mode::Full)
            .and_then(|r| r.features)
            && f != FeatureSet::ALL_ON
        {
            s.push_str(&format!("note: full ran with only {f:?}\n"));
        }
        s.push('\n');
        s.push_str(&format!(
            "{:<11} {:<9} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8} {:>6}\n",
            "mode", "scenario", "rate", "p50 ms", "p90 ms", "p99 ms", "max ms", "+p50 ms", "+p99 ms",
            "req/s", "max req/s", "CPU µs/r", "@max µs/r", "RSS MiB", "errors"
        ));
        for r in &self.results {
            let l = &r.open.latency;
            let (a50, a99) = match self.added(r) {
                Some((a, b)) => (format!("{:+.3}", a / 1000.0), format!("{:+.3}", b / 1000.0)),
                None => ("—".into(), "—".into()),
            };
            let p = r.proxy.as_ref();
            s.push_str(&format!(
                "{:<11} {:<9} {:>6.0} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>9} {:>9} {:>8.0} {:>9} {:>9} {:>9} {:>8} {:>6}\n",
                r.mode.as_str(),
                r.scenario.as_str(),
                r.rate,
                l.p50_us / 1000.0,
                l.p90_us / 1000.0,
                l.p99_us / 1000.0,
                l.max_us / 1000.0,
                a50,
                a99,
                r.open.throughput_rps,
                r.closed.as_ref().map_or("—".into(), |c| format!("{:.0}", c.throughput_rps)),
                opt(p.and_then(|p| p.cpu_us_per_req), 1),
                opt(p.and_then(|p| p.cpu_us_per_req_closed), 1),
                p.map_or("—".into(), |p| format!("{:.1}", p.peak_rss_mib)),
                r.open.errors + r.closed.as_ref().map_or(0, |c| c.errors),
            ));
        }
        s.push_str("\ngenerator: ");
        for r in &self.results {
            s.push_str(&format!(
                "{}/{} lag p99 {} µs, harness CPU {:.0}%, other processes {:.0}%, upstream conns {}; ",
                r.mode.as_str(),
                r.scenario.as_str(),
                opt(r.open.lag.map(|l| l.p99_us), 0),
                r.harness_cpu_pct,
                r.other_cpu_pct,
                r.upstream_conns,
            ));
        }
        s.push('\n');
        for st in &self.streams {
            s.push_str(&format!("{}\n", streams_line(st)));
        }
        s.push_str("\ntargets (reported, not enforced):\n");
        for t in &self.targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "n/a",
            };
            s.push_str(&format!(
                "  {:<62} {:<26} {:<36} {verdict}\n",
                t.name, t.target, t.measured
            ));
        }
        s
    }

    /// Markdown tables for `docs/benchmarks.md`.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("Machine: {}.  \n", self.machine.summary()));
        s.push_str(&format!("Pinning: {}.\n\n", self.machine.pinning_summary()));
        if self.settings.ttft_ms > 0 {
            s.push_str(&format!(
                "The mock waited {} ms before every answer's headers (`--ttft-ms`).\n\n",
                self.settings.ttft_ms
            ));
        }
        for n in &self.notes {
            s.push_str(&format!("Note: {n}\n\n"));
        }
        let disturbed = self.disturbed();
        if !disturbed.is_empty() {
            s.push_str(&format!(
                "**Warning:** other processes used the CPUs during {} (share of one core in brackets): latencies of those runs are not representative.\n\n",
                disturbed.join(", ")
            ));
        }
        if let Some(f) = self
            .results
            .iter()
            .find(|r| r.mode == Mode::Full)
            .and_then(|r| r.features)
            && f != FeatureSet::ALL_ON
        {
            s.push_str(&format!("Note: `full` ran with only {f:?}.\n\n"));
        }
        s.push_str("| mode | scenario | rate (req/s) | p50 / p90 / p99 / max (ms) | added p50 / p99 vs direct (ms) | max req/s (closed, ");
        s.push_str(&format!("{} conns)", self.settings.closed_concurrency));
        s.push_str(" | proxy CPU µs/req (fixed rate / max) | proxy CPU at fixed rate | peak RSS (MiB) | errors |\n");
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.results {
            let l = &r.open.latency;
            let added = match self.added(r) {
                Some((a, b)) => format!("{:+.3} / {:+.3}", a / 1000.0, b / 1000.0),
                None => "—".into(),
            };
            let p = r.proxy.as_ref();
            s.push_str(&format!(
                "| {} | {} | {:.0} | {:.3} / {:.3} / {:.3} / {:.3} | {} | {} | {} / {} | {} | {} | {} |\n",
                r.mode.as_str(),
                r.scenario.as_str(),
                r.rate,
                l.p50_us / 1000.0,
                l.p90_us / 1000.0,
                l.p99_us / 1000.0,
                l.max_us / 1000.0,
                added,
                r.closed.as_ref().map_or("—".into(), |c| format!("{:.0}", c.throughput_rps)),
                opt(p.and_then(|p| p.cpu_us_per_req), 1),
                opt(p.and_then(|p| p.cpu_us_per_req_closed), 1),
                p.and_then(|p| p.cpu_util_pct)
                    .map_or("—".into(), |u| format!("{u:.0}%")),
                p.map_or("—".into(), |p| format!("{:.1}", p.peak_rss_mib)),
                r.open.errors + r.closed.as_ref().map_or(0, |c| c.errors),
            ));
        }
        s.push_str("\n| mode | scenario | generator lag p50 / p99 (µs) | harness CPU (load generator + mock) | other processes' CPU | connections opened (client / to the mock) |\n");
        s.push_str("|---|---|---:|---:|---:|---:|\n");
        for r in &self.results {
            s.push_str(&format!(
                "| {} | {} | {} / {} | {:.0}% | {:.0}% | {} / {} |\n",
                r.mode.as_str(),
                r.scenario.as_str(),
                opt(r.open.lag.map(|l| l.p50_us), 0),
                opt(r.open.lag.map(|l| l.p99_us), 0),
                r.harness_cpu_pct,
                r.other_cpu_pct,
                r.open.conns,
                r.upstream_conns,
            ));
        }
        if !self.streams.is_empty() {
            s.push_str("\n| mode | streams open at once | idle RSS (MiB) | peak RSS (MiB) | per stream (KiB) | errors |\n");
            s.push_str("|---|---:|---:|---:|---:|---:|\n");
            for st in &self.streams {
                s.push_str(&format!(
                    "| {} | {} of {} | {:.1} | {:.1} | {:.1} | {} |\n",
                    st.mode.as_str(),
                    st.stats.max_concurrent,
                    st.stats.streams,
                    st.idle_rss_mib,
                    st.peak_rss_mib,
                    st.per_stream_kib,
                    st.stats.errors
                ));
            }
        }
        s.push_str("\n| target | goal | measured | met |\n|---|---|---|---|\n");
        for t in &self.targets {
            let verdict = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            };
            s.push_str(&format!(
                "| {} | {} | {} | {verdict} |\n",
                t.name, t.target, t.measured
            ));
        }
        s
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.decimals$}"))
}

/// One line printed as soon as a run ends.
pub fn progress_line(r: &ScenarioResult) -> String {
    let l = &r.open.latency;
    let p = r.proxy.as_ref();
    format!(
        "[{} {}] {:.0} req/s: p50 {:.3} ms p99 {:.3} ms max {:.3} ms, ok {} errors {}, closed {} req/s, proxy CPU {} µs/req, RSS {} MiB, harness CPU {:.0}%, other processes {:.0}%",
        r.mode.as_str(),
        r.scenario.as_str(),
        r.rate,
        l.p50_us / 1000.0,
        l.p99_us / 1000.0,
        l.max_us / 1000.0,
        r.open.ok,
        r.open.errors,
        r.closed
            .as_ref()
            .map_or("—".into(), |c| format!("{:.0}", c.throughput_rps)),
        opt(p.and_then(|p| p.cpu_us_per_req), 1),
        p.map_or("—".into(), |p| format!("{:.1}", p.peak_rss_mib)),
        r.harness_cpu_pct,
        r.other_cpu_pct,
    )
}

/// The streams result in one line.
pub fn streams_line(s: &StreamsResult) -> String {
    format!(
        "[{} streams] {} of {} open at once: proxy RSS idle {:.1} MiB, peak {:.1} MiB (VmHWM), {:.1} KiB per stream, ok {} errors {}",
        s.mode.as_str(),
        s.stats.max_concurrent,
        s.stats.streams,
        s.idle_rss_mib,
        s.peak_rss_mib,
        s.per_stream_kib,
        s.stats.ok,
        s.stats.errors,
    )
}
