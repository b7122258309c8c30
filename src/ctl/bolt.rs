//! A read-only reader of bbolt database files: the backend etcd 3.4/3.5 keeps and
//! `etcdctl snapshot save` writes (followed there by a 32-byte SHA-256, which the caller strips).
//!
//! Written from bbolt's format as its Go source describes it (page.go, bucket.go, db.go):
//!
//! - Every page starts with a 16-byte header: page id u64, flags u16 (0x01 branch, 0x02 leaf,
//!   0x04 meta, 0x10 freelist), element count u16, overflow u32 (the page spans `1 + overflow`
//!   pages). All integers are the writer's byte order: little-endian on every platform etcd
//!   ships for.
//! - Pages 0 and 1 are meta pages; after the header: magic u32 0xED0CDAED, version u32 (2),
//!   page size u32, flags u32, root bucket (root page u64, sequence u64), freelist page u64,
//!   high-water page id u64, txid u64, checksum u64 = FNV-64a of the 56 bytes before it (0 is
//!   accepted, as bbolt accepts it). The valid meta with the highest txid is the state.
//! - Branch elements (16 bytes): pos u32, key size u32, child page u64; leaf elements (16
//!   bytes): flags u32 (0x01: the value is a nested bucket), pos u32, key size u32, value size
//!   u32. `pos` counts from the element's own first byte; the value follows the key.
//! - A bucket value is its header (root page u64, sequence u64); root 0 means an inline
//!   bucket, whose leaf page (header and elements) follows the header inside the value.
//!
//! Every offset is checked against the page (or inline value) it points into and every page id
//! against the file and the high-water mark; a page reached twice, a wrong page id or flag, or
//! keys out of order is an error naming the page, so a damaged file is refused, never read
//! past its end.

use std::collections::HashSet;

const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const META_LEN: usize = 64;
const META_SUM_LEN: usize = 56;
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;
const BUCKET_HEADER: usize = 16;
/// Nesting of pages and buckets allowed before the file is called damaged (bbolt's trees are a
/// few levels deep; a loop would otherwise recurse forever).
const MAX_DEPTH: usize = 64;

/// The meta page a file is read through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub root: u64,
    pub freelist: u64,
    /// The high-water mark: pages `0..pgid` are in use or free.
    pub pgid: u64,
    pub txid: u64,
}

/// A bucket: its root page, or its inline leaf page (the bytes after its header).
#[derive(Debug, Clone, Copy)]
pub enum BucketRef<'a> {
    Paged(u64),
    Inline(&'a [u8]),
}

/// An entry of a bucket: a value or a nested bucket.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    Value(&'a [u8]),
    Bucket(BucketRef<'a>),
}

/// A bbolt file whose meta page validated.
pub struct BoltFile<'a> {
    data: &'a [u8],
    page_size: usize,
    meta: Meta,
}

fn fnv64a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// The meta at `off` (the start of a meta page), or why it is not valid.
fn meta_at(data: &[u8], off: usize) -> Result<Meta, String> {
    let end = off
        .checked_add(PAGE_HEADER + META_LEN)
        .filter(|&e| e <= data.len())
        .ok_or_else(|| format!("the file ends at byte {} inside it", data.len()))?;
    let m = &data[off + PAGE_HEADER..end];
    if u32_at(m, 0) != MAGIC {
        return Err("no bolt magic".into());
    }
    let version = u32_at(m, 4);
    if version != VERSION {
        return Err(format!("version {version}, not {VERSION}"));
    }
    let sum = u64_at(m, META_SUM_LEN);
    let computed = fnv64a(&m[..META_SUM_LEN]);
    if sum != 0 && sum != computed {
        return Err(format!(
            "checksum mismatch (stored {sum:016x}, computed {computed:016x})"
        ));
    }
    Ok(Meta {
        page_size: u32_at(m, 8),
        root: u64_at(m, 16),
        freelist: u64_at(m, 32),
        pgid: u64_at(m, 40),
        txid: u64_at(m, 48),
    })
}

