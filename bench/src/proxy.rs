//! `corekv-bench proxy`: corekv's `corekv grpc-proxy start` in front of a corekv member beside
//! etcd 3.4's `etcd grpc-proxy start` in front of an etcd 3.4 member, in the same run.
//!
//! Watch fan-out: --watchers watchers (through the proxy) on --keys keys, fed by puts at --rate
//! written straight to the member (so the event path is member -> proxy -> watchers, and the
//! proxies' coalescing is what is measured). Reported: put-sent -> event-received latency at
//! each watcher, and the CPU the member and the proxy used per delivered event during the
//! measured phase (from /proc). Then serializable range throughput through each proxy.
//!
//! The pairs run one after the other (each alone on the machine), corekv's first on odd
//! --rounds and etcd's first on even ones, so drift on a shared machine hits both alike.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use corekv::client::Client;
use corekv::proto::etcdserverpb as pb;

use crate::run::Global;
use crate::servers::{self, dial, free_port, spawn_member, start_cluster, ClusterSpec};
use crate::stats::median;
use crate::unary::{self, Kind, Load};
use crate::watch::{self, CpuProbe};

#[derive(Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Watchers through each proxy.
    #[arg(long, default_value_t = 10_000)]
    pub watchers: usize,
    /// Watch streams the watchers are spread over.
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// HTTP/2 connections to each proxy (the streams are spread over them).
    #[arg(long, default_value_t = 10)]
    pub watch_conns: usize,
    /// Distinct keys watched (watcher w watches key w % this).
    #[arg(long, default_value_t = 10)]
    pub keys: usize,
    /// Puts per second, straight to the member.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Puts per round (at --rate: 1,000 puts = 10 s).
    #[arg(long, default_value_t = 1000)]
    pub puts: u64,
    /// How long to wait for missing events after the last put.
    #[arg(long, default_value = "20s", value_parser = crate::parse_duration)]
    pub wait: Duration,
    /// How long each proxy is read from with serializable ranges.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    pub range_duration: Duration,
    /// Concurrent readers (over 4 connections) of the range measurement.
    #[arg(long, default_value_t = 32)]
    pub range_clients: usize,
    /// Rounds (each runs both proxies).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// The etcd 3.4 binary (its `grpc-proxy start` is the reference proxy).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// The corekv binary (default: `corekv` next to this binary).
    #[arg(long)]
    pub corekv_bin: Option<PathBuf>,
    /// Where the members' data dirs go (a temp dir inside it, removed at the end).
    #[arg(long)]
    pub data_parent: Option<PathBuf>,
}

/// One proxy's figures for one round.
#[derive(Default, Clone, Debug)]
struct Row {
    label: &'static str,
    watchers_created: u64,
    events: u64,
    missing: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    member_cpu_s: f64,
    proxy_cpu_s: f64,
    ranges_per_s: f64,
    range_errors: u64,
    range_member_cpu_s: f64,
    range_proxy_cpu_s: f64,
}

impl Row {
    fn per_event_us(&self, cpu_s: f64) -> f64 {
        if self.events == 0 {
            f64::NAN
        } else {
            cpu_s * 1e6 / self.events as f64
        }
    }
}

/// A proxy process, killed when dropped.
struct ProxyProc(Child);

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn main(a: &ProxyArgs) -> i32 {
    match run(a) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("corekv-bench proxy: {e}");
            1
        }
    }
}

