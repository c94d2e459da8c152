//! Control mode: keeps the routing table in sync with the control service (`design.md` §4).
//!
//! A pingora background service. It loads `GET /internal/v1/snapshot` (public keys, projects,
//! providers with keys sealed under the transit key derived from `IRON_PROXY_SECRET`, revoked
//! tokens), publishes it as a new [`Routing`], then follows `GET /internal/v1/events` (SSE,
//! resumed with `Last-Event-ID`): a `token_revoked` event is applied at once, a
//! `config_changed` event triggers a new snapshot. When the stream breaks it re-fetches the
//! snapshot every second until it reconnects (polling fallback); requests keep being served
//! from the last table the whole time, so a control outage never stops traffic.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use iron_core::sse::SseDecoder;
use iron_core::transit::{TransitKey, transit_key};
use iron_core::wire::{ControlEvent, DeploymentTimeouts, Snapshot};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use zeroize::Zeroizing;

use crate::config::{ControlSource, TimeoutOverrides};
use crate::proxy::Shared;
use crate::state::{Deployment, Project, Routing};

/// Wait between reconnect attempts (and snapshot polls) while control is unreachable.
const RETRY: Duration = Duration::from_secs(1);

/// A provider's timeouts from the snapshot as [`TimeoutOverrides`]; a 0 (never sent by
/// control, which accepts 1..=600000 ms) counts as unset rather than as "time out at once".
fn overrides(t: &DeploymentTimeouts) -> TimeoutOverrides {
    let ms = |v: Option<u64>| v.filter(|&ms| ms > 0).map(Duration::from_millis);
    TimeoutOverrides {
        connect: ms(t.connect_ms),
        first_byte: ms(t.first_byte_ms),
        idle: ms(t.idle_ms),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("control request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("control answered {0}")]
    Status(u16),
    #[error("provider `{0}`: cannot open its key (is IRON_PROXY_SECRET the one control uses?)")]
    Unseal(String),
    #[error("invalid snapshot: {0}")]
    Invalid(String),
}

pub struct ControlSync {
    shared: Arc<Shared>,
    url: String,
    secret: Zeroizing<String>,
    transit: TransitKey,
    http: reqwest::Client,
}

impl std::fmt::Debug for ControlSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSync")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ControlSync {
    pub fn new(shared: Arc<Shared>, source: &ControlSource) -> Result<Self, SyncError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .build()?;
        Ok(ControlSync {
            shared,
            url: source.url.clone(),
            transit: transit_key(source.proxy_secret.as_bytes()),
            secret: source.proxy_secret.clone(),
            http,
        })
    }

    /// Builds a routing table from a snapshot, opening every provider key.
    pub fn routing_from(&self, snap: Snapshot) -> Result<Routing, SyncError> {
        let mut deployments = Vec::with_capacity(snap.providers.len());
        for p in snap.providers {
            let key = self
                .transit
                .open(&p.api_key, p.id.as_bytes())
                .map_err(|_| SyncError::Unseal(p.id.clone()))?;
            let key =
                String::from_utf8(key.to_vec()).map_err(|_| SyncError::Unseal(p.id.clone()))?;
            let timeouts = overrides(&p.timeouts);
            let mut d = Deployment::new(
                p.id,
                p.name,
                p.kind,
                &p.base_url,
                p.models,
                p.priority,
                Zeroizing::new(key),
            )
            .map_err(SyncError::Invalid)?;
            d.timeouts = timeouts;
            deployments.push(d);
        }
        let projects = snap
            .projects
            .into_iter()
            .map(|p| Project {
                id: p.id,
                name: p.name,
                providers: p.providers,
                allowed_models: p.allowed_models,
                pii: Arc::new(p.pii.unwrap_or_default()),
                rate_limits: p.rate_limits,
            })
            .collect();
        let revoked: HashSet<String> = snap.revoked.into_iter().collect();
        Routing::new(snap.version, &snap.keys, projects, deployments, revoked)
            .map_err(|e| SyncError::Invalid(e.to_string()))
    }

    /// Fetches and publishes a snapshot; returns its version.
    pub async fn refresh(&self) -> Result<u64, SyncError> {
        let resp = self
            .http
            .get(format!("{}/internal/v1/snapshot", self.url))
            .bearer_auth(self.secret.as_str())
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(SyncError::Status(resp.status().as_u16()));
        }
        let mut snap: Snapshot = resp.json().await?;
        let prices = std::mem::take(&mut snap.prices);
        let routing = self.routing_from(snap)?;
        if let Ok(table) = iron_core::pricing::PriceTable::embedded() {
            self.shared.prices.store(std::sync::Arc::new(
                table.with_overrides(prices.into_iter().collect()),
            ));
        }
        let version = routing.version;
        self.shared.publish(routing);
        Ok(version)
    }

    /// Follows the event stream until it ends or fails. Returns the last version seen.
    async fn follow(&self, mut version: u64) -> Result<u64, SyncError> {
        let resp = self
            .http
            .get(format!("{}/internal/v1/events", self.url))
            .bearer_auth(self.secret.as_str())
            .header("Last-Event-ID", version.to_string())
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(SyncError::Status(resp.status().as_u16()));
        }
        let mut body = resp.bytes_stream();
        self.shared.metrics.control_connected.set(1);
        let mut decoder = SseDecoder::with_max_event_bytes(1024 * 1024);
        // Keep-alives arrive every 15 s; silence for much longer means a dead connection.
        while let Ok(next) = tokio::time::timeout(Duration::from_secs(45), body.next()).await {
            let Some(chunk) = next else { break };
            decoder.push(&chunk?);
            while let Ok(Some(ev)) = decoder.next_event() {
                if ev.is_comment_only() {
                    continue;
                }
                let id = ev
                    .id
                    .as_deref()
                    .and_then(|i| std::str::from_utf8(i).ok())
                    .and_then(|i| i.parse().ok());
                match serde_json::from_slice::<ControlEvent>(&ev.data) {
                    Ok(ControlEvent::TokenRevoked { token_id }) => {
                        let current = self.shared.routing.load();
                        if let Some(next) = current.with_revoked(&token_id) {
                            self.shared.publish(next);
                        }
                        tracing::info!(token = %token_id, "token revoked");
                    }
                    Ok(ControlEvent::ConfigChanged) | Err(_) => {
                        version = self.refresh().await?;
                    }
                }
                if let Some(id) = id {
                    version = version.max(id);
                }
            }
        }
        Ok(version)
    }
}

