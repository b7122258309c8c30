//! corekv: a distributed, strongly consistent key-value store that speaks the etcd v3 API.

pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod corrupt;
pub mod ctl;
pub mod failpoint;
pub mod gateway;
pub mod launch;
pub mod lease;
pub mod mvcc;
pub mod net;
pub mod peer;
pub mod proto;
pub mod recipes;
pub mod server;
pub mod storage;
pub mod tls;
pub mod watch;
