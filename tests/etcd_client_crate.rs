//! corekv through an independent client, the Rust `etcd-client` crate (tonic), and watch
//! event streams compared with real etcd's for the same writes.

mod common;

use std::time::Duration;

use common::{Kind, Server};
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, EventType, GetOptions,
    LeaseGrantOptions, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions, WatchStream,
};

async fn connect(s: &Server) -> Client {
    Client::connect([s.endpoint()], None)
        .await
        .expect("connecting with etcd-client")
}

/// One event, with what clients can observe of it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    put: bool,
    key: String,
    value: String,
    create: i64,
    modr: i64,
    version: i64,
    lease: i64,
    prev: Option<(String, i64)>,
}

/// Reads events from a watch stream until `n` have arrived (the writes are known).
async fn collect(stream: &mut WatchStream, n: usize) -> Vec<Seen> {
    let mut out = Vec::new();
    while out.len() < n {
        let resp = stream
            .message()
            .await
            .expect("watch stream error")
            .expect("watch stream ended early");
        assert!(!resp.canceled(), "watch canceled: {}", resp.cancel_reason());
        for ev in resp.events() {
            let kv = ev.kv().unwrap();
            out.push(Seen {
                put: ev.event_type() == EventType::Put,
                key: kv.key_str().unwrap().to_owned(),
                value: kv.value_str().unwrap().to_owned(),
                create: kv.create_revision(),
                modr: kv.mod_revision(),
                version: kv.version(),
                lease: kv.lease(),
                prev: ev
                    .prev_kv()
                    .map(|p| (p.value_str().unwrap().to_owned(), p.mod_revision())),
            });
        }
    }
    out
}

/// The writes every server gets, in order: 11 events in all.
async fn write_script(c: &mut Client) {
    c.put("a", "1", None).await.unwrap();
    c.put("b", "2", None).await.unwrap();
    c.put("a", "3", None).await.unwrap();
    c.delete("b", None).await.unwrap();
    let txn = Txn::new()
        .when([Compare::version("a", CompareOp::Equal, 2)])
        .and_then([TxnOp::put("c", "4", None), TxnOp::put("d", "5", None)]);
    assert!(c.txn(txn).await.unwrap().succeeded());
    c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(77)))
        .await
        .unwrap();
    c.put("e", "6", Some(PutOptions::new().with_lease(77)))
        .await
        .unwrap();
    c.put("f", "7", Some(PutOptions::new().with_lease(77)))
        .await
        .unwrap();
    c.lease_revoke(77).await.unwrap();
    c.delete("c", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
}

