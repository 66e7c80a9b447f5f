//! The broker's record of what it changed since the last batch, and of
//! which message bodies the store holds.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::{Arc, Mutex, PoisonError};

use hashbrown::hash_table::{Entry, HashTable};

use super::{InboxMark, MessageId, StoreBatch, StoreOp};
use crate::message::Message;
use crate::types::IdHasher;

/// A message body the store holds, and how many stored entries refer to it.
#[derive(Debug)]
struct Held {
    /// Also keeps the body alive, so that its address stays its own.
    message: Arc<Message>,
    id: MessageId,
    refs: u32,
    /// Other shards' journals hold it too (see [`SharedBodies`]).
    shared: bool,
}

/// Bodies that a restore into several shards left referred to by more
/// than one shard's journal, and by how many: the store holds each once,
/// so it is dropped by the last shard to let go of it, never by the
/// first. Bodies stored after the start are each one shard's own.
#[derive(Debug, Default)]
pub(crate) struct SharedBodies {
    holders: Mutex<HashMap<MessageId, u16>>,
}

impl SharedBodies {
    /// Bodies held by the shards counted in `holders` (two or more each).
    pub(crate) fn new(holders: HashMap<MessageId, u16>) -> Self {
        Self { holders: Mutex::new(holders) }
    }

    /// Whether `id` is one of them.
    pub(crate) fn contains(&self, id: MessageId) -> bool {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&id)
    }

    /// One more shard holds `id`.
    fn join(&self, id: MessageId) {
        *self.holders.lock().unwrap_or_else(PoisonError::into_inner).entry(id).or_insert(0) += 1;
    }

    /// A shard lets go of `id`: whether it was the last to hold it.
    fn let_go(&self, id: MessageId) -> bool {
        let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
        match holders.get_mut(&id) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            _ => {
                holders.remove(&id);
                true
            }
        }
    }
}

/// Changes gathered for the next [`StoreBatch`], and the numbering of
/// batches and message bodies.
#[derive(Debug)]
pub(crate) struct Journal {
    ops: Vec<StoreOp>,
    /// How many of `ops` promise something to a client (see
    /// [`Journal::promises`]).
    promising: usize,
    /// The number the open batch will carry.
    next_batch: u64,
    /// Every batch up to this one is durable.
    durable: u64,
    /// The next batch is taken even without changes: output waits for it
    /// (see [`Journal::expect_elsewhere`]).
    forced: bool,
    /// Stored bodies by the address of their shared message: one body per
    /// message however many sessions hold a copy. A table rather than a
    /// map: the address is the held message's own, not kept twice.
    messages: HashTable<Held>,
    next_message: u64,
    /// Keys went past `u64::MAX` once: a new key must be checked.
    wrapped: bool,
    /// This journal's keys are those equal to `keys.0` modulo `keys.1`:
    /// shards of one store draw from disjoint sets ([`Journal::draw_keys`]).
    keys: (u64, u64),
    /// Bodies restored into several shards' journals.
    shared: Option<Arc<SharedBodies>>,
    /// How far the inbox is read, as this journal recorded it
    /// ([`StoreOp::InboxRead`]).
    inbox_read: BTreeMap<(String, u16), InboxMark>,
    /// Changes recorded, how far the inbox is read aside.
    changes: u64,
    /// `changes` when each of `inbox_read` was last recorded.
    marked_at: HashMap<(String, u16), u64>,
}

/// A live message's key among the held bodies: its address, without the
/// low bits that alignment keeps at zero (they are the hash map's bucket,
/// see [`IdHasher`](crate::types::IdHasher)). Two live messages are at
/// least 16 bytes apart.
fn address(message: &Arc<Message>) -> usize {
    Arc::as_ptr(message) as usize >> 4
}

fn hash(address: usize) -> u64 {
    BuildHasherDefault::<IdHasher>::default().hash_one(address)
}

fn held_hash(held: &Held) -> u64 {
    hash(address(&held.message))
}

