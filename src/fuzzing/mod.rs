//! Fuzz targets: every decoder of bytes that come from outside the process, each behind one
//! function that takes arbitrary bytes. They call the server's own decoding code (the entry
//! points marked `#[doc(hidden)]` elsewhere exist for them) and assert what must hold for
//! any input: no panic, no read out of bounds, and that what a decoder accepts is what the
//! next stage takes.
//!
//! Two drivers run them: cargo-fuzz (libFuzzer, nightly; the `fuzz/` crate, one binary per
//! target) and the ordinary test suite on stable (`tests/fuzz_corpus.rs`: the checked-in seed
//! corpora in `fuzz/corpus/<target>/` plus a bounded number of seeded mutations of each).
//! See fuzz/README.md.

use std::ops::Bound;
use std::sync::Arc;

use crate::api::{self, Limits, Route, Streaming, Unary};
use crate::net::grpc::{MessageDecoder, Status};
use crate::proto::corekvpb::{peer_frame, PeerHello, RaftRequest};
use crate::proto::etcdserverpb as pb;
use crate::proto::{health, path, v3electionpb as epb, v3lockpb as lockpb};
use crate::server::message::{Kind, Request};

/// A fuzz target: arbitrary bytes in; panics on a finding.
pub type Target = fn(&[u8]);

/// Every target by name (the names of the cargo-fuzz binaries and of the corpus folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("wal_frame", wal_frame),
    ("wal_recover", wal_recover),
    ("storage_open", storage_open),
    ("peer_stream", peer_stream),
    ("grpc_request", grpc_request),
    ("http1_request", http1_request),
    ("gateway_json", gateway_json),
];

/// etcd's default limits (--max-request-bytes 1.5 MiB, --max-txn-ops 128,
/// --max-concurrent-streams unlimited).
const LIMITS: Limits = Limits {
    max_request_bytes: 1536 * 1024,
    max_txn_ops: 128,
    max_concurrent_streams: u32::MAX,
};

/// WAL frames: arbitrary bytes as a segment image, decoded frame after frame from the first
/// frame offset. The decoder must stay inside the segment, and every frame it accepts must
/// re-encode to exactly the bytes it was decoded from.
///
/// Input: log id (8 bytes LE), segment LSN (8), extra segment size (2; 0xffff: unbounded),
/// then the image.
pub fn wal_frame(data: &[u8]) {
    use wal::frame::{decode, encode, frame_len, Decoded, FRAME_HEADER_LEN};
    if data.len() < 18 {
        return;
    }
    let log_id = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
    let seg_lsn = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    // Segment size: up to 64 KiB beyond the image (cut files), and sometimes absurd.
    let extra = u16::from_le_bytes([data[16], data[17]]) as usize;
    let buf = &data[18..];
    let segment_size = if extra == u16::MAX as usize {
        usize::MAX
    } else {
        buf.len() + extra
    };
    for start in [0usize, 64] {
        let mut at = start;
        let mut n = 0;
        while let Decoded::Frame {
            header,
            payload,
            next,
        } = decode(buf, at, segment_size, log_id, seg_lsn)
        {
            assert!(next > at);
            assert_eq!(next - at, frame_len(payload.len()));
            assert!(at + FRAME_HEADER_LEN + payload.len() <= buf.len());
            let mut again = Vec::new();
            encode(
                &mut again,
                log_id,
                seg_lsn.wrapping_add(at as u64),
                header.kind,
                header.flags,
                header.record_type,
                header.commit,
                payload,
            );
            let n_bytes = FRAME_HEADER_LEN + payload.len();
            assert_eq!(&again[..n_bytes], &buf[at..at + n_bytes]);
            at = next;
            n += 1;
            if n > 1 << 16 {
                break;
            }
        }
    }
}

