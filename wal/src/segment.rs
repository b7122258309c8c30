//! Segment files: names, headers, preparation and the write path.

use crate::error::{io_err, lazy_io_err, WalError};
use crate::faults::{Faults, IoPoint};
use crate::frame::{FRAME_HEADER_LEN, SEAL_LEN};
use crate::wake::InFlight;
use glommio::io::{BufferedFile, Directory, DmaFile, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes in a segment header; the first frame starts right after it.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Identifies a corekv WAL segment.
pub const MAGIC: [u8; 8] = *b"corekvWL";
/// On-disk format version.
pub const FORMAT_VERSION: u32 = 1;
/// `O_DSYNC` on Linux.
const O_DSYNC: i32 = 0o10000;
/// Block size used for aligned (O_DIRECT) writes and for segment sizes.
pub const BLOCK: usize = 4096;
/// The smallest segment size accepted.
pub const MIN_SEGMENT_SIZE: u64 = 2 * BLOCK as u64;
/// The largest segment size accepted (recovery reads a whole segment into
/// memory, and record lengths are 32-bit).
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// How the WAL writes its segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// `O_DIRECT` through glommio's [`DmaFile`]: aligned 4 KiB blocks, the
    /// partial last block is rewritten by the next commit. The default (see
    /// the crate docs for the measurements).
    Dma,
    /// Through the page cache with glommio's [`BufferedFile`]: exact bytes.
    Buffered,
}

/// How segment files are written (from [`WalOptions`](crate::WalOptions)).
#[derive(Clone, Debug)]
pub struct WriteOpts {
    pub mode: IoMode,
    pub zero_fill: bool,
    pub dsync: bool,
    /// Wake every CPU this often while a commit's I/O is in flight (see `wake.rs`).
    pub wake_every: Option<Duration>,
    pub faults: Faults,
}

/// A segment's identity: its sequence number, its first log position and its
/// size, as in its header (and, for the first two, its file name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentId {
    pub seq: u64,
    pub start_lsn: u64,
    pub size: u64,
}

impl SegmentId {
    /// The log position just past the segment.
    pub fn end_lsn(&self) -> u64 {
        self.start_lsn + self.size
    }

    /// The next segment, of `size` bytes.
    pub fn next(&self, size: u64) -> SegmentId {
        SegmentId {
            seq: self.seq + 1,
            start_lsn: self.end_lsn(),
            size,
        }
    }

    /// The file name: `<seq>-<first lsn>.wal`, both as 16 hex digits, so that
    /// names sort in log order.
    pub fn file_name(&self) -> String {
        format!("{:016x}-{:016x}.wal", self.seq, self.start_lsn)
    }
}

/// Parses a segment file name into (seq, start lsn).
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, lsn) = stem.split_once('-')?;
    let hex16 = |s: &str| {
        if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            u64::from_str_radix(s, 16).ok()
        } else {
            None
        }
    };
    Some((hex16(seq)?, hex16(lsn)?))
}

/// Largest payload a record may have in a segment of `size` bytes.
pub fn max_payload(size: u64) -> usize {
    let room = size as usize - SEGMENT_HEADER_LEN - SEAL_LEN - FRAME_HEADER_LEN;
    room - room % crate::frame::FRAME_ALIGN
}

/// Encodes a segment header.
///
/// ```text
///  0        8        12       16       24       32          40       48        60      64
///  | magic  | version| hdr len| log id | seq    | start lsn | size   | reserved | crc32 |
/// ```
pub fn encode_header(id: &SegmentId, log_id: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&log_id.to_le_bytes());
    h[24..32].copy_from_slice(&id.seq.to_le_bytes());
    h[32..40].copy_from_slice(&id.start_lsn.to_le_bytes());
    h[40..48].copy_from_slice(&id.size.to_le_bytes());
    let crc = crc32fast::hash(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes and checks a segment header; returns (id, log id) or why not.
pub fn decode_header(h: &[u8]) -> Result<(SegmentId, u64), String> {
    let h = h
        .get(..SEGMENT_HEADER_LEN)
        .ok_or_else(|| format!("{} bytes, shorter than a segment header", h.len()))?;
    if h[0..8] != MAGIC {
        return Err("not a corekv WAL segment (bad magic)".into());
    }
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap());
    if crc32fast::hash(&h[..60]) != u32_at(60) {
        return Err("segment header checksum mismatch".into());
    }
    if u32_at(8) != FORMAT_VERSION {
        return Err(format!("unsupported format version {}", u32_at(8)));
    }
    if u32_at(12) as usize != SEGMENT_HEADER_LEN {
        return Err(format!("unsupported header length {}", u32_at(12)));
    }
    let id = SegmentId {
        seq: u64_at(24),
        start_lsn: u64_at(32),
        size: u64_at(40),
    };
    if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&id.size)
        || id.size & (BLOCK as u64 - 1) != 0
    {
        return Err(format!("invalid segment size {}", id.size));
    }
    if id.start_lsn.checked_add(id.size).is_none() {
        return Err(format!("start position {} overflows", id.start_lsn));
    }
    Ok((id, u64_at(16)))
}

