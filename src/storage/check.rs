//! Opening checks, the full consistency check, snapshot streaming and defragment.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::freelist::{self, RunSet};
use super::page::{
    self, corrupt, Meta, Val, HDR, MAX_BUCKETS, T_BRANCH, T_FREELIST, T_LEAF, T_OVERFLOW,
};
use super::tree::{self, PageSource, MAX_DEPTH};
use super::write::WriteTxn;
use super::{Bucket, Db, DbOptions, IdMap, StorageError, Version, MAX_PAGE, MIN_PAGE};

pub(crate) fn defrag_tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".defrag");
    PathBuf::from(s)
}

/// Read both meta slots: the valid ones, newest first, with their slot.
pub(crate) fn read_meta(file: &File, len: u64) -> Result<Vec<(Meta, u64)>, StorageError> {
    if len < 16 {
        return Err(StorageError::NotADatabase(format!(
            "file is {len} bytes, too short to hold a header"
        )));
    }
    let mut head = vec![0u8; (2 * MAX_PAGE).min(len as usize)];
    file.read_exact_at(&mut head, 0)?;
    let magic0 = &head[8..16] == page::MAGIC;
    let mut reasons = Vec::new();
    let mut cands: Vec<(Meta, usize)> = Vec::new();
    match Meta::decode(&head) {
        Ok(m) => cands.push((m, 0)),
        Err(r) => reasons.push(format!("meta 0: {r}")),
    }
    // Slot 1 sits one page in; the page size is in slot 0 (or, if slot 0 is
    // torn, in slot 1 itself: try every legal size).
    let mut ps = MIN_PAGE;
    let mut magic1 = false;
    while ps <= MAX_PAGE {
        if let Some(s) = head.get(ps..) {
            if s.len() >= 16 && &s[8..16] == page::MAGIC {
                magic1 = true;
            }
            if let Ok(m) = Meta::decode(s) {
                if m.page_size as usize == ps {
                    cands.push((m, 1));
                }
            }
        }
        ps *= 2;
    }
    if !magic0 && !magic1 {
        return Err(StorageError::NotADatabase(
            "no corekv magic in either meta page (another file format?)".into(),
        ));
    }
    if cands.is_empty() {
        if (len as usize) < 2 * MIN_PAGE {
            return Err(StorageError::Truncated(format!(
                "file is {len} bytes, shorter than two meta pages"
            )));
        }
        reasons.push("meta 1: no valid meta page".into());
        return Err(corrupt(
            0,
            format!("both meta pages invalid ({})", reasons.join("; ")),
        ));
    }
    cands.sort_by_key(|(m, slot)| (std::cmp::Reverse(m.txn), *slot));
    // The file is grown (and that synced) before any commit that needs the
    // space, so a newest valid meta that needs more than the file holds means
    // the file was truncated, not that a commit was torn: no falling back.
    let newest = &cands[0].0;
    let need = newest.hwm.saturating_mul(newest.page_size as u64);
    if len < need {
        return Err(StorageError::Truncated(format!(
            "file is {len} bytes but the last commit (txn {}) needs {need}",
            newest.txn
        )));
    }
    let mut out = Vec::new();
    let mut short = None;
    for (meta, slot) in cands {
        let ps = meta.page_size as usize;
        if !ps.is_power_of_two() || !(MIN_PAGE..=MAX_PAGE).contains(&ps) {
            return Err(corrupt(
                0,
                format!("meta page records an invalid page size {ps}"),
            ));
        }
        let need = meta.hwm.saturating_mul(ps as u64);
        if meta.hwm < 2 || len < need {
            short.get_or_insert(StorageError::Truncated(format!(
                "file is {len} bytes but the committed state (txn {}) needs {need}",
                meta.txn
            )));
            continue;
        }
        out.push((meta, slot as u64));
    }
    match short {
        Some(e) if out.is_empty() => Err(e),
        _ => Ok(out),
    }
}

/// A page with its checksum and self-id verified.
pub(crate) fn verified_page(v: &Version, id: u64) -> Result<&[u8], StorageError> {
    let p = v.page(id)?;
    if page::checksum(p) != page::rd32(p, 0) {
        return Err(corrupt(id, "page checksum mismatch"));
    }
    if page::pgid(p) != id {
        return Err(corrupt(
            id,
            format!("page header says it is page {}", page::pgid(p)),
        ));
    }
    Ok(p)
}

