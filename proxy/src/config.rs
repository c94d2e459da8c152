//! Proxy configuration: TOML file + `IRON_<SECTION>__<KEY>` env overrides → [`ProxyConfig`].
//!
//! Read once at start-up, before any request. The file is parsed into `Raw*` structs with
//! `deny_unknown_fields` (errors name the offending path), then validated into typed values.
//! The process environment is read through [`Env`] so tests never touch real env vars.
//! Secrets (provider keys, the proxy secret) are referenced by env var name or file path and
//! loaded into zeroizing memory; they are never printed (no `Debug` shows them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iron_core::Money;
use iron_core::token::PublicKey;
use iron_core::wire::ProviderKind;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Reads environment variables. Production uses [`ProcessEnv`]; tests pass a map.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Why the configuration was refused. Messages name the path, never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid TOML: {0}")]
    Toml(String),
    #[error("invalid configuration at `{path}`: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    features: Features,
    #[serde(default)]
    budget: RawBudget,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    control: Option<RawControl>,
    #[serde(default)]
    metrics: MetricsConfig,
    #[serde(default)]
    projects: Vec<RawProject>,
    #[serde(default)]
    providers: Vec<RawProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    admin_listen: String,
    threads: usize,
    max_request_bytes: u64,
    shutdown_grace_secs: u64,
    h2c: bool,
    log_format: String,
    max_headers: usize,
    max_header_bytes: usize,
    header_read_timeout_ms: u64,
    body_read_timeout_ms: u64,
    keepalive_timeout_secs: u64,
    max_json_depth: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "0.0.0.0:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            threads: 0,
            max_request_bytes: 32 * 1024 * 1024,
            shutdown_grace_secs: 30,
            h2c: true,
            log_format: "text".into(),
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 60_000,
            keepalive_timeout_secs: 60,
            max_json_depth: crate::stage::read::DEFAULT_MAX_JSON_DEPTH,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSecurity {
    allow_private_upstreams: bool,
    auth_failure_limit: u32,
    auth_failure_window_secs: u64,
    auth_failure_max_ips: usize,
}

impl Default for RawSecurity {
    fn default() -> Self {
        RawSecurity {
            allow_private_upstreams: false,
            auth_failure_limit: 20,
            auth_failure_window_secs: 60,
            auth_failure_max_ips: 16_384,
        }
    }
}

/// `[security]`: the SSRF guard on upstream addresses and the per-IP limit on failed
/// authentications (`proxy/src/guard.rs`).
#[derive(Debug, Clone, Copy)]
pub struct SecurityConfig {
    /// Allow provider URLs with plain `http://` or whose address is loopback, private,
    /// link-local, CGNAT, multicast, … (development, `iron up`, tests). Default false.
    pub allow_private_upstreams: bool,
    /// Failed authentications per source IP within `auth_failure_window` before the IP is
    /// refused with 429; 0 disables the limit.
    pub auth_failure_limit: u32,
    pub auth_failure_window: Duration,
    /// Most source addresses tracked at once (bounded memory).
    pub auth_failure_max_ips: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBudget {
    lease_usd: String,
    min_output_tokens: u64,
    fail_mode: String,
    fail_open_cap_usd: String,
    spill_dir: Option<PathBuf>,
    proxy_id: Option<String>,
}

impl Default for RawBudget {
    fn default() -> Self {
        RawBudget {
            lease_usd: "0.50".into(),
            min_output_tokens: 16,
            fail_mode: "closed".into(),
            fail_open_cap_usd: "0".into(),
            spill_dir: None,
            proxy_id: None,
        }
    }
}

/// Budget enforcement settings (`design.md` §6, §8).
#[derive(Debug, Clone)]
pub struct BudgetConfig {
    /// Size of each lease slice asked from control.
    pub lease_size: Money,
    /// Output tokens reserved up front for every request.
    pub min_output_tokens: u64,
    /// When control is unreachable and the lease is gone: `None` = fail closed (default),
    /// `Some(cap)` = keep serving up to `cap` of unleased spend per project and proxy, per
    /// outage (`fail_mode = "open"`, `fail_open_cap_usd`).
    pub fail_open_cap: Option<Money>,
    /// Where undeliverable usage reports are spilled (append-only file).
    pub spill_dir: Option<PathBuf>,
    pub proxy_id: String,
}

/// `[metrics]`: cardinality of the `project` label on the proxy's Prometheus series
/// (`crate::metrics`). Every project-labelled series keeps the label, so dashboards and
/// alert rules work either way.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Label series with the project id (default true); `false` puts every project's
    /// series under `project="all"`.
    pub project_label: bool,
    /// Most distinct project ids used as label values (default 100); later projects are
    /// counted under `project="other"`.
    pub max_projects: usize,
    /// Most distinct model names used as label values (default 200); later ones are counted
    /// under `model="other"`. The model comes from the agent's request, so this bounds the
    /// series an agent can create by naming models.
    pub max_models: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            project_label: true,
            max_projects: 100,
            max_models: 200,
        }
    }
}

