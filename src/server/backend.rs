//! The applied state's backend, with B+tree commits off the consensus core.
//!
//! Writes go into an in-memory overlay; every ~100 ms (or 10,000 writes) the overlay is
//! frozen and handed to a committer thread, which writes it into the B+tree and fsyncs it
//! with the applied raft index, while the core goes on applying into a fresh overlay.
//! Reads see the newest of: the open overlay, the overlay being committed, the last
//! committed B+tree state. The core never waits for a backend fsync, and the copy-on-write
//! page work happens on the committer's thread, not on the one core that runs raft.
//!
//! A commit that finds no disk space ([`StorageError::NoSpace`]) changes nothing in the
//! B+tree: its overlay stays where it was (reads still see it) and the next commit takes it
//! again, with everything applied since merged over it. Nothing is lost: every write in it
//! is in the WAL, and the applied index in the B+tree stays where it was.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mvcc;
use crate::storage::{Bucket, Db, ReadTxn, StorageError};

/// Meta-bucket key of the last applied raft index (etcd's name).
pub const CONSISTENT_INDEX_KEY: &[u8] = b"consistent_index";

/// Changes to one bucket: None marks a deletion.
type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Default, Clone)]
struct Overlay {
    buckets: [Changes; Bucket::ALL.len()],
    writes: usize,
}

impl Overlay {
    fn get(&self, b: Bucket, key: &[u8]) -> Option<Option<&[u8]>> {
        self.buckets[b as usize].get(key).map(|v| v.as_deref())
    }
}

struct Job {
    changes: Arc<Overlay>,
    applied: u64,
}

/// A finished background commit.
#[derive(Debug)]
pub struct Committed {
    /// Everything up to this raft index is now in the B+tree, durably.
    pub applied: u64,
    pub took: Duration,
    /// The file could not keep its reserve of free space ([`Db::space_low`]).
    pub space_low: bool,
}

pub struct OverlayBackend {
    db: Db,
    read: ReadTxn,
    committing: Option<Arc<Overlay>>,
    /// The commit of `committing` failed for want of space: it is not in flight, and the
    /// next commit takes it again.
    stalled: bool,
    pending: Overlay,
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Result<Committed, StorageError>>,
}

fn in_bounds(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s <= e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e)) => s < e,
        _ => true,
    }
}

type Entry<'a> = Result<(&'a [u8], Option<&'a [u8]>), StorageError>;
type Source<'a> = std::iter::Peekable<Box<dyn Iterator<Item = Entry<'a>> + 'a>>;

/// Merges the overlays and the B+tree in key order; the first source that has a key wins,
/// and deletions hide what is below them.
struct Merge<'a> {
    sources: Vec<Source<'a>>,
    reverse: bool,
}

impl<'a> Iterator for Merge<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut best: Option<(usize, &'a [u8])> = None;
            for (i, s) in self.sources.iter_mut().enumerate() {
                match s.peek() {
                    None => {}
                    Some(Err(_)) => {
                        return Some(Err(s.next().expect("peeked").expect_err("peeked an error")))
                    }
                    Some(Ok((k, _))) => {
                        let better = match best {
                            None => true,
                            Some((_, b)) if self.reverse => *k > b,
                            Some((_, b)) => *k < b,
                        };
                        if better {
                            best = Some((i, k));
                        }
                    }
                }
            }
            let (winner, key) = best?;
            let mut value = None;
            for (i, s) in self.sources.iter_mut().enumerate() {
                if matches!(s.peek(), Some(Ok((k, _))) if *k == key) {
                    let (_, v) = s.next().expect("peeked").expect("peeked ok");
                    if i == winner {
                        value = Some(v);
                    }
                }
            }
            if let Some(Some(v)) = value {
                return Some(Ok((key, v)));
            }
        }
    }
}

