//! Authentication and authorisation as pure decisions. The file formats
//! (`password_file`, `acl_file`) plug in here; the core only asks.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::ConnectReturnCode;
use crate::message::Publisher;
use crate::peer::ListenerId;
use crate::topic::{TopicFilter, TopicName};
use crate::types::ClientId;

/// Who is asking, as far as access decisions go.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// The client id (assigned, if the client sent none).
    pub client_id: &'a ClientId,
    /// The user name from CONNECT.
    pub username: Option<&'a str>,
    /// The listener the client connected on.
    pub listener: ListenerId,
}

impl ClientInfo<'_> {
    /// The client as the publisher of a retained message.
    pub fn publisher(&self) -> Publisher {
        Publisher { client_id: self.client_id.clone(), username: self.username.map(Arc::from), listener: self.listener }
    }
}

impl Publisher {
    /// The client that published, as the policy judges clients.
    pub fn info(&self) -> ClientInfo<'_> {
        ClientInfo { client_id: &self.client_id, username: self.username.as_deref(), listener: self.listener }
    }
}

/// A password from CONNECT, on its way to be checked: never shown by
/// `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Bytes);

impl Password {
    /// Wraps the password bytes.
    pub fn new(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The bytes, for the check itself.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a CONNECT is refused: the two CONNACK codes that mean "not you".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// CONNACK 0x04.
    BadUserNameOrPassword,
    /// CONNACK 0x05.
    NotAuthorized,
}

impl From<Refusal> for ConnectReturnCode {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::BadUserNameOrPassword => Self::BadUserNameOrPassword,
            Refusal::NotAuthorized => Self::NotAuthorized,
        }
    }
}

/// The answer to a CONNECT's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthDecision {
    /// Accepted.
    Allow,
    /// Refused with this CONNACK code.
    Refuse(Refusal),
    /// Too costly to decide on the broker's thread (a password hash):
    /// the broker emits [`Action::Authenticate`](crate::Action::Authenticate)
    /// and waits, for this connection only, for
    /// [`Input::Authenticated`](crate::Input::Authenticated).
    Defer,
}

/// Decides who may connect, subscribe and publish. Every method is a pure
/// decision: no I/O, no clock.
pub trait AccessPolicy: fmt::Debug + Send {
    /// Whether the CONNECT of `client` with `password` is accepted. Every
    /// CONNECT is asked about, anonymous ones included: `allow_anonymous`
    /// is the policy's to apply, as it may differ per listener.
    fn authenticate(&self, client: ClientInfo<'_>, password: Option<&Bytes>) -> AuthDecision;

    /// How much of what `filter` can match `client` may read: a
    /// [`FilterAccess::Denied`] filter is answered with 0x80 in SUBACK,
    /// the others are granted.
    fn filter_access(&self, client: ClientInfo<'_>, filter: &TopicFilter) -> FilterAccess;

    /// Whether a message on `topic` may be delivered to `client`: asked at
    /// delivery, only for subscriptions whose filter was judged
    /// [`FilterAccess::Partial`].
    fn may_read(&self, client: ClientInfo<'_>, topic: &TopicName) -> bool;

    /// Whether `client` may publish on `topic`; a refused PUBLISH is
    /// acknowledged as usual and dropped ([MQTT-3.3.5-2]).
    fn may_publish(&self, client: ClientInfo<'_>, topic: &TopicName) -> bool;

    /// Whether `listener` checks passwords (has a password file): the
    /// HTTP API then asks every request for credentials, and serves only
    /// loopback peers otherwise.
    fn checks_passwords(&self, _listener: ListenerId) -> bool {
        false
    }
}

/// A policy that lets the broker's own bridges ([`ListenerId::BRIDGES`])
/// do anything, as Mosquitto does (`if(context->bridge) return
/// MOSQ_ERR_SUCCESS;`), and asks `inner` about everyone else.
#[derive(Debug)]
pub(crate) struct TrustBridges(pub(crate) Box<dyn AccessPolicy>);

impl AccessPolicy for TrustBridges {
    fn authenticate(&self, client: ClientInfo<'_>, password: Option<&Bytes>) -> AuthDecision {
        match client.listener {
            ListenerId::BRIDGES => AuthDecision::Allow,
            _ => self.0.authenticate(client, password),
        }
    }

    fn filter_access(&self, client: ClientInfo<'_>, filter: &TopicFilter) -> FilterAccess {
        match client.listener {
            ListenerId::BRIDGES => FilterAccess::Whole,
            _ => self.0.filter_access(client, filter),
        }
    }

    fn may_read(&self, client: ClientInfo<'_>, topic: &TopicName) -> bool {
        client.listener == ListenerId::BRIDGES || self.0.may_read(client, topic)
    }

    fn may_publish(&self, client: ClientInfo<'_>, topic: &TopicName) -> bool {
        client.listener == ListenerId::BRIDGES || self.0.may_publish(client, topic)
    }

    fn checks_passwords(&self, listener: ListenerId) -> bool {
        self.0.checks_passwords(listener)
    }
}

/// How much of what a filter can match a client may read: decides the
/// SUBACK and whether the subscription's messages are checked one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterAccess {
    /// Every topic the filter matches: granted, and its messages are
    /// delivered without a check.
    Whole,
    /// Some topics, perhaps not all: granted, and each message is checked
    /// with [`AccessPolicy::may_read`] before it is delivered (Mosquitto
    /// checks every message so).
    Partial,
    /// No topic at all: refused with 0x80 in SUBACK.
    Denied,
}

/// Lets everyone do everything, except publish into `$SYS`, which only
/// the broker writes (as Mosquitto).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl AccessPolicy for AllowAll {
    fn authenticate(&self, _: ClientInfo<'_>, _: Option<&Bytes>) -> AuthDecision {
        AuthDecision::Allow
    }

    fn filter_access(&self, _: ClientInfo<'_>, _: &TopicFilter) -> FilterAccess {
        FilterAccess::Whole
    }

    fn may_read(&self, _: ClientInfo<'_>, _: &TopicName) -> bool {
        true
    }

    fn may_publish(&self, _: ClientInfo<'_>, topic: &TopicName) -> bool {
        !is_sys_write_banned(topic)
    }
}

/// `$SYS` and everything below it.
pub fn is_sys_topic(topic: &TopicName) -> bool {
    let name = topic.as_str();
    name == "$SYS" || name.starts_with("$SYS/")
}

/// Whether clients may not publish on `topic`: `$SYS` is the broker's,
/// except `$SYS/broker/connection/<name>/state`, where a bridge from
/// another broker publishes its state (as Mosquitto allows).
pub fn is_sys_write_banned(topic: &TopicName) -> bool {
    let bridge_state = topic
        .as_str()
        .strip_prefix("$SYS/broker/connection/")
        .and_then(|rest| rest.strip_suffix("/state"))
        .is_some_and(|name| !name.contains('/'));
    is_sys_topic(topic) && !bridge_state
}