/// An overflow run with its checksum verified; returns (value, pages).
fn verified_run(v: &Version, id: u64, len: Option<usize>) -> Result<(&[u8], u64), StorageError> {
    let p = v.page(id)?;
    if page::ptype(p) != T_OVERFLOW {
        return Err(corrupt(id, "expected an overflow page"));
    }
    let vlen = page::ovf_len(p);
    if len.is_some_and(|l| l != vlen) {
        return Err(corrupt(id, "overflow length does not match its reference"));
    }
    let n = page::overflow_pages(vlen, v.ps);
    if page::ovf_pages(p) != n {
        return Err(corrupt(id, "overflow page count is inconsistent"));
    }
    let val = tree::map_overflow(&v.map, id, vlen, v.meta.hwm, v.ps)?;
    let off = id as usize * v.ps;
    let run = &v.map[off..off + page::overflow_span(vlen)];
    if page::checksum(run) != page::rd32(run, 0) || page::pgid(run) != id {
        return Err(corrupt(id, "overflow run checksum mismatch"));
    }
    Ok((val, n))
}

/// The check that always runs at open: bucket roots, the freelist chain, and
/// (if `verify_commit`) every page the last commit wrote, with its checksum and
/// txn id. Returns the free set and the chain's pages.
pub(crate) fn open_check(
    v: &Version,
    verify_commit: bool,
) -> Result<(RunSet, Vec<u64>), StorageError> {
    for b in Bucket::ALL {
        let root = v.meta.roots[b as usize];
        if root != 0 {
            let p = verified_page(v, root)?;
            let t = page::ptype(p);
            if t != T_BRANCH && t != T_LEAF {
                return Err(corrupt(
                    root,
                    format!("bucket {} root is not a tree page", b.name()),
                ));
            }
            page::check_node(p, root, t)?;
        }
    }
    let mut free = RunSet::default();
    let mut written = Vec::new();
    let mut chain = Vec::new();
    let mut id = v.meta.freelist;
    while id != 0 {
        if chain.len() as u64 > v.meta.hwm {
            return Err(corrupt(id, "freelist chain loops"));
        }
        let p = verified_page(v, id)?;
        if page::ptype(p) != T_FREELIST {
            return Err(corrupt(id, "expected a freelist page"));
        }
        if verify_commit && page::txn(p) != v.meta.txn {
            return Err(corrupt(
                id,
                format!(
                    "freelist page is from txn {}, not the last commit {}",
                    page::txn(p),
                    v.meta.txn
                ),
            ));
        }
        let (next, runs) =
            freelist::decode_page(p).ok_or_else(|| corrupt(id, "bad freelist page"))?;
        for (s, l) in runs {
            let l = if l & freelist::WRITTEN != 0 {
                written.push((s, (l & !freelist::WRITTEN) as u64));
                continue;
            } else {
                l as u64
            };
            if s < 2 || s.checked_add(l).is_none_or(|e| e > v.meta.hwm) {
                return Err(corrupt(id, format!("free run {s}+{l} outside the file")));
            }
            if !free.insert(s, l) {
                return Err(corrupt(id, format!("free run {s}+{l} listed twice")));
            }
        }
        chain.push(id);
        id = next;
    }
    if free.total() != v.meta.free_pages {
        return Err(corrupt(
            0,
            format!(
                "meta says {} free pages, freelist holds {}",
                v.meta.free_pages,
                free.total()
            ),
        ));
    }
    for &c in &chain {
        if free.contains(c) {
            return Err(corrupt(c, "freelist page is itself listed free"));
        }
    }
    if verify_commit {
        // The roots are trusted only if every page of the last commit is whole.
        for (s, l) in written {
            let end = s
                .checked_add(l)
                .filter(|&e| s >= 2 && e <= v.meta.hwm)
                .ok_or_else(|| corrupt(s, "written run outside the file"))?;
            let mut id = s;
            while id < end {
                let p = v.page(id)?;
                let n = if page::ptype(p) == T_OVERFLOW {
                    verified_run(v, id, None)?.1
                } else {
                    verified_page(v, id)?;
                    1
                };
                if page::txn(p) != v.meta.txn {
                    return Err(corrupt(
                        id,
                        format!(
                            "page is from txn {}, not the last commit {}",
                            page::txn(p),
                            v.meta.txn
                        ),
                    ));
                }
                id += n;
            }
        }
    }
    Ok((free, chain))
}

