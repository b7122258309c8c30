//! Streaming a backend snapshot to a follower that fell behind the leader's log: on a
//! connection of its own, in checksummed chunks, read from the backend's copy-on-write pages
//! on a blocking thread so the leader's core loop and writes go on. The follower writes it
//! to member/snap/, checks it (CRC of the stream, then every page checksum of the B+tree and
//! the raft index inside it), and only then hands it to raft.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_lite::io::BufReader;
use futures_lite::AsyncWriteExt as _;

use crate::tls::Stream;
use raft::eraftpb::{Message, MessageType};

use super::frame::{self, FrameError};
use crate::proto::corekvpb::{
    peer_frame, PeerFrame, SnapshotAck, SnapshotChunk, SnapshotEnd, SnapshotHeader,
};
use crate::server::datadir::{sync_parent, ReceivedSnapshot};
use crate::storage::{Bucket, Db, DbOptions};

/// Bytes per chunk frame.
const CHUNK: usize = 1 << 20;

fn frame_of(body: peer_frame::Body) -> PeerFrame {
    PeerFrame { body: Some(body) }
}

/// Sends `data` with its MsgSnapshot and waits for the follower's verdict; the byte count.
pub async fn send(
    mut stream: Stream,
    msg: &Message,
    data: crate::storage::Snapshot,
) -> Result<u64, String> {
    let io = |e: std::io::Error| e.to_string();
    let size = data.len();
    let header = SnapshotHeader {
        message: protobuf::Message::write_to_bytes(msg)
            .expect("encoding into a Vec cannot fail")
            .into(),
        size,
    };
    frame::write(
        &mut stream,
        &frame_of(peer_frame::Body::SnapshotHeader(header)),
    )
    .await
    .map_err(io)?;
    let mut crc = crc32fast::Hasher::new();
    let mut offset = 0u64;
    let mut data = Some(data);
    let mut buf = Vec::new();
    while offset < size {
        let src = data
            .take()
            .expect("the snapshot comes back with each chunk");
        let (src, chunk) = crate::server::backend::next_chunk(src, CHUNK).await;
        data = Some(src);
        let chunk = chunk.map_err(|e| format!("reading the backend snapshot: {e}"))?;
        if chunk.is_empty() {
            return Err(format!(
                "the backend snapshot ended at {offset} of {size} bytes"
            ));
        }
        crc.update(&chunk);
        let len = chunk.len() as u64;
        buf.clear();
        frame::encode(
            &frame_of(peer_frame::Body::SnapshotChunk(SnapshotChunk {
                offset,
                data: chunk.into(),
            })),
            &mut buf,
        );
        stream.write_all(&buf).await.map_err(io)?;
        offset += len;
    }
    let end = SnapshotEnd {
        crc: crc.finalize(),
    };
    frame::write(&mut stream, &frame_of(peer_frame::Body::SnapshotEnd(end)))
        .await
        .map_err(io)?;
    // The follower checks every page before it answers: allow for a large file.
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(60 + size / (16 << 20))));
    match frame::read(&mut stream)
        .await
        .map_err(|e| e.to_string())?
        .body
    {
        Some(peer_frame::Body::SnapshotAck(SnapshotAck { ok: true, .. })) => Ok(size),
        Some(peer_frame::Body::SnapshotAck(a)) => {
            Err(format!("the follower refused it: {}", a.error))
        }
        _ => Err("the follower answered with something other than an ack".into()),
    }
}

/// Receives one snapshot from member `from`; answers the sender either way.
pub async fn receive(
    stream: Stream,
    from: u64,
    me: u64,
    snap_dir: &Path,
) -> Result<(Message, ReceivedSnapshot), String> {
    let mut r = BufReader::with_capacity(2 * CHUNK, stream);
    let result = receive_file(&mut r, from, me, snap_dir).await;
    let ack = match &result {
        Ok(_) => SnapshotAck {
            ok: true,
            error: String::new(),
        },
        Err(e) => SnapshotAck {
            ok: false,
            error: e.clone(),
        },
    };
    let mut stream = r.into_inner();
    let _ = frame::write(&mut stream, &frame_of(peer_frame::Body::SnapshotAck(ack))).await;
    result
}