impl Journal {
    /// A journal continuing after what `state` holds; the bodies of
    /// `state` are known under the messages the broker restored for them.
    pub(crate) fn new(last_batch: u64) -> Self {
        Self {
            ops: Vec::new(),
            promising: 0,
            forced: false,
            next_batch: last_batch + 1,
            durable: last_batch,
            messages: HashTable::new(),
            next_message: 1,
            wrapped: false,
            keys: (0, 1),
            shared: None,
            inbox_read: BTreeMap::new(),
            changes: 0,
            marked_at: HashMap::new(),
        }
    }

    /// Records `op`.
    fn add(&mut self, op: StoreOp) {
        self.changes += 1;
        self.ops.push(op);
    }

    /// Records how far the inbox is read for `shard` of what `node`
    /// wrote; `restored`: read back from the store, nothing to write.
    /// Unless something was recorded since the last record for the same
    /// node and shard, the frames read changed nothing durable (their
    /// clean sessions end with the process), so reading them again at the
    /// next start changes nothing either: nothing is written, and traffic
    /// between clean sessions does not make the store commit.
    pub(crate) fn inbox_read(&mut self, node: &str, shard: u16, mark: InboxMark, restored: bool) {
        let key = (node.to_owned(), shard);
        if self.inbox_read.get(&key) == Some(&mark) {
            return;
        }
        if !restored {
            if self.marked_at.get(&key) == Some(&self.changes) {
                return;
            }
            self.marked_at.insert(key.clone(), self.changes);
            self.ops.push(StoreOp::InboxRead { node: node.to_owned(), run: mark.run, shard, seq: mark.seq });
        }
        self.inbox_read.insert(key, mark);
    }

    /// How far the inbox is read, by (writing node, shard).
    pub(crate) fn inbox_marks(&self) -> &BTreeMap<(String, u16), InboxMark> {
        &self.inbox_read
    }

    /// Makes this journal that of shard `shard` of `shards` sharing one
    /// store: it draws only keys equal to `shard` modulo `shards`, so that
    /// no two shards give a new body the same key.
    pub(crate) fn draw_keys(&mut self, shard: u16, shards: u16) {
        self.keys = (u64::from(shard), u64::from(shards.max(1)));
        self.next_message = self.first_key_from(self.next_message);
    }

    /// Bodies this journal adopts may be held by other shards too.
    pub(crate) fn share_bodies(&mut self, shared: Arc<SharedBodies>) {
        self.shared = Some(shared);
    }

    /// The first of this journal's keys at or after `from` (and after 0),
    /// `None` past the last.
    fn key_at_or_after(&self, from: u64) -> Option<u64> {
        let (offset, step) = self.keys;
        let from = from.max(1);
        let rest = (offset + step - from % step) % step;
        from.checked_add(rest)
    }

    /// As [`key_at_or_after`](Self::key_at_or_after), starting again from
    /// the first key past the last.
    fn first_key_from(&mut self, from: u64) -> u64 {
        self.key_at_or_after(from).unwrap_or_else(|| {
            self.wrapped = true;
            self.key_at_or_after(1).unwrap_or(1)
        })
    }

    /// Continues numbering after a store's last batch and its highest
    /// body key.
    pub(crate) fn resume_after(&mut self, last_batch: u64, last_message: Option<MessageId>) {
        self.next_batch = self.next_batch.max(last_batch + 1);
        self.durable = self.durable.max(last_batch);
        let last = last_message.map_or(0, |id| id.0);
        let next = match last.checked_add(1) {
            Some(next) => self.next_message.max(next),
            None => {
                self.wrapped = true;
                1
            }
        };
        self.next_message = self.first_key_from(next);
    }

    /// Makes room for `bodies` more bodies (a restore adopting them).
    pub(crate) fn reserve(&mut self, bodies: usize) {
        self.messages.reserve(bodies, held_hash);
    }

    /// Adopts a restored body stored under `id`, referred to `refs` times.
    pub(crate) fn adopt(&mut self, id: MessageId, message: &Arc<Message>, refs: u32) {
        let shared = self.shared.as_ref().is_some_and(|s| s.contains(id));
        self.hold(Held { message: message.clone(), id, refs, shared });
    }

