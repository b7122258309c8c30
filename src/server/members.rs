//! The cluster's members as every member applies them, kept in the backend's members bucket
//! so that they survive restarts and travel inside snapshots: the initial cluster written at
//! bootstrap, then the attributes each member publishes through raft.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use prost::Message as _;

use super::backend::OverlayBackend;
use crate::config::InitialMember;
use crate::proto::corekvpb::{MemberAttributes, MemberRecord};
use crate::proto::etcdserverpb as pb;
use crate::storage::{Bucket, ReadTxn, StorageError, WriteTxn};

/// Key prefixes in the members bucket: a member's record, and the IDs of removed members.
const MEMBER: u8 = b'm';
const REMOVED: u8 = b'r';
/// Meta-bucket key of the raft membership (eraftpb::ConfState, rust-protobuf).
pub const CONF_STATE_KEY: &[u8] = b"conf_state";

fn key(prefix: u8, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Members {
    by_id: BTreeMap<u64, MemberRecord>,
    removed: BTreeSet<u64>,
    /// Counts changes, so that others can tell the table changed without comparing it.
    version: u64,
}

impl Members {
    /// The members of a cluster bootstrapped from --initial-cluster.
    pub fn initial(initial: &[InitialMember]) -> Members {
        let by_id = initial
            .iter()
            .map(|m| {
                let rec = MemberRecord {
                    id: m.id,
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls: vec![],
                    is_learner: false,
                };
                (m.id, rec)
            })
            .collect();
        Members {
            by_id,
            removed: BTreeSet::new(),
            version: 0,
        }
    }

    /// The members a running cluster reported (to a member joining it).
    pub fn from_records(records: &[MemberRecord], removed: &[u64]) -> Members {
        Members {
            by_id: records.iter().map(|r| (r.id, r.clone())).collect(),
            removed: removed.iter().copied().collect(),
            version: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Reads the members bucket of a committed backend state.
    pub fn load(txn: &ReadTxn) -> Result<Members, String> {
        let mut m = Members::default();
        let items = txn.range(Bucket::Members, Bound::Unbounded, Bound::Unbounded, false);
        for item in items {
            let (k, v) = item.map_err(|e| e.to_string())?;
            let id = match k {
                [_, rest @ ..] if rest.len() == 8 => {
                    u64::from_be_bytes(rest.try_into().expect("8 bytes"))
                }
                _ => return Err(format!("a malformed key in the members bucket: {k:?}")),
            };
            match k[0] {
                MEMBER => {
                    let rec = MemberRecord::decode(v)
                        .map_err(|e| format!("member {id:x} does not decode: {e}"))?;
                    m.by_id.insert(id, rec);
                }
                REMOVED => {
                    m.removed.insert(id);
                }
                other => {
                    return Err(format!(
                        "an unknown record kind {other} in the members bucket"
                    ))
                }
            }
        }
        Ok(m)
    }

    /// Writes every member into a write transaction (bootstrap of a fresh data dir).
    pub fn write_all(&self, txn: &mut WriteTxn) -> Result<(), StorageError> {
        for (id, rec) in &self.by_id {
            txn.put(Bucket::Members, &key(MEMBER, *id), &rec.encode_to_vec())?;
        }
        for id in &self.removed {
            txn.put(Bucket::Members, &key(REMOVED, *id), &[])?;
        }
        Ok(())
    }

    /// Applies a member's published attributes; false if it is not a member (then nothing
    /// changes, as in etcd, where a removed member's publish is ignored).
    pub fn apply_attributes(&mut self, a: &MemberAttributes, backend: &mut OverlayBackend) -> bool {
        let Some(rec) = self.by_id.get_mut(&a.id) else {
            return false;
        };
        rec.name = a.name.clone();
        rec.client_urls = a.client_urls.clone();
        backend.put(Bucket::Members, &key(MEMBER, a.id), &rec.encode_to_vec());
        self.version += 1;
        true
    }

    /// Takes the place of `old` (a snapshot replaced the table): its version moves on.
    pub fn replacing(mut self, old: &Members) -> Members {
        self.version = old.version + 1;
        self
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn removed(&self) -> impl Iterator<Item = u64> + '_ {
        self.removed.iter().copied()
    }

    /// Adds a member (a learner or a voter), as a conf change that raft accepted.
    pub fn add(&mut self, rec: MemberRecord, backend: &mut OverlayBackend) {
        backend.put(Bucket::Members, &key(MEMBER, rec.id), &rec.encode_to_vec());
        self.by_id.insert(rec.id, rec);
        self.version += 1;
    }

    /// A learner becomes a voter.
    pub fn promote(&mut self, id: u64, backend: &mut OverlayBackend) {
        if let Some(rec) = self.by_id.get_mut(&id) {
            rec.is_learner = false;
            backend.put(Bucket::Members, &key(MEMBER, id), &rec.encode_to_vec());
            self.version += 1;
        }
    }

    /// Removes a member for good: its ID is remembered as removed, never to come back.
    pub fn remove(&mut self, id: u64, backend: &mut OverlayBackend) {
        if self.by_id.remove(&id).is_some() {
            let _ = backend.delete(Bucket::Members, &key(MEMBER, id));
        }
        backend.put(Bucket::Members, &key(REMOVED, id), &[]);
        self.removed.insert(id);
        self.version += 1;
    }

    /// A member's new peer URLs.
    pub fn update_peer_urls(&mut self, id: u64, urls: &[String], backend: &mut OverlayBackend) {
        if let Some(rec) = self.by_id.get_mut(&id) {
            rec.peer_urls = urls.to_vec();
            backend.put(Bucket::Members, &key(MEMBER, id), &rec.encode_to_vec());
            self.version += 1;
        }
    }

    /// The member (other than `except`) that uses one of `urls` as a peer URL, if any.
    pub fn peer_url_user(&self, urls: &[String], except: u64) -> Option<u64> {
        self.by_id
            .values()
            .find(|m| m.id != except && m.peer_urls.iter().any(|u| urls.contains(u)))
            .map(|m| m.id)
    }

    pub fn learners(&self) -> usize {
        self.by_id.values().filter(|m| m.is_learner).count()
    }

    pub fn get(&self, id: u64) -> Option<&MemberRecord> {
        self.by_id.get(&id)
    }

    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_id.keys().copied()
    }

    pub fn records(&self) -> impl Iterator<Item = &MemberRecord> + '_ {
        self.by_id.values()
    }

    /// The members as etcd's MemberList answers them, sorted by ID.
    pub fn list(&self) -> Vec<pb::Member> {
        self.by_id.values().map(to_pb).collect()
    }
}

pub fn to_pb(r: &MemberRecord) -> pb::Member {
    pb::Member {
        id: r.id,
        name: r.name.clone(),
        peer_ur_ls: r.peer_urls.clone(),
        client_ur_ls: r.client_urls.clone(),
        is_learner: r.is_learner,
    }
}
