//! `corekv-bench failover`: how long a 3-member cluster of each server (etcd 3.4, etcd 3.5 when
//! it can be found or installed, corekv) has no leader, and takes no writes, after its leader
//! is killed with SIGKILL. The servers are started as `compare` starts them (same flags, fresh
//! data dirs, free ports) and measured the same way, taking turns.
//!
//! One rep, for one server: wait until the cluster is healthy (every member answers Maintenance
//! Status naming the same leader, one of them); with --load, start one client putting in a loop
//! through a follower; SIGKILL the leader; poll both survivors' Status every --poll-interval
//! until both name the same new leader (not 0, not the killed member): that instant minus the
//! kill instant is the time to a new leader. From the kill on, a put is also sent every 10 ms,
//! alternately through each survivor (each put with its own 2 s limit); the first to succeed
//! gives the time to the first write. Then the killed member is restarted with its data dir
//! and the cluster must become healthy again before the next rep. Who goes first rotates each
//! rep, as in compare.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use corekv::client::{Client, ClientError, ClientOptions};
use corekv::proto::etcdserverpb as pb;
use serde::Serialize;

use crate::servers::{
    dial, exit_code, json_servers, loadavg, md, md_table, put_loop, shorten, start_cluster, turn,
    utc_stamp, wait_ready, write_etcd35_defaults, write_failures, write_notes, write_server_flags,
    ClusterSpec, Failure, Prologue, Server, ServerBins, ETCD34, STATUS_LIMIT,
};
use crate::stats::median;

#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    #[command(flatten)]
    bins: ServerBins,
    /// Leader kills per server (the servers take turns, rotating who goes first).
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// --heartbeat-interval (ms) for every member of every server. Default: not passed, so
    /// each server's own default (100 ms for all three).
    #[arg(long)]
    heartbeat_interval: Option<u64>,
    /// --election-timeout (ms) for every member of every server. Default: not passed, so each
    /// server's own default (1000 ms for all three).
    #[arg(long)]
    election_timeout: Option<u64>,
    /// Keep one client putting in a loop (256-byte values, one put at a time) through a
    /// follower while the leader is killed.
    #[arg(long)]
    load: bool,
    /// How often the survivors' Status is polled after the kill (1ms to 100ms).
    #[arg(long, default_value = "5ms", value_parser = crate::parse_duration)]
    poll_interval: Duration,
    /// How long a cluster may take to become healthy, at the start and after each restart.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    start_timeout: Duration,
    /// How long after a kill the survivors may take to agree on a new leader and to take a
    /// put; a server that takes longer gets no more reps (n/a, with its logs). Default: 30 s
    /// or 20 election timeouts, whichever is longer.
    #[arg(long, value_parser = crate::parse_duration)]
    failover_timeout: Option<Duration>,
    /// Where the servers' data dirs go (a fresh temporary dir inside it).
    #[arg(long)]
    data_parent: Option<PathBuf>,
    /// Copy every member's log here at the end (<server>-m<i>.log). Each kill, new leader,
    /// first write and restart is marked in the logs by a "corekv-bench failover:" line with
    /// the UTC time.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
}

const MEMBERS: usize = 3;
/// The servers' defaults (etcd 3.4, etcd 3.5 and corekv alike).
const DEFAULT_HEARTBEAT_MS: u64 = 100;
const DEFAULT_ELECTION_MS: u64 = 1000;
/// After the kill a put is sent this often, alternately through each survivor.
const WRITE_EVERY: Duration = Duration::from_millis(10);
/// Each put's own limit (the probes' and the load's).
const WRITE_LIMIT: Duration = Duration::from_secs(2);
/// Once healthy again after a restart, the cluster is left alone this long.
const SETTLE: Duration = Duration::from_secs(1);
/// Tries per rep when the leader moves between finding it and killing it.
const TRIES: usize = 3;
const PROBE_KEY: &[u8] = b"corekv-bench/failover/probe";

