//! Time as the core sees it: values handed in by the caller, never read
//! from a clock.

use std::fmt;
use std::num::NonZeroU64;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A reading of a monotonic clock, as the time elapsed since an origin the
/// caller chose (a runtime takes its start; a simulation takes zero).
///
/// Held as nanoseconds plus one in a `NonZeroU64` (584 years), half the
/// size of a `Duration`, and an `Option<Instant>` is as small: every
/// connection keeps a few.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(NonZeroU64);

impl Instant {
    /// The origin itself.
    pub const ZERO: Self = Self(NonZeroU64::MIN);

    /// The instant `since_origin` after the origin (saturating).
    pub fn from_origin(since_origin: Duration) -> Self {
        Self::ZERO + since_origin
    }

    /// Time elapsed since the origin.
    pub fn since_origin(self) -> Duration {
        self.saturating_duration_since(Self::ZERO)
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.get().saturating_sub(earlier.0.get()))
    }
}

impl Default for Instant {
    fn default() -> Self {
        Self::ZERO
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Instant").field(&self.since_origin().as_nanos()).finish()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_keeps_its_nanoseconds_in_8_bytes_optional_or_not() {
        assert_eq!(size_of::<Option<Instant>>(), 8);
        let at = Instant::from_origin(Duration::from_nanos(5));
        assert_eq!((at.since_origin(), at - Instant::ZERO), (Duration::from_nanos(5), Duration::from_nanos(5)));
        assert_eq!((Instant::ZERO.since_origin(), Instant::default()), (Duration::ZERO, Instant::ZERO));
        assert_eq!(format!("{at:?}"), "Instant(5)");
        assert!(at + Duration::MAX > at && at + Duration::MAX == Instant::ZERO + Duration::MAX, "saturates");
    }
}
