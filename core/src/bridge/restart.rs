//! When a bridge connects again: `restart_timeout` as Mosquitto reads it.
//! One value is a constant delay (as Mosquitto 2.0.15 honours it); two
//! are a base and a cap for "decorrelated jitter": each attempt waits a
//! random time between the base and three times the last wait, at most
//! the cap, and a CONNACK starts again from the base.

use std::time::Duration;

use crate::conf::RestartTimeout;

/// A bridge's restart delays.
#[derive(Debug, Clone)]
pub(crate) struct Restart {
    timeout: RestartTimeout,
    /// The last wait, in seconds.
    last: u32,
    /// The state of a xorshift generator: the jitter needs no more.
    rng: u64,
}

impl Restart {
    /// Delays for `timeout`; `seed` varies the jitter between bridges and
    /// runs.
    pub(crate) fn new(timeout: RestartTimeout, seed: u64) -> Self {
        let last = match timeout {
            RestartTimeout::Constant(secs) => secs,
            RestartTimeout::Backoff { base, .. } => base,
        };
        // xorshift's state must not be zero.
        Self { timeout, last, rng: seed | 1 }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let secs = match self.timeout {
            RestartTimeout::Constant(secs) => secs,
            RestartTimeout::Backoff { base, cap } => {
                let high = self.last.saturating_mul(3).max(base);
                let span = u64::from(high - base) + 1;
                let pick = base + u32::try_from(self.random() % span).unwrap_or(0);
                self.last = pick.min(cap);
                self.last
            }
        };
        Duration::from_secs(u64::from(secs))
    }

    /// A CONNACK: the next wait starts from the base again.
    pub(crate) fn reset(&mut self) {
        if let RestartTimeout::Backoff { base, .. } = self.timeout {
            self.last = base;
        }
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    #[test]
    fn one_value_is_a_constant_delay() {
        let mut restart = Restart::new(RestartTimeout::Constant(7), 1);
        for _ in 0..10 {
            assert_eq!(restart.next_delay(), Duration::from_secs(7));
        }
    }

    #[test]
    fn a_connack_starts_the_backoff_again() {
        let mut restart = Restart::new(RestartTimeout::Backoff { base: 5, cap: 30 }, 42);
        let grown = (0..20).map(|_| restart.next_delay()).max();
        assert!(grown > Some(Duration::from_secs(5)), "{grown:?}");
        restart.reset();
        assert!(restart.next_delay() <= Duration::from_secs(15));
    }

    quickcheck! {
        fn jittered_delays_stay_between_base_and_cap(base: u8, extra: u8, seed: u64, steps: u8) -> bool {
            let base = u32::from(base).max(1);
            let cap = base + u32::from(extra);
            let mut restart = Restart::new(RestartTimeout::Backoff { base, cap }, seed);
            (0..steps).all(|_| {
                let delay = restart.next_delay().as_secs();
                delay >= u64::from(base) && delay <= u64::from(cap)
            })
        }
    }
}
