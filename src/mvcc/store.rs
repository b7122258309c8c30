//! The MVCC key-value store: etcd 3.4's Range, Put, DeleteRange, Txn and Compact semantics
//! over a [`KvBackend`] and the in-memory [`TreeIndex`].

use std::cmp::Ordering;
use std::fmt::Display;
use std::ops::Bound;

use bytes::Bytes;
use prost::Message;

use crate::proto::etcdserverpb::{
    compare, range_request, request_op, response_op, CompactionRequest, CompactionResponse,
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};

use super::backend::{Bucket, KvBackend};
use super::error::KvError;
use super::gosort::go_sort;
use super::key_index::{KeyAt, KeyIndex, TreeIndex};
use super::revision::{decode_rev, encode_rev, Revision};

/// Meta-bucket key of the compaction revision being applied (etcd's name).
pub const SCHEDULED_COMPACT_KEY: &[u8] = b"scheduledCompactRev";
/// Meta-bucket key of the last finished compaction revision (etcd's name).
pub const FINISHED_COMPACT_KEY: &[u8] = b"finishedCompactRev";

/// Whether a lease exists: the lease table answers for Put and Txn.
pub trait LeaseCheck {
    /// True if `lease_id` is a granted, unexpired lease.
    fn exists(&self, lease_id: i64) -> bool;
}

/// A lease table with no leases.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLeases;

impl LeaseCheck for NoLeases {
    fn exists(&self, _lease_id: i64) -> bool {
        false
    }
}

/// A key moved between leases by a write (0 = no lease), for the lease table to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseChange {
    /// The key.
    pub key: Bytes,
    /// The lease the key was attached to before (0 = none).
    pub old_lease: i64,
    /// The lease the key is attached to now (0 = none, e.g. deleted).
    pub new_lease: i64,
}

/// What a write did, for the watch hub and the lease table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteEffects {
    /// The revision the writes were made at; the (unchanged) current revision if the request
    /// changed nothing (then `events` is empty).
    pub revision: i64,
    /// One event per change, in order (sub-revision order). A PUT's kv is the full new
    /// KeyValue; a DELETE's kv has the key and mod_revision = `revision`. `prev_kv` is what
    /// etcd's watch sends with prev_kv: the key at `revision - 1`, none for a creation.
    pub events: Vec<Event>,
    /// Every change of a key's lease, in order; keys whose lease did not change are absent.
    pub lease_changes: Vec<LeaseChange>,
}

/// The MVCC store. Single-threaded: the consensus core owns it and applies entries to it in
/// order; every member applying the same entries reaches the same state.
pub struct KvStore<B: KvBackend> {
    backend: B,
    index: TreeIndex,
    current_rev: i64,
    compact_rev: i64,
    /// The compaction whose old revisions are still being removed, if any.
    compacting: Option<Compacting>,
    poisoned: Option<String>,
    /// Whether write events carry prev_kv (costs a read per changed key).
    event_prev_kv: bool,
}

/// A scheduled compaction part-way through its keys. Reads already treat everything below
/// `rev` as compacted; the steps only free the space.
#[derive(Debug)]
struct Compacting {
    rev: i64,
    /// The last key compacted so far (None: not started).
    done_through: Option<Bytes>,
}

/// What one compaction step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStep {
    /// Revisions removed from the backend by this step.
    pub removed: u64,
    /// The compaction revision, if this step finished that compaction.
    pub finished: Option<i64>,
}

/// An open write transaction: all its changes share main revision `begin_rev + 1`.
struct WriteTxn {
    begin_rev: i64,
    changes: i64,
    events: Vec<Event>,
    lease_changes: Vec<LeaseChange>,
}

impl WriteTxn {
    /// The revision reads inside the transaction see (including its own writes).
    fn view_rev(&self) -> i64 {
        if self.changes > 0 {
            self.begin_rev + 1
        } else {
            self.begin_rev
        }
    }
}

/// A write a txn makes, in execution order, for the ignore_value/ignore_lease pre-check.
enum Intent<'r> {
    Put(&'r [u8]),
    Delete(&'r [u8], Option<&'r [u8]>),
}

/// One key a range matched, before its value is read.
struct Entry<'a> {
    key: &'a Bytes,
    at: KeyAt,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// etcd's range end convention: empty = the single key; "\0" = every key >= key
/// (Some(empty)); otherwise [key, range_end).
fn range_end_of(range_end: &[u8]) -> Option<&[u8]> {
    match range_end {
        [] => None,
        [0] => Some(&[]),
        e => Some(e),
    }
}

/// True if a deletion of (dkey, end) covers `key`.
fn covers(dkey: &[u8], end: Option<&[u8]>, key: &[u8]) -> bool {
    match end {
        None => dkey == key,
        Some([]) => key >= dkey,
        Some(e) => dkey <= key && key < e,
    }
}

fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// True if every op of both branches is a Range (a nested txn makes a txn a write, as in
/// etcd). A read-only txn can be served by [`KvStore::txn_read`] without going through raft.
pub fn is_txn_readonly(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| matches!(op.request, Some(request_op::Request::RequestRange(_))))
}

/// Bytes of key-values a client's read may still take.
struct Budget {
    limit: usize,
    used: usize,
}

