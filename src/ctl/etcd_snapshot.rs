//! etcd's snapshot files (its bolt db) brought into corekv's backend.
//!
//! etcd and corekv keep the same records: the `key` bucket maps a revision (8-byte big-endian
//! main, `_`, 8-byte sub, `t` for a deletion) to an `mvccpb.KeyValue`, the `lease` bucket a
//! lease ID (8 bytes big-endian) to a `leasepb.Lease` (ID, TTL, RemainingTTL: the same fields
//! and numbers as corekv's `LeaseRecord`), and `meta` holds `scheduledCompactRev` and
//! `finishedCompactRev` as encoded revisions. So every record is checked to decode and then
//! copied byte for byte into a new corekv backend: keys, values, create/mod revisions,
//! versions, tombstones, the compaction and the leases come across as they were (and HashKV
//! with them). etcd's `consistent_index`, `term`, `confState`, members and auth are not
//! copied: the restored member starts a new cluster (its raft log begins anew), as etcd's own
//! restore does; auth is not implemented in corekv.

use std::path::Path;

use prost::Message;

use super::bolt::{BoltFile, BucketRef, Entry};
use crate::mvcc::decode_rev;
use crate::proto::corekvpb::LeaseRecord;
use crate::proto::mvccpb::KeyValue;
use crate::storage::{Bucket, Db, DbOptions};

/// Entries written per backend commit while importing.
const BATCH: usize = 20_000;

/// What an etcd snapshot holds, counted while checking it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EtcdSummary {
    /// The newest revision in the key bucket.
    pub revision: i64,
    /// The finished compaction's revision (0: none).
    pub compact_revision: i64,
    /// etcd's applied raft index (reported, not carried over).
    pub consistent_index: u64,
    pub key_entries: u64,
    pub leases: u64,
}

/// An etcd snapshot file, mapped, whose bolt structure and records all checked.
pub struct EtcdFile {
    map: memmap2::Mmap,
    db_len: usize,
    pub summary: EtcdSummary,
}

impl EtcdFile {
    /// Maps the first `db_len` bytes of `file` (the bolt db, without the digest) and checks
    /// every page and record; writes nothing.
    pub fn open(file: &std::fs::File, db_len: u64, name: &str) -> Result<EtcdFile, String> {
        // SAFETY: a read-only map of a snapshot file the user handed over; corekvctl never
        // writes it. (Someone truncating it meanwhile could fault the process, as with any
        // mapped input.)
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| format!("map {name}: {e}"))?;
        let db_len = usize::try_from(db_len)
            .ok()
            .filter(|&l| l <= map.len())
            .ok_or_else(|| format!("{name}: shorter than its stated length"))?;
        let bolt = BoltFile::open(&map[..db_len])
            .map_err(|e| format!("{name} is an etcd (bolt) snapshot but damaged: {e}"))?;
        let summary = entries(&bolt, &mut |_, _, _| Ok(()))
            .map_err(|e| format!("{name} is an etcd (bolt) snapshot but damaged: {e}"))?;
        Ok(EtcdFile {
            map,
            db_len,
            summary,
        })
    }

    /// Writes every imported record into a new corekv backend at `path`.
    pub fn write_backend(&self, path: &Path) -> Result<(), String> {
        let storage = |e: crate::storage::StorageError| format!("writing {}: {e}", path.display());
        let bolt = BoltFile::open(&self.map[..self.db_len])?;
        let db = Db::open(path, DbOptions::default()).map_err(storage)?;
        let mut txn = Some(db.begin_write().map_err(storage)?);
        let mut n = 0usize;
        entries(&bolt, &mut |b, k, v| {
            let t = txn.as_mut().expect("open between batches");
            t.put(b, k, v).map_err(storage)?;
            n += 1;
            if n.is_multiple_of(BATCH) {
                txn.take().expect("open").commit().map_err(storage)?;
                txn = Some(db.begin_write().map_err(storage)?);
            }
            Ok(())
        })?;
        txn.take().expect("open").commit().map_err(storage)?;
        drop(db);
        crate::server::datadir::sync_parent(path)
            .map_err(|e| format!("syncing {}: {e}", path.display()))
    }
}

