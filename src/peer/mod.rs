//! The transport between members on the peer port (default 2380): raft messages, requests
//! forwarded to the leader, and snapshots, over corekv's own framed protocol
//! (PROTOCOL.md beside this file).
//!
//! Everything here runs on executor 0, beside the consensus core: messages reach the core
//! loop through [`PeerInbox`] without crossing a thread, and the core hands its outgoing
//! messages to per-peer queues that one writer task per peer drains into one frame per pass.
//! Each direction has its own connection: a member dials every other member to send, and
//! receives on the connections the others dialed to it.

pub mod frame;
pub mod handshake;
pub mod probe;
pub mod snapshot;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::io::BufReader;
use futures_lite::AsyncWriteExt as _;
use glommio::net::{TcpListener, TcpStream};
use raft::eraftpb::Message;

use crate::config::Url;
use crate::proto::corekvpb::{
    peer_frame, ForwardReply, ForwardRequest, PeerBatch, PeerClusterInfo, PeerFrame, PeerHello,
    PeerStream,
};
use crate::server::datadir::ReceivedSnapshot;
use crate::server::node::Forward;
use crate::tls::{ClientTls, ServerTls, Stream, TlsSettings};
use frame::FrameError;
pub use handshake::{PeerInfo, PeerView, Refusal};

/// Time a new connection has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A write that makes no progress for this long (the peer stopped reading) ends the
/// connection; etcd's peer writes time out the same way.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Waits between failed connection attempts, doubling up to 100 ms (as often as etcd
/// retries): a restarted member is reached again within a tenth of a second.
const BACKOFF_FIRST: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// Bytes queued for one peer beyond which new messages are dropped (raft resends what it
/// must): a peer that stopped reading costs bounded memory.
const MAX_QUEUED_BYTES: usize = 64 << 20;
/// One frame carries at most about this much of a peer's queue.
const BATCH_BYTES: usize = 8 << 20;

/// What the transport hands the consensus core.
pub trait PeerInbox {
    /// Messages from member `from` (already checked to come from it and be for us).
    fn messages(&self, from: u64, raft: Vec<Message>, forwards: Vec<Forward>);
    /// A snapshot received in full and checked, with its raft MsgSnapshot.
    fn snapshot(&self, from: u64, msg: Message, data: ReceivedSnapshot);
    /// Messages for `id` were lost: raft should probe it rather than stream to it.
    fn unreachable(&self, id: u64);
    /// The message connection to `id` is up (true) or went down (false): etcd's "active
    /// since", which its reconfiguration checks read.
    fn connected(&self, id: u64, up: bool);
    /// How streaming a snapshot to `id` ended.
    fn snapshot_sent(&self, id: u64, delivered: bool);
    /// A peer told this member it must not run (another cluster, removed, lost its data).
    fn fatal(&self, reason: String);
    /// Bytes moved on the message connections, for etcd's peer metrics.
    fn traffic(&self, _peer: u64, _traffic: Traffic) {}
}

/// What [`PeerInbox::traffic`] reports.
#[derive(Clone, Copy, Debug)]
pub enum Traffic {
    Sent(usize),
    SendFailed,
    Received(usize),
    ReceiveFailed,
}

/// Outgoing messages for one peer, waiting for its writer task.
#[derive(Default)]
struct Outbox {
    raft: Vec<bytes::Bytes>,
    requests: Vec<ForwardRequest>,
    replies: Vec<ForwardReply>,
    bytes: usize,
    /// Messages were dropped since the writer last ran: the core hears "unreachable".
    dropped: bool,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.raft.is_empty() && self.requests.is_empty() && self.replies.is_empty()
    }

    fn clear(&mut self) {
        *self = Outbox::default();
    }

    /// Up to about [`BATCH_BYTES`] of what is queued, as one batch.
    fn take_batch(&mut self) -> PeerBatch {
        let mut batch = PeerBatch {
            requests: std::mem::take(&mut self.requests),
            replies: std::mem::take(&mut self.replies),
            raft: Vec::new(),
        };
        let mut bytes = 0;
        let mut n = 0;
        for m in &self.raft {
            if n > 0 && bytes + m.len() > BATCH_BYTES {
                break;
            }
            bytes += m.len();
            n += 1;
        }
        batch.raft = self.raft.drain(..n).collect();
        self.bytes -= bytes;
        if self.raft.is_empty() {
            self.bytes = 0;
        }
        batch
    }
}

