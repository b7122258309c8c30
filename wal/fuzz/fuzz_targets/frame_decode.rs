//! Fuzzes the record (frame) decoder: arbitrary bytes as a segment image,
//! decoded frame after frame from the first frame offset. It must never
//! panic, must stay inside the segment, and every frame it accepts must
//! re-encode to exactly the bytes it was decoded from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wal::frame::{decode, encode, frame_len, Decoded, FRAME_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if data.len() < 18 {
        return;
    }
    let log_id = u64::from_le_bytes(data[0..8].try_into().unwrap());
    let seg_lsn = u64::from_le_bytes(data[8..16].try_into().unwrap());
    // Segment size: anything up to 64 KiB beyond the image (so that cut
    // files are covered), and sometimes absurd.
    let extra = u16::from_le_bytes([data[16], data[17]]) as usize;
    let buf = &data[18..];
    let segment_size = if extra == u16::MAX as usize {
        usize::MAX
    } else {
        buf.len() + extra
    };
    for start in [0usize, 64] {
        let mut at = start;
        let mut n = 0;
        while let Decoded::Frame {
            header,
            payload,
            next,
        } = decode(buf, at, segment_size, log_id, seg_lsn)
        {
            assert!(next > at);
            assert_eq!(next - at, frame_len(payload.len()));
            assert!(at + FRAME_HEADER_LEN + payload.len() <= buf.len());
            let mut again = Vec::new();
            encode(
                &mut again,
                log_id,
                seg_lsn.wrapping_add(at as u64),
                header.kind,
                header.flags,
                header.record_type,
                header.commit,
                payload,
            );
            let n_bytes = FRAME_HEADER_LEN + payload.len();
            assert_eq!(&again[..n_bytes], &buf[at..at + n_bytes]);
            at = next;
            n += 1;
            if n > 1 << 16 {
                break;
            }
        }
    }
});
