//! Leases: the table every member applies deterministically, and the expiry clock, kept in
//! raft ticks so the consensus core stays free of wall-clock reads.
//!
//! Expiry is decided by the leader alone; it proposes a revoke through raft, so every
//! member deletes the lease's keys at the same revision. Every member keeps counting each
//! lease down from what it applied (the grant, then checkpoints of the remaining TTL), and
//! the leader checkpoints a renewed lease at the next tick, so a new leader knows every
//! deadline to within a tick or two. It adds one election timeout to each (as etcd's
//! promote does), so a lease never expires before its time because leadership moved, and
//! never outlives it by more than an election timeout. Checkpoints are stored, so a
//! restart resumes the countdown instead of granting a fresh TTL (etcd without
//! checkpointing resets it).

use std::collections::{BTreeSet, HashMap, HashSet};

use bytes::Bytes;

/// etcd's MaxLeaseTTL: 9,000,000,000 seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// Checkpoints carried by one proposal, like etcd's maxLeaseCheckpointBatchSize.
const CHECKPOINT_BATCH: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("etcdserver: requested lease not found")]
    NotFound,
    #[error("etcdserver: lease already exists")]
    Exists,
    #[error("etcdserver: too large lease TTL")]
    TtlTooLarge,
    #[error("etcdserver: not leader")]
    NotLeader,
}

#[derive(Debug, Clone)]
pub struct Lease {
    pub id: i64,
    /// The granted TTL in seconds (after raising to the minimum).
    pub ttl: i64,
    /// The last checkpointed remaining TTL in seconds; 0 means none (count from `ttl`).
    pub remaining_ttl: i64,
    pub keys: BTreeSet<Bytes>,
    /// The tick at which the lease expires, as this member counts it.
    deadline: u64,
}

/// What the leader's lease clock wants proposed through raft.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeaseProposals {
    pub revoke: Vec<i64>,
    /// (lease id, remaining TTL in seconds) batches.
    pub checkpoints: Vec<Vec<(i64, i64)>>,
}

impl LeaseProposals {
    pub fn is_empty(&self) -> bool {
        self.revoke.is_empty() && self.checkpoints.is_empty()
    }
}

pub struct Lessor {
    leases: HashMap<i64, Lease>,
    min_ttl: i64,
    ticks_per_sec: u64,
    /// Ticks a new leader adds to every deadline (one election timeout).
    extend: u64,
    now: u64,
    primary: bool,
    /// Expired leases whose revoke was proposed, with the tick it was proposed at.
    revoking: HashMap<i64, u64>,
    checkpoint_every: u64,
    last_checkpoint: u64,
    /// Leases renewed since the last tick: checkpointed at the next one.
    renewed: HashSet<i64>,
}

