//! The records the consensus core keeps in the WAL: raft entries, hard state and snapshot
//! markers, each a protobuf message under its own record type.

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, SnapshotMetadata};

use super::node::Persist;
use super::raft_log::RaftLog;

pub const ENTRY: u8 = 1;
pub const HARD_STATE: u8 = 2;
pub const SNAPSHOT: u8 = 3;
pub const INSTALLED_SNAPSHOT: u8 = 4;

#[derive(Debug)]
pub enum WalRecord {
    Entry(Entry),
    HardState(HardState),
    /// Everything up to this index is in the backend; the log restarts after it.
    Snapshot(SnapshotMetadata),
    /// A snapshot from the leader replaced the backend (at this index). Entries written
    /// before it belong to the log it replaced, whatever their index.
    InstalledSnapshot(SnapshotMetadata),
}

fn encode_msg(record_type: u8, msg: &dyn protobuf::Message) -> (u8, Vec<u8>) {
    let bytes = msg
        .write_to_bytes()
        .expect("encoding a raft message into a Vec cannot fail");
    (record_type, bytes)
}

pub fn encode_hard_state(hs: &HardState) -> (u8, Vec<u8>) {
    encode_msg(HARD_STATE, hs)
}

pub fn encode_snapshot(meta: &SnapshotMetadata) -> (u8, Vec<u8>) {
    encode_msg(SNAPSHOT, meta)
}

pub fn decode(record_type: u8, payload: &[u8]) -> Result<WalRecord, String> {
    let err = |e: protobuf::ProtobufError| e.to_string();
    Ok(match record_type {
        ENTRY => WalRecord::Entry(Entry::parse_from_bytes(payload).map_err(err)?),
        HARD_STATE => WalRecord::HardState(HardState::parse_from_bytes(payload).map_err(err)?),
        SNAPSHOT => WalRecord::Snapshot(SnapshotMetadata::parse_from_bytes(payload).map_err(err)?),
        INSTALLED_SNAPSHOT => {
            WalRecord::InstalledSnapshot(SnapshotMetadata::parse_from_bytes(payload).map_err(err)?)
        }
        t => return Err(format!("unknown WAL record type {t}")),
    })
}

/// The records for one Ready, in the order recovery must see them: a snapshot first, then
/// entries, then the hard state that may commit them.
pub fn encode_persist(p: &Persist) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::with_capacity(p.entries.len() + 2);
    if let Some(s) = &p.snapshot {
        // A Ready carries a snapshot only when raft took one from the leader.
        out.push(encode_msg(INSTALLED_SNAPSHOT, s.get_metadata()));
    }
    for e in &p.entries {
        out.push(encode_msg(ENTRY, e));
    }
    if let Some(hs) = &p.hard_state {
        out.push(encode_hard_state(hs));
    }
    out
}

/// Rebuilds the raft log from the records the WAL recovered.
///
/// The newest snapshot marker is where the log starts, wherever it lies: entries after its
/// index may have been written before it (they were persisted while the backend commit
/// that the marker records was in flight), and older segments may be released.
pub fn recover_raft_log(
    records: &[wal::Record],
    bootstrap: raft::eraftpb::ConfState,
) -> Result<RaftLog, String> {
    let mut decoded = Vec::with_capacity(records.len());
    for rec in records {
        let r = decode(rec.record_type, &rec.payload).map_err(|e| {
            format!(
                "WAL record at position {} does not decode: {e}",
                rec.position
            )
        })?;
        decoded.push(r);
    }
    let mut log = RaftLog::new(bootstrap);
    // Entries recorded before the newest installed snapshot belong to the log it replaced.
    let valid_from = decoded
        .iter()
        .rposition(|r| matches!(r, WalRecord::InstalledSnapshot(_)))
        .unwrap_or(0);
    if let Some(meta) = decoded.iter().rev().find_map(|r| match r {
        WalRecord::Snapshot(m) | WalRecord::InstalledSnapshot(m) => Some(m.clone()),
        _ => None,
    }) {
        log.apply_snapshot(meta);
    }
    let start = log.snapshot_metadata().index;
    for (i, r) in decoded.into_iter().enumerate() {
        match r {
            WalRecord::Entry(_) if i < valid_from => {}
            WalRecord::Entry(e) if e.index <= start => {}
            WalRecord::Entry(e) => {
                let last = raft::Storage::last_index(&log).expect("in-memory log");
                if e.index > last + 1 {
                    return Err(format!(
                        "the WAL lacks raft entries {} to {} (the log starts after index {start})",
                        last + 1,
                        e.index - 1
                    ));
                }
                log.append(std::slice::from_ref(&e));
            }
            WalRecord::HardState(hs) => log.set_hard_state(hs),
            WalRecord::Snapshot(_) | WalRecord::InstalledSnapshot(_) => {}
        }
    }
    Ok(log)
}

