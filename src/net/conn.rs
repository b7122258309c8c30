//! One client connection: sniff the protocol, then serve gRPC over HTTP/2 or HTTP/1.1.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel::{LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::grpc::{self, MessageDecoder, Status};
use super::http1;
use super::metrics::CallStats;
use crate::api::{self, Api, Route};

/// The HTTP/2 connection preface every gRPC client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Time from accept until the connection's protocol is known (a TLS handshake included) and,
/// for HTTP/2, its whole connection preface has arrived: a client that sends nothing,
/// garbage, or stalls its handshake holds a connection no longer (grpc-go allows 120 s).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time an HTTP/2 frame may take to arrive once its first byte has: a client that stops
/// part-way through a frame (slowloris) is disconnected, whatever it trickles in meanwhile.
/// Between frames a connection may stay idle as long as it likes, as with etcd. A 1 MiB frame
/// (the largest corekv accepts) needs 35 KB/s; grpc-go sends 16 KiB frames.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Unary calls one connection runs at once; more wait for one of them to finish (Lock and
/// Campaign, which may wait for other calls, do not count). Replies go out only as fast as
/// the client reads them, so a client that stops reading holds at most this many replies in
/// the server.
const CALLS_PER_CONNECTION: u64 = 256;

/// Bytes of requests one connection may have in the server at once (received, not yet
/// answered; a streaming call's until each message is taken). A request that would go past it
/// is refused with etcd's `etcdserver: too many requests` (ResourceExhausted): a client that
/// pipelines more than this, or opens thousands of streams and sends half a request on each,
/// gets errors instead of growing the server's memory. Every stream's data is read as it
/// arrives, so one stream never waits for flow-control credit another holds.
const REQUEST_BYTES_PER_CONNECTION: usize = 64 << 20;

/// What one HTTP/2 connection's calls hold.
pub struct ConnLoad {
    calls: Rc<glommio::sync::Semaphore>,
    request_bytes: Cell<usize>,
}

/// Replies up to this size go to h2 in one piece (a client's window takes them at once);
/// larger ones only as fast as the client's flow-control windows allow.
const SMALL_REPLY: usize = 64 << 10;

/// What a network executor needs to serve connections.
pub struct ConnContext {
    pub api: Api,
    pub version: http1::VersionInfo,
    /// For connections accepted on https:// client URLs.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

/// What serves the connections of a listener: the member's services ([`ConnContext`]) or
/// the gRPC proxy's. The connection handling (sniffing, TLS, HTTP/2 settings, the handshake
/// deadline) is the same for both; only what answers a request differs.
pub trait Service: 'static {
    /// For connections accepted on a TLS listener.
    fn tls(&self) -> Option<&Arc<crate::tls::ServerTls>>;
    /// The gauge of open connections.
    fn connections(&self) -> &std::sync::atomic::AtomicI64;
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients (grpc-go's default: no limit).
    fn max_concurrent_streams(&self) -> u32 {
        u32::MAX
    }
    /// Serves one HTTP/2 request (gRPC or not) in its own task; `common_name` of the client
    /// certificate a TLS handshake verified; `load` what the connection's calls hold.
    fn h2(
        self: Rc<Self>,
        request: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
        common_name: Option<Arc<str>>,
        load: Rc<ConnLoad>,
    ) -> impl std::future::Future<Output = ()> + 'static;
    /// Serves HTTP/1.1 requests on a connection until it closes.
    fn http1<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> impl std::future::Future<Output = ()>;
}

enum Protocol {
    Http2,
    Http1,
    Garbage,
}

/// A connection whose protocol is known.
enum Opened {
    Plain(TcpStream, Protocol),
    Tls(Box<futures_rustls::server::TlsStream<TcpStream>>, Protocol),
    Refused(String),
}

async fn sniff(stream: &TcpStream) -> std::io::Result<Protocol> {
    let mut buf = [0u8; 4];
    // A peek may return fewer bytes than the client has sent so far; four decide.
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(Protocol::Garbage);
        }
        if n < buf.len() && H2_PREFACE.starts_with(&buf[..n]) {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            continue;
        }
        let head = &buf[..n];
        return Ok(if H2_PREFACE.starts_with(head) {
            Protocol::Http2
        } else if head.iter().all(|b| b.is_ascii_uppercase() || *b == b' ') {
            Protocol::Http1
        } else {
            Protocol::Garbage
        });
    }
}

