//! Appends, reopen, rotation, release, group commit, options.

mod common;
use common::*;
use wal::{IoMode, Position, Wal, WalError, WalOptions};

#[test]
fn append_reopen_roundtrip_all_io_modes() {
    for (mode, dsync) in [
        (IoMode::Dma, false),
        (IoMode::Buffered, false),
        (IoMode::Dma, true),
        (IoMode::Buffered, true),
    ] {
        let opts_mode = move |seg| WalOptions {
            o_dsync: dsync,
            ..opts_mode(seg, mode)
        };
        run(move || async move {
            let dir = tempfile::tempdir().unwrap();
            let (w, rec) = Wal::open(dir.path(), opts_mode(64 << 10)).await.unwrap();
            assert!(rec.records.is_empty());
            assert!(rec.truncated.is_none());
            let mut made = Vec::new();
            for i in 0..50 {
                let p = payload(i, i * 13 % 700);
                let pos = w.append((i % 5) as u8, &p).await.unwrap();
                made.push((pos, (i % 5) as u8, p));
            }
            let batch: Vec<(u8, Vec<u8>)> = (0..10).map(|i| (9, payload(1000 + i, 100))).collect();
            let refs: Vec<(u8, &[u8])> = batch.iter().map(|(t, p)| (*t, p.as_slice())).collect();
            let positions = w.append_batch(&refs).await.unwrap();
            assert_eq!(positions.len(), 10);
            for (pos, (t, p)) in positions.iter().zip(&batch) {
                made.push((*pos, *t, p.clone()));
            }
            assert!(made.windows(2).all(|w| w[0].0 < w[1].0), "positions grow");
            w.close().await.unwrap();

            let (w, rec) = Wal::open(dir.path(), opts_mode(64 << 10)).await.unwrap();
            assert!(rec.truncated.is_none(), "{:?}", rec.truncated);
            let got: Vec<_> = rec
                .records
                .iter()
                .map(|r| (r.position, r.record_type, r.payload.clone()))
                .collect();
            assert_eq!(got, made);
            assert!(rec.last_valid > made.last().unwrap().0);
            // Appending after reopen goes on after the old records.
            let pos = w.append(1, b"after").await.unwrap();
            assert!(pos >= rec.last_valid);
            w.close().await.unwrap();
            let recs = reopen_records(dir.path(), opts_mode(64 << 10)).await;
            assert_eq!(recs.len(), made.len() + 1);
            assert_eq!(recs.last().unwrap().payload, b"after");
        });
    }
}

#[test]
fn rotation_and_release() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let seg = 16 << 10;
        let (w, _) = Wal::open(dir.path(), opts(seg)).await.unwrap();
        let mut positions = Vec::new();
        for i in 0..200 {
            positions.push(w.append(1, &payload(i, 500)).await.unwrap());
        }
        let segs = w.segment_paths();
        assert!(segs.len() >= 6, "{segs:?}");
        // Nothing lies entirely before the first record.
        assert_eq!(w.release_before(positions[0]).await.unwrap(), 0);
        let cut = positions[120];
        let removed = w.release_before(cut).await.unwrap();
        assert!(removed > 0);
        assert_eq!(w.segment_paths().len(), segs.len() - removed);
        // Releasing everything keeps the segment being written.
        w.close().await.unwrap();

        let (w, rec) = Wal::open(dir.path(), opts(seg)).await.unwrap();
        let first = rec.records[0].position;
        assert!(
            first <= cut,
            "records at or after the release point are kept"
        );
        let expect: Vec<Position> = positions.iter().copied().filter(|p| *p >= first).collect();
        let got: Vec<Position> = rec.records.iter().map(|r| r.position).collect();
        assert_eq!(got, expect);
        let all = w
            .release_before(Position::from_lsn(u64::MAX))
            .await
            .unwrap();
        assert!(all > 0);
        assert_eq!(w.segment_paths().len(), 1);
        w.append(1, b"still works").await.unwrap();
        w.close().await.unwrap();
        let recs = reopen_records(dir.path(), opts(seg)).await;
        assert_eq!(recs.last().unwrap().payload, b"still works");
    });
}

#[test]
fn group_commit_absorbs_concurrent_appends() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = Wal::open(dir.path(), opts(1 << 20)).await.unwrap();
        let w = std::rc::Rc::new(w);
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let w = w.clone();
                glommio::spawn_local(async move {
                    let mut v = Vec::new();
                    for i in 0..20 {
                        let p = payload(t * 1000 + i, 64);
                        v.push((w.append(t as u8, &p).await.unwrap(), p));
                    }
                    v
                })
            })
            .collect();
        let mut made = Vec::new();
        for t in tasks {
            made.extend(t.await);
        }
        let stats = w.stats();
        assert_eq!(stats.records, 64 * 20);
        // 64 appenders that each wait for their record: far fewer commits
        // than records (each commit takes everything queued meanwhile).
        assert!(stats.commits * 4 <= stats.records, "{stats:?}");
        let w = std::rc::Rc::try_unwrap(w).ok().unwrap();
        w.close().await.unwrap();
        made.sort();
        let recs = reopen_records(dir.path(), opts(1 << 20)).await;
        let got: Vec<_> = recs.into_iter().map(|r| (r.position, r.payload)).collect();
        assert_eq!(got, made);
    });
}

