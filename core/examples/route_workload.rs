//! A fixed routing workload for instruction counting (`scripts/callgrind.sh`):
//! the broker driven directly, no sockets, no clock, the same inputs every
//! run.
//!
//! 200 subscribers: 100 on exact topics (`fleet/N/telemetry`, QoS 1), 50 on
//! `fleet/+/telemetry` (QoS 0), 40 on `fleet/N/#` (QoS 1) and 10 on
//! `fleet/#` (QoS 0). 10 publishers then send 20,000 PUBLISHes of 64 bytes
//! to `fleet/N/telemetry` (N cycling over 100 devices; every fourth at QoS
//! 1), and after every 50th a retained `fleet/N/status` (400, on 100
//! topics). A telemetry message reaches 61 or 62 subscribers (one exact,
//! 50 + 10 wildcard, for 40 devices one more); QoS 1 subscribers
//! acknowledge what they receive, so their windows stay open. Finally 20
//! new subscribers of `fleet/+/status` get the 100 retained messages.
//!
//! With `--shards N` the same clients use N brokers joined as shards, each
//! client on its client id's home shard, and the example carries what the
//! shards tell each other: the same deliveries, plus the cost of shards.
//!
//! Only `workload` is counted by the script (`--toggle-collect`); setup is
//! not. It prints what it did so a changed workload is noticed (with
//! shards, also how many messages crossed them).
//!
//! Run: `cargo run --release -p culex-core --example route_workload [-- --shards N]`

use std::hint::black_box;

use bytes::BytesMut;
use culex_core::codec::{Packet, Publish, Subscribe};
use culex_core::shard::{ShardId, ShardMessage, home_shard};
use culex_core::sim::ClientOptions;
use culex_core::{
    Action, Broker, Config, ConnId, Input, Instant, Now, PacketId, Peer, QoS, TopicFilter, TopicName, UnixTime,
};

const DEVICES: usize = 100;
const PUBLISHERS: usize = 10;
const MESSAGES: usize = 20_000;
const PAYLOAD: usize = 64;

/// What the workload did, for the report.
#[derive(Debug, Default)]
struct Counts {
    publishes: usize,
    deliveries: usize,
    acks: usize,
    bytes_out: usize,
    /// Messages from one shard to another.
    crossed: usize,
}

fn encode(packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.encode(&mut out);
    out.to_vec()
}

fn subscribe_packet(filter: &str, qos: QoS) -> Vec<u8> {
    let filter = TopicFilter::new(filter).expect("the workload's filters are valid");
    encode(&Packet::Subscribe(Subscribe { packet_id: PacketId::MIN, filters: vec![(filter, qos)] }))
}

fn publish_packet(topic: &str, qos: QoS, retain: bool, id: u16) -> Vec<u8> {
    encode(&Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: TopicName::new(topic).expect("the workload's topics are valid"),
        packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(id.max(1)).expect("non-zero")),
        payload: vec![0x5A; PAYLOAD].into(),
    }))
}

/// A client: its shard and its connection there.
#[derive(Debug, Clone, Copy)]
struct Client {
    shard: ShardId,
    conn: ConnId,
}

/// What the shards tell each other, not carried yet: one board per shard,
/// holding what the others posted to it in the order posted, so in order
/// for each pair of shards (as the runtimes' boards do).
#[derive(Debug)]
struct Mail {
    boards: Vec<Vec<(ShardId, ShardMessage)>>,
    crossed: usize,
}

impl Mail {
    /// Posts `action` to its board if it is for another shard, and drops
    /// it otherwise.
    fn post(&mut self, from: ShardId, action: Action) {
        if let Action::ToShard { to, message } = action {
            self.crossed += 1;
            self.boards[usize::from(to.0)].push((from, message));
        }
    }
}

/// The brokers, one per shard (a broker alone for one shard), driven as
/// runtimes would: after each input, a drain, then the shards' mail
/// carried until it is all handled.
#[derive(Debug)]
struct Shards {
    brokers: Vec<Broker>,
    mail: Mail,
    counts: Counts,
    now: Now,
}

impl Shards {
    fn new(count: u16, now: Now) -> Self {
        let brokers = (0..count)
            .map(|me| {
                let mut broker = Broker::new(Config::default());
                broker.join_shards(ShardId(me), count);
                broker
            })
            .collect();
        let mail = Mail { boards: (0..count).map(|_| Vec::new()).collect(), crossed: 0 };
        Self { brokers, mail, counts: Counts::default(), now }
    }

    /// What was done since the last call.
    fn take_counts(&mut self) -> Counts {
        let crossed = std::mem::take(&mut self.mail.crossed);
        Counts { crossed, ..std::mem::take(&mut self.counts) }
    }

    /// Connects `id` on its home shard, sending `subscribe` with its
    /// CONNECT.
    fn connect(&mut self, id: &str, subscribe: Option<&[u8]>) -> Client {
        let count = u16::try_from(self.brokers.len()).expect("at most u16::MAX shards");
        let shard = home_shard(id, count);
        let conn = self.brokers[usize::from(shard.0)].accept(self.now, Peer::default());
        let mut bytes = encode(&ClientOptions::new(id).keep_alive(0).connect_packet());
        if let Some(subscribe) = subscribe {
            bytes.extend_from_slice(subscribe);
        }
        let client = Client { shard, conn };
        self.received(client, &bytes);
        client
    }

