//! The machinery every workload shares: client executors (one glommio executor per client
//! core), connections spread over them, clients spread over the connections, a start barrier,
//! rate pacing, the progress bar, and CPU accounting of the client itself.
//!
//! Spreading follows etcd's benchmark tool: client `j` uses connection `j % conns`, and
//! connection `i` lives on executor `i % executors`, so every client runs on the executor that
//! owns its connection and nothing crosses threads on the request path except two counters.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use corekv::client::Client;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stats::{ClientCpu, Recorder};

/// Flags every subcommand takes.
#[derive(Clone, Debug)]
pub struct Global {
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    pub client_cores: usize,
    pub target_leader: bool,
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
    pub seed: u64,
    pub progress: bool,
}

/// A process-wide time origin, so timestamps written into values on one executor can be read
/// back on another.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub fn nanos_since_epoch() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn clock_cpu(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    clock_cpu(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process (all threads).
pub fn process_cpu() -> Duration {
    clock_cpu(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// A single-use barrier across executors. Waiters poll (no executor can block its thread: the
/// connection tasks on it must keep running); the last to arrive runs `on_release` first.
pub struct Barrier {
    parties: usize,
    arrived: AtomicUsize,
    released: AtomicBool,
}

impl Barrier {
    fn new(parties: usize) -> Barrier {
        Barrier {
            parties,
            arrived: AtomicUsize::new(0),
            released: AtomicBool::new(false),
        }
    }

    pub async fn wait(&self, on_release: impl FnOnce()) {
        if self.arrived.fetch_add(1, AcqRel) + 1 == self.parties {
            on_release();
            self.released.store(true, Release);
            return;
        }
        let mut pause = Duration::from_micros(20);
        while !self.released.load(Acquire) {
            glommio::timer::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }
}

/// State shared by all executors of one run.
pub struct Shared {
    pub executors: usize,
    /// Requests handed out so far (a client takes the next number before each request).
    pub issued: AtomicU64,
    /// What the progress bar shows.
    pub progress: AtomicU64,
    pub bar_len: AtomicU64,
    pub phase: Mutex<String>,
    barriers: Vec<Barrier>,
    /// When the measured phase began, and the process CPU time then.
    pub start: OnceLock<(Instant, Duration)>,
    /// Process CPU when the last executor finished.
    pub end_cpu: OnceLock<Duration>,
    finished: AtomicUsize,
}

impl Shared {
    fn new(executors: usize) -> Shared {
        Shared {
            executors,
            issued: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            bar_len: AtomicU64::new(0),
            phase: Mutex::new(String::new()),
            barriers: (0..16).map(|_| Barrier::new(executors)).collect(),
            start: OnceLock::new(),
            end_cpu: OnceLock::new(),
            finished: AtomicUsize::new(0),
        }
    }

    pub fn set_phase(&self, phase: &str, len: u64) {
        *self.phase.lock().unwrap() = phase.to_string();
        self.progress.store(0, Relaxed);
        self.bar_len.store(len, Relaxed);
    }

    /// The measured phase starts now (the first call wins).
    pub fn mark_start(&self) -> Instant {
        self.start.get_or_init(|| (Instant::now(), process_cpu())).0
    }

    pub fn start_instant(&self) -> Instant {
        self.start.get().expect("the measured phase has started").0
    }
}

/// What an executor sees: its connections, the clients it runs, and the shared state.
pub struct ExecCtx {
    pub index: usize,
    pub g: Global,
    pub shared: Arc<Shared>,
    /// Global connection index → client, for the connections this executor owns.
    conns: Vec<(usize, Client)>,
    barrier_no: Cell<usize>,
}

impl ExecCtx {
    /// The connection a requester with global number `j` uses, if this executor owns it.
    pub fn conn_for(&self, j: usize) -> Option<Client> {
        let c = j % self.g.conns;
        self.conns
            .iter()
            .find(|(i, _)| *i == c)
            .map(|(_, cl)| cl.clone())
    }

    /// The requesters (of `n`, numbered like etcd's clients) that run on this executor.
    pub fn mine(&self, n: usize) -> Vec<(usize, Client)> {
        (0..n)
            .filter_map(|j| self.conn_for(j).map(|c| (j, c)))
            .collect()
    }

    /// Waits until every executor got here. Every executor must call barriers in the same order.
    pub async fn barrier(&self, on_release: impl FnOnce()) {
        let n = self.barrier_no.get();
        self.barrier_no.set(n + 1);
        self.shared.barriers[n].wait(on_release).await;
    }

    /// The measured phase begins for everyone once all executors arrive; returns its start.
    pub async fn start_measuring(&self) -> (Instant, Duration) {
        let shared = self.shared.clone();
        self.barrier(move || {
            shared.mark_start();
        })
        .await;
        (self.shared.start_instant(), thread_cpu())
    }
}

/// What an executor hands back.
#[derive(Default)]
pub struct ExecOut {
    /// Named recorders (merged across executors by name).
    pub recs: Vec<(String, Recorder)>,
    /// Named counters (summed across executors).
    pub counters: Vec<(String, u64)>,
    /// When this executor's measured work ended.
    pub end: Option<Instant>,
    /// This executor thread's CPU during the measured phase.
    pub cpu: Duration,
}

impl ExecOut {
    pub fn rec(&mut self, name: &str) -> &mut Recorder {
        if let Some(i) = self.recs.iter().position(|(n, _)| n == name) {
            return &mut self.recs[i].1;
        }
        self.recs.push((name.to_string(), Recorder::default()));
        &mut self.recs.last_mut().unwrap().1
    }

    pub fn add(&mut self, name: &str, n: u64) {
        match self.counters.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v += n,
            None => self.counters.push((name.to_string(), n)),
        }
    }
}

/// All executors' results merged.
pub struct Outcome {
    pub recs: Vec<(String, Recorder)>,
    pub counters: Vec<(String, u64)>,
    pub duration: Duration,
    pub client_cpu: ClientCpu,
}

impl Outcome {
    pub fn rec(&self, name: &str) -> Recorder {
        self.recs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }
}

/// Paces requests to a rate on one executor (slots handed out in order).
pub struct Pacer {
    next: Cell<Instant>,
    interval: Duration,
}

impl Pacer {
    /// `rate` requests per second on this executor; None when unlimited.
    pub fn new(rate: f64) -> Option<Rc<Pacer>> {
        (rate > 0.0).then(|| {
            Rc::new(Pacer {
                next: Cell::new(Instant::now()),
                interval: Duration::from_secs_f64(1.0 / rate),
            })
        })
    }

    pub async fn wait(&self) {
        let now = Instant::now();
        let slot = self.next.get().max(now);
        self.next.set(slot + self.interval);
        if slot > now {
            glommio::timer::sleep(slot - now).await;
        }
    }
}

/// The endpoint list a connection dials: the whole list, starting at a different member for
/// each connection (so connections spread over members, like the Go client's balancer).
fn rotated(endpoints: &[String], i: usize) -> Vec<String> {
    let n = endpoints.len();
    (0..n).map(|k| endpoints[(i + k) % n].clone()).collect()
}

/// What the endpoints say about themselves before the run.
pub struct Probe {
    pub endpoints: Vec<String>,
    pub server_version: String,
}

/// Asks every endpoint for its Status; with `target_leader`, keeps only the leader.
pub fn probe(g: &Global) -> Result<Probe, String> {
    let g2 = g.clone();
    corekv::client::run_local(move || async move {
        let mut found = Vec::new();
        let mut last_err = String::new();
        for ep in &g2.endpoints {
            let mut opts = crate::tls::options(vec![ep.clone()]);
            opts.dial_timeout = g2.dial_timeout;
            opts.command_timeout = g2.command_timeout;
            match Client::connect(opts).await {
                Ok(c) => match c.status().await {
                    Ok(st) => {
                        let me = st.header.as_ref().map(|h| h.member_id).unwrap_or(0);
                        found.push((ep.clone(), me == st.leader && me != 0, st.version));
                    }
                    Err(e) => last_err = format!("{ep}: status: {e}"),
                },
                Err(e) => last_err = format!("{ep}: {e}"),
            }
        }
        if found.is_empty() {
            return Err(format!("no endpoint answered ({last_err})"));
        }
        let server_version = found[0].2.clone();
        let endpoints = if g2.target_leader {
            match found.iter().find(|f| f.1) {
                Some(f) => vec![f.0.clone()],
                None => return Err("--target-leader: no endpoint reports itself leader".into()),
            }
        } else {
            g2.endpoints.clone()
        };
        Ok(Probe {
            endpoints,
            server_version,
        })
    })
}

/// Runs `f` on `g.client_cores` executors (never more than there are connections), each with
/// its connections dialed, and merges what they return.
pub fn run_executors<F, Fut>(g: &Global, endpoints: &[String], f: F) -> Result<Outcome, String>
where
    F: Fn(ExecCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ExecOut> + 'static,
{
    let executors = g.client_cores.clamp(1, g.conns.max(1));
    let shared = Arc::new(Shared::new(executors));
    let f = Arc::new(f);
    let failed: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let _ = epoch();
    let mut handles = Vec::new();
    for e in 0..executors {
        let f = f.clone();
        let shared = shared.clone();
        let failed = failed.clone();
        let endpoints = endpoints.to_vec();
        let g = g.clone();
        let h = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name(&format!("bench-{e}"))
            .io_memory(512 << 10)
            .spawn(move || async move {
                let mut dials = Vec::new();
                for i in (0..g.conns).filter(|i| i % executors == e) {
                    let mut opts = crate::tls::options(rotated(&endpoints, i));
                    opts.dial_timeout = g.dial_timeout;
                    opts.command_timeout = g.command_timeout;
                    dials.push((i, glommio::spawn_local(Client::connect(opts))));
                }
                let mut conns = Vec::new();
                for (i, d) in dials {
                    match d.await {
                        Ok(c) => conns.push((i, c)),
                        Err(err) => {
                            // Nothing sensible can run with a connection missing.
                            eprintln!("corekv-bench: connection {i}: {err}");
                            *failed.lock().unwrap() = Some(err.to_string());
                            std::process::exit(1);
                        }
                    }
                }
                let ctx = ExecCtx {
                    index: e,
                    g,
                    shared: shared.clone(),
                    conns,
                    barrier_no: Cell::new(0),
                };
                let out = f(ctx).await;
                if shared.finished.fetch_add(1, AcqRel) + 1 == shared.executors {
                    let _ = shared.end_cpu.set(process_cpu());
                }
                out
            })
            .map_err(|e| format!("cannot start a client executor: {e}"))?;
        handles.push(h);
    }

    // The progress bar lives on this thread; executors only bump counters.
    let bar = if g.progress {
        let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
        b.set_style(
            ProgressStyle::with_template(
                "{msg} [{wide_bar}] {human_pos}/{human_len} {elapsed_precise}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        Some(b)
    } else {
        None
    };
    while shared.finished.load(Acquire) < executors {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(b) = &bar {
            b.set_length(shared.bar_len.load(Relaxed));
            b.set_position(shared.progress.load(Relaxed));
            b.set_message(shared.phase.lock().unwrap().clone());
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }

    let mut recs: Vec<(String, Recorder)> = Vec::new();
    let mut counters: Vec<(String, u64)> = Vec::new();
    let mut end: Option<Instant> = None;
    let mut busiest = Duration::ZERO;
    for h in handles {
        let out = h
            .join()
            .map_err(|e| format!("a client executor failed: {e}"))?;
        for (name, r) in out.recs {
            match recs.iter_mut().find(|(n, _)| *n == name) {
                Some((_, mine)) => mine.merge(&r),
                None => recs.push((name, r)),
            }
        }
        for (name, v) in out.counters {
            match counters.iter_mut().find(|(n, _)| *n == name) {
                Some((_, mine)) => *mine += v,
                None => counters.push((name, v)),
            }
        }
        end = end.max(out.end);
        busiest = busiest.max(out.cpu);
    }
    if let Some(err) = failed.lock().unwrap().take() {
        return Err(err);
    }
    let (start, start_cpu) = *shared
        .start
        .get()
        .ok_or("the workload never started measuring")?;
    let duration = end
        .unwrap_or_else(Instant::now)
        .saturating_duration_since(start);
    let end_cpu = shared.end_cpu.get().copied().unwrap_or_else(process_cpu);
    let cpu = end_cpu.saturating_sub(start_cpu).as_secs_f64();
    let wall = duration.as_secs_f64().max(1e-9);
    Ok(Outcome {
        recs,
        counters,
        duration,
        client_cpu: ClientCpu {
            cpu_s: cpu,
            cores_used: cpu / wall,
            busiest_executor: busiest.as_secs_f64() / wall,
            executors,
        },
    })
}
