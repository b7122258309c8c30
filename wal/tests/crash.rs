//! Crash tests: cut the log's last segment at every byte offset within its
//! last records, zero its tail, flip single bytes, lose a sector from the
//! middle of a write; recovery must return exactly the durable prefix, and
//! damage followed by valid records must be reported as corruption.
//!
//! Every offset is checked through the pure recovery (`wal::recover_images`,
//! the same code `Wal::open` runs on the bytes it reads); a sample of them
//! also through real files: open, append after the recovered end, reopen.

mod common;
use common::*;
use std::path::Path;
use wal::{recover_images, Recovery, Wal, WalError};

const SEG: u64 = 16 << 10;
const HDR: usize = 24;

/// A log on disk, as bytes, with what was appended to it.
struct Log {
    files: Vec<(String, Vec<u8>)>,
    /// (file index, offset in file, record type, payload), in log order.
    records: Vec<(usize, usize, u8, Vec<u8>)>,
    /// The commits: for each, the indices in `records`.
    commits: Vec<std::ops::Range<usize>>,
}

impl Log {
    /// Builds a log of `batches` commits; batch `i` has `per_batch(i)` records.
    fn build(batches: usize, per_batch: fn(usize) -> usize) -> Log {
        let made = run(move || async move {
            let dir = tempfile::tempdir().unwrap();
            let (w, _) = Wal::open(dir.path(), opts(SEG)).await.unwrap();
            let mut made = Vec::new();
            let mut n = 0;
            for b in 0..batches {
                let recs: Vec<(u8, Vec<u8>)> = (0..per_batch(b))
                    .map(|_| {
                        n += 1;
                        ((n % 7) as u8, payload(n, 20 + (n * 37) % 380))
                    })
                    .collect();
                let refs: Vec<(u8, &[u8])> = recs.iter().map(|(t, p)| (*t, p.as_slice())).collect();
                let pos = w.append_batch(&refs).await.unwrap();
                made.push(pos.into_iter().zip(recs).collect::<Vec<_>>());
            }
            w.close().await.unwrap();
            let files: Vec<(String, Vec<u8>)> = segment_files(dir.path())
                .iter()
                .map(|p| {
                    let name = p.file_name().unwrap().to_str().unwrap().to_owned();
                    (name, std::fs::read(p).unwrap())
                })
                .collect();
            (files, made)
        });
        let (files, made) = made;
        let starts: Vec<u64> = files
            .iter()
            .map(|(n, _)| u64::from_str_radix(&n[17..33], 16).unwrap())
            .collect();
        let mut records = Vec::new();
        let mut commits = Vec::new();
        for batch in made {
            let first = records.len();
            for (pos, (t, p)) in batch {
                let fi = starts.iter().rposition(|s| *s <= pos.lsn()).unwrap();
                records.push((fi, (pos.lsn() - starts[fi]) as usize, t, p));
            }
            commits.push(first..records.len());
        }
        Log {
            files,
            records,
            commits,
        }
    }

    /// The file holding the last record.
    fn last_file(&self) -> usize {
        self.records.last().unwrap().0
    }

    fn recover(&self, files: &[(String, Vec<u8>)]) -> Result<Recovery, WalError> {
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        recover_images(&refs)
    }

    /// The records of the first `commits` commits, as recovery reports them.
    fn prefix(&self, commits: usize) -> Vec<(u8, Vec<u8>)> {
        let end = if commits == 0 {
            0
        } else {
            self.commits[commits - 1].end
        };
        self.records[..end]
            .iter()
            .map(|r| (r.2, r.3.clone()))
            .collect()
    }

    /// Byte range in its file of record `i`'s frame (header + payload).
    fn frame(&self, i: usize) -> (usize, std::ops::Range<usize>) {
        let (fi, off, _, p) = &self.records[i];
        (*fi, *off..off + HDR + p.len())
    }

    /// The commit record `i` belongs to.
    fn commit_of(&self, i: usize) -> usize {
        self.commits.iter().position(|c| c.contains(&i)).unwrap()
    }
}

