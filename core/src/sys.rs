//! `$SYS` statistics: the broker's figures published as retained messages
//! under `$SYS/broker/`, with Mosquitto's topic names, every
//! `sys_interval`, each topic only when its value changed.

use std::collections::HashMap;
use std::time::Duration;

use crate::broker::Stats;
use crate::time::Instant;

/// When the figures are next due and what was last published.
#[derive(Debug, Default)]
pub(crate) struct SysTopics {
    started: Option<Instant>,
    next: Option<Instant>,
    published: HashMap<&'static str, String>,
}

impl SysTopics {
    /// Starts the clock on the broker's first connection; the first
    /// figures go out at once.
    pub(crate) fn start(&mut self, now: Instant, interval: Duration) {
        if self.started.is_none() && !interval.is_zero() {
            self.started = Some(now);
            self.next = Some(now);
        }
    }

    /// When [`due`](Self::due) next returns figures.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.next
    }

    /// The figures that changed since last time, if they are due at `now`.
    pub(crate) fn due(
        &mut self,
        now: Instant,
        interval: Duration,
        stats: &Stats,
        connected: usize,
    ) -> Vec<(&'static str, String)> {
        let (Some(started), Some(next)) = (self.started, self.next) else { return Vec::new() };
        if now < next {
            return Vec::new();
        }
        self.next = Some(now + interval);
        let figures = [
            ("$SYS/broker/version", format!("culex version {}", env!("CARGO_PKG_VERSION"))),
            ("$SYS/broker/uptime", format!("{} seconds", now.saturating_duration_since(started).as_secs())),
            ("$SYS/broker/clients/connected", connected.to_string()),
            ("$SYS/broker/clients/active", connected.to_string()),
            ("$SYS/broker/clients/total", stats.sessions.to_string()),
            ("$SYS/broker/clients/disconnected", stats.sessions.saturating_sub(connected).to_string()),
            ("$SYS/broker/subscriptions/count", stats.subscriptions.to_string()),
            ("$SYS/broker/retained messages/count", stats.retained.to_string()),
            ("$SYS/broker/publish/messages/received", stats.messages_received.to_string()),
            ("$SYS/broker/publish/messages/sent", stats.messages_sent.to_string()),
            ("$SYS/broker/publish/messages/dropped", stats.messages_dropped.to_string()),
            ("$SYS/broker/publish/messages/expired", stats.messages_expired.to_string()),
        ];
        let mut changed = Vec::new();
        for (topic, value) in figures {
            if self.published.get(topic) != Some(&value) {
                self.published.insert(topic, value.clone());
                changed.push((topic, value));
            }
        }
        changed
    }
}
