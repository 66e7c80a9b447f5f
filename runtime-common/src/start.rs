//! The first steps of both binaries: command line, config file, logging,
//! the service manager's socket ([`crate::notify`]), and the descriptor
//! table grown before any runtime thread starts.

use std::process::ExitCode;

use tracing::{error, info};

use crate::settings::{self, Launch, Settings};

/// Reads the command line and config file, starts logging and grows the
/// descriptor table ([`crate::descriptors`]). Call it before starting
/// the async runtime. `Err` is
/// the exit code when there is nothing to serve: `--help`, `--version`
/// (printed, success) or an error (printed to stderr, failure).
pub fn start(args: impl IntoIterator<Item = String>) -> Result<Settings, ExitCode> {
    let settings = match settings::load(args) {
        Ok(Launch::Serve(settings)) => *settings,
        Ok(Launch::Print(text)) => {
            print!("{text}");
            return Err(ExitCode::SUCCESS);
        }
        Err(message) => {
            eprintln!("{message}");
            return Err(ExitCode::FAILURE);
        }
    };
    if let Err(message) = crate::logging::init(&settings.log) {
        eprintln!("{message}");
        return Err(ExitCode::FAILURE);
    }
    crate::notify::init();
    info!("culex version {} starting", env!("CARGO_PKG_VERSION"));
    if let Some(path) = &settings.process.pid_file {
        // Written as the user that started the broker, before it drops to
        // `user`; a pid file that cannot be written stops start-up.
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            error!("Error: Unable to write pid file {path}: {e}.");
            return Err(ExitCode::FAILURE);
        }
    }
    for notice in &settings.notices {
        info!("{notice}");
    }
    crate::descriptors::reserve();
    if let Some(limit) = settings.core.memory_limit {
        // What was allocated so far (mostly settings, kept) is not counted.
        culex_heap::start_counting();
        info!("memory_limit: the broker stops taking messages past {limit} bytes of heap.");
    }
    Ok(settings)
}
