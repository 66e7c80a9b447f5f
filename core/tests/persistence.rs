//! Persistence as the core sees it: the batches it emits rebuild its
//! durable state, a restart restores it, and nothing is acknowledged
//! before the store has it.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use culex_core::codec::{Packet, Publish};
use culex_core::persistence::StoredState;
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{Broker, Config, ConnId, PacketId, QoS, TopicName};
use quickcheck::{Arbitrary, Gen, QuickCheck};

fn config() -> Config {
    Config { persistence: true, max_queued_messages: 8, max_inflight_messages: 2, ..Config::default() }
}

/// `state` without what a restore turns into traffic (wills, clean
/// sessions' unreleased messages) or stamps afresh (when a session went
/// offline, the batch count).
fn comparable(mut state: StoredState) -> StoredState {
    state.last_batch = 0;
    for session in state.sessions.values_mut() {
        session.offline_since = None;
    }
    state
}

#[test]
fn a_persistent_session_and_a_retained_message_survive_a_restart() {
    let mut sim = Simulation::new(config());
    sim.record();
    let sub = sim.connect(ClientOptions::new("sub").clean_session(false));
    sim.subscribe(sub, "t/#", QoS::ExactlyOnce);
    sim.disconnect(sub);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "t/retained", b"kept", QoS::AtLeastOnce, true);
    sim.publish(publ, "t/queued", b"waiting", QoS::ExactlyOnce, false);
    sim.restart();
    let sub = sim.connect(ClientOptions::new("sub").clean_session(false));
    let got = common::payloads(&mut sim, sub);
    assert_eq!(got, ["kept", "waiting"]);
    let fresh = sim.connect(ClientOptions::new("other"));
    sim.subscribe(fresh, "t/#", QoS::AtMostOnce);
    assert_eq!(common::payloads(&mut sim, fresh), ["kept"]);
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn acknowledgements_wait_for_the_store() {
    let mut sim = Simulation::new(config());
    sim.manual_commits(true);
    sim.record();
    let sub = sim.connect(ClientOptions::new("sub").clean_session(false));
    assert!(sim.take_received(sub).is_empty(), "CONNACK of a stored session before it was stored");
    sim.commit();
    assert!(matches!(sim.take_received(sub)[..], [Packet::ConnAck(_)]));
    sim.subscribe(sub, "t", QoS::ExactlyOnce);
    assert!(sim.take_received(sub).is_empty(), "SUBACK before the subscription was stored");
    sim.commit();
    assert!(matches!(sim.take_received(sub)[..], [Packet::SubAck(_)]));
    let clean = sim.connect(ClientOptions::new("clean"));
    assert!(matches!(sim.take_received(clean)[..], [Packet::ConnAck(_)]), "clean sessions never wait");
    sim.subscribe(clean, "other", QoS::AtLeastOnce);
    sim.publish(clean, "other", b"clean only", QoS::AtLeastOnce, false);
    let got = sim.take_received(clean);
    assert!(got.iter().any(|p| matches!(p, Packet::PubAck(_))), "clean-only traffic waited: {got:?}");
    sim.publish(clean, "t", b"stored", QoS::AtLeastOnce, false);
    assert!(!sim.take_received(clean).iter().any(|p| matches!(p, Packet::PubAck(_))), "PUBACK before durable");
    // A QoS 1 copy may leave first: after a crash it is at worst resent.
    assert_eq!(common::payloads(&mut sim, sub), ["stored"]);
    sim.commit();
    assert!(sim.take_received(clean).iter().any(|p| matches!(p, Packet::PubAck(_))));
    sim.publish(clean, "t", b"once", QoS::ExactlyOnce, false);
    assert!(!sim.take_received(clean).iter().any(|p| matches!(p, Packet::PubRec(_))), "PUBREC before durable");
    // PUBREC, then PUBREL: the message is routed.
    sim.commit();
    assert!(sim.take_received(sub).is_empty(), "a QoS 2 delivery before its packet id was stored");
    sim.commit();
    assert_eq!(common::payloads(&mut sim, sub), ["once"]);
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn wills_of_clients_connected_at_a_crash_are_published_once_at_restart() {
    let mut sim = Simulation::new(config());
    let watcher = sim.connect(ClientOptions::new("watcher").clean_session(false));
    sim.subscribe(watcher, "wills/#", QoS::AtLeastOnce);
    let will = culex_core::codec::LastWill {
        topic: TopicName::new("wills/dev").expect("topic"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
    };
    sim.connect(ClientOptions::new("dev").will(will));
    sim.crash_and_restart();
    let watcher = sim.connect(ClientOptions::new("watcher").clean_session(false));
    assert_eq!(common::payloads(&mut sim, watcher), ["gone"]);
    sim.crash_and_restart();
    let watcher = sim.connect(ClientOptions::new("watcher").clean_session(false));
    assert!(common::payloads(&mut sim, watcher).is_empty(), "a will published twice");
}

/// One step of a random workload.
#[derive(Debug, Clone)]
enum Step {
    Connect { client: u8, clean: bool },
    Disconnect { client: u8 },
    Drop { client: u8 },
    Subscribe { client: u8, filter: u8, qos: u8 },
    Unsubscribe { client: u8, filter: u8 },
    Publish { client: u8, topic: u8, qos: u8, retain: bool, empty: bool },
    Reading { client: u8, on: bool },
    Commit,
    Crash,
    Advance,
}

const CLIENTS: u8 = 4;
const TOPICS: [&str; 3] = ["a", "a/b", "c"];
const FILTERS: [&str; 4] = ["a", "a/+", "#", "c"];

impl Arbitrary for Step {
    fn arbitrary(g: &mut Gen) -> Self {
        let client = u8::arbitrary(g) % CLIENTS;
        match u8::arbitrary(g) % 20 {
            0..=2 => Self::Connect { client, clean: bool::arbitrary(g) },
            3 => Self::Disconnect { client },
            4 => Self::Drop { client },
            5..=6 => Self::Subscribe { client, filter: u8::arbitrary(g), qos: u8::arbitrary(g) % 3 },
            7 => Self::Unsubscribe { client, filter: u8::arbitrary(g) },
            8..=13 => Self::Publish {
                client,
                topic: u8::arbitrary(g),
                qos: u8::arbitrary(g) % 3,
                retain: u8::arbitrary(g) % 4 == 0,
                empty: u8::arbitrary(g) % 10 == 0,
            },
            14 => Self::Reading { client, on: bool::arbitrary(g) },
            15..=16 => Self::Commit,
            17 => Self::Crash,
            _ => Self::Advance,
        }
    }
}

/// A simulation under a random workload, with what the clients were
/// promised.
struct Run {
    sim: Simulation,
    /// The number of shards at the start, then after each crash in turn.
    shards: Vec<u16>,
    crashes: usize,
    conns: [Option<ConnId>; CLIENTS as usize],
    counter: u32,
    /// QoS 1/2 messages in flight from their publishers that the watcher's
    /// session was subscribed to when they were published, by publisher
    /// and packet id.
    outstanding: HashMap<(u8, u16), String>,
    /// Those acknowledged (PUBACK, PUBREC) to their publishers.
    promised: BTreeSet<String>,
    /// Payloads the watcher ever received.
    seen: BTreeSet<String>,
    /// QoS 2 messages the watcher took as new, by payload: as a real
    /// client, it takes a PUBLISH under a packet id it holds (PUBREC sent,
    /// no PUBREL yet) for the resend it is. Its ids outlive the broker;
    /// retained messages, sent again at each SUBSCRIBE, are not counted.
    taken_once: BTreeMap<String, u32>,
    watcher_ids: BTreeSet<u16>,
    /// QoS 2 messages a publisher holds as received (PUBREC seen) and not
    /// yet complete: as a real client, it sends PUBREL for them again
    /// when it reconnects, to its stored session.
    releasing: BTreeSet<(u8, u16)>,
    /// Each client's last packet id, kept across its connections: a
    /// client does not reuse an id its session may still hold.
    last_id: [u16; CLIENTS as usize],
}

impl Run {
    fn new(manual: bool) -> Self {
        Self::sharded(manual, &[1])
    }

    /// A run with `shards[0]` shards, restarted after its `n`th crash with
    /// `shards[n % shards.len()]`.
    fn sharded(manual: bool, shards: &[u16]) -> Self {
        // No queue limit: an offline session drops past it, as Mosquitto's.
        let mut sim = Simulation::with_shards(Config { max_queued_messages: 0, ..config() }, shards[0]);
        sim.manual_commits(manual);
        Self {
            shards: shards.to_vec(),
            crashes: 0,
            sim,
            conns: [None; CLIENTS as usize],
            counter: 0,
            outstanding: HashMap::new(),
            promised: BTreeSet::new(),
            seen: BTreeSet::new(),
            taken_once: BTreeMap::new(),
            watcher_ids: BTreeSet::new(),
            releasing: BTreeSet::new(),
            last_id: [0; CLIENTS as usize],
        }
    }

    fn client_id(client: u8) -> String {
        format!("c{client}")
    }

    /// Whether the watcher's session now routes everything to itself.
    fn watching(&self) -> bool {
        let session = self.sim.brokers().iter().find_map(|b| b.session("c0"));
        session.is_some_and(|s| s.subscriptions.iter().any(|(f, _)| f == "#"))
    }

    /// Looks at what `client` received: the watcher's messages, and the
    /// acknowledgements of what was published for it.
    fn collect(&mut self, client: u8) {
        let Some(conn) = self.conns[usize::from(client)] else { return };
        for packet in self.sim.take_received(conn) {
            match packet {
                Packet::Publish(Publish { payload, qos, packet_id, retain, .. }) if client == 0 => {
                    let payload = String::from_utf8_lossy(&payload).into_owned();
                    // A retained message comes again with each SUBSCRIBE;
                    // empty payloads (deletions) are not told apart.
                    if let (QoS::ExactlyOnce, Some(id), false, false) = (qos, packet_id, retain, payload.is_empty())
                        && self.watcher_ids.insert(id.get())
                    {
                        *self.taken_once.entry(payload.clone()).or_default() += 1;
                    }
                    self.seen.insert(payload);
                }
                Packet::PubRel(id) if client == 0 => {
                    self.watcher_ids.remove(&id.get());
                }
                Packet::PubAck(id) | Packet::PubRec(id) => {
                    if let Some(payload) = self.outstanding.remove(&(client, id.get())) {
                        self.promised.insert(payload);
                    }
                    if matches!(packet, Packet::PubRec(_)) {
                        self.releasing.insert((client, id.get()));
                    }
                }
                Packet::PubComp(id) => {
                    self.releasing.remove(&(client, id.get()));
                }
                _ => {}
            }
        }
    }

    fn collect_all(&mut self) {
        for client in 0..CLIENTS {
            self.collect(client);
        }
    }

    /// Ends `client`'s connection, by DISCONNECT or by the network.
    fn end(&mut self, client: u8, disconnect: bool) {
        self.collect(client);
        let Some(conn) = self.conns[usize::from(client)].take() else { return };
        if disconnect {
            self.sim.disconnect(conn);
        } else {
            self.sim.drop_connection(conn);
        }
    }

    /// Connects `client` afresh, resending the PUBRELs it owes.
    fn connect(&mut self, client: u8, clean: bool) {
        self.end(client, false);
        let owed: Vec<u16> = self.releasing.iter().filter(|(c, _)| *c == client).map(|(_, id)| *id).collect();
        let clean = clean && client != 0 && owed.is_empty();
        let conn = self.sim.connect(ClientOptions::new(&Self::client_id(client)).clean_session(clean));
        self.conns[usize::from(client)] = Some(conn);
        for id in owed.into_iter().filter_map(PacketId::new) {
            self.sim.send(conn, &Packet::PubRel(id));
        }
        if client == 0 {
            self.sim.subscribe(conn, "#", QoS::ExactlyOnce);
        }
        self.collect(client);
    }

    fn step(&mut self, step: &Step) {
        // Client 0 is the watcher: a persistent session subscribed to `#`
        // at QoS 2 that always reads and acknowledges.
        match *step {
            Step::Connect { client, clean } => self.connect(client, clean),
            Step::Disconnect { client } => self.end(client, true),
            Step::Drop { client } => self.end(client, false),
            Step::Subscribe { client, filter, qos } if client != 0 => {
                if let Some(conn) = self.conns[usize::from(client)] {
                    let qos = QoS::from_bits(qos).unwrap_or(QoS::AtMostOnce);
                    self.sim.subscribe(conn, FILTERS[usize::from(filter) % FILTERS.len()], qos);
                }
            }
            Step::Unsubscribe { client, filter } if client != 0 => {
                if let Some(conn) = self.conns[usize::from(client)] {
                    self.sim.unsubscribe(conn, FILTERS[usize::from(filter) % FILTERS.len()]);
                }
            }
            Step::Publish { client, topic, qos, retain, empty } => {
                if let Some(conn) = self.conns[usize::from(client)] {
                    self.counter += 1;
                    let payload = if empty && retain { String::new() } else { format!("m{}", self.counter) };
                    let qos = QoS::from_bits(qos).unwrap_or(QoS::AtMostOnce);
                    let topic = TOPICS[usize::from(topic) % TOPICS.len()];
                    let id = &mut self.last_id[usize::from(client)];
                    *id += 1;
                    let packet_id = PacketId::new(*id).filter(|_| qos != QoS::AtMostOnce);
                    if let (Some(id), false, true) = (packet_id, payload.is_empty(), self.watching()) {
                        self.outstanding.insert((client, id.get()), payload.clone());
                    }
                    let topic = TopicName::new(topic).expect("valid topic");
                    let payload = Bytes::from(payload);
                    self.sim
                        .send(conn, &Packet::Publish(Publish { dup: false, qos, retain, topic, packet_id, payload }));
                }
            }
            Step::Reading { client, on } if client != 0 => {
                if let Some(conn) = self.conns[usize::from(client)] {
                    self.sim.set_reading(conn, on);
                }
            }
            Step::Commit => self.sim.commit(),
            Step::Crash => {
                self.collect_all();
                self.crashes += 1;
                self.sim.crash_and_restart_as(self.shards[self.crashes % self.shards.len()]);
                self.conns = [None; CLIENTS as usize];
                self.outstanding.clear();
            }
            Step::Advance => self.sim.advance(Duration::from_secs(1)),
            Step::Subscribe { .. } | Step::Unsubscribe { .. } | Step::Reading { .. } => {}
        }
        self.collect_all();
    }
}

/// With every batch committed as it comes, what the store holds is what
/// the broker says it should hold, after every step; and a broker
/// restored from it holds the same.
#[test]
fn replaying_the_batches_gives_the_brokers_durable_state() {
    fn prop(steps: Vec<Step>) -> bool {
        let mut run = Run::new(false);
        for step in steps.iter().filter(|s| !matches!(s, Step::Crash)) {
            run.step(step);
            let stored = comparable(run.sim.stored().clone());
            let image = comparable(run.sim.broker().stored_image());
            if stored != image {
                eprintln!("after {step:?}:\nstored {stored:#?}\nbroker {image:#?}");
                return false;
            }
        }
        let state = run.sim.stored().clone();
        if !state.wills.is_empty() || !state.unreleased.is_empty() {
            return true;
        }
        let mut restored = Broker::new(config());
        restored.restore(run.sim.now(), state.clone());
        let image = comparable(restored.stored_image());
        let expected = comparable(state);
        if image != expected {
            eprintln!("restored {image:#?}\nexpected {expected:#?}");
        }
        image == expected
    }
    QuickCheck::new().tests(300).quickcheck(prop as fn(Vec<Step>) -> bool);
}

/// Runs `steps` with `shards` shards (see [`Run::sharded`]), then lets the
/// publishers complete what they owe and the watcher drain its session:
/// whether every QoS 1/2 message acknowledged to its publisher while the
/// watcher's stored session subscribed to `#` reached the watcher, and
/// each QoS 2 one was taken once.
fn delivers_what_was_acknowledged(shards: &[u16], steps: &[Step]) -> bool {
    let mut run = Run::sharded(true, shards);
    for step in steps {
        run.step(step);
    }
    run.sim.commit();
    for client in (0..CLIENTS).rev() {
        run.connect(client, false);
        run.sim.commit();
    }
    for _ in 0..50 {
        run.sim.commit();
        run.collect_all();
    }
    let lost: Vec<_> = run.promised.difference(&run.seen).collect();
    let twice: Vec<_> = run.taken_once.iter().filter(|(_, n)| **n > 1).collect();
    if !lost.is_empty() || !twice.is_empty() {
        eprintln!("lost {lost:?}, QoS 2 taken twice {twice:?} after {steps:?}");
    }
    lost.is_empty() && twice.is_empty()
}

/// Whatever the crashes: every QoS 1/2 message acknowledged to its
/// publisher while the watcher's stored session subscribed to `#` reaches
/// the watcher, before or after a restart, and a QoS 2 one once.
#[test]
fn nothing_acknowledged_is_lost_in_a_crash() {
    fn prop(steps: Vec<Step>) -> bool {
        delivers_what_was_acknowledged(&[1], &steps)
    }
    QuickCheck::new().tests(300).quickcheck(prop as fn(Vec<Step>) -> bool);
}

/// As [`nothing_acknowledged_is_lost_in_a_crash`], with shards sharing
/// the store: two, then three after the first crash, two after the next
/// (each session goes to its home among them), and so on.
#[test]
fn nothing_acknowledged_is_lost_in_a_crash_with_shards() {
    fn prop(steps: Vec<Step>) -> bool {
        delivers_what_was_acknowledged(&[2, 3], &steps)
    }
    QuickCheck::new().tests(300).quickcheck(prop as fn(Vec<Step>) -> bool);
}

/// A QoS 2 message released and routed to another shard, whose copy is on
/// disk when the broker crashes before its release is: the restart (with
/// as many shards, one, or more) routes it again for the sessions that
/// lack it, and the subscriber that has it gets it once.
#[test]
fn a_qos_2_message_routed_to_another_shard_before_a_crash_arrives_once() {
    for restart_with in [2, 1, 3] {
        let mut sim = Simulation::with_shards(config(), 2);
        assert_eq!(culex_core::shard::home_shard("b", 2), culex_core::shard::ShardId(1));
        let b = sim.connect(ClientOptions::new("b").clean_session(false));
        sim.subscribe(b, "t", QoS::ExactlyOnce);
        sim.disconnect(b);
        let a = sim.connect(ClientOptions::new("a"));
        sim.manual_commits(true);
        sim.publish(a, "t", b"once", QoS::ExactlyOnce, false);
        // PUBREC, then PUBREL: the message goes to shard 1.
        sim.commit();
        // Shard 1's copy is on disk; shard 0 hears it and records the
        // release, which the crash loses.
        sim.commit();
        assert!(sim.pending_batches() > 0, "the release waits in a batch of its own");
        sim.crash_and_restart_as(restart_with);
        sim.manual_commits(false);
        let b = sim.connect(ClientOptions::new("b").clean_session(false));
        assert_eq!(common::payloads(&mut sim, b), ["once"], "restarted with {restart_with} shards");
    }
}

/// Each retained message a broker holds, by topic, but its own figures
/// (never stored): the payload.
fn retained_payloads(broker: &Broker) -> BTreeMap<String, Bytes> {
    let retained = broker.retained_messages().into_iter().filter(|(topic, _)| !topic.as_str().starts_with("$SYS"));
    retained.map(|(topic, m)| (topic.as_str().to_owned(), m.payload.clone())).collect()
}

/// Shards sharing a store: with every batch committed, the store refers
/// to no body it lacks and holds the retained messages every shard
/// holds, whichever shards changed them; a restart with another number
/// of shards gives each of them those retained messages and the same
/// sessions.
#[test]
fn shards_sharing_a_store_leave_in_it_what_they_hold() {
    fn prop(steps: Vec<Step>, three: bool) -> bool {
        let mut run = Run::sharded(false, &[2]);
        for step in steps.iter().filter(|s| !matches!(s, Step::Crash)) {
            run.step(step);
        }
        run.sim.commit();
        let stored = run.sim.stored().clone();
        let dangling: Vec<_> = stored.references().filter(|id| !stored.messages.contains_key(id)).collect();
        let in_store: BTreeMap<String, Bytes> = stored
            .retained
            .iter()
            .filter_map(|(topic, id)| Some((topic.as_str().to_owned(), stored.messages.get(id)?.payload.clone())))
            .collect();
        let held: Vec<_> = run.sim.brokers().iter().map(retained_payloads).collect();
        let sessions: BTreeSet<String> = stored.sessions.keys().map(|c| c.as_str().to_owned()).collect();
        run.sim.crash_and_restart_as(if three { 3 } else { 1 });
        let restored: Vec<_> = run.sim.brokers().iter().map(retained_payloads).collect();
        let found = sessions.iter().all(|c| run.sim.brokers().iter().any(|b| b.session(c).is_some()));
        // A restart publishes the wills and held QoS 2 messages it finds.
        let published = !stored.wills.is_empty() || !stored.unreleased.is_empty();
        let ok = dangling.is_empty()
            && held.iter().all(|h| *h == in_store)
            && (published || restored.iter().all(|r| *r == in_store))
            && found;
        if !ok {
            eprintln!(
                "dangling {dangling:?}\nstore {in_store:?}\nshards {held:?}\nrestored {restored:?}\nsessions \
                 {sessions:?} found {found} after {steps:?}"
            );
        }
        ok
    }
    QuickCheck::new().tests(300).quickcheck(prop as fn(Vec<Step>, bool) -> bool);
}

/// `persistent_client_expiration`: an offline persistent session not seen
/// for that long is removed, checked once a minute as Mosquitto does; a
/// connected one is kept whatever its age.
#[test]
fn offline_sessions_expire_after_persistent_client_expiration() {
    let hour = Duration::from_secs(3600);
    let mut sim = Simulation::new(Config { persistent_client_expiration: Some(hour), ..config() });
    let old = sim.connect(ClientOptions::new("old").clean_session(false));
    sim.connect(ClientOptions::new("online").clean_session(false));
    sim.disconnect(old);
    sim.advance(hour - Duration::from_secs(60));
    assert!(sim.broker().session("old").is_some(), "expired early");
    sim.advance(Duration::from_secs(120));
    assert!(sim.broker().session("old").is_none(), "not expired");
    assert!(sim.stored().sessions.keys().all(|c| c.as_str() == "online"), "expired session left in the store");
    assert!(sim.broker().session("online").is_some(), "a connected session expired");
}

/// The PUBLISHes `conn` received: payload and packet id.
fn publishes(sim: &mut Simulation, conn: ConnId) -> Vec<(String, Option<u16>)> {
    sim.take_received(conn)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(Publish { payload, packet_id, .. }) => {
                Some((String::from_utf8_lossy(&payload).into_owned(), packet_id.map(PacketId::get)))
            }
            _ => None,
        })
        .collect()
}

