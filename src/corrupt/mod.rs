//! Corruption checks across members, as etcd 3.4's `corrupt.go`: members compare their
//! HashKV (the hash of the key bucket up to a revision) with each other's.
//!
//! - `--experimental-initial-corrupt-check`: a member that restarts with data asks every
//!   peer for the hash at its own revision before it serves clients, and stops with
//!   "found data inconsistency with peers" if a peer at the same compaction point has
//!   another hash ([`initial_verdict`], etcd's `CheckInitialHashKV`).
//! - `--experimental-corrupt-check-time`: the leader asks every member for the hash at its
//!   own revision, hashes again once its applied state is as new as anything a follower may
//!   have applied, and raises the CORRUPT alarm on any disagreement ([`periodic_verdict`],
//!   etcd's `checkHashKV`).
//!
//! This module decides; it does no I/O and reads no clock. The consensus core
//! (`server::node`) asks the peers over the peer transport and counts time in raft ticks.

use std::collections::BTreeMap;

use crate::net::grpc::Status;
use crate::proto::etcdserverpb as pb;

/// etcd's error for a request refused under the CORRUPT alarm (rpctypes.ErrGRPCCorrupt,
/// codes.DataLoss).
pub const CORRUPT_CLUSTER: &str = "etcdserver: corrupt cluster";

/// The hash of one member's key bucket: (hash, revision it was taken at, compact revision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The member's current revision when it hashed (HashKV's header revision).
    pub revision: i64,
    pub compact_revision: i64,
}

impl KvHash {
    pub fn from_response(r: &pb::HashKvResponse) -> KvHash {
        KvHash {
            hash: r.hash,
            revision: r.header.as_ref().map_or(0, |h| h.revision),
            compact_revision: r.compact_revision,
        }
    }
}

/// What one peer answered.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerHash {
    Hash(KvHash),
    /// It could not hash at the asked revision (compacted, future) or failed otherwise.
    Error(String),
    /// No answer before the deadline (down, partitioned, slow).
    NoAnswer,
}

impl PeerHash {
    pub fn from_reply(r: Result<pb::HashKvResponse, Status>) -> PeerHash {
        match r {
            Ok(r) => PeerHash::Hash(KvHash::from_response(&r)),
            Err(s) => PeerHash::Error(s.message),
        }
    }
}

/// One round of asking the peers, until each answered or the deadline (in ticks).
#[derive(Clone, Debug)]
pub struct Round {
    /// This member's hash when the round began; the peers hash at its revision.
    pub local: KvHash,
    pub answers: BTreeMap<u64, PeerHash>,
    pub deadline: u64,
}

impl Round {
    pub fn new(local: KvHash, peers: &[u64], deadline: u64) -> Round {
        Round {
            local,
            answers: peers.iter().map(|&p| (p, PeerHash::NoAnswer)).collect(),
            deadline,
        }
    }

    /// Records `peer`'s answer; false if the round did not ask it (a stale answer).
    pub fn answer(&mut self, peer: u64, hash: PeerHash) -> bool {
        match self.answers.get_mut(&peer) {
            Some(slot @ PeerHash::NoAnswer) => {
                *slot = hash;
                true
            }
            _ => false,
        }
    }

    /// Every peer answered, or time is up.
    pub fn is_done(&self, now: u64) -> bool {
        now >= self.deadline || !self.answers.values().any(|a| *a == PeerHash::NoAnswer)
    }
}

/// The outcome of a check: what to log, and whether the data differ.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// Disagreements: each means the data of some member differ.
    pub mismatches: Vec<String>,
    /// Peers that could not be compared, and why (logged, not fatal).
    pub skipped: Vec<String>,
    pub checked: usize,
}

/// etcd's CheckInitialHashKV: a mismatch only when a peer hashed at this member's revision
/// with the same compact revision and got another hash; peers that were unreachable, behind
/// (future revision), past it (compacted) or at another compaction point are skipped.
pub fn initial_verdict(round: &Round) -> Verdict {
    let local = round.local;
    let mut v = Verdict::default();
    for (&id, answer) in &round.answers {
        match answer {
            PeerHash::Hash(p) => {
                v.checked += 1;
                if p.hash == local.hash {
                    continue;
                }
                if p.compact_revision == local.compact_revision {
                    v.mismatches.push(format!(
                        "member {id:x} has hash {} at revision {} (its revision {}, compact \
                         revision {}); this member has {}",
                        p.hash, local.revision, p.revision, p.compact_revision, local.hash
                    ));
                } else {
                    v.skipped.push(format!(
                        "member {id:x} has a different compact revision {} (this member {})",
                        p.compact_revision, local.compact_revision
                    ));
                }
            }
            PeerHash::Error(e) => v.skipped.push(format!(
                "member {id:x} cannot hash at revision {}: {e}",
                local.revision
            )),
            PeerHash::NoAnswer => v.skipped.push(format!("member {id:x} did not answer")),
        }
    }
    v
}

