//! The store in Redis against a real `redis-server`: the contract, a
//! Redis that lost the store, and which state a node starts from.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use culex_core::persistence::{StoreBatch, StoreOp, StoredState};
use culex_core::{ClientId, QoS, TopicFilter};

use quickcheck::{Arbitrary, Gen};

use super::scenario::Scenario;
use crate::persist::{MemStore, Mirrored, NullStore, RedisStore, Store};

/// A `redis-server` of the test's own, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Started, and answering (within 10 s).
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/install-deps.sh installs it)");
        let server = Self { child, url: format!("redis://127.0.0.1:{port}/") };
        let started = Instant::now();
        while server.client().get_connection().is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(self.url.as_str()).unwrap()
    }

    fn store(&self, node: &str) -> RedisStore {
        RedisStore::at(&self.url, "t", node)
    }

    fn flushall(&self) {
        let mut conn = self.client().get_connection().unwrap();
        redis::cmd("FLUSHALL").query::<()>(&mut conn).unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What Redis holds for a scenario's state: everything but the wills.
fn without_wills(mut state: StoredState) -> StoredState {
    state.wills.clear();
    state
}

/// Committed in groups and read by another store of the same node, Redis
/// gives back what applying the batches gives, wills aside; a second
/// commit of the same batches changes nothing.
#[test]
fn persist_contract_redis_matches_apply() {
    let server = Server::start();
    let mut g = Gen::new(30);
    for case in 0..150 {
        let scenario = Scenario::arbitrary(&mut g);
        let node = format!("n{case}");
        let mut store = server.store(&node);
        for group in scenario.commits() {
            store.commit(group).unwrap();
        }
        store.commit(&scenario.batches).unwrap();
        let expected = without_wills(scenario.state_after(scenario.batches.len()));
        assert_eq!(server.store(&node).load().unwrap(), expected, "{scenario:?}");
    }
}

/// A Redis that lost the store (restarted empty) between two commits gets
/// it written again whole at the second: a store read from it then holds
/// everything, not only the second commit's rows.
#[test]
fn persist_redis_that_lost_the_store_gets_it_whole_again() {
    let server = Server::start();
    let client = ClientId::new("c");
    let first = StoreBatch {
        seq: 1,
        ops: vec![
            StoreOp::Session { client: client.clone(), username: None, offline_since: Some(5), epoch: 3 },
            StoreOp::Subscribe {
                client: client.clone(),
                filter: TopicFilter::new("a/#").unwrap(),
                qos: QoS::AtLeastOnce,
            },
        ],
    };
    let second = StoreBatch {
        seq: 2,
        ops: vec![StoreOp::Subscribe { client, filter: TopicFilter::new("b").unwrap(), qos: QoS::ExactlyOnce }],
    };
    let mut store = server.store("n");
    store.commit(std::slice::from_ref(&first)).unwrap();
    server.flushall();
    store.commit(std::slice::from_ref(&second)).unwrap();
    let mut expected = StoredState::default();
    expected.apply_batch(&first);
    expected.apply_batch(&second);
    assert_eq!(server.store("n").load().unwrap(), expected);
    assert_eq!(expected.sessions.values().next().unwrap().subscriptions.len(), 2);
}

/// A node without a store of its own starts from Redis; a node whose own
/// store is ahead of Redis (Redis lost it) starts from its own, and Redis
/// gets a copy; a new own store takes what Redis holds.
#[test]
fn persist_a_node_starts_from_the_store_that_has_its_batches() {
    let server = Server::start();
    let scenario = Scenario::generate(&mut Gen::new(30), 12, 10);
    let full = scenario.state_after(scenario.batches.len());
    let mut store = server.store("n");
    store.commit(&scenario.batches).unwrap();

    // Without a file: Redis's.
    let (_, state) = Mirrored::open(Box::new(NullStore::default()), StoredState::default(), server.store("n")).unwrap();
    assert_eq!(state, without_wills(full.clone()));

    // A new file: Redis's, which the file then holds.
    let mut own = MemStore::default();
    let (mirrored, state) = Mirrored::open(Box::new(own.clone()), StoredState::default(), server.store("n")).unwrap();
    assert_eq!(state, without_wills(full.clone()));
    drop(mirrored);
    own.replace(&state).unwrap();
    assert_eq!(own.load().unwrap(), state);

    // Redis lost it: the node's own store, and Redis gets it again.
    server.flushall();
    let own = MemStore::new(full.clone());
    let (_, state) = Mirrored::open(Box::new(own), full.clone(), server.store("n")).unwrap();
    assert_eq!(state, full);
    assert_eq!(server.store("n").load().unwrap(), without_wills(full));
}