/// The events each watcher saw, for one server.
async fn watch_script(s: &Server) -> Vec<Vec<Seen>> {
    let mut c = connect(s).await;
    let mut all = c
        .watch(
            "",
            Some(WatchOptions::new().with_all_keys().with_prev_key()),
        )
        .await
        .unwrap();
    let mut no_put = c
        .watch(
            "a",
            Some(
                WatchOptions::new()
                    .with_range("e")
                    .with_filters([WatchFilterType::NoPut]),
            ),
        )
        .await
        .unwrap();
    // Wait for both "created" answers before writing, so both start at the same revision.
    assert!(all.message().await.unwrap().unwrap().created());
    assert!(no_put.message().await.unwrap().unwrap().created());
    write_script(&mut c).await;
    let live = collect(&mut all, 11).await;
    let deletes = collect(&mut no_put, 2).await;
    // The same history, replayed from the backend by a watcher created afterwards.
    let mut replay = c
        .watch(
            "",
            Some(
                WatchOptions::new()
                    .with_all_keys()
                    .with_prev_key()
                    .with_start_revision(2),
            ),
        )
        .await
        .unwrap();
    let history = collect(&mut replay, 11).await;
    vec![live, deletes, history]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_match_etcd_live_and_from_history() {
    let etcd = Server::start(Kind::Etcd);
    let corekv = Server::start(Kind::Corekv);
    let expected = watch_script(&etcd).await;
    let got = watch_script(&corekv).await;
    assert_eq!(got[0], expected[0], "live events differ");
    assert_eq!(got[1], expected[1], "filtered events differ");
    assert_eq!(got[2], expected[2], "replayed events differ");
    assert_eq!(
        got[0], got[2],
        "history replay differs from the live stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_is_canceled_like_etcd() {
    let mut answers = Vec::new();
    for kind in [Kind::Etcd, Kind::Corekv] {
        let s = Server::start(kind);
        let mut c = connect(&s).await;
        for i in 0..5 {
            c.put("k", format!("{i}"), None).await.unwrap();
        }
        c.compact(4, None).await.unwrap();
        let mut w = c
            .watch("k", Some(WatchOptions::new().with_start_revision(2)))
            .await
            .unwrap();
        let mut seen = Vec::new();
        while let Some(r) = w.message().await.unwrap() {
            seen.push((
                r.created(),
                r.canceled(),
                r.compact_revision(),
                r.events().len(),
            ));
            if r.canceled() {
                break;
            }
        }
        answers.push(seen);
    }
    assert_eq!(answers[1], answers[0]);
    assert_eq!(answers[0].last().unwrap().2, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_txn_and_lease_keepalive_through_etcd_client() {
    let s = Server::start(Kind::Corekv);
    let mut c = connect(&s).await;
    let put = c
        .put("k", "v", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(put.header().unwrap().revision(), 2);
    assert!(put.prev_key().is_none());
    for i in 0..10 {
        c.put(format!("p/{i}"), "x", None).await.unwrap();
    }
    let r = c
        .get("p/", Some(GetOptions::new().with_prefix().with_limit(3)))
        .await
        .unwrap();
    assert_eq!((r.kvs().len(), r.count(), r.more()), (3, 10, true));
    let txn = Txn::new()
        .when([Compare::value("k", CompareOp::Equal, "v")])
        .and_then([TxnOp::put("k", "w", None), TxnOp::get("k", None)])
        .or_else([TxnOp::delete("k", None)]);
    let t = c.txn(txn).await.unwrap();
    assert!(t.succeeded());
    assert_eq!(t.header().unwrap().revision(), 13);

    let lease = c.lease_grant(10, None).await.unwrap();
    assert_eq!(lease.ttl(), 10);
    let (mut keeper, mut responses) = c.lease_keep_alive(lease.id()).await.unwrap();
    for _ in 0..3 {
        keeper.keep_alive().await.unwrap();
        let r = responses.message().await.unwrap().unwrap();
        assert_eq!((r.id(), r.ttl()), (lease.id(), 10));
    }
    let ttl = c.lease_time_to_live(lease.id(), None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 10);
    assert!(ttl.ttl() > 0 && ttl.ttl() <= 10);
    c.lease_revoke(lease.id()).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let r = responses.message().await.unwrap().unwrap();
    assert_eq!(r.ttl(), 0, "a revoked lease answers TTL 0");

    let status = c.status().await.unwrap();
    assert_eq!(status.raft_index(), status.raft_applied_index());
    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
}

/// A compaction over thousands of keys (corekv frees them in steps of 500 keys between
/// requests): a write client keeps going while it runs, a physical compaction answers once
/// it is done, reads below it fail, and the store hashes (HashKV) exactly like etcd's after
/// the same history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_physical_compaction_leaves_what_etcds_leaves() {
    let mut answers = Vec::new();
    for kind in [Kind::Etcd, Kind::Corekv] {
        let s = Server::start(kind);
        let mut c = connect(&s).await;
        // 3000 keys with three revisions each, 100 puts per txn.
        for round in 0..3 {
            for chunk in 0..30 {
                let ops: Vec<TxnOp> = (0..100)
                    .map(|i| {
                        let k = chunk * 100 + i;
                        TxnOp::put(format!("key/{k:05}"), format!("v{round}"), None)
                    })
                    .collect();
                c.txn(Txn::new().and_then(ops)).await.unwrap();
            }
        }
        // Delete a tenth of them, so compaction also drops tombstoned keys.
        for k in (0..3000).step_by(10) {
            c.delete(format!("key/{k:05}"), None).await.unwrap();
        }
        let rev = c
            .get("key/", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let mut writer = connect(&s).await;
        let during = tokio::spawn(async move {
            for i in 0..50 {
                writer.put("during", format!("{i}"), None).await.unwrap();
            }
        });
        c.compact(rev - 100, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap();
        during.await.unwrap();
        let err = c
            .get(
                "key/00001",
                Some(GetOptions::new().with_revision(rev - 101)),
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("required revision has been compacted"),
            "{err}"
        );
        let kept = c
            .get(
                "key/",
                Some(GetOptions::new().with_prefix().with_revision(rev - 100)),
            )
            .await
            .unwrap();
        let hash = c.hash_kv(0).await.unwrap();
        answers.push((
            kept.count(),
            kept.kvs().iter().map(|kv| kv.mod_revision()).sum::<i64>(),
            hash.hash(),
            hash.compact_version(),
        ));
    }
    assert_eq!(answers[1], answers[0], "corekv (right) vs etcd (left)");
}

/// What one call through etcd-client came to, comparable across servers: the gRPC code
/// and message of an error, or what the answer says.
fn outcome<T>(r: Result<T, etcd_client::Error>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(etcd_client::Error::GRpcStatus(s)) => format!("{:?}: {}", s.code(), s.message()),
        Err(e) => format!("error: {e}"),
    }
}

/// The auth sequence of tests/auth.rs, through etcd-client logged in as a user: keys, a
/// prefix, txns and a watch over forbidden keys, lease revokes, an expired simple token
/// (--auth-token-ttl=1) and auth disabled under a live client.
async fn auth_script(s: &Server) -> Vec<String> {
    for args in common::APP_AUTH {
        let o = s.etcdctl(args);
        assert!(o.status.success(), "{args:?}: {}", common::stderr(&o));
    }
    let login = |u: &str, p: &str| Some(etcd_client::ConnectOptions::new().with_user(u, p));
    let mut root = Client::connect([s.endpoint()], login("root", "rootpw"))
        .await
        .unwrap();
    let mut alice = Client::connect([s.endpoint()], login("alice", "apw"))
        .await
        .unwrap();
    let mut out = Vec::new();
    let wrong = Client::connect([s.endpoint()], login("alice", "nope")).await;
    out.push(outcome(wrong, |_| "connected".into()));
    let put = |r: Result<etcd_client::PutResponse, _>| outcome(r, |_| "put".into());
    let get = |r: Result<etcd_client::GetResponse, _>| {
        outcome(r, |g| {
            let kvs: Vec<String> = g
                .kvs()
                .iter()
                .map(|kv| format!("{}={}", kv.key_str().unwrap(), kv.value_str().unwrap()))
                .collect();
            kvs.join(",")
        })
    };
    out.push(put(alice.put("app/x", "1", None).await));
    out.push(get(alice.get("app/x", None).await));
    out.push(get(alice
        .get("app/", Some(GetOptions::new().with_prefix()))
        .await));
    out.push(get(alice.get("other", None).await));
    out.push(put(alice.put("other", "1", None).await));
    out.push(get(alice
        .get("", Some(GetOptions::new().with_all_keys()))
        .await));
    let txn = |compare: &str, op: &str| {
        Txn::new()
            .when([Compare::version(compare, CompareOp::Greater, 0)])
            .and_then([TxnOp::put(op, "t", None)])
            .or_else([TxnOp::get(op, None)])
    };
    for (c, op) in [("app/x", "app/y"), ("app/x", "other"), ("other", "app/y")] {
        let r = alice.txn(txn(c, op)).await;
        out.push(outcome(r, |t| format!("txn succeeded={}", t.succeeded())));
    }
    // A watch over keys alice may not read is canceled at its creation.
    let mut stream = alice.watch("other", None).await.unwrap();
    let first = stream.message().await;
    out.push(outcome(first, |m| {
        m.map_or("ended".into(), |m| {
            format!(
                "created={} canceled={} reason={}",
                m.created(),
                m.canceled(),
                m.cancel_reason()
            )
        })
    }));
    // Revoking a lease deletes its keys: write permission on every one is needed.
    for (id, key) in [(701, "other"), (702, "app/leased")] {
        root.lease_grant(600, Some(LeaseGrantOptions::new().with_id(id)))
            .await
            .unwrap();
        root.put(key, "l", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        let r = alice.lease_revoke(id).await;
        out.push(outcome(r, |_| "revoked".into()));
    }
    // An unused simple token expires after --auth-token-ttl; logging in again works.
    let mut expired = None;
    for wait in [3, 6, 12] {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let r = get(alice.get("app/x", None).await);
        if r.contains("invalid auth token") {
            expired = Some(r);
            break;
        }
    }
    out.push(expired.unwrap_or_else(|| "the token never expired".into()));
    alice.refresh_token().await.unwrap();
    out.push(get(alice.get("app/x", None).await));
    // Auth disabled under a client holding a token.
    let r = root.auth_disable().await;
    out.push(outcome(r, |_| "disabled".into()));
    out.push(get(alice.get("other", None).await));
    out.push(put(alice.put("other", "2", None).await));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_through_etcd_client_matches_etcd() {
    let etcd = Server::start_with(Kind::Etcd, &["--auth-token-ttl=1"]);
    let corekv = Server::start_with(Kind::Corekv, &["--auth-token-ttl=1"]);
    let (e, c) = (auth_script(&etcd).await, auth_script(&corekv).await);
    for (i, (e, c)) in e.iter().zip(&c).enumerate() {
        assert_eq!(c, e, "step {i} differs (corekv's answer first)");
    }
    assert_eq!(c.len(), e.len());
    // The sequence did what it says (and not the same wrong thing on both).
    assert!(c[4].contains("permission denied"), "{c:?}");
    assert!(c[10].contains("canceled=true"), "{c:?}");
    assert!(c[13].contains("invalid auth token"), "{c:?}");
    assert_eq!(c[14], "app/x=1", "{c:?}");
}