/// etcd's checkHashKV, on the leader: `first` is its hash when it asked the peers (at whose
/// revision they hashed), `second` its hash once its applied state caught up with a
/// linearizable read. Mismatches: its own two hashes differ at the same revision and
/// compaction; a follower is at a newer revision or compaction than the leader (the leader
/// has applied everything a follower can have); a follower at the leader's first compact
/// revision has another hash.
pub fn periodic_verdict(round: &Round, second: KvHash) -> Verdict {
    let first = round.local;
    let mut v = Verdict::default();
    if first.hash != second.hash
        && first.revision == second.revision
        && first.compact_revision == second.compact_revision
    {
        v.mismatches.push(format!(
            "this member's hash changed from {} to {} at revision {} (compact revision {})",
            first.hash, second.hash, first.revision, first.compact_revision
        ));
    }
    for (&id, answer) in &round.answers {
        let p = match answer {
            PeerHash::Hash(p) => p,
            PeerHash::Error(e) => {
                v.skipped.push(format!(
                    "member {id:x} cannot hash at revision {}: {e}",
                    first.revision
                ));
                continue;
            }
            PeerHash::NoAnswer => {
                v.skipped.push(format!("member {id:x} did not answer"));
                continue;
            }
        };
        v.checked += 1;
        if p.revision > second.revision {
            v.mismatches.push(format!(
                "member {id:x} is at revision {}, past the leader's {}",
                p.revision, second.revision
            ));
        }
        if p.compact_revision > second.compact_revision {
            v.mismatches.push(format!(
                "member {id:x} has compact revision {}, past the leader's {}",
                p.compact_revision, second.compact_revision
            ));
        }
        if p.compact_revision == first.compact_revision && p.hash != first.hash {
            v.mismatches.push(format!(
                "member {id:x} has hash {} at revision {}, the leader {}",
                p.hash, first.revision, first.hash
            ));
        }
    }
    v
}

/// The alarm the leader raises on a mismatch. etcd 3.4.23 raises it for member 0: a
/// mismatch between two members does not tell which one is wrong (etcd PR 14828).
pub fn corrupt_alarm() -> pb::AlarmRequest {
    pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Activate as i32,
        member_id: 0,
        alarm: pb::AlarmType::Corrupt as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hash: u32, revision: i64, compact_revision: i64) -> KvHash {
        KvHash {
            hash,
            revision,
            compact_revision,
        }
    }

    fn round(local: KvHash, answers: &[(u64, PeerHash)]) -> Round {
        let ids: Vec<u64> = answers.iter().map(|(id, _)| *id).collect();
        let mut r = Round::new(local, &ids, 10);
        for (id, a) in answers {
            if *a != PeerHash::NoAnswer {
                assert!(r.answer(*id, a.clone()));
            }
        }
        r
    }

    #[test]
    fn initial_check_refuses_only_a_different_hash_at_the_same_compaction() {
        let local = h(7, 10, 0);
        let ok = round(
            local,
            &[
                (2, PeerHash::Hash(h(7, 12, 0))),
                // Another compaction point: not comparable, skipped.
                (3, PeerHash::Hash(h(9, 12, 5))),
                (4, PeerHash::Error("future revision".into())),
                (5, PeerHash::NoAnswer),
            ],
        );
        let v = initial_verdict(&ok);
        assert!(v.mismatches.is_empty(), "{v:?}");
        assert_eq!((v.checked, v.skipped.len()), (2, 3));
        let bad = round(local, &[(2, PeerHash::Hash(h(8, 10, 0)))]);
        assert_eq!(initial_verdict(&bad).mismatches.len(), 1);
    }

    #[test]
    fn periodic_check_follows_etcd_rules() {
        let first = h(7, 10, 3);
        let same = round(first, &[(2, PeerHash::Hash(h(7, 10, 3)))]);
        assert!(periodic_verdict(&same, h(8, 11, 3)).mismatches.is_empty());
        // The leader's own hash changed without a new revision.
        assert_eq!(periodic_verdict(&same, h(8, 10, 3)).mismatches.len(), 1);
        // A follower ahead of the leader, or compacted further.
        let ahead = round(first, &[(2, PeerHash::Hash(h(7, 12, 3)))]);
        assert_eq!(periodic_verdict(&ahead, h(7, 11, 3)).mismatches.len(), 1);
        let compacted = round(first, &[(2, PeerHash::Hash(h(1, 10, 4)))]);
        assert_eq!(
            periodic_verdict(&compacted, h(7, 10, 3)).mismatches.len(),
            1
        );
        // Same compaction, another hash.
        let differs = round(first, &[(2, PeerHash::Hash(h(9, 10, 3)))]);
        assert_eq!(periodic_verdict(&differs, h(7, 10, 3)).mismatches.len(), 1);
        // Errors and silence are skipped.
        let quiet = round(
            first,
            &[(2, PeerHash::Error("x".into())), (3, PeerHash::NoAnswer)],
        );
        let v = periodic_verdict(&quiet, first);
        assert!(v.mismatches.is_empty());
        assert_eq!(v.skipped.len(), 2);
    }

    #[test]
    fn a_round_takes_each_peer_once_and_ends_when_all_answered() {
        let mut r = Round::new(h(1, 2, 0), &[2, 3], 5);
        assert!(!r.is_done(0));
        assert!(r.answer(2, PeerHash::Error("e".into())));
        assert!(!r.answer(2, PeerHash::Error("again".into())));
        assert!(!r.answer(9, PeerHash::Error("not asked".into())));
        assert!(!r.is_done(4));
        assert!(r.is_done(5));
        assert!(r.answer(3, PeerHash::Hash(h(1, 2, 0))));
        assert!(r.is_done(0));
    }
}
