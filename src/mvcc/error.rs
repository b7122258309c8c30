//! Errors of the KV API, with etcd's exact gRPC codes and messages.

/// gRPC status codes used here.
pub mod code {
    /// INVALID_ARGUMENT
    pub const INVALID_ARGUMENT: u32 = 3;
    /// NOT_FOUND
    pub const NOT_FOUND: u32 = 5;
    /// RESOURCE_EXHAUSTED
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// OUT_OF_RANGE
    pub const OUT_OF_RANGE: u32 = 11;
    /// INTERNAL
    pub const INTERNAL: u32 = 13;
}

/// An error of a KV request, as etcd reports it (rpctypes/error.go).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A key (or a compare's key) is empty.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// ignore_value / ignore_lease on a key that does not exist, or an empty txn op.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// ignore_value together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// ignore_lease together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// More than max-txn-ops operations in a txn's compare, success or failure list.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// Overlapping writes in a txn.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// The requested revision has been compacted.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is after the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// A put names a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A read's reply would exceed the member's limit (corekv's `--max-range-bytes`); refused
    /// before any value is copied. The message names the size and the limit.
    #[error("{0}")]
    RangeTooLarge(String),
    /// A backend failure or a broken invariant; the store refuses further requests after a
    /// failed write (its in-memory index may no longer match the backend).
    #[error("{0}")]
    Internal(String),
}

impl KvError {
    pub fn range_too_large(size: usize, limit: usize) -> KvError {
        KvError::RangeTooLarge(format!(
            "etcdserver: range response is too large ({size} bytes of key-values, over the \
             {limit}-byte limit of --max-range-bytes); narrow the range or page through it \
             with limit"
        ))
    }

    /// The gRPC status code etcd answers with.
    pub fn grpc_code(&self) -> u32 {
        match self {
            KvError::EmptyKey
            | KvError::KeyNotFound
            | KvError::ValueProvided
            | KvError::LeaseProvided
            | KvError::TooManyOps
            | KvError::DuplicateKey => code::INVALID_ARGUMENT,
            KvError::Compacted | KvError::FutureRev => code::OUT_OF_RANGE,
            KvError::LeaseNotFound => code::NOT_FOUND,
            KvError::RangeTooLarge(..) => code::RESOURCE_EXHAUSTED,
            KvError::Internal(_) => code::INTERNAL,
        }
    }

    /// The gRPC status message etcd answers with (`grpc-message`).
    pub fn message(&self) -> &str {
        match self {
            KvError::EmptyKey => "etcdserver: key is not provided",
            KvError::KeyNotFound => "etcdserver: key not found",
            KvError::ValueProvided => "etcdserver: value is provided",
            KvError::LeaseProvided => "etcdserver: lease is provided",
            KvError::TooManyOps => "etcdserver: too many operations in txn request",
            KvError::DuplicateKey => "etcdserver: duplicate key given in txn request",
            KvError::Compacted => "etcdserver: mvcc: required revision has been compacted",
            KvError::FutureRev => "etcdserver: mvcc: required revision is a future revision",
            KvError::LeaseNotFound => "etcdserver: requested lease not found",
            KvError::RangeTooLarge(m) | KvError::Internal(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mvcc_error_codes_and_messages_match_display() {
        let all = [
            KvError::EmptyKey,
            KvError::KeyNotFound,
            KvError::ValueProvided,
            KvError::LeaseProvided,
            KvError::TooManyOps,
            KvError::DuplicateKey,
            KvError::Compacted,
            KvError::FutureRev,
            KvError::LeaseNotFound,
            KvError::Internal("boom".into()),
        ];
        for e in &all {
            assert_eq!(e.to_string(), e.message());
        }
        assert_eq!(KvError::Compacted.grpc_code(), 11);
        assert_eq!(KvError::LeaseNotFound.grpc_code(), 5);
        assert_eq!(KvError::DuplicateKey.grpc_code(), 3);
        assert_eq!(KvError::Internal(String::new()).grpc_code(), 13);
    }
}
