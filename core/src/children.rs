//! The children of a node of the topic tries (retained messages,
//! subscriptions), by topic level.

use std::collections::BTreeMap;
use std::fmt;

/// A node's children by level, in level order.
pub(crate) struct Children<N>(BTreeMap<Box<str>, N>);

impl<N> Default for Children<N> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<N> fmt::Debug for Children<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl<N: Default> Children<N> {
    /// The child for `level`, created if missing. Copies `level` only when
    /// creating.
    pub(crate) fn child_or_insert(&mut self, level: &str) -> &mut N {
        // Two searches either way: `entry` alone would copy `level` for
        // every lookup, and returning `get_mut`'s borrow early does not
        // pass the borrow checker.
        if self.0.contains_key(level) {
            match self.0.get_mut(level) {
                Some(child) => child,
                None => unreachable!("child found above"),
            }
        } else {
            self.0.entry(Box::from(level)).or_default()
        }
    }
}

impl<N> Children<N> {
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        self.0.get(level)
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        self.0.get_mut(level)
    }

    pub(crate) fn remove(&mut self, level: &str) -> Option<N> {
        self.0.remove(level)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &N> {
        self.0.values()
    }

    /// The children, without those whose level starts with `$` when
    /// `skip_dollar` (wildcards at the root do not match `$` topics,
    /// [MQTT-4.7.2-1]).
    pub(crate) fn matched_by_wildcard(&self, skip_dollar: bool) -> impl Iterator<Item = &N> {
        self.0.iter().filter(move |(level, _)| !(skip_dollar && level.starts_with('$'))).map(|(_, n)| n)
    }

    /// Takes every child out, leaving none (to free a subtree without
    /// recursion).
    pub(crate) fn take(&mut self) -> impl Iterator<Item = N> {
        std::mem::take(&mut self.0).into_values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_in_level_order_and_found_by_level() {
        let long = "l".repeat(40);
        let names = ["", "a", "b", "ab", "$SYS", "é", &long, "l"];
        let mut children: Children<u8> = Children::default();
        for (i, name) in names.iter().enumerate() {
            *children.child_or_insert(name) = u8::try_from(i).unwrap_or(u8::MAX);
        }
        let mut sorted: Vec<&str> = names.to_vec();
        sorted.sort_unstable();
        let found: Vec<u8> = children.values().copied().collect();
        let expected: Vec<u8> =
            sorted.iter().map(|s| u8::try_from(names.iter().position(|n| n == s).unwrap_or(0)).unwrap_or(0)).collect();
        assert_eq!(found, expected);
        for name in names {
            assert!(children.get(name).is_some(), "{name}");
        }
        assert_eq!(children.matched_by_wildcard(true).count(), names.len() - 1);
        assert_eq!(children.remove(&long), Some(6));
        assert!(children.get(&long).is_none());
        assert_eq!(children.len(), names.len() - 1);
    }
}
