//! `/v1/stats/overview` and `/v1/stats/usage`: the figures of the Control Panel's Overview
//! and Usage pages, computed by [`crate::service::stats`] from the usage log. Project keys
//! see their own project only.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::budgets::parse_time;
use super::extract::{ApiQuery, Caller};
use super::project_filter;
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::UsageFilter;
use crate::service::stats::{Bucket, Group, series_of};
use iron_core::token::unix_now_ms;

/// Most slots one usage series may have.
const MAX_SLOTS: u64 = 1_000;

#[derive(Serialize, ToSchema)]
pub struct MinuteView {
    /// Start of the minute (Unix ms).
    pub t_ms: u64,
    pub requests: u64,
    /// Requests answered with a status ≥ 400.
    pub errors: u64,
    pub spend_microdollars: u64,
}

#[derive(Serialize, ToSchema)]
pub struct OverviewView {
    pub now_ms: u64,
    /// Spend since 00:00 UTC.
    pub spend_today_microdollars: u64,
    /// Average over the last 5 minutes.
    pub requests_per_minute: f64,
    /// Fraction (0..1) of the last 5 minutes' requests answered with a status ≥ 400.
    pub error_rate: f64,
    /// 99th percentile of the time spent in Iron itself (excluding the upstream) over the
    /// last 5 minutes; `null` without samples.
    pub p99_overhead_ms: Option<f64>,
    /// The last 60 minutes, oldest first.
    pub series: Vec<MinuteView>,
    /// True when the usage scan was capped (very busy deployments): figures are partial.
    pub truncated: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// Project id or name (default: every project the key may read).
    pub project: Option<String>,
}

#[utoipa::path(get, path = "/v1/stats/overview", tag = "usage", params(OverviewQuery),
    security(("api_key" = [])),
    responses((status = 200, body = OverviewView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn overview(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<OverviewQuery>,
) -> Result<Json<OverviewView>, ApiError> {
    let project = project_filter(&s.svc, &caller, q.project.as_deref()).await?;
    let o = s.svc.overview(project).await?;
    Ok(Json(OverviewView {
        now_ms: o.now_ms,
        spend_today_microdollars: o.spend_today,
        requests_per_minute: o.requests_per_minute,
        error_rate: o.error_rate,
        p99_overhead_ms: o.p99_overhead_ms,
        series: o
            .series
            .iter()
            .map(|b| MinuteView {
                t_ms: b.t_ms,
                requests: b.requests,
                errors: b.errors,
                spend_microdollars: b.spend,
            })
            .collect(),
        truncated: o.truncated,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageSeriesQuery {
    /// Start: RFC 3339 time or a duration back from now (default `24h`).
    pub since: Option<String>,
    /// End (exclusive): RFC 3339 time or a duration back from now (default now).
    pub until: Option<String>,
    /// Slot width in seconds (default 3600; at most 1000 slots).
    pub bucket_secs: Option<u64>,
    /// `project` (default) or `model`.
    pub group: Option<String>,
    /// Only this project (id or name).
    pub project: Option<String>,
    /// Only this model.
    pub model: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PointView {
    pub t_ms: u64,
    pub requests: u64,
    pub spend_microdollars: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SeriesView {
    /// Project id or model name, per `group`.
    pub key: String,
    pub points: Vec<PointView>,
}

#[derive(Serialize, ToSchema)]
pub struct UsageSeriesView {
    pub bucket_secs: u64,
    pub since_ms: u64,
    pub until_ms: u64,
    pub series: Vec<SeriesView>,
    pub truncated: bool,
}

#[utoipa::path(get, path = "/v1/stats/usage", tag = "usage", params(UsageSeriesQuery),
    security(("api_key" = [])),
    responses((status = 200, body = UsageSeriesView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn usage_series(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UsageSeriesQuery>,
) -> Result<Json<UsageSeriesView>, ApiError> {
    let now_ms = unix_now_ms();
    let since_ms = match q.since.as_deref() {
        Some(v) => parse_time("since", v)?.saturating_mul(1000),
        None => now_ms.saturating_sub(86_400_000),
    };
    let until_ms = match q.until.as_deref() {
        Some(v) => parse_time("until", v)?.saturating_mul(1000),
        None => now_ms + 1,
    };
    if until_ms <= since_ms {
        return Err(ApiError::bad_request(
            "invalid_query",
            "until must be after since",
        ));
    }
    let bucket_secs = q.bucket_secs.unwrap_or(3_600);
    if bucket_secs == 0 || (until_ms - since_ms).div_ceil(bucket_secs * 1000) > MAX_SLOTS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("bucket_secs must be at least 1 and give at most {MAX_SLOTS} slots"),
        ));
    }
    let group = match q.group.as_deref().unwrap_or("project") {
        "project" => Group::Project,
        "model" => Group::Model,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "group: expected project or model",
            ));
        }
    };
    let project = project_filter(&s.svc, &caller, q.project.as_deref()).await?;
    let scan = s
        .svc
        .scan_usage(&UsageFilter {
            project,
            model: q.model.clone(),
            since_ms: Some(since_ms),
            until_ms: Some(until_ms),
            ..UsageFilter::default()
        })
        .await?;
    let series = series_of(&scan.events, group, since_ms, until_ms, bucket_secs * 1000)
        .into_iter()
        .map(|(key, buckets)| SeriesView {
            key,
            points: buckets.iter().map(point).collect(),
        })
        .collect();
    Ok(Json(UsageSeriesView {
        bucket_secs,
        since_ms,
        until_ms,
        series,
        truncated: scan.truncated,
    }))
}

fn point(b: &Bucket) -> PointView {
    PointView {
        t_ms: b.t_ms,
        requests: b.requests,
        spend_microdollars: b.spend,
        input_tokens: b.input_tokens,
        output_tokens: b.output_tokens,
    }
}
