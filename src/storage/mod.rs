//! The storage backend: a memory-mapped copy-on-write B+tree in one file.
//!
//! # Model
//!
//! * One file of fixed-size pages (4 KiB by default). Pages 0 and 1 are the two
//!   **meta pages**; every commit writes the next transaction id into slot
//!   `txn % 2`, so the other slot always holds the previous committed state.
//!   [`Db::open`] picks the valid meta page with the highest transaction id.
//! * Every other page carries a crc32 checksum of its contents (and its own
//!   page number, so a write that landed in the wrong place is caught too).
//! * Readers ([`ReadTxn`]) hold an `Arc` of one committed [`Version`] (its roots
//!   and the memory map it is read through). Taking one is a clone of an `Arc`
//!   under a mutex held for nanoseconds; no lock is held while reading, and the
//!   writer never modifies a page a committed version can reach (copy-on-write).
//! * One writer at a time ([`WriteTxn`]). It copies every page it changes into
//!   an in-memory **dirty page** (once per batch: later changes to the same page
//!   edit the copy in place) and reads its own writes through those copies.
//!   Nothing is written to the file before [`WriteTxn::commit`].
//! * Values that do not fit a quarter page are stored in **overflow runs**
//!   (contiguous pages, one checksum over the run), so reads of large values
//!   are a single slice of the map.
//!
//! # Commit and crash safety (one fsync)
//!
//! Commit writes the dirty pages (sorted, contiguous ones coalesced into one
//! `pwrite`), then the meta page into the slot *not* holding the current
//! state, then calls **fdatasync once**. Every page carries the id of the
//! transaction that wrote it, and the freelist chain written by a commit also
//! lists the runs of pages that commit wrote. At open, the newest valid meta
//! wins only if its commit verifies: every page it wrote is present with a
//! good checksum and its txn id. Otherwise the disk persisted the meta but not
//! all of the pages (or part of the meta only, failing its checksum), and open
//! uses the previous meta, whose pages the failed commit never touched: dirty
//! pages only go to pages that no committed-and-visible version references.
//! So a crash at any instant leaves either the old or the new state.
//! Transaction ids are never reused (open skips one), so a page left behind
//! by a commit that crashed cannot pass for a page of a later one.
//! [`Db::recovery_note`] says when open fell back.
//!
//! Why one sync and not two: the classic protocol (pages, fsync, meta, fsync)
//! needs no verification at open, but measured on this machine's disk the
//! second flush costs as much as the first (~3–4 ms each on ext4 with fresh
//! blocks), so it halved batched-put throughput; verifying the last commit at
//! open costs a read of the pages one commit wrote. When a commit grows the
//! file, the new length is synced first (rare: growth is chunked), so a file
//! shorter than its newest meta needs is reported as truncated, not rolled
//! back. Falling back to the previous commit is safe for corekv because the
//! WAL, not the backend, is the source of durability: the meta bucket holds
//! the applied index and replay is idempotent.
//!
//! # Out of space
//!
//! The file grows in chunks that are *allocated* (`fallocate`), not sparse, so
//! a commit's page writes land in blocks the file system already gave it, and
//! a full disk shows when the file must grow. Each commit keeps
//! [`DbOptions::reserve_bytes`] of allocated free space (free pages plus the
//! file's unused tail), growing the file when it drops below that. When the
//! disk cannot give a chunk, the growth falls back to what the reserve needs,
//! then to what the commit itself needs; if even that fails the commit ends
//! with [`StorageError::NoSpace`] before its sync, the writer is put back as
//! it was (the transaction id is skipped, so pages it wrote cannot pass for a
//! later commit's) and the database takes commits again. A commit that fits
//! but could not keep the reserve succeeds, and [`Db::space_low`] says so:
//! corekv then stops taking writes that add data, so the reserve is left for
//! deletes and compactions. A write that fails with ENOSPC anyway (file
//! systems that cannot allocate ahead) is handled like a failed growth. A
//! failed fsync is different: it poisons the database ([`StorageError::Poisoned`]
//! afterwards) and is never retried, because the kernel may have dropped the
//! pages it could not write. [`FaultyFile`] injects these failures in tests.
//!
//! # Free pages
//!
//! Pages replaced by a commit are freed *pending* on that commit's transaction
//! id and become reusable only once no live [`Version`] older than that id
//! exists (readers, snapshots and defragment hold versions). The freelist
//! (free + pending pages as runs) is written as a chain of pages each commit;
//! after a restart no readers exist, so all of it is free.
//!
//! # Growth and the map
//!
//! The file grows in chunks (doubling, at least 1 MiB, at most 1 GiB at a
//! time). On growth the writer maps the file again and publishes the new map
//! with the new version; readers keep the map they started with, which stays
//! valid because the file never shrinks while mapped (defragment writes a new
//! file and renames it into place; old maps keep the old inode alive).
//!
//! # Keeping the hot set resident
//!
//! Page faults stall a thread-per-core server. [`DbOptions::populate`] maps the
//! file with `MAP_POPULATE` (every page faulted in at open and on growth).
//! Without it, open still walks every branch page of every bucket
//! ([`DbOptions::prewarm_branches`], on by default) so that a point lookup
//! faults at most on its leaf, and the map is advised `MADV_WILLNEED`.
//!
//! # Deviations from the sketch API
//!
//! * `get` returns `Option<&[u8]>` borrowed from the transaction (no copy at
//!   all); `range` yields `(&[u8], &[u8])` pairs likewise. Call `.to_vec()` if
//!   an owned copy is needed.
//! * Keys are limited to [`Db::max_key_len`] bytes (1000 with 4 KiB pages);
//!   values to 2 GiB. Longer ones are rejected with an error.
//! * `begin_write` blocks while another write transaction (or the final phase
//!   of a defragment) is open.
//!
//! See `README.md` beside this file for the file format and benchmarks.

