//! Response bodies of the mock: whole JSON bodies, and paced streams written event by event.
//!
//! A stream is a lazy iterator of [`Step`]s turned into an HTTP body ([`PacedBody`]): each event
//! is generated when hyper asks for the next frame and becomes exactly one HTTP chunk (one h2
//! DATA frame), with `delay_ms` between events. The body counts what it sends in [`Stats`] and
//! notices, through its `Drop`, when the client went away before the end (`streams_aborted`).
//! A [`Step::Kill`] drops the whole connection (the `reset-mid-stream` fault).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Sleep;

/// The body type of every mock response.
pub(crate) type MockBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// A lazily generated sequence of body steps.
pub(crate) type Steps = Box<dyn Iterator<Item = Step> + Send>;

/// Counters shared by all responses of one mock server.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: AtomicUsize,
    pub streams_completed: AtomicUsize,
    pub streams_aborted: AtomicUsize,
    pub chunks_sent: AtomicUsize,
}

/// One step of a generated body.
pub(crate) enum Step {
    /// Send these bytes as one chunk.
    Data(Bytes),
    /// Drop the connection (after giving hyper a moment to flush what was sent).
    Kill,
}

/// A whole body in one piece.
pub(crate) fn full(bytes: impl Into<Bytes>) -> MockBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// How long a [`Step::Kill`] waits before dropping the connection, so the chunks before it
/// reach the socket.
const KILL_FLUSH_GRACE: Duration = Duration::from_millis(50);

/// A body that yields one step per poll, paced by `delay`.
pub(crate) struct PacedBody {
    steps: Steps,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    kill: Arc<Notify>,
    killing: Option<Pin<Box<Sleep>>>,
    killed: bool,
    finished: bool,
    /// `Some` for SSE streams: counted in the stream statistics.
    stats: Option<Arc<Stats>>,
}

impl PacedBody {
    /// An SSE stream (counted in the stream statistics).
    pub(crate) fn sse(steps: Steps, delay: Duration, kill: Arc<Notify>, stats: Arc<Stats>) -> Self {
        Self::new(steps, delay, kill, Some(stats))
    }

    /// A non-stream body sent in pieces (used to cut a JSON body in half).
    pub(crate) fn plain(steps: Steps, kill: Arc<Notify>) -> Self {
        Self::new(steps, Duration::ZERO, kill, None)
    }

    fn new(steps: Steps, delay: Duration, kill: Arc<Notify>, stats: Option<Arc<Stats>>) -> Self {
        PacedBody {
            steps,
            delay,
            sleep: None,
            kill,
            killing: None,
            killed: false,
            finished: false,
            stats,
        }
    }

    pub(crate) fn boxed(self) -> MockBody {
        BodyExt::boxed_unsync(self)
    }
}

impl Body for PacedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if this.killed {
            // The connection task drops us; nothing more will be sent.
            return Poll::Pending;
        }
        if let Some(k) = this.killing.as_mut() {
            if k.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.killing = None;
            this.killed = true;
            this.kill.notify_one();
            return Poll::Pending;
        }
        if let Some(s) = this.sleep.as_mut() {
            if s.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        match this.steps.next() {
            Some(Step::Data(bytes)) => {
                if !this.delay.is_zero() {
                    this.sleep = Some(Box::pin(tokio::time::sleep(this.delay)));
                }
                if let Some(stats) = &this.stats {
                    stats.chunks_sent.fetch_add(1, Ordering::SeqCst);
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Some(Step::Kill) => {
                let mut grace = Box::pin(tokio::time::sleep(KILL_FLUSH_GRACE));
                // Register the waker with the timer.
                if grace.as_mut().poll(cx).is_ready() {
                    this.killed = true;
                    this.kill.notify_one();
                } else {
                    this.killing = Some(grace);
                }
                Poll::Pending
            }
            None => {
                this.finished = true;
                if let Some(stats) = &this.stats {
                    stats.streams_completed.fetch_add(1, Ordering::SeqCst);
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for PacedBody {
    fn drop(&mut self) {
        // A body dropped before its end, that the mock did not cut itself, was abandoned by the
        // client (or the proxy in between).
        let deliberate = self.killed || self.killing.is_some();
        if let Some(stats) = &self.stats
            && !self.finished
            && !deliberate
        {
            stats.streams_aborted.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Format one SSE event: optional `event:` line, one `data:` line, blank line.
pub(crate) fn sse_event(event: Option<&str>, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + 32);
    if let Some(e) = event {
        s.push_str("event: ");
        s.push_str(e);
        s.push('\n');
    }
    s.push_str("data: ");
    s.push_str(data);
    s.push_str("\n\n");
    Bytes::from(s)
}
