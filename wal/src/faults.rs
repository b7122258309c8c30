//! The I/O seam for fault injection: every write, sync and segment preparation of the WAL
//! asks [`Faults`] first, so a test can make a chosen call fail (ENOSPC, EIO, ...) the way
//! redb's `StorageBackend` or TigerBeetle's simulated storage let their tests do.
//!
//! In production [`Faults`] is empty (`WalOptions::default()`), and each check is one
//! branch on a `None`.

use std::fmt;
use std::io;
use std::sync::Arc;

/// The I/O call the WAL is about to make (or, for [`IoPoint::Sync`], has just made).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoPoint {
    /// Preparing a new segment: checked once, after its temporary file was created and
    /// before it is preallocated, so a failure leaves a temporary file to clean up, as a
    /// real `fallocate` failing with ENOSPC would.
    Prepare,
    /// A commit's write into the segment being appended to, checked before the write: a
    /// failure means nothing of the commit reached the file.
    Write,
    /// A commit's durability point (the fdatasync, or with `O_DSYNC` the write itself),
    /// checked *after* the real call: a failure means the bytes may or may not be on disk,
    /// which is what a failed fsync tells (PostgreSQL's "fsyncgate").
    Sync,
}

type FaultFn = dyn Fn(IoPoint) -> Option<io::Error> + Send + Sync;

/// Decides, per I/O call, whether it fails and with what. Cheap to clone.
#[derive(Clone, Default)]
pub struct Faults(Option<Arc<FaultFn>>);

impl Faults {
    /// No faults: the production setting.
    pub fn none() -> Faults {
        Faults(None)
    }

    /// Calls `f` before (or for [`IoPoint::Sync`], after) each I/O call; a `Some(error)`
    /// makes that call fail with it.
    pub fn new(f: impl Fn(IoPoint) -> Option<io::Error> + Send + Sync + 'static) -> Faults {
        Faults(Some(Arc::new(f)))
    }

    /// Whether any fault can be injected.
    pub fn is_active(&self) -> bool {
        self.0.is_some()
    }

    #[inline]
    pub(crate) fn check(&self, point: IoPoint) -> io::Result<()> {
        match &self.0 {
            None => Ok(()),
            Some(f) => f(point).map_or(Ok(()), Err),
        }
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Faults(active)"
        } else {
            "Faults(none)"
        })
    }
}

/// Whether an I/O error means the file system is out of space (ENOSPC, or EDQUOT: out of
/// quota). Such a failed *write* left nothing the kernel will lose later, so it can be
/// retried; a failed fsync never can.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
