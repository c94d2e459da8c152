//! The mock LLM upstream: an OpenAI + Anthropic look-alike HTTP server that Iron's tests put
//! behind the proxy in place of the real providers.
//!
//! It is a hyper 1 server with its own accept loop (HTTP/1.1 and h2c via
//! `hyper_util::server::conn::auto`, `TCP_NODELAY` on every socket), spawned on the caller's
//! tokio runtime, listening on `127.0.0.1:0`. [`MockUpstream::start_tls`] puts rustls in front
//! (a CA generated at start, ALPN `h2` / `http/1.1`, see `tls.rs`) so clients speak HTTPS and
//! HTTP/2 to it like to a real provider; every recorded request says which HTTP version it
//! came over. Owning the accept loop lets it misbehave like a
//! real network peer: it can drop a connection without a byte (`reset`), in the middle of a
//! stream (`reset-mid-stream`), or never answer (`hang`).
//!
//! Per request it: reads the whole body; records the request (method, path, headers, body);
//! computes the effective [`Scenario`] (server default + `x-mock-*` headers, see
//! [`scenario::headers`]); waits `ttfb_ms`; routes; applies the fault; answers with JSON or with
//! a paced SSE stream written event by event (see `body.rs`). What it says and how many tokens it
//! reports is decided in one place (`plan.rs`, documented there), so the JSON and the streamed
//! answer to the same request carry the same usage.
//!
//! Routes (all under `/v1`): OpenAI `POST chat/completions`, `POST completions`,
//! `POST embeddings`, `POST responses`, `GET models`, `GET models/{id}` (also reachable as Azure
//! `/openai/deployments/{name}/…`); Anthropic `POST messages`, `POST messages/count_tokens`.
//! Anything else is a 404 in OpenAI's error shape. Control routes live under `/__mock/` (see
//! `control.rs`).

mod anthropic;
mod body;
mod control;
mod errors;
mod openai;
mod plan;
pub mod scenario;
mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

pub use scenario::{Fault, Scenario, headers};

use body::{MockBody, PacedBody, Stats, Step, Steps, full};
use errors::{ErrorReply, Provider};
use tls::MockTls;

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path including the query string, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The HTTP version the request came over (`HTTP_2` for h2 and h2c).
    pub version: Version,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The complete request body.
    pub body: Bytes,
    /// When the request arrived (before its body was read).
    pub received_at: Instant,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, `None` when it is not JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as UTF-8 text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// State shared by the accept loop, every connection and the [`MockUpstream`] handle.
pub(crate) struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    scenario: Mutex<Scenario>,
    stats: Arc<Stats>,
    seq: AtomicU64,
    record: AtomicBool,
    started: Instant,
    /// TCP connections accepted (a request refused before upstream must open none).
    connections: AtomicUsize,
}

impl Shared {
    fn new(default: Scenario) -> Shared {
        Shared {
            requests: Mutex::new(Vec::new()),
            scenario: Mutex::new(default),
            stats: Arc::new(Stats::default()),
            seq: AtomicU64::new(0),
            record: AtomicBool::new(true),
            started: Instant::now(),
            connections: AtomicUsize::new(0),
        }
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, r: RecordedRequest) {
        self.stats.requests.fetch_add(1, Ordering::SeqCst);
        if self.record.load(Ordering::SeqCst) {
            self.requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(r);
        }
    }

    pub(crate) fn clear(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.stats.requests.store(0, Ordering::SeqCst);
        self.stats.streams_completed.store(0, Ordering::SeqCst);
        self.stats.streams_aborted.store(0, Ordering::SeqCst);
        self.stats.chunks_sent.store(0, Ordering::SeqCst);
    }

    pub(crate) fn scenario(&self) -> Scenario {
        self.scenario
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_scenario(&self, s: Scenario) {
        *self.scenario.lock().unwrap_or_else(PoisonError::into_inner) = s;
    }

    pub(crate) fn stats_json(&self) -> Value {
        serde_json::json!({
            "requests": self.stats.requests.load(Ordering::SeqCst),
            "streams_completed": self.stats.streams_completed.load(Ordering::SeqCst),
            "streams_aborted": self.stats.streams_aborted.load(Ordering::SeqCst),
            "chunks_sent": self.stats.chunks_sent.load(Ordering::SeqCst),
        })
    }
}

/// A running mock upstream. Dropping it stops the server and closes every open connection.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use iron_testkit::{MockUpstream, Scenario};
/// let mock = MockUpstream::start_with(Scenario { chunks: Some(3), ..Default::default() }).await?;
/// let url = format!("{}/v1/chat/completions", mock.base_url());
/// // ... point the proxy at mock.base_url(), send a request ...
/// assert_eq!(mock.request_count(), 0);
/// # let _ = url; Ok(()) }
/// ```
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Set by [`MockUpstream::start_tls`].
    tls: Option<MockTls>,
    _shutdown: watch::Sender<()>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // Dropping `_shutdown` tells every connection task to close; the accept loop stops too.
        self.accept_task.abort();
    }
}

