//! What a node's link to the other nodes of a cluster decides (the
//! runtime only moves its bytes to and from Redis): which number each
//! shard of another node has here, what goes into which node's inbox, when
//! a publisher's shard may count a message as handed over, and which inbox
//! entries are no longer needed.
//!
//! To this process's shards a shard of another node is one more shard,
//! numbered from this process's shard count up ([`Directory`]): routes,
//! publishes and retained messages cross nodes exactly as they cross
//! shards, one FIFO path per pair of shards (the sender's turn, its
//! node's writer, the receiver's inbox stream, the receiver's board).
//! What differs is said by the link itself: [`ShardMessage::Joined`] and
//! [`ShardMessage::Left`] as nodes come and go; [`ShardMessage::Stored`]
//! once a batch is in the receiver's inbox, which is what a publisher's
//! PUBACK or PUBCOMP waits for; [`ShardMessage::Owner`], the answer to a
//! shard's [`ShardMessage::Own`] ([`OwnerAsk`]).

use std::collections::{HashMap, VecDeque};

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::wire::{self, NodeFrame, WireError};
use super::{ShardAddress, ShardId, ShardMessage, may_be_stored, node_number};
use crate::codec::LastWill;
use crate::message::Message;
use crate::persistence::InboxMark;
use crate::types::{ClientId, ConnId};

/// How long a claim waits for the takeover of a node that lapsed
/// ([`ShardMessage::Lapsed`], [`ShardMessage::TakenOver`]), and how long
/// a session taken over stays before its epoch is asked (a claim still
/// on its way takes it meanwhile): the node that reaps a lapsed one reads
/// its store within a second or two; one that fails to (it stopped, or
/// Redis did) must not hold connections up for good.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// Marks a connection of another node as this node's shards name it.
const ALIAS: u64 = 1 << 62;
/// Where the number of its shard sits in an alias.
const ALIAS_SHARD_SHIFT: u32 = 40;
/// Marks a bridge's local side (its own id's top bit) in an alias.
const ALIAS_BRIDGE: u64 = 1 << 39;
/// The bits of the connection's own number an alias keeps.
const ALIAS_CONN: u64 = ALIAS_BRIDGE - 1;

/// Connection `conn` of the shard numbered `from` here, as this node's
/// shards name it: unique in the process (apart from local connections,
/// bridges and every other shard's), so that a subscriber here can hold it
/// back ([`ShardMessage::Hold`]) as it holds a publisher of this node.
/// Connection numbers are counted from 1 per process: the alias keeps 39
/// bits of them.
pub fn alias(from: ShardId, conn: ConnId) -> ConnId {
    let bridge = if conn.is_bridge() { ALIAS_BRIDGE } else { 0 };
    ConnId(ALIAS | (u64::from(from.0) << ALIAS_SHARD_SHIFT) | bridge | (conn.0 & ALIAS_CONN))
}

/// The shard and connection an [`alias`] stands for.
pub fn unalias(conn: ConnId) -> Option<(ShardId, ConnId)> {
    if conn.0 & (ConnId::FIRST_BRIDGE | ALIAS) != ALIAS {
        return None;
    }
    let shard = ShardId(u16::try_from((conn.0 >> ALIAS_SHARD_SHIFT) & u64::from(u16::MAX)).unwrap_or(0));
    let bridge = if conn.0 & ALIAS_BRIDGE != 0 { ConnId::FIRST_BRIDGE } else { 0 };
    Some((shard, ConnId(bridge | (conn.0 & ALIAS_CONN))))
}

/// A client's will as the cluster keeps it in Redis, for another node to
/// publish if this one is gone: a batch of one `Publish` frame.
pub fn encode_will(will: &LastWill) -> BytesMut {
    let message = Message::without_expiry(will.topic.clone(), will.payload.clone(), will.qos, will.retain);
    let publish = ShardMessage::Publish { message: Arc::new(message), publisher: None, version: None, stored: None };
    let mut bytes = BytesMut::new();
    // A Publish is always carried.
    let _ = wire::encode_batch(&[NodeFrame { from: ShardId(0), to: ShardId(0), message: publish }], &mut bytes);
    bytes
}

/// The will [`encode_will`] made, as the message to publish.
pub fn decode_will(bytes: &[u8]) -> Option<Arc<Message>> {
    match wire::decode_batch(bytes).ok()?.pop()?.message {
        ShardMessage::Publish { message, .. } => Some(message),
        _ => None,
    }
}

/// A node as its entries and its registration name it: its name (the
/// presence broker id, stable across restarts), the run it is in, and its
/// shard count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRun {
    /// The node's name.
    pub name: String,
    /// The run: later runs of a node have larger numbers (its start time
    /// in milliseconds).
    pub run: u64,
    /// How many shards it runs.
    pub shards: u16,
}

/// What changed among the shards reachable from here.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Shards now reachable: each says [`ShardMessage::Joined`] to every
    /// local shard.
    pub joined: Vec<ShardId>,
    /// Shards gone: each says [`ShardMessage::Left`] to every local shard.
    pub left: Vec<ShardId>,
}