struct Checker<'a> {
    v: &'a Version,
    used: Vec<bool>,
    leaf_depth: Option<usize>,
}

impl Checker<'_> {
    fn mark(&mut self, id: u64, n: u64) -> Result<(), StorageError> {
        for p in id..id + n {
            let slot = self
                .used
                .get_mut(p as usize)
                .ok_or_else(|| corrupt(p, "page outside the file"))?;
            if *slot {
                return Err(corrupt(p, "page referenced twice (or both used and free)"));
            }
            *slot = true;
        }
        Ok(())
    }

    /// Walk a subtree whose keys must lie in [lo, hi). Returns the entry count.
    fn walk(
        &mut self,
        id: u64,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        depth: usize,
    ) -> Result<u64, StorageError> {
        if depth > MAX_DEPTH {
            return Err(corrupt(id, "tree deeper than the maximum"));
        }
        self.mark(id, 1)?;
        let p = verified_page(self.v, id)?;
        let t = page::ptype(p);
        if t != T_BRANCH && t != T_LEAF {
            return Err(corrupt(id, format!("expected a tree page, found type {t}")));
        }
        page::check_node(p, id, t)?;
        let n = page::nslots(p);
        let out = |k: &[u8]| lo.is_some_and(|l| k < l) || hi.is_some_and(|h| k >= h);
        if t == T_LEAF {
            match self.leaf_depth {
                None => self.leaf_depth = Some(depth),
                Some(d) if d != depth => return Err(corrupt(id, "leaves at different depths")),
                _ => {}
            }
            let mut prev: Option<&[u8]> = None;
            for i in 0..n {
                let (k, val, _) = page::leaf_entry(p, i)?;
                if out(k) || prev.is_some_and(|pk| pk >= k) {
                    return Err(corrupt(id, format!("leaf key {i} out of order")));
                }
                prev = Some(k);
                if let Val::Overflow { page: op, len } = val {
                    let (_, pages) = verified_run(self.v, op, Some(len))?;
                    self.mark(op, pages)?;
                }
            }
            if n == 0 && depth > 0 {
                return Err(corrupt(id, "empty non-root leaf"));
            }
            Ok(n as u64)
        } else {
            let mut total = 0;
            let mut prev: Option<&[u8]> = None;
            for i in 0..n {
                let (k, child, _) = page::branch_entry(p, i)?;
                if i == 0 {
                    if !k.is_empty() {
                        return Err(corrupt(id, "first branch key not empty"));
                    }
                } else if out(k) || prev.is_some_and(|pk| pk >= k) {
                    return Err(corrupt(id, format!("branch key {i} out of order")));
                }
                let clo = if i == 0 { lo } else { Some(k) };
                let chi = if i + 1 < n {
                    Some(page::branch_entry(p, i + 1)?.0)
                } else {
                    hi
                };
                if i > 0 {
                    prev = Some(k);
                }
                total += self.walk(child, clo, chi, depth + 1)?;
            }
            Ok(total)
        }
    }
}

/// Verify every page checksum and the structure of every bucket, and that each
/// page below the high-water mark is used exactly once or free.
pub(crate) fn full_check(v: &Version) -> Result<(), StorageError> {
    let (free, chain) = open_check(v, false)?;
    let mut c = Checker {
        v,
        used: vec![false; v.meta.hwm as usize],
        leaf_depth: None,
    };
    c.mark(0, 2)?;
    for (s, l) in free.iter() {
        c.mark(s, l)?;
    }
    for id in chain {
        c.mark(id, 1)?;
    }
    for b in Bucket::ALL {
        let root = v.meta.roots[b as usize];
        if root == 0 {
            if v.meta.counts[b as usize] != 0 {
                return Err(corrupt(
                    0,
                    format!("bucket {} empty but count is nonzero", b.name()),
                ));
            }
            continue;
        }
        c.leaf_depth = None;
        let n = c.walk(root, None, None, 0)?;
        if n != v.meta.counts[b as usize] {
            return Err(corrupt(
                root,
                format!(
                    "bucket {} holds {n} keys, meta says {}",
                    b.name(),
                    v.meta.counts[b as usize]
                ),
            ));
        }
    }
    if let Some(p) = c.used.iter().position(|u| !u) {
        return Err(corrupt(p as u64, "page leaked: neither reachable nor free"));
    }
    Ok(())
}

