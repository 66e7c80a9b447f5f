//! Shards: several brokers acting as one, each the home of the client ids
//! that hash to it (see `DESIGN.md`, "Where the architecture is going").
//!
//! A connection belongs to its client id's home shard ([`home_shard`])
//! once its CONNECT is read, so a session, its takeovers, its QoS flows and
//! its presence changes never leave one shard: each stays today's
//! single-threaded broker. What crosses shards is [`ShardMessage`]s,
//! carried in order from one shard to another by whatever joins them:
//!
//! - a shard tells every other one which filters its sessions subscribe to
//!   ([`ShardMessage::Route`], [`ShardMessage::Unroute`]: sent when a
//!   filter gets its first local subscriber and when it loses its last);
//! - a message published at a shard goes once to each other shard with a
//!   route matching its topic ([`ShardMessage::Publish`]), which delivers
//!   it to its own subscribers;
//! - a retained message (or its deletion) goes to every other shard, so
//!   that each holds every retained message and answers SUBSCRIBE alone;
//!   each change carries a [`RetainVersion`], so that shards receiving two
//!   changes of one topic in different orders keep the same one.
//!
//! One queue per ordered pair of shards keeps each publisher's order: its
//! messages leave its home shard in order and reach each other shard by
//! one path.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use bytes::BytesMut;

use crate::broker::Stats;
use crate::codec::{self, Packet};
use crate::http_api::clients::ClientRows;
use crate::message::Message;
use crate::peer::Identity;
use crate::persistence::{CopyState, MessageId, StoredSession};
use crate::router::SubscriptionTree;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{ClientId, ConnId, PacketId, Protocol, QoS};

mod durability;
pub mod liveness;
pub mod nodes;
pub mod wire;

pub(crate) use durability::{Durability, Released, may_be_stored};

/// A shard, numbered from 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The node's own link to the cluster (see [`ShardMessage::Own`]):
    /// never a shard's number.
    pub const LINK: Self = Self(u16::MAX);
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

/// A shard as every node names it: its node ([`node_number`]) and its
/// number there. A message that names a third shard (the holder of a
/// session, see [`ShardMessage::Flush`]) names it so; each receiver finds
/// its own number for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardAddress {
    /// The node ([`node_number`]).
    pub node: u64,
    /// The shard, in its node's numbering.
    pub shard: ShardId,
}

/// Carries what a shard tells the others, as the shard tells it (see
/// [`Server::post_shard_messages`](crate::server::Server::post_shard_messages)):
/// one FIFO queue per ordered pair of shards. A post must not wait for
/// the receiving shard, which may be waiting for the poster.
pub trait ShardBus: fmt::Debug + Send {
    /// Puts `message` in the queue to shard `to`.
    fn post(&mut self, to: ShardId, message: ShardMessage);

    /// The end of the shard's turn (see
    /// [`Server::end_turn`](crate::server::Server::end_turn)): a receiver
    /// may be woken only now, and then takes what the turn posted at once
    /// rather than a message at a time.
    fn end_turn(&mut self) {}
}

/// The home shard of `client_id` among `shards` (at least 1). Stable: the
/// same for every process and every build (64-bit FNV-1a of the id's
/// bytes), so that a persistent session is found again after a restart
/// with the same number of shards.
pub fn home_shard(client_id: &str, shards: u16) -> ShardId {
    let index = fnv1a(client_id) % u64::from(shards.max(1));
    ShardId(u16::try_from(index).unwrap_or(0))
}

/// The number of the node named `name` among the nodes of a cluster, which
/// orders the retained changes its shards make ([`RetainVersion`]): the
/// same in every process (64-bit FNV-1a of the name), never 0 (a process
/// alone).
pub fn node_number(name: &str) -> u64 {
    fnv1a(name).max(1)
}

/// 64-bit FNV-1a of `text`'s bytes.
fn fnv1a(text: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    text.bytes().fold(OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME))
}

/// Where a new connection goes, from the bytes its client sent so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Its CONNECT is not whole yet: keep reading.
    NeedMore,
    /// To this shard: its client id's home, or shard 0 for anything but a
    /// CONNECT with an id (that shard's broker answers as a broker alone
    /// would: an assigned id, a refusal, a protocol error).
    Home(ShardId),
}

/// What a connection's broker will take as its client id, whose home is
/// the connection's shard: what the listener's rules say
/// (`use_username_as_clientid`, a certificate name as user name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HomeKey {
    /// The client id of its CONNECT.
    ClientId,
    /// The user name of its CONNECT (`use_username_as_clientid`).
    UserName,
    /// This name, known before the CONNECT (`use_username_as_clientid`
    /// with the certificate's name as user name).
    Named(String),
}

impl HomeKey {
    /// The key of a connection with `identity` on a listener with
    /// `use_username_as_clientid` or without: the broker's own rules (a
    /// certificate's name replaces the user name, which replaces the
    /// client id).
    pub fn of(use_username_as_clientid: bool, identity: &Identity) -> Self {
        match identity {
            _ if !use_username_as_clientid => Self::ClientId,
            // Without a name the broker refuses it: shard 0 answers.
            Identity::Certificate(name) => Self::Named(name.as_deref().unwrap_or_default().to_owned()),
            _ => Self::UserName,
        }
    }

    /// The home of a connection whose CONNECT is `connect`, among `shards`.
    fn home(&self, connect: &codec::Connect, shards: u16) -> ShardId {
        let key = match self {
            Self::ClientId => Some(&*connect.client_id),
            Self::UserName => connect.username.as_deref(),
            Self::Named(name) => Some(name.as_str()),
        };
        // Without one, the broker assigns an id or refuses: shard 0.
        key.filter(|key| !key.is_empty()).map_or(ShardId(0), |key| home_shard(key, shards))
    }

