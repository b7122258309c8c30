//! The Procfile's local cluster, walked through as the README's "A local cluster" section
//! does: one `honcho start corekvN` per member, a write through one member read through
//! another and through the proxy, the leader stopped and the others going on (the proxy
//! too), the leader started again and caught up. The Procfile is used as it is, with two changes so that CI never collides
//! with anything: its ports become free ones, and the binary is the one cargo built for this
//! test (run under `setpriv --pdeathsig KILL`, so a member never outlives its honcho).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get, require_binary, DieWithTest};

const PROCFILE: &str = include_str!("../Procfile");
const LIMIT: Duration = Duration::from_secs(60);

/// The Procfile's process lines, with its ports moved to free ones.
fn procfile_on_free_ports() -> (String, BTreeMap<u16, u16>) {
    let mut ports = BTreeMap::new();
    let mut out = String::new();
    for line in PROCFILE.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut rewritten = String::new();
        let mut rest = line;
        while let Some(at) = rest.find("127.0.0.1:") {
            let (before, after) = rest.split_at(at + "127.0.0.1:".len());
            rewritten.push_str(before);
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            let port: u16 = digits.parse().expect("a port after 127.0.0.1:");
            let free = *ports.entry(port).or_insert_with(free_port);
            rewritten.push_str(&free.to_string());
            rest = &after[digits.len()..];
        }
        rewritten.push_str(rest);
        let bin = format!(
            "exec setpriv --pdeathsig KILL {}",
            env!("CARGO_BIN_EXE_corekv")
        );
        out.push_str(&rewritten.replace("target/release/corekv", &bin));
        out.push('\n');
    }
    (out, ports)
}

/// One `honcho start <process>`, stopped (SIGTERM, so honcho stops its member) on drop.
struct Honcho(Option<Child>);

impl Honcho {
    fn start(dir: &Path, process: &str) -> Honcho {
        let log = std::fs::File::create(dir.join(format!("{process}.log"))).unwrap();
        let child = Command::new(require_binary("honcho"))
            .args(["--no-colour", "start", process])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .die_with_test()
            .spawn()
            .expect("honcho runs (pip install honcho; ./test.sh installs it)");
        Honcho(Some(child))
    }

    /// Ctrl-C, as a person stops it in its terminal.
    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }
}

impl Drop for Honcho {
    fn drop(&mut self) {
        self.stop();
    }
}

fn etcdctl(port: u16, args: &[&str]) -> String {
    let out = Command::new(require_binary("etcdctl"))
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints=127.0.0.1:{port}"))
        .args(args)
        .stdin(Stdio::null())
        .die_with_test()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl {args:?} on {port}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn healthy(port: u16) -> bool {
    http_get(port, "/health").is_some_and(|b| b.contains("\"true\""))
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The client port of the member `port`'s member thinks leads.
fn leader_port(port: u16, clients: &[u16]) -> Option<u16> {
    let out = Command::new(require_binary("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints={}",
            clients
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        ))
        .args(["endpoint", "status", "-w", "json"])
        .die_with_test()
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let _ = port;
    v.as_array()?.iter().find_map(|e| {
        let st = &e["Status"];
        (st["leader"] == st["header"]["member_id"] && st["leader"].as_u64()? != 0).then(|| {
            let ep = e["Endpoint"].as_str().unwrap_or("");
            ep.rsplit(':').next().and_then(|p| p.parse().ok())
        })?
    })
}

#[test]
fn the_procfile_cluster_survives_losing_its_leader() {
    let (procfile, ports) = procfile_on_free_ports();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Procfile"), &procfile).unwrap();
    let clients: Vec<u16> = [2379, 22379, 32379].iter().map(|p| ports[p]).collect();
    let names = ["corekv1", "corekv2", "corekv3"];
    let mut members: Vec<Honcho> = names.iter().map(|n| Honcho::start(dir.path(), n)).collect();
    let _proxy = Honcho::start(dir.path(), "proxy");
    let proxy = ports[&23790];
    wait_until("all three healthy", || clients.iter().all(|p| healthy(*p)));
    wait_until("the proxy healthy", || healthy(proxy));

    assert_eq!(etcdctl(clients[0], &["put", "greeting", "hello"]), "OK\n");
    assert_eq!(
        etcdctl(clients[1], &["get", "greeting", "--print-value-only"]),
        "hello\n"
    );
    assert_eq!(
        etcdctl(proxy, &["get", "greeting", "--print-value-only"]),
        "hello\n"
    );
    assert_eq!(etcdctl(proxy, &["put", "via", "proxy"]), "OK\n");
    assert_eq!(
        etcdctl(clients[2], &["get", "via", "--print-value-only"]),
        "proxy\n"
    );
    let members_out = etcdctl(clients[0], &["member", "list"]);
    for name in ["infra1", "infra2", "infra3"] {
        assert!(members_out.contains(name), "{members_out}");
    }

    let mut leader = None;
    wait_until("a leader", || {
        leader = leader_port(clients[0], &clients);
        leader.is_some()
    });
    let leader = leader.unwrap();
    let l = clients.iter().position(|p| *p == leader).unwrap();
    members[l].stop();
    let rest: Vec<u16> = clients.iter().copied().filter(|p| *p != leader).collect();
    wait_until("a new leader among the other two", || {
        leader_port(rest[0], &rest).is_some_and(|p| p != leader)
    });
    assert_eq!(etcdctl(rest[0], &["put", "after", "failover"]), "OK\n");
    assert_eq!(
        etcdctl(rest[1], &["get", "after", "--print-value-only"]),
        "failover\n"
    );
    // The proxy moves to a live member if its own was the one stopped.
    wait_until("the proxy healthy after the failover", || healthy(proxy));
    assert_eq!(
        etcdctl(proxy, &["get", "after", "--print-value-only"]),
        "failover\n"
    );

    members[l] = Honcho::start(dir.path(), names[l]);
    wait_until("the old leader healthy again", || healthy(leader));
    assert_eq!(
        etcdctl(leader, &["get", "after", "--print-value-only"]),
        "failover\n"
    );
    assert_eq!(
        etcdctl(leader, &["get", "greeting", "--print-value-only"]),
        "hello\n"
    );
    assert!(dir.path().join(format!("infra{}.corekv", l + 1)).is_dir());
}