/// Switches for the costly stages (all on by default). Turning them off gives the bare
/// pass-through mode the benchmarks compare against (auth + key swap only).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Features {
    pub budgets: bool,
    pub pii: bool,
    pub metering: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            budgets: true,
            pii: true,
            metering: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    connect_timeout_ms: u64,
    first_byte_timeout_ms: u64,
    idle_timeout_ms: u64,
    pool_idle_secs: u64,
    breaker_failures: u32,
    breaker_cooldown_secs: u64,
    breaker_max_cooldown_secs: u64,
    /// PEM file of the CAs trusted for https upstreams, instead of the platform's.
    ca_file: Option<PathBuf>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            connect_timeout_ms: 5_000,
            first_byte_timeout_ms: 60_000,
            idle_timeout_ms: 120_000,
            pool_idle_secs: 90,
            breaker_failures: 5,
            breaker_cooldown_secs: 30,
            breaker_max_cooldown_secs: 300,
            ca_file: None,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    public_keys: Vec<PublicKey>,
    #[serde(default)]
    public_keys_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    url: String,
    #[serde(default = "default_secret_env")]
    proxy_secret_env: String,
    #[serde(default)]
    proxy_secret_file: Option<PathBuf>,
}

fn default_secret_env() -> String {
    "IRON_PROXY_SECRET".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    providers: Vec<String>,
    #[serde(default)]
    allowed_models: Vec<String>,
    /// Static mode: total budget of the project, e.g. "5.00" (held in memory).
    #[serde(default)]
    budget_usd: Option<String>,
    /// PII policy, e.g. `pii = { request = { EMAIL = "block" }, reversible = true }`.
    #[serde(default)]
    pii: iron_core::pii::PiiPolicy,
    /// Static mode: requests per minute of the project (enforced in this process).
    #[serde(default)]
    rpm: Option<u64>,
    /// Static mode: tokens (input + output) per minute of the project.
    #[serde(default)]
    tpm: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    id: String,
    #[serde(default)]
    name: Option<String>,
    kind: String,
    base_url: String,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    api_key_file: Option<PathBuf>,
    /// Per-deployment overrides of `[upstream]`'s timeouts (milliseconds).
    #[serde(default)]
    connect_timeout_ms: Option<u64>,
    #[serde(default)]
    first_byte_timeout_ms: Option<u64>,
    #[serde(default)]
    idle_timeout_ms: Option<u64>,
}

/// Validated proxy configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub server: ServerConfig,
    pub features: Features,
    pub budget: BudgetConfig,
    pub upstream: UpstreamConfig,
    pub source: Source,
    pub security: SecurityConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Worker threads (0 = number of cores).
    pub threads: usize,
    pub max_request_bytes: usize,
    pub shutdown_grace: Duration,
    pub h2c: bool,
    pub log_json: bool,
    /// Most request header lines (431 above).
    pub max_headers: usize,
    /// Most bytes of request header names + values (431 above).
    pub max_header_bytes: usize,
    /// Time allowed for a request head to arrive, from the connection (or the end of the
    /// previous request's keep-alive wait) on; slower connections are closed.
    pub header_read_timeout: Duration,
    /// Time allowed to receive the whole body of an inspected request (408 above).
    pub body_read_timeout: Duration,
    /// Idle time allowed between requests on a kept-alive connection.
    pub keepalive_timeout: Duration,
    /// Deepest JSON nesting accepted in an inspected request body (400 above).
    pub max_json_depth: usize,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub pool_idle: Duration,
    pub breaker: crate::breaker::BreakerConfig,
    /// `upstream.ca_file`: the only CAs trusted for https upstreams (PEM, one or more
    /// certificates; checked at load). `None` = the platform's trust store.
    pub ca_file: Option<PathBuf>,
}

