//! Crash points for tests, as etcd's gofail failpoints: started with the hidden flag
//! `--failpoint NAME`, the process exits abruptly (status 99) when it reaches the point NAME,
//! so a test can crash a member at a moment that timing alone could not hit. Points:
//!
//! - `snapshot-received`: a snapshot from the leader is complete in member/snap/, raft has
//!   not taken it yet;
//! - `snapshot-wal-recorded`: the WAL records the snapshot, the backend is not replaced yet.
//!
//! Divergence, for the corruption checks (src/corrupt):
//!
//! - `diverge-put`: this member applies every put with `~diverged` appended to the value,
//!   so its data differ from its peers' while every checksum stays valid.
//!
//! I/O failures, armed as `NAME:N`: the N-th call (counting from 1, from the start of the
//! process) at that point fails with the error named, once, through the storage layers'
//! fault seams (`wal::Faults`, `storage::FaultyFile`):
//!
//! - `wal-write-eio:N`, `wal-fsync-eio:N`: a WAL commit's write (before it is made) or its
//!   fsync (after it ran; with O_DSYNC, the write itself) fails with EIO;
//! - `wal-write-enospc:N`: a WAL commit's write fails with ENOSPC (retried by the WAL);
//! - `backend-write-eio:N`, `backend-fsync-eio:N`, `backend-write-enospc:N`: the same for
//!   the backend file's writes (half the buffer is written first) and fsyncs.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

static ARMED: OnceLock<String> = OnceLock::new();

/// Arms the point `name` for this process (once, at start).
pub fn arm(name: &str) {
    let _ = ARMED.set(name.to_owned());
}

/// Whether the point `name` is armed (for points that change behaviour, not exit).
pub fn armed(name: &str) -> bool {
    ARMED.get().is_some_and(|armed| armed == name)
}

/// Exits the process here if this point is armed.
pub fn hit(name: &str) {
    if armed(name) {
        eprintln!("corekv: failpoint {name} reached: exiting as if killed");
        std::process::exit(99);
    }
}

/// For an I/O failpoint armed as `<prefix>-<error>:N`: (error, N).
fn io_point(prefix: &str) -> Option<(&'static str, u64)> {
    let armed = ARMED.get()?;
    let (name, n) = armed.split_once(':')?;
    let n: u64 = n.parse().ok()?;
    let what = name.strip_prefix(prefix)?;
    ["write-eio", "fsync-eio", "write-enospc"]
        .into_iter()
        .find(|w| *w == what)
        .map(|w| (w, n))
}

/// Fires once, at the `n`-th call.
fn nth(n: u64) -> impl Fn() -> bool + Send + Sync {
    let calls = AtomicU64::new(0);
    move || calls.fetch_add(1, Ordering::Relaxed) + 1 == n
}

fn error(layer: &str, what: &str) -> io::Error {
    let code = if what.ends_with("enospc") {
        libc::ENOSPC
    } else {
        libc::EIO
    };
    eprintln!(
        "corekv: failpoint {layer}{what}: injecting {}",
        io::Error::from_raw_os_error(code)
    );
    io::Error::from_raw_os_error(code)
}

/// The WAL's injected failures (none unless a `wal-*` failpoint is armed).
pub fn wal_faults() -> wal::Faults {
    let Some((what, n)) = io_point("wal-") else {
        return wal::Faults::none();
    };
    let point = if what == "fsync-eio" {
        wal::IoPoint::Sync
    } else {
        wal::IoPoint::Write
    };
    let fire = nth(n);
    wal::Faults::new(move |p| (p == point && fire()).then(|| error("wal-", what)))
}

/// Wraps the backend file in the injected failures of a `backend-*` failpoint, if armed.
pub fn backend_layer(f: crate::storage::StdFile) -> Arc<dyn crate::storage::FileLayer> {
    use crate::storage::{FaultyFile, FileOp};
    let Some((what, n)) = io_point("backend-") else {
        return Arc::new(f);
    };
    let op = if what == "fsync-eio" {
        FileOp::Sync
    } else {
        FileOp::Write
    };
    let fire = nth(n);
    Arc::new(FaultyFile::new(f, move |o| {
        (o == op && fire()).then(|| error("backend-", what))
    }))
}
