//! The applied state of a member: MVCC store, lease table and watch hub over the B+tree
//! backend. The consensus core applies committed writes here, in log order, and serves
//! reads from here.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use raft::eraftpb::{ConfState, SnapshotMetadata};

use super::backend::{Committed, OverlayBackend, CONSISTENT_INDEX_KEY};
use super::datadir::ReceivedSnapshot;
use super::members::{self, Members, CONF_STATE_KEY};
use super::message::{Reply, Request, Response, WatchCommand, WatchDelivery};
use super::node::{MemberChange, StateMachine, StateSnapshot};
use crate::auth::store::{AuthStore, AuthWrites};
use crate::auth::{AuthError, AuthInfo, AuthShared};
use crate::config::Config;
use crate::lease::{LeaseError, Lessor};
use crate::mvcc::{self, KvError, KvStore, LeaseCheck, WriteEffects};
use crate::net::grpc::{Code, Status};
use crate::net::metrics::Metrics;
use crate::proto::corekvpb::{raft_request, AuthHeader, LeaseRecord, RaftRequest};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::{Event, KeyValue};
use crate::storage::{Bucket, Db, DbOptions, ReadTxn, StorageError};
use crate::watch::{HeaderInfo, History, WatchHub};

struct Leases<'a>(&'a Lessor);

impl LeaseCheck for Leases<'_> {
    fn exists(&self, lease_id: i64) -> bool {
        self.0.exists(lease_id)
    }
}

pub struct Applier {
    kv: KvStore<OverlayBackend>,
    metrics: Arc<Metrics>,
    lessor: Lessor,
    hub: WatchHub,
    applied: u64,
    uncommitted_writes: u64,
    quota_bytes: u64,
    /// --max-range-bytes: the most a client's read may return.
    max_range_bytes: usize,
    /// The raised alarms, (alarm type, member ID): replicated state, applied from the log and
    /// kept in the backend, so every member refuses the same writes.
    alarms: std::collections::BTreeSet<(i32, u64)>,
    /// Why this member's disk is short of space, while it is (the driver says).
    disk_low: Option<String>,
    /// A write was refused for the quota: raise NOSPACE at the next tick.
    alarm_wanted: bool,
    /// The tick before which no NOSPACE alarm is proposed again.
    alarm_retry_at: u64,
    /// Physical compactions waiting for the compaction in progress to finish, by ticket.
    physical_waiters: Vec<u64>,
    next_ticket: u64,
    /// The ticket of the write just applied, if its answer waits.
    deferred_now: Option<u64>,
    /// Deferred answers due at the next background step (their wait ended another way).
    due: Vec<(u64, Reply)>,
    members: Members,
    conf_state: ConfState,
    db_path: PathBuf,
    lease_clock: LeaseClock,
    auth: AuthStore,
}

/// How the lease table counts time, from the flags, and the current tick.
#[derive(Clone, Copy)]
struct LeaseClock {
    min_ttl: i64,
    ticks_per_sec: u64,
    /// One election timeout, in ticks.
    extend: u64,
    now: u64,
}

/// The applied state read back from a backend file.
struct Loaded {
    kv: KvStore<OverlayBackend>,
    lessor: Lessor,
    members: Members,
    conf_state: Option<ConfState>,
    applied: u64,
    auth: AuthStore,
    alarms: std::collections::BTreeSet<(i32, u64)>,
}

/// Meta-bucket key of the raised alarms (an AlarmResponse listing them; etcd keeps an alarm
/// bucket).
const ALARMS_KEY: &[u8] = b"alarms";

/// etcd's answer to a write refused for space (rpctypes.ErrGRPCNoSpace).
const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

fn no_space() -> Status {
    Status::new(Code::ResourceExhausted, NO_SPACE)
}

fn read_alarms(txn: &ReadTxn) -> Result<std::collections::BTreeSet<(i32, u64)>, String> {
    let Some(b) = txn.get(Bucket::Meta, ALARMS_KEY).map_err(storage_error)? else {
        return Ok(Default::default());
    };
    let list = pb::AlarmResponse::decode(b)
        .map_err(|e| format!("the alarms in the backend do not decode: {e}"))?;
    Ok(list.alarms.iter().map(|a| (a.alarm, a.member_id)).collect())
}

/// Bytes a write adds, as etcd's quota counts them (backendQuota.Cost): a put its key and
/// value plus 256, a txn its larger branch's puts, a lease grant 64; None for writes that
/// add nothing (deletes, compactions, revokes, ...). Unlike etcd, the puts of nested txns
/// count too: etcd lets a put inside a nested txn through a NOSPACE alarm.
fn write_cost(req: &raft_request::Request) -> Option<u64> {
    use pb::request_op::Request as Op;
    const KV_OVERHEAD: u64 = 256;
    const LEASE_OVERHEAD: u64 = 64;
    fn put(p: &pb::PutRequest) -> u64 {
        KV_OVERHEAD + p.key.len() as u64 + p.value.len() as u64
    }
    fn txn(t: &pb::TxnRequest) -> u64 {
        let branch = |ops: &[pb::RequestOp]| -> u64 {
            ops.iter()
                .map(|op| match &op.request {
                    Some(Op::RequestPut(p)) => put(p),
                    Some(Op::RequestTxn(t)) => txn(t),
                    _ => 0,
                })
                .sum()
        };
        branch(&t.success).max(branch(&t.failure))
    }
    let cost = match req {
        raft_request::Request::Put(p) => put(p),
        raft_request::Request::Txn(t) => txn(t),
        raft_request::Request::LeaseGrant(_) => LEASE_OVERHEAD,
        _ => 0,
    };
    (cost > 0).then_some(cost)
}

fn read_applied_index(txn: &ReadTxn) -> Result<u64, String> {
    match txn
        .get(Bucket::Meta, CONSISTENT_INDEX_KEY)
        .map_err(storage_error)?
    {
        Some(b) if b.len() == 8 => Ok(u64::from_be_bytes(b.try_into().expect("8 bytes"))),
        Some(b) => Err(format!(
            "the applied index in the backend has {} bytes, not 8",
            b.len()
        )),
        None => Ok(0),
    }
}

