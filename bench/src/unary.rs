//! Closed-loop unary workloads: put, range, txn-put, txn-mixed.
//!
//! Every client sends one request, waits for the reply, and sends the next, until `--total`
//! requests were handed out or `--duration` has passed. Requests are built once per client and
//! only their keys are rewritten in place, so the client allocates little per request.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corekv::client::{path, Client, ClientError};
use corekv::proto::etcdserverpb as pb;
use pb::request_op::Request as Op;

use crate::run::{run_executors, thread_cpu, ExecCtx, ExecOut, Global, Outcome, Pacer};
use crate::stats::Recorder;

/// How long a run lasts and how fast it may go.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub total: u64,
    pub duration: Option<Duration>,
    /// Requests per second over all clients; 0 = as fast as the server answers.
    pub rate: f64,
}

/// Key layout shared by the write workloads (etcd's benchmark: a key of `key_size` bytes that
/// starts with the Go varint of a number below `key_space`, zero-padded).
#[derive(Clone, Debug)]
pub struct Keys {
    pub key_size: usize,
    pub key_space: u64,
    pub sequential: bool,
}

impl Keys {
    pub fn check(&self) -> Result<(), String> {
        if self.key_space == 0 {
            return Err("--key-space-size must be at least 1".into());
        }
        let need = varint_len(self.key_space - 1);
        if self.key_size < need {
            return Err(format!(
                "--key-size {} cannot hold key numbers up to {} ({need} bytes needed)",
                self.key_size,
                self.key_space - 1
            ));
        }
        Ok(())
    }

    pub fn number(&self, seq: u64, rng: &mut fastrand::Rng) -> u64 {
        if self.sequential {
            seq % self.key_space
        } else {
            rng.u64(0..self.key_space)
        }
    }
}

/// Go's `binary.PutVarint` (zig-zag, then base-128) into `buf`, the rest zeroed.
pub fn write_key(buf: &mut [u8], n: u64) {
    let mut ux = n << 1; // zig-zag of a non-negative number
    let mut i = 0;
    while ux >= 0x80 {
        buf[i] = (ux as u8) | 0x80;
        ux >>= 7;
        i += 1;
    }
    buf[i] = ux as u8;
    buf[i + 1..].fill(0);
}

/// A fresh key of `size` bytes for key number `n`.
pub fn key(size: usize, n: u64) -> Bytes {
    let mut k = vec![0; size];
    write_key(&mut k, n);
    Bytes::from(k)
}

fn varint_len(n: u64) -> usize {
    let mut ux = n << 1;
    let mut len = 1;
    while ux >= 0x80 {
        ux >>= 7;
        len += 1;
    }
    len
}

/// `n` random bytes (the same for every request, as in etcd's tool).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u8(..)).collect()
}

/// A unary workload.
#[derive(Clone, Debug)]
pub enum Kind {
    Put {
        keys: Keys,
        value: Bytes,
    },
    Range {
        key: Bytes,
        /// Read one of these keys per request instead of `key`.
        keys: Option<Keys>,
        end: Bytes,
        serializable: bool,
        limit: i64,
        count_only: bool,
    },
    TxnPut {
        keys: Keys,
        value: Bytes,
        ops: usize,
    },
    TxnMixed {
        keys: Keys,
        value: Bytes,
        key: Bytes,
        end: Bytes,
        serializable: bool,
        limit: i64,
        /// Reads per write.
        rw_ratio: f64,
    },
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Put { .. } => "put",
            Kind::Range { .. } => "range",
            Kind::TxnPut { .. } => "txn-put",
            Kind::TxnMixed { .. } => "txn-mixed",
        }
    }
}

/// One client's reusable requests.
enum Bufs {
    Put(pb::PutRequest),
    Range(pb::RangeRequest),
    TxnPut(pb::TxnRequest),
    TxnMixed {
        read: pb::TxnRequest,
        write: pb::TxnRequest,
    },
}

