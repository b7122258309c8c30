//! The fuzz targets (corekv::fuzzing) on stable Rust, without libFuzzer: each target runs
//! every input of its checked-in seed corpus (fuzz/corpus/<target>/), then a bounded number
//! of seeded, deterministic mutations of them. A panic is a finding: the test fails with the
//! input's hex and saves it under target/fuzz-findings/ (see fuzz/README.md for turning one
//! into a regression test).
//!
//! `cargo test --release --test fuzz_corpus -- --ignored write_seed_corpus` rewrites the
//! seed corpora from real encodings (a real WAL segment, real backend pages, real request
//! messages); the coverage-guided runs are `fuzz/run.sh` (nightly).

use std::path::{Path, PathBuf};

use corekv::fuzzing::{Mutator, Target, TARGETS};

/// Mutated inputs per target (over all its seeds). Enough to reach past the seeds' first
/// checks; small enough that all targets take seconds in release mode.
const MUTATIONS: usize = 20_000;
/// Mutants longer than this are cut (the seeds are smaller).
const MAX_INPUT: usize = 64 << 10;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| {
            let e = e.expect("a directory entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("a seed file"),
            )
        })
        .collect();
    out.sort();
    out
}

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"))
        .1
}

/// Runs `f` on `input`; on a panic, saves the input and fails naming it.
fn run_one(name: &str, f: Target, input: &[u8], what: &str) {
    if std::panic::catch_unwind(|| f(input)).is_ok() {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings");
    std::fs::create_dir_all(&dir).expect("a findings directory");
    let file = dir.join(format!("{name}-{:08x}", crc32fast::hash(input)));
    std::fs::write(&file, input).expect("saving the finding");
    let hex: String = input.iter().take(512).map(|b| format!("{b:02x}")).collect();
    panic!(
        "fuzz target {name} panicked on {what} ({} bytes, saved to {}): {hex}",
        input.len(),
        file.display()
    );
}

fn fuzz(name: &str) {
    let f = target(name);
    let seeds = seeds(name);
    assert!(!seeds.is_empty(), "{name} has no seed corpus");
    for (file, input) in &seeds {
        run_one(name, f, input, &format!("seed {file}"));
    }
    let per_seed = MUTATIONS.div_ceil(seeds.len());
    let mut m = Mutator::new(crc32fast::hash(name.as_bytes()) as u64);
    for (i, (file, seed)) in seeds.iter().enumerate() {
        let other = &seeds[(i + 1) % seeds.len()].1;
        let mut input = seed.clone();
        for k in 0..per_seed {
            // Chains of mutations, restarting from the seed now and then.
            if k % 8 == 0 {
                input = seed.clone();
            }
            input = m.mutate(&input, other);
            input.truncate(MAX_INPUT);
            run_one(name, f, &input, &format!("mutation {k} of seed {file}"));
        }
    }
}

#[test]
fn every_target_has_a_test_and_a_corpus() {
    let tested = [
        "wal_frame",
        "wal_recover",
        "storage_open",
        "peer_stream",
        "grpc_request",
        "http1_request",
        "gateway_json",
    ];
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, tested);
    for n in names {
        assert!(!seeds(n).is_empty(), "{n} has no seed corpus");
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz/fuzz_targets/{n}.rs"));
        assert!(bin.exists(), "no cargo-fuzz binary for {n}");
    }
}

#[test]
fn wal_frame() {
    fuzz("wal_frame");
}

#[test]
fn wal_recover() {
    fuzz("wal_recover");
}

#[test]
fn storage_open() {
    fuzz("storage_open");
}

#[test]
fn peer_stream() {
    fuzz("peer_stream");
}

#[test]
fn grpc_request() {
    fuzz("grpc_request");
}

#[test]
fn http1_request() {
    fuzz("http1_request");
}

#[test]
fn gateway_json() {
    fuzz("gateway_json");
}

