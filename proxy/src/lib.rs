//! # iron-proxy
//!
//! Iron's data plane: a pingora proxy that verifies IC tokens, swaps them for provider keys
//! and relays OpenAI and Anthropic traffic (`design.md` §3). `main.rs` only wires; this crate
//! builds the server so tests can run the real thing in-process ([`start`]).
//!
//! Module map, in request order: [`proxy`] (the pingora hooks) runs [`stage`]s 1–9 over a
//! [`ctx::RequestCtx`], reading the [`state::Routing`] table (static [`config`] or control
//! mode) and talking to providers through [`client`]. [`admin`] serves metrics and probes.

pub mod admin;
pub mod breaker;
pub mod breaker_report;
pub mod client;
pub mod config;
pub mod conn;
pub mod control_api;
pub mod control_sync;
pub mod ctx;
pub mod deltas;
pub mod error;
pub mod guard;
pub mod ledger;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod reporter;
pub mod stage;
pub mod state;
pub mod telemetry;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;

use crate::client::{Net, Timeouts};
use crate::config::{ProxyConfig, Source};
use crate::proxy::{IronProxy, Shared};
use crate::state::Routing;

pub use config::ProxyConfig as Config;

/// Options for `iron up`: a proxy in control mode.
#[derive(Debug, Clone)]
pub struct ControlModeOptions {
    pub control_url: String,
    pub proxy_secret: String,
    pub listen: String,
    pub admin_listen: String,
    /// `security.allow_private_upstreams` (`iron up` is a local tool and sets it).
    pub allow_private_upstreams: bool,
}

/// Builds the shared state and the pingora server (not yet running).
///
/// With `exit_on_drain`, the process exits as soon as a graceful shutdown has drained every
/// request and returned every lease (instead of sleeping out pingora's whole grace period);
/// only the binary sets it.
pub fn build_server(
    config: &ProxyConfig,
    exit_on_drain: bool,
) -> anyhow::Result<(Server, Arc<Shared>)> {
    // Build the tokenizer (~0.2 s) and the PII automata (~0.15 s) now, not on the first request.
    if config.features.metering || config.features.budgets {
        let _ = iron_core::meter::Meter::global();
    }
    if config.features.pii {
        let _ = iron_core::pii::Detector::global();
    }
    let (routing, ready) = match &config.source {
        Source::Static(s) => (Routing::from_static(s).map_err(anyhow::Error::msg)?, true),
        // Empty until the first snapshot arrives; /readyz says so and agents get 503.
        Source::Control(_) => (Routing::empty(), false),
    };
    let timeouts = Timeouts {
        connect: config.upstream.connect_timeout,
        first_byte: config.upstream.first_byte_timeout,
        idle: config.upstream.idle_timeout,
    };
    let (api, local_leases): (Arc<dyn ledger::LeaseApi>, _) = match &config.source {
        Source::Static(s) => {
            let local = Arc::new(ledger::LocalLeases::new(
                s.projects
                    .iter()
                    .filter_map(|p| p.budget.map(|b| (p.id.clone(), b))),
            ));
            (local.clone(), Some(local))
        }
        Source::Control(c) => (
            Arc::new(
                control_api::HttpLeases::new(&c.url, c.proxy_secret.clone())
                    .context("control client")?,
            ),
            None,
        ),
    };
    let ledger_cfg = ledger::LedgerConfig {
        lease_size: config.budget.lease_size,
        fail_open_cap: config.budget.fail_open_cap,
        ..Default::default()
    };
    let ledger = ledger::Ledger::new(api, config.budget.proxy_id.clone(), ledger_cfg);
    let spill = match &config.budget.spill_dir {
        Some(dir) => Some(
            reporter::Spill::new(dir).with_context(|| format!("spill_dir {}", dir.display()))?,
        ),
        None => None,
    };
    let rate_api: Arc<dyn ratelimit::RateApi> = match &config.source {
        Source::Static(_) => Arc::new(ratelimit::LocalRateApi::default()),
        Source::Control(c) => Arc::new(
            ratelimit::HttpRateApi::new(&c.url, c.proxy_secret.clone())
                .context("control client")?,
        ),
    };
    let inflight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shared = Arc::new(Shared {
        rate: Arc::new(ratelimit::RateLimiter::new(rate_api)),
        routing: ArcSwap::from_pointee(routing),
        ready: AtomicBool::new(ready),
        net: Net::with_ca_file(
            timeouts,
            config.upstream.pool_idle,
            config.security.allow_private_upstreams,
            config.upstream.ca_file.as_deref(),
        )
        .map_err(anyhow::Error::msg)
        .context("upstream.ca_file")?,
        auth_limiter: guard::AuthLimiter::new(
            config.security.auth_failure_limit,
            config.security.auth_failure_window,
            config.security.auth_failure_max_ips,
        ),
        breakers: breaker::Breakers::new(config.upstream.breaker),
        ledger: ledger.clone(),
        local_leases,
        inflight: inflight.clone(),
        features: config.features,
        prices: ArcSwap::from_pointee(
            iron_core::pricing::PriceTable::embedded().context("embedded price table")?,
        ),
        budget: config.budget.clone(),
        server: config.server.clone(),
        metrics: metrics::Metrics::new(config.metrics).context("metrics registry")?,
    });

    let threads = if config.server.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        config.server.threads
    };
    let grace = config.server.shutdown_grace.as_secs();
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(grace.max(1)),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut http = pingora_proxy::http_proxy(
        &server.configuration,
        IronProxy {
            shared: shared.clone(),
        },
    );
    let mut opts = HttpServerOptions::default();
    opts.h2c = config.server.h2c;
    opts.h2_idle_timeout = Some(config.server.keepalive_timeout);
    http.server_options = Some(opts);
    // The connection watchdog (slowloris, idle connections) around pingora's app.
    let mut proxy = Service::new(
        "iron-proxy".to_owned(),
        conn::HardenedApp::new(http, config.server.h2c, config.server.header_read_timeout),
    );
    proxy.add_tcp(&config.server.listen.to_string());
    let mut admin = Service::new(
        "iron-proxy-admin".to_owned(),
        admin::AdminApp {
            shared: shared.clone(),
        },
    );
    admin.add_tcp(&config.server.admin_listen.to_string());
    server.add_service(proxy);
    server.add_service(admin);
    // In static mode there is no control to lose; in control mode the sync task keeps it true.
    shared
        .metrics
        .control_connected
        .set(i64::from(matches!(config.source, Source::Static(_))));
    // Weak: `shared` holds the ledger, which holds this observer.
    let observer = Arc::downgrade(&shared);
    ledger.observe_fail_open(Box::new(move |project, micros| {
        let Some(shared) = observer.upgrade() else {
            return;
        };
        let m = &shared.metrics;
        m.fail_open_spend
            .with_label_values(&[m.project(project)])
            .inc_by(micros);
    }));
    server.add_service(pingora_core::services::background::background_service(
        "iron-usage-reporter",
        reporter::Reporter {
            ledger,
            spill,
            memory: reporter::MemoryQueue::default(),
            inflight,
            grace: config.server.shutdown_grace,
            exit_when_done: exit_on_drain,
            pending_gauge: Some(shared.metrics.reports_pending.clone()),
            dropped_counter: Some(shared.metrics.usage_events_dropped.clone()),
        },
    ));
    if let Source::Control(source) = &config.source {
        let sync =
            control_sync::ControlSync::new(shared.clone(), source).context("control client")?;
        server.add_service(pingora_core::services::background::background_service(
            "iron-control-sync",
            sync,
        ));
        let breakers = breaker_report::BreakerReporter::new(
            shared.clone(),
            &source.url,
            &config.budget.proxy_id,
            source.proxy_secret.clone(),
        )
        .context("control client")?;
        server.add_service(pingora_core::services::background::background_service(
            "iron-breaker-report",
            breakers,
        ));
    }
    Ok((server, shared))
}

