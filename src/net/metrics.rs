//! Prometheus metrics under etcd 3.4/3.5's names, types, labels and buckets, so that etcd's
//! dashboards and the etcd mixin's alerts work against corekv unchanged.
//!
//! The request path never takes a lock or allocates: each network executor counts its gRPC
//! calls in a shard of its own ([`NetShard`], written by that executor's thread only), and the
//! consensus core counts in plain atomics (one writer). A scrape sums the shards and encodes
//! everything with `prometheus-client`'s Prometheus text (0.0.4) encoder through a
//! [`Collector`], which reads the atomics at that moment.
//!
//! Where etcd's own exposition breaks Prometheus' naming rules (a gauge whose name ends in
//! `_total`), `promtool check metrics` fails on etcd's output; corekv keeps etcd's name and
//! changes the type instead, so that the exposition passes: a value that only grows
//! (`etcd_server_proposals_committed_total`, `..._applied_total`) is a counter, one that goes
//! up and down (`etcd_debugging_mvcc_keys_total`, `..._watcher_total`, ...) is untyped.
//! Queries, dashboards and alerts do not look at the type.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::grpc::Code;

/// etcd's WAL fsync and backend commit buckets: 1 ms doubling to 8.192 s.
pub const DISK_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];
/// etcd's peer round-trip buckets: 0.1 ms doubling to 3.2768 s.
pub const RTT_BUCKETS: &[f64] = &[
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];
/// go-grpc-prometheus' default handling-time buckets (etcd's `--metrics extensive`).
pub const GRPC_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of durations with fixed buckets; lock-free.
pub struct Histogram {
    bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts; the last one is above every bound.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Adds this histogram's counts to `acc` (sum in seconds, count, per-bucket counts).
    fn add_to(&self, acc: &mut HistogramSnapshot) {
        acc.sum += self.sum_nanos.load(Relaxed) as f64 / 1e9;
        acc.count += self.count.load(Relaxed);
        for (i, b) in self.buckets.iter().enumerate() {
            acc.buckets[i].1 += b.load(Relaxed);
        }
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot::new(self.bounds);
        self.add_to(&mut s);
        s
    }
}

