//! Server-sent control events: `/v1/events` (dashboard, API key or session) and
//! `/internal/v1/events` (proxies, proxy secret). Same stream: `id: <version>`,
//! `event: token_revoked|config_changed`, `data: <ControlEvent JSON>`, resumable with
//! `Last-Event-ID`, `: keep-alive` comments. The dashboard stream also carries
//! `event: usage` (no id, not replayed) with a [`UsageTick`] whenever this replica records
//! usage from a proxy report, so spend moves on screen within a second.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use http::HeaderMap;
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::extract::GlobalReader;
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::events::{Frame, subscribe};

fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    "Last-Event-ID must be an event id (integer)",
                )
            }),
    }
}

fn to_event(f: Frame) -> Result<Event, Infallible> {
    let ev = Event::default().id(f.id.to_string()).event(f.name());
    // serde_json never emits raw newlines, so the data line is always valid.
    Ok(match serde_json::to_string(&f.event) {
        Ok(json) => ev.data(json),
        Err(_) => ev.data("{}"),
    })
}

fn control_events(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<impl Stream<Item = Result<Event, Infallible>> + use<>, ApiError> {
    let last = last_event_id(headers)?;
    let rx = subscribe(s.svc.store.clone(), &s.svc.bus, last, s.svc.shutting_down());
    Ok(ReceiverStream::new(rx).map(to_event))
}

fn keep_alive(s: &AppState) -> KeepAlive {
    KeepAlive::new()
        .interval(s.svc.keepalive)
        .text("keep-alive")
}

pub(crate) fn stream(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, ApiError> {
    Ok(Sse::new(control_events(s, headers)?).keep_alive(keep_alive(s)))
}

/// Usage ticks of this replica as `usage` events, until shutdown. A dashboard that falls
/// behind skips ticks (they only trigger a refresh).
fn usage_events(s: &AppState) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
    let rx = s.svc.usage_ticks.subscribe();
    let stop = Box::pin(s.svc.shutting_down());
    futures::stream::unfold((rx, stop), |(mut rx, mut stop)| async move {
        loop {
            let tick = tokio::select! {
                () = &mut stop => return None,
                t = rx.recv() => t,
            };
            match tick {
                Ok(t) => {
                    let data = serde_json::to_string(&t).unwrap_or_else(|_| "{}".into());
                    return Some((Ok(Event::default().event("usage").data(data)), (rx, stop)));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id")),
    security(("api_key" = [])),
    responses((status = 200, description = "text/event-stream of control events", content_type = "text/event-stream"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn dashboard_events(
    State(s): State<AppState>,
    _reader: GlobalReader,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let events = control_events(&s, &headers)?.merge(usage_events(&s));
    Ok(Sse::new(events).keep_alive(keep_alive(&s)))
}
