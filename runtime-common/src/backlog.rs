//! Bytes queued for one connection's writer and not yet written, kept
//! under the outbox's lock: the broker task adds, the connection task
//! takes away.
//!
//! Two thresholds. Past the budget (`max_unwritten_bytes`) the writer is
//! *behind*: the core is told once per episode and drops QoS 0 copies to
//! it until half the budget is written (the core's
//! [`WriterGauge`](culex_core::congestion::WriterGauge) decides the
//! transitions). Past the hard limit (the largest packet plus 16 MiB,
//! reached only if QoS 1/2 or control traffic piles up) the connection is
//! closed, once.

use culex_core::congestion::{WriterGauge, WriterProgress};

/// What the queueing side should do with the bytes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Queue them; `Some` when they put the writer behind its budget.
    Queue(Option<WriterProgress>),
    /// The hard limit was just crossed: close the connection instead.
    Close,
    /// The connection is already being closed: drop them.
    Drop,
}

/// One writer's count.
#[derive(Debug)]
pub struct Backlog {
    gauge: WriterGauge,
    limit: usize,
    tripped: bool,
}

impl Backlog {
    /// A backlog behind past `budget` bytes (0: never) that trips past
    /// `limit` bytes.
    pub fn new(limit: usize, budget: usize) -> Self {
        Self { gauge: WriterGauge::new(budget), limit, tripped: false }
    }

    /// Called before queueing `len` bytes.
    pub fn admit(&mut self, len: usize) -> Admit {
        if self.tripped {
            return Admit::Drop;
        }
        if self.gauge.unwritten().saturating_add(len) > self.limit {
            self.tripped = true;
            return Admit::Close;
        }
        Admit::Queue(self.gauge.queued(len))
    }

    /// Called after `len` queued bytes were written: what to report.
    pub fn written(&mut self, len: usize) -> Option<WriterProgress> {
        self.gauge.written(len)
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.gauge.unwritten()
    }
}

#[cfg(all(test, not(culex_loom)))]
mod tests {
    use super::*;

    #[test]
    fn crossing_the_limit_closes_once_then_drops() {
        let mut b = Backlog::new(10, 0);
        assert_eq!(b.admit(6), Admit::Queue(None));
        assert_eq!(b.admit(4), Admit::Queue(None));
        assert_eq!(b.admit(1), Admit::Close);
        assert_eq!(b.admit(1), Admit::Drop);
        assert_eq!(b.written(10), None);
        assert_eq!(b.queued(), 0);
        assert_eq!(b.admit(1), Admit::Drop);
    }

    #[test]
    fn crossing_the_budget_is_reported_once_then_the_progress_and_the_end() {
        let mut b = Backlog::new(1000, 100);
        assert_eq!(b.admit(90), Admit::Queue(None));
        assert_eq!(b.admit(20), Admit::Queue(Some(WriterProgress::Behind { episode: 1 })));
        assert_eq!(b.admit(20), Admit::Queue(None));
        assert_eq!(b.written(30), Some(WriterProgress::Progressed));
        assert_eq!(b.written(60), Some(WriterProgress::CaughtUp { episode: 1 }));
        assert_eq!(b.queued(), 40);
    }
}
