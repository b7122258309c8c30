//! HTTP/1.1 on the client port: `GET /health`, `/version` and `/metrics`, as etcd serves them.

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use std::time::Instant;

use super::conn::{ConnContext, HANDSHAKE_TIMEOUT};

/// What `GET /version` reports.
#[derive(Clone, Debug)]
pub struct VersionInfo {
    /// The etcd API version corekv implements (what etcd clients compare against).
    pub server: String,
    pub cluster: String,
    /// corekv's own version.
    pub corekv: String,
}

const MAX_HEAD: usize = 16 << 10;

/// Serves HTTP/1.1 requests on the connection until it closes or sends something malformed.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, ctx: &ConnContext) {
    serve_inner(stream, Some(&ctx.api), |method, path| {
        let (method, path) = (method.to_owned(), path.to_owned());
        async move { route(ctx, &method, &path).await }
    })
    .await
}

/// Serves HTTP/1.1 requests, each answered by `route(method, path)` (no JSON gateway): the
/// proxy's /health and /metrics.
pub async fn serve_with<S, F, Fut>(stream: S, route: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(&str, &str) -> Fut,
    Fut: std::future::Future<Output = (u16, &'static str, Bytes)>,
{
    serve_inner(stream, None, route).await
}

async fn serve_inner<S, F, Fut>(mut stream: S, api: Option<&crate::api::Api>, mut route: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(&str, &str) -> Fut,
    Fut: std::future::Future<Output = (u16, &'static str, Bytes)>,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        // Read until a complete request head is buffered; once its first byte is in, the rest
        // must follow within the handshake time (a client that stalls part-way through a
        // head, slowloris, is disconnected). An idle keep-alive connection may wait.
        let mut head_started = (!buf.is_empty()).then(Instant::now);
        let head = loop {
            match parse_head(&buf) {
                Parsed::Head(head) => break head,
                Parsed::Partial => {}
                Parsed::Bad => {
                    let _ = respond(&mut stream, 400, "text/plain", b"bad request\n", false).await;
                    return;
                }
            }
            let read = match head_started {
                None => stream.read(&mut chunk).await,
                Some(t) => {
                    let left = HANDSHAKE_TIMEOUT.saturating_sub(t.elapsed());
                    futures_lite::future::or(stream.read(&mut chunk), async {
                        glommio::timer::sleep(left).await;
                        Err(std::io::ErrorKind::TimedOut.into())
                    })
                    .await
                }
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    head_started.get_or_insert_with(Instant::now);
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        };
        buf.drain(..head.consumed);
        if let (Some(gateway), Some(api)) = (head.gateway, api) {
            if crate::gateway::http1::serve(api, &mut stream, &mut buf, gateway).await {
                continue;
            }
            return;
        }
        let keep_alive = head.keep_alive;
        let (status, ctype, body) = route(&head.method, &head.path).await;
        if respond(&mut stream, status, ctype, &body, keep_alive)
            .await
            .is_err()
            || !keep_alive
        {
            return;
        }
    }
}

/// A request head read off the start of a connection's buffer.
#[doc(hidden)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub keep_alive: bool,
    /// Bytes of the buffer the head took.
    pub consumed: usize,
    /// Set for the JSON gateway's paths, which read a body.
    pub gateway: Option<crate::gateway::http1::Head>,
}

#[doc(hidden)]
pub enum Parsed {
    Head(RequestHead),
    /// More bytes are needed (the buffer is still under the head limit).
    Partial,
    /// Malformed, or a head larger than the limit: answered 400, the connection closed.
    Bad,
}

/// Parses the request head at the start of `buf`.
#[doc(hidden)]
pub fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let close = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
            });
            Parsed::Head(RequestHead {
                path: req.path.unwrap_or("/").to_owned(),
                method: req.method.unwrap_or("GET").to_owned(),
                keep_alive: req.version == Some(1) && !close,
                consumed: n,
                gateway: crate::gateway::http1::head(&req),
            })
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Parsed::Partial,
        _ => Parsed::Bad,
    }
}

/// The answer to one request for the HTTP endpoints (over HTTP/1.1 or HTTP/2).
pub async fn route(ctx: &ConnContext, method: &str, path: &str) -> (u16, &'static str, Bytes) {
    if method != "GET" && method != "HEAD" {
        return (
            405,
            "text/plain",
            Bytes::from_static(b"method not allowed\n"),
        );
    }
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    match path {
        "/health" => {
            let (status, body) = super::health::answer(&ctx.api, query).await;
            (status, "application/json", Bytes::from(body))
        }
        "/version" => {
            let v = &ctx.version;
            let body = serde_json::json!({
                "etcdserver": v.server,
                "etcdcluster": v.cluster,
                "corekv": v.corekv,
            });
            (200, "application/json", Bytes::from(body.to_string()))
        }
        "/metrics" => (
            200,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Bytes::from(ctx.api.metrics.render()),
        ),
        _ => (
            404,
            "text/plain",
            Bytes::from_static(b"404 page not found\n"),
        ),
    }
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    ctype: &str,
    body: &[u8],
    keep_alive: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let conn = if keep_alive { "keep-alive" } else { "close" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}
