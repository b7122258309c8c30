//! Shared integration-test helpers: start real servers — corekv (the binary under test) or
//! etcd 3.4 (the oracle) — each single-member, on unique free ports with its own temporary
//! data dir, ready once `GET /health` answers healthy, killed when dropped or when the test's
//! thread ends.
//!
//! - [`Server::start`] / [`Server::start_with`] (extra flags, named the same for both kinds) /
//!   [`Server::start_advertising`] (a given peer URL: member and cluster IDs derive from the
//!   advertised peer URLs and the cluster token, so two servers of one kind advertising the
//!   same URL have the same IDs — a lone member never dials it).
//! - [`Server::kill`] is SIGKILL (nothing flushed); [`Server::restart`] starts the same kind
//!   again on the same ports and data dir.
//! - [`Server::etcdctl`] runs stock etcdctl against it.
//!
//! Start servers on the test's own thread: a server gets SIGKILL when the thread that started
//! it ends ([`DieWithTest`]), so a killed test binary leaves none behind.
//!
//! Multi-member clusters (with network partitions), the history recorder and linearizability
//! checker, and the fault-injecting workload are in [`cluster`], [`history`] and [`nemesis`]
//! (used by tests/cluster_harness.rs); an HTTP/1.1 client for etcd's JSON gateway and a
//! differential pair for it in [`gateway`]; raw gRPC calls in [`grpc`].
#![allow(dead_code)]

pub mod cluster;
pub mod ctl;
pub mod ctl_steps;
pub mod differential;
pub mod disk;
pub mod gateway;
pub mod grpc;
pub mod history;
pub mod nemesis;
pub mod proxy;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Which server binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Corekv,
    Etcd,
}

impl Kind {
    /// "corekv" or "etcd", for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Corekv => "corekv",
            Kind::Etcd => "etcd",
        }
    }

    fn binary(self) -> PathBuf {
        match self {
            Kind::Corekv => corekv_bin().to_path_buf(),
            Kind::Etcd => require_binary("etcd"),
        }
    }
}

/// Ports handed out by this process, so two tests in one run never share one.
fn taken() -> &'static Mutex<HashSet<u16>> {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    TAKEN.get_or_init(Default::default)
}

/// A TCP port on 127.0.0.1 that was free a moment ago and was not handed out before by this
/// process.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("cannot bind an ephemeral port")
            .port();
        if taken().lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Bytes no client sends: not HTTP/1, a broken HTTP/2 preface, a TLS hello on a plain port.
pub const GARBAGE: [&[u8]; 3] = [
    b"\x00\x01\x02garbage\xff",
    b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
    TLS_HELLO,
];

/// A TLS 1.2 ClientHello's first bytes, as a TLS client sends them to a plain port.
pub const TLS_HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

/// Bytes from a fixed-seed xorshift: the same "random" garbage every run.
pub fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Sends `garbage` and waits for the server to close the connection (possibly after an
/// HTTP/2 GOAWAY or an HTTP/1 error); what it answered.
pub fn send_garbage(port: u16, garbage: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = c.write_all(garbage);
    let mut buf = Vec::new();
    if let Err(e) = c.read_to_end(&mut buf) {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "port {port} kept a connection that sent {:?}",
            String::from_utf8_lossy(&garbage[..garbage.len().min(20)])
        );
    }
    buf
}

/// Processes a test starts must not outlive it, even if the test binary is killed: the child
/// gets SIGKILL when the thread that started it ends, so start them on the test's thread.
pub trait DieWithTest {
    fn die_with_test(&mut self) -> &mut Self;
}

impl DieWithTest for Command {
    fn die_with_test(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            self.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        }
    }
}

/// Finds a binary on PATH (or fails the test with a clear message).
pub fn require_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed (not on PATH). These tests compare corekv with the real \
         etcd 3.4: install Debian's etcd-server and etcd-client packages \
         (apt-get install etcd-server etcd-client), as ./test.sh does."
    );
}

/// The corekv binary's path (for tests that run it by hand): the one cargo built for the
/// tests, or `$COREKV_BIN` (a long run, e.g. the soak, can use a copy that later builds do
/// not replace under it).
pub fn corekv_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var_os("COREKV_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_corekv")))
    })
}

/// Raft timings given to both kinds unless a test passes its own: a lone member elects
/// itself after one election timeout, so a short one makes every start fast.
const FAST_TIMINGS: [&str; 2] = ["--heartbeat-interval=20", "--election-timeout=200"];

/// How long a server may take to answer healthy; only a broken one takes this long.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// A running single-member server; killed (and its data removed) on drop.
pub struct Server {
    pub kind: Kind,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The server's data directory (inside a temporary directory that also holds its log).
    pub data_dir: PathBuf,
    pub client_port: u16,
    /// The port it listens on for peers.
    pub peer_port: u16,
    /// The peer URL it advertises (by default the one it listens on).
    peer_url: String,
    flags: Vec<String>,
    /// What a start waits for: this path answering `{"health":"true"}`.
    health_path: String,
}

impl Server {
    /// Starts a server of `kind` and waits until it is healthy.
    pub fn start(kind: Kind) -> Server {
        Server::launch(kind, &[], None, None)
    }

    /// Starts a server with extra flags (etcd's names; corekv takes the same).
    pub fn start_with(kind: Kind, flags: &[&str]) -> Server {
        Server::launch(kind, flags, None, None)
    }

    /// Starts a server advertising `peer_url` instead of the peer URL it listens on. Member
    /// and cluster IDs derive from the advertised URLs (and the cluster token): two servers of
    /// one kind advertising the same URL have the same IDs, so their outputs compare as is.
    pub fn start_advertising(kind: Kind, peer_url: &str) -> Server {
        Server::launch(kind, &[], Some(peer_url), None)
    }

