//! Stage 5, *redact request*: apply the project's PII policy to the request (`design.md` §7).
//!
//! Seam for the PII engine (`iron_core::pii`). Until it is wired in, the request passes
//! unchanged; the stage is still called and counted so the order of stages is fixed now.

use crate::ctx::RequestCtx;
use crate::error::ProxyError;

/// Runs the stage.
pub fn redact(_ctx: &mut RequestCtx) -> Result<(), ProxyError> {
    Ok(())
}
