//! Watch workloads: many watchers on many streams, fed by puts; events delivered per second and
//! put-to-event latency.
//!
//! Every put carries its send time in the first 8 bytes of its value (nanoseconds since the
//! bench process started), so the latency of each delivered event is measured on the watcher's
//! side no matter which executor sent the put or whether the event overtakes the put's reply.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use corekv::client::Client;
use corekv::proto::etcdserverpb as pb;

use crate::run::{
    nanos_since_epoch, run_executors, thread_cpu, ExecCtx, ExecOut, Global, Outcome, Pacer,
};
use crate::stats::Recorder;
use crate::unary::error_kind;

#[derive(Clone, Debug)]
pub struct Params {
    /// Watch streams (spread over the connections like clients).
    pub streams: usize,
    pub watchers_per_stream: usize,
    /// Distinct keys watched; watcher `w` watches key `w % keys`.
    pub keys: usize,
    pub put_total: u64,
    /// Puts per second over all put clients; 0 = as fast as they are answered.
    pub put_rate: f64,
    pub put_clients: usize,
    pub val_size: usize,
    pub prev_kv: bool,
    /// How long to wait for missing events after the last put.
    pub wait: Duration,
    /// Key prefix, unique per run so runs do not see each other's events.
    pub prefix: String,
    /// Send the puts here instead of through the watchers' endpoints (a proxy's benchmark
    /// writes to the member behind it, as a client bypassing the proxy would).
    pub put_endpoint: Option<String>,
    /// Processes whose CPU is read when the measured phase starts and when it ends.
    pub cpu_probe: Option<Arc<CpuProbe>>,
}

/// CPU seconds of some processes (e.g. servers) at the start and the end of the measured phase
/// (the watcher-creation phase left out).
#[derive(Debug, Default)]
pub struct CpuProbe {
    pub pids: Vec<u32>,
    pub start: std::sync::Mutex<Vec<f64>>,
    pub end: std::sync::Mutex<Vec<f64>>,
}

impl CpuProbe {
    fn read(&self, into: &std::sync::Mutex<Vec<f64>>) {
        let now: Vec<f64> = self
            .pids
            .iter()
            .map(|&pid| crate::procstat::cpu_seconds(pid).unwrap_or(f64::NAN))
            .collect();
        *into.lock().unwrap() = now;
    }

    /// CPU seconds each process used in the measured phase (NaN if one died).
    pub fn used(&self) -> Vec<f64> {
        let (a, b) = (self.start.lock().unwrap(), self.end.lock().unwrap());
        a.iter().zip(b.iter()).map(|(a, b)| b - a).collect()
    }
}

impl Params {
    pub fn watchers(&self) -> usize {
        self.streams * self.watchers_per_stream
    }

    fn key(&self, i: usize) -> bytes::Bytes {
        format!("{}{i:08}", self.prefix).into_bytes().into()
    }

    /// Puts that land on key `k` (puts go round-robin over the keys).
    fn puts_on(&self, k: usize) -> u64 {
        let n = self.keys as u64;
        self.put_total / n + u64::from((k as u64) < self.put_total % n)
    }

    /// Events the watchers of stream `s` should receive.
    fn expected(&self, s: usize) -> u64 {
        (0..self.watchers_per_stream)
            .map(|i| self.puts_on((s * self.watchers_per_stream + i) % self.keys))
            .sum()
    }

    pub fn expected_total(&self) -> u64 {
        (0..self.streams).map(|s| self.expected(s)).sum()
    }
}

#[derive(Default)]
struct StreamStats {
    created: usize,
    events: u64,
    last_event: Option<Instant>,
    ended: Option<String>,
    /// The stream task returned.
    done: bool,
}

/// What the streams of one executor share: one latency histogram (they are large).
struct Local {
    p: Rc<Params>,
    all_created: Cell<usize>,
    latency: RefCell<Recorder>,
    shared: Arc<crate::run::Shared>,
}

async fn stream_task(client: Client, l: Rc<Local>, s: usize, stats: Rc<RefCell<StreamStats>>) {
    stream_inner(client, &l, s, &stats).await;
    stats.borrow_mut().done = true;
}