    /// The home known before anything is read, if it is.
    pub fn known_home(&self, shards: u16) -> Option<ShardId> {
        match self {
            Self::Named(name) if name.is_empty() => Some(ShardId(0)),
            Self::Named(name) => Some(home_shard(name, shards)),
            Self::ClientId | Self::UserName => None,
        }
    }
}

/// Where the connection whose first bytes are `bytes` goes among `shards`,
/// its home being that of `key`.
pub fn place(bytes: &[u8], shards: u16, max_packet_size: usize, key: &HomeKey) -> Placement {
    // Only a whole frame is copied and decoded: a CONNECT that comes a
    // little at a time costs a header check per read.
    let len = match codec::whole_frame(bytes, max_packet_size, Protocol::V311) {
        Ok(None) => return Placement::NeedMore,
        Ok(Some(len)) => len,
        Err(_) => return Placement::Home(ShardId(0)),
    };
    let mut buf = BytesMut::from(&bytes[..len]);
    match codec::decode(&mut buf, max_packet_size, Protocol::V311) {
        Ok(None) => Placement::NeedMore,
        Ok(Some(Packet::Connect(connect))) => Placement::Home(key.home(&connect, shards)),
        Ok(Some(_)) | Err(_) => Placement::Home(ShardId(0)),
    }
}

/// Where a change of a topic's retained message stands among the others
/// of every shard: a Lamport clock, then the node and the shard that made
/// it. A shard keeps a change only if it is later than the one it holds,
/// so all keep the last; a change made after another was seen (through
/// its shard's board, which a shard takes before each read) comes later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RetainVersion {
    /// The Lamport clock of the shard that made the change.
    pub tick: u64,
    /// The node that made it ([`node_number`]; 0 for a process alone).
    pub node: u64,
    /// The shard that made it, in its node's numbering.
    pub shard: ShardId,
}

/// What shard 0 asks the other shards for the HTTP API, and their
/// answers (see [`ShardMessage::Api`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ApiMessage {
    /// Shard 0 asks for the receiver's figures as they stand now, for
    /// `/metrics` and `/api/v1/systree`.
    AskFigures {
        /// The number shard 0 gave the request.
        request: u64,
    },
    /// The answer to [`ApiMessage::AskFigures`].
    Figures {
        /// The request answered.
        request: u64,
        /// The receiver's figures.
        stats: Box<Stats>,
    },
    /// Shard 0 asks for the receiver's connected clients whose id starts
    /// with `prefix`, the `first` of them in id order.
    ListClients {
        /// The number shard 0 gave the request.
        request: u64,
        /// The prefix asked for.
        prefix: String,
        /// How many rows the page needs.
        first: usize,
    },
    /// The answer to [`ApiMessage::ListClients`].
    Clients {
        /// The request answered.
        request: u64,
        /// The receiver's part of the page.
        rows: Box<ClientRows>,
    },
    /// Shard 0 asks to disconnect `client`, whose home the receiver is.
    Kick {
        /// The number shard 0 gave the request.
        request: u64,
        /// The client id.
        client: String,
    },
    /// The answer to [`ApiMessage::Kick`]: whether the client was
    /// connected.
    Kicked {
        /// The request answered.
        request: u64,
        /// It was connected, and is no more.
        found: bool,
    },
}

