//! A seeded, deterministic simulation of a whole cluster in one process, in the manner of
//! TigerBeetle's simulator and raft-rs's harness. Every member is a real [`Node`] over the
//! toy state machine, driven as `driver.rs` drives it and started as
//! `launch.rs::open_member` starts it, over a simulated disk and network:
//!
//! - Disk: the WAL is a list of durable records in the real codec (`wal_records`); writes
//!   complete in order at random later steps (sometimes many ticks later), then
//!   `on_persisted`. A disk can fill up for a while: the WAL then waits for space, as the
//!   real one does, and writes issued meanwhile complete only once it is freed (across
//!   crashes and restarts). The backend is a durable copy of the toy state, committed in the
//!   background at random; after a commit the driver's snapshot logic writes a marker,
//!   compacts the log and releases whole WAL segments. A crash keeps a random prefix of the
//!   records in flight (a torn tail), lands a backend commit in flight or not, and loses
//!   memory; a restart rebuilds the member exactly as `open_member` does.
//! - Network: raft messages, forwarded requests and snapshot transfers are delayed, dropped
//!   (the sender sometimes hears `report_unreachable`), duplicated, reordered; snapshots
//!   arrive whole or not at all and the sender hears `report_snapshot`. Partitions split
//!   the members for a while; a member can be paused (SIGSTOP) and its clock may drift.
//!   Nothing sent to a member's earlier life reaches it. MsgPropose is never duplicated:
//!   TCP does not, and a duplicated forwarded proposal would be appended (and applied)
//!   twice, which neither raft-rs nor the node guards against.
//! - Clients put unique values, read linearizably, ask Status, TimeToLive (forwarded to the
//!   leader), MoveLeader and Compact, at random members.
//!
//! All randomness comes from one seeded generator, election timeouts included (raft-rs
//! draws those from `thread_rng`; the simulation sets them through `Node::raft_mut`).
//! Nothing reads a clock; no threads.
//!
//! Checks on every seed: one leader per term; no member's commit index passes what a
//! quorum of the voters holds durably (the entry there, same term, in their WAL, or a
//! snapshot marker at or past it); no two members apply different writes at one place; every acknowledged put was applied, exactly once, and survives; linearizable
//! reads are not stale; every answer goes to the request it belongs to, once; applied and
//! commit indexes never go back (a restart resumes at or above the newest snapshot its WAL
//! recorded); and once the faults end, the cluster converges to one state equal to the
//! applied writes replayed, acknowledges a put within a bounded number of ticks, and
//! answers every request still waiting.
//!
//! `cargo test --release --lib cluster_sim` runs the default seeds. `SIM_SEED=<n>` runs one
//! seed, `SIM_SEEDS=<k>` runs k seeds from `SIM_SEED_START` (default 1), `SIM_TRACE=1`
//! prints every traced event as it happens.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use raft::eraftpb::{ConfState, HardState, Message, MessageType, SnapshotMetadata};
use raft::Storage;

use super::message::{Reply, ReplyTo, Request, Response};
use super::node::{Forward, Node, NodeConfig, Output, Persist};
use super::toy::{ToyData, ToyState};
use super::wal_records;
use crate::proto::etcdserverpb as pb;

const ELECTION_TICK: usize = 10;
/// Simulated steps per raft tick (each member's clock may run a little fast or slow).
const TICK: u64 = 10;
/// Seeds the plain `cargo test --release` runs (about 10 ms each); a debug build runs fewer.
const DEFAULT_SEEDS: u64 = if cfg!(debug_assertions) { 100 } else { 2_000 };
const TRACE_LEN: usize = 60;
/// With the faults over, a put must be acknowledged within this many ticks.
const LIVENESS_TICKS: u64 = 60;

/// splitmix64: small, fast, and good enough to drive a simulation.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x005e_ed0f_c0de_cafe)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p` in ten-thousandths.
    fn chance(&mut self, p: u64) -> bool {
        self.below(10_000) < p
    }
}

/// One seed's fault and workload mix. Probabilities are in ten-thousandths.
#[derive(Debug)]
struct Params {
    members: usize,
    nemesis_steps: u64,
    /// A message (or snapshot transfer) is lost.
    drop: u64,
    /// A raft message is delivered twice.
    dup: u64,
    /// A message takes a long way (and overtakes or is overtaken).
    reorder: u64,
    /// Per step: a live member crashes.
    crash: u64,
    /// Per step: the network splits (when it is whole).
    partition: u64,
    /// Per step: a client sends a request.
    client: u64,
    keys: u64,
    /// The driver's snapshot count (applied entries between snapshot markers).
    snapshot_count: u64,
    snapshot_log_bytes: usize,
    /// A backend commit starts once this many entries are uncommitted...
    commit_writes: u64,
    /// ...or, per step, with this probability when any are.
    commit_chance: u64,
    /// WAL records per segment (segments are what release frees).
    segment: u64,
    request_timeout_ticks: u64,
    /// A WAL write takes long (several ticks).
    slow_disk: u64,
    /// Per step: a live member's disk fills up for a while (up to the end of the nemesis).
    full_disk: u64,
    /// Per step: a live member stops (SIGSTOP) for a while, then goes on where it was.
    pause: u64,
    /// Steps per tick of each member: clocks drift apart.
    tick_every: Vec<u64>,
}

impl Params {
    fn new(seed: u64, rng: &mut Rng) -> Params {
        let members = if seed.is_multiple_of(4) { 5 } else { 3 };
        Params {
            members,
            nemesis_steps: rng.range(3_000, 6_000),
            drop: rng.range(0, 1_000),
            dup: rng.range(0, 300),
            reorder: rng.range(0, 1_000),
            crash: rng.range(2, 20),
            partition: rng.range(2, 20),
            client: rng.range(300, 1_500),
            keys: rng.range(1, 6),
            snapshot_count: rng.range(2, 30),
            snapshot_log_bytes: if rng.chance(2_000) {
                rng.range(500, 5_000) as usize
            } else {
                usize::MAX
            },
            commit_writes: rng.range(1, 40),
            commit_chance: rng.range(10, 300),
            segment: rng.range(1, 8),
            request_timeout_ticks: rng.range(15, 60),
            slow_disk: rng.range(0, 300),
            full_disk: rng.range(0, 4),
            pause: rng.range(0, 15),
            tick_every: {
                let drift = rng.range(0, 2);
                (0..members)
                    .map(|_| rng.range(TICK - drift, TICK + drift))
                    .collect()
            },
        }
    }
}

/// A WAL record: (position, record type, payload). Positions count records.
type Rec = (u64, u8, Vec<u8>);

/// Where a write was applied: (raft index, position among the writes of that entry).
type At = (u64, u64);

/// What the driver learns when a WAL write is durable.
enum Done {
    /// A Ready's records (driver.rs `Event::Persisted`).
    Persist {
        number: u64,
        append: u64,
        at: Option<(u64, u64)>,
        installed: Option<(u64, u64)>,
    },
    /// A snapshot marker (driver.rs `Event::SnapshotSaved`).
    Marker(Saved),
}

/// driver.rs `SnapshotSaved`.
#[derive(Clone, Copy, Debug)]
struct Saved {
    index: u64,
    marker: u64,
    appends_before: u64,
    installed: bool,
}

struct WalWrite {
    records: Vec<Rec>,
    done: Done,
}

