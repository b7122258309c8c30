//! A small state machine for tests of the consensus core: the latest value per key, a
//! revision counter, a static members list; snapshots are copies of the whole state.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft::eraftpb::{ConfState, SnapshotMetadata};

use super::message::{Reply, Request, Response};
use super::node::{MemberChange, StateMachine, StateSnapshot};
use crate::net::grpc::Status;
use crate::proto::corekvpb::{raft_request, RaftRequest};
use crate::proto::etcdserverpb as pb;

/// The whole toy state, as a snapshot carries it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToyData {
    pub kv: BTreeMap<Bytes, Bytes>,
    pub revision: i64,
    pub applied: u64,
    pub conf_state: ConfState,
}

/// A state machine that keeps the latest value per key and counts revisions.
/// A compaction takes three background steps; its answer waits for them.
#[derive(Default)]
pub struct ToyState {
    pub kv: BTreeMap<Bytes, Bytes>,
    pub revision: i64,
    pub applied: u64,
    pub conf_state: ConfState,
    pub members: Vec<pb::Member>,
    /// Every write applied, in order: (raft index, key, value).
    pub history: Vec<(u64, Bytes, Bytes)>,
    /// When set, a follower that needs a snapshot gets this copy (the cluster simulation's
    /// durable backend, as the real backend streams its last commit) instead of the
    /// applied state.
    pub durable: Option<ToyData>,
    /// The data the last [`StateMachine::restore`] installed, for the simulation to make
    /// it its durable backend (the real backend moves the received file into place).
    pub installed: Option<ToyData>,
    compaction_steps_left: u32,
    compaction_waiters: Vec<u64>,
    next_ticket: u64,
    deferred_now: Option<u64>,
}

impl ToyState {
    /// A copy of the state as it is now.
    pub fn data(&self) -> ToyData {
        ToyData {
            kv: self.kv.clone(),
            revision: self.revision,
            applied: self.applied,
            conf_state: self.conf_state.clone(),
        }
    }

    /// A state machine that starts from `data` (a restart from durable state).
    pub fn from_data(data: ToyData, members: Vec<pb::Member>) -> ToyState {
        ToyState {
            kv: data.kv,
            revision: data.revision,
            applied: data.applied,
            conf_state: data.conf_state,
            members,
            ..Default::default()
        }
    }
}

impl StateMachine for ToyState {
    type Snapshot = ToyData;
    type Received = ToyData;

    fn apply(&mut self, index: u64, req: RaftRequest) -> Reply {
        match req.request {
            Some(raft_request::Request::Put(p)) => {
                self.revision += 1;
                self.history.push((index, p.key.clone(), p.value.clone()));
                self.kv.insert(p.key, p.value);
                Ok(Response::Put(pb::PutResponse {
                    header: Some(pb::ResponseHeader {
                        revision: self.revision + 1,
                        ..Default::default()
                    }),
                    ..Default::default()
                }))
            }
            Some(raft_request::Request::Compaction(_)) => {
                self.compaction_steps_left = 3;
                self.compaction_waiters.push(self.next_ticket);
                self.deferred_now = Some(self.next_ticket);
                self.next_ticket += 1;
                Ok(Response::Compact(pb::CompactionResponse::default()))
            }
            Some(raft_request::Request::MemberAttributes(a)) => {
                if let Some(m) = self.members.iter_mut().find(|m| m.id == a.id) {
                    m.name = a.name;
                    m.client_ur_ls = a.client_urls;
                }
                Ok(Response::MemberList(pb::MemberListResponse::default()))
            }
            _ => Err(Status::unimplemented("toy")),
        }
    }
    fn defer_last_reply(&mut self) -> Option<u64> {
        self.deferred_now.take()
    }
    fn has_background_work(&self) -> bool {
        self.compaction_steps_left > 0
    }
    fn background_step(&mut self) -> Vec<(u64, Reply)> {
        self.compaction_steps_left -= 1;
        if self.compaction_steps_left > 0 {
            return Vec::new();
        }
        self.compaction_waiters
            .drain(..)
            .map(|t| (t, Ok(Response::Compact(pb::CompactionResponse::default()))))
            .collect()
    }
    fn read(&mut self, req: Request) -> Reply {
        let r = match req {
            Request::Range(r) => r,
            // Answers with the lease asked about, so a caller can tell whose answer it got.
            Request::LeaseTimeToLive(r) => {
                return Ok(Response::LeaseTimeToLive(pb::LeaseTimeToLiveResponse {
                    id: r.id,
                    ttl: -1,
                    ..Default::default()
                }))
            }
            _ => return Err(Status::unimplemented("toy")),
        };
        let kvs = self
            .kv
            .get(&r.key)
            .map(|v| crate::proto::mvccpb::KeyValue {
                key: r.key.clone(),
                value: v.clone(),
                ..Default::default()
            })
            .into_iter()
            .collect::<Vec<_>>();
        Ok(Response::Range(pb::RangeResponse {
            count: kvs.len() as i64,
            kvs,
            ..Default::default()
        }))
    }
    fn set_applied_index(&mut self, index: u64) {
        self.applied = index;
    }
    fn applied_index(&self) -> u64 {
        self.applied
    }
    fn db_size(&self) -> (i64, i64) {
        (0, 0)
    }
    fn revision(&self) -> i64 {
        self.revision + 1
    }
    fn members(&self) -> Vec<pb::Member> {
        self.members.clone()
    }
    fn member(&self, id: u64) -> Option<pb::Member> {
        self.members.iter().find(|m| m.id == id).cloned()
    }
    fn set_conf_state(&mut self, conf_state: &ConfState) {
        self.conf_state = conf_state.clone();
    }
    fn check_member_change(&self, change: &MemberChange) -> Result<(), Status> {
        let exists = self.members.iter().any(|m| m.id == change.id());
        match change {
            MemberChange::Add(_) if exists => Err(Status::invalid_argument("exists")),
            MemberChange::Add(_) => Ok(()),
            _ if !exists => Err(Status::invalid_argument("not found")),
            _ => Ok(()),
        }
    }
    fn apply_member_change(&mut self, change: &MemberChange) {
        match change {
            MemberChange::Add(m) => self.members.push(super::members::to_pb(m)),
            MemberChange::Promote(id) => {
                if let Some(m) = self.members.iter_mut().find(|m| m.id == *id) {
                    m.is_learner = false;
                }
            }
            MemberChange::Remove(id) => self.members.retain(|m| m.id != *id),
        }
    }
    fn snapshot(&mut self) -> Result<StateSnapshot<ToyData>, String> {
        if let Some(d) = &self.durable {
            return Ok(StateSnapshot {
                index: d.applied,
                conf_state: d.conf_state.clone(),
                data: d.clone(),
            });
        }
        Ok(StateSnapshot {
            index: self.applied,
            conf_state: self.conf_state.clone(),
            data: self.data(),
        })
    }
    fn restore(&mut self, meta: &SnapshotMetadata, data: ToyData) -> Result<(), String> {
        if data.applied != meta.index {
            return Err(format!(
                "the snapshot data is at {}, its metadata at {}",
                data.applied, meta.index
            ));
        }
        self.installed = Some(data.clone());
        self.kv = data.kv;
        self.revision = data.revision;
        self.applied = data.applied;
        self.conf_state = data.conf_state;
        self.history.clear();
        Ok(())
    }
}