/// Fsyncs a directory, so that entries created, renamed or removed in it are
/// durable.
pub async fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let d = Directory::open(dir)
        .await
        .map_err(io_err(format!("opening directory {}", dir.display())))?;
    d.sync()
        .await
        .map_err(io_err(format!("fsyncing directory {}", dir.display())))?;
    d.close()
        .await
        .map_err(io_err(format!("closing directory {}", dir.display())))
}

/// Creates segment `id` in `dir`, fully prepared: written under a temporary
/// name (header, then zeros over its whole size when `zero_fill`, else only
/// fallocate'd), fdatasync'd, renamed into place, and the directory fsync'd.
/// Returns it opened for writing.
pub async fn create_segment(
    dir: &Path,
    id: SegmentId,
    log_id: u64,
    w: WriteOpts,
) -> Result<SegmentWriter, WalError> {
    let path = dir.join(id.file_name());
    let tmp = dir.join(format!("{}.tmp", id.file_name()));
    let ctx = |what: &str| format!("{what} new segment {}", tmp.display());
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&tmp)
        .await
        .map_err(io_err(ctx("creating")))?;
    let filled = match fill_segment(&file, &id, log_id, &w, &ctx).await {
        Ok(()) => file.close().await.map_err(io_err(ctx("closing"))),
        Err(e) => {
            let _ = file.close().await;
            Err(e)
        }
    };
    if let Err(e) = filled {
        // Give back what the temporary file holds: after ENOSPC the space it took is what
        // the rest of the system (and a retry) needs.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    glommio::io::rename(&tmp, &path)
        .await
        .map_err(io_err(ctx("renaming")))?;
    sync_dir(dir).await?;
    let mut tail = Vec::with_capacity(BLOCK);
    tail.extend_from_slice(&encode_header(&id, log_id));
    SegmentWriter::open(&path, id, w, SEGMENT_HEADER_LEN, tail).await
}

/// Preallocates a new segment's file, writes its header (and zeros over it) and makes it
/// durable.
async fn fill_segment(
    file: &DmaFile,
    id: &SegmentId,
    log_id: u64,
    w: &WriteOpts,
    ctx: &dyn Fn(&str) -> String,
) -> Result<(), WalError> {
    w.faults
        .check(IoPoint::Prepare)
        .map_err(|source| WalError::Io {
            context: ctx("preallocating"),
            source,
        })?;
    file.pre_allocate(id.size, false)
        .await
        .map_err(io_err(ctx("preallocating")))?;
    let header = encode_header(id, log_id);
    let upto = if w.zero_fill { id.size } else { BLOCK as u64 };
    let chunk = 1usize << 20;
    let mut off = 0u64;
    while off < upto {
        let n = chunk.min((upto - off) as usize);
        let mut buf = file.alloc_dma_buffer(n);
        buf.as_bytes_mut().fill(0);
        if off == 0 {
            buf.as_bytes_mut()[..SEGMENT_HEADER_LEN].copy_from_slice(&header);
        }
        let written = file
            .write_at(buf, off)
            .await
            .map_err(io_err(ctx("writing")))?;
        if written == 0 {
            return Err(WalError::Io {
                context: ctx("writing"),
                source: std::io::ErrorKind::WriteZero.into(),
            });
        }
        off += written as u64;
    }
    file.fdatasync()
        .await
        .map_err(io_err(ctx("fdatasync of")))?;
    Ok(())
}

