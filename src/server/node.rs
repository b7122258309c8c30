//! The consensus core as a pure state machine: raft-rs, proposals, ReadIndex and apply.
//!
//! `Node` does no I/O and reads no clock. The driver feeds it client requests, peer messages,
//! ticks and "persisted up to Ready N" notices, and carries out what it asks for in
//! [`Output`]: records to make durable, messages to send, replies to route. Tests drive the
//! same code with a simulated disk and network.

use std::collections::{HashMap, VecDeque};

use prost::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};
use raft::{RawNode, SnapshotStatus, StateRole, Storage};

use super::message::{Kind, Reply, ReplyTo, Request, Response, WatchCommand, WatchDelivery};
use super::raft_log::RaftLog;
use crate::corrupt::{self, KvHash, PeerHash};
use crate::net::grpc::{Code, Status};
use crate::proto::corekvpb::{
    forward_reply, forward_request, raft_request, ConfChangeContext, ForwardError, ForwardReply,
    ForwardRequest, MemberAttributes, MemberRecord, RaftBatch, RaftRequest,
};
use crate::proto::etcdserverpb as pb;

/// A snapshot of the applied state, for a follower that fell behind the leader's log.
pub struct StateSnapshot<T> {
    /// The raft index the state is at.
    pub index: u64,
    /// The membership at that index.
    pub conf_state: ConfState,
    pub data: T,
}

/// A change to the cluster's members that raft applies as a conf change.
#[derive(Clone, Debug, PartialEq)]
pub enum MemberChange {
    /// A new member, voter or learner as the record says.
    Add(MemberRecord),
    /// A learner becomes a voter.
    Promote(u64),
    Remove(u64),
}

impl MemberChange {
    pub fn id(&self) -> u64 {
        match self {
            MemberChange::Add(m) => m.id,
            MemberChange::Promote(id) | MemberChange::Remove(id) => *id,
        }
    }
}

/// The applied state the consensus core drives: MVCC, leases, members.
pub trait StateMachine {
    /// What the leader streams to a follower that needs a snapshot.
    type Snapshot;
    /// A snapshot a follower received in full, ready to install.
    type Received;

    /// Applies one committed write and returns the client's answer. A header revision left
    /// at 0 is filled with [`StateMachine::revision`] right after.
    fn apply(&mut self, index: u64, req: RaftRequest) -> Reply;
    /// Checks a client's write before it is proposed: Some(answer) refuses it at once
    /// (etcd's quota check: no space for what it adds).
    fn refuse(&mut self, _req: &RaftRequest) -> Option<Status> {
        None
    }
    /// The raised alarms, as Status lists them in `errors`.
    fn alarm_errors(&self) -> Vec<String> {
        Vec::new()
    }
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
    /// The cluster's members as applied, sorted by ID.
    fn members(&self) -> Vec<pb::Member>;
    /// One member as applied.
    fn member(&self, id: u64) -> Option<pb::Member>;
    /// Records the membership an applied conf change produced.
    fn set_conf_state(&mut self, conf_state: &ConfState);
    /// Whether a membership change is valid against the applied members (run at apply, so
    /// every member decides the same).
    fn check_member_change(&self, change: &MemberChange) -> Result<(), Status>;
    /// Applies a membership change raft accepted.
    fn apply_member_change(&mut self, change: &MemberChange);
    /// A consistent snapshot of the applied state (at or below the applied index).
    fn snapshot(&mut self) -> Result<StateSnapshot<Self::Snapshot>, String>;
    /// Replaces the whole applied state with a received snapshot. The raft log already
    /// records the snapshot durably; an error here leaves the member unable to go on.
    fn restore(&mut self, meta: &SnapshotMetadata, data: Self::Received) -> Result<(), String>;
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
    /// etcd's HealthInterval (5 s) in ticks: a membership change needs the peers it counts
    /// to have been connected at least this long.
    pub health_interval_ticks: u64,
    /// The first proposal batch id. It must differ between runs of the member (the driver
    /// takes the clock), so a new batch is never mistaken for an old one still in the log.
    /// Read-index contexts and forwarded-request ids count up from it too: the leader may
    /// still answer the previous run's requests, and those answers must match nothing.
    pub first_batch_id: u64,
    /// The first lease ID handed out for grants that leave the ID to the server; later ones
    /// count up from it, so every member applies the proposer's choice.
    pub first_lease_id: i64,
    /// This member's name and client URLs, published to the cluster through raft.
    pub name: String,
    pub client_urls: Vec<String>,
    pub version: String,
    /// --experimental-initial-corrupt-check, for a member that restarted with data: compare
    /// its HashKV with its peers' before it serves clients (see [`crate::corrupt`]).
    pub initial_corrupt_check: bool,
    /// --experimental-corrupt-check-time in ticks (0: off): how often the leader compares
    /// every member's HashKV and raises the CORRUPT alarm on a mismatch.
    pub corrupt_check_ticks: u64,
}

/// Records the driver must make durable, in order, then report with [`Node::on_persisted`].
#[derive(Debug, Default)]
pub struct Persist {
    pub number: u64,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<Snapshot>,
}

/// A request or answer for another member, beside raft's own messages.
#[derive(Clone, Debug, PartialEq)]
pub enum Forward {
    /// A follower asks the leader (the leader owns lease expiry).
    Request(ForwardRequest),
    /// The leader answers.
    Reply(ForwardReply),
}

/// What the driver must do after feeding the node.
pub struct Output<T> {
    pub replies: Vec<(ReplyTo, Reply)>,
    /// Watch responses, by network executor.
    pub watch: Vec<(u16, WatchDelivery)>,
    pub persist: Vec<Persist>,
    /// Raft messages to send to peers now.
    pub messages: Vec<Message>,
    /// Requests and answers for other members, by member ID.
    pub forwards: Vec<(u64, Forward)>,
    /// Snapshots to stream to followers: the raft MsgSnapshot (metadata filled, no data)
    /// and the state it describes. Report the outcome with [`Node::report_snapshot`].
    pub snapshots: Vec<(Message, T)>,
}

