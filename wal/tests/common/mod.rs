//! Helpers shared by the integration tests.
#![allow(dead_code)]

use glommio::LocalExecutorBuilder;
use std::future::Future;
use std::path::{Path, PathBuf};
use wal::{IoMode, Record, Wal, WalOptions};

/// Runs `f` to completion on a fresh glommio executor.
pub fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(f)
        .expect("spawning an executor")
        .join()
        .expect("the executor panicked")
}

pub fn opts(segment_size: u64) -> WalOptions {
    WalOptions {
        segment_size,
        ..WalOptions::default()
    }
}

pub fn opts_mode(segment_size: u64, io_mode: IoMode) -> WalOptions {
    WalOptions {
        segment_size,
        io_mode,
        ..WalOptions::default()
    }
}

/// Deterministic payload of `len` bytes for record number `i`.
pub fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i.wrapping_mul(31).wrapping_add(j.wrapping_mul(7)) % 251) as u8 + 1)
        .collect()
}

/// Opens, checks nothing, closes; returns the recovered records.
pub async fn reopen_records(dir: &Path, o: WalOptions) -> Vec<Record> {
    let (w, rec) = Wal::open(dir, o).await.expect("reopen");
    w.close().await.expect("close");
    rec.records
}

/// The segment files in `dir`, sorted.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Copies every file of `from` into the fresh directory `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for p in segment_files(from) {
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}
