//! Takeover across nodes (see [`shard::nodes`](crate::shard::nodes)): a
//! client id is one client for the whole cluster, as for one broker
//! ([MQTT-3.1.4-2]).
//!
//! A CONNECT accepted on a cluster node with other nodes reachable waits
//! (its bytes buffered, as while its credentials are checked) while the
//! node claims the client id: every shard of every other node hears
//! [`ShardMessage::Claim`] with the connection's [`ConnectStamp`], closes
//! its own connection of that client if it is older, and answers
//! [`ShardMessage::Claimed`], handing over the client's persistent session
//! if it held one. Once all have answered (or left), the connection is
//! accepted with the session handed over, so that its CONNACK's Session
//! Present and what it is sent are those of the one broker the cluster
//! is. A claim that finds the client's connection accepted closes it: that
//! connection is the older, whatever the clocks say (see `handle_claim`).
//! Two connections of one client claimed on two nodes at once: the later
//! stamp wins, each node closing its own if it is the earlier.

use std::collections::HashMap;

use tracing::{info, warn};

use super::{Broker, ConnState, Pending};
use crate::action::Action;
use crate::error::CloseReason;
use crate::peer::ListenerId;
use crate::persistence::CopyState;
use crate::policy::{ClientInfo, FilterAccess};
use crate::session::{Grant, Outgoing, Presence, Session, Stage};
use crate::shard::{ConnectStamp, HandedSession, ShardId, ShardMessage};
use crate::time::Now;
use crate::types::{ClientId, ConnId, QoS};

/// A connection whose client id this node is claiming.
#[derive(Debug)]
struct Claiming {
    /// The connection; `None` once it closed (or gave way to a later
    /// one elsewhere): the claim still gathers the session.
    conn: Option<ConnId>,
    stamp: ConnectStamp,
    /// The shards of other nodes yet to answer.
    waiting: Vec<ShardId>,
    /// The session one of them handed over.
    handed: Option<Box<HandedSession>>,
    /// A later claim elsewhere this one gave way to: it gets what this one
    /// gathers, once all have answered.
    relay: Option<(ShardId, ConnectStamp)>,
}

/// The claims of this shard (see the [module](self)).
#[derive(Debug, Default)]
pub(super) struct Claims {
    /// By client id, at most one per client.
    pending: HashMap<ClientId, Claiming>,
}

impl Claims {
    /// Connection `id` is closed.
    pub(super) fn closed(&mut self, id: ConnId) {
        for claim in self.pending.values_mut() {
            if claim.conn == Some(id) {
                claim.conn = None;
            }
        }
    }
}

impl Broker {
    /// The authenticated CONNECT of `id` for `client_id`: accepted at once,
    /// or, on a cluster node with other nodes reachable, once the client id
    /// is claimed (see the [module](self)).
    pub(super) fn admit_connect(&mut self, now: Now, id: ConnId, connect: crate::codec::Connect, client_id: ClientId) {
        let Some(shards) = self.shards.as_ref().filter(|shards| shards.node() != 0) else {
            self.accept_connect(now, id, connect, client_id);
            return;
        };
        let stamp = ConnectStamp { millis: unix_millis(now), node: shards.node(), shard: shards.me() };
        let waiting: Vec<ShardId> = shards.peers().to_vec();
        if waiting.is_empty() {
            self.accept_connect(now, id, connect, client_id);
            return;
        }
        // A second CONNECT of the client here while the first is claimed:
        // the later one goes on, as a takeover here would, and the claim
        // under way serves it (or, if it gave way, claims anew once done).
        if let Some(claim) = self.claims.pending.get_mut(&client_id) {
            if let Some(earlier) = claim.conn.replace(id) {
                info!("Client {client_id} already connected, closing old connection.");
                self.close(now, earlier, CloseReason::TakenOver);
            }
        } else {
            for &to in &waiting {
                let message = ShardMessage::Claim { client: client_id.clone(), stamp };
                self.actions.push_back(Action::ToShard { to, message });
            }
            let claim = Claiming { conn: Some(id), stamp, waiting, handed: None, relay: None };
            self.claims.pending.insert(client_id.clone(), claim);
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.state = ConnState::Authenticating(Box::new(Pending { connect, client_id }));
        }
    }