impl MockUpstream {
    /// Start on `127.0.0.1:0` with the default scenario.
    pub async fn start() -> anyhow::Result<MockUpstream> {
        Self::start_with(Scenario::default()).await
    }

    /// Start on `127.0.0.1:0` with `default` as the scenario of every request.
    pub async fn start_with(default: Scenario) -> anyhow::Result<MockUpstream> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), default).await
    }

    /// Start on `addr` (the `iron-mock` binary uses this for `--listen`).
    pub async fn bind(addr: SocketAddr, default: Scenario) -> anyhow::Result<MockUpstream> {
        Self::bind_inner(addr, default, None).await
    }

    /// Start an HTTPS mock on `127.0.0.1:0` with the default scenario: a CA and a certificate
    /// for `127.0.0.1` / `::1` / `localhost` are generated now, ALPN offers `h2` then
    /// `http/1.1`. Clients trust [`ca_pem`](Self::ca_pem) (or the file
    /// [`ca_file`](Self::ca_file)); [`base_url`](Self::base_url) is `https://127.0.0.1:PORT`.
    pub async fn start_tls() -> anyhow::Result<MockUpstream> {
        Self::start_tls_with(Scenario::default()).await
    }

    /// [`start_tls`](Self::start_tls) with `default` as the scenario of every request.
    pub async fn start_tls_with(default: Scenario) -> anyhow::Result<MockUpstream> {
        Self::bind_tls(SocketAddr::from(([127, 0, 0, 1], 0)), default).await
    }

    /// [`start_tls_with`](Self::start_tls_with) on `addr`.
    pub async fn bind_tls(addr: SocketAddr, default: Scenario) -> anyhow::Result<MockUpstream> {
        Self::bind_inner(addr, default, Some(MockTls::generate()?)).await
    }

    async fn bind_inner(
        addr: SocketAddr,
        default: Scenario,
        tls: Option<MockTls>,
    ) -> anyhow::Result<MockUpstream> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("mock upstream: bind {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(default));
        let (tx, rx) = watch::channel(());
        let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), rx, acceptor));
        Ok(MockUpstream {
            addr,
            shared,
            tls,
            _shutdown: tx,
            accept_task,
        })
    }

    /// Whether this mock speaks HTTPS ([`start_tls`](Self::start_tls)).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// PEM of the CA that signed the HTTPS mock's certificate (`None` for a plain mock).
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(MockTls::ca_pem)
    }

    /// [`ca_pem`](Self::ca_pem) as a file (removed when the mock is dropped), for clients
    /// configured with a path, e.g. Iron's `[upstream] ca_file`.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(MockTls::ca_file)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://…` for a TLS mock (no trailing slash, no `/v1`).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `base_url()` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    /// Every request received, in arrival order (control routes excluded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// Number of requests received (control routes excluded) since start or [`clear`](Self::clear).
    pub fn request_count(&self) -> usize {
        self.shared.stats.requests.load(Ordering::SeqCst)
    }

    /// Forget recorded requests and reset every counter.
    pub fn clear(&self) {
        self.shared.clear();
    }

    /// Set the default scenario for following requests.
    pub fn set_scenario(&self, s: Scenario) {
        self.shared.set_scenario(s);
    }

    /// The current default scenario.
    pub fn scenario(&self) -> Scenario {
        self.shared.scenario()
    }

    /// Keep request bodies (default) or only count requests (long load runs).
    pub fn set_recording(&self, on: bool) {
        self.shared.record.store(on, Ordering::SeqCst);
    }

    /// SSE bodies written to their end.
    pub fn streams_completed(&self) -> usize {
        self.shared.stats.streams_completed.load(Ordering::SeqCst)
    }

    /// SSE bodies dropped before their end because the peer went away (the faults that cut a
    /// stream on purpose are not counted).
    pub fn streams_aborted(&self) -> usize {
        self.shared.stats.streams_aborted.load(Ordering::SeqCst)
    }

    /// Total SSE events handed to the connection, over all requests.
    pub fn chunks_sent(&self) -> usize {
        self.shared.stats.chunks_sent.load(Ordering::SeqCst)
    }

    /// TCP connections accepted since start (not reset by [`MockUpstream::clear`]); for a TLS
    /// mock, counted before the handshake.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Poll `cond` every 10 ms until it holds; error after `timeout`. For counters that change
    /// asynchronously, e.g. `mock.wait_for(t, |m| m.streams_aborted() == 1)`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        cond: impl Fn(&MockUpstream) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "mock upstream: condition not met within {timeout:?}; stats {}",
                    self.shared.stats_json()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How long a TLS client may take to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<()>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.set_nodelay(true);
                    let (shared, shutdown) = (shared.clone(), shutdown.clone());
                    match &tls {
                        None => {
                            tokio::spawn(serve_connection(stream, shared, shutdown));
                        }
                        Some(acceptor) => {
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                let handshake = tokio::time::timeout(
                                    TLS_HANDSHAKE_TIMEOUT,
                                    acceptor.accept(stream),
                                );
                                match handshake.await {
                                    Ok(Ok(tls)) => serve_connection(tls, shared, shutdown).await,
                                    Ok(Err(e)) => tracing::debug!(
                                        error = %e, "mock upstream: TLS handshake failed"
                                    ),
                                    Err(_) => tracing::debug!(
                                        "mock upstream: TLS handshake timed out"
                                    ),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "mock upstream: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn serve_connection<S>(stream: S, shared: Arc<Shared>, mut shutdown: watch::Receiver<()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Faults that drop the connection notify this; the connection future is then dropped,
    // which closes the socket without finishing the response.
    let kill = Arc::new(Notify::new());
    let svc_kill = kill.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let kill = svc_kill.clone();
        async move { Ok::<_, Infallible>(handle(shared, kill, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        biased;
        res = &mut conn => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "mock upstream: connection ended with an error");
            }
        }
        _ = kill.notified() => {}
        _ = shutdown.changed() => {}
    }
}

/// The endpoints the mock implements.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Models,
    Model(String),
    Messages,
    CountTokens,
}

