//! `$SYS` statistics: the broker's figures published as retained messages
//! under `$SYS/broker/`, with Mosquitto 2.0's topic names and formats,
//! every `sys_interval`: the version once, the uptime every time, the
//! rest only when their value changed (docs/sys.md lists them all). The
//! bridges' figures ([`bridge`](crate::bridge)) and the presence link's
//! ([`Server`](crate::server::Server)) go out the same way.
//!
//! One list of figures feeds both what is published and the live
//! snapshot [`Server::systree`](crate::server::Server::systree), so the
//! two agree.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::broker::Stats;
use crate::message::Message;
use crate::presence::PresenceSync;
use crate::time::{Instant, UnixTime};
use crate::topic::TopicName;
use crate::types::{ClientId, QoS};

/// The payload of `$SYS/broker/version`.
pub const VERSION: &str = concat!("culex version ", env!("CARGO_PKG_VERSION"));

/// Where the uptime is published, as seconds followed by ` seconds`.
pub const UPTIME_TOPIC: &str = "$SYS/broker/uptime";

/// The broker's uptime in whole seconds at `now`: time since the
/// origin of the runtime's clock, taken at start.
pub fn uptime(now: Instant) -> u64 {
    now.since_origin().as_secs()
}

/// A figure's value: most are counts, a few are words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value {
    /// A number, published in decimal.
    Count(u64),
    /// A word, published as it is.
    Word(&'static str),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Word(word) => f.write_str(word),
        }
    }
}

/// One integer figure: its topic, the deprecated alias Mosquitto also
/// publishes it under (if any), and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Figure {
    pub(crate) topic: &'static str,
    pub(crate) alias: Option<&'static str>,
    pub(crate) value: u64,
}

fn figure(topic: &'static str, value: impl Into<Count>) -> Figure {
    Figure { topic, alias: None, value: value.into().0 }
}

fn aliased(topic: &'static str, alias: &'static str, value: impl Into<Count>) -> Figure {
    Figure { topic, alias: Some(alias), value: value.into().0 }
}

/// A figure's number, whether the broker keeps it as a size or a count.
struct Count(u64);

impl From<u64> for Count {
    fn from(n: u64) -> Self {
        Self(n)
    }
}

impl From<usize> for Count {
    fn from(n: usize) -> Self {
        Self(n as u64)
    }
}

/// The broker's integer figures, the uptime and the load averages aside:
/// Mosquitto 2.0's in its order, then Culex's own.
pub(crate) fn broker_figures(stats: &Stats) -> Vec<Figure> {
    let counts = &stats.counts;
    let mut figures = vec![
        figure("$SYS/broker/clients/total", stats.sessions),
        figure("$SYS/broker/clients/maximum", stats.sessions_max),
        aliased("$SYS/broker/clients/connected", "$SYS/broker/clients/active", stats.clients_connected),
        // Every connected client has a session: never negative, where
        // Mosquitto's can be (its "connected" counts sockets without one).
        aliased(
            "$SYS/broker/clients/disconnected",
            "$SYS/broker/clients/inactive",
            stats.sessions.saturating_sub(stats.clients_connected),
        ),
        figure("$SYS/broker/clients/expired", counts.sessions_expired),
        aliased("$SYS/broker/messages/stored", "$SYS/broker/store/messages/count", stats.stored()),
        figure("$SYS/broker/store/messages/bytes", stats.stored_bytes()),
        figure("$SYS/broker/subscriptions/count", stats.subscriptions),
        // Culex has no shared subscriptions (`$share/...` is a topic like
        // any other).
        figure("$SYS/broker/shared_subscriptions/count", 0_u64),
        figure("$SYS/broker/retained messages/count", stats.retained),
        figure("$SYS/broker/messages/received", counts.packets_received),
        figure("$SYS/broker/messages/sent", counts.packets_sent),
        figure("$SYS/broker/publish/messages/received", counts.publish_received_total()),
        figure("$SYS/broker/publish/messages/sent", counts.publish_sent_total()),
        figure("$SYS/broker/publish/messages/dropped", counts.dropped_for_room()),
        figure("$SYS/broker/bytes/received", counts.bytes_received),
        figure("$SYS/broker/bytes/sent", counts.bytes_sent),
        figure("$SYS/broker/publish/bytes/received", counts.publish_received_bytes_total()),
        figure("$SYS/broker/publish/bytes/sent", counts.publish_sent_bytes_total()),
        // Culex's own. Mosquitto's manual documents `messages/inflight`
        // but Mosquitto never publishes it.
        figure("$SYS/broker/publish/messages/expired", counts.dropped.expired),
        figure("$SYS/broker/messages/inflight", stats.inflight),
    ];
    if let Some(pending) = stats.store_batches_pending {
        figures.push(figure("$SYS/broker/persistence/batches/pending", pending));
    }
    figures
}