struct HistogramSnapshot {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl HistogramSnapshot {
    fn new(bounds: &[f64]) -> HistogramSnapshot {
        let mut buckets: Vec<(f64, u64)> = bounds.iter().map(|b| (*b, 0)).collect();
        buckets.push((f64::INFINITY, 0));
        HistogramSnapshot {
            sum: 0.0,
            count: 0,
            buckets,
        }
    }
}

/// Every gRPC method etcd 3.4 registers, by path, sorted (binary search), with its gRPC type.
/// Calls to methods corekv does not serve (Auth) are counted as answered Unimplemented, as a
/// dashboard built for etcd expects the series to exist.
pub const METHODS: [(&str, &str); 49] = [
    ("/etcdserverpb.Auth/AuthDisable", "unary"),
    ("/etcdserverpb.Auth/AuthEnable", "unary"),
    ("/etcdserverpb.Auth/Authenticate", "unary"),
    ("/etcdserverpb.Auth/RoleAdd", "unary"),
    ("/etcdserverpb.Auth/RoleDelete", "unary"),
    ("/etcdserverpb.Auth/RoleGet", "unary"),
    ("/etcdserverpb.Auth/RoleGrantPermission", "unary"),
    ("/etcdserverpb.Auth/RoleList", "unary"),
    ("/etcdserverpb.Auth/RoleRevokePermission", "unary"),
    ("/etcdserverpb.Auth/UserAdd", "unary"),
    ("/etcdserverpb.Auth/UserChangePassword", "unary"),
    ("/etcdserverpb.Auth/UserDelete", "unary"),
    ("/etcdserverpb.Auth/UserGet", "unary"),
    ("/etcdserverpb.Auth/UserGrantRole", "unary"),
    ("/etcdserverpb.Auth/UserList", "unary"),
    ("/etcdserverpb.Auth/UserRevokeRole", "unary"),
    ("/etcdserverpb.Cluster/MemberAdd", "unary"),
    ("/etcdserverpb.Cluster/MemberList", "unary"),
    ("/etcdserverpb.Cluster/MemberPromote", "unary"),
    ("/etcdserverpb.Cluster/MemberRemove", "unary"),
    ("/etcdserverpb.Cluster/MemberUpdate", "unary"),
    ("/etcdserverpb.KV/Compact", "unary"),
    ("/etcdserverpb.KV/DeleteRange", "unary"),
    ("/etcdserverpb.KV/Put", "unary"),
    ("/etcdserverpb.KV/Range", "unary"),
    ("/etcdserverpb.KV/Txn", "unary"),
    ("/etcdserverpb.Lease/LeaseGrant", "unary"),
    ("/etcdserverpb.Lease/LeaseKeepAlive", "bidi_stream"),
    ("/etcdserverpb.Lease/LeaseLeases", "unary"),
    ("/etcdserverpb.Lease/LeaseRevoke", "unary"),
    ("/etcdserverpb.Lease/LeaseTimeToLive", "unary"),
    ("/etcdserverpb.Maintenance/Alarm", "unary"),
    ("/etcdserverpb.Maintenance/Defragment", "unary"),
    ("/etcdserverpb.Maintenance/Hash", "unary"),
    ("/etcdserverpb.Maintenance/HashKV", "unary"),
    ("/etcdserverpb.Maintenance/MoveLeader", "unary"),
    ("/etcdserverpb.Maintenance/Snapshot", "server_stream"),
    ("/etcdserverpb.Maintenance/Status", "unary"),
    ("/etcdserverpb.Watch/Watch", "bidi_stream"),
    ("/grpc.health.v1.Health/Check", "unary"),
    ("/grpc.health.v1.Health/Watch", "server_stream"),
    ("/v3electionpb.Election/Campaign", "unary"),
    ("/v3electionpb.Election/Leader", "unary"),
    ("/v3electionpb.Election/Observe", "server_stream"),
    ("/v3electionpb.Election/Proclaim", "unary"),
    ("/v3electionpb.Election/Resign", "unary"),
    ("/v3lockpb.Lock/Lock", "unary"),
    ("/v3lockpb.Lock/Unlock", "unary"),
    // Sorted: '/' sorts before letters, so a longer service name comes later.
    ("/~unknown/~unknown", "unary"),
];

/// The number of gRPC codes (OK through Unauthenticated).
const CODES: usize = 17;
const CODE_NAMES: [&str; CODES] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Whether a method's series exist before its first call. etcd 3.4 registers the Lock and
/// Election services on its gRPC server after go-grpc-prometheus has pre-set the series of
/// those registered so far, so theirs appear only once called.
fn shown_from_start(path: &str) -> bool {
    !(path.starts_with("/v3lockpb.") || path.starts_with("/v3electionpb."))
}

/// The index of a gRPC path in [`METHODS`]; None for a path etcd does not serve either.
pub fn method_index(path: &str) -> Option<usize> {
    METHODS[..METHODS.len() - 1]
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
}

/// One gRPC method's counters on one executor.
struct MethodStats {
    started: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    handled: [AtomicU64; CODES],
    handling: Histogram,
}

/// One network executor's counters: only that executor's thread writes them.
pub struct NetShard {
    methods: Box<[MethodStats]>,
    client_received_bytes: AtomicU64,
    client_sent_bytes: AtomicU64,
    extensive: bool,
}

impl NetShard {
    fn new(extensive: bool) -> NetShard {
        NetShard {
            methods: METHODS
                .iter()
                .map(|_| MethodStats {
                    started: AtomicU64::new(0),
                    received: AtomicU64::new(0),
                    sent: AtomicU64::new(0),
                    handled: Default::default(),
                    handling: Histogram::new(GRPC_BUCKETS),
                })
                .collect(),
            client_received_bytes: AtomicU64::new(0),
            client_sent_bytes: AtomicU64::new(0),
            extensive,
        }
    }
}

/// The counters of one gRPC call (on the executor serving it).
pub struct CallStats {
    shard: Arc<NetShard>,
    method: usize,
    started: std::time::Instant,
}

impl CallStats {
    /// Counts a call to `path` as started.
    pub fn start(shard: &Arc<NetShard>, path: &str) -> CallStats {
        let method = method_index(path).unwrap_or(METHODS.len() - 1);
        shard.methods[method].started.fetch_add(1, Relaxed);
        CallStats {
            shard: shard.clone(),
            method,
            started: std::time::Instant::now(),
        }
    }

