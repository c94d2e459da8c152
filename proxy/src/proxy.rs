//! The pingora `ProxyHttp` implementation: runs the stages of [`crate::stage`] in order.
//!
//! Agent routes are handled entirely in `request_filter` (design (a) of `design.md` §3, see
//! `docs/decisions/0001-body-before-upstream.md`): the body is read and inspected, then the
//! upstream exchange runs on pingora's connector and the answer is relayed by the stream
//! stage; the hook returns `Ok(true)` so pingora's own forwarding never starts. Other
//! `/v1/*` paths return `Ok(false)` and use plain pingora forwarding with the key swapped
//! in `upstream_request_filter` (bodies stream, unread).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::header;
use iron_core::ErrorCode;
use iron_core::token::unix_now;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use tracing::Instrument;

use crate::client::{Net, peer};
use crate::config::ServerConfig;
use crate::ctx::RequestCtx;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::stage::route::ApiRoute;
use crate::stage::{self, Stage};
use crate::state::Routing;

/// State shared by every request.
pub struct Shared {
    pub routing: ArcSwap<Routing>,
    pub ready: AtomicBool,
    pub net: Net,
    pub breakers: crate::breaker::Breakers,
    pub ledger: Arc<crate::ledger::Ledger>,
    /// Static mode's in-process budgets (None in control mode).
    pub local_leases: Option<Arc<crate::ledger::LocalLeases>>,
    /// Requests being served (graceful shutdown waits for zero).
    pub inflight: Arc<std::sync::atomic::AtomicUsize>,
    pub features: crate::config::Features,
    pub prices: ArcSwap<iron_core::pricing::PriceTable>,
    pub budget: crate::config::BudgetConfig,
    /// RPM/TPM slices (the ratelimit stage).
    pub rate: Arc<crate::ratelimit::RateLimiter>,
    pub server: ServerConfig,
    pub metrics: Metrics,
    /// Failed-authentication limit per source address (`crate::guard`).
    pub auth_limiter: crate::guard::AuthLimiter,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Publishes a new routing table.
    pub fn publish(&self, routing: Routing) {
        self.routing.store(Arc::new(routing));
        self.ready.store(true, Ordering::Release);
    }
}

/// `gen_ai.system` of a deployment (OpenTelemetry GenAI semantic conventions).
fn gen_ai_system(dep: &crate::state::Deployment) -> &'static str {
    match dep.kind {
        iron_core::wire::ProviderKind::Anthropic => "anthropic",
        iron_core::wire::ProviderKind::AzureOpenai => "az.ai.openai",
        iron_core::wire::ProviderKind::Openai | iron_core::wire::ProviderKind::OpenaiCompatible => {
            "openai"
        }
    }
}

/// `gen_ai.operation.name` of a route.
fn gen_ai_operation(route: ApiRoute) -> &'static str {
    match route {
        ApiRoute::ChatCompletions | ApiRoute::Messages | ApiRoute::Responses => "chat",
        ApiRoute::Completions => "text_completion",
        ApiRoute::Embeddings => "embeddings",
        ApiRoute::Models | ApiRoute::CountTokens | ApiRoute::PassThrough(_) => "",
    }
}

/// What `request_filter` did.
enum Handled {
    /// Iron answered the agent itself.
    Responded,
    /// Let pingora forward (pass-through paths).
    Forward,
}

#[derive(Debug)]
pub struct IronProxy {
    pub shared: Arc<Shared>,
}

