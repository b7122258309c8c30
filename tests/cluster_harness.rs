//! The multi-member test harness (tests/common/cluster.rs, history.rs, nemesis.rs) and its
//! validation against real etcd 3.4:
//!
//! - `checker_*`: the history checker on small hand-made histories — it accepts a correct
//!   concurrent one and catches each kind of violation (fast, no processes).
//! - `netns_*`, `stale_*`, `netem_*`: the network-namespace plumbing (needs root, iproute2).
//! - `etcd_*`: real 3-member etcd clusters, each ending with the linearizability check over
//!   every recorded op and a comparison of every member's write history:
//!   `etcd_nemesis_kill_pause` (6 clients, 15 s of kill -9/restart and SIGSTOP/SIGCONT),
//!   `etcd_nemesis_partition` (the same plus partitions, in network namespaces),
//!   `etcd_partitioned_leader` (a leader cut off from the majority serves nothing; the
//!   majority goes on), `etcd_wiped_member_rejoins` (disk loss, member remove/add, catch-up)
//!   and `etcd_stale_serializable_reads_are_caught` (the checker flags the stale reads a
//!   cut-off member really serves).
//!
//! - `corekv_*`: the same cluster tests against corekv (at the end of the file).
//!
//! Each cluster test is a function of the server [`Kind`]; a version for the other kind is
//! one line.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-harness cargo test --release --test cluster_harness
//! # a long nemesis run (seconds of faults; NEMESIS_SEED replays a run's fault sequence):
//! NEMESIS_SECS=600 CARGO_TARGET_DIR=/work/target-harness \
//!     cargo test --release --test cluster_harness nemesis -- --nocapture
//! ```

mod common;

use std::time::{Duration, Instant};

use common::cluster::{self, Cluster, Network};
use common::history::{
    check, check_with_background, CheckReport, Event, Op, Outcome, Recorder, RecordingClient,
    Request, ViolationKind, WriteHistory,
};
use common::nemesis::{self, Config, Fault};
use common::{DieWithTest, Kind};

// ---------------------------------------------------------------------------------------
// The checker on hand-made histories.

/// Builds ops with times in milliseconds from a common origin.
struct Ops {
    t0: Instant,
    ops: Vec<Op>,
}

