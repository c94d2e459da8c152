//! `/v1/projects`: list, create, get, patch, delete, set budget.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use iron_core::pii::PiiPolicy;
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use super::extract::{Admin, ApiJson, ApiQuery, Caller, PageQuery};
use super::scoped_project;
use super::views::{Deleted, List, ProjectView};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::{Budget, Period};
use crate::service::{NewProject, ProjectPatch};
use crate::validate::{ModelPatterns, Name, UsdAmount};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// 1–64 characters `[a-z0-9][a-z0-9-_]*`.
    #[schema(value_type = String, example = "team-a")]
    pub name: Name,
    /// Budget limit in USD, decimal string or number; omitted = unlimited. 0 to 1e9.
    #[schema(value_type = Option<String>, example = "50.00")]
    pub budget_usd: Option<UsdAmount>,
    pub period: Option<Period>,
    /// Provider ids or names this project may use; omitted or empty = all.
    pub providers: Option<Vec<String>>,
    /// Allowed model glob patterns; omitted or empty = all.
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_models: Option<ModelPatterns>,
    /// PII policy (`{"request":{…},"response":{…},"reversible":true}`); omitted = default.
    #[schema(value_type = Option<Object>)]
    pub pii: Option<PiiPolicy>,
}

/// Distinguishes an absent field from an explicit `null`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchProject {
    #[schema(value_type = Option<String>)]
    pub name: Option<Name>,
    /// New limit in USD; `null` removes the limit.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub budget_usd: Option<Option<UsdAmount>>,
    pub period: Option<Period>,
    pub providers: Option<Vec<String>>,
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_models: Option<ModelPatterns>,
    /// New PII policy; `null` resets to the default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub pii: Option<Option<PiiPolicy>>,
    /// `{"rpm":n|null,"tpm":n|null}`: a missing key keeps that limit, `null` removes it;
    /// `"rate_limits":null` removes both.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<super::ratelimits::RateLimitsInput>)]
    pub rate_limits: Option<Option<super::ratelimits::RateLimitsInput>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    /// Limit in USD; `null` = unlimited. Required.
    #[serde(deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, example = "100")]
    pub budget_usd: Option<Option<UsdAmount>>,
    pub period: Option<Period>,
}

fn check_refs(refs: &[String]) -> Result<(), ApiError> {
    if refs.len() > 64 || refs.iter().any(|r| r.is_empty() || r.len() > 64) {
        return Err(ApiError::invalid(
            "providers: at most 64 provider ids or names",
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/projects", tag = "projects", params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = List<ProjectView>), (status = 401, body = ErrorBody)))]
pub async fn list_projects(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<List<ProjectView>>, ApiError> {
    let page = q.page()?;
    if let Some(own) = caller.project_scope() {
        let p = s.svc.store.get_project(own).await?;
        return Ok(Json(List {
            data: p.into_iter().map(Into::into).collect(),
            next_cursor: None,
        }));
    }
    let page = s.svc.store.list_projects(&page).await?;
    Ok(Json(List {
        data: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(post, path = "/v1/projects", tag = "projects", request_body = CreateProject,
    security(("api_key" = [])),
    responses((status = 201, body = ProjectView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_project(
    State(s): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<(StatusCode, Json<ProjectView>), ApiError> {
    let providers = body.providers.unwrap_or_default();
    check_refs(&providers)?;
    let req = NewProject {
        name: body.name,
        budget: Budget {
            limit: body.budget_usd.map(|u| u.0),
            period: body.period.unwrap_or_default(),
        },
        providers,
        allowed_models: body.allowed_models.map(|m| m.0).unwrap_or_default(),
        pii: body.pii,
    };
    let p = s.svc.create_project(&caller.actor(), req).await?;
    Ok((StatusCode::CREATED, Json(p.into())))
}

#[utoipa::path(get, path = "/v1/projects/{project}", tag = "projects",
    params(("project" = String, Path, description = "Project id or name")),
    security(("api_key" = [])),
    responses((status = 200, body = ProjectView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_project(
    State(s): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<Json<ProjectView>, ApiError> {
    Ok(Json(
        scoped_project(&s.svc, &caller, &project).await?.into(),
    ))
}

#[utoipa::path(patch, path = "/v1/projects/{project}", tag = "projects", request_body = PatchProject,
    params(("project" = String, Path, description = "Project id or name")),
    security(("api_key" = [])),
    responses((status = 200, body = ProjectView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn patch_project(
    State(s): State<AppState>,
    Admin(caller): Admin,
    Path(project): Path<String>,
    ApiJson(body): ApiJson<PatchProject>,
) -> Result<Json<ProjectView>, ApiError> {
    if let Some(p) = &body.providers {
        check_refs(p)?;
    }
    let current = s.svc.resolve_project(&project).await?;
    let rate_limits = match &body.rate_limits {
        None => None,
        Some(None) => Some(iron_core::ratelimit::RateLimits::NONE),
        Some(Some(input)) => Some(input.apply(current.rate_limits)?),
    };
    let patch = ProjectPatch {
        rate_limits,
        name: body.name,
        budget_limit: body.budget_usd.map(|o| o.map(|u| u.0)),
        period: body.period,
        providers: body.providers,
        allowed_models: body.allowed_models.map(|m| m.0),
        pii: body.pii,
    };
    Ok(Json(
        s.svc
            .update_project(&caller.actor(), current, patch)
            .await?
            .into(),
    ))
}

#[utoipa::path(put, path = "/v1/projects/{project}/budget", tag = "projects", request_body = SetBudget,
    params(("project" = String, Path, description = "Project id or name")),
    security(("api_key" = [])),
    responses((status = 200, body = ProjectView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_budget(
    State(s): State<AppState>,
    Admin(caller): Admin,
    Path(project): Path<String>,
    ApiJson(body): ApiJson<SetBudget>,
) -> Result<Json<ProjectView>, ApiError> {
    let current = s.svc.resolve_project(&project).await?;
    let limit = body.budget_usd.flatten().map(|u| u.0);
    Ok(Json(
        s.svc
            .set_project_budget(&caller.actor(), current, limit, body.period)
            .await?
            .into(),
    ))
}

#[utoipa::path(delete, path = "/v1/projects/{project}", tag = "projects",
    params(("project" = String, Path, description = "Project id or name")),
    security(("api_key" = [])),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_project(
    State(s): State<AppState>,
    Admin(caller): Admin,
    Path(project): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let p = s.svc.resolve_project(&project).await?;
    s.svc.delete_project(&caller.actor(), &p).await?;
    Ok(Json(Deleted {
        id: p.id,
        deleted: true,
    }))
}
