//! A failing disk: EIO injected into the N-th WAL or backend write or fsync of a running
//! corekv (hidden `--failpoint` flag, through the storage layers' fault seams). The member
//! must stop with a clear error rather than go on (a failed fsync is never retried: the
//! kernel may have dropped what it could not write), must not have acknowledged the write
//! the failure hit, and every write it did acknowledge must be there after a restart.
//!
//! etcd 3.4 has no such failpoints in its release build; its code stops the same way
//! (`lg.Fatal` on a failed WAL save or backend commit).

mod common;
use common::*;

use std::time::Duration;

/// Puts until one fails (the member stopped); returns the acknowledged keys and the error.
fn put_until_failure(s: &Server) -> (Vec<String>, String) {
    let mut acked = Vec::new();
    for i in 0..2000 {
        let key = format!("k{i:04}");
        let out = s.etcdctl(&["--command-timeout=10s", "put", &key, &format!("v{i}")]);
        if out.status.success() && stdout(&out).trim() == "OK" {
            acked.push(key);
        } else {
            return (acked, format!("{}{}", stdout(&out), stderr(&out)));
        }
    }
    panic!(
        "2000 puts went through: the fault never fired; log:\n{}",
        s.log()
    );
}

fn stops_and_keeps_acknowledged(failpoint: &str, stop_message: &str) {
    let mut s = Server::start_with(Kind::Corekv, &[&format!("--failpoint={failpoint}")]);
    let (acked, err) = put_until_failure(&s);
    let status = s
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{failpoint}: the member did not stop; log:\n{}", s.log()));
    let log = s.log();
    assert_eq!(status.code(), Some(1), "{failpoint}: {status}; log:\n{log}");
    assert!(
        log.contains("injecting Input/output error (os error 5)"),
        "{log}"
    );
    assert!(
        log.contains(stop_message) && log.contains("os error 5") && log.contains("stopping"),
        "{failpoint}: no clear reason in the log:\n{log}"
    );
    assert!(
        !acked.is_empty(),
        "{failpoint}: it failed before any put; log:\n{log}"
    );
    eprintln!(
        "{failpoint}: {} puts acknowledged, then: {}",
        acked.len(),
        err.trim()
    );

    // Without the fault, every acknowledged put is there.
    s.set_flags(&[]);
    s.restart();
    let got = s.etcdctl(&["get", "k", "--prefix", "--keys-only"]);
    assert!(got.status.success(), "{}", stderr(&got));
    let keys: Vec<String> = stdout(&got)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    for key in &acked {
        assert!(
            keys.contains(key),
            "{failpoint}: acknowledged {key} is lost"
        );
    }
    // At most the put the failure hit is there beyond them (written, never acknowledged).
    assert!(
        keys.len() <= acked.len() + 1,
        "{failpoint}: {} keys, {} acknowledged",
        keys.len(),
        acked.len()
    );
    // And the member takes writes again.
    let out = s.etcdctl(&["put", "after", "1"]);
    assert_eq!(stdout(&out).trim(), "OK", "{}", stderr(&out));
}

#[test]
fn a_failed_wal_fsync_stops_the_member() {
    stops_and_keeps_acknowledged("wal-fsync-eio:40", "WAL append failed");
}

#[test]
fn a_failed_wal_write_stops_the_member() {
    stops_and_keeps_acknowledged("wal-write-eio:40", "WAL append failed");
}

#[test]
fn a_failed_backend_fsync_stops_the_member() {
    stops_and_keeps_acknowledged("backend-fsync-eio:10", "backend commit failed");
}

#[test]
fn a_failed_backend_write_stops_the_member() {
    stops_and_keeps_acknowledged("backend-write-eio:10", "backend commit failed");
}