mod check;
mod file;
mod freelist;
mod page;
mod tree;
mod write;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use memmap2::{Mmap, MmapOptions};

pub use check::{DefragReport, Snapshot};
pub use file::{is_no_space, FaultyFile, FileLayer, FileOp, ReadOnlyFile, StdFile};
use freelist::RunSet;
use page::{Meta, MAX_BUCKETS};
use tree::PageSource;

/// Errors of the storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a corekv database file: {0}")]
    NotADatabase(String),
    #[error("database file truncated: {0}")]
    Truncated(String),
    #[error("database corruption in page {page}: {reason}")]
    Corruption { page: u64, reason: String },
    #[error("key of {len} bytes is longer than the maximum of {max}")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value of {len} bytes is longer than the maximum of {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("the database hit an i/o error during a commit and must be reopened")]
    Poisoned,
    /// A commit found no space to grow the file or write its pages (ENOSPC, EDQUOT). The
    /// commit was abandoned before its sync: the database goes on from the state before
    /// it and takes commits again (retry once space is freed). As after a crash during a
    /// commit, a reopen before the next commit finds the old state, or the new one if the
    /// write that failed was the meta page's and it reached the file whole.
    #[error("no space left for the database file: {0}")]
    NoSpace(std::io::Error),
    #[error("operation not supported: {0}")]
    Unsupported(String),
}

/// The fixed named buckets. The numeric value is the slot in the meta page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Bucket {
    /// MVCC key/value revisions.
    Key = 0,
    /// Consistent index, term, scheduled/finished compaction revisions, ...
    Meta = 1,
    Lease = 2,
    Members = 3,
    /// etcd's `auth` bucket: the enabled flag and the auth revision.
    Auth = 4,
    /// etcd's `authUsers`: user name -> authpb.User.
    AuthUsers = 5,
    /// etcd's `authRoles`: role name -> authpb.Role.
    AuthRoles = 6,
}

impl Bucket {
    pub const ALL: [Bucket; 7] = [
        Bucket::Key,
        Bucket::Meta,
        Bucket::Lease,
        Bucket::Members,
        Bucket::Auth,
        Bucket::AuthUsers,
        Bucket::AuthRoles,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Key => "key",
            Bucket::Meta => "meta",
            Bucket::Lease => "lease",
            Bucket::Members => "members",
            Bucket::Auth => "auth",
            Bucket::AuthUsers => "authUsers",
            Bucket::AuthRoles => "authRoles",
        }
    }
}

#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Page size for a new file (power of two, 1 KiB..=32 KiB). An existing
    /// file keeps the page size it was created with.
    pub page_size: usize,
    /// Verify every page checksum and the whole tree structure at open.
    /// (A cheap check — meta pages, bucket roots, freelist chain — always runs.)
    pub full_check_on_open: bool,
    /// Map with `MAP_POPULATE`: fault the whole file in at open and on growth.
    pub populate: bool,
    /// At open, read every branch page so lookups fault at most on the leaf.
    pub prewarm_branches: bool,
    /// Bytes of allocated, free space the file keeps beyond what it uses (free pages
    /// count), so that small commits (deletes, compactions) still fit once the disk is
    /// full: this much, or half of what the file uses if that is less (but at least
    /// 256 KiB). A commit that cannot grow the file to keep it still commits if its pages
    /// fit, and [`Db::space_low`] says so.
    pub reserve_bytes: u64,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            page_size: 4096,
            full_check_on_open: false,
            populate: false,
            prewarm_branches: true,
            reserve_bytes: 2 << 20,
        }
    }
}