fn read_conf_state(txn: &ReadTxn) -> Result<Option<ConfState>, String> {
    match txn
        .get(Bucket::Meta, CONF_STATE_KEY)
        .map_err(storage_error)?
    {
        None => Ok(None),
        Some(b) => protobuf::Message::parse_from_bytes(b)
            .map(Some)
            .map_err(|e| format!("the membership in the backend does not decode: {e}")),
    }
}

fn encode_conf_state(cs: &ConfState) -> Vec<u8> {
    protobuf::Message::write_to_bytes(cs).expect("encoding into a Vec cannot fail")
}

/// Writes the initial cluster into a fresh backend, durably, before the WAL's first record:
/// every member of a new cluster writes the same, derived from the same flags.
pub fn bootstrap_backend(
    path: &Path,
    members: &Members,
    conf_state: &ConfState,
) -> Result<(), String> {
    let db = Db::open(path, DbOptions::default()).map_err(storage_error)?;
    let mut txn = db.begin_write().map_err(storage_error)?;
    members.write_all(&mut txn).map_err(storage_error)?;
    txn.put(Bucket::Meta, CONF_STATE_KEY, &encode_conf_state(conf_state))
        .map_err(storage_error)?;
    txn.commit().map_err(storage_error)
}

/// Removes from a backend what ties it to the cluster it came from (its members and removed
/// members, its raft membership, the raft index applied to it), keeping the data: a backend
/// restored from a snapshot then starts a new cluster as an empty one would.
pub fn forget_cluster(path: &Path) -> Result<(), String> {
    let db = Db::open(path, DbOptions::default()).map_err(storage_error)?;
    let mut txn = db.begin_write().map_err(storage_error)?;
    let members: Vec<Vec<u8>> = txn
        .range(Bucket::Members, Bound::Unbounded, Bound::Unbounded, false)
        .map(|item| item.map(|(k, _)| k.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(storage_error)?;
    for k in members {
        txn.delete(Bucket::Members, &k).map_err(storage_error)?;
    }
    txn.delete(Bucket::Meta, CONF_STATE_KEY)
        .map_err(storage_error)?;
    txn.delete(Bucket::Meta, CONSISTENT_INDEX_KEY)
        .map_err(storage_error)?;
    txn.commit().map_err(storage_error)
}

impl LeaseClock {
    fn load(&self, db: Db, auth: Arc<AuthShared>) -> Result<Loaded, String> {
        let txn = db.begin_read();
        let applied = read_applied_index(&txn)?;
        let conf_state = read_conf_state(&txn)?;
        let members = Members::load(&txn)?;
        let auth = AuthStore::load(&txn, auth)?;
        let alarms = read_alarms(&txn)?;
        let mut lessor = Lessor::new(self.min_ttl, self.ticks_per_sec, self.extend, self.now);
        for item in txn.range(Bucket::Lease, Bound::Unbounded, Bound::Unbounded, false) {
            let (_, v) = item.map_err(storage_error)?;
            let rec = LeaseRecord::decode(v)
                .map_err(|e| format!("a lease record does not decode: {e}"))?;
            lessor.restore(rec.id, rec.ttl, rec.remaining_ttl);
        }
        drop(txn);
        let kv = KvStore::open(OverlayBackend::new(db)).map_err(|e| e.to_string())?;
        for (key, lease) in kv.leased_keys() {
            lessor.attach(lease, key.clone());
        }
        Ok(Loaded {
            kv,
            lessor,
            members,
            conf_state,
            applied,
            auth,
            alarms,
        })
    }
}

/// etcd's ValidateConfigurationChange, with its errors as etcd's gRPC API answers them.
pub fn check_member_change(members: &Members, change: &MemberChange) -> Result<(), Status> {
    let not_found = || Status::new(Code::NotFound, "etcdserver: member not found");
    let id = change.id();
    if members.is_removed(id) {
        return Err(not_found());
    }
    match change {
        MemberChange::Add(m) => {
            if members.get(id).is_some() {
                return Err(Status::new(
                    Code::FailedPrecondition,
                    "etcdserver: member ID already exist",
                ));
            }
            if members.peer_url_user(&m.peer_urls, id).is_some() {
                return Err(Status::new(
                    Code::FailedPrecondition,
                    "etcdserver: Peer URLs already exists",
                ));
            }
            if m.is_learner && members.learners() >= 1 {
                return Err(Status::new(
                    Code::FailedPrecondition,
                    "etcdserver: too many learner members in cluster",
                ));
            }
        }
        MemberChange::Promote(_) => match members.get(id) {
            None => return Err(not_found()),
            Some(m) if !m.is_learner => {
                return Err(Status::new(
                    Code::FailedPrecondition,
                    "etcdserver: can only promote a learner member",
                ))
            }
            Some(_) => {}
        },
        MemberChange::Remove(_) => {
            if members.get(id).is_none() {
                return Err(not_found());
            }
        }
    }
    Ok(())
}

/// Keys a compaction step covers: a step holds the core for about 3 ms here (100k keys with
/// 3 revisions each: 7 ms per 1000 keys), then requests that arrived meanwhile go first.
const COMPACTION_STEP_KEYS: usize = 500;

/// etcd's warnApplyDuration: an apply slower than this counts in etcd_server_slow_apply_total.
const SLOW_APPLY: std::time::Duration = std::time::Duration::from_millis(100);

/// Counts a txn's operations as etcd's mvcc metrics do: each compare and range is a range,
/// each put a put, each delete a delete (of the branch that ran, nested txns included), and
/// the txn itself counts when it did more than one of them.
fn count_txn(m: &Metrics, req: &pb::TxnRequest, resp: &pb::TxnResponse) {
    fn walk(req: &pb::TxnRequest, resp: &pb::TxnResponse, n: &mut [u64; 3]) {
        use pb::request_op::Request as Op;
        use pb::response_op::Response as Reply;
        n[0] += req.compare.len() as u64;
        let ops = if resp.succeeded {
            &req.success
        } else {
            &req.failure
        };
        for (op, reply) in ops.iter().zip(&resp.responses) {
            match (&op.request, &reply.response) {
                (Some(Op::RequestRange(_)), _) => n[0] += 1,
                (Some(Op::RequestPut(_)), _) => n[1] += 1,
                (Some(Op::RequestDeleteRange(_)), _) => n[2] += 1,
                (Some(Op::RequestTxn(t)), Some(Reply::ResponseTxn(r))) => walk(t, r, n),
                _ => {}
            }
        }
    }
    let mut n = [0u64; 3];
    walk(req, resp, &mut n);
    m.mvcc_ranges.fetch_add(n[0], Relaxed);
    m.mvcc_puts.fetch_add(n[1], Relaxed);
    m.mvcc_deletes.fetch_add(n[2], Relaxed);
    if n.iter().sum::<u64>() > 1 {
        m.mvcc_txns.fetch_add(1, Relaxed);
    }
}

fn kv_status(e: KvError) -> Status {
    Status::new(Code::from_u32(e.grpc_code()), e.message())
}

fn lease_status(e: LeaseError) -> Status {
    let code = match e {
        LeaseError::NotFound => Code::NotFound,
        LeaseError::Exists | LeaseError::NotLeader => Code::FailedPrecondition,
        LeaseError::TtlTooLarge => Code::OutOfRange,
    };
    Status::new(code, e.to_string())
}

fn storage_error(e: StorageError) -> String {
    e.to_string()
}

impl Applier {
    /// Opens (or creates) the backend at `path` and rebuilds the in-memory indexes.
    /// `conf_state` is the raft log's membership, for a backend that does not record one.
    pub fn open(
        path: &Path,
        cfg: &Config,
        conf_state: &ConfState,
        metrics: Arc<Metrics>,
        auth: Arc<AuthShared>,
    ) -> Result<Applier, String> {
        // Every page checksum is verified at open: a page damaged on disk (bit rot, a bad
        // sector outside the last commit) stops the member with the page named, instead of
        // serving wrong data later or failing mid-request; such a member is rebuilt from its
        // peers (README, "A member whose data are damaged").
        let opts = DbOptions {
            full_check_on_open: true,
            ..DbOptions::default()
        };
        let started = std::time::Instant::now();
        let db = Db::open_wrapped(path, opts, crate::failpoint::backend_layer).map_err(|e| {
            format!("{e} (the backend file is damaged: rebuild this member from its peers)")
        })?;
        tracing::info!(
            "opened the backend, every page checksum verified, in {:?} ({} bytes)",
            started.elapsed(),
            db.size()
        );
        if let Some(note) = db.recovery_note() {
            tracing::warn!("backend: {note}");
        }
        let ticks_per_sec = (1000 / cfg.flags.heartbeat_interval.max(1)).max(1);
        let lease_clock = LeaseClock {
            // etcd: the minimum TTL is 1.5 election timeouts, rounded up to whole seconds.
            min_ttl: (3 * cfg.flags.election_timeout).div_ceil(2000) as i64,
            ticks_per_sec,
            extend: cfg.election_ticks() as u64,
            now: 0,
        };
        let loaded = lease_clock.load(db, auth)?;
        metrics.set_alarms(&loaded.alarms);
        let mut hub = WatchHub::new(10 * 60 * ticks_per_sec);
        hub.header = HeaderInfo {
            cluster_id: cfg.cluster_id,
            member_id: cfg.member_id,
            raft_term: 0,
        };
        Ok(Applier {
            kv: loaded.kv,
            metrics,
            lessor: loaded.lessor,
            hub,
            applied: loaded.applied,
            uncommitted_writes: 0,
            quota_bytes: cfg.quota_bytes(),
            max_range_bytes: cfg.flags.max_range_bytes,
            alarms: loaded.alarms,
            disk_low: None,
            alarm_wanted: false,
            alarm_retry_at: 0,
            physical_waiters: Vec::new(),
            next_ticket: 0,
            deferred_now: None,
            due: Vec::new(),
            members: loaded.members,
            conf_state: loaded.conf_state.unwrap_or_else(|| conf_state.clone()),
            db_path: path.to_path_buf(),
            lease_clock,
            auth: loaded.auth,
        })
    }

    /// The applied members table.
    /// The membership as of the applied index (raft's conf state).
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn members_table(&self) -> &Members {
        &self.members
    }

    fn save_lease(&mut self, id: i64) -> Result<(), Status> {
        let Some(l) = self.lessor.get(id) else {
            return Ok(());
        };
        let rec = LeaseRecord {
            id,
            ttl: l.ttl,
            remaining_ttl: l.remaining_ttl,
        };
        self.kv
            .backend_mut()
            .put(Bucket::Lease, &id.to_be_bytes(), &rec.encode_to_vec());
        Ok(())
    }

    /// The watch hub and the lease table follow what a write did.
    fn after_write(&mut self, effects: &WriteEffects) {
        for c in &effects.lease_changes {
            if c.old_lease != 0 {
                self.lessor.detach(c.old_lease, &c.key);
            }
            if c.new_lease != 0 {
                self.lessor.attach(c.new_lease, c.key.clone());
            }
        }
        if !effects.events.is_empty() {
            self.uncommitted_writes += 1;
            self.hub.notify(&effects.events);
        }
    }

    fn db(&self) -> &Db {
        self.kv.backend().db()
    }

    /// Whether a NOSPACE alarm is raised (by any member): writes that add data are refused
    /// at apply, as etcd's applierV3Capped refuses them.
    fn nospace_alarm(&self) -> bool {
        self.alarms
            .iter()
            .any(|&(t, _)| t == pb::AlarmType::Nospace as i32)
    }

    /// Whether a CORRUPT alarm is raised: the writes etcd's applierV3Corrupt refuses are
    /// refused at apply.
    fn corrupt_alarm(&self) -> bool {
        self.alarms
            .iter()
            .any(|&(t, _)| t == pb::AlarmType::Corrupt as i32)
    }

    fn member_id(&self) -> u64 {
        self.hub.header.member_id
    }

    /// The driver says whether this member's disk is short of space (the WAL cannot prepare
    /// its next segment, or the backend could not keep its reserve or commit at all). While
    /// it is, writes that add data are refused before they are proposed, and this member
    /// raises the NOSPACE alarm.
    pub fn set_disk_low(&mut self, why: Option<String>) {
        self.disk_low = why;
    }

    fn save_alarms(&mut self) {
        let list = pb::AlarmResponse {
            header: None,
            alarms: self.alarm_members(pb::AlarmType::None as i32),
        };
        self.kv
            .backend_mut()
            .put(Bucket::Meta, ALARMS_KEY, &list.encode_to_vec());
        self.uncommitted_writes += 1;
        self.metrics.set_alarms(&self.alarms);
    }

    /// The raised alarms of type `alarm` (NONE: all), sorted by type and member.
    fn alarm_members(&self, alarm: i32) -> Vec<pb::AlarmMember> {
        self.alarms
            .iter()
            .filter(|&&(t, _)| alarm == pb::AlarmType::None as i32 || t == alarm)
            .map(|&(t, member_id)| pb::AlarmMember {
                member_id,
                alarm: t,
            })
            .collect()
    }

    /// Alarm ACTIVATE or DEACTIVATE, applied (etcd's applierV3backend.Alarm): the answer
    /// lists the alarm activated (or already active) or deactivated; nothing if there was
    /// nothing to deactivate.
    fn apply_alarm(&mut self, req: &pb::AlarmRequest) -> pb::AlarmResponse {
        use pb::alarm_request::AlarmAction;
        let key = (req.alarm, req.member_id);
        let member = pb::AlarmMember {
            member_id: req.member_id,
            alarm: req.alarm,
        };
        let name = pb::AlarmType::try_from(req.alarm)
            .map(|t| t.as_str_name())
            .unwrap_or("UNKNOWN");
        let mut alarms = Vec::new();
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Activate) => {
                if self.alarms.insert(key) {
                    let effect = if req.alarm == pb::AlarmType::Corrupt as i32 {
                        "writes, compactions and lease grants and revokes fail with \
                         \"etcdserver: corrupt cluster\""
                    } else {
                        "writes that add data are refused"
                    };
                    tracing::warn!(
                        "alarm {name} raised by member {:x}: {effect} until it is disarmed",
                        req.member_id
                    );
                    self.save_alarms();
                }
                if req.member_id == self.member_id() {
                    self.alarm_wanted = false;
                }
                alarms.push(member);
            }
            Ok(AlarmAction::Deactivate) if self.alarms.remove(&key) => {
                tracing::warn!("alarm {name} of member {:x} disarmed", req.member_id);
                self.save_alarms();
                if req.member_id == self.member_id() {
                    // Still short of space? Raise it again at the next tick.
                    self.alarm_retry_at = 0;
                }
                alarms.push(member);
            }
            _ => {}
        }
        pb::AlarmResponse {
            header: None,
            alarms,
        }
    }

    /// etcd's authApplierV3: a client's write is checked against the auth state as of its
    /// apply (the proposer's check may be stale: the auth revision tells).
    fn check_write(
        &self,
        header: &AuthHeader,
        req: &raft_request::Request,
    ) -> Result<(), AuthError> {
        use raft_request::Request as R;
        let info = AuthInfo {
            username: header.username.clone(),
            revision: header.revision,
        };
        let info = Some(&info);
        let view = self.auth.view();
        // Writing with a lease touches every key the lease holds (a revoke deletes them).
        let lease_keys = |id: i64| -> Result<(), AuthError> {
            if let Some(l) = self.lessor.get(id) {
                for key in &l.keys {
                    view.check_put(info, key)?;
                }
            }
            Ok(())
        };
        match req {
            R::Put(p) => {
                view.check_put(info, &p.key)?;
                lease_keys(p.lease)?;
                if p.prev_kv {
                    view.check_range(info, &p.key, &[])?;
                }
                Ok(())
            }
            R::DeleteRange(d) => view.check_delete_range(info, d),
            R::Txn(t) => view.check_txn(info, t),
            R::LeaseRevoke(r) => lease_keys(r.id),
            _ => Ok(()),
        }
    }

    fn apply_request(
        &mut self,
        index: u64,
        header: Option<AuthHeader>,
        req: raft_request::Request,
    ) -> Reply {
        use raft_request::Request as R;
        // etcd's applierV3Corrupt, the outermost applier (before auth and the NOSPACE cap):
        // under a CORRUPT alarm these fail. Ranges and read-only txns are not applied
        // through raft and are still served, as in etcd.
        if self.corrupt_alarm()
            && matches!(
                req,
                R::Put(_)
                    | R::DeleteRange(_)
                    | R::Txn(_)
                    | R::Compaction(_)
                    | R::LeaseGrant(_)
                    | R::LeaseRevoke(_)
            )
        {
            return Err(Status::new(Code::DataLoss, crate::corrupt::CORRUPT_CLUSTER));
        }
        if let Some(h) = &header {
            self.check_write(h, &req)?;
        }
        // etcd's applierV3Capped: under a NOSPACE alarm, nothing that adds data applies.
        if self.nospace_alarm() && write_cost(&req).is_some() {
            return Err(no_space());
        }
        match req {
            R::Alarm(a) => Ok(Response::Alarm(self.apply_alarm(&a))),
            R::Put(mut p) => {
                if crate::failpoint::armed("diverge-put") {
                    p.value = [&p.value[..], b"~diverged"].concat().into();
                }
                let (resp, fx) = self.kv.put(&p, &Leases(&self.lessor)).map_err(kv_status)?;
                self.after_write(&fx);
                self.metrics.mvcc_puts.fetch_add(1, Relaxed);
                Ok(Response::Put(resp))
            }
            R::DeleteRange(d) => {
                let (resp, fx) = self.kv.delete_range(&d).map_err(kv_status)?;
                self.after_write(&fx);
                self.metrics.mvcc_deletes.fetch_add(1, Relaxed);
                Ok(Response::DeleteRange(resp))
            }
            R::Txn(t) => {
                let (resp, fx) = self.kv.txn(&t, &Leases(&self.lessor)).map_err(kv_status)?;
                self.after_write(&fx);
                count_txn(&self.metrics, &t, &resp);
                Ok(Response::Txn(resp))
            }
            R::Compaction(c) => {
                // Reads below the revision fail from here on; the old revisions go in
                // background steps, and a physical compaction is answered after the last.
                let resp = self.kv.start_compaction(&c).map_err(kv_status)?;
                self.uncommitted_writes += 1;
                self.metrics
                    .compact_revision
                    .store(self.kv.compact_revision(), Relaxed);
                if c.physical {
                    let ticket = self.next_ticket;
                    self.next_ticket += 1;
                    self.physical_waiters.push(ticket);
                    self.deferred_now = Some(ticket);
                }
                Ok(Response::Compact(resp))
            }
            R::LeaseGrant(g) => {
                let ttl = self.lessor.grant(g.id, g.ttl).map_err(lease_status)?;
                self.save_lease(g.id)?;
                self.uncommitted_writes += 1;
                self.metrics.leases_granted.fetch_add(1, Relaxed);
                Ok(Response::LeaseGrant(pb::LeaseGrantResponse {
                    header: None,
                    id: g.id,
                    ttl,
                    error: String::new(),
                }))
            }
            R::LeaseRevoke(r) => {
                let keys = self.lessor.revoke(r.id).map_err(lease_status)?;
                self.kv
                    .backend_mut()
                    .delete(Bucket::Lease, &r.id.to_be_bytes())
                    .map_err(|e| Status::internal(e.to_string()))?;
                let fx = self.kv.delete_keys(&keys).map_err(kv_status)?;
                self.after_write(&fx);
                self.uncommitted_writes += 1;
                self.metrics.leases_revoked.fetch_add(1, Relaxed);
                self.metrics
                    .mvcc_deletes
                    .fetch_add(keys.len() as u64, Relaxed);
                Ok(Response::LeaseRevoke(pb::LeaseRevokeResponse {
                    header: None,
                }))
            }
            R::LeaseCheckpoint(c) => {
                for cp in &c.checkpoints {
                    self.lessor.checkpoint(cp.id, cp.remaining_ttl);
                    self.save_lease(cp.id)?;
                }
                self.metrics
                    .lease_checkpoints
                    .fetch_add(c.checkpoints.len() as u64, Relaxed);
                self.uncommitted_writes += 1;
                // Nobody waits for a checkpoint; answer with the closest response type.
                Ok(Response::LeaseRevoke(pb::LeaseRevokeResponse {
                    header: None,
                }))
            }
            R::MemberUpdate(u) => {
                if self.members.get(u.id).is_none() {
                    return Err(Status::new(Code::NotFound, "etcdserver: member not found"));
                }
                if self.members.peer_url_user(&u.peer_urls, u.id).is_some() {
                    return Err(Status::new(
                        Code::FailedPrecondition,
                        "etcdserver: Peer URLs already exists",
                    ));
                }
                self.members
                    .update_peer_urls(u.id, &u.peer_urls, self.kv.backend_mut());
                self.uncommitted_writes += 1;
                Ok(Response::MemberUpdate(pb::MemberUpdateResponse {
                    header: None,
                    members: self.members.list(),
                }))
            }
            R::MemberAttributes(a) => {
                if self.members.apply_attributes(&a, self.kv.backend_mut()) {
                    self.uncommitted_writes += 1;
                }
                // Nobody waits for a publish either.
                Ok(Response::MemberList(pb::MemberListResponse::default()))
            }
            // Every other request is the auth store's.
            auth_request => {
                let mut writes = BackendWrites(self.kv.backend_mut());
                let resp = self
                    .auth
                    .apply(index, header.as_ref(), auth_request, &mut writes)?;
                self.uncommitted_writes += 1;
                Ok(Response::Auth(resp))
            }
        }
    }

    /// Alarm GET: the raised alarms of the asked type (NONE: all). ACTIVATE and
    /// DEACTIVATE go through raft ([`Applier::apply_alarm`]).
    fn alarm(&self, req: &pb::AlarmRequest) -> pb::AlarmResponse {
        pb::AlarmResponse {
            header: None,
            alarms: self.alarm_members(req.alarm),
        }
    }

    /// etcd's HashKV: CRC-32C over the key bucket's name and every revision key and value up
    /// to `revision` (0: the current one), leaving out revisions below the compaction point
    /// that a compaction at `revision` would drop. The bucket has etcd's layout, so the hash
    /// equals etcd's for the same history.
    fn hash_kv(&self, revision: i64) -> Result<pb::HashKvResponse, Status> {
        let current = self.kv.current_revision();
        let compacted = self.kv.compact_revision();
        if revision > 0 && revision <= compacted {
            return Err(kv_status(KvError::Compacted));
        }
        if revision > current {
            return Err(kv_status(KvError::FutureRev));
        }
        let upto = if revision == 0 { current } else { revision };
        let at = |key: &Bytes| {
            let req = pb::RangeRequest {
                key: key.clone(),
                revision: upto,
                ..Default::default()
            };
            self.kv.range(&req).map_err(kv_status)
        };
        // etcd skips nothing when no key is live at `upto` (its keep set is empty).
        let any_live = {
            let all = pb::RangeRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                revision: upto,
                count_only: true,
                ..Default::default()
            };
            self.kv.range(&all).map_err(kv_status)?.count > 0
        };
        let end = mvcc::encode_rev(
            mvcc::Revision {
                main: upto + 1,
                sub: 0,
            },
            false,
        );
        let mut crc = Crc32c::new();
        crc.update(b"key");
        let entries = mvcc::KvBackend::range(
            self.kv.backend(),
            mvcc::Bucket::Key,
            Bound::Unbounded,
            Bound::Excluded(&end.0[..end.1]),
            false,
        );
        for item in entries {
            let (k, v) = item.map_err(|e| Status::internal(e.to_string()))?;
            let Some((rev, _)) = mvcc::decode_rev(&k) else {
                return Err(Status::internal(
                    "a malformed revision key in the key bucket",
                ));
            };
            if rev.main <= compacted && any_live {
                // Kept only if it is still the key's latest revision at `upto`.
                let kv =
                    KeyValue::decode(v.as_slice()).map_err(|e| Status::internal(e.to_string()))?;
                let latest = at(&kv.key)?.kvs.first().map(|kv| kv.mod_revision);
                if latest != Some(rev.main) {
                    continue;
                }
            }
            crc.update(&k);
            crc.update(&v);
        }
        Ok(pb::HashKvResponse {
            header: Some(pb::ResponseHeader {
                revision: current,
                ..Default::default()
            }),
            hash: crc.finish(),
            compact_revision: compacted,
        })
    }

    /// Maintenance.Hash: CRC-32C over every bucket's name, keys and values, as etcd hashes its
    /// whole backend, leaving out what differs between members at the same state (the
    /// applied raft index). corekv's buckets are not etcd's, so the value is not etcd's;
    /// it agrees between members that applied the same entries.
    fn hash(&self) -> Result<pb::HashResponse, Status> {
        let backend = self.kv.backend();
        let hash = backend_hash(|b| backend.range(b, Bound::Unbounded, Bound::Unbounded, false))
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(pb::HashResponse {
            header: Some(pb::ResponseHeader {
                revision: self.kv.current_revision(),
                ..Default::default()
            }),
            hash,
        })
    }

    fn time_to_live(&self, r: &pb::LeaseTimeToLiveRequest) -> pb::LeaseTimeToLiveResponse {
        match self.lessor.get(r.id) {
            // etcd answers an unknown lease with TTL -1, not an error.
            None => pb::LeaseTimeToLiveResponse {
                id: r.id,
                ttl: -1,
                ..Default::default()
            },
            Some(l) => pb::LeaseTimeToLiveResponse {
                header: None,
                id: r.id,
                ttl: self.lessor.remaining_secs(r.id).unwrap_or(-1),
                granted_ttl: l.ttl,
                keys: if r.keys {
                    l.keys.iter().cloned().collect()
                } else {
                    vec![]
                },
            },
        }
    }
}