fn put_op(key: Bytes, value: Bytes) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Op::RequestPut(pb::PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

fn op_put_mut(op: &mut pb::RequestOp) -> &mut pb::PutRequest {
    match &mut op.request {
        Some(Op::RequestPut(p)) => p,
        _ => unreachable!("built as a put"),
    }
}

impl Bufs {
    fn new(kind: &Kind) -> Bufs {
        match kind {
            Kind::Put { value, .. } => Bufs::Put(pb::PutRequest {
                key: Bytes::new(),
                value: value.clone(),
                ..Default::default()
            }),
            Kind::Range {
                key,
                end,
                keys: _,
                serializable,
                limit,
                count_only,
            } => Bufs::Range(pb::RangeRequest {
                key: key.clone(),
                range_end: end.clone(),
                serializable: *serializable,
                limit: *limit,
                count_only: *count_only,
                ..Default::default()
            }),
            Kind::TxnPut { value, ops, .. } => Bufs::TxnPut(pb::TxnRequest {
                success: (0..*ops)
                    .map(|_| put_op(Bytes::new(), value.clone()))
                    .collect(),
                ..Default::default()
            }),
            Kind::TxnMixed {
                value,
                key,
                end,
                serializable,
                limit,
                ..
            } => Bufs::TxnMixed {
                read: pb::TxnRequest {
                    success: vec![pb::RequestOp {
                        request: Some(Op::RequestRange(pb::RangeRequest {
                            key: key.clone(),
                            range_end: end.clone(),
                            serializable: *serializable,
                            limit: *limit,
                            ..Default::default()
                        })),
                    }],
                    ..Default::default()
                },
                write: pb::TxnRequest {
                    success: vec![put_op(Bytes::new(), value.clone())],
                    ..Default::default()
                },
            },
        }
    }
}

/// Request classes recorded separately (txn-mixed splits reads from writes).
const READ: usize = 0;
const WRITE: usize = 1;

async fn call<Req: prost::Message, Resp: prost::Message + Default>(
    client: &Client,
    path: &str,
    req: &Req,
) -> Result<(), ClientError> {
    client.unary::<Req, Resp>(path, req).await.map(|_| ())
}

/// Prepares and sends request number `seq`; returns its class.
async fn one(
    kind: &Kind,
    bufs: &mut Bufs,
    client: &Client,
    seq: u64,
    rng: &mut fastrand::Rng,
) -> (usize, Instant, Result<(), ClientError>) {
    match (kind, bufs) {
        (Kind::Put { keys, .. }, Bufs::Put(req)) => {
            req.key = key(keys.key_size, keys.number(seq, rng));
            let t = Instant::now();
            let r = call::<_, pb::PutResponse>(client, path::PUT, req).await;
            (WRITE, t, r)
        }
        (Kind::Range { keys, .. }, Bufs::Range(req)) => {
            if let Some(keys) = keys {
                req.key = key(keys.key_size, keys.number(seq, rng));
            }
            let t = Instant::now();
            let r = call::<_, pb::RangeResponse>(client, path::RANGE, req).await;
            (READ, t, r)
        }
        (Kind::TxnPut { keys, .. }, Bufs::TxnPut(req)) => {
            // Distinct keys within one txn (etcd refuses duplicates): consecutive numbers.
            let base = keys.number(seq, rng);
            for (i, op) in req.success.iter_mut().enumerate() {
                op_put_mut(op).key = key(keys.key_size, (base + i as u64) % keys.key_space);
            }
            let t = Instant::now();
            let r = call::<_, pb::TxnResponse>(client, path::TXN, req).await;
            (WRITE, t, r)
        }
        (Kind::TxnMixed { keys, rw_ratio, .. }, Bufs::TxnMixed { read, write }) => {
            let is_read = rng.f64() < rw_ratio / (1.0 + rw_ratio);
            if is_read {
                let t = Instant::now();
                let r = call::<_, pb::TxnResponse>(client, path::TXN, read).await;
                (READ, t, r)
            } else {
                op_put_mut(&mut write.success[0]).key = key(keys.key_size, keys.number(seq, rng));
                let t = Instant::now();
                let r = call::<_, pb::TxnResponse>(client, path::TXN, write).await;
                (WRITE, t, r)
            }
        }
        _ => unreachable!("buffers built for this kind"),
    }
}

/// The error text a failed request is counted under.
pub fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Status(_) => format!("{:?}: {e}", e.code()),
        ClientError::Timeout => "DeadlineExceeded: context deadline exceeded".into(),
        _ => format!("{:?}: {e}", e.code()),
    }
}

