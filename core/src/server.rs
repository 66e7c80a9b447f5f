//! What every runtime does with the broker's actions, written once.
//!
//! [`Server`] wraps a [`Broker`] and a [`PresenceSync`] and carries out the
//! actions itself: bytes and closes go to the connection's [`Outbox`] (a
//! runtime's non-blocking handle to its writer), presence changes to the
//! presence state machine (or only to the log when no Redis is
//! configured). A runtime is then only sockets, timers and Redis calls.

mod http;

use http::Asked;

use bytes::Bytes;
use bytestring::ByteString;
use tracing::info;

use crate::action::{Action, Input};
use crate::bridge::{Bridge, BridgeId, Dial, RemoteOp, figures};
use crate::broker::Broker;
use crate::conf::BridgeConf;
use crate::congestion::WriterProgress;
use crate::error::CloseReason;
use crate::http_api::Exchanges;
use crate::http_api::clients::Arrival;
use crate::peer::{ListenerId, Peer};
use crate::persistence::StoreBatch;
use crate::policy::{AccessPolicy, ClientInfo, Password, Refusal};
use crate::presence::PresenceSync;
use crate::shard::{ShardBus, ShardId, ShardMessage};
use crate::sys::{self, Periodic, Value};
use crate::time::{Instant, Now};
use crate::types::{ClientId, ConnId, ConnIdMap, QoS};

/// A runtime's handle to one connection's writer and reader. Every method
/// must return at once: the core never waits for a socket.
pub trait Outbox {
    /// Queues bytes for the socket, in order. Says when they put the
    /// writer behind its budget ([`WriterProgress::Behind`], once per
    /// episode; the runtime reports the rest of the episode as
    /// [`Input::Writer`]), or that the client has fallen so far behind
    /// that the bytes were dropped (the connection is then closed with
    /// [`CloseReason::NotReading`]).
    fn send(&mut self, data: Bytes) -> Result<Option<WriterProgress>, OutboxFull>;

    /// Writes what is queued, then closes the socket; for
    /// [`CloseReason::NotReading`] closes it at once, dropping the queue.
    fn close(&mut self, reason: CloseReason);

    /// Stops reading the socket (`true`) or reads it again (`false`);
    /// see [`Action::PauseReading`].
    fn pause_reading(&mut self, paused: bool);
}

/// A connection's writer holds all the runtime allows: its client does not
/// read what it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client is not reading its messages")]
pub struct OutboxFull;

/// Credentials to check off the broker's thread; answer with
/// [`Server::authenticated`].
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// The connection waiting.
    pub conn: ConnId,
    /// Its client id.
    pub client: ClientId,
    /// The user name from CONNECT.
    pub username: Option<ByteString>,
    /// The password from CONNECT.
    pub password: Option<Password>,
    /// The listener it came in on: whose password file applies.
    pub listener: ListenerId,
}

/// A broker with its connections' outboxes and its presence store.
#[derive(Debug)]
pub struct Server<O> {
    broker: Broker,
    presence: Option<PresenceSync>,
    outboxes: ConnIdMap<O>,
    auth_requests: Vec<AuthRequest>,
    store_batches: Vec<StoreBatch>,
    /// What the broker tells other shards, in order, until the runtime
    /// takes it; unused once `shard_bus` is set.
    shard_out: Vec<(ShardId, ShardMessage)>,
    /// Carries what the broker tells other shards as it is told.
    shard_bus: Option<Box<dyn ShardBus>>,
    /// The bridges, in the order they were started (few: looked up by
    /// a scan).
    bridges: Vec<Bridge>,
    next_bridge: u64,
    /// When the bridges' and the presence link's `$SYS` figures go out,
    /// and what they said.
    figures: Periodic,
    /// The connections of `http_api` listeners.
    http: Exchanges,
    /// What the HTTP API asked the other shards, waiting for answers.
    asked: Asked,
    /// Where and when each MQTT client connected, for the HTTP API's list
    /// of clients: `None` (and free) without an `http_api` listener.
    arrivals: Option<ConnIdMap<Arrival>>,
}

