//! The Culex MQTT broker on tokio.
//!
//! Everything MQTT is decided in `culex-core` (see its crate docs for the
//! run loop); this crate moves bytes between sockets and the core, runs the
//! timer and executes the Redis presence calls. [`run`] serves until the
//! shutdown future completes.

mod conn;
mod driver;
mod store;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use culex_core::Broker;
use culex_core::presence::{PresenceSettings, PresenceSync};
use culex_core::server::Server;
use culex_runtime::{Clock, Settings};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::driver::Event;

/// Why the broker could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
}

/// Events queued between the sockets and the broker task before readers wait.
const EVENT_QUEUE: usize = 4096;

/// Serves MQTT on every listener of `settings` until `shutdown` completes,
/// then closes every client, writes their presence and returns.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let clock = Clock::start();
    let mut listeners = Vec::new();
    for addr in &settings.listeners {
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                info!("Opening listen socket on {addr}.");
                listeners.push(listener);
            }
            Err(source) if culex_runtime::settings::may_skip(addr, &source) => {
                warn!("Warning: not listening on {addr}: {source}");
            }
            Err(source) => return Err(Error::Bind { addr: *addr, source }),
        }
    }
    run_on(listeners, settings, clock, shutdown).await;
    Ok(())
}

/// Like [`run`], on listeners already bound (tests bind port 0).
pub async fn run_on(listeners: Vec<TcpListener>, settings: Settings, clock: Clock, shutdown: impl Future<Output = ()>) {
    let mut core = settings.core.clone();
    core.id_seed = culex_runtime::settings::random_seed();
    let backlog_limit = culex_runtime::settings::backlog_limit(&core);
    let connection_messages = core.connection_messages;
    let presence = settings.redis.as_ref().map(|_| PresenceSync::new(PresenceSettings::default()));
    if settings.redis.is_none() {
        info!("No redis_host configured: client presence is written to this log only.");
    }
    let server = Server::new(Broker::new(core), presence);
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (stop, stopped) = watch::channel(false);
    for listener in listeners {
        tokio::spawn(accept_loop(listener, events.clone(), stopped.clone(), backlog_limit, connection_messages));
    }
    let store = settings.redis.map(|redis| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(store::run(redis, rx, events.clone()));
        tx
    });
    let broker = tokio::spawn(driver::run(server, clock, events_rx, store));
    shutdown.await;
    let _ = stop.send(true);
    let _ = events.send(Event::Shutdown).await;
    if let Err(error) = broker.await {
        warn!("broker task ended abnormally: {error}");
    }
}

async fn accept_loop(
    listener: TcpListener,
    events: mpsc::Sender<Event>,
    mut stopped: watch::Receiver<bool>,
    backlog: usize,
    connection_messages: bool,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    if connection_messages {
                    info!("New connection from {} on port {port}.", remote);
                }
                    tokio::spawn(conn::serve(stream, remote, backlog, events.clone()));
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
