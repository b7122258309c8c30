//! The steps the Lock and Election services share. etcd serves both by running its
//! `clientv3/concurrency` recipes over an in-process client that carries the caller's
//! context, so every range, txn, delete, lease grant and watch of a recipe is checked as the
//! caller's own. corekv runs the same requests ([`crate::recipes`]) through a [`Client`]: the
//! caller's credentials beside the [`Api`], every request through [`Api::call_as`] (the checks
//! and core path of the KV and Lease services) and every watch through the Watch service's
//! check. It waits with watches of its own ([`crate::api::watch::OwnWatch`]) on the
//! executor, so a waiting call costs a watcher and a task, never a thread or a poll.

use crate::api::auth::Caller;
use crate::api::kv;
use crate::api::watch::OwnWatch;
use crate::api::Api;
use crate::net::grpc::{Code, Status};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::event::EventType;
use crate::recipes;
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

/// etcd's in-process client with the caller's context: the recipes' requests, made as the
/// caller.
#[derive(Clone, Copy)]
pub struct Client<'a> {
    pub api: &'a Api,
    pub caller: &'a Caller,
}

impl<'a> Client<'a> {
    pub async fn range(self, req: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        match self.call(Request::Range(kv::check_range(req)?)).await? {
            Response::Range(r) => Ok(r),
            _ => Err(unexpected("range")),
        }
    }

    /// A txn with the limits and checks of KV.Txn.
    pub async fn txn(self, req: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        if prost::Message::encoded_len(&req) > self.api.limits.max_request_bytes {
            return Err(Status::invalid_argument("etcdserver: request is too large"));
        }
        let req = kv::check_txn(req, self.api.limits.max_txn_ops)?;
        match self.call(Request::Txn(req)).await? {
            Response::Txn(r) => Ok(r),
            _ => Err(unexpected("txn")),
        }
    }

    pub async fn delete(self, key: bytes::Bytes) -> Result<pb::DeleteRangeResponse, Status> {
        let req = kv::check_delete_range(pb::DeleteRangeRequest {
            key,
            ..Default::default()
        })?;
        match self.call(Request::DeleteRange(req)).await? {
            Response::DeleteRange(r) => Ok(r),
            _ => Err(unexpected("delete")),
        }
    }

    /// The lease a call's keys are attached to: its own, or (lease 0) a new one of 60 s that
    /// nobody keeps alive — etcd's services open a session that way and orphan it.
    pub async fn session_lease(self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let grant = pb::LeaseGrantRequest {
            ttl: SESSION_TTL,
            id: 0,
        };
        match self.call(Request::LeaseGrant(grant)).await? {
            Response::LeaseGrant(r) => Ok(r.id),
            _ => Err(unexpected("lease grant")),
        }
    }

    /// A watch of the recipe's, checked as the caller's watch would be.
    pub fn watch(self, create: pb::WatchCreateRequest) -> OwnWatch {
        self.api.own_watch(create, self.caller)
    }

    async fn call(self, request: Request) -> Result<Response, Status> {
        self.api.call_as(request, self.caller).await
    }

    /// etcd's `waitDeletes`: waits until no key under `prefix` created at or before
    /// `max_create_rev` is left, one key at a time (the newest first); answers the header of
    /// the range that found none.
    pub async fn wait_deletes(
        self,
        prefix: &[u8],
        max_create_rev: i64,
    ) -> Result<Option<pb::ResponseHeader>, Status> {
        loop {
            let resp = self
                .range(recipes::last_created_before(prefix, max_create_rev))
                .await?;
            let Some(kv) = resp.kvs.first() else {
                return Ok(resp.header);
            };
            let rev = resp.header.as_ref().map_or(0, |h| h.revision);
            self.wait_delete(&kv.key, rev).await?;
        }
    }

    /// Waits for a delete of `key` at or after `rev` (from history if it already happened).
    async fn wait_delete(self, key: &bytes::Bytes, rev: i64) -> Result<(), Status> {
        let mut watch = self.watch(pb::WatchCreateRequest {
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

/// Sends `request` to the core, as the caller, if the call that made it ends before
/// [`Abandon::keep`]: a client that goes away while it waits (its call is dropped) takes its
/// key with it, as etcd's services clean up when the caller's context is canceled. (etcd
/// 3.4 sends that cleanup without the caller's token, so with auth enabled it is refused and
/// the key stays until its lease ends; corekv's is the caller's, checked when it is sent.)
pub struct Abandon<'a> {
    client: Client<'a>,
    cleanup: Option<Request>,
}

impl<'a> Abandon<'a> {
    pub fn new(client: Client<'a>, cleanup: Request) -> Abandon<'a> {
        Abandon {
            client,
            cleanup: Some(cleanup),
        }
    }

    /// The call finished as it should: nothing to clean up.
    pub fn keep(mut self) {
        self.cleanup = None;
    }
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        let Some(request) = self.cleanup.take() else {
            return;
        };
        let api = self.client.api;
        match api.authorize(request, self.client.caller) {
            // Queued now; nobody waits for the answer.
            Ok((request, _)) => drop(api.core.call(request)),
            Err(e) => tracing::debug!("an abandoned call's cleanup is refused: {}", e.message),
        }
    }
}
