//! Bytes queued for one connection's writer and not yet written, kept
//! under the outbox's lock: the broker task adds, the connection task
//! takes away.
//!
//! Two thresholds. Past the budget (`max_unwritten_bytes`) the writer is
//! *behind*: the core is told once per episode and drops QoS 0 copies to
//! it until half the budget is written (the transitions are those of the
//! core's [`WriterGauge`](culex_core::congestion::WriterGauge), decided by
//! [`is_behind`] and [`has_caught_up`]). Past the hard limit (the largest
//! packet plus 16 MiB, reached only if QoS 1/2 or control traffic piles
//! up) the connection is closed, once.
//!
//! The thresholds are the same for every connection and kept once
//! ([`Thresholds`]); each connection's count takes 16 bytes, as it sits
//! in every outbox, idle or not.

use culex_core::Config;
use culex_core::congestion::{WriterProgress, has_caught_up, is_behind};

use crate::settings::backlog_limit;

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

/// The budget and the hard limit every connection's backlog obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Bytes queued past which the writer is behind (0: never).
    pub budget: usize,
    /// Bytes queued past which the connection is closed.
    pub limit: usize,
}

impl Thresholds {
    /// The thresholds the core's config sets.
    pub fn of(core: &Config) -> Self {
        Self { budget: core.max_unwritten_bytes, limit: backlog_limit(core) }
    }
}

/// One writer's count.
#[derive(Debug, Default)]
pub struct Backlog {
    /// The last episode of being behind, numbered from 1 (see
    /// [`WriterProgress::Behind`]).
    episode: u64,
    /// Bytes queued and not yet written: never past the limit, which is
    /// far below 4 GiB (see [`backlog_limit`]), so 32 bits hold them.
    unwritten: u32,
    behind: bool,
    tripped: bool,
}

impl Backlog {
    /// Called before queueing `len` bytes.
    pub fn admit(&mut self, len: usize, thresholds: Thresholds) -> Admit {
        if self.tripped {
            return Admit::Drop;
        }
        let queued = self.queued().saturating_add(len);
        // A limit of 4 GiB or more is, in effect, 4 GiB.
        let Some(unwritten) = u32::try_from(queued).ok().filter(|_| queued <= thresholds.limit) else {
            self.tripped = true;
            return Admit::Close;
        };
        self.unwritten = unwritten;
        if self.behind || !is_behind(queued, thresholds.budget) {
            return Admit::Queue(None);
        }
        self.behind = true;
        self.episode += 1;
        Admit::Queue(Some(WriterProgress::Behind { episode: self.episode }))
    }

    /// Called after `len` queued bytes were written: what to report, progress
    /// while behind or the end of the episode.
    pub fn written(&mut self, len: usize, thresholds: Thresholds) -> Option<WriterProgress> {
        self.unwritten = self.unwritten.saturating_sub(u32::try_from(len).unwrap_or(u32::MAX));
        if !self.behind || len == 0 {
            return None;
        }
        if has_caught_up(self.queued(), thresholds.budget) {
            self.behind = false;
            return Some(WriterProgress::CaughtUp { episode: self.episode });
        }
        Some(WriterProgress::Progressed)
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.unwritten as usize
    }
}

#[cfg(all(test, not(culex_loom)))]
mod tests {
    use super::*;
    use culex_core::congestion::WriterGauge;
    use quickcheck::quickcheck;

    const fn thresholds(limit: usize, budget: usize) -> Thresholds {
        Thresholds { budget, limit }
    }

    #[test]
    fn crossing_the_limit_closes_once_then_drops() {
        let (mut b, t) = (Backlog::default(), thresholds(10, 0));
        assert_eq!(b.admit(6, t), Admit::Queue(None));
        assert_eq!(b.admit(4, t), Admit::Queue(None));
        assert_eq!(b.admit(1, t), Admit::Close);
        assert_eq!(b.admit(1, t), Admit::Drop);
        assert_eq!(b.written(10, t), None);
        assert_eq!(b.queued(), 0);
        assert_eq!(b.admit(1, t), Admit::Drop);
    }

    #[test]
    fn crossing_the_budget_is_reported_once_then_the_progress_and_the_end() {
        let (mut b, t) = (Backlog::default(), thresholds(1000, 100));
        assert_eq!(b.admit(90, t), Admit::Queue(None));
        assert_eq!(b.admit(20, t), Admit::Queue(Some(WriterProgress::Behind { episode: 1 })));
        assert_eq!(b.admit(20, t), Admit::Queue(None));
        assert_eq!(b.written(30, t), Some(WriterProgress::Progressed));
        assert_eq!(b.written(60, t), Some(WriterProgress::CaughtUp { episode: 1 }));
        assert_eq!(b.queued(), 40);
    }

    #[test]
    fn a_limit_past_what_32_bits_count_closes_there() {
        let (mut b, t) = (Backlog::default(), thresholds(usize::MAX, 0));
        assert_eq!(b.admit(u32::MAX as usize, t), Admit::Queue(None));
        assert_eq!(b.admit(1, t), Admit::Close);
    }

    quickcheck! {
        /// Within the limit, the backlog reports what the core's gauge
        /// reports for the same bytes queued and written.
        fn reports_as_the_core_gauge_does(budget: u16, steps: Vec<(bool, u16)>) -> bool {
            let t = thresholds(usize::MAX, usize::from(budget));
            let (mut backlog, mut gauge) = (Backlog::default(), WriterGauge::new(t.budget));
            steps.into_iter().all(|(queue, len)| {
                let len = usize::from(len);
                if queue {
                    backlog.admit(len, t) == Admit::Queue(gauge.queued(len))
                } else {
                    backlog.written(len, t) == gauge.written(len)
                }
            }) && backlog.queued() == gauge.unwritten()
        }
    }
}
