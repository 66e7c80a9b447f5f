//! Presence across brokers sharing one Redis.
//!
//! Each broker runs the real [`PresenceSync`], driven as the runtime's
//! `poll_presence` drives it (`runtime-common/src/driver.rs`): after
//! every event it is polled for a connection attempt and a batch. Redis
//! is [`Redis`], whose methods do what the Lua scripts in
//! `core/src/presence.rs` ([`RENEW_SCRIPT`], [`ONLINE_SCRIPT`],
//! [`OFFLINE_SCRIPT`], [`CLEAR_STALE_SCRIPT`]) do, line by line.
//!
//! What it leaves out:
//! - Time is per broker and jumps to the next deadline
//!   ([`PresenceSync::poll_timeout`]); the lengths of back-offs and of the
//!   renewal interval do not matter, only their order within one broker.
//!   A lease runs out when the model says so ([`Action::LeaseLapses`]),
//!   whatever the broker's clock shows: that covers a pause, an outage,
//!   late renewals. The periodic renewal is only waited for when it would
//!   fail or find the lease lapsed: one that finds it changes nothing but
//!   the time of the next, and skipping it keeps the state space finite.
//! - A broker that crashes starts again at once: a broker that stays
//!   down, whose entries the others sweep once its lease lapsed, is left
//!   to the end-to-end tests (`tests/e2e/test_presence.py`).
//! - A client's connection is abstracted to "connected at this broker":
//!   no packets, wills or sessions, only the `MarkOnline`/`MarkOffline`
//!   the broker emits (a takeover at one broker emits both, in that
//!   order, `core/src/broker.rs`).
//! - A client id is live at one broker at a time. Connecting at another
//!   broker supersedes the old connection, which that broker still
//!   believes in (a half-open socket) until it ends: the model keeps it
//!   and requires it to have ended before it calls the system quiet.
//! - A failed pipeline may have applied any prefix of its commands; a
//!   crashed broker's batch in flight may likewise be applied in part,
//!   but only before the broker starts again (Redis reads a dead client's
//!   socket long before a restarted process reconnects).
//! - Redis restarting empty drops every connection; a flush empties it
//!   and leaves the connections up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use culex_core::presence::{PresenceCommand, PresenceSettings, PresenceSync};
use culex_core::time::Instant;
use culex_core::types::ClientId;
use stateright::{Model, Property};

#[cfg(doc)]
use culex_core::presence::{CLEAR_STALE_SCRIPT, OFFLINE_SCRIPT, ONLINE_SCRIPT, RENEW_SCRIPT};

/// The bounds of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceModel {
    /// Brokers sharing the hash.
    pub brokers: u8,
    /// Distinct client ids.
    pub clients: u8,
    /// Broker crashes, Redis restarts and flushes allowed in one run.
    pub disasters: u8,
    /// Failed Redis calls allowed in one run.
    pub failures: u8,
    /// Whether Redis may be flushed while connections stay up.
    pub flushes: bool,
}

/// Redis as the presence scripts see it: the hash, the set of brokers,
/// one index set per broker (an empty set does not exist, as in Redis)
/// and the brokers' leases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Redis {
    /// The `mqtt` hash (every value is `'1'`).
    pub hash: BTreeSet<ClientId>,
    /// `<hash>:brokers`.
    pub brokers: BTreeSet<u8>,
    /// `<hash>:broker:<id>`, by broker.
    pub index: BTreeMap<u8, BTreeSet<ClientId>>,
    /// The brokers whose `<hash>:lease:<id>` exists.
    pub leases: BTreeSet<u8>,
    /// Set when an entry was removed while a live broker held it.
    pub foreign_delete: Option<(u8, ClientId)>,
}

impl Redis {
    /// The scripts' `held(id, except)`.
    fn held(&self, id: &ClientId, except: u8) -> bool {
        // for _, other in ipairs(redis.call('SMEMBERS', KEYS[2])) do
        self.brokers.iter().any(|&other| {
            // other ~= except and EXISTS lease and SISMEMBER index
            other != except && self.leases.contains(&other) && self.index.get(&other).is_some_and(|s| s.contains(id))
        })
    }

    /// `ONLINE_SCRIPT`, with `broker` as `ARGV[1]`.
    fn online(&mut self, client: &ClientId, broker: u8) {
        // redis.call('HSET', KEYS[1], ARGV[3], '1')
        self.hash.insert(client.clone());
        // redis.call('SADD', KEYS[3], ARGV[3])
        self.index.entry(broker).or_default().insert(client.clone());
        // redis.call('SADD', KEYS[2], ARGV[1])
        self.brokers.insert(broker);
    }