impl<T> Default for Output<T> {
    fn default() -> Self {
        Output {
            replies: Vec::new(),
            watch: Vec::new(),
            persist: Vec::new(),
            messages: Vec::new(),
            forwards: Vec::new(),
            snapshots: Vec::new(),
        }
    }
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

/// Who waits for a membership change: a client of this member, or a follower that
/// forwarded it (a promote: only the leader can tell whether a learner has caught up).
#[derive(Clone, Copy, Debug)]
enum Waiter {
    Local(ReplyTo),
    Forwarded { from: u64, id: u64 },
}

/// Where the initial corruption check stands.
#[derive(Debug)]
enum InitialCheck {
    /// Passed, or not asked for: the member may serve.
    Done,
    /// Asked for; begins at the next tick.
    Due,
    Asking(corrupt::Round),
}

/// A request only the leader can answer, forwarded by this follower.
struct ForwardedCall {
    to: ReplyTo,
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
    /// Proposals that failed (no leader, lost to a leader change, timed out): etcd's
    /// etcd_server_proposals_failed_total.
    proposals_failed: u64,
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
    /// Requests for the leader waiting until one is known, with the tick they came.
    for_leader: Vec<(Request, ReplyTo, u64)>,
    /// Requests forwarded to the leader, by forward id.
    forwarded: HashMap<u64, ForwardedCall>,
    next_forward_id: u64,
    /// The leader this member last knew, to notice a change.
    last_leader: u64,
    /// A received snapshot raft accepted: installed once the Ready with this number is
    /// durable.
    installing: Option<(u64, SnapshotMetadata)>,
    /// Snapshots received in full, by index, until raft takes or drops them.
    received: HashMap<u64, S::Received>,
    /// Whether this member's name and client URLs are in the applied members table.
    published: bool,
    /// The tick from which a lost publish may be proposed again.
    publish_retry_at: u64,
    /// MoveLeader calls waiting for the transfer: (caller, target, deadline).
    transfers: Vec<(ReplyTo, u64, u64)>,
    /// Set when this member must stop (see [`Node::fatal`]).
    fatal: Option<String>,
    /// The tick each peer's message connection came up, while it is up.
    connected_since: HashMap<u64, u64>,
    /// Membership changes this member proposed, by request id, with their deadline.
    conf_waiting: HashMap<u64, (Waiter, u64)>,
    next_conf_id: u64,
    /// The tick this member applied its own removal: it stops shortly after, once the
    /// others have likely learned that the removal is committed.
    removed_at: Option<u64>,
    initial_check: InitialCheck,
    /// The leader's periodic corruption check, while it waits for the peers' hashes.
    hash_round: Option<corrupt::Round>,
    /// The tick the next periodic corruption check begins.
    next_hash_check: u64,
    /// HashKV questions out to peers, by forward id: the peer asked. Only one check runs at a
    /// time; its end forgets them, so a late answer matches nothing.
    hash_calls: HashMap<u64, u64>,
    /// The last HashKV this member computed for a peer, by the revision asked: a peer asks
    /// again when an answer may have been lost, and the hash at a revision never changes,
    /// so the (costly) hash is not computed twice.
    hash_answered: Option<(i64, pb::HashKvResponse)>,
    out: Output<S::Snapshot>,
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
const NOT_LEADER: &str = "etcdserver: not leader";
const TIMED_OUT: &str = "etcdserver: request timed out";
const LEADER_CHANGED: &str = "etcdserver: leader changed";
const TRANSFER_TIMED_OUT: &str = "etcdserver: request timed out, leader transfer took too long";
const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
const UNHEALTHY: &str = "etcdserver: unhealthy cluster";
const NOT_ENOUGH_STARTED: &str =
    "etcdserver: re-configuration failed due to not enough started members";
/// etcd promotes a learner whose log is within 10% of the leader's.
const LEARNER_READY: f64 = 0.9;
/// Writes proposed together go into entries of at most this many encoded bytes (one request
/// may exceed it), so one entry never dwarfs raft's 1 MiB message limit.
const MAX_ENTRY_BYTES: usize = 1 << 20;

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
        let initial_check = if cfg.initial_corrupt_check {
            InitialCheck::Due
        } else {
            InitialCheck::Done
        };
        let next_hash_check = cfg.corrupt_check_ticks;
        Ok(Node {
            raw,
            sm,
            cfg,
            ticks: 0,
            next_batch_id: first_batch_id,
            next_lease_id,
            term_told: 0,
            next_read_ctx: first_batch_id,
            proposing: Vec::new(),
            proposing_since: 0,
            pending: HashMap::new(),
            proposals_failed: 0,
            proposed_at: VecDeque::new(),
            reads: Vec::new(),
            reads_since: 0,
            read_rounds: HashMap::new(),
            reads_ready: VecDeque::new(),
            held_messages: VecDeque::new(),
            unpersisted: VecDeque::new(),
            sm_knows_leader: false,
            deferred: HashMap::new(),
            for_leader: Vec::new(),
            forwarded: HashMap::new(),
            next_forward_id: first_batch_id,
            last_leader: 0,
            installing: None,
            received: HashMap::new(),
            published: false,
            publish_retry_at: 0,
            transfers: Vec::new(),
            fatal: None,
            connected_since: HashMap::new(),
            conf_waiting: HashMap::new(),
            next_conf_id: first_batch_id,
            removed_at: None,
            initial_check,
            hash_round: None,
            next_hash_check,
            hash_calls: HashMap::new(),
            hash_answered: None,
            out: Output::default(),
        })
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cfg.cluster_id
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

    /// raft-rs draws every election timeout from `rand::thread_rng()`, which no seed
    /// reaches; the seeded cluster simulation sets them from its own generator through this.
    #[cfg(test)]
    pub(crate) fn raft_mut(&mut self) -> &mut raft::Raft<RaftLog> {
        &mut self.raw.raft
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Whether this member has applied an entry some leader made: beyond a new cluster's
    /// bootstrap entries (term 1; leaders are elected from term 2).
    pub fn applied_from_a_leader(&self) -> bool {
        let applied = self.sm.applied_index();
        applied > 0 && self.raw.store().term(applied).map_or(true, |t| t > 1)
    }

    /// Whether the applied members table holds this member's name and client URLs (etcd's
    /// members serve clients only from then on).
    pub fn is_published(&self) -> bool {
        self.published
    }

    /// Whether this member is a learner (receives the log, does not vote).
    pub fn is_learner(&self) -> bool {
        self.raw
            .store()
            .conf_state()
            .learners
            .contains(&self.cfg.id)
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
                if let Some(status) = self.sm.refuse(&w) {
                    self.out.replies.push((to, Err(status)));
                    return;
                }
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
                let reply = self.read_now(r, to);
                if let Some(reply) = reply {
                    self.out.replies.push((to, reply));
                }
            }
            Kind::LeaderOnly(r) => self.for_leader.push((r, to, self.ticks)),
            Kind::Watch { stream, command } => self.sm.watch(to.executor, stream, command),
            Kind::ByDriver => self.out.replies.push((
                to,
                Err(Status::internal("this request is run by the driver")),
            )),
            Kind::Membership(r) => self.membership(r, Waiter::Local(to)),
        }
    }

