//! The retained-message store, searchable by topic filter.
//!
//! A trie keyed by topic level, holding at each node the value retained
//! for the topic spelled by the path to it. A filter walks the trie level
//! by level, so a filter without wildcards costs one lookup per level, not
//! a scan of every retained topic. Level text is copied once, when its node
//! is created. Every walk is iterative, so the deepest topic the wire
//! allows cannot overflow the stack.

use std::fmt;

use crate::children::Children;
use crate::topic::{MULTI_LEVEL_WILDCARD, SINGLE_LEVEL_WILDCARD, TopicFilter, TopicName, split_level};

/// The last retained value per topic name.
pub struct RetainedStore<V> {
    root: Node<V>,
    len: usize,
}

impl<V> fmt::Debug for RetainedStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedStore").field("len", &self.len).finish_non_exhaustive()
    }
}

impl<V: Clone> Default for RetainedStore<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> RetainedStore<V> {
    /// An empty store.
    pub fn new() -> Self {
        Self { root: Node::default(), len: 0 }
    }

    /// Stores `value` for `topic`, returning what it replaced.
    pub fn insert(&mut self, topic: TopicName, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.levels() {
            node = node.children.child_or_insert(level);
        }
        let previous = node.value.replace((topic, value));
        if previous.is_none() {
            self.len += 1;
        }
        previous.map(|(_, v)| v)
    }

    /// Removes the value for `topic`. Nodes left without a value or
    /// children are freed.
    pub fn remove(&mut self, topic: &TopicName) -> Option<V> {
        // The first edge of the run of nodes, ending just above the target,
        // that hold nothing but the edge down the path: if the target
        // empties, the run goes with it.
        let mut run: Option<usize> = None;
        let mut depth = 0;
        let mut node = &mut self.root;
        for level in topic.levels() {
            if depth > 0 {
                if node.value.is_none() && node.children.len() == 1 {
                    run.get_or_insert(depth - 1);
                } else {
                    run = None;
                }
            }
            node = node.children.get_mut(level)?;
            depth += 1;
        }
        let (_, removed) = node.value.take()?;
        self.len -= 1;
        if let (true, Some(last)) = (node.children.is_empty(), depth.checked_sub(1)) {
            let cut = run.unwrap_or(last);
            let mut parent = &mut self.root;
            let mut levels = topic.levels();
            for level in levels.by_ref().take(cut) {
                let Some(child) = parent.children.get_mut(level) else {
                    return Some(removed);
                };
                parent = child;
            }
            if let Some(level) = levels.next() {
                parent.children.remove(level);
            }
        }
        Some(removed)
    }

    /// The value retained for `topic`, if any.
    pub fn get(&self, topic: &TopicName) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.levels() {
            node = node.children.get(level)?;
        }
        node.value.as_ref().map(|(_, v)| v)
    }

    /// Appends every stored `(topic, value)` whose topic matches `filter`,
    /// in topic-name order.
    ///
    /// Filters starting with a wildcard do not match topics starting with
    /// `$` ([MQTT-4.7.2-1]); `#` matches the parent level too (`sport/#`
    /// matches `sport`).
    pub fn matching(&self, filter: &TopicFilter, out: &mut Vec<(TopicName, V)>) {
        let start = out.len();
        // Nodes to visit with the filter levels still to apply below them.
        let mut pending: Vec<(&Node<V>, Option<&str>)> = vec![(&self.root, Some(filter.as_str()))];
        // Nodes whose whole subtree matches (a `#` was reached).
        let mut subtrees: Vec<&Node<V>> = Vec::new();
        while let Some((node, rest)) = pending.pop() {
            let at_root = std::ptr::eq(node, &self.root);
            let Some(levels) = rest else {
                node.push_value(out);
                continue;
            };
            let (level, next) = split_level(levels);
            if level == MULTI_LEVEL_WILDCARD {
                node.push_value(out);
                subtrees.extend(node.children.matched_by_wildcard(at_root));
                while let Some(below) = subtrees.pop() {
                    below.push_value(out);
                    subtrees.extend(below.children.values());
                }
            } else if level == SINGLE_LEVEL_WILDCARD {
                pending.extend(node.children.matched_by_wildcard(at_root).map(|child| (child, next)));
            } else if let Some(child) = node.children.get(level) {
                pending.push((child, next));
            }
        }
        if let Some(found) = out.get_mut(start..) {
            found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
    }

    /// Every stored `(topic, value)`, `$` topics included, in no
    /// particular order.
    pub fn all(&self) -> Vec<(TopicName, V)> {
        let mut out = Vec::with_capacity(self.len);
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            node.push_value(&mut out);
            stack.extend(node.children.values());
        }
        out
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the store is empty.
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
        }
        count
    }
}

