//! The main flows of the broker, each asserted and kept as a readable
//! packet transcript (insta snapshots under `tests/snapshots/`).

use std::time::Duration;

use bytes::Bytes;
use culex_core::auth::FilePolicy;
use culex_core::auth::acl::AclFile;
use culex_core::codec::{ConnectReturnCode, LastWill, Packet, Publish};
use culex_core::policy::{AccessPolicy, AuthDecision, ClientInfo, FilterAccess, Refusal};
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{Broker, CloseReason, Config, ConnId, PacketId, QoS, TopicFilter, TopicName, Violation};

/// Flows without `$SYS` traffic (it has a test of its own).
fn quiet() -> Config {
    Config { sys_interval: Duration::ZERO, ..Config::default() }
}

fn sim() -> Simulation {
    let mut sim = Simulation::new(quiet());
    sim.record();
    sim
}

fn payloads(sim: &mut Simulation, conn: ConnId) -> Vec<String> {
    sim.take_publishes(conn).iter().map(|p| String::from_utf8_lossy(&p.payload).into_owned()).collect()
}

/// A QoS 0 will, not retained.
fn will_to(topic: &str, payload: &'static [u8]) -> LastWill {
    let topic = TopicName::new(topic).expect("valid topic");
    LastWill { topic, payload: Bytes::from_static(payload), qos: QoS::AtMostOnce, retain: false }
}

#[test]
fn qos_0_1_2_round_trip() {
    let mut sim = sim();
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "room/+/temp", QoS::ExactlyOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "room/1/temp", b"q0", QoS::AtMostOnce, false);
    sim.publish(publ, "room/1/temp", b"q1", QoS::AtLeastOnce, false);
    sim.publish(publ, "room/1/temp", b"q2", QoS::ExactlyOnce, false);
    let got = sim.take_publishes(sub);
    let seen: Vec<(String, QoS, Option<u16>, bool)> = got
        .iter()
        .map(|p| (String::from_utf8_lossy(&p.payload).into_owned(), p.qos, p.packet_id.map(|i| i.get()), p.dup))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("q0".to_owned(), QoS::AtMostOnce, None, false),
            ("q1".to_owned(), QoS::AtLeastOnce, Some(1), false),
            ("q2".to_owned(), QoS::ExactlyOnce, Some(2), false),
        ]
    );
    assert_eq!(sim.broker().session("sub").map(|s| s.inflight), Some(0));
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn retained_messages_store_replace_and_delete() {
    let mut sim = sim();
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "lamp/state", b"on", QoS::AtLeastOnce, true);
    sim.publish(publ, "lamp/state", b"off", QoS::AtMostOnce, true);
    sim.publish(publ, "lamp/other", b"x", QoS::AtMostOnce, true);
    sim.publish(publ, "lamp/other", b"", QoS::AtMostOnce, true);
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "lamp/#", QoS::AtLeastOnce);
    let got = sim.take_publishes(sub);
    assert_eq!(got.len(), 1);
    assert_eq!((&got[0].payload[..], got[0].retain, got[0].qos), (&b"off"[..], true, QoS::AtMostOnce));
    // A live message is forwarded with RETAIN 0 [MQTT-3.3.1-9].
    sim.publish(publ, "lamp/state", b"dim", QoS::AtLeastOnce, true);
    let live = sim.take_publishes(sub);
    assert_eq!((live.len(), live[0].retain), (1, false));
    // Subscribing again to the same filter re-sends retained [MQTT-3.8.4-3].
    sim.subscribe(sub, "lamp/#", QoS::AtLeastOnce);
    let again = sim.take_publishes(sub);
    assert_eq!((again.len(), &again[0].payload[..], again[0].retain), (1, &b"dim"[..], true));
    assert_eq!(sim.broker().stats().retained, 1);
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn suback_comes_before_retained_messages() {
    let mut sim = sim();
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "a", b"r", QoS::AtMostOnce, true);
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.take_received(sub);
    sim.subscribe(sub, "a", QoS::AtMostOnce);
    let got = sim.take_received(sub);
    assert!(matches!(got[0], Packet::SubAck(_)), "{got:?}");
    assert!(matches!(got[1], Packet::Publish(_)), "{got:?}");
}

#[test]
fn persistent_session_queues_and_resends_with_dup() {
    let mut sim = sim();
    let dev = sim.connect(ClientOptions::new("dev").clean_session(false).auto_ack(false));
    sim.subscribe(dev, "cmd/#", QoS::AtLeastOnce);
    let app = sim.connect(ClientOptions::new("app"));
    sim.publish(app, "cmd/1", b"first", QoS::AtLeastOnce, false);
    assert_eq!(payloads(&mut sim, dev), ["first"]);
    // The device drops without acking; two more arrive while it is away.
    sim.drop_connection(dev);
    sim.publish(app, "cmd/1", b"second", QoS::AtLeastOnce, false);
    sim.publish(app, "cmd/1", b"third", QoS::ExactlyOnce, false);
    sim.publish(app, "cmd/1", b"lost-qos0", QoS::AtMostOnce, false);
    assert_eq!(sim.broker().session("dev").map(|s| (s.inflight, s.queued)), Some((1, 2)));
    let dev = sim.connect(ClientOptions::new("dev").clean_session(false));
    let got = sim.take_received(dev);
    assert!(matches!(got[0], Packet::ConnAck(a) if a.session_present));
    let resent: Vec<(String, bool)> = got[1..]
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((String::from_utf8_lossy(&p.payload).into_owned(), p.dup)),
            _ => None,
        })
        .collect();
    assert_eq!(resent, [("first".to_owned(), true), ("second".to_owned(), false), ("third".to_owned(), false)]);
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn clean_session_forgets_everything() {
    let mut sim = sim();
    let dev = sim.connect(ClientOptions::new("dev").clean_session(false));
    sim.subscribe(dev, "x", QoS::AtLeastOnce);
    sim.disconnect(dev);
    let dev = sim.connect(ClientOptions::new("dev").clean_session(true));
    let got = sim.take_received(dev);
    assert!(matches!(got[0], Packet::ConnAck(a) if !a.session_present));
    assert_eq!(sim.broker().session("dev").map(|s| s.subscriptions.len()), Some(0));
    sim.disconnect(dev);
    assert_eq!(sim.broker().session("dev"), None);
}