impl StateMachine for Applier {
    type Snapshot = crate::storage::Snapshot;
    type Received = ReceivedSnapshot;

    fn apply(&mut self, index: u64, req: RaftRequest) -> Reply {
        let Some(r) = req.request else {
            return Err(Status::invalid_argument("empty raft request"));
        };
        self.kv.set_event_prev_kv(self.hub.wants_prev_kv());
        let started = std::time::Instant::now();
        let reply = self.apply_request(index, req.auth, r);
        let took = started.elapsed();
        if took > SLOW_APPLY {
            self.metrics.slow_applies.fetch_add(1, Relaxed);
            tracing::warn!("apply request took too long ({took:?}, expected under {SLOW_APPLY:?})");
        }
        self.hub.flush(self.kv.current_revision());
        self.metrics.leases.store(self.lessor.len() as i64, Relaxed);
        self.metrics
            .keys
            .store(self.kv.live_key_count() as i64, Relaxed);
        reply
    }

    fn alarm_errors(&self) -> Vec<String> {
        // etcd: each AlarmMember's String(), gogoproto's compact text format.
        self.alarm_members(pb::AlarmType::None as i32)
            .iter()
            .map(|a| {
                let name = pb::AlarmType::try_from(a.alarm)
                    .map(|t| t.as_str_name())
                    .unwrap_or("NONE");
                // gogoproto leaves out zero fields: etcd's CORRUPT alarm is member 0.
                if a.member_id == 0 {
                    format!("alarm:{name} ")
                } else {
                    format!("memberID:{} alarm:{name} ", a.member_id)
                }
            })
            .collect()
    }

