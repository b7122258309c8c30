//! `corekv-bench compare`: start real etcd servers (Debian's etcd 3.4 and, when it can be found
//! or installed, etcd 3.5) and corekv on this machine, with the same flags, fresh data dirs and
//! free ports, run the same workloads against all of them (interleaved, rotating who goes
//! first), and print side-by-side tables with corekv's ratios to each etcd and each server's
//! CPU seconds per 100,000 requests.
//!
//! Each workload is a separate load generator process printing one JSON report: `corekv-bench
//! --json` (corekv's own Rust client) and/or `corekv-go-bench` (bench/go: the official Go
//! client, clientv3, which most etcd users run), built on demand into target/go (the command
//! lines are printed, so any row can be rerun by hand). Server CPU is utime + stime of the
//! server processes (all threads; all members of a cluster) from /proc, read before and after
//! each workload. `--server-cpus` / `--client-cpus` pin the servers and the load generator to
//! separate CPUs (on a small machine the load generator otherwise takes the server's CPU).
//!
//! A server other than the etcd 3.4 reference that does not start, does not become healthy or
//! fails a run is reported as "n/a (<server>: <why>)" in its column; the others go on.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use corekv::client::Client;
use corekv::proto::etcdserverpb as pb;
use serde::Serialize;

use crate::servers::ETCD35;
use crate::servers::{
    exit_code, fs_type, machine, md, md_table, parse_cpu_list, pin_to_cpus, rotated, shorten,
    start_cluster, utc_now, write_etcd35_defaults, write_failures, write_server_flags, Cluster,
    ClusterSpec, Lineup, Server, ServerBins, COREKV,
};
use crate::stats::median;
use crate::tls::{BenchCerts, TlsFlags};
use crate::{etcd35, procstat};

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    #[command(flatten)]
    bins: ServerBins,
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
    /// Only workloads whose name contains one of these, separated by | (e.g. "range" or
    /// "put, 1 client|range linearizable"; the names have commas).
    #[arg(long)]
    only: Option<String>,
    /// Which load generators run every workload: corekv (corekv-bench, corekv's Rust client),
    /// go (corekv-go-bench, the official Go client clientv3) or both. Default: both when the Go
    /// one can be built here (Debian's golang-go and golang-etcd-server-dev), else corekv.
    #[arg(long, value_enum)]
    load_generator: Option<LoadGenerators>,
    /// The Go load generator binary; default: built from bench/go into target/go when missing
    /// or older than its source.
    #[arg(long)]
    go_bench: Option<PathBuf>,
    /// CPUs the servers run on, a taskset-style list (e.g. 0 or 0-1); set before they start,
    /// so each sizes itself to them (Go's GOMAXPROCS, corekv's executors). Default: any CPU.
    #[arg(long, value_parser = cpu_list)]
    server_cpus: Option<CpuList>,
    /// CPUs the load generator runs on (e.g. 1); corekv-bench gets one executor per CPU
    /// unless --client-cores says otherwise. Default: any CPU.
    #[arg(long, value_parser = cpu_list)]
    client_cpus: Option<CpuList>,
    /// Mutual TLS on the client URLs of every server, with the same certificates (one CA, a
    /// server and a client certificate, generated for the run); both load generators dial
    /// https:// with the client certificate (etcdctl's --cacert, --cert and --key).
    #[arg(long)]
    tls: bool,
    /// Auth on every server (simple tokens): the root user, and a user `bench` whose role may
    /// read and write every key; the load generators authenticate once as `bench` and send its
    /// token with every request. corekv also runs without auth (one more column, "corekv
    /// without auth"), so the tables show what auth costs it.
    #[arg(long)]
    auth: bool,
}

/// The extra corekv of `--auth`, started and measured like the others but without auth.
const COREKV_NO_AUTH: &str = "corekv without auth";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LoadGenerators {
    Corekv,
    Go,
    Both,
}

/// One load generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
enum Generator {
    /// corekv-bench: corekv's own Rust client on glommio.
    Corekv,
    /// corekv-go-bench: etcd's official Go client (clientv3 3.4, grpc-go).
    Go,
}

impl Generator {
    fn label(self) -> &'static str {
        match self {
            Generator::Corekv => "corekv-bench",
            Generator::Go => "Go clientv3",
        }
    }
}