    fn hold(&mut self, held: Held) {
        let key = address(&held.message);
        match self.messages.entry(hash(key), |h| address(&h.message) == key, held_hash) {
            Entry::Occupied(mut entry) => *entry.get_mut() = held,
            Entry::Vacant(entry) => {
                entry.insert(held);
            }
        }
    }

    fn held_mut(&mut self, message: &Arc<Message>) -> Option<&mut Held> {
        let key = address(message);
        self.messages.find_mut(hash(key), |h| address(&h.message) == key)
    }

    /// Records a change that promises nothing to a client by itself: a
    /// removal, a will, a copy moving on.
    pub(crate) fn push(&mut self, op: StoreOp) {
        self.add(op);
    }

    /// Records a change that what answers the client's packet promises (a
    /// retained message, a session, a subscription, a new copy, an
    /// incoming message): that answer waits until it is durable.
    pub(crate) fn promise(&mut self, op: StoreOp) {
        self.promising += 1;
        self.add(op);
    }

    /// What answers the client's packet promises a change another shard
    /// makes: it waits for the batch being gathered, taken even if empty,
    /// which the broker releases once the other shards confirm (see
    /// [`Durability`](crate::shard::Durability)).
    pub(crate) fn expect_elsewhere(&mut self) {
        self.forced = true;
        self.promising += 1;
    }

    /// How many promising changes were recorded since the last batch was
    /// taken.
    pub(crate) fn promises(&self) -> usize {
        self.promising
    }

    /// One more stored entry refers to `message`: its key, its body
    /// recorded first if the store does not hold it yet.
    pub(crate) fn refer(&mut self, message: &Arc<Message>) -> MessageId {
        if let Some(held) = self.held_mut(message) {
            held.refs += 1;
            return held.id;
        }
        let id = self.fresh_id();
        self.hold(Held { message: message.clone(), id, refs: 1, shared: false });
        self.add(StoreOp::Message { id, message: message.clone() });
        id
    }

    /// A key no stored body has. Keys count up from the highest restored
    /// one; past the last (a file can hold any key), they start again
    /// from the first, skipping those in use. With shards, only this
    /// shard's keys are drawn (a key restored into another shard could
    /// come round again only after 2^64 / shards new bodies).
    fn fresh_id(&mut self) -> MessageId {
        loop {
            let id = self.next_message;
            // `id` is one of this journal's keys, and so is the one a
            // step on.
            self.next_message = match id.checked_add(self.keys.1) {
                Some(next) => next,
                None => {
                    self.wrapped = true;
                    self.key_at_or_after(1).unwrap_or(1)
                }
            };
            if !self.wrapped || !self.messages.iter().any(|held| held.id.0 == id) {
                return MessageId(id);
            }
        }
    }

    /// `message`, stored here, may be referred to by other shards' journals
    /// under its key from now on (see [`SharedBodies`]): its key, if it is
    /// stored and the shards share bodies.
    pub(crate) fn share_with_others(&mut self, message: &Arc<Message>) -> Option<MessageId> {
        let shared = self.shared.clone()?;
        let held = self.held_mut(message)?;
        if !held.shared {
            held.shared = true;
            shared.join(held.id);
        }
        Some(held.id)
    }

    /// `message` came from another shard, which stores it under `id` and
    /// keeps it until this shard has its copies on disk: copies made here
    /// refer to the same body, and the store holds it once. Whether it
    /// was taken ([`let_go_if_unreferenced`](Self::let_go_if_unreferenced)
    /// undoes it).
    pub(crate) fn hold_foreign(&mut self, message: &Arc<Message>, id: MessageId) -> bool {
        let Some(shared) = self.shared.clone() else { return false };
        if self.held_mut(message).is_some() {
            return false;
        }
        shared.join(id);
        self.hold(Held { message: message.clone(), id, refs: 0, shared: true });
        true
    }

