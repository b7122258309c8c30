//! Networking: per-core executors, listeners, HTTP/2 + gRPC framing, HTTP/1 endpoints.

pub mod conn;
pub mod grpc;
pub mod health;
pub mod http1;
pub mod metrics;
pub mod placement;
