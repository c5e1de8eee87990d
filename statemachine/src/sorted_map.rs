//! `SortedMap`: the state's maps that every applied write looks up by name (users, presence,
//! the status catalog, routing's tracked agents). It iterates, lists and serialises in key order
//! exactly like the `BTreeMap` it replaces, but looks keys up through a hash index.
//!
//! Why: a presence change looks its user up about eight times on every member (the decision,
//! the fold, routing's refresh, the history version), and in a B-tree of 1,000 users each lookup
//! was ~15 string comparisons. String-keyed B-tree searches were ~40 % of applying (perf of
//! `cargo bench -p collective-statemachine --bench apply`), and applying ~40 % of every member's
//! CPU under 1,000 streamed clients. A hash lookup is one hash and one comparison.
//!
//! Determinism: the hash order is never walked. Every iteration (`iter`, `keys`, `values`,
//! `for_each_value_mut`, serialisation) goes through the sorted key set, so this file is the
//! one place in the crate allowed a `HashMap` (tests/purity.rs). The hasher has a fixed seed: no
//! randomness in the state machine. Keys are names an administrator or the directory source
//! created, not ones a caller can choose to make lookups collide.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most entries a decoded map reserves room for before it has read them.
const ENTRIES_RESERVED_MAX: usize = 1 << 22;

/// The index's hasher: foldhash (fast on short keys), with its fixed seed.
type Hasher = foldhash::fast::FixedState;

/// A map sorted by key, with hashed lookups. Each key is held twice (in the index and the
/// order), which for the inline `Name`s of the per-user maps is 24 bytes more per user. Values
/// are behind a pointer: a hash table has up to twice as many slots as entries, and with users
/// (~200 bytes) in the slots a million users took ~340 MiB more than the B-tree
/// (`bench-scale.sh`).
///
/// The pointer is shared (`Arc`), copied on write: a clone of the map copies the index and the
/// order but not the values, and a value is copied only when one of the two maps changes it
/// while the other still holds it. A snapshot clones the state while applying waits: with every
/// value copied that took ~5.7 s at a million users, most of it faulting in fresh pages.
#[derive(Clone)]
pub struct SortedMap<K, V> {
    values: HashMap<K, Arc<V>, Hasher>,
    order: BTreeSet<K>,
}

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        SortedMap { values: HashMap::default(), order: BTreeSet::new() }
    }
}

impl<K: Ord + Hash + Clone, V: Clone> SortedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        SortedMap::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value of `key`.
    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.values.get(key).map(|value| &**value)
    }

    /// The value of `key`, to change (copied first if a clone of the map still shares it).
    pub fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.values.get_mut(key).map(Arc::make_mut)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.values.contains_key(key)
    }

    /// Sets the value of `key`; the value it replaces, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.values.entry(key) {
            Entry::Occupied(mut held) => Some(unshared(std::mem::replace(held.get_mut(), Arc::new(value)))),
            Entry::Vacant(slot) => {
                self.order.insert(slot.key().clone());
                slot.insert(Arc::new(value));
                None
            }
        }
    }

    /// Removes `key`; its value, if it had one.
    pub fn remove<Q: Hash + Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let removed = self.values.remove(key)?;
        self.order.remove(key);
        Some(unshared(removed))
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator + Clone {
        self.order.iter()
    }

    /// The entries, in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter { keys: self.order.iter(), values: &self.values }
    }

    /// The values, in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator + Clone {
        self.iter().map(|(_, value)| value)
    }

    /// Changes every value, in key order (a lookup each: the hash order is never walked).
    pub fn for_each_value_mut(&mut self, mut change: impl FnMut(&mut V)) {
        for key in &self.order {
            change(Arc::make_mut(self.values.get_mut(key).expect("every ordered key has a value")));
        }
    }
}

/// The value an entry held: moved out if no clone of the map shares it, else copied.
fn unshared<V: Clone>(value: Arc<V>) -> V {
    Arc::try_unwrap(value).unwrap_or_else(|shared| (*shared).clone())
}

/// The entries of a [`SortedMap`], in key order.
pub struct Iter<'a, K, V> {
    keys: std::collections::btree_set::Iter<'a, K>,
    values: &'a HashMap<K, Arc<V>, Hasher>,
}

impl<K, V> Clone for Iter<'_, K, V> {
    fn clone(&self) -> Self {
        Iter { keys: self.keys.clone(), values: self.values }
    }
}

impl<'a, K: Hash + Eq, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        let key = self.keys.next()?;
        Some((key, &*self.values[key]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.keys.size_hint()
    }
}

impl<K: Hash + Eq, V> DoubleEndedIterator for Iter<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let key = self.keys.next_back()?;
        Some((key, &*self.values[key]))
    }
}

