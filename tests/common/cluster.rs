//! A multi-member cluster of real server processes — etcd 3.4 or corekv, chosen by [`Kind`] —
//! for tests that kill, restart, pause and partition members.
//!
//! - [`Cluster::start`]: n members on 127.0.0.1 with free ports.
//! - [`Cluster::start_isolated`]: each member in its own network namespace (`ip netns exec`),
//!   joined by a veth pair to a bridge in the root namespace, with its own IP on a private
//!   /24 (10.<200+k>.<b>.0/24, k per cluster in this process, b derived from the pid and
//!   checked to be unused); the test process reaches every member through the bridge, so
//!   [`Cluster::partition`] (blackhole routes inside each namespace) cuts members off from
//!   each other but never from the test. [`Cluster::delay`] adds latency with netem if the
//!   kernel has it ([`netem_supported`]; it does not on the machine this was written on).
//!   Needs root and iproute2.
//!
//! Every member: name `m<i>`, a unique `--initial-cluster-token`, data dir and log file
//! (`m<i>.log`, stdout and stderr, appended across restarts) in one temporary directory,
//! `$TMPDIR/ckcluster-<pid>-*`. Start waits until every member answers `GET /health`
//! healthy (for etcd: the cluster has a leader). When the cluster is dropped during a panic,
//! each log's tail is printed and the logs are kept in
//! `$TMPDIR/corekv-cluster-failed-<token>` (the data dirs too with `CLUSTER_KEEP_DATA=1`).
//! Drop kills every member and removes the namespaces, veths and bridge; an earlier run that
//! was killed leaves them (and its temporary directory) behind, named with its pid, and the
//! next start removes those whose pid is dead.
//!
//! Isolated members talk to each other across the bridge. The kernel here has br_netfilter
//! on (`net.bridge.bridge-nf-call-iptables=1`) but no iptables rules; on a host whose
//! iptables FORWARD policy drops (Docker sets that), bridged traffic between members would be
//! dropped too and an isolated cluster would never elect a leader (start fails, with logs).
//!
//! Members are started (and restarted) on the calling thread and get SIGKILL when that thread
//! ends (`DieWithTest`; `ip netns exec` execs the server in place, so this holds for isolated
//! members too — tests/cluster_harness.rs checks it): call every method that starts a process
//! from the test's own thread.
//!
//! Used by tests/cluster_harness.rs; a long run of its nemesis tests (10 minutes of faults):
//! `NEMESIS_SECS=600 CARGO_TARGET_DIR=/work/target-harness cargo test --release --test
//! cluster_harness nemesis -- --nocapture` (see nemesis.rs).
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use super::{free_port, DieWithTest, Kind, READY_LIMIT};

/// Raft timings for clusters unless the caller passes its own: short enough for fast
/// elections, long enough not to churn when two cores run three members and the clients.
const CLUSTER_TIMINGS: [&str; 2] = ["--heartbeat-interval=50", "--election-timeout=500"];

/// The client and peer ports of isolated members (each has its own IP).
const NS_CLIENT_PORT: u16 = 2379;
const NS_PEER_PORT: u16 = 2380;

/// What [`Cluster::status`] reports for one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub member_id: u64,
    /// The member id this member believes is the leader (0: none).
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    /// The store revision (response header).
    pub revision: i64,
}

struct Member {
    name: String,
    /// The IP it listens on.
    host: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Its network namespace, for isolated clusters.
    netns: Option<String>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://{}:{}", self.host, self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://{}:{}", self.host, self.peer_port)
    }
}

/// A running n-member cluster; every member is killed when it is dropped.
pub struct Cluster {
    pub kind: Kind,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    members: Vec<Member>,
    flags: Vec<String>,
    token: String,
    net: Option<Network>,
    rt: tokio::runtime::Runtime,
}

impl Cluster {
    /// Starts `n` members of `kind` on 127.0.0.1 with `flags` added to each (etcd's names, as
    /// `--flag=value`; one replaces a default of the same name) and waits until each is
    /// healthy.
    pub fn start(kind: Kind, n: usize, flags: &[&str]) -> Cluster {
        Cluster::launch(kind, n, flags, false)
    }

