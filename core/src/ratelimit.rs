//! Rate limits (RPM / TPM, issue #12, `docs/decisions/0003-rate-limits.md`): the limits a
//! project or token carries, the wire types of `POST /internal/v1/ratelimits`, and the
//! sliding-window maths shared by control's embedded store and the proxy's static mode.
//!
//! Where it sits: the proxy's *ratelimit* stage (after auth/route/read, before budget) takes
//! units from short local slices; when a slice is empty it asks control (or, in static mode,
//! its in-process limiter) for more with a [`RateTake`]. The authority answers with a
//! [`RateGrant`] computed by [`Window::take`] — or, in the Redis store, by the Lua function
//! that implements the same rule.
//!
//! **The rule.** A counter is a sliding window of one-second buckets. At time `now` (ms),
//! the window holds the bucket of the current second and of the 60 whole seconds before it
//! (`now_s − 60 ..= now_s`, [`BUCKETS`] = 61). A take of `want` units with minimum `min` is
//! granted `min(want, limit − used)` when `limit − used ≥ min`, else nothing, and the grant
//! is added to the bucket of `now_s`. So any 61 consecutive buckets — hence any real
//! interval of 60 s, which touches at most 61 buckets — never hold more than `limit`
//! granted units (forced charges aside: those record usage that already happened, e.g.
//! output tokens, and may overdraw). Counting the partial current second on top of 60 full
//! ones costs at most one second of throughput per minute (≈ 1.6 %) and removes the
//! up-to-2× burst a 60-bucket window allows across a bucket boundary.

use serde::{Deserialize, Serialize};

/// The window length the limits are expressed in (per minute).
pub const WINDOW_SECS: u64 = 60;
/// One-second buckets counted at any time: the current second plus the 60 before it.
pub const BUCKETS: u64 = WINDOW_SECS + 1;
/// Longest a denied take waits (the whole window).
pub const MAX_RETRY_MS: u64 = BUCKETS * 1000;
/// Largest limit accepted (keeps every sum exact in Lua doubles).
pub const MAX_LIMIT: u64 = 1_000_000_000_000;

/// Optional per-minute limits of a project or token. `None` = unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (input + output) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

impl RateLimits {
    pub const NONE: RateLimits = RateLimits {
        rpm: None,
        tpm: None,
    };

    /// True when neither limit is set.
    pub const fn is_none(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }

    /// The limit of `kind`.
    pub const fn get(&self, kind: RateKind) -> Option<u64> {
        match kind {
            RateKind::Requests => self.rpm,
            RateKind::Tokens => self.tpm,
        }
    }

    /// Checks that every set limit is between 1 and [`MAX_LIMIT`]; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [("rpm", self.rpm), ("tpm", self.tpm)] {
            if let Some(v) = v
                && !(1..=MAX_LIMIT).contains(&v)
            {
                return Err(format!("{name}: must be between 1 and {MAX_LIMIT}"));
            }
        }
        Ok(())
    }
}

/// What a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKind {
    Requests,
    Tokens,
}

impl RateKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            RateKind::Requests => "requests",
            RateKind::Tokens => "tokens",
        }
    }
}

/// The size of a slice the proxy asks for: about half a second of the average rate.
pub fn slice_size(limit: u64) -> u64 {
    (limit / 120).max(1)
}

/// One take in a `POST /internal/v1/ratelimits` batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateTake {
    /// `token:tok_…` or `project:prj_…`.
    pub scope: String,
    pub kind: RateKind,
    /// The scope's limit per 60 s window (the proxy knows it from the token or snapshot).
    pub limit: u64,
    /// Units asked for.
    pub want: u64,
    /// Grant nothing unless at least this much fits (default 1; at most `want`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min: u64,
    /// Record `want` unconditionally (usage that already happened, e.g. output tokens).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// The project the scope belongs to (keys are kept in the project's keyspace). Optional
    /// for `project:` scopes; required for `token:` scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl RateTake {
    /// The project whose keyspace holds this counter, when known.
    pub fn project_id(&self) -> Option<&str> {
        self.project
            .as_deref()
            .or_else(|| self.scope.strip_prefix("project:"))
    }

    /// The effective minimum (1 ≤ min ≤ want, or 0 for an empty force).
    pub fn effective_min(&self) -> u64 {
        self.min.max(1).min(self.want.max(1))
    }
}

