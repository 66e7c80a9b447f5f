//! `culex`: the Culex MQTT broker on tokio. Run with `--help` for options.

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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("Error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async { culex_tokio::serve(settings, UnixSignals::new()).await }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT stop the broker, SIGHUP reloads its access settings,
/// SIGUSR1 reports on the store.
struct UnixSignals(Option<[tokio::signal::unix::Signal; 4]>);

impl UnixSignals {
    /// Must run inside the tokio runtime.
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        );
        match handlers {
            (Ok(term), Ok(int), Ok(hup), Ok(usr1)) => Self(Some([term, int, hup, usr1])),
            // Without signal handlers the broker still runs; it stops when killed.
            _ => Self(None),
        }
    }
}

impl Signals for UnixSignals {
    async fn next(&mut self) -> Signal {
        let Some([term, int, hup, usr1]) = self.0.as_mut() else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {
                info!("Received SIGTERM.");
                Signal::Shutdown
            }
            _ = int.recv() => {
                info!("Received SIGINT.");
                Signal::Shutdown
            }
            _ = hup.recv() => Signal::Reload,
            _ = usr1.recv() => {
                info!("Received SIGUSR1.");
                Signal::Report
            }
        }
    }
}