/// What survives a crash, and the writes that may not.
#[derive(Default)]
struct Disk {
    /// Durable WAL records, in position order.
    wal: Vec<Rec>,
    next_pos: u64,
    /// WAL writes in flight; they complete in order.
    writes: VecDeque<WalWrite>,
    busy_until: u64,
    /// The backend as its last commit left it.
    backend: ToyData,
    /// A backend commit in flight: (generation, the applied state it writes).
    commit: Option<(u64, ToyData)>,
    commit_gen: u64,
    /// Snapshots received in full (member/snap/), by index.
    received: BTreeMap<u64, ToyData>,
    /// The raft entries the durable WAL holds: index -> term (a later write at an index
    /// replaces what was there and after it, as recovery does).
    terms: BTreeMap<u64, u64>,
    /// Full until this step: WAL writes issued before it complete after it.
    full_until: u64,
}

/// The driver's own state (driver.rs `Driver`), rebuilt at every start.
#[derive(Default)]
struct Drv {
    next_append: u64,
    appends_in_flight: BTreeSet<u64>,
    persisted_at: Vec<(u64, u64)>,
    release_pending: Option<Saved>,
    last_snapshot_index: u64,
    writes_since_snapshot: u64,
    snapshot_in_flight: bool,
    /// The applied index when the last backend commit started.
    commit_base: u64,
}

struct Member {
    id: u64,
    /// Bumped at every crash: what was addressed to an earlier life is lost.
    life: u64,
    node: Option<Node<ToyState>>,
    drv: Drv,
    disk: Disk,
    /// Draws this member's election timeouts.
    timeouts: Rng,
    timeout: usize,
    /// The highest snapshot index a durable marker in this member's WAL ever recorded.
    floor: u64,
    last_applied: u64,
    last_commit: u64,
    last_status: u64,
    /// Stopped until this step: its events wait, its clock stands still.
    paused_until: u64,
    next_tick: u64,
}

enum Body {
    Raft(Message),
    Fwd(Forward),
    Snap(Message, ToyData),
}

struct Packet {
    from: usize,
    to: usize,
    from_life: u64,
    to_life: u64,
    body: Body,
}

enum Ev {
    Deliver(Box<Packet>),
    DiskDone {
        m: usize,
        life: u64,
    },
    CommitDone {
        m: usize,
        gen: u64,
    },
    Unreachable {
        m: usize,
        life: u64,
        peer: u64,
    },
    SnapReport {
        m: usize,
        life: u64,
        peer: u64,
        ok: bool,
    },
    Restart {
        m: usize,
    },
    Heal {
        gen: u64,
    },
}

