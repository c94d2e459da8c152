//! Stage 9, *settle*: what the request really cost, charged once, reported once.
//!
//! Usage comes from the provider's own report — the `usage` object of a JSON answer, the
//! forced usage chunk of an OpenAI stream, `response.completed` of the Responses API, or
//! Anthropic's `message_start` + `message_delta` — and is priced with the model's
//! [`ModelPrice`]. It replaces the estimate and the per-chunk charges: the reservation gives
//! back what was not used (or takes the difference), and one [`UsageEvent`] is queued for
//! the reporter. Without a provider report (stream cut off, upstream failed, agent gone) the
//! request costs what was metered: the prompt estimate if the provider got to work on it,
//! plus the output that streamed — never more, and never less than what streamed.

use iron_core::Money;
use iron_core::lease::UsageEvent;
use iron_core::pricing::{ModelPrice, TokenUsage};
use serde_json::Value;

use crate::ctx::RequestCtx;
use crate::proxy::Shared;

/// Reads the usage of a whole JSON answer.
pub fn from_response(body: &Value) -> Option<TokenUsage> {
    body.get("usage").and_then(TokenUsage::from_usage_json)
}

/// Folds the usage carried by one streamed event into `acc`. Anthropic reports input in
/// `message_start` and the running output total in `message_delta`; OpenAI reports
/// everything in one final chunk; the Responses API in `response.completed`.
pub fn accumulate_event(acc: &mut Option<TokenUsage>, event: &Value) {
    let found = event
        .get("usage")
        .filter(|u| !u.is_null())
        .or_else(|| event.get("message").and_then(|m| m.get("usage")))
        .or_else(|| {
            event
                .get("response")
                .and_then(|r| r.get("usage"))
                .filter(|u| !u.is_null())
        });
    let Some(u) = found.and_then(TokenUsage::from_usage_json) else {
        return;
    };
    let is_delta = event.get("type").and_then(Value::as_str) == Some("message_delta");
    match (acc.as_mut(), is_delta) {
        (Some(a), true) => {
            a.output_tokens = u.output_tokens;
            if u.input_tokens > 0 {
                *a = TokenUsage {
                    output_tokens: u.output_tokens,
                    ..u
                };
            }
        }
        _ => *acc = Some(u),
    }
}

/// How the exchange ended, as far as money is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The provider answered in full (its usage report, if any, is authoritative).
    Answered,
    /// The provider never produced an answer (connect error, 5xx before the body, timeout).
    NotServed,
    /// The stream stopped early (cut off, agent gone, upstream broke mid-stream).
    Partial,
}

/// Runs the stage: settles the reservation and queues the usage event.
pub fn settle(shared: &Shared, ctx: &mut RequestCtx, ending: Ending) {
    crate::stage::ratelimit::settle(shared, ctx);
    let Some(reservation) = ctx.reservation.take() else {
        return;
    };
    let price: Option<&ModelPrice> = ctx.price.as_ref();
    let provider_cost = match (ending, ctx.usage, price) {
        (Ending::Answered, Some(u), Some(p)) if ctx.status < 400 => Some(p.cost(&u)),
        _ => None,
    };
    let cost = match (ending, provider_cost) {
        (_, Some(c)) => c,
        (Ending::NotServed, None) => Money::ZERO,
        // A provider error answer costs nothing.
        (Ending::Answered, None) if ctx.status >= 400 => Money::ZERO,
        // No report: what was metered (prompt estimate + output that streamed), priced in
        // one piece like a report (the per-chunk charges round each part up: ≤ 1 µ$ more).
        _ => match (ctx.usage, price) {
            (None, Some(p)) => p.cost(&TokenUsage {
                input_tokens: ctx.estimated_input_tokens,
                output_tokens: ctx.metered_output_tokens,
                ..Default::default()
            }),
            _ => reservation.charged(),
        },
    };
    let usage = ctx.usage.unwrap_or(TokenUsage {
        input_tokens: ctx.estimated_input_tokens,
        output_tokens: ctx.metered_output_tokens,
        ..Default::default()
    });
    let (Some(claims), Some(dep)) = (ctx.claims.as_ref(), ctx.deployment.as_ref()) else {
        reservation.settle(cost, None);
        return;
    };
    let model = ctx
        .body
        .as_ref()
        .and_then(|b| b.model.clone())
        .unwrap_or_default();
    let m = &shared.metrics;
    let model_label = m.model(&model);
    // The tokens metric counts what the provider consumed: nothing when it never served the
    // request or answered with an error (the usage event still carries the estimate).
    let consumed = match ending {
        Ending::NotServed => false,
        Ending::Answered => provider_cost.is_some() || ctx.status < 400,
        Ending::Partial => true,
    };
    if consumed {
        m.tokens
            .with_label_values(&["input", dep.id.as_str(), model_label])
            .inc_by(usage.input_tokens);
        m.tokens
            .with_label_values(&["output", dep.id.as_str(), model_label])
            .inc_by(usage.output_tokens);
    }
    m.cost
        .with_label_values(&[m.project(&claims.prj), dep.id.as_str(), model_label])
        .inc_by(cost.micros());
    ctx.cost = Some(cost);
    let event = UsageEvent {
        id: format!("evt_{}", ulid::Ulid::new()),
        token_id: claims.sub.clone(),
        project_id: claims.prj.clone(),
        provider_id: dep.id.clone(),
        model,
        input_tokens: usage.input_tokens,
        cached_input_tokens: usage.cached_input_tokens,
        cache_write_tokens: usage.cache_write_tokens,
        output_tokens: usage.output_tokens,
        cost,
        status: ctx.status,
        cut_off: ctx.cut_off,
        at_ms: iron_core::token::unix_now_ms(),
        // Time inside Iron: total minus upstream and agent waits (`crate::metrics`).
        overhead_us: Some(crate::metrics::overhead(ctx.started.elapsed(), ctx).as_micros() as u64),
    };
    reservation.settle(cost, Some(event));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_openai_and_anthropic_usage() {
        let chat = json!({"usage":{"prompt_tokens":24,"completion_tokens":8,"prompt_tokens_details":{"cached_tokens":4}}});
        assert_eq!(from_response(&chat), Some(TokenUsage::openai(24, 4, 8)));
        let mut acc = None;
        accumulate_event(
            &mut acc,
            &json!({"type":"message_start","message":{"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024,"output_tokens":2}}}),
        );
        accumulate_event(
            &mut acc,
            &json!({"type":"message_delta","usage":{"output_tokens":89}}),
        );
        assert_eq!(acc, Some(TokenUsage::anthropic(472, 0, 1024, 89)));
        let mut acc = None;
        accumulate_event(&mut acc, &json!({"choices":[],"usage":null}));
        assert_eq!(acc, None);
        accumulate_event(
            &mut acc,
            &json!({"type":"response.completed","response":{"usage":{"input_tokens":12,"output_tokens":3,"total_tokens":15}}}),
        );
        assert_eq!(acc.map(|u| u.output_tokens), Some(3));
    }
}