#[test]
fn batch_larger_than_a_segment_is_split() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let seg = 8 << 10;
        let (w, _) = Wal::open(dir.path(), opts(seg)).await.unwrap();
        let recs: Vec<Vec<u8>> = (0..40).map(|i| payload(i, 700)).collect();
        let refs: Vec<(u8, &[u8])> = recs.iter().map(|p| (3, p.as_slice())).collect();
        let pos = w.append_batch(&refs).await.unwrap();
        assert_eq!(pos.len(), 40);
        assert!(w.segment_paths().len() >= 4);
        w.close().await.unwrap();
        let got = reopen_records(dir.path(), opts(seg)).await;
        assert_eq!(
            got.iter().map(|r| &r.payload).collect::<Vec<_>>(),
            recs.iter().collect::<Vec<_>>()
        );
    });
}

#[test]
fn limits_and_options() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        for bad in [0, 4096, 10_000, 2 << 30] {
            assert!(matches!(
                Wal::open(dir.path(), opts(bad)).await,
                Err(WalError::InvalidOptions(_))
            ));
        }
        let (w, _) = Wal::open(dir.path(), opts(8 << 10)).await.unwrap();
        let max = (8 << 10) - 64 - 24 - 24;
        assert!(w.append(1, &vec![7; max]).await.is_ok());
        assert!(matches!(
            w.append(1, &vec![7; max + 1]).await,
            Err(WalError::RecordTooLarge { .. })
        ));
        assert!(w.append_batch(&[]).await.unwrap().is_empty());
        w.append(1, b"").await.unwrap();
        w.close().await.unwrap();
        let got = reopen_records(dir.path(), opts(8 << 10)).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].payload.len(), max);
        assert!(got[1].payload.is_empty());
        // A different segment size for new segments does not disturb old ones.
        let got = reopen_records(dir.path(), opts(64 << 10)).await;
        assert_eq!(got.len(), 2);
    });
}

#[test]
fn reopen_keeps_the_prepared_segment() {
    use std::os::unix::fs::MetadataExt;
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = Wal::open(dir.path(), opts(16 << 10)).await.unwrap();
        w.append(1, b"x").await.unwrap();
        w.close().await.unwrap();
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 2, "the segment being written and the next one");
        let inode = std::fs::metadata(&files[1]).unwrap().ino();
        let (w, rec) = Wal::open(dir.path(), opts(16 << 10)).await.unwrap();
        assert_eq!(rec.records.len(), 1);
        w.close().await.unwrap();
        assert_eq!(segment_files(dir.path()), files);
        assert_eq!(std::fs::metadata(&files[1]).unwrap().ino(), inode);
        // With another segment size the prepared one does not fit: replaced.
        let (w, _) = Wal::open(dir.path(), opts(32 << 10)).await.unwrap();
        w.close().await.unwrap();
        let again = segment_files(dir.path());
        assert_eq!(again.len(), 2);
        assert_eq!(std::fs::metadata(&again[1]).unwrap().len(), 32 << 10);
        // Leftovers of an interrupted preparation are removed.
        std::fs::write(
            dir.path().join("0000000000000009-0000000000000000.wal.tmp"),
            b"x",
        )
        .unwrap();
        let (w, _) = Wal::open(dir.path(), opts(32 << 10)).await.unwrap();
        w.close().await.unwrap();
        assert_eq!(segment_files(dir.path()), again);
    });
}

#[test]
fn failed_io_stops_appends_and_recovery_keeps_the_durable_part() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let seg = 8 << 10;
        let (w, _) = Wal::open(dir.path(), opts(seg)).await.unwrap();
        // Make the preparation of segment 2 fail: a directory sits where its
        // temporary file must be created.
        std::fs::create_dir(dir.path().join("0000000000000002-0000000000004000.wal.tmp")).unwrap();
        let mut durable = Vec::new();
        let mut failed = None;
        for i in 0..100 {
            match w.append(1, &payload(i, 1000)).await {
                Ok(_) => durable.push(payload(i, 1000)),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let e = failed.expect("the append that needs segment 2 fails");
        assert!(matches!(e, WalError::Failed(_)), "{e}");
        assert!(e.to_string().contains(".wal.tmp"), "{e}");
        assert!(matches!(
            w.append(1, b"more").await,
            Err(WalError::Failed(_))
        ));
        assert!(matches!(w.close().await, Err(WalError::Failed(_))));
        std::fs::remove_dir(dir.path().join("0000000000000002-0000000000004000.wal.tmp")).unwrap();
        let recs = reopen_records(dir.path(), opts(seg)).await;
        let got: Vec<Vec<u8>> = recs.into_iter().map(|r| r.payload).collect();
        // Everything acknowledged is there; the failed append may or may not be.
        assert!(got.len() == durable.len() || got.len() == durable.len() + 1);
        assert_eq!(got[..durable.len()], durable[..]);
    });
}

#[test]
fn a_directory_is_opened_by_one_wal_at_a_time() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = Wal::open(dir.path(), opts(16 << 10)).await.unwrap();
        let e = Wal::open(dir.path(), opts(16 << 10))
            .await
            .err()
            .expect("second open");
        assert!(matches!(e, WalError::Locked { .. }), "{e}");
        w.append(1, b"x").await.unwrap();
        w.close().await.unwrap();
        let (w, rec) = Wal::open(dir.path(), opts(16 << 10)).await.unwrap();
        assert_eq!(rec.records.len(), 1);
        drop(w);
        // Dropped without close: the writer task is cancelled, and the lock
        // goes when the executor has dropped it.
        futures_lite::future::yield_now().await;
        let (w, _) = Wal::open(dir.path(), opts(16 << 10)).await.unwrap();
        w.close().await.unwrap();
    });
}
