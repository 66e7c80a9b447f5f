//! A node's link to the other nodes of its cluster (`cluster`, see
//! docs/cluster.md), over the Redis named by `redis_host`. What crosses
//! and when is decided by [`culex_core::shard::nodes`]; this moves it.
//!
//! Three tasks share one [`NodeLink`], each with a Redis connection of its
//! own (a blocking read would hold up a shared one):
//!
//! - the **writer** takes what the shards posted to shards of other nodes,
//!   appends one entry per receiving node to that node's inbox stream
//!   (`XADD`) and, once Redis has them, tells the posting shards
//!   ([`ShardMessage::Stored`]): a publisher's PUBACK or PUBCOMP waits for
//!   that. It also removes the entries of this node's inbox that the local
//!   shards no longer need.
//! - the **reader** reads this node's inbox (`XREAD`, from the start at
//!   start-up: what a crash left unread is read again) and posts each frame
//!   to its local shard's board.
//! - the **heartbeat** renews this node's liveness key and registration
//!   every second and reads the others': a node whose key lapsed is gone
//!   ([`ShardMessage::Lapsed`], then [`ShardMessage::Left`]; only Left
//!   for one that withdrew its registration), a new run joins
//!   ([`ShardMessage::Joined`], before its earlier run leaves); after the
//!   first reading, the shards hear [`ShardMessage::NodesRead`]. What
//!   each reading means is decided by [`culex_core::shard::liveness`].
//!
//! A node that finds its liveness lapsed and its run reaped by another
//! (it was paused or cut off past [`LIVENESS`]) closes every client
//! connection without its will ([`ShardMessage::CountedGone`]): the others
//! published the wills and swept the presence already.
//!
//! The heartbeat also keeps this node's connected clients' wills in Redis
//! (as the journal records them), publishes once those of a node that is
//! gone (the node that first marks it reaped does, and deletes its
//! presence leases so that its clients are swept offline at once), and at
//! start those its own previous run left (unless its store publishes
//! them).
//!
//! Keys, under the cluster's name `<c>`: `<c>:nodes` (hash: node name to
//! `<run> <shards>`), `<c>:alive:<node>` (its run, expiring after
//! [`LIVENESS`]), `<c>:inbox:<node>` (stream; fields `n` node, `r` run,
//! `k` shards, `s` the batch's number, `t` the receiver's run it is for,
//! `b` batch),
//! `<c>:wills:<node>:<run>` (hash: client id to its will),
//! `<c>:reaped:<node>:<run>` (who published a gone run's wills),
//! `<c>:epoch:<client>` (the client id's ownership epoch, a counter the
//! writer starts at its clock's milliseconds, increments for each
//! connection and reads for the shards' checks,
//! [`OwnerAsk`](culex_core::shard::nodes::OwnerAsk)). The node's store
//! has its hashes under `{<c>:store:<node>}`, written by the store's
//! thread ([`RedisStore`](crate::persist::RedisStore)).
//! Every command names one of these keys, so on a Redis Cluster each goes
//! to the member holding its slot ([`Commands`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};

use culex_core::ClientId;
use culex_core::Message;
use culex_core::persistence::{InboxMark, StoreBatch, StoreOp};
use culex_core::shard::liveness::{Heartbeat, Registered, Renewal, judge, to_read};
use culex_core::shard::nodes::{
    Change, Directory, InboxEntry, InboxLedger, NodeRun, Outbound, TAKEOVER_WAIT, covered, decode_will,
    droppable_while_down, encode_will,
};
use culex_core::shard::wire::decode_batch;
use culex_core::shard::{HandedSession, ShardId, ShardMessage, home_shard, node_number};
use event_listener::Event;
use redis::{RedisResult, Value};
use tracing::{info, warn};

use crate::persist::RedisStore;
use crate::redis_conn::{
    BlockingConnection, Commands, KnownMembers, REDIS_TIMEOUT, RedisConnection, describe_error, open_blocking,
};
use crate::reports::{Board, ShardMail};
use crate::settings::{RedisSettings, shard_broker_id};
use crate::sync::{Mutex, MutexGuard};

pub use culex_core::shard::liveness::LIVENESS;

/// How often the heartbeat renews this node and reads the others.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a read of the inbox waits for an entry before looking again.
const READ_BLOCK: Duration = Duration::from_secs(1);

/// Entries read from the inbox at a time.
const READ_COUNT: usize = 256;

/// The Redis keys of one cluster.
#[derive(Debug, Clone)]
struct Keys {
    nodes: String,
    prefix: String,
}

impl Keys {
    fn new(cluster: &str) -> Self {
        Self { nodes: format!("{cluster}:nodes"), prefix: cluster.to_owned() }
    }

    fn alive(&self, node: &str) -> String {
        format!("{}:alive:{node}", self.prefix)
    }

    fn inbox(&self, node: &str) -> String {
        format!("{}:inbox:{node}", self.prefix)
    }

    fn wills(&self, node: &str, run: u64) -> String {
        format!("{}:wills:{node}:{run}", self.prefix)
    }

    fn reaped(&self, node: &str, run: u64) -> String {
        format!("{}:reaped:{node}:{run}", self.prefix)
    }

    fn epoch(&self, client: &str) -> String {
        format!("{}:epoch:{client}", self.prefix)
    }
}

/// How long the mark of a gone run's reaping lasts: longer than any
/// node takes to notice the run gone.
const REAPED_MARK: Duration = Duration::from_secs(600);

/// This node's connected clients' wills, and those changed since the
/// heartbeat last wrote them.
#[derive(Debug, Default)]
struct Wills {
    current: HashMap<ClientId, Bytes>,
    dirty: HashSet<ClientId>,
}

