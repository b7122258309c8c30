//! The request checks etcd makes before a request enters raft (etcdserver/api/v3rpc/key.go).
//!
//! The gRPC layer calls these before proposing; the store itself does not repeat them.

use std::collections::HashSet;

use crate::proto::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};

use super::error::KvError;

/// Range: the key must be given.
pub fn validate_range(r: &RangeRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// Put: the key must be given; ignore_value excludes a value, ignore_lease a lease.
pub fn validate_put(r: &PutRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// DeleteRange: the key must be given.
pub fn validate_delete_range(r: &DeleteRangeRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// Compaction: etcd checks nothing before raft (the revision is checked when applied).
pub fn validate_compaction(_r: &CompactionRequest) -> Result<(), KvError> {
    Ok(())
}

/// Txn: at most `max_txn_ops` entries in each of compare, success and failure (a nested txn
/// gets what its parent's largest list leaves), every key given, every op non-empty, and no
/// overlapping writes (etcd's rules, including those across nested branches).
pub fn validate_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), KvError> {
    check_txn_request(r, max_txn_ops.min(i64::MAX as usize) as i64)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_request(r: &TxnRequest, max_txn_ops: i64) -> Result<(), KvError> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len()) as i64;
    if opc > max_txn_ops {
        return Err(KvError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_request_op(op, max_txn_ops - opc)?;
    }
    Ok(())
}

fn check_request_op(op: &RequestOp, max_txn_ops: i64) -> Result<(), KvError> {
    match &op.request {
        Some(request_op::Request::RequestRange(r)) => validate_range(r),
        Some(request_op::Request::RequestPut(r)) => validate_put(r),
        Some(request_op::Request::RequestDeleteRange(r)) => validate_delete_range(r),
        Some(request_op::Request::RequestTxn(r)) => check_txn_request(r, max_txn_ops),
        None => Err(KvError::KeyNotFound),
    }
}

/// A deletion's key interval as etcd's duplicate check sees it: a point, or [key, range_end)
/// with range_end taken literally (so a from-key deletion, range_end "\0", covers nothing —
/// an etcd quirk kept on purpose).
#[derive(Clone, Copy)]
enum Interval<'a> {
    Point(&'a [u8]),
    Range(&'a [u8], &'a [u8]),
}

impl Interval<'_> {
    fn contains(&self, k: &[u8]) -> bool {
        match *self {
            Interval::Point(p) => p == k,
            Interval::Range(b, e) => b <= k && k < e,
        }
    }
}

type Writes<'a> = (HashSet<&'a [u8]>, Vec<Interval<'a>>);

/// etcd's checkIntervals: the puts and deletions of a list of ops (including nested txns),
/// failing if a put overlaps another put or a deletion.
fn check_intervals(reqs: &[RequestOp]) -> Result<Writes<'_>, KvError> {
    let mut dels: Vec<Interval<'_>> = Vec::new();
    for req in reqs {
        if let Some(request_op::Request::RequestDeleteRange(d)) = &req.request {
            dels.push(if d.range_end.is_empty() {
                Interval::Point(&d.key)
            } else {
                Interval::Range(&d.key, &d.range_end)
            });
        }
    }
    let intersects = |dels: &[Interval<'_>], k: &[u8]| dels.iter().any(|d| d.contains(k));

    let mut puts: HashSet<&[u8]> = HashSet::new();
    for req in reqs {
        let Some(request_op::Request::RequestTxn(t)) = &req.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for &k in &puts_then {
            if puts.contains(k) || intersects(&dels, k) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(k);
        }
        for &k in &puts_else {
            // then and else exclude each other: the same key in both is fine.
            if puts.contains(k) && !puts_then.contains(k) {
                return Err(KvError::DuplicateKey);
            }
            if intersects(&dels, k) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }

    for req in reqs {
        let Some(request_op::Request::RequestPut(p)) = &req.request else {
            continue;
        };
        let k: &[u8] = &p.key;
        if puts.contains(k) || intersects(&dels, k) {
            return Err(KvError::DuplicateKey);
        }
        puts.insert(k);
    }
    Ok((puts, dels))
}
