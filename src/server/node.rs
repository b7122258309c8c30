//! The consensus core as a pure state machine: raft-rs, proposals, ReadIndex and apply.
//!
//! `Node` does no I/O and reads no clock. The driver feeds it client requests, peer messages,
//! ticks and "persisted up to Ready N" notices, and carries out what it asks for in
//! [`Output`]: records to make durable, messages to send, replies to route. Tests drive the
//! same code with a simulated disk and network.

use std::collections::{HashMap, VecDeque};

use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, HardState, Message, Snapshot};
use raft::{RawNode, StateRole, Storage};

use super::message::{Kind, Reply, ReplyTo, Request, Response, WatchCommand, WatchDelivery};
use super::raft_log::RaftLog;
use crate::net::grpc::{Code, Status};
use crate::proto::corekvpb::{raft_request, RaftBatch, RaftRequest};
use crate::proto::etcdserverpb as pb;

/// The applied state the consensus core drives: MVCC, leases, members.
pub trait StateMachine {
    /// Applies one committed write and returns the client's answer. A header revision left
    /// at 0 is filled with [`StateMachine::revision`] right after.
    fn apply(&mut self, index: u64, req: RaftRequest) -> Reply;
    /// Serves a read against the applied state.
    fn read(&mut self, req: Request) -> Reply;
    /// Records that every entry up to `index` is applied (also for entries without writes).
    fn set_applied_index(&mut self, index: u64);
    fn applied_index(&self) -> u64;
    /// (dbSize, dbSizeInUse) for Status.
    fn db_size(&self) -> (i64, i64);
    /// The store's current revision, for response headers.
    fn revision(&self) -> i64;
    /// Advances the state machine's clock (raft ticks). What it returns is proposed with no
    /// client waiting: the leader's lease revokes and checkpoints.
    fn tick(&mut self, _now: u64, _is_leader: bool) -> Vec<RaftRequest> {
        Vec::new()
    }
    /// The raft term changed (watch responses carry it in their headers).
    fn set_raft_term(&mut self, _term: u64) {}
    /// A command from a watch stream on network executor `executor`.
    fn watch(&mut self, _executor: u16, _stream: u64, _command: WatchCommand) {}
    /// Responses for watch streams produced since the last call, by executor.
    fn take_watch_deliveries(&mut self) -> Vec<(u16, WatchDelivery)> {
        Vec::new()
    }
    /// Called right after [`StateMachine::apply`]: Some(ticket) if that write's answer waits
    /// for background work (a physical compaction). The node then keeps the client waiting
    /// until [`StateMachine::background_step`] returns the answer under that ticket.
    fn defer_last_reply(&mut self) -> Option<u64> {
        None
    }
    /// Whether there is background work (a compaction freeing old revisions).
    fn has_background_work(&self) -> bool {
        false
    }
    /// Does a bounded slice of the background work, between batches of requests; returns
    /// the deferred answers that are now due.
    fn background_step(&mut self) -> Vec<(u64, Reply)> {
        Vec::new()
    }
}

/// Settings of this member's consensus core.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    pub cluster_id: u64,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Ticks after which a request still waiting for raft fails with "request timed out".
    pub request_timeout_ticks: u64,
    /// The first proposal batch id. It must differ between runs of the member (the driver
    /// takes the clock), so a new batch is never mistaken for an old one still in the log.
    pub first_batch_id: u64,
    /// The first lease ID handed out for grants that leave the ID to the server; later ones
    /// count up from it, so every member applies the proposer's choice.
    pub first_lease_id: i64,
    pub members: Vec<pb::Member>,
    pub version: String,
}

/// Records the driver must make durable, in order, then report with [`Node::on_persisted`].
#[derive(Debug, Default)]
pub struct Persist {
    pub number: u64,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<Snapshot>,
}

/// What the driver must do after feeding the node.
#[derive(Default)]
pub struct Output {
    pub replies: Vec<(ReplyTo, Reply)>,
    /// Watch responses, by network executor.
    pub watch: Vec<(u16, WatchDelivery)>,
    pub persist: Vec<Persist>,
    /// Raft messages to send to peers now.
    pub messages: Vec<Message>,
}