    fn refuse(&mut self, req: &RaftRequest) -> Option<Status> {
        // Only what adds data is checked: a txn that adds nothing passes, as in etcd's
        // backendQuota.Available.
        let cost = write_cost(req.request.as_ref()?)?;
        // A disk short of space raises NOSPACE by itself (see tick).
        if self.disk_low.is_some() {
            return Some(no_space());
        }
        // etcd's quota check (quotaKVServer): refused before raft, and NOSPACE raised.
        if self.db().size() + cost >= self.quota_bytes {
            let me = (pb::AlarmType::Nospace as i32, self.member_id());
            self.alarm_wanted = !self.alarms.contains(&me);
            return Some(no_space());
        }
        None
    }

    fn read(&mut self, req: Request) -> Reply {
        match req {
            Request::Range(r) => {
                self.metrics.mvcc_ranges.fetch_add(1, Relaxed);
                self.kv
                    .range_within(&r, self.max_range_bytes)
                    .map(Response::Range)
                    .map_err(kv_status)
            }
            Request::Txn(t) => {
                let resp = self
                    .kv
                    .txn_read_within(&t, self.max_range_bytes)
                    .map_err(kv_status)?;
                count_txn(&self.metrics, &t, &resp);
                Ok(Response::Txn(resp))
            }
            Request::LeaseTimeToLive(r) => Ok(Response::LeaseTimeToLive(self.time_to_live(&r))),
            Request::LeaseLeases(_) => Ok(Response::LeaseLeases(pb::LeaseLeasesResponse {
                header: None,
                leases: self
                    .lessor
                    .ids_by_expiry()
                    .into_iter()
                    .map(|id| pb::LeaseStatus { id })
                    .collect(),
            })),
            Request::LeaseKeepAlive(k) => {
                let ttl = match self.lessor.renew(k.id) {
                    Ok(ttl) => {
                        self.metrics.leases_renewed.fetch_add(1, Relaxed);
                        ttl
                    }
                    // etcd answers an unknown or expired lease with TTL 0.
                    Err(LeaseError::NotFound) => 0,
                    Err(e) => return Err(lease_status(e)),
                };
                Ok(Response::LeaseKeepAlive(pb::LeaseKeepAliveResponse {
                    header: None,
                    id: k.id,
                    ttl,
                }))
            }
            Request::Alarm(a) => Ok(Response::Alarm(self.alarm(&a))),
            Request::HashKv(h) => self.hash_kv(h.revision).map(Response::HashKv),
            Request::Hash(_) => self.hash().map(Response::Hash),
            Request::PasswordCheck(name) => {
                Ok(Response::PasswordCheck(self.auth.password_check(&name)))
            }
            other => Err(Status::internal(format!(
                "{} is not a read",
                other.method()
            ))),
        }
    }