/// What the shards of this process and the link's tasks share.
pub struct NodeLink {
    redis: RedisSettings,
    keys: Keys,
    /// This node's name: the broker id.
    node: String,
    /// This process's shard count.
    shards: u16,
    /// This node's run: its start in milliseconds, new after a lapse.
    run: AtomicU64,
    directory: Mutex<Directory>,
    ledger: Mutex<InboxLedger>,
    /// Posts to shards of other nodes: (from a local shard, to a number,
    /// message).
    posts: Board<(ShardId, ShardId, ShardMessage)>,
    posted: Event,
    /// The local shards' boards, and how to wake their broker tasks.
    mail: Arc<[ShardMail]>,
    wake: Arc<dyn Fn(ShardId) + Send + Sync>,
    stopping: AtomicBool,
    /// The shards are shutting down: no session is taken over any more
    /// (one raised and handed to a shard that no longer keeps it would be
    /// lost to its gone node too).
    closing: AtomicBool,
    stopped: Event,
    /// The writer's Redis is failing: what
    /// [`droppable_while_down`] allows is dropped rather than posted.
    down: AtomicBool,
    /// Posts dropped so, since the writer last said so.
    dropped: AtomicU64,
    /// This node's connected clients' wills, as Redis is to hold them.
    wills: Mutex<Wills>,
    /// The store publishes at start the wills of the clients connected
    /// when this node stopped: the previous run's wills in Redis are not.
    restores_wills: bool,
    /// The store committed every change before the node stopped: its copy
    /// in Redis is whole, for another node to take over.
    store_committed: AtomicBool,
}

