//! Recording client operations against an etcd-v3 store, and checking them against the
//! store's own write history — a linearizability-style check specialised to an MVCC store
//! (etcd semantics: one global revision per write; every response header carries the store
//! revision the request was served at).
//!
//! - [`Recorder`] collects [`Op`]s: who (client id), what ([`Request`]: put, linearizable get,
//!   compare-and-swap txn), when (invoke and completion [`Instant`]s) and how it ended
//!   ([`Outcome`]). Ops invoked but never completed count as [`Outcome::Unknown`].
//! - [`RecordingClient`] is a blocking `etcd-client` connection to one endpoint that records
//!   every call it makes, with a per-request timeout (a timeout or a connection error is an
//!   Unknown write: it may or may not have been applied).
//! - [`read_history`] reads every write the store ever made (a watch from revision 1 on all
//!   keys; the tests never compact) into a [`WriteHistory`].
//! - [`check`] verifies the ops against the history and returns a [`CheckReport`] listing each
//!   [`Violation`] with the op and what the history says:
//!   (a) every acknowledged write is in the history at exactly its response revision;
//!   (b) every get equals the history replayed up to its header revision;
//!   (c) real-time order: no op observes a revision older than that of an op acknowledged
//!   before it was invoked (a write's revision must even be newer), and no write is applied
//!   at a revision some op had already seen before the write was invoked;
//!   (d) a successful CAS's compare held just before its revision; a CAS answered
//!   `succeeded=false` did not hold at its header revision;
//!   (e) writes known not to be applied are absent; every value is applied at most once;
//!   (f) the history's revisions are consecutive and every write in it comes from a recorded
//!   invoke of the same key and value (values are unique per op, so this is decidable).
//!
//! No search over interleavings is needed: each write carries a unique value, so the history
//! says which op made each revision, and every answered op is placed at the revision its
//! response header names (etcd's semantics). The check is that this placement is a legal
//! sequential history that respects real time; a server whose headers misreport revisions
//! fails it even where some other linearization might exist.
//! The checker's own tests are in tests/cluster_harness.rs (`checker_*`), run with
//! `CARGO_TARGET_DIR=/work/target-harness cargo test --release --test cluster_harness
//! checker_`; long runs that feed it real histories: `NEMESIS_SECS=600 ... cluster_harness
//! nemesis -- --nocapture` (see nemesis.rs). It is linear in the number of ops (plus a sort):
//! a 10-minute run's ~100,000 ops check in well under a second.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp, WatchOptions};

/// Identifies a client (a sequential process) in the history.
pub type ClientId = usize;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `put(key, value)`; values are unique across the whole history.
    Put { key: String, value: String },
    /// A linearizable range of one key.
    Get { key: String },
    /// `txn(if value(key) == expect then put(key, value))`, nothing in the else branch.
    Cas {
        key: String,
        expect: String,
        value: String,
    },
}

impl Request {
    pub fn key(&self) -> &str {
        match self {
            Request::Put { key, .. } | Request::Get { key } | Request::Cas { key, .. } => key,
        }
    }

    /// The value this request writes, if it writes.
    pub fn written_value(&self) -> Option<&str> {
        match self {
            Request::Put { value, .. } | Request::Cas { value, .. } => Some(value),
            Request::Get { .. } => None,
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Put { key, value } => write!(f, "put({key}, {value:?})"),
            Request::Get { key } => write!(f, "get({key})"),
            Request::Cas { key, expect, value } => {
                write!(f, "cas({key}: {expect:?} -> {value:?})")
            }
        }
    }
}

/// How an op ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A put was acknowledged: the revision of its write (the response header's).
    Put { revision: i64 },
    /// A get answered: the header revision and the key's value and mod_revision (None: the
    /// key did not exist).
    Get {
        revision: i64,
        kv: Option<(String, i64)>,
    },
    /// A CAS txn answered. With `succeeded`, `revision` is its write's; without, it is the
    /// store revision the compare was evaluated at, and nothing was written (definitely not
    /// applied).
    Cas { revision: i64, succeeded: bool },
    /// Definitely not applied (e.g. the connection was refused before anything was sent), or
    /// a read that returned nothing.
    Failed(String),
    /// May or may not have been applied: a timeout, a broken connection, or an op that never
    /// completed.
    Unknown(String),
}

