//! Reading Mosquitto's persistence file, `mosquitto.db`, into a
//! [`StoredState`]: how a user moving from Mosquitto keeps their retained
//! messages and persistent sessions.
//!
//! Pure: bytes in, data out. Reads DB versions 5 and 6 (Mosquitto 1.6 to
//! 2.1); refuses the older ones (1.5 and before), which Mosquitto 1.6 or
//! later rewrites as version 6 when it starts on them once.
//!
//! The file is a 23-byte header (magic, an unchecked CRC, the version),
//! then chunks: a big-endian `u32` type and `u32` length, then the body.
//! A body starts with a C struct written as it lies in memory: 16- and
//! 32-bit fields are converted to big-endian, but the 64-bit ones (store
//! ids, `last_db_id`, expiry times) and the padding are in the writer's
//! native order. The reader here follows Mosquitto's own
//! (`persist_read.c`, `persist_read_v5.c`) where it matters:
//!
//! - For CFG, RETAIN, SUB and CLIENT chunks Mosquitto reads the struct and
//!   its strings and ignores `length` (its own test files carry 0 there),
//!   so the next chunk starts after what was read, not after `length`.
//!   MSG_STORE and CLIENT_MSG bodies fill exactly `length` bytes; what is
//!   left after the strings and payload is MQTT 5 properties, skipped here.
//! - Chunks may come in any order; unknown types are skipped by `length`.
//! - A file that ends between chunks (or inside the 8-byte header of the
//!   next one, which Mosquitto also takes as the end) loads; one that ends
//!   inside a chunk is an error.
//!
//! Restored as Mosquitto restores it (`database.c`,
//! `db__message_reconnect_reset_*`): outgoing messages keep their state
//! and packet id, incoming QoS 2 messages still await PUBREL, incoming
//! QoS 0 and 1 messages and messages whose MQTT 5 expiry passed are
//! dropped. Beyond that, sessions whose expiry time passed are dropped
//! (Mosquitto 2.0.11 to 2.0.14 never expire restored sessions), and user
//! names that Mosquitto could not have accepted are dropped: Mosquitto
//! 2.0.11 to 2.0.15 wrote heap bytes as the user name of a persistent
//! client without one that followed a client with one.
//!
//! Not carried over, as Culex speaks MQTT 3.1.1: an MQTT 5 message expiry
//! that has not passed (messages expire by their payload's `expired_at`,
//! as any other), MQTT 5 properties, subscription options and
//! identifiers, and the listener a session was bound to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::{CopyState, MessageId, StoredCopy, StoredSession, StoredState};
use crate::message::{Message, Publisher};
use crate::peer::ListenerId;
use crate::time::UnixTime;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{ClientId, PacketId, QoS};

/// The first 15 bytes of every Mosquitto persistence file.
pub const MAGIC: [u8; 15] = *b"\x00\xB5\x00mosquitto db";

/// Magic, CRC (written as 0, never checked) and version.
const HEADER_LEN: usize = 23;

/// The largest payload MQTT can carry; Mosquitto refuses a longer one.
pub const MAX_PAYLOAD: u32 = 268_435_455;

const CHUNK_CFG: u32 = 1;
const CHUNK_MSG_STORE: u32 = 2;
const CHUNK_CLIENT_MSG: u32 = 3;
const CHUNK_RETAIN: u32 = 4;
const CHUNK_SUB: u32 = 5;
const CHUNK_CLIENT: u32 = 6;

/// Sizes of the fixed parts as x86-64 and arm64 lay them out. A 32-bit
/// x86 writer aligns 64-bit fields to 4 bytes, which changes only the
/// trailing padding of CFG (12 bytes there) and CLIENT (20).
const CFG_LEN: usize = 16;
const CFG_LEN_I386: usize = 12;
const MSG_STORE_LEN: usize = 32;
const CLIENT_MSG_LEN: usize = 16;
const RETAIN_LEN: usize = 8;
const SUB_LEN: usize = 12;
const CLIENT_V6_LEN: usize = 24;
const CLIENT_V6_LEN_I386: usize = 20;
const CLIENT_V5_LEN: usize = 16;

/// `direction` of a CLIENT_MSG.
const DIRECTION_IN: u8 = 0;
const DIRECTION_OUT: u8 = 1;

/// `state` values of a CLIENT_MSG (`enum mosquitto_msg_state`) that the
/// import tells apart; the others are judged by QoS, as Mosquitto does.
const STATE_RESEND_PUBREL: u8 = 6;
const STATE_WAIT_FOR_PUBCOMP: u8 = 9;
const STATE_QUEUED: u8 = 11;

/// What was imported: the state, and an account of it for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The state to start from: messages keyed by their Mosquitto store
    /// id, every session offline since the moment of the import.
    pub state: StoredState,
    /// What it holds and what was left out.
    pub summary: ImportSummary,
}

