//! Random batches that make sense: a message is stored before anything
//! refers to it, ids come from small pools so that ops meet (the same
//! session subscribed, dropped and created again), and some ops name
//! sessions that are not stored, which a store must ignore.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use culex_core::codec::LastWill;
use culex_core::persistence::{CopyState, MessageId, StoreBatch, StoreOp, StoredCopy, StoredState};
use culex_core::{ClientId, ListenerId, Message, PacketId, Publisher, QoS, TopicFilter, TopicName};
use quickcheck::{Arbitrary, Gen};

const CLIENTS: &[&str] = &["c", "c0", "c1", "c2", "", "client-with-a-rather-long-identifier-0", "c\u{e9}"];
const TOPICS: &[&str] = &["a", "a/b", "x/y/z", "t/\u{fc}", "$SYS/x", "/"];
const FILTERS: &[&str] = &["#", "a/+", "a/b", "+/+/z", "$SYS/#"];
const USERNAMES: &[Option<&str>] = &[None, Some("bob"), Some(""), Some("\u{e5}sa")];
const PACKET_IDS: &[u16] = &[1, 2, 3, 7, 65_535];

fn pick<T: Copy>(g: &mut Gen, from: &[T]) -> T {
    *g.choose(from).unwrap_or(&from[0])
}

fn below(g: &mut Gen, n: usize) -> usize {
    usize::arbitrary(g) % n.max(1)
}

fn client(g: &mut Gen) -> ClientId {
    ClientId::new(pick(g, CLIENTS))
}

