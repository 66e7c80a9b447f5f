//! The broker: every connection, session, subscription and retained
//! message, driven by [`Input`]s and time, answering with [`Action`]s.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, trace, warn};

use crate::action::{Action, Input};
use crate::auth::FilePolicy;
use crate::codec::{
    self, ConnAck, Connect, ConnectReturnCode, DecodeError, LastWill, Packet, Publish, SubAck, Subscribe,
    SubscribeReturnCode, Unsubscribe,
};
use crate::config::{Config, ListenerRules};
use crate::congestion::{Congestion, CongestionDue};
use crate::error::{CloseReason, Violation};
use crate::ids::IdGenerator;
use crate::log_type;
use crate::memory::MemoryGauge;
use crate::message::Message;
use crate::occupancy::Occupancy;
use crate::peer::{Identity, ListenerId, Peer, Remote};
use crate::persistence::journal::Journal;
use crate::persistence::{CopyState, InboxMark, MessageId};
use crate::policy::{AccessPolicy, AuthDecision, ClientInfo, FilterAccess, Password, Refusal, TrustBridges};
use crate::retained::RetainedStore;
use crate::router::SubscriptionTree;
use crate::session::{
    AckOutcome, Grant, Limits, Outgoing, Presence, QueueFull, Session, SessionKey, SessionStore, Stage,
};
use crate::shard::{Recorded, ShardAddress, ShardId, ShardMessage, ShardRoutes, home_shard, may_be_stored};
use crate::sys::{self, SysTopics};
use crate::time::{Instant, Now};
use crate::timer::Deadlines;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{Ack, ClientId, ConnId, ConnIdMap, PacketId, Protocol, QoS};

use self::mount::Seen;

mod claims;
mod flow;
mod mount;
mod ownership;
mod persist;
mod restore;
mod stats;

pub use self::restore::{Restorer, ShardRestorer};
use self::stats::Gauges;
pub use self::stats::{Counts, Drops, Stats};

/// The longest client id MQTT 3.1 allows; Mosquitto enforces it for 3.1.
const MQTT31_MAX_CLIENT_ID: usize = 23;

/// How often offline sessions are checked for expiry.
const SESSION_EXPIRY_CHECK: Duration = Duration::from_secs(60);

/// Longest payload excerpt in the `payload: …` expiry debug line.
const LOGGED_PAYLOAD: usize = 256;

/// An MQTT 3.1/3.1.1 broker as a pure state machine.
///
/// It reads no clock and does no I/O: the caller hands it connections,
/// bytes and the time, and carries out the actions it returns.
///
/// Methods come in four kinds, as in quinn-proto:
/// - `accept` opens a connection and returns its id;
/// - `handle_*` consume input ([`handle_input`](Self::handle_input),
///   [`handle_timeout`](Self::handle_timeout), [`shutdown`](Self::shutdown));
/// - `poll_*` produce output ([`poll_action`](Self::poll_action) until it
///   returns `None`, then [`poll_timeout`](Self::poll_timeout));
/// - getters ([`stats`](Self::stats), [`session`](Self::session), ...).
///
/// Time passed in must never go backwards. After each `accept` or
/// `handle_*`, drain `poll_action` before the next call: the bytes for one
/// connection are gathered into one [`Action::Send`] per drain.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    limits: Limits,
    max_packet_size: usize,
    policy: Box<dyn AccessPolicy>,
    /// Boxed: the map's spare buckets (up to half of them) then cost a
    /// pointer each, not a whole connection.
    conns: ConnIdMap<Box<Connection>>,
    /// What the connection and client limits count: this broker's, or
    /// shared by every shard of the process.
    occupancy: Arc<Occupancy>,
    /// What `memory_limit` is compared with.
    memory: Option<Arc<dyn MemoryGauge>>,
    next_conn: u64,
    sessions: SessionStore,
    subscriptions: SubscriptionTree<SessionKey, Grant>,
    retained: RetainedStore<Arc<Message>>,
    deadlines: Deadlines,
    actions: VecDeque<Action>,
    /// Connections with bytes waiting in their `outbuf`, and what was
    /// written there.
    dirty: Dirty,
    ids: IdGenerator,
    /// Reused buffer for the subscribers a message matches.
    matched: Vec<(SessionKey, Grant)>,
    counts: Counts,
    gauges: Gauges,
    sys: SysTopics,
    /// What changed durable state since the last batch; `None` without
    /// persistence.
    journal: Option<Journal>,
    /// Messages a restore found both held for routing (an incoming QoS 2
    /// message) and copied to some sessions: routed again, they skip the
    /// sessions that held a copy at the restore (even if it is done with
    /// since). By their body's key in the store, which names them in every
    /// shard (another shard's copy of the message, come in a
    /// `ShardMessage::Publish`, is held under that key too).
    routed_before: HashMap<MessageId, HashSet<ClientId>>,
    /// Connections with output waiting for the store.
    waiting: Vec<ConnId>,
    /// When offline sessions are next checked against
    /// `persistent_client_expiration`.
    expiry_check: Option<Instant>,
    /// Its place among shards; `None` for a broker alone.
    shards: Option<Box<ShardRoutes>>,
    /// Publishers of other shards this shard's subscribers hold: their
    /// shard, and how many holds.
    held_elsewhere: ConnIdMap<(ShardId, u32)>,
    /// Reused buffer for the shards a message goes to.
    shard_targets: Vec<ShardId>,
    /// On a cluster node, the client ids claimed from the other nodes.
    claims: claims::Claims,
}

/// One network connection: kept within 72 bytes, so that its box takes an
/// 80-byte heap chunk (see the size test below).
#[derive(Debug)]
struct Connection {
    /// Who connected and when, kept until its CONNECT is accepted (the
    /// CONNECT deadline, the TLS identity, the log line): boxed, so that
    /// an open connection does not carry it.
    opening: Option<Box<Opening>>,
    listener: ListenerId,
    /// Its user name is its TLS certificate's ([`Identity::Certificate`]).
    certified: bool,
    state: ConnState,
    /// Made when bytes arrive or are queued; dropped once both buffers
    /// are empty unless the connection carries PUBLISH packets (see
    /// `take_output`): an idle connection holds only this pointer.
    buffers: Option<Box<Buffers>>,
    dirty: bool,
    /// A PUBLISH went either way since the last keepalive check: the
    /// buffers are kept between packets (see `take_output`).
    busy: bool,
    last_packet: Instant,
    /// The client's keepalive in seconds, 0 for none; the connection is
    /// closed after 1.5 times that without a packet.
    keep_alive: u16,
    /// The connection's entry in `Broker::deadlines`.
    armed: Option<Instant>,
    /// Made when its writer falls behind, it holds publishers or it is
    /// held; dropped when all is back to normal.
    congestion: Option<Box<Congestion>>,
    /// Output waiting for store batches to be durable, and the batch
    /// this turn's output is to wait for: boxed, and made only with
    /// persistence on, when a packet promises something.
    waiting: Option<Box<persist::Waiting>>,
}

/// What a connection's deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Close it.
    Close(CloseReason),
    /// Its hold on publishers lasted too long.
    StopHolding,
}

/// Where a copy comes from, for flow control: the connection that
/// published it, if holding that connection can slow its source, and
/// whether the message goes to other sessions too.
#[derive(Debug, Clone, Copy, Default)]
struct Source {
    conn: Option<ConnId>,
    shared: bool,
    /// The shard `conn` is on, when it is another one.
    shard: Option<ShardId>,
}

/// Why an incoming PUBLISH is acknowledged and not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Its payload is above `message_size_limit`.
    TooLarge,
    /// The access policy does not let its client write there.
    Denied,
    /// Its topic does not fit below the listener's mount point (or its
    /// connection is gone).
    Unroutable,
}

/// A connection until its CONNECT is accepted.
#[derive(Debug)]
struct Opening {
    peer: Peer,
    opened_at: Instant,
}

/// A connection's bytes in transit.
#[derive(Debug, Default)]
struct Buffers {
    /// Received, not yet a whole packet.
    inbuf: BytesMut,
    /// Encoded, not yet handed to the runtime.
    outbuf: BytesMut,
}

#[derive(Debug)]
enum ConnState {
    /// Accepted, CONNECT not seen yet.
    AwaitingConnect,
    /// CONNECT received, credentials being checked by the runtime (or,
    /// on a cluster node, its client id claimed from the other nodes:
    /// see `claims`); later bytes wait in the buffer. The client id is boxed with the
    /// CONNECT: inline, it would make every open connection 16 bytes
    /// larger.
    Authenticating(Box<Pending>),
    /// CONNECT accepted. Its user name is its session's `owner`; its
    /// protocol decides how the packets after it are decoded. Its will is
    /// boxed: most clients have none.
    Active { session: SessionKey, protocol: Protocol, will: Option<Box<LastWill>> },
}

/// A CONNECT waiting for the runtime's word on its credentials.
#[derive(Debug)]
struct Pending {
    connect: Connect,
    client_id: ClientId,
}

impl Connection {
    fn buffers(&mut self) -> &mut Buffers {
        self.buffers.get_or_insert_default()
    }

    /// The rules its next packet is decoded by: those of the protocol its
    /// accepted CONNECT named, the strict 3.1.1 ones before that (a CONNECT
    /// names its own, and nothing else may come first).
    fn protocol(&self) -> Protocol {
        match self.state {
            ConnState::Active { protocol, .. } => protocol,
            ConnState::AwaitingConnect | ConnState::Authenticating(_) => Protocol::V311,
        }
    }

    fn inbuf_len(&self) -> usize {
        self.buffers.as_ref().map_or(0, |b| b.inbuf.len())
    }

    /// Everything encoded so far, if anything. A connection that carries
    /// PUBLISH packets splits it off and reuses the buffer once the runtime
    /// has written it; any other (CONNACK, PINGRESP, acknowledgements
    /// alone) hands it over whole and keeps no buffer.
    fn take_output(&mut self) -> Option<Bytes> {
        let buffers = self.buffers.as_mut()?;
        if buffers.outbuf.is_empty() {
            return None;
        }
        if self.busy {
            return Some(buffers.outbuf.split().freeze());
        }
        let data = std::mem::take(&mut buffers.outbuf).freeze();
        self.drop_idle_buffers();
        Some(data)
    }

    /// After the input was decoded to its end: unless the connection
    /// carries PUBLISH packets, the buffer goes, and with it the packet
    /// the client id (or a PINGREQ) was cut from.
    fn input_decoded(&mut self) {
        if let Some(buffers) = self.buffers.as_mut().filter(|_| !self.busy)
            && buffers.inbuf.is_empty()
        {
            buffers.inbuf = BytesMut::new();
        }
    }

    /// Drops both buffers if they hold nothing.
    fn drop_idle_buffers(&mut self) {
        if self.buffers.as_ref().is_some_and(|b| b.inbuf.is_empty() && b.outbuf.is_empty()) {
            self.buffers = None;
        }
    }

    /// The keepalive check passed by (every 1.5 keepalive periods): a
    /// connection that carried PUBLISH packets counts as idle again until
    /// its next one, and gives up its buffers if they are empty.
    fn keepalive_checked(&mut self) {
        self.busy = false;
        self.drop_idle_buffers();
    }

