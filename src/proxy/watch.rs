//! Watch coalescing: client watchers of one key or range share one upstream watcher.
//!
//! A [`Broadcast`] is one upstream watcher (its own upstream watch stream, so HTTP/2 flow
//! control paces each one alone) and the client watchers ([`Receiver`]s) it serves. It
//! watches from `nextrev`, the lowest revision any of its receivers still needs, with prev_kv
//! (for those who want it) and progress notifications. Invariant: every receiver's own
//! `nextrev` is >= its broadcast's, so the broadcast's events are a superset of what each
//! needs; each receiver takes the events at or above its own `nextrev` (no duplicate, no
//! gap), applies its filters and drops prev_kv if it did not ask for it.
//!
//! - A new watcher joins a broadcast of its range that already serves its start revision
//!   (start 0 = "now": the broadcast's next revision; etcd's proxy does the same), and
//!   gets a created reply at once; or a broadcast still waiting for its own created reply
//!   with the same start. Otherwise it gets a new broadcast from its start revision, which
//!   merges into an older one of the same range once it has caught up with it.
//! - A slow client never delays the others: replies go into each client stream's bounded
//!   queue without waiting. A receiver whose queue is full leaves its broadcast for a solo
//!   one that watches upstream from the receiver's own `nextrev` and waits for the client
//!   (so nothing is lost); it merges back once it has caught up and its queue has room.
//! - When the upstream stream breaks (its member died), the broadcast watches again from
//!   `nextrev` through the next endpoint: every client resumes where it was.
//! - A reply the same for many receivers (no filters, nothing below their `nextrev`) is
//!   encoded once per prev_kv choice; each receiver's copy only adds its watch ID.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use prost::Message;

use super::namespace::Namespace;
use super::{to_status, Metadata, ProxyMetrics};
use crate::client::Client;
use crate::net::conn::{Incoming, Outgoing};
use crate::net::grpc::{Status, PREFIX_LEN};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::{event::EventType, Event};
use crate::proto::path;

/// Replies queued for one client stream before its watchers count as slow.
const QUEUE: usize = 1024;
/// A broadcast this small looks for an older one to merge into (etcd's maxCoalesceReceivers).
const MERGE_BELOW: usize = 5;

type Range = (Bytes, Bytes);

/// One client watch stream.
struct ClientStream {
    tx: LocalSender<Bytes>,
    watchers: RefCell<HashMap<i64, Rc<Receiver>>>,
    next_id: Cell<i64>,
}

/// One client watcher.
struct Receiver {
    id: i64,
    /// The lowest revision it still needs; 0 until its watch is created ("now").
    nextrev: Cell<i64>,
    created: Cell<bool>,
    prev_kv: bool,
    progress: bool,
    no_put: bool,
    no_delete: bool,
    stream: Rc<ClientStream>,
    bcast: RefCell<Option<Rc<Broadcast>>>,
}

impl Receiver {
    fn plain(&self) -> bool {
        !self.no_put && !self.no_delete
    }
}

struct Broadcast {
    range: Range,
    /// The metadata (token) of the client whose watcher opened it.
    md: Metadata,
    /// Serves one slow receiver, waiting for it; nobody joins it.
    solo: bool,
    st: RefCell<BState>,
    task: RefCell<Option<glommio::task::JoinHandle<()>>>,
}

struct BState {
    /// The revision the upstream watch was first asked from (0: now).
    start: i64,
    /// The lowest revision a receiver may still need; 0 until created for a "now" watch.
    nextrev: i64,
    started: bool,
    closed: bool,
    header: pb::ResponseHeader,
    receivers: Vec<Rc<Receiver>>,
}

pub struct Hub {
    upstream: Client,
    ns: Rc<Namespace>,
    metrics: Arc<ProxyMetrics>,
    ranges: RefCell<HashMap<Range, Vec<Rc<Broadcast>>>>,
    me: Weak<Hub>,
}

