//! Starting real servers for integration tests: corekv (the binary under test) and etcd (the
//! oracle), each on free ports with its own temporary data dir, killed when dropped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Corekv,
    Etcd,
}

pub struct Server {
    pub kind: Kind,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    extra_args: Vec<String>,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

fn etcd_binary() -> &'static str {
    if Command::new("etcd").arg("--version").output().is_err() {
        panic!("etcd is not installed: run ./test.sh, which installs Debian's etcd-server");
    }
    "etcd"
}

impl Server {
    pub fn start(kind: Kind) -> Server {
        Server::start_with(kind, &[])
    }

    /// Starts a server with extra flags (named the same for both).
    pub fn start_with(kind: Kind, args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let mut s = Server {
            kind,
            child: None,
            _dir: Some(dir),
            data_dir,
            client_port: free_port(),
            peer_port: free_port(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let (bin, log_name) = match self.kind {
            Kind::Corekv => (env!("CARGO_BIN_EXE_corekv"), "corekv.log"),
            Kind::Etcd => (etcd_binary(), "etcd.log"),
        };
        std::fs::create_dir_all(self.data_dir.parent().unwrap()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.parent().unwrap().join(log_name))
            .unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("default={peer}"))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("starting the server");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until `GET /health` answers healthy (a linearizable read went through raft).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{:?} exited at start ({status}); log:\n{}",
                    self.kind,
                    self.log()
                );
            }
            if http_get(self.client_port, "/health").is_some_and(|b| b.contains("\"true\"")) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{:?} did not become healthy; log:\n{}",
                    self.kind,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        let name = match self.kind {
            Kind::Corekv => "corekv.log",
            Kind::Etcd => "etcd.log",
        };
        std::fs::read_to_string(self.data_dir.parent().unwrap().join(name)).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same data dir and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Runs stock etcdctl against this server.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_stdin(args, "")
    }

    pub fn etcdctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl is not installed: run ./test.sh, which installs etcd-client");
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

/// A plain HTTP/1.1 GET on 127.0.0.1:`port`; the body, or None if anything failed.
pub fn http_get(port: u16, path: &str) -> Option<String> {
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
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The corekv binary's path (for tests that run it by hand).
pub fn corekv_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_corekv"))
}
