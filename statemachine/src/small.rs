//! Small sorted collections for per-user data: a user has a few skills, one or two workgroups,
//! and an extension usually has one holder. A `BTreeMap`/`BTreeSet` allocates a whole node
//! (eleven slots, ~300 bytes) for its first element, which at a million users was ~900 bytes per
//! user of empty slots. These keep a sorted `Vec` instead and serialise exactly like the B-tree
//! collections (a map, a sequence), so the log and snapshot formats do not change. Operations
//! are O(n), meant for a handful of elements; iteration is in order, like the B-tree's.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A short string stored inline (up to 24 bytes) instead of on the heap, for the keys of the
/// per-user maps and indexes (`State::users`, `presence`, `emails`, `extensions`): as `String`s
/// they were six heap allocations per user (~130 MB at a million users). Serialises as a string.
pub type Name = compact_str::CompactString;

/// A sorted set of distinct values in a `Vec`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VecSet<T>(Vec<T>);

impl<T> Default for VecSet<T> {
    fn default() -> Self {
        VecSet(Vec::new())
    }
}

impl<T: Ord> VecSet<T> {
    /// An empty set (allocates nothing).
    pub const fn new() -> Self {
        VecSet(Vec::new())
    }

    /// Adds `value`; false when it was already there.
    pub fn insert(&mut self, value: T) -> bool {
        match self.0.binary_search(&value) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, value);
                true
            }
        }
    }

    /// Removes `value`; false when it was not there.
    pub fn remove<Q: Ord + ?Sized>(&mut self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        match self.0.binary_search_by(|held| held.borrow().cmp(value)) {
            Ok(at) => {
                self.0.remove(at);
                if self.0.is_empty() {
                    self.0 = Vec::new();
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Whether `value` is in the set.
    pub fn contains<Q: Ord + ?Sized>(&self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        self.0.binary_search_by(|held| held.borrow().cmp(value)).is_ok()
    }
}

impl<T> VecSet<T> {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values in order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<T: Ord> FromIterator<T> for VecSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut values: Vec<T> = iter.into_iter().collect();
        values.sort();
        values.dedup();
        values.shrink_to_fit();
        VecSet(values)
    }
}

impl<T> IntoIterator for VecSet<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a VecSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Serialize> Serialize for VecSet<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(&self.0)
    }
}

impl<'de, T: Deserialize<'de> + Ord> Deserialize<'de> for VecSet<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<T>::deserialize(deserializer)?.into_iter().collect())
    }
}

/// A map sorted by key in a `Vec` of pairs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// An empty map (allocates nothing).
    pub fn new() -> Self {
        VecMap(Vec::new())
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(held, _)| held.borrow().cmp(key))
    }

    /// The value under `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|at| &self.0[at].1)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let at = self.find(key).ok()?;
        let (_, value) = self.0.remove(at);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(value)
    }
}

impl<K, V> VecMap<K, V> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }
}

/// Iterator over a [`VecMap`]'s entries.
pub type Iter<'a, K, V> = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    /// Like `BTreeMap`'s: the last value of a repeated key wins.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        iter.into_iter().collect::<BTreeMap<K, V>>().into()
    }
}

impl<K, V> From<BTreeMap<K, V>> for VecMap<K, V> {
    fn from(map: BTreeMap<K, V>) -> Self {
        VecMap(map.into_iter().collect())
    }
}

impl<K: Ord + Clone, V: Clone> From<&VecMap<K, V>> for BTreeMap<K, V> {
    fn from(map: &VecMap<K, V>) -> Self {
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: Serialize, V: Serialize> Serialize for VecMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for VecMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<K, V>::deserialize(deserializer)?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_set_behaves_like_a_btree_set_and_serialises_like_one() {
        let mut set = VecSet::new();
        let mut reference = BTreeSet::new();
        for (i, value) in ["b", "a", "c", "a", "b", "d"].into_iter().enumerate() {
            assert_eq!(set.insert(value.to_string()), reference.insert(value.to_string()), "insert {i}");
        }
        assert_eq!(set.remove("c"), reference.remove("c"));
        assert_eq!(set.remove("zz"), reference.remove("zz"));
        assert!(set.contains("a") && !set.contains("c"));
        assert_eq!(set.iter().collect::<Vec<_>>(), reference.iter().collect::<Vec<_>>());
        let json = serde_json::to_string(&set).expect("encode");
        assert_eq!(json, serde_json::to_string(&reference).expect("encode"));
        let unsorted: VecSet<String> = serde_json::from_str(r#"["d","a","b","a"]"#).expect("decode");
        assert_eq!(unsorted.iter().map(String::as_str).collect::<Vec<_>>(), ["a", "b", "d"]);
    }

    #[test]
    fn a_map_behaves_like_a_btree_map_and_serialises_like_one() {
        let mut map = VecMap::new();
        let mut reference = BTreeMap::new();
        for (key, value) in [("sales", 3), ("billing", 5), ("sales", 9), ("vip", 1)] {
            assert_eq!(map.insert(key.to_string(), value), reference.insert(key.to_string(), value));
        }
        assert_eq!(map.remove("vip"), reference.remove("vip"));
        assert_eq!(map.remove("none"), reference.remove("none"));
        assert_eq!(map.get("sales"), reference.get("sales"));
        assert_eq!(map.iter().collect::<Vec<_>>(), reference.iter().collect::<Vec<_>>());
        assert_eq!(serde_json::to_string(&map).expect("encode"), serde_json::to_string(&reference).expect("encode"));
        let decoded: VecMap<String, u32> = serde_json::from_str(r#"{"b":2,"a":1}"#).expect("decode");
        assert_eq!(decoded.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(BTreeMap::from(&decoded), BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 2)]));
    }
}
