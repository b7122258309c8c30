//! Seeded random sequences of puts, deletes, ranges, txns and compactions, sent to a real
//! etcd and to corekv; every response must match (revisions, kvs with create/mod revision
//! and version, more, count, prev_kvs, txn branches, errors), apart from the cluster and
//! member IDs and the raft term in the headers.

mod common;

use bytes::Bytes;
use common::{Kind, Server};
use corekv::client::{run_local, Client, ClientError, ClientOptions};
use corekv::proto::etcdserverpb as pb;

/// xorshift64*: small, seeded, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const KEYS: &[&str] = &[
    "a", "ab", "abc", "b", "ba", "c", "cat", "d", "k1", "k2", "k3", "z",
];

fn key(r: &mut Rng) -> Bytes {
    Bytes::from_static(KEYS[r.below(KEYS.len() as u64) as usize].as_bytes())
}

fn value(r: &mut Rng) -> Bytes {
    Bytes::from(format!("v{}", r.below(1000)))
}

/// A key range: one key, a prefix, from-key, all keys, or [a, b).
fn range_of(r: &mut Rng) -> (Bytes, Bytes) {
    let k = key(r);
    match r.below(5) {
        0 => (k, Bytes::new()),
        1 => {
            let mut end = k.to_vec();
            *end.last_mut().unwrap() += 1;
            (k, Bytes::from(end))
        }
        2 => (k, Bytes::from_static(b"\0")),
        3 => (Bytes::from_static(b"\0"), Bytes::from_static(b"\0")),
        _ => {
            let other = key(r);
            if other > k {
                (k, other)
            } else {
                (other, k)
            }
        }
    }
}

/// `r.below(bound)` with `percent`% chance, else 0 (the field left unset).
fn sometimes_below(r: &mut Rng, percent: u64, bound: u64) -> i64 {
    if r.chance(percent) {
        r.below(bound) as i64
    } else {
        0
    }
}

fn range_req(r: &mut Rng, rev_hi: i64) -> pb::RangeRequest {
    let (key, range_end) = range_of(r);
    let rev_hi = rev_hi as u64;
    pb::RangeRequest {
        key,
        range_end,
        limit: sometimes_below(r, 30, 4),
        revision: sometimes_below(r, 30, rev_hi + 3),
        sort_order: r.below(3) as i32,
        sort_target: r.below(5) as i32,
        serializable: r.chance(30),
        keys_only: r.chance(20),
        count_only: r.chance(10),
        min_mod_revision: sometimes_below(r, 10, rev_hi),
        max_mod_revision: sometimes_below(r, 10, rev_hi),
        min_create_revision: sometimes_below(r, 10, rev_hi),
        max_create_revision: sometimes_below(r, 10, rev_hi),
    }
}

fn put_req(r: &mut Rng) -> pb::PutRequest {
    pb::PutRequest {
        key: key(r),
        value: value(r),
        prev_kv: r.chance(50),
        ignore_value: false,
        ..Default::default()
    }
}

fn delete_req(r: &mut Rng) -> pb::DeleteRangeRequest {
    let (key, range_end) = range_of(r);
    pb::DeleteRangeRequest {
        key,
        range_end,
        prev_kv: r.chance(50),
    }
}

fn compare(r: &mut Rng, rev_hi: i64) -> pb::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let target = r.below(4) as i32;
    let number = r.below(rev_hi as u64 + 2) as i64;
    let target_union = Some(match CompareTarget::try_from(target).unwrap() {
        CompareTarget::Version => TargetUnion::Version(r.below(4) as i64),
        CompareTarget::Create => TargetUnion::CreateRevision(number),
        CompareTarget::Mod => TargetUnion::ModRevision(number),
        _ => TargetUnion::Value(value(r)),
    });
    let (key, range_end) = if r.chance(20) {
        range_of(r)
    } else {
        (key(r), Bytes::new())
    };
    pb::Compare {
        result: [
            CompareResult::Equal,
            CompareResult::Greater,
            CompareResult::Less,
            CompareResult::NotEqual,
        ][r.below(4) as usize] as i32,
        target,
        key,
        range_end,
        target_union,
    }
}