impl Change {
    /// What the link says to every local shard of this change, in order:
    /// [`ShardMessage::Joined`] from each number that joined, with its
    /// address (from `directory`, which numbered it), then
    /// [`ShardMessage::Left`] from each that left. Joined first: a claim
    /// waiting for a node's run that a later one replaces asks the later
    /// run (which holds what the earlier one stored) before it stops
    /// waiting for the earlier.
    pub fn says(&self, directory: &Directory) -> Vec<(ShardId, ShardMessage)> {
        let joined = self.joined.iter().map(|&id| (id, ShardMessage::Joined(directory.shard_address(id))));
        let left = self.left.iter().map(|&id| (id, ShardMessage::Left));
        joined.chain(left).collect()
    }
}

/// One run of a node as numbered here.
#[derive(Debug, Clone, Copy)]
struct Numbered {
    run: u64,
    first: u16,
    shards: u16,
}

impl Numbered {
    fn ids(self) -> impl Iterator<Item = ShardId> {
        (self.first..self.first + self.shards).map(ShardId)
    }
}

/// A node as the directory knows it.
#[derive(Debug)]
struct Known {
    /// Its latest run heard of.
    latest: Numbered,
    /// Whether that run is reachable (it has not left).
    live: bool,
    /// Earlier runs, whose entries may still sit in the inbox: their
    /// messages are delivered from their own numbers.
    earlier: Vec<Numbered>,
}

/// How many earlier runs of a node keep their numbers.
const EARLIER_RUNS: usize = 4;

/// The numbers this process gives the shards of other nodes, from its own
/// shard count up; a number is never given twice, so a message from a run
/// that left never passes for one of a later run.
#[derive(Debug)]
pub struct Directory {
    next: u16,
    nodes: HashMap<String, Known>,
    /// Number to (node, its run, its shard), for the numbers given.
    addresses: HashMap<ShardId, (String, u64, ShardId)>,
}

impl Directory {
    /// The directory of a process running `local` shards.
    pub fn new(local: u16) -> Self {
        Self { next: local.max(1), nodes: HashMap::new(), addresses: HashMap::new() }
    }

    /// Numbers for a run of `node` with `shards` shards; `None` once the
    /// numbers are used up.
    fn number(&mut self, node: &str, run: u64, shards: u16) -> Option<Numbered> {
        let first = self.next;
        self.next = first.checked_add(shards)?;
        let numbered = Numbered { run, first, shards };
        for (shard, id) in numbered.ids().enumerate() {
            let shard = ShardId(u16::try_from(shard).unwrap_or(u16::MAX));
            self.addresses.insert(id, (node.to_owned(), run, shard));
        }
        Some(numbered)
    }

    /// `run` is heard of, registered or writing to the inbox: a run later
    /// than the one known joins (the one known leaves); an earlier one
    /// only gets numbers, for what it wrote before it stopped.
    pub fn heard(&mut self, run: &NodeRun) -> Change {
        let mut change = Change::default();
        let known = self.nodes.get(&run.name).map(|k| (k.latest.run, k.live));
        match known {
            Some((latest, true)) if latest == run.run => {}
            Some((latest, false)) if latest == run.run => {}
            Some((latest, _)) if run.run < latest => {
                let Some(known) = self.nodes.get(&run.name) else { return change };
                if !known.earlier.iter().any(|n| n.run == run.run)
                    && let Some(numbered) = self.number(&run.name, run.run, run.shards)
                    && let Some(known) = self.nodes.get_mut(&run.name)
                {
                    known.earlier.push(numbered);
                    self.forget_earliest(&run.name);
                }
            }
            _ => {
                let Some(numbered) = self.number(&run.name, run.run, run.shards) else { return change };
                change.joined.extend(numbered.ids());
                let fresh = Known { latest: numbered, live: true, earlier: Vec::new() };
                if let Some(mut before) = self.nodes.insert(run.name.clone(), fresh) {
                    if before.live {
                        change.left.extend(before.latest.ids());
                    }
                    before.earlier.push(before.latest);
                    if let Some(known) = self.nodes.get_mut(&run.name) {
                        known.earlier = before.earlier;
                    }
                    self.forget_earliest(&run.name);
                }
            }
        }
        change
    }

    /// Keeps the numbers of the last [`EARLIER_RUNS`] earlier runs of
    /// `node`.
    fn forget_earliest(&mut self, node: &str) {
        let Some(known) = self.nodes.get_mut(node) else { return };
        known.earlier.sort_by_key(|n| n.run);
        while known.earlier.len() > EARLIER_RUNS {
            let gone = known.earlier.remove(0);
            for id in gone.ids() {
                self.addresses.remove(&id);
            }
        }
    }

    /// `node` is gone (its liveness lapsed): its shards leave.
    pub fn gone(&mut self, node: &str) -> Change {
        let mut change = Change::default();
        if let Some(known) = self.nodes.get_mut(node).filter(|k| k.live) {
            known.live = false;
            change.left.extend(known.latest.ids());
        }
        change
    }

    /// `run` is registered and its liveness key is gone, and this node
    /// never heard it alive (it stopped, or died, while this node was not
    /// running, or before this node's next beat): whether this is the
    /// first time, so that its sessions are taken over once. The run is
    /// gone from then on; a later run of the node joins as usual.
    pub fn gone_unheard(&mut self, run: &NodeRun) -> bool {
        if self.nodes.get(&run.name).is_some_and(|known| known.latest.run >= run.run) {
            return false;
        }
        // Numbered all the same: what it wrote to this node's inbox before
        // it died is still delivered, from its own numbers.
        let Some(latest) = self.number(&run.name, run.run, run.shards) else { return false };
        let fresh = Known { latest, live: false, earlier: Vec::new() };
        if let Some(before) = self.nodes.insert(run.name.clone(), fresh) {
            let mut earlier = before.earlier;
            earlier.push(before.latest);
            if let Some(known) = self.nodes.get_mut(&run.name) {
                known.earlier = earlier;
            }
            self.forget_earliest(&run.name);
        }
        true
    }

