//! The request stages of `design.md` §3, one module each, in this order:
//!
//! 1. [`auth`] — IC token → claims + project (401)
//! 2. [`route`] — path + model → deployments (403/404)
//! 3. [`read`] — whole body, size limit, JSON (413/400)
//! 4. [`ratelimit`] — RPM/TPM of the token and project from local slices (429)
//! 5. [`budget`] — admit against the local lease (402)
//! 6. [`redact`] — PII policy on the request (400 on block)
//! 7. [`rewrite`] — credential swap, header hygiene, forced usage reporting
//! 8. [`upstream`] — connect through the breaker, send, await the response head
//! 9. [`stream`] — relay the answer event by event (meter, redact, cut off)
//! 10. [`settle`] — reconcile usage, record the outcome
//!
//! Stages 1–7 finish before any byte goes upstream. The order lives here (the [`Stage`]
//! enum) and in `docs/request-lifecycle.md`; `proxy.rs` runs them.

pub mod auth;
pub mod budget;
pub mod ratelimit;
pub mod read;
pub mod redact;
pub mod rewrite;
pub mod route;
pub mod settle;
pub mod stream;
pub mod upstream;

/// The stages, in execution order. Names appear in logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    Auth,
    Route,
    Read,
    RateLimit,
    Budget,
    Redact,
    Rewrite,
    Upstream,
    Stream,
    Settle,
}

impl Stage {
    pub const ALL: [Stage; 10] = [
        Stage::Auth,
        Stage::Route,
        Stage::Read,
        Stage::RateLimit,
        Stage::Budget,
        Stage::Redact,
        Stage::Rewrite,
        Stage::Upstream,
        Stage::Stream,
        Stage::Settle,
    ];

    /// The span name of the stage in traces.
    pub const fn span_name(self) -> &'static str {
        match self {
            Stage::Auth => "iron.auth",
            Stage::Route => "iron.route",
            Stage::Read => "iron.read",
            Stage::RateLimit => "iron.ratelimit",
            Stage::Budget => "iron.budget",
            Stage::Redact => "iron.redact",
            Stage::Rewrite => "iron.rewrite",
            Stage::Upstream => "iron.upstream",
            Stage::Stream => "iron.stream",
            Stage::Settle => "iron.settle",
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Auth => "auth",
            Stage::Route => "route",
            Stage::Read => "read",
            Stage::RateLimit => "ratelimit",
            Stage::Budget => "budget",
            Stage::Redact => "redact",
            Stage::Rewrite => "rewrite",
            Stage::Upstream => "upstream",
            Stage::Stream => "stream",
            Stage::Settle => "settle",
        }
    }
}
