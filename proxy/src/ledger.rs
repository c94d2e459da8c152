//! The local lease ledger (`design.md` §6): budgets checked in nanoseconds, exact across
//! replicas.
//!
//! Each token's spend goes through a [`Slot`] holding a lease borrowed from control (or from
//! the in-process [`LocalLeases`] in static mode). The hot path — [`Ledger::reserve`] for a
//! request's estimate, [`Reservation::charge`] per streamed chunk — is a compare-and-swap on
//! one atomic; only when the local slice runs low does a request await control (one request
//! per token at a time; the others wait for its answer). A background extension starts at
//! the low-water mark so steady traffic never waits. [`Reservation::settle`] replaces the
//! estimate with the provider's reported cost, returns the unused part, and queues the usage
//! event for the [`crate::reporter`].
//!
//! Control unreachable (`design.md` §8): the proxy serves inside the slices it holds; when a
//! slice cannot cover a request or a chunk it refuses (fail closed, the default) or, with
//! [`LedgerConfig::fail_open_cap`], credits the slot from a per-project allowance of unleased
//! spend (per proxy, per outage: it resets once control answers a lease call again). Spend
//! admitted that way is ordinary spend: its usage events queue like any other and reach
//! control on the slot's lease (as spend beyond the grant) once control is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use std::time::Duration;

use async_trait::async_trait;
use iron_core::Money;
use iron_core::lease::{
    Denial, ExtendRequest, LeaseGrant, LeaseReport, LeaseRequest, ReportAck, UsageEvent,
};
use iron_core::token::unix_now_ms;

/// Queued usage events per slot that trigger a report before the 1 s tick.
pub const REPORT_BATCH: usize = 100;

/// Errors talking to the lease authority.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    #[error("control unreachable: {0}")]
    Unreachable(String),
    #[error("control refused: {0}")]
    Refused(String),
    #[error("unknown lease")]
    UnknownLease,
}

/// Who hands out leases: control over HTTP, or the in-process table of static mode.
#[async_trait]
pub trait LeaseApi: Send + Sync {
    async fn acquire(&self, req: LeaseRequest) -> Result<LeaseGrant, LeaseError>;
    async fn extend(&self, lease_id: &str, req: ExtendRequest) -> Result<LeaseGrant, LeaseError>;
    async fn report(&self, lease_id: &str, report: LeaseReport) -> Result<ReportAck, LeaseError>;
    async fn release(&self, lease_id: &str, report: LeaseReport) -> Result<(), LeaseError>;
}

/// Receives fail-open credit as it is granted: project id and micro-dollars.
pub type FailOpenObserver = Box<dyn Fn(&str, u64) + Send + Sync>;

/// Ledger tuning.
#[derive(Debug, Clone, Copy)]
pub struct LedgerConfig {
    /// Size asked for per lease / extension.
    pub lease_size: Money,
    /// Extend in the background when the local slice falls below this fraction of the
    /// last grant.
    pub low_water: f64,
    /// How long a denial is trusted before asking control again.
    pub denial_ttl: Duration,
    /// Deadline for a synchronous call to control on the request path.
    pub control_timeout: Duration,
    /// `fail_mode = "open"`: the most unleased spend per project admitted while control is
    /// unreachable (per outage); `None` = fail closed.
    pub fail_open_cap: Option<Money>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            lease_size: Money::from_micros(500_000),
            low_water: 0.25,
            denial_ttl: Duration::from_millis(500),
            control_timeout: Duration::from_secs(2),
            fail_open_cap: None,
        }
    }
}

/// Why spend was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BudgetExceeded,
    TokenRevoked,
    /// Control is unreachable and the local lease cannot cover it (fail-closed).
    Unavailable,
}

struct LeaseState {
    id: String,
    granted_total: u64,
    last_grant: u64,
    seq: u64,
    /// Spend reported so far (cumulative).
    reported: u64,
}

/// One token's local budget slice.
pub struct Slot {
    pub token_id: String,
    pub project_id: String,
    available: AtomicU64,
    /// Settled spend on the current lease (cumulative).
    spent: AtomicU64,
    denied_at: Mutex<Option<(tokio::time::Instant, Refusal)>>,
    extending: AtomicBool,
    lease: tokio::sync::Mutex<Option<LeaseState>>,
    events: Mutex<Vec<UsageEvent>>,
    /// Reservations alive on this slot.
    active: std::sync::atomic::AtomicUsize,
    /// When the slot was last reserved from (unix ms).
    last_used_ms: AtomicU64,
    /// The ledger, for a reservation's slow paths (refill, batch signal). Weak and reached
    /// through the slot so the hot path touches no ledger-wide reference count.
    ledger: std::sync::Weak<Ledger>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("token_id", &self.token_id)
            .field("available", &self.available.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Slot {
    /// Takes `amount` from the local slice if it is there (lock-free).
    fn take(&self, amount: u64) -> bool {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                a.checked_sub(amount)
            })
            .is_ok()
    }