    /// `OFFLINE_SCRIPT`.
    fn offline(&mut self, client: &ClientId, broker: u8) {
        // redis.call('SREM', KEYS[3], ARGV[3])
        self.srem(broker, client);
        // if held(ARGV[3], ARGV[1]) then return 0 end
        if !self.held(client, broker) {
            // redis.call('HDEL', KEYS[1], ARGV[3])
            self.hdel(client, broker, None);
        }
    }

    /// `CLEAR_STALE_SCRIPT`.
    fn clear_stale(&mut self, broker: u8) {
        // for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
        let members: Vec<ClientId> = self.index.get(&broker).into_iter().flatten().cloned().collect();
        for id in members {
            // if not held(id, ARGV[1]) then HDEL
            if !self.held(&id, broker) {
                self.hdel(&id, broker, Some(broker));
            }
        }
        // redis.call('DEL', KEYS[3])
        self.index.remove(&broker);
    }

    /// `RENEW_SCRIPT`: whether the lease was still there.
    fn renew(&mut self, broker: u8) -> bool {
        // local was_live = redis.call('EXISTS', KEYS[4])
        let was_live = self.leases.contains(&broker);
        // SET KEYS[4] '1' PX ARGV[3]; SADD KEYS[2] ARGV[1]
        self.leases.insert(broker);
        self.brokers.insert(broker);
        let brokers: Vec<u8> = self.brokers.iter().copied().collect();
        for other in brokers {
            // if redis.call('EXISTS', lease of other) == 0 then
            if !self.leases.contains(&other) {
                let members: Vec<ClientId> = self.index.get(&other).into_iter().flatten().cloned().collect();
                for id in members {
                    // if not held(id, other) then HDEL
                    if !self.held(&id, other) {
                        self.hdel(&id, broker, None);
                    }
                }
                // DEL index; SREM KEYS[2] other
                self.index.remove(&other);
                self.brokers.remove(&other);
            }
        }
        was_live
    }

    /// The broker's lease runs out (its key expires).
    pub fn lapse(&mut self, broker: u8) {
        self.leases.remove(&broker);
    }

    fn srem(&mut self, broker: u8, client: &ClientId) {
        if let Some(set) = self.index.get_mut(&broker) {
            set.remove(client);
            if set.is_empty() {
                self.index.remove(&broker);
            }
        }
    }

    /// `HDEL` by `broker`, watching that no live broker holds the entry
    /// (`stale`: the index being cleared, which does not count).
    fn hdel(&mut self, client: &ClientId, broker: u8, stale: Option<u8>) {
        let held_live =
            self.leases.iter().any(|&b| Some(b) != stale && self.index.get(&b).is_some_and(|s| s.contains(client)));
        if held_live && self.foreign_delete.is_none() {
            self.foreign_delete = Some((broker, client.clone()));
        }
        self.hash.remove(client);
    }

    /// Runs one command of `broker`'s; a renewal answers whether the lease
    /// had lapsed.
    pub fn apply(&mut self, command: &PresenceCommand, broker: u8) -> bool {
        match command {
            PresenceCommand::Renew(_) => return !self.renew(broker),
            PresenceCommand::ClearStale => self.clear_stale(broker),
            PresenceCommand::Online(client) => self.online(client, broker),
            PresenceCommand::Offline(client) => self.offline(client, broker),
        }
        false
    }
}

/// One broker process and the runtime around its presence store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Broker {
    /// The real state machine.
    pub sync: PresenceSync,
    /// The process's clock, in milliseconds since it started.
    pub clock: u64,
    /// Clients whose connection this broker holds (stale ones included).
    pub connected: BTreeSet<ClientId>,
    /// A connection attempt is under way.
    pub connecting: bool,
    /// The batch handed to the runtime and not answered yet.
    pub in_flight: Option<Vec<PresenceCommand>>,
    /// The Redis life its connection was opened in.
    pub redis_life: u8,
}

impl Broker {
    fn new() -> Self {
        let mut broker = Self {
            sync: PresenceSync::new(PresenceSettings { max_batch: 2, ..PresenceSettings::default() }),
            clock: 0,
            connected: BTreeSet::new(),
            connecting: false,
            in_flight: None,
            redis_life: 0,
        };
        broker.poll();
        broker
    }

    fn now(&self) -> Instant {
        Instant::from_origin(Duration::from_millis(self.clock))
    }

    /// The runtime's `poll_presence`: start a connection, hand out a batch.
    fn poll(&mut self) {
        let now = self.now();
        if !self.connecting && self.sync.poll_connect(now) {
            self.connecting = true;
        }
        if self.in_flight.is_none()
            && let Some(batch) = self.sync.poll_batch(now)
        {
            self.in_flight = Some(batch.to_vec());
        }
    }

