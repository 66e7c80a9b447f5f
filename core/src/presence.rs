//! Keeping the Redis presence hash in step with who is online, without
//! ever making a client wait.
//!
//! [`PresenceSync`] is the sans-IO half of the presence store: it takes the
//! broker's `MarkOnline` / `MarkOffline` actions and the outcome of Redis
//! calls, and says which [`PresenceCommand`]s to run next and when to
//! reconnect. The runtime only opens the Redis connection, runs the
//! commands of a batch in one pipeline and reports back.
//!
//! Design:
//! - The truth is the set of clients online. Changes not yet confirmed by
//!   Redis wait in `unconfirmed`, one entry per client (latest wins), so
//!   memory is bounded by the number of clients however long Redis is away.
//! - One batch is in flight at a time and holds each client at most once,
//!   so per-client order is kept (a takeover's offline-then-online ends
//!   online).
//! - On every (re)connection the whole online set is asserted again: Redis
//!   may have come back empty.
//! - Removals are conditional on ownership. Each broker records, next to
//!   the `mqtt` hash, which broker set each entry (`<key>:owner`) and the
//!   ids it owns (`<key>:broker:<broker-id>`); the offline script deletes
//!   an entry only if this broker still owns it, so a late removal from the
//!   broker a device left cannot erase the entry of the broker it joined.
//! - The first successful connection after start clears the entries a
//!   previous run of this broker left behind (a crash), and only those.
//! - While idle, the store is checked every few seconds: a lost
//!   connection is found and reopened, and an index that vanished (Redis
//!   restarted without persistence, flushed, or failed over) makes the
//!   broker assert everyone online again, without anyone reconnecting.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tracing::{info, warn};

use crate::time::Instant;
use crate::types::ClientId;

/// Lua: mark a client online and record this broker as its owner.
/// KEYS: hash, owner hash, this broker's index. ARGV: client id, broker id.
pub const ONLINE_SCRIPT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], '1')
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
";

/// Lua: remove a client's entry if this broker still owns it.
/// KEYS: hash, owner hash, this broker's index. ARGV: client id, broker id.
pub const OFFLINE_SCRIPT: &str = r"
redis.call('SREM', KEYS[3], ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
";

/// Lua: remove every entry this broker still owns (stale after a crash).
/// KEYS: hash, owner hash, this broker's index. ARGV: broker id.
pub const CLEAR_STALE_SCRIPT: &str = r"
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('HGET', KEYS[2], id) == ARGV[1] then
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    n = n + 1
  end
end
redis.call('DEL', KEYS[3])
return n
";

/// Where presence lives in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceKeys {
    /// The hash other services read: `mqtt` by default.
    pub hash: String,
    /// Who set each entry: `<hash>:owner`.
    pub owners: String,
    /// The ids this broker set: `<hash>:broker:<broker-id>`.
    pub index: String,
    /// This broker's name among those sharing the hash.
    pub broker_id: String,
}

impl PresenceKeys {
    /// The keys for hash `hash` and broker `broker_id`.
    pub fn new(hash: &str, broker_id: &str) -> Self {
        Self {
            hash: hash.to_owned(),
            owners: format!("{hash}:owner"),
            index: format!("{hash}:broker:{broker_id}"),
            broker_id: broker_id.to_owned(),
        }
    }
}

/// One Redis call of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PresenceCommand {
    /// `EXISTS` this broker's index: alone in its batch, answered with
    /// [`PresenceSync::handle_verified`].
    Verify,
    /// Run [`CLEAR_STALE_SCRIPT`].
    ClearStale,
    /// Run [`ONLINE_SCRIPT`] for the client.
    Online(ClientId),
    /// Run [`OFFLINE_SCRIPT`] for the client.
    Offline(ClientId),
}

/// Back-off and batching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PresenceSettings {
    /// Most commands in one pipeline.
    pub max_batch: usize,
    /// First reconnection delay.
    pub backoff_min: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
    /// How often an idle store is checked.
    pub verify_interval: Duration,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            max_batch: 512,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            verify_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Link {
    /// No connection; try again at this instant.
    Down { retry_at: Instant },
    /// A connection attempt is under way.
    Connecting,
    /// Connected and authenticated.
    Up,
}

