//! corekvctl against stock etcdctl, both talking to real etcd 3.4.
//!
//! - Every step of `common::ctl_steps::STEPS` runs with etcdctl on one fresh etcd and with
//!   corekvctl on another; outputs (stdout, stderr, exit code) must be identical after IDs,
//!   ports and lease IDs are normalized.
//! - Read-only commands, including `-w protobuf`, run with both tools on the same etcd and must
//!   print the same bytes.
//! - `lock` and `elect` from the two tools exclude each other and see each other's leaders.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::ctl::{diff, ids, report, Side, Spawned, Tool};
use common::ctl_steps::STEPS;
use common::{Kind, Server};

#[test]
fn corekvctl_prints_what_etcdctl_prints() {
    // Both advertise one peer URL: same member and cluster IDs, so even table widths match.
    let peer = format!("http://127.0.0.1:{}", common::free_port());
    let ea = Server::start_advertising(Kind::Etcd, &peer);
    let eb = Server::start_advertising(Kind::Etcd, &peer);
    assert_eq!(ids(&ea), ids(&eb));
    let mut a = Side::new(Tool::Etcdctl, &ea);
    let mut b = Side::new(Tool::Corekvctl, &eb);
    let bad = diff(&mut a, &mut b, STEPS);
    assert!(
        bad.is_empty(),
        "{} of {} steps differ:{}",
        bad.len(),
        STEPS.len(),
        report(&a, &b, &bad)
    );
}

/// Runs `args` with `tool` on `endpoint` and returns (stdout bytes, exit code).
fn raw(tool: Tool, endpoint: &str, args: &[&str], stdin: &str) -> (Vec<u8>, Option<i32>) {
    use std::io::Write;
    let mut child = Command::new(tool.path())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (out.stdout, out.status.code())
}

#[test]
fn read_only_commands_print_the_same_bytes_on_one_server() {
    let etcd = Server::start(Kind::Etcd);
    let ep = etcd.endpoint();
    for kv in [["k1", "v1"], ["k2", "v2"], ["k1", "v1b"]] {
        raw(Tool::Etcdctl, &ep, &["put", kv[0], kv[1]], "");
    }
    let cases: &[(&[&str], &str)] = &[
        (&["get", "k1", "-w", "protobuf"], ""),
        (&["get", "k", "--prefix", "-w", "protobuf"], ""),
        (&["get", "k", "--prefix", "--rev", "2", "-w", "json"], ""),
        (&["member", "list", "-w", "protobuf"], ""),
        (&["alarm", "list", "-w", "protobuf"], ""),
        (
            &["txn", "-w", "protobuf"],
            "value(\"k1\") = \"v1b\"\n\nget k2\n\nget k1\n\n",
        ),
        (&["lease", "list", "-w", "protobuf"], ""),
        (&["lease", "timetolive", "1", "-w", "protobuf"], ""),
        (&["endpoint", "status", "-w", "protobuf"], ""),
    ];
    for (args, stdin) in cases {
        let want = raw(Tool::Etcdctl, &ep, args, stdin);
        let got = raw(Tool::Corekvctl, &ep, args, stdin);
        assert_eq!(got, want, "{args:?}");
    }
}

/// The keys under `prefix`, via etcdctl.
fn keys(endpoint: &str, prefix: &str) -> Vec<String> {
    let (out, _) = raw(
        Tool::Etcdctl,
        endpoint,
        &["get", prefix, "--prefix", "--keys-only"],
        "",
    );
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Polls until `prefix` holds `n` keys (contenders queue by writing one).
fn wait_for_keys(endpoint: &str, prefix: &str, n: usize) {
    for _ in 0..6000 {
        if keys(endpoint, prefix).len() == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{prefix} never held {n} keys");
}

#[test]
fn locks_exclude_each_other_across_tools() {
    let etcd = Server::start(Kind::Etcd);
    let ep = etcd.endpoint();
    for (holder_tool, waiter_tool) in [
        (Tool::Etcdctl, Tool::Corekvctl),
        (Tool::Corekvctl, Tool::Etcdctl),
    ] {
        let mut holder = Spawned::start(holder_tool, &ep, &["lock", "mylock"]);
        let key = holder.line();
        assert!(key.starts_with("mylock/"), "{key}");
        assert_eq!(holder.line(), "", "the lock key's (empty) value");
        let mut waiter = Spawned::start(
            waiter_tool,
            &ep,
            &[
                "lock",
                "mylock",
                "--",
                "sh",
                "-c",
                "echo \"got $ETCD_LOCK_KEY\"",
            ],
        );
        wait_for_keys(&ep, "mylock/", 2);
        assert!(
            waiter.running(),
            "{waiter_tool:?} took a lock {holder_tool:?} holds"
        );
        holder.interrupt();
        let h = holder.finish();
        assert_eq!(
            h.status, "exit 0",
            "{holder_tool:?} on SIGINT: {}",
            h.stderr
        );
        let w = waiter.finish();
        assert_eq!(w.status, "exit 0", "{}", w.stderr);
        assert!(w.stdout.starts_with("got mylock/"), "{}", w.stdout);
        assert_ne!(w.stdout.trim(), format!("got {key}"));
        assert!(
            keys(&ep, "mylock/").is_empty(),
            "a lock key was left behind"
        );
    }
}

#[test]
fn elections_interoperate_across_tools() {
    let etcd = Server::start(Kind::Etcd);
    let ep = etcd.endpoint();
    for (first, second) in [
        (Tool::Etcdctl, Tool::Corekvctl),
        (Tool::Corekvctl, Tool::Etcdctl),
    ] {
        let mut leader = Spawned::start(first, &ep, &["elect", "el", "one"]);
        let key1 = leader.line();
        assert!(key1.starts_with("el/"), "{key1}");
        assert_eq!(leader.line(), "one");
        // An observer of the other tool sees the leader, then the next one.
        let mut observer = Spawned::start(second, &ep, &["elect", "-l", "el"]);
        assert_eq!(observer.line(), key1);
        assert_eq!(observer.line(), "one");
        let mut candidate = Spawned::start(second, &ep, &["elect", "el", "two"]);
        wait_for_keys(&ep, "el/", 2);
        assert!(candidate.running());
        leader.interrupt();
        assert_eq!(leader.finish().status, "exit 0");
        let key2 = candidate.line();
        assert!(key2.starts_with("el/") && key2 != key1, "{key2}");
        assert_eq!(candidate.line(), "two");
        assert_eq!(observer.line(), key2);
        assert_eq!(observer.line(), "two");
        candidate.interrupt();
        assert_eq!(candidate.finish().status, "exit 0");
        observer.interrupt();
        assert_eq!(observer.finish().status, "exit 0");
        assert!(keys(&ep, "el/").is_empty());
    }
}
