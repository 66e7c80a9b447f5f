//! The broker's side of persistence (see [`persistence`](crate::persistence)):
//! it records what changes durable state, holds the packets that promise
//! it until the store says it is on disk, and takes back what a store
//! held at start.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::trace;

use super::{Broker, ConnState, Connection};
use crate::codec::LastWill;
use crate::message::Message;
use crate::persistence::journal::Journal;
use crate::persistence::{CopyState, InboxMark, StoreOp, StoredCopy, StoredSession, StoredState};
use crate::session::{Outgoing, Session, SessionKey, Stage};
use crate::shard::Released;
use crate::time::Now;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{ClientId, ConnId, PacketId, QoS};

/// A connection's output waiting for store batches.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    /// The batch its output of this turn waits for (0: none).
    needs_batch: u64,
    /// Output of earlier turns, in order: each part goes once the batch it
    /// names is durable.
    parts: VecDeque<(u64, Bytes)>,
}

impl Waiting {
    /// Nothing waits, and nothing of this turn is to.
    fn is_empty(&self) -> bool {
        self.needs_batch == 0 && self.parts.is_empty()
    }
}

/// Retained messages under `$SYS` are the broker's own figures, published
/// afresh after a restart: never stored, as in Mosquitto.
fn is_stored_topic(topic: &TopicName) -> bool {
    !topic.as_str().starts_with("$SYS")
}

/// Whole seconds since the epoch, as the store keeps times; a clock
/// before 1970 counts as 0.
pub(super) fn seconds(now: Now) -> u64 {
    let secs = now.unix.as_secs_f64();
    if secs > 0.0 { secs as u64 } else { 0 }
}

impl Broker {
    /// The client id of session `key` if the store keeps it (persistence
    /// is on and the session outlives its connection).
    fn stored_client(&self, key: SessionKey) -> Option<ClientId> {
        self.journal.as_ref()?;
        self.sessions.get(key).filter(|s| !s.clean).map(|s| s.client_id.clone())
    }

    /// How many promising changes were recorded so far this turn.
    pub(super) fn promises(&self) -> usize {
        self.journal.as_ref().map_or(0, Journal::promises)
    }

    /// `id`'s output from now on waits for the batch being gathered.
    pub(super) fn hold_output(&mut self, id: ConnId) {
        if let Some(batch) = self.journal.as_ref().map(Journal::pending_batch) {
            self.hold_output_for(id, batch);
        }
    }

    /// `id`'s output from now on waits for batch `batch`, unless it is
    /// durable already.
    pub(super) fn hold_output_for(&mut self, id: ConnId, batch: u64) {
        if self.journal.as_ref().is_some_and(|j| !j.is_durable(batch))
            && let Some(conn) = self.conns.get_mut(&id)
        {
            let waiting = conn.waiting.get_or_insert_default();
            waiting.needs_batch = waiting.needs_batch.max(batch);
        }
    }

    /// Gives `out`, bound for session `key`, its place among the stored
    /// copies if the store keeps the session; whether it is new there.
    pub(super) fn stamp(&mut self, key: SessionKey, out: &mut Outgoing) -> bool {
        if self.stored_client(key).is_none() {
            return false;
        }
        self.sessions.get_mut(key).is_some_and(|s| s.stamp(out))
    }

    /// Records copy `out` of session `key` in `state`; `fresh` if the store
    /// does not hold it yet.
    /// `new_id`: the copy was just given its packet id.
    pub(super) fn record_copy(&mut self, key: SessionKey, out: &Outgoing, state: CopyState, fresh: bool, new_id: bool) {
        let Some(client) = self.stored_client(key) else { return };
        let Some(journal) = self.journal.as_mut() else { return };
        let message = match (fresh, journal.stored_id(&out.message)) {
            (false, Some(id)) => id,
            _ => journal.refer(&out.message),
        };
        let copy = StoredCopy { message, qos: out.qos, retain: out.retain, state };
        let op = StoreOp::Copy { client, seq: out.seq, copy };
        // A new copy is what its publisher's acknowledgement promises; a
        // QoS 2 copy's packet id, given when it is sent, is what its
        // receiver will hold (see `send_new`). PUBREL lets the receiver
        // forget the id: were the copy restored as unanswered, its PUBLISH
        // sent again would be a new message there, so PUBREL waits for
        // the released state. Any other move of a copy promises nothing:
        // one queued with its id is sent under it.
        let released = matches!(state, CopyState::Released(_));
        if fresh || released || (new_id && out.qos == QoS::ExactlyOnce && matches!(state, CopyState::Sent(_))) {
            journal.promise(op);
        } else {
            journal.push(op);
        }
    }

