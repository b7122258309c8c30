//! I/O failures injected through `WalOptions::faults`: out of space (waited out, nothing
//! lost, nothing acknowledged early) and failed writes and fsyncs (the WAL stops; what was
//! acknowledged survives a reopen).

mod common;
use common::*;
use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use wal::{Faults, IoMode, IoPoint, Wal, WalError, WalOptions};

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// Fails every `point` call with ENOSPC while `full` is set.
fn full_disk(point: IoPoint, full: Arc<AtomicBool>) -> Faults {
    Faults::new(move |p| (p == point && full.load(SeqCst)).then(enospc))
}

/// Fails the `nth` call (counting from 1) at `point`, and only it, with `err()`.
fn nth_call(point: IoPoint, nth: u32, err: fn() -> io::Error) -> (Faults, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let faults = Faults::new(move |p| {
        if p != point {
            return None;
        }
        (c.fetch_add(1, SeqCst) + 1 == nth).then(err)
    });
    (faults, calls)
}

fn with_faults(segment_size: u64, mode: IoMode, dsync: bool, faults: Faults) -> WalOptions {
    WalOptions {
        segment_size,
        io_mode: mode,
        o_dsync: dsync,
        faults,
        ..WalOptions::default()
    }
}

/// Yields to the executor until `cond` holds (each pass lets the writer and preparation
/// tasks run; the WAL's own retry pauses are at most 1 s, so this ends).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("gave up waiting for: {what}");
}

#[test]
fn no_space_for_the_next_segment_is_reported_and_waited_out() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let seg = 16 << 10;
        let full = Arc::new(AtomicBool::new(false));
        let o = || {
            with_faults(
                seg,
                IoMode::Dma,
                true,
                full_disk(IoPoint::Prepare, full.clone()),
            )
        };
        let (w, _) = Wal::open(dir.path(), o()).await.unwrap();
        // Segment 1 gets prepared in the background at once; wait for it, then fill the
        // disk: segment 2 will not be preparable.
        until("segment 1 prepared", || {
            std::fs::read_dir(dir.path()).unwrap().count() == 2
        })
        .await;
        full.store(true, SeqCst);
        let w = Rc::new(w);
        let mut acked = Vec::new();
        // Fill segment 0 and go into segment 1 (prepared before the disk filled up).
        let mut i = 0;
        while w.segment_paths().len() < 2 {
            w.append(1, &payload(i, 1000)).await.unwrap();
            acked.push(payload(i, 1000));
            i += 1;
        }
        // Rotating into segment 1 started the preparation of segment 2, which fails.
        until("no space reported", || w.no_space().is_some()).await;
        let why = w.no_space().unwrap();
        assert!(
            why.contains("0000000000000002-") && why.contains("os error 28"),
            "{why}"
        );
        // What is left of segment 1 still takes appends.
        w.append(1, &payload(i, 1000)).await.unwrap();
        acked.push(payload(i, 1000));
        i += 1;
        // Appends that need segment 2 wait, unacknowledged, while the disk is full.
        let done = Rc::new(Cell::new(0usize));
        let mut tasks = Vec::new();
        for j in 0..20 {
            let (w, done) = (w.clone(), done.clone());
            let p = payload(i + j, 1000);
            tasks.push(glommio::spawn_local(async move {
                w.append(1, &p).await.unwrap();
                done.set(done.get() + 1);
                p
            }));
        }
        let before = w.stats().no_space_retries;
        until("the writer waits for segment 2", || {
            w.stats().no_space_retries >= before + 3
        })
        .await;
        let stuck = done.get();
        assert!(stuck < 20, "every append completed without segment 2");
        assert!(w.no_space().is_some());
        let segments = w.segment_paths().len();
        until("still waiting", || w.stats().no_space_retries >= before + 5).await;
        assert_eq!(
            done.get(),
            stuck,
            "an append completed while the disk stayed full"
        );
        assert_eq!(w.segment_paths().len(), segments);
        // No leftover temporary file holds space meanwhile.
        let tmp = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "tmp")
            })
            .count();
        assert_eq!(tmp, 0);
        // Space comes back: everything completes, in order.
        full.store(false, SeqCst);
        for t in tasks {
            acked.push(t.await);
        }
        assert!(w.no_space().is_none());
        assert!(w.segment_paths().len() > segments);
        let w = Rc::try_unwrap(w).ok().unwrap();
        w.close().await.unwrap();
        let got: Vec<Vec<u8>> = reopen_records(dir.path(), opts(seg))
            .await
            .into_iter()
            .map(|r| r.payload)
            .collect();
        assert_eq!(got, acked);
    });
}

