//! The consensus executor: gives the I/O-free [`Node`] its disk (WAL), clock (ticks) and
//! network (the links to the network executors), and commits the backend in batches.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::net::TcpListener;
use raft::eraftpb::{HardState, Message, MessageType, SnapshotMetadata};

use super::backend::Committed;
use super::datadir::ReceivedSnapshot;
use super::link::{BatchQueue, CoreClient, Envelope, ReplyBatch, ToNet};
use super::members::Members;
use super::message::{ReplyTo, Request, Response};
use super::node::{Forward, Node, Output, Persist, StateMachine};
use super::wal_records;
use crate::net::grpc::Status;
use crate::net::metrics::{Metrics, PeerStats};
use crate::peer::{PeerInbox, PeerInfo, PeerView, Traffic, Transport};
use crate::proto::etcdserverpb as pb;

/// How long the core waits for requests between two background (compaction) steps when
/// none arrive.
const BACKGROUND_PAUSE: Duration = Duration::from_millis(1);

/// Something the core loop must react to.
enum Event {
    Requests(u16, Vec<Envelope>),
    Tick,
    /// Every Ready up to `number` is durable; `append` is the sequence number of the WAL
    /// append that did it, `at` (if it held entries) the last entry's index and the WAL
    /// position where its records start, `installed` (if it recorded a snapshot from the
    /// leader) the snapshot's index and the position of its record.
    Persisted {
        number: u64,
        append: u64,
        at: Option<(u64, wal::Position)>,
        installed: Option<(u64, wal::Position)>,
    },
    /// A snapshot marker is durable.
    SnapshotSaved(SnapshotSaved),
    /// The defragment that was running answered.
    Defragmented(ReplyTo, super::message::Reply),
    /// Raft messages and forwarded requests from a peer.
    PeerMessages(u64, Vec<Message>, Vec<Forward>),
    /// A snapshot received in full from the leader.
    PeerSnapshot(Message, ReceivedSnapshot),
    Unreachable(u64),
    /// The message connection to a peer went up or down.
    Connected(u64, bool),
    SnapshotSent(u64, bool),
    /// A peer says this member must not run.
    Fatal(String),
}

/// The core loop's wake-up queue, fed by the link receivers, the ticker and persist tasks.
struct Inbox {
    events: RefCell<Vec<Event>>,
    waker: RefCell<Option<Waker>>,
    metrics: Arc<Metrics>,
    /// Each peer's counters, taken from `metrics` once.
    peers: RefCell<std::collections::HashMap<u64, Arc<PeerStats>>>,
}

impl Inbox {
    fn new(metrics: Arc<Metrics>) -> Inbox {
        Inbox {
            events: RefCell::default(),
            waker: RefCell::default(),
            metrics,
            peers: RefCell::default(),
        }
    }

    fn peer_stats(&self, id: u64) -> Arc<PeerStats> {
        self.peers
            .borrow_mut()
            .entry(id)
            .or_insert_with(|| self.metrics.peer(id))
            .clone()
    }

    fn push(&self, ev: Event) {
        self.events.borrow_mut().push(ev);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    async fn wait(&self) -> Vec<Event> {
        self.wait_inner().await
    }

    async fn wait_inner(&self) -> Vec<Event> {
        std::future::poll_fn(|cx| {
            let mut evs = self.events.borrow_mut();
            if evs.is_empty() {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(std::mem::take(&mut *evs))
            }
        })
        .await
    }
}

impl PeerInbox for Inbox {
    fn messages(&self, from: u64, raft: Vec<Message>, forwards: Vec<Forward>) {
        self.push(Event::PeerMessages(from, raft, forwards));
    }

    fn snapshot(&self, _from: u64, msg: Message, data: ReceivedSnapshot) {
        self.push(Event::PeerSnapshot(msg, data));
    }

    fn unreachable(&self, id: u64) {
        self.push(Event::Unreachable(id));
    }

    fn connected(&self, id: u64, up: bool) {
        let stats = self.peer_stats(id);
        if stats.active.swap(up, Relaxed) && !up {
            stats.disconnects.fetch_add(1, Relaxed);
        }
        self.push(Event::Connected(id, up));
    }