fn ops(r: &mut Rng, rev_hi: i64, depth: u32) -> Vec<pb::RequestOp> {
    use pb::request_op::Request;
    (0..r.below(4))
        .map(|_| pb::RequestOp {
            request: Some(match r.below(if depth < 1 { 4 } else { 3 }) {
                0 => Request::RequestRange(range_req(r, rev_hi)),
                1 => Request::RequestPut(put_req(r)),
                2 => Request::RequestDeleteRange(delete_req(r)),
                _ => Request::RequestTxn(txn_req(r, rev_hi, depth + 1)),
            }),
        })
        .collect()
}

fn txn_req(r: &mut Rng, rev_hi: i64, depth: u32) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: (0..r.below(3)).map(|_| compare(r, rev_hi)).collect(),
        success: ops(r, rev_hi, depth),
        failure: ops(r, rev_hi, depth),
    }
}

/// One step's outcome, with what legitimately differs between clusters zeroed.
fn outcome<M: std::fmt::Debug>(result: Result<M, ClientError>) -> String {
    let text = match result {
        Ok(m) => format!("{m:?}"),
        Err(ClientError::Status(s)) => format!("error {:?}: {}", s.code, s.message),
        Err(e) => format!("transport: {e}"),
    };
    scrub_header_ids(&text)
}

/// Headers print as `ResponseHeader { cluster_id: N, member_id: N, revision: R, raft_term: T }`.
fn scrub_header_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("cluster_id: ") {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let rev = rest.find("revision: ").expect("a header has a revision");
        out.push_str("cluster_id: _, member_id: _, ");
        rest = &rest[rev..];
        let term = rest.find("raft_term: ").expect("a header has a raft term");
        out.push_str(&rest[..term]);
        out.push_str("raft_term: _");
        rest = &rest[term..];
        let end = rest.find(['}', ',']).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Runs `steps` seeded operations against one server; returns every outcome.
async fn run_script(endpoint: String, seed: u64, steps: usize) -> Vec<String> {
    let c = Client::connect(ClientOptions::new(vec![endpoint]))
        .await
        .unwrap();
    let mut r = Rng(seed);
    let mut rev_hi = 1;
    let mut out = Vec::with_capacity(steps);
    for step in 0..steps {
        let o = match r.below(100) {
            0..=34 => outcome(c.put(put_req(&mut r)).await),
            35..=44 => outcome(c.delete_range(delete_req(&mut r)).await),
            45..=69 => outcome(c.range(range_req(&mut r, rev_hi)).await),
            70..=94 => outcome(c.txn(txn_req(&mut r, rev_hi, 0)).await),
            _ => {
                let revision = r.below(rev_hi as u64 + 2) as i64;
                outcome(
                    c.compact(pb::CompactionRequest {
                        revision,
                        physical: r.chance(50),
                    })
                    .await,
                )
            }
        };
        // The highest revision seen so far bounds the revisions the next steps ask about.
        if let Some(rev) = o
            .split("revision: ")
            .skip(1)
            .filter_map(|s| s.split([',', ' ']).next()?.parse::<i64>().ok())
            .max()
        {
            rev_hi = rev_hi.max(rev);
        }
        out.push(format!("step {step}: {o}"));
    }
    out
}

fn differential(seed: u64, steps: usize) {
    let etcd = Server::start(Kind::Etcd);
    let corekv = Server::start(Kind::Corekv);
    let (e, c) = (etcd.endpoint(), corekv.endpoint());
    let want = run_local(move || run_script(e, seed, steps));
    let got = run_local(move || run_script(c, seed, steps));
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(g, w, "seed {seed}: corekv differs from etcd");
    }
    assert_eq!(got.len(), want.len());
}

#[test]
fn random_sequences_answer_like_etcd_seed_1() {
    differential(0x9e37_79b9_7f4a_7c15, 400);
}

#[test]
fn random_sequences_answer_like_etcd_seed_2() {
    differential(0xdead_beef_cafe_f00d, 400);
}

#[test]
fn random_sequences_answer_like_etcd_seed_3() {
    differential(42, 400);
}
