//! `check_retain_source`: a retained message goes to a new subscriber
//! only while the client that published it may still publish on its
//! topic, as Mosquitto checks; the message itself stays.

use std::time::Duration;

use bytes::Bytes;
use culex_core::codec::{Packet, Publish};
use culex_core::policy::{AccessPolicy, AuthDecision, ClientInfo, FilterAccess};
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{Config, ConnId, QoS, TopicFilter, TopicName};

/// Everyone may do everything, except that `banned` may not publish.
#[derive(Debug)]
struct Banning {
    banned: Option<&'static str>,
}

impl AccessPolicy for Banning {
    fn authenticate(&self, _: ClientInfo<'_>, _: Option<&Bytes>) -> AuthDecision {
        AuthDecision::Allow
    }

    fn filter_access(&self, _: ClientInfo<'_>, _: &TopicFilter) -> FilterAccess {
        FilterAccess::Whole
    }

    fn may_read(&self, _: ClientInfo<'_>, _: &TopicName) -> bool {
        true
    }

    fn may_publish(&self, client: ClientInfo<'_>, _: &TopicName) -> bool {
        self.banned != Some(client.client_id.as_str())
    }
}

fn broker(check_retain_source: bool) -> Simulation {
    Simulation::new(Config { check_retain_source, sys_interval: Duration::ZERO, ..Config::default() })
}

fn retained_payloads(sim: &mut Simulation, conn: ConnId) -> Vec<Bytes> {
    sim.take_received(conn)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(Publish { retain: true, payload, .. }) => Some(payload),
            _ => None,
        })
        .collect()
}

/// `publisher` retains a message on `r/a`, then loses its right to
/// publish; what does a new subscriber get?
fn after_the_ban(check_retain_source: bool) -> Vec<Bytes> {
    let mut sim = broker(check_retain_source);
    let publisher = sim.connect(ClientOptions::new("publisher"));
    sim.publish(publisher, "r/a", b"kept", QoS::AtLeastOnce, true);
    let other = sim.connect(ClientOptions::new("other"));
    sim.publish(other, "r/b", b"other", QoS::AtLeastOnce, true);
    sim.replace_policy(Box::new(Banning { banned: Some("publisher") }), &|_| true);
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "r/#", QoS::AtLeastOnce);
    retained_payloads(&mut sim, sub)
}

#[test]
fn a_retained_message_whose_publisher_lost_its_access_is_not_sent() {
    assert_eq!(after_the_ban(true), [Bytes::from("other")]);
}

#[test]
fn without_the_check_it_is_sent() {
    let mut got = after_the_ban(false);
    got.sort();
    assert_eq!(got, [Bytes::from("kept"), Bytes::from("other")]);
}

#[test]
fn the_message_stays_and_is_sent_again_once_access_returns() {
    let mut sim = broker(true);
    let publisher = sim.connect(ClientOptions::new("publisher"));
    sim.publish(publisher, "r/a", b"kept", QoS::AtMostOnce, true);
    sim.replace_policy(Box::new(Banning { banned: Some("publisher") }), &|_| true);
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "r/#", QoS::AtMostOnce);
    assert!(retained_payloads(&mut sim, sub).is_empty());
    sim.replace_policy(Box::new(Banning { banned: None }), &|_| true);
    sim.subscribe(sub, "r/a", QoS::AtMostOnce);
    assert_eq!(retained_payloads(&mut sim, sub), [Bytes::from("kept")]);
}

#[test]
fn a_publisher_without_access_never_retains() {
    let mut sim = Simulation::new(Config { sys_interval: Duration::ZERO, ..Config::default() });
    sim.replace_policy(Box::new(Banning { banned: Some("publisher") }), &|_| true);
    let publisher = sim.connect(ClientOptions::new("publisher"));
    sim.publish(publisher, "r/a", b"refused", QoS::AtLeastOnce, true);
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "r/#", QoS::AtLeastOnce);
    assert!(retained_payloads(&mut sim, sub).is_empty());
    assert_eq!(sim.broker().stats().retained, 0);
}
