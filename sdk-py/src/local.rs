//! `LocalProxy`: the real Iron proxy (`iron_proxy::start`) running in this process, in static
//! mode, on `127.0.0.1` and ephemeral ports. Its configuration is built here as a TOML table
//! and parsed by `ProxyConfig::from_toml` — the same validation as a `proxy.toml` file — with
//! provider keys passed through the config's env map (never the process environment). Its
//! signing key is generated in-process: only tokens minted by this object are accepted.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iron_core::Money;
use iron_core::pii::PiiPolicy;
use iron_proxy::ProxyHandle;
use iron_proxy::config::ProxyConfig;
use iron_proxy::proxy::Shared;
use pyo3::prelude::*;

use crate::error::{SdkError, SdkResult};
use crate::helpers::{SigningKey, parse_usd};

/// Default upstreams of the provider kinds that have one.
fn default_base_url(kind: &str) -> Option<&'static str> {
    match kind {
        "openai" => Some("https://api.openai.com"),
        "anthropic" => Some("https://api.anthropic.com"),
        _ => None,
    }
}

/// A free port on `host` (the OS picks; released again before the proxy binds it).
fn free_addr(host: &str) -> SdkResult<SocketAddr> {
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| SdkError::Proxy(format!("no free port on {host}: {e}")))
}

/// Everything `LocalProxy.__new__` validated, ready to become a config.
struct Spec {
    providers: Vec<(String, String, String)>,
    project: String,
    budget: Option<Money>,
    pii: Option<PiiPolicy>,
    pii_enabled: bool,
    host: String,
    threads: usize,
    shutdown_grace_secs: u64,
}

fn build_config(
    spec: &Spec,
    key: &SigningKey,
    listen: SocketAddr,
    admin: SocketAddr,
) -> SdkResult<ProxyConfig> {
    use toml::Value;
    let table = |pairs: Vec<(&str, Value)>| {
        Value::Table(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    };
    let s = |v: &str| Value::String(v.to_owned());
    let pk = key.inner().public_key();
    let mut env = BTreeMap::new();
    let mut providers = Vec::new();
    for (i, (kind, base_url, api_key)) in spec.providers.iter().enumerate() {
        let var = format!("PROVIDER_KEY_{i}");
        env.insert(var.clone(), api_key.clone());
        providers.push(table(vec![
            ("id", s(kind)),
            ("kind", s(kind)),
            ("base_url", s(base_url)),
            ("api_key_env", s(&var)),
        ]));
    }
    let mut project = vec![("id", s(&spec.project))];
    if let Some(b) = spec.budget {
        let micros = b.micros();
        project.push((
            "budget_usd",
            s(&format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)),
        ));
    }
    if let Some(p) = &spec.pii {
        let v = Value::try_from(p)
            .map_err(|e| SdkError::invalid(format!("pii policy cannot be used: {e}")))?;
        project.push(("pii", v));
    }
    let root = table(vec![
        (
            "server",
            table(vec![
                ("listen", s(&listen.to_string())),
                ("admin_listen", s(&admin.to_string())),
                (
                    "threads",
                    Value::Integer(i64::try_from(spec.threads).unwrap_or(1)),
                ),
                (
                    "shutdown_grace_secs",
                    Value::Integer(i64::try_from(spec.shutdown_grace_secs).unwrap_or(i64::MAX)),
                ),
            ]),
        ),
        (
            "auth",
            Value::Table(
                [(
                    "public_keys".to_owned(),
                    Value::Array(vec![table(vec![
                        ("kid", s(&pk.kid)),
                        ("alg", s(&pk.alg)),
                        ("x", s(&pk.x)),
                    ])]),
                )]
                .into_iter()
                .collect(),
            ),
        ),
        (
            "features",
            table(vec![("pii", Value::Boolean(spec.pii_enabled))]),
        ),
        // A local, in-process proxy (like `iron up`): loopback/plain-http upstreams such as
        // a mock or a local model server are the user's own choice.
        (
            "security",
            table(vec![("allow_private_upstreams", Value::Boolean(true))]),
        ),
        ("projects", Value::Array(vec![table(project)])),
        ("providers", Value::Array(providers)),
    ]);
    let text = toml::to_string(&root)
        .map_err(|e| SdkError::Proxy(format!("building the proxy configuration: {e}")))?;
    ProxyConfig::from_toml(&text, &env).map_err(|e| SdkError::invalid(e.to_string()))
}