    /// Shard `from` of another node claims `client` for a connection made
    /// at `stamp`: an older connection of it here closes, and its
    /// persistent session is handed over.
    pub(super) fn handle_claim(&mut self, now: Now, from: ShardId, client: ClientId, stamp: ConnectStamp) {
        if let Some(claim) = self.claims.pending.get_mut(&client) {
            // Claimed here too: the later claim wins; an earlier one gives
            // way, and answers the later one once its own answers are in.
            let beaten = match claim.relay {
                _ if claim.stamp > stamp => Some(from),
                Some((_, relay)) if relay > stamp => Some(from),
                relay => {
                    claim.relay = Some((from, stamp));
                    relay.map(|(to, _)| to)
                }
            };
            let conn = claim.conn.take_if(|_| claim.stamp < stamp);
            if let Some(to) = beaten {
                self.answer_claim(to, client.clone(), None);
            }
            if let Some(conn) = conn {
                info!("Client {client} connected on another node, closing old connection.");
                self.close(now, conn, CloseReason::TakenOver);
            }
            return;
        }
        // Accepted here, the connection is the older: its acceptance
        // waited for the claimant's answer, which the claimant sent after
        // its own claim (one path between two shards), so a claim made
        // before it was accepted arrived while it was claimed.
        let Some(key) = self.sessions.find(&client) else {
            return self.answer_claim(from, client, None);
        };
        if let Some(conn) = self.sessions.get(key).and_then(Session::conn) {
            info!("Client {client} connected on another node, closing old connection.");
            self.close(now, conn, CloseReason::TakenOver);
        }
        let handed = self.hand_over(&client);
        self.answer_claim(from, client, handed);
    }

    fn answer_claim(&mut self, to: ShardId, client: ClientId, session: Option<Box<HandedSession>>) {
        self.actions.push_back(Action::ToShard { to, message: ShardMessage::Claimed { client, session } });
    }

    /// The persistent session of `client` here, if there is one, taken
    /// out to hand over (a clean one went with its connection).
    fn hand_over(&mut self, client: &ClientId) -> Option<Box<HandedSession>> {
        let key = self.sessions.find(client)?;
        let handed = self.sessions.get(key).filter(|s| !s.clean).map(handed);
        self.discard_session(key);
        handed.map(Box::new)
    }

    /// Shard `from` answered this node's claim of `client`.
    pub(super) fn handle_claimed(
        &mut self,
        now: Now,
        from: ShardId,
        client: ClientId,
        session: Option<Box<HandedSession>>,
    ) {
        let Some(claim) = self.claims.pending.get_mut(&client) else {
            // Every claim waits for each shard's answer: none comes twice.
            return;
        };
        claim.waiting.retain(|&s| s != from);
        match (&claim.handed, session) {
            (None, Some(session)) => claim.handed = Some(session),
            (Some(first), Some(second)) => {
                warn!("Client {client}'s session was handed over twice; the one taken last is kept.");
                if second.taken_at > first.taken_at {
                    claim.handed = Some(second);
                }
            }
            (_, None) => {}
        }
        if claim.waiting.is_empty() {
            self.finish_claim(now, &client);
        }
    }

    /// Shard `peer` of another node left: it answers no claim.
    pub(super) fn claims_without(&mut self, now: Now, peer: ShardId) {
        let mut done = Vec::new();
        for (client, claim) in &mut self.claims.pending {
            claim.waiting.retain(|&s| s != peer);
            if claim.waiting.is_empty() {
                done.push(client.clone());
            }
        }
        for client in done {
            self.finish_claim(now, &client);
        }
    }