/// The Redis presence link's figures.
pub(crate) fn presence_figures(presence: &PresenceSync) -> [Figure; 3] {
    [
        figure("$SYS/broker/presence/connected", u64::from(presence.is_connected())),
        figure("$SYS/broker/presence/pending", presence.pending_changes()),
        figure("$SYS/broker/presence/failed", presence.failed_writes()),
    ]
}

/// `figures` as published: each under its topic, and again under its
/// alias.
pub(crate) fn published(figures: impl IntoIterator<Item = Figure>) -> impl Iterator<Item = (String, String)> {
    figures.into_iter().flat_map(|figure| {
        let value = figure.value.to_string();
        let alias = figure.alias.map(|alias| (alias.to_owned(), value.clone()));
        [Some((figure.topic.to_owned(), value)), alias].into_iter().flatten()
    })
}

/// How long a `0` state is kept, as Mosquitto 2.1's connection-state
/// plugin keeps it ("Expire our disconnected message after a day").
const OFFLINE_STATE_LIFETIME: f64 = 86_400.0;

/// `presence_topics`: the retained QoS 0 message saying whether `client`
/// is connected, on `$SYS/broker/connection/client/<client id>/state`,
/// `1` or `0`, as Mosquitto 2.1's connection-state plugin publishes it.
/// A `0` expires a day after it was published (no longer sent to new
/// subscribers), unless `expiry` (`message_expiry`) is off. `None` when
/// the id makes no topic name (it holds `+` or `#`, or the topic would
/// be longer than 65,535 bytes): the plugin skips those too.
pub(crate) fn presence_state(client: &ClientId, online: bool, now: UnixTime, expiry: bool) -> Option<Message> {
    let topic = TopicName::new(format!("$SYS/broker/connection/client/{client}/state")).ok()?;
    let payload = Bytes::from_static(if online { b"1" } else { b"0" });
    let mut state = Message::without_expiry(topic, payload, QoS::AtMostOnce, true);
    if !online && expiry {
        state.expires_at = Some(now.as_secs_f64() + OFFLINE_STATE_LIFETIME);
    }
    Some(state)
}

/// The counters the load averages follow, by their name under
/// `$SYS/broker/load/`, in Mosquitto's order.
const LOAD_SERIES: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/dropped",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "sockets",
    "connections",
];

/// The load averages' windows: name and time constant in seconds.
const LOAD_WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// The counts behind [`LOAD_SERIES`], in its order.
fn load_counts(stats: &Stats) -> [u64; 9] {
    let counts = &stats.counts;
    [
        counts.packets_received,
        counts.packets_sent,
        counts.dropped_for_room(),
        counts.publish_received_total(),
        counts.publish_sent_total(),
        counts.bytes_received,
        counts.bytes_sent,
        counts.sockets_accepted,
        counts.connects,
    ]
}

/// Mosquitto's load average: an exponential moving average of the rate
/// per minute. `rate` is the count's growth over the last `elapsed`
/// seconds, per minute; the average moves towards it by
/// `1 - e^(-elapsed/period)`.
pub(crate) fn moving_average(average: f64, rate: f64, elapsed: f64, period: f64) -> f64 {
    rate + (-elapsed / period).exp() * (average - rate)
}

/// The 27 load averages (`load/<series>/<window>`), per minute.
#[derive(Debug, Default)]
struct Loads {
    /// When they were last moved on, and the counts then.
    last: Option<(Instant, [u64; 9])>,
    averages: [[f64; 3]; 9],
}

impl Loads {
    /// Moves the averages on to `now`, the counts standing at `counts`.
    /// The first call only takes the counts: every average starts at 0.
    fn update(&mut self, now: Instant, counts: [u64; 9]) {
        if let Some((then, before)) = self.last {
            let elapsed = now.saturating_duration_since(then).as_secs_f64();
            if elapsed <= 0.0 {
                return;
            }
            for (series, averages) in self.averages.iter_mut().enumerate() {
                let rate = counts[series].saturating_sub(before[series]) as f64 * 60.0 / elapsed;
                for (average, (_, period)) in averages.iter_mut().zip(LOAD_WINDOWS) {
                    *average = moving_average(*average, rate, elapsed, period);
                }
            }
        }
        self.last = Some((now, counts));
    }

