//! The harness run: starts the mock, then for each mode (direct, pass-through, full) and each
//! scenario a fresh proxy process, drives warm-up → open loop at a fixed rate → closed loop,
//! and reads the proxy's CPU time and peak RSS; then, per proxy mode, holds many streams open
//! at once to measure memory. Produces a [`Report`]; `main.rs` prints it and sets the exit code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde::Serialize;

use crate::fixtures::{self, BenchKeys, FeatureSet};
use crate::load::{self, Expect, OpenLoop, Pool, RunStats, StreamsStats, Target};
use crate::machine::Machine;
use crate::mock::MockServer;
use crate::procfs;
use crate::proxy::{Launcher, ProxyProcess};
use crate::report::{ProxyFigures, Report, ScenarioResult, StreamsResult};

/// What sits between the load generator and the mock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No proxy: the floor.
    Direct,
    /// Iron with auth + key swap only (`[features]` budgets, pii, metering off).
    Passthrough,
    /// Iron with every feature on.
    Full,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Direct, Mode::Passthrough, Mode::Full];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Passthrough => "passthrough",
            Mode::Full => "full",
        }
    }
}

/// The request mix of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// 1 KiB chat request, JSON answer of 16 tokens.
    Nonstream,
    /// 1 KiB chat request, streamed answer of 64 content chunks.
    Stream,
    /// 256 KiB chat request, JSON answer of 16 tokens.
    Large,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [Scenario::Nonstream, Scenario::Stream, Scenario::Large];

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Nonstream => "nonstream",
            Scenario::Stream => "stream",
            Scenario::Large => "large",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Nonstream => "1 KiB request, JSON answer, 16 tokens",
            Scenario::Stream => "1 KiB request, SSE answer, 64 chunks",
            Scenario::Large => "256 KiB request, JSON answer, 16 tokens",
        }
    }

    /// Fixed arrival rate (req/s) of the open-loop run.
    pub fn default_rate(self, quick: bool) -> f64 {
        match (self, quick) {
            (Scenario::Nonstream, false) => 2000.0,
            (Scenario::Stream, false) => 500.0,
            (Scenario::Large, false) => 200.0,
            (Scenario::Nonstream, true) => 500.0,
            (Scenario::Stream, true) => 100.0,
            (Scenario::Large, true) => 50.0,
        }
    }

    fn body(self) -> Bytes {
        match self {
            Scenario::Nonstream => fixtures::chat_body(1024, false),
            Scenario::Stream => fixtures::chat_body(1024, true),
            Scenario::Large => fixtures::chat_body(256 * 1024, false),
        }
    }

    fn mock_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Scenario::Nonstream | Scenario::Large => &[("x-mock-tokens", "16")],
            Scenario::Stream => &[("x-mock-chunks", "64"), ("x-mock-tokens", "64")],
        }
    }
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub modes: Vec<Mode>,
    pub scenarios: Vec<Scenario>,
    /// Overrides every scenario's default rate.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Closed-loop run length (zero: skip).
    pub closed_duration: Duration,
    pub concurrency: usize,
    /// Open-loop connection cap.
    pub max_conns: usize,
    /// Streams held open at once (zero: skip).
    pub streams: usize,
    pub stream_delay_ms: u64,
    pub spin: Duration,
    pub proxy_bin: Option<PathBuf>,
    pub proxy_threads: usize,
    pub proxy_rust_log: Option<String>,
    /// CPU list for the proxy's `taskset -c`, when pinning.
    pub proxy_cpus: Option<String>,
    pub allow_stale_proxy: bool,
    /// The stages `full` turns on (all by default; a subset bisects their cost).
    pub full_features: FeatureSet,
    /// Before each run, wait up to this long for other processes to leave the CPUs idle.
    pub wait_idle: Duration,
    /// Mock time to first byte on every measured request (`x-mock-ttfb-ms`), ms; 0: none.
    pub ttft_ms: u64,
    /// Test hook (`--mock-fault`, hidden): every measured request asks the mock for this
    /// fault (`x-mock-fault`), so the failure paths can be tested end to end. The probe that
    /// learns the stream's event count does not.
    pub mock_fault: Option<String>,
    pub machine: Machine,
}

/// Other processes may use at most this much CPU (% of one core) for the machine to count as
/// idle.
const IDLE_PCT: f64 = 10.0;

/// The run's scratch directory (configs, proxy logs).
pub fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("iron-bench-{}", std::process::id()))
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let dir = scratch_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Bench {
    opts: Options,
    rt: tokio::runtime::Runtime,
    mock: MockServer,
    mock_addr: SocketAddr,
    keys: BenchKeys,
    launcher: Option<Launcher>,
    passthrough_features: Option<FeatureSet>,
    stream_events: usize,
    notes: Vec<String>,
}

