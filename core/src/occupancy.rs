//! What the connection and client limits count (`max_connections` per
//! listener, `global_max_connections`, `global_max_clients`): a broker's
//! own count, or the count of every shard of a process, which share one
//! [`Occupancy`] so that a limit holds for the process as it does for one
//! broker (see [`Broker::share_occupancy`](crate::Broker::share_occupancy)).
//!
//! Each count is taken before what it counts exists, by one atomic step
//! that checks the limit and adds: two shards admitting at once cannot
//! both take the last place.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Config;
use crate::peer::ListenerId;

/// The open connections, in all and on each listener with a
/// `max_connections`, and the sessions known.
#[derive(Debug, Default)]
pub struct Occupancy {
    connections: AtomicUsize,
    /// Only the listeners with a limit are counted.
    on_listener: BTreeMap<ListenerId, AtomicUsize>,
    sessions: AtomicUsize,
}

impl Occupancy {
    /// Counts for the listeners of `config`.
    pub fn new(config: &Config) -> Self {
        let on_listener = config.listener_max_connections.keys().map(|&id| (id, AtomicUsize::new(0))).collect();
        Self { on_listener, ..Self::default() }
    }

    /// Takes a place for a connection on `listener`, unless its
    /// `max_connections` or `global_max_connections` (`max`) is reached:
    /// whether it did. Given back by [`disconnect`](Self::disconnect).
    pub(crate) fn try_connect(&self, listener: ListenerId, config: &Config) -> bool {
        let per_listener = self.on_listener.get(&listener).zip(config.listener_max_connections.get(&listener));
        if let Some((count, &max)) = per_listener
            && !take_below(count, Some(max))
        {
            return false;
        }
        if take_below(&self.connections, config.max_connections) {
            return true;
        }
        if let Some((count, _)) = per_listener {
            count.fetch_sub(1, Ordering::Relaxed);
        }
        false
    }

    /// Gives back the place of a connection on `listener`.
    pub(crate) fn disconnect(&self, listener: ListenerId) {
        if let Some(count) = self.on_listener.get(&listener) {
            count.fetch_sub(1, Ordering::Relaxed);
        }
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes a place for a new session, unless `max` sessions are known
    /// (`global_max_clients`): whether it did. Given back by
    /// [`forget_session`](Self::forget_session).
    pub(crate) fn try_add_session(&self, max: Option<usize>) -> bool {
        take_below(&self.sessions, max)
    }

    /// Counts a session kept whatever the limit: a restored one, or one
    /// that replaces a session just forgotten.
    pub(crate) fn keep_session(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back a session's place.
    pub(crate) fn forget_session(&self) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
    }

    /// The open connections counted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// The sessions counted.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }
}

/// Adds one to `count` if it is below `max` (always without one).
fn take_below(count: &AtomicUsize, max: Option<usize>) -> bool {
    count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| max.is_none_or(|max| n < max).then_some(n + 1)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listener_max: Option<usize>, max: Option<usize>) -> Config {
        let mut config = Config { max_connections: max, ..Config::default() };
        if let Some(limit) = listener_max {
            config.listener_max_connections.insert(ListenerId(1), limit);
        }
        config
    }

    #[test]
    fn a_listener_full_or_the_broker_full_refuses_and_a_disconnect_makes_room() {
        let config = config(Some(2), Some(3));
        let occupancy = Occupancy::new(&config);
        assert!(occupancy.try_connect(ListenerId(1), &config));
        assert!(occupancy.try_connect(ListenerId(1), &config));
        assert!(!occupancy.try_connect(ListenerId(1), &config), "listener 1 is full");
        assert!(occupancy.try_connect(ListenerId(0), &config));
        assert!(!occupancy.try_connect(ListenerId(0), &config), "the broker is full");
        assert_eq!(occupancy.connections(), 3);
        occupancy.disconnect(ListenerId(0));
        // Listener 1 stays full; the place given back is listener 0's.
        assert!(!occupancy.try_connect(ListenerId(1), &config));
        assert!(occupancy.try_connect(ListenerId(0), &config));
        occupancy.disconnect(ListenerId(1));
        occupancy.disconnect(ListenerId(0));
        assert!(occupancy.try_connect(ListenerId(1), &config));
    }

    #[test]
    fn a_listener_refused_by_the_broker_limit_keeps_its_own_count() {
        let config = config(Some(5), Some(1));
        let occupancy = Occupancy::new(&config);
        assert!(occupancy.try_connect(ListenerId(0), &config));
        assert!(!occupancy.try_connect(ListenerId(1), &config));
        occupancy.disconnect(ListenerId(0));
        assert!(occupancy.try_connect(ListenerId(1), &config));
        assert_eq!(occupancy.connections(), 1);
    }

    #[test]
    fn sessions_up_to_the_limit_and_kept_ones_beyond_it() {
        let occupancy = Occupancy::default();
        assert!(occupancy.try_add_session(Some(1)));
        assert!(!occupancy.try_add_session(Some(1)));
        occupancy.keep_session();
        assert_eq!(occupancy.sessions(), 2);
        occupancy.forget_session();
        occupancy.forget_session();
        assert!(occupancy.try_add_session(Some(1)));
    }

    /// Shards admitting at once never pass the limit together.
    #[test]
    fn threads_admitting_at_once_take_exactly_the_places_there_are() {
        let config = config(None, Some(100));
        let occupancy = std::sync::Arc::new(Occupancy::new(&config));
        let admitted: usize = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (occupancy, config) = (&occupancy, &config);
                    scope.spawn(move || (0..1000).filter(|_| occupancy.try_connect(ListenerId(0), config)).count())
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
        });
        assert_eq!(admitted, 100);
        assert_eq!(occupancy.connections(), 100);
    }
}
