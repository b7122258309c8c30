use super::*;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Mutex;

pub(crate) fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("corekv-storage")
        .tempdir()
        .unwrap()
}

#[test]
fn storage_basic_put_get_delete() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    let db = Db::open(&path, DbOptions::default()).unwrap();
    let mut w = db.begin_write().unwrap();
    for i in 0..5000u32 {
        w.put(Bucket::Key, &i.to_be_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    assert_eq!(
        w.get(Bucket::Key, &7u32.to_be_bytes()).unwrap(),
        Some(&b"v7"[..])
    );
    w.commit().unwrap();
    db.check().unwrap();
    let r = db.begin_read();
    assert_eq!(
        r.get(Bucket::Key, &4999u32.to_be_bytes()).unwrap(),
        Some(&b"v4999"[..])
    );
    assert_eq!(
        r.count(Bucket::Key, Bound::Unbounded, Bound::Unbounded)
            .unwrap(),
        5000
    );
    let mut w = db.begin_write().unwrap();
    for i in 0..5000u32 {
        if i % 3 != 0 {
            assert!(w.delete(Bucket::Key, &i.to_be_bytes()).unwrap());
        }
    }
    w.commit().unwrap();
    db.check().unwrap();
    let r2 = db.begin_read();
    assert_eq!(
        r2.count(Bucket::Key, Bound::Unbounded, Bound::Unbounded)
            .unwrap(),
        1667
    );
    // the old reader still sees everything
    assert_eq!(
        r.count(Bucket::Key, Bound::Unbounded, Bound::Unbounded)
            .unwrap(),
        5000
    );
    let keys: Vec<u32> = r2
        .range(
            Bucket::Key,
            Bound::Included(&10u32.to_be_bytes()[..]),
            Bound::Excluded(&22u32.to_be_bytes()[..]),
            true,
        )
        .map(|kv| u32::from_be_bytes(kv.unwrap().0.try_into().unwrap()))
        .collect();
    assert_eq!(keys, vec![21, 18, 15, 12]);
    drop(r);
    drop(r2);
    drop(db);
    let db = Db::open(
        &path,
        DbOptions {
            full_check_on_open: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        db.begin_read()
            .count(Bucket::Key, Bound::Unbounded, Bound::Unbounded)
            .unwrap(),
        1667
    );
}

// ---------------------------------------------------------------------------
// helpers

type Model = std::collections::BTreeMap<(u8, Vec<u8>), Vec<u8>>;

fn dump_read(r: &ReadTxn) -> Model {
    let mut m = Model::new();
    for b in Bucket::ALL {
        for kv in r.range(b, Bound::Unbounded, Bound::Unbounded, false) {
            let (k, v) = kv.unwrap();
            m.insert((b as u8, k.to_vec()), v.to_vec());
        }
    }
    m
}

fn bucket(i: u8) -> Bucket {
    Bucket::ALL[i as usize % Bucket::ALL.len()]
}

fn small_opts() -> DbOptions {
    DbOptions {
        page_size: 1024,
        ..Default::default()
    }
}

/// Deterministic xorshift for tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn val(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed as usize).wrapping_mul(131).wrapping_add(i) as u8)
        .collect()
}

/// Apply `n` random operations to both the write txn and the model.
fn random_ops(w: &mut WriteTxn, m: &mut Model, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let b = rng.below(2) as u8;
        let k = format!("k{}", rng.below(400)).into_bytes();
        if rng.below(4) == 0 {
            let existed = w.delete(bucket(b), &k).unwrap();
            assert_eq!(existed, m.remove(&(b, k)).is_some());
        } else {
            let len = match rng.below(10) {
                0 => 300 + rng.below(3000) as usize,
                1 => 0,
                _ => rng.below(60) as usize,
            };
            let v = val(rng.next(), len);
            w.put(bucket(b), &k, &v).unwrap();
            m.insert((b, k), v);
        }
    }
}

