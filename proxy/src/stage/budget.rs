//! Stage 5, *budget admit*: price the request and reserve its estimate from the local lease.
//!
//! The model's price comes from the price table (an unknown model is never free: 400
//! `unknown_model_price`). The estimate is the prompt's tokens (tokenizer, `iron_core::meter`)
//! at the input rate plus a minimum output reservation; it is reserved from the token's lease
//! slice without any network call when the slice covers it ([`crate::ledger`]), and the
//! prompt part is charged at once so a cut-off stream still pays for its prompt. A budget
//! that cannot cover it → 402 `budget_exceeded`. Control unreachable with no lease left →
//! 503 `upstream_unavailable` + `Retry-After` (fail closed: the budget is not known to be
//! gone, so not a 402), or with `budget.fail_mode = "open"` the request is admitted from the
//! project's fail-open allowance until that is used too, then the same 503. Routes that cost
//! nothing (model lists, token counting, pass-through) skip the stage.

use iron_core::ErrorCode;
use iron_core::meter::Meter;

use crate::ctx::RequestCtx;
use crate::error::ProxyError;
use crate::ledger::Refusal;
use crate::proxy::Shared;
use crate::stage::read::RequestBody;
use crate::stage::route::ApiRoute;

/// Runs the stage.
pub async fn admit(
    shared: &Shared,
    ctx: &mut RequestCtx,
    route: ApiRoute,
    body: &RequestBody,
) -> Result<(), ProxyError> {
    if !shared.features.budgets
        || matches!(
            route,
            ApiRoute::Models | ApiRoute::CountTokens | ApiRoute::PassThrough(_)
        )
    {
        return Ok(());
    }
    let (Some(claims), Some(json)) = (ctx.claims.clone(), body.json.as_ref()) else {
        return Ok(());
    };
    let model = body.model.as_deref().unwrap_or("");
    let prices = shared.prices.load();
    let price = *prices
        .price_for(model, None)
        .map_err(|e| ProxyError::new(ErrorCode::UnknownModelPrice, e.to_string()))?;
    // The ratelimit stage may have counted the prompt already (TPM limits).
    let input_tokens = if ctx.estimated_input_tokens > 0 {
        ctx.estimated_input_tokens
    } else if shared.features.metering {
        Meter::global().estimate_prompt(json)
    } else {
        Meter::estimate_prompt_fast(json)
    };
    let output_tokens = if route == ApiRoute::Embeddings {
        0
    } else {
        shared.budget.min_output_tokens
    };
    let input_cost = price.input_cost(input_tokens);
    let estimate = input_cost.saturating_add(price.output_cost(output_tokens));
    if let Some(local) = &shared.local_leases {
        local.bind_token(&claims.sub, &claims.prj);
    }
    let mut reservation = shared.ledger.reserve(&claims.sub, &claims.prj, estimate).await.map_err(|r| {
        if r == Refusal::BudgetExceeded {
            shared.metrics.budget_denials.with_label_values(&[shared.metrics.project(&claims.prj)]).inc();
        }
        match r {
            Refusal::BudgetExceeded => ProxyError::new(ErrorCode::BudgetExceeded, "the budget for this token or project is exhausted"),
            Refusal::TokenRevoked => ProxyError::new(ErrorCode::TokenRevoked, "this Iron token has been revoked"),
            Refusal::Unavailable if shared.budget.fail_open_cap.is_some() => ProxyError::new(
                ErrorCode::UpstreamUnavailable,
                "the budget service is unreachable and this proxy's lease and fail-open allowance are used up",
            )
            .with_retry_after(1),
            Refusal::Unavailable => ProxyError::new(
                ErrorCode::UpstreamUnavailable,
                "the budget service is unreachable and this proxy's lease is used up (fail closed)",
            )
            .with_retry_after(1),
        }
    })?;
    // The prompt is paid up front (it is covered by the reservation just made).
    reservation.try_charge(input_cost);
    reservation.describe(ctx.deployment.as_ref().map_or("", |d| d.id.as_str()), model);
    ctx.estimated_input_tokens = input_tokens;
    ctx.price = Some(price);
    ctx.reservation = Some(reservation);
    Ok(())
}
