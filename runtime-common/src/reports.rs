//! Writer reports on their way from the connection tasks to the broker
//! task (see [`culex_core::congestion`]), without ever making a writer
//! wait: a writer that is behind is exactly one the broker needs to hear
//! from, and the event queue may be full of the very flood that put it
//! behind. A connection task posts here and, if the board was empty, wakes
//! the broker task with [`Event::WriterReports`](crate::Event::WriterReports)
//! (a wake-up it may skip when the queue is full: the broker task is busy
//! then and takes the board at its next turn).

use culex_core::ConnId;
use culex_core::congestion::WriterProgress;

use crate::sync::Mutex;

/// The reports posted and not yet taken, in order.
#[derive(Debug, Default)]
pub struct WriterReports {
    pending: Mutex<Vec<(ConnId, WriterProgress)>>,
}

impl WriterReports {
    /// Posts a report; whether the board was empty (the broker task is to
    /// be woken).
    pub fn post(&self, conn: ConnId, progress: WriterProgress) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.push((conn, progress));
        pending.len() == 1
    }

    /// Takes everything posted so far.
    pub fn take(&self) -> Vec<(ConnId, WriterProgress)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

#[cfg(all(test, not(culex_loom)))]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_post_after_a_take_asks_for_a_wake() {
        let board = WriterReports::default();
        assert!(board.post(ConnId(1), WriterProgress::Progressed));
        assert!(!board.post(ConnId(2), WriterProgress::CaughtUp { episode: 1 }));
        let taken = board.take();
        assert_eq!(
            taken,
            [(ConnId(1), WriterProgress::Progressed), (ConnId(2), WriterProgress::CaughtUp { episode: 1 })]
        );
        assert!(board.take().is_empty());
        assert!(board.post(ConnId(1), WriterProgress::Progressed));
    }
}

#[cfg(all(test, culex_loom))]
mod loom_reports {
    use super::*;
    use crate::sync::Arc;

    /// Two connection tasks post while the broker task takes: every
    /// report arrives once, in each connection's order, and each batch
    /// the broker task takes was announced by exactly one wake.
    #[test]
    fn posts_while_taking() {
        loom::model(|| {
            let board = Arc::new(WriterReports::default());
            let posters: Vec<_> = (1..=2)
                .map(|c| {
                    let board = board.clone();
                    loom::thread::spawn(move || {
                        let a = board.post(ConnId(c), WriterProgress::Progressed);
                        let b = board.post(ConnId(c), WriterProgress::CaughtUp { episode: c });
                        u8::from(a) + u8::from(b)
                    })
                })
                .collect();
            let mut got = board.take();
            let wakes: u8 = posters.into_iter().map(|p| p.join().unwrap_or(0)).sum();
            let rest = board.take();
            let batches = u8::from(!got.is_empty()) + u8::from(!rest.is_empty());
            assert_eq!(wakes, batches, "one wake per batch taken");
            got.extend(rest);
            assert_eq!(got.len(), 4);
            for c in 1..=2 {
                let mine: Vec<_> = got.iter().filter(|(conn, _)| *conn == ConnId(c)).map(|(_, p)| *p).collect();
                assert_eq!(mine, [WriterProgress::Progressed, WriterProgress::CaughtUp { episode: c }]);
            }
        });
    }
}
