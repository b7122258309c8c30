//! The write transaction: copy-on-write edits into in-memory dirty pages,
//! splits and merges, and the commit protocol.

use std::ops::Bound;
use std::sync::Arc;

use super::freelist::{self, RunSet};
use super::page::{self, corrupt, Meta, Val, BRANCH_EHDR, HDR, LEAF_EHDR, T_BRANCH, T_LEAF};
use super::tree::{self, PageSource, MAX_DEPTH};
use super::{map_file, Bucket, IdMap, Inner, StorageError, Version, WriterState};
use std::sync::atomic::Ordering::Relaxed;

/// Largest value accepted (the length field has 31 bits).
pub const MAX_VALUE: usize = (i32::MAX as usize) - 4096;

/// Largest entry (+ its slot) kept inline: at least four fit in a page.
pub fn max_entry(ps: usize) -> usize {
    (ps - HDR) / 4 - 2
}

pub fn max_key_len(ps: usize) -> usize {
    max_entry(ps) - LEAF_EHDR - 8
}

/// The batch's pages: dirty copies in memory over the committed map.
pub(crate) struct Dirty {
    pub(crate) base: Arc<Version>,
    pages: IdMap<Box<[u8]>>,
    ovf: IdMap<Box<[u8]>>,
}

impl PageSource for Dirty {
    #[inline]
    fn page(&self, id: u64) -> Result<&[u8], StorageError> {
        match self.pages.get(&id) {
            Some(p) => Ok(p),
            None => self.base.page(id),
        }
    }
    #[inline]
    fn overflow(&self, id: u64, len: usize) -> Result<&[u8], StorageError> {
        match self.ovf.get(&id) {
            Some(r) => {
                tree::check_overflow_header(r, id, len)?;
                Ok(&r[HDR..HDR + len])
            }
            None => self.base.overflow(id, len),
        }
    }
}

/// The write batch. Owns what it needs (`'static`, `Send`). Dropping it aborts.
pub struct WriteTxn {
    inner: Arc<Inner>,
    ws: Option<Box<WriterState>>,
    d: Dirty,
    meta: Meta,
    ps: usize,
    free_backup: RunSet,
    /// Pages reachable from the base version that this batch replaced.
    freed: Vec<(u64, u64)>,
    path: Vec<(u64, usize)>,
    scratch: Vec<u8>,
    scratch2: Vec<u8>,
    ebuf: Vec<u8>,
    changed: bool,
    pub(crate) force_txn: Option<u64>,
}

impl WriteTxn {
    pub(crate) fn new(inner: Arc<Inner>, mut ws: Box<WriterState>, base: Arc<Version>) -> WriteTxn {
        // Release pages freed by commits that no live reader predates.
        ws.versions.retain(|v| Arc::strong_count(v) > 1);
        let oldest = ws
            .versions
            .iter()
            .map(|v| v.meta.txn)
            .min()
            .unwrap_or(u64::MAX);
        let pending = std::mem::take(&mut ws.pending);
        for (t, runs) in pending {
            if t <= oldest {
                for (s, l) in runs {
                    let ok = ws.free.insert(s, l);
                    debug_assert!(ok, "double free of page {s}");
                }
            } else {
                ws.pending.push((t, runs));
            }
        }
        let ps = base.ps;
        WriteTxn {
            inner,
            free_backup: ws.free.clone(),
            ws: Some(ws),
            meta: base.meta.clone(),
            d: Dirty {
                base,
                pages: IdMap::default(),
                ovf: IdMap::default(),
            },
            ps,
            freed: Vec::new(),
            path: Vec::with_capacity(MAX_DEPTH),
            scratch: Vec::with_capacity(ps),
            scratch2: Vec::with_capacity(ps),
            ebuf: Vec::with_capacity(ps),
            changed: false,
            force_txn: None,
        }
    }

    /// Transaction id this batch will commit as.
    pub fn txn_id(&self) -> u64 {
        self.ws.as_ref().map_or(0, |ws| ws.next_txn)
    }

    // ---------------- reads (see the batch's own writes) ----------------

    pub fn get(&self, b: Bucket, key: &[u8]) -> Result<Option<&[u8]>, StorageError> {
        tree::get(&self.d, self.meta.roots[b as usize], key)
    }