    fn give_back(&self, amount: u64) {
        self.available.fetch_add(amount, Ordering::AcqRel);
    }

    pub fn available(&self) -> Money {
        Money(self.available.load(Ordering::Acquire))
    }

    pub fn spent(&self) -> Money {
        Money(self.spent.load(Ordering::Acquire))
    }

    fn recent_denial(&self, ttl: Duration) -> Option<Refusal> {
        let d = self.denied_at.lock().ok()?;
        d.filter(|(at, _)| at.elapsed() < ttl).map(|(_, r)| r)
    }

    fn deny(&self, r: Refusal) {
        if let Ok(mut d) = self.denied_at.lock() {
            *d = Some((tokio::time::Instant::now(), r));
        }
    }
}

/// All slots of this proxy.
pub struct Ledger {
    api: Arc<dyn LeaseApi>,
    proxy_id: String,
    cfg: LedgerConfig,
    /// Token id → slot. Copy-on-write: the hot path only loads (no shared write, so
    /// requests of different tokens on different cores do not contend); a token's first
    /// request inserts under `slots_write`.
    slots: ArcSwap<HashMap<String, Arc<Slot>>>,
    slots_write: Mutex<()>,
    /// Signalled when a slot has [`REPORT_BATCH`] events queued.
    batch: tokio::sync::Notify,
    /// Fail-open allowance drawn per project during the current outage (µ$).
    fail_open_used: Mutex<HashMap<String, u64>>,
    /// Counts fail-open credit: `(project id, µ$)` → `iron_proxy_fail_open_spend_microdollars_total`.
    fail_open_metric: OnceLock<FailOpenObserver>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("proxy_id", &self.proxy_id)
            .finish_non_exhaustive()
    }
}

/// Money set aside for one request; charged per chunk, settled at the end.
#[derive(Debug)]
pub struct Reservation {
    slot: Arc<Slot>,
    /// Taken from the slot and not yet used.
    held: u64,
    /// Charged so far (estimate-independent: what the metered chunks cost).
    charged: u64,
    settled: bool,
    /// For the usage event of a request that ends without settling.
    provider: String,
    model: String,
}

impl Ledger {
    pub fn new(api: Arc<dyn LeaseApi>, proxy_id: String, cfg: LedgerConfig) -> Arc<Self> {
        Arc::new(Ledger {
            api,
            proxy_id,
            cfg,
            slots: ArcSwap::default(),
            slots_write: Mutex::new(()),
            batch: tokio::sync::Notify::new(),
            fail_open_used: Mutex::new(HashMap::new()),
            fail_open_metric: OnceLock::new(),
        })
    }

    /// Reports fail-open credit to `observer` (project id, µ$); the proxy maps the project to
    /// its capped metrics label there.
    pub fn observe_fail_open(&self, observer: FailOpenObserver) {
        let _ = self.fail_open_metric.set(observer);
    }

    /// Fail-open allowance drawn by `project` during the current outage.
    pub fn fail_open_used(&self, project_id: &str) -> Money {
        Money(
            self.fail_open_used
                .lock()
                .ok()
                .and_then(|m| m.get(project_id).copied())
                .unwrap_or(0),
        )
    }

    /// Completes when some slot has [`REPORT_BATCH`] events queued.
    pub async fn batch_ready(&self) {
        self.batch.notified().await;
    }

    /// Drops a lease that control no longer knows (its money is gone with it).
    pub async fn forget_lease(&self, slot: &Slot) {
        let mut lease = slot.lease.lock().await;
        *lease = None;
        slot.available.store(0, Ordering::Release);
        slot.spent.store(0, Ordering::Release);
    }

    /// The final report of an idle slot's lease (no reservation alive, unused for `idle`),
    /// taking the lease: the caller returns it to control.
    pub async fn release_if_idle(
        &self,
        slot: &Slot,
        idle: std::time::Duration,
    ) -> Option<(String, LeaseReport)> {
        let now = unix_now_ms();
        let last = slot.last_used_ms.load(Ordering::Acquire);
        if slot.active.load(Ordering::Acquire) > 0
            || now.saturating_sub(last) < idle.as_millis() as u64
        {
            return None;
        }
        self.final_report(slot).await
    }

