//! Circuit breaker per provider deployment (`design.md` §8), consulted by the *upstream*
//! stage before each attempt and fed with every attempt's outcome.
//!
//! - **Closed**: traffic flows. Opens after `consecutive_failures` failures in a row, or when
//!   at least `min_requests` requests in the last `window` failed at `failure_ratio` or more.
//! - **Open**: requests skip this deployment (fail over, or 503 `upstream_unavailable` with
//!   `Retry-After`). After the cool-down (30 s, doubling on each re-open up to 5 min) the
//!   breaker moves to HalfOpen.
//! - **HalfOpen**: up to `half_open_probes` requests are admitted at a time; a success closes
//!   the breaker (and resets the cool-down), a failure opens it again.
//!
//! A 429 opens the breaker for its `Retry-After` only (rate limit, not a failure of the
//! deployment). Failures are connect errors, timeouts, 5xx and resets. Time is passed in
//! (`tokio::time::Instant`) so tests run on paused time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Breaker thresholds.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub consecutive_failures: u32,
    pub failure_ratio: f64,
    pub min_requests: usize,
    pub window: Duration,
    pub base_cooldown: Duration,
    pub max_cooldown: Duration,
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            base_cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
            half_open_probes: 1,
        }
    }
}

/// Breaker state, as exported in `iron_proxy_breaker_state` (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The name used in reports to control (`closed`, `open`, `half_open`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// What happened on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// 429: skip the deployment for this long.
    RateLimited(Duration),
    /// Never reached the provider because Iron refused it (SSRF guard): frees a half-open
    /// probe slot and changes nothing else.
    Ignored,
}

/// Permission to send one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Allowed as a half-open probe: its outcome decides the state.
    Probe,
    /// Refused; retry after this long.
    Rejected(Duration),
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive: u32,
    /// (time, failed) of recent requests, oldest first, within `window`.
    recent: VecDeque<(Instant, bool)>,
    open_until: Instant,
    cooldown: Duration,
    probes_in_flight: u32,
}