/// Starts the proxy; a port taken between probing and binding gets one more try.
fn start(spec: &Spec, key: &SigningKey) -> SdkResult<(ProxyHandle, SocketAddr, SocketAddr)> {
    let mut last = String::new();
    for _ in 0..3 {
        let (listen, admin) = (free_addr(&spec.host)?, free_addr(&spec.host)?);
        if listen == admin {
            continue;
        }
        let config = build_config(spec, key, listen, admin)?;
        match iron_proxy::start(&config) {
            Ok(h) => return Ok((h, listen, admin)),
            Err(e) => last = format!("{e:#}"),
        }
    }
    Err(SdkError::Proxy(format!(
        "the embedded proxy did not start: {last}"
    )))
}

/// The Iron proxy running in this process (static mode). See `iron_sdk.LocalProxy`.
#[pyclass(frozen, module = "iron_sdk._iron_sdk")]
pub struct LocalProxy {
    handle: Mutex<Option<ProxyHandle>>,
    shared: Arc<Shared>,
    key: SigningKey,
    project: String,
    budget: Option<Money>,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl LocalProxy {
    fn spent(&self) -> Money {
        let reported = self
            .shared
            .local_leases
            .as_ref()
            .map_or(Money::ZERO, |l| l.spent(&self.project));
        // Settled but not yet reported (the reporter runs every second).
        let live: u64 = self
            .shared
            .ledger
            .slots()
            .iter()
            .filter(|s| s.project_id == self.project)
            .map(|s| s.spent().micros())
            .sum();
        reported.max(Money(live))
    }
}

#[pymethods]
impl LocalProxy {
    /// Starts the proxy and returns once it listens. `provider_keys` maps a provider kind
    /// (`openai`, `anthropic`, `openai-compatible`, `azure-openai`) to its API key;
    /// `upstream_base_urls` overrides where that provider is (required for the kinds without
    /// a public default). `budget_usd` is an exact decimal string; `pii_policy_json` a
    /// project PII policy as JSON (`None` = the default: redact every type, reversibly).
    /// `shutdown_grace_secs`: how long `stop()` lets requests in flight finish (pingora
    /// waits this long in any case, so 0 — the default — makes `stop()` immediate).
    #[new]
    #[pyo3(signature = (provider_keys, *, upstream_base_urls=None, project="local",
        budget_usd=None, pii_policy_json=None, pii_enabled=true, host="127.0.0.1",
        threads=1, shutdown_grace_secs=0))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        provider_keys: BTreeMap<String, String>,
        upstream_base_urls: Option<BTreeMap<String, String>>,
        project: &str,
        budget_usd: Option<String>,
        pii_policy_json: Option<String>,
        pii_enabled: bool,
        host: &str,
        threads: usize,
        shutdown_grace_secs: u64,
    ) -> PyResult<Self> {
        let (project, host) = (project.to_owned(), host.to_owned());
        let urls = upstream_base_urls.unwrap_or_default();
        if provider_keys.is_empty() {
            return Err(SdkError::invalid(
                "provider_keys is empty: give at least one provider key, e.g. {\"openai\": \"sk-…\"}",
            )
            .into());
        }
        if let Some(extra) = urls.keys().find(|k| !provider_keys.contains_key(*k)) {
            return Err(SdkError::invalid(format!(
                "upstream_base_urls has `{extra}`, which is not in provider_keys"
            ))
            .into());
        }
        let mut providers = Vec::with_capacity(provider_keys.len());
        for (kind, api_key) in provider_keys {
            kind.parse::<iron_core::wire::ProviderKind>()
                .map_err(|e| SdkError::invalid(format!("provider_keys: {e}")))?;
            if api_key.trim().is_empty() {
                return Err(SdkError::invalid(format!("provider_keys[{kind:?}] is empty")).into());
            }
            let base_url = match urls.get(&kind) {
                Some(u) => u.clone(),
                None => default_base_url(&kind)
                    .ok_or_else(|| {
                        SdkError::invalid(format!(
                            "provider `{kind}` has no default URL: set upstream_base_urls[{kind:?}]"
                        ))
                    })?
                    .to_owned(),
            };
            providers.push((kind, base_url, api_key));
        }
        if project.is_empty() {
            return Err(SdkError::invalid("project must not be empty").into());
        }
        let budget = budget_usd
            .as_deref()
            .map(parse_usd)
            .transpose()
            .map_err(|e| SdkError::invalid(format!("budget: {e}")))?;
        let pii = pii_policy_json
            .as_deref()
            .map(serde_json::from_str::<PiiPolicy>)
            .transpose()
            .map_err(|e| SdkError::invalid(format!("pii policy: {e}")))?;
        let project_id = project.clone();
        let spec = Spec {
            providers,
            project,
            budget,
            pii,
            pii_enabled,
            host,
            threads: threads.max(1),
            shutdown_grace_secs: shutdown_grace_secs.min(3600),
        };
        let (key, handle, listen, admin) = py.detach(move || {
            let key = SigningKey::generate()?;
            let (handle, listen, admin) = start(&spec, &key)?;
            SdkResult::Ok((key, handle, listen, admin))
        })?;
        Ok(LocalProxy {
            shared: handle.shared.clone(),
            handle: Mutex::new(Some(handle)),
            key,
            project: project_id,
            budget,
            listen,
            admin,
        })
    }

    /// `http://127.0.0.1:PORT` (agents add `/v1` for OpenAI-style clients).
    #[getter]
    fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// The proxy's admin server: `/metrics`, `/healthz`, `/readyz`.
    #[getter]
    fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The project id every token of this proxy belongs to.
    #[getter]
    fn project(&self) -> &str {
        &self.project
    }

    /// The budget in micro-dollars (`None` = unlimited).
    #[getter]
    fn limit_microdollars(&self) -> Option<u64> {
        self.budget.map(Money::micros)
    }

    /// `True` until `stop()`.
    #[getter]
    fn running(&self) -> bool {
        self.handle.lock().map(|h| h.is_some()).unwrap_or(false)
    }

    /// Mints an IC token this proxy accepts: `(token_id, token, expires_at)`.
    fn mint(&self, py: Python<'_>, ttl_seconds: u64) -> PyResult<(String, String, u64)> {
        let ttl = Duration::from_secs(ttl_seconds);
        Ok(py.detach(|| self.key.mint_for(&self.project, ttl, None))?)
    }

    /// Spend so far in micro-dollars: every settled request, reported or not. A request is
    /// settled just after its last byte reaches the client, so this first waits up to
    /// `wait_secs` for requests still in flight (none in flight: no wait).
    #[pyo3(signature = (wait_secs=0.25))]
    fn spent_microdollars(&self, py: Python<'_>, wait_secs: f64) -> u64 {
        let wait = Duration::from_secs_f64(wait_secs.clamp(0.0, 60.0));
        py.detach(|| {
            let deadline = std::time::Instant::now() + wait;
            while self.shared.inflight.load(Ordering::Acquire) > 0
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            self.spent().micros()
        })
    }

    /// The usage events the proxy has reported so far, as a JSON array (reports run every
    /// second and at `stop()`).
    fn usage_json(&self) -> PyResult<String> {
        let events = self
            .shared
            .local_leases
            .as_ref()
            .and_then(|l| l.events.lock().ok().map(|e| e.clone()))
            .unwrap_or_default();
        serde_json::to_string(&events)
            .map_err(|e| SdkError::Proxy(format!("usage events: {e}")).into())
    }

    /// Stops the proxy: stops accepting, lets requests in flight finish (up to the shutdown
    /// grace), settles the budget and joins the proxy thread. Idempotent.
    fn stop(&self, py: Python<'_>) {
        let handle = self.handle.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            py.detach(move || h.shutdown());
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "LocalProxy(url={:?}, project={:?}, running={})",
            self.url(),
            self.project,
            self.running()
        )
    }
}
