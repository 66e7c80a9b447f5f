//! The subscription tree: which subscribers' filters match a topic name.
//!
//! A trie keyed by topic level. Each node stands for the filter spelled by
//! the path to it and holds its literal children, its `+` child, the
//! subscribers of exactly that filter and the subscribers of that filter
//! followed by `/#`. Level text is copied once, when its node is created;
//! lookups borrow it from the topic or filter. Children and subscribers sit
//! in `BTreeMap`s: deterministic, and no hash flooding from crafted level
//! names. Every walk is iterative, so a topic of 32,768 empty levels cannot
//! overflow the stack.

use std::collections::BTreeMap;
use std::fmt;

use crate::children::Children;
use crate::topic::{MULTI_LEVEL_WILDCARD, SINGLE_LEVEL_WILDCARD, TopicFilter, TopicName, split_level};

/// Subscriptions indexed level by level. `K` names a subscriber (the broker
/// uses its session key), `V` is what a subscription holds (the broker
/// keeps its granted QoS and whether its messages are checked for read
/// access).
pub struct SubscriptionTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K, V> fmt::Debug for SubscriptionTree<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTree").field("len", &self.len).finish_non_exhaustive()
    }
}

impl<K: Copy + Ord, V: Copy> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Ord, V: Copy> SubscriptionTree<K, V> {
    /// An empty tree.
    pub fn new() -> Self {
        Self { root: Node::default(), len: 0 }
    }

    /// Adds or replaces `key`'s subscription to `filter`; returns what it
    /// replaced.
    pub fn subscribe(&mut self, filter: &TopicFilter, key: K, value: V) -> Option<V> {
        let (path, multi) = split_filter(filter);
        let mut node = &mut self.root;
        for level in path_levels(path) {
            node = node.child_or_insert(level);
        }
        let previous = node.subscribers_mut(multi).insert(key, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes `key`'s subscription to exactly `filter`; whether it existed.
    /// Nodes left without subscribers or children are freed.
    pub fn unsubscribe(&mut self, filter: &TopicFilter, key: K) -> bool {
        let (path, multi) = split_filter(filter);
        // The first edge of the run of nodes, ending just above the target,
        // that hold nothing but the edge down the path: if the target
        // empties, the run goes with it.
        let mut run: Option<usize> = None;
        let mut depth = 0;
        let mut node = &mut self.root;
        for level in path_levels(path) {
            if depth > 0 {
                if node.is_passthrough() {
                    run.get_or_insert(depth - 1);
                } else {
                    run = None;
                }
            }
            let Some(child) = node.child_mut(level) else {
                return false;
            };
            node = child;
            depth += 1;
        }
        if node.subscribers_mut(multi).remove(&key).is_none() {
            return false;
        }
        self.len -= 1;
        if depth > 0 && node.is_empty() {
            let cut = run.unwrap_or(depth - 1);
            let mut parent = &mut self.root;
            let mut levels = path_levels(path);
            for level in levels.by_ref().take(cut) {
                let Some(child) = parent.child_mut(level) else {
                    return true;
                };
                parent = child;
            }
            if let Some(level) = levels.next() {
                parent.remove_child(level);
            }
        }
        true
    }

    /// `key`'s subscription to exactly `filter`, if any.
    pub fn get(&self, filter: &TopicFilter, key: K) -> Option<V> {
        let (path, multi) = split_filter(filter);
        let mut node = &self.root;
        for level in path_levels(path) {
            node = node.child(level)?;
        }
        node.subscribers(multi).get(&key).copied()
    }

    /// Appends `(key, value)` for every subscription whose filter matches
    /// `topic`. A key with several matching filters appears once per filter.
    ///
    /// Filters starting with a wildcard do not match topics starting with
    /// `$` ([MQTT-4.7.2-1]); `#` matches the parent level too (`sport/#`
    /// matches `sport`). Allocates nothing besides growing `out`, unless a
    /// path branches (a literal and a `+` child both match) more than 16
    /// times.
    pub fn matches(&self, topic: &TopicName, out: &mut Vec<(K, V)>) {
        let mut pending = Pending::new();
        if topic.is_system() {
            // Only literal first levels: no `#` or `+` at the root.
            let (level, rest) = split_level(topic.as_str());
            match self.root.children.get(level) {
                Some(child) => pending.push((child, rest)),
                None => return,
            }
        } else {
            pending.push((&self.root, Some(topic.as_str())));
        }
        while let Some((mut node, mut rest)) = pending.pop() {
            loop {
                out.extend(node.multi.iter().map(|(k, v)| (*k, *v)));
                let Some(levels) = rest else {
                    out.extend(node.exact.iter().map(|(k, v)| (*k, *v)));
                    break;
                };
                let (level, next) = split_level(levels);
                node = match (node.children.get(level), node.plus.as_deref()) {
                    (Some(literal), Some(plus)) => {
                        pending.push((plus, next));
                        literal
                    }
                    (Some(child), None) | (None, Some(child)) => child,
                    (None, None) => break,
                };
                rest = next;
            }
        }
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of trie nodes, the root included.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.children.values());
            stack.extend(node.plus.as_deref());
        }
        count
    }
}