    fn traffic(&self, peer: u64, traffic: Traffic) {
        let stats = self.peer_stats(peer);
        let (counter, n) = match traffic {
            Traffic::Sent(n) => (&stats.sent_bytes, n as u64),
            Traffic::SendFailed => (&stats.sent_failures, 1),
            Traffic::Received(n) => (&stats.received_bytes, n as u64),
            Traffic::ReceiveFailed => (&stats.received_failures, 1),
        };
        counter.fetch_add(n, Relaxed);
    }

    fn snapshot_sent(&self, id: u64, delivered: bool) {
        self.push(Event::SnapshotSent(id, delivered));
    }

    fn fatal(&self, reason: String) {
        self.push(Event::Fatal(reason));
    }
}

/// A durable snapshot marker, waiting to release the WAL segments it makes obsolete.
#[derive(Clone, Copy, Debug)]
struct SnapshotSaved {
    index: u64,
    marker: wal::Position,
    /// Appends started before the marker's; they must all be durable before releasing, or
    /// one still in flight could sit in a segment about to go.
    appends_before: u64,
    /// The marker records a snapshot from the leader: every entry written before it is gone.
    installed: bool,
}

/// How a background commit of the backend failed.
#[derive(Debug)]
pub enum BackendError {
    /// No disk space: nothing changed; the next commit takes the same writes again.
    NoSpace(String),
    /// Anything else (a failed fsync among them): the member cannot go on.
    Fatal(String),
}

/// How long a member short of disk space waits between two tries of a backend commit
/// (which also tries to grow the file back to its reserve).
const SPACE_RETRY: Duration = Duration::from_secs(1);

/// A state machine whose applied state is made durable by background commits.
pub trait DurableStateMachine:
    StateMachine<Snapshot = crate::storage::Snapshot, Received = ReceivedSnapshot>
{
    /// The members table, and a number that changes whenever it does.
    fn members_table(&self) -> (&Members, u64);
    /// Starts committing everything applied so far, with the applied index. False if a
    /// commit is still in flight.
    fn start_commit(&mut self) -> bool;
    /// The commit in flight, if it finished.
    fn poll_commit(&mut self) -> Option<Result<Committed, BackendError>>;
    /// A commit failed for want of space and waits to be taken again.
    fn commit_stalled(&self) -> bool;
    /// Whether (and why) this member's disk is short of space; writes that add data are
    /// refused while it is, and the member raises the NOSPACE alarm.
    fn set_disk_low(&mut self, why: Option<String>);
    /// Writes applied since the last commit started.
    fn uncommitted_writes(&self) -> u64;
    /// A commit was started and has not been polled to its end.
    fn commit_in_flight(&self) -> bool;
    /// The backend, for work done off the core (defragment).
    fn db(&self) -> crate::storage::Db;
}

/// The consensus core's side of the peer port.
pub struct Peers {
    /// The peer listeners, each with its TLS when its URL is https://.
    pub listeners: Vec<(TcpListener, Option<Arc<crate::tls::ServerTls>>)>,
    /// How this member dials https:// peers (None: no peer TLS configured).
    pub dial_tls: Option<Arc<crate::tls::ClientTls>>,
    pub snap_dir: std::path::PathBuf,
    /// The data dir was empty when this member started.
    pub started_empty: bool,
    /// A member joining a running cluster: its members as the cluster reported them, whom
    /// it talks to until it has applied the members table itself.
    pub joining: Option<Members>,
}

#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub tick: Duration,
    /// Raft snapshot (and WAL release) every this many applied writes...
    pub snapshot_count: u64,
    /// ...or once the raft log held in memory since the last snapshot is this large
    /// (entries carry batches of writes, so a count alone does not bound memory).
    pub snapshot_log_bytes: usize,
    pub backend_commit_interval: Duration,
    pub backend_commit_writes: u64,
}

/// How the core reaches one network executor.
pub enum Link {
    /// On another thread: batches cross glommio shared channels.
    Remote {
        from_net: ConnectedReceiver<Vec<Envelope>>,
        to_net: ConnectedSender<ReplyBatch>,
    },
    /// On the core's own executor: batches are handed over in memory, no thread hop.
    Local(Rc<CoreClient>),
}