#[test]
fn will_is_published_on_loss_but_not_after_disconnect() {
    let mut sim = sim();
    let watcher = sim.connect(ClientOptions::new("watcher"));
    sim.subscribe(watcher, "status/#", QoS::AtLeastOnce);
    let will = |who: &str| LastWill {
        topic: TopicName::new(format!("status/{who}")).expect("valid topic"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
    };
    let lost = sim.connect(ClientOptions::new("lost").will(will("lost")));
    let polite = sim.connect(ClientOptions::new("polite").will(will("polite")));
    sim.drop_connection(lost);
    sim.disconnect(polite);
    let got = sim.take_publishes(watcher);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].topic.as_str(), got[0].qos), ("status/lost", QoS::AtLeastOnce));
    // The will was retained [MQTT-3.1.2-17].
    assert_eq!(sim.broker().stats().retained, 1);
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn keepalive_closes_after_one_and_a_half_periods() {
    let mut sim = sim();
    let dev = sim.connect(ClientOptions::new("dev").keep_alive(10));
    let idle = sim.connect(ClientOptions::new("idle").keep_alive(0));
    sim.advance(Duration::from_secs(9));
    sim.send(dev, &Packet::PingReq);
    assert!(matches!(sim.take_received(dev).last(), Some(Packet::PingResp)));
    // 15 s after the PINGREQ, not before.
    sim.advance(Duration::from_millis(14_999));
    assert_eq!(sim.closed(dev), None);
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.closed(dev), Some(CloseReason::KeepAliveTimeout));
    assert!(!sim.is_online("dev"));
    // Keepalive 0 turns the check off.
    sim.advance(Duration::from_secs(100_000));
    assert_eq!(sim.closed(idle), None);
    assert!(sim.is_online("idle"));
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn connection_without_connect_is_closed_after_the_connect_timeout() {
    let mut sim = sim();
    let conn = sim.open("silent", true);
    sim.advance(Duration::from_secs(9));
    assert_eq!(sim.closed(conn), None);
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.closed(conn), Some(CloseReason::ConnectTimeout));
}

#[test]
fn takeover_closes_the_old_connection_and_ends_online() {
    let mut sim = sim();
    let watcher = sim.connect(ClientOptions::new("watcher"));
    sim.subscribe(watcher, "will/#", QoS::AtMostOnce);
    let will = will_to("will/dev", b"old connection gone");
    let old = sim.connect(ClientOptions::new("dev").clean_session(false).will(will));
    sim.subscribe(old, "cmd", QoS::AtLeastOnce);
    let new = sim.connect(ClientOptions::new("dev").clean_session(false));
    assert_eq!(sim.closed(old), Some(CloseReason::TakenOver));
    assert_eq!(sim.closed(new), None);
    assert!(sim.is_online("dev"));
    assert!(matches!(sim.take_received(new)[0], Packet::ConnAck(a) if a.session_present));
    assert_eq!(payloads(&mut sim, watcher), ["old connection gone"]);
    let transcript = sim.transcript();
    let hdel = transcript.find("HDEL mqtt dev").expect("old connection marked offline");
    let hset = transcript.rfind("HSET mqtt dev").expect("new connection marked online");
    assert!(hdel < hset, "offline must come before online:\n{transcript}");
    insta::assert_snapshot!(transcript);
}