// ---------------------------------------------------------------------------
// property test against BTreeMap

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u16, u16),
        Delete(u8, u16),
        Get(u8, u16),
        Scan(u8, Option<u16>, Option<u16>, bool, bool),
        Count(u8, u16, u16),
        Commit,
        Abort,
        Reopen,
    }

    fn key(k: u16) -> Vec<u8> {
        // Variable-length keys that still sort like their numbers within a width.
        let w = 1 + (k % 7) as usize * 3;
        format!("{k:0w$}").into_bytes()
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            40 => (0u8..3, 0u16..600, prop_oneof![8 => 0u16..80, 1 => 200u16..3000]).prop_map(|(b, k, l)| Op::Put(b, k, l)),
            15 => (0u8..3, 0u16..600).prop_map(|(b, k)| Op::Delete(b, k)),
            8 => (0u8..3, 0u16..600).prop_map(|(b, k)| Op::Get(b, k)),
            5 => (0u8..3, proptest::option::of(0u16..600), proptest::option::of(0u16..600), any::<bool>(), any::<bool>())
                .prop_map(|(b, s, e, r, x)| Op::Scan(b, s, e, r, x)),
            2 => (0u8..3, 0u16..600, 0u16..600).prop_map(|(b, s, e)| Op::Count(b, s, e)),
            4 => Just(Op::Commit),
            1 => Just(Op::Abort),
            1 => Just(Op::Reopen),
        ]
    }

    fn bounds<'a>(
        s: Option<&'a [u8]>,
        e: Option<&'a [u8]>,
        excl: bool,
    ) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        let sb = match s {
            Some(k) if excl => Bound::Excluded(k),
            Some(k) => Bound::Included(k),
            None => Bound::Unbounded,
        };
        let eb = match e {
            Some(k) if excl => Bound::Included(k),
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        (sb, eb)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn storage_proptest_matches_btreemap(ops in proptest::collection::vec(op(), 1..400)) {
            let dir = tmpdir();
            let path = dir.path().join("db");
            let mut db = Db::open(&path, small_opts()).unwrap();
            let mut committed = Model::new();
            let mut cur = committed.clone();
            let mut w = Some(db.begin_write().unwrap());
            for op in ops {
                let wt = w.as_mut().unwrap();
                match op {
                    Op::Put(b, k, l) => {
                        let v = val(k as u64 * 7 + l as u64, l as usize);
                        wt.put(bucket(b), &key(k), &v).unwrap();
                        cur.insert((b, key(k)), v);
                    }
                    Op::Delete(b, k) => {
                        let existed = wt.delete(bucket(b), &key(k)).unwrap();
                        prop_assert_eq!(existed, cur.remove(&(b, key(k))).is_some());
                    }
                    Op::Get(b, k) => {
                        let got = wt.get(bucket(b), &key(k)).unwrap().map(|v| v.to_vec());
                        prop_assert_eq!(got.as_ref(), cur.get(&(b, key(k))));
                        let r = db.begin_read();
                        let got = r.get(bucket(b), &key(k)).unwrap().map(|v| v.to_vec());
                        prop_assert_eq!(got.as_ref(), committed.get(&(b, key(k))));
                    }
                    Op::Scan(b, s, e, rev, excl) => {
                        let (sk, ek) = (s.map(key), e.map(key));
                        let (sb, eb) = bounds(sk.as_deref(), ek.as_deref(), excl);
                        let got: Vec<(Vec<u8>, Vec<u8>)> = wt
                            .range(bucket(b), sb, eb, rev)
                            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                            .collect();
                        let valid = match (sb, eb) {
                            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(z) | Bound::Excluded(z)) => a <= z,
                            _ => true,
                        };
                        let mut want: Vec<(Vec<u8>, Vec<u8>)> = if valid && !(matches!((sb, eb), (Bound::Excluded(a), Bound::Excluded(z)) | (Bound::Excluded(a), Bound::Included(z)) | (Bound::Included(a), Bound::Excluded(z)) if a == z)) {
                            let lo = match sb { Bound::Included(k) => Bound::Included((b, k.to_vec())), Bound::Excluded(k) => Bound::Excluded((b, k.to_vec())), Bound::Unbounded => Bound::Included((b, vec![])) };
                            let hi = match eb { Bound::Included(k) => Bound::Included((b, k.to_vec())), Bound::Excluded(k) => Bound::Excluded((b, k.to_vec())), Bound::Unbounded => Bound::Excluded((b + 1, vec![])) };
                            cur.range((lo, hi)).map(|((_, k), v)| (k.clone(), v.clone())).collect()
                        } else {
                            vec![]
                        };
                        if rev {
                            want.reverse();
                        }
                        prop_assert_eq!(got, want);
                    }
                    Op::Count(b, s, e) => {
                        let (sk, ek) = (key(s), key(e));
                        let got = wt.count(bucket(b), Bound::Included(&sk), Bound::Excluded(&ek)).unwrap();
                        let want = if sk < ek { cur.range((b, sk.clone())..(b, ek.clone())).count() as u64 } else { 0 };
                        prop_assert_eq!(got, want);
                        let all = wt.count(bucket(b), Bound::Unbounded, Bound::Unbounded).unwrap();
                        prop_assert_eq!(all, cur.range((b, vec![])..(b + 1, vec![])).count() as u64);
                    }
                    Op::Commit => {
                        w.take().unwrap().commit().unwrap();
                        committed = cur.clone();
                        db.check().unwrap();
                        prop_assert_eq!(&dump_read(&db.begin_read()), &committed);
                        w = Some(db.begin_write().unwrap());
                    }
                    Op::Abort => {
                        w.take().unwrap().abort();
                        cur = committed.clone();
                        w = Some(db.begin_write().unwrap());
                    }
                    Op::Reopen => {
                        drop(w.take());
                        drop(db);
                        cur = committed.clone();
                        db = Db::open(&path, DbOptions { full_check_on_open: true, ..small_opts() }).unwrap();
                        prop_assert_eq!(&dump_read(&db.begin_read()), &committed);
                        w = Some(db.begin_write().unwrap());
                    }
                }
            }
            w.take().unwrap().commit().unwrap();
            db.check().unwrap();
            prop_assert_eq!(&dump_read(&db.begin_read()), &cur);
        }
    }
}

// ---------------------------------------------------------------------------
// crash consistency through a file layer that loses unsynced writes

mod crash {
    use super::*;
    use std::fs::File;
    use std::io;
    use std::os::unix::fs::FileExt;