    fn set_applied_index(&mut self, index: u64) {
        assert!(
            index >= self.applied,
            "applied index went back from {} to {index}",
            self.applied
        );
        self.applied = index;
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn db_size(&self) -> (i64, i64) {
        (self.db().size() as i64, self.db().size_in_use() as i64)
    }

    fn revision(&self) -> i64 {
        self.kv.current_revision()
    }

    fn tick(&mut self, now: u64, is_leader: bool) -> Vec<RaftRequest> {
        self.lease_clock.now = now;
        self.hub.tick(now, self.kv.current_revision());
        let p = self.lessor.tick(now, is_leader);
        self.metrics
            .leases_expired
            .fetch_add(p.revoke.len() as u64, Relaxed);
        let mut out = Vec::new();
        // This member's disk is short of space, or a write went over the quota: raise
        // NOSPACE (again a second later if it did not apply, e.g. without a leader).
        let me = self.member_id();
        let raised = self.alarms.contains(&(pb::AlarmType::Nospace as i32, me));
        if (self.disk_low.is_some() || self.alarm_wanted) && !raised && now >= self.alarm_retry_at {
            self.alarm_retry_at = now + self.lease_clock.ticks_per_sec;
            out.push(RaftRequest {
                auth: None,
                request: Some(raft_request::Request::Alarm(pb::AlarmRequest {
                    action: pb::alarm_request::AlarmAction::Activate as i32,
                    member_id: me,
                    alarm: pb::AlarmType::Nospace as i32,
                })),
            });
        }
        for id in p.revoke {
            out.push(RaftRequest {
                auth: None,
                request: Some(raft_request::Request::LeaseRevoke(pb::LeaseRevokeRequest {
                    id,
                })),
            });
        }
        for batch in p.checkpoints {
            let checkpoints = batch
                .into_iter()
                .map(|(id, remaining_ttl)| pb::LeaseCheckpoint { id, remaining_ttl })
                .collect();
            out.push(RaftRequest {
                auth: None,
                request: Some(raft_request::Request::LeaseCheckpoint(
                    pb::LeaseCheckpointRequest { checkpoints },
                )),
            });
        }
        out
    }

    fn set_raft_term(&mut self, term: u64) {
        self.hub.header.raft_term = term;
    }

    fn watch(&mut self, executor: u16, stream: u64, command: WatchCommand) {
        let history = KvHistory(&self.kv);
        self.hub.command(executor, stream, command, &history);
        self.metrics
            .watchers
            .store(self.hub.watcher_count() as i64, Relaxed);
    }

    fn take_watch_deliveries(&mut self) -> Vec<(u16, WatchDelivery)> {
        self.hub.take_deliveries()
    }

    fn defer_last_reply(&mut self) -> Option<u64> {
        self.deferred_now.take()
    }

    fn has_background_work(&self) -> bool {
        self.kv.compaction_in_progress().is_some() || !self.due.is_empty()
    }

    fn background_step(&mut self) -> Vec<(u64, Reply)> {
        if !self.due.is_empty() {
            return std::mem::take(&mut self.due);
        }
        let outcome = match self.kv.compact_step(COMPACTION_STEP_KEYS) {
            Ok(step) => {
                self.uncommitted_writes += step.removed;
                if step.finished.is_none() {
                    return Vec::new();
                }
                // etcd answers a physical compaction with the revision current when it is done.
                Ok(self.kv.current_revision())
            }
            Err(e) => Err(kv_status(e)),
        };
        self.physical_waiters
            .drain(..)
            .map(|ticket| {
                let reply = match &outcome {
                    Ok(revision) => Ok(Response::Compact(pb::CompactionResponse {
                        header: Some(pb::ResponseHeader {
                            revision: *revision,
                            ..Default::default()
                        }),
                    })),
                    Err(status) => Err(status.clone()),
                };
                (ticket, reply)
            })
            .collect()
    }

    fn members(&self) -> Vec<pb::Member> {
        self.members.list()
    }

    fn member(&self, id: u64) -> Option<pb::Member> {
        self.members.get(id).map(members::to_pb)
    }

    fn check_member_change(&self, change: &MemberChange) -> Result<(), Status> {
        check_member_change(&self.members, change)
    }

    fn apply_member_change(&mut self, change: &MemberChange) {
        let backend = self.kv.backend_mut();
        match change {
            MemberChange::Add(m) => self.members.add(m.clone(), backend),
            MemberChange::Promote(id) => self.members.promote(*id, backend),
            MemberChange::Remove(id) => self.members.remove(*id, backend),
        }
        self.uncommitted_writes += 1;
    }

    fn set_conf_state(&mut self, conf_state: &ConfState) {
        self.conf_state = conf_state.clone();
        self.kv
            .backend_mut()
            .put(Bucket::Meta, CONF_STATE_KEY, &encode_conf_state(conf_state));
        self.uncommitted_writes += 1;
    }

    fn snapshot(&mut self) -> Result<StateSnapshot<Self::Snapshot>, String> {
        self.state_snapshot()
    }

    fn restore(&mut self, meta: &SnapshotMetadata, data: ReceivedSnapshot) -> Result<(), String> {
        self.restore_from(meta, data)
    }
}

impl Applier {
    fn restore_from(
        &mut self,
        meta: &SnapshotMetadata,
        data: ReceivedSnapshot,
    ) -> Result<(), String> {
        let old_revision = self.kv.current_revision();
        // A commit in flight writes into the file about to be replaced: let it end first.
        if let Some(Err(e)) = self.kv.backend_mut().wait_commit() {
            tracing::warn!("the backend commit before a snapshot install failed: {e}");
        }
        crate::failpoint::hit("snapshot-wal-recorded");
        data.install_as(&self.db_path).map_err(|e| {
            format!(
                "moving the received snapshot to {}: {e}",
                self.db_path.display()
            )
        })?;
        let db = Db::open(&self.db_path, DbOptions::default()).map_err(storage_error)?;
        let loaded = self.lease_clock.load(db, self.auth.shared().clone())?;
        if loaded.applied != meta.index {
            return Err(format!(
                "the received backend is at raft index {}, not the snapshot's {}",
                loaded.applied, meta.index
            ));
        }
        self.kv = loaded.kv;
        self.lessor = loaded.lessor;
        self.auth = loaded.auth;
        self.members = loaded.members.replacing(&self.members);
        self.conf_state = loaded
            .conf_state
            .unwrap_or_else(|| meta.get_conf_state().clone());
        self.alarms = loaded.alarms;
        self.metrics.set_alarms(&self.alarms);
        self.applied = loaded.applied;
        self.uncommitted_writes = 0;
        // A physical compaction waiting on the old state is answered now, with the new one.
        let revision = self.kv.current_revision();
        for ticket in self.physical_waiters.drain(..) {
            let reply = Ok(Response::Compact(pb::CompactionResponse {
                header: Some(pb::ResponseHeader {
                    revision,
                    ..Default::default()
                }),
            }));
            self.due.push((ticket, reply));
        }
        // Watchers that had seen everything up to the old revision catch up from history.
        let history = KvHistory(&self.kv);
        self.hub.resync_all(old_revision + 1, &history);
        self.metrics.leases.store(self.lessor.len() as i64, Relaxed);
        Ok(())
    }

