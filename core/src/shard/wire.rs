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
//! | batch | version `u8` (6), frame count `u32`, the frames |
//! | frame | from shard `u16`, to shard `u16`, kind `u8`, body |
//! | `Route` (kind 1), `Unroute` (2) | filter: length `u16`, UTF-8 |
//! | `Publish` (3) | topic: length `u16`, UTF-8; payload: length `u32`, bytes; QoS `u8`; flags `u8`; then the parts the flags announce, in this order |
//! | `Hold` (4), `Release` (5) | connection `u64` |
//! | `Stored` (6), `Routed` (9) | count `u64` |
//! | `RoutesTold` | as `Routed` with count 0 (which a build before it takes as nothing new) |
//! | `Claim` (7) | client id: length `u32`, UTF-8; stamp |
//! | `Claimed` (8) | client id: length `u32`, UTF-8; later: `u8` 0 or 1; session: `u8` 0 (none) or 1, then the session |
//! | `Retained` (10) | the message (flag `0x20` required, `0x10` refused), then its retain version |
//! | `Holding` (11) | client id: length `u32`, UTF-8; holder: address; filters: count `u32`, each a filter (length `u16`, UTF-8) |
//! | `Flush` (12) | client id: length `u32`, UTF-8; stamp; holders: count `u32`, each an address |
//! | `Flushed` (13) | client id: length `u32`, UTF-8; stamp |
//! | `Forwarded` (14) | client id: length `u32`, UTF-8; the message |
//! | `TakenOver` (15) | node `u64` (added within version 6: a build before it skips a batch holding one, while every other batch of a newer build still reaches it in a rolling upgrade) |
//! | address | node `u64`, shard `u16` |
//! | stamp | epoch `u64`, node `u64`, shard `u16` |
//! | session | ownership epoch `u64`; next packet id: `u8` 0 (none) or 1, then the id; subscriptions: count `u32`, each a filter (length `u16`, UTF-8) and QoS `u8`; copies: count `u32`, each a message, QoS `u8`, retain `u8` (0 or 1) and state; incoming: count `u32`, each a packet id, then `u8` 0 (no message) or 1 and a message |
//! | message | as `Publish`'s body, flags `0x10` and `0x20` refused |
//! | state | `u8`: 0 queued without an id; 1 queued, 2 sent, 3 released, each then a packet id |
//! | packet id | `u16`, never 0 |
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
//! their process, [`ShardMessage::Joined`], [`ShardMessage::Left`],
//! [`ShardMessage::CountedGone`], [`ShardMessage::Owner`],
//! [`ShardMessage::Adopt`], [`ShardMessage::Lapsed`],
//! [`ShardMessage::NodesRead`], [`ShardMessage::InboxRead`] and
//! [`ShardMessage::Will`] are said by the
//! receiving node's own link and
//! [`ShardMessage::Own`] to the sending node's: none is carried
//! ([`WireError::NotCarried`]).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::{ConnectStamp, HandedSession, RetainVersion, ShardAddress, ShardId, ShardMessage};
use crate::error::Violation;
use crate::message::{Message, Publisher};
use crate::peer::ListenerId;
use crate::persistence::CopyState;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{ClientId, ConnId, PacketId, QoS};

/// The version this module writes and the only one it reads.
const VERSION: u8 = 6;

/// The smallest frame: a `Route` of a one-byte filter. Bounds what a
/// frame count may reserve.
const MIN_FRAME_LEN: usize = 2 + 2 + 1 + 2 + 1;

/// The smallest message: a one-byte topic, no payload, QoS and flags.
const MIN_MESSAGE_LEN: usize = 2 + 1 + 4 + 1 + 1;

/// The smallest subscription of a handed session: a one-byte filter and
/// its QoS.
const MIN_SUBSCRIPTION_LEN: usize = 2 + 1 + 1;

/// The smallest filter: one byte.
const MIN_FILTER_LEN: usize = 2 + 1;

/// A shard's address: node and shard.
const ADDRESS_LEN: usize = 8 + 2;

/// The smallest copy of a handed session: a message, QoS, retain, state.
const MIN_COPY_LEN: usize = MIN_MESSAGE_LEN + 1 + 1 + 1;

/// The smallest incoming message of a handed session: its packet id and
/// no message.
const MIN_INCOMING_LEN: usize = 2 + 1;

