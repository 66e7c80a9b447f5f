//! Restoring one store into the shards of a process: each persistent
//! session, with its subscriptions, copies, incoming messages and will,
//! goes to its home shard among this run's shards (so a store written
//! with another number of shards restores as well), and every shard
//! keeps every retained message.
//!
//! One store, several journals:
//!
//! - every shard is handed every body; a body the sessions of several
//!   shards refer to is held by each of their journals and leaves the
//!   store with the last of them ([`SharedBodies`]); a body nothing refers
//!   to leaves it once;
//! - shard 0 records the restored retained messages; the others keep them
//!   without recording them (see [`Recorded`](crate::shard::Recorded));
//! - each shard learns the other shards' restored subscriptions before
//!   any restore ends, so that the wills and held QoS 2 messages published
//!   at the end reach the subscribers of every shard.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Restorer, routed_before};
use crate::broker::Broker;
use crate::codec::LastWill;
use crate::message::Message;
use crate::persistence::journal::SharedBodies;
use crate::persistence::{InboxMark, MessageId, Restore, SessionFields, StoreOp, StoredCopy};
use crate::shard::{ShardId, ShardMessage};
use crate::time::Now;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{PacketId, QoS};

/// A [`Restore`] that hands each row to the shard that keeps it, so that
/// a store written with any number of shards restores into this run's;
/// [`finish`](Self::finish) completes every shard's restore.
pub struct ShardRestorer {
    shards: Vec<Restorer<Broker>>,
    now: Now,
    /// The home shard of a client id.
    home: Box<dyn Fn(&str) -> ShardId>,
    /// The home of the last client given: a session's rows come together.
    current: Option<(String, usize)>,
}

impl std::fmt::Debug for ShardRestorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardRestorer").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

impl ShardRestorer {
    /// Starts restoring into `brokers`, shard `i` being `brokers[i]` (each
    /// joined to the others with [`Broker::join_shards`]), before any
    /// connection; a session goes to the shard `home` names for its client
    /// id (a shard past the last counts as shard 0).
    pub fn new(brokers: Vec<Broker>, now: Now, home: impl Fn(&str) -> ShardId + 'static) -> Self {
        let shards = brokers
            .into_iter()
            .enumerate()
            .map(|(i, broker)| {
                let mut restorer = Restorer::new(broker, now);
                restorer.records_retained = i == 0;
                restorer.drops_unreferenced = false;
                restorer
            })
            .collect();
        Self { shards, now, home: Box::new(home), current: None }
    }

    /// The index of `client`'s home shard.
    fn home_of(&mut self, client: &str) -> usize {
        if let Some((id, at)) = &self.current
            && id == client
        {
            return *at;
        }
        let at = usize::from((self.home)(client).0);
        let at = if at < self.shards.len() { at } else { 0 };
        self.current = Some((client.to_owned(), at));
        at
    }

    /// The restorer of `client`'s home shard.
    fn home(&mut self, client: &str) -> &mut Restorer<Broker> {
        let at = self.home_of(client);
        &mut self.shards[at]
    }

    /// Completes every shard's restore (see [`Restorer::finish`]) and
    /// gives the brokers back, in shard order. Their first batches hold
    /// what makes the store agree with them; the messages they tell each
    /// other (their subscriptions, the wills they published) are in their
    /// queues, for the runtime to carry.
    pub fn finish(mut self) -> Vec<Broker> {
        let mut holders: HashMap<MessageId, u16> = HashMap::new();
        for shard in &self.shards {
            for (id, _, refs) in &shard.bodies.held {
                if *refs > 0 {
                    *holders.entry(*id).or_default() += 1;
                }
            }
        }
        // Every shard was given every body: shard 0 drops, once, those no
        // shard refers to.
        if let Some(first) = self.shards.first_mut() {
            let mut unreferenced: Vec<MessageId> =
                first.bodies.held.iter().map(|(id, ..)| *id).filter(|id| !holders.contains_key(id)).collect();
            unreferenced.sort_unstable();
            unreferenced.dedup();
            first.dangling.extend(unreferenced.into_iter().map(|id| StoreOp::DropMessage { id }));
        }
        holders.retain(|_, shards| *shards > 1);
        let shared = Arc::new(SharedBodies::new(holders));
        // Across shards: a copy of another shard may be what shows that a
        // message held for routing was routed before the stop.
        let routed = {
            let mut restorers: Vec<&mut Restorer<Broker>> = self.shards.iter_mut().collect();
            routed_before(&mut restorers)
        };
        for shard in &mut self.shards {
            shard.routed.extend(routed.iter().copied());
        }
        self.shards
            .into_iter()
            .map(|mut shard| {
                shard.shared = Some(shared.clone());
                shard.finish()
            })
            .collect()
    }
}

impl Restore for ShardRestorer {
    fn last_batch(&mut self, _: u64) {
        // Each shard numbers its own batches from 1; the runtime's
        // committer numbers the store's.
    }

    fn message(&mut self, id: MessageId, message: Arc<Message>) {
        for shard in &mut self.shards {
            shard.message(id, message.clone());
        }
    }

    fn retained(&mut self, topic: TopicName, message: MessageId) {
        for shard in &mut self.shards {
            shard.retained(topic.clone(), message);
        }
    }

    fn session(&mut self, client: &str, fields: SessionFields) {
        self.home(client).session(client, fields);
    }

    fn subscription(&mut self, client: &str, filter: TopicFilter, qos: QoS) {
        let at = self.home_of(client);
        let home = &mut self.shards[at];
        if home.session_key(client).is_none() {
            return;
        }
        home.subscription(client, filter.clone(), qos);
        let (now, from) = (self.now, ShardId(u16::try_from(at).unwrap_or(0)));
        for (i, shard) in self.shards.iter_mut().enumerate() {
            if i != at {
                shard.broker.handle_shard_message(now, from, ShardMessage::Route(filter.clone()));
            }
        }
    }

    fn copy(&mut self, client: &str, seq: u64, copy: StoredCopy) {
        self.home(client).copy(client, seq, copy);
    }

    fn incoming(&mut self, client: &str, packet_id: PacketId, message: Option<MessageId>) {
        self.home(client).incoming(client, packet_id, message);
    }

    fn unreleased(&mut self, client: &str, packet_id: PacketId, message: MessageId) {
        self.home(client).unreleased(client, packet_id, message);
    }

    fn will(&mut self, client: &str, will: LastWill) {
        self.home(client).will(client, will);
    }

    fn inbox_read(&mut self, node: &str, shard: u16, mark: InboxMark) {
        // The shard that reads those frames (one past the last: shard 0).
        let at = if usize::from(shard) < self.shards.len() { usize::from(shard) } else { 0 };
        self.shards[at].inbox_read(node, shard, mark);
    }
}