/// One kill.
#[derive(Clone, Debug, Serialize)]
struct Sample {
    server: &'static str,
    /// 1-based.
    rep: usize,
    /// When the SIGKILL was sent (wall clock, to the millisecond).
    killed_at_utc: String,
    killed: String,
    killed_id: String,
    /// Raft term as the survivors' Status reports it before the kill and after the first
    /// write.
    term_before: u64,
    new_leader: String,
    new_leader_id: String,
    term_after: u64,
    /// Kill -> both survivors' Status name the new leader.
    new_leader_ms: f64,
    status_polls: u64,
    /// Kill -> the first put through a survivor succeeds.
    first_write_ms: f64,
    first_write_via: String,
    write_attempts: u64,
    /// The --load client's puts during this rep.
    load: Option<LoadStats>,
    /// Restart of the killed member -> healthy again.
    restart_to_healthy_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
struct LoadStats {
    via: String,
    puts: u64,
    errors: u64,
    longest_put_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
struct Summary {
    samples: usize,
    median: f64,
    p90: f64,
    min: f64,
    max: f64,
}

/// Median, p90 (nearest rank), min and max; None without samples.
fn summarize(v: &[f64]) -> Option<Summary> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    let rank = ((0.9 * n as f64).ceil() as usize).clamp(1, n);
    Some(Summary {
        samples: n,
        median: median(s.clone()),
        p90: s[rank - 1],
        min: s[0],
        max: s[n - 1],
    })
}

/// The timing every member runs with, and the flags that set it (none by default).
struct Timing {
    heartbeat_ms: u64,
    election_ms: u64,
    flags: Vec<String>,
}

impl Timing {
    fn of(a: &FailoverArgs) -> Result<Timing, String> {
        let heartbeat_ms = a.heartbeat_interval.unwrap_or(DEFAULT_HEARTBEAT_MS);
        let election_ms = a.election_timeout.unwrap_or(DEFAULT_ELECTION_MS);
        if heartbeat_ms == 0 || election_ms < 5 * heartbeat_ms {
            return Err(format!(
                "--election-timeout ({election_ms} ms) must be at least 5 times \
                 --heartbeat-interval ({heartbeat_ms} ms), as etcd and corekv require"
            ));
        }
        let mut flags = Vec::new();
        if let Some(h) = a.heartbeat_interval {
            flags.push(format!("--heartbeat-interval={h}"));
        }
        if let Some(e) = a.election_timeout {
            flags.push(format!("--election-timeout={e}"));
        }
        Ok(Timing {
            heartbeat_ms,
            election_ms,
            flags,
        })
    }

    fn describe(&self) -> String {
        let what = format!(
            "heartbeat {} ms, election timeout {} ms",
            self.heartbeat_ms, self.election_ms
        );
        if self.flags.is_empty() {
            format!("{what} (the servers' defaults; no timing flags passed)")
        } else {
            format!("{what} (passed to every member: {})", self.flags.join(" "))
        }
    }
}

/// Whether the server runs raft with pre-vote (with the flags failover gives it).
fn pre_vote(label: &str) -> bool {
    label != ETCD34
}

/// The --load client: one put at a time through one member, on its own thread.
struct LoadRun {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<LoadStats, String>>,
}

impl LoadRun {
    /// Starts putting through `name` at `endpoint`; returns once the first puts succeeded.
    fn start(name: &str, endpoint: &str) -> Result<LoadRun, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let puts = Arc::new(AtomicU64::new(0));
        let (stop2, puts2) = (stop.clone(), puts.clone());
        let (name, ep) = (name.to_string(), endpoint.to_string());
        let thread = std::thread::spawn(move || {
            corekv::client::run_local(move || async move {
                let c = Client::connect(dial(&ep, Duration::from_secs(2), WRITE_LIMIT))
                    .await
                    .map_err(|e| format!("load: {name} at {ep}: {e}"))?;
                let value = bytes::Bytes::from(vec![b'v'; 256]);
                let mut st = LoadStats {
                    via: name,
                    puts: 0,
                    errors: 0,
                    longest_put_ms: 0.0,
                };
                let key = |n| format!("corekv-bench/failover/load/{}", n % 1000);
                put_loop(&c, &stop2, key, value, |r, took_ms| {
                    st.longest_put_ms = st.longest_put_ms.max(took_ms);
                    match r {
                        Ok(()) => {
                            st.puts += 1;
                            puts2.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => st.errors += 1,
                    }
                })
                .await;
                Ok(st)
            })
        });
        let run = LoadRun { stop, thread };
        let going = wait_ready(
            Duration::from_secs(5),
            || !run.thread.is_finished(),
            || puts.load(Ordering::Relaxed) >= 10,
        );
        if !going {
            let why = run
                .stop()
                .err()
                .unwrap_or_else(|| "its first 10 puts took over 5 s".into());
            return Err(format!("the --load client did not get going: {why}"));
        }
        Ok(run)
    }