/// What an import found, kept and left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// The file's DB version: 5 (Mosquitto 1.6.0 to 1.6.10) or 6.
    pub db_version: u32,
    /// The 64-bit fields were read big-endian: the file was written on a
    /// big-endian machine.
    pub big_endian: bool,
    /// The CFG chunk's flag: the file was written as Mosquitto stopped
    /// (`Some(false)`: by an autosave or SIGUSR1); `None` without a CFG.
    pub written_at_exit: Option<bool>,
    /// Retained messages kept.
    pub retained: usize,
    /// Persistent sessions kept.
    pub sessions: usize,
    /// Their subscriptions.
    pub subscriptions: usize,
    /// Their copies waiting to be sent.
    pub queued: usize,
    /// Their copies sent and not yet completed.
    pub in_flight: usize,
    /// Their incoming QoS 2 messages awaiting PUBREL.
    pub incoming: usize,
    /// Distinct message bodies kept.
    pub messages: usize,
    /// What was left out or changed.
    pub dropped: Dropped,
}

/// What an import left out or changed, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropped {
    /// User names that are not text Mosquitto accepts (invalid UTF-8,
    /// control characters, non-characters): the garbage of Mosquitto
    /// 2.0.11 to 2.0.15. The session is kept without a user name.
    pub invalid_usernames: usize,
    /// Chunks naming a client id Mosquitto would not accept (empty, not
    /// valid UTF-8, control characters).
    pub invalid_client_ids: usize,
    /// Messages whose topic is not a valid topic name, or whose QoS is
    /// not 0, 1 or 2.
    pub invalid_messages: usize,
    /// Subscriptions whose filter is not a valid topic filter, or whose
    /// QoS is not 0, 1 or 2.
    pub invalid_subscriptions: usize,
    /// Queued or in-flight messages with an unknown direction or a QoS
    /// above 2, and incoming QoS 2 messages with packet id 0.
    pub invalid_client_messages: usize,
    /// Messages whose MQTT 5 expiry time has passed.
    pub expired_messages: usize,
    /// Sessions whose expiry time has passed, with all they held.
    pub expired_sessions: usize,
    /// References (retained entries, queued, in-flight and incoming
    /// messages) to a message the file does not hold.
    pub missing_messages: usize,
    /// Retained messages on `$SYS` topics, which the broker publishes
    /// itself.
    pub system_retained: usize,
    /// Incoming QoS 0 and 1 messages, which Mosquitto also drops.
    pub incoming_below_qos2: usize,
    /// In-flight messages sharing a packet id with an earlier one of the
    /// same session: kept, but queued to be sent again under a new id.
    pub requeued: usize,
    /// Messages nothing refers to.
    pub unreferenced_messages: usize,
    /// Chunks of a type this reader does not know, skipped.
    pub unknown_chunks: usize,
    /// Bytes at the end too few for a chunk header, ignored as Mosquitto
    /// ignores them.
    pub trailing_bytes: usize,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} retained messages, {} persistent sessions with {} subscriptions, {} queued, {} in-flight \
             and {} incoming messages ({} message bodies)",
            self.retained, self.sessions, self.subscriptions, self.queued, self.in_flight, self.incoming, self.messages
        )?;
        let d = &self.dropped;
        let left_out = [
            (d.invalid_usernames, "invalid user names (kept the sessions without them)"),
            (d.invalid_client_ids, "entries with an invalid client id"),
            (d.invalid_messages, "invalid messages"),
            (d.invalid_subscriptions, "invalid subscriptions"),
            (d.invalid_client_messages, "invalid queued or in-flight entries"),
            (d.expired_messages, "expired messages"),
            (d.expired_sessions, "expired sessions"),
            (d.missing_messages, "references to missing messages"),
            (d.system_retained, "retained $SYS messages"),
            (d.incoming_below_qos2, "incoming QoS 0/1 messages"),
            (d.requeued, "in-flight messages with a duplicate packet id (queued again)"),
            (d.unreferenced_messages, "unreferenced messages"),
            (d.unknown_chunks, "chunks of unknown type"),
            (d.trailing_bytes, "trailing bytes"),
        ];
        let mut first = true;
        for (n, what) in left_out.into_iter().filter(|(n, _)| *n > 0) {
            f.write_str(if first { "; left out: " } else { ", " })?;
            write!(f, "{n} {what}")?;
            first = false;
        }
        Ok(())
    }
}

/// A chunk type, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// CFG (1): the id counter and the shutdown flag.
    Cfg,
    /// MSG_STORE (2, BASE_MSG in 2.1): a message body.
    MsgStore,
    /// CLIENT_MSG (3): a message queued, in flight or incoming.
    ClientMsg,
    /// RETAIN (4): a retained message.
    Retain,
    /// SUB (5): a subscription.
    Sub,
    /// CLIENT (6): a persistent session.
    Client,
    /// Any other type, skipped.
    Unknown(u32),
}

impl fmt::Display for ChunkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cfg => f.write_str("CFG"),
            Self::MsgStore => f.write_str("MSG_STORE"),
            Self::ClientMsg => f.write_str("CLIENT_MSG"),
            Self::Retain => f.write_str("RETAIN"),
            Self::Sub => f.write_str("SUB"),
            Self::Client => f.write_str("CLIENT"),
            Self::Unknown(kind) => write!(f, "unknown ({kind})"),
        }
    }
}

