//! The set of free pages as coalesced runs, and its on-disk chain encoding.

use std::collections::BTreeMap;

use super::page::{self, HDR, T_FREELIST};

/// Free pages as `start -> length` runs, always coalesced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSet {
    runs: BTreeMap<u64, u64>,
    total: u64,
}

impl RunSet {
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs.iter().map(|(&s, &l)| (s, l))
    }

    /// Whether page `id` is in the set.
    pub fn contains(&self, id: u64) -> bool {
        self.runs
            .range(..=id)
            .next_back()
            .is_some_and(|(&s, &l)| id < s + l)
    }

    /// Insert a run; returns false (and changes nothing) if it overlaps the set.
    pub fn insert(&mut self, start: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let end = start + len;
        let mut s = start;
        let mut e = end;
        if let Some((&ps, &pl)) = self.runs.range(..=start).next_back() {
            if ps + pl > start {
                return false;
            }
            if ps + pl == start {
                s = ps;
                self.runs.remove(&ps);
            }
        }
        if let Some((&ns, &nl)) = self.runs.range(start..).next() {
            if ns < end {
                // Undo the merge with the previous run before reporting the overlap.
                if s != start {
                    self.runs.insert(s, start - s);
                }
                return false;
            }
            if ns == end {
                e = ns + nl;
                self.runs.remove(&ns);
            }
        }
        self.runs.insert(s, e - s);
        self.total += len;
        true
    }

    /// Take `n` contiguous pages (first fit, lowest address first).
    pub fn alloc(&mut self, n: u64) -> Option<u64> {
        let (&s, &l) = if n == 1 {
            self.runs.iter().next()?
        } else {
            self.runs.iter().find(|(_, &l)| l >= n)?
        };
        self.runs.remove(&s);
        if l > n {
            self.runs.insert(s + n, l - n);
        }
        self.total -= n;
        Some(s)
    }
}

/// Marks an entry of a freelist page as a run of pages *written* by the commit
/// (listed so that open can verify the last commit) rather than a free run.
pub const WRITTEN: u32 = 1 << 31;
/// Longest run one entry describes.
pub const MAX_RUN: u64 = (WRITTEN - 1) as u64;

/// Runs per freelist page: each run is start u64 + length u32.
pub fn runs_per_page(page_size: usize) -> usize {
    (page_size - HDR) / 12
}

/// Encode a freelist chain page with the given runs and next pointer.
/// Entries are (start, len | WRITTEN?) as stored.
pub fn encode_page(p: &mut [u8], id: u64, next: u64, runs: &[(u64, u32)]) {
    p.fill(0);
    p[4] = T_FREELIST;
    page::set_nslots(p, runs.len());
    page::wr64(p, 8, id);
    page::wr64(p, 24, next);
    for (i, &(s, l)) in runs.iter().enumerate() {
        page::wr64(p, HDR + 12 * i, s);
        page::wr32(p, HDR + 12 * i + 8, l);
    }
}

/// Decode a freelist page (checksum already verified): (next, entries as stored).
pub fn decode_page(p: &[u8]) -> Option<(u64, Vec<(u64, u32)>)> {
    let n = page::nslots(p);
    if p[4] != T_FREELIST || HDR + 12 * n > p.len() {
        return None;
    }
    let next = page::rd64(p, 24);
    let runs = (0..n)
        .map(|i| (page::rd64(p, HDR + 12 * i), page::rd32(p, HDR + 12 * i + 8)))
        .collect();
    Some((next, runs))
}

/// Encode runs as freelist entries (split so none is longer than [`MAX_RUN`]).
pub fn push_entries(
    out: &mut Vec<(u64, u32)>,
    runs: impl Iterator<Item = (u64, u64)>,
    written: bool,
) {
    for (mut s, mut l) in runs {
        while l > 0 {
            let c = l.min(MAX_RUN);
            out.push((s, c as u32 | if written { WRITTEN } else { 0 }));
            s += c;
            l -= c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_runset_coalesces_and_allocates() {
        let mut r = RunSet::default();
        assert!(r.insert(10, 2));
        assert!(r.insert(14, 1));
        assert!(r.insert(12, 2));
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(10, 5)]);
        assert!(!r.insert(11, 1));
        assert!(!r.insert(9, 2));
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(10, 5)]);
        assert!(r.contains(14) && !r.contains(15) && !r.contains(9));
        assert_eq!(r.alloc(1), Some(10));
        assert_eq!(r.alloc(3), Some(11));
        assert_eq!(r.alloc(3), None);
        assert_eq!(r.total(), 1);
    }
}