    fn stop(self) -> Result<LoadStats, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "the --load client panicked".to_string())?
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What one kill measured.
struct Measured {
    /// Wall-clock time of the kill.
    killed_at: SystemTime,
    term_before: u64,
    new_leader: u64,
    term_after: u64,
    new_leader_at: Duration,
    polls: u64,
    first_write_at: Duration,
    /// Index into the survivors.
    first_write_via: usize,
    write_attempts: u64,
}

enum MeasureError {
    /// The survivors no longer follow the member about to be killed (nothing was killed).
    LeaderMoved(String),
    Failed(String),
}

fn dial_one(ep: &str, limit: Duration) -> ClientOptions {
    dial(ep, Duration::from_millis(500), limit)
}

/// Checks that both `survivors` (name, endpoint) still follow `leader`, kills it (`pid`) and
/// measures the time to a new leader and to the first write.
fn measure(
    pid: u32,
    leader: u64,
    survivors: Vec<(String, String)>,
    poll: Duration,
    limit: Duration,
) -> Result<Measured, MeasureError> {
    corekv::client::run_local(move || async move {
        let fail = MeasureError::Failed;
        let mut status = Vec::new();
        let mut puts = Vec::new();
        let mut term_before = 0;
        for (name, ep) in &survivors {
            let c = Client::connect(dial_one(ep, STATUS_LIMIT))
                .await
                .map_err(|e| fail(format!("{name} at {ep}: {e}")))?;
            let st = c
                .status()
                .await
                .map_err(|e| fail(format!("{name} at {ep}: Status: {e}")))?;
            if st.leader != leader {
                return Err(MeasureError::LeaderMoved(format!(
                    "{name} names {:x}, not {leader:x}",
                    st.leader
                )));
            }
            term_before = term_before.max(st.raft_term);
            status.push(c);
            puts.push(
                Client::connect(dial_one(ep, WRITE_LIMIT))
                    .await
                    .map_err(|e| fail(format!("{name} at {ep}: {e}")))?,
            );
        }
        // SAFETY: kill(2) of our own child, not reaped yet (so the pid is still its).
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(fail(format!("kill -KILL {pid}: {e}")));
        }
        let t0 = Instant::now();
        let killed_at = SystemTime::now();
        let writes = glommio::spawn_local(first_write(puts, t0, limit));
        let names: Vec<String> = survivors.iter().map(|(n, _)| n.clone()).collect();
        let found = new_leader(&status, &names, leader, t0, poll, limit).await;
        let written = writes.await;
        let (new_leader_at, new_leader, mut term_after, polls) = found.map_err(fail)?;
        let (first_write_at, first_write_via, write_attempts) = written.map_err(fail)?;
        // etcd's Status reports the term of the last applied entry, which can trail the
        // election; by now the survivor that took the write has applied the new term's entry.
        for c in &status {
            if let Ok(st) = c.status().await {
                term_after = term_after.max(st.raft_term);
            }
        }
        Ok(Measured {
            killed_at,
            term_before,
            new_leader,
            term_after,
            new_leader_at,
            polls,
            first_write_at,
            first_write_via,
            write_attempts,
        })
    })
}

/// Polls both survivors' Status every `poll` until they name the same leader, not 0 and not
/// `killed`: (time since `t0`, leader, term, polls).
async fn new_leader(
    clients: &[Client],
    names: &[String],
    killed: u64,
    t0: Instant,
    poll: Duration,
    limit: Duration,
) -> Result<(Duration, u64, u64, u64), String> {
    let seen = |name: &str, r: &Result<pb::StatusResponse, ClientError>| match r {
        Ok(s) => format!("{name}: leader {:x}, term {}", s.leader, s.raft_term),
        Err(e) => format!("{name}: {e}"),
    };
    let mut polls = 0;
    loop {
        let tick = Instant::now();
        let (a, b) = futures_lite::future::zip(clients[0].status(), clients[1].status()).await;
        polls += 1;
        let at = t0.elapsed();
        if let (Ok(x), Ok(y)) = (&a, &b) {
            if x.leader != 0 && x.leader != killed && x.leader == y.leader {
                return Ok((at, x.leader, x.raft_term.max(y.raft_term), polls));
            }
        }
        if at > limit {
            return Err(format!(
                "the survivors did not agree on a new leader within {:.0} s of the kill \
                 (last Status: {}; {})",
                limit.as_secs_f64(),
                seen(&names[0], &a),
                seen(&names[1], &b)
            ));
        }
        let next = tick + poll;
        let now = Instant::now();
        if next > now {
            glommio::timer::sleep(next - now).await;
        }
    }
}

