//! The broker's side of flow control (see [`congestion`](crate::congestion)):
//! it applies the writer reports, queues or drops what a subscriber has
//! no room for, and pauses and resumes the publishers' reads.

use tracing::{info, warn};

use super::{Broker, Source};
use crate::action::Action;
use crate::congestion::{Overflow, WriterProgress};
use crate::session::{Outgoing, SessionKey};
use crate::shard::{ShardId, ShardMessage};
use crate::time::Now;
use crate::types::ConnId;

impl Broker {
    /// The runtime's report on `id`'s writer.
    pub(super) fn handle_writer(&mut self, now: Now, id: ConnId, progress: WriterProgress) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        conn.congestion().writer(now.instant, progress);
        conn.tidy_congestion();
        self.arm(id);
    }

    /// A QoS 0 copy for `id`, whose writer is behind, is dropped.
    pub(super) fn drop_behind(&mut self, id: ConnId, key: SessionKey) {
        self.counts.dropped.slow_reader += 1;
        let first = self.conns.get_mut(&id).is_some_and(|c| c.congestion().dropped_while_behind());
        if let (true, Some(session)) = (first, self.sessions.get(key)) {
            warn!("Outgoing messages are being dropped for client {}.", session.client_id);
        }
    }

    /// A QoS 1/2 copy for the connected session `key` (on `sub`) finds its
    /// window and queue full: queued anyway while its publisher is held,
    /// or dropped.
    pub(super) fn overflow(&mut self, now: Now, key: SessionKey, sub: ConnId, out: Outgoing, source: Source) {
        // A client publishing to itself cannot be slowed by holding it.
        let publisher = source.conn.filter(|&p| p != sub && (source.shard.is_some() || self.conns.contains_key(&p)));
        let Some(conn) = self.conns.get_mut(&sub) else { return };
        match conn.congestion().overflow(now.instant, publisher, source.shared) {
            Overflow::Drop => {
                conn.tidy_congestion();
                self.drop_copy(key);
            }
            Overflow::Queue => self.queue_over(key, out),
            Overflow::QueueAndPause(publisher) => {
                self.queue_over(key, out);
                self.hold(publisher, source.shard);
                self.arm(sub);
            }
        }
    }

    fn queue_over(&mut self, key: SessionKey, out: Outgoing) {
        if let Some(session) = self.sessions.get_mut(key) {
            session.enqueue_over(out);
            self.record_queued(key);
        }
    }

    /// One more subscriber holds `publisher`: its reads pause with the
    /// first. A publisher on another `shard` is held there.
    pub(super) fn hold(&mut self, publisher: ConnId, shard: Option<ShardId>) {
        if let Some(shard) = shard {
            self.held_elsewhere.entry(publisher).or_insert((shard, 0)).1 += 1;
            self.actions.push_back(Action::ToShard { to: shard, message: ShardMessage::Hold(publisher) });
            return;
        }
        let Some(conn) = self.conns.get_mut(&publisher) else { return };
        if conn.congestion().hold() {
            self.actions.push_back(Action::PauseReading { conn: publisher });
        }
    }

    /// A subscriber lets go of `publishers`: each resumes when no one holds
    /// it any more, with its keepalive counted afresh from now.
    pub(super) fn release(&mut self, now: Now, publishers: Vec<ConnId>) {
        for publisher in publishers {
            if let Some((shard, holds)) = self.held_elsewhere.get_mut(&publisher) {
                let shard = *shard;
                *holds -= 1;
                if *holds == 0 {
                    self.held_elsewhere.remove(&publisher);
                }
                self.actions.push_back(Action::ToShard { to: shard, message: ShardMessage::Release(publisher) });
                continue;
            }
            let Some(conn) = self.conns.get_mut(&publisher) else { continue };
            if conn.congestion().release() {
                conn.last_packet = now.instant;
                self.actions.push_back(Action::ResumeReading { conn: publisher });
            }
            conn.tidy_congestion();
            self.arm(publisher);
        }
    }

    /// The subscriber on `sub` (session `key`) acknowledged a copy: its
    /// hold lives on, and once its queue has drained to half, holding or
    /// dropping ends.
    pub(super) fn acknowledged(&mut self, now: Now, key: SessionKey, sub: ConnId) {
        let limits = self.limits;
        let drained = self.sessions.get(key).is_some_and(|s| s.is_drained(limits));
        let Some(conn) = self.conns.get_mut(&sub) else { return };
        let Some(congestion) = conn.congestion.as_mut() else { return };
        congestion.acked(now.instant);
        if drained {
            let publishers = congestion.drained();
            congestion.expire_bar(now.instant);
            conn.tidy_congestion();
            self.release(now, publishers);
        }
    }

    /// `sub`'s hold lasted too long: it stops holding, and its overflow is
    /// dropped from now on.
    pub(super) fn stop_holding(&mut self, now: Now, sub: ConnId) {
        let limit = self.config.slow_subscriber_timeout;
        let Some(conn) = self.conns.get_mut(&sub) else { return };
        let publishers = conn.congestion().stop_holding(now.instant, limit);
        if let Some(client) = self.client_of(sub) {
            info!(
                "Client {client} has acknowledged too little for {} s: it no longer holds back publishers.",
                limit.as_secs()
            );
        }
        self.release(now, publishers);
    }
}
