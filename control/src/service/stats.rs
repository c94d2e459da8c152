//! Dashboard statistics (`design.md` §9; the Control Panel's Overview, Usage and Tokens
//! pages), computed from the usage log that proxies fill through their lease reports.
//!
//! Where it sits: lease reports arrive at `/internal/v1/leases/…` → the store records the
//! usage events → [`Service::publish_usage`] wakes the dashboards' `/v1/events` streams with
//! a `usage` tick → the dashboard refetches `/v1/stats/*`, which scan the recent usage log
//! here. Scans are bounded ([`SCAN_CAP`] events); a result built from a capped scan says
//! so (`truncated`). Ticks are per replica: a dashboard connected to another control
//! replica sees the change on its next periodic refresh instead.

use std::collections::{BTreeMap, HashMap};

use iron_core::lease::{LeaseReport, UsageEvent};
use iron_core::token::unix_now_ms;

use super::Service;
use crate::error::ApiError;
use crate::model::{PageRequest, UsageFilter};

/// Most usage events one statistics call reads.
pub const SCAN_CAP: usize = 200_000;

/// The window of the Overview's rates (requests/min, error rate, p99 overhead).
const RATE_WINDOW_MS: u64 = 5 * 60_000;
/// The Overview's per-minute series covers this long.
const SERIES_MINUTES: u64 = 60;

/// What a dashboard's `/v1/events` stream receives when a proxy reported usage.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UsageTick {
    pub project_id: String,
    pub cost_microdollars: u64,
    pub requests: u64,
    pub at_ms: u64,
}

/// The recent usage events matching a filter.
#[derive(Debug, Default)]
pub struct Scan {
    pub events: Vec<UsageEvent>,
    /// True when [`SCAN_CAP`] stopped the scan early.
    pub truncated: bool,
}

/// One minute (or bucket) of the Overview series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub t_ms: u64,
    pub requests: u64,
    pub errors: u64,
    pub spend: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Bucket {
    fn add(&mut self, e: &UsageEvent) {
        self.requests += 1;
        self.errors += u64::from(e.status >= 400);
        self.spend += e.cost.micros();
        self.input_tokens += e.input_tokens;
        self.output_tokens += e.output_tokens;
    }
}

/// The Overview page's figures.
#[derive(Debug, Default, PartialEq)]
pub struct Overview {
    pub now_ms: u64,
    pub spend_today: u64,
    pub requests_per_minute: f64,
    /// Fraction of requests answered with a status ≥ 400 (over the rate window).
    pub error_rate: f64,
    pub p99_overhead_ms: Option<f64>,
    /// One bucket per minute, oldest first, the current minute last.
    pub series: Vec<Bucket>,
    pub truncated: bool,
}

/// Per-token totals for the token listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenStats {
    pub spent: u64,
    pub requests: u64,
    pub last_used_ms: u64,
}

/// How usage series are split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Project,
    Model,
}

/// The p-th percentile (0..=100) of `values` (nearest rank); `None` when empty.
fn percentile(values: &mut [u64], p: u64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (values.len() as u64 * p).div_ceil(100).max(1);
    values.get(rank as usize - 1).copied()
}

/// Start of the UTC day containing `now_ms`.
fn day_start_ms(now_ms: u64) -> u64 {
    now_ms - now_ms % 86_400_000
}

/// Computes the Overview from `events` (any order) as seen at `now_ms`.
pub fn overview_of(events: &[UsageEvent], now_ms: u64) -> Overview {
    let minute = now_ms - now_ms % 60_000;
    let first = minute.saturating_sub((SERIES_MINUTES - 1) * 60_000);
    let mut series: Vec<Bucket> = (0..SERIES_MINUTES)
        .map(|i| Bucket {
            t_ms: first + i * 60_000,
            ..Bucket::default()
        })
        .collect();
    let today = day_start_ms(now_ms);
    let recent_from = now_ms.saturating_sub(RATE_WINDOW_MS);
    let (mut spend_today, mut recent, mut recent_errors) = (0u64, 0u64, 0u64);
    let mut overheads = Vec::new();
    for e in events {
        if e.at_ms >= today && e.at_ms <= now_ms {
            spend_today += e.cost.micros();
        }
        if e.at_ms >= first && e.at_ms < minute + 60_000 {
            let i = ((e.at_ms - first) / 60_000) as usize;
            if let Some(b) = series.get_mut(i) {
                b.add(e);
            }
        }
        if e.at_ms > recent_from && e.at_ms <= now_ms {
            recent += 1;
            recent_errors += u64::from(e.status >= 400);
            overheads.extend(e.overhead_us);
        }
    }
    let minutes = RATE_WINDOW_MS as f64 / 60_000.0;
    Overview {
        now_ms,
        spend_today,
        requests_per_minute: recent as f64 / minutes,
        error_rate: if recent == 0 {
            0.0
        } else {
            recent_errors as f64 / recent as f64
        },
        p99_overhead_ms: percentile(&mut overheads, 99).map(|us| us as f64 / 1000.0),
        series,
        truncated: false,
    }
}

