//! Handing what a store holds to whoever rebuilds from it, record by
//! record: a store streams its rows into a [`Restore`] without first
//! building a [`StoredState`] of everything, so a large store is not held
//! twice at start.

use std::sync::Arc;

use super::{InboxMark, MessageId, StoredCopy, StoredSession, StoredState};
use crate::codec::LastWill;
use crate::message::Message;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{ClientId, PacketId, QoS};

/// A persistent session's own fields; what it holds comes in rows of
/// their own ([`Restore::subscription`], [`Restore::copy`],
/// [`Restore::incoming`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionFields {
    /// The user name of the connection that last bound it.
    pub username: Option<Arc<str>>,
    /// When its client went away, in Unix seconds; `None` while connected.
    pub offline_since: Option<u64>,
    /// The packet id its next outgoing message tries first.
    pub next_packet_id: Option<PacketId>,
    /// The ownership epoch of the connection that last took it (0: not
    /// known).
    pub epoch: u64,
}

impl From<&StoredSession> for SessionFields {
    fn from(s: &StoredSession) -> Self {
        Self {
            username: s.username.clone(),
            offline_since: s.offline_since,
            next_packet_id: s.next_packet_id,
            epoch: s.epoch,
        }
    }
}

/// Receives a store's contents. A store calls it in this order: every
/// message body before anything that refers to it; a session before its
/// rows; a session's copies in the order of their sequence numbers. Rows
/// of a session that was not given are ignored, as a store ignores changes
/// to a session it does not hold.
pub trait Restore {
    /// The number of the last batch the store holds.
    fn last_batch(&mut self, seq: u64);
    /// A message body, stored under `id`.
    fn message(&mut self, id: MessageId, message: Arc<Message>);
    /// The retained message of `topic`.
    fn retained(&mut self, topic: TopicName, message: MessageId);
    /// A persistent session.
    fn session(&mut self, client: &str, fields: SessionFields);
    /// One of the session's subscriptions.
    fn subscription(&mut self, client: &str, filter: TopicFilter, qos: QoS);
    /// A copy queued or in flight for the session.
    fn copy(&mut self, client: &str, seq: u64, copy: StoredCopy);
    /// An incoming QoS 2 message of the session awaiting PUBREL.
    fn incoming(&mut self, client: &str, packet_id: PacketId, message: Option<MessageId>);
    /// An incoming QoS 2 message of a client without a stored session.
    fn unreleased(&mut self, client: &str, packet_id: PacketId, message: MessageId);
    /// The will of a client connected when the state was last committed.
    fn will(&mut self, client: &str, will: LastWill);
    /// How far the inbox is read for `shard` of what `node` wrote
    /// ([`StoreOp::InboxRead`](super::StoreOp::InboxRead)).
    fn inbox_read(&mut self, node: &str, shard: u16, mark: InboxMark);
}

impl Restore for StoredState {
    fn last_batch(&mut self, seq: u64) {
        self.last_batch = seq;
    }

    fn message(&mut self, id: MessageId, message: Arc<Message>) {
        self.messages.insert(id, message);
    }

    fn retained(&mut self, topic: TopicName, message: MessageId) {
        self.retained.insert(topic, message);
    }

    fn session(&mut self, client: &str, fields: SessionFields) {
        let SessionFields { username, offline_since, next_packet_id, epoch } = fields;
        let session = StoredSession { username, offline_since, next_packet_id, epoch, ..StoredSession::default() };
        self.sessions.insert(ClientId::new(client), session);
    }

    fn subscription(&mut self, client: &str, filter: TopicFilter, qos: QoS) {
        if let Some(session) = self.sessions.get_mut(client) {
            session.subscriptions.insert(filter, qos);
        }
    }

    fn copy(&mut self, client: &str, seq: u64, copy: StoredCopy) {
        if let Some(session) = self.sessions.get_mut(client) {
            session.copies.insert(seq, copy);
        }
    }

    fn incoming(&mut self, client: &str, packet_id: PacketId, message: Option<MessageId>) {
        if let Some(session) = self.sessions.get_mut(client) {
            session.incoming.insert(packet_id, message);
        }
    }

    fn unreleased(&mut self, client: &str, packet_id: PacketId, message: MessageId) {
        self.unreleased.insert((ClientId::new(client), packet_id), message);
    }

    fn will(&mut self, client: &str, will: LastWill) {
        self.wills.insert(ClientId::new(client), will);
    }

    fn inbox_read(&mut self, node: &str, shard: u16, mark: InboxMark) {
        self.inbox_read.insert((node.to_owned(), shard), mark);
    }
}

impl StoredState {
    /// Hands everything to `sink`, in the order [`Restore`] asks for,
    /// freeing it on the way.
    pub fn replay(self, sink: &mut (impl Restore + ?Sized)) {
        let Self { messages, retained, sessions, unreleased, wills, inbox_read, last_batch } = self;
        sink.last_batch(last_batch);
        for (id, message) in messages {
            sink.message(id, message);
        }
        for (topic, id) in retained {
            sink.retained(topic, id);
        }
        for (client, session) in sessions {
            let client = client.as_str();
            sink.session(client, SessionFields::from(&session));
            for (filter, qos) in session.subscriptions {
                sink.subscription(client, filter, qos);
            }
            for (seq, copy) in session.copies {
                sink.copy(client, seq, copy);
            }
            for (packet_id, message) in session.incoming {
                sink.incoming(client, packet_id, message);
            }
        }
        for ((client, packet_id), id) in unreleased {
            sink.unreleased(client.as_str(), packet_id, id);
        }
        for (client, will) in wills {
            sink.will(client.as_str(), will);
        }
        for ((node, shard), mark) in inbox_read {
            sink.inbox_read(&node, shard, mark);
        }
    }
}
