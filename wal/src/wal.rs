//! The [`Wal`]: open/recover, group-committed appends, release.

use crate::error::WalError;
use crate::faults::Faults;
use crate::frame::{
    encode, frame_len, set_flags, FLAG_END_OF_COMMIT, KIND_RECORD, KIND_SEAL, SEAL_LEN,
};
use crate::recovery::{check_headers, first_nonzero, log_id, recover, Image, Tail};
use crate::segment::{
    create_segment, max_payload, parse_file_name, read_file, sync_dir, IoMode, SegmentId,
    SegmentWriter, WriteOpts, BLOCK, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, SEGMENT_HEADER_LEN,
};
use crate::{Position, Recovery};
use glommio::Task;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Options for [`Wal::open`].
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Size of each new segment file, in bytes: a multiple of 4096 between
    /// 8 KiB and 1 GiB. Default 64 MiB. Existing segments keep their size.
    pub segment_size: u64,
    /// How segments are written. Default [`IoMode::Dma`].
    pub io_mode: IoMode,
    /// Whether new segments are written with zeros over their whole size when
    /// prepared (default `true`), rather than only fallocate'd. On ext4 a
    /// commit into fallocate'd (unwritten) space also has to convert the
    /// extent, which costs a journal commit; see the crate docs.
    pub zero_fill: bool,
    /// Whether segments are opened with `O_DSYNC`, so that each commit is
    /// one write that is durable when it completes, instead of a write
    /// followed by an fdatasync. Same guarantee; see the crate docs for
    /// which is faster here. Default `true`.
    pub o_dsync: bool,
    /// While a commit's write or fdatasync is in flight, wake every CPU this often (default
    /// 100 µs; `None`: never): on some virtual machines a halted vCPU learns of a disk
    /// completion only at its next timer tick (see `wake.rs`).
    pub wake_every: Option<std::time::Duration>,
    /// Injected I/O failures, for tests (default: none). See [`Faults`].
    pub faults: Faults,
}

impl WalOptions {
    fn write_opts(&self) -> WriteOpts {
        WriteOpts {
            mode: self.io_mode,
            zero_fill: self.zero_fill,
            dsync: self.o_dsync,
            wake_every: self.wake_every,
            faults: self.faults.clone(),
        }
    }
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 << 20,
            io_mode: IoMode::Dma,
            zero_fill: true,
            o_dsync: true,
            wake_every: Some(std::time::Duration::from_micros(100)),
            faults: Faults::none(),
        }
    }
}

/// Counters, for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records made durable.
    pub records: u64,
    /// Commits: write + fdatasync pairs on the append path.
    pub commits: u64,
    /// Bytes of frames written (padding and rewritten blocks not counted).
    pub bytes: u64,
    /// Segment rotations.
    pub rotations: u64,
    /// Total time the writer waited at a rotation for the next segment's
    /// preparation to finish (zero when preparation keeps ahead).
    pub rotation_wait: std::time::Duration,
    /// I/O calls that failed for want of space (ENOSPC, EDQUOT) and were retried later:
    /// preparations of a segment, and commit writes.
    pub no_space_retries: u64,
}

/// Chunk buffers up to this capacity are kept for reuse.
const SPARE_MAX: usize = 8 << 20;

/// Frames staged for one commit into one segment.
struct Chunk {
    seg: SegmentId,
    /// Offset in the segment of the first frame.
    start: usize,
    bytes: Vec<u8>,
    /// Offset in `bytes` of the last frame (it gets the end-of-commit flag).
    last_frame: usize,
    commit: u64,
    records: u64,
    /// Whether the chunk ends with the segment's seal.
    seals: bool,
}