fn frame_with_id(id: i64, body: &[u8]) -> Bytes {
    // Field 2 (watch_id), varint; fields may come in any order in a protobuf message.
    let mut id_field = BytesMut::with_capacity(11);
    if id != 0 {
        id_field.put_u8(0x10);
        prost::encoding::encode_varint(id as u64, &mut id_field);
    }
    let len = id_field.len() + body.len();
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    buf.extend_from_slice(&id_field);
    buf.extend_from_slice(body);
    buf.freeze()
}

fn encode(resp: &pb::WatchResponse) -> Bytes {
    crate::net::grpc::encode_message(resp)
}

impl Hub {
    pub fn new(upstream: Client, ns: Rc<Namespace>, metrics: Arc<ProxyMetrics>) -> Rc<Hub> {
        Rc::new_cyclic(|me| Hub {
            upstream,
            ns,
            metrics,
            ranges: RefCell::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// Serves one client watch stream until either side ends it.
    pub async fn serve(
        &self,
        mut incoming: Incoming,
        outgoing: &mut Outgoing,
        md: &Metadata,
    ) -> Result<(), Status> {
        let (tx, rx) = local_channel::new_bounded(QUEUE);
        let cs = Rc::new(ClientStream {
            tx,
            watchers: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
        });
        let reader = async {
            while let Some(msg) = incoming.next().await {
                let req: pb::WatchRequest = crate::api::decode(&msg?)?;
                self.request(&cs, req, md).await?;
            }
            // A client that half-closes keeps getting its events, as from a member.
            std::future::pending().await
        };
        let result = futures_lite::future::or(reader, write(rx, outgoing)).await;
        let ids: Vec<i64> = cs.watchers.borrow().keys().copied().collect();
        for id in ids {
            self.remove(&cs, id);
        }
        result
    }

    async fn request(
        &self,
        cs: &Rc<ClientStream>,
        req: pb::WatchRequest,
        md: &Metadata,
    ) -> Result<(), Status> {
        use pb::watch_request::RequestUnion as U;
        match req.request_union {
            Some(U::CreateRequest(c)) => self.create(cs, c, md).await,
            Some(U::CancelRequest(c)) => {
                if let Some(r) = self.remove(cs, c.watch_id) {
                    let header = r_header(&r);
                    let resp = pb::WatchResponse {
                        header: Some(header),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    let _ = cs.tx.send(encode(&resp)).await;
                }
                Ok(())
            }
            Some(U::ProgressRequest(_)) => {
                // Every event below each broadcast's next revision is queued ahead of this
                // reply, so the lowest of them, minus one, is a revision this stream has seen
                // everything up to. Without watchers, the cluster's revision.
                let lowest = cs
                    .watchers
                    .borrow()
                    .values()
                    .filter_map(|r| {
                        let b = r.bcast.borrow().clone()?;
                        let st = b.st.borrow();
                        st.started.then(|| (st.nextrev - 1, st.header))
                    })
                    .min_by_key(|(rev, _)| *rev);
                let header = match lowest {
                    Some((rev, mut h)) => {
                        h.revision = rev;
                        h
                    }
                    None => {
                        let s = self.upstream.status().await.map_err(to_status)?;
                        s.header.unwrap_or_default()
                    }
                };
                let resp = pb::WatchResponse {
                    header: Some(header),
                    watch_id: -1,
                    ..Default::default()
                };
                let _ = cs.tx.send(encode(&resp)).await;
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn create(
        &self,
        cs: &Rc<ClientStream>,
        c: pb::WatchCreateRequest,
        md: &Metadata,
    ) -> Result<(), Status> {
        let refuse = |reason: &str| {
            encode(&pb::WatchResponse {
                header: Some(pb::ResponseHeader::default()),
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: reason.into(),
                ..Default::default()
            })
        };
        let (key, end) = if c.key.is_empty() && c.range_end.as_ref() != [0] && !self.ns.is_empty() {
            // etcd's namespace has no empty key either.
            let _ = cs.tx.send(refuse("etcdserver: key is not provided")).await;
            return Ok(());
        } else {
            self.ns.interval(&c.key, &c.range_end)
        };
        if !end.is_empty() && end.as_ref() != [0] && key >= end {
            let _ = cs.tx.send(refuse("mvcc: watcher range is empty")).await;
            return Ok(());
        }
        // With a token the watcher must be allowed to read its range, as etcd's proxy checks.
        if md.iter().any(|(n, _)| n == "token") {
            let check = pb::RangeRequest {
                key: key.clone(),
                range_end: end.clone(),
                serializable: true,
                count_only: true,
                limit: 1,
                ..Default::default()
            };
            let body = super::namespace::body(&check);
            if let Err(e) = self.upstream.unary_raw(path::RANGE, body, md).await {
                let _ = cs.tx.send(refuse(&to_status(e).message)).await;
                return Ok(());
            }
        }
        let id = if c.watch_id == 0 {
            let mut id = cs.next_id.get();
            while cs.watchers.borrow().contains_key(&id) {
                id += 1;
            }
            cs.next_id.set(id + 1);
            id
        } else if cs.watchers.borrow().contains_key(&c.watch_id) {
            let _ = cs
                .tx
                .send(refuse(
                    "mvcc: duplicate watch ID provided on the WatchStream",
                ))
                .await;
            return Ok(());
        } else {
            c.watch_id
        };
        use pb::watch_create_request::FilterType;
        let r = Rc::new(Receiver {
            id,
            nextrev: Cell::new(c.start_revision.max(0)),
            created: Cell::new(false),
            prev_kv: c.prev_kv,
            progress: c.progress_notify,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            stream: cs.clone(),
            bcast: RefCell::new(None),
        });
        cs.watchers.borrow_mut().insert(id, r.clone());
        self.metrics.watchers.fetch_add(1, Relaxed);
        self.add(r, (key, end), md);
        Ok(())
    }

    /// Puts a new receiver into a broadcast that can serve it, or a new one.
    fn add(&self, r: Rc<Receiver>, range: Range, md: &Metadata) {
        let start = r.nextrev.get();
        let list = self
            .ranges
            .borrow()
            .get(&range)
            .cloned()
            .unwrap_or_default();
        let mut full = false;
        for b in list {
            if b.solo {
                continue;
            }
            let mut st = b.st.borrow_mut();
            if st.closed {
                continue;
            }
            if st.started && (start == 0 || st.nextrev <= start) {
                let mut header = st.header;
                header.revision = st.nextrev - 1;
                let created = encode(&pb::WatchResponse {
                    header: Some(header),
                    watch_id: r.id,
                    created: true,
                    ..Default::default()
                });
                if r.stream.tx.try_send(created).is_err() {
                    // Its client is not reading: it gets a broadcast of its own.
                    full = true;
                    break;
                }
                r.created.set(true);
                if start == 0 {
                    r.nextrev.set(st.nextrev);
                }
                st.receivers.push(r.clone());
                drop(st);
                *r.bcast.borrow_mut() = Some(b.clone());
                return;
            }
            if !st.started && st.start == start {
                st.receivers.push(r.clone());
                drop(st);
                *r.bcast.borrow_mut() = Some(b.clone());
                return;
            }
        }
        self.open(range, start, vec![r], full, md.clone());
    }

    /// A new broadcast from `start` for `receivers`.
    fn open(
        &self,
        range: Range,
        start: i64,
        receivers: Vec<Rc<Receiver>>,
        solo: bool,
        md: Metadata,
    ) {
        let b = Rc::new(Broadcast {
            range: range.clone(),
            md: md.clone(),
            solo,
            st: RefCell::new(BState {
                start,
                nextrev: start,
                started: false,
                closed: false,
                header: Default::default(),
                receivers: receivers.clone(),
            }),
            task: RefCell::new(None),
        });
        for r in &receivers {
            *r.bcast.borrow_mut() = Some(b.clone());
        }
        self.ranges
            .borrow_mut()
            .entry(range)
            .or_default()
            .push(b.clone());
        self.metrics.upstream_watchers.fetch_add(1, Relaxed);
        let hub = self.me.upgrade().expect("the hub outlives its calls");
        let task = glommio::spawn_local(hub.run(b.clone(), md)).detach();
        *b.task.borrow_mut() = Some(task);
    }

    /// Takes watcher `id` out of its stream and its broadcast (stopping the broadcast if it
    /// was the last).
    fn remove(&self, cs: &ClientStream, id: i64) -> Option<Rc<Receiver>> {
        let r = cs.watchers.borrow_mut().remove(&id)?;
        self.metrics.watchers.fetch_sub(1, Relaxed);
        if let Some(b) = r.bcast.borrow_mut().take() {
            let empty = {
                let mut st = b.st.borrow_mut();
                st.receivers.retain(|x| !Rc::ptr_eq(x, &r));
                st.receivers.is_empty()
            };
            if empty {
                self.close(&b);
                if let Some(t) = b.task.borrow_mut().take() {
                    t.cancel();
                }
            }
        }
        Some(r)
    }

    /// Marks a broadcast closed and forgets it (its task ends or is cancelled).
    fn close(&self, b: &Rc<Broadcast>) {
        let mut st = b.st.borrow_mut();
        if st.closed {
            return;
        }
        st.closed = true;
        drop(st);
        self.metrics.upstream_watchers.fetch_sub(1, Relaxed);
        let mut ranges = self.ranges.borrow_mut();
        if let Some(list) = ranges.get_mut(&b.range) {
            list.retain(|x| !Rc::ptr_eq(x, b));
            if list.is_empty() {
                ranges.remove(&b.range);
            }
        }
    }

    /// The broadcast's upstream watcher, opened again from `nextrev` whenever it breaks.
    async fn run(self: Rc<Self>, b: Rc<Broadcast>, md: Metadata) {
        let mut pause = Duration::from_millis(50);
        loop {
            let from = {
                let st = b.st.borrow();
                if st.closed {
                    break;
                }
                if st.started {
                    st.nextrev
                } else {
                    st.start
                }
            };
            match self.watch_upstream(&b, from, &md).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::debug!("upstream watch broke ({e}); watching again from {from}");
                }
            }
            glommio::timer::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        self.close(&b);
        b.task.borrow_mut().take();
    }

    /// One upstream watch stream: Ok when the broadcast is done, Err when the stream broke.
    async fn watch_upstream(
        &self,
        b: &Rc<Broadcast>,
        from: i64,
        md: &Metadata,
    ) -> Result<(), String> {
        let (mut send, mut recv) = self
            .upstream
            .streaming_raw(path::WATCH, md)
            .await
            .map_err(|e| e.to_string())?;
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: b.range.0.clone(),
                    range_end: b.range.1.clone(),
                    start_revision: from,
                    progress_notify: true,
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        };
        send.send_bytes(&create.encode_to_vec())
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let msg = match recv.message_bytes().await {
                Ok(Some(m)) => m,
                Ok(None) => return Err("the upstream ended the watch".into()),
                Err(e) => return Err(e.to_string()),
            };
            let mut resp = pb::WatchResponse::decode(msg).map_err(|e| e.to_string())?;
            if resp.canceled {
                self.cancel_all(b, &resp).await;
                return Ok(());
            }
            if resp.created {
                self.created(b, &resp).await;
                continue;
            }
            for ev in &mut resp.events {
                if let Some(kv) = &mut ev.kv {
                    self.ns.strip_kv(kv);
                }
                if let Some(kv) = &mut ev.prev_kv {
                    self.ns.strip_kv(kv);
                }
            }
            self.deliver(b, &resp).await;
            if b.st.borrow().closed {
                return Ok(());
            }
            if self.merge(b) {
                return Ok(());
            }
        }
    }

    /// The upstream's created reply: the first one is every waiting receiver's; one after
    /// a failover is not news to anyone.
    async fn created(&self, b: &Rc<Broadcast>, resp: &pb::WatchResponse) {
        let header = resp.header.unwrap_or_default();
        let receivers = {
            let mut st = b.st.borrow_mut();
            st.header = header;
            if st.started {
                return;
            }
            st.started = true;
            if st.nextrev == 0 {
                st.nextrev = header.revision + 1;
            }
            st.receivers.clone()
        };
        for r in receivers {
            if r.created.replace(true) {
                continue;
            }
            if r.nextrev.get() == 0 {
                r.nextrev.set(header.revision + 1);
            }
            let reply = encode(&pb::WatchResponse {
                header: Some(header),
                watch_id: r.id,
                created: true,
                ..Default::default()
            });
            if !self.push(b, &r, reply).await {
                // Its solo broadcast sends the created reply when it has its own.
                r.created.set(false);
                self.lag(b, &r);
            }
        }
    }

    /// The upstream cancelled the watch (a compacted start revision, a revoked permission):
    /// so is every receiver's.
    async fn cancel_all(&self, b: &Rc<Broadcast>, resp: &pb::WatchResponse) {
        let receivers = std::mem::take(&mut b.st.borrow_mut().receivers);
        self.close(b);
        for r in receivers {
            r.bcast.borrow_mut().take();
            if r.stream.watchers.borrow_mut().remove(&r.id).is_some() {
                self.metrics.watchers.fetch_sub(1, Relaxed);
            }
            let mut reply = resp.clone();
            reply.watch_id = r.id;
            reply.created = !r.created.get();
            let _ = r.stream.tx.send(encode(&reply)).await;
        }
    }

    /// Events (or a progress notification) to every receiver that needs them.
    async fn deliver(&self, b: &Rc<Broadcast>, resp: &pb::WatchResponse) {
        let header = resp.header.unwrap_or_default();
        let receivers = {
            let mut st = b.st.borrow_mut();
            st.header = header;
            let next = match resp.events.last().and_then(|e| e.kv.as_ref()) {
                Some(kv) => kv.mod_revision + 1,
                // A progress notification: everything up to its revision was sent.
                None => header.revision + 1,
            };
            st.nextrev = st.nextrev.max(next);
            st.receivers.clone()
        };
        let first = resp
            .events
            .first()
            .and_then(|e| e.kv.as_ref())
            .map_or(i64::MAX, |kv| kv.mod_revision);
        // The shared encodings (without a watch ID), with and without prev_kv.
        let mut shared: [Option<Bytes>; 2] = [None, None];
        let mut sent = 0i64;
        for r in receivers {
            if !r.created.get() {
                continue;
            }
            let before = r.nextrev.get();
            let reply = if resp.events.is_empty() {
                if !r.progress {
                    continue;
                }
                r.nextrev.set(r.nextrev.get().max(header.revision + 1));
                encode(&pb::WatchResponse {
                    header: Some(header),
                    watch_id: r.id,
                    ..Default::default()
                })
            } else if r.nextrev.get() <= first && r.plain() {
                let last = resp.events.last().and_then(|e| e.kv.as_ref());
                r.nextrev.set(last.map_or(0, |kv| kv.mod_revision) + 1);
                let slot = &mut shared[r.prev_kv as usize];
                let body = slot.get_or_insert_with(|| {
                    let events = if r.prev_kv {
                        resp.events.clone()
                    } else {
                        without_prev(&resp.events)
                    };
                    pb::WatchResponse {
                        header: Some(header),
                        events,
                        ..Default::default()
                    }
                    .encode_to_vec()
                    .into()
                });
                sent += resp.events.len() as i64;
                frame_with_id(r.id, body)
            } else {
                let Some(events) = own_events(&r, &resp.events) else {
                    continue;
                };
                sent += events.len() as i64;
                encode(&pb::WatchResponse {
                    header: Some(header),
                    watch_id: r.id,
                    events,
                    ..Default::default()
                })
            };
            if !self.push(b, &r, reply).await {
                // It still needs what this reply held.
                r.nextrev.set(before);
                self.lag(b, &r);
            }
        }
        self.metrics.events_sent.fetch_add(sent, Relaxed);
    }

    /// Queues a reply for a receiver: a solo broadcast waits for its client; a shared one
    /// moves a receiver whose queue is full to a solo broadcast from its next revision.
    /// False when a shared broadcast could not queue it (the caller moves the receiver).
    async fn push(&self, b: &Rc<Broadcast>, r: &Rc<Receiver>, reply: Bytes) -> bool {
        if b.solo {
            // A client that went away is removed by its stream's end.
            let _ = r.stream.tx.send(reply).await;
            return true;
        }
        r.stream.tx.try_send(reply).is_ok()
    }

    /// Moves a slow receiver to a solo broadcast from the revision it needs next.
    fn lag(&self, b: &Rc<Broadcast>, r: &Rc<Receiver>) {
        b.st.borrow_mut().receivers.retain(|x| !Rc::ptr_eq(x, r));
        tracing::debug!("watcher {} is slow; it gets its own upstream watcher", r.id);
        debug_assert!(
            r.nextrev.get() > 0,
            "a receiver past created knows its revision"
        );
        self.open(
            b.range.clone(),
            r.nextrev.get(),
            vec![r.clone()],
            true,
            b.md.clone(),
        );
        if b.st.borrow().receivers.is_empty() {
            self.close(b);
        }
    }

    /// A small broadcast that caught up with an older one of its range moves its receivers
    /// there and ends (true).
    fn merge(&self, b: &Rc<Broadcast>) -> bool {
        let (n, next) = {
            let st = b.st.borrow();
            (st.receivers.len(), st.nextrev)
        };
        if n >= MERGE_BELOW
            || (b.solo
                && b.st
                    .borrow()
                    .receivers
                    .iter()
                    .any(|r| r.stream.tx.len() > QUEUE / 2))
        {
            return false;
        }
        let list = self
            .ranges
            .borrow()
            .get(&b.range)
            .cloned()
            .unwrap_or_default();
        let Some(into) = list.into_iter().find(|o| {
            let st = o.st.borrow();
            !Rc::ptr_eq(o, b) && !o.solo && st.started && !st.closed && st.nextrev <= next
        }) else {
            return false;
        };
        let receivers = std::mem::take(&mut b.st.borrow_mut().receivers);
        for r in &receivers {
            *r.bcast.borrow_mut() = Some(into.clone());
        }
        into.st.borrow_mut().receivers.extend(receivers);
        self.close(b);
        true
    }
}

fn without_prev(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .map(|e| Event {
            prev_kv: None,
            ..e.clone()
        })
        .collect()
}

/// The events receiver `r` gets out of a reply (None: nothing for it), its nextrev moved.
fn own_events(r: &Receiver, events: &[Event]) -> Option<Vec<Event>> {
    let from = r.nextrev.get();
    let mut out = Vec::new();
    let mut last = None;
    for e in events {
        let Some(kv) = &e.kv else { continue };
        if kv.mod_revision < from {
            continue;
        }
        last = Some(kv.mod_revision);
        let put = e.r#type == EventType::Put as i32;
        if (put && r.no_put) || (!put && r.no_delete) {
            continue;
        }
        let mut e = e.clone();
        if !r.prev_kv {
            e.prev_kv = None;
        }
        out.push(e);
    }
    if let Some(l) = last {
        r.nextrev.set(l + 1);
    }
    (!out.is_empty()).then_some(out)
}

fn r_header(r: &Receiver) -> pb::ResponseHeader {
    r.bcast
        .borrow()
        .as_ref()
        .map(|b| b.st.borrow().header)
        .unwrap_or_default()
}

/// Sends a client stream's queued replies as its flow control allows.
async fn write(rx: LocalReceiver<Bytes>, outgoing: &mut Outgoing) -> Result<(), Status> {
    while let Some(frame) = rx.recv().await {
        outgoing.send(frame).await?;
    }
    Ok(())
}
