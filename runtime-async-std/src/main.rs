//! `culex-async-std`: the Culex MQTT broker on async-std. Run with
//! `--help` for options.

use std::process::ExitCode;

use culex_runtime::{Signal, Signals};
use tracing::{error, info};

/// Counts the heap it holds once `memory_limit` asks for it.
#[global_allocator]
static HEAP: culex_heap::CountingHeap = culex_heap::CountingHeap;

fn main() -> ExitCode {
    let settings = match culex_runtime::start(std::env::args()) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    match async_std::task::block_on(culex_async_std::serve(settings, UnixSignals::new())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT stop the broker, SIGHUP reloads its access settings,
/// SIGUSR1 reports on the store.
struct UnixSignals(Option<async_signal::Signals>);

impl UnixSignals {
    fn new() -> Self {
        use async_signal::Signal as Unix;
        // Without signal handlers the broker still runs; it stops when killed.
        Self(async_signal::Signals::new([Unix::Term, Unix::Int, Unix::Hup, Unix::Usr1]).ok())
    }
}

impl Signals for UnixSignals {
    async fn next(&mut self) -> Signal {
        use async_signal::Signal as Unix;
        use futures_lite::StreamExt;
        let Some(signals) = self.0.as_mut() else {
            return std::future::pending().await;
        };
        match signals.next().await {
            Some(Ok(Unix::Hup)) => Signal::Reload,
            Some(Ok(Unix::Usr1)) => {
                info!("Received SIGUSR1.");
                Signal::Report
            }
            Some(Ok(Unix::Term)) => {
                info!("Received SIGTERM.");
                Signal::Shutdown
            }
            Some(Ok(_)) => {
                info!("Received SIGINT.");
                Signal::Shutdown
            }
            // The signal pipe failed: no more signals.
            Some(Err(_)) | None => std::future::pending().await,
        }
    }
}
