//! Security guards around the request path (`design.md` §2, §8; issue #12).
//!
//! - **SSRF guard**, used by the *upstream* stage (7) and pingora's pass-through peer: a
//!   provider address is checked **after DNS, at connect time** ([`pick_upstream_addr`]), so a
//!   host name that resolves (or is rebound) to loopback, private, link-local (cloud metadata
//!   169.254.169.254), CGNAT, multicast, … is never connected to unless
//!   `security.allow_private_upstreams` is set. Plain `http://` upstreams need the same flag.
//!   Static-mode configuration runs [`check_endpoint`] at load time as an early, cheaper check.
//!   The ranges are `iron_core::net`, shared with control's check at provider creation.
//! - **Failed-authentication limit** ([`AuthLimiter`]), used *before* stage 1 (auth): failed
//!   IC-token checks are counted per source address in a fixed-size in-memory table; an
//!   address that reaches the limit is answered 429 `rate_limited` with `Retry-After` before
//!   its token is even looked at, until the window has passed.

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use iron_core::net::{is_internal_hostname, is_internal_ip};

use crate::client::Endpoint;

/// Load-time check of a provider endpoint (static mode, `--check-config`): plain http and
/// internal IP literals / host names are refused unless `allow_private`. Messages name the
/// rule, never a secret.
pub fn check_endpoint(endpoint: &Endpoint, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    if !endpoint.tls {
        return Err("must use https (plain http is allowed only with \
                    security.allow_private_upstreams = true)"
            .into());
    }
    let internal = match endpoint.host.parse::<IpAddr>() {
        Ok(ip) => is_internal_ip(ip),
        Err(_) => is_internal_hostname(&endpoint.host),
    };
    if internal {
        return Err(
            "points to a loopback, private or link-local address (allowed only \
                    with security.allow_private_upstreams = true)"
                .into(),
        );
    }
    Ok(())
}

/// Why the proxy refuses to connect to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `http://` without `allow_private_upstreams`.
    PlainHttp,
    /// Every resolved address is internal.
    InternalAddress,
}

impl Refusal {
    /// Text for the agent's error body and the log line (no address, no secret).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::PlainHttp => {
                "its URL uses plain http, which this proxy refuses \
                 (security.allow_private_upstreams is off)"
            }
            Refusal::InternalAddress => {
                "its address is loopback, private, link-local or otherwise internal, which \
                 this proxy refuses (security.allow_private_upstreams is off)"
            }
        }
    }
}

/// Connect-time check: the address to connect to, chosen among the resolved `addrs`.
/// Without `allow_private`, internal addresses are skipped and plain http is refused; the
/// caller connects to exactly the returned address (no second lookup), so a DNS answer
/// cannot change between check and connect.
pub fn pick_upstream_addr(
    tls: bool,
    addrs: &[SocketAddr],
    allow_private: bool,
) -> Result<SocketAddr, Refusal> {
    if allow_private {
        return addrs.first().copied().ok_or(Refusal::InternalAddress);
    }
    if !tls {
        return Err(Refusal::PlainHttp);
    }
    addrs
        .iter()
        .copied()
        .find(|a| !is_internal_ip(a.ip()))
        .ok_or(Refusal::InternalAddress)
}

/// Ways per set of [`AuthLimiter`]'s table.
const WAYS: usize = 4;

/// One tracked source address.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    used: bool,
    key: u128,
    /// Start of the current counting window (ms since the limiter's epoch).
    window_start: u64,
    failures: u32,
    /// Refused until then (ms since epoch); 0 = not blocked.
    blocked_until: u64,
}