    /// Like [`Cluster::start`], but each member in its own network namespace, so that
    /// [`Cluster::partition`] works.
    pub fn start_isolated(kind: Kind, n: usize, flags: &[&str]) -> Cluster {
        Cluster::launch(kind, n, flags, true)
    }

    fn launch(kind: Kind, n: usize, flags: &[&str], isolated: bool) -> Cluster {
        assert!((1..=9).contains(&n), "1 to 9 members, not {n}");
        let mut last = String::new();
        for _attempt in 0..3 {
            let mut c = Cluster::new(kind, n, flags, isolated);
            match c.spawn_all() {
                Ok(()) => return c,
                Err(e) => last = e,
            }
        }
        panic!(
            "a {n}-member {} cluster did not start (3 tries): {last}",
            kind.name()
        );
    }

    fn new(kind: Kind, n: usize, flags: &[&str], isolated: bool) -> Cluster {
        static CLUSTERS: AtomicU32 = AtomicU32::new(0);
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("cannot make a temp dir");
        let root = dir.path().to_path_buf();
        let net = isolated.then(|| Network::create(n));
        let members = (0..n)
            .map(|i| {
                let (host, client_port, peer_port, netns) = match &net {
                    Some(net) => (
                        net.ip(i),
                        NS_CLIENT_PORT,
                        NS_PEER_PORT,
                        Some(net.namespace(i).to_owned()),
                    ),
                    None => ("127.0.0.1".to_owned(), free_port(), free_port(), None),
                };
                Member {
                    name: format!("m{i}"),
                    host,
                    client_port,
                    peer_port,
                    data_dir: root.join(format!("m{i}.data")),
                    log_path: root.join(format!("m{i}.log")),
                    child: None,
                    paused: false,
                    netns,
                }
            })
            .collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Cluster {
            kind,
            dir: Some(dir),
            root,
            members,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            token: format!(
                "test-{}-{}-{nanos}",
                std::process::id(),
                CLUSTERS.fetch_add(1, Ordering::Relaxed)
            ),
            net,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cannot build a tokio runtime"),
        }
    }

    fn spawn_all(&mut self) -> Result<(), String> {
        for i in 0..self.len() {
            self.spawn(i, &[])?;
        }
        let deadline = Instant::now() + READY_LIMIT;
        for i in 0..self.len() {
            self.wait_healthy_until(i, deadline)?;
        }
        Ok(())
    }

