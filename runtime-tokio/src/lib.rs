//! The Culex MQTT broker on tokio.
//!
//! Everything MQTT is decided in `culex-core` and the broker task is
//! `culex-runtime`'s; this crate opens the sockets, runs one task per
//! connection, races the event channel against the timer and talks to
//! Redis, all on tokio. [`run`] serves until the shutdown future completes.

mod conn;
mod store;

use std::future::Future;
use std::time::Instant;

use culex_runtime::driver::{self, AuthJob, ConnIds, Event, EventSource, Wake};
use culex_runtime::reload::obey;
use culex_runtime::settings::Bound;
use culex_runtime::{Clock, Limits, Settings, ShutdownOn, Signals};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::conn::TokioOutbox;

pub use culex_runtime::settings::Error;

/// Serves MQTT on every listener of `settings` until `shutdown` completes,
/// then closes every client, writes their presence and returns.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    serve(settings, ShutdownOn::new(Box::pin(shutdown))).await
}

/// Like [`run`], obeying `signals`: a reload re-reads the access settings
/// (see [`culex_runtime::reload`]), a shutdown stops.
pub async fn serve(settings: Settings, signals: impl Signals) -> Result<(), Error> {
    let listeners = culex_runtime::settings::open_listeners(&settings, TcpListener::from_std)?;
    run_on(listeners, &settings, signals).await
}

/// Like [`serve`], on listeners already bound (tests bind port 0).
///
/// # Errors
///
/// When the store of `persistence true` cannot be opened.
pub async fn run_on(
    listeners: Vec<Bound<TcpListener>>,
    settings: &Settings,
    signals: impl Signals,
) -> Result<(), Error> {
    let (events, events_rx) = mpsc::channel(driver::EVENT_QUEUE);
    let clock = Clock::start();
    let stored = events.clone();
    // A full queue means the broker task is busy and looks at the store
    // and the log lines before it waits again: the wake-up may be dropped.
    let prepared = driver::prepare::<TokioOutbox>(settings, &clock, move || {
        let _ = stored.try_send(Event::Nudge);
    })?;
    let (stop, stopped) = watch::channel(false);
    let ids = ConnIds::default();
    for Bound { socket: listener, listener: served } in listeners {
        let limits = served.limits(&settings.core, prepared.reports.clone());
        let accept =
            accept_loop(listener, ids.clone(), events.clone(), stopped.clone(), limits, prepared.connection_messages);
        tokio::spawn(accept);
    }
    let store = settings.redis.clone().map(|redis| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(store::run(redis, rx, events.clone()));
        move |request| {
            let _ = tx.send(request);
        }
    });
    let answers = events.clone();
    // Password hashing runs on the blocking pool, never on the broker task.
    let check = move |job: AuthJob| {
        let answers = answers.clone();
        tokio::spawn(async move {
            if let Ok((conn, result)) = tokio::task::spawn_blocking(job).await {
                let _ = answers.send(Event::Authenticated { conn, result }).await;
            }
        });
    };
    let source = Events(events_rx);
    let broker = tokio::spawn(driver::run(prepared, clock, source, store, check));
    let reload = async || {
        // Files are read on the blocking pool; the broker task never waits.
        let source = settings.reload.clone();
        if let Ok(Some(policies)) = tokio::task::spawn_blocking(move || source.load()).await {
            let _ = events.send(Event::Reload(Box::new(policies))).await;
        }
    };
    let report = async || {
        let _ = events.send(Event::Report).await;
    };
    obey(signals, reload, report).await;
    let _ = stop.send(true);
    let _ = events.send(Event::Shutdown).await;
    if let Err(error) = broker.await {
        warn!("broker task ended abnormally: {error}");
    }
    Ok(())
}

/// The broker task's events: the channel raced against the timer.
struct Events(mpsc::Receiver<Event<TokioOutbox>>);

impl EventSource<TokioOutbox> for Events {
    async fn next(&mut self, deadline: Option<Instant>) -> Wake<TokioOutbox> {
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = self.0.recv() => event.map_or(Wake::Closed, Wake::Event),
            () = timer => Wake::Timer,
        }
    }

    fn try_next(&mut self) -> Option<Event<TokioOutbox>> {
        self.0.try_recv().ok()
    }
}

/// Accepts connections until shutdown, logging each new one if
/// `connection_messages`.
async fn accept_loop(
    listener: TcpListener,
    ids: ConnIds,
    events: mpsc::Sender<Event<TokioOutbox>>,
    mut stopped: watch::Receiver<bool>,
    limits: Limits,
    connection_messages: bool,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    if connection_messages {
                        info!("New connection from {remote} on port {port}.");
                    }
                    tokio::spawn(conn::serve(stream, remote, ids.next(), limits.clone(), events.clone()));
                }
                // Out of descriptors and the like: wait a little, keep serving.
                Err(error) => {
                    warn!("accept failed on port {port}: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = stopped.changed() => return,
        }
    }
}
