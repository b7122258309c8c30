//! corekv's /metrics and /health against what etcd's operators rely on: etcd 3.4's metric
//! names, types and labels (taken from a scrape of Debian's etcd 3.4), `promtool check
//! metrics`, the metric names the etcd mixin's alerts and dashboard query, and etcd's /health
//! semantics (503 without a leader, `etcdctl endpoint health` agreeing).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{free_port, require_binary, DieWithTest, Kind};

/// Every etcd metric corekv exposes on any member, with its type in corekv's exposition.
/// The type is etcd 3.4's except where etcd's name breaks Prometheus' naming rules and
/// `promtool check metrics` fails on etcd's own output: `proposals_committed_total` and
/// `proposals_applied_total` are gauges in etcd and only grow, so they are counters here;
/// `keys_total`, `watcher_total` and `watch_stream_total` are gauges in etcd and go down too,
/// so they are untyped here.
const EXPECTED: &[(&str, &str)] = &[
    ("etcd_server_has_leader", "gauge"),
    ("etcd_server_is_leader", "gauge"),
    ("etcd_server_is_learner", "gauge"),
    ("etcd_server_leader_changes_seen_total", "counter"),
    ("etcd_server_proposals_committed_total", "counter"),
    ("etcd_server_proposals_applied_total", "counter"),
    ("etcd_server_proposals_pending", "gauge"),
    ("etcd_server_proposals_failed_total", "counter"),
    ("etcd_server_heartbeat_send_failures_total", "counter"),
    ("etcd_server_slow_apply_total", "counter"),
    ("etcd_server_quota_backend_bytes", "gauge"),
    ("etcd_server_id", "gauge"),
    ("etcd_server_version", "gauge"),
    ("etcd_cluster_version", "gauge"),
    ("etcd_disk_wal_fsync_duration_seconds", "histogram"),
    ("etcd_disk_backend_commit_duration_seconds", "histogram"),
    ("etcd_mvcc_db_total_size_in_bytes", "gauge"),
    ("etcd_debugging_mvcc_db_total_size_in_bytes", "gauge"),
    ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge"),
    ("etcd_mvcc_put_total", "counter"),
    ("etcd_mvcc_range_total", "counter"),
    ("etcd_mvcc_delete_total", "counter"),
    ("etcd_mvcc_txn_total", "counter"),
    ("etcd_debugging_mvcc_put_total", "counter"),
    ("etcd_debugging_mvcc_range_total", "counter"),
    ("etcd_debugging_mvcc_delete_total", "counter"),
    ("etcd_debugging_mvcc_txn_total", "counter"),
    ("etcd_debugging_mvcc_keys_total", "untyped"),
    ("etcd_debugging_mvcc_watcher_total", "untyped"),
    ("etcd_debugging_mvcc_watch_stream_total", "untyped"),
    ("etcd_debugging_mvcc_current_revision", "gauge"),
    ("etcd_debugging_mvcc_compact_revision", "gauge"),
    ("etcd_debugging_lease_granted_total", "counter"),
    ("etcd_debugging_lease_revoked_total", "counter"),
    ("etcd_debugging_lease_renewed_total", "counter"),
    ("etcd_debugging_server_lease_expired_total", "counter"),
    ("etcd_network_client_grpc_sent_bytes_total", "counter"),
    ("etcd_network_client_grpc_received_bytes_total", "counter"),
    ("etcd_network_peer_sent_bytes_total", "counter"),
    ("etcd_network_peer_received_bytes_total", "counter"),
    ("etcd_network_peer_sent_failures_total", "counter"),
    ("etcd_network_peer_received_failures_total", "counter"),
    ("etcd_network_peer_round_trip_time_seconds", "histogram"),
    ("etcd_network_active_peers", "gauge"),
    ("etcd_network_disconnected_peers_total", "counter"),
    ("grpc_server_started_total", "counter"),
    ("grpc_server_handled_total", "counter"),
    ("grpc_server_msg_received_total", "counter"),
    ("grpc_server_msg_sent_total", "counter"),
    ("process_cpu_seconds_total", "counter"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_open_fds", "gauge"),
    ("process_max_fds", "gauge"),
    ("process_start_time_seconds", "gauge"),
];

/// The etcd mixin's alert expressions (etcd-io/etcd contrib/mixin/alerts/alerts.libsonnet,
/// with its default config: selector `job=~".*etcd.*"`, instance label `instance`, 30 s
/// scrape interval), by alert name.
const MIXIN_ALERTS: &[(&str, &str)] = &[
    (
        "etcdMembersDown",
        r#"max without (endpoint) (sum without (instance) (up{job=~".*etcd.*"} == bool 0) or count without (To) (sum without (instance) (rate(etcd_network_peer_sent_failures_total{job=~".*etcd.*"}[120s])) > 0.01)) > 0"#,
    ),
    (
        "etcdInsufficientMembers",
        r#"sum(up{job=~".*etcd.*"} == bool 1) without (instance) < ((count(up{job=~".*etcd.*"}) without (instance) + 1) / 2)"#,
    ),
    (
        "etcdNoLeader",
        r#"etcd_server_has_leader{job=~".*etcd.*"} == 0"#,
    ),
    (
        "etcdHighNumberOfLeaderChanges",
        r#"increase((max without (instance) (etcd_server_leader_changes_seen_total{job=~".*etcd.*"}) or 0*absent(etcd_server_leader_changes_seen_total{job=~".*etcd.*"}))[15m:1m]) >= 4"#,
    ),
    (
        "etcdHighNumberOfFailedGRPCRequests",
        r#"100 * sum(rate(grpc_server_handled_total{job=~".*etcd.*", grpc_code=~"Unknown|FailedPrecondition|ResourceExhausted|Internal|Unavailable|DataLoss|DeadlineExceeded"}[5m])) without (grpc_type, grpc_code) / sum(rate(grpc_server_handled_total{job=~".*etcd.*"}[5m])) without (grpc_type, grpc_code) > 1"#,
    ),
    (
        "etcdGRPCRequestsSlow",
        r#"histogram_quantile(0.99, sum(rate(grpc_server_handling_seconds_bucket{job=~".*etcd.*", grpc_method!="Defragment", grpc_type="unary"}[5m])) without(grpc_type)) > 0.15"#,
    ),
    (
        "etcdMemberCommunicationSlow",
        r#"histogram_quantile(0.99, rate(etcd_network_peer_round_trip_time_seconds_bucket{job=~".*etcd.*"}[5m])) > 0.15"#,
    ),
    (
        "etcdHighNumberOfFailedProposals",
        r#"rate(etcd_server_proposals_failed_total{job=~".*etcd.*"}[15m]) > 5"#,
    ),
    (
        "etcdHighFsyncDurations",
        r#"histogram_quantile(0.99, rate(etcd_disk_wal_fsync_duration_seconds_bucket{job=~".*etcd.*"}[5m])) > 0.5"#,
    ),
    (
        "etcdHighCommitDurations",
        r#"histogram_quantile(0.99, rate(etcd_disk_backend_commit_duration_seconds_bucket{job=~".*etcd.*"}[5m])) > 0.25"#,
    ),
    (
        "etcdDatabaseQuotaLowSpace",
        r#"(last_over_time(etcd_mvcc_db_total_size_in_bytes{job=~".*etcd.*"}[5m]) / last_over_time(etcd_server_quota_backend_bytes{job=~".*etcd.*"}[5m]))*100 > 95"#,
    ),
    (
        "etcdExcessiveDatabaseGrowth",
        r#"predict_linear(etcd_mvcc_db_total_size_in_bytes{job=~".*etcd.*"}[4h], 4*60*60) > etcd_server_quota_backend_bytes{job=~".*etcd.*"}"#,
    ),
    (
        "etcdDatabaseHighFragmentationRatio",
        r#"(last_over_time(etcd_mvcc_db_total_size_in_use_in_bytes{job=~".*etcd.*"}[5m]) / last_over_time(etcd_mvcc_db_total_size_in_bytes{job=~".*etcd.*"}[5m])) < 0.5 and etcd_mvcc_db_total_size_in_use_in_bytes{job=~".*etcd.*"} > 104857600"#,
    ),
];

/// The etcd mixin's Grafana dashboard queries (contrib/mixin/dashboards/targets.libsonnet and
/// etcd-grafana7x.libsonnet), by panel title.
const MIXIN_PANELS: &[(&str, &str)] = &[
    (
        "Up",
        r#"sum(etcd_server_has_leader{job=~".*etcd.*", job="$cluster"})"#,
    ),
    (
        "RPC Rate",
        r#"sum(rate(grpc_server_started_total{job=~".*etcd.*", job="$cluster",grpc_type="unary"}[$__rate_interval])) sum(rate(grpc_server_handled_total{job=~".*etcd.*", job="$cluster",grpc_type="unary",grpc_code=~"Unknown|FailedPrecondition|ResourceExhausted|Internal|Unavailable|DataLoss|DeadlineExceeded"}[$__rate_interval]))"#,
    ),
    (
        "Active Streams",
        r#"sum(grpc_server_started_total{job=~".*etcd.*",job="$cluster",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"}) - sum(grpc_server_handled_total{job="$cluster",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"}) sum(grpc_server_started_total{job=~".*etcd.*",job="$cluster",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"}) - sum(grpc_server_handled_total{job="$cluster",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"})"#,
    ),
    (
        "DB Size",
        r#"etcd_mvcc_db_total_size_in_bytes{job=~".*etcd.*", job="$cluster"}"#,
    ),
    (
        "Disk Sync Duration",
        r#"histogram_quantile(0.99, sum(rate(etcd_disk_wal_fsync_duration_seconds_bucket{job=~".*etcd.*", job="$cluster"}[$__rate_interval])) by (instance, le)) histogram_quantile(0.99, sum(rate(etcd_disk_backend_commit_duration_seconds_bucket{job=~".*etcd.*", job="$cluster"}[$__rate_interval])) by (instance, le))"#,
    ),
    (
        "Memory",
        r#"process_resident_memory_bytes{job=~".*etcd.*", job="$cluster"}"#,
    ),
    (
        "Client Traffic In",
        r#"rate(etcd_network_client_grpc_received_bytes_total{job=~".*etcd.*", job="$cluster"}[$__rate_interval])"#,
    ),
    (
        "Client Traffic Out",
        r#"rate(etcd_network_client_grpc_sent_bytes_total{job=~".*etcd.*", job="$cluster"}[$__rate_interval])"#,
    ),
    (
        "Peer Traffic In",
        r#"sum(rate(etcd_network_peer_received_bytes_total{job=~".*etcd.*", job="$cluster"}[$__rate_interval])) by (instance)"#,
    ),
    (
        "Peer Traffic Out",
        r#"sum(rate(etcd_network_peer_sent_bytes_total{job=~".*etcd.*", job="$cluster"}[$__rate_interval])) by (instance)"#,
    ),
    (
        "Raft Proposals",
        r#"sum(rate(etcd_server_proposals_failed_total{job=~".*etcd.*", job="$cluster"}[$__rate_interval])) sum(etcd_server_proposals_pending{job=~".*etcd.*", job="$cluster"}) sum(rate(etcd_server_proposals_committed_total{job=~".*etcd.*", job="$cluster"}[$__rate_interval])) sum(rate(etcd_server_proposals_applied_total{job=~".*etcd.*", job="$cluster"}[$__rate_interval]))"#,
    ),
    (
        "Total Leader Elections Per Day",
        r#"changes(etcd_server_leader_changes_seen_total{job=~".*etcd.*", job="$cluster"}[1d])"#,
    ),
    (
        "Peer round trip time",
        r#"histogram_quantile(0.99, sum by (instance, le) (rate(etcd_network_peer_round_trip_time_seconds_bucket{job=~".*etcd.*", job="$cluster"}[$__rate_interval])))"#,
    ),
];

/// The series names a PromQL expression selects (every selector in these has braces), less
/// Prometheus' own `up`.
fn selected_names(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            if bytes.get(i) == Some(&b'{') {
                let name = &expr[start..i];
                if name != "up" && !names.contains(&name) {
                    names.push(name);
                }
                // Skip the label matchers.
                while i < bytes.len() && bytes[i] != b'}' {
                    i += 1;
                }
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The label names a PromQL expression's matchers use, less `job` (Prometheus' target label).
fn matcher_labels(expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for part in expr.split('{').skip(1) {
        let matchers = part.split('}').next().unwrap_or("");
        for m in matchers.split(',') {
            let name: String = m
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != "job" && !labels.contains(&name) {
                labels.push(name);
            }
        }
    }
    labels
}

/// A parsed Prometheus text exposition.
struct Scrape {
    text: String,
    types: HashMap<String, String>,
    /// (sample name, labels as written, value)
    samples: Vec<(String, String, f64)>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line has a type");
                types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
                let (name, labels) = match series.split_once('{') {
                    Some((n, l)) => (n, l.trim_end_matches('}')),
                    None => (series, ""),
                };
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    v => v
                        .parse()
                        .unwrap_or_else(|_| panic!("bad value in {line:?}")),
                };
                samples.push((name.to_owned(), labels.to_owned(), value));
            }
        }
        Scrape {
            text,
            types,
            samples,
        }
    }

    /// The sum of the samples named `name` whose labels include every one of `labels`.
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.matching(name, labels).map(|(_, _, v)| v).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [&str],
    ) -> impl Iterator<Item = &'a (String, String, f64)> + 'a {
        self.samples.iter().filter(move |(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|want| l.split(',').any(|have| have == *want))
        })
    }

    fn has_sample(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }

    fn has_label(&self, label: &str) -> bool {
        let prefix = format!("{label}=");
        self.samples
            .iter()
            .any(|(_, l, _)| l.split(',').any(|kv| kv.starts_with(&prefix)))
    }

    /// Checks every name of [`EXPECTED`] is declared with its type.
    fn check_types(&self) {
        for (name, kind) in EXPECTED {
            assert_eq!(
                self.types.get(*name).map(String::as_str),
                Some(*kind),
                "{name} should be declared as a {kind}"
            );
        }
    }
}