/// What one shard tells another.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardMessage {
    /// The sender's sessions subscribe to this filter (the first of them
    /// just did).
    Route(TopicFilter),
    /// None of the sender's sessions subscribes to this filter any more.
    Unroute(TopicFilter),
    /// A message published at the sender, for the receiver's subscribers
    /// (and, retained, for its retained store), by the sender's connection
    /// `publisher` (none for a will or the broker's own).
    Publish {
        /// The message.
        message: Arc<Message>,
        /// Its publisher's connection, which a subscriber with no room
        /// may hold ([`ShardMessage::Hold`]).
        publisher: Option<ConnId>,
        /// For a retained message, where it stands among the changes of
        /// its topic.
        version: Option<RetainVersion>,
        /// With a store shared by the shards, the key the sender stores
        /// the message under while the receiver's copies are not on disk
        /// (a released QoS 2 message): the receiver's copies refer to it,
        /// so that a restart can tell who has it.
        stored: Option<MessageId>,
    },
    /// A retained message the sender keeps, handed to a shard of another
    /// node that joined ([`ShardMessage::Joined`]): for the receiver's
    /// retained store only. The receiver's subscribers were sent it when
    /// it was published, so they are not sent it again.
    Retained {
        /// The message.
        message: Arc<Message>,
        /// Where it stands among the changes of its topic.
        version: RetainVersion,
    },
    /// The answer to [`ShardMessage::Claim`] of a shard holding the
    /// client's persistent session, which it keeps for the claimant from
    /// now on: the session's filters, for the claimant to route before
    /// the session moves. The claimant then sends [`ShardMessage::Flush`],
    /// and the holder hands the session over ([`ShardMessage::Claimed`])
    /// once every shard passed the cut, so that no message published
    /// meanwhile misses the session.
    Holding {
        /// The client id.
        client: ClientId,
        /// The holder, as every node names it.
        holder: ShardAddress,
        /// The filters the session subscribes to.
        filters: Vec<TopicFilter>,
    },
    /// From a claimant to every other shard, after its routes for the
    /// filters of the sessions `holders` keep for it: the receiver's cut.
    /// It says [`ShardMessage::Flushed`] to each holder and to the
    /// claimant: what it sent a holder before is in the session handed
    /// over, and what it sends the claimant after is for the session.
    Flush {
        /// The client id.
        client: ClientId,
        /// The claim's stamp: which move of the client's session the cut
        /// is of.
        stamp: ConnectStamp,
        /// The shards holding a session of the client.
        holders: Vec<ShardAddress>,
    },
    /// The sender passed its cut of a move of `client`'s session (see
    /// [`ShardMessage::Flush`]): to a holder, nothing the sender sends after
    /// it is for the session; to the claimant, what it sends after it is.
    Flushed {
        /// The client id.
        client: ClientId,
        /// The stamp of the claim that moves it.
        stamp: ConnectStamp,
    },
    /// A message that a shard sent the sender before its cut of a move of
    /// `client`'s session, which reached the sender (the old holder) after
    /// it handed the session over without that cut: for the session alone,
    /// wherever it is now, not for the receiver's other subscribers.
    Forwarded {
        /// The client id.
        client: ClientId,
        /// The message.
        message: Arc<Message>,
    },
    /// A subscriber of the sender has no room for what the receiver's
    /// connection sends it: stop reading that connection until as many
    /// [`ShardMessage::Release`] came as holds (see
    /// [`congestion`](crate::congestion)).
    Hold(ConnId),
    /// The subscriber that held the receiver's connection lets go.
    Release(ConnId),
    /// The sender's figures, for shard 0, which publishes `$SYS` for all
    /// of them ([`Broker::totals`](crate::Broker::totals)); sent at each
    /// `sys_interval`.
    Stats(Box<Stats>),
    /// For the HTTP API, which shard 0 answers for every shard.
    Api(ApiMessage),
    /// With a store shared by the shards: this many of the receiver's
    /// messages that the sender may store are on disk (counted by both).
    Stored(u64),
    /// The sender, a shard of another node, took in this many of the
    /// route changes the receiver sent it: what a SUBACK waits for.
    Routed(u64),
    /// The sender, a shard of another node, told the receiver every route
    /// it has, as it does when the receiver joins: until then the
    /// receiver sends it every message, whatever its topic. Carried as
    /// `Routed(0)`, which a build without it takes as nothing new.
    RoutesTold,
    /// A client connected at the sender, a shard of another node, with
    /// `stamp`: a receiver whose connection or session of the same client
    /// id is older closes that connection (a takeover across nodes) and
    /// hands the session over. Every receiver answers
    /// [`ShardMessage::Claimed`]; the sender's CONNACK waits for them all.
    Claim {
        /// The client id.
        client: ClientId,
        /// The epoch the connection took, to order two connections of one
        /// client id on two nodes.
        stamp: ConnectStamp,
    },
    /// The answer to [`ShardMessage::Claim`]: the client's session, if the
    /// receiver held a persistent one older than the claim.
    Claimed {
        /// The client id.
        client: ClientId,
        /// The session handed over.
        session: Option<Box<HandedSession>>,
        /// The receiver knows a later claim of the client: the claim gives
        /// way (its connection is the older), and what it gathers goes on
        /// to the later one.
        later: bool,
    },
    /// The will of a client of a node that is gone (or of this node's run
    /// before a crash), for the receiver to publish. Said by the runtime's
    /// link, never carried.
    Will(Arc<Message>),
    /// The sender, a shard of another node (at this address), is reachable
    /// from now on: the receiver tells it its routes and hands it its
    /// retained messages, and a claim of the receiver under way asks it
    /// too (a node's new run holds what its earlier one stored). Said by
    /// the runtime's link to the other nodes, never carried.
    Joined(ShardAddress),
    /// The sender, a shard of another node, is gone: its routes are
    /// dropped and its holds released. Said by the runtime's link, never
    /// carried; what the sender published before it went is still
    /// delivered.
    Left,
    /// The other nodes counted this node gone while it was paused or cut
    /// off (one of them published its clients' wills and swept their
    /// presence), and it is back: every connection of the receiver closes
    /// without its will, and the clients connect again, to any node. Said
    /// by the runtime's link to its own shards, never carried.
    CountedGone,
    /// To the node's own link ([`ShardId::LINK`]): the ownership epoch of
    /// `client` in the shared Redis, a counter per client id; with
    /// `take`, the next one, taken for a connection of the client at the
    /// sender. The link answers [`ShardMessage::Owner`]. Never carried.
    Own {
        /// The client id.
        client: ClientId,
        /// Take the next epoch rather than read the current one.
        take: bool,
    },
    /// A persistent session of a node that is gone, taken from its store
    /// in Redis (the link has raised the client's epoch for it, so that
    /// the gone node, should it come back, discards its own copy, unless a
    /// connection took the client since: that connection's claim comes
    /// for the session, see [`ShardMessage::TakenOver`]), and the
    /// messages its inbox held: the receiver, the client's home shard,
    /// keeps the session offline unless it holds a session of the client
    /// already, then gives it those of the messages its subscriptions
    /// match. Without a session, more such messages for the session
    /// adopted before. Said by the runtime's link to its own shards, never
    /// carried.
    Adopt {
        /// The client id.
        client: ClientId,
        /// The session, with its new epoch.
        session: Option<Box<HandedSession>>,
        /// What the gone node's inbox held, in order.
        then: Vec<Arc<Message>>,
    },
    /// The link read the cluster's registry for the first time since this
    /// node started: every node alive then has joined
    /// ([`ShardMessage::Joined`] came before). Until then, a claim waits
    /// for it rather than find no other node to ask. Said by the runtime's
    /// link to its own shards, never carried.
    NodesRead,
    /// Node `0` (its [`node_number`]) lapsed: its liveness key is gone
    /// and its registration stays (it was killed, paused, or stopped and
    /// left its sessions to the others). The node that reaps it takes
    /// its persistent sessions over from its store in Redis
    /// ([`ShardMessage::Adopt`]). Until that node says
    /// [`ShardMessage::TakenOver`], a claim here waits, so that a client
    /// connecting meanwhile gets its session (see
    /// [`nodes::TAKEOVER_WAIT`]). Said by the runtime's link to its own
    /// shards, never carried.
    Lapsed(u64),
    /// The receiver read, from this node's inbox, every frame for shard
    /// `shard` (as the writer numbered this node's shards) that run `run`
    /// of node `node` wrote up to its batch `seq`: once the receiver's
    /// store holds this, with the effects of those frames, a new run of
    /// this node skips them when it reads the inbox again
    /// ([`StoreOp::InboxRead`](crate::persistence::StoreOp::InboxRead)).
    /// Said by the runtime's link after the frames, never carried.
    InboxRead {
        /// The writing node's name.
        node: Arc<str>,
        /// Its run.
        run: u64,
        /// The shard the frames were for.
        shard: u16,
        /// The writer's batch.
        seq: u64,
    },
    /// The sessions of lapsed node `0` that the sender's node took over
    /// and that are the sender's are there now: a claim of one of their
    /// clients finds its session at the sender. From the runtime's link
    /// ([`ShardId::LINK`]) once it gave each session to its home shard,
    /// which says it to every other shard in turn.
    TakenOver(u64),
    /// The link's answer to [`ShardMessage::Own`]: `client`'s epoch is
    /// `epoch`, taken by the receiver if `taken`. A session whose epoch is
    /// below the current one was taken elsewhere since, and is fenced off
    /// (see docs/cluster.md, "Ownership epochs"). Never carried.
    Owner {
        /// The client id.
        client: ClientId,
        /// The epoch.
        epoch: u64,
        /// The receiver took it.
        taken: bool,
    },
}

