//! Usage reporting (`design.md` §6, §8): sends each lease's cumulative spend and usage
//! events to control every second (or at 100 queued events), and never loses one.
//!
//! Runs as a pingora background service beside the request path: the ledger
//! ([`crate::ledger`]) queues a usage event per settled request; this task takes them per
//! lease and sends them. A report that cannot be delivered (control or Redis down) is kept,
//! in order, until control takes it:
//! - with `budget.spill_dir`, appended to a local append-only spill file
//!   (`<spill_dir>/usage-spill.jsonl`, fsync'd) at once, so it survives a crash;
//! - otherwise (or when the file cannot be written) in a bounded in-memory queue
//!   ([`MEMORY_QUEUE_EVENTS`] events). When that is full it moves to the spill file if there
//!   is one, else the oldest reports are dropped (error log,
//!   `iron_proxy_usage_events_dropped_total`). Memory does not survive a restart.
//!
//! Order is file, then memory, then new reports: while anything is queued, new reports go
//! behind it, so control always sees a lease's reports in `seq` order (it ignores a `seq` at
//! or below the last it applied). Every round first delivers the queue in order; the file is
//! truncated once all its entries were accepted. Reports are idempotent by `(lease, seq)` at
//! control, so a crash between sending and truncating re-sends at most what control already
//! has, which it ignores. On shutdown the reporter waits for in-flight requests (up to the
//! grace), sends final reports and returns every lease.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use iron_core::lease::LeaseReport;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::{Deserialize, Serialize};

use crate::ledger::{LeaseError, Ledger};

/// Report interval (a report also goes out as soon as a slot queues [`crate::ledger::REPORT_BATCH`] events).
pub const INTERVAL: Duration = Duration::from_secs(1);
/// A lease unused for this long is returned to control.
pub const IDLE_RELEASE: Duration = Duration::from_secs(20);
/// Usage events the in-memory queue holds for control before it spills or drops the oldest
/// (a report without events counts as one).
pub const MEMORY_QUEUE_EVENTS: usize = 100_000;

#[derive(Debug, Serialize, Deserialize)]
struct SpillEntry {
    lease_id: String,
    /// `true` for the final report that also returns the lease.
    release: bool,
    report: LeaseReport,
}

/// The append-only spill file.
#[derive(Debug, Clone)]
pub struct Spill {
    path: PathBuf,
}

