//! PUBLISH (section 3.3), including the fan-out fast path.

use bytes::{BufMut, BytesMut};

use super::Publish;
use super::fixed_header::{self, PUBLISH};
use super::strings::{Reader, field_len, put_string};
use crate::error::Violation;
use crate::topic::TopicName;
use crate::types::{PacketId, QoS};

const DUP: u8 = 0x08;
const RETAIN: u8 = 0x01;
const QOS_SHIFT: u8 = 1;

/// Decodes a PUBLISH body; the flags were checked with the first byte.
/// The payload is the rest of the frame, possibly empty, shared with it.
pub(crate) fn decode(dup: bool, qos: QoS, retain: bool, mut r: Reader) -> Result<Publish, Violation> {
    let topic = TopicName::new(r.string()?)?;
    let packet_id = if qos == QoS::AtMostOnce { None } else { Some(r.packet_id()?) };
    Ok(Publish { dup, qos, retain, topic, packet_id, payload: r.rest() })
}

/// Remaining length of a PUBLISH.
fn remaining_len(qos: QoS, topic: &TopicName, payload_len: usize) -> usize {
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    field_len(topic.as_str().len()) + id_len + payload_len
}

/// Exact number of bytes [`encode_publish`] appends for these fields.
pub(crate) fn encoded_len(qos: QoS, topic: &TopicName, payload_len: usize) -> usize {
    fixed_header::packet_len(remaining_len(qos, topic, payload_len))
}

/// Appends a PUBLISH to `out` straight from its parts, so the broker can
/// fan a message out without building a [`Publish`] per subscriber.
///
/// `packet_id` must be `Some` exactly when `qos` is above 0; it is
/// written only for QoS 1 and 2. DUP is never written on QoS 0
/// ([MQTT-3.3.1-2]). The payload must leave the remaining length within
/// [`MAX_REMAINING_LENGTH`](super::MAX_REMAINING_LENGTH) (about 256 MiB).
pub fn encode_publish(
    out: &mut BytesMut,
    dup: bool,
    qos: QoS,
    retain: bool,
    topic: &TopicName,
    packet_id: Option<PacketId>,
    payload: &[u8],
) {
    debug_assert_eq!(packet_id.is_some(), qos != QoS::AtMostOnce, "packet id must be present exactly when QoS > 0");
    let mut first = PUBLISH | (qos.bits() << QOS_SHIFT);
    if dup && qos != QoS::AtMostOnce {
        first |= DUP;
    }
    if retain {
        first |= RETAIN;
    }
    fixed_header::put_header(out, first, remaining_len(qos, topic, payload.len()));
    put_string(out, topic.as_str());
    if qos != QoS::AtMostOnce {
        // Only a broken caller gets here without an id; 0 keeps the
        // length exact and the peer will reject it.
        out.put_u16(packet_id.map_or(0, PacketId::get));
    }
    out.put_slice(payload);
}

