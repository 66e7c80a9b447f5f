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
//! Only `workload` is counted by the script (`--toggle-collect`); setup is
//! not. It prints what it did so a changed workload is noticed.
//!
//! Run: `cargo run --release -p culex-core --example route_workload`

use std::hint::black_box;

use bytes::BytesMut;
use culex_core::codec::{Packet, Publish, Subscribe};
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

/// Drains the broker; QoS 1 deliveries are acknowledged after the drain.
fn drain(broker: &mut Broker, now: Now, counts: &mut Counts) {
    let mut acks = Vec::new();
    while let Some(action) = broker.poll_action() {
        match &action {
            Action::Send { data, .. } => counts.bytes_out += data.len(),
            Action::Deliver { conn, packet_id, .. } => {
                counts.deliveries += 1;
                if let Some(id) = packet_id {
                    acks.push((*conn, *id));
                }
            }
            _ => {}
        }
        let _ = black_box(action);
    }
    for (conn, id) in acks {
        counts.acks += 1;
        broker.handle_input(now, Input::Received { conn, data: &encode(&Packet::PubAck(id)) });
        while let Some(action) = broker.poll_action() {
            let _ = black_box(action);
        }
    }
}

fn connect(broker: &mut Broker, now: Now, id: &str, subscribe: Option<&[u8]>, counts: &mut Counts) -> ConnId {
    let conn = broker.accept(now, Peer::default());
    let mut bytes = encode(&ClientOptions::new(id).keep_alive(0).connect_packet());
    if let Some(subscribe) = subscribe {
        bytes.extend_from_slice(subscribe);
    }
    broker.handle_input(now, Input::Received { conn, data: &bytes });
    drain(broker, now, counts);
    conn
}

/// The subscribers and publishers, not counted.
fn setup(now: Now) -> (Broker, Vec<ConnId>) {
    let mut broker = Broker::new(Config::default());
    let mut counts = Counts::default();
    for n in 0..200 {
        let (filter, qos) = match n {
            0..100 => (format!("fleet/{n}/telemetry"), QoS::AtLeastOnce),
            100..150 => ("fleet/+/telemetry".to_owned(), QoS::AtMostOnce),
            150..190 => (format!("fleet/{}/#", n % DEVICES), QoS::AtLeastOnce),
            _ => ("fleet/#".to_owned(), QoS::AtMostOnce),
        };
        connect(&mut broker, now, &format!("sub-{n}"), Some(&subscribe_packet(&filter, qos)), &mut counts);
    }
    let publishers =
        (0..PUBLISHERS).map(|n| connect(&mut broker, now, &format!("pub-{n}"), None, &mut counts)).collect();
    (broker, publishers)
}

/// The counted part: every PUBLISH from its bytes to the drained actions.
#[inline(never)]
fn workload(broker: &mut Broker, publishers: &[ConnId], now: Now, packets: &[Vec<u8>]) -> Counts {
    let mut counts = Counts::default();
    for (i, packet) in packets.iter().enumerate() {
        let conn = publishers[i % publishers.len()];
        broker.handle_input(now, Input::Received { conn, data: packet });
        counts.publishes += 1;
        drain(broker, now, &mut counts);
    }
    let retained = subscribe_packet("fleet/+/status", QoS::AtMostOnce);
    for n in 0..20 {
        connect(broker, now, &format!("late-{n}"), Some(&retained), &mut counts);
    }
    counts
}

fn main() {
    let now = Now::new(Instant::ZERO, UnixTime::from_secs_f64(1_767_225_600.0));
    let (mut broker, publishers) = setup(now);
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
    let counts = workload(&mut broker, &publishers, now, &packets);
    let stats = broker.stats();
    println!(
        "publishes={} deliveries={} acks={} bytes_out={} retained={}",
        counts.publishes, counts.deliveries, counts.acks, counts.bytes_out, stats.retained
    );
}
