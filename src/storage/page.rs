//! On-disk page layout: headers, checksums, and bounds-checked accessors for
//! the slotted branch/leaf pages. Nothing here trusts page contents: every
//! offset read from a page is checked before it is used, so a corrupt page
//! yields [`StorageError::Corruption`] instead of a panic or an out-of-bounds read.

use super::StorageError;

/// Common page header size in bytes.
pub const HDR: usize = 32;

pub const T_META: u8 = 1;
pub const T_BRANCH: u8 = 2;
pub const T_LEAF: u8 = 3;
pub const T_OVERFLOW: u8 = 4;
pub const T_FREELIST: u8 = 5;

/// Meta page magic.
pub const MAGIC: &[u8; 8] = b"corekvDB";
pub const FORMAT_VERSION: u32 = 1;
/// Bucket slots reserved in the meta page (only `Bucket::ALL.len()` are used today).
pub const MAX_BUCKETS: usize = 16;
/// Bytes of the meta page covered by its checksum.
pub const META_USED: usize = 64 + MAX_BUCKETS * 16;

/// Bit in a leaf entry's value length marking an overflow reference.
pub const OVERFLOW_BIT: u32 = 1 << 31;
/// Leaf entry header: key len u16 + value len u32.
pub const LEAF_EHDR: usize = 6;
/// Branch entry header: key len u16 + child u64.
pub const BRANCH_EHDR: usize = 10;

