//! etcd's Lock service (v3lockpb): a mutex per name, held by the contender whose key under
//! `name/` was created first. Lock waits (on the executor, with watches) until every key
//! created before the caller's is gone; a caller that goes away while waiting leaves no key.

use crate::api::concurrency::{Abandon, Client};
use crate::net::grpc::Status;
use crate::proto::etcdserverpb as pb;
use crate::proto::v3lockpb as lockpb;
use crate::recipes;
use crate::server::message::Request;

/// Lock(name, lease): puts `name/<lease hex>` with the lease (unless this lease already has
/// it), then waits for the keys created before it to be deleted. The answer's header is the
/// txn's when the lock was free, else the header of the range that found no one before it.
pub async fn lock(c: Client<'_>, req: lockpb::LockRequest) -> Result<lockpb::LockResponse, Status> {
    let lease = c.session_lease(req.lease).await?;
    let prefix = recipes::prefix_of(&req.name);
    let key = recipes::contender_key(&prefix, lease);
    let resp = c.txn(recipes::lock_txn(&prefix, &key, lease)).await?;
    let mut my_rev = resp.header.as_ref().map_or(0, |h| h.revision);
    if !resp.succeeded {
        let mine = recipes::range_of(&resp, 0).and_then(|r| r.kvs.first());
        my_rev = mine
            .ok_or_else(|| Status::internal("lock txn: no own key"))?
            .create_revision;
    }
    let owner = recipes::range_of(&resp, 1).and_then(|r| r.kvs.first());
    if owner.is_none_or(|kv| kv.create_revision == my_rev) {
        return Ok(lockpb::LockResponse {
            header: resp.header,
            key,
        });
    }
    // Any failure while waiting, the caller leaving included, gives the key up (etcd's
    // Mutex.Lock unlocks when its wait fails).
    let abandon = Abandon::new(
        c,
        Request::DeleteRange(pb::DeleteRangeRequest {
            key: key.clone(),
            ..Default::default()
        }),
    );
    let header = c.wait_deletes(&prefix, my_rev - 1).await?;
    abandon.keep();
    Ok(lockpb::LockResponse { header, key })
}

/// Unlock(key): deletes the key, whoever holds it.
pub async fn unlock(
    c: Client<'_>,
    req: lockpb::UnlockRequest,
) -> Result<lockpb::UnlockResponse, Status> {
    let resp = c.delete(req.key).await?;
    Ok(lockpb::UnlockResponse {
        header: resp.header,
    })
}