    fn stats(&self) -> &MethodStats {
        &self.shard.methods[self.method]
    }

    /// A request message of `len` bytes (without gRPC's 5-byte prefix) arrived.
    pub fn received(&self, len: usize) {
        self.stats().received.fetch_add(1, Relaxed);
        self.shard
            .client_received_bytes
            .fetch_add(len as u64, Relaxed);
    }

    /// A reply message of `len` bytes (without the prefix) went out.
    pub fn sent(&self, len: usize) {
        self.stats().sent.fetch_add(1, Relaxed);
        self.shard.client_sent_bytes.fetch_add(len as u64, Relaxed);
    }

    /// Reply messages went out, framed (each with gRPC's 5-byte prefix), back to back.
    pub fn sent_frames(&self, mut framed: &[u8]) {
        const PREFIX: usize = super::grpc::PREFIX_LEN;
        while framed.len() >= PREFIX {
            let len = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize;
            self.sent(len);
            framed = &framed[(PREFIX + len).min(framed.len())..];
        }
    }

    /// The call ended with `code`.
    pub fn handled(&self, code: Code) {
        let s = self.stats();
        s.handled[code as usize].fetch_add(1, Relaxed);
        if self.shard.extensive {
            s.handling.observe(self.started.elapsed());
        }
    }
}

/// Traffic with one peer (written by the consensus executor, which runs the transport).
#[derive(Default)]
pub struct PeerStats {
    pub sent_bytes: AtomicU64,
    pub received_bytes: AtomicU64,
    pub sent_failures: AtomicU64,
    pub received_failures: AtomicU64,
    pub active: AtomicBool,
    pub disconnects: AtomicU64,
    rtt: OnceLock<Histogram>,
}

impl PeerStats {
    pub fn rtt(&self) -> &Histogram {
        self.rtt.get_or_init(|| Histogram::new(RTT_BUCKETS))
    }
}

/// Facts fixed at start.
#[derive(Clone, Debug, Default)]
pub struct StaticInfo {
    pub server_version: String,
    pub cluster_version: String,
    pub quota_backend_bytes: u64,
}

pub struct Metrics {
    shards: Vec<Arc<NetShard>>,
    pub info: OnceLock<StaticInfo>,
    /// This member's ID, once known.
    pub member_id: AtomicU64,

    // The consensus core's (one writer).
    pub has_leader: AtomicU64,
    pub is_leader: AtomicU64,
    pub leader_changes: AtomicU64,
    pub raft_term: AtomicU64,
    pub raft_commit_index: AtomicU64,
    pub raft_applied_index: AtomicU64,
    pub proposals_pending: AtomicI64,
    pub proposals_failed: AtomicU64,
    pub heartbeat_send_failures: AtomicU64,
    pub slow_applies: AtomicU64,
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
    pub db_size: AtomicI64,
    /// A NOSPACE alarm is raised (set by the applier).
    pub alarm_nospace: std::sync::atomic::AtomicBool,
    /// A CORRUPT alarm is raised (set by the applier).
    pub alarm_corrupt: std::sync::atomic::AtomicBool,
    pub db_size_in_use: AtomicI64,
    pub revision: AtomicI64,
    pub compact_revision: AtomicI64,
    pub keys: AtomicI64,
    pub mvcc_puts: AtomicU64,
    pub mvcc_ranges: AtomicU64,
    pub mvcc_deletes: AtomicU64,
    pub mvcc_txns: AtomicU64,
    pub watchers: AtomicI64,
    pub leases: AtomicI64,
    pub leases_granted: AtomicU64,
    pub leases_revoked: AtomicU64,
    pub leases_renewed: AtomicU64,
    pub leases_expired: AtomicU64,
    pub lease_checkpoints: AtomicU64,
    peers: Mutex<BTreeMap<u64, Arc<PeerStats>>>,

