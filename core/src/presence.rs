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
//! - Several brokers may share the hash. Each records the ids it holds
//!   online in its own index (`<key>:broker:<broker-id>`), and an entry of
//!   the hash stays as long as any live broker's index holds its id: a
//!   broker removing a client deletes the entry only if no other live
//!   broker holds it. The order in which two brokers' writes reach Redis
//!   does not matter, so a late write from the broker a device left cannot
//!   erase the entry of the broker it joined.
//! - "Live" is a lease (`<key>:lease:<broker-id>`, with a time to live in
//!   Redis) that each broker renews while it holds clients. The renewal
//!   also sweeps brokers whose lease lapsed (crashed and not back): their
//!   entries go, except those another live broker holds. A renewal that
//!   finds its own lease lapsed (a long pause or outage, or Redis lost its
//!   data) means the other brokers may have swept this broker's entries:
//!   everyone online is asserted again.
//! - The first successful connection after start clears the entries a
//!   previous run of this broker left behind (a crash), except those
//!   another live broker holds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tracing::{info, warn};

use crate::time::Instant;
use crate::types::ClientId;

/// Lua shared by the scripts: whether a live broker other than `except`
/// holds `id` in its index. Every script gets the same keys and arguments:
/// KEYS: the hash, the set of brokers, this broker's index, this broker's
/// lease. ARGV: this broker's id, the prefix of the other brokers' keys
/// ([`PresenceKeys::prefix`]), then the script's own argument.
macro_rules! held_by_live_broker {
    () => {
        r"
local function held(id, except)
  for _, other in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if other ~= except
      and redis.call('EXISTS', ARGV[2] .. ':lease:' .. other) == 1
      and redis.call('SISMEMBER', ARGV[2] .. ':broker:' .. other, id) == 1 then
      return true
    end
  end
  return false
end
"
    };
}

/// Lua: mark a client online and record it in this broker's index.
/// `ARGV[3]`: the client id.
pub const ONLINE_SCRIPT: &str = r"
redis.call('HSET', KEYS[1], ARGV[3], '1')
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
";

/// Lua: take a client out of this broker's index, and its entry out of the
/// hash unless another live broker holds it. `ARGV[3]`: the client id.
pub const OFFLINE_SCRIPT: &str = concat!(
    held_by_live_broker!(),
    r"
redis.call('SREM', KEYS[3], ARGV[3])
if held(ARGV[3], ARGV[1]) then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[3])
return 1
"
);

/// Lua: remove every entry this broker's index holds (left by a crash),
/// except those another live broker holds.
pub const CLEAR_STALE_SCRIPT: &str = concat!(
    held_by_live_broker!(),
    r"
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if not held(id, ARGV[1]) then
    redis.call('HDEL', KEYS[1], id)
    n = n + 1
  end
end
redis.call('DEL', KEYS[3])
return n
"
);

/// Lua: renew this broker's lease for `ARGV[3]` milliseconds, then sweep the
/// brokers whose lease lapsed. Returns 1 if this broker's lease was still
/// there, 0 if it had lapsed (or Redis lost it).
pub const RENEW_SCRIPT: &str = concat!(
    held_by_live_broker!(),
    r"
local was_live = redis.call('EXISTS', KEYS[4])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
for _, other in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[2] .. ':lease:' .. other) == 0 then
    local index = ARGV[2] .. ':broker:' .. other
    for _, id in ipairs(redis.call('SMEMBERS', index)) do
      if not held(id, other) then
        redis.call('HDEL', KEYS[1], id)
      end
    end
    redis.call('DEL', index)
    redis.call('SREM', KEYS[2], other)
  end
end
return was_live
"
);

/// Where presence lives in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceKeys {
    /// The hash other services read: `mqtt` by default.
    pub hash: String,
    /// What the other keys start with: the hash's name, or on a Redis
    /// Cluster `{<hash>}`, so that every key a script touches hashes to the
    /// hash's own slot.
    pub prefix: String,
    /// The brokers sharing the hash: `<prefix>:brokers`.
    pub brokers: String,
    /// The ids this broker holds online: `<prefix>:broker:<broker-id>`.
    pub index: String,
    /// This broker's lease: `<prefix>:lease:<broker-id>`.
    pub lease: String,
    /// This broker's name among those sharing the hash.
    pub broker_id: String,
}

impl PresenceKeys {
    /// The keys for hash `hash` and broker `broker_id` on one Redis server.
    pub fn new(hash: &str, broker_id: &str) -> Self {
        Self::with_prefix(hash, hash, broker_id)
    }

    /// The keys for hash `hash` and broker `broker_id` on a Redis Cluster.
    pub fn in_hash_slot(hash: &str, broker_id: &str) -> Self {
        Self::with_prefix(hash, &format!("{{{hash}}}"), broker_id)
    }

    /// The same hash's keys for another broker.
    pub fn for_broker(&self, broker_id: &str) -> Self {
        Self::with_prefix(&self.hash, &self.prefix, broker_id)
    }

