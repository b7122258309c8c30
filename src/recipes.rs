//! The requests of etcd's coordination recipes (`clientv3/concurrency`: mutex and election),
//! built as etcd builds them, with the same keys. Two users send them: the client's recipes
//! (`client::concurrency`, behind corekvctl's `lock` and `elect`) over gRPC, and the server's
//! Lock and Election services (`api::lock`, `api::election`) straight to the core — as etcd's
//! own services run the same recipes over an in-process client. Either way, a lock taken one
//! way excludes one taken the other way.
//!
//! Keys: a mutex or election named `name` uses the prefix `name/`; each contender writes
//! `name/<lease id in lowercase hex>` attached to its lease. The contender whose key has the
//! lowest create revision holds the lock (is the leader); the others each wait for the
//! deletion of the keys created before their own.

use bytes::Bytes;

use crate::proto::etcdserverpb as pb;

/// The prefix of a mutex or election's keys.
pub fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// A contender's key: the prefix and its lease ID as Go's `%x` prints an int64 (a negative
/// ID keeps its sign).
pub fn contender_key(prefix: &[u8], lease: i64) -> Bytes {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut key = prefix.to_vec();
    key.extend_from_slice(hex.as_bytes());
    key.into()
}

/// The end of the range that holds every key starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented and what follows dropped; `"\0"` (every
/// key from `prefix` on) when there is no such byte.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A range request for the key of `prefix` with the lowest (`ascend`: etcd's `WithFirstCreate`)
/// or highest (`WithLastCreate`) create revision.
pub fn first_or_last_created(prefix: &[u8], ascend: bool) -> pb::RangeRequest {
    use pb::range_request::{SortOrder, SortTarget};
    pb::RangeRequest {
        key: prefix.to_vec().into(),
        range_end: prefix_range_end(prefix).into(),
        limit: 1,
        sort_target: SortTarget::Create as i32,
        sort_order: if ascend {
            SortOrder::Ascend
        } else {
            SortOrder::Descend
        } as i32,
        ..Default::default()
    }
}

/// The key of `prefix` created last at or before `max_create_rev` (what a waiter waits on).
pub fn last_created_before(prefix: &[u8], max_create_rev: i64) -> pb::RangeRequest {
    pb::RangeRequest {
        max_create_revision: max_create_rev,
        ..first_or_last_created(prefix, false)
    }
}

pub fn compare_create(key: &[u8], rev: i64) -> pb::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    pb::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec().into(),
        range_end: Default::default(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

pub fn op_put(key: &[u8], value: &[u8], lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec().into(),
            value: value.to_vec().into(),
            lease,
            ..Default::default()
        })),
    }
}

pub fn op_range(req: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(req)),
    }
}

pub fn op_get(key: &[u8]) -> pb::RequestOp {
    op_range(pb::RangeRequest {
        key: key.to_vec().into(),
        ..Default::default()
    })
}

pub fn op_delete(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.to_vec().into(),
                ..Default::default()
            },
        )),
    }
}

/// The `i`th answer of a txn, if it is a range.
pub fn range_of(resp: &pb::TxnResponse, i: usize) -> Option<&pb::RangeResponse> {
    match resp.responses.get(i)?.response.as_ref()? {
        pb::response_op::Response::ResponseRange(r) => Some(r),
        _ => None,
    }
}

/// Mutex.Lock's one txn: put `key` with `lease` unless it exists (else read it), and read the
/// current holder, so an uncontended lock takes one request. Answers: [own key or put, owner].
pub fn lock_txn(prefix: &[u8], key: &[u8], lease: i64) -> pb::TxnRequest {
    let get_owner = op_range(first_or_last_created(prefix, true));
    pb::TxnRequest {
        compare: vec![compare_create(key, 0)],
        success: vec![op_put(key, b"", lease), get_owner.clone()],
        failure: vec![op_get(key), get_owner],
    }
}

/// Election.Campaign's txn: put `key` = `value` with `lease` unless it exists (else read it).
pub fn campaign_txn(key: &[u8], value: &[u8], lease: i64) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![compare_create(key, 0)],
        success: vec![op_put(key, value, lease)],
        failure: vec![op_get(key)],
    }
}

/// Election.Proclaim's txn: a new value for the leader's key, if it is still the one created
/// at `rev`.
pub fn proclaim_txn(key: &[u8], rev: i64, value: &[u8], lease: i64) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![compare_create(key, rev)],
        success: vec![op_put(key, value, lease)],
        failure: vec![],
    }
}

/// Election.Resign's txn: delete the leader's key, if it is still the one created at `rev`.
pub fn resign_txn(key: &[u8], rev: i64) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![compare_create(key, rev)],
        success: vec![op_delete(key)],
        failure: vec![],
    }
}

/// etcd's errors for a failed proclaim and for an election without a leader
/// (`concurrency.ErrElectionNotLeader`, `ErrElectionNoLeader`).
pub const NOT_LEADER: &str = "election: not leader";
pub const NO_LEADER: &str = "election: no leader";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_range_end(b"abc"), b"abd");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_range_end(b""), b"\0");
    }

    #[test]
    fn contender_keys_print_the_lease_as_go_does() {
        assert_eq!(
            &contender_key(b"l/", 0x694d7a3c1f2e0b05)[..],
            b"l/694d7a3c1f2e0b05"
        );
        assert_eq!(&contender_key(b"l/", -1)[..], b"l/-1");
    }
}
