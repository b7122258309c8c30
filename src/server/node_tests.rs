//! The consensus core driven by a simulated disk: no I/O, no clock, deterministic.

use bytes::Bytes;

use super::message::{Reply, ReplyTo, Request, Response};
use super::node::{Node, NodeConfig, Output};
use super::raft_log::RaftLog;
use super::toy::ToyState;
use crate::proto::etcdserverpb as pb;

/// A member `id` of cluster 7 with the timings most tests use.
fn toy_config(id: u64) -> NodeConfig {
    NodeConfig {
        id,
        cluster_id: 7,
        election_tick: 10,
        heartbeat_tick: 1,
        request_timeout_ticks: 70,
        health_interval_ticks: 100,
        first_batch_id: 1,
        first_lease_id: 1,
        name: "toy".into(),
        client_urls: vec![],
        version: "3.4.0".into(),
        initial_corrupt_check: false,
        corrupt_check_ticks: 0,
    }
}

fn single_node() -> Node<ToyState> {
    let cfg = toy_config(1);
    let log = RaftLog::new(raft::eraftpb::ConfState::from((vec![1], vec![])));
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut node = Node::new(cfg, log, ToyState::default(), &logger).unwrap();
    node.campaign().unwrap();
    node
}

/// Processes the node, making every persist durable at once, until it settles.
fn settle(node: &mut Node<ToyState>) -> Vec<(ReplyTo, Reply)> {
    let mut replies = Vec::new();
    loop {
        node.process();
        let Output {
            replies: r,
            persist,
            ..
        } = node.take_output();
        replies.extend(r);
        let Some(last) = persist.last().map(|p| p.number) else {
            break;
        };
        node.on_persisted(last);
    }
    replies
}

fn put(key: &str, value: &str) -> Request {
    Request::Put(pb::PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..Default::default()
    })
}

fn to(token: u64) -> ReplyTo {
    ReplyTo { executor: 0, token }
}

#[test]
fn single_member_commits_a_batch_of_writes_in_one_entry() {
    let mut node = single_node();
    settle(&mut node);
    assert!(node.is_leader());
    let before = node.raft_log().hard_state().commit;
    for i in 0..10 {
        node.submit(put(&format!("k{i}"), "v"), to(i));
    }
    let replies = settle(&mut node);
    assert_eq!(replies.len(), 10);
    let mut tokens: Vec<u64> = replies.iter().map(|(t, _)| t.token).collect();
    tokens.sort();
    assert_eq!(tokens, (0..10).collect::<Vec<_>>());
    for (_, r) in &replies {
        let Ok(Response::Put(p)) = r else {
            panic!("{r:?}")
        };
        let h = p.header.as_ref().unwrap();
        assert_eq!((h.cluster_id, h.member_id), (7, 1));
    }
    assert_eq!(node.raft_log().hard_state().commit, before + 1);
    assert_eq!(node.state_machine().kv.len(), 10);
}

#[test]
fn writes_wait_for_the_disk_before_they_are_acknowledged() {
    let mut node = single_node();
    settle(&mut node);
    node.submit(put("a", "1"), to(1));
    node.process();
    let out = node.take_output();
    assert!(out.replies.is_empty(), "acknowledged before the WAL fsync");
    assert_eq!(out.persist.len(), 1);
    assert_eq!(node.state_machine().kv.len(), 0);
    node.on_persisted(out.persist[0].number);
    let replies = settle(&mut node);
    assert_eq!(replies.len(), 1);
    assert_eq!(node.state_machine().kv.len(), 1);
}

#[test]
fn a_linearizable_read_sees_writes_acknowledged_before_it() {
    let mut node = single_node();
    settle(&mut node);
    node.submit(put("a", "1"), to(1));
    settle(&mut node);
    node.submit(
        Request::Range(pb::RangeRequest {
            key: Bytes::from_static(b"a"),
            ..Default::default()
        }),
        to(2),
    );
    let replies = settle(&mut node);
    assert_eq!(replies.len(), 1);
    let Ok(Response::Range(r)) = &replies[0].1 else {
        panic!()
    };
    assert_eq!(r.kvs[0].value, Bytes::from_static(b"1"));
}

