//! The key ranges one user may read or write, merged over all their roles, and etcd 3.4's
//! checks against them (its range_perm_cache.go over an interval tree): a single key is
//! allowed when any permitted interval touches it, a range only when permitted intervals
//! cover all of it without a gap.

use std::cmp::Ordering;

use crate::proto::authpb::{permission::Type as PermType, Permission};

/// A key bound ordered as etcd's BytesAffineComparable: the empty bound is above every key
/// (it stands for "no end").
#[derive(Clone, Debug, PartialEq, Eq)]
struct Affine(Vec<u8>);

impl Ord for Affine {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.0.is_empty(), other.0.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.0.cmp(&other.0),
        }
    }
}

impl PartialOrd for Affine {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// [begin, end), end empty = unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Interval {
    begin: Affine,
    end: Affine,
}

impl Interval {
    /// The interval of exactly one key: [key, key + "\0").
    fn point(key: &[u8]) -> Interval {
        let mut end = key.to_vec();
        end.push(0);
        Interval {
            begin: Affine(key.to_vec()),
            end: Affine(end),
        }
    }

    fn range(key: &[u8], end: &[u8]) -> Interval {
        Interval {
            begin: Affine(key.to_vec()),
            end: Affine(end.to_vec()),
        }
    }

    /// etcd's Interval.Compare == 0: neither wholly left nor wholly right of the other.
    fn overlaps(&self, other: &Interval) -> bool {
        let left = self.begin < other.begin && self.end <= other.begin;
        let right = self.begin >= other.end;
        !left && !right
    }
}

/// "\0" as a range end means "every key from here on", which the interval spells empty.
fn unbounded_if_nul(end: &[u8]) -> &[u8] {
    if end == [0] {
        &[]
    } else {
        end
    }
}

/// Intervals sorted by their start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct IntervalSet(Vec<Interval>);

impl IntervalSet {
    fn insert(&mut self, ivl: Interval) {
        let at = self.0.partition_point(|i| i.begin <= ivl.begin);
        self.0.insert(at, ivl);
    }

    fn intersects(&self, q: &Interval) -> bool {
        self.0.iter().any(|i| q.overlaps(i))
    }

    /// Whether the intervals that overlap `q` cover it without a gap.
    fn contains(&self, q: &Interval) -> bool {
        let mut touching = self.0.iter().filter(|i| q.overlaps(i));
        let Some(first) = touching.next() else {
            return false;
        };
        let mut max_end = &first.end;
        for i in touching {
            if *max_end < i.begin {
                return false;
            }
            if i.end > *max_end {
                max_end = &i.end;
            }
        }
        *max_end >= q.end && first.begin <= q.begin
    }
}

/// Read or write, as the permission a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// What one user may read and write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangePerms {
    read: IntervalSet,
    write: IntervalSet,
}

impl RangePerms {
    /// Merges the permissions of every role a user holds.
    pub fn merge<'a>(perms: impl IntoIterator<Item = &'a Permission>) -> RangePerms {
        let mut out = RangePerms::default();
        for p in perms {
            let ivl = if p.range_end.is_empty() {
                Interval::point(&p.key)
            } else {
                Interval::range(&p.key, unbounded_if_nul(&p.range_end))
            };
            match PermType::try_from(p.perm_type) {
                Ok(PermType::Readwrite) => {
                    out.read.insert(ivl.clone());
                    out.write.insert(ivl);
                }
                Ok(PermType::Read) => out.read.insert(ivl),
                Ok(PermType::Write) => out.write.insert(ivl),
                Err(_) => {}
            }
        }
        out
    }

    /// etcd's isRangeOpPermitted: an empty `range_end` asks for one key.
    pub fn permits(&self, key: &[u8], range_end: &[u8], access: Access) -> bool {
        let set = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        if range_end.is_empty() {
            set.intersects(&Interval::point(key))
        } else {
            set.contains(&Interval::range(key, unbounded_if_nul(range_end)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn perm(t: PermType, key: &str, end: &str) -> Permission {
        Permission {
            perm_type: t as i32,
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
        }
    }

    #[test]
    fn single_keys_and_ranges_as_etcd_checks_them() {
        // etcd's range_perm_cache_test cases, plus prefixes and open ends.
        let perms = [
            perm(PermType::Read, "a", "c"),
            perm(PermType::Read, "c", "e"),
            perm(PermType::Readwrite, "x", ""),
            perm(PermType::Write, "p/", "p0"),
            perm(PermType::Read, "z", "\0"),
        ];
        let p = RangePerms::merge(&perms);
        use Access::*;
        assert!(p.permits(b"a", b"", Read));
        assert!(p.permits(b"b", b"", Read));
        assert!(p.permits(b"a", b"e", Read), "two adjacent ranges cover a-e");
        assert!(!p.permits(b"a", b"f", Read));
        assert!(!p.permits(b"a", b"c", Write));
        assert!(p.permits(b"x", b"", Write));
        assert!(
            !p.permits(b"x", b"y", Read),
            "a point does not cover a range"
        );
        assert!(!p.permits(b"xa", b"", Read));
        assert!(p.permits(b"p/1", b"", Write));
        assert!(p.permits(b"p/", b"p0", Write));
        assert!(!p.permits(b"p/", b"p0", Read));
        assert!(p.permits(b"z", b"\0", Read), "from z on");
        assert!(p.permits(b"zz", b"\0", Read));
        assert!(!p.permits(b"y", b"\0", Read));
        assert!(!p.permits(b"\0", b"\0", Read), "not every key");
    }

    #[test]
    fn a_gap_between_ranges_is_not_covered() {
        let perms = [
            perm(PermType::Read, "a", "b"),
            perm(PermType::Read, "c", "d"),
        ];
        let p = RangePerms::merge(&perms);
        assert!(!p.permits(b"a", b"d", Access::Read));
        assert!(p.permits(b"c", b"d", Access::Read));
    }
}
