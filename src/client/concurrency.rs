//! etcd's coordination recipes — session, mutex, election — built on leases, txns and watches
//! exactly as etcd's `clientv3/concurrency` builds them, with the same keys, so a corekvctl lock
//! and an etcdctl lock (or a Go client's) exclude each other, and elections mix freely.
//!
//! Keys: a mutex or election named `name` uses the prefix `name/`; each contender writes
//! `name/<lease id in lowercase hex>` attached to its session lease. The contender whose key has
//! the lowest create revision holds the lock (is the leader); the others each wait for the
//! deletion of the key created just before their own.

use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver};

use super::{prefix_range_end, Client, ClientError};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::{event::EventType, KeyValue};

/// clientv3's keep-alive deadline before the first reply tells the real TTL.
const FIRST_DEADLINE: Duration = Duration::from_secs(5);
/// Pause between attempts to reopen a failed keep-alive stream.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Keeps lease `id` alive the way clientv3 does: a keep-alive right away, then every TTL/3;
/// `on_reply` sees every reply. Returns once the lease is gone: a reply with TTL <= 0 (expired or
/// revoked), or no successful reply for a whole TTL (broken streams are reopened meanwhile).
pub async fn keep_alive_loop(
    client: &Client,
    id: i64,
    mut on_reply: impl FnMut(&pb::LeaseKeepAliveResponse),
) {
    let mut deadline = Instant::now() + FIRST_DEADLINE;
    let req = pb::LeaseKeepAliveRequest { id };
    loop {
        if let Ok((mut tx, mut rx)) = client.lease_keep_alive().await {
            loop {
                if tx.send(&req).await.is_err() {
                    break;
                }
                let wait = deadline.saturating_duration_since(Instant::now());
                let reply = futures_lite::future::or(async { Some(rx.message().await) }, async {
                    glommio::timer::sleep(wait).await;
                    None
                })
                .await;
                match reply {
                    None => return,
                    Some(Ok(Some(r))) => {
                        if r.ttl <= 0 {
                            return;
                        }
                        on_reply(&r);
                        let ttl = Duration::from_secs(r.ttl as u64);
                        deadline = Instant::now() + ttl;
                        glommio::timer::sleep(ttl / 3).await;
                    }
                    Some(_) => break,
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        glommio::timer::sleep(left.min(RETRY_PAUSE)).await;
    }
}

/// A lease kept alive in the background for as long as the session lives (etcd's `Session`).
pub struct Session {
    client: Client,
    lease: i64,
    ttl: i64,
    done: LocalReceiver<()>,
    keeper: Option<glommio::task::JoinHandle<()>>,
}

impl Session {
    /// Grants a lease of `ttl` seconds and starts keeping it alive.
    pub async fn new(client: &Client, ttl: i64) -> Result<Session, ClientError> {
        let resp = client
            .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
            .await?;
        let lease = resp.id;
        let (done_tx, done) = local_channel::new_bounded::<()>(1);
        let c = client.clone();
        let keeper = glommio::spawn_local(async move {
            keep_alive_loop(&c, lease, |_| {}).await;
            drop(done_tx);
        })
        .detach();
        Ok(Session {
            client: client.clone(),
            lease,
            ttl,
            done,
            keeper: Some(keeper),
        })
    }

    pub fn lease(&self) -> i64 {
        self.lease
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Resolves when the lease could no longer be kept alive (expired, revoked, or unreachable).
    pub async fn done(&self) {
        while self.done.recv().await.is_some() {}
    }

    /// Stops keeping the lease alive and revokes it.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.orphan();
        let c = &self.client;
        let req = pb::LeaseRevokeRequest { id: self.lease };
        super::conn::with_timeout(Duration::from_secs(self.ttl.max(1) as u64), async {
            c.lease_revoke(req).await
        })
        .await
        .map(|_| ())
    }

    /// Stops keeping the lease alive; it expires after its TTL.
    pub fn orphan(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.cancel();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.orphan();
    }
}

/// A range request for the key of `prefix` with the lowest (`ascend`) or highest create revision.
fn first_or_last_created(prefix: &[u8], ascend: bool) -> pb::RangeRequest {
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

fn compare_create(key: &[u8], rev: i64) -> pb::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    pb::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec().into(),
        range_end: Default::default(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

fn op_put(key: &[u8], value: &[u8], lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec().into(),
            value: value.to_vec().into(),
            lease,
            ..Default::default()
        })),
    }
}

fn op_range(req: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(req)),
    }
}

