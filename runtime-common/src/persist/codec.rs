//! The values of the store's tables, in a compact hand-written binary
//! form.
//!
//! Every value starts with a version byte ([`VERSION`]) so that a later
//! Culex can read what this one wrote, and this one refuses (as damage)
//! what it cannot read rather than misreading it. Integers are big-endian.
//! Keys are redb's own types (`u64`, `&str`, tuples of them), which sort as
//! the data does, so nothing is encoded there.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use culex_core::codec::LastWill;
use culex_core::persistence::{CopyState, InboxMark, MessageId, SessionFields, StoredCopy};
use culex_core::{ClientId, ListenerId, Message, PacketId, Publisher, QoS, TopicName};

use super::StoreError;

/// The version of every value this code writes.
pub(crate) const VERSION: u8 = 1;

/// The publishers of the messages read from a store, kept once each: a
/// store of a million retained messages from a few clients holds a few
/// publishers, not a million copies of them.
#[derive(Debug, Default)]
pub(crate) struct Publishers(HashSet<Arc<Publisher>>);

impl Publishers {
    /// `message` with its publisher shared with the messages read before.
    pub(crate) fn share(&mut self, mut message: Message) -> Message {
        if let Some(publisher) = message.publisher.take() {
            let shared = match self.0.get(&publisher) {
                Some(known) => known.clone(),
                None => {
                    self.0.insert(publisher.clone());
                    publisher
                }
            };
            message.publisher = Some(shared);
        }
        message
    }
}

/// Flag bits shared by messages, wills and copies: QoS in the low two
/// bits, then RETAIN.
const QOS_MASK: u8 = 0b11;
const RETAIN: u8 = 1 << 2;
/// A message's `expires_at` follows the flags.
const HAS_EXPIRY: u8 = 1 << 3;
/// A retained message's publisher follows (new in the same version: a
/// value without it reads as before).
const HAS_PUBLISHER: u8 = 1 << 4;
/// A copy's state, two bits from bit 3: queued, sent, released.
const STATE_SHIFT: u8 = 3;
/// A session's optional fields.
const HAS_USERNAME: u8 = 1;
const HAS_OFFLINE: u8 = 1 << 1;
const HAS_NEXT_ID: u8 = 1 << 2;
/// A cluster session's ownership epoch (new in the same version: a value
/// without it reads as epoch 0, not known).
const HAS_EPOCH: u8 = 1 << 3;

/// Reads one value, naming its table in every error.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    table: &'static str,
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading a value of `table`, checking its version byte.
    pub(crate) fn new(table: &'static str, bytes: &'a [u8]) -> Result<Self, StoreError> {
        let mut reader = Self { table, bytes };
        let version = reader.u8()?;
        if version != VERSION {
            return Err(reader.error(format!("unknown value version {version} (this Culex writes {VERSION})")));
        }
        Ok(reader)
    }

    /// An error about this value.
    pub(crate) fn error(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Decode { table: self.table, detail: detail.into() }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(self.error(format!("value cut short: {} bytes left, {n} needed", self.bytes.len())));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, StoreError> {
        let mut buf = [0; 2];
        buf.copy_from_slice(self.take(2)?);
        Ok(u16::from_be_bytes(buf))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, StoreError> {
        let mut buf = [0; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(buf))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    /// Text of `len` bytes.
    pub(crate) fn str(&mut self, len: usize) -> Result<&'a str, StoreError> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| self.error("text that is not UTF-8"))
    }

    fn qos(&self, bits: u8) -> Result<QoS, StoreError> {
        QoS::from_bits(bits & QOS_MASK).ok_or_else(|| self.error("QoS 3"))
    }

    pub(crate) fn packet_id(&mut self) -> Result<PacketId, StoreError> {
        let id = self.u16()?;
        PacketId::new(id).ok_or_else(|| self.error("packet id 0"))
    }

    pub(crate) fn topic(&mut self) -> Result<TopicName, StoreError> {
        let len = self.u16()?;
        let topic = self.str(usize::from(len))?;
        TopicName::new(topic).map_err(|e| self.error(format!("invalid topic {topic:?}: {e}")))
    }

    /// Text with its two-byte length.
    pub(crate) fn text(&mut self) -> Result<&'a str, StoreError> {
        let len = self.u16()?;
        self.str(usize::from(len))
    }

    fn publisher(&mut self) -> Result<Publisher, StoreError> {
        let listener = ListenerId(self.u16()?);
        let client_id = ClientId::new(self.text()?);
        let username = match self.u8()? {
            0 => None,
            _ => Some(Arc::from(self.text()?)),
        };
        Ok(Publisher { client_id, username, listener })
    }

    /// Fails if anything is left.
    pub(crate) fn end(self) -> Result<(), StoreError> {
        if self.bytes.is_empty() { Ok(()) } else { Err(self.error(format!("{} trailing bytes", self.bytes.len()))) }
    }
}

