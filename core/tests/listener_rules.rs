//! The listener keys that change how clients are admitted and which
//! topics they see (`use_username_as_clientid`, `clientid_prefixes`,
//! `max_qos`, `mount_point`, `accept_protocol_versions`), as Mosquitto 2
//! applies them, seen from the clients.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use culex_core::codec::{ConnectReturnCode, LastWill, Packet, Publish, SubscribeReturnCode};
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{CloseReason, Config, ConnId, Identity, ListenerId, ListenerRules, Peer, Protocol, QoS, TopicName};

/// The second listener of every test has `rules`; the first has none.
fn broker(rules: ListenerRules) -> Simulation {
    broker_with(Config::default(), rules)
}

fn broker_with(config: Config, rules: ListenerRules) -> Simulation {
    let listener_rules = BTreeMap::from([(ListenerId(1), rules)]);
    Simulation::new(Config { sys_interval: Duration::ZERO, listener_rules, ..config })
}

/// A connection on listener 1.
fn on_rules_listener(sim: &mut Simulation, options: ClientOptions) -> ConnId {
    sim.connect_from(options, Peer { remote: None, listener: ListenerId(1), identity: Identity::Connect })
}

fn connack(sim: &mut Simulation, conn: ConnId) -> Option<ConnectReturnCode> {
    sim.take_received(conn).into_iter().find_map(|p| match p {
        Packet::ConnAck(ack) => Some(ack.code),
        _ => None,
    })
}

/// The topics and payloads of the PUBLISH packets `conn` received.
fn messages(sim: &mut Simulation, conn: ConnId) -> Vec<(String, String)> {
    sim.take_received(conn)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(Publish { topic, payload, .. }) => {
                Some((topic.as_str().to_owned(), String::from_utf8_lossy(&payload).into_owned()))
            }
            _ => None,
        })
        .collect()
}

fn granted(sim: &mut Simulation, conn: ConnId) -> Vec<SubscribeReturnCode> {
    sim.take_received(conn)
        .into_iter()
        .find_map(|p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes),
            _ => None,
        })
        .unwrap_or_default()
}