fn op_get(key: &[u8]) -> pb::RequestOp {
    op_range(pb::RangeRequest {
        key: key.to_vec().into(),
        ..Default::default()
    })
}

fn op_delete(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.to_vec().into(),
                ..Default::default()
            },
        )),
    }
}

fn range_of(resp: &pb::TxnResponse, i: usize) -> Option<&pb::RangeResponse> {
    match resp.responses.get(i)?.response.as_ref()? {
        pb::response_op::Response::ResponseRange(r) => Some(r),
        _ => None,
    }
}

fn missing(what: &str) -> ClientError {
    ClientError::Transport(format!("unexpected txn response: no {what}"))
}

/// An error for a watch the server canceled.
fn watch_canceled(resp: &pb::WatchResponse) -> ClientError {
    if resp.compact_revision != 0 {
        ClientError::Transport("etcdserver: mvcc: required revision has been compacted".into())
    } else if !resp.cancel_reason.is_empty() {
        ClientError::Transport(resp.cancel_reason.clone())
    } else {
        ClientError::Transport("watch canceled by the server".into())
    }
}

/// Watches `key` from `rev` (and `range_end` if not empty), handing each response with events to
/// `on_events` until it returns `true`.
pub async fn watch_until(
    client: &Client,
    key: &[u8],
    range_end: &[u8],
    rev: i64,
    mut on_events: impl FnMut(&pb::WatchResponse) -> bool,
) -> Result<(), ClientError> {
    let (mut tx, mut rx) = client.watch().await?;
    let create = pb::WatchCreateRequest {
        key: key.to_vec().into(),
        range_end: range_end.to_vec().into(),
        start_revision: rev,
        ..Default::default()
    };
    tx.send(&pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
    })
    .await?;
    loop {
        let Some(resp) = rx.message().await? else {
            return Err(ClientError::Transport("lost watcher".into()));
        };
        if resp.canceled {
            return Err(watch_canceled(&resp));
        }
        if !resp.events.is_empty() && on_events(&resp) {
            tx.cancel();
            return Ok(());
        }
    }
}

/// Waits until `key` is deleted, watching from `rev`.
async fn wait_delete(client: &Client, key: &[u8], rev: i64) -> Result<(), ClientError> {
    watch_until(client, key, &[], rev, |resp| {
        resp.events
            .iter()
            .any(|e| e.r#type == EventType::Delete as i32)
    })
    .await
}

/// Waits until every key under `prefix` created at or before `max_create_rev` is gone.
async fn wait_deletes(
    client: &Client,
    prefix: &[u8],
    max_create_rev: i64,
) -> Result<Option<pb::ResponseHeader>, ClientError> {
    loop {
        let mut req = first_or_last_created(prefix, false);
        req.max_create_revision = max_create_rev;
        let resp = client.range(req).await?;
        let Some(kv) = resp.kvs.first() else {
            return Ok(resp.header);
        };
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        wait_delete(client, &kv.key, rev).await?;
    }
}

/// A distributed lock (etcd's `concurrency.Mutex`).
pub struct Mutex<'s> {
    session: &'s Session,
    prefix: Vec<u8>,
    key: Vec<u8>,
    rev: i64,
    header: Option<pb::ResponseHeader>,
}