// Frame kinds.
const ROUTE: u8 = 1;
const UNROUTE: u8 = 2;
const PUBLISH: u8 = 3;
const HOLD: u8 = 4;
const RELEASE: u8 = 5;
const STORED: u8 = 6;
const ROUTED: u8 = 9;
const CLAIM: u8 = 7;
const CLAIMED: u8 = 8;
const RETAINED: u8 = 10;
const HOLDING: u8 = 11;
const FLUSH: u8 = 12;
const FLUSHED: u8 = 13;
const FORWARDED: u8 = 14;
const TAKEN_OVER: u8 = 15;

// What an option's presence byte says.
const ABSENT: u8 = 0;
const PRESENT: u8 = 1;

// Copy states.
const QUEUED: u8 = 0;
const QUEUED_WITH_ID: u8 = 1;
const SENT: u8 = 2;
const RELEASED: u8 = 3;

// `Publish` flags.
const RETAIN: u8 = 0x01;
const EXPIRES: u8 = 0x02;
const MESSAGE_PUBLISHER: u8 = 0x04;
const USERNAME: u8 = 0x08;
const CONNECTION: u8 = 0x10;
const VERSIONED: u8 = 0x20;
/// The flags of a message's own parts: all a handed session's messages
/// may have.
const MESSAGE_FLAGS: u8 = RETAIN | EXPIRES | MESSAGE_PUBLISHER | USERNAME;
/// The flags a `Publish` may have.
const PUBLISH_FLAGS: u8 = MESSAGE_FLAGS | CONNECTION | VERSIONED;

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
    /// A message's, copy's or subscription's QoS is not 0, 1 or 2.
    #[error("bad QoS {0}")]
    BadQos(u8),
    /// A message's flags have bits this version does not know (or, in a
    /// handed session, a publisher's connection or retain version), or a
    /// user name without a publisher.
    #[error("bad publish flags {0:#04x}")]
    BadFlags(u8),
    /// An option's presence byte or a copy's retain flag is neither 0 nor
    /// 1, or a copy's state is none of those this version writes.
    #[error("bad tag byte {0}")]
    BadTag(u8),
    /// A packet id is 0.
    #[error("a packet id is 0")]
    ZeroPacketId,
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
    let frames = reader.counted(MIN_FRAME_LEN, Reader::frame)?;
    match reader.rest.len() {
        0 => Ok(frames),
        trailing => Err(WireError::Trailing(trailing)),
    }
}

/// [`encode_batch`] without taking back what it wrote on an error.
fn write_batch(frames: &[NodeFrame], out: &mut BytesMut) -> Result<(), WireError> {
    out.put_u8(VERSION);
    put_count(out, frames.len())?;
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
        ShardMessage::Retained { message, version } => {
            out.put_u8(RETAINED);
            write_publish(message, None, Some(*version), out)
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
        ShardMessage::Routed(count) => {
            out.put_u8(ROUTED);
            out.put_u64(*count);
            Ok(())
        }
        ShardMessage::RoutesTold => {
            out.put_u8(ROUTED);
            out.put_u64(0);
            Ok(())
        }
        ShardMessage::TakenOver(node) => {
            out.put_u8(TAKEN_OVER);
            out.put_u64(*node);
            Ok(())
        }
        // Figures and the HTTP API stay inside their process; `Joined`,
        // `Left`, `CountedGone` and `Owner` are said by the receiver's own
        // link, `Own` to the sender's.
        ShardMessage::Stats(_)
        | ShardMessage::Api(_)
        | ShardMessage::Joined(_)
        | ShardMessage::Left
        | ShardMessage::CountedGone
        | ShardMessage::Own { .. }
        | ShardMessage::Owner { .. }
        | ShardMessage::Adopt { .. }
        | ShardMessage::Lapsed(_)
        | ShardMessage::NodesRead
        | ShardMessage::InboxRead { .. }
        | ShardMessage::Will(_) => Err(WireError::NotCarried),
        ShardMessage::Claim { client, stamp } => {
            out.put_u8(CLAIM);
            put_long(out, client.as_str().as_bytes())?;
            put_stamp(out, *stamp);
            Ok(())
        }
        ShardMessage::Holding { client, holder, filters } => {
            out.put_u8(HOLDING);
            put_long(out, client.as_str().as_bytes())?;
            put_address(out, *holder);
            put_count(out, filters.len())?;
            for filter in filters {
                put_short(out, filter.as_str().as_bytes())?;
            }
            Ok(())
        }
        ShardMessage::Flush { client, stamp, holders } => {
            out.put_u8(FLUSH);
            put_long(out, client.as_str().as_bytes())?;
            put_stamp(out, *stamp);
            put_count(out, holders.len())?;
            for &holder in holders {
                put_address(out, holder);
            }
            Ok(())
        }
        ShardMessage::Flushed { client, stamp } => {
            out.put_u8(FLUSHED);
            put_long(out, client.as_str().as_bytes())?;
            put_stamp(out, *stamp);
            Ok(())
        }
        ShardMessage::Forwarded { client, message } => {
            out.put_u8(FORWARDED);
            put_long(out, client.as_str().as_bytes())?;
            write_message(message, 0, out)
        }
        ShardMessage::Claimed { client, session, later } => {
            out.put_u8(CLAIMED);
            put_long(out, client.as_str().as_bytes())?;
            out.put_u8(u8::from(*later));
            match session {
                None => {
                    out.put_u8(ABSENT);
                    Ok(())
                }
                Some(session) => {
                    out.put_u8(PRESENT);
                    write_session(session, out)
                }
            }
        }
    }
}