    fn state_snapshot(&mut self) -> Result<StateSnapshot<crate::storage::Snapshot>, String> {
        let snap = self.db().snapshot().map_err(storage_error)?;
        let txn = snap.read_txn();
        let index = read_applied_index(&txn)?;
        let conf_state = read_conf_state(&txn)?.unwrap_or_else(|| self.conf_state.clone());
        drop(txn);
        Ok(StateSnapshot {
            index,
            conf_state,
            data: snap,
        })
    }
}

impl super::driver::DurableStateMachine for Applier {
    fn members_table(&self) -> (&Members, u64) {
        (&self.members, self.members.version())
    }

    fn start_commit(&mut self) -> bool {
        let applied = self.applied;
        if !self.kv.backend_mut().start_commit(applied) {
            return false;
        }
        self.uncommitted_writes = 0;
        true
    }

    fn poll_commit(&mut self) -> Option<Result<Committed, super::driver::BackendError>> {
        use super::driver::BackendError;
        self.kv.backend_mut().poll_commit().map(|r| {
            r.map_err(|e| match e {
                StorageError::NoSpace(_) => BackendError::NoSpace(e.to_string()),
                e => BackendError::Fatal(e.to_string()),
            })
        })
    }

    fn commit_stalled(&self) -> bool {
        self.kv.backend().commit_stalled()
    }

