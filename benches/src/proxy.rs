//! The proxy under test as a separate process: the `iron-proxy` binary found next to the
//! harness binary (`target/<profile>/`), started with a generated static config and a minted
//! token, optionally pinned with `taskset`, so its CPU time and peak RSS can be read from
//! `/proc/<pid>` without counting the load generator or the mock.
//!
//! Its log (one line per request at the default `info` level, as shipped) goes to a file in the
//! run's temporary directory; the last lines are shown when it fails.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};

use crate::fixtures::{FeatureSet, PROVIDER_KEY, PROVIDER_KEY_ENV, ProxyToml};

/// Proxy processes alive right now, so an interrupted harness can kill them ([`kill_all`]).
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SIGKILLs every proxy this harness started and has not stopped yet (on Ctrl-C / SIGTERM).
pub fn kill_all() {
    for pid in running().drain(..) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// How to start proxies for one harness run.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub binary: PathBuf,
    /// CPU list for `taskset -c` (e.g. `0`), or none.
    pub pin: Option<String>,
    pub threads: usize,
    /// `RUST_LOG` for the proxy (`None`: the proxy's default, `info`).
    pub rust_log: Option<String>,
    pub dir: PathBuf,
    pub upstream: String,
    pub public_key: iron_core::token::PublicKey,
}

/// A running `iron-proxy`; dropping it kills the process.
#[derive(Debug)]
pub struct ProxyProcess {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
}

/// A free loopback port (bound, then released).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// `<dir of the running executable>/iron-proxy`.
pub fn default_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locate the running executable")?;
    let dir = exe.parent().context("executable has no directory")?;
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    Ok(dir.join(format!("iron-proxy{}", std::env::consts::EXE_SUFFIX)))
}

/// The newest source file under `dir` (recursively), with its modification time.
fn newest_source(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut best: Option<(SystemTime, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(m) = meta.modified()
                && best.as_ref().is_none_or(|(t, _)| m > *t)
            {
                best = Some((m, path));
            }
        }
    }
    best
}

/// When the proxy binary is older than a source file it is built from (`proxy/src`,
/// `core/src`, a manifest), describes the problem: a stale binary measures old code.
pub fn staleness(binary: &Path) -> Option<String> {
    let root = crate::workspace_root()?;
    let built = std::fs::metadata(binary).ok()?.modified().ok()?;
    let mut candidates = Vec::new();
    for dir in ["proxy/src", "core/src"] {
        candidates.extend(newest_source(&root.join(dir)));
    }
    for file in ["proxy/Cargo.toml", "core/Cargo.toml", "Cargo.lock"] {
        let p = root.join(file);
        if let Ok(m) = std::fs::metadata(&p).and_then(|m| m.modified()) {
            candidates.push((m, p));
        }
    }
    let (newest, path) = candidates.into_iter().max_by_key(|(t, _)| *t)?;
    (newest > built).then(|| {
        format!(
            "{} is older than {} — rebuild it (`cargo build {}-p iron-proxy`) or pass --allow-stale-proxy",
            binary.display(),
            path.display(),
            if cfg!(debug_assertions) {
                ""
            } else {
                "--release "
            },
        )
    })
}

impl Launcher {
    fn command(&self) -> Command {
        let mut cmd = match &self.pin {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        cmd.env(PROVIDER_KEY_ENV, PROVIDER_KEY);
        match &self.rust_log {
            Some(level) => cmd.env("RUST_LOG", level),
            None => cmd.env_remove("RUST_LOG"),
        };
        // The proxy reads IRON_* overrides from its environment: run it with none.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("IRON_") {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn render(
        &self,
        features: Option<FeatureSet>,
        listen: SocketAddr,
        admin: SocketAddr,
    ) -> String {
        ProxyToml {
            listen,
            admin_listen: admin,
            threads: self.threads,
            features,
            upstream: &self.upstream,
            public_key: &self.public_key,
        }
        .render()
    }

    /// Whether this proxy accepts a `[features]` table (`iron-proxy --check-config`).
    pub fn accepts_features(&self) -> anyhow::Result<bool> {
        let probe = |features| -> anyhow::Result<(bool, String)> {
            let path = self.dir.join("check.toml");
            let text = self.render(features, free_addr()?, free_addr()?);
            std::fs::write(&path, text).context("write check.toml")?;
            let out = self
                .command()
                .arg("--config")
                .arg(&path)
                .arg("--check-config")
                .output()
                .with_context(|| format!("run {}", self.binary.display()))?;
            let msg = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok((out.status.success(), msg))
        };
        if probe(Some(FeatureSet::ALL_OFF))?.0 {
            return Ok(true);
        }
        let (ok, msg) = probe(None)?;
        if !ok {
            bail!(
                "iron-proxy refuses the generated configuration: {}",
                msg.trim()
            );
        }
        Ok(false)
    }

    /// Starts a proxy and waits until `/readyz` answers 200.
    pub fn start(&self, name: &str, features: Option<FeatureSet>) -> anyhow::Result<ProxyProcess> {
        let (addr, admin) = (free_addr()?, free_addr()?);
        let config = self.dir.join(format!("{name}.toml"));
        std::fs::write(&config, self.render(features, addr, admin))
            .with_context(|| format!("write {}", config.display()))?;
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).context("create proxy log")?;
        let err = out.try_clone().context("proxy log")?;
        let child = self
            .command()
            .arg("--config")
            .arg(&config)
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        running().push(child.id());
        let mut p = ProxyProcess {
            pid: child.id(),
            child,
            addr,
            admin,
            log,
        };
        p.wait_ready(Duration::from_secs(20))?;
        Ok(p)
    }
}

impl ProxyProcess {
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "iron-proxy exited during start-up ({status}); log:\n{}",
                    self.log_tail(30)
                );
            }
            if readyz(self.admin).unwrap_or(false) && TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "iron-proxy not ready after {timeout:?}; log:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `n` lines of the proxy's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill().context("kill iron-proxy")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        running().retain(|p| *p != self.pid);
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET /readyz` on the admin port: true on 200.
fn readyz(admin: SocketAddr) -> anyhow::Result<bool> {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf)?;
    Ok(buf[..n].starts_with(b"HTTP/1.1 200"))
}
