//! `/v1/audit`: the audit log, newest first, with filters — one page (`List`), or with
//! `?format=json|csv` an export streaming every matching event (pages of 500 read from
//! the store as the body is written, at most [`EXPORT_CAP`] events). Read-only: the log is
//! append-only through the API (other methods are 405).

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

use super::budgets::parse_time;
use super::extract::{ApiQuery, GlobalReader, PageQuery};
use super::views::{AuditView, List};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::{AuditFilter, PageRequest};

/// Most events in one export; narrow with `since`/`until` for more.
pub const EXPORT_CAP: usize = 100_000;
/// Store page size while exporting.
const EXPORT_PAGE: usize = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// API key id of the caller (`session:<key id>` for dashboard sessions).
    pub actor: Option<String>,
    /// e.g. `project.create`.
    pub action: Option<String>,
    /// Object id.
    pub target: Option<String>,
    /// Project id or name.
    pub project: Option<String>,
    /// RFC 3339 time or duration ago (`24h`).
    pub since: Option<String>,
    pub until: Option<String>,
    /// Page size 1–500; with `format`, the most events to export (default and max 100000).
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// `json` (a JSON array) or `csv`: export every matching event instead of one page.
    pub format: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = List<AuditView>,
            description = "One page; with ?format=json a JSON array of every matching event, with ?format=csv CSV"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_audit(
    State(s): State<AppState>,
    _reader: GlobalReader,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let format = match q.format.as_deref() {
        None => None,
        Some("json") => Some(Format::Json),
        Some("csv") => Some(Format::Csv),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "format: expected json or csv",
            ));
        }
    };
    let project = match &q.project {
        Some(p) if !p.starts_with("prj_") => Some(s.svc.resolve_project(p).await?.id),
        other => other.clone(),
    };
    let filter = AuditFilter {
        actor: q.actor,
        action: q.action,
        target: q.target,
        project,
        since: q
            .since
            .as_deref()
            .map(|v| parse_time("since", v))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|v| parse_time("until", v))
            .transpose()?,
    };
    let Some(format) = format else {
        let page = PageQuery {
            limit: q.limit,
            cursor: q.cursor.clone(),
        }
        .page()?;
        let page = s.svc.store.list_audit(&filter, &page).await?;
        return Ok(axum::Json(List {
            data: page.items.into_iter().map(AuditView::from).collect(),
            next_cursor: page.next_cursor,
        })
        .into_response());
    };
    let cap = match q.limit {
        None => EXPORT_CAP,
        Some(n) if (1..=EXPORT_CAP as u32).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit: with format, 1 to {EXPORT_CAP}"),
            ));
        }
    };
    if q.cursor.as_ref().is_some_and(|c| c.len() > 200) {
        return Err(ApiError::bad_request("invalid_query", "cursor is invalid"));
    }
    Ok(export(s, filter, q.cursor, cap, format))
}

/// State of an export stream.
struct Export {
    s: AppState,
    filter: AuditFilter,
    cursor: Option<String>,
    left: usize,
    written: usize,
    format: Format,
    done: bool,
}

fn export(
    s: AppState,
    filter: AuditFilter,
    cursor: Option<String>,
    cap: usize,
    format: Format,
) -> Response {
    let state = Export {
        s,
        filter,
        cursor,
        left: cap,
        written: 0,
        format,
        done: false,
    };
    let head = match format {
        Format::Json => "[".to_owned(),
        Format::Csv => format!("{}\n", CSV_COLUMNS.join(",")),
    };
    let body = futures::stream::once(async move { Ok::<_, ApiError>(head) }).chain(
        futures::stream::try_unfold(state, |mut st| async move {
            if st.done {
                return Ok(None);
            }
            let page = PageRequest {
                limit: EXPORT_PAGE.min(st.left),
                cursor: st.cursor.take(),
            };
            let page = st.s.svc.store.list_audit(&st.filter, &page).await?;
            let mut out = String::new();
            for e in page.items.into_iter().take(st.left) {
                let v = AuditView::from(e);
                match st.format {
                    Format::Json => {
                        if st.written > 0 {
                            out.push(',');
                        }
                        out.push_str(
                            &serde_json::to_string(&v)
                                .map_err(|e| ApiError::Internal(format!("audit export: {e}")))?,
                        );
                    }
                    Format::Csv => csv_row(&mut out, &v),
                }
                st.written += 1;
                st.left -= 1;
            }
            st.cursor = page.next_cursor;
            if st.cursor.is_none() || st.left == 0 {
                st.done = true;
                if st.format == Format::Json {
                    out.push(']');
                }
            }
            Ok(Some((out, st)))
        }),
    );
    let body = body.map(|r| {
        r.map(bytes::Bytes::from)
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    let content_type = match format {
        Format::Json => "application/json",
        Format::Csv => "text/csv; charset=utf-8",
    };
    (
        [
            (http::header::CONTENT_TYPE, content_type),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// CSV header of the export.
pub const CSV_COLUMNS: [&str; 11] = [
    "id",
    "time",
    "actor",
    "action",
    "target",
    "project",
    "request_id",
    "source_ip",
    "details",
    "before",
    "after",
];

/// A CSV field: quoted when needed; a leading `= + - @` (spreadsheet formula) is
/// prefixed with `'` so opening the export cannot run a formula.
fn csv_field(out: &mut String, v: &str) {
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&v);
    }
}

fn json_cell(v: &serde_json::Value) -> String {
    if v.is_null() {
        String::new()
    } else {
        v.to_string()
    }
}

fn csv_row(out: &mut String, e: &AuditView) {
    let fields = [
        e.id.clone(),
        e.time.clone(),
        e.actor.clone(),
        e.action.clone(),
        e.target.clone(),
        e.project.clone().unwrap_or_default(),
        e.request_id.clone(),
        e.source_ip.clone().unwrap_or_default(),
        json_cell(&e.details),
        json_cell(&e.before),
        json_cell(&e.after),
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push('\n');
}
