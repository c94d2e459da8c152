//! Stage 7, *upstream*: send the rewritten request and wait for the response head, failing
//! over between deployments (`design.md` §8).
//!
//! Uses pingora's connector (pooled, h1/h2, rustls) on a peer built from an asynchronously
//! resolved address. Each attempt asks the deployment's circuit breaker first; an Open
//! breaker skips the deployment. Retries (at most 2, exponential backoff with jitter, one
//! overall deadline) happen only before any response byte reached the agent, and only for
//! connection failures, 502/503/504, and 429 when another deployment can take the request.
//! A first-byte timeout is not retried (the provider may be working on it) → 504. A pooled
//! connection that turns out to be stale is retried once on a fresh one without counting.
//!
//! Timeouts (connect, first byte, idle between streamed chunks) are per deployment:
//! `[[providers]]` overrides, else `[upstream]` ([`Deployment::timeouts`]). The idle timeout
//! is left on the session as its read timeout, so the *stream* stage's body reads use it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iron_core::ErrorCode;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::ErrorType;
use pingora_http::RequestHeader;
use tokio::time::Instant;

use crate::breaker::{Admission, Breakers, Outcome};
use crate::client::{AddrError, Net, Timeouts, peer};
use crate::error::ProxyError;
use crate::state::Deployment;

/// Attempts per request: the first plus at most two retries.
pub const MAX_ATTEMPTS: usize = 3;
/// First backoff step; doubles per retry, with ±50% jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(50);

/// An upstream exchange whose response head has arrived.
pub struct Exchange {
    pub session: HttpSession,
    pub peer: HttpPeer,
    /// Time from the first attempt to the response head (all attempts).
    pub ttfb: Duration,
    pub deployment: Arc<Deployment>,
    /// Attempts made (1 = no retry).
    pub attempts: usize,
}

/// Why one attempt failed, and whether another attempt may follow.
struct AttemptError {
    err: ProxyError,
    retryable: bool,
    /// Iron's own policy refused the attempt (SSRF guard): says nothing about the
    /// provider's health, so the breaker does not count it.
    refused: bool,
}

fn classify(e: &pingora_error::Error, dep: &Deployment) -> AttemptError {
    match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => AttemptError {
            err: ProxyError::new(
                ErrorCode::UpstreamTimeout,
                format!("provider `{}` did not answer in time", dep.name),
            ),
            retryable: false,
            refused: false,
        },
        ErrorType::ConnectTimedout => AttemptError {
            err: ProxyError::new(
                ErrorCode::UpstreamTimeout,
                format!("provider `{}` could not be reached in time", dep.name),
            ),
            retryable: true,
            refused: false,
        },
        _ => AttemptError {
            err: ProxyError::new(
                ErrorCode::UpstreamError,
                format!("provider `{}` could not be reached", dep.name),
            ),
            retryable: true,
            refused: false,
        },
    }
}

