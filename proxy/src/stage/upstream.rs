//! Stage 7, *upstream*: send the rewritten request and wait for the response head.
//!
//! Uses pingora's connector (pooled, h1/h2, rustls) on a peer built from an asynchronously
//! resolved address. A pooled connection that turns out to be stale is retried once on a
//! fresh one — safe, because no response byte exists yet. Connect and first-byte timeouts
//! come from the config; circuit breaking and fail-over to the next deployment (§8) plug in
//! here.

use std::time::{Duration, Instant};

use bytes::Bytes;
use iron_core::ErrorCode;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::ErrorType;
use pingora_http::RequestHeader;

use crate::client::{Net, peer};
use crate::error::ProxyError;
use crate::state::Deployment;

/// An upstream exchange whose response head has arrived.
pub struct Exchange {
    pub session: HttpSession,
    pub peer: HttpPeer,
    /// Time from sending to the response head.
    pub ttfb: Duration,
}

fn classify(e: &pingora_error::Error, dep: &Deployment) -> ProxyError {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => ProxyError::new(
            ErrorCode::UpstreamTimeout,
            format!("provider `{}` did not answer in time", dep.name),
        ),
        _ => ProxyError::new(ErrorCode::UpstreamError, format!("provider `{}` could not be reached", dep.name)),
    }
}

/// Sends `head` + `body` to `dep` and returns once the response head is read.
pub async fn send(net: &Net, dep: &Deployment, head: RequestHeader, body: Bytes) -> Result<Exchange, ProxyError> {
    let addr = net.resolver.resolve(&dep.endpoint.host, dep.endpoint.port).await.map_err(|_| {
        ProxyError::new(ErrorCode::UpstreamError, format!("cannot resolve the host of provider `{}`", dep.name))
    })?;
    let peer = peer(&dep.endpoint, addr, net.timeouts);
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut session, reused) = net.connector.get_http_session(&peer).await.map_err(|e| classify(&e, dep))?;
        session.set_read_timeout(Some(net.timeouts.first_byte));
        session.set_write_timeout(Some(net.timeouts.first_byte));
        match exchange(&mut session, head.clone(), body.clone()).await {
            Ok(()) => {
                session.set_read_timeout(Some(net.timeouts.idle));
                return Ok(Exchange { session, peer, ttfb: started.elapsed() });
            }
            // A stale pooled connection: nothing was answered, try once on a new one.
            Err(_) if reused && attempt == 1 => continue,
            Err(e) => return Err(classify(&e, dep)),
        }
    }
}

async fn exchange(session: &mut HttpSession, head: RequestHeader, body: Bytes) -> pingora_error::Result<()> {
    session.write_request_header(Box::new(head)).await?;
    if !body.is_empty() {
        session.write_request_body(body, true).await?;
    }
    session.finish_request_body().await?;
    session.read_response_header().await
}
