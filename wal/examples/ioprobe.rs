//! Measures the cost of one small write + fdatasync on this file system for
//! the I/O strategies the WAL could use, so the choice documented in the crate
//! docs can be re-checked on another machine:
//!
//! `cargo run --release -p wal --example ioprobe [DIR]`
//!
//! Each case writes 4 KiB at increasing offsets into a 64 MiB file prepared
//! in one of several ways, and reports p50/p99 of write+sync latency.

use glommio::io::{BufferedFile, OpenOptions};
use glommio::LocalExecutorBuilder;
use std::path::{Path, PathBuf};
use std::time::Instant;

const FILE_SIZE: u64 = 64 << 20;
const WRITE: usize = 4096;

#[derive(Clone, Copy, Debug)]
enum Prep {
    /// Nothing: every write extends the file.
    Append,
    /// fallocate(2) only: unwritten extents.
    Fallocate,
    /// fallocate + zeros written + fdatasync: initialised extents.
    ZeroFill,
}

async fn prepare(path: &Path, prep: Prep) {
    let _ = std::fs::remove_file(path);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .dma_open(path)
        .await
        .unwrap();
    match prep {
        Prep::Append => {}
        Prep::Fallocate => f.pre_allocate(FILE_SIZE, false).await.unwrap(),
        Prep::ZeroFill => {
            f.pre_allocate(FILE_SIZE, false).await.unwrap();
            let chunk = 1 << 20;
            let mut off = 0;
            while off < FILE_SIZE {
                let mut b = f.alloc_dma_buffer(chunk);
                b.as_bytes_mut().fill(0);
                f.write_at(b, off).await.unwrap();
                off += chunk as u64;
            }
        }
    }
    f.fdatasync().await.unwrap();
    f.close().await.unwrap();
}

fn report(name: &str, mut lat: Vec<u64>) {
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!("ioprobe {name:<34} p50_us={} p99_us={}", p(0.5), p(0.99));
}

async fn dma_case(path: &Path, prep: Prep, dsync: bool, n: usize) {
    prepare(path, prep).await;
    let mut oo = OpenOptions::new();
    oo.write(true);
    if dsync {
        oo.custom_flags(libc_o_dsync());
    }
    let f = oo.dma_open(path).await.unwrap();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let mut b = f.alloc_dma_buffer(WRITE);
        b.as_bytes_mut().fill(0x5a);
        let t = Instant::now();
        f.write_at(b, (i * WRITE) as u64).await.unwrap();
        if !dsync {
            f.fdatasync().await.unwrap();
        }
        lat.push(t.elapsed().as_micros() as u64);
    }
    f.close().await.unwrap();
    let how = if dsync { "o_dsync" } else { "fdatasync" };
    report(&format!("dma {prep:?} {how}"), lat);
}

async fn buffered_case(path: &Path, prep: Prep, n: usize) {
    prepare(path, prep).await;
    let f = OpenOptions::new()
        .write(true)
        .buffered_open(path)
        .await
        .unwrap();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f.write_at(vec![0x5a; WRITE], (i * WRITE) as u64)
            .await
            .unwrap();
        f.fdatasync().await.unwrap();
        lat.push(t.elapsed().as_micros() as u64);
    }
    f.close().await.unwrap();
    report(&format!("buffered {prep:?} fdatasync"), lat);
    let _: Option<BufferedFile> = None;
}

fn libc_o_dsync() -> i32 {
    // O_DSYNC on Linux (all architectures glommio supports).
    0o10000
}

fn main() {
    let dir: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ioprobe"));
    std::fs::create_dir_all(&dir).unwrap();
    let n: usize = std::env::var("IOPROBE_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            let path = dir.join("probe.dat");
            for prep in [Prep::Append, Prep::Fallocate, Prep::ZeroFill] {
                dma_case(&path, prep, false, n).await;
                dma_case(&path, prep, true, n).await;
                buffered_case(&path, prep, n).await;
            }
            let _ = std::fs::remove_file(&path);
        })
        .unwrap()
        .join()
        .unwrap();
}
