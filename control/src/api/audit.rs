//! `/v1/audit`: the audit log, newest first, with filters.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::budgets::parse_time;
use super::extract::{ApiQuery, GlobalReader, PageQuery};
use super::views::{AuditView, List};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::AuditFilter;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// API key id of the caller.
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
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    security(("api_key" = [])),
    responses((status = 200, body = List<AuditView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_audit(
    State(s): State<AppState>,
    _reader: GlobalReader,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<List<AuditView>>, ApiError> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .page()?;
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
    let page = s.svc.store.list_audit(&filter, &page).await?;
    Ok(Json(List {
        data: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}