    /// Starts member `i`'s process (not waiting for it). A flag in `extra` replaces the
    /// cluster's flag of the same name, which replaces the default of that name (each flag
    /// is passed once: corekv, like most CLIs, rejects a repeated flag; etcd takes the last).
    fn spawn(&mut self, i: usize, extra: &[String]) -> Result<(), String> {
        let bin = self.kind.binary();
        let initial_cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        let m = &self.members[i];
        let mut args = vec![
            format!("--name={}", m.name),
            format!("--data-dir={}", m.data_dir.display()),
            format!("--listen-client-urls={}", m.client_url()),
            format!("--advertise-client-urls={}", m.client_url()),
            format!("--listen-peer-urls={}", m.peer_url()),
            format!("--initial-advertise-peer-urls={}", m.peer_url()),
            format!("--initial-cluster={}", initial_cluster.join(",")),
            "--initial-cluster-state=new".to_owned(),
            format!("--initial-cluster-token={}", self.token),
        ];
        args.extend(CLUSTER_TIMINGS.iter().map(|s| s.to_string()));
        for f in self.flags.iter().chain(extra) {
            args.retain(|a| flag_name(a) != flag_name(f));
            args.push(f.clone());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .map_err(|e| format!("cannot open {}: {e}", m.log_path.display()))?;
        let mut cmd = match &m.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share the log file"))
            .stderr(log)
            .die_with_test();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let m = &mut self.members[i];
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    fn wait_healthy_until(&mut self, i: usize, deadline: Instant) -> Result<(), String> {
        loop {
            let m = &mut self.members[i];
            let name = m.name.clone();
            let child = m
                .child
                .as_mut()
                .ok_or_else(|| format!("{name} is not running"))?;
            if let Some(status) = child.try_wait().unwrap() {
                m.child = None;
                return Err(format!(
                    "{name} exited ({status}); its log:\n{}",
                    self.log_tail(i, 40)
                ));
            }
            if self.is_healthy(i) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} not healthy within {READY_LIMIT:?}; its log:\n{}",
                    self.log_tail(i, 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until member `i` answers `/health` healthy; panics (with its log) after
    /// READY_LIMIT.
    pub fn wait_healthy(&mut self, i: usize) {
        if let Err(e) = self.wait_healthy_until(i, Instant::now() + READY_LIMIT) {
            panic!("{e}");
        }
    }

    /// Waits until every running, unpaused member is healthy.
    pub fn wait_all_healthy(&mut self) {
        for i in 0..self.len() {
            if self.is_running(i) && !self.is_paused(i) {
                self.wait_healthy(i);
            }
        }
    }

    /// Whether member `i` answers `GET /health` with `{"health":"true"}` now.
    pub fn is_healthy(&self, i: usize) -> bool {
        let m = &self.members[i];
        http_get_at(&m.host, m.client_port, "/health").is_some_and(|b| b.contains("\"true\""))
    }

    /// The --initial-cluster-token every member started with.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_isolated(&self) -> bool {
        self.net.is_some()
    }

    /// Makes room for one more member (name `m<n>`, free ports, a data dir) without starting
    /// it; returns its index. Add it with MemberAdd, then start it with
    /// [`Cluster::start_member`] and `--initial-cluster-state=existing` and the
    /// `--initial-cluster` that the add printed. Not for isolated clusters.
    pub fn add_slot(&mut self) -> usize {
        assert!(self.net.is_none(), "isolated clusters have a fixed size");
        let i = self.members.len();
        self.members.push(Member {
            name: format!("m{i}"),
            host: "127.0.0.1".to_owned(),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: self.root.join(format!("m{i}.data")),
            log_path: self.root.join(format!("m{i}.log")),
            child: None,
            paused: false,
            netns: None,
        });
        i
    }

    /// Gives stopped member `i` a new peer port (after a MemberUpdate of its peer URL); its
    /// next start listens and advertises there.
    pub fn set_peer_port(&mut self, i: usize, port: u16) {
        assert!(
            !self.is_running(i),
            "stop member {i} before moving its peer port"
        );
        assert!(self.net.is_none(), "isolated members keep their ports");
        self.members[i].peer_port = port;
    }

    /// Member `i`'s client endpoint, `host:port`.
    pub fn endpoint(&self, i: usize) -> String {
        let m = &self.members[i];
        format!("{}:{}", m.host, m.client_port)
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s advertised peer URL.
    pub fn peer_url(&self, i: usize) -> String {
        self.members[i].peer_url()
    }

    /// Member `i`'s data dir (inside the cluster's temporary directory).
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }

    /// The cluster's temporary directory (data dirs and logs).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Everything member `i` logged so far, across restarts.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log_path).unwrap_or_default()
    }

    /// The last `lines` lines of member `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let log = self.log(i);
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The tail of every member's log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        (0..self.len())
            .map(|i| {
                format!(
                    "--- {} ({}) last {lines} log lines:\n{}\n",
                    self.members[i].name,
                    self.endpoint(i),
                    self.log_tail(i, lines)
                )
            })
            .collect()
    }

    /// Member `i`'s process id (the server itself, also for isolated members).
    pub fn pid(&self, i: usize) -> u32 {
        self.members[i]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("member {i} is not running"))
            .id()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Whether member `i`'s process has exited by itself (after it was started and not
    /// killed by the test); its exit status if so.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let m = &mut self.members[i];
        let status = m.child.as_mut()?.try_wait().ok().flatten()?;
        m.child = None;
        Some(status)
    }

    /// Waits until member `i` exits by itself; its exit status. Panics (with its log) after
    /// READY_LIMIT.
    pub fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(status) = self.exited(i) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "m{i} still runs {READY_LIMIT:?} later\n{}",
                self.log_tail(i, 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.members[i].paused
    }