    /// This node's own liveness lapsed, so the others count it gone and
    /// dropped its routes: every node reachable gets new numbers (its
    /// shards leave and join again), so that this node's shards tell them
    /// their routes and retained messages again, while this node, in a
    /// new run, is a new node to them.
    pub fn rejoin_all(&mut self) -> Change {
        let mut change = Change::default();
        let live: Vec<(String, Numbered)> =
            self.nodes.iter().filter(|(_, k)| k.live).map(|(name, k)| (name.clone(), k.latest)).collect();
        for (name, before) in live {
            let Some(numbered) = self.number(&name, before.run, before.shards) else { continue };
            change.left.extend(before.ids());
            change.joined.extend(numbered.ids());
            if let Some(known) = self.nodes.get_mut(&name) {
                known.latest = numbered;
            }
        }
        change
    }

    /// The nodes reachable now.
    pub fn live(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().filter(|(_, k)| k.live).map(|(name, _)| name.as_str())
    }

    /// The number here of shard `shard` of `run` (heard of before).
    pub fn id(&self, run: &NodeRun, shard: ShardId) -> Option<ShardId> {
        let known = self.nodes.get(&run.name)?;
        let numbered = std::iter::once(&known.latest).chain(&known.earlier).find(|n| n.run == run.run)?;
        (shard.0 < numbered.shards).then(|| ShardId(numbered.first + shard.0))
    }

    /// The node and its shard that number `id` stands for.
    pub fn address(&self, id: ShardId) -> Option<(&str, ShardId)> {
        self.addresses.get(&id).map(|(node, _, shard)| (node.as_str(), *shard))
    }

    /// The address of the shard that number `id` stands for (the default
    /// address, which names no node, for a number not given).
    pub fn shard_address(&self, id: ShardId) -> ShardAddress {
        self.address(id).map(|(node, shard)| ShardAddress { node: node_number(node), shard }).unwrap_or_default()
    }
}

/// Frames on their way to the other nodes, and the counts that say when
/// they are in the receivers' inboxes.
#[derive(Debug, Default)]
pub struct Outbound {
    /// Messages that may be stored written for each (local shard, number
    /// of a shard elsewhere): what [`ShardMessage::Stored`] confirms.
    written: HashMap<(ShardId, ShardId), u64>,
    /// Batches gathered for each node: the last one's [`Batch::seq`].
    batches: HashMap<String, u64>,
}

/// What goes into one node's inbox in one entry.
#[derive(Debug)]
pub struct Batch {
    /// The receiving node.
    pub node: String,
    /// The run of the receiving node the frames are for, as this node
    /// heard of it: the receiver knows an entry written before this node
    /// heard of its current run ([`InboxLedger::read`]).
    pub run: u64,
    /// This batch's place among those gathered for `node` in this process,
    /// from 1: a batch written again after a failure keeps it, and the
    /// receiver reads it once ([`InboxLedger::read`]).
    pub seq: u64,
    /// The frames, as [`wire::encode_batch`] writes them.
    pub bytes: BytesMut,
}

/// What one turn of the writer hands Redis, and says once Redis has it.
#[derive(Debug, Default)]
pub struct Gathered {
    /// One batch per receiving node.
    pub batches: Vec<Batch>,
    /// Once the batches are in the inboxes: `Stored(count)` from the second
    /// shard to the first (a local one).
    pub confirm: Vec<(ShardId, ShardId, u64)>,
    /// Entries of this node's inbox no longer needed ([`InboxLedger`]).
    pub remove: Vec<String>,
    /// The local shards' questions about ownership epochs, in order.
    pub asks: Vec<OwnerAsk>,
}

/// A local shard's [`ShardMessage::Own`]: the link reads (or, with
/// `take`, increments) the client's epoch counter in Redis and answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerAsk {
    /// The asking shard.
    pub from: ShardId,
    /// The client id.
    pub client: ClientId,
    /// Take the next epoch.
    pub take: bool,
}

impl OwnerAsk {
    /// The answer, epoch `epoch` (0 for a counter not set yet), for the
    /// asking shard.
    pub fn answer(&self, epoch: u64) -> ShardMessage {
        ShardMessage::Owner { client: self.client.clone(), epoch, taken: self.take }
    }
}

