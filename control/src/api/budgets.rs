//! `/v1/budgets/{project}` (status of a project's budget in its current period) and
//! `/v1/usage` (the usage events proxies reported through their leases; JSON pages or CSV).

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::{ApiQuery, Caller};
use super::views::{BudgetView, List, UsageView, usd};
use super::{project_filter, scoped_project};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::{PageRequest, UsageFilter};

#[utoipa::path(get, path = "/v1/budgets/{project}", tag = "budgets",
    params(("project" = String, Path, description = "Project id or name")),
    security(("api_key" = [])),
    responses((status = 200, body = BudgetView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_budget(
    State(s): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<Json<BudgetView>, ApiError> {
    let p = scoped_project(&s.svc, &caller, &project).await?;
    let u = s.svc.budget_usage(&p).await?;
    let remaining = u.remaining(p.budget.limit);
    Ok(Json(BudgetView {
        project: p.id,
        project_name: p.name,
        period: p.budget.period,
        limit_usd: p.budget.limit.map(usd),
        spent_usd: usd(u.spent),
        leased_usd: usd(u.leased),
        remaining_usd: remaining.map(usd),
        limit_microdollars: p.budget.limit.map(|m| m.micros()),
        spent_microdollars: u.spent.micros(),
        leased_microdollars: u.leased.micros(),
        remaining_microdollars: remaining.map(|m| m.micros()),
        active_leases: u.leases,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Project id or name.
    pub project: Option<String>,
    /// Token id.
    pub token: Option<String>,
    /// Exact model name.
    pub model: Option<String>,
    /// Start (inclusive): RFC 3339 time or a duration back from now (`24h`, `7d`).
    pub since: Option<String>,
    /// End (exclusive): RFC 3339 time or a duration back from now.
    pub until: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Page size, 1 to 5000 (default 100). With `format=csv` and no limit, every matching
    /// event is exported.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Largest usage page.
const MAX_USAGE_PAGE: u32 = 5_000;
/// Most rows one CSV export walks (then `x-next-cursor` says where to go on).
const MAX_CSV_ROWS: usize = 1_000_000;

/// The first eight columns are the original export format; the rest were added with the
/// lease protocol.
const CSV_HEADER: &str = "time,project,token,provider,model,input_tokens,output_tokens,cost_usd,\
id,cached_input_tokens,cache_write_tokens,cost_microdollars,status,cut_off\n";

/// Parses `since`/`until`: RFC 3339 or a duration ago.
pub fn parse_time(field: &str, v: &str) -> Result<u64, ApiError> {
    let v = v.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(v) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|_| ApiError::bad_request("invalid_query", format!("{field}: before 1970")));
    }
    let d = humantime::parse_duration(v).map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            format!("{field}: expected an RFC 3339 time or a duration such as 24h"),
        )
    })?;
    Ok(crate::model::now().saturating_sub(d.as_secs()))
}

/// A CSV field, quoted when needed.
fn csv_field(out: &mut String, v: &str) {
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

fn csv_row(out: &mut String, u: &UsageView) {
    let fields = [
        u.time.clone(),
        u.project.clone(),
        u.token.clone(),
        u.provider.clone(),
        u.model.clone(),
        u.input_tokens.to_string(),
        u.output_tokens.to_string(),
        u.cost_usd.clone(),
        u.id.clone(),
        u.cached_input_tokens.to_string(),
        u.cache_write_tokens.to_string(),
        u.cost_microdollars.to_string(),
        u.status.to_string(),
        u.cut_off.to_string(),
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push('\n');
}

#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = List<UsageView>, description = "JSON list, or CSV with ?format=csv"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_usage(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_USAGE_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_USAGE_PAGE}"),
        ));
    }
    if q.cursor.as_ref().is_some_and(|c| c.len() > 200) {
        return Err(ApiError::bad_request("invalid_query", "cursor is invalid"));
    }
    let since = q
        .since
        .as_deref()
        .map(|v| parse_time("since", v))
        .transpose()?;
    let until = q
        .until
        .as_deref()
        .map(|v| parse_time("until", v))
        .transpose()?;
    let csv = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "csv" => true,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "format: expected json or csv",
            ));
        }
    };
    let mut project = project_filter(&s.svc, &caller, q.project.as_deref()).await?;
    if project.is_none()
        && let Some(t) = &q.token
    {
        // Narrow the scan to the token's project (an unknown token matches nothing).
        project = Some(
            s.svc
                .store
                .get_token(t)
                .await?
                .map_or_else(|| "prj_none".to_owned(), |t| t.project_id),
        );
    }
    let filter = UsageFilter {
        project,
        token: q.token.clone(),
        model: q.model.clone(),
        since_ms: since.map(|t| t.saturating_mul(1000)),
        until_ms: until.map(|t| t.saturating_mul(1000)),
    };
    let mut page = PageRequest {
        limit: limit as usize,
        cursor: q.cursor.clone(),
    };
    if !csv {
        let p = s.svc.store.list_usage(&filter, &page).await?;
        return Ok(Json(List {
            data: p.items.into_iter().map(UsageView::from).collect::<Vec<_>>(),
            next_cursor: p.next_cursor,
        })
        .into_response());
    }
    // CSV: one page with an explicit limit, else every matching event.
    let max_rows = if q.limit.is_some() {
        limit as usize
    } else {
        page.limit = MAX_USAGE_PAGE as usize;
        MAX_CSV_ROWS
    };
    let mut out = String::from(CSV_HEADER);
    let mut rows = 0usize;
    let next = loop {
        let p = s.svc.store.list_usage(&filter, &page).await?;
        for e in p.items {
            csv_row(&mut out, &UsageView::from(e));
            rows += 1;
        }
        match p.next_cursor {
            Some(c) if rows < max_rows => page.cursor = Some(c),
            other => break other,
        }
    };
    let mut resp = (
        [(http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        out,
    )
        .into_response();
    if let Some(c) = next
        && let Ok(v) = http::HeaderValue::from_str(&c)
    {
        resp.headers_mut().insert("x-next-cursor", v);
    }
    Ok(resp)
}