    /// A body taken with [`hold_foreign`](Self::hold_foreign) that nothing
    /// here came to refer to is let go.
    pub(crate) fn let_go_if_unreferenced(&mut self, message: &Arc<Message>) {
        let key = address(message);
        let Ok(entry) = self.messages.find_entry(hash(key), |h| address(&h.message) == key) else { return };
        if entry.get().refs > 0 {
            return;
        }
        let id = entry.get().id;
        entry.remove();
        if self.shared.as_ref().is_none_or(|s| s.let_go(id)) {
            self.add(StoreOp::DropMessage { id });
        }
    }

    /// The key `message` is stored under, if it is.
    pub(crate) fn stored_id(&self, message: &Arc<Message>) -> Option<MessageId> {
        let key = address(message);
        self.messages.find(hash(key), |h| address(&h.message) == key).map(|held| held.id)
    }

    /// A stored entry referring to `message` is gone: the body goes with
    /// the last one.
    pub(crate) fn release(&mut self, message: &Arc<Message>) {
        let key = address(message);
        let Ok(mut entry) = self.messages.find_entry(hash(key), |h| address(&h.message) == key) else { return };
        let held = entry.get_mut();
        held.refs = held.refs.saturating_sub(1);
        if held.refs == 0 {
            let (id, shared) = (held.id, held.shared);
            entry.remove();
            // Another shard still holding it drops it in its turn.
            if !shared || self.shared.as_ref().is_none_or(|s| s.let_go(id)) {
                self.add(StoreOp::DropMessage { id });
            }
        }
    }

    /// The number the open batch will carry if it is taken now, or that of
    /// the last one taken if nothing was recorded since: output that
    /// waits for it waits for no more than it must.
    pub(crate) fn pending_batch(&self) -> u64 {
        if self.ops.is_empty() && !self.forced { self.next_batch - 1 } else { self.next_batch }
    }

    /// Batches taken and not yet reported durable.
    pub(crate) fn unconfirmed(&self) -> u64 {
        (self.next_batch - 1).saturating_sub(self.durable)
    }

    /// Whether batch `seq` is durable.
    pub(crate) fn is_durable(&self, seq: u64) -> bool {
        seq <= self.durable
    }

    /// The changes gathered, as the next batch, if there are any.
    pub(crate) fn take_batch(&mut self) -> Option<StoreBatch> {
        if self.ops.is_empty() && !self.forced {
            return None;
        }
        let seq = self.next_batch;
        self.next_batch += 1;
        self.promising = 0;
        self.forced = false;
        Some(StoreBatch { seq, ops: std::mem::take(&mut self.ops) })
    }

    /// The runtime reports batches up to `seq` durable.
    pub(crate) fn stored(&mut self, seq: u64) {
        self.durable = self.durable.max(seq.min(self.next_batch - 1));
    }

