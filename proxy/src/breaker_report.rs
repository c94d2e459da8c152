//! Control mode: tells control the state of this proxy's circuit breakers (`design.md` §8),
//! so the Control Panel's Providers page shows which deployments are tripped where.
//!
//! A pingora background service beside the usage reporter, off the request path: every
//! [`TICK`] it reads [`crate::breaker::Breakers::states`] and, when something changed or
//! [`HEARTBEAT`] passed, sends `PUT /internal/v1/proxies/{proxy id}/breakers`. Failures are
//! ignored (the next tick retries); control forgets a proxy that stops reporting.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use iron_core::wire::{BreakerReport, BreakerStatus};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use zeroize::Zeroizing;

use crate::proxy::Shared;

/// How often the breakers are looked at.
pub const TICK: Duration = Duration::from_secs(1);
/// An unchanged report is repeated this often (control expires silent proxies).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

pub struct BreakerReporter {
    pub shared: Arc<Shared>,
    /// `{control}/internal/v1/proxies/{proxy id}/breakers`.
    pub url: String,
    pub secret: Zeroizing<String>,
    pub http: reqwest::Client,
}

impl BreakerReporter {
    pub fn new(
        shared: Arc<Shared>,
        control_url: &str,
        proxy_id: &str,
        secret: Zeroizing<String>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .build()?;
        let id: String = proxy_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(BreakerReporter {
            shared,
            url: format!(
                "{}/internal/v1/proxies/{id}/breakers",
                control_url.trim_end_matches('/')
            ),
            secret,
            http,
        })
    }

    /// The current report, sorted so that equal states compare equal.
    fn current(&self) -> BreakerReport {
        let mut breakers: Vec<BreakerStatus> = self
            .shared
            .breakers
            .states(tokio::time::Instant::now())
            .into_iter()
            .map(|(deployment, state)| BreakerStatus {
                deployment,
                state: state.as_str().to_owned(),
            })
            .collect();
        breakers.sort_by(|a, b| a.deployment.cmp(&b.deployment));
        BreakerReport { breakers }
    }

    async fn send(&self, report: &BreakerReport) -> bool {
        self.http
            .put(&self.url)
            .bearer_auth(self.secret.as_str())
            .json(report)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

#[async_trait]
impl BackgroundService for BreakerReporter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last: Option<BreakerReport> = None;
        let mut sent_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
            let report = self.current();
            if last.as_ref() == Some(&report) && sent_at.elapsed() < HEARTBEAT {
                continue;
            }
            if self.send(&report).await {
                last = Some(report);
                sent_at = tokio::time::Instant::now();
            }
        }
    }
}
