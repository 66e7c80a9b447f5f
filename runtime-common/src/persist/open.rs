//! Opening the store at start: create, open, set a damaged file aside, or
//! migrate Mosquitto's file.
//!
//! Culex only ever puts a complete, synced store at the configured path: a
//! new one (empty or imported) is written under `<file>.culex-new`, synced,
//! then renamed into place and the directory synced. So whatever is found
//! there that redb cannot open, or that Culex cannot read, was damaged
//! outside Culex (or was never a Culex store), and a crash at any step
//! leaves either the old file or the complete new one at the path.
//!
//! **An empty (0-byte) file is treated as damaged**, not as new: Culex's
//! own store is never empty at the path (see above), so an empty file was
//! made by someone else, or is what a file system left of a file after a
//! crash. Moving it aside loses nothing and says so in the log, where
//! redb's `create` would silently initialise it and hide the event.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use culex_core::UnixTime;
use culex_core::conf::PersistenceConf;
use culex_core::persistence::mosquitto_db::{self, ImportError, ImportSummary, Imported};
use culex_core::persistence::{Restore, StoredState};
use tracing::{error, info};

use redb::backends::FileBackend;

use super::wal::{self, DEFAULT_CHECKPOINT_BYTES, OpenLog, WalStore};
use super::{RedbStore, Store, StoreError, panic_text};

/// Suffix of the file a new store is written to before it is renamed into
/// place. Not Mosquitto's `.new`, which it uses for its own saves.
const NEW_SUFFIX: &str = "culex-new";

/// Suffix of the store's write-ahead log ([`WalStore`]), beside it.
const LOG_SUFFIX: &str = "wal";

/// A store ready for use, what it held, and how it came to be.
#[derive(Debug)]
pub struct OpenedStore<R = StoredState> {
    /// The store, for a [`Committer`](super::Committer).
    pub store: Box<dyn Store>,
    /// The sink that took what it held: a [`StoredState`], or the
    /// broker's [`Restorer`](culex_core::Restorer) at start.
    pub restored: R,
    /// What happened on the way.
    pub outcome: Outcome,
}

/// What opening found.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// There was no file: a new, empty store was created.
    Created,
    /// The store was there and was read.
    Opened,
    /// The file could not be read as a store: it was moved to `kept_at`,
    /// and a new, empty store was created.
    Damaged {
        /// Where the damaged file now is.
        kept_at: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A Mosquitto persistence file was imported into a new store; the
    /// original was kept at `kept_at`.
    Imported {
        /// Where Mosquitto's file now is.
        kept_at: PathBuf,
        /// What the import took and left out.
        summary: ImportSummary,
    },
    /// A Mosquitto persistence file could not be imported: it was kept at
    /// `kept_at` and a new, empty store was created.
    ImportFailed {
        /// Where Mosquitto's file now is.
        kept_at: PathBuf,
        /// Why it could not be imported.
        reason: ImportError,
    },
}

/// What [`open`] found at a path.
#[derive(Debug)]
pub enum Opened<R = StoredState> {
    /// A store, as [`open_store`] returns it.
    Store(Box<OpenedStore<R>>),
    /// A Mosquitto persistence file, left in place: import it (as
    /// [`open_store`] does).
    Mosquitto {
        /// Its contents.
        bytes: Vec<u8>,
    },
}

/// Why there is no store to start with: a problem of the surroundings (the
/// directory, permissions, a full disk, another process holding the store),
/// never of the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A file operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// To which file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// redb refused the store for a reason that is not damage.
    #[error("cannot open the store {path}: {source}")]
    Store {
        /// The store.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OpenError {
    let path = path.to_path_buf();
    move |source| OpenError::Io { action, path, source }
}

/// Opens the store configured by `conf` (whether or not
/// [`enabled`](PersistenceConf::enabled) is set: the caller decides), as
/// [`open`] does, and imports a Mosquitto file found there: the imported
/// state is written to a new store, which replaces Mosquitto's file at the
/// configured path; the original is kept beside it as
/// `<file>.mosquitto-<unix time>`. A Mosquitto file that cannot be imported
/// is kept under that name too, and Culex starts empty.
///
/// # Errors
///
/// See [`open`]; also when the imported store cannot be written.
pub fn open_store<R: Restore>(
    conf: &PersistenceConf,
    now: UnixTime,
    fresh: &mut impl FnMut() -> R,
) -> Result<OpenedStore<R>, OpenError> {
    let path = conf.path();
    match open(&path, now, fresh)? {
        Opened::Store(opened) => Ok(*opened),
        Opened::Mosquitto { bytes } => migrate(&path, &bytes, now, fresh),
    }
}