    /// Every other node answered the claim of `client`: its connection is
    /// accepted with the session handed over (if it asked for one); or the
    /// session goes on to the later claim this one gave way to; or, its
    /// connection gone, it stays here, offline.
    fn finish_claim(&mut self, now: Now, client: &ClientId) {
        let Some(claim) = self.claims.pending.remove(client) else { return };
        let pending = claim.conn.and_then(|conn| {
            let state = std::mem::replace(&mut self.conns.get_mut(&conn)?.state, ConnState::AwaitingConnect);
            let ConnState::Authenticating(pending) = state else { return None };
            Some((conn, *pending))
        });
        if let Some((to, _)) = claim.relay {
            let handed = claim.handed.or_else(|| self.hand_over(client));
            self.answer_claim(to, client.clone(), handed);
            // A connection made here after this claim gave way claims anew.
            if let Some((conn, Pending { connect, client_id })) = pending {
                self.admit_connect(now, conn, connect, client_id);
            }
            return;
        }
        let clean = pending.as_ref().is_some_and(|(_, p)| p.connect.clean_session);
        if let Some(handed) = claim.handed.filter(|_| !clean) {
            // An offline session of the client here taken before the one
            // handed over (restored from a store after the client moved
            // on, or left here while this node was counted gone) gives way.
            if let Some(key) = self.sessions.find(client)
                && self.sessions.get(key).is_some_and(|s| s.conn().is_none() && s.taken_at < handed.taken_at)
            {
                self.discard_session(key);
            }
            if self.sessions.find(client).is_none() && self.occupancy.try_add_session(self.config.max_clients) {
                self.take_over(client, *handed, now);
            } else {
                warn!("Client {client}'s session handed over could not be kept; dropped.");
            }
        }
        let Some((conn, Pending { connect, client_id })) = pending else { return };
        self.accept_connect(now, conn, connect, client_id);
        self.handle_received(now, conn, &[]);
    }

    /// Makes `handed` the persistent session of `client` here (offline
    /// until its connection is accepted), recorded as the store records a
    /// new one.
    fn take_over(&mut self, client: &ClientId, handed: HandedSession, now: Now) {
        let mut session = Session::new(client.clone(), false);
        session.presence = Presence::Offline(super::persist::seconds(now));
        session.taken_at = handed.taken_at;
        if let Some(next) = handed.next_packet_id {
            session.set_next_packet_id(next);
        }
        let key = self.sessions.insert(session);
        self.record_session(key);
        for (filter, qos) in handed.subscriptions {
            let info = ClientInfo { client_id: client, username: None, listener: ListenerId::default() };
            let checked = self.policy.filter_access(info, &filter) != FilterAccess::Whole;
            if let Some(session) = self.sessions.get_mut(key) {
                session.subscriptions.insert(filter.clone(), qos);
            }
            self.add_subscription(&filter, key, Grant { qos, checked });
            self.record_subscription(key, &filter, Some(qos));
        }
        for (message, qos, retain, state) in handed.copies {
            let id = match state {
                CopyState::Queued(id) if qos != QoS::AtMostOnce => id,
                _ => None,
            };
            let mut out = Outgoing { message, qos, retain, seq: 0, id, batch: 0 };
            self.stamp(key, &mut out);
            let inflight = match state {
                CopyState::Queued(_) => None,
                CopyState::Sent(id) if qos == QoS::ExactlyOnce => Some((id, Stage::Unreceived)),
                CopyState::Sent(id) => Some((id, Stage::Unacknowledged)),
                CopyState::Released(id) => Some((id, Stage::Released)),
            };
            self.record_copy(key, &out, state, true, false);
            if let Some(session) = self.sessions.get_mut(key) {
                session.restore_copy(out, inflight);
            }
        }
        for (packet_id, message) in handed.incoming {
            self.record_incoming(key, packet_id, message.as_ref());
            if let Some(session) = self.sessions.get_mut(key) {
                session.receive_qos2(packet_id, message);
            }
        }
    }
}

/// `now` in Unix milliseconds, as stamps and sessions record it.
pub(super) fn unix_millis(now: Now) -> u64 {
    (now.unix.as_secs_f64() * 1000.0).max(0.0) as u64
}