impl Outbound {
    /// Gathers `posts` (from a local shard, to a number of a shard
    /// elsewhere, the message) into one batch per node. A post to a number
    /// the directory does not know is dropped. A local shard's
    /// confirmation of its disk goes to `ledger`, not to the sender: a
    /// node's acknowledgements wait for the inboxes, which the link
    /// confirms itself, and the receiver's disk says which inbox entries
    /// may go.
    pub fn gather(
        &mut self,
        directory: &Directory,
        ledger: &mut InboxLedger,
        posts: Vec<(ShardId, ShardId, ShardMessage)>,
    ) -> Gathered {
        let mut frames: Vec<((String, u64), Vec<NodeFrame>)> = Vec::new();
        let mut touched: Vec<(ShardId, ShardId)> = Vec::new();
        let mut asks = Vec::new();
        for (from, to, message) in posts {
            if let ShardMessage::Stored(count) = message {
                ledger.stored(from, to, count);
                continue;
            }
            if let ShardMessage::Own { client, take } = message {
                asks.push(OwnerAsk { from, client, take });
                continue;
            }
            let Some((node, run, shard)) = directory.addresses.get(&to) else { continue };
            // A hold names the publisher as this node does: its own node
            // names it otherwise.
            let message = match message {
                ShardMessage::Hold(conn) => ShardMessage::Hold(unalias(conn).map_or(conn, |(_, conn)| conn)),
                ShardMessage::Release(conn) => ShardMessage::Release(unalias(conn).map_or(conn, |(_, conn)| conn)),
                message => message,
            };
            if message.may_be_stored() {
                *self.written.entry((from, to)).or_insert(0) += 1;
                if !touched.contains(&(from, to)) {
                    touched.push((from, to));
                }
            }
            let frame = NodeFrame { from, to: *shard, message };
            match frames.iter_mut().find(|((name, at), _)| name == node && at == run) {
                Some((_, list)) => list.push(frame),
                None => frames.push(((node.to_owned(), *run), vec![frame])),
            }
        }
        let mut gathered = Gathered::default();
        for ((node, run), list) in frames {
            let mut bytes = BytesMut::new();
            // Only carried messages reach a number elsewhere: a shard says
            // Stats and Api to shards of its own process.
            if wire::encode_batch(&list, &mut bytes).is_ok() {
                let seq = self.batches.entry(node.clone()).or_insert(0);
                *seq += 1;
                gathered.batches.push(Batch { node, run, seq: *seq, bytes });
            }
        }
        for (from, to) in touched {
            let count = self.written.get(&(from, to)).copied().unwrap_or(0);
            gathered.confirm.push((from, to, count));
        }
        gathered.remove = ledger.removable();
        gathered.asks = asks;
        gathered
    }
}

/// Whether a post to another node may be dropped while Redis is down: a
/// QoS 0 message that is not retained. Its publisher was promised nothing,
/// and as a bridge does with `queue_qos0_messages false`, the link keeps
/// none of them waiting (they would pile up for as long as Redis is away).
/// Everything else waits: QoS 1/2 messages hold their publishers'
/// acknowledgements, so their number is bounded by the publishers' windows.
pub fn droppable_while_down(message: &ShardMessage) -> bool {
    matches!(message, ShardMessage::Publish { message, .. } if !may_be_stored(message))
}

/// The entries of this node's inbox read and not yet removed: an entry
/// goes once every message in it that may be stored is stored by the local
/// shard it went to (its [`ShardMessage::Stored`] to the sender), so that
/// a crash before then reads it again at the next start.
#[derive(Debug, Default)]
pub struct InboxLedger {
    /// Such messages handed to each (number of the sender, local shard).
    handed: HashMap<(ShardId, ShardId), u64>,
    /// What each local shard confirmed of them.
    stored: HashMap<(ShardId, ShardId), u64>,
    /// Entries in order, with the counts they need confirmed.
    entries: VecDeque<(String, Vec<Need>)>,
    /// The run and [`Batch::seq`] last read from each node.
    last_read: HashMap<String, (u64, u64)>,
    /// How far the inbox was read before this run, by (writing node,
    /// shard), as the store holds it: frames it covers are skipped.
    resumed: HashMap<(String, u16), InboxMark>,
}

/// A count of messages from a number (the sender) to a local shard that
/// must be stored before an entry goes.
type Need = ((ShardId, ShardId), u64);

/// The shards (as the writer numbered them) whose frames of batch `seq`
/// of `run` are stored already, as `marks` (by writing node and shard)
/// say: a node reading its inbox again, or another taking it over, skips
/// them.
pub fn covered<'a>(
    marks: impl IntoIterator<Item = (&'a (String, u16), &'a InboxMark)>,
    run: &NodeRun,
    seq: u64,
) -> Vec<u16> {
    marks
        .into_iter()
        .filter(|((node, _), mark)| *node == run.name && mark.covers(run.run, seq))
        .map(|(&(_, shard), _)| shard)
        .collect()
}

/// What an entry of the inbox holds, ready for the local shards.
#[derive(Debug, Default)]
pub struct Delivery {
    /// What hearing the entry's run changed: say [`ShardMessage::Left`]
    /// from each number that left (an earlier run of the node, replaced)
    /// and [`ShardMessage::Joined`] from each that joined, before the
    /// posts.
    pub change: Change,
    /// (local shard, from the number of the sender, message), in order.
    pub posts: Vec<(ShardId, ShardId, ShardMessage)>,
}

/// One entry of this node's inbox.
#[derive(Debug, Clone)]
pub struct InboxEntry<'a> {
    /// Its id in the stream.
    pub id: String,
    /// The run that wrote it.
    pub writer: &'a NodeRun,
    /// The writer's [`Batch::seq`], 0 if it gave none.
    pub seq: u64,
    /// The run of this node it was written for ([`Batch::run`]), if the
    /// writer gave it.
    pub for_run: Option<u64>,
    /// Its frames, as [`wire::encode_batch`] wrote them.
    pub batch: &'a [u8],
}

