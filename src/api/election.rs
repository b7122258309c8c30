//! etcd's Election service (v3electionpb): candidates under `name/`, the one whose key was
//! created first leads. Campaign waits like Lock; Observe streams the leader's key-value each
//! time the leader or its value changes, following etcd's `Election.Observe` step by step.

use crate::api::concurrency::{recipe_error, Abandon, Client};
use crate::api::watch::OwnWatch;
use crate::net::conn::{Incoming, Outgoing};
use crate::net::grpc::{encode_message, Code, Status};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::{event::EventType, KeyValue};
use crate::proto::v3electionpb as epb;
use crate::recipes;
use crate::server::message::Request;

/// etcd's error for a Proclaim or Resign without a leader key (v3election.ErrMissingLeaderKey).
fn missing_leader() -> Status {
    recipe_error(r#""leader" field must be provided"#)
}

/// Campaign(name, lease, value): puts `name/<lease hex>` = value (or, if this lease already
/// campaigned, proclaims the new value), then waits until it leads. As etcd's, the answer
/// carries the header of the first txn, whenever leadership came.
pub async fn campaign(
    c: Client<'_>,
    req: epb::CampaignRequest,
) -> Result<epb::CampaignResponse, Status> {
    let lease = c.session_lease(req.lease).await?;
    let prefix = recipes::prefix_of(&req.name);
    let key = recipes::contender_key(&prefix, lease);
    let resp = c
        .txn(recipes::campaign_txn(&key, &req.value, lease))
        .await?;
    let mut rev = resp.header.as_ref().map_or(0, |h| h.revision);
    if !resp.succeeded {
        let kv = recipes::range_of(&resp, 0)
            .and_then(|r| r.kvs.first())
            .ok_or_else(|| Status::internal("campaign txn: no own key"))?;
        rev = kv.create_revision;
        if kv.value != req.value {
            if let Err(e) = proclaim_as(c, &key, rev, &req.value, lease).await {
                c.txn(recipes::resign_txn(&key, rev)).await.ok();
                return Err(e);
            }
        }
    }
    // Only a caller that goes away resigns: etcd keeps the key when the wait fails otherwise.
    let abandon = Abandon::new(c, Request::Txn(recipes::resign_txn(&key, rev)));
    let waited = c.wait_deletes(&prefix, rev - 1).await;
    abandon.keep();
    waited?;
    Ok(epb::CampaignResponse {
        header: resp.header,
        leader: Some(epb::LeaderKey {
            name: req.name,
            key,
            rev,
            lease,
        }),
    })
}

async fn proclaim_as(
    c: Client<'_>,
    key: &[u8],
    rev: i64,
    value: &[u8],
    lease: i64,
) -> Result<Option<pb::ResponseHeader>, Status> {
    let resp = c.txn(recipes::proclaim_txn(key, rev, value, lease)).await?;
    if !resp.succeeded {
        return Err(recipe_error(recipes::NOT_LEADER));
    }
    Ok(resp.header)
}

/// Proclaim(leader, value): a new value for the leader's key if it is still the one created
/// at `leader.rev`. The key is put with `leader.lease` (a lease of its own when that is 0, as
/// etcd's session does).
pub async fn proclaim(
    c: Client<'_>,
    req: epb::ProclaimRequest,
) -> Result<epb::ProclaimResponse, Status> {
    let leader = req.leader.ok_or_else(missing_leader)?;
    let lease = c.session_lease(leader.lease).await?;
    let header = proclaim_as(c, &leader.key, leader.rev, &req.value, lease).await?;
    Ok(epb::ProclaimResponse { header })
}

/// Resign(leader): deletes the leader's key if it is still the one created at `leader.rev`;
/// not being the leader is not an error.
pub async fn resign(c: Client<'_>, req: epb::ResignRequest) -> Result<epb::ResignResponse, Status> {
    let leader = req.leader.ok_or_else(missing_leader)?;
    c.session_lease(leader.lease).await?;
    let resp = c.txn(recipes::resign_txn(&leader.key, leader.rev)).await?;
    Ok(epb::ResignResponse {
        header: resp.header,
    })
}

/// Leader(name): the key under `name/` with the lowest create revision.
pub async fn leader(c: Client<'_>, req: epb::LeaderRequest) -> Result<epb::LeaderResponse, Status> {
    let prefix = recipes::prefix_of(&req.name);
    let resp = c
        .range(recipes::first_or_last_created(&prefix, true))
        .await?;
    match resp.kvs.into_iter().next() {
        Some(kv) => Ok(epb::LeaderResponse {
            header: resp.header,
            kv: Some(kv),
        }),
        None => Err(recipe_error(recipes::NO_LEADER)),
    }
}

/// Observe(name): sends the current leader (waiting for one if there is none), then every
/// new value of its key until the key is deleted, then the next leader, until the client
/// goes away. A watch the server cancels (compaction) ends the stream without an error, as
/// etcd's does.
pub async fn observe(
    mut incoming: Incoming,
    outgoing: &mut Outgoing,
    c: Client<'_>,
) -> Result<(), Status> {
    let req: epb::LeaderRequest = match incoming.next().await {
        Some(msg) => crate::api::decode(&msg?)?,
        None => return Err(Status::internal("grpc: request carried no message")),
    };
    let prefix = recipes::prefix_of(&req.name);
    loop {
        // etcd's observe ends quietly (the stream with OK) when a request of its fails.
        let Ok(resp) = c.range(recipes::first_or_last_created(&prefix, true)).await else {
            return Ok(());
        };
        let (header, kv) = match resp.kvs.into_iter().next() {
            Some(kv) => (resp.header.unwrap_or_default(), kv),
            None => {
                let revision = resp.header.map_or(0, |h| h.revision);
                let mut watch = c.watch(pb::WatchCreateRequest {
                    key: prefix.clone().into(),
                    range_end: recipes::prefix_range_end(&prefix).into(),
                    start_revision: revision,
                    ..Default::default()
                });
                match first_put(&mut watch, outgoing).await? {
                    Some(found) => found,
                    None => return Ok(()),
                }
            }
        };
        let next_rev = header.revision + 1;
        let key = kv.key.clone();
        send(outgoing, Some(header), kv).await?;
        let mut watch = c.watch(pb::WatchCreateRequest {
            key,
            start_revision: next_rev,
            ..Default::default()
        });
        'leader: loop {
            let Some(wr) = next_or_gone(&mut watch, outgoing).await? else {
                return Ok(());
            };
            for ev in wr.events {
                if ev.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                if let Some(kv) = ev.kv {
                    send(outgoing, wr.header, kv).await?;
                }
            }
        }
    }
}