impl<'s> Mutex<'s> {
    pub fn new(session: &'s Session, name: &str) -> Mutex<'s> {
        Mutex {
            session,
            prefix: format!("{name}/").into_bytes(),
            key: Vec::new(),
            rev: -1,
            header: None,
        }
    }

    /// Waits until this session holds the lock.
    pub async fn lock(&mut self) -> Result<(), ClientError> {
        let client = self.session.client();
        let lease = self.session.lease();
        self.key = format!("{}{:x}", String::from_utf8_lossy(&self.prefix), lease).into_bytes();
        let get_owner = op_range(first_or_last_created(&self.prefix, true));
        let txn = pb::TxnRequest {
            compare: vec![compare_create(&self.key, 0)],
            success: vec![op_put(&self.key, b"", lease), get_owner.clone()],
            failure: vec![op_get(&self.key), get_owner],
        };
        let resp = client.txn(txn).await?;
        let header = resp.header.unwrap_or_default();
        self.rev = header.revision;
        if !resp.succeeded {
            let mine = range_of(&resp, 0).and_then(|r| r.kvs.first());
            self.rev = mine.ok_or_else(|| missing("own key"))?.create_revision;
        }
        let owner = range_of(&resp, 1).ok_or_else(|| missing("owner range"))?;
        if owner
            .kvs
            .first()
            .is_none_or(|kv| kv.create_revision == self.rev)
        {
            self.header = Some(header);
            return Ok(());
        }
        match wait_deletes(client, &self.prefix, self.rev - 1).await {
            Ok(h) => {
                self.header = h;
                Ok(())
            }
            Err(e) => {
                let _ = self.unlock().await;
                Err(e)
            }
        }
    }

    /// Releases the lock (deletes this session's key).
    pub async fn unlock(&mut self) -> Result<(), ClientError> {
        self.session
            .client()
            .delete_range(pb::DeleteRangeRequest {
                key: self.key.clone().into(),
                ..Default::default()
            })
            .await?;
        self.key = b"\0".to_vec();
        self.rev = -1;
        Ok(())
    }

    /// This session's key under the lock prefix.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The header of the response that granted the lock.
    pub fn header(&self) -> Option<&pb::ResponseHeader> {
        self.header.as_ref()
    }
}

/// Leader election (etcd's `concurrency.Election`).
pub struct Election<'s> {
    session: &'s Session,
    prefix: Vec<u8>,
    leader_key: Vec<u8>,
    leader_rev: i64,
    is_leader: bool,
    header: Option<pb::ResponseHeader>,
}