impl Ops {
    fn new() -> Ops {
        Ops {
            t0: Instant::now(),
            ops: Vec::new(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// An op by `client` over [invoke, complete] (None: never completed).
    fn add(
        &mut self,
        client: usize,
        request: Request,
        invoke: u64,
        complete: Option<u64>,
        outcome: Outcome,
    ) -> &mut Ops {
        let op = Op {
            id: self.ops.len(),
            client,
            request,
            invoke: self.at(invoke),
            complete: complete.map(|c| self.at(c)),
            outcome,
        };
        self.ops.push(op);
        self
    }

    fn check(&self, history: &WriteHistory) -> CheckReport {
        check(&self.ops, history)
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn get(key: &str) -> Request {
    Request::Get { key: key.into() }
}

fn cas(key: &str, expect: &str, value: &str) -> Request {
    Request::Cas {
        key: key.into(),
        expect: expect.into(),
        value: value.into(),
    }
}

fn wrote(revision: i64) -> Outcome {
    Outcome::Put { revision }
}

fn read(revision: i64, kv: Option<(&str, i64)>) -> Outcome {
    Outcome::Get {
        revision,
        kv: kv.map(|(v, m)| (v.to_owned(), m)),
    }
}

fn cas_ok(revision: i64) -> Outcome {
    Outcome::Cas {
        revision,
        succeeded: true,
    }
}

fn cas_no(revision: i64) -> Outcome {
    Outcome::Cas {
        revision,
        succeeded: false,
    }
}

fn unknown() -> Outcome {
    Outcome::Unknown("timeout".into())
}

/// Expects exactly the violation kinds `kinds`.
fn expect_kinds(report: &CheckReport, kinds: &[ViolationKind]) {
    let mut want = kinds.to_vec();
    want.sort();
    assert_eq!(
        report.kinds(),
        want,
        "violations found: {:#?}",
        report.violations
    );
}

/// A correct history with overlapping ops of 4 clients on two keys: puts, CAS both ways,
/// reads at various revisions, an Unknown write that was applied, one that was not, and one
/// that never completed but was applied.
#[test]
fn checker_accepts_correct_concurrent_history() {
    let h = WriteHistory::from_puts(
        1,
        &[
            ("x", "a"), // 2
            ("y", "b"), // 3
            ("x", "c"), // 4  CAS a -> c
            ("x", "d"), // 5  the Unknown put that was applied
            ("y", "e"), // 6  never completed
            ("x", "f"), // 7
        ],
    );
    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(10), wrote(2))
        .add(1, put("y", "b"), 5, Some(20), wrote(3))
        // Concurrent with the put of a: may see x absent or a.
        .add(2, get("x"), 1, Some(9), read(1, None))
        .add(3, get("x"), 2, Some(12), read(2, Some(("a", 2))))
        .add(0, cas("x", "a", "c"), 21, Some(30), cas_ok(4))
        // Concurrent with the CAS: it failed at revision 4 (x was c, not a any more).
        .add(1, cas("x", "a", "z"), 22, Some(31), cas_no(4))
        .add(2, get("y"), 25, Some(28), read(3, Some(("b", 3))))
        .add(3, put("x", "d"), 32, Some(60), unknown())
        .add(1, put("y", "w"), 33, Some(70), unknown())
        .add(4, put("y", "e"), 34, None, unknown())
        .add(0, get("x"), 61, Some(65), read(6, Some(("d", 5))))
        .add(0, put("x", "f"), 66, Some(80), wrote(7))
        .add(1, cas("x", "c", "q"), 71, Some(79), cas_no(6))
        .add(2, get("x"), 81, Some(90), read(7, Some(("f", 7))));
    let report = ops.check(&h);
    report.assert_ok();
    assert_eq!(report.history_len, 6);
}

/// A read that returns an older value than the history holds at its header revision, and
/// one that is internally consistent but at a revision older than a write acknowledged
/// before it started (real-time order).
#[test]
fn checker_catches_stale_read() {
    let h = WriteHistory::from_puts(1, &[("x", "a"), ("x", "b")]);
    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(10), wrote(2))
        .add(0, put("x", "b"), 11, Some(20), wrote(3))
        .add(1, get("x"), 30, Some(40), read(3, Some(("a", 2))));
    expect_kinds(&ops.check(&h), &[ViolationKind::ReadMismatch]);

    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(10), wrote(2))
        .add(0, put("x", "b"), 11, Some(20), wrote(3))
        .add(1, get("x"), 30, Some(40), read(2, Some(("a", 2))));
    let report = ops.check(&h);
    expect_kinds(&report, &[ViolationKind::RealTime]);
    assert!(report.violations[0].message.contains("get(x)"));
}

#[test]
fn checker_catches_lost_acknowledged_write() {
    // b was acknowledged at revision 3, but the history has nothing after a.
    let h = WriteHistory::from_puts(1, &[("x", "a")]);
    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(10), wrote(2))
        .add(0, put("x", "b"), 11, Some(20), wrote(3));
    expect_kinds(&ops.check(&h), &[ViolationKind::LostWrite]);
}

#[test]
fn checker_catches_write_at_another_revision() {
    let h = WriteHistory::from_puts(1, &[("x", "a"), ("x", "b")]);
    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(10), wrote(3))
        .add(1, put("x", "b"), 0, Some(10), wrote(2));
    expect_kinds(&ops.check(&h), &[ViolationKind::WrongRevision]);
}

#[test]
fn checker_catches_duplicated_write() {
    // An Unknown put applied twice (e.g. a retried proposal).
    let h = WriteHistory::from_puts(1, &[("x", "a"), ("y", "b"), ("x", "a")]);
    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(50), unknown())
        .add(1, put("y", "b"), 1, Some(20), wrote(3));
    expect_kinds(&ops.check(&h), &[ViolationKind::DuplicateWrite]);
}

