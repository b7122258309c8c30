//! `corekv-bench catchup`: how long a member added to a cluster holding a lot of data (1 GiB
//! by default) takes to catch up, and what that costs the writes the cluster takes meanwhile,
//! for each server (etcd 3.4, etcd 3.5 when it can be found or installed, corekv), taking
//! turns.
//!
//! One rep, for one server: start a fresh --members cluster as `failover` starts one (same
//! flags, fresh data dirs, free ports), plus --snapshot-count and --quota-backend-bytes; fill
//! it through the leader with --data-size of values of --value-size under distinct keys
//! (--fill-concurrency puts in flight); start --load-clients clients putting 256-byte values
//! through the leader in a loop, counting acknowledged puts per 100 ms; after --baseline, add a
//! member with MemberAdd (a new peer URL on a free port) and start it with
//! --initial-cluster-state=existing and the --initial-cluster the MemberAdd response implies;
//! poll its Maintenance Status (and the leader's) every --poll-interval until its revision
//! reaches the leader's revision at the add: that instant minus the start of the new process is
//! the catch-up time. The load goes on 2 s more; then everything is killed and the data dirs
//! removed.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use corekv::client::Client;
use corekv::proto::etcdserverpb as pb;
use serde::Serialize;

use crate::servers::{
    dial, exit_code, free_port, json_servers, loadavg, md, md_table, member_flags, put_loop,
    shorten, start_cluster, turn, utc_stamp, wait_ready, write_failures, write_notes,
    write_server_flags, Cluster, ClusterSpec, Failure, Prologue, Server, ServerBins, STATUS_LIMIT,
};

#[derive(Args, Debug, Clone)]
pub struct CatchupArgs {
    #[command(flatten)]
    bins: ServerBins,
    /// Reps per server (each a fresh cluster, filled again; the servers take turns, rotating
    /// who goes first).
    #[arg(long, default_value_t = 1)]
    reps: usize,
    /// Members of the cluster before the add (the added member makes one more). With 1, the
    /// add makes a 2-member cluster whose quorum needs the new member, so writes wait for it.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Data written before the add: the sum of the values (e.g. 1GiB, 500MiB, 2MiB, or bytes).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    data_size: u64,
    /// Size of each value of the fill (distinct keys; random, incompressible bytes). etcd takes
    /// requests up to 1.5 MiB (its --max-request-bytes default).
    #[arg(long, default_value = "100KiB", value_parser = parse_size)]
    value_size: u64,
    /// Fill puts in flight at once (on one connection to the leader).
    #[arg(long, default_value_t = 16)]
    fill_concurrency: usize,
    /// Clients of the steady write load (each on its own connection to the leader, one
    /// 256-byte put at a time, in a loop).
    #[arg(long, default_value_t = 8)]
    load_clients: usize,
    /// How long the load runs before the add (the baseline it is compared with).
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    baseline: Duration,
    /// --snapshot-count for every member (so the raft log is compacted during the fill and the
    /// new member needs a snapshot).
    #[arg(long, default_value_t = 10000)]
    snapshot_count: u64,
    /// --quota-backend-bytes for every member (the fill must fit).
    #[arg(long, default_value = "8GiB", value_parser = parse_size)]
    quota_backend_bytes: u64,
    /// How often the new member's and the leader's Status are polled after the new member is
    /// started (1ms to 1s).
    #[arg(long, default_value = "50ms", value_parser = crate::parse_duration)]
    poll_interval: Duration,
    /// How long a cluster may take to become healthy after its start.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    start_timeout: Duration,
    /// How long the new member may take to catch up (from its start); a server that takes
    /// longer gets no more reps (n/a, with its logs).
    #[arg(long, default_value = "10m", value_parser = crate::parse_duration)]
    catchup_timeout: Duration,
    /// Where the servers' data dirs go (a fresh temporary dir inside it per cluster).
    #[arg(long)]
    data_parent: Option<PathBuf>,
    /// Copy every member's log here after each rep (<server>-rep<n>-m<i>.log). The fill, the
    /// add, the new member's start and its catch-up are marked in the logs by a
    /// "corekv-bench catchup:" line with the UTC time.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
}

/// The steady load's counting window.
const WINDOW: Duration = Duration::from_millis(100);
/// The steady load's value size.
const LOAD_VALUE: usize = 256;
/// Keys each load client cycles through.
const LOAD_KEYS: u64 = 1000;
/// Each load put's limit (a put that takes longer counts as an error, and the client goes on).
const LOAD_LIMIT: Duration = Duration::from_secs(5);
/// Each fill put's limit.
const FILL_LIMIT: Duration = Duration::from_secs(60);
/// The load goes on this long after the catch-up.
const TAIL: Duration = Duration::from_secs(2);
/// MemberAdd is retried this long (etcd refuses adds in the first 5 s a cluster is up, as
/// "unhealthy cluster", and while a member is not connected).
const ADD_RETRY_FOR: Duration = Duration::from_secs(30);
/// etcd's default --max-request-bytes; a fill put (value, key, framing) must fit.
const MAX_REQUEST: u64 = 1_572_864;
const KEY_PREFIX: &str = "corekv-bench/catchup";
/// The added member's name.
const NEW_NAME: &str = "new";

