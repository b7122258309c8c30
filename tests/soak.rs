//! The soak: a mixed workload on 3 corekv members under a nemesis, checked for
//! linearizability and lost writes, with the members' memory and file descriptors sampled
//! over time. In the suite it runs for 20 s of faults; the 30-minute run the README
//! documents is
//!
//! ```sh
//! SOAK_SECS=1800 cargo test --release --test soak -- --nocapture
//! ```
//!
//! (`SOAK_KIND=etcd` runs it against etcd 3.4 instead.)
//!
//! The workload, all at once:
//! - the nemesis's checked clients (tests/common/nemesis.rs): puts, linearizable gets and
//!   compare-and-swap txns on `key0`..`key2`, each recorded;
//! - two background writers on `bg/*`: 1 KiB puts, txns that put one key or another by a
//!   compare, deletes, and prefix ranges; every acknowledged write is kept;
//! - a lease client: grants leases of 2–5 s, puts `lease/<n>` under each and lets most
//!   expire (revoking some);
//! - three watchers that follow the cluster (one on every key, one on `key`, one on `bg/`),
//!   each starting on its own member and moving to another when its member stops answering,
//!   resuming from the revision after the last event it saw;
//! - compactions (never past what every watcher has seen) and defragments of a random
//!   member, 4 times a run and at least once a minute.
//!
//! The nemesis: kill -9 and restart, SIGSTOP/SIGCONT, partitions (network namespaces), and
//! a full disk on member 2, whose data dir is on a 512 MiB tmpfs (filled with a file, then
//! freed and the NOSPACE alarm disarmed). Partitions and the full disk need root; without
//! it the soak runs with kills and pauses only, and says so.
//!
//! Checked at the end:
//! - the checked clients' ops against the history the all-keys watcher recorded
//!   (tests/common/history.rs: every acknowledged write at its revision, reads equal to the
//!   history at their revision, real-time order, CAS semantics; no gaps in revisions);
//! - every acknowledged background write is in that history at its revision;
//! - each other watcher saw exactly the recorded history's events in its range, from its
//!   start revision, in order, none missing or repeated — across its member changes;
//! - every member's HashKV at the final revision is the same;
//! - every leased key is gone once its lease has expired (bounded wait);
//! - at every sample, each member's RSS and open fds are under the bounds below, and each
//!   long-lived member process's RSS grows by no more than [`RSS_GROWTH_BOUND`] between its
//!   first and last sample.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::disk::Tmpfs;
use common::history::{check_with_background, Event, Recorder, WriteHistory};
use common::nemesis::{self, Config, Fault, Rng};
use common::Kind;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};

/// Each member's resident memory must stay under this at every sample.
const RSS_BOUND: u64 = 1 << 30;
/// A member process that lived through a stretch of the run may not grow its RSS by more
/// than this between its first sample taken after a minute of life and its last one.
const RSS_GROWTH_BOUND: u64 = 256 << 20;
/// Each member's open file descriptors must stay under this at every sample.
const FD_BOUND: usize = 512;

const MIB: u64 = 1 << 20;

/// The nemesis's checked keys are `key0`..; everything else is background.
fn checked(e: &Event, keys: usize) -> bool {
    e.key
        .strip_prefix("key")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| n < keys)
}

/// What the background workload threads share with the test.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Each watcher's progress: the revision of the last event it saw.
    watched: Mutex<Vec<i64>>,
    /// Acknowledged background puts: (key, value, revision).
    bg_acked: Mutex<Vec<(String, String, i64)>>,
    bg_ok: AtomicU64,
    bg_failed: AtomicU64,
    leases_granted: AtomicU64,
    leased_puts: AtomicU64,
    compactions: AtomicU64,
    defrags: AtomicU64,
}

/// Stops the workload threads and gives the watchers no more time, when dropped.
struct StopOnDrop<'a>(&'a Shared, &'a Mutex<Option<Instant>>);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
        if std::thread::panicking() {
            *self.1.lock().unwrap() = Some(Instant::now());
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
}

fn connect_opts() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(3))
}

