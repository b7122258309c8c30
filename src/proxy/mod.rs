//! `corekv grpc-proxy start`: a stateless gRPC proxy in front of a cluster, as etcd's.
//!
//! It serves the etcd v3 services on its own listener with the member's connection code
//! ([`crate::net::conn`], through [`Service`]) and reaches the cluster with corekv's own client
//! ([`crate::client`]) over one HTTP/2 connection, which fails over to the next endpoint when
//! its member goes away. Every call is passed on as it is (the upstream's answers, headers
//! included), except where the proxy does work of its own:
//!
//! - Watch ([`watch`]): client watchers of one key or range share one upstream watcher.
//! - Serializable Range ([`cache`]): answered from a cache that writes through the proxy
//!   invalidate.
//! - LeaseKeepAlive ([`lease`]): keep-alives of one lease from many clients share one upstream
//!   stream.
//! - --namespace ([`namespace`]): keys are prefixed on the way up and stripped on the way down.
//! - MemberList ([`cluster`]): the registered proxies, or this one, with an advertised URL.
//!
//! One executor (one thread) runs the whole proxy: the coalescing state is local to it.

pub mod cache;
pub mod cluster;
pub mod flags;
pub mod lease;
pub mod namespace;
pub mod register;
pub mod watch;

use std::rc::Rc;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderName, HeaderValue};

use crate::api::Route;
use crate::client::{Client, ClientError};
use crate::net::conn::{serve_unary, Incoming, Outgoing, Service};
use crate::net::grpc::{self, Code, Status};
use crate::proto::path;
pub use flags::ProxyFlags;
use namespace::Namespace;

/// The largest request the proxy takes from a client (etcd's proxy: its client's 1.5 MiB send
/// limit; the gRPC receive limit adds the same slack as a member's).
const MAX_REQUEST: usize = 1572864 + 512 * 1024;

/// The metadata a proxy passes on to the cluster: the caller's auth token and etcd's
/// require-leader flag.
const FORWARDED: [&str; 3] = ["token", "authorization", "hasleader"];

/// What one call carries up besides its message.
pub type Metadata = Vec<(HeaderName, HeaderValue)>;

fn metadata_of(headers: &http::HeaderMap) -> Metadata {
    FORWARDED
        .iter()
        .filter_map(|name| {
            let v = headers.get(*name)?;
            Some((HeaderName::from_static(name), v.clone()))
        })
        .collect()
}

/// A failed upstream call, as the proxy's client sees it: the cluster's own status passes
/// through; a connection that failed is Unavailable, as grpc-go reports it.
pub fn to_status(e: ClientError) -> Status {
    match e {
        ClientError::Status(s) => s,
        ClientError::Timeout => Status::new(Code::DeadlineExceeded, "context deadline exceeded"),
        ClientError::Transport(m) => Status::unavailable(m),
        ClientError::Decode(m) => Status::internal(m),
    }
}

/// Counters the proxy shows on /metrics.
#[derive(Default)]
pub struct ProxyMetrics {
    pub connections: AtomicI64,
    /// Client watchers, and the upstream watchers they share.
    pub watchers: AtomicI64,
    pub upstream_watchers: AtomicI64,
    /// Events sent to clients.
    pub events_sent: AtomicI64,
    pub cache_hits: AtomicI64,
    pub cache_misses: AtomicI64,
    /// Client keep-alive streams' leases, and the upstream keep-alive streams.
    pub keepalive_leases: AtomicI64,
    pub upstream_keepalives: AtomicI64,
}

