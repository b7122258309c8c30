//! The on-disk frame: encoding and decoding of one record (pure, no I/O).
//!
//! See the crate documentation for the byte layout and the reasoning behind
//! it. This module is public so that the fuzz target (and anyone curious) can
//! drive the decoder directly; the [`Wal`](crate::Wal) API does not need it.

/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 24;
/// Frames start at multiples of this many bytes (relative to the segment).
pub const FRAME_ALIGN: usize = 8;
/// Bytes a seal frame takes; every segment keeps this much room at its end.
pub const SEAL_LEN: usize = FRAME_HEADER_LEN;

/// Frame kind: a caller's record.
pub const KIND_RECORD: u8 = 1;
/// Frame kind: the seal that closes a segment (no payload).
pub const KIND_SEAL: u8 = 2;
/// Flag: this frame is the last one of its commit (one write + fdatasync).
pub const FLAG_END_OF_COMMIT: u8 = 1;

/// The decoded fixed part of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// `KIND_RECORD` or `KIND_SEAL`.
    pub kind: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// The caller's record type (0 for seals).
    pub record_type: u8,
    /// Payload length in bytes.
    pub len: u32,
    /// Number of the commit (one write + fdatasync) the frame was written in.
    pub commit: u64,
}

impl FrameHeader {
    /// Whether this frame closes its commit.
    pub fn end_of_commit(&self) -> bool {
        self.flags & FLAG_END_OF_COMMIT != 0
    }
}

/// Why decoding stopped without a frame. None of these can be produced by a
/// frame whose header checksum verified: they are what torn writes, zeroed
/// (preallocated) space and random damage look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The 24 header bytes are all zero: preallocated space, the normal end.
    Zero,
    /// The file ends inside the header (a cut file).
    TruncatedHeader,
    /// The header checksum does not match.
    HeaderChecksum,
    /// The file ends inside the payload.
    TruncatedPayload,
    /// The payload checksum does not match.
    PayloadChecksum,
    /// No room for another frame header before the segment's end.
    NoRoom,
}

impl EndReason {
    /// A short human description, used in errors and truncation reports.
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::Zero => "zeroed header",
            EndReason::TruncatedHeader => "file ends inside a frame header",
            EndReason::HeaderChecksum => "frame header checksum mismatch",
            EndReason::TruncatedPayload => "file ends inside a frame payload",
            EndReason::PayloadChecksum => "frame payload checksum mismatch",
            EndReason::NoRoom => "segment full without a seal",
        }
    }
}

/// The outcome of decoding at one offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A frame whose header and payload verify.
    Frame {
        header: FrameHeader,
        payload: &'a [u8],
        /// Offset of the next frame (aligned).
        next: usize,
    },
    /// No frame here (see [`EndReason`]).
    End(EndReason),
    /// The header checksum verified but the fields are impossible (unknown
    /// kind, reserved bits set, a length running past the segment, ...).
    /// A torn write cannot produce this: it is corruption or a bug.
    Invalid(&'static str),
}

/// The size a frame with `payload_len` payload bytes takes, padding included.
pub fn frame_len(payload_len: usize) -> usize {
    align_up(FRAME_HEADER_LEN + payload_len, FRAME_ALIGN)
}

pub(crate) fn align_up(v: usize, a: usize) -> usize {
    v.div_ceil(a) * a
}

fn header_crc(log_id: u64, lsn: u64, rest: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&log_id.to_le_bytes());
    h.update(&lsn.to_le_bytes());
    h.update(rest);
    h.finalize()
}

/// Appends one frame (header, payload, zero padding) to `out`.
///
/// `lsn` is the log position the frame will be written at and `log_id` the
/// identity of the log: both are covered by the header checksum without being
/// stored, so a frame verifies only where it was meant to be.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    out: &mut Vec<u8>,
    log_id: u64,
    lsn: u64,
    kind: u8,
    flags: u8,
    record_type: u8,
    commit: u64,
    payload: &[u8],
) {
    let start = out.len();
    let len = u32::try_from(payload.len()).expect("payload length checked by the caller");
    let mut hdr = [0u8; FRAME_HEADER_LEN];
    hdr[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    hdr[8..12].copy_from_slice(&len.to_le_bytes());
    hdr[12] = kind;
    hdr[13] = flags;
    hdr[14] = record_type;
    hdr[16..24].copy_from_slice(&commit.to_le_bytes());
    let crc = header_crc(log_id, lsn, &hdr[4..]);
    hdr[0..4].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&hdr);
    out.extend_from_slice(payload);
    out.resize(start + frame_len(payload.len()), 0);
}