/// Why a file could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The file does not start with Mosquitto's magic number.
    #[error("not a Mosquitto persistence file (it does not start with Mosquitto's magic number)")]
    NotMosquitto,
    /// The file ends inside its 23-byte header.
    #[error("the Mosquitto persistence file is cut short: {len} bytes, less than its 23-byte header")]
    ShortHeader {
        /// The file's length.
        len: usize,
    },
    /// DB versions 2 to 4: Mosquitto 1.5 and before.
    #[error(
        "this mosquitto.db has format version {version}, written by Mosquitto 1.5 or older, which is not \
         supported: start Mosquitto 1.6 or later on it once (it reads every older format and saves in the \
         current one), stop it, then import the file it wrote"
    )]
    TooOld {
        /// The version found.
        version: u32,
    },
    /// A version this reader does not know.
    #[error(
        "unsupported Mosquitto persistence format version {version} (versions 5 and 6, written by \
         Mosquitto 1.6 to 2.1, are supported)"
    )]
    Unsupported {
        /// The version found.
        version: u32,
    },
    /// The file ends inside a chunk.
    #[error(
        "the Mosquitto persistence file is cut short: it ends at byte {len}, inside the {chunk} chunk \
         that starts at byte {offset}"
    )]
    Truncated {
        /// The chunk cut.
        chunk: ChunkKind,
        /// Where the chunk starts.
        offset: usize,
        /// The file's length.
        len: usize,
    },
    /// A CFG chunk says ids are not 8 bytes wide (as Mosquitto, refused).
    #[error("incompatible Mosquitto database: the CFG chunk at byte {offset} gives ids of {size} bytes, not 8")]
    DbIdSize {
        /// Where the chunk starts.
        offset: usize,
        /// The size found.
        size: u8,
    },
    /// A message longer than MQTT allows.
    #[error("the MSG_STORE chunk at byte {offset} has a payload of {len} bytes, more than MQTT's 268435455")]
    PayloadTooLong {
        /// Where the chunk starts.
        offset: usize,
        /// The length found.
        len: u32,
    },
    /// A chunk's contents run past its `length`.
    #[error("the {chunk} chunk at byte {offset} is corrupt: its contents run past its length of {length} bytes")]
    BadLength {
        /// The chunk.
        chunk: ChunkKind,
        /// Where the chunk starts.
        offset: usize,
        /// Its `length` field.
        length: u32,
    },
}

/// Whether `bytes` start like a Mosquitto persistence file.
pub fn is_mosquitto_db(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// Reads a Mosquitto persistence file at `now` (which decides what has
/// expired and becomes every session's `offline_since`). An empty file
/// imports as an empty state, as Mosquitto starts empty on one.
///
/// Message ids are Mosquitto's store ids; sequence numbers of a session's
/// copies follow the file's order from 1; `last_batch` is 0.
///
/// # Errors
///
/// When the file is not Mosquitto's, is of an unsupported version, or
/// is cut or corrupt where Mosquitto itself would refuse to start on it.
/// Invalid entries are not errors: they are left out and counted in
/// [`ImportSummary::dropped`].
pub fn import(bytes: &[u8], now: UnixTime) -> Result<Imported, ImportError> {
    if bytes.is_empty() {
        return Ok(Imported { state: StoredState::default(), summary: ImportSummary::default() });
    }
    let Some((magic, rest)) = bytes.split_first_chunk::<15>() else {
        return Err(if MAGIC.starts_with(bytes) {
            ImportError::ShortHeader { len: bytes.len() }
        } else {
            ImportError::NotMosquitto
        });
    };
    if *magic != MAGIC {
        return Err(ImportError::NotMosquitto);
    }
    let Some((_crc, rest)) = rest.split_first_chunk::<4>() else {
        return Err(ImportError::ShortHeader { len: bytes.len() });
    };
    let Some((version, _)) = rest.split_first_chunk::<4>() else {
        return Err(ImportError::ShortHeader { len: bytes.len() });
    };
    let version = u32::from_be_bytes(*version);
    match version {
        5 | 6 => {}
        2..=4 => return Err(ImportError::TooOld { version }),
        _ => return Err(ImportError::Unsupported { version }),
    }
    let parsed = parse(bytes, version)?;
    Ok(assemble(parsed, version, seconds(now)))
}

/// Whole seconds since the epoch, as Mosquitto's `time(NULL)`; a clock
/// before 1970 (or not a number) counts as 0.
fn seconds(now: UnixTime) -> i64 {
    let secs = now.as_secs_f64();
    // `as` saturates, and turns NaN into 0.
    if secs > 0.0 { secs.floor() as i64 } else { 0 }
}

/// A 64-bit field as written, in the writer's byte order.
type Raw64 = [u8; 8];

/// A chunk as read, before the byte order of its 64-bit fields is known.
#[derive(Debug)]
enum Chunk<'a> {
    Cfg { last_db_id: Raw64, shutdown: u8 },
    Store(RawStore<'a>),
    ClientMsg(RawClientMsg<'a>),
    Retain { store: Raw64 },
    Sub { client: &'a [u8], filter: &'a [u8], qos: u8 },
    Client(RawClient<'a>),
}

#[derive(Debug)]
struct RawStore<'a> {
    id: Raw64,
    expiry_time: Raw64,
    qos: u8,
    retain: u8,
    source_id: &'a [u8],
    source_username: &'a [u8],
    topic: &'a [u8],
    payload: &'a [u8],
}

#[derive(Debug)]
struct RawClientMsg<'a> {
    store: Raw64,
    mid: u16,
    qos: u8,
    state: u8,
    retain_dup: u8,
    direction: u8,
    client: &'a [u8],
}

#[derive(Debug)]
struct RawClient<'a> {
    expiry_time: Raw64,
    expiry_interval: u32,
    last_mid: u16,
    id: &'a [u8],
    username: &'a [u8],
}