    /// Records the copy just queued for session `key`, new to the store.
    pub(super) fn record_queued(&mut self, key: SessionKey) {
        if self.stored_client(key).is_none() {
            return;
        }
        let Some(out) = self.sessions.get(key).and_then(|s| s.queued().last()).filter(|o| o.seq != 0).cloned() else {
            return;
        };
        self.record_copy(key, &out, CopyState::Queued(out.id), true, out.id.is_some());
        // The batch that records its packet id, which its PUBLISH will
        // wait for (see `send_new`).
        let batch = self.journal.as_ref().map_or(0, Journal::pending_batch);
        if let Some(last) = self.sessions.get_mut(key).and_then(Session::last_queued_mut) {
            last.batch = batch;
        }
    }

    /// Copy `out` of session `key` is done with (completed, expired, sent
    /// at QoS 0).
    pub(super) fn record_drop_copy(&mut self, key: SessionKey, out: &Outgoing) {
        if out.seq == 0 {
            return;
        }
        let Some(client) = self.stored_client(key) else { return };
        let Some(journal) = self.journal.as_mut() else { return };
        journal.push(StoreOp::DropCopy { client, seq: out.seq });
        journal.release(&out.message);
    }

    /// Records session `key`'s own fields.
    pub(super) fn record_session(&mut self, key: SessionKey) {
        let Some(client) = self.stored_client(key) else { return };
        let Some(session) = self.sessions.get(key) else { return };
        let (username, offline_since, epoch) = (session.owner.clone(), session.offline_since(), session.epoch);
        if let Some(journal) = self.journal.as_mut() {
            journal.promise(StoreOp::Session { client, username, offline_since, epoch });
        }
    }

    /// Session `session`, just discarded, leaves the store with all it
    /// held; a clean one takes its stored incoming messages with it.
    pub(super) fn record_discarded(&mut self, session: &Session) {
        let Some(journal) = self.journal.as_mut() else { return };
        let client = &session.client_id;
        if session.clean {
            for (packet_id, message) in session.incoming() {
                if let Some(message) = message.filter(|m| journal.stored_id(m).is_some()) {
                    journal.push(StoreOp::DropIncoming { client: client.clone(), packet_id });
                    journal.release(message);
                }
            }
            return;
        }
        journal.promise(StoreOp::DropSession { client: client.clone() });
        let copies = session.inflight().map(|f| &f.out).chain(session.queued()).filter(|out| out.seq != 0);
        for out in copies {
            journal.release(&out.message);
        }
        for message in session.incoming().filter_map(|(_, m)| m) {
            journal.release(message);
        }
    }

    /// Records a subscription of session `key` (`None`: removed).
    pub(super) fn record_subscription(&mut self, key: SessionKey, filter: &TopicFilter, qos: Option<QoS>) {
        let Some(client) = self.stored_client(key) else { return };
        let Some(journal) = self.journal.as_mut() else { return };
        let filter = filter.clone();
        journal.promise(match qos {
            Some(qos) => StoreOp::Subscribe { client, filter, qos },
            None => StoreOp::Unsubscribe { client, filter },
        });
    }