    /// Starts a membership change with etcd's checks (--strict-reconfig-check), or answers
    /// why not.
    fn membership(&mut self, req: Request, waiter: Waiter) {
        let result = match req {
            Request::MemberAdd(add) => self.member_add(add, waiter),
            Request::MemberRemove(r) => self.member_remove(r.id, waiter),
            Request::MemberPromote(r) => self.member_promote(r.id, waiter),
            Request::MemberUpdate(r) => match waiter {
                Waiter::Local(to) => {
                    let update = crate::proto::corekvpb::MemberUpdate {
                        id: r.id,
                        peer_urls: r.peer_ur_ls,
                    };
                    let req = RaftRequest {
                        auth: None,
                        request: Some(raft_request::Request::MemberUpdate(update)),
                    };
                    self.propose_later(req, Some(to));
                    Ok(())
                }
                Waiter::Forwarded { .. } => Err(Status::internal("updates are not forwarded")),
            },
            other => Err(Status::internal(format!(
                "{} is not a membership change",
                other.method()
            ))),
        };
        if let Err(status) = result {
            self.answer(waiter, Err(status));
        }
    }

    /// The message connection to peer `id` came up or went down.
    pub fn peer_connected(&mut self, id: u64, up: bool) {
        if up {
            self.connected_since.entry(id).or_insert(self.ticks);
            // A question queued while the connection was down was dropped with it: ask again
            // a peer that has not answered the corruption check in progress.
            let waiting = match &self.initial_check {
                InitialCheck::Asking(r) => Some(r),
                _ => self.hash_round.as_ref(),
            }
            .filter(|r| r.answers.get(&id) == Some(&PeerHash::NoAnswer))
            .map(|r| r.local.revision);
            if let Some(revision) = waiting {
                self.ask_hash(id, revision);
            }
        } else {
            self.connected_since.remove(&id);
        }
    }

    /// Whether member `id` is this one or has been connected for etcd's HealthInterval.
    fn connected_long_enough(&self, id: u64) -> bool {
        id == self.cfg.id
            || self
                .connected_since
                .get(&id)
                .is_some_and(|since| self.ticks >= since + self.cfg.health_interval_ticks)
    }

    fn voter_ids(&self) -> Vec<u64> {
        self.raw.store().conf_state().voters.clone()
    }

    /// Voting members that have started (published their client URLs), and all voters.
    fn started_voters(&self, except: Option<u64>) -> (usize, usize) {
        let voters: Vec<pb::Member> = self
            .sm
            .members()
            .into_iter()
            .filter(|m| !m.is_learner && Some(m.id) != except)
            .collect();
        let started = voters.iter().filter(|m| !m.client_ur_ls.is_empty()).count();
        (started, voters.len())
    }

    fn member_add(&mut self, add: super::message::MemberAdd, waiter: Waiter) -> Result<(), Status> {
        let urls = add.request.peer_ur_ls;
        let learner = add.request.is_learner;
        if !learner {
            // etcd's IsReadyToAddVotingMember: quorum of started members after the add, except
            // that a 1-member cluster may always grow to 2 (to restore a cluster's data).
            let (started, voters) = self.started_voters(None);
            let members = voters + 1;
            if !(started == 1 && members == 2) && started < members / 2 + 1 {
                return Err(Status::new(Code::Unknown, NOT_ENOUGH_STARTED));
            }
        }
        // etcd's isConnectedFullySince: this member has been connected to every voter for a
        // while, so the new quorum is not built on a link that just came up or is down.
        if !self
            .voter_ids()
            .into_iter()
            .all(|v| self.connected_long_enough(v))
        {
            return Err(Status::unavailable(UNHEALTHY));
        }
        let id = crate::config::member_id(&urls, "", Some(add.unix_time));
        let rec = MemberRecord {
            id,
            name: String::new(),
            peer_urls: urls,
            client_urls: vec![],
            is_learner: learner,
        };
        let change = MemberChange::Add(rec);
        self.sm.check_member_change(&change)?;
        self.propose_member_change(change, waiter)
    }

    fn member_remove(&mut self, id: u64, waiter: Waiter) -> Result<(), Status> {
        let Some(m) = self.sm.member(id) else {
            return Err(Status::new(Code::NotFound, MEMBER_NOT_FOUND));
        };
        if !m.is_learner {
            // etcd's IsReadyToRemoveVotingMember: quorum of started members after it goes.
            let (started, voters) = self.started_voters(Some(id));
            if started < voters / 2 + 1 {
                return Err(Status::new(Code::Unknown, NOT_ENOUGH_STARTED));
            }
            // A member that is down is not part of the active quorum: removing it is safe.
            // Otherwise those connected for a while, less it, must still be a quorum.
            if id == self.cfg.id || self.connected_since.contains_key(&id) {
                let voters = self.voter_ids();
                let active = voters
                    .iter()
                    .filter(|v| self.connected_long_enough(**v))
                    .count();
                if active < 2 + (voters.len() - 1) / 2 {
                    return Err(Status::unavailable(UNHEALTHY));
                }
            }
        }
        self.propose_member_change(MemberChange::Remove(id), waiter)
    }

    fn member_promote(&mut self, id: u64, waiter: Waiter) -> Result<(), Status> {
        let change = MemberChange::Promote(id);
        self.sm.check_member_change(&change)?;
        if !self.is_leader() {
            if let Waiter::Local(to) = waiter {
                if self.leader_id() == 0 {
                    return Err(Status::unavailable(NO_LEADER));
                }
                // Only the leader knows how far the learner's log is.
                let fid = self.next_forward_id;
                self.next_forward_id += 1;
                self.forwarded.insert(
                    fid,
                    ForwardedCall {
                        to,
                        deadline: self.ticks + self.cfg.request_timeout_ticks,
                    },
                );
                let fwd = ForwardRequest {
                    id: fid,
                    request: Some(forward_request::Request::MemberPromote(
                        pb::MemberPromoteRequest { id },
                    )),
                };
                self.out
                    .forwards
                    .push((self.leader_id(), Forward::Request(fwd)));
                return Ok(());
            }
            return Err(Status::unavailable(NOT_LEADER));
        }
        let leader_match = self.raw.raft.raft_log.last_index();
        let learner_match = self.raw.raft.prs().get(id).map_or(0, |pr| pr.matched);
        if (learner_match as f64) < (leader_match as f64) * LEARNER_READY {
            return Err(Status::new(
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ));
        }
        // etcd's IsReadyToPromoteMember: the learner counts as started, and must not leave
        // the started voters short of a quorum.
        let (started, voters) = self.started_voters(None);
        let members = voters + 1;
        if started + 1 < members / 2 + 1 {
            return Err(Status::new(Code::Unknown, NOT_ENOUGH_STARTED));
        }
        self.propose_member_change(change, waiter)
    }

