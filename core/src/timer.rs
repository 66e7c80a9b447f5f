//! Connection deadlines (CONNECT timeout, keepalive) in one min-heap.
//!
//! Design: each connection has at most one live entry, its earliest
//! deadline; activity does not touch the heap. When an entry comes due the
//! broker recomputes the connection's real deadline and either acts or arms
//! again. Packets therefore cost nothing here, and stale entries are
//! recognised because they differ from the connection's armed time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::time::Instant;
use crate::types::ConnId;

#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl Deadlines {
    /// Arms `conn` at `at` unless it is armed at or before that already;
    /// `armed` is the connection's own record of its entry.
    pub(crate) fn arm(&mut self, conn: ConnId, at: Instant, armed: &mut Option<Instant>) {
        if armed.is_some_and(|t| t <= at) {
            return;
        }
        *armed = Some(at);
        self.heap.push(Reverse((at, conn)));
    }

    /// The earliest entry, stale or not.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns an entry due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnId)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}