    /// Records the retained message of `topic`: `now` replaced
    /// `before` (either may be absent), which this broker's journal holds
    /// if `before_recorded` (see [`Recorded`](crate::shard::Recorded)).
    pub(super) fn record_retained(
        &mut self,
        topic: &TopicName,
        now: Option<&Arc<Message>>,
        before: Option<&Arc<Message>>,
        before_recorded: bool,
    ) {
        let Some(journal) = self.journal.as_mut().filter(|_| is_stored_topic(topic)) else { return };
        match now {
            Some(message) => {
                let message = journal.refer(message);
                journal.promise(StoreOp::Retain { topic: topic.clone(), message });
            }
            None if before.is_some() => journal.promise(StoreOp::DropRetained { topic: topic.clone() }),
            None => {}
        }
        if let Some(before) = before.filter(|_| before_recorded) {
            journal.release(before);
        }
    }

    /// Records an incoming QoS 2 message of session `key` awaiting PUBREL:
    /// always for a stored session; for a clean one only if the message
    /// is bound for the store (retained, or for a stored session), where
    /// it is routed once at restart should the broker stop first.
    pub(super) fn record_incoming(&mut self, key: SessionKey, packet_id: PacketId, message: Option<&Arc<Message>>) {
        if self.journal.is_none() {
            return;
        }
        let Some(session) = self.sessions.get(key) else { return };
        let client = session.client_id.clone();
        if session.clean && !message.is_some_and(|m| self.reaches_store(m)) {
            return;
        }
        let Some(journal) = self.journal.as_mut() else { return };
        let message = message.map(|m| journal.refer(m));
        journal.promise(StoreOp::Incoming { client, packet_id, message });
    }

    /// Whether the store holds session `key`'s incoming `message` (as
    /// [`record_incoming`](Self::record_incoming) decided): always for a
    /// stored session, for a clean one if its body is stored. Asked before
    /// the message is routed, which may store the body for copies.
    pub(super) fn incoming_recorded(&self, key: SessionKey, message: Option<&Arc<Message>>) -> bool {
        let (Some(journal), Some(session)) = (self.journal.as_ref(), self.sessions.get(key)) else { return false };
        !session.clean || message.is_some_and(|m| journal.stored_id(m).is_some())
    }

    /// PUBREL for an incoming message of session `key` that the store
    /// holds ([`incoming_recorded`](Self::incoming_recorded)): it leaves
    /// the store (after it was routed, so that its body stays if copies
    /// hold it).
    pub(super) fn record_released(&mut self, key: SessionKey, packet_id: PacketId, message: Option<&Arc<Message>>) {
        let Some(session) = self.sessions.get(key) else { return };
        let client = session.client_id.clone();
        self.release_when_settled(Released { client, packet_id, message: message.cloned() });
    }

    /// An incoming message just routed leaves the store, once the shards
    /// it was routed to have it on disk.
    pub(super) fn release_when_settled(&mut self, released: Released) {
        match self.shards.as_mut().filter(|s| !s.durability.is_settled()) {
            Some(shards) => shards.durability.hold_back(released),
            None => self.record_release(released),
        }
    }

    /// An incoming message leaves the store.
    fn record_release(&mut self, released: Released) {
        let Some(journal) = self.journal.as_mut() else { return };
        let Released { client, packet_id, message } = released;
        journal.push(StoreOp::DropIncoming { client, packet_id });
        if let Some(message) = message {
            journal.release(&message);
        }
    }

    /// Records the releases held back until the other shards confirmed
    /// what was routed to them (see [`Released`]).
    pub(super) fn record_settled_releases(&mut self) {
        let Some(shards) = self.shards.as_mut() else { return };
        for released in shards.durability.settled_releases() {
            self.record_release(released);
        }
    }

