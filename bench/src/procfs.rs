//! What Linux says about a process: resident memory and CPU time.

use std::time::{Duration, Instant};

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time of `pid` (or of this process for `None`),
/// from `/proc/PID/stat`, all threads included.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |pid| format!("/proc/{pid}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture the tool runs on.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// SYNs or connections the kernel dropped because a listen queue was full
/// (`TcpExt: ListenDrops` of `/proc/net/netstat`, for the whole network
/// namespace): a client then waits for its SYN to be retransmitted, one
/// second later at first.
pub fn listen_drops() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names.split_whitespace().position(|n| n == "ListenDrops")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Time the threads of `pid` (this process for `None`) spent waiting
/// for a CPU while runnable, summed from `/proc/PID/task/*/schedstat`:
/// the share of a pinned core that other processes took.
pub fn run_queue_wait(pid: Option<u32>) -> Option<Duration> {
    schedstat_sum(pid, 1)
}

/// Time the threads of `pid` (this process for `None`) ran on a CPU,
/// summed from `/proc/PID/task/*/schedstat`: like [`cpu_time`], but to
/// the nanosecond rather than the 10 ms tick, and without the threads
/// that have already exited.
pub fn threads_cpu_time(pid: Option<u32>) -> Option<Duration> {
    schedstat_sum(pid, 0)
}

/// Field `field` (nanoseconds) of every thread's `schedstat`, summed.
fn schedstat_sum(pid: Option<u32>, field: usize) -> Option<Duration> {
    let dir = pid.map_or_else(|| "/proc/self/task".to_owned(), |pid| format!("/proc/{pid}/task"));
    let mut total = 0u64;
    for task in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        total += stat.split_whitespace().nth(field).and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(Duration::from_nanos(total))
}

/// Busy and total jiffies of every CPU (`cpuN` lines of `/proc/stat`);
/// busy is everything but idle and iowait.
fn cpu_jiffies() -> Vec<(u64, u64)> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return Vec::new() };
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().skip(1).take(8).filter_map(|x| x.parse().ok()).collect();
            let total: u64 = v.iter().sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// One process's counters at the start of an interval.
#[derive(Debug, Clone, Copy)]
struct Sample {
    pid: Option<u32>,
    cpu: Option<Duration>,
    wait: Option<Duration>,
}

impl Sample {
    fn take(pid: Option<u32>) -> Self {
        Self { pid, cpu: cpu_time(pid), wait: run_queue_wait(pid) }
    }

    /// (CPU used, time waiting for a CPU) since the sample, in percent of
    /// one core over `wall`.
    fn since(&self, wall: f64) -> (Option<f64>, Option<f64>) {
        let pct = |before: Option<Duration>, now: Option<Duration>| {
            Some(crate::stats::round1(now?.saturating_sub(before?).as_secs_f64() / wall * 100.0))
        };
        (pct(self.cpu, cpu_time(self.pid)), pct(self.wait, run_queue_wait(self.pid)))
    }
}

/// CPU use of the broker and of the tool over an interval, and how long
/// each waited for a CPU (other processes on its core).
#[derive(Debug, Clone)]
pub struct CpuMeter {
    started: Instant,
    broker: Option<Sample>,
    tool: Sample,
    cpus: Vec<(u64, u64)>,
}

/// What a [`CpuMeter`] measured, in percent of one core.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    /// CPU time of the broker.
    pub broker_cpu: Option<f64>,
    /// Time the broker was runnable but not running.
    pub broker_wait: Option<f64>,
    /// CPU time of the tool.
    pub tool_cpu: Option<f64>,
    /// Time the tool was runnable but not running.
    pub tool_wait: Option<f64>,
    /// How busy each CPU of the machine was, whoever used it (interrupt
    /// and softirq time included: loopback TCP work is often counted
    /// there rather than to a process).
    pub cpus_busy: Vec<f64>,
}

impl CpuMeter {
    /// Starts measuring.
    pub fn start(broker: Option<u32>) -> Self {
        Self {
            started: Instant::now(),
            broker: broker.map(|pid| Sample::take(Some(pid))),
            tool: Sample::take(None),
            cpus: cpu_jiffies(),
        }
    }

    /// What was used since the start.
    pub fn finish(&self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let (broker_cpu, broker_wait) = self.broker.map_or((None, None), |b| b.since(wall));
        let (tool_cpu, tool_wait) = self.tool.since(wall);
        let cpus_busy = self
            .cpus
            .iter()
            .zip(cpu_jiffies())
            .map(|((busy0, total0), (busy1, total1))| {
                let total = total1.saturating_sub(*total0).max(1);
                crate::stats::round1(busy1.saturating_sub(*busy0) as f64 / total as f64 * 100.0)
            })
            .collect();
        CpuUse { broker_cpu, broker_wait, tool_cpu, tool_wait, cpus_busy }
    }
}

impl CpuUse {
    /// Adds the four figures to a result.
    pub fn report(&self, fields: &mut serde_json::Map<String, serde_json::Value>) {
        for (key, value) in [
            ("broker_cpu_pct", self.broker_cpu),
            ("broker_wait_pct", self.broker_wait),
            ("tool_cpu_pct", self.tool_cpu),
            ("tool_wait_pct", self.tool_wait),
        ] {
            fields.insert(key.to_owned(), value.into());
        }
        fields.insert("cpus_busy_pct".to_owned(), self.cpus_busy.clone().into());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_readable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(cpu_time(None).is_some());
        assert!(cpu_time(Some(std::process::id())).is_some());
        assert!(listen_drops().is_some());
        assert!(run_queue_wait(None).is_some());
        assert!(threads_cpu_time(None).is_some_and(|t| !t.is_zero()));
        let used = CpuMeter::start(Some(std::process::id())).finish();
        assert!(used.broker_cpu.is_some() && used.tool_wait.is_some());
        assert!(!used.cpus_busy.is_empty());
    }
}