async fn stream_inner(client: Client, l: &Local, s: usize, stats: &RefCell<StreamStats>) {
    let (p, all_created, shared) = (&l.p, &l.all_created, &l.shared);
    let expected = p.expected(s);
    let (mut tx, mut rx) = match client.watch().await {
        Ok(pair) => pair,
        Err(e) => {
            stats.borrow_mut().ended = Some(format!("opening the watch stream: {e}"));
            all_created.set(all_created.get() + 1);
            return;
        }
    };
    for i in 0..p.watchers_per_stream {
        let w = s * p.watchers_per_stream + i;
        let create = pb::WatchCreateRequest {
            key: p.key(w % p.keys),
            prev_kv: p.prev_kv,
            ..Default::default()
        };
        let req = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        };
        if let Err(e) = tx.send(&req).await {
            stats.borrow_mut().ended = Some(format!("sending a watch create: {e}"));
            all_created.set(all_created.get() + 1);
            return;
        }
    }
    let mut signalled = false;
    loop {
        let msg = match rx.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                stats.borrow_mut().ended = Some("the server ended the watch stream".into());
                break;
            }
            Err(e) => {
                stats.borrow_mut().ended = Some(error_kind(&e));
                break;
            }
        };
        let now = nanos_since_epoch();
        let at = Instant::now();
        let mut st = stats.borrow_mut();
        let mut latency = l.latency.borrow_mut();
        if msg.created {
            st.created += 1;
            shared.progress.fetch_add(1, Relaxed);
        }
        if msg.canceled {
            st.ended = Some(format!("watch canceled: {}", msg.cancel_reason));
            break;
        }
        for ev in &msg.events {
            let kv = ev.kv.as_ref();
            let sent = kv
                .and_then(|kv| kv.value.get(..8))
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            match sent {
                Some(t) => latency.ok(Duration::from_nanos(now.saturating_sub(t))),
                None => latency.err("event without a timestamped value"),
            }
            st.events += 1;
            st.last_event = Some(at);
        }
        if !msg.events.is_empty() {
            shared.progress.fetch_add(msg.events.len() as u64, Relaxed);
        }
        if !signalled && st.created == p.watchers_per_stream {
            signalled = true;
            all_created.set(all_created.get() + 1);
        }
        if st.events >= expected && signalled {
            break;
        }
    }
    if !signalled {
        all_created.set(all_created.get() + 1);
    }
    // Close our half; the server ends the stream and drops the watchers.
    tx.close();
}

async fn put_task(
    client: Client,
    p: Rc<Params>,
    pacer: Option<Rc<Pacer>>,
    shared: Arc<crate::run::Shared>,
    puts_done: Arc<AtomicU64>,
) -> Recorder {
    let mut rec = Recorder::default();
    let mut req = pb::PutRequest::default();
    let mut value = vec![0x61; p.val_size.max(8)];
    loop {
        let seq = shared.issued.fetch_add(1, Relaxed);
        if seq >= p.put_total {
            break;
        }
        if let Some(pc) = &pacer {
            pc.wait().await;
        }
        req.key = p.key((seq % p.keys as u64) as usize);
        let t = Instant::now();
        value[..8].copy_from_slice(&nanos_since_epoch().to_le_bytes());
        req.value = bytes::Bytes::copy_from_slice(&value);
        match client
            .unary::<_, pb::PutResponse>(corekv::client::path::PUT, &req)
            .await
        {
            Ok(_) => rec.ok(t.elapsed()),
            Err(e) => rec.err(error_kind(&e)),
        }
        puts_done.fetch_add(1, Release);
    }
    rec
}