/// Buckets `events` by `group` into `bucket_ms` slots from `since_ms` (inclusive) to
/// `until_ms` (exclusive); every series has every slot, so charts line up.
pub fn series_of(
    events: &[UsageEvent],
    group: Group,
    since_ms: u64,
    until_ms: u64,
    bucket_ms: u64,
) -> BTreeMap<String, Vec<Bucket>> {
    let slots = until_ms.saturating_sub(since_ms).div_ceil(bucket_ms) as usize;
    let mut out: BTreeMap<String, Vec<Bucket>> = BTreeMap::new();
    for e in events {
        if e.at_ms < since_ms || e.at_ms >= until_ms {
            continue;
        }
        let key = match group {
            Group::Project => &e.project_id,
            Group::Model => &e.model,
        };
        let buckets = out.entry(key.clone()).or_insert_with(|| {
            (0..slots as u64)
                .map(|i| Bucket {
                    t_ms: since_ms + i * bucket_ms,
                    ..Bucket::default()
                })
                .collect()
        });
        if let Some(b) = buckets.get_mut(((e.at_ms - since_ms) / bucket_ms) as usize) {
            b.add(e);
        }
    }
    out
}

impl Service {
    /// Tells the dashboards' event streams that `report` recorded usage. Cheap when no
    /// dashboard listens.
    pub(crate) fn publish_usage(&self, report: &LeaseReport) {
        if report.events.is_empty() || self.usage_ticks.receiver_count() == 0 {
            return;
        }
        let mut per_project: HashMap<&str, UsageTick> = HashMap::new();
        for e in &report.events {
            let t = per_project
                .entry(e.project_id.as_str())
                .or_insert_with(|| UsageTick {
                    project_id: e.project_id.clone(),
                    cost_microdollars: 0,
                    requests: 0,
                    at_ms: 0,
                });
            t.cost_microdollars += e.cost.micros();
            t.requests += 1;
            t.at_ms = t.at_ms.max(e.at_ms);
        }
        for (_, tick) in per_project {
            // An error only means nobody listens any more.
            let _ = self.usage_ticks.send(tick);
        }
    }

    /// The usage events matching `filter`, walking the store's pages up to [`SCAN_CAP`].
    pub async fn scan_usage(&self, filter: &UsageFilter) -> Result<Scan, ApiError> {
        let mut scan = Scan::default();
        let mut cursor = None;
        loop {
            let page = self
                .store
                .list_usage(
                    filter,
                    &PageRequest {
                        limit: 1_000,
                        cursor,
                    },
                )
                .await?;
            scan.events.extend(page.items);
            if scan.events.len() >= SCAN_CAP {
                scan.events.truncate(SCAN_CAP);
                scan.truncated = page.next_cursor.is_some();
                return Ok(scan);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(scan),
            }
        }
    }

    /// The Overview figures, over every project or one.
    pub async fn overview(&self, project: Option<String>) -> Result<Overview, ApiError> {
        let now_ms = unix_now_ms();
        let since = day_start_ms(now_ms).min(now_ms.saturating_sub(SERIES_MINUTES * 60_000));
        let scan = self
            .scan_usage(&UsageFilter {
                project,
                since_ms: Some(since),
                ..UsageFilter::default()
            })
            .await?;
        let mut o = overview_of(&scan.events, now_ms);
        o.truncated = scan.truncated;
        Ok(o)
    }