struct PendingBatch {
    /// One per request in the batch; None for the core's own proposals.
    replies: Vec<Option<ReplyTo>>,
    /// The requests themselves, so applying our own entry skips decoding it.
    requests: Vec<RaftRequest>,
    deadline: u64,
}

struct ReadRound {
    reads: Vec<(Request, ReplyTo)>,
    deadline: u64,
}

pub struct Node<S: StateMachine> {
    raw: RawNode<RaftLog>,
    sm: S,
    cfg: NodeConfig,
    ticks: u64,
    next_batch_id: u64,
    next_lease_id: i64,
    /// The raft term the state machine was last told.
    term_told: u64,
    next_read_ctx: u64,
    /// Writes collected since the last proposal; proposed together as one entry.
    proposing: Vec<(RaftRequest, Option<ReplyTo>)>,
    proposing_since: u64,
    /// Proposed batches waiting to be applied, by batch id.
    pending: HashMap<u64, PendingBatch>,
    /// (log index, batch id) of batches this leader proposed, oldest first, to spot lost ones.
    proposed_at: VecDeque<(u64, u64)>,
    /// Linearizable reads collected since the last read-index round.
    reads: Vec<(Request, ReplyTo)>,
    reads_since: u64,
    read_rounds: HashMap<u64, ReadRound>,
    /// Read rounds whose read index is known, waiting for apply to reach it.
    reads_ready: VecDeque<(u64, Vec<(Request, ReplyTo)>)>,
    /// Messages that may leave only after the Ready with this number is durable.
    held_messages: VecDeque<(u64, Vec<Message>)>,
    /// Readys not yet reported persisted, in order, and whether each needed a write.
    unpersisted: VecDeque<(u64, bool)>,
    /// What the state machine was last told about leadership.
    sm_knows_leader: bool,
    /// Clients whose answers wait for background work, by the state machine's ticket.
    deferred: HashMap<u64, ReplyTo>,
    out: Output,
}

/// (proposer, batch_id) of an encoded RaftBatch: its fields 1 and 2, read without decoding
/// the requests.
fn batch_origin(data: &[u8]) -> Option<(u64, u64)> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Origin {
        #[prost(uint64, tag = "1")]
        proposer: u64,
        #[prost(uint64, tag = "2")]
        batch_id: u64,
    }
    // The requests (field 3) are skipped as unknown bytes, never decoded.
    let o = Origin::decode(data).ok()?;
    Some((o.proposer, o.batch_id))
}

const NO_LEADER: &str = "etcdserver: no leader";
const MEMBERSHIP_CHANGES: &str =
    "corekv: membership changes need clustering, which is not implemented yet";
const TIMED_OUT: &str = "etcdserver: request timed out";
const LEADER_CHANGED: &str = "etcdserver: leader changed";