/// Blocks until SIGTERM/SIGINT (SIGQUIT: graceful upgrade).
pub fn run(config: &ProxyConfig) -> anyhow::Result<()> {
    let (server, _shared) = build_server(config, true)?;
    server.run(RunArgs::default());
    Ok(())
}

/// `iron up`: runs a proxy that loads its routing data from control.
///
/// `on_ready` is called once, from a helper thread, when the first routing snapshot has
/// loaded (`true`) or `ready_within` has passed without one (`false`); until then agents
/// get 503 "Iron is starting", so `iron up` prints its banner from here.
pub fn run_control_mode(
    opts: ControlModeOptions,
    ready_within: Duration,
    on_ready: impl FnOnce(bool) + Send + 'static,
) -> anyhow::Result<()> {
    let toml = format!(
        "[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n\n[security]\nallow_private_upstreams = {}\n\n[control]\nurl = \"{}\"\nproxy_secret_env = \"IRON_PROXY_SECRET\"\n",
        opts.listen, opts.admin_listen, opts.allow_private_upstreams, opts.control_url
    );
    let env: std::collections::BTreeMap<String, String> =
        [("IRON_PROXY_SECRET".to_owned(), opts.proxy_secret.clone())].into();
    let config = ProxyConfig::from_toml(&toml, &env)?;
    let (server, shared) = build_server(&config, true)?;
    std::thread::Builder::new()
        .name("iron-proxy-ready".into())
        .spawn(move || {
            let deadline = std::time::Instant::now() + ready_within;
            while !shared.is_ready() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            on_ready(shared.is_ready());
        })
        .context("starting the readiness watcher")?;
    server.run(RunArgs::default());
    Ok(())
}

struct ChannelSignal(tokio::sync::watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for ChannelSignal {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::GracefulTerminate
    }
}

/// A proxy running on a background thread (tests, embedding).
pub struct ProxyHandle {
    pub shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle").finish_non_exhaustive()
    }
}

impl ProxyHandle {
    /// Stops the proxy (graceful) and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts the proxy on a background thread; returns once the listeners are bound.
pub fn start(config: &ProxyConfig) -> anyhow::Result<ProxyHandle> {
    let (server, shared) = build_server(config, false)?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("iron-proxy".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(ChannelSignal(rx)),
            })
        })
        .context("spawn proxy thread")?;
    let handle = ProxyHandle {
        shared,
        stop,
        thread: Some(thread),
    };
    for addr in [config.server.listen, config.server.admin_listen] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "proxy did not start listening on {addr}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    Ok(handle)
}