/// What Go's HTTPS server answers a plaintext HTTP/1 request with (and so etcd).
const PLAINTEXT_ON_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// The TLS handshake on a connection to an https:// URL; ALPN decides the protocol.
async fn open_tls(stream: TcpStream, svc: &impl Service) -> Opened {
    let mut head = [0u8; 5];
    let n = match stream.peek(&mut head).await {
        Ok(0) | Err(_) => return Opened::Refused("closed before its TLS handshake".into()),
        Ok(n) => n,
    };
    // 0x16: a TLS handshake record.
    if head[0] != 0x16 {
        let mut stream = stream;
        if [&b"GET /"[..], b"HEAD ", b"POST ", b"PUT /", b"OPTIO"].contains(&&head[..n]) {
            let _ = stream.write_all(PLAINTEXT_ON_TLS).await;
        }
        return Opened::Refused("plaintext on a TLS port".into());
    }
    let tls = svc.tls().expect("a TLS listener has its TLS configuration");
    match futures_rustls::TlsAcceptor::from(tls.current())
        .accept(stream)
        .await
    {
        Ok(s) => {
            let protocol = match s.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            Opened::Tls(Box::new(s), protocol)
        }
        Err(e) => Opened::Refused(format!("TLS handshake: {e}")),
    }
}

async fn open(stream: TcpStream, tls: bool, svc: &impl Service) -> Opened {
    if tls {
        return open_tls(stream, svc).await;
    }
    match sniff(&stream).await {
        Ok(p) => Opened::Plain(stream, p),
        Err(e) => Opened::Refused(e.to_string()),
    }
}

/// Serves a client connection until it closes; `tls` when it came in on an https:// URL.
/// Errors end this connection only.
pub async fn serve<Svc: Service>(stream: TcpStream, tls: bool, ctx: Rc<Svc>) {
    let accepted = Instant::now();
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    ctx.connections()
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let opened = futures_lite::future::or(open(stream, tls, &*ctx), async {
        glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
        Opened::Refused("no handshake within the time allowed".into())
    })
    .await;
    match opened {
        Opened::Plain(s, Protocol::Http2) => serve_h2(s, ctx.clone(), None, accepted).await,
        Opened::Plain(s, Protocol::Http1) => ctx.http1(s).await,
        Opened::Tls(s, Protocol::Http2) => {
            let common_name = s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| crate::tls::der::common_name(cert))
                .filter(|cn| !cn.is_empty())
                .map(std::sync::Arc::from);
            serve_h2(s, ctx.clone(), common_name, accepted).await
        }
        Opened::Tls(s, Protocol::Http1) => ctx.http1(s).await,
        Opened::Plain(_, Protocol::Garbage) | Opened::Tls(_, Protocol::Garbage) => {
            tracing::debug!("closing a connection that speaks neither HTTP/2 nor HTTP/1.1");
        }
        Opened::Refused(why) => {
            // etcd logs refused TLS connections the same way.
            let from = peer.map_or_else(|| "?".into(), |p| p.to_string());
            if tls {
                tracing::warn!("rejected connection from {from}: {why}");
            } else {
                tracing::debug!("closed a connection from {from}: {why}");
            }
        }
    }
    ctx.connections()
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// `common_name`: of the client certificate the TLS handshake verified. The connection ends
/// when the client leaves, or when its preface or a frame does not arrive in time.
async fn serve_h2<S, Svc: Service>(
    stream: S,
    ctx: Rc<Svc>,
    common_name: Option<std::sync::Arc<str>>,
    accepted: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let clock = Rc::new(FrameClock::new(accepted));
    let stream = Framed {
        inner: stream,
        clock: clock.clone(),
    };
    // The deadline runs as a task of its own: raced inline, its timer was polled (the clock
    // read, the timer re-registered with the reactor) on every wake-up of the connection
    // (perf, 1000 clients: `Reactor::insert_timer` and its BTreeMap ~0.4% of the server's
    // CPU, gone with this). Dropped when the connection ends first, which cancels it.
    let deadline = glommio::spawn_local({
        let clock = clock.clone();
        async move { clock.expired().await }
    });
    let served = futures_lite::future::or(
        async {
            serve_h2_frames(stream, ctx, common_name).await;
            None
        },
        async { Some(deadline.await) },
    )
    .await;
    if let Some(what) = served {
        tracing::debug!("closed an HTTP/2 connection: {what}");
    }
}

