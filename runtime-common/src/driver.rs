//! The broker task, written once for every runtime.
//!
//! It owns the core's [`Server`], takes [`Event`]s from the connection
//! tasks and the presence store, fires the timer, and hands presence
//! batches to the store task. A runtime provides only an [`EventSource`]
//! (its channel receiver raced against its timer) and a way to pass
//! [`StoreRequest`]s on.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use culex_core::auth::ListenerPolicies;
use culex_core::bridge::{BridgeId, Dial};
use culex_core::memory::MemoryGauge;
use culex_core::occupancy::Occupancy;
use culex_core::persistence::{Restore, StoredState};
use culex_core::policy::Refusal;
use culex_core::presence::{PresenceCommand, PresenceSettings, PresenceSync};
use culex_core::server::{Outbox, Server};
use culex_core::shard::{self, ShardId, home_shard};
use culex_core::{Broker, Config, QoS, Restorer, ShardRestorer};
use culex_core::{ConnId, Peer};
use tracing::{info, warn};

use crate::backlog::Thresholds;
use crate::clock::Clock;
use crate::cluster::NodeLink;
use crate::logging;
use crate::notify;
use crate::outbox::Writers;
use crate::persist::{self, Mirrored, NullStore, RedisStore, SharedCommitter};
use crate::reload::Reloaded;
use crate::reports::{ShardMail, WriterReports};
use crate::settings::{self, Settings};
use crate::shards::{MailBus, ShardLinks};

/// Names connections as the runtime accepts them, so that a connection's
/// first bytes follow its [`Event::Accepted`] at once instead of waiting
/// for the broker task to hand out an id (one round trip less per
/// connection). Shared by a runtime's accept loops.
#[derive(Debug, Clone, Default)]
pub struct ConnIds(Arc<AtomicU64>);

