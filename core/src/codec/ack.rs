//! The packets that carry only a packet id: PUBACK, PUBREC, PUBREL,
//! PUBCOMP and UNSUBACK (sections 3.4 to 3.7 and 3.11).

use bytes::{BufMut, BytesMut};

use super::fixed_header;
use super::strings::Reader;
use crate::error::Violation;
use crate::types::PacketId;

/// Decodes a body that is exactly a non-zero packet id.
pub(crate) fn decode(mut r: Reader) -> Result<PacketId, Violation> {
    // The length is judged first: a short or long body is malformed
    // whatever its first two bytes say.
    if r.remaining() != 2 {
        return Err(Violation::BadLength);
    }
    r.packet_id()
}

/// Writes a packet-id-only packet with first byte `first`.
pub(crate) fn encode(out: &mut BytesMut, first: u8, id: PacketId) {
    fixed_header::put_header(out, first, 2);
    out.put_u16(id.get());
}

#[cfg(test)]
mod tests {
    use crate::codec::Packet;
    use crate::codec::testutil::{assert_golden, assert_violation};
    use crate::error::Violation;
    use crate::types::PacketId;

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    #[test]
    fn ack_packets_golden() {
        assert_golden("40 02 00 01", &Packet::PubAck(id(1)));
        assert_golden("50 02 12 34", &Packet::PubRec(id(0x1234)));
        assert_golden("62 02 FF FF", &Packet::PubRel(id(0xFFFF)));
        assert_golden("70 02 00 07", &Packet::PubComp(id(7)));
        assert_golden("B0 02 01 00", &Packet::UnsubAck(id(256)));
    }

    #[test]
    fn puback_with_zero_id_is_malformed() {
        assert_violation("40 02 00 00", Violation::ZeroPacketId);
    }

    #[test]
    fn pubrel_with_zero_id_is_malformed() {
        assert_violation("62 02 00 00", Violation::ZeroPacketId);
    }

    #[test]
    fn unsuback_with_zero_id_is_malformed() {
        assert_violation("B0 02 00 00", Violation::ZeroPacketId);
    }

    #[test]
    fn pubcomp_with_one_byte_is_bad_length() {
        assert_violation("70 01 01", Violation::BadLength);
    }

    #[test]
    fn pubrec_with_three_bytes_is_bad_length() {
        assert_violation("50 03 00 01 00", Violation::BadLength);
    }

    #[test]
    fn puback_with_zero_length_is_bad_length() {
        assert_violation("40 00", Violation::BadLength);
    }
}
