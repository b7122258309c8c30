//! Lease service pieces served on the network executor: the keep-alive stream, and the
//! checks and ID choice done before a grant enters raft.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::lease::MAX_LEASE_TTL;
use crate::net::conn::{Incoming, Outgoing};
use crate::net::grpc::{encode_message, Code, Status};
use crate::proto::etcdserverpb as pb;
use crate::server::link::CoreClient;
use crate::server::message::{Request, Response};

/// Serves a LeaseKeepAlive stream: every request renews its lease at the leader and is
/// answered in order; an unknown or expired lease answers TTL 0, as etcd does.
pub async fn keep_alive(
    core: &Rc<CoreClient>,
    mut incoming: Incoming,
    outgoing: &mut Outgoing,
) -> Result<(), Status> {
    while let Some(msg) = incoming.next().await {
        let req = pb::LeaseKeepAliveRequest::decode(msg?).map_err(|e| {
            Status::new(
                Code::Internal,
                format!("grpc: error unmarshalling request: {e}"),
            )
        })?;
        let resp = match core.call(Request::LeaseKeepAlive(req)).await? {
            Response::LeaseKeepAlive(r) => r,
            _ => return Err(Status::internal("unexpected reply to a keep-alive")),
        };
        outgoing.send(encode_message(&resp)).await?;
    }
    Ok(())
}

/// Checks a grant and picks its ID when the client left it to the server. The proposer
/// picks, so every member applies the same ID.
pub fn check_grant(
    mut r: pb::LeaseGrantRequest,
    member_id: u64,
) -> Result<pb::LeaseGrantRequest, Status> {
    if r.ttl > MAX_LEASE_TTL {
        return Err(Status::new(
            Code::OutOfRange,
            "etcdserver: too large lease TTL",
        ));
    }
    if r.id == 0 {
        r.id = next_lease_id(member_id);
    }
    Ok(r)
}

thread_local! {
    static COUNTER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A positive 63-bit ID: 16 bits of the member, 39 of milliseconds, 8 of a per-thread
/// counter (like etcd's idutil, which also mixes member, time and a counter).
fn next_lease_id(member_id: u64) -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let n = COUNTER.with(|c| {
        let v = c.get().wrapping_add(1);
        c.set(v);
        v
    });
    let thread = std::thread::current().id();
    let salt = crate::config::stable_hash(&[format!("{thread:?}").as_bytes()]);
    let id = ((member_id ^ salt) & 0x7fff) << 47 | (ms & 0x7f_ffff_ffff) << 8 | (n & 0xff);
    (id as i64).max(1)
}
