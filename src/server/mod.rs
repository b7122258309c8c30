//! The consensus core: raft-rs driven without I/O (`node`), and the driver that gives it a
//! disk, a clock and a network (`driver`).

pub mod apply;
pub mod backend;
pub mod datadir;
pub mod driver;
pub mod link;
pub mod members;
pub mod message;
pub mod node;
pub mod raft_log;
pub mod raft_logger;
pub mod wal_records;

#[cfg(test)]
mod cluster_sim;
#[cfg(test)]
mod node_tests;
#[cfg(test)]
pub(crate) mod toy;
