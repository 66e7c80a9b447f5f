//! What a subscriber counts of the messages it receives, and the answers
//! it owes the broker for them: shared by the subscribers that read at
//! full speed and the slow ones.

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
    /// Per publisher: the sequence numbers that arrived.
    pub(crate) trackers: Vec<SeqTracker>,
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
    /// Nothing received yet, for the messages `plan` publishes.
    pub(crate) fn new(plan: &Plan) -> Self {
        Self {
            trackers: (0..plan.publishers).map(|p| SeqTracker::new(plan.share(p))).collect(),
            latencies: Latencies::default(),
            record_latency: plan.latency,
            distinct: 0,
            last_arrival: None,
            foreign: 0,
            wrong_qos: 0,
            qos: plan.qos,
        }
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
