//! What Linux says about a process: resident memory and CPU time.

use std::path::Path;
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

/// Bytes `pid` caused to be written to storage, from `write_bytes` of
/// `/proc/PID/io` (counted when the process dirties page cache, so what a
/// commit writes is counted even before its `fdatasync`), less
/// `cancelled_write_bytes` (dirty pages of files truncated or deleted
/// before they reached the disk).
pub fn write_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = io.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(field("write_bytes:")?.saturating_sub(field("cancelled_write_bytes:").unwrap_or(0)))
}

/// The block device (major, minor) a path lives on.
pub fn device_of(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    // glibc's gnu_dev_major and gnu_dev_minor.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    Some((major, minor))
}

/// Cache flushes the device `(major, minor)` completed since boot
/// (`/proc/diskstats`, field 19, Linux 5.5 and later): one per
/// `fdatasync` that reached it, from every process; `None` when the
/// kernel does not count them.
pub fn disk_flushes(device: (u64, u64)) -> Option<u64> {
    disk_stat(device, 18)
}

/// Bytes written to the device `(major, minor)` since boot
/// (`/proc/diskstats`, field 10, sectors of 512 bytes), by every process:
/// what reached the disk, where [`write_bytes`] counts the page cache a
/// process dirtied (whole folios, which may be far larger than a write
/// into a file that already has its blocks).
pub fn disk_written(device: (u64, u64)) -> Option<u64> {
    disk_stat(device, 9).map(|sectors| sectors * 512)
}

/// Field `index` (from 0) of the device's line of `/proc/diskstats`.
fn disk_stat(device: (u64, u64), index: usize) -> Option<u64> {
    let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
    stats.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (major, minor) = (fields.first()?.parse::<u64>().ok()?, fields.get(1)?.parse::<u64>().ok()?);
        ((major, minor) == device).then(|| fields.get(index)?.parse().ok()).flatten()
    })
}

/// How long ago `pid` started, from its start time in `/proc/PID/stat`
/// and `/proc/uptime` (both counted from boot, to the 10 ms tick).
pub fn process_age(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3 of stat(5), starttime 22.
    let start_ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let up: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture the tool runs on.
    Some(Duration::from_secs_f64((up - start_ticks as f64 / 100.0).max(0.0)))
}

/// The size of the files under `path` (recursively; `path` itself when it
/// is a file): their length, and the space they take on the disk.
pub fn store_size(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.is_file() {
        return Some((meta.len(), meta.blocks() * 512));
    }
    let mut total = (0, 0);
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).ok()?.flatten() {
            if let Some((len, disk)) = store_size(&entry.path()) {
                total = (total.0 + len, total.1 + disk);
            }
        }
    }
    Some(total)
}

/// The broker's writes to storage over an interval, and the flushes of
/// the device its store is on.
#[derive(Debug, Clone, Copy)]
pub struct IoMeter {
    pid: Option<u32>,
    write_bytes: Option<u64>,
    device: Option<(u64, u64)>,
    flushes: Option<u64>,
    written: Option<u64>,
}

/// What an [`IoMeter`] measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct IoUse {
    /// Bytes the broker wrote to storage ([`write_bytes`]).
    pub write_bytes: Option<u64>,
    /// Cache flushes of the store's device, whoever asked for them.
    pub flushes: Option<u64>,
    /// Bytes written to the store's device, by whoever ([`disk_written`]).
    pub device_write_bytes: Option<u64>,
}

impl IoMeter {
    /// Starts measuring the broker `pid`, and the flushes of the device
    /// `store` is on.
    pub fn start(pid: Option<u32>, store: Option<&Path>) -> Self {
        let device = store.and_then(device_of);
        Self {
            pid,
            write_bytes: pid.and_then(write_bytes),
            device,
            flushes: device.and_then(disk_flushes),
            written: device.and_then(disk_written),
        }
    }

    /// What was written and flushed since the start.
    pub fn finish(&self) -> IoUse {
        let since = |before: Option<u64>, now: Option<u64>| Some(now?.saturating_sub(before?));
        IoUse {
            write_bytes: since(self.write_bytes, self.pid.and_then(write_bytes)),
            flushes: since(self.flushes, self.device.and_then(disk_flushes)),
            device_write_bytes: since(self.written, self.device.and_then(disk_written)),
        }
    }
}

impl IoUse {
    /// Adds `PREFIXbroker_write_bytes`, `PREFIXbroker_write_bytes_per_op`
    /// (over `ops` operations: acknowledged messages, changes),
    /// `PREFIXdevice_write_bytes_per_op`, `PREFIXdisk_flushes` (both the
    /// whole device's) and `PREFIXops_per_flush` to a result.
    pub fn report(&self, fields: &mut serde_json::Map<String, serde_json::Value>, prefix: &str, ops: u64) {
        let per = |total: Option<u64>| total.filter(|_| ops > 0).map(|t| crate::stats::round1(t as f64 / ops as f64));
        let ops_per_flush = self.flushes.filter(|&f| f > 0).map(|f| crate::stats::round1(ops as f64 / f as f64));
        for (key, value) in [
            ("broker_write_bytes", self.write_bytes.into()),
            ("broker_write_bytes_per_op", per(self.write_bytes).into()),
            ("device_write_bytes_per_op", per(self.device_write_bytes).into()),
            ("disk_flushes", self.flushes.into()),
            ("ops_per_flush", ops_per_flush.into()),
        ] {
            fields.insert(format!("{prefix}{key}"), value);
        }
    }
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
        assert!(write_bytes(std::process::id()).is_some());
        assert!(process_age(std::process::id()).is_some_and(|age| age < Duration::from_secs(86_400 * 365)));
        let here = std::env::current_dir().unwrap();
        assert!(device_of(&here).is_some());
        let manifest = here.join("Cargo.toml");
        assert!(store_size(&manifest).is_some_and(|(len, _)| len > 0));
        let io = IoMeter::start(Some(std::process::id()), Some(&here)).finish();
        assert!(io.write_bytes.is_some());
    }
}
