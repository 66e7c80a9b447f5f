//! Nodes of a cluster in the simulation: brokers joined as a runtime's
//! links join them ([`shard::nodes`](crate::shard::nodes)), what they tell
//! each other going through the same numbering, gathering, bytes and
//! inbox ledger, with Redis a queue that takes every batch at once and
//! keeps the client ids' ownership epochs.

use std::collections::HashMap;

use crate::shard::nodes::{Directory, InboxEntry, InboxLedger, NodeRun, Outbound};
use crate::shard::{ShardId, ShardMessage};
use crate::types::ClientId;

/// What crosses between the simulated nodes, each of one shard.
#[derive(Debug)]
pub(super) struct NodesBus {
    runs: Vec<NodeRun>,
    directories: Vec<Directory>,
    outbound: Vec<Outbound>,
    ledgers: Vec<InboxLedger>,
    /// Each node's posts to numbers of other nodes, in order.
    posts: Vec<Vec<(ShardId, ShardId, ShardMessage)>>,
    /// Inbox entries written so far, to name the next.
    entries: u64,
    /// Paths held, (from node, to node): their posts wait, in order.
    held: Vec<(usize, usize)>,
    /// Each node's posts on held paths, in order.
    parked: Vec<Vec<(ShardId, ShardId, ShardMessage)>>,
    /// The ownership epoch counters.
    epochs: HashMap<ClientId, u64>,
}

/// A message for node `.0`'s shard, from its number `.1` there.
pub(super) type Delivery = (usize, ShardId, ShardMessage);

impl NodesBus {
    /// `nodes` nodes named `node-<i>`.
    pub(super) fn new(nodes: usize) -> Self {
        Self {
            runs: (0..nodes).map(|i| NodeRun { name: Self::name(i), run: 1, shards: 1 }).collect(),
            directories: (0..nodes).map(|_| Directory::new(1)).collect(),
            outbound: (0..nodes).map(|_| Outbound::default()).collect(),
            ledgers: (0..nodes).map(|_| InboxLedger::default()).collect(),
            posts: vec![Vec::new(); nodes],
            entries: 0,
            held: Vec::new(),
            parked: vec![Vec::new(); nodes],
            epochs: HashMap::new(),
        }
    }

    /// Node `i`'s name.
    pub(super) fn name(i: usize) -> String {
        format!("node-{i}")
    }

    /// Every node hears of every other, then that it read the registry:
    /// what each says to its shard.
    pub(super) fn start(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        for i in 0..self.runs.len() {
            for j in (0..self.runs.len()).filter(|&j| j != i) {
                let change = self.directories[i].heard(&self.runs[j]);
                out.extend(change.says(&self.directories[i]).into_iter().map(|(from, says)| (i, from, says)));
            }
            out.push((i, ShardId::LINK, ShardMessage::NodesRead));
        }
        out
    }

    /// Node `node`'s shard tells number `to`.
    pub(super) fn post(&mut self, node: usize, to: ShardId, message: ShardMessage) {
        self.posts[node].push((ShardId(0), to, message));
    }

    /// Holds (or lets go) what node `from` posts to node `to`: held, it
    /// waits, as behind a slow inbox; let go, it goes before anything
    /// posted later.
    pub(super) fn hold(&mut self, from: usize, to: usize, held: bool) {
        self.held.retain(|&path| path != (from, to));
        if held {
            self.held.push((from, to));
        }
    }

    /// Drops what node `from` holds for node `to` that `lost` picks, as
    /// Redis losing entries of an inbox.
    pub(super) fn lose(&mut self, from: usize, to: usize, lost: fn(&ShardMessage) -> bool) {
        let mut parked = std::mem::take(&mut self.parked[from]);
        parked.retain(|(_, shard, message)| self.node_of(from, *shard) != Some(to) || !lost(message));
        self.parked[from] = parked;
    }

    /// The node of shard number `shard`, as node `i` numbers it.
    fn node_of(&self, i: usize, shard: ShardId) -> Option<usize> {
        self.directories[i].address(shard).and_then(|(name, _)| self.runs.iter().position(|r| r.name == name))
    }

    /// Node `i`'s posts that may go now: those parked on paths no longer
    /// held, then the new ones; the rest are parked, in order.
    fn ready(&mut self, i: usize) -> Vec<(ShardId, ShardId, ShardMessage)> {
        let posts = std::mem::take(&mut self.parked[i]).into_iter().chain(std::mem::take(&mut self.posts[i]));
        let (parked, ready): (Vec<_>, Vec<_>) =
            posts.partition(|(_, to, _)| self.node_of(i, *to).is_some_and(|j| self.held.contains(&(i, j))));
        self.parked[i] = parked;
        ready
    }

    /// Carries every post: each node's gathered into batches, read from
    /// the receivers' inboxes in order, then the writer's confirmations.
    pub(super) fn carry(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        for i in 0..self.runs.len() {
            let posts = self.ready(i);
            if posts.is_empty() {
                continue;
            }
            let gathered = self.outbound[i].gather(&self.directories[i], &mut self.ledgers[i], posts);
            for batch in gathered.batches {
                let Some(j) = self.runs.iter().position(|run| run.name == batch.node) else { continue };
                // Every third batch is written twice, as the link does when
                // Redis took a write but its answer was lost: read once.
                let copies = if self.entries % 3 == 2 { 2 } else { 1 };
                for _ in 0..copies {
                    self.entries += 1;
                    let entry = InboxEntry {
                        id: format!("{}-0", self.entries),
                        writer: &self.runs[i],
                        seq: batch.seq,
                        for_run: Some(batch.run),
                        batch: &batch.bytes,
                    };
                    let ledger = &mut self.ledgers[j];
                    let read = ledger.read(&mut self.directories[j], 1, self.runs[j].run, entry);
                    // The simulation's own bytes always read back.
                    let Ok(delivery) = read else { continue };
                    let says = delivery.change.says(&self.directories[j]);
                    out.extend(says.into_iter().map(|(from, says)| (j, from, says)));
                    out.extend(delivery.posts.into_iter().map(|(_, from, message)| (j, from, message)));
                }
            }
            out.extend(gathered.confirm.into_iter().map(|(_, from, count)| (i, from, ShardMessage::Stored(count))));
            for ask in gathered.asks {
                let epoch = self.epochs.entry(ask.client.clone()).or_insert(0);
                *epoch += u64::from(ask.take);
                out.push((i, ShardId::LINK, ask.answer(*epoch)));
            }
        }
        out
    }

    /// Client `client`'s ownership epoch, as Redis keeps it.
    pub(super) fn epoch(&self, client: &str) -> u64 {
        self.epochs.get(&ClientId::new(client)).copied().unwrap_or(0)
    }
}
