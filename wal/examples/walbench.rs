//! The WAL benchmark: durable appends/s and latency for 1, 16, 256 and 1024
//! concurrent appenders (tasks on one glommio executor) of 256-byte records,
//! and the raw cost of a 4 KiB pwrite + fdatasync on the same disk.
//!
//! `cargo run --release -p wal --example walbench` prints one line per case:
//!
//! ```text
//! walbench appenders=N appends_per_s=X fsyncs_per_s=Y p50_us=P p99_us=Q
//! walbench raw_fdatasync fsyncs_per_s=Z p50_us=R
//! ```
//!
//! Environment (all optional): `WALBENCH_SECS` seconds per case (default 3),
//! `WALBENCH_DIR` where to write (default `target/walbench` in the workspace,
//! which is on the same disk as the project; /tmp may be tmpfs elsewhere),
//! `WALBENCH_IO` = `dma` | `buffered`, `WALBENCH_ZERO_FILL` = `1` | `0`,
//! `WALBENCH_O_DSYNC` = `1` | `0`, `WALBENCH_APPENDERS` = comma-separated
//! list. Notes go to stderr.

use glommio::LocalExecutorBuilder;
use std::cell::{Cell, RefCell};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};
use wal::{IoMode, Wal, WalOptions};

const RECORD: usize = 256;

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn wal_case(dir: &Path, appenders: usize, secs: f64, opts: WalOptions) {
    let _ = std::fs::remove_dir_all(dir);
    let (dir_for_note, opts_for_note) = (dir.to_owned(), opts.clone());
    let dir = dir.to_owned();
    let (n, commits, elapsed, mut lat, after) = LocalExecutorBuilder::default()
        .spawn(move || async move {
            let (wal, _) = Wal::open(&dir, opts).await.expect("open");
            let wal = Rc::new(wal);
            // Let the background preparation of the next segment finish so
            // that every case starts from the same state.
            glommio::timer::sleep(Duration::from_millis(1000)).await;
            let lat = Rc::new(RefCell::new(Vec::<u32>::with_capacity(1 << 20)));
            let stop = Rc::new(Cell::new(false));
            let start = Instant::now();
            let before = wal.stats();
            let timer = {
                let stop = stop.clone();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_secs_f64(secs)).await;
                    stop.set(true);
                })
            };
            let tasks: Vec<_> = (0..appenders)
                .map(|t| {
                    let (wal, lat, stop) = (wal.clone(), lat.clone(), stop.clone());
                    glommio::spawn_local(async move {
                        let payload = vec![t as u8; RECORD];
                        while !stop.get() {
                            let t0 = Instant::now();
                            wal.append(1, &payload).await.expect("append");
                            lat.borrow_mut().push(t0.elapsed().as_micros() as u32);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            timer.await;
            let elapsed = start.elapsed();
            let after = wal.stats();
            Rc::try_unwrap(wal)
                .ok()
                .unwrap()
                .close()
                .await
                .expect("close");
            let lat = Rc::try_unwrap(lat).unwrap().into_inner();
            (
                after.records - before.records,
                after.commits - before.commits,
                elapsed,
                lat,
                after,
            )
        })
        .expect("executor")
        .join()
        .expect("bench panicked");
    lat.sort_unstable();
    let s = elapsed.as_secs_f64();
    eprintln!(
        "walbench note: appenders={appenders} rotations={} rotation_wait_ms={}",
        after.rotations,
        after.rotation_wait.as_millis()
    );
    recovery_note(dir_for_note, opts_for_note);
    println!(
        "walbench appenders={appenders} appends_per_s={:.0} fsyncs_per_s={:.0} p50_us={} p99_us={}",
        n as f64 / s,
        commits as f64 / s,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99)
    );
}

/// Reopens the log a case left behind and notes (on stderr) how long
/// recovery took.
fn recovery_note(dir: PathBuf, opts: WalOptions) {
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            let t = Instant::now();
            let (wal, rec) = Wal::open(&dir, opts).await.expect("reopen");
            let took = t.elapsed();
            let segs = wal.segment_paths().len();
            wal.close().await.expect("close");
            eprintln!(
                "walbench note: reopen recovered {} records from {segs} segments in {} ms",
                rec.records.len(),
                took.as_millis()
            );
        })
        .expect("executor")
        .join()
        .expect("reopen panicked");
}

/// A plain loop of 4 KiB pwrite + fdatasync into a preallocated (zero-filled)
/// file: the physical limit. Returns (latencies in µs, seconds spent).
fn raw_case(dir: &Path, secs: f64) -> (Vec<u32>, f64) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("raw.dat");
    let size: u64 = 64 << 20;
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // Preallocated the way the WAL's segments are: zeros written and synced.
    let zeros = vec![0u8; 1 << 20];
    for off in (0..size).step_by(zeros.len()) {
        f.write_all_at(&zeros, off).unwrap();
    }
    f.sync_all().unwrap();
    let block = vec![0x5au8; 4096];
    let mut lat = Vec::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut off = 0u64;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        f.write_all_at(&block, off).unwrap();
        f.sync_data().unwrap();
        lat.push(t0.elapsed().as_micros() as u32);
        off = (off + 4096) % size;
    }
    let s = start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    (lat, s)
}

fn main() {
    let root: PathBuf = std::env::var_os("WALBENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/walbench"));
    let secs: f64 = env("WALBENCH_SECS").unwrap_or(3.0);
    let io_mode = match std::env::var("WALBENCH_IO").as_deref() {
        Ok("buffered") => IoMode::Buffered,
        _ => IoMode::Dma,
    };
    let zero_fill = env::<u8>("WALBENCH_ZERO_FILL").unwrap_or(1) != 0;
    let o_dsync = env::<u8>("WALBENCH_O_DSYNC").map(|v| v != 0);
    let appenders: Vec<usize> = std::env::var("WALBENCH_APPENDERS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 256, 1024]);
    let mut opts = WalOptions {
        io_mode,
        zero_fill,
        ..WalOptions::default()
    };
    if let Some(d) = o_dsync {
        opts.o_dsync = d;
    }
    eprintln!(
        "walbench: dir={} secs={secs} io={io_mode:?} zero_fill={zero_fill} o_dsync={} record={RECORD}B",
        root.display(),
        opts.o_dsync
    );
    // The raw loop runs half before and half after the WAL cases, so that a
    // change in the machine's load during the run affects both alike.
    let (mut lat, mut s) = raw_case(&root, secs / 2.0);
    for n in appenders {
        wal_case(&root.join("wal"), n, secs, opts.clone());
    }
    let (more, s2) = raw_case(&root, secs / 2.0);
    lat.extend(more);
    s += s2;
    lat.sort_unstable();
    println!(
        "walbench raw_fdatasync fsyncs_per_s={:.0} p50_us={}",
        lat.len() as f64 / s,
        percentile(&lat, 0.50)
    );
    let _ = std::fs::remove_dir_all(&root);
}
