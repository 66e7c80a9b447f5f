//! SUBSCRIBE (section 3.8).

use bytes::{BufMut, BytesMut};

use super::Subscribe;
use super::fixed_header::{self, SUBSCRIBE};
use super::strings::{Reader, field_len, put_string};
use crate::error::Violation;
use crate::topic::TopicFilter;
use crate::types::QoS;

/// Decodes a SUBSCRIBE body: a non-zero packet id and one or more
/// (filter, requested QoS) pairs filling the rest exactly.
pub(crate) fn decode(mut r: Reader) -> Result<Subscribe, Violation> {
    let packet_id = r.packet_id()?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = TopicFilter::new(r.string()?)?;
        // Upper six bits reserved, 3 not a QoS ([MQTT-3.8.3-4]).
        let qos = r.read_u8()?;
        let qos = if qos & 0xFC == 0 { QoS::from_bits(qos) } else { None }.ok_or(Violation::SubscribeQos)?;
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        return Err(Violation::EmptySubscribe);
    }
    Ok(Subscribe { packet_id, filters })
}

impl Subscribe {
    /// Remaining length of the encoded packet.
    pub(crate) fn remaining_len(&self) -> usize {
        2 + self.filters.iter().map(|(f, _)| field_len(f.as_str().len()) + 1).sum::<usize>()
    }

    /// Writes the packet. `filters` must not be empty ([MQTT-3.8.3-3]).
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        debug_assert!(!self.filters.is_empty(), "[MQTT-3.8.3-3] empty SUBSCRIBE");
        fixed_header::put_header(out, SUBSCRIBE, self.remaining_len());
        out.put_u16(self.packet_id.get());
        for (filter, qos) in &self.filters {
            put_string(out, filter.as_str());
            out.put_u8(qos.bits());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Packet;
    use crate::codec::testutil::{assert_golden, assert_violation};
    use crate::types::PacketId;

    #[test]
    fn subscribe_with_several_filters_golden() {
        let subscribe = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            filters: vec![
                (TopicFilter::new("a/+").unwrap(), QoS::AtMostOnce),
                (TopicFilter::new("#").unwrap(), QoS::AtLeastOnce),
                (TopicFilter::new("a/b/c").unwrap(), QoS::ExactlyOnce),
            ],
        };
        assert_golden(
            "82 14 00 01 00 03 61 2F 2B 00 00 01 23 01 00 05 61 2F 62 2F 63 02",
            &Packet::Subscribe(subscribe),
        );
    }

    #[test]
    fn subscribe_with_zero_id_is_malformed() {
        assert_violation("82 06 00 00 00 01 61 00", Violation::ZeroPacketId);
    }

    #[test]
    fn subscribe_without_filters_is_malformed() {
        assert_violation("82 02 00 01", Violation::EmptySubscribe);
    }

    #[test]
    fn subscribe_with_qos_3_is_malformed() {
        assert_violation("82 06 00 01 00 01 61 03", Violation::SubscribeQos);
    }

    #[test]
    fn subscribe_with_reserved_qos_bits_is_malformed() {
        assert_violation("82 06 00 01 00 01 61 81", Violation::SubscribeQos);
    }

    #[test]
    fn subscribe_filter_without_qos_is_bad_length() {
        assert_violation("82 05 00 01 00 01 61", Violation::BadLength);
    }

    #[test]
    fn subscribe_without_packet_id_is_bad_length() {
        assert_violation("82 01 00", Violation::BadLength);
    }

    #[test]
    fn subscribe_with_misplaced_multi_level_wildcard_is_malformed() {
        assert_violation("82 08 00 01 00 03 23 2F 61 00", Violation::MultiLevelWildcard);
    }

    #[test]
    fn subscribe_with_partial_single_level_wildcard_is_malformed() {
        assert_violation("82 07 00 01 00 02 61 2B 00", Violation::SingleLevelWildcard);
    }

    #[test]
    fn subscribe_with_empty_filter_is_malformed() {
        assert_violation("82 05 00 01 00 00 00", Violation::EmptyTopic);
    }
}
