//! Transcripts of TCP runs, in the format of the core's simulation: one
//! line per event, stamped with scenario time (the sum of the `wait`s
//! before it), so that a TCP transcript can be diffed against the core's.

use std::fmt::{self, Write as _};
use std::time::Duration;

use bytes::BytesMut;
use culex_core::Protocol;
use culex_core::codec;

/// A transcript being written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    clock: Duration,
    text: String,
}

impl Transcript {
    /// An empty transcript at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves scenario time forward.
    pub fn advance(&mut self, by: Duration) {
        self.clock += by;
    }

    /// Adds one line at the current scenario time.
    pub fn note(&mut self, line: impl fmt::Display) {
        let _ = writeln!(self.text, "+{}.{:03}s {line}", self.clock.as_secs(), self.clock.subsec_millis());
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The finished text.
    pub fn into_string(self) -> String {
        self.text
    }
}

/// The packet `bytes` hold, if they are exactly one well-formed packet
/// in its canonical encoding (so re-encoding it gives the same bytes).
pub fn single_packet(bytes: &[u8]) -> Option<codec::Packet> {
    let mut buf = BytesMut::from(bytes);
    // Canonical bytes pass 3.1.1's rules, the stricter ones.
    let packet = codec::decode(&mut buf, usize::MAX, Protocol::V311).ok()??;
    let mut again = BytesMut::new();
    packet.encode(&mut again);
    (buf.is_empty() && again[..] == *bytes).then_some(packet)
}

/// Bytes a client sent, as the core's transcript shows them: decoded if
/// they are one well-formed packet, else as hex.
pub fn describe_sent(bytes: &[u8]) -> String {
    match single_packet(bytes) {
        Some(packet) => culex_core::sim::describe(&packet),
        None => format!("bytes {}", bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")),
    }
}