    fn set_disk_low(&mut self, why: Option<String>) {
        Applier::set_disk_low(self, why);
    }

    fn uncommitted_writes(&self) -> u64 {
        self.uncommitted_writes
    }

    fn commit_in_flight(&self) -> bool {
        self.kv.backend().commit_in_flight()
    }

    fn db(&self) -> Db {
        self.db().clone()
    }
}

/// The auth store writes into the backend overlay, committed with everything else.
struct BackendWrites<'a>(&'a mut OverlayBackend);

impl AuthWrites for BackendWrites<'_> {
    fn put(&mut self, bucket: Bucket, key: &[u8], value: &[u8]) {
        self.0.put(bucket, key, value);
    }

    fn delete(&mut self, bucket: Bucket, key: &[u8]) {
        // Reading first (to report whether the key existed) fails only if the backend
        // does; the overlay records the delete either way.
        let _ = self.0.delete(bucket, key);
    }
}

/// Watch history read from the MVCC store's key bucket.
struct KvHistory<'a>(&'a KvStore<OverlayBackend>);

impl History for KvHistory<'_> {
    fn current_revision(&self) -> i64 {
        self.0.current_revision()
    }

    fn compact_revision(&self) -> i64 {
        self.0.compact_revision()
    }

    fn events(&self, key: &[u8], range_end: &[u8], from_rev: i64, to_rev: i64) -> Vec<Event> {
        let in_range = |k: &[u8]| match range_end {
            [] => k == key,
            [0] => k >= key,
            end => k >= key && k < end,
        };
        // The hub checks compaction first; a failure here means the backend failed.
        self.0
            .events_matching(from_rev, to_rev + 1, true, in_range)
            .unwrap_or_default()
    }
}