async fn serve_h2_frames<S, Svc: Service>(stream: S, ctx: Rc<Svc>, common_name: Option<Arc<str>>)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(ctx.max_concurrent_streams())
        .initial_window_size(2 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20)
        .max_send_buffer_size(1 << 20)
        .max_header_list_size(64 << 10);
    let mut conn = match builder.handshake::<_, Bytes>(stream.compat()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("HTTP/2 handshake failed: {e}");
            return;
        }
    };
    let load = Rc::new(ConnLoad {
        calls: Rc::new(glommio::sync::Semaphore::new(CALLS_PER_CONNECTION)),
        request_bytes: Cell::new(0),
    });
    // accept() also drives the connection's I/O, so it is polled until the peer leaves.
    while let Some(next) = conn.accept().await {
        let (request, respond) = match next {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("HTTP/2 connection error: {e}");
                return;
            }
        };
        // One task per stream, so per request: its future is moved into the task's
        // allocation at spawn, and it is as large as its largest branch (see
        // ConnContext::h2).
        glommio::spawn_local(
            ctx.clone()
                .h2(request, respond, common_name.clone(), load.clone()),
        )
        .detach();
    }
}

impl Service for ConnContext {
    fn tls(&self) -> Option<&Arc<crate::tls::ServerTls>> {
        self.tls.as_ref()
    }

    fn connections(&self) -> &std::sync::atomic::AtomicI64 {
        &self.api.metrics.connections
    }

    fn max_concurrent_streams(&self) -> u32 {
        self.api.limits.max_concurrent_streams
    }

    // The JSON gateway, the HTTP endpoints and the streaming calls are boxed (rare, or one
    // allocation per long-lived stream) so a unary call's task is 776 bytes instead of 3272
    // (the copy was ~2% of the server's CPU per linearizable get).
    #[allow(clippy::manual_async_fn)]
    fn h2(
        self: Rc<Self>,
        request: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
        common_name: Option<Arc<str>>,
        load: Rc<ConnLoad>,
    ) -> impl std::future::Future<Output = ()> + 'static {
        async move {
            let ctx = self;

            let path = request.uri().path().to_owned();
            // gRPC is always POST; anything else is for the HTTP endpoints (curl over https
            // negotiates HTTP/2 for /health too), and the JSON gateway takes /v3/ paths.
            let grpc = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            if !grpc && crate::gateway::serves(&path) {
                Box::pin(crate::gateway::serve_h2(&ctx.api, request, respond)).await;
            } else if request.method() == http::Method::POST {
                let metadata = |name| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v: &http::HeaderValue| v.to_str().ok())
                };
                let mut caller = crate::api::auth::Caller::from_metadata(
                    metadata("token"),
                    metadata("authorization"),
                );
                caller.common_name = common_name;
                serve_stream(&ctx, &path, request.into_body(), respond, &caller, load).await;
            } else {
                let method = request.method().as_str().to_owned();
                let answer = Box::pin(http1::route(&ctx, &method, &path)).await;
                respond_http(respond, answer);
            }
        }
    }

    async fn http1<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S) {
        http1::serve(stream, self).await
    }
}

/// Answers an HTTP request that came over HTTP/2 (status, content type, body).
pub fn respond_http(mut respond: SendResponse<Bytes>, (status, ctype, body): (u16, &str, Bytes)) {
    let head = http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, ctype)
        .body(())
        .expect("a status and a content type make a response");
    if let Ok(mut send) = respond.send_response(head, body.is_empty()) {
        let _ = send.send_data(body, true);
    }
}

