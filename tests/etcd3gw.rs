//! Python's `etcd3gw` (PyPI, pinned in test.sh), which speaks etcd's JSON gateway, through its
//! README's calls — put/get/get_prefix/create/replace/delete, leases (grant, ttl, refresh,
//! keys, revoke), watch and watch_prefix (a put seen by the watcher, then cancel), watch_once,
//! and locks (acquire, is_acquired, a second locker kept out until the release) — by
//! tests/clients/etcd3gw_check.py, which asserts every answer. The script runs against etcd
//! 3.4 and against corekv, each fresh, and must print the same transcript for both.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Kind, Server};

/// Runs the script against `server`; its transcript (the script fails the test on any
/// answer it does not expect).
fn run_script(server: &Server) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/etcd3gw_check.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("127.0.0.1")
        .arg(server.client_port.to_string())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "etcd3gw_check.py against {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        server.kind.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.ends_with("done\n"),
        "the script stopped early:\n{stdout}"
    );
    stdout
}

#[test]
fn etcd3gw_readme_calls_answer_as_etcd() {
    let probe = Command::new("python3")
        .args(["-c", "import etcd3gw"])
        .output()
        .expect("python3 runs");
    assert!(
        probe.status.success(),
        "Python's etcd3gw is not installed: python3 -m pip install etcd3gw (./test.sh does): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let etcd = Server::start(Kind::Etcd);
    let expected = run_script(&etcd);
    drop(etcd);
    let corekv = Server::start(Kind::Corekv);
    let got = run_script(&corekv);
    assert_eq!(
        expected, got,
        "etcd3gw's transcript: etcd 3.4 (left) vs corekv (right)"
    );
}