/// Reads a whole segment file (at most `limit` bytes of it).
pub async fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, WalError> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let file = DmaFile::open(path).await.map_err(io_err(ctx("opening")))?;
    let len = file
        .file_size()
        .await
        .map_err(io_err(ctx("reading the size of")))?
        .min(limit);
    let mut out = Vec::with_capacity(len as usize);
    let chunk = 4u64 << 20;
    while (out.len() as u64) < len {
        let off = out.len() as u64;
        let want = chunk.min(len - off) as usize;
        let got = file
            .read_at_aligned(off, file.align_up(want as u64) as usize)
            .await
            .map_err(io_err(ctx("reading")))?;
        if got.is_empty() {
            break;
        }
        out.extend_from_slice(&got[..got.len().min(want)]);
    }
    file.close().await.map_err(io_err(ctx("closing")))?;
    Ok(out)
}

enum Handle {
    Dma(DmaFile),
    Buffered(BufferedFile),
}

/// The segment currently being appended to: writes whole frames at its end.
///
/// With [`IoMode::Dma`] every write covers whole 4 KiB blocks: the partial
/// block at the end (whose earlier bytes are already durable) is kept in
/// memory and written again, with the new bytes after it and zeros up to the
/// block's end. The rewritten earlier bytes are identical, so a torn rewrite
/// cannot damage them.
pub struct SegmentWriter {
    handle: Handle,
    /// Opened with O_DSYNC: every write is durable when it completes.
    dsync: bool,
    wake_every: Option<Duration>,
    faults: Faults,
    path: PathBuf,
    id: SegmentId,
    /// Offset where the next write goes.
    end: usize,
    /// The bytes of the block containing `end`, up to `end` (DMA only).
    tail: Vec<u8>,
}

impl SegmentWriter {
    /// Opens an existing segment for writing at `end`; `tail` holds the bytes
    /// of the block containing `end` that lie before it.
    pub async fn open(
        path: &Path,
        id: SegmentId,
        w: WriteOpts,
        end: usize,
        tail: Vec<u8>,
    ) -> Result<SegmentWriter, WalError> {
        debug_assert_eq!(tail.len(), end % BLOCK);
        let ctx = format!("opening segment {} for writing", path.display());
        let mut oo = OpenOptions::new();
        oo.read(true).write(true);
        if w.dsync {
            oo.custom_flags(O_DSYNC);
        }
        let handle = match w.mode {
            IoMode::Dma => {
                let f = oo.dma_open(path).await.map_err(io_err(ctx))?;
                if f.alignment() > BLOCK as u64 {
                    return Err(WalError::InvalidOptions(format!(
                        "the device under {} needs {}-byte aligned direct I/O, more than the WAL's {BLOCK}; use IoMode::Buffered",
                        path.display(),
                        f.alignment()
                    )));
                }
                Handle::Dma(f)
            }
            IoMode::Buffered => {
                Handle::Buffered(oo.buffered_open(path).await.map_err(io_err(ctx))?)
            }
        };
        Ok(SegmentWriter {
            handle,
            dsync: w.dsync,
            wake_every: w.wake_every,
            faults: w.faults,
            path: path.to_owned(),
            id,
            end,
            tail,
        })
    }

    pub fn id(&self) -> SegmentId {
        self.id
    }

    /// Offset where the next write goes.
    pub fn end(&self) -> usize {
        self.end
    }