impl<O: Outbox> Server<O> {
    /// A server around `broker`; `presence` is `None` when presence goes
    /// only to the log.
    pub fn new(broker: Broker, presence: Option<PresenceSync>) -> Self {
        let http_api = broker.config().listeners.iter().any(|l| broker.config().is_http_api(l.id));
        Self {
            broker,
            presence,
            outboxes: ConnIdMap::default(),
            auth_requests: Vec::new(),
            store_batches: Vec::new(),
            shard_out: Vec::new(),
            shard_bus: None,
            bridges: Vec::new(),
            next_bridge: 1,
            figures: Periodic::default(),
            http: Exchanges::default(),
            asked: Asked::default(),
            arrivals: http_api.then(ConnIdMap::default),
        }
    }

    /// A server around a broker that was just restored from a store (see
    /// [`Restorer`](crate::Restorer)): what the restore queued (the
    /// store's first batch, the deliveries of the wills it published) is
    /// taken at once.
    pub fn restored(now: Now, broker: Broker, presence: Option<PresenceSync>) -> Self {
        let mut server = Self::new(broker, presence);
        server.drain(now);
        server
    }

    /// A new connection from `peer`, written to through `outbox`.
    pub fn accept(&mut self, now: Now, peer: Peer, outbox: O) -> ConnId {
        let conn = self.broker.new_conn_id();
        self.accept_as(now, conn, peer, outbox);
        conn
    }

    /// A new connection under an id the runtime chose (see
    /// [`Broker::accept_as`]).
    pub fn accept_as(&mut self, now: Now, conn: ConnId, peer: Peer, outbox: O) {
        if self.broker.config().is_http_api(peer.listener) {
            return self.http_open(now, conn, peer, outbox);
        }
        self.note_arrival(conn, &peer);
        self.broker.accept_as(now, conn, peer);
        self.outboxes.insert(conn, outbox);
        self.start_presence_figures(now);
        self.drain(now);
    }

    /// The presence link's figures go out from the first connection on,
    /// as the broker's do.
    fn start_presence_figures(&mut self, now: Now) {
        if self.presence.is_some() {
            self.figures.start(now.instant, self.broker.config().sys_interval);
        }
    }

    /// Bytes read from `conn`.
    pub fn received(&mut self, now: Now, conn: ConnId, data: &[u8]) {
        if self.http.contains(conn) {
            return self.http_received(now, conn, data);
        }
        match self.bridge_on(conn) {
            Some(at) => self.bridges[at].remote_received(now, &mut self.broker, data),
            None => self.broker.handle_input(now, Input::Received { conn, data }),
        }
        self.drain(now);
    }

    /// What other shards say, each message with its sender (see
    /// [`shard`](crate::shard)): handled together, so that what they
    /// bring a connection goes out as one write.
    pub fn shard_messages(&mut self, now: Now, messages: impl IntoIterator<Item = (ShardId, ShardMessage)>) {
        for (from, message) in messages {
            match message {
                ShardMessage::Api(message) => self.http_shard_message(now, from, message),
                message => self.broker.handle_shard_message(now, from, message),
            }
        }
        self.drain(now);
    }

    /// What the broker told other shards since the last call, in order,
    /// for the caller to carry (one queue per pair of shards); empty
    /// unless the broker was made a shard ([`Broker::join_shards`]), or
    /// once [`post_shard_messages`](Self::post_shard_messages) was called.
    pub fn poll_shard_messages(&mut self) -> Vec<(ShardId, ShardMessage)> {
        std::mem::take(&mut self.shard_out)
    }

    /// From now on, what the broker tells other shards goes to `bus` as it
    /// is told, before anything the same input sends a client. A client
    /// that got a SUBACK, a PUBACK or a PUBCOMP can then count on every
    /// shard having been told of the subscription or the message, as with
    /// one broker: a shard that takes its queue before it handles what
    /// such a client sends next (a PUBLISH on the new subscription's
    /// topic, a SUBSCRIBE to a retained message) never misses it.
    pub fn post_shard_messages(&mut self, mut bus: Box<dyn ShardBus>) {
        for (to, message) in self.shard_out.drain(..) {
            bus.post(to, message);
        }
        self.shard_bus = Some(bus);
    }

