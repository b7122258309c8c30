//! Who may talk to this member: the checks both sides of a new peer connection make.

use std::collections::{HashMap, HashSet};

use crate::proto::corekvpb::{MemberRecord, PeerHello, PeerHelloReply};

/// The version of the peer protocol this build speaks.
pub const PROTOCOL: u32 = 1;

/// A member as the transport needs to know it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its peer URLs (an https:// one is dialed with TLS).
    pub urls: Vec<crate::config::Url>,
    /// It has started and published its attributes (so it cannot be new and empty again).
    pub published: bool,
}

/// This member's view of the cluster, kept current by the core loop.
#[derive(Clone, Debug, Default)]
pub struct PeerView {
    pub cluster_id: u64,
    pub member_id: u64,
    pub members: HashMap<u64, PeerInfo>,
    pub removed: HashSet<u64>,
    /// This member started from an empty data dir and has applied nothing yet.
    pub empty: bool,
    /// The members as `member list` shows them, for a joining member's probe.
    pub records: Vec<MemberRecord>,
}

/// A refused connection: the reason, one line, and whether retrying can ever help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub fatal: bool,
}

impl PeerView {
    /// The listener's check of a dialer's hello.
    pub fn check_hello(&self, h: &PeerHello) -> Result<(), Refusal> {
        let refuse = |reason: String, fatal: bool| Err(Refusal { reason, fatal });
        if h.protocol != PROTOCOL {
            return refuse(
                format!(
                    "member {:x} speaks peer protocol {}, this member {PROTOCOL}",
                    h.from, h.protocol
                ),
                true,
            );
        }
        if h.cluster_id != self.cluster_id {
            return refuse(
                format!(
                    "member {:x} belongs to cluster {:x}, this is cluster {:x}",
                    h.from, h.cluster_id, self.cluster_id
                ),
                true,
            );
        }
        if h.to != self.member_id {
            return refuse(
                format!(
                    "member {:x} dialed member {:x}, but this is member {:x}",
                    h.from, h.to, self.member_id
                ),
                false,
            );
        }
        if self.removed.contains(&h.from) {
            return refuse(
                format!("member {:x} was removed from the cluster", h.from),
                true,
            );
        }
        let Some(info) = self.members.get(&h.from) else {
            return refuse(
                format!(
                    "member {:x} is not a member of cluster {:x}",
                    h.from, self.cluster_id
                ),
                false,
            );
        };
        if h.empty && info.published {
            return refuse(lost_data(h.from), true);
        }
        Ok(())
    }

    /// The dialer's check of the listener's reply.
    pub fn check_reply(&self, to: u64, r: &PeerHelloReply) -> Result<(), Refusal> {
        if !r.accepted {
            return Err(Refusal {
                reason: r.refusal.clone(),
                fatal: r.fatal,
            });
        }
        if r.empty && self.members.get(&to).is_some_and(|i| i.published) {
            // The peer is the broken one; this member keeps trying in case it is repaired.
            return Err(Refusal {
                reason: lost_data(to),
                fatal: false,
            });
        }
        Ok(())
    }

    pub fn reply_to(&self, check: &Result<(), Refusal>) -> PeerHelloReply {
        match check {
            Ok(()) => PeerHelloReply {
                accepted: true,
                refusal: String::new(),
                empty: self.empty,
                fatal: false,
            },
            Err(r) => PeerHelloReply {
                accepted: false,
                refusal: r.reason.clone(),
                empty: self.empty,
                fatal: r.fatal,
            },
        }
    }
}

fn lost_data(id: u64) -> String {
    format!(
        "member {id:x} has already been bootstrapped, but it started again from an empty data \
         dir: remove it (member remove {id:x}) and add it again (member add) before starting \
         it with --initial-cluster-state existing"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> PeerView {
        let mut v = PeerView {
            cluster_id: 10,
            member_id: 1,
            ..Default::default()
        };
        v.members.insert(1, PeerInfo::default());
        v.members.insert(
            2,
            PeerInfo {
                urls: vec![],
                published: true,
            },
        );
        v.members.insert(3, PeerInfo::default());
        v.removed.insert(4);
        v
    }

    fn hello(from: u64) -> PeerHello {
        PeerHello {
            protocol: PROTOCOL,
            cluster_id: 10,
            from,
            to: 1,
            stream: 1,
            empty: false,
        }
    }

    #[test]
    fn members_of_this_cluster_are_accepted() {
        assert!(view().check_hello(&hello(2)).is_ok());
        let mut h = hello(3);
        h.empty = true; // never started: a new member may be empty
        assert!(view().check_hello(&h).is_ok());
    }

    #[test]
    fn strangers_are_refused_with_a_reason() {
        let v = view();
        let mut h = hello(2);
        h.cluster_id = 11;
        let r = v.check_hello(&h).unwrap_err();
        assert!(
            r.fatal && r.reason.contains("belongs to cluster b"),
            "{r:?}"
        );
        let r = v.check_hello(&hello(4)).unwrap_err();
        assert!(r.fatal && r.reason.contains("was removed"), "{r:?}");
        let r = v.check_hello(&hello(9)).unwrap_err();
        assert!(!r.fatal && r.reason.contains("not a member"), "{r:?}");
        let mut h = hello(2);
        h.to = 3;
        assert!(!v.check_hello(&h).unwrap_err().fatal);
        let mut h = hello(2);
        h.protocol = 2;
        assert!(v.check_hello(&h).unwrap_err().fatal);
    }

    #[test]
    fn a_started_member_that_comes_back_empty_is_refused_both_ways() {
        let v = view();
        let mut h = hello(2);
        h.empty = true;
        let r = v.check_hello(&h).unwrap_err();
        assert!(r.fatal && r.reason.contains("empty data dir"), "{r:?}");
        let reply = PeerHelloReply {
            accepted: true,
            empty: true,
            ..Default::default()
        };
        assert!(v.check_reply(2, &reply).is_err());
        assert!(v.check_reply(3, &reply).is_ok());
    }
}