#[test]
fn checker_catches_wrong_cas() {
    let h = WriteHistory::from_puts(1, &[("x", "a"), ("x", "b"), ("x", "c")]);
    // Succeeded, but x was b (not a) just before its write.
    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(10), wrote(2))
        .add(0, put("x", "b"), 11, Some(20), wrote(3))
        .add(1, cas("x", "a", "c"), 21, Some(30), cas_ok(4));
    expect_kinds(&ops.check(&h), &[ViolationKind::CasCompare]);

    // Answered succeeded=false at revision 3, where x was b: its compare held.
    let h = WriteHistory::from_puts(1, &[("x", "a"), ("x", "b")]);
    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(10), wrote(2))
        .add(0, put("x", "b"), 11, Some(20), wrote(3))
        .add(1, cas("x", "b", "c"), 21, Some(30), cas_no(3));
    expect_kinds(&ops.check(&h), &[ViolationKind::CasCompare]);
}

#[test]
fn checker_catches_read_of_value_never_written() {
    let h = WriteHistory::from_puts(1, &[("x", "a")]);
    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(10), wrote(2)).add(
        1,
        get("x"),
        11,
        Some(20),
        read(2, Some(("ghost", 2))),
    );
    expect_kinds(&ops.check(&h), &[ViolationKind::ReadNeverWritten]);
}

#[test]
fn checker_catches_failed_write_applied() {
    // A CAS answered succeeded=false, and a put refused before sending: both in the history.
    let h = WriteHistory::from_puts(1, &[("x", "a"), ("x", "b"), ("x", "c")]);
    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(10), wrote(2))
        .add(1, cas("x", "z", "b"), 11, Some(20), cas_no(2))
        .add(
            2,
            put("x", "c"),
            21,
            Some(22),
            Outcome::Failed("connection refused".into()),
        );
    expect_kinds(&ops.check(&h), &[ViolationKind::FailedWriteApplied]);
}

#[test]
fn checker_catches_invented_writes_and_gaps() {
    let mut h = WriteHistory::from_puts(1, &[("x", "a"), ("x", "nobody"), ("y", "b")]);
    h.events.remove(2); // revision 4 missing
    h.events[1].key = "x".into();
    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(10), wrote(2))
        .add(0, put("y", "b"), 11, Some(20), unknown());
    expect_kinds(
        &ops.check(&h),
        &[ViolationKind::InventedWrite, ViolationKind::HistoryGap],
    );

    // A value written to y by its op shows up on x.
    let h = WriteHistory::from_puts(1, &[("x", "b")]);
    let mut ops = Ops::new();
    ops.add(0, put("y", "b"), 0, Some(10), unknown());
    expect_kinds(&ops.check(&h), &[ViolationKind::InventedWrite]);
}

/// Background writes (other keys, no recorded op; several may share a revision, as a
/// multi-key delete's do) hold their revisions without being invented writes; a write to a
/// checked key that no op made still is one, and a gap is still a gap.
#[test]
fn checker_with_background_writes() {
    let mut h = WriteHistory::from_puts(1, &[("x", "a"), ("bg/1", "n1"), ("bg/2", "n2")]);
    h.events[2].revision = 3; // bg/1 and bg/2 at one revision
    h.final_revision = 3;
    h.events.push(Event {
        revision: 4,
        key: "x".into(),
        value: "b".into(),
        delete: false,
    });
    h.final_revision = 4;
    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(10), wrote(2))
        .add(1, get("x"), 11, Some(20), read(3, Some(("a", 2))))
        .add(0, put("x", "b"), 21, Some(30), wrote(4));
    let background = |e: &Event| e.key.starts_with("bg/");
    let report = check_with_background(&ops.ops, &h, background);
    assert!(report.is_ok(), "{}", report.summary());
    // Without the background rule, the same history is full of invented writes.
    expect_kinds(
        &ops.check(&h),
        &[ViolationKind::InventedWrite, ViolationKind::HistoryGap],
    );

    // An unrecorded write to x, and a missing revision, are still caught.
    h.events.push(Event {
        revision: 6,
        key: "x".into(),
        value: "nobody".into(),
        delete: false,
    });
    h.final_revision = 6;
    expect_kinds(
        &check_with_background(&ops.ops, &h, background),
        &[ViolationKind::InventedWrite, ViolationKind::HistoryGap],
    );
}

