//! The steps the Lock and Election services share. etcd serves both by running its
//! `clientv3/concurrency` recipes over an in-process client; corekv runs the same requests
//! ([`crate::recipes`]) through the same checks and core path as the KV service, and waits
//! with watches of its own ([`crate::api::watch::OwnWatch`]) on the executor, so a waiting call costs a watcher
//! and a task, never a thread or a poll.

use std::rc::Rc;

use crate::api::kv;
use crate::api::Api;
use crate::net::grpc::{Code, Status};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::event::EventType;
use crate::recipes;
use crate::server::link::CoreClient;
use crate::server::message::{Request, Response};

/// TTL of the lease a call without one gets (clientv3's default session TTL).
const SESSION_TTL: i64 = 60;

fn unexpected(what: &str) -> Status {
    Status::internal(format!("unexpected answer from the core to a {what}"))
}

/// An error of etcd's concurrency package: a plain Go error, which gRPC sends as Unknown
/// (as every error of these services; see `Api::recipe`).
pub fn recipe_error(message: &str) -> Status {
    Status::new(Code::Unknown, message)
}

pub async fn range(api: &Api, req: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
    match api.core.call(Request::Range(kv::check_range(req)?)).await? {
        Response::Range(r) => Ok(r),
        _ => Err(unexpected("range")),
    }
}

/// A txn with the limits and checks of KV.Txn.
pub async fn txn(api: &Api, req: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
    if prost::Message::encoded_len(&req) > api.limits.max_request_bytes {
        return Err(Status::invalid_argument("etcdserver: request is too large"));
    }
    let req = kv::check_txn(req, api.limits.max_txn_ops)?;
    match api.core.call(Request::Txn(req)).await? {
        Response::Txn(r) => Ok(r),
        _ => Err(unexpected("txn")),
    }
}

pub async fn delete(api: &Api, key: bytes::Bytes) -> Result<pb::DeleteRangeResponse, Status> {
    let req = kv::check_delete_range(pb::DeleteRangeRequest {
        key,
        ..Default::default()
    })?;
    match api.core.call(Request::DeleteRange(req)).await? {
        Response::DeleteRange(r) => Ok(r),
        _ => Err(unexpected("delete")),
    }
}

/// The lease a call's keys are attached to: its own, or (lease 0) a new one of 60 s that
/// nobody keeps alive — etcd's services open a session that way and orphan it.
pub async fn session_lease(api: &Api, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let grant = pb::LeaseGrantRequest {
        ttl: SESSION_TTL,
        id: 0,
    };
    match api.core.call(Request::LeaseGrant(grant)).await? {
        Response::LeaseGrant(r) => Ok(r.id),
        _ => Err(unexpected("lease grant")),
    }
}

/// etcd's `waitDeletes`: waits until no key under `prefix` created at or before
/// `max_create_rev` is left, one key at a time (the newest first); answers the header of the
/// range that found none.
pub async fn wait_deletes(
    api: &Api,
    prefix: &[u8],
    max_create_rev: i64,
) -> Result<Option<pb::ResponseHeader>, Status> {
    loop {
        let resp = range(api, recipes::last_created_before(prefix, max_create_rev)).await?;
        let Some(kv) = resp.kvs.first() else {
            return Ok(resp.header);
        };
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        wait_delete(api, &kv.key, rev).await?;
    }
}

/// Waits for a delete of `key` at or after `rev` (from history if it already happened).
async fn wait_delete(api: &Api, key: &bytes::Bytes, rev: i64) -> Result<(), Status> {
    let mut watch = api.own_watch(pb::WatchCreateRequest {
        key: key.clone(),
        start_revision: rev,
        ..Default::default()
    });
    loop {
        let resp = watch.next().await?;
        check_not_canceled(&resp)?;
        if resp
            .events
            .iter()
            .any(|e| e.r#type == EventType::Delete as i32)
        {
            return Ok(());
        }
    }
}

/// The error a client's watch reports when the server cancels it.
pub fn check_not_canceled(resp: &pb::WatchResponse) -> Result<(), Status> {
    if !resp.canceled {
        Ok(())
    } else if resp.compact_revision != 0 {
        Err(Status::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ))
    } else {
        Err(recipe_error(&resp.cancel_reason))
    }
}

/// Sends `request` to the core if the call that made it ends before [`Abandon::keep`]: a
/// client that goes away while it waits (its call is dropped) takes its key with it, as
/// etcd's services clean up when the caller's context is canceled.
pub struct Abandon {
    core: Rc<CoreClient>,
    cleanup: Option<Request>,
}

impl Abandon {
    pub fn new(api: &Api, cleanup: Request) -> Abandon {
        Abandon {
            core: api.core.clone(),
            cleanup: Some(cleanup),
        }
    }

    /// The call finished as it should: nothing to clean up.
    pub fn keep(mut self) {
        self.cleanup = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(request) = self.cleanup.take() {
            // Queued now; nobody waits for the answer.
            drop(self.core.call(request));
        }
    }
}
