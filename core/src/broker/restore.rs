//! Taking back what a store held at start, row by row as the store reads
//! it ([`Restore`]): the broker's structures are built directly, with no
//! copy of the whole store in between.

use std::borrow::BorrowMut;
use std::collections::HashMap;
use std::sync::Arc;

use tracing::info;

mod shards;

pub use self::shards::ShardRestorer;
use super::Broker;
use super::persist::seconds;
use crate::codec::LastWill;
use crate::message::Message;
use crate::peer::ListenerId;
use crate::persistence::journal::SharedBodies;
use crate::persistence::{CopyState, InboxMark, MessageId, Restore, SessionFields, StoreOp, StoredCopy, StoredState};
use crate::policy::{ClientInfo, FilterAccess};
use crate::session::{Grant, Outgoing, Presence, Session, SessionKey, Stage};
use crate::shard::Released;
use crate::time::Now;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{ClientId, PacketId, QoS};

/// The message bodies restored, each with the number of restored entries
/// (retained messages, copies, incoming QoS 2 messages) that refer to it:
/// the journal holds a body until that many are gone. A store hands
/// bodies over in key order, before anything refers to them, so they are
/// kept in a list searched by key: half the memory of a hash map, and
/// none of its scattered writes while a large store is read.
#[derive(Debug, Default)]
struct Bodies {
    held: Vec<(MessageId, Arc<Message>, u32)>,
    /// Whether `held` is in key order (a store may hand them over in
    /// another; they are sorted once, at the first reference).
    sorted: bool,
}

impl Bodies {
    fn add(&mut self, id: MessageId, message: Arc<Message>) {
        if self.held.last().is_some_and(|(last, ..)| *last >= id) {
            self.sorted = false;
        } else if self.held.is_empty() {
            self.sorted = true;
        }
        self.held.push((id, message, 0));
    }

    /// The body stored under `id`, counting one more reference to it.
    fn refer(&mut self, id: MessageId) -> Option<Arc<Message>> {
        let at = self.find(id)?;
        let (_, message, refs) = &mut self.held[at];
        *refs += 1;
        Some(message.clone())
    }

    /// The body stored under `id`, for a shard that holds it without
    /// recording it (see [`shards`]).
    fn get(&mut self, id: MessageId) -> Option<Arc<Message>> {
        let at = self.find(id)?;
        Some(self.held[at].1.clone())
    }

    /// How many restored entries refer to the body stored under `id`.
    fn refs(&mut self, id: MessageId) -> Option<u32> {
        let at = self.find(id)?;
        Some(self.held[at].2)
    }

    /// Where the body stored under `id` is.
    fn find(&mut self, id: MessageId) -> Option<usize> {
        if !self.sorted {
            // A store holds one body per key; were one given twice, the
            // first would count.
            self.held.sort_by_key(|(id, ..)| *id);
            self.held.dedup_by_key(|(id, ..)| *id);
            self.sorted = true;
        }
        self.position(id)
    }

    /// Where `id` is in the sorted list. Keys are handed out in sequence,
    /// so a body's place is close to where its key falls between the first
    /// and the last: the search starts there and widens (a plain binary
    /// search over millions of bodies misses the cache at each step).
    fn position(&self, id: MessageId) -> Option<usize> {
        let key = |at: usize| self.held[at].0;
        let (first, last) = (self.held.first()?.0, self.held.last()?.0);
        if id < first || id > last {
            return None;
        }
        let top = self.held.len() - 1;
        let guess = match last.0 - first.0 {
            0 => 0,
            span => {
                let at = u128::from(id.0 - first.0) * top as u128 / u128::from(span);
                usize::try_from(at).unwrap_or(top).min(top)
            }
        };
        // Widen from the guess until the key is bracketed, then bisect.
        let (mut low, mut high) = (guess, guess);
        let mut step = 1;
        while key(low) > id {
            high = low;
            low = low.saturating_sub(step);
            step *= 2;
        }
        while key(high) < id {
            low = high;
            high = (high + step).min(top);
            step *= 2;
        }
        self.held[low..=high].binary_search_by_key(&id, |(id, ..)| *id).ok().map(|at| low + at)
    }
}