impl ShardMessage {
    /// Whether it carries a message the receiver may store for what its
    /// publisher was told (see [`may_be_stored`]): what the receiver's
    /// confirmations count.
    pub(crate) fn may_be_stored(&self) -> bool {
        match self {
            Self::Publish { message, .. } | Self::Forwarded { message, .. } => may_be_stored(message),
            Self::Retained { .. } => true,
            _ => false,
        }
    }

    /// The message it brings to sessions, with the client it is for
    /// alone if one (sent on, [`ShardMessage::Forwarded`]): what a gone
    /// node's inbox holds for its sessions taken over
    /// ([`ShardMessage::Adopt`]).
    pub fn into_delivery(self) -> Option<(Option<ClientId>, Arc<Message>)> {
        match self {
            Self::Publish { message, .. } => Some((None, message)),
            Self::Forwarded { client, message } => Some((Some(client), message)),
            _ => None,
        }
    }
}

/// The ownership epoch a connection of a client took, and where: of two
/// connections of one client claimed on two nodes at once, the later
/// stamp wins. Ordered by epoch (Redis gives each connection of a client
/// id its own), then node, then shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectStamp {
    /// The ownership epoch ([`ShardMessage::Owner`]).
    pub epoch: u64,
    /// The node ([`node_number`]).
    pub node: u64,
    /// The shard, in its node's numbering.
    pub shard: ShardId,
}

/// A persistent session handed from one node to another when its client
/// connects there (see [`ShardMessage::Claimed`]): what the store would
/// hold of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HandedSession {
    /// The ownership epoch of the connection that last took it (see
    /// [`ShardMessage::Owner`]; 0: not known): of two sessions handed over
    /// for one claim (a node paused past its liveness still held one), the
    /// one with the higher epoch is kept.
    pub epoch: u64,
    /// The packet id its next outgoing message tries first.
    pub next_packet_id: Option<PacketId>,
    /// Subscriptions and their granted QoS.
    pub subscriptions: Vec<(TopicFilter, QoS)>,
    /// Copies queued or in flight, in order: the message, its QoS, its
    /// RETAIN flag and where it stands.
    pub copies: Vec<(Arc<Message>, QoS, bool, CopyState)>,
    /// Incoming QoS 2 messages awaiting PUBREL (`None`: dropped, still
    /// owing its handshake).
    pub incoming: Vec<(PacketId, Option<Arc<Message>>)>,
}

impl HandedSession {
    /// What a store holds of `session`, its copies' and incoming messages'
    /// bodies taken from `messages` (a copy whose body is missing is left
    /// out; an incoming message's counts as dropped).
    pub fn from_stored(session: &StoredSession, messages: &BTreeMap<MessageId, Arc<Message>>) -> Self {
        let copies = session
            .copies
            .values()
            .filter_map(|copy| Some((messages.get(&copy.message)?.clone(), copy.qos, copy.retain, copy.state)))
            .collect();
        let incoming = session
            .incoming
            .iter()
            .map(|(id, message)| (*id, message.and_then(|m| messages.get(&m).cloned())))
            .collect();
        Self {
            epoch: session.epoch,
            next_packet_id: session.next_packet_id,
            subscriptions: session.subscriptions.iter().map(|(filter, qos)| (filter.clone(), *qos)).collect(),
            copies,
            incoming,
        }
    }
}