/// Where routing data (keys, projects, providers) comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Everything from this file (`design.md` static mode).
    Static(StaticSource),
    /// Loaded from and kept in sync with the control service.
    Control(ControlSource),
}

#[derive(Debug, Clone)]
pub struct StaticSource {
    pub public_keys: Vec<PublicKey>,
    pub projects: Vec<ProjectConfig>,
    pub providers: Vec<ProviderConfig>,
}

#[derive(Clone)]
pub struct ControlSource {
    pub url: String,
    pub proxy_secret: Zeroizing<String>,
}

impl std::fmt::Debug for ControlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSource")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ProjectConfig {
    pub id: String,
    pub name: String,
    pub providers: Vec<String>,
    pub allowed_models: Vec<String>,
    pub budget: Option<Money>,
    pub pii: iron_core::pii::PiiPolicy,
    pub rate_limits: iron_core::ratelimit::RateLimits,
}

#[derive(Clone)]
pub struct ProviderConfig {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub models: Vec<String>,
    pub priority: i32,
    pub api_key: Zeroizing<String>,
    /// This deployment's own timeouts; unset ones fall back to `[upstream]`.
    pub timeouts: TimeoutOverrides,
}

/// Per-deployment timeouts (`[[providers]]` `connect_timeout_ms`, `first_byte_timeout_ms`,
/// `idle_timeout_ms`); `None` means the `[upstream]` value applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeoutOverrides {
    pub connect: Option<Duration>,
    pub first_byte: Option<Duration>,
    pub idle: Option<Duration>,
}

impl TimeoutOverrides {
    /// These overrides on top of the `[upstream]` defaults.
    pub fn apply(&self, defaults: crate::client::Timeouts) -> crate::client::Timeouts {
        crate::client::Timeouts {
            connect: self.connect.unwrap_or(defaults.connect),
            first_byte: self.first_byte.unwrap_or(defaults.first_byte),
            idle: self.idle.unwrap_or(defaults.idle),
        }
    }
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ProxyConfig {
    /// Loads `path` and applies env overrides from `env`.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, env)
    }

    /// Parses TOML text and applies env overrides from `env`.
    pub fn from_toml(text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        let mut value: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.message().to_owned()))?;
        apply_env_overrides(&mut value, env)?;
        let raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(value))
            .map_err(|e| invalid(e.path().to_string(), e.inner().message().to_owned()))?;
        validate(raw, env)
    }
}

/// `IRON_SERVER__LISTEN=…` sets `server.listen`. Values are parsed as TOML scalars when they
/// look like one (numbers, booleans), else taken as strings.
fn apply_env_overrides(table: &mut toml::Table, env: &dyn Env) -> Result<(), ConfigError> {
    for (name, raw) in env.vars() {
        let Some(rest) = name.strip_prefix("IRON_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if section == "otel" {
            continue;
        }
        let value = raw
            .parse::<i64>()
            .map(toml::Value::Integer)
            .or_else(|_| raw.parse::<bool>().map(toml::Value::Boolean))
            .unwrap_or_else(|_| toml::Value::String(raw.clone()));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(invalid(name, format!("`{section}` is not a table")));
        };
        section_table.insert(key, value);
    }
    Ok(())
}

fn parse_addr(path: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(path, format!("`{s}` is not a socket address (ip:port)")))
}

