//! The gateway over HTTP/2 (POSTs to /v3/ paths whose content type is not gRPC's).

use std::cell::RefCell;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};

use super::stream::{self, Body, Reply200};
use super::{plan, unary, Plan, Reply};
use crate::api::Api;

/// Serves one gateway request on an HTTP/2 stream.
pub async fn serve_h2(api: &Api, request: http::Request<RecvStream>, respond: SendResponse<Bytes>) {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let caller = super::caller(
        request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes())),
    );
    let send = Rc::new(RefCell::new(None));
    let mut body = H2Body {
        recv: request.into_body(),
        send: send.clone(),
    };
    let mut out = H2Reply { respond, send };
    match plan(&method, &path) {
        Plan::Answer(reply) => out.answer(reply).await,
        Plan::Unary(m) => {
            let all = match stream::whole_body(api, &mut body).await {
                Ok(all) => all,
                Err(status) => return out.answer(Reply::error(&status)).await,
            };
            let reply = if m.may_wait() {
                // A call that waits for others ends (is dropped) when its client leaves.
                let gone = async {
                    let _ = std::future::poll_fn(|cx| out.respond.poll_reset(cx)).await;
                    None
                };
                match futures_lite::future::or(
                    async { Some(unary(api, m, &all, &caller).await) },
                    gone,
                )
                .await
                {
                    Some(reply) => reply,
                    None => return,
                }
            } else {
                unary(api, m, &all, &caller).await
            };
            out.answer(reply).await
        }
        Plan::Streaming(m) => {
            stream::serve(api, m, body, &mut out, &caller).await;
        }
    }
}

struct H2Body {
    recv: RecvStream,
    /// The reply's stream, to learn when the client resets it.
    send: Shared,
}

impl Body for H2Body {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        match self.recv.data().await {
            Some(Ok(chunk)) => {
                let _ = self.recv.flow_control().release_capacity(chunk.len());
                Some(chunk)
            }
            _ => None,
        }
    }

    async fn closed(&mut self) {
        // The client resets the stream (or the connection goes away).
        std::future::poll_fn(|cx| match self.send.borrow_mut().as_mut() {
            Some(send) => send.poll_reset(cx).map(|_| ()),
            None => Poll::Pending,
        })
        .await
    }
}

/// The reply's stream once its head is sent; each use borrows it only within one poll.
type Shared = Rc<RefCell<Option<SendStream<Bytes>>>>;

struct H2Reply {
    respond: SendResponse<Bytes>,
    send: Shared,
}

fn head(status: u16, content_type: &str) -> http::Response<()> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(())
        .expect("a status and a content type make a response")
}

impl Reply200 for H2Reply {
    async fn answer(&mut self, reply: Reply) {
        let empty = reply.body.is_empty();
        let sent = self
            .respond
            .send_response(head(reply.status, reply.content_type), empty);
        if let Ok(mut send) = sent {
            if !empty {
                let _ = send.send_data(reply.body, true);
            }
        }
    }

    async fn start(&mut self, status: u16) -> Result<(), ()> {
        let send = self
            .respond
            .send_response(head(status, "application/json"), false)
            .map_err(|_| ())?;
        *self.send.borrow_mut() = Some(send);
        Ok(())
    }

    async fn chunk(&mut self, data: Vec<u8>) -> Result<(), ()> {
        // As the peer's flow control allows (conn::send_data, with short borrows).
        let mut msg = Bytes::from(data);
        while !msg.is_empty() {
            let granted = std::future::poll_fn(|cx| match self.send.borrow_mut().as_mut() {
                Some(send) => {
                    send.reserve_capacity(msg.len());
                    send.poll_capacity(cx)
                }
                None => Poll::Ready(None),
            })
            .await;
            let n = match granted {
                Some(Ok(n)) => n,
                _ => return Err(()),
            };
            if n == 0 {
                continue;
            }
            let chunk = msg.split_to(n.min(msg.len()));
            if let Some(send) = self.send.borrow_mut().as_mut() {
                send.send_data(chunk, false).map_err(|_| ())?;
            }
        }
        Ok(())
    }

    async fn finish(&mut self) {
        if let Some(send) = self.send.borrow_mut().as_mut() {
            let _ = send.send_data(Bytes::new(), true);
        }
    }
}