/// A broker's place among shards: the filters its own sessions subscribe
/// to, counted, and those the other shards announced.
#[derive(Debug)]
pub(crate) struct ShardRoutes {
    me: ShardId,
    count: u16,
    /// This process's node ([`node_number`]; 0 alone).
    node: u64,
    /// How many of this shard's sessions subscribe to each filter.
    local: HashMap<TopicFilter, u32>,
    /// The other shards' filters.
    remote: SubscriptionTree<ShardId, ()>,
    /// Shards of other nodes reachable now, numbered from `count` up by the
    /// runtime's link, in order.
    peers: Vec<ShardId>,
    /// The shards of other nodes reachable now, by their address.
    addresses: HashMap<ShardAddress, ShardId>,
    /// The filters each shard of another node announced, to drop when it
    /// leaves.
    peer_filters: HashMap<ShardId, HashSet<TopicFilter>>,
    /// The holds each shard of another node put on this shard's
    /// connections, to release when it leaves.
    peer_holds: HashMap<ShardId, HashMap<ConnId, u32>>,
    /// The route changes received from each shard of another node.
    routes_received: HashMap<ShardId, u64>,
    /// Shards of other nodes that joined and have not told all their
    /// routes yet ([`ShardMessage::RoutesTold`]): every message goes to
    /// them meanwhile, so that none is lost to a subscriber there whose
    /// route is still on its way.
    untold: BTreeSet<ShardId>,
    /// Reused buffer for the shards a topic matches.
    matched: Vec<(ShardId, ())>,
    /// At shard 0: the other shards' last figures, by shard.
    reports: Vec<Option<Stats>>,
    /// At shard 0: the most clients connected and sessions held in all
    /// shards together, sampled at each report.
    peaks: (usize, usize),
    /// The latest [`RetainVersion`] tick seen.
    clock: u64,
    /// The last change kept of each topic's retained message (deletions
    /// too, so that an earlier change arriving late is not kept).
    retained: HashMap<TopicName, KeptChange>,
    /// With a store: what this shard's acknowledgements wait for.
    pub(crate) durability: Durability,
}

/// The last change of a topic's retained message a shard kept, and
/// whether this shard's store records the topic.
#[derive(Debug, Clone, Copy)]
struct KeptChange {
    version: RetainVersion,
    recorded: bool,
}

/// Which of a topic's retained messages this broker's store records: the
/// one now kept (`now`) and the one it replaces (`before`).
///
/// Alone, a broker records every change. Sharing a store, the shards of
/// a process each keep every retained message but a shard records a
/// topic only once it made a change of it (or was given it at a
/// restore), and from then on records every later change it keeps, its
/// own or not. So each shard that records a topic last writes what every
/// shard keeps, and the store ends with it whichever shard's batch
/// lands last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// The change now kept is recorded.
    pub(crate) now: bool,
    /// The message it replaces was recorded (by this broker's journal).
    pub(crate) before: bool,
}

impl Recorded {
    /// A broker alone: every change.
    pub(crate) const ALWAYS: Self = Self { now: true, before: true };
}

impl ShardRoutes {
    /// Shard `me` of `count`.
    pub(crate) fn new(me: ShardId, count: u16) -> Self {
        Self {
            me,
            count,
            node: 0,
            local: HashMap::new(),
            remote: SubscriptionTree::new(),
            peers: Vec::new(),
            peer_filters: HashMap::new(),
            peer_holds: HashMap::new(),
            addresses: HashMap::new(),
            routes_received: HashMap::new(),
            untold: BTreeSet::new(),
            matched: Vec::new(),
            reports: Vec::new(),
            peaks: (0, 0),
            clock: 0,
            retained: HashMap::new(),
            durability: Durability::new(count),
        }
    }

    /// The version of a change of `topic`'s retained message made here,
    /// later than every change seen, and what the store records of it:
    /// this change, and the one before if the topic was recorded here.
    pub(crate) fn stamp(&mut self, topic: &TopicName) -> (RetainVersion, Recorded) {
        self.clock += 1;
        let version = RetainVersion { tick: self.clock, node: self.node, shard: self.me };
        let kept = KeptChange { version, recorded: true };
        let before = self.retained.insert(topic.clone(), kept).is_some_and(|k| k.recorded);
        (version, Recorded { now: true, before })
    }

    /// Whether a change of `topic`'s retained message made at another
    /// shard is later than the one kept here (and is kept in its place):
    /// if so, what the store records of it (see [`Recorded`]).
    pub(crate) fn is_latest(&mut self, topic: &TopicName, version: RetainVersion) -> Option<Recorded> {
        self.clock = self.clock.max(version.tick);
        let recorded = match self.retained.get_mut(topic) {
            Some(kept) if kept.version >= version => return None,
            Some(kept) => {
                kept.version = version;
                kept.recorded
            }
            None => {
                self.retained.insert(topic.clone(), KeptChange { version, recorded: false });
                false
            }
        };
        Some(Recorded { now: recorded, before: recorded })
    }

    /// What the store records of a change of `topic`'s retained message
    /// made here without a new version (an expiry): all of it if this
    /// shard records the topic, nothing otherwise.
    pub(crate) fn records(&self, topic: &TopicName) -> Recorded {
        let recorded = self.retained.get(topic).is_some_and(|k| k.recorded);
        Recorded { now: recorded, before: recorded }
    }

    /// `topic`'s retained message, restored from the store, is recorded
    /// by this shard (see [`Recorded`]).
    pub(crate) fn restored(&mut self, topic: TopicName) {
        let version = self.restored_version();
        self.retained.insert(topic, KeptChange { version, recorded: true });
    }

    /// The version of a retained message restored from the store here:
    /// earlier than any change made since.
    pub(crate) fn restored_version(&self) -> RetainVersion {
        RetainVersion { tick: 0, node: self.node, shard: self.me }
    }

    /// This shard.
    pub(crate) fn me(&self) -> ShardId {
        self.me
    }

    /// How many shards this process has.
    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    /// This process is node `node` of a cluster ([`node_number`]).
    pub(crate) fn set_node(&mut self, node: u64) {
        self.node = node;
    }

