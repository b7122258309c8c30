//! A workload and a nemesis for a [`Cluster`]: C concurrent clients do random put / get / CAS
//! on a few keys, each over its own connection to one member (client c talks to member
//! c mod n), while the nemesis — on the calling thread, since it restarts members (see
//! cluster.rs) — injects one fault at a time from a chosen set, seeded:
//!
//! - [`Fault::KillRestart`]: SIGKILL a member (the leader or a random one), restart it later;
//! - [`Fault::PauseResume`]: SIGSTOP a member, SIGCONT it later;
//! - [`Fault::Partition`]: cut a member off from the others (isolated clusters only), heal.
//!
//! Only one member is ever faulty at a time, so a cluster of 3 or more keeps a quorum; each
//! fault is undone before the next, and after undoing it the nemesis waits (bounded) until
//! some write invoked after the recovery succeeds, so the run shows progress between faults.
//! It waits likewise for successes before the first fault and after the last recovery. Then
//! it reads the write history from every member (they must agree) and checks all ops with
//! [`history::check`](super::history::check). A summary (ops by outcome, the nemesis's
//! actions, the seed) goes to stderr.
//!
//! The clients use short per-request timeouts (2 s by default) and record a write that times
//! out as Unknown. [`Config::from_env`] reads `NEMESIS_SECS` (how long faults are injected;
//! e.g. `NEMESIS_SECS=600` for a long run), `NEMESIS_SEED` (to replay a run's fault
//! sequence) and `NEMESIS_CLIENTS`:
//!
//! ```sh
//! NEMESIS_SECS=600 CARGO_TARGET_DIR=/work/target-harness \
//!     cargo test --release --test cluster_harness nemesis -- --nocapture
//! ```
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::disk::fill_up;
use super::history::{
    check, read_history, CheckReport, Op, Outcome, Recorder, RecordingClient, WriteHistory,
};

/// The faults the nemesis picks from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    KillRestart,
    PauseResume,
    /// Isolated clusters only.
    Partition,
    /// Fill the file system under [`Config::full_disk`]'s member's data dir with a file,
    /// remove it later and disarm the alarms (a NOSPACE alarm is replicated: while it is
    /// raised the whole cluster refuses writes).
    DiskFull,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub clients: usize,
    /// Keys `key0`..`key<keys-1>`.
    pub keys: usize,
    /// How long the nemesis injects faults (the run takes longer: start-up, recovery waits,
    /// the final history read).
    pub duration: Duration,
    pub request_timeout: Duration,
    pub seed: u64,
    pub faults: Vec<Fault>,
    /// How long a fault lasts: uniform in [min, max].
    pub fault_time: (Duration, Duration),
    /// Quiet time between the end of one fault and the start of the next: uniform in
    /// [min, max].
    pub calm_time: (Duration, Duration),
    /// Bound on each wait for progress (successful ops) before, between and after faults.
    pub progress_limit: Duration,
    /// For [`Fault::DiskFull`]: the member whose data dir is on a small file system of its
    /// own, and a directory on that file system.
    pub full_disk: Option<(usize, PathBuf)>,
}

impl Config {
    /// 6 clients, 3 keys, 15 s of `faults`, 2 s request timeouts, a time-based seed; each
    /// overridden by NEMESIS_CLIENTS, NEMESIS_SECS, NEMESIS_SEED if set.
    pub fn from_env(faults: &[Fault]) -> Config {
        let env = |name: &str| -> Option<u64> {
            let v = std::env::var(name).ok()?;
            Some(
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
            )
        };
        let seed = env("NEMESIS_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64
        });
        Config {
            clients: env("NEMESIS_CLIENTS").unwrap_or(6) as usize,
            keys: 3,
            duration: Duration::from_secs(env("NEMESIS_SECS").unwrap_or(15)),
            request_timeout: Duration::from_secs(2),
            seed,
            faults: faults.to_vec(),
            fault_time: (Duration::from_millis(500), Duration::from_millis(2500)),
            calm_time: (Duration::from_millis(300), Duration::from_millis(1500)),
            progress_limit: Duration::from_secs(60),
            full_disk: None,
        }
    }
}

