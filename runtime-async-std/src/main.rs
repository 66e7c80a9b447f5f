//! `culex-async-std`: the Culex MQTT broker on async-std. Run with
//! `--help` for options.

use std::process::ExitCode;

use tracing::{error, info};

fn main() -> ExitCode {
    let settings = match culex_runtime::start(std::env::args()) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    match async_std::task::block_on(culex_async_std::run(settings, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use async_signal::{Signal, Signals};
    use futures_lite::StreamExt;
    let Ok(mut signals) = Signals::new([Signal::Term, Signal::Int]) else {
        // Without signal handlers the broker still runs; it stops when killed.
        return std::future::pending().await;
    };
    match signals.next().await {
        Some(Ok(Signal::Term)) => info!("Received SIGTERM."),
        Some(Ok(_)) => info!("Received SIGINT."),
        _ => {}
    }
}