    /// `data` read from `client`, and all that follows from it.
    fn received(&mut self, client: Client, data: &[u8]) {
        let Client { shard, conn } = client;
        self.brokers[usize::from(shard.0)].handle_input(self.now, Input::Received { conn, data });
        self.drain(shard);
        self.carry();
    }

    /// Drains `shard`'s broker, posting what it tells other shards; QoS 1
    /// deliveries are acknowledged after the drain.
    fn drain(&mut self, shard: ShardId) {
        let broker = &mut self.brokers[usize::from(shard.0)];
        let mut acks = Vec::new();
        while let Some(action) = broker.poll_action() {
            match &action {
                Action::Send { data, .. } => self.counts.bytes_out += data.len(),
                Action::Deliver { conn, packet_id, .. } => {
                    self.counts.deliveries += 1;
                    if let Some(id) = packet_id {
                        acks.push((*conn, *id));
                    }
                }
                // Moved out only here, matched by reference: moving every
                // action out costs a broker alone 3 % more.
                Action::ToShard { .. } => {
                    self.mail.post(shard, action);
                    continue;
                }
                _ => {}
            }
            let _ = black_box(action);
        }
        for (conn, id) in acks {
            self.counts.acks += 1;
            broker.handle_input(self.now, Input::Received { conn, data: &encode(&Packet::PubAck(id)) });
            while let Some(action) = broker.poll_action() {
                self.mail.post(shard, black_box(action));
            }
        }
    }

    /// Carries the mail until every board is empty. The batching is the
    /// runtimes': shards take turns in shard order, round after round, and
    /// at its turn a shard takes its whole board, handles it as one turn
    /// (the messages, then one drain, as `Server::shard_messages` does)
    /// and posts what that causes, which waits for its receiver's turn.
    fn carry(&mut self) {
        while self.mail.boards.iter().any(|board| !board.is_empty()) {
            for to in 0..self.brokers.len() {
                let board = std::mem::take(&mut self.mail.boards[to]);
                if board.is_empty() {
                    continue;
                }
                for (from, message) in board {
                    self.brokers[to].handle_shard_message(self.now, from, message);
                }
                self.drain(ShardId(u16::try_from(to).expect("at most u16::MAX shards")));
            }
        }
    }
}

/// The subscribers and publishers on `count` shards, not counted.
fn setup(count: u16, now: Now) -> (Shards, Vec<Client>) {
    let mut shards = Shards::new(count, now);
    for n in 0..200 {
        let (filter, qos) = match n {
            0..100 => (format!("fleet/{n}/telemetry"), QoS::AtLeastOnce),
            100..150 => ("fleet/+/telemetry".to_owned(), QoS::AtMostOnce),
            150..190 => (format!("fleet/{}/#", n % DEVICES), QoS::AtLeastOnce),
            _ => ("fleet/#".to_owned(), QoS::AtMostOnce),
        };
        shards.connect(&format!("sub-{n}"), Some(&subscribe_packet(&filter, qos)));
    }
    let publishers = (0..PUBLISHERS).map(|n| shards.connect(&format!("pub-{n}"), None)).collect();
    let _setup_is_not_reported = shards.take_counts();
    (shards, publishers)
}

/// The counted part: every PUBLISH from its bytes to the drained actions,
/// and what crosses shards for it.
#[inline(never)]
fn workload(shards: &mut Shards, publishers: &[Client], packets: &[Vec<u8>]) -> Counts {
    for (i, packet) in packets.iter().enumerate() {
        shards.received(publishers[i % publishers.len()], packet);
        shards.counts.publishes += 1;
    }
    let retained = subscribe_packet("fleet/+/status", QoS::AtMostOnce);
    for n in 0..20 {
        shards.connect(&format!("late-{n}"), Some(&retained));
    }
    shards.take_counts()
}

/// The number of shards: `--shards N`, or 1.
fn shard_count() -> u16 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => 1,
        [flag, n] if flag == "--shards" => n.parse().ok().filter(|&n| n >= 1).expect("--shards takes a count from 1"),
        _ => panic!("usage: route_workload [--shards N]"),
    }
}

fn main() {
    let count = shard_count();
    let now = Now::new(Instant::ZERO, UnixTime::from_secs_f64(1_767_225_600.0));
    let (mut shards, publishers) = setup(count, now);
    let mut packets = Vec::with_capacity(MESSAGES + MESSAGES / 50);
    for i in 0..MESSAGES {
        let device = i % DEVICES;
        let qos = if i % 4 == 3 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
        let id = u16::try_from(i % 60_000).unwrap_or(1);
        packets.push(publish_packet(&format!("fleet/{device}/telemetry"), qos, false, id));
        if i % 50 == 49 {
            let device = (i / 50) % DEVICES;
            packets.push(publish_packet(&format!("fleet/{device}/status"), QoS::AtMostOnce, true, 0));
        }
    }
    let counts = workload(&mut shards, &publishers, &packets);
    let stats = shards.brokers[0].stats();
    print!(
        "publishes={} deliveries={} acks={} bytes_out={} retained={}",
        counts.publishes, counts.deliveries, counts.acks, counts.bytes_out, stats.retained
    );
    if count > 1 {
        print!(" shards={count} crossed={}", counts.crossed);
    }
    println!();
}
