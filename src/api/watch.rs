//! The Watch service on a network executor: one task per gRPC stream turns WatchRequests
//! into commands for the core's watch hub and writes the hub's responses back in order.
//!
//! A client that reads slower than events arrive must not hold up writes or other
//! watchers, nor grow a buffer without bound. Each stream queues at most
//! [`QUEUE_LIMIT`] bytes; past that it drops a watcher's live events and remembers the
//! first revision it dropped. Once the client has drained the queue, the stream asks the
//! hub to replay that watcher's events from history, one chunk at a time, until it has
//! caught up — the watcher loses nothing and sees every revision once, in order.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::auth::AuthError;
use crate::net::conn::{Incoming, Outgoing};
use crate::net::grpc::{encode_message, Code, Status};
use crate::proto::etcdserverpb as pb;
use crate::server::link::{CoreClient, WatchSink};
use crate::server::message::{DeliveryKind, Request, WatchCommand, WatchDelivery};

/// Bytes of responses a stream holds for its client before it drops live events.
pub const QUEUE_LIMIT: usize = 4 << 20;
/// Queued responses are sent together up to about this many bytes.
const COALESCE_BYTES: usize = 64 << 10;
/// A stream asks for the next history chunk once its queue is below this.
const RESUME_BELOW: usize = 1 << 20;

/// Where a watcher's events come from right now, as the stream sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Live,
    /// Live events were dropped from this revision on; ask for history once drained.
    Dropped {
        from_rev: i64,
    },
    /// History is being replayed; `next_rev` is asked for once drained, unless asked already.
    CatchingUp {
        next_rev: i64,
        asked: bool,
    },
}

/// What a stream's sender does next.
enum Next {
    /// Send these encoded responses.
    Send(Bytes),
    /// A watcher's flow changed: see whether a resync is due.
    Check,
    /// The core is gone.
    Closed,
}

#[derive(Default)]
struct StreamState {
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    flows: HashMap<i64, Flow>,
    /// A flow changed: the sender should see whether a resync is due.
    check: bool,
    waker: Option<Waker>,
    closed: bool,
}

impl StreamState {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn set_flow(&mut self, watch_id: i64, flow: Flow) {
        self.flows.insert(watch_id, flow);
        if flow != Flow::Live {
            self.check = true;
            self.wake();
        }
    }
}

/// One watch stream's buffer, shared by the receiver (fed by the core) and the sender task.
#[derive(Default)]
struct WatchStream {
    state: RefCell<StreamState>,
}

impl WatchStream {
    fn push(&self, bytes: Bytes) {
        let mut st = self.state.borrow_mut();
        st.queued_bytes += bytes.len();
        st.queue.push_back(bytes);
        st.wake();
    }

    /// Queues a response, split into fragments when the watcher asked for that and it is
    /// larger than the request limit (as etcd's sendFragments splits).
    fn push_response(&self, resp: &pb::WatchResponse, fragment: bool, max_bytes: usize) {
        if !fragment || resp.events.len() < 2 || resp.encoded_len() < max_bytes {
            self.push(encode_message(resp));
            return;
        }
        let mut cur = pb::WatchResponse {
            events: Vec::new(),
            fragment: true,
            ..resp.clone()
        };
        let mut size = cur.encoded_len();
        for (i, ev) in resp.events.iter().enumerate() {
            let add = ev.encoded_len() + 4;
            if !cur.events.is_empty() && size + add >= max_bytes {
                self.push(encode_message(&cur));
                cur.events.clear();
                size = cur.encoded_len();
            }
            cur.events.push(ev.clone());
            size += add;
            if i + 1 == resp.events.len() {
                cur.fragment = false;
                self.push(encode_message(&cur));
            }
        }
    }

    fn deliver(&self, d: WatchDelivery, max_bytes: usize) {
        let watch_id = d.response.watch_id;
        let flow = self.state.borrow().flows.get(&watch_id).copied();
        match d.kind {
            DeliveryKind::Control => {
                let mut st = self.state.borrow_mut();
                if d.response.canceled {
                    st.flows.remove(&watch_id);
                } else if d.response.created {
                    st.flows.insert(watch_id, Flow::Live);
                }
                drop(st);
                self.push_response(&d.response, d.fragment, max_bytes);
            }
            DeliveryKind::Live => {
                if flow != Some(Flow::Live) {
                    return; // history replay will cover it
                }
                let over = self.state.borrow().queued_bytes >= QUEUE_LIMIT;
                if over {
                    let from_rev = d
                        .response
                        .events
                        .first()
                        .and_then(|e| e.kv.as_ref())
                        .map_or(0, |kv| kv.mod_revision);
                    self.state
                        .borrow_mut()
                        .set_flow(watch_id, Flow::Dropped { from_rev });
                } else {
                    self.push_response(&d.response, d.fragment, max_bytes);
                }
            }
            DeliveryKind::CatchUp { next_rev } => {
                if flow.is_none() {
                    return;
                }
                self.state.borrow_mut().set_flow(
                    watch_id,
                    Flow::CatchingUp {
                        next_rev,
                        asked: false,
                    },
                );
                if !d.response.events.is_empty() {
                    self.push_response(&d.response, d.fragment, max_bytes);
                }
            }
            DeliveryKind::CaughtUp => {
                if flow.is_none() {
                    return;
                }
                self.state.borrow_mut().set_flow(watch_id, Flow::Live);
                if !d.response.events.is_empty() {
                    self.push_response(&d.response, d.fragment, max_bytes);
                }
            }
        }
    }