/// Sends a put every WRITE_EVERY, alternately through each client, until one succeeds:
/// (time since `t0` of that success, index of its client, puts sent).
async fn first_write(
    clients: Vec<Client>,
    t0: Instant,
    limit: Duration,
) -> Result<(Duration, usize, u64), String> {
    let first: Rc<Cell<Option<(Duration, usize)>>> = Rc::new(Cell::new(None));
    let last_error = Rc::new(RefCell::new(String::from("none")));
    // Dropped (so cancelled) on return.
    let mut in_flight = Vec::new();
    let mut sent = 0u64;
    loop {
        if let Some((at, via)) = first.get() {
            return Ok((at, via, sent));
        }
        if t0.elapsed() > limit {
            return Err(format!(
                "no put through a survivor succeeded within {:.0} s of the kill ({sent} sent; \
                 last error: {})",
                limit.as_secs_f64(),
                last_error.borrow()
            ));
        }
        let via = (sent % clients.len() as u64) as usize;
        let (c, first, last_error) = (clients[via].clone(), first.clone(), last_error.clone());
        in_flight.push(glommio::spawn_local(async move {
            let req = pb::PutRequest {
                key: bytes::Bytes::from_static(PROBE_KEY),
                value: bytes::Bytes::from_static(b"written after the kill"),
                ..Default::default()
            };
            match c.put(req).await {
                Ok(_) => {
                    if first.get().is_none() {
                        first.set(Some((t0.elapsed(), via)));
                    }
                }
                Err(e) => *last_error.borrow_mut() = e.to_string(),
            }
        }));
        sent += 1;
        glommio::timer::sleep(WRITE_EVERY).await;
    }
}

