//! Stage 2, *route*: which API the agent called, and which deployments may serve it.
//!
//! [`ApiRoute::classify`] maps method + path to an agent route (§3); [`select`] filters the
//! routing table's deployments by API family, the project's provider bindings and the
//! requested model's patterns, highest priority first (§2 routing default).

use std::sync::Arc;

use http::Method;
use iron_core::wire::ApiFamily;
use iron_core::{ErrorCode, WireShape};
use pingora_http::RequestHeader;

use crate::error::ProxyError;
use crate::state::{Deployment, Project, Routing};

/// The agent-facing routes of §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiRoute {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Models,
    Messages,
    CountTokens,
    /// Any other `/v1/*` path of a provider: forwarded with the key swapped, zero-cost.
    PassThrough(ApiFamily),
}

impl ApiRoute {
    /// Classifies a request; `None` for paths Iron does not serve.
    pub fn classify(req: &RequestHeader) -> Option<ApiRoute> {
        let path = req.uri.path();
        let post = req.method == Method::POST;
        let route = match path {
            "/v1/chat/completions" if post => ApiRoute::ChatCompletions,
            "/v1/completions" if post => ApiRoute::Completions,
            "/v1/embeddings" if post => ApiRoute::Embeddings,
            "/v1/responses" if post => ApiRoute::Responses,
            "/v1/messages" if post => ApiRoute::Messages,
            "/v1/messages/count_tokens" if post => ApiRoute::CountTokens,
            p if req.method == Method::GET
                && (p == "/v1/models" || p.starts_with("/v1/models/")) =>
            {
                ApiRoute::Models
            }
            p if p.starts_with("/v1/") => {
                let anthropic = req.headers.contains_key("anthropic-version")
                    || (req.headers.contains_key("x-api-key")
                        && !req.headers.contains_key(http::header::AUTHORIZATION));
                ApiRoute::PassThrough(if anthropic {
                    ApiFamily::Anthropic
                } else {
                    ApiFamily::OpenAi
                })
            }
            _ => return None,
        };
        Some(route)
    }

    pub fn family(self) -> ApiFamily {
        match self {
            ApiRoute::Messages | ApiRoute::CountTokens => ApiFamily::Anthropic,
            ApiRoute::PassThrough(f) => f,
            _ => ApiFamily::OpenAi,
        }
    }

    pub fn shape(self) -> WireShape {
        match self.family() {
            ApiFamily::OpenAi => WireShape::OpenAi,
            ApiFamily::Anthropic => WireShape::Anthropic,
        }
    }

    /// Routes whose JSON body Iron reads, inspects and meters.
    pub fn inspects_body(self) -> bool {
        !matches!(self, ApiRoute::Models | ApiRoute::PassThrough(_))
    }

    /// Low-cardinality label.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRoute::ChatCompletions => "chat_completions",
            ApiRoute::Completions => "completions",
            ApiRoute::Embeddings => "embeddings",
            ApiRoute::Responses => "responses",
            ApiRoute::Models => "models",
            ApiRoute::Messages => "messages",
            ApiRoute::CountTokens => "count_tokens",
            ApiRoute::PassThrough(_) => "passthrough",
        }
    }
}

/// Deployments that may serve `model` for `project`, best first.
pub fn select(
    routing: &Routing,
    project: &Project,
    route: ApiRoute,
    model: Option<&str>,
) -> Result<Vec<Arc<Deployment>>, ProxyError> {
    if let Some(m) = model
        && !project.allows_model(m)
    {
        return Err(ProxyError::new(
            ErrorCode::ForbiddenModel,
            format!("model `{}` is not allowed for this project", sanitize(m)),
        ));
    }
    let family = route.family();
    let found: Vec<Arc<Deployment>> = routing
        .deployments
        .iter()
        .filter(|d| d.family() == family && project.may_use(d) && model.is_none_or(|m| d.serves(m)))
        .cloned()
        .collect();
    if found.is_empty() {
        let what = match model {
            Some(m) => format!(
                "no provider serves model `{}` for this project",
                sanitize(m)
            ),
            None => "no provider of this API family is configured for this project".to_owned(),
        };
        return Err(ProxyError::new(ErrorCode::NotFound, what));
    }
    Ok(found)
}

/// Model names are echoed in errors: keep them short and printable.
fn sanitize(model: &str) -> String {
    model
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(100)
        .collect()
}
