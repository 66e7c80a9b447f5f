//! The Culex MQTT broker on async-std.
//!
//! Everything MQTT is decided in `culex-core` and the broker task is
//! `culex-runtime`'s; this crate opens the sockets, runs one task per
//! connection, races the event channel against the timer and talks to
//! Redis, all on async-std. [`run`] serves until the shutdown future
//! completes.

mod conn;
mod store;

use std::future::Future;
use std::time::Instant;

use async_io::Async;
use async_std::channel::{self, Receiver, Sender};
use async_std::net::TcpListener;
use culex_core::Remote;
use culex_core::bridge::Dial;
use culex_core::shard::ShardId;
use culex_runtime::driver::{self, AuthJob, ConnIds, Event, EventSource, Jobs, Wake};
use culex_runtime::reload::obey;
use culex_runtime::settings::{Bound, unix_remote};
use culex_runtime::shards::{Route, ShardEnd};
use culex_runtime::tls::ClientConfigs;
use culex_runtime::{Clock, Limits, Listening, Settings, ShutdownOn, Signals};
use futures_lite::FutureExt;
use tracing::{info, warn};

use crate::conn::AsyncStdOutbox;

pub use culex_runtime::settings::Error;

/// Serves MQTT on every listener of `settings` until `shutdown` completes,
/// then closes every client, writes their presence and returns.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    serve(settings, ShutdownOn::new(Box::pin(shutdown))).await
}

/// Like [`run`], obeying `signals`: a reload re-reads the access settings
/// (see [`culex_runtime::reload`]), a shutdown stops.
pub async fn serve(settings: Settings, signals: impl Signals) -> Result<(), Error> {
    let listeners = culex_runtime::settings::open_listeners(&settings)?;
    let served = run_on(listeners, &settings, signals).await;
    culex_runtime::settings::remove_run_files(&settings);
    served
}

/// Like [`serve`], on listeners already bound (tests bind port 0).
///
/// # Errors
///
/// When the store of `persistence true` cannot be opened, or a listener
/// cannot join the reactor.
pub async fn run_on(listeners: Vec<Bound<Listening>>, settings: &Settings, signals: impl Signals) -> Result<(), Error> {
    let shards = settings.process.shards.count(std::thread::available_parallelism().map_or(1, usize::from));
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| channel::bounded(driver::EVENT_QUEUE)).unzip();
    let clock = Clock::start();
    let pokes = senders.clone();
    // A full queue means the broker task is busy and looks at the store,
    // the log lines and its mail before it waits again: the wake-up may
    // be dropped.
    let prepared = driver::prepare::<AsyncStdOutbox>(settings, &clock, shards, move |shard, poke| {
        if let Some(events) = pokes.get(usize::from(shard.0)) {
            let _ = events.try_send(poke.event());
        }
    })?;
    let route = Route::of(&prepared, &senders);
    let cluster = prepared[0].cluster();
    let linked =
        cluster.clone().map(|link| async_std::task::spawn(culex_runtime::cluster::run(link, async_std::task::sleep)));
    let (stop, stopped) = channel::bounded::<()>(1);
    let ids = ConnIds::default();
    for Bound { socket, listener: served } in listeners {
        let limits = served.limits(settings, route.end(0).writers.clone());
        let port = socket.port();
        let listener = Listener::new(socket).map_err(|source| Error::Bind { addr: served.addr.clone(), source })?;
        let accept = accept_loop(
            (listener, port),
            ids.clone(),
            route.clone(),
            stopped.clone(),
            limits,
            served.logs_connections(prepared[0].connection_messages),
        );
        async_std::task::spawn(accept);
    }
    let mut brokers = Vec::with_capacity(prepared.len());
    for (shard, (prepared, events_rx)) in prepared.into_iter().zip(receivers).enumerate() {
        let events = route.end(shard).events.clone();
        let store = settings.redis.as_ref().map(|redis| {
            let (tx, rx) = channel::unbounded();
            let redis = redis.for_shard(ShardId(u16::try_from(shard).unwrap_or(0)), shards);
            async_std::task::spawn(store::run(redis, rx, events.clone()));
            move |request| {
                let _ = tx.try_send(request);
            }
        });
        let answers = events.clone();
        // Password hashing runs on the blocking pool, never on the broker task.
        let check = move |job: AuthJob| {
            let answers = answers.clone();
            async_std::task::spawn(async move {
                let (conn, result) = async_std::task::spawn_blocking(job).await;
                let _ = answers.send(Event::Authenticated { conn, result }).await;
            });
        };
        let bridges = ShardEnd { events, writers: prepared.writers.clone() };
        let dial =
            dialer(ids.clone(), settings.bridge_limits(prepared.writers.clone()), settings.bridge_tls.clone(), bridges);
        let source = Events(events_rx);
        brokers.push(async_std::task::spawn(driver::run(prepared, clock, source, store, Jobs { check, dial })));
    }
    let reload = async || {
        // Files are read on the blocking pool; the broker task never waits.
        let source = settings.reload.clone();
        if let Some(reloaded) = async_std::task::spawn_blocking(move || source.load()).await {
            // Shard 0 last: it says the files are in force once every
            // shard has the reload queued ahead of any later connection.
            for events in senders.iter().rev() {
                let _ = events.send(Event::Reload(Box::new(reloaded.clone()))).await;
            }
        }
    };
    let report = async || {
        let _ = senders[0].send(Event::Report).await;
    };
    obey(signals, reload, report).await;
    // Closing the channel wakes every accept loop.
    drop(stop);
    for events in &senders {
        let _ = events.send(Event::Shutdown).await;
    }
    for broker in brokers {
        broker.await;
    }
    if let (Some(link), Some(linked)) = (cluster, linked) {
        link.stop();
        linked.await;
    }
    Ok(())
}