impl<S: StateMachine> Node<S> {
    /// Creates the node over a recovered raft log and state machine.
    pub fn new(cfg: NodeConfig, log: RaftLog, sm: S, logger: &slog::Logger) -> raft::Result<Self> {
        let applied = sm.applied_index();
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_committed_size_per_ready: 64 << 20,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let raw = RawNode::new(&raft_cfg, log, logger)?;
        let first_batch_id = cfg.first_batch_id;
        let next_lease_id = cfg.first_lease_id.max(1);
        Ok(Node {
            raw,
            sm,
            cfg,
            ticks: 0,
            next_batch_id: first_batch_id,
            next_lease_id,
            term_told: 0,
            next_read_ctx: 1,
            proposing: Vec::new(),
            proposing_since: 0,
            pending: HashMap::new(),
            proposed_at: VecDeque::new(),
            reads: Vec::new(),
            reads_since: 0,
            read_rounds: HashMap::new(),
            reads_ready: VecDeque::new(),
            held_messages: VecDeque::new(),
            unpersisted: VecDeque::new(),
            sm_knows_leader: false,
            deferred: HashMap::new(),
            out: Output::default(),
        })
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    pub fn state_machine(&self) -> &S {
        &self.sm
    }

    pub fn state_machine_mut(&mut self) -> &mut S {
        &mut self.sm
    }

    pub fn raft_log(&self) -> &RaftLog {
        self.raw.store()
    }

    pub fn raft_log_mut(&mut self) -> &mut RaftLog {
        self.raw.mut_store()
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// Starts an election now (a single member need not wait for the election timeout).
    pub fn campaign(&mut self) -> raft::Result<()> {
        self.raw.campaign()
    }

    /// Accepts a client request; its reply appears in a later [`Output`].
    pub fn submit(&mut self, req: Request, to: ReplyTo) {
        match req.kind() {
            Kind::Write(mut w) => {
                if let Some(raft_request::Request::LeaseGrant(g)) = &mut w.request {
                    if g.id == 0 {
                        g.id = self.next_lease_id;
                        self.next_lease_id += 1;
                    }
                }
                self.propose_later(w, Some(to));
            }
            Kind::LinearizableRead(r) => {
                if self.reads.is_empty() {
                    self.reads_since = self.ticks;
                }
                self.reads.push((r, to));
            }
            Kind::LocalRead(r) => {
                let reply = self.read_now(r);
                self.out.replies.push((to, reply));
            }
            Kind::Watch { stream, command } => self.sm.watch(to.executor, stream, command),
            Kind::Defragment => self
                .out
                .replies
                .push((to, Err(Status::internal("defragment is run by the driver")))),
        }
    }

    fn propose_later(&mut self, req: RaftRequest, to: Option<ReplyTo>) {
        if self.proposing.is_empty() {
            self.proposing_since = self.ticks;
        }
        self.proposing.push((req, to));
    }

    pub fn tick(&mut self) {
        self.ticks += 1;
        self.raw.tick();
        self.tick_state_machine();
        self.expire_requests();
    }

    /// Tells the state machine the time and whether this member leads; proposes what it
    /// asks for (lease revokes and checkpoints).
    fn tick_state_machine(&mut self) {
        let is_leader = self.is_leader();
        self.sm_knows_leader = is_leader;
        for req in self.sm.tick(self.ticks, is_leader) {
            self.propose_later(req, None);
        }
    }

    pub fn step(&mut self, msg: Message) {
        // A message for an unknown peer or from an older term is raft's to ignore.
        let _ = self.raw.step(msg);
    }

    /// The driver made every Ready up to `number` durable.
    pub fn on_persisted(&mut self, number: u64) {
        // raft-rs takes "persisted up to N" to cover every Ready before N, so a Ready that
        // needed no write is reported only once every Ready before it is durable.
        let mut upto = None;
        while let Some(&(n, needs_write)) = self.unpersisted.front() {
            if n > number && needs_write {
                break;
            }
            self.unpersisted.pop_front();
            upto = Some(n);
        }
        let Some(upto) = upto else { return };
        self.raw.on_persist_ready(upto);
        while let Some((n, _)) = self.held_messages.front() {
            if *n > upto {
                break;
            }
            let (_, msgs) = self.held_messages.pop_front().expect("front exists");
            self.out.messages.extend(msgs);
        }
    }

    /// Proposes what was collected, handles raft's Ready, applies committed entries.
    pub fn process(&mut self) {
        self.flush_proposals();
        self.flush_reads();
        while self.raw.has_ready() {
            self.handle_ready();
        }
        if self.sm_knows_leader != self.is_leader() {
            // A new leader takes over lease expiry at once, not at the next tick.
            self.tick_state_machine();
            self.flush_proposals();
            while self.raw.has_ready() {
                self.handle_ready();
            }
        }
        self.serve_ready_reads();
        if self.term() != self.term_told {
            self.term_told = self.term();
            self.sm.set_raft_term(self.term_told);
        }
        self.out.watch.extend(self.sm.take_watch_deliveries());
    }

    pub fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    fn flush_proposals(&mut self) {
        if self.proposing.is_empty() || self.leader_id() == 0 {
            return;
        }
        let batch_id = self.next_batch_id;
        self.next_batch_id += 1;
        let (requests, replies): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.proposing).into_iter().unzip();
        let batch = RaftBatch {
            proposer: self.cfg.id,
            batch_id,
            requests,
        };
        let data = batch.encode_to_vec();
        let requests = batch.requests;
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                if self.is_leader() {
                    let index = self.raw.raft.raft_log.last_index();
                    self.proposed_at.push_back((index, batch_id));
                }
                self.pending.insert(
                    batch_id,
                    PendingBatch {
                        replies,
                        requests,
                        deadline: self.ticks + self.cfg.request_timeout_ticks,
                    },
                );
            }
            Err(_) => self.fail(replies, Status::unavailable(NO_LEADER)),
        }
    }

    fn flush_reads(&mut self) {
        if self.reads.is_empty() || self.leader_id() == 0 {
            return;
        }
        // A leader that has not committed in its term would drop the request silently.
        if self.is_leader() && !self.raw.raft.commit_to_current_term() {
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        let reads = std::mem::take(&mut self.reads);
        self.read_rounds.insert(
            ctx,
            ReadRound {
                reads,
                deadline: self.ticks + self.cfg.request_timeout_ticks,
            },
        );
        self.raw.read_index(ctx.to_be_bytes().to_vec());
    }

    fn handle_ready(&mut self) {
        let mut rd = self.raw.ready();
        self.out.messages.extend(rd.take_messages());

        let snapshot = rd.snapshot().clone();
        if !snapshot.is_empty() {
            self.install_snapshot(&snapshot);
        }

        for rs in rd.take_read_states() {
            if rs.request_ctx.len() == 8 {
                let ctx = u64::from_be_bytes(rs.request_ctx[..8].try_into().expect("8 bytes"));
                if let Some(round) = self.read_rounds.remove(&ctx) {
                    self.reads_ready.push_back((rs.index, round.reads));
                }
            }
        }

        let committed = rd.take_committed_entries();
        self.apply_entries(committed);

        let entries = rd.take_entries();
        self.raw.mut_store().append(&entries);
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs.clone());
        }
        // raft-rs says when durability is owed: new entries, a snapshot, a new term or vote.
        // A Ready that only moves the commit index needs no fsync of its own (etcd does the
        // same); the hard state then rides along with the next write. After a crash the
        // commit index is relearned, and the backend's applied index raises it at start.
        let needs_persist = rd.must_sync() || !entries.is_empty() || !snapshot.is_empty();
        let persisted_msgs = rd.take_persisted_messages();
        let number = rd.number();
        // A Ready with nothing to write still waits behind earlier writes in flight.
        let waits = needs_persist || !self.unpersisted.is_empty();
        if needs_persist {
            self.out.persist.push(Persist {
                number,
                entries,
                hard_state: Some(self.raw.store().hard_state().clone()),
                snapshot: (!snapshot.is_empty()).then_some(snapshot),
            });
        }
        if waits {
            self.unpersisted.push_back((number, needs_persist));
            if !persisted_msgs.is_empty() {
                self.held_messages.push_back((number, persisted_msgs));
            }
        } else {
            self.out.messages.extend(persisted_msgs);
        }
        self.raw.advance_append_async(rd);
        if !waits {
            self.raw.on_persist_ready(number);
        }
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) {
        // Installing the data itself (replacing the backend) is the state machine's job once
        // clusters stream snapshots; here the log forgets what the snapshot covers.
        let meta = snapshot.get_metadata().clone();
        self.raw.mut_store().apply_snapshot(meta);
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            let index = entry.index;
            assert!(
                index > self.sm.applied_index() || self.sm.applied_index() == 0,
                "applied index must only grow: applying {index} after {}",
                self.sm.applied_index()
            );
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&entry),
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    if protobuf::Message::merge_from_bytes(&mut cc, &entry.data).is_ok() {
                        if let Ok(cs) = self.raw.apply_conf_change(&cc) {
                            self.raw.mut_store().set_conf_state(cs);
                        }
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    let mut cc = ConfChangeV2::default();
                    if protobuf::Message::merge_from_bytes(&mut cc, &entry.data).is_ok() {
                        if let Ok(cs) = self.raw.apply_conf_change(&cc) {
                            self.raw.mut_store().set_conf_state(cs);
                        }
                    }
                }
            }
            self.sm.set_applied_index(index);
            self.fail_lost_proposals(index);
        }
        let applied = self.sm.applied_index();
        if applied > 0 {
            self.raw.advance_apply_to(applied);
        }
    }

    fn apply_normal(&mut self, entry: &Entry) {
        if entry.data.is_empty() {
            return; // a new leader's empty entry
        }
        let (proposer, batch_id) = match batch_origin(&entry.data) {
            Some(origin) => origin,
            None => panic!("raft entry {} does not decode", entry.index),
        };
        let mut waiting = if proposer == self.cfg.id {
            self.pending.remove(&batch_id)
        } else {
            None
        };
        // Our own batch is still in memory: apply it without decoding the entry again.
        let requests = match waiting.as_mut() {
            Some(p) => std::mem::take(&mut p.requests),
            None => match RaftBatch::decode(entry.data.as_ref()) {
                Ok(b) => b.requests,
                Err(e) => panic!("raft entry {} does not decode: {e}", entry.index),
            },
        };
        let term = self.term();
        for (i, req) in requests.into_iter().enumerate() {
            let reply = self.sm.apply(entry.index, req);
            let later = self.sm.defer_last_reply();
            if let Some(to) = waiting.as_ref().and_then(|p| p.replies[i]) {
                match later {
                    Some(ticket) => {
                        self.deferred.insert(ticket, to);
                    }
                    None => {
                        let reply = self.fill_header(reply, term);
                        self.out.replies.push((to, reply));
                    }
                }
            }
        }
    }

    /// Whether the state machine has background work to do between batches.
    pub fn has_background_work(&self) -> bool {
        self.sm.has_background_work()
    }

    /// One slice of the state machine's background work; answers it releases go out with
    /// the next [`Node::take_output`].
    pub fn background_step(&mut self) {
        let term = self.term();
        for (ticket, reply) in self.sm.background_step() {
            // No one waits on a ticket from a replayed entry or another member's proposal.
            if let Some(to) = self.deferred.remove(&ticket) {
                let reply = self.fill_header(reply, term);
                self.out.replies.push((to, reply));
            }
        }
    }

    /// Batches this leader proposed at or below `applied` that never came back were
    /// overwritten by another leader.
    fn fail_lost_proposals(&mut self, applied: u64) {
        while let Some(&(index, batch_id)) = self.proposed_at.front() {
            if index > applied {
                break;
            }
            self.proposed_at.pop_front();
            if let Some(p) = self.pending.remove(&batch_id) {
                self.fail(p.replies, Status::unavailable(LEADER_CHANGED));
            }
        }
    }

    fn serve_ready_reads(&mut self) {
        let applied = self.sm.applied_index();
        while let Some((index, _)) = self.reads_ready.front() {
            if *index > applied {
                break;
            }
            let (_, reads) = self.reads_ready.pop_front().expect("front exists");
            for (req, to) in reads {
                let reply = self.read_now(req);
                self.out.replies.push((to, reply));
            }
        }
    }

    fn read_now(&mut self, req: Request) -> Reply {
        let term = self.term();
        let reply = match req {
            Request::Status(_) => Ok(Response::Status(self.status())),
            Request::MemberList(_) => Ok(Response::MemberList(pb::MemberListResponse {
                header: None,
                members: self.cfg.members.clone(),
            })),
            Request::MoveLeader(r) => self.move_leader(r.target_id),
            Request::MemberRemove(pb::MemberRemoveRequest { id })
            | Request::MemberUpdate(pb::MemberUpdateRequest { id, .. })
            | Request::MemberPromote(pb::MemberPromoteRequest { id }) => {
                if self.cfg.members.iter().any(|m| m.id == id) {
                    Err(Status::unimplemented(MEMBERSHIP_CHANGES))
                } else {
                    Err(Status::new(Code::NotFound, "etcdserver: member not found"))
                }
            }
            Request::MemberAdd(_) => Err(Status::unimplemented(MEMBERSHIP_CHANGES)),
            other => self.sm.read(other),
        };
        self.fill_header(reply, term)
    }

    /// etcd's MoveLeader: only the leader moves leadership, and only to a voting member.
    fn move_leader(&mut self, target: u64) -> Reply {
        if !self.is_leader() {
            return Err(Status::new(
                Code::FailedPrecondition,
                "etcdserver: not leader",
            ));
        }
        if !self.raw.store().conf_state().voters.contains(&target) {
            return Err(Status::new(
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
            ));
        }
        if target != self.cfg.id {
            // Another voter exists only in a cluster, which corekv cannot form yet.
            return Err(Status::unimplemented(MEMBERSHIP_CHANGES));
        }
        Ok(Response::MoveLeader(pb::MoveLeaderResponse {
            header: None,
        }))
    }

    /// A response header as this member fills it now (for answers made outside `process`).
    pub fn header(&self) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cfg.cluster_id,
            member_id: self.cfg.id,
            revision: self.sm.revision(),
            raft_term: self.term(),
        }
    }

    fn status(&self) -> pb::StatusResponse {
        let (db_size, db_size_in_use) = self.sm.db_size();
        let log = &self.raw.raft.raft_log;
        pb::StatusResponse {
            header: None,
            version: self.cfg.version.clone(),
            db_size,
            leader: self.leader_id(),
            raft_index: log.committed,
            raft_term: self.term(),
            raft_applied_index: self.sm.applied_index(),
            errors: vec![],
            db_size_in_use,
            is_learner: false,
        }
    }

    fn fill_header(&self, mut reply: Reply, term: u64) -> Reply {
        if let Ok(resp) = &mut reply {
            // etcd's Cluster service header carries no revision.
            let with_revision = !matches!(resp, Response::MemberList(_));
            if let Some(h) = resp.header_mut() {
                h.cluster_id = self.cfg.cluster_id;
                h.member_id = self.cfg.id;
                h.raft_term = term;
                if h.revision == 0 && with_revision {
                    h.revision = self.sm.revision();
                }
            }
        }
        reply
    }

    fn expire_requests(&mut self) {
        let now = self.ticks;
        let timeout = self.cfg.request_timeout_ticks;
        let mut expired: Vec<Option<ReplyTo>> = Vec::new();
        if !self.proposing.is_empty() && now >= self.proposing_since + timeout {
            expired.extend(self.proposing.drain(..).map(|(_, to)| to));
        }
        if !self.reads.is_empty() && now >= self.reads_since + timeout {
            expired.extend(self.reads.drain(..).map(|(_, to)| Some(to)));
        }
        self.pending.retain(|_, p| {
            if now >= p.deadline {
                expired.append(&mut p.replies);
                false
            } else {
                true
            }
        });
        self.read_rounds.retain(|_, r| {
            if now >= r.deadline {
                expired.extend(r.reads.drain(..).map(|(_, to)| Some(to)));
                false
            } else {
                true
            }
        });
        let status = if self.leader_id() == 0 {
            Status::unavailable(NO_LEADER)
        } else {
            Status::new(Code::Unavailable, TIMED_OUT)
        };
        self.fail(expired, status);
    }

    fn fail(&mut self, to: Vec<Option<ReplyTo>>, status: Status) {
        for to in to.into_iter().flatten() {
            self.out.replies.push((to, Err(status.clone())));
        }
    }

    /// The index and term of the last applied entry, for a snapshot marker.
    pub fn applied_index_term(&self) -> (u64, u64) {
        let applied = self.sm.applied_index();
        let term = self.raw.store().term(applied).unwrap_or(0);
        (applied, term)
    }

    /// Forgets log entries up to `index`: the state machine has made them durable.
    pub fn compact_log(&mut self, index: u64) {
        let cs = self.raw.store().conf_state().clone();
        self.raw.mut_store().compact(index, cs);
    }
}