    /// SIGKILL: nothing flushed. The data dir stays. No-op if it is not running.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        m.paused = false;
    }

    /// Kills member `i` if it runs, waits until its ports are free, starts it again with the
    /// same flags and data dir, and waits until it is healthy (the cluster has a leader it
    /// knows of).
    pub fn restart(&mut self, i: usize) {
        self.restart_with(i, &[]);
    }

    /// [`Cluster::restart`] with flags added for this start only (e.g.
    /// `--initial-cluster-state=existing` after [`Cluster::wipe_data`]).
    pub fn restart_with(&mut self, i: usize, extra: &[&str]) {
        self.start_member(i, extra);
        self.wait_healthy(i);
    }

    /// Like [`Cluster::restart_with`] but does not wait for health (for a member that cannot
    /// become healthy, e.g. one cut off from a quorum).
    pub fn start_member(&mut self, i: usize, extra: &[&str]) {
        self.kill(i);
        self.wait_for_ports(i);
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Err(e) = self.spawn(i, &extra) {
            panic!("member {i} did not restart: {e}");
        }
    }

    /// Waits until a killed member's ports can be bound again (corekv's listening sockets
    /// outlive its process by a few milliseconds; see `Server::wait_for_ports`).
    fn wait_for_ports(&self, i: usize) {
        let m = &self.members[i];
        let deadline = Instant::now() + READY_LIMIT;
        for port in [m.client_port, m.peer_port] {
            while !port_free(m.netns.as_deref(), &m.host, port) {
                assert!(
                    Instant::now() < deadline,
                    "port {port} of {} still taken {READY_LIMIT:?} after it was killed",
                    m.name
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// SIGSTOP member `i`.
    pub fn pause(&mut self, i: usize) {
        let pid = self.pid(i);
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        self.members[i].paused = true;
    }

    /// SIGCONT member `i`.
    pub fn resume(&mut self, i: usize) {
        let pid = self.pid(i);
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGCONT) }, 0);
        self.members[i].paused = false;
    }

    /// Removes member `i`'s data dir; the member must not be running. A plain
    /// [`Cluster::restart`] then starts it with `--initial-cluster-state=new` as at first;
    /// pass other flags with [`Cluster::restart_with`].
    pub fn wipe_data(&mut self, i: usize) {
        assert!(
            !self.is_running(i),
            "kill member {i} before wiping its data"
        );
        let d = &self.members[i].data_dir;
        if d.exists() {
            std::fs::remove_dir_all(d)
                .unwrap_or_else(|e| panic!("cannot remove {}: {e}", d.display()));
        }
    }

    /// Moves member `i`'s data dir (its contents, copied) to `to`, e.g. onto a small file
    /// system; the member must not be running. Later starts use `to`.
    pub fn move_data_dir(&mut self, i: usize, to: &Path) {
        assert!(
            !self.is_running(i),
            "kill member {i} before moving its data"
        );
        let from = self.members[i].data_dir.clone();
        let out = Command::new("cp")
            .arg("-a")
            .arg(&from)
            .arg(to)
            .output()
            .expect("cannot run cp");
        assert!(
            out.status.success(),
            "cannot copy {} to {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(&from)
            .unwrap_or_else(|e| panic!("cannot remove {}: {e}", from.display()));
        self.members[i].data_dir = to.to_path_buf();
    }

    /// Disarms every raised alarm (as `etcdctl alarm disarm`) through the first running,
    /// unpaused member that answers within 5 s; returns how many were raised (0 also when
    /// no member answered).
    pub fn disarm_alarms(&self) -> usize {
        use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
        for i in (0..self.len()).filter(|&i| self.is_running(i) && !self.is_paused(i)) {
            let ep = self.endpoint(i);
            let r = self.rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(5), async move {
                    let mut c = etcd_client::Client::connect([ep], None).await?;
                    let raised = c.alarm(AlarmAction::Get, AlarmType::None, None).await?;
                    for a in raised.alarms() {
                        let mut opts = AlarmOptions::new();
                        opts.with_member(a.member_id());
                        c.alarm(AlarmAction::Deactivate, a.alarm(), Some(opts))
                            .await?;
                    }
                    Ok::<_, etcd_client::Error>(raised.alarms().len())
                })
                .await
            });
            if let Ok(Ok(n)) = r {
                return n;
            }
        }
        0
    }

    /// Member `i`'s Maintenance Status, if it answers within 2 s.
    pub fn status(&self, i: usize) -> Option<MemberStatus> {
        if !self.is_running(i) || self.is_paused(i) {
            return None;
        }
        let ep = self.endpoint(i);
        self.rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(2), async move {
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(1))
                    .with_timeout(Duration::from_secs(2));
                let mut c = etcd_client::Client::connect([ep], Some(opts)).await.ok()?;
                let s = c.status().await.ok()?;
                let h = s.header()?;
                Some(MemberStatus {
                    member_id: h.member_id(),
                    leader: s.leader(),
                    raft_term: s.raft_term(),
                    raft_index: s.raft_index(),
                    revision: h.revision(),
                })
            })
            .await
            .ok()
            .flatten()
        })
    }

    /// The member that considers itself leader (the one with the highest term if several
    /// do, as an old leader cut off from the others may for a while), asking every running,
    /// unpaused member.
    pub fn leader(&self) -> Option<usize> {
        let all: Vec<usize> = (0..self.len()).collect();
        self.leader_among(&all)
    }

    /// [`Cluster::leader`] asking only `members`.
    pub fn leader_among(&self, members: &[usize]) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for &i in members {
            if let Some(s) = self.status(i) {
                let newer = match best {
                    None => true,
                    Some((term, _)) => term < s.raft_term,
                };
                if s.leader != 0 && s.leader == s.member_id && newer {
                    best = Some((s.raft_term, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Waits until one of `members` is leader by [`Cluster::leader_among`]; panics after
    /// READY_LIMIT.
    pub fn wait_leader_among(&self, members: &[usize]) -> usize {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(l) = self.leader_among(members) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no leader among members {members:?} within {READY_LIMIT:?}\n{}",
                self.logs_tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the cluster has a leader; panics after READY_LIMIT.
    pub fn wait_leader(&self) -> usize {
        let all: Vec<usize> = (0..self.len()).collect();
        self.wait_leader_among(&all)
    }

    /// Runs a Cluster-service call through some running, unpaused member other than
    /// `not_via`, retrying (other members, transient errors) for up to READY_LIMIT; panics at
    /// once on an error that retrying cannot fix (e.g. Unimplemented, NotFound).
    fn membership_call<T, F, Fut>(&self, not_via: usize, what: &str, f: F) -> T
    where
        F: Fn(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + READY_LIMIT;
        let mut last = String::from("no running member to ask");
        loop {
            for j in (0..self.len()).filter(|&j| j != not_via) {
                if !self.is_running(j) || self.is_paused(j) {
                    continue;
                }
                let ep = self.endpoint(j);
                let r = self.rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), async {
                        let c = etcd_client::Client::connect([ep], None).await?;
                        f(c).await
                    })
                    .await
                });
                match r {
                    Ok(Ok(t)) => return t,
                    Ok(Err(e)) => {
                        last = format!("member {j}: {e}");
                        if let etcd_client::Error::GRpcStatus(s) = &e {
                            // gRPC codes that retrying cannot fix: InvalidArgument (3),
                            // NotFound (5), AlreadyExists (6), PermissionDenied (7),
                            // FailedPrecondition (9), Unimplemented (12).
                            let permanent = matches!(s.code() as i32, 3 | 5 | 6 | 7 | 9 | 12);
                            assert!(!permanent, "{what} failed: {last}");
                        }
                    }
                    Err(_) => last = format!("member {j}: no answer within 10 s"),
                }
            }
            assert!(
                Instant::now() < deadline,
                "{what} failed for {READY_LIMIT:?}; last error: {last}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Member `i`'s id in the cluster's member list (found by its peer URL), asking another
    /// member; None if it is not a member.
    pub fn member_id(&self, i: usize) -> Option<u64> {
        let url = self.peer_url(i);
        self.membership_call(i, "member list", |mut c| {
            let url = url.clone();
            async move {
                let list = c.member_list().await?;
                Ok(list
                    .members()
                    .iter()
                    .find(|m| m.peer_urls().contains(&url))
                    .map(|m| m.id()))
            }
        })
    }

    /// Removes member `i` from the cluster (MemberRemove through another member). Does not
    /// stop its process.
    pub fn member_remove(&mut self, i: usize) {
        let id = self
            .member_id(i)
            .unwrap_or_else(|| panic!("member {i} is not in the member list"));
        self.membership_call(i, "member remove", |mut c| async move {
            c.member_remove(id).await.map(|_| ())
        });
    }

    /// Adds member `i` (its peer URL) back as a new voting member (MemberAdd through another
    /// member); returns its new id. Start it with
    /// `restart_with(i, &["--initial-cluster-state=existing"])` on an empty data dir
    /// ([`Cluster::wipe_data`]).
    pub fn member_add(&mut self, i: usize) -> u64 {
        let url = self.peer_url(i);
        self.membership_call(i, "member add", |mut c| {
            let url = url.clone();
            async move {
                let r = c.member_add([url], None).await?;
                Ok(r.member().map_or(0, |m| m.id()))
            }
        })
    }

    fn net(&self) -> &Network {
        self.net
            .as_ref()
            .expect("network faults need a cluster from Cluster::start_isolated")
    }

    /// Cuts the network so that members in different groups exchange no packets (members in
    /// no group are cut off from everyone); replaces any earlier partition. The test process
    /// still reaches every member. Isolated clusters only.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        let n = self.len();
        let mut group = vec![usize::MAX; n];
        for (g, members) in groups.iter().enumerate() {
            for &i in *members {
                assert!(i < n, "no member {i}");
                assert!(group[i] == usize::MAX, "member {i} is in two groups");
                group[i] = g;
            }
        }
        for (i, g) in group.iter_mut().enumerate() {
            if *g == usize::MAX {
                *g = groups.len() + i;
            }
        }
        let net = self.net();
        net.clear_blackholes();
        for i in 0..n {
            for j in 0..n {
                if group[i] != group[j] {
                    net.blackhole(i, j);
                }
            }
        }
    }

    /// Cuts member `i` off from every other member.
    pub fn isolate(&mut self, i: usize) {
        let others: Vec<usize> = (0..self.len()).filter(|&j| j != i).collect();
        self.partition(&[&[i], &others]);
    }

    /// Removes every partition and delay. Isolated clusters only.
    pub fn heal(&mut self) {
        let net = self.net();
        net.clear_blackholes();
        for i in 0..self.len() {
            net.clear_delay(i);
        }
    }

    /// Delays every packet member `i` sends by `ms` milliseconds (netem), replacing an
    /// earlier delay; [`Cluster::heal`] removes it. Err if the kernel has no netem (then
    /// nothing changes). Isolated clusters only.
    pub fn delay(&mut self, i: usize, ms: u32) -> Result<(), String> {
        self.net().set_delay(i, ms)
    }
}

impl Cluster {
    /// After a failure: moves the logs (and with CLUSTER_KEEP_DATA=1 the data dirs too) to
    /// `$TMPDIR/corekv-cluster-failed-<token>` and says so.
    fn keep_for_debugging(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let kept = std::env::temp_dir().join(format!("corekv-cluster-failed-{}", self.token));
        let result = if std::env::var_os("CLUSTER_KEEP_DATA").is_some() {
            std::fs::rename(dir.keep(), &kept)
        } else {
            std::fs::create_dir_all(&kept).and_then(|()| {
                for m in &self.members {
                    std::fs::copy(&m.log_path, kept.join(m.log_path.file_name().unwrap()))?;
                }
                Ok(())
            })
        };
        match result {
            Ok(()) => eprintln!(
                "cluster logs kept in {} (CLUSTER_KEEP_DATA=1 keeps the data dirs too)",
                kept.display()
            ),
            Err(e) => eprintln!("cannot keep the cluster's logs in {}: {e}", kept.display()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
        self.net = None;
        if std::thread::panicking() {
            eprintln!("{}", self.logs_tail(30));
            self.keep_for_debugging();
        }
    }
}

/// `--name` of `--name=value` (or of a bare `--flag`).
fn flag_name(arg: &str) -> &str {
    arg.split('=').next().unwrap_or(arg)
}

/// A plain HTTP/1.1 GET on `host:port`; the body if the answer is 200, else None. Gives up
/// after 1 s to connect and 3 s to answer (a paused or cut-off member never answers).
pub fn http_get_at(host: &str, port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::new(host.parse().ok()?, port);
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Whether `host:port` can be bound, inside network namespace `ns` if given.
fn port_free(ns: Option<&str>, host: &str, port: u16) -> bool {
    let Some(ns) = ns else {
        return TcpListener::bind((host, port)).is_ok();
    };
    let path = format!("/run/netns/{ns}");
    let host = host.to_owned();
    // setns(CLONE_NEWNET) changes only the calling thread's namespace: use a throwaway one.
    std::thread::spawn(move || {
        let f = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        TcpListener::bind((host.as_str(), port)).is_ok()
    })
    .join()
    .unwrap()
}

/// Runs `ip args...`; its stdout, or Err with its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .die_with_test()
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// Names of network objects: `ckns-<pid>-<k>-<i>` (namespaces), `ckb<pid>-<k>` (bridges),
/// `ckv<pid>-<k>-<i>` (the root end of a veth; the other end is `eth0` in the namespace).
/// Interface names have at most 15 bytes: pid <= 7 digits, k < 100, i < 10.
const NS_PREFIX: &str = "ckns-";
const BRIDGE_PREFIX: &str = "ckb";
const VETH_PREFIX: &str = "ckv";
const PEER_PREFIX: &str = "ckp";

/// One namespace per member, a veth pair each, one bridge; removed on drop.
pub struct Network {
    namespaces: Vec<String>,
    veths: Vec<String>,
    bridge: String,
    /// 10.a.b: member i is 10.a.b.(i+1), the bridge (the test process) 10.a.b.254.
    prefix: String,
}

impl Network {
    /// Creates `n` namespaces on a fresh /24 bridged to the root namespace.
    pub fn create(n: usize) -> Network {
        static LOCK: Mutex<u32> = Mutex::new(0);
        remove_stale_networks();
        let mut k = LOCK.lock().unwrap();
        let pid = std::process::id();
        let kk = *k % 100;
        *k += 1;
        let a = 200 + kk % 50;
        let in_use = format!(
            "{}{}",
            ip(&["-4", "-o", "addr", "show"]).unwrap_or_default(),
            ip(&["-4", "route", "show"]).unwrap_or_default()
        );
        let b = (0..256)
            .map(|d| (pid + d) % 256)
            .find(|b| !in_use.contains(&format!("10.{a}.{b}.")))
            .expect("no free 10.x.y.0/24 subnet");
        let mut net = Network {
            namespaces: Vec::new(),
            veths: Vec::new(),
            bridge: format!("{BRIDGE_PREFIX}{pid}-{kk}"),
            prefix: format!("10.{a}.{b}"),
        };
        ip_ok(&["link", "add", &net.bridge, "type", "bridge"]);
        ip_ok(&[
            "addr",
            "add",
            &format!("{}.254/24", net.prefix),
            "dev",
            &net.bridge,
        ]);
        ip_ok(&["link", "set", &net.bridge, "up"]);
        for i in 0..n {
            let ns = format!("{NS_PREFIX}{pid}-{kk}-{i}");
            ip_ok(&["netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            let veth = format!("{VETH_PREFIX}{pid}-{kk}-{i}");
            let peer = format!("{PEER_PREFIX}{pid}-{kk}-{i}");
            ip_ok(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
            net.veths.push(veth.clone());
            ip_ok(&["link", "set", &peer, "netns", &ns]);
            ip_ok(&["-n", &ns, "link", "set", &peer, "name", "eth0"]);
            ip_ok(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.ip(i)),
                "dev",
                "eth0",
            ]);
            ip_ok(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
            ip_ok(&["link", "set", &veth, "master", &net.bridge]);
            ip_ok(&["link", "set", &veth, "up"]);
        }
        net
    }

    /// Member `i`'s namespace.
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// Member `i`'s IP.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, i + 1)
    }

    /// Drops everything member `i` sends to member `j`.
    fn blackhole(&self, i: usize, j: usize) {
        ip_ok(&[
            "-n",
            self.namespace(i),
            "route",
            "replace",
            "blackhole",
            &format!("{}/32", self.ip(j)),
        ]);
    }

    fn clear_blackholes(&self) {
        for ns in &self.namespaces {
            ip_ok(&["-n", ns, "route", "flush", "type", "blackhole"]);
        }
    }

    /// Delays every packet member `i` sends by `ms` ms (netem); Err if netem is missing.
    pub fn set_delay(&self, i: usize, ms: u32) -> Result<(), String> {
        ip(&[
            "netns",
            "exec",
            self.namespace(i),
            "tc",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "netem",
            "delay",
            &format!("{ms}ms"),
        ])
        .map(|_| ())
        .map_err(|e| format!("cannot add a netem qdisc (is netem in the kernel?): {e}"))
    }

    /// Removes member `i`'s delay.
    pub fn clear_delay(&self, i: usize) {
        // Fails harmlessly when there is no netem qdisc.
        let _ = ip(&[
            "netns",
            "exec",
            self.namespace(i),
            "tc",
            "qdisc",
            "del",
            "dev",
            "eth0",
            "root",
        ]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        for v in &self.veths {
            let _ = ip(&["link", "del", v]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Whether the kernel has netem (checked once, on a throwaway namespace's loopback).
pub fn netem_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let net = Network::create(1);
        net.set_delay(0, 1).is_ok()
    })
}

/// Cluster temporary directories are `$TMPDIR/ckcluster-<pid>-<random>`.
const DIR_PREFIX: &str = "ckcluster-";

/// Removes the temporary directories of test processes that are gone (killed runs leave
/// their members' data behind: etcd preallocates 64 MB WAL files), once per process.
fn remove_stale_dirs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = owner_pid(&name, DIR_PREFIX) {
                if !pid_alive(pid) {
                    eprintln!("removing {name} left by dead test process {pid}");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    });
}

/// The pid in a name made by [`Network::create`], after `prefix`.
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() || !rest[digits.len()..].starts_with('-') {
        return None;
    }
    digits.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces, bridges and veths made by test processes that are gone (once per
/// process).
pub fn remove_stale_networks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(remove_stale_networks_now);
}

/// Removes namespaces, bridges and veths made by test processes that are gone.
pub fn remove_stale_networks_now() {
    for (ns, pid) in stale_namespaces() {
        eprintln!("removing network namespace {ns} left by dead test process {pid}");
        let _ = ip(&["netns", "del", &ns]);
    }
    for (link, pid) in stale_links() {
        eprintln!("removing interface {link} left by dead test process {pid}");
        let _ = ip(&["link", "del", &link]);
    }
}

/// Namespaces named by a test process that is gone, with that pid.
pub fn stale_namespaces() -> Vec<(String, u32)> {
    let list = ip(&["netns", "list"]).unwrap_or_default();
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|ns| owner_pid(ns, NS_PREFIX).map(|p| (ns.to_owned(), p)))
        .filter(|(_, p)| !pid_alive(*p))
        .collect()
}

/// Bridges and veths named by a test process that is gone, with that pid.
pub fn stale_links() -> Vec<(String, u32)> {
    let list = ip(&["-o", "link", "show"]).unwrap_or_default();
    list.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .filter_map(|name| {
            [BRIDGE_PREFIX, VETH_PREFIX, PEER_PREFIX]
                .iter()
                .find_map(|p| owner_pid(name, p))
                .map(|p| (name.to_owned(), p))
        })
        .filter(|(_, p)| !pid_alive(*p))
        .collect()
}
