//! gRPC over HTTP/2: message framing, status codes and the reply shapes clients expect.
//!
//! A gRPC message on the wire is a 1-byte compressed flag, a 4-byte big-endian length and the
//! protobuf bytes. A reply is `:status 200` + `content-type: application/grpc`, the messages as
//! DATA frames, then trailers carrying `grpc-status` (and `grpc-message` on error).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response};

/// gRPC status codes used by etcd's API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    Ok = 0,
    Canceled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    pub fn from_u32(v: u32) -> Code {
        use Code::*;
        match v {
            0 => Ok,
            1 => Canceled,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            _ => Unknown,
        }
    }
}

/// A gRPC error: the code and message sent in the trailers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

/// Length of the gRPC message prefix (flag + length).
pub const PREFIX_LEN: usize = 5;

/// Encodes `msg` as one length-prefixed gRPC message.
pub fn encode_message<M: prost::Message>(msg: &M) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    msg.encode(&mut buf)
        .expect("BytesMut grows, encoding cannot run out of space");
    buf.freeze()
}

/// Frames an encoded message (one copy, with its gRPC prefix).
pub fn frame(msg: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + msg.len());
    buf.put_u8(0);
    buf.put_u32(msg.len() as u32);
    buf.extend_from_slice(msg);
    buf.freeze()
}

/// What went wrong while reading gRPC messages from a request body.
#[derive(Debug)]
pub enum FrameError {
    /// The message is larger than the receive limit: (size, limit).
    TooLarge(usize, usize),
    /// The peer set the compressed flag; corekv negotiates no compression.
    Compressed,
    /// The body ended inside a message.
    Truncated,
}

impl FrameError {
    pub fn to_status(&self) -> Status {
        match self {
            FrameError::TooLarge(got, max) => Status::new(
                Code::ResourceExhausted,
                format!("grpc: received message larger than max ({got} vs. {max})"),
            ),
            FrameError::Compressed => Status::new(
                Code::Unimplemented,
                "grpc: compressed messages are not supported",
            ),
            FrameError::Truncated => Status::internal("grpc: request body ended inside a message"),
        }
    }
}

/// Splits a byte stream into gRPC messages, enforcing a size limit before buffering a body.
#[derive(Default)]
pub struct MessageDecoder {
    buf: BytesMut,
    limit: usize,
}

impl MessageDecoder {
    pub fn new(limit: usize) -> MessageDecoder {
        MessageDecoder {
            buf: BytesMut::new(),
            limit,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        let compressed = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if compressed != 0 {
            return Err(FrameError::Compressed);
        }
        if len > self.limit {
            return Err(FrameError::TooLarge(len, self.limit));
        }
        if self.buf.len() < PREFIX_LEN + len {
            self.buf.reserve(PREFIX_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(PREFIX_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// True when bytes of an unfinished message are buffered.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// The response head of every gRPC reply.
pub fn response_head() -> Response<()> {
    let mut resp = Response::new(());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// Trailers for a finished call.
pub fn trailers(status: Option<&Status>) -> HeaderMap {
    let mut map = HeaderMap::new();
    add_status(&mut map, status);
    map
}

/// A "trailers-only" reply: the head carries the status and ends the stream.
pub fn error_head(status: &Status) -> Response<()> {
    let mut resp = response_head();
    add_status(resp.headers_mut(), Some(status));
    resp
}

fn add_status(map: &mut HeaderMap, status: Option<&Status>) {
    match status {
        None => {
            map.insert("grpc-status", HeaderValue::from_static("0"));
        }
        Some(s) => {
            map.insert("grpc-status", HeaderValue::from(s.code as u32));
            if let Ok(v) = HeaderValue::from_str(&percent_encode(&s.message)) {
                map.insert("grpc-message", v);
            }
        }
    }
}

/// grpc-message is percent-encoded (gRPC over HTTP/2 spec): printable ASCII except '%' passes.
fn percent_encode(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded grpc-message (used by corekv's own client).
pub fn percent_decode(msg: &[u8]) -> String {
    let mut out = Vec::with_capacity(msg.len());
    let mut i = 0;
    while i < msg.len() {
        if msg[i] == b'%' && i + 2 < msg.len() {
            let hex = std::str::from_utf8(&msg[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(msg[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a status out of response trailers or a trailers-only head.
pub fn status_from_headers(map: &HeaderMap) -> Option<Status> {
    let code = map.get("grpc-status")?.to_str().ok()?.parse::<u32>().ok()?;
    let message = map
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    Some(Status::new(Code::from_u32(code), message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_splits_messages_across_pushes() {
        let a = encode_message(&crate::proto::etcdserverpb::RangeRequest {
            key: Bytes::from_static(b"abc"),
            ..Default::default()
        });
        let mut d = MessageDecoder::new(1 << 20);
        let mut both = a.to_vec();
        both.extend_from_slice(&a);
        d.push(&both[..3]);
        assert!(d.next_message().unwrap().is_none());
        d.push(&both[3..]);
        assert_eq!(d.next_message().unwrap().unwrap(), a.slice(5..));
        assert_eq!(d.next_message().unwrap().unwrap(), a.slice(5..));
        assert!(d.next_message().unwrap().is_none());
        assert!(!d.has_partial());
    }

    #[test]
    fn decoder_rejects_oversized_before_buffering() {
        let mut d = MessageDecoder::new(10);
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_message(), Err(FrameError::TooLarge(_, 10))));
    }

    #[test]
    fn grpc_message_round_trips_percent_encoding() {
        let s = "etcdserver: 100% done\n";
        assert_eq!(percent_decode(percent_encode(s).as_bytes()), s);
    }
}