impl ConnIds {
    /// An id never handed out before.
    pub fn next(&self) -> ConnId {
        ConnId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// What the broker task handles, one at a time.
pub enum Event<O> {
    /// A socket was accepted and named (see [`ConnIds`]).
    Accepted {
        /// Its id.
        conn: ConnId,
        /// Where it came from.
        peer: Peer,
        /// Its writer.
        outbox: O,
    },
    /// A bridge's socket to its remote broker is open (see [`Dial`]).
    Dialed {
        /// The bridge.
        bridge: BridgeId,
        /// The socket's id (see [`ConnIds`]): its reads come as
        /// [`Event::Data`].
        conn: ConnId,
        /// Its writer.
        outbox: O,
    },
    /// A bridge's socket could not be opened.
    DialFailed {
        /// The bridge.
        bridge: BridgeId,
        /// Why, for the log.
        error: String,
    },
    /// The outcome of a probe [`Dial`].
    Probed {
        /// The bridge.
        bridge: BridgeId,
        /// The address took the connection.
        reachable: bool,
    },
    /// Bytes read.
    Data {
        /// The connection.
        conn: ConnId,
        /// The bytes, exactly as read.
        data: Bytes,
    },
    /// The socket ended.
    Closed {
        /// The connection.
        conn: ConnId,
    },
    /// Writers posted their progress to the [`WriterReports`] (see
    /// [`culex_core::congestion`]): a wake-up, sent by the connection task
    /// whose post found the board empty.
    WriterReports,
    /// The presence store's answer to a [`StoreRequest`].
    Store(StoreEvent),
    /// The outcome of an [`AuthJob`].
    Authenticated {
        /// The connection waiting.
        conn: ConnId,
        /// Accepted, or refused with a CONNACK code.
        result: Result<(), Refusal>,
    },
    /// The configuration was reloaded: its policies replace the ones in
    /// force (see [`Broker::replace_policy`]), its bridges the ones
    /// running.
    Reload(Box<Reloaded>),
    /// Other shards posted to this shard's [`ShardMail`] board: a
    /// wake-up, sent by the shard whose post found the board empty (see
    /// [`shards`](crate::shards)).
    ShardMail,
    /// A wake-up: the store's committer made batches durable (the figure
    /// is read from the [`Committer`]), or log lines wait to be published
    /// (`log_dest topic`, see [`logging::topic`](crate::logging::topic)).
    Nudge,
    /// SIGUSR1: say how the store stands (Mosquitto saves its database).
    Report,
    /// Stop: close every client, write their presence, return.
    Shutdown,
}

impl<O> Event<O> {
    /// The event that hands a new socket to the broker task: accepted
    /// from `peer`, or opened for `bridge`.
    pub fn opened(conn: ConnId, peer: Peer, outbox: O, bridge: Option<BridgeId>) -> Self {
        match bridge {
            Some(bridge) => Self::Dialed { bridge, conn, outbox },
            None => Self::Accepted { conn, peer, outbox },
        }
    }
}

impl<O> std::fmt::Debug for Event<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Accepted { conn, peer, .. } => write!(f, "Accepted({conn}, {:?} on {})", peer.remote, peer.listener),
            Self::Dialed { bridge, conn, .. } => write!(f, "Dialed({bridge:?}, {conn})"),
            Self::DialFailed { bridge, error } => write!(f, "DialFailed({bridge:?}, {error})"),
            Self::Probed { bridge, reachable } => write!(f, "Probed({bridge:?}, {reachable})"),
            Self::Data { conn, data } => write!(f, "Data({conn}, {} bytes)", data.len()),
            Self::Closed { conn } => write!(f, "Closed({conn})"),
            Self::WriterReports => f.write_str("WriterReports"),
            Self::ShardMail => f.write_str("ShardMail"),
            Self::Store(event) => write!(f, "Store({event:?})"),
            Self::Authenticated { conn, result } => write!(f, "Authenticated({conn}, {result:?})"),
            Self::Reload(_) => f.write_str("Reload"),
            Self::Nudge => f.write_str("Nudge"),
            Self::Report => f.write_str("Report"),
            Self::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// What the presence store task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// Connected, authenticated, scripts loaded.
    Connected,
    /// The last request failed; the text is safe to log.
    Failed(String),
    /// The batch in flight was applied; whether its
    /// [`PresenceCommand::Renew`] found this broker's lease lapsed (false
    /// if it had none).
    BatchDone { lease_lapsed: bool },
}

/// What the broker task asks of the presence store task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRequest {
    /// (Re)connect, authenticate and load the scripts.
    Connect,
    /// Run a batch as one pipeline.
    Batch(Vec<PresenceCommand>),
}

/// A password check for the runtime's blocking pool: run it off the
/// broker task, then send back [`Event::Authenticated`] with its result.
pub type AuthJob = Box<dyn FnOnce() -> (ConnId, Result<(), Refusal>) + Send>;

/// What woke the broker task.
#[derive(Debug)]
pub enum Wake<O> {
    /// An event arrived.
    Event(Event<O>),
    /// The deadline passed.
    Timer,
    /// Every sender is gone.
    Closed,
}

/// A runtime's event channel raced against its timer.
pub trait EventSource<O> {
    /// The next event, or [`Wake::Timer`] at `deadline` (never, if `None`).
    fn next(&mut self, deadline: Option<std::time::Instant>) -> impl Future<Output = Wake<O>> + Send;

    /// An event already queued, without waiting.
    fn try_next(&mut self) -> Option<Event<O>>;
}

/// Events handled before presence and timers get a turn.
const EVENTS_PER_TURN: usize = 256;

/// Events queued between the connection tasks and the broker task before
/// readers wait. Each holds at most one read (8 KiB): a flood costs at
/// most 4 MiB here, and a paused publisher has at most that much read
/// ahead. A larger queue only adds latency and memory: the broker task
/// takes up to [`EVENTS_PER_TURN`] at a time.
pub const EVENT_QUEUE: usize = 512;

/// How long shutdown waits for presence changes to reach Redis.
const PRESENCE_FLUSH: Duration = Duration::from_secs(3);