/// Touch every branch page so lookups fault at most on their leaf.
pub(crate) fn prewarm(v: &Version) {
    fn walk(v: &Version, id: u64, depth: usize, acc: &mut u8) {
        if depth > MAX_DEPTH {
            return;
        }
        let Ok(p) = v.page(id) else { return };
        if page::ptype(p) != T_BRANCH || page::check_node(p, id, T_BRANCH).is_err() {
            return;
        }
        *acc ^= p[v.ps - 1];
        // Children are leaves when the first child is one; do not touch the rest.
        let Ok(first) = page::branch_child(p, 0) else {
            return;
        };
        let Ok(fp) = v.page(first) else { return };
        if page::ptype(fp) != T_BRANCH {
            return;
        }
        for i in 0..page::nslots(p) {
            if let Ok(c) = page::branch_child(p, i) {
                walk(v, c, depth + 1, acc);
            }
        }
    }
    let mut acc = 0u8;
    for b in Bucket::ALL {
        let root = v.meta.roots[b as usize];
        if root != 0 {
            walk(v, root, 0, &mut acc);
        }
    }
    std::hint::black_box(acc);
}

// ---------------------------------------------------------------------------
// Snapshot

/// A consistent copy of one committed state, as a database file image.
///
/// Streams pages `0..hwm` of that state from the map: both meta slots carry the
/// snapshot's meta, free pages are sent as zeros, every other page (and
/// overflow run) is checksum-verified as it is read. Holding the snapshot
/// keeps its pages from being reused, so writes go on meanwhile without
/// disturbing it. The result opens with [`Db::open`] as is.
pub struct Snapshot {
    v: Arc<Version>,
    free: RunSet,
    len: u64,
    next_page: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Snapshot {
    pub(crate) fn new(v: Arc<Version>) -> Result<Snapshot, StorageError> {
        let (free, _) = open_check(&v, false)?;
        let len = v.meta.hwm * v.ps as u64;
        Ok(Snapshot {
            v,
            free,
            len,
            next_page: 0,
            buf: Vec::new(),
            pos: 0,
        })
    }

    /// Total bytes the stream will produce.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Transaction id of the state being copied.
    pub fn txn_id(&self) -> u64 {
        self.v.meta.txn
    }

    /// Reads the very state being copied (to learn what it holds before streaming it).
    pub fn read_txn(&self) -> crate::storage::ReadTxn {
        crate::storage::ReadTxn::of(self.v.clone())
    }

    /// The next `max` bytes of the stream (fewer only at its end; none once it ended).
    pub fn read_up_to(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut chunk = vec![0u8; max];
        let mut n = 0;
        while n < max {
            match self.read(&mut chunk[n..])? {
                0 => break,
                k => n += k,
            }
        }
        chunk.truncate(n);
        Ok(chunk)
    }

    fn fill(&mut self) -> Result<(), StorageError> {
        let v = &*self.v;
        let ps = v.ps;
        self.buf.clear();
        self.pos = 0;
        if self.next_page == 0 {
            self.buf.resize(2 * ps, 0);
            v.meta.encode(&mut self.buf[..ps]);
            v.meta.encode(&mut self.buf[ps..]);
            self.next_page = 2;
            return Ok(());
        }
        while self.next_page < v.meta.hwm && self.buf.len() < 1 << 20 {
            let id = self.next_page;
            if self.free.contains(id) {
                self.buf.resize(self.buf.len() + ps, 0);
                self.next_page += 1;
                continue;
            }
            let p = v.page(id)?;
            if page::ptype(p) == T_OVERFLOW {
                let (_, n) = verified_run(v, id, None)?;
                let off = id as usize * ps;
                self.buf
                    .extend_from_slice(&v.map[off..off + n as usize * ps]);
                self.next_page += n;
            } else {
                self.buf.extend_from_slice(verified_page(v, id)?);
                self.next_page += 1;
            }
        }
        Ok(())
    }
}

impl Read for Snapshot {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.buf.len() {
            if self.next_page >= self.v.meta.hwm {
                return Ok(0);
            }
            self.fill().map_err(io::Error::other)?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Defragment

/// What a defragment did.
#[derive(Clone, Debug)]
pub struct DefragReport {
    pub size_before: u64,
    pub size_after: u64,
    pub in_use_before: u64,
    pub in_use_after: u64,
    /// How long new write transactions were held off (the final catch-up + swap).
    pub writer_blocked: Duration,
    pub total: Duration,
}

/// Bottom-up bulk loader writing pages sequentially into a new file.
struct Builder {
    file: File,
    txn: u64,
    ps: usize,
    fill: usize,
    next: u64,
    out: Vec<u8>,
    out_start: u64,
    levels: Vec<Level>,
    ebuf: Vec<u8>,
    scratch: Vec<u8>,
}

struct Level {
    page: Vec<u8>,
    first_key: Vec<u8>,
    flushed: u64,
}

impl Builder {
    fn new(file: File, ps: usize, txn: u64) -> Builder {
        Builder {
            file,
            txn,
            ps,
            fill: (ps - HDR) * 9 / 10,
            next: 2,
            out: Vec::with_capacity(4 << 20),
            out_start: 2,
            levels: Vec::new(),
            ebuf: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<u64> {
        let id = self.next;
        self.next += (bytes.len() / self.ps) as u64;
        self.out.extend_from_slice(bytes);
        if self.out.len() >= 4 << 20 {
            self.file
                .write_all_at(&self.out, self.out_start * self.ps as u64)?;
            self.out_start = self.next;
            self.out.clear();
        }
        Ok(id)
    }

    fn level(&mut self, l: usize) -> &mut Level {
        while self.levels.len() <= l {
            let ty = if self.levels.is_empty() {
                T_LEAF
            } else {
                T_BRANCH
            };
            let mut page = vec![0u8; self.ps];
            page::init_node(&mut page, ty, 0);
            self.levels.push(Level {
                page,
                first_key: Vec::new(),
                flushed: 0,
            });
        }
        &mut self.levels[l]
    }

    /// Add an encoded entry with key `key` at level `l`.
    fn add(&mut self, l: usize, key: &[u8], e: &[u8]) -> io::Result<()> {
        let fill = self.fill;
        let lv = self.level(l);
        if page::nslots(&lv.page) > 0 && page::used_bytes(&lv.page) + e.len() + 2 > fill {
            self.flush(l)?;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let lv = self.level(l);
        let n = page::nslots(&lv.page);
        if n == 0 {
            lv.first_key.clear();
            lv.first_key.extend_from_slice(key);
        }
        if l > 0 && n == 0 {
            // The first branch entry's key is -inf.
            let mut e0 = Vec::new();
            page::encode_branch_entry(&mut e0, &[], page::rd64(e, 2));
            page::insert_raw(&mut lv.page, 0, &e0, &mut scratch);
        } else {
            page::insert_raw(&mut lv.page, n, e, &mut scratch);
        }
        self.scratch = scratch;
        Ok(())
    }

    /// Write out level `l`'s page and add it to level `l + 1`. Returns its id.
    fn flush(&mut self, l: usize) -> io::Result<u64> {
        let mut pg = std::mem::take(&mut self.levels[l].page);
        let id = self.next;
        page::wr64(&mut pg, 8, id);
        page::set_txn(&mut pg, self.txn);
        page::seal(&mut pg);
        self.emit(&pg)?;
        let ty = page::ptype(&pg);
        page::init_node(&mut pg, ty, 0);
        let key = std::mem::take(&mut self.levels[l].first_key);
        self.levels[l].page = pg;
        self.levels[l].flushed += 1;
        let mut e = std::mem::take(&mut self.ebuf);
        page::encode_branch_entry(&mut e, &key, id);
        self.add(l + 1, &key, &e)?;
        self.ebuf = e;
        Ok(id)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let ps = self.ps;
        let mut e = std::mem::take(&mut self.ebuf);
        if page::LEAF_EHDR + key.len() + value.len() <= super::write::max_entry(ps) {
            page::encode_leaf_entry(&mut e, key, Val::Inline(value));
        } else {
            let id = self.next;
            let mut run = page::new_overflow(id, value, ps);
            page::seal_overflow(&mut run, self.txn);
            self.emit(&run)?;
            page::encode_leaf_entry(
                &mut e,
                key,
                Val::Overflow {
                    page: id,
                    len: value.len(),
                },
            );
        }
        let r = self.add(0, key, &e);
        self.ebuf = e;
        r
    }

    /// Finish the current tree; returns its root (0 if empty).
    fn finish_tree(&mut self) -> io::Result<u64> {
        let mut l = 0;
        let root = loop {
            if l >= self.levels.len() {
                break 0;
            }
            let top = l + 1 == self.levels.len();
            let n = page::nslots(&self.levels[l].page);
            if top && self.levels[l].flushed == 0 {
                if n == 0 {
                    break 0;
                }
                if l > 0 && n == 1 {
                    break page::branch_child(&self.levels[l].page, 0).unwrap_or(0);
                }
                let mut pg = std::mem::take(&mut self.levels[l].page);
                let id = self.next;
                page::wr64(&mut pg, 8, id);
                page::set_txn(&mut pg, self.txn);
                page::seal(&mut pg);
                self.emit(&pg)?;
                break id;
            }
            if n > 0 {
                self.flush(l)?;
            }
            l += 1;
        };
        self.levels.clear();
        Ok(root)
    }

    fn finish(self, meta: &mut Meta) -> io::Result<File> {
        if !self.out.is_empty() {
            self.file
                .write_all_at(&self.out, self.out_start * self.ps as u64)?;
        }
        meta.hwm = self.next;
        let mut m = vec![0u8; 2 * self.ps];
        meta.encode(&mut m[..self.ps]);
        meta.encode(&mut m[self.ps..]);
        self.file.set_len(self.next * self.ps as u64)?;
        self.file.write_all_at(&m, 0)?;
        self.file.sync_all()?;
        Ok(self.file)
    }
}

/// Write a compact copy of version `v` into a new file at `path`.
fn build_compact(v: &Version, path: &Path) -> Result<(), StorageError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let mut b = Builder::new(f, v.ps, v.meta.txn);
    let mut meta = Meta {
        page_size: v.ps as u32,
        txn: v.meta.txn,
        hwm: 2,
        freelist: 0,
        free_pages: 0,
        roots: [0; MAX_BUCKETS],
        counts: [0; MAX_BUCKETS],
    };
    for bk in Bucket::ALL {
        let i = bk as usize;
        let mut n = 0;
        for kv in tree::Range::new(
            v,
            v.meta.roots[i],
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
        ) {
            let (k, val) = kv?;
            b.put(k, val)?;
            n += 1;
        }
        meta.roots[i] = b.finish_tree()?;
        meta.counts[i] = n;
    }
    b.finish(&mut meta)?;
    Ok(())
}

/// Leaf page ids of a tree, found by reading branch pages only.
fn leaf_ids(v: &Version, root: u64) -> Result<IdMap<()>, StorageError> {
    let mut out = IdMap::default();
    if root == 0 {
        return Ok(out);
    }
    // Height: follow the leftmost path.
    let mut h = 0;
    let mut id = root;
    loop {
        let p = v.page(id)?;
        if page::ptype(p) == T_LEAF {
            break;
        }
        page::check_node(p, id, T_BRANCH)?;
        id = page::branch_child(p, 0)?;
        h += 1;
        if h > MAX_DEPTH {
            return Err(corrupt(root, "tree deeper than the maximum"));
        }
    }
    fn walk(v: &Version, id: u64, h: usize, out: &mut IdMap<()>) -> Result<(), StorageError> {
        if h == 0 {
            out.insert(id, ());
            return Ok(());
        }
        let p = v.page(id)?;
        page::check_node(p, id, T_BRANCH)?;
        for i in 0..page::nslots(p) {
            walk(v, page::branch_child(p, i)?, h - 1, out)?;
        }
        Ok(())
    }
    walk(v, root, h, &mut out)?;
    Ok(out)
}

/// Apply to `w` every change between committed versions `a` and `b` (both alive,
/// so a leaf id present in both has the same contents in both).
fn apply_diff(a: &Version, b: &Version, w: &mut WriteTxn) -> Result<(), StorageError> {
    for bk in Bucket::ALL {
        let i = bk as usize;
        let (ra, rb) = (a.meta.roots[i], b.meta.roots[i]);
        if ra == rb {
            continue;
        }
        let la = leaf_ids(a, ra)?;
        let lb = leaf_ids(b, rb)?;
        for (&id, _) in lb.iter() {
            if la.contains_key(&id) {
                continue;
            }
            let p = b.page(id)?;
            page::check_node(p, id, T_LEAF)?;
            for j in 0..page::nslots(p) {
                let (k, val, _) = page::leaf_entry(p, j)?;
                w.put(bk, k, tree::value(b, val)?)?;
            }
        }
        for (&id, _) in la.iter() {
            if lb.contains_key(&id) {
                continue;
            }
            let p = a.page(id)?;
            page::check_node(p, id, T_LEAF)?;
            for j in 0..page::nslots(p) {
                let k = page::leaf_key(p, j)?;
                if tree::get(b, rb, k)?.is_none() {
                    w.delete(bk, k)?;
                }
            }
        }
    }
    Ok(())
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Defragment: copy the live data into a compact new file and swap it in.
///
/// What blocks, and for how long:
/// 1. Bulk copy of a read snapshot into `<path>.defrag` (checksums verified
///    first) — nothing blocks; readers and the writer go on.
/// 2. Catch-up: the changes committed meanwhile are found by diffing leaf page
///    ids of the two versions (only branch pages and changed leaves are read)
///    and applied to the new file — nothing blocks.
/// 3. Final catch-up and swap: defragment takes the writer slot, so it waits
///    for the open write batch to commit and new `begin_write` calls wait until
///    it is done: one more (small) diff, a commit of the new file, a rename
///    over the old path and a directory fsync. Readers never block: old
///    readers keep reading the old (now unlinked) file through their maps.
///
/// A crash at any point leaves either the old file (the `.defrag` leftover is
/// removed at open) or the new one.
pub(crate) fn defragment(db: &Db) -> Result<DefragReport, StorageError> {
    let inner = &db.inner;
    let path = inner.path.clone().ok_or_else(|| {
        StorageError::Unsupported("defragment needs a database opened by path".into())
    })?;
    let t0 = Instant::now();
    let size_before = db.size();
    let in_use_before = db.size_in_use();
    let tmp = defrag_tmp_path(&path);
    let v0 = inner.current();
    full_check(&v0)?;
    let res = (|| {
        build_compact(&v0, &tmp)?;
        let topts = DbOptions {
            prewarm_branches: false,
            ..inner.opts.clone()
        };
        let tdb = Db::open_layer(
            Arc::new(super::StdFile(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&tmp)?,
            )),
            None,
            topts,
        )?;
        let v1 = inner.current();
        if v1.meta.txn != v0.meta.txn {
            let mut w = tdb.begin_write()?;
            apply_diff(&v0, &v1, &mut w)?;
            w.commit()?;
        }
        Ok::<_, StorageError>((tdb, v1))
    })();
    drop(v0);
    let (tdb, v1) = match res {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };

    // Phase 3: hold off writers.
    let ws = inner.take_writer()?;
    let t_block = Instant::now();
    let v2 = inner.current();
    let res = (|| {
        let mut w = tdb.begin_write()?;
        apply_diff(&v1, &v2, &mut w)?;
        w.force_txn = Some(v2.meta.txn.max(w.txn_id()) + 1);
        w.commit()?;
        Ok::<_, StorageError>(())
    })();
    if let Err(e) = res {
        inner.put_writer(Some(ws));
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, &path) {
        inner.put_writer(Some(ws));
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    // From here the path holds the new file: failing now must not let writes
    // go on into the old one.
    let swap = (|| {
        sync_dir(&path)?;
        let mut tws = tdb.inner.take_writer()?;
        let tv = tdb.inner.current();
        tws.pool = ws.pool;
        tws.versions.clear();
        let len = tws.file_len;
        if inner.opts.prewarm_branches && !inner.opts.populate {
            prewarm(&tv);
        }
        inner.publish(tv);
        inner
            .file_len
            .store(len, std::sync::atomic::Ordering::Relaxed);
        Ok::<_, StorageError>(tws)
    })();
    match swap {
        Ok(tws) => inner.put_writer(Some(tws)),
        Err(e) => {
            inner.put_writer(None);
            return Err(e);
        }
    }
    let writer_blocked = t_block.elapsed();
    drop(v1);
    Ok(DefragReport {
        size_before,
        size_after: db.size(),
        in_use_before,
        in_use_after: db.size_in_use(),
        writer_blocked,
        total: t0.elapsed(),
    })
}
