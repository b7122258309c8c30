//! Serializable ranges answered from a cache, as etcd's proxy answers them.
//!
//! An entry is the reply to one exact serializable request (after the namespace prefix). A
//! write through the proxy drops every entry whose range it touches (a txn: the ranges of
//! both branches), a compaction drops them all. A write that does not pass through this proxy
//! (another proxy, a client of a member) drops nothing: until a write through this proxy
//! touches the range, or the entry is pushed out by newer ones, a serializable read through
//! the proxy may answer from before that write. That is what serializable allows (a stale
//! read), and etcd's proxy does the same. Linearizable reads always go upstream.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::api::decode;
use crate::proto::etcdserverpb as pb;
use crate::proto::path;

/// etcd's proxy keeps 2048 replies.
const CAPACITY: usize = 2048;

struct Entry {
    key: Bytes,
    end: Bytes,
    reply: Bytes,
}

pub struct RangeCache {
    entries: RefCell<HashMap<Bytes, Entry>>,
    /// Insertion order, for eviction (may name entries already dropped).
    order: RefCell<VecDeque<Bytes>>,
    /// Bumped by every invalidation: a read that started before one is not cached.
    generation: Cell<u64>,
}

/// Whether [a, a_end) and [b, b_end) share a key (an empty end is the key alone, "\0" is
/// every key from there on).
fn overlaps(a: &[u8], a_end: &[u8], b: &[u8], b_end: &[u8]) -> bool {
    let upper = |k: &[u8], end: &[u8]| -> Option<Vec<u8>> {
        match end {
            [] => {
                let mut e = k.to_vec();
                e.push(0);
                Some(e)
            }
            [0] => None,
            e => Some(e.to_vec()),
        }
    };
    let below = |k: &[u8], end: &Option<Vec<u8>>| end.as_ref().is_none_or(|e| k < e.as_slice());
    below(a, &upper(b, b_end)) && below(b, &upper(a, a_end))
}

impl Default for RangeCache {
    fn default() -> Self {
        Self::new()
    }
}

impl RangeCache {
    pub fn new() -> RangeCache {
        RangeCache {
            entries: RefCell::new(HashMap::new()),
            order: RefCell::new(VecDeque::new()),
            generation: Cell::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    pub fn get(&self, request: &[u8]) -> Option<Bytes> {
        self.entries.borrow().get(request).map(|e| e.reply.clone())
    }

    /// Caches `reply` to `request`, unless a write was invalidated since `generation` (the
    /// reply may be from before it).
    pub fn put(&self, request: Bytes, key: &[u8], end: &[u8], generation: u64, reply: Bytes) {
        if generation != self.generation.get() {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        let mut order = self.order.borrow_mut();
        while entries.len() >= CAPACITY {
            match order.pop_front() {
                Some(old) => {
                    entries.remove(&old);
                }
                None => break,
            }
        }
        let entry = Entry {
            key: Bytes::copy_from_slice(key),
            end: Bytes::copy_from_slice(end),
            reply,
        };
        if entries.insert(request.clone(), entry).is_none() {
            order.push_back(request);
        }
        debug_assert!(entries.len() <= CAPACITY);
    }

    fn drop_overlapping(&self, ranges: &[(Bytes, Bytes)]) {
        self.generation.set(self.generation.get() + 1);
        let mut entries = self.entries.borrow_mut();
        if entries.is_empty() {
            return;
        }
        entries.retain(|_, e| {
            !ranges
                .iter()
                .any(|(k, end)| overlaps(&e.key, &e.end, k, end))
        });
        let mut order = self.order.borrow_mut();
        order.retain(|r| entries.contains_key(r));
    }

    /// A write (Put, DeleteRange or Txn, already prefixed) went upstream: the ranges it
    /// touches are dropped. A request that cannot be read drops everything.
    pub fn invalidate_write(&self, p: &str, request: &[u8]) {
        let mut ranges = Vec::new();
        let ok = match p {
            path::PUT => decode::<pb::PutRequest>(request)
                .map(|r| ranges.push((r.key, Bytes::new())))
                .is_ok(),
            path::DELETE_RANGE => decode::<pb::DeleteRangeRequest>(request)
                .map(|r| ranges.push((r.key, r.range_end)))
                .is_ok(),
            path::TXN => decode::<pb::TxnRequest>(request)
                .map(|t| txn_ranges(&t, &mut ranges))
                .is_ok(),
            _ => false,
        };
        if ok {
            self.drop_overlapping(&ranges);
        } else {
            self.compacted();
        }
    }

    /// A compaction: every cached reply may name revisions that are gone.
    pub fn compacted(&self) {
        self.generation.set(self.generation.get() + 1);
        self.entries.borrow_mut().clear();
        self.order.borrow_mut().clear();
    }
}

/// The key ranges a txn may write.
fn txn_ranges(t: &pb::TxnRequest, out: &mut Vec<(Bytes, Bytes)>) {
    use pb::request_op::Request as Op;
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Op::RequestPut(r)) => out.push((r.key.clone(), Bytes::new())),
            Some(Op::RequestDeleteRange(r)) => out.push((r.key.clone(), r.range_end.clone())),
            Some(Op::RequestTxn(t)) => txn_ranges(t, out),
            Some(Op::RequestRange(_)) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_overlap_as_etcd_reads_them() {
        assert!(overlaps(b"a", b"", b"a", b""));
        assert!(!overlaps(b"a", b"", b"b", b""));
        assert!(overlaps(b"a", b"c", b"b", b""));
        assert!(!overlaps(b"a", b"c", b"c", b""));
        assert!(overlaps(b"a", b"\0", b"zzz", b""));
        assert!(!overlaps(b"b", b"\0", b"a", b""));
        assert!(overlaps(b"", b"\0", b"a", b"b"));
    }

    #[test]
    fn a_write_drops_what_it_touches_and_a_late_read_is_not_cached() {
        let c = RangeCache::new();
        let g = c.generation();
        c.put("r1".into(), b"a", b"", g, "one".into());
        c.put("r2".into(), b"b", b"d", g, "two".into());
        let put = crate::net::grpc::encode_message(&pb::PutRequest {
            key: "c".into(),
            ..Default::default()
        });
        c.invalidate_write(path::PUT, &put[5..]);
        assert_eq!(c.get(b"r1"), Some("one".into()));
        assert_eq!(c.get(b"r2"), None);
        c.put("r2".into(), b"b", b"d", g, "stale".into());
        assert_eq!(c.get(b"r2"), None, "a read from before the write");
    }
}