/// A filter as the node path it names and whether it ends in `#`:
/// `"a/b"` is `(Some("a/b"), false)`, `"a/#"` is `(Some("a"), true)` and
/// `"#"` is `(None, true)` (the root).
fn split_filter(filter: &TopicFilter) -> (Option<&str>, bool) {
    let text = filter.as_str();
    if text == MULTI_LEVEL_WILDCARD {
        (None, true)
    } else if let Some(path) = text.strip_suffix("/#") {
        (Some(path), true)
    } else {
        (Some(text), false)
    }
}

/// The levels of a path from [`split_filter`]; none for the root.
fn path_levels(path: Option<&str>) -> impl Iterator<Item = &str> {
    path.into_iter().flat_map(|p| p.split('/'))
}

/// One node of the trie.
struct Node<K, V> {
    /// Children by literal level.
    children: Children<Self>,
    /// The child for a `+` level.
    plus: Option<Box<Self>>,
    /// Subscribers of this node's filter.
    exact: BTreeMap<K, V>,
    /// Subscribers of this node's filter followed by `/#` (or of `#` at
    /// the root).
    multi: BTreeMap<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self { children: Children::default(), plus: None, exact: BTreeMap::new(), multi: BTreeMap::new() }
    }
}

impl<K, V> Node<K, V> {
    fn subscribers(&self, multi: bool) -> &BTreeMap<K, V> {
        if multi { &self.multi } else { &self.exact }
    }

    fn subscribers_mut(&mut self, multi: bool) -> &mut BTreeMap<K, V> {
        if multi { &mut self.multi } else { &mut self.exact }
    }

    fn edges(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    /// No subscribers and no children: the node can go.
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.multi.is_empty() && self.edges() == 0
    }

    /// No subscribers and a single child: the node goes if that child does.
    fn is_passthrough(&self) -> bool {
        self.exact.is_empty() && self.multi.is_empty() && self.edges() == 1
    }

    fn child(&self, level: &str) -> Option<&Self> {
        if level == SINGLE_LEVEL_WILDCARD { self.plus.as_deref() } else { self.children.get(level) }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        if level == SINGLE_LEVEL_WILDCARD { self.plus.as_deref_mut() } else { self.children.get_mut(level) }
    }

    /// The child for a filter level, created if missing. Copies `level`
    /// only when creating.
    fn child_or_insert(&mut self, level: &str) -> &mut Self {
        if level == SINGLE_LEVEL_WILDCARD {
            return self.plus.get_or_insert_with(Box::default);
        }
        self.children.child_or_insert(level)
    }

    fn remove_child(&mut self, level: &str) {
        if level == SINGLE_LEVEL_WILDCARD {
            self.plus = None;
        } else {
            self.children.remove(level);
        }
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Frees the subtree without recursion, so a deep trie cannot overflow
    /// the stack. Allocates only for nodes with children.
    fn drop(&mut self) {
        let mut stack = Vec::new();
        stack.extend(self.children.take());
        stack.extend(self.plus.take().map(|plus| *plus));
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.take());
            stack.extend(node.plus.take().map(|plus| *plus));
        }
    }
}

/// A node still to visit and the topic levels below it (`None`: the topic
/// ends at that node).
type Frame<'a, K, V> = (&'a Node<K, V>, Option<&'a str>);

/// How many frames [`Pending`] holds without allocating.
const INLINE_FRAMES: usize = 16;

/// A stack of [`Frame`]s that spills to the heap only past
/// [`INLINE_FRAMES`].
struct Pending<'a, K, V> {
    inline: [Option<Frame<'a, K, V>>; INLINE_FRAMES],
    inline_len: usize,
    spill: Vec<Frame<'a, K, V>>,
}

impl<'a, K, V> Pending<'a, K, V> {
    fn new() -> Self {
        Self { inline: [None; INLINE_FRAMES], inline_len: 0, spill: Vec::new() }
    }