fn load_secret(
    path: &str,
    env_name: Option<&str>,
    file: Option<&Path>,
    env: &dyn Env,
) -> Result<Zeroizing<String>, ConfigError> {
    match (env_name, file) {
        (Some(var), None) => env
            .get(var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| Zeroizing::new(v.trim().to_owned()))
            .ok_or_else(|| invalid(path, format!("environment variable {var} is not set"))),
        (None, Some(file)) => read_small(file)
            .map(|v| Zeroizing::new(v.trim().to_owned()))
            .map_err(|e| invalid(path, format!("cannot read {}: {e}", file.display()))),
        _ => Err(invalid(path, "set exactly one of *_env or *_file")),
    }
}

/// Largest secret or key file read (a key is bytes; a key list a few KiB): a path that
/// names a device or a huge file fails instead of hanging or exhausting memory.
pub const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a UTF-8 file of at most [`MAX_SECRET_FILE_BYTES`].
fn read_small(file: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_SECRET_FILE_BYTES} bytes"
        )));
    }
    Ok(text)
}

/// `px_<host>_<pid>`: unique across containers (where every pid is 1) and across processes.
fn default_proxy_id(env: &dyn Env) -> String {
    let host = env
        .get("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("px_{host}_{}", std::process::id())
}

fn validate(raw: RawConfig, env: &dyn Env) -> Result<ProxyConfig, ConfigError> {
    let s = raw.server;
    if s.max_request_bytes == 0 || s.max_request_bytes > 1 << 30 {
        return Err(invalid(
            "server.max_request_bytes",
            "must be between 1 and 1 GiB",
        ));
    }
    let log_json = match s.log_format.as_str() {
        "json" => true,
        "text" => false,
        other => {
            return Err(invalid(
                "server.log_format",
                format!("`{other}`: expected text or json"),
            ));
        }
    };
    let server = ServerConfig {
        listen: parse_addr("server.listen", &s.listen)?,
        admin_listen: parse_addr("server.admin_listen", &s.admin_listen)?,
        threads: s.threads,
        max_request_bytes: usize::try_from(s.max_request_bytes).unwrap_or(usize::MAX),
        shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
        h2c: s.h2c,
        log_json,
        max_headers: s.max_headers,
        max_header_bytes: s.max_header_bytes,
        header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
        body_read_timeout: Duration::from_millis(s.body_read_timeout_ms),
        keepalive_timeout: Duration::from_secs(s.keepalive_timeout_secs),
        max_json_depth: s.max_json_depth,
    };
    for (path, v) in [
        ("server.max_headers", s.max_headers as u64),
        ("server.max_header_bytes", s.max_header_bytes as u64),
        ("server.header_read_timeout_ms", s.header_read_timeout_ms),
        ("server.body_read_timeout_ms", s.body_read_timeout_ms),
        ("server.keepalive_timeout_secs", s.keepalive_timeout_secs),
        ("server.max_json_depth", s.max_json_depth as u64),
    ] {
        if v == 0 {
            return Err(invalid(path, "must be greater than 0"));
        }
    }
    let sec = raw.security;
    if sec.auth_failure_limit > 0
        && (sec.auth_failure_window_secs == 0 || sec.auth_failure_max_ips == 0)
    {
        return Err(invalid(
            "security.auth_failure_window_secs",
            "auth_failure_window_secs and auth_failure_max_ips must be greater than 0",
        ));
    }
    let security = SecurityConfig {
        allow_private_upstreams: sec.allow_private_upstreams,
        auth_failure_limit: sec.auth_failure_limit,
        auth_failure_window: Duration::from_secs(sec.auth_failure_window_secs),
        auth_failure_max_ips: sec.auth_failure_max_ips,
    };
    let u = raw.upstream;
    for (path, v) in [
        ("upstream.connect_timeout_ms", u.connect_timeout_ms),
        ("upstream.first_byte_timeout_ms", u.first_byte_timeout_ms),
        ("upstream.idle_timeout_ms", u.idle_timeout_ms),
    ] {
        if v == 0 {
            return Err(invalid(path, "must be greater than 0"));
        }
    }
    if let Some(file) = &u.ca_file {
        crate::client::check_ca_file(file).map_err(|m| invalid("upstream.ca_file", m))?;
    }
    let upstream = UpstreamConfig {
        ca_file: u.ca_file,
        connect_timeout: Duration::from_millis(u.connect_timeout_ms),
        first_byte_timeout: Duration::from_millis(u.first_byte_timeout_ms),
        idle_timeout: Duration::from_millis(u.idle_timeout_ms),
        pool_idle: Duration::from_secs(u.pool_idle_secs),
        breaker: crate::breaker::BreakerConfig {
            consecutive_failures: u.breaker_failures.max(1),
            base_cooldown: Duration::from_secs(u.breaker_cooldown_secs),
            max_cooldown: Duration::from_secs(
                u.breaker_max_cooldown_secs.max(u.breaker_cooldown_secs),
            ),
            ..Default::default()
        },
    };

    let source = if let Some(c) = raw.control {
        if !raw.projects.is_empty() || !raw.providers.is_empty() {
            return Err(invalid(
                "control",
                "static projects/providers cannot be combined with [control]",
            ));
        }
        if !c.url.starts_with("http://") && !c.url.starts_with("https://") {
            return Err(invalid("control.url", "must be an http(s) URL"));
        }
        let secret = load_secret(
            "control.proxy_secret",
            if c.proxy_secret_file.is_some() {
                None
            } else {
                Some(&c.proxy_secret_env)
            },
            c.proxy_secret_file.as_deref(),
            env,
        )?;
        Source::Control(ControlSource {
            url: c.url.trim_end_matches('/').to_owned(),
            proxy_secret: secret,
        })
    } else {
        let mut public_keys = raw.auth.public_keys;
        if let Some(file) = &raw.auth.public_keys_file {
            let text = read_small(file).map_err(|e| {
                invalid(
                    "auth.public_keys_file",
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            let keys: Vec<PublicKey> = serde_json::from_str(&text).map_err(|e| {
                invalid(
                    "auth.public_keys_file",
                    format!("expected a JSON array of keys: {e}"),
                )
            })?;
            public_keys.extend(keys);
        }
        if public_keys.is_empty() {
            return Err(invalid(
                "auth.public_keys",
                "static mode needs at least one public key",
            ));
        }
        iron_core::token::TokenVerifier::new(&public_keys)
            .map_err(|e| invalid("auth.public_keys", e.to_string()))?;
        let mut providers = Vec::with_capacity(raw.providers.len());
        for (i, p) in raw.providers.into_iter().enumerate() {
            let path = format!("providers[{i}]");
            let kind: ProviderKind = p
                .kind
                .parse()
                .map_err(|e: String| invalid(format!("{path}.kind"), e))?;
            let endpoint = crate::client::Endpoint::parse(&p.base_url)
                .map_err(|e| invalid(format!("{path}.base_url"), e))?;
            crate::guard::check_endpoint(&endpoint, security.allow_private_upstreams)
                .map_err(|e| invalid(format!("{path}.base_url"), e))?;
            let api_key = load_secret(
                &format!("{path}.api_key"),
                p.api_key_env.as_deref(),
                p.api_key_file.as_deref(),
                env,
            )?;
            let mut timeouts = TimeoutOverrides::default();
            for (field, value, slot) in [
                (
                    "connect_timeout_ms",
                    p.connect_timeout_ms,
                    &mut timeouts.connect,
                ),
                (
                    "first_byte_timeout_ms",
                    p.first_byte_timeout_ms,
                    &mut timeouts.first_byte,
                ),
                ("idle_timeout_ms", p.idle_timeout_ms, &mut timeouts.idle),
            ] {
                match value {
                    Some(0) => {
                        return Err(invalid(format!("{path}.{field}"), "must be greater than 0"));
                    }
                    Some(ms) => *slot = Some(Duration::from_millis(ms)),
                    None => {}
                }
            }
            providers.push(ProviderConfig {
                name: p.name.unwrap_or_else(|| p.id.clone()),
                id: p.id,
                kind,
                base_url: p.base_url,
                models: if p.models.is_empty() {
                    vec!["*".into()]
                } else {
                    p.models
                },
                priority: p.priority,
                api_key,
                timeouts,
            });
        }
        let mut projects = Vec::with_capacity(raw.projects.len());
        for (i, p) in raw.projects.into_iter().enumerate() {
            let budget = match &p.budget_usd {
                Some(b) => Some(
                    b.parse::<Money>()
                        .map_err(|e| invalid(format!("projects[{i}].budget_usd"), e.to_string()))?,
                ),
                None => None,
            };
            let rate_limits = iron_core::ratelimit::RateLimits {
                rpm: p.rpm,
                tpm: p.tpm,
            };
            rate_limits
                .validate()
                .map_err(|e| invalid(format!("projects[{i}]"), e))?;
            projects.push(ProjectConfig {
                rate_limits,
                name: p.name.unwrap_or_else(|| p.id.clone()),
                id: p.id,
                providers: p.providers,
                allowed_models: p.allowed_models,
                budget,
                pii: p.pii,
            });
        }
        for (i, p) in projects.iter().enumerate() {
            for prv in &p.providers {
                if !providers.iter().any(|x| &x.id == prv) {
                    return Err(invalid(
                        format!("projects[{i}].providers"),
                        format!("unknown provider `{prv}`"),
                    ));
                }
            }
        }
        Source::Static(StaticSource {
            public_keys,
            projects,
            providers,
        })
    };
    let b = raw.budget;
    let money = |path: &str, v: &str| v.parse::<Money>().map_err(|e| invalid(path, e.to_string()));
    let lease_size = money("budget.lease_usd", &b.lease_usd)?;
    if lease_size == Money::ZERO {
        return Err(invalid("budget.lease_usd", "must be greater than 0"));
    }
    let cap = money("budget.fail_open_cap_usd", &b.fail_open_cap_usd)?;
    let fail_open_cap = match b.fail_mode.as_str() {
        // The cap is ignored when failing closed (the chart always sets "0").
        "closed" => None,
        "open" if cap == Money::ZERO => {
            return Err(invalid(
                "budget.fail_open_cap_usd",
                "fail_mode = \"open\" needs a cap greater than 0: the most unleased spend per \
                 project this proxy admits while control is unreachable",
            ));
        }
        "open" => Some(cap),
        other => {
            return Err(invalid(
                "budget.fail_mode",
                format!("`{other}`: expected closed or open"),
            ));
        }
    };
    let budget = BudgetConfig {
        lease_size,
        min_output_tokens: b.min_output_tokens,
        fail_open_cap,
        spill_dir: b.spill_dir,
        proxy_id: b.proxy_id.unwrap_or_else(|| default_proxy_id(env)),
    };
    Ok(ProxyConfig {
        server,
        features: raw.features,
        budget,
        upstream,
        source,
        security,
        metrics: raw.metrics,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const KEY: &str = r#"[auth]
public_keys = [{ kid = "k1", alg = "EdDSA", x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" }]
"#;

    #[test]
    fn secret_files_are_size_capped() {
        let dir = std::env::temp_dir().join(format!("iron-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small");
        std::fs::write(&small, "  sk-file-key \n").unwrap();
        assert_eq!(read_small(&small).unwrap(), "  sk-file-key \n");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_FILE_BYTES as usize + 1]).unwrap();
        assert!(
            read_small(&big)
                .unwrap_err()
                .to_string()
                .contains("larger than")
        );
        // A device never ends: the cap turns it into an error instead of a hang.
        assert!(read_small(Path::new("/dev/zero")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn defaults_and_env_overrides() {
        let text = format!(
            "{KEY}\n[[providers]]\nid='o'\nkind='openai'\nbase_url='http://127.0.0.1:1'\napi_key_env='K'\n"
        );
        let cfg = ProxyConfig::from_toml(
            &text,
            &env(&[
                ("K", "sk-secret"),
                ("IRON_SECURITY__ALLOW_PRIVATE_UPSTREAMS", "true"),
                ("IRON_SERVER__LISTEN", "127.0.0.1:1234"),
                ("IRON_SERVER__MAX_REQUEST_BYTES", "1024"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.server.listen.port(), 1234);
        assert_eq!(cfg.server.max_request_bytes, 1024);
        assert_eq!(cfg.upstream.connect_timeout, Duration::from_secs(5));
        assert!(cfg.security.allow_private_upstreams);
        assert_eq!(cfg.security.auth_failure_limit, 20);
        assert_eq!(cfg.server.max_headers, 100);
        assert_eq!(cfg.server.max_header_bytes, 64 * 1024);
        assert_eq!(cfg.server.max_json_depth, 64);
        assert_eq!(cfg.server.header_read_timeout, Duration::from_secs(10));
        let Source::Static(s) = cfg.source else {
            panic!("static expected")
        };
        assert_eq!(s.providers[0].api_key.as_str(), "sk-secret");
        assert!(!format!("{:?}", s.providers[0]).contains("sk-secret"));
    }

    #[test]
    fn provider_timeouts_override_upstream_ones() {
        let text = format!(
            "{KEY}\n[security]\nallow_private_upstreams = true\n[upstream]\nconnect_timeout_ms = 700\n\
             [[providers]]\nid='a'\nkind='openai'\nbase_url='http://127.0.0.1:1'\napi_key_env='K'\n\
             first_byte_timeout_ms = 1500\nidle_timeout_ms = 250\n\
             [[providers]]\nid='b'\nkind='openai'\nbase_url='http://127.0.0.1:2'\napi_key_env='K'\n"
        );
        let cfg = ProxyConfig::from_toml(&text, &env(&[("K", "v")])).unwrap();
        let Source::Static(s) = &cfg.source else {
            panic!("static expected")
        };
        let defaults = crate::client::Timeouts {
            connect: cfg.upstream.connect_timeout,
            first_byte: cfg.upstream.first_byte_timeout,
            idle: cfg.upstream.idle_timeout,
        };
        let a = s.providers[0].timeouts.apply(defaults);
        assert_eq!(
            a.connect,
            Duration::from_millis(700),
            "falls back to [upstream]"
        );
        assert_eq!(a.first_byte, Duration::from_millis(1500));
        assert_eq!(a.idle, Duration::from_millis(250));
        assert_eq!(s.providers[1].timeouts, TimeoutOverrides::default());
        let b = s.providers[1].timeouts.apply(defaults);
        assert_eq!(
            (b.connect, b.first_byte, b.idle),
            (
                Duration::from_millis(700),
                Duration::from_secs(60),
                Duration::from_secs(120)
            )
        );
        let err = ProxyConfig::from_toml(
            &text.replace("idle_timeout_ms = 250", "idle_timeout_ms = 0"),
            &env(&[("K", "v")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("providers[0].idle_timeout_ms"),
            "{err}"
        );
    }

    #[test]
    fn max_request_bytes_defaults_to_32_mib() {
        let cfg = ProxyConfig::from_toml(KEY, &env(&[])).unwrap();
        assert_eq!(cfg.server.max_request_bytes, 32 * 1024 * 1024);
        assert_eq!(cfg.server.max_request_bytes, 33_554_432);
        let cfg = ProxyConfig::from_toml(
            &format!("{KEY}\n[server]\nmax_request_bytes = 1048576\n"),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(cfg.server.max_request_bytes, 1_048_576);
    }

    #[tokio::test]
    async fn upstream_ca_file_is_checked_at_load() {
        assert_eq!(
            ProxyConfig::from_toml(KEY, &env(&[]))
                .unwrap()
                .upstream
                .ca_file,
            None,
            "the platform's trust store by default"
        );
        let mock = iron_testkit::MockUpstream::start_tls().await.unwrap();
        let ca = mock.ca_file().unwrap();
        let load = |file: &Path| {
            ProxyConfig::from_toml(
                &format!(
                    "{KEY}\n[upstream]\nca_file = {:?}\n",
                    file.display().to_string()
                ),
                &env(&[]),
            )
        };
        let cfg = load(ca).unwrap();
        assert_eq!(cfg.upstream.ca_file.as_deref(), Some(ca));
        assert_eq!(crate::client::check_ca_file(ca), Ok(1));

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let not_pem = dir.path().join("key.pem");
        std::fs::write(
            &not_pem,
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for bad in [dir.path().join("missing.pem"), empty, not_pem, garbage] {
            let err = load(&bad).unwrap_err().to_string();
            assert!(err.contains("upstream.ca_file"), "{}: {err}", bad.display());
            assert!(err.contains(&bad.display().to_string()), "{err}");
        }
        // Env override, like every key.
        let cfg = ProxyConfig::from_toml(
            KEY,
            &env(&[("IRON_UPSTREAM__CA_FILE", ca.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(cfg.upstream.ca_file.as_deref(), Some(ca));
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let err = ProxyConfig::from_toml(&format!("{KEY}\n[server]\nlisten_typo='x'\n"), &env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("server"), "{err}");
        assert!(err.to_string().contains("listen_typo"), "{err}");
        let err = ProxyConfig::from_toml(KEY, &env(&[("IRON_SERVER__BOGUS", "1")])).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn missing_secret_and_bad_values_are_errors() {
        let text = format!(
            "{KEY}\n[security]\nallow_private_upstreams = true\n[[providers]]\nid='o'\nkind='openai'\nbase_url='http://x:1'\napi_key_env='NOPE'\n"
        );
        let err = ProxyConfig::from_toml(&text, &env(&[])).unwrap_err();
        assert!(err.to_string().contains("NOPE"), "{err}");
        let text = format!(
            "{KEY}\n[security]\nallow_private_upstreams = true\n[[providers]]\nid='o'\nkind='gemini'\nbase_url='http://x:1'\napi_key_env='K'\n"
        );
        assert!(
            ProxyConfig::from_toml(&text, &env(&[("K", "v")]))
                .unwrap_err()
                .to_string()
                .contains("providers[0].kind")
        );
        assert!(ProxyConfig::from_toml("", &env(&[])).is_err());
        let err = ProxyConfig::from_toml(&format!("{KEY}\n[server]\nlisten='nope'\n"), &env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("server.listen"));
        let err = ProxyConfig::from_toml(&format!("{KEY}\n[server]\nmax_headers=0\n"), &env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("server.max_headers"), "{err}");
        let err = ProxyConfig::from_toml(
            &format!("{KEY}\n[security]\nauth_failure_typo=1\n"),
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("auth_failure_typo"), "{err}");
    }

    #[test]
    fn fail_mode_open_needs_a_cap() {
        let load = |budget: &str| {
            ProxyConfig::from_toml(&format!("{KEY}\n[budget]\n{budget}\n"), &env(&[]))
        };
        assert_eq!(
            load("").unwrap().budget.fail_open_cap,
            None,
            "closed by default"
        );
        // The chart's defaults: closed with a "0" cap.
        let cfg = load("fail_mode = \"closed\"\nfail_open_cap_usd = \"0\"").unwrap();
        assert_eq!(cfg.budget.fail_open_cap, None);
        let cfg = load("fail_mode = \"open\"\nfail_open_cap_usd = \"2.50\"").unwrap();
        assert_eq!(cfg.budget.fail_open_cap, Some(Money(2_500_000)));
        for (budget, path) in [
            ("fail_mode = \"open\"", "budget.fail_open_cap_usd"),
            (
                "fail_mode = \"open\"\nfail_open_cap_usd = \"0\"",
                "budget.fail_open_cap_usd",
            ),
            (
                "fail_mode = \"open\"\nfail_open_cap_usd = \"lots\"",
                "budget.fail_open_cap_usd",
            ),
            ("fail_mode = \"ajar\"", "budget.fail_mode"),
            (
                "fail_mode = \"Open\"\nfail_open_cap_usd = \"1\"",
                "budget.fail_mode",
            ),
        ] {
            let err = load(budget).unwrap_err().to_string();
            assert!(err.contains(path), "{budget}: {err}");
        }
        let err = load("fail_mode = \"open\"").unwrap_err().to_string();
        assert!(err.contains("needs a cap greater than 0"), "{err}");
    }
}