    fn with_prefix(hash: &str, prefix: &str, broker_id: &str) -> Self {
        Self {
            hash: hash.to_owned(),
            prefix: prefix.to_owned(),
            brokers: format!("{prefix}:brokers"),
            index: format!("{prefix}:broker:{broker_id}"),
            lease: format!("{prefix}:lease:{broker_id}"),
            broker_id: broker_id.to_owned(),
        }
    }
}

/// One Redis call of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PresenceCommand {
    /// Run [`RENEW_SCRIPT`] with this lease: first in a batch when the
    /// lease is due, or alone as the periodic check. Its answer goes to
    /// [`PresenceSync::handle_batch_done`].
    Renew(Duration),
    /// Run [`CLEAR_STALE_SCRIPT`].
    ClearStale,
    /// Run [`ONLINE_SCRIPT`] for the client.
    Online(ClientId),
    /// Run [`OFFLINE_SCRIPT`] for the client.
    Offline(ClientId),
}

/// Back-off, batching and lease settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PresenceSettings {
    /// Most commands in one pipeline.
    pub max_batch: usize,
    /// First reconnection delay.
    pub backoff_min: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
    /// How long a broker's entries outlive its last renewal (`redis_lease`).
    pub lease: Duration,
    /// How often the lease is renewed: a sixth of it, so that a renewal may
    /// fail or be late several times before the lease lapses.
    pub renew_interval: Duration,
}

/// The lease when `redis_lease` is not given.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

impl PresenceSettings {
    /// The defaults with this lease.
    pub fn with_lease(lease: Duration) -> Self {
        Self { lease, renew_interval: lease / 6, ..Self::default() }
    }
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            max_batch: 512,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            lease: DEFAULT_LEASE,
            renew_interval: DEFAULT_LEASE / 6,
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
    /// When the lease is next renewed.
    renew_at: Instant,
    /// Whether a renewal reached Redis on this connection. The first one
    /// may find the lease lapsed without loss: everything online is being
    /// written again after it anyway.
    renewed: bool,
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
            renew_at: Instant::ZERO,
            renewed: false,
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