    pub fn slot(self: &Arc<Self>, token_id: &str, project_id: &str) -> Arc<Slot> {
        if let Some(s) = self.slots.load().get(token_id) {
            return s.clone();
        }
        let _writer = self
            .slots_write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut m = HashMap::clone(&self.slots.load());
        let slot = m
            .entry(token_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    token_id: token_id.to_owned(),
                    project_id: project_id.to_owned(),
                    available: AtomicU64::new(0),
                    spent: AtomicU64::new(0),
                    denied_at: Mutex::new(None),
                    extending: AtomicBool::new(false),
                    lease: tokio::sync::Mutex::new(None),
                    events: Mutex::new(Vec::new()),
                    active: std::sync::atomic::AtomicUsize::new(0),
                    last_used_ms: AtomicU64::new(unix_now_ms()),
                    ledger: Arc::downgrade(self),
                })
            })
            .clone();
        self.slots.store(Arc::new(m));
        slot
    }

    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.slots.load().values().cloned().collect()
    }

    /// The hot path of [`Ledger::reserve`]: takes `estimate` from the token's local slice
    /// with one compare-and-swap, or `None` when the slice cannot cover it (no network).
    pub fn try_reserve(
        self: &Arc<Self>,
        token_id: &str,
        project_id: &str,
        estimate: Money,
    ) -> Option<Reservation> {
        let slot = self.slot(token_id, project_id);
        let amount = estimate.micros();
        if !slot.take(amount) {
            return None;
        }
        slot.active.fetch_add(1, Ordering::AcqRel);
        slot.last_used_ms.store(unix_now_ms(), Ordering::Release);
        Some(Reservation {
            slot,
            held: amount,
            charged: 0,
            provider: String::new(),
            model: String::new(),
            settled: false,
        })
    }

    /// Reserves `estimate` for a request of `token_id`.
    pub async fn reserve(
        self: &Arc<Self>,
        token_id: &str,
        project_id: &str,
        estimate: Money,
    ) -> Result<Reservation, Refusal> {
        let reservation = match self.try_reserve(token_id, project_id, estimate) {
            Some(r) => r,
            None => {
                let slot = self.slot(token_id, project_id);
                let fell_open = self.cover(&slot, estimate.micros()).await?;
                self.try_reserve(token_id, project_id, estimate)
                    .ok_or(if fell_open {
                        Refusal::Unavailable
                    } else {
                        Refusal::BudgetExceeded
                    })?
            }
        };
        self.maybe_extend_in_background(&reservation.slot).await;
        Ok(reservation)
    }

    /// Makes the slot hold at least `need`: from control ([`Ledger::refill`]) or, when control
    /// is unreachable and fail-open is configured, from the project's fail-open allowance.
    /// `Ok(true)` when the allowance paid.
    async fn cover(&self, slot: &Arc<Slot>, need: u64) -> Result<bool, Refusal> {
        match self.refill(slot, need).await {
            Ok(()) => Ok(false),
            Err(Refusal::Unavailable) if self.draw_fail_open(slot, need) => Ok(true),
            Err(r) => Err(r),
        }
    }

    /// Credits the slot with what it lacks for `need` from the project's fail-open allowance,
    /// if the allowance has that much left.
    fn draw_fail_open(&self, slot: &Slot, need: u64) -> bool {
        let Some(cap) = self.cfg.fail_open_cap else {
            return false;
        };
        let Ok(mut used) = self.fail_open_used.lock() else {
            return false;
        };
        let short = need.saturating_sub(slot.available.load(Ordering::Acquire));
        if short == 0 {
            return true;
        }
        let u = used.entry(slot.project_id.clone()).or_insert(0);
        if u.saturating_add(short) > cap.micros() {
            return false;
        }
        if *u == 0 {
            tracing::warn!(
                project = %slot.project_id,
                cap = %cap,
                "control unreachable and the lease is used up: admitting unleased spend (fail_mode = open)"
            );
        }
        *u += short;
        drop(used);
        slot.give_back(short);
        if let Some(observe) = self.fail_open_metric.get() {
            observe(&slot.project_id, short);
        }
        true
    }

    /// Control answered: a later outage starts with the whole fail-open allowance again.
    fn control_answered(&self, project_id: &str) {
        if self.cfg.fail_open_cap.is_some()
            && let Ok(mut used) = self.fail_open_used.lock()
        {
            used.remove(project_id);
        }
    }

    /// Gets at least `need` more into the slot from control (awaits; one caller at a time).
    async fn refill(&self, slot: &Arc<Slot>, need: u64) -> Result<(), Refusal> {
        if let Some(r) = slot.recent_denial(self.cfg.denial_ttl) {
            return Err(r);
        }
        let mut lease = slot.lease.lock().await;
        // Someone else may have refilled while we waited.
        if slot.available.load(Ordering::Acquire) >= need {
            return Ok(());
        }
        if let Some(r) = slot.recent_denial(self.cfg.denial_ttl) {
            return Err(r);
        }
        let requested = Money(need.max(self.cfg.lease_size.micros()));
        let call = async {
            match lease.as_ref() {
                Some(l) => self.api.extend(&l.id, ExtendRequest { requested }).await,
                None => {
                    self.api
                        .acquire(LeaseRequest {
                            proxy_id: self.proxy_id.clone(),
                            token_id: slot.token_id.clone(),
                            requested,
                        })
                        .await
                }
            }
        };
        let grant = match tokio::time::timeout(self.cfg.control_timeout, call).await {
            Ok(Ok(g)) => g,
            Ok(Err(LeaseError::UnknownLease)) => {
                // Control forgot the lease (past its retention): start a new one next time.
                // What was reported on it is control's; the rest of the slot's spend (and its
                // queued events) goes on the next lease.
                if let Some(l) = lease.take() {
                    let _ = slot
                        .spent
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                            Some(s.saturating_sub(l.reported))
                        });
                }
                return Err(Refusal::Unavailable);
            }
            Ok(Err(_)) | Err(_) => {
                // Trusted for `denial_ttl` like a denial: during an outage, requests and
                // chunks do not each wait for control to fail again.
                slot.deny(Refusal::Unavailable);
                return Err(Refusal::Unavailable);
            }
        };
        self.control_answered(&slot.project_id);
        self.apply_grant(slot, &mut lease, grant)
    }

    fn apply_grant(
        &self,
        slot: &Slot,
        lease: &mut Option<LeaseState>,
        grant: LeaseGrant,
    ) -> Result<(), Refusal> {
        if grant.denied.is_none()
            && let Ok(mut d) = slot.denied_at.lock()
        {
            // Control granted: an earlier denial or outage no longer holds.
            *d = None;
        }
        if let Some(denial) = grant.denied {
            let r = match denial {
                Denial::TokenRevoked => Refusal::TokenRevoked,
                Denial::BudgetExceeded | Denial::UnknownToken => Refusal::BudgetExceeded,
            };
            slot.deny(r);
            if grant.granted.micros() == 0 {
                return Err(r);
            }
        }
        let g = grant.granted.micros();
        match lease {
            Some(l) if l.id == grant.lease_id => {
                l.granted_total += g;
                l.last_grant = g;
            }
            _ => {
                // A slot without a lease may hold unleased spend (fail-open, or requests that
                // outlived their lease): it goes on this lease, beyond the grant, with its
                // queued events. Replacing a lease control answered for starts from zero.
                if lease.is_some() {
                    slot.spent.store(0, Ordering::Release);
                }
                *lease = Some(LeaseState {
                    id: grant.lease_id,
                    granted_total: g,
                    last_grant: g,
                    seq: 0,
                    reported: 0,
                });
            }
        }
        slot.give_back(g);
        if g == 0 {
            return Err(Refusal::BudgetExceeded);
        }
        Ok(())
    }

    /// Starts a background extension when the slot is below its low-water mark.
    async fn maybe_extend_in_background(self: &Arc<Self>, slot: &Arc<Slot>) {
        let available = slot.available.load(Ordering::Acquire);
        let mark = (self.cfg.lease_size.micros() as f64 * self.cfg.low_water) as u64;
        if available >= mark || slot.recent_denial(self.cfg.denial_ttl).is_some() {
            return;
        }
        if slot.extending.swap(true, Ordering::AcqRel) {
            return;
        }
        let (ledger, slot) = (self.clone(), slot.clone());
        tokio::spawn(async move {
            let _ = ledger.refill(&slot, mark.max(1) + available).await;
            slot.extending.store(false, Ordering::Release);
        });
    }

    /// Builds the report for `slot` (cumulative spend + queued events), if anything is new.
    pub async fn take_report(&self, slot: &Slot) -> Option<(String, LeaseReport)> {
        let mut lease = slot.lease.lock().await;
        let l = lease.as_mut()?;
        let events = slot
            .events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default();
        let spent = slot.spent.load(Ordering::Acquire);
        if events.is_empty() && spent == l.reported {
            return None;
        }
        l.seq += 1;
        l.reported = spent;
        Some((
            l.id.clone(),
            LeaseReport {
                seq: l.seq,
                spent: Money(spent),
                events,
            },
        ))
    }

    /// Applies control's answer to a report.
    pub fn apply_ack(&self, slot: &Slot, ack: &ReportAck) {
        if ack.revoked {
            slot.deny(Refusal::TokenRevoked);
        }
    }

    /// Ends every lease (shutdown): final report, unspent part returned.
    pub async fn release_all(&self) -> Vec<(String, LeaseReport)> {
        let mut unsent = Vec::new();
        for slot in self.slots() {
            let Some((id, report)) = self.final_report(&slot).await else {
                continue;
            };
            if self.api.release(&id, report.clone()).await.is_err() {
                unsent.push((id, report));
            }
        }
        unsent
    }

    async fn final_report(&self, slot: &Slot) -> Option<(String, LeaseReport)> {
        let mut lease = slot.lease.lock().await;
        let l = lease.take()?;
        let events = slot
            .events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default();
        slot.available.store(0, Ordering::Release);
        // Spend settled after this (a request that outlived the lease) is unleased spend,
        // carried into the slot's next lease.
        let spent = slot.spent.swap(0, Ordering::AcqRel);
        Some((
            l.id,
            LeaseReport {
                seq: l.seq + 1,
                spent: Money(spent),
                events,
            },
        ))
    }

    pub fn api(&self) -> &Arc<dyn LeaseApi> {
        &self.api
    }
}