impl<'s> Election<'s> {
    pub fn new(session: &'s Session, name: &str) -> Election<'s> {
        Election {
            session,
            prefix: format!("{name}/").into_bytes(),
            leader_key: Vec::new(),
            leader_rev: 0,
            is_leader: false,
            header: None,
        }
    }

    /// Puts `value` as this session's proposal and waits until it is the leader.
    pub async fn campaign(&mut self, value: &[u8]) -> Result<(), ClientError> {
        let client = self.session.client();
        let lease = self.session.lease();
        let key = format!("{}{:x}", String::from_utf8_lossy(&self.prefix), lease).into_bytes();
        let txn = pb::TxnRequest {
            compare: vec![compare_create(&key, 0)],
            success: vec![op_put(&key, value, lease)],
            failure: vec![op_get(&key)],
        };
        let resp = client.txn(txn).await?;
        let header = resp.header.unwrap_or_default();
        self.leader_key = key;
        self.leader_rev = header.revision;
        self.is_leader = true;
        if !resp.succeeded {
            let kv = range_of(&resp, 0)
                .and_then(|r| r.kvs.first())
                .ok_or_else(|| missing("own key"))?;
            self.leader_rev = kv.create_revision;
            if kv.value.as_ref() != value {
                if let Err(e) = self.proclaim(value).await {
                    let _ = self.resign().await;
                    return Err(e);
                }
            }
        }
        if let Err(e) = wait_deletes(client, &self.prefix, self.leader_rev - 1).await {
            let _ = self.resign().await;
            return Err(e);
        }
        self.header = Some(header);
        Ok(())
    }

    /// Replaces the leader's value without a new election.
    pub async fn proclaim(&mut self, value: &[u8]) -> Result<(), ClientError> {
        if !self.is_leader {
            return Err(ClientError::Transport("election: not leader".into()));
        }
        let txn = pb::TxnRequest {
            compare: vec![compare_create(&self.leader_key, self.leader_rev)],
            success: vec![op_put(&self.leader_key, value, self.session.lease())],
            failure: vec![],
        };
        let resp = self.session.client().txn(txn).await?;
        if !resp.succeeded {
            self.leader_key.clear();
            return Err(ClientError::Transport("election: not leader".into()));
        }
        self.header = resp.header;
        Ok(())
    }

    /// Gives up leadership (or the candidacy).
    pub async fn resign(&mut self) -> Result<(), ClientError> {
        if !self.is_leader {
            return Ok(());
        }
        let txn = pb::TxnRequest {
            compare: vec![compare_create(&self.leader_key, self.leader_rev)],
            success: vec![op_delete(&self.leader_key)],
            failure: vec![],
        };
        let resp = self.session.client().txn(txn).await;
        self.leader_key.clear();
        self.is_leader = false;
        self.header = resp?.header;
        Ok(())
    }

    /// The key this session campaigned with.
    pub fn key(&self) -> &[u8] {
        &self.leader_key
    }

    pub fn header(&self) -> Option<&pb::ResponseHeader> {
        self.header.as_ref()
    }
}

/// The current leader of election `name`: a range response with its key, if there is one.
pub async fn election_leader(
    client: &Client,
    name: &str,
) -> Result<Option<pb::RangeResponse>, ClientError> {
    let prefix = format!("{name}/");
    let resp = client
        .range(first_or_last_created(prefix.as_bytes(), true))
        .await?;
    Ok(if resp.kvs.is_empty() {
        None
    } else {
        Some(resp)
    })
}

/// Follows the leadership of election `name` as etcd's `Election.Observe` does: `on_leader` gets
/// the current leader's key-value (as a range response) and then every change of leader or of
/// the leader's value. Returns only on an error.
pub async fn observe_election(
    client: &Client,
    name: &str,
    mut on_leader: impl FnMut(pb::RangeResponse),
) -> Result<(), ClientError> {
    let prefix = format!("{name}/").into_bytes();
    loop {
        let resp = client.range(first_or_last_created(&prefix, true)).await?;
        let header = resp.header.unwrap_or_default();
        let (header, kv): (pb::ResponseHeader, KeyValue) = match resp.kvs.first() {
            Some(kv) => (header, kv.clone()),
            None => {
                let mut found = None;
                watch_until(
                    client,
                    &prefix,
                    &prefix_range_end(&prefix),
                    header.revision,
                    |wr| {
                        let put = wr.events.iter().find(|e| e.r#type == EventType::Put as i32);
                        if let Some(kv) = put.and_then(|e| e.kv.clone()) {
                            let mut h = wr.header.unwrap_or_default();
                            h.revision = kv.mod_revision;
                            found = Some((h, kv));
                        }
                        found.is_some()
                    },
                )
                .await?;
                found.expect("watch_until returns Ok only once a put was found")
            }
        };
        let next_rev = header.revision + 1;
        let key = kv.key.clone();
        on_leader(pb::RangeResponse {
            header: Some(header),
            kvs: vec![kv],
            ..Default::default()
        });
        // Report the leader's updates until its key is deleted.
        watch_until(client, &key, &[], next_rev, |wr| {
            for ev in &wr.events {
                if ev.r#type == EventType::Delete as i32 {
                    return true;
                }
                on_leader(pb::RangeResponse {
                    header: wr.header,
                    kvs: ev.kv.clone().into_iter().collect(),
                    more: resp.more,
                    count: resp.count,
                });
            }
            false
        })
        .await?;
    }
}
