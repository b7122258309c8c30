//! One gRPC call on an HTTP/2 stream: typed message sending with flow control, and typed
//! message receiving that releases flow-control capacity as data arrives.

use std::future::poll_fn;
use std::marker::PhantomData;

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::{RecvStream, SendStream};

use super::ClientError;
use crate::net::grpc::{encode_message, status_from_headers, Code, MessageDecoder};

/// The largest message the client accepts (grpc-go's client default is the same: no real cap).
const MAX_RECV_MESSAGE: usize = i32::MAX as usize;

/// Sends `data` on `stream`, waiting for flow-control capacity so nothing piles up unbounded in
/// the HTTP/2 layer. `end` closes the sending half with the last piece.
pub(super) async fn send_flow_controlled(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), ClientError> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let mut cap = stream.capacity();
        if cap == 0 {
            cap = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(ClientError::transport(e)),
                None => return Err(ClientError::Transport("stream closed".into())),
            };
        }
        let piece = data.split_to(cap.min(data.len()));
        stream
            .send_data(piece, end && data.is_empty())
            .map_err(ClientError::transport)?;
    }
    Ok(())
}

/// The sending half of a streaming call.
pub struct StreamSender<Req> {
    send: SendStream<Bytes>,
    _req: PhantomData<fn(Req)>,
}

impl<Req: prost::Message> StreamSender<Req> {
    pub(super) fn new(send: SendStream<Bytes>) -> StreamSender<Req> {
        StreamSender {
            send,
            _req: PhantomData,
        }
    }

    /// Sends one message, waiting for flow-control capacity.
    pub async fn send(&mut self, msg: &Req) -> Result<(), ClientError> {
        send_flow_controlled(&mut self.send, encode_message(msg), false).await
    }

    /// Sends one message and closes the sending half (a server-streaming call).
    pub async fn send_last(&mut self, msg: &Req) -> Result<(), ClientError> {
        send_flow_controlled(&mut self.send, encode_message(msg), true).await
    }

    /// Closes the sending half; the server ends its half in turn.
    pub fn close(&mut self) {
        let _ = self.send.send_data(Bytes::new(), true);
    }

    /// Abandons the call: the stream is reset (the server sees a cancel).
    pub fn cancel(&mut self) {
        self.send.send_reset(h2::Reason::CANCEL);
    }
}

/// Messages as bytes, for a proxy that passes them on.
impl StreamSender<()> {
    /// Sends one encoded message (without its gRPC prefix).
    pub async fn send_bytes(&mut self, msg: &[u8]) -> Result<(), ClientError> {
        send_flow_controlled(&mut self.send, crate::net::grpc::frame(msg), false).await
    }
}

impl StreamReceiver<()> {
    /// The next message's bytes; `Ok(None)` once the server ended the call with status OK.
    pub async fn message_bytes(&mut self) -> Result<Option<Bytes>, ClientError> {
        self.next_bytes().await
    }

    pub(super) async fn unary_raw(mut self) -> Result<Bytes, ClientError> {
        let msg = self.next_bytes().await?;
        while self.next_bytes().await?.is_some() {}
        msg.ok_or_else(|| ClientError::Transport("the server sent no message and status OK".into()))
    }
}

enum RecvState {
    /// The response head has not arrived yet.
    Head(ResponseFuture),
    Body(RecvStream),
    Done,
}

/// The receiving half of a streaming call.
pub struct StreamReceiver<Resp> {
    state: RecvState,
    decoder: MessageDecoder,
    _resp: PhantomData<fn() -> Resp>,
}

impl<Resp> StreamReceiver<Resp> {
    async fn next_bytes(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            if let Some(msg) = self
                .decoder
                .next_message()
                .map_err(|e| ClientError::Status(e.to_status()))?
            {
                return Ok(Some(msg));
            }
            match &mut self.state {
                RecvState::Done => return Ok(None),
                RecvState::Head(head) => {
                    let head = head.await;
                    self.state = RecvState::Done;
                    let (parts, body) = head.map_err(ClientError::transport)?.into_parts();
                    if parts.status != http::StatusCode::OK {
                        return Err(ClientError::Transport(format!(
                            "unexpected HTTP status code received from server: {}",
                            parts.status.as_u16()
                        )));
                    }
                    // A trailers-only reply carries the status in the head.
                    if let Some(status) = status_from_headers(&parts.headers) {
                        return end_of_call(Some(status));
                    }
                    self.state = RecvState::Body(body);
                }
                RecvState::Body(body) => match body.data().await {
                    Some(Ok(chunk)) => {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        self.decoder.push(&chunk);
                    }
                    Some(Err(e)) => {
                        self.state = RecvState::Done;
                        return Err(ClientError::transport(e));
                    }
                    None => {
                        let trailers = body.trailers().await;
                        self.state = RecvState::Done;
                        let trailers = trailers.map_err(ClientError::transport)?;
                        if self.decoder.has_partial() {
                            return Err(ClientError::Transport(
                                "the stream ended inside a message".into(),
                            ));
                        }
                        return end_of_call(trailers.as_ref().and_then(status_from_headers));
                    }
                },
            }
        }
    }

    pub(super) fn new(head: ResponseFuture) -> StreamReceiver<Resp> {
        StreamReceiver {
            state: RecvState::Head(head),
            decoder: MessageDecoder::new(MAX_RECV_MESSAGE),
            _resp: PhantomData,
        }
    }
}

impl<Resp: prost::Message + Default> StreamReceiver<Resp> {
    /// The next message; `Ok(None)` once the server ended the call with status OK, `Err` when
    /// it ended it with an error status or the stream broke.
    pub async fn message(&mut self) -> Result<Option<Resp>, ClientError> {
        match self.next_bytes().await? {
            Some(bytes) => Resp::decode(bytes)
                .map(Some)
                .map_err(|e| ClientError::Decode(e.to_string())),
            None => Ok(None),
        }
    }

    /// Reads a unary reply: exactly one message, then status OK.
    pub(super) async fn unary(mut self) -> Result<Resp, ClientError> {
        let msg = self.message().await?;
        // Drain to the trailers: an error status may follow a message.
        while self.next_bytes().await?.is_some() {}
        msg.ok_or_else(|| ClientError::Transport("the server sent no message and status OK".into()))
    }
}

fn end_of_call(status: Option<crate::net::grpc::Status>) -> Result<Option<Bytes>, ClientError> {
    match status {
        Some(s) if s.code == Code::Ok => Ok(None),
        Some(s) => Err(ClientError::Status(s)),
        None => Err(ClientError::Transport(
            "the server ended the call without a grpc-status".into(),
        )),
    }
}