    #[derive(Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        SetLen(u64),
    }

    struct State {
        durable: Vec<u8>,
        pending: Vec<Op>,
        ops: usize,
        crash_at: usize,
    }

    /// Applies everything to a real file (which the map reads) and keeps the
    /// image a power cut would leave: the bytes as of the last sync. From op
    /// number `crash_at` on, every call fails (the process "died" there).
    pub(super) struct CrashFile {
        f: File,
        st: Mutex<State>,
    }

    fn apply(img: &mut Vec<u8>, op: &Op, torn: bool) {
        match op {
            Op::Write(off, data) => {
                let data = if torn {
                    &data[..data.len() / 2]
                } else {
                    &data[..]
                };
                let end = *off as usize + data.len();
                if img.len() < end {
                    img.resize(end, 0);
                }
                img[*off as usize..end].copy_from_slice(data);
            }
            Op::SetLen(l) => img.resize(*l as usize, 0),
        }
    }

    impl CrashFile {
        pub(super) fn new(path: &Path, image: &[u8]) -> Arc<CrashFile> {
            std::fs::write(path, image).unwrap();
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            Arc::new(CrashFile {
                f,
                st: Mutex::new(State {
                    durable: image.to_vec(),
                    pending: Vec::new(),
                    ops: 0,
                    crash_at: usize::MAX,
                }),
            })
        }
        fn step(&self) -> io::Result<std::sync::MutexGuard<'_, State>> {
            let mut st = self.st.lock().unwrap();
            if st.ops >= st.crash_at {
                return Err(io::Error::other("simulated crash"));
            }
            st.ops += 1;
            Ok(st)
        }
        pub(super) fn arm(&self, after: usize) {
            let mut st = self.st.lock().unwrap();
            st.crash_at = st.ops + after;
        }
        pub(super) fn ops(&self) -> usize {
            self.st.lock().unwrap().ops
        }
        pub(super) fn durable(&self) -> Vec<u8> {
            self.st.lock().unwrap().durable.clone()
        }
        /// Images a crash now could leave: unsynced writes dropped, all applied,
        /// the last one torn, and random subsets (the disk reorders), some torn.
        pub(super) fn crash_images(&self, seed: u64) -> Vec<Vec<u8>> {
            let st = self.st.lock().unwrap();
            let mut out = vec![st.durable.clone()];
            let n = st.pending.len();
            if n == 0 {
                return out;
            }
            let mut all = st.durable.clone();
            for op in &st.pending {
                apply(&mut all, op, false);
            }
            out.push(all);
            let mut torn = st.durable.clone();
            for (i, op) in st.pending.iter().enumerate() {
                apply(&mut torn, op, i + 1 == n);
            }
            out.push(torn);
            let mut rng = Rng(seed | 1);
            for _ in 0..6 {
                let mut img = st.durable.clone();
                for op in &st.pending {
                    match rng.below(3) {
                        0 => {}
                        1 => apply(&mut img, op, false),
                        _ => apply(&mut img, op, rng.below(2) == 0),
                    }
                }
                out.push(img);
            }
            out
        }
    }

    impl FileLayer for CrashFile {
        fn file(&self) -> &File {
            &self.f
        }
        fn file_len(&self) -> io::Result<u64> {
            Ok(self.f.metadata()?.len())
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            let mut st = self.step()?;
            self.f.set_len(len)?;
            st.pending.push(Op::SetLen(len));
            Ok(())
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            let mut st = self.step()?;
            self.f.write_all_at(buf, offset)?;
            st.pending.push(Op::Write(offset, buf.to_vec()));
            Ok(())
        }
        fn sync(&self) -> io::Result<()> {
            let mut st = self.step()?;
            let pending = std::mem::take(&mut st.pending);
            for op in &pending {
                apply(&mut st.durable, op, false);
            }
            Ok(())
        }
    }

    fn open_image(dir: &Path, name: &str, img: &[u8]) -> Result<Db, StorageError> {
        let p = dir.join(name);
        std::fs::write(&p, img).unwrap();
        Db::open(
            &p,
            DbOptions {
                full_check_on_open: true,
                ..small_opts()
            },
        )
    }

    /// Run one transaction (ops from `seed`) on top of `base`, crashing after
    /// each possible number of file operations in its commit; every crash image
    /// must open to exactly the old or the new state, and take further commits.
    fn crash_every_step(
        dir: &Path,
        base: &[u8],
        old: &Model,
        seed: u64,
        nops: usize,
    ) -> (Vec<u8>, Model) {
        // A clean run first: how many file ops the commit takes, and the new state.
        let path = dir.join("clean");
        let cf = CrashFile::new(&path, base);
        let db = Db::open_with_layer(cf.clone(), small_opts()).unwrap();
        let mut new = old.clone();
        let mut w = db.begin_write().unwrap();
        random_ops(&mut w, &mut new, &mut Rng(seed), nops);
        let before = cf.ops();
        w.commit().unwrap();
        let steps = cf.ops() - before;
        assert!(steps >= 2);
        let next_image = cf.durable();
        drop(db);

        for k in 0..steps {
            let path = dir.join("crashing");
            let cf = CrashFile::new(&path, base);
            let db = Db::open_with_layer(cf.clone(), small_opts()).unwrap();
            let mut w = db.begin_write().unwrap();
            let mut scratch = old.clone();
            random_ops(&mut w, &mut scratch, &mut Rng(seed), nops);
            cf.arm(k);
            assert!(w.commit().is_err(), "commit should fail at step {k}");
            assert!(matches!(db.begin_write(), Err(StorageError::Poisoned)));
            // Readers still see the old state.
            assert_eq!(&dump_read(&db.begin_read()), old);
            for (i, img) in cf.crash_images(seed ^ k as u64).into_iter().enumerate() {
                let db2 = open_image(dir, "img", &img)
                    .unwrap_or_else(|e| panic!("step {k} image {i}: open failed: {e}"));
                let got = dump_read(&db2.begin_read());
                assert!(
                    got == *old || got == new,
                    "step {k} image {i}: a mixed state"
                );
                // The recovered file keeps working, including over pages the
                // failed commit left behind.
                let mut m = got.clone();
                let mut w = db2.begin_write().unwrap();
                random_ops(&mut w, &mut m, &mut Rng(seed ^ 0xdead), nops);
                w.commit().unwrap();
                db2.check().unwrap();
                drop(db2);
                let db3 =
                    open_image(dir, "img2", &std::fs::read(dir.join("img")).unwrap()).unwrap();
                assert_eq!(
                    dump_read(&db3.begin_read()),
                    m,
                    "step {k} image {i}: after reopen"
                );
            }
        }
        (next_image, new)
    }

    #[test]
    fn storage_crash_consistency_every_commit_step() {
        let dir = tmpdir();
        // Empty database image.
        let path = dir.path().join("init");
        drop(Db::open(&path, small_opts()).unwrap());
        let mut image = std::fs::read(&path).unwrap();
        let mut model = Model::new();
        // Several commits: the first one grows the file; later ones replace,
        // delete (merges) and reuse freed pages; overflow values throughout.
        for (i, nops) in [(1u64, 150usize), (2, 300), (3, 60), (4, 400), (5, 30)] {
            let (img, m) = crash_every_step(dir.path(), &image, &model, i * 7919, nops);
            image = img;
            model = m;
        }
    }
}

