//! The contract: a store gives back exactly what applying its batches to
//! a [`StoredState`] gives, however they were grouped into commits and
//! across a reopen.

use culex_core::persistence::{StoreBatch, StoreOp, StoredState};
use culex_core::{Broker, ClientId, Config, Instant, Now, PacketId, QoS, Restorer, TopicFilter, UnixTime};

use super::scenario::Scenario;
use super::sim_disk::SimDisk;
use super::{TempDir, quickcheck};
use crate::persist::{MemStore, RedbStore, Store};

fn commit_all(store: &mut dyn Store, scenario: &Scenario) {
    for group in scenario.commits() {
        store.commit(group).unwrap();
    }
}

/// On a real file: commit in groups, reopen, load.
#[test]
fn persist_contract_redb_file_matches_apply() {
    fn prop(scenario: Scenario) -> bool {
        let dir = TempDir::new("contract");
        let path = dir.path().join("store.db");
        let expected = scenario.state_after(scenario.batches.len());
        {
            let mut store = RedbStore::create(&path).unwrap();
            commit_all(&mut store, &scenario);
            assert_eq!(store.load().unwrap(), expected, "before reopening");
        }
        let mut store = RedbStore::open(&path).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded, expected, "after reopening");
        let mut mem = MemStore::default();
        commit_all(&mut mem, &scenario);
        mem.load().unwrap() == loaded
    }
    quickcheck(60).quickcheck(prop as fn(Scenario) -> bool);
}

/// The same on a simulated disk, many more cases.
#[test]
fn persist_contract_redb_backend_matches_apply() {
    fn prop(scenario: Scenario) -> bool {
        let disk = SimDisk::default();
        {
            let mut store = RedbStore::with_backend(disk.clone()).unwrap();
            commit_all(&mut store, &scenario);
        }
        let mut store = RedbStore::with_backend(SimDisk::with_image(disk.live(), false)).unwrap();
        store.load().unwrap() == scenario.state_after(scenario.batches.len())
    }
    quickcheck(300).quickcheck(prop as fn(Scenario) -> bool);
}

/// A state written whole (as an import does) reads back the same,
/// including the fields only a direct write sets.
#[test]
fn persist_write_state_round_trips() {
    fn prop(scenario: Scenario, last_batch: u64, next: u16) -> bool {
        let mut state = scenario.state_after(scenario.batches.len());
        state.last_batch = last_batch;
        for session in state.sessions.values_mut() {
            session.next_packet_id = PacketId::new(next);
        }
        let mut store = RedbStore::with_backend(SimDisk::default()).unwrap();
        // Replaces what was there.
        store.commit(&scenario.batches).unwrap();
        store.write_state(&state).unwrap();
        store.load().unwrap() == state
    }
    quickcheck(150).quickcheck(prop as fn(Scenario, u64, u16) -> bool);
}

/// A batch committed again (a retry after a commit whose outcome was not
/// known) is not applied twice, in either store.
#[test]
fn persist_committed_batches_are_not_applied_twice() {
    let client = ClientId::new("c");
    let filter = TopicFilter::new("a/#").unwrap();
    // Applied twice, this batch would keep the subscription that its first
    // application ignored (the session did not exist yet).
    let batch = StoreBatch {
        seq: 1,
        ops: vec![
            StoreOp::Subscribe { client: client.clone(), filter: filter.clone(), qos: QoS::AtLeastOnce },
            StoreOp::Session { client: client.clone(), username: None, offline_since: None, epoch: 0 },
        ],
    };
    let mut expected = StoredState::default();
    expected.apply_batch(&batch);
    assert!(expected.sessions[&client].subscriptions.is_empty());
    let stores: [Box<dyn Store>; 2] =
        [Box::new(MemStore::default()), Box::new(RedbStore::with_backend(SimDisk::default()).unwrap())];
    for mut store in stores {
        store.commit(std::slice::from_ref(&batch)).unwrap();
        store.commit(std::slice::from_ref(&batch)).unwrap();
        assert_eq!(store.load().unwrap(), expected, "{store:?}");
    }
}

/// Dropping a session removes its rows and no other session's, even one
/// whose id it is a prefix of.
#[test]
fn persist_drop_session_keeps_other_sessions_rows() {
    let ids = ["", "c", "c\u{0}", "c0", "cc"];
    let filter = TopicFilter::new("#").unwrap();
    let mut ops = Vec::new();
    for id in ids {
        let client = ClientId::new(id);
        ops.push(StoreOp::Session { client: client.clone(), username: None, offline_since: Some(1), epoch: 0 });
        ops.push(StoreOp::Subscribe { client: client.clone(), filter: filter.clone(), qos: QoS::ExactlyOnce });
        ops.push(StoreOp::Incoming { client, packet_id: PacketId::MIN, message: None });
    }
    let drops = ["c", ""].map(|id| StoreOp::DropSession { client: ClientId::new(id) });
    let batches = [StoreBatch { seq: 1, ops }, StoreBatch { seq: 2, ops: drops.to_vec() }];
    let mut expected = StoredState::default();
    batches.iter().for_each(|b| expected.apply_batch(b));
    assert_eq!(expected.sessions.len(), 3);
    let mut store = RedbStore::with_backend(SimDisk::default()).unwrap();
    store.commit(&batches).unwrap();
    assert_eq!(store.load().unwrap(), expected);
}

/// The broker rebuilt from a store streaming its tables (every session,
/// then every subscription, every copy…) holds what it holds when rebuilt
/// from the same contents one session at a time.
#[test]
fn persist_streamed_restore_matches_a_whole_state() {
    fn prop(scenario: Scenario) -> bool {
        let now = Now::new(Instant::ZERO, UnixTime::from_secs_f64(1_700_000_000.0));
        let broker = || Broker::new(Config { persistence: true, ..Config::default() });
        let mut store = RedbStore::with_backend(SimDisk::default()).unwrap();
        commit_all(&mut store, &scenario);
        let mut whole = broker();
        whole.restore(now, store.load().unwrap());
        let mut streamed = Restorer::new(broker(), now);
        store.load_into(&mut streamed).unwrap();
        streamed.finish().stored_image() == whole.stored_image()
    }
    quickcheck(200).quickcheck(prop as fn(Scenario) -> bool);
}
