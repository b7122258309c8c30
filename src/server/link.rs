//! The hop between a network executor and the consensus core, in batches both ways.
//!
//! A network executor queues requests locally; one flusher task sends everything queued as a
//! single message over a glommio shared channel, so while one batch crosses, the next one
//! fills. The core answers with one batch of replies per executor per loop. Crossing cores
//! costs tens of microseconds per message (executor unpark), so it is paid per batch, not per
//! request.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use slab::Slab;

use super::message::{Reply, ReplyTo, Request};
use crate::net::grpc::Status;

/// A request on its way to the core, tagged with the slot its reply goes to.
pub struct Envelope {
    pub token: u64,
    pub request: Request,
}

/// What the core sends back to one network executor.
pub type ReplyBatch = Vec<(u64, Reply)>;

enum Slot {
    Waiting(Option<Waker>),
    Done(Reply),
    /// The caller went away (client disconnected); the reply is dropped on arrival.
    Abandoned,
}

#[derive(Default)]
struct Shared {
    queue: Vec<Envelope>,
    flusher: Option<Waker>,
    slots: Slab<Slot>,
    closed: bool,
}

/// The network executor's handle on the consensus core.
pub struct CoreClient {
    executor: u16,
    shared: RefCell<Shared>,
}

impl CoreClient {
    pub fn new(executor: u16) -> Rc<CoreClient> {
        Rc::new(CoreClient {
            executor,
            shared: RefCell::new(Shared::default()),
        })
    }

    pub fn executor(&self) -> u16 {
        self.executor
    }

    /// Sends a request to the core and waits for its reply.
    pub fn call(self: &Rc<Self>, request: Request) -> ReplyFuture {
        let mut sh = self.shared.borrow_mut();
        let token = sh.slots.insert(Slot::Waiting(None)) as u64;
        sh.queue.push(Envelope { token, request });
        if let Some(w) = sh.flusher.take() {
            w.wake();
        }
        ReplyFuture {
            client: self.clone(),
            token,
            done: false,
        }
    }

    /// Sends queued requests to the core, one batch per channel message. Runs as a task.
    pub async fn run_flusher(self: Rc<Self>, to_core: ConnectedSender<(u16, Vec<Envelope>)>) {
        loop {
            let batch = std::future::poll_fn(|cx| {
                let mut sh = self.shared.borrow_mut();
                if !sh.queue.is_empty() {
                    Poll::Ready(Some(std::mem::take(&mut sh.queue)))
                } else if sh.closed {
                    Poll::Ready(None)
                } else {
                    sh.flusher = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            let Some(batch) = batch else { return };
            if to_core.send((self.executor, batch)).await.is_err() {
                self.fail_all(Status::unavailable("etcdserver: server stopped"));
                return;
            }
        }
    }

    /// Hands replies from the core to the waiting callers. Runs as a task.
    pub async fn run_receiver(self: Rc<Self>, from_core: ConnectedReceiver<ReplyBatch>) {
        while let Some(batch) = from_core.recv().await {
            let mut sh = self.shared.borrow_mut();
            for (token, reply) in batch {
                let idx = token as usize;
                match sh.slots.get_mut(idx) {
                    Some(slot @ Slot::Waiting(_)) => {
                        if let Slot::Waiting(Some(w)) = std::mem::replace(slot, Slot::Done(reply)) {
                            w.wake();
                        }
                    }
                    Some(Slot::Abandoned) => {
                        sh.slots.remove(idx);
                    }
                    _ => debug_assert!(false, "reply for unknown token {token}"),
                }
            }
        }
        self.fail_all(Status::unavailable("etcdserver: server stopped"));
    }

    fn fail_all(&self, status: Status) {
        let mut sh = self.shared.borrow_mut();
        sh.closed = true;
        sh.queue.clear();
        for (_, slot) in sh.slots.iter_mut() {
            if let Slot::Waiting(Some(w)) =
                std::mem::replace(slot, Slot::Done(Err(status.clone())))
            {
                w.wake();
            }
        }
    }

    /// Requests in flight (queued or at the core).
    pub fn in_flight(&self) -> usize {
        self.shared.borrow().slots.len()
    }
}

/// Resolves to the core's reply for one request.
pub struct ReplyFuture {
    client: Rc<CoreClient>,
    token: u64,
    done: bool,
}

impl Future for ReplyFuture {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        let idx = self.token as usize;
        let mut sh = self.client.shared.borrow_mut();
        match sh.slots.get_mut(idx) {
            Some(Slot::Waiting(w)) => {
                *w = Some(cx.waker().clone());
                Poll::Pending
            }
            Some(Slot::Done(_)) => {
                let Slot::Done(reply) = sh.slots.remove(idx) else {
                    unreachable!()
                };
                drop(sh);
                self.done = true;
                Poll::Ready(reply)
            }
            _ => unreachable!("reply slot {idx} vanished"),
        }
    }
}

impl Drop for ReplyFuture {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let idx = self.token as usize;
        let mut sh = self.client.shared.borrow_mut();
        match sh.slots.get_mut(idx) {
            Some(Slot::Done(_)) => {
                sh.slots.remove(idx);
            }
            Some(slot) => *slot = Slot::Abandoned,
            None => {}
        }
    }
}

/// Where the core routes a reply for a request that came in an envelope from `executor`.
pub fn reply_to(executor: u16, env: &Envelope) -> ReplyTo {
    ReplyTo {
        executor,
        token: env.token,
    }
}
