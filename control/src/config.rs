//! Configuration of `iron-control` (`design.md` §2): parsed, then validated.
//!
//! `control.toml` deserializes into `Raw*` structs with `deny_unknown_fields` (errors name
//! the path, via `serde_path_to_error`); every key can be overridden by an environment
//! variable `IRON_<SECTION>__<KEY>` (e.g. `IRON_STORE__KIND=redis`). The result is
//! validated into [`Config`]. Secrets come from the environment or from files, never from
//! the TOML itself, and live in [`Secret`]s. All environment access goes through the
//! [`Env`] trait so tests pass a map and never touch the process environment.
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:7070"
//! log_format = "json"          # or "text"
//! [store]
//! kind = "redis"               # or "embedded" (default) with path = "/var/lib/iron/control.redb"
//! url = "redis://redis:6379"   # may also come from IRON_STORE__URL; a Redis Cluster:
//!                              # "redis+cluster://r1:6379,r2:6379,r3:6379" (rediss+cluster:// for TLS)
//! [security]
//! allow_private_upstreams = false
//! master_key_file = "/run/secrets/iron_master_key"     # or IRON_MASTER_KEY
//! proxy_secret_file = "/run/secrets/iron_proxy_secret" # or IRON_PROXY_SECRET
//! session_ttl_secs = 43200     # dashboard session cookie lifetime (12 h)
//! secure_cookie = false        # true when the API is served over https
//! auth_failure_limit = 10      # failed key checks per source IP / key prefix per window → 429 (0 = off)
//! auth_failure_window_secs = 60
//! trusted_proxies = "10.0.0.0/8, 192.168.1.5"  # X-Forwarded-For honoured only from these
//! [events]
//! retain = 10000
//! poll_interval_ms = 200
//! [leases]
//! ttl_secs = 60                # a lease not reported/extended for this long expires
//! min_lease_usd = "0.0001"     # smallest adaptive slice
//! sweep_interval_ms = 2000     # expiry sweep
//! retain_secs = 604800         # tombstones and event ids kept for late/replayed reports
//! max_report_bytes = 8388608   # body limit of the lease routes (reports carry events)
//! [dashboard]
//! dir = "/usr/share/iron/dashboard"  # the built Control Panel (dashboard/dist), served at /
//! ```
//!
//! Secrets: `IRON_MASTER_KEY` (32 bytes, base64), `IRON_MASTER_KEY_PREVIOUS` (comma-separated
//! older keys, during a rotation), `IRON_PROXY_SECRET` (at least 16 characters),
//! `IRON_BOOTSTRAP_ADMIN_KEY` (optional `iron_ak_…` admin key registered at start). Each may
//! instead name a file: `IRON_<NAME>_FILE` or `security.<name>_file`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use iron_core::transit::{MasterKey, MasterKeyring};
use serde::Deserialize;

use crate::keys::Secret;
use crate::model::LeasePolicy;
use crate::store::DEFAULT_EVENT_RETENTION;

/// Reads environment variables. Production uses [`ProcessEnv`]; tests use [`MapEnv`].
pub trait Env: Send + Sync {
    fn var(&self, key: &str) -> Option<String>;
    /// All variables (used to find `IRON_<SECTION>__<KEY>` overrides).
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }

    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

/// A fixed map of variables (tests, `iron up`).
#[derive(Clone, Debug, Default)]
pub struct MapEnv(pub BTreeMap<String, String>);