/// What a runtime starts from: the server, and the per-connection limits
/// its connection tasks apply.
#[derive(Debug)]
pub struct Prepared<O> {
    /// The broker and presence store.
    pub server: Server<O>,
    /// The access policies in force: their password files serve the
    /// [`AuthJob`]s.
    pub policies: ListenerPolicies,
    /// Log `New connection from ...` lines.
    pub connection_messages: bool,
    /// What the connections' outboxes share: their thresholds and where
    /// their writers post their progress.
    pub writers: Arc<Writers>,
    /// The store, with `persistence true`.
    pub persistence: Option<Persisting>,
    /// The other shards, when there are any.
    pub links: Option<ShardLinks>,
}

impl<O> Prepared<O> {
    /// The link to the other nodes of the cluster, for a cluster node: the
    /// runtime runs its tasks ([`cluster::run`](crate::cluster::run)) and
    /// stops them once the broker tasks are done.
    pub fn cluster(&self) -> Option<Arc<NodeLink>> {
        self.links.as_ref().and_then(|links| links.cluster.clone())
    }
}

/// The store's committer, shared by the shards, and how far this shard's
/// broker has been told it got.
#[derive(Debug)]
pub struct Persisting {
    committer: Arc<SharedCommitter>,
    shard: u16,
    /// The store's file; `None` for a cluster node's store that keeps
    /// nothing.
    path: Option<PathBuf>,
    told: u64,
    /// On a cluster node, the link that keeps its clients' wills in Redis.
    cluster: Option<Arc<NodeLink>>,
}

impl Persisting {
    /// Hands the broker's new batches to the committer and tells the
    /// broker what became durable.
    fn sync<O: Outbox>(&mut self, server: &mut Server<O>, clock: &Clock) {
        for batch in server.poll_store_batches() {
            if let Some(cluster) = &self.cluster {
                cluster.keep_wills(&batch);
            }
            self.committer.commit(self.shard, batch);
        }
        let durable = self.committer.durable(self.shard);
        if durable > self.told {
            self.told = durable;
            server.stored(clock.now(), durable);
        }
    }

    /// SIGUSR1: Mosquitto saves its database then; here every change is
    /// committed as it happens.
    fn report(&self) {
        let Some(path) = &self.path else { return };
        let size = self.committer.size().map_or_else(|| "size unknown".to_owned(), |n| format!("{n} bytes"));
        info!("The store {} is current ({size}): every change is committed as it happens.", path.display());
    }

    /// Commits what is left and, at the last shard to stop, stops the
    /// committer.
    fn finish<O: Outbox>(mut self, server: &mut Server<O>, clock: &Clock) {
        self.sync(server, clock);
        let Some(committer) = Arc::into_inner(self.committer) else { return };
        if committer.shutdown() {
            if let Some(cluster) = &self.cluster {
                cluster.store_committed();
            }
        } else if let Some(path) = &self.path {
            warn!("The store {} could not commit every change before exit.", path.display());
        }
    }
}

/// What a runtime sends a shard's broker task when woken from elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poke {
    /// [`Event::Nudge`]: the store or the log has something for it.
    Nudge,
    /// [`Event::ShardMail`]: another shard posted to its board.
    Mail,
}

impl Poke {
    /// The event that carries it.
    pub fn event<O>(self) -> Event<O> {
        match self {
            Self::Nudge => Event::Nudge,
            Self::Mail => Event::ShardMail,
        }
    }
}