/// A top-level bucket's reference, if the root has one by that name.
fn top_bucket<'a>(bolt: &BoltFile<'a>, name: &str) -> Result<Option<BucketRef<'a>>, String> {
    match bolt.get(bolt.root(), name.as_bytes())? {
        None => Ok(None),
        Some(Entry::Bucket(b)) => Ok(Some(b)),
        Some(Entry::Value(_)) => Err(format!("{name:?} in the root is not a bucket")),
    }
}

fn value<'a>(bucket: &str, k: &[u8], e: Entry<'a>) -> Result<&'a [u8], String> {
    match e {
        Entry::Value(v) => Ok(v),
        Entry::Bucket(_) => Err(format!(
            "bucket {bucket:?}: entry {} is a nested bucket",
            hex(k)
        )),
    }
}

/// Receives each record to import: its corekv bucket, key and value.
type Sink<'s> = dyn FnMut(Bucket, &[u8], &[u8]) -> Result<(), String> + 's;

/// Checks every record of etcd's key, lease and meta buckets and hands those corekv keeps to
/// `sink` (in each bucket's key order); a summary of what was there.
fn entries(bolt: &BoltFile, sink: &mut Sink) -> Result<EtcdSummary, String> {
    let mut s = EtcdSummary::default();
    let key =
        top_bucket(bolt, "key")?.ok_or("no \"key\" bucket: not an etcd v3 backend".to_string())?;
    bolt.for_each(key, &mut |k, e| {
        let v = value("key", k, e)?;
        let bad = |what: String| format!("key bucket: revision {}: {what}", hex(k));
        let (rev, tombstone) =
            decode_rev(k).ok_or_else(|| bad("not an encoded revision".into()))?;
        let kv = KeyValue::decode(v).map_err(|e| bad(format!("value does not decode: {e}")))?;
        if kv.key.is_empty() || (!tombstone && kv.mod_revision != rev.main) {
            return Err(bad(format!(
                "a KeyValue with mod revision {} and a {}-byte key",
                kv.mod_revision,
                kv.key.len()
            )));
        }
        s.revision = rev.main;
        s.key_entries += 1;
        sink(Bucket::Key, k, v)
    })?;
    if let Some(lease) = top_bucket(bolt, "lease")? {
        bolt.for_each(lease, &mut |k, e| {
            let v = value("lease", k, e)?;
            let rec = LeaseRecord::decode(v)
                .map_err(|e| format!("lease bucket: a lease does not decode: {e}"))?;
            if k.len() != 8 || i64::from_be_bytes(k.try_into().expect("8 bytes")) != rec.id {
                return Err(format!(
                    "lease bucket: key {} does not name lease {:x}",
                    hex(k),
                    rec.id
                ));
            }
            s.leases += 1;
            sink(Bucket::Lease, k, v)
        })?;
    }
    if let Some(meta) = top_bucket(bolt, "meta")? {
        bolt.for_each(meta, &mut |k, e| {
            let v = value("meta", k, e)?;
            match k {
                b"scheduledCompactRev" | b"finishedCompactRev" => {
                    let (rev, _) = decode_rev(v).ok_or_else(|| {
                        format!(
                            "meta bucket: {} is not an encoded revision",
                            String::from_utf8_lossy(k)
                        )
                    })?;
                    if k == b"finishedCompactRev" {
                        s.compact_revision = rev.main;
                    }
                    sink(Bucket::Meta, k, v)
                }
                b"consistent_index" if v.len() == 8 => {
                    s.consistent_index = u64::from_be_bytes(v.try_into().expect("8 bytes"));
                    Ok(())
                }
                _ => Ok(()),
            }
        })?;
    }
    Ok(s)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
