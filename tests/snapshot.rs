//! Snapshots in and out: stock etcdctl's `snapshot save` against corekv, then corekvctl's
//! `snapshot status` and `snapshot restore` into new data dirs, and corekv started there:
//! the same keys, values and revisions (compared with etcdctl, and HashKV at the saved
//! revision), as a new cluster with the IDs the restore flags give (one member, and three
//! restored from one file). Bad files and a used data dir are refused with nothing written; a
//! snapshot taken while writes go on holds whole transactions only.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{require_binary, rss_anon, stderr, stdout, DieWithTest, Kind, Server};

fn corekvctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .args(args)
        .die_with_test()
        .output()
        .expect("cannot run corekvctl")
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs stock etcdctl (3.4) against `endpoint`.
fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    etcdctl_bin(&require_binary("etcdctl"), endpoint, args)
}

fn etcdctl_bin(bin: &Path, endpoint: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .die_with_test()
        .output()
        .expect("cannot run etcdctl")
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// `get` of every key at `rev` (0: the newest), as etcdctl prints it in JSON, header left out.
fn all_keys(endpoint: &str, rev: i64) -> serde_json::Value {
    let rev = format!("--rev={rev}");
    let out = ok(
        etcdctl(endpoint, &["get", "", "--from-key", &rev, "-w", "json"]),
        "etcdctl get",
    );
    let mut v = json(&out);
    v.as_object_mut().unwrap().remove("header");
    v
}

fn hash_kv(endpoint: &str, rev: i64) -> u64 {
    let out = ok(
        etcdctl(
            endpoint,
            &["endpoint", "hashkv", &format!("--rev={rev}"), "-w", "json"],
        ),
        "etcdctl endpoint hashkv",
    );
    json(&out)[0]["HashKV"]["hash"]
        .as_u64()
        .expect("a hash in the answer")
}

/// `corekvctl snapshot status -w json`: (revision, total keys, total size).
fn snapshot_status(file: &Path) -> (i64, u64, u64) {
    let out = ok(
        corekvctl(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"]),
        "corekvctl snapshot status",
    );
    let v = json(&out);
    assert!(v["hash"].is_u64(), "{v}");
    (
        v["revision"].as_i64().unwrap(),
        v["totalKey"].as_u64().unwrap(),
        v["totalSize"].as_u64().unwrap(),
    )
}

/// `corekvctl snapshot restore` of `file` as member `i` of `cluster` (its name and peer URL),
/// with every member of `cluster` in --initial-cluster and the token `token`.
fn restore_as(file: &Path, cluster: &Cluster, i: usize, token: &str) -> Output {
    let initial: Vec<String> = (0..cluster.len())
        .map(|m| format!("m{m}={}", cluster.peer_url(m)))
        .collect();
    corekvctl(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        cluster.data_dir(i).to_str().unwrap(),
        "--name",
        &format!("m{i}"),
        "--initial-cluster",
        &initial.join(","),
        "--initial-cluster-token",
        token,
        "--initial-advertise-peer-urls",
        &cluster.peer_url(i),
    ])
}

/// A cluster of `n` corekv members whose data dirs are replaced by restores of `file` (with
/// the token `token`), then started and healthy.
fn restored_cluster(file: &Path, n: usize, token: &str) -> Cluster {
    let mut c = Cluster::start(Kind::Corekv, n, &[]);
    for i in 0..n {
        c.kill(i);
        c.wipe_data(i);
        ok(restore_as(file, &c, i, token), "corekvctl snapshot restore");
    }
    for i in 0..n {
        c.start_member(i, &[]);
    }
    for i in 0..n {
        c.wait_healthy(i);
    }
    c
}

/// The IDs etcd (and corekv) derive for members `m0..` with these peer URLs and token.
fn expected_ids(peer_urls: &[String], token: &str) -> (Vec<u64>, u64) {
    let ids: Vec<u64> = peer_urls
        .iter()
        .map(|u| corekv::config::member_id(std::slice::from_ref(u), token, None))
        .collect();
    let cluster = corekv::config::cluster_id(&ids);
    (ids, cluster)
}

fn member_list(endpoint: &str) -> serde_json::Value {
    json(&ok(
        etcdctl(endpoint, &["member", "list", "-w", "json"]),
        "etcdctl member list",
    ))
}

/// etcd 3.5.1's etcdctl, if corekv-bench has installed it in its cache (`bench/compare.sh`).
fn etcdctl35() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let bin = base.join("corekv-bench/etcd-3.5.1/etcdctl");
    bin.is_file().then_some(bin)
}