// ---------------------------------------------------------------------------
// corruption and bad input

fn filled_db(path: &Path, n: u32, commits: u32) -> Model {
    let db = Db::open(path, small_opts()).unwrap();
    let mut m = Model::new();
    let mut rng = Rng(42);
    for _ in 0..commits {
        let mut w = db.begin_write().unwrap();
        for _ in 0..n {
            let k = format!("key{:05}", rng.below(5000)).into_bytes();
            let len = if rng.below(20) == 0 { 2000 } else { 40 };
            let v = val(rng.next(), len);
            w.put(Bucket::Key, &k, &v).unwrap();
            m.insert((0, k), v);
        }
        w.commit().unwrap();
    }
    m
}

fn flip(path: &Path, off: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[off as usize] ^= 0x5a;
    std::fs::write(path, b).unwrap();
}

#[test]
fn storage_corruption_flipped_page_byte_is_detected() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    filled_db(&path, 500, 3);
    {
        // A last commit that does not touch the key bucket.
        let db = Db::open(&path, small_opts()).unwrap();
        let mut w = db.begin_write().unwrap();
        w.put(Bucket::Meta, b"applied", b"1").unwrap();
        w.commit().unwrap();
    }
    let ps = 1024u64;
    // Find a leaf page reachable from the root and flip a byte in its data area.
    let (leaf, hwm) = {
        let db = Db::open(&path, small_opts()).unwrap();
        let v = db.inner.current();
        let mut id = v.meta.roots[0];
        loop {
            let p = v.page(id).unwrap();
            if page::ptype(p) == page::T_LEAF {
                break;
            }
            id = page::branch_child(p, 0).unwrap();
        }
        (id, v.meta.hwm)
    };
    assert!(leaf < hwm);
    flip(&path, leaf * ps + ps - 3);
    // Normal open does the cheap check only (the leaf was not written by the
    // last commit); the full check names the page.
    let res = Db::open(&path, small_opts()).and_then(|db| db.check().map(|_| db));
    match res {
        Err(StorageError::Corruption { page, .. }) => assert_eq!(page, leaf),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("corruption not detected"),
    }
    match Db::open(
        &path,
        DbOptions {
            full_check_on_open: true,
            ..small_opts()
        },
    ) {
        Err(StorageError::Corruption { page, .. }) => assert_eq!(page, leaf),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("corruption not detected by full check at open"),
    }
    // Snapshot and defragment verify too.
    if let Ok(db) = Db::open(&path, small_opts()) {
        let mut s = db.snapshot().unwrap();
        let err = std::io::copy(&mut s, &mut std::io::sink()).unwrap_err();
        assert!(err.to_string().contains(&format!("page {leaf}")), "{err}");
        assert!(matches!(
            db.defragment(),
            Err(StorageError::Corruption { .. })
        ));
    }
}

#[test]
fn storage_corruption_in_last_commit_falls_back_to_previous_commit() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    let db = Db::open(&path, small_opts()).unwrap();
    let mut w = db.begin_write().unwrap();
    w.put(Bucket::Lease, b"a", b"1").unwrap();
    w.commit().unwrap();
    let mut w = db.begin_write().unwrap();
    w.put(Bucket::Lease, b"a", b"2").unwrap();
    w.commit().unwrap();
    let root = db.inner.current().meta.roots[Bucket::Lease as usize];
    drop(db);
    flip(&path, root * 1024 + 1000);
    let db = Db::open(&path, small_opts()).unwrap();
    assert_eq!(
        db.begin_read().get(Bucket::Lease, b"a").unwrap(),
        Some(&b"1"[..])
    );
    let note = db.recovery_note().expect("recovery is reported");
    assert!(note.contains(&format!("page {root}")), "{note}");
    db.check().unwrap();
}

