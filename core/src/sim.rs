//! Driving the broker with virtual clients in virtual time.
//!
//! [`Simulation`] owns a [`Broker`], a virtual clock and the client side of
//! every connection. It plays the runtime's part: it feeds packets in,
//! drains actions, keeps the presence set the way Redis would see it, and
//! decodes what each client receives. Nothing sleeps; [`Simulation::advance`]
//! jumps the clock from deadline to deadline. A run is deterministic: the
//! same calls give the same transcript.
//!
//! ```
//! use std::time::Duration;
//! use culex_core::sim::{ClientOptions, Simulation};
//! use culex_core::{Config, QoS};
//!
//! let mut sim = Simulation::new(Config::default());
//! let sub = sim.connect(ClientOptions::new("sub"));
//! sim.subscribe(sub, "sensors/+", QoS::AtLeastOnce);
//! let publ = sim.connect(ClientOptions::new("pub").keep_alive(10));
//! sim.publish(publ, "sensors/t1", b"21.5", QoS::AtLeastOnce, false);
//! assert_eq!(sim.stats().delivered, 1);
//! // The publisher goes silent: after 1.5 x 10 s it is dropped.
//! sim.advance(Duration::from_secs(16));
//! assert!(!sim.is_online("pub"));
//! assert!(sim.is_online("sub"));
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::action::{Action, Input};
use crate::broker::{Broker, ShardRestorer};
use crate::client;
use crate::codec::{self, LastWill, Packet, Publish, Subscribe, SubscribeReturnCode, Unsubscribe};
use crate::config::Config;
use crate::congestion::{WriterGauge, WriterProgress};
use crate::error::CloseReason;
use crate::peer::Peer;
use crate::persistence::{StoreBatch, StoredState};
use crate::policy::{Password, Refusal};
use crate::shard::{self, HomeKey, Placement, ShardId, ShardMessage};
use crate::time::{Instant, Now, UnixTime};
use crate::topic::{TopicFilter, TopicName};
use crate::types::{ClientId, ConnId, PacketId, Protocol, QoS};

mod nodes;

use self::nodes::NodesBus;

/// Wall-clock time at the start of a simulation: 2026-01-01T00:00:00Z.
pub const DEFAULT_START_UNIX: f64 = 1_767_225_600.0;

/// Bytes of a paused client's socket handed to the broker per read once
/// it is resumed, as a runtime reads.
pub const READ_CHUNK: usize = 1024;

/// The largest frame a virtual client accepts from the broker.
const CLIENT_MAX_PACKET: usize = codec::MAX_REMAINING_LENGTH + 5;

/// How a virtual client connects and behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// What its CONNECT says: client id (may be empty), protocol, clean
    /// session, keepalive, will, credentials.
    pub connect: client::ClientOptions,
    /// Answer PUBLISH with PUBACK/PUBREC and PUBREL with PUBCOMP, as a
    /// well-behaved client library does.
    pub auto_ack: bool,
    /// Read what the broker sends as soon as it is sent. A client that
    /// does not leaves it in its socket ([`Simulation::read`] takes it),
    /// where the broker's flow control sees it as unwritten.
    pub reading: bool,
}

impl ClientOptions {
    /// A 3.1.1 client with a clean session, keepalive 60, acking everything.
    pub fn new(client_id: &str) -> Self {
        Self { connect: client::ClientOptions::new(client_id), auto_ack: true, reading: true }
    }

    /// Sets the clean session flag.
    pub fn clean_session(mut self, clean: bool) -> Self {
        self.connect = self.connect.clean_session(clean);
        self
    }

    /// Sets the keepalive in seconds.
    pub fn keep_alive(mut self, secs: u16) -> Self {
        self.connect = self.connect.keep_alive(secs);
        self
    }

    /// Registers a will.
    pub fn will(mut self, will: LastWill) -> Self {
        self.connect = self.connect.will(will);
        self
    }

    /// Sets user name and password.
    pub fn credentials(mut self, username: &str, password: &[u8]) -> Self {
        self.connect = self.connect.credentials(username, password);
        self
    }

    /// Turns automatic acknowledgements on or off.
    pub fn auto_ack(mut self, on: bool) -> Self {
        self.auto_ack = on;
        self
    }

    /// Makes a client that reads only when told to ([`Simulation::read`]).
    pub fn reading(mut self, on: bool) -> Self {
        self.reading = on;
        self
    }

    /// The CONNECT packet these options describe.
    pub fn connect_packet(&self) -> Packet {
        self.connect.connect_packet()
    }
}

/// The client end of one simulated connection.
#[derive(Debug)]
struct ClientEnd {
    name: String,
    auto_ack: bool,
    inbox: BytesMut,
    received: Vec<Packet>,
    closed: Option<CloseReason>,
    next_packet_id: u16,
    reading: bool,
    /// Sent by the broker, not read yet: the socket and the runtime's
    /// queue, as the broker's budget counts them.
    unread: BytesMut,
    gauge: WriterGauge,
    /// The broker paused reading this connection: what the client sends
    /// waits here, as it would in its socket.
    paused: bool,
    unsent: BytesMut,
}

