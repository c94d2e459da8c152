//! The HTTP surface of control: `/v1` REST (API keys), `/internal/v1` (proxies),
//! `/health`, `/ready` and `/openapi.json`.
//!
//! Routes are registered through `utoipa-axum`, so every route is in the OpenAPI document
//! by construction (the auth-matrix test walks that document). Layers, outermost first:
//! request id + request log (`middleware::observe`), body limit, then per group the API-key
//! or proxy-secret check. See `middleware` for the order and what each layer does.

pub mod api_keys;
pub mod audit;
pub mod budgets;
pub mod dashboard;
pub mod events;
pub mod extract;
pub mod health;
pub mod internal;
pub mod leases;
pub mod middleware;
pub mod pricing;
pub mod projects;
pub mod providers;
pub mod ratelimits;
pub mod session;
pub mod signing_keys;
pub mod stats;
pub mod tokens;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::model::Project;
use crate::service::Service;
use extract::Caller;

#[derive(OpenApi)]
#[openapi(
    info(title = "Iron control API", description = "Projects, IC tokens, providers and budgets. \
        Authenticate with `Authorization: Bearer iron_ak_…`; errors are \
        `{\"error\":{\"type\",\"message\",\"code\"}}`."),
    modifiers(&SecuritySchemes),
    tags(
        (name = "projects"), (name = "tokens"), (name = "providers"), (name = "budgets"),
        (name = "usage"), (name = "pricing"), (name = "audit"), (name = "events"),
        (name = "api-keys"), (name = "signing-keys"), (name = "internal", description = "Proxy API"),
        (name = "health"), (name = "session", description = "Dashboard sign-in"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An Iron API key (iron_ak_…)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "proxy_secret",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("IRON_PROXY_SECRET"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    session::COOKIE,
                    "Dashboard session (POST /v1/session); mutations need a same-origin Origin",
                ),
            )),
        );
    }
}

fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(projects::list_projects, projects::create_project))
        .routes(routes!(
            projects::get_project,
            projects::patch_project,
            projects::delete_project
        ))
        .routes(routes!(projects::set_budget))
        .routes(routes!(tokens::list_project_tokens, tokens::mint_token))
        .routes(routes!(tokens::list_tokens))
        .routes(routes!(tokens::get_token, tokens::revoke_token))
        .routes(routes!(
            providers::list_providers,
            providers::create_provider
        ))
        .routes(routes!(
            providers::get_provider,
            providers::patch_provider,
            providers::delete_provider
        ))
        .routes(routes!(providers::rotate_key))
        .routes(routes!(budgets::get_budget))
        .routes(routes!(budgets::list_usage))
        .routes(routes!(stats::overview))
        .routes(routes!(stats::usage_series))
        .routes(routes!(pricing::list_pricing))
        .routes(routes!(pricing::set_price))
        .routes(routes!(audit::list_audit))
        .routes(routes!(session::get_session, session::delete_session))
        .routes(routes!(events::dashboard_events))
        .routes(routes!(api_keys::list_api_keys, api_keys::create_api_key))
        .routes(routes!(api_keys::delete_api_key))
        .routes(routes!(signing_keys::list_signing_keys))
        .routes(routes!(signing_keys::rotate_signing_key))
        .routes(routes!(signing_keys::retire_signing_key))
}

fn internal_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(internal::keys))
        .routes(routes!(internal::snapshot))
        .routes(routes!(internal::events))
        .routes(routes!(internal::put_breakers))
        .routes(routes!(ratelimits::take))
}

/// The lease routes (proxy secret, larger body limit).
fn lease_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(leases::grant))
        .routes(routes!(leases::release))
        .routes(routes!(leases::extend))
        .routes(routes!(leases::report))
}

fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        // Sign-in has no key yet: outside the API-key layer, with its own failure limits.
        .routes(routes!(session::create_session))
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
}

fn assemble(state: Option<&AppState>) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let mut v1 = v1_routes();
    let mut internal = internal_routes();
    let mut lease = lease_routes();
    if let Some(state) = state {
        lease = lease
            .layer(DefaultBodyLimit::max(state.svc.max_report_bytes))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                middleware::require_proxy_secret,
            ));
        v1 = v1.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::require_api_key,
        ));
        internal = internal.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::require_proxy_secret,
        ));
    }
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(v1)
        .merge(internal)
        .merge(lease)
        .merge(public_routes())
        .split_for_parts()
}

/// The OpenAPI document served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    assemble(None).1
}

/// The complete router. Tests drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    let (router, doc) = assemble(Some(&state));
    let doc = Arc::new(doc);
    let max_body = state.svc.max_body_bytes;
    router
        .route_layer(axum::middleware::from_fn(middleware::tag_route))
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(dashboard::fallback)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed.into_response() })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .with_state(state)
}

/// The project a listing covers: the named one (checked against the caller's scope), the
/// caller's own project for project keys, or every project (`None`).
pub(crate) async fn project_filter(
    svc: &Service,
    caller: &Caller,
    project: Option<&str>,
) -> Result<Option<String>, ApiError> {
    Ok(match (project, caller.project_scope()) {
        (Some(p), _) => Some(scoped_project(svc, caller, p).await?.id),
        (None, Some(own)) => Some(own.to_owned()),
        (None, None) => None,
    })
}

/// Resolves a project path parameter for `caller`: project-scoped keys may only name their
/// own project (403 otherwise, without revealing whether the other one exists).
pub(crate) async fn scoped_project(
    svc: &Service,
    caller: &Caller,
    param: &str,
) -> Result<Project, ApiError> {
    if let Some(own) = caller.project_scope() {
        return match svc.store.get_project(own).await? {
            Some(p) if p.id == param || p.name == param => Ok(p),
            _ => Err(ApiError::forbidden(format!(
                "this API key is limited to project {own}"
            ))),
        };
    }
    svc.resolve_project(param).await
}
