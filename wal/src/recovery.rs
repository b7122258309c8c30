//! Recovery: from the segment files' bytes to the records, the end of the
//! valid log and what to erase. Pure (no I/O), so that it can be tested and
//! fuzzed on images in memory.

use crate::error::WalError;
use crate::frame::{decode, Decoded, EndReason, FRAME_ALIGN, FRAME_HEADER_LEN, KIND_SEAL};
use crate::segment::{decode_header, parse_file_name, SegmentId, SEGMENT_HEADER_LEN};
use crate::{Position, Record, Truncation};
use std::path::{Path, PathBuf};

/// One segment file as read from disk.
pub(crate) struct Image {
    pub path: PathBuf,
    pub id: SegmentId,
    /// The file's bytes, at most `id.size` of them (fewer if it was cut).
    pub bytes: Vec<u8>,
}

/// Where appending resumes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// In `images[index]` at offset `end`, after erasing `[end, zero_to)`.
    Open {
        index: usize,
        end: usize,
        zero_to: usize,
    },
    /// Every segment is sealed: a new one follows `images[index]`.
    Sealed { index: usize },
}

pub(crate) struct Recovered {
    pub records: Vec<Record>,
    pub last_valid: Position,
    pub truncated: Option<Truncation>,
    /// `None` when there are no segments at all.
    pub tail: Option<Tail>,
    /// Segments after the tail: they hold no valid frame and are removed.
    pub remove_from: usize,
    /// The commit number the next write uses.
    pub next_commit: u64,
}

