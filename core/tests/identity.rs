//! `use_identity_as_username`: the TLS certificate's name replaces the
//! CONNECT user name (Mosquitto 2, `handle_connect.c`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytestring::ByteString;
use culex_core::auth::FilePolicy;
use culex_core::auth::acl::AclFile;
use culex_core::auth::password_file::PasswordFile;
use culex_core::codec::{ConnectReturnCode, Packet};
use culex_core::policy::Refusal;
use culex_core::sim::{ClientOptions, DEFAULT_START_UNIX, Simulation};
use culex_core::{Broker, Config, ConnId, Identity, ListenerId, Peer, QoS};

const PASSWORDS: &str = "dev1:$7$101$vwPGlJ7sh3J6tCWZ$Ts6NNQ0BGUvYk5i9+K327JkXVeJ6USTiMxhU1RF2xLM0f5PNQCWJliFuxcWSiJPvZ+tJvxwzjk9qvh1FvXVk3w==\n";
const ACL: &str = "user dev1\ntopic write dev1/#\nuser watcher\ntopic read #\n";

/// A broker with a password file and an ACL, anonymous clients refused,
/// and a count of the password checks it asked for (each refused).
fn broker() -> (Simulation, Arc<AtomicUsize>) {
    let passwords = PasswordFile::parse("passwd", PASSWORDS).expect("valid password file");
    let acl = AclFile::parse("acl", ACL).expect("valid ACL");
    let policy = FilePolicy::new(Some(Arc::new(passwords)), Some(Arc::new(acl)), false);
    let config = Config { sys_interval: Duration::ZERO, ..Config::default() };
    let mut sim = Simulation::with_broker(Broker::with_policy(config, Box::new(policy)), DEFAULT_START_UNIX);
    let checks = Arc::new(AtomicUsize::new(0));
    let counted = checks.clone();
    sim.set_authenticator(Box::new(move |_, _, _| {
        counted.fetch_add(1, Ordering::Relaxed);
        Err(Refusal::BadUserNameOrPassword)
    }));
    (sim, checks)
}

fn certified(name: Option<&str>) -> Peer {
    Peer { remote: None, listener: ListenerId(1), identity: Identity::Certificate(name.map(ByteString::from)) }
}

fn connack(sim: &mut Simulation, conn: ConnId) -> ConnectReturnCode {
    match sim.take_received(conn).first() {
        Some(Packet::ConnAck(ack)) => ack.code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn certificate_name_replaces_connect_credentials_without_a_password_check() {
    let (mut sim, checks) = broker();
    let conn = sim.connect_from(ClientOptions::new("c1").credentials("intruder", b"wrong"), certified(Some("dev1")));
    assert_eq!(connack(&mut sim, conn), ConnectReturnCode::Accepted);
    assert_eq!(checks.load(Ordering::Relaxed), 0, "the password file must not be consulted");
    assert!(sim.is_online("c1"));
}

#[test]
fn certificate_name_without_connect_user_name_is_not_anonymous() {
    let (mut sim, _) = broker();
    let conn = sim.connect_from(ClientOptions::new("c1"), certified(Some("dev1")));
    assert_eq!(connack(&mut sim, conn), ConnectReturnCode::Accepted);
}

#[test]
fn no_certificate_is_refused_with_connack_4() {
    let (mut sim, checks) = broker();
    let conn = sim.connect_from(ClientOptions::new("c1").credentials("dev1", b"secret"), certified(None));
    assert_eq!(connack(&mut sim, conn), ConnectReturnCode::BadUserNameOrPassword);
    assert_eq!(checks.load(Ordering::Relaxed), 0);
    assert!(!sim.is_online("c1"));
}

#[test]
fn acl_applies_to_the_certificate_name() {
    let (mut sim, _) = broker();
    let watcher = sim.connect_from(ClientOptions::new("w"), certified(Some("watcher")));
    assert_eq!(connack(&mut sim, watcher), ConnectReturnCode::Accepted);
    sim.subscribe(watcher, "#", QoS::AtMostOnce);
    let dev = sim.connect_from(ClientOptions::new("c1").credentials("watcher", b"x"), certified(Some("dev1")));
    assert_eq!(connack(&mut sim, dev), ConnectReturnCode::Accepted);
    sim.publish(dev, "dev1/status", b"allowed", QoS::AtMostOnce, false);
    sim.publish(dev, "other/status", b"denied", QoS::AtMostOnce, false);
    let delivered: Vec<_> = sim
        .take_received(watcher)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.topic.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, ["dev1/status"]);
}

#[test]
fn listener_without_identity_still_checks_the_password() {
    let (mut sim, checks) = broker();
    let conn = sim.connect(ClientOptions::new("c1").credentials("dev1", b"guess"));
    assert_eq!(connack(&mut sim, conn), ConnectReturnCode::BadUserNameOrPassword);
    assert_eq!(checks.load(Ordering::Relaxed), 1);
}
