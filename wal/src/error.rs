//! The error type.

use std::path::PathBuf;

/// Everything that can go wrong. Damage found on open names the segment file
/// and the byte offset inside it.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O call failed; `context` says which and on what file.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A record failed its checksum (or is otherwise damaged) and is followed
    /// by valid records of later commits: data that was durable is damaged.
    /// The log is not opened; nothing is truncated.
    #[error("WAL corruption in {} at offset {offset}: {reason}", segment.display())]
    Corruption {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A segment between two others is missing (sequence numbers or log
    /// positions do not follow on).
    #[error("WAL segment missing between {} and {}: {reason}", before.display(), after.display())]
    MissingSegment {
        before: PathBuf,
        after: PathBuf,
        reason: String,
    },
    /// A segment file's header is unreadable: too short, wrong magic, bad
    /// checksum, impossible fields, or a name that disagrees with it.
    #[error("bad WAL segment {}: {reason}", segment.display())]
    BadSegment { segment: PathBuf, reason: String },
    /// Another open `Wal` (in this process or another) holds the directory.
    #[error("the WAL directory {} is in use by another open WAL", dir.display())]
    Locked { dir: PathBuf },
    /// A file in the WAL directory that is not a segment.
    #[error("unexpected file in the WAL directory: {} (the WAL directory must hold only *.wal segments)", path.display())]
    UnexpectedFile { path: PathBuf },
    /// A record too large for a segment.
    #[error("record of {len} bytes is larger than the largest a segment holds ({max} bytes)")]
    RecordTooLarge { len: usize, max: usize },
    /// Invalid [`WalOptions`](crate::WalOptions).
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
    /// An earlier write or fdatasync failed; after that nothing written since
    /// the last successful fdatasync can be trusted, so the WAL refuses all
    /// further appends. Reopen it (recovery decides what survived).
    #[error("the WAL failed and takes no more appends: {0}")]
    Failed(String),
    /// The WAL was closed.
    #[error("the WAL is closed")]
    Closed,
}

/// Adapts a glommio error into [`WalError::Io`] with a context.
pub(crate) fn io_err<T>(
    context: impl Into<String>,
) -> impl FnOnce(glommio::GlommioError<T>) -> WalError {
    let context = context.into();
    lazy_io_err(move || context)
}

/// [`io_err`] for per-write paths: `context` is called only if there is an error, so the
/// string is not formatted on every successful write.
pub(crate) fn lazy_io_err<T>(
    context: impl FnOnce() -> String,
) -> impl FnOnce(glommio::GlommioError<T>) -> WalError {
    move |e| WalError::Io {
        context: context(),
        source: io_error(e),
    }
}

/// The `std::io::Error` of a glommio error, keeping its OS error code (glommio's own
/// conversion of an "enhanced" error keeps only the kind, and ENOSPC must stay ENOSPC).
pub(crate) fn io_error<T>(e: glommio::GlommioError<T>) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => e.into(),
    }
}

impl WalError {
    /// Whether this is an I/O error saying the file system is out of space (ENOSPC or
    /// EDQUOT).
    pub fn is_no_space(&self) -> bool {
        matches!(self, WalError::Io { source, .. } if crate::faults::is_no_space(source))
    }
}
