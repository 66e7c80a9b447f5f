//! Each bridge's figures under `$SYS/broker/bridge/<name>/`, published
//! as the broker's own `$SYS` figures are (see
//! [`Periodic`](crate::sys::Periodic)). Mosquitto has only the state
//! topic; these say what went through and what waits.

use super::Bridge;
use crate::broker::Broker;

/// `bridge`'s figures as they stand, topic and value.
pub(crate) fn figures(bridge: &Bridge, broker: &Broker) -> impl Iterator<Item = (String, String)> {
    let stats = bridge.stats();
    let local = bridge.local_id();
    let name = &bridge.conf().name;
    [
        ("state", if bridge.is_connected() { "connected" } else { "disconnected" }.to_owned()),
        ("messages/sent", stats.messages_sent.to_string()),
        ("messages/received", stats.messages_received.to_string()),
        ("bytes/sent", stats.bytes_sent.to_string()),
        ("bytes/received", stats.bytes_received.to_string()),
        ("queued", broker.queued_len(local).to_string()),
        ("dropped", (stats.dropped + broker.dropped_for(local)).to_string()),
        ("reconnects", stats.connects.saturating_sub(1).to_string()),
    ]
    .map(|(figure, value)| (format!("$SYS/broker/bridge/{name}/{figure}"), value))
    .into_iter()
}
