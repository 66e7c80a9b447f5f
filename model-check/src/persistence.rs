//! Commit-then-acknowledge across crashes.
//!
//! The real broker runs inside [`Simulation`] with persistence on and
//! manual commits: the store is durable up to the batches the model
//! commits, one at a time. A persistent publisher sends one message at
//! QoS 1 and one at QoS 2 to a topic a persistent subscriber holds at
//! QoS 2; neither acknowledges by itself. Any step may be followed by a
//! crash, either losing the batches not committed or committing them all
//! first without the broker hearing of it (the process dies between the
//! store's commit and its report).
//!
//! Properties, as the clients observe them:
//! - nothing acknowledged is lost: every message the publisher got a
//!   PUBACK or PUBREC for reaches the subscriber, if the broker crashes
//!   right then and everyone reconnects and finishes;
//! - nothing is delivered twice at QoS 2: the subscriber delivers a QoS 2
//!   PUBLISH on first receipt and keeps its packet id until PUBREL
//!   (method A of the spec, the stricter one for the broker); a QoS 2
//!   message it delivered never arrives again under an id it does not
//!   hold.
//!
//! What it leaves out:
//! - A state is the list of steps taken: each is replayed on a fresh
//!   simulation (the broker is not `Clone`), so equal states reached by
//!   different paths are explored again and the bound is a depth.
//! - Clients behave as the spec says ([MQTT-4.4.0-1]): on reconnection
//!   the publisher sends again its unacknowledged PUBLISHes (DUP set) and
//!   its PUBRELs; the subscriber keeps the ids it holds. Packets are
//!   whole and in order (TCP); the disk itself does not fail (its
//!   torn writes are the store's own crash tests').
//! - One broker, two clients, two messages, one subscription set up and
//!   committed before the model starts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use culex_core::codec::{Packet, Publish};
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{Config, ConnId, PacketId, QoS, TopicName};
use stateright::{Model, Property};

/// The bounds of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistenceModel {
    /// Most steps in one run.
    pub depth: usize,
    /// Most crashes in one run.
    pub crashes: usize,
}

/// One step of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The publisher sends its next message.
    Publish,
    /// The publisher sends PUBREL for a message it got PUBREC for.
    Release,
    /// The subscriber answers the oldest packet it has not answered.
    Answer,
    /// The oldest batch handed to the store becomes durable.
    Commit,
    /// The broker crashes; batches not committed are lost.
    Crash,
    /// The store commits what it has, then the broker crashes before
    /// hearing of it.
    CrashAfterCommit,
}

/// A run so far, and what it showed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    /// The steps taken.
    pub trace: Vec<Step>,
    /// The steps possible now.
    pub enabled: Vec<Step>,
    /// A QoS 2 message delivered twice, in the run itself.
    pub duplicate: Option<String>,
    /// Acknowledged messages lost if the broker crashed now.
    pub lost: Vec<String>,
    /// A QoS 2 message delivered twice in that recovery.
    pub duplicate_after_crash: Option<String>,
}

const TOPIC: &str = "t";
/// The publisher's messages: payload, QoS, packet id.
const MESSAGES: [(&str, QoS, u16); 2] = [("one", QoS::AtLeastOnce, 1), ("two", QoS::ExactlyOnce, 2)];

/// Where a publisher's message stands, as the publisher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// PUBLISH sent, no PUBACK or PUBREC yet.
    Published,
    /// PUBREC received; PUBREL not sent yet.
    Received,
    /// PUBREL sent, no PUBCOMP yet.
    Released,
    /// PUBACK or PUBCOMP received.
    Done,
}

/// The simulation and both clients' ends.
struct World {
    sim: Simulation,
    publisher: ConnId,
    subscriber: ConnId,
    /// By message index.
    sent: BTreeMap<usize, Sent>,
    acknowledged: BTreeSet<&'static str>,
    /// Packets the subscriber has not answered, oldest first.
    inbox: VecDeque<Packet>,
    /// QoS 2 ids the subscriber holds until PUBREL, with their payload.
    held: BTreeMap<PacketId, Bytes>,
    delivered: BTreeSet<Bytes>,
    duplicate: Option<String>,
    crashes: usize,
}

fn config() -> Config {
    Config { persistence: true, max_inflight_messages: 2, ..Config::default() }
}