    /// This process's node ([`node_number`]; 0 alone).
    pub(crate) fn node(&self) -> u64 {
        self.node
    }

    /// The shards of other nodes reachable now.
    pub(crate) fn peers(&self) -> &[ShardId] {
        &self.peers
    }

    /// Whether `shard` is one of another node.
    pub(crate) fn is_peer(&self, shard: ShardId) -> bool {
        shard.0 >= self.count
    }

    /// Shard `peer` of another node, at `address`, is reachable from now
    /// on; whether it was not already.
    pub(crate) fn peer_joined(&mut self, peer: ShardId, address: ShardAddress) -> bool {
        match self.peers.binary_search(&peer) {
            Ok(_) => false,
            Err(at) if self.is_peer(peer) => {
                self.peers.insert(at, peer);
                self.addresses.insert(address, peer);
                self.untold.insert(peer);
                true
            }
            Err(_) => false,
        }
    }

    /// This shard's address.
    pub(crate) fn address(&self) -> ShardAddress {
        ShardAddress { node: self.node, shard: self.me }
    }

    /// The number here of the shard at `address`: one of this process, or
    /// of another node while it is reachable.
    pub(crate) fn resolve(&self, address: ShardAddress) -> Option<ShardId> {
        match address.node == self.node {
            true => (address.shard.0 < self.count).then_some(address.shard),
            false => self.addresses.get(&address).copied(),
        }
    }

    /// Whether `shard` (this process's, or one of another node reachable
    /// now) is the home shard of `client` in its own node.
    pub(crate) fn is_home(&self, shard: ShardId, client: &str) -> bool {
        if !self.is_peer(shard) {
            return home_shard(client, self.count) == shard;
        }
        let Some(address) = self.addresses.iter().find(|&(_, &id)| id == shard).map(|(&address, _)| address) else {
            return false;
        };
        let count = self.addresses.keys().filter(|other| other.node == address.node).count();
        home_shard(client, u16::try_from(count).unwrap_or(u16::MAX)) == address.shard
    }

    /// Shard `peer` of another node is gone: its routes go with it. The
    /// connections it held, once per hold, to release.
    pub(crate) fn peer_left(&mut self, peer: ShardId) -> Vec<ConnId> {
        if let Ok(at) = self.peers.binary_search(&peer) {
            self.peers.remove(at);
        }
        self.addresses.retain(|_, &mut id| id != peer);
        self.untold.remove(&peer);
        for filter in self.peer_filters.remove(&peer).unwrap_or_default() {
            self.remote.unsubscribe(&filter, peer);
        }
        let holds = self.peer_holds.remove(&peer).unwrap_or_default();
        holds.into_iter().flat_map(|(conn, n)| std::iter::repeat_n(conn, usize::try_from(n).unwrap_or(0))).collect()
    }

    /// Shard `from` holds (`held`) or releases this shard's connection
    /// `conn`; whether to apply it. A shard of another node's holds are
    /// counted, to release when it leaves; once it left, it holds nothing
    /// and its late releases are not applied.
    pub(crate) fn holds(&mut self, from: ShardId, conn: ConnId, held: bool) -> bool {
        if !self.is_peer(from) {
            return true;
        }
        if self.peers.binary_search(&from).is_err() {
            return false;
        }
        let holds = self.peer_holds.entry(from).or_default();
        match (held, holds.get_mut(&conn)) {
            (true, Some(n)) => *n += 1,
            (true, None) => {
                holds.insert(conn, 1);
            }
            (false, Some(n)) if *n > 1 => *n -= 1,
            (false, Some(_)) => {
                holds.remove(&conn);
            }
            (false, None) => return false,
        }
        true
    }

    /// This shard's own filters, to announce to a shard that joined.
    pub(crate) fn local_filters(&self) -> impl Iterator<Item = &TopicFilter> {
        self.local.keys()
    }

    /// The version of the retained message kept for `topic`, to hand it
    /// to a shard that joined.
    pub(crate) fn kept_version(&self, topic: &TopicName) -> Option<RetainVersion> {
        self.retained.get(topic).map(|kept| kept.version)
    }

    /// Keeps shard `from`'s figures, and samples the peaks of the totals
    /// with this shard's `own`.
    pub(crate) fn report(&mut self, from: ShardId, stats: Stats, own: Stats) {
        let at = usize::from(from.0);
        if self.reports.len() <= at {
            self.reports.resize(at + 1, None);
        }
        self.reports[at] = Some(stats);
        let totals = self.totals(own);
        self.peaks = (totals.clients_connected_max, totals.sessions_max);
    }

    /// `own` figures with every other shard's last ones added: the totals
    /// of all shards.
    pub(crate) fn totals(&self, own: Stats) -> Stats {
        let mut totals = own;
        for stats in self.reports.iter().flatten() {
            totals.absorb(stats);
        }
        let (clients, sessions) = self.peaks;
        totals.clients_connected_max = totals.clients_connected_max.max(clients).max(totals.clients_connected);
        totals.sessions_max = totals.sessions_max.max(sessions).max(totals.sessions);
        totals
    }

    /// Every shard but this one: this process's, then those of other
    /// nodes.
    pub(crate) fn others(&self) -> impl Iterator<Item = ShardId> + use<> {
        let me = self.me;
        let peers = self.peers.clone();
        (0..self.count).map(ShardId).filter(move |&s| s != me).chain(peers)
    }