impl OverlayBackend {
    /// Wraps an open B+tree and starts its committer thread.
    pub fn new(db: Db) -> OverlayBackend {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        let committer_db = db.clone();
        std::thread::Builder::new()
            .name("backend-commit".into())
            .spawn(move || {
                for job in job_rx {
                    let started = Instant::now();
                    let result = commit(&committer_db, &job).map(|()| Committed {
                        applied: job.applied,
                        took: started.elapsed(),
                        space_low: committer_db.space_low(),
                    });
                    // The overlay goes back to the core alone (a failed one is taken again).
                    drop(job);
                    if done_tx.send(result).is_err() {
                        return;
                    }
                }
            })
            .expect("spawning the backend committer thread");
        OverlayBackend {
            read: db.begin_read(),
            db,
            committing: None,
            stalled: false,
            pending: Overlay::default(),
            jobs,
            done,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn get(&self, b: Bucket, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StorageError> {
        if let Some(v) = self.pending.get(b, key) {
            return Ok(v.map(Cow::Borrowed));
        }
        if let Some(v) = self.committing.as_ref().and_then(|c| c.get(b, key)) {
            return Ok(v.map(Cow::Borrowed));
        }
        Ok(self.read.get(b, key)?.map(Cow::Borrowed))
    }

    pub fn put(&mut self, b: Bucket, key: &[u8], value: &[u8]) {
        self.pending.buckets[b as usize].insert(key.to_vec(), Some(value.to_vec()));
        self.pending.writes += 1;
    }

    pub fn delete(&mut self, b: Bucket, key: &[u8]) -> Result<bool, StorageError> {
        let existed = self.get(b, key)?.is_some();
        self.pending.buckets[b as usize].insert(key.to_vec(), None);
        self.pending.writes += 1;
        Ok(existed)
    }

    pub fn range<'a>(
        &'a self,
        b: Bucket,
        start: Bound<&'a [u8]>,
        end: Bound<&'a [u8]>,
        reverse: bool,
    ) -> impl Iterator<Item = Result<(&'a [u8], &'a [u8]), StorageError>> + 'a {
        let mut sources: Vec<Source<'a>> = Vec::with_capacity(3);
        if in_bounds(start, end) {
            let overlays = [Some(&self.pending), self.committing.as_deref()];
            for o in overlays.into_iter().flatten() {
                let r = o.buckets[b as usize].range::<[u8], _>((start, end));
                let it: Box<dyn Iterator<Item = Entry<'a>> + 'a> = if reverse {
                    Box::new(r.rev().map(|(k, v)| Ok((k.as_slice(), v.as_deref()))))
                } else {
                    Box::new(r.map(|(k, v)| Ok((k.as_slice(), v.as_deref()))))
                };
                sources.push(it.peekable());
            }
        }
        let tree: Box<dyn Iterator<Item = Entry<'a>> + 'a> = Box::new(
            self.read
                .range(b, start, end, reverse)
                .map(|r| r.map(|(k, v)| (k, Some(v)))),
        );
        sources.push(tree.peekable());
        Merge { sources, reverse }
    }

    /// Writes applied since the last commit started.
    pub fn pending_writes(&self) -> usize {
        self.pending.writes
    }

    pub fn commit_in_flight(&self) -> bool {
        self.committing.is_some()
    }

    /// Whether a commit failed for want of space and waits to be taken again.
    pub fn commit_stalled(&self) -> bool {
        self.stalled
    }

    /// Hands what was applied so far to the committer, stamped with `applied`. Returns
    /// false when a commit is still in flight (the overlay keeps growing meanwhile). After
    /// a commit that found no space, this one takes its overlay again, with the writes
    /// applied since over it.
    pub fn start_commit(&mut self, applied: u64) -> bool {
        if self.committing.is_some() && !self.stalled {
            return false;
        }
        let pending = std::mem::take(&mut self.pending);
        let changes = match self.committing.take() {
            Some(failed) => {
                let mut merged = Arc::unwrap_or_clone(failed);
                for (into, from) in merged.buckets.iter_mut().zip(pending.buckets) {
                    into.extend(from);
                }
                merged.writes += pending.writes;
                merged
            }
            None => pending,
        };
        self.stalled = false;
        let changes = Arc::new(changes);
        self.committing = Some(changes.clone());
        self.jobs
            .send(Job { changes, applied })
            .expect("the backend committer thread is alive");
        true
    }

    /// A finished commit, if one finished: its overlay is dropped and reads go to the new
    /// B+tree state.
    pub fn poll_commit(&mut self) -> Option<Result<Committed, StorageError>> {
        let result = match self.done.try_recv() {
            Ok(r) => r,
            Err(mpsc::TryRecvError::Empty) => return None,
            Err(mpsc::TryRecvError::Disconnected) => {
                return Some(Err(StorageError::Unsupported(
                    "the backend committer thread stopped".into(),
                )))
            }
        };
        self.finished(&result);
        Some(result)
    }

    fn finished(&mut self, result: &Result<Committed, StorageError>) {
        match result {
            Ok(_) => {
                self.read = self.db.begin_read();
                self.committing = None;
            }
            Err(StorageError::NoSpace(_)) => self.stalled = true,
            Err(_) => {}
        }
    }

    /// Waits for the commit in flight (at shutdown and in tests); None if none is.
    pub fn wait_commit(&mut self) -> Option<Result<Committed, StorageError>> {
        if self.committing.is_none() || self.stalled {
            return None;
        }
        let result = self.done.recv().unwrap_or_else(|_| {
            Err(StorageError::Unsupported(
                "the backend committer thread stopped".into(),
            ))
        });
        self.finished(&result);
        Some(result)
    }
}

fn commit(db: &Db, job: &Job) -> Result<(), StorageError> {
    let mut txn = db.begin_write()?;
    for b in Bucket::ALL {
        for (k, v) in &job.changes.buckets[b as usize] {
            match v {
                Some(v) => txn.put(b, k, v)?,
                None => {
                    txn.delete(b, k)?;
                }
            }
        }
    }
    txn.put(
        Bucket::Meta,
        CONSISTENT_INDEX_KEY,
        &job.applied.to_be_bytes(),
    )?;
    txn.commit()
}

fn bucket(b: mvcc::Bucket) -> Bucket {
    match b {
        mvcc::Bucket::Key => Bucket::Key,
        mvcc::Bucket::Meta => Bucket::Meta,
    }
}

impl mvcc::KvBackend for OverlayBackend {
    type Error = StorageError;

