//! A broker process of the TCP target's own, for the scenarios that stop
//! the broker (`shutdown`) or stop and start it again (`restart`, `crash`).
//!
//! Each such scenario gets a fresh broker: started from the command the
//! target was given, on a free loopback port, with the configuration of the
//! shared broker (its `listener` and `port` lines moved to that port), the
//! scenario's `[config]` settings, and a `persistence_location` of its own
//! (an empty directory, removed afterwards). `restart` sends SIGTERM,
//! waits for the process to exit and starts the same command again on the
//! same port and files; `crash` sends SIGKILL instead. A start is over once
//! the port accepts connections.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a broker may take to accept connections once started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a broker may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start the broker under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerCommand {
    /// The program and its arguments; `{port}` becomes the port and
    /// `{conf}` the configuration file, as in `conformance/run-tcp.sh`.
    pub argv: Vec<String>,
    /// The configuration the shared broker runs with (the file given as
    /// `--broker-config`), as text.
    pub conf: String,
}

/// The configuration of a broker of our own: `base` with its `listener`
/// and `port` lines on `port` (one is added if it has none), without the
/// keys `settings` replaces, then `settings`, then the store's directory.
pub(crate) fn conf_for(base: &str, port: u16, settings: &[(String, String)], store: &Path) -> String {
    let mut out = String::new();
    let mut listens = false;
    for line in base.lines() {
        let mut words = line.split_whitespace();
        let key = words.next().unwrap_or_default();
        match key {
            "listener" => {
                listens = true;
                let rest: Vec<&str> = words.skip(1).collect();
                out.push_str(&format!("listener {port} {}\n", rest.join(" ")).replace(" \n", "\n"));
            }
            "port" => {
                listens = true;
                out.push_str(&format!("port {port}\n"));
            }
            "persistence_location" => {}
            key if settings.iter().any(|(k, _)| k == key) => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !listens {
        out.insert_str(0, &format!("listener {port} 127.0.0.1\n"));
    }
    for (key, value) in settings {
        out.push_str(&format!("{key} {value}\n"));
    }
    // Mosquitto joins the location and the file name as they are written.
    out.push_str(&format!("persistence_location {}/\n", store.display()));
    out
}

/// A running broker of the target's own; killed and its files removed
/// when dropped.
#[derive(Debug)]
pub(crate) struct OwnBroker {
    argv: Vec<String>,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl OwnBroker {
    /// Starts `command` with the base configuration and `settings`, and
    /// waits until it accepts connections.
    pub(crate) fn start(command: &BrokerCommand, settings: &[(String, String)]) -> Result<Self, String> {
        if command.argv.is_empty() {
            return Err("no broker command".into());
        }
        let dir = scratch_dir()?;
        // Dropped on any error below: the directory goes with it.
        let mut broker = Self { argv: Vec::new(), dir, port: 0, child: None };
        let store = broker.dir.join("store");
        let conf = broker.dir.join("broker.conf");
        let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
        fs::create_dir(&store).map_err(|e| io(&store, e))?;
        // A broker started as root may drop to a user of its own
        // (Mosquitto's `mosquitto`): let it read the file and write the store.
        fs::set_permissions(&store, fs::Permissions::from_mode(0o777)).map_err(|e| io(&store, e))?;
        broker.port = free_port()?;
        fs::write(&conf, conf_for(&command.conf, broker.port, settings, &store)).map_err(|e| io(&conf, e))?;
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).map_err(|e| io(&conf, e))?;
        let (port, conf) = (broker.port.to_string(), conf.display().to_string());
        broker.argv = command.argv.iter().map(|a| a.replace("{port}", &port).replace("{conf}", &conf)).collect();
        broker.launch()?;
        Ok(broker)
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Stops it as SIGTERM does, waiting for the process to exit; with
    /// `kill`, kills it (SIGKILL) instead.
    pub(crate) fn stop(&mut self, kill: bool) -> Result<(), String> {
        let Some(mut child) = self.child.take() else { return Err("the broker is not running".into()) };
        if kill {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
        let sent = Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status();
        if !sent.is_ok_and(|s| s.success()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("could not send SIGTERM to the broker".into());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "the broker did not exit within {} s of SIGTERM{}",
                        STOP_TIMEOUT.as_secs(),
                        self.log_tail()
                    ));
                }
            }
        }
    }

    /// Stops it (SIGTERM, or SIGKILL with `crash`) and starts it again
    /// on the same port, configuration and store.
    pub(crate) fn restart(&mut self, crash: bool) -> Result<(), String> {
        self.stop(crash)?;
        self.launch()
    }

    /// Starts the command and waits until the port accepts connections.
    fn launch(&mut self) -> Result<(), String> {
        let path = self.dir.join("broker.log");
        let log = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| format!("{e}"))?;
        let err = log.try_clone().map_err(|e| format!("{e}"))?;
        let mut child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.argv[0]))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the broker exited at start ({status}){}", self.log_tail()));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the broker did not listen within {} s{}",
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of its log, to explain a failure.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(file) = fs::File::open(self.dir.join("broker.log")) {
            let _ = file.take(1 << 20).read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(10)..];
        if tail.is_empty() { String::new() } else { format!("; its log ends with: {}", tail.join(" / ")) }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A new, empty directory under the system's temporary directory.
fn scratch_dir() -> Result<PathBuf, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::temp_dir();
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("culex-conformance-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    Err(format!("no free directory name in {}", base.display()))
}

/// A loopback port nothing listens on now.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("no free port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_moves_and_settings_replace_their_keys() {
        let base = "listener 1883 127.0.0.1\nprotocol websockets\nallow_anonymous true\nmax_inflight_messages 2\n\
                    persistence_location /var/lib/x/\n";
        let settings = [("persistence".to_owned(), "true".to_owned()), ("max_inflight_messages".into(), "3".into())];
        let conf = conf_for(base, 4000, &settings, Path::new("/tmp/s"));
        assert_eq!(
            conf,
            "listener 4000 127.0.0.1\nprotocol websockets\nallow_anonymous true\npersistence true\n\
             max_inflight_messages 3\npersistence_location /tmp/s/\n"
        );
        assert_eq!(conf_for("port 1\n", 7, &[], Path::new("/s")), "port 7\npersistence_location /s/\n");
        assert_eq!(
            conf_for("allow_anonymous true\n", 7, &[], Path::new("/s")),
            "listener 7 127.0.0.1\nallow_anonymous true\npersistence_location /s/\n"
        );
        assert_eq!(conf_for("listener 1883\n", 7, &[], Path::new("/s")), "listener 7\npersistence_location /s/\n");
    }
}
