//! An application message as the broker routes it.

use bytes::Bytes;

use crate::codec::LastWill;
use crate::expiry;
use crate::time::UnixTime;
use crate::topic::TopicName;
use crate::types::QoS;

/// A published message, shared (behind an `Arc`) by every copy routed.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Topic it was published on.
    pub topic: TopicName,
    /// Payload bytes.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// It was published with RETAIN set.
    pub retain: bool,
    /// `expired_at` read from a JSON payload, in Unix seconds.
    pub expires_at: Option<f64>,
}

impl Message {
    /// A message, with its expiry read from the payload once.
    pub fn new(topic: TopicName, payload: Bytes, qos: QoS, retain: bool) -> Self {
        let expires_at = expiry::expires_at(&payload);
        Self { topic, payload, qos, retain, expires_at }
    }

    /// A message that never expires: its payload is not read.
    pub fn without_expiry(topic: TopicName, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Self { topic, payload, qos, retain, expires_at: None }
    }

    /// The message a will becomes when it is published, its expiry read
    /// if `expiry`.
    pub fn from_will(will: LastWill, expiry: bool) -> Self {
        if expiry {
            Self::new(will.topic, will.payload, will.qos, will.retain)
        } else {
            Self::without_expiry(will.topic, will.payload, will.qos, will.retain)
        }
    }

    /// Whether this copy may no longer be sent at `now`.
    pub fn is_expired(&self, now: UnixTime) -> bool {
        expiry::is_expired(self.expires_at, now)
    }
}