struct State {
    /// The segment the next frame goes into, and where in it.
    tail: SegmentId,
    tail_off: usize,
    /// Commit number of the next chunk to be opened.
    next_commit: u64,
    /// Frames waiting for the writer, in commit order.
    staging: Vec<Chunk>,
    /// Every commit up to this one is durable.
    durable_commit: u64,
    /// Appenders waiting for a commit, in commit order.
    waiters: VecDeque<(u64, Vec<Waker>)>,
    writer_waker: Option<Waker>,
    failed: Option<String>,
    closed: bool,
    /// Why the next segment cannot be prepared, while it cannot (out of space).
    no_space_prepare: Option<String>,
    /// Why the commit being written cannot be, while it cannot (out of space).
    no_space_write: Option<String>,
    /// Segment files on disk, oldest first (the one being written included,
    /// the one being prepared not).
    segments: VecDeque<SegmentId>,
    /// Segments with a lower sequence number are sealed and durable.
    releasable_below: u64,
    stats: WalStats,
    /// Chunk buffers written and handed back, for reuse (no regrowing).
    spare: Vec<Vec<u8>>,
}

struct Shared {
    dir: PathBuf,
    /// The directory, opened and flock'ed for as long as the WAL lives.
    _lock: std::fs::File,
    log_id: u64,
    opts: WalOptions,
    st: RefCell<State>,
}

/// A segmented, checksummed, group-committed write-ahead log.
///
/// Used from one glommio executor by any number of tasks at once (methods
/// take `&self`; the type is `!Send`). See the crate docs.
pub struct Wal {
    shared: Rc<Shared>,
    writer: RefCell<Option<Task<()>>>,
}

impl Wal {
    /// Opens (creating if missing) the log in `dir`, recovering what is
    /// there: see the crate docs for what recovery accepts, truncates and
    /// refuses. Must be called inside a glommio executor; the returned `Wal`
    /// runs a background writer task on it.
    pub async fn open(
        dir: impl AsRef<Path>,
        opts: WalOptions,
    ) -> Result<(Wal, Recovery), WalError> {
        let dir = dir.as_ref().to_owned();
        if opts.segment_size & (BLOCK as u64 - 1) != 0
            || !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&opts.segment_size)
        {
            return Err(WalError::InvalidOptions(format!(
                "segment_size {} must be a multiple of {BLOCK} between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}",
                opts.segment_size
            )));
        }
        ensure_dir(&dir).await?;
        let lock = lock_dir(&dir)?;
        let paths = list_segments(&dir).await?;

        // Headers first (cheap, and a garbage "segment" is never read whole).
        let mut heads = Vec::with_capacity(paths.len());
        for path in paths {
            let head = read_file(&path, SEGMENT_HEADER_LEN as u64).await?;
            heads.push((path, head));
        }
        let ids = check_headers(&heads)?;
        let mut images = Vec::with_capacity(ids.len());
        for ((path, _), id) in heads.into_iter().zip(ids) {
            let bytes = read_file(&path, id.size).await?;
            images.push(Image { path, id, bytes });
        }
        let rec = recover(&images)?;

        // Segments after the tail hold no valid frame. One that is exactly
        // the segment that would be prepared next (right id and size, all
        // zeros) is kept as the prepared segment; the others are removed.
        let mut keep_next = None;
        if let (Some(Tail::Open { index, .. }), [next]) = (&rec.tail, &images[rec.remove_from..]) {
            let pristine = next.bytes.len() as u64 == next.id.size
                && first_nonzero(&next.bytes[SEGMENT_HEADER_LEN..]).is_none();
            if pristine && next.id == images[*index].id.next(opts.segment_size) {
                keep_next = Some(next);
            }
        }
        let doomed: Vec<&Image> = images[rec.remove_from..]
            .iter()
            .filter(|im| !matches!(keep_next, Some(k) if k.path == im.path))
            .collect();
        for im in &doomed {
            remove_file(&im.path).await?;
        }
        if !doomed.is_empty() {
            sync_dir(&dir).await?;
        }
        let prepared_next = match keep_next {
            Some(next) => {
                let tail = next.bytes[..SEGMENT_HEADER_LEN].to_vec();
                let w = SegmentWriter::open(
                    &next.path,
                    next.id,
                    opts.write_opts(),
                    SEGMENT_HEADER_LEN,
                    tail,
                )
                .await?;
                Some(w)
            }
            None => None,
        };

