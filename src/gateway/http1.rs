//! The gateway over HTTP/1.1 (what curl, etcd3gw and Patroni speak): keep-alive,
//! Content-Length and chunked request bodies, `Expect: 100-continue`; streams answer with a
//! chunked body (a watch keeps the connection to itself).

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::stream::{self, Body, Reply200};
use super::{body_limit, plan, reason, too_large, unary, Plan, Reply};
use crate::api::auth::Caller;
use crate::api::Api;

/// What the gateway needs of a request head.
pub struct Head {
    pub method: String,
    pub path: String,
    length: Length,
    expect_continue: bool,
    pub keep_alive: bool,
    /// The credentials in its headers.
    caller: Caller,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Length {
    Fixed(usize),
    Chunked,
    /// A Content-Length that is not a number.
    Bad,
}

/// The head of a request for the gateway (None: not a gateway path).
pub fn head(req: &httparse::Request) -> Option<Head> {
    let path = req.path?;
    if !super::serves(path) {
        return None;
    }
    let mut length = Length::Fixed(0);
    let mut expect_continue = false;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .map_or(Length::Bad, Length::Fixed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value.eq_ignore_ascii_case(b"chunked") {
                length = Length::Chunked;
            } else {
                length = Length::Bad;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    Some(Head {
        method: req.method.unwrap_or("GET").to_owned(),
        path: path.to_owned(),
        length,
        expect_continue,
        keep_alive: req.version == Some(1) && !close,
        caller: super::caller(req.headers.iter().map(|h| (h.name, h.value))),
    })
}

/// Reads a request body from what is buffered after the head, then from the connection.
struct BodyReader<'a, R> {
    conn: R,
    buf: &'a mut Vec<u8>,
    length: Length,
    /// Fixed: bytes still to come. Chunked: bytes left in the current chunk.
    left: usize,
    /// Chunked: the terminating chunk was read.
    done: bool,
}

impl<'a, R: AsyncRead + Unpin> BodyReader<'a, R> {
    fn new(conn: R, buf: &'a mut Vec<u8>, length: Length) -> Self {
        let left = match length {
            Length::Fixed(n) => n,
            _ => 0,
        };
        BodyReader {
            conn,
            buf,
            length,
            left,
            done: false,
        }
    }

    /// Reads more of the connection into the buffer; false at its end.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 << 10];
        match self.conn.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// A line ending in CRLF at the start of the buffer, taken off it.
    async fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if self.buf.len() > 4096 || !self.fill().await {
                return None;
            }
        }
    }

    /// The next piece of the body; None at its end (or when the client went away or sent a
    /// malformed chunk).
    async fn next(&mut self) -> Option<Bytes> {
        match self.length {
            Length::Bad => None,
            Length::Fixed(_) => {
                if self.left == 0 {
                    return None;
                }
                if self.buf.is_empty() && !self.fill().await {
                    self.left = 0;
                    return None;
                }
                let n = self.left.min(self.buf.len());
                self.left -= n;
                Some(Bytes::from(self.buf.drain(..n).collect::<Vec<u8>>()))
            }
            Length::Chunked => {
                if self.done {
                    return None;
                }
                if self.left == 0 {
                    let line = self.line().await?;
                    let size = std::str::from_utf8(&line)
                        .ok()
                        .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok());
                    match size {
                        Some(0) => {
                            // Trailers, up to an empty line.
                            while !self.line().await?.is_empty() {}
                            self.done = true;
                            return None;
                        }
                        Some(n) => self.left = n,
                        None => {
                            self.done = true;
                            return None;
                        }
                    }
                }
                if self.buf.is_empty() && !self.fill().await {
                    self.done = true;
                    return None;
                }
                let n = self.left.min(self.buf.len());
                self.left -= n;
                let data = Bytes::from(self.buf.drain(..n).collect::<Vec<u8>>());
                if self.left == 0 {
                    // The CRLF after the chunk's data.
                    while self.buf.len() < 2 {
                        if !self.fill().await {
                            self.done = true;
                            return Some(data);
                        }
                    }
                    self.buf.drain(..2);
                }
                Some(data)
            }
        }
    }

    /// The whole body, or None past `limit` bytes (or when it breaks off).
    async fn all(&mut self, limit: usize) -> Result<Vec<u8>, usize> {
        let mut body = Vec::new();
        while let Some(piece) = self.next().await {
            body.extend_from_slice(&piece);
            if body.len() > limit {
                return Err(body.len());
            }
        }
        Ok(body)
    }
}