impl Publish {
    /// Writes the packet (see [`encode_publish`]).
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        encode_publish(out, self.dup, self.qos, self.retain, &self.topic, self.packet_id, &self.payload);
    }

    /// Exact number of bytes [`Publish::encode`] appends.
    pub(crate) fn encoded_len(&self) -> usize {
        encoded_len(self.qos, &self.topic, self.payload.len())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec::Packet;
    use crate::codec::testutil::{assert_golden, assert_violation, hex};

    fn publish(dup: bool, qos: QoS, retain: bool, id: u16, payload: &'static [u8]) -> Packet {
        Packet::Publish(Publish {
            dup,
            qos,
            retain,
            topic: TopicName::new("a/b").unwrap(),
            packet_id: PacketId::new(id),
            payload: Bytes::from_static(payload),
        })
    }

    #[test]
    fn publish_qos0_golden() {
        assert_golden("30 07 00 03 61 2F 62 68 69", &publish(false, QoS::AtMostOnce, false, 0, b"hi"));
    }

    #[test]
    fn publish_qos0_retain_empty_payload_golden() {
        assert_golden("31 05 00 03 61 2F 62", &publish(false, QoS::AtMostOnce, true, 0, b""));
    }

    #[test]
    fn publish_qos1_golden() {
        assert_golden("32 09 00 03 61 2F 62 00 0A 68 69", &publish(false, QoS::AtLeastOnce, false, 10, b"hi"));
    }

    #[test]
    fn publish_qos1_dup_retain_golden() {
        assert_golden("3B 08 00 03 61 2F 62 00 0A 78", &publish(true, QoS::AtLeastOnce, true, 10, b"x"));
    }

    #[test]
    fn publish_qos2_golden() {
        assert_golden("34 07 00 03 61 2F 62 FF FE", &publish(false, QoS::ExactlyOnce, false, 0xFFFE, b""));
    }

    #[test]
    fn publish_qos2_dup_golden() {
        assert_golden("3C 08 00 03 61 2F 62 00 01 00", &publish(true, QoS::ExactlyOnce, false, 1, b"\0"));
    }

    #[test]
    fn publish_with_200_byte_payload_uses_two_length_bytes() {
        let payload = vec![0xAB; 200];
        let mut out = BytesMut::new();
        let topic = TopicName::new("t").unwrap();
        encode_publish(&mut out, false, QoS::AtMostOnce, false, &topic, None, &payload);
        // 3 (topic) + 200 = 203 = 0xCB 0x01.
        assert_eq!(&out[..5], &[0x30, 0xCB, 0x01, 0x00, 0x01]);
        assert_eq!(out.len(), encoded_len(QoS::AtMostOnce, &topic, 200));
    }

    #[test]
    fn publish_payload_shares_the_receive_buffer() {
        let mut buf = BytesMut::from(&hex("30 07 00 03 61 2F 62 68 69")[..]);
        let start = buf.as_ptr() as usize;
        let Some(Packet::Publish(p)) = crate::codec::decode(&mut buf, 100, crate::types::Protocol::V311).unwrap()
        else {
            panic!("not a PUBLISH");
        };
        assert_eq!(p.payload.as_ptr() as usize, start + 7);
        assert_eq!(p.topic.as_str().as_ptr() as usize, start + 4);
    }

    #[test]
    fn publish_encoder_never_writes_dup_on_qos0() {
        let mut out = BytesMut::new();
        let topic = TopicName::new("t").unwrap();
        encode_publish(&mut out, true, QoS::AtMostOnce, false, &topic, None, b"");
        assert_eq!(out[0], 0x30);
    }

    #[test]
    fn publish_qos1_with_zero_id_is_malformed() {
        assert_violation("32 07 00 03 61 2F 62 00 00", Violation::ZeroPacketId);
    }

    #[test]
    fn publish_qos1_without_id_is_bad_length() {
        assert_violation("32 06 00 03 61 2F 62 00", Violation::BadLength);
    }

    #[test]
    fn publish_topic_past_the_body_is_bad_length() {
        assert_violation("30 04 00 03 61 2F", Violation::BadLength);
    }

    #[test]
    fn publish_with_wildcard_topic_is_malformed() {
        assert_violation("30 05 00 03 61 2F 2B", Violation::WildcardInTopicName);
        assert_violation("30 05 00 03 61 2F 23", Violation::WildcardInTopicName);
    }

    #[test]
    fn publish_with_empty_topic_is_malformed() {
        assert_violation("30 03 00 00 78", Violation::EmptyTopic);
    }

    #[test]
    fn publish_topic_with_null_is_malformed() {
        assert_violation("30 05 00 03 61 00 62", Violation::NullCharacter);
    }

    #[test]
    fn publish_topic_with_invalid_utf8_is_malformed() {
        assert_violation("30 05 00 03 61 C3 28", Violation::InvalidUtf8);
    }
}
