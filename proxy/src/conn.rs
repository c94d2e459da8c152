//! Connection-level limits on the agent listener, *before* stage 1 (`design.md` §3; issue #12).
//!
//! Pingora reads a request head with a per-read timeout only (60 s per `read()`), so a client
//! that sends its headers one byte every few seconds (slowloris) holds a connection and a
//! task forever, and an HTTP/1 connection that sends nothing waits in the h2c preface peek
//! without any timeout. [`HardenedApp`] wraps pingora's `HttpProxy` and runs every
//! connection under a watchdog:
//!
//! - from accept, the first request head must be complete within `header_read_timeout`;
//! - `early_request_filter` (head parsed) disarms the watchdog: body reads are bounded by
//!   the *read* stage (`body_read_timeout`, 408) and the answer by the upstream timeouts;
//! - the `logging` hook (request done, connection may be kept alive) re-arms it for
//!   `keepalive_timeout + header_read_timeout`: the next request head must be complete by
//!   then; pingora's keep-alive timeout (also `keepalive_timeout`) closes a connection that
//!   stays silent.
//!
//! When the deadline passes, the connection's future is dropped: the socket is closed
//! without a response (there is no complete request to answer). HTTP/2 (h2c) connections are
//! detected by their preface and left to `h2_idle_timeout` (= `keepalive_timeout`); their
//! requests run on other tasks, outside this watchdog.
//!
//! Header count/size limits (431), conflicting framing (400) and the JSON depth limit (400)
//! are checked per request in `proxy.rs` and the read stage.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::sync::Notify;

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// `deadline` value meaning "none".
const DISARMED: u64 = u64::MAX;

tokio::task_local! {
    static WATCH: Arc<ConnWatch>;
}

/// The deadline of one connection (ms since `epoch`).
#[derive(Debug)]
pub struct ConnWatch {
    epoch: Instant,
    deadline: AtomicU64,
    changed: Notify,
}

impl ConnWatch {
    fn new() -> Self {
        ConnWatch {
            epoch: Instant::now(),
            deadline: AtomicU64::new(DISARMED),
            changed: Notify::new(),
        }
    }

    fn arm(&self, within: Duration) {
        let at = self.epoch.elapsed().saturating_add(within);
        let ms = u64::try_from(at.as_millis()).unwrap_or(DISARMED - 1);
        self.deadline.store(ms, Ordering::Release);
        self.changed.notify_one();
    }

    fn disarm(&self) {
        self.deadline.store(DISARMED, Ordering::Release);
        self.changed.notify_one();
    }

    fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Ordering::Acquire) {
            DISARMED => None,
            ms => Some(self.epoch + Duration::from_millis(ms)),
        }
    }
}

/// Called when a request head has been parsed (pingora's `early_request_filter`).
pub fn head_received() {
    let _ = WATCH.try_with(|w| w.disarm());
}

/// Called when a request is done and the connection may be reused (pingora's `logging`).
pub fn request_done(next_head_within: Duration) {
    let _ = WATCH.try_with(|w| w.arm(next_head_within));
}

/// Pingora's HTTP proxy app with the connection watchdog around it.
pub struct HardenedApp<A> {
    inner: Arc<A>,
    h2c: bool,
    header_timeout: Duration,
}

impl<A> std::fmt::Debug for HardenedApp<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HardenedApp")
            .field("h2c", &self.h2c)
            .field("header_timeout", &self.header_timeout)
            .finish_non_exhaustive()
    }
}

impl<A> HardenedApp<A> {
    /// `inner` is pingora's app (`HttpProxy`); `h2c` must match its server options.
    pub fn new(inner: A, h2c: bool, header_timeout: Duration) -> Self {
        HardenedApp {
            inner: Arc::new(inner),
            h2c,
            header_timeout,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HardenedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let started = tokio::time::Instant::now();
        if self.h2c {
            // The same peek pingora does next (it rewinds; pingora's own peek re-reads the
            // bytes), but bounded: a client that sends nothing is closed here.
            let mut buf = [0u8; H2_PREFACE.len()];
            match tokio::time::timeout(self.header_timeout, stream.try_peek(&mut buf)).await {
                Err(_) => {
                    tracing::debug!(
                        target: "iron::security",
                        "closing a connection that sent no request in time"
                    );
                    return None;
                }
                Ok(Err(_)) => return None,
                Ok(Ok(true)) if buf == H2_PREFACE => {
                    return self.inner.process_new(stream, shutdown).await;
                }
                Ok(Ok(_)) => {}
            }
        }
        let watch = Arc::new(ConnWatch::new());
        // Measured from accept, including the peek above.
        watch.arm(self.header_timeout.saturating_sub(started.elapsed()));
        let inner = self.inner.clone();
        let fut = WATCH.scope(watch.clone(), async move {
            inner.process_new(stream, shutdown).await
        });
        tokio::pin!(fut);
        loop {
            let deadline = watch.deadline();
            tokio::select! {
                out = &mut fut => return out,
                () = watch.changed.notified() => {}
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if watch.deadline().is_some_and(|d| d <= Instant::now()) {
                        tracing::debug!(
                            target: "iron::security",
                            "closing a connection whose request head did not arrive in time"
                        );
                        return None;
                    }
                }
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Per-request checks on the request head, run first in `request_filter`: header count and
/// size (431 `headers_too_large`) and conflicting framing (400 `invalid_request`).
///
/// Pingora itself refuses more than 256 header lines, heads over 1 MiB and differing
/// duplicate `Content-Length` values (400, connection closed); with both `Content-Length`
/// and `Transfer-Encoding` it drops `Content-Length` and disables keep-alive (RFC 9112
/// §6.3). Iron refuses that combination outright (a request-smuggling signature), looking at
/// the raw head because the parsed one no longer has the `Content-Length`.
pub fn check_head(
    session: &pingora_proxy::Session,
    max_headers: usize,
    max_header_bytes: usize,
) -> Result<(), crate::error::ProxyError> {
    use crate::error::ProxyError;
    use iron_core::ErrorCode;

    let req = session.req_header();
    let count = req.headers.len();
    if count > max_headers {
        return Err(ProxyError::new(
            ErrorCode::HeadersTooLarge,
            format!("the request has {count} header fields; the limit is {max_headers}"),
        ));
    }
    let h1 = session.as_downstream().as_http1();
    let raw = h1.map(|s| s.get_headers_raw_bytes());
    let size = match &raw {
        Some(raw) => raw.len(),
        None => {
            req.uri.to_string().len()
                + req
                    .headers
                    .iter()
                    .map(|(k, v)| k.as_str().len() + v.len() + 4)
                    .sum::<usize>()
        }
    };
    if size > max_header_bytes {
        return Err(ProxyError::new(
            ErrorCode::HeadersTooLarge,
            format!("the request head is {size} bytes; the limit is {max_header_bytes}"),
        ));
    }
    if let Some(raw) = raw
        && req.headers.contains_key(http::header::TRANSFER_ENCODING)
        && raw.split(|b| *b == b'\n').any(|line| {
            let line = line.trim_ascii_start();
            line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:")
        })
    {
        return Err(ProxyError::new(
            ErrorCode::InvalidRequest,
            "the request has both Content-Length and Transfer-Encoding; send exactly one",
        ));
    }
    Ok(())
}
