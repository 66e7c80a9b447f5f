//! The broker's figures: counters bumped on the paths that do what they
//! count, and gauges read from what the broker holds. `$SYS` publishes
//! them (see [`sys`](crate::sys)); an exporter reads [`Broker::stats`].

use super::Broker;
use crate::message::Message;
use crate::session::Held;
use crate::types::QoS;

/// Events counted since the broker started (not kept across restarts):
/// each is a plain increment where the event happens.
///
/// Packets and bytes are those the core decodes and encodes, on client
/// connections and on the local side of the broker's own bridges (whose
/// traffic with their remote brokers is counted per bridge under
/// `$SYS/broker/bridge/<name>/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Connections handed to the broker, those refused at once for a
    /// connection limit included. Mosquitto: `load/sockets`.
    pub sockets_accepted: u64,
    /// CONNECT packets received (the first of each connection).
    /// Mosquitto: `load/connections`.
    pub connects: u64,
    /// MQTT packets of every type decoded. Mosquitto: `messages/received`.
    pub packets_received: u64,
    /// MQTT packets of every type encoded for a connection. Mosquitto:
    /// `messages/sent`.
    pub packets_sent: u64,
    /// Bytes read from connections. Mosquitto: `bytes/received`.
    pub bytes_received: u64,
    /// Bytes handed to the runtime to write. Mosquitto: `bytes/sent`.
    pub bytes_sent: u64,
    /// PUBLISH packets received, by QoS (index 0, 1, 2).
    pub publish_received: [u64; 3],
    /// Payload bytes of the PUBLISH packets received, by QoS.
    pub publish_received_bytes: [u64; 3],
    /// PUBLISH packets sent, resends included, by QoS.
    pub publish_sent: [u64; 3],
    /// Payload bytes of the PUBLISH packets sent, by QoS.
    pub publish_sent_bytes: [u64; 3],
    /// Messages and copies not delivered, by cause.
    pub dropped: Drops,
    /// Offline sessions removed by `persistent_client_expiration`.
    /// Mosquitto: `clients/expired`.
    pub sessions_expired: u64,
    /// CONNECTs refused because their credentials did not pass: a wrong
    /// password or an unknown user (CONNACK 5, as Mosquitto 2 answers),
    /// a client certificate without a name (CONNACK 4).
    pub auth_bad_credentials: u64,
    /// CONNECTs refused without a credential check (CONNACK 5): no user
    /// name where `allow_anonymous` is false, a client id outside
    /// `clientid_prefixes`, no user name under `use_username_as_clientid`.
    pub auth_not_authorised: u64,
    /// PUBLISH packets (and wills) the access policy did not let through.
    pub acl_denied_publish: u64,
    /// SUBSCRIBE filters the access policy refused (0x80 in SUBACK).
    pub acl_denied_subscribe: u64,
    /// Connections closed for silence past 1.5 times their keepalive.
    pub keepalive_timeouts: u64,
}

/// Messages and copies not delivered, by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drops {
    /// QoS 1/2 copies with no room in a session's queue
    /// (`max_queued_messages`, `max_queued_bytes`), and QoS 0 copies for
    /// a full offline queue with `queue_qos0_messages`.
    pub queue_full: u64,
    /// QoS 0 copies for a client whose socket has more than
    /// `max_unwritten_bytes` waiting ([flow control](crate::congestion)).
    pub slow_reader: u64,
    /// Copies not sent because their `expired_at` had passed.
    pub expired: u64,
    /// PUBLISH payloads above `message_size_limit` (acknowledged, then
    /// dropped).
    pub too_large: u64,
    /// Messages and copies dropped past `memory_limit`.
    pub out_of_memory: u64,
}