/// Builds a server per shard for `settings` (`shards` of them, one at
/// least; see [`shards`](crate::shards)), each with a fresh seed for
/// assigned ids; with `persistence true` (one shard only), opens the
/// store, restores what it holds and starts its committer; then, started
/// as root, becomes the configured `user`. `wake(shard, poke)` wakes a
/// shard's broker task: the committer nudges it when batches become
/// durable, the logger when lines wait for `log_dest topic` (shard 0
/// publishes them), another shard when it posted mail.
///
/// # Errors
///
/// When the store cannot be opened or its thread started (see
/// [`OpenError`](crate::persist::OpenError)), or the broker cannot become
/// its `user` ([`privileges`](crate::privileges)): the broker does not
/// start.
pub fn prepare<O: Outbox>(
    settings: &Settings,
    clock: &Clock,
    shards: u16,
    wake: impl Fn(ShardId, Poke) + Send + Sync + 'static,
) -> Result<Vec<Prepared<O>>, settings::Error> {
    let shards = shards.max(1);
    let wake: Arc<dyn Fn(ShardId, Poke) + Send + Sync> = Arc::new(wake);
    logging::topic::on_lines({
        let wake = wake.clone();
        Arc::new(move || wake(ShardId(0), Poke::Nudge))
    });
    if settings.redis.is_none() {
        info!("No redis_host configured: client presence is written to this log only.");
    }
    if shards > 1 {
        info!("Running {shards} shards.");
    }
    let mail: Arc<[ShardMail]> = (0..shards).map(|_| ShardMail::default()).collect();
    // The connection and client limits hold for the process.
    let occupancy = Arc::new(Occupancy::new(&settings.core));
    let open: Arc<[AtomicUsize]> = (0..shards).map(|_| AtomicUsize::new(0)).collect();
    let wake_mail: Arc<dyn Fn(ShardId) + Send + Sync> = {
        let wake = wake.clone();
        Arc::new(move |to| wake(to, Poke::Mail))
    };
    let cluster = settings.redis.as_ref().and_then(|redis| {
        let name = redis.cluster.as_deref()?;
        info!("Node {} of cluster {name}.", redis.keys.broker_id);
        let restores_wills = settings.persistence.is_some();
        Some(Arc::new(NodeLink::new(redis.clone(), name, restores_wills, mail.clone(), wake_mail.clone())))
    });
    let node = cluster.as_ref().map(|link| shard::node_number(link.node()));
    let new_broker = |shard| new_broker(settings, shard, shards, node, &occupancy);
    // Each shard's broker, restored from the store they share if there is
    // one. A cluster node's store has a copy in Redis, and it journals
    // even without a file: its acknowledgements wait for Redis as they
    // would for a disk.
    let shared = settings.redis.as_ref().zip(cluster.as_ref()).map(|(redis, link)| {
        let name = redis.cluster.as_deref().unwrap_or_default();
        RedisStore::new(redis.clone(), name, link.node())
    });
    let brokers: Vec<(Broker, Option<Persisting>)> = if settings.persistence.is_some() || shared.is_some() {
        let conf = settings.persistence.as_ref();
        let (brokers, committer) = open_store(settings, conf, shared, clock, shards, &new_broker, &wake)?;
        let persisting = |shard| Persisting {
            committer: committer.clone(),
            shard,
            path: conf.map(culex_core::conf::PersistenceConf::path),
            told: 0,
            cluster: cluster.clone(),
        };
        brokers.into_iter().zip(0..).map(|(broker, shard)| (broker, Some(persisting(shard)))).collect()
    } else {
        (0..shards).map(|shard| (new_broker(ShardId(shard)), None)).collect()
    };
    // The inbox is read from where the store says it was read.
    if let Some(link) = &cluster {
        link.resume_inbox(brokers.iter().flat_map(|(broker, _)| broker.inbox_marks()));
    }
    let mut prepared = Vec::with_capacity(usize::from(shards));
    for ((broker, persistence), shard) in brokers.into_iter().zip((0..shards).map(ShardId)) {
        let links = (shards > 1 || cluster.is_some()).then(|| ShardLinks {
            me: shard,
            mail: mail.clone(),
            wake: wake_mail.clone(),
            open: open.clone(),
            cluster: cluster.clone(),
        });
        let presence = settings.redis.as_ref().map(|r| PresenceSync::new(PresenceSettings::with_lease(r.lease)));
        // What a restore queued (its first batch, the wills it published)
        // is taken at once.
        let server = Server::restored(clock.now(), broker, presence);
        prepared.push(prepare_shard(settings, clock, server, persistence, links));
    }
    // The listeners are bound (the runtimes bind before preparing), the
    // log and the store open: root is no longer needed. The store's files
    // go to the user, who may have to open them again (a start as that
    // user, a restart without root).
    if let Some(user) = &settings.process.user {
        let store = settings.persistence.as_ref().map(|conf| persist::files(&conf.path()));
        crate::privileges::drop_to(user, store.as_ref().map_or(&[][..], |files| &files[..]))?;
    }
    Ok(prepared)
}