/// `POST /internal/v1/ratelimits` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateTakeRequest {
    pub takes: Vec<RateTake>,
}

/// The answer to one take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateGrant {
    pub granted: u64,
    /// Units left in the window after this take.
    pub remaining: u64,
    /// When nothing was granted: ms until `min` units fit again (0 otherwise).
    pub retry_after_ms: u64,
    /// ms until the window is empty again (every counted unit has aged out).
    pub reset_ms: u64,
}

/// `POST /internal/v1/ratelimits` answer: one grant per take, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateTakeResponse {
    pub grants: Vec<RateGrant>,
}

/// A sliding window of [`BUCKETS`] one-second buckets (ring indexed by second).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// `(second, count)`; a slot whose second is outside the window counts as empty.
    buckets: [(u64, u64); BUCKETS as usize],
}

impl Default for Window {
    fn default() -> Self {
        Window {
            buckets: [(0, 0); BUCKETS as usize],
        }
    }
}

impl Window {
    pub fn new() -> Self {
        Self::default()
    }

    fn live(&self, now_s: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets
            .iter()
            .copied()
            .filter(move |&(s, c)| c > 0 && s <= now_s && s + BUCKETS > now_s)
    }

    /// Units counted in the window at `now_ms`.
    pub fn used(&self, now_ms: u64) -> u64 {
        let now_s = now_ms / 1000;
        self.live(now_s).map(|(_, c)| c).sum()
    }

    /// True when nothing is counted at `now_ms` (the counter can be dropped).
    pub fn is_idle(&self, now_ms: u64) -> bool {
        self.used(now_ms) == 0
    }

    /// Applies `take` at `now_ms` (see the module docs for the rule).
    pub fn take(&mut self, now_ms: u64, limit: u64, want: u64, min: u64, force: bool) -> RateGrant {
        let now_s = now_ms / 1000;
        let used = self.used(now_ms);
        let granted = if force {
            want
        } else {
            let need = min.max(1).min(want.max(1));
            let room = limit.saturating_sub(used);
            if room >= need { want.min(room) } else { 0 }
        };
        if granted > 0 {
            let slot = &mut self.buckets[(now_s % BUCKETS) as usize];
            if slot.0 != now_s {
                *slot = (now_s, 0);
            }
            slot.1 = slot.1.saturating_add(granted);
        }
        let used_after = used.saturating_add(granted);
        let retry_after_ms = if granted == 0 && !force {
            self.retry_after(now_ms, limit, used, min.max(1).min(want.max(1)))
        } else {
            0
        };
        RateGrant {
            granted,
            remaining: limit.saturating_sub(used_after),
            retry_after_ms,
            reset_ms: self.reset_ms(now_ms),
        }
    }

    /// ms until `need` units fit: the oldest buckets age out one by one.
    fn retry_after(&self, now_ms: u64, limit: u64, used: u64, need: u64) -> u64 {
        if need > limit {
            return MAX_RETRY_MS;
        }
        let now_s = now_ms / 1000;
        let mut live: Vec<(u64, u64)> = self.live(now_s).collect();
        live.sort_unstable();
        let mut left = used;
        for (s, c) in live {
            left = left.saturating_sub(c);
            if left.saturating_add(need) <= limit {
                return ((s + BUCKETS) * 1000).saturating_sub(now_ms).max(1);
            }
        }
        1
    }

    /// ms until the newest counted bucket ages out (0 when the window is empty).
    pub fn reset_ms(&self, now_ms: u64) -> u64 {
        let now_s = now_ms / 1000;
        self.live(now_s)
            .map(|(s, _)| ((s + BUCKETS) * 1000).saturating_sub(now_ms))
            .max()
            .unwrap_or(0)
    }
}