/// (status code, body) of a GET on 127.0.0.1:`port`.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

fn scrape(port: u16) -> Scrape {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body)
}

/// `promtool check metrics` on `text` must pass: exit 0, no problems printed.
fn promtool_check(text: &str) {
    let promtool = require_binary("promtool");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `f` every 50 ms until it returns Some, for at most `limit` (a bound on a hang, not
/// a timing assertion: what is awaited happens well within it on a healthy machine).
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const LIMIT: Duration = Duration::from_secs(30);

fn etcdctl(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(require_binary("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .expect("run etcdctl")
}

/// One member, --listen-metrics-urls, --metrics basic: a workload through etcdctl moves
/// exactly the counters it should, the fsync and commit histograms fill, every name has its
/// type, and promtool passes on the exposition.
#[test]
fn single_member_scrape_after_a_workload() {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer, metrics) = (free_port(), free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut server = Command::new(common::corekv_bin())
        .args([
            "--name=m".to_string(),
            format!("--data-dir={}", dir.path().join("m").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=m={peer_url}"),
            format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"),
            "--metrics=basic".to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .die_with_test()
        .spawn()
        .expect("start corekv");
    let ep = format!("127.0.0.1:{client}");
    wait_for("the member is healthy", LIMIT, || {
        TcpStream::connect(("127.0.0.1", metrics))
            .ok()
            .and_then(|_| (get(metrics, "/health").0 == 200).then_some(()))
    });
    assert_eq!(
        get(metrics, "/health"),
        (200, r#"{"health":"true"}"#.to_string())
    );
    assert_eq!(get(client, "/health").0, 200);

    let before = scrape(metrics);
    const PUTS: usize = 25;
    for i in 0..PUTS {
        let out = etcdctl(&ep, &["put", &format!("k{i}"), "v"]);
        assert!(out.status.success(), "{out:?}");
    }
    assert!(etcdctl(&ep, &["get", "k1"]).status.success());
    assert!(etcdctl(&ep, &["del", "k2"]).status.success());
    let lease = etcdctl(&ep, &["lease", "grant", "100"]);
    assert!(lease.status.success());
    let lease_id = String::from_utf8_lossy(&lease.stdout)
        .split_whitespace()
        .nth(1)
        .expect("lease <id> granted")
        .to_owned();
    assert!(etcdctl(&ep, &["lease", "keep-alive", "--once", &lease_id])
        .status
        .success());
    // The backend commits every 100 ms: wait for one that holds the puts.
    let after = wait_for("a backend commit after the puts", LIMIT, || {
        let s = scrape(metrics);
        (s.sum("etcd_disk_backend_commit_duration_seconds_count", &[])
            > before.sum("etcd_disk_backend_commit_duration_seconds_count", &[]))
        .then_some(s)
    });

    after.check_types();
    promtool_check(&after.text);
    let delta = |name: &str, labels: &[&str]| after.sum(name, labels) - before.sum(name, labels);
    let put = [
        "grpc_method=\"Put\"",
        "grpc_service=\"etcdserverpb.KV\"",
        "grpc_type=\"unary\"",
    ];
    assert_eq!(delta("etcd_mvcc_put_total", &[]), PUTS as f64);
    assert_eq!(delta("etcd_debugging_mvcc_put_total", &[]), PUTS as f64);
    assert_eq!(delta("etcd_mvcc_delete_total", &[]), 1.0);
    assert!(delta("etcd_mvcc_range_total", &[]) >= 1.0);
    assert_eq!(delta("grpc_server_started_total", &put), PUTS as f64);
    let ok_put: Vec<&str> = put.iter().copied().chain(["grpc_code=\"OK\""]).collect();
    assert_eq!(delta("grpc_server_handled_total", &ok_put), PUTS as f64);
    assert_eq!(delta("grpc_server_msg_received_total", &put), PUTS as f64);
    assert_eq!(delta("grpc_server_msg_sent_total", &put), PUTS as f64);
    assert_eq!(delta("etcd_debugging_lease_granted_total", &[]), 1.0);
    assert_eq!(delta("etcd_debugging_lease_renewed_total", &[]), 1.0);
    assert_eq!(
        after.sum("etcd_debugging_mvcc_keys_total", &[]),
        PUTS as f64 - 1.0
    );
    // Every put waited for a WAL write: the fsync histogram holds them, cumulatively.
    let fsyncs = delta("etcd_disk_wal_fsync_duration_seconds_count", &[]);
    assert!(fsyncs >= 1.0, "{fsyncs}");
    assert_eq!(
        after.sum(
            "etcd_disk_wal_fsync_duration_seconds_bucket",
            &["le=\"+Inf\""]
        ),
        after.sum("etcd_disk_wal_fsync_duration_seconds_count", &[])
    );
    assert!(after.sum("etcd_disk_wal_fsync_duration_seconds_sum", &[]) > 0.0);
    assert!(delta("etcd_network_client_grpc_received_bytes_total", &[]) > 0.0);
    assert!(delta("etcd_network_client_grpc_sent_bytes_total", &[]) > 0.0);
    assert!(
        delta("etcd_server_proposals_applied_total", &[]) >= PUTS as f64,
        "every put is a raft entry of its own (one client, one at a time)"
    );
    assert_eq!(after.sum("etcd_server_has_leader", &[]), 1.0);
    assert_eq!(after.sum("etcd_server_is_leader", &[]), 1.0);
    assert_eq!(after.sum("etcd_server_leader_changes_seen_total", &[]), 1.0);
    assert!(after.sum("etcd_mvcc_db_total_size_in_bytes", &[]) > 0.0);
    assert_eq!(
        after.sum("etcd_server_quota_backend_bytes", &[]),
        (2u64 << 30) as f64
    );
    assert!(after.sum("process_resident_memory_bytes", &[]) > 0.0);
    assert!(after.sum("process_open_fds", &[]) > 0.0);
    assert_eq!(
        after.matching("etcd_server_version", &[]).count(),
        1,
        "one etcd_server_version series"
    );
    // --metrics basic: no handling-time histograms (etcd's extensive level adds them).
    assert!(!after.types.contains_key("grpc_server_handling_seconds"));
    // The client port serves the same exposition.
    let (status, body) = get(client, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE etcd_server_has_leader gauge"));
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Three members with --metrics extensive: the peer metrics move, every metric name the
/// etcd mixin's alerts and dashboard select is in the leader's scrape; killing the leader
/// counts a leader change on the survivors; with one member left /health says 503
/// `{"health":"false"}` and `etcdctl endpoint health` says unhealthy too.
#[test]
fn cluster_leader_changes_mixin_names_and_health() {
    let mut c = Cluster::start(Kind::Corekv, 3, &["--metrics=extensive"]);
    let port = |c: &Cluster, i: usize| -> u16 {
        c.endpoint(i)
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("host:port")
    };
    let leader = c.wait_leader();
    let ep = c.endpoint(leader);
    for i in 0..20 {
        assert!(etcdctl(&ep, &["put", &format!("k{i}"), "v"])
            .status
            .success());
    }
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // The leader times heartbeats to each follower; wait until both have one.
    let s = wait_for("a round trip to each follower", LIMIT, || {
        let s = scrape(port(&c, leader));
        let timed = s
            .matching("etcd_network_peer_round_trip_time_seconds_count", &[])
            .filter(|(_, _, v)| *v > 0.0)
            .count();
        (timed == 2).then_some(s)
    });
    s.check_types();
    promtool_check(&s.text);
    assert_eq!(s.sum("etcd_server_is_leader", &[]), 1.0);
    assert_eq!(
        s.matching("etcd_network_peer_sent_bytes_total", &[])
            .filter(|(_, l, v)| l.starts_with("To=\"") && *v > 0.0)
            .count(),
        2,
        "bytes sent to both followers"
    );
    assert_eq!(s.sum("etcd_network_active_peers", &[]), 2.0);
    assert!(s.has_sample("grpc_server_handling_seconds_bucket"));
    for f in &followers {
        let fs = scrape(port(&c, *f));
        assert_eq!(fs.sum("etcd_server_is_leader", &[]), 0.0);
        assert_eq!(fs.sum("etcd_server_has_leader", &[]), 1.0);
        assert!(fs.sum("etcd_network_peer_received_bytes_total", &[]) > 0.0);
        // Every member applied the 20 puts (through raft, on each).
        let applied = wait_for("the follower applied the puts", LIMIT, || {
            let fs = scrape(port(&c, *f));
            (fs.sum("etcd_mvcc_put_total", &[]) >= 20.0).then_some(fs)
        });
        assert_eq!(
            applied.sum("grpc_server_started_total", &["grpc_method=\"Put\""]),
            0.0
        );
    }

    // The mixin: every series its alerts and panels select exists in the leader's scrape,
    // with the labels they match on.
    let mut missing = Vec::new();
    for (what, expr) in MIXIN_ALERTS.iter().chain(MIXIN_PANELS) {
        for name in selected_names(expr) {
            if !s.has_sample(name) {
                missing.push(format!("{what}: {name}"));
            }
        }
        for label in matcher_labels(expr) {
            if !s.has_label(&label) {
                missing.push(format!("{what}: label {label}"));
            }
        }
    }
    assert!(missing.is_empty(), "not in corekv's scrape: {missing:?}");
    assert!(
        s.has_label("To"),
        "etcdMembersDown aggregates `without (To)`"
    );

    // Kill the leader: the survivors elect another and each counts the change.
    let seen: Vec<f64> = followers
        .iter()
        .map(|f| scrape(port(&c, *f)).sum("etcd_server_leader_changes_seen_total", &[]))
        .collect();
    c.kill(leader);
    let new_leader = c.wait_leader_among(&followers);
    for (f, before) in followers.iter().zip(&seen) {
        let after = wait_for("the survivor counted the new leader", LIMIT, || {
            let v = scrape(port(&c, *f)).sum("etcd_server_leader_changes_seen_total", &[]);
            (v > *before).then_some(v)
        });
        assert!(after > *before);
    }
    // The new leader cannot reach the old one: its sends fail.
    wait_for("send failures to the killed member", LIMIT, || {
        let s = scrape(port(&c, new_leader));
        (s.sum("etcd_network_peer_sent_failures_total", &[]) > 0.0).then_some(())
    });

    // Kill the new leader too: the last member has no quorum and no leader.
    let last = *followers.iter().find(|&&f| f != new_leader).unwrap();
    c.kill(new_leader);
    let (status, body) = wait_for("/health turns unhealthy", LIMIT, || {
        let (status, body) = get(port(&c, last), "/health");
        (status == 503).then_some((status, body))
    });
    assert_eq!((status, body.as_str()), (503, r#"{"health":"false"}"#));
    let out = etcdctl(&c.endpoint(last), &["endpoint", "health"]);
    assert!(!out.status.success(), "etcdctl endpoint health: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is unhealthy"),
        "{out:?}"
    );
    wait_for("the last member reports no leader", LIMIT, || {
        (scrape(port(&c, last)).sum("etcd_server_has_leader", &[]) == 0.0).then_some(())
    });
    assert_eq!(get(port(&c, last), "/health").0, 503);
    let log = c.log(last);
    assert!(
        log.contains("/health error; no leader")
            || log.contains("/health error; linearizable read"),
        "the log says why /health failed:\n{}",
        c.log_tail(last, 20)
    );
}

#[test]
fn mixin_expressions_are_parsed() {
    assert_eq!(
        selected_names(MIXIN_ALERTS[0].1),
        vec!["etcd_network_peer_sent_failures_total"]
    );
    assert_eq!(
        matcher_labels(MIXIN_ALERTS[5].1),
        vec!["grpc_method", "grpc_type"]
    );
}
