//! Corruption across members (issue #19): etcd's `--experimental-initial-corrupt-check` and
//! `--experimental-corrupt-check-time`, the CORRUPT alarm, and rebuilding a member whose
//! backend fails its checksums from its peers.
//!
//! One member's data are made to differ while every checksum stays valid with the hidden
//! `--failpoint diverge-put` (that member applies every put with `~diverged` appended to the
//! value). The CORRUPT alarm's effect is compared with etcd 3.4's by raising it through the
//! Alarm API on both (etcd lets a client ACTIVATE it) and running the same etcdctl commands.

mod common;
use common::cluster::Cluster;
use common::*;

use std::time::{Duration, Instant};

/// Generous bound on waits for something the cluster does by itself.
const WAIT: Duration = Duration::from_secs(60);

/// The periodic check interval of these tests.
const CHECK_TIME: &str = "--experimental-corrupt-check-time=500ms";

/// Runs etcdctl against member `i`: (success, stdout and stderr).
fn ctl(c: &Cluster, i: usize, args: &[&str]) -> (bool, String) {
    etcdctl_at(&c.endpoint(i), args)
}

fn ctl_ok(c: &Cluster, i: usize, args: &[&str]) -> String {
    let (ok, out) = ctl(c, i, args);
    assert!(ok, "etcdctl {args:?} via m{i} failed: {out}");
    out
}

/// Waits until `f` holds, panicking with `what` and the logs after WAIT.
fn wait_until(c: &Cluster, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}\n{}",
            c.logs_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Restarts member `i` with `--failpoint diverge-put` and puts `keys` through member 0;
/// returns once member `i` has applied the last of them (with its diverged value).
fn diverge(c: &mut Cluster, i: usize, keys: &[&str], auth: &[&str]) {
    c.restart_with(i, &["--failpoint=diverge-put"]);
    for k in keys {
        let args: Vec<&str> = auth.iter().copied().chain(["put", k, "v"]).collect();
        ctl_ok(c, 0, &args);
    }
    let last = *keys.last().expect("at least one key");
    let get: Vec<&str> = auth
        .iter()
        .copied()
        .chain(["get", last, "--consistency=s", "--print-value-only"])
        .collect();
    wait_until(c, "the diverged member applies the puts", || {
        ctl(c, i, &get).1.trim() == "v~diverged"
    });
}

#[test]
fn initial_check_refuses_a_diverged_member_and_starts_a_healthy_one() {
    let mut c = Cluster::start(Kind::Corekv, 3, &["--experimental-initial-corrupt-check"]);
    let odd = 2;
    diverge(&mut c, odd, &["k1", "k2", "k3"], &[]);
    // A snapshot is answered once the member's backend holds all it applied: the diverged
    // values are on its disk.
    let snap = c.dir().join("m2.snap.db");
    ctl_ok(&c, odd, &["snapshot", "save", snap.to_str().unwrap()]);
    std::fs::remove_file(&snap).unwrap();

    // Restarted without the failpoint, it compares its hash with its peers' and stops.
    c.start_member(odd, &[]);
    let status = c.wait_exit(odd);
    assert!(!status.success(), "{status}");
    let log = c.log_tail(odd, 20);
    assert!(
        log.contains("found data inconsistency with peers")
            && log.contains("found different hash values"),
        "no clear reason in the log:\n{log}"
    );
    // It never served: the cluster goes on without it.
    ctl_ok(&c, 0, &["put", "after", "x"]);

    // A healthy member restarted with the same flag passes the check and serves.
    c.restart(1);
    assert!(
        c.log(1)
            .contains("initial corruption checking passed; no corruption (2 of 2 peers compared)")
            || c.log(1).contains(
                "initial corruption checking passed; no corruption (1 of 2 peers compared)"
            ),
        "{}",
        c.log_tail(1, 20)
    );
    assert_eq!(
        ctl_ok(&c, 1, &["get", "after", "--print-value-only"]).trim(),
        "x"
    );
}

