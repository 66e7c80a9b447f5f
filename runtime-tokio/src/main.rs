//! `culex`: the Culex MQTT broker on tokio. Run with `--help` for options.

use std::process::ExitCode;

use culex_runtime::{Launch, logging, settings};
use tracing::{error, info};

fn main() -> ExitCode {
    let settings = match settings::load(std::env::args()) {
        Ok(Launch::Serve(settings)) => *settings,
        Ok(Launch::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(message) = logging::init(&settings.log) {
        eprintln!("{message}");
        return ExitCode::FAILURE;
    }
    info!("culex version {} starting", env!("CARGO_PKG_VERSION"));
    for notice in &settings.notices {
        info!("{notice}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("Error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(culex_tokio::run(settings, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the broker still runs; it stops when killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("Received SIGTERM."),
        _ = int.recv() => info!("Received SIGINT."),
    }
}