#[async_trait]
impl BackgroundService for ControlSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut version = 0;
        let mut logged_down = false;
        loop {
            let round = async {
                version = self.refresh().await?;
                self.follow(version).await
            };
            tokio::select! {
                result = round => match result {
                    Ok(v) => {
                        version = v;
                        self.shared.metrics.control_connected.set(0);
                    }
                    Err(e) => {
                        self.shared.metrics.control_connected.set(0);
                        if !logged_down {
                            tracing::warn!(error = %e, "control unreachable; serving from the last routing table");
                            logged_down = true;
                        }
                    }
                },
                _ = shutdown.changed() => return,
            }
            if self.shared.is_ready() && logged_down {
                logged_down = false;
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_timeouts_become_deployment_overrides() {
        let t = DeploymentTimeouts {
            connect_ms: Some(250),
            first_byte_ms: Some(1_500),
            idle_ms: None,
        };
        let o = overrides(&t);
        assert_eq!(o.connect, Some(Duration::from_millis(250)));
        assert_eq!(o.first_byte, Some(Duration::from_millis(1_500)));
        assert_eq!(o.idle, None);
        let zero = DeploymentTimeouts {
            first_byte_ms: Some(0),
            ..Default::default()
        };
        assert_eq!(overrides(&zero), TimeoutOverrides::default());
        assert_eq!(
            overrides(&DeploymentTimeouts::default()),
            TimeoutOverrides::default()
        );
    }
}
