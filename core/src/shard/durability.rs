//! What a shard's acknowledgements wait for when the shards share a
//! store.
//!
//! A PUBACK promises that the message is on disk wherever it must be
//! kept, and with shards that may be another shard's batch: a copy for a
//! persistent session of that shard, or the retained message it records.
//! So a shard counts the messages it posts that another shard may store,
//! and takes each of its own batches as releasing output only once it is
//! on disk *and* every shard has said that what was posted to it before
//! that batch was taken is on disk too. The receiving shard counts the
//! same messages and says so ([`ShardMessage::Stored`](super::ShardMessage))
//! once the batch that holds their effects is on disk.
//!
//! Counts restart with the process, as the shards do.

use std::collections::VecDeque;
use std::sync::Arc;

use super::ShardId;
use crate::message::Message;
use crate::types::{ClientId, PacketId};

/// An incoming QoS 2 message released (PUBREL) and routed: its record
/// leaves the store once the shards it was posted to have their copies on
/// disk, so that a crash in between routes it again at restart rather
/// than losing it.
#[derive(Debug)]
pub(crate) struct Released {
    /// Its publisher.
    pub(crate) client: ClientId,
    /// Its packet id.
    pub(crate) packet_id: PacketId,
    /// The message, if it was kept.
    pub(crate) message: Option<Arc<Message>>,
}

/// Whether another shard may store `message` for what its publisher was
/// told: a QoS 1/2 copy, or a retained message.
pub(crate) fn may_be_stored(message: &Message) -> bool {
    message.qos != crate::types::QoS::AtMostOnce || message.retain
}

/// Whether every count of `sent` is within `confirmed`.
fn covered(sent: &[u64], confirmed: &[u64]) -> bool {
    sent.iter().zip(confirmed).all(|(sent, confirmed)| sent <= confirmed)
}

/// One shard's side of the counts (see the [module](self)).
///
/// Route changes sent to the shards of other nodes are counted too: a
/// SUBACK, or the CONNACK of a session that moved in, waits until each of
/// them said it took them in ([`ShardMessage::Routed`](super::ShardMessage)),
/// so that a message published on any node after it reaches the
/// subscriber, as within one process, where shards take their boards
/// before each read.
#[derive(Debug)]
pub(crate) struct Durability {
    /// Messages that may be stored posted to each shard.
    sent: Vec<u64>,
    /// How many of them each shard said are on disk.
    confirmed: Vec<u64>,
    /// Route changes sent to each shard of another node.
    routes_sent: Vec<u64>,
    /// How many of them each said it took in.
    routes_confirmed: Vec<u64>,
    /// Own batches taken after posting, with the counts posted by then:
    /// a batch's output waits for those counts to be confirmed.
    marks: VecDeque<Mark>,
    /// `sent` changed since the last mark.
    unmarked: bool,
    /// Such messages received from each shard.
    received: Vec<u64>,
    /// Counts received, to confirm once the own batch holding their
    /// effects is on disk: (batch, from, count).
    to_confirm: VecDeque<(u64, ShardId, u64)>,
    /// Own batches on disk up to this one.
    on_disk: u64,
    /// Releases held back, with the counts posted by then.
    held: VecDeque<(Vec<u64>, Released)>,
}

/// An own batch taken after posting, and the counts posted by then.
#[derive(Debug)]
struct Mark {
    seq: u64,
    sent: Vec<u64>,
    routes: Vec<u64>,
}

impl Mark {
    fn is_covered(&self, durability: &Durability) -> bool {
        covered(&self.sent, &durability.confirmed) && covered(&self.routes, &durability.routes_confirmed)
    }
}

impl Durability {
    /// Counts for `count` shards.
    pub(crate) fn new(count: u16) -> Self {
        let zeros = vec![0; usize::from(count)];
        Self {
            sent: zeros.clone(),
            confirmed: zeros.clone(),
            routes_sent: zeros.clone(),
            routes_confirmed: zeros.clone(),
            marks: VecDeque::new(),
            unmarked: false,
            received: zeros,
            to_confirm: VecDeque::new(),
            on_disk: 0,
            held: VecDeque::new(),
        }
    }

    /// Whether every message posted is confirmed.
    pub(crate) fn is_settled(&self) -> bool {
        covered(&self.sent, &self.confirmed)
    }

    /// Holds `released` back until what was posted so far is confirmed.
    pub(crate) fn hold_back(&mut self, released: Released) {
        self.held.push_back((self.sent.clone(), released));
    }

    /// The releases held back whose posts are now all confirmed.
    pub(crate) fn settled_releases(&mut self) -> Vec<Released> {
        let mut settled = Vec::new();
        while self.held.front().is_some_and(|(counts, _)| covered(counts, &self.confirmed)) {
            if let Some((_, released)) = self.held.pop_front() {
                settled.push(released);
            }
        }
        settled
    }

    /// A message that may be stored was posted to `to`.
    pub(crate) fn posted(&mut self, to: ShardId) {
        let at = self.slot(to);
        self.sent[at] += 1;
        self.unmarked = true;
    }

    /// Where `shard`'s counts are, made room for: the shards of other
    /// nodes are numbered as they join. Counts kept earlier (marks, held
    /// releases) are shorter, their missing counts 0.
    fn slot(&mut self, shard: ShardId) -> usize {
        let at = usize::from(shard.0);
        if at >= self.sent.len() {
            let all = [&mut self.sent, &mut self.confirmed, &mut self.received, &mut self.routes_sent];
            for counts in all.into_iter().chain([&mut self.routes_confirmed]) {
                counts.resize(at + 1, 0);
            }
        }
        at
    }