/// One fault the nemesis injected.
#[derive(Clone, Debug)]
pub struct Action {
    pub fault: Fault,
    pub member: usize,
    /// Whether the member was the leader when picked.
    pub was_leader: bool,
    pub start: Instant,
    /// When the fault was undone (for a kill: the member restarted and answered healthy).
    pub end: Instant,
    /// Successful writes invoked after `end`, counted when the nemesis stopped waiting.
    pub writes_after: usize,
}

/// What a run did and what the checker found.
pub struct RunReport {
    pub seed: u64,
    pub ops: Vec<Op>,
    pub actions: Vec<Action>,
    pub history: WriteHistory,
    pub check: CheckReport,
}

impl RunReport {
    /// Successful ops (including CAS that answered succeeded=false) invoked in [from, to).
    pub fn ok_ops_invoked_between(&self, from: Option<Instant>, to: Option<Instant>) -> usize {
        self.ops
            .iter()
            .filter(|o| o.outcome.is_ok())
            .filter(|o| from.is_none_or(|f| o.invoke >= f) && to.is_none_or(|t| o.invoke < t))
            .count()
    }

    /// Successful ops invoked before the first fault.
    pub fn ok_before_first_fault(&self) -> usize {
        self.ok_ops_invoked_between(None, self.actions.first().map(|a| a.start))
    }

    /// Successful ops invoked after the last fault was undone.
    pub fn ok_after_last_recovery(&self) -> usize {
        self.ok_ops_invoked_between(self.actions.last().map(|a| a.end), None)
    }

    /// Faults after which no write succeeded within the progress limit.
    pub fn faults_without_progress(&self) -> Vec<&Action> {
        self.actions
            .iter()
            .filter(|a| a.writes_after == 0)
            .collect()
    }

    /// Panics unless the checker found nothing, ops succeeded before the first fault and
    /// after the last recovery, and writes succeeded after every fault.
    pub fn assert_ok(&self) {
        self.check.assert_ok();
        assert!(
            self.ok_before_first_fault() > 0,
            "no op succeeded before the first fault"
        );
        assert!(
            self.ok_after_last_recovery() > 0,
            "no op succeeded after the last recovery"
        );
        let stuck = self.faults_without_progress();
        assert!(
            stuck.is_empty(),
            "no write succeeded after these faults were undone: {stuck:?}"
        );
    }
}

/// A small seeded generator (splitmix64): the nemesis's choices replay from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [lo, hi].
    pub fn duration(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.next_u64() % (span + 1))
    }
}

/// Sets the flag when dropped (so clients stop even if the nemesis panics).
pub struct SetOnDrop<'a>(&'a AtomicBool);