impl<'a> BoltFile<'a> {
    /// Validates the meta pages and picks the state, as bbolt opens a file: the valid meta
    /// with the highest txid. Refuses the file if neither validates, or if the chosen state
    /// does not fit in the file.
    pub fn open(data: &'a [u8]) -> Result<Self, String> {
        let m0 = meta_at(data, 0);
        // Meta 1 sits one page in; the page size comes from meta 0, or, when meta 0 is bad,
        // from the first power of two at which a valid meta 1 names that same size.
        let m1 = match &m0 {
            Ok(m) if usable_page_size(m.page_size) => meta_at(data, m.page_size as usize),
            Ok(m) => Err(format!("page size {} in meta 0", m.page_size)),
            Err(_) => (9..=16)
                .map(|shift| (1usize << shift, meta_at(data, 1 << shift)))
                .find(|(size, m)| matches!(m, Ok(m) if m.page_size as usize == *size))
                .map(|(_, m)| m)
                .unwrap_or_else(|| Err("no valid meta page at any page size".into())),
        };
        let meta = match (&m0, &m1) {
            (Ok(a), Ok(b)) if b.txid > a.txid && b.page_size == a.page_size => *b,
            (Ok(a), _) => *a,
            (Err(_), Ok(b)) => *b,
            (Err(e0), Err(e1)) => {
                return Err(format!(
                    "not a valid bolt file: meta page 0: {e0}; meta page 1: {e1}"
                ))
            }
        };
        if !usable_page_size(meta.page_size) {
            return Err(format!(
                "bolt meta: page size {} unsupported",
                meta.page_size
            ));
        }
        let page_size = meta.page_size as usize;
        let needed = (meta.pgid as u128) * page_size as u128;
        if needed > data.len() as u128 {
            return Err(format!(
                "bolt file truncated: its meta (txid {}) says {} pages of {} bytes ({} bytes), \
                 the file has {} bytes",
                meta.txid,
                meta.pgid,
                page_size,
                needed,
                data.len()
            ));
        }
        if meta.root < 2 || meta.root >= meta.pgid {
            return Err(format!(
                "bolt meta: root page {} outside pages 2..{}",
                meta.root, meta.pgid
            ));
        }
        Ok(BoltFile {
            data,
            page_size,
            meta,
        })
    }