/// One node of the trie.
struct Node<V> {
    /// Children by level.
    children: Children<Self>,
    /// The value retained for the topic this node spells, with that topic.
    value: Option<(TopicName, V)>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self { children: Children::default(), value: None }
    }
}

impl<V: Clone> Node<V> {
    fn push_value(&self, out: &mut Vec<(TopicName, V)>) {
        if let Some((topic, value)) = &self.value {
            out.push((topic.clone(), value.clone()));
        }
    }
}

impl<V> Drop for Node<V> {
    /// Frees the subtree without recursion, so a deep trie cannot overflow
    /// the stack. Allocates only for nodes with children.
    fn drop(&mut self) {
        let mut stack: Vec<Self> = self.children.take().collect();
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use quickcheck::{Arbitrary, Gen, QuickCheck};

    use super::*;
    use crate::topic::tests::{ArbFilter, ArbName, filter, naive_matches, name};

    /// A store holding each topic with its position as the value.
    fn store_of(topics: &[&str]) -> RetainedStore<usize> {
        let mut store = RetainedStore::new();
        for (i, t) in topics.iter().enumerate() {
            store.insert(name(t), i);
        }
        store
    }

    /// The topics matching `f`, in the order `matching` returned them.
    fn topics(store: &RetainedStore<usize>, f: &str) -> Vec<String> {
        let mut out = Vec::new();
        store.matching(&filter(f), &mut out);
        out.into_iter().map(|(t, _)| t.to_string()).collect()
    }

    #[test]
    fn new_store_is_empty() {
        let store = RetainedStore::<u8>::default();
        assert!(store.is_empty());
        assert_eq!(store.len(), 0);
        assert_eq!(store.node_count(), 1);
    }

    #[test]
    fn insert_existing_topic_replaces_value() {
        let mut store = RetainedStore::new();
        assert_eq!(store.insert(name("a/b"), 1), None);
        assert_eq!(store.insert(name("a/b"), 2), Some(1));
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(&name("a/b")), Some(&2));
        assert_eq!(store.get(&name("a")), None);
        assert_eq!(store.get(&name("a/b/c")), None);
    }

