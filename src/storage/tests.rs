use super::*;
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