impl Reservation {
    /// Charges `cost` (one streamed chunk). False when the budget cannot pay for it: the
    /// caller cuts the stream off.
    pub async fn charge(&mut self, cost: Money) -> bool {
        if self.try_charge(cost) {
            return true;
        }
        let missing = cost.micros() - self.held;
        // Ask control once; a denial means the money is gone (fail-open may still pay while
        // control is unreachable).
        let Some(ledger) = self.slot.ledger.upgrade() else {
            return false;
        };
        if ledger.cover(&self.slot, missing).await.is_err() {
            return false;
        }
        self.try_charge(cost)
    }

    /// The hot path of [`Reservation::charge`]: pays from the reservation, then from the
    /// local slice (one compare-and-swap); false when neither covers it (no network).
    pub fn try_charge(&mut self, cost: Money) -> bool {
        let c = cost.micros();
        if self.held >= c {
            self.held -= c;
            self.charged += c;
            return true;
        }
        if !self.slot.take(c - self.held) {
            return false;
        }
        self.held = 0;
        self.charged += c;
        true
    }

    /// Charged so far.
    pub fn charged(&self) -> Money {
        Money(self.charged)
    }

    /// Settles at the provider's reported `cost`: returns the unused part, records the
    /// spend and queues `event`.
    pub fn settle(mut self, cost: Money, event: Option<UsageEvent>) {
        self.finish(cost.micros(), event);
    }