    // The network executors'.
    pub connections: AtomicI64,
    pub watch_streams: AtomicI64,
    /// This member is a learner: the network executors refuse what etcd's learners refuse.
    pub is_learner: AtomicBool,
    /// The members table holds this member's client URLs: until then `/health` says no, as
    /// etcd serves no client before it has published itself.
    pub published: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(1, false)
    }
}

impl Metrics {
    /// Metrics for `executors` network executors; `extensive` adds gRPC handling times.
    pub fn new(executors: usize, extensive: bool) -> Metrics {
        Metrics {
            shards: (0..executors.max(1))
                .map(|_| Arc::new(NetShard::new(extensive)))
                .collect(),
            info: OnceLock::new(),
            member_id: AtomicU64::new(0),
            has_leader: AtomicU64::new(0),
            is_leader: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            raft_term: AtomicU64::new(0),
            raft_commit_index: AtomicU64::new(0),
            raft_applied_index: AtomicU64::new(0),
            proposals_pending: AtomicI64::new(0),
            proposals_failed: AtomicU64::new(0),
            heartbeat_send_failures: AtomicU64::new(0),
            slow_applies: AtomicU64::new(0),
            wal_fsync: Histogram::new(DISK_BUCKETS),
            backend_commit: Histogram::new(DISK_BUCKETS),
            db_size: AtomicI64::new(0),
            alarm_nospace: Default::default(),
            alarm_corrupt: Default::default(),
            db_size_in_use: AtomicI64::new(0),
            revision: AtomicI64::new(0),
            compact_revision: AtomicI64::new(0),
            keys: AtomicI64::new(0),
            mvcc_puts: AtomicU64::new(0),
            mvcc_ranges: AtomicU64::new(0),
            mvcc_deletes: AtomicU64::new(0),
            mvcc_txns: AtomicU64::new(0),
            watchers: AtomicI64::new(0),
            leases: AtomicI64::new(0),
            leases_granted: AtomicU64::new(0),
            leases_revoked: AtomicU64::new(0),
            leases_renewed: AtomicU64::new(0),
            leases_expired: AtomicU64::new(0),
            lease_checkpoints: AtomicU64::new(0),
            peers: Mutex::new(BTreeMap::new()),
            connections: AtomicI64::new(0),
            watch_streams: AtomicI64::new(0),
            is_learner: AtomicBool::new(false),
            published: AtomicBool::new(false),
        }
    }

    /// Executor `executor`'s shard (executors beyond the count share the last one).
    pub fn shard(&self, executor: usize) -> Arc<NetShard> {
        self.shards[executor.min(self.shards.len() - 1)].clone()
    }

    /// The counters of peer `id` (taken once per peer by the transport's owner, not per
    /// message).
    pub fn peer(&self, id: u64) -> Arc<PeerStats> {
        self.peers
            .lock()
            .expect("peer metrics lock")
            .entry(id)
            .or_default()
            .clone()
    }

    /// Whether a NOSPACE alarm is raised (by any member: the backend went over its quota or
    /// a disk filled up), as the applied alarms say.
    pub fn nospace(&self) -> bool {
        self.alarm_nospace.load(Relaxed)
    }

    /// Whether a CORRUPT alarm is raised, as the applied alarms say.
    pub fn corrupt(&self) -> bool {
        self.alarm_corrupt.load(Relaxed)
    }