/// A broker being restored: a [`Restore`] that builds the broker's
/// retained messages and persistent sessions as a store hands them over.
/// [`Restorer::finish`] completes it: the journal adopts the bodies, the
/// incoming QoS 2 messages of clean sessions are routed and the wills of
/// the clients connected when the broker stopped are published.
///
/// `B` is the broker or a mutable borrow of it: a runtime that may have to
/// start over with a fresh broker (a store found damaged half-way) owns
/// it.
#[derive(Debug)]
pub struct Restorer<B: BorrowMut<Broker>> {
    broker: B,
    now: Now,
    bodies: Bodies,
    /// The highest body key seen: new keys count on from it.
    last_message: Option<MessageId>,
    last_batch: u64,
    /// The sessions this restore made, by client; a session the broker
    /// already had is not restored over.
    sessions: HashMap<ClientId, SessionKey>,
    /// The session of the last row: a session's rows come together.
    current: Option<(ClientId, SessionKey)>,
    /// Changes that make the store agree with what was restored: rows
    /// that refer to a body the store does not hold.
    dangling: Vec<StoreOp>,
    /// Incoming QoS 2 messages of clean sessions, routed at the end.
    unreleased: Vec<(ClientId, PacketId, Arc<Message>)>,
    wills: Vec<(ClientId, LastWill)>,
    /// This broker's journal records the retained messages it restores
    /// (with shards, one of them does; see [`Recorded`](crate::shard::Recorded)).
    records_retained: bool,
    /// Bodies unreferenced here leave the store at the end (with shards,
    /// those no shard refers to, once).
    drops_unreferenced: bool,
    /// With shards, the bodies several shards refer to.
    shared: Option<Arc<SharedBodies>>,
    /// Bodies of incoming QoS 2 messages held for routing, and how many
    /// such rows refer to each.
    held_for_routing: HashMap<MessageId, u32>,
    /// Bodies the other shards' restore found routed before the stop
    /// ([`ShardRestorer`](crate::ShardRestorer)).
    pub(super) routed: Vec<MessageId>,
}

impl<B: BorrowMut<Broker>> Restorer<B> {
    /// Starts restoring into `broker`, before any connection.
    pub fn new(broker: B, now: Now) -> Self {
        Self {
            broker,
            now,
            bodies: Bodies::default(),
            last_message: None,
            last_batch: 0,
            sessions: HashMap::new(),
            current: None,
            dangling: Vec::new(),
            unreleased: Vec::new(),
            wills: Vec::new(),
            records_retained: true,
            drops_unreferenced: true,
            shared: None,
            held_for_routing: HashMap::new(),
            routed: Vec::new(),
        }
    }

    /// Restores everything `state` holds.
    #[must_use]
    pub fn with(mut self, state: StoredState) -> Self {
        state.replay(&mut self);
        self
    }

    /// The session restored for `client`, if this restore made one.
    fn session_key(&mut self, client: &str) -> Option<SessionKey> {
        if let Some((id, key)) = &self.current
            && id.as_str() == client
        {
            return Some(*key);
        }
        let (id, key) = self.sessions.get_key_value(client)?;
        self.current = Some((id.clone(), *key));
        Some(*key)
    }

