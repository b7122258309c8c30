//! Patroni (Debian's `patroni` 3.0.2, its etcd3 DCS over etcd's JSON gateway) manages two
//! PostgreSQL 15 instances (Debian's) with a 1-member corekv as its store: it bootstraps a
//! primary and a streaming replica (a row written on the primary is read on the replica),
//! and when the primary's Patroni is stopped (SIGTERM) the replica is promoted (it takes the
//! leader key in corekv and accepts writes) within a bounded wait.
//!
//! PostgreSQL refuses to run as root: run as root (as ./test.sh does in CI), Patroni and
//! PostgreSQL run as the `postgres` user (Debian's postgresql package makes it) with their
//! temp dirs chowned to it; otherwise as the current user. ./test.sh installs `patroni` and
//! `postgresql` (apt) when missing; the test skips itself, saying why, only when they are
//! missing and cannot be installed (not root).

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get_status, Kind, Server};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const SCOPE: &str = "corekv-test";

/// Bootstrapping (initdb, start, base backup of the replica) on a busy 2-core machine takes
/// seconds; only a broken setup takes this long.
const BOOTSTRAP_LIMIT: Duration = Duration::from_secs(150);
/// The promotion after the primary's Patroni stops: Patroni's ttl is 10 s and it loops every
/// second; only a broken failover takes this long.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

/// Who runs Patroni and PostgreSQL: (uid, gid), or None for the current user.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    // SAFETY: a NUL-terminated name; the result is read before any other getpw* call.
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root, and there is no `postgres` user to run PostgreSQL as (Debian's \
         postgresql package makes it)"
    );
    // SAFETY: checked non-null above.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

/// One Patroni node with its PostgreSQL; both killed on drop.
struct Node {
    name: String,
    dir: PathBuf,
    rest_port: u16,
    pg_port: u16,
    child: Option<Child>,
}

impl Node {
    fn new(root: &Path, name: &str, corekv_port: u16, user: Option<(u32, u32)>) -> Node {
        let dir = root.join(name);
        std::fs::create_dir(&dir).unwrap();
        let (rest_port, pg_port) = (free_port(), free_port());
        let d = dir.display();
        let config = format!(
            r#"scope: {SCOPE}
namespace: /service/
name: {name}
log:
  level: INFO
restapi:
  listen: 127.0.0.1:{rest_port}
  connect_address: 127.0.0.1:{rest_port}
etcd3:
  hosts: 127.0.0.1:{corekv_port}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: false
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_wal_senders: 5
        max_replication_slots: 5
  initdb:
  - encoding: UTF8
  - auth: trust
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 trust
  - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {d}/data
  bin_dir: {PG_BIN}
  pgpass: {d}/pgpass
  authentication:
    replication:
      username: replicator
      password: rep-pass
    superuser:
      username: postgres
      password: pg-pass
  parameters:
    unix_socket_directories: {d}
    shared_buffers: 16MB
    fsync: "off"
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
"#
        );
        std::fs::write(dir.join("patroni.yml"), config).unwrap();
        let mut node = Node {
            name: name.to_owned(),
            dir,
            rest_port,
            pg_port,
            child: None,
        };
        node.start(user);
        node
    }