impl std::fmt::Debug for NodeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLink").field("node", &self.node).field("cluster", &self.keys.prefix).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn millis_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl NodeLink {
    /// The link of node `redis.keys.broker_id` in cluster `cluster`, for a
    /// process whose shards take their mail from `mail`.
    pub fn new(
        redis: RedisSettings,
        cluster: &str,
        restores_wills: bool,
        mail: Arc<[ShardMail]>,
        wake: Arc<dyn Fn(ShardId) + Send + Sync>,
    ) -> Self {
        let shards = u16::try_from(mail.len()).unwrap_or(u16::MAX);
        Self {
            node: redis.keys.broker_id.clone(),
            keys: Keys::new(cluster),
            redis,
            shards,
            run: AtomicU64::new(millis_now()),
            directory: Mutex::new(Directory::new(shards)),
            ledger: Mutex::new(InboxLedger::default()),
            posts: Board::default(),
            posted: Event::new(),
            mail,
            wake,
            stopping: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            stopped: Event::new(),
            down: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            wills: Mutex::new(Wills::default()),
            restores_wills,
            store_committed: AtomicBool::new(false),
        }
    }

    /// Takes the will changes of `batch` (a shard's, as its store gets
    /// it), for the heartbeat to write.
    pub fn keep_wills(&self, batch: &StoreBatch) {
        let mut wills = None;
        for op in &batch.ops {
            let (client, will) = match op {
                StoreOp::Will { client, will } => (client, Some(encode_will(will).freeze())),
                StoreOp::DropWill { client } => (client, None),
                _ => continue,
            };
            let wills = wills.get_or_insert_with(|| lock(&self.wills));
            match will {
                Some(will) => wills.current.insert(client.clone(), will),
                None => wills.current.remove(client),
            };
            wills.dirty.insert(client.clone());
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Local shard `from` tells number `to`, a shard of another node;
    /// whether the writer is to be [`nudge`](Self::nudge)d (at the end of
    /// the shard's turn, so that it takes the turn's posts together).
    pub fn post(&self, from: ShardId, to: ShardId, message: ShardMessage) -> bool {
        if self.down.load(Ordering::Acquire) && droppable_while_down(&message) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.posts.post((from, to, message))
    }

    /// Whether the writer's Redis is failing; when it answers again, says
    /// how many posts were dropped meanwhile.
    fn writer_down(&self, down: bool) {
        if self.down.swap(down, Ordering::AcqRel) == down {
            return;
        }
        if down {
            warn!("Cluster writer: QoS 0 messages for other nodes are dropped until Redis answers.");
        } else {
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            info!("Cluster writer: {dropped} QoS 0 messages for other nodes were dropped while Redis was down.");
        }
    }

    /// Wakes the writer.
    pub fn nudge(&self) {
        self.posted.notify(1);
    }

    /// The shards are shutting down: sessions of gone nodes are left to
    /// the others.
    pub fn closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The store committed every change at shutdown: once stopped, the
    /// node leaves its persistent sessions for another to take over.
    pub fn store_committed(&self) {
        self.store_committed.store(true, Ordering::Release);
    }

    /// The tasks end: the heartbeat ends this node's liveness, so that the
    /// others count it gone at once rather than after [`LIVENESS`].
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.posted.notify(usize::MAX);
        self.stopped.notify(usize::MAX);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn this_run(&self) -> NodeRun {
        NodeRun { name: self.node.clone(), run: self.run.load(Ordering::Acquire), shards: self.shards }
    }

    /// Takes how far the inbox was read before this run, as the store
    /// holds it: what it covers is skipped when the inbox is read again
    /// ([`InboxLedger::resume`]). Before the link's tasks run.
    pub fn resume_inbox(&self, marks: impl IntoIterator<Item = ((String, u16), InboxMark)>) {
        lock(&self.ledger).resume(marks);
    }

    /// Posts `message` from `from` to local shard `to`; whether its broker
    /// task is to be woken.
    fn tell(&self, to: ShardId, from: ShardId, message: ShardMessage) -> bool {
        self.mail.get(usize::from(to.0)).is_some_and(|board| board.post((from, message)))
    }

    /// Tells every local shard `message`, as from itself.
    fn announce_to_all(&self, message: ShardMessage, to_wake: &mut Vec<ShardId>) {
        for to in (0..self.shards).map(ShardId) {
            if self.tell(to, to, message.clone()) {
                to_wake.push(to);
            }
        }
    }

    /// Tells every local shard of `change` (the directory locked, so that
    /// no frame of a number that joined is posted before its Joined).
    fn announce(&self, change: &Change, directory: &Directory, to_wake: &mut Vec<ShardId>) {
        for (from, message) in change.says(directory) {
            for to in (0..self.shards).map(ShardId) {
                if self.tell(to, from, message.clone()) {
                    to_wake.push(to);
                }
            }
        }
    }

    /// Logs what `change` says of node `name`.
    fn say(&self, name: &str, change: &Change) {
        if !change.joined.is_empty() {
            info!("Cluster {}: node {name} joined.", self.keys.prefix);
        } else if !change.left.is_empty() {
            info!("Cluster {}: node {name} is gone.", self.keys.prefix);
        }
    }

    /// Publishes `wills`, those of node `of`'s clients, at local shard 0.
    fn publish_wills(&self, wills: Vec<Arc<Message>>, of: &str) {
        if wills.is_empty() {
            return;
        }
        info!("Cluster {}: publishing {} will(s) of node {of}.", self.keys.prefix, wills.len());
        let mut to_wake = Vec::new();
        for message in wills {
            if self.tell(ShardId(0), ShardId(0), ShardMessage::Will(message)) {
                to_wake.push(ShardId(0));
            }
        }
        self.wake_all(to_wake);
    }

    /// Tells `client`'s home shard to keep `session`, taken over from a
    /// gone node, and to give it `then` ([`ShardMessage::Adopt`]).
    fn adopt(
        &self,
        client: &ClientId,
        session: Option<HandedSession>,
        then: Vec<Arc<Message>>,
        to_wake: &mut Vec<ShardId>,
    ) {
        let home = home_shard(client.as_str(), self.shards);
        let message = ShardMessage::Adopt { client: client.clone(), session: session.map(Box::new), then };
        if self.tell(home, ShardId::LINK, message) {
            to_wake.push(home);
        }
    }

    /// Tells every local shard that the sessions of gone node `gone` that
    /// are its own are there ([`ShardMessage::TakenOver`]): after every
    /// [`adopt`](Self::adopt) of them, on the same boards.
    fn taken_over(&self, gone: &str) {
        let mut to_wake = Vec::new();
        for to in (0..self.shards).map(ShardId) {
            if self.tell(to, ShardId::LINK, ShardMessage::TakenOver(node_number(gone))) {
                to_wake.push(to);
            }
        }
        self.wake_all(to_wake);
    }

    fn wake_all(&self, mut to_wake: Vec<ShardId>) {
        to_wake.sort_unstable();
        to_wake.dedup();
        for shard in to_wake {
            (self.wake)(shard);
        }
    }
}

/// A Redis connection of one of the link's tasks, reopened after any
/// failure; `sleep` is the runtime's timer.
struct Conn<S> {
    conn: Option<RedisConnection>,
    sleep: S,
    /// What the task does, for the log.
    task: &'static str,
    /// A failure was logged and nothing succeeded since: a Redis that
    /// stays down is said once.
    failing: bool,
    /// When the last failure was.
    failed_at: Option<Instant>,
    /// A Redis Cluster's members, to connect through again.
    members: KnownMembers,
}

impl<S, F> Conn<S>
where
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    fn new(sleep: S, task: &'static str) -> Self {
        Self { conn: None, sleep, task, failing: false, failed_at: None, members: KnownMembers::default() }
    }

    async fn within<T>(&self, limit: Duration, work: impl Future<Output = T>) -> Option<T> {
        let timer = async {
            (self.sleep)(limit).await;
            None
        };
        futures_lite::future::or(async { Some(work.await) }, timer).await
    }

    /// Whether every call to Redis of the last `period` succeeded.
    fn reached_throughout(&self, period: Duration) -> bool {
        self.failed_at.is_none_or(|at| at.elapsed() >= period)
    }

    fn failed(&mut self, error: &str) {
        self.conn = None;
        self.failed_at = Some(Instant::now());
        if !std::mem::replace(&mut self.failing, true) {
            warn!("Cluster {}: Redis failed ({error}); trying again every second.", self.task);
        }
    }

    /// Runs `commands`, connecting first if needed; `None` on any failure
    /// (logged once, the connection dropped, after a second's wait).
    async fn run(&mut self, settings: &RedisSettings, commands: &Commands) -> Option<Vec<Value>> {
        if commands.is_empty() {
            return Some(Vec::new());
        }
        if self.conn.is_none() {
            let mut members = std::mem::take(&mut self.members);
            let opened = self.within(REDIS_TIMEOUT, RedisConnection::open(settings, REDIS_TIMEOUT, &mut members)).await;
            self.members = members;
            match opened {
                Some(Ok(conn)) => self.conn = Some(conn),
                Some(Err(error)) => self.failed(&describe_error(&error)),
                None => self.failed("connecting timed out"),
            }
        }
        let mut conn = self.conn.take()?;
        match self.within(REDIS_TIMEOUT, conn.run(commands)).await {
            Some(Ok(replies)) => {
                self.conn = Some(conn);
                if std::mem::take(&mut self.failing) {
                    info!("Cluster {}: Redis answers again.", self.task);
                }
                return Some(replies);
            }
            Some(Err(error)) => self.failed(&describe_error(&error)),
            None => self.failed("Redis did not answer in time"),
        }
        (self.sleep)(HEARTBEAT).await;
        None
    }
}

/// Waits until `event` fires or `limit` passes.
async fn wait_for<S, F>(event: event_listener::EventListener, sleep: &S, limit: Duration)
where
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    futures_lite::future::or(event, sleep(limit)).await;
}

/// The link's tasks, together, until [`NodeLink::stop`] and the
/// heartbeat's withdrawal of this node.
pub async fn run<S, F>(link: Arc<NodeLink>, sleep: S)
where
    S: Fn(Duration) -> F + Clone,
    F: Future<Output = ()>,
{
    let writer = write(link.clone(), sleep.clone());
    let reader = read(link.clone(), sleep.clone());
    futures_lite::future::zip(writer, futures_lite::future::zip(reader, beat(link, sleep))).await;
}

