//! The durable state as plain data, and the operations that change it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::codec::LastWill;
use crate::message::Message;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{ClientId, PacketId, QoS};

/// A stored message body's key. Retained entries, queued and in-flight
/// copies and unreleased incoming messages refer to it, so a message that
/// reaches many sessions is stored once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub u64);

/// Where a copy on its way to a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    /// Waiting behind the in-flight window, or for the client to return,
    /// with the packet id it will be sent under if it was given one when
    /// it was queued (as the broker gives a QoS 1/2 copy while it has a
    /// free id). The client may have seen it under that id before a
    /// crash: it is sent under the same one again.
    Queued(Option<PacketId>),
    /// Sent under this packet id: PUBACK (QoS 1) or PUBREC (QoS 2) awaited.
    Sent(PacketId),
    /// QoS 2, PUBREC received and PUBREL sent: PUBCOMP awaited.
    Released(PacketId),
}

impl CopyState {
    /// The packet id the copy holds: the one it was sent under, or given
    /// when it was queued.
    pub fn packet_id(self) -> Option<PacketId> {
        match self {
            Self::Queued(id) => id,
            Self::Sent(id) | Self::Released(id) => Some(id),
        }
    }

    /// Whether it waits to be sent.
    pub fn is_queued(self) -> bool {
        matches!(self, Self::Queued(_))
    }
}

/// One copy of a message for a persistent session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCopy {
    /// The message.
    pub message: MessageId,
    /// QoS of this copy.
    pub qos: QoS,
    /// RETAIN flag of this copy (a retained message sent on SUBSCRIBE).
    pub retain: bool,
    /// Queued or in flight.
    pub state: CopyState,
}

/// A persistent (clean session 0) session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredSession {
    /// The user name of the connection that last bound it.
    pub username: Option<Arc<str>>,
    /// When its client went away, in Unix seconds; `None` while connected.
    pub offline_since: Option<u64>,
    /// The packet id its next outgoing message tries first; `None` for
    /// the first, 1.
    pub next_packet_id: Option<PacketId>,
    /// The ownership epoch of the connection that last took it, in a
    /// cluster (0: not known; see docs/cluster.md).
    pub epoch: u64,
    /// Subscriptions and their granted QoS.
    pub subscriptions: BTreeMap<TopicFilter, QoS>,
    /// Copies queued or in flight, by a per-session sequence number that
    /// gives their order.
    pub copies: BTreeMap<u64, StoredCopy>,
    /// Incoming QoS 2 messages acknowledged with PUBREC, awaiting PUBREL;
    /// `None` for one that was dropped but still owes its handshake.
    pub incoming: BTreeMap<PacketId, Option<MessageId>>,
}

/// How far a node's inbox is read for one of its shards, of what one
/// other node wrote (see [`StoreOp::InboxRead`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InboxMark {
    /// The writing node's run.
    pub run: u64,
    /// Its last batch read.
    pub seq: u64,
}

impl InboxMark {
    /// Whether batch `seq` of run `run` is read already.
    pub fn covers(self, run: u64, seq: u64) -> bool {
        run == self.run && seq != 0 && seq <= self.seq
    }
}

