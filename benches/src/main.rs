//! `iron-bench`: the system load harness. Wires the command line, CPU pinning (re-executing
//! itself under `taskset` so the load generator and mock run on CPU 1 while the proxy runs on
//! CPU 0), the run ([`iron_bench::run`]) and the output; exits non-zero on any failed request.
//!
//! ```sh
//! cargo build --release -p iron-proxy -p iron-bench
//! target/release/iron-bench [--quick] [--mode direct,passthrough,full|all] \
//!     [--scenario nonstream,stream,large|all] [--rate N] [--duration S] [--ttft-ms N] \
//!     [--json out.json]
//! ```

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use iron_bench::fixtures::FeatureSet;
use iron_bench::machine::Machine;
use iron_bench::run::{Mode, Options, Scenario};

/// Set in the re-executed (pinned) harness.
const PINNED_ENV: &str = "IRON_BENCH_PINNED";
/// CPU of the proxy and of the harness when pinned.
const PROXY_CPU: &str = "0";
const HARNESS_CPU: &str = "1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Direct,
    Passthrough,
    Full,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FeatureArg {
    Budgets,
    Pii,
    Metering,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioArg {
    Nonstream,
    Stream,
    Large,
    All,
}

/// Load harness: Iron against a direct connection and a bare pass-through.
#[derive(Debug, Parser)]
#[command(name = "iron-bench", version)]
struct Args {
    /// CI mode: a few seconds per mode, lower rates, 100 streams; fails only on errors.
    #[arg(long)]
    quick: bool,
    /// Modes to run, in order (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    mode: Vec<ModeArg>,
    /// Scenarios to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    scenario: Vec<ScenarioArg>,
    /// Open-loop rate for every scenario, req/s [default: nonstream 2000, stream 500,
    /// large 200; with --quick 500, 100, 50].
    #[arg(long)]
    rate: Option<f64>,
    /// Open-loop measuring time per run, seconds [default: 10; --quick 2].
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up before each measured run, seconds [default: 2; --quick 0.5].
    #[arg(long)]
    warmup: Option<f64>,
    /// Closed-loop (max throughput) time per run, seconds; 0 skips it [default: 5; --quick 1].
    #[arg(long)]
    closed_duration: Option<f64>,
    /// Connections of the closed-loop run.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Most connections the open-loop generator opens.
    #[arg(long, default_value_t = 256)]
    max_conns: usize,
    /// Streams held open at once for the memory measurement; 0 skips it
    /// [default: 1000; --quick 100].
    #[arg(long)]
    streams: Option<usize>,
    /// Delay between stream events in the memory measurement, ms [default: 50; --quick 20].
    #[arg(long)]
    stream_delay_ms: Option<u64>,
    /// The mock waits this long before every answer's headers (`x-mock-ttfb-ms`), ms, in
    /// every mode: a provider's time to first token. 0 answers at once. An open loop needs
    /// about rate × TTFT / 1000 connections: raise --max-conns to match.
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Test hook: every measured request asks the mock for this fault (`x-mock-fault`, e.g.
    /// `status500`, `reset-mid-stream`), to check that failures fail the run.
    #[arg(long, hide = true)]
    mock_fault: Option<String>,
    /// The open-loop scheduler spins this long before each send instead of sleeping, µs.
    #[arg(long, default_value_t = 50)]
    spin_us: u64,
    /// The proxy binary [default: iron-proxy next to this executable].
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// pingora worker threads [default: 1 when pinned, else the number of cores].
    #[arg(long)]
    proxy_threads: Option<usize>,
    /// RUST_LOG for the proxy [default: unset, i.e. the proxy's default `info`].
    #[arg(long)]
    proxy_rust_log: Option<String>,
    /// Do not pin processes to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Run even if the proxy binary is older than its sources.
    #[arg(long)]
    allow_stale_proxy: bool,
    /// Stages the `full` mode turns on (comma-separated; to bisect their cost).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "budgets,pii,metering"
    )]
    full_features: Vec<FeatureArg>,
    /// Before each run, wait up to this many seconds for other processes to leave the CPUs
    /// idle (shared machines) [default: 0, do not wait].
    #[arg(long, default_value_t = 0)]
    wait_idle: u64,
    /// Write the full report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the results as Markdown tables (for docs/benchmarks.md).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

fn secs(v: Option<f64>, full: f64, quick: f64, is_quick: bool) -> Duration {
    Duration::from_secs_f64(v.unwrap_or(if is_quick { quick } else { full }).max(0.0))
}

fn taskset_works() -> bool {
    [PROXY_CPU, HARNESS_CPU].iter().all(|cpu| {
        Command::new("taskset")
            .args(["-c", cpu, "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Re-runs this harness under `taskset -c 1`; returns its exit code. A SIGTERM or Ctrl-C
/// is passed on to the pinned harness, which cleans up.
fn reexec_pinned() -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("locate the running executable")?;
    let mut child = Command::new("taskset")
        .args(["-c", HARNESS_CPU])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(PINNED_ENV, "1")
        .spawn()
        .context("run taskset")?;
    let pid = child.id().to_string();
    on_signal(move || {
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
    })?;
    let status = child.wait().context("wait for the pinned harness")?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iron-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `then` on a background thread when Ctrl-C or SIGTERM arrives.
fn on_signal(then: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("iron-bench-signals".into())
        .spawn(move || {
            let got = rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return false;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => true,
                    _ = term.recv() => true,
                }
            });
            if got {
                then();
            }
        })?;
    Ok(())
}

/// On Ctrl-C or SIGTERM: kill the proxies and remove the scratch directory, then exit 130.
fn cleanup_on_signal() -> anyhow::Result<()> {
    on_signal(|| {
        iron_bench::proxy::kill_all();
        let _ = std::fs::remove_dir_all(iron_bench::run::scratch_dir());
        eprintln!("iron-bench: interrupted");
        std::process::exit(130);
    })
}

fn real_main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let mut machine = Machine::detect();
    let pinned_child = std::env::var_os(PINNED_ENV).is_some();
    if !pinned_child {
        let why_not = if args.no_pin {
            Some("--no-pin")
        } else if machine.cores < 2 {
            Some("fewer than 2 cores")
        } else if !taskset_works() {
            Some("taskset not available or not allowed")
        } else {
            None
        };
        match why_not {
            None => return reexec_pinned(),
            Some(reason) => machine.pinning.note = Some(reason.to_owned()),
        }
    }
    machine.pinning.pinned = pinned_child;
    cleanup_on_signal()?;

    let modes = expand(&args.mode, ModeArg::All, &Mode::ALL, |m| match m {
        ModeArg::Direct => Mode::Direct,
        ModeArg::Passthrough => Mode::Passthrough,
        ModeArg::Full | ModeArg::All => Mode::Full,
    });
    let scenarios = expand(
        &args.scenario,
        ScenarioArg::All,
        &Scenario::ALL,
        |s| match s {
            ScenarioArg::Nonstream => Scenario::Nonstream,
            ScenarioArg::Stream => Scenario::Stream,
            ScenarioArg::Large | ScenarioArg::All => Scenario::Large,
        },
    );
    let q = args.quick;
    let opts = Options {
        quick: q,
        modes,
        scenarios,
        rate: args.rate,
        warmup: secs(args.warmup, 2.0, 0.5, q),
        duration: secs(args.duration, 10.0, 2.0, q),
        closed_duration: secs(args.closed_duration, 5.0, 1.0, q),
        concurrency: args.concurrency.max(1),
        max_conns: args.max_conns.max(1),
        streams: args.streams.unwrap_or(if q { 100 } else { 1000 }),
        stream_delay_ms: args.stream_delay_ms.unwrap_or(if q { 20 } else { 50 }),
        spin: Duration::from_micros(args.spin_us),
        proxy_bin: args.proxy_bin,
        proxy_threads: args
            .proxy_threads
            .unwrap_or(if pinned_child { 1 } else { machine.cores }),
        proxy_rust_log: args.proxy_rust_log,
        proxy_cpus: pinned_child.then(|| PROXY_CPU.to_owned()),
        allow_stale_proxy: args.allow_stale_proxy,
        wait_idle: Duration::from_secs(args.wait_idle),
        ttft_ms: args.ttft_ms,
        mock_fault: args.mock_fault,
        full_features: FeatureSet {
            budgets: args.full_features.contains(&FeatureArg::Budgets),
            pii: args.full_features.contains(&FeatureArg::Pii),
            metering: args.full_features.contains(&FeatureArg::Metering),
        },
        machine,
    };
    eprintln!("iron-bench: {}", opts.machine.summary());
    let report = iron_bench::run::run(opts)?;
    println!("{}", report.text());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, report.markdown())
            .with_context(|| format!("write {}", path.display()))?;
    }
    let errors = report.total_errors();
    if errors > 0 {
        eprintln!("iron-bench: FAILED: {errors} requests failed or broke:");
        for e in report.error_samples() {
            eprintln!("  {e}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The selected values in order, `all` standing for every value, without repeats.
fn expand<A: Copy + PartialEq, T: Copy + PartialEq>(
    args: &[A],
    all: A,
    every: &[T],
    map: impl Fn(A) -> T,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for a in args {
        let items: Vec<T> = if *a == all {
            every.to_vec()
        } else {
            vec![map(*a)]
        };
        for t in items {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}