    /// Publishes which alarms the applied `alarms` (type, member) hold.
    pub fn set_alarms(&self, alarms: &std::collections::BTreeSet<(i32, u64)>) {
        use crate::proto::etcdserverpb::AlarmType;
        let raised = |a: AlarmType| alarms.iter().any(|&(t, _)| t == a as i32);
        self.alarm_nospace
            .store(raised(AlarmType::Nospace), Relaxed);
        self.alarm_corrupt
            .store(raised(AlarmType::Corrupt), Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(self.clone())));
        let mut out = String::with_capacity(64 << 10);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A per-peer counter's name, help, label and reader.
type PeerCounter = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PeerStats) -> u64,
);
/// A per-method counter's name, help and reader.
type MethodCounter = (&'static str, &'static str, fn(&MethodStats) -> u64);

/// What a scrape reads.
#[derive(Debug)]
struct Scrape(Arc<Metrics>);

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// A gauge whose etcd name ends in `_total`: untyped (see the module comment).
fn untyped(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Unknown)?
        .encode_gauge(&v)
}

/// A counter; `name` is without the `_total` the encoder appends.
fn counter<V: prometheus_client::encoding::EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, V, u64>(&v, None)
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
}

/// One labelled series per item.
fn family<'a, L: EncodeLabelSet + 'a, T: 'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    items: impl IntoIterator<Item = (L, T)>,
    mut write: impl FnMut(&mut prometheus_client::encoding::MetricEncoder, T) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in items {
        let mut series = m.encode_family(&labels)?;
        write(&mut series, value)?;
    }
    Ok(())
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