fn run(a: &ProxyArgs) -> Result<(), String> {
    if a.watchers == 0 || a.keys == 0 || a.streams == 0 || !a.watchers.is_multiple_of(a.streams) {
        return Err(
            "--watchers must be a positive multiple of --streams, --keys at least 1".into(),
        );
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let corekv = a
        .corekv_bin
        .clone()
        .unwrap_or_else(|| me.with_file_name("corekv"));
    if !corekv.is_file() {
        return Err(format!(
            "{} not found: build it (cargo build --release --bin corekv) or pass --corekv-bin",
            corekv.display()
        ));
    }
    let etcd_version =
        servers::first_line(std::process::Command::new(&a.etcd_bin).arg("--version"));
    let parent = a.data_parent.clone().unwrap_or_else(std::env::temp_dir);
    println!(
        "# corekv-bench proxy, {}; {}; load {}",
        servers::utc_now(),
        servers::machine(),
        servers::loadavg()
    );
    println!(
        "# {} watchers on {} streams over {} conns, {} keys; {} puts at {}/s to the member; \
         serializable ranges {:?} x {} clients; corekv: {}; etcd: {} ({etcd_version})",
        a.watchers,
        a.streams,
        a.watch_conns,
        a.keys,
        a.puts,
        a.rate,
        a.range_duration,
        a.range_clients,
        corekv.display(),
        a.etcd_bin.display()
    );
    let mut rows: Vec<Row> = Vec::new();
    for round in 0..a.rounds {
        let order: [(&'static str, &Path); 2] = if round % 2 == 0 {
            [("corekv", &corekv), ("etcd 3.4", &a.etcd_bin)]
        } else {
            [("etcd 3.4", &a.etcd_bin), ("corekv", &corekv)]
        };
        for (label, bin) in order {
            let row = one(a, label, bin, &parent, round)?;
            eprintln!("round {round}: {row:?}");
            rows.push(row);
        }
    }
    print_table(a, &rows);
    Ok(())
}

fn one(
    a: &ProxyArgs,
    label: &'static str,
    bin: &Path,
    parent: &Path,
    round: usize,
) -> Result<Row, String> {
    let mut ports = Vec::new();
    let kind = if label == "corekv" {
        "corekv"
    } else {
        "etcd34"
    };
    let spec = ClusterSpec {
        label,
        kind,
        bin,
        members: 1,
        extra: &[],
        purpose: "proxy",
        client_https: false,
        cpus: &[],
    };
    let mut cluster = start_cluster(&spec, parent, &mut ports, Duration::from_secs(60))
        .map_err(|f| format!("{label} member: {}\n{}", f.summary, f.logs))?;
    let member_ep = cluster.procs[0].endpoint.clone();
    let member_pid = cluster.pid(0);
    let proxy_port = free_port(&mut ports);
    let proxy_ep = format!("127.0.0.1:{proxy_port}");
    let log = cluster.dir().join("proxy.log");
    let args = vec![
        "grpc-proxy".to_string(),
        "start".to_string(),
        format!("--endpoints={member_ep}"),
        format!("--listen-addr={proxy_ep}"),
    ];
    let mut proxy = ProxyProc(spawn_member(bin, &args, &log, &[])?);
    let proxy_pid = proxy.0.id();
    ready(&proxy_ep, &mut proxy, &log)?;

    let g = |endpoint: &str, conns: usize, clients: usize| Global {
        endpoints: vec![endpoint.to_string()],
        conns,
        clients,
        client_cores: 1,
        target_leader: false,
        dial_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(60),
        seed: round as u64 + 1,
        progress: false,
    };

    // Watch fan-out.
    let probe = Arc::new(CpuProbe {
        pids: vec![member_pid, proxy_pid],
        ..Default::default()
    });
    let p = watch::Params {
        streams: a.streams,
        watchers_per_stream: a.watchers / a.streams,
        keys: a.keys,
        put_total: a.puts,
        put_rate: a.rate,
        put_clients: 1,
        val_size: 16,
        prev_kv: false,
        wait: a.wait,
        prefix: format!("/corekv-bench/proxy/{round}/{kind}/"),
        put_endpoint: Some(member_ep.clone()),
        cpu_probe: Some(probe.clone()),
    };
    let conns = a.watch_conns.clamp(1, a.streams);
    let out = watch::run(
        &g(&proxy_ep, conns, a.streams),
        std::slice::from_ref(&proxy_ep),
        p,
    )?;
    let ev = out.rec("event");
    let q = |x: f64| ev.hist.value_at_quantile(x) as f64 / 1000.0;
    let used = probe.used();
    let mut row = Row {
        label,
        watchers_created: out.counter("created"),
        events: ev.count(),
        missing: out.counter("missing"),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: ev.hist.max() as f64 / 1000.0,
        member_cpu_s: used[0],
        proxy_cpu_s: used[1],
        ..Default::default()
    };
    let put_errors = out.rec("put").error_count();
    if put_errors > 0 {
        return Err(format!("{label}: {put_errors} puts to the member failed"));
    }

    // Serializable range throughput: one key, written straight to the member first.
    let key = format!("/corekv-bench/proxy/range/{kind}");
    let (k2, ep2) = (key.clone(), member_ep.clone());
    corekv::client::run_local(move || async move {
        let c = Client::connect(dial(&ep2, Duration::from_secs(5), Duration::from_secs(10)))
            .await
            .map_err(|e| format!("{ep2}: {e}"))?;
        c.put(pb::PutRequest {
            key: k2.into_bytes().into(),
            value: vec![b'v'; 64].into(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("{ep2}: put: {e}"))?;
        Ok::<(), String>(())
    })?;
    let cpu = |pid: u32| crate::procstat::cpu_seconds(pid).unwrap_or(f64::NAN);
    let (m0, p0) = (cpu(member_pid), cpu(proxy_pid));
    let rkind = Kind::Range {
        key: key.into_bytes().into(),
        keys: None,
        end: Default::default(),
        serializable: true,
        limit: 0,
        count_only: false,
    };
    let load = Load {
        total: u64::MAX,
        duration: Some(a.range_duration),
        rate: 0.0,
    };
    let rout = unary::run(
        &g(&proxy_ep, 4, a.range_clients.max(1)),
        std::slice::from_ref(&proxy_ep),
        rkind,
        load,
    )?;
    row.range_member_cpu_s = cpu(member_pid) - m0;
    row.range_proxy_cpu_s = cpu(proxy_pid) - p0;
    let all = rout.rec("all");
    row.range_errors = all.error_count();
    row.ranges_per_s = all.count() as f64 / rout.duration.as_secs_f64().max(1e-9);

    cluster
        .check_alive()
        .map_err(|e| format!("{label} member died: {e}"))?;
    if let Some(st) = proxy.0.try_wait().map_err(|e| e.to_string())? {
        return Err(format!(
            "{label} proxy exited ({st}): {}",
            servers::log_tail(&log, 12).join("\n")
        ));
    }
    Ok(row)
}

/// Waits until a serializable read through the proxy succeeds (60 s at most).
fn ready(ep: &str, proxy: &mut ProxyProc, log: &Path) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let ep2 = ep.to_string();
        let ok = corekv::client::run_local(move || async move {
            let c = Client::connect(dial(
                &ep2,
                Duration::from_millis(500),
                Duration::from_secs(1),
            ))
            .await
            .ok()?;
            c.status().await.ok()
        })
        .is_some();
        if ok {
            return Ok(());
        }
        if let Ok(Some(st)) = proxy.0.try_wait() {
            return Err(format!(
                "the proxy at {ep} exited at start ({st}): {}",
                servers::log_tail(log, 12).join("\n")
            ));
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!("the proxy at {ep} did not answer within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A markdown table: per proxy the median over the rounds, and corekv / etcd ratios.
fn print_table(a: &ProxyArgs, rows: &[Row]) {
    let pick = |label: &str, f: &dyn Fn(&Row) -> f64| {
        median(rows.iter().filter(|r| r.label == label).map(f).collect())
    };
    type Metric = (&'static str, Box<dyn Fn(&Row) -> f64>);
    let metrics: Vec<Metric> = vec![
        ("watchers created", Box::new(|r| r.watchers_created as f64)),
        ("events delivered", Box::new(|r| r.events as f64)),
        ("events missing", Box::new(|r| r.missing as f64)),
        ("event latency p50 (ms)", Box::new(|r| r.p50_ms)),
        ("event latency p99 (ms)", Box::new(|r| r.p99_ms)),
        ("event latency max (ms)", Box::new(|r| r.max_ms)),
        (
            "member CPU per event (µs)",
            Box::new(|r| r.per_event_us(r.member_cpu_s)),
        ),
        (
            "proxy CPU per event (µs)",
            Box::new(|r| r.per_event_us(r.proxy_cpu_s)),
        ),
        (
            "member + proxy CPU per event (µs)",
            Box::new(|r| r.per_event_us(r.member_cpu_s + r.proxy_cpu_s)),
        ),
        ("serializable ranges/s", Box::new(|r| r.ranges_per_s)),
        ("range errors", Box::new(|r| r.range_errors as f64)),
        (
            "member CPU in the range run (s)",
            Box::new(|r| r.range_member_cpu_s),
        ),
        (
            "proxy CPU in the range run (s)",
            Box::new(|r| r.range_proxy_cpu_s),
        ),
    ];
    println!();
    println!(
        "| {} watchers, {} keys, {} puts/s (median of {} round(s)) | corekv proxy | etcd 3.4 proxy | corekv / etcd |",
        a.watchers, a.keys, a.rate, a.rounds
    );
    println!("|---|---:|---:|---:|");
    for (name, f) in &metrics {
        let c = pick("corekv", f.as_ref());
        let e = pick("etcd 3.4", f.as_ref());
        let ratio = if e != 0.0 && e.is_finite() && c.is_finite() {
            format!("{:.2}x", c / e)
        } else {
            "-".into()
        };
        println!("| {name} | {} | {} | {ratio} |", fmt(c), fmt(e));
    }
}

fn fmt(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x.fract() == 0.0 || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}
