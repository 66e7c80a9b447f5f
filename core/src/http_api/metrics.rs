//! `/metrics`: the broker's figures in Prometheus' text format (0.0.4),
//! read from the same [`Stats`] as `$SYS`, so the two never disagree.
//!
//! Names follow Prometheus' rules: a `culex_` prefix, base units as
//! suffixes, `_total` on counters; no label names a client or a topic (one
//! series each would grow without bound).

use std::fmt::{Display, Write};

use crate::broker::Stats;

/// One sample of a family: its labels (name, value) and its value.
pub(crate) type Sample<'a> = (&'a [(&'a str, &'a str)], &'a dyn Display);

/// What a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// The exposition being written.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    text: String,
}

impl Exposition {
    /// A family of one unlabelled gauge.
    pub(crate) fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, Kind::Gauge, help, &[(&[], &value)]);
    }

    /// A family of one unlabelled counter; `name` ends with `_total`.
    pub(crate) fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Counter, help, &[(&[], &value)]);
    }

    /// A counter family with one sample per label set.
    pub(crate) fn counters(&mut self, name: &str, help: &str, samples: &[Sample<'_>]) {
        self.family(name, Kind::Counter, help, samples);
    }

    /// A gauge family with one sample per label set.
    pub(crate) fn gauges(&mut self, name: &str, help: &str, samples: &[Sample<'_>]) {
        self.family(name, Kind::Gauge, help, samples);
    }

    fn family(&mut self, name: &str, kind: Kind, help: &str, samples: &[Sample<'_>]) {
        debug_assert!((kind == Kind::Counter) == name.ends_with("_total"), "{name}");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.text.push_str(name);
            if !labels.is_empty() {
                self.text.push('{');
                for (at, (label, value)) in labels.iter().enumerate() {
                    let comma = if at == 0 { "" } else { "," };
                    let _ = write!(self.text, "{comma}{label}=\"{}\"", escape(value));
                }
                self.text.push('}');
            }
            let _ = writeln!(self.text, " {value}");
        }
    }

    /// The text.
    pub(crate) fn finish(self) -> String {
        self.text
    }
}

/// A label value as the format quotes it.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The figures of the Redis presence link, when Redis is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PresenceFigures {
    pub(crate) connected: bool,
    /// Client changes not yet written.
    pub(crate) pending: usize,
    /// Writes that failed since start.
    pub(crate) failed: u64,
}

const QOS: [&[(&str, &str)]; 3] = [&[("qos", "0")], &[("qos", "1")], &[("qos", "2")]];

/// One sample per QoS, labelled `qos`.
fn by_qos(values: &[u64; 3]) -> [Sample<'_>; 3] {
    [(QOS[0], &values[0]), (QOS[1], &values[1]), (QOS[2], &values[2])]
}

