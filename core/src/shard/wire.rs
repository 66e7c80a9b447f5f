//! The form shard messages take between processes (see [`ShardMessage`]):
//! a batch of [`NodeFrame`]s, as one entry of a Redis stream carries it.
//!
//! The bytes come from another process, so decoding trusts nothing: every
//! length is checked against what is left before anything is read or
//! allocated, topics and filters are checked by their own constructors,
//! and anything unexpected is a [`WireError`], never a panic.
//!
//! Integers are fixed-width and big-endian; a batch is read whole or not
//! at all (no bytes may follow its last frame).
//!
//! | Part | Layout |
//! |---|---|
//! | batch | version `u8` (1), frame count `u32`, the frames |
//! | frame | from shard `u16`, to shard `u16`, kind `u8`, body |
//! | `Route` (kind 1), `Unroute` (2) | filter: length `u16`, UTF-8 |
//! | `Publish` (3) | topic: length `u16`, UTF-8; payload: length `u32`, bytes; QoS `u8`; flags `u8`; then the parts the flags announce, in this order |
//! | `Hold` (4), `Release` (5) | connection `u64` |
//! | `Stored` (6) | count `u64` |
//! | flag `0x01` | retain (no part) |
//! | flag `0x02` | expiry: `u64`, the bits of the `f64` (NaN and -0.0 kept) |
//! | flag `0x04` | message publisher: client id (length `u32`, UTF-8), then listener `u16` |
//! | flag `0x08` | its user name: length `u32`, UTF-8, after the client id (only with `0x04`) |
//! | flag `0x10` | publisher's connection `u64` |
//! | flag `0x20` | retain version: tick `u64`, node `u64`, shard `u16` |
//!
//! Other flag bits are refused, so that an encoding is the only one of
//! its frames. `Publish`'s `stored` is not carried: it is a key of the
//! sender's own store, meaningless to the receiver, and always decodes as
//! `None`. [`ShardMessage::Stats`] and [`ShardMessage::Api`] stay inside
//! their process, and [`ShardMessage::Joined`] and [`ShardMessage::Left`]
//! are said by the receiving node's own link: none is carried
//! ([`WireError::NotCarried`]).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::{RetainVersion, ShardId, ShardMessage};
use crate::error::Violation;
use crate::message::{Message, Publisher};
use crate::peer::ListenerId;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{ClientId, ConnId, QoS};

/// The version this module writes and the only one it reads.
const VERSION: u8 = 1;

/// The smallest frame: a `Route` of a one-byte filter. Bounds what a
/// frame count may reserve.
const MIN_FRAME_LEN: usize = 2 + 2 + 1 + 2 + 1;

// Frame kinds.
const ROUTE: u8 = 1;
const UNROUTE: u8 = 2;
const PUBLISH: u8 = 3;
const HOLD: u8 = 4;
const RELEASE: u8 = 5;
const STORED: u8 = 6;

// `Publish` flags.
const RETAIN: u8 = 0x01;
const EXPIRES: u8 = 0x02;
const MESSAGE_PUBLISHER: u8 = 0x04;
const USERNAME: u8 = 0x08;
const CONNECTION: u8 = 0x10;
const VERSIONED: u8 = 0x20;
const KNOWN_FLAGS: u8 = RETAIN | EXPIRES | MESSAGE_PUBLISHER | USERNAME | CONNECTION | VERSIONED;

/// A shard message between processes: from shard `from` of the sending
/// node to shard `to` of the receiving one, each in its own node's
/// numbering.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFrame {
    /// The sending shard, in the sending node's numbering.
    pub from: ShardId,
    /// The receiving shard, in the receiving node's numbering.
    pub to: ShardId,
    /// What the one tells the other.
    pub message: ShardMessage,
}