/// Shard `shard` of `shards`'s broker, before any restore: a fresh seed
/// for assigned ids, the counts the shards share.
fn new_broker(
    settings: &Settings,
    shard: ShardId,
    shards: u16,
    node: Option<u64>,
    occupancy: &Arc<Occupancy>,
) -> Broker {
    // A cluster node journals even without a store (see `prepare`).
    let persistence = settings.core.persistence || node.is_some();
    let core = Config { id_seed: settings::random_seed(), persistence, ..settings.core.clone() };
    let mut broker = Broker::with_policy(core, Box::new(settings.policy.clone()));
    if settings.core.memory_limit.is_some() {
        broker.set_memory_gauge(Arc::new(HeapGauge));
    }
    broker.join_shards(shard, shards);
    if let Some(node) = node {
        broker.join_cluster(node);
    }
    broker.share_occupancy(occupancy.clone());
    broker
}

/// Opens the store (`conf`'s file, and a cluster node's copy in Redis,
/// `shared`), restores what it holds into the shards' brokers (each
/// session to its home shard, see
/// [`ShardRestorer`](culex_core::ShardRestorer)) and starts the committer
/// they share, which wakes a shard when its batches are durable.
fn open_store(
    settings: &Settings,
    conf: Option<&culex_core::conf::PersistenceConf>,
    shared: Option<RedisStore>,
    clock: &Clock,
    shards: u16,
    new_broker: &dyn Fn(ShardId) -> Broker,
    wake: &Arc<dyn Fn(ShardId, Poke) + Send + Sync>,
) -> Result<(Vec<Broker>, Arc<SharedCommitter>), settings::Error> {
    let now = clock.now();
    let (store, brokers) = if shards > 1 {
        // A bridge's local session lives on shard 0, as the bridge does.
        let hostname = settings::hostname();
        let bridges: Vec<String> = settings.bridges.iter().map(|b| b.local_client_id(&hostname)).collect();
        let home = move |id: &str| if bridges.iter().any(|b| b == id) { ShardId(0) } else { home_shard(id, shards) };
        let fresh = || ShardRestorer::new((0..shards).map(ShardId).map(new_broker).collect(), now, home.clone());
        let (store, restored) = restore(conf, shared, now.unix, fresh)?;
        (store, restored.finish())
    } else {
        let (store, restored) = restore(conf, shared, now.unix, || Restorer::new(new_broker(ShardId(0)), now))?;
        (store, vec![restored.finish()])
    };
    let wake = wake.clone();
    let committer = SharedCommitter::spawn(store, shards, move |shard| wake(ShardId(shard), Poke::Nudge))
        .map_err(|source| settings::Error::StoreThread { source })?;
    Ok((brokers, Arc::new(committer)))
}

/// The store and what it held, handed to a sink made by `fresh`: `conf`'s
/// file alone, or beside `shared` ([`Mirrored`]), or nothing.
fn restore<R: Restore>(
    conf: Option<&culex_core::conf::PersistenceConf>,
    shared: Option<RedisStore>,
    now: culex_core::UnixTime,
    mut fresh: impl FnMut() -> R,
) -> Result<(Box<dyn persist::Store>, R), settings::Error> {
    let opening = |conf: &culex_core::conf::PersistenceConf| {
        notify::status(&format!("Opening the store {}.", conf.path().display()));
    };
    let shared = match (conf, shared) {
        (Some(conf), None) => {
            opening(conf);
            let opened = persist::open_store(conf, now, &mut fresh)?;
            return Ok((opened.store, opened.restored));
        }
        (None, None) => return Ok((Box::new(NullStore::default()), fresh())),
        (_, Some(shared)) => shared,
    };
    let (own, own_state): (Box<dyn persist::Store>, StoredState) = match conf {
        Some(conf) => {
            opening(conf);
            let opened = persist::open_store(conf, now, &mut StoredState::default)?;
            (opened.store, opened.restored)
        }
        None => (Box::new(NullStore::default()), StoredState::default()),
    };
    notify::status("Reading this node's sessions from Redis.");
    let (store, state) =
        Mirrored::open(own, own_state, shared).map_err(|source| settings::Error::SharedStore { source })?;
    let mut restored = fresh();
    state.replay(&mut restored);
    Ok((Box::new(store), restored))
}