/// The chunks of a file, in file order.
#[derive(Debug, Default)]
struct Parsed<'a> {
    chunks: Vec<Chunk<'a>>,
    unknown: usize,
    trailing: usize,
}

/// Reads from a slice without ever panicking: every read that does not
/// fit gives `None`.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let taken = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<&'a [u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// The 8 bytes of a fixed part at `at` (zeros past its end, which the
/// callers' fixed sizes never reach).
fn raw64(fixed: &[u8], at: usize) -> Raw64 {
    let mut raw = [0; 8];
    for (to, from) in raw.iter_mut().zip(fixed.get(at..).unwrap_or_default()) {
        *to = *from;
    }
    raw
}

/// Splits the file into chunks, as Mosquitto's read loop walks it.
fn parse(bytes: &[u8], version: u32) -> Result<Parsed<'_>, ImportError> {
    let mut parsed = Parsed::default();
    let mut pos = HEADER_LEN;
    let len = bytes.len();
    loop {
        let rest = bytes.get(pos..).unwrap_or_default();
        let Some((header, _)) = rest.split_first_chunk::<8>() else {
            // Mosquitto's loop ends quietly at a partial header too.
            parsed.trailing = rest.len();
            return Ok(parsed);
        };
        let kind = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let offset = pos;
        let chunk_kind = match kind {
            CHUNK_CFG => ChunkKind::Cfg,
            CHUNK_MSG_STORE => ChunkKind::MsgStore,
            CHUNK_CLIENT_MSG => ChunkKind::ClientMsg,
            CHUNK_RETAIN => ChunkKind::Retain,
            CHUNK_SUB => ChunkKind::Sub,
            CHUNK_CLIENT => ChunkKind::Client,
            other => ChunkKind::Unknown(other),
        };
        let truncated = ImportError::Truncated { chunk: chunk_kind, offset, len };
        let body_start = pos + 8;
        // Chunks whose body is exactly `length` bytes.
        let sized = || sized_body(bytes, body_start, length).ok_or_else(|| truncated.clone());
        // Chunks read field by field, whose `length` Mosquitto ignores.
        let mut cur = Cursor { bytes, pos: body_start };
        match chunk_kind {
            ChunkKind::Cfg => {
                let fixed = if length as usize == CFG_LEN_I386 { CFG_LEN_I386 } else { CFG_LEN };
                let f = cur.take(fixed).ok_or_else(|| truncated.clone())?;
                let (head, _) = f.split_first_chunk::<10>().ok_or_else(|| truncated.clone())?;
                let size = head[9];
                if size != 8 {
                    return Err(ImportError::DbIdSize { offset, size });
                }
                parsed.chunks.push(Chunk::Cfg { last_db_id: raw64(head, 0), shutdown: head[8] });
                pos = cur.pos;
            }
            ChunkKind::MsgStore => {
                // Mosquitto checks the payload length before it reads on.
                let f = cur.array::<MSG_STORE_LEN>().ok_or_else(|| truncated.clone())?;
                let payload_len = u32::from_be_bytes([f[16], f[17], f[18], f[19]]);
                if payload_len > MAX_PAYLOAD {
                    return Err(ImportError::PayloadTooLong { offset, len: payload_len });
                }
                let body = sized()?;
                let bad = ImportError::BadLength { chunk: chunk_kind, offset, length };
                let mut body = Cursor { bytes: body, pos: MSG_STORE_LEN };
                let source_id = usize::from(be16([f[22], f[23]]));
                let source_username = usize::from(be16([f[24], f[25]]));
                let topic_len = usize::from(be16([f[26], f[27]]));
                let source_id = body.take(source_id).ok_or_else(|| bad.clone())?;
                let source_username = body.take(source_username).ok_or_else(|| bad.clone())?;
                let topic = body.take(topic_len).ok_or_else(|| bad.clone())?;
                let payload = body.take(payload_len as usize).ok_or(bad)?;
                // What is left is MQTT 5 properties: nothing 3.1.1 keeps.
                parsed.chunks.push(Chunk::Store(RawStore {
                    id: raw64(f, 0),
                    expiry_time: raw64(f, 8),
                    qos: f[30],
                    retain: f[31],
                    source_id,
                    source_username,
                    topic,
                    payload,
                }));
                pos = body_start + body.bytes.len();
            }
            ChunkKind::ClientMsg => {
                let body = sized()?;
                let bad = ImportError::BadLength { chunk: chunk_kind, offset, length };
                let mut body = Cursor { bytes: body, pos: 0 };
                let f = body.array::<CLIENT_MSG_LEN>().ok_or_else(|| bad.clone())?;
                let client = body.take(usize::from(be16([f[10], f[11]]))).ok_or(bad)?;
                parsed.chunks.push(Chunk::ClientMsg(RawClientMsg {
                    store: raw64(f, 0),
                    mid: be16([f[8], f[9]]),
                    qos: f[12],
                    state: f[13],
                    retain_dup: f[14],
                    direction: f[15],
                    client,
                }));
                pos = body_start + body.bytes.len();
            }
            ChunkKind::Retain => {
                let f = cur.array::<RETAIN_LEN>().ok_or_else(|| truncated.clone())?;
                parsed.chunks.push(Chunk::Retain { store: *f });
                pos = cur.pos;
            }
            ChunkKind::Sub => {
                let f = cur.array::<SUB_LEN>().ok_or_else(|| truncated.clone())?;
                let client = cur.take(usize::from(be16([f[4], f[5]]))).ok_or_else(|| truncated.clone())?;
                let filter = cur.take(usize::from(be16([f[6], f[7]]))).ok_or_else(|| truncated.clone())?;
                parsed.chunks.push(Chunk::Sub { client, filter, qos: f[8] });
                pos = cur.pos;
            }
            ChunkKind::Client => {
                // The fields common to v5 and v6, at the same offsets.
                let f = cur.array::<CLIENT_V5_LEN>().ok_or_else(|| truncated.clone())?;
                let id_len = usize::from(be16([f[14], f[15]]));
                let mut username_len = 0;
                if version == 6 {
                    let more = cur.array::<4>().ok_or_else(|| truncated.clone())?;
                    username_len = usize::from(be16([more[2], more[3]]));
                    // A 32-bit writer has no trailing padding, which shows
                    // in `length` (64-bit writers fill it in too).
                    if length as usize != CLIENT_V6_LEN_I386 + id_len + username_len {
                        cur.take(CLIENT_V6_LEN - CLIENT_V6_LEN_I386).ok_or_else(|| truncated.clone())?;
                    }
                }
                let id = cur.take(id_len).ok_or_else(|| truncated.clone())?;
                let username = cur.take(username_len).ok_or_else(|| truncated.clone())?;
                parsed.chunks.push(Chunk::Client(RawClient {
                    expiry_time: raw64(f, 0),
                    expiry_interval: u32::from_be_bytes([f[8], f[9], f[10], f[11]]),
                    last_mid: be16([f[12], f[13]]),
                    id,
                    username,
                }));
                pos = cur.pos;
            }
            ChunkKind::Unknown(_) => {
                // Mosquitto seeks past; past the end is a cut file here.
                let body = sized()?;
                parsed.unknown += 1;
                pos = body_start + body.len();
            }
        }
    }
}