#[derive(Clone, Debug)]
struct CpuList(Vec<usize>);

fn cpu_list(s: &str) -> Result<CpuList, String> {
    parse_cpu_list(s).map(CpuList)
}

fn cpus_text(c: &Option<CpuList>) -> String {
    match c {
        Some(CpuList(v)) => v
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(","),
        None => "any".into(),
    }
}

/// The Go load generator, built from bench/go (next to this crate's source) into
/// `<target>/go/corekv-go-bench` when it is missing or older than its source; Err says why
/// it cannot be had.
fn go_bench(me: &Path, explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("--go-bench {}: no such file", p.display()))
        };
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go");
    let script = src.join("build.sh");
    if !script.is_file() {
        return Err(format!("no Go load generator source at {}", src.display()));
    }
    let target = me
        .parent()
        .and_then(Path::parent)
        .ok_or("no target dir above corekv-bench")?;
    let out = target.join("go").join("corekv-go-bench");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_source = [src.join("main.go"), script.clone()]
        .iter()
        .filter_map(|p| mtime(p))
        .max();
    if mtime(&out).is_some_and(|b| newest_source.is_none_or(|s| b >= s)) {
        return Ok(out);
    }
    let go_installed = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !go_installed || !Path::new("/usr/share/gocode/src/go.etcd.io/etcd/clientv3").is_dir() {
        return Err(
            "Go or the etcd client sources are not installed (Debian: apt-get install \
                    golang-go golang-etcd-server-dev; bench/go/build.sh does it)"
                .into(),
        );
    }
    eprintln!("building the Go load generator: {}", script.display());
    let o = Command::new(&script)
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !o.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            shorten(String::from_utf8_lossy(&o.stderr).trim(), 600)
        ));
    }
    Ok(out)
}