/// One shard's server around `server` (see [`prepare`]).
fn prepare_shard<O: Outbox>(
    settings: &Settings,
    clock: &Clock,
    mut server: Server<O>,
    persistence: Option<Persisting>,
    links: Option<ShardLinks>,
) -> Prepared<O> {
    let connection_messages = settings.core.connection_messages;
    let shard = links.as_ref().map_or(ShardId(0), |l| l.me);
    let policies = settings.policy.clone();
    let writers = Arc::new(Writers::new(Thresholds::of(&settings.core)));
    if let Some(links) = &links {
        server.post_shard_messages(Box::new(MailBus::new(links.clone())));
    }
    // The bridges' local sides live on shard 0; their subscriptions reach
    // the other shards as any session's do.
    if shard == ShardId(0) {
        let hostname = settings::hostname();
        for bridge in &settings.bridges {
            server.start_bridge(clock.now(), bridge.clone(), &hostname, settings::random_seed());
        }
    }
    Prepared { server, policies, connection_messages, writers, persistence, links }
}

/// What the broker task hands its runtime: password checks for the
/// blocking pool, sockets for the bridges.
pub struct Jobs<C, D> {
    /// Runs an [`AuthJob`] off the broker task.
    pub check: C,
    /// Opens a bridge's socket and answers with [`Event::Dialed`] or
    /// [`Event::DialFailed`] (for a probe, [`Event::Probed`]).
    pub dial: D,
}

impl<C, D> std::fmt::Debug for Jobs<C, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jobs")
    }
}

/// Runs the broker until [`Event::Shutdown`] or until every sender is
/// gone, then flushes presence to the store for a few seconds at most.
pub async fn run<O: Outbox, S: EventSource<O>>(
    prepared: Prepared<O>,
    clock: Clock,
    mut events: S,
    mut store: Option<impl FnMut(StoreRequest)>,
    jobs: Jobs<impl FnMut(AuthJob), impl FnMut(Dial)>,
) {
    let Jobs { mut check, mut dial } = jobs;
    let Prepared { mut server, mut policies, writers, mut persistence, links, .. } = prepared;
    let part = Part(links.as_ref());
    // Listeners bound, store restored, privileges dropped: the runtime
    // started its accept loops before this task.
    let mut census = part.first().then(|| notify::Census::ready(part.open(&server)));
    loop {
        let open = part.open(&server);
        if let Some(census) = census.as_mut() {
            census.update(open);
        }
        take_reports(&mut server, &writers.reports, &clock);
        if part.first() {
            publish_log_lines(&mut server, &clock);
        }
        start_auth_jobs(&mut server, &policies, &mut check);
        for job in server.poll_dials() {
            dial(job);
        }
        if let Some(links) = part.0 {
            take_mail(&mut server, links, &clock, false);
        }
        // After the mail: a connection it accepted (a claim answered) is
        // written online now, not once some later event wakes the task.
        poll_presence(&mut server, &clock, store.as_mut());
        // Last: the batches of everything above (the mail's too) go to the
        // committer before the task waits.
        if let Some(persisting) = persistence.as_mut() {
            persisting.sync(&mut server, &clock);
        }
        server.end_turn();
        let deadline = server.next_deadline().map(|at| clock.to_std(at));
        let mut event = match events.next(deadline).await {
            Wake::Event(event) => event,
            Wake::Timer => {
                server.timeout(clock.now());
                continue;
            }
            Wake::Closed => break,
        };
        // Take the next event only when it will be handled: one taken after
        // the last of a turn, or after Shutdown, would be lost.
        let mut stop = false;
        for turn in 1..=EVENTS_PER_TURN {
            if matches!(event, Event::Report) {
                match persistence.as_ref() {
                    Some(persisting) => persisting.report(),
                    None => info!("persistence is off: there is no store to save."),
                }
            }
            if let (Event::Data { .. }, Some(links)) = (&event, part.0) {
                take_mail(&mut server, links, &clock, true);
            }
            stop = handle(&mut server, &mut policies, &clock, event, &part);
            if stop || turn == EVENTS_PER_TURN {
                break;
            }
            match events.try_next() {
                Some(next) => event = next,
                None => break,
            }
        }
        if stop {
            break;
        }
    }
    if let Some(persisting) = persistence {
        persisting.finish(&mut server, &clock);
    }
    flush_presence(server, clock, events, store).await;
}