/// The sending side of the link to one peer.
struct PeerLink {
    id: u64,
    outbox: RefCell<Outbox>,
    waker: RefCell<Option<Waker>>,
    /// The peer is no longer a member: the writer stops.
    stopped: Cell<bool>,
    /// The last problem logged for this link, so a down peer is logged once, not per retry.
    last_logged: RefCell<String>,
}

impl PeerLink {
    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits until something is queued (or the link stops: then None).
    async fn next_batch(&self) -> Option<PeerBatch> {
        std::future::poll_fn(|cx| {
            if self.stopped.get() {
                return Poll::Ready(None);
            }
            let mut ob = self.outbox.borrow_mut();
            if ob.is_empty() {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(Some(ob.take_batch()))
            }
        })
        .await
    }

    /// Logs `what` unless it is what was logged last for this link (a peer that is down is
    /// logged once, not at every retry).
    fn log_once(&self, warn: bool, what: String) {
        let mut last = self.last_logged.borrow_mut();
        if *last != what {
            if warn {
                tracing::warn!("{what}");
            } else {
                tracing::info!("{what}");
            }
            *last = what;
        }
    }
}

pub struct Transport {
    view: RefCell<PeerView>,
    links: RefCell<HashMap<u64, Rc<PeerLink>>>,
    inbox: Rc<dyn PeerInbox>,
    /// Where received snapshots are written.
    snap_dir: PathBuf,
    /// How https:// peers are dialed: with this member's peer certificate when it has one
    /// (built at start, so a bad file stops the member), else on first need with the system's
    /// roots.
    dial_tls: RefCell<Option<Arc<ClientTls>>>,
}

impl Transport {
    pub fn new(
        view: PeerView,
        snap_dir: PathBuf,
        inbox: Rc<dyn PeerInbox>,
        dial_tls: Option<Arc<ClientTls>>,
    ) -> Rc<Transport> {
        let t = Rc::new(Transport {
            view: RefCell::new(PeerView::default()),
            links: RefCell::new(HashMap::new()),
            inbox,
            snap_dir,
            dial_tls: RefCell::new(dial_tls),
        });
        t.set_view(view);
        t
    }