    /// Whether routing `message` would store it: it is retained, or a
    /// stored session subscribes to its topic (with shards, any session of
    /// another shard may be one).
    fn reaches_store(&mut self, message: &Arc<Message>) -> bool {
        if message.retain && is_stored_topic(&message.topic) {
            return true;
        }
        let mut targets = std::mem::take(&mut self.shard_targets);
        if let Some(shards) = self.shards.as_mut() {
            shards.destinations(&message.topic, false, &mut targets);
        }
        let elsewhere = !targets.is_empty();
        targets.clear();
        self.shard_targets = targets;
        if elsewhere {
            return true;
        }
        let mut matched = std::mem::take(&mut self.matched);
        matched.clear();
        self.subscriptions.matches(&message.topic, &mut matched);
        let reaches = matched.iter().any(|(key, _)| self.sessions.get(*key).is_some_and(|s| !s.clean));
        self.matched = matched;
        reaches
    }

    /// Records the will of `client`'s connection (`None`: it ended).
    pub(super) fn record_will(&mut self, client: &ClientId, will: Option<&LastWill>) {
        let Some(journal) = self.journal.as_mut() else { return };
        let client = client.clone();
        journal.push(match will {
            Some(will) => StoreOp::Will { client, will: will.clone() },
            None => StoreOp::DropWill { client },
        });
    }

