//! The subscription tree: which subscribers' filters match a topic name.

use crate::topic::{TopicFilter, TopicName};
use crate::types::QoS;

/// Subscriptions indexed level by level. `K` names a subscriber (the broker
/// uses its session key).
#[derive(Debug)]
pub struct SubscriptionTree<K> {
    _k: std::marker::PhantomData<K>,
}

impl<K: Copy + Ord> Default for SubscriptionTree<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Ord> SubscriptionTree<K> {
    /// An empty tree.
    pub fn new() -> Self {
        todo!()
    }

    /// Adds or replaces `key`'s subscription to `filter`; returns the QoS
    /// it replaced.
    pub fn subscribe(&mut self, filter: &TopicFilter, key: K, qos: QoS) -> Option<QoS> {
        let _ = (filter, key, qos);
        todo!()
    }

    /// Removes `key`'s subscription to exactly `filter`; whether it existed.
    pub fn unsubscribe(&mut self, filter: &TopicFilter, key: K) -> bool {
        let _ = (filter, key);
        todo!()
    }

    /// Appends `(key, qos)` for every subscription whose filter matches
    /// `topic`. A key with several matching filters appears once per filter.
    pub fn matches(&self, topic: &TopicName, out: &mut Vec<(K, QoS)>) {
        let _ = (topic, out);
        todo!()
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        todo!()
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
