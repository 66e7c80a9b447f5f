//! Whole batches in one byte string, for the write-ahead log
//! ([`super::wal`]).
//!
//! `[1][count: u32]` then, per batch, `[seq: u64][ops: u32]` and each
//! operation as a tag byte and its fields. Strings (client ids, filters,
//! topics, user names) carry a two-byte length, as in MQTT; message bodies,
//! copies and wills are the tables' own values ([`super::codec`]) behind a
//! four-byte length, so both places read them alike.

use std::sync::Arc;

use culex_core::persistence::{MessageId, SessionFields, StoreBatch, StoreOp};
use culex_core::{ClientId, QoS, TopicFilter};

use super::StoreError;
use super::codec::{self, Reader, VERSION};

/// Names the log in decoding errors.
const TABLE: &str = "write-ahead log";

mod tag {
    pub(super) const MESSAGE: u8 = 1;
    pub(super) const DROP_MESSAGE: u8 = 2;
    pub(super) const RETAIN: u8 = 3;
    pub(super) const DROP_RETAINED: u8 = 4;
    pub(super) const SESSION: u8 = 5;
    pub(super) const DROP_SESSION: u8 = 6;
    pub(super) const SUBSCRIBE: u8 = 7;
    pub(super) const UNSUBSCRIBE: u8 = 8;
    pub(super) const COPY: u8 = 9;
    pub(super) const DROP_COPY: u8 = 10;
    pub(super) const INCOMING: u8 = 11;
    pub(super) const DROP_INCOMING: u8 = 12;
    pub(super) const WILL: u8 = 13;
    pub(super) const DROP_WILL: u8 = 14;
    pub(super) const INBOX_READ: u8 = 15;
}

/// `batches`, encoded.
#[cfg(test)]
pub(crate) fn encode(batches: &[StoreBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(batches, &mut out);
    out
}

/// `batches`, encoded at the end of `out`.
pub(crate) fn encode_into(batches: &[StoreBatch], out: &mut Vec<u8>) {
    out.push(VERSION);
    put_u32(out, batches.len());
    for batch in batches {
        out.extend_from_slice(&batch.seq.to_be_bytes());
        put_u32(out, batch.ops.len());
        for op in &batch.ops {
            put_op(out, op);
        }
    }
}

/// The batches of `bytes`.
///
/// # Errors
///
/// When `bytes` is not what [`encode`] writes.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<StoreBatch>, StoreError> {
    let mut r = Reader::new(TABLE, bytes)?;
    let count = u32_of(&mut r)?;
    // Each batch takes at least 12 bytes: no allocation beyond the input.
    let mut batches = Vec::with_capacity(count.min(bytes.len() / 12));
    for _ in 0..count {
        let seq = r.u64()?;
        let ops = u32_of(&mut r)?;
        let mut batch = StoreBatch { seq, ops: Vec::with_capacity(ops.min(bytes.len())) };
        for _ in 0..ops {
            batch.ops.push(op(&mut r)?);
        }
        batches.push(batch);
    }
    r.end()?;
    Ok(batches)
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &[u8]) {
    put_u32(out, value.len());
    out.extend_from_slice(value);
}

fn put_client(out: &mut Vec<u8>, tag: u8, client: &ClientId) {
    out.push(tag);
    codec::put_text(out, client.as_str());
}

