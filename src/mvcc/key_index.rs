//! The in-memory key index: key → generations of revisions, as etcd's keyIndex/treeIndex.
//!
//! A key's history is a list of generations. A generation starts with the put that creates
//! the key and ends with the tombstone that deletes it; the last generation is the live one
//! (empty if the key is currently deleted). Example: put(1) put(2) del(3) put(4) del(5) gives
//! `{1, 2, 3t} {4, 5t} {}`.
//!
//! Reads at the latest revision (the common case) are O(1) per key after the map lookup:
//! `modified` is the key's latest revision, so any read at or after it is answered from the
//! last generation without walking.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use bytes::Bytes;

use super::revision::Revision;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Generation {
    /// Version of the key at the last revision of this generation.
    ver: i64,
    /// Main revision of the put that created this generation.
    created: i64,
    /// Revisions in ascending order; in a closed generation the last one is the tombstone.
    revs: Vec<Revision>,
}

/// The revisions of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    /// The key's latest revision (put or tombstone).
    modified: Revision,
    /// The lease of the key's latest put while the key is live; 0 otherwise.
    lease: i64,
    /// create_revision of the live key (copy of the last generation's, kept inline so that
    /// reads at the latest revision touch no other memory).
    created: i64,
    /// version of the live key; 0 if the key is deleted.
    ver: i64,
    /// Never empty; the last one is the live generation.
    generations: Vec<Generation>,
}

/// What a read of a key at some revision sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyAt {
    /// The revision of the put that is visible (its Key-bucket entry holds the value).
    pub(crate) rev: Revision,
    /// create_revision of the visible version.
    pub(crate) created: i64,
    /// version of the visible version.
    pub(crate) ver: i64,
}

impl KeyIndex {
    fn new() -> Self {
        KeyIndex {
            modified: Revision::default(),
            lease: 0,
            created: 0,
            ver: 0,
            generations: vec![Generation::default()],
        }
    }

    /// Records a put at `rev` with `lease`.
    pub(crate) fn put(&mut self, rev: Revision, lease: i64) {
        assert!(
            rev > self.modified,
            "mvcc: key index put at {rev:?} not after its latest revision {:?}",
            self.modified
        );
        let g = self
            .generations
            .last_mut()
            .expect("key index has a generation");
        if g.revs.is_empty() {
            g.created = rev.main;
        }
        g.revs.push(rev);
        g.ver += 1;
        self.created = g.created;
        self.ver = g.ver;
        self.modified = rev;
        self.lease = lease;
    }

    /// Starts a key's index from its oldest surviving revision (when rebuilding from the
    /// backend after compaction removed the revisions before it).
    fn restore(&mut self, created: i64, modified: Revision, ver: i64, lease: i64) {
        assert!(
            self.generations.len() == 1 && self.generations[0].revs.is_empty(),
            "mvcc: restore into a non-empty key index"
        );
        self.generations[0] = Generation {
            ver,
            created,
            revs: vec![modified],
        };
        self.modified = modified;
        self.lease = lease;
        self.created = created;
        self.ver = ver;
    }

    /// Records a deletion at `rev`; false (and nothing recorded) if the key is not live.
    pub(crate) fn tombstone(&mut self, rev: Revision) -> bool {
        if !self.is_live() {
            return false;
        }
        self.put(rev, 0);
        self.generations.push(Generation::default());
        self.created = 0;
        self.ver = 0;
        true
    }