/// A write that was not acknowledged is in the history at a revision an op had already
/// observed before that write was even invoked.
#[test]
fn checker_catches_write_applied_before_its_invoke() {
    let h = WriteHistory::from_puts(1, &[("x", "a"), ("x", "b")]);
    let mut ops = Ops::new();
    ops.add(0, put("x", "a"), 0, Some(10), wrote(2))
        .add(1, get("x"), 11, Some(20), read(3, Some(("b", 3))))
        .add(2, put("x", "b"), 30, Some(40), unknown());
    expect_kinds(&ops.check(&h), &[ViolationKind::RealTime]);
}

// ---------------------------------------------------------------------------------------
// Network namespaces.

/// `ip netns exec` execs the command in place, so the pid we hold is the server's, it runs
/// in the member's namespace, and PR_SET_PDEATHSIG (set before exec) still kills it when the
/// thread that started it ends.
#[test]
fn netns_exec_child_dies_with_its_thread() {
    let net = Network::create(1);
    let ns = net.namespace(0).to_owned();
    let starter = std::thread::spawn(move || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "sleep", "600"])
            .die_with_test()
            .spawn()
            .expect("cannot run ip netns exec")
    });
    let mut child = starter.join().unwrap();
    let pid = child.id();
    // The starting thread is gone: the child must die, whoever it is by now.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
            let _ = child.kill();
            panic!("pid {pid} ({exe:?}) outlived the thread that started it");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");

    // And while it runs, it is the command itself, inside the namespace.
    let ns = net.namespace(0).to_owned();
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "sleep", "600"])
        .die_with_test()
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let exe = loop {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        if exe.file_name().is_some_and(|n| n == "sleep") || Instant::now() > deadline {
            break exe;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        exe.file_name().unwrap(),
        "sleep",
        "pid {pid} is {exe:?}, not sleep"
    );
    assert_ne!(netns, ours, "the child is not in its own network namespace");
}

