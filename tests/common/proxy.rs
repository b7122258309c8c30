//! `corekv grpc-proxy start` (or etcd 3.4's `etcd grpc-proxy start`) in front of servers, on a
//! free port, ready once a linearizable read through it succeeds; killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, DieWithTest, Kind};

pub struct Proxy {
    child: Option<Child>,
    pub port: u16,
    log: tempfile::NamedTempFile,
}

impl Proxy {
    /// A proxy of `kind` for `endpoints`, with extra flags.
    pub fn start(kind: Kind, endpoints: &[String], flags: &[&str]) -> Proxy {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = match kind {
            Kind::Corekv => Command::new(super::corekv_bin()),
            Kind::Etcd => Command::new(super::require_binary("etcd")),
        };
        let child = cmd
            .args(["grpc-proxy", "start"])
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .args(flags)
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .die_with_test()
            .spawn()
            .expect("start the proxy");
        let mut p = Proxy {
            child: Some(child),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new(super::require_binary("etcdctl"))
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", p.endpoint()))
                .args(["get", "ready-probe", "--dial-timeout=1s"])
                .stdin(Stdio::null())
                .die_with_test()
                .output()
                .unwrap();
            if out.status.success() {
                return p;
            }
            if let Some(st) = p.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the proxy exited at start ({st}): {}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not answer within 60 s: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}
