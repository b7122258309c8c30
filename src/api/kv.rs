//! KV service checks done before a request reaches the consensus core (etcd's v3rpc/key.go),
//! so that a bad request costs the core nothing.

use crate::mvcc::{self, KvError};
use crate::net::grpc::{Code, Status};
use crate::proto::etcdserverpb as pb;

fn status(e: KvError) -> Status {
    Status::new(Code::from_u32(e.grpc_code()), e.message())
}

pub fn check_range(r: pb::RangeRequest) -> Result<pb::RangeRequest, Status> {
    mvcc::validate_range(&r).map_err(status)?;
    Ok(r)
}

pub fn check_put(r: pb::PutRequest) -> Result<pb::PutRequest, Status> {
    mvcc::validate_put(&r).map_err(status)?;
    Ok(r)
}

pub fn check_delete_range(r: pb::DeleteRangeRequest) -> Result<pb::DeleteRangeRequest, Status> {
    mvcc::validate_delete_range(&r).map_err(status)?;
    Ok(r)
}

pub fn check_txn(r: pb::TxnRequest, max_ops: usize) -> Result<pb::TxnRequest, Status> {
    mvcc::validate_txn(&r, max_ops).map_err(status)?;
    Ok(r)
}

pub fn check_compaction(r: pb::CompactionRequest) -> Result<pb::CompactionRequest, Status> {
    mvcc::validate_compaction(&r).map_err(status)?;
    Ok(r)
}
