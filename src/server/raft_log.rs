//! The in-memory raft log that raft-rs reads through its `Storage` trait.
//!
//! Durability is the WAL's job (the driver persists every Ready); this holds the entries since
//! the last snapshot so raft can read them without I/O, which keeps the consensus core free of
//! disk access and lets tests drive it with a simulated disk.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

#[derive(Default)]
pub struct RaftLog {
    hard_state: HardState,
    conf_state: ConfState,
    /// The last entry covered by the snapshot: entries[0] has index snapshot.index + 1.
    snapshot: SnapshotMetadata,
    entries: Vec<Entry>,
    /// Approximate bytes held by `entries`.
    bytes: usize,
}

impl RaftLog {
    pub fn new(conf_state: ConfState) -> RaftLog {
        let mut log = RaftLog::default();
        log.snapshot.set_conf_state(conf_state.clone());
        log.conf_state = conf_state;
        log
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Raises the commit index to `index`, an entry this log holds that the state machine has
    /// already applied (the WAL's hard state may lag: commit-only changes are not fsync'd).
    pub fn raise_commit(&mut self, index: u64) {
        assert!(
            index <= self.last(),
            "the backend applied index {index} is past the last log entry {}",
            self.last()
        );
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        &self.snapshot
    }

    fn first(&self) -> u64 {
        self.snapshot.index + 1
    }

    fn last(&self) -> u64 {
        self.snapshot.index + self.entries.len() as u64
    }

    /// Appends entries, replacing any conflicting suffix (a new leader overwrote it).
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        assert!(
            first.index >= self.first(),
            "append at {} before the snapshot at {}",
            first.index,
            self.snapshot.index
        );
        assert!(
            first.index <= self.last() + 1,
            "gap in the raft log: last {}, appending {}",
            self.last(),
            first.index
        );
        let keep = (first.index - self.first()) as usize;
        self.bytes -= self.entries[keep..].iter().map(entry_bytes).sum::<usize>();
        self.entries.truncate(keep);
        self.bytes += ents.iter().map(entry_bytes).sum::<usize>();
        self.entries.extend_from_slice(ents);
    }

    /// Installs a snapshot: everything up to its index is now covered by the state machine.
    pub fn apply_snapshot(&mut self, meta: SnapshotMetadata) {
        if meta.index <= self.snapshot.index {
            return;
        }
        if meta.index >= self.last() || self.term_at(meta.index) != Some(meta.term) {
            self.entries.clear();
            self.bytes = 0;
        } else {
            self.drop_front((meta.index - self.snapshot.index) as usize);
        }
        self.conf_state = meta.get_conf_state().clone();
        if self.hard_state.commit < meta.index {
            self.hard_state.commit = meta.index;
        }
        if self.hard_state.term < meta.term {
            self.hard_state.term = meta.term;
        }
        self.snapshot = meta;
    }

    /// Drops entries up to and including `index`, which the state machine has made durable.
    pub fn compact(&mut self, index: u64, conf_state: ConfState) {
        if index <= self.snapshot.index {
            return;
        }
        assert!(index <= self.last(), "compact beyond the last entry");
        let term = self.term_at(index).expect("entry in range has a term");
        self.drop_front((index - self.snapshot.index) as usize);
        self.snapshot.index = index;
        self.snapshot.term = term;
        self.snapshot.set_conf_state(conf_state);
    }

    fn term_at(&self, idx: u64) -> Option<u64> {
        if idx == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if idx < self.first() || idx > self.last() {
            return None;
        }
        Some(self.entries[(idx - self.first()) as usize].term)
    }

    fn drop_front(&mut self, n: usize) {
        self.bytes -= self.entries[..n].iter().map(entry_bytes).sum::<usize>();
        self.entries.drain(..n);
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Approximate memory held by the entries since the snapshot.
    pub fn entry_bytes(&self) -> usize {
        self.bytes
    }
}

fn entry_bytes(e: &Entry) -> usize {
    e.data.len() + e.context.len() + 48
}

impl Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            panic!("entries high {high} beyond last index {} + 1", self.last());
        }
        let lo = (low - self.first()) as usize;
        let hi = (high - self.first()) as usize;
        let mut out = Vec::with_capacity(hi - lo);
        let limit = max_size.into().unwrap_or(u64::MAX);
        let mut size = 0u64;
        for e in &self.entries[lo..hi] {
            size += protobuf::Message::compute_size(e) as u64;
            // raft-rs wants at least one entry even when it alone exceeds the limit.
            if !out.is_empty() && size > limit {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.snapshot.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_at(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// Only the metadata of the compaction point: the node replaces it with the state
    /// machine's newest durable state (at or past this point) and the driver streams that.
    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mut snap = Snapshot::default();
        snap.set_metadata(self.snapshot.clone());
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn append_replaces_conflicting_suffix() {
        let mut log = RaftLog::new(ConfState::default());
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        log.append(&[entry(2, 2)]);
        assert_eq!(log.last_index().unwrap(), 2);
        assert_eq!(log.term(2).unwrap(), 2);
        assert_eq!(log.term(1).unwrap(), 1);
    }

    #[test]
    fn compact_keeps_term_of_snapshot_index() {
        let mut log = RaftLog::new(ConfState::default());
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 2)]);
        log.compact(2, ConfState::default());
        assert_eq!(log.first_index().unwrap(), 3);
        assert_eq!(log.term(2).unwrap(), 1);
        assert!(log.term(1).is_err());
        let got = log
            .entries(3, 4, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].term, 2);
    }
}
