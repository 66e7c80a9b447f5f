//! Per-client session state: subscriptions, the outgoing in-flight window,
//! the queue behind it, and incoming QoS 2 messages awaiting PUBREL.
//!
//! Design: the session never touches the router or the network. It answers
//! what to send; the broker encodes and writes. The in-flight window is a
//! `VecDeque` in send order: acks usually arrive in order, so lookups hit
//! the front, and resends on reconnect walk it front to back
//! ([MQTT-4.4.0-1], [MQTT-4.6.0-1]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use crate::error::Violation;
use crate::message::Message;
use crate::peer::ListenerId;
use crate::topic::TopicFilter;
use crate::types::{Ack, ClientId, ConnId, PacketId, QoS};

/// One copy of a message on its way to this session.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) message: Arc<Message>,
    /// QoS of this copy: the lower of the message's and the subscription's.
    pub(crate) qos: QoS,
    /// RETAIN flag of this copy (set only for retained messages sent on
    /// SUBSCRIBE, [MQTT-3.3.1-8], [MQTT-3.3.1-9]).
    pub(crate) retain: bool,
    /// Its place among the copies a persistent session stored, from 1;
    /// 0 until it is stored (see [`Session::stamp`]).
    pub(crate) seq: u64,
    /// The packet id a queued QoS 1/2 copy of a stored session was given
    /// when it was queued (see [`Session::enqueue`]); `None` for any other
    /// copy, which gets one when it goes out.
    pub(crate) id: Option<PacketId>,
    /// The store batch that records `id`: the copy's PUBLISH waits until
    /// it is durable (0: it is, as for a restored copy).
    pub(crate) batch: u64,
}

impl Outgoing {
    /// A copy of `message` not stored anywhere yet.
    pub(crate) fn new(message: Arc<Message>, qos: QoS, retain: bool) -> Self {
        Self { message, qos, retain, seq: 0, id: None, batch: 0 }
    }

    fn payload_len(&self) -> usize {
        self.message.payload.len()
    }
}

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// QoS 1 PUBLISH sent, PUBACK awaited.
    Unacknowledged,
    /// QoS 2 PUBLISH sent, PUBREC awaited.
    Unreceived,
    /// PUBREL sent, PUBCOMP awaited.
    Released,
}

impl Stage {
    /// The acknowledgement that moves the message on.
    fn awaits(self) -> Ack {
        match self {
            Self::Unacknowledged => Ack::PubAck,
            Self::Unreceived => Ack::PubRec,
            Self::Released => Ack::PubComp,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inflight {
    pub(crate) id: PacketId,
    pub(crate) stage: Stage,
    pub(crate) out: Outgoing,
}

/// The queue has no room for this copy: it comes back, for the caller to
/// queue anyway or drop.
#[derive(Debug)]
pub(crate) struct QueueFull(pub(crate) Outgoing);

/// What an acknowledgement that fits the flow does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    /// The delivery is complete: the window has room for a queued copy.
    Completed,
    /// The QoS 2 message is released: send PUBREL.
    Release,
    /// No message is in flight under this id, e.g. a late repeat of an
    /// ack already counted: ignored, not a violation.
    Unknown,
}

/// A subscription as routing holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Grant {
    /// The QoS granted in SUBACK.
    pub(crate) qos: QoS,
    /// The policy judged the filter partly readable
    /// ([`FilterAccess::Partial`](crate::policy::FilterAccess::Partial)):
    /// each message is checked for read access before it is delivered.
    pub(crate) checked: bool,
}

/// Limits a session obeys, copied from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) window: usize,
    /// Payload bytes in flight past which no more copies go out (0: no
    /// limit); a copy goes out while fewer are.
    pub(crate) max_inflight_bytes: usize,
    pub(crate) max_queued: usize,
    pub(crate) max_queued_bytes: usize,
}

/// Every client has one, connected or not: kept within 104 bytes, so that
/// its box takes a 112-byte heap chunk (see the size test below).
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) client_id: ClientId,
    pub(crate) clean: bool,
    /// Its last CONNECT came from a bridge (protocol level with the high
    /// bit set): it is not sent back what it publishes, and its copies
    /// keep the RETAIN flag they were published with, as in Mosquitto.
    pub(crate) bridge: bool,
    pub(crate) presence: Presence,
    pub(crate) subscriptions: BTreeMap<TopicFilter, QoS>,
    /// The user name and listener of the connection that last bound the
    /// session: an offline session is judged by them when the policy
    /// changes. Two fields, not a pair: the listener then fits beside
    /// the flags.
    pub(crate) owner: Option<Arc<str>>,
    pub(crate) owner_listener: ListenerId,
    /// The ownership epoch of the connection that last took it, in a
    /// cluster (0: not known); see [`HandedSession::epoch`](crate::shard::HandedSession::epoch).
    pub(crate) epoch: u64,
    /// QoS 1/2 and queueing state, made on first use: a client that has
    /// only connected (or only uses QoS 0 while online) holds none.
    flow: Option<Box<Flow>>,
}

