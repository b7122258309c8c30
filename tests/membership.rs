//! Runtime reconfiguration with real processes: grow and shrink under write load, learners,
//! replacing a wiped member, removing the leader, moving the leader. Each scenario runs the
//! same steps against etcd 3.4 (with etcdctl) and against corekv (with corekvctl), records
//! every answer and error with member IDs, URLs and the cluster ID replaced by names, and
//! the two records must be equal. After each step every member's HashKV at one revision is
//! equal, and at the end no acknowledged write of the load is missing.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{require_binary, DieWithTest, Kind};

/// How long a step that waits for the cluster (a catch-up, a promote) may take.
const WAIT: Duration = Duration::from_secs(60);

fn flags(kind: Kind, extra: &[&'static str]) -> Vec<&'static str> {
    let mut f = match kind {
        // Up to five members share two cores: one executor each.
        Kind::Corekv => vec!["--cores=1"],
        Kind::Etcd => vec![],
    };
    f.extend(extra);
    f
}

/// A cluster with a record of what its control tool answered.
struct Run {
    c: Cluster,
    /// Normalised answers, in order.
    record: Vec<String>,
    /// Member id (hex) → its slot's name, learned from member lists.
    ids: HashMap<u64, String>,
    cluster_id: u64,
}

impl Run {
    fn start(kind: Kind, n: usize, extra: &[&'static str]) -> Run {
        let c = Cluster::start(kind, n, &flags(kind, extra));
        let mut r = Run {
            c,
            record: Vec::new(),
            ids: HashMap::new(),
            cluster_id: 0,
        };
        r.learn_ids();
        r
    }

    fn kind(&self) -> Kind {
        self.c.kind
    }

    fn ctl_binary(&self) -> std::path::PathBuf {
        match self.kind() {
            Kind::Corekv => env!("CARGO_BIN_EXE_corekvctl").into(),
            Kind::Etcd => require_binary("etcdctl"),
        }
    }

    /// Runs the control tool against members `via`: (success, stdout, stderr).
    fn ctl_raw(&self, via: &[usize], args: &[&str]) -> (bool, String, String) {
        let eps: Vec<String> = via.iter().map(|&i| self.c.endpoint(i)).collect();
        let mut cmd = Command::new(self.ctl_binary());
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", eps.join(",")))
            .arg("--command-timeout=10s")
            .args(args)
            .stdin(Stdio::null())
            .die_with_test()
            .output()
            .expect("the control tool runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Like [`Run::ctl_raw`], but waits out etcd's "unhealthy cluster": a membership change
    /// is refused until every voter has been connected for 5 s (etcd's HealthInterval), e.g.
    /// right after a member joined. Operators retry; so does the test.
    fn ctl_settled(&self, via: &[usize], args: &[&str]) -> (bool, String, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (ok, out, err) = self.ctl_raw(via, args);
            if ok || !err.contains("etcdserver: unhealthy cluster") || Instant::now() > deadline {
                return (ok, out, err);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Runs the control tool and records its answer (stdout, or the `Error:` line), with
    /// names for IDs and URLs; returns the raw stdout.
    fn step(&mut self, what: &str, via: &[usize], args: &[&str]) -> String {
        let (ok, out, err) = self.ctl_settled(via, args);
        self.learn_ids();
        let answer = if ok {
            self.normalise(&out)
        } else {
            let line = err
                .lines()
                .find(|l| l.starts_with("Error:"))
                .unwrap_or_else(|| panic!("{what}: no error line in {err:?}"));
            self.normalise(line)
        };
        self.record.push(format!("{what}: {answer}"));
        out
    }

    /// Like [`Run::step`] but the step must succeed.
    fn step_ok(&mut self, what: &str, via: &[usize], args: &[&str]) -> String {
        let (ok, out, err) = self.ctl_settled(via, args);
        assert!(
            ok,
            "{} {what}: {args:?} failed: {out}{err}\n{}",
            self.kind().name(),
            self.c.logs_tail(20)
        );
        self.learn_ids();
        let answer = self.normalise(&out);
        self.record.push(format!("{what}: {answer}"));
        out
    }

    /// Learns member IDs from the member list of any running member.
    fn learn_ids(&mut self) {
        let running: Vec<usize> = (0..self.c.len())
            .filter(|&i| self.c.is_running(i))
            .collect();
        for i in running {
            let (ok, out, _) = self.ctl_raw(&[i], &["member", "list", "-w", "json"]);
            if !ok {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&out).expect("member list JSON");
            self.cluster_id = v["header"]["cluster_id"].as_u64().unwrap_or(0);
            for m in v["members"].as_array().into_iter().flatten() {
                let id = m["ID"].as_u64().expect("member ID");
                let url = m["peerURLs"][0].as_str().unwrap_or("");
                if let Some(slot) = (0..self.c.len()).find(|&s| self.c.peer_url(s) == url) {
                    // A replaced member gets a new ID; tell the two apart.
                    let known = self
                        .ids
                        .values()
                        .filter(|n| n.starts_with(&format!("m{slot}")))
                        .count();
                    self.ids.entry(id).or_insert_with(|| {
                        if known == 0 {
                            format!("m{slot}")
                        } else {
                            format!("m{slot}'")
                        }
                    });
                }
            }
            return;
        }
    }

    /// Names instead of IDs, URLs and ports; lines and comma lists sorted where etcd sorts
    /// by member ID (IDs differ between the two runs).
    fn normalise(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for i in 0..self.c.len() {
            let name = format!("m{i}");
            s = s.replace(&self.c.peer_url(i), &format!("<peer {name}>"));
            s = s.replace(
                &format!("http://{}", self.c.endpoint(i)),
                &format!("<client {name}>"),
            );
            s = s.replace(&self.c.endpoint(i), &format!("<endpoint {name}>"));
        }
        let mut ids: Vec<(&u64, &String)> = self.ids.iter().collect();
        ids.sort();
        for (id, name) in ids {
            s = s.replace(&format!("{id:x}"), &format!("<id {name}>"));
        }
        s = s.replace(&format!("{:x}", self.cluster_id), "<cluster>");
        // etcdctl pads some IDs to 16 places ("%16x"), and the IDs differ between runs.
        while s.contains("  ") {
            s = s.replace("  ", " ");
        }
        let mut lines: Vec<String> = s
            .lines()
            .map(|l| match l.split_once("=\"") {
                Some((k, v)) if v.contains(',') => {
                    let mut parts: Vec<&str> = v.trim_end_matches('"').split(',').collect();
                    parts.sort_unstable();
                    format!("{k}=\"{}\"", parts.join(","))
                }
                _ => l.to_owned(),
            })
            .collect();
        if lines.len() > 1 && lines.iter().all(|l| l.starts_with("<id ")) {
            lines.sort();
        }
        lines.join(" | ")
    }

    fn id(&self, slot: usize) -> u64 {
        self.c
            .member_id(slot)
            .unwrap_or_else(|| panic!("m{slot} is not a member"))
    }

    /// `member add` for a new slot; returns the slot and the flags it must start with.
    fn add(&mut self, what: &str, via: &[usize], learner: bool) -> (usize, Vec<String>) {
        let slot = self.c.add_slot();
        let name = format!("m{slot}");
        let url = self.c.peer_url(slot);
        let peer_urls = format!("--peer-urls={url}");
        let mut args = vec!["member", "add", name.as_str(), peer_urls.as_str()];
        if learner {
            args.push("--learner");
        }
        let out = self.step_ok(what, via, &args);
        (slot, start_flags(&out))
    }

    /// Starts a member added by [`Run::add`] and waits until it serves.
    fn start_added(&mut self, slot: usize, start: &[String]) {
        let args: Vec<&str> = start.iter().map(String::as_str).collect();
        self.c.start_member(slot, &args);
        self.c.wait_healthy(slot);
    }

    /// Moves leadership to `slot` (without recording it) and waits until it leads, so that
    /// both runs give the same roles to the same names.
    fn make_leader(&self, slot: usize) {
        let deadline = Instant::now() + WAIT;
        let tid = format!("{:x}", self.id(slot));
        loop {
            let running: Vec<usize> = (0..self.c.len())
                .filter(|&i| self.c.is_running(i))
                .collect();
            let leader = self.c.wait_leader_among(&running);
            if leader == slot {
                return;
            }
            let (_, out, err) = self.ctl_raw(&[leader], &["move-leader", &tid]);
            assert!(
                Instant::now() < deadline,
                "m{slot} never became leader; m{leader} answered {out}{err}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running member has HashKV at one revision, and they are equal.
    fn check_hashkv(&self, what: &str) {
        let running: Vec<usize> = (0..self.c.len())
            .filter(|&i| self.c.is_running(i))
            .collect();
        let leader = self.c.wait_leader_among(&running);
        let rev = self.c.status(leader).expect("leader status").revision;
        let deadline = Instant::now() + WAIT;
        let mut hashes = Vec::new();
        for &i in &running {
            loop {
                let (ok, out, err) = self.ctl_raw(
                    &[i],
                    &["endpoint", "hashkv", &format!("--rev={rev}"), "-w", "json"],
                );
                if ok {
                    let v: serde_json::Value = serde_json::from_str(&out).expect("hashkv JSON");
                    hashes.push((i, v[0]["HashKV"]["hash"].as_u64().expect("hash")));
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: m{i} gives no HashKV at {rev}: {err}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        assert!(
            hashes.windows(2).all(|w| w[0].1 == w[1].1),
            "{} {what}: HashKV at revision {rev} differs: {hashes:?}",
            self.kind().name()
        );
    }
}

/// The flags `member add` printed for the new member: `ETCD_X="v"` → `--x=v`.
fn start_flags(out: &str) -> Vec<String> {
    let mut flags = Vec::new();
    for line in out.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let Some(k) = k.strip_prefix("ETCD_") else {
            continue;
        };
        if k == "NAME" {
            continue;
        }
        let v = v.trim_matches('"');
        flags.push(format!("--{}={v}", k.to_lowercase().replace('_', "-")));
    }
    assert!(
        flags.iter().any(|f| f.starts_with("--initial-cluster=")),
        "member add printed no ETCD_INITIAL_CLUSTER: {out}"
    );
    flags
}

/// Puts unique keys through the cluster until stopped; remembers which were acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    endpoints: Arc<Mutex<Vec<String>>>,
    acked: Arc<Mutex<Vec<u64>>>,
    /// Puts that failed (the member was down, removed, or had no leader), with why.
    failed: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(endpoints: Vec<String>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let endpoints = Arc::new(Mutex::new(endpoints));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (s, e, a, f) = (
            stop.clone(),
            endpoints.clone(),
            acked.clone(),
            failed.clone(),
        );
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(async move {
                let mut n = 0u64;
                let mut turn = 0usize;
                while !s.load(Ordering::Relaxed) {
                    let eps = e.lock().unwrap().clone();
                    turn += 1;
                    let ep = eps[turn % eps.len()].clone();
                    let opts = etcd_client::ConnectOptions::new()
                        .with_connect_timeout(Duration::from_secs(1))
                        .with_timeout(Duration::from_secs(3));
                    let Ok(mut c) = etcd_client::Client::connect([ep], Some(opts)).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    // A few hundred puts per connection, then the next member.
                    for _ in 0..200 {
                        if s.load(Ordering::Relaxed) {
                            break;
                        }
                        n += 1;
                        let key = format!("load/{n:08}");
                        match c.put(key, n.to_string(), None).await {
                            Ok(_) => a.lock().unwrap().push(n),
                            Err(err) => {
                                f.lock().unwrap().push(err.to_string());
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                break;
                            }
                        }
                    }
                }
            });
        });
        Load {
            stop,
            endpoints,
            acked,
            failed,
            thread: Some(thread),
        }
    }

    /// Waits until `more` further puts have been acknowledged.
    fn wait_more(&self, more: usize) {
        let target = self.acked.lock().unwrap().len() + more;
        let deadline = Instant::now() + WAIT;
        while self.acked.lock().unwrap().len() < target {
            assert!(Instant::now() < deadline, "the load made no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn set_endpoints(&self, eps: Vec<String>) {
        *self.endpoints.lock().unwrap() = eps;
    }

    /// Stops the load and checks that every acknowledged put is in the store (asking
    /// member `via` linearizably).
    fn finish(mut self, run: &Run, via: usize) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the load thread");
        }
        let acked = self.acked.lock().unwrap().clone();
        let failed = self.failed.lock().unwrap().clone();
        eprintln!(
            "{}: {} puts acknowledged, {} failed (first: {:?})",
            run.kind().name(),
            acked.len(),
            failed.len(),
            failed.first()
        );
        let (ok, out, err) = run.ctl_raw(&[via], &["get", "load/", "--prefix", "--keys-only"]);
        assert!(ok, "reading the load back: {err}");
        let present: std::collections::HashSet<&str> =
            out.lines().filter(|l| !l.is_empty()).collect();
        let lost: Vec<u64> = acked
            .iter()
            .copied()
            .filter(|n| !present.contains(format!("load/{n:08}").as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "{}: {} of {} acknowledged puts lost, e.g. {:?}",
            run.kind().name(),
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
        assert!(!acked.is_empty(), "the load wrote nothing");
        acked.len()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn running_endpoints(c: &Cluster) -> Vec<String> {
    (0..c.len())
        .filter(|&i| c.is_running(i))
        .map(|i| c.endpoint(i))
        .collect()
}

/// Runs `scenario` on etcd 3.4 and on corekv; their records must be equal.
fn compare(scenario: fn(Kind) -> Vec<String>) {
    let etcd = scenario(Kind::Etcd);
    let corekv = scenario(Kind::Corekv);
    eprintln!(
        "etcd 3.4:\n  {}\ncorekv:\n  {}",
        etcd.join("\n  "),
        corekv.join("\n  ")
    );
    for (i, (e, c)) in etcd.iter().zip(&corekv).enumerate() {
        assert_eq!(
            c, e,
            "step {i}: corekv (left) and etcd 3.4 (right) answer differently"
        );
    }
    assert_eq!(corekv.len(), etcd.len(), "the two records differ in length");
}

/// 1 → 3 → 5 members under write load, then back to 3; the strict reconfiguration checks on
/// the way.
fn grow_and_shrink(kind: Kind) -> Vec<String> {
    let mut r = Run::start(kind, 1, &[]);
    let load = Load::start(running_endpoints(&r.c));
    let (m1, start1) = r.add("add m1 to a 1-member cluster", &[0], false);
    // m1 is not started: a third voter would leave 1 started of 3.
    let m2_url = "http://127.0.0.1:1";
    r.step(
        "add a voter while m1 has not started",
        &[0],
        &["member", "add", "x", &format!("--peer-urls={m2_url}")],
    );
    r.start_added(m1, &start1);
    r.step(
        "add m0's own peer URL again",
        &[1],
        &[
            "member",
            "add",
            "y",
            &format!("--peer-urls={}", r.c.peer_url(0)),
        ],
    );
    load.set_endpoints(running_endpoints(&r.c));
    r.check_hashkv("after m1 joined");
    for _ in 0..3 {
        let via: Vec<usize> = (0..r.c.len()).filter(|&i| r.c.is_running(i)).collect();
        let (m, start) = r.add("add a member", &via, false);
        r.start_added(m, &start);
        load.set_endpoints(running_endpoints(&r.c));
        r.check_hashkv("after a member joined");
    }
    assert_eq!(r.c.len(), 5);
    r.step("member list of 5", &[4], &["member", "list"]);
    r.step(
        "remove an unknown member",
        &[0],
        &["member", "remove", "1234"],
    );
    // Shrink back to 3: remove m4 and m3 (the newest), through m0.
    for gone in [4, 3] {
        let id = format!("{:x}", r.id(gone));
        r.step_ok(&format!("remove m{gone}"), &[0], &["member", "remove", &id]);
        r.c.wait_exit(gone);
        load.set_endpoints(running_endpoints(&r.c));
        r.check_hashkv("after a member left");
    }
    r.step("member list of 3", &[1], &["member", "list"]);
    let n = load.finish(&r, 0);
    eprintln!("{}: {n} acknowledged puts survived 1 → 5 → 3", kind.name());
    r.record
}

/// Waits until a removed member's process ends (etcd's and corekv's both stop).
/// Add a learner, refuse a second and a too-early promote, start it, see what it refuses,
/// promote it once it has caught up.
fn learner_flow(kind: Kind) -> Vec<String> {
    let mut r = Run::start(kind, 3, &[]);
    for i in 0..200 {
        r.ctl_raw(&[0], &["put", &format!("before/{i}"), "x"]);
    }
    let (l, start) = r.add("add a learner", &[0], true);
    r.step(
        "add a second learner",
        &[1],
        &[
            "member",
            "add",
            "z",
            "--learner",
            "--peer-urls=http://127.0.0.1:2",
        ],
    );
    let id = format!("{:x}", r.id(l));
    r.step(
        "promote before it started",
        &[0],
        &["member", "promote", &id],
    );
    r.step("member list with a learner", &[0], &["member", "list"]);
    r.c.start_member(l, &start.iter().map(String::as_str).collect::<Vec<_>>());
    // A learner answers serializable reads (once it has the data) and refuses the rest.
    let deadline = Instant::now() + WAIT;
    loop {
        let (ok, out, _) = r.ctl_raw(&[l], &["get", "before/199", "--consistency=s"]);
        if ok && out.contains("before/199") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the learner never had before/199"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    r.step("put on the learner", &[l], &["put", "k", "v"]);
    r.step(
        "linearizable get on the learner",
        &[l],
        &["get", "before/1"],
    );
    r.step(
        "serializable get on the learner",
        &[l],
        &["get", "before/1", "--consistency=s"],
    );
    let leader = r.c.wait_leader();
    r.step(
        "move leadership to the learner",
        &[leader],
        &["move-leader", &id],
    );
    // Promote succeeds once the learner has caught up.
    let deadline = Instant::now() + WAIT;
    loop {
        let (ok, _, err) = r.ctl_raw(&[0], &["member", "promote", &id]);
        if ok {
            break;
        }
        assert!(
            err.contains("in sync with leader") && Instant::now() < deadline,
            "promote failed: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    r.record.push("promoted".into());
    r.step("member list after promote", &[0], &["member", "list"]);
    r.step("promote a voter", &[0], &["member", "promote", &id]);
    r.step("put on the promoted member", &[l], &["put", "k", "v"]);
    r.check_hashkv("after promote");
    r.record
}

/// A member loses its disk: remove it, add it back under a new ID, start it empty with
/// --initial-cluster-state existing; it catches up by snapshot while the load goes on.
/// Then the leader removes itself.
fn replace_and_remove_leader(kind: Kind) -> Vec<String> {
    // A snapshot every 100 entries: the replacement catches up from one.
    let mut r = Run::start(kind, 3, &["--snapshot-count=100"]);
    let load = Load::start(running_endpoints(&r.c));
    load.wait_more(300);
    r.make_leader(0);
    let victim = 1;
    r.c.kill(victim);
    r.c.wipe_data(victim);
    let old = format!("{:x}", r.id(victim));
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    r.step_ok(
        "remove the wiped member",
        &others,
        &["member", "remove", &old],
    );
    r.step("remove it twice", &others, &["member", "remove", &old]);
    let url = r.c.peer_url(victim);
    let name = format!("m{victim}");
    let out = r.step_ok(
        "add it back",
        &others,
        &["member", "add", &name, &format!("--peer-urls={url}")],
    );
    let start = start_flags(&out);
    load.wait_more(300);
    r.start_added(victim, &start);
    load.set_endpoints(running_endpoints(&r.c));
    r.check_hashkv("after the replacement caught up");
    if kind == Kind::Corekv {
        let log = r.c.log(victim);
        assert!(
            log.contains("installed a snapshot from the leader"),
            "the replacement caught up without a snapshot:\n{}",
            r.c.log_tail(victim, 20)
        );
    }

    // The leader removes itself: it stops, the others elect a new one and go on.
    let leader = 2;
    r.make_leader(leader);
    let lid = format!("{:x}", r.id(leader));
    r.step_ok(
        "the leader removes itself",
        &[leader],
        &["member", "remove", &lid],
    );
    let status = r.c.wait_exit(leader);
    if kind == Kind::Corekv {
        assert!(
            !status.success(),
            "a removed member exits non-zero: {status}"
        );
        assert!(
            r.c.log(leader).contains("removed from the cluster"),
            "{}",
            r.c.log_tail(leader, 10)
        );
    }
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    load.set_endpoints(rest.iter().map(|&i| r.c.endpoint(i)).collect());
    r.c.wait_leader_among(&rest);
    r.check_hashkv("after the leader left");
    r.step("member list of 2", &[rest[0]], &["member", "list"]);
    // Its old data dir cannot bring it back.
    r.c.start_member(leader, &[]);
    let again = r.c.wait_exit(leader);
    if kind == Kind::Corekv {
        assert!(!again.success(), "{again}");
        let log = r.c.log_tail(leader, 3);
        assert!(log.contains("was removed from the cluster"), "{log}");
    }
    let n = load.finish(&r, rest[0]);
    eprintln!("{}: {n} acknowledged puts survived", kind.name());
    r.record
}

/// MoveLeader under write load, and etcd's errors for a follower asked, an unknown target;
/// MemberUpdate moving a member's peer URL, and its errors.
fn move_leader(kind: Kind) -> Vec<String> {
    let mut r = Run::start(kind, 3, &[]);
    let load = Load::start(running_endpoints(&r.c));
    r.make_leader(0);
    for _ in 0..3 {
        let leader = r.c.wait_leader();
        let target = (leader + 1) % 3;
        let tid = format!("{:x}", r.id(target));
        r.step_ok("move-leader", &[leader], &["move-leader", &tid]);
        let deadline = Instant::now() + WAIT;
        while r.c.leader() != Some(target) {
            assert!(Instant::now() < deadline, "m{target} never led");
            std::thread::sleep(Duration::from_millis(20));
        }
        let follower = (target + 1) % 3;
        r.step(
            "move-leader asked of a follower",
            &[follower],
            &["move-leader", &tid],
        );
        r.step(
            "move-leader to an unknown member",
            &[target],
            &["move-leader", "1234"],
        );
    }
    r.check_hashkv("after three transfers");

    // MemberUpdate: m2 moves to another peer port; the others follow it there.
    let id2 = format!("{:x}", r.id(2));
    let port = common::free_port();
    r.step_ok(
        "move m2's peer URL",
        &[0],
        &[
            "member",
            "update",
            &id2,
            &format!("--peer-urls=http://127.0.0.1:{port}"),
        ],
    );
    r.c.kill(2);
    r.c.set_peer_port(2, port);
    r.c.restart(2);
    r.make_leader(2);
    r.check_hashkv("after m2 moved");
    r.step(
        "update to a peer URL in use",
        &[1],
        &[
            "member",
            "update",
            &id2,
            &format!("--peer-urls={}", r.c.peer_url(0)),
        ],
    );
    r.step(
        "update an unknown member",
        &[1],
        &["member", "update", "1234", "--peer-urls=http://127.0.0.1:3"],
    );
    r.step("member list after the move", &[1], &["member", "list"]);
    load.finish(&r, 0);
    r.record
}

#[test]
fn grow_from_one_to_five_members_under_load_and_shrink_to_three() {
    compare(grow_and_shrink);
}

#[test]
fn a_learner_is_added_refused_what_etcd_refuses_and_promoted_once_caught_up() {
    compare(learner_flow);
}

#[test]
fn a_wiped_member_is_replaced_and_the_leader_removes_itself() {
    compare(replace_and_remove_leader);
}

#[test]
fn move_leader_under_load_and_a_member_moving_its_peer_url() {
    compare(move_leader);
}