    /// Hands `data`, `id`'s output of this turn, to the runtime now or
    /// keeps it until the batches it waits for are durable.
    pub(super) fn release_or_keep(&mut self, id: ConnId, data: Bytes) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let needs = conn.waiting.as_mut().map_or(0, |w| std::mem::take(&mut w.needs_batch));
        let journal = self.journal.as_ref();
        let behind = conn.waiting.as_ref().and_then(|w| w.parts.back()).map(|(seq, _)| *seq);
        let pending = Some(needs).filter(|&n| n != 0 && journal.is_some());
        let wait_for = behind.max(pending).filter(|&seq| journal.is_some_and(|j| !j.is_durable(seq)));
        match wait_for {
            Some(seq) => {
                let waiting = conn.waiting.get_or_insert_default();
                if waiting.parts.is_empty() {
                    self.waiting.push(id);
                }
                waiting.parts.push_back((seq, data));
            }
            None => {
                if conn.waiting.as_ref().is_some_and(|w| w.is_empty()) {
                    conn.waiting = None;
                }
                super::emit(&mut self.actions, &mut self.counts, id, data);
            }
        }
    }

    /// Every batch up to `seq` is durable: the output waiting for them
    /// goes out (with shards, once what they wait for elsewhere is
    /// durable too), and the other shards hear what of theirs is.
    pub(super) fn handle_stored(&mut self, seq: u64) {
        let releasable = match self.shards.as_mut() {
            Some(shards) => {
                shards.durability.on_disk(seq);
                shards.durability.releasable()
            }
            None => seq,
        };
        self.confirm_stored();
        self.release_durable(releasable);
    }

    /// Tells the other shards what of their messages is on disk here.
    pub(super) fn confirm_stored(&mut self) {
        let Some(shards) = self.shards.as_mut() else { return };
        for (to, count) in shards.durability.due() {
            self.actions.push_back(super::Action::ToShard { to, message: crate::shard::ShardMessage::Stored(count) });
        }
    }

    /// The output waiting for batches up to `seq` goes out.
    pub(super) fn release_durable(&mut self, seq: u64) {
        let Some(journal) = self.journal.as_mut() else { return };
        journal.stored(seq);
        let journal = &*journal;
        let (conns, actions, counts) = (&mut self.conns, &mut self.actions, &mut self.counts);
        self.waiting.retain(|id| {
            let Some(conn) = conns.get_mut(id) else { return false };
            let Some(waiting) = conn.waiting.as_mut() else { return false };
            let mut ready = BytesMut::new();
            while waiting.parts.front().is_some_and(|(seq, _)| journal.is_durable(*seq)) {
                if let Some((_, data)) = waiting.parts.pop_front() {
                    ready.extend_from_slice(&data);
                }
            }
            if !ready.is_empty() {
                super::emit(actions, counts, *id, ready.freeze());
            }
            let still = !waiting.parts.is_empty();
            if waiting.is_empty() {
                conn.waiting = None;
            }
            still
        });
    }

    /// Takes what a store held at start, before any connection (see
    /// [`Restorer`](super::Restorer)): retained messages, persistent
    /// sessions (offline, their subscriptions judged again by the policy),
    /// then routes once the incoming QoS 2 messages of clean sessions that
    /// were bound for the store, and publishes the wills of the clients
    /// that were connected when the broker stopped without closing them
    /// ([MQTT-3.1.2-8]). Expired copies are dropped when they are due to be
    /// sent, as any other.
    pub fn restore(&mut self, now: Now, state: StoredState) {
        super::Restorer::new(self, now).with(state).finish();
    }

    /// How far this node's inbox is read, by (writing node, shard), as
    /// this shard recorded it and its restore found it: what the link
    /// skips when it reads the inbox again
    /// ([`StoreOp::InboxRead`](crate::persistence::StoreOp::InboxRead)).
    pub fn inbox_marks(&self) -> BTreeMap<(String, u16), InboxMark> {
        self.journal.as_ref().map(|journal| journal.inbox_marks().clone()).unwrap_or_default()
    }

    /// What the store should hold now: every batch taken so far applied
    /// to what was restored gives this (`last_batch` aside). For tests and
    /// simulations.
    pub fn stored_image(&self) -> StoredState {
        let mut image = StoredState::default();
        let Some(journal) = self.journal.as_ref() else { return image };
        image.inbox_read.clone_from(journal.inbox_marks());
        let keep = |message: &Arc<Message>, image: &mut StoredState| {
            let id = journal.stored_id(message)?;
            image.messages.insert(id, message.clone());
            Some(id)
        };
        for (topic, message) in self.retained.all() {
            if let Some(id) = keep(&message, &mut image) {
                image.retained.insert(topic, id);
            }
        }
        for key in self.sessions.keys() {
            let Some(session) = self.sessions.get(key) else { continue };
            if session.clean {
                for (packet_id, message) in session.incoming() {
                    if let Some(id) = message.and_then(|m| keep(m, &mut image)) {
                        image.unreleased.insert((session.client_id.clone(), packet_id), id);
                    }
                }
                continue;
            }
            let mut stored = StoredSession {
                username: session.owner.clone(),
                offline_since: session.offline_since(),
                next_packet_id: Some(session.next_packet_id()).filter(|id| *id != PacketId::MIN),
                epoch: session.epoch,
                subscriptions: session.subscriptions.clone(),
                ..StoredSession::default()
            };
            for flight in session.inflight() {
                let state = match flight.stage {
                    Stage::Unacknowledged | Stage::Unreceived => CopyState::Sent(flight.id),
                    Stage::Released => CopyState::Released(flight.id),
                };
                if let Some(message) = keep(&flight.out.message, &mut image) {
                    let out = &flight.out;
                    stored.copies.insert(out.seq, StoredCopy { message, qos: out.qos, retain: out.retain, state });
                }
            }
            for out in session.queued().filter(|out| out.seq != 0) {
                if let Some(message) = keep(&out.message, &mut image) {
                    let state = CopyState::Queued(out.id);
                    let copy = StoredCopy { message, qos: out.qos, retain: out.retain, state };
                    stored.copies.insert(out.seq, copy);
                }
            }
            for (packet_id, message) in session.incoming() {
                stored.incoming.insert(packet_id, message.and_then(|m| keep(m, &mut image)));
            }
            image.sessions.insert(session.client_id.clone(), stored);
        }
        for conn in self.conns.values() {
            let ConnState::Active { session, will: Some(will), .. } = &conn.state else { continue };
            if let Some(session) = self.sessions.get(*session) {
                image.wills.insert(session.client_id.clone(), (**will).clone());
            }
        }
        image
    }

    /// A connection's output that was waiting for the store is dropped
    /// with it: nothing it promised was sent.
    pub(super) fn drop_waiting(conn: &mut Connection, id: ConnId) -> bool {
        let waiting = conn.waiting.take().is_some_and(|w| !w.is_empty());
        if waiting {
            trace!(conn = %id, "output waiting for the store dropped with the connection");
        }
        waiting
    }
}