    /// Serves peers dialing in on `listener` (until the process ends); with TLS when the
    /// listen URL is https://.
    pub fn listen(self: &Rc<Self>, listener: TcpListener, tls: Option<Arc<ServerTls>>) {
        let t = self.clone();
        glommio::spawn_local(async move {
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        let t = t.clone();
                        let tls = tls.clone();
                        glommio::spawn_local(async move { t.serve_inbound(stream, tls).await })
                            .detach();
                    }
                    Err(e) => {
                        tracing::warn!("accepting a peer connection failed: {e}");
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
        .detach();
    }

    /// Takes a new view of the cluster: links to new members start, links to members that
    /// left stop.
    pub fn set_view(self: &Rc<Self>, view: PeerView) {
        let me = view.member_id;
        let ids: Vec<u64> = view.members.keys().copied().collect();
        // Stored first: a link task may run as soon as it is spawned.
        *self.view.borrow_mut() = view;
        let mut links = self.links.borrow_mut();
        links.retain(|id, link| {
            let keep = ids.contains(id);
            if !keep {
                link.stopped.set(true);
                link.wake();
            }
            keep
        });
        for id in ids.into_iter().filter(|id| *id != me) {
            links.entry(id).or_insert_with(|| {
                let link = Rc::new(PeerLink {
                    id,
                    outbox: RefCell::default(),
                    waker: RefCell::default(),
                    stopped: Cell::new(false),
                    last_logged: RefCell::default(),
                });
                let t = self.clone();
                let l = link.clone();
                glommio::spawn_local(async move { t.run_link(l).await }).detach();
                link
            });
        }
    }

    /// Whether this member started empty and has applied nothing from a leader yet (said in
    /// handshakes).
    pub fn set_empty(&self, empty: bool) {
        self.view.borrow_mut().empty = empty;
    }

    /// Queues a raft message for its peer.
    pub fn send(&self, msg: &Message) {
        let bytes = protobuf::Message::write_to_bytes(msg)
            .expect("encoding a raft message into a Vec cannot fail");
        self.queue(msg.to, |ob| {
            ob.bytes += bytes.len();
            ob.raft.push(bytes.into());
        });
    }

    /// Queues a forwarded request or answer for member `to`.
    pub fn forward(&self, to: u64, f: Forward) {
        self.queue(to, |ob| match f {
            Forward::Request(r) => ob.requests.push(r),
            Forward::Reply(r) => ob.replies.push(r),
        });
    }

    fn queue(&self, to: u64, push: impl FnOnce(&mut Outbox)) {
        let links = self.links.borrow();
        let Some(link) = links.get(&to) else {
            return; // not (or no longer) a member
        };
        let mut ob = link.outbox.borrow_mut();
        if ob.bytes > MAX_QUEUED_BYTES {
            ob.dropped = true;
        } else {
            push(&mut ob);
        }
        drop(ob);
        link.wake();
    }

    /// Streams a snapshot to its follower on a connection of its own; the outcome goes to
    /// the inbox.
    pub fn send_snapshot(self: &Rc<Self>, msg: Message, data: crate::storage::Snapshot) {
        let t = self.clone();
        glommio::spawn_local(async move {
            let to = msg.to;
            let result = match t.dial(to, PeerStream::Snapshot).await {
                Ok(stream) => snapshot::send(stream, &msg, data).await,
                Err(e) => Err(e),
            };
            match &result {
                Ok(bytes) => tracing::info!("sent a snapshot of {bytes} bytes to member {to:x}"),
                Err(e) => tracing::warn!("sending a snapshot to member {to:x} failed: {e}"),
            }
            t.inbox.snapshot_sent(to, result.is_ok());
        })
        .detach();
    }

    /// Connects to member `to` and completes the handshake for `stream`.
    async fn dial(&self, to: u64, stream: PeerStream) -> Result<Stream, String> {
        let urls = match self.view.borrow().members.get(&to) {
            Some(info) => info.urls.clone(),
            None => return Err(format!("member {to:x} is not a member")),
        };
        let mut last = format!("member {to:x} has no peer URL");
        for url in &urls {
            match self.dial_url(to, url, stream).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The TLS configuration for dialing https:// peers.
    fn dial_tls(&self) -> Result<Arc<ClientTls>, String> {
        let mut slot = self.dial_tls.borrow_mut();
        if let Some(t) = &*slot {
            return Ok(t.clone());
        }
        let t = Arc::new(ClientTls::client(TlsSettings::default(), "peer TLS", &[])?);
        *slot = Some(t.clone());
        Ok(t)
    }

    async fn dial_url(&self, to: u64, url: &Url, stream: PeerStream) -> Result<Stream, String> {
        let fail = |e: &dyn std::fmt::Display| format!("member {to:x} at {}: {e}", url.url);
        let tcp = TcpStream::connect_timeout(url.addr, CONNECT_TIMEOUT)
            .await
            .map_err(|e| fail(&e))?;
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_write_timeout(Some(WRITE_TIMEOUT));
        let _ = tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
        let mut s = if url.tls {
            let tls = self.dial_tls().map_err(|e| fail(&e))?;
            let name = crate::tls::server_name(&url.host).map_err(|e| fail(&e))?;
            Stream::connect(tcp, &tls, name)
                .await
                .map_err(|e| fail(&format!("TLS handshake: {e}")))?
        } else {
            Stream::Plain(tcp)
        };
        let hello = {
            let v = self.view.borrow();
            PeerHello {
                protocol: handshake::PROTOCOL,
                cluster_id: v.cluster_id,
                from: v.member_id,
                to,
                stream: stream as i32,
                empty: v.empty,
            }
        };
        let mut first = frame::PREAMBLE.to_vec();
        frame::encode(
            &PeerFrame {
                body: Some(peer_frame::Body::Hello(hello)),
            },
            &mut first,
        );
        s.write_all(&first).await.map_err(|e| fail(&e))?;
        s.flush().await.map_err(|e| fail(&e))?;
        let reply = match frame::read(&mut s).await.map_err(|e| fail(&e))? {
            PeerFrame {
                body: Some(peer_frame::Body::HelloReply(r)),
            } => r,
            _ => return Err(fail(&"answered the handshake with something else")),
        };
        let checked = self.view.borrow().check_reply(to, &reply);
        if let Err(r) = checked {
            if r.fatal {
                self.inbox
                    .fatal(format!("member {to:x} refused this member: {}", r.reason));
            }
            return Err(fail(&format!("refused: {}", r.reason)));
        }
        let _ = s.set_read_timeout(None);
        Ok(s)
    }

    /// The writer of one link: connects, then sends whatever is queued, one frame per pass;
    /// on any failure it drops what is queued, tells raft, and reconnects with backoff.
    async fn run_link(self: Rc<Self>, link: Rc<PeerLink>) {
        let mut backoff = BACKOFF_FIRST;
        while !link.stopped.get() {
            let mut stream = match self.dial(link.id, PeerStream::Messages).await {
                Ok(s) => {
                    backoff = BACKOFF_FIRST;
                    link.log_once(false, format!("connected to member {:x}", link.id));
                    self.inbox.connected(link.id, true);
                    s
                }
                Err(e) => {
                    link.log_once(true, format!("cannot reach {e}"));
                    self.inbox.traffic(link.id, Traffic::SendFailed);
                    self.inbox.connected(link.id, false);
                    link.outbox.borrow_mut().clear();
                    self.inbox.unreachable(link.id);
                    glommio::timer::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let mut buf = Vec::new();
            while let Some(batch) = link.next_batch().await {
                if std::mem::take(&mut link.outbox.borrow_mut().dropped) {
                    self.inbox.unreachable(link.id);
                }
                buf.clear();
                frame::encode(
                    &PeerFrame {
                        body: Some(peer_frame::Body::Batch(batch)),
                    },
                    &mut buf,
                );
                // A TLS stream may hold the frame's last record until flushed.
                let written = match stream.write_all(&buf).await {
                    Ok(()) => stream.flush().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    self.inbox.traffic(link.id, Traffic::SendFailed);
                    link.log_once(
                        true,
                        format!("lost the connection to member {:x}: {e}", link.id),
                    );
                    link.outbox.borrow_mut().clear();
                    self.inbox.unreachable(link.id);
                    self.inbox.connected(link.id, false);
                    break;
                }
                self.inbox.traffic(link.id, Traffic::Sent(buf.len()));
            }
        }
    }

    /// A connection a peer dialed: handshake, then its messages or its snapshot.
    async fn serve_inbound(self: Rc<Self>, tcp: TcpStream, tls: Option<Arc<ServerTls>>) {
        let peer = tcp
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
        let _ = tcp.set_write_timeout(Some(WRITE_TIMEOUT));
        // The read timeout bounds each read; this bounds the whole handshake, so a dialer
        // that trickles its hello in a byte at a time (slowloris) is cut off too.
        let opened = futures_lite::future::or(
            async {
                let mut stream = match tls {
                    Some(tls) => Stream::accept(tcp, &tls)
                        .await
                        .map_err(|e| format!("TLS handshake: {e}"))?,
                    None => Stream::Plain(tcp),
                };
                let hello = read_hello(&mut stream).await.map_err(|e| e.to_string())?;
                Ok((stream, hello))
            },
            async {
                glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
                Err("no handshake within the time allowed".to_string())
            },
        )
        .await;
        let (mut stream, hello) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!("refused a peer connection from {peer}: {e}");
                return;
            }
        };
        let probe = hello.stream == PeerStream::Probe as i32;
        let check = if probe {
            Ok(())
        } else {
            self.view.borrow().check_hello(&hello)
        };
        let reply = self.view.borrow().reply_to(&check);
        let answered = frame::write(
            &mut stream,
            &PeerFrame {
                body: Some(peer_frame::Body::HelloReply(reply)),
            },
        )
        .await;
        if let Err(r) = check {
            tracing::warn!("refused a peer connection from {peer}: {}", r.reason);
            return;
        }
        if answered.is_err() {
            return;
        }
        if probe {
            let info = {
                let v = self.view.borrow();
                PeerClusterInfo {
                    cluster_id: v.cluster_id,
                    members: v.records.clone(),
                    removed: v.removed.iter().copied().collect(),
                }
            };
            let _ = frame::write(
                &mut stream,
                &PeerFrame {
                    body: Some(peer_frame::Body::ClusterInfo(info)),
                },
            )
            .await;
            return;
        }
        let _ = stream.set_read_timeout(None);
        let from = hello.from;
        match PeerStream::try_from(hello.stream) {
            Ok(PeerStream::Messages) => {
                if let Err(e) = self.receive_messages(from, stream).await {
                    if !matches!(e, FrameError::Closed) {
                        self.inbox.traffic(from, Traffic::ReceiveFailed);
                        tracing::warn!("closed the connection from member {from:x} ({peer}): {e}");
                    }
                }
            }
            Ok(PeerStream::Snapshot) => {
                let me = self.view.borrow().member_id;
                match snapshot::receive(stream, from, me, &self.snap_dir).await {
                    Ok((msg, data)) => self.inbox.snapshot(from, msg, data),
                    Err(e) => {
                        tracing::warn!("receiving a snapshot from member {from:x} failed: {e}")
                    }
                }
            }
            _ => tracing::warn!(
                "closed a peer connection from {peer}: unknown stream {}",
                hello.stream
            ),
        }
    }

    async fn receive_messages(&self, from: u64, stream: Stream) -> Result<(), FrameError> {
        let me = self.view.borrow().member_id;
        let mut r = BufReader::with_capacity(256 << 10, stream);
        loop {
            let batch = match frame::read(&mut r).await?.body {
                Some(peer_frame::Body::Batch(b)) => {
                    let len = prost::Message::encoded_len(&b);
                    self.inbox.traffic(from, Traffic::Received(len));
                    b
                }
                _ => {
                    return Err(FrameError::Io(std::io::Error::other(
                        "a frame other than a batch on a message stream",
                    )))
                }
            };
            if self.view.borrow().removed.contains(&from) {
                // It has not learned yet (the leader no longer writes to it): its next dial
                // is refused at the handshake, which tells it.
                return Err(FrameError::Io(std::io::Error::other(
                    "the member was removed from the cluster",
                )));
            }
            let (raft, forwards) = decode_batch(batch, from, me)?;
            if self.view.borrow().members.contains_key(&from) {
                self.inbox.messages(from, raft, forwards);
            }
        }
    }
}

/// The raft messages and forwarded requests of a batch member `from` sent to member `me`.
#[doc(hidden)]
pub fn decode_batch(
    batch: PeerBatch,
    from: u64,
    me: u64,
) -> Result<(Vec<Message>, Vec<Forward>), FrameError> {
    let mut raft = Vec::with_capacity(batch.raft.len());
    for bytes in batch.raft {
        let msg: Message = protobuf::Message::parse_from_carllerche_bytes(&bytes).map_err(|e| {
            FrameError::Io(std::io::Error::other(format!(
                "a raft message does not decode: {e}"
            )))
        })?;
        if msg.from != from || msg.to != me {
            return Err(FrameError::Io(std::io::Error::other(format!(
                "a raft message from {:x} to {:x} on member {from:x}'s connection",
                msg.from, msg.to
            ))));
        }
        raft.push(msg);
    }
    let mut forwards: Vec<Forward> = batch.requests.into_iter().map(Forward::Request).collect();
    forwards.extend(batch.replies.into_iter().map(Forward::Reply));
    Ok((raft, forwards))
}

async fn read_hello(stream: &mut Stream) -> Result<PeerHello, FrameError> {
    frame::read_preamble(stream).await?;
    match frame::read_limited(stream, frame::MAX_HELLO).await?.body {
        Some(peer_frame::Body::Hello(h)) => Ok(h),
        _ => Err(FrameError::Io(std::io::Error::other(
            "the first frame is not a hello",
        ))),
    }
}