impl MapEnv {
    pub fn new<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        MapEnv(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl Env for MapEnv {
    fn var(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Why the configuration is unusable. Messages name the key or variable, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("configuration key `{path}`: {message}")]
    Invalid { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{name} is not set: {hint}")]
    MissingSecret {
        name: &'static str,
        hint: &'static str,
    },
    #[error("{name}: {message}")]
    BadSecret { name: &'static str, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    events: RawEvents,
    #[serde(default)]
    leases: RawLeases,
    #[serde(default)]
    dashboard: RawDashboard,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDashboard {
    dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    log_format: Option<String>,
    max_body_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    kind: Option<String>,
    path: Option<PathBuf>,
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    allow_private_upstreams: Option<bool>,
    master_key_file: Option<PathBuf>,
    previous_master_keys_file: Option<PathBuf>,
    proxy_secret_file: Option<PathBuf>,
    bootstrap_admin_key_file: Option<PathBuf>,
    session_ttl_secs: Option<u64>,
    secure_cookie: Option<bool>,
    auth_failure_limit: Option<u64>,
    auth_failure_window_secs: Option<u64>,
    trusted_proxies: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    retain: Option<u64>,
    poll_interval_ms: Option<u64>,
    keepalive_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLeases {
    ttl_secs: Option<u64>,
    min_lease_usd: Option<String>,
    sweep_interval_ms: Option<u64>,
    retain_secs: Option<u64>,
    max_report_bytes: Option<u64>,
}

/// Types of the keys that environment variables may override.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
}

const KEYS: &[(&str, &str, Kind)] = &[
    ("server", "listen", Kind::Str),
    ("server", "log_format", Kind::Str),
    ("server", "max_body_bytes", Kind::Int),
    ("store", "kind", Kind::Str),
    ("store", "path", Kind::Str),
    ("store", "url", Kind::Str),
    ("security", "allow_private_upstreams", Kind::Bool),
    ("security", "master_key_file", Kind::Str),
    ("security", "previous_master_keys_file", Kind::Str),
    ("security", "proxy_secret_file", Kind::Str),
    ("security", "bootstrap_admin_key_file", Kind::Str),
    ("security", "session_ttl_secs", Kind::Int),
    ("security", "secure_cookie", Kind::Bool),
    ("security", "auth_failure_limit", Kind::Int),
    ("security", "auth_failure_window_secs", Kind::Int),
    ("security", "trusted_proxies", Kind::Str),
    ("events", "retain", Kind::Int),
    ("events", "poll_interval_ms", Kind::Int),
    ("events", "keepalive_secs", Kind::Int),
    ("leases", "ttl_secs", Kind::Int),
    ("leases", "min_lease_usd", Kind::Str),
    ("leases", "sweep_interval_ms", Kind::Int),
    ("leases", "retain_secs", Kind::Int),
    ("leases", "max_report_bytes", Kind::Int),
    ("dashboard", "dir", Kind::Str),
];

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    /// Largest accepted request body (413 above).
    pub max_body_bytes: usize,
}

#[derive(Clone, Debug)]
pub enum StoreConfig {
    Embedded {
        path: PathBuf,
    },
    /// The URL may carry a password, so it is a secret.
    Redis {
        url: Secret,
    },
}

#[derive(Clone, Debug)]
pub struct SecurityConfig {
    /// Accept plain-http and loopback/private provider URLs (`iron up`, tests).
    pub allow_private_upstreams: bool,
    /// Lifetime of a dashboard session cookie (`POST /v1/session`).
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (set when the API is served over https).
    pub secure_cookie: bool,
    /// Failed API-key / session checks allowed per source IP and per key prefix within
    /// `auth_failure_window`; more are answered 429 without checking the key.
    pub auth_failure_limit: u32,
    pub auth_failure_window: Duration,
    /// Peers whose `X-Forwarded-For` names the client (CIDRs); empty = none, the TCP peer
    /// is the source.
    pub trusted_proxies: Vec<Cidr>,
}

/// Default dashboard session lifetime (12 h).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Default failed-auth budget per window.
pub const DEFAULT_AUTH_FAILURE_LIMIT: u32 = 10;
/// Default failed-auth window.
pub const DEFAULT_AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);

impl SecurityConfig {
    /// Defaults with `allow_private_upstreams` as given.
    pub fn with_private_upstreams(allow_private_upstreams: bool) -> Self {
        SecurityConfig {
            allow_private_upstreams,
            session_ttl: DEFAULT_SESSION_TTL,
            secure_cookie: false,
            auth_failure_limit: DEFAULT_AUTH_FAILURE_LIMIT,
            auth_failure_window: DEFAULT_AUTH_FAILURE_WINDOW,
            trusted_proxies: Vec::new(),
        }
    }
}

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `::1/128`; a bare address = one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct EventsConfig {
    /// Events kept for `Last-Event-ID` replay.
    pub retain: usize,
    /// How often to poll the store's event log for events written by other replicas
    /// (`None` = never; right for a single embedded-store process).
    pub poll_interval: Option<Duration>,
    /// SSE keep-alive comment interval.
    pub keepalive: Duration,
}

/// The lease protocol (`design.md` §6).
#[derive(Clone, Debug)]
pub struct LeasesConfig {
    pub policy: LeasePolicy,
    /// How often each replica runs the expiry sweep.
    pub sweep_interval: Duration,
    /// Body limit of the `/internal/v1/leases` routes (reports carry usage events).
    pub max_report_bytes: usize,
}

impl Default for LeasesConfig {
    fn default() -> Self {
        LeasesConfig {
            policy: LeasePolicy::default(),
            sweep_interval: Duration::from_secs(2),
            max_report_bytes: DEFAULT_MAX_REPORT,
        }
    }
}

/// Secrets. No `Serialize`; `Debug` hides values.
#[derive(Clone, Debug)]
pub struct Secrets {
    pub master_keys: Arc<MasterKeyring>,
    pub proxy_secret: Secret,
    pub bootstrap_admin_key: Option<Secret>,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub security: SecurityConfig,
    pub events: EventsConfig,
    pub leases: LeasesConfig,
    pub dashboard: DashboardConfig,
    pub secrets: Secrets,
}

/// The Control Panel (`dashboard/`), served at `/`.
#[derive(Clone, Debug, Default)]
pub struct DashboardConfig {
    /// The built dashboard (`npm run build` → `dashboard/dist`); `None` = a page that says
    /// how to build it.
    pub dir: Option<PathBuf>,
}

/// Default listen address of control.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7070";
/// Default request body limit.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Default body limit of lease reports.
pub const DEFAULT_MAX_REPORT: usize = 8 * 1024 * 1024;

impl Config {
    /// A configuration for a single local process (`iron up`, tests): embedded store at
    /// `store_path`, private upstreams allowed, no event polling.
    pub fn local(store_path: PathBuf, listen: SocketAddr, secrets: Secrets) -> Config {
        Config {
            server: ServerConfig {
                listen,
                log_format: LogFormat::Text,
                max_body_bytes: DEFAULT_MAX_BODY,
            },
            store: StoreConfig::Embedded { path: store_path },
            security: SecurityConfig::with_private_upstreams(true),
            events: EventsConfig {
                retain: DEFAULT_EVENT_RETENTION,
                poll_interval: None,
                keepalive: Duration::from_secs(15),
            },
            leases: LeasesConfig::default(),
            dashboard: DashboardConfig::default(),
            secrets,
        }
    }
}

/// Loads `path` (optional: all defaults without it), applies env overrides, validates, and
/// reads the secrets.
pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
    let mut table = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?;
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError::Syntax {
                    path: p.to_owned(),
                    message: e.message().to_owned(),
                })?
        }
        None => toml::Table::new(),
    };
    apply_env_overrides(&mut table, env)?;
    let raw: RawConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            ConfigError::Invalid {
                path: e.path().to_string(),
                message: e.inner().message().to_owned(),
            }
        })?;
    validate(raw, env)
}