    /// Names the provider and model for the usage event of an unsettled end.
    pub fn describe(&mut self, provider: &str, model: &str) {
        provider.clone_into(&mut self.provider);
        model.clone_into(&mut self.model);
    }

    fn finish(&mut self, cost: u64, event: Option<UsageEvent>) {
        if self.settled {
            return;
        }
        self.settled = true;
        self.slot.active.fetch_sub(1, Ordering::AcqRel);
        // Everything taken from the slot for this request: held + charged.
        let taken = self.held + self.charged;
        if cost <= taken {
            self.slot.give_back(taken - cost);
        } else {
            // The provider reported more than was metered: take the difference if it is
            // there; any shortfall is still recorded as spend (never lost, never free).
            let extra = cost - taken;
            let _ = self
                .slot
                .available
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                    Some(a.saturating_sub(extra))
                });
        }
        self.slot.spent.fetch_add(cost, Ordering::AcqRel);
        if let Some(e) = event
            && let Ok(mut q) = self.slot.events.lock()
        {
            q.push(e);
            if q.len() >= REPORT_BATCH
                && let Some(ledger) = self.slot.ledger.upgrade()
            {
                ledger.batch.notify_one();
            }
        }
    }
}

impl Drop for Reservation {
    /// A request that ends without settling (client gone before any usage) costs what
    /// was charged for the chunks that streamed.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Every spend has its usage event (Σ events == spend).
        let cost = self.charged;
        let event = (cost > 0).then(|| UsageEvent {
            id: format!("evt_{}", ulid::Ulid::new()),
            token_id: self.slot.token_id.clone(),
            project_id: self.slot.project_id.clone(),
            provider_id: std::mem::take(&mut self.provider),
            model: std::mem::take(&mut self.model),
            input_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 0,
            cost: Money(cost),
            status: 499,
            cut_off: false,
            at_ms: unix_now_ms(),
            overhead_us: None,
        });
        self.finish(cost, event);
    }
}

/// Static mode: budgets held in this process (no control). Each project's limit is shared
/// by its tokens; grants are exact (`min(requested, remaining)`).
#[derive(Debug, Default)]
pub struct LocalLeases {
    /// project id → (limit, spent+outstanding)
    budgets: Mutex<HashMap<String, (u64, u64)>>,
    /// lease id → (project id, granted, reported spent)
    leases: Mutex<HashMap<String, (String, u64, u64)>>,
    /// token id → project id
    tokens: Mutex<HashMap<String, String>>,
    /// Every usage event received, in order (static mode keeps them in memory).
    pub events: Mutex<Vec<UsageEvent>>,
}

impl LocalLeases {
    pub fn new(budgets: impl IntoIterator<Item = (String, Money)>) -> Self {
        let l = LocalLeases::default();
        if let Ok(mut b) = l.budgets.lock() {
            for (p, m) in budgets {
                b.insert(p, (m.micros(), 0));
            }
        }
        l
    }

