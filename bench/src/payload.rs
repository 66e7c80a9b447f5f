//! What a benchmark message carries: the publisher's index, a sequence
//! number and the send time, in one of two encodings.
//!
//! - [`PayloadKind::Plain`]: binary, starting with the byte `0xB5`, so a
//!   broker's payload expiry check rejects it from its first byte.
//! - [`PayloadKind::Json`]: a JSON object with a far-future `expired_at`
//!   (2100-01-01), so a broker that honours payload expiry parses it and
//!   still delivers it.
//!
//! Both are padded to the requested size when it is large enough.

use std::time::Instant;

use crate::options::PayloadKind;

/// First byte of a plain payload.
const MAGIC: u8 = 0xB5;

/// Bytes a plain payload needs: magic, publisher, sequence, timestamp.
pub const PLAIN_MIN: usize = 1 + 4 + 8 + 8;

/// The `expired_at` written in JSON payloads: 2100-01-01T00:00:00Z.
pub const FAR_FUTURE: u64 = 4_102_444_800;

/// What the receiver reads back from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the publisher that sent it.
    pub publisher: u32,
    /// Sequence number within that publisher, from 0.
    pub seq: u64,
    /// Send time, in nanoseconds since the run's [`Epoch`].
    pub sent_ns: u64,
}

/// The run's time origin, shared by publishers and subscribers (they live
/// in the same process, so one monotonic clock serves both ends).
#[derive(Debug, Clone, Copy)]
pub struct Epoch(Instant);

impl Epoch {
    /// Starts the clock.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Replaces the content of `out` with the payload for `stamp`, `size`
/// bytes long (longer if `size` cannot hold the fields).
pub fn write(kind: PayloadKind, size: usize, stamp: Stamp, out: &mut Vec<u8>) {
    out.clear();
    match kind {
        PayloadKind::Plain => {
            out.push(MAGIC);
            out.extend_from_slice(&stamp.publisher.to_be_bytes());
            out.extend_from_slice(&stamp.seq.to_be_bytes());
            out.extend_from_slice(&stamp.sent_ns.to_be_bytes());
            out.resize(size.max(PLAIN_MIN), 0xAA);
        }
        PayloadKind::Json => {
            use std::io::Write;
            // Writing to a Vec cannot fail.
            let _ = write!(
                out,
                "{{\"expired_at\":{FAR_FUTURE},\"p\":{},\"s\":{},\"t\":{}",
                stamp.publisher, stamp.seq, stamp.sent_ns
            );
            // Blanks before the closing brace keep it valid JSON.
            while out.len() + 1 < size {
                out.push(b' ');
            }
            out.push(b'}');
        }
    }
}

/// Reads the stamp of a payload written by [`write()`], in either encoding.
pub fn read(payload: &[u8]) -> Option<Stamp> {
    match payload.first()? {
        &MAGIC => {
            let publisher = u32::from_be_bytes(payload.get(1..5)?.try_into().ok()?);
            let seq = u64::from_be_bytes(payload.get(5..13)?.try_into().ok()?);
            let sent_ns = u64::from_be_bytes(payload.get(13..21)?.try_into().ok()?);
            Some(Stamp { publisher, seq, sent_ns })
        }
        b'{' => {
            let publisher = u32::try_from(json_number(payload, b"\"p\":")?).ok()?;
            Some(Stamp { publisher, seq: json_number(payload, b"\"s\":")?, sent_ns: json_number(payload, b"\"t\":")? })
        }
        _ => None,
    }
}

/// The unsigned integer right after `key` in `payload`.
fn json_number(payload: &[u8], key: &[u8]) -> Option<u64> {
    let at = payload.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut value: u64 = 0;
    let mut any = false;
    for &d in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp { publisher: 3, seq: 999_999, sent_ns: 59_000_000_123 };

    #[test]
    fn plain_round_trip_is_64_bytes() {
        let mut out = Vec::new();
        write(PayloadKind::Plain, 64, STAMP, &mut out);
        assert_eq!(out.len(), 64);
        assert_eq!(read(&out), Some(STAMP));
    }

    #[test]
    fn json_round_trip_is_64_bytes_and_valid_json() {
        let mut out = Vec::new();
        write(PayloadKind::Json, 64, STAMP, &mut out);
        assert_eq!(out.len(), 64, "{}", String::from_utf8_lossy(&out));
        assert_eq!(read(&out), Some(STAMP));
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["expired_at"], FAR_FUTURE);
    }

    #[test]
    fn small_sizes_grow_to_hold_the_fields() {
        let mut out = Vec::new();
        write(PayloadKind::Plain, 4, STAMP, &mut out);
        assert_eq!(out.len(), PLAIN_MIN);
        write(PayloadKind::Json, 4, STAMP, &mut out);
        assert_eq!(read(&out), Some(STAMP));
    }

    #[test]
    fn foreign_payloads_are_not_read() {
        assert_eq!(read(b""), None);
        assert_eq!(read(b"hello"), None);
        assert_eq!(read(&[MAGIC, 1, 2]), None);
    }
}