fn apply_env_overrides(table: &mut toml::Table, env: &dyn Env) -> Result<(), ConfigError> {
    let mut vars = env.vars();
    vars.sort();
    for (var, value) in vars {
        let Some(rest) = var.strip_prefix("IRON_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let Some((_, _, kind)) = KEYS.iter().find(|(s, k, _)| *s == section && *k == key) else {
            return Err(ConfigError::Env {
                var,
                message: format!("unknown configuration key `{section}.{key}`"),
            });
        };
        let v = match kind {
            Kind::Str => toml::Value::String(value),
            Kind::Int => {
                toml::Value::Integer(value.trim().parse().map_err(|_| ConfigError::Env {
                    var: var.clone(),
                    message: "expected a non-negative integer".into(),
                })?)
            }
            Kind::Bool => toml::Value::Boolean(match value.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError::Env {
                        var,
                        message: "expected true or false".into(),
                    });
                }
            }),
        };
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key, v);
            }
            _ => {
                return Err(ConfigError::Invalid {
                    path: section,
                    message: "must be a table".into(),
                });
            }
        }
    }
    Ok(())
}

fn invalid(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

fn validate(raw: RawConfig, env: &dyn Env) -> Result<Config, ConfigError> {
    let listen = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| invalid("server.listen", "expected an address such as 0.0.0.0:7070"))?;
    let log_format = match raw.server.log_format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        _ => {
            return Err(invalid(
                "server.log_format",
                "expected \"text\" or \"json\"",
            ));
        }
    };
    let max_body_bytes = match raw.server.max_body_bytes {
        None => DEFAULT_MAX_BODY,
        Some(n) if (1024..=16 * 1024 * 1024).contains(&n) => n as usize,
        Some(_) => {
            return Err(invalid(
                "server.max_body_bytes",
                "expected 1024 to 16777216",
            ));
        }
    };
    let store = match raw.store.kind.as_deref().unwrap_or("embedded") {
        "embedded" => {
            if raw.store.url.is_some() {
                return Err(invalid("store.url", "only used with kind = \"redis\""));
            }
            StoreConfig::Embedded {
                path: raw
                    .store
                    .path
                    .unwrap_or_else(|| PathBuf::from("iron-control.redb")),
            }
        }
        "redis" => {
            if raw.store.path.is_some() {
                return Err(invalid("store.path", "only used with kind = \"embedded\""));
            }
            let url = raw.store.url.ok_or_else(|| {
                invalid(
                    "store.url",
                    "required with kind = \"redis\" (e.g. redis://host:6379)",
                )
            })?;
            match crate::store::redis::cluster_nodes(&url) {
                Some(Err(why)) => return Err(invalid("store.url", &why)),
                Some(Ok(_)) => {}
                None if url.starts_with("redis://") || url.starts_with("rediss://") => {}
                None => {
                    return Err(invalid(
                        "store.url",
                        "expected a redis:// or rediss:// URL, or redis+cluster://host:port,… \
                         (rediss+cluster://…) for a Redis Cluster",
                    ));
                }
            }
            StoreConfig::Redis {
                url: Secret::new(url),
            }
        }
        _ => return Err(invalid("store.kind", "expected \"embedded\" or \"redis\"")),
    };
    let retain = match raw.events.retain {
        None => DEFAULT_EVENT_RETENTION,
        Some(n) if (10..=1_000_000).contains(&n) => n as usize,
        Some(_) => return Err(invalid("events.retain", "expected 10 to 1000000")),
    };
    let default_poll = if matches!(store, StoreConfig::Redis { .. }) {
        200
    } else {
        0
    };
    let poll_interval = match raw.events.poll_interval_ms.unwrap_or(default_poll) {
        0 => None,
        n if (10..=60_000).contains(&n) => Some(Duration::from_millis(n)),
        _ => {
            return Err(invalid(
                "events.poll_interval_ms",
                "expected 0 (off) or 10 to 60000",
            ));
        }
    };
    let keepalive = match raw.events.keepalive_secs.unwrap_or(15) {
        n if (1..=300).contains(&n) => Duration::from_secs(n),
        _ => return Err(invalid("events.keepalive_secs", "expected 1 to 300")),
    };
    let leases = validate_leases(raw.leases)?;
    let sec = raw.security;
    let security = validate_security(&sec)?;
    let secrets = load_secrets(
        env,
        sec.master_key_file.as_deref(),
        sec.previous_master_keys_file.as_deref(),
        sec.proxy_secret_file.as_deref(),
        sec.bootstrap_admin_key_file.as_deref(),
    )?;
    Ok(Config {
        server: ServerConfig {
            listen,
            log_format,
            max_body_bytes,
        },
        store,
        security,
        events: EventsConfig {
            retain,
            poll_interval,
            keepalive,
        },
        leases,
        dashboard: DashboardConfig {
            dir: raw.dashboard.dir,
        },
        secrets,
    })
}