/// A QoS 2 copy queued for a stored session gets its packet id when it is
/// queued, stored with it: taken into the window, its PUBLISH does not
/// wait for a commit. If the broker crashes before the store learns it
/// was sent, it is restored as queued under the same id and sent again
/// under it, so a client that saw it (and holds the id until PUBREL)
/// takes it for the duplicate it is: delivered once.
#[test]
fn a_queued_copy_keeps_its_packet_id_across_a_crash() {
    let config = Config { persistence: true, max_inflight_messages: 1, ..Config::default() };
    let mut sim = Simulation::new(config);
    let sub = sim.connect(ClientOptions::new("sub").clean_session(false).auto_ack(false));
    sim.subscribe(sub, "t", QoS::ExactlyOnce);
    sim.take_received(sub);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "t", b"first", QoS::ExactlyOnce, false);
    sim.publish(publ, "t", b"second", QoS::ExactlyOnce, false);
    assert_eq!(publishes(&mut sim, sub), [("first".to_owned(), Some(1))]);
    let queued: Vec<_> = sim.stored().sessions.values().flat_map(|s| s.copies.values().map(|c| c.state)).collect();
    let (one, two) = (PacketId::new(1).expect("id"), PacketId::new(2).expect("id"));
    use culex_core::persistence::CopyState;
    assert_eq!(queued, [CopyState::Sent(one), CopyState::Queued(Some(two))]);
    sim.send(sub, &Packet::PubRec(one));
    sim.take_received(sub);
    // From here nothing is committed: PUBCOMP lets "second" into the
    // window, and its PUBLISH leaves at once, under the id it was stored
    // with.
    sim.manual_commits(true);
    sim.send(sub, &Packet::PubComp(one));
    assert_eq!(publishes(&mut sim, sub), [("second".to_owned(), Some(2))]);
    sim.crash_and_restart();
    let sub = sim.connect(ClientOptions::new("sub").clean_session(false).auto_ack(false));
    sim.commit();
    // "first" was released before the crash: PUBREL again, and once it
    // completes the window has room for "second", under id 2 again.
    assert!(sim.take_received(sub).contains(&Packet::PubRel(one)));
    sim.send(sub, &Packet::PubComp(one));
    sim.commit();
    assert_eq!(publishes(&mut sim, sub), [("second".to_owned(), Some(2))], "not resent under its id");
}

