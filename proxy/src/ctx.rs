//! Per-request state ([`RequestCtx`]), created by pingora's `new_ctx` and filled stage by
//! stage. No string-keyed extensions, no globals: each stage reads what earlier stages wrote.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use iron_core::WireShape;
use iron_core::token::IcClaims;

use crate::stage::route::ApiRoute;
use crate::state::Deployment;

/// Counts a request as in flight until dropped (graceful shutdown waits for zero).
#[derive(Debug)]
pub struct Inflight(Arc<AtomicUsize>);

impl Inflight {
    pub fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Inflight(counter.clone())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything Iron knows about one request.
pub struct RequestCtx {
    pub started: Instant,
    /// Money set aside by the budget stage; charged per chunk, settled at the end.
    pub reservation: Option<crate::ledger::Reservation>,
    /// The stream was cut off because the budget ran out.
    pub cut_off: bool,
    /// The project's PII policy and this request's placeholders (reversible redaction).
    pub pii: Option<(Arc<iron_core::pii::PiiPolicy>, Arc<iron_core::pii::Vault>)>,
    /// PII found in this request and its answer (counts only, never values).
    pub detections: iron_core::pii::Detections,
    /// Set by `route`; decides the error shape.
    pub route: Option<ApiRoute>,
    pub claims: Option<Arc<IcClaims>>,
    pub deployments: Vec<Arc<Deployment>>,
    /// The deployment that served (or is serving) the request.
    pub deployment: Option<Arc<Deployment>>,
    pub body: Option<crate::stage::read::RequestBody>,
    /// The body as sent upstream (after redaction and rewrite).
    pub upstream_body: Bytes,
    /// The client asked for `stream_options.include_usage` itself.
    pub client_wants_usage: bool,
    pub status: u16,
    /// The request's trace span (`iron.request`); disabled unless OTLP export is on.
    pub span: tracing::Span,
    pub error: Option<iron_core::ErrorCode>,
    /// Time spent waiting for the upstream (excluded from Iron's overhead).
    pub upstream_wait: std::time::Duration,
    /// Time spent blocked on the agent's socket: reading the request body, writing the
    /// answer (also excluded from Iron's overhead).
    pub client_wait: std::time::Duration,
    pub usage: Option<iron_core::pricing::TokenUsage>,
    /// The model's price (budget stage), used to meter chunks and settle.
    pub price: Option<iron_core::pricing::ModelPrice>,
    pub estimated_input_tokens: u64,
    pub metered_output_tokens: u64,
    /// What the request cost (settle stage).
    pub cost: Option<iron_core::Money>,
    /// `x-ratelimit-*` headers for the answer (ratelimit stage; empty when unlimited).
    pub rate_headers: crate::ratelimit::RateHeaders,
    /// The `tokens` rate counters this request passed, charged the output at settle.
    pub rate_token_checks: Vec<crate::ratelimit::Check>,
    /// Last field on purpose: fields drop in order, so an unsettled `reservation` queues its
    /// usage event before shutdown (which waits for zero in flight) can return the leases.
    _inflight: Inflight,
}

impl RequestCtx {
    pub fn new(inflight: Inflight) -> Self {
        RequestCtx {
            _inflight: inflight,
            started: Instant::now(),
            reservation: None,
            cut_off: false,
            pii: None,
            detections: iron_core::pii::Detections::new(),
            route: None,
            claims: None,
            deployments: Vec::new(),
            deployment: None,
            body: None,
            upstream_body: Bytes::new(),
            client_wants_usage: false,
            status: 0,
            span: tracing::Span::none(),
            error: None,
            upstream_wait: std::time::Duration::ZERO,
            client_wait: std::time::Duration::ZERO,
            usage: None,
            price: None,
            estimated_input_tokens: 0,
            metered_output_tokens: 0,
            cost: None,
            rate_headers: Vec::new(),
            rate_token_checks: Vec::new(),
        }
    }

    pub fn shape(&self) -> WireShape {
        self.route.map_or(WireShape::OpenAi, |r| r.shape())
    }
}
