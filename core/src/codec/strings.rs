//! Reading a packet body field by field, and writing strings and binary
//! data with their two-byte length prefix (section 1.5).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::error::Violation;
use crate::types::PacketId;

/// A cursor over one packet body. Every read that would run past the end
/// of the body is [`Violation::BadLength`]; fields are `Bytes` slices of
/// the frame, never copies.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    /// A cursor at the start of `body`.
    pub(crate) fn new(body: Bytes) -> Self {
        Self { buf: body }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether the whole body has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// One byte.
    pub(crate) fn read_u8(&mut self) -> Result<u8, Violation> {
        self.buf.try_get_u8().map_err(|_| Violation::BadLength)
    }

    /// A big-endian two-byte integer.
    pub(crate) fn read_u16(&mut self) -> Result<u16, Violation> {
        self.buf.try_get_u16().map_err(|_| Violation::BadLength)
    }

    /// A packet identifier, which is never zero ([MQTT-2.3.1-1]).
    pub(crate) fn packet_id(&mut self) -> Result<PacketId, Violation> {
        PacketId::new(self.read_u16()?).ok_or(Violation::ZeroPacketId)
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Result<Bytes, Violation> {
        if n > self.buf.len() {
            return Err(Violation::BadLength);
        }
        Ok(self.buf.split_to(n))
    }

    /// Binary data: a two-byte length and that many bytes (section 1.5.6).
    pub(crate) fn binary(&mut self) -> Result<Bytes, Violation> {
        let len = self.read_u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 encoded string (section 1.5.3): well-formed UTF-8, which
    /// excludes surrogates and overlong forms ([MQTT-1.5.3-1]), and no
    /// U+0000 ([MQTT-1.5.3-2]). A BOM (U+FEFF) is kept as it is
    /// ([MQTT-1.5.3-3]).
    pub(crate) fn string(&mut self) -> Result<ByteString, Violation> {
        let bytes = self.binary()?;
        // U+0000 is one zero byte in UTF-8 and a zero byte is nothing else,
        // so the byte search can run before (and cheaper than) validation.
        if memchr::memchr(0, &bytes).is_some() {
            return Err(if std::str::from_utf8(&bytes).is_ok() {
                Violation::NullCharacter
            } else {
                Violation::InvalidUtf8
            });
        }
        ByteString::try_from(bytes).map_err(|_| Violation::InvalidUtf8)
    }

    /// Everything not read yet (the PUBLISH payload).
    pub(crate) fn rest(self) -> Bytes {
        self.buf
    }

    /// Ends the body: leftover bytes are [`Violation::BadLength`].
    pub(crate) fn finish(self) -> Result<(), Violation> {
        if self.buf.is_empty() { Ok(()) } else { Err(Violation::BadLength) }
    }
}

/// Encoded size of a string or binary field of `len` bytes.
pub(crate) fn field_len(len: usize) -> usize {
    2 + len
}

/// Writes binary data with its length prefix. The caller must not pass
/// more than 65,535 bytes: the length cannot express it, and truncating
/// would silently change the data.
pub(crate) fn put_binary(out: &mut BytesMut, data: &[u8]) {
    debug_assert!(data.len() <= usize::from(u16::MAX), "field of {} bytes does not fit a two-byte length", data.len());
    // Only reachable past the documented precondition.
    out.put_u16(data.len() as u16);
    out.put_slice(data);
}

/// Writes a string with its length prefix; same limit as [`put_binary`].
pub(crate) fn put_string(out: &mut BytesMut, s: &str) {
    put_binary(out, s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testutil::hex;

    fn string(hex_body: &str) -> Result<ByteString, Violation> {
        Reader::new(Bytes::from(hex(hex_body))).string()
    }

    #[test]
    fn string_with_bom_is_kept_as_is() {
        let s = string("00 04 EF BB BF 61").unwrap();
        assert_eq!(s.as_bytes().as_ref(), hex("EF BB BF 61").as_slice());
    }

    #[test]
    fn string_with_null_character_is_malformed() {
        assert_eq!(string("00 03 61 00 62"), Err(Violation::NullCharacter));
    }

    #[test]
    fn string_with_surrogate_is_malformed() {
        // U+D800 encoded as if it were a scalar value.
        assert_eq!(string("00 03 ED A0 80"), Err(Violation::InvalidUtf8));
    }

    #[test]
    fn string_with_overlong_encoding_is_malformed() {
        // '/' as two bytes.
        assert_eq!(string("00 02 C0 AF"), Err(Violation::InvalidUtf8));
    }

    #[test]
    fn string_with_invalid_utf8_and_zero_byte_is_invalid_utf8() {
        assert_eq!(string("00 02 FF 00"), Err(Violation::InvalidUtf8));
    }

    #[test]
    fn string_longer_than_body_is_bad_length() {
        assert_eq!(string("00 05 61 62"), Err(Violation::BadLength));
        assert_eq!(string("00"), Err(Violation::BadLength));
    }

    #[test]
    fn string_shares_the_frame() {
        let body = Bytes::from(hex("00 02 61 62"));
        let start = body.as_ptr() as usize;
        let s = Reader::new(body).string().unwrap();
        assert_eq!(s.as_bytes().as_ptr() as usize, start + 2);
    }

    #[test]
    fn put_string_writes_the_length_prefix() {
        let mut out = BytesMut::new();
        put_string(&mut out, "ab");
        put_binary(&mut out, &[]);
        assert_eq!(out.as_ref(), hex("00 02 61 62 00 00").as_slice());
    }
}