impl IronProxy {
    async fn handle(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: Option<ApiRoute>,
    ) -> Result<Handled, ProxyError> {
        let shared = &self.shared;
        crate::conn::check_head(
            session,
            shared.server.max_headers,
            shared.server.max_header_bytes,
        )?;
        // Before any token parsing: an address with too many failed authentications waits.
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(ip) = client_ip
            && let Some(secs) = shared.auth_limiter.blocked(ip)
        {
            return Err(ProxyError::new(
                ErrorCode::RateLimited,
                format!("too many failed authentications from this address; retry in {secs} s"),
            )
            .with_retry_after(secs));
        }
        let route = route.ok_or_else(|| {
            ProxyError::new(
                ErrorCode::NotFound,
                "Iron serves the OpenAI and Anthropic APIs under /v1",
            )
        })?;
        ctx.route = Some(route);
        if !shared.is_ready() {
            return Err(ProxyError::new(
                ErrorCode::UpstreamUnavailable,
                "Iron is starting: routing data is not loaded yet",
            )
            .with_retry_after(1));
        }
        let routing = shared.routing.load_full();

        let (claims, project) = {
            let _span = self.stage(Stage::Auth).entered();
            stage::auth::authenticate(&routing, session.req_header(), unix_now()).inspect_err(
                |_| {
                    if let Some(ip) = client_ip
                        && shared.auth_limiter.record_failure(ip)
                    {
                        tracing::warn!(
                            target: "iron::security",
                            client = %ip,
                            "too many failed authentications: address blocked for one window"
                        );
                    }
                },
            )?
        };
        ctx.span.record("iron.project", claims.prj.as_str());
        ctx.span.record("iron.token_id", claims.sub.as_str());
        ctx.claims = Some(claims);

        if !route.inspects_body() {
            shared.metrics.stage(Stage::Route);
            ctx.deployments = stage::route::select(&routing, &project, route, None)?;
            ctx.deployment = ctx.deployments.first().cloned();
            if matches!(route, ApiRoute::PassThrough(_)) {
                // Refuse an internal upstream with a clear body now; `upstream_peer` repeats
                // the check (cached DNS) on the address it actually connects to.
                if let Some(dep) = &ctx.deployment
                    && let Err(crate::client::AddrError::Refused(r)) =
                        shared.net.upstream_addr(&dep.endpoint).await
                {
                    return Err(ProxyError::new(
                        ErrorCode::UpstreamError,
                        format!("provider `{}` is not allowed: {}", dep.name, r.reason()),
                    ));
                }
                return Ok(Handled::Forward);
            }
        }

        let read = self.stage(Stage::Read);
        // Waiting for the agent's body is the agent's time, not Iron's overhead.
        let reading = std::time::Instant::now();
        let raw = stage::read::read_body(
            session,
            shared.server.max_request_bytes,
            shared.server.body_read_timeout,
        )
        .instrument(read.clone())
        .await;
        ctx.client_wait += reading.elapsed();
        let raw = raw?;
        let mut body =
            read.in_scope(|| stage::read::parse_limited(raw, route, shared.server.max_json_depth))?;
        if let Some(model) = &body.model {
            ctx.span.record("gen_ai.request.model", model.as_str());
        }

        if route.inspects_body() {
            let _span = self.stage(Stage::Route).entered();
            ctx.deployments =
                stage::route::select(&routing, &project, route, body.model.as_deref())?;
            ctx.deployment = ctx.deployments.first().cloned();
        }
        let dep = ctx
            .deployment
            .clone()
            .ok_or_else(|| ProxyError::new(ErrorCode::NotFound, "no provider for this request"))?;

        stage::ratelimit::admit(shared, ctx, route, &project, &body)
            .instrument(self.stage(Stage::RateLimit))
            .await?;

        stage::budget::admit(shared, ctx, route, &body)
            .instrument(self.stage(Stage::Budget))
            .await?;

        let redacted = {
            let _span = self.stage(Stage::Redact).entered();
            shared.features.pii && stage::redact::redact(ctx, &project.pii, &mut body)?
        };

        let rewrite_span = self.stage(Stage::Rewrite).entered();
        ctx.client_wants_usage = body.include_usage;
        let edit = stage::rewrite::force_include_usage(route, &mut body).with_redaction(redacted);
        let up_body = stage::rewrite::upstream_body(&body, edit)?;
        let req = session.req_header();
        let body_len = up_body.len();
        let upstream_span = self.stage(Stage::Upstream);
        let head_for = |d: &crate::state::Deployment| {
            let mut head = stage::rewrite::rewrite(req, route, d, Some(body_len))?;
            crate::telemetry::inject(&upstream_span, &mut head);
            Ok(head)
        };
        // Build the head once now so a rewrite error surfaces before any upstream work.
        head_for(&dep)?;
        ctx.body = Some(body);
        drop(rewrite_span);

        let deployments = std::mem::take(&mut ctx.deployments);
        // Connect, retries and time to the response head: upstream wait, whatever the end.
        let sending = std::time::Instant::now();
        let sent = stage::upstream::send(
            &shared.net,
            &shared.breakers,
            &deployments,
            head_for,
            up_body,
        )
        .instrument(upstream_span.clone())
        .await;
        ctx.upstream_wait += sending.elapsed();
        ctx.deployments = deployments;
        let mut ex = match sent {
            Ok(ex) => ex,
            Err(e) => {
                stage::settle::settle(shared, ctx, stage::settle::Ending::NotServed);
                return Err(e);
            }
        };
        let dep = ex.deployment.clone();
        ctx.deployment = Some(dep.clone());
        ctx.span.record("gen_ai.system", gen_ai_system(&dep));
        upstream_span.record(
            "http.response.status_code",
            ex.session
                .response_header()
                .map_or(0, |h| h.status.as_u16()),
        );
        shared
            .metrics
            .ttfb
            .with_label_values(&[dep.id.as_str()])
            .observe(ex.ttfb.as_secs_f64());
        if ex.attempts > 1 {
            shared
                .metrics
                .retries
                .with_label_values(&[dep.id.as_str()])
                .inc_by((ex.attempts - 1) as u64);
        }

        let stream_span = self.stage(Stage::Stream);
        let outcome = match stage::stream::relay(session, ctx, &mut ex, &dep)
            .instrument(stream_span)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                stage::settle::settle(shared, ctx, stage::settle::Ending::NotServed);
                return Err(e);
            }
        };
        if outcome == stage::stream::Outcome::Complete && ex.session.response_done() {
            shared
                .net
                .connector
                .release_http_session(ex.session, &ex.peer, Some(shared.net.pool_idle))
                .await;
        }

        let _settle_span = self.stage(Stage::Settle).entered();
        if ctx.cut_off
            && let Some(c) = ctx.claims.as_ref()
        {
            shared
                .metrics
                .cutoffs
                .with_label_values(&[shared.metrics.project(&c.prj)])
                .inc();
        }
        let ending = match outcome {
            stage::stream::Outcome::Complete if !ctx.cut_off => stage::settle::Ending::Answered,
            _ => stage::settle::Ending::Partial,
        };
        stage::settle::settle(shared, ctx, ending);
        if let Some(u) = ctx.usage {
            // i64: OpenTelemetry has no unsigned integers (u64 would export as a string).
            let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            ctx.span
                .record("gen_ai.usage.input_tokens", int(u.input_tokens));
            ctx.span
                .record("gen_ai.usage.output_tokens", int(u.output_tokens));
        }
        Ok(Handled::Responded)
    }

    /// Counts a run of `stage` and returns its span (a no-op span unless traces are on).
    fn stage(&self, stage: Stage) -> tracing::Span {
        self.shared.metrics.stage(stage);
        match stage {
            Stage::Upstream => tracing::info_span!(
                "iron.stage",
                otel.name = "iron.upstream",
                otel.kind = "client",
                http.response.status_code = tracing::field::Empty
            ),
            _ => tracing::info_span!("iron.stage", otel.name = stage.span_name()),
        }
    }

    async fn respond_error(&self, session: &mut Session, ctx: &mut RequestCtx, err: &ProxyError) {
        ctx.status = err.code.status();
        ctx.error = Some(err.code);
        let body = err.body(ctx.shape());
        let Ok(mut head) = ResponseHeader::build(err.code.status(), Some(4)) else {
            return;
        };
        let _ = head.insert_header(header::CONTENT_TYPE, "application/json");
        let _ = head.insert_header(header::CONTENT_LENGTH, body.len());
        let _ = head.insert_header(iron_core::error::ERROR_HEADER, err.code.as_str());
        if let Some(secs) = err.retry_after {
            let _ = head.insert_header(header::RETRY_AFTER, secs);
        }
        for (name, value) in &ctx.rate_headers {
            let _ = head.insert_header(*name, value.as_str());
        }
        if ctx.body.is_none() {
            // The request body may still be unread: do not reuse this connection.
            session.set_keepalive(None);
        }
        if session
            .write_response_header(Box::new(head), false)
            .await
            .is_ok()
        {
            let _ = session.write_response_body(Some(body.into()), true).await;
        }
    }
}

