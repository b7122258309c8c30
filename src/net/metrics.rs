//! Prometheus metrics shared by every executor: lock-free counters and fixed-bucket
//! histograms (atomics, so the request path never takes a lock), rendered as text on
//! `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds in seconds, like etcd's (0.0001 s doubling up to ~8 s).
const BUCKETS: [f64; 18] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768, 6.5536, 13.1072,
];

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Per-RPC counters: requests handled, by outcome, and their latency.
#[derive(Default)]
pub struct RpcMetrics {
    pub started: AtomicU64,
    pub failed: AtomicU64,
    pub latency: Histogram,
}

/// The RPCs counted, by gRPC method name.
pub const RPCS: [&str; 24] = [
    "Range",
    "Put",
    "DeleteRange",
    "Txn",
    "Compact",
    "Watch",
    "LeaseGrant",
    "LeaseRevoke",
    "LeaseKeepAlive",
    "LeaseTimeToLive",
    "LeaseLeases",
    "MemberList",
    "Status",
    "Alarm",
    "Defragment",
    "Hash",
    "HashKV",
    "Snapshot",
    "MoveLeader",
    "Check",
    "MemberAdd",
    "MemberRemove",
    "MemberUpdate",
    "MemberPromote",
];

pub struct Metrics {
    pub rpcs: [RpcMetrics; RPCS.len()],
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
    pub db_size: AtomicI64,
    pub db_size_in_use: AtomicI64,
    pub raft_term: AtomicU64,
    pub raft_commit_index: AtomicU64,
    pub raft_applied_index: AtomicU64,
    pub has_leader: AtomicU64,
    pub revision: AtomicI64,
    pub connections: AtomicI64,
    pub leases: AtomicI64,
    pub lease_checkpoints: AtomicU64,
    pub watchers: AtomicI64,
    /// This member is a learner: the network executors refuse what etcd's learners refuse.
    pub is_learner: std::sync::atomic::AtomicBool,
    /// The members table holds this member's client URLs: until then `/health` says no, as
    /// etcd serves no client before it has published itself.
    pub published: std::sync::atomic::AtomicBool,
    /// Build and version facts rendered once.
    pub info: Mutex<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            rpcs: Default::default(),
            wal_fsync: Histogram::default(),
            backend_commit: Histogram::default(),
            db_size: AtomicI64::new(0),
            db_size_in_use: AtomicI64::new(0),
            raft_term: AtomicU64::new(0),
            raft_commit_index: AtomicU64::new(0),
            raft_applied_index: AtomicU64::new(0),
            has_leader: AtomicU64::new(0),
            revision: AtomicI64::new(0),
            connections: AtomicI64::new(0),
            leases: AtomicI64::new(0),
            lease_checkpoints: AtomicU64::new(0),
            watchers: AtomicI64::new(0),
            is_learner: std::sync::atomic::AtomicBool::new(false),
            published: std::sync::atomic::AtomicBool::new(false),
            info: Mutex::new(String::new()),
        }
    }
}

impl Metrics {
    pub fn rpc(&self, method: &str) -> Option<&RpcMetrics> {
        RPCS.iter()
            .position(|m| *m == method)
            .map(|i| &self.rpcs[i])
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 << 10);
        out.push_str("# HELP corekv_grpc_requests_total gRPC requests handled, by method.\n");
        out.push_str("# TYPE corekv_grpc_requests_total counter\n");
        for (i, m) in RPCS.iter().enumerate() {
            let n = self.rpcs[i].started.load(Relaxed);
            let _ = writeln!(out, "corekv_grpc_requests_total{{method=\"{m}\"}} {n}");
        }
        out.push_str(
            "# HELP corekv_grpc_failed_total gRPC requests answered with an error, by method.\n",
        );
        out.push_str("# TYPE corekv_grpc_failed_total counter\n");
        for (i, m) in RPCS.iter().enumerate() {
            let n = self.rpcs[i].failed.load(Relaxed);
            let _ = writeln!(out, "corekv_grpc_failed_total{{method=\"{m}\"}} {n}");
        }
        out.push_str("# HELP corekv_grpc_request_duration_seconds Latency of unary gRPC requests, by method.\n");
        out.push_str("# TYPE corekv_grpc_request_duration_seconds histogram\n");
        for (i, m) in RPCS.iter().enumerate() {
            self.rpcs[i].latency.render(
                &mut out,
                "corekv_grpc_request_duration_seconds",
                &format!("method=\"{m}\""),
            );
        }
        out.push_str("# HELP corekv_wal_fsync_duration_seconds Latency of WAL write+fdatasync.\n");
        out.push_str("# TYPE corekv_wal_fsync_duration_seconds histogram\n");
        self.wal_fsync
            .render(&mut out, "corekv_wal_fsync_duration_seconds", "");
        out.push_str("# HELP corekv_backend_commit_duration_seconds Latency of B+tree commits.\n");
        out.push_str("# TYPE corekv_backend_commit_duration_seconds histogram\n");
        self.backend_commit
            .render(&mut out, "corekv_backend_commit_duration_seconds", "");
        let gauges: [(&str, &str, i64); 12] = [
            (
                "corekv_lease_count",
                "Leases granted and not revoked.",
                self.leases.load(Relaxed),
            ),
            (
                "corekv_lease_checkpoints_total",
                "Lease remaining-TTL checkpoints applied.",
                self.lease_checkpoints.load(Relaxed) as i64,
            ),
            (
                "corekv_watchers",
                "Watchers on this member.",
                self.watchers.load(Relaxed),
            ),
            (
                "corekv_db_total_size_in_bytes",
                "Size of the backend file.",
                self.db_size.load(Relaxed),
            ),
            (
                "corekv_db_total_size_in_use_in_bytes",
                "Bytes of the backend file in live pages.",
                self.db_size_in_use.load(Relaxed),
            ),
            (
                "corekv_raft_term",
                "The current raft term.",
                self.raft_term.load(Relaxed) as i64,
            ),
            (
                "corekv_raft_committed_index",
                "The raft commit index.",
                self.raft_commit_index.load(Relaxed) as i64,
            ),
            (
                "corekv_raft_applied_index",
                "The last applied raft index.",
                self.raft_applied_index.load(Relaxed) as i64,
            ),
            (
                "corekv_has_leader",
                "1 when the member knows a leader.",
                self.has_leader.load(Relaxed) as i64,
            ),
            (
                "corekv_mvcc_current_revision",
                "The store's current revision.",
                self.revision.load(Relaxed),
            ),
            (
                "corekv_client_connections",
                "Open client connections.",
                self.connections.load(Relaxed),
            ),
            ("corekv_up", "1 while the server runs.", 1),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out.push_str(&self.info.lock().expect("metrics info lock").clone());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.0001\"} 1"));
        assert!(out.contains("x_bucket{le=\"0.0032\"} 2"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 2"));
        assert!(out.contains("x_count 2"));
    }
}
