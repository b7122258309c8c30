//! The records the consensus core keeps in the WAL: raft entries, hard state and snapshot
//! markers, each a protobuf message under its own record type.

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, SnapshotMetadata};

use super::node::Persist;

pub const ENTRY: u8 = 1;
pub const HARD_STATE: u8 = 2;
pub const SNAPSHOT: u8 = 3;

#[derive(Debug)]
pub enum WalRecord {
    Entry(Entry),
    HardState(HardState),
    /// Everything up to this index is in the backend; the log restarts after it.
    Snapshot(SnapshotMetadata),
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
        t => return Err(format!("unknown WAL record type {t}")),
    })
}

/// The records for one Ready, in the order recovery must see them: a snapshot first, then
/// entries, then the hard state that may commit them.
pub fn encode_persist(p: &Persist) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::with_capacity(p.entries.len() + 2);
    if let Some(s) = &p.snapshot {
        out.push(encode_snapshot(s.get_metadata()));
    }
    for e in &p.entries {
        out.push(encode_msg(ENTRY, e));
    }
    if let Some(hs) = &p.hard_state {
        out.push(encode_hard_state(hs));
    }
    out
}
