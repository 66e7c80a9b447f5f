//! Ownership epochs (see [`ShardMessage::Own`]): in a cluster, each
//! connection that comes to a node takes the next epoch of its client id,
//! a counter in the shared Redis. Its claim carries it (of two claims at
//! once, the later epoch wins, see `claims`), and so does the session the
//! connection takes, in memory and in the store.
//!
//! The epoch fences off sessions left behind. A node that was away while
//! its clients connected elsewhere (restarted from its store, or counted
//! gone while paused) may still hold their older sessions; it asks the
//! current epoch of each and discards, offline, any session whose epoch is
//! below it: a connection elsewhere took the client since, and this copy
//! is no longer the client's. A node restarted asks
//! [`TAKEOVER_WAIT`](crate::shard::nodes::TAKEOVER_WAIT) after its
//! restore: a connection elsewhere whose claim waited for the node's
//! earlier run asks the new one meanwhile, and takes the session with
//! what is queued in it. One back from a pause asks at once: the node
//! that took its sessions over has them, and it must not write them. Of
//! two sessions of one client met in a takeover, the one with the higher
//! epoch is kept: no clock decides.
//!
//! Epoch 0 is "not known" (a session of a store written before epochs, or
//! whose epoch Redis has not answered yet): such a session is never
//! fenced, and gives way to any other.

use tracing::info;

use super::Broker;
use crate::action::Action;
use crate::session::Session;
use crate::shard::{ShardId, ShardMessage};
use crate::time::Now;
use crate::types::ClientId;

impl Broker {
    /// Whether this broker is a node of a cluster.
    fn is_cluster_node(&self) -> bool {
        self.shards.as_ref().is_some_and(|shards| shards.node() != 0)
    }

    /// A connection of `client` came here: it takes the client's next
    /// epoch (its claim waits for it).
    pub(super) fn take_ownership(&mut self, client: &ClientId) {
        if self.is_cluster_node() {
            let message = ShardMessage::Own { client: client.clone(), take: true };
            self.actions.push_back(Action::ToShard { to: ShardId::LINK, message });
        }
    }

    /// Asks the current epoch of every persistent session here whose
    /// epoch is known, to fence off those taken elsewhere since: once the
    /// other nodes counted this one gone (one of them took its sessions
    /// over, or a connection elsewhere took the client).
    pub(super) fn check_ownership(&mut self) {
        for client in self.fenceable() {
            self.ask_ownership(client);
        }
    }

    /// As [`check_ownership`](Self::check_ownership), after a restore, but
    /// [`TAKEOVER_WAIT`](crate::shard::nodes::TAKEOVER_WAIT) after `now`:
    /// a client that connected elsewhere while this node was down has its
    /// claim there ask this node's new run, and take the session with
    /// what is queued in it, first.
    pub(super) fn check_ownership_later(&mut self, now: Now) {
        for client in self.fenceable() {
            self.claims.fence_later(now.instant, client);
        }
    }

    /// The clients of the persistent sessions here whose epoch is known,
    /// on a cluster node, in order.
    fn fenceable(&self) -> Vec<ClientId> {
        if !self.is_cluster_node() {
            return Vec::new();
        }
        let mut clients: Vec<ClientId> =
            self.sessions.iter().filter(|s| !s.clean && s.epoch != 0).map(|s| s.client_id.clone()).collect();
        clients.sort_unstable();
        clients
    }

    /// Asks the current epoch of `client`, for [`handle_owner`](Self::handle_owner).
    pub(super) fn ask_ownership(&mut self, client: ClientId) {
        let message = ShardMessage::Own { client, take: false };
        self.actions.push_back(Action::ToShard { to: ShardId::LINK, message });
    }

    /// The link says `client`'s epoch is `epoch`, `taken` by a connection
    /// here: a claim waiting for it goes out, or else the client's session
    /// here carries it. Otherwise a session here with a lower epoch was
    /// taken elsewhere since: offline, it is discarded, unless a claim
    /// elsewhere is to have it, or a connection here is claiming the
    /// client (the epoch may be the one it took; the claim decides).
    pub(super) fn handle_owner(&mut self, now: Now, client: &ClientId, epoch: u64, taken: bool) {
        if taken {
            if !self.claim_stamped(now, client, epoch) {
                self.raise_epoch(client, epoch);
            }
            return;
        }
        let Some(key) = self.sessions.find(client) else { return };
        let fenced = self.sessions.get(key).is_some_and(|session| is_fenced(session, epoch));
        if fenced && !self.claims.is_kept(key) && !self.claims.is_claiming(client) {
            info!("Client {client}'s session was taken on another node since; discarding it here.");
            self.discard_session(key);
        }
    }

