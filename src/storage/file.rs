//! The file layer under the B+tree. Reads go through a read-only memory map of
//! [`FileLayer::file`]; every write, length change and sync goes through the
//! trait, so tests can drop or tear writes that were never synced
//! (see `tests::CrashFile`) or make chosen calls fail ([`FaultyFile`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Positioned writes + sync over one file. Implementations must apply writes
/// to [`FileLayer::file`] (the memory map reads from it).
pub trait FileLayer: Send + Sync + 'static {
    /// The file the map is built from.
    fn file(&self) -> &File;
    fn file_len(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Grows the file to `len` bytes with its blocks allocated, so that writes below `len`
    /// cannot fail for want of space later (`fallocate`); where the file system cannot
    /// allocate ahead, just sets the length. On failure the file may have grown part of
    /// the way: the caller sets the length back.
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Make every write and length change so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
}

/// The real thing: pwrite + fdatasync on a `std::fs::File`.
pub struct StdFile(pub File);

impl FileLayer for StdFile {
    fn file(&self) -> &File {
        &self.0
    }
    fn file_len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        use std::os::unix::io::AsRawFd;
        let len_arg = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file length too large"))?;
        loop {
            // SAFETY: fallocate on a descriptor this struct owns; no memory is passed.
            let rc = unsafe { libc::fallocate(self.0.as_raw_fd(), 0, 0, len_arg) };
            if rc == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // A file system without fallocate: a sparse length, as before.
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => return self.0.set_len(len),
                _ => return Err(e),
            }
        }
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

/// A file read where it lies and never written: its first `len` bytes are the database (a
/// snapshot file ends with a SHA-256 of the backend after them). Writes fail.
pub struct ReadOnlyFile {
    pub file: File,
    pub len: u64,
}

impl FileLayer for ReadOnlyFile {
    fn file(&self) -> &File {
        &self.file
    }
    fn file_len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(read_only())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(read_only())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

fn read_only() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "opened read-only")
}

/// A call of the file layer, as [`FaultyFile`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileOp {
    SetLen,
    Allocate,
    Write,
    Sync,
}

type FaultRule = dyn Fn(FileOp) -> Option<io::Error> + Send + Sync;

/// A [`FileLayer`] that makes chosen calls fail, for tests: the backend's half of the I/O
/// seam (the WAL's is `wal::Faults`). The rule is asked at every call; an error it returns
/// is what the call returns, with these effects on the file:
///
/// * `Write`: the first half of the buffer is written, then the error: a short write, as a
///   disk filling up mid-write gives.
/// * `Sync`: the real sync runs first, then the error: a failed fsync says nothing about
///   what reached the disk.
/// * `SetLen`, `Allocate`: nothing happens.
///
/// Production code opens [`StdFile`] directly; this wrapper costs nothing there.
pub struct FaultyFile<L: FileLayer> {
    inner: L,
    rule: Box<FaultRule>,
}

impl<L: FileLayer> FaultyFile<L> {
    pub fn new(
        inner: L,
        rule: impl Fn(FileOp) -> Option<io::Error> + Send + Sync + 'static,
    ) -> FaultyFile<L> {
        FaultyFile {
            inner,
            rule: Box::new(rule),
        }
    }
}

impl<L: FileLayer> FileLayer for FaultyFile<L> {
    fn file(&self) -> &File {
        self.inner.file()
    }
    fn file_len(&self) -> io::Result<u64> {
        self.inner.file_len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        match (self.rule)(FileOp::SetLen) {
            Some(e) => Err(e),
            None => self.inner.set_len(len),
        }
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        match (self.rule)(FileOp::Allocate) {
            Some(e) => Err(e),
            None => self.inner.allocate(len),
        }
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match (self.rule)(FileOp::Write) {
            Some(e) => {
                self.inner.write_at(&buf[..buf.len() / 2], offset)?;
                Err(e)
            }
            None => self.inner.write_at(buf, offset),
        }
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()?;
        match (self.rule)(FileOp::Sync) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Whether an I/O error means the file system is out of space (ENOSPC, or EDQUOT).
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