#[test]
fn requests_time_out_when_raft_cannot_serve_them() {
    // A member of a 3-voter cluster whose peers never answer has no leader.
    let cfg = NodeConfig {
        request_timeout_ticks: 5,
        ..toy_config(1)
    };
    let log = RaftLog::new(raft::eraftpb::ConfState::from((vec![1, 2, 3], vec![])));
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut node = Node::new(cfg, log, ToyState::default(), &logger).unwrap();
    node.submit(put("a", "1"), to(1));
    settle(&mut node);
    let mut replies = Vec::new();
    for _ in 0..6 {
        node.tick();
        replies.extend(settle(&mut node));
    }
    assert_eq!(replies.len(), 1);
    let Err(s) = &replies[0].1 else { panic!() };
    assert_eq!(s.message, "etcdserver: no leader");
}

#[test]
fn status_reports_raft_progress() {
    let mut node = single_node();
    settle(&mut node);
    node.submit(put("a", "1"), to(1));
    settle(&mut node);
    node.submit(Request::Status(pb::StatusRequest {}), to(2));
    let replies = settle(&mut node);
    let Ok(Response::Status(s)) = &replies[0].1 else {
        panic!()
    };
    assert_eq!(s.leader, 1);
    assert_eq!(s.raft_index, s.raft_applied_index);
    assert!(s.raft_term >= 1);
}

#[test]
fn a_ready_with_nothing_to_write_does_not_vouch_for_an_earlier_one_in_flight() {
    let mut node = single_node();
    settle(&mut node);
    node.submit(put("a", "1"), to(1));
    node.process();
    let first = node.take_output();
    assert_eq!(first.persist.len(), 1, "the put's entry must be written");
    // More Readys while that write is in flight: a read, ticks. None of them may let raft
    // count the entry as durable.
    node.submit(
        Request::Range(pb::RangeRequest {
            key: Bytes::from_static(b"a"),
            ..Default::default()
        }),
        to(2),
    );
    for _ in 0..3 {
        node.tick();
        node.process();
    }
    let out = node.take_output();
    assert!(
        out.replies.iter().all(|(t, _)| t.token != 1),
        "the put was acknowledged before its WAL write finished"
    );
    assert_eq!(node.state_machine().kv.len(), 0, "applied before durable");
    node.on_persisted(first.persist[0].number);
    let replies = settle(&mut node);
    assert!(replies.iter().any(|(t, _)| t.token == 1));
    assert_eq!(node.state_machine().kv.len(), 1);
}

/// A crash at a random moment, with the WAL's writes finishing one by one in order: after a
/// restart from what was durable, every acknowledged write is there. Deterministic: seeded.
#[test]
fn seeded_crash_simulation_keeps_every_acknowledged_write() {
    use super::wal_records;

    for seed in 1..=40u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        // The disk: records made durable, in order, and writes still in flight.
        let mut durable: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut acked: Vec<(String, String)> = Vec::new();
        let mut node = single_node();
        let mut in_flight: std::collections::VecDeque<super::node::Persist> = Default::default();
        let mut token = 0u64;
        let steps = 60 + next(60);
        for _ in 0..steps {
            match next(10) {
                0..=3 => {
                    token += 1;
                    node.submit(put(&format!("k{token}"), &format!("v{token}")), to(token));
                }
                4 => node.submit(
                    Request::Range(pb::RangeRequest {
                        key: Bytes::from_static(b"k1"),
                        ..Default::default()
                    }),
                    to(0),
                ),
                5 => node.tick(),
                _ => {
                    // The oldest write in flight becomes durable.
                    if let Some(p) = in_flight.pop_front() {
                        durable.extend(wal_records::encode_persist(&p));
                        node.on_persisted(p.number);
                    }
                }
            }
            node.process();
            let out = node.take_output();
            in_flight.extend(out.persist);
            for (t, reply) in out.replies {
                if t.token > 0 && reply.is_ok() {
                    acked.push((format!("k{}", t.token), format!("v{}", t.token)));
                }
            }
        }
        // Crash: what was in flight is lost. Restart from the durable records.
        let records: Vec<wal::Record> = durable
            .iter()
            .enumerate()
            .map(|(i, (t, b))| wal::Record {
                record_type: *t,
                payload: b.clone(),
                position: wal::Position::from_lsn(i as u64),
            })
            .collect();
        let conf = raft::eraftpb::ConfState::from((vec![1], vec![]));
        let log = wal_records::recover_raft_log(&records, conf).unwrap();
        let cfg = NodeConfig {
            first_batch_id: 1_000_000,
            ..toy_config(1)
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node = Node::new(cfg, log, ToyState::default(), &logger).unwrap();
        node.campaign().unwrap();
        settle(&mut node);
        // A new leader commits its earlier entries with its first entry of the new term.
        node.submit(put("after", "restart"), to(u64::MAX));
        settle(&mut node);
        for (k, v) in &acked {
            let got = node.state_machine().kv.get(k.as_bytes());
            assert_eq!(
                got.map(|b| b.as_ref()),
                Some(v.as_bytes()),
                "seed {seed}: acknowledged {k} lost"
            );
        }
    }
}