/// What `session` holds, to hand to another node.
fn handed(session: &Session) -> HandedSession {
    let mut handed = HandedSession {
        taken_at: session.taken_at,
        next_packet_id: Some(session.next_packet_id()),
        subscriptions: session.subscriptions.iter().map(|(filter, qos)| (filter.clone(), *qos)).collect(),
        ..HandedSession::default()
    };
    for flight in session.inflight() {
        let state = match flight.stage {
            Stage::Unacknowledged | Stage::Unreceived => CopyState::Sent(flight.id),
            Stage::Released => CopyState::Released(flight.id),
        };
        let out = &flight.out;
        handed.copies.push((out.message.clone(), out.qos, out.retain, state));
    }
    for out in session.queued() {
        handed.copies.push((out.message.clone(), out.qos, out.retain, CopyState::Queued(out.id)));
    }
    handed.incoming = session.incoming().map(|(id, message)| (id, message.cloned())).collect();
    handed
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::codec::Packet;
    use crate::shard::{ShardId, ShardMessage};
    use crate::sim::{ClientOptions, Simulation};
    use crate::{Config, ConnId, QoS};

    const NODES: u64 = 3;

    /// Connects `options` on node `node` (connections go to the nodes in
    /// turn by id): clients of their own take the turns before it.
    fn connect_on(sim: &mut Simulation, node: u64, options: ClientOptions) -> ConnId {
        for turn in 0..NODES {
            let probe = sim.connect(ClientOptions::new(&format!("turn-{node}-{turn}")));
            sim.disconnect(probe);
            if (probe.0 + 1) % NODES == node {
                break;
            }
        }
        let conn = sim.connect(options);
        assert_eq!(conn.0 % NODES, node, "connection ids are not given in turn");
        conn
    }

    /// The client whose session moves, with a persistent session.
    fn x() -> ClientOptions {
        ClientOptions::new("x").clean_session(false)
    }

    /// A session of x on node 0 subscribed to old/#, then, node 1 counting
    /// node 0 gone (as if node 0 were paused), a newer one on node 1
    /// subscribed to new/#.
    fn two_sessions() -> Simulation {
        let mut sim = Simulation::with_nodes(Config { sys_interval: Duration::ZERO, ..Config::default() }, 3);
        sim.record();
        let old = connect_on(&mut sim, 0, x());
        sim.subscribe(old, "old/#", QoS::AtLeastOnce);
        sim.disconnect(old);
        // Node 0 is number 1 at node 1 (the others are numbered as heard).
        sim.link_says(1, ShardId(1), ShardMessage::Left);
        sim.advance(Duration::from_secs(5));
        let new = connect_on(&mut sim, 1, x());
        sim.subscribe(new, "new/#", QoS::AtLeastOnce);
        sim.disconnect(new);
        sim.advance(Duration::from_secs(5));
        sim
    }

    /// Connects x on `node` and says which of old/t and new/t it gets,
    /// published on the node after (node 1 still counts node 0 gone).
    fn x_gets_on(sim: &mut Simulation, node: u64) -> Vec<String> {
        let conn = connect_on(sim, node, x());
        let connack = sim.take_received(conn);
        assert!(
            matches!(connack.first(), Some(Packet::ConnAck(ack)) if ack.session_present),
            "{connack:?}\n{}",
            sim.transcript()
        );
        let publisher = connect_on(sim, (node + 2) % NODES, ClientOptions::new("p"));
        sim.publish(publisher, "old/t", b"stale", QoS::AtLeastOnce, false);
        sim.publish(publisher, "new/t", b"fresh", QoS::AtLeastOnce, false);
        sim.take_received(conn)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p.topic.as_str().to_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn of_two_sessions_handed_over_the_one_taken_last_is_kept() {
        // A claim from node 2 gets both, the stale one first.
        let mut sim = two_sessions();
        assert_eq!(x_gets_on(&mut sim, 2), ["new/t"], "{}", sim.transcript());
    }

    #[test]
    fn an_older_session_of_the_claimant_gives_way_to_the_one_handed_over() {
        // Back on node 0, which still holds the stale one.
        let mut sim = two_sessions();
        assert_eq!(x_gets_on(&mut sim, 0), ["new/t"], "{}", sim.transcript());
    }
}
