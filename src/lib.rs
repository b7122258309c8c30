//! corekv: a distributed, strongly consistent key-value store that speaks the etcd v3 API.

pub mod mvcc;
pub mod proto;