    /// When something must happen to the connection if nothing arrives:
    /// the earliest of its CONNECT or keepalive timeout (none while its
    /// reads are paused: it cannot be heard) and its congestion's
    /// deadline.
    fn deadline(&self, config: &Config) -> Option<(Instant, Due)> {
        let silence = match self.state {
            ConnState::AwaitingConnect | ConnState::Authenticating(_) => {
                let opened_at = self.opening.as_ref().map_or(self.last_packet, |o| o.opened_at);
                Some((opened_at + config.connect_timeout, Due::Close(CloseReason::ConnectTimeout)))
            }
            ConnState::Active { .. } if self.keep_alive > 0 && !self.is_held() => {
                let grace = Duration::from_millis(u64::from(self.keep_alive) * 1500);
                Some((self.last_packet + grace, Due::Close(CloseReason::KeepAliveTimeout)))
            }
            ConnState::Active { .. } => None,
        };
        let congestion = self.congestion.as_ref().and_then(|c| {
            let (at, due) = c.deadline(config.slow_subscriber_timeout, config.not_reading_timeout)?;
            Some(match due {
                CongestionDue::NotReading => (at, Due::Close(CloseReason::NotReading)),
                CongestionDue::StopHolding => (at, Due::StopHolding),
            })
        });
        match (silence, congestion) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Its congestion state, made if needed.
    fn congestion(&mut self) -> &mut Congestion {
        self.congestion.get_or_insert_default()
    }

    /// Drops the congestion state once there is nothing left in it.
    fn tidy_congestion(&mut self) {
        if self.congestion.as_ref().is_some_and(|c| c.is_clear()) {
            self.congestion = None;
        }
    }

    /// Whether subscribers hold it: its reads are paused.
    fn is_held(&self) -> bool {
        self.congestion.as_ref().is_some_and(|c| c.is_held())
    }

    /// Whether its writer is behind: QoS 0 copies to it are dropped.
    fn is_behind(&self) -> bool {
        self.congestion.as_ref().is_some_and(|c| c.is_behind())
    }
}

/// A connected client, as the HTTP API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedClient<'a> {
    /// Its connection.
    pub conn: ConnId,
    /// Its client id.
    pub client_id: &'a ClientId,
    /// The user name it connected with.
    pub username: Option<&'a str>,
    /// The listener it came in on.
    pub listener: ListenerId,
    /// The protocol its CONNECT named.
    pub protocol: Protocol,
    /// Its keepalive, in seconds.
    pub keep_alive: u16,
    /// Its session's subscriptions.
    pub subscriptions: usize,
    /// Copies waiting in its session.
    pub queued: usize,
}

/// A session as seen from outside, for tests and simulations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The connection currently bound to it.
    pub conn: Option<ConnId>,
    /// It ends with its connection.
    pub clean: bool,
    /// QoS 1/2 copies sent and not yet completed.
    pub inflight: usize,
    /// Copies waiting behind the window (or for the client to return).
    pub queued: usize,
    /// Subscriptions with their granted QoS, by filter.
    pub subscriptions: Vec<(String, QoS)>,
}

impl Broker {
    /// A broker with `config` that lets every client do everything but
    /// write `$SYS`; clients without a user name only if
    /// `config.allow_anonymous` (Mosquitto without password or ACL file).
    pub fn new(config: Config) -> Self {
        let policy = FilePolicy::new(None, None, config.allow_anonymous);
        Self::with_policy(config, Box::new(policy))
    }

    /// A broker that asks `policy` who may connect, subscribe and publish.
    pub fn with_policy(config: Config, policy: Box<dyn AccessPolicy>) -> Self {
        let limits = Limits {
            window: config.inflight_window(),
            max_inflight_bytes: config.max_inflight_bytes,
            max_queued: config.max_queued_messages,
            max_queued_bytes: config.max_queued_bytes,
        };
        let journal = config.persistence.then(|| Journal::new(0));
        let occupancy = Arc::new(Occupancy::new(&config));
        Self {
            expiry_check: config.persistent_client_expiration.map(|_| Instant::ZERO + SESSION_EXPIRY_CHECK),
            limits,
            max_packet_size: config.max_packet_size(),
            ids: IdGenerator::new(config.id_seed),
            config,
            policy: Box::new(TrustBridges(policy)),
            conns: ConnIdMap::default(),
            occupancy,
            memory: None,
            next_conn: 1,
            sessions: SessionStore::default(),
            subscriptions: SubscriptionTree::new(),
            retained: RetainedStore::new(),
            deadlines: Deadlines::default(),
            actions: VecDeque::new(),
            dirty: Dirty::default(),
            matched: Vec::new(),
            counts: Counts::default(),
            gauges: Gauges::default(),
            sys: SysTopics::default(),
            journal,
            routed_before: HashMap::new(),
            waiting: Vec::new(),
            shards: None,
            held_elsewhere: ConnIdMap::default(),
            shard_targets: Vec::new(),
            claims: claims::Claims::default(),
        }
    }

    /// Makes this broker shard `me` of `count` (see [`shard`](crate::shard)):
    /// it announces its sessions' filters to the other shards and hands them
    /// the messages their sessions subscribe to ([`Action::ToShard`]). To be
    /// called before any session exists: a restored one's filters are
    /// announced as they are restored.
    pub fn join_shards(&mut self, me: ShardId, count: u16) {
        if count > 1 {
            self.shards = Some(Box::new(ShardRoutes::new(me, count)));
            if let Some(journal) = self.journal.as_mut() {
                journal.draw_keys(me.0, count);
            }
        }
    }

    /// How many shards this broker is one of (1 alone).
    pub fn shard_count(&self) -> u16 {
        self.shards.as_ref().map_or(1, |shards| shards.count())
    }

    /// This broker's shard, when it is one of several.
    pub fn shard(&self) -> Option<ShardId> {
        self.shards.as_ref().map(|shards| shards.me())
    }

    /// Takes in what shard `from` says ([`Action::ToShard`]).
    pub fn handle_shard_message(&mut self, now: Now, from: ShardId, message: ShardMessage) {
        match message {
            ShardMessage::Route(filter) => self.learn_route(from, &filter, true),
            ShardMessage::Unroute(filter) => self.learn_route(from, &filter, false),
            ShardMessage::Routed(count) => {
                if let Some(shards) = self.shards.as_mut() {
                    shards.durability.routes_taken(from, count);
                    self.release_settled();
                }
            }
            ShardMessage::RoutesTold => {
                if let Some(shards) = self.shards.as_mut() {
                    shards.routes_told(from);
                }
            }
            ShardMessage::Publish { message, publisher, version, stored } => {
                let keep = match (version, self.shards.as_mut()) {
                    (Some(version), Some(shards)) => shards.is_latest(&message.topic, version),
                    _ => message.retain.then_some(Recorded::ALWAYS),
                };
                let counted = may_be_stored(&message);
                let foreign = match (stored, self.journal.as_mut()) {
                    (Some(id), Some(journal)) => journal.hold_foreign(&message, id),
                    _ => false,
                };
                self.deliver_here(now, message.clone(), publisher, Some(from), keep);
                if let Some(journal) = self.journal.as_mut().filter(|_| foreign) {
                    journal.let_go_if_unreferenced(&message);
                }
                if counted {
                    self.received_from(from);
                }
            }
            ShardMessage::Forwarded { client, message } => {
                let counted = may_be_stored(&message);
                self.handle_forwarded(now, client, message);
                if counted {
                    self.received_from(from);
                }
            }
            ShardMessage::Retained { message, version } => {
                if let Some(recorded) = self.shards.as_mut().and_then(|s| s.is_latest(&message.topic, version)) {
                    self.store_retained(now, &message, recorded);
                }
                self.received_from(from);
            }
            ShardMessage::Stored(count) => {
                if let Some(shards) = self.shards.as_mut() {
                    shards.durability.confirmed(from, count);
                    self.release_settled();
                }
            }
            ShardMessage::Hold(conn) => {
                if self.shards.as_mut().is_none_or(|shards| shards.holds(from, conn, true)) {
                    self.hold(conn, None);
                }
            }
            ShardMessage::Release(conn) => {
                if self.shards.as_mut().is_none_or(|shards| shards.holds(from, conn, false)) {
                    self.release(now, vec![conn]);
                }
            }
            ShardMessage::Stats(stats) => {
                let own = self.stats();
                if let Some(shards) = self.shards.as_mut() {
                    shards.report(from, *stats, own);
                }
            }
            ShardMessage::Claim { client, stamp } => self.handle_claim(now, from, client, stamp),
            ShardMessage::Claimed { client, session, later } => self.handle_claimed(now, from, client, session, later),
            ShardMessage::Holding { client, holder, filters } => {
                self.handle_holding(now, from, client, holder, filters)
            }
            ShardMessage::Flush { client, stamp, holders } => self.handle_flush(now, from, client, stamp, holders),
            ShardMessage::Flushed { client, stamp } => self.handle_flushed(from, &client, stamp),
            ShardMessage::Will(message) => {
                // Its expiry is read as this broker reads a will's.
                let message = match self.config.message_expiry {
                    true => Message::new(message.topic.clone(), message.payload.clone(), message.qos, message.retain),
                    false => Arc::unwrap_or_clone(message),
                };
                self.route(now, Arc::new(message), None);
            }
            ShardMessage::Joined(address) => {
                self.peer_joined(from, address);
                self.lapsed_is_back(now, address.node);
            }
            ShardMessage::Left => self.peer_left(now, from),
            ShardMessage::CountedGone => self.counted_gone(now),
            ShardMessage::Owner { client, epoch, taken } => self.handle_owner(now, &client, epoch, taken),
            ShardMessage::Adopt { client, session, then } => self.adopt(now, &client, session.map(|s| *s), &then),
            ShardMessage::Lapsed(node) => self.handle_lapsed(now, node),
            ShardMessage::NodesRead => self.nodes_read(now),
            ShardMessage::TakenOver(node) => self.handle_taken_over(now, from, node),
            ShardMessage::InboxRead { node, run, shard, seq } => {
                if let Some(journal) = self.journal.as_mut() {
                    journal.inbox_read(&node, shard, InboxMark { run, seq }, false);
                }
            }
            // Said to the link, never to a shard.
            ShardMessage::Own { .. } => {}
            // The HTTP API's, answered by the server.
            ShardMessage::Api(_) => {}
        }
    }

    /// Shard `from` sent a message this shard may store: counted, to be
    /// confirmed once the batch holding its effects is on disk.
    fn received_from(&mut self, from: ShardId) {
        if let (Some(journal), Some(shards)) = (self.journal.as_ref(), self.shards.as_mut()) {
            shards.durability.received(from, journal.pending_batch());
        }
    }

    /// Makes this broker part of a cluster, as node `node` ([`node_number`](crate::shard::node_number)):
    /// the shards of other nodes join and leave as the runtime's link says
    /// ([`ShardMessage::Joined`], [`ShardMessage::Left`]). To be called
    /// after [`join_shards`](Self::join_shards), before any session exists.
    pub fn join_cluster(&mut self, node: u64) {
        let shards = self.shards.get_or_insert_with(|| Box::new(ShardRoutes::new(ShardId(0), 1)));
        shards.set_node(node);
    }

    /// Shard `peer` of another node is reachable: it learns this shard's
    /// routes and gets every retained message with its version (each
    /// shard hands over all it keeps, so that a change whose author left
    /// or had not heard of `peer` yet still reaches it), and the claims
    /// under way ask it.
    fn peer_joined(&mut self, peer: ShardId, address: ShardAddress) {
        let Some(shards) = self.shards.as_mut() else { return };
        if !shards.peer_joined(peer, address) {
            return;
        }
        let filters: Vec<TopicFilter> = shards.local_filters().cloned().collect();
        for filter in filters {
            self.actions.push_back(Action::ToShard { to: peer, message: ShardMessage::Route(filter) });
            if self.journal.is_some() {
                shards.durability.posted_route(peer);
            }
        }
        self.actions.push_back(Action::ToShard { to: peer, message: ShardMessage::RoutesTold });
        for (topic, message) in self.retained.all() {
            // One not changed since a restore at another shard of this
            // process counts as the oldest change, as a restore makes it.
            let version = shards.kept_version(&topic).unwrap_or_else(|| shards.restored_version());
            if self.journal.is_some() {
                shards.durability.posted(peer);
            }
            let message = ShardMessage::Retained { message, version };
            self.actions.push_back(Action::ToShard { to: peer, message });
        }
        self.flushes_resolved(address);
        self.claims_with(peer);
    }

    /// Shard `peer` of another node is gone: its routes go, and the
    /// publishers it held here read again.
    fn peer_left(&mut self, now: Now, peer: ShardId) {
        if let Some(shards) = self.shards.as_mut() {
            let held = shards.peer_left(peer);
            shards.durability.forget_routes(peer);
            self.release(now, held);
            self.release_settled();
        }
        self.claims_without(now, peer);
    }

    /// Takes in shard `from`'s route change; a shard of another node is
    /// told it was (its SUBACK waits for that).
    fn learn_route(&mut self, from: ShardId, filter: &TopicFilter, routed: bool) {
        let Some(shards) = self.shards.as_mut() else { return };
        shards.learn(from, filter, routed);
        if shards.is_peer(from) {
            let count = shards.route_received(from);
            self.actions.push_back(Action::ToShard { to: from, message: ShardMessage::Routed(count) });
        }
    }