impl Budget {
    fn new(limit: usize) -> Budget {
        Budget { limit, used: 0 }
    }

    fn take(&mut self, bytes: usize) -> Result<(), KvError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(KvError::range_too_large(self.used, self.limit));
        }
        Ok(())
    }
}

/// What a keys-only key-value takes besides its key: the revisions, version and lease
/// (varints of up to 10 bytes each, with their tags) and the key's own tag and length.
const KV_FIXED_FIELDS: usize = 4 * 11 + 6;

fn internal(e: impl Display) -> KvError {
    KvError::Internal(format!("mvcc: backend: {e}"))
}

fn read_meta_rev<B: KvBackend>(backend: &B, key: &[u8]) -> Result<Option<i64>, KvError> {
    match backend.get(Bucket::Meta, key).map_err(internal)? {
        None => Ok(None),
        Some(v) => match decode_rev(&v) {
            Some((rev, _)) => Ok(Some(rev.main)),
            None => Err(KvError::Internal(format!(
                "mvcc: malformed meta value for {}",
                String::from_utf8_lossy(key)
            ))),
        },
    }
}

impl<B: KvBackend> KvStore<B> {
    /// Opens the store on `backend`, rebuilding the key index from the Key bucket and
    /// finishing an interrupted compaction. An empty backend gives an empty store at
    /// revision 1.
    pub fn open(backend: B) -> Result<Self, KvError> {
        let finished = read_meta_rev(&backend, FINISHED_COMPACT_KEY)?;
        let scheduled = read_meta_rev(&backend, SCHEDULED_COMPACT_KEY)?;
        let compact_rev = finished.unwrap_or(-1);
        let mut index = TreeIndex::default();
        let mut current_rev = 1;
        let mut last = Revision::default();
        for item in backend.range(Bucket::Key, Bound::Unbounded, Bound::Unbounded, false) {
            let (k, v) = item.map_err(internal)?;
            let Some((rev, tombstone)) = decode_rev(&k) else {
                return Err(KvError::Internal(format!(
                    "mvcc: malformed revision key {k:?} in the key bucket"
                )));
            };
            assert!(rev > last, "mvcc: key bucket out of revision order");
            last = rev;
            let kv = KeyValue::decode(Bytes::from(v)).map_err(|e| {
                KvError::Internal(format!("mvcc: cannot decode key value at {rev:?}: {e}"))
            })?;
            index.restore_entry(
                &kv.key,
                rev,
                tombstone,
                kv.create_revision,
                kv.version,
                kv.lease,
            );
            current_rev = rev.main;
        }
        // A compaction can have removed the latest revisions (tombstones); the revision
        // never goes below a compaction point. (Using the scheduled one too fixes etcd 3.4's
        // revision-goes-backwards-after-interrupted-compaction bug.)
        current_rev = current_rev.max(compact_rev).max(scheduled.unwrap_or(0));
        let mut store = KvStore {
            backend,
            index,
            current_rev,
            compact_rev,
            compacting: None,
            poisoned: None,
            event_prev_kv: true,
        };
        if let Some(scheduled) = scheduled {
            if scheduled > compact_rev {
                // Interrupted by a stop: finish it before serving.
                store.schedule_compaction(scheduled)?;
                store.compact_step(usize::MAX)?;
            }
        }
        Ok(store)
    }

    /// Whether [`WriteEffects`] events carry prev_kv. Filling it costs a backend read per
    /// changed key, wasted when no watcher asked for prev_kv; responses' own prev_kv
    /// (PutRequest.prev_kv, DeleteRangeRequest.prev_kv) do not depend on this.
    pub fn set_event_prev_kv(&mut self, on: bool) {
        self.event_prev_kv = on;
    }

    /// The current revision: 1 on an empty store, +1 per write that changed something.
    pub fn current_revision(&self) -> i64 {
        self.current_rev
    }

    /// The last compaction revision; -1 if the store was never compacted (as etcd, which
    /// reports this value in HashKV).
    pub fn compact_revision(&self) -> i64 {
        self.compact_rev
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably (the caller commits it and keeps its own Meta entries).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Every live key with a lease, as (key, lease): the lease table rebuilds its key lists
    /// from this after [`KvStore::open`].
    pub fn leased_keys(&self) -> impl Iterator<Item = (&Bytes, i64)> {
        self.index
            .iter()
            .filter(|(_, ki)| ki.is_live() && ki.lease() != 0)
            .map(|(k, ki)| (k, ki.lease()))
    }

    /// Number of keys that currently exist.
    pub fn live_key_count(&self) -> usize {
        self.index.live()
    }

    /// Number of keys in the index (live or deleted with history kept).
    pub fn indexed_key_count(&self) -> usize {
        self.index.len()
    }

    fn check_poison(&self) -> Result<(), KvError> {
        match &self.poisoned {
            None => Ok(()),
            Some(m) => Err(KvError::Internal(format!(
                "mvcc: store unusable after an earlier failure: {m}"
            ))),
        }
    }

    /// Marks the store unusable if a write failed half-way (the index may not match the
    /// backend any more; etcd would crash here).
    fn settle<T>(&mut self, r: Result<T, KvError>, wrote: bool) -> Result<T, KvError> {
        if let Err(e) = &r {
            if wrote || matches!(e, KvError::Internal(_)) {
                self.poisoned = Some(e.message().to_string());
            }
        }
        r
    }

    // ----- reads -----

    /// Range, at the current revision. The response header carries only the revision (the
    /// current one); the caller fills cluster_id, member_id and raft_term.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        self.range_within(req, usize::MAX)
    }