/// The presence store's state machine. See the module docs.
///
/// It is `Clone + Eq + Hash` (ordered maps only) so that a model checker
/// can keep whole brokers' worth of it in its states.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresenceSync {
    settings: PresenceSettings,
    online: BTreeSet<ClientId>,
    /// Latest unconfirmed state per client, in order of first change.
    unconfirmed: BTreeMap<ClientId, bool>,
    order: VecDeque<ClientId>,
    in_flight: Option<Vec<PresenceCommand>>,
    link: Link,
    backoff: Duration,
    stale_cleared: bool,
    /// When the idle store is next checked.
    verify_at: Instant,
    /// Client changes whose write failed (each is tried again).
    failed_writes: u64,
}

impl PresenceSync {
    /// A presence store that will connect as soon as it is polled.
    pub fn new(settings: PresenceSettings) -> Self {
        Self {
            settings,
            online: BTreeSet::new(),
            unconfirmed: BTreeMap::new(),
            order: VecDeque::new(),
            in_flight: None,
            link: Link::Down { retry_at: Instant::ZERO },
            backoff: settings.backoff_min,
            stale_cleared: false,
            verify_at: Instant::ZERO,
            failed_writes: 0,
        }
    }

    /// Records the broker's `MarkOnline` (`online = true`) or `MarkOffline`.
    pub fn handle_change(&mut self, client: &ClientId, online: bool) {
        if online {
            info!("Updating client {client} to online");
            self.online.insert(client.clone());
        } else {
            info!("Updating client {client} to offline");
            self.online.remove(client);
        }
        self.note(client.clone(), online);
    }

    fn note(&mut self, client: ClientId, online: bool) {
        if self.unconfirmed.insert(client.clone(), online).is_none() {
            self.order.push_back(client);
        }
    }

    /// Whether the runtime should start connecting now; if so the state
    /// moves to connecting until [`handle_connected`](Self::handle_connected)
    /// or [`handle_failure`](Self::handle_failure).
    #[must_use]
    pub fn poll_connect(&mut self, now: Instant) -> bool {
        match self.link {
            Link::Down { retry_at } if retry_at <= now => {
                self.link = Link::Connecting;
                true
            }
            _ => false,
        }
    }

    /// The connection is up and authenticated: everything online is
    /// asserted again, after the stale entries are cleared on first contact.
    pub fn handle_connected(&mut self, now: Instant) {
        info!(online = self.online.len(), "presence store connected");
        self.link = Link::Up;
        self.backoff = self.settings.backoff_min;
        self.verify_at = now + self.settings.verify_interval;
        self.reassert();
    }

    fn reassert(&mut self) {
        let online: Vec<ClientId> = self.online.iter().cloned().collect();
        for client in online {
            self.note(client, true);
        }
    }

    /// A connection attempt or a batch failed: the batch's changes wait
    /// again (unless newer ones replaced them) and the connection is retried
    /// after a back-off.
    pub fn handle_failure(&mut self, now: Instant, error: &str) {
        warn!(retry_in_ms = self.backoff.as_millis() as u64, "presence store unavailable: {error}");
        if let Some(batch) = self.in_flight.take() {
            for command in batch {
                match command {
                    PresenceCommand::ClearStale | PresenceCommand::Verify => {}
                    PresenceCommand::Online(client) => {
                        self.failed_writes += 1;
                        self.requeue(client, true);
                    }
                    PresenceCommand::Offline(client) => {
                        self.failed_writes += 1;
                        self.requeue(client, false);
                    }
                }
            }
        }
        self.link = Link::Down { retry_at: now + self.backoff };
        self.backoff = (self.backoff * 2).min(self.settings.backoff_max);
    }

    fn requeue(&mut self, client: ClientId, online: bool) {
        if !self.unconfirmed.contains_key(&client) {
            self.unconfirmed.insert(client.clone(), online);
            self.order.push_front(client);
        }
    }

    /// The in-flight batch was applied.
    pub fn handle_batch_done(&mut self, now: Instant) {
        if let Some(batch) = self.in_flight.take()
            && batch.first() == Some(&PresenceCommand::ClearStale)
        {
            self.stale_cleared = true;
        }
        self.verify_at = now + self.settings.verify_interval;
    }

    /// The answer to [`PresenceCommand::Verify`]: whether this broker's
    /// index is still in Redis. If it vanished, Redis lost its data and
    /// everyone online is asserted again.
    pub fn handle_verified(&mut self, now: Instant, intact: bool) {
        self.in_flight = None;
        self.verify_at = now + self.settings.verify_interval;
        if !intact && !self.online.is_empty() {
            warn!(
                online = self.online.len(),
                "presence entries vanished from Redis (restart or flush): writing them again"
            );
            self.reassert();
        }
    }