    fn start(&mut self, user: Option<(u32, u32)>) {
        let log = std::fs::File::create(self.dir.join("patroni.log")).unwrap();
        if let Some((uid, gid)) = user {
            chown_all(&self.dir, uid, gid);
        }
        let mut cmd = Command::new("patroni");
        cmd.arg(self.dir.join("patroni.yml"))
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        // Patroni dies with the test's thread (set after the user switch, so it holds).
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("patroni starts"));
    }

    /// Patroni's view of itself (GET /patroni), if it answers.
    fn status(&self) -> Option<serde_json::Value> {
        let (_, body) = http_get_status(self.rest_port, "/patroni")?;
        serde_json::from_str(&body).ok()
    }

    fn role(&self) -> Option<String> {
        Some(self.status()?.get("role")?.as_str()?.to_owned())
    }

    fn state(&self) -> Option<String> {
        Some(self.status()?.get("state")?.as_str()?.to_owned())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("patroni.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SQL through psql on this node's PostgreSQL (TCP, trusted): its output, or its error.
    fn psql(&self, sql: &str, user: Option<(u32, u32)>) -> Result<String, String> {
        let mut cmd = Command::new(Path::new(PG_BIN).join("psql"));
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.pg_port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-c", sql])
            .env("HOME", &self.dir)
            .stdin(Stdio::null());
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().expect("psql runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// SIGTERM to Patroni (it stops its PostgreSQL and gives up the leader key), then waits for
    /// it to exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: a pid of a child not yet waited for.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > FAILOVER_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{}'s Patroni did not exit within {FAILOVER_LIMIT:?} of SIGTERM:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The postmaster's pid, from its pid file, if it has one.
    fn postmaster_pid(&self) -> Option<libc::pid_t> {
        let pidfile = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        pidfile.lines().next()?.trim().parse().ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // PostgreSQL outlives a killed Patroni: kill its postmaster (its backends exit when
        // it does) and wait until it is gone.
        if let Some(pid) = self.postmaster_pid() {
            // SAFETY: kill with a pid read from the postmaster's pid file.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let start = Instant::now();
            // SAFETY: signal 0 only checks that the process exists.
            while unsafe { libc::kill(pid, 0) } == 0 && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn chown_all(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_all(&entry.unwrap().path(), uid, gid);
        }
    }
}

/// Polls `what` every 200 ms until it gives Some, at most `limit`; panics with `context()`.
fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("{what}: not within {limit:?}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn is_primary(role: &str) -> bool {
    // Patroni 3.0 reports "master"; later versions "primary".
    role == "master" || role == "primary"
}

/// Whether the packages are here; false if the test must skip (the reason is printed), a
/// panic if they are missing though they could be installed.
fn packages_present() -> bool {
    let missing: Vec<&str> = [("patroni", "/usr/bin/patroni"), ("postgresql-15", PG_BIN)]
        .into_iter()
        .filter(|(_, path)| !Path::new(path).exists())
        .map(|(pkg, _)| pkg)
        .collect();
    if missing.is_empty() {
        return true;
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        panic!(
            "{} not installed, and this runs as root so it could be: run ./test.sh (it \
             installs them with apt-get)",
            missing.join(", ")
        );
    }
    println!(
        "SKIPPED patroni_fails_over_with_corekv_as_its_store: {} not installed and not root, \
         so they cannot be installed (apt-get install patroni postgresql-15)",
        missing.join(", ")
    );
    false
}

#[test]
fn patroni_fails_over_with_corekv_as_its_store() {
    if !packages_present() {
        return;
    }
    let user = run_as();
    let corekv = Server::start(Kind::Corekv);
    let root = tempfile::tempdir().unwrap();
    if let Some((uid, gid)) = user {
        chown_all(root.path(), uid, gid);
    }
    let logs = |nodes: &[&Node]| {
        nodes
            .iter()
            .map(|n| format!("--- {} (patroni.log, last lines)\n{}", n.name, n.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // The first node bootstraps the cluster (initdb) and becomes its primary; the second then
    // joins as a replica (base backup from the primary).
    let mut a = Node::new(root.path(), "pg0", corekv.client_port, user);
    wait_for(
        "pg0 bootstraps and runs as the primary",
        BOOTSTRAP_LIMIT,
        || {
            (a.role().is_some_and(|r| is_primary(&r)) && a.state().as_deref() == Some("running"))
                .then_some(())
        },
        || logs(&[&a]),
    );
    let b = Node::new(root.path(), "pg1", corekv.client_port, user);
    wait_for(
        "pg1 runs as a streaming replica",
        BOOTSTRAP_LIMIT,
        || {
            let streaming = a.status()?["replication"]
                .as_array()?
                .iter()
                .any(|r| r["application_name"] == "pg1" && r["state"] == "streaming");
            (streaming
                && b.role().as_deref() == Some("replica")
                && b.state().as_deref() == Some("running"))
            .then_some(())
        },
        || logs(&[&a, &b]),
    );

    // The leader key is in corekv.
    let leader_key = format!("/service/{SCOPE}/leader");
    let leader = || {
        let out = corekv.etcdctl(&["get", &leader_key, "--print-value-only"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(leader(), "pg0");

    // Replication works: a row written on the primary is read on the replica.
    a.psql(
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('before');",
        user,
    )
    .unwrap_or_else(|e| panic!("write on the primary: {e}"));
    wait_for(
        "the primary's row is on the replica",
        BOOTSTRAP_LIMIT,
        || (b.psql("SELECT v FROM t", user).ok()? == "before").then_some(()),
        || logs(&[&a, &b]),
    );
    assert!(
        b.psql("INSERT INTO t VALUES ('x')", user)
            .unwrap_err()
            .contains("read-only"),
        "the replica refuses writes"
    );

    // The primary's Patroni stops: the replica is promoted.
    let stopped = Instant::now();
    a.stop();
    wait_for(
        "pg1 is promoted",
        FAILOVER_LIMIT,
        || {
            (b.role().is_some_and(|r| is_primary(&r)) && b.state().as_deref() == Some("running"))
                .then_some(())
        },
        || logs(&[&a, &b]),
    );
    println!(
        "pg1 promoted {:.1} s after SIGTERM to pg0's Patroni",
        stopped.elapsed().as_secs_f64()
    );
    assert_eq!(leader(), "pg1", "the leader key in corekv names pg1");
    wait_for(
        "the promoted pg1 accepts writes",
        FAILOVER_LIMIT,
        || b.psql("INSERT INTO t VALUES ('after')", user).ok(),
        || logs(&[&a, &b]),
    );
    assert_eq!(
        b.psql("SELECT string_agg(v, ',' ORDER BY v) FROM t", user)
            .unwrap(),
        "after,before"
    );
    drop(b);
    drop(a);
}