/// Whether a session's client is connected: its connection, or since when
/// it is not. One field for both, as a session never has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Just made, not bound to a connection yet.
    New,
    /// Bound to this connection.
    Online(ConnId),
    /// Its client went away at this time, in Unix seconds, for
    /// `persistent_client_expiration`.
    Offline(u64),
}

/// What a session holds for messages in flight or waiting.
#[derive(Debug)]
struct Flow {
    inflight: VecDeque<Inflight>,
    /// The payload bytes of `inflight`.
    inflight_bytes: usize,
    queue: VecDeque<Outgoing>,
    queued_bytes: usize,
    /// Incoming QoS 2 messages: PUBREC sent, PUBREL awaited. The message is
    /// routed on PUBREL, as Mosquitto does; `None` marks one that was
    /// dropped (too large, refused) but still owes its handshake.
    incoming: BTreeMap<PacketId, Option<Arc<Message>>>,
    next_id: PacketId,
    /// The packet ids queued copies hold (see [`Outgoing::id`]).
    reserved: BTreeSet<PacketId>,
    /// Queued QoS 1/2 copies without a packet id. While there is one,
    /// copies queued after it get none either: ids are then given in
    /// queue order, and a copy without one that reaches the window finds
    /// every queued copy behind it without one too, so a free id.
    unnumbered: usize,
    /// Copies are being dropped for it: the episode began with the
    /// first drop (logged) and ends when a copy is queued again.
    dropping: bool,
    /// Copies dropped for it so far (a bridge reports them).
    dropped: u64,
    /// The sequence number the next stored copy gets.
    next_seq: u64,
}

impl Flow {
    /// Whether another copy may go in flight: fewer copies than the
    /// window, and fewer payload bytes than `max_inflight_bytes`, are
    /// (Mosquitto's rule: one copy larger than the limit still goes).
    fn has_room(&self, limits: Limits) -> bool {
        self.inflight.len() < limits.window
            && (limits.max_inflight_bytes == 0 || self.inflight_bytes < limits.max_inflight_bytes)
    }

    fn push_inflight(&mut self, inflight: Inflight) {
        self.inflight_bytes += inflight.out.payload_len();
        self.inflight.push_back(inflight);
    }

    fn remove_inflight(&mut self, at: usize) {
        if let Some(done) = self.inflight.remove(at) {
            self.inflight_bytes -= done.out.payload_len();
        }
    }

    /// The first packet id from the next one on that no copy in flight
    /// or queued holds, which becomes the last one given; `None` if all
    /// 65,535 are held. Ids count from 1 and skip those in use
    /// ([MQTT-2.3.1-2], [MQTT-2.3.1-4]).
    fn take_free_id(&mut self) -> Option<PacketId> {
        if self.inflight.len() + self.reserved.len() >= usize::from(u16::MAX) {
            return None;
        }
        let mut id = self.next_id;
        while self.reserved.contains(&id) || self.inflight.iter().any(|f| f.id == id) {
            id = id.next();
        }
        self.next_id = id.next();
        Some(id)
    }

    /// Puts `out` at the back of the queue; `number`: give a QoS 1/2 copy
    /// that the store keeps a packet id now, if it can have one.
    fn push_queue(&mut self, mut out: Outgoing, number: bool) {
        if number && out.id.is_none() && out.seq != 0 && out.qos != QoS::AtMostOnce && self.unnumbered == 0 {
            out.id = self.take_free_id();
        }
        match out.id {
            Some(id) => {
                self.reserved.insert(id);
            }
            None if out.qos != QoS::AtMostOnce => self.unnumbered += 1,
            None => {}
        }
        self.queued_bytes += out.payload_len();
        self.queue.push_back(out);
    }
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
            incoming: BTreeMap::new(),
            next_id: PacketId::MIN,
            reserved: BTreeSet::new(),
            unnumbered: 0,
            dropping: false,
            dropped: 0,
            next_seq: 1,
        }
    }
}