#[test]
fn an_answer_deferred_to_background_work_goes_out_when_that_work_ends() {
    let mut node = single_node();
    settle(&mut node);
    node.submit(
        Request::Compact(pb::CompactionRequest {
            revision: 1,
            physical: true,
        }),
        to(1),
    );
    node.submit(put("a", "1"), to(2));
    let replies = settle(&mut node);
    let tokens: Vec<u64> = replies.iter().map(|(t, _)| t.token).collect();
    assert_eq!(tokens, vec![2], "the put is answered, the compaction waits");
    assert!(node.has_background_work());
    for _ in 0..2 {
        node.background_step();
        assert!(node.take_output().replies.is_empty());
    }
    node.background_step();
    assert!(!node.has_background_work());
    let out = node.take_output();
    assert_eq!(out.replies.len(), 1);
    let (t, reply) = &out.replies[0];
    assert_eq!(t.token, 1);
    let Ok(Response::Compact(resp)) = reply else {
        panic!("{reply:?}");
    };
    let h = resp.header.as_ref().expect("header filled");
    assert_eq!((h.cluster_id, h.member_id), (7, 1));
}

#[test]
fn a_follower_told_it_acknowledged_entries_it_does_not_have_stops_instead_of_panicking() {
    // A member of a 3-voter cluster whose data dir was wiped: the leader's heartbeat commits
    // up to what the member acknowledged before.
    let cfg = toy_config(2);
    let log = RaftLog::new(raft::eraftpb::ConfState::from((vec![1, 2, 3], vec![])));
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut node = Node::new(cfg, log, ToyState::default(), &logger).unwrap();
    let mut hb = raft::eraftpb::Message::default();
    hb.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    hb.from = 1;
    hb.to = 2;
    hb.term = 3;
    hb.commit = 5;
    node.step(hb);
    settle(&mut node);
    let why = node.fatal().expect("the member must stop");
    assert!(
        why.contains("lost its data") && why.contains("member remove 2"),
        "{why}"
    );
}

#[test]
fn a_member_add_waits_until_every_voter_has_been_connected_for_the_health_interval() {
    // Two started voters; this member (1) has no leader, so a change that passes etcd's
    // checks ends in "no leader", and one that does not, in "unhealthy cluster".
    let cfg = NodeConfig {
        election_tick: 1000,
        request_timeout_ticks: 5,
        health_interval_ticks: 10,
        ..toy_config(1)
    };
    let log = RaftLog::new(raft::eraftpb::ConfState::from((vec![1, 2], vec![])));
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut state = ToyState::default();
    for id in [1, 2] {
        state.members.push(pb::Member {
            id,
            name: format!("m{id}"),
            peer_ur_ls: vec![format!("http://10.0.0.{id}:2380")],
            client_ur_ls: vec![format!("http://10.0.0.{id}:2379")],
            is_learner: false,
        });
    }
    let mut node = Node::new(cfg, log, state, &logger).unwrap();
    let mut token = 0;
    let mut add = |node: &mut Node<ToyState>| {
        token += 1;
        let req = Request::MemberAdd(super::message::MemberAdd {
            request: pb::MemberAddRequest {
                peer_ur_ls: vec!["http://10.0.0.3:2380".into()],
                is_learner: false,
            },
            unix_time: 1,
        });
        node.submit(req, to(token));
        let replies = settle(node);
        match &replies[..] {
            [(_, Err(s))] => s.message.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(add(&mut node), "etcdserver: unhealthy cluster");
    node.peer_connected(2, true);
    assert_eq!(add(&mut node), "etcdserver: unhealthy cluster");
    for _ in 0..10 {
        node.tick();
        settle(&mut node);
    }
    assert_eq!(add(&mut node), "etcdserver: no leader", "checks passed");
    node.peer_connected(2, false);
    assert_eq!(add(&mut node), "etcdserver: unhealthy cluster");
}