/// Totals seen by the simulation's "runtime".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// `Deliver` actions: copies sent to clients.
    pub delivered: u64,
    /// `DropExpired` actions.
    pub expired: u64,
    /// `MarkOnline` actions.
    pub marked_online: u64,
    /// `MarkOffline` actions.
    pub marked_offline: u64,
    /// `Close` actions.
    pub closed: u64,
    /// Bytes sent by the broker.
    pub bytes_sent: u64,
}

/// Checks deferred credentials for the simulation (the runtime's part of
/// [`AuthDecision::Defer`](crate::policy::AuthDecision::Defer)).
pub type Authenticator = Box<dyn FnMut(&ClientId, Option<&str>, Option<&[u8]>) -> Result<(), Refusal> + Send>;

/// A broker, a virtual clock and any number of virtual clients.
pub struct Simulation {
    /// One broker per shard; shard 0 alone unless made
    /// [`with_shards`](Self::with_shards).
    brokers: Vec<Broker>,
    /// Each placed connection's shard (see [`shard::place`]).
    homes: BTreeMap<ConnId, usize>,
    /// Connections of several shards waiting for their CONNECT, with the
    /// bytes sent so far.
    unplaced: BTreeMap<ConnId, (Peer, Vec<u8>)>,
    /// What shards told each other, not yet carried: one queue keeps every
    /// pair's order.
    bus: VecDeque<(ShardId, ShardId, ShardMessage)>,
    now: Now,
    clients: BTreeMap<ConnId, ClientEnd>,
    presence: BTreeSet<String>,
    stats: SimStats,
    replies: VecDeque<(ConnId, Packet)>,
    transcript: Option<String>,
    authenticator: Option<Authenticator>,
    auth_answers: VecDeque<(ConnId, Result<(), Refusal>)>,
    disk: Disk,
    /// With [`with_nodes`](Self::with_nodes): the brokers are nodes of a
    /// cluster, and this carries what they tell each other.
    nodes: Option<NodesBus>,
}

/// The simulated store: what is durable, and the batches handed over
/// but not committed yet, by shard. Shards number their batches each
/// from 1; the store numbers them as it commits them, as the runtime's
/// committer does.
#[derive(Debug, Default)]
struct Disk {
    durable: StoredState,
    pending: VecDeque<(usize, StoreBatch)>,
    /// Batches are left pending until [`Simulation::commit`].
    manual: bool,
    /// Every batch taken, in order, for tests that replay them.
    history: Vec<StoreBatch>,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation").field("brokers", &self.brokers).field("now", &self.now).finish_non_exhaustive()
    }
}

impl Simulation {
    /// A simulation starting at instant zero and [`DEFAULT_START_UNIX`].
    pub fn new(config: Config) -> Self {
        Self::with_broker(Broker::new(config), DEFAULT_START_UNIX)
    }

    /// A simulation around `broker`, with the wall clock at `start_unix`.
    pub fn with_broker(broker: Broker, start_unix: f64) -> Self {
        Self {
            brokers: vec![broker],
            homes: BTreeMap::new(),
            unplaced: BTreeMap::new(),
            bus: VecDeque::new(),
            now: Now::new(Instant::ZERO, UnixTime::from_secs_f64(start_unix)),
            clients: BTreeMap::new(),
            presence: BTreeSet::new(),
            stats: SimStats::default(),
            replies: VecDeque::new(),
            transcript: None,
            authenticator: None,
            auth_answers: VecDeque::new(),
            disk: Disk::default(),
            nodes: None,
        }
    }

    /// A simulation of `nodes` cluster nodes of one shard each acting as
    /// one broker (see [`shard::nodes`]): connections
    /// go to the nodes in turn, whatever their client id (so that a client
    /// connecting again may land on another node and take its session
    /// there), and what the nodes tell each other goes through the link's
    /// numbering, gathering, bytes and inbox ledger, carried in order
    /// before the next client acts. The nodes journal (to the simulated
    /// store), as a cluster node without persistence does. No crash or
    /// restart.
    pub fn with_nodes(config: Config, nodes: u16) -> Self {
        let config = Config { persistence: true, ..config };
        let mut sim = Self::new(config.clone());
        let count = usize::from(nodes.max(1));
        sim.brokers = (0..count)
            .map(|i| {
                let mut broker = Broker::new(config.clone());
                broker.join_cluster(shard::node_number(&NodesBus::name(i)));
                broker
            })
            .collect();
        let mut bus = NodesBus::new(count);
        for (node, from, message) in bus.start() {
            sim.brokers[node].handle_shard_message(sim.now, from, message);
        }
        sim.nodes = Some(bus);
        sim.drain();
        sim
    }

