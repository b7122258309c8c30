//! Crash points for tests, as etcd's gofail failpoints: started with the hidden flag
//! `--failpoint NAME`, the process exits abruptly (status 99) when it reaches the point NAME,
//! so a test can crash a member at a moment that timing alone could not hit. Points:
//!
//! - `snapshot-received`: a snapshot from the leader is complete in member/snap/, raft has
//!   not taken it yet;
//! - `snapshot-wal-recorded`: the WAL records the snapshot, the backend is not replaced yet.

use std::sync::OnceLock;

static ARMED: OnceLock<String> = OnceLock::new();

/// Arms the point `name` for this process (once, at start).
pub fn arm(name: &str) {
    let _ = ARMED.set(name.to_owned());
}

/// Exits the process here if this point is armed.
pub fn hit(name: &str) {
    if ARMED.get().is_some_and(|armed| armed == name) {
        eprintln!("corekv: failpoint {name} reached: exiting as if killed");
        std::process::exit(99);
    }
}
