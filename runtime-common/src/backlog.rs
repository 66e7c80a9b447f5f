//! Bytes queued for one connection's writer, shared by the broker task
//! (which queues) and the connection task (which writes).
//!
//! A client that reads slower than it is sent to would otherwise make the
//! broker hold its messages without bound. QoS 1 and 2 traffic is already
//! bounded by the core's in-flight window and queue; this bounds the rest:
//! past the limit the connection is closed, once.

use crate::sync::{AtomicBool, AtomicUsize, Ordering};

/// What the queueing side should do with the bytes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Queue them.
    Queue,
    /// The limit was just crossed: close the connection instead.
    Close,
    /// The connection is already being closed: drop them.
    Drop,
}

/// The shared counter.
#[derive(Debug)]
pub struct Backlog {
    bytes: AtomicUsize,
    limit: usize,
    tripped: AtomicBool,
}

impl Backlog {
    /// A backlog that trips past `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { bytes: AtomicUsize::new(0), limit, tripped: AtomicBool::new(false) }
    }

    /// Called before queueing `len` bytes.
    pub fn admit(&self, len: usize) -> Admit {
        if self.tripped.load(Ordering::Acquire) {
            return Admit::Drop;
        }
        let queued = self.bytes.fetch_add(len, Ordering::AcqRel) + len;
        if queued <= self.limit {
            return Admit::Queue;
        }
        self.bytes.fetch_sub(len, Ordering::AcqRel);
        if self.tripped.swap(true, Ordering::AcqRel) { Admit::Drop } else { Admit::Close }
    }

    /// Called after `len` queued bytes were written.
    pub fn written(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::AcqRel);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

#[cfg(all(test, not(culex_loom)))]
mod tests {
    use super::*;

    #[test]
    fn crossing_the_limit_closes_once_then_drops() {
        let b = Backlog::new(10);
        assert_eq!(b.admit(6), Admit::Queue);
        assert_eq!(b.admit(4), Admit::Queue);
        assert_eq!(b.admit(1), Admit::Close);
        assert_eq!(b.admit(1), Admit::Drop);
        b.written(10);
        assert_eq!(b.queued(), 0);
        assert_eq!(b.admit(1), Admit::Drop);
    }
}

#[cfg(all(test, culex_loom))]
mod loom_backlog {
    use super::*;
    use loom::sync::Arc;

    /// The broker queues while the writer drains: the count never goes
    /// negative, ends at what was admitted minus what was written, and the
    /// close is decided at most once, after which everything is dropped.
    #[test]
    fn queue_and_write_race() {
        loom::model(|| {
            let backlog = Arc::new(Backlog::new(3));
            assert_eq!(backlog.admit(2), Admit::Queue);
            let writer = {
                let backlog = backlog.clone();
                loom::thread::spawn(move || backlog.written(2))
            };
            let second = backlog.admit(2);
            let third = backlog.admit(2);
            let _ = writer.join();
            let later = [second, third];
            let queued = 2 + 2 * later.iter().filter(|a| **a == Admit::Queue).count();
            assert_eq!(backlog.queued(), queued - 2);
            assert!(later.iter().filter(|a| **a == Admit::Close).count() <= 1);
            if second == Admit::Close {
                assert_eq!(third, Admit::Drop);
            }
        });
    }

    /// Two writers finishing while the queueing side admits: the count
    /// returns to zero.
    #[test]
    fn concurrent_written_calls_balance() {
        loom::model(|| {
            let backlog = Arc::new(Backlog::new(100));
            assert_eq!(backlog.admit(5), Admit::Queue);
            assert_eq!(backlog.admit(7), Admit::Queue);
            let a = {
                let b = backlog.clone();
                loom::thread::spawn(move || b.written(5))
            };
            let c = {
                let b = backlog.clone();
                loom::thread::spawn(move || b.written(7))
            };
            let _ = a.join();
            let _ = c.join();
            assert_eq!(backlog.queued(), 0);
        });
    }
}