    /// Spend, requests and last use per token of `project`.
    pub async fn token_stats(
        &self,
        project: &str,
    ) -> Result<HashMap<String, TokenStats>, ApiError> {
        let scan = self
            .scan_usage(&UsageFilter {
                project: Some(project.to_owned()),
                ..UsageFilter::default()
            })
            .await?;
        let mut out: HashMap<String, TokenStats> = HashMap::new();
        for e in &scan.events {
            let s = out.entry(e.token_id.clone()).or_default();
            s.spent += e.cost.micros();
            s.requests += 1;
            s.last_used_ms = s.last_used_ms.max(e.at_ms);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iron_core::money::Money;

    fn ev(at_ms: u64, cost: u64, status: u16, overhead_us: u64, model: &str) -> UsageEvent {
        UsageEvent {
            id: format!("evt_{at_ms}_{cost}"),
            token_id: "tok_1".into(),
            project_id: if model == "m2" { "prj_b" } else { "prj_a" }.into(),
            provider_id: "prv_1".into(),
            model: model.into(),
            input_tokens: 10,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 5,
            cost: Money(cost),
            status,
            cut_off: false,
            at_ms,
            overhead_us: Some(overhead_us),
        }
    }

    #[test]
    fn percentile_is_nearest_rank() {
        assert_eq!(percentile(&mut [], 99), None);
        assert_eq!(percentile(&mut [7], 99), Some(7));
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut v, 99), Some(99));
        assert_eq!(percentile(&mut v, 50), Some(50));
        assert_eq!(percentile(&mut v, 100), Some(100));
    }

    #[test]
    fn overview_counts_today_recent_rates_and_minutes() {
        // 2026-11-28T10:30:30Z.
        let now = 1_795_861_830_000;
        let events = vec![
            ev(now - 1_000, 100, 200, 300, "m1"),
            ev(now - 2_000, 50, 502, 900, "m1"),
            ev(now - 61_000, 25, 200, 100, "m1"),
            // Outside the 5-minute window but today and inside the hour.
            ev(now - 10 * 60_000, 7, 200, 5_000_000, "m1"),
            // Yesterday: neither today's spend nor the series.
            ev(now - 11 * 3_600_000, 1_000, 200, 1, "m1"),
        ];
        let o = overview_of(&events, now);
        assert_eq!(o.spend_today, 100 + 50 + 25 + 7);
        assert!((o.requests_per_minute - 3.0 / 5.0).abs() < 1e-9);
        assert!((o.error_rate - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(o.p99_overhead_ms, Some(0.9));
        assert_eq!(o.series.len(), 60);
        let last = o.series[59];
        assert_eq!(last.t_ms, now - now % 60_000);
        assert_eq!((last.requests, last.errors, last.spend), (2, 1, 150));
        assert_eq!(o.series[58].spend, 25);
        assert_eq!(o.series[49].spend, 7);
        assert_eq!(o.series.iter().map(|b| b.requests).sum::<u64>(), 4);
    }

    #[test]
    fn empty_overview_has_no_percentile_and_zero_rates() {
        let now = 1_795_861_830_000;
        let o = overview_of(&[], now);
        assert_eq!(o.p99_overhead_ms, None);
        assert_eq!(o.error_rate, 0.0);
        assert_eq!(o.series.len(), 60);
        assert_eq!(o.series[59].t_ms, now - 30_000);
        assert_eq!(o.series[0].t_ms, now - 30_000 - 59 * 60_000);
    }

    #[test]
    fn series_are_dense_and_grouped() {
        let events = vec![
            ev(1_000, 1, 200, 1, "m1"),
            ev(1_500, 2, 200, 1, "m1"),
            ev(3_100, 4, 200, 1, "m2"),
            ev(9_000, 8, 200, 1, "m2"),
        ];
        let by_model = series_of(&events, Group::Model, 1_000, 5_000, 1_000);
        assert_eq!(by_model.len(), 2);
        let m1 = &by_model["m1"];
        assert_eq!(m1.len(), 4);
        assert_eq!((m1[0].t_ms, m1[0].requests, m1[0].spend), (1_000, 2, 3));
        assert_eq!(by_model["m2"][2].spend, 4);
        let by_project = series_of(&events, Group::Project, 1_000, 5_000, 1_000);
        assert_eq!(by_project.keys().collect::<Vec<_>>(), ["prj_a", "prj_b"]);
    }
}
