//! corekv-bench: load generator for any etcd v3 endpoint (corekv or etcd), in the manner of
//! etcd's own `benchmark` tool, plus `compare`, which runs corekv, etcd 3.4 and etcd 3.5 side by
//! side, `failover`, which times their 3-member clusters' way to a new leader after the leader
//! is killed, and `catchup`, which times a member added to a cluster holding a lot of data
//! catching up, and what that costs the writes meanwhile, and `proxy`, which runs corekv's and
//! etcd 3.4's gRPC proxies side by side (watch fan-out latency and CPU per event, serializable
//! range throughput).

mod auth;
mod catchup;
mod compare;
mod etcd35;
mod failover;
mod lease;
mod procstat;
mod proxy;
mod run;
mod servers;
mod stats;
mod tls;
mod unary;
mod watch;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use run::{Global, Outcome};
use stats::Report;
use unary::{Keys, Kind, Load};

#[derive(Parser, Debug)]
#[command(
    name = "corekv-bench",
    version,
    about = "Benchmark any etcd v3 endpoint (corekv or etcd), like etcd's benchmark tool"
)]
struct Cli {
    /// Endpoints (host:port or http://host:port), comma separated.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    endpoints: Vec<String>,
    /// HTTP/2 connections.
    #[arg(long, global = true, default_value_t = 1)]
    conns: usize,
    /// Concurrent requesters, spread over the connections (client j uses connection j % conns).
    #[arg(long, global = true, default_value_t = 1)]
    clients: usize,
    /// Client executor threads (glommio, one per core given); connections spread over them.
    /// Default 1; for `compare`, every CPU of the machine.
    #[arg(long, global = true)]
    client_cores: Option<usize>,
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long, global = true)]
    json: bool,
    /// Send everything to the leader (found with Status on each endpoint).
    #[arg(long, global = true)]
    target_leader: bool,
    /// Limit for dialing one endpoint (e.g. 5s, 500ms).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    dial_timeout: Duration,
    /// Limit for one request; a request that takes longer counts as an error.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration)]
    command_timeout: Duration,
    /// Seed for keys and values (runs with the same seed send the same requests).
    #[arg(long, global = true, default_value_t = 1)]
    seed: u64,
    /// No progress bar (it is drawn on stderr only when stderr is a terminal anyway).
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(flatten)]
    tls: tls::TlsFlags,
    #[command(flatten)]
    auth: auth::AuthFlags,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// Total requests.
    #[arg(long, default_value_t = 10000)]
    total: u64,
    /// Run for this long instead of --total requests (e.g. 10s).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Maximum requests per second over all clients (0 = no limit).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

impl LoadArgs {
    fn load(&self) -> Load {
        Load {
            total: if self.duration.is_some() {
                u64::MAX
            } else {
                self.total
            },
            duration: self.duration,
            rate: self.rate,
        }
    }
}

#[derive(Args, Debug, Clone)]
struct KeyArgs {
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    val_size: usize,
    /// Distinct keys written (etcd's default, 1, writes one key over and over).
    #[arg(long, default_value_t = 1)]
    key_space_size: u64,
    /// Keys in order (request number modulo the key space) instead of at random.
    #[arg(long)]
    sequential_keys: bool,
}