/// The position of the first raft entry record the WAL recovered, if any. Those records
/// may hold entries after the next snapshot's index: the driver keeps them, as it keeps the
/// ones it writes itself, until a snapshot covers the recovered log's last index.
pub fn first_entry_position(records: &[wal::Record]) -> Option<wal::Position> {
    records
        .iter()
        .find(|r| r.record_type == ENTRY)
        .map(|r| r.position)
}

/// The index of the newest snapshot a leader sent that the WAL records, if any: the backend
/// must be at least there (else the received file finishes the install at start).
pub fn newest_installed_snapshot(records: &[wal::Record]) -> Option<u64> {
    records
        .iter()
        .rev()
        .find(|r| r.record_type == INSTALLED_SNAPSHOT)
        .and_then(|r| SnapshotMetadata::parse_from_bytes(&r.payload).ok())
        .map(|m| m.index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::ConfState;

    fn rec(r: (u8, Vec<u8>), lsn: u64) -> wal::Record {
        wal::Record {
            record_type: r.0,
            payload: r.1,
            position: wal::Position::from_lsn(lsn),
        }
    }

    fn entry(index: u64) -> (u8, Vec<u8>) {
        let e = Entry {
            index,
            term: 1,
            ..Default::default()
        };
        encode_msg(ENTRY, &e)
    }

    fn marker(index: u64) -> (u8, Vec<u8>) {
        let m = SnapshotMetadata {
            index,
            term: 1,
            ..Default::default()
        };
        encode_snapshot(&m)
    }

    #[test]
    fn recovery_starts_at_the_newest_marker_even_after_later_entries() {
        // Segments before entry 5 were released; entries 5..=8 were written before the
        // marker for index 6, 9 after it.
        let records: Vec<_> = [entry(5), entry(6), entry(7), entry(8), marker(6), entry(9)]
            .into_iter()
            .enumerate()
            .map(|(i, r)| rec(r, i as u64 * 100))
            .collect();
        let log = recover_raft_log(&records, ConfState::default()).unwrap();
        assert_eq!(log.snapshot_metadata().index, 6);
        assert_eq!(raft::Storage::first_index(&log).unwrap(), 7);
        assert_eq!(raft::Storage::last_index(&log).unwrap(), 9);
    }

    #[test]
    fn entries_before_an_installed_snapshot_are_forgotten() {
        // Entries 5..=9 of an old log, then a snapshot from the leader at 6, then the new
        // log's 7. The old 8 and 9 must not survive behind the new 7.
        let installed = SnapshotMetadata {
            index: 6,
            term: 3,
            ..Default::default()
        };
        let mut records: Vec<(u8, Vec<u8>)> = (5..=9).map(entry).collect();
        records.push(encode_msg(INSTALLED_SNAPSHOT, &installed));
        let e7 = Entry {
            index: 7,
            term: 3,
            ..Default::default()
        };
        records.push(encode_msg(ENTRY, &e7));
        let records: Vec<_> = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| rec(r, i as u64 * 100))
            .collect();
        let log = recover_raft_log(&records, ConfState::default()).unwrap();
        assert_eq!(raft::Storage::first_index(&log).unwrap(), 7);
        assert_eq!(raft::Storage::last_index(&log).unwrap(), 7);
        assert_eq!(raft::Storage::term(&log, 7).unwrap(), 3);
        assert_eq!(newest_installed_snapshot(&records), Some(6));
    }

    #[test]
    fn recovery_reports_missing_entries_instead_of_panicking() {
        let records = vec![rec(marker(2), 0), rec(entry(3), 10), rec(entry(7), 20)];
        let err = match recover_raft_log(&records, ConfState::default()) {
            Err(e) => e,
            Ok(_) => panic!("a gap was accepted"),
        };
        assert!(err.contains("lacks raft entries 4 to 6"), "{err}");
        let garbage = vec![rec((ENTRY, vec![0xff, 0xff]), 0)];
        assert!(recover_raft_log(&garbage, ConfState::default()).is_err());
    }
}
