//! `culex`: the Culex MQTT broker on tokio. Run with `--help` for options.

use std::process::ExitCode;

use tracing::{error, info};

fn main() -> ExitCode {
    let settings = match culex_runtime::start(std::env::args()) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
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
