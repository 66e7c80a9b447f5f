//! Each bridge's figures under `$SYS/broker/bridge/<name>/`, published
//! retained every `sys_interval`, each topic only when its value changed,
//! as the broker's own `$SYS` figures are. Mosquitto has only the state
//! topic; these say what went through and what waits.

use std::collections::HashMap;
use std::time::Duration;

use super::Bridge;
use crate::broker::Broker;
use crate::time::Instant;

/// When the bridges' figures are next due and what was last published.
#[derive(Debug, Default)]
pub(crate) struct Figures {
    next: Option<Instant>,
    published: HashMap<String, String>,
}

impl Figures {
    /// Starts the clock with the first bridge; the first figures go out
    /// at once.
    pub(crate) fn start(&mut self, now: Instant, interval: Duration) {
        if self.next.is_none() && !interval.is_zero() {
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
        bridges: &[Bridge],
        broker: &Broker,
    ) -> Vec<(String, String)> {
        if self.next.is_none_or(|next| now < next) {
            return Vec::new();
        }
        self.next = Some(now + interval);
        let mut changed = Vec::new();
        for bridge in bridges {
            let stats = bridge.stats();
            let local = bridge.local_id();
            let figures = [
                ("state", if bridge.is_connected() { "connected" } else { "disconnected" }.to_owned()),
                ("messages/sent", stats.messages_sent.to_string()),
                ("messages/received", stats.messages_received.to_string()),
                ("bytes/sent", stats.bytes_sent.to_string()),
                ("bytes/received", stats.bytes_received.to_string()),
                ("queued", broker.queued_len(local).to_string()),
                ("dropped", (stats.dropped + broker.dropped_for(local)).to_string()),
                ("reconnects", stats.connects.saturating_sub(1).to_string()),
            ];
            for (name, value) in figures {
                let topic = format!("$SYS/broker/bridge/{}/{name}", bridge.conf().name);
                if self.published.get(&topic) != Some(&value) {
                    self.published.insert(topic.clone(), value.clone());
                    changed.push((topic, value));
                }
            }
        }
        changed
    }
}
