//! Read paths over any page source (the committed map, or a write batch's dirty
//! pages over the map): point lookups, ordered range cursors, counts.

use std::ops::Bound;

use super::page::{self, corrupt, Val, T_BRANCH, T_LEAF};
use super::StorageError;

/// Deepest tree we accept; a page-pointer cycle in a corrupt file stops here.
pub const MAX_DEPTH: usize = 48;

pub trait PageSource {
    /// A branch or leaf page (whole page). Errors if `id` is outside the file.
    fn page(&self, id: u64) -> Result<&[u8], StorageError>;
    /// The value bytes of an overflow run starting at `id`.
    fn overflow(&self, id: u64, len: usize) -> Result<&[u8], StorageError>;
}

/// Read a page out of a mapped file image, checking the pointer and (if the
/// caller asks) the checksum.
#[inline]
pub fn map_page(map: &[u8], id: u64, hwm: u64, ps: usize) -> Result<&[u8], StorageError> {
    if id < 2 || id >= hwm {
        return Err(corrupt(
            id,
            format!("page pointer {id} outside the file (valid 2..{hwm})"),
        ));
    }
    let off = id as usize * ps;
    map.get(off..off + ps)
        .ok_or_else(|| corrupt(id, "page beyond the end of the mapped file"))
}

#[inline]
pub fn map_overflow(
    map: &[u8],
    id: u64,
    len: usize,
    hwm: u64,
    ps: usize,
) -> Result<&[u8], StorageError> {
    let n = page::overflow_pages(len, ps);
    if id < 2 || id.checked_add(n).is_none_or(|e| e > hwm) {
        return Err(corrupt(
            id,
            format!("overflow run {id}+{n} outside the file (valid 2..{hwm})"),
        ));
    }
    let off = id as usize * ps;
    let run = map
        .get(off..off + page::overflow_span(len))
        .ok_or_else(|| corrupt(id, "overflow run beyond the end of the mapped file"))?;
    check_overflow_header(run, id, len)?;
    Ok(&run[page::HDR..])
}

#[inline]
pub fn check_overflow_header(run: &[u8], id: u64, len: usize) -> Result<(), StorageError> {
    if page::ptype(run) != page::T_OVERFLOW || page::ovf_len(run) != len {
        return Err(corrupt(
            id,
            "overflow page header does not match its reference",
        ));
    }
    Ok(())
}

#[inline]
pub fn value<'a, S: PageSource + ?Sized>(s: &'a S, v: Val<'a>) -> Result<&'a [u8], StorageError> {
    match v {
        Val::Inline(b) => Ok(b),
        Val::Overflow { page, len } => s.overflow(page, len),
    }
}

/// Descend to the leaf that would hold `key`.
#[inline]
fn find_leaf<'a, S: PageSource + ?Sized>(
    s: &'a S,
    root: u64,
    key: &[u8],
) -> Result<&'a [u8], StorageError> {
    let mut id = root;
    for _ in 0..MAX_DEPTH {
        let p = s.page(id)?;
        match page::ptype(p) {
            T_LEAF => {
                page::check_node(p, id, T_LEAF)?;
                return Ok(p);
            }
            T_BRANCH => {
                page::check_node(p, id, T_BRANCH)?;
                let i = page::branch_search(p, key)?;
                id = page::branch_child(p, i)?;
            }
            t => return Err(corrupt(id, format!("expected a tree page, found type {t}"))),
        }
    }
    Err(corrupt(
        root,
        "tree deeper than the maximum (pointer cycle?)",
    ))
}

pub fn get<'a, S: PageSource + ?Sized>(
    s: &'a S,
    root: u64,
    key: &[u8],
) -> Result<Option<&'a [u8]>, StorageError> {
    if root == 0 {
        return Ok(None);
    }
    let p = find_leaf(s, root, key)?;
    match page::leaf_search(p, key)? {
        Ok(i) => {
            let (_, v, _) = page::leaf_entry(p, i)?;
            value(s, v).map(Some)
        }
        Err(_) => Ok(None),
    }
}