    /// Bodies held, for tests.
    #[cfg(test)]
    pub(crate) fn bodies(&self) -> usize {
        self.messages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::TopicName;
    use crate::types::QoS;
    use bytes::Bytes;

    fn message() -> Arc<Message> {
        let topic = TopicName::new("t").expect("valid topic");
        Arc::new(Message::new(topic, Bytes::from_static(b"x"), QoS::AtLeastOnce, false))
    }

    #[test]
    fn how_far_the_inbox_is_read_is_recorded_only_after_changes() {
        let mut journal = Journal::new(0);
        let mark = |seq| InboxMark { run: 7, seq };
        let ops = |journal: &mut Journal| journal.take_batch().map_or(0, |batch| batch.ops.len());
        // Restored: known, not written again.
        journal.inbox_read("b", 1, mark(3), true);
        assert_eq!(ops(&mut journal), 0);
        assert_eq!(journal.inbox_marks()[&("b".to_owned(), 1)], mark(3));
        // The first record for a shard is written; one with nothing
        // stored since is not (what it covers changed nothing durable).
        journal.inbox_read("b", 1, mark(4), false);
        journal.inbox_read("b", 9, mark(4), false);
        assert_eq!(ops(&mut journal), 2);
        journal.inbox_read("b", 1, mark(5), false);
        assert_eq!(ops(&mut journal), 0);
        assert_eq!(journal.inbox_marks()[&("b".to_owned(), 1)], mark(4));
        // After a change, it is written, for each shard the frames were
        // for (they come before their records).
        journal.push(StoreOp::DropRetained { topic: TopicName::new("t").expect("valid topic") });
        journal.inbox_read("b", 1, mark(6), false);
        journal.inbox_read("b", 9, mark(6), false);
        assert_eq!(ops(&mut journal), 3);
        assert_eq!(journal.inbox_marks()[&("b".to_owned(), 9)], mark(6));
    }

    #[test]
    fn a_body_is_recorded_once_and_dropped_with_its_last_reference() {
        let mut journal = Journal::new(0);
        let (a, b) = (message(), message());
        let id = journal.refer(&a);
        assert_eq!(journal.refer(&a), id);
        assert_ne!(journal.refer(&b), id);
        journal.release(&a);
        assert_eq!(journal.bodies(), 2);
        journal.release(&a);
        let batch = journal.take_batch().expect("changes");
        assert_eq!(batch.seq, 1);
        let kinds: Vec<_> = batch.ops.iter().map(std::mem::discriminant).collect();
        let expected = [
            StoreOp::Message { id, message: a.clone() },
            StoreOp::Message { id, message: b.clone() },
            StoreOp::DropMessage { id },
        ];
        assert_eq!(kinds, expected.iter().map(std::mem::discriminant).collect::<Vec<_>>());
        assert_eq!(journal.bodies(), 1);
        assert!(journal.take_batch().is_none());
    }

    #[test]
    fn keys_start_again_from_1_past_the_last_skipping_those_in_use() {
        let mut journal = Journal::new(0);
        let (one, last) = (message(), message());
        journal.resume_after(0, Some(MessageId(u64::MAX)));
        journal.adopt(MessageId(1), &one, 1);
        journal.adopt(MessageId(u64::MAX), &last, 1);
        assert_eq!(journal.refer(&message()), MessageId(2));
        assert_eq!(journal.refer(&message()), MessageId(3));
    }

    #[test]
    fn each_shard_draws_keys_of_its_own_and_a_shared_body_leaves_with_its_last_holder() {
        let (mut zero, mut one) = (Journal::new(0), Journal::new(0));
        zero.draw_keys(0, 2);
        one.draw_keys(1, 2);
        zero.resume_after(0, Some(MessageId(6)));
        one.resume_after(0, Some(MessageId(6)));
        let keys = |j: &mut Journal| (0..3).map(|_| j.refer(&message()).0).collect::<Vec<_>>();
        assert_eq!(keys(&mut zero), [8, 10, 12]);
        assert_eq!(keys(&mut one), [7, 9, 11]);
        // Shard 0 stores a body and lends it to shard 1, which copies it.
        let shared = Arc::new(SharedBodies::default());
        zero.share_bodies(shared.clone());
        one.share_bodies(shared);
        let body = message();
        let id = zero.refer(&body);
        assert_eq!(zero.share_with_others(&body), Some(id));
        assert!(one.hold_foreign(&body, id));
        assert_eq!(one.refer(&body), id);
        one.let_go_if_unreferenced(&body);
        zero.take_batch();
        one.take_batch();
        let drops = |j: &mut Journal| {
            j.take_batch().map_or(0, |b| b.ops.iter().filter(|op| matches!(op, StoreOp::DropMessage { .. })).count())
        };
        zero.release(&body);
        assert_eq!(drops(&mut zero), 0, "shard 1 still holds it");
        one.release(&body);
        assert_eq!(drops(&mut one), 1, "the last holder drops it");
    }

    #[test]
    fn batches_count_up_and_durability_follows_the_reports() {
        let mut journal = Journal::new(4);
        assert_eq!(journal.pending_batch(), 4);
        journal.refer(&message());
        assert_eq!(journal.pending_batch(), 5);
        assert_eq!(journal.take_batch().map(|b| b.seq), Some(5));
        assert!(journal.is_durable(4) && !journal.is_durable(5));
        // A report beyond what was taken is capped.
        journal.stored(9);
        assert!(journal.is_durable(5) && !journal.is_durable(6));
    }
}