        let log_id = log_id(&images).unwrap_or_else(new_log_id);
        let mut segments: VecDeque<SegmentId> =
            images[..rec.remove_from].iter().map(|im| im.id).collect();
        // The segment the next frame goes into, opened; None if it does not exist yet.
        let (tail, active) = match rec.tail {
            None => {
                let id = SegmentId {
                    seq: 0,
                    start_lsn: 0,
                    size: opts.segment_size,
                };
                segments.push_back(id);
                let w = create_segment(&dir, id, log_id, opts.write_opts()).await?;
                (id, Some(w))
            }
            Some(Tail::Sealed { index }) => {
                // The next segment is made by the writer when the first frame needs it, so
                // that a log can be opened (and read) on a full disk: making it may have to
                // wait for space.
                (images[index].id.next(opts.segment_size), None)
            }
            Some(Tail::Open {
                index,
                end,
                zero_to,
            }) => {
                let im = &images[index];
                // The last frame's padding may lie past the end of a cut
                // file: it is zeros.
                let from = end - end % BLOCK;
                let mut tail = im.bytes[from.min(im.bytes.len())..end.min(im.bytes.len())].to_vec();
                tail.resize(end - from, 0);
                let mut w =
                    SegmentWriter::open(&im.path, im.id, opts.write_opts(), end, tail).await?;
                if zero_to > end {
                    w.zero_until(zero_to).await?;
                }
                (w.id(), Some(w))
            }
        };
        let tail_off = active.as_ref().map_or(SEGMENT_HEADER_LEN, |w| w.end());
        drop(images);