/// Broker-wide figures: the [`Counts`] and what the broker holds now.
///
/// Sizes are counts of things held; bytes are payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Open network connections, those that have not sent CONNECT yet
    /// included.
    pub connections: usize,
    /// Connections whose CONNECT was accepted: connected clients.
    /// Mosquitto: `clients/connected` (which also counts sockets that
    /// have not sent CONNECT yet).
    pub clients_connected: usize,
    /// The most clients connected at once since start.
    pub clients_connected_max: usize,
    /// Sessions held, connected or not. Mosquitto: `clients/total`.
    pub sessions: usize,
    /// The most sessions held at once since start. Mosquitto:
    /// `clients/maximum`.
    pub sessions_max: usize,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// Retained messages held, the broker's own `$SYS` figures included
    /// (as in Mosquitto).
    pub retained: usize,
    /// Payload bytes of the retained messages.
    pub retained_bytes: u64,
    /// QoS 1/2 copies sent to clients and not yet completed.
    pub inflight: usize,
    /// Payload bytes of the copies in flight.
    pub inflight_bytes: u64,
    /// Copies waiting in sessions' queues, behind the in-flight window
    /// or for their client to come back.
    pub queued: usize,
    /// Payload bytes of the queued copies.
    pub queued_bytes: u64,
    /// Incoming QoS 2 messages held until their PUBREL.
    pub awaiting_pubrel: usize,
    /// Payload bytes of the messages awaiting PUBREL.
    pub awaiting_pubrel_bytes: u64,
    /// Store batches handed to the runtime and not yet durable; `None`
    /// without persistence.
    pub store_batches_pending: Option<u64>,
    /// What happened since start.
    pub counts: Counts,
}

impl Stats {
    /// Messages held: retained, in flight, queued and awaiting PUBREL.
    /// Mosquitto: `messages/stored`, which counts each message once
    /// however many sessions hold it; here each copy counts.
    pub fn stored(&self) -> usize {
        self.retained + self.inflight + self.queued + self.awaiting_pubrel
    }

    /// Payload bytes of [`stored`](Self::stored). Mosquitto:
    /// `store/messages/bytes`.
    pub fn stored_bytes(&self) -> u64 {
        self.retained_bytes + self.inflight_bytes + self.queued_bytes + self.awaiting_pubrel_bytes
    }
}

impl Stats {
    /// Takes in another shard's figures (see [`shard`](crate::shard)):
    /// what each shard holds and counts adds up; retained messages do not,
    /// every shard holding all of them. The maxima are each shard's own,
    /// at least: the summed peaks are sampled where the totals are made
    /// ([`Broker::totals`]).
    pub(crate) fn absorb(&mut self, other: &Self) {
        // Named field by field: a new figure must say how it adds up.
        let Self {
            connections,
            clients_connected,
            clients_connected_max,
            sessions,
            sessions_max,
            subscriptions,
            retained: _,
            retained_bytes: _,
            inflight,
            inflight_bytes,
            queued,
            queued_bytes,
            awaiting_pubrel,
            awaiting_pubrel_bytes,
            store_batches_pending,
            counts,
        } = other;
        self.connections += connections;
        self.clients_connected += clients_connected;
        self.clients_connected_max = self.clients_connected_max.max(*clients_connected_max);
        self.sessions += sessions;
        self.sessions_max = self.sessions_max.max(*sessions_max);
        self.subscriptions += subscriptions;
        self.inflight += inflight;
        self.inflight_bytes += inflight_bytes;
        self.queued += queued;
        self.queued_bytes += queued_bytes;
        self.awaiting_pubrel += awaiting_pubrel;
        self.awaiting_pubrel_bytes += awaiting_pubrel_bytes;
        self.store_batches_pending = match (self.store_batches_pending, store_batches_pending) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(*b),
        };
        self.counts.absorb(counts);
    }
}

impl Counts {
    /// Adds `other`'s counts.
    fn absorb(&mut self, other: &Self) {
        let sum = |a: &mut [u64; 3], b: &[u64; 3]| a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        let Self {
            sockets_accepted,
            connects,
            packets_received,
            packets_sent,
            bytes_received,
            bytes_sent,
            publish_received,
            publish_received_bytes,
            publish_sent,
            publish_sent_bytes,
            dropped: Drops { queue_full, slow_reader, expired, too_large, out_of_memory },
            sessions_expired,
            auth_bad_credentials,
            auth_not_authorised,
            acl_denied_publish,
            acl_denied_subscribe,
            keepalive_timeouts,
        } = other;
        self.sockets_accepted += sockets_accepted;
        self.connects += connects;
        self.packets_received += packets_received;
        self.packets_sent += packets_sent;
        self.bytes_received += bytes_received;
        self.bytes_sent += bytes_sent;
        sum(&mut self.publish_received, publish_received);
        sum(&mut self.publish_received_bytes, publish_received_bytes);
        sum(&mut self.publish_sent, publish_sent);
        sum(&mut self.publish_sent_bytes, publish_sent_bytes);
        self.dropped.queue_full += queue_full;
        self.dropped.slow_reader += slow_reader;
        self.dropped.expired += expired;
        self.dropped.too_large += too_large;
        self.dropped.out_of_memory += out_of_memory;
        self.sessions_expired += sessions_expired;
        self.auth_bad_credentials += auth_bad_credentials;
        self.auth_not_authorised += auth_not_authorised;
        self.acl_denied_publish += acl_denied_publish;
        self.acl_denied_subscribe += acl_denied_subscribe;
        self.keepalive_timeouts += keepalive_timeouts;
    }