fn client(id: &str) -> ClientOptions {
    ClientOptions::new(id).clean_session(false).auto_ack(false)
}

fn packet_id(n: u16) -> PacketId {
    PacketId::new(n).unwrap_or(PacketId::MIN)
}

impl World {
    /// A subscriber with its subscription stored, and a publisher.
    fn new() -> Self {
        let mut sim = Simulation::new(config());
        sim.manual_commits(true);
        let subscriber = sim.connect(client("sub"));
        sim.subscribe(subscriber, TOPIC, QoS::ExactlyOnce);
        let publisher = sim.connect(client("pub"));
        while sim.commit_one() {}
        sim.take_received(subscriber);
        sim.take_received(publisher);
        Self {
            sim,
            publisher,
            subscriber,
            sent: BTreeMap::new(),
            acknowledged: BTreeSet::new(),
            inbox: VecDeque::new(),
            held: BTreeMap::new(),
            delivered: BTreeSet::new(),
            duplicate: None,
            crashes: 0,
        }
    }

    fn publish(&mut self, index: usize, dup: bool) {
        let (payload, qos, id) = MESSAGES[index];
        let Ok(topic) = TopicName::new(TOPIC) else { return };
        let publish = Publish {
            dup,
            qos,
            retain: false,
            topic,
            packet_id: Some(packet_id(id)),
            payload: Bytes::from_static(payload.as_bytes()),
        };
        self.sim.send(self.publisher, &Packet::Publish(publish));
        self.sent.insert(index, Sent::Published);
    }

    fn release(&mut self, index: usize) {
        self.sim.send(self.publisher, &Packet::PubRel(packet_id(MESSAGES[index].2)));
        self.sent.insert(index, Sent::Released);
    }

    /// Hands what each client received to it.
    fn receive(&mut self) {
        for packet in self.sim.take_received(self.publisher) {
            let (id, next) = match packet {
                Packet::PubAck(id) | Packet::PubComp(id) => (id, Sent::Done),
                Packet::PubRec(id) => (id, Sent::Received),
                _ => continue,
            };
            let Some(index) = MESSAGES.iter().position(|m| packet_id(m.2) == id) else { continue };
            if next != Sent::Done || MESSAGES[index].1 == QoS::AtLeastOnce {
                self.acknowledged.insert(MESSAGES[index].0);
            }
            // A PUBREC repeated after PUBREL changes nothing.
            if !(next == Sent::Received && self.sent.get(&index) == Some(&Sent::Released)) {
                self.sent.insert(index, next);
            }
        }
        for packet in self.sim.take_received(self.subscriber) {
            match &packet {
                Packet::Publish(p) if p.qos == QoS::ExactlyOnce => {
                    let Some(id) = p.packet_id else { continue };
                    if !self.held.contains_key(&id) {
                        if self.delivered.contains(&p.payload) && self.duplicate.is_none() {
                            self.duplicate = Some(format!("{:?} again under id {id:?}", p.payload));
                        }
                        self.delivered.insert(p.payload.clone());
                        self.held.insert(id, p.payload.clone());
                    }
                }
                Packet::Publish(p) => {
                    self.delivered.insert(p.payload.clone());
                }
                Packet::PubRel(_) => {}
                _ => continue,
            }
            self.inbox.push_back(packet);
        }
    }

    fn answer(&mut self) {
        let Some(packet) = self.inbox.pop_front() else { return };
        let reply = match packet {
            Packet::Publish(Publish { qos: QoS::AtLeastOnce, packet_id: Some(id), .. }) => Packet::PubAck(id),
            Packet::Publish(Publish { qos: QoS::ExactlyOnce, packet_id: Some(id), .. }) => Packet::PubRec(id),
            Packet::PubRel(id) => {
                self.held.remove(&id);
                Packet::PubComp(id)
            }
            _ => return,
        };
        self.sim.send(self.subscriber, &reply);
    }

    /// Both clients reconnect and carry on where the spec says.
    fn reconnect(&mut self) {
        self.crashes += 1;
        self.inbox.clear();
        self.subscriber = self.sim.connect(client("sub"));
        self.publisher = self.sim.connect(client("pub"));
        let unfinished: Vec<(usize, Sent)> = self.sent.iter().map(|(&i, &s)| (i, s)).collect();
        for (index, sent) in unfinished {
            match sent {
                Sent::Published => self.publish(index, true),
                Sent::Received | Sent::Released => self.release(index),
                Sent::Done => {}
            }
        }
    }