    /// The next batch to run as one pipeline, when connected and no batch
    /// is in flight. The runtime must answer with
    /// [`handle_batch_done`](Self::handle_batch_done) or
    /// [`handle_failure`](Self::handle_failure).
    #[must_use]
    pub fn poll_batch(&mut self, now: Instant) -> Option<&[PresenceCommand]> {
        if self.link != Link::Up || self.in_flight.is_some() {
            return None;
        }
        if self.unconfirmed.is_empty() && self.stale_cleared {
            // Idle: only the periodic check, and only if there is
            // something to lose.
            if self.online.is_empty() || now < self.verify_at {
                return None;
            }
            return Some(self.in_flight.insert(vec![PresenceCommand::Verify]));
        }
        let mut batch = Vec::new();
        if !self.stale_cleared {
            batch.push(PresenceCommand::ClearStale);
        }
        while batch.len() < self.settings.max_batch {
            let Some(client) = self.order.pop_front() else { break };
            let Some(online) = self.unconfirmed.remove(&client) else { continue };
            batch.push(if online { PresenceCommand::Online(client) } else { PresenceCommand::Offline(client) });
        }
        if batch.is_empty() {
            return None;
        }
        Some(self.in_flight.insert(batch))
    }

    /// When [`poll_connect`](Self::poll_connect) or the periodic check
    /// next needs a call.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.link {
            Link::Down { retry_at } => Some(retry_at),
            Link::Up if self.in_flight.is_none() && !self.online.is_empty() => Some(self.verify_at),
            _ => None,
        }
    }

    /// Clients online now.
    pub fn online(&self) -> &BTreeSet<ClientId> {
        &self.online
    }

    /// Changes not yet confirmed by Redis.
    pub fn pending(&self) -> usize {
        self.unconfirmed.len() + self.in_flight.as_ref().map_or(0, Vec::len)
    }

    /// Client changes not yet written to Redis: waiting, or in the batch
    /// under way (the checks and the clean-up of stale entries aside).
    pub fn pending_changes(&self) -> usize {
        let writes = |c: &&PresenceCommand| matches!(c, PresenceCommand::Online(_) | PresenceCommand::Offline(_));
        self.unconfirmed.len() + self.in_flight.iter().flatten().filter(writes).count()
    }

    /// Client changes whose write to Redis failed since start (each was
    /// kept and is written again once Redis answers).
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes
    }

    /// Whether the store is connected.
    pub fn is_connected(&self) -> bool {
        self.link == Link::Up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::new(s)
    }

    fn at(ms: u64) -> Instant {
        Instant::from_origin(Duration::from_millis(ms))
    }

    fn connected() -> PresenceSync {
        let mut p = PresenceSync::new(PresenceSettings::default());
        assert!(p.poll_connect(at(0)));
        p.handle_connected(at(0));
        p
    }

    #[test]
    fn first_batch_clears_stale_entries_once() {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        assert_eq!(
            p.poll_batch(at(0)).map(<[_]>::to_vec),
            Some(vec![PresenceCommand::ClearStale, PresenceCommand::Online(id("a"))])
        );
        p.handle_batch_done(at(0));
        p.handle_change(&id("b"), true);
        assert_eq!(p.poll_batch(at(0)).map(<[_]>::to_vec), Some(vec![PresenceCommand::Online(id("b"))]));
    }

    #[test]
    fn pending_and_failed_writes_count_client_changes_only() {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        p.handle_change(&id("b"), true);
        assert_eq!(p.poll_batch(at(0)).map(<[_]>::len), Some(3), "the stale entries' clean-up and two changes");
        assert_eq!((p.pending_changes(), p.failed_writes()), (2, 0));
        p.handle_failure(at(0), "down");
        assert_eq!((p.pending_changes(), p.failed_writes(), p.is_connected()), (2, 2, false));
        assert!(p.poll_connect(at(1000)));
        p.handle_connected(at(1000));
        let _ = p.poll_batch(at(1000));
        p.handle_batch_done(at(1000));
        assert_eq!((p.pending_changes(), p.failed_writes()), (0, 2));
    }

    #[test]
    fn takeover_collapses_to_online() {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        let _ = p.poll_batch(at(0));
        p.handle_batch_done(at(0));
        p.handle_change(&id("a"), false);
        p.handle_change(&id("a"), true);
        assert_eq!(p.poll_batch(at(0)).map(<[_]>::to_vec), Some(vec![PresenceCommand::Online(id("a"))]));
    }

    #[test]
    fn one_batch_in_flight_keeps_order_per_client() {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        let first = p.poll_batch(at(0)).map(<[_]>::to_vec);
        assert!(first.is_some());
        p.handle_change(&id("a"), false);
        assert!(p.poll_batch(at(0)).is_none(), "second batch waits for the first");
        p.handle_batch_done(at(0));
        assert_eq!(p.poll_batch(at(0)).map(<[_]>::to_vec), Some(vec![PresenceCommand::Offline(id("a"))]));
    }

    #[test]
    fn failure_requeues_and_reconnect_reasserts_everyone_online() {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        p.handle_change(&id("b"), true);
        let _ = p.poll_batch(at(0));
        p.handle_failure(at(10), "connection reset");
        p.handle_change(&id("b"), false);
        p.handle_change(&id("c"), true);
        assert!(p.poll_batch(at(0)).is_none());
        assert!(!p.poll_connect(at(50)), "back-off not over");
        assert_eq!(p.poll_timeout(), Some(at(110)));
        assert!(p.poll_connect(at(110)));
        p.handle_connected(at(0));
        let batch = p.poll_batch(at(0)).map(<[_]>::to_vec).unwrap_or_default();
        assert_eq!(batch[0], PresenceCommand::ClearStale);
        let mut rest = batch[1..].to_vec();
        rest.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            rest,
            vec![PresenceCommand::Offline(id("b")), PresenceCommand::Online(id("a")), PresenceCommand::Online(id("c"))]
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_on_success() {
        let mut p = PresenceSync::new(PresenceSettings::default());
        let mut now = at(0);
        let mut delays = Vec::new();
        for _ in 0..8 {
            assert!(p.poll_connect(now));
            p.handle_failure(now, "refused");
            let next = p.poll_timeout().unwrap_or(now);
            delays.push((next - now).as_millis());
            now = next;
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert!(p.poll_connect(now));
        p.handle_connected(at(0));
        p.handle_failure(now, "reset");
        assert_eq!(p.poll_timeout(), Some(now + Duration::from_millis(100)));
    }

    #[test]
    fn memory_is_bounded_by_clients_while_down() {
        let mut p = PresenceSync::new(PresenceSettings::default());
        for _ in 0..1000 {
            p.handle_change(&id("flappy"), true);
            p.handle_change(&id("flappy"), false);
        }
        assert_eq!(p.pending(), 1);
    }

    #[test]
    fn idle_store_is_verified_and_healed_when_its_index_vanished() {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        let _ = p.poll_batch(at(0));
        p.handle_batch_done(at(0));
        assert!(p.poll_batch(at(4_999)).is_none());
        assert_eq!(p.poll_timeout(), Some(at(5_000)));
        assert_eq!(p.poll_batch(at(5_000)).map(<[_]>::to_vec), Some(vec![PresenceCommand::Verify]));
        p.handle_verified(at(5_001), true);
        assert!(p.poll_batch(at(5_002)).is_none());
        assert_eq!(p.poll_batch(at(10_001)).map(<[_]>::to_vec), Some(vec![PresenceCommand::Verify]));
        p.handle_verified(at(10_002), false);
        assert_eq!(p.poll_batch(at(10_003)).map(<[_]>::to_vec), Some(vec![PresenceCommand::Online(id("a"))]));
    }

    #[test]
    fn nobody_online_means_no_checks() {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        p.handle_change(&id("a"), false);
        let _ = p.poll_batch(at(0));
        p.handle_batch_done(at(0));
        assert_eq!(p.poll_timeout(), None);
        assert!(p.poll_batch(at(60_000)).is_none());
    }

    #[test]
    fn batches_are_capped() {
        let mut p = PresenceSync::new(PresenceSettings { max_batch: 3, ..PresenceSettings::default() });
        assert!(p.poll_connect(at(0)));
        p.handle_connected(at(0));
        for n in 0..5 {
            p.handle_change(&id(&n.to_string()), true);
        }
        assert_eq!(p.poll_batch(at(0)).map(<[_]>::len), Some(3));
        p.handle_batch_done(at(0));
        assert_eq!(p.poll_batch(at(0)).map(<[_]>::len), Some(3));
        p.handle_batch_done(at(0));
        assert!(p.poll_batch(at(0)).is_none());
    }
}