impl InboxLedger {
    /// Reads `entry` of the inbox of this node, in its run `own_run`:
    /// numbers its senders (a run not heard of joins now), and counts what
    /// it hands each local shard of `local`. A frame to a shard this
    /// process does not have goes to shard 0. A
    /// [`ShardMessage::RoutesTold`] written for an earlier run of this
    /// node is dropped: the routes told before it went with that run's
    /// numbers, and the writer tells them all again once it hears of this
    /// run.
    ///
    /// # Errors
    ///
    /// When the entry's batch is not a batch of frames: the entry is
    /// skipped.
    pub fn read(
        &mut self,
        directory: &mut Directory,
        local: u16,
        own_run: u64,
        entry: InboxEntry<'_>,
    ) -> Result<Delivery, WireError> {
        let InboxEntry { id, writer: run, seq, for_run, batch } = entry;
        let for_earlier_run = for_run.is_some_and(|for_run| for_run != own_run);
        if !self.first_read(run, seq) {
            // Written again after a failure that came after Redis took it.
            self.skip(id);
            return Ok(Delivery::default());
        }
        let frames = match wire::decode_batch(batch) {
            Ok(frames) => frames,
            Err(error) => {
                self.skip(id);
                return Err(error);
            }
        };
        let mut delivery = Delivery { change: directory.heard(run), posts: Vec::new() };
        let mut needs: Vec<Need> = Vec::new();
        // The shards (as the writer numbered them) handed something to
        // store: each records how far it read, after the frames.
        let mut marked: Vec<(ShardId, ShardId)> = Vec::new();
        let covered = covered(&self.resumed, run, seq);
        for frame in frames {
            let Some(from) = directory.id(run, frame.from) else { continue };
            if covered.contains(&frame.to.0) || for_earlier_run && matches!(frame.message, ShardMessage::RoutesTold) {
                continue;
            }
            let to = if frame.to.0 < local { frame.to } else { ShardId(0) };
            if frame.message.may_be_stored() {
                if seq != 0 && !marked.contains(&(frame.to, to)) {
                    marked.push((frame.to, to));
                }
                let handed = self.handed.entry((from, to)).or_insert(0);
                *handed += 1;
                match needs.iter_mut().find(|(pair, _)| *pair == (from, to)) {
                    Some(need) => need.1 = *handed,
                    None => needs.push(((from, to), *handed)),
                }
            }
            let message = match frame.message {
                ShardMessage::Publish { message, publisher, version, stored } => {
                    ShardMessage::Publish { message, publisher: publisher.map(|c| alias(from, c)), version, stored }
                }
                message => message,
            };
            delivery.posts.push((to, from, message));
        }
        if !marked.is_empty() {
            let node: Arc<str> = Arc::from(run.name.as_str());
            for (shard, to) in marked {
                let message = ShardMessage::InboxRead { node: node.clone(), run: run.run, shard: shard.0, seq };
                delivery.posts.push((to, ShardId::LINK, message));
            }
        }
        self.entries.push_back((id, needs));
        Ok(delivery)
    }

    /// Takes how far the inbox was read before this run, as the store
    /// holds it (see [`Broker::inbox_marks`](crate::Broker::inbox_marks)):
    /// frames it covers are skipped when the inbox is read again.
    pub fn resume(&mut self, marks: impl IntoIterator<Item = ((String, u16), InboxMark)>) {
        self.resumed.extend(marks);
    }

    /// Whether batch `seq` of `run` is read for the first time: each
    /// node's batches come in order, so one at or below the last read of
    /// the same run is a copy. Seq 0 is none.
    fn first_read(&mut self, run: &NodeRun, seq: u64) -> bool {
        let last = self.last_read.entry(run.name.clone()).or_insert((run.run, 0));
        if last.0 != run.run {
            *last = (run.run, 0);
        }
        if seq != 0 && seq <= last.1 {
            return false;
        }
        last.1 = last.1.max(seq);
        true
    }

    /// Entry `entry` holds nothing to hand over (it cannot be read): it
    /// goes with the entries before it.
    pub fn skip(&mut self, entry: String) {
        self.entries.push_back((entry, Vec::new()));
    }

    /// Local shard `shard` stored `count` of the messages from number
    /// `from` (its [`ShardMessage::Stored`] to it).
    pub fn stored(&mut self, shard: ShardId, from: ShardId, count: u64) {
        let stored = self.stored.entry((from, shard)).or_insert(0);
        *stored = (*stored).max(count);
    }