struct Loop {
    kind: Kind,
    load: Load,
    deadline: Option<Instant>,
    pacer: Option<Rc<Pacer>>,
    shared: Arc<crate::run::Shared>,
    /// READ and WRITE latencies of every client on this executor (a histogram is ~180 KB:
    /// one per executor, not one per client).
    recs: RefCell<[Recorder; 2]>,
}

async fn client_loop(l: Rc<Loop>, client: Client, mut rng: fastrand::Rng) -> Instant {
    let mut bufs = Bufs::new(&l.kind);
    let mut last = Instant::now();
    loop {
        let seq = l.shared.issued.fetch_add(1, Relaxed);
        if seq >= l.load.total || l.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if let Some(p) = &l.pacer {
            p.wait().await;
        }
        let (class, t, r) = one(&l.kind, &mut bufs, &client, seq, &mut rng).await;
        last = Instant::now();
        match r {
            Ok(()) => l.recs.borrow_mut()[class].ok(last - t),
            Err(e) => l.recs.borrow_mut()[class].err(error_kind(&e)),
        }
        if l.deadline.is_none() {
            l.shared.progress.fetch_add(1, Relaxed);
        }
    }
    last
}

/// Runs a unary workload; the outcome holds recorders "all", "read" and "write".
pub fn run(g: &Global, endpoints: &[String], kind: Kind, load: Load) -> Result<Outcome, String> {
    let clients = g.clients;
    run_executors(g, endpoints, move |ctx: ExecCtx| {
        let kind = kind.clone();
        async move {
            let mine = ctx.mine(clients);
            let share = mine.len() as f64 / clients as f64;
            let (start, cpu0) = ctx.start_measuring().await;
            let len = match load.duration {
                Some(d) => d.as_secs(),
                None => load.total,
            };
            if ctx.index == 0 {
                ctx.shared.set_phase(kind.name(), len);
            }
            let l = Rc::new(Loop {
                kind,
                load,
                deadline: load.duration.map(|d| start + d),
                pacer: Pacer::new(load.rate * share),
                shared: ctx.shared.clone(),
                recs: RefCell::new([Recorder::default(), Recorder::default()]),
            });
            let mut tasks = Vec::new();
            for (j, client) in mine {
                let rng = fastrand::Rng::with_seed(ctx.g.seed.wrapping_mul(1_000_003) ^ j as u64);
                tasks.push(glommio::spawn_local(client_loop(l.clone(), client, rng)));
            }
            // Duration runs show elapsed seconds instead of a request count.
            if let Some(d) = load.duration {
                if ctx.index == 0 {
                    let shared = ctx.shared.clone();
                    glommio::spawn_local(async move {
                        while start.elapsed() < d {
                            glommio::timer::sleep(Duration::from_millis(100)).await;
                            shared
                                .progress
                                .store(start.elapsed().as_secs().min(d.as_secs()), Relaxed);
                        }
                    })
                    .detach();
                }
            }
            let mut out = ExecOut::default();
            let mut end = start;
            for t in tasks {
                end = end.max(t.await);
            }
            out.end = Some(end);
            out.cpu = thread_cpu().saturating_sub(cpu0);
            let recs = l.recs.borrow();
            out.rec("read").merge(&recs[READ]);
            out.rec("write").merge(&recs[WRITE]);
            out.rec("all").merge(&recs[READ]);
            out.rec("all").merge(&recs[WRITE]);
            drop(recs);
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_go_varints() {
        let mut k = [0xffu8; 8];
        write_key(&mut k, 0);
        assert_eq!(k, [0, 0, 0, 0, 0, 0, 0, 0]);
        write_key(&mut k, 1);
        assert_eq!(k, [2, 0, 0, 0, 0, 0, 0, 0]);
        write_key(&mut k, 300);
        // Go: binary.PutVarint(buf, 300) = d8 04
        assert_eq!(k, [0xd8, 0x04, 0, 0, 0, 0, 0, 0]);
        assert_eq!(varint_len(299), 2);
        assert_eq!(varint_len(63), 1);
        assert_eq!(varint_len(64), 2);
    }

    #[test]
    fn key_space_must_fit() {
        let k = Keys {
            key_size: 1,
            key_space: 1000,
            sequential: true,
        };
        assert!(k.check().is_err());
        let k = Keys {
            key_size: 8,
            key_space: 1 << 40,
            sequential: false,
        };
        assert!(k.check().is_ok());
    }
}
