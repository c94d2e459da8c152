//! Test harness: a testkit mock upstream behind an in-process Iron proxy (static mode).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};

use iron_core::token::{SigningKey, new_token_id, unix_now};
use iron_proxy::ProxyHandle;
use iron_proxy::config::ProxyConfig;
use iron_testkit::MockUpstream;

pub const OPENAI_KEY: &str = "sk-test-openai-PROVIDERKEY-0123456789";
pub const ANTHROPIC_KEY: &str = "sk-ant-test-PROVIDERKEY-9876543210";
pub const PROJECT: &str = "prj_test";

/// A free loopback port (bound then released).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub struct Harness {
    pub mock: MockUpstream,
    /// A second OpenAI deployment with lower priority (only with `Options::fallback`).
    pub fallback: Option<MockUpstream>,
    pub proxy: ProxyHandle,
    pub key: SigningKey,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Default)]
pub struct Options<'a> {
    /// Extra lines for `[server]`.
    pub server: &'a str,
    /// Extra lines for `[upstream]`.
    pub upstream: &'a str,
    /// Add a second OpenAI-family deployment (lower priority) on its own mock.
    pub fallback: bool,
    /// Extra lines for `[security]`.
    pub security: &'a str,
    /// TOML appended at the end (more `[[providers]]` / `[[projects]]`); `{mock}` stands for
    /// the primary mock's base URL.
    pub extra: &'a str,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with("").await
    }

    /// `extra` is appended to the generated TOML (e.g. a `[server]` override table is not
    /// allowed twice, so use env-style keys through `server_extra`).
    pub async fn start_with(server_extra: &str) -> Harness {
        Self::start_opts(Options {
            server: server_extra,
            ..Default::default()
        })
        .await
    }

    pub async fn start_opts(opts: Options<'_>) -> Harness {
        let server_extra = opts.server;
        let upstream_extra = opts.upstream;
        let mock = MockUpstream::start().await.unwrap();
        let fallback = if opts.fallback {
            Some(MockUpstream::start().await.unwrap())
        } else {
            None
        };
        let fallback_toml = match &fallback {
            Some(f) => format!(
                "[[providers]]\nid = \"mock-fallback\"\nkind = \"openai-compatible\"\nbase_url = \"{}\"\npriority = 1\napi_key_env = \"MOCK_OPENAI_KEY\"\n",
                f.base_url()
            ),
            None => String::new(),
        };
        let key = SigningKey::generate().unwrap();
        let pk = key.public_key();
        let (addr, admin) = (free_addr(), free_addr());
        let base = mock.base_url();
        let extra = opts.extra.replace("{mock}", &base);
        let toml = format!(
            r#"
[server]
listen = "{addr}"
admin_listen = "{admin}"
threads = 2
shutdown_grace_secs = 0
{server_extra}

[upstream]
{upstream_extra}

# The mock upstream is on loopback (refused without this).
[security]
allow_private_upstreams = true
{security_extra}

[auth]
public_keys = [{{ kid = "{kid}", alg = "EdDSA", x = "{x}" }}]

[[projects]]
id = "{PROJECT}"
name = "test"

[[projects]]
id = "prj_limited"
allowed_models = ["gpt-4o-mini"]

[[projects]]
id = "prj_budget"
budget_usd = "0.001"

[[projects]]
id = "prj_broke"
budget_usd = "0"

[[projects]]
id = "prj_rpm"
rpm = 3

[[projects]]
id = "prj_block"
pii = {{ request = {{ EMAIL = "block", US_SSN = "block" }} }}

[[projects]]
id = "prj_irreversible"
pii = {{ reversible = false }}

[[providers]]
id = "mock-openai"
kind = "openai"
base_url = "{base}/v1"
priority = 10
api_key_env = "MOCK_OPENAI_KEY"

{fallback_toml}

[[providers]]
id = "mock-anthropic"
kind = "anthropic"
base_url = "{base}"
api_key_env = "MOCK_ANTHROPIC_KEY"

{extra}
"#,
            kid = pk.kid,
            x = pk.x,
            security_extra = opts.security,
        );
        let env: BTreeMap<String, String> = [
            ("MOCK_OPENAI_KEY".to_owned(), OPENAI_KEY.to_owned()),
            ("MOCK_ANTHROPIC_KEY".to_owned(), ANTHROPIC_KEY.to_owned()),
        ]
        .into();
        let config = ProxyConfig::from_toml(&toml, &env).unwrap();
        let proxy = tokio::task::spawn_blocking(move || iron_proxy::start(&config))
            .await
            .unwrap()
            .unwrap();
        Harness {
            mock,
            fallback,
            proxy,
            key,
            addr,
            admin,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn token(&self) -> String {
        self.token_for(PROJECT)
    }

    pub fn token_for(&self, project: &str) -> String {
        let now = unix_now();
        self.key
            .mint(&new_token_id(), project, now, now + 3600)
            .unwrap()
    }

    pub fn expired_token(&self) -> String {
        let now = unix_now();
        self.key
            .mint(&new_token_id(), PROJECT, now - 7200, now - 3600)
            .unwrap()
    }

    /// Waits (up to 2 s) until `series` has `expected`; metrics are recorded in pingora's
    /// logging hook, just after the response reached the agent.
    pub async fn wait_metric(&self, series: &str, expected: f64) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let m = self.metrics().await;
            if metric(&m, series) == expected || std::time::Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Value of a counter/gauge sample line `name{labels} value` (exact label string).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

pub fn chat_body(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": "Say hello"}]
    })
}

/// Waits (up to 5 s) until the in-process budget authority (static mode) has received the
/// usage events of `n` requests; the reporter delivers them every second.
pub async fn reported_usage(h: &Harness, n: usize) -> Vec<iron_core::lease::UsageEvent> {
    let local = h.proxy.shared.local_leases.clone().unwrap();
    for _ in 0..100 {
        let events = local.events.lock().unwrap().clone();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("usage events were not reported");
}

/// A loopback address that accepts no connection: a listener with a backlog of 0 whose
/// queue is already full (never accepted), so further SYNs are dropped and a connect hangs
/// until the client's connect timeout. Keep the returned guard alive while using the address.
pub struct Unanswered {
    pub addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _fillers: Vec<std::net::TcpStream>,
}

pub fn unanswered_addr() -> Unanswered {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => {
                return Unanswered {
                    addr,
                    _listener: listener,
                    _fillers: fillers,
                };
            }
        }
    }
    panic!("the listen queue of {addr} never filled up");
}
