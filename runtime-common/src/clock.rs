//! The runtimes' clock: the one place where time is read, turned into the
//! core's [`Now`] values.

use std::time::{SystemTime, UNIX_EPOCH};

use culex_core::{Instant, Now, UnixTime};

/// A monotonic origin taken at start, plus the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn start() -> Self {
        Self { origin: std::time::Instant::now() }
    }

    /// The current moment for the core.
    pub fn now(&self) -> Now {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default();
        Now::new(Instant::from_origin(self.origin.elapsed()), UnixTime::from_secs_f64(unix))
    }

    /// The runtime instant of a core instant, for arming timers.
    pub fn to_std(&self, at: Instant) -> std::time::Instant {
        self.origin + at.since_origin()
    }
}