    /// Completes the restore (see [`Restorer`]) and gives the broker back.
    pub fn finish(mut self) -> B {
        let now = self.now;
        let mut routed = routed_before(&mut [&mut self]);
        routed.append(&mut self.routed);
        let broker = self.broker.borrow_mut();
        if let Some(journal) = broker.journal.as_mut() {
            journal.resume_after(self.last_batch, self.last_message);
            if let Some(shared) = self.shared.take() {
                journal.share_bodies(shared);
            }
            journal.reserve(self.bodies.held.iter().filter(|(_, _, refs)| *refs > 0).count());
            let mut unreferenced = Vec::new();
            for (id, message, refs) in &self.bodies.held {
                match refs {
                    0 if self.drops_unreferenced => unreferenced.push(*id),
                    0 => {}
                    &n => journal.adopt(*id, message, n),
                }
            }
            // In key order, as they were stored: batches stay deterministic.
            unreferenced.sort_unstable();
            unreferenced.dedup();
            for id in unreferenced {
                journal.push(StoreOp::DropMessage { id });
            }
            for op in self.dangling.drain(..) {
                journal.push(op);
            }
        }
        drop(std::mem::take(&mut self.bodies));
        broker.note_routed_before(&routed);
        for (client, packet_id, message) in self.unreleased.drain(..) {
            info!("Routing the QoS 2 message {packet_id} from {client} held when the broker stopped.");
            broker.route_released(now, message.clone(), None);
            broker.release_when_settled(Released { client, packet_id, message: Some(message) });
        }
        for (client, will) in self.wills.drain(..) {
            info!("Publishing the will of {client}, connected when the broker stopped.");
            broker.record_will(&client, None);
            broker.route(now, Arc::new(Message::from_will(will, broker.config.message_expiry)), None);
        }
        broker.check_ownership_later(now);
        info!(
            "Restored {} retained messages and {} persistent sessions.",
            broker.retained.len(),
            broker.sessions.len()
        );
        self.broker
    }
}

/// The incoming QoS 2 messages held for routing that something else
/// among `restorers` refers to too (a copy, a retained entry): they may
/// have been routed before the stop, the release not reaching the store
/// (with shards it waits for the other shards' copies). Routed again, they
/// skip the sessions that hold them (the broker's `routed_before`).
fn routed_before<B: BorrowMut<Broker>>(restorers: &mut [&mut Restorer<B>]) -> Vec<MessageId> {
    let mut held: HashMap<MessageId, u32> = HashMap::new();
    for restorer in restorers.iter() {
        for (&id, &rows) in &restorer.held_for_routing {
            *held.entry(id).or_default() += rows;
        }
    }
    let mut routed = Vec::new();
    for (id, rows) in held {
        let refs: u32 = restorers.iter_mut().filter_map(|r| r.bodies.refs(id)).sum();
        if refs > rows {
            routed.push(id);
        }
    }
    routed
}

impl<B: BorrowMut<Broker>> Restore for Restorer<B> {
    fn last_batch(&mut self, seq: u64) {
        self.last_batch = seq;
    }

    fn inbox_read(&mut self, node: &str, shard: u16, mark: InboxMark) {
        if let Some(journal) = self.broker.borrow_mut().journal.as_mut() {
            journal.inbox_read(node, shard, mark, true);
        }
    }

    fn message(&mut self, id: MessageId, message: Arc<Message>) {
        self.last_message = self.last_message.max(Some(id));
        self.bodies.add(id, message);
    }

    fn retained(&mut self, topic: TopicName, id: MessageId) {
        let body = if self.records_retained { self.bodies.refer(id) } else { self.bodies.get(id) };
        match body {
            Some(message) => {
                let broker = self.broker.borrow_mut();
                if let Some(shards) = broker.shards.as_mut().filter(|_| self.records_retained) {
                    shards.restored(topic.clone());
                }
                let added = message.clone();
                let before = broker.retained.insert(topic, message);
                broker.gauges.retained(Some(&added), before.as_deref());
            }
            None if self.records_retained => self.dangling.push(StoreOp::DropRetained { topic }),
            None => {}
        }
    }

    fn session(&mut self, client: &str, fields: SessionFields) {
        let client = ClientId::new(client);
        let broker = self.broker.borrow_mut();
        if broker.sessions.find(&client).is_some() {
            return;
        }
        let SessionFields { username, offline_since, next_packet_id, epoch } = fields;
        let mut session = Session::new(client.clone(), false);
        session.owner = username;
        session.epoch = epoch;
        session.presence = Presence::Offline(offline_since.unwrap_or_else(|| seconds(self.now)));
        if let Some(next) = next_packet_id {
            session.set_next_packet_id(next);
        }
        let key = broker.sessions.insert(session);
        broker.occupancy.keep_session();
        self.sessions.insert(client, key);
    }