fn validate_security(sec: &RawSecurity) -> Result<SecurityConfig, ConfigError> {
    let mut out =
        SecurityConfig::with_private_upstreams(sec.allow_private_upstreams.unwrap_or(false));
    out.secure_cookie = sec.secure_cookie.unwrap_or(false);
    if let Some(n) = sec.session_ttl_secs {
        if !(60..=30 * 86_400).contains(&n) {
            return Err(invalid(
                "security.session_ttl_secs",
                "expected 60 to 2592000",
            ));
        }
        out.session_ttl = Duration::from_secs(n);
    }
    if let Some(n) = sec.auth_failure_limit {
        if n > 100_000 {
            return Err(invalid(
                "security.auth_failure_limit",
                "expected 0 (off) to 100000",
            ));
        }
        out.auth_failure_limit = n as u32;
    }
    if let Some(n) = sec.auth_failure_window_secs {
        if !(1..=86_400).contains(&n) {
            return Err(invalid(
                "security.auth_failure_window_secs",
                "expected 1 to 86400",
            ));
        }
        out.auth_failure_window = Duration::from_secs(n);
    }
    if let Some(list) = &sec.trusted_proxies {
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let cidr = Cidr::parse(item).ok_or_else(|| {
                invalid(
                    "security.trusted_proxies",
                    format!("`{item}` is not an IP address or CIDR (e.g. 10.0.0.0/8)"),
                )
            })?;
            out.trusted_proxies.push(cidr);
        }
    }
    Ok(out)
}

