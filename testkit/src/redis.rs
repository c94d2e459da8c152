//! A private `redis-server` per test: started from `PATH` on an ephemeral port with no
//! persistence (`--save "" --appendonly no`) in its own temporary directory, and stoppable /
//! restartable on the same port for outage tests (design §8, §10). Readiness is checked with a
//! raw RESP `PING` over TCP, so the testkit does not depend on a Redis client crate.
//!
//! [`RedisCluster`] starts several such servers with `--cluster-enabled yes` and joins them
//! with `redis-cli --cluster create` (masters only), for the store's Redis Cluster tests.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::ChildProcess;

/// Program started; override with `IRON_TEST_REDIS_SERVER=/path/to/redis-server`.
const REDIS_SERVER: &str = "redis-server";
const REDIS_SERVER_ENV: &str = "IRON_TEST_REDIS_SERVER";
/// How long one start may take before it is considered failed.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Ports tried by [`RedisServer::start`] before giving up.
const START_ATTEMPTS: usize = 5;
/// The line redis prints once it listens.
const READY_LINE: &str = "Ready to accept connections";
/// Program that joins cluster nodes; override with `IRON_TEST_REDIS_CLI=/path/to/redis-cli`.
const REDIS_CLI: &str = "redis-cli";
const REDIS_CLI_ENV: &str = "IRON_TEST_REDIS_CLI";
/// A cluster node's bus port is its port + this (Redis' fixed offset).
const CLUSTER_BUS_OFFSET: u16 = 10_000;
/// How long `redis-cli --cluster create` plus convergence may take.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Hash slots of a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16_384;