/// Compares record lists, reporting counts and the first difference rather
/// than printing every payload.
fn assert_same(got: &[(u8, Vec<u8>)], want: &[(u8, Vec<u8>)], ctx: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{ctx}: recovered {} records, expected {}; first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

fn got(r: &Recovery) -> Vec<(u8, Vec<u8>)> {
    r.records
        .iter()
        .map(|r| (r.record_type, r.payload.clone()))
        .collect()
}

/// The number of whole commits that lie before `cut` in the last file.
fn commits_before(log: &Log, cut: usize) -> usize {
    let lf = log.last_file();
    log.commits
        .iter()
        .take_while(|c| {
            let (fi, range) = log.frame(c.end - 1);
            fi < lf || range.end <= cut
        })
        .count()
}

/// Opens real files, checks the records, appends one more record after the
/// recovered end, reopens and checks again.
fn check_on_disk(files: Vec<(String, Vec<u8>)>, expect: Vec<(u8, Vec<u8>)>) {
    run(move || async move {
        let dir = tempfile::tempdir().unwrap();
        for (n, b) in &files {
            std::fs::write(dir.path().join(n), b).unwrap();
        }
        let (w, rec) = Wal::open(dir.path(), opts(SEG)).await.unwrap();
        assert_same(&got(&rec), &expect, "on disk");
        let pos = w.append(42, b"after recovery").await.unwrap();
        assert!(pos >= rec.last_valid);
        w.close().await.unwrap();
        let (w, rec2) = Wal::open(dir.path(), opts(SEG)).await.unwrap();
        assert!(
            rec2.truncated.is_none(),
            "the torn tail was erased: {:?}",
            rec2.truncated
        );
        let mut expect = expect;
        expect.push((42, b"after recovery".to_vec()));
        assert_same(&got(&rec2), &expect, "on disk, after appending");
        w.close().await.unwrap();
    });
}

fn single(_: usize) -> usize {
    1
}

#[test]
fn cut_last_segment_at_every_offset() {
    let log = Log::build(250, single);
    let lf = log.last_file();
    assert!(lf >= 3, "the log spans several segments");
    let n = log.records.len();
    let from = log.frame(n - 8).1.start;
    let to = log.frame(n - 1).1.end + 16;
    for cut in from..=to {
        let mut files = log.files.clone();
        files[lf].1.truncate(cut);
        let rec = log
            .recover(&files)
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let keep = commits_before(&log, cut);
        assert_same(&got(&rec), &log.prefix(keep), &format!("cut at {cut}"));
        assert!(rec.truncated.is_some(), "a cut file is reported");
        // The same bytes zeroed instead of cut: a preallocated tail.
        let mut files = log.files.clone();
        files[lf].1[cut..].fill(0);
        let rec = log.recover(&files).unwrap();
        assert_same(&got(&rec), &log.prefix(keep), &format!("zeroed from {cut}"));
        // Through real files: a sample, and every cut that leaves a frame
        // whole but without its padding.
        let unpadded = cut % 8 != 0 && log.records.iter().any(|r| r.1 + HDR + r.3.len() == cut);
        if cut % 23 == 0 || unpadded {
            let mut files = log.files.clone();
            files[lf].1.truncate(cut);
            check_on_disk(files, log.prefix(keep));
        }
    }
}

#[test]
fn cut_inside_a_batch_drops_the_whole_batch() {
    let log = Log::build(40, |b| 1 + b % 6);
    let lf = log.last_file();
    let last_two = log.commits[log.commits.len() - 2].start;
    let from = log.frame(last_two).1.start;
    let to = log.frame(log.records.len() - 1).1.end;
    for cut in from..=to {
        let mut files = log.files.clone();
        files[lf].1.truncate(cut);
        let rec = log.recover(&files).unwrap();
        let keep = commits_before(&log, cut);
        assert!(keep >= log.commits.len() - 2);
        assert_same(&got(&rec), &log.prefix(keep), &format!("cut at {cut}"));
    }
}

/// What a single damaged byte at `at` in file `fi` must lead to.
enum Expect {
    /// These records (the damage was outside every frame, or in the final
    /// commit, which is indistinguishable from a torn write).
    Records(Vec<(u8, Vec<u8>)>),
    Corruption {
        file: usize,
        offset: usize,
    },
    BadSegment,
}

fn expect_for_damage(log: &Log, fi: usize, at: usize) -> Expect {
    if at < 64 {
        return Expect::BadSegment;
    }
    for i in 0..log.records.len() {
        let (f, range) = log.frame(i);
        if f == fi && range.contains(&at) {
            let c = log.commit_of(i);
            return if c + 1 == log.commits.len() {
                Expect::Records(log.prefix(c))
            } else {
                Expect::Corruption {
                    file: fi,
                    offset: log.frame(log.commits[c].start).1.start.min(range.start),
                }
            };
        }
    }
    // The seal: right after the last record of a sealed segment.
    if fi < log.last_file() {
        let last = log.records.iter().rposition(|r| r.0 == fi).unwrap();
        let seal = log.frame(last).1.end.next_multiple_of(8);
        if (seal..seal + HDR).contains(&at) {
            return Expect::Corruption {
                file: fi,
                offset: seal,
            };
        }
    }
    Expect::Records(log.prefix(log.commits.len()))
}

fn check_damage(log: &Log, files: &[(String, Vec<u8>)], fi: usize, at: usize) {
    let res = log.recover(files);
    match (expect_for_damage(log, fi, at), res) {
        (Expect::Records(want), Ok(rec)) => {
            assert_same(&got(&rec), &want, &format!("damage at {fi}:{at}"))
        }
        (
            Expect::Corruption { file, offset },
            Err(WalError::Corruption {
                segment, offset: o, ..
            }),
        ) => {
            assert_eq!(
                segment.to_str().unwrap(),
                log.files[file].0,
                "damage at {fi}:{at}"
            );
            // Damage in a frame's header may be found at the frame, or
            // (payload) also at the frame's start: the named offset is
            // where the first unreadable frame starts.
            assert!(
                o as usize >= offset && o as usize <= at,
                "damage at {fi}:{at} reported at {o}, frame at {offset}"
            );
        }
        (Expect::BadSegment, Err(WalError::BadSegment { .. })) => {}
        (e, r) => panic!(
            "damage at {fi}:{at}: expected {}, got {r:?}",
            match e {
                Expect::Records(_) => "records",
                Expect::Corruption { .. } => "corruption",
                Expect::BadSegment => "bad segment",
            }
        ),
    }
}

#[test]
fn flipped_bytes_in_the_last_records() {
    let log = Log::build(250, single);
    let lf = log.last_file();
    let n = log.records.len();
    let from = log.frame(n - 6).1.start;
    let to = log.frame(n - 1).1.end + 64;
    for at in from..to {
        for mask in [0x01u8, 0x80] {
            let mut files = log.files.clone();
            files[lf].1[at] ^= mask;
            check_damage(&log, &files, lf, at);
            if at % 41 == 0 && mask == 1 {
                if let Expect::Records(want) = expect_for_damage(&log, lf, at) {
                    check_on_disk(files, want);
                }
            }
        }
    }
}

#[test]
fn flipped_bytes_in_earlier_segments_and_batches() {
    let log = Log::build(40, |b| 1 + b % 6);
    for fi in 0..=log.last_file() {
        let len = log.files[fi].1.len();
        for at in (0..len).step_by(if fi == log.last_file() { 3 } else { 29 }) {
            let mut files = log.files.clone();
            files[fi].1[at] ^= 0x10;
            check_damage(&log, &files, fi, at);
        }
    }
}

#[test]
fn lost_sector_in_the_last_write_is_torn_elsewhere_corruption() {
    // Big batches: each commit spans several 512-byte sectors.
    let log = Log::build(12, |_| 8);
    let lf = log.last_file();
    let last = log.commits.last().unwrap().clone();
    let (_, first_frame) = log.frame(last.start);
    let (_, last_frame) = log.frame(last.end - 1);
    assert!(last_frame.end - first_frame.start > 3 * 512);
    // A sector in the middle of the final write never reached the disk, but
    // later ones did: a torn write, and the whole final commit goes.
    let sector = (first_frame.start / 512 + 1) * 512;
    let mut files = log.files.clone();
    files[lf].1[sector..sector + 512].fill(0);
    let rec = log.recover(&files).unwrap();
    assert_same(
        &got(&rec),
        &log.prefix(log.commits.len() - 1),
        "lost sector",
    );
    let t = rec.truncated.expect("reported");
    assert!(t.discarded_records >= 1, "{t:?}");
    // The same loss in an earlier commit is corruption.
    let prev = log.commits[log.commits.len() - 2].clone();
    let (pf, pframe) = log.frame(prev.start + 3);
    let mut files = log.files.clone();
    files[pf].1[pframe.start..pframe.start + 512].fill(0);
    assert!(matches!(
        log.recover(&files),
        Err(WalError::Corruption { .. })
    ));
}

fn open_err(files: &[(String, Vec<u8>)]) -> WalError {
    let files = files.to_vec();
    run(move || async move {
        let dir = tempfile::tempdir().unwrap();
        for (n, b) in &files {
            std::fs::write(dir.path().join(n), b).unwrap();
        }
        match Wal::open(dir.path(), opts(SEG)).await {
            Ok(_) => panic!("opened"),
            Err(e) => e,
        }
    })
}

#[test]
fn bad_directories_are_clear_errors() {
    let log = Log::build(250, single);
    assert!(log.files.len() >= 4);
    // A missing segment in the middle.
    let mut files = log.files.clone();
    files.remove(1);
    let e = open_err(&files);
    assert!(matches!(e, WalError::MissingSegment { .. }), "{e}");
    assert!(e.to_string().contains(&log.files[0].0), "{e}");
    // A garbage file.
    let mut files = log.files.clone();
    files.push(("notes.txt".into(), b"hello".to_vec()));
    assert!(matches!(open_err(&files), WalError::UnexpectedFile { .. }));
    // A segment-named file that is short, or garbage, or from another log.
    for bad in [vec![], b"corekvWL".to_vec(), vec![0xab; 20000]] {
        let mut files = log.files.clone();
        files[1].1 = bad;
        let e = open_err(&files);
        assert!(matches!(e, WalError::BadSegment { .. }), "{e}");
        assert!(e.to_string().contains(&log.files[1].0), "{e}");
    }
    let other = Log::build(250, single);
    let mut files = log.files.clone();
    files[2] = other.files[2].clone();
    assert!(matches!(open_err(&files), WalError::BadSegment { .. }));
    // A frame whose (checksummed) length field says 4 GiB.
    let mut files = log.files.clone();
    let (fi, range) = log.frame(5);
    let at = range.start;
    let mut hdr = files[fi].1[at..at + HDR].to_vec();
    hdr[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let lsn = u64::from_str_radix(&files[fi].0[17..33], 16).unwrap() + at as u64;
    let log_id = u64::from_le_bytes(files[fi].1[16..24].try_into().unwrap());
    wal::frame::set_flags(&mut hdr, log_id, lsn, 0);
    files[fi].1[at..at + HDR].copy_from_slice(&hdr);
    match open_err(&files) {
        WalError::Corruption {
            segment, offset, ..
        } => {
            assert!(segment.ends_with(&log.files[fi].0));
            assert_eq!(offset as usize, at);
        }
        e => panic!("{e}"),
    }
    // The same damage without a valid checksum, in the middle: corruption.
    let mut files = log.files.clone();
    files[fi].1[at + 8..at + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(open_err(&files), WalError::Corruption { .. }));
    let _ = Path::new("");
}

/// A pristine prepared segment following file `fi`: header + zeros.
fn prepared_after(log: &Log, fi: usize) -> (String, Vec<u8>) {
    let next = &log.files[fi + 1];
    let mut bytes = next.1.clone();
    bytes[64..].fill(0);
    (next.0.clone(), bytes)
}

#[test]
fn crash_while_sealing_a_segment() {
    let log = Log::build(250, single);
    // The last commit of segment 1 ends with its seal.
    let s = 1;
    assert!(s < log.last_file());
    let last = log.records.iter().rposition(|r| r.0 == s).unwrap();
    let c = log.commit_of(last);
    let (_, frame) = log.frame(last);
    let seal_end = frame.end.next_multiple_of(8) + HDR;
    // The seal went out with the next append, in a commit of its own. Cut
    // inside the last record: that commit is gone; cut after it (padding or
    // seal): only the seal is. Either way the segment is open again and
    // appends go on in it, and the prepared next segment is kept.
    for cut in frame.start + 1..seal_end {
        let mut files: Vec<_> = log.files[..=s].to_vec();
        files[s].1.truncate(cut);
        files.push(prepared_after(&log, s));
        let rec = log.recover(&files).unwrap();
        let keep = if cut < frame.end { c } else { c + 1 };
        assert_same(&got(&rec), &log.prefix(keep), &format!("cut at {cut}"));
        if cut % 5 == 0 {
            check_on_disk(files, log.prefix(keep));
        }
    }
    // The seal made it, the next segment was never created: a new one is.
    let files: Vec<_> = log.files[..=s].to_vec();
    let rec = log.recover(&files).unwrap();
    assert!(rec.truncated.is_none());
    assert_same(&got(&rec), &log.prefix(c + 1), "sealed, no next segment");
    check_on_disk(files, log.prefix(c + 1));
}

#[test]
fn damaged_first_frame_after_a_release_is_corruption() {
    let log = Log::build(250, single);
    // Segments 0 and 1 released: the log starts at segment 2, whose first
    // frame is damaged while later ones verify. The commit the damaged frame
    // belonged to is unknown, so this is reported, not truncated.
    let mut files: Vec<_> = log.files[2..].to_vec();
    files[0].1[64 + 30] ^= 0xff;
    match log.recover(&files) {
        Err(WalError::Corruption {
            segment, offset, ..
        }) => {
            assert_eq!(segment.to_str().unwrap(), log.files[2].0);
            assert_eq!(offset, 64);
        }
        other => panic!("{other:?}"),
    }
    // Undamaged, it recovers from segment 2 on.
    let files: Vec<_> = log.files[2..].to_vec();
    let rec = log.recover(&files).unwrap();
    let first = log.records.iter().position(|r| r.0 == 2).unwrap();
    assert_eq!(rec.records.len(), log.records.len() - first);
}