#[inline]
pub fn rd16(p: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([p[o], p[o + 1]])
}
#[inline]
pub fn rd32(p: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(p[o..o + 4].try_into().unwrap())
}
#[inline]
pub fn rd64(p: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(p[o..o + 8].try_into().unwrap())
}
#[inline]
pub fn wr16(p: &mut [u8], o: usize, v: u16) {
    p[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub fn wr32(p: &mut [u8], o: usize, v: u32) {
    p[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub fn wr64(p: &mut [u8], o: usize, v: u64) {
    p[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

// ---- header fields (all pages) ----
#[inline]
pub fn ptype(p: &[u8]) -> u8 {
    p[4]
}
#[inline]
pub fn pgid(p: &[u8]) -> u64 {
    rd64(p, 8)
}
#[inline]
pub fn nslots(p: &[u8]) -> usize {
    rd16(p, 6) as usize
}
/// Transaction that wrote the page (lets open verify the last commit: a page
/// left over from an earlier life of the same page number has an older id).
#[inline]
pub fn txn(p: &[u8]) -> u64 {
    rd64(p, 16)
}
#[inline]
pub fn set_txn(p: &mut [u8], t: u64) {
    wr64(p, 16, t)
}
#[inline]
pub fn data_start(p: &[u8]) -> usize {
    rd16(p, 24) as usize
}
#[inline]
pub fn frag(p: &[u8]) -> usize {
    rd16(p, 26) as usize
}
/// Overflow run header: number of pages in the run.
#[inline]
pub fn ovf_pages(p: &[u8]) -> u64 {
    rd32(p, 24) as u64
}
/// Overflow run header: value length.
#[inline]
pub fn ovf_len(p: &[u8]) -> usize {
    rd32(p, 28) as usize
}

/// A new overflow run holding `value`, to be placed at page `id`.
pub fn new_overflow(id: u64, value: &[u8], ps: usize) -> Box<[u8]> {
    let n = overflow_pages(value.len(), ps);
    let mut run = vec![0u8; n as usize * ps].into_boxed_slice();
    run[4] = T_OVERFLOW;
    wr64(&mut run, 8, id);
    wr32(&mut run, 24, n as u32);
    wr32(&mut run, 28, value.len() as u32);
    run[HDR..HDR + value.len()].copy_from_slice(value);
    run
}

/// Stamp the writing txn into an overflow run and checksum it.
pub fn seal_overflow(run: &mut [u8], t: u64) {
    set_txn(run, t);
    let span = overflow_span(ovf_len(run));
    let c = checksum(&run[..span]);
    wr32(run, 0, c);
}
#[inline]
pub fn set_nslots(p: &mut [u8], n: usize) {
    wr16(p, 6, n as u16)
}
#[inline]
pub fn set_data_start(p: &mut [u8], v: usize) {
    // A page of 65536 bytes is not allowed, so this always fits.
    wr16(p, 24, v as u16)
}
#[inline]
pub fn set_frag(p: &mut [u8], v: usize) {
    wr16(p, 26, v as u16)
}

/// Initialise an empty slotted page (branch or leaf).
pub fn init_node(p: &mut [u8], ty: u8, id: u64) {
    p[..HDR].fill(0);
    p[4] = ty;
    wr64(p, 8, id);
    set_data_start(p, p.len());
}

/// Checksum of a page or an overflow run: crc32 of everything after the crc field.
#[inline]
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(&bytes[4..])
}

#[inline]
pub fn seal(bytes: &mut [u8]) {
    let c = checksum(bytes);
    wr32(bytes, 0, c);
}

/// Number of bytes of an overflow run covered by its checksum (header + value).
pub fn overflow_span(len: usize) -> usize {
    HDR + len
}

pub fn overflow_pages(len: usize, page_size: usize) -> u64 {
    overflow_span(len).div_ceil(page_size) as u64
}

pub fn corrupt(page: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corruption {
        page,
        reason: reason.into(),
    }
}

/// Structural sanity of a slotted page header: slot array and data area inside the page.
#[inline]
pub fn check_node(p: &[u8], id: u64, want: u8) -> Result<(), StorageError> {
    let n = nslots(p);
    let ds = data_start(p);
    if ptype(p) != want {
        return Err(corrupt(
            id,
            format!("expected page type {want}, found {}", ptype(p)),
        ));
    }
    if HDR + 2 * n > ds || ds > p.len() || frag(p) > p.len() - ds || (n == 0 && want == T_BRANCH) {
        return Err(corrupt(id, "bad slot array / data area bounds"));
    }
    Ok(())
}

/// Check that every entry of a slotted page lies inside the page, before the
/// writer edits a copy of it with unchecked accessors.
pub fn check_entries(p: &[u8], id: u64) -> Result<(), StorageError> {
    let branch = ptype(p) == T_BRANCH;
    for i in 0..nslots(p) {
        let off = slot(p, i);
        let size = if branch {
            branch_entry(p, i)?.2
        } else {
            leaf_entry(p, i)?.2
        };
        if off < data_start(p) || off + size > p.len() {
            return Err(corrupt(id, format!("entry {i} outside the data area")));
        }
    }
    Ok(())
}

#[inline]
fn slot(p: &[u8], i: usize) -> usize {
    rd16(p, HDR + 2 * i) as usize
}

/// A leaf value: inline bytes, or a reference to an overflow run.
#[derive(Clone, Copy, Debug)]
pub enum Val<'a> {
    Inline(&'a [u8]),
    Overflow { page: u64, len: usize },
}

/// Leaf entry `i`: (key, value, total entry size). `i` must be < nslots (checked by caller).
#[inline]
pub fn leaf_entry(p: &[u8], i: usize) -> Result<(&[u8], Val<'_>, usize), StorageError> {
    let off = slot(p, i);
    let bad = || corrupt(pgid_or(p), format!("leaf entry {i} out of bounds"));
    let h = p.get(off..off + LEAF_EHDR).ok_or_else(bad)?;
    let klen = rd16(h, 0) as usize;
    let vraw = rd32(h, 2);
    let kstart = off + LEAF_EHDR;
    let key = p.get(kstart..kstart + klen).ok_or_else(bad)?;
    let vstart = kstart + klen;
    if vraw & OVERFLOW_BIT != 0 {
        let r = p.get(vstart..vstart + 8).ok_or_else(bad)?;
        Ok((
            key,
            Val::Overflow {
                page: rd64(r, 0),
                len: (vraw & !OVERFLOW_BIT) as usize,
            },
            LEAF_EHDR + klen + 8,
        ))
    } else {
        let vlen = vraw as usize;
        let v = p.get(vstart..vstart + vlen).ok_or_else(bad)?;
        Ok((key, Val::Inline(v), LEAF_EHDR + klen + vlen))
    }
}

#[inline]
pub fn leaf_key(p: &[u8], i: usize) -> Result<&[u8], StorageError> {
    let off = slot(p, i);
    let h = p
        .get(off..off + 2)
        .ok_or_else(|| corrupt(pgid_or(p), "leaf key out of bounds"))?;
    let klen = rd16(h, 0) as usize;
    p.get(off + LEAF_EHDR..off + LEAF_EHDR + klen)
        .ok_or_else(|| corrupt(pgid_or(p), "leaf key out of bounds"))
}

/// Branch entry `i`: (separator key, child page, entry size). Entry 0's key is empty and means -inf.
#[inline]
pub fn branch_entry(p: &[u8], i: usize) -> Result<(&[u8], u64, usize), StorageError> {
    let off = slot(p, i);
    let bad = || corrupt(pgid_or(p), format!("branch entry {i} out of bounds"));
    let h = p.get(off..off + BRANCH_EHDR).ok_or_else(bad)?;
    let klen = rd16(h, 0) as usize;
    let child = rd64(h, 2);
    let key = p
        .get(off + BRANCH_EHDR..off + BRANCH_EHDR + klen)
        .ok_or_else(bad)?;
    Ok((key, child, BRANCH_EHDR + klen))
}

#[inline]
pub fn branch_child(p: &[u8], i: usize) -> Result<u64, StorageError> {
    let off = slot(p, i);
    p.get(off + 2..off + 10)
        .map(|b| rd64(b, 0))
        .ok_or_else(|| corrupt(pgid_or(p), format!("branch entry {i} out of bounds")))
}

/// Set the child pointer of branch entry `i` (page is dirty, in memory, and was validated).
pub fn set_branch_child(p: &mut [u8], i: usize, child: u64) {
    let off = slot(p, i);
    wr64(p, off + 2, child);
}

fn pgid_or(p: &[u8]) -> u64 {
    if p.len() >= 16 {
        pgid(p)
    } else {
        0
    }
}

/// Leaf search: Ok(index) if found, Err(insertion index) if not.
#[inline]
pub fn leaf_search(p: &[u8], key: &[u8]) -> Result<Result<usize, usize>, StorageError> {
    let (mut lo, mut hi) = (0usize, nslots(p));
    while lo < hi {
        let mid = (lo + hi) / 2;
        match leaf_key(p, mid)?.cmp(key) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(Ok(mid)),
        }
    }
    Ok(Err(lo))
}

/// Branch search: index of the child whose key range contains `key`
/// (the last entry whose separator is <= key; entry 0 is -inf).
#[inline]
pub fn branch_search(p: &[u8], key: &[u8]) -> Result<usize, StorageError> {
    let (mut lo, mut hi) = (1usize, nslots(p));
    while lo < hi {
        let mid = (lo + hi) / 2;
        let (k, _, _) = branch_entry(p, mid)?;
        if k <= key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo - 1)
}

/// Bytes of payload (entries + slots) in use in a slotted page.
pub fn used_bytes(p: &[u8]) -> usize {
    (p.len() - data_start(p)) - frag(p) + 2 * nslots(p)
}

/// Free bytes available (contiguous gap + fragmentation) for new entries + slots.
pub fn free_bytes(p: &[u8]) -> usize {
    p.len() - HDR - used_bytes(p)
}

/// Insert a raw entry at slot `i`; the caller guarantees it fits (`free_bytes >= e.len() + 2`).
/// Compacts the page into `scratch` first if the contiguous gap is too small.
pub fn insert_raw(p: &mut [u8], i: usize, e: &[u8], scratch: &mut Vec<u8>) {
    let n = nslots(p);
    let gap = data_start(p) - (HDR + 2 * n);
    if gap < e.len() + 2 {
        compact(p, scratch);
    }
    let ds = data_start(p) - e.len();
    p[ds..ds + e.len()].copy_from_slice(e);
    set_data_start(p, ds);
    let s = HDR + 2 * i;
    p.copy_within(s..HDR + 2 * n, s + 2);
    wr16(p, s, ds as u16);
    set_nslots(p, n + 1);
}

/// Remove slot `i` whose entry is `size` bytes long.
pub fn remove_slot(p: &mut [u8], i: usize, size: usize) {
    let n = nslots(p);
    let off = slot(p, i);
    let s = HDR + 2 * i;
    p.copy_within(s + 2..HDR + 2 * n, s);
    set_nslots(p, n - 1);
    if off == data_start(p) {
        set_data_start(p, off + size);
    } else {
        set_frag(p, frag(p) + size);
    }
    if n == 1 {
        set_data_start(p, p.len());
        set_frag(p, 0);
    }
}

/// Size of entry `i` (leaf or branch, by page type).
pub fn entry_size(p: &[u8], i: usize) -> usize {
    let off = slot(p, i);
    let klen = rd16(p, off) as usize;
    if ptype(p) == T_BRANCH {
        BRANCH_EHDR + klen
    } else {
        let v = rd32(p, off + 2);
        LEAF_EHDR + klen + if v & OVERFLOW_BIT != 0 { 8 } else { v as usize }
    }
}

/// Raw bytes of entry `i` of a (trusted, dirty) page.
pub fn entry_raw(p: &[u8], i: usize) -> &[u8] {
    let off = slot(p, i);
    &p[off..off + entry_size(p, i)]
}

/// Rewrite the page so that all entries are packed at the end (no fragmentation).
pub fn compact(p: &mut [u8], scratch: &mut Vec<u8>) {
    let n = nslots(p);
    scratch.clear();
    scratch.extend_from_slice(p);
    let mut end = p.len();
    for i in 0..n {
        let e = entry_raw(scratch, i);
        end -= e.len();
        p[end..end + e.len()].copy_from_slice(e);
        wr16(p, HDR + 2 * i, end as u16);
    }
    set_data_start(p, end);
    set_frag(p, 0);
}

/// Rebuild a page of type `ty` from a list of raw entries.
pub fn build_node<'a>(p: &mut [u8], ty: u8, id: u64, entries: impl Iterator<Item = &'a [u8]>) {
    init_node(p, ty, id);
    let mut end = p.len();
    let mut n = 0;
    for e in entries {
        end -= e.len();
        p[end..end + e.len()].copy_from_slice(e);
        wr16(p, HDR + 2 * n, end as u16);
        n += 1;
    }
    set_nslots(p, n);
    set_data_start(p, end);
}

pub fn encode_leaf_entry(out: &mut Vec<u8>, key: &[u8], val: Val<'_>) {
    out.clear();
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    match val {
        Val::Inline(v) => {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(v);
        }
        Val::Overflow { page, len } => {
            out.extend_from_slice(&(len as u32 | OVERFLOW_BIT).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&page.to_le_bytes());
        }
    }
}

pub fn encode_branch_entry(out: &mut Vec<u8>, key: &[u8], child: u64) {
    out.clear();
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&child.to_le_bytes());
    out.extend_from_slice(key);
}

/// The decoded meta page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub txn: u64,
    /// Pages `[0, hwm)` are in use or free; pages at or beyond `hwm` are unallocated file space.
    pub hwm: u64,
    /// First page of the freelist chain (0: none).
    pub freelist: u64,
    /// Pages listed in the freelist (free or waiting for readers to finish).
    pub free_pages: u64,
    pub roots: [u64; MAX_BUCKETS],
    pub counts: [u64; MAX_BUCKETS],
}

impl Meta {
    pub fn encode(&self, p: &mut [u8]) {
        p[..META_USED].fill(0);
        p[4] = T_META;
        p[8..16].copy_from_slice(MAGIC);
        wr32(p, 16, FORMAT_VERSION);
        wr32(p, 20, self.page_size);
        wr64(p, 24, self.txn);
        wr64(p, 32, self.hwm);
        wr64(p, 40, self.freelist);
        wr64(p, 48, self.free_pages);
        wr32(p, 56, MAX_BUCKETS as u32);
        for i in 0..MAX_BUCKETS {
            wr64(p, 64 + 16 * i, self.roots[i]);
            wr64(p, 64 + 16 * i + 8, self.counts[i]);
        }
        let c = crc32fast::hash(&p[4..META_USED]);
        wr32(p, 0, c);
    }

    /// Decode and verify a meta slot. `Err(reason)` if it is not a valid meta page.
    pub fn decode(p: &[u8]) -> Result<Meta, String> {
        if p.len() < META_USED {
            return Err("short meta page".into());
        }
        if &p[8..16] != MAGIC {
            return Err("bad magic".into());
        }
        if crc32fast::hash(&p[4..META_USED]) != rd32(p, 0) {
            return Err("meta checksum mismatch".into());
        }
        if p[4] != T_META {
            return Err("bad meta page type".into());
        }
        let v = rd32(p, 16);
        if v != FORMAT_VERSION {
            return Err(format!("unsupported format version {v}"));
        }
        if rd32(p, 56) as usize != MAX_BUCKETS {
            return Err("bad bucket table size".into());
        }
        let mut m = Meta {
            page_size: rd32(p, 20),
            txn: rd64(p, 24),
            hwm: rd64(p, 32),
            freelist: rd64(p, 40),
            free_pages: rd64(p, 48),
            roots: [0; MAX_BUCKETS],
            counts: [0; MAX_BUCKETS],
        };
        for i in 0..MAX_BUCKETS {
            m.roots[i] = rd64(p, 64 + 16 * i);
            m.counts[i] = rd64(p, 64 + 16 * i + 8);
        }
        Ok(m)
    }
}