/// The writer task (see the [module](self)) until [`NodeLink::stop`].
pub async fn write<S, F>(link: Arc<NodeLink>, sleep: S)
where
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let mut conn = Conn::new(&sleep, "writer");
    let mut outbound = Outbound::default();
    // A gathered turn is retried until Redis takes it, before any later
    // one: each pair's order holds.
    let mut pending = None;
    loop {
        if pending.is_none() {
            // Listening before taking: a post in between wakes us.
            let listener = link.posted.listen();
            let posts = link.posts.take();
            if posts.is_empty() {
                if link.is_stopping() {
                    return;
                }
                wait_for(listener, &sleep, HEARTBEAT).await;
                continue;
            }
            let directory = lock(&link.directory);
            let mut ledger = lock(&link.ledger);
            pending = Some(outbound.gather(&directory, &mut ledger, posts));
        }
        let Some(gathered) = pending.as_ref() else { continue };
        let run = link.this_run();
        let mut commands = Commands::new();
        for batch in &gathered.batches {
            commands
                .send("XADD", &link.keys.inbox(&batch.node))
                .arg("*")
                .arg("n")
                .arg(&run.name)
                .arg("r")
                .arg(run.run)
                .arg("k")
                .arg(run.shards)
                .arg("s")
                .arg(batch.seq)
                .arg("t")
                .arg(batch.run)
                .arg("b")
                .arg(&batch.bytes[..]);
        }
        if !gathered.remove.is_empty() {
            commands.send("XDEL", &link.keys.inbox(&link.node)).arg(&gathered.remove);
        }
        for ask in &gathered.asks {
            let key = link.keys.epoch(ask.client.as_str());
            if ask.take {
                // A counter starts at this clock's milliseconds: one that
                // Redis lost (a restart, a failover) starts again above the
                // epochs it gave, which sessions still carry.
                commands.send("SET", &key).arg(millis_now()).arg("NX");
                commands.ask("INCR", &key);
            } else {
                commands.ask("GET", &key);
            }
        }
        let Some(epochs) = conn.run(&link.redis, &commands).await else {
            link.writer_down(true);
            if link.is_stopping() {
                return;
            }
            continue;
        };
        link.writer_down(false);
        let mut to_wake = Vec::new();
        for &(to, from, count) in &gathered.confirm {
            if link.tell(to, from, ShardMessage::Stored(count)) {
                to_wake.push(to);
            }
        }
        for (ask, epoch) in gathered.asks.iter().zip(&epochs) {
            let epoch = number(epoch).unwrap_or(0);
            if link.tell(ask.from, ShardId::LINK, ask.answer(epoch)) {
                to_wake.push(ask.from);
            }
        }
        link.wake_all(to_wake);
        pending = None;
    }
}

/// One entry of an inbox, as `XREAD` gives it.
struct Entry {
    id: String,
    run: Option<NodeRun>,
    /// The writer's [`Batch::seq`](culex_core::shard::nodes::Batch::seq),
    /// 0 if it had none.
    seq: u64,
    /// The run of this node it was written for
    /// ([`Batch::run`](culex_core::shard::nodes::Batch::run)), if the
    /// writer gave it.
    for_run: Option<u64>,
    batch: Bytes,
}

fn bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes.clone()),
        _ => None,
    }
}

/// The field and value pairs of an `HGETALL` reply.
fn pairs(reply: Option<&Value>) -> Vec<(&Value, &Value)> {
    match reply {
        Some(Value::Array(values)) => values.chunks(2).filter_map(|p| Some((p.first()?, p.get(1)?))).collect(),
        Some(Value::Map(pairs)) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    }
}

/// An integer reply, or a number as text (`GET` of a counter).
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        value => text(value)?.parse().ok(),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// The entries of an `XREAD` reply for one stream (nil when none came).
fn entries(reply: &Value) -> Vec<Entry> {
    let Value::Array(streams) = reply else { return Vec::new() };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(parts) = stream else { continue };
        if let Some(items) = parts.get(1) {
            out.extend(range_entries(items));
        }
    }
    out
}

/// The entries of an `XRANGE` reply.
fn range_entries(reply: &Value) -> Vec<Entry> {
    let Value::Array(items) = reply else { return Vec::new() };
    items.iter().filter_map(entry).collect()
}

/// One entry: its id and fields.
fn entry(item: &Value) -> Option<Entry> {
    let Value::Array(pair) = item else { return None };
    let (Some(id), Some(Value::Array(fields))) = (pair.first().and_then(text), pair.get(1)) else { return None };
    let (mut name, mut run, mut shards, mut seq, mut for_run, mut batch) = (None, None, None, 0, None, Bytes::new());
    for field in fields.chunks(2) {
        let [key, value] = field else { continue };
        match text(key).as_deref() {
            Some("n") => name = text(value),
            Some("r") => run = text(value).and_then(|r| r.parse::<u64>().ok()),
            Some("k") => shards = text(value).and_then(|k| k.parse::<u16>().ok()),
            Some("s") => seq = text(value).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0),
            Some("t") => for_run = text(value).and_then(|t| t.parse::<u64>().ok()),
            Some("b") => {
                if let Value::BulkString(bytes) = value {
                    batch = Bytes::from(bytes.clone());
                }
            }
            _ => {}
        }
    }
    let run = match (name, run, shards) {
        (Some(name), Some(run), Some(shards)) => Some(NodeRun { name, run, shards }),
        _ => None,
    };
    Some(Entry { id, run, seq, for_run, batch })
}

