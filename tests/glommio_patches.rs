//! Regression tests for the patches to the vendored glommio (third_party/glommio/PATCHED.md).
//! The bugs they guard against are lost wake-ups: the executor sleeps although something it
//! waits for is ready, and sleeps forever when nothing else is pending. So each test runs its
//! executor in a thread and fails if it has not finished within a limit that is minutes longer
//! than the work needs (about a second): it detects a hang and never depends on speed.

use std::sync::mpsc;
use std::time::Duration;

use glommio::LocalExecutorBuilder;

const HANG_LIMIT: Duration = Duration::from_secs(180);

/// Runs `work` on its own thread and waits for it; a panic in it fails the test, and so
/// does its not finishing within `HANG_LIMIT` (the thread is then left behind, stuck).
fn finishes<F: FnOnce() + Send + 'static>(what: &str, work: F) {
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        work();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(HANG_LIMIT) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: not finished after {HANG_LIMIT:?}; an executor slept through a wake-up")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the work panicked"),
    }
}

/// Patch 2 keeps the latency-ring timer armed across the rings' flush; its first version
/// then lost a user timer that fired during that flush and slept with none armed. Timers
/// of a few microseconds, with no other I/O to wake the executor, fire inside that window:
/// with the first version's logic put back, this test hung in 5 of 5 runs.
#[test]
fn short_timers_always_wake_an_otherwise_idle_executor() {
    finishes("20,000 short sleeps", || {
        let executor = LocalExecutorBuilder::default().make().expect("an executor");
        let slept = executor.run(async {
            let mut slept = 0u32;
            for i in 0..20_000u64 {
                glommio::timer::sleep(Duration::from_micros(i % 40)).await;
                slept += 1;
            }
            slept
        });
        assert_eq!(slept, 20_000);
    });
}

/// Patch 3: `Directory::open` of a relative path (upstream: EBADF), and a WAL opened through
/// one, as corekv's default data dir `default.corekv` is.
#[test]
fn a_directory_opens_by_a_relative_path() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // The temp dir as seen from the working directory: up to / and down again.
    let cwd = std::env::current_dir().expect("a working directory");
    let mut relative = std::path::PathBuf::new();
    for _ in cwd.components().skip(1) {
        relative.push("..");
    }
    relative.push(dir.path().strip_prefix("/").expect("an absolute temp dir"));
    assert!(relative.is_relative());
    let wal_dir = relative.join("wal");
    finishes("opening a relative directory", move || {
        let executor = LocalExecutorBuilder::default().make().expect("an executor");
        executor.run(async move {
            std::fs::create_dir(&wal_dir).expect("mkdir");
            glommio::io::Directory::open(&wal_dir)
                .await
                .expect("a relative directory opens");
            let (wal, _) = wal::Wal::open(
                &wal_dir,
                wal::WalOptions {
                    segment_size: 1 << 20,
                    ..Default::default()
                },
            )
            .await
            .expect("a WAL opens in a relative directory");
            wal.append_batch(&[(1, b"x".as_slice())])
                .await
                .expect("and takes an append");
        });
    });
}

/// Patch 4: `spin_before_park` on an executor not bound to a CPU (corekv's are unbound, and
/// `--spin-us` sets it). Upstream dropped the setting, so the executor slept at once. With a
/// spin of minutes, an executor that has gone idle is seen running at every look, never
/// sleeping; unpatched it was asleep at the first.
#[test]
fn an_unbound_executor_spins_before_it_sleeps() {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let executor = LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spin_before_park(Duration::from_secs(600))
            .make()
            .expect("an executor");
        executor.run(async move {
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            // Idle until told to stop: a timer is the only thing pending, polled while spinning.
            while stop_rx.try_recv().is_err() {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        });
    });
    let tid = tid_rx
        .recv_timeout(HANG_LIMIT)
        .expect("the executor starts");
    let state = || {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
            .expect("the executor thread's stat");
        // The state follows the parenthesised name, which may hold spaces.
        let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
        after.chars().next().expect("a state")
    };
    for look in 0..20 {
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(
            state(),
            'R',
            "look {look}: the executor slept although asked to spin for 600 s"
        );
    }
    let _ = stop_tx.send(());
}
