//! What a node's heartbeat decides (see [`nodes`](super::nodes)): the
//! runtime's link asks Redis each second and does what this says.
//!
//! Each beat the node renews its liveness key with its run and reads back
//! what was there. Finding something else than what it wrote last means
//! the key lapsed meanwhile (the node was paused or cut off past its
//! liveness, or Redis lost its keys): the others count this node gone, so
//! it starts a new run, which they take for a new node. If one of them
//! reaped the run (published its clients' wills), the node's clients are
//! gone for the cluster too, and their connections close here.
//!
//! Then it reads the registry and every other node's liveness key: a node
//! whose key holds its registered run is heard, one whose key is gone has
//! left, and its run is to be reaped.

use std::time::Duration;

use super::nodes::{Change, Directory, NodeRun};

/// How long a node's liveness key outlives its last renewal: a node
/// silent that long is gone for the others.
pub const LIVENESS: Duration = Duration::from_secs(3);

/// Beats after start before the previous run's wills are published: the
/// other nodes have heard of this run by then, and told it their routes.
const BEATS_TO_PREVIOUS_WILLS: u8 = 3;

/// The heartbeat's memory between beats.
#[derive(Debug)]
pub struct Heartbeat {
    /// The run the last renewal wrote.
    written: Option<u64>,
    /// When the last renewal was answered, in milliseconds.
    answered_at: Option<u64>,
    /// Beats left before the previous run's wills are due.
    beats_to_previous: u8,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self { written: None, answered_at: None, beats_to_previous: BEATS_TO_PREVIOUS_WILLS }
    }
}

/// What the renewal of this node's liveness found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The key held what the last renewal wrote (or this is the first).
    Held,
    /// The key lapsed: the node goes on as run `next`, every node known
    /// numbered anew ([`Directory::rejoin_all`]).
    Lapsed {
        /// The new run.
        next: u64,
        /// Another node reaped the lapsed run: every client connection
        /// here closes without its will
        /// ([`ShardMessage::CountedGone`](super::ShardMessage::CountedGone)).
        counted_gone: bool,
    },
}

/// Another node as the registry and its liveness key describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Its name.
    pub name: String,
    /// The run it registered, if its entry reads as one.
    pub run: Option<NodeRun>,
    /// The run its liveness key holds; `None` once it lapsed.
    pub alive: Option<u64>,
}

/// What the registry says of the other nodes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Judgement {
    /// What changed, by node.
    pub changes: Vec<(String, Change)>,
    /// Runs that left: the first node to mark one reaped publishes its
    /// clients' wills.
    pub gone: Vec<NodeRun>,
}

impl Heartbeat {
    /// A beat begins: whether the wills the previous run left are to be
    /// published now (once, on the third beat).
    pub fn previous_wills_due(&mut self) -> bool {
        match self.beats_to_previous {
            0 => false,
            n => {
                self.beats_to_previous = n - 1;
                n == 1
            }
        }
    }

    /// The renewal sent at `sent_millis` wrote run `run`, found `before`
    /// in the key and was answered at `now_millis`; `reaped`: the run's
    /// reaped mark exists.
    ///
    /// One sent [`LIVENESS`] or more after the last one was answered
    /// finds the key lapsed, whatever it holds: the run there was written
    /// after the key lapsed, by a renewal whose answer never came (a
    /// Redis Cluster client sends a command again when the connection it
    /// sent it on fails).
    pub fn renewed(
        &mut self,
        run: u64,
        before: Option<u64>,
        reaped: bool,
        sent_millis: u64,
        now_millis: u64,
    ) -> Renewal {
        let lease = u64::try_from(LIVENESS.as_millis()).unwrap_or(u64::MAX);
        let silent = self.answered_at.is_some_and(|at| sent_millis.saturating_sub(at) >= lease);
        let lapsed = self.written.is_some() && (before != self.written || silent);
        self.written = Some(run);
        self.answered_at = Some(now_millis);
        if !lapsed {
            return Renewal::Held;
        }
        Renewal::Lapsed { next: now_millis.max(run + 1), counted_gone: reaped }
    }
}

/// The nodes whose liveness a beat reads: the other nodes `registered`
/// (by name, with their run if the entry reads as one), and those
/// `directory` knows alive that are no longer registered, without a run:
/// a node that stopped without its store whole in Redis withdrew its
/// registration, and leaves once its key is gone too (nobody reaps it:
/// it closed its clients itself, and its sessions wait in its store).
pub fn to_read(
    directory: &Directory,
    mut registered: Vec<(String, Option<NodeRun>)>,
) -> Vec<(String, Option<NodeRun>)> {
    let withdrawn: Vec<String> = directory
        .live()
        .filter(|&name| !registered.iter().any(|(other, _)| other == name))
        .map(str::to_owned)
        .collect();
    registered.extend(withdrawn.into_iter().map(|name| (name, None)));
    registered
}

