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

use super::message::{Reply, Request, WatchDelivery};
use crate::net::grpc::Status;

/// A request on its way to the core, tagged with the slot its reply goes to.
pub struct Envelope {
    pub token: u64,
    pub request: Request,
}

const STOPPED: &str = "etcdserver: server stopped";

/// What the core sends to a network executor.
pub enum ToNet {
    /// The answer for the request in slot `token`.
    Reply(u64, Reply),
    Watch(WatchDelivery),
}

/// Requests sent without a reply slot (watch commands) carry this token.
pub const NO_REPLY: u64 = u64::MAX;

/// What the core sends to one network executor in one message.
pub type ReplyBatch = Vec<ToNet>;

enum Slot {
    Waiting(Option<Waker>),
    Done(Reply),
    /// The caller went away (client disconnected); the reply is dropped on arrival.
    Abandoned,
}

/// Items queued on one executor for another, sent as one channel message per batch.
pub struct BatchQueue<T> {
    inner: RefCell<QueueInner<T>>,
}

struct QueueInner<T> {
    items: Vec<T>,
    waker: Option<Waker>,
    closed: bool,
}

impl<T: Send + 'static> BatchQueue<T> {
    pub fn new() -> BatchQueue<T> {
        BatchQueue {
            inner: RefCell::new(QueueInner {
                items: Vec::new(),
                waker: None,
                closed: false,
            }),
        }
    }

    pub fn push(&self, item: T) {
        let mut q = self.inner.borrow_mut();
        q.items.push(item);
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }

    /// Stops the sender task once what is queued has gone.
    pub fn close(&self) {
        let mut q = self.inner.borrow_mut();
        q.closed = true;
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }

    /// Everything queued so far, once there is something; None once closed and drained.
    pub async fn next_batch(&self) -> Option<Vec<T>> {
        std::future::poll_fn(|cx| {
            let mut q = self.inner.borrow_mut();
            if !q.items.is_empty() {
                Poll::Ready(Some(std::mem::take(&mut q.items)))
            } else if q.closed {
                Poll::Ready(None)
            } else {
                q.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Sends everything queued as one message whenever the channel takes one; while a send
    /// waits for room, new items join the next batch. Returns when the receiver is gone.
    pub async fn run_sender(&self, to: ConnectedSender<Vec<T>>) {
        while let Some(batch) = self.next_batch().await {
            if to.send(batch).await.is_err() {
                return;
            }
        }
    }
}

impl<T: Send + 'static> Default for BatchQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Default)]
struct Shared {
    slots: Slab<Slot>,
    closed: bool,
}

/// Receives the core's responses for this executor's watch streams.
pub trait WatchSink {
    fn deliver(&self, delivery: WatchDelivery);
    /// The core is gone: end every stream.
    fn close_all(&self);
}

/// The network executor's handle on the consensus core.
pub struct CoreClient {
    executor: u16,
    queue: BatchQueue<Envelope>,
    shared: RefCell<Shared>,
    watch_sink: RefCell<Option<Rc<dyn WatchSink>>>,
}

impl CoreClient {
    pub fn new(executor: u16) -> Rc<CoreClient> {
        Rc::new(CoreClient {
            executor,
            queue: BatchQueue::new(),
            shared: RefCell::new(Shared::default()),
            watch_sink: RefCell::new(None),
        })
    }

    pub fn executor(&self) -> u16 {
        self.executor
    }

    pub fn set_watch_sink(&self, sink: Rc<dyn WatchSink>) {
        *self.watch_sink.borrow_mut() = Some(sink);
    }

    /// Sends a request that gets no reply by token (a watch command).
    pub fn send(&self, request: Request) {
        if !self.shared.borrow().closed {
            self.queue.push(Envelope {
                token: NO_REPLY,
                request,
            });
        }
    }

    /// Sends a request to the core and waits for its reply.
    pub fn call(self: &Rc<Self>, request: Request) -> ReplyFuture {
        let mut sh = self.shared.borrow_mut();
        if sh.closed {
            let token =
                sh.slots
                    .insert(Slot::Done(Err(Status::unavailable(STOPPED)))) as u64;
            return ReplyFuture {
                client: self.clone(),
                token,
                done: false,
            };
        }
        let token = sh.slots.insert(Slot::Waiting(None)) as u64;
        self.queue.push(Envelope { token, request });
        ReplyFuture {
            client: self.clone(),
            token,
            done: false,
        }
    }

    /// Sends queued requests to the core in batches. Runs as a task.
    pub async fn run_sender(self: Rc<Self>, to_core: ConnectedSender<Vec<Envelope>>) {
        self.queue.run_sender(to_core).await;
        self.fail_all(Status::unavailable(STOPPED));
    }

    /// Hands replies from a remote core to the waiting callers. Runs as a task.
    pub async fn run_receiver(self: Rc<Self>, from_core: ConnectedReceiver<ReplyBatch>) {
        while let Some(batch) = from_core.recv().await {
            self.deliver(batch);
        }
        self.stop();
    }

    /// Requests for a core running on this same executor, batch by batch.
    pub async fn next_requests(&self) -> Option<Vec<Envelope>> {
        self.queue.next_batch().await
    }

    /// Hands a batch of the core's answers to the waiting callers and watch streams.
    pub fn deliver(&self, batch: ReplyBatch) {
        let sink = self.watch_sink.borrow().clone();
        let mut sh = self.shared.borrow_mut();
        for item in batch {
            let (token, reply) = match item {
                ToNet::Reply(token, reply) => (token, reply),
                ToNet::Watch(d) => {
                    if let Some(sink) = &sink {
                        sink.deliver(d);
                    }
                    continue;
                }
            };
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

    /// The core is gone: every caller and stream gets "server stopped".
    pub fn stop(&self) {
        if let Some(sink) = self.watch_sink.borrow().clone() {
            sink.close_all();
        }
        self.fail_all(Status::unavailable(STOPPED));
    }

    fn fail_all(&self, status: Status) {
        let mut sh = self.shared.borrow_mut();
        sh.closed = true;
        self.queue.close();
        for (_, slot) in sh.slots.iter_mut() {
            if let Slot::Waiting(Some(w)) = std::mem::replace(slot, Slot::Done(Err(status.clone())))
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