async fn receive_file(
    r: &mut BufReader<Stream>,
    from: u64,
    me: u64,
    snap_dir: &Path,
) -> Result<(Message, ReceivedSnapshot), String> {
    let fe = |e: FrameError| e.to_string();
    let header = match frame::read(r).await.map_err(fe)?.body {
        Some(peer_frame::Body::SnapshotHeader(h)) => h,
        _ => return Err("the stream does not start with a snapshot header".into()),
    };
    let msg = check_header(&header, from, me)?;
    let index = msg.get_snapshot().get_metadata().index;
    std::fs::create_dir_all(snap_dir)
        .map_err(|e| format!("creating {}: {e}", snap_dir.display()))?;
    let done = snap_dir.join(format!("{index:016x}.db"));
    let part = done.with_extension("db.part");
    // Removed on any failure below (installing takes the finished file away first).
    let guard = ReceivedSnapshot::new(part.clone());
    let mut file = Some(
        std::fs::File::create(&part).map_err(|e| format!("creating {}: {e}", part.display()))?,
    );
    let mut crc = crc32fast::Hasher::new();
    let mut offset = 0u64;
    let end = loop {
        match frame::read(r).await.map_err(fe)?.body {
            Some(peer_frame::Body::SnapshotChunk(c)) => {
                check_chunk(&c, offset, header.size)?;
                crc.update(&c.data);
                offset += c.data.len() as u64;
                let mut f = file.take().expect("the file comes back with each chunk");
                let (f, written) = glommio::executor()
                    .spawn_blocking(move || {
                        let w = f.write_all(&c.data);
                        (f, w)
                    })
                    .await;
                file = Some(f);
                written.map_err(|e| format!("writing {}: {e}", part.display()))?;
            }
            Some(peer_frame::Body::SnapshotEnd(e)) => break e,
            _ => return Err("an unexpected frame in a snapshot stream".into()),
        }
    };
    if offset != header.size {
        return Err(format!(
            "the stream ended at {offset} of {} bytes",
            header.size
        ));
    }
    if end.crc != crc.finalize() {
        return Err("the snapshot's checksum does not match its bytes".into());
    }
    let f = file.take().expect("the file is here");
    let (part2, done2) = (part.clone(), done.clone());
    let checked = glommio::executor()
        .spawn_blocking(move || finish_file(f, &part2, &done2, index))
        .await;
    checked?;
    // The guard's file was renamed; from now on the finished one is what must go on failure.
    drop(guard);
    Ok((msg, ReceivedSnapshot::new(done)))
}

/// The raft message a snapshot stream's header carries: a MsgSnapshot from the member
/// that dialed, to this one.
#[doc(hidden)]
pub fn check_header(header: &SnapshotHeader, from: u64, me: u64) -> Result<Message, String> {
    let msg: Message = protobuf::Message::parse_from_carllerche_bytes(&header.message)
        .map_err(|e| format!("the snapshot's raft message does not decode: {e}"))?;
    if msg.get_msg_type() != MessageType::MsgSnapshot || msg.from != from || msg.to != me {
        return Err(format!(
            "the snapshot's raft message is a {:?} from {:x} to {:x}",
            msg.get_msg_type(),
            msg.from,
            msg.to
        ));
    }
    Ok(msg)
}

/// A chunk must continue the file at `offset` and stay within the `size` the header gave
/// (`offset` never exceeds `size`: every accepted chunk was checked so).
#[doc(hidden)]
pub fn check_chunk(c: &SnapshotChunk, offset: u64, size: u64) -> Result<(), String> {
    debug_assert!(offset <= size);
    if c.offset != offset || offset + c.data.len() as u64 > size {
        return Err(format!(
            "a chunk at {} of {} bytes, expected one at {offset} of at most {}",
            c.offset,
            c.data.len(),
            size - offset
        ));
    }
    Ok(())
}

/// Makes the received file durable under its final name and checks it is a whole backend at
/// the snapshot's raft index.
fn finish_file(f: std::fs::File, part: &Path, done: &PathBuf, index: u64) -> Result<(), String> {
    f.sync_all()
        .map_err(|e| format!("syncing {}: {e}", part.display()))?;
    drop(f);
    std::fs::rename(part, done).map_err(|e| format!("renaming {}: {e}", part.display()))?;
    sync_parent(done).map_err(|e| format!("syncing {}: {e}", done.display()))?;
    let bad = |e: String| {
        let _ = std::fs::remove_file(done);
        e
    };
    let db = Db::open(done, DbOptions::default())
        .map_err(|e| bad(format!("the received backend does not open: {e}")))?;
    db.check()
        .map_err(|e| bad(format!("the received backend fails its check: {e}")))?;
    let applied = db
        .begin_read()
        .get(Bucket::Meta, crate::server::backend::CONSISTENT_INDEX_KEY)
        .map_err(|e| bad(e.to_string()))?
        .and_then(|b| b.try_into().ok().map(u64::from_be_bytes));
    if applied != Some(index) {
        return Err(bad(format!(
            "the received backend is at raft index {applied:?}, the snapshot says {index}"
        )));
    }
    Ok(())
}