/// Hands the core what the writers posted.
fn take_reports<O: Outbox>(server: &mut Server<O>, reports: &WriterReports, clock: &Clock) {
    let taken = reports.take();
    if taken.is_empty() {
        return;
    }
    let now = clock.now();
    for (conn, progress) in taken {
        server.writer(now, conn, progress);
    }
}

/// Hands the server what the other shards posted to its board: before
/// it waits (`in_turn` false), or before it handles a read, which may
/// come from a client that saw what another shard acknowledged (see
/// [`Server::post_shard_messages`]).
fn take_mail<O: Outbox>(server: &mut Server<O>, links: &ShardLinks, clock: &Clock, in_turn: bool) {
    let Some(board) = links.mail.get(usize::from(links.me.0)) else { return };
    let taken = if in_turn { board.take_in_turn() } else { board.take() };
    if !taken.is_empty() {
        server.shard_messages(clock.now(), taken);
    }
}

/// Publishes the log lines waiting for `log_dest topic`, as Mosquitto
/// does: QoS 2, not retained.
fn publish_log_lines<O: Outbox>(server: &mut Server<O>, clock: &Clock) {
    let lines = logging::topic::take();
    if lines.is_empty() {
        return;
    }
    let now = clock.now();
    logging::topic::publishing(|| {
        for (topic, line) in lines {
            server.publish(now, topic, line.as_bytes(), QoS::ExactlyOnce, false);
        }
    });
}

/// A broker task's part among shards.
struct Part<'a>(Option<&'a ShardLinks>);

impl Part<'_> {
    /// Shard 0, or a broker alone: it publishes the log lines, runs the
    /// bridges and speaks for the process (the service manager's status,
    /// the reload and stop lines).
    fn first(&self) -> bool {
        self.0.is_none_or(|links| links.me == ShardId(0))
    }

    /// The connections open in every shard, with `server`'s now.
    fn open<O: Outbox>(&self, server: &Server<O>) -> usize {
        let own = server.connections();
        self.0.map_or(own, |links| links.open_connections(own))
    }
}

/// Handles one event; true on shutdown.
fn handle<O: Outbox>(
    server: &mut Server<O>,
    policies: &mut ListenerPolicies,
    clock: &Clock,
    event: Event<O>,
    part: &Part<'_>,
) -> bool {
    let now = clock.now();
    match event {
        Event::Reload(reloaded) => {
            let Reloaded { policies: reloaded, bridges } = *reloaded;
            let previous = std::mem::replace(policies, reloaded);
            let current = &*policies;
            server.replace_policy(now, Box::new(current.clone()), &|client| current.keeps(&previous, client));
            if part.first() {
                // Only now does it apply: a client that reads this line
                // and connects is judged by the new files (the runtime
                // queues the reload for shard 0 last).
                info!("Password and ACL files reloaded.");
                server.reload_bridges(now, &bridges, &settings::hostname(), settings::random_seed());
                notify::ready(&format!("Configuration reloaded. {}", notify::open_connections(part.open(server))));
            }
        }
        Event::Accepted { conn, peer, outbox } => server.accept_as(now, conn, peer, outbox),
        Event::Dialed { bridge, conn, outbox } => server.dialed(now, bridge, conn, outbox),
        Event::DialFailed { bridge, error } => server.dial_failed(now, bridge, &error),
        Event::Probed { bridge, reachable } => server.probed(now, bridge, reachable),
        Event::Data { conn, data } => server.received(now, conn, &data),
        Event::Closed { conn } => server.closed(now, conn),
        // Taken at the top of the loop.
        Event::WriterReports | Event::ShardMail | Event::Nudge => {}
        // Answered by the loop, which holds the store.
        Event::Report => {}
        Event::Authenticated { conn, result } => server.authenticated(now, conn, result),
        Event::Store(event) => handle_store(server, now.instant, event),
        Event::Shutdown => {
            if let Some(cluster) = part.0.and_then(|links| links.cluster.as_ref()) {
                cluster.closing();
            }
            if part.first() {
                let open = part.open(server);
                notify::stopping(&format!("Stopping: closing {open} client connections."));
                info!("culex version {} terminating, closing {open} client connections.", env!("CARGO_PKG_VERSION"));
            }
            server.shutdown(now);
            return true;
        }
    }
    false
}

