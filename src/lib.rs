//! corekv: a distributed, strongly consistent key-value store that speaks the etcd v3 API.

pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod corrupt;
pub mod ctl;
pub mod failpoint;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod launch;
pub mod lease;
pub mod mvcc;
pub mod net;
pub mod peer;
pub mod proto;
pub mod proxy;
pub mod recipes;
pub mod server;
pub mod storage;
pub mod tls;
pub mod watch;