    #[cfg(test)]
    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// The root bucket (whose entries are the top-level buckets).
    pub fn root(&self) -> BucketRef<'a> {
        BucketRef::Paged(self.meta.root)
    }

    /// A page's bytes (all `1 + overflow` pages of it), checked to lie in the file and below
    /// the high-water mark, with its id and a branch or leaf flag.
    fn page(&self, id: u64) -> Result<&'a [u8], String> {
        if id < 2 || id >= self.meta.pgid {
            return Err(format!(
                "page {id} is outside the data pages 2..{}",
                self.meta.pgid
            ));
        }
        let start = id as usize * self.page_size;
        let head = self
            .data
            .get(start..start + PAGE_HEADER)
            .ok_or_else(|| format!("page {id} is past the end of the file"))?;
        let overflow = u32_at(head, 12) as u64;
        if id + overflow >= self.meta.pgid {
            return Err(format!(
                "page {id} with {overflow} overflow pages runs past the high-water mark {}",
                self.meta.pgid
            ));
        }
        let len = (overflow as usize + 1) * self.page_size;
        let page = self
            .data
            .get(start..start + len)
            .ok_or_else(|| format!("page {id} runs past the end of the file"))?;
        if u64_at(page, 0) != id {
            return Err(format!(
                "page {id} is marked as page {} (misplaced or damaged)",
                u64_at(page, 0)
            ));
        }
        Ok(page)
    }

    /// The entry stored under `name` in `bucket`, if any.
    pub fn get(&self, bucket: BucketRef<'a>, name: &[u8]) -> Result<Option<Entry<'a>>, String> {
        let mut found = None;
        self.for_each(bucket, &mut |k, e| {
            if k == name {
                found = Some(e);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Calls `f` with every entry of `bucket` in key order (nested buckets as
    /// [`Entry::Bucket`], not descended into); stops at the first error, the file's or `f`'s.
    pub fn for_each(
        &self,
        bucket: BucketRef<'a>,
        f: &mut dyn FnMut(&'a [u8], Entry<'a>) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut walk = Walk {
            visited: HashSet::new(),
            last: None,
        };
        match bucket {
            BucketRef::Paged(id) => self.walk_page(id, 0, &mut walk, f),
            BucketRef::Inline(page) => {
                if page.len() < PAGE_HEADER || u16_at(page, 8) & LEAF == 0 {
                    return Err("an inline bucket does not hold a leaf page".into());
                }
                self.walk_leaf(page, "an inline bucket", &mut walk, f)
            }
        }
    }

    fn walk_page(
        &self,
        id: u64,
        depth: usize,
        walk: &mut Walk<'a>,
        f: &mut dyn FnMut(&'a [u8], Entry<'a>) -> Result<(), String>,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "page {id} is nested deeper than {MAX_DEPTH} levels"
            ));
        }
        if !walk.visited.insert(id) {
            return Err(format!("page {id} is reached twice in one bucket"));
        }
        let page = self.page(id)?;
        let flags = u16_at(page, 8);
        if flags & BRANCH != 0 {
            let count = elements(page, &format!("page {id}"))?;
            if count == 0 {
                return Err(format!("branch page {id} is empty"));
            }
            for i in 0..count {
                let at = PAGE_HEADER + i * ELEMENT;
                let pos = u32_at(page, at) as usize;
                let ksize = u32_at(page, at + 4) as usize;
                slice(page, at, pos, ksize, || {
                    format!("page {id} element {i}'s key")
                })?;
                let child = u64_at(page, at + 8);
                self.walk_page(child, depth + 1, walk, f)?;
            }
            Ok(())
        } else if flags & LEAF != 0 {
            self.walk_leaf(page, &format!("page {id}"), walk, f)
        } else {
            Err(format!(
                "page {id} has flags {flags:#x}, not a branch or leaf page"
            ))
        }
    }

    fn walk_leaf(
        &self,
        page: &'a [u8],
        name: &str,
        walk: &mut Walk<'a>,
        f: &mut dyn FnMut(&'a [u8], Entry<'a>) -> Result<(), String>,
    ) -> Result<(), String> {
        let count = elements(page, name)?;
        for i in 0..count {
            let at = PAGE_HEADER + i * ELEMENT;
            let eflags = u32_at(page, at);
            let pos = u32_at(page, at + 4) as usize;
            let ksize = u32_at(page, at + 8) as usize;
            let vsize = u32_at(page, at + 12) as usize;
            let key = slice(page, at, pos, ksize, || format!("{name} element {i}'s key"))?;
            let value = slice(page, at, pos.saturating_add(ksize), vsize, || {
                format!("{name} element {i}'s value")
            })?;
            if let Some(last) = walk.last {
                if key <= last {
                    return Err(format!("{name}: keys out of order at element {i}"));
                }
            }
            walk.last = Some(key);
            let entry = if eflags & BUCKET_LEAF != 0 {
                if value.len() < BUCKET_HEADER {
                    return Err(format!(
                        "{name} element {i}: a bucket header of {} bytes",
                        value.len()
                    ));
                }
                match u64_at(value, 0) {
                    0 => Entry::Bucket(BucketRef::Inline(&value[BUCKET_HEADER..])),
                    root => Entry::Bucket(BucketRef::Paged(root)),
                }
            } else {
                Entry::Value(value)
            };
            f(key, entry)?;
        }
        Ok(())
    }
}

struct Walk<'a> {
    visited: HashSet<u64>,
    last: Option<&'a [u8]>,
}

fn usable_page_size(size: u32) -> bool {
    size.is_power_of_two() && (512..=1 << 20).contains(&size)
}

/// The element count of a branch or leaf page, checked to fit its element array.
fn elements(page: &[u8], name: &str) -> Result<usize, String> {
    let count = u16_at(page, 10) as usize;
    if PAGE_HEADER + count * ELEMENT > page.len() {
        return Err(format!(
            "{name}: {count} elements do not fit in its {} bytes",
            page.len()
        ));
    }
    Ok(count)
}

/// `len` bytes at `base + pos` of `page`, or an error naming `what`.
fn slice(
    page: &[u8],
    base: usize,
    pos: usize,
    len: usize,
    what: impl FnOnce() -> String,
) -> Result<&[u8], String> {
    base.checked_add(pos)
        .and_then(|s| s.checked_add(len).map(|e| (s, e)))
        .and_then(|(s, e)| page.get(s..e))
        .ok_or_else(|| {
            format!(
                "{} (offset {}+{pos}, {len} bytes) runs past its page ({} bytes)",
                what(),
                base,
                page.len()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bolt file by hand: page size 512, meta 0/1, the root bucket's leaf at page 2 holding
    /// bucket "a" (inline, entries x=1, y=2) and bucket "b" at page 3 (a branch over leaves 4
    /// and 5), the high-water mark 6.
    fn sample() -> Vec<u8> {
        const PS: usize = 512;
        let mut d = vec![0u8; PS * 6];
        let meta = |d: &mut Vec<u8>, id: u64, txid: u64| {
            let o = id as usize * PS;
            d[o..o + 8].copy_from_slice(&id.to_le_bytes());
            d[o + 8..o + 10].copy_from_slice(&0x04u16.to_le_bytes());
            let m = o + PAGE_HEADER;
            d[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
            d[m + 4..m + 8].copy_from_slice(&VERSION.to_le_bytes());
            d[m + 8..m + 12].copy_from_slice(&(PS as u32).to_le_bytes());
            d[m + 16..m + 24].copy_from_slice(&2u64.to_le_bytes());
            d[m + 40..m + 48].copy_from_slice(&6u64.to_le_bytes());
            d[m + 48..m + 56].copy_from_slice(&txid.to_le_bytes());
            let sum = fnv64a(&d[m..m + META_SUM_LEN]);
            d[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
        };
        meta(&mut d, 0, 7);
        meta(&mut d, 1, 6);
        // A leaf page image with the given (flags, key, value) elements.
        let leaf = |id: u64, items: &[(u32, &[u8], Vec<u8>)]| {
            let mut p = vec![0u8; PAGE_HEADER + items.len() * ELEMENT];
            p[..8].copy_from_slice(&id.to_le_bytes());
            p[8..10].copy_from_slice(&LEAF.to_le_bytes());
            p[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
            for (i, (fl, k, v)) in items.iter().enumerate() {
                let at = PAGE_HEADER + i * ELEMENT;
                let pos = (p.len() - at) as u32;
                p[at..at + 4].copy_from_slice(&fl.to_le_bytes());
                p[at + 4..at + 8].copy_from_slice(&pos.to_le_bytes());
                p[at + 8..at + 12].copy_from_slice(&(k.len() as u32).to_le_bytes());
                p[at + 12..at + 16].copy_from_slice(&(v.len() as u32).to_le_bytes());
                p.extend_from_slice(k);
                p.extend_from_slice(v);
            }
            p
        };
        let mut inline = vec![0u8; BUCKET_HEADER];
        inline.extend(leaf(
            0,
            &[(0, b"x", b"1".to_vec()), (0, b"y", b"2".to_vec())],
        ));
        let mut paged = 3u64.to_le_bytes().to_vec();
        paged.extend([0u8; 8]);
        let root = leaf(
            2,
            &[(BUCKET_LEAF, b"a", inline), (BUCKET_LEAF, b"b", paged)],
        );
        d[2 * PS..2 * PS + root.len()].copy_from_slice(&root);
        let l4 = leaf(4, &[(0, b"k1", b"v1".to_vec()), (0, b"k2", b"v2".to_vec())]);
        let l5 = leaf(5, &[(0, b"k3", vec![9u8; 300])]);
        d[4 * PS..4 * PS + l4.len()].copy_from_slice(&l4);
        d[5 * PS..5 * PS + l5.len()].copy_from_slice(&l5);
        // Branch page 3 over 4 ("k1") and 5 ("k3").
        let b = 3 * PS;
        d[b..b + 8].copy_from_slice(&3u64.to_le_bytes());
        d[b + 8..b + 10].copy_from_slice(&BRANCH.to_le_bytes());
        d[b + 10..b + 12].copy_from_slice(&2u16.to_le_bytes());
        for (i, (child, key)) in [(4u64, b"k1"), (5u64, b"k3")].iter().enumerate() {
            let at = b + PAGE_HEADER + i * ELEMENT;
            let pos = (2 * ELEMENT - i * ELEMENT + i * 2) as u32;
            d[at..at + 4].copy_from_slice(&pos.to_le_bytes());
            d[at + 4..at + 8].copy_from_slice(&2u32.to_le_bytes());
            d[at + 8..at + 16].copy_from_slice(&child.to_le_bytes());
            let k = at + pos as usize;
            d[k..k + 2].copy_from_slice(*key);
        }
        d
    }

    fn dump(f: &BoltFile) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let mut buckets = Vec::new();
        f.for_each(f.root(), &mut |k, e| {
            match e {
                Entry::Bucket(b) => buckets.push((k, b)),
                Entry::Value(_) => return Err("value in the root".into()),
            }
            Ok(())
        })?;
        for (name, b) in buckets {
            f.for_each(b, &mut |k, e| {
                let v = match e {
                    Entry::Value(v) => v.len().to_string() + ":" + &String::from_utf8_lossy(v),
                    Entry::Bucket(_) => "bucket".into(),
                };
                out.push((
                    String::from_utf8_lossy(name).to_string() + "/" + &String::from_utf8_lossy(k),
                    v,
                ));
                Ok(())
            })?;
        }
        Ok(out)
    }

    #[test]
    fn bolt_reads_paged_and_inline_buckets() {
        let d = sample();
        let f = BoltFile::open(&d).unwrap();
        assert_eq!(f.meta().txid, 7);
        let all = dump(&f).unwrap();
        let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a/x", "a/y", "b/k1", "b/k2", "b/k3"]);
        assert_eq!(all[0].1, "1:1");
        assert!(all[4].1.starts_with("300:"));
    }

    #[test]
    fn bolt_meta_fallback_and_refusal() {
        let mut d = sample();
        // Meta 0 damaged: meta 1 (txid 6, same tree here) is used.
        d[PAGE_HEADER + 20] ^= 1;
        let f = BoltFile::open(&d).unwrap();
        assert_eq!(f.meta().txid, 6);
        // Both damaged: refused.
        d[512 + PAGE_HEADER + 20] ^= 1;
        let e = BoltFile::open(&d).err().unwrap();
        assert!(e.contains("meta page 0") && e.contains("checksum"), "{e}");
    }

    #[test]
    fn bolt_truncated_and_damaged_files_are_errors_not_panics() {
        let d = sample();
        for len in 0..d.len() {
            let e = BoltFile::open(&d[..len]).and_then(|f| dump(&f).map(|_| ()));
            assert!(e.is_err(), "truncated to {len} accepted");
        }
        // Every single byte of the data pages set to a few values: never a panic.
        for i in 1024..d.len() {
            for v in [0u8, 0xff, 0x7f, 3] {
                let mut c = d.clone();
                c[i] = v;
                if let Ok(f) = BoltFile::open(&c) {
                    let _ = dump(&f);
                }
            }
        }
        let mut c = d.clone();
        c[3 * 512 + 16 + 8] = 3; // the branch's first child points back at itself
        let f = BoltFile::open(&c).unwrap();
        let e = dump(&f).err().unwrap();
        assert!(e.contains("reached twice"), "{e}");
    }
}