#[test]
fn expired_copies_are_dropped_everywhere_and_publisher_still_acked() {
    let mut sim = sim();
    let now = sim.now().unix.as_secs_f64();
    let live = sim.connect(ClientOptions::new("live"));
    sim.subscribe(live, "cmd", QoS::AtLeastOnce);
    let away = sim.connect(ClientOptions::new("away").clean_session(false));
    sim.subscribe(away, "cmd", QoS::AtLeastOnce);
    sim.disconnect(away);
    let publ = sim.connect(ClientOptions::new("pub"));
    let soon = format!("{{\"cmd\":\"soon\",\"expired_at\":{}}}", now + 5.0);
    let past = format!("{{\"cmd\":\"past\",\"expiredAt\":{}}}", now - 1.0);
    sim.publish(publ, "cmd", past.as_bytes(), QoS::AtLeastOnce, false);
    sim.publish(publ, "cmd", soon.as_bytes(), QoS::AtLeastOnce, true);
    sim.publish(publ, "cmd", b"not json", QoS::AtLeastOnce, false);
    // The publisher is acknowledged either way.
    let acks = sim.take_received(publ).iter().filter(|p| matches!(p, Packet::PubAck(_))).count();
    assert_eq!(acks, 3);
    // Live: the past one is dropped, the others delivered.
    assert_eq!(payloads(&mut sim, live), [soon.clone(), "not json".to_owned()]);
    // Queued: by the time "away" returns, "soon" has expired too.
    sim.advance(Duration::from_secs(6));
    let away = sim.connect(ClientOptions::new("away").clean_session(false));
    assert_eq!(payloads(&mut sim, away), ["not json"]);
    // Retained: expired, so not sent, and removed from the store.
    let late = sim.connect(ClientOptions::new("late"));
    sim.subscribe(late, "cmd", QoS::AtLeastOnce);
    assert!(payloads(&mut sim, late).is_empty());
    assert_eq!(sim.broker().stats().retained, 0);
    assert_eq!(sim.stats().expired, 4);
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn with_message_expiry_off_nothing_expires() {
    let mut sim = Simulation::new(Config { message_expiry: false, ..quiet() });
    let now = sim.now().unix.as_secs_f64();
    let live = sim.connect(ClientOptions::new("live"));
    sim.subscribe(live, "cmd", QoS::AtLeastOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    let past = format!("{{\"cmd\":\"past\",\"expired_at\":{}}}", now - 1.0);
    sim.publish(publ, "cmd", past.as_bytes(), QoS::AtLeastOnce, true);
    assert_eq!(payloads(&mut sim, live), [past.as_str()]);
    let late = sim.connect(ClientOptions::new("late"));
    sim.subscribe(late, "cmd", QoS::AtLeastOnce);
    assert_eq!(payloads(&mut sim, late), [past]);
    assert_eq!(sim.stats().expired, 0);
}

#[test]
fn expired_inflight_copy_is_not_resent() {
    let mut sim = sim();
    let now = sim.now().unix.as_secs_f64();
    let dev = sim.connect(ClientOptions::new("dev").clean_session(false).auto_ack(false));
    sim.subscribe(dev, "cmd", QoS::AtLeastOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    let soon = format!("{{\"expired_at\":{}}}", now + 2.0);
    sim.publish(publ, "cmd", soon.as_bytes(), QoS::AtLeastOnce, false);
    assert_eq!(payloads(&mut sim, dev).len(), 1);
    sim.drop_connection(dev);
    sim.advance(Duration::from_secs(3));
    let dev = sim.connect(ClientOptions::new("dev").clean_session(false));
    assert!(payloads(&mut sim, dev).is_empty());
    assert_eq!(sim.broker().session("dev").map(|s| s.inflight), Some(0));
    assert_eq!(sim.stats().expired, 1);
}

#[test]
fn malformed_packet_closes_only_that_connection() {
    let mut sim = sim();
    let good = sim.connect(ClientOptions::new("good"));
    sim.subscribe(good, "t", QoS::AtMostOnce);
    let bad = sim.connect(ClientOptions::new("bad"));
    // SUBSCRIBE with flags 0000 instead of 0010 [MQTT-3.8.1-1].
    sim.send_bytes(bad, &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x00]);
    assert_eq!(sim.closed(bad), Some(CloseReason::Violation(Violation::SubscribeFlags)));
    assert!(!sim.is_online("bad"));
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "t", b"still here", QoS::AtMostOnce, false);
    assert_eq!(payloads(&mut sim, good), ["still here"]);
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn wrong_acknowledgement_closes_the_connection_and_publishes_the_will() {
    let mut sim = sim();
    let watcher = sim.connect(ClientOptions::new("watcher"));
    sim.subscribe(watcher, "status/#", QoS::AtMostOnce);
    let will = will_to("status/dev", b"gone");
    let dev = sim.connect(ClientOptions::new("dev").clean_session(false).auto_ack(false).will(will));
    sim.subscribe(dev, "cmd", QoS::ExactlyOnce);
    let app = sim.connect(ClientOptions::new("app"));
    sim.publish(app, "cmd", b"on", QoS::AtLeastOnce, false);
    let id = sim.take_publishes(dev)[0].packet_id.expect("a QoS 1 copy has an id");
    // PUBCOMP belongs to QoS 2: the QoS 1 flow is broken [MQTT-4.8.0-1].
    sim.send(dev, &Packet::PubComp(id));
    let reason = sim.closed(dev).map(|r| r.to_string());
    assert_eq!(
        reason.as_deref(),
        Some("protocol violation: [MQTT-4.8.0-1] PUBCOMP for packet id 1, which awaits PUBACK")
    );
    assert!(!sim.is_online("dev"));
    assert_eq!(payloads(&mut sim, watcher), ["gone"]);
    // The copy is still unacknowledged: resent to the next connection.
    let dev = sim.connect(ClientOptions::new("dev").clean_session(false));
    let resent = sim.take_publishes(dev);
    assert_eq!(resent.iter().map(|p| (p.packet_id, p.dup)).collect::<Vec<_>>(), [(Some(id), true)]);
    assert_eq!(sim.broker().session("dev").map(|s| s.inflight), Some(0));
    insta::assert_snapshot!(sim.transcript());
}

/// Each acknowledgement that does not fit the flow of the message in
/// flight under its id closes the connection; a PUBREC repeated after
/// PUBREL is answered again, and an ack for an id not in flight is ignored.
#[test]
fn acknowledgements_are_judged_against_the_flow_of_their_message() {
    let ack = |kind: &str, id| match kind {
        "PUBACK" => Packet::PubAck(id),
        "PUBREC" => Packet::PubRec(id),
        _ => Packet::PubComp(id),
    };
    // QoS of the copy, acks sent first, the ack judged, the close expected.
    let cases = [
        (QoS::AtLeastOnce, &[][..], "PUBREC", Some("PUBREC for packet id 1, which awaits PUBACK")),
        (QoS::AtLeastOnce, &[], "PUBCOMP", Some("PUBCOMP for packet id 1, which awaits PUBACK")),
        (QoS::ExactlyOnce, &[], "PUBACK", Some("PUBACK for packet id 1, which awaits PUBREC")),
        (QoS::ExactlyOnce, &[], "PUBCOMP", Some("PUBCOMP for packet id 1, which awaits PUBREC")),
        (QoS::ExactlyOnce, &["PUBREC"], "PUBACK", Some("PUBACK for packet id 1, which awaits PUBCOMP")),
        (QoS::ExactlyOnce, &["PUBREC"], "PUBREC", None),
        (QoS::AtLeastOnce, &["PUBACK"], "PUBREC", None),
        (QoS::AtLeastOnce, &["PUBACK"], "PUBCOMP", None),
        (QoS::ExactlyOnce, &["PUBREC", "PUBCOMP"], "PUBACK", None),
        (QoS::ExactlyOnce, &["PUBREC", "PUBCOMP"], "PUBCOMP", None),
    ];
    for (qos, before, judged, expected) in cases {
        let mut sim = Simulation::new(quiet());
        let dev = sim.connect(ClientOptions::new("dev").auto_ack(false));
        sim.subscribe(dev, "cmd", QoS::ExactlyOnce);
        let app = sim.connect(ClientOptions::new("app"));
        sim.publish(app, "cmd", b"on", qos, false);
        let id = sim.take_publishes(dev)[0].packet_id.expect("a QoS 1/2 copy has an id");
        for kind in before {
            sim.send(dev, &ack(kind, id));
        }
        sim.take_received(dev);
        sim.send(dev, &ack(judged, id));
        let case = format!("{judged} after {before:?} for QoS {qos}");
        let reason = sim.closed(dev).map(|r| r.to_string());
        let expected = expected.map(|e| format!("protocol violation: [MQTT-4.8.0-1] {e}"));
        assert_eq!(reason, expected, "{case}");
        assert_eq!(sim.is_online("dev"), expected.is_none(), "{case}");
        // An ack for an id never used is ignored, whatever its kind.
        if expected.is_none() {
            let unused = PacketId::new(9).expect("non-zero");
            for kind in ["PUBACK", "PUBREC", "PUBCOMP"] {
                sim.send(dev, &ack(kind, unused));
            }
            let answers = sim.take_received(dev);
            let repeat = judged == "PUBREC" && before == ["PUBREC"];
            assert_eq!(answers, if repeat { vec![Packet::PubRel(id)] } else { vec![] }, "{case}");
            assert_eq!(sim.closed(dev), None, "{case}");
        }
    }
}

#[test]
fn first_packet_must_be_connect() {
    let mut sim = sim();
    let conn = sim.open("rude", true);
    sim.send(conn, &Packet::PingReq);
    assert_eq!(sim.closed(conn), Some(CloseReason::Violation(Violation::ConnectNotFirst)));
    assert!(sim.take_received(conn).is_empty());
}

#[test]
fn second_connect_is_a_violation() {
    let mut sim = sim();
    let conn = sim.connect(ClientOptions::new("twice"));
    sim.send(conn, &ClientOptions::new("twice").connect_packet());
    assert_eq!(sim.closed(conn), Some(CloseReason::Violation(Violation::SecondConnect)));
    assert!(!sim.is_online("twice"));
}

#[test]
fn unsupported_protocol_level_gets_connack_1() {
    let mut sim = sim();
    let conn = sim.open("v5", true);
    // CONNECT "MQTT" level 5.
    sim.send_bytes(conn, &[0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 1, b'x']);
    let got = sim.take_received(conn);
    assert!(matches!(got[..], [Packet::ConnAck(a)] if a.code == ConnectReturnCode::UnacceptableProtocolVersion));
    assert_eq!(sim.closed(conn), Some(CloseReason::Violation(Violation::ProtocolLevel)));
}

#[test]
fn empty_client_id_is_assigned_with_clean_session_and_refused_without() {
    let mut sim = sim();
    let anon = sim.connect(ClientOptions::new(""));
    assert!(matches!(sim.take_received(anon)[0], Packet::ConnAck(a) if a.code == ConnectReturnCode::Accepted));
    let assigned = sim.broker().client_of(anon).map(|c| c.to_string()).unwrap_or_default();
    assert!(assigned.starts_with("auto-") && assigned.len() == 41, "{assigned}");
    assert!(sim.is_online(&assigned));
    let refused = sim.connect(ClientOptions::new("").clean_session(false));
    assert!(
        matches!(sim.take_received(refused)[0], Packet::ConnAck(a) if a.code == ConnectReturnCode::IdentifierRejected)
    );
    assert_eq!(sim.closed(refused), Some(CloseReason::Refused(ConnectReturnCode::IdentifierRejected)));
}

#[test]
fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let mut sim = sim();
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "a/+", QoS::AtMostOnce);
    sim.subscribe(sub, "a/#", QoS::ExactlyOnce);
    sim.subscribe(sub, "#", QoS::AtLeastOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "a/b", b"x", QoS::ExactlyOnce, false);
    let got = sim.take_publishes(sub);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
}

