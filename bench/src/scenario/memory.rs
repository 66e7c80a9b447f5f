//! The broker's resident memory over a message run: before the start
//! (every client connected), its peak while messages flow, and after.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};

use crate::procfs::rss_kib;

/// How often the peak is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// A running watch on the broker's memory; nothing without a broker pid.
#[derive(Debug)]
pub(crate) struct MemoryWatch {
    pid: Option<u32>,
    before: Option<u64>,
    stop: Option<oneshot::Sender<()>>,
    sampler: Option<JoinHandle<Option<u64>>>,
}

/// What a [`MemoryWatch`] saw, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Memory {
    before: Option<u64>,
    peak: Option<u64>,
    after: Option<u64>,
}

impl MemoryWatch {
    /// Reads the broker's memory now and samples it until
    /// [`MemoryWatch::finish`] or `deadline`.
    pub(crate) fn start(pid: Option<u32>, deadline: Instant) -> Self {
        let before = pid.and_then(rss_kib);
        let (stop, stopped) = oneshot::channel();
        let sampler = pid.map(|pid| tokio::spawn(sample_peak(pid, deadline, stopped)));
        Self { pid, before, stop: Some(stop), sampler }
    }

    /// Stops sampling and reads the memory once more.
    pub(crate) async fn finish(mut self) -> Memory {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let after = self.pid.and_then(rss_kib);
        let sampled = match self.sampler.take() {
            Some(sampler) => sampler.await.ok().flatten(),
            None => None,
        };
        Memory { before: self.before, peak: sampled.max(after).max(self.before), after }
    }
}

impl Memory {
    /// Adds `broker_rss_kib_before`, `_peak`, `_after`, and the growth to
    /// the peak and to the end (`broker_rss_peak_growth_kib`,
    /// `broker_rss_growth_kib`; negative when memory was returned).
    pub(crate) fn report(&self, fields: &mut Map<String, Value>) {
        let growth = |to: Option<u64>| {
            let (to, from) = (i64::try_from(to?).ok()?, i64::try_from(self.before?).ok()?);
            Some(to - from)
        };
        for (key, value) in [
            ("broker_rss_kib_before", self.before.into()),
            ("broker_rss_kib_peak", self.peak.into()),
            ("broker_rss_kib_after", self.after.into()),
            ("broker_rss_peak_growth_kib", growth(self.peak).into()),
            ("broker_rss_growth_kib", growth(self.after).into()),
        ] {
            fields.insert(key.to_owned(), value);
        }
    }
}

/// The largest resident size of `pid` seen every [`SAMPLE_EVERY`] until
/// `stop` or `deadline`.
async fn sample_peak(pid: u32, deadline: Instant, mut stop: oneshot::Receiver<()>) -> Option<u64> {
    let mut peak = None;
    loop {
        peak = peak.max(rss_kib(pid));
        tokio::select! {
            _ = &mut stop => return peak,
            () = sleep_until(deadline) => return peak,
            () = sleep(SAMPLE_EVERY) => {}
        }
    }
}