/// A request's whole body: what `buf` holds past the head, then what `conn` sends; Err with
/// the size read once it exceeds `limit`. A body that breaks off ends where it broke.
#[doc(hidden)]
pub async fn whole_body<R: AsyncRead + Unpin>(
    conn: R,
    buf: &mut Vec<u8>,
    head: &Head,
    limit: usize,
) -> Result<Vec<u8>, usize> {
    BodyReader::new(conn, buf, head.length).all(limit).await
}

impl<R: AsyncRead + Unpin> Body for BodyReader<'_, R> {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        self.next().await
    }

    async fn closed(&mut self) {
        // What follows the body is not read as requests (the response never ends); the
        // connection's end is the client leaving.
        self.buf.clear();
        while self.fill().await {
            self.buf.clear();
        }
    }
}

fn response(reply: &Reply, keep_alive: bool) -> Vec<u8> {
    let conn = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{conn}\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    )
    .into_bytes();
    out.extend_from_slice(&reply.body);
    out
}

/// Serves one gateway request on an HTTP/1.1 connection; `buf` holds what was read past the
/// head (and keeps what is read past the body). Returns whether the connection goes on.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    api: &Api,
    stream: &mut S,
    buf: &mut Vec<u8>,
    head: Head,
) -> bool {
    let keep_alive = head.keep_alive;
    let method = match plan(&head.method, &head.path) {
        Plan::Answer(reply) => {
            // The body is not read: the connection cannot be reused unless there was none.
            let reusable = keep_alive && head.length == Length::Fixed(0);
            let _ = write(stream, &response(&reply, reusable)).await;
            return reusable;
        }
        Plan::Unary(m) => Ok(m),
        Plan::Streaming(m) => Err(m),
    };
    let limit = body_limit(api);
    if let Length::Fixed(n) = head.length {
        if n > limit {
            let reply = Reply::error(&too_large(api, n));
            let _ = write(stream, &response(&reply, false)).await;
            return false;
        }
    }
    if head.length == Length::Bad {
        let reply = Reply::text(400, "Bad Request\n");
        let _ = write(stream, &response(&reply, false)).await;
        return false;
    }
    if head.expect_continue
        && write(stream, b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return false;
    }
    match method {
        Ok(m) => {
            let body = whole_body(&mut *stream, buf, &head, limit).await;
            let (reply, keep) = match body {
                Ok(body) if m.may_wait() => {
                    // A call that waits for others ends (is dropped) when its client leaves.
                    let answer = futures_lite::future::or(
                        async { Some(unary(api, m, &body, &head.caller).await) },
                        async {
                            until_closed(&mut *stream, buf).await;
                            None
                        },
                    )
                    .await;
                    match answer {
                        Some(reply) => (reply, keep_alive),
                        None => return false,
                    }
                }
                Ok(body) => (unary(api, m, &body, &head.caller).await, keep_alive),
                Err(n) => (Reply::error(&too_large(api, n)), false),
            };
            write(stream, &response(&reply, keep)).await.is_ok() && keep
        }
        Err(m) => {
            let (read, write_half) = futures_lite::io::split(&mut *stream);
            let body = BodyReader::new(read, buf, head.length);
            let mut out = Chunked { conn: write_half };
            stream::serve(api, m, body, &mut out, &head.caller).await && keep_alive
        }
    }
}

/// Resolves when the client closes the connection. What it sends meanwhile (a pipelined
/// request) is kept in `buf` for after the answer, up to a limit past which reading stops.
async fn until_closed<R: AsyncRead + Unpin>(conn: R, buf: &mut Vec<u8>) {
    let mut reader = BodyReader::new(conn, buf, Length::Fixed(0));
    while reader.buf.len() < PIPELINED_LIMIT {
        if !reader.fill().await {
            return;
        }
    }
    std::future::pending().await
}

/// Bytes of pipelined requests read while a waiting call is served.
const PIPELINED_LIMIT: usize = 64 << 10;

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// A stream's reply as a chunked HTTP/1.1 body.
struct Chunked<W> {
    conn: W,
}

impl<W: AsyncWrite + Unpin> Reply200 for Chunked<W> {
    async fn answer(&mut self, reply: Reply) {
        let _ = write(&mut self.conn, &response(&reply, false)).await;
    }

    async fn start(&mut self, status: u16) -> Result<(), ()> {
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            reason(status)
        );
        write(&mut self.conn, head.as_bytes()).await.map_err(|_| ())
    }

    async fn chunk(&mut self, data: Vec<u8>) -> Result<(), ()> {
        let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
        framed.extend_from_slice(&data);
        framed.extend_from_slice(b"\r\n");
        write(&mut self.conn, &framed).await.map_err(|_| ())
    }

    async fn finish(&mut self) {
        let _ = write(&mut self.conn, b"0\r\n\r\n").await;
    }
}