#[test]
fn no_space_on_a_commit_write_is_retried_with_the_same_bytes() {
    for (mode, dsync) in [
        (IoMode::Dma, true),
        (IoMode::Dma, false),
        (IoMode::Buffered, true),
        (IoMode::Buffered, false),
    ] {
        run(move || async move {
            let dir = tempfile::tempdir().unwrap();
            let seg = 32 << 10;
            // Writes 5, 6 and 7 fail with ENOSPC (the 5th commit is tried three times).
            let calls = Arc::new(AtomicU32::new(0));
            let c = calls.clone();
            let faults = Faults::new(move |p| {
                if p != IoPoint::Write {
                    return None;
                }
                (5..=7).contains(&(c.fetch_add(1, SeqCst) + 1)).then(enospc)
            });
            let (w, _) = Wal::open(dir.path(), with_faults(seg, mode, dsync, faults))
                .await
                .unwrap();
            let mut acked = Vec::new();
            for i in 0..40 {
                // Odd sizes: commits end inside a block, so the DMA tail block matters.
                let p = payload(i, 100 + i * 37);
                w.append(2, &p).await.unwrap();
                acked.push(p);
            }
            assert_eq!(w.stats().no_space_retries, 3);
            assert!(w.no_space().is_none());
            w.close().await.unwrap();
            let got: Vec<Vec<u8>> = reopen_records(dir.path(), opts_mode(seg, mode))
                .await
                .into_iter()
                .map(|r| r.payload)
                .collect();
            assert_eq!(got, acked, "mode {mode:?} dsync {dsync}");
        });
    }
}

/// A failed fsync is never retried: the WAL fails, the append that was in it is not
/// acknowledged, later ones are refused, and a reopen has every acknowledged record (the
/// failed one may or may not be there: its bytes were written, their durability unknown).
#[test]
fn a_failed_fsync_fails_the_wal_and_acknowledges_nothing_more() {
    for (mode, dsync) in [
        (IoMode::Dma, true),
        (IoMode::Dma, false),
        (IoMode::Buffered, false),
    ] {
        run(move || async move {
            let dir = tempfile::tempdir().unwrap();
            let seg = 16 << 10;
            let (faults, calls) = nth_call(IoPoint::Sync, 12, eio);
            let (w, _) = Wal::open(dir.path(), with_faults(seg, mode, dsync, faults))
                .await
                .unwrap();
            let mut acked = Vec::new();
            let mut failed = None;
            for i in 0..100 {
                match w.append(1, &payload(i, 700)).await {
                    Ok(_) => acked.push(payload(i, 700)),
                    Err(e) => {
                        failed = Some((i, e));
                        break;
                    }
                }
            }
            let (i, e) = failed.expect("the 12th sync fails");
            assert_eq!(calls.load(SeqCst), 12, "no fsync was retried");
            assert!(matches!(e, WalError::Failed(_)), "{e}");
            assert!(e.to_string().contains("os error 5"), "{e}");
            assert!(!e.is_no_space());
            assert!(matches!(
                w.append(1, b"later").await,
                Err(WalError::Failed(_))
            ));
            assert_eq!(
                calls.load(SeqCst),
                12,
                "nothing was written after the failure"
            );
            assert!(w.close().await.is_err());
            let got: Vec<Vec<u8>> = reopen_records(dir.path(), opts_mode(seg, mode))
                .await
                .into_iter()
                .map(|r| r.payload)
                .collect();
            assert_eq!(
                got[..acked.len()],
                acked[..],
                "an acknowledged record is missing"
            );
            assert!(
                got.len() == acked.len() || got[acked.len()..] == [payload(i, 700)],
                "only the unacknowledged record may follow"
            );
        });
    }
}