/// Why bytes are not a batch of frames, or why a message cannot be
/// carried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Stats and API messages stay inside their process; `Joined` and
    /// `Left` come from the receiving node's own link.
    #[error("stats, API, joined and left messages are not carried between processes")]
    NotCarried,
    /// The bytes end before the batch does.
    #[error("the batch ends before its last frame does")]
    Truncated,
    /// Bytes follow the batch's last frame.
    #[error("{0} bytes follow the batch's last frame")]
    Trailing(usize),
    /// The batch was written by a version this one does not read.
    #[error("unknown batch version {0}")]
    UnknownVersion(u8),
    /// A frame's kind is none of those carried.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A published message's topic is not a valid topic name.
    #[error("bad topic name: {0}")]
    BadTopic(Violation),
    /// A route's filter is not a valid topic filter.
    #[error("bad topic filter: {0}")]
    BadFilter(Violation),
    /// A published message's QoS is not 0, 1 or 2.
    #[error("bad QoS {0}")]
    BadQos(u8),
    /// A published message's flags have bits this version does not know,
    /// or a user name without a publisher.
    #[error("bad publish flags {0:#04x}")]
    BadFlags(u8),
    /// A client id or user name is not UTF-8.
    #[error("a client id or user name is not UTF-8")]
    NotUtf8,
    /// A field is longer than its length prefix can say, or a batch has
    /// more frames than its count can.
    #[error("a field is too long for its length prefix")]
    TooLong,
}

/// Appends `frames` as one batch to `out` (a version byte first, then
/// each frame).
///
/// # Errors
///
/// [`WireError::NotCarried`] if a frame's message is not carried,
/// [`WireError::TooLong`] if a field is too long for its length prefix;
/// either way `out` is left as it was.
pub fn encode_batch(frames: &[NodeFrame], out: &mut BytesMut) -> Result<(), WireError> {
    let start = out.len();
    let written = write_batch(frames, out);
    if written.is_err() {
        // A half-written batch would be read as garbage: take it back.
        out.truncate(start);
    }
    written
}

/// The frames of one batch, in order.
///
/// # Errors
///
/// A [`WireError`] if `bytes` are not exactly one batch of valid frames.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<NodeFrame>, WireError> {
    let mut reader = Reader { rest: bytes };
    let version = reader.u8()?;
    if version != VERSION {
        return Err(WireError::UnknownVersion(version));
    }
    let count = reader.u32()?;
    // The count is the peer's word: reserve no more than the bytes left
    // could hold.
    let bound = reader.rest.len() / MIN_FRAME_LEN;
    let mut frames = Vec::with_capacity(usize::try_from(count).map_or(bound, |count| count.min(bound)));
    for _ in 0..count {
        frames.push(reader.frame()?);
    }
    match reader.rest.len() {
        0 => Ok(frames),
        trailing => Err(WireError::Trailing(trailing)),
    }
}

/// [`encode_batch`] without taking back what it wrote on an error.
fn write_batch(frames: &[NodeFrame], out: &mut BytesMut) -> Result<(), WireError> {
    out.put_u8(VERSION);
    out.put_u32(u32::try_from(frames.len()).map_err(|_| WireError::TooLong)?);
    for frame in frames {
        write_frame(frame, out)?;
    }
    Ok(())
}

fn write_frame(frame: &NodeFrame, out: &mut BytesMut) -> Result<(), WireError> {
    out.put_u16(frame.from.0);
    out.put_u16(frame.to.0);
    match &frame.message {
        ShardMessage::Route(filter) => {
            out.put_u8(ROUTE);
            put_short(out, filter.as_str().as_bytes())
        }
        ShardMessage::Unroute(filter) => {
            out.put_u8(UNROUTE);
            put_short(out, filter.as_str().as_bytes())
        }
        // `stored` names a body in the sender's own store: not carried.
        ShardMessage::Publish { message, publisher, version, stored: _ } => {
            out.put_u8(PUBLISH);
            write_publish(message, *publisher, *version, out)
        }
        ShardMessage::Hold(conn) => {
            out.put_u8(HOLD);
            out.put_u64(conn.0);
            Ok(())
        }
        ShardMessage::Release(conn) => {
            out.put_u8(RELEASE);
            out.put_u64(conn.0);
            Ok(())
        }
        ShardMessage::Stored(count) => {
            out.put_u8(STORED);
            out.put_u64(*count);
            Ok(())
        }
        // Figures and the HTTP API stay inside their process; `Joined` and
        // `Left` are said by the receiver's own link to the other nodes.
        ShardMessage::Stats(_) | ShardMessage::Api(_) | ShardMessage::Joined | ShardMessage::Left => {
            Err(WireError::NotCarried)
        }
        ShardMessage::Claim { .. } | ShardMessage::Claimed { .. } => Err(WireError::NotCarried),
    }
}