async fn serve_stream(
    ctx: &ConnContext,
    path: &str,
    body: RecvStream,
    mut respond: SendResponse<Bytes>,
    caller: &crate::api::auth::Caller,
    load: Rc<ConnLoad>,
) {
    let limit = ctx.api.limits.grpc_receive_limit();
    let stats = Rc::new(CallStats::start(&ctx.api.grpc_stats, path));
    let code = match api::route(path) {
        None => {
            let status = Status::unimplemented(format!("unknown method {path}"));
            let _ = respond.send_response(grpc::error_head(&status), true);
            status.code
        }
        Some(Route::Unary(method)) => {
            let incoming = Incoming::new(body, limit, Some(stats.clone()), load, false);
            serve_unary(
                incoming,
                respond,
                method.may_wait(),
                method.may_wait(),
                |msg| ctx.api.unary(method, msg, caller),
            )
            .await
        }
        Some(Route::Streaming(method)) => {
            let incoming = Incoming::new(body, limit, Some(stats.clone()), load, true);
            let send = match respond.send_response(grpc::response_head(), false) {
                Ok(s) => s,
                Err(_) => return stats.handled(grpc::Code::Canceled),
            };
            let mut outgoing = Outgoing {
                sink: Sink::Grpc(send),
                stats: Some(stats.clone()),
            };
            let result = Box::pin(ctx.api.streaming(method, incoming, &mut outgoing, caller)).await;
            let code = result.as_ref().err().map_or(grpc::Code::Ok, |s| s.code);
            if let Sink::Grpc(send) = &mut outgoing.sink {
                let _ = send.send_trailers(grpc::trailers(result.err().as_ref()));
            }
            code
        }
    };
    stats.handled(code);
}

/// One unary gRPC call, for the member's services and the proxy's: its request read from
/// `incoming` (counted against the connection until the reply is handed to h2), a turn among
/// the connection's [`CALLS_PER_CONNECTION`] taken unless the call `may_wait` for others,
/// `call` run on the request (dropped, with what it holds, when the client resets the stream
/// if `cancel_on_reset`) and its reply (gRPC-framed) or status sent. The call's code.
pub async fn serve_unary<F, Fut>(
    mut incoming: Incoming,
    mut respond: SendResponse<Bytes>,
    may_wait: bool,
    cancel_on_reset: bool,
    call: F,
) -> grpc::Code
where
    F: FnOnce(Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<Bytes, Status>>,
{
    let msg = match incoming.next().await {
        Some(Ok(m)) => m,
        Some(Err(status)) => {
            let _ = respond.send_response(grpc::error_head(&status), true);
            return status.code;
        }
        None => {
            let status = Status::internal("grpc: request carried no message");
            let _ = respond.send_response(grpc::error_head(&status), true);
            return status.code;
        }
    };
    // Held until the reply is handed to h2. The semaphore is never closed.
    let _permit = match &incoming.source {
        Source::Grpc { load, .. } if !may_wait => load.calls.acquire_static_permit(1).await.ok(),
        _ => None,
    };
    let answer = if cancel_on_reset {
        futures_lite::future::or(async { Some(call(msg).await) }, async {
            let _ = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
            None
        })
        .await
    } else {
        Some(call(msg).await)
    };
    let Some(answer) = answer else {
        return grpc::Code::Canceled;
    };
    match answer {
        Ok(reply) => {
            if let Some(stats) = &incoming.stats {
                stats.sent(reply.len().saturating_sub(grpc::PREFIX_LEN));
            }
            if let Ok(mut send) = respond.send_response(grpc::response_head(), false) {
                let sent = if reply.len() <= SMALL_REPLY {
                    send.send_data(reply, false).map_err(drop)
                } else {
                    send_data(&mut send, reply).await
                };
                if sent.is_ok() {
                    let _ = send.send_trailers(grpc::trailers(None));
                }
            }
            grpc::Code::Ok
        }
        Err(status) => {
            let _ = respond.send_response(grpc::error_head(&status), true);
            status.code
        }
    }
}

/// The messages a client sends on one stream: gRPC frames from an HTTP/2 stream, or
/// messages the JSON gateway decoded and encoded as protobuf.
pub struct Incoming {
    source: Source,
    /// None for the gateway's calls (not counted as gRPC calls).
    stats: Option<Rc<CallStats>>,
}

enum Source {
    Grpc {
        body: RecvStream,
        decoder: MessageDecoder,
        load: Rc<ConnLoad>,
        /// Bytes this stream counts in `load`.
        held: usize,
        /// A streaming call: a message stops counting once it is taken.
        streaming: bool,
    },
    Gateway(LocalReceiver<Bytes>),
}

impl Incoming {
    /// The messages of a gRPC call (at most `limit` bytes each), counted in `stats` (the
    /// member's gRPC metrics; None for the proxy's calls) and in the connection's `load`; a
    /// `streaming` call's message stops counting there once it is taken.
    pub fn new(
        body: RecvStream,
        limit: usize,
        stats: Option<Rc<CallStats>>,
        load: Rc<ConnLoad>,
        streaming: bool,
    ) -> Incoming {
        Incoming {
            source: Source::Grpc {
                body,
                decoder: MessageDecoder::new(limit),
                load,
                held: 0,
                streaming,
            },
            stats,
        }
    }

    /// Messages fed by the gateway; the stream half-closes when the sender is dropped.
    pub fn from_gateway(messages: LocalReceiver<Bytes>) -> Incoming {
        Incoming {
            source: Source::Gateway(messages),
            stats: None,
        }
    }

    /// The next message; None when the client half-closed the stream.
    pub async fn next(&mut self) -> Option<Result<Bytes, Status>> {
        let (body, decoder, load, held, streaming) = match &mut self.source {
            Source::Grpc {
                body,
                decoder,
                load,
                held,
                streaming,
            } => (body, decoder, load, held, *streaming),
            Source::Gateway(messages) => return messages.recv().await.map(Ok),
        };
        loop {
            match decoder.next_message() {
                Ok(Some(m)) => {
                    if let Some(stats) = &self.stats {
                        stats.received(m.len());
                    }
                    if streaming {
                        let taken = (m.len() + grpc::PREFIX_LEN).min(*held);
                        *held -= taken;
                        load.request_bytes.set(load.request_bytes.get() - taken);
                    }
                    return Some(Ok(m));
                }
                Ok(None) => {}
                Err(e) => return Some(Err(e.to_status())),
            }
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    let total = load.request_bytes.get() + chunk.len();
                    if total > REQUEST_BYTES_PER_CONNECTION {
                        return Some(Err(Status::new(
                            grpc::Code::ResourceExhausted,
                            "etcdserver: too many requests",
                        )));
                    }
                    load.request_bytes.set(total);
                    *held += chunk.len();
                    decoder.push(&chunk);
                }
                Some(Err(e)) => return Some(Err(stream_error(e))),
                None if decoder.has_partial() => {
                    return Some(Err(grpc::FrameError::Truncated.to_status()))
                }
                None => return None,
            }
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Source::Grpc { load, held, .. } = &self.source {
            load.request_bytes.set(load.request_bytes.get() - held);
        }
    }
}