/// Opens the store at `path`:
///
/// - no file: creates an empty store (written aside, synced, renamed into
///   place, directory synced);
/// - a store: opens it, checking every page's checksum, and streams what
///   it holds into a sink made by `fresh`;
/// - a file starting with Mosquitto's magic number: [`Opened::Mosquitto`];
/// - anything else (empty, garbage, truncated, failing checksums, a redb
///   file Culex did not write, values it cannot read; a panic in redb
///   included): moves it to `<file>.corrupt-<unix time>`, syncs the
///   directory, logs both paths at error level and creates an empty store,
///   with a new sink from `fresh` (the first one may hold part of the
///   file).
///
/// # Errors
///
/// Only for problems that are not the file's contents and that moving it
/// aside would not fix: the directory is missing or not writable, another
/// process holds the store, the disk is full.
pub fn open<R: Restore>(path: &Path, now: UnixTime, fresh: &mut impl FnMut() -> R) -> Result<Opened<R>, OpenError> {
    let head = match read_head(path) {
        Ok(head) => head,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let (store, restored) = create_fresh(path, now, fresh)?;
            info!("Created the store {}.", path.display());
            return Ok(Opened::Store(Box::new(OpenedStore {
                store: Box::new(store),
                restored,
                outcome: Outcome::Created,
            })));
        }
        Err(e) => return Err(io_error("read", path)(e)),
    };
    if mosquitto_db::is_mosquitto_db(&head) {
        let bytes = fs::read(path).map_err(io_error("read", path))?;
        return Ok(Opened::Mosquitto { bytes });
    }
    let reason = if head.is_empty() {
        "the file is empty (Culex never leaves an empty store)".to_owned()
    } else {
        match open_existing(path, now, fresh)? {
            Ok((store, restored)) => {
                // A new store that a crash kept from being renamed into
                // place: never used, and the next creation would remove it.
                let _ = fs::remove_file(sibling(path, NEW_SUFFIX));
                return Ok(Opened::Store(Box::new(OpenedStore {
                    store: Box::new(store),
                    restored,
                    outcome: Outcome::Opened,
                })));
            }
            Err(e) if !is_damage(&e) => return Err(OpenError::Store { path: path.to_path_buf(), source: e }),
            Err(e) => e.to_string(),
        }
    };
    let kept_at = set_aside(path, "corrupt", now)?;
    error!(
        "The store {} is damaged ({reason}): moved it to {} and started with an empty store.",
        path.display(),
        kept_at.display()
    );
    discard_log(path, "corrupt", now)?;
    let (store, restored) = create_fresh(path, now, fresh)?;
    Ok(Opened::Store(Box::new(OpenedStore {
        store: Box::new(store),
        restored,
        outcome: Outcome::Damaged { kept_at, reason },
    })))
}

/// Reads a Mosquitto persistence file; the one place that calls the
/// importer.
///
/// # Errors
///
/// As [`mosquitto_db::import`].
pub fn import_mosquitto(bytes: &[u8], now: UnixTime) -> Result<Imported, ImportError> {
    mosquitto_db::import(bytes, now)
}