/// Opens bridges' sockets: the connect on the blocking pool (see
/// [`culex_runtime::dial`]), then a connection task as for an accepted
/// socket.
fn dialer(ids: ConnIds, limits: Limits, tls: ClientConfigs, shard: ShardEnd<EventSender>) -> impl FnMut(Dial) {
    let route = Route::new(vec![shard]);
    move |job: Dial| {
        let (conn, limits, tls, route) = (ids.next(), limits.clone(), tls.clone(), route.clone());
        async_std::task::spawn(async move {
            let bridge = job.bridge;
            let (connected, job) =
                async_std::task::spawn_blocking(move || (culex_runtime::dial::connect(&job, &tls), job)).await;
            let event = match (connected, job.probe) {
                (dialed, true) => Event::Probed { bridge, reachable: dialed.is_ok() },
                (Ok(dialed), false) => {
                    let peer = dialed.stream.peer_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
                    let stream = async_std::net::TcpStream::from(dialed.stream);
                    let opened = Some((bridge, dialed.link));
                    return conn::serve(stream, Remote::Tcp(peer), conn, limits, route, opened).await;
                }
                (Err(error), false) => Event::DialFailed { bridge, error: error.to_string() },
            };
            let _ = route.end(0).events.send(event).await;
        });
    }
}

/// Where a broker task's events are sent.
type EventSender = Sender<Event<AsyncStdOutbox>>;

/// The broker task's events: the channel raced against the timer.
struct Events(Receiver<Event<AsyncStdOutbox>>);

impl EventSource<AsyncStdOutbox> for Events {
    async fn next(&mut self, deadline: Option<Instant>) -> Wake<AsyncStdOutbox> {
        let timer = async {
            match deadline {
                Some(at) => {
                    async_io::Timer::at(at).await;
                }
                None => std::future::pending().await,
            }
            Wake::Timer
        };
        async { self.0.recv().await.map_or(Wake::Closed, Wake::Event) }.or(timer).await
    }

    fn try_next(&mut self) -> Option<Event<AsyncStdOutbox>> {
        self.0.try_recv().ok()
    }
}

/// A listening socket on the reactor.
enum Listener {
    Tcp(TcpListener),
    /// With the name its clients are logged by.
    Unix(Remote, Async<std::os::unix::net::UnixListener>),
}

impl Listener {
    fn new(socket: Listening) -> std::io::Result<Self> {
        Ok(match socket {
            Listening::Tcp(socket) => Self::Tcp(TcpListener::from(socket)),
            Listening::Unix(socket) => Self::Unix(unix_remote(&socket), Async::new(socket)?),
        })
    }

    /// Accepts the next connection and starts serving it.
    async fn accept(&self, nodelay: bool, start: impl FnOnce(Remote) -> Serve) -> std::io::Result<()> {
        match self {
            Self::Tcp(listener) => {
                let (stream, remote) = listener.accept().await?;
                // `set_tcp_nodelay`: by default small acknowledgements do
                // not wait for Nagle's timer.
                let _ = stream.set_nodelay(nodelay);
                start(remote.into()).run(stream);
            }
            Self::Unix(path, listener) => {
                let (stream, _) = listener.accept().await?;
                start(path.clone()).run(conn::UnixSocket::from(stream));
            }
        }
        Ok(())
    }
}

/// What a new connection is served with.
struct Serve {
    remote: Remote,
    conn: culex_core::ConnId,
    limits: Limits,
    route: Route<EventSender>,
}

impl Serve {
    fn run(self, stream: impl conn::Socket) {
        async_std::task::spawn(conn::serve(stream, self.remote, self.conn, self.limits, self.route, None));
    }
}

/// Accepts connections until shutdown, logging each new one if
/// `connection_messages`.
async fn accept_loop(
    (listener, port): (Listener, u16),
    ids: ConnIds,
    route: Route<EventSender>,
    stopped: Receiver<()>,
    limits: Limits,
    connection_messages: bool,
) {
    let start = |remote: Remote| {
        if connection_messages {
            info!("New connection from {remote} on port {port}.");
        }
        Serve { remote, conn: ids.next(), limits: limits.clone(), route: route.clone() }
    };
    loop {
        let accepted = async { Some(listener.accept(limits.nodelay, start).await) }.or(async {
            let _ = stopped.recv().await;
            None
        });
        match accepted.await {
            Some(Ok(())) => {}
            // Out of descriptors and the like: wait a little, keep serving.
            Some(Err(error)) => {
                warn!("accept failed on port {port}: {error}");
                async_std::task::sleep(std::time::Duration::from_millis(100)).await;
            }
            None => return,
        }
    }
}
