//! What the harness reads from `/proc` about a process: CPU time (`/proc/<pid>/stat` utime +
//! stime, all threads), resident memory (`VmRSS`, and the peak `VmHWM`, from
//! `/proc/<pid>/status`) and the CPUs it may run on (`Cpus_allowed_list`).
//!
//! CPU time comes in clock ticks (`getconf CLK_TCK`, 100 on Linux): 10 ms resolution, so the
//! harness measures over windows of thousands of requests.

use std::time::Duration;

use anyhow::{Context as _, bail};

/// CPU time a process used so far (user + system, every thread).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&text)?;
    Ok(ticks_to_duration(ticks, clock_ticks_per_second()))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat_ticks(stat: &str) -> anyhow::Result<u64> {
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("malformed /proc/<pid>/stat")?;
    // After the name: field 3 (state) is index 0, so utime (14) is index 11, stime index 12.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.len() < 13 {
        bail!("short /proc/<pid>/stat");
    }
    let utime: u64 = fields[11].parse().context("utime")?;
    let stime: u64 = fields[12].parse().context("stime")?;
    Ok(utime + stime)
}

fn ticks_to_duration(ticks: u64, hz: u64) -> Duration {
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz.max(1))
}

/// `getconf CLK_TCK`, or 100 (the Linux value) when it cannot be run.
pub fn clock_ticks_per_second() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Machine-wide CPU time from the first line of `/proc/stat`: (busy, total), all CPUs.
/// Busy excludes idle and iowait.
pub fn machine_cpu() -> anyhow::Result<(Duration, Duration)> {
    let text = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let (busy, total) = parse_proc_stat(&text)?;
    let hz = clock_ticks_per_second();
    Ok((ticks_to_duration(busy, hz), ticks_to_duration(total, hz)))
}

/// (busy, total) ticks of the aggregate `cpu` line.
pub fn parse_proc_stat(text: &str) -> anyhow::Result<(u64, u64)> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    if v.len() < 5 {
        bail!("short cpu line in /proc/stat");
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Ok((total - idle, total))
}

/// Memory figures of a process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss: u64,
    /// Peak resident set size (`VmHWM`).
    pub hwm: u64,
}

pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    Ok(Memory {
        rss: status_kib(&text, "VmRSS:").unwrap_or(0) * 1024,
        hwm: status_kib(&text, "VmHWM:").unwrap_or(0) * 1024,
    })
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`, in KiB.
pub fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The CPUs a process may run on (`Cpus_allowed_list`, e.g. `0` or `0-1`).
pub fn cpus_allowed(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let line = "4242 (iron proxy (x)) S 1 4242 4242 0 -1 4194560 3000 0 0 0 150 25 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_ticks(line).unwrap(), 175);
        assert!(parse_stat_ticks("1 (x) S 1").is_err());
        assert_eq!(ticks_to_duration(175, 100), Duration::from_millis(1750));
    }

    #[test]
    fn parses_proc_stat() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n";
        assert_eq!(parse_proc_stat(text).unwrap(), (150, 1000));
        assert!(machine_cpu().is_ok());
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let m = memory(pid).unwrap();
        assert!(m.rss > 0 && m.hwm >= m.rss);
        cpu_time(pid).unwrap();
        assert!(cpus_allowed(pid).is_some());
        assert_eq!(status_kib("VmHWM:\t  2048 kB\n", "VmHWM:"), Some(2048));
    }
}