fn stream_error(e: h2::Error) -> Status {
    Status::new(grpc::Code::Canceled, format!("stream error: {e}"))
}

/// The reply side of a streaming call, with flow control: a slow reader makes `send` wait
/// instead of growing a buffer without bound. `send` takes gRPC-framed messages (one or
/// more); the gateway's side turns them into JSON.
pub struct Outgoing {
    sink: Sink,
    stats: Option<Rc<CallStats>>,
}

enum Sink {
    Grpc(SendStream<Bytes>),
    Gateway(LocalSender<Bytes>),
}

impl Outgoing {
    /// The reply side of a gRPC call served outside the member's services (the proxy's).
    pub fn grpc(send: SendStream<Bytes>) -> Outgoing {
        Outgoing {
            sink: Sink::Grpc(send),
            stats: None,
        }
    }

    /// Ends the call with `status` (None: OK) in the trailers.
    pub fn finish(&mut self, status: Option<&Status>) {
        if let Sink::Grpc(send) = &mut self.sink {
            let _ = send.send_trailers(grpc::trailers(status));
        }
    }

    /// Framed messages go to the gateway through a bounded channel.
    pub fn to_gateway(frames: LocalSender<Bytes>) -> Outgoing {
        Outgoing {
            sink: Sink::Gateway(frames),
            stats: None,
        }
    }

    /// Resolves when the client went away (reset the stream or closed the connection), for
    /// a stream that has nothing to send meanwhile. The gateway's streams never resolve here:
    /// the gateway drops a stream whose client left.
    pub async fn closed(&mut self) {
        match &mut self.sink {
            Sink::Grpc(send) => {
                let _ = std::future::poll_fn(|cx| send.poll_reset(cx)).await;
            }
            Sink::Gateway(_) => std::future::pending().await,
        }
    }

    /// Sends encoded gRPC messages (each with its 5-byte prefix).
    pub async fn send(&mut self, msg: Bytes) -> Result<(), Status> {
        if let Some(stats) = &self.stats {
            stats.sent_frames(&msg);
        }
        let gone = || Status::new(grpc::Code::Canceled, "client went away");
        match &mut self.sink {
            Sink::Grpc(send) => send_data(send, msg).await.map_err(|_| gone()),
            Sink::Gateway(frames) => frames.send(msg).await.map_err(|_| gone()),
        }
    }
}

