//! What a client call can fail with.

use crate::net::grpc::{Code, Status};

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-OK grpc-status.
    #[error("{}", status_text(.0))]
    Status(Status),
    /// The connection or the HTTP/2 stream failed (includes a refused or unreachable endpoint).
    #[error("{0}")]
    Transport(String),
    /// No answer within the command timeout (etcdctl prints the same words).
    #[error("context deadline exceeded")]
    Timeout,
    /// The server sent bytes that are not the expected protobuf message.
    #[error("grpc: failed to unmarshal the received message: {0}")]
    Decode(String),
}

impl ClientError {
    /// The gRPC status, when the server sent one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Status(s) => Some(s),
            _ => None,
        }
    }

    /// The gRPC code: the server's, or the one a Go client would report for local failures.
    pub fn code(&self) -> Code {
        match self {
            ClientError::Status(s) => s.code,
            ClientError::Transport(_) => Code::Unavailable,
            ClientError::Timeout => Code::DeadlineExceeded,
            ClientError::Decode(_) => Code::Internal,
        }
    }

    pub(crate) fn transport(e: impl std::fmt::Display) -> ClientError {
        ClientError::Transport(e.to_string())
    }
}

/// How etcd's Go client (and so etcdctl) shows a gRPC error: etcd's own errors (all of them
/// start with "etcdserver: ") as the bare message, anything else as grpc-go formats a status.
fn status_text(s: &Status) -> String {
    if s.message.starts_with("etcdserver: ") {
        s.message.clone()
    } else {
        format!("rpc error: code = {:?} desc = {}", s.code, s.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_etcdctl() {
        let e = ClientError::Status(Status::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ));
        assert_eq!(
            e.to_string(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let e = ClientError::Status(Status::new(Code::Unimplemented, "unknown method"));
        assert_eq!(
            e.to_string(),
            "rpc error: code = Unimplemented desc = unknown method"
        );
    }
}