/// The reader task (see the [module](self)) until [`NodeLink::stop`].
pub async fn read<S, F>(link: Arc<NodeLink>, sleep: S)
where
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let mut conn = Conn::new(&sleep, "reader");
    let inbox = link.keys.inbox(&link.node);
    // From the start: entries a crash left unread are read again.
    let mut last = "0-0".to_owned();
    while !link.is_stopping() {
        let mut xread = redis::cmd("XREAD");
        let block = u64::try_from(READ_BLOCK.as_millis()).unwrap_or(1000);
        xread.arg("COUNT").arg(READ_COUNT).arg("BLOCK").arg(block).arg("STREAMS").arg(&inbox).arg(&last);
        let mut commands = Commands::new();
        commands.ask_on(&inbox, xread);
        let Some(replies) = conn.run(&link.redis, &commands).await else { continue };
        let Some(reply) = replies.first() else { continue };
        let mut to_wake = Vec::new();
        for entry in entries(reply) {
            last.clone_from(&entry.id);
            let mut directory = lock(&link.directory);
            let mut ledger = lock(&link.ledger);
            let Some(run) = entry.run else {
                warn!("Cluster reader: skipped inbox entry {} without its node.", entry.id);
                ledger.skip(entry.id);
                continue;
            };
            // Read under the directory's lock: a lapse changes the run,
            // then numbers every other node again under that lock.
            let own_run = link.this_run().run;
            let read = InboxEntry {
                id: entry.id.clone(),
                writer: &run,
                seq: entry.seq,
                for_run: entry.for_run,
                batch: &entry.batch,
            };
            match ledger.read(&mut directory, link.shards, own_run, read) {
                Ok(delivery) => {
                    link.say(&run.name, &delivery.change);
                    link.announce(&delivery.change, &directory, &mut to_wake);
                    for (to, from, message) in delivery.posts {
                        if link.tell(to, from, message) {
                            to_wake.push(to);
                        }
                    }
                }
                Err(error) => warn!("Cluster reader: skipped inbox entry {} from {}: {error}.", entry.id, run.name),
            }
        }
        link.wake_all(to_wake);
    }
}

/// The heartbeat task (see the [module](self)) until [`NodeLink::stop`],
/// when it withdraws this node.
pub async fn beat<S, F>(link: Arc<NodeLink>, sleep: S)
where
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let mut conn = Conn::new(&sleep, "heartbeat");
    let alive = link.keys.alive(&link.node);
    let lease = u64::try_from(LIVENESS.as_millis()).unwrap_or(3000);
    let mut heartbeat = Heartbeat::default();
    // The wills the previous run left, taken before this run registers,
    // are published when the heartbeat says.
    let mut previous = None;
    // Until the registry is read once, claims wait for it.
    let mut unread = true;
    info!("Cluster {}: node {} joining.", link.keys.prefix, link.node);
    while !link.is_stopping() {
        if previous.is_none() {
            previous = previous_wills(&link, &mut conn).await;
            if previous.is_none() {
                continue;
            }
        }
        if heartbeat.previous_wills_due() {
            link.publish_wills(previous.take().unwrap_or_default(), &link.node);
            previous = Some(Vec::new());
        }
        let run = link.this_run();
        // Liveness before registration, in two round trips (on a Redis
        // Cluster the keys may be on two members): a node registered is
        // never seen without its liveness, and reaped for that.
        let mut renewal = Commands::new();
        renewal.ask("SET", &alive).arg(run.run).arg("PX").arg(lease).arg("GET");
        renewal.ask("EXISTS", &link.keys.reaped(&link.node, run.run));
        let sent = millis_now();
        let Some(renewed) = conn.run(&link.redis, &renewal).await else { continue };
        let before = renewed.first().and_then(text).and_then(|r| r.parse::<u64>().ok());
        let reaped = matches!(renewed.get(1), Some(Value::Int(1)));
        if let Renewal::Lapsed { next, counted_gone } = heartbeat.renewed(run.run, before, reaped, sent, millis_now()) {
            link.run.store(next, Ordering::Release);
            {
                let mut wills = lock(&link.wills);
                let all: Vec<ClientId> = wills.current.keys().cloned().collect();
                wills.dirty.extend(all);
            }
            warn!("Cluster {}: node {} lapsed; joining again.", link.keys.prefix, link.node);
            let mut to_wake = Vec::new();
            if counted_gone {
                link.announce_to_all(ShardMessage::CountedGone, &mut to_wake);
            }
            {
                let mut directory = lock(&link.directory);
                let change = directory.rejoin_all();
                link.announce(&change, &directory, &mut to_wake);
            }
            link.wake_all(to_wake);
            continue;
        }
        let mut registry = Commands::new();
        registry.send("HSET", &link.keys.nodes).arg(&link.node).arg(registration(&run));
        registry.ask("HGETALL", &link.keys.nodes);
        let Some(replies) = conn.run(&link.redis, &registry).await else { continue };
        let registered = to_read(&lock(&link.directory), registered(replies.first(), &link.node));
        let mut commands = Commands::new();
        for (name, _) in &registered {
            commands.ask("GET", &link.keys.alive(name));
        }
        let Some(lives) = conn.run(&link.redis, &commands).await else { continue };
        let others: Vec<Registered> = registered
            .into_iter()
            .zip(&lives)
            .map(|((name, run), life)| Registered { name, run, alive: text(life).and_then(|r| r.parse().ok()) })
            .collect();
        let mut to_wake = Vec::new();
        let judgement = {
            let mut directory = lock(&link.directory);
            let judgement = judge(&mut directory, &others, conn.reached_throughout(LIVENESS));
            // Before their shards leave: a claim waiting for them goes on
            // waiting, for their takeover.
            for gone in &judgement.gone {
                link.announce_to_all(ShardMessage::Lapsed(node_number(&gone.name)), &mut to_wake);
            }
            for (name, change) in &judgement.changes {
                link.say(name, change);
                link.announce(change, &directory, &mut to_wake);
            }
            if std::mem::take(&mut unread) {
                link.announce_to_all(ShardMessage::NodesRead, &mut to_wake);
            }
            judgement
        };
        link.wake_all(to_wake);
        for node in judgement.gone {
            if reap(&link, &mut conn, &node).await {
                adopt_sessions(&link, &node);
            }
        }
        write_wills(&link, &mut conn).await;
        wait_for(link.stopped.listen(), &sleep, HEARTBEAT).await;
    }
    // Stopped, the node closed its clients itself (their wills went as
    // the broker sends them): nothing is left for the others to publish.
    // With its store whole in Redis, its registration stays: the others
    // count it gone as one that lapsed, and one of them takes its
    // persistent sessions over, so that a client connecting elsewhere
    // meanwhile (a rolling restart) finds its session. Without, it
    // withdraws, and its sessions wait in its store for its next start.
    let handed = link.store_committed.load(Ordering::Acquire);
    let mut commands = Commands::new();
    commands.send("DEL", &alive);
    commands.send("DEL", &link.keys.wills(&link.node, link.this_run().run));
    if !handed {
        commands.send("HDEL", &link.keys.nodes).arg(&link.node);
    }
    if conn.run(&link.redis, &commands).await.is_some() {
        let (cluster, node) = (&link.keys.prefix, &link.node);
        match handed {
            true => {
                info!("Cluster {cluster}: node {node} left; its persistent sessions are for the others to take over.")
            }
            false => info!("Cluster {cluster}: node {node} left."),
        }
    }
}

