//! MVCC: etcd 3.4's key-value semantics — revisions, the key index, Range, Put,
//! DeleteRange, Txn and Compact — over a small backend trait.
//!
//! # Use
//!
//! The consensus core owns one [`KvStore`] and applies committed requests to it in order
//! (single-threaded, deterministic). Before a request enters raft, the gRPC layer runs the
//! same checks etcd makes there: [`validate_range`], [`validate_put`],
//! [`validate_delete_range`], [`validate_txn`] (with `--max-txn-ops`) and
//! [`validate_compaction`]. Then:
//!
//! ```text
//! KvStore::open(backend)                         rebuild the key index from the Key bucket
//! store.range(&RangeRequest)        -> RangeResponse                      (reads, &self)
//! store.txn_read(&TxnRequest)       -> TxnResponse       read-only txns (is_txn_readonly)
//! store.put(&PutRequest, &leases)   -> (PutResponse, WriteEffects)
//! store.delete_range(&DeleteRangeRequest) -> (DeleteRangeResponse, WriteEffects)
//! store.txn(&TxnRequest, &leases)   -> (TxnResponse, WriteEffects)
//! store.start_compaction(&CompactionRequest) -> CompactionResponse   reads below it now fail
//! store.compact_step(max_keys)      -> CompactionStep    frees old revisions, a batch of keys
//! store.compact(&CompactionRequest) -> CompactionResponse    both at once (open, tests)
//! store.delete_keys(&[key])         -> WriteEffects          lease revoke: one revision
//! store.events_between(from, to, prev_kv) -> Vec<Event>       history for catching-up watchers
//! store.current_revision() / compact_revision() (-1 = never)
//! store.leased_keys()  live (key, lease) pairs, to rebuild the lease table after open
//! store.live_key_count() / indexed_key_count() / backend() / backend_mut()
//! ```
//!
//! Responses carry a header with only `revision` set, exactly the revision etcd puts there
//! (e.g. a DeleteRange that deletes nothing answers the current revision, a txn the revision
//! after its writes); the caller fills `cluster_id`, `member_id` and `raft_term`. Nested
//! responses inside a txn have headers like etcd's (ops: revision only; nested txns: empty).
//! Errors are [`KvError`]s with etcd's gRPC code and message. A backend failure during a
//! write makes the store refuse everything after it (its index may no longer match the
//! backend; etcd would crash).
//!
//! [`WriteEffects`] lists the events of a write in order (prev_kv filled as etcd's watch
//! would fill it) for the watch hub, and the lease changes for the lease table.
//!
//! # Key index
//!
//! A `BTreeMap<Bytes, KeyIndex>` (keys copied out of request buffers). Each `KeyIndex` holds
//! the key's generations of revisions as etcd's keyIndex, plus its latest state inline
//! (mod revision, create revision, version, lease), so reads at the current revision — and
//! compares, and the `count` of a large range — touch only the map's nodes. Ranges collect
//! (key, revision) entries from the index, filter and sort them there (all sort targets
//! except VALUE), and read only the values they return from the backend.
//!
//! # On-disk encoding (compatible with etcd's bolt layout)
//!
//! * Key bucket: key = revision as 8-byte big-endian main, `_`, 8-byte big-endian sub
//!   (17 bytes), plus a trailing `t` for a deletion (tombstone); value = the protobuf
//!   `mvccpb.KeyValue` (a tombstone's value holds only the key). Big-endian keeps the bucket
//!   in revision order, which is what [`KvStore::open`] replays.
//! * Meta bucket: `scheduledCompactRev` and `finishedCompactRev`, each a 17-byte revision
//!   (main = the compaction revision, sub = 0). A scheduled compaction newer than the
//!   finished one is completed on open. Other Meta keys belong to the caller (e.g. the
//!   applied raft index).
//!
//! The current revision is not stored: it is the highest revision in the Key bucket, or the
//! compaction revision if that is higher (compaction may remove trailing tombstones).
//!
//! # etcd quirks reproduced on purpose
//!
//! * Range: `count` counts all matches (ignores limit and the min/max filters); with
//!   sort order NONE and a non-key target, etcd fetches `limit + 1` keys in key order, sorts
//!   only those ascending and then cuts to `limit`; with an order or a filter it fetches all.
//!   `count_only` never sets `more`. Sorting uses Go's unstable sort, so ties come out in
//!   etcd's order (see `gosort`). The header revision is the current revision even for a
//!   historical read. A revision equal to the compaction revision is still readable.
//! * Txn: range ops inside a txn with a negative revision below the compaction revision fail
//!   with "compacted" (a plain Range treats them as latest); write txns check puts (key
//!   exists for ignore_*, lease exists) on the whole branch before ranges; ranges and
//!   deletes inside a txn see the txn's earlier writes; a DeleteRange that deletes nothing
//!   reports the txn's new revision if an earlier op wrote; a nested txn's header is empty.
//! * Txn validation: a from-key deletion (range_end "\0") does not count as overlapping a
//!   put; puts in the then and else branches of one nested txn may repeat a key; a put in
//!   an earlier nested txn and a deletion in a later one do not conflict.
//! * Compact: compacting to 0 on a fresh store succeeds (the compaction revision starts at
//!   -1), a negative revision then fails with "compacted".
//!
//! Deviations where etcd crashes (a deliberate, deterministic answer instead): an unknown
//! sort target with an order leaves the key order; an ignore_value/ignore_lease put after a
//! from-key deletion of its key in the same txn fails the txn with "key not found".

mod backend;
mod error;
mod gosort;
mod key_index;
mod revision;
mod store;
mod validate;

#[cfg(test)]
mod tests;

pub use backend::{Bucket, KvBackend, MemBackend, MemBackendError};
pub use error::{code, KvError};
pub use revision::{decode_rev, encode_rev, Revision, MARKED_REV_BYTES_LEN, REV_BYTES_LEN};
pub use store::{
    is_txn_readonly, CompactionStep, KvStore, LeaseChange, LeaseCheck, NoLeases, WriteEffects,
    FINISHED_COMPACT_KEY, SCHEDULED_COMPACT_KEY,
};
pub use validate::{
    validate_compaction, validate_delete_range, validate_put, validate_range, validate_txn,
};