    #[test]
    fn remove_missing_topic_returns_none() {
        let mut store = store_of(&["a/b"]);
        assert_eq!(store.remove(&name("a")), None);
        assert_eq!(store.remove(&name("a/b/c")), None);
        assert_eq!(store.remove(&name("x")), None);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn remove_last_value_prunes_nodes() {
        let mut store = store_of(&["a/b/c/d", "a", "a/x"]);
        assert_eq!(store.node_count(), 6);
        assert_eq!(store.remove(&name("a/b/c/d")), Some(0));
        assert_eq!(store.node_count(), 3);
        assert_eq!(store.remove(&name("a")), Some(1));
        assert_eq!(store.node_count(), 3, "a still leads to a/x");
        assert_eq!(store.remove(&name("a/x")), Some(2));
        assert!(store.is_empty());
        assert_eq!(store.node_count(), 1);
    }

    #[test]
    fn remove_inner_value_keeps_children() {
        let mut store = store_of(&["a/b", "a/b/c"]);
        assert_eq!(store.remove(&name("a/b")), Some(0));
        assert_eq!(store.node_count(), 4);
        assert_eq!(topics(&store, "#"), ["a/b/c"]);
    }

    #[test]
    fn matching_concrete_filter_returns_that_topic() {
        let store = store_of(&["a/b", "a/c", "a"]);
        assert_eq!(topics(&store, "a/b"), ["a/b"]);
        assert!(topics(&store, "a/d").is_empty());
        assert!(topics(&store, "A/b").is_empty());
    }

    #[test]
    fn matching_multi_level_spec_examples_match() {
        let store = store_of(&[
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player2",
            "sport",
            "sport/",
        ]);
        assert_eq!(
            topics(&store, "sport/tennis/player1/#"),
            ["sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon"]
        );
        assert_eq!(topics(&store, "sport/#").len(), 6);
        assert_eq!(topics(&store, "sport/#").first().map(String::as_str), Some("sport"));
    }

    #[test]
    fn matching_single_level_spec_examples_match() {
        let store = store_of(&["/finance", "finance", "sport/tennis/player1", "sport"]);
        assert_eq!(topics(&store, "+/+"), ["/finance"]);
        assert_eq!(topics(&store, "/+"), ["/finance"]);
        assert_eq!(topics(&store, "+"), ["finance", "sport"]);
        assert_eq!(topics(&store, "sport/+/player1"), ["sport/tennis/player1"]);
        assert!(topics(&store, "sport/+").is_empty());
    }

    #[test]
    fn matching_dollar_topics_wildcard_first_level_no_match() {
        let store = store_of(&["$SYS/x", "$SYS/monitor/Clients", "a/monitor/Clients", "a/$b"]);
        assert_eq!(topics(&store, "#"), ["a/$b", "a/monitor/Clients"]);
        assert_eq!(topics(&store, "+/monitor/Clients"), ["a/monitor/Clients"]);
        assert_eq!(topics(&store, "$SYS/#"), ["$SYS/monitor/Clients", "$SYS/x"]);
        assert_eq!(topics(&store, "a/+"), ["a/$b"]);
    }

    #[test]
    fn matching_output_is_sorted_by_topic_name() {
        let store = store_of(&["a/b", "a!", "a", "a/a", "b", "a/b/c", "\u{feff}"]);
        let all = topics(&store, "#");
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(all.len(), 7);
    }

    #[test]
    fn matching_appends_after_existing_output() {
        let store = store_of(&["b", "a"]);
        let mut out = vec![(name("z"), 9)];
        store.matching(&filter("+"), &mut out);
        let got: Vec<_> = out.iter().map(|(t, v)| (t.as_str(), *v)).collect();
        assert_eq!(got, [("z", 9), ("a", 1), ("b", 0)]);
    }

    #[test]
    fn deep_topic_insert_match_remove_no_stack_overflow() {
        let deep = "/".repeat(65_534);
        let mut store = RetainedStore::new();
        store.insert(name(&deep), 1u8);
        let mut out = Vec::new();
        store.matching(&filter("#"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(store.remove(&name(&deep)), Some(1));
        assert_eq!(store.node_count(), 1);
        store.insert(name(&deep), 2);
        drop(store);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(ArbName, u8),
        Remove(ArbName),
    }

    impl Arbitrary for Op {
        fn arbitrary(g: &mut Gen) -> Self {
            if u8::arbitrary(g) % 3 == 0 {
                Self::Remove(ArbName::arbitrary(g))
            } else {
                Self::Insert(ArbName::arbitrary(g), u8::arbitrary(g))
            }
        }
    }

    #[test]
    fn matching_random_ops_agree_with_naive_model() {
        fn prop(ops: Vec<Op>, filters: Vec<ArbFilter>) -> bool {
            let mut store = RetainedStore::new();
            let mut model: BTreeMap<String, u8> = BTreeMap::new();
            for op in &ops {
                let ok = match op {
                    Op::Insert(t, v) => {
                        let t = t.topic();
                        store.insert(t.clone(), *v) == model.insert(t.to_string(), *v)
                    }
                    Op::Remove(t) => {
                        let t = t.topic();
                        store.remove(&t) == model.remove(t.as_str())
                    }
                };
                if !ok || store.len() != model.len() {
                    return false;
                }
            }
            for f in &filters {
                let f = f.filter();
                let mut got = Vec::new();
                store.matching(&f, &mut got);
                let got: Vec<(String, u8)> = got.into_iter().map(|(t, v)| (t.to_string(), v)).collect();
                let want: Vec<(String, u8)> =
                    model.iter().filter(|(t, _)| naive_matches(f.as_str(), t)).map(|(t, v)| (t.clone(), *v)).collect();
                if got != want {
                    return false;
                }
            }
            for t in model.keys() {
                if store.remove(&name(t)).is_none() {
                    return false;
                }
            }
            store.is_empty() && store.node_count() == 1
        }
        QuickCheck::new().tests(500).quickcheck(prop as fn(Vec<Op>, Vec<ArbFilter>) -> bool);
    }
}