/// EIO from a write (not ENOSPC) fails the WAL too; that write's bytes never reached the
/// file here, so the reopened log ends with the last acknowledged record.
#[test]
fn a_failed_write_fails_the_wal() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let seg = 16 << 10;
        let (faults, _) = nth_call(IoPoint::Write, 7, eio);
        let (w, _) = Wal::open(dir.path(), with_faults(seg, IoMode::Dma, true, faults))
            .await
            .unwrap();
        let mut acked = Vec::new();
        let mut failed = false;
        for i in 0..50 {
            match w.append(1, &payload(i, 300)).await {
                Ok(_) => acked.push(payload(i, 300)),
                Err(e) => {
                    assert!(matches!(e, WalError::Failed(_)), "{e}");
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed);
        assert_eq!(acked.len(), 6);
        assert!(w.no_space().is_none());
        drop(w);
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let got: Vec<Vec<u8>> = reopen_records(copy.path(), opts(seg))
            .await
            .into_iter()
            .map(|r| r.payload)
            .collect();
        assert_eq!(got, acked);
    });
}

/// A log whose last segment is sealed, with the next one never made (the disk filled up
/// in between), opens on a full disk: its records are read, and the next segment is made
/// once space is back.
#[test]
fn a_log_opens_on_a_full_disk_after_a_seal() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let image = tempfile::tempdir().unwrap();
        let seg = 16 << 10;
        let full = Arc::new(AtomicBool::new(false));
        let o = || {
            with_faults(
                seg,
                IoMode::Dma,
                true,
                full_disk(IoPoint::Prepare, full.clone()),
            )
        };
        // Fill the disk before segment 1 is prepared.
        full.store(true, SeqCst);
        let err = Wal::open(dir.path(), o())
            .await
            .err()
            .expect("a new log needs a segment");
        assert!(err.is_no_space(), "{err}");
        full.store(false, SeqCst);
        let (w, _) = Wal::open(
            dir.path(),
            with_faults(seg, IoMode::Dma, true, Faults::none()),
        )
        .await
        .unwrap();
        w.append(1, b"first").await.unwrap();
        w.close().await.unwrap();
        // Reopen with the prepared segment 1 gone and the disk full.
        for p in segment_files(dir.path()).into_iter().skip(1) {
            std::fs::remove_file(p).unwrap();
        }
        full.store(true, SeqCst);
        let w = Rc::new(Wal::open(dir.path(), o()).await.unwrap().0);
        let mut acked = vec![b"first".to_vec()];
        let mut i = 0;
        // Fill segment 0 up to its seal; the append that needs segment 1 waits. Each
        // append is one commit, and so is the seal that closes segment 0: after the next
        // commit, an append that is not done is the one waiting for segment 1.
        let done = Rc::new(Cell::new(false));
        let task = loop {
            let p = payload(i, 1500);
            i += 1;
            let (w2, done2, p2) = (w.clone(), done.clone(), p.clone());
            let commits = w.stats().commits;
            let t = glommio::spawn_local(async move {
                w2.append(1, &p2).await.unwrap();
                done2.set(true);
            });
            until("the next commit", || w.stats().commits > commits).await;
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            if done.get() {
                t.await;
                acked.push(p);
                done.set(false);
            } else {
                break (t, p);
            }
        };
        // The seal of segment 0 is durable, segment 1 does not exist: take that image.
        copy_dir(dir.path(), image.path());
        assert_eq!(segment_files(image.path()).len(), 1);
        let (image_wal, rec) = Wal::open(image.path(), o()).await.unwrap();
        let got: Vec<Vec<u8>> = rec.records.into_iter().map(|r| r.payload).collect();
        assert_eq!(
            got, acked,
            "a sealed log on a full disk opens with its records"
        );
        full.store(false, SeqCst);
        image_wal.append(1, b"after the seal").await.unwrap();
        image_wal.close().await.unwrap();
        // Segment 1 holds the new record; segment 2 was prepared after it.
        assert_eq!(segment_files(image.path()).len(), 3);
        // And the original writer finishes once space is back.
        task.0.await;
        acked.push(task.1);
        let w = Rc::try_unwrap(w).ok().unwrap();
        w.close().await.unwrap();
        let got: Vec<Vec<u8>> = reopen_records(dir.path(), opts(seg))
            .await
            .into_iter()
            .map(|r| r.payload)
            .collect();
        assert_eq!(got, acked);
    });
}