    pub fn range<'a>(
        &'a self,
        b: Bucket,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> impl Iterator<Item = Result<(&'a [u8], &'a [u8]), StorageError>> + 'a {
        tree::Range::new(&self.d, self.meta.roots[b as usize], start, end, reverse)
    }

    pub fn count(
        &self,
        b: Bucket,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<u64, StorageError> {
        let (root, n) = (self.meta.roots[b as usize], self.meta.counts[b as usize]);
        tree::count(&self.d, root, n, start, end)
    }

    // ---------------- page allocation ----------------

    fn ws(&mut self) -> &mut WriterState {
        self.ws
            .as_mut()
            .expect("write transaction already finished")
    }

    fn alloc(&mut self, n: u64) -> u64 {
        if let Some(id) = self.ws().free.alloc(n) {
            return id;
        }
        let id = self.meta.hwm;
        self.meta.hwm += n;
        id
    }

    fn new_buf(&mut self) -> Box<[u8]> {
        let ps = self.ps;
        self.ws()
            .pool
            .pop()
            .unwrap_or_else(|| vec![0u8; ps].into_boxed_slice())
    }

    fn new_node(&mut self, ty: u8) -> u64 {
        let id = self.alloc(1);
        let mut b = self.new_buf();
        page::init_node(&mut b, ty, id);
        self.d.pages.insert(id, b);
        id
    }

    /// Free a branch/leaf page. Pages allocated by this batch are reusable at once.
    fn free_page(&mut self, id: u64) {
        if let Some(b) = self.d.pages.remove(&id) {
            let ws = self.ws();
            ws.pool.push(b);
            let ok = ws.free.insert(id, 1);
            debug_assert!(ok);
        } else {
            self.freed.push((id, 1));
        }
    }

    fn free_run(&mut self, id: u64, n: u64) {
        if self.d.ovf.remove(&id).is_some() {
            let ok = self.ws().free.insert(id, n);
            debug_assert!(ok);
        } else {
            self.freed.push((id, n));
        }
    }

    #[inline]
    fn pm(&mut self, id: u64) -> &mut [u8] {
        self.d.pages.get_mut(&id).expect("page is dirty")
    }

    /// Make page `id` writable in this batch: the id of its dirty copy.
    fn cow(&mut self, id: u64) -> Result<u64, StorageError> {
        if self.d.pages.contains_key(&id) {
            return Ok(id);
        }
        let mut buf = self.new_buf();
        {
            let src = self.d.base.page(id)?;
            let t = page::ptype(src);
            if t != T_LEAF && t != T_BRANCH {
                return Err(corrupt(id, format!("expected a tree page, found type {t}")));
            }
            page::check_node(src, id, t)?;
            page::check_entries(src, id)?;
            buf.copy_from_slice(src);
        }
        let nid = self.alloc(1);
        page::wr64(&mut buf, 8, nid);
        self.d.pages.insert(nid, buf);
        self.freed.push((id, 1));
        Ok(nid)
    }

    /// Copy-on-write the path from the root of bucket `bi` to the leaf for `key`.
    /// Fills `self.path` with (branch, child index) and returns the (dirty) leaf.
    fn cow_path(&mut self, bi: usize, key: &[u8]) -> Result<u64, StorageError> {
        self.path.clear();
        let mut id = self.cow(self.meta.roots[bi])?;
        self.meta.roots[bi] = id;
        loop {
            let p = &self.d.pages[&id];
            match page::ptype(p) {
                T_LEAF => return Ok(id),
                _ => {
                    if self.path.len() >= MAX_DEPTH {
                        return Err(corrupt(id, "tree deeper than the maximum"));
                    }
                    let i = page::branch_search(p, key)?;
                    let child = page::branch_child(p, i)?;
                    let nc = self.cow(child)?;
                    if nc != child {
                        page::set_branch_child(self.pm(id), i, nc);
                    }
                    self.path.push((id, i));
                    id = nc;
                }
            }
        }
    }

    // ---------------- put ----------------

    /// Insert or replace `key` in bucket `b`.
    pub fn put(&mut self, b: Bucket, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let ps = self.ps;
        if key.len() > max_key_len(ps) {
            return Err(StorageError::KeyTooLarge {
                len: key.len(),
                max: max_key_len(ps),
            });
        }
        if value.len() > MAX_VALUE {
            return Err(StorageError::ValueTooLarge {
                len: value.len(),
                max: MAX_VALUE,
            });
        }
        let bi = b as usize;
        self.changed = true;
        if self.meta.roots[bi] == 0 {
            self.meta.roots[bi] = self.new_node(T_LEAF);
        }
        let leaf = self.cow_path(bi, key)?;
        let inline = LEAF_EHDR + key.len() + value.len() <= max_entry(ps);
        let found = page::leaf_search(&self.d.pages[&leaf], key)?;
        let i = match found {
            Ok(i) => {
                let p = &self.d.pages[&leaf];
                let (_, old, size) = page::leaf_entry(p, i)?;
                let same = matches!(old, Val::Inline(ov) if inline && ov.len() == value.len());
                let ovf = match old {
                    Val::Overflow { page: op, len } => Some((op, len)),
                    Val::Inline(_) => None,
                };
                if same {
                    // Same-size replace in place.
                    let off = page::rd16(p, HDR + 2 * i) as usize + LEAF_EHDR + key.len();
                    self.pm(leaf)[off..off + value.len()].copy_from_slice(value);
                    return Ok(());
                }
                if let Some((op, len)) = ovf {
                    self.free_run(op, page::overflow_pages(len, ps));
                }
                page::remove_slot(self.pm(leaf), i, size);
                i
            }
            Err(i) => {
                self.meta.counts[bi] += 1;
                i
            }
        };
        let mut e = std::mem::take(&mut self.ebuf);
        if inline {
            page::encode_leaf_entry(&mut e, key, Val::Inline(value));
        } else {
            let id = self.alloc(page::overflow_pages(value.len(), ps));
            self.d.ovf.insert(id, page::new_overflow(id, value, ps));
            page::encode_leaf_entry(
                &mut e,
                key,
                Val::Overflow {
                    page: id,
                    len: value.len(),
                },
            );
        }
        let r = self.insert_entry(bi, leaf, i, &e);
        self.ebuf = e;
        r
    }

    /// Insert raw entry `e` at slot `i` of dirty node `node` (at depth `path.len()`),
    /// splitting up the path as needed.
    fn insert_entry(
        &mut self,
        bi: usize,
        node: u64,
        i: usize,
        e: &[u8],
    ) -> Result<(), StorageError> {
        {
            let p = self.d.pages.get_mut(&node).expect("dirty");
            if page::free_bytes(p) >= e.len() + 2 {
                page::insert_raw(p, i, e, &mut self.scratch);
                return Ok(());
            }
        }
        let mut depth = self.path.len();
        let mut node = node;
        let mut i = i;
        let mut cur = e.to_vec();
        loop {
            let (right, sep) = self.split(node, i, &cur);
            if depth == 0 {
                let root = self.alloc(1);
                let mut buf = self.new_buf();
                let mut e0 = Vec::new();
                page::encode_branch_entry(&mut e0, &[], node);
                page::encode_branch_entry(&mut cur, &sep, right);
                page::build_node(&mut buf, T_BRANCH, root, [&e0[..], &cur[..]].into_iter());
                self.d.pages.insert(root, buf);
                self.meta.roots[bi] = root;
                return Ok(());
            }
            depth -= 1;
            let (parent, pidx) = self.path[depth];
            page::encode_branch_entry(&mut cur, &sep, right);
            node = parent;
            i = pidx + 1;
            let p = self.d.pages.get_mut(&node).expect("dirty");
            if page::free_bytes(p) >= cur.len() + 2 {
                page::insert_raw(p, i, &cur, &mut self.scratch);
                return Ok(());
            }
        }
    }

    /// Split dirty `node` while inserting `e` at slot `i`. Returns the new right
    /// sibling and the separator key for the parent.
    fn split(&mut self, node: u64, i: usize, e: &[u8]) -> (u64, Vec<u8>) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(&self.d.pages[&node]);
        let mut e0 = Vec::new();
        let old: &[u8] = &scratch;
        let ty = page::ptype(old);
        let n = page::nslots(old);
        let total = n + 1;
        let get = |j: usize| -> &[u8] {
            if j < i {
                page::entry_raw(old, j)
            } else if j == i {
                e
            } else {
                page::entry_raw(old, j - 1)
            }
        };
        let k = if i == n && n >= 1 {
            // Appending at the end (sequential inserts): keep the left page full.
            n
        } else {
            let sum: usize = (0..total).map(|j| get(j).len() + 2).sum();
            let mut acc = 0;
            let mut k = 0;
            while k < total {
                acc += get(k).len() + 2;
                k += 1;
                if acc * 2 >= sum {
                    break;
                }
            }
            k.clamp(1, total - 1)
        };
        let first = get(k);
        let key_of = |raw: &[u8]| -> Vec<u8> {
            let klen = page::rd16(raw, 0) as usize;
            let off = if ty == T_BRANCH {
                BRANCH_EHDR
            } else {
                LEAF_EHDR
            };
            raw[off..off + klen].to_vec()
        };
        let sep = key_of(first);
        let right = self.alloc(1);
        let mut rbuf = self.new_buf();
        if ty == T_LEAF {
            page::build_node(&mut rbuf, T_LEAF, right, (k..total).map(get));
        } else {
            page::encode_branch_entry(&mut e0, &[], page::rd64(first, 2));
            page::build_node(
                &mut rbuf,
                T_BRANCH,
                right,
                std::iter::once(&e0[..]).chain((k + 1..total).map(get)),
            );
        }
        page::build_node(
            self.d.pages.get_mut(&node).expect("dirty"),
            ty,
            node,
            (0..k).map(get),
        );
        self.d.pages.insert(right, rbuf);
        self.scratch = scratch;
        (right, sep)
    }

    // ---------------- delete ----------------

    /// Delete `key`; returns whether it existed.
    pub fn delete(&mut self, b: Bucket, key: &[u8]) -> Result<bool, StorageError> {
        let bi = b as usize;
        if tree::get(&self.d, self.meta.roots[bi], key)?.is_none() {
            return Ok(false);
        }
        self.changed = true;
        let leaf = self.cow_path(bi, key)?;
        let p = &self.d.pages[&leaf];
        let Ok(i) = page::leaf_search(p, key)? else {
            return Err(corrupt(leaf, "key vanished between lookup and delete"));
        };
        let (_, v, size) = page::leaf_entry(p, i)?;
        if let Val::Overflow { page: op, len } = v {
            self.free_run(op, page::overflow_pages(len, self.ps));
        }
        page::remove_slot(self.pm(leaf), i, size);
        self.meta.counts[bi] -= 1;
        self.rebalance(bi, leaf)?;
        Ok(true)
    }

    /// Remove entry `idx` of dirty branch `parent`, keeping entry 0's key empty (-inf).
    fn branch_remove(&mut self, parent: u64, idx: usize) -> Result<(), StorageError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut e = std::mem::take(&mut self.ebuf);
        let p = self.d.pages.get_mut(&parent).expect("dirty");
        let size = page::entry_size(p, idx);
        page::remove_slot(p, idx, size);
        if idx == 0 && page::nslots(p) > 0 {
            let child = page::branch_child(p, 0)?;
            let s0 = page::entry_size(p, 0);
            page::remove_slot(p, 0, s0);
            page::encode_branch_entry(&mut e, &[], child);
            page::insert_raw(p, 0, &e, &mut scratch);
        }
        self.scratch = scratch;
        self.ebuf = e;
        Ok(())
    }

    /// After a removal from `node` (at depth `path.len()`), merge underfull pages
    /// with a sibling and drop empty ones, up the path.
    fn rebalance(&mut self, bi: usize, node: u64) -> Result<(), StorageError> {
        let ps = self.ps;
        let mut depth = self.path.len();
        let mut node = node;
        loop {
            let p = self.d.page(node)?;
            let n = page::nslots(p);
            let ty = page::ptype(p);
            if depth == 0 {
                if n == 0 {
                    self.free_page(node);
                    self.meta.roots[bi] = 0;
                } else if ty == T_BRANCH && n == 1 {
                    let child = page::branch_child(p, 0)?;
                    self.free_page(node);
                    self.meta.roots[bi] = child;
                    node = child;
                    continue;
                }
                return Ok(());
            }
            if page::used_bytes(p) >= (ps - HDR) / 4 {
                return Ok(());
            }
            let (parent, pidx) = self.path[depth - 1];
            if n == 0 {
                self.free_page(node);
                self.branch_remove(parent, pidx)?;
                node = parent;
                depth -= 1;
                continue;
            }
            let pp = &self.d.pages[&parent];
            let pn = page::nslots(pp);
            if pn < 2 {
                return Ok(());
            }
            let (li, ri) = if pidx + 1 < pn {
                (pidx, pidx + 1)
            } else {
                (pidx - 1, pidx)
            };
            let (sep, rchild, _) = page::branch_entry(pp, ri)?;
            let lchild = page::branch_child(pp, li)?;
            let mut sepv = std::mem::take(&mut self.scratch2);
            sepv.clear();
            sepv.extend_from_slice(sep);
            let lp = self.d.page(lchild)?;
            let rp = self.d.page(rchild)?;
            if page::ptype(lp) != ty || page::ptype(rp) != ty {
                self.scratch2 = sepv;
                return Err(corrupt(parent, "siblings of different page types"));
            }
            page::check_node(lp, lchild, ty)?;
            page::check_node(rp, rchild, ty)?;
            page::check_entries(rp, rchild)?;
            let extra = if ty == T_BRANCH { sepv.len() } else { 0 };
            if page::used_bytes(lp) + page::used_bytes(rp) + extra > ps - HDR {
                self.scratch2 = sepv;
                return Ok(());
            }
            // Merge right into left.
            let mut rcopy = std::mem::take(&mut self.scratch);
            rcopy.clear();
            rcopy.extend_from_slice(rp);
            let l = self.cow(lchild)?;
            if l != lchild {
                page::set_branch_child(self.pm(parent), li, l);
            }
            let mut lcopy = Vec::with_capacity(ps);
            lcopy.extend_from_slice(&self.d.pages[&l]);
            let mut e0 = Vec::new();
            let rn = page::nslots(&rcopy);
            let rest_from = if ty == T_BRANCH {
                page::encode_branch_entry(&mut e0, &sepv, page::branch_child(&rcopy, 0)?);
                1
            } else {
                0
            };
            {
                let ln = page::nslots(&lcopy);
                let left_entries = (0..ln).map(|j| page::entry_raw(&lcopy, j));
                let right_entries = (rest_from..rn).map(|j| page::entry_raw(&rcopy, j));
                let mid = if ty == T_BRANCH { Some(&e0[..]) } else { None };
                let lbuf = self.d.pages.get_mut(&l).expect("dirty");
                page::build_node(lbuf, ty, l, left_entries.chain(mid).chain(right_entries));
            }
            self.scratch = rcopy;
            self.scratch2 = sepv;
            self.free_page(rchild);
            self.branch_remove(parent, ri)?;
            node = parent;
            depth -= 1;
        }
    }

    // ---------------- commit / abort ----------------

    /// Make the batch durable and visible to new readers, atomically.
    pub fn commit(mut self) -> Result<(), StorageError> {
        if !self.changed && self.force_txn.is_none() {
            self.finish_abort();
            return Ok(());
        }
        let mut old_chain = Vec::new();
        match self.commit_inner(&mut old_chain) {
            Ok(low) => {
                self.inner.space_low.store(low, Relaxed);
                let ws = self.ws.take();
                self.inner.put_writer(ws);
                Ok(())
            }
            Err(CommitError::NoSpace(e)) => {
                // Nothing was synced and no meta page counts yet: what the commit wrote
                // lies in pages no committed version uses. Put the writer back as it was,
                // except that this transaction id is never used again (its pages may be
                // on disk, and must not pass for a later commit's).
                self.inner.space_low.store(true, Relaxed);
                if let Some(ws) = self.ws.as_mut() {
                    ws.chain = old_chain;
                    ws.next_txn += 1;
                }
                self.finish_abort();
                Err(StorageError::NoSpace(e))
            }
            Err(CommitError::Fatal(e)) => {
                // The file may hold a partial commit; only a reopen (which reads
                // the last valid meta) is safe now. After a failed sync this is
                // final: the kernel may have dropped the pages it could not write.
                self.ws = None;
                self.inner.put_writer(None);
                Err(e)
            }
        }
    }

    /// Discard the batch.
    pub fn abort(mut self) {
        self.finish_abort();
    }

    fn finish_abort(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            ws.free = std::mem::take(&mut self.free_backup);
            for (_, b) in self.d.pages.drain() {
                if ws.pool.len() < 1024 {
                    ws.pool.push(b);
                }
            }
            self.inner.put_writer(Some(ws));
        }
    }

    /// Writes the commit and syncs it. Ok(whether space is low: the file could not keep
    /// its reserve). `old_chain` gets the freelist chain this commit replaces, for an
    /// abort to put back.
    fn commit_inner(&mut self, old_chain: &mut Vec<u64>) -> Result<bool, CommitError> {
        let ps = self.ps;
        let txn = self.force_txn.unwrap_or(self.ws().next_txn);
        *old_chain = std::mem::take(&mut self.ws().chain);
        self.freed.extend(old_chain.iter().map(|&id| (id, 1)));

        // Pages this commit writes (tree pages and overflow runs), as runs: the
        // freelist chain lists them so that open can verify the last commit.
        let mut written = RunSet::default();
        for &id in self.d.pages.keys() {
            written.insert(id, 1);
        }
        for (&id, run) in self.d.ovf.iter() {
            written.insert(id, page::ovf_pages(run));
        }

        // The freelist chain: free + pending pages, minus the chain's own pages.
        let per = freelist::runs_per_page(ps);
        let mut chain: Vec<u64> = Vec::new();
        let (entries, free_total) = loop {
            let ws = self.ws.as_ref().expect("writer");
            let mut persist = ws.free.clone();
            for (_, runs) in &ws.pending {
                for &(s, l) in runs {
                    persist.insert(s, l);
                }
            }
            for &(s, l) in &self.freed {
                persist.insert(s, l);
            }
            let mut entries = Vec::with_capacity(persist.run_count() + written.run_count());
            freelist::push_entries(&mut entries, persist.iter(), false);
            freelist::push_entries(&mut entries, written.iter(), true);
            let need = entries.len().div_ceil(per).max(1);
            if need <= chain.len() {
                break (entries, persist.total());
            }
            while chain.len() < need {
                let id = self.alloc(1);
                chain.push(id);
            }
        };
        for (j, &id) in chain.iter().enumerate() {
            let next = chain.get(j + 1).copied().unwrap_or(0);
            let lo = (j * per).min(entries.len());
            let hi = ((j + 1) * per).min(entries.len());
            let mut buf = self.new_buf();
            freelist::encode_page(&mut buf, id, next, &entries[lo..hi]);
            self.d.pages.insert(id, buf);
        }
        let meta = Meta {
            page_size: ps as u32,
            txn,
            hwm: self.meta.hwm,
            freelist: chain[0],
            free_pages: free_total,
            roots: self.meta.roots,
            counts: self.meta.counts,
        };

        let ws = self.ws.as_mut().expect("writer");
        let file = ws.file.clone();
        let reserve = self.inner.opts.reserve_bytes;
        let low = grow(&*file, ws, meta.hwm * ps as u64, reserve, ps as u64)?;

        // Dirty pages, sorted, contiguous ones coalesced; then the meta page
        // into the slot not holding the current state; then one fdatasync.
        // A write that fails for want of space (possible only where the file
        // system could not allocate ahead) abandons the commit cleanly: no
        // meta page points at anything written so far.
        let write = |buf: &[u8], at: u64| file.write_at(buf, at).map_err(CommitError::write);
        let mut ids: Vec<u64> = self.d.pages.keys().copied().collect();
        ids.sort_unstable();
        let mut stage: Vec<u8> = Vec::with_capacity((ids.len() * ps).min(4 << 20));
        let mut stage_start = 0u64;
        let mut stage_next = u64::MAX;
        for id in ids {
            let p = self.d.pages.get_mut(&id).expect("dirty");
            page::set_txn(p, txn);
            page::seal(p);
            if id != stage_next || stage.len() >= 4 << 20 {
                if !stage.is_empty() {
                    write(&stage, stage_start * ps as u64)?;
                }
                stage.clear();
                stage_start = id;
            }
            stage.extend_from_slice(p);
            stage_next = id + 1;
        }
        if !stage.is_empty() {
            write(&stage, stage_start * ps as u64)?;
        }
        for (&id, run) in self.d.ovf.iter_mut() {
            page::seal_overflow(run, txn);
            write(run, id * ps as u64)?;
        }
        let mut mbuf = vec![0u8; ps];
        meta.encode(&mut mbuf);
        write(&mbuf, ws.next_slot * ps as u64)?;
        // Never retried, whatever the error: after a failed fsync the kernel
        // may have dropped pages it could not write back (fsyncgate).
        file.sync().map_err(CommitError::fatal)?;

        // Publish. The file may have grown in this commit, or in one that
        // failed after growing it.
        let map = if (self.d.base.map.len() as u64) < ws.file_len {
            Arc::new(
                map_file(file.file(), ws.file_len, &self.inner.opts).map_err(CommitError::Fatal)?,
            )
        } else {
            self.d.base.map.clone()
        };
        ws.next_slot ^= 1;
        ws.next_txn = txn + 1;
        let v = Arc::new(Version { meta, map, ps });
        let old = self.inner.publish(v);
        self.inner
            .file_len
            .store(ws.file_len, std::sync::atomic::Ordering::Relaxed);
        ws.versions.push(old);
        let freed = std::mem::take(&mut self.freed);
        if !freed.is_empty() {
            ws.pending.push((txn, freed));
        }
        ws.chain = chain;
        for (_, b) in self.d.pages.drain() {
            if ws.pool.len() < 1024 {
                ws.pool.push(b);
            }
        }
        self.d.ovf.clear();
        Ok(low)
    }
}