fn corruption(path: &Path, offset: usize, reason: impl Into<String>) -> WalError {
    WalError::Corruption {
        segment: path.to_owned(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// Checks the segments' headers, names and continuity; returns the log id.
/// `files` are (path, first bytes) sorted by sequence number.
pub(crate) fn check_headers(files: &[(PathBuf, Vec<u8>)]) -> Result<Vec<SegmentId>, WalError> {
    let mut ids: Vec<SegmentId> = Vec::with_capacity(files.len());
    let mut log_id = None;
    for (i, (path, bytes)) in files.iter().enumerate() {
        let bad = |reason: String| WalError::BadSegment {
            segment: path.clone(),
            reason,
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let (seq, lsn) =
            parse_file_name(name).ok_or_else(|| bad("not a segment file name".into()))?;
        let (id, lid) = decode_header(bytes).map_err(bad)?;
        if (id.seq, id.start_lsn) != (seq, lsn) {
            return Err(bad(format!(
                "header says segment {} at position {}, the name says {seq} at {lsn}",
                id.seq, id.start_lsn
            )));
        }
        if *log_id.get_or_insert(lid) != lid {
            return Err(bad(format!(
                "belongs to log {lid:016x}, the other segments to log {:016x}",
                log_id.unwrap()
            )));
        }
        if let Some(prev) = ids.last() {
            let before = files[i - 1].0.clone();
            if id.seq != prev.seq + 1 {
                return Err(WalError::MissingSegment {
                    before,
                    after: path.clone(),
                    reason: format!(
                        "sequence {} follows {}: segment(s) {}..{} are missing",
                        id.seq,
                        prev.seq,
                        prev.seq + 1,
                        id.seq
                    ),
                });
            }
            if id.start_lsn != prev.end_lsn() {
                return Err(WalError::MissingSegment {
                    before,
                    after: path.clone(),
                    reason: format!(
                        "it starts at position {} but the previous segment ends at {}",
                        id.start_lsn,
                        prev.end_lsn()
                    ),
                });
            }
        }
        ids.push(id);
    }
    Ok(ids)
}

/// The log id a set of images belongs to (they were checked to agree).
pub(crate) fn log_id(images: &[Image]) -> Option<u64> {
    images
        .first()
        .and_then(|im| decode_header(&im.bytes).ok())
        .map(|(_, id)| id)
}

/// Frames found after the end of the valid log, and whether they are
/// consistent with a torn final commit.
struct Scan {
    /// Valid frames found (all of the torn commit).
    frames: usize,
}

/// Walks every segment in order and decides where the valid log ends.
pub(crate) fn recover(images: &[Image]) -> Result<Recovered, WalError> {
    let Some(log_id) = log_id(images) else {
        return Ok(Recovered {
            records: Vec::new(),
            last_valid: Position::from_lsn(SEGMENT_HEADER_LEN as u64),
            truncated: None,
            tail: None,
            remove_from: 0,
            next_commit: 1,
        });
    };
    let mut records = Vec::new();
    // Records of the commit in progress (no end-of-commit frame seen yet).
    let mut pending: Vec<Record> = Vec::new();
    let mut pending_commit: Option<u64> = None;
    let mut last_end_commit: Option<u64> = None;
    // A fresh log's first commit is 1; after a release the first is unknown.
    if images[0].id.seq == 0 {
        last_end_commit = Some(0);
    }

    for (index, im) in images.iter().enumerate() {
        let size = im.id.size as usize;
        let mut at = SEGMENT_HEADER_LEN;
        // End of the last complete commit in this segment.
        let mut commit_end = SEGMENT_HEADER_LEN;
        let stop = loop {
            match decode(&im.bytes, at, size, log_id, im.id.start_lsn) {
                Decoded::Frame {
                    header,
                    payload,
                    next,
                } => {
                    let expected = match (pending_commit, last_end_commit) {
                        (Some(c), _) => Some(c),
                        (None, Some(c)) => Some(c + 1),
                        (None, None) => None,
                    };
                    if let Some(e) = expected {
                        if header.commit != e {
                            return Err(corruption(
                                &im.path,
                                at,
                                format!(
                                    "frame of commit {} where commit {e} was expected",
                                    header.commit
                                ),
                            ));
                        }
                    }
                    if header.kind != KIND_SEAL {
                        pending.push(Record {
                            record_type: header.record_type,
                            payload: payload.to_vec(),
                            position: Position::from_lsn(im.id.start_lsn + at as u64),
                        });
                    }
                    pending_commit = Some(header.commit);
                    if header.end_of_commit() {
                        records.append(&mut pending);
                        last_end_commit = pending_commit.take();
                        commit_end = next;
                    }
                    if header.kind == KIND_SEAL {
                        break None;
                    }
                    at = next;
                }
                Decoded::Invalid(why) => return Err(corruption(&im.path, at, why)),
                Decoded::End(reason) => break Some(reason),
            }
        };
        let Some(reason) = stop else {
            // Sealed: go on with the next segment, or end here.
            if index + 1 == images.len() {
                return Ok(Recovered {
                    records,
                    last_valid: Position::from_lsn(im.id.start_lsn + commit_end as u64),
                    truncated: None,
                    tail: Some(Tail::Sealed { index }),
                    remove_from: images.len(),
                    next_commit: last_end_commit.map_or(1, |c| c + 1),
                });
            }
            continue;
        };

        // The valid log ends in this segment, at the end of its last complete
        // commit. Anything after that may only be the rest of a torn final
        // commit: check that nothing valid of a later commit follows.
        let torn_commit = pending_commit.or(last_end_commit.map(|c| c + 1));
        let scan = scan_after(images, index, at, reason, torn_commit, log_id)?;
        let im = &images[index];
        let end = commit_end;
        let last_nonzero = last_nonzero(&im.bytes[end.min(im.bytes.len())..]).map(|p| end + p + 1);
        let cut = im.bytes.len() < size;
        let zero_to = if cut {
            size
        } else {
            last_nonzero.unwrap_or(end)
        };
        let truncated = (last_nonzero.is_some() || cut).then(|| Truncation {
            segment: im.path.clone(),
            offset: end as u64,
            position: Position::from_lsn(im.id.start_lsn + end as u64),
            discarded_bytes: last_nonzero.map_or(0, |n| (n - end) as u64),
            discarded_records: pending.len() + scan.frames,
            reason: if cut && last_nonzero.is_none() {
                format!(
                    "segment file cut short ({} of {size} bytes)",
                    im.bytes.len()
                )
            } else {
                format!(
                    "torn write at offset {at}: {}{}",
                    reason.describe(),
                    if cut { " (segment file cut short)" } else { "" }
                )
            },
        });
        return Ok(Recovered {
            records,
            last_valid: Position::from_lsn(im.id.start_lsn + end as u64),
            truncated,
            tail: Some(Tail::Open {
                index,
                end,
                zero_to,
            }),
            remove_from: index + 1,
            next_commit: last_end_commit.map_or(1, |c| c + 1),
        });
    }
    unreachable!("the loop returns at the last segment")
}

/// Looks for valid frames after the point `at` in `images[index]` where
/// decoding stopped. Frames of `torn_commit` in the same segment are the rest
/// of a torn final write; any other valid frame means data after the damage
/// was durable, so the damage is corruption.
///
/// `torn_commit` is `None` only when the damage is the very first frame of a
/// log whose earlier segments were released: then the commit it belonged to
/// is unknown, and any valid frame after it is taken as corruption (the safe
/// side: a false alarm needs the first write after a release to be torn
/// with its sectors persisted out of order).
fn scan_after(
    images: &[Image],
    index: usize,
    at: usize,
    reason: EndReason,
    torn_commit: Option<u64>,
    log_id: u64,
) -> Result<Scan, WalError> {
    let mut frames = 0;
    for (j, im) in images.iter().enumerate().skip(index) {
        let size = im.id.size as usize;
        let limit = im.bytes.len().min(size);
        let mut p = if j == index {
            at + FRAME_ALIGN
        } else {
            SEGMENT_HEADER_LEN
        };
        while p + FRAME_HEADER_LEN <= limit {
            // Skip zeros fast: a frame header has a nonzero byte.
            let Some(nz) = first_nonzero(&im.bytes[p..limit]) else {
                break;
            };
            let first = p + nz;
            let cand = (first.saturating_sub(FRAME_HEADER_LEN - 1) / FRAME_ALIGN) * FRAME_ALIGN;
            p = p.max(cand);
            match decode(&im.bytes, p, size, log_id, im.id.start_lsn) {
                Decoded::Frame { header, next, .. } => {
                    let commit = header.commit;
                    if j != index || torn_commit != Some(commit) {
                        return Err(corruption(
                            &images[index].path,
                            at,
                            format!(
                                "{}, but a valid frame of a later commit ({commit}) follows in {} at offset {p}",
                                reason.describe(),
                                im.path.display()
                            ),
                        ));
                    }
                    frames += 1;
                    p = next;
                }
                Decoded::Invalid(why) => return Err(corruption(&im.path, p, why)),
                Decoded::End(_) => p += FRAME_ALIGN,
            }
        }
    }
    Ok(Scan { frames })
}

/// Whether a block is all zeros (written so that it vectorizes).
fn all_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |acc, &x| acc | x) == 0
}

const ZERO_SCAN: usize = 512;

/// Index of the first nonzero byte. Fast over long zero runs (the unused
/// part of a preallocated segment is megabytes of zeros).
pub(crate) fn first_nonzero(b: &[u8]) -> Option<usize> {
    let mut base = 0;
    for block in b.chunks(ZERO_SCAN) {
        if !all_zero(block) {
            return block.iter().position(|&x| x != 0).map(|i| base + i);
        }
        base += block.len();
    }
    None
}

/// Index of the last nonzero byte.
pub(crate) fn last_nonzero(b: &[u8]) -> Option<usize> {
    let mut end = b.len();
    for block in b.rchunks(ZERO_SCAN) {
        let start = end - block.len();
        if !all_zero(block) {
            return block.iter().rposition(|&x| x != 0).map(|i| start + i);
        }
        end = start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_scans() {
        for len in [0, 1, 7, 511, 512, 513, 2000] {
            let mut v = vec![0u8; len];
            assert_eq!(first_nonzero(&v), None);
            assert_eq!(last_nonzero(&v), None);
            for i in [0, len / 3, len.saturating_sub(1)] {
                if i < len {
                    v[i] = 9;
                    assert_eq!(first_nonzero(&v), v.iter().position(|&x| x != 0));
                    assert_eq!(last_nonzero(&v), v.iter().rposition(|&x| x != 0));
                }
            }
        }
    }
}
