//! etcd's coordination recipes — session, mutex, election — built on leases, txns and watches
//! exactly as etcd's `clientv3/concurrency` builds them, with the same keys (the requests are
//! in [`crate::recipes`]), so a corekvctl lock and an etcdctl lock (or a Go client's, or one
//! taken through the Lock service) exclude each other, and elections mix freely.

use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver};

use super::{Client, ClientError};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::{event::EventType, KeyValue};
use crate::recipes::{
    campaign_txn, contender_key, first_or_last_created, last_created_before, lock_txn, prefix_of,
    prefix_range_end, proclaim_txn, range_of, resign_txn, NOT_LEADER,
};

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
        let resp = client
            .range(last_created_before(prefix, max_create_rev))
            .await?;
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
            prefix: prefix_of(name.as_bytes()),
            key: Vec::new(),
            rev: -1,
            header: None,
        }
    }

    /// Waits until this session holds the lock.
    pub async fn lock(&mut self) -> Result<(), ClientError> {
        let client = self.session.client();
        let lease = self.session.lease();
        self.key = contender_key(&self.prefix, lease).to_vec();
        let resp = client.txn(lock_txn(&self.prefix, &self.key, lease)).await?;
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
            prefix: prefix_of(name.as_bytes()),
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
        let key = contender_key(&self.prefix, lease).to_vec();
        let resp = client.txn(campaign_txn(&key, value, lease)).await?;
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
            return Err(ClientError::Transport(NOT_LEADER.into()));
        }
        let txn = proclaim_txn(
            &self.leader_key,
            self.leader_rev,
            value,
            self.session.lease(),
        );
        let resp = self.session.client().txn(txn).await?;
        if !resp.succeeded {
            self.leader_key.clear();
            return Err(ClientError::Transport(NOT_LEADER.into()));
        }
        self.header = resp.header;
        Ok(())
    }

    /// Gives up leadership (or the candidacy).
    pub async fn resign(&mut self) -> Result<(), ClientError> {
        if !self.is_leader {
            return Ok(());
        }
        let txn = resign_txn(&self.leader_key, self.leader_rev);
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
    let prefix = prefix_of(name.as_bytes());
    let resp = client.range(first_or_last_created(&prefix, true)).await?;
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
    let prefix = prefix_of(name.as_bytes());
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