/// One change to the durable state.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// Store a message body under `id` (before anything refers to it).
    Message {
        /// Its key.
        id: MessageId,
        /// The message.
        message: Arc<Message>,
    },
    /// Nothing refers to the message any more.
    DropMessage {
        /// Its key.
        id: MessageId,
    },
    /// The retained message for `topic` is now `message`.
    Retain {
        /// The topic.
        topic: TopicName,
        /// The message.
        message: MessageId,
    },
    /// `topic` no longer has a retained message.
    DropRetained {
        /// The topic.
        topic: TopicName,
    },
    /// Create or update a persistent session's own fields; what it holds
    /// (subscriptions, copies, incoming messages) is kept.
    Session {
        /// The client.
        client: ClientId,
        /// User name of the connection that bound it.
        username: Option<Arc<str>>,
        /// When its client went away, `None` while connected.
        offline_since: Option<u64>,
        /// The ownership epoch of the connection that last took it (0:
        /// not known, outside a cluster).
        epoch: u64,
    },
    /// Remove a session and everything it holds.
    DropSession {
        /// The client.
        client: ClientId,
    },
    /// Add or replace a subscription.
    Subscribe {
        /// The client.
        client: ClientId,
        /// The filter.
        filter: TopicFilter,
        /// Granted QoS.
        qos: QoS,
    },
    /// Remove a subscription.
    Unsubscribe {
        /// The client.
        client: ClientId,
        /// The filter.
        filter: TopicFilter,
    },
    /// Add or replace a copy. A copy given a packet id it did not hold
    /// (when it was queued, or sent without one) also moves the session's
    /// next packet id past it.
    Copy {
        /// The client.
        client: ClientId,
        /// The copy's sequence number in its session.
        seq: u64,
        /// The copy.
        copy: StoredCopy,
    },
    /// Remove a copy (completed, expired or discarded).
    DropCopy {
        /// The client.
        client: ClientId,
        /// The copy's sequence number.
        seq: u64,
    },
    /// An incoming QoS 2 message awaits PUBREL. Kept in the client's
    /// session if it has a stored one; otherwise (a clean session's
    /// message bound for a persistent session or the retained store) kept
    /// apart and routed once at restart.
    Incoming {
        /// The publisher.
        client: ClientId,
        /// Its packet id.
        packet_id: PacketId,
        /// The message, `None` if it was dropped.
        message: Option<MessageId>,
    },
    /// PUBREL arrived (or the session ended): the incoming message is gone.
    DropIncoming {
        /// The publisher.
        client: ClientId,
        /// Its packet id.
        packet_id: PacketId,
    },
    /// A connected client's will, to be published at restart if the
    /// broker stops without closing its connection.
    Will {
        /// The client.
        client: ClientId,
        /// The will.
        will: LastWill,
    },
    /// The client's connection ended: its will is published or forgotten.
    DropWill {
        /// The client.
        client: ClientId,
    },
    /// In a cluster, how far this node's inbox is read for shard `shard`:
    /// the effects of every frame that run `run` of node `node` wrote for
    /// it, up to its batch `seq`, are in this batch or an earlier one. A
    /// node started again (or one taking a dead node over) skips those
    /// frames when it reads the inbox again, so that no message stored
    /// here is delivered twice.
    InboxRead {
        /// The writing node's name.
        node: String,
        /// Its run.
        run: u64,
        /// The shard the frames were for, in this node's numbering.
        shard: u16,
        /// The last batch of that run read for the shard.
        seq: u64,
    },
}

impl StoreOp {
    /// The client the operation is about, if one.
    pub fn client(&self) -> Option<&ClientId> {
        match self {
            Self::Message { .. }
            | Self::DropMessage { .. }
            | Self::Retain { .. }
            | Self::DropRetained { .. }
            | Self::InboxRead { .. } => None,
            Self::Session { client, .. }
            | Self::DropSession { client }
            | Self::Subscribe { client, .. }
            | Self::Unsubscribe { client, .. }
            | Self::Copy { client, .. }
            | Self::DropCopy { client, .. }
            | Self::Incoming { client, .. }
            | Self::DropIncoming { client, .. }
            | Self::Will { client, .. }
            | Self::DropWill { client } => Some(client),
        }
    }
}

/// The changes of one turn of the broker, to be committed atomically.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreBatch {
    /// Batches are numbered from 1, in the order they must be applied.
    pub seq: u64,
    /// The changes, in order.
    pub ops: Vec<StoreOp>,
}

/// Everything a store holds: the result of applying every committed batch
/// to an empty state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredState {
    /// Message bodies by key.
    pub messages: BTreeMap<MessageId, Arc<Message>>,
    /// The retained message of each topic.
    pub retained: BTreeMap<TopicName, MessageId>,
    /// Persistent sessions by client id.
    pub sessions: BTreeMap<ClientId, StoredSession>,
    /// Incoming QoS 2 messages of clients without a stored session,
    /// awaiting PUBREL.
    pub unreleased: BTreeMap<(ClientId, PacketId), MessageId>,
    /// Wills of the clients connected when the state was last committed.
    pub wills: BTreeMap<ClientId, LastWill>,
    /// How far the inbox is read ([`StoreOp::InboxRead`]): by (writing
    /// node, shard), its run and last batch read.
    pub inbox_read: BTreeMap<(String, u16), InboxMark>,
    /// The sequence number of the last batch applied.
    pub last_batch: u64,
}

