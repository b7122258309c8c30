//! lease-keepalive: every client holds a lease and a keep-alive stream and sends keep-alives
//! back to back (each waits for its reply), like a fleet of sessions renewing at full speed.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use corekv::proto::etcdserverpb as pb;

use crate::run::{run_executors, thread_cpu, ExecCtx, ExecOut, Global, Outcome, Pacer};
use crate::stats::Recorder;
use crate::unary::{error_kind, Load};

/// Recorder "all": keep-alive round trips.
pub fn run(g: &Global, endpoints: &[String], load: Load, ttl: i64) -> Result<Outcome, String> {
    let clients = g.clients;
    run_executors(g, endpoints, move |ctx: ExecCtx| async move {
        let mine = ctx.mine(clients);
        // Set-up (not measured): a lease and a keep-alive stream per client.
        let mut sessions = Vec::new();
        for (j, client) in &mine {
            let lease = match client
                .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
                .await
            {
                Ok(r) => r.id,
                Err(e) => {
                    eprintln!("corekv-bench: client {j}: lease grant: {e}");
                    std::process::exit(1);
                }
            };
            let stream = match client.lease_keep_alive().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("corekv-bench: client {j}: keep-alive stream: {e}");
                    std::process::exit(1);
                }
            };
            sessions.push((client.clone(), lease, stream));
        }
        let share = mine.len() as f64 / clients as f64;
        let (start, cpu0) = ctx.start_measuring().await;
        if ctx.index == 0 {
            ctx.shared.set_phase(
                "lease-keepalive",
                load.duration.map_or(load.total, |d| d.as_secs()),
            );
        }
        let deadline = load.duration.map(|d| start + d);
        let pacer = Pacer::new(load.rate * share);
        let shared = ctx.shared.clone();
        // One histogram per executor (they are large), shared by its clients.
        let rec = Rc::new(RefCell::new(Recorder::default()));
        let mut tasks = Vec::new();
        for (client, lease, (mut tx, mut rx)) in sessions {
            let shared = shared.clone();
            let pacer: Option<Rc<Pacer>> = pacer.clone();
            let rec = rec.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut last = Instant::now();
                let req = pb::LeaseKeepAliveRequest { id: lease };
                loop {
                    let seq = shared.issued.fetch_add(1, Relaxed);
                    if seq >= load.total || deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    if let Some(p) = &pacer {
                        p.wait().await;
                    }
                    let t = Instant::now();
                    let r = match tx.send(&req).await {
                        Ok(()) => rx.message().await,
                        Err(e) => Err(e),
                    };
                    last = Instant::now();
                    let mut rec = rec.borrow_mut();
                    match r {
                        Ok(Some(resp)) if resp.ttl > 0 => rec.ok(last - t),
                        Ok(Some(_)) => rec.err("lease not found (TTL 0)"),
                        Ok(None) => {
                            rec.err("the server ended the keep-alive stream");
                            break;
                        }
                        Err(e) => {
                            rec.err(error_kind(&e));
                            break;
                        }
                    }
                    drop(rec);
                    if deadline.is_none() {
                        shared.progress.fetch_add(1, Relaxed);
                    }
                }
                tx.close();
                (last, client, lease)
            }));
        }
        let mut out = ExecOut::default();
        let mut end = start;
        let mut leases = Vec::new();
        for t in tasks {
            let (last, client, lease) = t.await;
            end = end.max(last);
            leases.push((client, lease));
        }
        out.end = Some(end);
        out.cpu = thread_cpu().saturating_sub(cpu0);
        out.rec("all").merge(&rec.borrow());
        // Clean up (not measured): leases would otherwise outlive the run by their TTL.
        for (client, id) in leases {
            let _ = futures_lite::future::or(
                async {
                    let _ = client.lease_revoke(pb::LeaseRevokeRequest { id }).await;
                },
                glommio::timer::sleep(Duration::from_secs(2)),
            )
            .await;
        }
        out
    })
}
