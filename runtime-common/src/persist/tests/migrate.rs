//! A Mosquitto `mosquitto.db` at the configured path becomes a Culex
//! store at the same path; the original is kept beside it.

use std::fs;
use std::path::PathBuf;

use culex_core::conf::PersistenceConf;
use culex_core::persistence::mosquitto_db::ImportError;
use culex_core::persistence::{StoreBatch, StoreOp, StoredState};
use culex_core::{ClientId, QoS, TopicFilter};

use super::{NOW, TempDir, now};
use crate::persist::{Opened, Outcome, import_mosquitto, open, open_store};

const FIXTURES: [&str; 3] = ["retained.db", "sessions.db", "inflight.db"];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../core/tests/data/mosquitto-db/{name}", env!("CARGO_MANIFEST_DIR"));
    fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn conf(dir: &TempDir) -> PersistenceConf {
    PersistenceConf {
        enabled: true,
        location: Some(dir.path().to_string_lossy().into_owned()),
        ..PersistenceConf::default()
    }
}

fn kept_name(suffix: &str) -> String {
    format!("mosquitto.db.mosquitto-{}{suffix}", NOW as u64)
}

#[test]
fn persist_mosquitto_file_is_imported_in_place() {
    for name in FIXTURES {
        let dir = TempDir::new("migrate");
        let bytes = fixture(name);
        let conf = conf(&dir);
        let path = conf.path();
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(open(&path, now(), &mut StoredState::default).unwrap(), Opened::Mosquitto { .. }), "{name}");

        let mut opened = open_store(&conf, now(), &mut StoredState::default).unwrap();
        let imported = import_mosquitto(&bytes, now()).unwrap();
        let kept = dir.path().join(kept_name(""));
        assert_eq!(opened.outcome, Outcome::Imported { kept_at: kept.clone(), summary: imported.summary }, "{name}");
        assert!(!imported.state.is_empty(), "{name}");
        assert_eq!(opened.restored, imported.state, "{name}");
        assert_eq!(fs::read(&kept).unwrap(), bytes, "{name}: the original is kept as it was");
        assert_eq!(
            dir.names(),
            ["mosquitto.db".to_owned(), kept_name(""), "mosquitto.db.wal".to_owned()],
            "{name}: nothing else left"
        );

        // The store at the path takes commits and opens as a store.
        let client = ClientId::new("new-client");
        let batch = StoreBatch {
            seq: 1,
            ops: vec![
                StoreOp::Session { client: client.clone(), username: None, offline_since: None, epoch: 0 },
                StoreOp::Subscribe { client, filter: TopicFilter::new("x").unwrap(), qos: QoS::AtLeastOnce },
            ],
        };
        opened.store.commit(std::slice::from_ref(&batch)).unwrap();
        let mut expected = imported.state.clone();
        expected.apply_batch(&batch);
        drop(opened);
        let reopened = open_store(&conf, now(), &mut StoredState::default).unwrap();
        assert_eq!(reopened.outcome, Outcome::Opened, "{name}");
        assert_eq!(reopened.restored, expected, "{name}");
    }
}

/// What a crash half-way through an earlier migration leaves (a new
/// store not yet renamed into place, the original already linked aside)
/// does not stop the next one.
#[test]
fn persist_migration_resumes_after_a_crash() {
    let dir = TempDir::new("resume");
    let bytes = fixture("sessions.db");
    let conf = conf(&dir);
    let path = conf.path();
    fs::write(&path, &bytes).unwrap();
    fs::write(dir.path().join("mosquitto.db.culex-new"), b"half a store").unwrap();
    fs::write(dir.path().join(kept_name("")), &bytes).unwrap();
    let opened = open_store(&conf, now(), &mut StoredState::default).unwrap();
    let kept_at = dir.path().join(kept_name("-2"));
    assert!(matches!(&opened.outcome, Outcome::Imported { kept_at: k, .. } if *k == kept_at), "{:?}", opened.outcome);
    assert_eq!(opened.restored, import_mosquitto(&bytes, now()).unwrap().state);
    assert_eq!(dir.names(), ["mosquitto.db".to_owned(), kept_name(""), kept_name("-2"), "mosquitto.db.wal".to_owned()]);
}

fn assert_import_fails(bytes: &[u8], expect: impl Fn(&ImportError) -> bool) {
    let dir = TempDir::new("unreadable");
    let conf = conf(&dir);
    fs::write(conf.path(), bytes).unwrap();
    let opened = open_store(&conf, now(), &mut StoredState::default).unwrap();
    let kept: PathBuf = dir.path().join(kept_name(""));
    match &opened.outcome {
        Outcome::ImportFailed { kept_at, reason } => {
            assert_eq!(kept_at, &kept);
            assert!(expect(reason), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(opened.restored.is_empty());
    assert_eq!(fs::read(&kept).unwrap(), bytes);
    assert_eq!(dir.names(), ["mosquitto.db".to_owned(), kept_name(""), "mosquitto.db.wal".to_owned()]);
}

#[test]
fn persist_unreadable_mosquitto_file_is_kept_and_culex_starts_empty() {
    let bytes = fixture("sessions.db");
    assert_import_fails(&bytes[..100], |e| matches!(e, ImportError::Truncated { .. }));
    let mut old = culex_core::persistence::mosquitto_db::MAGIC.to_vec();
    old.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
    assert_import_fails(&old, |e| matches!(e, ImportError::TooOld { version: 3 }));
}