    fn propose_member_change(
        &mut self,
        change: MemberChange,
        waiter: Waiter,
    ) -> Result<(), Status> {
        if self.leader_id() == 0 {
            return Err(Status::unavailable(NO_LEADER));
        }
        let request_id = self.next_conf_id;
        self.next_conf_id += 1;
        let (change_type, member) = match &change {
            MemberChange::Add(m) if m.is_learner => {
                (ConfChangeType::AddLearnerNode, Some(m.clone()))
            }
            MemberChange::Add(m) => (ConfChangeType::AddNode, Some(m.clone())),
            MemberChange::Promote(_) => (ConfChangeType::AddNode, None),
            MemberChange::Remove(_) => (ConfChangeType::RemoveNode, None),
        };
        let ctx = ConfChangeContext {
            proposer: self.cfg.id,
            request_id,
            member,
        };
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = change.id();
        let mut cc = ConfChangeV2::default();
        cc.mut_changes().push(single);
        self.raw
            .propose_conf_change(ctx.encode_to_vec(), cc)
            .map_err(|_| Status::unavailable(NO_LEADER))?;
        let deadline = self.ticks + self.cfg.request_timeout_ticks;
        self.conf_waiting.insert(request_id, (waiter, deadline));
        Ok(())
    }

    /// Sends a membership answer to whoever waits for it.
    fn answer(&mut self, waiter: Waiter, reply: Reply) {
        match waiter {
            Waiter::Local(to) => {
                let reply = self.fill_header(reply, self.term());
                self.out.replies.push((to, reply));
            }
            Waiter::Forwarded { from, id } => {
                let reply = match reply {
                    Ok(Response::MemberPromote(r)) => forward_reply::Reply::MemberPromote(r),
                    Ok(_) => return,
                    Err(s) => forward_reply::Reply::Error(ForwardError {
                        code: s.code as u32,
                        message: s.message,
                    }),
                };
                let reply = ForwardReply {
                    id,
                    reply: Some(reply),
                };
                self.out.forwards.push((from, Forward::Reply(reply)));
            }
        }
    }

    /// Serves or forwards the requests only the leader can answer, once a leader is known.
    fn flush_for_leader(&mut self) {
        if self.for_leader.is_empty() || self.leader_id() == 0 {
            return;
        }
        let term = self.term();
        for (req, to, _) in std::mem::take(&mut self.for_leader) {
            if self.is_leader() {
                let reply = self.sm.read(req);
                let reply = self.fill_header(reply, term);
                self.out.replies.push((to, reply));
                continue;
            }
            let request = match req {
                Request::LeaseKeepAlive(r) => forward_request::Request::KeepAlive(r),
                Request::LeaseTimeToLive(r) => forward_request::Request::TimeToLive(r),
                other => {
                    let status = Status::internal(format!("{} is not forwarded", other.method()));
                    self.out.replies.push((to, Err(status)));
                    continue;
                }
            };
            let id = self.next_forward_id;
            self.next_forward_id += 1;
            self.forwarded.insert(
                id,
                ForwardedCall {
                    to,
                    deadline: self.ticks + self.cfg.request_timeout_ticks,
                },
            );
            let fwd = ForwardRequest {
                id,
                request: Some(request),
            };
            self.out
                .forwards
                .push((self.leader_id(), Forward::Request(fwd)));
        }
    }

    /// Another member asks: a follower forwards what only the leader answers (lease
    /// keep-alive and time-to-live, promote); any member answers HashKV.
    pub fn on_forward_request(&mut self, from: u64, req: ForwardRequest) {
        if let Some(forward_request::Request::MemberPromote(p)) = req.request {
            let waiter = Waiter::Forwarded { from, id: req.id };
            if !self.is_leader() {
                self.answer(waiter, Err(Status::unavailable(NOT_LEADER)));
            } else {
                self.membership(Request::MemberPromote(p), waiter);
            }
            return;
        }
        let request = match req.request {
            Some(forward_request::Request::KeepAlive(r)) => Request::LeaseKeepAlive(r),
            Some(forward_request::Request::TimeToLive(r)) => Request::LeaseTimeToLive(r),
            Some(forward_request::Request::HashKv(r)) => Request::HashKv(r),
            Some(forward_request::Request::MemberPromote(_)) | None => return,
        };
        let reply = if !self.is_leader() && !matches!(request, Request::HashKv(_)) {
            forward_reply::Reply::Error(ForwardError {
                code: Code::Unavailable as u32,
                message: NOT_LEADER.into(),
            })
        } else {
            let term = self.term();
            let asked = match &request {
                Request::HashKv(h) => h.revision,
                _ => 0,
            };
            let reply = match &self.hash_answered {
                Some((rev, r)) if asked > 0 && asked == *rev => Ok(Response::HashKv(*r)),
                _ => self.sm.read(request),
            };
            if let (Ok(Response::HashKv(r)), true) = (&reply, asked > 0) {
                self.hash_answered = Some((asked, *r));
            }
            match self.fill_header(reply, term) {
                Ok(Response::LeaseKeepAlive(r)) => forward_reply::Reply::KeepAlive(r),
                Ok(Response::LeaseTimeToLive(r)) => forward_reply::Reply::TimeToLive(r),
                Ok(Response::HashKv(r)) => forward_reply::Reply::HashKv(r),
                Ok(_) => return,
                Err(s) => forward_reply::Reply::Error(ForwardError {
                    code: s.code as u32,
                    message: s.message,
                }),
            }
        };
        let reply = ForwardReply {
            id: req.id,
            reply: Some(reply),
        };
        self.out.forwards.push((from, Forward::Reply(reply)));
    }

    /// The leader answered a request this member forwarded.
    pub fn on_forward_reply(&mut self, reply: ForwardReply) {
        if let Some(peer) = self.hash_calls.remove(&reply.id) {
            let answer = match reply.reply {
                Some(forward_reply::Reply::HashKv(r)) => Ok(r),
                Some(forward_reply::Reply::Error(e)) => {
                    Err(Status::new(Code::from_u32(e.code), e.message))
                }
                _ => Err(Status::internal("another answer to HashKV")),
            };
            let round = match &mut self.initial_check {
                InitialCheck::Asking(r) => Some(r),
                _ => self.hash_round.as_mut(),
            };
            if let Some(round) = round {
                round.answer(peer, PeerHash::from_reply(answer));
            }
            return;
        }
        let Some(call) = self.forwarded.remove(&reply.id) else {
            return; // timed out meanwhile
        };
        let answer = match reply.reply {
            Some(forward_reply::Reply::KeepAlive(r)) => Ok(Response::LeaseKeepAlive(r)),
            Some(forward_reply::Reply::TimeToLive(r)) => Ok(Response::LeaseTimeToLive(r)),
            Some(forward_reply::Reply::MemberPromote(r)) => Ok(Response::MemberPromote(r)),
            Some(forward_reply::Reply::HashKv(r)) => Ok(Response::HashKv(r)),
            Some(forward_reply::Reply::Error(e)) => {
                Err(Status::new(Code::from_u32(e.code), e.message))
            }
            None => Err(Status::internal("an empty answer from the leader")),
        };
        // As etcd does, the member the client asked fills the header with its own view.
        let answer = answer.map(|mut r| {
            if let Some(h) = r.header_mut() {
                *h = pb::ResponseHeader::default();
            }
            r
        });
        let answer = self.fill_header(answer, self.term());
        self.out.replies.push((call.to, answer));
    }