/// A running `redis-server`. Dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct RedisServer {
    // Declared before `dir` so the process dies before its directory is removed.
    child: Option<ChildProcess>,
    port: u16,
    dir: tempfile::TempDir,
    /// Arguments beyond the defaults (cluster mode), kept for [`RedisServer::restart`].
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Start on a free ephemeral port; retried on another port if the chosen one was taken
    /// in the meantime. Returns once the server answers `PING`.
    pub async fn start() -> anyhow::Result<RedisServer> {
        let dir = tempfile::Builder::new()
            .prefix("iron-redis-")
            .tempdir()
            .context("create redis temp dir")?;
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match spawn_on(port, dir.path(), &[]).await {
                Ok(child) => {
                    return Ok(RedisServer {
                        child: Some(child),
                        port,
                        dir,
                        extra_args: Vec::new(),
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context(format!("start redis-server ({START_ATTEMPTS} attempts)")))
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's data directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Whether the server answers `PING` right now.
    pub async fn ping(&self) -> bool {
        ping(self.port).await
    }

    /// Log output of the current process (empty when stopped).
    pub fn output(&self) -> String {
        self.child
            .as_ref()
            .map(ChildProcess::output)
            .unwrap_or_default()
    }

    /// Kill the server (SIGKILL, like a crash) and wait until it is gone. No-op when stopped.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("stop redis-server")?;
        }
        Ok(())
    }

    /// Stop (if running) and start again on the same port, with an empty dataset. Retries for
    /// a few seconds while the port is still being released.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match spawn_on(self.port, self.dir.path(), &self.extra_args).await {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("restart redis-server on port {}", self.port)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// A Redis Cluster of masters only (no replicas), each node a [`RedisServer`] started with
/// `--cluster-enabled yes` on an ephemeral port whose bus port (port + 10000) was free too,
/// in its own temporary directory. Dropping it kills every node and removes the directories.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Start `n_masters` nodes (at least 3, Redis' minimum), join them with `redis-cli
    /// --cluster create … --cluster-replicas 0 --cluster-yes`, and return once every node
    /// reports `cluster_state:ok`, all 16384 slots assigned and every other node known.
    pub async fn start(n_masters: usize) -> anyhow::Result<RedisCluster> {
        anyhow::ensure!(
            n_masters >= 3,
            "a Redis Cluster needs at least 3 masters, got {n_masters}"
        );
        let mut nodes = Vec::with_capacity(n_masters);
        for _ in 0..n_masters {
            nodes.push(start_cluster_node().await?);
        }
        let cluster = RedisCluster { nodes };
        cluster.create().await?;
        cluster.wait_until_ok().await?;
        Ok(cluster)
    }

    /// The nodes (all masters), in start order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// One node, to stop or restart it (a restarted node rejoins from its `nodes.conf`).
    pub fn node_mut(&mut self, i: usize) -> Option<&mut RedisServer> {
        self.nodes.get_mut(i)
    }

    /// The nodes' TCP ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// `redis://127.0.0.1:PORT` of every node (the seed list of a cluster client).
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The cluster as `iron-control`'s `store.url` spells it:
    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Sends one command to node `i` and returns its reply as text (simple strings,
    /// integers, errors with their `-` prefix, bulk strings; not arrays).
    pub async fn node_command(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let node = self
            .nodes
            .get(i)
            .with_context(|| format!("no cluster node {i}"))?;
        command(node.port(), args).await
    }

    /// `CLUSTER INFO` of node `i`.
    pub async fn cluster_info(&self, i: usize) -> anyhow::Result<String> {
        self.node_command(i, &["CLUSTER", "INFO"]).await
    }

    async fn create(&self) -> anyhow::Result<()> {
        let program = std::env::var_os(REDIS_CLI_ENV).unwrap_or_else(|| REDIS_CLI.into());
        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg("--cluster").arg("create");
        for port in self.ports() {
            cmd.arg(format!("127.0.0.1:{port}"));
        }
        cmd.arg("--cluster-replicas")
            .arg("0")
            .arg("--cluster-yes")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(CLUSTER_TIMEOUT, cmd.output())
            .await
            .context("redis-cli --cluster create timed out")?
            .with_context(|| {
                format!("run {program:?} (is redis-cli installed? set {REDIS_CLI_ENV} to override)")
            })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || !text.contains("All 16384 slots covered") {
            bail!(
                "redis-cli --cluster create failed ({}):\n{text}",
                out.status
            );
        }
        Ok(())
    }

    async fn wait_until_ok(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let want_known = format!("cluster_known_nodes:{}\r\n", self.nodes.len());
        let want_slots = format!("cluster_slots_assigned:{CLUSTER_SLOTS}\r\n");
        for i in 0..self.nodes.len() {
            loop {
                let info = self.cluster_info(i).await.unwrap_or_default();
                if info.contains("cluster_state:ok\r\n")
                    && info.contains(&want_known)
                    && info.contains(&want_slots)
                {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "cluster node {i} (port {}) not ok after {CLUSTER_TIMEOUT:?}:\n{info}",
                        self.nodes[i].port()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

/// One cluster-enabled node on a port whose bus port is free too; retried on other ports.
async fn start_cluster_node() -> anyhow::Result<RedisServer> {
    let dir = tempfile::Builder::new()
        .prefix("iron-redis-cluster-")
        .tempdir()
        .context("create redis temp dir")?;
    let extra_args: Vec<String> = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "5000",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let mut last_err = None;
    for _ in 0..START_ATTEMPTS {
        let port = free_cluster_port()?;
        // A failed attempt may have left a node identity for another port behind.
        let _ = std::fs::remove_file(dir.path().join("nodes.conf"));
        match spawn_on(port, dir.path(), &extra_args).await {
            Ok(child) => {
                return Ok(RedisServer {
                    child: Some(child),
                    port,
                    dir,
                    extra_args,
                });
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err
        .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
        .context(format!(
            "start cluster redis-server ({START_ATTEMPTS} attempts)"
        )))
}

/// A free port whose cluster bus port (port + 10000) was free a moment ago too.
fn free_cluster_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port with a free cluster bus port (port + {CLUSTER_BUS_OFFSET}) found")
}

/// One raw RESP command on `port`; the reply as text (not arrays).
async fn command(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let attempt = async {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(&req).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(reply) = complete_reply(&buf)? {
                return Ok(reply);
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed mid-reply");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .with_context(|| format!("redis on port {port}: {args:?} timed out"))?
}

/// The reply in `buf` once it is complete.
fn complete_reply(buf: &[u8]) -> anyhow::Result<Option<String>> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..eol]).into_owned();
    match head.as_bytes().first() {
        Some(b'+' | b':') => Ok(Some(head[1..].to_owned())),
        Some(b'-') => Ok(Some(head)),
        Some(b'$') => {
            let len: i64 = head[1..].parse().context("bulk length")?;
            let Ok(len) = usize::try_from(len) else {
                return Ok(Some(String::new()));
            };
            let start = eol + 2;
            if buf.len() < start + len + 2 {
                return Ok(None);
            }
            Ok(Some(
                String::from_utf8_lossy(&buf[start..start + len]).into_owned(),
            ))
        }
        _ => bail!("unsupported reply {head:?}"),
    }
}

/// A port that was free a moment ago (bind `127.0.0.1:0`, read it, release it).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn redis_program() -> std::ffi::OsString {
    std::env::var_os(REDIS_SERVER_ENV).unwrap_or_else(|| REDIS_SERVER.into())
}

/// Spawn redis on `port` (plus `extra` arguments) and wait until it is ready and answers
/// `PING`.
async fn spawn_on(port: u16, dir: &Path, extra: &[String]) -> anyhow::Result<ChildProcess> {
    let mut cmd = tokio::process::Command::new(redis_program());
    cmd.arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .arg("--dir")
        .arg(dir)
        .arg("--daemonize")
        .arg("no")
        .arg("--logfile")
        .arg("")
        .args(extra);
    let mut child = ChildProcess::spawn(cmd).await.with_context(|| {
        format!("start {REDIS_SERVER:?} (is redis-server installed and on PATH? set {REDIS_SERVER_ENV} to override)")
    })?;
    // The ready line proves that *our* process bound the port (another server on a reused
    // port would answer PING too).
    child
        .wait_for_line(READY_LINE, START_TIMEOUT)
        .await
        .with_context(|| format!("redis-server on port {port} did not become ready"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ping(port).await {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "redis-server on port {port} exited ({status}); output:\n{}",
                child.output()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "redis-server on port {port} does not answer PING; output:\n{}",
                child.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Raw RESP `PING`: true when the server on `port` answers `+PONG`.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 7 {
            let m = s.read(&mut buf[n..]).await?;
            if m == 0 {
                break;
            }
            n += m;
        }
        Ok::<bool, std::io::Error>(buf[..n].starts_with(b"+PONG\r\n"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}
