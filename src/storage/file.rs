//! The file layer under the B+tree. Reads go through a read-only memory map of
//! [`FileLayer::file`]; every write, length change and sync goes through the
//! trait, so tests can drop or tear writes that were never synced
//! (see `tests::CrashFile`).

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