    fn push(&mut self, frame: Frame<'a, K, V>) {
        match self.inline.get_mut(self.inline_len) {
            Some(slot) => {
                *slot = Some(frame);
                self.inline_len += 1;
            }
            None => self.spill.push(frame),
        }
    }

    fn pop(&mut self) -> Option<Frame<'a, K, V>> {
        if let Some(frame) = self.spill.pop() {
            return Some(frame);
        }
        self.inline_len = self.inline_len.checked_sub(1)?;
        self.inline.get_mut(self.inline_len).and_then(Option::take)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use quickcheck::{Arbitrary, Gen, QuickCheck};

    use super::*;
    use crate::topic::tests::{ArbFilter, ArbName, filter, naive_matches, name};
    use crate::types::QoS;

    fn matched(tree: &SubscriptionTree<u8, QoS>, topic: &str) -> Vec<(u8, QoS)> {
        let mut out = Vec::new();
        tree.matches(&name(topic), &mut out);
        out.sort();
        out
    }

    /// A tree with one subscriber per filter, keyed by position.
    fn tree_of(filters: &[&str]) -> SubscriptionTree<u8, QoS> {
        let mut tree = SubscriptionTree::new();
        for (key, f) in (0u8..).zip(filters) {
            tree.subscribe(&filter(f), key, QoS::AtMostOnce);
        }
        tree
    }

    /// The keys (positions in `filters`) whose filter matches `topic`.
    fn keys(tree: &SubscriptionTree<u8, QoS>, topic: &str) -> Vec<u8> {
        matched(tree, topic).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn new_tree_is_empty() {
        let tree = SubscriptionTree::<u8, QoS>::default();
        assert!(tree.is_empty());
        assert_eq!(tree.len(), 0);
        assert_eq!(tree.node_count(), 1);
        assert!(matched(&tree, "a").is_empty());
    }

    #[test]
    fn subscribe_new_filter_returns_none() {
        let mut tree = SubscriptionTree::new();
        assert_eq!(tree.subscribe(&filter("a/b"), 1u8, QoS::AtLeastOnce), None);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.get(&filter("a/b"), 1), Some(QoS::AtLeastOnce));
        assert_eq!(tree.get(&filter("a/b"), 2), None);
        assert_eq!(tree.get(&filter("a"), 1), None);
        assert_eq!(tree.get(&filter("a/b/#"), 1), None);
    }

    #[test]
    fn subscribe_same_filter_twice_replaces_qos() {
        let mut tree = SubscriptionTree::new();
        tree.subscribe(&filter("a/+"), 1u8, QoS::AtLeastOnce);
        assert_eq!(tree.subscribe(&filter("a/+"), 1, QoS::ExactlyOnce), Some(QoS::AtLeastOnce));
        assert_eq!(tree.len(), 1);
        assert_eq!(matched(&tree, "a/x"), [(1, QoS::ExactlyOnce)]);
    }

    #[test]
    fn matches_overlapping_filters_once_per_filter() {
        let mut tree = SubscriptionTree::new();
        tree.subscribe(&filter("a/#"), 1u8, QoS::AtMostOnce);
        tree.subscribe(&filter("a/+"), 1, QoS::AtLeastOnce);
        tree.subscribe(&filter("a/b"), 1, QoS::ExactlyOnce);
        tree.subscribe(&filter("#"), 2, QoS::AtMostOnce);
        assert_eq!(tree.len(), 4);
        assert_eq!(
            matched(&tree, "a/b"),
            [(1, QoS::AtMostOnce), (1, QoS::AtLeastOnce), (1, QoS::ExactlyOnce), (2, QoS::AtMostOnce)]
        );
    }

    #[test]
    fn matches_multi_level_spec_examples_match() {
        let tree = tree_of(&["sport/tennis/player1/#", "sport/#", "#"]);
        assert_eq!(keys(&tree, "sport/tennis/player1"), [0, 1, 2]);
        assert_eq!(keys(&tree, "sport/tennis/player1/ranking"), [0, 1, 2]);
        assert_eq!(keys(&tree, "sport/tennis/player1/score/wimbledon"), [0, 1, 2]);
        assert_eq!(keys(&tree, "sport"), [1, 2]);
        assert_eq!(keys(&tree, "sport/"), [1, 2]);
        assert_eq!(keys(&tree, "sport/tennis"), [1, 2]);
        assert_eq!(keys(&tree, "other"), [2]);
    }