impl Outcome {
    /// A successful answer (including a CAS that answered `succeeded=false`).
    pub fn is_ok(&self) -> bool {
        !matches!(self, Outcome::Failed(_) | Outcome::Unknown(_))
    }

    /// The store revision this answer observed, if it answered.
    pub fn revision(&self) -> Option<i64> {
        match *self {
            Outcome::Put { revision }
            | Outcome::Get { revision, .. }
            | Outcome::Cas { revision, .. } => Some(revision),
            Outcome::Failed(_) | Outcome::Unknown(_) => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Put { revision } => write!(f, "ok @{revision}"),
            Outcome::Get { revision, kv: None } => write!(f, "ok @{revision}: absent"),
            Outcome::Get {
                revision,
                kv: Some((v, m)),
            } => write!(f, "ok @{revision}: {v:?} (mod_revision {m})"),
            Outcome::Cas {
                revision,
                succeeded,
            } => write!(f, "ok @{revision}: succeeded={succeeded}"),
            Outcome::Failed(e) => write!(f, "failed: {e}"),
            Outcome::Unknown(e) => write!(f, "unknown: {e}"),
        }
    }
}

/// One recorded operation.
#[derive(Clone, Debug)]
pub struct Op {
    /// Index in the recorder (unique).
    pub id: usize,
    pub client: ClientId,
    pub request: Request,
    pub invoke: Instant,
    /// None: never completed (counts as Unknown, completing at infinity).
    pub complete: Option<Instant>,
    pub outcome: Outcome,
}

impl Op {
    /// The write's effect: Some(true) = acknowledged as applied, Some(false) = definitely not
    /// applied, None = unknown. None for gets.
    pub fn write_applied(&self) -> Option<Option<bool>> {
        self.request.written_value()?;
        Some(match &self.outcome {
            Outcome::Put { .. } => Some(true),
            Outcome::Cas { succeeded, .. } => Some(*succeeded),
            Outcome::Failed(_) => Some(false),
            Outcome::Get { .. } | Outcome::Unknown(_) => None,
        })
    }
}

/// Collects ops from any number of threads.
#[derive(Clone, Default)]
pub struct Recorder {
    ops: Arc<Mutex<Vec<Op>>>,
    next_client: Arc<Mutex<ClientId>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// A fresh client id.
    pub fn new_client_id(&self) -> ClientId {
        let mut n = self.next_client.lock().unwrap();
        *n += 1;
        *n - 1
    }

    /// Records that `client` invokes `request` now; returns the op's id for [`Self::complete`].
    pub fn invoke(&self, client: ClientId, request: Request) -> usize {
        let mut ops = self.ops.lock().unwrap();
        let id = ops.len();
        ops.push(Op {
            id,
            client,
            request,
            invoke: Instant::now(),
            complete: None,
            outcome: Outcome::Unknown("never completed".into()),
        });
        id
    }

    /// Records that op `id` completed now with `outcome`.
    pub fn complete(&self, id: usize, outcome: Outcome) {
        let mut ops = self.ops.lock().unwrap();
        let op = &mut ops[id];
        assert!(op.complete.is_none(), "op {id} completed twice");
        op.complete = Some(Instant::now());
        op.outcome = outcome;
    }

    /// How many ops invoked at or after `since` satisfy `f` (ops are recorded in invoke
    /// order, so this looks only at the recent ones).
    pub fn count_invoked_since(&self, since: Instant, f: impl Fn(&Op) -> bool) -> usize {
        let ops = self.ops.lock().unwrap();
        ops.iter()
            .rev()
            .take_while(|o| o.invoke >= since)
            .filter(|o| f(o))
            .count()
    }