/// A few revisions, an overwrite, a delete, a lease with a key, and a compaction at 3;
/// returns the lease's ID.
fn write_history(ep: &str) -> String {
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")] {
        ok(etcdctl(ep, &["put", k, v]), "put");
    }
    ok(etcdctl(ep, &["del", "b"]), "del");
    let grant = ok(etcdctl(ep, &["lease", "grant", "3600"]), "lease grant");
    let lease = grant.split_whitespace().nth(1).unwrap().to_string();
    ok(
        etcdctl(ep, &["put", "leased", "x", "--lease", &lease]),
        "put",
    );
    ok(etcdctl(ep, &["put", "c", "5"]), "put");
    ok(etcdctl(ep, &["compaction", "3"]), "compaction");
    lease
}

#[test]
fn etcdctl_saves_and_corekvctl_restores_a_single_member() {
    let server = Server::start(Kind::Corekv);
    let ep = server.endpoint();
    let lease = write_history(&ep);
    let newest = json(&ok(etcdctl(&ep, &["get", "a", "-w", "json"]), "get"))["header"]["revision"]
        .as_i64()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    let saved = etcdctl(&ep, &["snapshot", "save", file.to_str().unwrap()]);
    assert!(
        stdout(&saved).contains(&format!("Snapshot saved at {}", file.display())),
        "{}{}",
        stdout(&saved),
        stderr(&saved)
    );
    assert!(!dir.path().join("snap.db.part").exists());
    // corekvctl saves the same kind of file, and so does etcd 3.5's etcdctl when present.
    let ours = dir.path().join("ours.db");
    let out = ok(
        corekvctl(&[
            "--endpoints",
            &ep,
            "snapshot",
            "save",
            ours.to_str().unwrap(),
        ]),
        "corekvctl snapshot save",
    );
    assert_eq!(out, format!("Snapshot saved at {}\n", ours.display()));
    assert_eq!(snapshot_status(&ours).0, newest);
    match etcdctl35() {
        Some(bin) => {
            let f35 = dir.path().join("etcd35.db");
            ok(
                etcdctl_bin(&bin, &ep, &["snapshot", "save", f35.to_str().unwrap()]),
                "etcdctl 3.5 snapshot save",
            );
            assert_eq!(snapshot_status(&f35).0, newest);
        }
        None => eprintln!("etcd 3.5.1's etcdctl is not in corekv-bench's cache: not tried"),
    }

    let (revision, total_keys, total_size) = snapshot_status(&file);
    assert_eq!(revision, newest);
    assert!(total_keys > 0);
    assert_eq!(
        total_size + 32,
        std::fs::metadata(&file).unwrap().len(),
        "the file is the backend and its sha256"
    );
    let table = ok(
        corekvctl(&["snapshot", "status", file.to_str().unwrap(), "-w", "table"]),
        "status -w table",
    );
    assert!(
        table.contains("| REVISION | TOTAL KEYS | TOTAL SIZE |"),
        "{table}"
    );

    let token = "restored-token";
    let restored = restored_cluster(&file, 1, token);
    let rep = restored.endpoint(0);
    // Every revision still held (from the compaction on) reads the same.
    for rev in [3, 4, 5, 6, newest] {
        assert_eq!(all_keys(&ep, rev), all_keys(&rep, rev), "at revision {rev}");
    }
    assert_eq!(all_keys(&ep, 0), all_keys(&rep, 0));
    let compacted = etcdctl(&rep, &["get", "a", "--rev=2"]);
    assert!(
        stderr(&compacted).contains("required revision has been compacted"),
        "{}",
        stderr(&compacted)
    );
    assert_eq!(hash_kv(&ep, revision), hash_kv(&rep, revision));
    // The lease came along with its key.
    let ttl = ok(
        etcdctl(&rep, &["lease", "timetolive", &lease, "--keys"]),
        "lease timetolive",
    );
    assert!(ttl.contains("attached keys([leased])"), "{ttl}");
    // A new one-member cluster whose IDs come from the restore flags.
    let (ids, cluster_id) = expected_ids(&[restored.peer_url(0)], token);
    let members = member_list(&rep);
    assert_eq!(members["members"].as_array().unwrap().len(), 1, "{members}");
    assert_eq!(
        members["members"][0]["ID"].as_u64(),
        Some(ids[0]),
        "{members}"
    );
    assert_eq!(members["members"][0]["name"], "m0", "{members}");
    assert_eq!(members["header"]["cluster_id"].as_u64(), Some(cluster_id));
    // And it takes writes, after the restored revisions.
    let put = ok(
        etcdctl(&rep, &["put", "after", "restore", "-w", "json"]),
        "put",
    );
    assert_eq!(json(&put)["header"]["revision"].as_i64(), Some(newest + 1));
}