impl<'a> SetOnDrop<'a> {
    pub fn new(flag: &'a AtomicBool) -> SetOnDrop<'a> {
        SetOnDrop(flag)
    }
}

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs the workload and the nemesis on `cluster` (see the module docs), then reads and
/// checks the history. Does not assert: see [`RunReport::assert_ok`].
pub fn run(cluster: &mut Cluster, cfg: &Config) -> RunReport {
    let recorder = Recorder::new();
    let actions = run_faults(cluster, cfg, &recorder, &mut |_| {});
    let ops = recorder.ops();
    let (history, check) = final_check(cluster, &ops);
    eprint!("{}", summary(cfg.seed, &ops, &actions, &check));
    RunReport {
        seed: cfg.seed,
        ops,
        actions,
        history,
        check,
    }
}

/// The workload's clients (recording into `recorder`) and the nemesis, until the faults'
/// time is over, every fault is undone, every member is healthy and the clients have made
/// progress again; then the clients stop. `between_faults` is called before each fault and
/// at the end (e.g. to sample the members' resources). Returns the faults injected.
pub fn run_faults(
    cluster: &mut Cluster,
    cfg: &Config,
    recorder: &Recorder,
    between_faults: &mut dyn FnMut(&Cluster),
) -> Vec<Action> {
    assert!(
        !cfg.faults.contains(&Fault::Partition) || cluster.is_isolated(),
        "Fault::Partition needs a cluster from Cluster::start_isolated"
    );
    assert!(
        !cfg.faults.contains(&Fault::DiskFull) || cfg.full_disk.is_some(),
        "Fault::DiskFull needs Config::full_disk"
    );
    assert!(!cfg.faults.is_empty(), "no faults to inject");
    eprintln!(
        "nemesis: {} clients on a {}-member {} cluster, faults {:?} for {:?}, NEMESIS_SEED={}",
        cfg.clients,
        cluster.len(),
        cluster.kind.name(),
        cfg.faults,
        cfg.duration,
        cfg.seed
    );
    let stop = AtomicBool::new(false);
    let keys: Vec<String> = (0..cfg.keys).map(|k| format!("key{k}")).collect();
    let endpoints = cluster.endpoints();
    let mut rng = Rng::new(cfg.seed);
    let mut actions = Vec::new();
    std::thread::scope(|s| {
        let _stop_clients = SetOnDrop(&stop);
        for c in 0..cfg.clients {
            let client = recorder.client(&endpoints[c % endpoints.len()], cfg.request_timeout);
            let keys = &keys;
            let stop = &stop;
            let seed = cfg.seed ^ (c as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
            s.spawn(move || client_loop(client, keys, seed, stop));
        }
        let start = Instant::now();
        wait_progress(recorder, start, cfg.clients, false, cfg.progress_limit);
        let deadline = Instant::now() + cfg.duration;
        loop {
            std::thread::sleep(rng.duration(cfg.calm_time));
            between_faults(cluster);
            if Instant::now() >= deadline {
                break;
            }
            let fault = cfg.faults[rng.below(cfg.faults.len())];
            let leader = cluster.leader();
            let member = match (fault, &cfg.full_disk, leader) {
                (Fault::DiskFull, Some((m, _)), _) => *m,
                (_, _, Some(l)) if rng.below(2) == 0 => l,
                _ => rng.below(cluster.len()),
            };
            let hold = rng.duration(cfg.fault_time);
            let was_leader = leader == Some(member);
            eprintln!(
                "nemesis: {fault:?} member {member}{} for {hold:?}",
                if was_leader { " (leader)" } else { "" }
            );
            let fault_start = Instant::now();
            match fault {
                Fault::KillRestart => {
                    cluster.kill(member);
                    std::thread::sleep(hold);
                    cluster.restart(member);
                }
                Fault::PauseResume => {
                    cluster.pause(member);
                    std::thread::sleep(hold);
                    cluster.resume(member);
                }
                Fault::Partition => {
                    cluster.isolate(member);
                    std::thread::sleep(hold);
                    cluster.heal();
                }
                Fault::DiskFull => {
                    let dir = &cfg.full_disk.as_ref().expect("checked above").1;
                    let ballast = fill_up(dir);
                    std::thread::sleep(hold);
                    std::fs::remove_file(&ballast).expect("cannot remove the ballast");
                }
            }
            let end = Instant::now();
            let writes_after = if fault == Fault::DiskFull {
                // Until the member's next commit finds the space freed (it retries each
                // second), it may raise its alarm again right after a disarm: disarm until
                // a round finds no alarm raised and writes went through since the round
                // before.
                let deadline = end + cfg.progress_limit;
                // An alarm proposed just before the space was freed is applied by then.
                std::thread::sleep(Duration::from_millis(1500));
                let mut round = end;
                loop {
                    let disarmed = cluster.disarm_alarms();
                    if disarmed > 0 {
                        eprintln!("nemesis: disarmed {disarmed} alarm(s)");
                    }
                    let n = wait_progress(recorder, round, 1, true, Duration::from_secs(2));
                    if (n > 0 && disarmed == 0) || Instant::now() >= deadline {
                        break n;
                    }
                    round = Instant::now();
                }
            } else {
                wait_progress(recorder, end, 1, true, cfg.progress_limit)
            };
            actions.push(Action {
                fault,
                member,
                was_leader,
                start: fault_start,
                end,
                writes_after,
            });
        }
        // Every fault is undone by now; let every member catch up and the clients show
        // progress on the whole cluster.
        cluster.wait_all_healthy();
        let calm = Instant::now();
        wait_progress(recorder, calm, cfg.clients, false, cfg.progress_limit);
        stop.store(true, Ordering::SeqCst);
    });
    actions
}

/// What a run did, for stderr: the checker's verdict, the most frequent errors, the faults.
pub fn summary(seed: u64, ops: &[Op], actions: &[Action], check: &CheckReport) -> String {
    let t0 = ops
        .iter()
        .map(|o| o.invoke)
        .min()
        .unwrap_or_else(Instant::now);
    let mut errors: HashMap<String, usize> = HashMap::new();
    for o in ops {
        if let Outcome::Failed(e) | Outcome::Unknown(e) = &o.outcome {
            let e: String = e.chars().take(160).collect();
            *errors.entry(e).or_default() += 1;
        }
    }
    let mut errors: Vec<(String, usize)> = errors.into_iter().collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    let mut summary = format!(
        "nemesis summary (NEMESIS_SEED={seed}): {} violation(s); the most frequent errors:\n",
        check.violations.len()
    );
    for (e, n) in errors.iter().take(6) {
        summary += &format!("  {n:>6} x {e}\n");
    }
    summary += "faults:\n";
    for a in actions {
        summary += &format!(
            "  {:>8.3}s..{:>8.3}s {:?} member {}{}; {} writes succeeded after it\n",
            a.start.duration_since(t0).as_secs_f64(),
            a.end.duration_since(t0).as_secs_f64(),
            a.fault,
            a.member,
            if a.was_leader { " (leader)" } else { "" },
            a.writes_after
        );
    }
    summary
}

/// One client: random ops on `keys` until `stop`. A CAS expects the last value this client
/// saw for the key (with no such value it reads or puts instead).
fn client_loop(mut c: RecordingClient, keys: &[String], seed: u64, stop: &AtomicBool) {
    let mut rng = Rng::new(seed);
    let mut seen: HashMap<&str, String> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        let key = keys[rng.below(keys.len())].as_str();
        let outcome = match (rng.below(10), seen.get(key).cloned()) {
            // 40% reads; a CAS with nothing to expect becomes a read or a put.
            (0..=3, _) | (7..=8, None) => {
                let o = c.get(key);
                if let Outcome::Get {
                    kv: Some((v, _)), ..
                } = &o
                {
                    seen.insert(key, v.clone());
                }
                o
            }
            (7..=9, Some(old)) => {
                let v = c.unique_value();
                let o = c.cas(key, &old, &v);
                if let Outcome::Cas {
                    succeeded: true, ..
                } = o
                {
                    seen.insert(key, v);
                } else {
                    seen.remove(key);
                }
                o
            }
            _ => {
                let v = c.unique_value();
                let o = c.put(key, &v);
                if o.is_ok() {
                    seen.insert(key, v);
                }
                o
            }
        };
        if !outcome.is_ok() {
            // The member may be down: do not spin (this spacing is not relied on).
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until `need` successful ops (writes only, if `writes`) invoked after `since` are
/// recorded, or `limit` passes; returns how many there were.
pub fn wait_progress(
    recorder: &Recorder,
    since: Instant,
    need: usize,
    writes: bool,
    limit: Duration,
) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let n = recorder.count_invoked_since(since, |o| {
            o.outcome.is_ok() && (!writes || matches!(o.write_applied(), Some(Some(true))))
        });
        if n >= need || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the write history from every running member (each must hold the same writes, up to
/// the revision the first one reports) and checks `ops` against it. Prints the checker's
/// summary.
pub fn final_check(cluster: &Cluster, ops: &[Op]) -> (WriteHistory, CheckReport) {
    let limit = Duration::from_secs(60);
    let live: Vec<usize> = (0..cluster.len())
        .filter(|&i| cluster.is_running(i) && !cluster.is_paused(i))
        .collect();
    assert!(!live.is_empty(), "no member runs");
    let first = live[0];
    let history = read_history(&cluster.endpoint(first), None, limit)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs_tail(20)));
    for &i in &live[1..] {
        let other = read_history(&cluster.endpoint(i), Some(history.final_revision), limit)
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs_tail(20)));
        if other.events != history.events {
            let at = history
                .events
                .iter()
                .zip(&other.events)
                .position(|(a, b)| a != b)
                .unwrap_or(history.events.len().min(other.events.len()));
            panic!(
                "members {first} and {i} hold different histories: {} and {} writes, first \
                 difference at index {at}: {:?} vs {:?}",
                history.events.len(),
                other.events.len(),
                history.events.get(at),
                other.events.get(at)
            );
        }
    }
    let report = check(ops, &history);
    eprintln!(
        "history check over {} members: {}; {} violation(s)",
        live.len(),
        report.summary(),
        report.violations.len()
    );
    (history, report)
}
