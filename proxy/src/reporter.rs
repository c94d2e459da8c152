//! Usage reporting (`design.md` §6, §8): sends each lease's cumulative spend and usage
//! events to control every second (or at 100 queued events), and never loses one.
//!
//! A report that cannot be delivered (control or Redis down) is appended to a local
//! append-only spill file (`<spill_dir>/usage-spill.jsonl`, fsync'd) before anything else
//! happens; while the file is non-empty, new reports are appended behind it so control
//! always sees a lease's reports in `seq` order. Every round first replays the file in order
//! and truncates it once all entries were accepted. Reports are idempotent by
//! `(lease, seq)` at control, so a crash between sending and truncating re-sends at most
//! what control already has, which it ignores. On shutdown the reporter waits for in-flight
//! requests (up to the grace), sends final reports and returns every lease.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// The reporter background service.
pub struct Reporter {
    pub ledger: Arc<Ledger>,
    pub spill: Option<Spill>,
    pub inflight: Arc<AtomicUsize>,
    pub grace: Duration,
    /// Exit the process once `finish` is done (the binary; never in-process embedders).
    pub exit_when_done: bool,
    pub pending_gauge: Option<prometheus::IntGauge>,
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

    fn spill_or_log(&self, entries: Vec<SpillEntry>) {
        if entries.is_empty() {
            return;
        }
        match &self.spill {
            Some(s) => {
                if let Err(e) = s.append(&entries) {
                    tracing::error!(error = %e, lost = entries.len(), "cannot spill usage reports");
                }
            }
            None => tracing::error!(
                lost = entries.len(),
                "usage reports undeliverable and no spill_dir configured"
            ),
        }
    }

    /// Updates `iron_proxy_usage_reports_pending`.
    fn publish_pending(&self) {
        if let (Some(spill), Some(gauge)) = (&self.spill, &self.pending_gauge) {
            gauge.set(i64::try_from(spill.pending()).unwrap_or(i64::MAX));
        }
    }

    /// One reporting round.
    pub async fn round(&self) {
        let drained = self.replay().await;
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
        self.spill_or_log(failed);
        self.publish_pending();
    }

    /// Shutdown: wait for in-flight requests, final reports, return leases.
    pub async fn finish(&self) {
        let deadline = tokio::time::Instant::now() + self.grace;
        while self.inflight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drained = self.replay().await;
        if drained {
            let unsent = self.ledger.release_all().await;
            self.spill_or_log(
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
            self.spill_or_log(all);
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
