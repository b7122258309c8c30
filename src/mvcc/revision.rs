//! Revisions and their byte encoding in the Key bucket (the same as etcd's).

/// A revision: `main` is the store revision of a write transaction, `sub` orders the changes
/// inside it. Ordered by (main, sub).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The store revision.
    pub main: i64,
    /// The position of the change inside its transaction (0, 1, ...).
    pub sub: i64,
}

impl Revision {
    /// A revision.
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }
}

/// Length of an encoded revision: 8 bytes main, `_`, 8 bytes sub.
pub const REV_BYTES_LEN: usize = 17;
/// Length of an encoded revision with the tombstone mark.
pub const MARKED_REV_BYTES_LEN: usize = REV_BYTES_LEN + 1;
/// The byte appended to the revision of a deletion.
pub const TOMBSTONE_MARK: u8 = b't';

/// The Key-bucket key of a revision: big-endian main, `_`, big-endian sub, then `t` if the
/// revision is a deletion (tombstone). Big-endian keeps the bucket in revision order.
pub fn encode_rev(rev: Revision, tombstone: bool) -> ([u8; MARKED_REV_BYTES_LEN], usize) {
    let mut b = [0u8; MARKED_REV_BYTES_LEN];
    b[..8].copy_from_slice(&(rev.main as u64).to_be_bytes());
    b[8] = b'_';
    b[9..17].copy_from_slice(&(rev.sub as u64).to_be_bytes());
    if tombstone {
        b[17] = TOMBSTONE_MARK;
        (b, MARKED_REV_BYTES_LEN)
    } else {
        (b, REV_BYTES_LEN)
    }
}

/// Decodes a Key-bucket key: the revision and whether it is a tombstone. None if malformed.
pub fn decode_rev(b: &[u8]) -> Option<(Revision, bool)> {
    let tombstone = match b.len() {
        REV_BYTES_LEN => false,
        MARKED_REV_BYTES_LEN if b[17] == TOMBSTONE_MARK => true,
        _ => return None,
    };
    if b[8] != b'_' {
        return None;
    }
    let main = u64::from_be_bytes(b[..8].try_into().ok()?) as i64;
    let sub = u64::from_be_bytes(b[9..17].try_into().ok()?) as i64;
    Some((Revision { main, sub }, tombstone))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mvcc_revision_encoding_round_trips_and_orders() {
        let a = Revision::new(2, 0);
        let b = Revision::new(2, 1);
        let c = Revision::new(256, 0);
        let (ea, la) = encode_rev(a, false);
        let (eb, lb) = encode_rev(b, true);
        let (ec, lc) = encode_rev(c, false);
        assert_eq!(decode_rev(&ea[..la]), Some((a, false)));
        assert_eq!(decode_rev(&eb[..lb]), Some((b, true)));
        assert!(ea[..la] < eb[..lb] && eb[..lb] < ec[..lc]);
        assert_eq!(
            &ea[..la],
            &[0, 0, 0, 0, 0, 0, 0, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(decode_rev(b"short"), None);
    }
}