/// Maintenance.Hash's value: CRC-32C over every bucket's name, keys and values, in bucket
/// order, leaving out the applied raft index; `bucket` gives a bucket's entries in key order.
/// `corekvctl snapshot status` computes the same over a snapshot file, so a saved file can be
/// matched with `endpoint hash` of the member it came from.
pub fn backend_hash<'a, I>(mut bucket: impl FnMut(Bucket) -> I) -> Result<u32, StorageError>
where
    I: Iterator<Item = Result<(&'a [u8], &'a [u8]), StorageError>>,
{
    let mut crc = Crc32c::new();
    for b in Bucket::ALL {
        crc.update(b.name().as_bytes());
        for item in bucket(b) {
            let (k, v) = item?;
            if b == Bucket::Meta && k == CONSISTENT_INDEX_KEY {
                continue;
            }
            crc.update(k);
            crc.update(v);
        }
    }
    Ok(crc.finish())
}

/// CRC-32C (Castagnoli), the checksum etcd's HashKV uses.
struct Crc32c(u32);

impl Crc32c {
    fn table() -> &'static [u32; 256] {
        static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            let mut t = [0u32; 256];
            for (i, slot) in t.iter_mut().enumerate() {
                let mut c = i as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0x82f6_3b78 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
                *slot = c;
            }
            t
        })
    }

    fn new() -> Crc32c {
        Crc32c(!0)
    }

    fn update(&mut self, bytes: &[u8]) {
        let t = Self::table();
        for b in bytes {
            self.0 = t[((self.0 ^ *b as u32) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }

    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::Crc32c;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        let mut c = Crc32c::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xe306_9283);
    }
}