    /// Registers which project a token belongs to (the proxy knows it from the claims).
    pub fn bind_token(&self, token_id: &str, project_id: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.entry(token_id.to_owned())
                .or_insert_with(|| project_id.to_owned());
        }
    }

    /// Total settled spend of a project.
    pub fn spent(&self, project_id: &str) -> Money {
        let leases = self
            .leases
            .lock()
            .map(|l| {
                l.values()
                    .filter(|(p, _, _)| p == project_id)
                    .map(|(_, _, s)| *s)
                    .sum()
            })
            .unwrap_or(0);
        Money(leases)
    }

    fn grant(&self, project: &str, requested: u64) -> u64 {
        let Ok(mut b) = self.budgets.lock() else {
            return 0;
        };
        match b.get_mut(project) {
            // No budget configured: unlimited.
            None => requested,
            Some((limit, used)) => {
                let g = requested.min(limit.saturating_sub(*used));
                *used += g;
                g
            }
        }
    }

    fn adjust(&self, lease_id: &str, spent: u64, release: bool) {
        let Ok(mut leases) = self.leases.lock() else {
            return;
        };
        let Some((project, granted, reported)) = leases.get_mut(lease_id) else {
            return;
        };
        *reported = spent;
        if release
            && let Ok(mut b) = self.budgets.lock()
            && let Some((_, used)) = b.get_mut(project.as_str())
        {
            // Return the unspent part; spend beyond the grant is charged too.
            *used = used.saturating_sub(*granted).saturating_add(spent);
            *granted = spent;
        }
    }
}

#[async_trait]
impl LeaseApi for LocalLeases {
    async fn acquire(&self, req: LeaseRequest) -> Result<LeaseGrant, LeaseError> {
        let project = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.get(&req.token_id).cloned())
            .ok_or(LeaseError::UnknownLease)?;
        let g = self.grant(&project, req.requested.micros());
        let id = format!("lse_{}", ulid_like());
        if let Ok(mut l) = self.leases.lock() {
            l.insert(id.clone(), (project, g, 0));
        }
        Ok(LeaseGrant {
            lease_id: id,
            granted: Money(g),
            expires_at: u64::MAX,
            budget_remaining: Money::ZERO,
            denied: (g == 0).then_some(Denial::BudgetExceeded),
        })
    }

    async fn extend(&self, lease_id: &str, req: ExtendRequest) -> Result<LeaseGrant, LeaseError> {
        let project = self
            .leases
            .lock()
            .ok()
            .and_then(|l| l.get(lease_id).map(|x| x.0.clone()))
            .ok_or(LeaseError::UnknownLease)?;
        let g = self.grant(&project, req.requested.micros());
        if let Ok(mut l) = self.leases.lock()
            && let Some(x) = l.get_mut(lease_id)
        {
            x.1 += g;
        }
        Ok(LeaseGrant {
            lease_id: lease_id.to_owned(),
            granted: Money(g),
            expires_at: u64::MAX,
            budget_remaining: Money::ZERO,
            denied: (g == 0).then_some(Denial::BudgetExceeded),
        })
    }

    async fn report(&self, lease_id: &str, report: LeaseReport) -> Result<ReportAck, LeaseError> {
        self.adjust(lease_id, report.spent.micros(), false);
        if let Ok(mut e) = self.events.lock() {
            e.extend(report.events);
        }
        Ok(ReportAck {
            lease_remaining: Money::ZERO,
            budget_remaining: Money::ZERO,
            revoked: false,
        })
    }

    async fn release(&self, lease_id: &str, report: LeaseReport) -> Result<(), LeaseError> {
        self.adjust(lease_id, report.spent.micros(), true);
        if let Ok(mut e) = self.events.lock() {
            e.extend(report.events);
        }
        Ok(())
    }
}