    /// Writes `bytes` at the current end (not yet durable: see [`sync`]).
    ///
    /// Nothing of the writer's state changes unless the write succeeds, so a write that
    /// failed with ENOSPC can be retried with the same bytes: whatever part of it reached
    /// the file is written again, identically.
    ///
    /// [`sync`]: SegmentWriter::sync
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        let ctx = || format!("writing segment {}", self.path.display());
        let new_end = self.end + bytes.len();
        if new_end as u64 > self.id.size {
            return Err(WalError::Io {
                context: ctx(),
                source: std::io::Error::other("write past the end of the segment"),
            });
        }
        self.faults
            .check(IoPoint::Write)
            .map_err(|source| WalError::Io {
                context: ctx(),
                source,
            })?;
        let waking = self.wake_every.map(InFlight::new);
        let new_tail = match &self.handle {
            Handle::Dma(file) => {
                let start = self.end - self.tail.len();
                let total = crate::frame::align_up(new_end, BLOCK) - start;
                let mut buf = file.alloc_dma_buffer(total);
                let b = buf.as_bytes_mut();
                b[..self.tail.len()].copy_from_slice(&self.tail);
                b[self.tail.len()..self.tail.len() + bytes.len()].copy_from_slice(bytes);
                b[self.tail.len() + bytes.len()..].fill(0);
                let keep_from = (new_end - new_end % BLOCK) - start;
                let new_tail = buf.as_bytes()[keep_from..new_end - start].to_vec();
                let mut written = file
                    .write_at(buf, start as u64)
                    .await
                    .map_err(lazy_io_err(ctx))?;
                // Short writes are possible in principle; finish the rest
                // (still block aligned: O_DIRECT writes whole blocks).
                while written < total {
                    if written == 0 || written % BLOCK != 0 {
                        return Err(WalError::Io {
                            context: ctx(),
                            source: std::io::Error::other(format!(
                                "short direct write of {written} of {total} bytes"
                            )),
                        });
                    }
                    let mut rest = file.alloc_dma_buffer(total - written);
                    fill_rest(rest.as_bytes_mut(), start + written, self.end, bytes);
                    written += file
                        .write_at(rest, (start + written) as u64)
                        .await
                        .map_err(lazy_io_err(ctx))?;
                }
                Some(new_tail)
            }
            Handle::Buffered(file) => {
                let mut done = 0;
                while done < bytes.len() {
                    let n = file
                        .write_at(bytes[done..].to_vec(), (self.end + done) as u64)
                        .await
                        .map_err(lazy_io_err(ctx))?;
                    if n == 0 {
                        return Err(WalError::Io {
                            context: ctx(),
                            source: std::io::ErrorKind::WriteZero.into(),
                        });
                    }
                    done += n;
                }
                None
            }
        };
        drop(waking);
        if self.dsync {
            // With O_DSYNC the write was the durability point.
            self.faults
                .check(IoPoint::Sync)
                .map_err(|source| WalError::Io {
                    context: format!("writing segment {} (O_DSYNC)", self.path.display()),
                    source,
                })?;
        }
        if let Some(t) = new_tail {
            self.tail = t;
        }
        self.end = new_end;
        Ok(())
    }

    /// fdatasync: everything written so far is durable when this returns
    /// (a no-op with O_DSYNC, where each write already was).
    pub async fn sync(&self) -> Result<(), WalError> {
        if self.dsync {
            return Ok(());
        }
        let ctx = || format!("fdatasync of segment {}", self.path.display());
        let _waking = self.wake_every.map(InFlight::new);
        match &self.handle {
            Handle::Dma(f) => f.fdatasync().await.map_err(lazy_io_err(ctx))?,
            Handle::Buffered(f) => f.fdatasync().await.map_err(lazy_io_err(ctx))?,
        }
        self.faults
            .check(IoPoint::Sync)
            .map_err(|source| WalError::Io {
                context: ctx(),
                source,
            })
    }

    /// Writes zeros over `[self.end, upto)` and syncs (used by recovery to
    /// erase a torn tail before appending after it). Rounds `upto` up to a
    /// block and never goes past the segment.
    pub async fn zero_until(&mut self, upto: usize) -> Result<(), WalError> {
        let end = self.end;
        let tail = self.tail.clone();
        let upto = crate::frame::align_up(upto, BLOCK).min(self.id.size as usize);
        let mut at = end;
        let zeros = vec![0u8; 1 << 20];
        while at < upto {
            let n = zeros.len().min(upto - at);
            self.write(&zeros[..n]).await?;
            at += n;
        }
        self.sync().await?;
        // Rewind: the zeros are not log content.
        self.end = end;
        self.tail = tail;
        Ok(())
    }

    pub async fn close(self) -> Result<(), WalError> {
        let ctx = format!("closing segment {}", self.path.display());
        match self.handle {
            Handle::Dma(f) => f.close().await.map_err(io_err(ctx)),
            Handle::Buffered(f) => f.close().await.map_err(io_err(ctx)),
        }
    }
}

/// Fills `out`, the part of a block-aligned write starting at file offset
/// `from` (past the first block, so no earlier bytes are in it), with the
/// `bytes` being written at `old_end` and zeros around them.
fn fill_rest(out: &mut [u8], from: usize, old_end: usize, bytes: &[u8]) {
    out.fill(0);
    let lo = from.max(old_end);
    let hi = (from + out.len()).min(old_end + bytes.len());
    if lo < hi {
        out[lo - from..hi - from].copy_from_slice(&bytes[lo - old_end..hi - old_end]);
    }
}
