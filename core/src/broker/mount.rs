//! `mount_point`: the prefix a listener puts on every topic of its
//! clients on the way in and takes off on the way out, so that they share
//! only the part of the topic tree below it.
//!
//! Everything inside the broker (subscriptions, retained messages, the
//! store, ACL checks) sees the mounted topic, as in Mosquitto; only what
//! crosses the listener's wire is unmounted.

use crate::topic::{TopicFilter, TopicName};

/// `topic` below `mount`, or `None` if the result is too long to be a
/// topic.
pub(super) fn topic(mount: &str, topic: &TopicName) -> Option<TopicName> {
    TopicName::new(format!("{mount}{}", topic.as_str())).ok()
}

/// `filter` below `mount`, or `None` if the result is not a filter: too
/// long, or a wildcard joined to the end of a mount point that does not
/// end a level (`m` and `#`).
pub(super) fn filter(mount: &str, filter: &TopicFilter) -> Option<TopicFilter> {
    TopicFilter::new(format!("{mount}{}", filter.as_str())).ok()
}

/// How a client whose listener has `mount` sees a message on `topic`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// As it is: the listener has no mount point.
    AsIs,
    /// Without the mount point.
    Unmounted(TopicName),
    /// Not at all: the topic is not below the mount point (`a` or `a/`
    /// for mount point `a/`, matched by its filter `a/#`; a session
    /// subscribed on another listener).
    Hidden,
}

/// How a client of a listener with `mount` sees `topic`.
pub(super) fn seen(mount: Option<&str>, topic: &TopicName) -> Seen {
    match mount {
        None => Seen::AsIs,
        Some(mount) => topic.strip_prefix(mount).map_or(Seen::Hidden, Seen::Unmounted),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn name(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    #[test]
    fn mounting_prefixes_names_and_filters() {
        assert_eq!(topic("m/", &name("a/b")), Some(name("m/a/b")));
        assert_eq!(topic("m", &name("/a")), Some(name("m/a")));
        let f = TopicFilter::new("+/x/#").unwrap();
        assert_eq!(filter("m/", &f), Some(TopicFilter::new("m/+/x/#").unwrap()));
    }

    #[test]
    fn what_cannot_be_mounted_is_none() {
        // A wildcard glued to a mount point that does not end a level.
        assert_eq!(filter("m", &TopicFilter::new("#").unwrap()), None);
        assert_eq!(filter("m", &TopicFilter::new("+/a").unwrap()), None);
        let long = "x".repeat(65_535);
        assert_eq!(topic("m/", &name(&long)), None);
        assert_eq!(filter("m/", &TopicFilter::new(long).unwrap()), None);
    }

    #[test]
    fn only_topics_below_the_mount_point_are_seen() {
        assert_eq!(seen(None, &name("a/b")), Seen::AsIs);
        assert_eq!(seen(Some("m/"), &name("m/a/b")), Seen::Unmounted(name("a/b")));
        assert_eq!(seen(Some("m/"), &name("m/$SYS/x")), Seen::Unmounted(name("$SYS/x")));
        for outside in ["m/", "m", "n/a", "a/m/b"] {
            assert_eq!(seen(Some("m/"), &name(outside)), Seen::Hidden, "{outside}");
        }
    }
}