/// The first put under the watched prefix, with the watch's header at that put's revision
/// (etcd's observe waits for a put only: a delete would make it spin); None if the server
/// canceled the watch.
async fn first_put(
    watch: &mut OwnWatch,
    outgoing: &mut Outgoing,
) -> Result<Option<(pb::ResponseHeader, KeyValue)>, Status> {
    loop {
        let Some(wr) = next_or_gone(watch, outgoing).await? else {
            return Ok(None);
        };
        let put = wr
            .events
            .into_iter()
            .find(|e| e.r#type == EventType::Put as i32);
        if let Some(kv) = put.and_then(|e| e.kv) {
            let mut header = wr.header.unwrap_or_default();
            header.revision = kv.mod_revision;
            return Ok(Some((header, kv)));
        }
    }
}

/// The watch's next response; None once the watch failed or the server canceled it; an
/// error when the client went away meanwhile.
async fn next_or_gone(
    watch: &mut OwnWatch,
    outgoing: &mut Outgoing,
) -> Result<Option<pb::WatchResponse>, Status> {
    let next = futures_lite::future::or(async { Ok(watch.next().await.ok()) }, async {
        outgoing.closed().await;
        Err(Status::new(Code::Canceled, "context canceled"))
    })
    .await?;
    Ok(next.filter(|wr| !wr.canceled))
}

async fn send(
    outgoing: &mut Outgoing,
    header: Option<pb::ResponseHeader>,
    kv: KeyValue,
) -> Result<(), Status> {
    let resp = epb::LeaderResponse {
        header,
        kv: Some(kv),
    };
    outgoing.send(encode_message(&resp)).await
}