    /// The output whose batches are on disk and whose counts are now all
    /// confirmed goes out.
    fn release_settled(&mut self) {
        let Some(shards) = self.shards.as_mut() else { return };
        let releasable = shards.durability.releasable();
        self.release_durable(releasable);
        self.record_settled_releases();
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces the access policy (a configuration reload) and applies it
    /// at once to everyone already here, as Mosquitto's
    /// `mosquitto_security_apply` does:
    /// - a connected client for which `keep` answers false is disconnected
    ///   (its will, if the new policy lets it write there, is published);
    /// - every subscription of every session, connected or not, is judged
    ///   again: those the new policy does not let read whole have their
    ///   messages checked one by one from now on, the others go back to
    ///   the unchecked path. None is removed, so read access granted back
    ///   later resumes delivery, as in Mosquitto.
    ///
    /// Clients whose credentials are being checked keep the answer of the
    /// check already under way.
    pub fn replace_policy(&mut self, now: Now, policy: Box<dyn AccessPolicy>, keep: &dyn Fn(ClientInfo<'_>) -> bool) {
        self.policy = Box::new(TrustBridges(policy));
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(conn) = self.conns.get(&id) else { continue };
            let ConnState::Active { session, .. } = conn.state else { continue };
            if conn.certified {
                // Its user name is its certificate's, not a password's.
                continue;
            }
            let Some(session) = self.sessions.get(session) else { continue };
            let info =
                ClientInfo { client_id: &session.client_id, username: session.username(), listener: conn.listener };
            if !keep(info) {
                self.close(now, id, CloseReason::NotAuthorised);
            }
        }
        for key in self.sessions.keys() {
            let Some(session) = self.sessions.get(key) else { continue };
            let info = ClientInfo {
                client_id: &session.client_id,
                username: session.username(),
                listener: session.owner_listener,
            };
            for (filter, &qos) in &session.subscriptions {
                let checked = self.policy.filter_access(info, filter) != FilterAccess::Whole;
                self.subscriptions.subscribe(filter, key, Grant { qos, checked });
            }
        }
    }

    /// Registers a new network connection from `peer` and returns its id.
    /// Past its listener's or the broker's connection limit the connection
    /// is closed at once ([`Action::Close`] with
    /// [`CloseReason::TooManyConnections`]).
    pub fn accept(&mut self, now: Now, peer: Peer) -> ConnId {
        let id = self.new_conn_id();
        self.accept_as(now, id, peer);
        id
    }

    /// An id never handed out before, for a connection accepted next.
    pub fn new_conn_id(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn = self.next_conn.saturating_add(1);
        id
    }

    /// Like [`accept`](Self::accept), under an id the runtime chose: a
    /// runtime that names its connections itself can send a connection's
    /// first bytes right behind its accept, without waiting for an id. The
    /// id must never have been used, by either method.
    pub fn accept_as(&mut self, now: Now, id: ConnId, peer: Peer) {
        if !id.is_bridge() {
            self.next_conn = self.next_conn.max(id.0.saturating_add(1));
        }
        self.sys.start(now.instant, self.config.sys_interval);
        self.counts.sockets_accepted += 1;
        if !self.occupancy.try_connect(peer.listener, &self.config) {
            // Mosquitto's words for both limits.
            info!("Client connection from {} denied: max_connections exceeded.", show_addr(peer.remote.as_ref()));
            self.actions.push_back(Action::Close { conn: id, reason: CloseReason::TooManyConnections });
            return;
        }
        let mut conn = Connection {
            listener: peer.listener,
            certified: matches!(peer.identity, Identity::Certificate(_)),
            opening: Some(Box::new(Opening { peer, opened_at: now.instant })),
            state: ConnState::AwaitingConnect,
            buffers: None,
            dirty: false,
            busy: false,
            last_packet: now.instant,
            keep_alive: 0,
            armed: None,
            congestion: None,
            waiting: None,
        };
        let deadline = now.instant + self.config.connect_timeout;
        self.deadlines.arm(id, deadline, &mut conn.armed);
        self.conns.insert(id, Box::new(conn));
    }

    /// Counts this broker's connections and sessions in `occupancy`, with
    /// those of the other shards that share it, so that `max_connections`,
    /// `global_max_connections` and `global_max_clients` hold for all of
    /// them together. Called before the broker has a connection or a
    /// session.
    pub fn share_occupancy(&mut self, occupancy: Arc<Occupancy>) {
        debug_assert!(self.conns.is_empty() && self.sessions.len() == 0, "occupancy shared too late");
        self.occupancy = occupancy;
    }

    /// What the connection and client limits count (see
    /// [`share_occupancy`](Self::share_occupancy)).
    pub fn occupancy(&self) -> &Occupancy {
        &self.occupancy
    }

    /// Gives the broker what `memory_limit` is compared with.
    pub fn set_memory_gauge(&mut self, gauge: Arc<dyn MemoryGauge>) {
        self.memory = Some(gauge);
    }

    /// Whether the process holds more heap than `memory_limit` allows.
    fn out_of_memory(&self) -> bool {
        match (self.config.memory_limit, &self.memory) {
            (Some(limit), Some(gauge)) => gauge.in_use() > limit,
            _ => false,
        }
    }

    /// Feeds one network event in.
    pub fn handle_input(&mut self, now: Now, input: Input<'_>) {
        match input {
            Input::Received { conn, data } => self.handle_received(now, conn, data),
            Input::Closed { conn } => self.close(now, conn, CloseReason::ConnectionLost),
            Input::NotReading { conn } => self.close(now, conn, CloseReason::NotReading),
            Input::Authenticated { conn, result } => self.handle_authenticated(now, conn, result),
            Input::Writer { conn, progress } => self.handle_writer(now, conn, progress),
            Input::Stored { seq } => self.handle_stored(seq),
            Input::Publish { topic, payload, qos, retain } => self.publish_own(now, topic, payload, qos, retain),
        }
    }

    /// With `presence_topics`: publishes `client`'s connection state,
    /// retained (see [`sys::presence_state`]).
    pub(crate) fn publish_presence(&mut self, now: Now, client: &ClientId, online: bool) {
        if !self.config.presence_topics {
            return;
        }
        match sys::presence_state(client, online, now.unix, self.config.message_expiry) {
            Some(state) => self.route(now, Arc::new(state), None),
            None => debug!("Client {client}: its id makes no topic name, no state topic for it."),
        }
    }

    /// Routes a message the broker publishes itself ([`Input::Publish`]).
    fn publish_own(&mut self, now: Now, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        match TopicName::new(topic) {
            Ok(topic) => {
                let message = Message::without_expiry(topic, Bytes::copy_from_slice(payload), qos, retain);
                self.route(now, Arc::new(message), None);
            }
            Err(_) => debug!(topic, "the broker's own message has an invalid topic name, dropped"),
        }
    }

    /// Acts on every deadline up to `now` (CONNECT timeout, keepalive,
    /// `$SYS` statistics). Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Now) {
        self.publish_sys(now);
        self.expire_sessions(now);
        self.moves_due(now);
        while let Some((at, id)) = self.deadlines.pop_due(now.instant) {
            let Some(conn) = self.conns.get_mut(&id) else { continue };
            if conn.armed != Some(at) {
                continue; // superseded by an earlier entry
            }
            conn.armed = None;
            conn.keepalive_checked();
            match conn.deadline(&self.config) {
                Some((due, Due::Close(reason))) if due <= now.instant => self.close(now, id, reason),
                Some((due, Due::StopHolding)) if due <= now.instant => {
                    self.stop_holding(now, id);
                    self.arm(id);
                }
                Some((due, _)) => self.deadlines.arm(id, due, &mut conn.armed),
                None => {}
            }
        }
    }

    /// Arms `id`'s entry in the deadlines for its earliest deadline (an
    /// earlier one already armed stays: it recomputes when it fires).
    fn arm(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if let Some((due, _)) = conn.deadline(&self.config) {
            self.deadlines.arm(id, due, &mut conn.armed);
        }
    }