impl Route {
    fn provider(&self) -> Provider {
        match self {
            Route::Messages | Route::CountTokens => Provider::Anthropic,
            _ => Provider::OpenAi,
        }
    }

    fn has_json_body(&self) -> bool {
        !matches!(self, Route::Models | Route::Model(_))
    }
}

/// Route a request; the second value is the Azure deployment name, used as the model when
/// the body has none.
fn route(method: &Method, path: &str) -> Option<(Route, Option<String>)> {
    let post = *method == Method::POST;
    let get = *method == Method::GET;
    let r = match path {
        "/v1/chat/completions" if post => Route::Chat,
        "/v1/completions" if post => Route::Completions,
        "/v1/embeddings" if post => Route::Embeddings,
        "/v1/responses" if post => Route::Responses,
        "/v1/models" if get => Route::Models,
        "/v1/messages" if post => Route::Messages,
        "/v1/messages/count_tokens" if post => Route::CountTokens,
        _ => {
            if get
                && let Some(id) = path.strip_prefix("/v1/models/")
                && !id.is_empty()
            {
                return Some((Route::Model(id.to_owned()), None));
            }
            let rest = path.strip_prefix("/openai/deployments/")?;
            let (deployment, op) = rest.split_once('/')?;
            let r = match op {
                "chat/completions" if post => Route::Chat,
                "completions" if post => Route::Completions,
                "embeddings" if post => Route::Embeddings,
                _ => return None,
            };
            return Some((r, Some(deployment.to_owned())));
        }
    };
    Some((r, None))
}

/// Per-request context handed to the route handlers.
pub(crate) struct Ctx {
    pub scenario: Scenario,
    pub seq: u64,
    pub created: u64,
    pub request_id: String,
    pub model_fallback: Option<String>,
}

impl Ctx {
    /// A unique-per-server id with a provider prefix, e.g. `chatcmpl-mock00000007`.
    pub(crate) fn id(&self, prefix: &str) -> String {
        format!("{prefix}mock{:08}", self.seq)
    }
}

/// A handler's answer, before faults and headers are applied.
pub(crate) enum Reply {
    Json(StatusCode, Value),
    Error(ErrorReply),
    Stream(StreamPlan),
}