    fn get(&self, b: mvcc::Bucket, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(OverlayBackend::get(self, bucket(b), key)?.map(Cow::into_owned))
    }

    fn value_len(&self, b: mvcc::Bucket, key: &[u8]) -> Result<Option<usize>, StorageError> {
        Ok(OverlayBackend::get(self, bucket(b), key)?.map(|v| v.len()))
    }

    fn put(&mut self, b: mvcc::Bucket, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        OverlayBackend::put(self, bucket(b), key, value);
        Ok(())
    }

    fn delete(&mut self, b: mvcc::Bucket, key: &[u8]) -> Result<bool, StorageError> {
        OverlayBackend::delete(self, bucket(b), key)
    }

    fn range<'a>(
        &'a self,
        b: mvcc::Bucket,
        start: Bound<&'a [u8]>,
        end: Bound<&'a [u8]>,
        reverse: bool,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + 'a {
        OverlayBackend::range(self, bucket(b), start, end, reverse)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }
}

/// The next `max` bytes of a copy of the backend, read on a blocking thread: the copy reads
/// the backend's memory map, and a page fault there must not stall the executor. The copy
/// comes back with the bytes, for the next call.
pub async fn next_chunk(
    mut copy: crate::storage::Snapshot,
    max: usize,
) -> (crate::storage::Snapshot, std::io::Result<Vec<u8>>) {
    glommio::executor()
        .spawn_blocking(move || {
            let chunk = copy.read_up_to(max);
            (copy, chunk)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::DbOptions;
    use proptest::prelude::*;

    fn open() -> (tempfile::TempDir, OverlayBackend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db"), DbOptions::default()).unwrap();
        (dir, OverlayBackend::new(db))
    }

    fn all(b: &OverlayBackend, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        b.range(Bucket::Key, Bound::Unbounded, Bound::Unbounded, reverse)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever the interleaving of writes, commits and their completion, reads match a
        /// plain map, and a reopen after the last commit finds the same data.
        #[test]
        fn backend_overlay_reads_match_a_map(ops in prop::collection::vec((0u8..4, 0u8..40, any::<u8>()), 1..300)) {
            let (dir, mut b) = open();
            let mut model = std::collections::BTreeMap::new();
            for (i, (op, k, v)) in ops.into_iter().enumerate() {
                let key = vec![k];
                match op {
                    0 | 1 => {
                        b.put(Bucket::Key, &key, &[v]);
                        model.insert(key.clone(), vec![v]);
                    }
                    2 => {
                        let existed = b.delete(Bucket::Key, &key).unwrap();
                        prop_assert_eq!(existed, model.remove(&key).is_some());
                    }
                    _ => {
                        if !b.start_commit(i as u64) {
                            b.wait_commit().unwrap().unwrap();
                        }
                    }
                }
                prop_assert_eq!(b.get(Bucket::Key, &key).unwrap().map(|c| c.to_vec()), model.get(&key).cloned());
            }
            let want: Vec<_> = model.clone().into_iter().collect();
            prop_assert_eq!(all(&b, false), want.clone());
            let mut rev = want.clone();
            rev.reverse();
            prop_assert_eq!(all(&b, true), rev);
            let lo: &[u8] = &[10];
            let hi: &[u8] = &[30];
            let got: Vec<_> = b.range(Bucket::Key, Bound::Included(lo), Bound::Excluded(hi), false)
                .map(|r| r.unwrap().0.to_vec()).collect();
            let exp: Vec<_> = model.range(vec![10]..vec![30]).map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(got, exp);
            b.wait_commit();
            b.start_commit(9999);
            b.wait_commit().unwrap().unwrap();
            drop(b);
            let db = Db::open(&dir.path().join("db"), DbOptions::default()).unwrap();
            let b = OverlayBackend::new(db);
            prop_assert_eq!(all(&b, false), want);
            prop_assert_eq!(
                b.get(Bucket::Meta, CONSISTENT_INDEX_KEY).unwrap().map(|c| c.to_vec()),
                Some(9999u64.to_be_bytes().to_vec())
            );
        }
    }

    /// A commit that finds no space changes nothing: reads still see its writes, the next
    /// commit takes them again with the newer ones over them, and once space is back
    /// everything reaches the file (a reopen has it all, with the last applied index).
    #[test]
    fn backend_commit_out_of_space_is_taken_again() {
        use crate::storage::{FaultyFile, FileOp};
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let full = Arc::new(AtomicBool::new(false));
        let f2 = full.clone();
        let opts = DbOptions {
            reserve_bytes: 0,
            ..DbOptions::default()
        };
        let db = Db::open_wrapped(&path, opts, move |f| {
            Arc::new(FaultyFile::new(f, move |op| {
                (matches!(op, FileOp::Allocate | FileOp::Write) && f2.load(SeqCst))
                    .then(|| std::io::Error::from_raw_os_error(libc::ENOSPC))
            }))
        })
        .unwrap();
        let mut b = OverlayBackend::new(db);
        let mut model = BTreeMap::new();
        for i in 0..50u32 {
            let (k, v) = (i.to_be_bytes().to_vec(), vec![i as u8; 3000]);
            b.put(Bucket::Key, &k, &v);
            model.insert(k, v);
        }
        full.store(true, SeqCst);
        assert!(b.start_commit(1));
        let err = b.wait_commit().unwrap().unwrap_err();
        assert!(matches!(err, StorageError::NoSpace(_)), "{err}");
        assert!(b.commit_stalled() && b.commit_in_flight());
        assert!(b.wait_commit().is_none(), "nothing is in flight");
        assert_eq!(
            all(&b, false),
            model.clone().into_iter().collect::<Vec<_>>()
        );
        // More writes over the stalled ones, and a retry that fails again.
        for i in 40..60u32 {
            let (k, v) = (i.to_be_bytes().to_vec(), vec![i as u8 + 1; 100]);
            b.put(Bucket::Key, &k, &v);
            model.insert(k, v);
        }
        for i in 0..10u32 {
            assert!(b.delete(Bucket::Key, &i.to_be_bytes()).unwrap());
            model.remove(i.to_be_bytes().as_slice());
        }
        assert!(b.start_commit(2));
        assert!(matches!(
            b.wait_commit(),
            Some(Err(StorageError::NoSpace(_)))
        ));
        b.put(Bucket::Key, b"last", b"x");
        model.insert(b"last".to_vec(), b"x".to_vec());
        assert_eq!(
            all(&b, false),
            model.clone().into_iter().collect::<Vec<_>>()
        );
        // Space is back.
        full.store(false, SeqCst);
        assert!(b.start_commit(3));
        let c = b.wait_commit().unwrap().unwrap();
        assert_eq!(c.applied, 3);
        assert!(!b.commit_stalled() && !b.commit_in_flight());
        assert_eq!(
            all(&b, false),
            model.clone().into_iter().collect::<Vec<_>>()
        );
        drop(b);
        let b = OverlayBackend::new(Db::open(&path, DbOptions::default()).unwrap());
        assert_eq!(all(&b, false), model.into_iter().collect::<Vec<_>>());
        assert_eq!(
            b.get(Bucket::Meta, CONSISTENT_INDEX_KEY)
                .unwrap()
                .map(|c| c.to_vec()),
            Some(3u64.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn backend_empty_and_inverted_bounds_are_empty() {
        let (_dir, mut b) = open();
        b.put(Bucket::Key, b"a", b"1");
        let k: &[u8] = b"a";
        assert_eq!(
            b.range(Bucket::Key, Bound::Excluded(k), Bound::Excluded(k), false)
                .count(),
            0
        );
        let z: &[u8] = b"z";
        assert_eq!(
            b.range(Bucket::Key, Bound::Included(z), Bound::Excluded(k), false)
                .count(),
            0
        );
    }
}
