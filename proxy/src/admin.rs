//! The admin listener (default 127.0.0.1:9090): `/metrics`, `/healthz`, `/readyz`.
//!
//! Separate from the agent port so operators can scrape and probe without an IC token and
//! agents can never reach it through the proxy.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::proxy::Shared;

pub struct AdminApp {
    pub shared: Arc<Shared>,
}

fn text(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

/// Gauges computed at scrape time from live state (breakers, lease slices).
fn refresh_gauges(shared: &Shared) {
    let m = &shared.metrics;
    for (id, state) in shared.breakers.states(tokio::time::Instant::now()) {
        m.breaker_state
            .with_label_values(&[id.as_str()])
            .set(state.as_gauge());
    }
    let mut by_project = std::collections::HashMap::<String, u64>::new();
    for slot in shared.ledger.slots() {
        *by_project
            .entry(m.project(&slot.project_id).to_owned())
            .or_default() += slot.available().micros();
    }
    for (project, left) in by_project {
        m.lease_remaining
            .with_label_values(&[project.as_str()])
            .set(i64::try_from(left).unwrap_or(i64::MAX));
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => {
                refresh_gauges(&self.shared);
                text(
                    200,
                    "text/plain; version=0.0.4",
                    self.shared.metrics.render(),
                )
            }
            "/healthz" => text(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" if self.shared.is_ready() => text(200, "text/plain", b"ready\n".to_vec()),
            "/readyz" => text(
                503,
                "text/plain",
                b"not ready: no routing data yet\n".to_vec(),
            ),
            _ => text(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}