/// Many counters in memory, keyed by `(scope, kind)`: control's embedded store and the
/// proxy's static mode. Bounded: idle counters (nothing in the window) are dropped when the
/// map reaches its capacity, and a full map of live counters refuses new scopes' takes
/// (granted 0, retry after 1 s) rather than grow.
#[derive(Debug)]
pub struct WindowMap {
    map: std::collections::HashMap<(String, RateKind), Window>,
    capacity: usize,
}

impl WindowMap {
    pub fn new(capacity: usize) -> Self {
        WindowMap {
            map: std::collections::HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Applies every take in order (each on its own counter) at `now_ms`.
    pub fn take_all(&mut self, takes: &[RateTake], now_ms: u64) -> Vec<RateGrant> {
        takes.iter().map(|t| self.take(t, now_ms)).collect()
    }

    /// Applies one take at `now_ms`.
    pub fn take(&mut self, t: &RateTake, now_ms: u64) -> RateGrant {
        let key = (t.scope.clone(), t.kind);
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            self.map.retain(|_, w| !w.is_idle(now_ms));
            if self.map.len() >= self.capacity {
                return RateGrant {
                    granted: 0,
                    remaining: 0,
                    retry_after_ms: 1000,
                    reset_ms: 1000,
                };
            }
        }
        self.map
            .entry(key)
            .or_default()
            .take(now_ms, t.limit, t.want, t.min, t.force)
    }
}

/// Formats a duration in ms like OpenAI's `x-ratelimit-reset-*` headers: `1s`, `6m0s`,
/// `250ms`, `1h2m3s` (whole seconds rounded up when at least one second).
pub fn openai_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms.div_ceil(1000);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn admits_up_to_the_limit_then_denies_with_retry() {
        let mut w = Window::new();
        let t0 = 10_000_500;
        for i in 0..5 {
            let g = w.take(t0 + i * 100, 5, 1, 1, false);
            assert_eq!(g.granted, 1);
            assert_eq!(g.remaining, 4 - i);
        }
        let g = w.take(t0 + 600, 5, 1, 1, false);
        assert_eq!(g.granted, 0);
        // All five landed in the bucket of second 10000, which ages out at 10061 s.
        assert_eq!(g.retry_after_ms, 10_061_000 - (t0 + 600));
        assert!(g.reset_ms >= g.retry_after_ms);
        // Still denied one ms before, admitted right at the boundary.
        assert_eq!(w.take(10_060_999, 5, 1, 1, false).granted, 0);
        let g = w.take(10_061_000, 5, 5, 1, false);
        assert_eq!((g.granted, g.remaining), (5, 0));
    }

    #[test]
    fn partial_grants_respect_min_and_force_overdraws() {
        let mut w = Window::new();
        assert_eq!(w.take(0, 100, 70, 1, false).granted, 70);
        assert_eq!(w.take(0, 100, 50, 1, false).granted, 30);
        let mut w = Window::new();
        w.take(0, 100, 70, 1, false);
        let g = w.take(0, 100, 50, 40, false);
        assert_eq!((g.granted, g.retry_after_ms), (0, 61_000));
        let g = w.take(1500, 100, 500, 1, true);
        assert_eq!((g.granted, g.remaining), (500, 0));
        assert_eq!(w.used(1500), 570);
        // A need larger than the limit never fits.
        assert_eq!(
            Window::new().take(0, 10, 11, 11, false).retry_after_ms,
            MAX_RETRY_MS
        );
        assert!(w.is_idle(62_000 + 1000));
    }

    #[test]
    fn formats_openai_durations() {
        assert_eq!(openai_duration(250), "250ms");
        assert_eq!(openai_duration(1000), "1s");
        assert_eq!(openai_duration(1001), "2s");
        assert_eq!(openai_duration(360_000), "6m0s");
        assert_eq!(openai_duration(3_723_000), "1h2m3s");
    }