impl ProxyMetrics {
    fn render(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let mut s = String::new();
        for (name, help, v) in [
            (
                "etcd_grpc_proxy_watchers_total",
                "Total number of client watchers.",
                &self.watchers,
            ),
            (
                "corekv_grpc_proxy_upstream_watchers",
                "Upstream watchers the client watchers share.",
                &self.upstream_watchers,
            ),
            (
                "corekv_grpc_proxy_events_sent_total",
                "Watch events sent to clients.",
                &self.events_sent,
            ),
            (
                "etcd_grpc_proxy_cache_hits_total",
                "Total number of cache hits.",
                &self.cache_hits,
            ),
            (
                "etcd_grpc_proxy_cache_misses_total",
                "Total number of cache misses.",
                &self.cache_misses,
            ),
            (
                "corekv_grpc_proxy_keepalive_leases",
                "Leases kept alive for clients.",
                &self.keepalive_leases,
            ),
            (
                "corekv_grpc_proxy_upstream_keepalive_streams",
                "Upstream keep-alive streams.",
                &self.upstream_keepalives,
            ),
            (
                "corekv_grpc_proxy_connections",
                "Open client connections.",
                &self.connections,
            ),
        ] {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}\n",
                v.load(Relaxed)
            ));
        }
        s
    }
}

/// The proxy's services on its executor.
pub struct Proxy {
    pub upstream: Client,
    tls: Option<Arc<crate::tls::ServerTls>>,
    pub ns: Rc<Namespace>,
    pub metrics: Arc<ProxyMetrics>,
    watches: Rc<watch::Hub>,
    cache: cache::RangeCache,
    leases: Rc<lease::KeepAlives>,
    members: Rc<cluster::Members>,
}

impl Proxy {
    pub fn new(
        upstream: Client,
        tls: Option<Arc<crate::tls::ServerTls>>,
        ns: Namespace,
        metrics: Arc<ProxyMetrics>,
        members: Rc<cluster::Members>,
    ) -> Proxy {
        let ns = Rc::new(ns);
        Proxy {
            members,
            watches: watch::Hub::new(upstream.clone(), ns.clone(), metrics.clone()),
            leases: lease::KeepAlives::new(upstream.clone(), metrics.clone()),
            cache: cache::RangeCache::new(),
            upstream,
            tls,
            ns,
            metrics,
        }
    }

    /// One unary call: passed on, with the namespace and the cache where they apply.
    async fn unary(&self, p: &str, body: Bytes, md: &Metadata) -> Result<Bytes, Status> {
        match p {
            path::RANGE => self.range(body, md).await,
            path::PUT | path::DELETE_RANGE | path::TXN => {
                let body = self.ns.request(p, body)?;
                let reply = self.up(p, body.clone(), md).await;
                // The ranges a write touched are dropped once it was answered, whatever the
                // answer (a write that failed on its way back may still have been applied).
                self.cache.invalidate_write(p, &body);
                self.ns.response(p, reply?)
            }
            path::MEMBER_LIST => match self.members.list() {
                Some(answer) => answer,
                None => self.up(p, body, md).await,
            },
            path::MEMBER_PROMOTE => Err(Status::new(Code::Unknown, "not implemented")),
            path::COMPACT => {
                let reply = self.up(p, body, md).await?;
                self.cache.compacted();
                Ok(reply)
            }
            _ if namespace::touches_keys(p) => {
                let body = self.ns.request(p, body)?;
                let reply = self.up(p, body, md).await?;
                self.ns.response(p, reply)
            }
            _ => self.up(p, body, md).await,
        }
    }

    async fn up(&self, p: &str, body: Bytes, md: &Metadata) -> Result<Bytes, Status> {
        self.upstream
            .unary_raw(p, body, md)
            .await
            .map_err(to_status)
    }

