//! What goes into the broker and what comes out.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use crate::congestion::WriterProgress;
use crate::error::CloseReason;
use crate::message::Message;
use crate::peer::ListenerId;
use crate::persistence::StoreBatch;
use crate::policy::{Password, Refusal};
use crate::shard::{ShardId, ShardMessage};
use crate::types::{ClientId, ConnId, PacketId, QoS};

/// An event from the network, handed to
/// [`Broker::handle_input`](crate::Broker::handle_input).
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Bytes read from a connection, exactly as read: frames may be split
    /// or merged anyhow.
    Received {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        data: &'a [u8],
    },
    /// The connection ended on its own (peer closed it, network error).
    Closed {
        /// The connection.
        conn: ConnId,
    },
    /// The connection's writer holds more than the runtime allows: the
    /// client does not read what it is sent. It is closed without waiting
    /// for the socket to drain, and its will is published.
    NotReading {
        /// The connection.
        conn: ConnId,
    },
    /// The answer to [`Action::Authenticate`].
    Authenticated {
        /// The connection that asked.
        conn: ConnId,
        /// Accepted, or refused with a CONNACK code.
        result: Result<(), Refusal>,
    },
    /// Where the connection's writer stands against
    /// [`max_unwritten_bytes`](crate::Config::max_unwritten_bytes) (see
    /// [`congestion`](crate::congestion)).
    Writer {
        /// The connection.
        conn: ConnId,
        /// What changed.
        progress: WriterProgress,
    },
    /// Every [`Action::Store`] batch up to `seq` is on disk: the packets
    /// waiting for them go out.
    Stored {
        /// The last batch committed.
        seq: u64,
    },
    /// A message the broker publishes itself, from no client (Mosquitto's
    /// `$SYS/broker/log/...` lines of `log_dest topic`): routed to every
    /// matching subscription as a client's PUBLISH would be. A topic that
    /// is not a valid topic name is dropped.
    Publish {
        /// The topic name.
        topic: &'a str,
        /// The payload.
        payload: &'a [u8],
        /// The QoS it is published at.
        qos: QoS,
        /// Kept as the topic's retained message.
        retain: bool,
    },
}

/// Something the runtime must do or may observe, drained with
/// [`Broker::poll_action`](crate::Broker::poll_action) in order.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write these bytes to the connection. All packets produced for one
    /// connection by one `handle_*` call come as one `Send`.
    Send {
        /// The connection.
        conn: ConnId,
        /// Encoded packets.
        data: Bytes,
    },
    /// Close the connection after writing what was sent before. The core
    /// has forgotten it; further input for it is ignored.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// A message went out to a client (first deliveries, not resends).
    /// With persistence, its bytes to a persistent session wait in the
    /// core until the store has its packet id (see
    /// [`persistence`](crate::persistence)); should the connection end
    /// first, the copy stays in flight and is resent on reconnect.
    Deliver {
        /// The receiving client.
        client: ClientId,
        /// Its connection.
        conn: ConnId,
        /// The message.
        message: Arc<Message>,
        /// QoS of this copy.
        qos: QoS,
        /// Packet id of this copy (QoS 1 and 2).
        packet_id: Option<PacketId>,
    },
    /// The client is online: `HSET mqtt <client> 1`. Comes before its
    /// CONNACK is sent.
    MarkOnline {
        /// The client.
        client: ClientId,
        /// Its new connection.
        conn: ConnId,
    },
    /// The client's connection ended: `HDEL mqtt <client>`. On takeover it
    /// comes before the new connection's `MarkOnline`.
    MarkOffline {
        /// The client.
        client: ClientId,
        /// The connection that ended.
        conn: ConnId,
    },
    /// Check these credentials off the broker's thread (the policy said
    /// [`AuthDecision::Defer`](crate::policy::AuthDecision::Defer)) and
    /// answer with [`Input::Authenticated`]. The connection waits; no other
    /// does.
    Authenticate {
        /// The connection waiting.
        conn: ConnId,
        /// Its client id.
        client: ClientId,
        /// The user name from CONNECT.
        username: Option<ByteString>,
        /// The password from CONNECT.
        password: Option<Password>,
        /// The listener it came in on: whose password file applies.
        listener: ListenerId,
    },
    /// Stop reading the connection's socket: a subscriber it publishes to
    /// cannot keep up (see [`congestion`](crate::congestion)). Bytes
    /// already read are still handed in.
    PauseReading {
        /// The connection.
        conn: ConnId,
    },
    /// Read the connection's socket again.
    ResumeReading {
        /// The connection.
        conn: ConnId,
    },
    /// Commit these changes to the store, after every batch before it,
    /// and answer with [`Input::Stored`] once they are durable (see
    /// [`persistence`](crate::persistence)). Comes last in a drain, and
    /// only with [`Config::persistence`](crate::Config) on.
    Store {
        /// The changes.
        batch: StoreBatch,
    },
    /// Hand `message` to shard `to`, after everything handed to it before
    /// (one queue per pair of shards); it answers with
    /// [`Broker::handle_shard_message`](crate::Broker::handle_shard_message).
    /// Only from a broker given a place among shards
    /// ([`Broker::join_shards`](crate::Broker::join_shards)).
    ToShard {
        /// The receiving shard.
        to: ShardId,
        /// What it is told.
        message: ShardMessage,
    },
    /// A copy was not sent because its `expired_at` had passed.
    DropExpired {
        /// The client it was meant for.
        client: ClientId,
        /// The message.
        message: Arc<Message>,
    },
}