/// Runs the whole benchmark; see the module docs.
pub fn run(opts: Options) -> anyhow::Result<Report> {
    let tmp = TempDir::new()?;
    let mut machine = opts.machine.clone();
    machine.pinning.harness_cpus = procfs::cpus_allowed(std::process::id());
    machine.pinning.proxy_cpus = opts.proxy_cpus.clone();
    let mock = MockServer::start()?;
    let mock_addr: SocketAddr = mock
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .context("mock address")?;
    let keys = BenchKeys::generate()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("load generator runtime")?;
    let mut notes = Vec::new();
    if let Some(fault) = &opts.mock_fault {
        notes.push(format!(
            "test run: every measured request asked the mock for the fault `{fault}`"
        ));
    }
    let needs_proxy = opts.modes.iter().any(|m| *m != Mode::Direct);
    let (launcher, passthrough_features) = if needs_proxy {
        let binary = match &opts.proxy_bin {
            Some(p) => p.clone(),
            None => crate::proxy::default_binary()?,
        };
        if !binary.exists() {
            bail!(
                "{} not found: build it first, e.g. `cargo build {}-p iron-proxy -p iron-bench`",
                binary.display(),
                if cfg!(debug_assertions) {
                    ""
                } else {
                    "--release "
                }
            );
        }
        if let Some(stale) = crate::proxy::staleness(&binary) {
            if !opts.allow_stale_proxy {
                bail!("{stale}");
            }
            notes.push(format!("warning: {stale}"));
        }
        let launcher = Launcher {
            binary,
            pin: opts.proxy_cpus.clone(),
            threads: opts.proxy_threads,
            rust_log: opts.proxy_rust_log.clone(),
            dir: tmp.0.clone(),
            upstream: mock.base_url().to_owned(),
            public_key: keys.key.public_key(),
        };
        // Pass-through is only pass-through when the stages are really off: a proxy that
        // rejects the switch is a hard error (never a silent fall back to the default, full
        // configuration), with --quick too.
        if !launcher.accepts_features()? {
            bail!(
                "{} rejects the [features] table (`--check-config`): pass-through (budgets, pii, \
                 metering off) cannot be configured, and measuring the default configuration \
                 under that name would be wrong; use a proxy that supports [features] or run \
                 `--mode direct`",
                launcher.binary.display()
            );
        }
        (Some(launcher), Some(FeatureSet::ALL_OFF))
    } else {
        (None, None)
    };
    let mut bench = Bench {
        opts,
        rt,
        mock,
        mock_addr,
        keys,
        launcher,
        passthrough_features,
        stream_events: 0,
        notes,
    };
    bench.stream_events = bench.probe_stream_events()?;

    let mut results: Vec<ScenarioResult> = Vec::new();
    for mode in bench.opts.modes.clone() {
        for scenario in bench.opts.scenarios.clone() {
            let r = bench.run_one(mode, scenario, &mut machine)?;
            eprintln!("{}", crate::report::progress_line(&r));
            results.push(r);
        }
    }
    let mut streams = Vec::new();
    if bench.opts.streams > 0 {
        for mode in bench.opts.modes.clone() {
            if mode == Mode::Direct {
                continue;
            }
            let r = bench.run_streams(mode)?;
            eprintln!("{}", crate::report::streams_line(&r));
            streams.push(r);
        }
    }
    drop(bench.mock);
    let settings = crate::report::Settings {
        quick: bench.opts.quick,
        warmup_s: bench.opts.warmup.as_secs_f64(),
        duration_s: bench.opts.duration.as_secs_f64(),
        closed_duration_s: bench.opts.closed_duration.as_secs_f64(),
        closed_concurrency: bench.opts.concurrency,
        max_conns: bench.opts.max_conns,
        scheduler_spin_us: bench.opts.spin.as_micros() as u64,
        streams: bench.opts.streams,
        stream_delay_ms: bench.opts.stream_delay_ms,
        proxy_threads: bench.opts.proxy_threads,
        proxy_rust_log: bench
            .opts
            .proxy_rust_log
            .clone()
            .unwrap_or_else(|| "default (info)".into()),
        passthrough_features: bench.passthrough_features,
        ttft_ms: bench.opts.ttft_ms,
        stream_events: bench.stream_events,
    };
    Ok(Report::new(
        machine,
        settings,
        bench.notes,
        results,
        streams,
    ))
}

