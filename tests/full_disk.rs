//! A full disk, for real: corekv's data dir on a small tmpfs, filled through the API with
//! 1 MB puts until writes are refused with etcd's NOSPACE error. Then: reads, watches and
//! deletes still work, `alarm list` shows NOSPACE, a restart on the full disk serves reads
//! with every acknowledged put, and once space is freed (deletes, compaction) and the alarm
//! disarmed, writes resume. Needs root (it mounts a tmpfs); skipped otherwise.
//!
//! etcd 3.4 in the same setup (checked by hand, see README "Full disk"): it exits with
//! `mvcc/backend: cannot commit tx (write .../db: no space left on device)` and exits the
//! same way at every restart on that disk.

mod common;
use common::disk::{fill_up, free_bytes, Tmpfs};
use common::*;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
const MIB: usize = 1 << 20;

fn put(s: &Server, key: &str, value: &str) -> Result<(), String> {
    let out = s.etcdctl_stdin(&["put", key], value);
    if out.status.success() && stdout(&out).trim() == "OK" {
        Ok(())
    } else {
        Err(format!("{}{}", stdout(&out), stderr(&out)))
    }
}

fn ok(s: &Server, args: &[&str]) -> String {
    let out = s.etcdctl(args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn value_of(s: &Server, key: &str) -> String {
    ok(s, &["get", key, "--print-value-only"])
}

fn revision(s: &Server) -> i64 {
    let out = ok(s, &["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["Status"]["header"]["revision"].as_i64().unwrap()
}

/// Retries `f` (each try a full request) until it returns Some, for at most a minute: the
/// server frees space and raises or clears its alarm in the background.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_no_space(r: Result<(), String>, what: &str) {
    match r {
        Ok(()) => panic!("{what} was accepted on a full disk"),
        Err(e) => assert!(
            e.contains(NO_SPACE),
            "{what}: not etcd's NOSPACE error: {e}"
        ),
    }
}

#[test]
fn full_disk_refuses_writes_serves_reads_and_recovers() {
    let fs = match Tmpfs::mount(64 * MIB) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let data = fs.path().join("data");
    // Small WAL segments: the WAL on a 64 MiB disk keeps two of them ahead.
    let mut s = Server::start_at(Kind::Corekv, &data, &["--wal-segment-bytes=4194304"]);
    put(&s, "w", "watched").unwrap();
    let big = "x".repeat(1_000_000);

    // Fill the disk through the API until writes are refused.
    let mut acked = Vec::new();
    let refused = loop {
        assert!(acked.len() < 200, "64 MiB took 200 MB of puts");
        let key = format!("k{:03}", acked.len());
        match put(&s, &key, &big) {
            Ok(()) => acked.push(key),
            Err(e) => break e,
        }
    };
    assert!(
        refused.contains(NO_SPACE),
        "the first refused put: {refused}"
    );
    assert!(acked.len() >= 10, "only {} puts fit", acked.len());
    let log = s.log();
    assert!(
        log.contains("the disk is short of space") && log.contains("No space left on device"),
        "the refusal did not come from a full disk; log:\n{log}"
    );
    // Keep it full, whatever corekv frees by itself (old WAL segments after a snapshot).
    let ballast = fill_up(fs.path());
    assert_eq!(free_bytes(fs.path()), 0);

    // The alarm is raised (through raft: it shows a moment later).
    eventually("alarm NOSPACE listed", || {
        ok(&s, &["alarm", "list"])
            .contains("alarm:NOSPACE")
            .then_some(())
    });
    let status = ok(&s, &["endpoint", "status", "-w", "json"]);
    assert!(
        status.contains("alarm:NOSPACE"),
        "Status lists no alarm: {status}"
    );
    assert_no_space(put(&s, "small", "v"), "a small put");
    let lease = s.etcdctl(&["lease", "grant", "60"]);
    assert!(
        stderr(&lease).contains(NO_SPACE),
        "lease grant: {}",
        stderr(&lease)
    );
    // Reads: every acknowledged put, whole.
    for key in &acked {
        assert_eq!(value_of(&s, key), format!("{big}\n"), "{key}");
    }
    // A watch sees a delete made on the full disk.
    let from = revision(&s) + 1;
    let mut watch = s
        .etcdctl_command(&["watch", "w", &format!("--rev={from}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(ok(&s, &["del", "w"]).trim(), "1");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "DELETE");
    assert_eq!(lines.next().unwrap().unwrap(), "w");
    watch.kill().unwrap();
    watch.wait().unwrap();
    // A defragment needs room for a copy: it fails, and the member goes on.
    let defrag = s.etcdctl(&["defrag"]);
    assert!(!defrag.status.success());
    assert!(
        stderr(&defrag).contains("No space left on device"),
        "{}",
        stderr(&defrag)
    );
    assert_eq!(value_of(&s, &acked[0]), format!("{big}\n"));

    // A restart on the full disk comes up serving reads, the alarm still raised. (What
    // corekv freed meanwhile, by releasing WAL segments after a snapshot, is taken first.)
    s.kill();
    fill_up(fs.path());
    assert_eq!(free_bytes(fs.path()), 0);
    s.set_health_path("/health?exclude=NOSPACE");
    s.restart();
    for key in &acked {
        assert_eq!(
            value_of(&s, key),
            format!("{big}\n"),
            "{key} after a restart"
        );
    }
    assert!(ok(&s, &["alarm", "list"]).contains("alarm:NOSPACE"));
    assert_no_space(put(&s, "small", "v"), "a small put after the restart");
    assert_eq!(
        ok(&s, &["get", "w"]),
        "",
        "the delete made on the full disk was lost"
    );

    // Free space: the other program's file goes, the data is deleted and compacted.
    std::fs::remove_file(ballast).unwrap();
    let deleted = ok(&s, &["del", "k", "--prefix"]);
    assert_eq!(deleted.trim(), acked.len().to_string());
    let rev = revision(&s).to_string();
    ok(&s, &["compact", &rev, "--physical"]);
    // Until the alarm is disarmed, writes stay refused; then they resume (a disarm while
    // the disk is still short of space is undone: the member raises the alarm again).
    assert_no_space(put(&s, "small", "v"), "a put before the disarm");
    eventually("writes resume after a disarm", || {
        ok(&s, &["alarm", "disarm"]);
        put(&s, "after", "1").ok()
    });
    assert_eq!(ok(&s, &["alarm", "list"]), "");
    put(&s, "big-after", &big).unwrap();
    // A defragment copies the last committed state: it fits once the backend has committed
    // the compaction (corekv retries its commits every second while short of space).
    eventually("a defragment that fits", || {
        s.etcdctl(&["defrag"]).status.success().then_some(())
    });

    // And all of it survives another restart.
    s.set_health_path("/health");
    s.restart();
    assert_eq!(value_of(&s, "after"), "1\n");
    assert_eq!(value_of(&s, "big-after"), format!("{big}\n"));
    assert_eq!(ok(&s, &["get", "k", "--prefix", "--keys-only"]), "");
    assert_eq!(ok(&s, &["alarm", "list"]), "");
}

/// Records a line that is not an etcdctl run.
fn note_text(note: &mut impl FnMut(&str, std::process::Output), what: &str, text: String) {
    use std::os::unix::process::ExitStatusExt;
    note(
        what,
        std::process::Output {
            status: std::process::ExitStatus::from_raw(0),
            stdout: text.into_bytes(),
            stderr: Vec::new(),
        },
    );
}

/// The quota's NOSPACE, side by side with etcd 3.4: the same errors, alarm listings, Status
/// errors, what still works under the alarm, and the alarm raised again by a write while
/// the backend is still over the quota. (How many puts fit differs: the files grow
/// differently.)
#[test]
fn quota_alarm_matches_etcd() {
    let run = |kind: Kind| -> Vec<String> {
        let s = Server::start_with(kind, &["--quota-backend-bytes=3000000"]);
        let id = {
            let out = ok(&s, &["endpoint", "status", "-w", "json"]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            v[0]["Status"]["header"]["member_id"]
                .as_u64()
                .unwrap()
                .to_string()
        };
        let mut t = Vec::new();
        let text = |out: &std::process::Output| {
            format!("{}{}", stdout(out), stderr(out))
                .lines()
                .filter(|l| !l.contains("retry_interceptor"))
                .collect::<Vec<_>>()
                .join("\n")
                .replace(&id, "<id>")
        };
        let mut note = |what: &str, out: std::process::Output| {
            t.push(format!(
                "{what}: {} {}",
                out.status.code().unwrap_or(-1),
                text(&out)
            ));
        };
        let value = "y".repeat(100_000);
        let mut fit = 0;
        let refused = loop {
            assert!(fit < 100, "{}: 10 MB fit under a 3 MB quota", kind.name());
            let out = s.etcdctl_stdin(&["put", &format!("q{fit}")], &value);
            if !out.status.success() {
                break out;
            }
            fit += 1;
        };
        assert!(fit > 0, "{}: not one put fit", kind.name());
        note("refused put", refused);
        eventually("the alarm raised", || {
            ok(&s, &["alarm", "list"]).contains("NOSPACE").then_some(())
        });
        note("alarm list", s.etcdctl(&["alarm", "list"]));
        let status = ok(&s, &["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        let errors = v[0]["Status"]["errors"].to_string().replace(&id, "<id>");
        note_text(&mut note, "status errors", errors);
        note("small put", s.etcdctl(&["put", "small", "v"]));
        note("lease grant", s.etcdctl(&["lease", "grant", "10"]));
        note("delete", s.etcdctl(&["del", "q0"]));
        note("txn delete", s.etcdctl_stdin(&["txn"], "\n\ndel q1\n\n"));
        note("txn put", s.etcdctl_stdin(&["txn"], "\n\nput q1 x\n\n"));
        note("disarm", s.etcdctl(&["alarm", "disarm"]));
        note("alarm list after disarm", s.etcdctl(&["alarm", "list"]));
        // Still over the quota (the files never shrink without a defragment): the same put
        // that was refused is refused again, and the alarm raised again.
        note(
            "put after disarm",
            s.etcdctl_stdin(&["put", &format!("q{fit}")], &value),
        );
        eventually("the alarm raised again", || {
            ok(&s, &["alarm", "list"]).contains("NOSPACE").then_some(())
        });
        note("alarm list again", s.etcdctl(&["alarm", "list"]));
        eprintln!("{}: {fit} puts of 100 KB fit", kind.name());
        t
    };
    let etcd = run(Kind::Etcd);
    let corekv = run(Kind::Corekv);
    assert_eq!(corekv, etcd);
}
