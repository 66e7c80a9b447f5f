//! Time as the core sees it: values handed in by the caller, never read
//! from a clock.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A reading of a monotonic clock, as the time elapsed since an origin the
/// caller chose (a runtime takes its start; a simulation takes zero).
///
/// Held as nanoseconds in a `u64` (584 years), half the size of a
/// `Duration`: every connection keeps a few.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin itself.
    pub const ZERO: Self = Self(0);

    /// The instant `since_origin` after the origin (saturating).
    pub fn from_origin(since_origin: Duration) -> Self {
        Self(nanos(since_origin))
    }

    /// Time elapsed since the origin.
    pub fn since_origin(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// `d` in nanoseconds, saturating at `u64::MAX`.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        Self(self.0.saturating_add(nanos(rhs)))
    }
}

impl Sub<Self> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Self) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// Wall-clock time as seconds since the Unix epoch; fractions allowed.
/// Only payload expiry (`expired_at`) looks at it.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct UnixTime(f64);

impl UnixTime {
    /// The time `secs` seconds after the epoch.
    pub fn from_secs_f64(secs: f64) -> Self {
        Self(secs)
    }

    /// Seconds since the epoch.
    pub fn as_secs_f64(self) -> f64 {
        self.0
    }
}

/// The current moment, passed to every call that depends on time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Now {
    /// Monotonic time: keepalive and other deadlines.
    pub instant: Instant,
    /// Wall-clock time: payload expiry.
    pub unix: UnixTime,
}

impl Now {
    /// A moment given by both clocks.
    pub fn new(instant: Instant, unix: UnixTime) -> Self {
        Self { instant, unix }
    }
}
