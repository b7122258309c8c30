//! Measures what one small durable write costs on this file system for the
//! I/O strategies the WAL could use, so that the choice documented in the
//! crate docs can be re-checked on another machine:
//!
//! `cargo run --release -p wal --example ioprobe [DIR]`
//!
//! Part 1 (`prep`): 4 KiB write + fdatasync at increasing offsets into a
//! 64 MiB file that was not preallocated, only fallocate'd, or fallocate'd
//! and zero-filled, with glommio DMA (O_DIRECT) and buffered files.
//!
//! Part 2 (`path`): on a zero-filled file, the ways to make a 4 KiB write
//! durable: plain blocking syscalls (buffered or O_DIRECT, fdatasync or
//! O_DSYNC) and glommio's DMA and buffered files. The cases run in
//! interleaved rounds so that noise from other load hits them alike.
//!
//! Prints `ioprobe <case> p50_us=.. p99_us=..`. `IOPROBE_N` sets the writes
//! per case and round (default 250).

use glommio::io::OpenOptions;
use glommio::LocalExecutorBuilder;
use std::path::{Path, PathBuf};
use std::time::Instant;

const FILE_SIZE: u64 = 64 << 20;
const WRITE: usize = 4096;
const O_DIRECT: i32 = 0o40000;
const O_DSYNC: i32 = 0o10000;

#[derive(Clone, Copy, Debug)]
enum Prep {
    /// Nothing: every write extends the file.
    Append,
    /// fallocate(2) only: unwritten extents.
    Fallocate,
    /// fallocate + zeros written + fdatasync: initialised extents.
    ZeroFill,
}

#[derive(Clone, Copy, Debug)]
enum Path2 {
    StdBuffered,
    StdDirect,
    StdDirectDsync,
    GlommioDma,
    GlommioDmaDsync,
    GlommioBuffered,
}

async fn prepare(path: &Path, prep: Prep) {
    let _ = std::fs::remove_file(path);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .dma_open(path)
        .await
        .unwrap();
    if let Prep::Fallocate | Prep::ZeroFill = prep {
        f.pre_allocate(FILE_SIZE, false).await.unwrap();
    }
    if let Prep::ZeroFill = prep {
        let chunk = 1 << 20;
        for off in (0..FILE_SIZE).step_by(chunk) {
            let mut b = f.alloc_dma_buffer(chunk);
            b.as_bytes_mut().fill(0);
            f.write_at(b, off).await.unwrap();
        }
    }
    f.fdatasync().await.unwrap();
    f.close().await.unwrap();
}

fn report(name: &str, mut lat: Vec<u64>) {
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!("ioprobe {name:<40} p50_us={} p99_us={}", p(0.5), p(0.99));
}

/// `n` writes of 4 KiB starting at `first` (in blocks), each made durable.
async fn glommio_writes(path: &Path, how: Path2, first: usize, n: usize) -> Vec<u64> {
    let mut lat = Vec::with_capacity(n);
    let mut oo = OpenOptions::new();
    oo.write(true);
    if let Path2::GlommioDmaDsync = how {
        oo.custom_flags(O_DSYNC);
    }
    if let Path2::GlommioBuffered = how {
        let f = oo.buffered_open(path).await.unwrap();
        for i in first..first + n {
            let t = Instant::now();
            f.write_at(vec![0x5a; WRITE], (i * WRITE) as u64)
                .await
                .unwrap();
            f.fdatasync().await.unwrap();
            lat.push(t.elapsed().as_micros() as u64);
        }
        f.close().await.unwrap();
        return lat;
    }
    let f = oo.dma_open(path).await.unwrap();
    for i in first..first + n {
        let mut b = f.alloc_dma_buffer(WRITE);
        b.as_bytes_mut().fill(0x5a);
        let t = Instant::now();
        f.write_at(b, (i * WRITE) as u64).await.unwrap();
        if let Path2::GlommioDma = how {
            f.fdatasync().await.unwrap();
        }
        lat.push(t.elapsed().as_micros() as u64);
    }
    f.close().await.unwrap();
    lat
}

/// The same with plain blocking syscalls.
fn std_writes(path: &Path, how: Path2, first: usize, n: usize) -> Vec<u64> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let flags = match how {
        Path2::StdDirect => O_DIRECT,
        Path2::StdDirectDsync => O_DIRECT | O_DSYNC,
        _ => 0,
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(flags)
        .open(path)
        .unwrap();
    // A 4 KiB-aligned buffer, as O_DIRECT needs.
    let mut raw = vec![0x5au8; 2 * WRITE];
    let skew = raw.as_ptr().align_offset(WRITE);
    let buf = &mut raw[skew..skew + WRITE];
    let mut lat = Vec::with_capacity(n);
    for i in first..first + n {
        let t = Instant::now();
        f.write_all_at(buf, (i * WRITE) as u64).unwrap();
        if flags & O_DSYNC == 0 {
            f.sync_data().unwrap();
        }
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat
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
        .unwrap_or(250);
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            let path = dir.join("probe.dat");
            for prep in [Prep::Append, Prep::Fallocate, Prep::ZeroFill] {
                for how in [Path2::GlommioDma, Path2::GlommioBuffered] {
                    prepare(&path, prep).await;
                    let lat = glommio_writes(&path, how, 0, 4 * n).await;
                    report(&format!("prep {prep:?} {how:?}"), lat);
                }
            }
            let cases = [
                Path2::StdBuffered,
                Path2::StdDirect,
                Path2::StdDirectDsync,
                Path2::GlommioDma,
                Path2::GlommioDmaDsync,
                Path2::GlommioBuffered,
            ];
            let mut lats: Vec<Vec<u64>> = vec![Vec::new(); cases.len()];
            prepare(&path, Prep::ZeroFill).await;
            let rounds = 8;
            let mut first = 0;
            for _ in 0..rounds {
                for (i, &how) in cases.iter().enumerate() {
                    let l = match how {
                        Path2::StdBuffered | Path2::StdDirect | Path2::StdDirectDsync => {
                            std_writes(&path, how, first, n)
                        }
                        _ => glommio_writes(&path, how, first, n).await,
                    };
                    lats[i].extend(l);
                    first += n;
                    if (first + n) * WRITE > FILE_SIZE as usize {
                        first = 0;
                    }
                }
            }
            for (how, lat) in cases.iter().zip(lats) {
                report(&format!("path {how:?}"), lat);
            }
            let _ = std::fs::remove_file(&path);
        })
        .unwrap()
        .join()
        .unwrap();
}