/// Where the replies for one network executor go.
enum Port {
    Remote(Rc<BatchQueue<ToNet>>),
    Local {
        client: Rc<CoreClient>,
        pending: Vec<ToNet>,
    },
}

impl Port {
    fn push(&mut self, item: ToNet) {
        match self {
            Port::Remote(q) => q.push(item),
            Port::Local { pending, .. } => pending.push(item),
        }
    }

    /// Hands the local executor its replies (remote ones go out with their sender task).
    fn flush(&mut self) {
        if let Port::Local { client, pending } = self {
            if !pending.is_empty() {
                client.deliver(std::mem::take(pending));
            }
        }
    }
}

struct Driver<S: DurableStateMachine> {
    node: Node<S>,
    wal: Rc<wal::Wal>,
    inbox: Rc<Inbox>,
    ports: Vec<Port>,
    metrics: Arc<Metrics>,
    cfg: DriverConfig,
    last_backend_commit: Instant,
    /// (last entry index, first record's WAL position) of persisted Readys, oldest first,
    /// to know which segments a snapshot makes obsolete.
    persisted_at: Vec<(u64, wal::Position)>,
    /// Sequence number of the next WAL append, and the appends not yet durable.
    next_append: u64,
    appends_in_flight: std::collections::BTreeSet<u64>,
    /// A snapshot whose WAL release waits for earlier appends to finish.
    release_pending: Option<SnapshotSaved>,
    last_snapshot_index: u64,
    /// Writes applied since the last snapshot.
    writes_since_snapshot: u64,
    snapshot_in_flight: bool,
    transport: Rc<Transport>,
    /// The members table version the transport last saw.
    members_seen: u64,
    /// This member started empty and has not applied anything yet.
    empty: bool,
    /// A defragment runs: it renames its copy over the backend when done, so a snapshot
    /// from the leader waits for it.
    defragmenting: usize,
    snapshots_waiting: Vec<(Message, ReceivedSnapshot)>,
    /// Clients' Maintenance.Snapshot requests, with the raft index applied when each came,
    /// answered once every write applied before they came is committed to the backend (a
    /// copy of the committed state then holds them).
    backend_copies_waiting: Vec<(ReplyTo, u64)>,
    /// The raft index the last finished backend commit holds everything up to.
    backend_committed_index: u64,
    joining: Option<Members>,
    /// The leader the last Ready named, to count leader changes as etcd does.
    last_leader: u64,
    /// Per follower: when this leader last sent it a heartbeat, and the heartbeat whose
    /// response is awaited to time the round trip.
    heartbeats: std::collections::HashMap<u64, HeartbeatClock>,
    /// Why the last backend commit found the disk short of space (it failed, or could not
    /// keep the file's reserve), until one succeeds with the reserve kept.
    backend_no_space: Option<String>,
    /// What the state machine was last told about disk space.
    disk_low: Option<String>,
    /// The Ready number last reported durable: they must come in order.
    last_persisted: u64,
}

/// A leader's heartbeats to one follower: etcd counts one sent more than two heartbeat
/// intervals after the previous as a send failure (an overloaded leader), and corekv times
/// heartbeat → response as the peer round trip.
struct HeartbeatClock {
    last_sent: Option<Instant>,
    awaiting: Option<Instant>,
    stats: Arc<PeerStats>,
}

/// The transport's view of the cluster, from the applied members table.
fn peer_view(members: &Members, cluster_id: u64, member_id: u64, empty: bool) -> PeerView {
    let mut view = PeerView {
        cluster_id,
        member_id,
        empty,
        ..Default::default()
    };
    for rec in members.records() {
        let urls = rec
            .peer_urls
            .iter()
            .filter_map(|u| crate::config::parse_urls("peer URL", u).ok())
            .flatten()
            .collect();
        let info = PeerInfo {
            urls,
            published: !rec.client_urls.is_empty(),
        };
        view.members.insert(rec.id, info);
        view.records.push(rec.clone());
    }
    view.removed = members.removed().collect();
    view
}

