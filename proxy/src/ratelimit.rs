//! Local rate-limit slices (RPM/TPM, `docs/decisions/0003-rate-limits.md`).
//!
//! Where it sits: the *ratelimit* stage (after auth/route/read, before budget) asks
//! [`RateLimiter::admit`] for one unit of each limited `requests` counter and the prompt's
//! tokens of each limited `tokens` counter (token scope and project scope); the settle stage
//! hands back the output tokens ([`RateLimiter::settle`]).
//!
//! Like budget leases, the hot path needs no network: each `(scope, kind)` keeps a small
//! local slice of units granted by the authority — control's `POST /internal/v1/ratelimits`
//! ([`HttpRateApi`]) or, in static mode, an in-process window map ([`LocalRateApi`]). An
//! empty slice is refilled with `max(limit / 120, need)` units in one batch call per request.
//! A refusal (`granted: 0`) is cached until its `retry_after_ms`, so rejected traffic makes
//! no calls at all. Unused units expire after [`SLICE_TTL`] (a slight under-admission, never
//! an over-admission). Output tokens are charged after the answer: from the slice when it
//! covers them, else the overdraw is sent to the authority as a forced charge.
//!
//! Control unreachable → fail open: the request is admitted, a warning is logged at most once
//! per [`WARN_EVERY`] and `iron_proxy_rate_limit_fail_open_total` counts it. Memory is
//! bounded: at most [`MAX_SCOPES`] counters; idle ones are dropped every minute.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use iron_core::ratelimit::{
    RateGrant, RateKind, RateTake, RateTakeRequest, RateTakeResponse, WindowMap, openai_duration,
    slice_size,
};
use iron_core::token::unix_now_ms;
use zeroize::Zeroizing;

/// Unused slice units are dropped after this long.
pub const SLICE_TTL: Duration = Duration::from_secs(1);
/// Most counters kept in memory.
pub const MAX_SCOPES: usize = 100_000;
/// Counters unused for this long are dropped.
pub const IDLE: Duration = Duration::from_secs(120);
/// At most one "control unreachable" warning per this interval.
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// Why the authority gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RateApiError {
    #[error("rate-limit service unreachable: {0}")]
    Unreachable(String),
    #[error("rate-limit service refused the batch: {0}")]
    Refused(String),
}

/// The authority for rate-limit slices.
#[async_trait]
pub trait RateApi: Send + Sync + std::fmt::Debug {
    async fn take(&self, req: &RateTakeRequest) -> Result<RateTakeResponse, RateApiError>;
}

/// Control's `POST /internal/v1/ratelimits`, with the proxy secret.
pub struct HttpRateApi {
    url: String,
    secret: Zeroizing<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for HttpRateApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRateApi")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl HttpRateApi {
    pub fn new(url: &str, secret: Zeroizing<String>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()?;
        Ok(HttpRateApi {
            url: format!("{}/internal/v1/ratelimits", url.trim_end_matches('/')),
            secret,
            http,
        })
    }
}

#[async_trait]
impl RateApi for HttpRateApi {
    async fn take(&self, req: &RateTakeRequest) -> Result<RateTakeResponse, RateApiError> {
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(self.secret.as_str())
            .json(req)
            .send()
            .await
            .map_err(|e| RateApiError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(RateApiError::Unreachable(format!(
                "control answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(RateApiError::Refused(format!("control answered {status}")));
        }
        let out: RateTakeResponse = resp
            .json()
            .await
            .map_err(|e| RateApiError::Unreachable(e.without_url().to_string()))?;
        if out.grants.len() != req.takes.len() {
            return Err(RateApiError::Refused("grant count mismatch".into()));
        }
        Ok(out)
    }
}

/// Static mode: the windows live in this process (same maths as control's embedded store).
#[derive(Debug)]
pub struct LocalRateApi {
    windows: Mutex<WindowMap>,
}

impl Default for LocalRateApi {
    fn default() -> Self {
        LocalRateApi {
            windows: Mutex::new(WindowMap::new(MAX_SCOPES)),
        }
    }
}

#[async_trait]
impl RateApi for LocalRateApi {
    async fn take(&self, req: &RateTakeRequest) -> Result<RateTakeResponse, RateApiError> {
        let mut w = self
            .windows
            .lock()
            .map_err(|_| RateApiError::Refused("rate-limit state poisoned".into()))?;
        Ok(RateTakeResponse {
            grants: w.take_all(&req.takes, unix_now_ms()),
        })
    }
}

/// Which scope a check is on (metric label `scope_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    Token,
    Project,
}

impl ScopeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Token => "token",
            ScopeKind::Project => "project",
        }
    }
}