/// Judges the other nodes (`others`) against what `directory` knows: a
/// node whose liveness holds its registered run is heard, one whose key
/// lapsed is gone (and its run to be reaped), one whose key holds another
/// run is left as it is until the two agree.
///
/// A registered run whose key is gone, of a node never heard here, is
/// gone too (once): it stopped, or died, while this node was not running,
/// as when a whole cluster stops and starts again, or a node never comes
/// back under its name. Its sessions would wait for it for good
/// otherwise.
///
/// A run heard in place of an earlier one does not make either reaped: the
/// node restarted (and publishes its previous run's wills itself) or
/// lapsed without being counted gone (and its clients are still there).
///
/// `sure`: this node reached Redis throughout the last liveness period.
/// If not, a lapsed key may be the same outage (a Redis Cluster member
/// failing over took the keys in its slots for longer than their lease),
/// so no node is judged gone: each finds its own key lapsed and joins
/// again, and one that really stopped is judged once this node is sure.
pub fn judge(directory: &mut Directory, others: &[Registered], sure: bool) -> Judgement {
    let mut judgement = Judgement::default();
    for other in others {
        let change = match (other.alive, &other.run) {
            (Some(alive), Some(run)) if alive == run.run => directory.heard(run),
            (Some(_), _) => Change::default(),
            (None, _) if !sure => Change::default(),
            (None, run) => {
                let change = directory.gone(&other.name);
                // Not short-circuited: a later run than the one that left
                // is taken over once too.
                let unheard = run.as_ref().is_some_and(|run| directory.gone_unheard(run));
                if let Some(run) = run
                    && (!change.left.is_empty() || unheard)
                {
                    judgement.gone.push(run.clone());
                }
                change
            }
        };
        judgement.changes.push((other.name.clone(), change));
    }
    judgement
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ShardId;

    fn run(name: &str, run: u64) -> NodeRun {
        NodeRun { name: name.to_owned(), run, shards: 1 }
    }

    #[test]
    fn a_renewal_that_finds_another_value_lapsed() {
        let mut beat = Heartbeat::default();
        // The first renewal finds whatever an earlier run left.
        assert_eq!(beat.renewed(10, Some(3), false, 100, 100), Renewal::Held);
        assert_eq!(beat.renewed(10, Some(10), false, 200, 200), Renewal::Held);
        // The key lapsed (nothing there), nobody reaped the run: Redis
        // lost its keys, the clients stay.
        assert_eq!(beat.renewed(10, None, false, 300, 300), Renewal::Lapsed { next: 300, counted_gone: false });
        // That renewal wrote the old run, which the next finds.
        assert_eq!(beat.renewed(300, Some(10), false, 400, 400), Renewal::Held);
        // Lapsed again and reaped meanwhile; a clock behind still moves on.
        assert_eq!(beat.renewed(300, Some(7), true, 5, 5), Renewal::Lapsed { next: 301, counted_gone: true });
        assert_eq!(beat.renewed(301, Some(300), false, 500, 500), Renewal::Held);
    }

    #[test]
    fn a_renewal_sent_a_lease_after_the_last_answer_finds_the_key_lapsed() {
        let mut beat = Heartbeat::default();
        assert_eq!(beat.renewed(10, None, false, 1_000, 1_000), Renewal::Held);
        // Answered slowly, but sent within the lease: held.
        assert_eq!(beat.renewed(10, Some(10), false, 3_900, 4_500), Renewal::Held);
        // Redis restarted meanwhile; a renewal whose answer was lost wrote
        // the run again, and this one finds it there.
        assert_eq!(
            beat.renewed(10, Some(10), false, 7_500, 7_600),
            Renewal::Lapsed { next: 7_600, counted_gone: false }
        );
    }

    #[test]
    fn the_previous_wills_are_due_once_on_the_third_beat() {
        let mut beat = Heartbeat::default();
        let due: Vec<bool> = (0..6).map(|_| beat.previous_wills_due()).collect();
        assert_eq!(due, [false, false, true, false, false, false]);
    }

    #[test]
    fn a_node_is_heard_while_its_key_holds_its_run_and_gone_once_it_lapsed() {
        let mut directory = Directory::new(1);
        let b1 = run("b", 1);
        let live = |alive| [Registered { name: "b".to_owned(), run: Some(b1.clone()), alive }];
        let first = judge(&mut directory, &live(Some(1)), true);
        assert_eq!(first.changes, [("b".to_owned(), Change { joined: vec![ShardId(1)], left: vec![] })]);
        assert!(first.gone.is_empty());
        // Its key holds another run (it restarted, not registered yet):
        // nothing changes until the two agree.
        assert_eq!(judge(&mut directory, &live(Some(2)), true).changes[0].1, Change::default());
        // Lapsed while this node could not reach Redis itself: not judged yet.
        assert_eq!(
            judge(&mut directory, &live(None), false),
            Judgement { changes: vec![("b".to_owned(), Change::default())], gone: vec![] }
        );
        let lapsed = judge(&mut directory, &live(None), true);
        assert_eq!(lapsed.changes[0].1.left, [ShardId(1)]);
        assert_eq!(lapsed.gone, std::slice::from_ref(&b1));
        // Gone once: not reaped again.
        assert!(judge(&mut directory, &live(None), true).gone.is_empty());
        // A registration that does not read as a run is gone without a run.
        let unreadable = [Registered { name: "c".to_owned(), run: None, alive: None }];
        assert!(judge(&mut directory, &unreadable, true).gone.is_empty());
    }

    #[test]
    fn a_node_that_withdrew_its_registration_leaves_once_its_key_is_gone_unreaped() {
        let mut directory = Directory::new(1);
        let b1 = run("b", 1);
        judge(&mut directory, &[Registered { name: "b".to_owned(), run: Some(b1.clone()), alive: Some(1) }], true);
        let read = to_read(&directory, vec![("c".to_owned(), None)]);
        assert_eq!(read, [("c".to_owned(), None), ("b".to_owned(), None)]);
        // Its key still there: nothing yet.
        let withdrawing = [Registered { name: "b".to_owned(), run: None, alive: Some(1) }];
        assert_eq!(judge(&mut directory, &withdrawing, true).changes[0].1, Change::default());
        let withdrawn = judge(&mut directory, &[Registered { name: "b".to_owned(), run: None, alive: None }], true);
        assert_eq!(withdrawn.changes[0].1.left, [ShardId(1)]);
        assert!(withdrawn.gone.is_empty(), "{:?}", withdrawn.gone);
        // Gone, it is read no more.
        assert!(to_read(&directory, Vec::new()).is_empty());
    }

    #[test]
    fn a_registered_node_never_heard_alive_is_gone_once() {
        let mut directory = Directory::new(1);
        let b1 = run("b", 1);
        let dead = [Registered { name: "b".to_owned(), run: Some(b1.clone()), alive: None }];
        // Not while this node may not see the keys as they are.
        assert!(judge(&mut directory, &dead, false).gone.is_empty());
        let judged = judge(&mut directory, &dead, true);
        assert_eq!(judged.gone, std::slice::from_ref(&b1));
        assert_eq!(judged.changes[0].1, Change::default(), "none of its shards was reachable");
        assert!(judge(&mut directory, &dead, true).gone.is_empty(), "taken over once");
        // What it wrote to this node's inbox before it died is delivered
        // from its own number.
        assert_eq!(directory.heard(&b1), Change::default());
        assert_eq!(directory.id(&b1, ShardId(0)), Some(ShardId(1)));
        // Its next run joins.
        let b2 = run("b", 2);
        let back = judge(&mut directory, &[Registered { name: "b".to_owned(), run: Some(b2), alive: Some(2) }], true);
        assert_eq!(back.changes[0].1, Change { joined: vec![ShardId(2)], left: vec![] });
        assert_eq!(
            judge(&mut directory, &[Registered { name: "b".to_owned(), run: None, alive: None }], true).gone,
            []
        );
        // A later run that registered and died between two beats here is
        // gone once too.
        let b3 = run("b", 3);
        let dead = [Registered { name: "b".to_owned(), run: Some(b3.clone()), alive: None }];
        assert_eq!(judge(&mut directory, &dead, true).gone, std::slice::from_ref(&b3));
        assert!(judge(&mut directory, &dead, true).gone.is_empty(), "taken over once");
        assert_eq!(directory.id(&b1, ShardId(0)), Some(ShardId(1)), "earlier runs keep their numbers");
        // A node heard alive whose registration names a later run it did
        // not hear: gone once.
        let b5 = run("b", 5);
        judge(&mut directory, &[Registered { name: "b".to_owned(), run: Some(run("b", 4)), alive: Some(4) }], true);
        let dead = [Registered { name: "b".to_owned(), run: Some(b5.clone()), alive: None }];
        assert_eq!(judge(&mut directory, &dead, true).gone, std::slice::from_ref(&b5));
        assert!(judge(&mut directory, &dead, true).gone.is_empty(), "taken over once");
    }

    #[test]
    fn a_later_run_heard_replaces_the_earlier_and_neither_is_reaped() {
        let mut directory = Directory::new(1);
        let registered =
            |run: &NodeRun| [Registered { name: "b".to_owned(), run: Some(run.clone()), alive: Some(run.run) }];
        judge(&mut directory, &registered(&run("b", 1)), true);
        // Restarted (or lapsed and joined again) before it was seen gone.
        let later = judge(&mut directory, &registered(&run("b", 2)), true);
        assert_eq!(later.changes[0].1, Change { joined: vec![ShardId(2)], left: vec![ShardId(1)] });
        assert!(later.gone.is_empty(), "{:?}", later.gone);
    }
}
