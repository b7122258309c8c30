//! corekv-bench against a corekv server started in this test process (free ports, temp dir):
//! the JSON report parses and counts the requests.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use corekv::client::{run_local, Client, ClientOptions};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// Starts a single-member corekv on its own threads; it lives until the test process exits.
fn start_corekv(dir: &std::path::Path) -> String {
    let (client, peer) = (free_port(), free_port());
    let flags = corekv::config::Flags::parse_from([
        "corekv".to_string(),
        format!("--data-dir={}", dir.join("data").display()),
        format!("--listen-client-urls=http://127.0.0.1:{client}"),
        format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster=default=http://127.0.0.1:{peer}"),
        "--heartbeat-interval=20".into(),
        "--election-timeout=200".into(),
        "--cores=1".into(),
    ]);
    let cfg = corekv::config::Config::from_flags(flags).expect("valid flags");
    std::thread::spawn(move || {
        if let Err(e) = corekv::launch::run(cfg) {
            panic!("corekv did not start: {e}");
        }
    });
    let endpoint = format!("127.0.0.1:{client}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ep = endpoint.clone();
        let ready = run_local(move || async move {
            let mut opts = ClientOptions::new(vec![ep]);
            opts.dial_timeout = Duration::from_millis(300);
            match Client::connect(opts).await {
                Ok(c) => c.status().await.is_ok_and(|s| s.leader != 0),
                Err(_) => false,
            }
        });
        if ready {
            return endpoint;
        }
        assert!(Instant::now() < deadline, "corekv did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bench(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_corekv-bench"))
        .args(["--endpoints", endpoint, "--json", "--no-progress"])
        .args(args)
        .output()
        .expect("running corekv-bench");
    assert!(
        out.status.success(),
        "corekv-bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "corekv-bench {args:?} printed no JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn put_and_range_reports_count_requests() {
    let dir = tempfile::tempdir().unwrap();
    let ep = start_corekv(dir.path());

    let put = bench(
        &ep,
        &[
            "--conns",
            "2",
            "--clients",
            "8",
            "put",
            "--total",
            "200",
            "--key-space-size",
            "50",
        ],
    );
    assert_eq!(put["workload"], "put");
    assert_eq!(put["requests"], 200, "{put}");
    assert_eq!(put["errors"], 0, "{put}");
    assert!(put["requests_per_sec"].as_f64().unwrap() > 0.0, "{put}");
    let (p50, p99) = (
        put["p50_ms"].as_f64().unwrap(),
        put["p99_ms"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{put}");
    let bars: u64 = put["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(bars, 200, "the histogram holds every request: {put}");

    for consistency in ["l", "s"] {
        let range = bench(
            &ep,
            &[
                "--clients",
                "4",
                "range",
                "foo",
                "--prefix",
                "--consistency",
                consistency,
                "--total",
                "100",
            ],
        );
        assert_eq!(range["workload"], "range");
        assert_eq!(range["requests"], 100, "{range}");
        assert_eq!(range["errors"], 0, "{range}");
        assert!(range["client_cpu"]["cpu_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn stream_workloads_deliver_everything() {
    let dir = tempfile::tempdir().unwrap();
    let ep = start_corekv(dir.path());

    // 4 watchers of 2 keys, 20 puts: each put reaches 2 watchers.
    let watch = bench(
        &ep,
        &[
            "--conns",
            "2",
            "watch",
            "--streams",
            "2",
            "--watchers-per-stream",
            "2",
            "--watched-key-total",
            "2",
            "--put-total",
            "20",
            "--put-clients",
            "2",
        ],
    );
    assert_eq!(watch["requests"], 40, "{watch}");
    assert_eq!(watch["errors"], 0, "{watch}");
    assert_eq!(watch["extra"]["watchers_created"], 4, "{watch}");

    let ka = bench(&ep, &["--clients", "3", "lease-keepalive", "--total", "60"]);
    assert_eq!(ka["requests"], 60, "{ka}");
    assert_eq!(ka["errors"], 0, "{ka}");
}

/// The corekv server binary next to corekv-bench, built if this test run did not build it.
fn corekv_binary() -> std::path::PathBuf {
    let bench = std::path::PathBuf::from(env!("CARGO_BIN_EXE_corekv-bench"));
    let server = bench.with_file_name("corekv");
    if !server.is_file() {
        let release = bench.parent().is_some_and(|d| d.ends_with("release"));
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "corekv", "--bin", "corekv"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "building the corekv binary failed");
    }
    server
}

/// `compare --quick` starts Debian's etcd and corekv, runs every workload on both and prints
/// one table row per workload with numbers for both, plus the kernel-worker lines.
#[test]
fn compare_quick_prints_both_servers_for_every_workload() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corekv-bench"))
        .args(["compare", "--quick", "--no-progress", "--corekv-bin"])
        .arg(corekv_binary())
        .arg("--data-parent")
        .arg(dir.path())
        .output()
        .expect("running corekv-bench compare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "compare failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let workloads = [
        "put, 1 client, 1 conn",
        "put, 16 clients, 1 conn",
        "put, 1000 clients, 100 conns",
        "range linearizable, 1000 clients, 100 conns",
        "range serializable, 1000 clients, 100 conns",
    ];
    for w in workloads {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {w} |")))
            .unwrap_or_else(|| panic!("no table row for {w}:\n{stdout}"));
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 9, "row {row}");
        for (i, c) in cells.iter().enumerate().skip(1) {
            assert!(!c.contains("n/a") && !c.is_empty(), "cell {i} of {row}");
        }
        let etcd_rps: f64 = cells[1].split_whitespace().next().unwrap().parse().unwrap();
        let corekv_rps: f64 = cells[2].split_whitespace().next().unwrap().parse().unwrap();
        assert!(etcd_rps > 0.0 && corekv_rps > 0.0, "row {row}");
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(w) && l.contains(" = ") && l.contains("ratio")),
            "no server + kernel workers line for {w}:\n{stdout}"
        );
    }
}