fn validate_leases(raw: RawLeases) -> Result<LeasesConfig, ConfigError> {
    let d = LeasesConfig::default();
    let ttl_secs = match raw.ttl_secs {
        None => d.policy.ttl_secs,
        Some(n) if (1..=86_400).contains(&n) => n,
        Some(_) => return Err(invalid("leases.ttl_secs", "expected 1 to 86400")),
    };
    let min_lease = match raw.min_lease_usd.as_deref() {
        None => d.policy.min_lease,
        Some(v) => v
            .parse::<iron_core::Money>()
            .map_err(|e| invalid("leases.min_lease_usd", e.to_string()))?,
    };
    let sweep_interval = match raw.sweep_interval_ms {
        None => d.sweep_interval,
        Some(n) if (50..=600_000).contains(&n) => Duration::from_millis(n),
        Some(_) => {
            return Err(invalid("leases.sweep_interval_ms", "expected 50 to 600000"));
        }
    };
    let retain_secs = match raw.retain_secs {
        None => d.policy.retain_secs,
        Some(n) if n >= ttl_secs.max(60) => n,
        Some(_) => {
            return Err(invalid(
                "leases.retain_secs",
                "expected at least 60 and at least leases.ttl_secs",
            ));
        }
    };
    let max_report_bytes = match raw.max_report_bytes {
        None => d.max_report_bytes,
        Some(n) if (65_536..=256 * 1024 * 1024).contains(&n) => n as usize,
        Some(_) => {
            return Err(invalid(
                "leases.max_report_bytes",
                "expected 65536 to 268435456",
            ));
        }
    };
    Ok(LeasesConfig {
        policy: LeasePolicy {
            ttl_secs,
            min_lease,
            retain_secs,
        },
        sweep_interval,
        max_report_bytes,
    })
}

/// Reads secret `name` from the env var, else from the file named by `<name>_FILE`, else
/// from `file` (config).
fn secret(
    env: &dyn Env,
    name: &'static str,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(v) = env.var(name).filter(|v| !v.trim().is_empty()) {
        return Ok(Some(Secret::new(v.trim().to_owned())));
    }
    let file_var = format!("{name}_FILE");
    let path = env
        .var(&file_var)
        .map(PathBuf::from)
        .or_else(|| file.map(Path::to_owned));
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::BadSecret {
        name,
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    let text = zeroize::Zeroizing::new(text);
    Ok(Some(Secret::new(text.trim().to_owned())))
}