    /// A simulation of `shards` brokers acting as one (see
    /// [`shard`]): each connection goes to its client id's
    /// home shard once its CONNECT is whole, and what the shards tell each
    /// other is carried in order before the next client acts. The shards
    /// share the store, restored with a [`ShardRestorer`];
    /// [`replace_policy`](Self::replace_policy) and
    /// [`broker_publishes`](Self::broker_publishes) concern shard 0 alone.
    pub fn with_shards(config: Config, shards: u16) -> Self {
        let mut sim = Self::new(config.clone());
        sim.brokers = shard_brokers(&config, shards);
        if config.persistence && shards > 1 {
            // As a runtime does: the shards start from the (empty) store.
            sim.start_again(shards);
        }
        sim
    }

    /// With `manual`, store batches wait for [`commit`](Self::commit)
    /// instead of being committed as soon as they come (with
    /// [`Config::persistence`](crate::Config) on).
    pub fn manual_commits(&mut self, manual: bool) {
        self.disk.manual = manual;
    }

    /// Commits every batch handed over so far and tells the brokers.
    pub fn commit(&mut self) {
        let durable = self.commit_pending();
        if !durable.is_empty() {
            self.tell_durable(&durable);
            self.drain();
        }
    }

    /// Commits the oldest batch handed over, alone, and tells its broker:
    /// the store durable up to that batch. Whether there was one.
    pub fn commit_one(&mut self) -> bool {
        if self.disk.pending.is_empty() {
            return false;
        }
        let durable = self.commit_first(1);
        self.tell_durable(&durable);
        self.drain();
        true
    }

    /// Tells each shard named in `durable` its batches up to the number
    /// given are durable.
    fn tell_durable(&mut self, durable: &[(usize, u64)]) {
        for &(shard, seq) in durable {
            if self.brokers.len() > 1 {
                self.note(format_args!("store: shard {shard} durable up to batch {seq}"));
            } else {
                self.note(format_args!("store: durable up to batch {seq}"));
            }
            if let Some(broker) = self.brokers.get_mut(shard) {
                broker.handle_input(self.now, Input::Stored { seq });
            }
        }
    }

    /// Batches handed over and not committed yet.
    pub fn pending_batches(&self) -> usize {
        self.disk.pending.len()
    }

    /// The store commits every batch handed over, then the process dies
    /// before the broker hears of it (nothing those batches held back
    /// leaves), and starts again as in
    /// [`crash_and_restart`](Self::crash_and_restart).
    pub fn crash_after_commit(&mut self) {
        self.commit_pending();
        self.note(format_args!("store: durable; broker crashes before it hears"));
        self.start_again(self.shard_count());
    }

    /// Applies the pending batches to the disk; the last one's number,
    /// by shard.
    fn commit_pending(&mut self) -> Vec<(usize, u64)> {
        self.commit_first(self.disk.pending.len())
    }

    /// Applies the first `n` pending batches to the disk, numbered after
    /// the last one there; the last one's number by shard, as the shard
    /// numbered it.
    fn commit_first(&mut self, n: usize) -> Vec<(usize, u64)> {
        let mut durable: Vec<(usize, u64)> = Vec::new();
        for (shard, mut batch) in self.disk.pending.drain(..n.min(self.disk.pending.len())) {
            match durable.iter_mut().find(|(s, _)| *s == shard) {
                Some(last) => last.1 = batch.seq,
                None => durable.push((shard, batch.seq)),
            }
            batch.seq = self.disk.durable.last_batch + 1;
            self.disk.durable.apply_batch(&batch);
        }
        durable
    }

    /// What the simulated store holds on disk.
    pub fn stored(&self) -> &StoredState {
        &self.disk.durable
    }

    /// Every store batch the broker emitted, in order.
    pub fn store_history(&self) -> &[StoreBatch] {
        &self.disk.history
    }

    /// The broker process dies: batches not committed are lost, every
    /// connection is gone, and a new broker with the same configuration
    /// starts on what the store holds. Client ends are forgotten.
    pub fn crash_and_restart(&mut self) {
        self.note(format_args!("broker crashes"));
        self.disk.pending.clear();
        self.start_again(self.shard_count());
    }

    /// The broker stops as on SIGTERM (every connection closed, every
    /// batch committed) and starts again on what the store holds.
    pub fn restart(&mut self) {
        self.shutdown();
        self.commit();
        self.note(format_args!("broker restarts"));
        self.start_again(self.shard_count());
    }

    /// How many shards there are.
    fn shard_count(&self) -> u16 {
        u16::try_from(self.brokers.len()).unwrap_or(u16::MAX)
    }

    /// A new process of `shards` shards starts on what the store holds.
    fn start_again(&mut self, shards: u16) {
        let config = self.brokers[0].config().clone();
        self.brokers = shard_brokers(&config, shards);
        self.homes.clear();
        self.unplaced.clear();
        self.bus.clear();
        self.clients.clear();
        self.presence.clear();
        self.replies.clear();
        self.auth_answers.clear();
        let state = self.disk.durable.clone();
        if shards > 1 {
            let brokers = std::mem::take(&mut self.brokers);
            let mut restorer = ShardRestorer::new(brokers, self.now, move |id| shard::home_shard(id, shards));
            state.replay(&mut restorer);
            self.brokers = restorer.finish();
        } else {
            self.brokers[0].restore(self.now, state);
        }
        self.drain();
    }