/// A handed session: when it was taken, its next packet id,
/// subscriptions, copies and incoming messages, in that order.
fn write_session(session: &HandedSession, out: &mut BytesMut) -> Result<(), WireError> {
    out.put_u64(session.epoch);
    match session.next_packet_id {
        None => out.put_u8(ABSENT),
        Some(id) => {
            out.put_u8(PRESENT);
            out.put_u16(id.get());
        }
    }
    put_count(out, session.subscriptions.len())?;
    for (filter, qos) in &session.subscriptions {
        put_short(out, filter.as_str().as_bytes())?;
        out.put_u8(qos.bits());
    }
    put_count(out, session.copies.len())?;
    for (message, qos, retain, state) in &session.copies {
        write_message(message, 0, out)?;
        out.put_u8(qos.bits());
        out.put_u8(u8::from(*retain));
        match *state {
            CopyState::Queued(None) => out.put_u8(QUEUED),
            CopyState::Queued(Some(id)) => {
                out.put_u8(QUEUED_WITH_ID);
                out.put_u16(id.get());
            }
            CopyState::Sent(id) => {
                out.put_u8(SENT);
                out.put_u16(id.get());
            }
            CopyState::Released(id) => {
                out.put_u8(RELEASED);
                out.put_u16(id.get());
            }
        }
    }
    put_count(out, session.incoming.len())?;
    for (id, message) in &session.incoming {
        out.put_u16(id.get());
        match message {
            None => out.put_u8(ABSENT),
            Some(message) => {
                out.put_u8(PRESENT);
                write_message(message, 0, out)?;
            }
        }
    }
    Ok(())
}

