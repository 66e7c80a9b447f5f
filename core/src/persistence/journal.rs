//! The broker's record of what it changed since the last batch, and of
//! which message bodies the store holds.

use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::Arc;

use hashbrown::hash_table::{Entry, HashTable};

use super::{MessageId, StoreBatch, StoreOp};
use crate::message::Message;
use crate::types::IdHasher;

/// A message body the store holds, and how many stored entries refer to it.
#[derive(Debug)]
struct Held {
    /// Also keeps the body alive, so that its address stays its own.
    message: Arc<Message>,
    id: MessageId,
    refs: u32,
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
    /// Stored bodies by the address of their shared message: one body per
    /// message however many sessions hold a copy. A table rather than a
    /// map: the address is the held message's own, not kept twice.
    messages: HashTable<Held>,
    next_message: u64,
    /// Keys went past `u64::MAX` once: a new key must be checked.
    wrapped: bool,
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
            next_batch: last_batch + 1,
            durable: last_batch,
            messages: HashTable::new(),
            next_message: 1,
            wrapped: false,
        }
    }

    /// Continues numbering after a store's last batch and its highest
    /// body key.
    pub(crate) fn resume_after(&mut self, last_batch: u64, last_message: Option<MessageId>) {
        self.next_batch = self.next_batch.max(last_batch + 1);
        self.durable = self.durable.max(last_batch);
        let last = last_message.map_or(0, |id| id.0);
        match last.checked_add(1) {
            Some(next) => self.next_message = self.next_message.max(next),
            None => {
                self.wrapped = true;
                self.next_message = 1;
            }
        }
    }

    /// Makes room for `bodies` more bodies (a restore adopting them).
    pub(crate) fn reserve(&mut self, bodies: usize) {
        self.messages.reserve(bodies, held_hash);
    }

    /// Adopts a restored body stored under `id`, referred to `refs` times.
    pub(crate) fn adopt(&mut self, id: MessageId, message: &Arc<Message>, refs: u32) {
        self.hold(Held { message: message.clone(), id, refs });
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
        self.ops.push(op);
    }

    /// Records a change that what answers the client's packet promises (a
    /// retained message, a session, a subscription, a new copy, an
    /// incoming message): that answer waits until it is durable.
    pub(crate) fn promise(&mut self, op: StoreOp) {
        self.promising += 1;
        self.ops.push(op);
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
        self.hold(Held { message: message.clone(), id, refs: 1 });
        self.ops.push(StoreOp::Message { id, message: message.clone() });
        id
    }

    /// A key no stored body has. Keys count up from the highest restored
    /// one; past the last (a file can hold any key), they start again
    /// from 1, skipping those in use.
    fn fresh_id(&mut self) -> MessageId {
        loop {
            let id = self.next_message;
            self.next_message = match id.checked_add(1) {
                Some(next) => next,
                None => {
                    self.wrapped = true;
                    1
                }
            };
            if !self.wrapped || !self.messages.iter().any(|held| held.id.0 == id) {
                return MessageId(id);
            }
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
            let id = held.id;
            entry.remove();
            self.ops.push(StoreOp::DropMessage { id });
        }
    }

    /// The number the open batch will carry if it is taken now, or that of
    /// the last one taken if nothing was recorded since: output that
    /// waits for it waits for no more than it must.
    pub(crate) fn pending_batch(&self) -> u64 {
        if self.ops.is_empty() { self.next_batch - 1 } else { self.next_batch }
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
        if self.ops.is_empty() {
            return None;
        }
        let seq = self.next_batch;
        self.next_batch += 1;
        self.promising = 0;
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