        let next_commit = rec.next_commit;
        let shared = Rc::new(Shared {
            dir,
            _lock: lock,
            log_id,
            st: RefCell::new(State {
                tail,
                tail_off,
                next_commit,
                staging: Vec::new(),
                durable_commit: next_commit - 1,
                waiters: VecDeque::new(),
                writer_waker: None,
                failed: None,
                closed: false,
                no_space_prepare: None,
                no_space_write: None,
                segments,
                releasable_below: tail.seq,
                stats: WalStats::default(),
                spare: Vec::new(),
            }),
            opts,
        });
        let prepared = match (prepared_next, &active) {
            (Some(w), _) => glommio::spawn_local(async move { Ok(w) }),
            (None, Some(_)) => prepare(&shared, tail.next(shared.opts.segment_size)),
            (None, None) => prepare(&shared, tail),
        };
        let writer = glommio::spawn_local(run_writer(shared.clone(), active, Some(prepared)));
        let wal = Wal {
            shared,
            writer: RefCell::new(Some(writer)),
        };
        let recovery = Recovery {
            records: rec.records,
            last_valid: rec.last_valid,
            truncated: rec.truncated,
        };
        Ok((wal, recovery))
    }

    /// Appends one record; returns its position once it is durable (written
    /// and fdatasync'd). `record_type` is the caller's; the WAL does not
    /// interpret it.
    ///
    /// If the future is dropped before it completes, the record may or may
    /// not end up in the log.
    pub async fn append(&self, record_type: u8, payload: &[u8]) -> Result<Position, WalError> {
        let mut pos = Position::from_lsn(0);
        let commit = self.stage(&[(record_type, payload)], |p| pos = p)?;
        self.wait_durable(commit).await?;
        Ok(pos)
    }

    /// Appends several records as one unit of the group commit; returns the
    /// position of each, in order, once all are durable.
    ///
    /// The records are written into a single segment and a single commit
    /// when they fit into one segment, and then recovery returns all of them
    /// or none. A batch larger than a segment is split across segments (each
    /// record is still whole); after a crash a prefix of it may survive.
    pub async fn append_batch(&self, records: &[(u8, &[u8])]) -> Result<Vec<Position>, WalError> {
        let mut positions = Vec::with_capacity(records.len());
        let commit = self.stage(records, |p| positions.push(p))?;
        if !records.is_empty() {
            self.wait_durable(commit).await?;
        }
        Ok(positions)
    }

    /// Removes the segment files that lie entirely before `pos` (typically
    /// the position of a snapshot record), oldest first, fsyncing the
    /// directory after each. Never removes the segment being written (nor
    /// one whose seal is not yet durable). Returns how many were removed.
    pub async fn release_before(&self, pos: Position) -> Result<usize, WalError> {
        let mut victims: VecDeque<SegmentId> = {
            let mut st = self.shared.st.borrow_mut();
            let mut v = VecDeque::new();
            while let Some(front) = st.segments.front().copied() {
                if st.segments.len() > 1
                    && front.seq < st.releasable_below
                    && front.end_lsn() <= pos.lsn()
                {
                    v.push_back(front);
                    st.segments.pop_front();
                } else {
                    break;
                }
            }
            v
        };
        // One at a time, oldest first, each unlink made durable before the
        // next: whatever a crash leaves is still a contiguous log.
        let mut removed = 0;
        while let Some(id) = victims.front().copied() {
            let dir = &self.shared.dir;
            let result = match remove_file(&dir.join(id.file_name())).await {
                Ok(()) => {
                    victims.pop_front();
                    removed += 1;
                    sync_dir(dir).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                // Keep the bookkeeping true: put back what is still there.
                let mut st = self.shared.st.borrow_mut();
                while let Some(v) = victims.pop_back() {
                    st.segments.push_front(v);
                }
                return Err(e);
            }
        }
        Ok(removed)
    }

    /// Why appends are waiting for disk space, while they are: the next segment cannot be
    /// prepared, or a commit's write failed with ENOSPC (or EDQUOT) and waits to be tried
    /// again. While the next segment is missing, appends still go into what is left of the
    /// current one; they wait only once it is full. `None` when space is not short.
    ///
    /// Both are retried by the WAL itself (10 ms apart at first, then up to 1 s), so this
    /// clears on its own once space is freed. Nothing is acknowledged before it is durable.
    pub fn no_space(&self) -> Option<String> {
        let st = self.shared.st.borrow();
        st.no_space_write
            .clone()
            .or_else(|| st.no_space_prepare.clone())
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        self.shared.st.borrow().stats
    }

    /// The segment files currently making up the log, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        let st = self.shared.st.borrow();
        st.segments
            .iter()
            .map(|id| self.shared.dir.join(id.file_name()))
            .collect()
    }

    /// Waits for everything appended to be durable, stops the writer and
    /// closes the files (including a segment still being prepared), and
    /// unlocks the directory. Dropping a `Wal` without closing it cancels the
    /// writer, leaving whatever was not yet durable to recovery; the
    /// directory is unlocked once the executor has dropped the cancelled
    /// writer task.
    pub async fn close(self) -> Result<(), WalError> {
        {
            let mut st = self.shared.st.borrow_mut();
            st.closed = true;
            if let Some(w) = st.writer_waker.take() {
                w.wake();
            }
        }
        let writer = self.writer.borrow_mut().take();
        if let Some(w) = writer {
            w.await;
        }
        match &self.shared.st.borrow().failed {
            Some(e) => Err(WalError::Failed(e.clone())),
            None => Ok(()),
        }
    }

    /// Encodes `records` into the staging area; calls `on_pos` with each
    /// record's position; returns the commit they become durable with.
    fn stage(
        &self,
        records: &[(u8, &[u8])],
        mut on_pos: impl FnMut(Position),
    ) -> Result<u64, WalError> {
        let sh = &*self.shared;
        let mut st = sh.st.borrow_mut();
        if let Some(e) = &st.failed {
            return Err(WalError::Failed(e.clone()));
        }
        if st.closed {
            return Err(WalError::Closed);
        }
        let max = max_payload(sh.opts.segment_size);
        let mut total = 0usize;
        for (_, p) in records {
            if p.len() > max {
                return Err(WalError::RecordTooLarge { len: p.len(), max });
            }
            total += frame_len(p.len());
        }
        // Keep the batch in one segment (one commit) when it can be.
        let empty_room = sh.opts.segment_size as usize - SEGMENT_HEADER_LEN - SEAL_LEN;
        if !fits(&st, total) && total <= empty_room {
            seal(sh, &mut st);
        }
        for &(record_type, payload) in records {
            if !fits(&st, frame_len(payload.len())) {
                seal(sh, &mut st);
            }
            on_pos(place(sh, &mut st, KIND_RECORD, record_type, payload));
        }
        let commit = st.staging.last().map_or(st.durable_commit, |c| c.commit);
        if let Some(w) = st.writer_waker.take() {
            w.wake();
        }
        Ok(commit)
    }

    async fn wait_durable(&self, commit: u64) -> Result<(), WalError> {
        poll_fn(|cx| {
            let mut st = self.shared.st.borrow_mut();
            if st.durable_commit >= commit {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &st.failed {
                return Poll::Ready(Err(WalError::Failed(e.clone())));
            }
            let waker = cx.waker().clone();
            let i = st.waiters.iter().rposition(|(c, _)| *c <= commit);
            match i {
                Some(i) if st.waiters[i].0 == commit => st.waiters[i].1.push(waker),
                Some(i) => st.waiters.insert(i + 1, (commit, vec![waker])),
                None => st.waiters.push_front((commit, vec![waker])),
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let mut st = self.shared.st.borrow_mut();
        st.closed = true;
        // Dropping the writer task (if `close` did not run) cancels it.
    }
}

fn fits(st: &State, frame: usize) -> bool {
    st.tail_off + frame + SEAL_LEN <= st.tail.size as usize
}

/// Encodes one frame at the tail; returns its position.
fn place(sh: &Shared, st: &mut State, kind: u8, record_type: u8, payload: &[u8]) -> Position {
    let lsn = st.tail.start_lsn + st.tail_off as u64;
    let open = matches!(st.staging.last(), Some(c) if c.seg.seq == st.tail.seq);
    if !open {
        let commit = st.next_commit;
        st.next_commit += 1;
        let (seg, start) = (st.tail, st.tail_off);
        let bytes = st.spare.pop().unwrap_or_default();
        st.staging.push(Chunk {
            seg,
            start,
            bytes,
            last_frame: 0,
            commit,
            records: 0,
            seals: false,
        });
    }
    let chunk = st.staging.last_mut().expect("a chunk is open");
    chunk.last_frame = chunk.bytes.len();
    let flags = if kind == KIND_SEAL {
        FLAG_END_OF_COMMIT
    } else {
        0
    };
    encode(
        &mut chunk.bytes,
        sh.log_id,
        lsn,
        kind,
        flags,
        record_type,
        chunk.commit,
        payload,
    );
    if kind == KIND_RECORD {
        chunk.records += 1;
    }
    st.tail_off += frame_len(payload.len());
    Position::from_lsn(lsn)
}

/// Closes the tail segment with a seal; the next frame opens the next one.
fn seal(sh: &Shared, st: &mut State) {
    place(sh, st, KIND_SEAL, 0, &[]);
    st.staging.last_mut().expect("just placed").seals = true;
    st.tail = st.tail.next(sh.opts.segment_size);
    st.tail_off = SEGMENT_HEADER_LEN;
}

/// Starts preparing segment `id` in the background. Out of space, it says so
/// ([`Wal::no_space`]) and tries again, with growing pauses, until it succeeds or the WAL
/// is closed; any other failure is returned.
fn prepare(sh: &Rc<Shared>, id: SegmentId) -> Task<Result<SegmentWriter, WalError>> {
    let sh = sh.clone();
    glommio::spawn_local(async move {
        let mut attempt = 0u32;
        loop {
            let w = sh.opts.write_opts();
            match create_segment(&sh.dir, id, sh.log_id, w).await {
                Ok(w) => {
                    sh.st.borrow_mut().no_space_prepare = None;
                    return Ok(w);
                }
                Err(e) if e.is_no_space() => {
                    {
                        let mut st = sh.st.borrow_mut();
                        st.stats.no_space_retries += 1;
                        st.no_space_prepare = Some(e.to_string());
                    }
                    if !wait_for_space(&sh, &mut attempt).await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    })
}

/// Pauses before an I/O call that failed for want of space is tried again: 10 ms, doubling
/// up to 1 s. False once the WAL is closed (give up then).
async fn wait_for_space(sh: &Shared, attempt: &mut u32) -> bool {
    if sh.st.borrow().closed {
        return false;
    }
    let pause = std::time::Duration::from_millis(10 << (*attempt).min(7)).min(MAX_SPACE_PAUSE);
    *attempt += 1;
    glommio::timer::sleep(pause).await;
    !sh.st.borrow().closed
}

/// The longest pause between two attempts to write when out of space.
const MAX_SPACE_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes everything staged, waiting for some; `None` once closed and empty.
async fn next_work(sh: &Shared) -> Option<Vec<Chunk>> {
    poll_fn(|cx| {
        let mut st = sh.st.borrow_mut();
        if !st.staging.is_empty() {
            Poll::Ready(Some(std::mem::take(&mut st.staging)))
        } else if st.closed {
            Poll::Ready(None)
        } else {
            st.writer_waker = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}

/// The writer: one write + fdatasync at a time, each covering everything
/// staged while the previous one was in flight.
///
/// Out of space (ENOSPC, EDQUOT) the writer waits and tries again: for the next segment
/// (its preparation retries by itself) and for a commit's write (written again, the same
/// bytes at the same place). Nothing is acknowledged meanwhile, and nothing is given up:
/// appenders just wait. Any other failure, and any failed fdatasync, fails the WAL.
async fn run_writer(
    sh: Rc<Shared>,
    mut active: Option<SegmentWriter>,
    mut prepared: Option<Task<Result<SegmentWriter, WalError>>>,
) {
    let result = async {
        while let Some(chunks) = next_work(&sh).await {
            for mut chunk in chunks {
                if active.as_ref().map(|a| a.id().seq) != Some(chunk.seg.seq) {
                    let waited = std::time::Instant::now();
                    let next = match prepared.take() {
                        Some(task) => task.await?,
                        None => prepare(&sh, chunk.seg).await?,
                    };
                    assert_eq!(next.id(), chunk.seg, "prepared the wrong segment");
                    let waited = waited.elapsed();
                    if let Some(old) = active.replace(next) {
                        old.close().await?;
                    }
                    let mut st = sh.st.borrow_mut();
                    if st.segments.back() != Some(&chunk.seg) {
                        st.segments.push_back(chunk.seg);
                    }
                    st.stats.rotations += 1;
                    st.stats.rotation_wait += waited;
                    drop(st);
                    prepared = Some(prepare(&sh, chunk.seg.next(sh.opts.segment_size)));
                }
                let active = active.as_mut().expect("a segment is open");
                debug_assert_eq!(chunk.start, active.end());
                let last_lsn = chunk.seg.start_lsn + (chunk.start + chunk.last_frame) as u64;
                set_flags(
                    &mut chunk.bytes[chunk.last_frame..],
                    sh.log_id,
                    last_lsn,
                    FLAG_END_OF_COMMIT,
                );
                let mut attempt = 0u32;
                loop {
                    match active.write(&chunk.bytes).await {
                        Ok(()) => break,
                        Err(e) if e.is_no_space() => {
                            {
                                let mut st = sh.st.borrow_mut();
                                st.stats.no_space_retries += 1;
                                st.no_space_write = Some(e.to_string());
                            }
                            if !wait_for_space(&sh, &mut attempt).await {
                                return Err(e);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                sh.st.borrow_mut().no_space_write = None;
                active.sync().await?;
                let mut st = sh.st.borrow_mut();
                st.durable_commit = chunk.commit;
                st.stats.commits += 1;
                st.stats.records += chunk.records;
                st.stats.bytes += chunk.bytes.len() as u64;
                if chunk.seals {
                    st.releasable_below = chunk.seg.seq + 1;
                }
                if st.spare.len() < 2 && chunk.bytes.capacity() <= SPARE_MAX {
                    chunk.bytes.clear();
                    st.spare.push(chunk.bytes);
                }
                while st.waiters.front().is_some_and(|(c, _)| *c <= chunk.commit) {
                    let (_, wakers) = st.waiters.pop_front().expect("checked");
                    wakers.into_iter().for_each(Waker::wake);
                }
            }
        }
        if let Some(active) = active.take() {
            active.close().await?;
        }
        if let Some(task) = prepared.take() {
            match task.await {
                Ok(w) => w.close().await?,
                // Closed while waiting for space to prepare it: nothing was lost.
                Err(e) if e.is_no_space() => {}
                Err(e) => return Err(e),
            }
        }
        Ok::<(), WalError>(())
    }
    .await;
    if let Err(e) = result {
        let mut st = sh.st.borrow_mut();
        st.failed = Some(e.to_string());
        st.staging.clear();
        for (_, wakers) in std::mem::take(&mut st.waiters) {
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}

/// Takes an exclusive, non-blocking flock on the directory, so that two WALs
/// (two processes, or two opens in one) never write the same log. Released
/// when the returned file is closed.
fn lock_dir(dir: &Path) -> Result<std::fs::File, WalError> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::File::open(dir).map_err(|source| WalError::Io {
        context: format!("opening WAL directory {} to lock it", dir.display()),
        source,
    })?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let source = std::io::Error::last_os_error();
        if source.kind() == std::io::ErrorKind::WouldBlock {
            return Err(WalError::Locked {
                dir: dir.to_owned(),
            });
        }
        return Err(WalError::Io {
            context: format!("locking WAL directory {}", dir.display()),
            source,
        });
    }
    Ok(f)
}

async fn ensure_dir(dir: &Path) -> Result<(), WalError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|source| WalError::Io {
        context: format!("creating WAL directory {}", dir.display()),
        source,
    })?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent).await?;
    }
    Ok(())
}

/// The segment files in `dir`, sorted; removes leftover `*.wal.tmp` files
/// (segments whose preparation was interrupted) and refuses anything else.
async fn list_segments(dir: &Path) -> Result<Vec<PathBuf>, WalError> {
    let io = |source| WalError::Io {
        context: format!("listing WAL directory {}", dir.display()),
        source,
    };
    let mut segs = Vec::new();
    let mut leftovers = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let is_file = entry.file_type().map_err(io)?.is_file();
        let name = entry.file_name();
        let name = name.to_str().unwrap_or("");
        if is_file && name.ends_with(".wal.tmp") {
            leftovers.push(path);
        } else if is_file && parse_file_name(name).is_some() {
            segs.push((parse_file_name(name), path));
        } else {
            return Err(WalError::UnexpectedFile { path });
        }
    }
    for path in &leftovers {
        remove_file(path).await?;
    }
    if !leftovers.is_empty() {
        sync_dir(dir).await?;
    }
    segs.sort();
    Ok(segs.into_iter().map(|(_, p)| p).collect())
}

async fn remove_file(path: &Path) -> Result<(), WalError> {
    glommio::io::remove(path)
        .await
        .map_err(crate::error::io_err(format!("removing {}", path.display())))
}

fn new_log_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}