impl StoredState {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.retained.is_empty()
            && self.sessions.is_empty()
            && self.unreleased.is_empty()
            && self.wills.is_empty()
    }

    /// Applies a committed batch.
    pub fn apply_batch(&mut self, batch: &StoreBatch) {
        for op in &batch.ops {
            self.apply(op);
        }
        self.last_batch = self.last_batch.max(batch.seq);
    }

    /// Applies one change. Changes to a session that is not stored (other
    /// than creating it) change nothing, as a store ignores them.
    pub fn apply(&mut self, op: &StoreOp) {
        match op {
            StoreOp::Message { id, message } => {
                self.messages.insert(*id, message.clone());
            }
            StoreOp::DropMessage { id } => {
                self.messages.remove(id);
            }
            StoreOp::Retain { topic, message } => {
                self.retained.insert(topic.clone(), *message);
            }
            StoreOp::DropRetained { topic } => {
                self.retained.remove(topic);
            }
            StoreOp::Session { client, username, offline_since, epoch } => {
                let session = self.sessions.entry(client.clone()).or_default();
                session.username.clone_from(username);
                session.offline_since = *offline_since;
                session.epoch = *epoch;
            }
            StoreOp::DropSession { client } => {
                self.sessions.remove(client);
            }
            StoreOp::Subscribe { client, filter, qos } => {
                if let Some(session) = self.sessions.get_mut(client) {
                    session.subscriptions.insert(filter.clone(), *qos);
                }
            }
            StoreOp::Unsubscribe { client, filter } => {
                if let Some(session) = self.sessions.get_mut(client) {
                    session.subscriptions.remove(filter);
                }
            }
            StoreOp::Copy { client, seq, copy } => {
                if let Some(session) = self.sessions.get_mut(client) {
                    // A copy is given the session's next id, or the first
                    // free one after it: the id after it is next. It keeps
                    // its id from queued to sent to released.
                    let held = session.copies.get(seq).and_then(|c| c.state.packet_id());
                    if let Some(id) = copy.state.packet_id().filter(|id| held != Some(*id)) {
                        session.next_packet_id = Some(id.next()).filter(|next| *next != PacketId::MIN);
                    }
                    session.copies.insert(*seq, *copy);
                }
            }
            StoreOp::DropCopy { client, seq } => {
                if let Some(session) = self.sessions.get_mut(client) {
                    session.copies.remove(seq);
                }
            }
            StoreOp::Incoming { client, packet_id, message } => match self.sessions.get_mut(client) {
                Some(session) => {
                    session.incoming.insert(*packet_id, *message);
                }
                None => {
                    if let Some(message) = message {
                        self.unreleased.insert((client.clone(), *packet_id), *message);
                    }
                }
            },
            StoreOp::DropIncoming { client, packet_id } => {
                if let Some(session) = self.sessions.get_mut(client) {
                    session.incoming.remove(packet_id);
                }
                self.unreleased.remove(&(client.clone(), *packet_id));
            }
            StoreOp::Will { client, will } => {
                self.wills.insert(client.clone(), will.clone());
            }
            StoreOp::DropWill { client } => {
                self.wills.remove(client);
            }
            StoreOp::InboxRead { node, run, shard, seq } => {
                self.inbox_read.insert((node.clone(), *shard), InboxMark { run: *run, seq: *seq });
            }
        }
    }

    /// Every message key referred to by a retained entry, a copy or an
    /// incoming message, each once per reference.
    pub fn references(&self) -> impl Iterator<Item = MessageId> + '_ {
        let retained = self.retained.values().copied();
        let sessions = self
            .sessions
            .values()
            .flat_map(|s| s.copies.values().map(|c| c.message).chain(s.incoming.values().filter_map(|m| *m)));
        retained.chain(sessions).chain(self.unreleased.values().copied())
    }
}