    /// Whether the runtime has nothing to do for it now or later.
    fn is_settled(&self) -> bool {
        let mut probe = self.sync.clone();
        let idle = matches!(probe.poll_batch(self.now()), None | Some([PresenceCommand::Renew(_)]));
        idle && self.in_flight.is_none() && !self.connecting && self.sync.pending() == 0
    }
}

/// The whole system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    /// The brokers, by id.
    pub brokers: Vec<Broker>,
    /// Redis.
    pub redis: Redis,
    /// How often Redis lost its data (connections older than this fail).
    pub redis_life: u8,
    /// The broker each client's latest connection went to, while it lasts.
    pub current: BTreeMap<ClientId, u8>,
    /// Crashes, restarts and flushes so far.
    pub disasters: u8,
    /// Failed calls so far.
    pub failures: u8,
}

/// What can happen next.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// The client connects at the broker (a takeover if it already was
    /// connected there; it supersedes a connection at another broker).
    Connect(u8, u8),
    /// The client's connection at the broker ends (DISCONNECT, a dropped
    /// socket, or the keep-alive of a superseded one).
    Disconnect(u8, u8),
    /// The broker's clock reaches its presence store's next deadline.
    Wait(u8),
    /// The connection attempt succeeds.
    Connected(u8),
    /// The connection attempt fails.
    ConnectFailed(u8),
    /// The batch in flight is applied and answered.
    BatchDone(u8),
    /// The batch fails after applying this many of its commands.
    BatchFailed(u8, usize),
    /// The broker crashes after this many commands of its batch in
    /// flight reached Redis, and starts again.
    Crash(u8, usize),
    /// Redis restarts empty: every connection breaks.
    RedisRestart,
    /// Redis is flushed; connections stay up.
    Flush,
    /// The broker's lease runs out in Redis (it paused, or its renewals
    /// were late), whatever the broker believes.
    LeaseLapses(u8),
}

fn client(n: u8) -> ClientId {
    ClientId::new(format!("c{n}"))
}

impl PresenceModel {
    /// The truth: clients whose latest connection is still open.
    fn truth(state: &State) -> BTreeSet<ClientId> {
        state.current.keys().cloned().collect()
    }

    /// No work left anywhere (nothing to write, send, connect or wait
    /// for) and no superseded connection left open.
    pub fn is_quiet(state: &State) -> bool {
        let stale = state
            .brokers
            .iter()
            .enumerate()
            .any(|(b, broker)| broker.connected.iter().any(|c| state.current.get(c) != Some(&(b as u8))));
        !stale && (0..state.brokers.len()).all(|b| state.brokers[b].is_settled() && !Self::may_wait(state, b as u8))
    }

    /// Whether the broker has a deadline worth reaching: a reconnection,
    /// or a renewal that would fail or find its lease lapsed. One that
    /// finds the lease changes nothing but when the next is due: waiting
    /// for it is skipped, which keeps the state space finite.
    fn may_wait(state: &State, b: u8) -> bool {
        let broker = &state.brokers[b as usize];
        let check_finds_loss = broker.redis_life != state.redis_life || !state.redis.leases.contains(&b);
        broker.sync.poll_timeout().is_some_and(|at| at > broker.now())
            && (!broker.sync.is_connected() || check_finds_loss)
    }

    fn can_fail(&self, state: &State) -> bool {
        state.failures < self.failures
    }
}

