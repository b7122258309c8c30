//! Shared integration-test helpers: start a server on free ports with a temporary data dir,
//! kill it on drop.
//!
//! `Server` is what tests talk to; `Etcd` is the real etcd 3.4 (the oracle). A `Corekv` process
//! can implement the same trait and be picked with [`start`] — tests written against
//! `dyn Server` then run unchanged against both.
#![allow(dead_code)]

pub mod ctl;
pub mod ctl_steps;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// A running server a test can talk to.
pub trait Server {
    /// What it is ("etcd", "corekv"), for messages.
    fn kind(&self) -> &'static str;
    /// The client endpoint, `127.0.0.1:PORT`.
    fn endpoint(&self) -> String;
    /// The advertised client URL, `http://127.0.0.1:PORT`.
    fn client_url(&self) -> String {
        format!("http://{}", self.endpoint())
    }
    /// The advertised peer URL.
    fn peer_url(&self) -> String;
    /// The data directory.
    fn data_dir(&self) -> &Path;
}

/// Which server binary to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Etcd,
}

/// Starts a single-member server of `kind` on free ports.
pub fn start(kind: Kind) -> Box<dyn Server> {
    match kind {
        Kind::Etcd => Box::new(Etcd::start()),
    }
}

/// Ports handed out by this process, so two tests in one run never share one.
fn taken() -> &'static Mutex<HashSet<u16>> {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    TAKEN.get_or_init(Default::default)
}

/// A TCP port on 127.0.0.1 that was free a moment ago and was not handed out before.
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

/// Processes a test starts must not outlive it, even if the test binary is killed: the child
/// gets SIGKILL when the thread that started it ends, so start servers on the test's thread.
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
         (apt-get install etcd-server etcd-client), as the project's test command does."
    );
}

/// A real etcd 3.4, single member, on free ports; killed (and its data removed) on drop.
pub struct Etcd {
    /// The running process (none while stopped).
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    peer_url: String,
    log: std::sync::Arc<Mutex<String>>,
}

impl Etcd {
    /// Starts etcd and waits until it serves clients. Panics (with etcd's log) if it cannot.
    pub fn start() -> Etcd {
        Etcd::start_advertising(None)
    }

    /// Like [`Etcd::start`], advertising `peer_url` instead of the peer URL it listens on. A lone
    /// member never dials its peers, and member and cluster IDs derive from the advertised URLs:
    /// two servers advertising the same URL have the same IDs, so their outputs compare as is.
    pub fn start_advertising(peer_url: Option<&str>) -> Etcd {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("cannot make a temp dir");
            let client_port = free_port();
            let peer_port = free_port();
            let peer_url = peer_url.map_or(format!("http://127.0.0.1:{peer_port}"), String::from);
            let log = std::sync::Arc::new(Mutex::new(String::new()));
            let mut etcd = Etcd {
                child: None,
                dir,
                client_port,
                peer_port,
                peer_url,
                log,
            };
            match etcd.spawn() {
                Ok(()) => return etcd,
                Err(log) => last_log = log,
            }
        }
        panic!("etcd did not start (tried 3 times on fresh ports); its last log:\n{last_log}");
    }

    /// Starts the etcd process on this member's ports and data dir; waits until it serves.
    fn spawn(&mut self) -> Result<(), String> {
        let bin = require_binary("etcd");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let advertised = &self.peer_url;
        let mut child = Command::new(&bin)
            .arg("--name=default")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={advertised}"))
            .arg(format!("--initial-cluster=default={advertised}"))
            // A lone member elects itself after one election timeout: keep it short.
            .args(["--heartbeat-interval=20", "--election-timeout=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .die_with_test()
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("serving insecure client requests") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.child = Some(child);
        // Generous: only a broken etcd takes this long; a slow machine still passes.
        match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.stop();
                Err(self.log())
            }
        }
    }

    /// Kills the process (SIGKILL); the data dir stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills etcd and starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn() {
            panic!("etcd did not restart; its log:\n{log}");
        }
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Server for Etcd {
    fn kind(&self) -> &'static str {
        "etcd"
    }
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
    fn peer_url(&self) -> String {
        self.peer_url.clone()
    }
    fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