/// How a commit failed.
enum CommitError {
    /// Out of space before anything was synced: abandon the commit, keep the database.
    NoSpace(std::io::Error),
    /// Anything else: the database must be reopened.
    Fatal(StorageError),
}

impl CommitError {
    /// A failed write or length change: out of space is survivable, the rest is not.
    fn write(e: std::io::Error) -> CommitError {
        if super::is_no_space(&e) {
            CommitError::NoSpace(e)
        } else {
            CommitError::Fatal(e.into())
        }
    }

    fn fatal(e: std::io::Error) -> CommitError {
        CommitError::Fatal(e.into())
    }
}

/// Grows the file, if it must, so that the `need` bytes this commit uses fit and
/// `reserve` bytes of allocated free space (free pages or the file's tail) remain.
/// Allocates in chunks (doubling, from 1 MiB to 1 GiB a step) and, when the disk cannot
/// give a chunk, just what the reserve needs, then just what the commit needs. Returns
/// whether space is low (the reserve could not be kept); out of space for the commit
/// itself is [`CommitError::NoSpace`].
fn grow(
    file: &dyn super::FileLayer,
    ws: &mut WriterState,
    need: u64,
    reserve: u64,
    ps: u64,
) -> Result<bool, CommitError> {
    let round = |n: u64| n.div_ceil(ps) * ps;
    // A small database keeps a smaller reserve (half what it uses, at least 256 KiB), so a
    // new one is not several MiB for nothing.
    let reserve = reserve.min((need / 2).max(256 << 10));
    let free = ws.free.total() * ps + ws.file_len.saturating_sub(need);
    let want = if free >= reserve {
        need
    } else {
        round(ws.file_len.max(need) + (reserve - free))
    };
    if want <= ws.file_len {
        return Ok(false);
    }
    let mut chunk = ws.file_len.max(2 * ps);
    while chunk < want {
        chunk += chunk.clamp(1 << 20, 1 << 30);
    }
    let mut targets = vec![round(chunk), want, round(need)];
    targets.dedup();
    let mut last = None;
    let mut got = None;
    for target in targets
        .into_iter()
        .filter(|&t| t > ws.file_len && t >= need)
    {
        match file.allocate(target) {
            Ok(()) => {
                got = Some(target);
                break;
            }
            Err(e) => {
                // It may have grown part of the way; give that back.
                let _ = file.set_len(ws.file_len);
                match CommitError::write(e) {
                    CommitError::NoSpace(e) => last = Some(e),
                    fatal => return Err(fatal),
                }
            }
        }
    }
    let Some(len) = got else {
        if need > ws.file_len {
            return Err(CommitError::NoSpace(last.expect("a growth was tried")));
        }
        return Ok(true);
    };
    // Make the new length durable before any meta can point into it,
    // so that at open a file shorter than its newest meta needs is
    // known to be truncated rather than a torn commit. Growth is rare
    // (chunks double up to 1 GiB), so this extra sync is too.
    file.sync().map_err(CommitError::fatal)?;
    ws.file_len = len;
    Ok(len < want)
}

impl Drop for WriteTxn {
    fn drop(&mut self) {
        self.finish_abort();
    }
}
