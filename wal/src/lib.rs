//! Segmented, checksummed, group-committed write-ahead log.
//!
//! corekv's consensus core stores raft entries, hard state and snapshot
//! markers here, but the WAL knows nothing of raft: it stores typed, opaque
//! records (`record_type: u8` + payload bytes) and gives each a [`Position`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), wal::WalError> {
//! use wal::{Wal, WalOptions};
//! let (wal, recovery) = Wal::open("/var/lib/corekv/wal", WalOptions::default()).await?;
//! for r in &recovery.records { /* replay r.record_type, r.payload */ }
//! let pos = wal.append(1, b"entry").await?;          // durable when it returns
//! wal.append_batch(&[(1, b"e1"), (1, b"e2"), (2, b"hard state")]).await?;
//! wal.release_before(pos).await?;                     // after a snapshot at `pos`
//! wal.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Use
//!
//! A [`Wal`] lives on one glommio executor (the consensus core) and is used
//! by many tasks at once: every method takes `&self`, and the type is
//! `!Send`. [`Wal::open`] spawns a background writer task on the current
//! executor. Call [`Wal::close`] before dropping it to finish what is queued.
//! The directory is locked (`flock`) while a `Wal` has it open, so a second
//! open, from this process or another, fails with [`WalError::Locked`].
//!
//! * [`Wal::append`] / [`Wal::append_batch`] return once the records are
//!   durable (written and fdatasync'd). A batch returns one position per
//!   record. A batch that fits in a segment is all-or-nothing after a crash.
//! * [`Wal::release_before`] removes whole segments lying before a position.
//! * [`Position`] is a global byte offset in the log (an LSN): totally
//!   ordered, and stable across reopen. Positions of records only grow.
//! * If a write or fdatasync ever fails, the WAL refuses every later append
//!   ([`WalError::Failed`]): after a failed fdatasync the kernel may have
//!   dropped the dirty data, so nothing since the last good one is trusted.
//!   The owner should stop and reopen (recovery decides what survived).
//!   A failed fdatasync is never retried (PostgreSQL's "fsyncgate": a retry
//!   can succeed with the data gone).
//! * The exception is running out of space (ENOSPC or EDQUOT) on a *write*:
//!   see [Out of space](#out-of-space).
//!
//! # Files
//!
//! A directory of segment files of a fixed size (default 64 MiB, each
//! segment keeps the size it was created with), named
//! `<seq>-<first position>.wal` with both numbers as 16 hex digits, so that
//! names sort in log order and show where each segment starts. Segment `n+1`
//! starts at the position where segment `n` ends (its first position plus
//! its size).
//!
//! A new segment is prepared under the name `<name>.tmp`: fallocate'd,
//! header written, zeros written over its whole size, fdatasync'd, renamed
//! into place, and then the directory is fsync'd. So a segment file that has
//! its real name is complete; leftover `.tmp` files are deleted on open. The
//! writer always has the next segment prepared in the background while it
//! writes the current one, so rotation does not wait for preparation
//! (appenders never wait for it at all; the writer would only if filling a
//! segment took less time than zero-filling the next, and
//! [`WalStats::rotation_wait`] counts that). Released segments are removed
//! oldest first, with a directory fsync after each, so a crash leaves a
//! contiguous log. On open, a prepared (all-zero) segment after the last one
//! written is kept for use; other segments past the end are removed.
//!
//! # Out of space
//!
//! The segment being written is preallocated and zero-filled, so on ext4,
//! xfs or tmpfs a commit's write never needs new blocks: space runs out when
//! the *next* segment is prepared. That preparation runs ahead in the
//! background, so when it fails the current segment is still (nearly) whole,
//! and that is the WAL's reserve: appends go on into it while the owner,
//! told by [`Wal::no_space`], stops taking new work (corekv raises its
//! NOSPACE alarm and refuses writes) and frees space. The preparation is
//! retried by itself (10 ms apart, doubling to 1 s; its temporary file is
//! removed after each failure so it holds no space meanwhile). Only when the
//! current segment is full too do appends wait, unacknowledged, until the
//! next segment exists.
//!
//! A commit's write that fails with ENOSPC (possible on copy-on-write file
//! systems, or without preallocation) is retried the same way with the same
//! bytes at the same place: the writer's state changes only after a write
//! succeeds, so a retry writes again exactly what a partial attempt may have
//! left, and the commit numbering stays gapless. Such a write left nothing in
//! the page cache for the kernel to drop, unlike a failed fdatasync, which is
//! never retried. A log whose last segment is sealed and whose next one was
//! never made opens without making it (the writer makes it when needed), so
//! a log can be opened and read on a full disk.
//!
//! Failures are injected in tests through [`WalOptions::faults`]
//! ([`Faults`], [`IoPoint`]); empty in production.
//!
//! # Byte layout
//!
//! All integers are little-endian. A segment:
//!
//! ```text
//!  offset 0                                                              64
//!         +--------+-------+-------+--------+-----+-----------+------+-----+-----+
//!         | magic  | vers. | hdr   | log id | seq | first pos | size | 0.. | crc |
//!         | 8 B    | u32=1 | len 64| u64    | u64 | u64       | u64  | 12B | u32 |
//!         +--------+-------+-------+--------+-----+-----------+------+-----+-----+
//!  64     frame, frame, ..., frame, [seal frame], zeros to the end of the segment
//! ```
//!
//! `magic` is `corekvWL`; `crc` is CRC-32 (crc32fast) of bytes 0..60. The log
//! id is random, chosen when the log is created, and the same in every
//! segment.
//!
//! A frame starts at a multiple of 8 (from the segment start) and is padded
//! with zeros to a multiple of 8:
//!
//! ```text
//!  0          4           8          12     13      14     15     16               24
//!  +----------+-----------+----------+------+-------+------+------+----------------+
//!  | hdr crc  | data crc  | len      | kind | flags | type | 0    | commit         |
//!  | u32      | u32       | u32      | u8   | u8    | u8   | u8   | u64            |
//!  +----------+-----------+----------+------+-------+------+------+----------------+
//!  24  payload (len bytes) | zero padding to a multiple of 8
//! ```
//!
//! * `data crc` = CRC-32 of the payload.
//! * `hdr crc` = CRC-32 of (log id ‖ position of the frame ‖ bytes 4..24).
//!   The log id and the position are not stored in the frame but covered by
//!   its checksum, so a frame verifies only at the place it was written for,
//!   in the log it was written for. Through `data crc` it also covers the
//!   payload.
//! * `kind` 1 is a record; `kind` 2 is the *seal* that ends a segment (no
//!   payload). Every segment keeps room for its seal; a batch that does not
//!   fit in what is left of the segment goes into the next one.
//! * `flags` bit 0 marks the last frame of a commit; other bits are zero.
//! * `type` is the caller's record type.
//! * `commit` numbers the write + fdatasync the frame was part of. Commits
//!   are numbered 1, 2, 3... without gaps across the whole log; each commit
//!   lies inside one segment.
//!
//! ## What is chained, and why not more
//!
//! Nothing is chained from one record to the next (unlike etcd, whose CRC
//! runs through every record). A chain makes every frame after a damaged one
//! unverifiable, and verifying the frames *after* a damaged one is exactly
//! what tells a torn write from corruption (below). What a chain would buy
//! is bought otherwise: each frame is bound to its own position and to the
//! log (via the header CRC), so stale, misplaced or foreign bytes never
//! verify; commit numbers and the end-of-commit flag give the order of
//! writes; segment headers bind segments to their place in the log; the seal
//! marks that a segment ended on purpose.
//!
//! The header has its own CRC so that a length field is trusted only after
//! it verified: a damaged 4 GiB length is never used to read or allocate,
//! and scanning damaged space for frames costs a 24-byte CRC per candidate.
//!
//! # Group commit
//!
//! Appenders encode their frames into a staging buffer (positions are known
//! at once) and wait. One writer task takes everything staged, writes it
//! with one write and makes it durable with one fdatasync; everything staged
//! meanwhile forms the next commit. At most one write + fdatasync is in
//! flight, and there are no timers: a burst of N appends costs about one
//! fsync. The writer is woken by the first appender of a burst and, glommio
//! running ready tasks in order, runs after the appenders that were already
//! runnable, so they join the same commit. With many appenders the commits
//! can also settle into two alternating groups, one staging (CPU) while the
//! other's commit is on the disk.
//!
//! # Recovery
//!
//! Because only one commit is ever in flight, a crash can damage only the
//! last commit: every earlier one was durable before the last began. On
//! open, segments are read in order and checked (header, name, log id, no
//! gap in sequence numbers or positions), then frames are decoded until the
//! first one that does not verify. Then:
//!
//! * The valid log ends after the last *complete* commit (its last frame has
//!   the end-of-commit flag, or is a seal). Frames of an incomplete final
//!   commit are discarded, so a batch is all-or-nothing.
//! * The rest of the log is scanned for frames that verify. Frames of the
//!   final, torn commit may be there (a write's blocks can reach the disk in
//!   any order). Any valid frame of another commit, or in a later segment,
//!   means data after the damage was durable: open fails with
//!   [`WalError::Corruption`] naming the segment file and offset. Nothing
//!   is ever dropped silently in that case.
//! * Otherwise this is a torn tail: it is erased (zeros written over it and
//!   fdatasync'd, so that nothing stale survives to confuse a later
//!   recovery), reported in [`Recovery::truncated`], and the log goes on
//!   from there. A zeroed or preallocated tail is the normal end of the log
//!   and not reported; a segment file cut short is extended again.
//! * A missing segment between two others, a file that is not a segment, a
//!   short or garbage segment file: each is a clear error, never a panic.
//!
//! What this cannot tell apart: damage inside the *final* commit that
//! leaves nothing of a later commit after it looks exactly like a torn
//! write, and the final commit is then dropped and reported as truncated.
//! A deleted *first* or *last* segment cannot be seen either (the caller's
//! snapshot marker and raft's own checks cover the first).
//!
//! # I/O: DMA, fdatasync through io_uring, zero-filled segments
//!
//! Both glommio's `DmaFile` (O_DIRECT) and `BufferedFile` are implemented
//! ([`IoMode`]), and commits can be made durable either by a write followed
//! by an fdatasync (both through io_uring) or by one write on an `O_DSYNC`
//! file ([`WalOptions::o_dsync`]). The defaults, DMA + O_DSYNC into
//! zero-filled segments, are what measured best on this machine (ext4 on a
//! virtio disk, 2 cores shared with other work); `README.md` has the tables
//! and `cargo run --release -p wal --example ioprobe` re-measures them.
//!
//! * **DMA over buffered.** On a quiet machine a 4 KiB O_DIRECT write +
//!   fdatasync costs about as much as a plain `pwrite` + `fdatasync`
//!   (130–160 µs p50), a buffered one through glommio a little more
//!   (160–180 µs). Under load from other processes the difference is large:
//!   buffered writeback is throttled and queued behind everyone's dirty
//!   pages (the raw `pwrite` + `fdatasync` loop went to 2–4 ms p50), while
//!   DMA writes stayed near 130 µs. At the WAL level buffered mode reached
//!   70–80% of DMA's throughput with 1024 appenders on a quiet machine.
//! * **O_DSYNC over write + fdatasync.** One write that is durable when it
//!   completes, instead of a write and then an fdatasync (run by an io_uring
//!   worker thread): one completion to wake up for per commit, not two. In
//!   six alternating pairs of walbench runs it was faster in every pair (one
//!   appender p50 0.85–1.47x of the raw fdatasync loop against 1.00–1.69x;
//!   1024 appenders +15–25%), and the server measured the same in six A/B
//!   pairs. An earlier round under heavy load from other sessions once saw
//!   O_DSYNC writes at 1–4 ms p50 while write + fdatasync stayed at
//!   110–160 µs; `o_dsync: false` keeps that choice.
//! * **Zero-filled over fallocate'd.** Into a fallocate'd (unwritten) extent,
//!   a write + fdatasync cost 180–260 µs p50 against 130–170 µs into a
//!   zero-filled one: ext4 must convert the extent to written, and the
//!   fdatasync must then commit that to the journal. Zero-filling a 64 MiB
//!   segment costs disk bandwidth, but it happens in the background while
//!   the previous segment is written, so it is off the append path.
//!
//! With DMA every write covers whole 4 KiB blocks: the partial last block is
//! kept in memory and written again by the next commit with the new frames
//! after it. Its earlier bytes are rewritten unchanged, so even a torn
//! rewrite leaves them intact.