/// Passes the presence store's answer on.
fn handle_store<O: Outbox>(server: &mut Server<O>, now: culex_core::Instant, event: StoreEvent) {
    if let Some(presence) = server.presence_mut() {
        match event {
            StoreEvent::Connected => presence.handle_connected(now),
            StoreEvent::Failed(error) => presence.handle_failure(now, &error),
            StoreEvent::BatchDone { lease_lapsed } => presence.handle_batch_done(now, lease_lapsed),
        }
    }
}

/// Hands every password waiting to be checked to the runtime's pool,
/// each checked against the password file of its listener.
fn start_auth_jobs<O: Outbox>(server: &mut Server<O>, policies: &ListenerPolicies, check: &mut impl FnMut(AuthJob)) {
    for request in server.poll_auth_requests() {
        // The policy defers only when the listener has a password file.
        let verifier = policies.verifier(request.listener, request.username.as_deref().unwrap_or_default());
        let password = request.password;
        let conn = request.conn;
        check(Box::new(move || {
            // No password checks as the empty one: the same work, and
            // always a refusal.
            let password = password.as_ref().map_or(&b""[..], |p| p.as_bytes());
            let accepted = verifier.is_some_and(|v| v.verify(password));
            (conn, if accepted { Ok(()) } else { Err(Refusal::NotAuthorized) })
        }));
    }
}

/// Starts a connection attempt or sends the next batch, if it is time.
fn poll_presence<O: Outbox>(server: &mut Server<O>, clock: &Clock, store: Option<&mut impl FnMut(StoreRequest)>) {
    let (Some(presence), Some(store)) = (server.presence_mut(), store) else { return };
    let now = clock.now().instant;
    if presence.poll_connect(now) {
        store(StoreRequest::Connect);
    }
    if let Some(batch) = presence.poll_batch(now) {
        store(StoreRequest::Batch(batch.to_vec()));
    }
}

/// After shutdown: keeps the presence store going until every change is
/// written or [`PRESENCE_FLUSH`] is over. Other events are dropped: their
/// connections are closed already.
async fn flush_presence<O: Outbox, S: EventSource<O>>(
    mut server: Server<O>,
    clock: Clock,
    mut events: S,
    mut store: Option<impl FnMut(StoreRequest)>,
) {
    if store.is_none() {
        return;
    }
    let give_up = std::time::Instant::now() + PRESENCE_FLUSH;
    loop {
        poll_presence(&mut server, &clock, store.as_mut());
        let pending = server.presence_mut().map_or(0, |p| p.pending());
        if pending == 0 {
            return;
        }
        if std::time::Instant::now() >= give_up {
            warn!(pending, "presence changes not written to Redis before exit");
            return;
        }
        let deadline = server.next_deadline().map_or(give_up, |at| clock.to_std(at).min(give_up));
        match events.next(Some(deadline)).await {
            Wake::Event(Event::Store(event)) => handle_store(&mut server, clock.now().instant, event),
            Wake::Event(_) | Wake::Timer => {}
            Wake::Closed => {
                warn!(pending, "presence changes not written to Redis before exit");
                return;
            }
        }
    }
}

/// The heap the binary's allocator holds ([`culex_heap::CountingHeap`]),
/// for `memory_limit`.
#[derive(Debug)]
struct HeapGauge;

impl MemoryGauge for HeapGauge {
    fn in_use(&self) -> usize {
        culex_heap::in_use()
    }
}