fn retry_after(session: &HttpSession) -> Option<Duration> {
    session
        .response_header()?
        .headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn backoff(retry: usize) -> Duration {
    let base = BACKOFF_BASE * 2u32.saturating_pow(retry.saturating_sub(1) as u32);
    base.mul_f64(0.5 + rand::random::<f64>())
}

/// Sends the request to the best available deployment, failing over as §8 allows.
/// `head_for` builds the request head for a deployment (credentials differ per deployment).
pub async fn send(
    net: &Net,
    breakers: &Breakers,
    deployments: &[Arc<Deployment>],
    head_for: impl Fn(&Deployment) -> Result<RequestHeader, ProxyError>,
    body: Bytes,
) -> Result<Exchange, ProxyError> {
    let started = Instant::now();
    // One overall deadline: the longest first-byte timeout of the candidate deployments.
    let deadline = started
        + deployments
            .iter()
            .map(|d| d.timeouts(net.timeouts).first_byte)
            .max()
            .unwrap_or(net.timeouts.first_byte);
    let mut attempts = 0;
    let mut next = 0usize;
    let mut last_err: Option<ProxyError> = None;
    loop {
        // The next deployment whose breaker admits a request, starting at `next`.
        let mut soonest: Option<Duration> = None;
        let mut chosen = None;
        for offset in 0..deployments.len() {
            let i = (next + offset) % deployments.len();
            match breakers.get(&deployments[i].id).admit(Instant::now()) {
                Admission::Rejected(wait) => {
                    soonest = Some(soonest.map_or(wait, |s: Duration| s.min(wait)))
                }
                admission => {
                    chosen = Some((i, admission));
                    break;
                }
            }
        }
        let Some((i, admission)) = chosen else {
            return Err(last_err.unwrap_or_else(|| {
                let secs = soonest.map_or(1, |d| d.as_secs().max(1));
                ProxyError::new(
                    ErrorCode::UpstreamUnavailable,
                    "every provider for this request is unavailable (circuit open)",
                )
                .with_retry_after(secs)
            }));
        };
        let dep = deployments[i].clone();
        let breaker = breakers.get(&dep.id);
        attempts += 1;
        if attempts > 1 {
            tokio::time::sleep(
                backoff(attempts - 1).min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        let has_other = deployments.len() > 1;
        let can_retry = attempts < MAX_ATTEMPTS && Instant::now() < deadline;
        let timeouts = dep.timeouts(net.timeouts);
        // Pingora enforces the per-read timeouts; this bounds the whole attempt as well, so a
        // late timer can never stretch an attempt (or start another) past the deadline.
        let budget = timeouts.connect + timeouts.first_byte;
        let result = match tokio::time::timeout(
            budget,
            attempt(net, &dep, timeouts, head_for(&dep)?, body.clone()),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(AttemptError {
                err: ProxyError::new(
                    ErrorCode::UpstreamTimeout,
                    format!("provider `{}` did not answer in time", dep.name),
                ),
                retryable: false,
                refused: false,
            }),
        };
        match result {
            Ok((mut session, peer)) => {
                let status = session.response_header().map_or(0, |h| h.status.as_u16());
                let outcome = match status {
                    429 => Outcome::RateLimited(
                        retry_after(&session).unwrap_or(Duration::from_secs(1)),
                    ),
                    500..=599 => Outcome::Failure,
                    _ => Outcome::Success,
                };
                breaker.record(Instant::now(), admission, outcome);
                let retry =
                    can_retry && (matches!(status, 502..=504) || (status == 429 && has_other));
                if retry {
                    session.shutdown().await;
                    last_err = Some(ProxyError::new(
                        ErrorCode::UpstreamError,
                        format!("provider `{}` answered {status}", dep.name),
                    ));
                    next = i + 1;
                    continue;
                }
                return Ok(Exchange {
                    session,
                    peer,
                    ttfb: started.elapsed(),
                    deployment: dep,
                    attempts,
                });
            }
            Err(e) => {
                let outcome = if e.refused {
                    Outcome::Ignored
                } else {
                    Outcome::Failure
                };
                breaker.record(Instant::now(), admission, outcome);
                if e.retryable && can_retry {
                    last_err = Some(e.err);
                    next = i + 1;
                    continue;
                }
                return Err(e.err);
            }
        }
    }
}

/// One attempt on one deployment, up to the response head.
async fn attempt(
    net: &Net,
    dep: &Deployment,
    timeouts: Timeouts,
    head: RequestHeader,
    body: Bytes,
) -> Result<(HttpSession, HttpPeer), AttemptError> {
    // Resolve + SSRF guard (connect-time check on the resolved address, crate::guard).
    let addr = net
        .upstream_addr(&dep.endpoint)
        .await
        .map_err(|e| AttemptError {
            refused: matches!(e, AddrError::Refused(_)),
            err: ProxyError::new(
                ErrorCode::UpstreamError,
                match e {
                    AddrError::Resolve(_) => {
                        format!("cannot resolve the host of provider `{}`", dep.name)
                    }
                    AddrError::Refused(r) => {
                        format!("provider `{}` is not allowed: {}", dep.name, r.reason())
                    }
                },
            ),
            retryable: true,
        })?;
    let peer = peer(&dep.endpoint, addr, timeouts);
    let mut fresh_retry_done = false;
    loop {
        let (mut session, reused) = net
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| classify(&e, dep))?;
        session.set_read_timeout(Some(timeouts.first_byte));
        session.set_write_timeout(Some(timeouts.first_byte));
        match exchange(&mut session, head.clone(), body.clone()).await {
            Ok(()) => {
                session.set_read_timeout(Some(timeouts.idle));
                return Ok((session, peer));
            }
            // A stale pooled connection: nothing was answered, try once on a new one.
            Err(e)
                if reused && !fresh_retry_done && !matches!(e.etype(), ErrorType::ReadTimedout) =>
            {
                fresh_retry_done = true;
            }
            Err(e) => return Err(classify(&e, dep)),
        }
    }
}

async fn exchange(
    session: &mut HttpSession,
    head: RequestHeader,
    body: Bytes,
) -> pingora_error::Result<()> {
    session.write_request_header(Box::new(head)).await?;
    if !body.is_empty() {
        session.write_request_body(body, true).await?;
    }
    session.finish_request_body().await?;
    session.read_response_header().await
}