impl Spill {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Spill {
            path: dir.join("usage-spill.jsonl"),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, entries: &[SpillEntry]) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        f.write_all(&buf)?;
        f.sync_data()
    }

    fn read(&self) -> std::io::Result<Vec<SpillEntry>> {
        let f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for line in std::io::BufReader::new(f).lines() {
            let line = line?;
            // A torn last line (crash mid-write) is skipped; everything before it counts.
            if let Ok(e) = serde_json::from_str(&line) {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn rewrite(&self, rest: &[SpillEntry]) -> std::io::Result<()> {
        if rest.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        let _ = std::fs::remove_file(&tmp);
        let spill = Spill { path: tmp.clone() };
        spill.append(rest)?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Entries waiting in the file.
    pub fn pending(&self) -> usize {
        self.read().map(|v| v.len()).unwrap_or(0)
    }
}

/// Undeliverable reports held in memory, oldest first, bounded by their events.
#[derive(Debug)]
pub struct MemoryQueue {
    inner: Mutex<QueueInner>,
    cap: usize,
}

#[derive(Debug, Default)]
struct QueueInner {
    entries: VecDeque<SpillEntry>,
    /// Σ [`weight`] of `entries`.
    weight: usize,
}

fn weight(e: &SpillEntry) -> usize {
    e.report.events.len().max(1)
}

impl MemoryQueue {
    /// A queue of at most `cap_events` usage events.
    pub fn new(cap_events: usize) -> Self {
        MemoryQueue {
            inner: Mutex::new(QueueInner::default()),
            cap: cap_events.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryQueue {
    fn default() -> Self {
        MemoryQueue::new(MEMORY_QUEUE_EVENTS)
    }
}

/// The reporter background service.
pub struct Reporter {
    pub ledger: Arc<Ledger>,
    pub spill: Option<Spill>,
    /// Reports waiting for control when there is no spill file (or it failed).
    pub memory: MemoryQueue,
    pub inflight: Arc<AtomicUsize>,
    pub grace: Duration,
    /// Exit the process once `finish` is done (the binary; never in-process embedders).
    pub exit_when_done: bool,
    pub pending_gauge: Option<prometheus::IntGauge>,
    /// `iron_proxy_usage_events_dropped_total`.
    pub dropped_counter: Option<prometheus::IntCounter>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("spill", &self.spill)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// Replays the spill file in order; returns true when it is empty afterwards.
    async fn replay(&self) -> bool {
        let Some(spill) = &self.spill else {
            return true;
        };
        let entries = match spill.read() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the usage spill file");
                return false;
            }
        };
        if entries.is_empty() {
            return true;
        }
        let api = self.ledger.api();
        let mut sent = 0;
        for e in &entries {
            let result = if e.release {
                api.release(&e.lease_id, e.report.clone()).await
            } else {
                api.report(&e.lease_id, e.report.clone()).await.map(|_| ())
            };
            match result {
                Ok(()) => {}
                // Control is still away: keep this entry and everything after it, in order.
                Err(LeaseError::Unreachable(_)) => break,
                // Control answered and will never take this entry (unknown lease past its
                // retention, malformed): keeping it would block every later report forever.
                Err(err) => tracing::error!(
                    lease = %e.lease_id,
                    seq = e.report.seq,
                    events = e.report.events.len(),
                    error = %err,
                    "control refused a spilled usage report; dropping it"
                ),
            }
            sent += 1;
        }
        if sent > 0 {
            if let Err(e) = spill.rewrite(&entries[sent..]) {
                tracing::error!(error = %e, "cannot rewrite the usage spill file");
            }
            tracing::info!(
                replayed = sent,
                left = entries.len() - sent,
                "replayed spilled usage reports"
            );
        }
        sent == entries.len()
    }

    /// Sends one queued entry.
    async fn send(&self, e: &SpillEntry) -> Result<(), LeaseError> {
        let api = self.ledger.api();
        if e.release {
            api.release(&e.lease_id, e.report.clone()).await
        } else {
            api.report(&e.lease_id, e.report.clone()).await.map(|_| ())
        }
    }

    /// Delivers the in-memory queue in order; true when it is empty afterwards.
    async fn deliver_memory(&self) -> bool {
        let mut pending = std::mem::take(&mut self.memory.lock().entries);
        let total = pending.len();
        while let Some(e) = pending.front() {
            match self.send(e).await {
                Ok(()) => {}
                Err(LeaseError::Unreachable(_)) => break,
                Err(err) => tracing::error!(
                    lease = %e.lease_id,
                    seq = e.report.seq,
                    events = e.report.events.len(),
                    error = %err,
                    "control refused a queued usage report; dropping it"
                ),
            }
            pending.pop_front();
        }
        if total > 0 {
            tracing::info!(
                delivered = total - pending.len(),
                left = pending.len(),
                "delivered queued usage reports"
            );
        }
        let mut q = self.memory.lock();
        // Whatever is left is older than anything queued meanwhile.
        pending.append(&mut q.entries);
        q.weight = pending.iter().map(weight).sum();
        q.entries = pending;
        q.entries.is_empty()
    }

    /// Delivers everything queued (spill file, then memory) in order; true when nothing is
    /// left.
    async fn deliver_queued(&self) -> bool {
        self.replay().await && self.deliver_memory().await
    }

    /// Keeps undeliverable reports, in order, behind everything already queued.
    fn enqueue(&self, entries: Vec<SpillEntry>) {
        if entries.is_empty() {
            return;
        }
        let mut q = self.memory.lock();
        if q.entries.is_empty()
            && let Some(s) = &self.spill
        {
            match s.append(&entries) {
                Ok(()) => return,
                Err(e) => tracing::error!(
                    error = %e,
                    reports = entries.len(),
                    "cannot spill usage reports; keeping them in memory"
                ),
            }
        }
        for e in entries {
            q.weight += weight(&e);
            q.entries.push_back(e);
        }
        if q.weight <= self.memory.cap {
            return;
        }
        // Full: the file takes the whole queue (all of it is newer than what the file holds,
        // so appending keeps the order), else the oldest reports go.
        if let Some(s) = &self.spill
            && s.append(q.entries.make_contiguous()).is_ok()
        {
            q.entries.clear();
            q.weight = 0;
            return;
        }
        let (mut reports, mut events) = (0usize, 0usize);
        while q.weight > self.memory.cap {
            let Some(e) = q.entries.pop_front() else {
                break;
            };
            q.weight -= weight(&e);
            reports += 1;
            events += e.report.events.len();
        }
        if let Some(c) = &self.dropped_counter {
            c.inc_by(events as u64);
        }
        tracing::error!(
            dropped_reports = reports,
            dropped_events = events,
            cap_events = self.memory.cap,
            "usage report queue full and no spill file: dropped the oldest reports (set budget.spill_dir)"
        );
    }

    /// Updates `iron_proxy_usage_reports_pending`.
    fn publish_pending(&self) {
        if let Some(gauge) = &self.pending_gauge {
            let file = self.spill.as_ref().map_or(0, Spill::pending);
            let n = file + self.memory.len();
            gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// One reporting round.
    pub async fn round(&self) {
        let drained = self.deliver_queued().await;
        let mut failed = Vec::new();
        for slot in self.ledger.slots() {
            // A lease nobody uses goes back to the budget (other replicas may need it) instead
            // of expiring at control and counting as spent.
            let (lease_id, report, release) = match self.ledger.take_report(&slot).await {
                Some((id, r)) => (id, r, false),
                None => match self.ledger.release_if_idle(&slot, IDLE_RELEASE).await {
                    Some((id, r)) => (id, r, true),
                    None => continue,
                },
            };
            if !drained || !failed.is_empty() {
                failed.push(SpillEntry {
                    lease_id,
                    release,
                    report,
                });
                continue;
            }
            let api = self.ledger.api();
            let result = if release {
                api.release(&lease_id, report.clone()).await
            } else {
                api.report(&lease_id, report.clone())
                    .await
                    .map(|ack| self.ledger.apply_ack(&slot, &ack))
            };
            match result {
                Ok(()) => {}
                Err(LeaseError::Unreachable(_)) => failed.push(SpillEntry {
                    lease_id,
                    release,
                    report,
                }),
                Err(err) => {
                    tracing::error!(lease = %lease_id, error = %err, "control refused a usage report");
                    // The lease is gone at control: the next request starts a new one.
                    self.ledger.forget_lease(&slot).await;
                }
            }
        }
        self.enqueue(failed);
        self.publish_pending();
    }

    /// Shutdown: wait for in-flight requests, final reports, return leases.
    pub async fn finish(&self) {
        let deadline = tokio::time::Instant::now() + self.grace;
        while self.inflight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drained = self.deliver_queued().await;
        if drained {
            let unsent = self.ledger.release_all().await;
            self.enqueue(
                unsent
                    .into_iter()
                    .map(|(lease_id, report)| SpillEntry {
                        lease_id,
                        release: true,
                        report,
                    })
                    .collect(),
            );
        } else {
            // Keep order: everything goes behind what is already spilled.
            let mut all = Vec::new();
            for slot in self.ledger.slots() {
                if let Some((lease_id, report)) = self.ledger.take_report(&slot).await {
                    all.push(SpillEntry {
                        lease_id,
                        release: false,
                        report,
                    });
                }
            }
            self.enqueue(all);
        }
        let lost = self.memory.len();
        if lost > 0 {
            tracing::error!(
                reports = lost,
                "shutting down with usage reports control did not take and no spill file: they are lost (set budget.spill_dir)"
            );
        }
    }
}

#[async_trait]
impl BackgroundService for Reporter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => self.round().await,
                _ = self.ledger.batch_ready() => self.round().await,
                _ = shutdown.changed() => {
                    self.finish().await;
                    if self.exit_when_done {
                        crate::telemetry::flush_global();
                        tracing::info!("drained: every request finished and every lease returned; exiting");
                        std::process::exit(0);
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use iron_core::Money;
    use iron_core::lease::{ExtendRequest, LeaseGrant, LeaseRequest, ReportAck, UsageEvent};

    use super::*;
    use crate::ledger::{LeaseApi, LedgerConfig, LocalLeases};

    fn event(i: usize) -> UsageEvent {
        UsageEvent {
            id: format!("evt_{i}"),
            token_id: "t".into(),
            project_id: "p".into(),
            provider_id: "x".into(),
            model: "m".into(),
            input_tokens: 1,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 1,
            cost: Money(1),
            status: 200,
            cut_off: false,
            at_ms: 0,
            overhead_us: None,
        }
    }

    fn reporter(api: Arc<dyn LeaseApi>, memory: MemoryQueue, spill: Option<Spill>) -> Reporter {
        Reporter {
            ledger: Ledger::new(api, "px".into(), LedgerConfig::default()),
            spill,
            memory,
            inflight: Arc::new(AtomicUsize::new(0)),
            grace: Duration::from_secs(1),
            exit_when_done: false,
            pending_gauge: None,
            dropped_counter: Some(prometheus::IntCounter::new("dropped", "test").unwrap()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_of_100_events_is_sent_before_the_1s_timer() {
        let local = Arc::new(LocalLeases::new([("p".to_owned(), Money(1_000_000))]));
        local.bind_token("t", "p");
        let r = Arc::new(reporter(local.clone(), MemoryQueue::default(), None));
        let (_stop, watch) = tokio::sync::watch::channel(false);
        let service = r.clone();
        tokio::spawn(async move { service.start(watch).await });
        let start = tokio::time::Instant::now();
        let delivered = || local.events.lock().unwrap().len();
        for i in 0..crate::ledger::REPORT_BATCH {
            let res = r.ledger.reserve("t", "p", Money(1)).await.unwrap();
            res.settle(Money(1), Some(event(i)));
            // Spin the runtime (paused time does not move while tasks run).
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            if i + 1 < crate::ledger::REPORT_BATCH {
                assert_eq!(delivered(), 0, "{} events: wait for the timer", i + 1);
            }
        }
        for _ in 0..1_000 {
            if delivered() == crate::ledger::REPORT_BATCH {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(delivered(), crate::ledger::REPORT_BATCH);
        assert!(
            start.elapsed() < INTERVAL,
            "sent by the batch, not the timer: {:?}",
            start.elapsed()
        );
    }

    /// Records what it receives; unreachable while `down`.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        got: std::sync::Mutex<Vec<(String, u64, bool)>>,
    }

    impl Flaky {
        fn take(&self, id: &str, seq: u64, release: bool) -> Result<(), LeaseError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(LeaseError::Unreachable("down".into()));
            }
            self.got.lock().unwrap().push((id.to_owned(), seq, release));
            Ok(())
        }
    }

    #[async_trait]
    impl LeaseApi for Flaky {
        async fn acquire(&self, _: LeaseRequest) -> Result<LeaseGrant, LeaseError> {
            Err(LeaseError::Unreachable("unused".into()))
        }
        async fn extend(&self, _: &str, _: ExtendRequest) -> Result<LeaseGrant, LeaseError> {
            Err(LeaseError::Unreachable("unused".into()))
        }
        async fn report(&self, id: &str, r: LeaseReport) -> Result<ReportAck, LeaseError> {
            self.take(id, r.seq, false)?;
            Ok(ReportAck {
                lease_remaining: Money::ZERO,
                budget_remaining: Money::ZERO,
                revoked: false,
            })
        }
        async fn release(&self, id: &str, r: LeaseReport) -> Result<(), LeaseError> {
            self.take(id, r.seq, true)
        }
    }

    fn entry(seq: u64, events: usize, release: bool) -> SpillEntry {
        SpillEntry {
            lease_id: "lse_a".into(),
            release,
            report: LeaseReport {
                seq,
                spent: Money(seq),
                events: (0..events)
                    .map(|i| event(seq as usize * 1_000 + i))
                    .collect(),
            },
        }
    }

    #[tokio::test]
    async fn without_a_spill_file_reports_wait_in_memory_and_arrive_in_order_once() {
        let api = Arc::new(Flaky::default());
        api.down.store(true, Ordering::SeqCst);
        let r = reporter(api.clone(), MemoryQueue::default(), None);
        r.enqueue(vec![entry(1, 2, false), entry(2, 1, false)]);
        r.enqueue(vec![entry(3, 0, true)]);
        assert!(!r.deliver_queued().await, "control is still down");
        assert_eq!(r.memory.len(), 3, "nothing dropped");
        api.down.store(false, Ordering::SeqCst);
        assert!(r.deliver_queued().await);
        assert!(r.deliver_queued().await, "nothing twice");
        let got = api.got.lock().unwrap().clone();
        let want: Vec<_> = [(1, false), (2, false), (3, true)]
            .into_iter()
            .map(|(s, rel)| ("lse_a".to_owned(), s, rel))
            .collect();
        assert_eq!(got, want);
        assert!(r.memory.is_empty());
    }

    #[tokio::test]
    async fn a_full_memory_queue_drops_the_oldest_and_counts_them() {
        let api = Arc::new(Flaky::default());
        api.down.store(true, Ordering::SeqCst);
        let r = reporter(api.clone(), MemoryQueue::new(5), None);
        for seq in 1..=4 {
            r.enqueue(vec![entry(seq, 2, false)]);
        }
        // 8 events > 5: the two oldest reports (4 events) went.
        assert_eq!(r.memory.len(), 2);
        assert_eq!(r.dropped_counter.as_ref().unwrap().get(), 4);
        api.down.store(false, Ordering::SeqCst);
        assert!(r.deliver_queued().await);
        let seqs: Vec<u64> = api.got.lock().unwrap().iter().map(|g| g.1).collect();
        assert_eq!(seqs, [3, 4]);
    }

    #[tokio::test]
    async fn with_a_spill_file_reports_go_to_disk_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let api = Arc::new(Flaky::default());
        api.down.store(true, Ordering::SeqCst);
        let spill = Spill::new(dir.path()).unwrap();
        let r = reporter(api.clone(), MemoryQueue::default(), Some(spill.clone()));
        r.enqueue(vec![entry(1, 1, false), entry(2, 1, false)]);
        assert_eq!((spill.pending(), r.memory.len()), (2, 0));
        api.down.store(false, Ordering::SeqCst);
        assert!(r.deliver_queued().await);
        assert_eq!(spill.pending(), 0);
        assert_eq!(api.got.lock().unwrap().len(), 2);
    }
}
