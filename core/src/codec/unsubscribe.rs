//! UNSUBSCRIBE (section 3.10).

use bytes::{BufMut, BytesMut};

use super::Unsubscribe;
use super::fixed_header::{self, UNSUBSCRIBE};
use super::strings::{Reader, field_len, put_string};
use crate::error::Violation;
use crate::topic::TopicFilter;

/// Decodes an UNSUBSCRIBE body: a non-zero packet id and one or more
/// filters filling the rest exactly.
pub(crate) fn decode(mut r: Reader) -> Result<Unsubscribe, Violation> {
    let packet_id = r.packet_id()?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(TopicFilter::new(r.string()?)?);
    }
    if filters.is_empty() {
        return Err(Violation::EmptyUnsubscribe);
    }
    Ok(Unsubscribe { packet_id, filters })
}

impl Unsubscribe {
    /// Remaining length of the encoded packet.
    pub(crate) fn remaining_len(&self) -> usize {
        2 + self.filters.iter().map(|f| field_len(f.as_str().len())).sum::<usize>()
    }

    /// Writes the packet. `filters` must not be empty ([MQTT-3.10.3-2]).
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        debug_assert!(!self.filters.is_empty(), "[MQTT-3.10.3-2] empty UNSUBSCRIBE");
        fixed_header::put_header(out, UNSUBSCRIBE, self.remaining_len());
        out.put_u16(self.packet_id.get());
        for filter in &self.filters {
            put_string(out, filter.as_str());
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
    fn unsubscribe_with_two_filters_golden() {
        let unsubscribe = Unsubscribe {
            packet_id: PacketId::new(2).unwrap(),
            filters: vec![TopicFilter::new("a/#").unwrap(), TopicFilter::new("+/b").unwrap()],
        };
        assert_golden("A2 0C 00 02 00 03 61 2F 23 00 03 2B 2F 62", &Packet::Unsubscribe(unsubscribe));
    }

    #[test]
    fn unsubscribe_without_filters_is_malformed() {
        assert_violation("A2 02 00 01", Violation::EmptyUnsubscribe);
    }

    #[test]
    fn unsubscribe_with_zero_id_is_malformed() {
        assert_violation("A2 05 00 00 00 01 61", Violation::ZeroPacketId);
    }

    #[test]
    fn unsubscribe_filter_past_the_body_is_bad_length() {
        assert_violation("A2 05 00 01 00 05 61", Violation::BadLength);
    }

    #[test]
    fn unsubscribe_with_invalid_filter_is_malformed() {
        assert_violation("A2 06 00 01 00 02 23 61", Violation::MultiLevelWildcard);
    }
}