#[test]
fn storage_corruption_meta_page_falls_back_or_errors() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    let db = Db::open(&path, small_opts()).unwrap();
    let mut w = db.begin_write().unwrap();
    w.put(Bucket::Meta, b"a", b"1").unwrap();
    w.commit().unwrap();
    let mut w = db.begin_write().unwrap();
    w.put(Bucket::Meta, b"a", b"2").unwrap();
    w.commit().unwrap();
    let (slot_new, txn_new) = {
        let ws = db.inner.take_writer().unwrap();
        let s = ws.next_slot ^ 1;
        let t = db.inner.current().meta.txn;
        db.inner.put_writer(Some(ws));
        (s, t)
    };
    drop(db);
    let pristine = std::fs::read(&path).unwrap();
    // Flip a byte in the newest meta page: the previous commit wins.
    flip(&path, slot_new * 1024 + 30);
    let db = Db::open(&path, small_opts()).unwrap();
    assert!(db.inner.current().meta.txn < txn_new);
    assert_eq!(
        db.begin_read().get(Bucket::Meta, b"a").unwrap(),
        Some(&b"1"[..])
    );
    drop(db);
    // Both meta pages bad: a clear corruption error naming page 0.
    std::fs::write(&path, &pristine).unwrap();
    flip(&path, 30);
    flip(&path, 1024 + 30);
    match Db::open(&path, small_opts()) {
        Err(StorageError::Corruption { page: 0, reason }) => {
            assert!(reason.contains("meta"), "{reason}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened with both metas corrupt"),
    }
}

#[test]
fn storage_bad_input_is_a_clear_error() {
    let dir = tmpdir();
    // Another format.
    let other = dir.path().join("other");
    std::fs::write(&other, b"SQLite format 3\0".repeat(1000)).unwrap();
    assert!(matches!(
        Db::open(&other, small_opts()),
        Err(StorageError::NotADatabase(_))
    ));
    let tiny = dir.path().join("tiny");
    std::fs::write(&tiny, b"hi").unwrap();
    assert!(matches!(
        Db::open(&tiny, small_opts()),
        Err(StorageError::NotADatabase(_))
    ));
    // Truncated.
    let path = dir.path().join("db");
    filled_db(&path, 300, 2);
    let full = std::fs::read(&path).unwrap();
    let hwm = Db::open(&path, small_opts())
        .unwrap()
        .inner
        .current()
        .meta
        .hwm as usize;
    let cut = dir.path().join("cut");
    std::fs::write(&cut, &full[..hwm * 1024 / 2]).unwrap();
    match Db::open(&cut, small_opts()) {
        Err(StorageError::Truncated(msg)) => assert!(msg.contains("bytes"), "{msg}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a truncated file"),
    }
    std::fs::write(&cut, &full[..1500]).unwrap();
    assert!(Db::open(&cut, small_opts()).is_err());
    // A page pointer outside the file: point a bucket root past the end.
    let db = Db::open(&path, small_opts()).unwrap();
    let mut meta = db.inner.current().meta.clone();
    drop(db);
    meta.roots[2] = meta.hwm + 1000;
    meta.txn += 10;
    let mut b = full.clone();
    meta.encode(&mut b[..1024]);
    meta.encode(&mut b[1024..2048]);
    let bad = dir.path().join("badptr");
    std::fs::write(&bad, &b).unwrap();
    match Db::open(&bad, small_opts()) {
        Err(StorageError::Corruption { page, reason }) => {
            assert_eq!(page, meta.hwm + 1000);
            assert!(reason.contains("outside"), "{reason}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened with a root outside the file"),
    }
    // Garbage inside a page whose checksum was fixed up: reads fail cleanly.
    let db = Db::open(&path, small_opts()).unwrap();
    let root = db.inner.current().meta.roots[0];
    drop(db);
    let mut b = full.clone();
    let p = &mut b[root as usize * 1024..(root as usize + 1) * 1024];
    for i in 0..page::nslots(p) {
        page::wr16(p, page::HDR + 2 * i, 1020);
    }
    page::seal(p);
    let g = dir.path().join("garbage");
    std::fs::write(&g, &b).unwrap();
    let db = Db::open(&g, small_opts()).unwrap();
    let r = db.begin_read();
    assert!(r.get(Bucket::Key, b"key00001").is_err());
    assert!(r
        .range(Bucket::Key, Bound::Unbounded, Bound::Unbounded, false)
        .any(|x| x.is_err()));
    assert!(db.check().is_err());
}

// ---------------------------------------------------------------------------
// snapshot and defragment while writes go on

#[test]
fn storage_snapshot_streams_consistent_copy_while_writing() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    let mut m = filled_db(&path, 400, 3);
    let db = Db::open(&path, small_opts()).unwrap();
    let at_snapshot = dump_read(&db.begin_read());
    assert_eq!(at_snapshot, m);
    let mut snap = db.snapshot().unwrap();
    let total = snap.len();
    let mut out = Vec::new();
    let mut rng = Rng(7);
    let mut buf = vec![0u8; 7000];
    loop {
        // Interleave commits that free and reuse pages with reading the stream.
        let mut w = db.begin_write().unwrap();
        random_ops(&mut w, &mut m, &mut rng, 50);
        w.commit().unwrap();
        let n = std::io::Read::read(&mut snap, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out.len() as u64, total);
    let copy = dir.path().join("copy");
    std::fs::write(&copy, &out).unwrap();
    let c = Db::open(
        &copy,
        DbOptions {
            full_check_on_open: true,
            ..small_opts()
        },
    )
    .unwrap();
    assert_eq!(dump_read(&c.begin_read()), at_snapshot);
    assert_eq!(dump_read(&db.begin_read()), m);
    db.check().unwrap();
}

#[test]
fn storage_defragment_shrinks_and_keeps_writes_flowing() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    let db = Db::open(&path, small_opts()).unwrap();
    let mut m = Model::new();
    let mut w = db.begin_write().unwrap();
    for i in 0..20_000u32 {
        let k = format!("k{i:06}").into_bytes();
        let v = val(i as u64, if i % 100 == 0 { 3000 } else { 50 });
        w.put(Bucket::Key, &k, &v).unwrap();
        m.insert((0, k), v);
    }
    w.commit().unwrap();
    let mut w = db.begin_write().unwrap();
    for i in 0..20_000u32 {
        if i % 10 != 0 {
            let k = format!("k{i:06}").into_bytes();
            w.delete(Bucket::Key, &k).unwrap();
            m.remove(&(0, k));
        }
    }
    w.commit().unwrap();
    let reader = db.begin_read();
    let before_state = dump_read(&reader);

    // A writer thread commits batches while the defragment runs.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wdb = db.clone();
    let wstop = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut m2 = Model::new();
        let mut rng = Rng(99);
        let mut commits = 0;
        while !wstop.load(Ordering::Relaxed) || commits < 5 {
            let mut w = wdb.begin_write().unwrap();
            for _ in 0..20 {
                let k = format!("w{}", rng.below(300)).into_bytes();
                let v = val(rng.next(), 30);
                w.put(Bucket::Auth, &k, &v).unwrap();
                m2.insert((Bucket::Auth as u8, k), v);
            }
            w.commit().unwrap();
            commits += 1;
        }
        (m2, commits)
    });
    std::thread::sleep(std::time::Duration::from_millis(20));
    let rep = db.defragment().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (m2, commits) = writer.join().unwrap();
    assert!(commits >= 5);
    m.extend(m2);
    assert!(rep.size_after < rep.size_before, "{rep:?}");
    assert!(rep.in_use_after < rep.in_use_before, "{rep:?}");
    assert_eq!(dump_read(&db.begin_read()), m);
    // The old reader still reads the old (now unlinked) file.
    assert_eq!(dump_read(&reader), before_state);
    drop(reader);
    db.check().unwrap();
    let mut w = db.begin_write().unwrap();
    w.put(Bucket::Members, b"m1", b"x").unwrap();
    w.commit().unwrap();
    m.insert((Bucket::Members as u8, b"m1".to_vec()), b"x".to_vec());
    drop(db);
    let db = Db::open(
        &path,
        DbOptions {
            full_check_on_open: true,
            ..small_opts()
        },
    )
    .unwrap();
    assert_eq!(dump_read(&db.begin_read()), m);
    assert!(!check::defrag_tmp_path(&path).exists());
}

