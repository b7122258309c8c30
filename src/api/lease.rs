//! Lease service pieces served on the network executor: the keep-alive stream, and the
//! checks and ID choice done before a grant enters raft.

use std::rc::Rc;

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

/// Checks a grant before it goes to the core (which picks the ID if the client left it 0).
pub fn check_grant(r: pb::LeaseGrantRequest) -> Result<pb::LeaseGrantRequest, Status> {
    if r.ttl > MAX_LEASE_TTL {
        return Err(Status::new(
            Code::OutOfRange,
            "etcdserver: too large lease TTL",
        ));
    }
    Ok(r)
}