/// The body of a chunk that fills exactly its `length`, if the file
/// holds it all.
fn sized_body(bytes: &[u8], start: usize, length: u32) -> Option<&[u8]> {
    let end = start.checked_add(usize::try_from(length).ok()?)?;
    bytes.get(start..end)
}

/// The byte order of the 64-bit fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Little,
    Big,
}

impl Order {
    fn u64(self, raw: Raw64) -> u64 {
        match self {
            Self::Little => u64::from_le_bytes(raw),
            Self::Big => u64::from_be_bytes(raw),
        }
    }

    fn i64(self, raw: Raw64) -> i64 {
        match self {
            Self::Little => i64::from_le_bytes(raw),
            Self::Big => i64::from_be_bytes(raw),
        }
    }
}

/// Guesses the writer's byte order: little-endian (x86, ARM) unless that
/// makes more fields absurd than big-endian does (MIPS and PowerPC
/// routers). Store ids count up from 1 and expiry times are Unix seconds,
/// so a field read in the wrong order (a small number byte-swapped)
/// lands far beyond either; zero reads the same both ways.
fn byte_order(chunks: &[Chunk<'_>]) -> Order {
    const MAX_ID: u64 = 1 << 48;
    // Year 4147: beyond any expiry a broker sets.
    const MAX_TIME: i64 = 1 << 37;
    let mut ids = Vec::new();
    let mut times = Vec::new();
    for chunk in chunks {
        match chunk {
            Chunk::Cfg { last_db_id, .. } => ids.push(*last_db_id),
            Chunk::Store(s) => {
                ids.push(s.id);
                times.push(s.expiry_time);
            }
            Chunk::ClientMsg(m) => ids.push(m.store),
            Chunk::Retain { store } => ids.push(*store),
            Chunk::Sub { .. } => {}
            Chunk::Client(c) => times.push(c.expiry_time),
        }
    }
    let absurd = |order: Order| {
        ids.iter().filter(|raw| order.u64(**raw) >= MAX_ID).count()
            + times.iter().filter(|raw| !(0..MAX_TIME).contains(&order.i64(**raw))).count()
    };
    let little = absurd(Order::Little);
    if little > 0 && absurd(Order::Big) < little { Order::Big } else { Order::Little }
}

/// Text as Mosquitto's `mosquitto_validate_utf8` accepts it in a client
/// id or user name: valid UTF-8 without control characters (U+0000 to
/// U+001F, U+007F to U+009F) or non-characters (U+xFFFE, U+xFFFF).
fn mqtt_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    let bad = |c: char| {
        let c = u32::from(c);
        c <= 0x1F || (0x7F..=0x9F).contains(&c) || c & 0xFFFE == 0xFFFE
    };
    (!text.chars().any(bad)).then_some(text)
}