    /// Closes every connection, as on server shutdown: wills are published
    /// and every client is marked offline.
    pub fn shutdown(&mut self, now: Now) {
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.close(now, id, CloseReason::Shutdown);
        }
    }

    /// The other nodes counted this node gone, published its clients'
    /// wills and swept their presence ([`ShardMessage::CountedGone`]):
    /// every connection closes without its will, so that no client stays
    /// connected here while the cluster holds it gone; each connects again
    /// and claims its session wherever it lands. The sessions whose
    /// clients connected elsewhere meanwhile are fenced off (see
    /// `ownership`).
    fn counted_gone(&mut self, now: Now) {
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        if !ids.is_empty() {
            ids.sort_unstable();
            warn!("This node was counted gone by the others; closing its {} client connections.", ids.len());
            for id in ids {
                self.close(now, id, CloseReason::CountedGone);
            }
        }
        // Their clients may have connected elsewhere meanwhile.
        self.check_ownership();
    }

    /// The next action, or `None` once everything is drained.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        self.flush_all();
        if let Some(batch) = self.journal.as_mut().and_then(Journal::take_batch) {
            if let Some(shards) = self.shards.as_mut() {
                shards.durability.batch_taken(batch.seq);
            }
            self.actions.push_back(Action::Store { batch });
        }
        self.confirm_stored();
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    /// It may be early (a deadline pushed back by activity); never late.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.deadlines.next(), self.sys.next(), self.expiry_check, self.claims.next_due()].into_iter().flatten().min()
    }

    /// Removes the offline persistent sessions not seen for
    /// `persistent_client_expiration`, checked once a minute as Mosquitto
    /// does.
    fn expire_sessions(&mut self, now: Now) {
        let (Some(limit), Some(due)) = (self.config.persistent_client_expiration, self.expiry_check) else { return };
        if now.instant < due {
            return;
        }
        self.expiry_check = Some(now.instant + SESSION_EXPIRY_CHECK);
        let now_secs = persist::seconds(now);
        for key in self.sessions.keys() {
            let Some(session) = self.sessions.get(key) else { continue };
            let expired =
                session.offline_since().is_some_and(|since| now_secs.saturating_sub(since) >= limit.as_secs());
            if expired {
                info!("Expiring client {} due to timeout.", session.client_id);
                self.discard_session(key);
                self.counts.sessions_expired += 1;
            }
        }
    }

    /// Publishes the `$SYS` figures that changed, if they are due.
    fn publish_sys(&mut self, now: Now) {
        if !self.sys.is_due(now.instant) {
            return;
        }
        let stats = self.totals();
        if self.shards.as_ref().is_some_and(|s| s.me() != ShardId(0)) {
            // Shard 0 publishes for all: this shard's figures go there.
            drop(self.sys.due(now.instant, self.config.sys_interval, &stats));
            self.actions.push_back(Action::ToShard { to: ShardId(0), message: ShardMessage::Stats(Box::new(stats)) });
            return;
        }
        for (topic, value) in self.sys.due(now.instant, self.config.sys_interval, &stats) {
            let Ok(topic) = TopicName::new(topic) else { continue };
            let figure = Message::without_expiry(topic, Bytes::from(value), QoS::AtMostOnce, true);
            self.route(now, Arc::new(figure), None);
        }
    }

    /// The policy in force: who may connect, read and write.
    pub fn policy(&self) -> &dyn AccessPolicy {
        self.policy.as_ref()
    }

    /// Every retained message the broker holds, by topic.
    pub fn retained_messages(&self) -> Vec<(TopicName, Arc<Message>)> {
        self.retained.all()
    }

    /// The session of `client_id`, if the broker holds one.
    pub fn session(&self, client_id: &str) -> Option<SessionInfo> {
        let session = self.sessions.get(self.sessions.find(&ClientId::new(client_id))?)?;
        Some(SessionInfo {
            conn: session.conn(),
            clean: session.clean,
            inflight: session.inflight_len(),
            queued: session.queued_len(),
            subscriptions: session.subscriptions.iter().map(|(f, q)| (f.as_str().to_owned(), *q)).collect(),
        })
    }

    /// Copies waiting in the session of `client_id` (0 without one): what
    /// a lazy bridge counts before it connects.
    pub fn queued_len(&self, client_id: &ClientId) -> usize {
        self.sessions.find(client_id).and_then(|key| self.sessions.get(key)).map_or(0, Session::queued_len)
    }

    /// Copies dropped so far for the session of `client_id` (its queue
    /// was full), since it was made or restored.
    pub fn dropped_for(&self, client_id: &ClientId) -> u64 {
        self.sessions.find(client_id).and_then(|key| self.sessions.get(key)).map_or(0, Session::dropped)
    }

    /// The client id bound to `conn`, once its CONNECT is accepted.
    pub fn client_of(&self, conn: ConnId) -> Option<&ClientId> {
        match self.conns.get(&conn)?.state {
            ConnState::Active { session, .. } => self.sessions.get(session).map(|s| &s.client_id),
            ConnState::AwaitingConnect | ConnState::Authenticating(_) => None,
        }
    }

    /// Bytes buffered for `conn`'s next frame (bounded by the packet cap).
    pub fn buffered_len(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.inbuf_len())
    }

    /// The clients connected now, in no particular order; the bridges'
    /// local sides are not clients.
    pub fn connected_clients(&self) -> impl Iterator<Item = ConnectedClient<'_>> {
        self.conns.iter().filter(|(id, _)| !id.is_bridge()).filter_map(|(&conn, c)| {
            let ConnState::Active { session, protocol, .. } = c.state else { return None };
            let session = self.sessions.get(session)?;
            Some(ConnectedClient {
                conn,
                client_id: &session.client_id,
                username: session.owner.as_deref(),
                listener: c.listener,
                protocol,
                keep_alive: c.keep_alive,
                subscriptions: session.subscriptions.len(),
                queued: session.queued_len(),
            })
        })
    }

    /// Disconnects the client `client_id` as a dropped connection would
    /// be: its will is published ([`CloseReason::Kicked`]). Says whether
    /// it was connected.
    pub fn kick(&mut self, now: Now, client_id: &str) -> bool {
        let key = self.sessions.find(&ClientId::new(client_id));
        let Some(conn) = key.and_then(|key| self.sessions.get(key)).and_then(Session::conn) else { return false };
        if conn.is_bridge() {
            return false;
        }
        self.close(now, conn, CloseReason::Kicked);
        true
    }

    // ---- input ----------------------------------------------------------

    fn handle_received(&mut self, now: Now, id: ConnId, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            trace!(conn = %id, len = data.len(), "bytes for a closed connection ignored");
            return;
        };
        conn.buffers().inbuf.extend_from_slice(data);
        self.counts.bytes_received += data.len() as u64;
        // Each packet may close the connection; look it up again every time.
        while let Some(conn) = self.conns.get_mut(&id) {
            if let ConnState::Authenticating(_) = conn.state {
                // Nothing after CONNECT is processed before it is accepted
                // ([MQTT-3.1.4-5]); the wait is short, the buffer bounded.
                if conn.inbuf_len() > self.max_packet_size {
                    let (len, max) = (conn.inbuf_len(), self.max_packet_size);
                    self.close(now, id, CloseReason::TooLarge { len, max });
                }
                break;
            }
            let protocol = conn.protocol();
            match codec::decode(&mut conn.buffers().inbuf, self.max_packet_size, protocol) {
                Ok(None) => {
                    conn.input_decoded();
                    break;
                }
                Ok(Some(packet)) => {
                    self.counts.packets_received += 1;
                    conn.last_packet = now.instant;
                    conn.busy |= matches!(packet, Packet::Publish(_));
                    let promised = self.promises();
                    self.handle_packet(now, id, packet);
                    // What answers a packet that changed durable state
                    // waits until the change is on disk.
                    if self.promises() > promised {
                        self.hold_output(id);
                    }
                }
                Err(DecodeError::Malformed(violation)) => {
                    if let Some(code) = violation.connack_code()
                        && matches!(conn.state, ConnState::AwaitingConnect)
                    {
                        write_packet(conn, &mut self.dirty, id, &connack(false, code));
                    }
                    self.close(now, id, CloseReason::Violation(violation));
                }
                Err(DecodeError::TooLarge { len, max }) => self.close(now, id, CloseReason::TooLarge { len, max }),
            }
        }
    }

    fn handle_packet(&mut self, now: Now, id: ConnId, packet: Packet) {
        let Some(conn) = self.conns.get(&id) else { return };
        let key = match (&conn.state, &packet) {
            (ConnState::AwaitingConnect, Packet::Connect(_)) => {
                self.counts.connects += 1;
                if let Packet::Connect(connect) = packet {
                    self.handle_connect(now, id, *connect);
                }
                return;
            }
            (ConnState::AwaitingConnect, _) => return self.close(now, id, Violation::ConnectNotFirst.into()),
            // Not decoded while authenticating (see `handle_received`).
            (ConnState::Authenticating(_), _) => return,
            (ConnState::Active { session, .. }, _) => *session,
        };
        trace!(conn = %id, packet = packet.name(), "received");
        match packet {
            Packet::Connect(_) => self.close(now, id, Violation::SecondConnect.into()),
            Packet::Publish(publish) => self.handle_publish(now, id, key, publish),
            Packet::PubAck(pid) => self.handle_ack(now, id, key, pid, Ack::PubAck),
            Packet::PubRec(pid) => self.handle_ack(now, id, key, pid, Ack::PubRec),
            Packet::PubComp(pid) => self.handle_ack(now, id, key, pid, Ack::PubComp),
            Packet::PubRel(pid) => {
                let released = self.session_mut(key).and_then(|s| s.release(pid));
                // Judged before routing, which may store the body for copies.
                let recorded = released.as_ref().is_some_and(|m| self.incoming_recorded(key, m.as_ref()));
                if let Some(message) = released.clone().flatten() {
                    self.route_released(now, message, Some(id));
                }
                if let Some(message) = released.filter(|_| recorded) {
                    self.record_released(key, pid, message.as_ref());
                }
                // Also for an unknown id: the client may be retrying after
                // the PUBCOMP was lost.
                self.write(id, &Packet::PubComp(pid));
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(now, id, key, subscribe),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(id, key, unsubscribe),
            Packet::PingReq => self.write(id, &Packet::PingResp),
            Packet::Disconnect => self.close(now, id, CloseReason::Disconnected),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.close(now, id, Violation::ServerOnlyPacket.into())
            }
        }
    }

    /// A client's PUBACK, PUBREC or PUBCOMP for a message sent to it.
    /// Implements [MQTT-4.3.2-1], [MQTT-4.3.3-1] and, for an ack of the
    /// wrong kind, [MQTT-4.8.0-1].
    fn handle_ack(&mut self, now: Now, id: ConnId, key: SessionKey, pid: PacketId, ack: Ack) {
        let Some(session) = self.session_mut(key) else { return };
        // The copy as the store knows it, before the ack moves it on.
        let stored = session.inflight().find(|f| f.id == pid && f.out.seq != 0).map(|f| f.out.clone());
        match session.acknowledge(pid, ack) {
            Ok(AckOutcome::Completed) => {
                if let Some(out) = stored {
                    self.record_drop_copy(key, &out);
                }
                self.pump(now, key);
                self.acknowledged(now, key, id);
            }
            Ok(AckOutcome::Release) => {
                if let Some(out) = stored {
                    self.record_copy(key, &out, CopyState::Released(pid), false, false);
                }
                self.write(id, &Packet::PubRel(pid));
                self.acknowledged(now, key, id);
            }
            Ok(AckOutcome::Unknown) => {
                debug!(conn = %id, "Received {ack} from {} for an unknown packet identifier {pid}.", session.client_id)
            }
            Err(violation) => self.close(now, id, violation.into()),
        }
    }

    // ---- CONNECT ----------------------------------------------------------

    /// Implements [MQTT-3.1.3-6], [MQTT-3.1.3-8], [MQTT-3.1.4-2],
    /// [MQTT-3.1.4-3], [MQTT-3.1.4-4], [MQTT-3.2.2-1] to [MQTT-3.2.2-5].
    fn handle_connect(&mut self, now: Now, id: ConnId, mut connect: Connect) {
        let listener = self.conns.get(&id).map(|c| c.listener).unwrap_or_default();
        let rules = self.config.listener_rules(listener);
        if !rules.accepts(connect.protocol) {
            return self.refuse(now, id, &connect.client_id, ConnectReturnCode::UnacceptableProtocolVersion);
        }
        let max_qos = rules.max_qos;
        if let Some(will) = connect.will.as_ref().filter(|w| w.qos > max_qos) {
            // As Mosquitto; 3.1.1 has no CONNACK code for it (MQTT-3.2.2-6).
            info!(
                "Client {} refused: will QoS {} above max_qos {} of its listener.",
                connect.client_id,
                will.qos.bits(),
                max_qos.bits()
            );
            return self.close(now, id, CloseReason::QosNotSupported);
        }
        let mut client_id = match self.client_id_for(&connect, listener) {
            Ok(client_id) => client_id,
            Err(code) => {
                // Not authorised: outside `clientid_prefixes`.
                self.counts.auth_not_authorised += u64::from(code == ConnectReturnCode::NotAuthorized);
                return self.refuse(now, id, &connect.client_id, code);
            }
        };
        if connect.keep_alive > self.config.max_keepalive {
            return self.refuse(now, id, &connect.client_id, ConnectReturnCode::IdentifierRejected);
        }
        if !self.config.retain_available && connect.will.as_ref().is_some_and(|w| w.retain) {
            // As Mosquitto: closed without CONNACK, 3.1.1 having no code for it.
            return self.close(now, id, CloseReason::RetainNotAvailable);
        }
        if connect.will.as_ref().is_some_and(|w| w.payload.len() > self.config.payload_limit()) {
            // As Mosquitto: a will that could never be published is refused.
            return self.refuse(now, id, &connect.client_id, ConnectReturnCode::NotAuthorized);
        }
        if let Err(code) = self.mount_will(listener, &mut connect) {
            return self.refuse(now, id, &connect.client_id, code);
        }
        let identity = self.conns.get(&id).and_then(|c| c.opening.as_ref()).map(|o| &o.peer.identity);
        let certified = matches!(identity, Some(Identity::Certificate(_)));
        if let Some(Identity::Certificate(name)) = identity {
            let Some(name) = name.clone() else {
                self.counts.auth_bad_credentials += 1;
                return self.refuse(now, id, client_id.as_str(), ConnectReturnCode::BadUserNameOrPassword);
            };
            // As Mosquitto 2 (`handle_connect.c`): CONNECT's user name and
            // password are dropped and the password file is not consulted.
            connect.username = Some(name);
            connect.password = None;
        }
        if self.config.listener_rules(listener).use_username_as_clientid {
            match &connect.username {
                Some(username) => client_id = ClientId::new(username.clone()),
                None => {
                    self.counts.auth_not_authorised += 1;
                    return self.refuse(now, id, client_id.as_str(), ConnectReturnCode::NotAuthorized);
                }
            }
        }
        if certified {
            // The ACL then applies to the certificate's name.
            return self.admit_connect(now, id, connect, client_id);
        }
        // Anonymous clients too: `allow_anonymous` is the policy's, as it
        // may differ per listener.
        let info = ClientInfo { client_id: &client_id, username: connect.username.as_deref(), listener };
        match self.policy.authenticate(info, connect.password.as_ref()) {
            AuthDecision::Allow => self.admit_connect(now, id, connect, client_id),
            AuthDecision::Refuse(refusal) => {
                match refusal {
                    Refusal::BadUserNameOrPassword => self.counts.auth_bad_credentials += 1,
                    Refusal::NotAuthorized => self.counts.auth_not_authorised += 1,
                }
                self.refuse(now, id, client_id.as_str(), refusal.into());
            }
            AuthDecision::Defer => {
                let Some(conn) = self.conns.get_mut(&id) else { return };
                self.actions.push_back(Action::Authenticate {
                    conn: id,
                    client: client_id.clone(),
                    username: connect.username.clone(),
                    password: connect.password.clone().map(Password::new),
                    listener,
                });
                conn.state = ConnState::Authenticating(Box::new(Pending { connect, client_id }));
            }
        }
    }

    /// Puts the will topic of `connect` below the mount point of
    /// `listener`, as Mosquitto does; a will whose mounted topic would be
    /// too long is refused as one too large is.
    fn mount_will(&self, listener: ListenerId, connect: &mut Connect) -> Result<(), ConnectReturnCode> {
        let (Some(mount), Some(will)) = (&self.config.listener_rules(listener).mount_point, connect.will.as_mut())
        else {
            return Ok(());
        };
        will.topic = mount::topic(mount, &will.topic).ok_or(ConnectReturnCode::NotAuthorized)?;
        Ok(())
    }

    /// The runtime's answer to [`Action::Authenticate`]; then whatever the
    /// client sent after CONNECT is processed.
    fn handle_authenticated(&mut self, now: Now, id: ConnId, result: Result<(), Refusal>) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let ConnState::Authenticating(_) = conn.state else {
            debug_assert!(false, "answer for a connection that was not waiting");
            tracing::error!(conn = %id, "authentication answer for a connection that was not waiting, ignored");
            return;
        };
        let ConnState::Authenticating(pending) = std::mem::replace(&mut conn.state, ConnState::AwaitingConnect) else {
            return;
        };
        let Pending { connect, client_id } = *pending;
        match result {
            Ok(()) => {
                self.admit_connect(now, id, connect, client_id);
                self.handle_received(now, id, &[]);
            }
            Err(refusal) => {
                // The runtime checked the password: it did not match.
                self.counts.auth_bad_credentials += 1;
                self.refuse(now, id, client_id.as_str(), refusal.into());
            }
        }
    }

    /// Binds an authenticated CONNECT to its session and answers CONNACK 0.
    fn accept_connect(&mut self, now: Now, id: ConnId, connect: Connect, client_id: ClientId) {
        let known = self.sessions.find(&client_id).is_some();
        if !known && !self.occupancy.try_add_session(self.config.max_clients) {
            // As Mosquitto 2.1: closed without CONNACK, 3.1.1 having no code for it.
            info!("Client {client_id} refused: global_max_clients reached.");
            return self.close(now, id, CloseReason::TooManyClients);
        }
        // Takeover: the old connection goes first, so its MarkOffline (and
        // its will) come before this connection's MarkOnline.
        if let Some(old) = self.sessions.find(&client_id).and_then(|key| self.sessions.get(key)?.conn()) {
            info!("Client {client_id} already connected, closing old connection.");
            self.close(now, old, CloseReason::TakenOver);
        }
        let existing = self.sessions.find(&client_id);
        let (key, session_present) = match existing {
            Some(key) if !connect.clean_session => (key, true),
            Some(key) => {
                self.discard_session(key);
                self.occupancy.keep_session();
                (self.sessions.insert(Session::new(client_id.clone(), true)), false)
            }
            None => {
                // Its place was taken above, unless it replaces a clean
                // session the takeover just discarded.
                if known {
                    self.occupancy.keep_session();
                }
                (self.sessions.insert(Session::new(client_id.clone(), connect.clean_session)), false)
            }
        };
        self.gauges.sessions_max = self.gauges.sessions_max.max(self.sessions.len());
        let listener = self.conns.get(&id).map(|c| c.listener).unwrap_or_default();
        if let Some(session) = self.sessions.get_mut(key) {
            session.clean = connect.clean_session;
            session.bridge = connect.bridge;
            session.presence = Presence::Online(id);
            // A copy: a slice would keep the whole CONNECT packet alive.
            session.owner = connect.username.as_deref().map(Arc::from);
            session.owner_listener = listener;
        }
        if !connect.clean_session {
            // The CONNACK that creates or resumes a stored session waits
            // for it to be on disk.
            self.record_session(key);
            self.hold_output(id);
        }
        let info = ClientInfo { client_id: &client_id, username: connect.username.as_deref(), listener };
        if let Some(will) = connect.will.as_ref().filter(|w| self.policy.may_publish(info, &w.topic)) {
            self.record_will(&client_id, Some(will));
        }
        let Some(conn) = self.conns.get_mut(&id) else { return };
        conn.state = ConnState::Active { session: key, protocol: connect.protocol, will: connect.will.map(Box::new) };
        self.gauges.connected();
        conn.keep_alive = connect.keep_alive;
        if let Some((due, _)) = conn.deadline(&self.config) {
            self.deadlines.arm(id, due, &mut conn.armed);
        }
        // A bridge of this broker logs its own lines.
        if self.config.connection_messages && listener != ListenerId::BRIDGES {
            info!(
                "New {} connected from {} as {} (p{}, c{}, k{}{}).",
                if connect.bridge { "bridge" } else { "client" },
                show_addr(conn.opening.as_ref().and_then(|o| o.peer.remote.as_ref())),
                client_id,
                if connect.protocol == Protocol::V31 { 1 } else { 2 },
                u8::from(connect.clean_session),
                connect.keep_alive,
                connect.username.as_ref().map(|u| format!(", u'{u}'")).unwrap_or_default(),
            );
        }

        conn.opening = None;
        self.actions.push_back(Action::MarkOnline { client: client_id, conn: id });
        // Session Present is a 3.1.1 field; 3.1 has the byte reserved.
        let present = session_present && connect.protocol == Protocol::V311;
        self.write(id, &connack(present, ConnectReturnCode::Accepted));
        self.resume(now, key, id);
    }

    /// The QoS a copy of `message` goes out at to a subscription granted
    /// `grant`: the lower of the two ([MQTT-3.8.4-6]), or the
    /// subscription's with `upgrade_outgoing_qos`.
    fn delivery_qos(&self, message: &Message, grant: Grant) -> QoS {
        match self.config.upgrade_outgoing_qos {
            true => grant.qos,
            false => message.qos.min(grant.qos),
        }
    }

    /// The client id to use, or the CONNACK code refusing it. As in
    /// Mosquitto, `clientid_prefixes` applies to assigned ids too.
    fn client_id_for(&mut self, connect: &Connect, listener: ListenerId) -> Result<ClientId, ConnectReturnCode> {
        let client_id = self.given_or_assigned_id(connect, listener)?;
        match &self.config.clientid_prefixes {
            Some(prefix) if !client_id.as_str().starts_with(prefix.as_str()) => Err(ConnectReturnCode::NotAuthorized),
            _ => Ok(client_id),
        }
    }

    fn given_or_assigned_id(&mut self, connect: &Connect, listener: ListenerId) -> Result<ClientId, ConnectReturnCode> {
        let given = &connect.client_id;
        if given.is_empty() {
            let (allow_zero_length, prefix) = self.config.client_ids(listener);
            let allowed = connect.protocol == Protocol::V311 && connect.clean_session && allow_zero_length;
            if !allowed {
                return Err(ConnectReturnCode::IdentifierRejected);
            }
            let prefix = prefix.to_owned();
            return Ok(self.assign_client_id(&prefix));
        }
        if connect.protocol == Protocol::V31 && given.chars().count() > MQTT31_MAX_CLIENT_ID {
            return Err(ConnectReturnCode::IdentifierRejected);
        }
        Ok(ClientId::new(given.clone()))
    }

    /// A new id, unused here; with shards, one whose home is this shard,
    /// so that a later CONNECT with the same id comes here and meets it.
    fn assign_client_id(&mut self, prefix: &str) -> ClientId {
        let home = self.shards.as_ref().map(|shards| (shards.me(), shards.count()));
        loop {
            let candidate = ClientId::new(self.ids.next_id(prefix));
            let at_home = home.is_none_or(|(me, count)| home_shard(candidate.as_str(), count) == me);
            if at_home && self.sessions.find(&candidate).is_none() {
                return candidate;
            }
        }
    }

    /// Answers CONNECT with a non-zero code and closes ([MQTT-3.2.2-4],
    /// [MQTT-3.2.2-5], [MQTT-3.1.4-5]).
    fn refuse(&mut self, now: Now, id: ConnId, client_id: &str, code: ConnectReturnCode) {
        info!("Client {client_id} refused: CONNACK {code}.");
        self.write(id, &connack(false, code));
        self.close(now, id, CloseReason::Refused(code));
    }

    /// Resends what the session had in flight, then what it queued.
    /// Implements [MQTT-4.4.0-1] and [MQTT-3.3.1-1].
    fn resume(&mut self, now: Now, key: SessionKey, id: ConnId) {
        let (Some(session), Some(conn)) = (self.sessions.get_mut(key), self.conns.get_mut(&id)) else {
            return;
        };
        let mount = self.config.listener_rules(conn.listener).mount_point.as_deref();
        let mut expired = Vec::new();
        let mut hidden = Vec::new();
        for flight in session.inflight() {
            match flight.stage {
                Stage::Unacknowledged | Stage::Unreceived => {
                    let out = &flight.out;
                    if out.message.is_expired(now.unix) {
                        expired.push(flight.id);
                        continue;
                    }
                    match mount::seen(mount, &out.message.topic) {
                        Seen::AsIs => write_publish(conn, &mut self.dirty, id, out, None, true, Some(flight.id)),
                        Seen::Unmounted(topic) => {
                            write_publish(conn, &mut self.dirty, id, out, Some(&topic), true, Some(flight.id));
                        }
                        // Sent on another listener: this one cannot show it.
                        Seen::Hidden => hidden.push(flight.id),
                    }
                }
                Stage::Released => write_packet(conn, &mut self.dirty, id, &Packet::PubRel(flight.id)),
            }
        }
        for pid in expired.iter().chain(&hidden) {
            let Some(session) = self.sessions.get_mut(key) else { return };
            let Some(out) = session.inflight().find(|f| f.id == *pid).map(|f| f.out.clone()) else {
                continue;
            };
            session.forget(*pid);
            if expired.contains(pid) {
                log_expired(&out.message, now);
                self.counts.dropped.expired += 1;
                let client = session.client_id.clone();
                self.actions.push_back(Action::DropExpired { client, message: out.message.clone() });
            }
            self.record_drop_copy(key, &out);
        }
        self.pump(now, key);
    }

    // ---- PUBLISH from a client ------------------------------------------

    /// Implements [MQTT-3.3.4-1], [MQTT-3.3.5-2], [MQTT-4.3.2-2],
    /// [MQTT-4.3.3-2].
    fn handle_publish(&mut self, now: Now, id: ConnId, key: SessionKey, publish: Publish) {
        self.counts.publish_in(publish.qos, publish.payload.len());
        if self.out_of_memory() {
            // As Mosquitto: the message is dropped before it is
            // acknowledged, and its client disconnected.
            self.counts.dropped.out_of_memory += 1;
            return self.close(now, id, CloseReason::OutOfMemory);
        }
        let Publish { qos, retain, topic, packet_id, payload, dup } = publish;
        if retain && !self.config.retain_available {
            return self.close(now, id, CloseReason::RetainNotAvailable);
        }
        if qos > self.listener_rules(id).max_qos {
            // As Mosquitto (and MQTT 5's 0x9B); 3.1.1 has no way to refuse it.
            let client = self.sessions.get(key).map(|s| s.client_id.to_string()).unwrap_or_default();
            info!("Too high QoS in PUBLISH from {client}, disconnecting.");
            return self.close(now, id, CloseReason::QosNotSupported);
        }
        let message = match self.admit(id, key, qos, retain, topic, payload, dup) {
            Ok(message) => Some(Arc::new(message)),
            Err(Refused::TooLarge) => {
                self.counts.dropped.too_large += 1;
                None
            }
            Err(Refused::Denied) => {
                self.counts.acl_denied_publish += 1;
                None
            }
            Err(Refused::Unroutable) => None,
        };
        let pid = match (qos, packet_id) {
            (QoS::AtMostOnce, _) => {
                if let Some(message) = message {
                    self.route(now, message, Some(id));
                }
                return;
            }
            (_, Some(pid)) => pid,
            // The codec gives QoS 1/2 a packet id; nothing to answer without.
            (_, None) => return self.close(now, id, Violation::ZeroPacketId.into()),
        };
        if qos == QoS::AtLeastOnce {
            if let Some(message) = message {
                self.route(now, message, Some(id));
            }
            return self.write(id, &Packet::PubAck(pid));
        }
        let Some(session) = self.sessions.get_mut(key) else { return };
        // PUBREC promises delivery: the message is kept until its PUBREL,
        // however many the client leaves unreleased (at most one per
        // packet id). A client that releases nothing is worth a word.
        if session.incoming_len() == self.limits.max_queued.max(self.limits.window) {
            warn!(conn = %id, "Client {} has many QoS 2 messages awaiting PUBREL.", session.client_id);
        }
        if session.receive_qos2(pid, message.clone()) {
            self.record_incoming(key, pid, message.as_ref());
        }
        self.write(id, &Packet::PubRec(pid));
    }

    /// The message to route for an incoming PUBLISH, or why it is
    /// dropped.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        id: ConnId,
        key: SessionKey,
        qos: QoS,
        retain: bool,
        topic: TopicName,
        payload: Bytes,
        dup: bool,
    ) -> Result<Message, Refused> {
        let Some(info) = self.identity(id, key) else { return Err(Refused::Unroutable) };
        let client_id = info.client_id;
        let topic = match &self.listener_rules(id).mount_point {
            None => topic,
            Some(mount) => {
                let Some(mounted) = mount::topic(mount, &topic) else {
                    debug!(conn = %id, "Dropped PUBLISH from {client_id}: '{mount}{}' is too long", topic.as_str());
                    return Err(Refused::Unroutable);
                };
                mounted
            }
        };
        debug!(
            conn = %id,
            "Received PUBLISH from {client_id} (d{}, q{}, r{}, '{}', ... ({} bytes))",
            u8::from(dup), qos.bits(), u8::from(retain), topic.as_str(), payload.len()
        );
        if payload.len() > self.config.payload_limit() {
            info!(
                "Dropped too large PUBLISH from {client_id} (q{}, r{}, '{}', ... ({} bytes))",
                qos.bits(),
                u8::from(retain),
                topic.as_str(),
                payload.len()
            );
            return Err(Refused::TooLarge);
        }
        if !self.policy.may_publish(info, &topic) {
            debug!(conn = %id, "Denied PUBLISH from {client_id} (q{}, r{}, '{}')", qos.bits(), u8::from(retain), topic.as_str());
            return Err(Refused::Denied);
        }
        let message = if self.config.message_expiry {
            Message::new(topic, payload, qos, retain)
        } else {
            Message::without_expiry(topic, payload, qos, retain)
        };
        Ok(message.published_by(|| info.publisher()))
    }

    /// The listener rules of connection `id`.
    fn listener_rules(&self, id: ConnId) -> &ListenerRules {
        self.config.listener_rules(self.conns.get(&id).map(|c| c.listener).unwrap_or_default())
    }

    /// The mount point of connection `id`'s listener.
    fn mount_point(&self, id: ConnId) -> Option<&str> {
        self.listener_rules(id).mount_point.as_deref()
    }

    fn identity(&self, id: ConnId, key: SessionKey) -> Option<ClientInfo<'_>> {
        let conn = self.conns.get(&id)?;
        let session = self.sessions.get(key)?;
        Some(ClientInfo { client_id: &session.client_id, username: session.username(), listener: conn.listener })
    }

    // ---- routing --------------------------------------------------------

    /// Hands `message`, published by the client of `from` (if a client
    /// did), to every matching session at the highest QoS of its matching
    /// subscriptions. Implements [MQTT-3.3.1-5] to [MQTT-3.3.1-12]
    /// (retained store), [MQTT-3.3.5-1], [MQTT-4.5.0-1], [MQTT-4.7.2-1].
    fn route(&mut self, now: Now, message: Arc<Message>, from: Option<ConnId>) {
        self.route_stored(now, message, from, None);
    }

    /// Routes an incoming QoS 2 message the store holds until the shards
    /// it goes to have their copies on disk (see
    /// [`record_released`](Self::record_released)): their copies refer to
    /// its stored body.
    pub(super) fn route_released(&mut self, now: Now, message: Arc<Message>, from: Option<ConnId>) {
        let stored = match (self.shards.as_ref(), self.journal.as_mut()) {
            (Some(_), Some(journal)) => journal.share_with_others(&message),
            _ => None,
        };
        self.route_stored(now, message, from, stored);
    }

    /// [`route`](Self::route), telling other shards the key the message
    /// is `stored` under.
    fn route_stored(&mut self, now: Now, message: Arc<Message>, from: Option<ConnId>, stored: Option<MessageId>) {
        let recorded = self.forward_to_shards(&message, from, stored);
        let keep = message.retain.then_some(recorded);
        self.deliver_here(now, message, from, None, keep);
    }

    /// Hands `message` to the other shards that want it, if there are any;
    /// what the store records of it if it is retained.
    fn forward_to_shards(
        &mut self,
        message: &Arc<Message>,
        publisher: Option<ConnId>,
        stored: Option<MessageId>,
    ) -> Recorded {
        let Some(shards) = self.shards.as_mut() else { return Recorded::ALWAYS };
        let (version, recorded) = match message.retain {
            true => {
                let (version, recorded) = shards.stamp(&message.topic);
                (Some(version), recorded)
            }
            false => (None, Recorded::ALWAYS),
        };
        let mut targets = std::mem::take(&mut self.shard_targets);
        shards.destinations(&message.topic, message.retain, &mut targets);
        for &to in &targets {
            let message = ShardMessage::Publish { message: message.clone(), publisher, version, stored };
            self.actions.push_back(Action::ToShard { to, message });
        }
        // What its publisher is told waits until those shards have it on
        // disk.
        if let Some(journal) = self.journal.as_mut().filter(|_| !targets.is_empty() && may_be_stored(message)) {
            for &to in &targets {
                shards.durability.posted(to);
            }
            journal.expect_elsewhere();
        }
        self.shard_targets = targets;
        recorded
    }

    /// Delivers `message` to this broker's own subscribers, and keeps it
    /// as its topic's retained message if `keep` says what the store
    /// records of it; `from` is its publisher's connection, on `shard` when
    /// that is another shard.
    fn deliver_here(
        &mut self,
        now: Now,
        message: Arc<Message>,
        from: Option<ConnId>,
        shard: Option<ShardId>,
        keep: Option<Recorded>,
    ) {
        if let Some(recorded) = keep {
            self.store_retained(now, &message, recorded);
        }
        let mut matched = std::mem::take(&mut self.matched);
        matched.clear();
        self.subscriptions.matches(&message.topic, &mut matched);
        matched.sort_unstable();
        // Sorted by key: another session is there if the ends differ.
        let shared = matches!((matched.first(), matched.last()), (Some(a), Some(b)) if a.0 != b.0);
        let source = Source { conn: from, shared, shard };
        let publisher = from.filter(|_| shard.is_none()).and_then(|conn| match self.conns.get(&conn)?.state {
            ConnState::Active { session, .. } => Some(session),
            ConnState::AwaitingConnect | ConnState::Authenticating(_) => None,
        });
        // The shard it comes from, for the sessions moving between nodes.
        let sender = shard.or_else(|| self.shard());
        // Sorted by key: each session's subscriptions come together. It
        // gets the message once, at the highest QoS among them, unchecked
        // if any of them is wholly readable.
        let mut i = 0;
        while i < matched.len() {
            let (key, mut grant) = matched[i];
            while i + 1 < matched.len() && matched[i + 1].0 == key {
                i += 1;
                grant.qos = grant.qos.max(matched[i].1.qos);
                grant.checked &= matched[i].1.checked;
            }
            i += 1;
            if sender.is_some_and(|s| !self.owed_to(key, s) && self.claims.skips(key, s, grant, &message, source)) {
                continue;
            }
            self.deliver_matched(now, key, grant, &message, source, publisher);
        }
        self.matched = matched;
        if let Some(sender) = sender {
            self.claims.take_in(&message, sender);
            self.forward_to_moved(&message, sender);
        }
    }

    /// Delivers `message` to session `key`, one of its subscribers with
    /// `grant`; `publisher` is its publisher's session here.
    fn deliver_matched(
        &mut self,
        now: Now,
        key: SessionKey,
        grant: Grant,
        message: &Arc<Message>,
        source: Source,
        publisher: Option<SessionKey>,
    ) {
        if grant.checked && !self.may_read(key, &message.topic) {
            return;
        }
        // A bridge is not sent back what it published (the other broker
        // has it), and is sent the RETAIN flag as published, so that the
        // other broker keeps retained messages too.
        let bridge = self.sessions.get(key).is_some_and(|s| s.bridge);
        if (bridge && publisher == Some(key)) || self.was_routed_to(key, message) {
            return;
        }
        let qos = self.delivery_qos(message, grant);
        self.deliver(now, key, Outgoing::new(message.clone(), qos, bridge && message.retain), source);
    }

    /// Delivers `message` to session `key` alone, if its subscriptions
    /// match it, as [`deliver_here`](Self::deliver_here) would.
    pub(super) fn deliver_to(&mut self, now: Now, key: SessionKey, message: &Arc<Message>) {
        let mut matched = std::mem::take(&mut self.matched);
        matched.clear();
        self.subscriptions.matches(&message.topic, &mut matched);
        let grant = matched
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|&(_, grant)| grant)
            .reduce(|a, b| Grant { qos: a.qos.max(b.qos), checked: a.checked && b.checked });
        self.matched = matched;
        if let Some(grant) = grant {
            self.deliver_matched(now, key, grant, message, Source::default(), None);
        }
    }

    /// Whether session `key` got `message` before the restart that routes
    /// it again (see `routed_before`).
    fn was_routed_to(&self, key: SessionKey, message: &Arc<Message>) -> bool {
        if self.routed_before.is_empty() {
            return false;
        }
        let Some(id) = self.journal.as_ref().and_then(|journal| journal.stored_id(message)) else { return false };
        let (Some(held), Some(session)) = (self.routed_before.get(&id), self.sessions.get(key)) else { return false };
        held.contains(&session.client_id)
    }

    /// Messages `ids` may have been routed before the stop (see
    /// `routed_before`): the sessions restored here with a copy of one
    /// are skipped when it is routed again.
    pub(super) fn note_routed_before(&mut self, ids: &[MessageId]) {
        let Some(journal) = self.journal.as_ref() else { return };
        for key in self.sessions.keys() {
            let Some(session) = self.sessions.get(key) else { continue };
            for &id in ids {
                if session.holds(|copy| journal.stored_id(copy) == Some(id)) {
                    self.routed_before.entry(id).or_default().insert(session.client_id.clone());
                }
            }
        }
    }

    /// Whether session `key` may be sent a message on `topic`, for a
    /// subscription that is not wholly readable.
    fn may_read(&self, key: SessionKey, topic: &TopicName) -> bool {
        self.sessions.get(key).is_some_and(|session| {
            let info = ClientInfo {
                client_id: &session.client_id,
                username: session.username(),
                listener: session.owner_listener,
            };
            self.policy.may_read(info, topic)
        })
    }

    fn store_retained(&mut self, now: Now, message: &Arc<Message>, recorded: Recorded) {
        if message.payload.is_empty() || message.is_expired(now.unix) {
            // An empty payload deletes; an already expired message replaces
            // the old one and expires at once: either way nothing is kept.
            let before = self.retained.remove(&message.topic);
            self.retained_changed(&message.topic, None, before.as_ref(), recorded);
        } else {
            let before = self.retained.insert(message.topic.clone(), message.clone());
            self.retained_changed(&message.topic, Some(message), before.as_ref(), recorded);
        }
    }

    /// The retained message on `topic` is now `now`, was `before`: its
    /// bytes are counted and the change recorded for the store as
    /// `recorded` says.
    fn retained_changed(
        &mut self,
        topic: &TopicName,
        now: Option<&Arc<Message>>,
        before: Option<&Arc<Message>>,
        recorded: Recorded,
    ) {
        self.gauges.retained(now.map(|m| &**m), before.map(|m| &**m));
        if recorded.now {
            self.record_retained(topic, now, before, recorded.before);
        }
    }

    /// What the store records of a change of `topic`'s retained message
    /// made here other than by a PUBLISH (an expiry).
    fn recorded(&self, topic: &TopicName) -> Recorded {
        self.shards.as_ref().map_or(Recorded::ALWAYS, |shards| shards.records(topic))
    }

    /// Sends `out` to the session now, queues it, or drops it (see
    /// [`congestion`](crate::congestion) for a connected subscriber that
    /// cannot keep up).
    fn deliver(&mut self, now: Now, key: SessionKey, mut out: Outgoing, source: Source) {
        let limits = self.limits;
        let out_of_memory = self.out_of_memory();
        let Some(session) = self.sessions.get_mut(key) else { return };
        if let Some(conn) = session.conn().filter(|_| session.clean && out_of_memory) {
            // As Mosquitto: the copy is dropped and its client disconnected.
            // A stored session keeps it: its publisher may have been
            // acknowledged.
            self.counts.dropped.out_of_memory += 1;
            return self.close(now, conn, CloseReason::OutOfMemory);
        }
        match session.conn() {
            Some(conn) if out.qos == QoS::AtMostOnce => self.send_or_drop(now, key, conn, out),
            Some(conn) if session.can_send_now(limits) => self.send_new(now, key, conn, out),
            None if out.qos == QoS::AtMostOnce && !self.config.queue_qos0_messages => {}
            conn => {
                self.stamp(key, &mut out);
                let Some(session) = self.sessions.get_mut(key) else { return };
                match session.enqueue(out, limits) {
                    Ok(()) => self.record_queued(key),
                    Err(QueueFull(out)) => match conn {
                        Some(conn) => self.overflow(now, key, conn, out, source),
                        None => self.drop_copy(key),
                    },
                }
            }
        }
    }

    /// A copy is dropped for session `key` (its queue is full): counted,
    /// and logged at the start of an episode, as Mosquitto logs it.
    fn drop_copy(&mut self, key: SessionKey) {
        self.counts.dropped.queue_full += 1;
        if let Some(session) = self.sessions.get_mut(key)
            && session.note_drop()
        {
            warn!("Outgoing messages are being dropped for client {}.", session.client_id);
        }
    }

    /// Moves queued copies into the window while it has room.
    fn pump(&mut self, now: Now, key: SessionKey) {
        let limits = self.limits;
        while let Some(session) = self.sessions.get_mut(key) {
            let Some(conn) = session.conn() else { return };
            let Some(out) = session.next_queued(limits) else { return };
            self.send_or_drop(now, key, conn, out);
        }
    }

    /// Sends `out` unless it is QoS 0 and `id`'s writer is behind.
    fn send_or_drop(&mut self, now: Now, key: SessionKey, id: ConnId, out: Outgoing) {
        if out.qos == QoS::AtMostOnce && self.conns.get(&id).is_some_and(|c| c.is_behind()) {
            self.drop_behind(id, key);
        } else {
            self.send_new(now, key, id, out);
        }
    }

    /// First transmission of a copy: the expiry check, a packet id, DUP 0
    /// ([MQTT-4.3.1-1], [MQTT-4.3.2-1], [MQTT-4.3.3-1]).
    fn send_new(&mut self, now: Now, key: SessionKey, id: ConnId, out: Outgoing) {
        let (Some(session), Some(conn)) = (self.sessions.get_mut(key), self.conns.get_mut(&id)) else {
            return;
        };
        if out.message.expires_at.is_some() {
            debug!("payload: {}", excerpt(&out.message.payload));
            debug!(
                "Expire at: {}, Current timestamp: {}",
                out.message.expires_at.unwrap_or_default(),
                now.unix.as_secs_f64()
            );
            if out.message.is_expired(now.unix) {
                log_expired(&out.message, now);
                self.counts.dropped.expired += 1;
                self.actions
                    .push_back(Action::DropExpired { client: session.client_id.clone(), message: out.message.clone() });
                self.record_drop_copy(key, &out);
                return;
            }
        }
        let shown = match mount::seen(
            self.config.listener_rules(conn.listener).mount_point.as_deref(),
            &out.message.topic,
        ) {
            Seen::AsIs => None,
            Seen::Unmounted(topic) => Some(topic),
            Seen::Hidden => {
                trace!(conn = %id, "'{}' is outside the mount point of {}", out.message.topic.as_str(), session.client_id);
                self.record_drop_copy(key, &out);
                return;
            }
        };
        let qos = out.qos;
        let message = out.message.clone();
        let packet_id = match qos {
            QoS::AtMostOnce => {
                write_publish(conn, &mut self.dirty, id, &out, shown.as_ref(), false, None);
                self.record_drop_copy(key, &out);
                None
            }
            _ => {
                let mut out = out;
                let fresh = self.stamp(key, &mut out);
                let (Some(session), Some(conn)) = (self.sessions.get_mut(key), self.conns.get_mut(&id)) else {
                    return;
                };
                let new_id = out.id.is_none();
                let id_batch = out.batch;
                let pid = session.start(out);
                let Some(flight) = session.inflight().last() else { return };
                write_publish(conn, &mut self.dirty, id, &flight.out, shown.as_ref(), false, Some(pid));
                if self.journal.is_some() && flight.out.seq != 0 {
                    let out = flight.out.clone();
                    self.record_copy(key, &out, CopyState::Sent(pid), fresh, new_id);
                    // A QoS 2 copy's packet id must survive a crash before
                    // the client sees it: the client holds it until PUBREL,
                    // and would take another message under it for a
                    // duplicate; the copy it carries goes out once. A QoS 1
                    // copy seen before a crash is at worst sent again. A
                    // copy given its id when it was queued has it stored
                    // with it already (see `Session::enqueue_over`).
                    // It waits for that batch if it is not durable yet.
                    if qos == QoS::ExactlyOnce {
                        if new_id {
                            self.hold_output(id);
                        } else {
                            self.hold_output_for(id, id_batch);
                        }
                    }
                }
                Some(pid)
            }
        };
        let Some(session) = self.sessions.get(key) else { return };
        self.actions.push_back(Action::Deliver {
            client: session.client_id.clone(),
            conn: id,
            message,
            qos,
            packet_id,
        });
    }

    // ---- SUBSCRIBE / UNSUBSCRIBE ----------------------------------------

    /// Implements [MQTT-3.8.4-1] to [MQTT-3.8.4-6], [MQTT-3.9.3-1],
    /// [MQTT-3.3.1-6] and [MQTT-3.3.1-8]. As Mosquitto, SUBACK goes out
    /// before the retained messages.
    fn handle_subscribe(&mut self, now: Now, id: ConnId, key: SessionKey, subscribe: Subscribe) {
        let Some(info) = self.identity(id, key) else { return };
        let client_id = info.client_id;
        debug!(conn = %id, "Received SUBSCRIBE from {client_id}");
        // As Mosquitto: the QoS is lowered to the listener's maximum, the
        // filter put below its mount point, and the ACL judges the result.
        let rules = self.listener_rules(id);
        let filters: Vec<(Option<TopicFilter>, QoS)> = subscribe
            .filters
            .into_iter()
            .map(|(filter, qos)| (self.mounted_filter(id, filter), qos.min(rules.max_qos)))
            .collect();
        let decisions: Vec<FilterAccess> = filters
            .iter()
            .map(|(filter, _)| filter.as_ref().map_or(FilterAccess::Denied, |f| self.policy.filter_access(info, f)))
            .collect();
        let mut return_codes = Vec::with_capacity(filters.len());
        let mut granted = Vec::with_capacity(filters.len());
        for ((filter, qos), access) in filters.into_iter().zip(decisions) {
            if let Some(filter) = &filter {
                debug!(conn = %id, "\t{} (QoS {})", filter.as_str(), qos.bits());
                self.counts.acl_denied_subscribe += u64::from(access == FilterAccess::Denied);
            }
            let Some(filter) = filter.filter(|f| access != FilterAccess::Denied && self.has_room_for(key, f)) else {
                return_codes.push(SubscribeReturnCode::Failure);
                continue;
            };
            let grant = Grant { qos, checked: access == FilterAccess::Partial };
            self.add_subscription(&filter, key, grant);
            if let Some(session) = self.sessions.get_mut(key) {
                session.subscriptions.insert(filter.clone(), qos);
                info!(target: log_type::SUBSCRIBE, "{} {} {}", session.client_id, qos.bits(), filter.as_str());
            }
            self.record_subscription(key, &filter, Some(qos));
            return_codes.push(SubscribeReturnCode::Granted(qos));
            granted.push((filter, grant));
        }
        self.write(id, &Packet::SubAck(SubAck { packet_id: subscribe.packet_id, return_codes }));
        for (filter, grant) in granted {
            self.send_retained(now, key, &filter, grant);
        }
    }

    /// Whether session `key` may hold `filter` under `max_subscriptions`
    /// (a filter it already holds only has its QoS replaced).
    fn has_room_for(&self, key: SessionKey, filter: &TopicFilter) -> bool {
        let max = self.config.max_subscriptions;
        max == 0
            || self
                .sessions
                .get(key)
                .is_some_and(|s| s.subscriptions.len() < max || s.subscriptions.contains_key(filter))
    }

    /// The retained messages matching a new subscription, as any other
    /// message is delivered to it (checked for read access if its filter
    /// is not wholly readable).
    fn send_retained(&mut self, now: Now, key: SessionKey, filter: &TopicFilter, grant: Grant) {
        let mut found = Vec::new();
        self.retained.matching(filter, &mut found);
        for (topic, message) in found {
            if grant.checked && !self.may_read(key, &topic) {
                continue;
            }
            if self.config.check_retain_source
                && let Some(publisher) = &message.publisher
                && !self.policy.may_publish(publisher.info(), &topic)
            {
                // As Mosquitto: kept, but not sent while its publisher may
                // no longer publish there.
                continue;
            }
            if message.is_expired(now.unix) {
                let before = self.retained.remove(&topic);
                self.retained_changed(&topic, None, before.as_ref(), self.recorded(&topic));
                log_expired(&message, now);
                self.counts.dropped.expired += 1;
                if let Some(session) = self.sessions.get(key) {
                    self.actions.push_back(Action::DropExpired { client: session.client_id.clone(), message });
                }
                continue;
            }
            let qos = self.delivery_qos(&message, grant);
            self.deliver(now, key, Outgoing::new(message, qos, true), Source::default());
        }
    }

    /// Implements [MQTT-3.10.4-1] to [MQTT-3.10.4-6]. Filters are put below
    /// the listener's mount point, as SUBSCRIBE's are (Mosquitto 2.0 does
    /// not, so there a mounted client cannot unsubscribe).
    fn handle_unsubscribe(&mut self, id: ConnId, key: SessionKey, unsubscribe: Unsubscribe) {
        for filter in unsubscribe.filters {
            // A filter that cannot be mounted was never subscribed.
            let Some(filter) = self.mounted_filter(id, filter) else { continue };
            self.remove_subscription(&filter, key);
            if let Some(session) = self.sessions.get_mut(key) {
                session.subscriptions.remove(&filter);
            }
            self.record_subscription(key, &filter, None);
            if let Some(session) = self.sessions.get(key) {
                info!(target: log_type::UNSUBSCRIBE, "{} {}", session.client_id, filter.as_str());
            }
        }
        self.write(id, &Packet::UnsubAck(unsubscribe.packet_id));
    }

    /// `filter` below the mount point of connection `id`'s listener;
    /// `None` if it cannot be put there (see [`mount::filter`]).
    fn mounted_filter(&self, id: ConnId, filter: TopicFilter) -> Option<TopicFilter> {
        match self.mount_point(id) {
            None => Some(filter),
            Some(mount) => mount::filter(mount, &filter),
        }
    }

    // ---- closing ----------------------------------------------------------

    /// Ends connection `id`: flushes what it was sent, emits `Close` (unless
    /// the network already ended it), marks its client offline, publishes
    /// its will unless it sent DISCONNECT ([MQTT-3.1.2-8], [MQTT-3.1.2-10],
    /// [MQTT-3.14.4-3]) and discards a clean session ([MQTT-3.1.2-6]).
    fn close(&mut self, now: Now, id: ConnId, reason: CloseReason) {
        let Some(mut conn) = self.conns.remove(&id) else { return };
        self.claims.closed(id);
        self.occupancy.disconnect(conn.listener);
        self.counts.keepalive_timeouts += u64::from(reason == CloseReason::KeepAliveTimeout);
        let waiting = Self::drop_waiting(&mut conn, id);
        if let Some(data) = conn.take_output().filter(|_| !waiting) {
            emit(&mut self.actions, &mut self.counts, id, data);
        }
        if let Some(mut congestion) = conn.congestion.take() {
            self.release(now, congestion.release_all());
        }
        if reason != CloseReason::ConnectionLost {
            self.actions.push_back(Action::Close { conn: id, reason });
        }
        let quiet = !self.config.connection_messages;
        let ConnState::Active { session: key, will, .. } = conn.state else {
            log_close("<unknown>", id, reason, quiet);
            return;
        };
        self.gauges.connected = self.gauges.connected.saturating_sub(1);
        let Some(session) = self.sessions.get_mut(key) else { return };
        log_close(session.client_id.as_str(), id, reason, quiet);
        session.presence = Presence::Offline(persist::seconds(now));
        let client = session.client_id.clone();
        let username = session.owner.clone();
        let clean = session.clean;
        self.actions.push_back(Action::MarkOffline { client: client.clone(), conn: id });
        if clean {
            self.discard_session(key);
        } else {
            self.record_session(key);
        }
        if will.is_some() {
            self.record_will(&client, None);
        }
        // A node counted gone had its clients' wills published by another.
        let will = if matches!(reason, CloseReason::Disconnected | CloseReason::CountedGone) { None } else { will };
        // A will is a PUBLISH by its client: the same write rules apply.
        let info = ClientInfo { client_id: &client, username: username.as_deref(), listener: conn.listener };
        let Some(will) = will else { return };
        if self.policy.may_publish(info, &will.topic) {
            let message = Message::from_will(*will, self.config.message_expiry).published_by(|| info.publisher());
            self.route(now, Arc::new(message), None);
        } else {
            self.counts.acl_denied_publish += 1;
        }
    }

    /// Adds or replaces session `key`'s subscription to `filter`; the first
    /// one of this shard to `filter` is announced to the other shards.
    fn add_subscription(&mut self, filter: &TopicFilter, key: SessionKey, grant: Grant) {
        let new = self.subscriptions.subscribe(filter, key, grant).is_none();
        if new && self.shards.as_mut().is_some_and(|s| s.subscribed(filter)) {
            self.tell_other_shards(&ShardMessage::Route(filter.clone()));
        }
    }

    /// Removes session `key`'s subscription to `filter`; the last one of
    /// this shard to `filter` is withdrawn from the other shards.
    fn remove_subscription(&mut self, filter: &TopicFilter, key: SessionKey) {
        let removed = self.subscriptions.unsubscribe(filter, key);
        if removed && self.shards.as_mut().is_some_and(|s| s.unsubscribed(filter)) {
            self.tell_other_shards(&ShardMessage::Unroute(filter.clone()));
        }
    }

    /// Tells every other shard a route change. What answers the packet
    /// that made it waits until the shards of other nodes took it in (see
    /// [`Durability`](crate::shard::Durability)).
    fn tell_other_shards(&mut self, message: &ShardMessage) {
        let Some(shards) = self.shards.as_mut() else { return };
        let mut to_peers = false;
        for to in shards.others() {
            if shards.is_peer(to) && self.journal.is_some() {
                shards.durability.posted_route(to);
                to_peers = true;
            }
            self.actions.push_back(Action::ToShard { to, message: message.clone() });
        }
        if let Some(journal) = self.journal.as_mut().filter(|_| to_peers) {
            journal.expect_elsewhere();
        }
    }

    /// Forgets a session and its subscriptions; retained messages stay
    /// ([MQTT-3.1.2-7]).
    fn discard_session(&mut self, key: SessionKey) {
        self.forget_claimed(key);
        if let Some(session) = self.sessions.remove(key) {
            self.occupancy.forget_session();
            for filter in session.subscriptions.keys() {
                self.remove_subscription(filter, key);
            }
            self.record_discarded(&session);
        }
    }

    // ---- output -----------------------------------------------------------

    fn session_mut(&mut self, key: SessionKey) -> Option<&mut Session> {
        self.sessions.get_mut(key)
    }

    fn write(&mut self, id: ConnId, packet: &Packet) {
        if let Some(conn) = self.conns.get_mut(&id) {
            write_packet(conn, &mut self.dirty, id, packet);
        }
    }

    fn flush_all(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty.conns);
        for id in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(&id) else { continue };
            conn.dirty = false;
            if let Some(data) = conn.take_output() {
                self.release_or_keep(id, data);
            }
        }
        // Kept for its allocation.
        self.dirty.conns = dirty;
    }
}

