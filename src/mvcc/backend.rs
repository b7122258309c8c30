//! The storage the MVCC store runs on, as a small trait, plus an in-memory implementation.
//!
//! The store needs two buckets (ordered byte maps): [`Bucket::Key`] holds every revision of
//! every key (see [`crate::mvcc`] for the encoding) and [`Bucket::Meta`] a few named values
//! (the compacted revision). The trait mirrors the B+tree's write transaction one to one, so
//! the server's adapter is a thin `match` from [`Bucket`] to the B+tree's own bucket enum.
//!
//! Reads must see the writes made earlier through the same handle (the store reads back what
//! it wrote earlier in the same etcd transaction). Durability and commit batching are the
//! caller's business: the store never commits.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

/// The buckets the MVCC store uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// Revision (encoded, see [`crate::mvcc`]) → encoded `mvccpb.KeyValue`.
    Key,
    /// Named values: `scheduledCompactRev`, `finishedCompactRev`. The caller may keep its own
    /// entries here (e.g. the applied raft index) under other names.
    Meta,
}

/// An ordered key-value store with buckets: what [`crate::mvcc::KvStore`] needs from the
/// backend.
pub trait KvBackend {
    /// The backend's error; the store reports it as an Internal error.
    type Error: fmt::Display;

    /// The value stored under `key`, if any.
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error>;

    /// The length of the value under `key`, if any: what sizing a reply costs, without a copy
    /// where the backend can avoid one.
    fn value_len(&self, bucket: Bucket, key: &[u8]) -> Result<Option<usize>, Self::Error> {
        Ok(self.get(bucket, key)?.map(|v| v.len()))
    }

    /// Stores `value` under `key`, replacing any previous value.
    fn put(&mut self, bucket: Bucket, key: &[u8], value: &[u8]) -> Result<(), Self::Error>;

    /// Removes `key`; true if it was present.
    fn delete(&mut self, bucket: Bucket, key: &[u8]) -> Result<bool, Self::Error>;

    /// The entries between `start` and `end` in key order (descending if `reverse`).
    fn range<'a>(
        &'a self,
        bucket: Bucket,
        start: Bound<&'a [u8]>,
        end: Bound<&'a [u8]>,
        reverse: bool,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), Self::Error>> + 'a;
}

/// The error of [`MemBackend`]: only ever produced by fault injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemBackendError(pub String);

impl fmt::Display for MemBackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MemBackendError {}

/// An in-memory [`KvBackend`] on `std::collections::BTreeMap`, for tests. It can be told to
/// fail writes after a number of them ([`MemBackend::fail_writes_after`]).
#[derive(Debug, Default, Clone)]
pub struct MemBackend {
    key: BTreeMap<Vec<u8>, Vec<u8>>,
    meta: BTreeMap<Vec<u8>, Vec<u8>>,
    writes_left: Option<u64>,
}

impl MemBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// After `n` more successful writes (puts or deletes), every write fails; `None` heals it.
    pub fn fail_writes_after(&mut self, n: Option<u64>) {
        self.writes_left = n;
    }

    /// The number of entries in a bucket.
    pub fn len(&self, bucket: Bucket) -> usize {
        self.map(bucket).len()
    }

    /// True if both buckets are empty.
    pub fn is_empty(&self) -> bool {
        self.key.is_empty() && self.meta.is_empty()
    }

    fn map(&self, bucket: Bucket) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        match bucket {
            Bucket::Key => &self.key,
            Bucket::Meta => &self.meta,
        }
    }

    fn map_mut(&mut self, bucket: Bucket) -> &mut BTreeMap<Vec<u8>, Vec<u8>> {
        match bucket {
            Bucket::Key => &mut self.key,
            Bucket::Meta => &mut self.meta,
        }
    }

    fn count_write(&mut self) -> Result<(), MemBackendError> {
        match &mut self.writes_left {
            None => Ok(()),
            Some(0) => Err(MemBackendError("injected write failure".to_string())),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
        }
    }
}

impl KvBackend for MemBackend {
    type Error = MemBackendError;

    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.map(bucket).get(key).cloned())
    }

    fn put(&mut self, bucket: Bucket, key: &[u8], value: &[u8]) -> Result<(), Self::Error> {
        self.count_write()?;
        self.map_mut(bucket).insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, bucket: Bucket, key: &[u8]) -> Result<bool, Self::Error> {
        self.count_write()?;
        Ok(self.map_mut(bucket).remove(key).is_some())
    }

    fn range<'a>(
        &'a self,
        bucket: Bucket,
        start: Bound<&'a [u8]>,
        end: Bound<&'a [u8]>,
        reverse: bool,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), Self::Error>> + 'a {
        // BTreeMap::range panics on an inverted range; an inverted range is simply empty.
        let empty = match (start, end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e))
            | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
            _ => false,
        };
        let iter = if empty {
            None
        } else {
            Some(
                self.map(bucket)
                    .range::<[u8], _>((start, end))
                    .map(|(k, v)| Ok((k.clone(), v.clone()))),
            )
        };
        let (fwd, rev): (Option<_>, Option<_>) = match (iter, reverse) {
            (Some(i), false) => (Some(i), None),
            (Some(i), true) => (None, Some(i.rev())),
            (None, _) => (None, None),
        };
        fwd.into_iter().flatten().chain(rev.into_iter().flatten())
    }
}
