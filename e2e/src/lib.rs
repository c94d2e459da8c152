//! Helpers for end-to-end tests: start `iron up`, or `iron-control` + `iron-proxy` replicas on
//! a private redis-server, and run the `iron` CLI against them. Every port is ephemeral;
//! every process is killed when its handle drops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use iron_testkit::{ChildProcess, cargo_bin, wait_for_tcp};

pub const PROXY_SECRET: &str = "e2e-proxy-secret-0123456789abcdef";
/// A 32-byte master key, base64.
pub const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const ADMIN_KEY: &str = "iron_ak_e2eAdminKey0123456789abcdefABCDEFghij";

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The workspace's Python with the official SDKs (`./scripts/test` creates `.venv`).
pub fn python() -> PathBuf {
    std::env::var_os("IRON_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

/// Output of one `iron` CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

/// Runs `iron ARGS` against `control_url` with `api_key`; `env` adds variables.
pub async fn iron(
    control_url: &str,
    api_key: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> CliOutput {
    let mut cmd = tokio::process::Command::new(cargo_bin("iron"));
    cmd.args(args)
        .env("IRON_CONTROL_URL", control_url)
        .env("IRON_API_KEY", api_key)
        .env_remove("OPENAI_API_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `iron up` in a data dir.
pub struct IronUp {
    pub process: ChildProcess,
    pub data_dir: PathBuf,
    pub proxy: SocketAddr,
    pub control: SocketAddr,
    pub admin: SocketAddr,
    pub admin_key: String,
}

impl IronUp {
    /// The last line of the `iron up` banner.
    pub const BANNER_END: &'static str = "Then: iron project create demo";

    pub async fn start(data_dir: &Path) -> anyhow::Result<IronUp> {
        Self::start_with(data_dir, &[]).await
    }

    /// [`IronUp::start`] with extra `iron up` arguments (e.g. `--dashboard-dir`).
    pub async fn start_with(data_dir: &Path, extra: &[&str]) -> anyhow::Result<IronUp> {
        Self::spawn(data_dir, extra, &[], None).await
    }

    /// A first-start check: `iron up` with `extra` arguments (e.g. `--upstream-base-url`) and
    /// `env` set (e.g. `OPENAI_API_KEY`), its stderr appended to `stderr_file`, so that
    /// `process.output()` is exactly what it printed on stdout (the banner).
    pub async fn start_stdout_only(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr_file: &Path,
    ) -> anyhow::Result<IronUp> {
        Self::spawn(data_dir, extra, env, Some(stderr_file)).await
    }

    async fn spawn(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr_file: Option<&Path>,
    ) -> anyhow::Result<IronUp> {
        let (proxy, control, admin) = (free_addr(), free_addr(), free_addr());
        let mut cmd = match stderr_file {
            // `exec` keeps the pid: killing the handle kills `iron` itself.
            Some(file) => {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c")
                    .arg(r#"f=$1; shift; exec "$@" 2>>"$f""#)
                    .arg("sh")
                    .arg(file)
                    .arg(cargo_bin("iron"));
                c
            }
            None => tokio::process::Command::new(cargo_bin("iron")),
        };
        cmd.arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--proxy-listen", &proxy.to_string()])
            .args(["--control-listen", &control.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(extra)
            .env_remove("IRON_DASHBOARD_DIR")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let process = ChildProcess::spawn(cmd).await?;
        // The banner's last line: printed once the proxy has loaded its routing data.
        process
            .wait_for_line(IronUp::BANNER_END, Duration::from_secs(30))
            .await?;
        let admin_key = std::fs::read_to_string(data_dir.join("admin.key"))?
            .trim()
            .to_owned();
        Ok(IronUp {
            process,
            data_dir: data_dir.to_owned(),
            proxy,
            control,
            admin,
            admin_key,
        })
    }

    pub fn control_url(&self) -> String {
        format!("http://{}", self.control)
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    pub async fn iron(&self, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        iron(&self.control_url(), &self.admin_key, args, env).await
    }

    /// `iron provider add mock --kind openai --base-url <base_url>` with `api_key` passed
    /// through an environment variable (as a user would).
    pub async fn add_mock_provider(&self, base_url: &str, api_key: &str) -> CliOutput {
        let args = [
            "provider",
            "add",
            "mock",
            "--kind",
            "openai",
            "--base-url",
            base_url,
            "--api-key-env",
            "E2E_KEY",
        ];
        self.iron(&args, &[("E2E_KEY", api_key)]).await
    }
}

/// `iron-control` on a Redis store (production split).
pub struct Control {
    pub process: ChildProcess,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Control {
    pub async fn start_redis(redis_url: &str) -> anyhow::Result<Control> {
        Self::start_redis_at(redis_url, free_addr()).await
    }

    pub async fn start_redis_at(redis_url: &str, addr: SocketAddr) -> anyhow::Result<Control> {
        Self::start_redis_with(redis_url, addr, "").await
    }

    /// Like [`Control::start_redis_at`] with `extra` appended to control.toml (e.g. a
    /// `[leases]` section with a short `ttl_secs`).
    pub async fn start_redis_with(
        redis_url: &str,
        addr: SocketAddr,
        extra: &str,
    ) -> anyhow::Result<Control> {
        let store = format!("kind = \"redis\"\nurl = \"{redis_url}\"");
        Self::start_store(&store, addr, extra).await
    }

    /// `iron-control` on its embedded store in `data_dir` (the single-node production setup).
    pub async fn start_embedded(data_dir: &Path, extra: &str) -> anyhow::Result<Control> {
        let store = format!(
            "kind = \"embedded\"\npath = \"{}\"",
            data_dir.join("control.redb").display()
        );
        Self::start_store(&store, free_addr(), extra).await
    }

    /// `iron-control` with `store` as the `[store]` section and `extra` appended.
    async fn start_store(store: &str, addr: SocketAddr, extra: &str) -> anyhow::Result<Control> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("control.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{addr}\"\n\n[store]\n{store}\n\n[security]\nallow_private_upstreams = true\n\n{extra}"
            ),
        )?;
        let mut cmd = tokio::process::Command::new(cargo_bin("iron-control"));
        cmd.arg("--config")
            .arg(&config)
            .env("IRON_MASTER_KEY", MASTER_KEY)
            .env("IRON_PROXY_SECRET", PROXY_SECRET)
            .env("IRON_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY);
        let process = ChildProcess::spawn(cmd).await?;
        wait_for_tcp(addr, Duration::from_secs(30))
            .await
            .with_context(|| process.output())?;
        Ok(Control {
            process,
            addr,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// `iron-proxy` in control mode.
pub struct Proxy {
    pub process: ChildProcess,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    pub async fn start(control_url: &str) -> anyhow::Result<Proxy> {
        let dir = tempfile::tempdir()?;
        Self::start_in(control_url, dir).await
    }

    /// Starts with its spill dir inside `dir` (reuse a dir to restart "the same" proxy).
    pub async fn start_in(control_url: &str, dir: tempfile::TempDir) -> anyhow::Result<Proxy> {
        Self::start_in_with_env(control_url, dir, &[]).await
    }

    /// [`Proxy::start_in`] with extra environment variables (`OTEL_*`, `IRON_*` overrides).
    pub async fn start_in_with_env(
        control_url: &str,
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proxy> {
        let budget = format!(
            "spill_dir = \"{}\"\nlease_usd = \"0.01\"",
            dir.path().join("spill").display()
        );
        Self::launch(control_url, dir, &budget, env).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A proxy whose `[budget]` section is exactly `budget` (e.g. without `spill_dir`, or
    /// with `fail_mode = "open"`); otherwise configured like [`Proxy::start_in`].
    pub async fn start_with_budget(
        control_url: &str,
        dir: tempfile::TempDir,
        budget: &str,
    ) -> anyhow::Result<Proxy> {
        Self::launch(control_url, dir, budget, &[]).await
    }

    /// Writes `dir/proxy.toml` (ephemeral ports, loopback upstreams allowed, the given
    /// `[budget]` section, control at `control_url`) and starts `iron-proxy` on it.
    async fn launch(
        control_url: &str,
        dir: tempfile::TempDir,
        budget: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proxy> {
        let (addr, admin) = (free_addr(), free_addr());
        let config = dir.path().join("proxy.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\nthreads = 2\nshutdown_grace_secs = 10\n\n\
                 [security]\nallow_private_upstreams = true\n\n\
                 [budget]\n{budget}\n\n[control]\nurl = \"{control_url}\"\n"
            ),
        )?;
        let mut cmd = tokio::process::Command::new(cargo_bin("iron-proxy"));
        cmd.arg("--config")
            .arg(&config)
            .env("IRON_PROXY_SECRET", PROXY_SECRET);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let process = ChildProcess::spawn(cmd).await?;
        wait_for_tcp(addr, Duration::from_secs(30))
            .await
            .with_context(|| process.output())?;
        Ok(Proxy {
            process,
            addr,
            admin,
            dir,
        })
    }

    /// Σ of the values of metric `name` on the admin port, over the series whose labels
    /// include every `(label, value)` of `labels` (0 when there is none).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let metric = series.split('{').next()?;
                let wanted = metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")));
                wanted.then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    }

    /// Waits until `/readyz` says the routing table is loaded.
    pub async fn ready(&self) -> anyhow::Result<()> {
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("http://{}/readyz", self.admin)).await
                && r.status() == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("proxy not ready: {}", self.process.output())
    }
}

/// A chat completion through `proxy_url` with `token`; returns (status, body).
pub async fn chat(proxy_url: &str, token: &str, stream: bool) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{proxy_url}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&serde_json::json!({"model":"gpt-4o-mini","stream":stream,"messages":[{"role":"user","content":"hello"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// One streamed chat completion through `proxy_url` with `tokens` output tokens, the mock
/// waiting `delay_ms` between chunks; (status, body), or (0, the error) when the proxy went
/// away under it (kill -9).
pub async fn stream_chat(
    client: &reqwest::Client,
    proxy_url: &str,
    token: &str,
    tokens: u32,
    delay_ms: u32,
) -> (u16, String) {
    let resp = client
        .post(format!("{proxy_url}/v1/chat/completions"))
        .bearer_auth(token)
        .header("x-mock-tokens", tokens.to_string())
        .header("x-mock-delay-ms", delay_ms.to_string())
        .json(&serde_json::json!({"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"go"}]}))
        .send()
        .await;
    match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// The control REST API as an admin.
#[derive(Debug, Clone)]
pub struct Admin {
    pub url: String,
    pub key: String,
    http: reqwest::Client,
}

impl Admin {
    pub fn new(url: &str, key: &str) -> Self {
        Admin {
            url: url.to_owned(),
            key: key.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let (status, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {v}");
        v
    }

    /// Adds an OpenAI provider pointing at `base_url`; returns its id.
    pub async fn provider(&self, name: &str, base_url: &str, api_key: &str) -> String {
        let v = self
            .ok(
                reqwest::Method::POST,
                "/v1/providers",
                Some(serde_json::json!({"name": name, "kind": "openai", "base_url": base_url, "api_key": api_key})),
            )
            .await;
        v["id"].as_str().unwrap().to_owned()
    }

    /// Creates a project (budget in USD as a decimal string, or unlimited); returns its id.
    pub async fn project(&self, name: &str, budget_usd: Option<&str>) -> String {
        let mut body = serde_json::json!({"name": name});
        if let Some(b) = budget_usd {
            body["budget_usd"] = serde_json::Value::String(b.to_owned());
        }
        let v = self
            .ok(reqwest::Method::POST, "/v1/projects", Some(body))
            .await;
        v["id"].as_str().unwrap().to_owned()
    }

    /// Mints a token; returns (id, token).
    pub async fn mint(&self, project: &str) -> (String, String) {
        let v = self
            .ok(
                reqwest::Method::POST,
                &format!("/v1/projects/{project}/tokens"),
                Some(serde_json::json!({})),
            )
            .await;
        (
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn revoke(&self, token_id: &str) {
        self.ok(
            reqwest::Method::DELETE,
            &format!("/v1/tokens/{token_id}"),
            None,
        )
        .await;
    }

    /// `GET /v1/budgets/{project}`.
    pub async fn budget(&self, project: &str) -> serde_json::Value {
        self.ok(
            reqwest::Method::GET,
            &format!("/v1/budgets/{project}"),
            None,
        )
        .await
    }

    /// Every usage event of `project` (follows pagination).
    pub async fn usage(&self, project: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/usage?project={project}&limit=1000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let v = self.ok(reqwest::Method::GET, &path, None).await;
            out.extend(v["data"].as_array().cloned().unwrap_or_default());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }
}

/// Micro-dollars from a decimal USD string ("0.050000").
pub fn micros(usd: &serde_json::Value) -> u64 {
    usd.as_str()
        .and_then(|s| s.parse::<iron_core::Money>().ok())
        .map_or(0, |m| m.micros())
}

/// Asks the redis-server on `port` to write its dataset to disk and exit (`SHUTDOWN SAVE`,
/// raw RESP), so a restart in the same directory (`RedisServer::restart`) loads it again: a
/// Redis outage without data loss.
pub async fn redis_shutdown_save(port: u16) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"*2\r\n$8\r\nSHUTDOWN\r\n$4\r\nSAVE\r\n")
        .await?;
    // Redis closes the connection when it exits (an error reply means it did not).
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    anyhow::ensure!(
        buf.is_empty(),
        "SHUTDOWN SAVE failed: {}",
        String::from_utf8_lossy(&buf)
    );
    Ok(())
}

/// Metric names the Grafana dashboards and alert rules reference
/// (`charts/iron/ci/check-observability.sh --list-metrics`).
pub fn referenced_metrics() -> Vec<String> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/iron/ci/check-observability.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("--list-metrics")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("metric: "))
        .map(str::to_owned)
        .collect()
}