#[test]
fn wildcards_at_the_start_do_not_match_dollar_topics() {
    let mut sim = sim();
    let all = sim.connect(ClientOptions::new("all"));
    sim.subscribe(all, "#", QoS::AtMostOnce);
    sim.subscribe(all, "+/x", QoS::AtMostOnce);
    let dollar = sim.connect(ClientOptions::new("dollar"));
    sim.subscribe(dollar, "$app/#", QoS::AtMostOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "$app/x", b"d", QoS::AtMostOnce, false);
    sim.publish(publ, "$SYS/x", b"sys", QoS::AtMostOnce, false);
    assert!(payloads(&mut sim, all).is_empty());
    assert_eq!(payloads(&mut sim, dollar), ["d"]);
}

#[test]
fn unsubscribe_stops_delivery_and_is_always_acknowledged() {
    let mut sim = sim();
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "t/#", QoS::AtMostOnce);
    sim.unsubscribe(sub, "t/+");
    sim.unsubscribe(sub, "t/#");
    let acks = sim.take_received(sub).iter().filter(|p| matches!(p, Packet::UnsubAck(_))).count();
    assert_eq!(acks, 2);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "t/1", b"x", QoS::AtMostOnce, false);
    assert!(payloads(&mut sim, sub).is_empty());
}

