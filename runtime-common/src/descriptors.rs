//! The process's table of open files, grown once at start-up.
//!
//! Linux grows that table by doubling as descriptors are opened, and in a
//! process with more than one thread every growth waits for an RCU grace
//! period (`expand_fdtable` calls `synchronize_rcu`): the thread calling
//! `accept` stops for about 20 ms. A broker taking its first 10,000 clients
//! would stop eight times, each time with every handshake in flight
//! waiting, where Mosquitto, single-threaded, never waits. Grown before
//! the runtime starts its threads, the table costs no wait later.

use std::os::fd::AsFd;

use rustix::process::{Resource, getrlimit};
use tracing::debug;

/// The most descriptors reserved up front: the table takes 8 bytes of
/// kernel memory per slot (512 KiB here); beyond this a growth waits once
/// more per doubling.
pub const MOST_RESERVED: u64 = 65_536;

/// Grows the descriptor table to the open-files limit, or to
/// [`MOST_RESERVED`] if that is lower. Best effort: the broker works
/// without it, only its accepts may stall while the table grows.
pub fn reserve() {
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    reserve_up_to(limit.min(MOST_RESERVED));
}

/// Grows the table to hold at least `slots` descriptors, by duplicating
/// standard error to the highest of them and closing the copy: the table
/// never shrinks.
fn reserve_up_to(slots: u64) {
    let Some(highest) = slots.checked_sub(1).and_then(|n| i32::try_from(n).ok()) else { return };
    match rustix::io::fcntl_dupfd_cloexec(std::io::stderr().as_fd(), highest) {
        Ok(copy) => drop(copy),
        Err(error) => debug!(slots, %error, "descriptor table not grown in advance"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's size, as the kernel reports it.
    fn table_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
        let line = status.lines().find_map(|l| l.strip_prefix("FDSize:")).expect("FDSize line");
        line.trim().parse().expect("a number")
    }

    #[test]
    fn the_table_grows_to_the_reserved_size_and_stays() {
        let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        let slots = limit.min(4096);
        assert!(slots > 256, "open-files limit too low for this test: {limit}");
        reserve_up_to(slots);
        assert!(table_size() >= slots, "table {} < {slots}", table_size());
        // Opening and closing more files later does not shrink it.
        drop(std::fs::File::open("/proc/self/status").expect("procfs"));
        assert!(table_size() >= slots);
    }

    #[test]
    fn a_reservation_above_the_limit_is_harmless() {
        reserve_up_to(u64::MAX);
        reserve_up_to(0);
        assert!(std::fs::File::open("/proc/self/status").is_ok());
    }
}