/// Runs a watch workload. Recorders: "event" (put-to-event latency), "put"; counters
/// "watchers", "created", "create_us" (creation phase length), "missing".
pub fn run(g: &Global, endpoints: &[String], p: Params) -> Result<Outcome, String> {
    let create_start: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let puts_done = Arc::new(AtomicU64::new(0));
    let p_send = p;
    run_executors(g, endpoints, move |ctx: ExecCtx| {
        let p = Rc::new(p_send.clone());
        let create_start = create_start.clone();
        let puts_done = puts_done.clone();
        async move {
            let shared = ctx.shared.clone();
            let streams = ctx.mine(p.streams);
            let putters = ctx.mine(p.put_clients);
            let watchers = p.watchers() as u64;
            let sh = shared.clone();
            let cs = create_start.clone();
            ctx.barrier(move || {
                sh.set_phase("creating watchers", watchers);
                let _ = cs.set(Instant::now());
            })
            .await;

            // Phase 1: open the streams and create the watchers.
            let local = Rc::new(Local {
                p: p.clone(),
                all_created: Cell::new(0),
                latency: RefCell::new(Recorder::default()),
                shared: shared.clone(),
            });
            let mut tasks = Vec::new();
            for (s, client) in &streams {
                let stats = Rc::new(RefCell::new(StreamStats::default()));
                let t = glommio::spawn_local(stream_task(
                    client.clone(),
                    local.clone(),
                    *s,
                    stats.clone(),
                ));
                tasks.push((*s, stats, t));
            }
            while local.all_created.get() < streams.len() {
                glommio::timer::sleep(Duration::from_micros(200)).await;
            }

            // Phase 2 (measured): puts, and the events they cause.
            let expected = p.expected_total();
            let sh = shared.clone();
            let probe = p.cpu_probe.clone();
            ctx.barrier(move || {
                sh.set_phase("events", expected);
                sh.mark_start();
                if let Some(pr) = probe {
                    pr.read(&pr.start);
                }
            })
            .await;
            let start = shared.start_instant();
            let cpu0 = thread_cpu();
            let share = putters.len() as f64 / p.put_clients.max(1) as f64;
            let pacer = Pacer::new(p.put_rate * share);
            let mut puts = Vec::new();
            let mut out = ExecOut::default();
            let putters = match &p.put_endpoint {
                None => putters,
                Some(ep) => {
                    // One connection to the member per executor is plenty at a paced rate.
                    let opts = crate::servers::dial(ep, ctx.g.dial_timeout, ctx.g.command_timeout);
                    match Client::connect(opts).await {
                        Ok(direct) => putters
                            .into_iter()
                            .map(|(j, _)| (j, direct.clone()))
                            .collect(),
                        Err(e) => {
                            // No puts from here: their events count as missing.
                            out.rec("put").err(format!("dialing {ep}: {e}"));
                            Vec::new()
                        }
                    }
                }
            };
            for (_, client) in putters {
                puts.push(glommio::spawn_local(put_task(
                    client,
                    p.clone(),
                    pacer.clone(),
                    shared.clone(),
                    puts_done.clone(),
                )));
            }
            let mut end = start;
            for t in puts {
                let rec = t.await;
                out.rec("put").merge(&rec);
            }
            end = end.max(Instant::now());
            // Wait for the streams to get everything, but not forever once all puts are in.
            let mut all_puts_at: Option<Instant> = None;
            loop {
                if tasks.iter().all(|(_, st, _)| st.borrow().done) {
                    break;
                }
                if puts_done.load(Acquire) >= p.put_total {
                    let at = *all_puts_at.get_or_insert_with(Instant::now);
                    if at.elapsed() > p.wait {
                        break;
                    }
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            for (s, stats, t) in tasks {
                drop(t); // cancels a stream still waiting for events
                let st = stats.borrow();
                if let Some(last) = st.last_event {
                    end = end.max(last);
                }
                out.add("created", st.created as u64);
                let missing = p.expected(s).saturating_sub(st.events);
                if missing > 0 {
                    let why = match &st.ended {
                        Some(e) => format!("events not delivered (stream ended: {e})"),
                        None => format!("events not delivered within {:?}", p.wait),
                    };
                    out.rec("event").err_n(why, missing);
                    out.add("missing", missing);
                }
            }
            out.rec("event").merge(&local.latency.borrow());
            let probe = p.cpu_probe.clone();
            ctx.barrier(move || {
                if let Some(pr) = probe {
                    pr.read(&pr.end);
                }
            })
            .await;
            out.add("watchers", (streams.len() * p.watchers_per_stream) as u64);
            if ctx.index == 0 {
                let created_at = *create_start.get().expect("set at the first barrier");
                out.add(
                    "create_us",
                    start.saturating_duration_since(created_at).as_micros() as u64,
                );
            }
            out.end = Some(end);
            out.cpu = thread_cpu().saturating_sub(cpu0);
            out
        }
    })
}
