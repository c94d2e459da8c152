//! A private `redis-server` per test: started from `PATH` on an ephemeral port with no
//! persistence (`--save "" --appendonly no`) in its own temporary directory, and stoppable /
//! restartable on the same port for outage tests (design §8, §10). Readiness is checked with a
//! raw RESP `PING` over TCP, so the testkit does not depend on a Redis client crate.

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

/// A running `redis-server`. Dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct RedisServer {
    // Declared before `dir` so the process dies before its directory is removed.
    child: Option<ChildProcess>,
    port: u16,
    dir: tempfile::TempDir,
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
            match spawn_on(port, dir.path()).await {
                Ok(child) => {
                    return Ok(RedisServer {
                        child: Some(child),
                        port,
                        dir,
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
            match spawn_on(self.port, self.dir.path()).await {
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

/// A port that was free a moment ago (bind `127.0.0.1:0`, read it, release it).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn redis_program() -> std::ffi::OsString {
    std::env::var_os(REDIS_SERVER_ENV).unwrap_or_else(|| REDIS_SERVER.into())
}

/// Spawn redis on `port` and wait until it is ready and answers `PING`.
async fn spawn_on(port: u16, dir: &Path) -> anyhow::Result<ChildProcess> {
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
        .arg("");
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