fn loadi(a: &AtomicI64) -> i64 {
    a.load(Relaxed)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let m = &*self.0;
        let e = &mut enc;
        let info = m.info.get().cloned().unwrap_or_default();

        // etcd_server_*
        gauge(
            e,
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            load(&m.has_leader),
        )?;
        gauge(
            e,
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            load(&m.is_leader),
        )?;
        gauge(
            e,
            "etcd_server_is_learner",
            "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            m.is_learner.load(Relaxed) as u64,
        )?;
        counter(
            e,
            "etcd_server_leader_changes_seen",
            "The number of leader changes seen.",
            load(&m.leader_changes),
        )?;
        counter(
            e,
            "etcd_server_proposals_committed",
            "The total number of consensus proposals committed.",
            load(&m.raft_commit_index),
        )?;
        counter(
            e,
            "etcd_server_proposals_applied",
            "The total number of consensus proposals applied.",
            load(&m.raft_applied_index),
        )?;
        gauge(
            e,
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            loadi(&m.proposals_pending),
        )?;
        counter(
            e,
            "etcd_server_proposals_failed",
            "The total number of failed proposals seen.",
            load(&m.proposals_failed),
        )?;
        counter(
            e,
            "etcd_server_heartbeat_send_failures",
            "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
            load(&m.heartbeat_send_failures),
        )?;
        counter(
            e,
            "etcd_server_slow_apply",
            "The total number of slow apply requests (likely overloaded from slow disk).",
            load(&m.slow_applies),
        )?;
        gauge(
            e,
            "etcd_server_quota_backend_bytes",
            "Current backend storage quota size in bytes.",
            info.quota_backend_bytes as f64,
        )?;
        let id = format!("{:x}", load(&m.member_id));
        info_gauge(
            e,
            "etcd_server_id",
            "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
            ("server_id", id.as_str()),
        )?;
        info_gauge(
            e,
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            ("server_version", info.server_version.as_str()),
        )?;
        info_gauge(
            e,
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            ("cluster_version", info.cluster_version.as_str()),
        )?;

        // etcd_disk_*
        histogram(
            e,
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            &m.wal_fsync.snapshot(),
        )?;
        histogram(
            e,
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            &m.backend_commit.snapshot(),
        )?;

        // etcd_mvcc_* and their etcd_debugging_ twins (3.4 dashboards read those).
        let db = loadi(&m.db_size);
        gauge(
            e,
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            db,
        )?;
        gauge(
            e,
            "etcd_debugging_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            db,
        )?;
        gauge(
            e,
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            loadi(&m.db_size_in_use),
        )?;
        for prefix in ["etcd_mvcc", "etcd_debugging_mvcc"] {
            counter(
                e,
                &format!("{prefix}_put"),
                "Total number of puts seen by this member.",
                load(&m.mvcc_puts),
            )?;
            counter(
                e,
                &format!("{prefix}_range"),
                "Total number of ranges seen by this member.",
                load(&m.mvcc_ranges),
            )?;
            counter(
                e,
                &format!("{prefix}_delete"),
                "Total number of deletes seen by this member.",
                load(&m.mvcc_deletes),
            )?;
            counter(
                e,
                &format!("{prefix}_txn"),
                "Total number of txns seen by this member.",
                load(&m.mvcc_txns),
            )?;
        }
        gauge(
            e,
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
            loadi(&m.revision),
        )?;
        gauge(
            e,
            "etcd_debugging_mvcc_compact_revision",
            "The revision of the last compaction in store.",
            loadi(&m.compact_revision),
        )?;
        untyped(
            e,
            "etcd_debugging_mvcc_keys_total",
            "Total number of keys.",
            loadi(&m.keys),
        )?;
        untyped(
            e,
            "etcd_debugging_mvcc_watcher_total",
            "Total number of watchers.",
            loadi(&m.watchers),
        )?;
        untyped(
            e,
            "etcd_debugging_mvcc_watch_stream_total",
            "Total number of watch streams.",
            loadi(&m.watch_streams),
        )?;

        // etcd_debugging_lease_*
        counter(
            e,
            "etcd_debugging_lease_granted",
            "The total number of granted leases.",
            load(&m.leases_granted),
        )?;
        counter(
            e,
            "etcd_debugging_lease_revoked",
            "The total number of revoked leases.",
            load(&m.leases_revoked),
        )?;
        counter(
            e,
            "etcd_debugging_lease_renewed",
            "The number of renewed leases seen by the leader.",
            load(&m.leases_renewed),
        )?;
        counter(
            e,
            "etcd_debugging_server_lease_expired",
            "The total number of expired leases.",
            load(&m.leases_expired),
        )?;

        // etcd_network_*: clients
        let (mut received, mut sent) = (0, 0);
        for s in &m.shards {
            received += load(&s.client_received_bytes);
            sent += load(&s.client_sent_bytes);
        }
        counter(
            e,
            "etcd_network_client_grpc_received_bytes",
            "The total number of bytes received from grpc clients.",
            received,
        )?;
        counter(
            e,
            "etcd_network_client_grpc_sent_bytes",
            "The total number of bytes sent to grpc clients.",
            sent,
        )?;

        // etcd_network_*: peers
        let peers: Vec<(String, Arc<PeerStats>)> = m
            .peers
            .lock()
            .expect("peer metrics lock")
            .iter()
            .map(|(id, s)| (format!("{id:x}"), s.clone()))
            .collect();
        let local = format!("{:x}", load(&m.member_id));
        let to = |name: &'static str| {
            move |(id, s): &(String, Arc<PeerStats>)| ([(name, id.clone())], s.clone())
        };
        let local_remote = |id: &String| [("Local", local.clone()), ("Remote", id.clone())];
        family(
            e,
            "etcd_network_active_peers",
            "The current number of active peer connections.",
            MetricType::Gauge,
            peers.iter().map(|(id, s)| (local_remote(id), s)),
            |enc, s| enc.encode_gauge(&(s.active.load(Relaxed) as i64)),
        )?;
        family(
            e,
            "etcd_network_disconnected_peers",
            "The total number of disconnected peers.",
            MetricType::Counter,
            peers.iter().map(|(id, s)| (local_remote(id), s)),
            |enc, s| enc.encode_counter::<NoLabelSet, u64, u64>(&load(&s.disconnects), None),
        )?;
        let peer_counters: [PeerCounter; 4] = [
            (
                "etcd_network_peer_sent_bytes",
                "The total number of bytes sent to peers.",
                "To",
                |s| load(&s.sent_bytes),
            ),
            (
                "etcd_network_peer_received_bytes",
                "The total number of bytes received from peers.",
                "From",
                |s| load(&s.received_bytes),
            ),
            (
                "etcd_network_peer_sent_failures",
                "The total number of send failures from peers.",
                "To",
                |s| load(&s.sent_failures),
            ),
            (
                "etcd_network_peer_received_failures",
                "The total number of receive failures from peers.",
                "From",
                |s| load(&s.received_failures),
            ),
        ];
        for (name, help, label, read) in peer_counters {
            family(
                e,
                name,
                help,
                MetricType::Counter,
                peers.iter().map(to(label)),
                |enc, s| enc.encode_counter::<NoLabelSet, u64, u64>(&read(&s), None),
            )?;
        }
        family(
            e,
            "etcd_network_peer_round_trip_time_seconds",
            "Round-Trip-Time histogram between peers",
            MetricType::Histogram,
            peers.iter().map(to("To")),
            |enc, s| {
                let h = s.rtt().snapshot();
                enc.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
            },
        )?;

        // grpc_server_* (go-grpc-prometheus' names), summed over the executors.
        let n = METHODS.len() - 1; // the catch-all for unknown paths is not exposed
        let sum = |f: &dyn Fn(&MethodStats) -> u64, i: usize| -> u64 {
            m.shards.iter().map(|s| f(&s.methods[i])).sum()
        };
        let labels = |i: usize| {
            let (path, kind) = METHODS[i];
            let (service, method) = path[1..].split_once('/').unwrap_or(("", path));
            [
                ("grpc_method", method),
                ("grpc_service", service),
                ("grpc_type", kind),
            ]
        };
        let shown: Vec<usize> = (0..n)
            .filter(|&i| shown_from_start(METHODS[i].0) || sum(&|s| load(&s.started), i) > 0)
            .collect();
        let per_method: [MethodCounter; 3] = [
            (
                "grpc_server_started",
                "Total number of RPCs started on the server.",
                |s| load(&s.started),
            ),
            (
                "grpc_server_msg_received",
                "Total number of RPC stream messages received on the server.",
                |s| load(&s.received),
            ),
            (
                "grpc_server_msg_sent",
                "Total number of gRPC stream messages sent by the server.",
                |s| load(&s.sent),
            ),
        ];
        for (name, help, read) in per_method {
            family(
                e,
                name,
                help,
                MetricType::Counter,
                shown.iter().map(|&i| (labels(i), sum(&read, i))),
                |enc, v| enc.encode_counter::<NoLabelSet, u64, u64>(&v, None),
            )?;
        }
        family(
            e,
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            MetricType::Counter,
            shown.iter().flat_map(|&i| {
                let [a, b, c] = labels(i);
                (0..CODES).map(move |code| ([("grpc_code", CODE_NAMES[code]), a, b, c], (i, code)))
            }),
            |enc, (i, code)| {
                let v: u64 = m
                    .shards
                    .iter()
                    .map(|s| load(&s.methods[i].handled[code]))
                    .sum();
                enc.encode_counter::<NoLabelSet, u64, u64>(&v, None)
            },
        )?;
        if m.shards[0].extensive {
            family(
                e,
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                MetricType::Histogram,
                shown.iter().map(|&i| (labels(i), i)),
                |enc, i| {
                    let mut h = HistogramSnapshot::new(GRPC_BUCKETS);
                    for s in &m.shards {
                        s.methods[i].handling.add_to(&mut h);
                    }
                    enc.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
                },
            )?;
        }

        // process_* and os_* (as Go's process collector and etcd report them).
        process_metrics(e)?;

        // corekv's own, where etcd has nothing to say.
        gauge(
            e,
            "corekv_raft_term",
            "The current raft term.",
            load(&m.raft_term),
        )?;
        gauge(
            e,
            "corekv_client_connections",
            "Open client connections.",
            loadi(&m.connections),
        )?;
        gauge(
            e,
            "corekv_leases",
            "Leases granted and not revoked.",
            loadi(&m.leases),
        )?;
        counter(
            e,
            "corekv_lease_checkpoints",
            "Lease remaining-TTL checkpoints applied.",
            load(&m.lease_checkpoints),
        )?;
        Ok(())
    }
}