fn ulid_like() -> String {
    format!(
        "{:x}{:08x}",
        iron_core::token::unix_now(),
        rand::random::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(budget: u64, lease: u64) -> (Arc<Ledger>, Arc<LocalLeases>) {
        let local = Arc::new(LocalLeases::new([("p".to_owned(), Money(budget))]));
        local.bind_token("t", "p");
        let cfg = LedgerConfig {
            lease_size: Money(lease),
            ..Default::default()
        };
        (Ledger::new(local.clone(), "px".into(), cfg), local)
    }

    #[tokio::test]
    async fn reserves_locally_and_refuses_past_the_budget() {
        let (l, _) = ledger(1_000, 400);
        let r1 = l.reserve("t", "p", Money(300)).await.unwrap();
        let r2 = l.reserve("t", "p", Money(300)).await.unwrap();
        let r3 = l.reserve("t", "p", Money(300)).await.unwrap();
        assert_eq!(
            l.reserve("t", "p", Money(300)).await.err(),
            Some(Refusal::BudgetExceeded)
        );
        r1.settle(Money(100), None);
        r2.settle(Money(100), None);
        drop(r3);
        // 100 + 100 + 0 spent: 800 left in total, some of it already leased here.
        tokio::time::sleep(Duration::from_millis(600)).await; // past the denial ttl
        let r = l.reserve("t", "p", Money(700)).await.unwrap();
        r.settle(Money(700), None);
        assert_eq!(l.slot("t", "p").spent(), Money(900));
    }

    #[tokio::test]
    async fn charge_stops_when_the_budget_is_gone() {
        let (l, _) = ledger(1_000, 1_000);
        let mut r = l.reserve("t", "p", Money(100)).await.unwrap();
        let mut paid = 0;
        while r.charge(Money(30)).await {
            paid += 30;
            assert!(paid <= 1_000);
        }
        assert_eq!(
            paid, 990,
            "charged chunk by chunk until the next one could not be paid"
        );
        r.settle(Money(990), None);
        assert_eq!(l.slot("t", "p").spent(), Money(990));
    }

    #[tokio::test]
    async fn settle_returns_unused_estimate() {
        let (l, _) = ledger(10_000, 5_000);
        let r = l.reserve("t", "p", Money(4_000)).await.unwrap();
        let slot = l.slot("t", "p");
        assert_eq!(slot.available(), Money(1_000));
        r.settle(Money(250), None);
        assert_eq!(slot.available(), Money(4_750));
        assert_eq!(slot.spent(), Money(250));
    }

    #[tokio::test]
    async fn reports_are_cumulative_and_sequenced() {
        let (l, local) = ledger(10_000, 5_000);
        let slot = l.slot("t", "p");
        let ev = |i: u64| UsageEvent {
            id: format!("e{i}"),
            token_id: "t".into(),
            project_id: "p".into(),
            provider_id: "x".into(),
            model: "m".into(),
            input_tokens: 1,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 1,
            cost: Money(10),
            status: 200,
            cut_off: false,
            at_ms: 0,
            overhead_us: None,
        };
        l.reserve("t", "p", Money(10))
            .await
            .unwrap()
            .settle(Money(10), Some(ev(1)));
        let (id, rep) = l.take_report(&slot).await.unwrap();
        assert_eq!((rep.seq, rep.spent, rep.events.len()), (1, Money(10), 1));
        local.report(&id, rep).await.unwrap();
        assert!(l.take_report(&slot).await.is_none(), "nothing new");
        l.reserve("t", "p", Money(10))
            .await
            .unwrap()
            .settle(Money(20), Some(ev(2)));
        let (_, rep) = l.take_report(&slot).await.unwrap();
        assert_eq!((rep.seq, rep.spent), (2, Money(30)));
    }

    /// A lease authority that counts calls and can be "down" (unreachable).
    #[derive(Default)]
    struct Counting {
        inner: LocalLeases,
        acquires: std::sync::atomic::AtomicUsize,
        extends: std::sync::atomic::AtomicUsize,
        down: AtomicBool,
    }

    impl Counting {
        fn new(budget: u64) -> Arc<Self> {
            let c = Counting {
                inner: LocalLeases::new([("p".to_owned(), Money(budget))]),
                ..Default::default()
            };
            c.inner.bind_token("t", "p");
            Arc::new(c)
        }

        fn check(&self) -> Result<(), LeaseError> {
            if self.down.load(Ordering::SeqCst) {
                Err(LeaseError::Unreachable("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl LeaseApi for Counting {
        async fn acquire(&self, req: LeaseRequest) -> Result<LeaseGrant, LeaseError> {
            self.check()?;
            self.acquires.fetch_add(1, Ordering::SeqCst);
            self.inner.acquire(req).await
        }
        async fn extend(&self, id: &str, req: ExtendRequest) -> Result<LeaseGrant, LeaseError> {
            self.check()?;
            self.extends.fetch_add(1, Ordering::SeqCst);
            self.inner.extend(id, req).await
        }
        async fn report(&self, id: &str, r: LeaseReport) -> Result<ReportAck, LeaseError> {
            self.check()?;
            self.inner.report(id, r).await
        }
        async fn release(&self, id: &str, r: LeaseReport) -> Result<(), LeaseError> {
            self.check()?;
            self.inner.release(id, r).await
        }
    }

    fn counting_ledger(budget: u64, lease: u64, cap: Option<u64>) -> (Arc<Ledger>, Arc<Counting>) {
        let api = Counting::new(budget);
        let cfg = LedgerConfig {
            lease_size: Money(lease),
            fail_open_cap: cap.map(Money),
            ..Default::default()
        };
        (Ledger::new(api.clone(), "px".into(), cfg), api)
    }

    fn event(i: u64, cost: u64) -> UsageEvent {
        UsageEvent {
            id: format!("e{i}"),
            token_id: "t".into(),
            project_id: "p".into(),
            provider_id: "x".into(),
            model: "m".into(),
            input_tokens: 1,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 1,
            cost: Money(cost),
            status: 200,
            cut_off: false,
            at_ms: 0,
            overhead_us: None,
        }
    }

    async fn settle_tasks() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn background_extension_fires_at_the_low_water_mark() {
        // Lease 1 000, low water 25 %: extend once the slice is below 250.
        let (l, api) = counting_ledger(100_000, 1_000, None);
        let slot = l.slot("t", "p");
        let r1 = l.reserve("t", "p", Money(700)).await.unwrap();
        settle_tasks().await;
        assert_eq!(api.acquires.load(Ordering::SeqCst), 1);
        assert_eq!(
            api.extends.load(Ordering::SeqCst),
            0,
            "300 left: above the mark"
        );
        let r2 = l.reserve("t", "p", Money(100)).await.unwrap();
        // The request did not wait for the extension: the slice is still what it was.
        assert_eq!(slot.available(), Money(200));
        settle_tasks().await;
        assert_eq!(
            api.extends.load(Ordering::SeqCst),
            1,
            "200 left: below the mark, one background extension"
        );
        assert_eq!(slot.available(), Money(1_200), "one more lease slice");
        let r3 = l.reserve("t", "p", Money(50)).await.unwrap();
        settle_tasks().await;
        assert_eq!(
            api.extends.load(Ordering::SeqCst),
            1,
            "above the mark again"
        );
        for r in [r1, r2, r3] {
            r.settle(Money(10), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fail_open_admits_up_to_the_cap_then_refuses_and_resets_when_control_answers() {
        let (l, api) = counting_ledger(100_000, 1_000, Some(500));
        let metric = prometheus::IntCounterVec::new(
            prometheus::Opts::new("fail_open_test", "test"),
            &["project"],
        )
        .unwrap();
        let m = metric.clone();
        l.observe_fail_open(Box::new(move |project, micros| {
            m.with_label_values(&[project]).inc_by(micros)
        }));
        let slot = l.slot("t", "p");
        // The whole lease slice is used, then control goes away.
        let r = l.reserve("t", "p", Money(1_000)).await.unwrap();
        api.down.store(true, Ordering::SeqCst);
        r.settle(Money(1_000), Some(event(1, 1_000)));
        settle_tasks().await;
        let r = l.reserve("t", "p", Money(300)).await.unwrap();
        r.settle(Money(300), Some(event(2, 300)));
        assert_eq!(l.fail_open_used("p"), Money(300));
        assert_eq!(
            l.reserve("t", "p", Money(300)).await.err(),
            Some(Refusal::Unavailable),
            "300 + 300 > the 500 cap"
        );
        // A stream's chunks draw from the allowance too.
        let mut r = l.reserve("t", "p", Money(150)).await.unwrap();
        assert!(r.charge(Money(150)).await);
        assert!(r.charge(Money(50)).await, "450 → 500: exactly the cap");
        assert!(!r.charge(Money(1)).await, "the cap is used up: cut off");
        r.settle(Money(200), Some(event(3, 200)));
        assert_eq!(l.fail_open_used("p"), Money(500));
        assert_eq!(metric.with_label_values(&["p"]).get(), 500);
        assert_eq!(
            l.reserve("t", "p", Money(1)).await.err(),
            Some(Refusal::Unavailable)
        );
        // Fail-open spend is ordinary spend on the lease (beyond its grant), with its events.
        let (_, rep) = l.take_report(&slot).await.unwrap();
        assert_eq!(rep.spent, Money(1_500));
        assert_eq!(rep.events.len(), 3);
        // Control answers again: normal leases, and a fresh allowance for the next outage.
        api.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await; // past the outage memo
        let r = l.reserve("t", "p", Money(100)).await.unwrap();
        assert_eq!(api.extends.load(Ordering::SeqCst), 1);
        assert_eq!(l.fail_open_used("p"), Money::ZERO);
        r.settle(Money(100), None);
    }

    #[tokio::test(start_paused = true)]
    async fn fail_closed_refuses_when_control_is_unreachable() {
        let (l, api) = counting_ledger(100_000, 1_000, None);
        let r = l.reserve("t", "p", Money(1_000)).await.unwrap();
        api.down.store(true, Ordering::SeqCst);
        r.settle(Money(1_000), None);
        assert_eq!(
            l.reserve("t", "p", Money(1)).await.err(),
            Some(Refusal::Unavailable)
        );
        assert_eq!(l.fail_open_used("p"), Money::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn unleased_fail_open_spend_goes_on_the_next_lease() {
        // Control is down before this token ever got a lease.
        let (l, api) = counting_ledger(100_000, 1_000, Some(1_000));
        api.down.store(true, Ordering::SeqCst);
        let slot = l.slot("t", "p");
        l.reserve("t", "p", Money(300))
            .await
            .unwrap()
            .settle(Money(300), Some(event(1, 300)));
        assert!(
            l.take_report(&slot).await.is_none(),
            "no lease to report on yet"
        );
        api.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        l.reserve("t", "p", Money(100))
            .await
            .unwrap()
            .settle(Money(100), Some(event(2, 100)));
        let (_, rep) = l.take_report(&slot).await.unwrap();
        assert_eq!((rep.seq, rep.spent, rep.events.len()), (1, Money(400), 2));
    }
}
