//! Stage 5, *redact request*: apply the project's PII policy to the request (`design.md` §7).
//!
//! Only the conversation text is scanned (message contents, text parts, system prompts,
//! tool arguments — `iron_core::pii::redact_request_json` knows the shapes); keys, numbers
//! and structure stay untouched. In reversible mode (default) each value becomes a numbered
//! placeholder (`[EMAIL_1]`) recorded in the request's vault so the stream stage can restore
//! it in the answer. A `block` type anywhere → 400 `pii_blocked` naming the types, never the
//! values, and nothing goes upstream.

use std::sync::Arc;

use iron_core::ErrorCode;
use iron_core::pii::{PiiPolicy, Vault, redact_request_json};

use crate::ctx::RequestCtx;
use crate::error::ProxyError;
use crate::stage::read::RequestBody;

/// Runs the stage. Returns true when the body changed.
pub fn redact(
    ctx: &mut RequestCtx,
    policy: &Arc<PiiPolicy>,
    body: &mut RequestBody,
) -> Result<bool, ProxyError> {
    let Some(json) = body.json.as_mut() else {
        return Ok(false);
    };
    let mut vault = Vault::new();
    let changed = redact_request_json(json, policy, &mut vault, &mut ctx.detections)
        .map_err(|blocked| ProxyError::new(ErrorCode::PiiBlocked, blocked.to_string()))?;
    ctx.pii = Some((policy.clone(), Arc::new(vault)));
    Ok(changed)
}