#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig, now: Instant) -> Self {
        Breaker {
            cfg,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive: 0,
                recent: VecDeque::new(),
                open_until: now,
                cooldown: cfg.base_cooldown,
                probes_in_flight: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Current state (Open turns into HalfOpen once the cool-down has passed).
    pub fn state(&self, now: Instant) -> BreakerState {
        let mut i = self.lock();
        Self::tick(&mut i, now);
        i.state
    }

    fn tick(i: &mut Inner, now: Instant) {
        if i.state == BreakerState::Open && now >= i.open_until {
            i.state = BreakerState::HalfOpen;
            i.probes_in_flight = 0;
        }
    }

    /// Asks to send a request now.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut i = self.lock();
        Self::tick(&mut i, now);
        match i.state {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open => Admission::Rejected(i.open_until.saturating_duration_since(now)),
            BreakerState::HalfOpen if i.probes_in_flight < self.cfg.half_open_probes => {
                i.probes_in_flight += 1;
                Admission::Probe
            }
            BreakerState::HalfOpen => Admission::Rejected(Duration::from_secs(1)),
        }
    }

    /// Records the outcome of an admitted request.
    pub fn record(&self, now: Instant, admission: Admission, outcome: Outcome) {
        let mut i = self.lock();
        Self::tick(&mut i, now);
        if admission == Admission::Probe {
            i.probes_in_flight = i.probes_in_flight.saturating_sub(1);
        }
        match outcome {
            Outcome::Ignored => {}
            Outcome::RateLimited(for_how_long) => {
                i.state = BreakerState::Open;
                i.open_until = now + for_how_long;
            }
            Outcome::Success => {
                i.consecutive = 0;
                self.push(&mut i, now, false);
                if i.state == BreakerState::HalfOpen {
                    i.state = BreakerState::Closed;
                    i.cooldown = self.cfg.base_cooldown;
                    i.recent.clear();
                }
            }
            Outcome::Failure => {
                i.consecutive += 1;
                self.push(&mut i, now, true);
                let trip = match i.state {
                    BreakerState::HalfOpen => true,
                    BreakerState::Open => false,
                    BreakerState::Closed => {
                        i.consecutive >= self.cfg.consecutive_failures || self.ratio_tripped(&i)
                    }
                };
                if trip {
                    let reopen = i.state == BreakerState::HalfOpen;
                    if reopen {
                        i.cooldown = (i.cooldown * 2).min(self.cfg.max_cooldown);
                    }
                    i.state = BreakerState::Open;
                    i.open_until = now + i.cooldown;
                }
            }
        }
    }

    fn push(&self, i: &mut Inner, now: Instant, failed: bool) {
        i.recent.push_back((now, failed));
        while let Some((t, _)) = i.recent.front() {
            if now.saturating_duration_since(*t) > self.cfg.window {
                i.recent.pop_front();
            } else {
                break;
            }
        }
    }

    fn ratio_tripped(&self, i: &Inner) -> bool {
        let n = i.recent.len();
        if n < self.cfg.min_requests {
            return false;
        }
        let failed = i.recent.iter().filter(|(_, f)| *f).count();
        failed as f64 / n as f64 >= self.cfg.failure_ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig::default()
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_half_opens_and_closes() {
        let b = Breaker::new(cfg(), Instant::now());
        for _ in 0..4 {
            let a = b.admit(Instant::now());
            assert_eq!(a, Admission::Allowed);
            b.record(Instant::now(), a, Outcome::Failure);
        }
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
        b.record(Instant::now(), Admission::Allowed, Outcome::Failure);
        assert_eq!(b.state(Instant::now()), BreakerState::Open);
        assert!(
            matches!(b.admit(Instant::now()), Admission::Rejected(d) if d == Duration::from_secs(30))
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.state(Instant::now()), BreakerState::HalfOpen);
        let probe = b.admit(Instant::now());
        assert_eq!(probe, Admission::Probe);
        assert!(
            matches!(b.admit(Instant::now()), Admission::Rejected(_)),
            "one probe at a time"
        );
        b.record(Instant::now(), probe, Outcome::Success);
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_with_doubled_cooldown_capped() {
        let b = Breaker::new(cfg(), Instant::now());
        for _ in 0..5 {
            b.record(Instant::now(), Admission::Allowed, Outcome::Failure);
        }
        let mut expected = Duration::from_secs(30);
        for _ in 0..6 {
            tokio::time::advance(expected).await;
            let p = b.admit(Instant::now());
            assert_eq!(p, Admission::Probe);
            b.record(Instant::now(), p, Outcome::Failure);
            expected = (expected * 2).min(Duration::from_secs(300));
            assert!(
                matches!(b.admit(Instant::now()), Admission::Rejected(d) if d == expected),
                "{expected:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_ratio_in_window() {
        let b = Breaker::new(cfg(), Instant::now());
        // Alternate success/failure: never 5 in a row, but 50% over 20 requests.
        for i in 0..19 {
            let o = if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            b.record(Instant::now(), Admission::Allowed, o);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
        b.record(Instant::now(), Admission::Allowed, Outcome::Failure);
        assert_eq!(b.state(Instant::now()), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn old_requests_leave_the_window() {
        let b = Breaker::new(cfg(), Instant::now());
        for i in 0..19 {
            let o = if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            b.record(Instant::now(), Admission::Allowed, o);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        b.record(Instant::now(), Admission::Allowed, Outcome::Failure);
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_opens_for_retry_after_only() {
        let b = Breaker::new(cfg(), Instant::now());
        b.record(
            Instant::now(),
            Admission::Allowed,
            Outcome::RateLimited(Duration::from_secs(2)),
        );
        assert!(
            matches!(b.admit(Instant::now()), Admission::Rejected(d) if d == Duration::from_secs(2))
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        let p = b.admit(Instant::now());
        assert_eq!(p, Admission::Probe);
        b.record(Instant::now(), p, Outcome::Success);
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
    }
}

/// One breaker per deployment id, kept across routing-table refreshes.
#[derive(Debug)]
pub struct Breakers {
    cfg: BreakerConfig,
    map: std::sync::RwLock<std::collections::HashMap<String, std::sync::Arc<Breaker>>>,
}

impl Breakers {
    pub fn new(cfg: BreakerConfig) -> Self {
        Breakers {
            cfg,
            map: Default::default(),
        }
    }

    pub fn get(&self, deployment_id: &str) -> std::sync::Arc<Breaker> {
        if let Some(b) = self
            .map
            .read()
            .ok()
            .and_then(|m| m.get(deployment_id).cloned())
        {
            return b;
        }
        let mut m = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(deployment_id.to_owned())
            .or_insert_with(|| std::sync::Arc::new(Breaker::new(self.cfg, Instant::now())))
            .clone()
    }

    /// `(deployment id, state)` of every breaker.
    pub fn states(&self, now: Instant) -> Vec<(String, BreakerState)> {
        self.map
            .read()
            .map(|m| m.iter().map(|(k, b)| (k.clone(), b.state(now))).collect())
            .unwrap_or_default()
    }
}
