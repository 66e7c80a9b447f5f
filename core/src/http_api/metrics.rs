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
    pub(crate) pending: usize,
}

/// The broker's families.
pub(crate) fn render(
    stats: &Stats,
    connected: usize,
    uptime_seconds: u64,
    presence: Option<PresenceFigures>,
) -> String {
    let mut out = Exposition::default();
    out.gauges(
        "culex_build_info",
        "The running version, as a label; always 1.",
        &[(&[("version", env!("CARGO_PKG_VERSION"))], &1)],
    );
    out.gauge("culex_uptime_seconds", "Seconds since the broker started.", uptime_seconds);
    out.gauge("culex_connections", "MQTT clients connected.", connected);
    out.gauge("culex_sessions", "Sessions held, connected or not.", stats.sessions);
    out.gauge(
        "culex_sessions_offline",
        "Persistent sessions whose client is not connected.",
        stats.sessions.saturating_sub(connected),
    );
    out.gauge("culex_subscriptions", "Subscriptions held.", stats.subscriptions);
    out.gauge("culex_retained_messages", "Retained messages held.", stats.retained);
    out.counter("culex_sockets_opened_total", "Network connections accepted.", stats.connections_accepted);
    out.counter("culex_publish_received_total", "PUBLISH packets received from clients.", stats.messages_received);
    out.counter("culex_publish_sent_total", "PUBLISH packets sent to clients.", stats.messages_sent);
    out.counters(
        "culex_publish_dropped_total",
        "Message copies not delivered, by cause.",
        &[(&[("reason", "queue_full")], &stats.messages_dropped), (&[("reason", "expired")], &stats.messages_expired)],
    );
    if let Some(presence) = presence {
        out.gauge("culex_presence_up", "1 while the Redis presence link is up.", u8::from(presence.connected));
        out.gauge("culex_presence_pending", "Presence writes waiting for Redis.", presence.pending);
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
        let text = render(&Stats::default(), 0, 5, Some(PresenceFigures { connected: true, pending: 2 }));
        let mut names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
        assert!(text.contains("culex_uptime_seconds 5\n") && text.contains("culex_presence_pending 2\n"));
    }
}