/// Writes the will changes of this node's clients, under its run.
async fn write_wills<S, F>(link: &NodeLink, conn: &mut Conn<S>)
where
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let (commands, dirty) = {
        let mut wills = lock(&link.wills);
        if wills.dirty.is_empty() {
            return;
        }
        let key = link.keys.wills(&link.node, link.this_run().run);
        let dirty = std::mem::take(&mut wills.dirty);
        let mut commands = Commands::new();
        for client in &dirty {
            match wills.current.get(client) {
                Some(will) => commands.send("HSET", &key).arg(client.as_str()).arg(&will[..]),
                None => commands.send("HDEL", &key).arg(client.as_str()),
            };
        }
        (commands, dirty)
    };
    if conn.run(&link.redis, &commands).await.is_none() {
        // Written at the next beat.
        lock(&link.wills).dirty.extend(dirty);
    }
}

/// Publishes the wills of gone `node`'s clients, if this node is the first
/// to mark its run reaped.
async fn reap<S, F>(link: &NodeLink, conn: &mut Conn<S>, node: &NodeRun) -> bool
where
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let mark = u64::try_from(REAPED_MARK.as_millis()).unwrap_or(u64::MAX);
    let mut commands = Commands::new();
    commands.ask("SET", &link.keys.reaped(&node.name, node.run)).arg(&link.node).arg("NX").arg("PX").arg(mark);
    let Some(replies) = conn.run(&link.redis, &commands).await else { return false };
    if replies.first().is_none_or(|reply| matches!(reply, Value::Nil)) {
        return false;
    }
    let key = link.keys.wills(&node.name, node.run);
    let mut commands = Commands::new();
    commands.ask("HGETALL", &key);
    commands.send("DEL", &key);
    // Its presence leases go too: the next renewal of any broker sharing
    // the hash sweeps its entries, rather than once the leases lapse.
    for shard in 0..node.shards.max(1) {
        let broker = shard_broker_id(&node.name, ShardId(shard), node.shards);
        commands.send("DEL", &link.redis.keys.for_broker(&broker).lease);
    }
    if let Some(replies) = conn.run(&link.redis, &commands).await {
        let wills = pairs(replies.first()).into_iter().filter_map(|(_, will)| decode_will(&bytes(will)?)).collect();
        link.publish_wills(wills, &node.name);
    }
    true
}

/// The epoch a session of a gone node takes when this node adopts it,
/// and whether it was raised: one above the client id's counter, or its
/// own if a connection took the id since the session was taken (the
/// counter is above its epoch; that connection's claim waits for the
/// takeover and takes the session). `KEYS[1]`: the counter; `ARGV`: the
/// session's epoch (0: not known), this clock's milliseconds (where a
/// counter Redis lost starts again).
const ADOPT_EPOCH: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local stored = tonumber(ARGV[1])
if stored ~= 0 and current > stored then return {stored, 0} end
local epoch
if current == 0 then epoch = math.max(stored + 1, tonumber(ARGV[2])) else epoch = math.max(current, stored) + 1 end
redis.call('SET', KEYS[1], string.format('%d', epoch))
return {epoch, 1}
";

/// Removes a gone node's registration once its sessions are taken over,
/// unless a new run of it registered since. `KEYS[1]`: the registry;
/// `ARGV`: the node's name, its registration as the gone run wrote it.
const FORGET_RUN: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
";

/// How many sessions of a gone node have their epochs raised in one
/// pipeline: a round trip each would take seconds for a large fleet, and
/// a claim waits for the takeover at most [`TAKEOVER_WAIT`].
const ADOPT_BATCH: usize = 512;

/// How long an adoption waits for this node's store in Redis to hold the
/// sessions it took, before it leaves the rest in the gone node's store.
const ADOPTION_WAIT: Duration = Duration::from_secs(60);

/// How often it looks.
const ADOPTION_POLL: Duration = Duration::from_millis(250);

/// Takes over, on a thread of its own (the stores' calls block), the
/// persistent sessions in the store of node `gone`, whose run this node
/// reaped: see [`adopt`].
fn adopt_sessions(link: &Arc<NodeLink>, gone: &NodeRun) {
    let (link, run) = (link.clone(), gone.clone());
    let spawned = std::thread::Builder::new().name("culex-adopt".into()).spawn(move || adopt(&link, &run));
    if let Err(e) = spawned {
        warn!("Cluster: cannot start taking over the sessions of node {}: {e}", gone.name);
    }
}