    #[test]
    fn matches_single_level_spec_examples_match() {
        let tree = tree_of(&["sport/tennis/+", "sport/+", "+/+", "/+", "+"]);
        assert_eq!(keys(&tree, "sport/tennis/player1"), [0]);
        assert!(keys(&tree, "sport/tennis/player1/ranking").is_empty());
        assert_eq!(keys(&tree, "sport"), [4]);
        assert_eq!(keys(&tree, "sport/"), [1, 2]);
        assert_eq!(keys(&tree, "/finance"), [2, 3]);
        assert_eq!(keys(&tree, "/"), [2, 3]);
        assert_eq!(keys(&tree, "finance"), [4]);
    }

    #[test]
    fn matches_dollar_topic_wildcard_first_level_no_match() {
        let tree = tree_of(&["#", "+/monitor/Clients", "$SYS/#", "$SYS/monitor/+", "+/#", "+"]);
        assert_eq!(keys(&tree, "$SYS/monitor/Clients"), [2, 3]);
        assert_eq!(keys(&tree, "$SYS/x"), [2]);
        assert_eq!(keys(&tree, "$SYS"), [2]);
        assert!(keys(&tree, "$").is_empty());
        assert_eq!(keys(&tree, "a/monitor/Clients"), [0, 1, 4]);
        assert_eq!(keys(&tree, "a/$SYS"), [0, 4]);
    }

    #[test]
    fn matches_case_and_byte_order_mark_are_significant() {
        let tree = tree_of(&["Accounts", "\u{feff}a/+"]);
        assert!(keys(&tree, "accounts").is_empty());
        assert_eq!(keys(&tree, "Accounts"), [0]);
        assert!(keys(&tree, "a/b").is_empty());
        assert_eq!(keys(&tree, "\u{feff}a/b"), [1]);
    }

    #[test]
    fn unsubscribe_missing_subscription_returns_false() {
        let mut tree = tree_of(&["a/b", "a/#"]);
        assert!(!tree.unsubscribe(&filter("a/b"), 9));
        assert!(!tree.unsubscribe(&filter("a"), 0));
        assert!(!tree.unsubscribe(&filter("a/b/c"), 0));
        assert!(!tree.unsubscribe(&filter("a/+"), 0));
        assert!(!tree.unsubscribe(&filter("a/b/#"), 0));
        assert!(!tree.unsubscribe(&filter("#"), 0));
        assert_eq!(tree.len(), 2);
        assert_eq!(keys(&tree, "a/b"), [0, 1]);
    }

