//! A reference model of an MQTT 3.1.1 broker, at the level of what its
//! clients observe.
//!
//! [`Model`] is small, slow and meant to be read next to the standard:
//! sessions are plain maps and lists, topics are matched level by level,
//! and every rule cites the statement of `spec/statements.toml` it comes
//! from. It shares no code with `culex-core`. Each operation (a client
//! connects, subscribes, publishes, acknowledges, disconnects or drops;
//! time passes) returns the packets each connection must observe because
//! of it, in order ([`Seen`]); [`differential`](crate::differential) runs
//! the same operations through the core's simulation and compares.
//!
//! Where the standard allows several outcomes, the model keeps to the one
//! Culex documents (its crate docs: Mosquitto's choices), and says so in a
//! rule marked *Choice*. Two of them are settings ([`Choices`]), so the
//! model can also play the other brokers the standard allows;
//! [`Choices::CULEX`] is what the core is compared with:
//! - overlapping subscriptions give one copy at the highest QoS
//!   ([MQTT-3.3.5-1] allows one per subscription too, [`Overlap`]);
//! - SUBACK comes before the retained messages it brings, which come in
//!   topic-name order ([MQTT-3.8.4-4] and [MQTT-3.3.1-6] fix neither);
//! - an incoming QoS 2 message is routed on PUBREL ([MQTT-4.3.3-2] allows
//!   routing on PUBLISH, [`Qos2Routing`]);
//! - QoS 0 copies go out at once to a connected subscriber, past the
//!   queue of QoS 1 and 2 copies waiting for the in-flight window
//!   ([MQTT-4.6.0-6] orders copies of the same QoS only), and are not
//!   kept for a disconnected one ([MQTT-3.1.2-5] asks it for QoS 1 and 2
//!   only);
//! - the will of a connection taken over is published
//!   ([MQTT-3.1.2-8]: it ended without DISCONNECT), before the new
//!   connection's session is set up;
//! - copies in flight and queued stay in the session when their
//!   subscription is removed ([MQTT-3.10.4-3]);
//! - a client's own PUBLISH is answered (PUBACK, PUBCOMP) after the copies
//!   it gives are routed;
//! - connections whose keepalive runs out at the same moment
//!   ([MQTT-3.1.2-24]) are closed in the order they were made.
//!
//! Beyond the standard, the payload expiry of `DESIGN.md`: a message whose
//! payload's `expired_at` has come is not sent for the first time (at
//! once, out of the queue, or as a retained message), nor again on a
//! resumed session; a PUBREL, which carries no message, still goes.
//!
//! What the model leaves out is listed in `spec/MODEL.md`: limits (queue
//! length, message size, memory), access control, PINGREQ, session
//! expiry, MQTT 3.1 and the packet identifiers the broker picks (the
//! comparison maps them).

mod broker;
mod topic;

pub use broker::{AckKind, Choices, Endpoint, Key, Message, Model, Overlap, Qos2Routing, Seen, Will};
pub use topic::matches;
