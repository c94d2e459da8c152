//! Control events fan-out: store event log → in-process broadcast → SSE subscribers.
//!
//! A mutation appends a [`ControlEvent`] to the store's log (which assigns the id) and then
//! [`EventBus::publish`]es it, so connected subscribers get it within milliseconds. With
//! several control replicas on one Redis, each replica also runs [`EventBus::run_poller`],
//! which reads the log every `poll_interval` and publishes what other replicas wrote.
//!
//! Each SSE connection ([`subscribe`]) keeps its own position: it replays from the store on
//! connect (`Last-Event-ID`), then forwards broadcast events in id order, dedupes, and fills
//! any gap (lag, out-of-order publication, another replica) from the store. When the
//! requested position is older than the retained log it sends a single `config_changed`
//! so the reader refetches the snapshot.

use std::sync::Arc;
use std::time::Duration;

use iron_core::wire::ControlEvent;
use tokio::sync::{broadcast, mpsc};

use crate::model::StoredEvent;
use crate::store::{Store, StoreError};

/// Broadcast capacity; a subscriber that falls further behind refills from the store.
const BUS_CAPACITY: usize = 1024;
/// Events fetched per store read while replaying.
const REPLAY_BATCH: usize = 500;
/// Buffer between a subscriber task and its HTTP response.
const SUBSCRIBER_BUFFER: usize = 64;

/// What travels on the bus.
#[derive(Clone, Debug)]
enum BusMsg {
    /// An event just appended to the log.
    Event(StoredEvent),
    /// Something changed in the log; subscribers re-read it from their position.
    Wake,
}

/// In-process broadcast of stored events.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<BusMsg>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("receivers", &self.tx.receiver_count())
            .finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        EventBus {
            tx: broadcast::channel(BUS_CAPACITY).0,
        }
    }

    /// Wakes subscribers with a new event (no-op without subscribers).
    pub fn publish(&self, event: StoredEvent) {
        let _ = self.tx.send(BusMsg::Event(event));
    }

    fn wake(&self) {
        let _ = self.tx.send(BusMsg::Wake);
    }

    fn receiver(&self) -> broadcast::Receiver<BusMsg> {
        self.tx.subscribe()
    }

    /// Publishes events appended by other replicas; runs until `shutdown` resolves.
    pub async fn run_poller(
        self,
        store: Arc<dyn Store>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut pos = store.last_event_id().await.unwrap_or(0);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            match store.events_since(pos, REPLAY_BATCH).await {
                Ok(batch) if batch.gap => {
                    // Too far behind to relay: subscribers re-read the log themselves.
                    pos = batch.last_id;
                    self.wake();
                }
                Ok(batch) => {
                    for ev in batch.events {
                        pos = pos.max(ev.id);
                        self.publish(ev);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "event log poll failed"),
            }
        }
    }
}

/// One SSE frame for a subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub id: u64,
    pub event: ControlEvent,
}

impl Frame {
    /// The SSE `event:` name (the variant, snake_case).
    pub fn name(&self) -> &'static str {
        match self.event {
            ControlEvent::TokenRevoked { .. } => "token_revoked",
            ControlEvent::ConfigChanged => "config_changed",
        }
    }
}

/// Starts a subscriber: replays from `last_event_id` (or starts at the current end), then
/// follows the bus. The receiver ends when the store fails (the client reconnects with its
/// last id) and the task ends when the receiver is dropped.
pub fn subscribe(
    store: Arc<dyn Store>,
    bus: &EventBus,
    last_event_id: Option<u64>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> mpsc::Receiver<Frame> {
    // Subscribe before reading the store so nothing published in between is missed.
    let rx = bus.receiver();
    let (tx, out) = mpsc::channel(SUBSCRIBER_BUFFER);
    tokio::spawn(async move {
        tokio::select! {
            r = follow(store, rx, &tx, last_event_id) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "event subscriber stopped");
                }
            }
            // Dropping `tx` ends the HTTP stream.
            () = shutdown => {}
        }
    });
    out
}

/// The client went away: the subscriber loop ends quietly.
struct Gone;

enum Stop {
    Gone,
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

impl From<Gone> for Stop {
    fn from(_: Gone) -> Self {
        Stop::Gone
    }
}

async fn send(tx: &mpsc::Sender<Frame>, frame: Frame) -> Result<(), Gone> {
    tx.send(frame).await.map_err(|_| Gone)
}

/// Sends every event after `*pos` from the store, or one `config_changed` when they are no
/// longer all retained.
async fn catch_up(store: &dyn Store, tx: &mpsc::Sender<Frame>, pos: &mut u64) -> Result<(), Stop> {
    loop {
        let batch = store.events_since(*pos, REPLAY_BATCH).await?;
        if batch.gap {
            *pos = batch.last_id;
            send(
                tx,
                Frame {
                    id: batch.last_id,
                    event: ControlEvent::ConfigChanged,
                },
            )
            .await?;
            return Ok(());
        }
        let n = batch.events.len();
        for ev in batch.events {
            *pos = ev.id;
            send(
                tx,
                Frame {
                    id: ev.id,
                    event: ev.event,
                },
            )
            .await?;
        }
        if n < REPLAY_BATCH {
            return Ok(());
        }
    }
}

async fn follow(
    store: Arc<dyn Store>,
    mut rx: broadcast::Receiver<BusMsg>,
    tx: &mpsc::Sender<Frame>,
    last_event_id: Option<u64>,
) -> Result<(), StoreError> {
    let result: Result<(), Stop> = async {
        let mut pos = match last_event_id {
            Some(n) => {
                let mut pos = n;
                catch_up(&*store, tx, &mut pos).await?;
                pos
            }
            None => store.last_event_id().await?,
        };
        loop {
            let ev = tokio::select! {
                _ = tx.closed() => return Err(Stop::Gone),
                ev = rx.recv() => ev,
            };
            match ev {
                Ok(BusMsg::Event(ev)) if ev.id <= pos => {}
                Ok(BusMsg::Event(ev)) if ev.id == pos + 1 => {
                    pos = ev.id;
                    send(
                        tx,
                        Frame {
                            id: ev.id,
                            event: ev.event,
                        },
                    )
                    .await?;
                }
                Ok(BusMsg::Event(_) | BusMsg::Wake)
                | Err(broadcast::error::RecvError::Lagged(_)) => {
                    catch_up(&*store, tx, &mut pos).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(Stop::Gone),
            }
        }
    }
    .await;
    match result {
        Ok(()) | Err(Stop::Gone) => Ok(()),
        Err(Stop::Store(e)) => Err(e),
    }
}