/// Connections with bytes waiting in their `outbuf`, and the packets
/// written there since start: counted where they are encoded.
#[derive(Debug, Default)]
struct Dirty {
    conns: Vec<ConnId>,
    packets: u64,
    publish: [u64; 3],
    publish_bytes: [u64; 3],
}

fn mark_dirty(conn: &mut Connection, dirty: &mut Dirty, id: ConnId) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.conns.push(id);
    }
}

fn write_packet(conn: &mut Connection, dirty: &mut Dirty, id: ConnId, packet: &Packet) {
    trace!(conn = %id, packet = packet.name(), "sending");
    packet.encode(&mut conn.buffers().outbuf);
    dirty.packets += 1;
    mark_dirty(conn, dirty, id);
}

/// Hands `data` to the runtime for `id`, counting its bytes.
fn emit(actions: &mut VecDeque<Action>, counts: &mut Counts, id: ConnId, data: Bytes) {
    counts.bytes_sent += data.len() as u64;
    actions.push_back(Action::Send { conn: id, data });
}

/// Writes `out` to `conn`, on `topic` if given (its topic without the
/// listener's mount point), else on its own.
fn write_publish(
    conn: &mut Connection,
    dirty: &mut Dirty,
    id: ConnId,
    out: &Outgoing,
    topic: Option<&TopicName>,
    dup: bool,
    packet_id: Option<PacketId>,
) {
    let m = &out.message;
    let topic = topic.unwrap_or(&m.topic);
    conn.busy = true;
    codec::encode_publish(&mut conn.buffers().outbuf, dup, out.qos, out.retain, topic, packet_id, &m.payload);
    let qos = usize::from(out.qos.bits());
    dirty.packets += 1;
    dirty.publish[qos] += 1;
    dirty.publish_bytes[qos] += m.payload.len() as u64;
    mark_dirty(conn, dirty, id);
}