    /// A copy of every op recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    /// A blocking client for `endpoint` (`host:port`) that records into this recorder.
    pub fn client(&self, endpoint: &str, timeout: Duration) -> RecordingClient {
        RecordingClient::new(self.clone(), endpoint, timeout)
    }
}

/// A blocking etcd-client connection to one endpoint; every call is recorded. A call that
/// does not answer within the timeout is recorded as Unknown (for writes) and the connection
/// is rebuilt for the next call.
pub struct RecordingClient {
    pub id: ClientId,
    endpoint: String,
    recorder: Recorder,
    timeout: Duration,
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    seq: u64,
}

impl RecordingClient {
    pub fn new(recorder: Recorder, endpoint: &str, timeout: Duration) -> RecordingClient {
        RecordingClient {
            id: recorder.new_client_id(),
            endpoint: endpoint.to_owned(),
            recorder,
            timeout,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cannot build a tokio runtime"),
            client: None,
            seq: 0,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A value no other op of any client of the same recorder writes.
    pub fn unique_value(&mut self) -> String {
        self.seq += 1;
        format!("c{}.{}", self.id, self.seq)
    }

    pub fn put(&mut self, key: &str, value: &str) -> Outcome {
        let req = Request::Put {
            key: key.into(),
            value: value.into(),
        };
        self.call(req, |mut c, key, value, _| async move {
            let r = c.put(key, value, None).await?;
            Ok(Outcome::Put {
                revision: header_revision(r.header()),
            })
        })
    }

    /// A linearizable get.
    pub fn get(&mut self, key: &str) -> Outcome {
        self.get_with(key, false)
    }

    /// A serializable get (served from the member's local state, possibly stale: for tests
    /// that check the checker catches stale reads), recorded as a get.
    pub fn get_serializable(&mut self, key: &str) -> Outcome {
        self.get_with(key, true)
    }

    fn get_with(&mut self, key: &str, serializable: bool) -> Outcome {
        let req = Request::Get { key: key.into() };
        self.call(req, move |mut c, key, _, _| async move {
            let opts = serializable.then(|| etcd_client::GetOptions::new().with_serializable());
            let r = c.get(key, opts).await?;
            let kv = r.kvs().first().map(|kv| {
                (
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.mod_revision(),
                )
            });
            Ok(Outcome::Get {
                revision: header_revision(r.header()),
                kv,
            })
        })
    }

    pub fn cas(&mut self, key: &str, expect: &str, value: &str) -> Outcome {
        let req = Request::Cas {
            key: key.into(),
            expect: expect.into(),
            value: value.into(),
        };
        self.call(req, |mut c, key, value, expect| async move {
            let txn = Txn::new()
                .when([Compare::value(key.clone(), CompareOp::Equal, expect)])
                .and_then([TxnOp::put(key, value, None)]);
            let r = c.txn(txn).await?;
            Ok(Outcome::Cas {
                revision: header_revision(r.header()),
                succeeded: r.succeeded(),
            })
        })
    }

    /// Records the request, runs it under the timeout, records and returns the outcome.
    fn call<F, Fut>(&mut self, req: Request, f: F) -> Outcome
    where
        F: FnOnce(Client, String, String, String) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome, etcd_client::Error>>,
    {
        let is_write = req.written_value().is_some();
        let (key, value, expect) = match &req {
            Request::Put { key, value } => (key.clone(), value.clone(), String::new()),
            Request::Get { key } => (key.clone(), String::new(), String::new()),
            Request::Cas { key, expect, value } => (key.clone(), value.clone(), expect.clone()),
        };
        let id = self.recorder.invoke(self.id, req);
        let endpoint = self.endpoint.clone();
        let timeout = self.timeout;
        let existing = self.client.clone();
        let result = self.rt.block_on(async move {
            tokio::time::timeout(timeout, async move {
                let client = match existing {
                    Some(c) => c,
                    None => {
                        let opts = ConnectOptions::new()
                            .with_connect_timeout(timeout)
                            .with_timeout(timeout);
                        Client::connect([endpoint], Some(opts)).await?
                    }
                };
                let out = f(client.clone(), key, value, expect).await?;
                Ok::<_, etcd_client::Error>((client, out))
            })
            .await
        });
        let outcome = match result {
            Ok(Ok((client, out))) => {
                self.client = Some(client);
                out
            }
            Ok(Err(e)) => {
                self.drop_client();
                classify_error(is_write, &e)
            }
            Err(_) => {
                self.drop_client();
                if is_write {
                    Outcome::Unknown(format!("no answer within {timeout:?}"))
                } else {
                    Outcome::Failed(format!("no answer within {timeout:?}"))
                }
            }
        };
        self.recorder.complete(id, outcome.clone());
        outcome
    }

    fn drop_client(&mut self) {
        let _guard = self.rt.enter();
        self.client = None;
    }
}

impl Drop for RecordingClient {
    fn drop(&mut self) {
        self.drop_client();
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(-1, |h| h.revision())
}

/// An error's meaning for the history: a read that errs did nothing; a write that errs is
/// Unknown unless the error proves nothing was sent (the TCP connection was refused).
fn classify_error(is_write: bool, e: &etcd_client::Error) -> Outcome {
    let msg = e.to_string();
    let debug = format!("{e:?}");
    if !is_write || debug.contains("Connection refused") || msg.contains("Connection refused") {
        Outcome::Failed(msg)
    } else {
        Outcome::Unknown(msg)
    }
}

/// One write in the store's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub revision: i64,
    pub key: String,
    pub value: String,
    /// A delete event (the workloads here never delete: any delete is reported).
    pub delete: bool,
}

/// Every write the store made after `base_revision` up to `final_revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteHistory {
    /// The store's revision before the first recorded op (1 for a fresh etcd).
    pub base_revision: i64,
    /// The store's revision when the history was read.
    pub final_revision: i64,
    /// In revision order.
    pub events: Vec<Event>,
}

impl WriteHistory {
    /// A history of puts (key, value) at revisions base+1, base+2, ...
    pub fn from_puts(base_revision: i64, puts: &[(&str, &str)]) -> WriteHistory {
        let events: Vec<Event> = puts
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Event {
                revision: base_revision + 1 + i as i64,
                key: k.to_string(),
                value: v.to_string(),
                delete: false,
            })
            .collect();
        WriteHistory {
            base_revision,
            final_revision: base_revision + events.len() as i64,
            events,
        }
    }
}