/// Runs the consensus core until every link closes. `recovered` is (last index, position of
/// the first entry record) of the raft entries the WAL recovered at start.
pub async fn run<S: DurableStateMachine + 'static>(
    node: Node<S>,
    wal: wal::Wal,
    recovered: Option<(u64, wal::Position)>,
    links: Vec<Link>,
    cfg: DriverConfig,
    metrics: Arc<Metrics>,
    peers: Peers,
) {
    let inbox = Rc::new(Inbox::new(metrics.clone()));
    let empty = peers.started_empty && !node.applied_from_a_leader();
    let (members, members_seen) = node.state_machine().members_table();
    let members = match &peers.joining {
        Some(j) if members.is_empty() => j,
        _ => members,
    };
    let view = peer_view(members, node.cluster_id(), node.id(), empty);
    let transport = Transport::new(view, peers.snap_dir, inbox.clone(), peers.dial_tls);
    for (l, tls) in peers.listeners {
        transport.listen(l, tls);
    }
    let mut ports = Vec::new();
    for (i, link) in links.into_iter().enumerate() {
        let executor = i as u16;
        let inbox2 = inbox.clone();
        match link {
            Link::Remote { from_net, to_net } => {
                glommio::spawn_local(async move {
                    while let Some(batch) = from_net.recv().await {
                        inbox2.push(Event::Requests(executor, batch));
                    }
                })
                .detach();
                let queue = Rc::new(BatchQueue::new());
                let q2 = queue.clone();
                glommio::spawn_local(async move { q2.run_sender(to_net).await }).detach();
                ports.push(Port::Remote(queue));
            }
            Link::Local(client) => {
                let c2 = client.clone();
                glommio::spawn_local(async move {
                    while let Some(batch) = c2.next_requests().await {
                        inbox2.push(Event::Requests(executor, batch));
                    }
                })
                .detach();
                ports.push(Port::Local {
                    client,
                    pending: Vec::new(),
                });
            }
        }
    }
    let ticker_inbox = inbox.clone();
    let tick = cfg.tick;
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(tick).await;
            ticker_inbox.push(Event::Tick);
        }
    })
    .detach();

    let last_snapshot_index = node.raft_log().snapshot_metadata().index;
    let mut d = Driver {
        node,
        wal: Rc::new(wal),
        inbox,
        ports,
        metrics,
        cfg,
        last_backend_commit: Instant::now(),
        // Entries written by the previous run count as persisted ones: a snapshot before
        // their last index must not release the segments that hold them.
        persisted_at: recovered.into_iter().collect(),
        next_append: 0,
        appends_in_flight: Default::default(),
        release_pending: None,
        last_snapshot_index,
        writes_since_snapshot: 0,
        snapshot_in_flight: false,
        transport,
        members_seen,
        empty,
        defragmenting: 0,
        snapshots_waiting: Vec::new(),
        backend_copies_waiting: Vec::new(),
        backend_committed_index: 0,
        joining: peers.joining,
        last_leader: 0,
        heartbeats: Default::default(),
        backend_no_space: None,
        disk_low: None,
        last_persisted: 0,
    };
    d.step_node();
    loop {
        let events = if d.node.has_background_work() {
            // Between compaction steps the core waits for requests, but at most a moment.
            // It must really wait: a task that only yields stays runnable, and glommio then
            // reaps no I/O completions (WAL writes, sockets) until its preemption timer.
            futures_lite::future::or(d.inbox.wait(), async {
                glommio::timer::sleep(BACKGROUND_PAUSE).await;
                Vec::new()
            })
            .await
        } else {
            d.inbox.wait().await
        };
        for ev in events {
            d.handle(ev);
        }
        d.step_node();
        if d.node.has_background_work() {
            d.node.background_step();
            d.step_node();
        }
        d.maybe_commit_backend();
        d.check_space();
    }
}