impl<K: Hash + Eq, V> ExactSizeIterator for Iter<'_, K, V> {}

impl<'a, K: Ord + Hash + Clone, V: Clone> IntoIterator for &'a SortedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: Ord + Hash + Clone, V: Clone> FromIterator<(K, V)> for SortedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut map = SortedMap::new();
        map.extend(entries);
        map
    }
}

impl<K: Ord + Hash + Clone, V: Clone> Extend<(K, V)> for SortedMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, entries: I) {
        for (key, value) in entries {
            self.insert(key, value);
        }
    }
}

impl<K, V: Clone, Q> std::ops::Index<&Q> for SortedMap<K, V>
where
    K: Ord + Hash + Clone + Borrow<Q>,
    Q: Hash + Eq + ?Sized,
{
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry for the key")
    }
}

impl<K: Hash + Eq, V: PartialEq> PartialEq for SortedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        // Equal hash maps have equal key sets, so equal orders.
        self.values == other.values
    }
}

impl<K: Hash + Eq, V: Eq> Eq for SortedMap<K, V> {}

impl<K: Ord + Hash + Clone + fmt::Debug, V: Clone + fmt::Debug> fmt::Debug for SortedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Serialised as a map in key order: the bytes of the `BTreeMap` it replaced.
impl<K: Ord + Hash + Clone + Serialize, V: Clone + Serialize> Serialize for SortedMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de, K, V> Deserialize<'de> for SortedMap<K, V>
where
    K: Ord + Hash + Clone + Deserialize<'de>,
    V: Clone + Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<K, V>(PhantomData<(K, V)>);

        impl<'de, K, V> Visitor<'de> for Entries<K, V>
        where
            K: Ord + Hash + Clone + Deserialize<'de>,
            V: Clone + Deserialize<'de>,
        {
            type Value = SortedMap<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = SortedMap::new();
                // Sized once for a snapshot's entries, not grown (and rehashed) by doubling; a
                // length no snapshot has is not trusted with memory up front.
                map.values.reserve(access.size_hint().unwrap_or(0).min(ENTRIES_RESERVED_MAX));
                // Like a `BTreeMap`'s: a repeated key keeps its last value.
                while let Some((key, value)) = access.next_entry()? {
                    map.insert(key, value);
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(Entries(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_and_serialises_like_a_btree_map() {
        let entries = [("carol", 3), ("alice", 1), ("bob", 2), ("dave", 4)];
        let sorted: SortedMap<String, u32> = entries.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let btree: std::collections::BTreeMap<String, u32> = entries.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert!(sorted.iter().eq(btree.iter()));
        assert!(sorted.iter().rev().eq(btree.iter().rev()));
        assert_eq!(serde_json::to_string(&sorted).unwrap(), serde_json::to_string(&btree).unwrap());
        let back: SortedMap<String, u32> = serde_json::from_str(&serde_json::to_string(&btree).unwrap()).unwrap();
        assert_eq!(back, sorted);
        assert_eq!(format!("{sorted:?}"), format!("{btree:?}"));
    }

    #[test]
    fn insert_and_remove_keep_index_and_order_together() {
        let mut map = SortedMap::new();
        assert_eq!(map.insert("b".to_string(), 1), None);
        assert_eq!(map.insert("a".to_string(), 2), None);
        assert_eq!(map.insert("b".to_string(), 3), Some(1));
        assert_eq!(map.len(), 2);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(map.remove("a"), Some(2));
        assert_eq!(map.remove("a"), None);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(map["b"], 3);
        assert!(!map.contains_key("a"));
        *map.get_mut("b").unwrap() += 1;
        assert_eq!(map.get("b"), Some(&4));
    }

    #[test]
    fn a_clone_keeps_its_values_while_the_original_changes() {
        let mut map: SortedMap<String, Vec<u32>> =
            [("a".to_string(), vec![1]), ("b".to_string(), vec![2]), ("c".to_string(), vec![3])].into_iter().collect();
        let clone = map.clone();
        map.get_mut("a").unwrap().push(10);
        assert_eq!(map.insert("b".to_string(), vec![20]), Some(vec![2]));
        map.for_each_value_mut(|value| value.push(0));
        assert_eq!(map.remove("a"), Some(vec![1, 10, 0]));
        assert_eq!(map.remove("c"), Some(vec![3, 0]));
        assert_eq!(
            clone.iter().collect::<Vec<_>>(),
            [(&"a".to_string(), &vec![1]), (&"b".to_string(), &vec![2]), (&"c".to_string(), &vec![3])]
        );
        assert_eq!(map.iter().collect::<Vec<_>>(), [(&"b".to_string(), &vec![20, 0])]);
    }
}