/// Reads the whole write history from the member at `endpoint` with a watch from revision 1
/// on all keys. With `upto`, reads until that revision (a member that is behind catches up
/// meanwhile); without, until the revision a linearizable get answers now. Fails after
/// `limit`.
pub fn read_history(
    endpoint: &str,
    upto: Option<i64>,
    limit: Duration,
) -> Result<WriteHistory, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime");
    let endpoint = endpoint.to_owned();
    let fut = async move {
        let mut c = Client::connect([endpoint.clone()], None)
            .await
            .map_err(|e| format!("connecting to {endpoint}: {e}"))?;
        let final_revision = match upto {
            Some(r) => r,
            None => {
                let r = c
                    .get("history-probe", None)
                    .await
                    .map_err(|e| format!("get on {endpoint}: {e}"))?;
                header_revision(r.header())
            }
        };
        let mut events = Vec::new();
        if final_revision > 1 {
            let mut stream = c
                .watch(
                    "",
                    Some(WatchOptions::new().with_all_keys().with_start_revision(1)),
                )
                .await
                .map_err(|e| format!("watch on {endpoint}: {e}"))?;
            while events
                .last()
                .is_none_or(|e: &Event| e.revision < final_revision)
            {
                let resp = stream
                    .message()
                    .await
                    .map_err(|e| format!("watch on {endpoint}: {e}"))?
                    .ok_or_else(|| format!("watch on {endpoint} ended early"))?;
                if resp.canceled() {
                    return Err(format!(
                        "watch on {endpoint} canceled: {}",
                        resp.cancel_reason()
                    ));
                }
                for ev in resp.events() {
                    let kv = ev.kv().ok_or("a watch event without kv")?;
                    events.push(Event {
                        revision: kv.mod_revision(),
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        value: String::from_utf8_lossy(kv.value()).into_owned(),
                        delete: ev.event_type() == etcd_client::EventType::Delete,
                    });
                }
            }
            events.retain(|e| e.revision <= final_revision);
        }
        Ok(WriteHistory {
            base_revision: 1,
            final_revision,
            events,
        })
    };
    rt.block_on(async {
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| format!("history not read within {limit:?}"))?
    })
}

