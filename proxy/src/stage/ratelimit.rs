//! Stage 4, *ratelimit*: RPM/TPM limits of the token and its project
//! (`docs/decisions/0003-rate-limits.md`), after auth/route/read and before budget.
//!
//! The token's limits come from its `rpm`/`tpm` claims, the project's from the routing table
//! (static config or control's snapshot); both apply, so the stricter wins. Unlimited scopes
//! are skipped without any call. Requests take 1 unit of each `requests` counter; the
//! prompt's tokens (counted exactly, as the budget stage does, which reuses the count) are
//! taken from each `tokens` counter, and the output tokens are charged at settle
//! ([`settle`]). Over a limit → 429 `rate_limited` with `Retry-After` and OpenAI's
//! `x-ratelimit-*` headers (also sent on the answers of limited routes). Routes that cost
//! nothing (model lists, token counting, pass-through) are not limited.

use std::sync::Arc;

use iron_core::ErrorCode;
use iron_core::meter::Meter;
use iron_core::ratelimit::{RateKind, RateLimits};

use crate::ctx::RequestCtx;
use crate::error::ProxyError;
use crate::proxy::Shared;
use crate::ratelimit::{Check, ScopeKind};
use crate::stage::read::RequestBody;
use crate::stage::route::ApiRoute;
use crate::state::Project;

/// The checks of a request: token and project, requests and tokens, where limited.
pub fn checks(
    token_id: &str,
    token: RateLimits,
    project: &Project,
    prompt_tokens: u64,
) -> Vec<Check> {
    let prj: Arc<str> = Arc::from(project.id.as_str());
    let mut out = Vec::new();
    let scopes = [
        (ScopeKind::Token, format!("token:{token_id}"), token),
        (
            ScopeKind::Project,
            format!("project:{}", project.id),
            project.rate_limits,
        ),
    ];
    for (scope_kind, scope, limits) in scopes {
        let scope: Arc<str> = Arc::from(scope);
        for kind in [RateKind::Requests, RateKind::Tokens] {
            if let Some(limit) = limits.get(kind) {
                out.push(Check {
                    scope_kind,
                    scope: scope.clone(),
                    project: prj.clone(),
                    kind,
                    limit,
                    need: match kind {
                        RateKind::Requests => 1,
                        RateKind::Tokens => prompt_tokens.max(1),
                    },
                });
            }
        }
    }
    out
}

/// Runs the stage.
pub async fn admit(
    shared: &Shared,
    ctx: &mut RequestCtx,
    route: ApiRoute,
    project: &Project,
    body: &RequestBody,
) -> Result<(), ProxyError> {
    if matches!(
        route,
        ApiRoute::Models | ApiRoute::CountTokens | ApiRoute::PassThrough(_)
    ) {
        return Ok(());
    }
    let Some(claims) = ctx.claims.clone() else {
        return Ok(());
    };
    let token = claims.rate_limits();
    if token.is_none() && project.rate_limits.is_none() {
        return Ok(());
    }
    let mut prompt = 0;
    if token.tpm.is_some() || project.rate_limits.tpm.is_some() {
        if let Some(json) = body.json.as_ref() {
            prompt = if shared.features.metering {
                Meter::global().estimate_prompt(json)
            } else {
                Meter::estimate_prompt_fast(json)
            };
        }
        ctx.estimated_input_tokens = prompt;
    }
    let checks = checks(&claims.sub, token, project, prompt);
    match shared.rate.admit(&checks).await {
        Ok(a) => {
            if a.fail_open {
                shared.metrics.rate_limit_fail_open.inc();
            }
            ctx.rate_headers = a.headers;
            ctx.rate_token_checks = a.token_checks;
            Ok(())
        }
        Err(l) => {
            shared
                .metrics
                .rate_limited
                .with_label_values(&[l.check.scope_kind.as_str(), l.check.kind.as_str()])
                .inc();
            ctx.rate_headers = l.headers;
            let secs = u64::try_from(l.retry_after.as_millis().div_ceil(1000))
                .unwrap_or(60)
                .max(1);
            let what = match l.check.kind {
                RateKind::Requests => "requests",
                RateKind::Tokens => "tokens",
            };
            Err(ProxyError::new(
                ErrorCode::RateLimited,
                format!(
                    "rate limit of {} {what} per minute reached for this {}; retry in {secs}s",
                    l.check.limit,
                    l.check.scope_kind.as_str()
                ),
            )
            .with_retry_after(secs))
        }
    }
}

/// Part of stage 9: charges the answer's output tokens to the request's `tokens` counters.
pub fn settle(shared: &Shared, ctx: &mut RequestCtx) {
    let checks = std::mem::take(&mut ctx.rate_token_checks);
    if checks.is_empty() {
        return;
    }
    let output = ctx
        .usage
        .map_or(ctx.metered_output_tokens, |u| u.output_tokens);
    shared.rate.settle(&checks, output);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(limits: RateLimits) -> Project {
        Project {
            id: "prj_1".into(),
            name: "p".into(),
            providers: vec![],
            allowed_models: vec![],
            pii: Arc::default(),
            rate_limits: limits,
        }
    }

    #[test]
    fn only_limited_counters_are_checked() {
        assert!(checks("tok_1", RateLimits::NONE, &project(RateLimits::NONE), 50).is_empty());
        let c = checks(
            "tok_1",
            RateLimits {
                rpm: Some(60),
                tpm: None,
            },
            &project(RateLimits {
                rpm: None,
                tpm: Some(1000),
            }),
            50,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(&*c[0].scope, "token:tok_1");
        assert_eq!((c[0].kind, c[0].need), (RateKind::Requests, 1));
        assert_eq!(&*c[1].scope, "project:prj_1");
        assert_eq!(
            (c[1].kind, c[1].need, c[1].limit),
            (RateKind::Tokens, 50, 1000)
        );
    }
}