fn flags(qos: QoS, retain: bool) -> u8 {
    qos.bits() | if retain { RETAIN } else { 0 }
}

/// Appends text of at most 65,535 bytes (client ids and user names are
/// MQTT strings) with its two-byte length.
pub(crate) fn put_text(out: &mut Vec<u8>, text: &str) {
    let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..usize::from(len)]);
}

/// Appends a topic with its two-byte length. A topic name is at most
/// 65,535 bytes, which the type guarantees.
pub(crate) fn put_topic(out: &mut Vec<u8>, topic: &TopicName) {
    put_text(out, topic.as_str());
}

/// `[1][flags][expires_at: f64 bits, if flagged][publisher, if flagged:
/// listener: u16, client id: u16 length and text, user name: 0, or 1 and
/// u16 length and text][topic len: u16][topic][payload]`.
pub(crate) fn encode_message(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 8 + message.topic.as_str().len() + message.payload.len());
    let expiry = if message.expires_at.is_some() { HAS_EXPIRY } else { 0 };
    let publisher = if message.publisher.is_some() { HAS_PUBLISHER } else { 0 };
    out.extend_from_slice(&[VERSION, flags(message.qos, message.retain) | expiry | publisher]);
    if let Some(at) = message.expires_at {
        out.extend_from_slice(&at.to_bits().to_be_bytes());
    }
    if let Some(publisher) = &message.publisher {
        out.extend_from_slice(&publisher.listener.0.to_be_bytes());
        put_text(&mut out, publisher.client_id.as_str());
        match &publisher.username {
            Some(name) => {
                out.push(1);
                put_text(&mut out, name);
            }
            None => out.push(0),
        }
    }
    put_topic(&mut out, &message.topic);
    out.extend_from_slice(&message.payload);
    out
}

pub(crate) fn decode_message(bytes: &[u8]) -> Result<Message, StoreError> {
    let mut r = Reader::new("messages", bytes)?;
    let flags = r.u8()?;
    let qos = r.qos(flags)?;
    let expires_at = if flags & HAS_EXPIRY != 0 { Some(f64::from_bits(r.u64()?)) } else { None };
    let publisher = if flags & HAS_PUBLISHER != 0 { Some(Arc::new(r.publisher()?)) } else { None };
    let topic = r.topic()?;
    let payload = Bytes::copy_from_slice(r.rest());
    Ok(Message { topic, payload, qos, retain: flags & RETAIN != 0, expires_at, publisher })
}

/// `[1][flags][topic len: u16][topic][payload]`.
pub(crate) fn encode_will(will: &LastWill) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + will.topic.as_str().len() + will.payload.len());
    out.extend_from_slice(&[VERSION, flags(will.qos, will.retain)]);
    put_topic(&mut out, &will.topic);
    out.extend_from_slice(&will.payload);
    out
}

pub(crate) fn decode_will(bytes: &[u8]) -> Result<LastWill, StoreError> {
    let mut r = Reader::new("wills", bytes)?;
    let flags = r.u8()?;
    let qos = r.qos(flags)?;
    let topic = r.topic()?;
    let payload = Bytes::copy_from_slice(r.rest());
    Ok(LastWill { topic, payload, qos, retain: flags & RETAIN != 0 })
}

/// `[1][flags][offline_since: u64?][next_packet_id: u16?][epoch: u64?][username?: rest]`.
pub(crate) fn encode_session(s: &SessionFields) -> Vec<u8> {
    let mut flags = 0;
    if s.username.is_some() {
        flags |= HAS_USERNAME;
    }
    if s.offline_since.is_some() {
        flags |= HAS_OFFLINE;
    }
    if s.next_packet_id.is_some() {
        flags |= HAS_NEXT_ID;
    }
    if s.epoch != 0 {
        flags |= HAS_EPOCH;
    }
    let mut out = vec![VERSION, flags];
    if let Some(at) = s.offline_since {
        out.extend_from_slice(&at.to_be_bytes());
    }
    if let Some(id) = s.next_packet_id {
        out.extend_from_slice(&id.get().to_be_bytes());
    }
    if s.epoch != 0 {
        out.extend_from_slice(&s.epoch.to_be_bytes());
    }
    if let Some(name) = &s.username {
        out.extend_from_slice(name.as_bytes());
    }
    out
}