/// One committed state: its meta (roots, counts, freelist) and a map covering it.
pub struct Version {
    meta: Meta,
    map: Arc<Mmap>,
    ps: usize,
}

impl Version {
    pub fn txn(&self) -> u64 {
        self.meta.txn
    }
}

impl PageSource for Version {
    #[inline]
    fn page(&self, id: u64) -> Result<&[u8], StorageError> {
        tree::map_page(&self.map, id, self.meta.hwm, self.ps)
    }
    #[inline]
    fn overflow(&self, id: u64, len: usize) -> Result<&[u8], StorageError> {
        tree::map_overflow(&self.map, id, len, self.meta.hwm, self.ps)
    }
}

/// Identity-ish hasher for page ids (multiplicative; ids are dense integers).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);
impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Everything only the writer touches, handed to each write transaction in turn.
pub(crate) struct WriterState {
    file: Arc<dyn FileLayer>,
    file_len: u64,
    /// Free pages reusable now.
    free: RunSet,
    /// Pages freed by committed txn `t`, reusable once no version older than `t` is live.
    pending: Vec<(u64, Vec<(u64, u64)>)>,
    /// Pages of the current freelist chain (freed by the next commit).
    chain: Vec<u64>,
    /// Meta slot (0 or 1) the next commit writes: the one not holding the current state.
    next_slot: u64,
    /// Id of the next commit. Ids are never reused, even for commits that
    /// crashed (open skips one), so a leftover page of a failed commit can
    /// never pass for a page of a later one.
    next_txn: u64,
    /// Older versions that may still be held by readers.
    versions: Vec<Arc<Version>>,
    /// Recycled page buffers.
    pool: Vec<Box<[u8]>>,
}

enum Slot {
    Idle(Box<WriterState>),
    Busy,
    Poisoned,
}

pub(crate) struct Inner {
    path: Option<PathBuf>,
    opts: DbOptions,
    ps: usize,
    current: Mutex<Arc<Version>>,
    writer: Mutex<Slot>,
    writer_cv: Condvar,
    file_len: AtomicU64,
    recovery: Option<String>,
    /// The last commit could not keep `reserve_bytes` free (or found no space at all).
    space_low: std::sync::atomic::AtomicBool,
}

/// A handle to an open database. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

const MIN_PAGE: usize = 1024;
const MAX_PAGE: usize = 32768;

impl Db {
    /// Open (or create) the database file at `path`.
    pub fn open(path: &Path, opts: DbOptions) -> Result<Db, StorageError> {
        Self::open_wrapped(path, opts, |f| Arc::new(f))
    }