fn owned(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Ordered cursor over `[start, end)`-style bounds, forward or reverse.
/// Yields slices borrowed from the transaction (map or dirty pages): no copies.
pub struct Range<'a, S: PageSource + ?Sized> {
    src: &'a S,
    /// (page, index). For branches: the child being visited. For the leaf (top):
    /// forward: next entry to yield; reverse: one past the next entry to yield.
    stack: Vec<(&'a [u8], usize)>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    reverse: bool,
    root: u64,
    state: u8, // 0 = not positioned, 1 = running, 2 = done
}

impl<'a, S: PageSource + ?Sized> Range<'a, S> {
    pub fn new(
        src: &'a S,
        root: u64,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> Self {
        let empty = match (start, end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e))
            | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
            _ => false,
        };
        Range {
            src,
            stack: Vec::with_capacity(8),
            start: owned(start),
            end: owned(end),
            reverse,
            root,
            state: if root == 0 || empty { 2 } else { 0 },
        }
    }

    fn seek(&mut self) -> Result<(), StorageError> {
        let (bound, rev) = if self.reverse {
            (&self.end, true)
        } else {
            (&self.start, false)
        };
        let key: Option<&[u8]> = match bound {
            Bound::Included(k) | Bound::Excluded(k) => Some(k),
            Bound::Unbounded => None,
        };
        let mut id = self.root;
        for _ in 0..MAX_DEPTH {
            let p = self.src.page(id)?;
            match page::ptype(p) {
                T_BRANCH => {
                    page::check_node(p, id, T_BRANCH)?;
                    let i = match key {
                        Some(k) => page::branch_search(p, k)?,
                        None if rev => page::nslots(p) - 1,
                        None => 0,
                    };
                    self.stack.push((p, i));
                    id = page::branch_child(p, i)?;
                }
                T_LEAF => {
                    page::check_node(p, id, T_LEAF)?;
                    let n = page::nslots(p);
                    let pos = match (key, rev) {
                        (None, false) => 0,
                        (None, true) => n,
                        (Some(k), false) => match page::leaf_search(p, k)? {
                            Ok(i) if matches!(bound, Bound::Excluded(_)) => i + 1,
                            Ok(i) => i,
                            Err(i) => i,
                        },
                        (Some(k), true) => match page::leaf_search(p, k)? {
                            Ok(i) if matches!(bound, Bound::Excluded(_)) => i,
                            Ok(i) => i + 1,
                            Err(i) => i,
                        },
                    };
                    self.stack.push((p, pos));
                    return Ok(());
                }
                t => return Err(corrupt(id, format!("expected a tree page, found type {t}"))),
            }
        }
        Err(corrupt(self.root, "tree deeper than the maximum"))
    }

    /// Move to the next (or previous) leaf; false at the end of the tree.
    fn next_leaf(&mut self) -> Result<bool, StorageError> {
        self.stack.pop();
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(false);
            };
            let n = page::nslots(top.0);
            if self.reverse {
                if top.1 == 0 {
                    self.stack.pop();
                    continue;
                }
                top.1 -= 1;
            } else {
                if top.1 + 1 >= n {
                    self.stack.pop();
                    continue;
                }
                top.1 += 1;
            }
            let mut id = page::branch_child(top.0, top.1)?;
            // Descend to the leftmost (or rightmost) leaf below.
            loop {
                if self.stack.len() > MAX_DEPTH {
                    return Err(corrupt(id, "tree deeper than the maximum"));
                }
                let p = self.src.page(id)?;
                match page::ptype(p) {
                    T_BRANCH => {
                        page::check_node(p, id, T_BRANCH)?;
                        let i = if self.reverse { page::nslots(p) - 1 } else { 0 };
                        self.stack.push((p, i));
                        id = page::branch_child(p, i)?;
                    }
                    T_LEAF => {
                        page::check_node(p, id, T_LEAF)?;
                        let i = if self.reverse { page::nslots(p) } else { 0 };
                        self.stack.push((p, i));
                        return Ok(true);
                    }
                    t => return Err(corrupt(id, format!("expected a tree page, found type {t}"))),
                }
            }
        }
    }

    #[inline]
    fn in_bounds(&self, k: &[u8]) -> bool {
        if self.reverse {
            match &self.start {
                Bound::Included(s) => k >= s.as_slice(),
                Bound::Excluded(s) => k > s.as_slice(),
                Bound::Unbounded => true,
            }
        } else {
            match &self.end {
                Bound::Included(e) => k <= e.as_slice(),
                Bound::Excluded(e) => k < e.as_slice(),
                Bound::Unbounded => true,
            }
        }
    }

    /// Next raw entry (key, value reference).
    fn step(&mut self) -> Result<Option<(&'a [u8], Val<'a>)>, StorageError> {
        loop {
            match self.state {
                2 => return Ok(None),
                0 => {
                    self.state = 1;
                    self.seek()?;
                }
                _ => {}
            }
            let Some(&mut (p, ref mut pos)) = self.stack.last_mut() else {
                self.state = 2;
                return Ok(None);
            };
            let i = if self.reverse {
                if *pos == 0 {
                    None
                } else {
                    *pos -= 1;
                    Some(*pos)
                }
            } else if *pos < page::nslots(p) {
                *pos += 1;
                Some(*pos - 1)
            } else {
                None
            };
            match i {
                Some(i) => {
                    let (k, v, _) = page::leaf_entry(p, i)?;
                    if !self.in_bounds(k) {
                        self.state = 2;
                        return Ok(None);
                    }
                    return Ok(Some((k, v)));
                }
                None => {
                    if !self.next_leaf()? {
                        self.state = 2;
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Count the remaining entries without touching values.
    pub fn count(mut self) -> Result<u64, StorageError> {
        let mut n = 0;
        while self.step()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

impl<'a, S: PageSource + ?Sized> Iterator for Range<'a, S> {
    type Item = Result<(&'a [u8], &'a [u8]), StorageError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some((k, v))) => match value(self.src, v) {
                Ok(v) => Some(Ok((k, v))),
                Err(e) => {
                    self.state = 2;
                    Some(Err(e))
                }
            },
            Ok(None) => None,
            Err(e) => {
                self.state = 2;
                Some(Err(e))
            }
        }
    }
}

/// Count keys in bounds; the whole bucket comes from the meta count for free.
pub fn count<S: PageSource + ?Sized>(
    s: &S,
    root: u64,
    total: u64,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
) -> Result<u64, StorageError> {
    if matches!((start, end), (Bound::Unbounded, Bound::Unbounded)) {
        return Ok(total);
    }
    Range::new(s, root, start, end, false).count()
}
