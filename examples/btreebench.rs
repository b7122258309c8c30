//! Side-by-side benchmark of corekv's storage backend and redb.
//!
//! `cargo run --release --example btreebench` prints, per workload:
//! `btreebench workload=W corekv_ops_per_s=X redb_ops_per_s=Y`
//!
//! Files go to a temporary directory under `target/` (the project's disk, not
//! tmpfs), or under `$BTREEBENCH_DIR` if set. `BTREEBENCH_N` overrides the key count.

use std::ops::Bound;
use std::path::Path;
use std::time::Instant;

use corekv::storage::{Bucket, Db, DbOptions};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("key");
const VALUE_LEN: usize = 256;

fn value(i: u64) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (i as usize).wrapping_mul(31).wrapping_add(j) as u8;
    }
    v
}

fn corekv_put(path: &Path, n: u64, batch: u64) -> f64 {
    let db = Db::open(path, DbOptions::default()).unwrap();
    let t = Instant::now();
    let mut w = db.begin_write().unwrap();
    for i in 0..n {
        w.put(Bucket::Key, &i.to_be_bytes(), &value(i)).unwrap();
        if (i + 1) % batch == 0 {
            w.commit().unwrap();
            w = db.begin_write().unwrap();
        }
    }
    w.commit().unwrap();
    n as f64 / t.elapsed().as_secs_f64()
}

fn redb_put(path: &Path, n: u64, batch: u64) -> f64 {
    let db = redb::Database::create(path).unwrap();
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(TABLE).unwrap();
            for j in i..(i + batch).min(n) {
                table.insert(&j.to_be_bytes()[..], &value(j)[..]).unwrap();
            }
        }
        txn.commit().unwrap();
        i += batch;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn corekv_get(path: &Path, n: u64) -> f64 {
    let db = Db::open(path, DbOptions::default()).unwrap();
    let r = db.begin_read();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut sum = 0usize;
    let t = Instant::now();
    for _ in 0..n {
        let k = rng.next() % n;
        sum += r.get(Bucket::Key, &k.to_be_bytes()).unwrap().unwrap()[0] as usize;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    rate
}

fn redb_get(path: &Path, n: u64) -> f64 {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(TABLE).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut sum = 0usize;
    let t = Instant::now();
    for _ in 0..n {
        let k = rng.next() % n;
        sum += table.get(&k.to_be_bytes()[..]).unwrap().unwrap().value()[0] as usize;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    rate
}

fn corekv_scan(path: &Path, n: u64) -> f64 {
    let db = Db::open(path, DbOptions::default()).unwrap();
    let r = db.begin_read();
    let t = Instant::now();
    let mut c = 0u64;
    let mut sum = 0usize;
    for kv in r.range(Bucket::Key, Bound::Unbounded, Bound::Unbounded, false) {
        let (k, v) = kv.unwrap();
        sum += k.len() + v[0] as usize;
        c += 1;
    }
    let rate = c as f64 / t.elapsed().as_secs_f64();
    assert_eq!(c, n);
    std::hint::black_box(sum);
    rate
}

fn redb_scan(path: &Path, n: u64) -> f64 {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(TABLE).unwrap();
    let t = Instant::now();
    let mut c = 0u64;
    let mut sum = 0usize;
    for kv in table.iter().unwrap() {
        let (k, v) = kv.unwrap();
        sum += k.value().len() + v.value()[0] as usize;
        c += 1;
    }
    let rate = c as f64 / t.elapsed().as_secs_f64();
    assert_eq!(c, n);
    std::hint::black_box(sum);
    rate
}

fn line(w: &str, a: f64, b: f64) {
    println!("btreebench workload={w} corekv_ops_per_s={a:.0} redb_ops_per_s={b:.0}");
}

fn main() {
    let n: u64 = std::env::var("BTREEBENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let base = std::env::var("BTREEBENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("btreebench")
        .tempdir_in(&base)
        .unwrap();
    let ck = |name: &str| dir.path().join(format!("{name}.corekv"));
    let rd = |name: &str| dir.path().join(format!("{name}.redb"));

    for batch in [1000u64, 10_000] {
        let w = format!("seq_put_batch{batch}");
        let a = corekv_put(&ck(&w), n, batch);
        let b = redb_put(&rd(&w), n, batch);
        eprintln!(
            "  {w}: file sizes corekv {} MiB, redb {} MiB",
            std::fs::metadata(ck(&w)).unwrap().len() >> 20,
            std::fs::metadata(rd(&w)).unwrap().len() >> 20
        );
        line(&w, a, b);
    }
    let data = "seq_put_batch10000";
    let a = corekv_get(&ck(data), n);
    let b = redb_get(&rd(data), n);
    line("random_get", a, b);
    let a = corekv_scan(&ck(data), n);
    let b = redb_scan(&rd(data), n);
    line("scan", a, b);
}