/// The value range workloads read (etcd's published read benchmark reads one key).
fn put_range_key(endpoints: &[String]) -> Result<(), String> {
    let eps = endpoints.to_vec();
    corekv::client::run_local(move || async move {
        let c = Client::connect(crate::tls::options(eps))
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
    /// Global flags and subcommand for corekv-bench, and for corekv-go-bench unless `go_args`
    /// gives its own (endpoints, --json and --target-leader are added per run).
    args: Vec<String>,
    /// corekv-go-bench's flags and subcommand where they differ from corekv-bench's.
    go_args: Option<Vec<String>>,
    /// Send everything to the leader (corekv-bench finds it; corekv-go-bench, which cannot,
    /// spreads its connections over every member).
    target_leader: bool,
    /// What the load generators' "requests" are: what the rate, the latency and the server
    /// CPU of this workload's rows are per.
    counts: Counts,
    /// How the load generators' ways of running it differ, printed with the report.
    note: Option<&'static str>,
}

impl Workload {
    /// A workload both load generators run with the same arguments, counting requests.
    fn same_args(args: Vec<String>, target_leader: bool) -> Workload {
        Workload {
            name: "",
            args,
            go_args: None,
            target_leader,
            counts: Counts::Requests,
            note: None,
        }
    }

    /// The flags and subcommand load generator `g` runs.
    fn args(&self, g: Generator) -> &[String] {
        match (g, &self.go_args) {
            (Generator::Go, Some(a)) => a,
            _ => &self.args,
        }
    }

    /// The name as the tables show it, with the unit when it is not requests.
    fn label(&self) -> String {
        match self.counts {
            Counts::Requests => self.name.to_string(),
            Counts::Events => format!("{} {EVENT_MARK}", self.name),
        }
    }
}

/// What a load generator counts in its JSON's `requests` (and so what req/s, the latency and
/// server CPU per request are of).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
enum Counts {
    /// Unary requests or stream round trips (a keep-alive and its reply).
    #[serde(rename = "requests")]
    Requests,
    /// Watch events delivered (one per watcher per put); latency is put sent -> event
    /// received (both load generators' watch reports count these as `requests`).
    #[serde(rename = "events delivered")]
    Events,
}

impl Counts {
    fn per_sec(self) -> &'static str {
        match self {
            Counts::Requests => "req/s",
            Counts::Events => "events/s",
        }
    }
}

/// Marks the rows of workloads that count events (see `EVENTS_NOTE`).
const EVENT_MARK: &str = "(per event delivered)";

/// What the rows marked EVENT_MARK mean.
const EVENTS_NOTE: &str =
    "Rows marked \"(per event delivered)\" count watch events, not requests: \
     req/s = events delivered per second (every watcher gets every put: events = watchers x \
     puts, over the time from the first put to the last event), p50 / p99 = put sent -> event \
     received, server CPU per req = the server's CPU over the whole run (creating the \
     watchers, the puts, delivering the events) / events delivered. The puts are paced, so \
     events/s is set by watchers x put rate unless a server falls behind.";

/// Keys the range workloads read, one per request at random: the put workloads' keys 0 ..
/// READ_KEYS-1, written by the warm-up.
const READ_KEYS: &str = "10000";

fn workloads(quick: bool, members: usize) -> Vec<Workload> {
    let n = |full: u64, q: u64| if quick { q } else { full }.to_string();
    let put = |conns: &str, clients: &str, total: String| {
        Workload::same_args(put_args(conns, clients, &total, "100000", true), true)
    };
    let range = |consistency: &str, total: String| -> Workload {
        let mut v: Vec<String> = [
            "--conns",
            "100",
            "--clients",
            "1000",
            "range",
            "--key-space-size",
            READ_KEYS,
            "--key-size",
            "8",
            "--consistency",
            consistency,
            "--total",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(total);
        Workload::same_args(v, members == 1)
    };
    // One key, 1000 watchers on 100 streams over 10 connections, one putter at 100 puts/s:
    // README's by-hand run of corekv-go-bench; corekv-bench's watch-latency is the same shape.
    let watch = |subcommand: &str| -> Vec<String> {
        let puts = n(500, 50);
        [
            "--conns",
            "10",
            subcommand,
            "--watchers",
            "1000",
            "--streams",
            "100",
            "--put-total",
            puts.as_str(),
            "--put-rate",
            "100",
            "--val-size",
            "32",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let lease = Workload::same_args(
        [
            "--conns",
            "4",
            "--clients",
            "64",
            "lease-keepalive",
            "--total",
            n(30_000, 2_000).as_str(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        true,
    );
    vec![
        Workload {
            name: "put, 1 client, 1 conn",
            // 2,000 puts lasted about a second, short for a CPU figure read in 10 ms
            // ticks on a machine whose speed drifts; 10,000 take about five seconds.
            ..put("1", "1", n(10_000, 300))
        },
        Workload {
            name: "put, 16 clients, 1 conn",
            ..put("1", "16", n(20_000, 3_000))
        },
        Workload {
            name: "put, 1000 clients, 100 conns",
            ..put("100", "1000", n(100_000, 20_000))
        },
        Workload {
            name: "range linearizable, 1000 clients, 100 conns",
            ..range("l", n(50_000, 20_000))
        },
        Workload {
            name: "range serializable, 1000 clients, 100 conns",
            ..range("s", n(50_000, 20_000))
        },
        Workload {
            name: "watch, 1000 watchers of 1 key, 100 streams, 10 conns",
            args: watch("watch-latency"),
            go_args: Some(watch("watch")),
            // Watchers on every member, as the Go client's connections go.
            target_leader: false,
            counts: Counts::Events,
            note: None,
        },
        Workload {
            name: "lease keep-alives, 64 clients, 4 conns",
            note: Some(
                "corekv-go-bench renews with clientv3's KeepAliveOnce, as etcd's benchmark tool \
                 does: a new LeaseKeepAlive stream for every keep-alive (opened, one request, \
                 one reply, cancelled); corekv-bench keeps one stream per client and sends its \
                 keep-alives on it back to back. Either way each of the 64 clients renews its \
                 own lease and waits for the reply before the next.",
            ),
            ..lease
        },
    ]
}

/// Puts that are not measured, run once against each server before the workloads (with
/// corekv-bench): they write the keys the range workloads read.
fn warm_up_workload() -> Workload {
    Workload {
        name: "warm-up",
        ..Workload::same_args(put_args("1", "16", READ_KEYS, READ_KEYS, true), true)
    }
}

/// Load generator arguments for puts of etcd's benchmark shape (8-byte keys over a space of
/// `key_space`, 256-byte values).
fn put_args(
    conns: &str,
    clients: &str,
    total: &str,
    key_space: &str,
    sequential_keys: bool,
) -> Vec<String> {
    let mut v = vec![
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
        key_space,
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
    generator: Generator,
    rep: usize,
    command: String,
    /// What `requests` (and the rates, latencies and CPU per 100k) count.
    counts: Counts,
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

/// How the load generators are run: their binaries, corekv-bench's executors, the TLS flags
/// (etcdctl's, which both take) and the CPUs they may use.
struct Generators {
    corekv_bench: PathBuf,
    go_bench: Option<PathBuf>,
    bench_cores: usize,
    tls: Vec<String>,
    client_cpus: Vec<usize>,
}

impl Generators {
    /// The program and arguments that run `w` with `g` against `endpoints` (as the bench user
    /// with `token` if there is one).
    fn command(
        &self,
        g: Generator,
        w: &Workload,
        endpoints: &[String],
        token: Option<&str>,
    ) -> (PathBuf, Vec<String>) {
        let (bin, mut args) = match g {
            Generator::Corekv => {
                let mut a = self.tls.clone();
                a.extend([
                    "--json".to_string(),
                    "--no-progress".to_string(),
                    "--client-cores".to_string(),
                    self.bench_cores.to_string(),
                ]);
                if w.target_leader {
                    a.push("--target-leader".into());
                }
                (self.corekv_bench.clone(), a)
            }
            // corekv-go-bench takes etcdctl's TLS flags as corekv-bench does.
            Generator::Go => (
                self.go_bench
                    .clone()
                    .expect("the Go load generator was found"),
                self.tls.clone(),
            ),
        };
        if let Some(t) = token {
            args.extend(crate::auth::bench_user_args(t));
        }
        args.extend(["--endpoints".to_string(), endpoints.join(",")]);
        args.extend(w.args(g).iter().cloned());
        (bin, args)
    }
}

fn bench_run(
    gens: &Generators,
    g: Generator,
    cluster: &mut Cluster,
    w: &Workload,
    rep: usize,
    auth: bool,
) -> Result<Run, String> {
    // The bench user's token, got here so the bcrypt check is not in the server CPU measured.
    let token = match auth {
        true => Some(crate::auth::bench_token(&cluster.endpoints())?),
        false => None,
    };
    let (bin, args) = gens.command(g, w, &cluster.endpoints(), token.as_deref());
    let name = bin.file_name().map_or("?".into(), |n| n.to_string_lossy());
    let command = format!("{name} {}", args.join(" "));
    cluster.check_alive()?;
    let cpu0 = cluster.cpu()?;
    let workers0 = procstat::kernel_worker_ticks();
    let mut cmd = Command::new(&bin);
    cmd.args(&args).stdin(Stdio::null());
    pin_to_cpus(&mut cmd, &gens.client_cpus);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
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
        generator: g,
        rep,
        command,
        counts: w.counts,
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

/// `runs` are one load generator's.
fn cell(runs: &[&Run], server: &str, workload: &str) -> Option<Cell> {
    let rs: Vec<&Run> = runs
        .iter()
        .copied()
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

/// `client_cores`: the global --client-cores, passed on to every corekv-bench run; default:
/// one per CPU the load generator may use (--client-cpus, or the machine's).
pub fn main(a: &CompareArgs, client_cores: Option<usize>) -> i32 {
    let cpus = match &a.client_cpus {
        Some(c) => c.0.len(),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    exit_code("compare", compare(a, client_cores.unwrap_or(cpus).max(1)))
}

/// "go1.19.8", or "?" if `go version` does not answer.
fn go_version() -> String {
    Command::new("go")
        .arg("version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

impl Server {
    /// Runs `w` with `g` against this server if it is still running (as the bench user if
    /// `auth`); a failed run takes it out.
    fn run(
        &mut self,
        gens: &Generators,
        g: Generator,
        w: &Workload,
        rep: usize,
        auth: bool,
    ) -> Result<Option<Run>, String> {
        let Some(c) = self.cluster.as_mut() else {
            return Ok(None);
        };
        match bench_run(gens, g, c, w, rep, auth) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                let f = c.failure(e);
                self.fail(f)?;
                Ok(None)
            }
        }
    }
}

fn compare(a: &CompareArgs, bench_cores: usize) -> Result<(), String> {
    if a.members != 1 && a.members != 3 {
        return Err("--members must be 1 or 3".into());
    }
    let me = std::env::current_exe().map_err(|e| format!("where am I: {e}"))?;
    let lineup = a.bins.lineup(&me)?;
    let parent = a.data_parent.clone().unwrap_or_else(std::env::temp_dir);
    let reps = a.reps.unwrap_or(if a.quick { 1 } else { 3 }).max(1);
    let start_timeout =
        a.start_timeout
            .unwrap_or(Duration::from_secs(if a.quick { 20 } else { 60 }));
    let ws: Vec<Workload> = workloads(a.quick, a.members)
        .into_iter()
        .filter(|w| {
            a.only
                .as_ref()
                .is_none_or(|o| o.split('|').any(|o| w.name.contains(o.trim())))
        })
        .collect();
    if ws.is_empty() {
        return Err(format!("--only {:?} matches no workload", a.only));
    }
    let server_cpus = a.server_cpus.clone().map(|c| c.0).unwrap_or_default();
    let client_cpus = a.client_cpus.clone().map(|c| c.0).unwrap_or_default();
    let go = match a.load_generator {
        Some(LoadGenerators::Corekv) => Err("--load-generator corekv".into()),
        _ => go_bench(&me, a.go_bench.as_deref()),
    };
    let generators: Vec<Generator> = match (a.load_generator, &go) {
        (Some(LoadGenerators::Corekv), _) => vec![Generator::Corekv],
        (Some(LoadGenerators::Go), Err(why)) => return Err(format!("--load-generator go: {why}")),
        (Some(LoadGenerators::Go), Ok(_)) => vec![Generator::Go],
        (_, Ok(_)) => vec![Generator::Corekv, Generator::Go],
        (None | Some(LoadGenerators::Both), Err(_)) if a.load_generator.is_none() => {
            vec![Generator::Corekv]
        }
        (_, Err(why)) => return Err(format!("--load-generator both: {why}")),
    };

    let binaries = lineup.binaries();
    let Lineup {
        mut servers,
        etcd35,
        corekv_bin,
        ..
    } = lineup;
    if a.auth {
        servers.push(Server::new(
            COREKV_NO_AUTH,
            "corekv-noauth",
            corekv_bin,
            false,
        ));
    }
    // Which servers run with auth (all but the extra corekv of --auth).
    let with_auth = |s: &Server| a.auth && s.label != COREKV_NO_AUTH;

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
    let mut gen_text: Vec<String> = Vec::new();
    for g in &generators {
        gen_text.push(match g {
            Generator::Corekv => format!("corekv-bench ({bench_cores} client core(s))"),
            Generator::Go => format!(
                "corekv-go-bench (Go {} clientv3 3.4, {})",
                go_version(),
                go.as_ref()
                    .map_or(String::new(), |p| p.display().to_string())
            ),
        });
    }
    let _ = writeln!(
        head,
        "{binaries}; data dirs on {} ({}); load generator(s): {}, same machine; server CPUs: {}, \
         load generator CPUs: {}{}",
        parent.display(),
        fs_type(&parent),
        gen_text.join(" and "),
        cpus_text(&a.server_cpus),
        cpus_text(&a.client_cpus),
        if a.tls {
            "; mutual TLS on the client URLs (https://, ECDSA P-256 certificates, one CA)"
        } else {
            ""
        }
    );
    if a.auth {
        let _ = writeln!(
            head,
            "auth on every server but {COREKV_NO_AUTH} (--auth-token simple, the default): users \
             root and {user}, role {role} with readwrite on every key (\\x00 and up; not root, \
             so every request is checked); every load generator run gets a token of {user}'s \
             (compare authenticates before the run, outside the CPU measured) and sends it \
             with every request",
            user = crate::auth::BENCH_USER,
            role = crate::auth::BENCH_ROLE,
        );
    }
    if let (None, Err(why)) = (a.load_generator, &go) {
        let _ = writeln!(head, "WITHOUT the Go load generator: {why}");
    }
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

    // The certificates outlive every server of the run.
    let certs_dir = tempfile::Builder::new()
        .prefix("corekv-compare-tls-")
        .tempdir_in(&parent)
        .map_err(|e| format!("temp dir in {}: {e}", parent.display()))?;
    let (server_extra, tls_args) = if a.tls {
        let certs = BenchCerts::generate(certs_dir.path())?;
        certs.client.install()?;
        (certs.server_flags(), certs.client.args())
    } else {
        TlsFlags::default().install()?;
        (Vec::new(), Vec::new())
    };
    let mut ports = Vec::new();
    for s in &mut servers {
        eprintln!("starting {} ({} member(s)) ...", s.label, a.members);
        let spec = ClusterSpec {
            label: s.label,
            kind: s.kind,
            bin: &s.bin,
            members: a.members,
            extra: &server_extra,
            purpose: "compare",
            client_https: a.tls,
            cpus: &server_cpus,
        };
        match start_cluster(&spec, &parent, &mut ports, start_timeout) {
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
    for s in &mut servers {
        let Some(c) = &s.cluster else { continue };
        if with_auth(s) {
            if let Err(e) = crate::auth::set_up(&c.endpoints()) {
                let f = c.failure(format!("setting up auth: {e}"));
                s.fail(f)?;
            }
        }
    }

    // A server's first requests pay for one-time work (memory first touched, caches and
    // buffers grown); measure steady state. Every server gets the same warm-up.
    let gens = Generators {
        corekv_bench: me.clone(),
        go_bench: go.ok(),
        bench_cores,
        tls: tls_args,
        client_cpus,
    };
    let warm_up = warm_up_workload();
    eprintln!("  warm-up: {}", warm_up.args.join(" "));
    for s in &mut servers {
        let auth = with_auth(s);
        s.run(&gens, Generator::Corekv, &warm_up, 0, auth)?;
    }

    let mut runs: Vec<Run> = Vec::new();
    let started = Instant::now();
    for (wi, w) in ws.iter().enumerate() {
        for rep in 0..reps {
            for &g in &generators {
                let active: Vec<usize> = (0..servers.len())
                    .filter(|&i| servers[i].cluster.is_some())
                    .collect();
                for i in rotated(&active, wi + rep) {
                    let s = &mut servers[i];
                    if s.cluster.is_none() {
                        continue;
                    }
                    eprintln!(
                        "  {:<46} {:<8} {:<12} rep {} ...",
                        w.name,
                        s.label,
                        g.label(),
                        rep + 1
                    );
                    let auth = with_auth(s);
                    let Some(r) = s.run(&gens, g, w, rep, auth)? else {
                        continue;
                    };
                    eprintln!(
                    "    {:>9.0} {}  p50 {:.2} ms  p99 {:.2} ms  server CPU {:.2} s/100k  client {:.2} cores{}",
                    r.requests_per_sec,
                    r.counts.per_sec(),
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
    }
    let elapsed = started.elapsed().as_secs_f64();
    let t = report(
        &head,
        &servers,
        &ws,
        &generators,
        &runs,
        (reps, elapsed, a.members, a.auth),
        &server_extra,
    );
    print!("{t}");

    if let Some(path) = &a.out {
        let json = serde_json::to_string_pretty(&runs).expect("serializable");
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("raw results written to {}", path.display());
    }
    Ok(())
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
    generators: &[Generator],
    runs: &[Run],
    (reps, elapsed, members, auth): (usize, f64, usize, bool),
    server_extra: &[String],
) -> String {
    let ref_names: Vec<&str> = servers
        .iter()
        .filter(|s| s.label != COREKV)
        .map(|s| s.label)
        .collect();
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
    summary(&mut t, servers, ws, generators, runs);
    workload_notes(&mut t, ws);
    for &g in generators {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.generator == g).collect();
        let _ = writeln!(t, "\n### Load generator: {}\n", g.label());
        tables(&mut t, servers, ws, g, &rs);
    }
    write_failures(&mut t, servers);
    write_server_flags(&mut t, members, server_extra);
    if !server_extra.is_empty() {
        let _ = writeln!(
            t,
            "  (--tls: --listen-client-urls and --advertise-client-urls are https://; every load \
             generator run gets --cacert, --cert and --key with the run's CA and client \
             certificate)"
        );
    }
    write_etcd35_defaults(&mut t, servers);
    let _ = writeln!(t, "\nCommands (endpoints added per server):");
    for w in ws {
        for &g in generators {
            let bin = match g {
                Generator::Corekv => "corekv-bench --json",
                Generator::Go => "corekv-go-bench",
            };
            let leader = if w.target_leader && g == Generator::Corekv {
                " --target-leader"
            } else {
                ""
            };
            let user = if auth {
                format!(" {}", crate::auth::bench_user_args("<token>").join(" "))
            } else {
                String::new()
            };
            let _ = writeln!(t, "  {bin}{leader}{user} {}", w.args(g).join(" "));
        }
    }
    if auth {
        let _ = writeln!(
            t,
            "  (--user and --token only against the servers with auth, not against \
             {COREKV_NO_AUTH}; <token>: the bench user's, from an Authenticate compare makes \
             before each run, outside the CPU measured)"
        );
    }
    if generators.contains(&Generator::Go) && members > 1 {
        let _ = writeln!(
            t,
            "  (corekv-go-bench cannot find the leader: its connections go to every member in turn)"
        );
    }
    t
}

/// What the rows of workloads that do not count requests mean, and how the load generators'
/// ways of running a workload differ.
fn workload_notes(t: &mut String, ws: &[Workload]) {
    if ws.iter().any(|w| w.counts == Counts::Events) {
        let _ = writeln!(t, "\n{EVENTS_NOTE}");
    }
    for w in ws {
        if let Some(n) = w.note {
            let _ = writeln!(t, "\n{}: {n}", w.name);
        }
    }
}

/// One table over every load generator: req/s, p99 and server CPU per request, and corekv's
/// ratios to the strongest reference (etcd 3.5 when it ran, else etcd 3.4).
fn summary(
    t: &mut String,
    servers: &[Server],
    ws: &[Workload],
    generators: &[Generator],
    runs: &[Run],
) {
    let Some(corekv) = servers.iter().find(|s| s.label == COREKV) else {
        return;
    };
    let reference = servers
        .iter()
        .find(|s| s.label == ETCD35)
        .or_else(|| servers.iter().find(|s| s.label != COREKV));
    let Some(reference) = reference else {
        return;
    };
    let r = reference.label;
    let _ = writeln!(
        t,
        "Summary (server CPU in µs per request = utime + stime of the server processes / \
         requests, per event for the rows marked {EVENT_MARK}; ratios corekv / {r}):\n"
    );
    let mut header = vec!["load generator: workload".to_string()];
    header.extend(servers.iter().map(|s| format!("{} req/s", s.label)));
    header.push(format!("corekv / {r} req/s"));
    header.extend(servers.iter().map(|s| format!("{} p99 ms", s.label)));
    header.push(format!("corekv / {r} p99"));
    header.extend(servers.iter().map(|s| format!("{} CPU µs/req", s.label)));
    header.push(format!("corekv / {r} CPU"));
    let mut rows = Vec::new();
    for &g in generators {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.generator == g).collect();
        for w in ws {
            let cs: Vec<Option<Cell>> =
                servers.iter().map(|s| cell(&rs, s.label, w.name)).collect();
            let c = cell(&rs, corekv.label, w.name);
            let rc = cell(&rs, r, w.name);
            let ratio_of = |f: fn(&Cell) -> f64| match (&c, &rc) {
                (Some(c), Some(rc)) => ratio(f(c), f(rc)),
                _ => "n/a".into(),
            };
            let fmt = |f: &dyn Fn(&Cell) -> String| -> Vec<String> {
                cs.iter()
                    .map(|c| c.as_ref().map_or_else(|| "n/a".into(), f))
                    .collect()
            };
            let mut row = vec![format!("{}: {}", g.label(), w.label())];
            row.extend(fmt(&|c| fmt_rps(c)));
            row.push(ratio_of(|c| c.rps));
            row.extend(fmt(&|c| format!("{:.2}", c.p99)));
            row.push(ratio_of(|c| c.p99));
            // CPU s per 100k requests = 10 µs per request.
            row.extend(fmt(&|c| format!("{:.1}", c.cpu100k * 10.0)));
            row.push(ratio_of(|c| c.cpu100k));
            rows.push(row);
        }
    }
    md_table(t, &header, &rows);
}

/// One load generator's tables: requests/s and latency, server CPU, with kernel workers, and
/// the load generator's own CPU.
fn tables(t: &mut String, servers: &[Server], ws: &[Workload], g: Generator, runs: &[&Run]) {
    let ref_names: Vec<&str> = servers
        .iter()
        .filter(|s| s.label != COREKV)
        .map(|s| s.label)
        .collect();
    let cells = |w: &Workload| -> Vec<Option<Cell>> {
        servers
            .iter()
            .map(|s| cell(runs, s.label, w.name))
            .collect()
    };
    let corekv_at = servers.iter().position(|s| s.label == COREKV);
    // The workload column of the text lines.
    let width = ws
        .iter()
        .map(|w| w.label().chars().count())
        .max()
        .unwrap_or(0)
        .max(46);
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
    let events = ws.iter().any(|w| w.counts == Counts::Events);
    let _ = writeln!(
        t,
        "Requests/s and latency{}:\n",
        if events {
            " (rows marked (per event delivered): events delivered/s, put sent -> event received)"
        } else {
            ""
        }
    );
    let mut header = vec!["workload".to_string()];
    header.extend(servers.iter().map(|s| format!("{} req/s", s.label)));
    header.extend(ref_names.iter().map(|r| format!("corekv / {r} req/s")));
    header.extend(servers.iter().map(|s| format!("{} p50 / p99 ms", s.label)));
    let mut rows = Vec::new();
    for w in ws {
        let cs = cells(w);
        let mut row = vec![w.label()];
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
    md_table(t, &header, &rows);

    let _ = writeln!(
        t,
        "\nServer CPU (utime + stime of the server processes, all members; s/100k req{}):\n",
        if events {
            ", s/100k events delivered in the rows marked (per event delivered)"
        } else {
            ""
        }
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
        let mut row = vec![w.label()];
        for c in &cs {
            row.push(
                c.as_ref()
                    .map_or_else(|| "n/a".into(), |c| format!("{:.2}", c.cpu100k)),
            );
        }
        row.extend(ratios(&cs, |c| c.cpu100k));
        rows.push(row);
    }
    md_table(t, &header, &rows);

    let _ = writeln!(
        t,
        "\nServer CPU with the kernel worker threads added (kworker, ksoftirqd: machine-wide \
         CPU during the run, mostly finishing the server's disk I/O; CPU s/100k req, \
         server + workers = sum; ratios of the sums):"
    );
    let mut line = format!("  {:<width$}", "workload");
    for s in servers {
        let _ = write!(line, " {:<24}", s.label);
    }
    for r in &ref_names {
        let _ = write!(line, " {:<19}", format!("corekv / {r}"));
    }
    let _ = writeln!(t, "{}", line.trim_end());
    for w in ws {
        let cs = cells(w);
        let mut line = format!("  {:<width$}", w.label());
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

    let _ = match g {
        Generator::Corekv => writeln!(
            t,
            "\nLoad generator CPU (cores used during the run; it shares the machine with the \
             servers unless pinned; \"client-bound\" above = its busiest executor was over {:.0}% \
             busy, so give it more --client-cores):",
            CLIENT_BOUND * 100.0
        ),
        Generator::Go => writeln!(
            t,
            "\nLoad generator CPU (cores the Go process used during the run; it shares the \
             machine with the servers unless pinned):"
        ),
    };
    let mut line = format!("  {:<width$}", "workload");
    for s in servers {
        let _ = write!(line, " {:<30}", format!("vs {}", s.label));
    }
    let _ = writeln!(t, "{}", line.trim_end());
    for w in ws {
        let mut line = format!("  {:<width$}", w.label());
        for c in cells(w) {
            let v = c.map_or_else(
                || "n/a".into(),
                |c| match g {
                    Generator::Corekv => format!(
                        "{:.2} (busiest executor {:.0}%)",
                        c.client,
                        c.busiest * 100.0
                    ),
                    Generator::Go => format!("{:.2}", c.client),
                },
            );
            let _ = write!(line, " {v:<30}");
        }
        let _ = writeln!(t, "{}", line.trim_end());
    }
}