mod error;
pub mod faults;
pub mod frame;
mod recovery;
mod segment;
pub mod wake;
mod wal;

pub use error::WalError;
pub use faults::{Faults, IoPoint};
pub use segment::IoMode;
pub use wal::{Wal, WalOptions, WalStats};

use std::fmt;
use std::path::PathBuf;

/// A place in the log: a byte offset from the start of the log (an LSN).
/// Totally ordered; a record's position is where its frame starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(u64);

impl Position {
    /// The position `lsn` bytes from the start of the log.
    pub const fn from_lsn(lsn: u64) -> Position {
        Position(lsn)
    }

    /// The byte offset from the start of the log.
    pub const fn lsn(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One recovered record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub record_type: u8,
    pub payload: Vec<u8>,
    pub position: Position,
}

/// What [`Wal::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Every durable record, in log order.
    pub records: Vec<Record>,
    /// The end of the valid log: every recovered record lies before it and
    /// every new one will lie at or after it.
    pub last_valid: Position,
    /// The torn tail that was erased, if any.
    pub truncated: Option<Truncation>,
}

/// A torn tail erased by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// The segment file it was in.
    pub segment: PathBuf,
    /// Offset in that file where the valid log now ends.
    pub offset: u64,
    /// The same place as a log position.
    pub position: Position,
    /// Bytes of non-zero data erased after that point.
    pub discarded_bytes: u64,
    /// Whole, verifying records of the incomplete final commit dropped.
    pub discarded_records: usize,
    /// What was found there.
    pub reason: String,
}