pub(crate) fn decode_session(bytes: &[u8]) -> Result<SessionFields, StoreError> {
    let mut r = Reader::new("sessions", bytes)?;
    let flags = r.u8()?;
    let offline_since = if flags & HAS_OFFLINE != 0 { Some(r.u64()?) } else { None };
    let next_packet_id = if flags & HAS_NEXT_ID != 0 { Some(r.packet_id()?) } else { None };
    let epoch = if flags & HAS_EPOCH != 0 { r.u64()? } else { 0 };
    let username = if flags & HAS_USERNAME != 0 {
        let rest = r.rest();
        let name = std::str::from_utf8(rest).map_err(|_| r.error("a user name that is not UTF-8"))?;
        Some(Arc::from(name))
    } else {
        None
    };
    r.end()?;
    Ok(SessionFields { username, offline_since, next_packet_id, epoch })
}

/// `[1][qos | retain | state][message: u64][packet id: u16, unless queued
/// without one]`. States: 0 queued, 1 sent, 2 released, 3 queued with its
/// packet id (new in the same version: 0 stays as it was written).
pub(crate) fn encode_copy(copy: &StoredCopy) -> Vec<u8> {
    let (state, id) = match copy.state {
        CopyState::Queued(None) => (0, None),
        CopyState::Queued(Some(id)) => (3, Some(id)),
        CopyState::Sent(id) => (1, Some(id)),
        CopyState::Released(id) => (2, Some(id)),
    };
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&[VERSION, flags(copy.qos, copy.retain) | state << STATE_SHIFT]);
    out.extend_from_slice(&copy.message.0.to_be_bytes());
    if let Some(id) = id {
        out.extend_from_slice(&id.get().to_be_bytes());
    }
    out
}

pub(crate) fn decode_copy(bytes: &[u8]) -> Result<StoredCopy, StoreError> {
    let mut r = Reader::new("copies", bytes)?;
    let flags = r.u8()?;
    let qos = r.qos(flags)?;
    let message = MessageId(r.u64()?);
    let state = match flags >> STATE_SHIFT {
        0 => CopyState::Queued(None),
        1 => CopyState::Sent(r.packet_id()?),
        2 => CopyState::Released(r.packet_id()?),
        3 => CopyState::Queued(Some(r.packet_id()?)),
        other => return Err(r.error(format!("unknown copy state {other}"))),
    };
    r.end()?;
    Ok(StoredCopy { message, qos, retain: flags & RETAIN != 0, state })
}

/// `[1][message: u64]`: retained entries and unreleased messages.
pub(crate) fn encode_id(id: MessageId) -> [u8; 9] {
    let mut out = [VERSION; 9];
    out[1..].copy_from_slice(&id.0.to_be_bytes());
    out
}

pub(crate) fn decode_id(table: &'static str, bytes: &[u8]) -> Result<MessageId, StoreError> {
    let mut r = Reader::new(table, bytes)?;
    let id = MessageId(r.u64()?);
    r.end()?;
    Ok(id)
}

/// `[1][run: u64][seq: u64]`.
pub(crate) fn encode_mark(mark: InboxMark) -> [u8; 17] {
    let mut out = [VERSION; 17];
    out[1..9].copy_from_slice(&mark.run.to_be_bytes());
    out[9..].copy_from_slice(&mark.seq.to_be_bytes());
    out
}

pub(crate) fn decode_mark(table: &'static str, bytes: &[u8]) -> Result<InboxMark, StoreError> {
    let mut r = Reader::new(table, bytes)?;
    let mark = InboxMark { run: r.u64()?, seq: r.u64()? };
    r.end()?;
    Ok(mark)
}

/// `[1]` for a dropped message, `[1][message: u64]` otherwise.
pub(crate) fn encode_incoming(message: Option<MessageId>) -> Vec<u8> {
    match message {
        Some(id) => encode_id(id).to_vec(),
        None => vec![VERSION],
    }
}

pub(crate) fn decode_incoming(bytes: &[u8]) -> Result<Option<MessageId>, StoreError> {
    let mut r = Reader::new("incoming", bytes)?;
    if r.bytes.is_empty() {
        return Ok(None);
    }
    let id = MessageId(r.u64()?);
    r.end()?;
    Ok(Some(id))
}

/// `[1][qos]`.
pub(crate) fn encode_qos(qos: QoS) -> [u8; 2] {
    [VERSION, qos.bits()]
}

pub(crate) fn decode_qos(bytes: &[u8]) -> Result<QoS, StoreError> {
    let mut r = Reader::new("subscriptions", bytes)?;
    let bits = r.u8()?;
    let qos = QoS::from_bits(bits).ok_or_else(|| r.error(format!("QoS {bits}")))?;
    r.end()?;
    Ok(qos)
}

/// `[1][u64]`, the meta table's counters.
pub(crate) fn encode_u64(n: u64) -> [u8; 9] {
    encode_id(MessageId(n))
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    decode_id("meta", bytes).map(|id| id.0)
}