#[test]
fn storage_readers_are_not_disturbed_and_pages_are_reused() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    let db = Db::open(&path, small_opts()).unwrap();
    let mut m = Model::new();
    let mut rng = Rng(5);
    let mut w = db.begin_write().unwrap();
    random_ops(&mut w, &mut m, &mut rng, 500);
    w.commit().unwrap();
    let r = db.begin_read();
    let seen = dump_read(&r);
    for _ in 0..20 {
        let mut w = db.begin_write().unwrap();
        random_ops(&mut w, &mut m, &mut rng, 200);
        w.commit().unwrap();
        assert_eq!(dump_read(&r), seen);
    }
    drop(r);
    // With no reader holding old versions, churn reaches a steady size.
    for _ in 0..30 {
        let mut w = db.begin_write().unwrap();
        random_ops(&mut w, &mut m, &mut rng, 200);
        w.commit().unwrap();
    }
    let size = db.size();
    for _ in 0..60 {
        let mut w = db.begin_write().unwrap();
        random_ops(&mut w, &mut m, &mut rng, 200);
        w.commit().unwrap();
    }
    assert_eq!(db.size(), size, "file kept growing under churn");
    assert!(db.size_in_use() <= db.size());
    assert_eq!(dump_read(&db.begin_read()), m);
    db.check().unwrap();
}

#[test]
fn storage_handles_are_send_sync_static() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    fn assert_send<T: Send + 'static>() {}
    assert_send_sync::<Db>();
    assert_send_sync::<ReadTxn>();
    assert_send::<WriteTxn>();
    assert_send::<Snapshot>();
}

#[test]
fn storage_large_values_and_limits() {
    let dir = tmpdir();
    let db = Db::open(&dir.path().join("db"), DbOptions::default()).unwrap();
    let big = val(3, 1536 * 1024);
    let mut w = db.begin_write().unwrap();
    w.put(Bucket::Key, b"big", &big).unwrap();
    w.put(Bucket::Key, b"small", b"s").unwrap();
    assert_eq!(w.get(Bucket::Key, b"big").unwrap(), Some(&big[..]));
    let long_key = vec![b'k'; db.max_key_len() + 1];
    assert!(matches!(
        w.put(Bucket::Key, &long_key, b"v"),
        Err(StorageError::KeyTooLarge { .. })
    ));
    w.put(Bucket::Key, &long_key[1..], b"v").unwrap();
    w.commit().unwrap();
    let r = db.begin_read();
    assert_eq!(r.get(Bucket::Key, b"big").unwrap(), Some(&big[..]));
    let mut w = db.begin_write().unwrap();
    w.put(Bucket::Key, b"big", b"now small").unwrap();
    w.commit().unwrap();
    assert_eq!(r.get(Bucket::Key, b"big").unwrap(), Some(&big[..]));
    assert_eq!(
        db.begin_read().get(Bucket::Key, b"big").unwrap(),
        Some(&b"now small"[..])
    );
    db.check().unwrap();
}

