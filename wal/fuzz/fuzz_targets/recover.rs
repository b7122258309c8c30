//! Fuzzes recovery over whole (in-memory) segment files: the input is cut
//! into up to three files, each either raw bytes or bytes behind a valid
//! segment header. Recovery must return records or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// A valid header for segment `seq` of a log of 8 KiB segments.
fn header(seq: u64, log_id: u64) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[0..8].copy_from_slice(b"corekvWL");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..16].copy_from_slice(&64u32.to_le_bytes());
    h[16..24].copy_from_slice(&log_id.to_le_bytes());
    h[24..32].copy_from_slice(&seq.to_le_bytes());
    h[32..40].copy_from_slice(&(seq * 8192).to_le_bytes());
    h[40..48].copy_from_slice(&8192u64.to_le_bytes());
    let crc = crc32(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// CRC-32 (IEEE), bitwise: the fuzz crate needs no other dependency.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (ctl, rest) = data.split_at(2);
    let files = 1 + (ctl[0] % 3) as usize;
    let chunk = rest.len() / files + 1;
    let mut owned = Vec::new();
    for (i, body) in rest.chunks(chunk).enumerate() {
        let seq = i as u64 + (ctl[1] >> 4) as u64;
        let name = format!("{:016x}-{:016x}.wal", seq, seq * 8192);
        let bytes = if ctl[1] & (1 << i) != 0 {
            body.to_vec()
        } else {
            let mut b = header(seq, 7);
            b.extend_from_slice(body);
            b
        };
        owned.push((name, bytes));
    }
    let refs: Vec<(&str, &[u8])> = owned.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let _ = wal::recover_images(&refs);
});