    /// Starts a server whose data dir is `data_dir` (e.g. on a file system the test mounted)
    /// instead of one in its temporary directory.
    pub fn start_at(kind: Kind, data_dir: &Path, flags: &[&str]) -> Server {
        let mut s = Server::launch(kind, flags, None, Some(data_dir));
        s.data_dir = data_dir.to_path_buf();
        s
    }

    /// Starts on fresh ports, trying again (on other ports) if the server exits at start — a
    /// port handed out a moment ago can still be taken by someone else meanwhile.
    fn launch(
        kind: Kind,
        flags: &[&str],
        peer_url: Option<&str>,
        data_dir: Option<&Path>,
    ) -> Server {
        let mut last = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("cannot make a temp dir");
            let peer_port = free_port();
            let mut s = Server {
                kind,
                child: None,
                data_dir: data_dir.map_or_else(|| dir.path().join("data"), Path::to_path_buf),
                dir,
                client_port: free_port(),
                peer_port,
                peer_url: peer_url.map_or(format!("http://127.0.0.1:{peer_port}"), String::from),
                flags: flags.iter().map(|f| f.to_string()).collect(),
                health_path: "/health".into(),
            };
            match s.spawn() {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!(
            "{} did not start (tried 3 times on fresh ports): {last}",
            kind.name()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.kind.name()))
    }

    /// Starts the process on this server's ports and data dir; waits until it is healthy.
    fn spawn(&mut self) -> Result<(), String> {
        let bin = self.kind.binary();
        let client = self.url();
        let listen_peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("cannot open the server's log file");
        let sets_timings = self
            .flags
            .iter()
            .any(|f| f.starts_with("--heartbeat-interval") || f.starts_with("--election-timeout"));
        let child = Command::new(&bin)
            .arg("--name=default")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={listen_peer}"))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url))
            .arg(format!("--initial-cluster=default={}", self.peer_url))
            .args(if sets_timings {
                &[][..]
            } else {
                &FAST_TIMINGS[..]
            })
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share the log file"))
            .stderr(log)
            .die_with_test()
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "it exited at start ({status}); log:\n{}",
                    self.log()
                ));
            }
            if http_get(self.client_port, &self.health_path).is_some_and(|b| b.contains("\"true\""))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "not healthy within {READY_LIMIT:?}; log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The advertised client URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.endpoint())
    }

    /// The advertised peer URL.
    pub fn peer_url(&self) -> &str {
        &self.peer_url
    }

    /// Everything the server logged so far, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// SIGKILL: no chance to flush anything. The data dir stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The flags later (re)starts use instead of the ones it started with.
    pub fn set_flags(&mut self, flags: &[&str]) {
        self.flags = flags.iter().map(|f| f.to_string()).collect();
    }

    /// The path later (re)starts wait for to answer healthy (default `/health`; e.g.
    /// `/health?exclude=NOSPACE` for a server that restarts with the alarm raised).
    pub fn set_health_path(&mut self, path: &str) {
        self.health_path = path.into();
    }

    /// Waits up to `limit` for the server to exit by itself; its exit status, or None if it
    /// still runs (or was not running).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.child.as_mut()?.try_wait().unwrap();
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (if running) and starts it again on the same ports and data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.wait_for_ports();
        if let Err(e) = self.spawn() {
            panic!("{} did not restart: {e}", self.kind.name());
        }
    }

    /// Waits until the ports of a killed server can be bound again. corekv's listening sockets
    /// outlive its process by a few milliseconds (io_uring tears its rings down after the
    /// process is gone), and a restart in that window fails with "Address already in use".
    fn wait_for_ports(&self) {
        let deadline = Instant::now() + READY_LIMIT;
        for port in [self.client_port, self.peer_port] {
            while TcpListener::bind(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "port {port} still taken {READY_LIMIT:?} after {} was killed",
                    self.kind.name()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// A stock etcdctl (API v3) command aimed at this server.
    pub fn etcdctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(require_binary("etcdctl"));
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint())
            .args(args)
            .die_with_test();
        cmd
    }

    /// Runs stock etcdctl against this server.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_stdin(args, "")
    }

    pub fn etcdctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .etcdctl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run etcdctl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1:`port`; the body if the answer is 200, else None.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_status(port, path).and_then(|(status, body)| (status == 200).then_some(body))
}

/// A plain HTTP/1.1 GET on 127.0.0.1:`port`: the answer's status and body (whatever the HTTP
/// version of the answer), or None if nothing answers within 5 s.
pub fn http_get_status(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// etcdctl commands that make root (password rootpw) and alice (apw), who may read and
/// write `app/`, then turn auth on.
pub const APP_AUTH: &[&[&str]] = &[
    &["user", "add", "root:rootpw"],
    &["user", "grant-role", "root", "root"],
    &["role", "add", "app"],
    &[
        "role",
        "grant-permission",
        "app",
        "readwrite",
        "--prefix",
        "app/",
    ],
    &["user", "add", "alice:apw"],
    &["user", "grant-role", "alice", "app"],
    &["auth", "enable"],
];

/// Anonymous memory (heap) of process `pid`, in bytes: what a server holds for its clients,
/// without the page cache its memory-mapped files take.
pub fn rss_anon(pid: u32) -> u64 {
    try_rss_anon(pid).expect("the process is gone")
}

/// [`rss_anon`], or None once the process is gone (or a zombie).
pub fn try_rss_anon(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kb * 1024)
}

/// etcdctl (v3, 10 s command timeout) against one endpoint: (success, stdout then stderr).
pub fn etcdctl_at(endpoint: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(require_binary("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("cannot run etcdctl");
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
