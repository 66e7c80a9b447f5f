//! Per-client session state: subscriptions, the outgoing in-flight window,
//! the queue behind it, and incoming QoS 2 messages awaiting PUBREL.
//!
//! Design: the session never touches the router or the network. It answers
//! what to send; the broker encodes and writes. The in-flight window is a
//! `VecDeque` in send order: acks usually arrive in order, so lookups hit
//! the front, and resends on reconnect walk it front to back
//! ([MQTT-4.4.0-1], [MQTT-4.6.0-1]).

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use crate::message::Message;
use crate::peer::ListenerId;
use crate::topic::TopicFilter;
use crate::types::{ClientId, ConnId, PacketId, QoS};

/// One copy of a message on its way to this session.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) message: Arc<Message>,
    /// QoS of this copy: the lower of the message's and the subscription's.
    pub(crate) qos: QoS,
    /// RETAIN flag of this copy (set only for retained messages sent on
    /// SUBSCRIBE, [MQTT-3.3.1-8], [MQTT-3.3.1-9]).
    pub(crate) retain: bool,
}

impl Outgoing {
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

#[derive(Debug)]
pub(crate) struct Inflight {
    pub(crate) id: PacketId,
    pub(crate) stage: Stage,
    pub(crate) out: Outgoing,
}

/// Why a copy could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

/// The answer to a PUBREC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PubRecOutcome {
    /// Send PUBREL for this id.
    Release,
    /// No QoS 2 message with this id is in flight.
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
    pub(crate) max_queued: usize,
    pub(crate) max_queued_bytes: usize,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) client_id: ClientId,
    pub(crate) clean: bool,
    pub(crate) conn: Option<ConnId>,
    pub(crate) subscriptions: BTreeMap<TopicFilter, QoS>,
    /// The user name and listener of the connection that last bound the
    /// session: an offline session is judged by them when the policy
    /// changes.
    pub(crate) owner: (Option<Arc<str>>, ListenerId),
    /// QoS 1/2 and queueing state, made on first use: a client that has
    /// only connected (or only uses QoS 0 while online) holds none.
    flow: Option<Box<Flow>>,
}

/// What a session holds for messages in flight or waiting.
#[derive(Debug)]
struct Flow {
    inflight: VecDeque<Inflight>,
    queue: VecDeque<Outgoing>,
    queued_bytes: usize,
    /// Incoming QoS 2 messages: PUBREC sent, PUBREL awaited. The message is
    /// routed on PUBREL, as Mosquitto does; `None` marks one that was
    /// dropped (too large, refused) but still owes its handshake.
    incoming: BTreeMap<PacketId, Option<Arc<Message>>>,
    next_id: PacketId,
    /// Copies dropped because the queue was full, since the last report.
    dropped: u64,
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            incoming: BTreeMap::new(),
            next_id: PacketId::MIN,
            dropped: 0,
        }
    }
}

impl Session {
    /// The user name of the connection that last bound the session (the
    /// one bound to it now, while the client is connected).
    pub(crate) fn username(&self) -> Option<&str> {
        self.owner.0.as_deref()
    }

    pub(crate) fn new(client_id: ClientId, clean: bool) -> Self {
        Self {
            client_id,
            clean,
            conn: None,
            subscriptions: BTreeMap::new(),
            owner: (None, ListenerId::default()),
            flow: None,
        }
    }

    fn flow(&mut self) -> &mut Flow {
        self.flow.get_or_insert_with(Box::default)
    }

    /// Whether a new QoS 1/2 copy may go out now rather than wait in the
    /// queue (which keeps order: nothing overtakes a queued copy).
    pub(crate) fn can_send_now(&self, limits: Limits) -> bool {
        self.conn.is_some() && self.flow.as_ref().is_none_or(|f| f.queue.is_empty() && f.inflight.len() < limits.window)
    }

    /// Puts `out` in flight under a fresh packet id and returns the id.
    /// Ids count from 1 and skip those in use ([MQTT-2.3.1-4]).
    pub(crate) fn start(&mut self, out: Outgoing) -> PacketId {
        let flow = self.flow();
        let mut id = flow.next_id;
        while flow.inflight.iter().any(|f| f.id == id) {
            id = id.next();
        }
        flow.next_id = id.next();
        let stage = match out.qos {
            QoS::ExactlyOnce => Stage::Unreceived,
            _ => Stage::Unacknowledged,
        };
        flow.inflight.push_back(Inflight { id, stage, out });
        id
    }

    /// Queues `out` behind the window, within the limits.
    pub(crate) fn enqueue(&mut self, out: Outgoing, limits: Limits) -> Result<(), QueueFull> {
        let flow = self.flow();
        let full_count = limits.max_queued != 0 && flow.queue.len() >= limits.max_queued;
        let full_bytes =
            limits.max_queued_bytes != 0 && flow.queued_bytes + out.payload_len() > limits.max_queued_bytes;
        if full_count || full_bytes {
            flow.dropped += 1;
            return Err(QueueFull);
        }
        flow.queued_bytes += out.payload_len();
        flow.queue.push_back(out);
        Ok(())
    }