    /// True if the key currently exists.
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.ver > 0
    }

    /// True if the index holds no revision at all (only after compaction).
    fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].revs.is_empty()
    }

    /// The key's latest revision.
    pub(crate) fn modified(&self) -> Revision {
        self.modified
    }

    /// The lease of the live key (0 if none or not live).
    pub(crate) fn lease(&self) -> i64 {
        self.lease
    }

    /// What a read at `at_rev` sees, None if the key did not exist then.
    #[inline]
    pub(crate) fn get(&self, at_rev: i64) -> Option<KeyAt> {
        if at_rev >= self.modified.main {
            // Fast path: the latest state, kept inline.
            return self.is_live().then_some(KeyAt {
                rev: self.modified,
                created: self.created,
                ver: self.ver,
            });
        }
        let g = self.find_generation(at_rev)?;
        let n = g.revs.iter().rposition(|r| r.main <= at_rev)?;
        Some(KeyAt {
            rev: g.revs[n],
            created: g.created,
            ver: g.ver - (g.revs.len() - n - 1) as i64,
        })
    }

    /// The generation alive at `rev`, None if the key did not exist at `rev`.
    fn find_generation(&self, rev: i64) -> Option<&Generation> {
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(tomb)) = (g.revs.first(), g.revs.last()) else {
                continue;
            };
            if i != last && tomb.main <= rev {
                return None;
            }
            if first.main <= rev {
                return Some(g);
            }
        }
        None
    }

    /// Removes the revisions a compaction at `at_rev` no longer needs: all but the latest
    /// revision at or before `at_rev`, and that one too if it is a tombstone. Calls
    /// `removed(rev, is_tombstone)` for each removed revision.
    fn compact(&mut self, at_rev: i64, removed: &mut impl FnMut(Revision, bool)) {
        assert!(!self.is_empty(), "mvcc: compact of an empty key index");
        let last = self.generations.len() - 1;
        // The first generation that is still alive after at_rev (or the last one).
        let mut gen_idx = 0;
        while gen_idx < last {
            let tomb = self.generations[gen_idx]
                .revs
                .last()
                .expect("closed generation");
            if tomb.main > at_rev {
                break;
            }
            gen_idx += 1;
        }
        for g in &self.generations[..gen_idx] {
            let n = g.revs.len();
            for (i, r) in g.revs.iter().enumerate() {
                removed(*r, i + 1 == n);
            }
        }
        let g = &mut self.generations[gen_idx];
        if !g.revs.is_empty() {
            if let Some(keep) = g.revs.iter().rposition(|r| r.main <= at_rev) {
                for r in g.revs.drain(..keep) {
                    removed(r, false);
                }
            }
            if g.revs.len() == 1 && gen_idx != last {
                // Only the tombstone is left: the generation is gone.
                removed(g.revs[0], true);
                gen_idx += 1;
            }
        }
        self.generations.drain(..gen_idx);
    }

    /// Checks the structural invariants (for tests and debug assertions).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        assert!(!self.generations.is_empty());
        let mut prev = Revision::default();
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate() {
            if i != last {
                assert!(!g.revs.is_empty(), "closed generation is empty");
            }
            for r in &g.revs {
                assert!(*r > prev, "revisions not increasing");
                prev = *r;
            }
        }
        assert_eq!(prev, self.modified);
        let g = self.generations.last().unwrap();
        assert_eq!(self.is_live(), !g.revs.is_empty());
        if self.is_live() {
            assert_eq!((self.created, self.ver), (g.created, g.ver));
        } else {
            assert_eq!((self.lease, self.created), (0, 0));
        }
    }
}

/// All keys' indexes: found by key in one hash probe, and visited in key order.
///
/// Most requests name one key (a put, a get, a delete of a key), and a lookup in an ordered
/// map of many keys compares against a dozen or more keys on the way down, each behind its
/// own pointer: 6–8% of the server's CPU per put at 100,000 keys (perf). Point lookups go
/// to the hash map; ranges and compaction walk the ordered set. Both hold the same keys (one
/// allocation, shared); SipHash keeps clients from choosing keys that collide.
#[derive(Clone, Debug, Default)]
pub(crate) struct TreeIndex {
    by_key: HashMap<Bytes, KeyIndex>,
    order: BTreeSet<Bytes>,
    /// Number of keys that currently exist.
    live: usize,
}

impl TreeIndex {
    /// The index of `key`.
    #[inline]
    pub(crate) fn key_index(&self, key: &[u8]) -> Option<&KeyIndex> {
        self.by_key.get(key)
    }

    /// What a read of `key` at `at_rev` sees.
    #[inline]
    pub(crate) fn get(&self, key: &[u8], at_rev: i64) -> Option<KeyAt> {
        self.by_key.get(key)?.get(at_rev)
    }

    /// The index's own copy of `key` if the key currently exists.
    pub(crate) fn live_key(&self, key: &[u8]) -> Option<Bytes> {
        let (k, ki) = self.by_key.get_key_value(key)?;
        ki.is_live().then(|| k.clone())
    }

    /// Records a put of `key` at `rev`.
    pub(crate) fn put(&mut self, key: &[u8], rev: Revision, lease: i64) {
        if let Some(ki) = self.by_key.get_mut(key) {
            if !ki.is_live() {
                self.live += 1;
            }
            ki.put(rev, lease);
        } else {
            let mut ki = KeyIndex::new();
            ki.put(rev, lease);
            self.insert_new(key, ki);
        }
    }

    /// Adds a key that has no index yet, live with `ki`.
    fn insert_new(&mut self, key: &[u8], ki: KeyIndex) {
        // Copy: the caller's bytes may be a slice of a large request buffer.
        let key = Bytes::copy_from_slice(key);
        self.order.insert(key.clone());
        let before = self.by_key.insert(key, ki);
        debug_assert!(before.is_none(), "mvcc: a new key was already indexed");
        self.live += 1;
    }