/// One kill and restart of `s`'s leader.
fn one_rep(
    s: &mut Server,
    rep: usize,
    a: &FailoverArgs,
    limit: Duration,
) -> Result<Sample, Failure> {
    let label = s.label;
    let c = s.cluster.as_mut().expect("a running server");
    let mut moved = Vec::new();
    for _ in 0..TRIES {
        let h = c.wait_healthy(a.start_timeout)?;
        let li = h.leader_index();
        let survivors: Vec<usize> = (0..c.procs.len()).filter(|&i| i != li).collect();
        let load = if a.load {
            let p = &c.procs[survivors[0]];
            Some(LoadRun::start(&p.name, &p.endpoint).map_err(|e| c.failure(e))?)
        } else {
            None
        };
        let killed = c.procs[li].name.clone();
        // The kill itself comes a few ms later (the survivors are dialed and asked first); its
        // exact time is in the next mark.
        c.mark(
            "failover",
            &format!(
                "{label} rep {rep}: about to SIGKILL {killed} (leader {:x})",
                h.leader,
                rep = rep + 1
            ),
        );
        let r = measure(
            c.pid(li),
            h.leader,
            survivors
                .iter()
                .map(|&i| (c.procs[i].name.clone(), c.procs[i].endpoint.clone()))
                .collect(),
            a.poll_interval,
            limit,
        );
        let load = match load.map(LoadRun::stop).transpose() {
            Ok(l) => l,
            Err(e) => return Err(c.failure(e)),
        };
        let m = match r {
            Ok(m) => m,
            Err(MeasureError::LeaderMoved(why)) => {
                eprintln!("  {label}: the leader moved before the kill ({why}); again");
                c.mark(
                    "failover",
                    &format!("{label}: not killed after all: the leader moved"),
                );
                moved.push(why);
                continue;
            }
            Err(MeasureError::Failed(why)) => {
                c.mark("failover", &why);
                return Err(c.failure(format!("rep {}: {why}", rep + 1)));
            }
        };
        let name_of = |id: u64| {
            h.ids
                .iter()
                .position(|&x| x == id)
                .map_or_else(|| format!("{id:x}"), |i| c.procs[i].name.clone())
        };
        let new_leader = name_of(m.new_leader);
        let via = c.procs[survivors[m.first_write_via]].name.clone();
        let killed_at_utc = utc_stamp(m.killed_at);
        c.mark(
            "failover",
            &format!(
                "{label} rep {}: {killed} was killed at {killed_at_utc}; new leader {new_leader} \
                 {:.0} ms after the kill, first write (via {via}) {:.0} ms after it; restarting \
                 {killed}",
                rep + 1,
                ms(m.new_leader_at),
                ms(m.first_write_at)
            ),
        );
        let restarted = Instant::now();
        c.restart(li).map_err(|e| c.failure(e))?;
        c.wait_healthy(a.start_timeout).map_err(|f| Failure {
            summary: format!("after restarting {killed}: {}", f.summary),
            logs: f.logs,
        })?;
        let restart_to_healthy = restarted.elapsed();
        c.mark(
            "failover",
            &format!("{label} rep {}: healthy again", rep + 1),
        );
        std::thread::sleep(SETTLE);
        return Ok(Sample {
            server: label,
            rep: rep + 1,
            killed_at_utc,
            killed,
            killed_id: format!("{:x}", h.leader),
            term_before: m.term_before,
            new_leader,
            new_leader_id: format!("{:x}", m.new_leader),
            term_after: m.term_after,
            new_leader_ms: ms(m.new_leader_at),
            status_polls: m.polls,
            first_write_ms: ms(m.first_write_at),
            first_write_via: via,
            write_attempts: m.write_attempts,
            load,
            restart_to_healthy_ms: ms(restart_to_healthy),
        });
    }
    Err(c.failure(format!(
        "rep {}: the leader moved between finding and killing it {TRIES} times ({})",
        rep + 1,
        moved.join("; ")
    )))
}

/// This server gets no more reps (even the etcd 3.4 reference: the others' numbers still
/// get printed); its logs are kept first if asked.
fn write_off(s: &mut Server, f: Failure, keep_logs: Option<&Path>) {
    if let (Some(dir), Some(c)) = (keep_logs, &s.cluster) {
        c.keep_logs(dir, s.kind);
    }
    s.required = false;
    let _ = s.fail(f);
}

/// The notes under the table (and in the JSON).
fn notes(t: &Timing, poll: Duration, with_35: bool) -> Vec<String> {
    let (e, h) = (t.election_ms, t.heartbeat_ms);
    vec![
        format!(
            "Time to a new leader: SIGKILL of the leader -> both survivors' Maintenance Status \
             name the same new leader (polled every {:.0} ms, so up to that much late). Time to \
             the first write: SIGKILL -> the first put that succeeds, of puts sent every {} ms \
             after the kill, alternately through each survivor. p90 is the nearest rank (with \
             10 reps, the 9th fastest).",
            ms(poll),
            WRITE_EVERY.as_millis()
        ),
        format!(
            "Election timing: with a {e} ms election timeout, etcd's followers wait a \
             randomized 1-2 election timeouts ({e}-{} ms, counted in {h} ms ticks) without \
             hearing from the leader before they campaign (raft's randomized election timeout; \
             raft-rs, which corekv uses, draws it the same way). The wait starts at the last \
             heartbeat before the kill (0-{h} ms earlier), and the earlier of the two \
             survivors' draws usually decides, so expect about {:.1}-{:.1} s plus the vote.",
            2 * e,
            (e.saturating_sub(h)) as f64 / 1000.0,
            (2 * e) as f64 / 1000.0
        ),
        format!(
            "Pre-vote is on for corekv and etcd 3.5 (its default, --pre-vote=true{}) and off \
             by default for etcd 3.4 (--pre-vote=false): with pre-vote a candidate first asks \
             whether it could win (one more round trip before the real vote, and no term bump \
             for a lost one). Check-quorum is on in all of them.",
            if with_35 {
                ""
            } else {
                "; etcd 3.5 is not in this run"
            }
        ),
        "After each kill the killed member is restarted with its data dir and the cluster must \
         be healthy again (all three answer Status, naming the same leader) before the next \
         rep; the servers take turns, rotating who goes first each rep."
            .into(),
    ]
}

