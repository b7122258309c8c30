//! Maintenance.Snapshot: a consistent copy of the member's backend, streamed in chunks, then
//! one last message with the SHA-256 of every byte sent, as etcd 3.4 streams its bolt db
//! (etcdctl saves the stream, digest included, and checks the digest before a restore).

use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::net::conn::{Incoming, Outgoing};
use crate::net::grpc::{encode_message, Status};
use crate::proto::etcdserverpb as pb;
use crate::server::link::CoreClient;
use crate::server::message::{Request, Response};

/// Bytes of backend per message: etcd's (snapshotSendBufferSize).
pub const CHUNK: usize = 32 * 1024;

/// Backend bytes read per trip to a blocking thread, then sent as 32 KiB messages: one
/// trip per message would cost a thread hand-off every 32 KiB. This is all a stream holds
/// besides what HTTP/2 flow control lets out, so a slow reader costs the server this much.
const READ_AHEAD: usize = 1 << 20;

/// Serves one Snapshot call: its one request, then the copy and its digest.
pub async fn serve(
    core: &Rc<CoreClient>,
    mut incoming: Incoming,
    outgoing: &mut Outgoing,
) -> Result<(), Status> {
    // A server-streaming call carries one request; a client that half-closed without one
    // (the JSON gateway with an empty body) asks for the same thing.
    let request = match incoming.next().await {
        Some(msg) => super::decode::<pb::SnapshotRequest>(&msg?)?,
        None => pb::SnapshotRequest::default(),
    };
    let copy = match core.call(Request::Snapshot(request)).await? {
        Response::Snapshot(c) => c,
        _ => return Err(Status::internal("unexpected reply to a snapshot request")),
    };
    let total = copy.data.len();
    tracing::info!(
        total_bytes = total,
        "sending a database snapshot to a client"
    );
    let started = std::time::Instant::now();
    let mut digest = Sha256::new();
    let mut sent = 0u64;
    let mut data = Some(copy.data);
    while sent < total {
        let src = data.take().expect("the copy comes back with each read");
        let (src, read) = crate::server::backend::next_chunk(src, READ_AHEAD).await;
        data = Some(src);
        let read = read.map_err(|e| Status::internal(format!("reading the snapshot: {e}")))?;
        if read.is_empty() {
            return Err(Status::internal(format!(
                "the backend copy ended at {sent} of {total} bytes"
            )));
        }
        let read = bytes::Bytes::from(read);
        for start in (0..read.len()).step_by(CHUNK) {
            let blob = read.slice(start..read.len().min(start + CHUNK));
            digest.update(&blob);
            sent += blob.len() as u64;
            let msg = pb::SnapshotResponse {
                header: None,
                remaining_bytes: total.saturating_sub(sent),
                blob,
            };
            // Waits for the client's flow-control window: a slow reader slows the reads.
            outgoing.send(encode_message(&msg)).await?;
        }
    }
    let last = pb::SnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: digest.finalize().to_vec().into(),
    };
    outgoing.send(encode_message(&last)).await?;
    tracing::info!(
        total_bytes = total,
        took_ms = started.elapsed().as_millis() as u64,
        "sent a database snapshot to a client"
    );
    Ok(())
}
