//! The broker task: owns the core's [`Server`], feeds it events from the
//! connection tasks, the timer and the presence store, and hands presence
//! batches to the store task.

use std::net::SocketAddr;
use std::time::Duration;

use async_std::channel::{Receiver, Sender};
use bytes::Bytes;
use culex_core::ConnId;
use culex_core::presence::PresenceCommand;
use culex_core::server::Server;
use culex_runtime::Clock;
use futures_lite::FutureExt;
use tracing::{info, warn};

use crate::conn::AsyncStdOutbox;
use crate::store::StoreRequest;

/// Events handled one by one by the broker task; several queued ones are
/// handled before the presence store is polled again.
#[derive(Debug)]
pub(crate) enum Event {
    /// A socket was accepted; the reply carries its id.
    Accepted { remote: SocketAddr, outbox: AsyncStdOutbox, reply: Sender<ConnId> },
    /// Bytes read.
    Data { conn: ConnId, data: Bytes },
    /// The socket ended.
    Closed { conn: ConnId },
    /// The presence store connected and authenticated.
    StoreConnected,
    /// The presence store's last request failed.
    StoreFailed(String),
    /// The presence store applied the batch in flight.
    StoreBatchDone,
    /// Stop: close every client, write presence, return.
    Shutdown,
}

/// Events handled before presence and timers get a turn.
const EVENTS_PER_TURN: usize = 256;

/// How long shutdown waits for presence changes to reach Redis.
const PRESENCE_FLUSH: Duration = Duration::from_secs(3);

/// Runs until [`Event::Shutdown`] (or every sender is gone).
pub(crate) async fn run(
    mut server: Server<AsyncStdOutbox>,
    clock: Clock,
    events: Receiver<Event>,
    store: Option<Sender<StoreRequest>>,
) {
    loop {
        poll_presence(&mut server, &clock, store.as_ref());
        let deadline = server.next_deadline().map(|at| clock.to_std(at));
        let event = async { Some(events.recv().await.ok()) }.or(async {
            sleep(deadline).await;
            None
        });
        let Some(event) = event.await else {
            server.timeout(clock.now());
            continue;
        };
        let Some(mut event) = event else { break };
        let mut stop = false;
        for _ in 0..EVENTS_PER_TURN {
            stop = handle(&mut server, &clock, event);
            match events.try_recv() {
                Ok(next) if !stop => event = next,
                _ => break,
            }
        }
        if stop {
            break;
        }
    }
    flush_presence(server, clock, events, store).await;
}

async fn sleep(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => {
            async_io::Timer::at(at).await;
        }
        None => std::future::pending().await,
    }
}

/// Handles one event; true on shutdown.
fn handle(server: &mut Server<AsyncStdOutbox>, clock: &Clock, event: Event) -> bool {
    let now = clock.now();
    match event {
        Event::Accepted { remote, outbox, reply } => {
            let conn = server.accept(now, Some(remote), outbox);
            let _ = reply.try_send(conn);
        }
        Event::Data { conn, data } => server.received(now, conn, &data),
        Event::Closed { conn } => server.closed(now, conn),
        Event::StoreConnected => with_presence(server, |p| p.handle_connected()),
        Event::StoreFailed(error) => with_presence(server, |p| p.handle_failure(now.instant, &error)),
        Event::StoreBatchDone => with_presence(server, |p| p.handle_batch_done()),
        Event::Shutdown => {
            info!(
                "culex version {} terminating, closing {} client connections.",
                env!("CARGO_PKG_VERSION"),
                server.connections()
            );
            server.shutdown(now);
            return true;
        }
    }
    false
}

fn with_presence(server: &mut Server<AsyncStdOutbox>, f: impl FnOnce(&mut culex_core::presence::PresenceSync)) {
    if let Some(presence) = server.presence_mut() {
        f(presence);
    }
}

/// Starts a connection attempt or sends the next batch, if it is time.
fn poll_presence(server: &mut Server<AsyncStdOutbox>, clock: &Clock, store: Option<&Sender<StoreRequest>>) {
    let (Some(presence), Some(store)) = (server.presence_mut(), store) else { return };
    if presence.poll_connect(clock.now().instant) {
        let _ = store.try_send(StoreRequest::Connect);
    }
    if let Some(batch) = presence.poll_batch() {
        let batch: Vec<PresenceCommand> = batch.to_vec();
        let _ = store.try_send(StoreRequest::Batch(batch));
    }
}

/// After shutdown: keeps the presence store going until every change is
/// written or the flush time is over.
async fn flush_presence(
    mut server: Server<AsyncStdOutbox>,
    clock: Clock,
    events: Receiver<Event>,
    store: Option<Sender<StoreRequest>>,
) {
    let Some(store) = store else { return };
    let give_up = std::time::Instant::now() + PRESENCE_FLUSH;
    loop {
        poll_presence(&mut server, &clock, Some(&store));
        let pending = server.presence_mut().map_or(0, |p| p.pending());
        if pending == 0 {
            return;
        }
        let deadline = server.next_deadline().map(|at| clock.to_std(at).min(give_up)).unwrap_or(give_up);
        let event = async { Some(events.recv().await.ok()) }.or(async {
            sleep(Some(deadline)).await;
            None
        });
        let Some(event) = event.await else {
            if std::time::Instant::now() >= give_up {
                warn!(pending, "presence changes not written to Redis before exit");
                return;
            }
            continue;
        };
        match event {
            Some(Event::StoreConnected | Event::StoreFailed(_) | Event::StoreBatchDone) => {
                if let Some(event) = event {
                    handle(&mut server, &clock, event);
                }
            }
            Some(_) => {}
            None => {
                warn!(pending, "presence changes not written to Redis before exit");
                return;
            }
        }
    }
}
