//! SUBACK (section 3.9).

use bytes::{BufMut, BytesMut};

use super::fixed_header::{self, SUBACK};
use super::strings::Reader;
use super::{SubAck, SubscribeReturnCode};
use crate::error::Violation;
use crate::types::QoS;

impl SubscribeReturnCode {
    /// The wire value: the granted QoS, or 0x80.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Granted(qos) => qos.bits(),
            Self::Failure => 0x80,
        }
    }

    /// The code for wire value `code`, or `None` for a reserved value
    /// ([MQTT-3.9.3-2]).
    pub fn from_u8(code: u8) -> Option<Self> {
        match code {
            0x80 => Some(Self::Failure),
            _ => QoS::from_bits(code).map(Self::Granted),
        }
    }
}

/// Decodes a SUBACK body: a non-zero packet id and one or more return
/// codes. A SUBACK with no code answers no filter, and a SUBSCRIBE always
/// has one, so an empty list is [`Violation::BadLength`]; a reserved code
/// is [`Violation::ReservedFlags`].
pub(crate) fn decode(mut r: Reader) -> Result<SubAck, Violation> {
    let packet_id = r.packet_id()?;
    if r.is_empty() {
        return Err(Violation::BadLength);
    }
    let return_codes = r
        .rest()
        .iter()
        .map(|&code| SubscribeReturnCode::from_u8(code).ok_or(Violation::ReservedFlags))
        .collect::<Result<_, _>>()?;
    Ok(SubAck { packet_id, return_codes })
}

impl SubAck {
    /// Remaining length of the encoded packet.
    pub(crate) fn remaining_len(&self) -> usize {
        2 + self.return_codes.len()
    }

    /// Writes the packet: one code per filter of the SUBSCRIBE answered,
    /// so `return_codes` is never empty.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        debug_assert!(!self.return_codes.is_empty(), "SUBACK without return codes");
        fixed_header::put_header(out, SUBACK, self.remaining_len());
        out.put_u16(self.packet_id.get());
        for code in &self.return_codes {
            out.put_u8(code.to_u8());
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
    fn suback_with_failure_golden() {
        let suback = SubAck {
            packet_id: PacketId::new(0x0102).unwrap(),
            return_codes: vec![
                SubscribeReturnCode::Granted(QoS::AtMostOnce),
                SubscribeReturnCode::Failure,
                SubscribeReturnCode::Granted(QoS::AtLeastOnce),
                SubscribeReturnCode::Granted(QoS::ExactlyOnce),
            ],
        };
        assert_golden("90 06 01 02 00 80 01 02", &Packet::SubAck(suback));
    }

    #[test]
    fn suback_with_code_3_is_malformed() {
        assert_violation("90 03 00 01 03", Violation::ReservedFlags);
    }

    #[test]
    fn suback_with_code_0x81_is_malformed() {
        assert_violation("90 03 00 01 81", Violation::ReservedFlags);
    }

    #[test]
    fn suback_without_codes_is_bad_length() {
        assert_violation("90 02 00 01", Violation::BadLength);
    }

    #[test]
    fn suback_with_zero_id_is_malformed() {
        assert_violation("90 03 00 00 00", Violation::ZeroPacketId);
    }
}