/// Counts failed authentications per source address and blocks an address that reaches the
/// limit within the window, for one window.
///
/// A fixed-size, set-associative table (4 slots per set, a keyed hash picks the set, one
/// small mutex per set): O(1) per request, no allocation after start-up, memory bounded by
/// `max_ips` (≈48 bytes each). IPv6 clients are tracked per /64 (one host usually owns a
/// whole /64). When a set is full the least useful slot is replaced: an unblocked one with
/// the oldest window first, a blocked one only when all four are blocked (the one whose
/// block ends first).
pub struct AuthLimiter {
    limit: u32,
    window_ms: u64,
    sets: Box<[Mutex<[Slot; WAYS]>]>,
    mask: usize,
    hasher: RandomState,
    epoch: Instant,
}

impl std::fmt::Debug for AuthLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLimiter")
            .field("limit", &self.limit)
            .field("window_ms", &self.window_ms)
            .field("capacity", &(self.sets.len() * WAYS))
            .finish_non_exhaustive()
    }
}

/// The table key of an address: IPv4 as IPv4-mapped IPv6, IPv6 cut to its /64.
fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6) & !((1u128 << 64) - 1),
        },
    }
}

impl AuthLimiter {
    /// `limit` failures within `window` block the address for `window`; `limit == 0`
    /// disables the limiter. `max_ips` is rounded up to a power of two (at least 4).
    pub fn new(limit: u32, window: Duration, max_ips: usize) -> Self {
        let sets = max_ips.div_ceil(WAYS).max(1).next_power_of_two();
        AuthLimiter {
            limit,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
            sets: (0..sets)
                .map(|_| Mutex::new([Slot::default(); WAYS]))
                .collect(),
            mask: sets - 1,
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn set(&self, k: u128) -> &Mutex<[Slot; WAYS]> {
        let i = (self.hasher.hash_one(k) as usize) & self.mask;
        &self.sets[i]
    }

    /// `Some(seconds)` (for `Retry-After`, at least 1) while `ip` is blocked.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        if !self.enabled() {
            return None;
        }
        self.blocked_at(ip, self.now_ms())
    }

    fn blocked_at(&self, ip: IpAddr, now: u64) -> Option<u64> {
        let k = key(ip);
        let set = self.set(k).lock().ok()?;
        let slot = set.iter().find(|s| s.used && s.key == k)?;
        (slot.blocked_until > now).then(|| (slot.blocked_until - now).div_ceil(1000).max(1))
    }