    /// [`KvStore::range`] for a client: a reply whose key-values would take more than
    /// `max_bytes` is refused ([`KvError::RangeTooLarge`]) before any value is copied, so
    /// the member's memory does not grow with what a client asks for.
    pub fn range_within(
        &self,
        req: &RangeRequest,
        max_bytes: usize,
    ) -> Result<RangeResponse, KvError> {
        self.check_poison()?;
        self.range_at(req, self.current_rev, &mut Budget::new(max_bytes))
    }

    /// What the entries' key-values take in a reply (each as a length-delimited field).
    /// Keys-only replies drop the value: the key and the fixed fields stand for the rest.
    fn reply_bytes(&self, entries: &[Entry<'_>], keys_only: bool) -> Result<usize, KvError> {
        let mut total = 0usize;
        for e in entries {
            let len = if keys_only {
                e.key.len() + KV_FIXED_FIELDS
            } else {
                let (rb, n) = encode_rev(e.at.rev, false);
                self.backend
                    .value_len(Bucket::Key, &rb[..n])
                    .map_err(internal)?
                    .unwrap_or(0)
            };
            total = total.saturating_add(len + 1 + prost::length_delimiter_len(len));
        }
        Ok(total)
    }

    fn read_kv(&self, rev: Revision) -> Result<KeyValue, KvError> {
        let (rb, n) = encode_rev(rev, false);
        match self.backend.get(Bucket::Key, &rb[..n]).map_err(internal)? {
            Some(v) => KeyValue::decode(Bytes::from(v)).map_err(|e| {
                KvError::Internal(format!("mvcc: cannot decode key value at {rev:?}: {e}"))
            }),
            None => Err(KvError::Internal(format!(
                "mvcc: range cannot find revision ({}, {})",
                rev.main, rev.sub
            ))),
        }
    }

    fn get_kv(&self, key: &[u8], at_rev: i64) -> Result<Option<KeyValue>, KvError> {
        match self.index.get(key, at_rev) {
            Some(at) => Ok(Some(self.read_kv(at.rev)?)),
            None => Ok(None),
        }
    }

    /// etcd's applierV3backend.Range over a read view at `cur_rev`.
    fn range_at(
        &self,
        req: &RangeRequest,
        cur_rev: i64,
        budget: &mut Budget,
    ) -> Result<RangeResponse, KvError> {
        use range_request::{SortOrder, SortTarget};

        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // etcd fetches everything when it sorts or filters, else one more than the limit
        // (Go's int64 wraps: a limit of i64::MAX fetches everything).
        let mut fetch = req.limit;
        if req.sort_order != SortOrder::None as i32 || filtered {
            fetch = 0;
        }
        if fetch > 0 {
            fetch = fetch.wrapping_add(1);
        }

        let mut rev = req.revision;
        if rev > cur_rev {
            return Err(KvError::FutureRev);
        }
        if rev <= 0 {
            rev = cur_rev;
        }
        if rev < self.compact_rev {
            return Err(KvError::Compacted);
        }

        let cap = if fetch > 0 {
            fetch as usize
        } else {
            usize::MAX
        };
        let mut count: i64 = 0;
        let mut entries: Vec<Entry<'_>> = Vec::new();
        let count_only = req.count_only;
        self.index
            .visit(&req.key, range_end_of(&req.range_end), |key, ki| {
                if let Some(at) = ki.get(rev) {
                    count += 1;
                    if !count_only && entries.len() < cap {
                        entries.push(Entry { key, at });
                    }
                }
                true
            });
        let mut resp = RangeResponse {
            header: header(cur_rev),
            kvs: Vec::new(),
            more: false,
            count,
        };
        if count_only {
            return Ok(resp);
        }

        if filtered {
            let (min_mod, max_mod) = (req.min_mod_revision, req.max_mod_revision);
            let (min_create, max_create) = (req.min_create_revision, req.max_create_revision);
            entries.retain(|e| {
                !((max_mod != 0 && e.at.rev.main > max_mod)
                    || (min_mod != 0 && e.at.rev.main < min_mod)
                    || (max_create != 0 && e.at.created > max_create)
                    || (min_create != 0 && e.at.created < min_create))
            });
        }

        let target = SortTarget::try_from(req.sort_target).ok();
        let mut order = req.sort_order;
        if req.sort_target != SortTarget::Key as i32 && order == SortOrder::None as i32 {
            // etcd sorts ascending by default when the target is not the key.
            order = SortOrder::Ascend as i32;
        }
        let descend = match SortOrder::try_from(order) {
            Ok(SortOrder::Ascend) => Some(false),
            Ok(SortOrder::Descend) => Some(true),
            _ => None,
        };
        let limit = req.limit;
        let truncate = |len: usize| limit > 0 && len as u64 > limit as u64;

        // Sorting by value needs the values first; every other order sorts the index
        // entries and reads only the values it returns. Both sort exactly as etcd (Go's
        // unstable sort.Sort), so ties come out in etcd's order.
        let mut kvs = if let (Some(desc), Some(SortTarget::Value)) = (descend, target) {
            // Sorting by value holds every value, whatever the limit.
            budget.take(self.reply_bytes(&entries, false)?)?;
            let mut kvs = entries
                .iter()
                .map(|e| self.read_kv(e.at.rev))
                .collect::<Result<Vec<_>, _>>()?;
            go_sort(&mut kvs, |a, b| a.value < b.value, desc);
            if truncate(kvs.len()) {
                kvs.truncate(limit as usize);
                resp.more = true;
            }
            kvs
        } else {
            if let (Some(desc), Some(target)) = (descend, target) {
                match target {
                    // Keys are unique and already ascending: ascending is a no-op and
                    // descending a reversal, whatever the algorithm.
                    SortTarget::Key if desc => entries.reverse(),
                    SortTarget::Key => {}
                    SortTarget::Version => go_sort(&mut entries, |a, b| a.at.ver < b.at.ver, desc),
                    SortTarget::Create => {
                        go_sort(&mut entries, |a, b| a.at.created < b.at.created, desc)
                    }
                    SortTarget::Mod => {
                        go_sort(&mut entries, |a, b| a.at.rev.main < b.at.rev.main, desc)
                    }
                    SortTarget::Value => unreachable!("handled above"),
                }
            }
            // An unknown sort target leaves the key order (etcd 3.4 crashes on it).
            if truncate(entries.len()) {
                entries.truncate(limit as usize);
                resp.more = true;
            }
            budget.take(self.reply_bytes(&entries, req.keys_only)?)?;
            entries
                .iter()
                .map(|e| {
                    let kv = self.read_kv(e.at.rev)?;
                    debug_assert_eq!(&kv.key, e.key);
                    Ok(kv)
                })
                .collect::<Result<Vec<_>, KvError>>()?
        };
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        resp.kvs = kvs;
        Ok(resp)
    }

    /// The changes of revisions `start_rev..end_rev` (end exclusive, capped at the current
    /// revision) in revision order, as events: what a watcher that starts in the past
    /// replays. A DELETE's kv has the key and mod_revision, as in etcd. With `with_prev_kv`
    /// each event carries prev_kv as etcd's watch fills it (the key at revision - 1; none
    /// for a creation or when that revision is compacted). Fails with Compacted if
    /// `start_rev` is below the compaction revision (etcd's watch rule; starting exactly at
    /// it is allowed, although deletions at that revision are gone).
    pub fn events_between(
        &self,
        start_rev: i64,
        end_rev: i64,
        with_prev_kv: bool,
    ) -> Result<Vec<Event>, KvError> {
        self.events_matching(start_rev, end_rev, with_prev_kv, |_| true)
    }

    /// [`KvStore::events_between`] for the keys `keep` accepts only (a watcher's range); the
    /// others cost no decoding of their previous version.
    pub fn events_matching(
        &self,
        start_rev: i64,
        end_rev: i64,
        with_prev_kv: bool,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<Event>, KvError> {
        self.check_poison()?;
        if start_rev < self.compact_rev {
            return Err(KvError::Compacted);
        }
        let (start, end) = (start_rev.max(1), end_rev.min(self.current_rev + 1));
        if start >= end {
            return Ok(Vec::new());
        }
        let (sb, sn) = encode_rev(Revision::new(start, 0), false);
        let (eb, en) = encode_rev(Revision::new(end, 0), false);
        let mut events = Vec::new();
        let entries = self.backend.range(
            Bucket::Key,
            Bound::Included(&sb[..sn]),
            Bound::Excluded(&eb[..en]),
            false,
        );
        for item in entries {
            let (k, v) = item.map_err(internal)?;
            let Some((rev, tombstone)) = decode_rev(&k) else {
                return Err(KvError::Internal(format!(
                    "mvcc: malformed revision key {k:?}"
                )));
            };
            let mut kv = KeyValue::decode(Bytes::from(v)).map_err(|e| {
                KvError::Internal(format!("mvcc: cannot decode key value at {rev:?}: {e}"))
            })?;
            if !keep(&kv.key) {
                continue;
            }
            let kind = if tombstone {
                kv.mod_revision = rev.main;
                EventType::Delete
            } else {
                EventType::Put
            };
            let creation = !tombstone && kv.create_revision == kv.mod_revision;
            let prev_kv = if with_prev_kv && !creation && rev.main > self.compact_rev {
                self.get_kv(&kv.key, rev.main - 1)?
            } else {
                None
            };
            events.push(Event {
                r#type: kind as i32,
                kv: Some(kv),
                prev_kv,
            });
        }
        Ok(events)
    }

    // ----- writes -----

    fn begin_write(&self) -> WriteTxn {
        WriteTxn {
            begin_rev: self.current_rev,
            changes: 0,
            events: Vec::new(),
            lease_changes: Vec::new(),
        }
    }

    fn end_write(&mut self, tw: WriteTxn) -> WriteEffects {
        assert_eq!(
            self.current_rev, tw.begin_rev,
            "mvcc: concurrent write transactions"
        );
        if tw.changes > 0 {
            let next = tw.begin_rev + 1;
            assert!(next > self.current_rev, "mvcc: revision must grow");
            self.current_rev = next;
        }
        WriteEffects {
            revision: self.current_rev,
            events: tw.events,
            lease_changes: tw.lease_changes,
        }
    }

    /// Runs `f` in a write transaction; ends it on success, poisons the store on a failure
    /// after a change.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&mut Self, &mut WriteTxn) -> Result<T, KvError>,
    ) -> Result<(T, WriteEffects), KvError> {
        self.check_poison()?;
        let mut tw = self.begin_write();
        let r = f(self, &mut tw);
        let wrote = tw.changes > 0;
        let out = self.settle(r, wrote)?;
        Ok((out, self.end_write(tw)))
    }

    /// Put. Fails with LeaseNotFound if `req.lease` is not granted, KeyNotFound if
    /// ignore_value / ignore_lease is set and the key does not exist. The response header
    /// carries only the revision.
    pub fn put(
        &mut self,
        req: &PutRequest,
        leases: &dyn LeaseCheck,
    ) -> Result<(PutResponse, WriteEffects), KvError> {
        self.check_poison()?;
        if req.lease != 0 && !leases.exists(req.lease) {
            return Err(KvError::LeaseNotFound);
        }
        self.write(|s, tw| s.put_op(tw, req))
    }

    /// DeleteRange. Deleting nothing adds no revision (the header then carries the current
    /// revision).
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<(DeleteRangeResponse, WriteEffects), KvError> {
        self.write(|s, tw| s.delete_op(tw, req))
    }

    /// Deletes the given keys in one revision (a lease revoke), in sorted order as etcd's
    /// lessor does; keys that do not exist are skipped. Nothing deleted = no new revision.
    pub fn delete_keys(&mut self, keys: &[Bytes]) -> Result<WriteEffects, KvError> {
        let mut keys: Vec<&Bytes> = keys.iter().collect();
        keys.sort();
        keys.dedup();
        let ((), effects) = self.write(|s, tw| {
            for k in keys {
                if let Some(key) = s.index.live_key(k) {
                    s.write_delete(tw, &key, None)?;
                }
            }
            Ok(())
        })?;
        Ok(effects)
    }

    fn put_op(&mut self, tw: &mut WriteTxn, req: &PutRequest) -> Result<PutResponse, KvError> {
        let ignore = req.ignore_value || req.ignore_lease;
        let prev = if ignore || req.prev_kv {
            self.get_kv(&req.key, tw.view_rev())?
        } else {
            None
        };
        if ignore && prev.is_none() {
            return Err(KvError::KeyNotFound);
        }
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        self.write_put(tw, &req.key, value, lease, prev.as_ref())?;
        Ok(PutResponse {
            header: header(tw.begin_rev + 1),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete_op(
        &mut self,
        tw: &mut WriteTxn,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, KvError> {
        let view = tw.view_rev();
        let mut targets: Vec<(Bytes, KeyAt)> = Vec::new();
        self.index
            .visit(&req.key, range_end_of(&req.range_end), |k, ki| {
                if let Some(at) = ki.get(view) {
                    targets.push((k.clone(), at));
                }
                true
            });
        let mut prev_kvs = Vec::new();
        for (key, at) in &targets {
            let cur = if req.prev_kv {
                Some(self.read_kv(at.rev)?)
            } else {
                None
            };
            self.write_delete(tw, key, cur.as_ref())?;
            prev_kvs.extend(cur);
        }
        let revision = if !targets.is_empty() || tw.changes > 0 {
            tw.begin_rev + 1
        } else {
            tw.begin_rev
        };
        Ok(DeleteRangeResponse {
            header: header(revision),
            deleted: targets.len() as i64,
            prev_kvs,
        })
    }

    /// The key as it was before this write transaction (what etcd's watch sends as prev_kv:
    /// the key at revision - 1). `known_now` is the key's current kv if the caller read it.
    fn prev_before_txn(
        &self,
        ki: &KeyIndex,
        begin_rev: i64,
        known_now: Option<&KeyValue>,
    ) -> Result<Option<KeyValue>, KvError> {
        let untouched = ki.modified().main <= begin_rev;
        if let (true, Some(kv)) = (untouched, known_now) {
            return Ok(Some(kv.clone()));
        }
        match ki.get(begin_rev) {
            Some(at) => Ok(Some(self.read_kv(at.rev)?)),
            None => Ok(None),
        }
    }

    fn write_put(
        &mut self,
        tw: &mut WriteTxn,
        key: &Bytes,
        value: Bytes,
        lease: i64,
        known_now: Option<&KeyValue>,
    ) -> Result<(), KvError> {
        let rev = Revision::new(tw.begin_rev + 1, tw.changes);
        let (created, ver, old_lease, prev_kv) = match self.index.key_index(key) {
            Some(ki) if ki.is_live() => {
                let at = ki.get(rev.main).expect("live key");
                let prev = if self.event_prev_kv {
                    self.prev_before_txn(ki, tw.begin_rev, known_now)?
                } else {
                    None
                };
                (at.created, at.ver, ki.lease(), prev)
            }
            // A creation: etcd's watch sends no prev_kv for it.
            _ => (rev.main, 0, 0, None),
        };
        let kv = KeyValue {
            key: key.clone(),
            create_revision: created,
            mod_revision: rev.main,
            version: ver + 1,
            value,
            lease,
        };
        let (rb, n) = encode_rev(rev, false);
        self.backend
            .put(Bucket::Key, &rb[..n], &kv.encode_to_vec())
            .map_err(internal)?;
        self.index.put(key, rev, lease);
        tw.changes += 1;
        if old_lease != lease {
            tw.lease_changes.push(LeaseChange {
                key: key.clone(),
                old_lease,
                new_lease: lease,
            });
        }
        tw.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv,
        });
        Ok(())
    }

    fn write_delete(
        &mut self,
        tw: &mut WriteTxn,
        key: &Bytes,
        known_now: Option<&KeyValue>,
    ) -> Result<(), KvError> {
        let rev = Revision::new(tw.begin_rev + 1, tw.changes);
        let ki = self.index.key_index(key).expect("deleting an indexed key");
        let old_lease = ki.lease();
        let prev_kv = if self.event_prev_kv {
            self.prev_before_txn(ki, tw.begin_rev, known_now)?
        } else {
            None
        };
        let tomb = KeyValue {
            key: key.clone(),
            ..Default::default()
        };
        let (rb, n) = encode_rev(rev, true);
        self.backend
            .put(Bucket::Key, &rb[..n], &tomb.encode_to_vec())
            .map_err(internal)?;
        assert!(
            self.index.tombstone(key, rev),
            "mvcc: tombstone of a deleted key"
        );
        tw.changes += 1;
        if old_lease != 0 {
            tw.lease_changes.push(LeaseChange {
                key: key.clone(),
                old_lease,
                new_lease: 0,
            });
        }
        tw.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.clone(),
                mod_revision: rev.main,
                ..Default::default()
            }),
            prev_kv,
        });
        Ok(())
    }

    // ----- txn -----

    /// Txn. Compares are evaluated at the current revision; the chosen branches' puts are
    /// checked (lease exists, ignore_* keys exist) and then their ranges (revision not
    /// compacted / not future) before anything is written, so a failing txn changes nothing.
    /// All writes share one new revision; a txn that changes nothing adds none.
    pub fn txn(
        &mut self,
        req: &TxnRequest,
        leases: &dyn LeaseCheck,
    ) -> Result<(TxnResponse, WriteEffects), KvError> {
        self.check_poison()?;
        if is_txn_readonly(req) {
            let resp = self.txn_read(req)?;
            let effects = WriteEffects {
                revision: self.current_rev,
                ..Default::default()
            };
            return Ok((resp, effects));
        }
        let mut path = Vec::new();
        self.compare_to_path(req, &mut path)?;
        self.check_puts(req, &path, &mut 0, leases, &mut Vec::new())?;
        self.check_ranges(req, &path, &mut 0)?;
        let (mut resp, effects) = self.write(|s, tw| s.apply_txn(tw, req, &path, &mut 0))?;
        resp.header = header(effects.revision);
        Ok((resp, effects))
    }

    /// A read-only txn (see [`is_txn_readonly`]) at the current revision, without `&mut`.
    /// Fails with an Internal error if the txn is not read-only.
    pub fn txn_read(&self, req: &TxnRequest) -> Result<TxnResponse, KvError> {
        self.txn_read_within(req, usize::MAX)
    }

    /// [`KvStore::txn_read`] for a client: refused with [`KvError::RangeTooLarge`] if its
    /// ranges' key-values together would take more than `max_bytes`. (A txn that writes is
    /// applied on every member and must end the same everywhere, so it has no such limit.)
    pub fn txn_read_within(
        &self,
        req: &TxnRequest,
        max_bytes: usize,
    ) -> Result<TxnResponse, KvError> {
        self.check_poison()?;
        let mut budget = Budget::new(max_bytes);
        if !is_txn_readonly(req) {
            return Err(KvError::Internal(
                "mvcc: txn_read of a txn that writes".to_string(),
            ));
        }
        let mut path = Vec::new();
        self.compare_to_path(req, &mut path)?;
        self.check_ranges(req, &path, &mut 0)?;
        let succeeded = path[0];
        let responses = branch(req, succeeded)
            .iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestRange(r)) => Ok(ResponseOp {
                    response: Some(response_op::Response::ResponseRange(self.range_at(
                        r,
                        self.current_rev,
                        &mut budget,
                    )?)),
                }),
                _ => unreachable!("read-only txn"),
            })
            .collect::<Result<Vec<_>, KvError>>()?;
        Ok(TxnResponse {
            header: header(self.current_rev),
            succeeded,
            responses,
        })
    }

    /// etcd's compareToPath: the outcome of this txn's compares, then (pre-order) of every
    /// nested txn in the branch taken.
    fn compare_to_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<(), KvError> {
        let mut ok = true;
        for c in &req.compare {
            if !self.apply_compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in branch(req, ok) {
            if let Some(request_op::Request::RequestTxn(t)) = &op.request {
                self.compare_to_path(t, path)?;
            }
        }
        Ok(())
    }

    /// One compare at the current revision: it must hold for every key in its range; with no
    /// key it is checked against an all-zero key (a VALUE compare then fails).
    fn apply_compare(&self, c: &Compare) -> Result<bool, KvError> {
        use compare::CompareTarget;
        let rev = self.current_rev;
        let is_value = c.target == CompareTarget::Value as i32;
        let mut any = false;
        let mut holds = true;
        let mut err = None;
        self.index
            .visit(&c.key, range_end_of(&c.range_end), |_, ki| {
                let Some(at) = ki.get(rev) else {
                    return true;
                };
                any = true;
                let value = if is_value {
                    match self.read_kv(at.rev) {
                        Ok(kv) => Some(kv.value),
                        Err(e) => {
                            err = Some(e);
                            return false;
                        }
                    }
                } else {
                    None
                };
                // The read is at the latest revision, so the index's lease is the key's lease.
                if !compare_kv(
                    c,
                    at.ver,
                    at.created,
                    at.rev.main,
                    ki.lease(),
                    value.as_deref(),
                ) {
                    holds = false;
                    return false;
                }
                true
            });
        if let Some(e) = err {
            return Err(e);
        }
        if !any {
            // Nothing to compare a value with; etcd fails VALUE compares on missing keys.
            return Ok(!is_value && compare_kv(c, 0, 0, 0, 0, None));
        }
        Ok(holds)
    }

    /// etcd's checkRequests with checkRequestPut, over the path taken: ignore_value /
    /// ignore_lease need the key, and a lease must exist. The key's existence is judged at
    /// the moment the put runs (after the txn's earlier writes): etcd judges it before the
    /// txn and crashes when an earlier from-key deletion (which its duplicate check lets
    /// through) removed the key; here that txn fails with KeyNotFound instead.
    fn check_puts<'r>(
        &self,
        req: &'r TxnRequest,
        path: &[bool],
        pos: &mut usize,
        leases: &dyn LeaseCheck,
        intents: &mut Vec<Intent<'r>>,
    ) -> Result<(), KvError> {
        let succeeded = path[*pos];
        *pos += 1;
        for op in branch(req, succeeded) {
            match &op.request {
                Some(request_op::Request::RequestTxn(t)) => {
                    self.check_puts(t, path, pos, leases, intents)?;
                }
                Some(request_op::Request::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease) && !self.exists_then(&p.key, intents) {
                        return Err(KvError::KeyNotFound);
                    }
                    if p.lease != 0 && !leases.exists(p.lease) {
                        return Err(KvError::LeaseNotFound);
                    }
                    intents.push(Intent::Put(&p.key));
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    intents.push(Intent::Delete(&d.key, range_end_of(&d.range_end)));
                }
                Some(request_op::Request::RequestRange(_)) | None => {}
            }
        }
        Ok(())
    }

    /// Whether `key` exists after the writes in `intents` (in order) on the current state.
    fn exists_then(&self, key: &[u8], intents: &[Intent<'_>]) -> bool {
        for intent in intents.iter().rev() {
            match *intent {
                Intent::Put(k) if k == key => return true,
                Intent::Delete(k, end) if covers(k, end, key) => return false,
                _ => {}
            }
        }
        self.index.get(key, self.current_rev).is_some()
    }

    /// etcd's checkRequests with checkRequestRange: a range's revision (if not 0) must not be
    /// after the current revision nor before the compacted one. (Negative revisions below
    /// the compaction revision fail here, although a plain Range treats them as "latest".)
    fn check_ranges(
        &self,
        req: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<(), KvError> {
        let succeeded = path[*pos];
        *pos += 1;
        for op in branch(req, succeeded) {
            match &op.request {
                Some(request_op::Request::RequestTxn(t)) => self.check_ranges(t, path, pos)?,
                Some(request_op::Request::RequestRange(r)) => {
                    if r.revision == 0 {
                        continue;
                    }
                    if r.revision > self.current_rev {
                        return Err(KvError::FutureRev);
                    }
                    if r.revision < self.compact_rev {
                        return Err(KvError::Compacted);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn apply_txn(
        &mut self,
        tw: &mut WriteTxn,
        req: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<TxnResponse, KvError> {
        let succeeded = path[*pos];
        *pos += 1;
        let ops = branch(req, succeeded);
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    Some(response_op::Response::ResponseRange(self.range_at(
                        r,
                        tw.view_rev(),
                        &mut Budget::new(usize::MAX),
                    )?))
                }
                Some(request_op::Request::RequestPut(p)) => {
                    Some(response_op::Response::ResponsePut(self.put_op(tw, p)?))
                }
                Some(request_op::Request::RequestDeleteRange(d)) => Some(
                    response_op::Response::ResponseDeleteRange(self.delete_op(tw, d)?),
                ),
                Some(request_op::Request::RequestTxn(t)) => Some(
                    response_op::Response::ResponseTxn(self.apply_txn(tw, t, path, pos)?),
                ),
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        // A nested txn's header stays empty (revision 0), as in etcd.
        Ok(TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded,
            responses,
        })
    }

    // ----- compaction -----

    /// Compacts at `req.revision`, all at once: [`KvStore::start_compaction`] and then every
    /// step. Fails with Compacted at or below the last compaction revision, FutureRev above
    /// the current revision. The header carries the current revision.
    pub fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, KvError> {
        let resp = self.start_compaction(req)?;
        self.compact_step(usize::MAX)?;
        Ok(resp)
    }

    /// Schedules a compaction at `req.revision`: from now on reads below it fail with
    /// Compacted, while [`KvStore::compact_step`] removes the old revisions a batch of keys
    /// at a time (so the core that owns the store keeps serving between batches). A
    /// compaction still in progress is taken over by the newer one, which covers it.
    pub fn start_compaction(
        &mut self,
        req: &CompactionRequest,
    ) -> Result<CompactionResponse, KvError> {
        self.check_poison()?;
        let rev = req.revision;
        if rev <= self.compact_rev {
            return Err(KvError::Compacted);
        }
        if rev > self.current_rev {
            return Err(KvError::FutureRev);
        }
        let r = self.schedule_compaction(rev);
        self.settle(r, true)?;
        Ok(CompactionResponse {
            header: header(self.current_rev),
        })
    }

    /// The revision of the compaction still removing old revisions, if any.
    pub fn compaction_in_progress(&self) -> Option<i64> {
        self.compacting.as_ref().map(|c| c.rev)
    }

    /// Removes the old revisions of up to `max_keys` more keys of the compaction in progress
    /// (nothing if there is none). Once every key is done, records the compaction as finished.
    pub fn compact_step(&mut self, max_keys: usize) -> Result<CompactionStep, KvError> {
        self.check_poison()?;
        let r = self.compact_some(max_keys);
        self.settle(r, true)
    }

    fn schedule_compaction(&mut self, rev: i64) -> Result<(), KvError> {
        assert!(
            rev > self.compact_rev,
            "mvcc: compaction revision went backwards"
        );
        self.compact_rev = rev;
        let (rb, n) = encode_rev(Revision::new(rev, 0), false);
        self.backend
            .put(Bucket::Meta, SCHEDULED_COMPACT_KEY, &rb[..n])
            .map_err(internal)?;
        self.compacting = Some(Compacting {
            rev,
            done_through: None,
        });
        Ok(())
    }

    fn compact_some(&mut self, max_keys: usize) -> Result<CompactionStep, KvError> {
        let KvStore {
            backend,
            index,
            compacting,
            ..
        } = self;
        let Some(c) = compacting.as_mut() else {
            return Ok(CompactionStep {
                removed: 0,
                finished: None,
            });
        };
        let mut failure = None;
        let mut removed = 0;
        let next = index.compact_some(c.rev, c.done_through.as_ref(), max_keys, |r, tombstone| {
            if failure.is_some() {
                return;
            }
            let (kb, kn) = encode_rev(r, tombstone);
            match backend.delete(Bucket::Key, &kb[..kn]) {
                Ok(true) => removed += 1,
                Ok(false) => {
                    failure = Some(KvError::Internal(format!(
                        "mvcc: compaction: revision ({}, {}) missing from the backend",
                        r.main, r.sub
                    )))
                }
                Err(e) => failure = Some(internal(e)),
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        if next.is_some() {
            c.done_through = next;
            return Ok(CompactionStep {
                removed,
                finished: None,
            });
        }
        let rev = c.rev;
        *compacting = None;
        let (rb, n) = encode_rev(Revision::new(rev, 0), false);
        backend
            .put(Bucket::Meta, FINISHED_COMPACT_KEY, &rb[..n])
            .map_err(internal)?;
        Ok(CompactionStep {
            removed,
            finished: Some(rev),
        })
    }

    /// Checks that the index and the backend agree (tests).
    #[cfg(test)]
    pub(crate) fn check_consistency(&self) {
        let live = self.index.iter().filter(|(_, ki)| ki.is_live()).count();
        assert_eq!(live, self.index.live(), "live key count");
        let mut in_index = std::collections::BTreeSet::new();
        for (key, ki) in self.index.iter() {
            ki.check();
            for rev in 1..=self.current_rev {
                if let Some(at) = ki.get(rev) {
                    in_index.insert(at.rev);
                    let kv = self.read_kv(at.rev).expect("indexed revision in backend");
                    assert_eq!(&kv.key, key);
                }
            }
        }
        let mut n = 0;
        for item in self
            .backend
            .range(Bucket::Key, Bound::Unbounded, Bound::Unbounded, false)
        {
            let (k, _) = item.map_err(internal).unwrap();
            let (rev, _) = decode_rev(&k).unwrap();
            assert!(rev.main <= self.current_rev);
            n += 1;
        }
        assert!(n >= in_index.len());
    }
}

/// etcd's compareKV: the compare's own target field if it is set to the matching variant,
/// else zero / empty; an unknown target compares equal, an unknown result holds.
fn compare_kv(
    c: &Compare,
    version: i64,
    create: i64,
    modr: i64,
    lease: i64,
    value: Option<&[u8]>,
) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let want = match (CompareTarget::try_from(c.target), &c.target_union) {
        (Ok(CompareTarget::Version), Some(TargetUnion::Version(v)))
        | (Ok(CompareTarget::Create), Some(TargetUnion::CreateRevision(v)))
        | (Ok(CompareTarget::Mod), Some(TargetUnion::ModRevision(v)))
        | (Ok(CompareTarget::Lease), Some(TargetUnion::Lease(v))) => *v,
        _ => 0,
    };
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Version) => version.cmp(&want),
        Ok(CompareTarget::Create) => create.cmp(&want),
        Ok(CompareTarget::Mod) => modr.cmp(&want),
        Ok(CompareTarget::Lease) => lease.cmp(&want),
        Ok(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            value.unwrap_or(&[]).cmp(want)
        }
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => true,
    }
}