    #[test]
    fn limits_validate_and_serialize_sparsely() {
        assert!(
            RateLimits {
                rpm: Some(0),
                tpm: None
            }
            .validate()
            .is_err()
        );
        assert!(
            RateLimits {
                rpm: Some(1),
                tpm: Some(MAX_LIMIT)
            }
            .validate()
            .is_ok()
        );
        assert_eq!(serde_json::to_string(&RateLimits::NONE).unwrap(), "{}");
        let t: RateTake = serde_json::from_str(
            r#"{"scope":"token:tok_1","kind":"tokens","limit":10,"want":3,"project":"prj_1"}"#,
        )
        .unwrap();
        assert_eq!(t.project_id(), Some("prj_1"));
        assert_eq!(t.effective_min(), 1);
        assert_eq!(slice_size(60), 1);
        assert_eq!(slice_size(12_000), 100);
    }

    #[test]
    fn window_map_is_bounded_and_drops_idle_counters() {
        let take = |scope: &str| RateTake {
            scope: scope.into(),
            kind: RateKind::Requests,
            limit: 2,
            want: 1,
            min: 0,
            force: false,
            project: None,
        };
        let mut m = WindowMap::new(2);
        assert_eq!(m.take(&take("project:a"), 0).granted, 1);
        assert_eq!(m.take(&take("project:b"), 0).granted, 1);
        // Full of live counters: a third scope is refused, existing ones still work.
        assert_eq!(m.take(&take("project:c"), 1000).granted, 0);
        assert_eq!(m.take(&take("project:a"), 1000).granted, 1);
        assert_eq!(m.take(&take("project:a"), 1000).granted, 0);
        // A minute later the old counters are idle and make room.
        assert_eq!(m.take(&take("project:c"), 62_000).granted, 1);
        assert_eq!(m.len(), 1);
    }

    proptest! {
        /// For any arrival sequence (gaps, sizes, minimums), the units granted in any 61
        /// consecutive one-second buckets (so in any real 60 s interval) never exceed the
        /// limit, and a grant never exceeds `want`.
        #[test]
        fn never_more_than_limit_in_any_window(
            limit in 1u64..50,
            arrivals in proptest::collection::vec((0u64..3_000, 1u64..20, 0u64..5), 1..400),
        ) {
            let mut w = Window::new();
            let mut now = 1_000_000u64;
            let mut per_second: std::collections::BTreeMap<u64, u64> = Default::default();
            for (gap, want, min) in arrivals {
                now += gap;
                let g = w.take(now, limit, want, min, false);
                prop_assert!(g.granted <= want);
                if g.granted == 0 {
                    prop_assert!(g.retry_after_ms >= 1 && g.retry_after_ms <= MAX_RETRY_MS);
                } else {
                    prop_assert!(g.granted >= min.max(1).min(want));
                }
                *per_second.entry(now / 1000).or_default() += g.granted;
            }
            let first = *per_second.keys().next().unwrap_or(&0);
            let last = *per_second.keys().last().unwrap_or(&0);
            for start in first..=last {
                let sum: u64 = per_second.range(start..start + BUCKETS).map(|(_, c)| c).sum();
                prop_assert!(sum <= limit, "window at {start}: {sum} > {limit}");
            }
        }

        /// A denied take's `retry_after_ms` is exact: one ms earlier still denies, at that
        /// time the same take succeeds.
        #[test]
        fn retry_after_is_exact(
            limit in 1u64..30,
            arrivals in proptest::collection::vec((0u64..2_000, 1u64..5), 1..100),
        ) {
            let mut w = Window::new();
            let mut now = 5_000_000u64;
            for (gap, want) in arrivals {
                now += gap;
                let g = w.take(now, limit, want, 1, false);
                if g.granted == 0 {
                    let mut probe = w.clone();
                    if g.retry_after_ms > 1 {
                        prop_assert_eq!(probe.take(now + g.retry_after_ms - 1, limit, want, 1, false).granted, 0);
                    }
                    let mut probe2 = w.clone();
                    prop_assert!(probe2.take(now + g.retry_after_ms, limit, want, 1, false).granted >= 1);
                    let _ = &mut probe;
                }
            }
        }
    }
}