/// What went wrong, for tests that check the checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViolationKind {
    /// (a) an acknowledged write is not in the history.
    LostWrite,
    /// (a) an acknowledged write is in the history at another revision or key.
    WrongRevision,
    /// (b) a get's answer differs from the history replayed to its header revision.
    ReadMismatch,
    /// (b) a get returned a value that no write in the history wrote.
    ReadNeverWritten,
    /// (c) an op observed a revision older than one acknowledged before it was invoked, or a
    /// write was applied before its invoke.
    RealTime,
    /// (d) a CAS's answer contradicts its compare against the history.
    CasCompare,
    /// (e) a write known not to be applied is in the history.
    FailedWriteApplied,
    /// (e) a value was written more than once.
    DuplicateWrite,
    /// (f) the history holds a write no recorded op invoked (or a delete).
    InventedWrite,
    /// (f) the history's revisions are not base+1, base+2, ..., final.
    HistoryGap,
    /// The recorded ops themselves are inconsistent (a harness bug).
    Malformed,
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub kind: ViolationKind,
    pub message: String,
}

/// The checker's verdict.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub violations: Vec<Violation>,
    /// Ops by request kind and outcome, e.g. "put ok" -> 12.
    pub counts: BTreeMap<String, usize>,
    pub history_len: usize,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn kinds(&self) -> Vec<ViolationKind> {
        let mut k: Vec<_> = self.violations.iter().map(|v| v.kind).collect();
        k.sort();
        k.dedup();
        k
    }

    pub fn has(&self, kind: ViolationKind) -> bool {
        self.violations.iter().any(|v| v.kind == kind)
    }

    /// One line per op kind and outcome.
    pub fn summary(&self) -> String {
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        format!(
            "{} writes in the history; ops: {}",
            self.history_len,
            counts.join(", ")
        )
    }

    /// Panics listing the violations (the first 30) if there are any.
    pub fn assert_ok(&self) {
        if self.violations.is_empty() {
            return;
        }
        let mut s = format!(
            "{} linearizability violation(s) ({})\n",
            self.violations.len(),
            self.summary()
        );
        for v in self.violations.iter().take(30) {
            s += &format!("- {:?}: {}\n", v.kind, v.message);
        }
        panic!("{s}");
    }
}

/// The history indexed for replay.
struct Replay<'a> {
    /// key -> [(revision, value)] in revision order.
    by_key: HashMap<&'a str, Vec<(i64, &'a str)>>,
}

