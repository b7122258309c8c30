//! The gateway over HTTP/2 (POSTs to /v3/ paths whose content type is not gRPC's).

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};

use super::stream::{self, Body, Reply200};
use super::{body_limit, plan, too_large, unary, Plan, Reply};
use crate::api::Api;
use crate::net::conn::send_data;

/// Serves one gateway request on an HTTP/2 stream.
pub async fn serve_h2(api: &Api, request: http::Request<RecvStream>, respond: SendResponse<Bytes>) {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let mut body = H2Body(request.into_body());
    let mut out = H2Reply {
        respond,
        send: None,
    };
    match plan(&method, &path) {
        Plan::Answer(reply) => out.answer(reply).await,
        Plan::Unary(m) => {
            let limit = body_limit(api);
            let mut all = Vec::new();
            while let Some(piece) = body.next_chunk().await {
                all.extend_from_slice(&piece);
                if all.len() > limit {
                    return out.answer(Reply::error(&too_large(api, all.len()))).await;
                }
            }
            out.answer(unary(api, m, &all).await).await
        }
        Plan::Streaming(m) => stream::serve(api, m, body, &mut out).await,
    }
}

struct H2Body(RecvStream);

impl Body for H2Body {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        match self.0.data().await {
            Some(Ok(chunk)) => {
                let _ = self.0.flow_control().release_capacity(chunk.len());
                Some(chunk)
            }
            _ => None,
        }
    }

    async fn closed(&mut self) {
        // A reset is noticed when the stream next sends (an event, a keep-alive reply).
        std::future::pending::<()>().await
    }
}

struct H2Reply {
    respond: SendResponse<Bytes>,
    send: Option<SendStream<Bytes>>,
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
        if let Ok(mut send) = self
            .respond
            .send_response(head(reply.status, reply.content_type), empty)
        {
            if !empty {
                let _ = send.send_data(reply.body, true);
            }
        }
    }

    async fn start(&mut self) -> Result<(), ()> {
        let send = self
            .respond
            .send_response(head(200, "application/json"), false)
            .map_err(|_| ())?;
        self.send = Some(send);
        Ok(())
    }

    async fn chunk(&mut self, data: Vec<u8>) -> Result<(), ()> {
        match &mut self.send {
            Some(send) => send_data(send, Bytes::from(data)).await,
            None => Err(()),
        }
    }

    async fn finish(&mut self) {
        if let Some(send) = &mut self.send {
            let _ = send.send_data(Bytes::new(), true);
        }
    }
}
