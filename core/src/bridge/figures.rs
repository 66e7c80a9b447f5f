//! Each bridge's figures under `$SYS/broker/bridge/<name>/`, published
//! as the broker's own `$SYS` figures are (see
//! [`Periodic`](crate::sys::Periodic)). Mosquitto has only the state
//! topic; these say what went through and what waits.

use super::Bridge;
use crate::broker::Broker;
use crate::sys::Value::{self, Count, Word};

/// `bridge`'s figures as they stand, topic and value.
pub(crate) fn figures(bridge: &Bridge, broker: &Broker) -> impl Iterator<Item = (String, Value)> {
    let stats = bridge.stats();
    let local = bridge.local_id();
    let name = &bridge.conf().name;
    [
        ("state", Word(if bridge.is_connected() { "connected" } else { "disconnected" })),
        ("messages/sent", Count(stats.messages_sent)),
        ("messages/received", Count(stats.messages_received)),
        ("bytes/sent", Count(stats.bytes_sent)),
        ("bytes/received", Count(stats.bytes_received)),
        ("queued", Count(broker.queued_len(local) as u64)),
        ("dropped", Count(stats.dropped + broker.dropped_for(local))),
        ("reconnects", Count(stats.connects.saturating_sub(1))),
    ]
    .map(|(figure, value)| (format!("$SYS/broker/bridge/{name}/{figure}"), value))
    .into_iter()
}