/// One limited counter a request must pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub scope_kind: ScopeKind,
    /// `token:tok_…` or `project:prj_…`.
    pub scope: Arc<str>,
    pub project: Arc<str>,
    pub kind: RateKind,
    pub limit: u64,
    /// Units this request takes now (1 request, or the prompt's tokens).
    pub need: u64,
}

/// Response headers (OpenAI's `x-ratelimit-*`), name → value.
pub type RateHeaders = Vec<(&'static str, String)>;

/// The request may go on.
#[derive(Debug, Default)]
pub struct Admitted {
    pub headers: RateHeaders,
    /// The `tokens` checks, for charging output tokens at settle.
    pub token_checks: Vec<Check>,
    /// Admitted unchecked: the authority could not be reached (fail open).
    pub fail_open: bool,
}

/// The request is over a limit.
#[derive(Debug)]
pub struct Limited {
    pub check: Check,
    pub retry_after: Duration,
    pub headers: RateHeaders,
}

#[derive(Debug)]
struct ScopeState {
    slice: u64,
    slice_until: Instant,
    denied_until: Option<Instant>,
    /// The authority's `remaining` after the last grant.
    remaining: u64,
    reset_at: Instant,
    last_used: Instant,
}

impl ScopeState {
    fn new(now: Instant) -> Self {
        ScopeState {
            slice: 0,
            slice_until: now,
            denied_until: None,
            remaining: 0,
            reset_at: now,
            last_used: now,
        }
    }

    fn slice_at(&mut self, now: Instant) -> u64 {
        if self.slice_until <= now {
            self.slice = 0;
        }
        self.slice
    }
}

type Key = (Arc<str>, RateKind);

#[derive(Debug)]
struct Scopes {
    map: HashMap<Key, ScopeState>,
    last_prune: Instant,
}

/// The proxy's rate limiter. See the module docs.
#[derive(Debug)]
pub struct RateLimiter {
    api: Arc<dyn RateApi>,
    scopes: Mutex<Scopes>,
    last_warn: Mutex<Option<Instant>>,
    /// Calls made to the authority (tests, diagnostics).
    pub calls: AtomicU64,
    /// Requests admitted because the authority could not be reached.
    pub fail_open: AtomicU64,
}

fn key(c: &Check) -> Key {
    (c.scope.clone(), c.kind)
}

impl RateLimiter {
    pub fn new(api: Arc<dyn RateApi>) -> Self {
        RateLimiter {
            api,
            scopes: Mutex::new(Scopes {
                map: HashMap::new(),
                last_prune: Instant::now(),
            }),
            last_warn: Mutex::new(None),
            calls: AtomicU64::new(0),
            fail_open: AtomicU64::new(0),
        }
    }

    /// Counters held now.
    pub fn len(&self) -> usize {
        self.scopes.lock().map(|s| s.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes `need` of every check, locally when the slices cover it, else with one batch
    /// call to the authority. `Err` names the check that is over its limit.
    pub async fn admit(&self, checks: &[Check]) -> Result<Admitted, Limited> {
        for _attempt in 0..3 {
            let takes = match self.try_local(checks, Instant::now()) {
                Local::Done(r) => return r,
                Local::Refill(t) => t,
            };
            self.calls.fetch_add(1, Ordering::Relaxed);
            let req = RateTakeRequest {
                takes: takes.iter().map(|(_, t)| t.clone()).collect(),
            };
            match self.api.take(&req).await {
                Ok(resp) => self.apply(checks, &takes, &resp.grants, Instant::now()),
                Err(e) => {
                    self.fail_open.fetch_add(1, Ordering::Relaxed);
                    self.warn(&e);
                    return Ok(Admitted {
                        headers: Vec::new(),
                        token_checks: tokens_of(checks),
                        fail_open: true,
                    });
                }
            }
        }
        // Other requests kept taking the units just granted: let the agent retry shortly.
        let check = checks.first().cloned().ok_or_else(|| Limited {
            check: empty_check(),
            retry_after: Duration::from_secs(1),
            headers: Vec::new(),
        })?;
        Err(Limited {
            check,
            retry_after: Duration::from_secs(1),
            headers: Vec::new(),
        })
    }

    fn warn(&self, e: &RateApiError) {
        let now = Instant::now();
        if let Ok(mut last) = self.last_warn.lock()
            && last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            *last = Some(now);
            tracing::warn!(error = %e, "rate limits not enforced (fail open): cannot reach the rate-limit service");
        }
    }

    fn try_local(&self, checks: &[Check], now: Instant) -> Local {
        let Ok(mut scopes) = self.scopes.lock() else {
            return Local::Done(Ok(Admitted::default()));
        };
        if now.duration_since(scopes.last_prune) >= Duration::from_secs(60)
            || scopes.map.len() >= MAX_SCOPES
        {
            scopes.last_prune = now;
            scopes
                .map
                .retain(|_, s| now.duration_since(s.last_used) < IDLE);
            if scopes.map.len() >= MAX_SCOPES {
                scopes.map.clear();
            }
        }
        let map = &mut scopes.map;
        let mut refill = Vec::new();
        for (i, c) in checks.iter().enumerate() {
            let st = map.entry(key(c)).or_insert_with(|| ScopeState::new(now));
            st.last_used = now;
            let have = st.slice_at(now);
            if have >= c.need {
                // Units already granted are used even while the scope is refused.
                continue;
            }
            if let Some(until) = st.denied_until {
                if until > now {
                    let retry_after = until - now;
                    let headers = headers(map, checks, now);
                    return Local::Done(Err(Limited {
                        check: c.clone(),
                        retry_after,
                        headers,
                    }));
                }
                st.denied_until = None;
            }
            {
                let short = c.need - have;
                refill.push((
                    i,
                    RateTake {
                        scope: c.scope.to_string(),
                        kind: c.kind,
                        limit: c.limit,
                        want: slice_size(c.limit).max(short),
                        min: short,
                        force: false,
                        project: Some(c.project.to_string()),
                    },
                ));
            }
        }
        if !refill.is_empty() {
            return Local::Refill(refill);
        }
        for c in checks {
            if let Some(st) = map.get_mut(&key(c)) {
                st.slice -= c.need;
            }
        }
        Local::Done(Ok(Admitted {
            headers: headers(map, checks, now),
            token_checks: tokens_of(checks),
            fail_open: false,
        }))
    }

    fn apply(
        &self,
        checks: &[Check],
        takes: &[(usize, RateTake)],
        grants: &[RateGrant],
        now: Instant,
    ) {
        let Ok(mut scopes) = self.scopes.lock() else {
            return;
        };
        for ((i, _), g) in takes.iter().zip(grants) {
            let Some(c) = checks.get(*i) else { continue };
            let st = scopes
                .map
                .entry(key(c))
                .or_insert_with(|| ScopeState::new(now));
            let have = st.slice_at(now);
            st.slice = have.saturating_add(g.granted);
            st.slice_until = now + SLICE_TTL;
            st.remaining = g.remaining;
            st.reset_at = now + Duration::from_millis(g.reset_ms);
            if g.granted == 0 {
                st.denied_until = Some(now + Duration::from_millis(g.retry_after_ms.max(1)));
            }
        }
    }

    /// Charges `output_tokens` to the `tokens` checks of an admitted request: from the local
    /// slice, and any overdraw as a forced charge to the authority (in the background).
    pub fn settle(self: &Arc<Self>, token_checks: &[Check], output_tokens: u64) {
        if output_tokens == 0 || token_checks.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut debts = Vec::new();
        if let Ok(mut scopes) = self.scopes.lock() {
            for c in token_checks {
                let st = scopes
                    .map
                    .entry(key(c))
                    .or_insert_with(|| ScopeState::new(now));
                let have = st.slice_at(now);
                if have >= output_tokens {
                    st.slice = have - output_tokens;
                } else {
                    st.slice = 0;
                    st.remaining = st.remaining.saturating_sub(output_tokens - have);
                    debts.push(RateTake {
                        scope: c.scope.to_string(),
                        kind: c.kind,
                        limit: c.limit,
                        want: output_tokens - have,
                        min: 0,
                        force: true,
                        project: Some(c.project.to_string()),
                    });
                }
            }
        }
        if debts.is_empty() {
            return;
        }
        let me = self.clone();
        let req = RateTakeRequest { takes: debts };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                me.calls.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = me.api.take(&req).await {
                    me.warn(&e);
                }
            });
        }
    }
}