/// "1GiB", "100KiB", "2MiB", "1.5GB", "4096" (bytes): binary (KiB, MiB, GiB; also K, M, G) or
/// decimal (KB, MB, GB) units.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let i = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(i);
    let n: f64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        _ => {
            return Err(format!(
                "bad size unit in {s:?} (use KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("bad size {s:?}"));
    }
    Ok(v.round() as u64)
}

/// Bytes in binary units: "1.00 GiB", "100 KiB", "512 B".
fn human(b: u64) -> String {
    let b = b as f64;
    let k = 1024.0;
    if b >= k * k * k {
        format!("{:.2} GiB", b / (k * k * k))
    } else if b >= k * k {
        format!("{:.1} MiB", b / (k * k))
    } else if b >= k {
        format!("{:.0} KiB", b / k)
    } else {
        format!("{b:.0} B")
    }
}

/// A db size from Status: "file (in use)".
fn db(file: i64, in_use: i64) -> String {
    format!(
        "{} ({})",
        human(file.max(0) as u64),
        human(in_use.max(0) as u64)
    )
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// MB (10^6 bytes) per second.
fn mb_s(bytes: u64, d: Duration) -> f64 {
    if d.is_zero() {
        return 0.0;
    }
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// One rep of one server.
#[derive(Clone, Debug, Serialize)]
struct Sample {
    server: &'static str,
    /// 1-based.
    rep: usize,
    members_before: usize,
    /// The fill: puts, the sum of their values, and how long it took.
    fill_puts: u64,
    fill_bytes: u64,
    fill_s: f64,
    fill_mb_s: f64,
    /// The leader's Status right after MemberAdd answered.
    leader: String,
    revision_at_add: i64,
    raft_index_at_add: u64,
    leader_db_size_at_add: i64,
    leader_db_size_in_use_at_add: i64,
    /// When MemberAdd answered (wall clock, to the millisecond), how long it took, and how many
    /// times it was sent (it is retried while the server refuses it).
    added_at_utc: String,
    member_add_ms: f64,
    member_add_tries: u32,
    new_member_id: String,
    /// The new member's --initial-cluster.
    initial_cluster: String,
    /// Start of the new member's process -> its first Status answer, and -> its revision
    /// reaching `revision_at_add` (the catch-up).
    first_status_s: Option<f64>,
    /// The revision in that first answer (etcd answers only once it has joined; a member that
    /// answers earlier may report a revision far behind).
    first_status_revision: Option<i64>,
    catchup_s: f64,
    /// Status polls of the new member (a failed dial counts as one).
    status_polls: u64,
    /// The data the new member had to get (the leader's db size in use at the add, or its db
    /// size if it reports no in-use size) / catch-up time.
    transfer_mb_s: f64,
    /// leader_db_size_at_add / catch-up time (corekv's leader file can be much bigger than the
    /// data in it: see leader_db_size_in_use_at_add).
    transfer_mb_s_leader_db: f64,
    /// The new member's Status when caught up.
    new_member_revision: i64,
    new_member_applied_index: u64,
    new_member_db_size_at_catchup: i64,
    /// The new member's db size and size in use (Status) and data dir on disk when the load
    /// stops (2 s after the catch-up).
    new_member_db_size: i64,
    new_member_db_size_in_use: i64,
    new_member_data_dir_bytes: u64,
    /// Acknowledged load puts per second over the --baseline before the add, over the
    /// catch-up (new member's start -> caught up), and the change in %.
    baseline_puts_s: f64,
    catchup_puts_s: f64,
    change_pct: f64,
    /// The longest run of 100 ms windows without an acknowledged put during the catch-up.
    longest_stall_ms: f64,
    load_puts: u64,
    load_errors: u64,
    load_last_error: Option<String>,
    longest_put_ms: f64,
    /// Seconds since the load started: the baseline's start, the add, the new member's start,
    /// caught up, the load's end.
    timeline_s: Timeline,
    /// Acknowledged load puts per 100 ms window, from the load's start.
    puts_per_100ms: Vec<u64>,
}

#[derive(Clone, Debug, Serialize)]
struct Timeline {
    baseline_from: f64,
    added: f64,
    started: f64,
    caught_up: f64,
    load_end: f64,
}

/// What the load clients did.
struct LoadTotals {
    puts: u64,
    errors: u64,
    last_error: Option<String>,
    longest_put_ms: f64,
}

/// The steady write load: --load-clients clients on their own thread, counting acknowledged
/// puts per WINDOW since `t0`.
struct LoadRun {
    t0: Instant,
    stop: Arc<AtomicBool>,
    windows: Arc<Vec<AtomicU64>>,
    thread: std::thread::JoinHandle<Result<LoadTotals, String>>,
}

impl LoadRun {
    /// Starts `clients` clients putting through `endpoint`; returns once 10 puts succeeded.
    /// `span`: how long it may run (windows past it count in the last one).
    fn start(endpoint: &str, clients: usize, span: Duration) -> Result<LoadRun, String> {
        let n = (span.as_millis() / WINDOW.as_millis()) as usize + 1;
        let windows: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let (stop2, windows2, ep) = (stop.clone(), windows.clone(), endpoint.to_string());
        let thread = std::thread::spawn(move || {
            corekv::client::run_local(move || async move {
                let mut tasks = Vec::new();
                for k in 0..clients {
                    let c = Client::connect(dial(&ep, Duration::from_secs(2), LOAD_LIMIT))
                        .await
                        .map_err(|e| format!("load client {k}: {ep}: {e}"))?;
                    let (stop, windows) = (stop2.clone(), windows2.clone());
                    tasks.push(glommio::spawn_local(async move {
                        let value = bytes::Bytes::from(vec![b'v'; LOAD_VALUE]);
                        let mut t = LoadTotals {
                            puts: 0,
                            errors: 0,
                            last_error: None,
                            longest_put_ms: 0.0,
                        };
                        let key = |i| format!("{KEY_PREFIX}/load/{k}/{}", i % LOAD_KEYS);
                        put_loop(&c, &stop, key, value, |r, took_ms| {
                            t.longest_put_ms = t.longest_put_ms.max(took_ms);
                            if let Err(e) = r {
                                t.errors += 1;
                                t.last_error = Some(e.to_string());
                                return;
                            }
                            let w = (t0.elapsed().as_millis() / WINDOW.as_millis()) as usize;
                            windows[w.min(windows.len() - 1)].fetch_add(1, Ordering::Relaxed);
                            t.puts += 1;
                        })
                        .await;
                        t
                    }));
                }
                let mut all = LoadTotals {
                    puts: 0,
                    errors: 0,
                    last_error: None,
                    longest_put_ms: 0.0,
                };
                for task in tasks {
                    let t = task.await;
                    all.puts += t.puts;
                    all.errors += t.errors;
                    all.last_error = t.last_error.or(all.last_error);
                    all.longest_put_ms = all.longest_put_ms.max(t.longest_put_ms);
                }
                Ok(all)
            })
        });
        let run = LoadRun {
            t0,
            stop,
            windows,
            thread,
        };
        let going = wait_ready(
            Duration::from_secs(10),
            || !run.thread.is_finished(),
            || run.acked() >= 10,
        );
        if !going {
            let why = match run.stop() {
                Err(e) => e,
                Ok((t, _)) => format!(
                    "its first 10 puts took over 10 s (last error: {})",
                    t.last_error.unwrap_or_else(|| "none".into())
                ),
            };
            return Err(format!("the load did not get going: {why}"));
        }
        Ok(run)
    }

    fn acked(&self) -> u64 {
        self.windows.iter().map(|w| w.load(Ordering::Relaxed)).sum()
    }

    /// Stops the clients: what they did, and the acknowledged puts per window until now.
    fn stop(self) -> Result<(LoadTotals, Vec<u64>), String> {
        self.stop.store(true, Ordering::Relaxed);
        let totals = self
            .thread
            .join()
            .map_err(|_| "the load clients panicked".to_string())??;
        // After the join: every acknowledged put is counted by now.
        let end = (self.t0.elapsed().as_millis() / WINDOW.as_millis()) as usize + 1;
        let w: Vec<u64> = self
            .windows
            .iter()
            .take(end)
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        Ok((totals, w))
    }
}

/// Window index of `t` seconds after the load's start (rounded to the nearest boundary).
fn window_at(t: f64) -> usize {
    (t / WINDOW.as_secs_f64()).round().max(0.0) as usize
}

/// Acknowledged puts per second over [from, to) (seconds since the load's start), counted in
/// whole windows (at least one), and the longest run of empty windows in it (ms).
fn rate(w: &[u64], from: f64, to: f64) -> (f64, f64) {
    let a = window_at(from).min(w.len().saturating_sub(1));
    let b = window_at(to).clamp(a + 1, w.len().max(a + 1));
    let span = &w[a..b.min(w.len())];
    if span.is_empty() {
        return (0.0, 0.0);
    }
    let sum: u64 = span.iter().sum();
    let (mut run, mut longest) = (0usize, 0usize);
    for &x in span {
        run = if x == 0 { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    (
        sum as f64 / (span.len() as f64 * WINDOW.as_secs_f64()),
        longest as f64 * WINDOW.as_secs_f64() * 1e3,
    )
}

/// Fills the cluster through `endpoint`: `data` bytes of values of `value_size` (the last one
/// shorter if need be) under distinct keys, `conc` puts in flight. Returns the puts.
fn fill(
    endpoint: &str,
    data: u64,
    value_size: u64,
    conc: usize,
    label: &'static str,
) -> Result<u64, String> {
    let total = data.div_ceil(value_size);
    let ep = endpoint.to_string();
    corekv::client::run_local(move || async move {
        let c = Client::connect(dial(&ep, Duration::from_secs(2), FILL_LIMIT))
            .await
            .map_err(|e| format!("fill: {ep}: {e}"))?;
        let next = Rc::new(Cell::new(0u64));
        let done = Rc::new(Cell::new(0u64));
        let error: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..conc.max(1) {
            let (c, next, done, error) = (c.clone(), next.clone(), done.clone(), error.clone());
            tasks.push(glommio::spawn_local(async move {
                let mut rng = fastrand::Rng::with_seed(0x5eed_0000 + w as u64);
                let mut buf = vec![0u8; value_size as usize];
                loop {
                    let i = next.get();
                    if i >= total || error.borrow().is_some() {
                        return;
                    }
                    next.set(i + 1);
                    let len = value_size.min(data - i * value_size) as usize;
                    rng.fill(&mut buf[..len]);
                    let req = pb::PutRequest {
                        key: format!("{KEY_PREFIX}/fill/{i:08}").into(),
                        value: bytes::Bytes::copy_from_slice(&buf[..len]),
                        ..Default::default()
                    };
                    if let Err(e) = c.put(req).await {
                        error
                            .borrow_mut()
                            .get_or_insert_with(|| format!("fill put {i} of {total}: {e}"));
                        return;
                    }
                    let d = done.get() + 1;
                    done.set(d);
                    let quarter = total.div_ceil(4).max(1);
                    if d % quarter == 0 && d < total {
                        eprintln!(
                            "    {label}: filled {d} of {total} ({:.0} s)",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        match error.take() {
            Some(e) => Err(e),
            None => Ok(total),
        }
    })
}

/// The Status of the member at `endpoint`.
fn member_status(endpoint: &str) -> Result<pb::StatusResponse, String> {
    let ep = endpoint.to_string();
    corekv::client::run_local(move || async move {
        let c = Client::connect(dial(&ep, STATUS_LIMIT, STATUS_LIMIT))
            .await
            .map_err(|e| format!("{ep}: {e}"))?;
        c.status().await.map_err(|e| format!("{ep}: Status: {e}"))
    })
}

/// What MemberAdd answered, and the leader's Status right after.
struct Added {
    resp: pb::MemberAddResponse,
    leader: pb::StatusResponse,
    took: Duration,
    tries: u32,
}

/// MemberAdd of `peer_url` through `endpoint` (retried for ADD_RETRY_FOR while refused), then
/// the Status of `endpoint`.
fn member_add(endpoint: &str, peer_url: &str) -> Result<Added, String> {
    let (ep, url) = (endpoint.to_string(), peer_url.to_string());
    corekv::client::run_local(move || async move {
        let c = Client::connect(dial(&ep, Duration::from_secs(2), Duration::from_secs(10)))
            .await
            .map_err(|e| format!("{ep}: {e}"))?;
        let started = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            let req = pb::MemberAddRequest {
                peer_ur_ls: vec![url.clone()],
                is_learner: false,
            };
            match c.member_add(req).await {
                Ok(resp) => {
                    let took = started.elapsed();
                    let leader = c
                        .status()
                        .await
                        .map_err(|e| format!("{ep}: Status after MemberAdd: {e}"))?;
                    return Ok(Added {
                        resp,
                        leader,
                        took,
                        tries,
                    });
                }
                Err(e) if started.elapsed() < ADD_RETRY_FOR => {
                    eprintln!("    MemberAdd {url} via {ep}: {e}; again in 0.5 s");
                    glommio::timer::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    return Err(format!(
                        "MemberAdd {url} via {ep}: {e} ({tries} tries over {:.0} s)",
                        started.elapsed().as_secs_f64()
                    ))
                }
            }
        }
    })
}

/// The new member's --initial-cluster: name=peerURL for every member MemberAdd answered with,
/// `new_name` for the new one (its name is empty until it starts).
fn initial_cluster(resp: &pb::MemberAddResponse, new_name: &str) -> Result<String, String> {
    let new_id = resp.member.as_ref().map_or(0, |m| m.id);
    let mut parts = Vec::new();
    for m in &resp.members {
        let name = if m.id == new_id {
            new_name
        } else {
            m.name.as_str()
        };
        if name.is_empty() {
            return Err(format!(
                "MemberAdd answered with a member without a name ({:x}, {:?}): not started?",
                m.id, m.peer_ur_ls
            ));
        }
        for u in &m.peer_ur_ls {
            parts.push(format!("{name}={u}"));
        }
    }
    if !resp.members.iter().any(|m| m.id == new_id) {
        return Err(format!(
            "MemberAdd's member list does not hold the new member {new_id:x}"
        ));
    }
    Ok(parts.join(","))
}

/// The catch-up as polled.
struct Caught {
    first_status: Option<(Duration, i64)>,
    at: Duration,
    polls: u64,
    new: pb::StatusResponse,
}

/// Polls the new member's and the leader's Status every `poll` until the new member's
/// revision reaches `revision` (times since `started`), within `limit`, or `give_up` is set.
fn poll_catchup(
    new_ep: String,
    leader_ep: String,
    revision: i64,
    started: Instant,
    poll: Duration,
    limit: Duration,
    give_up: Arc<AtomicBool>,
) -> Result<Caught, String> {
    corekv::client::run_local(move || async move {
        let leader = Client::connect(dial(&leader_ep, STATUS_LIMIT, STATUS_LIMIT))
            .await
            .map_err(|e| format!("the leader at {leader_ep}: {e}"))?;
        let mut new: Option<Client> = None;
        let mut first_status = None;
        let mut polls = 0;
        let mut seen = String::from("no answer yet");
        let mut leader_seen = String::from("no answer yet");
        loop {
            if give_up.load(Ordering::Relaxed) {
                return Err("given up".into());
            }
            let tick = Instant::now();
            if new.is_none() {
                match Client::connect(dial(&new_ep, STATUS_LIMIT / 2, STATUS_LIMIT)).await {
                    Ok(c) => new = Some(c),
                    Err(e) => {
                        polls += 1;
                        seen = format!("dial: {e}");
                    }
                }
            }
            if let Some(c) = &new {
                let (a, b) = futures_lite::future::zip(c.status(), leader.status()).await;
                polls += 1;
                let at = started.elapsed();
                match b {
                    Ok(l) => {
                        leader_seen = format!(
                            "revision {}, raft index {}, db size {}",
                            l.header.as_ref().map_or(0, |h| h.revision),
                            l.raft_index,
                            l.db_size
                        )
                    }
                    Err(e) => leader_seen = e.to_string(),
                }
                match a {
                    Ok(st) => {
                        let r = st.header.as_ref().map_or(0, |h| h.revision);
                        first_status.get_or_insert((at, r));
                        if r >= revision {
                            return Ok(Caught {
                                first_status,
                                at,
                                polls,
                                new: st,
                            });
                        }
                        seen = format!(
                            "revision {r}, applied index {}, db size {}, leader {:x}",
                            st.raft_applied_index, st.db_size, st.leader
                        );
                    }
                    Err(e) => seen = format!("Status: {e}"),
                }
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "the new member did not reach revision {revision} within {:.0} s of its \
                     start (its last Status: {seen}; the leader's: {leader_seen})",
                    limit.as_secs_f64()
                ));
            }
            let next = tick + poll;
            let now = Instant::now();
            if next > now {
                glommio::timer::sleep(next - now).await;
            }
        }
    })
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mark(c: &Cluster, what: &str) {
    c.mark("catchup", what);
}

fn extra_flags(a: &CatchupArgs) -> Vec<String> {
    vec![
        format!("--snapshot-count={}", a.snapshot_count),
        format!("--quota-backend-bytes={}", a.quota_backend_bytes),
    ]
}

/// One rep of `s`: a fresh cluster, filled, loaded, grown by one member.
fn one_rep(
    s: &Server,
    rep: usize,
    a: &CatchupArgs,
    parent: &Path,
    ports: &mut Vec<u16>,
) -> Result<Sample, Failure> {
    let label = s.label;
    let extra = extra_flags(a);
    let spec = ClusterSpec {
        label,
        kind: s.kind,
        bin: &s.bin,
        members: a.members,
        extra: &extra,
        purpose: "catchup",
        client_https: false,
        cpus: &[],
    };
    eprintln!(
        "  rep {}/{} {label}: starting {} member(s) ...",
        rep + 1,
        a.reps,
        a.members
    );
    let mut c = start_cluster(&spec, parent, ports, a.start_timeout)?;
    let r = grow(&mut c, s, rep, a, ports);
    if let Some(dir) = &a.keep_logs {
        c.keep_logs(dir, &format!("{}-rep{}", s.kind, rep + 1));
    }
    r
    // `c` is dropped here: every member killed, the data dirs removed.
}

fn grow(
    c: &mut Cluster,
    s: &Server,
    rep: usize,
    a: &CatchupArgs,
    ports: &mut Vec<u16>,
) -> Result<Sample, Failure> {
    let label = s.label;
    let li = c.wait_healthy(a.start_timeout)?.leader_index();
    let (leader_name, leader_ep) = (c.procs[li].name.clone(), c.procs[li].endpoint.clone());

    // The fill.
    mark(c, &format!("{label} rep {}: fill starts", rep + 1));
    let t = Instant::now();
    let puts = fill(
        &leader_ep,
        a.data_size,
        a.value_size,
        a.fill_concurrency,
        label,
    )
    .map_err(|e| c.failure(e))?;
    let fill_time = t.elapsed();
    mark(
        c,
        &format!("{label} rep {}: fill done, {puts} puts", rep + 1),
    );
    eprintln!(
        "    {label}: filled {} ({puts} puts) in {:.1} s ({:.1} MB/s)",
        human(a.data_size),
        secs(fill_time),
        mb_s(a.data_size, fill_time)
    );
    c.check_alive().map_err(|e| c.failure(e))?;

    // The load, the baseline, the add.
    let span = a.baseline + a.catchup_timeout + ADD_RETRY_FOR + Duration::from_secs(60);
    let load = LoadRun::start(&leader_ep, a.load_clients, span).map_err(|e| c.failure(e))?;
    let baseline_from = load.t0.elapsed();
    std::thread::sleep(a.baseline);
    let (new_client, new_peer) = (free_port(ports), free_port(ports));
    let peer_url = format!("http://127.0.0.1:{new_peer}");
    mark(
        c,
        &format!(
            "{label} rep {}: MemberAdd {peer_url} via {leader_name}",
            rep + 1
        ),
    );
    let added = match member_add(&leader_ep, &peer_url) {
        Ok(x) => x,
        Err(e) => {
            let _ = load.stop();
            return Err(c.failure(e));
        }
    };
    let added_at = load.t0.elapsed();
    let added_wall = SystemTime::now();
    let new_id = added.resp.member.as_ref().map_or(0, |m| m.id);
    let revision_at_add = added.leader.header.as_ref().map_or(0, |h| h.revision);
    let initial = match initial_cluster(&added.resp, NEW_NAME) {
        Ok(x) => x,
        Err(e) => {
            let _ = load.stop();
            return Err(c.failure(e));
        }
    };
    mark(
        c,
        &format!(
            "{label} rep {}: MemberAdd answered: {new_id:x}; leader at revision {revision_at_add}, \
             raft index {}, db size {}; starting {NEW_NAME} with --initial-cluster={initial}",
            rep + 1,
            added.leader.raft_index,
            added.leader.db_size
        ),
    );
    let data = c.dir().join(NEW_NAME);
    let mut args = member_flags(NEW_NAME, &data, new_client, new_peer, &initial, &c.token);
    for f in &mut args {
        if f.starts_with("--initial-cluster-state=") {
            *f = "--initial-cluster-state=existing".into();
        }
    }
    args.extend(extra_flags(a));
    let new_ep = format!("127.0.0.1:{new_client}");
    let started_at = load.t0.elapsed();
    let started = Instant::now();
    let ni = match c.add_member(NEW_NAME, new_ep.clone(), args) {
        Ok(i) => i,
        Err(e) => {
            let _ = load.stop();
            return Err(c.failure(e));
        }
    };

    // The catch-up, watched from another thread while this one checks the members still run.
    let give_up = Arc::new(AtomicBool::new(false));
    let poller = {
        let (new_ep, leader_ep, give_up) = (new_ep.clone(), leader_ep.clone(), give_up.clone());
        let (poll, limit) = (a.poll_interval, a.catchup_timeout);
        std::thread::spawn(move || {
            poll_catchup(
                new_ep,
                leader_ep,
                revision_at_add,
                started,
                poll,
                limit,
                give_up,
            )
        })
    };
    let mut died = None;
    while !poller.is_finished() {
        if let Err(e) = c.check_alive() {
            give_up.store(true, Ordering::Relaxed);
            died = Some(e);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let polled = poller
        .join()
        .unwrap_or_else(|_| Err("the Status poller panicked".into()));
    let caught = match (died, polled) {
        (None, Ok(x)) => x,
        (Some(e), _) | (None, Err(e)) => {
            mark(c, &format!("{label} rep {}: {e}", rep + 1));
            let _ = load.stop();
            return Err(c.failure(format!("{} at {new_ep}: {e}", c.procs[ni].name)));
        }
    };
    let caught_up = started_at + caught.at;
    mark(
        c,
        &format!(
            "{label} rep {}: {NEW_NAME} reached revision {} {:.3} s after its start",
            rep + 1,
            caught.new.header.as_ref().map_or(0, |h| h.revision),
            secs(caught.at)
        ),
    );
    std::thread::sleep(TAIL);
    let load_end = load.t0.elapsed();
    let (totals, windows) = load.stop().map_err(|e| c.failure(e))?;
    c.check_alive().map_err(|e| c.failure(e))?;
    let new_member_data_dir_bytes = dir_bytes(&data);
    let (new_member_db_size, new_member_db_size_in_use) = match member_status(&new_ep) {
        Ok(st) => (st.db_size, st.db_size_in_use),
        Err(e) => return Err(c.failure(format!("after the catch-up: {e}"))),
    };

    let baseline_start = secs(added_at.saturating_sub(a.baseline)).max(secs(baseline_from));
    let (baseline_puts_s, _) = rate(&windows, baseline_start, secs(added_at));
    let (catchup_puts_s, longest_stall_ms) = rate(&windows, secs(started_at), secs(caught_up));
    let change_pct = if baseline_puts_s > 0.0 {
        (catchup_puts_s - baseline_puts_s) / baseline_puts_s * 100.0
    } else {
        0.0
    };
    let db_at_add = added.leader.db_size;
    let data_at_add = match added.leader.db_size_in_use {
        0 => db_at_add,
        n => n,
    };
    Ok(Sample {
        server: label,
        rep: rep + 1,
        members_before: a.members,
        fill_puts: puts,
        fill_bytes: a.data_size,
        fill_s: secs(fill_time),
        fill_mb_s: mb_s(a.data_size, fill_time),
        leader: leader_name,
        revision_at_add,
        raft_index_at_add: added.leader.raft_index,
        leader_db_size_at_add: db_at_add,
        leader_db_size_in_use_at_add: added.leader.db_size_in_use,
        added_at_utc: utc_stamp(added_wall),
        member_add_ms: secs(added.took) * 1e3,
        member_add_tries: added.tries,
        new_member_id: format!("{new_id:x}"),
        initial_cluster: initial,
        first_status_s: caught.first_status.map(|(t, _)| secs(t)),
        first_status_revision: caught.first_status.map(|(_, r)| r),
        catchup_s: secs(caught.at),
        status_polls: caught.polls,
        transfer_mb_s: mb_s(data_at_add.max(0) as u64, caught.at),
        transfer_mb_s_leader_db: mb_s(db_at_add.max(0) as u64, caught.at),
        new_member_revision: caught.new.header.as_ref().map_or(0, |h| h.revision),
        new_member_applied_index: caught.new.raft_applied_index,
        new_member_db_size_at_catchup: caught.new.db_size,
        new_member_db_size,
        new_member_db_size_in_use,
        new_member_data_dir_bytes,
        baseline_puts_s,
        catchup_puts_s,
        change_pct,
        longest_stall_ms,
        load_puts: totals.puts,
        load_errors: totals.errors,
        load_last_error: totals.last_error,
        longest_put_ms: totals.longest_put_ms,
        timeline_s: Timeline {
            baseline_from: baseline_start,
            added: secs(added_at),
            started: secs(started_at),
            caught_up: secs(caught_up),
            load_end: secs(load_end),
        },
        puts_per_100ms: windows,
    })
}

/// The notes under the table (and in the JSON).
fn notes(a: &CatchupArgs) -> Vec<String> {
    let mut n = vec![
        format!(
            "Each rep: a fresh {}-member cluster (--snapshot-count={} --quota-backend-bytes={}), \
             filled through the leader with {} of random values of {} under distinct keys \
             ({} puts in flight); then {} load client(s) put {LOAD_VALUE}-byte values through \
             the leader in a loop (one put at a time each, {} s limit per put); after {:.1} s, \
             MemberAdd (a voting member) through the leader, and the new member is started with \
             --initial-cluster-state=existing, its own fresh data dir and free ports.",
            a.members,
            a.snapshot_count,
            a.quota_backend_bytes,
            human(a.data_size),
            human(a.value_size),
            a.fill_concurrency,
            a.load_clients,
            LOAD_LIMIT.as_secs(),
            secs(a.baseline)
        ),
        format!(
            "Catch-up time: start of the new member's process -> its Maintenance Status reports \
             a revision at least the leader's revision right after MemberAdd answered (polled \
             every {:.0} ms; a poll is a Status round trip, so up to about that much late). \
             Transfer rate: the data in the leader's db at the add (Status dbSizeInUse) / the \
             catch-up time, in MB (10^6 bytes) per second; it includes the new member's start \
             and whatever it does after the transfer until it answers Status. \"leader db \
             MB/s\" divides the leader's db file size (Status dbSize) instead: etcd's snapshot is \
             its whole bbolt file (a few % more than in use), but a corekv db file can be twice \
             the data in it (free pages), so that rate overstates corekv. The db sizes are \
             file (in use).",
            secs(a.poll_interval) * 1e3
        ),
        format!(
            "Puts/s: acknowledged load puts per second, counted in 100 ms windows: over the \
             {:.1} s before the add (baseline) and over the catch-up (the new member's start \
             -> caught up); change = (catch-up - baseline) / baseline. Longest stall: the \
             longest run of 100 ms windows without an acknowledged put during the catch-up. \
             The load goes on {} s after the catch-up.",
            secs(a.baseline),
            TAIL.as_secs()
        ),
        "First Status (in the per-rep lines): when the new member first answered Status, and \
         the revision it reported. etcd serves clients on a new member only once it has joined \
         (applied the snapshot and published itself), so its first answer usually comes at the \
         catch-up; a server that answers earlier reports the revision it has then (a \
         serializable read there sees that revision's data)."
            .into(),
    ];
    if a.members == 1 {
        n.push(
            "With --members 1 the add makes a 2-member cluster: its quorum is 2, so no write \
             commits until the new member has received the snapshot and acknowledges the log \
             (a stall during the catch-up is raft's, not the server's)."
                .into(),
        );
    }
    n
}

/// A server's numbers in the JSON report (see `json_servers`).
#[derive(Serialize)]
struct JsonNumbers {
    samples: usize,
}

/// What the JSON report says of this run's settings (see `Prologue::json`).
#[derive(Serialize)]
struct JsonParams {
    members: usize,
    reps: usize,
    data_size: u64,
    value_size: u64,
    fill_concurrency: usize,
    load_clients: usize,
    baseline_s: f64,
    snapshot_count: u64,
    quota_backend_bytes: u64,
    poll_interval_ms: f64,
}

fn check(a: &CatchupArgs) -> Result<(), String> {
    if a.reps == 0 || a.members == 0 || a.load_clients == 0 || a.fill_concurrency == 0 {
        return Err(
            "--reps, --members, --load-clients and --fill-concurrency must be at least 1".into(),
        );
    }
    if a.data_size == 0 || a.value_size == 0 {
        return Err("--data-size and --value-size must be more than 0".into());
    }
    if a.value_size > MAX_REQUEST - 1024 {
        return Err(format!(
            "--value-size {} is too big: etcd refuses requests over {} (1.5 MiB, its \
             --max-request-bytes default), key and framing included",
            a.value_size, MAX_REQUEST
        ));
    }
    if a.data_size > a.quota_backend_bytes / 2 {
        return Err(format!(
            "--data-size ({}) must be at most half of --quota-backend-bytes ({}): the backend \
             holds more than the values",
            human(a.data_size),
            human(a.quota_backend_bytes)
        ));
    }
    if a.poll_interval < Duration::from_millis(1) || a.poll_interval > Duration::from_secs(1) {
        return Err("--poll-interval must be between 1ms and 1s".into());
    }
    Ok(())
}

fn catchup(a: &CatchupArgs, json: bool) -> Result<(), String> {
    check(a)?;
    let (p, mut servers) = Prologue::gather(&a.bins, a.data_parent.as_deref())?;
    let mut head = p.head(
        "catchup",
        &servers,
        &format!("{} member(s) + 1 added", a.members),
        a.reps,
    );
    let _ = writeln!(
        head,
        "fill: {} in {} values ({} puts, {} in flight); load: {} client(s), {LOAD_VALUE}-byte \
         puts; baseline {:.1} s",
        human(a.data_size),
        human(a.value_size),
        a.data_size.div_ceil(a.value_size),
        a.fill_concurrency,
        a.load_clients,
        secs(a.baseline)
    );
    eprint!("{head}");

    let mut ports = Vec::new();
    let t_start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    for rep in 0..a.reps {
        for i in turn(&servers, rep) {
            let s = &mut servers[i];
            match one_rep(s, rep, a, &p.parent, &mut ports) {
                Ok(x) => {
                    eprintln!(
                        "  rep {}/{} {:<8}: fill {:.1} s; MemberAdd after {:.0} ms ({} tries); \
                         caught up {:.2} s after the start (first Status {}; {:.1} MB/s; \
                         leader db {}, new member db {}); puts/s {:.0} -> {:.0} ({:+.0}%), longest stall {:.0} ms, {} \
                         load errors",
                        x.rep,
                        a.reps,
                        x.server,
                        x.fill_s,
                        x.member_add_ms,
                        x.member_add_tries,
                        x.catchup_s,
                        x.first_status_s
                            .map_or("never".into(), |t| format!("{t:.2} s")),
                        x.transfer_mb_s,
                        db(x.leader_db_size_at_add, x.leader_db_size_in_use_at_add),
                        db(x.new_member_db_size, x.new_member_db_size_in_use),
                        x.baseline_puts_s,
                        x.catchup_puts_s,
                        x.change_pct,
                        x.longest_stall_ms,
                        x.load_errors
                    );
                    samples.push(x);
                }
                Err(f) => {
                    let f = Failure {
                        summary: format!("rep {}: {}", rep + 1, f.summary),
                        logs: f.logs,
                    };
                    s.required = false;
                    let _ = s.fail(f);
                }
            }
        }
    }
    let total_s = t_start.elapsed().as_secs_f64();
    let load_end = loadavg();
    let notes = notes(a);

    if json {
        let params = JsonParams {
            members: a.members,
            reps: a.reps,
            data_size: a.data_size,
            value_size: a.value_size,
            fill_concurrency: a.fill_concurrency,
            load_clients: a.load_clients,
            baseline_s: secs(a.baseline),
            snapshot_count: a.snapshot_count,
            quota_backend_bytes: a.quota_backend_bytes,
            poll_interval_ms: secs(a.poll_interval) * 1e3,
        };
        let servers = json_servers(&servers, |s| JsonNumbers {
            samples: samples.iter().filter(|x| x.server == s.label).count(),
        });
        p.print_json(params, load_end, total_s, servers, samples, notes);
        return Ok(());
    }

    let mut t = p.report(&head, &load_end, total_s);
    let _ = writeln!(
        t,
        "A member added to a {}-member cluster holding {}: catch-up time and the write load \
         meanwhile ({} rep(s) per server):\n",
        a.members,
        human(a.data_size),
        a.reps
    );
    let header = [
        "server",
        "rep",
        "data size",
        "fill time",
        "catch-up time",
        "transfer MB/s",
        "leader db MB/s",
        "baseline puts/s",
        "puts/s during catch-up",
        "change %",
        "longest stall",
        "leader db size",
        "new member db size",
    ];
    let mut rows = Vec::new();
    for s in &servers {
        for x in samples.iter().filter(|x| x.server == s.label) {
            rows.push(vec![
                s.label.to_string(),
                x.rep.to_string(),
                human(x.fill_bytes),
                format!("{:.1} s ({:.1} MB/s)", x.fill_s, x.fill_mb_s),
                format!("{:.2} s", x.catchup_s),
                format!("{:.1}", x.transfer_mb_s),
                format!("{:.1}", x.transfer_mb_s_leader_db),
                format!("{:.0}", x.baseline_puts_s),
                format!("{:.0}", x.catchup_puts_s),
                format!("{:+.1}", x.change_pct),
                format!("{:.0} ms", x.longest_stall_ms),
                db(x.leader_db_size_at_add, x.leader_db_size_in_use_at_add),
                db(x.new_member_db_size, x.new_member_db_size_in_use),
            ]);
        }
        if let Some(f) = &s.failure {
            let mut row = vec![
                s.label.to_string(),
                "-".into(),
                human(a.data_size),
                format!("n/a ({}: {})", s.label, md(&shorten(&f.summary, 600))),
            ];
            row.extend(std::iter::repeat_n("n/a".to_string(), 9));
            rows.push(row);
        }
    }
    md_table(&mut t, &header, &rows);

    let _ = writeln!(t, "\nEach rep:");
    for x in &samples {
        let _ = writeln!(
            t,
            "  {} rep {}: {} fill puts in {:.1} s; MemberAdd via {} answered after {:.0} ms \
             ({} tries; new member {}), leader at revision {} (raft index {}, db {}); new member \
             first answered Status {} after its start{}, caught up after {:.2} s at revision {} \
             (applied index {}, db {}; {} polls); 2 s later its db was {}, its data dir {} on \
             disk; load: {} puts, {} errors{}, longest put {:.0} ms",
            x.server,
            x.rep,
            x.fill_puts,
            x.fill_s,
            x.leader,
            x.member_add_ms,
            x.member_add_tries,
            x.new_member_id,
            x.revision_at_add,
            x.raft_index_at_add,
            db(x.leader_db_size_at_add, x.leader_db_size_in_use_at_add),
            x.first_status_s
                .map_or("never".into(), |t| format!("{t:.2} s")),
            x.first_status_revision
                .map_or(String::new(), |r| format!(" (revision {r})")),
            x.catchup_s,
            x.new_member_revision,
            x.new_member_applied_index,
            human(x.new_member_db_size_at_catchup.max(0) as u64),
            x.status_polls,
            db(x.new_member_db_size, x.new_member_db_size_in_use),
            human(x.new_member_data_dir_bytes),
            x.load_puts,
            x.load_errors,
            x.load_last_error
                .as_ref()
                .map_or(String::new(), |e| format!(" (last: {})", shorten(e, 120))),
            x.longest_put_ms
        );
    }

    write_notes(&mut t, &notes);
    write_failures(&mut t, &servers);
    write_server_flags(&mut t, a.members, &extra_flags(a));
    let _ = writeln!(
        t,
        "  the added member: the same, named {NEW_NAME}, with --initial-cluster-state=existing and \
         --initial-cluster=<every member's name=peerURL, as MemberAdd answered>"
    );
    print!("{t}");
    Ok(())
}

pub fn main(a: &CatchupArgs, json: bool) -> i32 {
    exit_code("catchup", catchup(a, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("100KiB").unwrap(), 100 << 10);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_size("2m").unwrap(), 2 << 20);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("3TB").is_err());
        assert!(parse_size("x").is_err());
        assert_eq!(human(1 << 30), "1.00 GiB");
        assert_eq!(human(100 << 10), "100 KiB");
    }

    #[test]
    fn rates_count_whole_windows() {
        // 10 puts per 100 ms window for 1 s, then nothing for 0.5 s, then 5 per window.
        let mut w = vec![10u64; 10];
        w.extend([0; 5]);
        w.extend([5; 5]);
        let (r, stall) = rate(&w, 0.0, 1.0);
        assert!((r - 100.0).abs() < 1e-9 && stall == 0.0, "{r} {stall}");
        let (r, stall) = rate(&w, 1.0, 2.0);
        assert!((r - 25.0).abs() < 1e-9, "{r}");
        assert!((stall - 500.0).abs() < 1e-9, "{stall}");
        // A span shorter than a window counts the one window it rounds to.
        let (r, _) = rate(&w, 0.52, 0.53);
        assert!((r - 100.0).abs() < 1e-9, "{r}");
        // Past the end: the last window.
        let (r, _) = rate(&w, 5.0, 6.0);
        assert!((r - 50.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn the_new_member_gets_every_peer_url() {
        let m = |id: u64, name: &str, url: &str| pb::Member {
            id,
            name: name.into(),
            peer_ur_ls: vec![url.into()],
            ..Default::default()
        };
        let resp = pb::MemberAddResponse {
            member: Some(m(9, "", "http://127.0.0.1:3")),
            members: vec![
                m(1, "m0", "http://127.0.0.1:1"),
                m(9, "", "http://127.0.0.1:3"),
            ],
            ..Default::default()
        };
        assert_eq!(
            initial_cluster(&resp, "new").unwrap(),
            "m0=http://127.0.0.1:1,new=http://127.0.0.1:3"
        );
        let mut bad = resp.clone();
        bad.members[0].name.clear();
        assert!(initial_cluster(&bad, "new").is_err());
    }
}