#[test]
fn a_full_window_and_queue_hold_the_publisher_instead_of_dropping() {
    let config = Config { max_inflight_messages: 2, max_queued_messages: 2, ..quiet() };
    let mut sim = Simulation::new(config);
    sim.record();
    let slow = sim.connect(ClientOptions::new("slow").auto_ack(false));
    sim.subscribe(slow, "t", QoS::AtLeastOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    for n in 0..6 {
        sim.publish(publ, "t", format!("m{n}").as_bytes(), QoS::AtLeastOnce, false);
    }
    let first = sim.take_publishes(slow);
    assert_eq!(first.iter().map(|p| p.payload.clone()).collect::<Vec<_>>(), [&b"m0"[..], b"m1"]);
    // m4 found the queue full: it was queued anyway and the publisher's
    // reads paused, so m5 waits in its socket.
    assert_eq!(sim.broker().session("slow").map(|s| (s.inflight, s.queued)), Some((2, 3)));
    assert!(sim.is_paused(publ));
    assert_eq!(sim.broker().stats().counts.dropped_for_room(), 0);
    // Each PUBACK lets one queued message out, in order; at half the
    // queue the publisher is read again and m5 arrives.
    let mut got = Vec::new();
    let mut next = first;
    for _ in 0..10 {
        for p in &next {
            sim.send(slow, &Packet::PubAck(p.packet_id.expect("QoS 1 has an id")));
        }
        next = sim.take_publishes(slow);
        got.extend(next.iter().map(|p| String::from_utf8_lossy(&p.payload).into_owned()));
    }
    assert_eq!(got, ["m2", "m3", "m4", "m5"]);
    assert!(!sim.is_paused(publ));
    assert_eq!(sim.broker().stats().counts.dropped_for_room(), 0);
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn qos2_duplicate_before_pubrel_is_forwarded_once() {
    let mut sim = sim();
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "t", QoS::ExactlyOnce);
    let publ = sim.connect(ClientOptions::new("pub").auto_ack(false));
    sim.take_received(publ);
    let publish = Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: TopicName::new("t").expect("valid topic"),
        packet_id: PacketId::new(9),
        payload: Bytes::from_static(b"once"),
    };
    sim.send(publ, &Packet::Publish(publish.clone()));
    sim.send(publ, &Packet::Publish(Publish { dup: true, ..publish }));
    let id = PacketId::new(9).expect("non-zero");
    assert_eq!(sim.take_received(publ), [Packet::PubRec(id), Packet::PubRec(id)]);
    // Mosquitto routes QoS 2 on PUBREL: nothing yet.
    assert!(payloads(&mut sim, sub).is_empty());
    sim.send(publ, &Packet::PubRel(id));
    sim.send(publ, &Packet::PubRel(id));
    assert_eq!(sim.take_received(publ), [Packet::PubComp(id), Packet::PubComp(id)]);
    assert_eq!(payloads(&mut sim, sub), ["once"]);
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn client_publish_to_sys_is_acknowledged_and_dropped() {
    let mut sim = sim();
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "$SYS/#", QoS::AtMostOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "$SYS/broker/uptime", b"fake", QoS::AtLeastOnce, false);
    assert!(matches!(sim.take_received(publ).last(), Some(Packet::PubAck(_))));
    assert!(payloads(&mut sim, sub).is_empty());
}

#[test]
fn the_brokers_own_messages_reach_matching_subscriptions_at_their_qos() {
    let mut sim = sim();
    let all = sim.connect(ClientOptions::new("all"));
    sim.subscribe(all, "$SYS/broker/log/#", QoS::ExactlyOnce);
    let errors = sim.connect(ClientOptions::new("errors"));
    sim.subscribe(errors, "$SYS/broker/log/E", QoS::AtMostOnce);
    let hash = sim.connect(ClientOptions::new("hash"));
    sim.subscribe(hash, "#", QoS::ExactlyOnce);
    sim.broker_publishes("$SYS/broker/log/N", b"1: New client connected", QoS::ExactlyOnce, false);
    sim.broker_publishes("$SYS/broker/log/E", b"1: Error", QoS::ExactlyOnce, false);
    // Not a topic name: dropped.
    sim.broker_publishes("$SYS/broker/log/+", b"x", QoS::AtMostOnce, false);
    let got = sim.take_publishes(all);
    let seen: Vec<_> = got.iter().map(|p| (p.topic.as_str(), &p.payload[..], p.qos, p.retain)).collect();
    assert_eq!(
        seen,
        [
            ("$SYS/broker/log/N", &b"1: New client connected"[..], QoS::ExactlyOnce, false),
            ("$SYS/broker/log/E", &b"1: Error"[..], QoS::ExactlyOnce, false),
        ]
    );
    assert_eq!(payloads(&mut sim, errors), ["1: Error"]);
    // `#` does not match topics starting with `$` [MQTT-4.7.2-1].
    assert!(payloads(&mut sim, hash).is_empty());
}

#[test]
fn oversized_payload_is_acknowledged_and_dropped() {
    let mut sim = Simulation::new(Config { message_size_limit: 4, ..quiet() });
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "t", QoS::AtMostOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "t", b"12345", QoS::AtLeastOnce, false);
    sim.publish(publ, "t", b"1234", QoS::AtLeastOnce, false);
    assert_eq!(sim.take_received(publ).iter().filter(|p| matches!(p, Packet::PubAck(_))).count(), 2);
    assert_eq!(payloads(&mut sim, sub), ["1234"]);
    assert_eq!(sim.closed(publ), None);
}

#[test]
fn packet_larger_than_the_cap_closes_before_its_body_arrives() {
    let config = Config { message_size_limit: 16, ..quiet() };
    let cap = config.max_packet_size();
    let mut sim = Simulation::new(config);
    let conn = sim.connect(ClientOptions::new("big"));
    // A PUBLISH header declaring a body just past the cap, and no body.
    let len = cap; // header bytes push the whole packet past the cap
    let mut header = vec![0x30];
    let mut n = len;
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        header.push(byte);
        if n == 0 {
            break;
        }
    }
    sim.send_bytes(conn, &header);
    assert!(matches!(sim.closed(conn), Some(CloseReason::TooLarge { .. })), "{:?}", sim.closed(conn));
}

#[derive(Debug)]
struct Gate;