fn connack(session_present: bool, code: ConnectReturnCode) -> Packet {
    Packet::ConnAck(ConnAck { session_present, code })
}

fn show_addr(remote: Option<&Remote>) -> String {
    remote.map_or_else(|| "unknown".to_owned(), Remote::to_string)
}

fn excerpt(payload: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(&payload[..payload.len().min(LOGGED_PAYLOAD)])
}

fn log_expired(message: &Message, now: Now) {
    debug!(
        topic = message.topic.as_str(),
        expired_at = message.expires_at,
        now = now.unix.as_secs_f64(),
        "The message has already expired!"
    );
}

/// Mosquitto's wording for each way a client leaves; `quiet`
/// (`connection_messages false`) keeps only protocol errors.
fn log_close(client: &str, id: ConnId, reason: CloseReason, quiet: bool) {
    if quiet && !matches!(reason, CloseReason::Violation(_) | CloseReason::NotReading) {
        return;
    }
    match reason {
        CloseReason::Disconnected => info!("Client {client} disconnected."),
        CloseReason::ConnectionLost => info!("Socket error on client {client}, disconnecting."),
        CloseReason::KeepAliveTimeout => info!("Client {client} has exceeded timeout, disconnecting."),
        CloseReason::NotReading => warn!("Client {client} is not reading its messages, disconnecting."),
        CloseReason::Violation(v) => {
            info!("Client {client} disconnected due to protocol error: {v}")
        }
        CloseReason::TooLarge { .. } | CloseReason::ConnectTimeout | CloseReason::RetainNotAvailable => {
            info!("Client {client} disconnected: {reason}.")
        }
        CloseReason::NotAuthorised => info!("Client {client} disconnected, not authorised."),
        CloseReason::Kicked => info!("Client {client} disconnected by the HTTP API."),
        CloseReason::OutOfMemory => info!("Client {client} disconnected due to out of memory."),
        // Logged where it was decided, in Mosquitto's words.
        CloseReason::TakenOver
        | CloseReason::Refused(_)
        | CloseReason::TooManyConnections
        | CloseReason::TooManyClients
        | CloseReason::Shutdown
        | CloseReason::CountedGone
        | CloseReason::QosNotSupported => {
            debug!(conn = %id, "Client {client} closed: {reason}.")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::codec::Packet;
    use crate::sim::{ClientOptions, Simulation};
    use crate::{Config, ConnId, QoS};

    /// Two nodes, connections going to them in turn: a publisher on node
    /// 1 and a subscriber to `filter` on node 0.
    fn two_nodes(filter: &str) -> (Simulation, ConnId, ConnId) {
        let config = Config { sys_interval: Duration::ZERO, ..Config::default() };
        let mut sim = Simulation::with_nodes(config, 2);
        let publisher = sim.connect(ClientOptions::new("publisher"));
        let sub = sim.connect(ClientOptions::new("sub"));
        sim.subscribe(sub, filter, QoS::AtLeastOnce);
        (sim, publisher, sub)
    }

    /// Node 1 hears node 0's shard leave and join again (a Redis restart,
    /// a pause): it keeps none of its routes.
    fn node_1_hears_node_0_again(sim: &mut Simulation) {
        use crate::shard::{ShardAddress, ShardId, ShardMessage, node_number};
        let address = ShardAddress { node: node_number("node-0"), shard: ShardId(0) };
        sim.link_says(1, ShardId(1), ShardMessage::Left);
        sim.link_says(1, ShardId(1), ShardMessage::Joined(address));
    }

    fn holds_buffers(sim: &Simulation, conn: ConnId) -> bool {
        sim.broker().conns.get(&conn).expect("connection open").buffers.is_some()
    }

    #[test]
    fn a_node_counted_gone_closes_every_connection_without_its_will() {
        // Another node published the wills when it counted this one gone:
        // closing here publishes none again, and nobody stays connected.
        let mut sim = Simulation::new(Config { sys_interval: Duration::ZERO, ..Config::default() });
        let will = crate::codec::LastWill {
            topic: crate::TopicName::new("wills/dev").expect("topic"),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
        };
        let dev = sim.connect(ClientOptions::new("dev").will(will));
        let other = sim.connect(ClientOptions::new("other"));
        sim.link_says(0, crate::shard::ShardId(0), crate::shard::ShardMessage::CountedGone);
        assert_eq!(sim.closed(dev), Some(crate::CloseReason::CountedGone));
        assert_eq!(sim.closed(other), Some(crate::CloseReason::CountedGone));
        let look = sim.connect(ClientOptions::new("look"));
        sim.subscribe(look, "wills/#", QoS::AtLeastOnce);
        let got = sim.take_received(look);
        assert!(!got.iter().any(|p| matches!(p, Packet::Publish(_))), "{got:?}");
        // Connected again, the same client is served as before.
        let again = sim.connect(ClientOptions::new("dev"));
        assert_eq!(sim.closed(again), None);
    }

    #[test]
    fn retained_messages_handed_to_a_node_that_joins_are_not_delivered_again() {
        let (mut sim, publisher, sub) = two_nodes("#");
        sim.publish(publisher, "r", b"kept", QoS::AtLeastOnce, true);
        assert_eq!(sim.take_publishes(sub).len(), 1);
        // Node 1 hands node 0 every retained message it keeps.
        node_1_hears_node_0_again(&mut sim);
        assert_eq!(sim.take_publishes(sub), [], "{}", sim.transcript());
        // Node 0 keeps it, for the next subscriber.
        let late = sim.connect(ClientOptions::new("late"));
        let late = if late.0.is_multiple_of(2) { late } else { sim.connect(ClientOptions::new("later")) };
        sim.subscribe(late, "r", QoS::AtLeastOnce);
        assert_eq!(sim.take_publishes(late).len(), 1);
    }

    #[test]
    fn a_node_joined_again_sends_every_message_to_a_shard_whose_routes_are_on_their_way() {
        let (mut sim, publisher, sub) = two_nodes("t");
        // Node 0 tells its routes again only once it hears node 1 again.
        node_1_hears_node_0_again(&mut sim);
        sim.publish(publisher, "t", b"meanwhile", QoS::AtLeastOnce, false);
        let got = sim.take_publishes(sub);
        assert_eq!(got.len(), 1, "{}", sim.transcript());
    }

    #[test]
    fn a_connection_fits_an_80_byte_heap_chunk() {
        // glibc serves requests of up to 72 bytes from 80-byte chunks: one
        // more byte and every connection's box takes 96 bytes.
        let size = size_of::<super::Connection>();
        assert!(size <= 72, "a connection is {size} bytes");
    }

    #[test]
    fn an_idle_connection_holds_no_buffers() {
        let mut sim = Simulation::new(Config { sys_interval: Duration::ZERO, ..Config::default() });
        let conn = sim.connect(ClientOptions::new("idle").keep_alive(10));
        assert!(!holds_buffers(&sim, conn), "kept after CONNECT and CONNACK");
        sim.send(conn, &Packet::PingReq);
        assert!(matches!(sim.take_received(conn).last(), Some(Packet::PingResp)));
        assert!(!holds_buffers(&sim, conn), "kept after PINGREQ and PINGRESP");

        // A busy connection keeps its buffers between writes...
        sim.subscribe(conn, "t", QoS::AtMostOnce);
        let publisher = sim.connect(ClientOptions::new("publisher"));
        sim.publish(publisher, "t", b"x", QoS::AtMostOnce, false);
        assert!(matches!(sim.take_received(conn).last(), Some(Packet::Publish(_))));
        assert!(holds_buffers(&sim, conn));

        // ...until the keepalive check passes by (15 s after its last
        // packet is due; a PINGREQ at 5 s keeps it open).
        sim.advance(Duration::from_secs(5));
        sim.send(conn, &Packet::PingReq);
        sim.advance(Duration::from_secs(11));
        assert_eq!(sim.closed(conn), None);
        assert!(!holds_buffers(&sim, conn), "kept past the keepalive check");
    }
}
