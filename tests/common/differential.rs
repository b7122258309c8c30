//! Stock etcdctl against etcd 3.4 and corekv side by side: the same command to both, the
//! same outcome required, apart from what legitimately differs between two clusters (IDs,
//! raft terms, the timestamps and client ids in etcdctl's retry warnings).

use super::{stderr, stdout, Kind, Server};

/// Replaces what legitimately differs between two clusters: cluster/member IDs, raft term.
pub fn normalize(text: &str) -> String {
    let mut out = Vec::new();
    for line in text.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            // etcdctl's retry warnings carry timestamps and client ids; keep the error.
            Ok(v) if v.get("level").is_some() => out.push(v["error"].to_string()),
            Ok(mut v) => {
                scrub(&mut v);
                out.push(v.to_string());
            }
            Err(_) => {
                // `-w fields` prints one "Name" : value per line.
                let id_field = ["\"ClusterID\"", "\"MemberID\"", "\"RaftTerm\""]
                    .iter()
                    .any(|f| line.starts_with(f));
                out.push(if id_field {
                    String::new()
                } else {
                    line.to_owned()
                });
            }
        }
    }
    out.join("\n")
}

fn scrub(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for k in ["cluster_id", "member_id", "raft_term"] {
                if m.contains_key(k) {
                    m.insert(k.into(), 0.into());
                }
            }
            for (_, x) in m.iter_mut() {
                scrub(x);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(scrub),
        _ => {}
    }
}

pub struct Pair {
    pub etcd: Server,
    pub corekv: Server,
}

impl Pair {
    pub fn start() -> Pair {
        Pair {
            etcd: Server::start(Kind::Etcd),
            corekv: Server::start(Kind::Corekv),
        }
    }

    /// Runs one etcdctl command on both and asserts the same outcome.
    pub fn same(&self, args: &[&str]) {
        self.same_stdin(args, "")
    }

    pub fn same_stdin(&self, args: &[&str], stdin: &str) {
        let e = self.etcd.etcdctl_stdin(args, stdin);
        let c = self.corekv.etcdctl_stdin(args, stdin);
        assert_eq!(
            e.status.success(),
            c.status.success(),
            "exit status differs for {args:?}\netcd: {}{}\ncorekv: {}{}",
            stdout(&e),
            stderr(&e),
            stdout(&c),
            stderr(&c)
        );
        // Each server's own address (in etcdctl's per-endpoint lines) differs too.
        let (ee, ce) = (self.etcd.endpoint(), self.corekv.endpoint());
        let out = |text: String, endpoint: &str| normalize(&text.replace(endpoint, "<endpoint>"));
        assert_eq!(
            out(stdout(&c), &ce),
            out(stdout(&e), &ee),
            "stdout differs for {args:?}"
        );
        assert_eq!(
            out(stderr(&c), &ce),
            out(stderr(&e), &ee),
            "stderr differs for {args:?}"
        );
    }
}