    #[test]
    fn unsubscribe_last_subscriber_prunes_nodes() {
        let mut tree = tree_of(&["a/b/c/d", "a/+/c", "a/#", "#", "+/x/+/#"]);
        let before = tree.node_count();
        assert!(tree.unsubscribe(&filter("a/b/c/d"), 0));
        assert_eq!(tree.node_count(), before - 3, "b, c and d go");
        assert!(tree.unsubscribe(&filter("a/#"), 2));
        assert_eq!(tree.node_count(), before - 3, "a still has a + child");
        assert!(tree.unsubscribe(&filter("a/+/c"), 1));
        assert_eq!(tree.node_count(), before - 6);
        assert!(tree.unsubscribe(&filter("#"), 3));
        assert!(tree.unsubscribe(&filter("+/x/+/#"), 4));
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn unsubscribe_keeps_nodes_other_subscribers_need() {
        let mut tree = SubscriptionTree::new();
        tree.subscribe(&filter("a/b"), 1u8, QoS::AtMostOnce);
        tree.subscribe(&filter("a/b"), 2, QoS::AtMostOnce);
        tree.subscribe(&filter("a/b/#"), 3, QoS::AtMostOnce);
        assert!(tree.unsubscribe(&filter("a/b"), 1));
        assert_eq!(tree.node_count(), 3);
        assert!(tree.unsubscribe(&filter("a/b"), 2));
        assert_eq!(tree.node_count(), 3);
        assert_eq!(keys(&tree, "a/b"), [3]);
        assert!(tree.unsubscribe(&filter("a/b/#"), 3));
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn churn_subscribe_unsubscribe_memory_stays_flat() {
        let mut tree = SubscriptionTree::new();
        tree.subscribe(&filter("keep/+"), 0u8, QoS::AtMostOnce);
        let baseline = tree.node_count();
        for i in 0..1000u32 {
            let f = filter(&format!("dev/{i}/+/status/#"));
            tree.subscribe(&f, 1, QoS::AtLeastOnce);
            assert!(tree.unsubscribe(&f, 1));
        }
        assert_eq!(tree.node_count(), baseline);
        assert_eq!(tree.len(), 1);
    }

    #[test]
    fn deep_topic_match_and_drop_no_stack_overflow() {
        // 32,768 empty levels: the deepest topic the wire allows.
        let deep = "/".repeat(32_767);
        let mut tree = SubscriptionTree::new();
        tree.subscribe(&filter(&deep), 1u8, QoS::AtMostOnce);
        tree.subscribe(&filter(&format!("{deep}/#")), 2, QoS::AtMostOnce);
        assert_eq!(keys(&tree, &deep), [1, 2]);
        assert!(tree.unsubscribe(&filter(&deep), 1));
        assert!(tree.unsubscribe(&filter(&format!("{deep}/#")), 2));
        assert_eq!(tree.node_count(), 1);
        tree.subscribe(&filter(&deep), 1u8, QoS::AtMostOnce);
        drop(tree);
    }

    #[test]
    fn branching_at_every_level_matches_all() {
        // A `+` child beside the literal child at each of 200 levels: the
        // pending stack spills past its inline frames.
        let depth = 200;
        let mut tree = SubscriptionTree::new();
        let mut prefix = String::new();
        for i in 0..depth {
            let f = format!("{prefix}+{}", "/a".repeat(depth - 1 - i));
            tree.subscribe(&filter(&f), 0u16, QoS::AtMostOnce);
            prefix.push_str("a/");
        }
        let topic = vec!["a"; depth].join("/");
        tree.subscribe(&filter(&topic), 1, QoS::AtMostOnce);
        let mut out = Vec::new();
        tree.matches(&name(&topic), &mut out);
        assert_eq!(out.len(), depth + 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Subscribe(ArbFilter, u8, QoS),
        Unsubscribe(ArbFilter, u8),
    }

    impl Arbitrary for Op {
        fn arbitrary(g: &mut Gen) -> Self {
            let key = u8::arbitrary(g) % 4;
            if u8::arbitrary(g) % 3 == 0 {
                Self::Unsubscribe(ArbFilter::arbitrary(g), key)
            } else {
                let qos = QoS::from_bits(u8::arbitrary(g) % 3).unwrap_or(QoS::AtMostOnce);
                Self::Subscribe(ArbFilter::arbitrary(g), key, qos)
            }
        }
    }

    #[test]
    fn matches_random_ops_agree_with_naive_model() {
        fn prop(ops: Vec<Op>, topics: Vec<ArbName>) -> bool {
            let mut tree = SubscriptionTree::new();
            let mut model: BTreeMap<(String, u8), QoS> = BTreeMap::new();
            for op in &ops {
                match op {
                    Op::Subscribe(f, key, qos) => {
                        let f = f.filter();
                        let got = tree.subscribe(&f, *key, *qos);
                        if got != model.insert((f.as_str().into(), *key), *qos) {
                            return false;
                        }
                    }
                    Op::Unsubscribe(f, key) => {
                        let f = f.filter();
                        let got = tree.unsubscribe(&f, *key);
                        if got != model.remove(&(f.as_str().into(), *key)).is_some() {
                            return false;
                        }
                    }
                }
                if tree.len() != model.len() {
                    return false;
                }
            }
            for topic in &topics {
                let topic = topic.topic();
                let mut got = Vec::new();
                tree.matches(&topic, &mut got);
                got.sort();
                let mut want: Vec<(u8, QoS)> = model
                    .iter()
                    .filter(|((f, _), _)| naive_matches(f, topic.as_str()))
                    .map(|((_, k), q)| (*k, *q))
                    .collect();
                want.sort();
                if got != want {
                    return false;
                }
            }
            for (f, key) in model.keys() {
                if !tree.unsubscribe(&filter(f), *key) {
                    return false;
                }
            }
            tree.is_empty() && tree.node_count() == 1
        }
        QuickCheck::new().tests(500).quickcheck(prop as fn(Vec<Op>, Vec<ArbName>) -> bool);
    }

    #[test]
    fn pending_push_pop_is_last_in_first_out() {
        let node = Node::<u8, QoS>::default();
        let mut pending = Pending::new();
        for i in 0..40 {
            pending.push((&node, Some(["a", "b", "c", "d"][i % 4])));
        }
        for i in (0..40).rev() {
            assert_eq!(pending.pop().and_then(|(_, rest)| rest), Some(["a", "b", "c", "d"][i % 4]));
        }
        assert!(pending.pop().is_none());
    }
}