    /// PUBLISH packets received, all QoS.
    pub fn publish_received_total(&self) -> u64 {
        self.publish_received.iter().sum()
    }

    /// PUBLISH packets sent, all QoS.
    pub fn publish_sent_total(&self) -> u64 {
        self.publish_sent.iter().sum()
    }

    /// Payload bytes received in PUBLISH packets, all QoS.
    pub fn publish_received_bytes_total(&self) -> u64 {
        self.publish_received_bytes.iter().sum()
    }

    /// Payload bytes sent in PUBLISH packets, all QoS.
    pub fn publish_sent_bytes_total(&self) -> u64 {
        self.publish_sent_bytes.iter().sum()
    }

    /// Copies dropped for lack of room: Mosquitto's
    /// `publish/messages/dropped`.
    pub fn dropped_for_room(&self) -> u64 {
        self.dropped.queue_full + self.dropped.slow_reader
    }

    /// Counts a PUBLISH received at `qos` with `payload` bytes.
    pub(super) fn publish_in(&mut self, qos: QoS, payload: usize) {
        let at = usize::from(qos.bits());
        self.publish_received[at] += 1;
        self.publish_received_bytes[at] += payload as u64;
    }
}

/// Gauges the broker keeps as they change, where reading them would
/// cost a walk over every connection or message.
#[derive(Debug, Default)]
pub(super) struct Gauges {
    /// Connections whose CONNECT was accepted.
    pub(super) connected: usize,
    pub(super) connected_max: usize,
    pub(super) sessions_max: usize,
    /// Payload bytes of the retained messages.
    pub(super) retained_bytes: u64,
}

impl Gauges {
    /// A retained message `added` (if any) replaced `removed` (if any).
    pub(super) fn retained(&mut self, added: Option<&Message>, removed: Option<&Message>) {
        let bytes = |m: Option<&Message>| m.map_or(0, |m| m.payload.len() as u64);
        self.retained_bytes = (self.retained_bytes + bytes(added)).saturating_sub(bytes(removed));
    }

    /// One more connected client.
    pub(super) fn connected(&mut self) {
        self.connected += 1;
        self.connected_max = self.connected_max.max(self.connected);
    }
}

impl Broker {
    /// The figures of every shard together (see [`shard`](crate::shard)),
    /// at shard 0: its own with the others' last reports; each other
    /// shard's own, and a broker alone's, as [`stats`](Self::stats).
    pub fn totals(&self) -> Stats {
        let own = self.stats();
        match self.shards.as_ref() {
            Some(shards) => shards.totals(own),
            None => own,
        }
    }

    /// Broker-wide figures as they stand.
    ///
    /// The counts and most gauges are read as kept; what sessions hold
    /// (in flight, queued, awaiting PUBREL) is summed over every session,
    /// a walk of a few milliseconds per 100,000 sessions: fine for each
    /// `$SYS` update or a scrape, not for every message.
    pub fn stats(&self) -> Stats {
        let held = self.sessions.iter().fold(Held::default(), |sum, session| sum + session.held());
        Stats {
            connections: self.conns.len(),
            clients_connected: self.gauges.connected,
            clients_connected_max: self.gauges.connected_max,
            sessions: self.sessions.len(),
            // Restored sessions arrive without a connection: counted here.
            sessions_max: self.gauges.sessions_max.max(self.sessions.len()),
            subscriptions: self.subscriptions.len(),
            retained: self.retained.len(),
            retained_bytes: self.gauges.retained_bytes,
            inflight: held.inflight,
            inflight_bytes: held.inflight_bytes as u64,
            queued: held.queued,
            queued_bytes: held.queued_bytes as u64,
            awaiting_pubrel: held.incoming,
            awaiting_pubrel_bytes: held.incoming_bytes as u64,
            store_batches_pending: self.journal.as_ref().map(|j| j.unconfirmed()),
            counts: Counts {
                packets_sent: self.dirty.packets,
                publish_sent: self.dirty.publish,
                publish_sent_bytes: self.dirty.publish_bytes,
                ..self.counts
            },
        }
    }
}