    fn propose_later(&mut self, req: RaftRequest, to: Option<ReplyTo>) {
        if self.proposing.is_empty() {
            self.proposing_since = self.ticks;
        }
        self.proposing.push((req, to));
    }

    pub fn tick(&mut self) {
        self.ticks += 1;
        // While the Ready that took a leader's snapshot is not durable, raft's applied index
        // is still below the log's new first index: a campaign would read the compacted
        // entries in between and raft-rs would panic. The election timer waits that long.
        // Until the initial corruption check passes, this member never campaigns: a member
        // whose data differ from its peers' must not lead them.
        if self.installing.is_none() && matches!(self.initial_check, InitialCheck::Done) {
            self.raw.tick();
            self.campaign_if_sole_voter();
        }
        self.tick_state_machine();
        self.maybe_publish();
        self.expire_requests();
        self.initial_corrupt_check();
        self.periodic_corrupt_check();
    }

    /// This member's HashKV at its current revision.
    fn local_hash(&mut self) -> Result<KvHash, String> {
        let req = Request::HashKv(pb::HashKvRequest { revision: 0 });
        match self.sm.read(req) {
            Ok(Response::HashKv(r)) => Ok(KvHash::from_response(&r)),
            Ok(_) => Err("HashKV answered with another response".into()),
            Err(s) => Err(s.message),
        }
    }

    /// Asks every other member for its HashKV at `revision`; returns who was asked.
    fn ask_hashes(&mut self, revision: i64) -> Vec<u64> {
        let peers: Vec<u64> = self
            .sm
            .members()
            .iter()
            .map(|m| m.id)
            .filter(|&id| id != self.cfg.id)
            .collect();
        self.hash_calls.clear();
        for &peer in &peers {
            self.ask_hash(peer, revision);
        }
        peers
    }

    /// Asks again, once per election timeout, the peers of `round` that have not answered:
    /// a question or answer is dropped with a connection that was down.
    fn reask_silent(&mut self, round: &corrupt::Round) {
        let every = self.cfg.election_tick.max(1) as u64;
        if !(round.deadline - self.ticks).is_multiple_of(every) {
            return;
        }
        for (&peer, answer) in &round.answers {
            if *answer == PeerHash::NoAnswer {
                self.ask_hash(peer, round.local.revision);
            }
        }
    }

    fn ask_hash(&mut self, peer: u64, revision: i64) {
        let id = self.next_forward_id;
        self.next_forward_id += 1;
        self.hash_calls.insert(id, peer);
        let request = forward_request::Request::HashKv(pb::HashKvRequest { revision });
        let fwd = ForwardRequest {
            id,
            request: Some(request),
        };
        self.out.forwards.push((peer, Forward::Request(fwd)));
    }

    /// etcd's CheckInitialHashKV: at the first tick, hash and ask the peers; once each
    /// answered or the request timeout passed, stop if a peer disagrees.
    fn initial_corrupt_check(&mut self) {
        match &self.initial_check {
            InitialCheck::Done => {}
            InitialCheck::Due => {
                let local = match self.local_hash() {
                    Ok(h) => h,
                    Err(e) => {
                        self.fatal = Some(format!("{:x} failed to fetch hash ({e})", self.cfg.id));
                        return;
                    }
                };
                tracing::info!(
                    "starting initial corruption check: revision {}, compact revision {}, hash {}",
                    local.revision,
                    local.compact_revision,
                    local.hash
                );
                let peers = self.ask_hashes(local.revision);
                let deadline = self.ticks + self.cfg.request_timeout_ticks;
                self.initial_check =
                    InitialCheck::Asking(corrupt::Round::new(local, &peers, deadline));
            }
            InitialCheck::Asking(round) if round.is_done(self.ticks) => {
                let verdict = corrupt::initial_verdict(round);
                self.hash_calls.clear();
                self.initial_check = InitialCheck::Done;
                for s in &verdict.skipped {
                    tracing::warn!("initial corruption check: {s}");
                }
                for m in &verdict.mismatches {
                    tracing::error!("initial corruption check: found different hash values: {m}");
                }
                if !verdict.mismatches.is_empty() {
                    self.fatal = Some(format!(
                        "{:x} found data inconsistency with peers",
                        self.cfg.id
                    ));
                    return;
                }
                tracing::info!(
                    "initial corruption checking passed; no corruption ({} of {} peers compared)",
                    verdict.checked,
                    verdict.checked + verdict.skipped.len()
                );
            }
            InitialCheck::Asking(round) => {
                let round = round.clone();
                self.reask_silent(&round);
            }
        }
    }

