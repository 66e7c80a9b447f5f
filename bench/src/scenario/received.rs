//! What a subscriber counts of the messages it receives, and the answers
//! it owes the broker for them: shared by the subscribers that read at
//! full speed and the slow ones.

use std::ops::Range;

use culex_core::QoS;
use culex_core::codec::{Packet, Publish};
use tokio::time::Instant;

use super::pubsub::Plan;
use crate::mqtt::Client;
use crate::payload;
use crate::stats::{Latencies, SeqTracker};

/// One subscriber's count of its arrivals.
#[derive(Debug)]
pub(crate) struct Received {
    /// Per publisher: the sequence numbers that arrived (none expected
    /// from a publisher not heard).
    pub(crate) trackers: Vec<SeqTracker>,
    /// The publishers this subscriber hears, by index.
    pub(crate) heard: Range<usize>,
    /// Latency of each first arrival, when the plan asks for it.
    pub(crate) latencies: Latencies,
    record_latency: bool,
    /// First arrivals, all publishers together.
    pub(crate) distinct: u64,
    /// When the last message arrived.
    pub(crate) last_arrival: Option<Instant>,
    /// Payloads that are not this run's.
    pub(crate) foreign: u64,
    /// PUBLISH packets with another QoS than subscribed.
    pub(crate) wrong_qos: u64,
    qos: QoS,
}

impl Received {
    /// Nothing received yet by subscriber `subscriber`, for the messages
    /// `plan` publishes.
    pub(crate) fn new(plan: &Plan, subscriber: usize) -> Self {
        let heard = plan.heard(subscriber);
        let capacity = |p| if heard.contains(&p) { plan.share(p) } else { 0 };
        Self {
            trackers: (0..plan.publishers).map(|p| SeqTracker::new(capacity(p))).collect(),
            heard,
            latencies: Latencies::default(),
            record_latency: plan.latency,
            distinct: 0,
            last_arrival: None,
            foreign: 0,
            wrong_qos: 0,
            qos: plan.qos,
        }
    }

    /// The sum of `per_publisher` (a count by publisher index) over the
    /// publishers this subscriber hears.
    pub(crate) fn heard_sum(&self, per_publisher: &[u64]) -> u64 {
        per_publisher.get(self.heard.clone()).unwrap_or_default().iter().sum()
    }

    /// Handles one packet from the broker, read at `arrived`
    /// (`arrived_ns` since the run's epoch): a PUBLISH is counted and its
    /// acknowledgement queued on `client`, a PUBREL answered. Any other
    /// packet is handed back.
    pub(crate) fn handle(
        &mut self,
        client: &mut Client,
        packet: Packet,
        arrived: Instant,
        arrived_ns: u64,
    ) -> Option<Packet> {
        match packet {
            Packet::Publish(publish) => {
                acknowledge(client, &publish);
                self.record(&publish, arrived, arrived_ns);
                None
            }
            Packet::PubRel(id) => {
                client.queue(&Packet::PubComp(id));
                None
            }
            other => Some(other),
        }
    }

    fn record(&mut self, publish: &Publish, arrived: Instant, arrived_ns: u64) {
        if publish.qos != self.qos {
            self.wrong_qos += 1;
        }
        let Some(stamp) = payload::read(&publish.payload) else {
            self.foreign += 1;
            return;
        };
        let Some(tracker) = self.trackers.get_mut(stamp.publisher as usize) else {
            self.foreign += 1;
            return;
        };
        let before = tracker.distinct();
        tracker.record(stamp.seq);
        if tracker.distinct() > before {
            self.distinct += 1;
            if self.record_latency {
                self.latencies.record(arrived_ns.saturating_sub(stamp.sent_ns));
            }
        }
        self.last_arrival = Some(arrived);
    }
}

/// Queues the PUBACK or PUBREC a QoS 1 or 2 PUBLISH asks for.
fn acknowledge(client: &mut Client, publish: &Publish) {
    match publish.packet_id {
        Some(id) if publish.qos == QoS::AtLeastOnce => client.queue(&Packet::PubAck(id)),
        Some(id) if publish.qos == QoS::ExactlyOnce => client.queue(&Packet::PubRec(id)),
        _ => {}
    }
}