/// Reads the store node `gone` left in Redis and hands each persistent
/// session in it to its home shard here ([`ShardMessage::Adopt`]), with
/// the client id's next epoch (so that the gone node discards its own
/// copy, should it come back) and what the gone node's inbox held: what
/// it had not stored, and what the others sent it before they counted it
/// gone. A session whose client connected elsewhere since keeps its
/// epoch: that connection's claim waits for the takeover, said once every
/// session is given ([`ShardMessage::TakenOver`]), and takes it then.
/// Each session goes from the gone node's store once this node's store in
/// Redis holds it (or a later connection took the client); what reached
/// the inbox meanwhile follows it; the gone node's store and inbox go
/// once no session is left in the store.
fn adopt(link: &NodeLink, gone: &NodeRun) {
    let cluster = link.keys.prefix.as_str();
    let name = gone.name.as_str();
    let failed = |what: &str, e: String| warn!("Cluster {cluster}: cannot {what} of node {name}, which is gone: {e}");
    let began = Instant::now();
    let mut conn = match open_blocking(&link.redis, &mut KnownMembers::default()) {
        Ok(conn) => conn,
        Err(e) => return failed("take over the sessions", describe_error(&e)),
    };
    // Back in a new run already: its store is its own again.
    let alive = redis::cmd("GET").arg(link.keys.alive(name)).query::<Option<u64>>(&mut conn);
    if alive.as_ref().is_ok_and(|run| run.is_some_and(|run| run != gone.run)) || link.is_closing() {
        return;
    }
    let mut theirs = RedisStore::new(link.redis.clone(), cluster, name);
    let state = match theirs.read() {
        Ok(state) => state,
        Err(e) => return failed("read the store", e.to_string()),
    };
    let inbox = link.keys.inbox(name);
    let marks = &state.inbox_read;
    let (held, mut last) = match read_inbox(&mut conn, &inbox, "-", marks) {
        Ok(read) => read,
        Err(e) => return failed("read the inbox", describe_error(&e)),
    };
    let mut taken = Vec::new();
    let mut to_wake = Vec::new();
    let sessions: Vec<_> = state.sessions.iter().collect();
    for batch in sessions.chunks(ADOPT_BATCH) {
        if link.is_closing() {
            break;
        }
        let mut commands = Commands::new();
        for (client, session) in batch {
            let key = link.keys.epoch(client.as_str());
            let mut raise = redis::cmd("EVAL");
            raise.arg(ADOPT_EPOCH).arg(1).arg(&key).arg(session.epoch).arg(millis_now());
            commands.ask_on(&key, raise);
        }
        let epochs = conn.run(&commands).and_then(|replies| {
            replies
                .into_iter()
                .map(|reply| Ok(redis::from_redis_value::<(u64, u8)>(reply)?))
                .collect::<RedisResult<Vec<_>>>()
        });
        let epochs = match epochs {
            Ok(epochs) => epochs,
            Err(e) => {
                failed("take over every session", describe_error(&e));
                break;
            }
        };
        for (&(client, session), (epoch, raised)) in batch.iter().zip(epochs) {
            let mut handed = HandedSession::from_stored(session, &state.messages);
            handed.epoch = epoch;
            link.adopt(client, Some(handed), for_client(&held, client), &mut to_wake);
            taken.push(Taken { client: client.clone(), epoch, raised: raised == 1 });
        }
    }
    link.wake_all(to_wake);
    // After every session: a claim waiting for the takeover asks again.
    link.taken_over(name);
    let claimed = taken.iter().filter(|taken| !taken.raised).count();
    info!(
        "Cluster {cluster}: took over {} persistent session(s) of node {name}, which is gone ({claimed} of them by a \
         connection elsewhere since), in {} ms.",
        taken.len(),
        began.elapsed().as_millis()
    );
    let clients: Vec<ClientId> = taken.iter().map(|taken| taken.client.clone()).collect();
    let left = wait_until_kept(link, &mut conn, &mut theirs, taken);
    // What reached the inbox after it was read follows the sessions.
    if let Ok((late, latest)) =
        read_inbox(&mut conn, &inbox, &last.as_ref().map_or("-".to_owned(), |id| format!("({id}")), marks)
    {
        let mut to_wake = Vec::new();
        for client in &clients {
            let then = for_client(&late, client);
            if !then.is_empty() {
                link.adopt(client, None, then, &mut to_wake);
            }
        }
        link.wake_all(to_wake);
        last = latest.or(last);
    }
    if left > 0 {
        warn!(
            "Cluster {cluster}: {left} session(s) taken over from node {name} are not in this node's store yet; they \
             stay in node {name}'s too."
        );
        return;
    }
    match theirs.destroy() {
        Ok(true) => {
            let forgotten = redis::cmd("EVAL")
                .arg(FORGET_RUN)
                .arg(1)
                .arg(&link.keys.nodes)
                .arg(name)
                .arg(registration(gone))
                .query::<u64>(&mut conn);
            if let Err(e) = forgotten {
                failed("remove the registration", describe_error(&e));
            }
            // Only what was read: a run of the node started since writes after it.
            if let Some(last) = last {
                let trimmed = redis::cmd("XTRIM").arg(&inbox).arg("MINID").arg(&last).query::<u64>(&mut conn);
                let deleted = redis::cmd("XDEL").arg(&inbox).arg(&last).query::<u64>(&mut conn);
                if let Err(e) = trimmed.and(deleted) {
                    failed("empty the inbox", describe_error(&e));
                }
            }
        }
        Ok(false) => {}
        Err(e) => failed("remove the store", e.to_string()),
    }
}

/// A session taken over: its client, the epoch it took, and whether that
/// was raised for it (else a connection took the client since, and its
/// claim comes for the session).
struct Taken {
    client: ClientId,
    epoch: u64,
    raised: bool,
}

/// Waits (within [`ADOPTION_WAIT`]) until this node's store in Redis
/// holds each session `taken`, or a later connection took the client, and
/// removes it from the gone node's store (`theirs`) then. Returns how many
/// are left.
fn wait_until_kept(
    link: &NodeLink,
    conn: &mut BlockingConnection,
    theirs: &mut RedisStore,
    mut taken: Vec<Taken>,
) -> usize {
    let mut ours = RedisStore::new(link.redis.clone(), &link.keys.prefix, &link.node);
    let started = Instant::now();
    let deadline = started + ADOPTION_WAIT;
    while !taken.is_empty() && Instant::now() < deadline && !link.is_stopping() {
        std::thread::sleep(ADOPTION_POLL);
        let clients: Vec<ClientId> = taken.iter().map(|taken| taken.client.clone()).collect();
        let Ok(held) = ours.session_epochs(&clients) else { continue };
        let Ok(counters) = epoch_counters(link, conn, &clients) else { continue };
        let mut left = Vec::new();
        for ((session, held), counter) in taken.into_iter().zip(held).zip(counters) {
            // Kept here, or a connection took the client since (it moved
            // on from here, or came here first). One that took it before
            // the takeover had its claim's time to come for the session.
            let moved_on = session.raised || started.elapsed() >= TAKEOVER_WAIT;
            let done = held.is_some_and(|held| held >= session.epoch)
                || moved_on && counter.is_some_and(|counter| counter > session.epoch);
            if !(done && theirs.forget_session(&session.client).is_ok()) {
                left.push(session);
            }
        }
        taken = left;
    }
    taken.len()
}

