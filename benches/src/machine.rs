//! The machine a result was measured on — printed and stored with every result: cores, CPU
//! model (`/proc/cpuinfo`), memory (`/proc/meminfo`), kernel, the build profile of the
//! binaries, the source revision, and what was pinned to which CPU.

use serde::Serialize;

/// Where the harness and the proxy ran.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs in `/proc/cpuinfo`.
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    /// `release` or `debug` (the profile the harness and the proxy were built with).
    pub profile: &'static str,
    pub iron_version: &'static str,
    /// `git describe --always --dirty` of the workspace, when available.
    pub revision: Option<String>,
    pub pinning: Pinning,
}

/// CPU affinity as observed from `/proc/<pid>/status` (not as requested).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pinning {
    /// Whether `taskset` was used.
    pub pinned: bool,
    /// CPUs of the proxy process(es).
    pub proxy_cpus: Option<String>,
    /// CPUs of the harness (load generator + in-process mock).
    pub harness_cpus: Option<String>,
    /// Why pinning was not used, if it was not.
    pub note: Option<String>,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(1);
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_gib = crate::procfs::status_kib(&meminfo, "MemTotal:").unwrap_or(0) as f64
            / (1024.0 * 1024.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cores,
            cpu_model,
            memory_gib,
            kernel,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            iron_version: env!("CARGO_PKG_VERSION"),
            revision: revision(),
            pinning: Pinning::default(),
        }
    }

    /// One line for the console and the docs.
    pub fn summary(&self) -> String {
        format!(
            "{} cores ({}), {:.1} GiB RAM, Linux {}, {} build, iron {} ({})",
            self.cores,
            self.cpu_model,
            self.memory_gib,
            self.kernel,
            self.profile,
            self.iron_version,
            self.revision.as_deref().unwrap_or("unknown revision"),
        )
    }

    pub fn pinning_summary(&self) -> String {
        let p = &self.pinning;
        if p.pinned {
            format!(
                "pinned with taskset: proxy on CPU {}, load generator + mock on CPU {}",
                p.proxy_cpus.as_deref().unwrap_or("?"),
                p.harness_cpus.as_deref().unwrap_or("?")
            )
        } else {
            format!(
                "not pinned ({}); proxy CPUs {}, harness CPUs {}",
                p.note.as_deref().unwrap_or("disabled"),
                p.proxy_cpus.as_deref().unwrap_or("?"),
                p.harness_cpus.as_deref().unwrap_or("?")
            )
        }
    }
}

fn revision() -> Option<String> {
    let root = crate::workspace_root()?;
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(root)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