impl Lessor {
    /// `min_ttl`: the smallest TTL granted, in seconds (etcd: ceil(1.5 × election timeout)).
    /// `ticks_per_sec`: how many raft ticks make a second. `extend`: ticks a new leader adds
    /// to every deadline. `now`: the current tick.
    pub fn new(min_ttl: i64, ticks_per_sec: u64, extend: u64, now: u64) -> Lessor {
        let ticks_per_sec = ticks_per_sec.max(1);
        Lessor {
            leases: HashMap::new(),
            min_ttl,
            ticks_per_sec,
            extend,
            now,
            primary: false,
            revoking: HashMap::new(),
            checkpoint_every: 5 * ticks_per_sec,
            last_checkpoint: 0,
            renewed: HashSet::new(),
        }
    }

    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn exists(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Lease IDs, soonest to expire first (as etcd lists them), ties by ID.
    pub fn ids_by_expiry(&self) -> Vec<i64> {
        let mut ids: Vec<(i64, i64)> = self
            .leases
            .keys()
            .map(|id| (self.remaining_secs(*id).unwrap_or(i64::MAX), *id))
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Applies a grant; returns the TTL actually granted.
    pub fn grant(&mut self, id: i64, ttl: i64) -> Result<i64, LeaseError> {
        if ttl > MAX_LEASE_TTL {
            return Err(LeaseError::TtlTooLarge);
        }
        if id <= 0 {
            return Err(LeaseError::NotFound);
        }
        if self.leases.contains_key(&id) {
            return Err(LeaseError::Exists);
        }
        let ttl = ttl.max(self.min_ttl);
        let deadline = self.now + self.ticks(ttl);
        self.leases.insert(
            id,
            Lease {
                id,
                ttl,
                remaining_ttl: 0,
                keys: BTreeSet::new(),
                deadline,
            },
        );
        Ok(ttl)
    }

    /// Restores a lease read back from the backend (at start-up, or from a snapshot): its
    /// countdown resumes from the last checkpoint.
    pub fn restore(&mut self, id: i64, ttl: i64, remaining_ttl: i64) {
        let left = if remaining_ttl > 0 {
            remaining_ttl
        } else {
            ttl
        };
        let deadline = self.now + self.ticks(left);
        self.leases.insert(
            id,
            Lease {
                id,
                ttl,
                remaining_ttl,
                keys: BTreeSet::new(),
                deadline,
            },
        );
    }

    /// Applies a revoke; returns the keys the caller must delete (in one revision).
    pub fn revoke(&mut self, id: i64) -> Result<Vec<Bytes>, LeaseError> {
        let lease = self.leases.remove(&id).ok_or(LeaseError::NotFound)?;
        self.revoking.remove(&id);
        self.renewed.remove(&id);
        Ok(lease.keys.into_iter().collect())
    }

    pub fn attach(&mut self, id: i64, key: Bytes) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.insert(key);
        }
    }

    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.remove(key);
        }
    }

    /// Applies a checkpoint of the remaining TTL (0 clears it). A follower counts down from
    /// it; the leader, which made it, keeps its own deadline.
    pub fn checkpoint(&mut self, id: i64, remaining_ttl: i64) {
        let now = self.now;
        let per_sec = self.ticks_per_sec;
        if let Some(l) = self.leases.get_mut(&id) {
            l.remaining_ttl = remaining_ttl;
            if !self.primary && remaining_ttl > 0 {
                l.deadline = now + (remaining_ttl as u64).saturating_mul(per_sec);
            }
        }
    }

    fn ticks(&self, secs: i64) -> u64 {
        (secs.max(0) as u64).saturating_mul(self.ticks_per_sec)
    }

    /// Leader only: renews a lease; returns its TTL.
    pub fn renew(&mut self, id: i64) -> Result<i64, LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotLeader);
        }
        let now = self.now;
        let per_sec = self.ticks_per_sec;
        let l = self.leases.get_mut(&id).ok_or(LeaseError::NotFound)?;
        if self.revoking.contains_key(&id) {
            return Err(LeaseError::NotFound);
        }
        l.deadline = now + (l.ttl.max(0) as u64).saturating_mul(per_sec);
        self.renewed.insert(id);
        Ok(l.ttl)
    }

    /// Seconds left before the lease expires, as etcd reports it (truncated).
    pub fn remaining_secs(&self, id: i64) -> Option<i64> {
        let l = self.leases.get(&id)?;
        Some((l.deadline.saturating_sub(self.now) / self.ticks_per_sec) as i64)
    }

    /// Advances the clock. The leader returns what must go through raft: revokes of expired
    /// leases, checkpoints of leases renewed since the last tick, and every few seconds
    /// checkpoints of remaining TTLs that went stale (for restarts).
    pub fn tick(&mut self, now: u64, is_leader: bool) -> LeaseProposals {
        self.now = now;
        if is_leader != self.primary {
            self.primary = is_leader;
            if is_leader {
                self.promote();
            } else {
                self.revoking.clear();
                self.renewed.clear();
            }
        }
        let mut out = LeaseProposals::default();
        if !is_leader {
            return out;
        }
        // Re-propose a revoke that did not come back within a few seconds (leader change).
        let retry_after = 3 * self.ticks_per_sec;
        for l in self.leases.values() {
            if l.deadline > now {
                continue;
            }
            match self.revoking.get(&l.id) {
                Some(&since) if now < since + retry_after => {}
                _ => out.revoke.push(l.id),
            }
        }
        out.revoke.sort_unstable();
        for id in &out.revoke {
            self.revoking.insert(*id, now);
        }
        let left =
            |l: &Lease| ((l.deadline.saturating_sub(now) / self.ticks_per_sec) as i64).max(1);
        let mut cps: Vec<(i64, i64)> = Vec::new();
        for id in self.renewed.drain() {
            if let Some(l) = self.leases.get(&id) {
                if !self.revoking.contains_key(&id) {
                    cps.push((id, left(l)));
                }
            }
        }
        if now >= self.last_checkpoint + self.checkpoint_every {
            self.last_checkpoint = now;
            for l in self.leases.values() {
                if self.revoking.contains_key(&l.id) || cps.iter().any(|(c, _)| *c == l.id) {
                    continue;
                }
                let secs = left(l);
                // Worth a raft entry only when the stored value is stale by a second or more.
                if (l.remaining_ttl == 0 && secs < l.ttl)
                    || (l.remaining_ttl > 0 && secs != l.remaining_ttl)
                {
                    cps.push((l.id, secs));
                }
            }
        }
        cps.sort_unstable();
        out.checkpoints = cps.chunks(CHECKPOINT_BATCH).map(|c| c.to_vec()).collect();
        out
    }

    /// This member became leader: every lease keeps the deadline this member counted, plus
    /// one election timeout (a renewal the old leader had not checkpointed yet is covered).
    fn promote(&mut self) {
        for l in self.leases.values_mut() {
            l.deadline += self.extend;
        }
        self.last_checkpoint = self.now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_grant_raises_ttl_to_the_minimum_and_rejects_duplicates() {
        let mut l = Lessor::new(2, 10, 0, 0);
        assert_eq!(l.grant(1, 1), Ok(2));
        assert_eq!(l.grant(1, 10), Err(LeaseError::Exists));
        assert_eq!(l.grant(2, MAX_LEASE_TTL + 1), Err(LeaseError::TtlTooLarge));
        assert_eq!(l.grant(3, 100), Ok(100));
    }

    #[test]
    fn lease_expires_only_on_the_leader_and_is_proposed_once() {
        let mut l = Lessor::new(1, 10, 0, 0);
        l.tick(100, false);
        l.grant(7, 2).unwrap(); // expires at tick 120
        assert!(l.tick(101, false).is_empty());
        assert!(l.tick(119, true).revoke.is_empty());
        assert!(l.tick(119, false).is_empty(), "a follower proposes nothing");
        assert!(l.tick(120, false).is_empty());
        assert_eq!(l.tick(121, true).revoke, vec![7]);
        assert!(l.tick(122, true).revoke.is_empty(), "proposed twice");
        assert_eq!(
            l.tick(151, true).revoke,
            vec![7],
            "a lost revoke is retried"
        );
        assert_eq!(l.revoke(7), Ok(vec![]));
        assert!(l.tick(152, true).revoke.is_empty());
    }

    #[test]
    fn lease_renew_restarts_the_countdown_and_is_checkpointed_at_the_next_tick() {
        let mut l = Lessor::new(1, 10, 0, 0);
        l.grant(7, 2).unwrap();
        l.tick(0, true);
        l.tick(15, true);
        assert_eq!(l.renew(7), Ok(2));
        assert_eq!(l.remaining_secs(7), Some(2));
        assert_eq!(l.tick(16, true).checkpoints, vec![vec![(7, 1)]]);
        assert!(
            l.tick(17, true).checkpoints.is_empty(),
            "one checkpoint per renewal"
        );
        assert!(l.tick(30, true).revoke.is_empty());
        assert_eq!(l.tick(35, true).revoke, vec![7]);
        assert_eq!(
            l.renew(7),
            Err(LeaseError::NotFound),
            "renewing an expiring lease"
        );
    }

    #[test]
    fn a_new_leader_keeps_the_deadline_the_followers_counted_plus_an_election_timeout() {
        let extend = 10;
        let mut leader = Lessor::new(1, 10, extend, 0);
        let mut follower = Lessor::new(1, 10, extend, 0);
        leader.tick(0, true);
        follower.tick(0, false);
        leader.grant(7, 60).unwrap();
        follower.grant(7, 60).unwrap(); // both count to tick 600
        leader.tick(200, true);
        follower.tick(200, false);
        // Renewed at 20 s: the leader checkpoints 60 s at the next tick, and the follower
        // counts from when it applies that.
        leader.renew(7).unwrap();
        let p = leader.tick(201, true);
        assert_eq!(p.checkpoints, vec![vec![(7, 59)]]);
        follower.tick(202, false);
        for (id, left) in &p.checkpoints[0] {
            follower.checkpoint(*id, *left);
        }
        // The leader dies; the follower takes over at 30 s.
        follower.tick(300, true);
        let remaining = follower.remaining_secs(7).unwrap();
        // The lease was renewed at 20 s for 60 s: it must live until 80 s (50 s from now),
        // and not beyond 80 s plus one election timeout (1 s here).
        assert!((50..=51).contains(&remaining), "{remaining}");
        assert!(follower.tick(801, true).revoke.is_empty());
        assert_eq!(follower.tick(803, true).revoke, vec![7]);
    }

    #[test]
    fn a_restart_resumes_the_countdown_from_the_stored_checkpoint() {
        let mut l = Lessor::new(1, 10, 10, 0);
        l.restore(7, 60, 40);
        l.restore(8, 60, 0);
        assert_eq!(l.remaining_secs(7), Some(40));
        assert_eq!(l.remaining_secs(8), Some(60));
    }

    #[test]
    fn lease_revoke_returns_attached_keys() {
        let mut l = Lessor::new(1, 10, 0, 0);
        l.grant(7, 10).unwrap();
        l.attach(7, Bytes::from_static(b"b"));
        l.attach(7, Bytes::from_static(b"a"));
        l.detach(7, b"b");
        assert_eq!(l.revoke(7), Ok(vec![Bytes::from_static(b"a")]));
        assert_eq!(l.revoke(7), Err(LeaseError::NotFound));
    }
}