/// Sends data on an HTTP/2 stream as the peer's flow control allows; Err when it went away.
async fn send_data(send: &mut SendStream<Bytes>, mut msg: Bytes) -> Result<(), ()> {
    while !msg.is_empty() {
        send.reserve_capacity(msg.len());
        let n = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            _ => return Err(()),
        };
        if n == 0 {
            continue;
        }
        let chunk = msg.split_to(n.min(msg.len()));
        send.send_data(chunk, false).map_err(|_| ())?;
    }
    Ok(())
}

/// Where an HTTP/2 connection is in its incoming bytes: the frame boundaries, read from each
/// frame's 9-byte header as the bytes pass to h2, and since when the frame (or the connection
/// preface) being received has been arriving.
struct FrameClock {
    /// When the part-received frame began (the preface: when the connection was accepted).
    started: Cell<Option<Instant>>,
    /// Preface bytes still to come.
    preface_left: Cell<usize>,
    header: Cell<[u8; 9]>,
    header_have: Cell<usize>,
    payload_left: Cell<usize>,
}

impl FrameClock {
    fn new(accepted: Instant) -> FrameClock {
        FrameClock {
            started: Cell::new(Some(accepted)),
            preface_left: Cell::new(H2_PREFACE.len()),
            header: Cell::new([0; 9]),
            header_have: Cell::new(0),
            payload_left: Cell::new(0),
        }
    }

    /// Follows the frames through `bytes`, the next bytes the client sent.
    fn saw(&self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let preface = self.preface_left.get();
            if preface > 0 {
                let n = preface.min(bytes.len());
                self.preface_left.set(preface - n);
                bytes = &bytes[n..];
                if n == preface {
                    self.started.set(None);
                }
                continue;
            }
            let payload = self.payload_left.get();
            if payload > 0 {
                let n = payload.min(bytes.len());
                self.payload_left.set(payload - n);
                bytes = &bytes[n..];
                if n == payload {
                    self.started.set(None);
                }
                continue;
            }
            let have = self.header_have.get();
            if have == 0 {
                self.started.set(Some(Instant::now()));
            }
            let n = (9 - have).min(bytes.len());
            let mut header = self.header.get();
            header[have..have + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if have + n < 9 {
                self.header.set(header);
                self.header_have.set(have + n);
                continue;
            }
            self.header_have.set(0);
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            self.payload_left.set(len);
            if len == 0 {
                self.started.set(None);
            }
        }
    }

    /// Resolves, saying what, once the preface or a frame has taken too long.
    async fn expired(&self) -> &'static str {
        loop {
            let (limit, what) = if self.preface_left.get() > 0 {
                (
                    HANDSHAKE_TIMEOUT,
                    "no HTTP/2 connection preface within the time allowed",
                )
            } else {
                (
                    FRAME_TIMEOUT,
                    "a frame was not completed within the time allowed",
                )
            };
            let wait = match self.started.get() {
                Some(t) if t.elapsed() >= limit => return what,
                Some(t) => limit - t.elapsed(),
                None => FRAME_TIMEOUT,
            };
            glommio::timer::sleep(wait).await;
        }
    }
}

/// A client connection whose incoming bytes are timed by a [`FrameClock`].
struct Framed<S> {
    inner: S,
    clock: Rc<FrameClock>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.clock.saw(&buf[..n]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_clock_runs_only_inside_the_preface_and_frames() {
        let c = FrameClock::new(Instant::now());
        c.saw(&H2_PREFACE[..10]);
        assert!(c.started.get().is_some());
        c.saw(&H2_PREFACE[10..]);
        assert!(c.started.get().is_none());
        // An empty SETTINGS frame, then a 3-byte frame fed a byte at a time.
        c.saw(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert!(c.started.get().is_none());
        let frame = [0, 0, 3, 0, 0, 0, 0, 0, 1, b'a', b'b', b'c'];
        for (i, b) in frame.iter().enumerate() {
            c.saw(std::slice::from_ref(b));
            assert_eq!(
                c.started.get().is_none(),
                i == frame.len() - 1,
                "after byte {i}"
            );
        }
        // Two frames and half a header in one read.
        let mut both = frame.to_vec();
        both.extend_from_slice(&frame);
        both.extend_from_slice(&frame[..4]);
        c.saw(&both);
        assert!(c.started.get().is_some());
        assert_eq!(c.header_have.get(), 4);
    }
}