/// The first bytes of the file, enough to tell Mosquitto's magic number.
fn read_head(path: &Path) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(mosquitto_db::MAGIC.len());
    File::open(path)?.take(mosquitto_db::MAGIC.len() as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Opens the store at `path` with its write-ahead log and streams what
/// they hold into a sink made by `fresh`. The outer error is a problem
/// with the log's file ([`with_log`]); the inner one the store's, a panic
/// in redb included.
fn open_existing<R: Restore>(
    path: &Path,
    now: UnixTime,
    fresh: &mut impl FnMut() -> R,
) -> Result<Result<(WalStore, R), StoreError>, OpenError> {
    let opened = panic::catch_unwind(AssertUnwindSafe(|| RedbStore::open(path)))
        .unwrap_or_else(|payload| Err(StoreError::Panic(panic_text(&*payload))));
    let store = match opened {
        Ok(store) => store,
        Err(e) => return Ok(Err(e)),
    };
    let mut store = with_log(path, store, now)?;
    let mut restored = fresh();
    Ok(store.load_into(&mut restored).map(|()| (store, restored)))
}

/// Whether an error opening a store says its file is damaged, rather than
/// that something around it is wrong (then moving it aside would lose a
/// good store).
fn is_damage(error: &StoreError) -> bool {
    use io::ErrorKind as K;
    let StoreError::Redb(error) = error else { return true };
    match error {
        redb::Error::DatabaseAlreadyOpen
        | redb::Error::LockProtocolMismatch
        | redb::Error::LockPoisoned(_)
        | redb::Error::Unsupported
        | redb::Error::WouldBlock => false,
        redb::Error::Io(e) => !matches!(
            e.kind(),
            K::NotFound
                | K::PermissionDenied
                | K::ReadOnlyFilesystem
                | K::StorageFull
                | K::QuotaExceeded
                | K::OutOfMemory
                | K::ResourceBusy
                | K::WouldBlock
                | K::Interrupted
                | K::IsADirectory
        ),
        _ => true,
    }
}

/// Makes an empty store at `path` (see the module's notes).
fn create_fresh<R: Restore>(
    path: &Path,
    now: UnixTime,
    fresh: &mut impl FnMut() -> R,
) -> Result<(WalStore, R), OpenError> {
    let new = write_new(path, &StoredState::default())?;
    install(&new, path, now, fresh)
}

/// Writes `state` as a new store under the temporary name and makes it
/// durable there; returns that name.
fn write_new(path: &Path, state: &StoredState) -> Result<PathBuf, OpenError> {
    let new = sibling(path, NEW_SUFFIX);
    // A leftover of a start that crashed half-way: never trusted.
    match fs::remove_file(&new) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error("remove", &new)(e)),
        _ => {}
    }
    let store_error = |source| OpenError::Store { path: new.clone(), source };
    let mut store = RedbStore::create(&new).map_err(store_error)?;
    if !state.is_empty() || state.last_batch != 0 {
        store.write_state(state).map_err(store_error)?;
    }
    drop(store);
    Ok(new)
}

/// Renames the new store into place, syncs the directory and opens it.
/// A write-ahead log found beside it belonged to a store no longer there:
/// it is set aside first, so that a crash at any step never replays it
/// into the new store.
fn install<R: Restore>(
    new: &Path,
    path: &Path,
    now: UnixTime,
    fresh: &mut impl FnMut() -> R,
) -> Result<(WalStore, R), OpenError> {
    discard_log(path, "stale", now)?;
    fs::rename(new, path).map_err(io_error("rename a new store to", path))?;
    sync_dir(path)?;
    open_existing(path, now, fresh)?.map_err(|source| OpenError::Store { path: path.to_path_buf(), source })
}

/// Takes the write-ahead log of a store that is no longer at `path` out
/// of the way: removed if it holds no record, else kept as
/// `<log>.<tag>-<unix time>`.
fn discard_log(path: &Path, tag: &str, now: UnixTime) -> Result<(), OpenError> {
    let log = sibling(path, LOG_SUFFIX);
    if !log.exists() {
        return Ok(());
    }
    if !wal::has_records(&log) {
        return fs::remove_file(&log).map_err(io_error("remove", &log));
    }
    let kept_at = set_aside(&log, tag, now)?;
    error!("The write-ahead log {} of the store that was there is kept as {}.", log.display(), kept_at.display());
    Ok(())
}

/// Puts the write-ahead log beside `path` in front of `store`, creating it
/// if missing. A log that is not one, or that this Culex cannot read, is
/// set aside, and a new one started: the store then holds everything up to
/// its last checkpoint.
fn with_log(path: &Path, store: RedbStore, now: UnixTime) -> Result<WalStore, OpenError> {
    let log = sibling(path, LOG_SUFFIX);
    let open_log = || {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&log);
        file.map(FileBackend::new).map_err(io_error("open", &log))
    };
    let opened = match OpenLog::open(Box::new(open_log()?)) {
        Err(e @ StoreError::Decode { .. }) => {
            let kept_at = set_aside(&log, "corrupt", now)?;
            error!(
                "The write-ahead log {} cannot be read ({e}): moved it to {} and started a new one.",
                log.display(),
                kept_at.display()
            );
            OpenLog::open(Box::new(open_log()?))
        }
        opened => opened,
    };
    let opened = opened.map_err(|source| OpenError::Store { path: log.clone(), source })?;
    Ok(WalStore::new(Box::new(store), opened, DEFAULT_CHECKPOINT_BYTES))
}