    /// The end of a turn of the runtime's loop, before it waits: the
    /// shard bus may wake the shards it posted to (see
    /// [`ShardBus::end_turn`]).
    pub fn end_turn(&mut self) {
        if let Some(bus) = self.shard_bus.as_mut() {
            bus.end_turn();
        }
    }

    /// Posts `message` to shard `to`, or queues it for
    /// [`poll_shard_messages`](Self::poll_shard_messages).
    fn tell_shard(&mut self, to: ShardId, message: ShardMessage) {
        match self.shard_bus.as_mut() {
            Some(bus) => bus.post(to, message),
            None => self.shard_out.push((to, message)),
        }
    }

    /// `conn` ended on its own (end of stream, socket error).
    pub fn closed(&mut self, now: Now, conn: ConnId) {
        self.outboxes.remove(&conn);
        if self.http.contains(conn) {
            return self.http.close(conn);
        }
        self.note_departure(conn);
        match self.bridge_on(conn) {
            Some(at) => self.bridges[at].remote_closed(now, &mut self.broker, conn),
            None => self.broker.handle_input(now, Input::Closed { conn }),
        }
        self.drain(now);
    }

    /// The runtime's report on `conn`'s writer (the episode's progress and
    /// end; its start comes from [`Outbox::send`]).
    pub fn writer(&mut self, now: Now, conn: ConnId, progress: WriterProgress) {
        // A bridge's socket carries what its session lets through: the
        // session's window is its flow control.
        if self.bridge_on(conn).is_none() {
            self.broker.handle_input(now, Input::Writer { conn, progress });
            self.drain(now);
        }
    }

    /// Starts a bridge (see [`bridge`](crate::bridge)); `hostname` makes
    /// its default client ids, `seed` varies its restart jitter.
    pub fn start_bridge(&mut self, now: Now, conf: BridgeConf, hostname: &str, seed: u64) -> BridgeId {
        let id = BridgeId(self.next_bridge);
        self.next_bridge += 1;
        let mut bridge = Bridge::new(id, conf, hostname, seed);
        bridge.start(now, &mut self.broker);
        self.figures.start(now.instant, self.broker.config().sys_interval);
        self.bridges.push(bridge);
        self.drain(now);
        id
    }

    /// Stops a bridge: its remote is told it is gone and disconnected; its
    /// local session stays, as any client's.
    pub fn stop_bridge(&mut self, now: Now, id: BridgeId) {
        let Some(at) = self.bridges.iter().position(|b| b.id() == id) else { return };
        self.bridges[at].shutdown(now, &mut self.broker);
        self.drain(now);
        self.bridges.remove(at);
    }

    /// A reloaded configuration's bridges: those it no longer has, or has
    /// changed, are stopped; the changed and the new ones start; the
    /// others go on untouched (Mosquitto cannot reload bridges).
    pub fn reload_bridges(&mut self, now: Now, confs: &[BridgeConf], hostname: &str, seed: u64) {
        let running: Vec<(BridgeId, BridgeConf)> = self.bridges.iter().map(|b| (b.id(), b.conf().clone())).collect();
        for (id, conf) in &running {
            match confs.iter().find(|c| c.name == conf.name) {
                Some(new) if same_settings(new, conf) => continue,
                Some(_) => info!("Bridge {} changed: restarting it.", conf.name),
                None => info!("Bridge {} is no longer configured: stopping it.", conf.name),
            }
            self.stop_bridge(now, *id);
        }
        for conf in confs {
            if !self.bridges.iter().any(|b| b.conf().name == conf.name) {
                self.start_bridge(now, conf.clone(), hostname, seed);
            }
        }
    }

    /// The bridges running.
    pub fn bridges(&self) -> &[Bridge] {
        &self.bridges
    }