    /// [`Db::open`], with the file's layer wrapped by `wrap` (a [`FaultyFile`] in tests).
    /// A defragment replaces the file, and the new one is a plain [`StdFile`].
    pub fn open_wrapped(
        path: &Path,
        opts: DbOptions,
        wrap: impl FnOnce(StdFile) -> Arc<dyn FileLayer>,
    ) -> Result<Db, StorageError> {
        // A defragment that crashed before its rename leaves this behind.
        let _ = std::fs::remove_file(check::defrag_tmp_path(path));
        let existed = path.exists();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let db = Self::open_layer(wrap(StdFile(f)), Some(path.to_path_buf()), opts)?;
        if !existed {
            if let Some(dir) = path.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                std::fs::File::open(dir)?.sync_all()?;
            }
        }
        Ok(db)
    }

    /// Open over a custom file layer (used by crash tests). Defragment needs a path
    /// and is unsupported on such a handle.
    pub fn open_with_layer(layer: Arc<dyn FileLayer>, opts: DbOptions) -> Result<Db, StorageError> {
        Self::open_layer(layer, None, opts)
    }

    fn open_layer(
        layer: Arc<dyn FileLayer>,
        path: Option<PathBuf>,
        opts: DbOptions,
    ) -> Result<Db, StorageError> {
        let mut len = layer.file_len()?;
        if len == 0 {
            let ps = opts.page_size;
            if !ps.is_power_of_two() || !(MIN_PAGE..=MAX_PAGE).contains(&ps) {
                return Err(StorageError::InvalidOptions(format!(
                    "page_size {ps} must be a power of two in {MIN_PAGE}..={MAX_PAGE}"
                )));
            }
            let meta = Meta {
                page_size: ps as u32,
                txn: 0,
                hwm: 2,
                freelist: 0,
                free_pages: 0,
                roots: [0; MAX_BUCKETS],
                counts: [0; MAX_BUCKETS],
            };
            let mut buf = vec![0u8; 2 * ps];
            meta.encode(&mut buf[..ps]);
            meta.encode(&mut buf[ps..]);
            layer.set_len(2 * ps as u64)?;
            layer.write_at(&buf, 0)?;
            layer.sync()?;
            len = 2 * ps as u64;
        }
        let cands = check::read_meta(layer.file(), len)?;
        let map = Arc::new(map_file(layer.file(), len, &opts)?);
        // Newest meta first; it wins if its commit verifies (every page it wrote
        // is there with its checksum and txn id), else the previous one.
        // This is also the cheap check that always runs: meta, roots, freelist.
        let mut first_err = None;
        let mut chosen = None;
        for (meta, slot) in cands {
            let ps = meta.page_size as usize;
            let version = Arc::new(Version {
                meta,
                map: map.clone(),
                ps,
            });
            match check::open_check(&version, true) {
                Ok((free, chain)) => {
                    chosen = Some((version, slot, free, chain));
                    break;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let Some((version, slot, free, chain)) = chosen else {
            return Err(first_err.unwrap_or_else(|| page::corrupt(0, "no valid meta page")));
        };
        let recovery = first_err.map(|e| {
            let note = format!(
                "the last commit was incomplete ({e}); opened the previous one, txn {}",
                version.meta.txn
            );
            tracing::warn!("{note}");
            note
        });
        let ps = version.ps;
        if opts.full_check_on_open {
            check::full_check(&version)?;
        }
        if opts.prewarm_branches && !opts.populate {
            check::prewarm(&version);
        }
        let ws = WriterState {
            file: layer,
            file_len: len,
            free,
            pending: Vec::new(),
            chain,
            next_slot: slot ^ 1,
            next_txn: version.meta.txn + 2,
            versions: Vec::new(),
            pool: Vec::new(),
        };
        Ok(Db {
            inner: Arc::new(Inner {
                path,
                opts,
                ps,
                current: Mutex::new(version),
                writer: Mutex::new(Slot::Idle(Box::new(ws))),
                writer_cv: Condvar::new(),
                file_len: AtomicU64::new(len),
                recovery,
                space_low: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Set when open found the newest commit incomplete (a crash during its
    /// commit, or damage to a page it wrote) and opened the one before it.
    /// corekv replays the WAL from the applied index in the meta bucket, so
    /// nothing acknowledged is lost; the note is for logs and alerts.
    pub fn recovery_note(&self) -> Option<&str> {
        self.inner.recovery.as_deref()
    }

    /// Page size of this file.
    pub fn page_size(&self) -> usize {
        self.inner.ps
    }

    /// Longest key accepted.
    pub fn max_key_len(&self) -> usize {
        write::max_key_len(self.inner.ps)
    }

    /// Largest value accepted.
    pub fn max_value_len(&self) -> usize {
        write::MAX_VALUE
    }

    /// Begin the (single) write transaction; blocks while another one is open.
    pub fn begin_write(&self) -> Result<WriteTxn, StorageError> {
        let ws = self.inner.take_writer()?;
        let base = self.inner.current();
        Ok(WriteTxn::new(self.inner.clone(), ws, base))
    }

    /// A read transaction on the last committed state.
    pub fn begin_read(&self) -> ReadTxn {
        ReadTxn {
            v: self.inner.current(),
        }
    }

    /// File size in bytes (etcd `dbSize`).
    pub fn size(&self) -> u64 {
        self.inner.file_len.load(Ordering::Relaxed)
    }

    /// Whether the last commit found the disk too full to keep
    /// [`DbOptions::reserve_bytes`] of allocated free space in the file, or to commit at
    /// all ([`StorageError::NoSpace`]). Cleared by the next commit that keeps the reserve.
    pub fn space_low(&self) -> bool {
        self.inner.space_low.load(Ordering::Relaxed)
    }

    /// Bytes in pages that are in use (etcd `dbSizeInUse`): the high-water mark
    /// minus free pages, in the last committed state.
    pub fn size_in_use(&self) -> u64 {
        let v = self.inner.current();
        (v.meta.hwm - v.meta.free_pages) * self.inner.ps as u64
    }

    /// Full consistency check of the last committed state: every page checksum,
    /// tree structure and key order, and that every page is used exactly once or free.
    pub fn check(&self) -> Result<(), StorageError> {
        check::full_check(&self.inner.current())
    }

    /// Rewrite the database into a compact file. See [`check::defragment`] for
    /// what blocks while it runs.
    pub fn defragment(&self) -> Result<DefragReport, StorageError> {
        check::defragment(self)
    }

    /// A consistent copy of the last committed state, streamed while writes go on.
    pub fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Snapshot::new(self.inner.current())
    }
}

impl Inner {
    fn current(&self) -> Arc<Version> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn take_writer(&self) -> Result<Box<WriterState>, StorageError> {
        let mut g = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match std::mem::replace(&mut *g, Slot::Busy) {
                Slot::Idle(ws) => return Ok(ws),
                Slot::Poisoned => {
                    *g = Slot::Poisoned;
                    return Err(StorageError::Poisoned);
                }
                Slot::Busy => {
                    g = self.writer_cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    fn put_writer(&self, ws: Option<Box<WriterState>>) {
        let mut g = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        *g = match ws {
            Some(ws) => Slot::Idle(ws),
            None => Slot::Poisoned,
        };
        drop(g);
        self.writer_cv.notify_all();
    }

    fn publish(&self, v: Arc<Version>) -> Arc<Version> {
        let mut g = self.current.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *g, v)
    }
}

pub(crate) fn map_file(
    file: &std::fs::File,
    len: u64,
    opts: &DbOptions,
) -> Result<Mmap, StorageError> {
    let mut mo = MmapOptions::new();
    mo.len(len as usize);
    if opts.populate {
        mo.populate();
    }
    // SAFETY: the map is read-only. The writer only ever writes pages that no
    // version readable through this map references, and the file is never
    // truncated while mapped (defragment replaces it by rename). Other
    // processes modifying the file are outside the contract (as for LMDB).
    let map = unsafe { mo.map(file)? };
    if !opts.populate {
        let _ = map.advise(memmap2::Advice::WillNeed);
    }
    Ok(map)
}

/// A read transaction: a consistent view of one committed state. Owns what it
/// needs (`'static`, `Send + Sync`); holding it keeps that state's pages from
/// being reused, so do not keep one open for hours.
#[derive(Clone)]
pub struct ReadTxn {
    v: Arc<Version>,
}

impl ReadTxn {
    pub(crate) fn of(v: Arc<Version>) -> ReadTxn {
        ReadTxn { v }
    }

    /// The transaction id of the committed state this reads.
    pub fn txn_id(&self) -> u64 {
        self.v.meta.txn
    }

    pub fn get(&self, b: Bucket, key: &[u8]) -> Result<Option<&[u8]>, StorageError> {
        tree::get(&*self.v, self.v.meta.roots[b as usize], key)
    }

    /// Ordered scan of `[start, end]` per the bounds, forward or reverse.
    pub fn range<'a>(
        &'a self,
        b: Bucket,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> impl Iterator<Item = Result<(&'a [u8], &'a [u8]), StorageError>> + 'a {
        tree::Range::new(&*self.v, self.v.meta.roots[b as usize], start, end, reverse)
    }

    pub fn count(
        &self,
        b: Bucket,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<u64, StorageError> {
        let (root, n) = (
            self.v.meta.roots[b as usize],
            self.v.meta.counts[b as usize],
        );
        tree::count(&*self.v, root, n, start, end)
    }
}

pub use write::WriteTxn;

/// Rewrites the checksum of every page of a database image (a meta page over its used bytes,
/// an overflow run over its value where the run fits in the image), so that the fuzz targets'
/// changes reach the decoding behind the checksums instead of stopping at them.
#[doc(hidden)]
pub fn reseal_image(image: &mut [u8]) {
    let ps = match image.get(16..24) {
        Some(_) if image.len() >= 24 => page::rd32(image, 20) as usize,
        _ => return,
    };
    if !ps.is_power_of_two() || !(MIN_PAGE..=MAX_PAGE).contains(&ps) {
        return;
    }
    let mut at = 0;
    while at + ps <= image.len() {
        let p = &mut image[at..];
        let mut pages = 1;
        match page::ptype(p) {
            page::T_META => {
                let c = crc32fast::hash(&p[4..page::META_USED]);
                page::wr32(p, 0, c);
            }
            page::T_OVERFLOW if page::overflow_span(page::ovf_len(p)) <= p.len() => {
                let span = page::overflow_span(page::ovf_len(p));
                page::seal(&mut p[..span]);
                // The run's later pages are its value, not pages of their own.
                pages = span.div_ceil(ps);
            }
            _ => page::seal(&mut p[..ps]),
        }
        at += pages * ps;
    }
}
