//! Flow control between fast publishers and slow subscribers: what a
//! connection costs when its client cannot keep up, and how that is
//! bounded without losing what was acknowledged.
//!
//! Two things are bounded per connection.
//!
//! **Bytes waiting to be written** (the runtime's writer backlog, which
//! the runtime reports as a [`WriterProgress`]). Past
//! [`max_unwritten_bytes`](crate::Config::max_unwritten_bytes) the
//! connection is *behind*: QoS 0 copies to it are dropped (counted, logged
//! once) until half the budget is written; a connection that stays behind
//! and writes nothing for
//! [`not_reading_timeout`](crate::Config::not_reading_timeout) does not
//! read and is closed. A slow reader stays connected and costs at most the
//! budget (plus its QoS 1/2 window).
//!
//! **QoS 1/2 copies beyond a connected subscriber's window and queue.**
//! They were acknowledged to their publisher, so they are not dropped:
//! they are queued anyway and the subscriber *holds* the publishers
//! feeding it ([`Action::PauseReading`](crate::Action::PauseReading): the
//! runtime stops reading their sockets, and TCP slows them to the
//! subscriber's pace). The holds are released
//! ([`Action::ResumeReading`](crate::Action::ResumeReading)) when its
//! queue drains to half. A held publisher is not timed out by its own
//! keepalive. The overflow per hold is what the publisher had already
//! sent when its reads stopped: bounded by the runtime's read-ahead.
//!
//! A hold is bounded in time by
//! [`slow_subscriber_timeout`](crate::Config::slow_subscriber_timeout): a
//! subscriber that acknowledges nothing for that long while full, or that
//! holds a publisher which also feeds other subscribers for that long,
//! stops holding and has its overflow dropped as Mosquitto drops it, until
//! its queue drains to half. After a hold of a shared publisher ended so,
//! it may not hold shared publishers again for nine times that long: a
//! slow subscriber slows the others down at most a tenth of the time.
//! Holds therefore always end, also when two clients publish to each
//! other and both read slowly.
//!
//! Copies that come from no connection that could be held (wills,
//! retained messages sent on SUBSCRIBE, `$SYS`, a client's own
//! publications to itself) are dropped when the queue is full, as in
//! Mosquitto; so are all copies for offline sessions
//! (`max_queued_messages`, `max_queued_bytes`).

use std::time::Duration;

use crate::time::Instant;
use crate::types::ConnId;

/// How much longer than a hold of shared publishers a subscriber must wait
/// before it may hold shared publishers again (see the module docs).
const SHARED_HOLD_COOLDOWN: u32 = 9;

/// Where a connection's writer stands, as its runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterProgress {
    /// More than the budget is waiting to be written. Reported once per
    /// episode, numbered so that a late [`CaughtUp`](Self::CaughtUp) of an
    /// earlier episode is recognised.
    Behind {
        /// The episode.
        episode: u64,
    },
    /// Bytes were written while behind.
    Progressed,
    /// At most half the budget is waiting: the episode is over.
    CaughtUp {
        /// The episode that ended.
        episode: u64,
    },
}

/// Whether `unwritten` bytes put a writer with `budget` behind; a budget
/// of 0 means none.
pub fn is_behind(unwritten: usize, budget: usize) -> bool {
    budget != 0 && unwritten > budget
}

/// Whether a writer that was behind has caught up with `unwritten` bytes
/// left.
pub fn has_caught_up(unwritten: usize, budget: usize) -> bool {
    unwritten <= budget / 2
}

/// A writer's backlog against its budget, for a runtime (or simulation)
/// that counts the bytes itself on one thread: the transitions to report.
#[derive(Debug, Clone, Default)]
pub struct WriterGauge {
    budget: usize,
    unwritten: usize,
    episode: u64,
    behind: bool,
}

impl WriterGauge {
    /// A gauge with `budget` bytes (0: never behind).
    pub fn new(budget: usize) -> Self {
        Self { budget, ..Self::default() }
    }