impl Session {
    /// The user name of the connection that last bound the session (the
    /// one bound to it now, while the client is connected).
    pub(crate) fn username(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// The connection bound to it, while its client is connected.
    pub(crate) fn conn(&self) -> Option<ConnId> {
        match self.presence {
            Presence::Online(conn) => Some(conn),
            Presence::New | Presence::Offline(_) => None,
        }
    }

    /// When its client went away, in Unix seconds; `None` while connected.
    pub(crate) fn offline_since(&self) -> Option<u64> {
        match self.presence {
            Presence::Offline(since) => Some(since),
            Presence::New | Presence::Online(_) => None,
        }
    }

    pub(crate) fn new(client_id: ClientId, clean: bool) -> Self {
        Self {
            client_id,
            clean,
            bridge: false,
            presence: Presence::New,
            subscriptions: BTreeMap::new(),
            owner: None,
            owner_listener: ListenerId::default(),
            epoch: 0,
            flow: None,
        }
    }

    fn flow(&mut self) -> &mut Flow {
        self.flow.get_or_insert_with(Box::default)
    }

    /// Whether a new QoS 1/2 copy may go out now rather than wait in the
    /// queue (which keeps order: nothing overtakes a queued copy).
    pub(crate) fn can_send_now(&self, limits: Limits) -> bool {
        self.conn().is_some() && self.flow.as_ref().is_none_or(|f| f.queue.is_empty() && f.has_room(limits))
    }

    /// Gives `out` its place among the stored copies, if it has none yet;
    /// whether it was new to the store.
    pub(crate) fn stamp(&mut self, out: &mut Outgoing) -> bool {
        if out.seq != 0 {
            return false;
        }
        let flow = self.flow();
        out.seq = flow.next_seq;
        flow.next_seq += 1;
        true
    }

    /// Puts back a copy the store held, in the state it had: in flight
    /// under its packet id, or queued. Copies come in their stored order.
    pub(crate) fn restore_copy(&mut self, out: Outgoing, inflight: Option<(PacketId, Stage)>) {
        let flow = self.flow();
        flow.next_seq = flow.next_seq.max(out.seq + 1);
        match inflight {
            Some((id, stage)) => flow.push_inflight(Inflight { id, stage, out }),
            None => {
                let mut out = out;
                // A restored id another copy holds, or behind a copy
                // without one, is not kept (neither happens in a store
                // this broker wrote).
                if out.id.is_some_and(|id| {
                    flow.unnumbered != 0 || flow.reserved.contains(&id) || flow.inflight.iter().any(|f| f.id == id)
                }) {
                    out.id = None;
                }
                flow.push_queue(out, false);
            }
        }
    }

    /// The packet id the next outgoing message tries first.
    pub(crate) fn next_packet_id(&self) -> PacketId {
        self.flow.as_ref().map_or(PacketId::MIN, |f| f.next_id)
    }

    /// Sets the packet id the next outgoing message tries first.
    pub(crate) fn set_next_packet_id(&mut self, id: PacketId) {
        self.flow().next_id = id;
    }

    /// Whether a copy of `message` (this very one) is queued or in flight.
    pub(crate) fn holds(&self, is_it: impl Fn(&Arc<Message>) -> bool) -> bool {
        self.queued().any(|out| is_it(&out.message)) || self.inflight().any(|flight| is_it(&flight.out.message))
    }

    /// The queue behind the window, in order.
    pub(crate) fn queued(&self) -> impl Iterator<Item = &Outgoing> {
        self.flow.iter().flat_map(|f| f.queue.iter())
    }

    /// The copy queued last.
    pub(crate) fn last_queued_mut(&mut self) -> Option<&mut Outgoing> {
        self.flow.as_mut()?.queue.back_mut()
    }

    /// Incoming QoS 2 messages awaiting PUBREL, by packet id.
    pub(crate) fn incoming(&self) -> impl Iterator<Item = (PacketId, Option<&Arc<Message>>)> {
        self.flow.iter().flat_map(|f| f.incoming.iter().map(|(id, m)| (*id, m.as_ref())))
    }

    /// Puts `out` in flight under the packet id it was queued with, or
    /// else a fresh one, and returns the id. Ids count from 1 and skip
    /// those in use ([MQTT-2.3.1-4]).
    pub(crate) fn start(&mut self, mut out: Outgoing) -> PacketId {
        let flow = self.flow();
        // There is always a free id here: the window holds at most 65,535
        // copies, and a copy without an id is queued behind every copy
        // that holds one (see `Flow::unnumbered`).
        let id = out.id.take().or_else(|| flow.take_free_id()).unwrap_or(flow.next_id);
        let stage = match out.qos {
            QoS::ExactlyOnce => Stage::Unreceived,
            _ => Stage::Unacknowledged,
        };
        flow.push_inflight(Inflight { id, stage, out });
        id
    }

    /// Queues `out` behind the window, within the limits.
    pub(crate) fn enqueue(&mut self, out: Outgoing, limits: Limits) -> Result<(), QueueFull> {
        let flow = self.flow();
        let full_count = limits.max_queued != 0 && flow.queue.len() >= limits.max_queued;
        let full_bytes =
            limits.max_queued_bytes != 0 && flow.queued_bytes + out.payload_len() > limits.max_queued_bytes;
        if full_count || full_bytes {
            return Err(QueueFull(out));
        }
        flow.dropping = false;
        flow.push_queue(out, true);
        Ok(())
    }

    /// Queues `out` behind the window beyond the limits: a copy its
    /// publisher was acknowledged for, whose publisher is held meanwhile
    /// (see [`congestion`](crate::congestion)).
    ///
    /// A QoS 1/2 copy the store keeps (stamped, see [`Session::stamp`])
    /// gets its packet id now, as Mosquitto gives it, so that the id is
    /// stored with the copy and sending it changes nothing durable; if
    /// every id is held, it gets one when it goes out.
    pub(crate) fn enqueue_over(&mut self, out: Outgoing) {
        self.flow().push_queue(out, true);
    }

    /// A copy for it was dropped; whether that begins an episode of
    /// dropping (to be logged once).
    pub(crate) fn note_drop(&mut self) -> bool {
        let flow = self.flow();
        flow.dropped += 1;
        !std::mem::replace(&mut flow.dropping, true)
    }

    /// Copies dropped for it so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.flow.as_ref().map_or(0, |f| f.dropped)
    }