    /// The next thing the stream's sender must do: send queued responses (up to about
    /// `coalesce` bytes of them together; 0 takes one), look whether a resync is due, or end.
    /// Many small responses go out as one DATA frame: fewer writes, and clients' HTTP/2
    /// stacks limit how many small frames they buffer.
    fn poll_next(&self, cx: &mut std::task::Context<'_>, coalesce: usize) -> Poll<Next> {
        let mut st = self.state.borrow_mut();
        if let Some(first) = st.queue.pop_front() {
            let mut batch = BytesMut::from(first.as_ref());
            while batch.len() < coalesce {
                let Some(next) = st.queue.pop_front() else {
                    break;
                };
                batch.extend_from_slice(&next);
            }
            st.queued_bytes -= batch.len();
            Poll::Ready(Next::Send(batch.freeze()))
        } else if st.closed {
            Poll::Ready(Next::Closed)
        } else if std::mem::take(&mut st.check) {
            Poll::Ready(Next::Check)
        } else {
            st.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Asks the hub for the history of the watchers that dropped live events, once the
    /// queue has room for it.
    fn ask_resyncs(&self, core: &CoreClient, stream: u64) {
        for (watch_id, from_rev) in self.resyncs_due() {
            core.send(Request::Watch {
                stream,
                command: WatchCommand::Resync { watch_id, from_rev },
            });
        }
    }

    /// Watchers ready to be replayed from history now that the queue has room.
    fn resyncs_due(&self) -> Vec<(i64, i64)> {
        let mut st = self.state.borrow_mut();
        if st.queued_bytes >= RESUME_BELOW {
            return Vec::new();
        }
        let mut due = Vec::new();
        for (id, flow) in st.flows.iter_mut() {
            match *flow {
                Flow::Dropped { from_rev } => {
                    due.push((*id, from_rev));
                    *flow = Flow::CatchingUp {
                        next_rev: from_rev,
                        asked: true,
                    };
                }
                Flow::CatchingUp {
                    next_rev,
                    asked: false,
                } => {
                    due.push((*id, next_rev));
                    *flow = Flow::CatchingUp {
                        next_rev,
                        asked: true,
                    };
                }
                _ => {}
            }
        }
        due
    }
}

/// This executor's watch streams, by stream id.
pub struct WatchStreams {
    streams: RefCell<HashMap<u64, Rc<WatchStream>>>,
    next_id: std::cell::Cell<u64>,
    /// Responses larger than this are split for watchers that asked (--max-request-bytes).
    max_response_bytes: usize,
}

impl WatchSink for WatchStreams {
    fn deliver(&self, d: WatchDelivery) {
        let stream = self.streams.borrow().get(&d.stream).cloned();
        if let Some(s) = stream {
            s.deliver(d, self.max_response_bytes);
        }
    }

    fn close_all(&self) {
        for s in self.streams.borrow().values() {
            let mut st = s.state.borrow_mut();
            st.closed = true;
            st.wake();
        }
    }
}

impl WatchStreams {
    pub fn new(max_response_bytes: usize) -> WatchStreams {
        WatchStreams {
            streams: RefCell::new(HashMap::new()),
            next_id: std::cell::Cell::new(0),
            max_response_bytes,
        }
    }

    fn open(&self) -> (u64, Rc<WatchStream>) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let s = Rc::new(WatchStream::default());
        self.streams.borrow_mut().insert(id, s.clone());
        (id, s)
    }

    fn close(&self, id: u64) {
        self.streams.borrow_mut().remove(&id);
    }
}

/// etcd's isWatchPermitted, on the key and range end as etcd's watch stream normalises
/// them first: an empty key is "\0", and a range end of "\0" (every key from the key on)
/// becomes empty, so that case is checked as the single key. Err is the cancel reason.
fn check_create(
    api: &super::Api,
    caller: &super::auth::Caller,
    c: &pb::WatchCreateRequest,
) -> Result<(), String> {
    // etcd sends the text of the gRPC error, as Go prints one.
    let reason = |e: AuthError| format!("rpc error: code = {:?} desc = {e}", e.code());
    let info = api
        .auth_info(caller)
        .map_err(|_| reason(AuthError::InvalidAuthToken))?;
    let key: &[u8] = if c.key.is_empty() { b"\0" } else { &c.key };
    let end: &[u8] = if c.range_end.as_ref() == b"\0" {
        b""
    } else {
        &c.range_end
    };
    api.auth
        .view()
        .check_range(info.as_ref(), key, end)
        .map_err(reason)
}

/// What a watch creation becomes at the hub: the watch, or (not permitted) its refusal.
pub fn create_command(
    api: &super::Api,
    caller: &super::auth::Caller,
    c: pb::WatchCreateRequest,
) -> WatchCommand {
    match check_create(api, caller, &c) {
        Ok(()) => WatchCommand::Create(c),
        Err(reason) => WatchCommand::Refuse(reason),
    }
}

/// Serves one Watch stream until the client ends it or goes away.
pub async fn serve(
    api: &super::Api,
    caller: &super::auth::Caller,
    mut incoming: Incoming,
    outgoing: &mut Outgoing,
) -> Result<(), Status> {
    let core = &api.core;
    let streams = &api.watch_streams;
    let (id, stream) = streams.open();
    let command = |command| Request::Watch {
        stream: id,
        command,
    };
    let receive = async {
        while let Some(msg) = incoming.next().await {
            let req = pb::WatchRequest::decode(msg?).map_err(|e| {
                Status::new(
                    Code::Internal,
                    format!("grpc: error unmarshalling request: {e}"),
                )
            })?;
            use pb::watch_request::RequestUnion as U;
            match req.request_union {
                Some(U::CreateRequest(c)) => core.send(command(create_command(api, caller, c))),
                Some(U::CancelRequest(c)) => core.send(command(WatchCommand::Cancel(c.watch_id))),
                Some(U::ProgressRequest(_)) => core.send(command(WatchCommand::Progress)),
                None => {}
            }
        }
        Ok(())
    };
    let send = async {
        loop {
            match std::future::poll_fn(|cx| stream.poll_next(cx, COALESCE_BYTES)).await {
                Next::Closed => return Err(Status::unavailable("etcdserver: server stopped")),
                Next::Send(bytes) => outgoing.send(bytes).await?,
                Next::Check => {}
            }
            stream.ask_resyncs(core, id);
        }
    };
    // The stream ends when the client half-closes or either side fails.
    let result = futures_lite::future::or(receive, send).await;
    core.send(command(WatchCommand::Close));
    streams.close(id);
    result
}

/// A watch the server keeps for itself (the lock and election services wait with these, as
/// etcd's do with a client watch): one watcher at the core's hub, on a stream of its own that
/// is fed, bounded and caught up like a client's. Dropping it removes the watcher.
pub struct OwnWatch {
    core: Rc<CoreClient>,
    streams: Rc<WatchStreams>,
    id: u64,
    stream: Rc<WatchStream>,
}

impl OwnWatch {
    /// Creates the watcher (or refuses it: `command` is a Create or a Refuse); its first
    /// response is the `created` one.
    pub fn open(
        core: &Rc<CoreClient>,
        streams: &Rc<WatchStreams>,
        command: WatchCommand,
    ) -> OwnWatch {
        let (id, stream) = streams.open();
        core.send(Request::Watch {
            stream: id,
            command,
        });
        OwnWatch {
            core: core.clone(),
            streams: streams.clone(),
            id,
            stream,
        }
    }

    /// The next response, in the order the hub sent them.
    pub async fn next(&mut self) -> Result<pb::WatchResponse, Status> {
        loop {
            let next = std::future::poll_fn(|cx| self.stream.poll_next(cx, 0)).await;
            self.stream.ask_resyncs(&self.core, self.id);
            match next {
                Next::Closed => return Err(Status::unavailable("etcdserver: server stopped")),
                Next::Check => {}
                Next::Send(framed) => {
                    return pb::WatchResponse::decode(&framed[crate::net::grpc::PREFIX_LEN..])
                        .map_err(|e| Status::internal(e.to_string()));
                }
            }
        }
    }
}

impl Drop for OwnWatch {
    fn drop(&mut self) {
        self.core.send(Request::Watch {
            stream: self.id,
            command: WatchCommand::Close,
        });
        self.streams.close(self.id);
    }
}