    /// Counts one failed authentication from `ip`. Returns true when this failure made the
    /// address blocked (the caller logs it once).
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        if !self.enabled() {
            return false;
        }
        self.record_failure_at(ip, self.now_ms())
    }

    fn record_failure_at(&self, ip: IpAddr, now: u64) -> bool {
        let k = key(ip);
        let Ok(mut set) = self.set(k).lock() else {
            return false;
        };
        let i = match set.iter().position(|s| s.used && s.key == k) {
            Some(i) => i,
            None => {
                let victim = Self::victim(&set, now);
                set[victim] = Slot {
                    used: true,
                    key: k,
                    window_start: now,
                    failures: 0,
                    blocked_until: 0,
                };
                victim
            }
        };
        let slot = &mut set[i];
        if slot.blocked_until > now {
            return false;
        }
        if now.saturating_sub(slot.window_start) >= self.window_ms {
            slot.window_start = now;
            slot.failures = 0;
        }
        slot.failures = slot.failures.saturating_add(1);
        if slot.failures >= self.limit {
            slot.blocked_until = now.saturating_add(self.window_ms);
            slot.failures = 0;
            slot.window_start = slot.blocked_until;
            return true;
        }
        false
    }

    /// The slot to reuse in a full set.
    fn victim(set: &[Slot; WAYS], now: u64) -> usize {
        if let Some(i) = set.iter().position(|s| !s.used) {
            return i;
        }
        let free = set
            .iter()
            .enumerate()
            .filter(|(_, s)| s.blocked_until <= now)
            .min_by_key(|(_, s)| s.window_start);
        if let Some((i, _)) = free {
            return i;
        }
        set.iter()
            .enumerate()
            .min_by_key(|(_, s)| s.blocked_until)
            .map_or(0, |(i, _)| i)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ep(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap()
    }

    #[test]
    fn endpoints_at_load_time() {
        assert!(check_endpoint(&ep("https://api.openai.com/v1"), false).is_ok());
        for bad in [
            "http://api.openai.com",
            "https://127.0.0.1:8443",
            "https://localhost",
            "https://169.254.169.254",
            "https://[::1]:8443",
            "https://[::ffff:10.0.0.1]",
            "https://metadata.google.internal",
        ] {
            assert!(check_endpoint(&ep(bad), false).is_err(), "{bad}");
            assert!(check_endpoint(&ep(bad), true).is_ok(), "{bad}");
        }
    }

    #[test]
    fn connect_time_pick() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let public = a("8.8.8.8:443");
        let lo = a("127.0.0.1:443");
        let meta = a("169.254.169.254:443");
        assert_eq!(pick_upstream_addr(true, &[lo, public], false), Ok(public));
        assert_eq!(
            pick_upstream_addr(true, &[lo, meta], false),
            Err(Refusal::InternalAddress)
        );
        assert_eq!(
            pick_upstream_addr(true, &[a("[::ffff:127.0.0.1]:443")], false),
            Err(Refusal::InternalAddress)
        );
        assert_eq!(
            pick_upstream_addr(false, &[public], false),
            Err(Refusal::PlainHttp)
        );
        assert_eq!(pick_upstream_addr(false, &[lo], true), Ok(lo));
        assert_eq!(
            pick_upstream_addr(true, &[], true),
            Err(Refusal::InternalAddress)
        );
    }

    #[test]
    fn limiter_blocks_after_limit_for_one_window() {
        let l = AuthLimiter::new(3, Duration::from_secs(60), 64);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(!l.record_failure_at(ip, 0));
        assert!(!l.record_failure_at(ip, 10));
        assert_eq!(l.blocked_at(ip, 10), None);
        assert!(l.record_failure_at(ip, 20));
        assert_eq!(l.blocked_at(ip, 20), Some(60));
        assert_eq!(l.blocked_at(ip, 59_500), Some(1));
        assert_eq!(l.blocked_at(other, 20), None);
        assert_eq!(l.blocked_at(ip, 60_020), None);
        // A fresh window after the block.
        assert!(!l.record_failure_at(ip, 60_030));
        assert_eq!(l.blocked_at(ip, 60_030), None);
    }

    #[test]
    fn limiter_window_resets_slow_failures() {
        let l = AuthLimiter::new(3, Duration::from_secs(1), 64);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for t in [0, 1_500, 3_000, 4_500, 6_000] {
            assert!(!l.record_failure_at(ip, t));
        }
        assert_eq!(l.blocked_at(ip, 6_000), None);
    }

    #[test]
    fn ipv6_is_tracked_per_64() {
        let l = AuthLimiter::new(2, Duration::from_secs(60), 64);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        l.record_failure_at(a, 0);
        assert!(l.record_failure_at(b, 1));
        assert!(l.blocked_at(a, 2).is_some());
        assert!(l.blocked_at(c, 2).is_none());
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        let v4: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(key(mapped), key(v4));
    }

    #[test]
    fn memory_is_bounded_and_blocked_entries_survive_churn() {
        let l = AuthLimiter::new(5, Duration::from_secs(60), 16);
        assert_eq!(l.sets.len() * WAYS, 16);
        let bad: IpAddr = "10.9.9.9".parse().unwrap();
        for _ in 0..5 {
            l.record_failure_at(bad, 0);
        }
        // 10,000 other addresses fail once each: unblocked slots are evicted first, so the
        // blocked address keeps its slot.
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            l.record_failure_at(ip, 1);
        }
        assert!(l.blocked_at(bad, 2).is_some());
    }

    #[test]
    fn disabled_limiter_never_blocks() {
        let l = AuthLimiter::new(0, Duration::from_secs(60), 16);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..100 {
            assert!(!l.record_failure(ip));
        }
        assert_eq!(l.blocked(ip), None);
    }
}