    /// Bytes waiting now.
    pub fn unwritten(&self) -> usize {
        self.unwritten
    }

    /// `len` more bytes are waiting: [`WriterProgress::Behind`] when they
    /// cross the budget.
    pub fn queued(&mut self, len: usize) -> Option<WriterProgress> {
        self.unwritten += len;
        if self.behind || !is_behind(self.unwritten, self.budget) {
            return None;
        }
        self.behind = true;
        self.episode += 1;
        Some(WriterProgress::Behind { episode: self.episode })
    }

    /// `len` bytes were written: progress while behind, or the end of the
    /// episode.
    pub fn written(&mut self, len: usize) -> Option<WriterProgress> {
        self.unwritten = self.unwritten.saturating_sub(len);
        if !self.behind || len == 0 {
            return None;
        }
        if has_caught_up(self.unwritten, self.budget) {
            self.behind = false;
            return Some(WriterProgress::CaughtUp { episode: self.episode });
        }
        Some(WriterProgress::Progressed)
    }
}

/// A connection's congestion, kept only while there is any.
#[derive(Debug, Default)]
pub(crate) struct Congestion {
    /// The writer's episode of being behind, if it is.
    behind: Option<Behind>,
    /// As a publisher: subscribers holding its reads. Paused while
    /// non-zero.
    held_by: u32,
    /// As a subscriber.
    pressure: Pressure,
    /// As a subscriber: when it may hold shared publishers again.
    shared_barred_until: Option<Instant>,
}

#[derive(Debug)]
struct Behind {
    episode: u64,
    progressed_at: Instant,
    dropped: u64,
}

/// What a connected subscriber does with QoS 1/2 copies its queue has no
/// room for.
#[derive(Debug, Default)]
enum Pressure {
    /// It has room.
    #[default]
    Flowing,
    /// It queues them anyway and holds their publishers.
    Holding(Hold),
    /// It drops them.
    Dropping,
}

#[derive(Debug)]
struct Hold {
    /// The connections held, each once.
    publishers: Vec<ConnId>,
    since: Instant,
    acked: Instant,
    /// One of them also feeds other sessions.
    shared: bool,
}

/// What to do with a QoS 1/2 copy a connected subscriber has no room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Queue it beyond the limit and pause this publisher's reads: it was
    /// not held by anyone before.
    QueueAndPause(ConnId),
    /// Queue it beyond the limit; its publisher is held already.
    Queue,
    /// Drop it.
    Drop,
}

/// What the timer found due for a connection's congestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CongestionDue {
    /// It is behind and wrote nothing for `not_reading_timeout`.
    NotReading,
    /// Its hold has lasted too long: stop holding, drop the overflow.
    StopHolding,
}

impl Congestion {
    /// Nothing to remember: the state can go.
    pub(crate) fn is_clear(&self) -> bool {
        self.behind.is_none()
            && self.held_by == 0
            && matches!(self.pressure, Pressure::Flowing)
            && self.shared_barred_until.is_none()
    }

    /// Whether its reads are paused.
    pub(crate) fn is_held(&self) -> bool {
        self.held_by > 0
    }

    /// Whether QoS 0 copies to it are dropped.
    pub(crate) fn is_behind(&self) -> bool {
        self.behind.is_some()
    }

    /// The writer's report.
    pub(crate) fn writer(&mut self, now: Instant, progress: WriterProgress) {
        match (progress, self.behind.as_mut()) {
            (WriterProgress::Behind { episode }, _) => {
                self.behind = Some(Behind { episode, progressed_at: now, dropped: 0 });
            }
            (WriterProgress::Progressed, Some(behind)) => behind.progressed_at = now,
            (WriterProgress::CaughtUp { episode }, Some(behind)) if behind.episode == episode => self.behind = None,
            // A late report of an episode already over.
            _ => {}
        }
    }

