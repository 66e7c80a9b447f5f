//! CONNACK (section 3.2).

use bytes::{BufMut, BytesMut};

use super::fixed_header::{self, CONNACK};
use super::strings::Reader;
use super::{ConnAck, ConnectReturnCode};
use crate::error::Violation;

impl ConnectReturnCode {
    /// The code for wire value `code`, or `None` for the reserved 6..=255.
    pub fn from_u8(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Accepted,
            1 => Self::UnacceptableProtocolVersion,
            2 => Self::IdentifierRejected,
            3 => Self::ServerUnavailable,
            4 => Self::BadUserNameOrPassword,
            5 => Self::NotAuthorized,
            _ => return None,
        })
    }
}

/// Decodes a CONNACK body: exactly two bytes, the acknowledge flags with
/// bits 7-1 reserved (0) and a known return code. An unknown code is
/// reported as [`Violation::ReservedFlags`]: it is a reserved value.
pub(crate) fn decode(mut r: Reader) -> Result<ConnAck, Violation> {
    if r.remaining() != 2 {
        return Err(Violation::BadLength);
    }
    let flags = r.read_u8()?;
    if flags & 0xFE != 0 {
        return Err(Violation::ReservedFlags);
    }
    let code = ConnectReturnCode::from_u8(r.read_u8()?).ok_or(Violation::ReservedFlags)?;
    Ok(ConnAck { session_present: flags & 0x01 != 0, code })
}

impl ConnAck {
    /// Writes the packet. 3.1 and 3.1.1 share the bytes; for 3.1 the
    /// broker leaves `session_present` false.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        fixed_header::put_header(out, CONNACK, 2);
        out.put_u8(u8::from(self.session_present));
        out.put_u8(self.code as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Packet;
    use crate::codec::testutil::{assert_golden, assert_violation};

    #[test]
    fn connack_accepted_with_session_golden() {
        assert_golden(
            "20 02 01 00",
            &Packet::ConnAck(ConnAck { session_present: true, code: ConnectReturnCode::Accepted }),
        );
    }

    #[test]
    fn connack_every_return_code_golden() {
        for code in 0..=5u8 {
            let expected = ConnectReturnCode::from_u8(code).unwrap();
            assert_eq!(expected as u8, code);
            assert_golden(
                &format!("20 02 00 {code:02X}"),
                &Packet::ConnAck(ConnAck { session_present: false, code: expected }),
            );
        }
    }

    #[test]
    fn connack_with_reserved_ack_flag_is_malformed() {
        assert_violation("20 02 02 00", Violation::ReservedFlags);
    }

    #[test]
    fn connack_with_return_code_6_is_malformed() {
        assert_violation("20 02 00 06", Violation::ReservedFlags);
    }

    #[test]
    fn connack_with_three_bytes_is_bad_length() {
        assert_violation("20 03 00 00 00", Violation::BadLength);
    }
}