    /// Whether its queue has drained to half its limits: a subscriber
    /// holding publishers releases them, one dropping copies stops.
    pub(crate) fn is_drained(&self, limits: Limits) -> bool {
        self.flow.as_ref().is_none_or(|f| {
            (limits.max_queued == 0 || f.queue.len() <= limits.max_queued / 2)
                && (limits.max_queued_bytes == 0 || f.queued_bytes <= limits.max_queued_bytes / 2)
        })
    }

    /// The next queued copy, if the window has room for it.
    pub(crate) fn next_queued(&mut self, limits: Limits) -> Option<Outgoing> {
        self.conn()?;
        let flow = self.flow.as_mut()?;
        if !flow.has_room(limits) {
            return None;
        }
        let out = flow.queue.pop_front()?;
        flow.queued_bytes -= out.payload_len();
        match out.id {
            Some(id) => {
                flow.reserved.remove(&id);
            }
            None if out.qos != QoS::AtMostOnce => flow.unnumbered -= 1,
            None => {}
        }
        Some(out)
    }

    /// Applies the client's acknowledgement `ack` of `id` to the window.
    /// An ack of another kind than the message under `id` awaits breaks
    /// its flow ([MQTT-4.3.2-1], [MQTT-4.3.3-1]), a violation that closes
    /// the connection ([MQTT-4.8.0-1]); PUBREC after PUBREL is a repeat,
    /// answered with PUBREL again. Both as Mosquitto 2.0 does.
    pub(crate) fn acknowledge(&mut self, id: PacketId, ack: Ack) -> Result<AckOutcome, Violation> {
        let Some(flow) = self.flow.as_mut() else { return Ok(AckOutcome::Unknown) };
        let Some(at) = flow.inflight.iter().position(|f| f.id == id) else { return Ok(AckOutcome::Unknown) };
        let stage = flow.inflight[at].stage;
        match (stage, ack) {
            (Stage::Unacknowledged, Ack::PubAck) | (Stage::Released, Ack::PubComp) => {
                flow.remove_inflight(at);
                Ok(AckOutcome::Completed)
            }
            (Stage::Unreceived | Stage::Released, Ack::PubRec) => {
                flow.inflight[at].stage = Stage::Released;
                Ok(AckOutcome::Release)
            }
            _ => Err(Violation::WrongAck { id, received: ack, awaited: stage.awaits() }),
        }
    }

