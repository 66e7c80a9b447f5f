//! Tests of the store: the contract against [`StoredState::apply`], power
//! loss and I/O errors on a simulated disk, damaged files at rest, the
//! Mosquitto migration and the committer.
//!
//! Every loop is bounded: quickcheck counts are set here, not taken from
//! `QUICKCHECK_TESTS`, so CI time does not depend on it. More cases run
//! with `--ignored`.
//!
//! [`StoredState::apply`]: culex_core::persistence::StoredState::apply

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod codec;
mod committer;
mod contract;
mod crash;
mod damaged;
mod migrate;
mod redis;
mod scenario;
mod sim_disk;
mod wal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use culex_core::UnixTime;

/// A directory removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("culex-persist-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// The names in it, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fixed moment for file names: 2026-01-01.
pub(crate) const NOW: f64 = 1_767_225_600.0;

pub(crate) fn now() -> UnixTime {
    UnixTime::from_secs_f64(NOW)
}

/// A quickcheck runner with a fixed number of cases.
pub(crate) fn quickcheck(tests: u64) -> quickcheck::QuickCheck {
    quickcheck::QuickCheck::new().tests(tests).max_tests(tests * 10).rng(quickcheck::Gen::new(30))
}