impl Bench {
    fn target(&self, scenario: Scenario, addr: SocketAddr, direct: bool) -> anyhow::Result<Target> {
        let body = scenario.body();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(&addr.to_string())?);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static("iron-bench/0.1"),
        );
        let auth = if direct {
            format!("Bearer {}", fixtures::PROVIDER_KEY)
        } else {
            format!("Bearer {}", self.keys.token)
        };
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&auth)?);
        for (k, v) in scenario.mock_headers() {
            headers.insert(*k, HeaderValue::from_static(v));
        }
        if self.opts.ttft_ms > 0 {
            headers.insert(
                iron_testkit::mock::scenario::headers::TTFB_MS,
                HeaderValue::from(self.opts.ttft_ms),
            );
        }
        if let Some(fault) = &self.opts.mock_fault {
            headers.insert(
                iron_testkit::mock::scenario::headers::FAULT,
                HeaderValue::from_str(fault).context("--mock-fault")?,
            );
        }
        Ok(Target {
            addr,
            path: "/v1/chat/completions".into(),
            headers,
            body,
            expect: match scenario {
                Scenario::Stream => Expect::Sse {
                    events: self.stream_events,
                },
                _ => Expect::Json,
            },
            timeout: Duration::from_secs(30),
        })
    }

    /// One streamed request straight to the mock: how many events a correct stream has.
    fn probe_stream_events(&self) -> anyhow::Result<usize> {
        let mut t = self.target(Scenario::Stream, self.mock_addr, true)?;
        t.expect = Expect::AnySse;
        t.headers
            .remove(iron_testkit::mock::scenario::headers::FAULT);
        let answer = self.rt.block_on(async {
            let mut c = load::Conn::open(t.addr).await?;
            c.exchange(&t, || {}).await
        });
        let answer = answer.map_err(|e| anyhow::anyhow!("probe stream from the mock: {e}"))?;
        Ok(answer.events)
    }

    /// Waits (up to `--wait-idle`) until other processes use less than [`IDLE_PCT`] of one
    /// core over a second.
    fn wait_idle(&self) -> anyhow::Result<()> {
        if self.opts.wait_idle.is_zero() {
            return Ok(());
        }
        let deadline = Instant::now() + self.opts.wait_idle;
        loop {
            let (b0, _) = procfs::machine_cpu()?;
            std::thread::sleep(Duration::from_secs(1));
            let (b1, _) = procfs::machine_cpu()?;
            let pct = 100.0 * b1.saturating_sub(b0).as_secs_f64();
            if pct < IDLE_PCT {
                return Ok(());
            }
            if Instant::now() > deadline {
                eprintln!(
                    "iron-bench: other processes still use {pct:.0}% CPU after waiting {:?}; measuring anyway",
                    self.opts.wait_idle
                );
                return Ok(());
            }
        }
    }

    fn features(&self, mode: Mode) -> Option<FeatureSet> {
        match mode {
            Mode::Direct => None,
            Mode::Passthrough => self.passthrough_features,
            Mode::Full => self.passthrough_features.map(|_| self.opts.full_features),
        }
    }

    fn start_proxy(&self, mode: Mode, name: &str) -> anyhow::Result<Option<ProxyProcess>> {
        match (mode, &self.launcher) {
            (Mode::Direct, _) => Ok(None),
            (_, Some(l)) => Ok(Some(l.start(name, self.features(mode))?)),
            (_, None) => bail!("no proxy launcher"),
        }
    }

    fn run_one(
        &self,
        mode: Mode,
        scenario: Scenario,
        machine: &mut Machine,
    ) -> anyhow::Result<ScenarioResult> {
        let o = &self.opts;
        let rate = o.rate.unwrap_or_else(|| scenario.default_rate(o.quick));
        self.wait_idle()?;
        let mut proxy =
            self.start_proxy(mode, &format!("{}-{}", mode.as_str(), scenario.as_str()))?;
        if let Some(p) = &proxy {
            machine.pinning.proxy_cpus = procfs::cpus_allowed(p.pid);
        }
        let addr = proxy.as_ref().map_or(self.mock_addr, |p| p.addr);
        let target = Arc::new(self.target(scenario, addr, mode == Mode::Direct)?);
        let pid = proxy.as_ref().map(|p| p.pid);
        let me = std::process::id();

        let (open, open_cpu, harness_pct, closed, closed_cpu) = self.rt.block_on(async {
            let pool = Pool::new(addr, o.max_conns);
            let warm = OpenLoop {
                rate,
                duration: o.warmup,
                spin: o.spin,
            };
            if !o.warmup.is_zero() {
                let w = load::open_loop(target.clone(), pool.clone(), warm).await?;
                if w.errors > 0 {
                    bail!(
                        "{} {}: {} errors during warm-up, e.g. {:?}",
                        mode.as_str(),
                        scenario.as_str(),
                        w.errors,
                        w.error_samples
                    );
                }
            }
            let cpu0 = pid.map(procfs::cpu_time).transpose()?;
            let me0 = procfs::cpu_time(me)?;
            let (busy0, _) = procfs::machine_cpu()?;
            let upstream0 = self.mock.connections();
            let t0 = Instant::now();
            let open = load::open_loop(
                target.clone(),
                pool,
                OpenLoop {
                    rate,
                    duration: o.duration,
                    spin: o.spin,
                },
            )
            .await?;
            let wall = t0.elapsed();
            let cpu1 = pid.map(procfs::cpu_time).transpose()?;
            let me1 = procfs::cpu_time(me)?;
            let (busy1, _) = procfs::machine_cpu()?;
            let upstream_conns = self.mock.connections().saturating_sub(upstream0);
            let open_cpu = cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a));
            let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64().max(1e-9);
            let harness = me1.saturating_sub(me0);
            let harness_pct = pct(harness);
            let foreign = busy1
                .saturating_sub(busy0)
                .saturating_sub(harness)
                .saturating_sub(open_cpu.unwrap_or_default());
            let harness_pct = (harness_pct, pct(foreign), upstream_conns);
            let (closed, closed_cpu) = if o.closed_duration.is_zero() {
                (None, None)
            } else {
                let c0 = pid.map(procfs::cpu_time).transpose()?;
                let closed =
                    load::closed_loop(target.clone(), o.concurrency, o.closed_duration).await?;
                let c1 = pid.map(procfs::cpu_time).transpose()?;
                (Some(closed), c0.zip(c1).map(|(a, b)| b.saturating_sub(a)))
            };
            Ok::<_, anyhow::Error>((open, open_cpu, harness_pct, closed, closed_cpu))
        })?;

        let proxy_figures = match &mut proxy {
            Some(p) => {
                if !p.alive() {
                    bail!(
                        "iron-proxy died during {} {}; log:\n{}",
                        mode.as_str(),
                        scenario.as_str(),
                        p.log_tail(30)
                    );
                }
                let mem = procfs::memory(p.pid)?;
                let per_req = |cpu: Option<Duration>, s: &RunStats| {
                    cpu.map(|c| c.as_secs_f64() * 1e6 / ((s.ok + s.errors).max(1)) as f64)
                };
                Some(ProxyFigures {
                    cpu_us_per_req: per_req(open_cpu, &open),
                    cpu_util_pct: open_cpu.map(|c| 100.0 * c.as_secs_f64() / open.wall_s.max(1e-9)),
                    cpu_us_per_req_closed: closed.as_ref().and_then(|c| per_req(closed_cpu, c)),
                    peak_rss_mib: mem.hwm as f64 / (1024.0 * 1024.0),
                })
            }
            None => None,
        };
        if let Some(p) = proxy {
            p.stop()?;
        }
        Ok(ScenarioResult {
            mode,
            scenario,
            rate,
            features: self.features(mode),
            open,
            closed,
            proxy: proxy_figures,
            harness_cpu_pct: harness_pct.0,
            other_cpu_pct: harness_pct.1,
            upstream_conns: harness_pct.2,
        })
    }

    fn run_streams(&self, mode: Mode) -> anyhow::Result<StreamsResult> {
        let o = &self.opts;
        self.wait_idle()?;
        let Some(mut proxy) = self.start_proxy(mode, &format!("{}-streams", mode.as_str()))? else {
            bail!("streams need a proxy");
        };
        let mut target = self.target(Scenario::Stream, proxy.addr, false)?;
        let delay = HeaderValue::from_str(&o.stream_delay_ms.to_string())?;
        target.headers.insert("x-mock-delay-ms", delay);
        target.timeout = Duration::from_secs(120);
        let target = Arc::new(target);
        let idle = procfs::memory(proxy.pid)?;
        let pid = proxy.pid;
        let mut max_rss = idle.rss;
        let stats: StreamsStats =
            self.rt
                .block_on(load::concurrent_streams(target, o.streams, |_active| {
                    if let Ok(m) = procfs::memory(pid) {
                        max_rss = max_rss.max(m.rss);
                    }
                }))?;
        if !proxy.alive() {
            bail!(
                "iron-proxy died while holding {} streams; log:\n{}",
                o.streams,
                proxy.log_tail(30)
            );
        }
        let end = procfs::memory(pid)?;
        proxy.stop()?;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        Ok(StreamsResult {
            mode,
            features: self.features(mode),
            idle_rss_mib: mib(idle.rss),
            max_sampled_rss_mib: mib(max_rss),
            peak_rss_mib: mib(end.hwm),
            per_stream_kib: (end.hwm.saturating_sub(idle.rss)) as f64
                / 1024.0
                / (stats.max_concurrent.max(1)) as f64,
            stats,
        })
    }
}