    /// Sockets the bridges need opened, taken in order.
    #[must_use]
    pub fn poll_dials(&mut self) -> Vec<Dial> {
        self.bridges.iter_mut().flat_map(Bridge::take_dials).collect()
    }

    /// The socket of a [`Dial`] is open as `conn`, written through
    /// `outbox`; its reads go to [`received`](Self::received) as any
    /// connection's. For a probe, call [`probed`](Self::probed) instead.
    pub fn dialed(&mut self, now: Now, bridge: BridgeId, conn: ConnId, outbox: O) {
        self.outboxes.insert(conn, outbox);
        match self.bridges.iter_mut().find(|b| b.id() == bridge) {
            Some(bridge) => bridge.dialed(now, conn),
            None => {
                if let Some(mut outbox) = self.outboxes.remove(&conn) {
                    outbox.close(CloseReason::Disconnected);
                }
            }
        }
        self.drain(now);
    }

    /// The socket of a [`Dial`] could not be opened; `error` says why.
    pub fn dial_failed(&mut self, now: Now, bridge: BridgeId, error: &str) {
        if let Some(bridge) = self.bridges.iter_mut().find(|b| b.id() == bridge) {
            bridge.dial_failed(now, &mut self.broker, error);
        }
        self.drain(now);
    }

    /// The outcome of a probe [`Dial`].
    pub fn probed(&mut self, now: Now, bridge: BridgeId, reachable: bool) {
        if let Some(bridge) = self.bridges.iter_mut().find(|b| b.id() == bridge) {
            bridge.probed(now, &mut self.broker, reachable);
        }
        self.drain(now);
    }

    /// The answer to an [`AuthRequest`].
    pub fn authenticated(&mut self, now: Now, conn: ConnId, result: Result<(), Refusal>) {
        if self.http.contains(conn) {
            return self.http_authenticated(now, conn, result);
        }
        self.broker.handle_input(now, Input::Authenticated { conn, result });
        self.drain(now);
    }

    /// A reloaded policy: see [`Broker::replace_policy`].
    pub fn replace_policy(&mut self, now: Now, policy: Box<dyn AccessPolicy>, keep: &dyn Fn(ClientInfo<'_>) -> bool) {
        self.broker.replace_policy(now, policy, keep);
        self.drain(now);
    }

    /// Changes to commit, in order (see [`persistence`](crate::persistence));
    /// answer with [`stored`](Self::stored).
    #[must_use]
    pub fn poll_store_batches(&mut self) -> Vec<StoreBatch> {
        std::mem::take(&mut self.store_batches)
    }

    /// Every batch up to `seq` is durable.
    pub fn stored(&mut self, now: Now, seq: u64) {
        self.broker.handle_input(now, Input::Stored { seq });
        self.drain(now);
    }

    /// Publishes a message from the broker itself (see [`Input::Publish`]).
    pub fn publish(&mut self, now: Now, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        self.broker.handle_input(now, Input::Publish { topic, payload, qos, retain });
        self.drain(now);
    }

    /// Credentials waiting to be checked, taken in order.
    #[must_use]
    pub fn poll_auth_requests(&mut self) -> Vec<AuthRequest> {
        std::mem::take(&mut self.auth_requests)
    }

    /// The timer armed at [`next_deadline`](Self::next_deadline) fired.
    pub fn timeout(&mut self, now: Now) {
        self.http_timeout(now);
        self.broker.handle_timeout(now);
        for bridge in &mut self.bridges {
            bridge.timeout(now, &mut self.broker);
        }
        let interval = self.broker.config().sys_interval;
        if self.figures.due(now.instant, interval) {
            let all: Vec<_> = self.own_figures().map(|(topic, value)| (topic, value.to_string())).collect();
            for (topic, value) in self.figures.changed(all) {
                let figure =
                    Input::Publish { topic: &topic, payload: value.as_bytes(), qos: QoS::AtMostOnce, retain: true };
                self.broker.handle_input(now, figure);
            }
        }
        self.drain(now);
    }

    /// Closes every connection (server shutdown), the bridges' first.
    pub fn shutdown(&mut self, now: Now) {
        for bridge in &mut self.bridges {
            bridge.shutdown(now, &mut self.broker);
        }
        self.broker.shutdown(now);
        self.drain(now);
    }

    /// When the broker, the presence store or a bridge next needs the
    /// timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        let presence = self.presence.as_ref().and_then(PresenceSync::poll_timeout);
        let bridges = self.bridges.iter().filter_map(Bridge::next_deadline).min();
        let http = self.http.next_deadline();
        [self.broker.poll_timeout(), presence, bridges, self.figures.next(), http].into_iter().flatten().min()
    }