fn load_secrets(
    env: &dyn Env,
    master_file: Option<&Path>,
    previous_file: Option<&Path>,
    proxy_file: Option<&Path>,
    admin_file: Option<&Path>,
) -> Result<Secrets, ConfigError> {
    let master = secret(env, "IRON_MASTER_KEY", master_file)?.ok_or(ConfigError::MissingSecret {
        name: "IRON_MASTER_KEY",
        hint: "32 random bytes, base64 (e.g. `openssl rand -base64 32`), or IRON_MASTER_KEY_FILE",
    })?;
    let current = MasterKey::from_base64(master.expose()).map_err(|_| ConfigError::BadSecret {
        name: "IRON_MASTER_KEY",
        message: "expected 32 bytes, base64-encoded".into(),
    })?;
    let mut previous = Vec::new();
    if let Some(prev) = secret(env, "IRON_MASTER_KEY_PREVIOUS", previous_file)? {
        for part in prev
            .expose()
            .split([',', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            previous.push(
                MasterKey::from_base64(part).map_err(|_| ConfigError::BadSecret {
                    name: "IRON_MASTER_KEY_PREVIOUS",
                    message: "expected comma-separated 32-byte base64 keys".into(),
                })?,
            );
        }
    }
    let proxy_secret =
        secret(env, "IRON_PROXY_SECRET", proxy_file)?.ok_or(ConfigError::MissingSecret {
            name: "IRON_PROXY_SECRET",
            hint: "the shared secret proxies present to /internal/v1 (at least 16 characters)",
        })?;
    if proxy_secret.expose().len() < 16 {
        return Err(ConfigError::BadSecret {
            name: "IRON_PROXY_SECRET",
            message: "must be at least 16 characters".into(),
        });
    }
    let bootstrap_admin_key = secret(env, "IRON_BOOTSTRAP_ADMIN_KEY", admin_file)?;
    if let Some(k) = &bootstrap_admin_key
        && (!k.expose().starts_with(crate::keys::API_KEY_PREFIX) || k.expose().len() < 30)
    {
        return Err(ConfigError::BadSecret {
            name: "IRON_BOOTSTRAP_ADMIN_KEY",
            message: "expected an iron_ak_… key of at least 30 characters".into(),
        });
    }
    Ok(Secrets {
        master_keys: Arc::new(MasterKeyring::new(current, previous)),
        proxy_secret,
        bootstrap_admin_key,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn env(extra: &[(&str, &str)]) -> MapEnv {
        let key = MasterKey::generate().to_base64();
        let mut m = MapEnv::new([
            ("IRON_MASTER_KEY", key.as_str()),
            ("IRON_PROXY_SECRET", "0123456789abcdef0123"),
        ]);
        for (k, v) in extra {
            m.0.insert((*k).into(), (*v).into());
        }
        m
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults_without_a_file() {
        let c = load(None, &env(&[])).unwrap();
        assert_eq!(c.server.listen.port(), 7070);
        assert!(matches!(c.store, StoreConfig::Embedded { .. }));
        assert!(!c.security.allow_private_upstreams);
        assert!(c.events.poll_interval.is_none());
    }

    #[test]
    fn session_and_auth_failure_settings() {
        let c = load(None, &env(&[])).unwrap();
        assert_eq!(c.security.session_ttl, DEFAULT_SESSION_TTL);
        assert!(!c.security.secure_cookie);
        assert_eq!(c.security.auth_failure_limit, 10);
        assert!(c.security.trusted_proxies.is_empty());
        let f = write(
            "[security]\nsession_ttl_secs = 600\nsecure_cookie = true\nauth_failure_limit = 3\n\
             auth_failure_window_secs = 30\ntrusted_proxies = \"10.0.0.0/8, ::1, 192.168.1.5\"\n",
        );
        let c = load(Some(f.path()), &env(&[])).unwrap();
        assert_eq!(c.security.session_ttl, Duration::from_secs(600));
        assert!(c.security.secure_cookie);
        assert_eq!(c.security.auth_failure_limit, 3);
        assert_eq!(c.security.auth_failure_window, Duration::from_secs(30));
        let t = &c.security.trusted_proxies;
        assert_eq!(t.len(), 3);
        assert!(t[0].contains("10.200.0.1".parse().unwrap()));
        assert!(t[0].contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!t[0].contains("11.0.0.1".parse().unwrap()));
        assert!(t[1].contains("::1".parse().unwrap()));
        assert!(t[2].contains("192.168.1.5".parse().unwrap()));
        assert!(!t[2].contains("192.168.1.6".parse().unwrap()));
        let c = load(
            None,
            &env(&[("IRON_SECURITY__TRUSTED_PROXIES", "172.16.0.0/12")]),
        )
        .unwrap();
        assert!(c.security.trusted_proxies[0].contains("172.31.255.255".parse().unwrap()));
        for (var, value, path) in [
            (
                "IRON_SECURITY__TRUSTED_PROXIES",
                "10.0.0.0/33",
                "trusted_proxies",
            ),
            (
                "IRON_SECURITY__TRUSTED_PROXIES",
                "proxy.local",
                "trusted_proxies",
            ),
            ("IRON_SECURITY__SESSION_TTL_SECS", "5", "session_ttl_secs"),
            (
                "IRON_SECURITY__AUTH_FAILURE_WINDOW_SECS",
                "0",
                "auth_failure_window_secs",
            ),
        ] {
            let e = load(None, &env(&[(var, value)])).unwrap_err().to_string();
            assert!(e.contains(path), "{var}={value}: {e}");
        }
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let f = write("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n");
        let e = load(Some(f.path()), &env(&[])).unwrap_err().to_string();
        assert!(e.contains("server") && e.contains("listne"), "{e}");
        let f = write("[stroe]\nkind = \"redis\"\n");
        let e = load(Some(f.path()), &env(&[])).unwrap_err().to_string();
        assert!(e.contains("stroe"), "{e}");
        let f = write("[store]\nkind = 5\n");
        let e = load(Some(f.path()), &env(&[])).unwrap_err().to_string();
        assert!(e.contains("store.kind"), "{e}");
    }

    #[test]
    fn env_overrides_every_key_with_types() {
        let f = write("[store]\nkind = \"embedded\"\npath = \"/tmp/x.redb\"\n");
        let c = load(
            Some(f.path()),
            &env(&[
                ("IRON_STORE__KIND", "redis"),
                ("IRON_STORE__URL", "redis://127.0.0.1:1"),
                ("IRON_STORE__PATH", ""),
                ("IRON_SECURITY__ALLOW_PRIVATE_UPSTREAMS", "true"),
                ("IRON_SERVER__LISTEN", "127.0.0.1:9"),
                ("IRON_EVENTS__POLL_INTERVAL_MS", "50"),
            ]),
        );
        // path is set (empty) while kind is redis: rejected with the path named.
        let e = c.unwrap_err().to_string();
        assert!(e.contains("store.path"), "{e}");
        let c = load(
            None,
            &env(&[
                ("IRON_STORE__KIND", "redis"),
                ("IRON_STORE__URL", "redis://127.0.0.1:1"),
                ("IRON_SECURITY__ALLOW_PRIVATE_UPSTREAMS", "true"),
                ("IRON_SERVER__LISTEN", "127.0.0.1:9"),
                ("IRON_EVENTS__POLL_INTERVAL_MS", "50"),
            ]),
        )
        .unwrap();
        assert!(matches!(c.store, StoreConfig::Redis { .. }));
        assert!(c.security.allow_private_upstreams);
        assert_eq!(c.server.listen.port(), 9);
        assert_eq!(c.events.poll_interval, Some(Duration::from_millis(50)));
        let e = load(None, &env(&[("IRON_SERVER__LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("IRON_SERVER__LISTN") && e.contains("server.listn"),
            "{e}"
        );
        let e = load(
            None,
            &env(&[("IRON_SECURITY__ALLOW_PRIVATE_UPSTREAMS", "yes")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("true or false"), "{e}");
    }

    #[test]
    fn redis_cluster_urls_are_accepted_and_checked() {
        let with_url = |url: &str| {
            load(
                None,
                &env(&[("IRON_STORE__KIND", "redis"), ("IRON_STORE__URL", url)]),
            )
        };
        for url in [
            "redis+cluster://r1:6379,r2:6379,r3:6379",
            "rediss+cluster://:pw@r1:6380,r2:6380/",
        ] {
            let c = with_url(url).unwrap();
            let StoreConfig::Redis { url: got } = &c.store else {
                panic!("{url}: not redis");
            };
            assert_eq!(got.expose(), url);
        }
        for (url, why) in [
            ("redis+cluster://:s3cret@r1:6379/2", "database"),
            (
                "redis+cluster://:s3cret@r1:6379,,r2:6379",
                "comma-separated",
            ),
            ("redis-cluster://:s3cret@r1:6379", "redis+cluster://"),
        ] {
            let e = with_url(url).unwrap_err().to_string();
            assert!(e.contains("store.url") && e.contains(why), "{url}: {e}");
            assert!(!e.contains("s3cret"), "password in error: {e}");
        }
    }

    #[test]
    fn secrets_are_required_checked_and_never_printed() {
        let e = load(None, &MapEnv::default()).unwrap_err().to_string();
        assert!(e.contains("IRON_MASTER_KEY"), "{e}");
        let e = load(None, &env(&[("IRON_MASTER_KEY", "c2hvcnQ=")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("32 bytes") && !e.contains("c2hvcnQ="), "{e}");
        let e = load(None, &env(&[("IRON_PROXY_SECRET", "short")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("16") && !e.contains("short\""), "{e}");
        let c = load(
            None,
            &env(&[(
                "IRON_BOOTSTRAP_ADMIN_KEY",
                "iron_ak_0123456789012345678901234567",
            )]),
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("0123456789abcdef0123"), "{dbg}");
        assert!(!dbg.contains("iron_ak_0123"), "{dbg}");
    }

    #[test]
    fn lease_settings() {
        let c = load(None, &env(&[])).unwrap();
        assert_eq!(c.leases.policy, LeasePolicy::default());
        let f = write(
            "[leases]\nttl_secs = 3\nmin_lease_usd = \"0.000050\"\nsweep_interval_ms = 200\n",
        );
        let c = load(Some(f.path()), &env(&[("IRON_LEASES__RETAIN_SECS", "120")])).unwrap();
        assert_eq!(c.leases.policy.ttl_secs, 3);
        assert_eq!(c.leases.policy.min_lease, iron_core::Money(50));
        assert_eq!(c.leases.policy.retain_secs, 120);
        assert_eq!(c.leases.sweep_interval, Duration::from_millis(200));
        for (k, v, path) in [
            ("IRON_LEASES__TTL_SECS", "0", "leases.ttl_secs"),
            ("IRON_LEASES__MIN_LEASE_USD", "-1", "leases.min_lease_usd"),
            ("IRON_LEASES__RETAIN_SECS", "5", "leases.retain_secs"),
            (
                "IRON_LEASES__SWEEP_INTERVAL_MS",
                "1",
                "leases.sweep_interval_ms",
            ),
        ] {
            let e = load(None, &env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(path), "{k}={v}: {e}");
        }
    }

    #[test]
    fn secrets_from_files() {
        let key = MasterKey::generate();
        let kf = write(&format!("{}\n", *key.to_base64()));
        let pf = write("a-proxy-secret-from-a-file\n");
        let toml = format!(
            "[security]\nmaster_key_file = {:?}\nproxy_secret_file = {:?}\n",
            kf.path(),
            pf.path()
        );
        let f = write(&toml);
        let c = load(Some(f.path()), &MapEnv::default()).unwrap();
        assert_eq!(c.secrets.master_keys.current().key_id(), key.key_id());
        assert_eq!(
            c.secrets.proxy_secret.expose(),
            "a-proxy-secret-from-a-file"
        );
    }
}
