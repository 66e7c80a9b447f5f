//! The load tool's own CPU use over a run's timed phase, so that a result
//! says when the tool, not the broker, was the limit.
//!
//! Both figures are per thread that could run at once (the runtime's
//! threads, or fewer when the process may use fewer CPUs, `taskset`) over
//! the timed phase, from `/proc/self/task/*/schedstat`, to the nanosecond
//! (the runtime's threads live as long as the run):
//!
//! - utilisation: time on a CPU, user and system;
//! - waiting: time runnable but not running, because other processes (the
//!   broker, on a machine with few CPUs) had the CPUs.
//!
//! Above [`SATURATED`] together, the tool always had work to do: the rate
//! it measured is its own limit as much as the broker's.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::procfs::{run_queue_wait, threads_cpu_time};

/// Busy share per thread (running or waiting for a CPU) above which the
/// tool counts as saturated.
pub const SATURATED: f64 = 0.9;

/// The tool's counters at the start of a timed phase.
#[derive(Debug, Clone, Copy)]
pub struct ToolMeter {
    threads: usize,
    cpu: Option<Duration>,
    wait: Option<Duration>,
}

impl ToolMeter {
    /// Starts measuring a tool that runs its clients on `threads` threads.
    pub fn start(threads: usize) -> Self {
        Self { threads, cpu: threads_cpu_time(None), wait: run_queue_wait(None) }
    }

    /// What the tool used since the start, over a timed phase of length
    /// `phase` (`None` when nothing was timed). Read it once the work is
    /// over: what the tool does after the phase (waiting for stragglers)
    /// costs next to nothing.
    pub fn finish(&self, phase: Option<Duration>) -> ToolCpu {
        let since = |before: Option<Duration>, now: Option<Duration>| Some(now?.saturating_sub(before?));
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        ToolCpu {
            threads: self.threads,
            cpus,
            used: since(self.cpu, threads_cpu_time(None)),
            waited: since(self.wait, run_queue_wait(None)),
            phase,
        }
    }
}

/// What a [`ToolMeter`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToolCpu {
    /// Threads running the clients.
    pub threads: usize,
    /// CPUs the process may run on.
    pub cpus: usize,
    /// Time on a CPU, when `/proc` could be read.
    pub used: Option<Duration>,
    /// Time runnable but not running.
    pub waited: Option<Duration>,
    /// The timed phase.
    pub phase: Option<Duration>,
}

impl ToolCpu {
    /// Threads that could run at once.
    pub fn parallel(&self) -> usize {
        self.threads.min(self.cpus).max(1)
    }

    /// `time` over the phase, per thread that could run.
    fn per_thread(&self, time: Option<Duration>) -> Option<f64> {
        let phase = self.phase.filter(|p| !p.is_zero())?;
        Some(time?.as_secs_f64() / (phase.as_secs_f64() * self.parallel() as f64))
    }

    /// CPU time over the phase, per thread that could run: 0 to 1.
    pub fn utilisation(&self) -> Option<f64> {
        self.per_thread(self.used)
    }

    /// Time waiting for a CPU over the phase, per thread that could run.
    pub fn waiting(&self) -> Option<f64> {
        self.per_thread(self.waited)
    }

    /// Whether the tool was the limit: running or waiting for a CPU more
    /// than [`SATURATED`] of the phase.
    pub fn is_saturated(&self) -> Option<bool> {
        Some(self.utilisation()? + self.waiting().unwrap_or(0.0) > SATURATED)
    }

    /// Adds `tool_threads`, `tool_cpus`, `tool_cpu_s`, `tool_cpu_util`,
    /// `tool_wait_util` and `tool_saturated` to a result.
    pub fn report(&self, fields: &mut Map<String, Value>) {
        let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
        let round6 = |x: f64| (x * 1e6).round() / 1e6;
        fields.insert("tool_threads".to_owned(), Value::from(self.threads));
        fields.insert("tool_cpus".to_owned(), Value::from(self.cpus));
        fields.insert("tool_cpu_s".to_owned(), self.used.map(|d| round6(d.as_secs_f64())).into());
        fields.insert("tool_cpu_util".to_owned(), self.utilisation().map(round3).into());
        fields.insert("tool_wait_util".to_owned(), self.waiting().map(round3).into());
        fields.insert("tool_saturated".to_owned(), self.is_saturated().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(threads: usize, cpus: usize, used_ms: u64, phase_ms: u64) -> ToolCpu {
        ToolCpu {
            threads,
            cpus,
            used: Some(Duration::from_millis(used_ms)),
            waited: Some(Duration::ZERO),
            phase: Some(Duration::from_millis(phase_ms)),
        }
    }

    #[test]
    fn utilisation_is_per_thread_that_could_run() {
        assert_eq!(tool(1, 2, 950, 1000).utilisation(), Some(0.95));
        assert_eq!(tool(2, 2, 950, 1000).utilisation(), Some(0.475));
        // Two threads pinned to one CPU can use one CPU at most.
        assert_eq!(tool(2, 1, 950, 1000).utilisation(), Some(0.95));
    }

    #[test]
    fn saturation_counts_running_and_waiting_above_nine_tenths() {
        assert_eq!(tool(1, 2, 950, 1000).is_saturated(), Some(true));
        assert_eq!(tool(2, 4, 1700, 1000).is_saturated(), Some(false));
        let starved = ToolCpu { waited: Some(Duration::from_millis(900)), ..tool(2, 2, 1000, 1000) };
        assert_eq!((starved.utilisation(), starved.waiting()), (Some(0.5), Some(0.45)));
        assert_eq!(starved.is_saturated(), Some(true));
        assert_eq!(tool(1, 1, 500, 0).is_saturated(), None);
        assert_eq!(ToolCpu { used: None, ..tool(1, 1, 0, 1000) }.is_saturated(), None);
    }

    #[test]
    fn report_has_every_field() {
        let mut fields = Map::new();
        tool(2, 2, 1900, 1000).report(&mut fields);
        assert_eq!(fields["tool_threads"], 2);
        assert_eq!(fields["tool_cpu_s"], 1.9);
        assert_eq!(fields["tool_cpu_util"], 0.95);
        assert_eq!(fields["tool_wait_util"], 0.0);
        assert_eq!(fields["tool_saturated"], true);
        let measured = ToolMeter::start(1).finish(Some(Duration::from_secs(1)));
        assert!(measured.used.is_some() && measured.waited.is_some() && measured.cpus >= 1);
    }
}