/// The broker's families.
pub(crate) fn render(stats: &Stats, uptime_seconds: u64, presence: Option<PresenceFigures>) -> String {
    let mut out = Exposition::default();
    let counts = &stats.counts;
    out.gauges(
        "culex_build_info",
        "The running version, as a label; always 1.",
        &[(&[("version", env!("CARGO_PKG_VERSION"))], &1)],
    );
    out.gauge("culex_uptime_seconds", "Seconds since the broker started.", uptime_seconds);
    out.gauge("culex_connections", "MQTT clients connected (CONNECT accepted).", stats.clients_connected);
    out.gauge(
        "culex_connections_max",
        "The most MQTT clients connected at once since start.",
        stats.clients_connected_max,
    );
    out.gauge("culex_sockets", "Open MQTT connections, those without a CONNECT yet included.", stats.connections);
    out.gauge("culex_sessions", "Sessions held, connected or not.", stats.sessions);
    out.gauge("culex_sessions_max", "The most sessions held at once since start.", stats.sessions_max);
    out.gauge(
        "culex_sessions_offline",
        "Persistent sessions whose client is not connected.",
        stats.sessions.saturating_sub(stats.clients_connected),
    );
    out.gauge("culex_subscriptions", "Subscriptions held.", stats.subscriptions);
    out.gauge("culex_retained_messages", "Retained messages held.", stats.retained);
    out.gauge("culex_retained_bytes", "Payload bytes of the retained messages.", stats.retained_bytes);
    out.gauge("culex_inflight_messages", "QoS 1 and 2 copies sent and not yet completed.", stats.inflight);
    out.gauge("culex_inflight_bytes", "Payload bytes of the copies in flight.", stats.inflight_bytes);
    out.gauge("culex_queued_messages", "Copies waiting in sessions' queues.", stats.queued);
    out.gauge("culex_queued_bytes", "Payload bytes of the queued copies.", stats.queued_bytes);
    out.gauge(
        "culex_awaiting_pubrel_messages",
        "Incoming QoS 2 messages held until their PUBREL.",
        stats.awaiting_pubrel,
    );
    if let Some(pending) = stats.store_batches_pending {
        out.gauge("culex_store_batches_pending", "Store batches not yet durable (persistence).", pending);
    }
    out.counter("culex_sockets_opened_total", "MQTT connections accepted.", counts.sockets_accepted);
    out.counter("culex_connects_total", "CONNECT packets received.", counts.connects);
    out.counter("culex_packets_received_total", "MQTT packets received, of every type.", counts.packets_received);
    out.counter("culex_packets_sent_total", "MQTT packets sent, of every type.", counts.packets_sent);
    out.counter("culex_received_bytes_total", "MQTT bytes received.", counts.bytes_received);
    out.counter("culex_sent_bytes_total", "MQTT bytes sent.", counts.bytes_sent);
    out.counters(
        "culex_publish_received_total",
        "PUBLISH packets received, by QoS.",
        &by_qos(&counts.publish_received),
    );
    out.counters(
        "culex_publish_received_bytes_total",
        "Payload bytes of the PUBLISH packets received, by QoS.",
        &by_qos(&counts.publish_received_bytes),
    );
    out.counters(
        "culex_publish_sent_total",
        "PUBLISH packets sent, resends included, by QoS.",
        &by_qos(&counts.publish_sent),
    );
    out.counters(
        "culex_publish_sent_bytes_total",
        "Payload bytes of the PUBLISH packets sent, by QoS.",
        &by_qos(&counts.publish_sent_bytes),
    );
    let dropped = &counts.dropped;
    out.counters(
        "culex_publish_dropped_total",
        "Messages and copies not delivered, by cause.",
        &[
            (&[("reason", "queue_full")], &dropped.queue_full),
            (&[("reason", "slow_reader")], &dropped.slow_reader),
            (&[("reason", "expired")], &dropped.expired),
            (&[("reason", "too_large")], &dropped.too_large),
            (&[("reason", "out_of_memory")], &dropped.out_of_memory),
        ],
    );
    out.counter(
        "culex_sessions_expired_total",
        "Offline sessions removed by persistent_client_expiration.",
        counts.sessions_expired,
    );
    out.counters(
        "culex_auth_failures_total",
        "CONNECTs refused for their credentials, by reason.",
        &[
            (&[("reason", "bad_credentials")], &counts.auth_bad_credentials),
            (&[("reason", "not_authorized")], &counts.auth_not_authorised),
        ],
    );
    out.counters(
        "culex_acl_denied_total",
        "Requests the access policy refused, by action.",
        &[
            (&[("action", "publish")], &counts.acl_denied_publish),
            (&[("action", "subscribe")], &counts.acl_denied_subscribe),
        ],
    );
    out.counter(
        "culex_keepalive_timeouts_total",
        "Connections closed for silence past 1.5 keepalives.",
        counts.keepalive_timeouts,
    );
    if let Some(presence) = presence {
        out.gauge("culex_presence_up", "1 while the Redis presence link is up.", u8::from(presence.connected));
        out.gauge("culex_presence_pending", "Client presence changes not yet written to Redis.", presence.pending);
        out.counter("culex_presence_failed_writes_total", "Presence writes to Redis that failed.", presence.failed);
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_typed_and_labels_escaped() {
        let mut out = Exposition::default();
        out.counters("a_total", "Help.", &[(&[("k", "x\"y\\z")], &1), (&[("k", "b"), ("j", "c")], &2)]);
        out.gauge("b", "Gauge.", 1.5);
        assert_eq!(
            out.finish(),
            "# HELP a_total Help.\n# TYPE a_total counter\na_total{k=\"x\\\"y\\\\z\"} 1\na_total{k=\"b\",j=\"c\"} 2\n\
             # HELP b Gauge.\n# TYPE b gauge\nb 1.5\n"
        );
    }

    #[test]
    fn every_family_once() {
        let text = render(&Stats::default(), 5, Some(PresenceFigures { connected: true, pending: 2, failed: 1 }));
        let mut names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
        assert!(text.contains("culex_uptime_seconds 5\n") && text.contains("culex_presence_pending 2\n"));
    }
}