    /// A QoS 0 copy dropped while behind; whether it is the episode's
    /// first (to log once).
    pub(crate) fn dropped_while_behind(&mut self) -> bool {
        self.behind.as_mut().is_some_and(|behind| {
            behind.dropped += 1;
            behind.dropped == 1
        })
    }

    /// A QoS 1/2 copy from `publisher` (the connection it came from, if it
    /// may be held) has no room in this subscriber's queue; `shared`: it
    /// goes to other sessions too.
    pub(crate) fn overflow(&mut self, now: Instant, publisher: Option<ConnId>, shared: bool) -> Overflow {
        let Some(publisher) = publisher else { return Overflow::Drop };
        if shared && self.shared_barred_until.is_some_and(|until| now < until) {
            self.pressure = Pressure::Dropping;
            return Overflow::Drop;
        }
        match &mut self.pressure {
            Pressure::Dropping => Overflow::Drop,
            Pressure::Holding(hold) => {
                hold.shared |= shared;
                if hold.publishers.contains(&publisher) {
                    Overflow::Queue
                } else {
                    hold.publishers.push(publisher);
                    Overflow::QueueAndPause(publisher)
                }
            }
            Pressure::Flowing => {
                let hold = Hold { publishers: vec![publisher], since: now, acked: now, shared };
                self.pressure = Pressure::Holding(hold);
                Overflow::QueueAndPause(publisher)
            }
        }
    }

    /// The subscriber acknowledged a copy.
    pub(crate) fn acked(&mut self, now: Instant) {
        if let Pressure::Holding(hold) = &mut self.pressure {
            hold.acked = now;
        }
    }

    /// Its queue drained to half: holding or dropping ends. The publishers
    /// it held, to release.
    pub(crate) fn drained(&mut self) -> Vec<ConnId> {
        match std::mem::take(&mut self.pressure) {
            Pressure::Holding(hold) => hold.publishers,
            Pressure::Flowing | Pressure::Dropping => Vec::new(),
        }
    }

    /// Its hold timed out: from now on it drops. The publishers it held,
    /// to release.
    pub(crate) fn stop_holding(&mut self, now: Instant, limit: Duration) -> Vec<ConnId> {
        match std::mem::replace(&mut self.pressure, Pressure::Dropping) {
            Pressure::Holding(hold) => {
                if hold.shared {
                    self.shared_barred_until = Some(now + limit * SHARED_HOLD_COOLDOWN);
                }
                hold.publishers
            }
            Pressure::Flowing | Pressure::Dropping => Vec::new(),
        }
    }

    /// Its connection ends: the publishers it held, to release.
    pub(crate) fn release_all(&mut self) -> Vec<ConnId> {
        self.drained()
    }

    /// One more subscriber holds this publisher; whether it was free.
    pub(crate) fn hold(&mut self) -> bool {
        self.held_by += 1;
        self.held_by == 1
    }

    /// One subscriber less holds it; whether it is free now.
    pub(crate) fn release(&mut self) -> bool {
        self.held_by = self.held_by.saturating_sub(1);
        self.held_by == 0
    }