fn client_id(bytes: &[u8]) -> Option<ClientId> {
    mqtt_text(bytes).filter(|id| !id.is_empty()).map(ClientId::new)
}

/// Who published a stored message, as Mosquitto recorded it (its
/// listener is recorded by port, which a Culex listener cannot be told
/// by: the first listener stands for it).
fn publisher(store: &RawStore<'_>) -> Option<Publisher> {
    let client_id = client_id(store.source_id)?;
    let username = mqtt_text(store.source_username).filter(|name| !name.is_empty()).map(Arc::from);
    Some(Publisher { client_id, username, listener: ListenerId::default() })
}

/// A message body as read, before the import knows whether it is kept.
#[derive(Debug)]
struct Body<'a> {
    topic: TopicName,
    qos: QoS,
    retain: bool,
    payload: &'a [u8],
    /// The client that published it, if Mosquitto recorded one.
    publisher: Option<Publisher>,
}

/// A session being gathered from the chunks that name its client.
#[derive(Debug, Default)]
struct Gathered<'a> {
    /// Named by a CLIENT or SUB chunk, or by a CLIENT_MSG whose message
    /// Mosquitto would have loaded: what makes Mosquitto restore it.
    exists: bool,
    username: Option<Arc<str>>,
    last_mid: u16,
    /// Expiry time and interval of its last CLIENT chunk, if any.
    expiry: Option<(i64, u32)>,
    subscriptions: BTreeMap<TopicFilter, QoS>,
    messages: Vec<&'a RawClientMsg<'a>>,
}

/// Whether a session is over at `now`, as Mosquitto 2.0.15 and later
/// judge at restart with their default `persistent_client_expiration`
/// (none): a session that asked never to expire (every MQTT 3.1.1 one)
/// never does, whatever time is recorded (set only under a
/// `persistent_client_expiration`, which Culex applies itself, from the
/// import on; and left stale by a client that came back). Another ends at
/// its recorded expiry time if it has one (set when its client went
/// away); without one it lives its interval from now, except that an
/// interval of 0 ends with the connection, gone at shutdown.
fn session_expired(expiry_time: i64, interval: u32, now: i64) -> bool {
    if interval == u32::MAX {
        false
    } else if expiry_time != 0 {
        expiry_time < now
    } else {
        interval == 0
    }
}

/// Whether a message with this MQTT 5 expiry time (0 or less: none) has
/// expired at `now`. Mosquitto also drops one whose expiry lies more than
/// 2^32 s ahead (its interval would overflow); kept here: such a date is
/// as good as never, and an import at a later moment must not keep more
/// than one at an earlier moment.
fn message_expired(expiry_time: i64, now: i64) -> bool {
    expiry_time > 0 && expiry_time < now
}

