//! The retained-message store, searchable by topic filter.

use crate::topic::{TopicFilter, TopicName};

/// The last retained value per topic name.
#[derive(Debug)]
pub struct RetainedStore<V> {
    _v: std::marker::PhantomData<V>,
}

impl<V: Clone> Default for RetainedStore<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> RetainedStore<V> {
    /// An empty store.
    pub fn new() -> Self {
        todo!()
    }

    /// Stores `value` for `topic`, returning what it replaced.
    pub fn insert(&mut self, topic: &TopicName, value: V) -> Option<V> {
        let _ = (topic, value);
        todo!()
    }

    /// Removes the value for `topic`.
    pub fn remove(&mut self, topic: &TopicName) -> Option<V> {
        let _ = topic;
        todo!()
    }

    /// Appends every stored `(topic, value)` whose topic matches `filter`,
    /// in topic-name order.
    pub fn matching(&self, filter: &TopicFilter, out: &mut Vec<(TopicName, V)>) {
        let _ = (filter, out);
        todo!()
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        todo!()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
