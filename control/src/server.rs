//! Building and running the control server: config → store → [`Service`] → router.
//!
//! [`build_state`] opens the store, checks the master key, makes sure a signing key exists,
//! registers the bootstrap admin key, and starts the background tasks: the event-log poller
//! (when configured) and the lease expiry sweep.
//! [`serve`] runs the router on a listener until a shutdown future resolves. `main.rs` and
//! `iron up` both go through these two functions.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::AppState;
use crate::config::{Config, StoreConfig};
use crate::error::ApiError;
use crate::service::{Clock, MasterKeyError, Service, SystemClock};
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::RedisStore;
use crate::store::{Store, StoreError};

/// Why control could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error("startup: {0}")]
    Init(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

impl From<ApiError> for StartupError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Internal(d) | ApiError::Unavailable(d) => StartupError::Init(d),
            other => StartupError::Init(other.to_string()),
        }
    }
}

/// Opens the configured store.
pub async fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match &cfg.store {
        StoreConfig::Embedded { path } => Arc::new(EmbeddedStore::open(path, cfg.events.retain)?),
        StoreConfig::Redis { url } => {
            Arc::new(RedisStore::connect(url.expose(), cfg.events.retain).await?)
        }
    })
}

/// A running control instance's shared state plus the handle that stops its background
/// tasks.
pub struct Control {
    pub state: AppState,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

impl Control {
    /// Stops background tasks (the event poller, the lease sweep).
    pub fn stop_background(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Builds the service on `store` (already opened) and prepares it for requests.
pub async fn build_with_store(
    cfg: &Config,
    store: Arc<dyn Store>,
) -> Result<Control, StartupError> {
    build_with_clock(cfg, store, Arc::new(SystemClock)).await
}

/// [`build_with_store`] with the lease protocol's time taken from `clock` (tests).
pub async fn build_with_clock(
    cfg: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<Control, StartupError> {
    let mut svc = Service::new(
        store.clone(),
        cfg.secrets.master_keys.clone(),
        cfg.secrets.proxy_secret.clone(),
        cfg.security.allow_private_upstreams,
    );
    svc.set_security(cfg.security.clone());
    svc.keepalive = cfg.events.keepalive;
    svc.max_body_bytes = cfg.server.max_body_bytes;
    svc.max_report_bytes = cfg.leases.max_report_bytes;
    svc.leases = cfg.leases.policy;
    svc.clock = clock;
    svc.dashboard_dir = cfg.dashboard.dir.clone();
    svc.check_master_key().await?;
    svc.ensure_signing_key().await?;
    if let Some(key) = &cfg.secrets.bootstrap_admin_key {
        svc.ensure_bootstrap_key(key).await?;
    }
    let svc = Arc::new(svc);
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    if let Some(interval) = cfg.events.poll_interval {
        let bus = svc.bus.clone();
        tokio::spawn(bus.run_poller(store, interval, until_stopped(stopped.clone())));
    }
    tokio::spawn(
        svc.clone()
            .run_lease_sweeper(cfg.leases.sweep_interval, until_stopped(stopped)),
    );
    let metrics =
        crate::metrics::Metrics::new().map_err(|e| StartupError::Init(format!("metrics: {e}")))?;
    Ok(Control {
        state: AppState {
            svc,
            metrics: Arc::new(metrics),
        },
        stop,
    })
}

/// Opens the store and builds the service.
pub async fn build_state(cfg: &Config) -> Result<Control, StartupError> {
    let store = open_store(cfg).await?;
    build_with_store(cfg, store).await
}

/// Binds the configured listen address.
pub async fn bind(cfg: &Config) -> Result<TcpListener, StartupError> {
    TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|source| StartupError::Listen {
            addr: cfg.server.listen.to_string(),
            source,
        })
}

/// Serves the API on `listener` until `shutdown` resolves (graceful: in-flight requests
/// finish; SSE streams are cut).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let svc = state.svc.clone();
    let shutdown = async move {
        shutdown.await;
        svc.begin_shutdown();
    };
    // Connection info: the peer address is the source IP of brute-force limits and audit.
    let app = crate::api::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(StartupError::Serve)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