/// A server's numbers in the JSON report (see `json_servers`).
#[derive(Serialize)]
struct JsonNumbers {
    pre_vote: bool,
    new_leader_ms: Option<Summary>,
    first_write_ms: Option<Summary>,
}

/// What the JSON report says of this run's settings (see `Prologue::json`).
#[derive(Serialize)]
struct JsonParams {
    members: usize,
    reps: usize,
    heartbeat_interval_ms: u64,
    election_timeout_ms: u64,
    timing_flags: Vec<String>,
    load: bool,
    poll_interval_ms: f64,
}

fn failover(a: &FailoverArgs, json: bool) -> Result<(), String> {
    if a.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    if a.poll_interval < Duration::from_millis(1) || a.poll_interval > Duration::from_millis(100) {
        return Err("--poll-interval must be between 1ms and 100ms".into());
    }
    let timing = Timing::of(a)?;
    let limit = a.failover_timeout.unwrap_or_else(|| {
        Duration::from_secs(30).max(Duration::from_millis(20 * timing.election_ms))
    });
    let (p, mut servers) = Prologue::gather(&a.bins, a.data_parent.as_deref())?;
    let mut head = p.head(
        "failover",
        &servers,
        &format!("{MEMBERS} members each"),
        a.reps,
    );
    let _ = writeln!(head, "timing: {}", timing.describe());
    let _ = writeln!(
        head,
        "write load during the kills: {}",
        if a.load {
            "one client, one 256-byte put at a time, through a follower (--load)"
        } else {
            "none (--load adds one client putting in a loop through a follower)"
        }
    );
    eprint!("{head}");

    let mut ports = Vec::new();
    for s in &mut servers {
        eprintln!("starting {} ({MEMBERS} members) ...", s.label);
        let spec = ClusterSpec {
            label: s.label,
            kind: s.kind,
            bin: &s.bin,
            members: MEMBERS,
            extra: &timing.flags,
            purpose: "failover",
            client_https: false,
            cpus: &[],
        };
        match start_cluster(&spec, &p.parent, &mut ports, a.start_timeout) {
            Ok(c) => s.cluster = Some(c),
            Err(f) => s.fail(f)?,
        }
    }

    let t_start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    for rep in 0..a.reps {
        for i in turn(&servers, rep) {
            let s = &mut servers[i];
            match one_rep(s, rep, a, limit) {
                Ok(x) => {
                    eprintln!(
                        "  rep {}/{} {:<8}: SIGKILL {} (leader {}, term {}); new leader {} \
                         after {:.0} ms (term {}, {} polls); first write after {:.0} ms via {}; \
                         healthy {:.1} s after the restart{}",
                        x.rep,
                        a.reps,
                        x.server,
                        x.killed,
                        x.killed_id,
                        x.term_before,
                        x.new_leader,
                        x.new_leader_ms,
                        x.term_after,
                        x.status_polls,
                        x.first_write_ms,
                        x.first_write_via,
                        x.restart_to_healthy_ms / 1000.0,
                        x.load.as_ref().map_or(String::new(), |l| format!(
                            "; load via {}: {} puts, {} errors, longest {:.0} ms",
                            l.via, l.puts, l.errors, l.longest_put_ms
                        ))
                    );
                    samples.push(x);
                }
                Err(f) => write_off(s, f, a.keep_logs.as_deref()),
            }
        }
    }
    let total_s = t_start.elapsed().as_secs_f64();
    if let Some(dir) = &a.keep_logs {
        for s in &servers {
            if let Some(c) = &s.cluster {
                c.keep_logs(dir, s.kind);
            }
        }
        eprintln!("logs kept in {}", dir.display());
    }
    let load_end = loadavg();
    let notes = notes(&timing, a.poll_interval, p.without_etcd35.is_none());

    let of = |label: &str, f: fn(&Sample) -> f64| -> Option<Summary> {
        let v: Vec<f64> = samples
            .iter()
            .filter(|x| x.server == label)
            .map(f)
            .collect();
        summarize(&v)
    };
    if json {
        let params = JsonParams {
            members: MEMBERS,
            reps: a.reps,
            heartbeat_interval_ms: timing.heartbeat_ms,
            election_timeout_ms: timing.election_ms,
            timing_flags: timing.flags.clone(),
            load: a.load,
            poll_interval_ms: ms(a.poll_interval),
        };
        let servers = json_servers(&servers, |s| JsonNumbers {
            pre_vote: pre_vote(s.label),
            new_leader_ms: of(s.label, |x| x.new_leader_ms),
            first_write_ms: of(s.label, |x| x.first_write_ms),
        });
        p.print_json(params, load_end, total_s, servers, samples, notes);
        return Ok(());
    }

    let mut t = p.report(&head, &load_end, total_s);
    let _ = writeln!(
        t,
        "Time to a new leader and to the first write after SIGKILL of the leader (ms; \
         {} rep(s) per server):\n",
        a.reps
    );
    let header = [
        "server",
        "pre-vote",
        "reps",
        "new leader median",
        "new leader p90",
        "new leader min",
        "new leader max",
        "first write median",
        "first write p90",
        "first write min",
        "first write max",
    ];
    let mut rows = Vec::new();
    for s in &servers {
        let mut row = vec![
            s.label.to_string(),
            if pre_vote(s.label) { "on" } else { "off" }.to_string(),
        ];
        let n = samples.iter().filter(|x| x.server == s.label).count();
        row.push(match &s.failure {
            Some(_) => format!("{n} of {}", a.reps),
            None => n.to_string(),
        });
        for sum in [
            of(s.label, |x| x.new_leader_ms),
            of(s.label, |x| x.first_write_ms),
        ] {
            match sum {
                Some(v) => row.extend(
                    [v.median, v.p90, v.min, v.max]
                        .iter()
                        .map(|x| format!("{x:.0}")),
                ),
                None => {
                    let why = match &s.failure {
                        Some(f) => format!("n/a ({}: {})", s.label, md(&shorten(&f.summary, 600))),
                        None => "n/a".into(),
                    };
                    row.push(why);
                    row.extend(std::iter::repeat_n("n/a".to_string(), 3));
                }
            }
        }
        rows.push(row);
    }
    md_table(&mut t, &header, &rows);

    let _ = writeln!(
        t,
        "\nEach rep (new leader / first write ms, raft term before -> after, the new leader):"
    );
    for s in &servers {
        let mut line = format!("  {:<8}", s.label);
        for x in samples.iter().filter(|x| x.server == s.label) {
            let _ = write!(
                line,
                "  {}: {:.0}/{:.0} t{}->{} {}",
                x.rep, x.new_leader_ms, x.first_write_ms, x.term_before, x.term_after, x.new_leader
            );
        }
        let _ = writeln!(t, "{line}");
    }
    if a.load {
        let _ = writeln!(
            t,
            "\n--load client (one put at a time through a follower, {} s limit per put), over all \
             reps:",
            WRITE_LIMIT.as_secs()
        );
        for s in &servers {
            let ls: Vec<&LoadStats> = samples
                .iter()
                .filter(|x| x.server == s.label)
                .filter_map(|x| x.load.as_ref())
                .collect();
            let _ = writeln!(
                t,
                "  {:<8}  {} puts, {} errors, longest put {:.0} ms",
                s.label,
                ls.iter().map(|l| l.puts).sum::<u64>(),
                ls.iter().map(|l| l.errors).sum::<u64>(),
                ls.iter().map(|l| l.longest_put_ms).fold(0.0, f64::max)
            );
        }
    }

    write_notes(&mut t, &notes);
    write_failures(&mut t, &servers);
    write_server_flags(&mut t, MEMBERS, &timing.flags);
    write_etcd35_defaults(&mut t, &servers);
    let _ = writeln!(
        t,
        "  (a killed member is restarted with the same flags, so with its data dir)"
    );
    print!("{t}");
    Ok(())
}

pub fn main(a: &FailoverArgs, json: bool) -> i32 {
    exit_code("failover", failover(a, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        let s = summarize(&v).unwrap();
        assert_eq!((s.median, s.p90, s.min, s.max), (5.5, 9.0, 1.0, 10.0));
        let s = summarize(&[7.0]).unwrap();
        assert_eq!((s.median, s.p90, s.min, s.max), (7.0, 7.0, 7.0, 7.0));
        assert!(summarize(&[]).is_none());
    }
}
