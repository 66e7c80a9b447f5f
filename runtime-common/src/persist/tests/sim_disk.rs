//! A disk for redb that records every write, `set_len` and sync, so that
//! the image a power loss would leave at any point can be rebuilt, and
//! that fails on command.
//!
//! The model is SQLite's crash VFS: what was synced stays; each write or
//! `set_len` since the last sync independently survives whole, is lost,
//! or is torn, with only some of its 512-byte or 4-KiB sectors written
//! (redb's assumptions: a sync is durable, and a write never damages
//! bytes it was not given).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use quickcheck::{Arbitrary, Gen};
use redb::{BackendError, StorageBackend};

/// One mutating call, in the order redb made it.
#[derive(Debug, Clone)]
pub(crate) enum DiskOp {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
    Sync,
}

#[derive(Debug, Default)]
struct Disk {
    live: Vec<u8>,
    /// Every mutating call, when recording.
    log: Option<Vec<DiskOp>>,
    /// Mutating calls made so far.
    ops: u64,
    /// Mutating calls from this one on fail (an I/O error injected by
    /// countdown).
    fail_from: Option<u64>,
}

/// A shared handle: redb owns one clone, the test keeps another.
#[derive(Debug, Clone, Default)]
pub(crate) struct SimDisk(Arc<Mutex<Disk>>);

impl SimDisk {
    /// A disk holding `image`, as found after a restart.
    pub(crate) fn with_image(image: Vec<u8>, record: bool) -> Self {
        let disk = Self::default();
        {
            let mut d = disk.lock();
            d.live = image;
            d.log = record.then(Vec::new);
        }
        disk
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Mutating calls made so far.
    pub(crate) fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Makes the `n`-th mutating call from now (1 = the next) and every
    /// later one fail; `None` heals the disk.
    pub(crate) fn fail_after(&self, n: Option<u64>) {
        let mut d = self.lock();
        d.fail_from = n.map(|n| d.ops + n);
    }

    /// What reads see now (the page cache).
    pub(crate) fn live(&self) -> Vec<u8> {
        self.lock().live.clone()
    }

    /// The recorded calls.
    pub(crate) fn log(&self) -> Vec<DiskOp> {
        self.lock().log.clone().unwrap_or_default()
    }

    /// Counts a mutating call, failing it if the countdown says so.
    fn mutate(&self, op: impl FnOnce() -> DiskOp) -> Result<MutexGuard<'_, Disk>, BackendError> {
        let mut d = self.lock();
        d.ops += 1;
        if d.fail_from.is_some_and(|from| d.ops >= from) {
            return Err(BackendError::Io(io::Error::other("injected I/O error")));
        }
        if let Some(log) = &mut d.log {
            log.push(op());
        }
        Ok(d)
    }
}

impl StorageBackend for SimDisk {
    fn len(&self) -> Result<u64, BackendError> {
        Ok(self.lock().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendError> {
        let d = self.lock();
        let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let bytes =
            d.live.get(start..start + out.len()).ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), BackendError> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.mutate(|| DiskOp::SetLen(len))?.live.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendError> {
        drop(self.mutate(|| DiskOp::Sync)?);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let offset = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut d = self.mutate(|| DiskOp::Write { offset, data: data.to_vec() })?;
        write_at(&mut d.live, offset, data);
        Ok(())
    }
}

fn write_at(image: &mut Vec<u8>, offset: usize, data: &[u8]) {
    if image.len() < offset + data.len() {
        image.resize(offset + data.len(), 0);
    }
    image[offset..offset + data.len()].copy_from_slice(data);
}

/// How the calls since the last sync fare in a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// All of them are lost (nothing left the page cache).
    AllLost,
    /// All of them reached the disk (the crash came just before the sync
    /// returned).
    AllKept,
    /// Each is kept, lost or torn at random.
    Random,
}

/// Rebuilds images after a crash from a log, incrementally: the synced
/// image is kept as the log is walked.
#[derive(Debug)]
pub(crate) struct Crasher<'a> {
    log: &'a [DiskOp],
    synced: Vec<u8>,
    /// Index in `log` of the first call after the last sync.
    since_sync: usize,
    /// How many calls of `log` have been walked.
    at: usize,
}

impl<'a> Crasher<'a> {
    /// Starts on a disk whose synced image is `base`.
    pub(crate) fn new(log: &'a [DiskOp], base: Vec<u8>) -> Self {
        Self { log, synced: base, since_sync: 0, at: 0 }
    }

    /// Walks to the point where `n` calls of the log had been made.
    pub(crate) fn advance_to(&mut self, n: usize) {
        while self.at < n.min(self.log.len()) {
            if matches!(self.log[self.at], DiskOp::Sync) {
                for op in &self.log[self.since_sync..self.at] {
                    apply(&mut self.synced, op);
                }
                self.since_sync = self.at + 1;
            }
            self.at += 1;
        }
    }

    /// The image a power loss at this point leaves.
    pub(crate) fn image(&self, fate: Fate, g: &mut Gen) -> Vec<u8> {
        let mut image = self.synced.clone();
        for op in &self.log[self.since_sync..self.at] {
            match fate {
                Fate::AllLost => {}
                Fate::AllKept => apply(&mut image, op),
                Fate::Random => match (op, u8::arbitrary(g) % 10) {
                    (_, 0..=4) => apply(&mut image, op),
                    (_, 5..=7) => {}
                    (DiskOp::Write { offset, data }, _) => {
                        let sector = if bool::arbitrary(g) { 512 } else { 4096 };
                        tear(&mut image, *offset, data, sector, g);
                    }
                    (_, _) => apply(&mut image, op),
                },
            }
        }
        image
    }
}

/// A write of which only some sectors reached the disk. Sectors are
/// aligned to the device, not to the write.
fn tear(image: &mut Vec<u8>, offset: usize, data: &[u8], sector: usize, g: &mut Gen) {
    let end = offset + data.len();
    let mut start = offset;
    while start < end {
        let boundary = (start / sector + 1) * sector;
        let stop = boundary.min(end);
        if bool::arbitrary(g) {
            write_at(image, start, &data[start - offset..stop - offset]);
        }
        start = stop;
    }
}

fn apply(image: &mut Vec<u8>, op: &DiskOp) {
    match op {
        DiskOp::Write { offset, data } => write_at(image, *offset, data),
        DiskOp::SetLen(len) => image.resize(*len, 0),
        DiskOp::Sync => {}
    }
}