impl<S: DurableStateMachine + 'static> Driver<S> {
    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Requests(executor, batch) => {
                for env in batch {
                    let to = ReplyTo {
                        executor,
                        token: env.token,
                    };
                    match env.request {
                        Request::Defragment(_) => self.defragment(to),
                        Request::Snapshot(_) => {
                            let applied = self.node.state_machine().applied_index();
                            self.backend_copies_waiting.push((to, applied));
                        }
                        r => self.node.submit(r, to),
                    }
                }
            }
            Event::Defragmented(to, reply) => {
                self.defragmenting -= 1;
                self.ports[to.executor as usize].push(ToNet::Reply(to.token, reply));
                if self.defragmenting == 0 {
                    for (msg, data) in std::mem::take(&mut self.snapshots_waiting) {
                        self.node.step_snapshot(msg, data);
                    }
                }
            }
            Event::Tick => {
                self.node.tick();
                self.metrics
                    .proposals_pending
                    .store(self.node.proposals_pending() as i64, Relaxed);
            }
            Event::Persisted {
                number,
                append,
                at,
                installed,
            } => {
                // The WAL completes appends in order, and an append that cannot complete
                // (no space) waits rather than fail: raft hears "durable up to N" only when
                // every Ready up to N is on disk. A failed append stops the member.
                assert!(
                    number >= self.last_persisted,
                    "Ready {number} reported durable after Ready {}",
                    self.last_persisted
                );
                self.last_persisted = number;
                self.appends_in_flight.remove(&append);
                if let Some(at) = at {
                    self.persisted_at.push(at);
                }
                self.node.on_persisted(number);
                if let Some((index, marker)) = installed {
                    tracing::info!("installed a snapshot from the leader at raft index {index}");
                    // The backend is the leader's snapshot now; the log restarts after it.
                    self.last_snapshot_index = index;
                    self.writes_since_snapshot = 0;
                    self.release_pending = Some(SnapshotSaved {
                        index,
                        marker,
                        appends_before: append,
                        installed: true,
                    });
                }
                self.release_obsolete_segments();
            }
            Event::SnapshotSaved(saved) => self.finish_snapshot(saved),
            Event::PeerMessages(from, raft, forwards) => {
                for msg in raft {
                    if msg.get_msg_type() == MessageType::MsgHeartbeatResponse {
                        self.heartbeat_answered(from);
                    }
                    self.node.step(msg);
                }
                for f in forwards {
                    match f {
                        Forward::Request(r) => self.node.on_forward_request(from, r),
                        Forward::Reply(r) => self.node.on_forward_reply(r),
                    }
                }
            }
            Event::PeerSnapshot(msg, data) => {
                crate::failpoint::hit("snapshot-received");
                if self.defragmenting > 0 {
                    self.snapshots_waiting.push((msg, data));
                } else {
                    self.node.step_snapshot(msg, data);
                }
            }
            Event::Unreachable(id) => self.node.report_unreachable(id),
            Event::Connected(id, up) => self.node.peer_connected(id, up),
            Event::SnapshotSent(id, delivered) => self.node.report_snapshot(id, delivered),
            Event::Fatal(reason) => fatal(&reason),
        }
    }

    /// Lets the node process, then carries out its output.
    fn step_node(&mut self) {
        if let Some(reason) = self.node.fatal() {
            fatal(reason);
        }
        self.node.process();
        let Output {
            replies,
            watch,
            persist,
            messages,
            forwards,
            snapshots,
        } = self.node.take_output();
        for p in persist {
            self.persist(p);
        }
        for msg in &messages {
            if msg.get_msg_type() == MessageType::MsgHeartbeat {
                self.heartbeat_sent(msg.to);
            }
            self.transport.send(msg);
        }
        for (to, f) in forwards {
            self.transport.forward(to, f);
        }
        for (msg, data) in snapshots {
            self.transport.send_snapshot(msg, data);
        }
        self.update_peers();
        for (to, reply) in replies {
            self.ports[to.executor as usize].push(ToNet::Reply(to.token, reply));
        }
        for (executor, delivery) in watch {
            self.ports[executor as usize].push(ToNet::Watch(delivery));
        }
        for port in &mut self.ports {
            port.flush();
        }
        let m = &self.metrics;
        let leader = self.node.leader_id();
        if leader != self.last_leader {
            if leader != 0 {
                m.leader_changes.fetch_add(1, Relaxed);
            }
            self.last_leader = leader;
            // A new leader's heartbeats start afresh.
            self.heartbeats.clear();
        }
        m.raft_term.store(self.node.term(), Relaxed);
        m.has_leader.store((leader != 0) as u64, Relaxed);
        m.is_leader
            .store((leader != 0 && leader == self.node.id()) as u64, Relaxed);
        m.proposals_failed
            .store(self.node.proposals_failed(), Relaxed);
        m.raft_applied_index
            .store(self.node.state_machine().applied_index(), Relaxed);
        m.raft_commit_index
            .store(self.node.raft_log().hard_state().commit, Relaxed);
        m.revision
            .store(self.node.state_machine().revision(), Relaxed);
    }

    fn heartbeat_sent(&mut self, to: u64) {
        let now = Instant::now();
        let metrics = &self.metrics;
        let clock = self.heartbeats.entry(to).or_insert_with(|| HeartbeatClock {
            last_sent: None,
            awaiting: None,
            stats: metrics.peer(to),
        });
        let max = self.cfg.tick * 2;
        if let Some(gap) = clock.last_sent.map(|t| now - t).filter(|gap| *gap > max) {
            metrics.heartbeat_send_failures.fetch_add(1, Relaxed);
            tracing::warn!(
                "failed to send out heartbeat on time (exceeded the {:?} timeout by {:?}, to \
                 {to:x}); the server is likely overloaded",
                max,
                gap - max
            );
        }
        clock.last_sent = Some(now);
        clock.awaiting.get_or_insert(now);
    }

    fn heartbeat_answered(&mut self, from: u64) {
        if let Some(clock) = self.heartbeats.get_mut(&from) {
            if let Some(sent) = clock.awaiting.take() {
                clock.stats.rtt().observe(sent.elapsed());
            }
        }
    }

    /// Tells the transport about changed members, and when this member stops being empty.
    fn update_peers(&mut self) {
        if self.empty && self.node.applied_from_a_leader() {
            self.empty = false;
            self.transport.set_empty(false);
        }
        let (members, version) = self.node.state_machine().members_table();
        if version != self.members_seen {
            self.members_seen = version;
            let members = match &self.joining {
                Some(j) if members.is_empty() => j,
                _ => {
                    self.joining = None;
                    members
                }
            };
            let view = peer_view(members, self.node.cluster_id(), self.node.id(), self.empty);
            self.transport.set_view(view);
        }
        self.metrics
            .is_learner
            .store(self.node.is_learner(), Relaxed);
        self.metrics
            .published
            .store(self.node.is_published(), Relaxed);
    }

    fn persist(&mut self, p: Persist) {
        let last_entry = p.entries.last().map(|e| e.index);
        let installed = p.snapshot.as_ref().map(|s| s.get_metadata().index);
        let records = wal_records::encode_persist(&p);
        let wal = self.wal.clone();
        let inbox = self.inbox.clone();
        let metrics = self.metrics.clone();
        let number = p.number;
        let append = self.start_append();
        glommio::spawn_local(async move {
            let refs: Vec<(u8, &[u8])> = records.iter().map(|(t, b)| (*t, b.as_slice())).collect();
            let started = Instant::now();
            match wal.append_batch(&refs).await {
                Ok(positions) => {
                    metrics.wal_fsync.observe(started.elapsed());
                    // A snapshot's record comes first, then the entries.
                    let first_entry = positions.get(installed.is_some() as usize).copied();
                    let at = last_entry.zip(first_entry);
                    let installed = installed.zip(positions.first().copied());
                    inbox.push(Event::Persisted {
                        number,
                        append,
                        at,
                        installed,
                    });
                }
                Err(e) => fatal(&wal_failed(&e)),
            }
        })
        .detach();
    }

    /// Rewrites the backend file on a blocking thread; the core keeps applying meanwhile (the
    /// B+tree lets commits continue until the final swap).
    fn defragment(&mut self, to: ReplyTo) {
        self.defragmenting += 1;
        let db = self.node.state_machine().db();
        let inbox = self.inbox.clone();
        glommio::spawn_local(async move {
            let result = glommio::executor()
                .spawn_blocking(move || db.defragment())
                .await;
            let reply = match result {
                Ok(report) => {
                    tracing::info!(?report, "defragmented the backend");
                    // etcd 3.4 answers a defragment with no header at all.
                    Ok(Response::Defragment(pb::DefragmentResponse {
                        header: None,
                    }))
                }
                Err(e) => Err(Status::internal(format!("defragment: {e}"))),
            };
            inbox.push(Event::Defragmented(to, reply));
        })
        .detach();
    }

    fn maybe_commit_backend(&mut self) {
        if let Some(result) = self.node.state_machine_mut().poll_commit() {
            match result {
                Ok(c) => {
                    self.backend_no_space = c.space_low.then(|| {
                        "the database file cannot keep its reserve of free space".to_string()
                    });
                    self.backend_committed(c)
                }
                Err(BackendError::NoSpace(e)) => {
                    if self.backend_no_space.is_none() {
                        tracing::warn!(
                            "backend commit found no disk space ({e}); its writes stay in \
                             memory and in the WAL, and it is tried again every {SPACE_RETRY:?}"
                        );
                    }
                    self.backend_no_space = Some(e);
                }
                Err(BackendError::Fatal(e)) => fatal(&format!(
                    "backend commit failed: {e} (the member stops: after a failed write or \
                     fsync the file cannot be trusted until it is reopened; the WAL holds \
                     everything acknowledged)"
                )),
            }
        }
        let sm = self.node.state_machine();
        let writes = sm.uncommitted_writes();
        let since = self.last_backend_commit.elapsed();
        let due = if self.backend_no_space.is_some() || sm.commit_stalled() {
            // Short of space: try again now and then (the try also grows the file back to
            // its reserve once space is freed), not at every interval.
            since >= SPACE_RETRY
        } else {
            writes >= self.cfg.backend_commit_writes
                || (writes > 0
                    && (since >= self.cfg.backend_commit_interval
                        || !self.backend_copies_waiting.is_empty()))
        };
        if due && self.node.state_machine_mut().start_commit() {
            self.last_backend_commit = Instant::now();
            self.writes_since_snapshot += writes;
        }
        self.answer_backend_copies();
    }

    /// Answers the clients waiting for a copy of the backend once everything applied before
    /// each came is committed. Under a steady stream of writes the backend is never idle (a
    /// new commit starts as soon as one ends), so a request is answered by the first commit
    /// that covers its index, not by an idle moment that may never come.
    fn answer_backend_copies(&mut self) {
        if self.backend_copies_waiting.is_empty() {
            return;
        }
        let sm = self.node.state_machine();
        let idle = sm.uncommitted_writes() == 0 && !sm.commit_in_flight();
        let committed = self.backend_committed_index;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.backend_copies_waiting)
            .into_iter()
            .partition(|&(_, applied)| idle || applied <= committed);
        self.backend_copies_waiting = waiting;
        if ready.is_empty() {
            return;
        }
        let db = sm.db();
        let header = self.node.header();
        for (to, _) in ready {
            let reply = db
                .snapshot()
                .map(|data| {
                    Response::Snapshot(super::message::BackendCopy {
                        header: Some(header),
                        data,
                    })
                })
                .map_err(|e| Status::internal(format!("snapshot: {e}")));
            self.ports[to.executor as usize].push(ToNet::Reply(to.token, reply));
        }
    }

    fn backend_committed(&mut self, c: Committed) {
        self.backend_committed_index = c.applied;
        self.metrics.backend_commit.observe(c.took);
        let (size, in_use) = self.node.state_machine().db_size();
        self.metrics.db_size.store(size, Relaxed);
        self.metrics.db_size_in_use.store(in_use, Relaxed);
        self.maybe_snapshot(c.applied);
    }

    /// After --snapshot-count writes (or a large in-memory log), once the backend durably
    /// holds everything up to `durable`: write a snapshot marker there, then forget the log
    /// and the WAL segments before it.
    fn maybe_snapshot(&mut self, durable: u64) {
        // Short of disk space, every backend commit is followed by a snapshot, so that the
        // WAL segments it makes obsolete are released as soon as possible.
        let due = self.writes_since_snapshot >= self.cfg.snapshot_count
            || self.node.raft_log().entry_bytes() >= self.cfg.snapshot_log_bytes
            || self.disk_low.is_some();
        if self.snapshot_in_flight || !due || durable <= self.last_snapshot_index {
            return;
        }
        let Ok(term) = raft::Storage::term(self.node.raft_log(), durable) else {
            return;
        };
        self.writes_since_snapshot = 0;
        self.snapshot_in_flight = true;
        let mut meta = SnapshotMetadata {
            index: durable,
            term,
            ..Default::default()
        };
        meta.set_conf_state(self.node.raft_log().conf_state().clone());
        let hs: HardState = self.node.raft_log().hard_state().clone();
        let records = [
            wal_records::encode_hard_state(&hs),
            wal_records::encode_snapshot(&meta),
        ];
        let wal = self.wal.clone();
        let inbox = self.inbox.clone();
        let appends_before = self.next_append;
        glommio::spawn_local(async move {
            let refs: Vec<(u8, &[u8])> = records.iter().map(|(t, b)| (*t, b.as_slice())).collect();
            match wal.append_batch(&refs).await {
                Ok(positions) => {
                    let marker = *positions.last().expect("two records were appended");
                    inbox.push(Event::SnapshotSaved(SnapshotSaved {
                        index: durable,
                        marker,
                        appends_before,
                        installed: false,
                    }));
                }
                Err(e) => fatal(&format!("(snapshot marker) {}", wal_failed(&e))),
            }
        })
        .detach();
    }

    /// Tells the state machine when this member's disk becomes short of space, or no longer
    /// is: the WAL cannot prepare its next segment (or waits to write), or the backend
    /// could not commit or keep its reserve.
    fn check_space(&mut self) {
        let why = match (self.wal.no_space(), &self.backend_no_space) {
            (Some(w), _) => Some(format!("WAL: {w}")),
            (None, Some(b)) => Some(format!("backend: {b}")),
            (None, None) => None,
        };
        if why == self.disk_low {
            return;
        }
        match (&why, &self.disk_low) {
            (Some(w), None) => tracing::warn!(
                "the disk is short of space ({w}): writes that add data are refused and the \
                 NOSPACE alarm is raised; reads, watches, deletes and compactions go on"
            ),
            (Some(w), Some(_)) => tracing::debug!("the disk is still short of space ({w})"),
            (None, _) => tracing::info!(
                "the disk has space again; writes resume once the NOSPACE alarm is disarmed"
            ),
        }
        self.disk_low = why.clone();
        self.node.state_machine_mut().set_disk_low(why);
    }

    fn start_append(&mut self) -> u64 {
        let seq = self.next_append;
        self.next_append += 1;
        self.appends_in_flight.insert(seq);
        seq
    }

    fn finish_snapshot(&mut self, saved: SnapshotSaved) {
        self.snapshot_in_flight = false;
        self.last_snapshot_index = saved.index;
        self.node.compact_log(saved.index);
        self.release_pending = Some(saved);
        self.release_obsolete_segments();
    }

    /// Releases the WAL segments a durable snapshot made obsolete, once every append started
    /// before its marker is durable too: everything before the marker is covered by it,
    /// except the entries after its index, kept from the first append that holds one.
    fn release_obsolete_segments(&mut self) {
        let Some(saved) = self.release_pending else {
            return;
        };
        if self
            .appends_in_flight
            .first()
            .is_some_and(|seq| *seq < saved.appends_before)
        {
            return;
        }
        self.release_pending = None;
        if saved.installed {
            // Entries written before the leader's snapshot belong to the log it replaced.
            self.persisted_at.retain(|&(_, first)| first > saved.marker);
        } else {
            self.persisted_at.retain(|&(last, _)| last > saved.index);
        }
        let keep_from = self
            .persisted_at
            .iter()
            .map(|&(_, first)| first)
            .fold(saved.marker, std::cmp::min);
        let wal = self.wal.clone();
        glommio::spawn_local(async move {
            if let Err(e) = wal.release_before(keep_from).await {
                tracing::warn!("releasing old WAL segments failed: {e}");
            }
        })
        .detach();
    }
}

/// Why the member stops after a failed WAL append. Out of space never gets here (the WAL
/// waits for space); anything else (EIO from a write or fsync) does.
fn wal_failed(e: &wal::WalError) -> String {
    format!(
        "WAL append failed: {e} (the entries it held were not acknowledged, and raft was not \
         told they are durable; a failed write or fsync is never retried, since the kernel \
         may have dropped what it could not write: restart to let recovery decide what is on \
         disk)"
    )
}

/// A failure that leaves the member unable to keep its promises: stop rather than serve.
fn fatal(msg: &str) -> ! {
    tracing::error!("{msg}; stopping");
    eprintln!("corekv: {msg}; stopping");
    std::process::exit(1);
}