    /// `client`'s session here is the client's as of `epoch` (a later
    /// answer may have come first).
    pub(super) fn raise_epoch(&mut self, client: &ClientId, epoch: u64) {
        let Some(key) = self.sessions.find(client) else { return };
        let Some(session) = self.sessions.get_mut(key).filter(|session| session.epoch < epoch) else { return };
        session.epoch = epoch;
        if !session.clean {
            self.record_session(key);
        }
    }
}

/// Whether `session` was taken elsewhere since a connection here took it:
/// its epoch is known and below `current`, and no connection holds it.
fn is_fenced(session: &Session, current: u64) -> bool {
    session.epoch != 0 && session.epoch < current && session.conn().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use crate::persistence::{StoredSession, StoredState};
    use crate::shard::nodes::TAKEOVER_WAIT;
    use crate::time::{Instant, Now, UnixTime};

    fn now() -> Now {
        Now::new(Instant::ZERO, UnixTime::from_secs_f64(1_800_000_000.0))
    }

    /// A cluster node restored with persistent sessions of x (epoch 3), y
    /// (not known) and z (5), and the questions it asks its link.
    fn restored_node() -> (Broker, Vec<ShardMessage>) {
        let mut broker = Broker::new(Config { persistence: true, ..Config::default() });
        broker.join_cluster(7);
        let mut state = StoredState::default();
        for (client, epoch) in [("x", 3), ("y", 0), ("z", 5)] {
            state.sessions.insert(ClientId::new(client), StoredSession { epoch, ..StoredSession::default() });
        }
        broker.restore(now(), state);
        let mut asked = Vec::new();
        while let Some(action) = broker.poll_action() {
            if let Action::ToShard { to: ShardId::LINK, message } = action {
                asked.push(message);
            }
        }
        (broker, asked)
    }

    fn own(client: &str) -> ShardMessage {
        ShardMessage::Own { client: ClientId::new(client), take: false }
    }

    fn owner(client: &str, epoch: u64, taken: bool) -> ShardMessage {
        ShardMessage::Owner { client: ClientId::new(client), epoch, taken }
    }

    /// What `broker` asks its link when `now` comes.
    fn asked_at(broker: &mut Broker, now: Now) -> Vec<ShardMessage> {
        broker.handle_timeout(now);
        let mut asked = Vec::new();
        while let Some(action) = broker.poll_action() {
            if let Action::ToShard { to: ShardId::LINK, message } = action {
                asked.push(message);
            }
        }
        asked
    }

    /// The time [`TAKEOVER_WAIT`] after [`now`].
    fn after_takeover_wait() -> Now {
        Now::new(Instant::ZERO + TAKEOVER_WAIT, UnixTime::from_secs_f64(1_800_000_010.0))
    }

    #[test]
    fn a_restored_node_asks_the_epochs_it_knows_once_a_claim_elsewhere_had_its_time() {
        let (mut broker, asked) = restored_node();
        assert_eq!(asked, []);
        // The runtime is woken for it.
        assert!(broker.poll_timeout().is_some_and(|at| at <= after_takeover_wait().instant));
        let early = Now::new(Instant::ZERO + TAKEOVER_WAIT / 2, UnixTime::from_secs_f64(1_800_000_005.0));
        assert_eq!(asked_at(&mut broker, early), []);
        assert_eq!(asked_at(&mut broker, after_takeover_wait()), [own("x"), own("z")]);
    }

    #[test]
    fn a_restored_session_taken_elsewhere_since_is_discarded() {
        let (mut broker, _) = restored_node();
        asked_at(&mut broker, after_takeover_wait());
        for (client, epoch) in [("x", 4), ("y", 9), ("z", 5)] {
            broker.handle_shard_message(now(), ShardId::LINK, owner(client, epoch, false));
        }
        assert!(broker.session("x").is_none(), "x connected elsewhere since: its session here is stale");
        assert!(broker.session("y").is_some(), "an epoch not known is never fenced");
        assert!(broker.session("z").is_some(), "z's session here is the current one");
    }

    #[test]
    fn an_epoch_taken_here_raises_the_sessions_and_is_stored() {
        let (mut broker, _) = restored_node();
        broker.handle_shard_message(now(), ShardId::LINK, owner("x", 8, true));
        // An answer overtaken by a later one does not lower it.
        broker.handle_shard_message(now(), ShardId::LINK, owner("x", 6, true));
        broker.handle_shard_message(now(), ShardId::LINK, owner("x", 7, false));
        assert!(broker.session("x").is_some());
        assert_eq!(broker.stored_image().sessions[&ClientId::new("x")].epoch, 8);
    }

    #[test]
    fn a_broker_outside_a_cluster_asks_nothing() {
        let mut broker = Broker::new(Config { persistence: true, ..Config::default() });
        let mut state = StoredState::default();
        state.sessions.insert(ClientId::new("x"), StoredSession { epoch: 3, ..StoredSession::default() });
        broker.restore(now(), state);
        while let Some(action) = broker.poll_action() {
            assert!(!matches!(action, Action::ToShard { .. }), "{action:?}");
        }
    }
}
