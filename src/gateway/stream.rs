//! `/v3/watch`, `/v3/lease/keepalive` and `/v3/election/observe` as etcd's gateway serves
//! them: the body carries one or more JSON requests (read as they arrive; observe takes one);
//! the reply is `200` with a chunked body of `{"result": …}` lines. When the body ends, etcd's gateway half-closes its gRPC stream: a
//! keep-alive stream then answers what it was asked and ends; a watch stays open until the
//! client goes away. A first request that is not valid JSON is answered with a plain error
//! (status 500, code 2, as etcd's gateway does); a later one stops reading the body; an
//! error once results were sent ends the stream with `{"error": {grpc_code, http_code,
//! message, http_status}}`.

use bytes::Bytes;
use futures_lite::future;
use glommio::channels::local_channel;

use super::json::{self, Next};
use super::{error_body, http_status, reason, Reply};
use crate::api::auth::Caller;
use crate::api::{Api, Streaming};
use crate::net::conn::{Incoming, Outgoing};
use crate::net::grpc::{Code, MessageDecoder, Status};

/// A stream's request body, as the transport reads it.
pub(super) trait Body {
    /// The next piece of the body; None once it ended, or the client went away.
    async fn next_chunk(&mut self) -> Option<Bytes>;
    /// Resolves when the client goes away (called after the body ended).
    async fn closed(&mut self);
}

/// A stream's reply, as the transport writes it.
pub(super) trait Reply200 {
    /// A whole reply instead of a stream (the first request was bad).
    async fn answer(&mut self, reply: Reply);
    /// The status (`200`, or an error's before any result), a chunked JSON body follows.
    async fn start(&mut self, status: u16) -> Result<(), ()>;
    async fn chunk(&mut self, data: Vec<u8>) -> Result<(), ()>;
    async fn finish(&mut self);
}

/// Requests buffered from the body.
struct Requests {
    buf: Vec<u8>,
    next: fn(&[u8]) -> Next,
    limit: usize,
}

enum Read {
    Request(Bytes),
    /// The body ended (anything left in it was not a whole request).
    End,
    Bad(Status),
}

impl Requests {
    async fn next<B: Body>(&mut self, body: &mut B) -> Read {
        loop {
            match (self.next)(&self.buf) {
                Next::Request(msg, used) => {
                    self.buf.drain(..used);
                    return Read::Request(msg);
                }
                Next::Bad(status) => return Read::Bad(status),
                Next::Incomplete if self.buf.len() > self.limit => {
                    return Read::Bad(Status::new(
                        Code::ResourceExhausted,
                        format!(
                            "grpc: received message larger than max ({} vs. {})",
                            self.buf.len(),
                            self.limit
                        ),
                    ))
                }
                Next::Incomplete => {}
            }
            match body.next_chunk().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => return Read::End,
            }
        }
    }
}