/// Turns the chunks into the state, following Mosquitto's restore.
fn assemble(parsed: Parsed<'_>, version: u32, now: i64) -> Imported {
    let order = byte_order(&parsed.chunks);
    let mut summary =
        ImportSummary { db_version: version, big_endian: order == Order::Big, ..ImportSummary::default() };
    let dropped = &mut summary.dropped;
    dropped.unknown_chunks = parsed.unknown;
    dropped.trailing_bytes = parsed.trailing;

    // Message bodies by store id; `None` for one left out (expired or
    // invalid), whose references are then left out without a count of
    // their own. A later chunk with the same id wins, as in Mosquitto's
    // hash.
    let mut bodies: HashMap<u64, Option<Body<'_>>> = HashMap::new();
    for chunk in &parsed.chunks {
        match chunk {
            Chunk::Cfg { shutdown, .. } => summary.written_at_exit = Some(*shutdown != 0),
            Chunk::Store(s) => {
                let id = order.u64(s.id);
                let topic = std::str::from_utf8(s.topic).ok().and_then(|t| TopicName::new(t).ok());
                let body = match (topic, QoS::from_bits(s.qos)) {
                    _ if message_expired(order.i64(s.expiry_time), now) => {
                        dropped.expired_messages += 1;
                        None
                    }
                    (Some(topic), Some(qos)) => {
                        let publisher = publisher(s);
                        Some(Body { topic, qos, retain: s.retain != 0, payload: s.payload, publisher })
                    }
                    _ => {
                        dropped.invalid_messages += 1;
                        None
                    }
                };
                bodies.insert(id, body);
            }
            _ => {}
        }
    }
    let resolve = |store: u64, dropped: &mut Dropped| -> Option<Option<MessageId>> {
        match bodies.get(&store) {
            None => {
                dropped.missing_messages += 1;
                None
            }
            Some(body) => Some(body.as_ref().map(|_| MessageId(store))),
        }
    };

    // Sessions, subscriptions, retained entries, in file order; a chunk
    // naming a client without a CLIENT chunk makes its session, as
    // Mosquitto's `persist__find_or_add_context` does.
    let mut gathered: BTreeMap<ClientId, Gathered<'_>> = BTreeMap::new();
    let mut retained: BTreeMap<TopicName, MessageId> = BTreeMap::new();
    for chunk in &parsed.chunks {
        match chunk {
            Chunk::Client(c) => {
                let Some(id) = client_id(c.id) else {
                    dropped.invalid_client_ids += 1;
                    continue;
                };
                let session = gathered.entry(id).or_default();
                session.exists = true;
                if c.last_mid != 0 {
                    session.last_mid = c.last_mid;
                }
                session.expiry = Some((order.i64(c.expiry_time), c.expiry_interval));
                // Mosquitto keeps the first user name it restores.
                if !c.username.is_empty() && session.username.is_none() {
                    match mqtt_text(c.username) {
                        Some(name) => session.username = Some(Arc::from(name)),
                        None => dropped.invalid_usernames += 1,
                    }
                }
            }
            Chunk::Sub { client, filter, qos } => {
                let Some(id) = client_id(client) else {
                    dropped.invalid_client_ids += 1;
                    continue;
                };
                let session = gathered.entry(id).or_default();
                session.exists = true;
                let filter = std::str::from_utf8(filter).ok().and_then(|f| TopicFilter::new(f).ok());
                match (filter, QoS::from_bits(*qos)) {
                    (Some(filter), Some(qos)) => {
                        session.subscriptions.insert(filter, qos);
                    }
                    _ => dropped.invalid_subscriptions += 1,
                }
            }
            Chunk::ClientMsg(m) => {
                let Some(id) = client_id(m.client) else {
                    dropped.invalid_client_ids += 1;
                    continue;
                };
                let session = gathered.entry(id).or_default();
                session.exists |= matches!(bodies.get(&order.u64(m.store)), Some(Some(_)));
                session.messages.push(m);
            }
            Chunk::Retain { store } => {
                let store = order.u64(*store);
                let Some(Some(id)) = resolve(store, dropped) else { continue };
                let Some(Some(body)) = bodies.get(&store) else { continue };
                if body.topic.as_str().starts_with("$SYS") {
                    dropped.system_retained += 1;
                    continue;
                }
                retained.insert(body.topic.clone(), id);
            }
            Chunk::Cfg { .. } | Chunk::Store(_) => {}
        }
    }

    let mut sessions = BTreeMap::new();
    for (client, gathered) in gathered {
        if !gathered.exists {
            // Only messages Mosquitto would not have loaded name it.
            for m in gathered.messages {
                let _ = resolve(order.u64(m.store), dropped);
            }
            continue;
        }
        if gathered.expiry.is_some_and(|(time, interval)| session_expired(time, interval, now)) {
            dropped.expired_sessions += 1;
            continue;
        }
        let mut session = StoredSession {
            username: gathered.username,
            offline_since: Some(u64::try_from(now).unwrap_or(0)),
            // As the broker's own image: the first id is no information.
            next_packet_id: PacketId::new(gathered.last_mid.wrapping_add(1)).filter(|id| *id != PacketId::MIN),
            subscriptions: gathered.subscriptions,
            ..StoredSession::default()
        };
        let mut in_flight = BTreeSet::new();
        for m in gathered.messages {
            match (m.direction, QoS::from_bits(m.qos)) {
                (DIRECTION_OUT, Some(qos)) => {
                    let Some(Some(message)) = resolve(order.u64(m.store), dropped) else { continue };
                    let mut state = copy_state(qos, m.state, m.mid);
                    if state.packet_id().is_some_and(|id| !in_flight.insert(id)) {
                        dropped.requeued += 1;
                        state = CopyState::Queued(None);
                    }
                    let seq = session.copies.len() as u64 + 1;
                    let retain = m.retain_dup & 0xF0 != 0;
                    session.copies.insert(seq, StoredCopy { message, qos, retain, state });
                }
                (DIRECTION_IN, Some(QoS::ExactlyOnce)) => {
                    let Some(packet_id) = PacketId::new(m.mid) else {
                        dropped.invalid_client_messages += 1;
                        continue;
                    };
                    // A message left out still owes its PUBREC/PUBREL.
                    let Some(message) = resolve(order.u64(m.store), dropped) else { continue };
                    session.incoming.insert(packet_id, message);
                }
                (DIRECTION_IN, Some(_)) => dropped.incoming_below_qos2 += 1,
                _ => dropped.invalid_client_messages += 1,
            }
        }
        sessions.insert(client, session);
    }

    let mut state = StoredState { retained, sessions, ..StoredState::default() };
    let referenced: BTreeSet<MessageId> = state.references().collect();
    let retained_ids: BTreeSet<MessageId> = state.retained.values().copied().collect();
    for (store, body) in bodies {
        let Some(body) = body else { continue };
        let id = MessageId(store);
        if !referenced.contains(&id) {
            dropped.unreferenced_messages += 1;
            continue;
        }
        // Retained-ness comes from the RETAIN chunks; a message that is
        // retained was published with RETAIN whatever its byte says.
        let retain = body.retain || retained_ids.contains(&id);
        let mut message = Message::new(body.topic, Bytes::copy_from_slice(body.payload), body.qos, retain);
        if let Some(publisher) = body.publisher {
            message = message.published_by(|| publisher);
        }
        state.messages.insert(id, Arc::new(message));
    }

    summary.retained = state.retained.len();
    summary.sessions = state.sessions.len();
    summary.messages = state.messages.len();
    for session in state.sessions.values() {
        summary.subscriptions += session.subscriptions.len();
        summary.incoming += session.incoming.len();
        for copy in session.copies.values() {
            match copy.state {
                CopyState::Queued(_) => summary.queued += 1,
                CopyState::Sent(_) | CopyState::Released(_) => summary.in_flight += 1,
            }
        }
    }
    Imported { state, summary }
}