    /// The in-flight window in send order, for resending on reconnect.
    pub(crate) fn inflight(&self) -> impl Iterator<Item = &Inflight> {
        self.flow.iter().flat_map(|f| f.inflight.iter())
    }

    /// Forgets an in-flight copy that will not be resent (it expired).
    pub(crate) fn forget(&mut self, id: PacketId) {
        if let Some(flow) = self.flow.as_mut()
            && let Some(at) = flow.inflight.iter().position(|f| f.id == id)
        {
            flow.remove_inflight(at);
        }
    }

    /// What it holds for messages, for the broker's figures.
    pub(crate) fn held(&self) -> Held {
        let Some(flow) = self.flow.as_deref() else { return Held::default() };
        let (incoming, incoming_bytes) =
            flow.incoming.values().flatten().fold((0, 0), |(n, bytes), message| (n + 1, bytes + message.payload.len()));
        Held {
            inflight: flow.inflight.len(),
            inflight_bytes: flow.inflight_bytes,
            queued: flow.queue.len(),
            queued_bytes: flow.queued_bytes,
            incoming,
            incoming_bytes,
        }
    }

    pub(crate) fn inflight_len(&self) -> usize {
        self.flow.as_ref().map_or(0, |f| f.inflight.len())
    }

    pub(crate) fn queued_len(&self) -> usize {
        self.flow.as_ref().map_or(0, |f| f.queue.len())
    }

    /// Records an incoming QoS 2 PUBLISH; false if `id` is already awaiting
    /// PUBREL (a duplicate: acknowledge again, route nothing,
    /// [MQTT-4.3.3-2]).
    pub(crate) fn receive_qos2(&mut self, id: PacketId, message: Option<Arc<Message>>) -> bool {
        let flow = self.flow();
        if flow.incoming.contains_key(&id) {
            return false;
        }
        flow.incoming.insert(id, message);
        true
    }

    /// Number of incoming QoS 2 messages awaiting PUBREL.
    pub(crate) fn incoming_len(&self) -> usize {
        self.flow.as_ref().map_or(0, |f| f.incoming.len())
    }

    /// Takes the entry released by PUBREL `id`, if there is one: the
    /// message, or `None` for one that was dropped.
    pub(crate) fn release(&mut self, id: PacketId) -> Option<Option<Arc<Message>>> {
        self.flow.as_mut()?.incoming.remove(&id)
    }
}

/// What sessions hold for messages: copies in flight and queued, and
/// incoming QoS 2 messages awaiting PUBREL, with their payload bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) inflight: usize,
    pub(crate) inflight_bytes: usize,
    pub(crate) queued: usize,
    pub(crate) queued_bytes: usize,
    pub(crate) incoming: usize,
    pub(crate) incoming_bytes: usize,
}

impl std::ops::Add for Held {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            inflight: self.inflight + other.inflight,
            inflight_bytes: self.inflight_bytes + other.inflight_bytes,
            queued: self.queued + other.queued,
            queued_bytes: self.queued_bytes + other.queued_bytes,
            incoming: self.incoming + other.incoming,
            incoming_bytes: self.incoming_bytes + other.incoming_bytes,
        }
    }
}

/// A session's handle: an index into [`SessionStore`], reused after the
/// session is discarded (the router drops its subscriptions first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SessionKey(u32);

/// Every session, reachable by key and by client id.
#[derive(Debug, Default)]
pub(crate) struct SessionStore {
    /// Boxed: the vector's spare capacity (up to half of it) then costs a
    /// pointer per slot, not a whole session.
    slots: Vec<Option<Box<Session>>>,
    free: Vec<u32>,
    /// Each session's key, by the hash of its client id: the id itself is
    /// held once, by the session, and a slot costs 4 bytes.
    by_client: HashTable<SessionKey>,
    /// Keyed (SipHash, random keys): client ids come from clients.
    hasher: RandomState,
}

impl SessionStore {
    pub(crate) fn find(&self, client_id: &ClientId) -> Option<SessionKey> {
        let hash = self.hasher.hash_one(client_id.as_str());
        self.by_client.find(hash, |&key| self.client_id(key) == Some(client_id)).copied()
    }

    pub(crate) fn get(&self, key: SessionKey) -> Option<&Session> {
        self.slots.get(key.0 as usize).and_then(Option::as_deref)
    }

    pub(crate) fn get_mut(&mut self, key: SessionKey) -> Option<&mut Session> {
        self.slots.get_mut(key.0 as usize).and_then(Option::as_deref_mut)
    }