fn put_op(out: &mut Vec<u8>, op: &StoreOp) {
    match op {
        StoreOp::Message { id, message } => {
            out.push(tag::MESSAGE);
            out.extend_from_slice(&id.0.to_be_bytes());
            put_value(out, &codec::encode_message(message));
        }
        StoreOp::DropMessage { id } => {
            out.push(tag::DROP_MESSAGE);
            out.extend_from_slice(&id.0.to_be_bytes());
        }
        StoreOp::Retain { topic, message } => {
            out.push(tag::RETAIN);
            codec::put_topic(out, topic);
            out.extend_from_slice(&message.0.to_be_bytes());
        }
        StoreOp::DropRetained { topic } => {
            out.push(tag::DROP_RETAINED);
            codec::put_topic(out, topic);
        }
        StoreOp::Session { client, username, offline_since, epoch } => {
            put_client(out, tag::SESSION, client);
            let fields = SessionFields {
                username: username.clone(),
                offline_since: *offline_since,
                next_packet_id: None,
                epoch: *epoch,
            };
            put_value(out, &codec::encode_session(&fields));
        }
        StoreOp::DropSession { client } => put_client(out, tag::DROP_SESSION, client),
        StoreOp::Subscribe { client, filter, qos } => {
            put_client(out, tag::SUBSCRIBE, client);
            codec::put_text(out, filter.as_str());
            out.push(qos.bits());
        }
        StoreOp::Unsubscribe { client, filter } => {
            put_client(out, tag::UNSUBSCRIBE, client);
            codec::put_text(out, filter.as_str());
        }
        StoreOp::Copy { client, seq, copy } => {
            put_client(out, tag::COPY, client);
            out.extend_from_slice(&seq.to_be_bytes());
            put_value(out, &codec::encode_copy(copy));
        }
        StoreOp::DropCopy { client, seq } => {
            put_client(out, tag::DROP_COPY, client);
            out.extend_from_slice(&seq.to_be_bytes());
        }
        StoreOp::Incoming { client, packet_id, message } => {
            put_client(out, tag::INCOMING, client);
            out.extend_from_slice(&packet_id.get().to_be_bytes());
            put_value(out, &codec::encode_incoming(*message));
        }
        StoreOp::DropIncoming { client, packet_id } => {
            put_client(out, tag::DROP_INCOMING, client);
            out.extend_from_slice(&packet_id.get().to_be_bytes());
        }
        StoreOp::Will { client, will } => {
            put_client(out, tag::WILL, client);
            put_value(out, &codec::encode_will(will));
        }
        StoreOp::DropWill { client } => put_client(out, tag::DROP_WILL, client),
        StoreOp::InboxRead { node, run, shard, seq } => {
            out.push(tag::INBOX_READ);
            codec::put_text(out, node);
            out.extend_from_slice(&shard.to_be_bytes());
            out.extend_from_slice(&run.to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
        }
    }
}

fn u32_of(r: &mut Reader<'_>) -> Result<usize, StoreError> {
    let bytes = r.take(4)?;
    let mut buf = [0; 4];
    buf.copy_from_slice(bytes);
    Ok(u32::from_be_bytes(buf) as usize)
}

fn client(r: &mut Reader<'_>) -> Result<ClientId, StoreError> {
    Ok(ClientId::new(r.text()?))
}

fn filter(r: &mut Reader<'_>) -> Result<TopicFilter, StoreError> {
    let filter = r.text()?;
    TopicFilter::new(filter).map_err(|e| r.error(format!("invalid filter {filter:?}: {e}")))
}

fn value<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], StoreError> {
    let len = u32_of(r)?;
    r.take(len)
}

fn op(r: &mut Reader<'_>) -> Result<StoreOp, StoreError> {
    let op = match r.u8()? {
        tag::MESSAGE => {
            let id = MessageId(r.u64()?);
            StoreOp::Message { id, message: Arc::new(codec::decode_message(value(r)?)?) }
        }
        tag::DROP_MESSAGE => StoreOp::DropMessage { id: MessageId(r.u64()?) },
        tag::RETAIN => {
            let topic = r.topic()?;
            StoreOp::Retain { topic, message: MessageId(r.u64()?) }
        }
        tag::DROP_RETAINED => StoreOp::DropRetained { topic: r.topic()? },
        tag::SESSION => {
            let client = client(r)?;
            let fields = codec::decode_session(value(r)?)?;
            StoreOp::Session {
                client,
                username: fields.username,
                offline_since: fields.offline_since,
                epoch: fields.epoch,
            }
        }
        tag::DROP_SESSION => StoreOp::DropSession { client: client(r)? },
        tag::SUBSCRIBE => {
            let (client, filter) = (client(r)?, filter(r)?);
            let bits = r.u8()?;
            let qos = QoS::from_bits(bits).ok_or_else(|| r.error(format!("QoS {bits}")))?;
            StoreOp::Subscribe { client, filter, qos }
        }
        tag::UNSUBSCRIBE => StoreOp::Unsubscribe { client: client(r)?, filter: filter(r)? },
        tag::COPY => {
            let (client, seq) = (client(r)?, r.u64()?);
            StoreOp::Copy { client, seq, copy: codec::decode_copy(value(r)?)? }
        }
        tag::DROP_COPY => StoreOp::DropCopy { client: client(r)?, seq: r.u64()? },
        tag::INCOMING => {
            let (client, packet_id) = (client(r)?, r.packet_id()?);
            StoreOp::Incoming { client, packet_id, message: codec::decode_incoming(value(r)?)? }
        }
        tag::DROP_INCOMING => StoreOp::DropIncoming { client: client(r)?, packet_id: r.packet_id()? },
        tag::WILL => {
            let client = client(r)?;
            StoreOp::Will { client, will: codec::decode_will(value(r)?)? }
        }
        tag::DROP_WILL => StoreOp::DropWill { client: client(r)? },
        tag::INBOX_READ => {
            let node = r.text()?.to_owned();
            StoreOp::InboxRead { node, shard: r.u16()?, run: r.u64()?, seq: r.u64()? }
        }
        other => return Err(r.error(format!("unknown operation {other}"))),
    };
    Ok(op)
}