    fn enabled(&self, model: &PersistenceModel, steps: usize) -> Vec<Step> {
        let mut enabled = Vec::new();
        if steps >= model.depth {
            return enabled;
        }
        if self.sent.len() < MESSAGES.len() {
            enabled.push(Step::Publish);
        }
        if self.sent.values().any(|&s| s == Sent::Received) {
            enabled.push(Step::Release);
        }
        if !self.inbox.is_empty() {
            enabled.push(Step::Answer);
        }
        if self.sim.pending_batches() > 0 {
            enabled.push(Step::Commit);
        }
        if self.crashes < model.crashes {
            enabled.push(Step::Crash);
            if self.sim.pending_batches() > 0 {
                enabled.push(Step::CrashAfterCommit);
            }
        }
        enabled
    }

    fn apply(&mut self, step: Step) {
        match step {
            Step::Publish => self.publish(self.sent.len(), false),
            Step::Release => {
                if let Some((&index, _)) = self.sent.iter().find(|(_, s)| **s == Sent::Received) {
                    self.release(index);
                }
            }
            Step::Answer => self.answer(),
            Step::Commit => {
                self.sim.commit_one();
            }
            Step::Crash => {
                self.sim.crash_and_restart();
                self.reconnect();
            }
            Step::CrashAfterCommit => {
                self.sim.crash_after_commit();
                self.reconnect();
            }
        }
        self.receive();
    }

    /// Commits, answers and releases until nothing moves.
    fn finish(&mut self) {
        for _ in 0..100 {
            let before = (self.sim.pending_batches(), self.inbox.len(), self.sent.clone());
            while self.sim.commit_one() {
                self.receive();
            }
            while !self.inbox.is_empty() {
                self.answer();
                self.receive();
            }
            while self.sent.values().any(|&s| s == Sent::Received) {
                self.apply(Step::Release);
            }
            if before == (self.sim.pending_batches(), self.inbox.len(), self.sent.clone())
                && self.sim.pending_batches() == 0
            {
                return;
            }
        }
    }
}

impl PersistenceModel {
    /// The transcript of `trace` followed by a crash and the recovery,
    /// for reading a counterexample.
    pub fn transcript(&self, trace: &[Step]) -> String {
        self.replay(trace.to_vec(), true).1
    }

    fn run(&self, trace: Vec<Step>) -> State {
        self.replay(trace, false).0
    }

    fn replay(&self, trace: Vec<Step>, record: bool) -> (State, String) {
        let mut world = World::new();
        if record {
            world.sim.record();
        }
        for &step in &trace {
            world.apply(step);
        }
        let enabled = world.enabled(self, trace.len());
        let duplicate = world.duplicate.clone();
        // The worst moment for a crash is any: crash now, then finish.
        if record {
            world.sim.broker_publishes("model/step", b"final crash", QoS::AtMostOnce, false);
        }
        world.sim.crash_and_restart();
        world.reconnect();
        world.receive();
        world.finish();
        let lost = world
            .acknowledged
            .iter()
            .filter(|p| !world.delivered.contains(p.as_bytes()))
            .map(|p| (*p).to_owned())
            .collect();
        let transcript = world.sim.transcript().to_owned();
        (State { trace, enabled, duplicate, lost, duplicate_after_crash: world.duplicate }, transcript)
    }
}

impl Model for PersistenceModel {
    type State = State;
    type Action = Step;

    fn init_states(&self) -> Vec<State> {
        vec![self.run(Vec::new())]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Step>) {
        actions.extend_from_slice(&state.enabled);
    }

    fn next_state(&self, last: &State, step: Step) -> Option<State> {
        let mut trace = last.trace.clone();
        trace.push(step);
        Some(self.run(trace))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("nothing acknowledged is lost in a crash", |_, state: &State| state.lost.is_empty()),
            Property::always("no QoS 2 message is delivered twice", |_, state: &State| {
                state.duplicate.is_none() && state.duplicate_after_crash.is_none()
            }),
            Property::sometimes("both messages acknowledged and delivered", |_, state: &State| {
                state.trace.iter().filter(|s| **s == Step::Publish).count() == 2 && state.lost.is_empty()
            }),
        ]
    }
}
