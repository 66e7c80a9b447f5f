//! Telling the service manager how the broker stands: systemd's
//! `sd_notify(3)` protocol, spoken without libsystemd.
//!
//! Started with `NOTIFY_SOCKET` in its environment (a unit with
//! `Type=notify`), the broker sends one datagram to that socket per change
//! of state:
//!
//! - `READY=1` when it accepts connections: listeners bound, store
//!   restored, privileges dropped (the broker task's first turn,
//!   [`driver::run`](crate::driver::run));
//! - `RELOADING=1` with `MONOTONIC_USEC` when a SIGHUP reload starts
//!   ([`ReloadSource::load`](crate::ReloadSource::load)), then `READY=1`
//!   once the new settings are in force, or the reload has failed and the
//!   old ones stay;
//! - `STOPPING=1` when a shutdown starts;
//! - `STATUS=` lines for `systemctl status`: the store being opened, how
//!   many connections are open (at most every [`CENSUS_EVERY`], and only
//!   when the number changed), how a reload went.
//!
//! Without `NOTIFY_SOCKET` nothing is sent. A failed send is logged once,
//! never stops the broker: the service manager then sees only the process.
//! Like libsystemd, every message is sent to the socket's address afresh,
//! so a service manager that re-executed itself is found again; unlike
//! it, a send waits at most [`SEND_TIMEOUT`] for room in its queue.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

/// The environment variable that names the socket.
pub const ENV: &str = "NOTIFY_SOCKET";

/// How long a send may wait for room in the service manager's queue.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// The least time between two `STATUS=` lines with the number of
/// connections.
pub const CENSUS_EVERY: Duration = Duration::from_secs(10);

/// The process's notifier, when `NOTIFY_SOCKET` named one at start.
static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

/// Reads `NOTIFY_SOCKET` and, when it names a socket, sends every later
/// notification there. Call it once logging is up: a value that names no
/// usable socket is logged.
pub fn init() {
    let Some(target) = std::env::var_os(ENV) else { return };
    let notifier =
        target.to_str().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not UTF-8")).and_then(Notifier::new);
    match notifier {
        Ok(notifier) => {
            let _ = NOTIFIER.set(notifier);
        }
        Err(error) => warn!(
            "Warning: {ENV}={}: {error}; the service manager is not told of the broker's state.",
            target.to_string_lossy()
        ),
    }
}

/// `READY=1`: the broker accepts connections (at start, or after a reload).
pub fn ready(status: &str) {
    send(&message(&["READY=1"], status));
}

/// `RELOADING=1` with the time it started: a reload has begun.
pub fn reloading(status: &str) {
    send(&message(&["RELOADING=1", &format!("MONOTONIC_USEC={}", monotonic_usec())], status));
}

/// `STOPPING=1`: the broker is shutting down.
pub fn stopping(status: &str) {
    send(&message(&["STOPPING=1"], status));
}

/// A `STATUS=` line alone.
pub fn status(status: &str) {
    send(&message(&[], status));
}

/// Whether notifications go anywhere (to skip building them otherwise).
pub fn enabled() -> bool {
    NOTIFIER.get().is_some()
}

fn send(message: &str) {
    if let Some(notifier) = NOTIFIER.get() {
        notifier.notify(message);
    }
}

/// The datagram: one `KEY=VALUE` line per field, `STATUS` last, on one
/// line (a newline in it would start another field).
fn message(fields: &[&str], status: &str) -> String {
    let mut out = fields.join("\n");
    if !status.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("STATUS=");
        out.extend(status.chars().map(|c| if c == '\n' { ' ' } else { c }));
    }
    out
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd stamps reloads with.
fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).unwrap_or_default();
    let micros = u64::try_from(now.tv_nsec / 1000).unwrap_or_default();
    secs.saturating_mul(1_000_000).saturating_add(micros)
}

/// Sends datagrams to one service manager socket.
#[derive(Debug)]
pub struct Notifier {
    /// The socket as `NOTIFY_SOCKET` spells it, for the log.
    target: String,
    addr: SocketAddr,
    socket: UnixDatagram,
    /// A failure was logged: the next ones are not.
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier for `target`, spelled as in `NOTIFY_SOCKET`: an absolute
    /// path, or `@` and the name of a socket in the abstract namespace.
    ///
    /// # Errors
    ///
    /// When `target` is neither, or no socket can be made.
    pub fn new(target: &str) -> io::Result<Self> {
        let addr = match target.strip_prefix('@') {
            Some(name) => abstract_name(name)?,
            None if target.starts_with('/') => SocketAddr::from_pathname(target)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an abstract socket name (@name)",
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Self { target: target.to_owned(), addr, socket, warned: AtomicBool::new(false) })
    }

