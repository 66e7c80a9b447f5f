//! The scenarios, and the defaults each one gives the options left unset.

mod connections;
mod presence;
mod pubsub;

use culex_core::{QoS, TopicFilter, TopicName};
use serde_json::Value;

use crate::options::{Options, PayloadKind, Scenario};
use crate::report;

pub(crate) use pubsub::Plan;

/// Runs the scenario of `options`; always bounded by `options.deadline`.
pub(crate) async fn run(options: &Options) -> Value {
    match options.scenario {
        Scenario::Connections => connections::run(options).await,
        Scenario::Presence => presence::run(options).await,
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
        Scenario::Connections | Scenario::Presence => return Err("not a message scenario".to_owned()),
    };
    if o.qos.is_some_and(|q| q != qos) {
        return Err(format!("{} runs at QoS {qos}; --qos only applies to latency", o.scenario.name()));
    }
    let publishers = o.publishers.unwrap_or(publishers);
    let subscribers = o.subscribers.unwrap_or(subscribers);
    let rate = match o.scenario {
        Scenario::Latency => Some(o.rate.unwrap_or(1000)),
        _ => o.rate,
    };
    let messages = match (o.messages, rate, o.duration) {
        (Some(n), _, _) => n,
        (None, Some(rate), Some(d)) => (rate as f64 * d.as_secs_f64()).round() as u64,
        (None, Some(rate), None) if o.scenario == Scenario::Latency => rate * 5,
        _ => messages,
    }
    .max(1);
    let (topics, filter) = match o.scenario {
        Scenario::FanIn => {
            ((0..publishers).map(|i| topic(&format!("bench/in/{i}"))).collect::<Result<_, _>>()?, filter("bench/in/#")?)
        }
        _ => {
            let name = format!("bench/{}", o.scenario.name());
            (vec![topic(&name)?; publishers], filter(&name)?)
        }
    };
    Ok(Plan {
        publishers,
        subscribers,
        messages,
        topics,
        filter,
        qos,
        rate,
        inflight: o.inflight,
        payload: o.payload.unwrap_or(PayloadKind::Plain),
        payload_bytes: o.payload_bytes,
        batch_bytes: o.batch_bytes,
        drain: o.drain,
    })
}