/// Imports Mosquitto's file at `path` (see [`open_store`]).
fn migrate<R: Restore>(
    path: &Path,
    bytes: &[u8],
    now: UnixTime,
    fresh: &mut impl FnMut() -> R,
) -> Result<OpenedStore<R>, OpenError> {
    let imported = match import_mosquitto(bytes, now) {
        Ok(imported) => imported,
        Err(reason) => {
            let kept_at = set_aside(path, "mosquitto", now)?;
            error!(
                "Cannot import the Mosquitto persistence file {} ({reason}): kept it as {} and started with an \
                 empty store.",
                path.display(),
                kept_at.display()
            );
            let (store, restored) = create_fresh(path, now, fresh)?;
            return Ok(OpenedStore {
                store: Box::new(store),
                restored,
                outcome: Outcome::ImportFailed { kept_at, reason },
            });
        }
    };
    let new = write_new(path, &imported.state)?;
    // The original stays at the path until the new store replaces it in
    // one rename: a crash before that imports it again at the next start.
    let kept_at = keep_copy(path, "mosquitto", now)?;
    let (store, restored) = install(&new, path, now, fresh)?;
    info!(
        "Imported the Mosquitto persistence file {} into a Culex store at the same path (the original is kept as \
         {}): {}.",
        path.display(),
        kept_at.display(),
        imported.summary
    );
    Ok(OpenedStore {
        store: Box::new(store),
        restored,
        outcome: Outcome::Imported { kept_at, summary: imported.summary },
    })
}

/// The files of the store at `path` while it runs: the store and its
/// write-ahead log.
pub fn files(path: &Path) -> [PathBuf; 2] {
    [path.to_path_buf(), sibling(path, LOG_SUFFIX)]
}

/// `<file>.<suffix>` beside `path`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// `<file>.<tag>-<unix time>` beside `path`, with `-2`, `-3`… added if
/// that is taken.
fn aside_name(path: &Path, tag: &str, now: UnixTime) -> Result<PathBuf, OpenError> {
    // Saturates: a clock before 1970 gives 0.
    let secs = now.as_secs_f64() as u64;
    let base = format!("{tag}-{secs}");
    for n in 1..=1000u32 {
        let candidate = if n == 1 { sibling(path, &base) } else { sibling(path, &format!("{base}-{n}")) };
        match fs::symlink_metadata(&candidate) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(candidate),
            Err(e) => return Err(io_error("look at", &candidate)(e)),
            Ok(_) => {}
        }
    }
    Err(OpenError::Io {
        action: "find a free name beside",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::AlreadyExists, "a thousand names taken"),
    })
}

/// Moves `path` to `<file>.<tag>-<unix time>` and syncs the directory.
fn set_aside(path: &Path, tag: &str, now: UnixTime) -> Result<PathBuf, OpenError> {
    let aside = aside_name(path, tag, now)?;
    fs::rename(path, &aside).map_err(io_error("move aside", path))?;
    sync_dir(path)?;
    Ok(aside)
}

/// Keeps `path` also as `<file>.<tag>-<unix time>` (a hard link, or a
/// synced copy where links are not possible), leaving it in place; syncs
/// the directory.
fn keep_copy(path: &Path, tag: &str, now: UnixTime) -> Result<PathBuf, OpenError> {
    let kept = aside_name(path, tag, now)?;
    if fs::hard_link(path, &kept).is_err() {
        fs::copy(path, &kept).map_err(io_error("copy", path))?;
        File::open(&kept).and_then(|f| f.sync_all()).map_err(io_error("sync", &kept))?;
    }
    sync_dir(path)?;
    Ok(kept)
}

/// Syncs the directory holding `path`, so that a creation or a rename in
/// it survives a power loss (redb syncs only the file).
fn sync_dir(path: &Path) -> Result<(), OpenError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("sync the directory", dir))
}