    /// Copies dropped because the queue was full, since the last report.
    pub(crate) fn dropped(&self) -> u64 {
        self.flow.as_ref().map_or(0, |f| f.dropped)
    }

    /// The next queued copy, if the window has room for it.
    pub(crate) fn next_queued(&mut self, limits: Limits) -> Option<Outgoing> {
        self.conn?;
        let flow = self.flow.as_mut()?;
        if flow.inflight.len() >= limits.window {
            return None;
        }
        let out = flow.queue.pop_front()?;
        flow.queued_bytes -= out.payload_len();
        Some(out)
    }

    /// Completes a QoS 1 delivery; whether `id` was awaiting PUBACK.
    pub(crate) fn puback(&mut self, id: PacketId) -> bool {
        self.complete(id, Stage::Unacknowledged)
    }

    /// Moves a QoS 2 delivery to its release stage.
    pub(crate) fn pubrec(&mut self, id: PacketId) -> PubRecOutcome {
        let found = self.flow.as_mut().and_then(|flow| flow.inflight.iter_mut().find(|f| f.id == id));
        match found {
            Some(f) if f.stage != Stage::Unacknowledged => {
                f.stage = Stage::Released;
                PubRecOutcome::Release
            }
            _ => PubRecOutcome::Unknown,
        }
    }

    /// Completes a QoS 2 delivery; whether `id` was awaiting PUBCOMP.
    pub(crate) fn pubcomp(&mut self, id: PacketId) -> bool {
        self.complete(id, Stage::Released)
    }

    fn complete(&mut self, id: PacketId, stage: Stage) -> bool {
        let Some(flow) = self.flow.as_mut() else { return false };
        match flow.inflight.iter().position(|f| f.id == id && f.stage == stage) {
            Some(at) => {
                flow.inflight.remove(at);
                true
            }
            None => false,
        }
    }

    /// The in-flight window in send order, for resending on reconnect.
    pub(crate) fn inflight(&self) -> impl Iterator<Item = &Inflight> {
        self.flow.iter().flat_map(|f| f.inflight.iter())
    }

    /// Forgets an in-flight copy that will not be resent (it expired).
    pub(crate) fn forget(&mut self, id: PacketId) {
        if let Some(flow) = self.flow.as_mut() {
            flow.inflight.retain(|f| f.id != id);
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

    /// Takes the message released by PUBREL `id`, if one is held.
    pub(crate) fn release(&mut self, id: PacketId) -> Option<Arc<Message>> {
        self.flow.as_mut()?.incoming.remove(&id).flatten()
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
        Outgoing { message, qos, retain: false }
    }

    const LIMITS: Limits = Limits { window: 2, max_queued: 2, max_queued_bytes: 0 };

    fn online() -> Session {
        let mut s = Session::new(ClientId::new("c"), false);
        s.conn = Some(ConnId(1));
        s
    }

    #[test]
    fn packet_ids_count_from_one_and_skip_ids_in_use() {
        let mut s = online();
        let a = s.start(out(QoS::AtLeastOnce));
        let b = s.start(out(QoS::AtLeastOnce));
        assert_eq!((a.get(), b.get()), (1, 2));
        assert!(s.puback(a));
        s.flow().next_id = a;
        // 1 is free again, 2 is still in flight.
        assert_eq!(s.start(out(QoS::AtLeastOnce)).get(), 1);
        assert_eq!(s.start(out(QoS::AtLeastOnce)).get(), 3);
    }

    #[test]
    fn window_full_means_queue() {
        let mut s = online();
        s.start(out(QoS::AtLeastOnce));
        s.start(out(QoS::AtLeastOnce));
        assert!(!s.can_send_now(LIMITS));
        assert_eq!(s.enqueue(out(QoS::AtLeastOnce), LIMITS), Ok(()));
        assert_eq!(s.enqueue(out(QoS::AtLeastOnce), LIMITS), Ok(()));
        assert_eq!(s.enqueue(out(QoS::AtLeastOnce), LIMITS), Err(QueueFull));
        assert_eq!(s.dropped(), 1);
        assert!(s.next_queued(LIMITS).is_none());
    }

    #[test]
    fn qos2_stages_advance_only_in_order() {
        let mut s = online();
        let id = s.start(out(QoS::ExactlyOnce));
        assert!(!s.pubcomp(id));
        assert!(!s.puback(id));
        assert_eq!(s.pubrec(id), PubRecOutcome::Release);
        assert_eq!(s.pubrec(id), PubRecOutcome::Release);
        assert!(s.pubcomp(id));
        assert_eq!(s.pubrec(id), PubRecOutcome::Unknown);
    }

    #[test]
    fn duplicate_incoming_qos2_is_recognised() {
        let mut s = online();
        let id = PacketId::new(7).expect("non-zero");
        assert!(s.receive_qos2(id, None));
        assert!(!s.receive_qos2(id, None));
        assert_eq!(s.release(id), None);
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