#[async_trait]
impl ProxyHttp for IronProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(crate::ctx::Inflight::enter(&self.shared.inflight))
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        // The head is complete: the connection watchdog stops (crate::conn).
        crate::conn::head_received();
        if session.get_keepalive().is_some() {
            let secs = self.shared.server.keepalive_timeout.as_secs().max(1);
            session.set_keepalive(Some(secs));
        }
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<bool> {
        let route = ApiRoute::classify(session.req_header());
        ctx.span = tracing::info_span!(
            "iron.request",
            otel.name = "iron.request",
            otel.kind = "server",
            iron.route = route.map_or("unknown", ApiRoute::as_str),
            gen_ai.operation.name = route.map_or("", gen_ai_operation),
            gen_ai.system = tracing::field::Empty,
            gen_ai.request.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            iron.project = tracing::field::Empty,
            iron.token_id = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        crate::telemetry::adopt_parent(&ctx.span, session.req_header());
        let span = ctx.span.clone();
        let handled = self.handle(session, ctx, route).instrument(span).await;
        match handled {
            Ok(Handled::Responded) => Ok(true),
            Ok(Handled::Forward) => Ok(false),
            Err(err) => {
                self.respond_error(session, ctx, &err).await;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Box<HttpPeer>> {
        let dep = ctx.deployment.clone().ok_or_else(|| {
            pingora_error::Error::explain(
                pingora_error::ErrorType::InternalError,
                "no deployment chosen",
            )
        })?;
        let net = &self.shared.net;
        // Resolve + SSRF guard on the resolved address (crate::guard).
        let addr = net.upstream_addr(&dep.endpoint).await.map_err(|e| {
            pingora_error::Error::explain(
                pingora_error::ErrorType::ConnectNoRoute,
                match e {
                    crate::client::AddrError::Resolve(_) => "cannot resolve provider host",
                    crate::client::AddrError::Refused(r) => r.reason(),
                },
            )
        })?;
        Ok(Box::new(peer(
            &dep.endpoint,
            addr,
            dep.timeouts(net.timeouts),
        )))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let (Some(dep), Some(route)) = (ctx.deployment.clone(), ctx.route) else {
            return pingora_error::Error::e_explain(
                pingora_error::ErrorType::InternalError,
                "no deployment chosen",
            );
        };
        self.shared.metrics.stage(Stage::Rewrite);
        *upstream_request = stage::rewrite::rewrite(session.req_header(), route, &dep, None)
            .map_err(|e| {
                pingora_error::Error::explain(
                    pingora_error::ErrorType::InternalError,
                    e.message.into_owned(),
                )
            })?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        ctx.status = upstream_response.status.as_u16();
        Ok(())
    }

    async fn logging(
        &self,
        _session: &mut Session,
        e: Option<&pingora_error::Error>,
        ctx: &mut RequestCtx,
    ) {
        // The next request head on this connection must arrive in time (crate::conn).
        let server = &self.shared.server;
        crate::conn::request_done(server.keepalive_timeout + server.header_read_timeout);
        let m = &self.shared.metrics;
        let route = ctx.route.map_or("unknown", ApiRoute::as_str);
        let provider = ctx.deployment.as_ref().map_or("", |d| d.id.as_str());
        // Only a model some deployment serves becomes a label value (capped, see metrics).
        let model = match (&ctx.deployment, &ctx.body) {
            (Some(_), Some(b)) => m.model(b.model.as_deref().unwrap_or("")),
            _ => "",
        };
        ctx.span.record("http.response.status_code", ctx.status);
        // Iron's own error code; for a provider error passed through, its HTTP status.
        let status_label;
        let code = match (ctx.error, e) {
            (Some(c), _) => c.as_str(),
            (None, Some(_)) => ErrorCode::UpstreamError.as_str(),
            (None, None) if ctx.status >= 400 => {
                status_label = ctx.status.to_string();
                status_label.as_str()
            }
            (None, None) => "ok",
        };
        m.requests
            .with_label_values(&[route, provider, model, code])
            .inc();
        for (kind, dir, action, n) in ctx.detections.iter() {
            m.pii
                .with_label_values(&[kind.as_str(), dir.as_str(), action.as_str()])
                .inc_by(n);
        }
        let total = ctx.started.elapsed();
        m.duration
            .with_label_values(&[route])
            .observe(total.as_secs_f64());
        let overhead = crate::metrics::overhead(total, ctx);
        m.overhead
            .with_label_values(&[route])
            .observe(overhead.as_secs_f64());
        let usage = ctx.usage.unwrap_or_default();
        // PII counts as `direction:TYPE:action=n`, comma-separated (never values).
        let mut pii = String::new();
        for (kind, dir, action, n) in ctx.detections.iter() {
            if !pii.is_empty() {
                pii.push(',');
            }
            let _ = write!(
                pii,
                "{}:{}:{}={n}",
                dir.as_str(),
                kind.as_str(),
                action.as_str()
            );
        }
        // The one summary line per request (`design.md` §12); token *id* only.
        tracing::info!(
            target: "iron::request",
            route,
            project = ctx.claims.as_ref().map_or("", |c| c.prj.as_str()),
            token_id = ctx.claims.as_ref().map_or("", |c| c.sub.as_str()),
            provider,
            model,
            status = ctx.status,
            code,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cost_microdollars = ctx.cost.map_or(0, |c| c.micros()),
            duration_us = total.as_micros() as u64,
            upstream_us = ctx.upstream_wait.as_micros() as u64,
            client_us = ctx.client_wait.as_micros() as u64,
            overhead_us = overhead.as_micros() as u64,
            pii = pii.as_str(),
            "request"
        );
    }
}
