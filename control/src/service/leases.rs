//! Budget leases for proxies (`design.md` §6, §8): grant, extend, report, release, and the
//! expiry sweep, on top of the store's atomic lease operations (rules in [`crate::store`]).
//!
//! The handlers in `api::leases` validate the wire types from `iron_core::lease` and call
//! these methods; time comes from the service's [`Clock`] so tests can cross a UTC midnight.
//! The sweep ([`Service::run_lease_sweeper`]) runs in every control replica; the store makes
//! each pass atomic, so replicas never double-charge an expiry. After a store outage (or at
//! start) a replica waits one lease TTL of healthy store access before it expires anything,
//! so proxies that could not report during the outage get the time to do so.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use iron_core::Money;
use iron_core::lease::{ExtendRequest, LeaseGrant, LeaseReport, LeaseRequest, ReportAck};

use super::Service;
use crate::error::ApiError;
use crate::model::{BudgetUsage, MAX_GRANT, Project, SweepStats, Timestamp, new_id};
use crate::store::StoreError;

/// Where the service takes the time from (unix seconds).
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        crate::model::now()
    }
}

/// A clock tests set by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now: Timestamp) -> Arc<Self> {
        Arc::new(ManualClock(AtomicU64::new(now)))
    }

    pub fn set(&self, now: Timestamp) {
        self.0.store(now, Ordering::SeqCst);
    }

    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0.load(Ordering::SeqCst)
    }
}

/// Longest proxy id, token id, lease id or event id accepted.
const MAX_ID: usize = 128;

/// 1 to [`MAX_ID`] printable ASCII characters, no spaces.
fn valid_id(s: &str) -> bool {
    (1..=MAX_ID).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Lease ids are `lse_<ulid>`; anything else cannot exist (404 without a store lookup).
fn known_shape(lease_id: &str) -> Result<(), ApiError> {
    if lease_id.starts_with("lse_") && valid_id(lease_id) {
        Ok(())
    } else {
        Err(ApiError::not_found("lease not found"))
    }
}

fn lease_error(lease_id: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound { .. } => {
            ApiError::not_found(format!("lease `{}` not found", super::shown(lease_id)))
        }
        other => other.into(),
    }
}

/// Events with a missing id get one (so de-duplication cannot merge them); over-long or
/// odd ids are refused.
fn check_report(report: &mut LeaseReport) -> Result<(), ApiError> {
    for (i, e) in report.events.iter_mut().enumerate() {
        if e.id.is_empty() {
            e.id = new_id("evt");
        } else if !valid_id(&e.id) {
            return Err(ApiError::invalid(format!(
                "events[{i}].id: 1 to {MAX_ID} printable characters, no spaces"
            )));
        }
    }
    Ok(())
}

impl Service {
    /// The service's current time (unix seconds).
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// `POST /internal/v1/leases`.
    pub async fn grant_lease(&self, req: LeaseRequest) -> Result<LeaseGrant, ApiError> {
        if !valid_id(&req.proxy_id) {
            return Err(ApiError::invalid(format!(
                "proxy_id: 1 to {MAX_ID} printable characters, no spaces"
            )));
        }
        if !valid_id(&req.token_id) {
            return Err(ApiError::invalid("token_id: not a token id"));
        }
        if req.requested == Money::ZERO {
            return Err(ApiError::invalid("requested: must be greater than 0"));
        }
        let req = LeaseRequest {
            requested: req.requested.min(MAX_GRANT),
            ..req
        };
        let id = new_id("lse");
        let grant = self
            .store
            .grant_lease(&req, &id, self.now(), &self.leases)
            .await?;
        if let Some(d) = grant.denied {
            tracing::debug!(token = %req.token_id, proxy = %req.proxy_id, denied = ?d, "lease denied");
        }
        Ok(grant)
    }

    /// `POST /internal/v1/leases/{id}/extend`.
    pub async fn extend_lease(
        &self,
        lease_id: &str,
        req: ExtendRequest,
    ) -> Result<LeaseGrant, ApiError> {
        known_shape(lease_id)?;
        if req.requested == Money::ZERO {
            return Err(ApiError::invalid("requested: must be greater than 0"));
        }
        self.store
            .extend_lease(
                lease_id,
                req.requested.min(MAX_GRANT),
                self.now(),
                &self.leases,
            )
            .await
            .map_err(|e| lease_error(lease_id, e))
    }

    /// `POST /internal/v1/leases/{id}/report`.
    pub async fn report_lease(
        &self,
        lease_id: &str,
        report: LeaseReport,
    ) -> Result<ReportAck, ApiError> {
        self.apply_report(lease_id, report, false).await
    }

    /// `DELETE /internal/v1/leases/{id}` (with the final report).
    pub async fn release_lease(
        &self,
        lease_id: &str,
        report: LeaseReport,
    ) -> Result<ReportAck, ApiError> {
        self.apply_report(lease_id, report, true).await
    }

    /// Checks and records a report (`release`: the final one), then tells the dashboards.
    async fn apply_report(
        &self,
        lease_id: &str,
        mut report: LeaseReport,
        release: bool,
    ) -> Result<ReportAck, ApiError> {
        known_shape(lease_id)?;
        check_report(&mut report)?;
        let (now, policy) = (self.now(), &self.leases);
        let ack = if release {
            self.store
                .release_lease(lease_id, &report, now, policy)
                .await
        } else {
            self.store
                .report_lease(lease_id, &report, now, policy)
                .await
        }
        .map_err(|e| lease_error(lease_id, e))?;
        self.publish_usage(&report);
        Ok(ack)
    }

    /// One expiry pass (see the module docs).
    pub async fn sweep_leases(&self) -> Result<SweepStats, ApiError> {
        let stats = self.store.expire_leases(self.now(), &self.leases).await?;
        if stats.expired > 0 {
            tracing::info!(
                expired = stats.expired,
                "leases expired without a final report: counted as fully spent"
            );
        }
        Ok(stats)
    }

    /// Budget consumption of `project` in its current period.
    pub async fn budget_usage(&self, project: &Project) -> Result<BudgetUsage, ApiError> {
        Ok(self
            .store
            .budget_usage(&project.id, None, self.now())
            .await?)
    }

    /// Runs the expiry sweep every `interval` until `stop` resolves. Expiry starts after one
    /// lease TTL of healthy store access (at start and after every store error).
    pub async fn run_lease_sweeper(
        self: Arc<Self>,
        interval: Duration,
        stop: impl std::future::Future<Output = ()> + Send,
    ) {
        let grace = Duration::from_secs(self.leases.ttl_secs);
        let sweeps = async {
            let mut healthy_since: Option<tokio::time::Instant> = None;
            loop {
                tokio::time::sleep(interval).await;
                match healthy_since {
                    None => match self.store.ping().await {
                        Ok(()) => healthy_since = Some(tokio::time::Instant::now()),
                        Err(e) => tracing::debug!(error = %e, "lease sweep waits for the store"),
                    },
                    Some(since) if since.elapsed() < grace => {
                        if self.store.ping().await.is_err() {
                            healthy_since = None;
                        }
                    }
                    Some(_) => {
                        if let Err(e) = self.sweep_leases().await {
                            tracing::warn!(error = %e, "lease expiry sweep failed");
                            healthy_since = None;
                        }
                    }
                }
            }
        };
        tokio::select! {
            () = sweeps => {}
            () = stop => {}
        }
    }
}