fn will(topic: &str, qos: QoS) -> LastWill {
    LastWill {
        topic: TopicName::new(topic).unwrap_or_else(|e| panic!("{e}")),
        payload: Bytes::from("gone"),
        qos,
        retain: false,
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

// ---- use_username_as_clientid ---------------------------------------------

fn username_as_clientid() -> ListenerRules {
    ListenerRules { use_username_as_clientid: true, ..ListenerRules::DEFAULT }
}

#[test]
fn the_user_name_becomes_the_client_id() {
    let mut sim = broker(username_as_clientid());
    let conn = on_rules_listener(&mut sim, ClientOptions::new("given").credentials("alice", b"pw"));
    assert_eq!(connack(&mut sim, conn), Some(ConnectReturnCode::Accepted));
    assert_eq!(sim.broker().client_of(conn).map(|c| c.as_str()), Some("alice"));
    // Presence (Redis HSET) is keyed by the new id.
    assert!(sim.is_online("alice") && !sim.is_online("given"));
}

#[test]
fn a_second_connection_with_the_same_user_name_takes_over() {
    let mut sim = broker(username_as_clientid());
    let first = on_rules_listener(&mut sim, ClientOptions::new("one").credentials("alice", b"pw"));
    let second = on_rules_listener(&mut sim, ClientOptions::new("two").credentials("alice", b"pw"));
    assert_eq!(connack(&mut sim, second), Some(ConnectReturnCode::Accepted));
    assert_eq!(sim.closed(first), Some(CloseReason::TakenOver));
    assert!(sim.is_online("alice"));
}

#[test]
fn without_a_user_name_the_client_is_not_authorised() {
    let mut sim = broker(username_as_clientid());
    let conn = on_rules_listener(&mut sim, ClientOptions::new("given"));
    assert_eq!(connack(&mut sim, conn), Some(ConnectReturnCode::NotAuthorized));
    // The other listener keeps the client's own id.
    let plain = sim.connect(ClientOptions::new("given").credentials("alice", b"pw"));
    assert_eq!(connack(&mut sim, plain), Some(ConnectReturnCode::Accepted));
    assert!(sim.is_online("given"));
}

#[test]
fn a_certificate_name_becomes_the_client_id_too() {
    let mut sim = broker(username_as_clientid());
    let peer = Peer { remote: None, listener: ListenerId(1), identity: Identity::Certificate(Some("device-7".into())) };
    let conn = sim.connect_from(ClientOptions::new("given").credentials("ignored", b"pw"), peer);
    assert_eq!(connack(&mut sim, conn), Some(ConnectReturnCode::Accepted));
    assert!(sim.is_online("device-7"));
}

// ---- clientid_prefixes ------------------------------------------------------

#[test]
fn only_client_ids_with_the_prefix_connect() {
    let config = Config { clientid_prefixes: Some("secure-".to_owned()), ..Config::default() };
    let mut sim = broker_with(config, ListenerRules::DEFAULT);
    let good = sim.connect(ClientOptions::new("secure-client"));
    assert_eq!(connack(&mut sim, good), Some(ConnectReturnCode::Accepted));
    let bad = sim.connect(ClientOptions::new("mqtt"));
    assert_eq!(connack(&mut sim, bad), Some(ConnectReturnCode::NotAuthorized));
    // As Mosquitto 2.0.11, an assigned id is checked too.
    let assigned = sim.connect(ClientOptions::new(""));
    assert_eq!(connack(&mut sim, assigned), Some(ConnectReturnCode::NotAuthorized));
}

#[test]
fn assigned_ids_pass_when_their_prefix_has_the_prefix() {
    let config = Config {
        clientid_prefixes: Some("secure-".to_owned()),
        auto_id_prefix: "secure-auto-".to_owned(),
        ..Config::default()
    };
    let mut sim = broker_with(config, ListenerRules::DEFAULT);
    let assigned = sim.connect(ClientOptions::new(""));
    assert_eq!(connack(&mut sim, assigned), Some(ConnectReturnCode::Accepted));
    assert!(sim.broker().client_of(assigned).is_some_and(|id| id.as_str().starts_with("secure-auto-")));
}

// ---- max_qos ------------------------------------------------------------------

fn max_qos_1() -> ListenerRules {
    ListenerRules { max_qos: QoS::AtLeastOnce, ..ListenerRules::DEFAULT }
}

#[test]
fn a_publish_above_max_qos_closes_the_connection() {
    let mut sim = broker(max_qos_1());
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "#", QoS::ExactlyOnce);
    sim.take_received(sub);
    let conn = on_rules_listener(&mut sim, ClientOptions::new("pub"));
    sim.take_received(conn);
    sim.publish(conn, "t", b"one", QoS::AtLeastOnce, false);
    assert!(matches!(sim.take_received(conn)[..], [Packet::PubAck(_)]));
    sim.publish(conn, "t", b"two", QoS::ExactlyOnce, false);
    assert_eq!(sim.closed(conn), Some(CloseReason::QosNotSupported));
    assert!(sim.take_received(conn).is_empty(), "no PUBREC for a refused QoS 2 PUBLISH");
    assert_eq!(messages(&mut sim, sub), [pair("t", "one")]);
    // The other listener still takes QoS 2.
    let other = sim.connect(ClientOptions::new("other"));
    sim.publish(other, "t", b"three", QoS::ExactlyOnce, false);
    assert_eq!(sim.closed(other), None);
}

#[test]
fn a_subscription_above_max_qos_is_granted_max_qos() {
    let mut sim = broker(max_qos_1());
    let conn = on_rules_listener(&mut sim, ClientOptions::new("sub"));
    sim.take_received(conn);
    sim.subscribe(conn, "t", QoS::ExactlyOnce);
    assert_eq!(granted(&mut sim, conn), [SubscribeReturnCode::Granted(QoS::AtLeastOnce)]);
    let publisher = sim.connect(ClientOptions::new("pub"));
    sim.publish(publisher, "t", b"x", QoS::ExactlyOnce, false);
    let qos: Vec<QoS> = sim
        .take_received(conn)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(publish) => Some(publish.qos),
            _ => None,
        })
        .collect();
    assert_eq!(qos, [QoS::AtLeastOnce]);
}