#[test]
fn storage_writes_over_garbage_pages_fail_cleanly() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    filled_db(&path, 300, 2);
    let db = Db::open(&path, small_opts()).unwrap();
    let v = db.inner.current();
    let root = v.meta.roots[0];
    let leaf = page::branch_child(v.page(root).unwrap(), 0).unwrap();
    drop(v);
    drop(db);
    let mut b = std::fs::read(&path).unwrap();
    let p = &mut b[leaf as usize * 1024..(leaf as usize + 1) * 1024];
    let n = page::nslots(p);
    page::wr16(p, page::HDR + 2 * (n - 1), 1023);
    page::wr16(p, 26, 60000);
    page::seal(p);
    std::fs::write(&path, &b).unwrap();
    let db = Db::open(&path, small_opts()).unwrap();
    let mut w = db.begin_write().unwrap();
    // Every write into that leaf reports corruption instead of panicking.
    assert!(w.put(Bucket::Key, b"key00000", b"x").is_err());
    let _ = w.delete(Bucket::Key, b"key00001");
    assert!(matches!(db.check(), Err(StorageError::Corruption { page, .. }) if page == leaf));
}

#[test]
fn storage_concurrent_readers_see_whole_commits() {
    let dir = tmpdir();
    let db = Db::open(&dir.path().join("db"), small_opts()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let db = db.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let r = db.begin_read();
                    let a = r.get(Bucket::Meta, b"a").unwrap().map(|v| v.to_vec());
                    let z = r.get(Bucket::Meta, b"z").unwrap().map(|v| v.to_vec());
                    assert_eq!(a, z, "a commit seen in part");
                    let n = r
                        .count(Bucket::Key, Bound::Unbounded, Bound::Unbounded)
                        .unwrap();
                    let scanned = r
                        .range(Bucket::Key, Bound::Unbounded, Bound::Unbounded, true)
                        .count() as u64;
                    assert_eq!(n, scanned);
                    if let Some(a) = a {
                        let c = u64::from_be_bytes(a.try_into().unwrap());
                        assert!(c >= seen, "went back in time");
                        seen = c;
                    }
                }
                seen
            })
        })
        .collect();
    for c in 0..150u64 {
        let mut w = db.begin_write().unwrap();
        w.put(Bucket::Meta, b"a", &c.to_be_bytes()).unwrap();
        for i in 0..20 {
            w.put(Bucket::Key, &(c * 20 + i).to_be_bytes(), &val(c, 100))
                .unwrap();
        }
        if c % 3 == 0 {
            for i in 0..10 {
                w.delete(Bucket::Key, &((c / 2) * 20 + i).to_be_bytes())
                    .unwrap();
            }
        }
        w.put(Bucket::Meta, b"z", &c.to_be_bytes()).unwrap();
        w.commit().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    db.check().unwrap();
}

// ---------------------------------------------------------------------------
// injected I/O failures (FaultyFile): out of space, failed fsync

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

/// A Db whose file fails as `rule` says, with a model of its state.
fn faulty_db(
    path: &Path,
    opts: DbOptions,
    rule: impl Fn(FileOp) -> Option<io::Error> + Send + Sync + 'static,
) -> Db {
    Db::open_wrapped(path, opts, |f| Arc::new(FaultyFile::new(f, rule))).unwrap()
}

fn reopen_checked(path: &Path) -> Db {
    Db::open(
        path,
        DbOptions {
            full_check_on_open: true,
            ..small_opts()
        },
    )
    .unwrap()
}

/// Out of space when the file must grow: the commit is abandoned with nothing changed, the
/// database goes on (reads, and commits that fit, deletes first among them, thanks to the
/// reserve), and the same commit succeeds once space is back.
#[test]
fn storage_no_space_to_grow_abandons_the_commit_and_keeps_the_reserve() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    let full = Arc::new(AtomicBool::new(false));
    let f2 = full.clone();
    let opts = DbOptions {
        reserve_bytes: 64 << 10,
        ..small_opts()
    };
    let db = faulty_db(&path, opts, move |op| {
        (op == FileOp::Allocate && f2.load(SeqCst)).then(enospc)
    });
    let mut m = Model::new();
    let mut w = db.begin_write().unwrap();
    for i in 0..200u32 {
        let (k, v) = (format!("k{i:04}").into_bytes(), val(i as u64, 100));
        w.put(Bucket::Key, &k, &v).unwrap();
        m.insert((0, k), v);
    }
    w.commit().unwrap();
    assert!(!db.space_low());
    // The disk fills up: commits go on into the file's reserve while they fit, and say
    // that space is low (corekv stops taking writes then).
    full.store(true, SeqCst);
    let size = db.size();
    let mut i = 200u32;
    while !db.space_low() {
        let mut w = db.begin_write().unwrap();
        for _ in 0..10 {
            let (k, v) = (format!("k{i:04}").into_bytes(), val(i as u64, 600));
            w.put(Bucket::Key, &k, &v).unwrap();
            m.insert((0, k), v);
            i += 1;
        }
        w.commit().unwrap();
        assert_eq!(db.size(), size, "the file grew on a full disk");
    }
    // A commit larger than what is left fails and changes nothing.
    let mut w = db.begin_write().unwrap();
    for j in 0..100u32 {
        w.put(
            Bucket::Key,
            format!("big{j}").as_bytes(),
            &val(j as u64, 900),
        )
        .unwrap();
    }
    let err = w.commit().expect_err("100 KiB do not fit in the reserve");
    assert!(matches!(err, StorageError::NoSpace(_)), "{err}");
    assert!(err.to_string().contains("os error 28"), "{err}");
    assert!(db.space_low());
    assert_eq!(dump_read(&db.begin_read()), m);
    db.check().unwrap();
    // Deletes still commit on the full disk (they free pages for later commits).
    let mut w = db.begin_write().unwrap();
    for j in (0..200u32).step_by(2) {
        let k = format!("k{j:04}").into_bytes();
        assert!(w.delete(Bucket::Key, &k).unwrap());
        m.remove(&(0, k));
    }
    w.commit().unwrap();
    assert_eq!(db.size(), size);
    db.check().unwrap();
    // Space comes back: the next commit grows the file and the reserve with it.
    full.store(false, SeqCst);
    let mut w = db.begin_write().unwrap();
    for j in 0..100u32 {
        let (k, v) = (format!("z{j:04}").into_bytes(), val(j as u64, 900));
        w.put(Bucket::Key, &k, &v).unwrap();
        m.insert((0, k), v);
    }
    w.commit().unwrap();
    assert!(!db.space_low());
    assert!(db.size() > size);
    drop(db);
    assert_eq!(dump_read(&reopen_checked(&path).begin_read()), m);
}