    fn remove(&mut self, key: &[u8]) {
        self.by_key.remove(key);
        self.order.remove(key);
    }

    /// Records a deletion of `key` at `rev`; false if the key is not live.
    pub(crate) fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        let done = self.by_key.get_mut(key).is_some_and(|ki| ki.tombstone(rev));
        if done {
            self.live -= 1;
        }
        done
    }

    /// Rebuilds one Key-bucket entry (in revision order) into the index, as etcd's restore:
    /// the first surviving revision of a key starts its index.
    pub(crate) fn restore_entry(
        &mut self,
        key: &Bytes,
        rev: Revision,
        tombstone: bool,
        created: i64,
        ver: i64,
        lease: i64,
    ) {
        if self.by_key.contains_key(key.as_ref()) {
            if tombstone {
                self.tombstone(key, rev);
            } else {
                self.put(key, rev, lease);
            }
        } else if !tombstone {
            let mut ki = KeyIndex::new();
            ki.restore(created, rev, ver, lease);
            self.insert_new(key, ki);
        }
    }

    /// The index of a key listed in `order`.
    fn of_listed(&self, key: &Bytes) -> &KeyIndex {
        self.by_key
            .get(key)
            .expect("mvcc: a key in the ordered set has no index")
    }

    /// Calls `f` for each key in the range with its index, in key order, until `f` returns
    /// false. `end`: None = only `key`; Some(empty) = every key >= `key`; Some(end) = [key, end).
    #[inline]
    pub(crate) fn visit<'a>(
        &'a self,
        key: &[u8],
        end: Option<&[u8]>,
        mut f: impl FnMut(&'a Bytes, &'a KeyIndex) -> bool,
    ) {
        match end {
            None => {
                if let Some((k, ki)) = self.by_key.get_key_value(key) {
                    f(k, ki);
                }
            }
            Some(end) => {
                let upper = if end.is_empty() {
                    Bound::Unbounded
                } else if end <= key {
                    return;
                } else {
                    Bound::Excluded(end)
                };
                for k in self.order.range::<[u8], _>((Bound::Included(key), upper)) {
                    if !f(k, self.of_listed(k)) {
                        return;
                    }
                }
            }
        }
    }

    /// Compacts at `at_rev` up to `max_keys` keys, in key order from the first key after
    /// `after` (from the start if None), dropping keys left with no revision. Returns the
    /// last key it compacted if keys remain after it, None once it reached the end.
    pub(crate) fn compact_some(
        &mut self,
        at_rev: i64,
        after: Option<&Bytes>,
        max_keys: usize,
        mut removed: impl FnMut(Revision, bool),
    ) -> Option<Bytes> {
        assert!(max_keys > 0, "mvcc: a compaction step of no keys");
        let lower = match after {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        // One more than the batch, to know whether anything is left after it.
        let keys: Vec<Bytes> = self
            .order
            .range((lower, Bound::Unbounded))
            .take(max_keys.saturating_add(1))
            .cloned()
            .collect();
        let more = keys.len() > max_keys;
        for key in keys.iter().take(max_keys) {
            let ki = self.by_key.get_mut(key).expect("a key just listed");
            ki.compact(at_rev, &mut removed);
            if ki.is_empty() {
                self.remove(key);
            }
        }
        if more {
            keys.into_iter().nth(max_keys - 1)
        } else {
            None
        }
    }

    /// Every key with its index, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Bytes, &KeyIndex)> {
        self.order.iter().map(|k| (k, self.of_listed(k)))
    }

    /// Number of keys with an index (live or with history).
    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.by_key.len(), self.order.len());
        self.by_key.len()
    }

    /// Number of keys that currently exist.
    pub(crate) fn live(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// put(2) put(4) del(6) put(8) put(10) del(12) put(14) put(16): etcd's own example shape.
    fn sample() -> KeyIndex {
        let mut ki = KeyIndex::new();
        ki.put(r(2), 0);
        ki.put(r(4), 0);
        assert!(ki.tombstone(r(6)));
        ki.put(r(8), 0);
        ki.put(r(10), 0);
        assert!(ki.tombstone(r(12)));
        ki.put(r(14), 0);
        ki.put(r(16), 7);
        ki.check();
        ki
    }

    #[test]
    fn mvcc_key_index_get_at_revisions() {
        let ki = sample();
        let at = |rev| ki.get(rev).map(|k| (k.rev.main, k.created, k.ver));
        assert_eq!(at(1), None);
        assert_eq!(at(2), Some((2, 2, 1)));
        assert_eq!(at(5), Some((4, 2, 2)));
        assert_eq!(at(6), None);
        assert_eq!(at(7), None);
        assert_eq!(at(9), Some((8, 8, 1)));
        assert_eq!(at(11), Some((10, 8, 2)));
        assert_eq!(at(12), None);
        assert_eq!(at(14), Some((14, 14, 1)));
        assert_eq!(at(15), Some((14, 14, 1)));
        assert_eq!(at(16), Some((16, 14, 2)));
        assert_eq!(at(100), Some((16, 14, 2)));
        assert_eq!(ki.lease(), 7);
    }

    #[test]
    fn mvcc_key_index_tombstone_of_deleted_key_is_refused() {
        let mut ki = KeyIndex::new();
        ki.put(r(2), 5);
        assert!(ki.tombstone(r(3)));
        assert!(!ki.tombstone(r(4)));
        assert!(!ki.is_live());
        assert_eq!(ki.lease(), 0);
        ki.check();
    }

    #[test]
    #[should_panic(expected = "not after its latest revision")]
    fn mvcc_key_index_refuses_to_go_backwards() {
        let mut ki = KeyIndex::new();
        ki.put(r(5), 0);
        ki.put(r(4), 0);
    }

    fn compacted(mut ki: KeyIndex, at: i64) -> (KeyIndex, Vec<(i64, bool)>) {
        let mut removed = Vec::new();
        ki.compact(at, &mut |rev: Revision, t| removed.push((rev.main, t)));
        (ki, removed)
    }

    fn revs(ki: &KeyIndex) -> Vec<Vec<i64>> {
        ki.generations
            .iter()
            .map(|g| g.revs.iter().map(|r| r.main).collect())
            .collect()
    }

    #[test]
    fn mvcc_key_index_compaction_keeps_latest_before_and_drops_tombstones() {
        let (ki, rm) = compacted(sample(), 1);
        assert_eq!(
            revs(&ki),
            vec![vec![2, 4, 6], vec![8, 10, 12], vec![14, 16]]
        );
        assert!(rm.is_empty());

        let (ki, rm) = compacted(sample(), 5);
        assert_eq!(revs(&ki), vec![vec![4, 6], vec![8, 10, 12], vec![14, 16]]);
        assert_eq!(rm, vec![(2, false)]);

        let (ki, rm) = compacted(sample(), 6);
        assert_eq!(revs(&ki), vec![vec![8, 10, 12], vec![14, 16]]);
        assert_eq!(rm, vec![(2, false), (4, false), (6, true)]);

        let (ki, rm) = compacted(sample(), 11);
        assert_eq!(revs(&ki), vec![vec![10, 12], vec![14, 16]]);
        assert_eq!(rm, vec![(2, false), (4, false), (6, true), (8, false)]);

        let (ki, _) = compacted(sample(), 13);
        assert_eq!(revs(&ki), vec![vec![14, 16]]);
        let (ki, rm) = compacted(sample(), 16);
        assert_eq!(revs(&ki), vec![vec![16]]);
        assert_eq!(rm.last(), Some(&(14, false)));
        assert_eq!(ki.get(16).map(|k| (k.created, k.ver)), Some((14, 2)));
        ki.check();
    }

    #[test]
    fn mvcc_key_index_compaction_of_deleted_key_empties_it() {
        let mut ki = KeyIndex::new();
        ki.put(r(2), 0);
        assert!(ki.tombstone(r(3)));
        let (ki2, rm) = compacted(ki.clone(), 2);
        assert_eq!(revs(&ki2), vec![vec![2, 3], vec![]]);
        assert!(rm.is_empty());
        let (ki3, rm) = compacted(ki, 3);
        assert!(ki3.is_empty());
        assert_eq!(rm, vec![(2, false), (3, true)]);
    }

    #[test]
    fn mvcc_tree_index_visit_ranges() {
        let mut t = TreeIndex::default();
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            t.put(k.as_bytes(), r(i as i64 + 2), 0);
        }
        let keys = |key: &str, end: Option<&str>| {
            let mut v = Vec::new();
            t.visit(key.as_bytes(), end.map(str::as_bytes), |k, _| {
                v.push(String::from_utf8(k.to_vec()).unwrap());
                true
            });
            v
        };
        assert_eq!(keys("b", None), vec!["b"]);
        assert_eq!(keys("bb", None), Vec::<String>::new());
        assert_eq!(keys("a", Some("c")), vec!["a", "b"]);
        assert_eq!(keys("b", Some("")), vec!["b", "c"]);
        assert_eq!(keys("c", Some("a")), Vec::<String>::new());
        assert_eq!(keys("b", Some("b")), Vec::<String>::new());
    }
}