/// A valid header for segment `seq` of a log of 8 KiB segments.
fn wal_segment_header(seq: u64, log_id: u64) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[0..8].copy_from_slice(b"corekvWL");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..16].copy_from_slice(&64u32.to_le_bytes());
    h[16..24].copy_from_slice(&log_id.to_le_bytes());
    h[24..32].copy_from_slice(&seq.to_le_bytes());
    h[32..40].copy_from_slice(&(seq * 8192).to_le_bytes());
    h[40..48].copy_from_slice(&8192u64.to_le_bytes());
    let crc = crc32fast::hash(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A member's start: WAL recovery over whole (in-memory) segment files, then the raft log
/// rebuilt from the records it returns, as the server does before it starts raft. Either
/// stage may refuse the files with an error; neither may panic.
///
/// Input: 2 control bytes (file count; per file whether it is raw or gets a valid header,
/// and the first sequence number), then the bytes cut into up to three files.
pub fn wal_recover(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let (ctl, rest) = data.split_at(2);
    let files = 1 + (ctl[0] % 3) as usize;
    let chunk = rest.len() / files + 1;
    let mut owned = Vec::new();
    for (i, body) in rest.chunks(chunk).enumerate() {
        let seq = i as u64 + (ctl[1] >> 4) as u64;
        let name = format!("{:016x}-{:016x}.wal", seq, seq * 8192);
        let bytes = if ctl[1] & (1 << i) != 0 {
            body.to_vec()
        } else {
            let mut b = wal_segment_header(seq, 7);
            b.extend_from_slice(body);
            b
        };
        owned.push((name, bytes));
    }
    let refs: Vec<(&str, &[u8])> = owned
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let Ok(recovery) = wal::recover_images(&refs) else {
        return;
    };
    let _ = crate::server::wal_records::newest_installed_snapshot(&recovery.records);
    let _ = crate::server::wal_records::first_entry_position(&recovery.records);
    if let Ok(log) =
        crate::server::wal_records::recover_raft_log(&recovery.records, Default::default())
    {
        // What raft reads of the log at start must answer, not panic.
        use raft::Storage;
        let first = log.first_index().expect("an in-memory log");
        let last = log.last_index().expect("an in-memory log");
        assert!(first <= last.saturating_add(1));
        let _ = log.term(last);
        if first <= last {
            let high = last.saturating_add(1).min(first.saturating_add(64));
            let _ = log.entries(first, high, None, raft::GetEntriesContext::empty(false));
        }
    }
}

/// A backend file opened as the server opens one: a database image (first byte: flags; bit 0
/// re-checksums every page first, so that changes reach the page decoding behind the
/// checksums), then a full check, reads of every bucket, and a small write. Every
/// corruption must be an error.
pub fn storage_open(data: &[u8]) {
    use crate::storage::{Bucket, Db, DbOptions, StdFile};
    let Some((&flags, image)) = data.split_first() else {
        return;
    };
    let mut image = image.to_vec();
    if flags & 1 != 0 {
        crate::storage::reseal_image(&mut image);
    }
    let file = memfd();
    std::io::Write::write_all(&mut &file, &image).expect("writing to memory");
    let opts = DbOptions {
        page_size: 1024,
        full_check_on_open: flags & 2 != 0,
        prewarm_branches: flags & 4 != 0,
        reserve_bytes: 0,
        ..DbOptions::default()
    };
    let Ok(db) = Db::open_with_layer(Arc::new(StdFile(file)), opts) else {
        return;
    };
    let checked = db.check().is_ok();
    let read = db.begin_read();
    for b in Bucket::ALL {
        let _ = read.count(b, Bound::Unbounded, Bound::Unbounded);
        let mut n = 0;
        let mut last: Option<Vec<u8>> = None;
        for item in read.range(b, Bound::Unbounded, Bound::Unbounded, false) {
            let Ok((k, _)) = item else { break };
            if checked {
                // A file that passed its check keeps its keys in order.
                assert!(last.as_deref().is_none_or(|l| l < k), "keys out of order");
            }
            last = Some(k.to_vec());
            let _ = read.get(b, k);
            n += 1;
            if n > 4096 {
                break;
            }
        }
        let _ = read
            .range(b, Bound::Unbounded, Bound::Unbounded, true)
            .take(64)
            .count();
        let _ = read.get(b, b"key");
    }
    drop(read);
    if let Ok(mut w) = db.begin_write() {
        let _ = w.put(Bucket::Key, b"fuzz", b"value");
        let _ = w.delete(Bucket::Meta, b"consistent_index");
        let _ = w.commit();
    }
    if checked {
        let _ = db.check();
    }
}

/// An anonymous in-memory file (the backend maps its file, so it needs a real one).
fn memfd() -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a NUL-terminated name and returns a new descriptor (or -1),
    // which the File then owns.
    let fd = unsafe { libc::memfd_create(c"corekv-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a new descriptor nothing else owns.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

/// What an inbound connection on the peer port sends, read as the member reads it: the
/// preamble, then frames: a hello (checked against this member's view, and answered), raft
/// batches (their messages decoded and checked), a snapshot stream (header, chunks in order,
/// end with the stream's checksum), a dialer's view of replies. Every bad frame is an error
/// that closes the connection.
pub fn peer_stream(data: &[u8]) {
    use crate::peer::{frame, snapshot, PeerView};
    use crate::proto::corekvpb::{PeerHelloReply, SnapshotHeader};
    let view = PeerView {
        cluster_id: 7,
        member_id: 2,
        members: [(1, Default::default()), (2, Default::default())].into(),
        ..Default::default()
    };
    futures_lite::future::block_on(async {
        let mut r = futures_lite::io::Cursor::new(data);
        if frame::read_preamble(&mut r).await.is_err() {
            return;
        }
        let mut hello: Option<PeerHello> = None;
        let mut snap: Option<(SnapshotHeader, u64, crc32fast::Hasher)> = None;
        for _ in 0..256 {
            let Ok(f) = frame::read(&mut r).await else {
                return;
            };
            let from = hello.as_ref().map_or(1, |h| h.from);
            match f.body.expect("read refuses a frame without a body") {
                peer_frame::Body::Hello(h) => {
                    let check = view.check_hello(&h);
                    let _: PeerHelloReply = view.reply_to(&check);
                    if check.is_err() {
                        return;
                    }
                    hello = Some(h);
                }
                peer_frame::Body::HelloReply(reply) => {
                    let _ = view.check_reply(1, &reply);
                }
                peer_frame::Body::Batch(b) => {
                    if crate::peer::decode_batch(b, from, view.member_id).is_err() {
                        return;
                    }
                }
                peer_frame::Body::SnapshotHeader(h) => {
                    if snapshot::check_header(&h, from, view.member_id).is_err() {
                        return;
                    }
                    snap = Some((h, 0, crc32fast::Hasher::new()));
                }
                peer_frame::Body::SnapshotChunk(c) => {
                    let Some((h, offset, crc)) = snap.as_mut() else {
                        return;
                    };
                    if snapshot::check_chunk(&c, *offset, h.size).is_err() {
                        return;
                    }
                    crc.update(&c.data);
                    *offset += c.data.len() as u64;
                    assert!(*offset <= h.size);
                }
                peer_frame::Body::SnapshotEnd(_) => {
                    snap = None;
                }
                peer_frame::Body::SnapshotAck(_) | peer_frame::Body::ClusterInfo(_) => {}
            }
        }
    });
}

/// One gRPC call's request body as the server reads it: byte 0 picks the method path (or an
/// unknown one), byte 1 where the body is cut into the pieces HTTP/2 delivers, then the
/// body: length-prefixed messages, each decoded and checked as that method's handler does.
/// A write that passes is proposed as a raft request, which must encode and decode back to
/// itself.
pub fn grpc_request(data: &[u8]) {
    let Some((&[pick, cut], body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let grpc_path = path::ALL
        .get(pick as usize)
        .copied()
        .unwrap_or("/etcdserverpb.KV/Nope");
    let Some(route) = api::route(grpc_path) else {
        return;
    };
    let mut decoder = MessageDecoder::new(LIMITS.grpc_receive_limit());
    let cut = (cut as usize).min(body.len());
    for piece in [&body[..cut], &body[cut..]] {
        decoder.push(piece);
        loop {
            match decoder.next_message() {
                Ok(Some(msg)) => {
                    let _ = decode_call(&route, &msg);
                    if matches!(route, Route::Unary(_)) {
                        // A unary call reads one message.
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = e.to_status();
                    return;
                }
            }
        }
    }
}

/// Decodes one request message of a call as its handler does; a unary write that passes is
/// checked to cross raft unchanged.
fn decode_call(route: &Route, body: &[u8]) -> Result<(), Status> {
    use api::decode;
    match route {
        Route::Unary(Unary::HealthCheck) => decode::<health::HealthCheckRequest>(body).map(drop),
        Route::Unary(Unary::Auth(m)) => api::auth::decode_auth(*m, body).map(drop),
        // The recipes decode their request, then run as a client of the KV service.
        Route::Unary(Unary::Lock) => decode::<lockpb::LockRequest>(body).map(drop),
        Route::Unary(Unary::Unlock) => decode::<lockpb::UnlockRequest>(body).map(drop),
        Route::Unary(Unary::Campaign) => decode::<epb::CampaignRequest>(body).map(drop),
        Route::Unary(Unary::Proclaim) => decode::<epb::ProclaimRequest>(body).map(drop),
        Route::Unary(Unary::Leader) => decode::<epb::LeaderRequest>(body).map(drop),
        Route::Unary(Unary::Resign) => decode::<epb::ResignRequest>(body).map(drop),
        Route::Unary(m) => {
            let request = api::decode_request(&LIMITS, *m, body)?;
            crosses_raft(request);
            Ok(())
        }
        Route::Streaming(Streaming::Watch) => decode::<pb::WatchRequest>(body).map(drop),
        Route::Streaming(Streaming::LeaseKeepAlive) => {
            decode::<pb::LeaseKeepAliveRequest>(body).map(drop)
        }
        Route::Streaming(Streaming::Observe) => decode::<epb::LeaderRequest>(body).map(drop),
        Route::Streaming(Streaming::Snapshot) => decode::<pb::SnapshotRequest>(body).map(drop),
    }
}

/// A write is proposed as an encoded raft request and decoded at apply on every member: it
/// must come back as it went.
fn crosses_raft(request: Request) {
    use prost::Message;
    if let Kind::Write(req) = request.kind() {
        let bytes = req.encode_to_vec();
        let back = RaftRequest::decode(bytes.as_slice()).expect("an encoded request decodes");
        assert_eq!(back, req, "a raft request changed crossing raft");
    }
}

/// Bytes of an HTTP/1.1 connection on the client port, read as the server reads them: request
/// heads one after another (keep-alive), and for the JSON gateway's paths the body
/// (Content-Length or chunked), its JSON decoded into the method's request and that decoded
/// as gRPC's would be.
pub fn http1_request(data: &[u8]) {
    use crate::net::http1::{parse_head, Parsed};
    let mut buf = data.to_vec();
    for _ in 0..8 {
        let head = match parse_head(&buf) {
            Parsed::Head(head) => head,
            Parsed::Partial | Parsed::Bad => return,
        };
        assert!(head.consumed <= buf.len());
        buf.drain(..head.consumed);
        let Some(gateway) = head.gateway else {
            // The plain endpoints only look at the method and the path.
            if !head.keep_alive {
                return;
            }
            continue;
        };
        // Half of what follows is already buffered with the head, the rest still on the
        // connection.
        let mut conn = buf.split_off(buf.len() / 2);
        let body = futures_lite::future::block_on(crate::gateway::http1::whole_body(
            &mut conn.as_slice(),
            &mut buf,
            &gateway,
            3 * LIMITS.grpc_receive_limit(),
        ));
        let Ok(body) = body else { return };
        gateway_requests(&gateway.method, &gateway.path, &[&body]);
        if !gateway.keep_alive {
            return;
        }
        buf.append(&mut conn);
    }
}

/// Gateway paths the fuzzer picks from: every one etcd's gateway serves, and some it does not.
fn gateway_path(pick: u8) -> String {
    let paths = crate::gateway::PATHS;
    match paths.get(pick as usize) {
        Some((p, _)) => (*p).to_owned(),
        None => match pick % 4 {
            0 => "/v3beta/kv/put".into(),
            1 => "/v3alpha/kv/range".into(),
            2 => "/v3/kv/range?x=1".into(),
            _ => "/v3/kv/nope".into(),
        },
    }
}

/// A JSON gateway request: byte 0 picks the path, byte 1 the HTTP method (mostly POST) and
/// where the body is cut into the pieces it arrives in; then the body. Each request the
/// gateway makes of it must decode as the gRPC request it stands for.
pub fn gateway_json(data: &[u8]) {
    let Some((&[pick, how], body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let method = match how >> 6 {
        0..=2 => "POST",
        _ if how & 1 == 0 => "OPTIONS",
        _ => "GET",
    };
    let cut = ((how & 0x3f) as usize * body.len() / 0x3f).min(body.len());
    gateway_requests(method, &gateway_path(pick), &[&body[..cut], &body[cut..]]);
}

fn gateway_requests(method: &str, path: &str, pieces: &[&[u8]]) {
    use crate::gateway::Decoded;
    let not_malformed = |r: Result<(), Status>| {
        if let Err(s) = r {
            assert!(
                !s.message.contains("error unmarshalling"),
                "the gateway made a request that does not decode: {s}"
            );
        }
    };
    match crate::gateway::decode(method, path, pieces, &LIMITS) {
        Decoded::Answered(status) => assert!(status >= 200),
        Decoded::Unary(m, Ok(request)) => not_malformed(decode_call(&Route::Unary(m), &request)),
        Decoded::Unary(_, Err(_)) => {}
        Decoded::Streaming(m, requests, _) => {
            for request in requests {
                not_malformed(decode_call(&Route::Streaming(m), &request));
            }
        }
    }
}

/// The seeded mutations the stable test suite runs each corpus input through (libFuzzer's
/// own are far better; these keep stable CI exercising the targets beyond the seeds).
pub struct Mutator {
    state: u64,
}

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// A copy of `input` with 1 to 4 changes: bit flips, interesting values, inserted,
    /// deleted or duplicated runs, a splice from `other`.
    pub fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        const INTERESTING: &[u64] = &[
            0,
            1,
            0x7f,
            0x80,
            0xff,
            0x7fff,
            0xffff,
            0x7fff_ffff,
            0xffff_ffff,
            u64::MAX,
            i64::MAX as u64,
        ];
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let len = out.len();
            match self.below(7) {
                0 if len > 0 => {
                    let i = self.below(len);
                    out[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    out[i] = self.next() as u8;
                }
                2 if len > 0 => {
                    let v = INTERESTING[self.below(INTERESTING.len())].to_le_bytes();
                    let w = [1, 2, 4, 8][self.below(4)];
                    let i = self.below(len);
                    let n = w.min(len - i);
                    out[i..i + n].copy_from_slice(&v[..n]);
                }
                3 => {
                    let i = self.below(len + 1);
                    let n = 1 + self.below(16);
                    let bytes: Vec<u8> = (0..n).map(|_| self.next() as u8).collect();
                    out.splice(i..i, bytes);
                }
                4 if len > 0 => {
                    let i = self.below(len);
                    let n = 1 + self.below((len - i).min(64));
                    out.drain(i..i + n);
                }
                5 if len > 0 => {
                    let i = self.below(len);
                    let n = 1 + self.below((len - i).min(64));
                    let run = out[i..i + n].to_vec();
                    let j = self.below(len + 1);
                    out.splice(j..j, run);
                }
                _ if !other.is_empty() => {
                    let i = self.below(other.len());
                    let n = 1 + self.below((other.len() - i).min(256));
                    let j = self.below(len + 1);
                    out.splice(j..j, other[i..i + n].iter().copied());
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_method_path_routes() {
        for p in crate::proto::path::ALL {
            assert!(crate::api::route(p).is_some(), "{p} does not route");
        }
    }

    #[test]
    fn mutations_are_deterministic() {
        let a: Vec<_> = (0..50)
            .map(|i| super::Mutator::new(i).mutate(b"hello world", b"other"))
            .collect();
        let b: Vec<_> = (0..50)
            .map(|i| super::Mutator::new(i).mutate(b"hello world", b"other"))
            .collect();
        assert_eq!(a, b);
        assert!(a.iter().any(|m| m != b"hello world"));
    }
}
