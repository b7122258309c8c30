//! Tests of the MVCC layer (all test names contain `mvcc`).

mod golden;
mod model;
mod unit;

use std::collections::HashSet;

use bytes::Bytes;

use crate::proto::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};

use super::{KvError, KvStore, LeaseCheck, MemBackend};

/// A lease table that holds the given leases.
#[derive(Default, Clone)]
pub(crate) struct Leases(pub HashSet<i64>);

impl LeaseCheck for Leases {
    fn exists(&self, id: i64) -> bool {
        self.0.contains(&id)
    }
}

pub(crate) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub(crate) fn new_store() -> KvStore<MemBackend> {
    KvStore::open(MemBackend::new()).unwrap()
}

pub(crate) fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    }
}

pub(crate) fn range_req(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        range_end: b(end),
        ..Default::default()
    }
}

pub(crate) fn del_req(k: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: b(k),
        range_end: b(end),
        ..Default::default()
    }
}

pub(crate) fn compact_req(rev: i64) -> CompactionRequest {
    CompactionRequest {
        revision: rev,
        physical: false,
    }
}

/// A txn op from a full RangeRequest.
pub(crate) fn op_range_req(r: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(r)),
    }
}

/// A txn op from a full PutRequest.
pub(crate) fn op_put_req(r: PutRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(r)),
    }
}

/// A txn with no compares and these success ops.
pub(crate) fn then(success: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        success,
        ..Default::default()
    }
}

pub(crate) fn op_put(k: &str, v: &str) -> RequestOp {
    op_put_req(put_req(k, v))
}

pub(crate) fn op_range(k: &str, end: &str) -> RequestOp {
    op_range_req(range_req(k, end))
}

pub(crate) fn op_del(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(del_req(k, end))),
    }
}

pub(crate) fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(t)),
    }
}

pub(crate) fn cmp(
    key: &str,
    end: &str,
    target: compare::CompareTarget,
    result: compare::CompareResult,
    union: compare::TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: b(key),
        range_end: b(end),
        target_union: Some(union),
    }
}

/// put and unwrap, returning the revision.
pub(crate) fn put(s: &mut KvStore<MemBackend>, k: &str, v: &str) -> i64 {
    let (r, _) = s.put(&put_req(k, v), &Leases::default()).unwrap();
    r.header.unwrap().revision
}

/// (key, value, create, mod, version) of a range result.
pub(crate) type Row = (String, String, i64, i64, i64);

/// The rows of a range.
pub(crate) fn kvs(s: &KvStore<MemBackend>, req: &RangeRequest) -> Result<Vec<Row>, KvError> {
    Ok(s.range(req)?
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key.to_vec()).unwrap(),
                String::from_utf8(kv.value.to_vec()).unwrap(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect())
}