#[test]
fn a_will_above_max_qos_is_closed_without_connack() {
    let mut sim = broker(max_qos_1());
    let conn = on_rules_listener(&mut sim, ClientOptions::new("c").will(will("w", QoS::ExactlyOnce)));
    assert_eq!(connack(&mut sim, conn), None);
    assert_eq!(sim.closed(conn), Some(CloseReason::QosNotSupported));
    let fine = on_rules_listener(&mut sim, ClientOptions::new("d").will(will("w", QoS::AtLeastOnce)));
    assert_eq!(connack(&mut sim, fine), Some(ConnectReturnCode::Accepted));
}

// ---- accept_protocol_versions ------------------------------------------------

#[test]
fn a_protocol_the_listener_does_not_accept_gets_connack_1() {
    let mut sim = broker(ListenerRules { accept_mqtt31: false, ..ListenerRules::DEFAULT });
    let mut v31 = ClientOptions::new("old");
    v31.connect.protocol = Protocol::V31;
    let conn = on_rules_listener(&mut sim, v31.clone());
    assert_eq!(connack(&mut sim, conn), Some(ConnectReturnCode::UnacceptableProtocolVersion));
    let v311 = on_rules_listener(&mut sim, ClientOptions::new("new"));
    assert_eq!(connack(&mut sim, v311), Some(ConnectReturnCode::Accepted));
    let elsewhere = sim.connect(v31);
    assert_eq!(connack(&mut sim, elsewhere), Some(ConnectReturnCode::Accepted));
}

// ---- mount_point ----------------------------------------------------------------

fn mounted() -> ListenerRules {
    ListenerRules { mount_point: Some("m/".to_owned()), ..ListenerRules::DEFAULT }
}

#[test]
fn mounted_and_plain_clients_see_each_other_through_the_prefix() {
    let mut sim = broker(mounted());
    let inside = on_rules_listener(&mut sim, ClientOptions::new("inside"));
    let outside = sim.connect(ClientOptions::new("outside"));
    sim.subscribe(inside, "#", QoS::AtLeastOnce);
    assert_eq!(granted(&mut sim, inside), [SubscribeReturnCode::Granted(QoS::AtLeastOnce)]);
    sim.subscribe(outside, "#", QoS::AtLeastOnce);
    sim.take_received(outside);
    sim.publish(inside, "a/b", b"from inside", QoS::AtLeastOnce, false);
    sim.publish(outside, "m/c", b"from outside", QoS::AtMostOnce, false);
    sim.publish(outside, "x", b"elsewhere", QoS::AtMostOnce, false);
    assert_eq!(messages(&mut sim, inside), [pair("a/b", "from inside"), pair("c", "from outside")]);
    assert_eq!(
        messages(&mut sim, outside),
        [pair("m/a/b", "from inside"), pair("m/c", "from outside"), pair("x", "elsewhere")]
    );
}

#[test]
fn topics_at_the_edge_of_the_mount_point_are_not_shown() {
    let mut sim = broker(mounted());
    let inside = on_rules_listener(&mut sim, ClientOptions::new("inside"));
    sim.subscribe(inside, "#", QoS::AtLeastOnce);
    sim.take_received(inside);
    let outside = sim.connect(ClientOptions::new("outside"));
    // "m/#" matches "m" and "m/", which have nothing below the mount point.
    for topic in ["m", "m/", "m/ok"] {
        sim.publish(outside, topic, topic.as_bytes(), QoS::AtLeastOnce, false);
    }
    assert_eq!(messages(&mut sim, inside), [pair("ok", "m/ok")]);
}

#[test]
fn unsubscribe_removes_the_mounted_filter() {
    let mut sim = broker(mounted());
    let inside = on_rules_listener(&mut sim, ClientOptions::new("inside"));
    sim.subscribe(inside, "a", QoS::AtMostOnce);
    sim.unsubscribe(inside, "a");
    sim.take_received(inside);
    let outside = sim.connect(ClientOptions::new("outside"));
    sim.publish(outside, "m/a", b"x", QoS::AtMostOnce, false);
    assert!(messages(&mut sim, inside).is_empty());
    assert!(sim.broker().session("inside").is_some_and(|s| s.subscriptions.is_empty()));
}

