//! Local time as localtime(3) gives it: the zone of `TZ`, else of
//! `/etc/localtime`, else UTC, read once at start.

use culex_core::conf::LocalTime;
use tz::{DateTime, TimeZone};

/// The broker's time zone.
#[derive(Debug, Clone)]
pub(crate) struct LocalZone(TimeZone);

impl LocalZone {
    /// The zone of the environment (`TZ`, then `/etc/localtime`); UTC when
    /// neither can be read, as glibc falls back.
    pub(crate) fn from_env() -> Self {
        let zone = match std::env::var("TZ") {
            Ok(tz) if !tz.is_empty() => TimeZone::from_posix_tz(&tz).or_else(|_| TimeZone::local()),
            _ => TimeZone::local(),
        };
        Self(zone.unwrap_or_else(|_| TimeZone::utc()))
    }

    /// A fixed zone, for tests.
    #[cfg(test)]
    pub(crate) fn posix(tz: &str) -> Self {
        Self(TimeZone::from_posix_tz(tz).unwrap_or_else(|_| TimeZone::utc()))
    }

    /// `unix` seconds, broken down in this zone.
    pub(crate) fn at(&self, unix: i64) -> LocalTime {
        match DateTime::from_timespec(unix, 0, self.0.as_ref()) {
            Ok(t) => LocalTime {
                unix,
                year: t.year(),
                month: t.month(),
                day: t.month_day(),
                hour: t.hour(),
                minute: t.minute(),
                second: t.second(),
                week_day: t.week_day(),
                year_day: t.year_day(),
                utc_offset: t.local_time_type().ut_offset(),
                zone: t.local_time_type().time_zone_designation().to_owned(),
            },
            // Out of the zone's range: the epoch, rather than no line.
            Err(_) => LocalTime {
                unix,
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                week_day: 4,
                year_day: 0,
                utc_offset: 0,
                zone: "UTC".to_owned(),
            },
        }
    }
}

/// Seconds since the epoch, now.
pub(crate) fn unix_now() -> i64 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_zones_follow_their_summer_time_rules() {
        let paris = LocalZone::posix("CET-1CEST,M3.5.0,M10.5.0/3");
        let winter = paris.at(1_709_193_907);
        assert_eq!((winter.hour, winter.utc_offset, winter.zone.as_str()), (9, 3600, "CET"));
        assert_eq!((winter.year, winter.month, winter.day, winter.week_day, winter.year_day), (2024, 2, 29, 4, 59));
        let summer = paris.at(1_719_792_000);
        assert_eq!((summer.hour, summer.utc_offset, summer.zone.as_str()), (2, 7200, "CEST"));
        let utc = LocalZone::posix("UTC0").at(0);
        assert_eq!((utc.year, utc.hour, utc.zone.as_str()), (1970, 0, "UTC"));
    }
}