impl AccessPolicy for Gate {
    fn authenticate(&self, client: ClientInfo<'_>, _: Option<&Bytes>) -> AuthDecision {
        match client.username {
            // A password hash: checked off the broker's thread.
            Some("admin") => AuthDecision::Defer,
            Some("guest") | None => AuthDecision::Refuse(Refusal::NotAuthorized),
            _ => AuthDecision::Refuse(Refusal::BadUserNameOrPassword),
        }
    }

    fn filter_access(&self, client: ClientInfo<'_>, filter: &TopicFilter) -> FilterAccess {
        match filter.as_str() {
            _ if client.username != Some("admin") => FilterAccess::Denied,
            "secret/#" => FilterAccess::Denied,
            "#" => FilterAccess::Partial,
            _ => FilterAccess::Whole,
        }
    }

    fn may_read(&self, _: ClientInfo<'_>, topic: &TopicName) -> bool {
        !topic.as_str().starts_with("secret/")
    }

    fn may_publish(&self, _: ClientInfo<'_>, topic: &TopicName) -> bool {
        topic.as_str() != "forbidden"
    }
}

#[test]
fn policy_decides_connect_subscribe_and_publish() {
    let broker = Broker::with_policy(quiet(), Box::new(Gate));
    let mut sim = Simulation::with_broker(broker, culex_core::sim::DEFAULT_START_UNIX);
    sim.set_authenticator(Box::new(|_, _, password| match password {
        Some(b"secret") => Ok(()),
        _ => Err(Refusal::BadUserNameOrPassword),
    }));
    sim.record();
    let anon = sim.connect(ClientOptions::new("anon"));
    let wrong = sim.connect(ClientOptions::new("wrong").credentials("admin", b"nope"));
    let guest = sim.connect(ClientOptions::new("guest").credentials("guest", b"x"));
    let code = |sim: &mut Simulation, c| match sim.take_received(c).first() {
        Some(Packet::ConnAck(a)) => a.code,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    assert_eq!(code(&mut sim, anon), ConnectReturnCode::NotAuthorized);
    assert_eq!(code(&mut sim, wrong), ConnectReturnCode::BadUserNameOrPassword);
    assert_eq!(code(&mut sim, guest), ConnectReturnCode::NotAuthorized);
    assert!(sim.online().is_empty());
    let admin = sim.connect(ClientOptions::new("admin").credentials("admin", b"secret"));
    assert_eq!(code(&mut sim, admin), ConnectReturnCode::Accepted);
    // A packet sent right behind the CONNECT waits for the deferred check.
    let early = sim.open("early", true);
    let mut bytes = bytes::BytesMut::new();
    ClientOptions::new("early").credentials("admin", b"secret").connect_packet().encode(&mut bytes);
    Packet::PingReq.encode(&mut bytes);
    sim.send_bytes(early, &bytes);
    assert!(
        matches!(sim.take_received(early)[..], [Packet::ConnAck(a), Packet::PingResp] if a.code == ConnectReturnCode::Accepted)
    );
    let bad = sim.connect(ClientOptions::new("bad").credentials("admin", b"guess"));
    assert_eq!(code(&mut sim, bad), ConnectReturnCode::BadUserNameOrPassword);
    assert!(!sim.is_online("bad"));
    let sub = culex_core::codec::Subscribe {
        packet_id: PacketId::new(1).expect("non-zero"),
        filters: vec![
            (TopicFilter::new("secret/#").expect("valid filter"), QoS::AtLeastOnce),
            (TopicFilter::new("#").expect("valid filter"), QoS::AtLeastOnce),
        ],
    };
    sim.send(admin, &Packet::Subscribe(sub));
    sim.publish(admin, "forbidden", b"no", QoS::AtLeastOnce, false);
    // `#` reaches secret/ too: granted, and what it may not read is held back.
    sim.publish(admin, "secret/plan", b"hidden", QoS::AtLeastOnce, false);
    sim.publish(admin, "allowed", b"yes", QoS::AtLeastOnce, false);
    let got = sim.take_received(admin);
    assert!(matches!(&got[0], Packet::SubAck(s) if s.return_codes == [
        culex_core::codec::SubscribeReturnCode::Failure,
        culex_core::codec::SubscribeReturnCode::Granted(QoS::AtLeastOnce),
    ]));
    let delivered: Vec<_> = got
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.payload.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [Bytes::from_static(b"yes")]);
    insta::assert_snapshot!(sim.transcript());
}

fn acl_policy(acl: &str) -> Box<FilePolicy> {
    let acl = AclFile::parse("acl", acl).expect("valid ACL");
    Box::new(FilePolicy::new(None, Some(std::sync::Arc::new(acl)), true))
}