    /// A local session subscribed to `filter`; whether it is the first.
    pub(crate) fn subscribed(&mut self, filter: &TopicFilter) -> bool {
        let count = self.local.entry(filter.clone()).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// A local session no longer subscribes to `filter`; whether it was
    /// the last.
    pub(crate) fn unsubscribed(&mut self, filter: &TopicFilter) -> bool {
        match self.local.get_mut(filter) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                self.local.remove(filter);
                true
            }
            None => false,
        }
    }

    /// One more route change came from `from`, a shard of another node:
    /// how many so far, to say so ([`ShardMessage::Routed`]).
    pub(crate) fn route_received(&mut self, from: ShardId) -> u64 {
        let count = self.routes_received.entry(from).or_insert(0);
        *count += 1;
        *count
    }

    /// Shard `from` of another node told all its routes: from now on it
    /// gets only the messages they match.
    pub(crate) fn routes_told(&mut self, from: ShardId) {
        self.untold.remove(&from);
    }

    /// Takes in shard `from`'s route change; one from a shard of another
    /// node that is not reachable (it left) is ignored.
    pub(crate) fn learn(&mut self, from: ShardId, filter: &TopicFilter, routed: bool) {
        if self.is_peer(from) {
            if self.peers.binary_search(&from).is_err() {
                return;
            }
            let filters = self.peer_filters.entry(from).or_default();
            if routed {
                filters.insert(filter.clone());
            } else {
                filters.remove(filter);
            }
        }
        if routed {
            self.remote.subscribe(filter, from, ());
        } else {
            self.remote.unsubscribe(filter, from);
        }
    }

    /// The other shards a message on `topic` goes to, each once, in order,
    /// into `out`: those with a matching route and those of other nodes
    /// that have not told their routes yet, or all of them for a retained
    /// message.
    pub(crate) fn destinations(&mut self, topic: &TopicName, retain: bool, out: &mut Vec<ShardId>) {
        out.clear();
        if retain {
            out.extend(self.others());
            return;
        }
        self.matched.clear();
        self.remote.matches(topic, &mut self.matched);
        out.extend(self.matched.iter().map(|&(shard, ())| shard));
        out.extend(&self.untold);
        out.sort_unstable();
        out.dedup();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).unwrap()
    }

    fn name(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    #[test]
    fn home_shards_are_stable_and_spread() {
        assert_eq!(home_shard("anything", 1), ShardId(0));
        assert_eq!(home_shard("anything", 0), ShardId(0));
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(home_shard("a", 7), ShardId((0xaf63_dc4c_8601_ec8c_u64 % 7) as u16));
        let mut per_shard = [0u32; 4];
        for n in 0..4000 {
            per_shard[usize::from(home_shard(&format!("device-{n}"), 4).0)] += 1;
        }
        assert!(per_shard.iter().all(|&n| (800..1200).contains(&n)), "{per_shard:?}");
    }

    /// The home is that of what the broker will take as the client id.
    #[test]
    fn a_connection_is_placed_by_its_client_id_or_its_user_name() {
        let connect = |id: &str, user: Option<&str>| {
            let connect = crate::sim::ClientOptions::new(id).connect_packet();
            let Packet::Connect(mut connect) = connect else { unreachable!("a CONNECT") };
            connect.username = user.map(Into::into);
            let mut bytes = BytesMut::new();
            Packet::Connect(connect).encode(&mut bytes);
            bytes
        };
        let (id, user) = ("device-1", "owner-7");
        assert_ne!(home_shard(id, 5), home_shard(user, 5));
        let by_id = HomeKey::of(false, &Identity::Connect);
        let by_user = HomeKey::of(true, &Identity::Connect);
        let bytes = connect(id, Some(user));
        assert_eq!(place(&bytes[..bytes.len() - 1], 5, 1 << 20, &by_id), Placement::NeedMore);
        assert_eq!(place(&bytes, 5, 1 << 20, &by_id), Placement::Home(home_shard(id, 5)));
        assert_eq!(place(&bytes, 5, 1 << 20, &by_user), Placement::Home(home_shard(user, 5)));
        // No user name, or an empty client id: the broker refuses or
        // assigns an id, at shard 0.
        assert_eq!(place(&connect(id, None), 5, 1 << 20, &by_user), Placement::Home(ShardId(0)));
        assert_eq!(place(&connect("", None), 5, 1 << 20, &by_id), Placement::Home(ShardId(0)));
        // A certificate's name is known before the CONNECT.
        let named = HomeKey::of(true, &Identity::Certificate(Some(user.into())));
        assert_eq!(named.known_home(5), Some(home_shard(user, 5)));
        assert_eq!(HomeKey::of(true, &Identity::Certificate(None)).known_home(5), Some(ShardId(0)));
        assert_eq!(HomeKey::of(false, &Identity::Certificate(Some(user.into()))).known_home(5), None);
    }

    #[test]
    fn a_filter_is_announced_by_its_first_subscriber_and_withdrawn_by_its_last() {
        let mut routes = ShardRoutes::new(ShardId(1), 3);
        assert_eq!(routes.others().collect::<Vec<_>>(), [ShardId(0), ShardId(2)]);
        assert!(routes.subscribed(&filter("a/+")));
        assert!(!routes.subscribed(&filter("a/+")));
        assert!(!routes.unsubscribed(&filter("a/+")));
        assert!(routes.unsubscribed(&filter("a/+")));
        assert!(!routes.unsubscribed(&filter("a/+")));
    }

    #[test]
    fn totals_add_up_what_shards_hold_but_not_the_retained_copies_each_has() {
        let stats = |clients: usize, retained: usize, received: u64| {
            let mut stats = Stats { clients_connected: clients, sessions: clients, retained, ..Stats::default() };
            stats.clients_connected_max = clients;
            stats.counts.publish_received = [received, 0, 1];
            stats
        };
        let mut routes = ShardRoutes::new(ShardId(0), 3);
        routes.report(ShardId(1), stats(4, 7, 10), stats(2, 7, 1));
        routes.report(ShardId(2), stats(1, 7, 100), stats(2, 7, 1));
        let totals = routes.totals(stats(2, 7, 1));
        assert_eq!((totals.clients_connected, totals.sessions, totals.retained), (7, 7, 7));
        assert_eq!(totals.counts.publish_received, [111, 0, 3]);
        // Clients leave shard 1: the peak stays.
        routes.report(ShardId(1), stats(0, 7, 10), stats(2, 7, 1));
        let totals = routes.totals(stats(2, 7, 1));
        assert_eq!((totals.clients_connected, totals.clients_connected_max, totals.sessions_max), (3, 7, 7));
    }

    #[test]
    fn shards_of_other_nodes_route_while_they_are_reachable() {
        let mut routes = ShardRoutes::new(ShardId(0), 2);
        // A route from a shard that has not joined is not taken.
        routes.learn(ShardId(7), &filter("a/#"), true);
        let mut out = Vec::new();
        routes.destinations(&name("a/b"), false, &mut out);
        assert!(out.is_empty());
        routes.set_node(1);
        let elsewhere = ShardAddress { node: 9, shard: ShardId(0) };
        assert!(routes.peer_joined(ShardId(7), elsewhere));
        assert!(!routes.peer_joined(ShardId(7), elsewhere));
        let here = ShardAddress { node: 1, shard: ShardId(1) };
        assert!(!routes.peer_joined(ShardId(1), here), "a shard of this process is not a peer");
        // Each is found by its address.
        assert_eq!(routes.resolve(elsewhere), Some(ShardId(7)));
        assert_eq!(routes.resolve(here), Some(ShardId(1)));
        assert_eq!(routes.resolve(ShardAddress { node: 1, shard: ShardId(2) }), None);
        routes.learn(ShardId(7), &filter("a/#"), true);
        routes.destinations(&name("a/b"), false, &mut out);
        assert_eq!(out, [ShardId(7)]);
        routes.destinations(&name("x"), true, &mut out);
        assert_eq!(out, [ShardId(1), ShardId(7)]);
        // It holds a connection twice and lets go once.
        assert!(routes.holds(ShardId(7), ConnId(3), true));
        assert!(routes.holds(ShardId(7), ConnId(3), true));
        assert!(routes.holds(ShardId(7), ConnId(3), false));
        assert!(!routes.holds(ShardId(7), ConnId(4), false), "a release of nothing held");
        assert!(routes.holds(ShardId(1), ConnId(4), false), "a shard of this process is trusted");
        // Gone, its routes go with it, its hold is released, and a late
        // route or release is not taken.
        assert_eq!(routes.peer_left(ShardId(7)), [ConnId(3)]);
        assert_eq!(routes.resolve(elsewhere), None);
        assert!(!routes.holds(ShardId(7), ConnId(3), false));
        routes.destinations(&name("a/b"), false, &mut out);
        assert!(out.is_empty());
        routes.learn(ShardId(7), &filter("a/#"), true);
        routes.destinations(&name("a/b"), false, &mut out);
        assert!(out.is_empty());
        routes.destinations(&name("x"), true, &mut out);
        assert_eq!(out, [ShardId(1)]);
    }

    #[test]
    fn a_shard_of_another_node_gets_every_message_until_it_told_its_routes() {
        let mut routes = ShardRoutes::new(ShardId(0), 2);
        routes.set_node(1);
        let elsewhere = ShardAddress { node: 9, shard: ShardId(0) };
        assert!(routes.peer_joined(ShardId(7), elsewhere));
        let mut out = Vec::new();
        routes.destinations(&name("a/b"), false, &mut out);
        assert_eq!(out, [ShardId(7)], "its routes are on their way");
        routes.learn(ShardId(7), &filter("a/#"), true);
        routes.routes_told(ShardId(7));
        routes.destinations(&name("a/b"), false, &mut out);
        assert_eq!(out, [ShardId(7)]);
        routes.destinations(&name("x"), false, &mut out);
        assert!(out.is_empty(), "told, it gets what its routes match");
        // Joined again under a new number, it is sent everything again
        // until it says so again.
        routes.peer_left(ShardId(7));
        assert!(routes.peer_joined(ShardId(8), elsewhere));
        routes.destinations(&name("x"), false, &mut out);
        assert_eq!(out, [ShardId(8)]);
        routes.peer_left(ShardId(8));
        routes.destinations(&name("x"), false, &mut out);
        assert!(out.is_empty(), "gone, it gets nothing");
    }

    #[test]
    fn messages_go_once_to_each_matching_shard_and_retained_ones_everywhere() {
        let mut routes = ShardRoutes::new(ShardId(0), 4);
        routes.learn(ShardId(2), &filter("a/#"), true);
        routes.learn(ShardId(2), &filter("a/b"), true);
        routes.learn(ShardId(3), &filter("+/c"), true);
        let mut out = Vec::new();
        routes.destinations(&name("a/b"), false, &mut out);
        assert_eq!(out, [ShardId(2)]);
        routes.destinations(&name("a/c"), false, &mut out);
        assert_eq!(out, [ShardId(2), ShardId(3)]);
        routes.destinations(&name("x/y"), false, &mut out);
        assert!(out.is_empty());
        routes.destinations(&name("x/y"), true, &mut out);
        assert_eq!(out, [ShardId(1), ShardId(2), ShardId(3)]);
        routes.learn(ShardId(2), &filter("a/#"), false);
        routes.destinations(&name("a/c"), false, &mut out);
        assert_eq!(out, [ShardId(3)]);
    }
}