    fn client_id(&self, key: SessionKey) -> Option<&ClientId> {
        self.get(key).map(|session| &session.client_id)
    }

    /// Stores a session whose client id has none yet.
    pub(crate) fn insert(&mut self, session: Session) -> SessionKey {
        debug_assert!(self.find(&session.client_id).is_none(), "two sessions for {}", session.client_id);
        let hash = self.hasher.hash_one(session.client_id.as_str());
        let key = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(Box::new(session));
                SessionKey(slot)
            }
            None => {
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some(Box::new(session)));
                SessionKey(slot)
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_client.insert_unique(hash, key, |key| {
            let id = slots[key.0 as usize].as_ref().map_or("", |session| session.client_id.as_str());
            hasher.hash_one(id)
        });
        key
    }

    pub(crate) fn remove(&mut self, key: SessionKey) -> Option<Session> {
        let session = self.slots.get_mut(key.0 as usize)?.take()?;
        let hash = self.hasher.hash_one(session.client_id.as_str());
        if let Ok(entry) = self.by_client.find_entry(hash, |&k| k == key) {
            entry.remove();
        }
        self.free.push(key.0);
        Some(*session)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_client.len()
    }

    /// Every session, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Session> {
        self.slots.iter().filter_map(Option::as_deref)
    }

    /// Every session's key, in slot order.
    pub(crate) fn keys(&self) -> Vec<SessionKey> {
        (0..self.slots.len())
            .filter(|&slot| self.slots[slot].is_some())
            .filter_map(|slot| u32::try_from(slot).ok().map(SessionKey))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::TopicName;
    use bytes::Bytes;

    fn out(qos: QoS) -> Outgoing {
        let topic = TopicName::new("t").expect("valid topic");
        let message = Arc::new(Message::new(topic, Bytes::from_static(b"x"), qos, false));
        Outgoing::new(message, qos, false)
    }

    const LIMITS: Limits = Limits { window: 2, max_inflight_bytes: 0, max_queued: 2, max_queued_bytes: 0 };

    fn online() -> Session {
        let mut s = Session::new(ClientId::new("c"), false);
        s.presence = Presence::Online(ConnId(1));
        s
    }

    #[test]
    fn a_session_fits_a_112_byte_heap_chunk() {
        // glibc serves requests of up to 104 bytes from 112-byte chunks:
        // one more byte and every session's box takes 128 bytes.
        let size = size_of::<Session>();
        assert!(size <= 104, "a session is {size} bytes");
    }

    #[test]
    fn packet_ids_count_from_one_and_skip_ids_in_use() {
        let mut s = online();
        let a = s.start(out(QoS::AtLeastOnce));
        let b = s.start(out(QoS::AtLeastOnce));
        assert_eq!((a.get(), b.get()), (1, 2));
        assert_eq!(s.acknowledge(a, Ack::PubAck), Ok(AckOutcome::Completed));
        s.flow().next_id = a;
        // 1 is free again, 2 is still in flight.
        assert_eq!(s.start(out(QoS::AtLeastOnce)).get(), 1);
        assert_eq!(s.start(out(QoS::AtLeastOnce)).get(), 3);
    }

    /// A stored copy (stamped) queued.
    fn stored(s: &mut Session, qos: QoS) -> Outgoing {
        let mut o = out(qos);
        s.stamp(&mut o);
        o
    }

    #[test]
    fn queued_copies_of_a_stored_session_hold_their_ids() {
        let mut s = online();
        let a = s.start(out(QoS::AtLeastOnce));
        let over = stored(&mut s, QoS::AtLeastOnce);
        s.enqueue_over(over);
        let q0 = stored(&mut s, QoS::AtMostOnce);
        s.enqueue_over(q0);
        let unstored = out(QoS::ExactlyOnce);
        s.enqueue_over(unstored);
        let ids: Vec<_> = s.queued().map(|o| o.id.map(PacketId::get)).collect();
        assert_eq!(ids, [Some(2), None, None], "only stored QoS 1/2 copies are numbered");
        assert_eq!(s.acknowledge(a, Ack::PubAck), Ok(AckOutcome::Completed));
        let next = s.next_queued(LIMITS).expect("room");
        assert_eq!(s.start(next).get(), 2, "sent under the id it was queued with");
    }

    /// Ids stay unique among the copies in flight and queued; past the
    /// 65,535 ids, queued copies get theirs when they go out, in order.
    #[test]
    fn a_queue_longer_than_the_ids_numbers_what_it_can() {
        let limits = Limits { window: 3, max_inflight_bytes: 0, max_queued: 0, max_queued_bytes: 0 };
        let mut s = online();
        for _ in 0..3 {
            s.start(out(QoS::AtLeastOnce));
        }
        let total = usize::from(u16::MAX) + 10;
        for _ in 0..total {
            let o = stored(&mut s, QoS::ExactlyOnce);
            assert!(s.enqueue(o, limits).is_ok());
        }
        let numbered = s.queued().filter(|o| o.id.is_some()).count();
        assert_eq!(numbered, usize::from(u16::MAX) - 3);
        assert!(s.queued().skip(numbered).all(|o| o.id.is_none()), "unnumbered copies come last");
        // Complete every delivery in turn: each id is unique in use.
        let mut sent = 0;
        loop {
            let ids: Vec<PacketId> = s.inflight().map(|f| f.id).chain(s.queued().filter_map(|o| o.id)).collect();
            let unique: BTreeSet<PacketId> = ids.iter().copied().collect();
            assert_eq!(unique.len(), ids.len(), "an id held twice");
            let Some(first) = s.inflight().next().map(|f| (f.id, f.stage)) else { break };
            let ack = if first.1 == Stage::Unacknowledged { Ack::PubAck } else { Ack::PubRec };
            if ack == Ack::PubRec {
                assert_eq!(s.acknowledge(first.0, Ack::PubRec), Ok(AckOutcome::Release));
                assert_eq!(s.acknowledge(first.0, Ack::PubComp), Ok(AckOutcome::Completed));
            } else {
                assert_eq!(s.acknowledge(first.0, ack), Ok(AckOutcome::Completed));
            }
            while let Some(next) = s.next_queued(limits) {
                s.start(next);
                sent += 1;
            }
            // Checking every turn is quadratic: check a sample.
            if sent > 200 && sent < total - 200 {
                for _ in 0..1000 {
                    let Some(f) = s.inflight().next().map(|f| f.id) else { break };
                    let _ = s.acknowledge(f, Ack::PubRec);
                    let _ = s.acknowledge(f, Ack::PubComp);
                    while let Some(next) = s.next_queued(limits) {
                        s.start(next);
                        sent += 1;
                    }
                }
            }
        }
        assert_eq!(sent, total);
        assert_eq!(s.queued_len(), 0);
    }

    #[test]
    fn window_full_means_queue() {
        let mut s = online();
        s.start(out(QoS::AtLeastOnce));
        s.start(out(QoS::AtLeastOnce));
        assert!(!s.can_send_now(LIMITS));
        assert!(s.enqueue(out(QoS::AtLeastOnce), LIMITS).is_ok());
        assert!(s.is_drained(LIMITS));
        assert!(s.enqueue(out(QoS::AtLeastOnce), LIMITS).is_ok());
        assert!(!s.is_drained(LIMITS));
        assert!(matches!(s.enqueue(out(QoS::AtLeastOnce), LIMITS), Err(QueueFull(_))));
        assert!(s.note_drop());
        assert!(!s.note_drop());
        assert!(s.next_queued(LIMITS).is_none());
        // Past the limit on purpose (a held publisher's copy), then drained.
        s.enqueue_over(out(QoS::AtLeastOnce));
        assert_eq!(s.queued_len(), 3);
        assert!(s.acknowledge(PacketId::MIN, Ack::PubAck).is_ok());
        assert!(s.next_queued(LIMITS).is_some());
        assert!(!s.is_drained(LIMITS));
        assert!(s.acknowledge(PacketId::MIN.next(), Ack::PubAck).is_ok());
        assert!(s.next_queued(LIMITS).is_some());
        assert!(s.is_drained(LIMITS));
        // Queued again: the episode of dropping is over.
        assert!(s.enqueue(out(QoS::AtLeastOnce), LIMITS).is_ok());
        assert!(s.note_drop());
    }

    #[test]
    fn qos2_stages_advance_in_order_and_pubrec_may_repeat() {
        let mut s = online();
        let id = s.start(out(QoS::ExactlyOnce));
        assert_eq!(s.acknowledge(id, Ack::PubRec), Ok(AckOutcome::Release));
        assert_eq!(s.acknowledge(id, Ack::PubRec), Ok(AckOutcome::Release));
        assert_eq!(s.acknowledge(id, Ack::PubComp), Ok(AckOutcome::Completed));
        assert_eq!(s.inflight_len(), 0);
    }

    /// Every acknowledgement against every stage: the one awaited moves
    /// the message on, PUBREC repeats after PUBREL, any other breaks the
    /// flow and leaves the message as it was.
    #[test]
    fn an_ack_of_the_wrong_kind_is_a_violation() {
        use AckOutcome::{Completed, Release};
        // QoS of the copy, PUBREC already received, the ack, and what it
        // does or, for a violation, the ack awaited instead.
        let cases = [
            (QoS::AtLeastOnce, false, Ack::PubAck, Ok(Completed)),
            (QoS::AtLeastOnce, false, Ack::PubRec, Err(Ack::PubAck)),
            (QoS::AtLeastOnce, false, Ack::PubComp, Err(Ack::PubAck)),
            (QoS::ExactlyOnce, false, Ack::PubAck, Err(Ack::PubRec)),
            (QoS::ExactlyOnce, false, Ack::PubRec, Ok(Release)),
            (QoS::ExactlyOnce, false, Ack::PubComp, Err(Ack::PubRec)),
            (QoS::ExactlyOnce, true, Ack::PubAck, Err(Ack::PubComp)),
            (QoS::ExactlyOnce, true, Ack::PubRec, Ok(Release)),
            (QoS::ExactlyOnce, true, Ack::PubComp, Ok(Completed)),
        ];
        for (qos, released, ack, expected) in cases {
            let mut s = online();
            let id = s.start(out(qos));
            if released {
                assert_eq!(s.acknowledge(id, Ack::PubRec), Ok(Release));
            }
            let stage = s.inflight().next().map(|f| f.stage);
            let expected = expected.map_err(|awaited| Violation::WrongAck { id, received: ack, awaited });
            assert_eq!(s.acknowledge(id, ack), expected, "{ack} for QoS {qos}, released {released}");
            if expected.is_err() {
                assert_eq!(s.inflight().next().map(|f| f.stage), stage, "{ack} changed the stage");
            }
        }
    }

    #[test]
    fn an_ack_for_an_id_not_in_flight_is_ignored() {
        let mut s = online();
        let other = PacketId::new(9).expect("non-zero");
        for ack in [Ack::PubAck, Ack::PubRec, Ack::PubComp] {
            assert_eq!(s.acknowledge(other, ack), Ok(AckOutcome::Unknown), "{ack} before any flow");
        }
        let id = s.start(out(QoS::AtLeastOnce));
        assert_eq!(s.acknowledge(id, Ack::PubAck), Ok(AckOutcome::Completed));
        for ack in [Ack::PubAck, Ack::PubRec, Ack::PubComp] {
            assert_eq!(s.acknowledge(id, ack), Ok(AckOutcome::Unknown), "late {ack}");
            assert_eq!(s.acknowledge(other, ack), Ok(AckOutcome::Unknown), "{ack} for an id never used");
        }
    }

    #[test]
    fn duplicate_incoming_qos2_is_recognised() {
        let mut s = online();
        let id = PacketId::new(7).expect("non-zero");
        assert!(s.receive_qos2(id, None));
        assert!(!s.receive_qos2(id, None));
        assert_eq!(s.release(id), Some(None));
        assert!(s.receive_qos2(id, None));
    }

    /// The store against a model map: every client id is found exactly
    /// when it was inserted and not removed since, under the key it got.
    #[test]
    fn the_store_finds_what_a_model_map_holds() {
        fn prop(ops: Vec<(bool, u8)>) -> bool {
            let mut store = SessionStore::default();
            let mut model = std::collections::HashMap::new();
            for (insert, n) in ops {
                // Few distinct ids, so that removals and reinsertions meet.
                let id = ClientId::new(format!("client-{}", n % 32));
                match (insert, model.get(&id).copied()) {
                    (true, None) => {
                        let key = store.insert(Session::new(id.clone(), true));
                        model.insert(id, key);
                    }
                    (false, Some(key)) => {
                        let removed = store.remove(key).map(|s| s.client_id);
                        model.remove(&id);
                        if removed != Some(id) {
                            return false;
                        }
                    }
                    _ => {}
                }
            }
            store.len() == model.len()
                && (0..32).all(|n| {
                    let id = ClientId::new(format!("client-{n}"));
                    store.find(&id) == model.get(&id).copied()
                })
        }
        quickcheck::QuickCheck::new().tests(300).quickcheck(prop as fn(Vec<(bool, u8)>) -> bool);
    }
}