impl Model for PresenceModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            brokers: (0..self.brokers).map(|_| Broker::new()).collect(),
            redis: Redis::default(),
            redis_life: 0,
            current: BTreeMap::new(),
            disasters: 0,
            failures: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for (b, broker) in state.brokers.iter().enumerate() {
            let b = b as u8;
            for c in 0..self.clients {
                actions.push(Action::Connect(c, b));
                if broker.connected.contains(&client(c)) {
                    actions.push(Action::Disconnect(c, b));
                }
            }
            if Self::may_wait(state, b) {
                actions.push(Action::Wait(b));
            }
            if broker.connecting {
                actions.push(Action::Connected(b));
                if self.can_fail(state) {
                    actions.push(Action::ConnectFailed(b));
                }
            }
            if let Some(batch) = &broker.in_flight {
                // A connection opened before Redis lost its data is closed.
                if broker.redis_life == state.redis_life {
                    actions.push(Action::BatchDone(b));
                    if self.can_fail(state) {
                        actions.extend((0..=batch.len()).map(|k| Action::BatchFailed(b, k)));
                    }
                } else {
                    actions.push(Action::BatchFailed(b, 0));
                }
            }
            if state.disasters < self.disasters {
                let reached = match &broker.in_flight {
                    Some(batch) if broker.redis_life == state.redis_life => batch.len(),
                    _ => 0,
                };
                actions.extend((0..=reached).map(|k| Action::Crash(b, k)));
            }
        }
        if state.disasters < self.disasters {
            actions.extend(state.redis.leases.iter().map(|&b| Action::LeaseLapses(b)));
            actions.push(Action::RedisRestart);
            if self.flushes {
                actions.push(Action::Flush);
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Connect(c, b) => {
                let id = client(c);
                let broker = &mut state.brokers[b as usize];
                if broker.connected.contains(&id) {
                    // Takeover: the old connection's MarkOffline first.
                    broker.sync.handle_change(&id, false);
                }
                broker.sync.handle_change(&id, true);
                broker.connected.insert(id.clone());
                broker.poll();
                state.current.insert(id, b);
            }
            Action::Disconnect(c, b) => {
                let id = client(c);
                let broker = &mut state.brokers[b as usize];
                broker.connected.remove(&id);
                broker.sync.handle_change(&id, false);
                broker.poll();
                if state.current.get(&id) == Some(&b) {
                    state.current.remove(&id);
                }
            }
            Action::Wait(b) => {
                let broker = &mut state.brokers[b as usize];
                let at = broker.sync.poll_timeout()?;
                broker.clock = (at - Instant::ZERO).as_millis() as u64;
                broker.poll();
            }
            Action::Connected(b) => {
                let broker = &mut state.brokers[b as usize];
                broker.connecting = false;
                broker.redis_life = state.redis_life;
                broker.sync.handle_connected(broker.now());
                broker.poll();
            }
            Action::ConnectFailed(b) => {
                state.failures += 1;
                let broker = &mut state.brokers[b as usize];
                broker.connecting = false;
                broker.sync.handle_failure(broker.now(), "refused");
                broker.poll();
            }
            Action::BatchDone(b) => {
                let broker = &mut state.brokers[b as usize];
                let batch = broker.in_flight.take()?;
                let now = broker.now();
                let mut lease_lapsed = false;
                for command in &batch {
                    lease_lapsed |= state.redis.apply(command, b);
                }
                broker.sync.handle_batch_done(now, lease_lapsed);
                broker.poll();
            }
            Action::BatchFailed(b, applied) => {
                if broker_is_current(&state, b) {
                    state.failures += 1;
                }
                let broker = &mut state.brokers[b as usize];
                let batch = broker.in_flight.take()?;
                for command in batch.iter().take(applied) {
                    state.redis.apply(command, b);
                }
                broker.sync.handle_failure(broker.now(), "reset");
                broker.poll();
            }
            Action::Crash(b, applied) => {
                state.disasters += 1;
                if let Some(batch) = &state.brokers[b as usize].in_flight {
                    for command in batch.iter().take(applied) {
                        state.redis.apply(command, b);
                    }
                }
                state.current.retain(|_, at| *at != b);
                state.brokers[b as usize] = Broker::new();
            }
            Action::RedisRestart => {
                state.disasters += 1;
                state.redis_life += 1;
                state.redis = Redis { foreign_delete: state.redis.foreign_delete.take(), ..Redis::default() };
                // A connection attempt under way now reaches the new Redis.
            }
            Action::LeaseLapses(b) => {
                state.disasters += 1;
                state.redis.lapse(b);
            }
            Action::Flush => {
                state.disasters += 1;
                state.redis = Redis { foreign_delete: state.redis.foreign_delete.take(), ..Redis::default() };
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no entry is removed while a live broker holds it", |_, state: &State| {
                state.redis.foreign_delete.is_none()
            }),
            Property::always("once quiet, every entry is of a client online", |_, state: &State| {
                !Self::is_quiet(state) || state.redis.hash.is_subset(&Self::truth(state))
            }),
            Property::always("once quiet, every client online has its entry", |_, state: &State| {
                !Self::is_quiet(state) || Self::truth(state).is_subset(&state.redis.hash)
            }),
            Property::sometimes("quiet with clients online", |_, state: &State| {
                Self::is_quiet(state) && !state.current.is_empty()
            }),
        ]
    }

    fn format_step(&self, last: &State, action: Action) -> Option<String> {
        let next = self.next_state(last, action)?;
        let mut out = String::new();
        let _ = write!(
            out,
            "hash {:?} index {:?} leases {:?} current {:?}",
            next.redis.hash, next.redis.index, next.redis.leases, next.current
        );
        Some(out)
    }
}

/// Whether the broker's Redis connection belongs to the Redis of now
/// (a call on an older one fails without counting as an injected fault).
fn broker_is_current(state: &State, b: u8) -> bool {
    state.brokers[b as usize].redis_life == state.redis_life
}