    fn subscription(&mut self, client: &str, filter: TopicFilter, qos: QoS) {
        let Some(key) = self.session_key(client) else { return };
        let broker = self.broker.borrow_mut();
        let Some(session) = broker.sessions.get_mut(key) else { return };
        let info = ClientInfo {
            client_id: &session.client_id,
            username: session.owner.as_deref(),
            listener: ListenerId::default(),
        };
        let checked = broker.policy.filter_access(info, &filter) != FilterAccess::Whole;
        session.subscriptions.insert(filter.clone(), qos);
        broker.add_subscription(&filter, key, Grant { qos, checked });
    }

    fn copy(&mut self, client: &str, seq: u64, copy: StoredCopy) {
        let Some(key) = self.session_key(client) else { return };
        let Some(message) = self.bodies.refer(copy.message) else {
            self.dangling.push(StoreOp::DropCopy { client: ClientId::new(client), seq });
            return;
        };
        let Some(session) = self.broker.borrow_mut().sessions.get_mut(key) else { return };
        let id = match copy.state {
            CopyState::Queued(id) if copy.qos != QoS::AtMostOnce => id,
            _ => None,
        };
        let out = Outgoing { message, qos: copy.qos, retain: copy.retain, seq, id, batch: 0 };
        let inflight = match copy.state {
            CopyState::Queued(_) => None,
            CopyState::Sent(id) if copy.qos == QoS::ExactlyOnce => Some((id, Stage::Unreceived)),
            CopyState::Sent(id) => Some((id, Stage::Unacknowledged)),
            CopyState::Released(id) => Some((id, Stage::Released)),
        };
        session.restore_copy(out, inflight);
    }

    fn incoming(&mut self, client: &str, packet_id: PacketId, message: Option<MessageId>) {
        let Some(key) = self.session_key(client) else { return };
        if let Some(id) = message {
            *self.held_for_routing.entry(id).or_default() += 1;
        }
        let message = message.and_then(|id| self.bodies.refer(id));
        if let Some(session) = self.broker.borrow_mut().sessions.get_mut(key) {
            session.receive_qos2(packet_id, message);
        }
    }

    fn unreleased(&mut self, client: &str, packet_id: PacketId, id: MessageId) {
        *self.held_for_routing.entry(id).or_default() += 1;
        if let Some(message) = self.bodies.refer(id) {
            self.unreleased.push((ClientId::new(client), packet_id, message));
        }
    }

    fn will(&mut self, client: &str, will: LastWill) {
        self.wills.push((ClientId::new(client), will));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::QoS;
    use bytes::Bytes;
    use quickcheck::QuickCheck;

    fn body() -> Arc<Message> {
        let topic = TopicName::new("t").expect("valid topic");
        Arc::new(Message::new(topic, Bytes::new(), QoS::AtLeastOnce, false))
    }

    /// The search from the guessed place finds what a plain search finds,
    /// for keys dense, sparse, clustered or out of order, given twice or
    /// missing.
    #[test]
    fn bodies_are_found_by_key_as_a_plain_search_finds_them() {
        fn prop(keys: Vec<u64>, wanted: Vec<u64>, spread: u8) -> bool {
            let scale = 1u64 << (spread % 40);
            let mut bodies = Bodies::default();
            for key in &keys {
                bodies.add(MessageId(key.wrapping_mul(scale)), body());
            }
            let mut known: Vec<u64> = keys.iter().map(|k| k.wrapping_mul(scale)).collect();
            known.sort_unstable();
            known.dedup();
            wanted.iter().chain(&keys).all(|w| {
                let id = w.wrapping_mul(scale);
                bodies.refer(MessageId(id)).is_some() == known.binary_search(&id).is_ok()
            })
        }
        QuickCheck::new().tests(500).quickcheck(prop as fn(Vec<u64>, Vec<u64>, u8) -> bool);
    }
}