/// Where an outgoing copy resumes, as Mosquitto's
/// `db__message_reconnect_reset_outgoing` decides by QoS: QoS 0 and
/// queued copies wait to be sent; QoS 1 is sent again; QoS 2 past PUBREC
/// (PUBREL to send or PUBCOMP awaited) is released, other QoS 2 is sent
/// again. A copy in flight without a packet id waits to be sent anew.
fn copy_state(qos: QoS, state: u8, mid: u16) -> CopyState {
    let Some(id) = PacketId::new(mid) else { return CopyState::Queued(None) };
    match qos {
        QoS::AtMostOnce => CopyState::Queued(None),
        _ if state == STATE_QUEUED => CopyState::Queued(None),
        QoS::ExactlyOnce if matches!(state, STATE_RESEND_PUBREL | STATE_WAIT_FOR_PUBCOMP) => CopyState::Released(id),
        QoS::AtLeastOnce | QoS::ExactlyOnce => CopyState::Sent(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_as_mosquitto_checks_them() {
        assert_eq!(mqtt_text(b"bob"), Some("bob"));
        assert_eq!(mqtt_text("Zoë 🦟".as_bytes()), Some("Zoë 🦟"));
        // The garbage of Mosquitto 2.0.11 to 2.0.15: a stale name, a NUL,
        // then whatever the heap held.
        assert_eq!(mqtt_text(b"bob\0Debian this has been1"), None);
        assert_eq!(mqtt_text(b"\xC3\x28"), None);
        assert_eq!(mqtt_text("a\u{7f}".as_bytes()), None);
        assert_eq!(mqtt_text("a\u{85}".as_bytes()), None);
        assert_eq!(mqtt_text("a\u{FFFE}".as_bytes()), None);
        assert_eq!(mqtt_text("a\u{1FFFF}".as_bytes()), None);
        assert_eq!(client_id(b""), None);
    }

    #[test]
    fn sessions_expire_as_mosquitto_2_0_15_expires_them() {
        // Never means never, as in Mosquitto without a global expiration.
        assert!(!session_expired(35, u32::MAX, 100));
        // Otherwise a recorded expiry time decides.
        assert!(session_expired(99, 60, 100));
        assert!(!session_expired(100, 60, 100));
        // None recorded: never (3.1.1), or the interval from now, except 0.
        assert!(!session_expired(0, u32::MAX, 100));
        assert!(!session_expired(0, 60, 100));
        assert!(session_expired(0, 0, 100));
    }

    #[test]
    fn outgoing_copies_resume_as_mosquitto_resumes_them() {
        let (q0, q1, q2) = (QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce);
        let id = PacketId::new(9).map_or(CopyState::Queued(None), CopyState::Sent);
        assert_eq!(copy_state(q1, STATE_QUEUED, 9), CopyState::Queued(None));
        assert_eq!(copy_state(q0, 1, 9), CopyState::Queued(None));
        assert_eq!(copy_state(q1, 3, 9), id);
        assert_eq!(copy_state(q1, 2, 0), CopyState::Queued(None));
        assert_eq!(copy_state(q2, 5, 9), id);
        assert_eq!(copy_state(q2, 4, 9), id);
        for state in [STATE_RESEND_PUBREL, STATE_WAIT_FOR_PUBCOMP] {
            assert!(matches!(copy_state(q2, state, 9), CopyState::Released(p) if p.get() == 9));
        }
    }

    #[test]
    fn byte_order_follows_what_makes_sense() {
        let store = |id: u64, expiry: i64, big: bool| {
            let (id, expiry_time) =
                if big { (id.to_be_bytes(), expiry.to_be_bytes()) } else { (id.to_le_bytes(), expiry.to_le_bytes()) };
            Chunk::Store(RawStore {
                id,
                expiry_time,
                qos: 0,
                retain: 0,
                source_id: b"",
                source_username: b"",
                topic: b"t",
                payload: b"",
            })
        };
        assert_eq!(byte_order(&[store(7, 0, false)]), Order::Little);
        assert_eq!(byte_order(&[store(7, 0, true)]), Order::Big);
        assert_eq!(byte_order(&[store(0x1_0000, 1_800_000_000, true)]), Order::Big);
        // Nothing to tell by: little-endian, as x86 and ARM write.
        assert_eq!(byte_order(&[store(0, 0, true)]), Order::Little);
        assert_eq!(byte_order(&[]), Order::Little);
    }
}