    /// etcd's monitorKVHash and checkHashKV: every --experimental-corrupt-check-time the
    /// leader hashes and asks every member for its hash at that revision; once all answered
    /// (or the request timeout passed) and its applied state holds everything committed
    /// (etcd waits on a linearizable read), it hashes again and raises CORRUPT on a mismatch.
    fn periodic_corrupt_check(&mut self) {
        let every = self.cfg.corrupt_check_ticks;
        if every == 0 || !matches!(self.initial_check, InitialCheck::Done) {
            return;
        }
        if !self.is_leader() {
            if self.hash_round.take().is_some() {
                self.hash_calls.clear();
            }
            return;
        }
        let Some(round) = &self.hash_round else {
            if self.ticks < self.next_hash_check {
                return;
            }
            self.next_hash_check = self.ticks + every;
            match self.local_hash() {
                Ok(local) => {
                    let peers = self.ask_hashes(local.revision);
                    let deadline = self.ticks + self.cfg.request_timeout_ticks;
                    self.hash_round = Some(corrupt::Round::new(local, &peers, deadline));
                }
                Err(e) => tracing::warn!("failed to check hash KV: {e}"),
            }
            return;
        };
        if !round.is_done(self.ticks) {
            let round = round.clone();
            self.reask_silent(&round);
            return;
        }
        // A follower applies only what the leader committed; once this leader committed in
        // its term and applied all of it, it has applied everything any follower had when
        // it answered.
        let raft = &self.raw.raft;
        let caught_up =
            raft.commit_to_current_term() && self.sm.applied_index() >= raft.raft_log.committed;
        if !caught_up {
            if self.ticks >= round.deadline + self.cfg.request_timeout_ticks {
                tracing::warn!("failed to check hash KV: the leader did not catch up in time");
                self.hash_round = None;
                self.hash_calls.clear();
            }
            return;
        }
        let round = self.hash_round.take().expect("checked above");
        self.hash_calls.clear();
        let second = match self.local_hash() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("failed to check hash KV: {e}");
                return;
            }
        };
        let verdict = corrupt::periodic_verdict(&round, second);
        for s in &verdict.skipped {
            tracing::warn!("corruption check: {s}");
        }
        if verdict.mismatches.is_empty() {
            tracing::debug!(
                "finished peer corruption check ({} peers checked)",
                verdict.checked
            );
            return;
        }
        for m in &verdict.mismatches {
            tracing::error!("corruption check found a hash mismatch: {m}");
        }
        tracing::error!("raising the CORRUPT alarm");
        self.propose_later(
            RaftRequest {
                auth: None,
                request: Some(raft_request::Request::Alarm(corrupt::corrupt_alarm())),
            },
            None,
        );
    }

    /// A member that is the only voter needs nobody's vote: it campaigns as soon as its
    /// configuration is applied instead of sitting out a whole election timeout (etcd gets
    /// the same from advancing a lone member's ticks at start), so a new single-member
    /// cluster serves within a tick.
    fn campaign_if_sole_voter(&mut self) {
        let raft = &self.raw.raft;
        if raft.state == raft::StateRole::Leader
            || !raft.promotable()
            || !raft.prs().is_singleton()
            || raft.has_pending_conf()
            || raft.raft_log.committed > raft.raft_log.applied
        {
            return;
        }
        if let Err(e) = self.raw.campaign() {
            tracing::warn!("campaigning as the only voter failed: {e}");
        }
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

    /// Publishes this member's name and client URLs through raft, as etcd's members do at
    /// start, until the applied members table has them. Only once this member has applied
    /// an entry from a leader: a member that lost its data can then be told apart (it has
    /// applied nothing beyond the bootstrap).
    fn maybe_publish(&mut self) {
        if self.published
            || self.leader_id() == 0
            || !self.applied_from_a_leader()
            || !matches!(self.initial_check, InitialCheck::Done)
        {
            return;
        }
        let mine = self.sm.member(self.cfg.id);
        if mine
            .as_ref()
            .is_some_and(|m| m.name == self.cfg.name && m.client_ur_ls == self.cfg.client_urls)
        {
            self.published = true;
            return;
        }
        if mine.is_none() || self.ticks < self.publish_retry_at {
            return;
        }
        self.publish_retry_at = self.ticks + self.cfg.request_timeout_ticks;
        let attrs = MemberAttributes {
            id: self.cfg.id,
            name: self.cfg.name.clone(),
            client_urls: self.cfg.client_urls.clone(),
        };
        self.propose_later(
            RaftRequest {
                auth: None,
                request: Some(raft_request::Request::MemberAttributes(attrs)),
            },
            None,
        );
    }

    /// A raft message from a peer.
    pub fn step(&mut self, msg: Message) {
        if self.fatal.is_some() {
            return;
        }
        // The leader commits on a follower only what that follower acknowledged as durable.
        // A commit beyond this log's end means this member lost what it had acknowledged
        // (a wiped or replaced data dir): raft-rs would panic; stop with the reason instead.
        let last = self.raw.raft.raft_log.last_index();
        if msg.get_msg_type() == MessageType::MsgHeartbeat && msg.commit > last {
            self.fatal = Some(format!(
                "member {:x}, the leader, says this member {:x} acknowledged raft entries up \
                 to {}, but its log ends at {last}: this member lost its data (a wiped or \
                 replaced data dir). Remove it (member remove {:x}) and add it again (member \
                 add) before starting it with --initial-cluster-state existing",
                msg.from, self.cfg.id, msg.commit, self.cfg.id
            ));
            return;
        }
        // A leader transfer would campaign at once: not while a snapshot is being installed
        // (see `tick`); the transfer times out instead.
        if self.installing.is_some() && msg.get_msg_type() == MessageType::MsgTimeoutNow {
            return;
        }
        // A message for an unknown peer or from an older term is raft's to ignore.
        let _ = self.raw.step(msg);
    }

    /// Why this member must stop, if it must: it can no longer keep raft's promises.
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// A MsgSnapshot whose data arrived in full: raft decides whether to take it.
    pub fn step_snapshot(&mut self, msg: Message, data: S::Received) {
        let index = msg.get_snapshot().get_metadata().index;
        self.received.insert(index, data);
        self.step(msg);
    }

    /// A peer could not be reached: raft stops streaming appends to it until it answers.
    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    /// How streaming a snapshot to `id` ended.
    pub fn report_snapshot(&mut self, id: u64, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(id, status);
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
        let installed = match &self.installing {
            Some((n, _)) if *n <= upto => self.installing.take().map(|(_, meta)| meta),
            _ => None,
        };
        if let Some(meta) = &installed {
            self.restore_state_machine(meta);
        }
        self.raw.on_persist_ready(upto);
        if let Some(meta) = installed {
            self.raw.advance_apply_to(meta.index);
        }
        while let Some((n, _)) = self.held_messages.front() {
            if *n > upto {
                break;
            }
            let (_, msgs) = self.held_messages.pop_front().expect("front exists");
            self.emit_messages(msgs);
        }
    }

    /// The snapshot raft took is durable in the log: the state machine becomes it. (etcd's
    /// order: the WAL records the snapshot first, then the backend is replaced; a crash in
    /// between is finished at start from the received file.)
    fn restore_state_machine(&mut self, meta: &SnapshotMetadata) {
        let data = self.received.remove(&meta.index).unwrap_or_else(|| {
            panic!(
                "raft installed the snapshot at {} but its data was not received",
                meta.index
            )
        });
        // Older snapshots raft did not take are dropped with this one's arrival.
        self.received.retain(|index, _| *index > meta.index);
        if let Err(e) = self.sm.restore(meta, data) {
            panic!("installing the snapshot at raft index {}: {e}", meta.index);
        }
        assert_eq!(
            self.sm.applied_index(),
            meta.index,
            "the state machine must be at the snapshot's index after restoring it"
        );
        // Requests this member proposed before are lost or applied inside the snapshot:
        // either way no answer will come from applying them.
        let lost: Vec<u64> = self.proposed_at.drain(..).map(|(_, id)| id).collect();
        for id in lost {
            if let Some(p) = self.pending.remove(&id) {
                self.proposals_failed += p.replies.len() as u64;
                self.fail(p.replies, Status::unavailable(LEADER_CHANGED));
            }
        }
    }

    /// Proposes what was collected, handles raft's Ready, applies committed entries.
    pub fn process(&mut self) {
        self.flush_proposals();
        self.flush_reads();
        self.flush_for_leader();
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
        if self.leader_id() != self.last_leader {
            self.leader_changed();
        }
        self.serve_ready_reads();
        if self.term() != self.term_told {
            self.term_told = self.term();
            self.sm.set_raft_term(self.term_told);
        }
        self.out.watch.extend(self.sm.take_watch_deliveries());
    }

    /// Read-index requests sent to the old leader will not be answered (etcd fails them
    /// with "leader changed"); leadership transfers that reached their target are done.
    fn leader_changed(&mut self) {
        self.last_leader = self.leader_id();
        let rounds: Vec<ReadRound> = self.read_rounds.drain().map(|(_, r)| r).collect();
        for round in rounds {
            let to = round.reads.into_iter().map(|(_, to)| Some(to)).collect();
            self.fail(to, Status::unavailable(LEADER_CHANGED));
        }
        let leader = self.last_leader;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.transfers)
            .into_iter()
            .partition(|(_, target, _)| *target == leader);
        self.transfers = waiting;
        let term = self.term();
        for (to, _, _) in done {
            let reply = Ok(Response::MoveLeader(pb::MoveLeaderResponse {
                header: None,
            }));
            let reply = self.fill_header(reply, term);
            self.out.replies.push((to, reply));
        }
        // A member that leads (again) may have a new term to publish in.
        self.publish_retry_at = self.ticks;
        self.flush_for_leader();
    }

    pub fn take_output(&mut self) -> Output<S::Snapshot> {
        std::mem::take(&mut self.out)
    }

    fn flush_proposals(&mut self) {
        if self.proposing.is_empty() || self.leader_id() == 0 {
            return;
        }
        let mut all = std::mem::take(&mut self.proposing).into_iter().peekable();
        while all.peek().is_some() {
            // One entry's worth: at least one request, at most MAX_ENTRY_BYTES after that.
            let mut requests = Vec::new();
            let mut replies = Vec::new();
            let mut bytes = 0;
            while let Some((req, _)) = all.peek() {
                let len = req.encoded_len();
                if !requests.is_empty() && bytes + len > MAX_ENTRY_BYTES {
                    break;
                }
                bytes += len;
                let (req, to) = all.next().expect("peeked");
                requests.push(req);
                replies.push(to);
            }
            self.propose_batch(requests, replies);
        }
    }

    fn propose_batch(&mut self, requests: Vec<RaftRequest>, replies: Vec<Option<ReplyTo>>) {
        let batch_id = self.next_batch_id;
        self.next_batch_id += 1;
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
            Err(_) => {
                self.proposals_failed += replies.len() as u64;
                self.fail(replies, Status::unavailable(NO_LEADER))
            }
        }
    }

    /// Proposals that failed so far.
    pub fn proposals_failed(&self) -> u64 {
        self.proposals_failed
    }

    /// Writes proposed or waiting to be, not yet applied (etcd's proposals_pending).
    pub fn proposals_pending(&self) -> usize {
        self.proposing.len()
            + self
                .pending
                .values()
                .map(|p| p.replies.len())
                .sum::<usize>()
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
        // The leader keys pending read-index requests by context, across all members: ours
        // must not collide with another member's counter.
        let mut request_ctx = self.cfg.id.to_be_bytes().to_vec();
        request_ctx.extend_from_slice(&ctx.to_be_bytes());
        self.raw.read_index(request_ctx);
    }

    fn handle_ready(&mut self) {
        let mut rd = self.raw.ready();
        let msgs = rd.take_messages();
        self.emit_messages(msgs);

        let snapshot = rd.snapshot().clone();
        if !snapshot.is_empty() {
            self.install_snapshot(rd.number(), &snapshot);
        }

        for rs in rd.take_read_states() {
            if rs.request_ctx.len() == 16 && rs.request_ctx[..8] == self.cfg.id.to_be_bytes() {
                let ctx = u64::from_be_bytes(rs.request_ctx[8..].try_into().expect("8 bytes"));
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
            self.emit_messages(persisted_msgs);
        }
        self.raw.advance_append_async(rd);
        if !waits {
            self.raw.on_persist_ready(number);
        }
    }

    /// Raft took a snapshot from the leader: the log restarts after it now, the state machine
    /// once the Ready that records it is durable.
    fn install_snapshot(&mut self, number: u64, snapshot: &Snapshot) {
        let meta = snapshot.get_metadata().clone();
        self.raw.mut_store().apply_snapshot(meta.clone());
        self.installing = Some((number, meta));
    }

    /// Queues raft's messages for the driver; a snapshot for a follower gets the state it
    /// describes attached first.
    fn emit_messages(&mut self, msgs: Vec<Message>) {
        for msg in msgs {
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                self.prepare_snapshot(msg);
            } else {
                self.out.messages.push(msg);
            }
        }
    }

    /// raft asked for a snapshot at its compaction point; the state machine's latest durable
    /// state is at or past it (the log is only compacted up to what the backend holds), so
    /// the follower gets that state, with the metadata rewritten to match. Its appends
    /// continue from there.
    fn prepare_snapshot(&mut self, mut msg: Message) {
        let to = msg.to;
        let snap = match self.sm.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot snapshot the state for member {to:x}: {e}");
                self.raw.report_snapshot(to, SnapshotStatus::Failure);
                return;
            }
        };
        let log_first = self.raw.store().first_index().unwrap_or(1);
        let term = match self.raw.store().term(snap.index) {
            Ok(t) if snap.index + 1 >= log_first => t,
            _ => {
                tracing::warn!(
                    "the state snapshot at {} is outside the raft log (first index {log_first})",
                    snap.index
                );
                self.raw.report_snapshot(to, SnapshotStatus::Failure);
                return;
            }
        };
        let s = msg.mut_snapshot();
        s.data = Default::default();
        let meta = s.mut_metadata();
        meta.index = snap.index;
        meta.term = term;
        meta.set_conf_state(snap.conf_state);
        self.out.snapshots.push((msg, snap.data));
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
                    // corekv proposes only ConfChangeV2; a v1 entry could come from nowhere
                    // but a corrupt log.
                    let mut cc = ConfChange::default();
                    if protobuf::Message::merge_from_bytes(&mut cc, &entry.data).is_ok() {
                        if let Ok(cs) = self.raw.apply_conf_change(&cc) {
                            self.sm.set_conf_state(&cs);
                            self.raw.mut_store().set_conf_state(cs);
                        }
                    }
                }
                EntryType::EntryConfChangeV2 => self.apply_conf_change(&entry),
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

    /// Applies a committed membership change: checked against the applied members (every
    /// member decides alike), then raft's and the members table's, and answered.
    fn apply_conf_change(&mut self, entry: &Entry) {
        let mut cc = ConfChangeV2::default();
        if protobuf::Message::merge_from_bytes(&mut cc, &entry.data).is_err() {
            panic!(
                "the conf change at raft index {} does not decode",
                entry.index
            );
        }
        let ctx = ConfChangeContext::decode(entry.context.as_ref()).unwrap_or_default();
        let Some(single) = cc.get_changes().first().cloned() else {
            // raft-rs's own empty change (leaving a joint configuration).
            if let Ok(cs) = self.raw.apply_conf_change(&cc) {
                self.sm.set_conf_state(&cs);
                self.raw.mut_store().set_conf_state(cs);
            }
            return;
        };
        let id = single.node_id;
        let existing = self.sm.member(id);
        let change = match single.get_change_type() {
            ConfChangeType::AddNode if existing.as_ref().is_some_and(|m| m.is_learner) => {
                MemberChange::Promote(id)
            }
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let mut m = ctx.member.clone().unwrap_or_default();
                m.id = id;
                m.is_learner = single.get_change_type() == ConfChangeType::AddLearnerNode;
                MemberChange::Add(m)
            }
            ConfChangeType::RemoveNode => MemberChange::Remove(id),
        };
        // The bootstrap's changes (no proposer) describe members the data dir already has.
        let checked = if ctx.proposer == 0 {
            Ok(())
        } else {
            self.sm.check_member_change(&change)
        };
        if checked.is_ok() {
            match self.raw.apply_conf_change(&cc) {
                Ok(cs) => {
                    self.sm.apply_member_change(&change);
                    self.sm.set_conf_state(&cs);
                    self.raw.mut_store().set_conf_state(cs);
                }
                Err(e) => panic!("raft refused the conf change at {}: {e}", entry.index),
            }
            if change == MemberChange::Remove(self.cfg.id) && self.removed_at.is_none() {
                tracing::warn!("this member was removed from the cluster");
                self.removed_at = Some(self.ticks);
            }
        }
        if ctx.proposer == self.cfg.id {
            if let Some((waiter, _)) = self.conf_waiting.remove(&ctx.request_id) {
                let members = self.sm.members();
                let reply = checked.map(|()| match &change {
                    MemberChange::Add(m) => Response::MemberAdd(pb::MemberAddResponse {
                        header: None,
                        member: Some(super::members::to_pb(m)),
                        members,
                    }),
                    MemberChange::Promote(_) => {
                        Response::MemberPromote(pb::MemberPromoteResponse {
                            header: None,
                            members,
                        })
                    }
                    MemberChange::Remove(_) => Response::MemberRemove(pb::MemberRemoveResponse {
                        header: None,
                        members,
                    }),
                });
                self.answer(waiter, reply);
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
                self.proposals_failed += p.replies.len() as u64;
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
                if let Some(reply) = self.read_now(req, to) {
                    self.out.replies.push((to, reply));
                }
            }
        }
    }

    /// Serves a request from this member's state; None if its answer comes later.
    fn read_now(&mut self, req: Request, to: ReplyTo) -> Option<Reply> {
        let term = self.term();
        let reply = match req {
            Request::Status(_) => Ok(Response::Status(self.status())),
            Request::MemberList(_) => Ok(Response::MemberList(pb::MemberListResponse {
                header: None,
                members: self.sm.members(),
            })),
            Request::MoveLeader(r) => self.move_leader(r.target_id, to)?,
            other => self.sm.read(other),
        };
        Some(self.fill_header(reply, term))
    }

    /// etcd's MoveLeader: only the leader moves leadership, and only to a voting member; the
    /// answer comes once the target leads (None until then).
    fn move_leader(&mut self, target: u64, to: ReplyTo) -> Option<Reply> {
        if !self.is_leader() {
            return Some(Err(Status::new(Code::FailedPrecondition, NOT_LEADER)));
        }
        if !self.raw.store().conf_state().voters.contains(&target) {
            return Some(Err(Status::new(
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
            )));
        }
        if target == self.cfg.id {
            return Some(Ok(Response::MoveLeader(pb::MoveLeaderResponse {
                header: None,
            })));
        }
        self.raw.transfer_leader(target);
        let deadline = self.ticks + self.cfg.request_timeout_ticks;
        self.transfers.push((to, target, deadline));
        None
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
            errors: self.sm.alarm_errors(),
            db_size_in_use,
            is_learner: self
                .raw
                .store()
                .conf_state()
                .learners
                .contains(&self.cfg.id),
        }
    }

    fn fill_header(&self, mut reply: Reply, term: u64) -> Reply {
        if let Ok(resp) = &mut reply {
            // etcd's Cluster service header carries no revision.
            let with_revision = !matches!(
                resp,
                Response::MemberList(_)
                    | Response::MemberAdd(_)
                    | Response::MemberRemove(_)
                    | Response::MemberUpdate(_)
                    | Response::MemberPromote(_)
            );
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
        let mut failed = expired.len();
        if !self.reads.is_empty() && now >= self.reads_since + timeout {
            expired.extend(self.reads.drain(..).map(|(_, to)| Some(to)));
        }
        self.pending.retain(|_, p| {
            if now >= p.deadline {
                failed += p.replies.len();
                expired.append(&mut p.replies);
                false
            } else {
                true
            }
        });
        self.proposals_failed += failed as u64;
        self.read_rounds.retain(|_, r| {
            if now >= r.deadline {
                expired.extend(r.reads.drain(..).map(|(_, to)| Some(to)));
                false
            } else {
                true
            }
        });
        self.for_leader.retain(|(_, to, since)| {
            if now >= since + timeout {
                expired.push(Some(*to));
                false
            } else {
                true
            }
        });
        self.forwarded.retain(|_, call| {
            if now >= call.deadline {
                expired.push(Some(call.to));
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
        let expired_conf: Vec<u64> = self
            .conf_waiting
            .iter()
            .filter(|(_, (_, deadline))| now >= *deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in expired_conf {
            if let Some((waiter, _)) = self.conf_waiting.remove(&id) {
                self.answer(waiter, Err(Status::new(Code::Unavailable, TIMED_OUT)));
            }
        }
        if let Some(at) = self.removed_at {
            // A few heartbeats, so the others learn the removal is committed.
            if now >= at + 3 * self.cfg.heartbeat_tick as u64 && self.fatal.is_none() {
                self.fatal = Some(format!(
                    "this member ({:x}) was removed from the cluster; its data dir cannot be \
                     used to rejoin (add it again as a new member, with an empty data dir)",
                    self.cfg.id
                ));
            }
        }
        let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.transfers)
            .into_iter()
            .partition(|(_, _, deadline)| now >= *deadline);
        self.transfers = waiting;
        let late = late.into_iter().map(|(to, _, _)| Some(to)).collect();
        self.fail(late, Status::unavailable(TRANSFER_TIMED_OUT));
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
