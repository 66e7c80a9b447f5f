//! How many connections and clients the broker takes: `max_connections`
//! per listener, and Mosquitto 2.1's `global_max_connections` and
//! `global_max_clients` across the broker.

use std::collections::BTreeMap;
use std::time::Duration;

use culex_core::codec::{ConnectReturnCode, Packet};
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{CloseReason, Config, ConnId, Identity, ListenerId, Peer};

fn broker(config: Config) -> Simulation {
    Simulation::new(Config { sys_interval: Duration::ZERO, ..config })
}

fn on(listener: u16) -> Peer {
    Peer { remote: None, listener: ListenerId(listener), identity: Identity::Connect }
}

fn connect(sim: &mut Simulation, id: &str, listener: u16) -> ConnId {
    sim.connect_from(ClientOptions::new(id), on(listener))
}

fn accepted(sim: &mut Simulation, conn: ConnId) -> bool {
    sim.take_received(conn).iter().any(|p| matches!(p, Packet::ConnAck(a) if a.code == ConnectReturnCode::Accepted))
}

#[test]
fn max_connections_limits_its_own_listener_only() {
    let limits = BTreeMap::from([(ListenerId(1), 2)]);
    let mut sim = broker(Config { listener_max_connections: limits, ..Config::default() });
    let first = connect(&mut sim, "a", 1);
    let second = connect(&mut sim, "b", 1);
    let third = connect(&mut sim, "c", 1);
    assert!(accepted(&mut sim, first) && accepted(&mut sim, second));
    assert_eq!(sim.closed(third), Some(CloseReason::TooManyConnections));
    // The other listener has no limit.
    for n in 0..5 {
        let conn = connect(&mut sim, &format!("other-{n}"), 0);
        assert!(accepted(&mut sim, conn), "listener 0, client {n}");
    }
    // A connection that ends makes room on its listener.
    sim.disconnect(first);
    let fourth = connect(&mut sim, "d", 1);
    assert!(accepted(&mut sim, fourth));
    assert_eq!(sim.closed(fourth), None);
}

#[test]
fn global_max_connections_counts_every_listener() {
    let mut sim = broker(Config { max_connections: Some(3), ..Config::default() });
    let conns: Vec<ConnId> = (0..3).map(|n| connect(&mut sim, &format!("c{n}"), n % 2)).collect();
    let refused = connect(&mut sim, "late", 1);
    assert_eq!(sim.closed(refused), Some(CloseReason::TooManyConnections));
    sim.drop_connection(conns[0]);
    let room = connect(&mut sim, "later", 1);
    assert!(accepted(&mut sim, room));
}

#[test]
fn global_max_clients_counts_stored_sessions_and_never_refuses_a_known_client() {
    let mut sim = broker(Config { max_clients: Some(2), ..Config::default() });
    // A persistent session stays a client after it goes away.
    let stored = sim.connect(ClientOptions::new("stored").clean_session(false));
    sim.disconnect(stored);
    let live = sim.connect(ClientOptions::new("live"));
    assert!(accepted(&mut sim, live));
    let refused = sim.connect(ClientOptions::new("new"));
    assert_eq!(sim.closed(refused), Some(CloseReason::TooManyClients));
    assert!(sim.take_received(refused).is_empty(), "no CONNACK: 3.1.1 has no code for it");
    assert!(!sim.is_online("new"));
    // Known clients come back: the stored session, and a takeover.
    let back = sim.connect(ClientOptions::new("stored").clean_session(false));
    assert!(accepted(&mut sim, back));
    let again = sim.connect(ClientOptions::new("live"));
    assert!(accepted(&mut sim, again));
    // A clean session ends with its connection and frees its place.
    sim.disconnect(again);
    let now_room = sim.connect(ClientOptions::new("new"));
    assert!(accepted(&mut sim, now_room));
}