/// Sets `flags` bits on an already encoded frame header (at the start of
/// `frame`) and recomputes its header checksum.
pub fn set_flags(frame: &mut [u8], log_id: u64, lsn: u64, flags: u8) {
    frame[13] |= flags;
    let crc = header_crc(log_id, lsn, &frame[4..FRAME_HEADER_LEN]);
    frame[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the frame at `at` in a segment image.
///
/// `buf` holds the bytes of the segment file that exist (it may be shorter
/// than the segment: a cut file); `segment_size` is the segment's nominal
/// size and `seg_lsn` the log position of its byte 0. Never panics and never
/// allocates, whatever the bytes.
pub fn decode(
    buf: &[u8],
    at: usize,
    segment_size: usize,
    log_id: u64,
    seg_lsn: u64,
) -> Decoded<'_> {
    let limit = segment_size.min(usize::MAX - FRAME_HEADER_LEN);
    if at >= limit || limit - at < FRAME_HEADER_LEN {
        return Decoded::End(EndReason::NoRoom);
    }
    let Some(hdr) = buf.get(at..at + FRAME_HEADER_LEN) else {
        let rest = buf.get(at..).unwrap_or(&[]);
        return Decoded::End(if rest.iter().all(|&b| b == 0) {
            EndReason::Zero
        } else {
            EndReason::TruncatedHeader
        });
    };
    if hdr.iter().all(|&b| b == 0) {
        return Decoded::End(EndReason::Zero);
    }
    let lsn = seg_lsn.wrapping_add(at as u64);
    let stored = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
    if header_crc(log_id, lsn, &hdr[4..]) != stored {
        return Decoded::End(EndReason::HeaderChecksum);
    }
    let header = FrameHeader {
        len: u32::from_le_bytes(hdr[8..12].try_into().unwrap()),
        kind: hdr[12],
        flags: hdr[13],
        record_type: hdr[14],
        commit: u64::from_le_bytes(hdr[16..24].try_into().unwrap()),
    };
    if hdr[15] != 0 {
        return Decoded::Invalid("reserved header byte is not zero");
    }
    if header.flags & !FLAG_END_OF_COMMIT != 0 {
        return Decoded::Invalid("unknown frame flags");
    }
    if header.commit == 0 {
        return Decoded::Invalid("commit number 0");
    }
    let payload_start = at + FRAME_HEADER_LEN;
    let len = header.len as usize;
    match header.kind {
        KIND_RECORD => {
            // A record must leave room for the segment's seal.
            let room = limit - payload_start;
            if len > room || room - len < SEAL_LEN {
                return Decoded::Invalid("record length runs past the end of the segment");
            }
        }
        KIND_SEAL => {
            if len != 0 || header.record_type != 0 || !header.end_of_commit() {
                return Decoded::Invalid("malformed seal frame");
            }
        }
        _ => return Decoded::Invalid("unknown frame kind"),
    }
    let Some(payload) = buf.get(payload_start..payload_start + len) else {
        return Decoded::End(EndReason::TruncatedPayload);
    };
    let payload_crc = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
    if crc32fast::hash(payload) != payload_crc {
        return Decoded::End(EndReason::PayloadChecksum);
    }
    Decoded::Frame {
        header,
        payload,
        next: at + frame_len(len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: usize = 4096;

    fn one(payload: &[u8], at: usize) -> Vec<u8> {
        let mut buf = vec![0u8; at];
        encode(&mut buf, 7, 1000 + at as u64, KIND_RECORD, 0, 9, 3, payload);
        buf.resize(SEG, 0);
        buf
    }

    #[test]
    fn roundtrip() {
        let buf = one(b"hello", 64);
        match decode(&buf, 64, SEG, 7, 1000) {
            Decoded::Frame {
                header,
                payload,
                next,
            } => {
                assert_eq!(payload, b"hello");
                assert_eq!(header.record_type, 9);
                assert_eq!(header.commit, 3);
                assert_eq!(next, 64 + 32);
            }
            other => panic!("{other:?}"),
        }
        // Bound to its position and its log.
        assert_eq!(
            decode(&buf, 64, SEG, 7, 1008),
            Decoded::End(EndReason::HeaderChecksum)
        );
        assert_eq!(
            decode(&buf, 64, SEG, 8, 1000),
            Decoded::End(EndReason::HeaderChecksum)
        );
        assert_eq!(
            decode(&buf, 96, SEG, 7, 1000),
            Decoded::End(EndReason::Zero)
        );
    }

    #[test]
    fn damage_is_reported_not_panicked() {
        let buf = one(b"hello world", 64);
        for cut in 64..64 + 35 {
            let d = decode(&buf[..cut], 64, SEG, 7, 1000);
            assert!(matches!(d, Decoded::End(_)), "{cut}: {d:?}");
        }
        let mut bad = buf.clone();
        bad[64 + 24] ^= 1;
        assert_eq!(
            decode(&bad, 64, SEG, 7, 1000),
            Decoded::End(EndReason::PayloadChecksum)
        );
        // A valid checksum over a 4 GiB length is an invalid frame, not a panic.
        let mut huge = vec![0u8; 64];
        let mut hdr = vec![];
        encode(&mut hdr, 7, 1064, KIND_RECORD, 0, 1, 1, b"");
        hdr[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        set_flags(&mut hdr, 7, 1064, 0);
        huge.extend_from_slice(&hdr);
        assert!(matches!(
            decode(&huge, 64, SEG, 7, 1000),
            Decoded::Invalid(_)
        ));
        assert_eq!(
            decode(&huge, SEG - 8, SEG, 7, 1000),
            Decoded::End(EndReason::NoRoom)
        );
        assert_eq!(
            decode(&huge, usize::MAX, usize::MAX, 7, 1000),
            Decoded::End(EndReason::NoRoom)
        );
    }
}