    /// Sends `message`; the first failure is logged, later ones are not.
    pub fn notify(&self, message: &str) {
        if let Err(error) = self.send(message)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            warn!(
                "Warning: cannot notify the service manager through {}: {error}; further failures are not logged.",
                self.target
            );
        }
    }

    /// Sends `message` as one datagram.
    ///
    /// # Errors
    ///
    /// When the socket is gone, refuses the sender or stays full for
    /// [`SEND_TIMEOUT`].
    pub fn send(&self, message: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(message.as_bytes(), &self.addr)?;
        if sent < message.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "datagram cut short"));
        }
        Ok(())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_name(name: &str) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    SocketAddr::from_abstract_name(name.as_bytes())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_name(_: &str) -> io::Result<SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract socket names exist only on Linux"))
}

/// `STATUS=` lines with the number of open connections, for
/// `systemctl status`: at most every [`CENSUS_EVERY`], only when it
/// changed.
#[derive(Debug, Default)]
pub struct Census {
    shown: Option<(Instant, usize)>,
}

impl Census {
    /// Sends `READY=1` with the number of connections open, and counts
    /// from there.
    pub fn ready(open: usize) -> Self {
        let text = open_connections(open);
        ready(&text);
        Self { shown: Some((Instant::now(), open)) }
    }

    /// Says how many connections are open, if it is time and the number
    /// changed since it was last said.
    pub fn update(&mut self, open: usize) {
        if !enabled() {
            return;
        }
        let now = Instant::now();
        if let Some(text) = self.due(now, open) {
            status(&text);
        }
    }

    /// The line to send now, if any; remembers it as sent.
    fn due(&mut self, now: Instant, open: usize) -> Option<String> {
        match self.shown {
            Some((_, shown)) if shown == open => return None,
            Some((at, _)) if now.duration_since(at) < CENSUS_EVERY => return None,
            _ => {}
        }
        self.shown = Some((now, open));
        Some(open_connections(open))
    }
}

/// "Accepting connections: N open." (clients, bridges and sockets yet to
/// send CONNECT alike).
pub fn open_connections(open: usize) -> String {
    format!("Accepting connections: {open} open.")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1024];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("culex-notify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn messages_reach_a_socket_at_a_path() {
        let dir = tempdir("path");
        let path = dir.join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.to_str().unwrap()).unwrap();
        notifier.notify(&message(&["READY=1"], "Accepting connections."));
        assert_eq!(receive(&manager), "READY=1\nSTATUS=Accepting connections.");
        notifier.notify(&message(&["STOPPING=1"], ""));
        assert_eq!(receive(&manager), "STOPPING=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("culex-notify-test-{}", std::process::id());
        let manager = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let notifier = Notifier::new(&format!("@{name}")).unwrap();
        notifier.notify(&message(&[], "Opening the store."));
        assert_eq!(receive(&manager), "STATUS=Opening the store.");
    }

    #[test]
    fn a_reload_carries_the_monotonic_time_it_started() {
        let before = monotonic_usec();
        let sent = message(&["RELOADING=1", &format!("MONOTONIC_USEC={}", monotonic_usec())], "Reloading.");
        let after = monotonic_usec();
        let lines: Vec<&str> = sent.lines().collect();
        assert_eq!(lines[0], "RELOADING=1");
        let usec: u64 = lines[1].strip_prefix("MONOTONIC_USEC=").unwrap().parse().unwrap();
        assert!(before <= usec && usec <= after, "{before} <= {usec} <= {after}");
        assert_eq!(lines[2], "STATUS=Reloading.");
    }

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(message(&["READY=1"], "one\ntwo"), "READY=1\nSTATUS=one two");
    }

    #[test]
    fn relative_paths_are_refused() {
        assert!(Notifier::new("run/notify").is_err());
        assert!(Notifier::new("").is_err());
    }

    #[test]
    fn failures_are_logged_once_and_never_stop_the_sender() {
        let dir = tempdir("gone");
        let path = dir.join("notify");
        let notifier = Notifier::new(path.to_str().unwrap()).unwrap();
        assert!(notifier.send("READY=1").is_err(), "no socket there");
        notifier.notify("READY=1");
        assert!(notifier.warned.load(Ordering::Relaxed));
        notifier.notify("STOPPING=1");
        // The manager comes (back): messages flow again.
        let manager = UnixDatagram::bind(&path).unwrap();
        notifier.notify("READY=1");
        assert_eq!(receive(&manager), "READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_census_speaks_when_the_number_changed_and_not_too_often() {
        let mut census = Census::default();
        let t0 = Instant::now();
        assert_eq!(census.due(t0, 0).as_deref(), Some("Accepting connections: 0 open."));
        assert_eq!(census.due(t0 + Duration::from_secs(1), 1), None, "too soon");
        assert_eq!(census.due(t0 + CENSUS_EVERY, 0), None, "unchanged");
        let later = t0 + CENSUS_EVERY + Duration::from_secs(1);
        assert_eq!(census.due(later, 1).as_deref(), Some("Accepting connections: 1 open."));
        assert_eq!(census.due(later + CENSUS_EVERY * 5, 1), None, "unchanged");
    }
}