/// `Publish`'s body: the message, then the parts of its publishing that
/// the flags announce.
fn write_publish(
    message: &Message,
    conn: Option<ConnId>,
    version: Option<RetainVersion>,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    let mut flags = 0;
    if conn.is_some() {
        flags |= CONNECTION;
    }
    if version.is_some() {
        flags |= VERSIONED;
    }
    write_message(message, flags, out)?;
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

/// A message: its topic, payload, QoS, its flags with `more` (flags of
/// parts the caller writes after it) and the parts of its own that they
/// announce.
fn write_message(message: &Message, more: u8, out: &mut BytesMut) -> Result<(), WireError> {
    put_short(out, message.topic.as_str().as_bytes())?;
    put_long(out, &message.payload)?;
    out.put_u8(message.qos.bits());
    let mut flags = more;
    for (present, flag) in [
        (message.retain, RETAIN),
        (message.expires_at.is_some(), EXPIRES),
        (message.publisher.is_some(), MESSAGE_PUBLISHER),
        (message.publisher.as_ref().is_some_and(|p| p.username.is_some()), USERNAME),
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
    Ok(())
}

/// Writes a shard's address.
fn put_address(out: &mut BytesMut, address: ShardAddress) {
    out.put_u64(address.node);
    out.put_u16(address.shard.0);
}

/// Writes a claim's stamp.
fn put_stamp(out: &mut BytesMut, stamp: ConnectStamp) {
    out.put_u64(stamp.epoch);
    out.put_u64(stamp.node);
    out.put_u16(stamp.shard.0);
}

/// Writes a count as a `u32`.
fn put_count(out: &mut BytesMut, count: usize) -> Result<(), WireError> {
    out.put_u32(u32::try_from(count).map_err(|_| WireError::TooLong)?);
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

    /// A `u32` count, then as many items, each at least `min_len` bytes
    /// long: the count is the peer's word, so what is reserved is no more
    /// than the bytes left could hold.
    fn counted<T>(
        &mut self,
        min_len: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let count = self.u32()?;
        let bound = self.rest.len() / min_len;
        let mut items = Vec::with_capacity(usize::try_from(count).map_or(bound, |count| count.min(bound)));
        for _ in 0..count {
            items.push(item(self)?);
        }
        Ok(items)
    }

    /// Whether an option is present: a byte 0 or 1.
    fn present(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            ABSENT => Ok(false),
            PRESENT => Ok(true),
            tag => Err(WireError::BadTag(tag)),
        }
    }

    fn packet_id(&mut self) -> Result<PacketId, WireError> {
        PacketId::new(self.u16()?).ok_or(WireError::ZeroPacketId)
    }

    fn qos(&mut self) -> Result<QoS, WireError> {
        let qos = self.u8()?;
        QoS::from_bits(qos).ok_or(WireError::BadQos(qos))
    }

    fn client_id(&mut self) -> Result<ClientId, WireError> {
        self.text().map(ClientId::new)
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
            RETAINED => self.retained()?,
            HOLD => ShardMessage::Hold(ConnId(self.u64()?)),
            RELEASE => ShardMessage::Release(ConnId(self.u64()?)),
            STORED => ShardMessage::Stored(self.u64()?),
            ROUTED => match self.u64()? {
                0 => ShardMessage::RoutesTold,
                count => ShardMessage::Routed(count),
            },
            TAKEN_OVER => ShardMessage::TakenOver(self.u64()?),
            CLAIM => ShardMessage::Claim { client: self.client_id()?, stamp: self.stamp()? },
            CLAIMED => ShardMessage::Claimed {
                client: self.client_id()?,
                later: self.present()?,
                session: if self.present()? { Some(Box::new(self.session()?)) } else { None },
            },
            HOLDING => ShardMessage::Holding {
                client: self.client_id()?,
                holder: self.address()?,
                filters: self.counted(MIN_FILTER_LEN, Self::filter)?,
            },
            FLUSH => ShardMessage::Flush {
                client: self.client_id()?,
                stamp: self.stamp()?,
                holders: self.counted(ADDRESS_LEN, Self::address)?,
            },
            FLUSHED => ShardMessage::Flushed { client: self.client_id()?, stamp: self.stamp()? },
            FORWARDED => {
                ShardMessage::Forwarded { client: self.client_id()?, message: Arc::new(self.message(MESSAGE_FLAGS)?.0) }
            }
            kind => return Err(WireError::UnknownKind(kind)),
        };
        Ok(NodeFrame { from, to, message })
    }

    fn session(&mut self) -> Result<HandedSession, WireError> {
        let epoch = self.u64()?;
        let next_packet_id = if self.present()? { Some(self.packet_id()?) } else { None };
        let subscriptions = self.counted(MIN_SUBSCRIPTION_LEN, |reader| Ok((reader.filter()?, reader.qos()?)))?;
        let copies = self.counted(MIN_COPY_LEN, |reader| {
            let message = Arc::new(reader.message(MESSAGE_FLAGS)?.0);
            let qos = reader.qos()?;
            let retain = reader.present()?;
            let state = match reader.u8()? {
                QUEUED => CopyState::Queued(None),
                QUEUED_WITH_ID => CopyState::Queued(Some(reader.packet_id()?)),
                SENT => CopyState::Sent(reader.packet_id()?),
                RELEASED => CopyState::Released(reader.packet_id()?),
                tag => return Err(WireError::BadTag(tag)),
            };
            Ok((message, qos, retain, state))
        })?;
        let incoming = self.counted(MIN_INCOMING_LEN, |reader| {
            let id = reader.packet_id()?;
            let message = if reader.present()? { Some(Arc::new(reader.message(MESSAGE_FLAGS)?.0)) } else { None };
            Ok((id, message))
        })?;
        Ok(HandedSession { epoch, next_packet_id, subscriptions, copies, incoming })
    }

    fn publish(&mut self) -> Result<ShardMessage, WireError> {
        let (message, flags) = self.message(PUBLISH_FLAGS)?;
        let conn = if flags & CONNECTION != 0 { Some(ConnId(self.u64()?)) } else { None };
        let version = if flags & VERSIONED != 0 { Some(self.version()?) } else { None };
        Ok(ShardMessage::Publish { message: Arc::new(message), publisher: conn, version, stored: None })
    }

    fn retained(&mut self) -> Result<ShardMessage, WireError> {
        let (message, flags) = self.message(MESSAGE_FLAGS | VERSIONED)?;
        if flags & VERSIONED == 0 {
            return Err(WireError::BadFlags(flags));
        }
        let version = self.version()?;
        Ok(ShardMessage::Retained { message: Arc::new(message), version })
    }

    fn stamp(&mut self) -> Result<ConnectStamp, WireError> {
        Ok(ConnectStamp { epoch: self.u64()?, node: self.u64()?, shard: ShardId(self.u16()?) })
    }

    fn address(&mut self) -> Result<ShardAddress, WireError> {
        Ok(ShardAddress { node: self.u64()?, shard: ShardId(self.u16()?) })
    }

    fn version(&mut self) -> Result<RetainVersion, WireError> {
        Ok(RetainVersion { tick: self.u64()?, node: self.u64()?, shard: ShardId(self.u16()?) })
    }

    /// A message, and its flags: those of parts after it are for the
    /// caller to read. Flags not in `known` are refused.
    fn message(&mut self, known: u8) -> Result<(Message, u8), WireError> {
        let topic = self.topic()?;
        // A copy: the message may outlive the batch's buffer by far.
        let payload = Bytes::copy_from_slice(self.long()?);
        let qos = self.qos()?;
        let flags = self.u8()?;
        if flags & !known != 0 || (flags & USERNAME != 0 && flags & MESSAGE_PUBLISHER == 0) {
            return Err(WireError::BadFlags(flags));
        }
        let expires_at = if flags & EXPIRES != 0 { Some(f64::from_bits(self.u64()?)) } else { None };
        let publisher = if flags & MESSAGE_PUBLISHER != 0 {
            let client_id = self.client_id()?;
            let username = if flags & USERNAME != 0 { Some(Arc::from(self.text()?)) } else { None };
            let listener = ListenerId(self.u16()?);
            Some(Arc::new(Publisher { client_id, username, listener }))
        } else {
            None
        };
        Ok((Message { topic, payload, qos, retain: flags & RETAIN != 0, expires_at, publisher }, flags))
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
            qos: arbitrary_qos(g),
            retain: bool::arbitrary(g),
            expires_at: bool::arbitrary(g).then(|| arbitrary_expiry(g)),
            publisher,
        }
    }

    fn arbitrary_qos(g: &mut Gen) -> QoS {
        *g.choose(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]).unwrap()
    }

    fn arbitrary_stamp(g: &mut Gen) -> ConnectStamp {
        ConnectStamp { epoch: u64::arbitrary(g), node: u64::arbitrary(g), shard: ShardId(u16::arbitrary(g)) }
    }

    fn arbitrary_address(g: &mut Gen) -> ShardAddress {
        ShardAddress { node: u64::arbitrary(g), shard: ShardId(u16::arbitrary(g)) }
    }

    fn arbitrary_version(g: &mut Gen) -> RetainVersion {
        RetainVersion { tick: u64::arbitrary(g), node: u64::arbitrary(g), shard: ShardId(u16::arbitrary(g)) }
    }

    fn arbitrary_id(g: &mut Gen) -> PacketId {
        PacketId::new(u16::arbitrary(g)).unwrap_or(PacketId::MIN)
    }

    /// A session of a few subscriptions, copies (in every state) and
    /// incoming messages (with and without their message).
    fn arbitrary_session(g: &mut Gen) -> HandedSession {
        let few = |g: &mut Gen| usize::arbitrary(g) % 4;
        let subscriptions = (0..few(g)).map(|_| (ArbFilter::arbitrary(g).filter(), arbitrary_qos(g))).collect();
        let copies = (0..few(g))
            .map(|_| {
                let state = match u8::arbitrary(g) % 4 {
                    0 => CopyState::Queued(None),
                    1 => CopyState::Queued(Some(arbitrary_id(g))),
                    2 => CopyState::Sent(arbitrary_id(g)),
                    _ => CopyState::Released(arbitrary_id(g)),
                };
                (Arc::new(arbitrary_message(g)), arbitrary_qos(g), bool::arbitrary(g), state)
            })
            .collect();
        let incoming = (0..few(g))
            .map(|_| (arbitrary_id(g), bool::arbitrary(g).then(|| Arc::new(arbitrary_message(g)))))
            .collect();
        HandedSession {
            epoch: u64::arbitrary(g),
            next_packet_id: bool::arbitrary(g).then(|| arbitrary_id(g)),
            subscriptions,
            copies,
            incoming,
        }
    }

    impl Arbitrary for ArbFrame {
        fn arbitrary(g: &mut Gen) -> Self {
            let message = match u8::arbitrary(g) % 16 {
                0 => ShardMessage::Route(ArbFilter::arbitrary(g).filter()),
                1 => ShardMessage::Unroute(ArbFilter::arbitrary(g).filter()),
                2 => ShardMessage::Publish {
                    message: Arc::new(arbitrary_message(g)),
                    publisher: Option::<u64>::arbitrary(g).map(ConnId),
                    version: bool::arbitrary(g).then(|| arbitrary_version(g)),
                    stored: None,
                },
                3 => ShardMessage::Hold(ConnId(u64::arbitrary(g))),
                4 => ShardMessage::Release(ConnId(u64::arbitrary(g))),
                5 => ShardMessage::Stored(u64::arbitrary(g)),
                // Counts start at 1: `Routed(0)` is how `RoutesTold` goes.
                8 => ShardMessage::Routed(u64::arbitrary(g).max(1)),
                15 => ShardMessage::RoutesTold,
                9 => ShardMessage::Retained { message: Arc::new(arbitrary_message(g)), version: arbitrary_version(g) },
                10 => ShardMessage::Holding {
                    client: ClientId::new(String::arbitrary(g)),
                    holder: arbitrary_address(g),
                    filters: Vec::<ArbFilter>::arbitrary(g).into_iter().map(|f| f.filter()).collect(),
                },
                11 => ShardMessage::Flush {
                    client: ClientId::new(String::arbitrary(g)),
                    stamp: arbitrary_stamp(g),
                    holders: (0..usize::arbitrary(g) % 4).map(|_| arbitrary_address(g)).collect(),
                },
                12 => ShardMessage::Flushed { client: ClientId::new(String::arbitrary(g)), stamp: arbitrary_stamp(g) },
                13 => ShardMessage::Forwarded {
                    client: ClientId::new(String::arbitrary(g)),
                    message: Arc::new(arbitrary_message(g)),
                },
                14 => ShardMessage::TakenOver(u64::arbitrary(g)),
                6 => ShardMessage::Claim { client: ClientId::new(String::arbitrary(g)), stamp: arbitrary_stamp(g) },
                _ => ShardMessage::Claimed {
                    client: ClientId::new(String::arbitrary(g)),
                    session: bool::arbitrary(g).then(|| Box::new(arbitrary_session(g))),
                    later: bool::arbitrary(g),
                },
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
        let mut take = |message: &mut Arc<Message>| {
            bits.push(message.expires_at.map(f64::to_bits));
            Arc::make_mut(message).expires_at = None;
        };
        let rest = frames
            .iter()
            .cloned()
            .map(|mut frame| {
                match &mut frame.message {
                    ShardMessage::Publish { message, .. }
                    | ShardMessage::Retained { message, .. }
                    | ShardMessage::Forwarded { message, .. } => take(message),
                    ShardMessage::Claimed { session: Some(session), .. } => {
                        session.copies.iter_mut().for_each(|(message, ..)| take(message));
                        session.incoming.iter_mut().filter_map(|(_, message)| message.as_mut()).for_each(&mut take);
                    }
                    _ => {}
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
        let id = |n| PacketId::new(n).unwrap();
        let session = HandedSession {
            epoch: 42,
            next_packet_id: Some(id(65535)),
            subscriptions: vec![(filter("a/+"), QoS::AtLeastOnce), (filter("#"), QoS::ExactlyOnce)],
            copies: vec![
                (Arc::new(full.clone()), QoS::ExactlyOnce, true, CopyState::Released(id(1))),
                (Arc::new(full.clone()), QoS::AtLeastOnce, false, CopyState::Sent(id(2))),
                (
                    Arc::new(Message::without_expiry(name("q"), Bytes::from_static(b"q"), QoS::AtLeastOnce, false)),
                    QoS::AtLeastOnce,
                    false,
                    CopyState::Queued(Some(id(3))),
                ),
                (
                    Arc::new(Message { expires_at: Some(-0.0), ..full.clone() }),
                    QoS::AtMostOnce,
                    true,
                    CopyState::Queued(None),
                ),
            ],
            incoming: vec![(id(9), None), (id(10), Some(Arc::new(full.clone())))],
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
                frame(
                    1,
                    2,
                    ShardMessage::Retained {
                        message: Arc::new(Message::without_expiry(
                            name("r"),
                            Bytes::from_static(b"r"),
                            QoS::AtLeastOnce,
                            true,
                        )),
                        version: RetainVersion { tick: 0, node: 3, shard: ShardId(0) },
                    },
                ),
                frame(1, 2, publish(Message::without_expiry(name("t"), Bytes::new(), QoS::AtMostOnce, false))),
            ],
            vec![
                frame(
                    0,
                    3,
                    ShardMessage::Claim {
                        client: ClientId::new("client"),
                        stamp: ConnectStamp { epoch: 17, node: u64::MAX, shard: ShardId(2) },
                    },
                ),
                frame(3, 0, ShardMessage::Claimed { client: ClientId::new("client"), session: None, later: true }),
                frame(
                    3,
                    0,
                    ShardMessage::Holding {
                        client: ClientId::new("client"),
                        holder: ShardAddress { node: u64::MAX, shard: ShardId(3) },
                        filters: vec![filter("a/+"), filter("#")],
                    },
                ),
                frame(
                    0,
                    2,
                    ShardMessage::Flush {
                        client: ClientId::new("client"),
                        stamp: ConnectStamp { epoch: 3, node: 9, shard: ShardId(1) },
                        holders: vec![ShardAddress { node: 7, shard: ShardId(0) }, ShardAddress::default()],
                    },
                ),
                frame(2, 3, ShardMessage::Flushed { client: ClientId::new("client"), stamp: ConnectStamp::default() }),
                frame(
                    3,
                    1,
                    ShardMessage::Forwarded {
                        client: ClientId::new("client"),
                        message: Arc::new(Message::without_expiry(
                            name("f"),
                            Bytes::from_static(b"f"),
                            QoS::ExactlyOnce,
                            false,
                        )),
                    },
                ),
                frame(
                    4,
                    0,
                    ShardMessage::Claimed { client: ClientId::new(""), session: Some(Box::default()), later: false },
                ),
                frame(
                    5,
                    0,
                    ShardMessage::Claimed {
                        client: ClientId::new("client"),
                        session: Some(Box::new(session)),
                        later: false,
                    },
                ),
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
            ShardMessage::Joined(ShardAddress::default()),
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
        // This version, one frame from shard 0 to shard 1, then the frame's kind and body.
        let batch = |body: &[u8]| [&[VERSION, 0, 0, 0, 1, 0, 0, 0, 1][..], body].concat();
        assert_eq!(decode_batch(&[1, 0, 0, 0, 0]), Err(WireError::UnknownVersion(1)));
        assert_eq!(decode_batch(&[VERSION, 0, 0, 0, 0, 9]), Err(WireError::Trailing(1)));
        assert_eq!(decode_batch(&batch(&[200])), Err(WireError::UnknownKind(200)));
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
        // A retained message handed at a join has a version and no connection.
        let retained =
            |flags: u8, tail: &[u8]| batch(&[&[RETAINED, 0, 1, b't', 0, 0, 0, 0, 0, flags][..], tail].concat());
        let version = [0; 18];
        assert!(decode_batch(&retained(VERSIONED, &version)).is_ok());
        assert_eq!(decode_batch(&retained(0, &[])), Err(WireError::BadFlags(0)));
        let with_conn = [&[0; 8][..], &version].concat();
        assert_eq!(decode_batch(&retained(VERSIONED | CONNECTION, &with_conn)), Err(WireError::BadFlags(0x30)));

        // A claimed session of client "c", no later claim known, taken at
        // 0: its body from the next packet id on.
        let claimed = |tail: &[u8]| {
            batch(&[&[CLAIMED, 0, 0, 0, 1, b'c', ABSENT, PRESENT, 0, 0, 0, 0, 0, 0, 0, 0][..], tail].concat())
        };
        assert_eq!(decode_batch(&batch(&[CLAIMED, 0, 0, 0, 1, b'c', 2])), Err(WireError::BadTag(2)));
        assert_eq!(decode_batch(&batch(&[CLAIMED, 0, 0, 0, 1, b'c', PRESENT, 2])), Err(WireError::BadTag(2)));
        assert!(decode_batch(&batch(&[CLAIMED, 0, 0, 0, 1, b'c', PRESENT, ABSENT])).is_ok());
        assert_eq!(decode_batch(&claimed(&[2])), Err(WireError::BadTag(2)));
        assert_eq!(decode_batch(&claimed(&[PRESENT, 0, 0])), Err(WireError::ZeroPacketId));
        let empty = [ABSENT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode_batch(&claimed(&empty)).is_ok());
        let subscription = |tail: &[u8]| claimed(&[&[ABSENT, 0, 0, 0, 1][..], tail].concat());
        assert_eq!(decode_batch(&subscription(&[0, 1, b'#', 3])), Err(WireError::BadQos(3)));
        assert_eq!(decode_batch(&subscription(&[0, 1, 0xff, 0])), Err(WireError::BadFilter(Violation::InvalidUtf8)));
        // One copy of a message on "t", with `flags`, then `tail`.
        let copy = |flags: u8, tail: &[u8]| {
            claimed(&[&[ABSENT, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0, 0, flags][..], tail].concat())
        };
        let tail = [1, 0, QUEUED, 0, 0, 0, 0];
        assert!(decode_batch(&copy(0, &tail)).is_ok());
        // A publisher's connection or retain version is no part of a session's message.
        assert_eq!(decode_batch(&copy(CONNECTION, &tail)), Err(WireError::BadFlags(CONNECTION)));
        assert_eq!(decode_batch(&copy(VERSIONED, &tail)), Err(WireError::BadFlags(VERSIONED)));
        assert_eq!(decode_batch(&copy(0, &[3, 0, QUEUED, 0, 0, 0, 0])), Err(WireError::BadQos(3)));
        assert_eq!(decode_batch(&copy(0, &[1, 2, QUEUED, 0, 0, 0, 0])), Err(WireError::BadTag(2)));
        assert_eq!(decode_batch(&copy(0, &[1, 0, 4, 0, 0, 0, 0])), Err(WireError::BadTag(4)));
        for state in [QUEUED_WITH_ID, SENT, RELEASED] {
            assert_eq!(decode_batch(&copy(0, &[1, 0, state, 0, 0, 0, 0, 0, 0])), Err(WireError::ZeroPacketId));
            assert!(decode_batch(&copy(0, &[1, 0, state, 0, 1, 0, 0, 0, 0])).is_ok());
        }
        let incoming = |tail: &[u8]| claimed(&[&[ABSENT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1][..], tail].concat());
        assert!(decode_batch(&incoming(&[0, 1, ABSENT])).is_ok());
        assert_eq!(decode_batch(&incoming(&[0, 0, ABSENT])), Err(WireError::ZeroPacketId));
        assert_eq!(decode_batch(&incoming(&[0, 1, 2])), Err(WireError::BadTag(2)));
        assert_eq!(
            decode_batch(&incoming(&[0, 1, PRESENT, 0, 1, b't', 0, 0, 0, 0, 0, 0x40])),
            Err(WireError::BadFlags(0x40))
        );
        let claim = [CLAIM, 0, 0, 0, 1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode_batch(&batch(&claim)), Err(WireError::NotUtf8));
    }

    #[test]
    fn huge_lengths_and_counts_are_truncations_not_allocations() {
        assert_eq!(decode_batch(&[VERSION, 0xff, 0xff, 0xff, 0xff]), Err(WireError::Truncated));
        let payload = [VERSION, 0, 0, 0, 1, 0, 0, 0, 1, PUBLISH, 0, 1, b't', 0xff, 0xff, 0xff, 0xff, 0, 0];
        assert_eq!(decode_batch(&payload), Err(WireError::Truncated));
        let client_id = [&payload[..13], &[0, 0, 0, 0, 0, MESSAGE_PUBLISHER, 0xff, 0xff, 0xff, 0xff][..]].concat();
        assert_eq!(decode_batch(&client_id), Err(WireError::Truncated));
        let claim = [VERSION, 0, 0, 0, 1, 0, 0, 0, 1, CLAIM, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(decode_batch(&claim), Err(WireError::Truncated));
        // A session of client "c" (taken at 0) saying 2^32 - 1
        // subscriptions, copies or incoming messages.
        let session = [
            VERSION, 0, 0, 0, 1, 0, 0, 0, 1, CLAIMED, 0, 0, 0, 1, b'c', ABSENT, PRESENT, 0, 0, 0, 0, 0, 0, 0, 0, ABSENT,
        ];
        let huge = [0xff, 0xff, 0xff, 0xff];
        for before in 0..3 {
            let counts = [&[0, 0, 0, 0][..]].repeat(before).concat();
            let bytes = [&session[..], &counts, &huge].concat();
            assert_eq!(decode_batch(&bytes), Err(WireError::Truncated), "after {before} empty lists");
        }
    }
}