/// A message that reaches a stored session's queue while the session is
/// online and its window full holds its id from the start: a later
/// message never gets an id a queued one holds.
#[test]
fn queued_and_in_flight_ids_stay_distinct_after_a_restart() {
    let config = Config { persistence: true, max_inflight_messages: 2, ..Config::default() };
    let mut sim = Simulation::new(config);
    let sub = sim.connect(ClientOptions::new("sub").clean_session(false).auto_ack(false));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    sim.disconnect(sub);
    let publ = sim.connect(ClientOptions::new("pub"));
    for n in 0..5 {
        sim.publish(publ, "t", format!("m{n}").as_bytes(), QoS::AtLeastOnce, false);
    }
    sim.crash_and_restart();
    let sub = sim.connect(ClientOptions::new("sub").clean_session(false).auto_ack(false));
    let got = publishes(&mut sim, sub);
    assert_eq!(got, [("m0".to_owned(), Some(1)), ("m1".to_owned(), Some(2))]);
    sim.send(sub, &Packet::PubAck(PacketId::new(1).expect("id")));
    assert_eq!(publishes(&mut sim, sub), [("m2".to_owned(), Some(3))]);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "t", b"m5", QoS::AtLeastOnce, false);
    let ids: Vec<_> = sim
        .stored()
        .sessions
        .values()
        .flat_map(|s| s.copies.values().filter_map(|c| c.state.packet_id()).map(PacketId::get))
        .collect();
    assert_eq!(ids, [2, 3, 4, 5, 6]);
}