    /// Every integer `$SYS/broker/...` figure as it stands at `now`, by
    /// its topic: those `$SYS` publishes, live, without Mosquitto's
    /// deprecated aliases and the load averages; the uptime in seconds.
    /// The presence link's figures are there when Redis is configured,
    /// each bridge's numbers when bridges run.
    pub fn systree(&self, now: Now) -> Vec<(String, u64)> {
        let stats = self.broker.totals();
        let broker = sys::broker_figures(&stats).into_iter().map(|figure| (figure.topic.to_owned(), figure.value));
        let own = self.own_figures().filter_map(|(topic, value)| match value {
            Value::Count(n) => Some((topic, n)),
            Value::Word(_) => None,
        });
        [(sys::UPTIME_TOPIC.to_owned(), sys::uptime(now.instant))].into_iter().chain(broker).chain(own).collect()
    }

    /// The figures the server publishes itself: the presence link's and
    /// each bridge's.
    fn own_figures(&self) -> impl Iterator<Item = (String, Value)> + '_ {
        // Each shard has its own link to Redis: with several, each says
        // how its own stands, under its number.
        let shard = self.broker.shard().map(|shard| format!("$SYS/broker/presence/shard/{}/", shard.0));
        let presence = self.presence.iter().flat_map(sys::presence_figures).map(move |figure| {
            let topic = match &shard {
                Some(prefix) => figure.topic.replacen("$SYS/broker/presence/", prefix, 1),
                None => figure.topic.to_owned(),
            };
            (topic, Value::Count(figure.value))
        });
        presence.chain(self.bridges.iter().flat_map(|bridge| figures(bridge, &self.broker)))
    }

    /// The broker, for its getters.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The presence store, when Redis is configured.
    pub fn presence_mut(&mut self) -> Option<&mut PresenceSync> {
        self.presence.as_mut()
    }

    /// Open connections, the bridges' sockets included.
    pub fn connections(&self) -> usize {
        self.outboxes.len()
    }

    /// The bridge whose remote socket is `conn`.
    fn bridge_on(&self, conn: ConnId) -> Option<usize> {
        if self.bridges.is_empty() {
            return None;
        }
        self.bridges.iter().position(|b| b.remote_conn() == Some(conn))
    }

    /// The bridge whose local side is `conn`.
    fn bridge_behind(&self, conn: ConnId) -> Option<usize> {
        self.bridges.iter().position(|b| b.local_conn() == Some(conn))
    }

    fn drain(&mut self, now: Now) {
        while let Some(action) = self.broker.poll_action() {
            match action {
                Action::Send { conn, data } if conn.is_bridge() => {
                    if let Some(at) = self.bridge_behind(conn) {
                        self.bridges[at].local_received(now, &mut self.broker, &data);
                    }
                }
                Action::Close { conn, .. } if conn.is_bridge() => {
                    if let Some(at) = self.bridge_behind(conn) {
                        self.bridges[at].local_closed(now, &mut self.broker);
                    }
                }
                Action::Send { conn, data } => match self.outboxes.get_mut(&conn).map(|outbox| outbox.send(data)) {
                    None | Some(Ok(None)) => {}
                    Some(Ok(Some(progress))) => self.broker.handle_input(now, Input::Writer { conn, progress }),
                    // The core closes it: its Close action follows in this loop.
                    Some(Err(OutboxFull)) => self.broker.handle_input(now, Input::NotReading { conn }),
                },
                Action::PauseReading { conn } | Action::ResumeReading { conn } => {
                    let paused = matches!(action, Action::PauseReading { .. });
                    if let Some(outbox) = self.outboxes.get_mut(&conn) {
                        outbox.pause_reading(paused);
                    }
                }
                Action::Close { conn, reason } => {
                    self.note_departure(conn);
                    if let Some(mut outbox) = self.outboxes.remove(&conn) {
                        outbox.close(reason);
                    }
                }
                // Presence is the devices': a bridge says its state on its
                // notification topic and under `$SYS/broker/bridge/`.
                Action::MarkOnline { conn, .. } | Action::MarkOffline { conn, .. } if conn.is_bridge() => {}
                // The state topic in the same order as Redis: a takeover's
                // "0" comes before the new connection's "1".
                Action::MarkOnline { client, conn } => {
                    self.note_online(now, conn);
                    match self.presence.as_mut() {
                        Some(presence) => presence.handle_change(&client, true),
                        None => info!("Updating client {client} to online"),
                    }
                    self.broker.publish_presence(now, &client, true);
                }
                Action::MarkOffline { client, .. } => {
                    match self.presence.as_mut() {
                        Some(presence) => presence.handle_change(&client, false),
                        None => info!("Updating client {client} to offline"),
                    }
                    self.broker.publish_presence(now, &client, false);
                }
                Action::Authenticate { conn, client, username, password, listener } => {
                    self.auth_requests.push(AuthRequest { conn, client, username, password, listener });
                }
                Action::Store { batch } => self.store_batches.push(batch),
                Action::ToShard { to, message } => self.tell_shard(to, message),
                Action::Deliver { .. } | Action::DropExpired { .. } => {}
            }
        }
        if !self.bridges.is_empty() {
            self.drain_bridges(now);
        }
    }

    /// Writes what the bridges have for their remotes; a lazy bridge
    /// looks at its queue.
    fn drain_bridges(&mut self, now: Now) {
        let mut stalled = false;
        for at in 0..self.bridges.len() {
            self.bridges[at].check_queue(&self.broker);
            for op in self.bridges[at].take_ops() {
                match op {
                    RemoteOp::Send(conn, data) => {
                        let sent = self.outboxes.get_mut(&conn).map(|outbox| outbox.send(data));
                        if let Some(Err(OutboxFull)) = sent {
                            self.bridges[at].remote_stalled(now, &mut self.broker);
                            stalled = true;
                        }
                    }
                    RemoteOp::Close(conn) => {
                        if let Some(mut outbox) = self.outboxes.remove(&conn) {
                            outbox.close(CloseReason::Disconnected);
                        }
                    }
                }
            }
        }
        // Closing a stalled bridge's local side has actions of its own.
        if stalled {
            self.drain(now);
        }
    }
}

