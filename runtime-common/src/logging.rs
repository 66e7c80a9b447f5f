//! Log output in Mosquitto's shape (`1471869172: message`, or the
//! timestamp of `log_timestamp_format` in local time), to the
//! destinations and at the levels `log_dest` and `log_type` ask for:
//! stdout, stderr, a file, the local syslog ([`syslog`]) and `$SYS`
//! topics ([`topic`]). A log file is reopened on SIGHUP ([`reopen_files`]),
//! as Mosquitto does, so that logrotate can move it away.

pub(crate) mod local_time;
mod syslog;
pub mod topic;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use culex_core::conf::{LogConf, LogDest, LogTypes, TimestampFormat};
use culex_core::log_type;
use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use self::local_time::LocalZone;
use self::syslog::Syslog;

/// The timestamp that starts each line: Unix seconds, as Mosquitto
/// prints them, or `log_timestamp_format` in local time.
#[derive(Debug, Clone)]
struct Stamp {
    format: Option<(TimestampFormat, LocalZone)>,
}

impl Stamp {
    fn render(&self, unix: i64) -> String {
        match &self.format {
            None => unix.to_string(),
            Some((format, zone)) => {
                let mut out = String::new();
                format.render(&zone.at(unix), &mut out);
                out
            }
        }
    }
}

impl FormatTime for Stamp {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write!(w, "{}:", self.render(local_time::unix_now()))
    }
}

/// The most detailed level the `log_type` lines ask for: `debug` is
/// tracing's debug, `information` and `notice` its info, and so on.
pub fn level(types: &LogTypes) -> LevelFilter {
    if types.debug {
        LevelFilter::DEBUG
    } else if types.information || types.notice {
        LevelFilter::INFO
    } else if types.warning {
        LevelFilter::WARN
    } else if types.error {
        LevelFilter::ERROR
    } else {
        LevelFilter::OFF
    }
}