struct Sched {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Sched {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Sched {}
impl PartialOrd for Sched {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sched {
    // Reversed: BinaryHeap pops the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Clone, Debug)]
enum OpKind {
    Put { key: Bytes, value: Bytes },
    Get { key: Bytes },
    Status,
    Ttl { lease: i64 },
    MoveLeader { target: u64 },
    Compact,
}

struct Op {
    kind: OpKind,
    member: usize,
    life: u64,
    invoked: u64,
    done: bool,
    /// Gets: where the newest put to the key acknowledged before the get was invoked was
    /// applied ((0, 0): none).
    floor: At,
}

/// One line of the trace kept for failure reports.
#[derive(Clone, Copy)]
struct Tr {
    step: u64,
    what: &'static str,
    msg: Option<MessageType>,
    m: u64,
    a: u64,
    b: u64,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Stats {
    steps: u64,
    leaders: u64,
    crashes: u64,
    partitions: u64,
    messages: u64,
    snapshots_sent: u64,
    snapshots_installed: u64,
    markers: u64,
    puts_acked: u64,
    puts_failed: u64,
    gets_ok: u64,
    gets_failed: u64,
    ttl_ok: u64,
    lost_ops: u64,
    moves: u64,
    compactions: u64,
    pauses: u64,
    full_disks: u64,
    final_index: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.leaders += o.leaders;
        self.crashes += o.crashes;
        self.partitions += o.partitions;
        self.messages += o.messages;
        self.snapshots_sent += o.snapshots_sent;
        self.snapshots_installed += o.snapshots_installed;
        self.markers += o.markers;
        self.puts_acked += o.puts_acked;
        self.puts_failed += o.puts_failed;
        self.gets_ok += o.gets_ok;
        self.gets_failed += o.gets_failed;
        self.ttl_ok += o.ttl_ok;
        self.lost_ops += o.lost_ops;
        self.moves += o.moves;
        self.compactions += o.compactions;
        self.pauses += o.pauses;
        self.full_disks += o.full_disks;
        self.final_index += o.final_index;
    }
}

struct Sim {
    p: Params,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Sched>,
    ms: Vec<Member>,
    members_pb: Vec<pb::Member>,
    /// Partition group per member; members talk only within a group.
    groups: Vec<u8>,
    partition_gen: u64,
    /// The nemesis is over: no new faults, perfect delivery.
    quiet: bool,
    clients_on: bool,
    /// Orders invocations and completions.
    clock: u64,
    next_token: u64,
    next_value: u64,
    ops: BTreeMap<u64, Op>,
    /// term -> the member that led it.
    leaders: BTreeMap<u64, u64>,
    /// Where -> the write any member applied there.
    applied: BTreeMap<At, (Bytes, Bytes)>,
    value_index: HashMap<Bytes, At>,
    put_invoked: HashMap<Bytes, u64>,
    /// key -> index of the newest acknowledged put.
    newest_acked: HashMap<Bytes, At>,
    acked: Vec<(Bytes, Bytes, At)>,
    trace: VecDeque<Tr>,
    stats: Stats,
    logger: slog::Logger,
    /// SIM_TRACE: print every traced event as it happens.
    verbose: bool,
}

fn wal_record(r: &Rec) -> wal::Record {
    wal::Record {
        record_type: r.1,
        payload: r.2.clone(),
        position: wal::Position::from_lsn(r.0),
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let p = Params::new(seed, &mut rng);
        let n = p.members;
        let members_pb = (1..=n as u64)
            .map(|id| pb::Member {
                id,
                peer_ur_ls: vec![format!("http://m{id}:2380")],
                ..Default::default()
            })
            .collect();
        let ms = (0..n)
            .map(|i| Member {
                id: i as u64 + 1,
                life: 0,
                node: None,
                drv: Drv::default(),
                disk: Disk::default(),
                // A stream of its own (drawn from the seed's), so that how often raft
                // restarts its timer does not shift every other draw.
                timeouts: Rng(rng.next()),
                timeout: ELECTION_TICK,
                floor: 0,
                last_applied: 0,
                last_commit: 0,
                last_status: 0,
                paused_until: 0,
                next_tick: 0,
            })
            .collect();
        let mut sim = Sim {
            p,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            ms,
            members_pb,
            groups: vec![0; n],
            partition_gen: 0,
            quiet: false,
            clients_on: true,
            clock: 0,
            next_token: 1,
            next_value: 1,
            ops: BTreeMap::new(),
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            value_index: HashMap::new(),
            put_invoked: HashMap::new(),
            newest_acked: HashMap::new(),
            acked: Vec::new(),
            trace: VecDeque::new(),
            stats: Stats::default(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            verbose: std::env::var_os("SIM_TRACE").is_some(),
        };
        for m in 0..n {
            sim.ms[m].next_tick = sim.rng.range(1, TICK);
            sim.start(m, true);
        }
        sim
    }

    fn tr(&mut self, what: &'static str, msg: Option<MessageType>, m: u64, a: u64, b: u64) {
        if self.verbose {
            let msg = msg.map(|m| format!(" {m:?}")).unwrap_or_default();
            eprintln!("  step {:>6} m{m} {what}{msg} {a} {b}", self.now);
        }
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back(Tr {
            step: self.now,
            what,
            msg,
            m,
            a,
            b,
        });
    }

    fn trace_text(&self) -> String {
        let mut s = String::new();
        for t in &self.trace {
            let msg = t.msg.map(|m| format!(" {m:?}")).unwrap_or_default();
            s.push_str(&format!(
                "  step {:>6} m{} {}{} {} {}\n",
                t.step, t.m, t.what, msg, t.a, t.b
            ));
        }
        s
    }

    fn fail(&self, why: String) -> ! {
        panic!("step {}: {why}", self.now)
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Sched {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn live(&self) -> Vec<usize> {
        (0..self.ms.len())
            .filter(|&m| self.ms[m].node.is_some())
            .collect()
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.groups[a] == self.groups[b]
    }

    // ---------------------------------------------------------------- start and crash

    /// launch.rs `open_member`, over the simulated data dir.
    fn start(&mut self, m: usize, fresh: bool) {
        let n = self.ms.len() as u64;
        let bootstrap = ConfState::from(((1..=n).collect::<Vec<u64>>(), vec![]));
        if fresh {
            self.ms[m].disk.backend = ToyData {
                conf_state: bootstrap.clone(),
                ..Default::default()
            };
            let mut meta = SnapshotMetadata::default();
            meta.set_conf_state(bootstrap.clone());
            let hs = HardState {
                term: 1,
                ..Default::default()
            };
            let first = vec![
                wal_records::encode_snapshot(&meta),
                wal_records::encode_hard_state(&hs),
            ];
            let recs = self.assign_positions(m, first);
            self.make_durable(m, recs);
        } else if self.ms[m].disk.wal.is_empty() {
            self.fail(format!(
                "member {} restarts with an empty WAL but a backend",
                m + 1
            ));
        }
        let records: Vec<wal::Record> = self.ms[m].disk.wal.iter().map(wal_record).collect();
        let mut log = match wal_records::recover_raft_log(&records, bootstrap) {
            Ok(l) => l,
            Err(e) => self.fail(format!("member {} cannot recover its raft log: {e}", m + 1)),
        };
        if fresh {
            log.set_hard_state(HardState {
                term: 1,
                ..Default::default()
            });
        }
        // finish_interrupted_install, then clean_snapshots.
        let disk = &mut self.ms[m].disk;
        if let Some(index) = wal_records::newest_installed_snapshot(&records) {
            if let Some(d) = disk.received.get(&index) {
                if disk.backend.applied < index {
                    disk.backend = d.clone();
                }
            }
        }
        disk.received.clear();
        let backend = disk.backend.clone();
        let mut sm = ToyState::from_data(backend.clone(), self.members_pb.clone());
        sm.durable = Some(backend);
        let snap_index = log.snapshot_metadata().index;
        let applied = sm.applied;
        if applied < snap_index {
            self.fail(format!(
                "member {}: the backend is at raft index {applied} but the WAL starts after a \
                 snapshot at {snap_index}",
                m + 1
            ));
        }
        let last = log.last_index().expect("in-memory log");
        if applied > last {
            self.fail(format!(
                "member {}: the backend is at raft index {applied} but the WAL ends at {last}",
                m + 1
            ));
        }
        if applied < self.ms[m].floor {
            self.fail(format!(
                "member {} restarts at applied index {applied}, below the snapshot at {} its \
                 WAL recorded",
                m + 1,
                self.ms[m].floor
            ));
        }
        log.raise_commit(applied);
        // The entries this run recovered stay in the WAL until a snapshot covers them.
        let recovered_at = wal_records::first_entry_position(&records).map(|at| (last, at.lsn()));
        let id = self.ms[m].id;
        let life = self.ms[m].life;
        let cfg = NodeConfig {
            id,
            cluster_id: 7,
            election_tick: ELECTION_TICK,
            heartbeat_tick: 1,
            request_timeout_ticks: self.p.request_timeout_ticks,
            health_interval_ticks: 100,
            // Distinct per incarnation, as the real driver takes the clock.
            first_batch_id: (life + 1) << 40,
            first_lease_id: ((id << 48) | ((life + 1) << 24)) as i64,
            name: format!("m{id}"),
            client_urls: vec![format!("http://m{id}:2379")],
            version: "3.4.0".into(),
            initial_corrupt_check: false,
            corrupt_check_ticks: 0,
        };
        let node = match Node::new(cfg, log, sm, &self.logger) {
            Ok(n) => n,
            Err(e) => self.fail(format!("member {id}: raft: {e}")),
        };
        let mem = &mut self.ms[m];
        mem.last_applied = applied;
        mem.last_commit = node.raft_log().hard_state().commit;
        mem.last_status = 0;
        mem.drv = Drv {
            last_snapshot_index: snap_index,
            commit_base: applied,
            persisted_at: recovered_at.into_iter().collect(),
            ..Default::default()
        };
        mem.node = Some(node);
        self.tr("start", None, id, applied, snap_index);
        self.step_node(m);
    }

    /// kill -9: in-flight WAL writes reach the disk up to some record, a backend commit in
    /// flight lands or not, memory is lost.
    fn crash(&mut self, m: usize) {
        if self.ms[m].node.is_none() {
            return;
        }
        self.stats.crashes += 1;
        let mem = &mut self.ms[m];
        mem.node = None;
        mem.life += 1;
        mem.paused_until = 0;
        let recs: Vec<Rec> = mem.disk.writes.drain(..).flat_map(|w| w.records).collect();
        let keep = self.rng.below(recs.len() as u64 + 1) as usize;
        let lands = self.rng.chance(5_000);
        let recs: Vec<Rec> = recs.into_iter().take(keep).collect();
        self.make_durable(m, recs);
        let now = self.now;
        let disk = &mut self.ms[m].disk;
        disk.next_pos = disk.wal.last().map_or(0, |r| r.0 + 1);
        disk.busy_until = now;
        if let Some((_, data)) = disk.commit.take() {
            if lands {
                disk.backend = data;
            }
        }
        for op in self.ops.values_mut() {
            if op.member == m && !op.done {
                op.done = true;
                self.stats.lost_ops += 1;
            }
        }
        self.tr("crash", None, m as u64 + 1, keep as u64, lands as u64);
    }

    // ---------------------------------------------------------------- the driver

    /// driver.rs `step_node`: process, then carry out the output.
    fn step_node(&mut self, m: usize) {
        let Some(node) = self.ms[m].node.as_mut() else {
            return;
        };
        // The driver stops the process; no member here loses its data dir, so it is a bug.
        if let Some(reason) = node.fatal().map(str::to_string) {
            self.fail(format!("member {} stops: {reason}", m + 1));
        }
        node.process();
        let out = node.take_output();
        self.observe(m);
        self.carry_out(m, out);
        let node = self.ms[m].node.as_mut().expect("still live");
        if node.has_background_work() {
            node.background_step();
            node.process();
            let out = node.take_output();
            self.observe(m);
            self.carry_out(m, out);
        }
    }

    fn carry_out(&mut self, m: usize, out: Output<ToyData>) {
        let Output {
            replies,
            watch: _,
            persist,
            messages,
            forwards,
            snapshots,
        } = out;
        for p in persist {
            self.persist(m, p);
        }
        for msg in messages {
            let to = msg.to;
            self.send(m, to, Body::Raft(msg));
        }
        for (to, f) in forwards {
            self.send(m, to, Body::Fwd(f));
        }
        for (msg, data) in snapshots {
            self.stats.snapshots_sent += 1;
            let to = msg.to;
            self.send(m, to, Body::Snap(msg, data));
        }
        self.replies(m, replies);
    }

    fn assign_positions(&mut self, m: usize, records: Vec<(u8, Vec<u8>)>) -> Vec<Rec> {
        let disk = &mut self.ms[m].disk;
        records
            .into_iter()
            .map(|(t, b)| {
                let pos = disk.next_pos;
                disk.next_pos += 1;
                (pos, t, b)
            })
            .collect()
    }

    /// Queues a WAL write; writes complete in order, each at a random later step.
    fn wal_write(&mut self, m: usize, records: Vec<Rec>, done: Done) {
        let latency = if !self.quiet && self.rng.chance(self.p.slow_disk) {
            self.rng.range(30, 200)
        } else {
            self.rng.range(1, 12)
        };
        let disk = &mut self.ms[m].disk;
        let at = disk.busy_until.max(self.now).max(disk.full_until) + latency;
        disk.busy_until = at;
        disk.writes.push_back(WalWrite { records, done });
        let life = self.ms[m].life;
        self.schedule(at, Ev::DiskDone { m, life });
    }

    fn make_durable(&mut self, m: usize, recs: Vec<Rec>) {
        let mem = &mut self.ms[m];
        for r in recs {
            match wal_records::decode(r.1, &r.2).expect("a WAL record decodes") {
                wal_records::WalRecord::Snapshot(meta) => mem.floor = mem.floor.max(meta.index),
                wal_records::WalRecord::InstalledSnapshot(meta) => {
                    mem.floor = mem.floor.max(meta.index);
                    // What was written before belongs to the log it replaced.
                    mem.disk.terms.clear();
                }
                wal_records::WalRecord::Entry(e) => {
                    mem.disk.terms.split_off(&e.index);
                    mem.disk.terms.insert(e.index, e.term);
                }
                wal_records::WalRecord::HardState(_) => {}
            }
            mem.disk.wal.push(r);
        }
    }

    /// Raft's promise: an entry is committed only once a quorum of the voters holds it
    /// durably. The leader appends to its own WAL while it replicates, and counts itself only
    /// once its write is durable: a disk that stalls (full) must not let the commit index
    /// pass what the others have made durable.
    fn check_commit_is_durable(&self, m: usize, commit: u64) {
        let node = self.ms[m].node.as_ref().expect("live");
        let log = node.raft_log();
        if commit == 0 || commit <= log.snapshot_metadata().index {
            return;
        }
        let Ok(term) = raft::Storage::term(log, commit) else {
            return;
        };
        let holds = |id: u64| {
            let Some(mem) = self.ms.get(id as usize - 1) else {
                return false;
            };
            mem.floor >= commit || mem.disk.terms.get(&commit) == Some(&term)
        };
        let cs = log.conf_state();
        for voters in [&cs.voters, &cs.voters_outgoing] {
            if voters.is_empty() {
                continue;
            }
            let durable = voters.iter().filter(|&&v| holds(v)).count();
            if durable <= voters.len() / 2 {
                self.fail(format!(
                    "member {}: commit index {commit} (term {term}) is durable on only \
                     {durable} of the voters {voters:?}",
                    m + 1
                ));
            }
        }
    }

    /// driver.rs `persist`.
    fn persist(&mut self, m: usize, p: Persist) {
        let last_entry = p.entries.last().map(|e| e.index);
        let installed = p.snapshot.as_ref().map(|s| s.get_metadata().index);
        let records = wal_records::encode_persist(&p);
        let first = p.entries.first().map_or(0, |e| e.index);
        self.tr(
            "persist",
            None,
            m as u64 + 1,
            first * 1_000_000 + last_entry.unwrap_or(0),
            installed.unwrap_or(0),
        );
        let drv = &mut self.ms[m].drv;
        let append = drv.next_append;
        drv.next_append += 1;
        drv.appends_in_flight.insert(append);
        let recs = self.assign_positions(m, records);
        let positions: Vec<u64> = recs.iter().map(|r| r.0).collect();
        let first_entry = positions.get(installed.is_some() as usize).copied();
        let done = Done::Persist {
            number: p.number,
            append,
            at: last_entry.zip(first_entry),
            installed: installed.zip(positions.first().copied()),
        };
        self.wal_write(m, recs, done);
    }

    fn disk_done(&mut self, m: usize, life: u64) {
        if self.ms[m].node.is_none() || self.ms[m].life != life {
            return;
        }
        let Some(w) = self.ms[m].disk.writes.pop_front() else {
            return;
        };
        self.make_durable(m, w.records);
        match w.done {
            Done::Persist {
                number,
                append,
                at,
                installed,
            } => {
                self.tr("persisted", None, m as u64 + 1, number, append);
                let mem = &mut self.ms[m];
                mem.drv.appends_in_flight.remove(&append);
                if let Some(at) = at {
                    mem.drv.persisted_at.push(at);
                }
                let node = mem.node.as_mut().expect("live");
                node.on_persisted(number);
                // Applier::restore moved the received snapshot over the backend.
                if let Some(d) = node.state_machine_mut().installed.take() {
                    node.state_machine_mut().durable = Some(d.clone());
                    mem.disk.commit = None;
                    mem.disk.received.remove(&d.applied);
                    mem.drv.commit_base = d.applied;
                    let index = d.applied;
                    mem.disk.backend = d;
                    self.stats.snapshots_installed += 1;
                    self.tr("installed", None, m as u64 + 1, index, 0);
                }
                self.observe(m);
                if let Some((index, marker)) = installed {
                    let drv = &mut self.ms[m].drv;
                    drv.last_snapshot_index = index;
                    drv.writes_since_snapshot = 0;
                    drv.release_pending = Some(Saved {
                        index,
                        marker,
                        appends_before: append,
                        installed: true,
                    });
                }
                self.release_obsolete_segments(m);
            }
            Done::Marker(saved) => self.finish_snapshot(m, saved),
        }
        self.step_node(m);
    }

    /// driver.rs `maybe_commit_backend`, with a random clock.
    fn maybe_start_commit(&mut self, m: usize) {
        let Some(node) = self.ms[m].node.as_ref() else {
            return;
        };
        if self.ms[m].disk.commit.is_some() {
            return;
        }
        let applied = node.state_machine().applied;
        let writes = applied.saturating_sub(self.ms[m].drv.commit_base);
        if writes == 0 {
            return;
        }
        if writes < self.p.commit_writes && !self.rng.chance(self.p.commit_chance) {
            return;
        }
        let data = node.state_machine().data();
        let mem = &mut self.ms[m];
        mem.disk.commit_gen += 1;
        let gen = mem.disk.commit_gen;
        mem.disk.commit = Some((gen, data));
        mem.drv.commit_base = applied;
        mem.drv.writes_since_snapshot += writes;
        let at = self.now + self.rng.range(1, 30);
        self.schedule(at, Ev::CommitDone { m, gen });
    }

    fn commit_done(&mut self, m: usize, gen: u64) {
        let mem = &mut self.ms[m];
        let Some(node) = mem.node.as_mut() else {
            return;
        };
        if !matches!(mem.disk.commit, Some((g, _)) if g == gen) {
            return;
        }
        let (_, data) = mem.disk.commit.take().expect("matched");
        let durable = data.applied;
        node.state_machine_mut().durable = Some(data.clone());
        mem.disk.backend = data;
        self.tr("committed", None, m as u64 + 1, durable, 0);
        self.maybe_snapshot(m, durable);
    }

    /// driver.rs `maybe_snapshot`.
    fn maybe_snapshot(&mut self, m: usize, durable: u64) {
        let mem = &mut self.ms[m];
        let node = mem.node.as_ref().expect("live");
        let due = mem.drv.writes_since_snapshot >= self.p.snapshot_count
            || node.raft_log().entry_bytes() >= self.p.snapshot_log_bytes;
        if mem.drv.snapshot_in_flight || !due || durable <= mem.drv.last_snapshot_index {
            return;
        }
        let Ok(term) = node.raft_log().term(durable) else {
            return;
        };
        mem.drv.writes_since_snapshot = 0;
        mem.drv.snapshot_in_flight = true;
        let mut meta = SnapshotMetadata {
            index: durable,
            term,
            ..Default::default()
        };
        meta.set_conf_state(node.raft_log().conf_state().clone());
        let hs = node.raft_log().hard_state().clone();
        let records = vec![
            wal_records::encode_hard_state(&hs),
            wal_records::encode_snapshot(&meta),
        ];
        let appends_before = mem.drv.next_append;
        let recs = self.assign_positions(m, records);
        let marker = recs.last().expect("two records").0;
        self.tr("marker", None, m as u64 + 1, durable, marker);
        let saved = Saved {
            index: durable,
            marker,
            appends_before,
            installed: false,
        };
        self.wal_write(m, recs, Done::Marker(saved));
    }

    /// driver.rs `finish_snapshot`.
    fn finish_snapshot(&mut self, m: usize, saved: Saved) {
        self.stats.markers += 1;
        let mem = &mut self.ms[m];
        mem.drv.snapshot_in_flight = false;
        mem.drv.last_snapshot_index = saved.index;
        mem.node.as_mut().expect("live").compact_log(saved.index);
        mem.drv.release_pending = Some(saved);
        self.release_obsolete_segments(m);
    }

    /// driver.rs `release_obsolete_segments`, then wal's `release_before`: whole segments
    /// that end at or before the position go.
    fn release_obsolete_segments(&mut self, m: usize) {
        let mem = &mut self.ms[m];
        let drv = &mut mem.drv;
        let Some(saved) = drv.release_pending else {
            return;
        };
        if drv
            .appends_in_flight
            .first()
            .is_some_and(|seq| *seq < saved.appends_before)
        {
            return;
        }
        drv.release_pending = None;
        if saved.installed {
            drv.persisted_at.retain(|&(_, first)| first > saved.marker);
        } else {
            drv.persisted_at.retain(|&(last, _)| last > saved.index);
        }
        let keep_from = drv
            .persisted_at
            .iter()
            .map(|&(_, first)| first)
            .fold(saved.marker, std::cmp::min);
        let seg = self.p.segment;
        let before = mem.disk.wal.len();
        mem.disk.wal.retain(|r| (r.0 / seg + 1) * seg > keep_from);
        let released = (before - mem.disk.wal.len()) as u64;
        self.tr("release", None, m as u64 + 1, keep_from, released);
    }

    // ---------------------------------------------------------------- the network

    fn send(&mut self, from: usize, to_id: u64, body: Body) {
        self.stats.messages += 1;
        let to = match to_id.checked_sub(1) {
            Some(t) if (t as usize) < self.ms.len() && t as usize != from => t as usize,
            _ => self.fail(format!(
                "member {} sends to unknown member {to_id}",
                from + 1
            )),
        };
        let from_life = self.ms[from].life;
        let is_snap = matches!(body, Body::Snap(..));
        let down = self.ms[to].node.is_none();
        let dropped = !self.quiet && self.rng.chance(self.p.drop);
        if down || !self.connected(from, to) || dropped {
            self.lost(from, from_life, to_id, &body);
            return;
        }
        let delay = if is_snap {
            self.rng.range(10, 60)
        } else if !self.quiet && self.rng.chance(self.p.reorder) {
            self.rng.range(10, 80)
        } else {
            self.rng.range(1, 6)
        };
        let to_life = self.ms[to].life;
        // TCP never duplicates; a duplicated forwarded proposal would be appended twice,
        // which neither raft-rs nor the node guards against. Everything else may repeat.
        let dup_ok = match &body {
            Body::Raft(msg) => msg.get_msg_type() != MessageType::MsgPropose,
            Body::Fwd(_) => true,
            Body::Snap(..) => false,
        };
        if dup_ok && !self.quiet && self.rng.chance(self.p.dup) {
            let copy = match &body {
                Body::Raft(msg) => Body::Raft(msg.clone()),
                Body::Fwd(f) => Body::Fwd(f.clone()),
                Body::Snap(..) => unreachable!("snapshots are not duplicated"),
            };
            let at = self.now + self.rng.range(1, 80);
            self.schedule(
                at,
                Ev::Deliver(Box::new(Packet {
                    from,
                    to,
                    from_life,
                    to_life,
                    body: copy,
                })),
            );
        }
        self.schedule(
            self.now + delay,
            Ev::Deliver(Box::new(Packet {
                from,
                to,
                from_life,
                to_life,
                body,
            })),
        );
    }

    /// A message or transfer did not arrive: the transport may tell the sender.
    fn lost(&mut self, from: usize, from_life: u64, to_id: u64, body: &Body) {
        if let Body::Snap(..) = body {
            let at = self.now + self.rng.range(1, 20);
            self.schedule(
                at,
                Ev::SnapReport {
                    m: from,
                    life: from_life,
                    peer: to_id,
                    ok: false,
                },
            );
        } else if self.rng.chance(5_000) {
            let at = self.now + self.rng.range(1, 5);
            self.schedule(
                at,
                Ev::Unreachable {
                    m: from,
                    life: from_life,
                    peer: to_id,
                },
            );
        }
    }

    fn deliver(&mut self, pkt: Packet) {
        let Packet {
            from,
            to,
            from_life,
            to_life,
            body,
        } = pkt;
        let from_id = from as u64 + 1;
        if self.ms[to].node.is_none() || self.ms[to].life != to_life || !self.connected(from, to) {
            self.lost(from, from_life, to as u64 + 1, &body);
            return;
        }
        let node = self.ms[to].node.as_mut().expect("live");
        match body {
            Body::Raft(msg) => {
                let (t, term, index) = (msg.get_msg_type(), msg.term, msg.index);
                node.step(msg);
                self.tr(
                    "recv",
                    Some(t),
                    to as u64 + 1,
                    from_id,
                    term * 1_000_000 + index,
                );
            }
            Body::Fwd(Forward::Request(r)) => {
                let id = r.id;
                node.on_forward_request(from_id, r);
                self.tr("recv forward request", None, to as u64 + 1, from_id, id);
            }
            Body::Fwd(Forward::Reply(r)) => {
                let id = r.id;
                node.on_forward_reply(r);
                self.tr("recv forward reply", None, to as u64 + 1, from_id, id);
            }
            Body::Snap(msg, data) => {
                let index = msg.get_snapshot().get_metadata().index;
                // The transport wrote it to member/snap/ before handing it over.
                self.ms[to].disk.received.insert(index, data.clone());
                let node = self.ms[to].node.as_mut().expect("live");
                node.step_snapshot(msg, data);
                self.tr("recv snapshot", None, to as u64 + 1, from_id, index);
                let at = self.now + self.rng.range(1, 5);
                self.schedule(
                    at,
                    Ev::SnapReport {
                        m: from,
                        life: from_life,
                        peer: to as u64 + 1,
                        ok: true,
                    },
                );
            }
        }
        self.step_node(to);
    }

    // ---------------------------------------------------------------- clients

    fn client_op(&mut self) {
        let live: Vec<usize> = self
            .live()
            .into_iter()
            .filter(|&m| self.ms[m].paused_until <= self.now)
            .collect();
        if live.is_empty() {
            return;
        }
        let mut m = live[self.rng.below(live.len() as u64) as usize];
        let token = self.next_token;
        self.next_token += 1;
        let key = Bytes::from(format!("k{}", self.rng.below(self.p.keys)));
        let r = self.rng.below(100);
        let kind = if r < 55 {
            let value = Bytes::from(format!("v{}", self.next_value));
            self.next_value += 1;
            OpKind::Put { key, value }
        } else if r < 90 {
            OpKind::Get { key }
        } else if r < 94 {
            OpKind::Status
        } else if r < 98 {
            OpKind::Ttl {
                lease: token as i64,
            }
        } else if r < 99 {
            // Mostly to a member that leads: only a leader moves leadership.
            if let Some(&l) = live
                .iter()
                .find(|&&l| self.ms[l].node.as_ref().is_some_and(|n| n.is_leader()))
            {
                m = l;
            }
            OpKind::MoveLeader {
                target: self.rng.range(1, self.ms.len() as u64),
            }
        } else {
            OpKind::Compact
        };
        self.submit(m, token, kind);
    }

    fn submit(&mut self, m: usize, token: u64, kind: OpKind) {
        self.clock += 1;
        let (req, floor, what) = match &kind {
            OpKind::Put { key, value } => {
                self.put_invoked.insert(value.clone(), self.clock);
                let req = Request::Put(pb::PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                });
                (req, (0, 0), "put")
            }
            OpKind::Get { key } => {
                let floor = self.newest_acked.get(key).copied().unwrap_or((0, 0));
                let req = Request::Range(pb::RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                });
                (req, floor, "get")
            }
            OpKind::Status => (Request::Status(pb::StatusRequest {}), (0, 0), "status"),
            OpKind::Ttl { lease } => {
                let req = Request::LeaseTimeToLive(pb::LeaseTimeToLiveRequest {
                    id: *lease,
                    keys: false,
                });
                (req, (0, 0), "ttl")
            }
            OpKind::MoveLeader { target } => {
                let req = Request::MoveLeader(pb::MoveLeaderRequest { target_id: *target });
                (req, (0, 0), "move leader")
            }
            OpKind::Compact => {
                let req = Request::Compact(pb::CompactionRequest {
                    revision: 1,
                    physical: true,
                });
                (req, (0, 0), "compact")
            }
        };
        self.ops.insert(
            token,
            Op {
                kind,
                member: m,
                life: self.ms[m].life,
                invoked: self.clock,
                done: false,
                floor,
            },
        );
        self.tr(what, None, m as u64 + 1, token, floor.0);
        let node = self.ms[m].node.as_mut().expect("live");
        node.submit(req, ReplyTo { executor: 0, token });
        self.step_node(m);
    }

    fn replies(&mut self, m: usize, mut replies: Vec<(ReplyTo, Reply)>) {
        // The node's order within one output follows HashMap iteration.
        replies.sort_by_key(|(to, _)| to.token);
        let life = self.ms[m].life;
        for (to, reply) in replies {
            self.clock += 1;
            let token = to.token;
            let Some(op) = self.ops.get_mut(&token) else {
                self.fail(format!("member {} answers unknown token {token}", m + 1))
            };
            let (was_done, member, op_life) = (op.done, op.member, op.life);
            op.done = true;
            let (kind, invoked, floor) = (op.kind.clone(), op.invoked, op.floor);
            if was_done {
                self.fail(format!("member {} answers token {token} twice", m + 1));
            }
            if member != m || op_life != life {
                self.fail(format!(
                    "member {} (life {life}) answers token {token} sent to member {} (life \
                     {op_life})",
                    m + 1,
                    member + 1,
                ));
            }
            self.tr(
                if reply.is_ok() { "ok" } else { "error" },
                None,
                m as u64 + 1,
                token,
                0,
            );
            match (kind, reply) {
                (OpKind::Put { key, value }, Ok(Response::Put(_))) => {
                    let Some(&index) = self.value_index.get(&value) else {
                        self.fail(format!(
                            "put {key:?}={value:?} (token {token}) acknowledged by member {} \
                             but applied nowhere",
                            m + 1
                        ))
                    };
                    self.stats.puts_acked += 1;
                    let newest = self.newest_acked.entry(key.clone()).or_insert((0, 0));
                    *newest = (*newest).max(index);
                    self.acked.push((key, value, index));
                }
                (OpKind::Get { key }, Ok(Response::Range(r))) => {
                    self.stats.gets_ok += 1;
                    match r.kvs.first() {
                        None if floor > (0, 0) => self.fail(format!(
                            "stale read: get {key:?} (token {token}) at member {} found \
                             nothing, but the put at {floor:?} was acknowledged before \
                             it was invoked",
                            m + 1
                        )),
                        None => {}
                        Some(kv) => {
                            let Some(&index) = self.value_index.get(&kv.value) else {
                                self.fail(format!(
                                    "get {key:?} (token {token}) read {:?}, never applied",
                                    kv.value
                                ))
                            };
                            if index < floor {
                                self.fail(format!(
                                    "stale read: get {key:?} (token {token}) at member {} \
                                     read {:?} (at {index:?}), but the put at {floor:?} \
                                     was acknowledged before it was invoked",
                                    m + 1,
                                    kv.value
                                ));
                            }
                            let put_at = self.put_invoked.get(&kv.value).copied();
                            if put_at.is_none_or(|t| t > self.clock) || kv.key != key {
                                self.fail(format!(
                                    "get {key:?} (token {token}, invoked at {invoked}) read \
                                     {:?}={:?} from the future",
                                    kv.key, kv.value
                                ));
                            }
                        }
                    }
                }
                (OpKind::Status, Ok(Response::Status(s))) => {
                    let before = self.ms[m].last_status;
                    if s.raft_index < before || s.raft_applied_index > s.raft_index {
                        self.fail(format!(
                            "member {} status: raft index {} (before: {before}), applied {}",
                            m + 1,
                            s.raft_index,
                            s.raft_applied_index
                        ));
                    }
                    self.ms[m].last_status = s.raft_index;
                }
                (OpKind::Ttl { lease }, Ok(Response::LeaseTimeToLive(r))) => {
                    if r.id != lease {
                        self.fail(format!(
                            "member {} answered TimeToLive of lease {lease} (token {token}) \
                             with lease {}'s answer",
                            m + 1,
                            r.id
                        ));
                    }
                    self.stats.ttl_ok += 1;
                }
                (OpKind::MoveLeader { target }, Ok(Response::MoveLeader(_))) => {
                    let leader = self.ms[m].node.as_ref().map_or(0, |n| n.leader_id());
                    if leader != target {
                        self.fail(format!(
                            "member {} said leadership moved to {target} (token {token}), but \
                             it follows {leader}",
                            m + 1
                        ));
                    }
                    self.stats.moves += 1;
                }
                (OpKind::Compact, Ok(Response::Compact(_))) => self.stats.compactions += 1,
                (OpKind::Put { .. }, Err(_)) => self.stats.puts_failed += 1,
                (OpKind::Get { .. }, Err(_)) => self.stats.gets_failed += 1,
                (_, Err(_)) => {}
                (kind, Ok(resp)) => {
                    self.fail(format!("{kind:?} (token {token}) answered with {resp:?}"))
                }
            }
        }
    }

    // ---------------------------------------------------------------- checks

    /// Takes what member `m` applied since the last look and checks the invariants.
    fn observe(&mut self, m: usize) {
        let mem = &mut self.ms[m];
        let Some(node) = mem.node.as_mut() else {
            return;
        };
        let history = std::mem::take(&mut node.state_machine_mut().history);
        let applied = node.state_machine().applied;
        let commit = node.raft_log().hard_state().commit;
        let (is_leader, term) = (node.is_leader(), node.term());
        let (id, last_applied, last_commit) = (mem.id, mem.last_applied, mem.last_commit);
        mem.last_applied = applied;
        mem.last_commit = commit;
        if applied < last_applied {
            self.fail(format!(
                "member {id}: applied index went back from {last_applied} to {applied}"
            ));
        }
        if commit < last_commit {
            self.fail(format!(
                "member {id}: commit index went back from {last_commit} to {commit}"
            ));
        }
        if applied > commit {
            self.fail(format!(
                "member {id}: applied {applied} is past the commit index {commit}"
            ));
        }
        self.check_commit_is_durable(m, commit);
        if is_leader {
            match self.leaders.get(&term) {
                Some(&other) if other != id => self.fail(format!(
                    "two leaders in term {term}: members {other} and {id}"
                )),
                Some(_) => {}
                None => {
                    self.leaders.insert(term, id);
                    self.stats.leaders += 1;
                    self.tr("leader", None, id, term, 0);
                }
            }
        }
        // One entry carries a batch of writes: number them within their index.
        let mut prev = (0, 0);
        for (index, key, value) in history {
            let at = if index == prev.0 {
                (index, prev.1 + 1)
            } else {
                (index, 0)
            };
            prev = at;
            if self.verbose {
                let v: u64 = std::str::from_utf8(&value[1..]).map_or(0, |s| s.parse().unwrap_or(0));
                self.tr("apply", None, id, index * 1_000 + at.1, v);
            }
            match self.applied.get(&at) {
                Some((k, v)) if (k, v) != (&key, &value) => self.fail(format!(
                    "member {id} applied {key:?}={value:?} at {at:?}, another member applied \
                     {k:?}={v:?} there"
                )),
                Some(_) => {}
                None => {
                    if let Some(&other) = self.value_index.get(&value) {
                        if other != at {
                            self.fail(format!(
                                "put {key:?}={value:?} applied at {other:?} and again at {at:?} \
                                 (member {id})"
                            ));
                        }
                    }
                    self.value_index.insert(value.clone(), at);
                    self.applied.insert(at, (key, value));
                }
            }
        }
    }

    // ---------------------------------------------------------------- the loop

    fn tick_member(&mut self, m: usize) {
        let mem = &mut self.ms[m];
        if mem.paused_until > self.now {
            return;
        }
        let Some(node) = mem.node.as_mut() else {
            return;
        };
        let raft = node.raft_mut();
        // A new election period (raft reset its timer): draw its timeout here, not from
        // raft-rs's thread_rng.
        if raft.election_elapsed == 0 {
            mem.timeout = ELECTION_TICK + mem.timeouts.below(ELECTION_TICK as u64) as usize;
        }
        raft.set_randomized_election_timeout(mem.timeout);
        node.tick();
        self.step_node(m);
    }

    fn nemesis(&mut self) {
        if self.rng.chance(self.p.crash) {
            let live = self.live();
            if !live.is_empty() {
                let m = live[self.rng.below(live.len() as u64) as usize];
                self.crash(m);
                let after = if self.rng.chance(3_000) {
                    self.rng.range(1, 40)
                } else {
                    self.rng.range(40, 1_500)
                };
                self.schedule(self.now + after, Ev::Restart { m });
            }
        }
        if self.rng.chance(self.p.pause) {
            let live = self.live();
            if !live.is_empty() {
                let m = live[self.rng.below(live.len() as u64) as usize];
                let until = self.now + self.rng.range(20, 400);
                self.ms[m].paused_until = self.ms[m].paused_until.max(until);
                self.stats.pauses += 1;
                self.tr("pause", None, m as u64 + 1, until, 0);
            }
        }
        if self.rng.chance(self.p.full_disk) {
            let live = self.live();
            if !live.is_empty() {
                let m = live[self.rng.below(live.len() as u64) as usize];
                let until = (self.now + self.rng.range(200, 3_000)).min(self.p.nemesis_steps);
                let disk = &mut self.ms[m].disk;
                disk.full_until = disk.full_until.max(until);
                self.stats.full_disks += 1;
                self.tr("full-disk", None, m as u64 + 1, until, 0);
            }
        }
        if self.groups.iter().all(|g| *g == 0) && self.rng.chance(self.p.partition) {
            let n = self.ms.len();
            if self.rng.chance(5_000) {
                let lone = self.rng.below(n as u64) as usize;
                self.groups = (0..n).map(|i| (i == lone) as u8).collect();
            } else {
                self.groups = (0..n).map(|_| self.rng.below(2) as u8).collect();
            }
            self.partition_gen += 1;
            self.stats.partitions += 1;
            let mask = self
                .groups
                .iter()
                .enumerate()
                .fold(0u64, |acc, (i, g)| acc | ((*g as u64) << i));
            self.tr("partition", None, 0, mask, 0);
            let at = self.now + self.rng.range(100, 2_500);
            let gen = self.partition_gen;
            self.schedule(at, Ev::Heal { gen });
        }
    }

    fn handle(&mut self, ev: Ev) {
        // A stopped process notices nothing until it runs again.
        let target = match &ev {
            Ev::Deliver(p) => Some(p.to),
            Ev::DiskDone { m, .. }
            | Ev::CommitDone { m, .. }
            | Ev::Unreachable { m, .. }
            | Ev::SnapReport { m, .. } => Some(*m),
            Ev::Restart { .. } | Ev::Heal { .. } => None,
        };
        if let Some(m) = target {
            if self.ms[m].paused_until > self.now && self.ms[m].node.is_some() {
                let at = self.ms[m].paused_until;
                self.schedule(at, ev);
                return;
            }
        }
        match ev {
            Ev::Deliver(pkt) => self.deliver(*pkt),
            Ev::DiskDone { m, life } => self.disk_done(m, life),
            Ev::CommitDone { m, gen } => self.commit_done(m, gen),
            Ev::Unreachable { m, life, peer } => {
                if self.ms[m].life == life {
                    if let Some(node) = self.ms[m].node.as_mut() {
                        node.report_unreachable(peer);
                        self.step_node(m);
                    }
                }
            }
            Ev::SnapReport { m, life, peer, ok } => {
                if self.ms[m].life == life {
                    if let Some(node) = self.ms[m].node.as_mut() {
                        node.report_snapshot(peer, ok);
                        self.tr("snapshot report", None, m as u64 + 1, peer, ok as u64);
                        self.step_node(m);
                    }
                }
            }
            Ev::Restart { m } => {
                if self.ms[m].node.is_none() {
                    self.start(m, false);
                }
            }
            Ev::Heal { gen } => {
                if gen == self.partition_gen {
                    self.groups.iter_mut().for_each(|g| *g = 0);
                    self.tr("heal", None, 0, 0, 0);
                }
            }
        }
    }

    fn step(&mut self) {
        self.now += 1;
        for m in 0..self.ms.len() {
            if self.now >= self.ms[m].next_tick {
                self.ms[m].next_tick = self.now + self.p.tick_every[m];
                self.tick_member(m);
            }
        }
        if !self.quiet {
            self.nemesis();
        }
        if self.clients_on && self.rng.chance(self.p.client) {
            self.client_op();
        }
        for m in 0..self.ms.len() {
            self.maybe_start_commit(m);
        }
        while self.queue.peek().is_some_and(|s| s.at <= self.now) {
            let s = self.queue.pop().expect("peeked");
            self.handle(s.ev);
        }
    }

    /// One leader that every member follows, and every member has applied its whole log.
    fn converged(&self) -> bool {
        let nodes: Vec<&Node<ToyState>> = self.ms.iter().filter_map(|m| m.node.as_ref()).collect();
        if nodes.len() != self.ms.len() {
            return false;
        }
        let leaders: Vec<&&Node<ToyState>> = nodes.iter().filter(|n| n.is_leader()).collect();
        let [leader] = leaders.as_slice() else {
            return false;
        };
        let last = leader.raft_log().last_index().expect("in-memory log");
        nodes
            .iter()
            .all(|n| n.leader_id() == leader.id() && n.state_machine().applied == last)
    }

    fn run_until_converged(&mut self, limit: u64, what: &str) {
        let until = self.now + limit;
        while !self.converged() {
            if self.now >= until {
                let state: Vec<String> = self
                    .ms
                    .iter()
                    .map(|m| match &m.node {
                        Some(n) => format!(
                            "m{}: term {} leader {} applied {} commit {} last {}",
                            m.id,
                            n.term(),
                            n.leader_id(),
                            n.state_machine().applied,
                            n.raft_log().hard_state().commit,
                            n.raft_log().last_index().unwrap_or(0)
                        ),
                        None => format!("m{}: down", m.id),
                    })
                    .collect();
                self.fail(format!(
                    "no convergence {what} within {limit} steps: {}",
                    state.join("; ")
                ));
            }
            self.step();
        }
    }

    fn run(&mut self) {
        while self.now < self.p.nemesis_steps {
            self.step();
        }
        // The nemesis ends: the network heals, crashed members come back, nothing is lost.
        self.quiet = true;
        self.clients_on = false;
        self.groups.iter_mut().for_each(|g| *g = 0);
        self.partition_gen += 1;
        for m in &mut self.ms {
            m.paused_until = m.paused_until.min(self.now);
        }
        self.tr("quiet", None, 0, 0, 0);
        for m in 0..self.ms.len() {
            if self.ms[m].node.is_none() {
                self.start(m, false);
            }
        }
        self.run_until_converged(30_000, "after the nemesis");

        // Liveness: the leader serves a put within a bounded number of steps.
        // A leader transfer asked for before the quiet may still be under way, and raft drops
        // proposals meanwhile: the client retries until the deadline.
        let deadline = self.now + LIVENESS_TICKS * TICK;
        let mut tries = 0;
        loop {
            let Some(leader) = (0..self.ms.len())
                .find(|&m| self.ms[m].node.as_ref().is_some_and(|n| n.is_leader()))
            else {
                self.step();
                continue;
            };
            let token = self.next_token;
            self.next_token += 1;
            let value = Bytes::from(format!("v{}", self.next_value));
            self.next_value += 1;
            let kind = OpKind::Put {
                key: Bytes::from_static(b"k0"),
                value: value.clone(),
            };
            tries += 1;
            self.submit(leader, token, kind);
            while !self.ops[&token].done {
                if self.now >= deadline {
                    self.fail(format!(
                        "no put was acknowledged within {LIVENESS_TICKS} ticks with the cluster \
                         whole ({tries} tries)"
                    ));
                }
                self.step();
            }
            if self.acked.last().is_some_and(|a| a.1 == value) {
                break;
            }
            if self.now >= deadline {
                self.fail(format!(
                    "no put was acknowledged within {LIVENESS_TICKS} ticks with the cluster \
                     whole ({tries} tries)"
                ));
            }
            self.step();
        }
        // Every request still waiting is answered by its deadline.
        let slowest = self.p.tick_every.iter().copied().max().unwrap_or(TICK);
        let until = self.now + (self.p.request_timeout_ticks + 5) * slowest;
        while self.now < until {
            self.step();
        }
        self.run_until_converged(10_000, "after the last put");
        if let Some((token, op)) = self.ops.iter().find(|(_, op)| !op.done) {
            self.fail(format!(
                "{:?} (token {token}) sent to live member {} was never answered",
                op.kind,
                op.member + 1
            ));
        }
        self.final_checks();
    }

    fn final_checks(&mut self) {
        let datas: Vec<ToyData> = self
            .ms
            .iter()
            .map(|m| m.node.as_ref().expect("live").state_machine().data())
            .collect();
        for (i, d) in datas.iter().enumerate().skip(1) {
            if d != &datas[0] {
                self.fail(format!(
                    "members 1 and {} differ at the end: {:?} vs {:?}",
                    i + 1,
                    datas[0],
                    d
                ));
            }
        }
        let fin = &datas[0];
        self.stats.final_index = fin.applied;
        if let Some((&at, _)) = self.applied.range((fin.applied + 1, 0)..).next() {
            self.fail(format!(
                "{at:?} was applied somewhere but the cluster ended at {}",
                fin.applied
            ));
        }
        let mut replay: BTreeMap<Bytes, Bytes> = BTreeMap::new();
        for (k, v) in self.applied.values() {
            replay.insert(k.clone(), v.clone());
        }
        if replay != fin.kv || self.applied.len() as i64 != fin.revision {
            let differ: Vec<String> = replay
                .iter()
                .filter(|(k, v)| fin.kv.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k:?}: replayed {v:?}, holds {:?}", fin.kv.get(k)))
                .collect();
            self.fail(format!(
                "the final state is not the applied writes replayed: {} writes applied, \
                 revision {}; {}",
                self.applied.len(),
                fin.revision,
                differ.join(", ")
            ));
        }
        for (key, value, index) in &self.acked {
            let Some(now) = fin.kv.get(key) else {
                self.fail(format!("acknowledged put {key:?}={value:?} is gone"));
            };
            let at = self.value_index.get(now).copied().unwrap_or((0, 0));
            if at < *index || (at == *index && now != value) {
                self.fail(format!(
                    "acknowledged put {key:?}={value:?} at {index:?} lost: the key holds \
                     {now:?} from {at:?}"
                ));
            }
        }
        self.stats.steps = self.now;
    }
}

/// Runs one seed; on failure, says how to replay it and what happened last.
fn run_seed(seed: u64) -> Result<Stats, String> {
    let mut sim: Option<Sim> = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        sim = Some(Sim::new(seed));
        sim.as_mut().expect("just made").run();
    }));
    match result {
        Ok(()) => Ok(sim.expect("ran").stats),
        Err(e) => {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            let (params, trace) = match &sim {
                Some(s) => (format!("{:?}", s.p), s.trace_text()),
                None => (String::new(), String::new()),
            };
            Err(format!(
                "seed {seed}: {why}\nparams: {params}\nlast events:\n{trace}replay: SIM_SEED={seed} \
                 cargo test --release --lib cluster_sim"
            ))
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn cluster_simulation() {
    let (first, count) = match (env_u64("SIM_SEED"), env_u64("SIM_SEEDS")) {
        (Some(seed), None) => (seed, 1),
        (start, Some(n)) => (start.or(env_u64("SIM_SEED_START")).unwrap_or(1), n),
        (None, None) => (env_u64("SIM_SEED_START").unwrap_or(1), DEFAULT_SEEDS),
    };
    let started = std::time::Instant::now();
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for seed in first..first + count {
        match run_seed(seed) {
            Ok(s) => total.add(&s),
            Err(e) => {
                eprintln!("{e}\n");
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "cluster_sim: {count} seeds from {first}, {} failed, in {:.1?}: {total:?}",
        failures.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 4] {
        let a = run_seed(seed);
        let b = run_seed(seed);
        assert_eq!(a, b, "seed {seed} ran differently twice");
    }
}