fn write_publish(
    message: &Message,
    conn: Option<ConnId>,
    version: Option<RetainVersion>,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    put_short(out, message.topic.as_str().as_bytes())?;
    put_long(out, &message.payload)?;
    out.put_u8(message.qos.bits());
    let mut flags = 0;
    for (present, flag) in [
        (message.retain, RETAIN),
        (message.expires_at.is_some(), EXPIRES),
        (message.publisher.is_some(), MESSAGE_PUBLISHER),
        (message.publisher.as_ref().is_some_and(|p| p.username.is_some()), USERNAME),
        (conn.is_some(), CONNECTION),
        (version.is_some(), VERSIONED),
    ] {
        if present {
            flags |= flag;
        }
    }
    out.put_u8(flags);
    if let Some(expires_at) = message.expires_at {
        out.put_u64(expires_at.to_bits());
    }
    if let Some(publisher) = &message.publisher {
        put_long(out, publisher.client_id.as_str().as_bytes())?;
        if let Some(username) = &publisher.username {
            put_long(out, username.as_bytes())?;
        }
        out.put_u16(publisher.listener.0);
    }
    if let Some(conn) = conn {
        out.put_u64(conn.0);
    }
    if let Some(version) = version {
        out.put_u64(version.tick);
        out.put_u64(version.node);
        out.put_u16(version.shard.0);
    }
    Ok(())
}

/// Writes `bytes` after a `u16` length.
fn put_short(out: &mut BytesMut, bytes: &[u8]) -> Result<(), WireError> {
    out.put_u16(u16::try_from(bytes.len()).map_err(|_| WireError::TooLong)?);
    out.put_slice(bytes);
    Ok(())
}

/// Writes `bytes` after a `u32` length.
fn put_long(out: &mut BytesMut, bytes: &[u8]) -> Result<(), WireError> {
    out.put_u32(u32::try_from(bytes.len()).map_err(|_| WireError::TooLong)?);
    out.put_slice(bytes);
    Ok(())
}