impl<'a> Replay<'a> {
    fn new(h: &'a WriteHistory) -> Replay<'a> {
        let mut by_key: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
        for e in h.events.iter().filter(|e| !e.delete) {
            by_key
                .entry(&e.key)
                .or_default()
                .push((e.revision, &e.value));
        }
        for v in by_key.values_mut() {
            v.sort();
        }
        Replay { by_key }
    }

    /// The key's value and mod_revision at `revision`.
    fn at(&self, key: &str, revision: i64) -> Option<(&'a str, i64)> {
        let v = self.by_key.get(key)?;
        let n = v.partition_point(|&(r, _)| r <= revision);
        (n > 0).then(|| (v[n - 1].1, v[n - 1].0))
    }

    /// The key's writes around `revision`, for messages.
    fn context(&self, key: &str, revision: i64) -> String {
        let Some(v) = self.by_key.get(key) else {
            return format!("{key} was never written");
        };
        let n = v.partition_point(|&(r, _)| r <= revision);
        let lo = n.saturating_sub(3);
        let hi = (n + 2).min(v.len());
        let parts: Vec<String> = v[lo..hi]
            .iter()
            .map(|(r, val)| format!("@{r}={val:?}"))
            .collect();
        format!(
            "history of {key} near @{revision}: {}{}{}",
            if lo > 0 { "... " } else { "" },
            parts.join(" "),
            if hi < v.len() { " ..." } else { "" }
        )
    }
}

/// Checks `ops` against `history` (see the module docs for what is checked).
pub fn check(ops: &[Op], history: &WriteHistory) -> CheckReport {
    check_with_background(ops, history, |_| false)
}

/// [`check`] for a history that also holds writes no recorded op made (a background
/// workload on other keys, lease expiries, multi-key txns): events for which `background`
/// is true take their revisions (so the history stays gap-free), may share a revision with
/// the event before them, and are exempt from (e) and (f); the recorded ops must not touch
/// their keys.
pub fn check_with_background(
    ops: &[Op],
    history: &WriteHistory,
    background: impl Fn(&Event) -> bool,
) -> CheckReport {
    let mut violations: Vec<Violation> = Vec::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let t0 = ops.iter().map(|o| o.invoke).min();
    let show = |op: &Op| -> String {
        let ms = |t: Instant| t0.map_or(0.0, |t0| t.duration_since(t0).as_secs_f64() * 1e3);
        let done = op
            .complete
            .map_or("never".to_string(), |t| format!("{:.1}ms", ms(t)));
        format!(
            "op #{} (client {}) {} [invoked {:.1}ms, completed {}] -> {}",
            op.id,
            op.client,
            op.request,
            ms(op.invoke),
            done,
            op.outcome
        )
    };
    let mut violate = |kind: ViolationKind, message: String| {
        violations.push(Violation { kind, message });
    };

    for op in ops {
        let kind = match op.request {
            Request::Put { .. } => "put",
            Request::Get { .. } => "get",
            Request::Cas { .. } => "cas",
        };
        let outcome = match op.outcome {
            Outcome::Cas {
                succeeded: false, ..
            } => "ok (compare failed)",
            Outcome::Put { .. } | Outcome::Get { .. } | Outcome::Cas { .. } => "ok",
            Outcome::Failed(_) => "failed",
            Outcome::Unknown(_) => "unknown",
        };
        *counts.entry(format!("{kind} {outcome}")).or_default() += 1;
        let matches = matches!(
            (&op.request, &op.outcome),
            (_, Outcome::Failed(_) | Outcome::Unknown(_))
                | (Request::Put { .. }, Outcome::Put { .. })
                | (Request::Get { .. }, Outcome::Get { .. })
                | (Request::Cas { .. }, Outcome::Cas { .. })
        );
        if !matches {
            violate(
                ViolationKind::Malformed,
                format!("outcome does not fit the request: {}", show(op)),
            );
        }
    }

    // The writers, by value.
    let mut writer: HashMap<&str, &Op> = HashMap::new();
    for op in ops {
        if let Some(v) = op.request.written_value() {
            if let Some(other) = writer.insert(v, op) {
                violate(
                    ViolationKind::Malformed,
                    format!(
                        "two ops write the same value {v:?} (values must be unique): {} and {}",
                        show(other),
                        show(op)
                    ),
                );
            }
        }
    }

    // (f) revisions consecutive; every event from a recorded invoke; (e) no value twice.
    let mut events: Vec<&Event> = history.events.iter().collect();
    events.sort_by_key(|e| e.revision);
    let mut expected = history.base_revision + 1;
    for e in &events {
        let shares_revision = e.revision == expected - 1 && background(e);
        if e.revision != expected && !shares_revision {
            violate(
                ViolationKind::HistoryGap,
                if e.revision < expected {
                    format!("revision {} holds more than one write ({e:?})", e.revision)
                } else {
                    format!(
                        "revisions {expected}..{} are missing from the history (next: {e:?})",
                        e.revision - 1
                    )
                },
            );
        }
        expected = expected.max(e.revision + 1);
    }
    if expected <= history.final_revision {
        violate(
            ViolationKind::HistoryGap,
            format!(
                "the store is at revision {} but the history ends at {}",
                history.final_revision,
                expected - 1
            ),
        );
    }
    let mut applied_at: HashMap<&str, i64> = HashMap::new();
    for e in events.iter().filter(|e| !background(e)) {
        if e.delete {
            violate(
                ViolationKind::InventedWrite,
                format!(
                    "the history deletes {} at @{}; nobody deletes",
                    e.key, e.revision
                ),
            );
            continue;
        }
        match writer.get(e.value.as_str()) {
            None => violate(
                ViolationKind::InventedWrite,
                format!(
                    "the history has {:?} on {} at @{}, which no recorded op wrote",
                    e.value, e.key, e.revision
                ),
            ),
            Some(op) if op.request.key() != e.key => violate(
                ViolationKind::InventedWrite,
                format!(
                    "the history has {:?} on {} at @{}, but it was written to another key: {}",
                    e.value,
                    e.key,
                    e.revision,
                    show(op)
                ),
            ),
            Some(_) => {}
        }
        if let Some(first) = applied_at.insert(&e.value, e.revision) {
            applied_at.insert(&e.value, first);
            violate(
                ViolationKind::DuplicateWrite,
                format!(
                    "{:?} on {} is in the history twice: @{first} and @{}{}",
                    e.value,
                    e.key,
                    e.revision,
                    writer
                        .get(e.value.as_str())
                        .map_or(String::new(), |op| format!("; written by {}", show(op)))
                ),
            );
        }
    }

    let replay = Replay::new(history);

    // (a), (d), (e) per write; (b) per get.
    for op in ops {
        let key = op.request.key();
        match (&op.request, &op.outcome) {
            (Request::Put { value, .. }, Outcome::Put { revision })
            | (
                Request::Cas { value, .. },
                Outcome::Cas {
                    revision,
                    succeeded: true,
                },
            ) => match applied_at.get(value.as_str()) {
                None => violate(
                    ViolationKind::LostWrite,
                    format!(
                        "acknowledged write is not in the history: {}; {}",
                        show(op),
                        replay.context(key, *revision)
                    ),
                ),
                Some(r) if r != revision => violate(
                    ViolationKind::WrongRevision,
                    format!(
                        "acknowledged at @{revision} but in the history at @{r}: {}; {}",
                        show(op),
                        replay.context(key, *r)
                    ),
                ),
                Some(_) => {
                    if let Request::Cas { expect, .. } = &op.request {
                        let before = replay.at(key, revision - 1);
                        if before.map(|(v, _)| v) != Some(expect.as_str()) {
                            violate(
                                ViolationKind::CasCompare,
                                format!(
                                    "CAS succeeded at @{revision}, but just before it {key} was \
                                     {before:?}, not {expect:?}: {}; {}",
                                    show(op),
                                    replay.context(key, *revision)
                                ),
                            );
                        }
                    }
                }
            },
            (
                Request::Cas { expect, value, .. },
                Outcome::Cas {
                    revision,
                    succeeded: false,
                },
            ) => {
                if let Some(r) = applied_at.get(value.as_str()) {
                    violate(
                        ViolationKind::FailedWriteApplied,
                        format!(
                            "CAS answered succeeded=false but its value is in the history at \
                             @{r}: {}",
                            show(op)
                        ),
                    );
                }
                if *revision > history.final_revision {
                    violate(
                        ViolationKind::ReadMismatch,
                        format!(
                            "header revision @{revision} is beyond the history's end \
                             @{}: {}",
                            history.final_revision,
                            show(op)
                        ),
                    );
                } else {
                    let now = replay.at(key, *revision);
                    if now.map(|(v, _)| v) == Some(expect.as_str()) {
                        violate(
                            ViolationKind::CasCompare,
                            format!(
                                "CAS answered succeeded=false at @{revision}, but {key} was \
                                 {expect:?} then: {}; {}",
                                show(op),
                                replay.context(key, *revision)
                            ),
                        );
                    }
                }
            }
            (Request::Put { value, .. } | Request::Cas { value, .. }, Outcome::Failed(_)) => {
                if let Some(r) = applied_at.get(value.as_str()) {
                    violate(
                        ViolationKind::FailedWriteApplied,
                        format!(
                            "write known not to be applied is in the history at @{r}: {}",
                            show(op)
                        ),
                    );
                }
            }
            (Request::Get { .. }, Outcome::Get { revision, kv }) => {
                if *revision > history.final_revision {
                    violate(
                        ViolationKind::ReadMismatch,
                        format!(
                            "header revision @{revision} is beyond the history's end @{}: {}",
                            history.final_revision,
                            show(op)
                        ),
                    );
                    continue;
                }
                let want = replay.at(key, *revision);
                let got = kv.as_ref().map(|(v, m)| (v.as_str(), *m));
                if want != got {
                    let never = got.is_some_and(|(v, _)| !applied_at.contains_key(v));
                    violate(
                        if never {
                            ViolationKind::ReadNeverWritten
                        } else {
                            ViolationKind::ReadMismatch
                        },
                        format!(
                            "read {got:?}{} but the history at @{revision} says {want:?}: {}; {}",
                            if never {
                                " (a value the history never holds)"
                            } else {
                                ""
                            },
                            show(op),
                            replay.context(key, *revision)
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    // (c) real-time order. Each op with a known revision: acknowledged ops observe theirs; a
    // write not acknowledged but found in the history was applied at its history revision
    // and may have completed any time after its invoke.
    struct Timed<'o> {
        op: &'o Op,
        revision: i64,
        write: bool,
        complete: Option<Instant>,
    }
    let mut timed: Vec<Timed> = Vec::new();
    for op in ops {
        let write = matches!(
            op.outcome,
            Outcome::Put { .. }
                | Outcome::Cas {
                    succeeded: true,
                    ..
                }
        );
        if let Some(revision) = op.outcome.revision() {
            timed.push(Timed {
                op,
                revision,
                write,
                complete: op.complete,
            });
        } else if let Some(&r) = op.request.written_value().and_then(|v| applied_at.get(v)) {
            timed.push(Timed {
                op,
                revision: r,
                write: true,
                complete: None,
            });
        }
    }
    let mut by_invoke: Vec<&Timed> = timed.iter().collect();
    by_invoke.sort_by_key(|t| t.op.invoke);
    let mut by_complete: Vec<&Timed> = timed.iter().filter(|t| t.complete.is_some()).collect();
    by_complete.sort_by_key(|t| t.complete);
    let mut done = 0;
    let mut newest: Option<&Timed> = None; // the highest revision acknowledged so far
    for t in by_invoke {
        while done < by_complete.len() && by_complete[done].complete.unwrap() < t.op.invoke {
            let c = by_complete[done];
            if newest.is_none_or(|n| c.revision > n.revision) {
                newest = Some(c);
            }
            done += 1;
        }
        if let Some(n) = newest {
            let stale = if t.write {
                t.revision <= n.revision
            } else {
                t.revision < n.revision
            };
            if stale {
                violate(
                    ViolationKind::RealTime,
                    format!(
                        "{} at @{} {}, but before it was invoked this had completed at @{}: {}; {}",
                        show(t.op),
                        t.revision,
                        if t.write {
                            "was applied"
                        } else {
                            "observed the store"
                        },
                        n.revision,
                        show(n.op),
                        replay.context(t.op.request.key(), t.revision)
                    ),
                );
            }
        }
    }
    CheckReport {
        violations,
        counts,
        history_len: history.events.len(),
    }
}
