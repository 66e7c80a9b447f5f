//! Posts on their way to a broker task without ever making the poster
//! wait: writer reports from the connection tasks (see
//! [`culex_core::congestion`]), and what other shards tell it (see
//! [`culex_core::shard`]). A writer that is behind is exactly one the
//! broker needs to hear from, and the event queue may be full of the very
//! flood that put it behind; a shard must never wait for another, which
//! may be waiting for it. A poster posts here and, if the board was
//! empty, wakes the broker task ([`Event::WriterReports`](crate::Event::WriterReports),
//! [`Event::ShardMail`](crate::Event::ShardMail)): a wake-up it may skip
//! when the queue is full, the broker task being busy then and taking the
//! board at its next turn.

use culex_core::ConnId;
use culex_core::congestion::WriterProgress;
use culex_core::shard::{ShardId, ShardMessage};

use crate::sync::{Mutex, MutexGuard};

/// What was posted and not yet taken, in order.
#[derive(Debug)]
pub struct Board<T> {
    pending: Mutex<Pending<T>>,
}

#[derive(Debug)]
struct Pending<T> {
    items: Vec<T>,
    /// A post asked for a wake-up since the last [`Board::take`].
    woken: bool,
}

impl<T> Default for Board<T> {
    fn default() -> Self {
        Self { pending: Mutex::new(Pending { items: Vec::new(), woken: false }) }
    }
}

impl<T> Board<T> {
    /// Posts `item`; whether the broker task is to be woken (the first
    /// post since it last took the board before waiting).
    pub fn post(&self, item: T) -> bool {
        let mut pending = self.lock();
        pending.items.push(item);
        !std::mem::replace(&mut pending.woken, true)
    }

    /// Takes everything posted so far, before waiting: the next post
    /// wakes the broker task.
    pub fn take(&self) -> Vec<T> {
        let mut pending = self.lock();
        pending.woken = false;
        std::mem::take(&mut pending.items)
    }

    /// Takes everything posted so far in the middle of a turn, the broker
    /// task [`take`](Self::take)ing again before it waits: posts until
    /// then wake nobody.
    pub fn take_in_turn(&self) -> Vec<T> {
        std::mem::take(&mut self.lock().items)
    }

    fn lock(&self) -> MutexGuard<'_, Pending<T>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Writers' progress, by connection.
pub type WriterReports = Board<(ConnId, WriterProgress)>;

/// What other shards tell a shard, with who told it.
pub type ShardMail = Board<(ShardId, ShardMessage)>;

#[cfg(all(test, not(culex_loom)))]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_post_after_a_take_asks_for_a_wake() {
        let board = WriterReports::default();
        assert!(board.post((ConnId(1), WriterProgress::Progressed)));
        assert!(!board.post((ConnId(2), WriterProgress::CaughtUp { episode: 1 })));
        let taken = board.take();
        assert_eq!(
            taken,
            [(ConnId(1), WriterProgress::Progressed), (ConnId(2), WriterProgress::CaughtUp { episode: 1 })]
        );
        assert!(board.take().is_empty());
        assert!(board.post((ConnId(1), WriterProgress::Progressed)));
    }

    #[test]
    fn posts_after_a_take_in_turn_wake_nobody_until_the_next_take() {
        let board = WriterReports::default();
        assert!(board.post((ConnId(1), WriterProgress::Progressed)));
        assert_eq!(board.take_in_turn(), [(ConnId(1), WriterProgress::Progressed)]);
        assert!(!board.post((ConnId(2), WriterProgress::Progressed)));
        assert_eq!(board.take(), [(ConnId(2), WriterProgress::Progressed)]);
        assert!(board.post((ConnId(3), WriterProgress::Progressed)));
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
                        let a = board.post((ConnId(c), WriterProgress::Progressed));
                        let b = board.post((ConnId(c), WriterProgress::CaughtUp { episode: c }));
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

    /// A broker task that takes in the middle of its turn, then takes
    /// again and waits for a wake-up, as the driver does, gets every post
    /// once, in order: no post is left on the board unannounced (the
    /// wait would end only with the poster, one post short).
    #[test]
    fn a_take_in_turn_loses_no_wake() {
        loom::model(|| {
            let board = Arc::new(ShardMail::default());
            let (wake, woken) = loom::sync::mpsc::channel::<()>();
            let poster = {
                let board = board.clone();
                loom::thread::spawn(move || {
                    for n in 0..2 {
                        let message = ShardMessage::Release(ConnId(n));
                        if board.post((ShardId(1), message)) {
                            let _ = wake.send(());
                        }
                    }
                })
            };
            let mut got = board.take_in_turn();
            loop {
                got.extend(board.take());
                if got.len() == 2 {
                    break;
                }
                if woken.recv().is_err() {
                    break;
                }
                got.extend(board.take_in_turn());
            }
            let _ = poster.join();
            let order: Vec<_> = got.into_iter().map(|(_, message)| message).collect();
            assert_eq!(order, [ShardMessage::Release(ConnId(0)), ShardMessage::Release(ConnId(1))]);
        });
    }
}