/// ENOSPC is not fatal: with one write failing for want of space, the member goes on. A
/// backend commit that fails so makes it refuse writes with etcd's NOSPACE error and raise
/// the alarm (until the commit, tried again, succeeds and the alarm is disarmed); a WAL write
/// is tried again by the WAL. Nothing acknowledged is lost.
fn no_space_once_is_survived(failpoint: &str) {
    const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
    let mut s = Server::start_with(Kind::Corekv, &[&format!("--failpoint={failpoint}")]);
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut i = 0;
    while acked.len() < 60 {
        assert!(
            i < 2000,
            "{failpoint}: writes never resumed; log:\n{}",
            s.log()
        );
        let key = format!("k{i:04}");
        i += 1;
        let out = s.etcdctl(&["--command-timeout=10s", "put", &key, "v"]);
        if out.status.success() {
            acked.push(key);
            continue;
        }
        // Refused for space (the alarm may be raised): disarm, and go on once it can.
        assert!(
            stderr(&out).contains(NO_SPACE),
            "{failpoint}: {key}: {}; log:\n{}",
            stderr(&out),
            s.log()
        );
        refused += 1;
        let disarm = s.etcdctl(&["alarm", "disarm"]);
        assert!(disarm.status.success(), "{}", stderr(&disarm));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        s.wait_exit(Duration::ZERO).is_none(),
        "{failpoint}: the member stopped"
    );
    let log = s.log();
    assert!(log.contains("injecting No space left on device"), "{log}");
    eprintln!(
        "{failpoint}: {} acknowledged, {refused} refused for space",
        acked.len()
    );
    s.set_flags(&[]);
    s.restart();
    let got = stdout(&s.etcdctl(&["get", "k", "--prefix", "--keys-only"]));
    for key in &acked {
        assert!(got.lines().any(|l| l == key), "{failpoint}: {key} is lost");
    }
}

#[test]
fn no_space_for_a_wal_write_is_waited_out() {
    no_space_once_is_survived("wal-write-enospc:20");
}

#[test]
fn no_space_for_a_backend_commit_is_survived() {
    no_space_once_is_survived("backend-write-enospc:5");
}

/// In a cluster, a follower whose WAL fsync fails stops alone with the reason; the other two
/// go on taking writes, and once repaired (restarted without the fault) it rejoins and
/// catches up with every write it missed.
#[test]
fn a_follower_whose_fsync_fails_stops_and_rejoins_after_repair() {
    let mut c = cluster::Cluster::start(Kind::Corekv, 3, &["--cores=1"]);
    let leader = c.wait_leader();
    let faulty = (leader + 1) % 3;
    let writer = c.endpoint(leader);
    c.restart_with(faulty, &["--failpoint=wal-fsync-eio:20"]);
    let mut n = 0;
    let status = loop {
        if let Some(status) = c.exited(faulty) {
            break status;
        }
        assert!(n < 5000, "5000 puts and the fault never fired");
        let (ok, out) = etcdctl_at(&writer, &["put", &format!("k{n}"), &format!("v{n}")]);
        assert!(ok, "put {n} failed with a quorum up: {out}");
        n += 1;
    };
    let log = c.log(faulty);
    assert_eq!(status.code(), Some(1), "{status}; log:\n{log}");
    assert!(
        log.contains("os error 5") && log.contains("stopping"),
        "no clear reason in the log:\n{log}"
    );
    // The other two carry on.
    for k in n..n + 20 {
        let (ok, out) = etcdctl_at(&writer, &["put", &format!("k{k}"), &format!("v{k}")]);
        assert!(ok, "put {k} failed after the member stopped: {out}");
    }
    let last = n + 19;
    // Repaired: the same data dir, no fault. It catches up with what it missed.
    c.restart(faulty);
    let ep = c.endpoint(faulty);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = etcdctl_at(
            &ep,
            &[
                "get",
                &format!("k{last}"),
                "--consistency=s",
                "--print-value-only",
            ],
        );
        if ok && out.trim() == format!("v{last}") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the repaired member did not catch up within 60 s: {out}\n{}",
            c.log_tail(faulty, 20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every write before and after the failure is on it.
    let (ok, out) = etcdctl_at(
        &ep,
        &["get", "k", "--prefix", "--consistency=s", "--keys-only"],
    );
    assert!(ok, "{out}");
    let keys = out.lines().filter(|l| !l.is_empty()).count();
    assert_eq!(keys as i32, last + 1, "keys on the repaired member: {out}");
}
