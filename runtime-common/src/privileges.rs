//! What a broker started as root does once its listeners are bound and
//! its log and store are open: it gives its store's files to the
//! configured `user` and becomes that user, as Mosquitto 2.0 does, and
//! says so. Files read later (a reload's password and ACL files) are then
//! read as that user.

use std::path::PathBuf;

use nix::unistd::{Gid, User, getegid, geteuid, initgroups, setgid, setuid};
use tracing::{info, warn};

/// Why the broker could not become its user; start-up stops.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such user (and no `nobody` to fall back on for the default).
    #[error("Unable to drop privileges to '{0}' because this user does not exist.")]
    NoSuchUser(String),
    /// `initgroups`, `setgid` or `setuid` failed.
    #[error("Error setting {what} whilst dropping privileges: {source}.")]
    Change {
        /// `groups`, `gid` or `uid`.
        what: &'static str,
        /// The cause.
        source: nix::Error,
    },
}

/// Started as root, gives the files of `hand_over` that exist to `user`
/// and becomes it (its supplementary groups, then its group, then its
/// id, for every thread of the process); `root` stays root, with
/// Mosquitto's warning. The default user `mosquitto` missing, `nobody` is
/// tried, as Mosquitto does. Started as another user, nothing changes.
///
/// The files handed over are those the broker created as root for its own
/// use and keeps open (its store): the user may have to open them again.
/// A file that cannot be given is logged, not fatal: the broker keeps
/// using it through the descriptor it holds.
///
/// # Errors
///
/// When the user does not exist or a change is refused.
pub fn drop_to(user: &str, hand_over: &[PathBuf]) -> Result<(), Error> {
    if !geteuid().is_root() {
        return Ok(());
    }
    if user != "root" {
        let found = match lookup(user)? {
            Some(found) => found,
            None if user == "mosquitto" => {
                warn!(
                    "Warning: Unable to drop privileges to '{user}' because this user does not exist. Trying 'nobody' instead."
                );
                lookup("nobody")?.ok_or_else(|| Error::NoSuchUser("nobody".to_owned()))?
            }
            None => return Err(Error::NoSuchUser(user.to_owned())),
        };
        give(hand_over, &found);
        become_user(&found)?;
        info!("Running as user {} (uid {}, gid {}).", found.name, found.uid, found.gid);
    }
    if geteuid().is_root() || getegid() == Gid::from_raw(0) {
        warn!("Warning: Mosquitto should not be run as root/administrator.");
    }
    Ok(())
}

/// Gives each file of `files` that exists to `user`. A symbolic link is
/// given itself, never what it points to: the user owns the directory and
/// could have put one there.
fn give(files: &[PathBuf], user: &User) {
    for path in files {
        match std::os::unix::fs::lchown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("Warning: cannot give {} to user {}: {e}.", path.display(), user.name),
        }
    }
}

fn lookup(name: &str) -> Result<Option<User>, Error> {
    User::from_name(name).map_err(|source| Error::Change { what: "user", source })
}

fn become_user(user: &User) -> Result<(), Error> {
    let name = std::ffi::CString::new(user.name.as_str()).map_err(|_| Error::NoSuchUser(user.name.clone()))?;
    initgroups(&name, user.gid).map_err(|source| Error::Change { what: "groups", source })?;
    setgid(user.gid).map_err(|source| Error::Change { what: "gid", source })?;
    setuid(user.uid).map_err(|source| Error::Change { what: "uid", source })?;
    Ok(())
}