/// The unread part of a batch.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The next `len` bytes; checked before anything is taken, so a length
    /// from the peer allocates nothing.
    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        let (head, tail) = self.rest.split_at_checked(len).ok_or(WireError::Truncated)?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, tail) = self.rest.split_first_chunk::<N>().ok_or(WireError::Truncated)?;
        self.rest = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        self.array().map(u8::from_be_bytes)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }

    /// Bytes after a `u16` length.
    fn short(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// Bytes after a `u32` length.
    fn long(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.u32()?;
        // Beyond `usize` it cannot fit in what is left either.
        self.take(usize::try_from(len).map_err(|_| WireError::Truncated)?)
    }

    /// UTF-8 text after a `u32` length.
    fn text(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.long()?).map_err(|_| WireError::NotUtf8)
    }

    fn filter(&mut self) -> Result<TopicFilter, WireError> {
        let text = std::str::from_utf8(self.short()?).map_err(|_| WireError::BadFilter(Violation::InvalidUtf8))?;
        TopicFilter::new(text).map_err(WireError::BadFilter)
    }

    fn topic(&mut self) -> Result<TopicName, WireError> {
        let text = std::str::from_utf8(self.short()?).map_err(|_| WireError::BadTopic(Violation::InvalidUtf8))?;
        TopicName::new(text).map_err(WireError::BadTopic)
    }

    fn frame(&mut self) -> Result<NodeFrame, WireError> {
        let from = ShardId(self.u16()?);
        let to = ShardId(self.u16()?);
        let message = match self.u8()? {
            ROUTE => ShardMessage::Route(self.filter()?),
            UNROUTE => ShardMessage::Unroute(self.filter()?),
            PUBLISH => self.publish()?,
            HOLD => ShardMessage::Hold(ConnId(self.u64()?)),
            RELEASE => ShardMessage::Release(ConnId(self.u64()?)),
            STORED => ShardMessage::Stored(self.u64()?),
            kind => return Err(WireError::UnknownKind(kind)),
        };
        Ok(NodeFrame { from, to, message })
    }

    fn publish(&mut self) -> Result<ShardMessage, WireError> {
        let topic = self.topic()?;
        // A copy: the message may outlive the batch's buffer by far.
        let payload = Bytes::copy_from_slice(self.long()?);
        let qos = self.u8()?;
        let qos = QoS::from_bits(qos).ok_or(WireError::BadQos(qos))?;
        let flags = self.u8()?;
        if flags & !KNOWN_FLAGS != 0 || (flags & USERNAME != 0 && flags & MESSAGE_PUBLISHER == 0) {
            return Err(WireError::BadFlags(flags));
        }
        let expires_at = if flags & EXPIRES != 0 { Some(f64::from_bits(self.u64()?)) } else { None };
        let publisher = if flags & MESSAGE_PUBLISHER != 0 {
            let client_id = ClientId::new(self.text()?);
            let username = if flags & USERNAME != 0 { Some(Arc::from(self.text()?)) } else { None };
            let listener = ListenerId(self.u16()?);
            Some(Arc::new(Publisher { client_id, username, listener }))
        } else {
            None
        };
        let conn = if flags & CONNECTION != 0 { Some(ConnId(self.u64()?)) } else { None };
        let version = if flags & VERSIONED != 0 {
            Some(RetainVersion { tick: self.u64()?, node: self.u64()?, shard: ShardId(self.u16()?) })
        } else {
            None
        };
        let message = Message { topic, payload, qos, retain: flags & RETAIN != 0, expires_at, publisher };
        Ok(ShardMessage::Publish { message: Arc::new(message), publisher: conn, version, stored: None })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use quickcheck::{Arbitrary, Gen, QuickCheck};

    use super::*;
    use crate::persistence::MessageId;
    use crate::shard::ApiMessage;
    use crate::topic::tests::{ArbFilter, ArbName, filter, name};

    /// A carried frame, `stored` always `None` (it is not carried).
    #[derive(Debug, Clone)]
    struct ArbFrame(NodeFrame);

    /// An expiry, often one whose bits `==` does not see (NaN, -0.0).
    fn arbitrary_expiry(g: &mut Gen) -> f64 {
        match u8::arbitrary(g) % 6 {
            0 => f64::NAN,
            1 => -0.0,
            2 => f64::from_bits(0x7ff0_0000_dead_beef), // a NaN with a payload
            3 => f64::INFINITY,
            4 => f64::arbitrary(g),
            _ => f64::from_bits(u64::arbitrary(g)),
        }
    }

    fn arbitrary_message(g: &mut Gen) -> Message {
        let publisher = bool::arbitrary(g).then(|| {
            Arc::new(Publisher {
                client_id: ClientId::new(String::arbitrary(g)),
                username: Option::<String>::arbitrary(g).map(Arc::from),
                listener: ListenerId(u16::arbitrary(g)),
            })
        });
        Message {
            topic: ArbName::arbitrary(g).topic(),
            payload: Bytes::from(Vec::<u8>::arbitrary(g)),
            qos: *g.choose(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]).unwrap(),
            retain: bool::arbitrary(g),
            expires_at: bool::arbitrary(g).then(|| arbitrary_expiry(g)),
            publisher,
        }
    }

    impl Arbitrary for ArbFrame {
        fn arbitrary(g: &mut Gen) -> Self {
            let message = match u8::arbitrary(g) % 6 {
                0 => ShardMessage::Route(ArbFilter::arbitrary(g).filter()),
                1 => ShardMessage::Unroute(ArbFilter::arbitrary(g).filter()),
                2 => ShardMessage::Publish {
                    message: Arc::new(arbitrary_message(g)),
                    publisher: Option::<u64>::arbitrary(g).map(ConnId),
                    version: bool::arbitrary(g).then(|| RetainVersion {
                        tick: u64::arbitrary(g),
                        node: u64::arbitrary(g),
                        shard: ShardId(u16::arbitrary(g)),
                    }),
                    stored: None,
                },
                3 => ShardMessage::Hold(ConnId(u64::arbitrary(g))),
                4 => ShardMessage::Release(ConnId(u64::arbitrary(g))),
                _ => ShardMessage::Stored(u64::arbitrary(g)),
            };
            Self(NodeFrame { from: ShardId(u16::arbitrary(g)), to: ShardId(u16::arbitrary(g)), message })
        }
    }

    fn frames(arb: &[ArbFrame]) -> Vec<NodeFrame> {
        arb.iter().map(|f| f.0.clone()).collect()
    }

    /// The frames with their expiries as bits, beside the frames without
    /// them: `==` on the pair is `==` with expiries compared bit for bit.
    fn comparable(frames: &[NodeFrame]) -> (Vec<Option<u64>>, Vec<NodeFrame>) {
        let mut bits = Vec::new();
        let rest = frames
            .iter()
            .cloned()
            .map(|mut frame| {
                if let ShardMessage::Publish { message, .. } = &mut frame.message {
                    bits.push(message.expires_at.map(f64::to_bits));
                    Arc::make_mut(message).expires_at = None;
                }
                frame
            })
            .collect();
        (bits, rest)
    }

    fn encode(frames: &[NodeFrame]) -> BytesMut {
        let mut out = BytesMut::new();
        encode_batch(frames, &mut out).unwrap();
        out
    }

    fn publish(message: Message) -> ShardMessage {
        ShardMessage::Publish { message: Arc::new(message), publisher: None, version: None, stored: None }
    }

    /// A few batches of one or more frames, every kind and flag among them.
    fn sample_batches() -> Vec<Vec<NodeFrame>> {
        let full = Message {
            topic: name("a/b"),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            expires_at: Some(f64::NAN),
            publisher: Some(Arc::new(Publisher {
                client_id: ClientId::new("client"),
                username: Some(Arc::from("user")),
                listener: ListenerId(3),
            })),
        };
        let frame = |from, to, message| NodeFrame { from: ShardId(from), to: ShardId(to), message };
        vec![
            vec![frame(0, 1, ShardMessage::Route(filter("a/+/#")))],
            vec![frame(2, 0, ShardMessage::Hold(ConnId(7))), frame(2, 0, ShardMessage::Stored(9))],
            vec![
                frame(1, 2, ShardMessage::Unroute(filter("x"))),
                frame(
                    1,
                    2,
                    ShardMessage::Publish {
                        message: Arc::new(full),
                        publisher: Some(ConnId(42)),
                        version: Some(RetainVersion { tick: 5, node: 6, shard: ShardId(1) }),
                        stored: None,
                    },
                ),
                frame(1, 2, ShardMessage::Release(ConnId(u64::MAX))),
                frame(1, 2, publish(Message::without_expiry(name("t"), Bytes::new(), QoS::AtMostOnce, false))),
            ],
        ]
    }

    #[test]
    fn arbitrary_batches_round_trip_exactly() {
        fn prop(arb: Vec<ArbFrame>) -> bool {
            let frames = frames(&arb);
            let decoded = decode_batch(&encode(&frames)).unwrap();
            comparable(&decoded) == comparable(&frames)
        }
        QuickCheck::new().tests(1000).quickcheck(prop as fn(Vec<ArbFrame>) -> bool);
    }

    #[test]
    fn sample_batches_round_trip_exactly() {
        for batch in sample_batches() {
            assert_eq!(comparable(&decode_batch(&encode(&batch)).unwrap()), comparable(&batch));
        }
        assert_eq!(decode_batch(&encode(&[])), Ok(Vec::new()), "an empty batch is a batch");
    }

    #[test]
    fn every_proper_prefix_of_a_batch_is_truncated() {
        for batch in sample_batches() {
            let bytes = encode(&batch);
            for cut in 0..bytes.len() {
                assert_eq!(decode_batch(&bytes[..cut]), Err(WireError::Truncated), "cut at {cut} of {batch:?}");
            }
        }
    }

    #[test]
    fn every_proper_prefix_of_an_arbitrary_batch_is_an_error() {
        fn prop(first: ArbFrame, more: Vec<ArbFrame>) -> bool {
            let mut batch = vec![first.0];
            batch.extend(frames(&more));
            let bytes = encode(&batch);
            (0..bytes.len()).all(|cut| decode_batch(&bytes[..cut]).is_err())
        }
        // Every cut decodes up to it: small batches keep that quick.
        QuickCheck::new().rng(Gen::new(20)).tests(300).quickcheck(prop as fn(ArbFrame, Vec<ArbFrame>) -> bool);
    }

    #[test]
    fn arbitrary_bytes_decode_without_panicking() {
        fn prop(bytes: Vec<u8>) -> bool {
            let _ = decode_batch(&bytes);
            // Past the version check, too.
            let mut versioned = vec![VERSION];
            versioned.extend(&bytes);
            let _ = decode_batch(&versioned);
            true
        }
        QuickCheck::new().tests(2000).quickcheck(prop as fn(Vec<u8>) -> bool);
    }

    #[test]
    fn corrupted_batches_decode_without_panicking() {
        fn prop(arb: Vec<ArbFrame>, at: usize, byte: u8) -> bool {
            let mut bytes = encode(&frames(&arb));
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Ok(decoded) = decode_batch(&bytes) {
                // What decodes is a batch, and encodes back to these bytes.
                return encode(&decoded) == bytes;
            }
            true
        }
        QuickCheck::new().tests(2000).quickcheck(prop as fn(Vec<ArbFrame>, usize, u8) -> bool);
    }

    #[test]
    fn stats_api_joined_and_left_are_refused_and_nothing_is_appended() {
        let carried = NodeFrame { from: ShardId(0), to: ShardId(1), message: ShardMessage::Stored(1) };
        for message in [
            ShardMessage::Stats(Box::default()),
            ShardMessage::Api(ApiMessage::AskFigures { request: 1 }),
            ShardMessage::Joined,
            ShardMessage::Left,
        ] {
            let refused = NodeFrame { from: ShardId(1), to: ShardId(0), message };
            let mut out = BytesMut::from(&b"before"[..]);
            assert_eq!(encode_batch(&[carried.clone(), refused], &mut out), Err(WireError::NotCarried));
            assert_eq!(&out[..], b"before");
        }
    }

    #[test]
    fn stored_is_not_carried_and_decodes_as_none() {
        let message = Arc::new(Message::without_expiry(name("a"), Bytes::from_static(b"x"), QoS::ExactlyOnce, false));
        let sent = ShardMessage::Publish {
            message: Arc::clone(&message),
            publisher: Some(ConnId(3)),
            version: None,
            stored: Some(MessageId(17)),
        };
        let decoded = decode_batch(&encode(&[NodeFrame { from: ShardId(0), to: ShardId(1), message: sent }])).unwrap();
        let expected = ShardMessage::Publish { message, publisher: Some(ConnId(3)), version: None, stored: None };
        assert_eq!(decoded, [NodeFrame { from: ShardId(0), to: ShardId(1), message: expected }]);
    }

    #[test]
    fn malformed_batches_say_why() {
        // Version 1, one frame from shard 0 to shard 1, then the frame's kind and body.
        let batch = |body: &[u8]| [&[VERSION, 0, 0, 0, 1, 0, 0, 0, 1][..], body].concat();
        assert_eq!(decode_batch(&[2, 0, 0, 0, 0]), Err(WireError::UnknownVersion(2)));
        assert_eq!(decode_batch(&[VERSION, 0, 0, 0, 0, 9]), Err(WireError::Trailing(1)));
        assert_eq!(decode_batch(&batch(&[7])), Err(WireError::UnknownKind(7)));
        assert_eq!(
            decode_batch(&batch(&[ROUTE, 0, 2, b'a', b'#'])),
            Err(WireError::BadFilter(Violation::MultiLevelWildcard))
        );
        assert_eq!(decode_batch(&batch(&[UNROUTE, 0, 0])), Err(WireError::BadFilter(Violation::EmptyTopic)));
        assert_eq!(decode_batch(&batch(&[ROUTE, 0, 1, 0xff])), Err(WireError::BadFilter(Violation::InvalidUtf8)));
        assert_eq!(
            decode_batch(&batch(&[PUBLISH, 0, 1, b'+'])),
            Err(WireError::BadTopic(Violation::WildcardInTopicName))
        );
        let publish = |tail: &[u8]| batch(&[&[PUBLISH, 0, 1, b't', 0, 0, 0, 0][..], tail].concat());
        assert_eq!(decode_batch(&publish(&[3, 0])), Err(WireError::BadQos(3)));
        assert_eq!(decode_batch(&publish(&[0, 0x40])), Err(WireError::BadFlags(0x40)));
        assert_eq!(decode_batch(&publish(&[0, USERNAME])), Err(WireError::BadFlags(USERNAME)));
        let bad_id = [0, MESSAGE_PUBLISHER, 0, 0, 0, 1, 0xff, 0, 0];
        assert_eq!(decode_batch(&publish(&bad_id)), Err(WireError::NotUtf8));
        assert!(decode_batch(&publish(&[0, 0])).is_ok());
    }

    #[test]
    fn huge_lengths_and_counts_are_truncations_not_allocations() {
        assert_eq!(decode_batch(&[VERSION, 0xff, 0xff, 0xff, 0xff]), Err(WireError::Truncated));
        let payload = [VERSION, 0, 0, 0, 1, 0, 0, 0, 1, PUBLISH, 0, 1, b't', 0xff, 0xff, 0xff, 0xff, 0, 0];
        assert_eq!(decode_batch(&payload), Err(WireError::Truncated));
        let client_id = [&payload[..13], &[0, 0, 0, 0, 0, MESSAGE_PUBLISHER, 0xff, 0xff, 0xff, 0xff][..]].concat();
        assert_eq!(decode_batch(&client_id), Err(WireError::Truncated));
    }
}