/// Namespaces and interfaces named after a test process that is gone are found and removed;
/// ours are not touched.
#[test]
fn stale_networks_of_dead_processes_are_removed() {
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let ns = format!("ckns-{dead_pid}-0-0");
    let bridge = format!("ckb{dead_pid}-0");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    run(&["netns", "add", &ns]);
    run(&["link", "add", &bridge, "type", "bridge"]);
    let live = Network::create(1);
    assert!(cluster::stale_namespaces().iter().any(|(n, _)| *n == ns));
    assert!(cluster::stale_links().iter().any(|(n, _)| *n == bridge));
    cluster::remove_stale_networks_now();
    assert!(!cluster::stale_namespaces().iter().any(|(n, _)| *n == ns));
    assert!(!cluster::stale_links().iter().any(|(n, _)| *n == bridge));
    let list = String::from_utf8(
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(list.contains(live.namespace(0)), "{list}");
    assert!(!list.contains(&ns), "{list}");
}

/// Delay needs netem; without it `delay` says so instead of pretending.
#[test]
fn netem_delay_or_an_error_saying_why() {
    let net = Network::create(1);
    match net.set_delay(0, 20) {
        Ok(()) => {
            assert!(cluster::netem_supported());
            let qdisc = std::process::Command::new("ip")
                .args(["netns", "exec", net.namespace(0), "tc", "qdisc", "show"])
                .output()
                .unwrap();
            assert!(String::from_utf8_lossy(&qdisc.stdout).contains("netem"));
        }
        Err(e) => {
            eprintln!("no netem on this kernel: {e}");
            assert!(!cluster::netem_supported());
            assert!(e.contains("netem"), "{e}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Real clusters. Each is a function of the kind; add corekv versions with one line each.

/// Flags for every member of `kind` in these tests. Three members share this machine's two
/// cores: corekv runs one executor each (by default it runs one per core).
fn member_flags(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Etcd => &[],
        Kind::Corekv => &["--cores=1"],
    }
}

/// Retries `f` until it succeeds (bounded); returns the successful outcome.
fn until_ok(what: &str, mut f: impl FnMut() -> Outcome) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = f();
        if o.is_ok() {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not succeed within 60 s; last: {o}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 6 clients on a 3-member cluster for 15 s (NEMESIS_SECS) of kill -9/restart and
/// SIGSTOP/SIGCONT of the leader or a random member.
fn nemesis_kill_pause(kind: Kind) {
    let mut c = Cluster::start(kind, 3, member_flags(kind));
    let cfg = Config::from_env(&[Fault::KillRestart, Fault::PauseResume]);
    let report = nemesis::run(&mut c, &cfg);
    report.assert_ok();
    assert!(!report.actions.is_empty(), "the nemesis did nothing");
}

#[test]
fn etcd_nemesis_kill_pause() {
    nemesis_kill_pause(Kind::Etcd);
}

/// The leader of an isolated 3-member cluster is cut off from the other two: through it,
/// neither writes nor linearizable reads succeed (they time out or fail), while the other
/// two elect a new leader and accept writes; after healing, the old leader serves the new
/// writes, and the whole history checks.
fn partitioned_leader(kind: Kind) {
    let mut c = Cluster::start_isolated(kind, 3, member_flags(kind));
    let rec = Recorder::new();
    let timeout = Duration::from_secs(2);
    let mut via: Vec<RecordingClient> = (0..3)
        .map(|i| rec.client(&c.endpoint(i), timeout))
        .collect();
    let mut last = String::new();
    for (i, client) in via.iter_mut().enumerate() {
        let v = client.unique_value();
        until_ok(&format!("a put through member {i}"), || client.put("k", &v));
        last = v;
    }

    let old = c.wait_leader();
    let rest: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    c.isolate(old);
    eprintln!("member {old} (the leader) cut off from {rest:?}");

    let mut cut_off = Vec::new();
    let v = via[old].unique_value();
    cut_off.push(("put", via[old].put("k", &v)));
    cut_off.push(("get", via[old].get("k")));
    let v = via[old].unique_value();
    cut_off.push(("cas", via[old].cas("k", &last, &v)));

    let new = c.wait_leader_among(&rest);
    assert_ne!(new, old);
    let (a, b) = (rest[0], rest[1]);
    let v = via[a].unique_value();
    until_ok("a put through the majority", || via[a].put("k", &v));
    let seen = until_ok("a get through the majority", || via[b].get("k"));
    assert!(
        matches!(&seen, Outcome::Get { kv: Some((s, _)), .. } if *s == v),
        "the majority reads {seen} after writing {v:?}"
    );
    // The old leader has not seen that write: a read through it must not answer.
    cut_off.push(("get after the majority's write", via[old].get("k")));
    for (what, o) in &cut_off {
        assert!(
            !o.is_ok(),
            "a {what} through the cut-off old leader succeeded: {o}"
        );
    }

    c.heal();
    let after = until_ok("a get through the old leader after healing", || {
        via[old].get("k")
    });
    assert!(
        matches!(&after, Outcome::Get { kv: Some((s, _)), .. } if *s == v),
        "after healing the old leader reads {after}, not the majority's {v:?}"
    );
    let w = via[old].unique_value();
    until_ok("a put through the old leader after healing", || {
        via[old].put("k", &w)
    });
    drop(via);
    let (_, report) = nemesis::final_check(&c, &rec.ops());
    report.assert_ok();
}

#[test]
fn etcd_partitioned_leader() {
    partitioned_leader(Kind::Etcd);
}

/// The checker is not vacuous on a real history: serializable reads (served locally,
/// possibly stale) through a member cut off from the majority return the value it had
/// before the majority's acknowledged write, and the check reports it.
fn stale_serializable_reads_are_caught(kind: Kind) {
    let mut c = Cluster::start_isolated(kind, 3, member_flags(kind));
    let rec = Recorder::new();
    let timeout = Duration::from_secs(2);
    let leader = c.wait_leader();
    let cut = (leader + 1) % 3;
    let majority: Vec<usize> = (0..3).filter(|&i| i != cut).collect();
    let mut w = rec.client(&c.endpoint(leader), timeout);
    let mut r = rec.client(&c.endpoint(cut), timeout);
    let old = w.unique_value();
    until_ok("the first put", || w.put("k", &old));
    // The cut-off member has the first write once it answers a linearizable read of it.
    let seen = until_ok("a linearizable get through the member to cut off", || {
        r.get("k")
    });
    assert!(matches!(&seen, Outcome::Get { kv: Some((v, _)), .. } if *v == old));
    c.isolate(cut);
    let new_leader = c.wait_leader_among(&majority);
    let mut w = rec.client(&c.endpoint(new_leader), timeout);
    let new = w.unique_value();
    until_ok("a put through the majority", || w.put("k", &new));
    let stale = until_ok("a serializable get through the cut-off member", || {
        r.get_serializable("k")
    });
    assert!(
        matches!(&stale, Outcome::Get { kv: Some((v, _)), .. } if *v == old),
        "the cut-off member answered {stale}"
    );
    c.heal();
    drop((w, r));
    let (_, report) = nemesis::final_check(&c, &rec.ops());
    assert!(
        report.has(ViolationKind::RealTime),
        "the stale read went unnoticed: {:#?}",
        report.violations
    );
    eprintln!("caught, as it should be: {:?}", report.violations);
}

#[test]
fn etcd_stale_serializable_reads_are_caught() {
    stale_serializable_reads_are_caught(Kind::Etcd);
}

/// A follower loses its disk (killed, data dir wiped) and is replaced the way etcd's docs
/// say (member remove, member add, start with `--initial-cluster-state=existing` on the
/// empty data dir): it catches up on everything written before and while it was gone.
/// (Restarting it on the empty data dir under its old member id instead makes etcd 3.4's
/// new member panic — "tocommit(16) is out of range [lastIndex(0)]": the leader still
/// counts the entries it had acknowledged.)
fn wiped_member_rejoins(kind: Kind) {
    let mut c = Cluster::start(kind, 3, member_flags(kind));
    let rec = Recorder::new();
    let timeout = Duration::from_secs(2);
    let leader = c.wait_leader();
    let victim = (leader + 1) % 3;
    let mut w = rec.client(&c.endpoint(leader), timeout);
    for _ in 0..5 {
        let v = w.unique_value();
        until_ok("a put before the wipe", || w.put("k", &v));
    }
    c.kill(victim);
    c.wipe_data(victim);
    assert!(!c.data_dir(victim).exists());
    let latest = w.unique_value();
    until_ok("a put while the victim is gone", || w.put("k", &latest));
    let old_id = c.member_id(victim).expect("the victim is a member");
    c.member_remove(victim);
    assert_eq!(c.member_id(victim), None);
    let new_id = c.member_add(victim);
    assert_ne!(new_id, old_id);
    c.restart_with(victim, &["--initial-cluster-state=existing"]);
    let mut r = rec.client(&c.endpoint(victim), timeout);
    let seen = until_ok("a get through the rejoined member", || r.get("k"));
    assert!(
        matches!(&seen, Outcome::Get { kv: Some((v, _)), .. } if *v == latest),
        "the rejoined member reads {seen}, not {latest:?}"
    );
    drop((w, r));
    let (history, report) = nemesis::final_check(&c, &rec.ops());
    report.assert_ok();
    assert_eq!(history.events.len(), 6);
}

#[test]
fn etcd_wiped_member_rejoins() {
    wiped_member_rejoins(Kind::Etcd);
}

/// The nemesis with partitions as well as kills and pauses, on an isolated cluster.
fn nemesis_partition(kind: Kind) {
    let mut c = Cluster::start_isolated(kind, 3, member_flags(kind));
    let cfg = Config::from_env(&[Fault::Partition, Fault::KillRestart, Fault::PauseResume]);
    let report = nemesis::run(&mut c, &cfg);
    report.assert_ok();
    assert!(!report.actions.is_empty(), "the nemesis did nothing");
}

#[test]
fn etcd_nemesis_partition() {
    nemesis_partition(Kind::Etcd);
}

// ---------------------------------------------------------------------------------------
// The same tests against corekv: the harness's real subject.

#[test]
fn corekv_nemesis_kill_pause() {
    nemesis_kill_pause(Kind::Corekv);
}

#[test]
fn corekv_partitioned_leader() {
    partitioned_leader(Kind::Corekv);
}

#[test]
fn corekv_stale_serializable_reads_are_caught() {
    stale_serializable_reads_are_caught(Kind::Corekv);
}

#[test]
fn corekv_nemesis_partition() {
    nemesis_partition(Kind::Corekv);
}
