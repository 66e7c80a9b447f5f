//! `log_dest syslog`: each line as one datagram to the local syslog
//! socket, in the RFC 3164 shape glibc's syslog(3) writes:
//! `<PRI>Mmm dd hh:mm:ss culex[PID]: line`.
//!
//! PRI is the facility (`daemon`, or `local0` to `local7` with
//! `log_facility`) times 8 plus the severity of the line. The ident is
//! `culex` (Mosquitto's is `mosquitto`). The line is the one the other
//! destinations get, timestamp included, as Mosquitto sends it.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Mutex;

use culex_core::conf::TimestampFormat;
use tracing::Level;

use super::local_time::{self, LocalZone};

/// The syslog socket of Linux and the BSDs.
const DEV_LOG: &str = "/dev/log";

/// Where tests put a socket of their own instead of [`DEV_LOG`].
pub(crate) const TEST_SOCKET_ENV: &str = "CULEX_TEST_SYSLOG_SOCKET";

/// The program name in each line.
const IDENT: &str = "culex";

/// The syslog severity of a line: Mosquitto's errors, warnings, notices
/// (Culex's info lines: connections and the like) and debug lines.
pub(crate) fn severity(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 5,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The connection to the system logger, reopened when a send fails (the
/// logger restarted).
#[derive(Debug)]
pub(crate) struct Syslog {
    path: PathBuf,
    facility: u8,
    pid: u32,
    zone: LocalZone,
    header_time: TimestampFormat,
    socket: Mutex<Option<UnixDatagram>>,
}

impl Syslog {
    /// A sender for `facility`; the socket is [`DEV_LOG`] unless
    /// [`TEST_SOCKET_ENV`] names another. Says on stderr if the logger
    /// cannot be reached yet; lines are then dropped until it can.
    pub(crate) fn open(facility: u8, zone: LocalZone) -> Self {
        let path = std::env::var_os(TEST_SOCKET_ENV).map_or_else(|| PathBuf::from(DEV_LOG), PathBuf::from);
        let socket = connect(&path);
        if let Err(error) = &socket {
            eprintln!("Warning: cannot reach the system logger at {}: {error}", path.display());
        }
        let header_time = TimestampFormat::syslog_header();
        Self { path, facility, pid: std::process::id(), zone, header_time, socket: Mutex::new(socket.ok()) }
    }

    /// The datagram for `line` at `level`, stamped with `unix` seconds.
    pub(crate) fn datagram(&self, level: Level, line: &str, unix: i64) -> String {
        let mut out = format!("<{}>", u32::from(self.facility) * 8 + u32::from(severity(level)));
        self.header_time.render(&self.zone.at(unix), &mut out);
        out.push_str(&format!(" {IDENT}[{}]: {line}", self.pid));
        out
    }

    /// Sends `line`; a failure drops it (logging must not stop the broker).
    pub(crate) fn send(&self, level: Level, line: &str) {
        let datagram = self.datagram(level, line, local_time::unix_now());
        let Ok(mut socket) = self.socket.lock() else { return };
        for _attempt in 0..2 {
            if socket.is_none() {
                *socket = connect(&self.path).ok();
            }
            match socket.as_ref().map(|s| s.send(datagram.as_bytes())) {
                Some(Ok(_)) | None => return,
                Some(Err(_)) => *socket = None,
            }
        }
    }
}

fn connect(path: &std::path::Path) -> std::io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(path)?;
    Ok(socket)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use culex_core::conf::{FACILITY_DAEMON, FACILITY_LOCAL0};

    use super::*;

    fn syslog(facility: u8) -> Syslog {
        let zone = LocalZone::posix("UTC0");
        let header_time = TimestampFormat::syslog_header();
        Syslog { path: PathBuf::new(), facility, pid: 42, zone, header_time, socket: Mutex::new(None) }
    }

    #[test]
    fn datagrams_carry_facility_severity_time_ident_and_pid() {
        let daemon = syslog(FACILITY_DAEMON);
        // 2024-03-05 07:08:09 UTC: the day is padded with a space.
        let at = 1_709_622_489;
        assert_eq!(daemon.datagram(Level::ERROR, "1: Error", at), "<27>Mar  5 07:08:09 culex[42]: 1: Error");
        assert_eq!(daemon.datagram(Level::WARN, "w", at), "<28>Mar  5 07:08:09 culex[42]: w");
        assert_eq!(daemon.datagram(Level::INFO, "n", at), "<29>Mar  5 07:08:09 culex[42]: n");
        assert_eq!(daemon.datagram(Level::DEBUG, "d", at), "<31>Mar  5 07:08:09 culex[42]: d");
        let local5 = syslog(FACILITY_LOCAL0 + 5);
        assert_eq!(local5.datagram(Level::INFO, "n", at), "<173>Mar  5 07:08:09 culex[42]: n");
    }

    #[test]
    fn lines_reach_the_socket_and_survive_a_logger_restart() {
        let dir = std::env::temp_dir().join(format!("culex-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let _ = std::fs::remove_file(&path);
        let logger = UnixDatagram::bind(&path).unwrap();
        let sender = Syslog { path: path.clone(), socket: Mutex::new(None), ..syslog(FACILITY_DAEMON) };
        sender.send(Level::WARN, "first");
        let mut buf = [0u8; 256];
        let n = logger.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("<28>") && got.ends_with(" culex[42]: first"), "{got}");
        // The logger goes away and comes back at the same path.
        drop(logger);
        std::fs::remove_file(&path).unwrap();
        sender.send(Level::WARN, "lost");
        let logger = UnixDatagram::bind(&path).unwrap();
        sender.send(Level::ERROR, "second");
        let n = logger.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..n]).unwrap().ends_with(": second"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