#[test]
fn periodic_check_raises_corrupt_which_refuses_writes_until_disarmed() {
    let mut c = Cluster::start(Kind::Corekv, 3, &[CHECK_TIME]);
    // With auth on: members ask each other over the peer transport, without credentials.
    for step in APP_AUTH {
        ctl_ok(&c, 0, step);
    }
    let root = ["--user=root:rootpw"];
    let odd = 1;
    diverge(&mut c, odd, &["app/a"], &root);
    let user =
        |args: &[&str]| -> Vec<String> { root.iter().chain(args).map(|s| s.to_string()).collect() };
    let run = |c: &Cluster, i: usize, args: &[&str]| {
        let a = user(args);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        ctl(c, i, &a)
    };
    wait_until(&c, "the leader raises CORRUPT", || {
        run(&c, 0, &["alarm", "list"]).1.contains("alarm:CORRUPT")
    });
    let leader = c.wait_leader();
    assert!(
        c.log(leader)
            .contains("corruption check found a hash mismatch"),
        "{}",
        c.log_tail(leader, 20)
    );
    // Every member refuses writes with etcd's error, serves reads, reports the alarm.
    for i in 0..3 {
        let (ok, out) = run(&c, i, &["put", "app/b", "1"]);
        assert!(
            !ok && out.contains("etcdserver: corrupt cluster"),
            "m{i}: {out}"
        );
        let (ok, out) = run(&c, i, &["del", "app/a"]);
        assert!(
            !ok && out.contains("etcdserver: corrupt cluster"),
            "m{i}: {out}"
        );
        let (ok, out) = run(&c, i, &["lease", "grant", "60"]);
        assert!(
            !ok && out.contains("etcdserver: corrupt cluster"),
            "m{i}: {out}"
        );
        let (ok, out) = run(
            &c,
            i,
            &["get", "app/a", "--print-value-only", "--consistency=s"],
        );
        let expect = if i == odd { "v~diverged" } else { "v" };
        assert!(ok && out.trim() == expect, "m{i}: {out}");
        let (status, _) = http_get_status(port(&c, i), "/health").unwrap();
        assert_eq!(status, 503, "m{i}");
        let (_, excluded) = http_get_status(port(&c, i), "/health?exclude=CORRUPT").unwrap();
        assert!(excluded.contains("\"true\""), "m{i}: {excluded}");
    }
    let (_, status) = run(&c, 0, &["endpoint", "status", "-w", "json"]);
    assert!(
        status.contains("\"errors\":[\"alarm:CORRUPT \"]"),
        "{status}"
    );

    // With the diverged member gone, a disarm sticks and writes go on. (A check that was
    // already under way may raise the alarm once more: disarm until a put goes through.)
    c.kill(odd);
    let deadline = Instant::now() + WAIT;
    loop {
        run(&c, 0, &["alarm", "disarm"]);
        let (ok, out) = run(&c, 0, &["put", "app/b", "2"]);
        if ok {
            break;
        }
        assert!(out.contains("corrupt cluster"), "{out}");
        assert!(Instant::now() < deadline, "writes never resumed: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!run(&c, 0, &["alarm", "list"]).1.contains("CORRUPT"));
    c.wait_healthy(0);
}

fn port(c: &Cluster, i: usize) -> u16 {
    c.endpoint(i).rsplit(':').next().unwrap().parse().unwrap()
}

/// The same etcdctl commands under a CORRUPT alarm raised through the Alarm API, against
/// etcd 3.4 and corekv: the same answers.
#[test]
fn corrupt_alarm_matches_etcd() {
    let run = |kind: Kind| -> Vec<String> {
        let s = Server::start(kind);
        let mut record = Vec::new();
        let mut step = |args: &[&str], stdin: &str| {
            let out = s.etcdctl_stdin(args, stdin);
            let text = format!("{}{}", stdout(&out), stderr(&out));
            record.push(format!(
                "$ etcdctl {} -> {}\n{}",
                normalise(&args.join(" ")),
                out.status.code().unwrap_or(-1),
                normalise(&text)
            ));
            text
        };
        step(&["put", "a", "1"], "");
        let lease = step(&["lease", "grant", "60"], "");
        let lease = lease.split_whitespace().nth(1).unwrap().to_owned();
        activate_corrupt(&s.endpoint());
        step(&["put", "a", "2"], "");
        step(&["get", "a"], "");
        step(&["get", "a", "--consistency=s"], "");
        step(&["del", "a"], "");
        step(&["txn"], "\nget a\n\n");
        step(&["txn"], "\nput a 3\n\n");
        step(&["compaction", "1"], "");
        step(&["lease", "grant", "60"], "");
        step(&["lease", "revoke", &lease], "");
        step(&["lease", "timetolive", &lease], "");
        step(&["alarm", "list"], "");
        step(&["endpoint", "status", "-w", "fields"], "");
        let port: u16 = s.endpoint().rsplit(':').next().unwrap().parse().unwrap();
        let (code, _) = http_get_status(port, "/health").unwrap();
        let health = format!("/health {code}");
        step(&["alarm", "disarm"], "");
        step(&["put", "a", "4"], "");
        step(&["alarm", "list"], "");
        record.push(health);
        record
    };
    let etcd = run(Kind::Etcd);
    let corekv = run(Kind::Corekv);
    for (e, k) in etcd.iter().zip(&corekv) {
        assert_eq!(e, k, "etcd 3.4 and corekv answer differently");
    }
    assert_eq!(etcd.len(), corekv.len());
    assert!(
        etcd.iter()
            .any(|s| s.contains("etcdserver: corrupt cluster")),
        "{etcd:#?}"
    );
}

/// Keeps what both servers must agree on: drops etcdctl's retry log lines, lease IDs,
/// Status fields that differ between servers anyway.
fn normalise(text: &str) -> String {
    let varying = [
        "\"ClusterID\"",
        "\"MemberID\"",
        "\"Revision\"",
        "\"RaftTerm\"",
        "\"Version\"",
        "\"DBSize\"",
        "\"DBSizeInUse\"",
        "\"Leader\"",
        "\"RaftIndex\"",
        "\"RaftAppliedIndex\"",
        "\"IsLearner\"",
        "\"Endpoint\"",
    ];
    text.lines()
        .filter(|l| !l.starts_with("{\"level\""))
        .filter(|l| !varying.iter().any(|v| l.starts_with(v)))
        .map(|l| {
            l.split_whitespace()
                .map(|w| {
                    if w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit()) {
                        "<id>"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Alarm ACTIVATE CORRUPT through the Maintenance API (etcdctl has no command for it).
fn activate_corrupt(endpoint: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        c.alarm(
            etcd_client::AlarmAction::Activate,
            etcd_client::AlarmType::Corrupt,
            None,
        )
        .await
        .unwrap();
    });
}

/// A follower's backend fails its checksums on open: it refuses to start with a clear
/// error, and README's runbook (member remove, wipe, member add, start with
/// --initial-cluster-state existing), run with etcdctl, rebuilds it from its peers by
/// snapshot, serving every key.
#[test]
fn a_member_with_a_corrupt_backend_is_rebuilt_from_its_peers() {
    // A raft snapshot every 50 entries: the rebuilt member catches up from one.
    let mut c = Cluster::start(Kind::Corekv, 3, &["--snapshot-count=50"]);
    let marker = format!("marker-{}-{}", std::process::id(), "x".repeat(40));
    ctl_ok(&c, 0, &["put", "marker", &marker]);
    let keys = 120;
    for k in 0..keys {
        ctl_ok(&c, 0, &["put", &format!("k{k:03}"), &format!("v{k}")]);
    }
    let leader = c.wait_leader();
    let victim = (leader + 1) % 3;
    wait_until(&c, "the follower applies every put", || {
        let get = [
            "get",
            "k",
            "--prefix",
            "--keys-only",
            "-w",
            "fields",
            "--consistency=s",
        ];
        ctl(&c, victim, &get)
            .1
            .contains(&format!("\"Count\" : {keys}"))
    });
    // Its backend holds them once a snapshot through it is answered.
    let snap = c.dir().join("victim.snap.db");
    ctl_ok(&c, victim, &["snapshot", "save", snap.to_str().unwrap()]);
    std::fs::remove_file(&snap).unwrap();
    c.kill(victim);

    // Offline, flip a byte of the marker in every page of the backend file that holds it.
    let db = c.data_dir(victim).join("member").join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let mut hits = 0;
    let mut at = 0;
    while let Some(off) = find(&bytes[at..], marker.as_bytes()) {
        bytes[at + off + 10] ^= 0xff;
        at += off + marker.len();
        hits += 1;
    }
    assert!(hits > 0, "the marker is not in {}", db.display());
    std::fs::write(&db, &bytes).unwrap();

    c.start_member(victim, &[]);
    let status = c.wait_exit(victim);
    assert!(!status.success(), "{status}");
    let log = c.log_tail(victim, 5);
    assert!(
        log.contains("opening the backend") && log.contains("checksum"),
        "no clear reason in the log:\n{log}"
    );

    // The runbook, with etcdctl through a healthy member.
    let healthy = leader;
    let list = ctl_ok(&c, healthy, &["member", "list"]);
    let name = format!("m{victim}");
    let id = list
        .lines()
        .find(|l| l.contains(&format!(", {name},")))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("no {name} in {list}"))
        .to_owned();
    ctl_ok(&c, healthy, &["member", "remove", &id]);
    c.wipe_data(victim);
    let url = c.peer_url(victim);
    // etcd's strict reconfiguration check refuses while a member has been connected for
    // less than 5 s (`unhealthy cluster`): retried, as the runbook says.
    let add = ["member", "add", &name, &format!("--peer-urls={url}")];
    let deadline = Instant::now() + WAIT;
    let added = loop {
        let (ok, out) = ctl(&c, healthy, &add);
        if ok {
            break out;
        }
        assert!(
            out.contains("etcdserver: unhealthy cluster") && Instant::now() < deadline,
            "member add: {out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut flags: Vec<String> = added
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(k, v)| Some((k.strip_prefix("ETCD_")?, v.trim_matches('"'))))
        .filter(|(k, _)| *k != "NAME")
        .map(|(k, v)| format!("--{}={v}", k.to_lowercase().replace('_', "-")))
        .collect();
    assert!(
        flags.contains(&"--initial-cluster-state=existing".to_owned()),
        "{added}"
    );
    flags.sort();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    c.restart_with(victim, &flags);
    assert!(
        c.log(victim)
            .contains("installed a snapshot from the leader"),
        "it caught up without a snapshot:\n{}",
        c.log_tail(victim, 20)
    );
    let got = ctl_ok(
        &c,
        victim,
        &[
            "get",
            "",
            "--prefix",
            "--keys-only",
            "--consistency=s",
            "-w",
            "fields",
        ],
    );
    assert!(got.contains(&format!("\"Count\" : {}", keys + 1)), "{got}");
    assert_eq!(
        ctl_ok(&c, victim, &["get", "marker", "--print-value-only"]).trim(),
        marker
    );
    // Every member has the same data.
    let hashes: Vec<String> = (0..3)
        .map(|i| {
            let rev = "0";
            let out = ctl_ok(&c, i, &["endpoint", "hashkv", "--rev", rev, "-w", "fields"]);
            out.lines()
                .find(|l| l.starts_with("\"Hash\""))
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert!(
        !hashes[0].is_empty() && hashes.iter().all(|h| *h == hashes[0]),
        "{hashes:?}"
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
