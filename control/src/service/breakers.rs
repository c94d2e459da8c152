//! The circuit-breaker states proxies report (`PUT /internal/v1/proxies/{id}/breakers`,
//! sent by the proxy's `breaker_report` task on every change and every 10 s), shown per
//! provider in `/v1/providers` and on the Control Panel's Providers page.
//!
//! Kept in this replica's memory only: a report is a few hundred bytes and is repeated
//! every 10 s, so a proxy that stops reporting disappears after [`STALE_MS`]. With several
//! control replicas each shows the proxies that report to it (a roadmap item: keep the
//! board in the store).

use std::collections::HashMap;
use std::sync::Mutex;

use iron_core::wire::BreakerReport;

/// A proxy silent for this long is dropped from the board.
pub const STALE_MS: u64 = 30_000;
/// Most proxies remembered (the oldest report is evicted beyond this).
pub const MAX_PROXIES: usize = 4_096;

/// One deployment's breaker as seen by one proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyBreaker {
    pub proxy: String,
    pub state: String,
    pub updated_ms: u64,
}

/// Latest report per proxy.
#[derive(Debug, Default)]
pub struct BreakerBoard {
    proxies: Mutex<HashMap<String, (BreakerReport, u64)>>,
}

impl BreakerBoard {
    /// Records `proxy`'s report received at `now_ms`.
    pub fn put(&self, proxy: &str, report: BreakerReport, now_ms: u64) {
        let mut m = self
            .proxies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.retain(|_, (_, at)| now_ms.saturating_sub(*at) < STALE_MS);
        if m.len() >= MAX_PROXIES
            && !m.contains_key(proxy)
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(proxy.to_owned(), (report, now_ms));
    }

    /// The breakers of `deployment` on every proxy that reported recently, by proxy id.
    pub fn for_deployment(&self, deployment: &str, now_ms: u64) -> Vec<ProxyBreaker> {
        let m = self
            .proxies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<ProxyBreaker> = m
            .iter()
            .filter(|(_, (_, at))| now_ms.saturating_sub(*at) < STALE_MS)
            .filter_map(|(proxy, (report, at))| {
                report
                    .breakers
                    .iter()
                    .find(|b| b.deployment == deployment)
                    .map(|b| ProxyBreaker {
                        proxy: proxy.clone(),
                        state: b.state.clone(),
                        updated_ms: *at,
                    })
            })
            .collect();
        out.sort_by(|a, b| a.proxy.cmp(&b.proxy));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iron_core::wire::BreakerStatus;

    fn report(states: &[(&str, &str)]) -> BreakerReport {
        BreakerReport {
            breakers: states
                .iter()
                .map(|(d, s)| BreakerStatus {
                    deployment: (*d).into(),
                    state: (*s).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn latest_report_per_proxy_and_stale_proxies_expire() {
        let b = BreakerBoard::default();
        b.put("px_a", report(&[("prv_1", "closed")]), 1_000);
        b.put(
            "px_b",
            report(&[("prv_1", "open"), ("prv_2", "closed")]),
            2_000,
        );
        b.put("px_a", report(&[("prv_1", "half_open")]), 3_000);
        let seen = b.for_deployment("prv_1", 4_000);
        assert_eq!(
            seen.iter()
                .map(|p| (p.proxy.as_str(), p.state.as_str()))
                .collect::<Vec<_>>(),
            [("px_a", "half_open"), ("px_b", "open")]
        );
        assert_eq!(b.for_deployment("prv_2", 4_000).len(), 1);
        assert!(b.for_deployment("prv_9", 4_000).is_empty());
        // px_b last reported at 2 000: gone 30 s later, px_a still there.
        let later = b.for_deployment("prv_1", 2_000 + STALE_MS);
        assert_eq!(
            later.iter().map(|p| p.proxy.as_str()).collect::<Vec<_>>(),
            ["px_a"]
        );
    }
}
