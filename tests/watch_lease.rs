//! Watch and Lease under real clients: lease operations compared with etcd, expiry through
//! raft with watchers notified, leases surviving a restart, 10,000 watchers, slow readers,
//! and stock etcdctl watch / lease / lock / elect.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{http_get, Kind, Server};
use etcd_client::{
    Client, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions,
    WatchOptions,
};

async fn connect(s: &Server) -> Client {
    Client::connect([s.endpoint()], None).await.unwrap()
}

/// Runs `f` with a generous deadline: failing to finish means a hang, not slowness.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
}

/// Every lease operation, the same way on etcd and corekv: the answers must agree.
async fn lease_script(s: &Server) -> Vec<String> {
    let mut c = connect(s).await;
    let mut out = Vec::new();
    let g = c
        .lease_grant(1, Some(LeaseGrantOptions::new().with_id(100)))
        .await
        .unwrap();
    out.push(format!("grant id={} ttl={}", g.id(), g.ttl()));
    let dup = c
        .lease_grant(60, Some(LeaseGrantOptions::new().with_id(100)))
        .await
        .unwrap_err();
    out.push(format!("dup: {dup}"));
    let big = c.lease_grant(9_000_000_001, None).await.unwrap_err();
    out.push(format!("big: {big}"));
    c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(200)))
        .await
        .unwrap();
    for k in ["a", "b", "c"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(200)))
            .await
            .unwrap();
    }
    c.put("b", "v2", Some(PutOptions::new().with_ignore_lease()))
        .await
        .unwrap();
    c.put("c", "v3", None).await.unwrap(); // detaches c
    let ttl = c
        .lease_time_to_live(200, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    let mut keys: Vec<String> = ttl
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    keys.sort();
    out.push(format!("ttl granted={} keys={keys:?}", ttl.granted_ttl()));
    let mut ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    ids.sort();
    out.push(format!("leases={ids:?}"));
    let before = c.get("a", None).await.unwrap().header().unwrap().revision();
    let r = c.lease_revoke(200).await.unwrap();
    out.push(format!(
        "revoke moved the revision by {}",
        r.header().unwrap().revision() - before
    ));
    let left = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    let left: Vec<String> = left
        .kvs()
        .iter()
        .map(|kv| {
            format!(
                "{}={}@{}",
                kv.key_str().unwrap(),
                kv.value_str().unwrap(),
                kv.lease()
            )
        })
        .collect();
    out.push(format!("left={left:?}"));
    let gone = c.lease_time_to_live(200, None).await.unwrap();
    out.push(format!("revoked ttl={}", gone.ttl()));
    out.push(format!(
        "revoke again: {}",
        c.lease_revoke(200).await.unwrap_err()
    ));
    let bad = c
        .put("x", "y", Some(PutOptions::new().with_lease(999)))
        .await
        .unwrap_err();
    out.push(format!("unknown lease: {bad}"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_operations_answer_like_etcd() {
    let etcd = Server::start(Kind::Etcd);
    let corekv = Server::start(Kind::Corekv);
    let want = lease_script(&etcd).await;
    let got = lease_script(&corekv).await;
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_deletes_its_keys_and_watchers_see_it() {
    let s = Server::start(Kind::Corekv);
    let mut c = connect(&s).await;
    let lease = c.lease_grant(2, None).await.unwrap();
    c.put(
        "session/a",
        "1",
        Some(PutOptions::new().with_lease(lease.id())),
    )
    .await
    .unwrap();
    c.put(
        "session/b",
        "2",
        Some(PutOptions::new().with_lease(lease.id())),
    )
    .await
    .unwrap();
    let mut w = c
        .watch("session/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(w.message().await.unwrap().unwrap().created());
    // Nobody keeps the lease alive: the leader revokes it through raft.
    let mut deleted = Vec::new();
    let mut revisions = Vec::new();
    within("lease expiry", async {
        while deleted.len() < 2 {
            let r = w.message().await.unwrap().unwrap();
            for ev in r.events() {
                assert_eq!(ev.event_type(), EventType::Delete);
                deleted.push(ev.kv().unwrap().key_str().unwrap().to_owned());
                revisions.push(ev.kv().unwrap().mod_revision());
            }
        }
    })
    .await;
    deleted.sort();
    assert_eq!(deleted, ["session/a", "session/b"]);
    assert_eq!(revisions[0], revisions[1], "one revoke, one revision");
    assert_eq!(
        c.lease_time_to_live(lease.id(), None).await.unwrap().ttl(),
        -1
    );
}

fn checkpoints(port: u16) -> i64 {
    let m = http_get(port, "/metrics").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("corekv_lease_checkpoints_total "))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_keeps_its_keys_and_remaining_ttl_across_kill_9() {
    let mut s = Server::start(Kind::Corekv);
    let mut c = connect(&s).await;
    let lease = c
        .lease_grant(60, Some(LeaseGrantOptions::new().with_id(4242)))
        .await
        .unwrap();
    c.put("held", "v", Some(PutOptions::new().with_lease(4242)))
        .await
        .unwrap();
    // Wait until the leader has checkpointed a remaining TTL below the granted one.
    within("a lease checkpoint", async {
        loop {
            if checkpoints(s.client_port) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let before = c.lease_time_to_live(4242, None).await.unwrap().ttl();
    assert!(before < lease.ttl(), "checkpointed after time passed");
    s.kill();
    s.restart();
    let mut c = connect(&s).await;
    let after = c
        .lease_time_to_live(4242, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(after.granted_ttl(), 60);
    assert!(
        after.ttl() > 0 && after.ttl() <= before + 1,
        "the countdown resumed at {} instead of about {before}",
        after.ttl()
    );
    assert_eq!(after.keys(), [b"held".to_vec()]);
    let got = c.get("held", None).await.unwrap();
    assert_eq!(got.kvs()[0].lease(), 4242);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watchers_each_get_every_event_in_order() {
    const STREAMS: usize = 50;
    const PER_STREAM: usize = 200;
    const PUTS: usize = 20;
    let s = Server::start(Kind::Corekv);
    let mut c = connect(&s).await;
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let key = if i % 2 == 0 { "hot" } else { "h" };
        let opts = if i % 2 == 0 {
            WatchOptions::new()
        } else {
            WatchOptions::new().with_prefix()
        };
        let mut w = c.watch(key, Some(opts.clone())).await.unwrap();
        for _ in 1..PER_STREAM {
            w.watch(key, Some(opts.clone())).await.unwrap();
        }
        streams.push(w);
    }
    // Every stream is read concurrently, as a client must: HTTP/2 flow control is shared by
    // the connection, so unread streams would hold up the others.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(STREAMS);
    let mut readers = Vec::new();
    for mut w in streams {
        let ready = ready_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut created = 0;
            while created < PER_STREAM {
                let r = w.message().await.unwrap().unwrap();
                assert!(r.created());
                created += 1;
            }
            ready.send(()).await.unwrap();
            let mut seen: std::collections::HashMap<i64, Vec<i64>> = Default::default();
            while seen.values().map(Vec::len).sum::<usize>() < PER_STREAM * PUTS {
                let r = w.message().await.unwrap().unwrap();
                let got = seen.entry(r.watch_id()).or_default();
                got.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
            }
            seen
        }));
    }
    within("10,000 watchers created", async {
        for _ in 0..STREAMS {
            ready_rx.recv().await.unwrap();
        }
    })
    .await;
    let mut revs = Vec::new();
    for i in 0..PUTS {
        let r = c.put("hot", format!("{i}"), None).await.unwrap();
        revs.push(r.header().unwrap().revision());
    }
    within("delivery to 10,000 watchers", async {
        for r in readers {
            let seen = r.await.unwrap();
            assert_eq!(seen.len(), PER_STREAM);
            assert!(
                seen.values().all(|v| *v == revs),
                "events missing, repeated or out of order"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_blocks_no_writer_and_no_other_watcher_and_loses_nothing() {
    const PUTS: usize = 4000;
    let s = Server::start(Kind::Corekv);
    let mut c = connect(&s).await;
    let mut slow_client = connect(&s).await;
    let mut slow = slow_client
        .watch("data/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let mut fast = c
        .watch("data/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(slow.message().await.unwrap().unwrap().created());
    assert!(fast.message().await.unwrap().unwrap().created());
    // 4000 × 4 KiB = 16 MiB of events: far more than the stream's buffer and the HTTP/2
    // windows hold, while the slow watcher reads nothing.
    let value = vec![b'x'; 4096];
    let writer = {
        let mut c = c.clone();
        tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..PUTS {
                let r = c
                    .put(format!("data/{i:05}"), value.clone(), None)
                    .await
                    .unwrap();
                revs.push(r.header().unwrap().revision());
            }
            revs
        })
    };
    let mut fast_seen = Vec::new();
    within("the fast watcher", async {
        while fast_seen.len() < PUTS {
            let r = fast.message().await.unwrap().unwrap();
            fast_seen.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
        }
    })
    .await;
    let revs = within("the writes", writer).await.unwrap();
    assert_eq!(fast_seen, revs);
    // Only now does the slow client read: everything, once, in order.
    let mut slow_seen = Vec::new();
    within("the slow watcher catching up", async {
        while slow_seen.len() < PUTS {
            let r = slow.message().await.unwrap().unwrap();
            assert!(!r.canceled());
            slow_seen.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
        }
    })
    .await;
    assert_eq!(slow_seen, revs);
}

/// Reads lines from a child's stdout until `n` lines have come.
fn read_lines(r: &mut impl BufRead, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        out.push(line.trim_end().to_owned());
    }
    out
}

fn etcdctl_child(s: &Server, args: &[&str]) -> std::process::Child {
    s.etcdctl_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn stock_etcdctl_watch_lease_lock_and_elect() {
    let s = Server::start(Kind::Corekv);
    // Starting from a revision makes the first event independent of when the watch
    // registers: it comes from history if the write came first.
    assert!(s.etcdctl(&["put", "w1", "a"]).status.success());
    let mut watch = etcdctl_child(&s, &["watch", "w", "--prefix", "--prev-kv", "--rev", "2"]);
    let mut out = BufReader::new(watch.stdout.take().unwrap());
    let seen = read_lines(&mut out, 3);
    assert_eq!(seen, ["PUT", "w1", "a"]);
    assert!(s.etcdctl(&["put", "w1", "b"]).status.success());
    assert!(s.etcdctl(&["del", "w1"]).status.success());
    let more = read_lines(&mut out, 8);
    assert_eq!(more, ["PUT", "w1", "a", "w1", "b", "DELETE", "w1", "b"]);
    let _ = watch.kill();
    let _ = watch.wait();

    let grant = common::stdout(&s.etcdctl(&["lease", "grant", "100"]));
    let id = grant.split_whitespace().nth(1).unwrap().to_owned();
    assert!(grant.contains("granted with TTL(100s)"), "{grant}");
    assert!(s
        .etcdctl(&["put", "--lease", &id, "leased", "v"])
        .status
        .success());
    let ttl = common::stdout(&s.etcdctl(&["lease", "timetolive", &id, "--keys"]));
    assert!(ttl.contains("attached keys([leased])"), "{ttl}");
    let ka = common::stdout(&s.etcdctl(&["lease", "keep-alive", "--once", &id]));
    assert_eq!(ka.trim(), format!("lease {id} keepalived with TTL(100)"));
    let list = common::stdout(&s.etcdctl(&["lease", "list"]));
    assert!(list.contains(&id), "{list}");
    let revoke = common::stdout(&s.etcdctl(&["lease", "revoke", &id]));
    assert_eq!(revoke.trim(), format!("lease {id} revoked"));
    assert_eq!(common::stdout(&s.etcdctl(&["get", "leased"])), "");

    let lock = common::stdout(&s.etcdctl(&["lock", "mylock", "echo", "holding"]));
    assert_eq!(lock.trim(), "holding");

    let mut leader = etcdctl_child(&s, &["elect", "myelection", "proposal-1"]);
    let mut leader_out = BufReader::new(leader.stdout.take().unwrap());
    let won = read_lines(&mut leader_out, 2);
    assert!(won[0].starts_with("myelection/"), "{won:?}");
    assert_eq!(won[1], "proposal-1");
    let mut observer = etcdctl_child(&s, &["elect", "-l", "myelection"]);
    let mut obs_out = BufReader::new(observer.stdout.take().unwrap());
    let seen = read_lines(&mut obs_out, 2);
    assert_eq!(seen[1], "proposal-1");
    for mut ch in [leader, observer] {
        let _ = ch.kill();
        let _ = ch.wait();
    }
}