    /// Range: serializable ones from the cache when it has them, the rest upstream.
    async fn range(&self, body: Bytes, md: &Metadata) -> Result<Bytes, Status> {
        let prefixed = self.ns.request(path::RANGE, body)?;
        let req: crate::proto::etcdserverpb::RangeRequest = crate::api::decode(&prefixed)?;
        // With a token the answer depends on who asks: never shared.
        let cacheable = req.serializable && md.iter().all(|(n, _)| n != "token");
        if cacheable {
            if let Some(hit) = self.cache.get(&prefixed) {
                self.metrics
                    .cache_hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(hit);
            }
            self.metrics
                .cache_misses
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let generation = self.cache.generation();
        let reply = self.up(path::RANGE, prefixed.clone(), md).await?;
        let reply = self.ns.response(path::RANGE, reply)?;
        if cacheable {
            self.cache.put(
                prefixed,
                &req.key,
                &req.range_end,
                generation,
                reply.clone(),
            );
        }
        Ok(reply)
    }

    /// A streaming call.
    async fn streaming(
        &self,
        p: &str,
        incoming: Incoming,
        outgoing: &mut Outgoing,
        md: &Metadata,
    ) -> Result<(), Status> {
        match p {
            path::WATCH => self.watches.serve(incoming, outgoing, md).await,
            path::LEASE_KEEP_ALIVE => self.leases.serve(incoming, outgoing, md).await,
            _ => forward_stream(&self.upstream, &self.ns, p, incoming, outgoing, md).await,
        }
    }
}

/// Passes a streaming call on: messages both ways as they come, the upstream's end status
/// to the client. A client that goes away resets the upstream stream (it is dropped).
pub async fn forward_stream(
    upstream: &Client,
    ns: &Namespace,
    p: &str,
    mut incoming: Incoming,
    outgoing: &mut Outgoing,
    md: &Metadata,
) -> Result<(), Status> {
    let (mut send, mut recv) = upstream.streaming_raw(p, md).await.map_err(to_status)?;
    let up = async {
        loop {
            match incoming.next().await {
                Some(Ok(m)) => {
                    let m = ns.request(p, m)?;
                    if send.send_bytes(&m).await.is_err() {
                        // The upstream ended the call; its status comes from the other side.
                        return std::future::pending().await;
                    }
                }
                Some(Err(e)) => return Err(e),
                None => {
                    send.close();
                    return std::future::pending().await;
                }
            }
        }
    };
    let down = async {
        loop {
            match recv.message_bytes().await {
                Ok(Some(m)) => {
                    let m = ns.response(p, m)?;
                    outgoing.send(grpc::frame(&m)).await?;
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(to_status(e)),
            }
        }
    };
    futures_lite::future::or(up, down).await
}

impl Service for Proxy {
    fn tls(&self) -> Option<&Arc<crate::tls::ServerTls>> {
        self.tls.as_ref()
    }

    fn connections(&self) -> &AtomicI64 {
        &self.metrics.connections
    }

    async fn h2(
        self: Rc<Self>,
        request: http::Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        _common_name: Option<Arc<str>>,
        load: Rc<crate::net::conn::ConnLoad>,
    ) {
        let p = request.uri().path().to_owned();
        let is_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !is_grpc || request.method() != http::Method::POST {
            let answer = self.http(request.method().as_str(), &p).await;
            crate::net::conn::respond_http(respond, answer);
            return;
        }
        let md = metadata_of(request.headers());
        let body = request.into_body();
        // The connection's limits hold as on a member: calls in flight and bytes of requests.
        match crate::api::route(&p) {
            None => {
                let status = Status::unimplemented(format!("unknown method {p}"));
                let _ = respond.send_response(grpc::error_head(&status), true);
            }
            Some(Route::Unary(method)) => {
                let incoming = Incoming::new(body, MAX_REQUEST, None, load, false);
                // A client that resets its call (gave up, or its lock wait was interrupted)
                // drops the upstream call with it.
                serve_unary(incoming, respond, method.may_wait(), true, |msg| async {
                    Ok(grpc::frame(&self.unary(&p, msg, &md).await?))
                })
                .await;
            }
            Some(Route::Streaming(_)) => {
                let incoming = Incoming::new(body, MAX_REQUEST, None, load, true);
                let Ok(send) = respond.send_response(grpc::response_head(), false) else {
                    return;
                };
                let mut outgoing = Outgoing::grpc(send);
                let result = Box::pin(self.streaming(&p, incoming, &mut outgoing, &md)).await;
                outgoing.finish(result.err().as_ref());
            }
        }
    }

    async fn http1<S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) {
        crate::net::http1::serve_with(stream, |method, p| {
            let (m, p) = (method.to_owned(), p.to_owned());
            async move { self.http(&m, &p).await }
        })
        .await
    }
}

impl Proxy {
    /// /health (the cluster answers a linearizable read through the proxy, as etcd's proxy
    /// checks it) and /metrics.
    async fn http(&self, method: &str, p: &str) -> (u16, &'static str, Bytes) {
        if method != "GET" && method != "HEAD" {
            return (
                405,
                "text/plain",
                Bytes::from_static(b"method not allowed\n"),
            );
        }
        match p.split_once('?').map_or(p, |(p, _)| p) {
            "/health" | "/proxy/health" => {
                let req = crate::proto::etcdserverpb::RangeRequest {
                    key: "health".into(),
                    ..Default::default()
                };
                let ok = self.upstream.range(req).await;
                let body = match ok {
                    Ok(_) => "{\"health\":\"true\",\"reason\":\"\"}".to_string(),
                    Err(e) => format!(
                        "{{\"health\":\"false\",\"reason\":{}}}",
                        serde_json::Value::String(e.to_string())
                    ),
                };
                let status = if body.contains("\"true\"") { 200 } else { 503 };
                (status, "application/json", Bytes::from(body))
            }
            "/metrics" => (
                200,
                "text/plain; version=0.0.4",
                Bytes::from(self.metrics.render()),
            ),
            _ => (
                404,
                "text/plain",
                Bytes::from_static(b"404 page not found\n"),
            ),
        }
    }
}

/// Starts the proxy and serves until the process is stopped.
pub fn run(flags: ProxyFlags) -> Result<(), String> {
    let settings = flags.settings()?;
    std::thread::Builder::new()
        .name("grpc-proxy".into())
        .spawn(move || {
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(512 << 10)
                .make()
                .map_err(|e| format!("cannot start an executor: {e}"))?
                .run(serve(settings))
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the proxy's executor panicked".to_string())?
}

async fn serve(s: flags::Settings) -> Result<(), String> {
    let listener =
        crate::launch::listen(s.listen).map_err(|e| format!("listen on {}: {e}", s.listen))?;
    let metrics = Arc::new(ProxyMetrics::default());
    if let Some(addr) = s.metrics_addr {
        let l = crate::launch::listen(addr).map_err(|e| format!("listen on {addr}: {e}"))?;
        let m = metrics.clone();
        glommio::spawn_local(async move {
            while let Ok(conn) = l.accept().await {
                let m = m.clone();
                glommio::spawn_local(async move {
                    crate::net::http1::serve_with(conn, |method, p| {
                        let ok = method == "GET" || method == "HEAD";
                        let (status, body) = match p.split_once('?').map_or(p, |(p, _)| p) {
                            "/metrics" if ok => (200, m.render()),
                            _ => (404, "404 page not found\n".to_string()),
                        };
                        async move { (status, "text/plain; version=0.0.4", Bytes::from(body)) }
                    })
                    .await
                })
                .detach();
            }
        })
        .detach();
    }
    let upstream = connect_upstream(&s).await;
    tracing::info!(
        "grpc-proxy listening on {} for {}",
        s.listen,
        s.upstream.endpoints.join(",")
    );
    if let Some(r) = &s.register {
        glommio::spawn_local(register::run(upstream.clone(), r.clone())).detach();
    }
    let members = cluster::Members::new(&upstream, &s.advertise, s.resolver_prefix.clone());
    let proxy = Rc::new(Proxy::new(
        upstream,
        s.listen_tls.clone(),
        Namespace::new(s.namespace.as_bytes()),
        metrics,
        members,
    ));
    let tls = s.listen_tls.is_some();
    loop {
        match listener.accept().await {
            Ok(conn) => {
                glommio::spawn_local(crate::net::conn::serve(conn, tls, proxy.clone())).detach();
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// The cluster may start after the proxy (a Procfile starts them together): dial until an
/// endpoint answers.
async fn connect_upstream(s: &flags::Settings) -> Client {
    let mut warned = false;
    loop {
        match Client::connect(s.upstream.clone()).await {
            Ok(c) => return c,
            Err(e) => {
                if !warned {
                    tracing::warn!("no endpoint answers yet ({e}); retrying");
                    warned = true;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}