#[test]
fn three_members_restored_from_one_file_form_one_cluster() {
    let server = Server::start(Kind::Corekv);
    let ep = server.endpoint();
    for i in 0..20 {
        ok(
            etcdctl(&ep, &["put", &format!("k{i:02}"), &format!("v{i}")]),
            "put",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    ok(
        etcdctl(&ep, &["snapshot", "save", file.to_str().unwrap()]),
        "snapshot save",
    );
    let (revision, _, _) = snapshot_status(&file);

    let token = "three-restored";
    let c = restored_cluster(&file, 3, token);
    let peer_urls: Vec<String> = (0..3).map(|i| c.peer_url(i)).collect();
    let (ids, cluster_id) = expected_ids(&peer_urls, token);
    let want = all_keys(&ep, 0);
    let hash = hash_kv(&ep, revision);
    for i in 0..3 {
        let e = c.endpoint(i);
        assert_eq!(all_keys(&e, 0), want, "member {i}");
        assert_eq!(hash_kv(&e, revision), hash, "member {i}");
        let members = member_list(&e);
        let mut got: Vec<u64> = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["ID"].as_u64().unwrap())
            .collect();
        got.sort_unstable();
        let mut want_ids = ids.clone();
        want_ids.sort_unstable();
        assert_eq!(got, want_ids, "member {i}: {members}");
        assert_eq!(members["header"]["cluster_id"].as_u64(), Some(cluster_id));
    }
    // One cluster: a write through one member is read through the others.
    ok(etcdctl(&c.endpoint(0), &["put", "joint", "yes"]), "put");
    for i in 1..3 {
        let got = ok(
            etcdctl(&c.endpoint(i), &["get", "joint", "--print-value-only"]),
            "get",
        );
        assert_eq!(got, "yes\n", "member {i}");
    }
}

#[test]
fn bad_snapshots_and_used_data_dirs_are_refused_with_nothing_written() {
    let server = Server::start(Kind::Corekv);
    let ep = server.endpoint();
    ok(etcdctl(&ep, &["put", "k", "v"]), "put");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.db");
    ok(
        etcdctl(&ep, &["snapshot", "save", good.to_str().unwrap()]),
        "snapshot save",
    );
    let bytes = std::fs::read(&good).unwrap();
    let target = dir.path().join("restored");
    let restore = |file: &Path, extra: &[&str]| {
        let mut args = vec![
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        corekvctl(&args)
    };
    let refused = |o: Output, what: &str, expect: &str| {
        assert!(!o.status.success(), "{what}: restore succeeded");
        let e = stderr(&o);
        assert!(e.contains(expect), "{what}: {e}");
        assert!(!target.exists(), "{what}: the data dir was created");
    };

    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    refused(
        restore(&truncated, &[]),
        "truncated",
        "snapshot missing hash",
    );
    // Cut off just its digest: the backend alone passes as a copy with --skip-hash-check,
    // but cut in the middle of its pages it does not.
    let no_digest = dir.path().join("nodigest.db");
    std::fs::write(&no_digest, &bytes[..bytes.len() - 32 - 4096]).unwrap();
    refused(
        restore(&no_digest, &["--skip-hash-check"]),
        "truncated without its digest",
        "truncated",
    );

    let flipped = dir.path().join("flipped.db");
    let mut f = bytes.clone();
    let at = f.len() / 3;
    f[at] ^= 0x40;
    std::fs::write(&flipped, &f).unwrap();
    refused(restore(&flipped, &[]), "flipped byte", "expected sha256");
    let st = corekvctl(&["snapshot", "status", flipped.to_str().unwrap()]);
    assert!(!st.status.success());
    assert!(stderr(&st).contains("expected sha256"), "{}", stderr(&st));
    // The same damage without the digest is caught by the pages' own checksums.
    let flipped_bare = dir.path().join("flipped-bare.db");
    std::fs::write(&flipped_bare, &f[..f.len() - 32]).unwrap();
    refused(
        restore(&flipped_bare, &["--skip-hash-check"]),
        "flipped byte, no digest",
        "checksum",
    );

    // etcd's own snapshot (bolt), damaged: truncated, or both meta pages flipped (the digest
    // left off so the bolt reader itself must catch it).
    let etcd = Server::start(Kind::Etcd);
    let bolt = dir.path().join("etcd.db");
    ok(
        etcdctl(
            &etcd.endpoint(),
            &["snapshot", "save", bolt.to_str().unwrap()],
        ),
        "etcd snapshot save",
    );
    let b = std::fs::read(&bolt).unwrap();
    let cut = dir.path().join("etcd-cut.db");
    std::fs::write(&cut, &b[..b.len() / 2]).unwrap();
    refused(
        restore(&cut, &["--skip-hash-check"]),
        "truncated etcd snapshot",
        "bolt file truncated",
    );
    let mut m = b[..b.len() - 32].to_vec();
    let page = u32::from_le_bytes(m[24..28].try_into().unwrap()) as usize;
    m[16 + 20] ^= 0x01;
    m[page + 16 + 20] ^= 0x01;
    let metas = dir.path().join("etcd-metas.db");
    std::fs::write(&metas, &m).unwrap();
    refused(
        restore(&metas, &["--skip-hash-check"]),
        "etcd snapshot with damaged meta pages",
        "not a valid bolt file: meta page 0: checksum mismatch",
    );

    // A data dir with something in it is left as it is.
    std::fs::create_dir_all(target.join("member")).unwrap();
    std::fs::write(target.join("member/keep"), b"mine").unwrap();
    let o = restore(&good, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!(
            "Error: data-dir {:?} exists",
            target.display().to_string()
        )),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(target.join("member/keep")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1);
    // And the good file restores into an empty one.
    std::fs::remove_dir_all(&target).unwrap();
    ok(restore(&good, &[]), "restore of the good file");
    assert!(target.join("member/db").is_file());
}

/// Ten keys rewritten together by each transaction while the snapshot streams: the restored
/// copy must hold all ten at one transaction, the newest it has.
#[test]
fn a_snapshot_taken_under_writes_holds_whole_transactions() {
    let server = Server::start(Kind::Corekv);
    let ep = server.endpoint();
    // Some bulk, so the stream takes a while: 4 MB of values.
    fill(&ep, 4, 1000, 1000);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writer = std::thread::spawn({
        let (ep, stop, done) = (ep.clone(), stop.clone(), done.clone());
        move || {
            corekv::client::run_local(move || async move {
                use corekv::proto::etcdserverpb as pb;
                let c =
                    corekv::client::Client::connect(corekv::client::ClientOptions::new(vec![ep]))
                        .await
                        .unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let success = (0..10)
                        .map(|k| pb::RequestOp {
                            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                                key: format!("set/{k}").into(),
                                value: n.to_string().into(),
                                ..Default::default()
                            })),
                        })
                        .collect();
                    c.txn(pb::TxnRequest {
                        success,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                    done.store(n, Ordering::Relaxed);
                }
            })
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "the writer made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    let saved = etcdctl(&ep, &["snapshot", "save", file.to_str().unwrap()]);
    let before_stop = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(saved.status.success(), "{}", stderr(&saved));
    let (revision, _, _) = snapshot_status(&file);

    let restored = restored_cluster(&file, 1, "under-writes");
    let rep = restored.endpoint(0);
    let set = all_keys(&rep, 0);
    let kvs: Vec<&serde_json::Value> = set["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|kv| {
            let key = base64_decode(kv["key"].as_str().unwrap());
            key.starts_with(b"set/")
        })
        .collect();
    assert_eq!(kvs.len(), 10, "{set}");
    let values: Vec<&str> = kvs.iter().map(|kv| kv["value"].as_str().unwrap()).collect();
    assert!(
        values.iter().all(|v| *v == values[0]),
        "torn transaction: {values:?}"
    );
    let mods: Vec<i64> = kvs
        .iter()
        .map(|kv| kv["mod_revision"].as_i64().unwrap())
        .collect();
    assert!(
        mods.iter().all(|m| *m == revision),
        "{mods:?} vs {revision}"
    );
    let n: u64 = String::from_utf8(base64_decode(values[0]))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (20..=before_stop).contains(&n),
        "{n} not in 20..={before_stop}"
    );
    assert_eq!(hash_kv(&ep, revision), hash_kv(&rep, revision));
    assert_eq!(all_keys(&ep, revision), all_keys(&rep, revision));
}

/// Puts `writers` × `each` keys (`bulk/<writer>/<n>`) of `size`-byte values, `writers` at a
/// time, through corekv's client: one revision per put.
fn fill(endpoint: &str, writers: usize, each: usize, size: usize) {
    let ep = endpoint.to_string();
    corekv::client::run_local(move || async move {
        let opts = corekv::client::ClientOptions::new(vec![ep]);
        let c = corekv::client::Client::connect(opts).await.unwrap();
        let tasks: Vec<_> = (0..writers)
            .map(|t| {
                let c = c.clone();
                glommio::spawn_local(async move {
                    for i in 0..each {
                        c.put(corekv::proto::etcdserverpb::PutRequest {
                            key: format!("bulk/{t}/{i:05}").into(),
                            value: vec![b'x'; size].into(),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
    });
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

/// How many Snapshot streams the server counts as ended with `code`.
fn snapshots_handled(server: &Server, code: &str) -> u64 {
    let metrics = common::http_get(server.client_port, "/metrics").unwrap_or_default();
    let prefix =
        format!("grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"Snapshot\",");
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A reader that stops reading holds the server to what HTTP/2 flow control lets out (the
/// server's heap does not take in the database), and one that goes away ends the stream.
#[test]
fn a_stalled_reader_costs_little_and_one_that_leaves_ends_the_stream() {
    let server = Server::start(Kind::Corekv);
    let ep = server.endpoint();
    // 64 MB of values.
    fill(&ep, 8, 1000, 8192);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stalled.db");
    let part = dir.path().join("stalled.db.part");
    let mut reader = server
        .etcdctl_command(&["snapshot", "save", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&part).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "etcdctl received nothing");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The stream has started (the backend commit it waited for is done): from here on, what
    // the server's heap takes in is what it holds for this reader.
    let heap_before = rss_anon(server.pid());
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(reader.id() as i32, libc::SIGSTOP) }, 0);
    // Time for a server that buffered without bound to take in the whole database.
    std::thread::sleep(Duration::from_secs(1));
    let heap_stalled = rss_anon(server.pid());
    let received = std::fs::metadata(&part).unwrap().len();
    eprintln!(
        "server heap {heap_before} -> {heap_stalled} bytes; the stalled reader got {received}"
    );
    assert!(
        heap_stalled < heap_before + (16 << 20),
        "the server's heap grew from {heap_before} to {heap_stalled} bytes behind a stalled \
         reader (which has {received} bytes)"
    );
    let canceled_before = snapshots_handled(&server, "Canceled");
    reader.kill().unwrap();
    reader.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while snapshots_handled(&server, "Canceled") == canceled_before {
        assert!(
            Instant::now() < deadline,
            "the stream of a reader that left did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The server serves the next one whole.
    ok(
        etcdctl(&ep, &["snapshot", "save", file.to_str().unwrap()]),
        "snapshot save after a reader left",
    );
    let (revision, _, size) = snapshot_status(&file);
    assert_eq!(revision, 8001);
    assert!(size > 60 << 20, "{size}");
}

/// An etcd user moving to corekv: a snapshot etcd 3.4 saved of itself, restored by corekvctl,
/// serves the same keys, revisions, lease and compaction as the etcd it came from, with the
/// same HashKV.
#[test]
fn an_etcd_snapshot_restored_into_corekv_serves_what_etcd_served() {
    let etcd = Server::start(Kind::Etcd);
    let ep = etcd.endpoint();
    let lease = write_history(&ep);
    ok(etcdctl(&ep, &["put", "d", "6"]), "put");
    let newest = json(&ok(etcdctl(&ep, &["get", "a", "-w", "json"]), "get"))["header"]["revision"]
        .as_i64()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd.db");
    ok(
        etcdctl(&ep, &["snapshot", "save", file.to_str().unwrap()]),
        "etcdctl snapshot save against etcd",
    );

    let token = "from-etcd";
    let restored = restored_cluster(&file, 1, token);
    let rep = restored.endpoint(0);
    for rev in [3, 4, 5, 6, 7, newest] {
        assert_eq!(all_keys(&ep, rev), all_keys(&rep, rev), "at revision {rev}");
    }
    assert_eq!(all_keys(&ep, 0), all_keys(&rep, 0));
    assert_eq!(hash_kv(&ep, newest), hash_kv(&rep, newest));
    let compacted = etcdctl(&rep, &["get", "a", "--rev=2"]);
    assert!(
        stderr(&compacted).contains("required revision has been compacted"),
        "{}",
        stderr(&compacted)
    );
    let ttl = ok(
        etcdctl(&rep, &["lease", "timetolive", &lease, "--keys"]),
        "lease timetolive",
    );
    assert!(ttl.contains("attached keys([leased])"), "{ttl}");
    let (ids, cluster_id) = expected_ids(&[restored.peer_url(0)], token);
    let members = member_list(&rep);
    assert_eq!(members["members"].as_array().unwrap().len(), 1, "{members}");
    assert_eq!(members["members"][0]["ID"].as_u64(), Some(ids[0]));
    assert_eq!(members["header"]["cluster_id"].as_u64(), Some(cluster_id));
    let put = ok(
        etcdctl(&rep, &["put", "after", "restore", "-w", "json"]),
        "put",
    );
    assert_eq!(json(&put)["header"]["revision"].as_i64(), Some(newest + 1));
}