    /// The connection is up and authenticated: the lease is renewed first
    /// thing, and everything online is asserted again, after the stale
    /// entries are cleared on first contact.
    pub fn handle_connected(&mut self, now: Instant) {
        info!(online = self.online.len(), "presence store connected");
        self.link = Link::Up;
        self.backoff = self.settings.backoff_min;
        self.renew_at = now;
        self.renewed = false;
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
                    PresenceCommand::ClearStale | PresenceCommand::Renew(_) => {}
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

    /// The in-flight batch was applied. `lease_lapsed` is the answer of its
    /// [`PresenceCommand::Renew`] (false if it had none): if this broker's
    /// lease had lapsed, other brokers may have swept its entries, or Redis
    /// lost its data, and everyone online is asserted again.
    pub fn handle_batch_done(&mut self, now: Instant, lease_lapsed: bool) {
        let Some(batch) = self.in_flight.take() else { return };
        if batch.contains(&PresenceCommand::ClearStale) {
            self.stale_cleared = true;
        }
        if !matches!(batch.first(), Some(PresenceCommand::Renew(_))) {
            return;
        }
        self.renew_at = now + self.settings.renew_interval;
        if lease_lapsed && self.renewed && !self.online.is_empty() {
            warn!(
                online = self.online.len(),
                "presence lease lapsed in Redis (a long pause, a restart or a flush): writing entries again"
            );
            self.reassert();
        }
        self.renewed = true;
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
        let renew_due = now >= self.renew_at;
        if self.unconfirmed.is_empty() && self.stale_cleared {
            // Idle: only the renewal, and only while there is something
            // to hold.
            if self.online.is_empty() || !renew_due {
                return None;
            }
            return Some(self.in_flight.insert(vec![PresenceCommand::Renew(self.settings.lease)]));
        }
        let mut batch = Vec::new();
        if renew_due {
            batch.push(PresenceCommand::Renew(self.settings.lease));
        }
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

    /// When [`poll_connect`](Self::poll_connect) or the renewal next needs
    /// a call.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.link {
            Link::Down { retry_at } => Some(retry_at),
            Link::Up if self.in_flight.is_none() && !self.online.is_empty() => Some(self.renew_at),
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

    const RENEW: PresenceCommand = PresenceCommand::Renew(DEFAULT_LEASE);

    fn connected() -> PresenceSync {
        let mut p = PresenceSync::new(PresenceSettings::default());
        assert!(p.poll_connect(at(0)));
        p.handle_connected(at(0));
        p
    }

    /// Connected, with `a` online and written (the first renewal done).
    fn holding_a() -> PresenceSync {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        let _ = p.poll_batch(at(0));
        p.handle_batch_done(at(0), false);
        p
    }

    fn batch(p: &mut PresenceSync, now: Instant) -> Option<Vec<PresenceCommand>> {
        p.poll_batch(now).map(<[_]>::to_vec)
    }

    #[test]
    fn first_batch_renews_the_lease_and_clears_stale_entries_once() {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        assert_eq!(
            batch(&mut p, at(0)),
            Some(vec![RENEW, PresenceCommand::ClearStale, PresenceCommand::Online(id("a"))])
        );
        p.handle_batch_done(at(0), true);
        p.handle_change(&id("b"), true);
        assert_eq!(batch(&mut p, at(0)), Some(vec![PresenceCommand::Online(id("b"))]), "the lease is not due yet");
    }

    #[test]
    fn pending_and_failed_writes_count_client_changes_only() {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        p.handle_change(&id("b"), true);
        assert_eq!(p.poll_batch(at(0)).map(<[_]>::len), Some(4), "the renewal, the clean-up and two changes");
        assert_eq!((p.pending_changes(), p.failed_writes()), (2, 0));
        p.handle_failure(at(0), "down");
        assert_eq!((p.pending_changes(), p.failed_writes(), p.is_connected()), (2, 2, false));
        assert!(p.poll_connect(at(1000)));
        p.handle_connected(at(1000));
        let _ = p.poll_batch(at(1000));
        p.handle_batch_done(at(1000), false);
        assert_eq!((p.pending_changes(), p.failed_writes()), (0, 2));
    }

    #[test]
    fn takeover_collapses_to_online() {
        let mut p = holding_a();
        p.handle_change(&id("a"), false);
        p.handle_change(&id("a"), true);
        assert_eq!(batch(&mut p, at(0)), Some(vec![PresenceCommand::Online(id("a"))]));
    }

    #[test]
    fn one_batch_in_flight_keeps_order_per_client() {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        assert!(batch(&mut p, at(0)).is_some());
        p.handle_change(&id("a"), false);
        assert!(p.poll_batch(at(0)).is_none(), "second batch waits for the first");
        p.handle_batch_done(at(0), false);
        assert_eq!(batch(&mut p, at(0)), Some(vec![PresenceCommand::Offline(id("a"))]));
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
        p.handle_connected(at(110));
        let batch = batch(&mut p, at(110)).unwrap_or_default();
        assert_eq!(batch[..2], [RENEW, PresenceCommand::ClearStale]);
        let mut rest = batch[2..].to_vec();
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
    fn idle_lease_is_renewed_and_a_lapsed_one_rewrites_everyone() {
        let mut p = holding_a();
        assert!(p.poll_batch(at(4_999)).is_none());
        assert_eq!(p.poll_timeout(), Some(at(5_000)));
        assert_eq!(batch(&mut p, at(5_000)), Some(vec![RENEW]));
        p.handle_batch_done(at(5_001), false);
        assert!(p.poll_batch(at(5_002)).is_none());
        assert_eq!(batch(&mut p, at(10_001)), Some(vec![RENEW]));
        p.handle_batch_done(at(10_002), true);
        assert_eq!(batch(&mut p, at(10_003)), Some(vec![PresenceCommand::Online(id("a"))]));
    }

    #[test]
    fn a_busy_store_renews_its_lease_inside_its_batches() {
        let mut p = holding_a();
        p.handle_change(&id("b"), true);
        assert_eq!(batch(&mut p, at(6_000)), Some(vec![RENEW, PresenceCommand::Online(id("b"))]));
        p.handle_batch_done(at(6_000), true);
        assert_eq!(batch(&mut p, at(6_001)).map(|b| b.len()), Some(2), "a and b written again");
    }

    #[test]
    fn the_first_renewal_after_connecting_may_find_the_lease_gone() {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        let _ = p.poll_batch(at(0));
        p.handle_batch_done(at(0), true);
        assert!(p.poll_batch(at(1)).is_none(), "a was written after the renewal: nothing to repeat");
    }

    #[test]
    fn nobody_online_means_no_renewals() {
        let mut p = connected();
        p.handle_change(&id("a"), true);
        p.handle_change(&id("a"), false);
        let _ = p.poll_batch(at(0));
        p.handle_batch_done(at(0), false);
        assert_eq!(p.poll_timeout(), None);
        assert!(p.poll_batch(at(60_000)).is_none());
    }

    #[test]
    fn a_lease_sets_its_renewal_interval() {
        let settings = PresenceSettings::with_lease(Duration::from_secs(3));
        assert_eq!((settings.lease, settings.renew_interval), (Duration::from_secs(3), Duration::from_millis(500)));
        assert_eq!(PresenceSettings::default(), PresenceSettings::with_lease(DEFAULT_LEASE));
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
        p.handle_batch_done(at(0), false);
        assert_eq!(p.poll_batch(at(0)).map(<[_]>::len), Some(3));
        p.handle_batch_done(at(0), false);
        assert_eq!(p.poll_batch(at(0)).map(<[_]>::len), Some(1));
        p.handle_batch_done(at(0), false);
        assert!(p.poll_batch(at(0)).is_none());
    }
}