/// `log_type` as a filter: the lines of [`level`], and the subscribe and
/// unsubscribe lines when (and only when) their own types are asked for.
/// The Redis client library's own lines are left out: its Redis Cluster
/// client logs every reconnection attempt, many a second while a member is
/// down, and the broker says once what failed and once when it recovered.
fn filter(types: &LogTypes) -> EnvFilter {
    let mut filter = EnvFilter::default().add_directive(level(types).into());
    let targets =
        [(log_type::SUBSCRIBE, types.subscribe), (log_type::UNSUBSCRIBE, types.unsubscribe), ("redis", false)];
    for (target, on) in targets {
        let level = if on { "info" } else { "off" };
        // Well formed: a target of the core and a level name.
        if let Ok(directive) = format!("{target}={level}").parse::<Directive>() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Every configured destination at once.
/// A `log_dest file`: the file open now, and its path to open it again.
struct LogFile {
    path: PathBuf,
    file: RwLock<File>,
}

impl LogFile {
    fn open(path: &Path) -> std::io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    fn write(&self, buf: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        let file = self.file.read().unwrap_or_else(PoisonError::into_inner);
        (&*file).write_all(buf)
    }

    /// Opens the path again, so that lines go to a new file once the old
    /// one was moved away; on failure the old file stays in use.
    fn reopen(&self) -> std::io::Result<()> {
        let fresh = Self::open(&self.path)?;
        *self.file.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }
}

/// The log files of the installed subscriber, for [`reopen_files`].
static FILES: Mutex<Vec<Arc<LogFile>>> = Mutex::new(Vec::new());

/// Opens every `log_dest file` again (SIGHUP): after logrotate moved the
/// file, the next lines go to a new one at the same path. A file that
/// cannot be opened is reported and the old one kept.
pub fn reopen_files() {
    let files = FILES.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for file in files {
        if let Err(e) = file.reopen() {
            tracing::error!("Error: Unable to reopen log file {}: {e}", file.path.display());
        }
    }
}

#[derive(Clone)]
struct Destinations {
    targets: Vec<Target>,
}

#[derive(Clone)]
enum Target {
    Stdout,
    Stderr,
    File(Arc<LogFile>),
    Syslog(Arc<Syslog>),
    Topic,
}

/// One line of `level` goes to every destination (to `topic` for `log_dest
/// topic`).
struct Fanout {
    targets: Vec<Target>,
    level: Level,
    topic: Option<&'static str>,
}

impl std::io::Write for Fanout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over each line whole, newline included.
        let line = || String::from_utf8_lossy(buf.strip_suffix(b"\n").unwrap_or(buf)).into_owned();
        for target in &self.targets {
            // A failing destination must not silence the others.
            let _ = match target {
                Target::Stdout => std::io::stdout().write_all(buf),
                Target::Stderr => std::io::stderr().write_all(buf),
                Target::File(file) => file.write(buf),
                Target::Syslog(syslog) => {
                    syslog.send(self.level, &line());
                    Ok(())
                }
                Target::Topic => {
                    topic::push(self.topic, &line());
                    Ok(())
                }
            };
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Destinations {
    type Writer = Fanout;

    fn make_writer(&'a self) -> Fanout {
        Fanout { targets: self.targets.clone(), level: Level::INFO, topic: topic::topic(Level::INFO, "") }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Fanout {
        let level = *meta.level();
        Fanout { targets: self.targets.clone(), level, topic: topic::topic(level, meta.target()) }
    }
}

/// Installs the global subscriber for `log`; `RUST_LOG` overrides the
/// level. A `log_dest file` that cannot be opened stops start-up.
pub fn init(log: &LogConf) -> Result<(), String> {
    let zone = LocalZone::from_env();
    let mut targets = Vec::new();
    let mut files = Vec::new();
    for dest in &log.dests {
        targets.push(match dest {
            LogDest::Stdout => Target::Stdout,
            LogDest::Stderr => Target::Stderr,
            LogDest::File(path) => {
                let file = LogFile::open(Path::new(path))
                    .map_err(|e| format!("Error: Unable to open log file {path} for writing: {e}"))?;
                let file = Arc::new(LogFile { path: PathBuf::from(path), file: RwLock::new(file) });
                files.push(file.clone());
                Target::File(file)
            }
            LogDest::Syslog => Target::Syslog(Arc::new(Syslog::open(log.facility, zone.clone()))),
            LogDest::Topic => {
                topic::enable();
                Target::Topic
            }
        });
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| filter(&log.types));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .with_writer(Destinations { targets });
    let stamp = Stamp { format: log.timestamp_format.clone().map(|format| (format, zone)) };
    let installed =
        if log.timestamp { builder.with_timer(stamp).try_init() } else { builder.without_time().try_init() };
    // Already installed (an embedding program did it): keep theirs.
    if installed.is_ok() {
        *FILES.lock().unwrap_or_else(PoisonError::into_inner) = files;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_log_file_writes_where_its_path_now_points() {
        let dir = std::env::temp_dir().join(format!("culex-log-reopen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("culex.log");
        let file = LogFile { path: path.clone(), file: RwLock::new(LogFile::open(&path).unwrap()) };
        file.write(b"before\n").unwrap();
        let rotated = dir.join("culex.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        file.write(b"still the old file\n").unwrap();
        file.reopen().unwrap();
        file.write(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "before\nstill the old file\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stamps_are_unix_seconds_or_the_format_in_local_time() {
        assert_eq!(Stamp { format: None }.render(1_709_193_907), "1709193907");
        let format = TimestampFormat::parse("%Y-%m-%dT%H:%M:%S%z").unwrap();
        let stamp = Stamp { format: Some((format, LocalZone::posix("CET-1CEST,M3.5.0,M10.5.0/3"))) };
        assert_eq!(stamp.render(1_709_193_907), "2024-02-29T09:05:07+0100");
    }
}
