//! The Culex MQTT broker on async-std.
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

use async_std::channel;
use async_std::net::TcpListener;
use culex_core::Broker;
use culex_core::presence::{PresenceSettings, PresenceSync};
use culex_core::server::Server;
use culex_runtime::{Clock, Settings};
use futures_lite::FutureExt;
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
    let (events, events_rx) = channel::bounded(EVENT_QUEUE);
    let (stop, stopped) = channel::bounded::<()>(1);
    for listener in listeners {
        async_std::task::spawn(accept_loop(
            listener,
            events.clone(),
            stopped.clone(),
            backlog_limit,
            connection_messages,
        ));
    }
    let store = settings.redis.map(|redis| {
        let (tx, rx) = channel::unbounded();
        async_std::task::spawn(store::run(redis, rx, events.clone()));
        tx
    });
    let broker = async_std::task::spawn(driver::run(server, clock, events_rx, store));
    shutdown.await;
    // Closing the channel wakes every accept loop.
    drop(stop);
    let _ = events.send(Event::Shutdown).await;
    broker.await;
}

async fn accept_loop(
    listener: TcpListener,
    events: channel::Sender<Event>,
    stopped: channel::Receiver<()>,
    backlog: usize,
    connection_messages: bool,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    loop {
        let accepted = async { Some(listener.accept().await) }.or(async {
            let _ = stopped.recv().await;
            None
        });
        match accepted.await {
            Some(Ok((stream, remote))) => {
                if connection_messages {
                    info!("New connection from {} on port {port}.", remote);
                }
                async_std::task::spawn(conn::serve(stream, remote, backlog, events.clone()));
            }
            // Out of descriptors and the like: wait a little, keep serving.
            Some(Err(error)) => {
                warn!("accept failed on port {port}: {error}");
                async_std::task::sleep(std::time::Duration::from_millis(100)).await;
            }
            None => return,
        }
    }
}