#[test]
fn replaced_policy_rechecks_subscriptions_and_disconnects_who_it_does_not_keep() {
    let broker = Broker::with_policy(quiet(), acl_policy("topic read a/#\ntopic read b/#\ntopic write #\n"));
    let mut sim = Simulation::with_broker(broker, culex_core::sim::DEFAULT_START_UNIX);
    sim.record();
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "a/#", QoS::AtMostOnce);
    sim.subscribe(sub, "b/#", QoS::AtMostOnce);
    let away = sim.connect(ClientOptions::new("away").clean_session(false));
    sim.subscribe(away, "b/#", QoS::AtLeastOnce);
    sim.disconnect(away);
    let doomed = sim.connect(ClientOptions::new("doomed"));
    let publisher = sim.connect(ClientOptions::new("pub"));
    let _ = (sim.take_received(sub), sim.take_received(doomed));
    let delivered = |sim: &mut Simulation| -> Vec<Bytes> {
        sim.take_received(sub)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p.payload),
                _ => None,
            })
            .collect()
    };

    let keep = |client: ClientInfo<'_>| client.client_id.as_str() != "doomed";
    sim.replace_policy(acl_policy("topic read a/#\ntopic write #\n"), &keep);
    assert_eq!(sim.closed(doomed), Some(CloseReason::NotAuthorised));
    assert_eq!(sim.closed(sub), None);
    // Subscriptions stay; what they may no longer read is held back.
    let subscriptions = |sim: &Simulation, id| sim.broker().session(id).map(|s| s.subscriptions);
    let both = vec![("a/#".to_owned(), QoS::AtMostOnce), ("b/#".to_owned(), QoS::AtMostOnce)];
    assert_eq!(subscriptions(&sim, "sub"), Some(both));
    assert_eq!(subscriptions(&sim, "away"), Some(vec![("b/#".to_owned(), QoS::AtLeastOnce)]));
    sim.publish(publisher, "b/x", b"hidden", QoS::AtLeastOnce, false);
    sim.publish(publisher, "a/x", b"shown", QoS::AtMostOnce, false);
    assert_eq!(delivered(&mut sim), [Bytes::from_static(b"shown")]);
    assert_eq!(sim.broker().session("away").map(|s| s.queued), Some(0));

    // Read access granted back: delivery resumes, as in Mosquitto.
    sim.replace_policy(acl_policy("topic read a/#\ntopic read b/#\ntopic write #\n"), &keep);
    sim.publish(publisher, "b/y", b"back", QoS::AtLeastOnce, false);
    assert_eq!(delivered(&mut sim), [Bytes::from_static(b"back")]);
    assert_eq!(sim.broker().session("away").map(|s| s.queued), Some(1));
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn shutdown_marks_everyone_offline_and_publishes_wills() {
    let mut sim = sim();
    let watcher = sim.connect(ClientOptions::new("watcher").clean_session(false));
    sim.subscribe(watcher, "w", QoS::AtLeastOnce);
    let will = LastWill {
        topic: TopicName::new("w").expect("valid"),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: false,
    };
    let _dev = sim.connect(ClientOptions::new("dev").will(will));
    assert_eq!(sim.online().len(), 2);
    sim.shutdown();
    assert!(sim.online().is_empty());
    assert_eq!(sim.broker().stats().connections, 0);
    // The watcher's persistent session holds the will for later.
    assert_eq!(sim.broker().session("watcher").map(|s| s.queued), Some(1));
}

#[test]
fn sys_statistics_are_published_retained_and_only_when_changed() {
    let mut sim = Simulation::new(Config { sys_interval: Duration::from_secs(10), ..Config::default() });
    let watcher = sim.connect(ClientOptions::new("watcher"));
    // Due from the first connection on, and retained: a later subscriber
    // gets them.
    sim.advance(Duration::ZERO);
    sim.subscribe(watcher, "$SYS/broker/clients/connected", QoS::AtMostOnce);
    sim.subscribe(watcher, "$SYS/broker/uptime", QoS::AtMostOnce);
    let first = sim.take_publishes(watcher);
    let value = |ps: &[Publish], topic: &str| {
        ps.iter().find(|p| p.topic.as_str() == topic).map(|p| String::from_utf8_lossy(&p.payload).into_owned())
    };
    assert_eq!(value(&first, "$SYS/broker/uptime").as_deref(), Some("0 seconds"));
    assert!(first.iter().all(|p| p.retain));
    let _other = sim.connect(ClientOptions::new("other"));
    sim.advance(Duration::from_secs(10));
    let second = sim.take_publishes(watcher);
    assert_eq!(value(&second, "$SYS/broker/clients/connected").as_deref(), Some("2"));
    assert_eq!(value(&second, "$SYS/broker/uptime").as_deref(), Some("10 seconds"));
    // Nothing changed but the uptime.
    sim.advance(Duration::from_secs(10));
    let third = sim.take_publishes(watcher);
    assert_eq!(third.len(), 1, "{third:?}");
    // A client may not publish into $SYS.
    let liar = sim.connect(ClientOptions::new("liar"));
    sim.publish(liar, "$SYS/broker/clients/connected", b"999", QoS::AtMostOnce, true);
    assert!(sim.take_publishes(watcher).iter().all(|p| &p.payload[..] != b"999"));
}

#[test]
fn will_obeys_the_size_limit_and_the_publish_rules() {
    let mut sim = Simulation::new(Config { message_size_limit: 8, ..quiet() });
    let watcher = sim.connect(ClientOptions::new("watcher"));
    sim.subscribe(watcher, "$SYS/#", QoS::AtMostOnce);
    sim.subscribe(watcher, "w/#", QoS::AtMostOnce);
    let will = |topic: &str, payload: &'static [u8]| LastWill {
        topic: TopicName::new(topic).expect("valid topic"),
        payload: Bytes::from_static(payload),
        qos: QoS::AtMostOnce,
        retain: false,
    };
    // Too large to ever be published: refused at CONNECT, as Mosquitto does.
    let big = sim.connect(ClientOptions::new("big").will(will("w/big", b"123456789")));
    assert!(matches!(sim.take_received(big)[0], Packet::ConnAck(a) if a.code == ConnectReturnCode::NotAuthorized));
    // A will into $SYS is a publish the client may not make: dropped.
    let sneaky = sim.connect(ClientOptions::new("sneaky").will(will("$SYS/broker/uptime", b"0")));
    sim.drop_connection(sneaky);
    let fine = sim.connect(ClientOptions::new("fine").will(will("w/fine", b"bye")));
    sim.drop_connection(fine);
    assert_eq!(payloads(&mut sim, watcher), ["bye"]);
}