/// Whether two bridge sections say the same, wherever they stand in the
/// file.
fn same_settings(a: &BridgeConf, b: &BridgeConf) -> bool {
    let placed = |c: &BridgeConf| BridgeConf { line: 0, file: String::new(), ..c.clone() };
    placed(a) == placed(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::presence::{DEFAULT_LEASE, PresenceCommand, PresenceSettings};
    use crate::time::UnixTime;
    use crate::types::ClientId;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Records what it is sent, up to `capacity` bytes if set.
    #[derive(Debug, Clone, Default)]
    struct Recorder(Rc<RefCell<(Vec<u8>, Option<CloseReason>)>>, Option<usize>);

    impl Outbox for Recorder {
        fn send(&mut self, data: Bytes) -> Result<Option<WriterProgress>, OutboxFull> {
            let mut inner = self.0.borrow_mut();
            if self.1.is_some_and(|capacity| inner.0.len() + data.len() > capacity) {
                return Err(OutboxFull);
            }
            inner.0.extend_from_slice(&data);
            Ok(None)
        }

        fn close(&mut self, reason: CloseReason) {
            self.0.borrow_mut().1 = Some(reason);
        }

        fn pause_reading(&mut self, _: bool) {}
    }

    fn now() -> Now {
        Now::new(Instant::ZERO, UnixTime::from_secs_f64(0.0))
    }

    #[test]
    fn actions_reach_outboxes_and_presence() {
        let mut presence = PresenceSync::new(PresenceSettings::default());
        assert!(presence.poll_connect(Instant::ZERO));
        presence.handle_connected(Instant::ZERO);
        let mut server = Server::new(Broker::new(Config::default()), Some(presence));
        let out = Recorder::default();
        let conn = server.accept(now(), Peer::default(), out.clone());
        server.received(now(), conn, &[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'a']);
        assert_eq!(out.0.borrow().0, [0x20, 2, 0, 0]);
        let batch = server.presence_mut().and_then(|p| p.poll_batch(Instant::ZERO).map(<[_]>::to_vec));
        assert_eq!(
            batch,
            Some(vec![
                PresenceCommand::Renew(DEFAULT_LEASE),
                PresenceCommand::ClearStale,
                PresenceCommand::Online(ClientId::new("a"))
            ])
        );
        // A malformed packet: the outbox is told to close.
        server.received(now(), conn, &[0xf0, 0]);
        assert!(matches!(out.0.borrow().1, Some(CloseReason::Violation(_))));
        assert_eq!(server.connections(), 0);
    }

    #[test]
    fn a_bridges_local_side_is_not_presence() {
        let mut presence = PresenceSync::new(PresenceSettings::default());
        assert!(presence.poll_connect(Instant::ZERO));
        presence.handle_connected(Instant::ZERO);
        let mut server: Server<Recorder> = Server::new(Broker::new(Config::default()), Some(presence));
        let mut conf = BridgeConf::new("b");
        conf.addresses.push(crate::conf::BridgeAddress { host: "127.0.0.1".into(), port: 1 });
        conf.topics.push(crate::conf::BridgeTopic {
            pattern: "#".into(),
            direction: crate::conf::Direction::Out,
            qos: QoS::AtMostOnce,
            local_prefix: String::new(),
            remote_prefix: String::new(),
        });
        server.start_bridge(now(), conf, "host", 1);
        assert_eq!(server.broker().session("local.host.b").map(|s| s.subscriptions.len()), Some(1));
        let batch = server.presence_mut().and_then(|p| p.poll_batch(Instant::ZERO).map(<[_]>::to_vec));
        assert_eq!(batch, Some(vec![PresenceCommand::Renew(DEFAULT_LEASE), PresenceCommand::ClearStale]));
    }

    #[test]
    fn a_client_that_does_not_read_is_closed_and_its_will_published() {
        let mut server = Server::new(Broker::new(Config::default()), None);
        let watcher = Recorder::default();
        let conn = server.accept(now(), Peer::default(), watcher.clone());
        server.received(now(), conn, &[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'w']);
        server.received(now(), conn, &[0x82, 6, 0, 1, 0, 1, b'#', 0]);
        // "slow" subscribes to everything, with a will on "gone", and can
        // take its CONNACK and SUBACK but nothing more.
        let slow = Recorder(Rc::default(), Some(9));
        let conn = server.accept(now(), Peer::default(), slow.clone());
        let will = [
            0x10, 22, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x06, 0, 60, 0, 1, b's', 0, 4, b'g', b'o', b'n', b'e', 0, 1,
            b'x',
        ];
        server.received(now(), conn, &will);
        server.received(now(), conn, &[0x82, 6, 0, 1, 0, 1, b'#', 0]);
        assert_eq!(slow.0.borrow().0, [0x20, 2, 0, 0, 0x90, 3, 0, 1, 0]);
        server.received(now(), conn, &[0x30, 5, 0, 1, b't', b'h', b'i']);
        assert_eq!(slow.0.borrow().1, Some(CloseReason::NotReading));
        assert_eq!(server.connections(), 1);
        // The watcher got the PUBLISH, then the will.
        let seen = watcher.0.borrow().0.clone();
        assert!(
            seen.ends_with(&[0x30, 5, 0, 1, b't', b'h', b'i', 0x30, 7, 0, 4, b'g', b'o', b'n', b'e', b'x']),
            "{seen:?}"
        );
    }
}