    /// A route change was sent to `to`, a shard of another node.
    pub(crate) fn posted_route(&mut self, to: ShardId) {
        let at = self.slot(to);
        self.routes_sent[at] += 1;
        self.unmarked = true;
    }

    /// Shard `from` of another node took in `count` of the route changes
    /// sent to it.
    pub(crate) fn routes_taken(&mut self, from: ShardId, count: u64) {
        let at = self.slot(from);
        self.routes_confirmed[at] = self.routes_confirmed[at].max(count);
    }

    /// Shard `peer` of another node left: nothing sent to it is waited
    /// for any more. (What may be stored is confirmed by the link once in
    /// its inbox, whether it is there or not.)
    pub(crate) fn forget_routes(&mut self, peer: ShardId) {
        let at = self.slot(peer);
        self.routes_confirmed[at] = self.routes_sent[at];
    }

    /// Own batch `seq` was taken: its output also waits for what was
    /// posted so far.
    pub(crate) fn batch_taken(&mut self, seq: u64) {
        if std::mem::take(&mut self.unmarked) {
            self.marks.push_back(Mark { seq, sent: self.sent.clone(), routes: self.routes_sent.clone() });
        }
    }

    /// Own batches up to `seq` are on disk.
    pub(crate) fn on_disk(&mut self, seq: u64) {
        self.on_disk = self.on_disk.max(seq);
    }

    /// Shard `from` says `count` of the messages posted to it are on
    /// disk.
    pub(crate) fn confirmed(&mut self, from: ShardId, count: u64) {
        let at = self.slot(from);
        self.confirmed[at] = self.confirmed[at].max(count);
    }

    /// The last own batch whose output may go: on disk, and everything
    /// posted before it was taken confirmed.
    pub(crate) fn releasable(&mut self) -> u64 {
        while self.marks.front().is_some_and(|mark| mark.is_covered(self)) {
            self.marks.pop_front();
        }
        match self.marks.front() {
            Some(mark) => self.on_disk.min(mark.seq - 1),
            None => self.on_disk,
        }
    }

    /// A message that may be stored came from `from`; its effects here are
    /// in own batch `batch`.
    pub(crate) fn received(&mut self, from: ShardId, batch: u64) {
        let at = self.slot(from);
        self.received[at] += 1;
        let count = self.received[at];
        match self.to_confirm.back_mut() {
            Some(last) if last.0 == batch && last.1 == from => last.2 = count,
            _ => self.to_confirm.push_back((batch, from, count)),
        }
    }

    /// The confirmations now due, at most one per shard: the counts whose
    /// batch is on disk.
    pub(crate) fn due(&mut self) -> Vec<(ShardId, u64)> {
        let mut due: Vec<(ShardId, u64)> = Vec::new();
        while let Some(&(batch, from, count)) = self.to_confirm.front() {
            if batch > self.on_disk {
                break;
            }
            self.to_confirm.pop_front();
            match due.iter_mut().find(|(shard, _)| *shard == from) {
                Some(entry) => entry.1 = count,
                None => due.push((from, count)),
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_released_once_on_disk_and_what_was_posted_before_it_is_confirmed() {
        let mut d = Durability::new(2);
        d.batch_taken(1);
        d.posted(ShardId(1));
        d.batch_taken(2);
        d.posted(ShardId(1));
        d.batch_taken(3);
        d.on_disk(3);
        // Batch 1 took nothing posted; 2 waits for one message, 3 for two.
        assert_eq!(d.releasable(), 1);
        d.confirmed(ShardId(1), 1);
        assert_eq!(d.releasable(), 2);
        d.confirmed(ShardId(1), 2);
        assert_eq!(d.releasable(), 3);
    }

    #[test]
    fn a_shard_of_another_node_gets_counts_as_it_joins() {
        let mut d = Durability::new(2);
        d.posted(ShardId(1));
        d.batch_taken(1);
        d.posted(ShardId(5));
        d.batch_taken(2);
        d.on_disk(2);
        d.confirmed(ShardId(1), 1);
        assert_eq!(d.releasable(), 1);
        d.confirmed(ShardId(5), 1);
        assert_eq!(d.releasable(), 2);
        assert!(d.is_settled());
    }

    #[test]
    fn a_batch_after_a_route_change_waits_for_the_other_node_to_take_it_in() {
        let mut d = Durability::new(1);
        d.posted_route(ShardId(3));
        d.posted_route(ShardId(4));
        d.batch_taken(1);
        d.on_disk(1);
        assert_eq!(d.releasable(), 0);
        d.routes_taken(ShardId(3), 1);
        assert_eq!(d.releasable(), 0);
        // The other one leaves: nothing is waited for from it.
        d.forget_routes(ShardId(4));
        assert_eq!(d.releasable(), 1);
    }

    #[test]
    fn a_receiver_confirms_what_its_batches_on_disk_hold() {
        let mut d = Durability::new(3);
        d.received(ShardId(1), 4);
        d.received(ShardId(1), 4);
        d.received(ShardId(2), 5);
        d.received(ShardId(1), 6);
        assert!(d.due().is_empty());
        d.on_disk(5);
        assert_eq!(d.due(), [(ShardId(1), 2), (ShardId(2), 1)]);
        d.on_disk(6);
        assert_eq!(d.due(), [(ShardId(1), 3)]);
        assert!(d.due().is_empty());
    }
}