impl KeyArgs {
    fn keys(&self) -> Result<Keys, String> {
        let k = Keys {
            key_size: self.key_size,
            key_space: self.key_space_size,
            sequential: self.sequential_keys,
        };
        k.check()?;
        Ok(k)
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Put requests.
    Put {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Range requests on one key, a range [key, end) or a prefix; or, with --key-space-size,
    /// on one key at a time of the put workload's keys (0 .. N-1, --key-size bytes).
    Range {
        /// Required unless --key-space-size is given.
        #[arg(required_unless_present = "key_space_size")]
        key: Option<String>,
        end: Option<String>,
        /// Read single keys of the put workload's layout, numbers below this, instead of KEY.
        #[arg(long, conflicts_with_all = ["key", "prefix"])]
        key_space_size: Option<u64>,
        /// With --key-space-size: key size in bytes.
        #[arg(long, default_value_t = 8, requires = "key_space_size")]
        key_size: usize,
        /// With --key-space-size: keys in order instead of at random.
        #[arg(long, requires = "key_space_size")]
        sequential_keys: bool,
        /// Range over every key starting with KEY.
        #[arg(long, conflicts_with = "end")]
        prefix: bool,
        /// l (linearizable) or s (serializable).
        #[arg(long, default_value = "l")]
        consistency: String,
        /// At most this many keys per reply (0 = all).
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Ask for the count only.
        #[arg(long)]
        count_only: bool,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Txn requests, each putting --txn-ops keys.
    TxnPut {
        /// Puts per txn (distinct consecutive keys).
        #[arg(long, default_value_t = 1)]
        txn_ops: usize,
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// A mix of txn reads (a range over [key, end)) and txn writes (a put of a random key).
    TxnMixed {
        key: String,
        end: Option<String>,
        /// Reads per write.
        #[arg(long, default_value_t = 1.0)]
        rw_ratio: f64,
        /// l (linearizable) or s (serializable) reads.
        #[arg(long, default_value = "l")]
        consistency: String,
        /// Range limit of the reads.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Many watchers on many streams, fed by puts: events delivered per second.
    Watch {
        /// Watch streams (spread over the connections).
        #[arg(long, default_value_t = 10)]
        streams: usize,
        /// Watchers on each stream.
        #[arg(long, default_value_t = 10)]
        watchers_per_stream: usize,
        /// Distinct keys watched (watcher w watches key w % this).
        #[arg(long, default_value_t = 10)]
        watched_key_total: usize,
        /// Puts (round-robin over the watched keys).
        #[arg(long, default_value_t = 10000)]
        put_total: u64,
        /// Puts per second (0 = as fast as they are answered).
        #[arg(long, default_value_t = 0.0)]
        put_rate: f64,
        /// Concurrent put clients (spread over the connections).
        #[arg(long, default_value_t = 10)]
        put_clients: usize,
        /// Value size (at least 8: the value carries the put's send time).
        #[arg(long, default_value_t = 16)]
        val_size: usize,
        /// Watch with prev_kv.
        #[arg(long)]
        prev_kv: bool,
        /// How long to wait for missing events after the last put.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        wait: Duration,
    },
    /// Put-to-event latency with N watchers of one key.
    WatchLatency {
        /// Watchers of the key.
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        /// Watch streams the watchers are spread over (default: one per watcher).
        #[arg(long)]
        streams: Option<usize>,
        /// Puts.
        #[arg(long, default_value_t = 1000)]
        put_total: u64,
        /// Puts per second.
        #[arg(long, default_value_t = 100.0)]
        put_rate: f64,
        /// Value size (at least 8).
        #[arg(long, default_value_t = 32)]
        val_size: usize,
        /// Watch with prev_kv.
        #[arg(long)]
        prev_kv: bool,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        wait: Duration,
    },
    /// Lease keep-alives: each client renews its own lease on its own stream, back to back.
    LeaseKeepalive {
        /// TTL of the leases granted for the run.
        #[arg(long, default_value_t = 60)]
        ttl: i64,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Start etcd 3.4, etcd 3.5 and corekv side by side and run the same workloads against all.
    Compare(compare::CompareArgs),
    /// Start 3-member clusters of etcd 3.4, etcd 3.5 and corekv, SIGKILL each one's leader
    /// again and again, and time the way to a new leader and to the first write.
    Failover(failover::FailoverArgs),
    /// Fill a cluster of etcd 3.4, etcd 3.5 and corekv in turn with --data-size of data, add a
    /// member under a steady write load, and time its catch-up and the load's dip.
    Catchup(catchup::CatchupArgs),
    /// corekv's grpc-proxy in front of a corekv member beside etcd 3.4's grpc-proxy in front of
    /// an etcd 3.4 member: watch fan-out latency and CPU per event, serializable range throughput.
    Proxy(proxy::ProxyArgs),
}

/// "10s", "500ms", "2m", "1.5s", or plain seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "us" | "µs" => n / 1e6,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s or m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn consistency(c: &str) -> Result<bool, String> {
    match c {
        "l" => Ok(false),
        "s" => Ok(true),
        other => Err(format!(
            "--consistency must be l or s (linearizable or serializable), not {other:?}"
        )),
    }
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("corekv-bench: {msg}");
    std::process::exit(1);
}

fn main() {
    let cli = Cli::parse();
    // compare sets up its own TLS (--tls) for the servers it starts.
    if !matches!(cli.cmd, Cmd::Compare(_)) {
        cli.tls.install().unwrap_or_else(|e| fail(e));
    }
    // compare, failover and catchup set up their own servers (compare --auth its own users).
    if cli.auth.user.is_some() || cli.auth.token.is_some() {
        if matches!(
            cli.cmd,
            Cmd::Compare(_) | Cmd::Failover(_) | Cmd::Catchup(_) | Cmd::Proxy(_)
        ) {
            fail(
                "--user and --token are for workloads against running servers (compare has --auth)",
            );
        }
        cli.auth.install(&cli.endpoints).unwrap_or_else(|e| fail(e));
    }
    if let Cmd::Compare(args) = &cli.cmd {
        let code = compare::main(args, cli.client_cores);
        std::process::exit(code);
    }
    if let Cmd::Failover(args) = &cli.cmd {
        std::process::exit(failover::main(args, cli.json));
    }
    if let Cmd::Catchup(args) = &cli.cmd {
        std::process::exit(catchup::main(args, cli.json));
    }
    if let Cmd::Proxy(args) = &cli.cmd {
        std::process::exit(proxy::main(args));
    }
    let client_cores = cli.client_cores.unwrap_or(1);
    if cli.conns == 0 || cli.clients == 0 || client_cores == 0 {
        fail("--conns, --clients and --client-cores must be at least 1");
    }
    let g = Global {
        endpoints: cli.endpoints.clone(),
        conns: cli.conns,
        clients: cli.clients,
        client_cores,
        target_leader: cli.target_leader,
        dial_timeout: cli.dial_timeout,
        command_timeout: cli.command_timeout,
        seed: cli.seed,
        progress: !cli.no_progress,
    };
    let probe = run::probe(&g).unwrap_or_else(|e| fail(e));
    let report = match workload(&cli.cmd, &g, &probe.endpoints) {
        Ok(r) => r,
        Err(e) => fail(e),
    };
    let (mut report, main_rec) = report;
    report.endpoints = probe.endpoints.clone();
    report.conns = g.conns;
    report.clients = g.clients;
    report.server_version = probe.server_version;
    if cli.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text(&main_rec));
    }
}

fn finish(name: &str, out: &Outcome, main: &str) -> (Report, stats::Recorder) {
    let rec = out.rec(main);
    let mut r = Report::new(name, &rec, out.duration);
    r.client_cpu = out.client_cpu.clone();
    (r, rec)
}

fn workload(cmd: &Cmd, g: &Global, eps: &[String]) -> Result<(Report, stats::Recorder), String> {
    match cmd {
        Cmd::Put { load, keys } => {
            let kind = Kind::Put {
                keys: keys.keys()?,
                value: unary::random_bytes(keys.val_size, g.seed).into(),
            };
            let out = unary::run(g, eps, kind, load.load())?;
            Ok(finish("put", &out, "all"))
        }
        Cmd::Range {
            key,
            end,
            key_space_size,
            key_size,
            sequential_keys,
            prefix,
            consistency: c,
            limit,
            count_only,
            load,
        } => {
            let key = key.clone().unwrap_or_default();
            let end = if *prefix {
                corekv::client::prefix_range_end(key.as_bytes())
            } else {
                end.clone().unwrap_or_default().into_bytes()
            };
            let keys = match key_space_size {
                Some(n) => {
                    let k = Keys {
                        key_size: *key_size,
                        key_space: *n,
                        sequential: *sequential_keys,
                    };
                    k.check()?;
                    Some(k)
                }
                None => None,
            };
            let kind = Kind::Range {
                key: key.into_bytes().into(),
                keys,
                end: end.into(),
                serializable: consistency(c)?,
                limit: *limit,
                count_only: *count_only,
            };
            let out = unary::run(g, eps, kind, load.load())?;
            Ok(finish("range", &out, "all"))
        }
        Cmd::TxnPut {
            txn_ops,
            load,
            keys,
        } => {
            let k = keys.keys()?;
            if *txn_ops == 0 || *txn_ops as u64 > k.key_space {
                return Err(format!(
                    "--txn-ops must be between 1 and --key-space-size ({})",
                    k.key_space
                ));
            }
            let kind = Kind::TxnPut {
                keys: k,
                value: unary::random_bytes(keys.val_size, g.seed).into(),
                ops: *txn_ops,
            };
            let out = unary::run(g, eps, kind, load.load())?;
            let (mut r, rec) = finish("txn-put", &out, "all");
            r.extra("txn_ops", txn_ops);
            Ok((r, rec))
        }
        Cmd::TxnMixed {
            key,
            end,
            rw_ratio,
            consistency: c,
            limit,
            load,
            keys,
        } => {
            if rw_ratio.is_nan() || *rw_ratio < 0.0 {
                return Err("--rw-ratio must be >= 0".into());
            }
            let kind = Kind::TxnMixed {
                keys: keys.keys()?,
                value: unary::random_bytes(keys.val_size, g.seed).into(),
                key: key.clone().into_bytes().into(),
                end: end.clone().unwrap_or_default().into_bytes().into(),
                serializable: consistency(c)?,
                limit: *limit,
                rw_ratio: *rw_ratio,
            };
            let out = unary::run(g, eps, kind, load.load())?;
            let (mut r, rec) = finish("txn-mixed", &out, "all");
            let (read, write) = (out.rec("read"), out.rec("write"));
            r.extra("read", stats::Latency::of(&read));
            r.extra("write", stats::Latency::of(&write));
            r.sections.push(("Read summary".into(), read));
            r.sections.push(("Write summary".into(), write));
            Ok((r, rec))
        }
        Cmd::Watch {
            streams,
            watchers_per_stream,
            watched_key_total,
            put_total,
            put_rate,
            put_clients,
            val_size,
            prev_kv,
            wait,
        } => {
            if *streams == 0 || *watchers_per_stream == 0 || *watched_key_total == 0 {
                return Err(
                    "--streams, --watchers-per-stream and --watched-key-total must be at least 1"
                        .into(),
                );
            }
            let p = watch::Params {
                streams: *streams,
                watchers_per_stream: *watchers_per_stream,
                keys: *watched_key_total,
                put_total: *put_total,
                put_rate: *put_rate,
                put_clients: (*put_clients).max(1),
                val_size: *val_size,
                prev_kv: *prev_kv,
                wait: *wait,
                prefix: run_prefix("watch", g.seed),
                put_endpoint: None,
                cpu_probe: None,
            };
            watch_report("watch", g, eps, p)
        }
        Cmd::WatchLatency {
            watchers,
            streams,
            put_total,
            put_rate,
            val_size,
            prev_kv,
            wait,
        } => {
            let streams = streams.unwrap_or(*watchers).clamp(1, (*watchers).max(1));
            if *watchers == 0 || watchers % streams != 0 {
                return Err("--watchers must be a positive multiple of --streams".into());
            }
            let p = watch::Params {
                streams,
                watchers_per_stream: watchers / streams,
                keys: 1,
                put_total: *put_total,
                put_rate: *put_rate,
                put_clients: 1,
                val_size: *val_size,
                prev_kv: *prev_kv,
                wait: *wait,
                prefix: run_prefix("watch-latency", g.seed),
                put_endpoint: None,
                cpu_probe: None,
            };
            watch_report("watch-latency", g, eps, p)
        }
        Cmd::LeaseKeepalive { ttl, load } => {
            let out = lease::run(g, eps, load.load(), *ttl)?;
            Ok(finish("lease-keepalive", &out, "all"))
        }
        Cmd::Compare(_) | Cmd::Failover(_) | Cmd::Catchup(_) | Cmd::Proxy(_) => {
            unreachable!("handled in main")
        }
    }
}

/// A key prefix no earlier run used (watchers must see only this run's puts).
fn run_prefix(what: &str, seed: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("/corekv-bench/{what}/{t:x}-{seed}/")
}

fn watch_report(
    name: &str,
    g: &Global,
    eps: &[String],
    p: watch::Params,
) -> Result<(Report, stats::Recorder), String> {
    let watchers = p.watchers();
    let out = watch::run(g, eps, p.clone())?;
    let (mut r, rec) = finish(name, &out, "event");
    let create_s = out.counter("create_us") as f64 / 1e6;
    let put = out.rec("put");
    r.extra("watchers", watchers);
    r.extra("streams", p.streams);
    r.extra("watchers_created", out.counter("created"));
    r.extra("watch_create_s", create_s);
    r.extra(
        "watch_creates_per_sec",
        if create_s > 0.0 {
            watchers as f64 / create_s
        } else {
            0.0
        },
    );
    r.extra("events_expected", p.expected_total());
    r.extra("events_missing", out.counter("missing"));
    r.extra("puts", put.count());
    r.extra("put", stats::Latency::of(&put));
    r.notes.push(format!(
        "{watchers} watchers on {} streams created in {create_s:.3} s; {} events expected, {} missing; \
         requests/sec above = events delivered per second (latency = put sent -> event received)",
        p.streams,
        p.expected_total(),
        out.counter("missing")
    ));
    r.sections.push(("Put summary".into(), put));
    Ok((r, rec))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("x").is_err());
    }
}
