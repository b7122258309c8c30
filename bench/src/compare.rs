//! `corekv-bench compare`: start a real etcd and corekv on this machine, with the same flags,
//! fresh data dirs and free ports, run the same workloads against both (interleaved), and print
//! a side-by-side table with ratios and each server's CPU seconds per 100,000 requests.
//!
//! Each workload is a separate `corekv-bench --json` process (the command line is printed, so
//! any row can be rerun by hand). Server CPU is utime + stime of the server processes (all
//! threads; all members of a cluster) from /proc, read before and after each workload.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use corekv::client::{Client, ClientOptions};
use corekv::proto::etcdserverpb as pb;
use serde::Serialize;

use crate::procstat;

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The etcd server binary (Debian's etcd-server).
    #[arg(long, default_value = "etcd")]
    etcd_bin: PathBuf,
    /// The corekv server binary (default: `corekv` next to this binary, i.e. the same build).
    #[arg(long)]
    corekv_bin: Option<PathBuf>,
    /// Members per cluster: 1, or 3 (etcd only for now: corekv cannot form a cluster yet).
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// Fewer requests per workload: a fast check that everything works, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Repetitions of each workload per server (alternating which server goes first); the
    /// table shows the median. Default: 3, or 1 with --quick.
    #[arg(long)]
    reps: Option<usize>,
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

/// One server process.
struct Proc {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

/// A running cluster (one or more members) of one kind, killed and removed on drop.
struct Cluster {
    kind: &'static str,
    procs: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn endpoints(&self) -> Vec<String> {
        self.procs.iter().map(|p| p.endpoint.clone()).collect()
    }

    /// utime + stime of all members, seconds.
    fn cpu(&self) -> Result<f64, String> {
        let mut sum = 0.0;
        for p in &self.procs {
            sum += procstat::cpu_seconds(p.child.id()).ok_or_else(|| {
                format!(
                    "{} (pid {}) is gone; its log: {}",
                    self.kind,
                    p.child.id(),
                    p.log.display()
                )
            })?;
        }
        Ok(sum)
    }

    fn check_alive(&mut self) -> Result<(), String> {
        for p in &mut self.procs {
            if let Ok(Some(st)) = p.child.try_wait() {
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                return Err(format!(
                    "{} at {} exited ({st}); last log lines:\n{}",
                    self.kind,
                    p.endpoint,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
        }
        Ok(())
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

/// Starts `members` members of `bin` (etcd or corekv take the same flags) and waits until
/// every member reports a leader.
fn start_cluster(
    kind: &'static str,
    bin: &Path,
    members: usize,
    parent: &Path,
    ports: &mut Vec<u16>,
) -> Result<Cluster, String> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("corekv-compare-{kind}-"))
        .tempdir_in(parent)
        .map_err(|e| format!("temp dir in {}: {e}", parent.display()))?;
    let token = format!("bench-{kind}-{}", std::process::id());
    let spec: Vec<(String, u16, u16)> = (0..members)
        .map(|i| (format!("m{i}"), free_port(ports), free_port(ports)))
        .collect();
    let initial = spec
        .iter()
        .map(|(n, _, peer)| format!("{n}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Vec::new();
    for (name, client, peer) in &spec {
        let data = dir.path().join(name);
        let log = dir.path().join(format!("{name}.log"));
        let logf = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster={initial}"))
            .arg(format!("--initial-cluster-token={token}"))
            .arg("--initial-cluster-state=new")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(|e| e.to_string())?)
            .stderr(logf);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        procs.push(Proc {
            child,
            endpoint: format!("127.0.0.1:{client}"),
            log,
        });
    }
    let mut cluster = Cluster {
        kind,
        procs,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        cluster.check_alive()?;
        if all_have_leader(&cluster.endpoints()) {
            return Ok(cluster);
        }
        if Instant::now() > deadline {
            return Err(format!("{kind} did not elect a leader within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn all_have_leader(endpoints: &[String]) -> bool {
    let eps = endpoints.to_vec();
    corekv::client::run_local(move || async move {
        for ep in eps {
            let mut opts = ClientOptions::new(vec![ep]);
            opts.dial_timeout = Duration::from_millis(500);
            opts.command_timeout = Duration::from_secs(1);
            let Ok(c) = Client::connect(opts).await else {
                return false;
            };
            match c.status().await {
                Ok(st) if st.leader != 0 => {}
                _ => return false,
            }
        }
        true
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
    let cpu0 = cluster.cpu()?;
    let workers0 = procstat::kernel_worker_cpu_seconds();
    let out = Command::new(me)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", me.display()))?;
    // Let work the server queued (backend commits, fsyncs) land in this workload's account.
    std::thread::sleep(Duration::from_millis(250));
    let cpu1 = cluster.cpu()?;
    let workers1 = procstat::kernel_worker_cpu_seconds();
    cluster.check_alive()?;
    if !out.status.success() {
        return Err(format!(
            "{} failed against {}: {}",
            command,
            cluster.kind,
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
        server: cluster.kind,
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
        kernel_workers_cpu_per_100k: per_100k(workers1 - workers0),
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

fn compare(a: &CompareArgs, bench_cores: usize) -> Result<(), String> {
    if a.members != 1 && a.members != 3 {
        return Err("--members must be 1 or 3".into());
    }
    let me = std::env::current_exe().map_err(|e| format!("where am I: {e}"))?;
    let corekv_bin = match &a.corekv_bin {
        Some(p) => p.clone(),
        None => me.with_file_name("corekv"),
    };
    if a.members == 1 && !corekv_bin.is_file() {
        return Err(format!(
            "{} not found: build it (cargo build --release --bin corekv) or pass --corekv-bin",
            corekv_bin.display()
        ));
    }
    let parent = a.data_parent.clone().unwrap_or_else(std::env::temp_dir);
    let reps = a.reps.unwrap_or(if a.quick { 1 } else { 3 }).max(1);
    let ws: Vec<Workload> = workloads(a.quick, a.members)
        .into_iter()
        .filter(|w| a.only.as_ref().is_none_or(|o| w.name.contains(o.as_str())))
        .collect();

    let etcd_version = first_line(Command::new(&a.etcd_bin).arg("--version"));
    let mut head = String::new();
    let _ = writeln!(
        head,
        "corekv vs etcd, {} member(s), {} ({}), {} rep(s), {}",
        a.members,
        utc_now(),
        if a.quick { "quick" } else { "full" },
        reps,
        machine()
    );
    let _ = writeln!(
        head,
        "etcd: {} ({etcd_version}); corekv: {}; data dirs on {} ({}); load generator: corekv-bench, {} client core(s), same machine",
        a.etcd_bin.display(),
        corekv_bin.display(),
        parent.display(),
        fs_type(&parent),
        bench_cores
    );
    eprint!("{head}");

    let mut ports = Vec::new();
    eprintln!("starting etcd ({} member(s)) ...", a.members);
    let mut etcd = start_cluster("etcd", &a.etcd_bin, a.members, &parent, &mut ports)?;
    let mut corekv = if a.members == 1 {
        eprintln!("starting corekv ...");
        Some(start_cluster(
            "corekv",
            &corekv_bin,
            1,
            &parent,
            &mut ports,
        )?)
    } else {
        None
    };
    put_range_key(&etcd.endpoints())?;
    if let Some(c) = &corekv {
        put_range_key(&c.endpoints())?;
    }

    // A server's first requests pay for one-time work (memory first touched, caches and
    // buffers grown); measure steady state. Both servers get the same warm-up.
    let warm_up = warm_up_workload(a.quick);
    eprintln!("  warm-up: {}", warm_up.args.join(" "));
    bench_run(&me, &mut etcd, &warm_up, 0, bench_cores)?;
    if let Some(c) = corekv.as_mut() {
        bench_run(&me, c, &warm_up, 0, bench_cores)?;
    }

    let mut runs: Vec<Run> = Vec::new();
    let started = Instant::now();
    for (wi, w) in ws.iter().enumerate() {
        for rep in 0..reps {
            // Alternate who goes first, so drift on a shared machine hits both alike.
            let etcd_first = (wi + rep) % 2 == 0;
            let order: Vec<bool> = if etcd_first {
                vec![true, false]
            } else {
                vec![false, true]
            };
            for is_etcd in order {
                let cluster = if is_etcd {
                    &mut etcd
                } else {
                    match corekv.as_mut() {
                        Some(c) => c,
                        None => continue,
                    }
                };
                eprintln!("  {:<46} {:<7} rep {} ...", w.name, cluster.kind, rep + 1);
                let r = bench_run(&me, cluster, w, rep, bench_cores)?;
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

    let mut t = String::new();
    let _ = writeln!(t);
    t.push_str(&head);
    let _ = writeln!(
        t,
        "total run time {:.0} s; medians of {reps} rep(s); ratios are corekv / etcd\n",
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        t,
        "| workload | etcd req/s | corekv req/s | req/s ratio | etcd p50 / p99 ms | corekv p50 / p99 ms | etcd CPU s/100k req | corekv CPU s/100k req | CPU ratio |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for w in &ws {
        let e = cell(&runs, "etcd", w.name);
        let c = cell(&runs, "corekv", w.name);
        let (Some(e), c) = (e, c) else { continue };
        match c {
            Some(c) => {
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} | {:.2} | {} |",
                    w.name,
                    fmt_rps(&e),
                    fmt_rps(&c),
                    ratio(c.rps, e.rps),
                    e.p50,
                    e.p99,
                    c.p50,
                    c.p99,
                    e.cpu100k,
                    c.cpu100k,
                    ratio(c.cpu100k, e.cpu100k),
                );
            }
            None => {
                let _ = writeln!(
                    t,
                    "| {} | {} | n/a (corekv: clustering not implemented yet) | n/a | {:.2} / {:.2} | n/a | {:.2} | n/a | n/a |",
                    w.name,
                    fmt_rps(&e),
                    e.p50,
                    e.p99,
                    e.cpu100k,
                );
            }
        }
    }
    let _ = writeln!(
        t,
        "\nServer CPU with the kernel worker threads added (kworker, ksoftirqd: machine-wide \
         CPU during the run, mostly finishing the server's disk I/O; CPU s/100k req):"
    );
    for w in &ws {
        let (Some(e), Some(c)) = (cell(&runs, "etcd", w.name), cell(&runs, "corekv", w.name))
        else {
            continue;
        };
        let _ = writeln!(
            t,
            "  {:<46} etcd {:.2} + {:.2} = {:.2}   corekv {:.2} + {:.2} = {:.2}   ratio {}",
            w.name,
            e.cpu100k,
            e.workers100k,
            e.cpu100k + e.workers100k,
            c.cpu100k,
            c.workers100k,
            c.cpu100k + c.workers100k,
            ratio(c.cpu100k + c.workers100k, e.cpu100k + e.workers100k),
        );
    }
    let _ = writeln!(
        t,
        "\nLoad generator CPU (cores used during the run; it shares the machine with the server; \
         \"client-bound\" above = its busiest executor was over {:.0}% busy, so give it more \
         --client-cores):",
        CLIENT_BOUND * 100.0
    );
    for w in &ws {
        let e = cell(&runs, "etcd", w.name);
        let c = cell(&runs, "corekv", w.name);
        let show = |c: Option<Cell>| {
            c.map(|c| {
                format!(
                    "{:.2} (busiest executor {:.0}%)",
                    c.client,
                    c.busiest * 100.0
                )
            })
            .unwrap_or("-".into())
        };
        let _ = writeln!(
            t,
            "  {:<46} vs etcd {:<30} vs corekv {}",
            w.name,
            show(e),
            show(c),
        );
    }
    let _ = writeln!(t, "\nCommands (endpoints added per server):");
    for w in &ws {
        let _ = writeln!(t, "  corekv-bench --json {}", w.args.join(" "));
    }
    print!("{t}");

    if let Some(path) = &a.out {
        let json = serde_json::to_string_pretty(&runs).expect("serializable");
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("raw results written to {}", path.display());
    }
    Ok(())
}