    /// The earliest moment something is due, and what.
    pub(crate) fn deadline(&self, limit: Duration, not_reading: Duration) -> Option<(Instant, CongestionDue)> {
        let hold = match &self.pressure {
            Pressure::Holding(hold) => {
                let from = if hold.shared { hold.since } else { hold.acked };
                Some((from + limit, CongestionDue::StopHolding))
            }
            Pressure::Flowing | Pressure::Dropping => None,
        };
        let reading = self.behind.as_ref().map(|b| (b.progressed_at + not_reading, CongestionDue::NotReading));
        match (hold, reading) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Forgets a bar on shared holds that has passed.
    pub(crate) fn expire_bar(&mut self, now: Instant) {
        if self.shared_barred_until.is_some_and(|until| until <= now) {
            self.shared_barred_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(secs)
    }

    const LIMIT: Duration = Duration::from_secs(5);
    const NOT_READING: Duration = Duration::from_secs(30);

    #[test]
    fn gauge_reports_one_behind_per_episode_then_progress_then_caught_up() {
        let mut gauge = WriterGauge::new(100);
        assert_eq!(gauge.queued(100), None);
        assert_eq!(gauge.queued(1), Some(WriterProgress::Behind { episode: 1 }));
        assert_eq!(gauge.queued(50), None);
        assert_eq!(gauge.written(60), Some(WriterProgress::Progressed));
        assert_eq!(gauge.written(41), Some(WriterProgress::CaughtUp { episode: 1 }));
        assert_eq!(gauge.written(50), None);
        assert_eq!(gauge.queued(200), Some(WriterProgress::Behind { episode: 2 }));
        // A budget of 0 means none.
        assert_eq!(WriterGauge::new(0).queued(usize::MAX / 2), None);
    }

    #[test]
    fn a_late_caught_up_of_an_earlier_episode_is_ignored() {
        let mut c = Congestion::default();
        c.writer(at(0), WriterProgress::Behind { episode: 2 });
        c.writer(at(1), WriterProgress::CaughtUp { episode: 1 });
        assert!(c.is_behind());
        c.writer(at(2), WriterProgress::CaughtUp { episode: 2 });
        assert!(!c.is_behind() && c.is_clear());
    }

    #[test]
    fn not_reading_is_due_after_the_timeout_without_progress() {
        let mut c = Congestion::default();
        c.writer(at(0), WriterProgress::Behind { episode: 1 });
        assert_eq!(c.deadline(LIMIT, NOT_READING), Some((at(30), CongestionDue::NotReading)));
        c.writer(at(20), WriterProgress::Progressed);
        assert_eq!(c.deadline(LIMIT, NOT_READING), Some((at(50), CongestionDue::NotReading)));
    }

    #[test]
    fn a_hold_lasts_while_acks_come_unless_its_publisher_is_shared() {
        let (p, q) = (ConnId(1), ConnId(2));
        let mut c = Congestion::default();
        assert_eq!(c.overflow(at(0), Some(p), false), Overflow::QueueAndPause(p));
        assert_eq!(c.overflow(at(1), Some(p), false), Overflow::Queue);
        c.acked(at(4));
        assert_eq!(c.deadline(LIMIT, NOT_READING), Some((at(9), CongestionDue::StopHolding)));
        // A second publisher, feeding others too: the hold ends 5 s after it began.
        assert_eq!(c.overflow(at(6), Some(q), true), Overflow::QueueAndPause(q));
        c.acked(at(8));
        assert_eq!(c.deadline(LIMIT, NOT_READING), Some((at(5), CongestionDue::StopHolding)));
        assert_eq!(c.stop_holding(at(9), LIMIT), vec![p, q]);
        assert_eq!(c.overflow(at(10), Some(p), false), Overflow::Drop);
        assert!(c.drained().is_empty());
        // Barred from holding shared publishers for 45 s.
        assert_eq!(c.overflow(at(20), Some(p), true), Overflow::Drop);
        assert!(c.drained().is_empty());
        assert_eq!(c.overflow(at(21), Some(p), false), Overflow::QueueAndPause(p));
        assert_eq!(c.drained(), vec![p]);
        c.expire_bar(at(54));
        assert!(c.is_clear());
    }

    #[test]
    fn copies_without_a_publisher_to_hold_are_dropped() {
        let mut c = Congestion::default();
        assert_eq!(c.overflow(at(0), None, false), Overflow::Drop);
        assert!(c.is_clear());
    }

    #[test]
    fn a_publisher_is_paused_while_any_subscriber_holds_it() {
        let mut c = Congestion::default();
        assert!(c.hold());
        assert!(!c.hold());
        assert!(c.is_held());
        assert!(!c.release());
        assert!(c.release());
        assert!(!c.is_held() && c.is_clear());
    }
}
