//! culex-core: the sans-IO heart of the Culex MQTT 3.1/3.1.1 broker.
//!
//! The whole broker — codec, sessions, QoS flows, routing, retained
//! messages, wills, keepalive, presence and payload expiry — is a pure
//! state machine. It consumes bytes and time and emits [`Action`]s. It
//! reads no clock, opens no socket and spawns nothing, so the same core
//! runs under tokio, async-std, a test or a simulation of thousands of
//! devices, and behaves the same everywhere.
//!
//! # Driving the broker
//!
//! A runtime (or a test) runs this loop:
//!
//! 1. On a new connection call [`Broker::accept`]; on bytes read call
//!    [`Broker::handle_input`] with [`Input::Received`]; on a connection
//!    ended by the peer or the network, [`Input::Closed`]; when the timer
//!    fires, [`Broker::handle_timeout`].
//! 2. Drain [`Broker::poll_action`] until it returns `None`, carrying out
//!    each action in order: [`Action::Send`] writes bytes,
//!    [`Action::Close`] closes after the writes before it,
//!    [`Action::MarkOnline`] / [`Action::MarkOffline`] go to the presence
//!    store (`HSET mqtt <id> 1` / `HDEL mqtt <id>`), and
//!    [`Action::Deliver`] / [`Action::DropExpired`] are there to observe.
//! 3. Arm one timer at [`Broker::poll_timeout`].
//!
//! One mutation, then one full drain: the core gathers the packets for a
//! connection into a single `Send` per drain, so a runtime writes once per
//! wake-up. Time ([`Now`]) carries a monotonic [`Instant`] for deadlines and
//! the wall clock ([`UnixTime`]) for `expired_at`; it must not go backwards.
//!
//! ```
//! use culex_core::{Action, Broker, Config, Input, Instant, Now, Peer, UnixTime};
//!
//! let mut broker = Broker::new(Config::default());
//! let now = Now::new(Instant::ZERO, UnixTime::from_secs_f64(1_700_000_000.0));
//! let conn = broker.accept(now, Peer::default());
//! // CONNECT, MQTT 3.1.1, clean session, keepalive 60, client id "a".
//! let connect = [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'a'];
//! broker.handle_input(now, Input::Received { conn, data: &connect });
//! let mut actions = Vec::new();
//! while let Some(action) = broker.poll_action() {
//!     actions.push(action);
//! }
//! assert!(matches!(&actions[0], Action::MarkOnline { client, .. } if client.as_str() == "a"));
//! assert!(matches!(&actions[1], Action::Send { data, .. } if data[..] == [0x20, 2, 0, 0]));
//! ```
//!
//! # Choices where the standard leaves one
//!
//! Where MQTT 3.1.1 allows several behaviours, the core does what
//! Mosquitto does, because clients and their tests rely on it:
//! - SUBACK is sent before the retained messages a SUBSCRIBE brings.
//! - Packet ids of outgoing messages count from 1 per session, skipping
//!   ids still in flight.
//! - DUP is 0 on a first delivery and 1 on a resend after reconnect.
//! - An incoming QoS 2 message is routed when its PUBREL arrives.
//! - A client's PUBLISH to `$SYS` is acknowledged and dropped.
//! - A payload above `message_size_limit` is acknowledged and dropped.
//! - QoS 0 messages are not queued for offline sessions unless
//!   `queue_qos0_messages` is set.
//! - An empty client id with clean session gets `auto-` and a UUID.
//! - MQTT 3.1 clients are held to 3.1's packet rules, not 3.1.1's, as
//!   Mosquitto 2.0 holds them: the fixed-header flags of their packets
//!   other than PUBLISH are not checked (3.1 sets DUP on a resent PUBREL,
//!   SUBSCRIBE or UNSUBSCRIBE), DUP on their QoS 0 PUBLISH is dropped, and
//!   the reserved CONNECT flag and will QoS and retain without a will are
//!   ignored (see [`codec`]). The rest applies to them as to 3.1.1
//!   clients, where Mosquitto 2.0 is laxer with 3.1 clients: a user name or
//!   password flag without its field, a user name that is not UTF-8, and
//!   a SUBSCRIBE or UNSUBSCRIBE without filters close the connection (3.1
//!   describes none of them as valid; Mosquitto ignores the first two and
//!   answers the third).
//! - A client asking for a keepalive above `max_keepalive` is refused
//!   with CONNACK 0x02.
//! - Overlapping subscriptions give one copy, at the highest granted QoS
//!   ([MQTT-3.3.5-1]), as Mosquitto 2.0 does.
//! - An acknowledgement of the wrong kind for a message in flight (PUBREC
//!   or PUBCOMP for QoS 1, PUBACK for QoS 2, PUBCOMP before PUBREL) is a
//!   protocol violation and closes the connection ([MQTT-4.8.0-1]); a
//!   PUBREC repeated after PUBREL is answered with PUBREL again. An
//!   acknowledgement for a packet id with nothing in flight is ignored
//!   (Mosquitto 2.0 answers a PUBREC there with PUBREL).
//!
//! # Where Culex differs from Mosquitto on purpose
//!
//! Where Mosquitto 2.0 breaks a specification, the core follows the
//! specification:
//! - On takeover the old connection's will is published, whatever the
//!   clean session flags: that connection ended without DISCONNECT
//!   ([MQTT-3.1.2-8]). Mosquitto 2.0 publishes none when both the old and
//!   the new connection keep a persistent session (clean session 0).
//! - MQTT 3.1 clients must send an id of 1 to 23 characters, as the 3.1
//!   specification says (Mosquitto 2.0 accepts longer ones).
//!
//! And one choice of the access policy's: a SUBSCRIBE whose filter matches
//! no topic the client may read gets 0x80, where Mosquitto grants a
//! subscription that can deliver nothing
//! ([`FilterAccess`](policy::FilterAccess)).
#![warn(missing_docs)]

mod action;
pub mod auth;
pub mod bridge;
mod broker;
mod children;
pub mod client;
pub mod codec;
pub mod conf;
mod config;
pub mod congestion;
pub mod error;
pub mod expiry;
pub mod http_api;
mod ids;
pub mod log_type;
pub mod memory;
mod message;
pub mod occupancy;
mod peer;
pub mod persistence;
pub mod policy;
pub mod presence;
pub mod retained;
pub mod router;
pub mod server;
mod session;
pub mod shard;
pub mod sim;
pub mod sys;
pub mod time;
mod timer;
pub mod topic;
pub mod types;

pub use action::{Action, Input};
pub use broker::{Broker, ConnectedClient, Counts, Drops, Restorer, SessionInfo, ShardRestorer, Stats};
pub use config::{ClientIdRules, Config, ListenerRules, ListenerSummary};
pub use error::{CloseReason, Violation};
pub use message::{Message, Publisher};
pub use peer::{Identity, ListenerId, Peer, Remote};
pub use time::{Instant, Now, UnixTime};
pub use topic::{TopicFilter, TopicName};
pub use types::{Ack, ClientId, ConnId, ConnIdMap, PacketId, Protocol, QoS};