    /// The process dies as in [`crash_and_restart`](Self::crash_and_restart)
    /// and starts again with `shards` shards: each session goes to its
    /// home among them.
    pub fn crash_and_restart_as(&mut self, shards: u16) {
        self.note(format_args!("broker crashes; {shards} shards at restart"));
        self.disk.pending.clear();
        self.start_again(shards);
    }

    /// Answers the broker's [`Action::Authenticate`] with `check`, at once.
    /// Without one, deferred credentials are refused (not authorised).
    pub fn set_authenticator(&mut self, check: Authenticator) {
        self.authenticator = Some(check);
    }

    /// Replaces the broker's policy, as a configuration reload does (see
    /// [`Broker::replace_policy`]).
    pub fn replace_policy(
        &mut self,
        policy: Box<dyn crate::policy::AccessPolicy>,
        keep: &dyn Fn(crate::policy::ClientInfo<'_>) -> bool,
    ) {
        self.note(format_args!("policy replaced"));
        self.brokers[0].replace_policy(self.now, policy, keep);
        self.drain();
    }

    /// Starts recording a readable transcript (see [`transcript`](Self::transcript)).
    pub fn record(&mut self) {
        self.transcript.get_or_insert_with(String::new);
    }

    /// The transcript so far: one line per packet, close, presence change
    /// and expiry, stamped with virtual time.
    pub fn transcript(&self) -> &str {
        self.transcript.as_deref().unwrap_or("")
    }

    /// Tells broker `shard` (a shard, or a node) `message` from `from` as
    /// the runtime's link says it, then runs what follows.
    pub fn link_says(&mut self, shard: usize, from: ShardId, message: ShardMessage) {
        self.note(format_args!("link says {message:?} from {} to {shard}", from.0));
        if let Some(broker) = self.brokers.get_mut(shard) {
            broker.handle_shard_message(self.now, from, message);
        }
        self.drain();
    }

    /// With [`with_nodes`](Self::with_nodes): holds what node `from` tells
    /// node `to` (as behind a slow inbox) until called again with `held`
    /// false, then runs what follows.
    pub fn hold_path(&mut self, from: usize, to: usize, held: bool) {
        self.note(format_args!("path from node {from} to node {to} {}", if held { "held" } else { "let go" }));
        if let Some(nodes) = self.nodes.as_mut() {
            nodes.hold(from, to, held);
        }
        self.drain();
    }

    /// With [`with_nodes`](Self::with_nodes): drops what node `from`
    /// holds for node `to` ([`hold_path`](Self::hold_path)) that `lost`
    /// picks, as Redis losing entries of an inbox in a failover.
    pub fn lose_held(&mut self, from: usize, to: usize, lost: fn(&ShardMessage) -> bool) {
        self.note(format_args!("path from node {from} to node {to} loses some of what it holds"));
        if let Some(nodes) = self.nodes.as_mut() {
            nodes.lose(from, to, lost);
        }
    }

    /// With [`with_nodes`](Self::with_nodes): `client_id`'s ownership
    /// epoch, as the shared Redis keeps it (0 before any connection).
    pub fn epoch(&self, client_id: &str) -> u64 {
        self.nodes.as_ref().map_or(0, |nodes| nodes.epoch(client_id))
    }

    /// The broker (shard 0's), for its getters.
    pub fn broker(&self) -> &Broker {
        &self.brokers[0]
    }

    /// Every shard's broker, shard 0 first.
    pub fn brokers(&self) -> &[Broker] {
        &self.brokers
    }

    /// The current virtual time.
    pub fn now(&self) -> Now {
        self.now
    }

    /// Totals of the actions seen.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// Client ids the presence store holds now.
    pub fn online(&self) -> &BTreeSet<String> {
        &self.presence
    }

    /// Whether the presence store lists `client_id`.
    pub fn is_online(&self, client_id: &str) -> bool {
        self.presence.contains(client_id)
    }

    /// Opens a connection for a client called `name` in the transcript,
    /// without sending anything.
    pub fn open(&mut self, name: &str, auto_ack: bool) -> ConnId {
        self.open_from(name, auto_ack, Peer::default())
    }

    /// Like [`open`](Self::open), for a connection the runtime describes
    /// as `peer` (its listener, a TLS identity).
    pub fn open_from(&mut self, name: &str, auto_ack: bool, peer: Peer) -> ConnId {
        let conn = if self.brokers.len() == 1 {
            self.brokers[0].accept(self.now, peer)
        } else if self.nodes.is_some() {
            // Nodes in turn, as behind a load balancer.
            let conn = self.brokers[0].new_conn_id();
            let node = usize::try_from(conn.0).unwrap_or(0) % self.brokers.len();
            self.brokers[node].accept_as(self.now, conn, peer);
            self.homes.insert(conn, node);
            conn
        } else {
            // Ids from one counter, so that they are unique across shards;
            // the broker takes the connection once its CONNECT is whole.
            let conn = self.brokers[0].new_conn_id();
            self.unplaced.insert(conn, (peer, Vec::new()));
            conn
        };
        self.clients.insert(
            conn,
            ClientEnd {
                name: name.to_owned(),
                auto_ack,
                inbox: BytesMut::new(),
                received: Vec::new(),
                closed: None,
                next_packet_id: 0,
                reading: true,
                unread: BytesMut::new(),
                gauge: WriterGauge::new(self.brokers[0].config().max_unwritten_bytes),
                paused: false,
                unsent: BytesMut::new(),
            },
        );
        self.note(format_args!("{name} connects"));
        self.drain();
        conn
    }

    /// Opens a connection and sends CONNECT.
    pub fn connect(&mut self, options: ClientOptions) -> ConnId {
        self.connect_from(options, Peer::default())
    }

    /// Opens a connection described as `peer` and sends CONNECT.
    pub fn connect_from(&mut self, options: ClientOptions, peer: Peer) -> ConnId {
        let name = if options.connect.client_id.is_empty() { "(empty)" } else { &options.connect.client_id };
        let conn = self.open_from(name, options.auto_ack, peer);
        if let Some(client) = self.clients.get_mut(&conn) {
            client.reading = options.reading;
        }
        self.send(conn, &options.connect_packet());
        conn
    }

    /// Sends a packet from the client of `conn`.
    pub fn send(&mut self, conn: ConnId, packet: &Packet) {
        let mut bytes = BytesMut::new();
        packet.encode(&mut bytes);
        if let Some(client) = self.clients.get(&conn) {
            let waits = if client.paused { " (waits: reads paused)" } else { "" };
            let line = format!("{} -> {}{waits}", client.name, describe(packet));
            self.note(format_args!("{line}"));
        }
        self.feed(conn, &bytes);
    }

    /// Sends raw bytes from the client of `conn` (malformed input, split
    /// frames).
    pub fn send_bytes(&mut self, conn: ConnId, data: &[u8]) {
        if let Some(client) = self.clients.get(&conn) {
            let line = format!("{} -> bytes {}", client.name, hex(data));
            self.note(format_args!("{line}"));
        }
        self.feed(conn, data);
    }

    fn feed(&mut self, conn: ConnId, data: &[u8]) {
        if let Some(client) = self.clients.get_mut(&conn).filter(|c| c.paused) {
            client.unsent.extend_from_slice(data);
            return;
        }
        if !self.place(conn, data) {
            return;
        }
        self.input_for(conn, Input::Received { conn, data });
        self.drain();
    }

    /// Whether `conn` has its shard, giving it one if `data` completes its
    /// CONNECT; then its broker is handed everything sent before `data`.
    fn place(&mut self, conn: ConnId, data: &[u8]) -> bool {
        let Some((peer, sent)) = self.unplaced.get_mut(&conn) else { return true };
        sent.extend_from_slice(data);
        let shards = u16::try_from(self.brokers.len()).unwrap_or(u16::MAX);
        let config = self.brokers[0].config();
        let key = HomeKey::of(config.listener_rules(peer.listener).use_username_as_clientid, &peer.identity);
        let placed = shard::place(sent, shards, config.max_packet_size(), &key);
        let Placement::Home(ShardId(home)) = placed else { return false };
        let Some((peer, sent)) = self.unplaced.remove(&conn) else { return false };
        let home = usize::from(home);
        self.homes.insert(conn, home);
        let before = &sent[..sent.len() - data.len()];
        self.brokers[home].accept_as(self.now, conn, peer);
        if !before.is_empty() {
            self.brokers[home].handle_input(self.now, Input::Received { conn, data: before });
        }
        true
    }

    /// Hands `input` about `conn` to the broker serving it (shard 0's
    /// until it is placed).
    fn input_for(&mut self, conn: ConnId, input: Input<'_>) {
        let shard = self.homes.get(&conn).copied().unwrap_or(0);
        self.brokers[shard].handle_input(self.now, input);
    }

    /// The client of `conn` reads up to `max` bytes of what the broker
    /// sent it (all of it for a client that reads by itself).
    pub fn read(&mut self, conn: ConnId, max: usize) {
        let Some(client) = self.clients.get_mut(&conn) else { return };
        let len = max.min(client.unread.len());
        let data = client.unread.split_to(len);
        let progress = client.gauge.written(len);
        self.receive(conn, &data);
        self.report(conn, progress);
        self.drain();
    }

    /// Lets the client of `conn` read by itself again (`true`) or makes it
    /// stop reading (`false`); turned on, it first reads what waits.
    pub fn set_reading(&mut self, conn: ConnId, reading: bool) {
        let Some(client) = self.clients.get_mut(&conn) else { return };
        client.reading = reading;
        if reading {
            self.read(conn, usize::MAX);
        }
    }

    /// Bytes the broker sent to `conn` that its client has not read.
    pub fn unread_len(&self, conn: ConnId) -> usize {
        self.clients.get(&conn).map_or(0, |c| c.unread.len())
    }

    /// Bytes the client of `conn` sent that wait for the broker to read
    /// them again.
    pub fn unsent_len(&self, conn: ConnId) -> usize {
        self.clients.get(&conn).map_or(0, |c| c.unsent.len())
    }

    /// Whether the broker has paused reading `conn`.
    pub fn is_paused(&self, conn: ConnId) -> bool {
        self.clients.get(&conn).is_some_and(|c| c.paused)
    }

    /// Hands the broker a report on `conn`'s writer, as a runtime does.
    fn report(&mut self, conn: ConnId, progress: Option<WriterProgress>) {
        if let Some(progress) = progress {
            self.input_for(conn, Input::Writer { conn, progress });
        }
    }

    /// Subscribes with a fresh packet id.
    pub fn subscribe(&mut self, conn: ConnId, filter: &str, qos: QoS) {
        let Ok(filter) = TopicFilter::new(filter) else { return };
        let packet_id = self.next_packet_id(conn);
        self.send(conn, &Packet::Subscribe(Subscribe { packet_id, filters: vec![(filter, qos)] }));
    }

    /// Unsubscribes with a fresh packet id.
    pub fn unsubscribe(&mut self, conn: ConnId, filter: &str) {
        let Ok(filter) = TopicFilter::new(filter) else { return };
        let packet_id = self.next_packet_id(conn);
        self.send(conn, &Packet::Unsubscribe(Unsubscribe { packet_id, filters: vec![filter] }));
    }

    /// Publishes with a fresh packet id (for QoS 1 and 2). The QoS 2
    /// handshake is completed automatically if the client auto-acks.
    pub fn publish(&mut self, conn: ConnId, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let Ok(topic) = TopicName::new(topic) else { return };
        let packet_id = (qos != QoS::AtMostOnce).then(|| self.next_packet_id(conn));
        let publish = Publish { dup: false, qos, retain, topic, packet_id, payload: Bytes::copy_from_slice(payload) };
        self.send(conn, &Packet::Publish(publish));
    }

    /// The broker publishes a message of its own ([`Input::Publish`]).
    pub fn broker_publishes(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        self.note(format_args!("broker publishes {topic}"));
        self.brokers[0].handle_input(self.now, Input::Publish { topic, payload, qos, retain });
        self.drain();
    }

    /// Sends DISCONNECT.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.send(conn, &Packet::Disconnect);
    }

