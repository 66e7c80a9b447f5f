//! An application message as the broker routes it.

use std::sync::Arc;

use bytes::Bytes;

use crate::codec::LastWill;
use crate::expiry;
use crate::peer::ListenerId;
use crate::time::UnixTime;
use crate::topic::TopicName;
use crate::types::{ClientId, QoS};

/// Who published a retained message: with `check_retain_source` it is
/// sent to a new subscriber only while this client may still publish on
/// its topic, as Mosquitto checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Publisher {
    /// Its client id.
    pub client_id: ClientId,
    /// Its user name.
    pub username: Option<Arc<str>>,
    /// The listener it was connected to.
    pub listener: ListenerId,
}

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
    /// Who published it, kept for retained messages only.
    pub publisher: Option<Arc<Publisher>>,
}

impl Message {
    /// A message, with its expiry read from the payload once.
    pub fn new(topic: TopicName, payload: Bytes, qos: QoS, retain: bool) -> Self {
        let expires_at = expiry::expires_at(&payload);
        Self { topic, payload, qos, retain, expires_at, publisher: None }
    }

    /// A message that never expires: its payload is not read.
    pub fn without_expiry(topic: TopicName, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Self { topic, payload, qos, retain, expires_at: None, publisher: None }
    }

    /// This message, published by `publisher` if it is retained.
    #[must_use]
    pub fn published_by(mut self, publisher: impl FnOnce() -> Publisher) -> Self {
        if self.retain {
            self.publisher = Some(Arc::new(publisher()));
        }
        self
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
