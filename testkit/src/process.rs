//! Process helpers for tests that start real binaries (`iron-proxy`, `iron`, `iron-mock`,
//! `redis-server`): find a binary in the cargo target directory, run it with its output
//! captured line by line, wait for a log line or a TCP port, signal it, and always kill it
//! when the test ends (the [`ChildProcess`] `Drop`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Path of binary `name` built by cargo next to the running test: `target/<profile>/<name>`.
///
/// Integration tests run from `target/<profile>/deps/`, so the binary is one directory up;
/// this works for any `CARGO_TARGET_DIR` and for `target/<triple>/<profile>` layouts. A
/// `CARGO_BIN_EXE_<name>` variable in the environment wins. Inside the crate that defines the
/// binary prefer `env!("CARGO_BIN_EXE_<name>")`, which also makes cargo build it; binaries of
/// other crates must have been built first (e.g. `cargo build --workspace --bins`).
pub fn cargo_bin(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(p);
    }
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let dir = std::env::current_exe().ok().and_then(|exe| {
        let mut dir = exe.parent()?.to_path_buf();
        if dir.ends_with("deps") || dir.ends_with("examples") {
            dir.pop();
        }
        Some(dir)
    });
    match dir {
        Some(d) => d.join(file),
        None => PathBuf::from("target").join("debug").join(file),
    }
}

/// Captured output of a child: every line of stdout and stderr, in the order they were read.
#[derive(Debug, Default)]
struct Captured {
    lines: Vec<String>,
    /// Output streams not yet at end-of-file.
    open: usize,
}

/// A spawned child process whose stdout and stderr are captured. Dropping it kills the process
/// (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct ChildProcess {
    child: tokio::process::Child,
    pid: u32,
    captured: Arc<Mutex<Captured>>,
    changed: watch::Receiver<u64>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn spawn_reader(
    stream: impl AsyncRead + Unpin + Send + 'static,
    captured: Arc<Mutex<Captured>>,
    changed: Arc<watch::Sender<u64>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while matches!(buf.last(), Some(b'\n' | b'\r')) {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    captured
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .lines
                        .push(line);
                    changed.send_modify(|v| *v += 1);
                }
            }
        }
        captured.lock().unwrap_or_else(PoisonError::into_inner).open -= 1;
        changed.send_modify(|v| *v += 1);
    })
}

impl ChildProcess {
    /// Spawn `cmd` with stdout and stderr captured (stdin is `/dev/null`).
    pub async fn spawn(mut cmd: tokio::process::Command) -> anyhow::Result<ChildProcess> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let program = format!("{:?}", cmd.as_std().get_program());
        let mut child = cmd.spawn().with_context(|| format!("spawn {program}"))?;
        let pid = child
            .id()
            .with_context(|| format!("{program} exited before its pid was read"))?;
        let captured = Arc::new(Mutex::new(Captured {
            lines: Vec::new(),
            open: 2,
        }));
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let mut readers = Vec::new();
        match child.stdout.take() {
            Some(out) => readers.push(spawn_reader(out, captured.clone(), tx.clone())),
            None => captured.lock().unwrap_or_else(PoisonError::into_inner).open -= 1,
        }
        match child.stderr.take() {
            Some(err) => readers.push(spawn_reader(err, captured.clone(), tx.clone())),
            None => captured.lock().unwrap_or_else(PoisonError::into_inner).open -= 1,
        }
        Ok(ChildProcess {
            child,
            pid,
            captured,
            changed: rx,
            readers,
            status: None,
        })
    }

    /// The first captured line containing `pattern`, waiting up to `timeout` for it. Errors,
    /// with the output so far, on timeout or when the process closes its output without it.
    pub async fn wait_for_line(&self, pattern: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            {
                let c = self.captured.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(line) = c.lines.iter().find(|l| l.contains(pattern)) {
                    return Ok(line.clone());
                }
                if c.open == 0 {
                    bail!(
                        "process {} closed its output (exited?) without printing a line \
                         containing {pattern:?}; output:\n{}",
                        self.pid,
                        c.lines.join("\n")
                    );
                }
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    // All readers are gone; the next pass reports it.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => bail!(
                    "timed out after {timeout:?} waiting for a line containing {pattern:?} \
                     from process {}; output so far:\n{}",
                    self.pid,
                    self.output()
                ),
            }
        }
    }

    /// Everything captured so far (stdout and stderr lines, `\n`-separated).
    pub fn output(&self) -> String {
        self.captured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lines
            .join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Send a signal by name (`"TERM"`, `"INT"`, `"KILL"`, `"HUP"`, with or without `SIG`),
    /// via `kill -s`.
    pub async fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let sig = sig.trim().trim_start_matches("SIG");
        let out = tokio::process::Command::new("kill")
            .arg("-s")
            .arg(sig)
            .arg(self.pid.to_string())
            .output()
            .await
            .context("run kill")?;
        if !out.status.success() {
            bail!(
                "kill -s {sig} {} failed: {}",
                self.pid,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Wait up to `timeout` for the process to exit; then give the output readers a moment to
    /// drain so [`output`](Self::output) is complete.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(r) => r.with_context(|| format!("wait for process {}", self.pid))?,
            Err(_) => bail!(
                "process {} did not exit within {timeout:?}; output so far:\n{}",
                self.pid,
                self.output()
            ),
        };
        self.status = Some(status);
        self.drain_readers().await;
        Ok(status)
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let s = self.child.try_wait()?;
        self.status = s;
        Ok(s)
    }

    /// SIGKILL the process and wait for it.
    pub async fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        // Errors when it already exited; `wait` below reports the status either way.
        let _ = self.child.start_kill();
        self.wait_exit(Duration::from_secs(10)).await
    }

    async fn drain_readers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        for r in self.readers.drain(..) {
            let left = deadline.saturating_duration_since(Instant::now());
            // A grandchild may keep the pipe open; do not wait for it forever.
            let _ = tokio::time::timeout(left, r).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        if self.child.start_kill().is_err() {
            return;
        }
        // Reap it so no zombie outlives the test; SIGKILL takes effect within milliseconds.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Ok(Some(_)) | Err(_) => break,
            }
        }
    }
}

/// Wait until a TCP connection to `addr` succeeds (retrying every 20 ms), or error after
/// `timeout`.
pub async fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        let err = match attempt {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_owned(),
        };
        if Instant::now() >= deadline {
            bail!("{addr} did not accept a TCP connection within {timeout:?}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