/// A clean session's QoS 2 message that no stored session wanted when it
/// arrived, but one does by its PUBREL: routing stores its body for the
/// copy, and the release must not drop it (the store once lost the body
/// and kept the copy).
#[test]
fn a_release_keeps_the_body_its_routing_stored() {
    let steps = [
        Step::Connect { client: 3, clean: true },
        Step::Reading { client: 3, on: false },
        Step::Publish { client: 3, topic: 0, qos: 2, retain: false, empty: false },
        Step::Connect { client: 0, clean: false },
        Step::Disconnect { client: 0 },
        Step::Reading { client: 3, on: true },
    ];
    let mut run = Run::new(false);
    for step in &steps {
        run.step(step);
        assert_eq!(comparable(run.sim.stored().clone()), comparable(run.sim.broker().stored_image()), "after {step:?}");
    }
    let stored = run.sim.stored();
    let copies: Vec<_> = stored.sessions.values().flat_map(|s| s.copies.values()).collect();
    assert_eq!(copies.len(), 1, "the watcher's offline session holds the message");
    assert!(copies.iter().all(|c| stored.messages.contains_key(&c.message)), "a copy without its body");
}

/// Found by the model check of `model-check/`: PUBREL to a persistent
/// subscriber went out before its PUBREC was on disk. The subscriber
/// completed the message and forgot its id; after a crash the broker,
/// back at "PUBLISH sent", sent it again, which the subscriber took for
/// a new message.
#[test]
fn pubrel_waits_until_the_release_is_stored() {
    let mut sim = Simulation::new(config());
    sim.manual_commits(true);
    let options = || ClientOptions::new("sub").clean_session(false).auto_ack(false);
    let sub = sim.connect(options());
    sim.subscribe(sub, "t", QoS::ExactlyOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "t", b"once", QoS::ExactlyOnce, false);
    while sim.commit_one() {}
    let got = sim.take_received(sub);
    let Some(pid) = got.iter().find_map(|p| match p {
        Packet::Publish(p) => p.packet_id,
        _ => None,
    }) else {
        panic!("no PUBLISH: {got:?}")
    };
    sim.send(sub, &Packet::PubRec(pid));
    assert!(
        !sim.take_received(sub).iter().any(|p| matches!(p, Packet::PubRel(_))),
        "PUBREL before the released state was stored"
    );
    sim.commit_one();
    assert!(sim.take_received(sub).iter().any(|p| matches!(p, Packet::PubRel(_))));
    // The subscriber completes and forgets the id; the broker crashes
    // before the PUBCOMP is stored: PUBREL again, never the PUBLISH.
    sim.send(sub, &Packet::PubComp(pid));
    sim.crash_and_restart();
    let sub = sim.connect(options());
    while sim.commit_one() {}
    let again = sim.take_received(sub);
    assert!(!again.iter().any(|p| matches!(p, Packet::Publish(_))), "delivered again: {again:?}");
    assert!(again.iter().any(|p| matches!(p, Packet::PubRel(_))), "{again:?}");
}

/// A retained QoS 2 message its publisher released before a crash, whose
/// release did not reach the store: the watcher, restored holding the
/// copy, completes it, and the publisher's PUBREL after the restart
/// routes the message again. The watcher is skipped (it held a copy at
/// the restore), whatever the shards before and after. Found by
/// `nothing_acknowledged_is_lost_in_a_crash_with_shards`: with shards the
/// skip looked for a copy still held, and the watcher took the message
/// twice.
#[test]
fn a_copy_completed_after_a_restart_is_not_sent_again_when_its_release_comes() {
    let steps = [
        Step::Connect { client: 0, clean: true },
        Step::Connect { client: 1, clean: false },
        Step::Publish { client: 1, topic: 0, qos: 2, retain: true, empty: false },
        Step::Commit,
        Step::Disconnect { client: 1 },
        Step::Commit,
        Step::Crash,
        Step::Connect { client: 0, clean: false },
    ];
    for shards in [[1, 1], [2, 2], [2, 3], [3, 2], [2, 1]] {
        assert!(delivers_what_was_acknowledged(&shards, &steps), "{shards:?}");
    }
}