/// Writes the seed corpora from real encodings. Run by hand when a format changes.
#[test]
#[ignore]
fn write_seed_corpus() {
    let mut all: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for (name, bytes) in seeds::wal_frame() {
        all.push(("wal_frame", name, bytes));
    }
    for (name, bytes) in seeds::wal_recover() {
        all.push(("wal_recover", name, bytes));
    }
    for (name, bytes) in seeds::storage_open() {
        all.push(("storage_open", name, bytes));
    }
    for (name, bytes) in seeds::peer_stream() {
        all.push(("peer_stream", name, bytes));
    }
    for (name, bytes) in seeds::grpc_request() {
        all.push(("grpc_request", name, bytes));
    }
    for (name, bytes) in seeds::http1_request() {
        all.push(("http1_request", name, bytes));
    }
    for (name, bytes) in seeds::gateway_json() {
        all.push(("gateway_json", name, bytes));
    }
    for (target, _) in TARGETS {
        let dir = corpus_dir(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (target, name, bytes) in all {
        std::fs::write(corpus_dir(target).join(name), bytes).unwrap();
    }
}

mod seeds {
    use bytes::Bytes;
    use corekv::net::grpc::encode_message;
    use corekv::peer::frame;
    use corekv::proto::corekvpb::{
        peer_frame, PeerBatch, PeerFrame, PeerHello, PeerHelloReply, PeerStream, RaftBatch,
        RaftRequest, SnapshotChunk, SnapshotEnd, SnapshotHeader,
    };
    use corekv::proto::etcdserverpb as pb;
    use corekv::proto::{path, v3electionpb as epb, v3lockpb as lockpb};
    use corekv::storage::{Bucket, Db, DbOptions};
    use prost::Message as _;
    use raft::eraftpb::{Entry, HardState, Message, MessageType, SnapshotMetadata};

    type Seeds = Vec<(String, Vec<u8>)>;

    fn put(key: &str, value: &str) -> pb::PutRequest {
        pb::PutRequest {
            key: Bytes::from(key.to_owned()),
            value: Bytes::from(value.to_owned()),
            ..Default::default()
        }
    }

    fn batch_entry(index: u64) -> Entry {
        let batch = RaftBatch {
            proposer: 1,
            batch_id: index,
            requests: vec![RaftRequest {
                auth: None,
                request: Some(corekv::proto::corekvpb::raft_request::Request::Put(put(
                    &format!("key{index}"),
                    "value",
                ))),
            }],
        };
        let mut e = Entry::default();
        e.set_index(index);
        e.set_term(2);
        e.set_data(batch.encode_to_vec().into());
        e
    }

    /// A real WAL (8 KiB segments, buffered I/O) holding what a member writes: a hard state,
    /// raft entries of put batches, a snapshot marker. Returns its segment files.
    fn wal_segments() -> Vec<Vec<u8>> {
        use corekv::server::wal_records;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        glommio::LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(move || async move {
                let opts = wal::WalOptions {
                    segment_size: 8192,
                    io_mode: wal::IoMode::Buffered,
                    ..Default::default()
                };
                let (w, _) = wal::Wal::open(&path, opts).await.unwrap();
                let mut hs = HardState::default();
                hs.set_term(2);
                hs.set_vote(1);
                let (t, p) = wal_records::encode_hard_state(&hs);
                w.append(t, &p).await.unwrap();
                for i in 1..=40 {
                    let bytes = protobuf::Message::write_to_bytes(&batch_entry(i)).unwrap();
                    w.append(wal_records::ENTRY, &bytes).await.unwrap();
                    if i % 10 == 0 {
                        hs.commit = i;
                        let (t, p) = wal_records::encode_hard_state(&hs);
                        w.append(t, &p).await.unwrap();
                    }
                    if i == 20 {
                        let mut meta = SnapshotMetadata::default();
                        meta.set_index(15);
                        meta.set_term(2);
                        let (t, p) = wal_records::encode_snapshot(&meta);
                        w.append(t, &p).await.unwrap();
                    }
                }
                w.close().await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        files.sort();
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    }

    pub fn wal_frame() -> Seeds {
        let segments = wal_segments();
        let mut out = Vec::new();
        for (i, seg) in segments.iter().take(2).enumerate() {
            // The fuzz input: log id, segment LSN (from the segment's header), extra size 0,
            // then the image.
            let mut input = seg[16..24].to_vec();
            input.extend_from_slice(&seg[32..40]);
            input.extend_from_slice(&[0, 0]);
            input.extend_from_slice(seg);
            out.push((format!("segment-{i}"), input));
        }
        out
    }

    pub fn wal_recover() -> Seeds {
        let segments = wal_segments();
        assert!(segments.len() >= 2, "the WAL spans segments");
        // One raw real segment (file name seq 0 = the first segment's).
        let mut one = vec![0, 0x01];
        one.extend_from_slice(&segments[0]);
        // Frames of the real log behind a synthesized header (another log id: refused), and
        // two raw segments cut where the target cuts them.
        let mut two = vec![1, 0x03];
        two.extend_from_slice(&segments[0]);
        two.extend_from_slice(&segments[1][..segments[1].len() - 2]);
        let mut framed = vec![0, 0];
        framed.extend_from_slice(&segments[0][64..2048]);
        vec![
            ("one-segment".into(), one),
            ("two-segments".into(), two),
            ("frames-behind-a-header".into(), framed),
        ]
    }

    pub fn storage_open() -> Seeds {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db");
        let opts = DbOptions {
            page_size: 1024,
            reserve_bytes: 0,
            ..DbOptions::default()
        };
        let db = Db::open(&file, opts).unwrap();
        let mut w = db.begin_write().unwrap();
        for i in 0..40u32 {
            w.put(Bucket::Key, format!("key{i:03}").as_bytes(), &[i as u8; 40])
                .unwrap();
        }
        w.put(Bucket::Meta, b"consistent_index", &7u64.to_be_bytes())
            .unwrap();
        w.put(Bucket::Members, b"1", b"member").unwrap();
        // A value past a page: an overflow run.
        w.put(Bucket::Lease, b"big", &[7u8; 3000]).unwrap();
        w.commit().unwrap();
        let mut w = db.begin_write().unwrap();
        for i in 0..10u32 {
            w.delete(Bucket::Key, format!("key{i:03}").as_bytes())
                .unwrap();
        }
        w.commit().unwrap();
        drop(db);
        let image = std::fs::read(&file).unwrap();
        // The file keeps room to grow: the pages below both metas' high-water marks are
        // the database.
        let hwm = |slot: usize| u64::from_le_bytes(image[slot + 32..slot + 40].try_into().unwrap());
        let used = (hwm(0).max(hwm(1024)) as usize * 1024).min(image.len());
        let mut out = Vec::new();
        for (name, flags) in [("plain", 0u8), ("resealed", 1), ("full-check", 7)] {
            let mut input = vec![flags];
            input.extend_from_slice(&image[..used]);
            out.push((name.to_owned(), input));
        }
        let mut empty = vec![0u8];
        empty.extend_from_slice(&image[..2048]);
        out.push(("metas-only".into(), empty));
        out
    }

    fn frame(body: peer_frame::Body) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode(&PeerFrame { body: Some(body) }, &mut out);
        out
    }

    fn hello(stream: PeerStream) -> Vec<u8> {
        frame(peer_frame::Body::Hello(PeerHello {
            protocol: 1,
            cluster_id: 7,
            from: 1,
            to: 2,
            stream: stream as i32,
            empty: false,
        }))
    }

    fn raft_message(t: MessageType) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = 1;
        m.to = 2;
        m.term = 2;
        m
    }

    pub fn peer_stream() -> Seeds {
        let mut append = raft_message(MessageType::MsgAppend);
        append.index = 3;
        append.log_term = 2;
        append.commit = 3;
        append.entries = vec![batch_entry(4), batch_entry(5)].into();
        let heartbeat = raft_message(MessageType::MsgHeartbeat);
        let batch = PeerBatch {
            raft: vec![
                protobuf::Message::write_to_bytes(&append).unwrap().into(),
                protobuf::Message::write_to_bytes(&heartbeat)
                    .unwrap()
                    .into(),
            ],
            ..Default::default()
        };
        let mut messages = frame::PREAMBLE.to_vec();
        messages.extend(hello(PeerStream::Messages));
        messages.extend(frame(peer_frame::Body::Batch(batch)));

        let mut snap_msg = raft_message(MessageType::MsgSnapshot);
        snap_msg.mut_snapshot().mut_metadata().index = 9;
        let data = b"backend bytes".to_vec();
        let mut snapshot = frame::PREAMBLE.to_vec();
        snapshot.extend(hello(PeerStream::Snapshot));
        snapshot.extend(frame(peer_frame::Body::SnapshotHeader(SnapshotHeader {
            message: protobuf::Message::write_to_bytes(&snap_msg).unwrap().into(),
            size: data.len() as u64,
        })));
        snapshot.extend(frame(peer_frame::Body::SnapshotChunk(SnapshotChunk {
            offset: 0,
            data: data[..5].to_vec().into(),
        })));
        snapshot.extend(frame(peer_frame::Body::SnapshotChunk(SnapshotChunk {
            offset: 5,
            data: data[5..].to_vec().into(),
        })));
        snapshot.extend(frame(peer_frame::Body::SnapshotEnd(SnapshotEnd {
            crc: crc32fast::hash(&data),
        })));

        let mut reply = frame::PREAMBLE.to_vec();
        reply.extend(frame(peer_frame::Body::HelloReply(PeerHelloReply {
            accepted: true,
            refusal: String::new(),
            empty: true,
            fatal: false,
        })));
        vec![
            ("messages".into(), messages),
            ("snapshot".into(), snapshot),
            ("hello-reply".into(), reply),
        ]
    }

    /// A real request message for each method path (the empty one where the method takes
    /// nothing in particular).
    fn request_for(p: &str) -> Bytes {
        let key = || Bytes::from_static(b"foo");
        match p {
            path::RANGE => encode_message(&pb::RangeRequest {
                key: key(),
                range_end: Bytes::from_static(b"fop"),
                limit: 10,
                revision: 3,
                sort_order: 1,
                sort_target: 2,
                ..Default::default()
            }),
            path::PUT => encode_message(&pb::PutRequest {
                lease: 5,
                prev_kv: true,
                ..put("foo", "bar")
            }),
            path::DELETE_RANGE => encode_message(&pb::DeleteRangeRequest {
                key: key(),
                range_end: Bytes::from_static(b"\0"),
                prev_kv: true,
            }),
            path::TXN => encode_message(&pb::TxnRequest {
                compare: vec![pb::Compare {
                    result: 0,
                    target: 1,
                    key: key(),
                    target_union: Some(pb::compare::TargetUnion::ModRevision(3)),
                    ..Default::default()
                }],
                success: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestPut(put("foo", "baz"))),
                }],
                failure: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
                        success: vec![pb::RequestOp {
                            request: Some(pb::request_op::Request::RequestRange(
                                pb::RangeRequest {
                                    key: key(),
                                    ..Default::default()
                                },
                            )),
                        }],
                        ..Default::default()
                    })),
                }],
            }),
            path::COMPACT => encode_message(&pb::CompactionRequest {
                revision: 5,
                physical: true,
            }),
            path::WATCH => {
                let create = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                        pb::WatchCreateRequest {
                            key: key(),
                            start_revision: 2,
                            progress_notify: true,
                            filters: vec![1],
                            prev_kv: true,
                            watch_id: 3,
                            fragment: true,
                            ..Default::default()
                        },
                    )),
                };
                let cancel = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
                        pb::WatchCancelRequest { watch_id: 3 },
                    )),
                };
                [encode_message(&create), encode_message(&cancel)]
                    .concat()
                    .into()
            }
            path::LEASE_GRANT => encode_message(&pb::LeaseGrantRequest { ttl: 60, id: 0 }),
            path::LEASE_REVOKE => encode_message(&pb::LeaseRevokeRequest { id: 7 }),
            path::LEASE_KEEP_ALIVE => [
                encode_message(&pb::LeaseKeepAliveRequest { id: 7 }),
                encode_message(&pb::LeaseKeepAliveRequest { id: 8 }),
            ]
            .concat()
            .into(),
            path::LEASE_TIME_TO_LIVE => {
                encode_message(&pb::LeaseTimeToLiveRequest { id: 7, keys: true })
            }
            path::MEMBER_ADD => encode_message(&pb::MemberAddRequest {
                peer_ur_ls: vec!["http://127.0.0.1:2380".into()],
                is_learner: true,
            }),
            path::MEMBER_UPDATE => encode_message(&pb::MemberUpdateRequest {
                id: 9,
                peer_ur_ls: vec!["https://10.0.0.1:2380/".into()],
            }),
            path::MEMBER_REMOVE => encode_message(&pb::MemberRemoveRequest { id: 9 }),
            path::ALARM => encode_message(&pb::AlarmRequest {
                action: 2,
                member_id: 1,
                alarm: 1,
            }),
            path::HASH_KV => encode_message(&pb::HashKvRequest { revision: 4 }),
            path::MOVE_LEADER => encode_message(&pb::MoveLeaderRequest { target_id: 2 }),
            path::AUTHENTICATE => encode_message(&pb::AuthenticateRequest {
                name: "root".into(),
                password: "pw".into(),
            }),
            path::USER_ADD => encode_message(&pb::AuthUserAddRequest {
                name: "u".into(),
                password: "pw".into(),
                ..Default::default()
            }),
            path::ROLE_GRANT_PERMISSION => encode_message(&pb::AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(corekv::proto::authpb::Permission {
                    perm_type: 2,
                    key: key(),
                    range_end: Bytes::from_static(b"fop"),
                }),
            }),
            path::LOCK => encode_message(&lockpb::LockRequest {
                name: key(),
                lease: 7,
            }),
            path::CAMPAIGN => encode_message(&epb::CampaignRequest {
                name: key(),
                lease: 7,
                value: Bytes::from_static(b"v"),
            }),
            path::OBSERVE => encode_message(&epb::LeaderRequest { name: key() }),
            _ => encode_message(&pb::StatusRequest {}),
        }
    }

    pub fn grpc_request() -> Seeds {
        let mut out = Vec::new();
        for (i, p) in path::ALL.iter().enumerate() {
            let body = request_for(p);
            let mut input = vec![i as u8, (body.len() / 2) as u8];
            input.extend_from_slice(&body);
            let name = p.rsplit('/').next().unwrap().to_lowercase();
            out.push((name, input));
        }
        out
    }

    pub fn http1_request() -> Seeds {
        let reqs: &[(&str, &[u8])] = &[
            ("health", b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"),
            (
                "health-exclude",
                b"GET /health?exclude=NOSPACE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ),
            (
                "keep-alive",
                b"GET /version HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
            (
                "gateway-range",
                b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"key\": \"Zm9v\"}\n",
            ),
            (
                "gateway-put-chunked",
                b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nAuthorization: tok\r\n\r\nc\r\n{\"key\":\"YQ\"\r\nf\r\n,\"value\":\"Yg==\"\r\n1\r\n}\r\n0\r\n\r\n",
            ),
            (
                "gateway-watch-continue",
                b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 60\r\n\r\n{\"create_request\":{\"key\":\"Zm9v\"}} {\"progress_request\":{}}   ",
            ),
            (
                "gateway-then-health",
                b"POST /v3/lease/grant HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{\"TTL\":\"5\"}GET /health HTTP/1.0\r\n\r\n",
            ),
        ];
        reqs.iter()
            .map(|(n, r)| ((*n).to_owned(), r.to_vec()))
            .collect()
    }

    pub fn gateway_json() -> Seeds {
        let pick = |p: &str| {
            corekv::gateway::PATHS
                .iter()
                .position(|(g, _)| *g == p)
                .unwrap_or_else(|| panic!("no gateway path {p}")) as u8
        };
        let bodies: &[(&str, &str, &str)] = &[
            (
                "range",
                "/v3/kv/range",
                r#"{"key":"Zm9v","range_end":"Zm9w","limit":"10","sort_order":"DESCEND","revision":3}"#,
            ),
            (
                "put",
                "/v3/kv/put",
                r#"{"key":"Zm9v","value":"YmFy","lease":"7","prev_kv":true}"#,
            ),
            (
                "txn",
                "/v3/kv/txn",
                r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmFy"}],"success":[{"request_put":{"key":"Zm9v","value":"YmF6"}}],"failure":[{"request_range":{"key":"Zm9v"}},{"request_txn":{"success":[{"request_delete_range":{"key":"YQ=="}}]}}]}"#,
            ),
            ("grant", "/v3/lease/grant", r#"{"TTL":"60","ID":"0"}"#),
            (
                "watch",
                "/v3/watch",
                r#"{"create_request":{"key":"Zm9v","start_revision":"2","filters":["NOPUT"]}} {"cancel_request":{"watch_id":"0"}}"#,
            ),
            (
                "keepalive",
                "/v3/lease/keepalive",
                r#"{"ID":"7"}{"ID":"8"}"#,
            ),
            (
                "user-add",
                "/v3/auth/user/add",
                r#"{"name":"u","password":"p","options":{"no_password":false}}"#,
            ),
            (
                "member-add",
                "/v3/cluster/member/add",
                r#"{"peerURLs":["http://127.0.0.1:2380"],"isLearner":true}"#,
            ),
            ("lock", "/v3/lock/lock", r#"{"name":"Zm9v","lease":"7"}"#),
            (
                "observe",
                "/v3/election/observe",
                r#"{"name":"ZWxlY3Rpb24="}"#,
            ),
            ("empty", "/v3/maintenance/status", ""),
        ];
        let mut out: Seeds = bodies
            .iter()
            .map(|(name, p, body)| {
                let mut input = vec![pick(p), 0x20];
                input.extend_from_slice(body.as_bytes());
                ((*name).to_owned(), input)
            })
            .collect();
        let mut beta = vec![252, 0x3f];
        beta.extend_from_slice(br#"{"key":"YQ==","value":"Yg=="}"#);
        out.push(("v3beta".into(), beta));
        out
    }
}