    /// Every average with its topic, printed as Mosquitto prints them
    /// (`%.2f`), window by window.
    fn published(&self) -> impl Iterator<Item = (String, String)> + '_ {
        LOAD_WINDOWS.iter().enumerate().flat_map(move |(window, (name, _))| {
            LOAD_SERIES.iter().enumerate().map(move |(series, series_name)| {
                let average = self.averages[series][window];
                (format!("$SYS/broker/load/{series_name}/{name}"), format!("{average:.2}"))
            })
        })
    }
}

/// Figures published retained every `sys_interval`, each only when its
/// printed value changed: the broker's own and each bridge's.
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

/// The broker's figures under `$SYS/broker/`.
#[derive(Debug, Default)]
pub(crate) struct SysTopics {
    periodic: Periodic,
    loads: Loads,
}

impl SysTopics {
    /// Starts the clock on the broker's first connection; the first
    /// figures go out at once.
    pub(crate) fn start(&mut self, now: Instant, interval: Duration) {
        self.periodic.start(now, interval);
    }

    /// When [`due`](Self::due) next returns figures.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.periodic.next()
    }

    /// Whether figures are due at `now`: [`due`](Self::due) would return
    /// some.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.periodic.is_due(now)
    }

    /// The figures to publish, if they are due at `now`: the uptime
    /// always, the others (the version the first time only) when their
    /// printed value changed.
    pub(crate) fn due(&mut self, now: Instant, interval: Duration, stats: &Stats) -> Vec<(String, String)> {
        if !self.periodic.due(now, interval) {
            return Vec::new();
        }
        self.loads.update(now, load_counts(stats));
        let mut figures = vec![(UPTIME_TOPIC.to_owned(), format!("{} seconds", uptime(now)))];
        let version = [("$SYS/broker/version".to_owned(), VERSION.to_owned())];
        let others = version.into_iter().chain(published(broker_figures(stats))).chain(self.loads.published());
        figures.extend(self.periodic.changed(others));
        figures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Counts;

    fn at(secs: u64) -> Instant {
        Instant::from_origin(Duration::from_secs(secs))
    }

    fn topics(figures: &[(String, String)]) -> Vec<&str> {
        figures.iter().map(|(topic, _)| topic.as_str()).collect()
    }

    fn value<'a>(figures: &'a [(String, String)], topic: &str) -> Option<&'a str> {
        figures.iter().find(|(t, _)| t == topic).map(|(_, v)| v.as_str())
    }

    /// Mosquitto 2.0.11's topics (src/sys_tree.c), the two heap topics
    /// (only with its memory tracking) aside.
    const MOSQUITTO: [&str; 24] = [
        "version",
        "uptime",
        "clients/total",
        "clients/maximum",
        "clients/connected",
        "clients/active",
        "clients/disconnected",
        "clients/inactive",
        "clients/expired",
        "messages/stored",
        "store/messages/count",
        "store/messages/bytes",
        "subscriptions/count",
        "shared_subscriptions/count",
        "retained messages/count",
        "messages/received",
        "messages/sent",
        "publish/messages/received",
        "publish/messages/sent",
        "publish/messages/dropped",
        "bytes/received",
        "bytes/sent",
        "publish/bytes/received",
        "publish/bytes/sent",
    ];

    #[test]
    fn the_first_update_has_every_mosquitto_topic_and_the_loads_at_zero() {
        let mut sys = SysTopics::default();
        sys.start(at(0), Duration::from_secs(10));
        let first = sys.due(at(0), Duration::from_secs(10), &Stats::default());
        let published = topics(&first);
        for topic in MOSQUITTO {
            assert!(published.contains(&format!("$SYS/broker/{topic}").as_str()), "{topic} missing");
        }
        let loads: Vec<_> = first.iter().filter(|(t, _)| t.starts_with("$SYS/broker/load/")).collect();
        assert_eq!(loads.len(), 27);
        assert!(loads.iter().all(|(_, v)| v == "0.00"), "{loads:?}");
        assert_eq!(value(&first, "$SYS/broker/version"), Some(VERSION));
        assert_eq!(value(&first, "$SYS/broker/uptime"), Some("0 seconds"));
        // 24 topics, 27 loads and Culex's two.
        assert_eq!(first.len(), 24 + 27 + 2, "{published:?}");
        // No persistence, no figure for it.
        assert_eq!(value(&first, "$SYS/broker/persistence/batches/pending"), None);
    }

    const INTERVAL: Duration = Duration::from_secs(10);

    /// Topics that published their first update at 0 s, every 10 s.
    fn after_first_update() -> SysTopics {
        let mut sys = SysTopics::default();
        sys.start(at(0), INTERVAL);
        let _ = sys.due(at(0), INTERVAL, &Stats::default());
        sys
    }

    #[test]
    fn later_updates_carry_the_uptime_and_what_changed_only() {
        let mut sys = after_first_update();
        let (interval, mut stats) = (INTERVAL, Stats::default());
        assert!(sys.due(at(5), interval, &stats).is_empty(), "not due yet");
        let unchanged = sys.due(at(10), interval, &stats);
        assert_eq!(unchanged, [("$SYS/broker/uptime".to_owned(), "10 seconds".to_owned())]);
        stats.clients_connected = 1;
        stats.sessions = 1;
        let changed = sys.due(at(20), interval, &stats);
        assert_eq!(
            topics(&changed),
            [
                "$SYS/broker/uptime",
                "$SYS/broker/clients/total",
                "$SYS/broker/clients/connected",
                "$SYS/broker/clients/active",
            ]
        );
        assert_eq!(value(&changed, "$SYS/broker/clients/active"), Some("1"));
    }

    #[test]
    fn the_moving_average_follows_mosquittos_formula() {
        // Steady at the rate: stays there.
        assert!((moving_average(120.0, 120.0, 10.0, 60.0) - 120.0).abs() < 1e-9);
        // From 0 at 60 per minute over one period: 60 (1 - 1/e).
        let one = moving_average(0.0, 60.0, 60.0, 60.0);
        assert!((one - 60.0 * (1.0 - (-1.0_f64).exp())).abs() < 1e-9);
        // Nothing more: decays by e^(-t/T).
        assert!((moving_average(10.0, 0.0, 300.0, 300.0) - 10.0 / std::f64::consts::E).abs() < 1e-9);
    }

    #[test]
    fn loads_are_rates_per_minute_published_on_a_change_of_their_print() {
        let mut sys = after_first_update();
        let (interval, mut stats) = (INTERVAL, Stats::default());
        // 100 packets in 10 s: 600 a minute.
        stats.counts = Counts { packets_received: 100, ..Counts::default() };
        let update = sys.due(at(10), interval, &stats);
        let expected = |period: f64| format!("{:.2}", moving_average(0.0, 600.0, 10.0, period));
        assert_eq!(value(&update, "$SYS/broker/load/messages/received/1min"), Some(expected(60.0).as_str()));
        assert_eq!(value(&update, "$SYS/broker/load/messages/received/5min"), Some(expected(300.0).as_str()));
        assert_eq!(value(&update, "$SYS/broker/load/messages/received/15min"), Some(expected(900.0).as_str()));
        // 600 (1 - e^(-10/60)).
        assert_eq!(expected(60.0), "92.11");
        // The other series did not move: not published again.
        assert_eq!(value(&update, "$SYS/broker/load/messages/sent/1min"), None);
        // Decaying: published while the print changes.
        let decay = sys.due(at(20), interval, &stats);
        assert!(value(&decay, "$SYS/broker/load/messages/received/1min").is_some());
    }

    #[test]
    fn a_state_is_a_1_or_a_0_that_expires_a_day_later() {
        let now = UnixTime::from_secs_f64(1000.0);
        let on = presence_state(&ClientId::new("site/a"), true, now, true).expect("a topic name");
        assert_eq!(on.topic.as_str(), "$SYS/broker/connection/client/site/a/state");
        assert_eq!((&on.payload[..], on.qos, on.retain, on.expires_at), (&b"1"[..], QoS::AtMostOnce, true, None));
        let off = presence_state(&ClientId::new("site/a"), false, now, true).expect("a topic name");
        assert_eq!((&off.payload[..], off.expires_at), (&b"0"[..], Some(1000.0 + 86_400.0)));
        let kept = presence_state(&ClientId::new("a"), false, now, false).expect("a topic name");
        assert_eq!(kept.expires_at, None);
        for no_topic in ["a+b", "#", &"x".repeat(65_500)] {
            assert!(presence_state(&ClientId::new(no_topic), true, now, true).is_none(), "{no_topic:.10}");
        }
    }

    #[test]
    fn aliases_carry_the_same_value() {
        let stats = Stats { sessions: 5, clients_connected: 2, retained: 3, ..Stats::default() };
        let all: Vec<_> = published(broker_figures(&stats)).collect();
        assert_eq!(value(&all, "$SYS/broker/clients/inactive"), Some("3"));
        assert_eq!(value(&all, "$SYS/broker/clients/disconnected"), Some("3"));
        assert_eq!(value(&all, "$SYS/broker/store/messages/count"), value(&all, "$SYS/broker/messages/stored"));
        assert_eq!(value(&all, "$SYS/broker/messages/stored"), Some("3"));
        let persisting = Stats { store_batches_pending: Some(2), ..Stats::default() };
        let all: Vec<_> = published(broker_figures(&persisting)).collect();
        assert_eq!(value(&all, "$SYS/broker/persistence/batches/pending"), Some("2"));
    }
}
