//! quickcheck generators: valid packets only, so that every generated
//! packet must survive an encode/decode round trip.

use bytes::Bytes;
use bytestring::ByteString;
use quickcheck::{Arbitrary, Gen};

use super::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, Publish, SubAck, Subscribe, SubscribeReturnCode, Unsubscribe,
};
use crate::topic::{TopicFilter, TopicName};
use crate::types::{PacketId, Protocol, QoS};

/// A valid packet of any type.
#[derive(Debug, Clone)]
pub(crate) struct ArbPacket(pub(crate) Packet);

/// Topic levels: plain, empty, `$`-prefixed, non-ASCII and a BOM.
const LEVELS: &[&str] =
    &["a", "b", "c", "sensor", "temp", "", "$SYS", "é", "日本", "\u{FEFF}bom", " ", "a b", "x-y_z.1"];

fn pick<T: Copy>(g: &mut Gen, items: &[T]) -> T {
    *g.choose(items).expect("non-empty choice")
}

fn qos(g: &mut Gen) -> QoS {
    pick(g, &[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn packet_id(g: &mut Gen) -> PacketId {
    PacketId::new(u16::arbitrary(g).max(1)).expect("non-zero")
}

/// Any string without U+0000 (which the wire forbids).
fn text(g: &mut Gen) -> ByteString {
    String::arbitrary(g).replace('\0', "").into()
}

fn bytes(g: &mut Gen) -> Bytes {
    Vec::<u8>::arbitrary(g).into()
}

fn topic_name(g: &mut Gen) -> TopicName {
    let levels = 1 + usize::arbitrary(g) % 4;
    let mut name = (0..levels).map(|_| pick(g, LEVELS)).collect::<Vec<_>>().join("/");
    if name.is_empty() {
        name.push('a');
    }
    TopicName::new(name).expect("generated topic name is valid")
}

fn topic_filter(g: &mut Gen) -> TopicFilter {
    let levels = usize::arbitrary(g) % 4;
    let mut parts: Vec<&str> = (0..levels).map(|_| if bool::arbitrary(g) { "+" } else { pick(g, LEVELS) }).collect();
    if bool::arbitrary(g) {
        parts.push("#");
    }
    let mut filter = parts.join("/");
    if filter.is_empty() {
        filter.push('+');
    }
    TopicFilter::new(filter).expect("generated topic filter is valid")
}

fn non_empty<T>(g: &mut Gen, mut item: impl FnMut(&mut Gen) -> T) -> Vec<T> {
    let n = 1 + usize::arbitrary(g) % 5;
    (0..n).map(|_| item(g)).collect()
}

fn connect(g: &mut Gen) -> Connect {
    let username = bool::arbitrary(g).then(|| text(g));
    Connect {
        protocol: pick(g, &[Protocol::V31, Protocol::V311]),
        clean_session: bool::arbitrary(g),
        keep_alive: u16::arbitrary(g),
        client_id: text(g),
        will: bool::arbitrary(g).then(|| LastWill {
            topic: topic_name(g),
            payload: bytes(g),
            qos: qos(g),
            retain: bool::arbitrary(g),
        }),
        // [MQTT-3.1.2-22]: a password only with a user name.
        password: (username.is_some() && bool::arbitrary(g)).then(|| bytes(g)),
        username,
        bridge: bool::arbitrary(g),
    }
}

fn publish(g: &mut Gen) -> Publish {
    let qos = qos(g);
    let at_most_once = qos == QoS::AtMostOnce;
    Publish {
        dup: !at_most_once && bool::arbitrary(g),
        qos,
        retain: bool::arbitrary(g),
        topic: topic_name(g),
        packet_id: (!at_most_once).then(|| packet_id(g)),
        payload: bytes(g),
    }
}

impl Arbitrary for ArbPacket {
    fn arbitrary(g: &mut Gen) -> Self {
        let packet = match u8::arbitrary(g) % 14 {
            0 => Packet::Connect(Box::new(connect(g))),
            1 => Packet::ConnAck(ConnAck {
                session_present: bool::arbitrary(g),
                code: ConnectReturnCode::from_u8(u8::arbitrary(g) % 6).expect("0..=5"),
            }),
            2 => Packet::Publish(publish(g)),
            3 => Packet::PubAck(packet_id(g)),
            4 => Packet::PubRec(packet_id(g)),
            5 => Packet::PubRel(packet_id(g)),
            6 => Packet::PubComp(packet_id(g)),
            7 => Packet::Subscribe(Subscribe {
                packet_id: packet_id(g),
                filters: non_empty(g, |g| (topic_filter(g), qos(g))),
            }),
            8 => Packet::SubAck(SubAck {
                packet_id: packet_id(g),
                return_codes: non_empty(g, |g| {
                    if bool::arbitrary(g) { SubscribeReturnCode::Failure } else { SubscribeReturnCode::Granted(qos(g)) }
                }),
            }),
            9 => Packet::Unsubscribe(Unsubscribe { packet_id: packet_id(g), filters: non_empty(g, topic_filter) }),
            10 => Packet::UnsubAck(packet_id(g)),
            11 => Packet::PingReq,
            12 => Packet::PingResp,
            _ => Packet::Disconnect,
        };
        Self(packet)
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        // Shrink PUBLISH payloads, the field most likely to matter.
        match &self.0 {
            Packet::Publish(p) => {
                let p = p.clone();
                Box::new(
                    p.payload
                        .to_vec()
                        .shrink()
                        .map(move |payload| Self(Packet::Publish(Publish { payload: payload.into(), ..p.clone() }))),
                )
            }
            _ => Box::new(std::iter::empty()),
        }
    }
}
