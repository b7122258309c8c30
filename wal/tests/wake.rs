//! The CPU wakers run only while a commit waits for the disk (wal::wake). In a test binary of
//! its own: the count of commits in flight is process-wide.

mod common;
use common::*;
use std::io;
use std::rc::Rc;
use wal::{Faults, IoPoint, Wal, WalOptions};

#[test]
fn wakers_are_released_after_every_commit_and_failure() {
    run(|| async {
        assert!(WalOptions::default().wake_every.is_some(), "on by default");
        assert_eq!(wal::wake::in_flight(), 0);
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = Wal::open(dir.path(), opts(64 << 10)).await.unwrap();
        // Appenders that each wait for their commit: every commit took a guard and gave it back.
        let w = Rc::new(w);
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let w = w.clone();
                glommio::spawn_local(async move { w.append(1, &payload(i, 300)).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        assert!(w.stats().commits > 0);
        assert_eq!(wal::wake::in_flight(), 0);
        Rc::try_unwrap(w).ok().unwrap().close().await.unwrap();

        // A commit whose durability point fails gives its guard back too.
        let dir = tempfile::tempdir().unwrap();
        let failing =
            Faults::new(|p| (p == IoPoint::Sync).then(|| io::Error::from_raw_os_error(libc::EIO)));
        let (w, _) = Wal::open(
            dir.path(),
            WalOptions {
                faults: failing,
                ..opts(64 << 10)
            },
        )
        .await
        .unwrap();
        assert!(w.append(1, b"lost").await.is_err());
        assert_eq!(wal::wake::in_flight(), 0);
    });
}
