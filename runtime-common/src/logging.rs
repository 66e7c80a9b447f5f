//! Log output in Mosquitto's shape (`1471869172: message`), to the
//! destinations and at the levels `log_dest` and `log_type` ask for.

use std::fmt;
use std::fs::OpenOptions;
use std::sync::Arc;

use culex_core::conf::{LogConf, LogDest, LogTypes};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Unix seconds, as Mosquitto prefixes its log lines.
#[derive(Debug, Clone, Copy)]
struct UnixSeconds;

impl FormatTime for UnixSeconds {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        write!(w, "{secs}:")
    }
}

/// The most detailed level the `log_type` lines ask for: `debug` is
/// tracing's debug, `information` and `notice` its info, and so on.
pub fn level(types: &LogTypes) -> LevelFilter {
    if types.debug {
        LevelFilter::DEBUG
    } else if types.information || types.notice || types.subscribe || types.unsubscribe {
        LevelFilter::INFO
    } else if types.warning {
        LevelFilter::WARN
    } else if types.error {
        LevelFilter::ERROR
    } else {
        LevelFilter::OFF
    }
}

/// Every configured destination at once.
#[derive(Clone)]
struct Destinations {
    targets: Vec<Target>,
}

#[derive(Clone)]
enum Target {
    Stdout,
    Stderr,
    File(Arc<std::fs::File>),
}

/// One line goes to every destination.
struct Fanout(Vec<Target>);

impl std::io::Write for Fanout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for target in &self.0 {
            // A failing destination must not silence the others.
            let _ = match target {
                Target::Stdout => std::io::stdout().write_all(buf),
                Target::Stderr => std::io::stderr().write_all(buf),
                Target::File(file) => (&**file).write_all(buf),
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
        Fanout(self.targets.clone())
    }
}

/// Installs the global subscriber for `log`; `RUST_LOG` overrides the
/// level. A `log_dest file` that cannot be opened stops start-up.
pub fn init(log: &LogConf) -> Result<(), String> {
    let mut targets = Vec::new();
    for dest in &log.dests {
        targets.push(match dest {
            LogDest::Stdout => Target::Stdout,
            LogDest::Stderr => Target::Stderr,
            LogDest::File(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("Error: Unable to open log file {path} for writing: {e}"))?;
                Target::File(Arc::new(file))
            }
        });
    }
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::default().add_directive(level(&log.types).into()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .with_writer(Destinations { targets });
    let installed =
        if log.timestamp { builder.with_timer(UnixSeconds).try_init() } else { builder.without_time().try_init() };
    // Already installed (an embedding program did it): keep theirs.
    let _ = installed;
    Ok(())
}
