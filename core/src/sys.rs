//! `$SYS` statistics: the broker's figures published as retained messages
//! under `$SYS/broker/`, with Mosquitto's topic names, every
//! `sys_interval`, each topic only when its value changed. The bridges'
//! figures ([`bridge`](crate::bridge)) go out the same way.

use std::collections::HashMap;
use std::time::Duration;

use crate::broker::Stats;
use crate::time::Instant;

/// Figures published retained every `sys_interval`, each only when its
/// value changed: the broker's own and each bridge's.
#[derive(Debug, Default)]
pub(crate) struct Periodic {
    next: Option<Instant>,
    published: HashMap<String, String>,
}

impl Periodic {
    /// Starts the clock; the first figures go out at once. A zero
    /// interval publishes nothing.
    pub(crate) fn start(&mut self, now: Instant, interval: Duration) {
        if self.next.is_none() && !interval.is_zero() {
            self.next = Some(now);
        }
    }

    /// When figures are next due.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.next
    }

    /// Whether figures are due at `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.next.is_some_and(|next| next <= now)
    }

    /// Whether figures are due at `now`; if so, the next time is set.
    pub(crate) fn due(&mut self, now: Instant, interval: Duration) -> bool {
        if !self.is_due(now) {
            return false;
        }
        self.next = Some(now + interval);
        true
    }

    /// Those of `figures` whose value changed since they were last
    /// published (all, the first time).
    pub(crate) fn changed(&mut self, figures: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
        let mut changed = Vec::new();
        for (topic, value) in figures {
            if self.published.get(&topic) != Some(&value) {
                self.published.insert(topic.clone(), value.clone());
                changed.push((topic, value));
            }
        }
        changed
    }
}

/// The broker's figures under `$SYS/broker/`, with Mosquitto's topic
/// names.
#[derive(Debug, Default)]
pub(crate) struct SysTopics {
    started: Option<Instant>,
    periodic: Periodic,
}

impl SysTopics {
    /// Starts the clock on the broker's first connection; the first
    /// figures go out at once.
    pub(crate) fn start(&mut self, now: Instant, interval: Duration) {
        if self.started.is_none() && !interval.is_zero() {
            self.started = Some(now);
            self.periodic.start(now, interval);
        }
    }

    /// When [`due`](Self::due) next returns figures.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.periodic.next()
    }

    /// Whether figures are due at `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.started.is_some() && self.periodic.is_due(now)
    }

    /// The figures that changed since last time, if they are due at `now`.
    pub(crate) fn due(&mut self, now: Instant, interval: Duration, stats: &Stats) -> Vec<(String, String)> {
        let Some(started) = self.started else { return Vec::new() };
        if !self.periodic.due(now, interval) {
            return Vec::new();
        }
        let counts = &stats.counts;
        let connected = stats.clients_connected;
        let figures = [
            ("$SYS/broker/version", format!("culex version {}", env!("CARGO_PKG_VERSION"))),
            ("$SYS/broker/uptime", format!("{} seconds", now.saturating_duration_since(started).as_secs())),
            ("$SYS/broker/clients/connected", connected.to_string()),
            ("$SYS/broker/clients/active", connected.to_string()),
            ("$SYS/broker/clients/total", stats.sessions.to_string()),
            ("$SYS/broker/clients/disconnected", stats.sessions.saturating_sub(connected).to_string()),
            ("$SYS/broker/subscriptions/count", stats.subscriptions.to_string()),
            ("$SYS/broker/retained messages/count", stats.retained.to_string()),
            ("$SYS/broker/publish/messages/received", counts.publish_received_total().to_string()),
            ("$SYS/broker/publish/messages/sent", counts.publish_sent_total().to_string()),
            ("$SYS/broker/publish/messages/dropped", counts.dropped_for_room().to_string()),
            ("$SYS/broker/publish/messages/expired", counts.dropped.expired.to_string()),
        ];
        self.periodic.changed(figures.map(|(topic, value)| (topic.to_owned(), value)))
    }
}