/// A gauge of 1 whose label carries the value (etcd's way of exposing a string).
fn info_gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: (&str, &str),
) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_family(&[label])?
        .encode_gauge(&1i64)
}

/// What /proc says about this process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

/// Reads this process' statistics from /proc/self (None fields stay 0).
pub fn process_stats() -> ProcessStats {
    let mut p = ProcessStats::default();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { sysconf(SC_CLK_TCK) }.max(1) as f64;
    let page = unsafe { sysconf(SC_PAGESIZE) }.max(1) as u64;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // The fields after the command name, which is in parentheses and may hold spaces.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            // f[0] is field 3 (state): utime is field 14, stime 15, starttime 22, vsize 23,
            // rss 24.
            p.cpu_seconds = (num(11) + num(12)) as f64 / ticks;
            p.virtual_bytes = num(20);
            p.resident_bytes = num(21) * page;
            let boot = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
                })
                .unwrap_or(0);
            p.start_time_seconds = boot as f64 + num(19) as f64 / ticks;
        }
    }
    p.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        p.max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
            .unwrap_or(0);
    }
    p
}

const SC_CLK_TCK: i32 = 2;
const SC_PAGESIZE: i32 = 30;
extern "C" {
    fn sysconf(name: i32) -> i64;
}

fn process_metrics(e: &mut DescriptorEncoder) -> std::fmt::Result {
    let p = process_stats();
    counter(
        e,
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    )?;
    gauge(
        e,
        "process_max_fds",
        "Maximum number of open file descriptors.",
        p.max_fds as f64,
    )?;
    gauge(
        e,
        "process_open_fds",
        "Number of open file descriptors.",
        p.open_fds as f64,
    )?;
    gauge(
        e,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        p.resident_bytes as f64,
    )?;
    gauge(
        e,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds,
    )?;
    gauge(
        e,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        p.virtual_bytes as f64,
    )?;
    gauge(
        e,
        "os_fd_used",
        "The number of used file descriptors.",
        p.open_fds as f64,
    )?;
    gauge(
        e,
        "os_fd_limit",
        "The file descriptor limit.",
        p.max_fds as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_sorted_and_found() {
        for w in METHODS[..METHODS.len() - 1].windows(2) {
            assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
        }
        assert_eq!(
            METHODS[method_index("/etcdserverpb.KV/Put").unwrap()].0,
            "/etcdserverpb.KV/Put"
        );
        assert_eq!(method_index("/etcdserverpb.KV/Nope"), None);
    }

    #[test]
    fn scrape_has_etcd_names_and_counts() {
        let m = Arc::new(Metrics::new(2, true));
        m.wal_fsync.observe(Duration::from_micros(500));
        m.wal_fsync.observe(Duration::from_millis(3));
        for executor in 0..2 {
            let call = CallStats::start(&m.shard(executor), "/etcdserverpb.KV/Put");
            call.received(10);
            call.sent(20);
            call.handled(Code::Ok);
        }
        m.peer(0xabc).sent_bytes.fetch_add(7, Relaxed);
        let out = m.render();
        assert!(out.contains("# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"));
        assert!(out.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(out.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} 2\n"));
        assert!(out.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(out.contains("etcd_disk_wal_fsync_duration_seconds_count 2\n"));
        assert!(out.contains(
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 2\n"
        ), "{out}");
        assert!(out.contains("etcd_network_client_grpc_sent_bytes_total 40\n"));
        assert!(out.contains("etcd_network_peer_sent_bytes_total{To=\"abc\"} 7\n"));
        assert!(out.contains("# TYPE etcd_debugging_mvcc_keys_total untyped\n"));
        assert!(!out.contains("~unknown"));
    }

    #[test]
    fn process_stats_are_read() {
        let p = process_stats();
        assert!(
            p.resident_bytes > 0 && p.open_fds > 0 && p.max_fds > 0,
            "{p:?}"
        );
        assert!(p.start_time_seconds > 1e9, "{p:?}");
    }
}
