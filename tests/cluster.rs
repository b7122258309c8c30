//! corekv as a cluster of real processes: bootstrap from etcd's flags, requests on every
//! member through stock etcdctl, catch-up by snapshot, members that must be refused, and
//! what the peer port does with garbage. (The linearizability checks under a nemesis —
//! kills, pauses, partitions — are in tests/cluster_harness.rs.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{free_port, require_binary, DieWithTest, Kind};

/// Three members share two cores: one executor each.
const FLAGS: &[&str] = &["--cores=1"];

fn etcdctl(endpoints: &[String], args: &[&str]) -> Output {
    let mut cmd = Command::new(require_binary("etcdctl"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(args)
        .stdin(Stdio::null())
        .die_with_test()
        .output()
        .expect("etcdctl runs")
}

/// Runs etcdctl and returns its stdout, failing the test if it fails.
fn ok(endpoints: &[String], args: &[&str]) -> String {
    let out = etcdctl(endpoints, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} against {endpoints:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The index of a member that is not the leader.
fn follower(c: &Cluster, leader: usize, not: &[usize]) -> usize {
    (0..c.len())
        .find(|i| *i != leader && !not.contains(i))
        .expect("a follower")
}

#[test]
fn every_member_serves_reads_writes_watches_and_leases() {
    let c = Cluster::start(Kind::Corekv, 3, FLAGS);
    let leader = c.wait_leader();
    let f1 = follower(&c, leader, &[]);
    let f2 = follower(&c, leader, &[f1]);
    let (l, a, b) = (
        vec![c.endpoint(leader)],
        vec![c.endpoint(f1)],
        vec![c.endpoint(f2)],
    );

    // A watch on one follower sees a write made through the other.
    let mut watch = Command::new(require_binary("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", b[0]))
        .args(["watch", "w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .die_with_test()
        .spawn()
        .unwrap();
    // The watch is created once etcdctl has connected; a write before that would be missed
    // (no start revision), so write until the watcher prints.
    let mut out = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut seen = String::new();
        while !seen.contains("from-a") {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the watch on a follower saw nothing"
        );
        assert_eq!(ok(&a, &["put", "w", "from-a"]), "OK\n");
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = reader.join().unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.contains("PUT\nw\nfrom-a"), "{seen}");

    // A write through a follower is read back linearizably through the other follower.
    assert_eq!(ok(&a, &["put", "k", "v1"]), "OK\n");
    assert_eq!(ok(&b, &["get", "k", "--print-value-only"]), "v1\n");
    assert_eq!(ok(&l, &["get", "k", "--print-value-only"]), "v1\n");
    let txn = "value(\"k\") = \"v1\"\n\nput k v2\n\nput k never\n\n";
    let mut t = Command::new(require_binary("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", b[0]))
        .arg("txn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .die_with_test()
        .spawn()
        .unwrap();
    t.stdin.take().unwrap().write_all(txn.as_bytes()).unwrap();
    let t = t.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&t.stdout), "SUCCESS\n\nOK\n");
    assert_eq!(ok(&a, &["get", "k", "--print-value-only"]), "v2\n");

    // Leases: granted through a follower, kept alive and looked up through the other (both
    // forwarded to the leader, which owns expiry), revoked through a follower.
    let granted = ok(&a, &["lease", "grant", "30"]);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease <id> granted with TTL(30s)")
        .to_string();
    assert_eq!(ok(&a, &["put", "leased", "x", "--lease", &id]), "OK\n");
    let kept = ok(&b, &["lease", "keep-alive", "--once", &id]);
    assert!(kept.contains("keepalived with TTL(30)"), "{kept}");
    let ttl = json(&ok(
        &b,
        &["lease", "timetolive", &id, "--keys", "-w", "json"],
    ));
    assert_eq!(ttl["granted-ttl"], 30, "{ttl}");
    let left = ttl["ttl"].as_i64().unwrap();
    assert!((1..=30).contains(&left), "{ttl}");
    assert_eq!(ttl["keys"][0], "bGVhc2Vk", "{ttl}"); // "leased"
    let leases = ok(&b, &["lease", "list"]);
    assert!(leases.contains(&id), "{leases}");
    ok(&b, &["lease", "revoke", &id]);
    assert_eq!(ok(&a, &["get", "leased"]), "");
    let gone = json(&ok(&a, &["lease", "timetolive", &id, "-w", "json"]));
    assert_eq!(gone["ttl"], -1, "{gone}");
}

#[test]
fn member_list_and_endpoint_status_report_the_cluster_as_etcd_does() {
    let c = Cluster::start(Kind::Corekv, 3, FLAGS);
    let leader = c.wait_leader();
    let eps = c.endpoints();
    // Member list is served from the asked member's applied table (as in etcd 3.4): wait until
    // it has applied every member's publish.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let list = loop {
        let list = json(&ok(&eps[..1], &["member", "list", "-w", "json"]));
        let started = list["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["clientURLs"][0].is_string())
            .count();
        if started == 3 || std::time::Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let members = list["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{list}");
    let mut ids = Vec::new();
    for m in members {
        let id = m["ID"].as_u64().unwrap();
        let name = m["name"].as_str().unwrap();
        let i: usize = name.strip_prefix('m').unwrap().parse().unwrap();
        // The ID etcd derives from the peer URL and the cluster token.
        let token = c.token();
        assert_eq!(
            id,
            corekv::config::member_id(&[c.peer_url(i)], token, None),
            "{m}"
        );
        assert_eq!(m["peerURLs"][0], c.peer_url(i).as_str(), "{m}");
        assert_eq!(
            m["clientURLs"][0],
            format!("http://{}", c.endpoint(i)),
            "{m}"
        );
        ids.push(id);
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "etcd lists members by ID");
    assert_eq!(
        list["header"]["cluster_id"].as_u64().unwrap(),
        corekv::config::cluster_id(&ids)
    );

    // endpoint status --cluster finds every member from the list and each names the leader.
    let status = json(&ok(
        &eps[..1],
        &["endpoint", "status", "--cluster", "-w", "json"],
    ));
    let st = status.as_array().unwrap();
    assert_eq!(st.len(), 3, "{status}");
    let leader_id = c.member_id(leader).unwrap();
    for s in st {
        let s = &s["Status"];
        assert_eq!(s["leader"].as_u64(), Some(leader_id), "{s}");
        assert!(
            s["raftIndex"].as_u64() >= s["raftAppliedIndex"].as_u64(),
            "{s}"
        );
        assert_eq!(s["raftTerm"], st[0]["Status"]["raftTerm"], "{s}");
    }
    let health = etcdctl(&eps[..1], &["endpoint", "health", "--cluster"]);
    assert!(health.status.success());
    let text = String::from_utf8_lossy(&health.stdout).into_owned()
        + &String::from_utf8_lossy(&health.stderr);
    assert_eq!(text.matches("is healthy").count(), 3, "{text}");

    // corekvctl shows the same.
    let ours = Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .arg(format!("--endpoints={}", eps[0]))
        .args(["member", "list", "-w", "json"])
        .die_with_test()
        .output()
        .unwrap();
    assert_eq!(
        json(&String::from_utf8_lossy(&ours.stdout))["members"],
        list["members"]
    );
    let ours = Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .arg(format!("--endpoints={}", eps[0]))
        .args(["endpoint", "health", "--cluster"])
        .die_with_test()
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&ours.stdout).into_owned() + &String::from_utf8_lossy(&ours.stderr);
    assert_eq!(text.matches("is healthy").count(), 3, "{text}");
}

#[test]
fn a_follower_behind_the_compacted_log_catches_up_by_snapshot() {
    let mut c = Cluster::start(Kind::Corekv, 3, &["--cores=1", "--snapshot-count=50"]);
    let leader = c.wait_leader();
    let behind = follower(&c, leader, &[]);
    c.kill(behind);
    let l = vec![c.endpoint(leader)];
    for i in 0..400 {
        ok(&l, &["put", &format!("key{i:03}"), &format!("value{i}")]);
    }
    c.restart(behind);
    // Caught up: the same applied index and the same hash of every revision.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lead = c.status(leader).map(|s| s.revision);
        let mine = c.status(behind).map(|s| s.revision);
        if lead.is_some() && lead == mine {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never caught up: {lead:?} vs {mine:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let hash = |i: usize| {
        let v = json(&ok(&[c.endpoint(i)], &["endpoint", "hashkv", "-w", "json"]));
        v[0]["HashKV"]["hash"].as_u64().unwrap()
    };
    assert_eq!(hash(behind), hash(leader));
    assert_eq!(
        ok(
            &[c.endpoint(behind)],
            &["get", "key399", "--print-value-only", "--consistency=s"]
        ),
        "value399\n"
    );
    let leader_log = c.log(leader);
    assert!(
        leader_log.contains("sent a snapshot"),
        "the leader sent no snapshot:\n{}",
        c.log_tail(leader, 30)
    );
    // The received file was installed, nothing is left in member/snap.
    let snap = c.data_dir(behind).join("member/snap");
    let left: Vec<_> = std::fs::read_dir(&snap)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // And it survives a restart of the member from that state.
    c.restart(behind);
    assert_eq!(
        ok(
            &[c.endpoint(behind)],
            &["get", "key000", "--print-value-only"]
        ),
        "value0\n"
    );
}

/// A crash at either point of a snapshot install leaves the old state or the new one: the
/// member restarts, finishes (or redoes) the install, and has the leader's state.
#[test]
fn a_crash_during_a_snapshot_install_leaves_the_old_state_or_the_new_one() {
    let mut c = Cluster::start(Kind::Corekv, 3, &["--cores=1", "--snapshot-count=50"]);
    let leader = c.wait_leader();
    let behind = follower(&c, leader, &[]);
    let l = vec![c.endpoint(leader)];
    for (round, point) in ["snapshot-received", "snapshot-wal-recorded"]
        .iter()
        .enumerate()
    {
        c.kill(behind);
        for i in 0..300 {
            ok(&l, &["put", &format!("r{round}-{i:03}"), "v"]);
        }
        c.start_member(behind, &[&format!("--failpoint={point}")]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = c.exited(behind) {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{point} was never reached:\n{}",
                c.log_tail(behind, 20)
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(99), "{}", c.log_tail(behind, 10));
        c.restart(behind);
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.status(behind).map(|s| s.revision) != c.status(leader).map(|s| s.revision) {
            assert!(Instant::now() < deadline, "{point}: never caught up");
            std::thread::sleep(Duration::from_millis(50));
        }
        let hash = |i: usize| {
            let v = json(&ok(&[c.endpoint(i)], &["endpoint", "hashkv", "-w", "json"]));
            v[0]["HashKV"]["hash"].as_u64().unwrap()
        };
        assert_eq!(hash(behind), hash(leader), "{point}");
    }
    assert!(
        c.log(behind).contains("finishing the install"),
        "the install recorded in the WAL was not finished at start:\n{}",
        c.log_tail(behind, 30)
    );
}

#[test]
fn a_member_restarted_with_an_empty_data_dir_is_refused() {
    let mut c = Cluster::start(Kind::Corekv, 3, FLAGS);
    let leader = c.wait_leader();
    let lost = follower(&c, leader, &[]);
    // Once every member has published its client URLs, the others know each has started.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = json(&ok(
            &[c.endpoint(leader)],
            &["member", "list", "-w", "json"],
        ));
        let published = list["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["clientURLs"].as_array().is_some_and(|u| !u.is_empty()));
        if published {
            break;
        }
        assert!(Instant::now() < deadline, "members never published: {list}");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.kill(lost);
    c.wipe_data(lost);
    c.start_member(lost, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = c.exited(lost) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a member that lost its data kept running:\n{}",
            c.log_tail(lost, 20)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1), "{}", c.log_tail(lost, 5));
    // Refused at the handshake: the others saw it publish. (A member that lost its data
    // before it published is stopped by its first heartbeat instead: node_tests.)
    let log = c.log(lost);
    assert!(
        log.contains("has already been bootstrapped") && log.contains("member remove"),
        "{log}"
    );
    // The others go on.
    assert_eq!(ok(&[c.endpoint(leader)], &["put", "still", "here"]), "OK\n");
}

#[test]
fn a_restarted_member_keeps_its_identity_whatever_the_initial_flags_say() {
    let mut c = Cluster::start(Kind::Corekv, 3, FLAGS);
    let leader = c.wait_leader();
    let f = follower(&c, leader, &[]);
    let id = c.member_id(f).unwrap();
    // Another token would give other IDs to a new cluster; a restart ignores it.
    c.restart_with(f, &["--initial-cluster-token=something-else"]);
    assert_eq!(c.member_id(f), Some(id));
    assert_eq!(ok(&[c.endpoint(f)], &["put", "after", "restart"]), "OK\n");
}

#[test]
fn mismatched_cluster_flags_stop_the_server_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[String]| {
        Command::new(common::corekv_bin())
            .arg(format!("--data-dir={}", dir.path().join("d").display()))
            .args(args)
            .stdin(Stdio::null())
            .die_with_test()
            .output()
            .unwrap()
    };
    let (p1, p2) = (free_port(), free_port());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--name=x".into(),
                format!("--initial-cluster=a=http://127.0.0.1:{p1}"),
            ],
            "no member named \"x\"",
        ),
        (
            vec![
                "--name=a".into(),
                format!("--initial-cluster=a=http://127.0.0.1:{p1},b=http://127.0.0.1:{p1}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{p1}"),
            ],
            "more than once",
        ),
        (
            vec![
                "--name=a".into(),
                format!("--initial-cluster=a=http://127.0.0.1:{p1}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{p2}"),
            ],
            "--initial-advertise-peer-urls",
        ),
    ];
    for (args, want) in cases {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// Sends `bytes` to the peer port and waits for the member to close the connection.
fn closed_after(port_of: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(port_of).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {} // a refusal may be answered first
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the member did not close a bad peer connection: {e}"),
        }
    }
}

#[test]
fn garbage_and_strangers_on_the_peer_port_are_refused_and_the_cluster_goes_on() {
    let c = Cluster::start(Kind::Corekv, 3, FLAGS);
    let leader = c.wait_leader();
    let peer = c.peer_url(leader);
    let addr = peer.trim_start_matches("http://");
    // An HTTP request (an etcd member or a client at the wrong port).
    closed_after(
        addr,
        b"GET /raft/stream/message/1 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    // The preamble, then a frame claiming 4 GiB.
    let mut huge = b"CKVPEER\x01".to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    huge.extend_from_slice(&[0u8; 4]);
    closed_after(addr, &huge);
    // The preamble, then a frame whose checksum is wrong.
    let mut bad = b"CKVPEER\x01".to_vec();
    bad.extend_from_slice(&3u32.to_be_bytes());
    bad.extend_from_slice(&[1, 2, 3, 4, 9, 9, 9]);
    closed_after(addr, &bad);
    // A frame cut short.
    let mut cut = b"CKVPEER\x01".to_vec();
    cut.extend_from_slice(&100u32.to_be_bytes());
    cut.extend_from_slice(&[0u8; 10]);
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&cut).unwrap();
    }
    let log = c.log(leader);
    assert!(log.contains("speaks HTTP"), "{log}");
    assert!(log.contains("exceeds the"), "{log}");
    assert!(log.contains("checksum"), "{log}");

    // A member of another cluster that names this member as its peer is refused, with the
    // reason on both sides, and stops.
    let dir = tempfile::tempdir().unwrap();
    let (cp, pp) = (free_port(), free_port());
    let stranger = Command::new(common::corekv_bin())
        .arg("--name=stranger")
        .arg(format!("--data-dir={}", dir.path().join("s").display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{cp}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{cp}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{pp}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{pp}"
        ))
        .arg(format!(
            "--initial-cluster=stranger=http://127.0.0.1:{pp},m{leader}={peer}"
        ))
        .arg("--initial-cluster-token=another-cluster")
        .stdin(Stdio::null())
        .die_with_test()
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&stranger.stderr);
    assert!(!stranger.status.success(), "{err}");
    assert!(err.contains("belongs to cluster"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.log(leader).contains("refused a peer connection") {
        assert!(Instant::now() < deadline, "{}", c.log_tail(leader, 20));
        std::thread::sleep(Duration::from_millis(50));
    }

    // Everyone else was served throughout.
    let eps = c.endpoints();
    assert_eq!(ok(&eps, &["put", "after", "garbage"]), "OK\n");
    for e in &eps {
        assert_eq!(
            ok(
                std::slice::from_ref(e),
                &["get", "after", "--print-value-only"]
            ),
            "garbage\n"
        );
    }
}