/// A write that fails with ENOSPC in the middle of a commit (after a short write), at
/// every write of the commit in turn: the commit is abandoned, the old state stays (also
/// across a reopen), and the same changes commit once space is back.
#[test]
fn storage_no_space_mid_commit_is_abandoned_at_every_write() {
    let dir = tmpdir();
    let base = dir.path().join("base");
    let m0 = filled_db(&base, 300, 3);
    let changes = |w: &mut WriteTxn, m: &mut Model| {
        let mut rng = Rng(77);
        random_ops(w, m, &mut rng, 300);
    };
    // How many writes one commit of these changes makes.
    let count = Arc::new(AtomicU32::new(0));
    let c2 = count.clone();
    let probe = dir.path().join("probe");
    std::fs::copy(&base, &probe).unwrap();
    let db = faulty_db(&probe, small_opts(), move |op| {
        if op == FileOp::Write {
            c2.fetch_add(1, SeqCst);
        }
        None
    });
    let mut w = db.begin_write().unwrap();
    let mut m1 = m0.clone();
    changes(&mut w, &mut m1);
    count.store(0, SeqCst);
    w.commit().unwrap();
    let writes = count.load(SeqCst);
    assert!(writes >= 3, "{writes} writes");
    drop(db);
    for k in 1..=writes {
        let path = dir.path().join(format!("w{k}"));
        std::fs::copy(&base, &path).unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let armed = Arc::new(AtomicBool::new(false));
        let (c2, a2) = (calls.clone(), armed.clone());
        let db = faulty_db(&path, small_opts(), move |op| {
            if op != FileOp::Write || !a2.load(SeqCst) {
                return None;
            }
            (c2.fetch_add(1, SeqCst) + 1 == k).then(enospc)
        });
        let mut w = db.begin_write().unwrap();
        let mut m = m0.clone();
        changes(&mut w, &mut m);
        assert!(m == m1);
        armed.store(true, SeqCst);
        let err = w.commit().expect_err("the commit hits ENOSPC");
        assert!(matches!(err, StorageError::NoSpace(_)), "write {k}: {err}");
        armed.store(false, SeqCst);
        assert!(db.space_low());
        assert!(
            dump_read(&db.begin_read()) == m0,
            "write {k}: not the old state"
        );
        db.check().unwrap();
        // A crash now opens the old state (or the new one, when the write that failed was
        // the meta page's and its checksummed part reached the file: as after any crash
        // during a commit).
        let crash = dir.path().join(format!("w{k}-crash"));
        std::fs::copy(&path, &crash).unwrap();
        let got = dump_read(&reopen_checked(&crash).begin_read());
        assert!(
            got == m0 || (k == writes && got == m1),
            "write {k}: a third state"
        );
        // The same changes, again, with space.
        let mut w = db.begin_write().unwrap();
        let mut m = m0.clone();
        changes(&mut w, &mut m);
        w.commit().unwrap();
        assert!(
            dump_read(&db.begin_read()) == m1,
            "write {k}: not the new state"
        );
        drop(db);
        assert!(
            dump_read(&reopen_checked(&path).begin_read()) == m1,
            "write {k}: reopened"
        );
    }
}

/// A failed fsync is final: the commit fails, the database refuses every later write
/// until reopened, and the reopened file holds the old or the new state, whole.
#[test]
fn storage_failed_fsync_poisons_the_database() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    let m0 = filled_db(&path, 200, 2);
    let armed = Arc::new(AtomicBool::new(false));
    let a2 = armed.clone();
    let db = faulty_db(&path, small_opts(), move |op| {
        (op == FileOp::Sync && a2.load(SeqCst)).then(|| io::Error::from_raw_os_error(libc::EIO))
    });
    let mut w = db.begin_write().unwrap();
    let mut m1 = m0.clone();
    random_ops(&mut w, &mut m1, &mut Rng(9), 200);
    armed.store(true, SeqCst);
    let err = w.commit().expect_err("the fsync fails");
    assert!(matches!(err, StorageError::Io(_)), "{err}");
    assert!(err.to_string().contains("os error 5"), "{err}");
    assert!(!db.space_low());
    assert!(matches!(db.begin_write(), Err(StorageError::Poisoned)));
    // Readers still see the last state that was committed before.
    assert_eq!(dump_read(&db.begin_read()), m0);
    drop(db);
    let got = dump_read(&reopen_checked(&path).begin_read());
    assert!(got == m0 || got == m1, "neither the old nor the new state");
}