#[test]
fn retained_messages_and_wills_cross_the_mount_point() {
    let mut sim = broker(mounted());
    let outside = sim.connect(ClientOptions::new("outside"));
    sim.publish(outside, "m/r", b"kept", QoS::AtLeastOnce, true);
    sim.subscribe(outside, "m/w", QoS::AtMostOnce);
    sim.take_received(outside);
    let inside = on_rules_listener(&mut sim, ClientOptions::new("inside").will(will("w", QoS::AtMostOnce)));
    sim.subscribe(inside, "r", QoS::AtLeastOnce);
    assert_eq!(messages(&mut sim, inside), [pair("r", "kept")]);
    sim.drop_connection(inside);
    assert_eq!(messages(&mut sim, outside), [pair("m/w", "gone")]);
}

#[test]
fn a_filter_that_cannot_be_mounted_is_refused() {
    let mut sim = broker(ListenerRules { mount_point: Some("m".to_owned()), ..ListenerRules::DEFAULT });
    let inside = on_rules_listener(&mut sim, ClientOptions::new("inside"));
    sim.take_received(inside);
    // "m" + "#" is no filter; "m" + "/x" is "m/x".
    sim.subscribe(inside, "#", QoS::AtMostOnce);
    assert_eq!(granted(&mut sim, inside), [SubscribeReturnCode::Failure]);
    sim.subscribe(inside, "/x", QoS::AtMostOnce);
    assert_eq!(granted(&mut sim, inside), [SubscribeReturnCode::Granted(QoS::AtMostOnce)]);
    let outside = sim.connect(ClientOptions::new("outside"));
    sim.publish(outside, "m/x", b"x", QoS::AtMostOnce, false);
    assert_eq!(messages(&mut sim, inside), [pair("/x", "x")]);
}

#[test]
fn a_mounted_persistent_session_survives_a_restart() {
    let mut sim = broker_with(Config { persistence: true, ..Config::default() }, mounted());
    let inside = on_rules_listener(&mut sim, ClientOptions::new("inside").clean_session(false));
    sim.subscribe(inside, "a/#", QoS::AtLeastOnce);
    sim.disconnect(inside);
    let outside = sim.connect(ClientOptions::new("outside"));
    sim.publish(outside, "m/a/queued", b"waiting", QoS::AtLeastOnce, false);
    sim.publish(outside, "m/a/retained", b"kept", QoS::AtLeastOnce, true);
    sim.restart();
    let inside = on_rules_listener(&mut sim, ClientOptions::new("inside").clean_session(false));
    assert_eq!(messages(&mut sim, inside), [pair("a/queued", "waiting"), pair("a/retained", "kept")]);
    let outside = sim.connect(ClientOptions::new("outside"));
    sim.publish(outside, "m/a/live", b"now", QoS::AtLeastOnce, false);
    sim.publish(outside, "a/live", b"unmounted", QoS::AtLeastOnce, false);
    assert_eq!(messages(&mut sim, inside), [pair("a/live", "now")]);
    let fresh = on_rules_listener(&mut sim, ClientOptions::new("fresh"));
    sim.subscribe(fresh, "a/+", QoS::AtMostOnce);
    assert_eq!(messages(&mut sim, fresh), [pair("a/retained", "kept")]);
}

#[test]
fn a_session_moved_to_a_mounted_listener_sees_nothing_outside_it() {
    let mut sim = broker(mounted());
    let plain = sim.connect(ClientOptions::new("roamer").clean_session(false));
    sim.subscribe(plain, "x/#", QoS::AtLeastOnce);
    sim.subscribe(plain, "m/y", QoS::AtLeastOnce);
    sim.disconnect(plain);
    let outside = sim.connect(ClientOptions::new("outside"));
    sim.publish(outside, "x/1", b"outside", QoS::AtLeastOnce, false);
    sim.publish(outside, "m/y", b"inside", QoS::AtLeastOnce, false);
    let moved = on_rules_listener(&mut sim, ClientOptions::new("roamer").clean_session(false));
    assert_eq!(messages(&mut sim, moved), [pair("y", "inside")]);
    sim.publish(outside, "x/2", b"outside", QoS::AtMostOnce, false);
    assert!(messages(&mut sim, moved).is_empty());
}