    /// The entries, oldest first, that are no longer needed.
    pub fn removable(&mut self) -> Vec<String> {
        let mut removable = Vec::new();
        while let Some((_, needs)) = self.entries.front() {
            let done = needs.iter().all(|(pair, count)| self.stored.get(pair).is_some_and(|s| s >= count));
            if !done {
                break;
            }
            if let Some((entry, _)) = self.entries.pop_front() {
                removable.push(entry);
            }
        }
        removable
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use crate::message::Message;
    use crate::topic::{TopicFilter, TopicName};
    use crate::types::QoS;

    fn run(name: &str, run: u64, shards: u16) -> NodeRun {
        NodeRun { name: name.to_owned(), run, shards }
    }

    /// Entry `id` written by `writer`, without the run it was for (as an
    /// older writer writes it).
    fn entry<'a>(id: &str, writer: &'a NodeRun, seq: u64, batch: &'a [u8]) -> InboxEntry<'a> {
        InboxEntry { id: id.to_owned(), writer, seq, for_run: None, batch }
    }

    fn publish(qos: QoS) -> ShardMessage {
        let message = Message::new(TopicName::new("t").unwrap(), "x".into(), qos, false);
        ShardMessage::Publish { message: Arc::new(message), publisher: None, version: None, stored: None }
    }

    #[test]
    fn only_qos_0_messages_not_retained_are_dropped_while_redis_is_down() {
        assert!(droppable_while_down(&publish(QoS::AtMostOnce)));
        assert!(!droppable_while_down(&publish(QoS::AtLeastOnce)));
        assert!(!droppable_while_down(&publish(QoS::ExactlyOnce)));
        let retained = Message::new(TopicName::new("t").unwrap(), "x".into(), QoS::AtMostOnce, true);
        let retained =
            ShardMessage::Publish { message: Arc::new(retained), publisher: None, version: None, stored: None };
        assert!(!droppable_while_down(&retained));
        assert!(!droppable_while_down(&ShardMessage::Route(TopicFilter::new("t").unwrap())));
        assert!(!droppable_while_down(&ShardMessage::Routed(1)));
    }

    /// `frames` as a batch's bytes.
    fn batch(frames: Vec<NodeFrame>) -> BytesMut {
        let mut bytes = BytesMut::new();
        wire::encode_batch(&frames, &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_will_kept_in_redis_reads_back_as_its_message() {
        let will = LastWill {
            topic: TopicName::new("dev/7/gone").unwrap(),
            payload: "bye".into(),
            qos: QoS::AtLeastOnce,
            retain: true,
        };
        let message = decode_will(&encode_will(&will)).unwrap();
        assert_eq!(
            (&message.topic, &message.payload[..], message.qos, message.retain),
            (&will.topic, &b"bye"[..], will.qos, true)
        );
        assert!(decode_will(b"junk").is_none());
    }

    #[test]
    fn a_connection_of_another_node_gets_an_alias_of_its_own() {
        let ids = [ConnId(1), ConnId(ALIAS_CONN), ConnId(ConnId::FIRST_BRIDGE), ConnId(ConnId::FIRST_BRIDGE + 7)];
        let mut seen = std::collections::HashSet::new();
        for shard in [ShardId(2), ShardId(u16::MAX)] {
            for conn in ids {
                let aliased = alias(shard, conn);
                assert!(!aliased.is_bridge() && aliased.0 >= ALIAS, "{aliased:?}");
                assert_eq!(unalias(aliased), Some((shard, conn)));
                assert!(seen.insert(aliased));
            }
        }
        assert_eq!(unalias(ConnId(5)), None);
        assert_eq!(unalias(ConnId(ConnId::FIRST_BRIDGE + 5)), None);
    }

    #[test]
    fn each_run_of_a_node_gets_numbers_of_its_own() {
        let mut d = Directory::new(2);
        let a1 = run("a", 1, 2);
        assert_eq!(d.heard(&a1), Change { joined: vec![ShardId(2), ShardId(3)], left: vec![] });
        assert_eq!(d.heard(&a1), Change::default());
        assert_eq!(d.id(&a1, ShardId(1)), Some(ShardId(3)));
        assert_eq!(d.id(&a1, ShardId(2)), None);
        assert_eq!(d.address(ShardId(3)), Some(("a", ShardId(1))));
        // A restart: the new run joins, the old one leaves, and what the
        // old one wrote keeps its numbers.
        let a2 = run("a", 5, 1);
        assert_eq!(d.heard(&a2), Change { joined: vec![ShardId(4)], left: vec![ShardId(2), ShardId(3)] });
        assert_eq!(d.id(&a1, ShardId(0)), Some(ShardId(2)));
        // Gone once; heard again from its inbox entries, it stays gone.
        assert_eq!(d.gone("a").left, [ShardId(4)]);
        assert_eq!(d.gone("a"), Change::default());
        assert_eq!(d.heard(&a2), Change::default());
        assert_eq!(d.live().count(), 0);
        // An earlier run never heard of gets numbers, and joins nothing.
        let a0 = run("a", 0, 1);
        assert_eq!(d.heard(&a0), Change::default());
        assert_eq!(d.id(&a0, ShardId(0)), Some(ShardId(5)));
        // After this node's own lapse, the live ones get new numbers.
        let b = run("b", 1, 1);
        assert_eq!(d.heard(&b).joined, [ShardId(6)]);
        assert_eq!(d.rejoin_all(), Change { joined: vec![ShardId(7)], left: vec![ShardId(6)] });
        assert_eq!(d.id(&b, ShardId(0)), Some(ShardId(7)));
        assert_eq!(d.address(ShardId(7)), Some(("b", ShardId(0))));
    }

    #[test]
    fn what_may_be_stored_is_confirmed_per_pair_once_written() {
        let mut d = Directory::new(1);
        d.heard(&run("b", 1, 2));
        let mut out = Outbound::default();
        let mut ledger = InboxLedger::default();
        let filter = ShardMessage::Route(TopicFilter::new("t").unwrap());
        let posts = vec![
            (ShardId(0), ShardId(1), publish(QoS::AtLeastOnce)),
            (ShardId(0), ShardId(2), publish(QoS::AtMostOnce)),
            (ShardId(0), ShardId(2), filter),
            (ShardId(0), ShardId(1), ShardMessage::Stored(3)),
            (ShardId(0), ShardId(9), publish(QoS::ExactlyOnce)),
            (ShardId(0), ShardId(1), publish(QoS::ExactlyOnce)),
        ];
        let gathered = out.gather(&d, &mut ledger, posts);
        assert_eq!(gathered.batches.len(), 1);
        let frames = wire::decode_batch(&gathered.batches[0].bytes).unwrap();
        assert_eq!(frames.iter().map(|f| f.to).collect::<Vec<_>>(), [ShardId(0), ShardId(1), ShardId(1), ShardId(0)]);
        assert_eq!(gathered.confirm, [(ShardId(0), ShardId(1), 2)]);
        let again = out.gather(&d, &mut ledger, vec![(ShardId(0), ShardId(1), publish(QoS::AtLeastOnce))]);
        assert_eq!(again.confirm, [(ShardId(0), ShardId(1), 3)]);
    }

    #[test]
    fn a_batch_is_for_the_run_of_the_receiver_its_frames_were_numbered_for() {
        let mut d = Directory::new(1);
        d.heard(&run("b", 1, 1));
        // A later run of b replaces the first, whose number posts made
        // before may still name.
        d.heard(&run("b", 2, 1));
        let posts = vec![
            (ShardId(0), ShardId(1), publish(QoS::AtLeastOnce)),
            (ShardId(0), ShardId(2), ShardMessage::RoutesTold),
            (ShardId(0), ShardId(1), publish(QoS::AtMostOnce)),
        ];
        let gathered = Outbound::default().gather(&d, &mut InboxLedger::default(), posts);
        let batches: Vec<_> = gathered.batches.iter().map(|b| (b.node.as_str(), b.run, b.seq)).collect();
        assert_eq!(batches, [("b", 1, 1), ("b", 2, 2)]);
        assert_eq!(wire::decode_batch(&gathered.batches[0].bytes).unwrap().len(), 2);
    }

    #[test]
    fn routes_told_for_an_earlier_run_of_this_node_are_dropped() {
        // This node is in run 7. Routes told for run 6 went with run 6's
        // numbers of the writer's shards: were the writer's shard counted
        // told now, it would miss those routes until the writer hears of
        // run 7 and tells them all again.
        let mut d = Directory::new(1);
        let mut ledger = InboxLedger::default();
        let writer = run("w", 1, 1);
        let route = ShardMessage::Route(TopicFilter::new("a/#").unwrap());
        let frame = |message| NodeFrame { from: ShardId(0), to: ShardId(0), message };
        let told = batch(vec![frame(route.clone()), frame(ShardMessage::RoutesTold)]);
        for (seq, for_run, passed_on) in [(1, Some(6), false), (2, Some(7), true), (3, None, true)] {
            let entry = InboxEntry { id: format!("{seq}-0"), writer: &writer, seq, for_run, batch: &told };
            let delivery = ledger.read(&mut d, 1, 7, entry).unwrap();
            let messages: Vec<_> = delivery.posts.into_iter().map(|(_, _, message)| message).collect();
            let expected = if passed_on { vec![route.clone(), ShardMessage::RoutesTold] } else { vec![route.clone()] };
            assert_eq!(messages, expected, "written for run {for_run:?}");
        }
    }

    #[test]
    fn a_new_run_first_heard_from_its_entries_replaces_the_old_one() {
        // The reader may hear a restarted node before the heartbeat does:
        // its old run's shards leave then, or this node's shards would
        // wait for them (a claim's answers, a route's confirmations).
        let mut d = Directory::new(1);
        let mut ledger = InboxLedger::default();
        d.heard(&run("w", 1, 1));
        let bytes = batch(vec![NodeFrame { from: ShardId(0), to: ShardId(0), message: ShardMessage::Stored(1) }]);
        let delivery = ledger.read(&mut d, 1, 1, entry("1-0", &run("w", 2, 1), 1, &bytes)).unwrap();
        assert_eq!(delivery.change, Change { joined: vec![ShardId(2)], left: vec![ShardId(1)] });
    }

    /// How many frames `delivery` hands the shards, the link's
    /// [`ShardMessage::InboxRead`] aside.
    fn frames(delivery: &Delivery) -> usize {
        delivery.posts.iter().filter(|(_, _, m)| !matches!(m, ShardMessage::InboxRead { .. })).count()
    }

    #[test]
    fn a_batch_written_twice_is_read_once() {
        // The writer sends a turn again when Redis failed to answer, though
        // it may have taken it: the copy counts for nothing and goes.
        let mut d = Directory::new(1);
        d.heard(&run("me", 1, 1));
        let mut out = Outbound::default();
        let mut sending = InboxLedger::default();
        let gathered = out.gather(&d, &mut sending, vec![(ShardId(0), ShardId(1), publish(QoS::ExactlyOnce))]);
        let [Batch { node, seq: 1, bytes, .. }] = &gathered.batches[..] else { panic!("{:?}", gathered.batches) };
        assert_eq!(node, "me");
        let (mut there, mut ledger) = (Directory::new(1), InboxLedger::default());
        let writer = run("w", 1, 1);
        assert_eq!(frames(&ledger.read(&mut there, 1, 1, entry("1-0", &writer, 1, bytes)).unwrap()), 1);
        let copy = ledger.read(&mut there, 1, 1, entry("2-0", &writer, 1, bytes)).unwrap();
        assert!(copy.posts.is_empty() && copy.change == Change::default());
        ledger.stored(ShardId(0), ShardId(1), 1);
        assert_eq!(ledger.removable(), ["1-0", "2-0"]);
        // The next batch, and the first of a new run, are read.
        assert_eq!(frames(&ledger.read(&mut there, 1, 1, entry("3-0", &writer, 2, bytes)).unwrap()), 1);
        let restarted = run("w", 2, 1);
        assert_eq!(frames(&ledger.read(&mut there, 1, 1, entry("4-0", &restarted, 1, bytes)).unwrap()), 1);
        // The next turn for the same node is the next batch.
        let next = out.gather(&d, &mut sending, vec![(ShardId(0), ShardId(1), publish(QoS::AtMostOnce))]);
        assert_eq!(next.batches[0].seq, 2);
    }

    #[test]
    fn an_entry_goes_once_what_it_handed_over_is_stored() {
        let mut d = Directory::new(2);
        let writer = run("w", 1, 1);
        let mut ledger = InboxLedger::default();
        let frame = |to: u16, message| NodeFrame { from: ShardId(0), to: ShardId(to), message };
        let first = batch(vec![frame(1, publish(QoS::AtLeastOnce)), frame(7, publish(QoS::AtLeastOnce))]);
        let delivery = ledger.read(&mut d, 2, 1, entry("1-0", &writer, 1, &first)).unwrap();
        assert_eq!(delivery.change.joined, [ShardId(2)]);
        let targets: Vec<_> = delivery.posts.iter().map(|(to, from, _)| (*to, *from)).collect();
        // Then each shard that got something to store hears how far it read.
        let link = ShardId::LINK;
        assert_eq!(
            targets,
            [(ShardId(1), ShardId(2)), (ShardId(0), ShardId(2)), (ShardId(1), link), (ShardId(0), link)]
        );
        let marks: Vec<_> = delivery.posts[2..].iter().map(|(_, _, m)| m.clone()).collect();
        let mark = |shard| ShardMessage::InboxRead { node: "w".into(), run: 1, shard, seq: 1 };
        assert_eq!(marks, [mark(1), mark(7)]);
        let second = batch(vec![frame(1, publish(QoS::AtMostOnce))]);
        assert!(ledger.read(&mut d, 2, 1, entry("2-0", &writer, 2, &second)).unwrap().change.joined.is_empty());
        assert!(ledger.removable().is_empty());
        ledger.stored(ShardId(1), ShardId(2), 1);
        assert!(ledger.removable().is_empty());
        // A local shard's confirmation reaches the ledger through the
        // writer's gathering, and goes no further.
        let gathered =
            Outbound::default().gather(&d, &mut ledger, vec![(ShardId(0), ShardId(2), ShardMessage::Stored(1))]);
        assert!(gathered.batches.is_empty());
        assert_eq!(gathered.remove, ["1-0", "2-0"]);
        // An entry that cannot be read goes too.
        assert!(ledger.read(&mut d, 2, 1, entry("3-0", &writer, 3, b"\x09")).is_err());
        assert_eq!(ledger.removable(), ["3-0"]);
    }

    #[test]
    fn frames_a_shard_stored_before_the_restart_are_skipped_when_read_again() {
        let mut d = Directory::new(2);
        let writer = run("w", 1, 1);
        let mut ledger = InboxLedger::default();
        // Shard 1 had stored what batches 1 and 2 held for it; shard 0 had
        // not.
        ledger.resume([(("w".to_owned(), 1), InboxMark { run: 1, seq: 2 })]);
        let frame = |to: u16| NodeFrame { from: ShardId(0), to: ShardId(to), message: publish(QoS::ExactlyOnce) };
        let both = batch(vec![frame(1), frame(0)]);
        let read = ledger.read(&mut d, 2, 1, entry("1-0", &writer, 2, &both)).unwrap();
        let targets: Vec<_> = read.posts.iter().map(|(to, from, _)| (*to, *from)).collect();
        assert_eq!(targets, [(ShardId(0), ShardId(2)), (ShardId(0), ShardId::LINK)]);
        // What it skipped needs no confirmation for the entry to go.
        ledger.stored(ShardId(0), ShardId(2), 1);
        assert_eq!(ledger.removable(), ["1-0"]);
        // A later batch, or a batch of a later run, is read whole.
        assert_eq!(frames(&ledger.read(&mut d, 2, 1, entry("2-0", &writer, 3, &both)).unwrap()), 2);
        let later = run("w", 2, 1);
        assert_eq!(frames(&ledger.read(&mut d, 2, 1, entry("3-0", &later, 1, &both)).unwrap()), 2);
        // A batch without a number (an older writer) is never skipped.
        let mut ledger = InboxLedger::default();
        ledger.resume([(("w".to_owned(), 1), InboxMark { run: 1, seq: 2 })]);
        assert_eq!(frames(&ledger.read(&mut d, 2, 1, entry("4-0", &writer, 0, &both)).unwrap()), 2);
    }
}