fn qos(g: &mut Gen) -> QoS {
    pick(g, &[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn packet_id(g: &mut Gen) -> PacketId {
    PacketId::new(pick(g, PACKET_IDS)).unwrap_or(PacketId::MIN)
}

fn topic(g: &mut Gen) -> TopicName {
    TopicName::new(pick(g, TOPICS)).unwrap_or_else(|_| unreachable!("valid topics"))
}

fn payload(g: &mut Gen) -> Bytes {
    let len = below(g, 48);
    Bytes::from((0..len).map(|_| u8::arbitrary(g)).collect::<Vec<u8>>())
}

/// A message, sometimes with an expiry (any finite value: the store must
/// keep its bits).
pub(crate) fn message(g: &mut Gen) -> Message {
    let expires_at = match below(g, 4) {
        0 => Some(f64::from(u32::arbitrary(g)) + 0.25),
        1 => Some(-1.5),
        _ => None,
    };
    let retain = bool::arbitrary(g);
    let publisher = (retain && bool::arbitrary(g)).then(|| {
        let username = bool::arbitrary(g).then(|| Arc::from(format!("user-{}", below(g, 3))));
        Arc::new(Publisher { client_id: client(g), username, listener: ListenerId(u16::arbitrary(g)) })
    });
    Message { topic: topic(g), payload: payload(g), qos: qos(g), retain, expires_at, publisher }
}

fn will(g: &mut Gen) -> LastWill {
    LastWill { topic: topic(g), payload: payload(g), qos: qos(g), retain: bool::arbitrary(g) }
}

fn copy_state(g: &mut Gen) -> CopyState {
    match below(g, 4) {
        0 => CopyState::Queued(None),
        1 => CopyState::Queued(Some(packet_id(g))),
        2 => CopyState::Sent(packet_id(g)),
        _ => CopyState::Released(packet_id(g)),
    }
}

/// What the generator knows of the state so far.
#[derive(Debug, Default)]
struct Model {
    next_message: u64,
    messages: BTreeSet<u64>,
}

impl Model {
    /// A stored message's id, storing a new one first (pushed to `ops`)
    /// when there is none or by chance.
    fn message_ref(&mut self, g: &mut Gen, ops: &mut Vec<StoreOp>) -> MessageId {
        if self.messages.is_empty() || below(g, 4) == 0 {
            return self.new_message(g, ops);
        }
        let ids: Vec<u64> = self.messages.iter().copied().collect();
        MessageId(pick(g, &ids))
    }

    fn new_message(&mut self, g: &mut Gen, ops: &mut Vec<StoreOp>) -> MessageId {
        self.next_message += 1;
        let id = MessageId(self.next_message);
        self.messages.insert(id.0);
        ops.push(StoreOp::Message { id, message: Arc::new(message(g)) });
        id
    }

    fn op(&mut self, g: &mut Gen, ops: &mut Vec<StoreOp>) {
        let op = match below(g, 17) {
            0 => {
                self.new_message(g, ops);
                return;
            }
            1 => {
                let Some(&id) = self.messages.iter().nth(below(g, self.messages.len())) else { return };
                self.messages.remove(&id);
                StoreOp::DropMessage { id: MessageId(id) }
            }
            2 => StoreOp::Retain { topic: topic(g), message: self.message_ref(g, ops) },
            3 => StoreOp::DropRetained { topic: topic(g) },
            4 | 5 => StoreOp::Session {
                client: client(g),
                username: pick(g, USERNAMES).map(Arc::from),
                offline_since: bool::arbitrary(g).then(|| u64::from(u32::arbitrary(g))),
                epoch: if bool::arbitrary(g) { u64::arbitrary(g) } else { 0 },
            },
            6 => StoreOp::DropSession { client: client(g) },
            7 => StoreOp::Subscribe {
                client: client(g),
                filter: TopicFilter::new(pick(g, FILTERS)).unwrap_or_else(|_| unreachable!("valid filters")),
                qos: qos(g),
            },
            8 => StoreOp::Unsubscribe {
                client: client(g),
                filter: TopicFilter::new(pick(g, FILTERS)).unwrap_or_else(|_| unreachable!("valid filters")),
            },
            9 | 10 => {
                let message = self.message_ref(g, ops);
                let copy = StoredCopy { message, qos: qos(g), retain: bool::arbitrary(g), state: copy_state(g) };
                StoreOp::Copy { client: client(g), seq: u64::arbitrary(g) % 6, copy }
            }
            11 => StoreOp::DropCopy { client: client(g), seq: u64::arbitrary(g) % 6 },
            12 => {
                let message = if below(g, 4) == 0 { None } else { Some(self.message_ref(g, ops)) };
                StoreOp::Incoming { client: client(g), packet_id: packet_id(g), message }
            }
            13 => StoreOp::DropIncoming { client: client(g), packet_id: packet_id(g) },
            14 => StoreOp::Will { client: client(g), will: will(g) },
            15 => StoreOp::DropWill { client: client(g) },
            _ => StoreOp::InboxRead {
                node: pick(g, &["node-a:1883", "node-b:1883"]).to_owned(),
                run: u64::from(u8::arbitrary(g) % 3),
                shard: u16::from(u8::arbitrary(g) % 3),
                seq: u64::from(u16::arbitrary(g)),
            },
        };
        ops.push(op);
    }
}

/// Batches numbered from 1, and how they are grouped into commits.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) batches: Vec<StoreBatch>,
    /// Sizes of consecutive groups, adding up to `batches.len()`.
    pub(crate) groups: Vec<usize>,
}

impl Scenario {
    /// A scenario of up to `max_batches` batches of up to `max_ops` ops.
    pub(crate) fn generate(g: &mut Gen, max_batches: usize, max_ops: usize) -> Self {
        let mut model = Model::default();
        let count = 1 + below(g, max_batches);
        let batches = (1..=count as u64)
            .map(|seq| {
                let mut ops = Vec::new();
                for _ in 0..below(g, max_ops + 1) {
                    model.op(g, &mut ops);
                }
                StoreBatch { seq, ops }
            })
            .collect();
        let mut groups = Vec::new();
        let mut left = count;
        while left > 0 {
            let size = (1 + below(g, 4)).min(left);
            groups.push(size);
            left -= size;
        }
        Self { batches, groups }
    }

    /// The batches of each commit, in order.
    pub(crate) fn commits(&self) -> Vec<&[StoreBatch]> {
        let mut rest = self.batches.as_slice();
        self.groups
            .iter()
            .map(|&n| {
                let (group, tail) = rest.split_at(n.min(rest.len()));
                rest = tail;
                group
            })
            .collect()
    }

    /// The state after the first `n` batches.
    pub(crate) fn state_after(&self, n: usize) -> StoredState {
        let mut state = StoredState::default();
        for batch in &self.batches[..n.min(self.batches.len())] {
            state.apply_batch(batch);
        }
        state
    }

    /// The number of batches in the first `commits` commits.
    pub(crate) fn batches_in(&self, commits: usize) -> usize {
        self.groups.iter().take(commits).sum()
    }
}

impl Arbitrary for Scenario {
    fn arbitrary(g: &mut Gen) -> Self {
        Self::generate(g, 12, 10)
    }

    /// Fewer batches (a prefix stays valid: nothing refers forward).
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let this = self.clone();
        let len = self.batches.len();
        Box::new((1..len).rev().map(move |n| {
            let mut groups = Vec::new();
            let mut left = n;
            for &size in &this.groups {
                if left == 0 {
                    break;
                }
                groups.push(size.min(left));
                left -= size.min(left);
            }
            Self { batches: this.batches[..n].to_vec(), groups }
        }))
    }
}