enum Local {
    Done(Result<Admitted, Limited>),
    Refill(Vec<(usize, RateTake)>),
}

fn empty_check() -> Check {
    Check {
        scope_kind: ScopeKind::Project,
        scope: Arc::from(""),
        project: Arc::from(""),
        kind: RateKind::Requests,
        limit: 0,
        need: 0,
    }
}

fn tokens_of(checks: &[Check]) -> Vec<Check> {
    checks
        .iter()
        .filter(|c| c.kind == RateKind::Tokens)
        .cloned()
        .collect()
}

/// OpenAI-style headers for the strictest counter of each kind (the one with the fewest
/// units left).
fn headers(map: &HashMap<Key, ScopeState>, checks: &[Check], now: Instant) -> RateHeaders {
    let mut out = Vec::new();
    for (kind, names) in [
        (
            RateKind::Requests,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        ),
        (
            RateKind::Tokens,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ),
    ] {
        let best = checks
            .iter()
            .filter(|c| c.kind == kind)
            .filter_map(|c| {
                let st = map.get(&key(c))?;
                let slice = if st.slice_until > now { st.slice } else { 0 };
                let left = st.remaining.saturating_add(slice).min(c.limit);
                let reset = st.reset_at.saturating_duration_since(now);
                Some((left, c.limit, reset))
            })
            .min_by_key(|&(left, limit, _)| (left, limit));
        if let Some((left, limit, reset)) = best {
            out.push((names[0], limit.to_string()));
            out.push((names[1], left.to_string()));
            out.push((
                names[2],
                openai_duration(u64::try_from(reset.as_millis()).unwrap_or(u64::MAX)),
            ));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// An authority that counts calls and answers from a window map (or fails).
    #[derive(Debug, Default)]
    struct Fake {
        inner: LocalRateApi,
        calls: AtomicU64,
        down: std::sync::atomic::AtomicBool,
        taken: Mutex<Vec<RateTake>>,
    }

    #[async_trait]
    impl RateApi for Fake {
        async fn take(&self, req: &RateTakeRequest) -> Result<RateTakeResponse, RateApiError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.taken.lock().unwrap().extend(req.takes.iter().cloned());
            if self.down.load(Ordering::SeqCst) {
                return Err(RateApiError::Unreachable("down".into()));
            }
            self.inner.take(req).await
        }
    }

    fn check(scope: &str, kind: RateKind, limit: u64, need: u64) -> Check {
        Check {
            scope_kind: ScopeKind::Token,
            scope: Arc::from(scope),
            project: Arc::from("prj_1"),
            kind,
            limit,
            need,
        }
    }

    #[tokio::test]
    async fn denial_is_cached_and_makes_no_calls() {
        let fake = Arc::new(Fake::default());
        let rl = RateLimiter::new(fake.clone());
        let c = [check("token:tok_1", RateKind::Requests, 3, 1)];
        for _ in 0..3 {
            rl.admit(&c).await.unwrap();
        }
        let calls = fake.calls.load(Ordering::SeqCst);
        assert_eq!(calls, 3, "rpm 3 → slices of 1");
        let denied = rl.admit(&c).await.unwrap_err();
        assert!(denied.retry_after > Duration::from_secs(50));
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
        // While denied: no more calls.
        for _ in 0..100 {
            assert!(rl.admit(&c).await.is_err());
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
        let h: HashMap<_, _> = denied.headers.into_iter().collect();
        assert_eq!(h["x-ratelimit-limit-requests"], "3");
        assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    }

    #[tokio::test]
    async fn slices_serve_locally_and_expire() {
        let fake = Arc::new(Fake::default());
        let rl = RateLimiter::new(fake.clone());
        // tpm 12 000 → slices of 100 tokens.
        let c = [check("token:tok_1", RateKind::Tokens, 12_000, 10)];
        for _ in 0..10 {
            rl.admit(&c).await.unwrap();
        }
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            1,
            "one slice of 100 served 10 × 10"
        );
        rl.admit(&c).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        // Unused units expire after SLICE_TTL: the next request refills.
        std::thread::sleep(SLICE_TTL + Duration::from_millis(50));
        rl.admit(&c).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
        // A prompt larger than a slice asks for at least its size.
        let big = [check("token:tok_1", RateKind::Tokens, 12_000, 500)];
        rl.admit(&big).await.unwrap();
        let last = fake.taken.lock().unwrap().last().cloned().unwrap();
        assert_eq!((last.want, last.min), (410, 410));
    }

    #[tokio::test]
    async fn stricter_scope_wins_and_other_slices_are_kept() {
        let fake = Arc::new(Fake::default());
        let rl = RateLimiter::new(fake.clone());
        let mut prj = check("project:prj_1", RateKind::Requests, 2, 1);
        prj.scope_kind = ScopeKind::Project;
        let both = [check("token:tok_1", RateKind::Requests, 100, 1), prj];
        rl.admit(&both).await.unwrap();
        rl.admit(&both).await.unwrap();
        let denied = rl.admit(&both).await.unwrap_err();
        assert_eq!(denied.check.scope_kind, ScopeKind::Project);
    }

    #[tokio::test]
    async fn unreachable_authority_fails_open() {
        let fake = Arc::new(Fake::default());
        fake.down.store(true, Ordering::SeqCst);
        let rl = RateLimiter::new(fake.clone());
        let c = [check("token:tok_1", RateKind::Requests, 1, 1)];
        for _ in 0..5 {
            rl.admit(&c).await.unwrap();
        }
        assert_eq!(rl.fail_open.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn output_overdraw_is_charged_by_force() {
        let fake = Arc::new(Fake::default());
        let rl = Arc::new(RateLimiter::new(fake.clone()));
        let c = [check("token:tok_1", RateKind::Tokens, 1_200, 5)];
        let a = rl.admit(&c).await.unwrap();
        // Slice of 10, 5 used, 5 left: 50 output tokens overdraw by 45.
        rl.settle(&a.token_checks, 50);
        for _ in 0..50 {
            if fake.calls.load(Ordering::SeqCst) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let last = fake.taken.lock().unwrap().last().cloned().unwrap();
        assert!(last.force);
        assert_eq!(last.want, 45);
        let used = fake.inner.windows.lock().unwrap().take(
            &RateTake {
                want: 0,
                force: true,
                ..last
            },
            unix_now_ms(),
        );
        assert_eq!(used.remaining, 1_200 - 10 - 45);
    }

    #[test]
    fn idle_scopes_are_dropped() {
        let rl = RateLimiter::new(Arc::new(Fake::default()));
        let long_ago = Instant::now()
            .checked_sub(IDLE + Duration::from_secs(61))
            .unwrap();
        {
            let mut s = rl.scopes.lock().unwrap();
            s.last_prune = long_ago;
            for i in 0..10 {
                s.map.insert(
                    (Arc::from(format!("token:tok_{i}")), RateKind::Requests),
                    ScopeState::new(long_ago),
                );
            }
        }
        let _ = rl.try_local(
            &[check("token:tok_x", RateKind::Requests, 5, 1)],
            Instant::now(),
        );
        assert_eq!(rl.len(), 1);
    }
}