    /// The network drops the connection (the runtime reports `Closed`).
    pub fn drop_connection(&mut self, conn: ConnId) {
        if let Some(client) = self.clients.get(&conn) {
            let line = format!("{} connection lost", client.name);
            self.note(format_args!("{line}"));
        }
        if self.unplaced.remove(&conn).is_none() {
            self.input_for(conn, Input::Closed { conn });
        }
        self.drain();
    }

    /// Shuts the broker down: every connection closes.
    pub fn shutdown(&mut self) {
        self.note(format_args!("broker shuts down"));
        for broker in &mut self.brokers {
            broker.shutdown(self.now);
        }
        self.drain();
    }

    /// Moves virtual time forward by `by`, firing every deadline on the way
    /// at its own moment.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now.instant + by;
        let unix_at = |sim: &Self, at: Instant| {
            let elapsed = at.saturating_duration_since(sim.now.instant).as_secs_f64();
            UnixTime::from_secs_f64(sim.now.unix.as_secs_f64() + elapsed)
        };
        // Bounded: every round either fires a deadline or ends.
        for _ in 0..1_000_000 {
            // The shard due first; ties in shard order.
            let due = self.brokers.iter().enumerate().filter_map(|(i, b)| Some((b.poll_timeout()?, i))).min();
            match due {
                Some((at, shard)) if at <= target => {
                    self.now = Now::new(at.max(self.now.instant), unix_at(self, at.max(self.now.instant)));
                    self.brokers[shard].handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = Now::new(target, unix_at(self, target));
    }

    /// Packets the client of `conn` received since the last call.
    pub fn take_received(&mut self, conn: ConnId) -> Vec<Packet> {
        self.clients.get_mut(&conn).map(|c| std::mem::take(&mut c.received)).unwrap_or_default()
    }

    /// The PUBLISH packets among [`take_received`](Self::take_received).
    pub fn take_publishes(&mut self, conn: ConnId) -> Vec<Publish> {
        self.take_received(conn)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Why the broker closed `conn`, if it did.
    pub fn closed(&self, conn: ConnId) -> Option<CloseReason> {
        self.clients.get(&conn)?.closed
    }

    /// Forgets the client end of a closed connection (long simulations).
    pub fn forget(&mut self, conn: ConnId) {
        self.clients.remove(&conn);
    }

    fn next_packet_id(&mut self, conn: ConnId) -> PacketId {
        let Some(client) = self.clients.get_mut(&conn) else { return PacketId::MIN };
        client.next_packet_id = client.next_packet_id.checked_add(1).unwrap_or(1);
        PacketId::new(client.next_packet_id).unwrap_or(PacketId::MIN)
    }

    /// Carries out every pending action, then the clients' automatic replies.
    fn drain(&mut self) {
        // Bounded: each reply answers a packet the broker sent; a broker
        // answering replies forever would be a bug worth a loud stop.
        for _ in 0..1_000_000 {
            self.apply_all();
            let committed = if self.disk.manual { Vec::new() } else { self.commit_pending() };
            if !committed.is_empty() {
                for (shard, seq) in committed {
                    self.brokers[shard].handle_input(self.now, Input::Stored { seq });
                }
                continue;
            }
            if let Some((conn, result)) = self.auth_answers.pop_front() {
                self.note(format_args!("credentials checked: {}", if result.is_ok() { "accepted" } else { "refused" }));
                self.input_for(conn, Input::Authenticated { conn, result });
                continue;
            }
            let Some((conn, packet)) = self.replies.pop_front() else { return };
            self.send(conn, &packet);
        }
    }

    /// Carries out every broker's pending actions, and carries what the
    /// shards tell each other, until none has anything left.
    fn apply_all(&mut self) {
        loop {
            let mut quiet = true;
            for shard in 0..self.brokers.len() {
                while let Some(action) = self.brokers[shard].poll_action() {
                    quiet = false;
                    match action {
                        Action::ToShard { to, message } => match self.nodes.as_mut() {
                            Some(nodes) => nodes.post(shard, to, message),
                            None => {
                                let from = ShardId(u16::try_from(shard).unwrap_or(u16::MAX));
                                self.bus.push_back((from, to, message));
                            }
                        },
                        Action::Store { batch } => {
                            self.note(format_args!("store: batch {} ({} changes)", batch.seq, batch.ops.len()));
                            self.disk.history.push(batch.clone());
                            self.disk.pending.push_back((shard, batch));
                        }
                        action => self.apply(action),
                    }
                }
            }
            while let Some((from, to, message)) = self.bus.pop_front() {
                quiet = false;
                if let Some(broker) = self.brokers.get_mut(usize::from(to.0)) {
                    broker.handle_shard_message(self.now, from, message);
                }
            }
            for (node, from, message) in self.nodes.as_mut().map(NodesBus::carry).unwrap_or_default() {
                quiet = false;
                self.brokers[node].handle_shard_message(self.now, from, message);
            }
            if quiet {
                return;
            }
        }
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Send { conn, data } => {
                self.stats.bytes_sent += data.len() as u64;
                match self.clients.get_mut(&conn) {
                    Some(client) if !client.reading => {
                        client.unread.extend_from_slice(&data);
                        let progress = client.gauge.queued(data.len());
                        self.report(conn, progress);
                    }
                    _ => self.receive(conn, &data),
                }
            }
            Action::PauseReading { conn } => {
                if let Some(client) = self.clients.get_mut(&conn) {
                    client.paused = true;
                    let line = format!("{}: reads paused", client.name);
                    self.note(format_args!("{line}"));
                }
            }
            Action::ResumeReading { conn } => {
                let Some(client) = self.clients.get_mut(&conn) else { return };
                client.paused = false;
                let unsent = std::mem::take(&mut client.unsent);
                let line = format!("{}: reads resumed", client.name);
                self.note(format_args!("{line}"));
                // Read as a runtime reads a socket, a chunk at a time; the
                // broker may pause it again on the way.
                let mut rest = &unsent[..];
                while !rest.is_empty() {
                    let (chunk, tail) = rest.split_at(rest.len().min(READ_CHUNK));
                    rest = tail;
                    if self.clients.get(&conn).is_some_and(|c| c.paused) {
                        if let Some(client) = self.clients.get_mut(&conn) {
                            client.unsent.extend_from_slice(chunk);
                        }
                        continue;
                    }
                    self.input_for(conn, Input::Received { conn, data: chunk });
                    self.apply_all();
                }
            }
            Action::Close { conn, reason } => {
                self.stats.closed += 1;
                if let Some(client) = self.clients.get_mut(&conn) {
                    client.closed = Some(reason);
                    let line = format!("{} <- CLOSE {reason}", client.name);
                    self.note(format_args!("{line}"));
                }
            }
            Action::Deliver { .. } => self.stats.delivered += 1,
            Action::MarkOnline { client, .. } => {
                self.stats.marked_online += 1;
                self.note(format_args!("presence: HSET mqtt {client} 1"));
                self.presence.insert(client.as_str().to_owned());
            }
            Action::MarkOffline { client, .. } => {
                self.stats.marked_offline += 1;
                self.note(format_args!("presence: HDEL mqtt {client}"));
                self.presence.remove(client.as_str());
            }
            Action::Authenticate { conn, client, username, password, .. } => {
                let result = match self.authenticator.as_mut() {
                    Some(check) => check(&client, username.as_deref(), password.as_ref().map(Password::as_bytes)),
                    None => Err(Refusal::NotAuthorized),
                };
                self.auth_answers.push_back((conn, result));
            }
            // Taken by `apply_all` before.
            Action::ToShard { .. } | Action::Store { .. } => {}
            Action::DropExpired { client, message } => {
                self.stats.expired += 1;
                self.note(format_args!("expired: {} for {client}", message.topic.as_str()));
            }
        }
    }

    fn receive(&mut self, conn: ConnId, data: &[u8]) {
        let Some(client) = self.clients.get_mut(&conn) else { return };
        client.inbox.extend_from_slice(data);
        let mut lines = Vec::new();
        loop {
            // The broker writes every packet with 3.1.1's flags, whatever
            // its client speaks: held to the strict rules.
            match codec::decode(&mut client.inbox, CLIENT_MAX_PACKET, Protocol::V311) {
                Ok(Some(packet)) => {
                    lines.push(format!("{} <- {}", client.name, describe(&packet)));
                    if client.auto_ack
                        && let Some(reply) = auto_reply(&packet)
                    {
                        self.replies.push_back((conn, reply));
                    }
                    client.received.push(packet);
                }
                Ok(None) => break,
                Err(error) => {
                    lines.push(format!("{} <- undecodable bytes: {error}", client.name));
                    client.inbox.clear();
                    break;
                }
            }
        }
        for line in lines {
            self.note(format_args!("{line}"));
        }
    }

    fn note(&mut self, line: std::fmt::Arguments<'_>) {
        let elapsed = self.now.instant.since_origin();
        if let Some(transcript) = self.transcript.as_mut() {
            let _ = writeln!(transcript, "+{}.{:03}s {line}", elapsed.as_secs(), elapsed.subsec_millis());
        }
    }
}

/// What a well-behaved client answers.
/// `shards` brokers with `config` (one at least), each joined as its shard.
fn shard_brokers(config: &Config, shards: u16) -> Vec<Broker> {
    let shards = shards.max(1);
    (0..shards)
        .map(|i| {
            let mut broker = Broker::new(config.clone());
            broker.join_shards(ShardId(i), shards);
            broker
        })
        .collect()
}

fn auto_reply(packet: &Packet) -> Option<Packet> {
    match packet {
        Packet::Publish(Publish { qos: QoS::AtLeastOnce, packet_id: Some(id), .. }) => Some(Packet::PubAck(*id)),
        Packet::Publish(Publish { qos: QoS::ExactlyOnce, packet_id: Some(id), .. }) => Some(Packet::PubRec(*id)),
        Packet::PubRec(id) => Some(Packet::PubRel(*id)),
        Packet::PubRel(id) => Some(Packet::PubComp(*id)),
        _ => None,
    }
}

/// One readable line for a packet, as transcripts show it.
pub fn describe(packet: &Packet) -> String {
    match packet {
        Packet::Connect(c) => {
            let mut s = format!(
                "CONNECT {} id={:?} clean={} keepalive={}",
                c.protocol.name(),
                c.client_id.to_string(),
                u8::from(c.clean_session),
                c.keep_alive
            );
            if let Some(w) = &c.will {
                let _ = write!(s, " will={:?} q{} r{}", w.topic.as_str(), w.qos.bits(), u8::from(w.retain));
            }
            if let Some(u) = &c.username {
                let _ = write!(s, " user={:?}", u.to_string());
            }
            if c.password.is_some() {
                s.push_str(" password=<redacted>");
            }
            s
        }
        Packet::ConnAck(a) => format!("CONNACK sp={} rc={}", u8::from(a.session_present), a.code as u8),
        Packet::Publish(p) => {
            let id = p.packet_id.map(|id| format!(" id={id}")).unwrap_or_default();
            format!(
                "PUBLISH d{} q{} r{}{id} {:?} {:?}",
                u8::from(p.dup),
                p.qos.bits(),
                u8::from(p.retain),
                p.topic.as_str(),
                String::from_utf8_lossy(&p.payload)
            )
        }
        Packet::PubAck(id) => format!("PUBACK id={id}"),
        Packet::PubRec(id) => format!("PUBREC id={id}"),
        Packet::PubRel(id) => format!("PUBREL id={id}"),
        Packet::PubComp(id) => format!("PUBCOMP id={id}"),
        Packet::Subscribe(s) => {
            let filters: Vec<String> =
                s.filters.iter().map(|(f, q)| format!("{:?} q{}", f.as_str(), q.bits())).collect();
            format!("SUBSCRIBE id={} [{}]", s.packet_id, filters.join(", "))
        }
        Packet::SubAck(s) => {
            let codes: Vec<String> = s
                .return_codes
                .iter()
                .map(|c| match c {
                    SubscribeReturnCode::Granted(q) => format!("q{}", q.bits()),
                    SubscribeReturnCode::Failure => "0x80".to_owned(),
                })
                .collect();
            format!("SUBACK id={} [{}]", s.packet_id, codes.join(", "))
        }
        Packet::Unsubscribe(u) => {
            let filters: Vec<String> = u.filters.iter().map(|f| format!("{:?}", f.as_str())).collect();
            format!("UNSUBSCRIBE id={} [{}]", u.packet_id, filters.join(", "))
        }
        Packet::UnsubAck(id) => format!("UNSUBACK id={id}"),
        Packet::PingReq => "PINGREQ".to_owned(),
        Packet::PingResp => "PINGRESP".to_owned(),
        Packet::Disconnect => "DISCONNECT".to_owned(),
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}