#[test]
fn max_subscriptions_refuses_new_filters_past_the_limit() {
    let mut sim = Simulation::new(Config { max_subscriptions: 2, ..quiet() });
    sim.record();
    let client = sim.connect(ClientOptions::new("many"));
    sim.subscribe(client, "a/#", QoS::AtMostOnce);
    sim.subscribe(client, "b/+", QoS::AtMostOnce);
    // A third filter is refused; a held one may change its QoS; after an
    // UNSUBSCRIBE there is room again.
    sim.subscribe(client, "c", QoS::AtMostOnce);
    sim.subscribe(client, "a/#", QoS::AtLeastOnce);
    sim.unsubscribe(client, "b/+");
    sim.subscribe(client, "c", QoS::AtMostOnce);
    let codes: Vec<_> = sim
        .take_received(client)
        .into_iter()
        .filter_map(|p| match p {
            Packet::SubAck(s) => Some(s.return_codes),
            _ => None,
        })
        .collect();
    use culex_core::codec::SubscribeReturnCode::{Failure, Granted};
    assert_eq!(
        codes,
        [
            vec![Granted(QoS::AtMostOnce)],
            vec![Granted(QoS::AtMostOnce)],
            vec![Failure],
            vec![Granted(QoS::AtLeastOnce)],
            vec![Granted(QoS::AtMostOnce)],
        ]
    );
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn clientid_prefixes_refuses_other_ids_with_connack_5_assigned_ones_too() {
    let mut sim = Simulation::new(Config { clientid_prefixes: Some("door-".to_owned()), ..quiet() });
    let door = sim.connect(ClientOptions::new("door-1"));
    assert!(matches!(sim.take_received(door)[0], Packet::ConnAck(a) if a.code == ConnectReturnCode::Accepted));
    for id in ["sensor-1", ""] {
        let refused = sim.connect(ClientOptions::new(id));
        assert!(
            matches!(sim.take_received(refused)[0], Packet::ConnAck(a) if a.code == ConnectReturnCode::NotAuthorized),
            "{id:?}"
        );
        assert_eq!(sim.closed(refused), Some(CloseReason::Refused(ConnectReturnCode::NotAuthorized)));
    }
}

#[test]
fn upgrade_outgoing_qos_delivers_at_the_subscriptions_qos() {
    for (upgrade, expected) in [(false, QoS::AtMostOnce), (true, QoS::ExactlyOnce)] {
        let mut sim = Simulation::new(Config { upgrade_outgoing_qos: upgrade, ..quiet() });
        let sub = sim.connect(ClientOptions::new("sub"));
        sim.subscribe(sub, "t/#", QoS::ExactlyOnce);
        let publisher = sim.connect(ClientOptions::new("pub"));
        sim.take_received(sub);
        sim.publish(publisher, "t/a", b"x", QoS::AtMostOnce, false);
        let got = sim.take_publishes(sub);
        assert_eq!(got.iter().map(|p| p.qos).collect::<Vec<_>>(), vec![expected], "upgrade {upgrade}");
    }
}

#[test]
fn retain_available_false_closes_retained_publishes_and_retained_wills() {
    let mut sim = Simulation::new(Config { retain_available: false, ..quiet() });
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "t/#", QoS::AtMostOnce);
    let publisher = sim.connect(ClientOptions::new("pub"));
    sim.take_received(sub);
    sim.publish(publisher, "t/plain", b"kept", QoS::AtMostOnce, false);
    sim.publish(publisher, "t/retained", b"refused", QoS::AtMostOnce, true);
    assert_eq!(payloads(&mut sim, sub), vec!["kept"]);
    assert_eq!(sim.closed(publisher), Some(CloseReason::RetainNotAvailable));
    let retained_will = LastWill { retain: true, ..will_to("t/will", b"w") };
    let refused = sim.connect(ClientOptions::new("w").will(retained_will));
    assert!(sim.take_received(refused).is_empty());
    assert_eq!(sim.closed(refused), Some(CloseReason::RetainNotAvailable));
    let plain_will = sim.connect(ClientOptions::new("w2").will(will_to("t/will", b"w")));
    assert!(matches!(sim.take_received(plain_will)[0], Packet::ConnAck(a) if a.code == ConnectReturnCode::Accepted));
}

fn listener_rules(rules: culex_core::ListenerRules) -> Config {
    Config { listener_rules: [(culex_core::ListenerId(0), rules)].into(), ..quiet() }
}

#[test]
fn max_qos_lowers_subscriptions_and_closes_publishes_and_wills_above_it() {
    let rules = culex_core::ListenerRules { max_qos: QoS::AtLeastOnce, ..Default::default() };
    let mut sim = Simulation::new(listener_rules(rules));
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "t/#", QoS::ExactlyOnce);
    let suback = sim.take_received(sub);
    assert!(
        matches!(&suback[..], [Packet::ConnAck(_), Packet::SubAck(a)] if a.return_codes == [culex_core::codec::SubscribeReturnCode::Granted(QoS::AtLeastOnce)]),
        "{suback:?}"
    );
    let publisher = sim.connect(ClientOptions::new("pub"));
    sim.publish(publisher, "t/a", b"one", QoS::AtLeastOnce, false);
    sim.publish(publisher, "t/a", b"two", QoS::ExactlyOnce, false);
    assert_eq!(sim.closed(publisher), Some(CloseReason::QosNotSupported));
    assert_eq!(payloads(&mut sim, sub), vec!["one"]);
    let will = LastWill { qos: QoS::ExactlyOnce, ..will_to("t/w", b"w") };
    let refused = sim.connect(ClientOptions::new("w").will(will));
    assert!(sim.take_received(refused).is_empty());
    assert_eq!(sim.closed(refused), Some(CloseReason::QosNotSupported));
}

#[test]
fn use_username_as_clientid_takes_the_user_name_or_refuses() {
    let rules = culex_core::ListenerRules { use_username_as_clientid: true, ..Default::default() };
    let mut sim = Simulation::new(listener_rules(rules));
    let mut options = ClientOptions::new("given");
    options.connect.username = Some("door-7".into());
    let named = sim.connect(options);
    assert!(matches!(sim.take_received(named)[0], Packet::ConnAck(a) if a.code == ConnectReturnCode::Accepted));
    assert!(sim.is_online("door-7") && !sim.is_online("given"));
    let anonymous = sim.connect(ClientOptions::new("given"));
    assert!(
        matches!(sim.take_received(anonymous)[0], Packet::ConnAck(a) if a.code == ConnectReturnCode::NotAuthorized)
    );
}
