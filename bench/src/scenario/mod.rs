//! The scenarios, and the defaults each one gives the options left unset.

mod connections;
mod memory;
mod persist;
mod presence;
mod pubsub;
mod received;
mod slow;

use std::time::Duration;

use culex_core::{QoS, TopicFilter, TopicName};
use serde_json::Value;

use crate::options::{Options, PayloadKind, Scenario};
use crate::report;

pub(crate) use pubsub::Plan;
use pubsub::Subscriptions;
use slow::SlowReaders;

/// Length of a `slow-subscriber` flood unless told otherwise.
const FLOOD: Duration = Duration::from_secs(10);

/// Messages a flood publishes at most per second, all publishers
/// together: well above what a loopback broker takes, and a bound on the
/// memory of the tool's bookkeeping (a bit per message and subscriber).
const FLOOD_MESSAGES_PER_SEC: f64 = 5_000_000.0;

/// Runs the scenario of `options`; always bounded by `options.deadline`.
pub(crate) async fn run(options: &Options) -> Value {
    let message_scenario = !matches!(
        options.scenario,
        Scenario::Connections
            | Scenario::Presence
            | Scenario::PersistFill
            | Scenario::Restart
            | Scenario::PersistChanges
    );
    if !message_scenario && options.addrs.len() > 1 {
        return report::failure(options, "several ports (nodes) only apply to message scenarios");
    }
    if !message_scenario && !options.settle.is_zero() {
        return report::failure(options, "--settle-ms only applies to message scenarios");
    }
    if !message_scenario && !options.watch.is_empty() {
        return report::failure(options, "--watch-pid only applies to message scenarios");
    }
    match options.scenario {
        Scenario::Connections => connections::run(options).await,
        Scenario::Presence => presence::run(options).await,
        Scenario::PersistFill => persist::fill(options).await,
        Scenario::Restart => persist::restart(options).await,
        Scenario::PersistChanges => persist::changes(options).await,
        _ => match plan(options) {
            Ok(plan) => pubsub::run(options, plan).await,
            Err(error) => report::failure(options, &error),
        },
    }
}

/// The message flow of a message scenario.
fn plan(o: &Options) -> Result<Plan, String> {
    let topic = |name: &str| TopicName::new(name.to_owned()).map_err(|e| format!("bad topic {name}: {e}"));
    let filter = |name: &str| TopicFilter::new(name.to_owned()).map_err(|e| format!("bad filter {name}: {e}"));
    let (publishers, subscribers, messages, qos) = match o.scenario {
        Scenario::FanIn => (4, 1, 1_000_000, QoS::AtMostOnce),
        Scenario::FanOut => (1, 10, 100_000, QoS::AtMostOnce),
        Scenario::Qos1 => (1, 1, 100_000, QoS::AtLeastOnce),
        Scenario::Qos2 => (1, 1, 50_000, QoS::ExactlyOnce),
        Scenario::Latency => (1, 1, 0, o.qos.unwrap_or(QoS::AtMostOnce)),
        Scenario::Expiry => (1, 1, 200_000, QoS::AtMostOnce),
        Scenario::SlowSubscriber => (8, 2, 0, QoS::AtMostOnce),
        Scenario::Pairs => (16, 16, 1_000_000, o.qos.unwrap_or(QoS::AtMostOnce)),
        Scenario::Connections
        | Scenario::Presence
        | Scenario::PersistFill
        | Scenario::Restart
        | Scenario::PersistChanges => return Err("not a message scenario".to_owned()),
    };
    if o.qos.is_some_and(|q| q != qos) {
        return Err(format!("{} runs at QoS {qos}; --qos only applies to latency and pairs", o.scenario.name()));
    }
    let pairs = o.scenario == Scenario::Pairs;
    if o.same_shard.is_some() && !pairs {
        return Err("--same-shard only applies to pairs".to_owned());
    }
    if pairs && o.subscribers.is_some() {
        return Err("pairs has one subscriber per publisher: --publishers sets the pairs".to_owned());
    }
    let flood = (o.scenario == Scenario::SlowSubscriber).then(|| o.duration.unwrap_or(FLOOD));
    if flood.is_some_and(|flood| flood >= o.deadline) {
        return Err("--duration-secs must be shorter than --deadline-secs".to_owned());
    }
    if flood.is_none() && o.slow_subscribers.is_some() {
        return Err("--slow-subscribers only applies to slow-subscriber".to_owned());
    }
    let publishers = o.publishers.unwrap_or(publishers);
    let subscribers = if pairs { publishers } else { o.subscribers.unwrap_or(subscribers) };
    let rate = match o.scenario {
        Scenario::Latency => Some(o.rate.unwrap_or(1000)),
        _ => o.rate,
    };
    let messages = match (o.messages, rate, o.duration.or(flood)) {
        (Some(n), _, _) => n,
        (None, Some(rate), Some(d)) => (rate as f64 * d.as_secs_f64()).round() as u64,
        (None, Some(rate), None) if o.scenario == Scenario::Latency => rate * 5,
        (None, None, Some(d)) if flood.is_some() => (FLOOD_MESSAGES_PER_SEC * d.as_secs_f64()).round() as u64,
        _ => messages,
    }
    .max(1);
    let (topics, subscriptions) = match o.scenario {
        Scenario::FanIn | Scenario::SlowSubscriber => {
            let root = if o.scenario == Scenario::FanIn { "bench/in" } else { "bench/slow" };
            let topics = (0..publishers).map(|i| topic(&format!("{root}/{i}"))).collect::<Result<_, _>>()?;
            (topics, Subscriptions::Shared(filter(&format!("{root}/#"))?))
        }
        Scenario::Pairs => {
            let topics = (0..publishers).map(|i| topic(&format!("bench/pair/{i}"))).collect::<Result<_, _>>()?;
            (topics, Subscriptions::Paired)
        }
        _ => {
            let name = format!("bench/{}", o.scenario.name());
            (vec![topic(&name)?; publishers], Subscriptions::Shared(filter(&name)?))
        }
    };
    Ok(Plan {
        publishers,
        subscribers,
        messages,
        topics,
        subscriptions,
        qos,
        rate,
        inflight: o.inflight,
        payload: o.payload.unwrap_or(PayloadKind::Plain),
        payload_bytes: o.payload_bytes,
        batch_bytes: o.batch_bytes,
        drain: o.drain,
        flood,
        slow: match flood {
            Some(_) => SlowReaders {
                count: o.slow_subscribers.unwrap_or(1),
                bytes_per_sec: o.slow_read_bytes_per_sec,
                rcvbuf: o.slow_rcvbuf_bytes,
            },
            None => SlowReaders::NONE,
        },
        latency: flood.is_none(),
        clean_session: o.clean_session,
        same_shard: o.same_shard,
    })
}