/// Runs `f` on a client of one of `endpoints` (starting at `*at`, moving on after an error
/// or 3 s without an answer); the error text after a failed try.
fn with_client<T, F, Fut>(
    rt: &tokio::runtime::Runtime,
    client: &mut Option<Client>,
    endpoints: &[String],
    at: &mut usize,
    f: F,
) -> Result<T, String>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let ep = endpoints[*at % endpoints.len()].clone();
    let existing = client.clone();
    let r = rt.block_on(async move {
        tokio::time::timeout(Duration::from_secs(3), async move {
            let c = match existing {
                Some(c) => c,
                None => Client::connect([ep], Some(connect_opts())).await?,
            };
            let out = f(c.clone()).await?;
            Ok::<_, etcd_client::Error>((c, out))
        })
        .await
    });
    match r {
        Ok(Ok((c, out))) => {
            *client = Some(c);
            Ok(out)
        }
        Ok(Err(e)) => {
            let _g = rt.enter();
            *client = None;
            *at += 1;
            Err(e.to_string())
        }
        Err(_) => {
            let _g = rt.enter();
            *client = None;
            *at += 1;
            Err("no answer within 3 s".into())
        }
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(-1, |h| h.revision())
}

/// A background writer: puts, txns, deletes and ranges on `bg/*` until told to stop.
fn background_writer(id: u64, endpoints: &[String], seed: u64, shared: &Shared) {
    let rt = runtime();
    let mut rng = Rng::new(seed);
    let mut client = None;
    let mut at = id as usize;
    let mut seq = 0u64;
    let pad = "x".repeat(1000);
    while !shared.stop.load(Ordering::SeqCst) {
        seq += 1;
        let key = format!("bg/{}", rng.below(200));
        let value = format!("w{id}.{seq}.{pad}");
        let r = match rng.below(10) {
            0..=4 => {
                let (k, v) = (key.clone(), value.clone());
                with_client(&rt, &mut client, endpoints, &mut at, |mut c| async move {
                    let r = c.put(k, v, None).await?;
                    Ok(Some((key, header_revision(r.header()))))
                })
            }
            5..=6 => {
                let other = format!("bg/{}", rng.below(200));
                let (k, o, v) = (key.clone(), other.clone(), value.clone());
                with_client(&rt, &mut client, endpoints, &mut at, |mut c| async move {
                    let txn = Txn::new()
                        .when([Compare::mod_revision(k.clone(), CompareOp::Greater, 0)])
                        .and_then([TxnOp::put(k.clone(), v.clone(), None)])
                        .or_else([TxnOp::put(o.clone(), v, None)]);
                    let r = c.txn(txn).await?;
                    let written = if r.succeeded() { k } else { o };
                    Ok(Some((written, header_revision(r.header()))))
                })
            }
            7 => with_client(&rt, &mut client, endpoints, &mut at, |mut c| async move {
                c.delete(key, None).await?;
                Ok(None)
            }),
            _ => {
                let serializable = rng.below(2) == 0;
                with_client(&rt, &mut client, endpoints, &mut at, |mut c| async move {
                    let mut o = GetOptions::new().with_prefix().with_limit(50);
                    if serializable {
                        o = o.with_serializable();
                    }
                    c.get("bg/", Some(o)).await?;
                    Ok(None)
                })
            }
        };
        match r {
            Ok(written) => {
                shared.bg_ok.fetch_add(1, Ordering::Relaxed);
                if let Some((k, rev)) = written {
                    shared.bg_acked.lock().unwrap().push((k, value, rev));
                }
            }
            Err(_) => {
                shared.bg_failed.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Leases of 2–5 s with a key each, most left to expire, some revoked.
fn lease_client(endpoints: &[String], seed: u64, shared: &Shared) {
    let rt = runtime();
    let mut rng = Rng::new(seed);
    let mut client = None;
    let mut at = 2;
    let mut n = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        n += 1;
        let ttl = 2 + rng.below(4) as i64;
        let revoke = rng.below(4) == 0;
        let key = format!("lease/{n}");
        let r = with_client(&rt, &mut client, endpoints, &mut at, |mut c| async move {
            let id = c.lease_grant(ttl, None).await?.id();
            c.put(key, "leased", Some(PutOptions::new().with_lease(id)))
                .await?;
            if revoke {
                c.lease_revoke(id).await?;
            }
            Ok(())
        });
        match r {
            Ok(()) => {
                shared.leases_granted.fetch_add(1, Ordering::Relaxed);
                shared.leased_puts.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A compaction behind every watcher and a defragment of a random member, 4 times over
/// `span` and at least once a minute (the history between compactions is what the members
/// hold in memory and on disk).
fn maintenance(endpoints: &[String], span: Duration, seed: u64, shared: &Shared) {
    let rt = runtime();
    let mut rng = Rng::new(seed);
    let step = (span / 4).min(Duration::from_secs(60));
    let mut next = Instant::now() + step / 2;
    let mut compacted = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        next += step;
        let behind = *shared.watched.lock().unwrap().iter().min().unwrap_or(&0) - 50;
        if behind > compacted {
            let mut at = rng.below(endpoints.len());
            for _ in 0..endpoints.len() {
                let r = with_client(&rt, &mut None, endpoints, &mut at, |mut c| async move {
                    c.compact(behind, None).await
                });
                if r.is_ok() {
                    compacted = behind;
                    shared.compactions.fetch_add(1, Ordering::Relaxed);
                    eprintln!("soak: compacted at {behind}");
                    break;
                }
            }
        }
        let first = rng.below(endpoints.len());
        for at in first..first + endpoints.len() {
            let member = at % endpoints.len();
            // Defragment takes longer than the 3 s other calls get.
            let ep = endpoints[member].clone();
            let r = rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(20), async move {
                    let mut c = Client::connect([ep], Some(connect_opts())).await?;
                    c.defragment().await
                })
                .await
            });
            if let Ok(Ok(_)) = r {
                shared.defrags.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak: defragmented member {member}");
                break;
            }
        }
    }
}

/// What a watcher watches.
#[derive(Clone, Copy, Debug)]
enum Range {
    All,
    Prefix(&'static str),
}

impl Range {
    fn holds(self, key: &str) -> bool {
        match self {
            Range::All => true,
            Range::Prefix(p) => key.starts_with(p),
        }
    }
}

/// One watcher's view: its events, how often it moved to another member.
struct Watched {
    range: Range,
    events: Vec<Event>,
    moves: usize,
    error: Option<String>,
}

/// Follows the cluster's writes in `range` from revision 1, starting on member `first` and
/// moving on when a member stops answering, until the marker key `end` appears.
fn watcher(
    slot: usize,
    range: Range,
    endpoints: &[String],
    first: usize,
    end: &str,
    deadline: &Mutex<Option<Instant>>,
    shared: &Shared,
) -> Watched {
    let rt = runtime();
    let mut w = Watched {
        range,
        events: Vec::new(),
        moves: 0,
        error: None,
    };
    let mut at = first;
    let mut next = 1i64;
    let expired = || deadline.lock().unwrap().is_some_and(|d| Instant::now() > d);
    'members: loop {
        if expired() {
            w.error = Some(format!("{range:?}: did not see {end} in time"));
            return w;
        }
        let ep = endpoints[at % endpoints.len()].clone();
        let r: Result<bool, String> = rt.block_on(async {
            let mut c = Client::connect([ep.clone()], Some(connect_opts()))
                .await
                .map_err(|e| e.to_string())?;
            let (key, opts) = match range {
                Range::All => ("", WatchOptions::new().with_all_keys()),
                Range::Prefix(p) => (p, WatchOptions::new().with_prefix()),
            };
            let mut stream = tokio::time::timeout(
                Duration::from_secs(3),
                c.watch(key, Some(opts.with_start_revision(next))),
            )
            .await
            .map_err(|_| "watch not created within 3 s".to_string())?
            .map_err(|e| e.to_string())?;
            loop {
                match tokio::time::timeout(Duration::from_secs(3), stream.message()).await {
                    Ok(Ok(Some(resp))) => {
                        if resp.canceled() {
                            return Err(format!("canceled: {}", resp.cancel_reason()));
                        }
                        for ev in resp.events() {
                            let kv = ev.kv().ok_or("an event without kv")?;
                            let e = Event {
                                revision: kv.mod_revision(),
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                value: String::from_utf8_lossy(kv.value()).into_owned(),
                                delete: ev.event_type() == EventType::Delete,
                            };
                            next = e.revision + 1;
                            let done = e.key == end;
                            w.events.push(e);
                            if done {
                                return Ok(true);
                            }
                        }
                        // Events of one revision arrive in one response: all before `next`
                        // are in.
                        shared.watched.lock().unwrap()[slot] = next - 1;
                    }
                    Ok(Ok(None)) => return Err("the watch stream ended".into()),
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) if expired() => return Err("out of time".into()),
                    Err(_) => {
                        // Quiet for 3 s: is the member still serving (it answers a
                        // linearizable read only with a quorum behind it)?
                        let alive =
                            tokio::time::timeout(Duration::from_secs(2), c.get("probe", None))
                                .await;
                        if !matches!(alive, Ok(Ok(_))) {
                            return Err("the member stopped answering".into());
                        }
                    }
                }
            }
        });
        match r {
            Ok(_) => return w,
            Err(e) => {
                if e.contains("compacted") {
                    w.error = Some(format!("{range:?}: resuming at {next}: {e}"));
                    return w;
                }
                at += 1;
                w.moves += 1;
                std::thread::sleep(Duration::from_millis(100));
                continue 'members;
            }
        }
    }
}

/// One sample of a member's resources.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Duration,
    pid: u32,
    rss: u64,
    fds: usize,
}

fn sample(pid: u32, at: Duration) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Sample {
        at,
        pid,
        rss: rss_kb * 1024,
        fds,
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn soak() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .map(|v| v.parse().expect("SOAK_SECS is a number of seconds"))
        .unwrap_or(20);
    // SOAK_KIND=etcd runs the same soak against etcd 3.4, for comparison.
    let kind = match std::env::var("SOAK_KIND").as_deref() {
        Ok("etcd") => Kind::Etcd,
        _ => Kind::Corekv,
    };
    // Frequent snapshots (and for corekv small segments) keep the WAL on the tmpfs member
    // small.
    let flags: &[&str] = match kind {
        Kind::Corekv => &[
            "--cores=1",
            "--wal-segment-bytes=4194304",
            "--snapshot-count=10000",
        ],
        Kind::Etcd => &["--snapshot-count=10000"],
    };
    let root = is_root();
    let tmpfs = if root {
        Some(Tmpfs::mount(512 * MIB as usize).expect("cannot mount a tmpfs"))
    } else {
        eprintln!("soak: not root: no partitions and no full disk, kills and pauses only");
        None
    };
    let mut cluster = if root {
        Cluster::start_isolated(kind, 3, flags)
    } else {
        Cluster::start(kind, 3, flags)
    };
    let mut faults = vec![Fault::KillRestart, Fault::PauseResume];
    let mut cfg = Config::from_env(&faults);
    if let Some(fs) = &tmpfs {
        cluster.kill(2);
        cluster.move_data_dir(2, &fs.path().join("m2.data"));
        cluster.restart(2);
        faults.extend([Fault::Partition, Fault::DiskFull]);
        cfg.faults = faults;
        cfg.full_disk = Some((2, fs.path().to_path_buf()));
    }
    cfg.duration = Duration::from_secs(secs);
    let endpoints = cluster.endpoints();
    let recorder = Recorder::new();
    let shared = Shared {
        watched: Mutex::new(vec![0; 3]),
        ..Default::default()
    };
    let watch_deadline: Mutex<Option<Instant>> = Mutex::new(None);
    let ranges = [Range::All, Range::Prefix("key"), Range::Prefix("bg/")];
    let markers = ["zz-end", "key-end", "bg/end"];
    let t0 = Instant::now();
    let mut samples: HashMap<usize, Vec<Sample>> = HashMap::new();
    let mut last_print = Instant::now();

    let (actions, watched) = std::thread::scope(|s| {
        // If the nemesis panics, the workload and the watchers must stop too, or the scope
        // never ends.
        let _stop = StopOnDrop(&shared, &watch_deadline);
        let watchers: Vec<_> = (0..3)
            .map(|i| {
                let (endpoints, shared, deadline) = (&endpoints, &shared, &watch_deadline);
                let (range, marker) = (ranges[i], markers[i]);
                s.spawn(move || watcher(i, range, endpoints, i, marker, deadline, shared))
            })
            .collect();
        let mut workers = Vec::new();
        for id in 0..2u64 {
            let (endpoints, shared) = (&endpoints, &shared);
            let seed = cfg.seed ^ (0xb6 + id);
            workers.push(s.spawn(move || background_writer(id, endpoints, seed, shared)));
        }
        {
            let (endpoints, shared) = (&endpoints, &shared);
            let seed = cfg.seed ^ 0x1ea5e;
            workers.push(s.spawn(move || lease_client(endpoints, seed, shared)));
            let span = cfg.duration;
            workers.push(s.spawn(move || maintenance(endpoints, span, seed, shared)));
        }

        let actions = nemesis::run_faults(&mut cluster, &cfg, &recorder, &mut |c| {
            for i in 0..c.len() {
                if c.is_running(i) {
                    if let Some(smp) = sample(c.pid(i), t0.elapsed()) {
                        samples.entry(i).or_default().push(smp);
                    }
                }
            }
            if last_print.elapsed() >= Duration::from_secs(60) {
                last_print = Instant::now();
                let now: Vec<String> = (0..c.len())
                    .filter_map(|i| samples.get(&i)?.last().map(|s| (i, s)))
                    .map(|(i, s)| format!("m{i} rss {} MiB fds {}", s.rss / MIB, s.fds))
                    .collect();
                eprintln!("soak: {:>5} s: {}", t0.elapsed().as_secs(), now.join(", "));
            }
        });
        shared.stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().expect("a workload thread panicked");
        }
        // The markers end each watcher's range; then every watcher must finish.
        let rt = runtime();
        let ep = endpoints.clone();
        rt.block_on(async move {
            let mut c = Client::connect(ep, None)
                .await
                .expect("connect for the markers");
            // The all-keys watcher's marker last: it must see the others'.
            for m in markers.iter().rev() {
                c.put(*m, "end", None).await.expect("marker put");
            }
        });
        *watch_deadline.lock().unwrap() = Some(Instant::now() + Duration::from_secs(120));
        let watched: Vec<Watched> = watchers
            .into_iter()
            .map(|w| w.join().expect("a watcher panicked"))
            .collect();
        (actions, watched)
    });

    for w in &watched {
        assert!(w.error.is_none(), "watcher: {}", w.error.as_ref().unwrap());
    }
    // The all-keys watcher's record is the history.
    let all = &watched[0].events;
    let final_revision = all.last().map_or(1, |e| e.revision);
    let history = WriteHistory {
        base_revision: 1,
        final_revision,
        events: all.clone(),
    };
    let keys = cfg.keys;
    let ops = recorder.ops();
    let report = check_with_background(&ops, &history, |e| !checked(e, keys));
    eprint!("{}", nemesis::summary(cfg.seed, &ops, &actions, &report));

    // The other watchers, across their member changes, saw exactly the history's events in
    // their ranges.
    for w in &watched[1..] {
        let want: Vec<&Event> = all.iter().filter(|e| w.range.holds(&e.key)).collect();
        let got: Vec<&Event> = w.events.iter().collect();
        if want != got {
            let at = want
                .iter()
                .zip(&got)
                .position(|(a, b)| a != b)
                .unwrap_or(want.len().min(got.len()));
            panic!(
                "the {:?} watcher saw {} events, the history has {} in its range; first \
                 difference at {at}: {:?} vs {:?}",
                w.range,
                got.len(),
                want.len(),
                got.get(at),
                want.get(at)
            );
        }
    }

    // Every acknowledged background write is in the history at its revision.
    let at_revision: HashMap<(&str, &str), i64> = all
        .iter()
        .filter(|e| !e.delete)
        .map(|e| ((e.key.as_str(), e.value.as_str()), e.revision))
        .collect();
    let bg = shared.bg_acked.lock().unwrap();
    for (k, v, rev) in bg.iter() {
        assert_eq!(
            at_revision.get(&(k.as_str(), v.as_str())),
            Some(rev),
            "acknowledged background write to {k} at @{rev} is not in the history there"
        );
    }

    // Every member holds the same data at the final revision.
    let rt = runtime();
    let hashes: Vec<u32> = endpoints
        .iter()
        .map(|ep| {
            let ep = ep.clone();
            rt.block_on(async move {
                let mut c = Client::connect([ep], None)
                    .await
                    .expect("connect for HashKV");
                c.hash_kv(final_revision)
                    .await
                    .expect("HashKV at the final revision")
                    .hash()
            })
        })
        .collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "members' HashKV at @{final_revision} differ: {hashes:?}"
    );

    // Every leased key goes once its lease expires (the longest is 5 s; leader changes
    // may extend leases, hence the generous bound).
    let ep = endpoints.clone();
    let left = rt.block_on(async move {
        let mut c = Client::connect(ep, None).await.expect("connect");
        let until = Instant::now() + Duration::from_secs(90);
        loop {
            let n = c
                .get(
                    "lease/",
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .expect("count leased keys")
                .count();
            if n == 0 || Instant::now() > until {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    assert_eq!(
        left, 0,
        "leased keys still there 90 s after the workload stopped"
    );

    // Resources over time.
    eprintln!("soak: resources per member (RSS MiB / open fds), sampled between faults:");
    for i in 0..3 {
        let ss = samples.get(&i).map(Vec::as_slice).unwrap_or_default();
        let max_rss = ss.iter().map(|s| s.rss).max().unwrap_or(0);
        let max_fds = ss.iter().map(|s| s.fds).max().unwrap_or(0);
        let mut by_pid: Vec<(u32, Vec<&Sample>)> = Vec::new();
        for s in ss {
            match by_pid.last_mut() {
                Some((p, v)) if *p == s.pid => v.push(s),
                _ => by_pid.push((s.pid, vec![s])),
            }
        }
        eprintln!(
            "  m{i}: {} samples over {} processes, max RSS {} MiB, max fds {max_fds}",
            ss.len(),
            by_pid.len(),
            max_rss / MIB
        );
        for (pid, v) in &by_pid {
            // Growth of one process after its first minute (start-up and cache warm-up).
            let settled: Vec<&&Sample> = v
                .iter()
                .filter(|s| s.at >= v[0].at + Duration::from_secs(60))
                .collect();
            if let (Some(a), Some(b)) = (settled.first(), settled.last()) {
                eprintln!(
                    "    pid {pid}: {:.0}..{:.0} s, RSS {} -> {} MiB, fds {} -> {}",
                    a.at.as_secs_f64(),
                    b.at.as_secs_f64(),
                    a.rss / MIB,
                    b.rss / MIB,
                    a.fds,
                    b.fds
                );
                assert!(
                    b.rss <= a.rss + RSS_GROWTH_BOUND,
                    "m{i} (pid {pid}) grew from {} to {} MiB",
                    a.rss / MIB,
                    b.rss / MIB
                );
            }
        }
        assert!(max_rss <= RSS_BOUND, "m{i} reached {} MiB", max_rss / MIB);
        assert!(max_fds <= FD_BOUND, "m{i} held {max_fds} fds");
    }
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    eprintln!(
        "soak: {} s of faults ({} injected); background ops ok {} / failed {}, {} acknowledged \
         writes checked; {} leases granted; {} compactions, {} defragments; watchers moved \
         {:?} times; history {} events up to @{final_revision}",
        secs,
        actions.len(),
        n(&shared.bg_ok),
        n(&shared.bg_failed),
        bg.len(),
        n(&shared.leases_granted),
        n(&shared.compactions),
        n(&shared.defrags),
        watched.iter().map(|w| w.moves).collect::<Vec<_>>(),
        all.len()
    );
    report.assert_ok();
    assert!(!actions.is_empty(), "the nemesis did nothing");
    assert!(n(&shared.compactions) > 0, "no compaction succeeded");
    assert!(n(&shared.defrags) > 0, "no defragment succeeded");
    assert!(!bg.is_empty(), "no background write was acknowledged");
    let stuck: Vec<_> = actions.iter().filter(|a| a.writes_after == 0).collect();
    assert!(stuck.is_empty(), "no write succeeded after: {stuck:?}");
    drop(cluster);
    drop(tmpfs);
}