/// The epoch counters of `clients` in Redis, in one pipeline.
fn epoch_counters(
    link: &NodeLink,
    conn: &mut BlockingConnection,
    clients: &[ClientId],
) -> RedisResult<Vec<Option<u64>>> {
    let mut commands = Commands::new();
    for client in clients {
        commands.ask("GET", &link.keys.epoch(client.as_str()));
    }
    conn.run(&commands)?.into_iter().map(|reply| Ok(redis::from_redis_value(reply)?)).collect()
}

/// The messages an inbox holds after `start` (an `XRANGE` start: `-`, or
/// `(<id>`), each with the client it is for alone (sent on,
/// [`ShardMessage::Forwarded`]), and the last entry's id. A batch written
/// twice is read once; frames the node's store holds already, as `marks`
/// say, are not read.
fn read_inbox(
    conn: &mut (dyn redis::ConnectionLike + Send),
    inbox: &str,
    start: &str,
    marks: &BTreeMap<(String, u16), InboxMark>,
) -> RedisResult<(Vec<InboxMessage>, Option<String>)> {
    let (mut messages, mut last) = (Vec::new(), None::<String>);
    let mut seen = HashSet::new();
    let mut from = start.to_owned();
    loop {
        let reply: Value =
            redis::cmd("XRANGE").arg(inbox).arg(&from).arg("+").arg("COUNT").arg(READ_COUNT).query(conn)?;
        let entries = range_entries(&reply);
        for entry in &entries {
            last = Some(entry.id.clone());
            if let Some(run) = &entry.run
                && entry.seq != 0
                && !seen.insert((run.name.clone(), run.run, entry.seq))
            {
                continue;
            }
            let covered = entry.run.as_ref().map(|run| covered(marks, run, entry.seq)).unwrap_or_default();
            let frames = decode_batch(&entry.batch).unwrap_or_default();
            let fresh = frames.into_iter().filter(|frame| !covered.contains(&frame.to.0));
            messages.extend(fresh.filter_map(|frame| frame.message.into_delivery()));
        }
        match (&last, entries.len()) {
            (Some(id), READ_COUNT) => from = format!("({id}"),
            _ => return Ok((messages, last)),
        }
    }
}

/// A message a gone node's inbox held, with the client it was sent on
/// to alone, if one.
type InboxMessage = (Option<ClientId>, Arc<Message>);

/// The messages of `held` for `client`'s session: those for anyone, and
/// those sent on for it alone.
fn for_client(held: &[InboxMessage], client: &ClientId) -> Vec<Arc<Message>> {
    held.iter().filter(|(to, _)| to.as_ref().is_none_or(|to| to == client)).map(|(_, m)| m.clone()).collect()
}

/// The wills this node's previous run left in Redis (its run read from
/// the registry before this run's first renewal replaces it), taken out:
/// `None` if Redis could not be asked.
async fn previous_wills<S, F>(link: &NodeLink, conn: &mut Conn<S>) -> Option<Vec<Arc<Message>>>
where
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let mut commands = Commands::new();
    commands.ask("HGET", &link.keys.nodes).arg(&link.node);
    let replies = conn.run(&link.redis, &commands).await?;
    let Some(run) = replies.first().and_then(text).and_then(|v| v.split(' ').next()?.parse::<u64>().ok()) else {
        return Some(Vec::new());
    };
    let key = link.keys.wills(&link.node, run);
    let mut commands = Commands::new();
    commands.ask("HGETALL", &key);
    commands.send("DEL", &key);
    let replies = conn.run(&link.redis, &commands).await?;
    // The store publishes them itself.
    if link.restores_wills {
        return Some(Vec::new());
    }
    Some(pairs(replies.first()).into_iter().filter_map(|(_, will)| decode_will(&bytes(will)?)).collect())
}

/// A node's entry in the registry: its run and shard count, as
/// [`registered`] reads it.
fn registration(run: &NodeRun) -> String {
    format!("{} {}", run.run, run.shards)
}

/// The other nodes of an `HGETALL` of the registry, with their runs when
/// the value reads as one.
fn registered(reply: Option<&Value>, me: &str) -> Vec<(String, Option<NodeRun>)> {
    pairs(reply)
        .into_iter()
        .filter_map(|(name, value)| Some((text(name)?, text(value)?)))
        .filter_map(|pair| match pair {
            (name, value) if name != me => {
                let mut words = value.split(' ');
                let run = words.next().and_then(|r| r.parse::<u64>().ok());
                let shards = words.next().and_then(|k| k.parse::<u16>().ok());
                let node = run.zip(shards).map(|(run, shards)| NodeRun { name: name.clone(), run, shards });
                Some((name.clone(), node))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn an_inbox_entry_says_its_writer_and_the_run_it_is_for_when_given() {
        let fields = |extra: &[&str]| {
            let mut fields: Vec<Value> = ["n", "w", "r", "5", "k", "2", "s", "9"].iter().map(|f| bulk(f)).collect();
            fields.extend(extra.iter().map(|f| bulk(f)));
            fields.extend([bulk("b"), bulk("frames")]);
            Value::Array(vec![bulk("1-0"), Value::Array(fields)])
        };
        let Some(read) = entry(&fields(&["t", "7"])) else { panic!("an entry") };
        assert_eq!(read.id, "1-0");
        assert_eq!(read.run, Some(NodeRun { name: "w".into(), run: 5, shards: 2 }));
        assert_eq!((read.seq, read.for_run, &read.batch[..]), (9, Some(7), &b"frames"[..]));
        // An older writer gives no run it is for.
        let Some(older) = entry(&fields(&[])) else { panic!("an entry") };
        assert_eq!(older.for_run, None);
    }
}