/// A stream to send, and how the `error-event` fault cuts it.
pub(crate) struct StreamPlan {
    /// The complete, lazily generated event sequence.
    pub events: Box<dyn Iterator<Item = Bytes> + Send>,
    /// How many events to send before the error event.
    pub error_after: usize,
    /// The provider's mid-stream error event.
    pub error_event: Bytes,
}

/// The lines the `malformed-sse` fault inserts after the second event.
const MALFORMED_SSE: &[u8] =
    b"this line is not server-sent events\ndata: {\"id\": \"broken\", \"choices\": [{\"delta\n\n";

fn request_id(provider: Provider, seq: u64) -> String {
    match provider {
        Provider::OpenAi => format!("req_{:032x}", seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        Provider::Anthropic => format!("req_011CMock{seq:014}"),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn handle(
    shared: Arc<Shared>,
    kill: Arc<Notify>,
    req: Request<Incoming>,
) -> Response<MockBody> {
    let received_at = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let err = errors::bad_request(
                Provider::OpenAi,
                &format!("could not read the request body: {e}"),
                "",
            );
            return error_response(err);
        }
    };
    if path == control::PREFIX || path.starts_with("/__mock/") {
        return control::handle(&shared, &parts.method, &path, &body);
    }
    let path_q = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    shared.record(RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path: path_q,
        version: parts.version,
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
        received_at,
    });

    let seq = shared.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let routed = route(&parts.method, &path);
    let provider = routed
        .as_ref()
        .map(|(r, _)| r.provider())
        .unwrap_or(Provider::OpenAi);
    let request_id = request_id(provider, seq);

    let (mut resp, retry_after) = respond(
        &shared,
        &kill,
        &parts.method,
        &path,
        &parts.headers,
        &body,
        routed,
        seq,
        &request_id,
    )
    .await;
    provider_headers(resp.headers_mut(), provider, &request_id, received_at);
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// Produce the response; the second value is the `retry-after` to send, if any.
#[allow(clippy::too_many_arguments)]
async fn respond(
    shared: &Shared,
    kill: &Arc<Notify>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
    routed: Option<(Route, Option<String>)>,
    seq: u64,
    request_id: &str,
) -> (Response<MockBody>, Option<u64>) {
    let provider = routed
        .as_ref()
        .map(|(r, _)| r.provider())
        .unwrap_or(Provider::OpenAi);
    let scenario = match shared.scenario().with_overrides(headers) {
        Ok(s) => s,
        Err(msg) => {
            return (
                error_response(errors::bad_request(provider, &msg, request_id)),
                None,
            );
        }
    };
    if let Some(ms) = scenario.ttfb_ms.filter(|ms| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let Some((route, model_fallback)) = routed else {
        return (
            error_response(errors::not_found(method.as_str(), path)),
            None,
        );
    };

    if provider == Provider::Anthropic {
        let has_key = headers.contains_key("x-api-key") || headers.contains_key("authorization");
        if !has_key {
            return (
                error_response(errors::anthropic_missing_key(request_id)),
                None,
            );
        }
        if !headers.contains_key("anthropic-version") {
            return (
                error_response(errors::bad_request(
                    provider,
                    "anthropic-version: header is required",
                    request_id,
                )),
                None,
            );
        }
    }

    match scenario.fault {
        Some(Fault::Hang) => {
            // Never answer; the connection task drops us when the peer or the mock goes away.
            std::future::pending::<()>().await;
        }
        Some(Fault::Reset) => {
            kill.notify_one();
            std::future::pending::<()>().await;
        }
        Some(f @ (Fault::Status500 | Fault::Status503 | Fault::Status429 | Fault::Status401)) => {
            if let Some(err) = errors::status_fault(provider, f, request_id) {
                let retry = match f {
                    Fault::Status429 | Fault::Status503 => scenario.retry_after,
                    _ => None,
                };
                return (error_response(err), retry);
            }
        }
        _ => {}
    }

    let json = if route.has_json_body() {
        match serde_json::from_slice::<Value>(body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) | Err(_) => {
                let msg = match provider {
                    Provider::OpenAi => errors::OPENAI_INVALID_JSON,
                    Provider::Anthropic => {
                        "There was an error parsing the body of your request as JSON."
                    }
                };
                return (
                    error_response(errors::bad_request(provider, msg, request_id)),
                    None,
                );
            }
        }
    } else {
        Value::Null
    };

    let ctx = Ctx {
        scenario,
        seq,
        created: unix_now(),
        request_id: request_id.to_owned(),
        model_fallback,
    };
    let reply = match &route {
        Route::Chat => openai::chat(&ctx, &json),
        Route::Completions => openai::completions(&ctx, &json),
        Route::Embeddings => openai::embeddings(&ctx, &json),
        Route::Responses => openai::responses(&ctx, &json),
        Route::Models => openai::models(),
        Route::Model(id) => openai::model(id),
        Route::Messages => anthropic::messages(&ctx, &json),
        Route::CountTokens => anthropic::count_tokens(&ctx, &json),
    };
    let delay = Duration::from_millis(ctx.scenario.delay_ms.unwrap_or(0));
    let resp = match reply {
        Reply::Error(e) => error_response(e),
        Reply::Json(status, v) => {
            json_response(kill, provider, status, v, ctx.scenario.fault, request_id)
        }
        Reply::Stream(plan) => {
            let steps = stream_steps(plan, ctx.scenario.fault);
            let body = PacedBody::sse(steps, delay, kill.clone(), shared.stats.clone());
            let mut resp = Response::new(body.boxed());
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
            resp
        }
    };
    (resp, None)
}

/// Apply the stream faults to a stream plan.
fn stream_steps(plan: StreamPlan, fault: Option<Fault>) -> Steps {
    let StreamPlan {
        mut events,
        error_after,
        error_event,
    } = plan;
    match fault {
        Some(Fault::ResetMidStream) => Box::new(
            events
                .take(2)
                .map(Step::Data)
                .chain(std::iter::once(Step::Kill)),
        ),
        Some(Fault::MalformedSse) => {
            let head: Vec<Bytes> = events.by_ref().take(2).collect();
            Box::new(
                head.into_iter()
                    .chain(std::iter::once(Bytes::from_static(MALFORMED_SSE)))
                    .chain(events)
                    .map(Step::Data),
            )
        }
        Some(Fault::ErrorEvent) => Box::new(
            events
                .take(error_after)
                .chain(std::iter::once(error_event))
                .map(Step::Data),
        ),
        _ => Box::new(events.map(Step::Data)),
    }
}

fn json_response(
    kill: &Arc<Notify>,
    provider: Provider,
    status: StatusCode,
    v: Value,
    fault: Option<Fault>,
    request_id: &str,
) -> Response<MockBody> {
    let bytes = Bytes::from(v.to_string());
    let ok = status == StatusCode::OK;
    let (status, body, content_length) = match fault {
        Some(Fault::ErrorEvent) if ok => {
            return error_response(errors::error_event_json(provider, request_id));
        }
        Some(Fault::ResetMidStream) if ok => {
            let half = bytes.slice(..bytes.len() / 2);
            let steps: Steps = Box::new([Step::Data(half), Step::Kill].into_iter());
            (
                status,
                PacedBody::plain(steps, kill.clone()).boxed(),
                Some(bytes.len()),
            )
        }
        Some(Fault::MalformedSse) if ok => {
            let half = bytes.slice(..bytes.len() / 2);
            (status, full(half), None)
        }
        _ => (status, full(bytes), None),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(len) = content_length {
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

fn error_response(err: ErrorReply) -> Response<MockBody> {
    let mut resp = Response::new(full(err.body));
    *resp.status_mut() = err.status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Headers the real providers send on every response.
fn provider_headers(h: &mut HeaderMap, provider: Provider, request_id: &str, since: Instant) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    match provider {
        Provider::OpenAi => {
            put("x-request-id", request_id.to_owned());
            put(
                "openai-processing-ms",
                since.elapsed().as_millis().to_string(),
            );
            put("openai-version", "2020-10-01".to_owned());
            put("x-ratelimit-limit-requests", "10000".to_owned());
            put("x-ratelimit-remaining-requests", "9999".to_owned());
            put("x-ratelimit-reset-requests", "6ms".to_owned());
            put("x-ratelimit-limit-tokens", "10000000".to_owned());
            put("x-ratelimit-remaining-tokens", "9999000".to_owned());
        }
        Provider::Anthropic => {
            put("request-id", request_id.to_owned());
            put("anthropic-ratelimit-requests-limit", "4000".to_owned());
            put("anthropic-ratelimit-requests-remaining", "3999".to_owned());
            put("anthropic-ratelimit-tokens-limit", "2000000".to_owned());
            put("anthropic-ratelimit-tokens-remaining", "1999000".to_owned());
        }
    }
}