#[doc(hidden)]
/// Runs recovery over in-memory segment files (name, bytes) without I/O; for
/// the fuzz target and tests. Files are named like segments (`<seq>-<lsn>.wal`).
pub fn recover_images(files: &[(&str, &[u8])]) -> Result<Recovery, WalError> {
    let mut sorted: Vec<&(&str, &[u8])> = files.iter().collect();
    sorted.sort_by_key(|(name, _)| (segment::parse_file_name(name), *name));
    let heads: Vec<(PathBuf, Vec<u8>)> = sorted
        .iter()
        .map(|(n, b)| {
            (
                PathBuf::from(n),
                b[..b.len().min(segment::SEGMENT_HEADER_LEN)].to_vec(),
            )
        })
        .collect();
    let ids = recovery::check_headers(&heads)?;
    let images: Vec<recovery::Image> = heads
        .into_iter()
        .zip(ids)
        .zip(sorted)
        .map(|(((path, _), id), (_, bytes))| recovery::Image {
            path,
            id,
            bytes: bytes[..bytes.len().min(id.size as usize)].to_vec(),
        })
        .collect();
    let r = recovery::recover(&images)?;
    Ok(Recovery {
        records: r.records,
        last_valid: r.last_valid,
        truncated: r.truncated,
    })
}