/// Serves one gateway stream to its end; true when it ended cleanly, its body read to the end
/// (a keep-alive stream whose body ended), so the connection can serve more requests.
pub(super) async fn serve<B: Body, W: Reply200>(
    api: &Api,
    method: Streaming,
    mut body: B,
    out: &mut W,
    caller: &Caller,
) -> bool {
    let codec = json::stream_codec(method);
    let mut requests = Requests {
        buf: Vec::new(),
        next: codec.next_request,
        limit: super::body_limit(api),
    };
    // A server stream (Election.Observe) takes one request, decoded from the whole body as a
    // unary call's is.
    let server_stream = method == Streaming::Observe;
    let first = if server_stream {
        match whole_body(api, &mut body)
            .await
            .and_then(|b| (codec.request)(&b))
        {
            Ok(m) => Some(m),
            Err(status) => {
                out.answer(Reply::error(&status)).await;
                return false;
            }
        }
    } else {
        // etcd's gateway reads the first request before it answers.
        match requests.next(&mut body).await {
            Read::Request(m) => Some(m),
            Read::End => None,
            Read::Bad(status) => {
                out.answer(Reply::json(http_status(status.code), error_body(&status)))
                    .await;
                return false;
            }
        }
    };
    // The status goes out with the first result, as etcd's gateway writes it (Go's
    // ResponseWriter sends nothing before the first flush): a client that waits for the
    // answer's head to a watch request knows the watch exists once it has it (etcd3gw's
    // `watch()` returns then, and the caller's next put must be seen).
    let started = std::cell::Cell::new(false);
    // Whether the whole body was read (else the connection cannot serve another request).
    let body_read = std::cell::Cell::new(false);
    let (in_tx, in_rx) = local_channel::new_bounded(16);
    let (out_tx, out_rx) = local_channel::new_bounded::<Bytes>(16);
    let serve = async {
        let mut outgoing = Outgoing::to_gateway(out_tx);
        let result = api
            .streaming(method, Incoming::from_gateway(in_rx), &mut outgoing, caller)
            .await;
        drop(outgoing);
        result
    };
    let write = async {
        let mut frames = MessageDecoder::new(usize::MAX);
        while let Some(bytes) = out_rx.recv().await {
            frames.push(&bytes);
            while let Ok(Some(msg)) = frames.next_message() {
                let json = match (codec.response)(&msg) {
                    Ok(j) => j,
                    Err(_) => return Err(()),
                };
                let mut line = Vec::with_capacity(json.len() + 12);
                line.extend_from_slice(b"{\"result\":");
                line.extend_from_slice(&json);
                line.extend_from_slice(b"}\n");
                if !started.replace(true) {
                    out.start(200).await?;
                }
                out.chunk(line).await?;
            }
        }
        Ok(())
    };
    // Feeds the body's requests to the stream; true when the client left and the stream
    // must end now.
    let feed = async {
        if let Some(m) = first {
            if in_tx.send(m).await.is_err() {
                return false;
            }
        }
        if server_stream {
            // Its one request is in; the stream goes on until the client leaves.
            body.closed().await;
            return true;
        }
        loop {
            match requests.next(&mut body).await {
                Read::Request(m) => {
                    if in_tx.send(m).await.is_err() {
                        return false;
                    }
                }
                Read::End => {
                    body_read.set(true);
                    break;
                }
                Read::Bad(_) => break,
            }
        }
        // etcd's gateway half-closes its gRPC stream when the body ends: etcd's keep-alive
        // then answers what it has and ends; its watch goes on until the client leaves
        // (corekv's watch would end on a half-close, so it is not told).
        if method == Streaming::Watch {
            body.closed().await;
        }
        drop(in_tx);
        false
    };
    let ended = future::or(async { Some(future::zip(serve, write).await) }, async {
        if feed.await {
            return None;
        }
        std::future::pending().await
    })
    .await;
    // A client that left gets nothing more (the stream was dropped, which ends its watches).
    let Some((result, written)) = ended else {
        return false;
    };
    match (&result, &written) {
        (Err(status), Ok(()))
            if started.replace(true) || out.start(http_status(status.code)).await.is_ok() =>
        {
            let _ = out.chunk(stream_error(status)).await;
        }
        // A stream that ended without a result (a keep-alive with no request) is a 200 with
        // an empty body.
        (Ok(()), Ok(())) if !started.replace(true) && out.start(200).await.is_err() => {
            return false;
        }
        _ => {}
    }
    out.finish().await;
    result.is_ok() && written.is_ok() && body_read.get()
}

/// The requests a stream's body holds, cut as [`serve`] cuts them while `pieces` arrive; and
/// the error that stops reading, if any. Observe takes the whole body as one request.
pub(super) fn requests_of(
    method: Streaming,
    pieces: &[&[u8]],
    limit: usize,
) -> (Vec<Bytes>, Option<Status>) {
    struct Pieces<'a>(std::slice::Iter<'a, &'a [u8]>);
    impl Body for Pieces<'_> {
        async fn next_chunk(&mut self) -> Option<Bytes> {
            self.0.next().map(|p| Bytes::copy_from_slice(p))
        }
        async fn closed(&mut self) {}
    }
    let codec = json::stream_codec(method);
    if method == Streaming::Observe {
        return match (codec.request)(&pieces.concat()) {
            Ok(m) => (vec![m], None),
            Err(status) => (Vec::new(), Some(status)),
        };
    }
    let mut body = Pieces(pieces.iter());
    let mut requests = Requests {
        buf: Vec::new(),
        next: codec.next_request,
        limit,
    };
    let mut out = Vec::new();
    future::block_on(async {
        loop {
            match requests.next(&mut body).await {
                Read::Request(m) => out.push(m),
                Read::End => return (out, None),
                Read::Bad(status) => return (out, Some(status)),
            }
        }
    })
}

/// A whole request body, within the gateway's limit.
pub(super) async fn whole_body<B: Body>(api: &Api, body: &mut B) -> Result<Vec<u8>, Status> {
    let mut all = Vec::new();
    while let Some(piece) = body.next_chunk().await {
        all.extend_from_slice(&piece);
        if all.len() > super::body_limit(api) {
            return Err(super::too_large(api, all.len()));
        }
    }
    Ok(all)
}

/// grpc-gateway's error chunk for a stream that already answered 200.
fn stream_error(status: &Status) -> Vec<u8> {
    let http = http_status(status.code);
    let mut line = serde_json::to_vec(&serde_json::json!({
        "error": {
            "grpc_code": status.code as u32,
            "http_code": http,
            "message": status.message,
            "http_status": reason(http),
        }
    }))
    .expect("a JSON value serializes");
    line.push(b'\n');
    line
}
