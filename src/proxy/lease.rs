//! Lease keep-alive coalescing: keep-alives for one lease from any number of client streams
//! share one upstream request while it is in flight, and every lease shares one upstream
//! keep-alive stream. A client gets a reply for each keep-alive it sent (the upstream's reply
//! to the request that answered it, so the TTL it reports is the cluster's).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use prost::Message;

use super::{Metadata, ProxyMetrics};
use crate::client::Client;
use crate::net::conn::{Incoming, Outgoing};
use crate::net::grpc::{self, Status};
use crate::proto::etcdserverpb as pb;
use crate::proto::path;

/// Replies queued for one client stream; a client this far behind misses replies (a
/// keep-alive reply carries no state a later one does not).
const QUEUE: usize = 256;

pub struct KeepAlives {
    upstream: Client,
    metrics: Arc<ProxyMetrics>,
    /// Leases with a keep-alive in flight upstream, and the client streams waiting for it.
    waiting: RefCell<HashMap<i64, Vec<Rc<LocalSender<Bytes>>>>>,
    /// Lease IDs to send upstream.
    to_send: RefCell<Option<LocalSender<i64>>>,
    running: Cell<bool>,
    me: Weak<KeepAlives>,
}

impl KeepAlives {
    pub fn new(upstream: Client, metrics: Arc<ProxyMetrics>) -> Rc<KeepAlives> {
        Rc::new_cyclic(|me| KeepAlives {
            upstream,
            metrics,
            waiting: RefCell::new(HashMap::new()),
            to_send: RefCell::new(None),
            running: Cell::new(false),
            me: me.clone(),
        })
    }

    /// Serves one client keep-alive stream.
    pub async fn serve(
        &self,
        mut incoming: Incoming,
        outgoing: &mut Outgoing,
        _md: &Metadata,
    ) -> Result<(), Status> {
        let (tx, rx) = local_channel::new_bounded(QUEUE);
        let tx = Rc::new(tx);
        let reader = async {
            while let Some(msg) = incoming.next().await {
                let req: pb::LeaseKeepAliveRequest = crate::api::decode(&msg?)?;
                self.keep_alive(req.id, tx.clone());
            }
            std::future::pending().await
        };
        let writer = async {
            while let Some(frame) = rx.recv().await {
                outgoing.send(frame).await?;
            }
            Ok(())
        };
        futures_lite::future::or(reader, writer).await
    }

    fn keep_alive(&self, id: i64, reply_to: Rc<LocalSender<Bytes>>) {
        let mut waiting = self.waiting.borrow_mut();
        let first = !waiting.contains_key(&id);
        waiting.entry(id).or_default().push(reply_to);
        self.metrics
            .keepalive_leases
            .store(waiting.len() as i64, Relaxed);
        drop(waiting);
        if first {
            self.ensure_running();
            if let Some(tx) = self.to_send.borrow().as_ref() {
                let _ = tx.try_send(id);
            }
        }
    }

    fn ensure_running(&self) {
        if self.running.replace(true) {
            return;
        }
        let (tx, rx) = local_channel::new_unbounded();
        *self.to_send.borrow_mut() = Some(tx);
        let me = self
            .me
            .upgrade()
            .expect("the keep-alives outlive their calls");
        glommio::spawn_local(async move { me.run(rx).await }).detach();
    }

    /// The upstream keep-alive stream, opened again (resending what is in flight) whenever
    /// it breaks.
    async fn run(&self, rx: LocalReceiver<i64>) {
        loop {
            match self.stream(&rx).await {
                Ok(()) => return,
                Err(e) => tracing::debug!("upstream keep-alive stream broke: {e}"),
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stream(&self, rx: &LocalReceiver<i64>) -> Result<(), String> {
        let (mut send, mut recv) = self
            .upstream
            .streaming_raw(path::LEASE_KEEP_ALIVE, &[])
            .await
            .map_err(|e| e.to_string())?;
        self.metrics.upstream_keepalives.store(1, Relaxed);
        let in_flight: Vec<i64> = self.waiting.borrow().keys().copied().collect();
        for id in in_flight {
            let req = pb::LeaseKeepAliveRequest { id };
            send.send_bytes(&req.encode_to_vec())
                .await
                .map_err(|e| e.to_string())?;
        }
        let up = async {
            while let Some(id) = rx.recv().await {
                let req = pb::LeaseKeepAliveRequest { id };
                send.send_bytes(&req.encode_to_vec())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        let down = async {
            loop {
                let msg = match recv.message_bytes().await {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err("the upstream ended the stream".to_string()),
                    Err(e) => return Err(e.to_string()),
                };
                let resp =
                    pb::LeaseKeepAliveResponse::decode(msg.clone()).map_err(|e| e.to_string())?;
                let waiters = self.waiting.borrow_mut().remove(&resp.id);
                let frame = grpc::frame(&msg);
                for w in waiters.into_iter().flatten() {
                    let _ = w.try_send(frame.clone());
                }
                self.metrics
                    .keepalive_leases
                    .store(self.waiting.borrow().len() as i64, Relaxed);
            }
        };
        let r = futures_lite::future::or(up, down).await;
        self.metrics.upstream_keepalives.store(0, Relaxed);
        r
    }
}
