//! Stage 4, *budget admit*: reserve the request's estimated cost from the local lease.
//!
//! Seam for `design.md` §6 (leases, per-chunk metering). Until the lease ledger lands this
//! stage admits every request; it is still called (and counted in
//! `iron_proxy_stage_runs_total{stage="budget"}`) so the order of stages is fixed now.

use crate::ctx::RequestCtx;
use crate::error::ProxyError;

/// Runs the stage.
pub fn admit(_ctx: &mut RequestCtx) -> Result<(), ProxyError> {
    Ok(())
}
