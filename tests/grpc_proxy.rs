//! `corekv grpc-proxy start` in front of corekv: every etcdctl step answers as the member
//! does; watchers of one key share one upstream watcher and each gets every event; a
//! --namespace holds (ranges, txns, deletes and watches that try to leave it); watches
//! resume without a gap or a duplicate when the proxy's member is killed.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::Cluster;
use common::ctl::{diff, report, Side, Tool};
use common::ctl_steps::STEPS;
use common::proxy::Proxy;
use common::{http_get, Kind, Server};
use corekv::client::{run_local, Client, ClientOptions, WatchSender, WatchStream};
use corekv::proto::etcdserverpb as pb;

/// A gauge's value in a /metrics page.
fn gauge(port: u16, name: &str) -> Option<i64> {
    let page = http_get(port, "/metrics")?;
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits (up to a generous bound) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "{what} within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn etcdctl_through_the_proxy_answers_as_the_member() {
    let peer = format!("http://127.0.0.1:{}", common::free_port());
    let direct = Server::start_advertising(Kind::Corekv, &peer);
    let behind = Server::start_advertising(Kind::Corekv, &peer);
    // Without an advertised URL MemberList goes to the cluster too.
    let proxy = Proxy::start(
        Kind::Corekv,
        &[behind.endpoint()],
        &["--advertise-client-url="],
    );
    let mut a = Side::new(Tool::Etcdctl, &direct);
    let mut b = Side::through(Tool::Etcdctl, &behind, &proxy.endpoint());
    let bad = diff(&mut a, &mut b, STEPS);
    assert!(
        bad.is_empty(),
        "{} of {} steps differ through the proxy:{}\nproxy log:\n{}",
        bad.len(),
        STEPS.len(),
        report(&a, &b, &bad),
        proxy.log()
    );
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.to_string().into(),
        value: value.to_string().into(),
        ..Default::default()
    }
}

fn create(key: &str, start: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.to_string().into(),
                start_revision: start,
                ..Default::default()
            },
        )),
    }
}

/// Opens `per_stream` watchers on one stream, watcher `i` on `keys(i)` from `start`; returns
/// once every one is created (their IDs in order).
async fn open_watchers(
    client: &Client,
    per_stream: usize,
    keys: impl Fn(usize) -> String,
    start: i64,
) -> (WatchSender, WatchStream, Vec<(i64, String)>) {
    let (mut send, mut recv) = client.watch().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..per_stream {
        send.send(&create(&keys(i), start)).await.unwrap();
        let r = recv.message().await.unwrap().expect("a created reply");
        assert!(r.created && !r.canceled, "{r:?}");
        ids.push((r.watch_id, keys(i)));
    }
    (send, recv, ids)
}

/// A client, one watch stream and its watchers' (ID, key).
type Watchers = (Client, WatchSender, WatchStream, Vec<(i64, String)>);

/// Reads every stream until each of its watchers got `per_watcher` events, each of its own
/// key: the values each got, in order, by (stream, watch ID).
async fn collect(all: &mut [Watchers], per_watcher: usize) -> BTreeMap<(usize, i64), Vec<String>> {
    let mut got: BTreeMap<(usize, i64), Vec<String>> = BTreeMap::new();
    for (s, (_c, _send, recv, ids)) in all.iter_mut().enumerate() {
        let want = ids.len() * per_watcher;
        let mut n = 0;
        while n < want {
            let r = recv.message().await.unwrap().expect("events");
            assert!(!r.canceled, "{r:?}");
            let (_, k) = ids.iter().find(|(id, _)| *id == r.watch_id).unwrap();
            for e in r.events {
                let kv = e.kv.unwrap();
                assert_eq!(kv.key, k.as_bytes(), "an event of another key");
                got.entry((s, r.watch_id))
                    .or_default()
                    .push(String::from_utf8_lossy(&kv.value).into_owned());
                n += 1;
            }
        }
    }
    got
}

#[test]
fn a_thousand_watchers_on_ten_keys_share_ten_upstream_watchers() {
    let server = Server::start(Kind::Corekv);
    let proxy = Proxy::start(Kind::Corekv, &[server.endpoint()], &[]);
    let (streams, per_stream, keys, puts_per_key) = (20usize, 50usize, 10usize, 5usize);
    let ep = proxy.endpoint();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let watchers = std::thread::spawn(move || {
        run_local(move || async move {
            let mut all = Vec::new();
            for s in 0..streams {
                let c = Client::connect(ClientOptions::new(vec![ep.clone()]))
                    .await
                    .unwrap();
                let (send, recv, ids) =
                    open_watchers(&c, per_stream, |i| format!("k{}", (s + i) % keys), 0).await;
                all.push((c, send, recv, ids));
            }
            tx.send(()).unwrap();
            // Every watcher gets each put to its key, in order, once.
            let got = collect(&mut all, puts_per_key).await;
            done_tx.send(got).unwrap();
        })
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("1,000 watchers created");
    eventually("10 watchers on the member", || {
        gauge(server.client_port, "etcd_debugging_mvcc_watcher_total") == Some(keys as i64)
    });
    assert_eq!(
        gauge(proxy.port, "etcd_grpc_proxy_watchers_total"),
        Some((streams * per_stream) as i64)
    );
    let sep = server.endpoint();
    run_local(move || async move {
        let c = Client::connect(ClientOptions::new(vec![sep]))
            .await
            .unwrap();
        for v in 0..puts_per_key {
            for k in 0..keys {
                c.put(put(&format!("k{k}"), &format!("v{v}")))
                    .await
                    .unwrap();
            }
        }
    });
    let got = done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("every event delivered");
    watchers.join().unwrap();
    assert_eq!(got.len(), streams * per_stream);
    let want: Vec<String> = (0..puts_per_key).map(|v| format!("v{v}")).collect();
    for (w, values) in got {
        assert_eq!(values, want, "watcher {w:?}");
    }
}

#[test]
fn a_namespace_cannot_be_left() {
    let server = Server::start(Kind::Corekv);
    let proxy = Proxy::start(Kind::Corekv, &[server.endpoint()], &["--namespace=/t/"]);
    let (ep, direct) = (proxy.endpoint(), server.endpoint());
    run_local(move || async move {
        let p = Client::connect(ClientOptions::new(vec![ep])).await.unwrap();
        let d = Client::connect(ClientOptions::new(vec![direct]))
            .await
            .unwrap();
        for k in ["/s", "/t", "/t0", "/u/x", "outside", "\u{ff}"] {
            d.put(put(k, "out")).await.unwrap();
        }
        // A watch of every key the client can name, opened before the writes.
        let (mut ws, mut wr) = p.watch().await.unwrap();
        ws.send(&pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: Bytes::from_static(b"\0"),
                    range_end: Bytes::from_static(b"\0"),
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        })
        .await
        .unwrap();
        assert!(wr.message().await.unwrap().unwrap().created);

        let r = p.put(put("a", "1")).await.unwrap();
        assert!(r.header.is_some());
        p.put(put("b", "2")).await.unwrap();
        let got = d
            .range(pb::RangeRequest {
                key: "/t/a".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(got.kvs[0].value, "1", "a key lands under the prefix");

        let all = |key: &'static [u8], end: &'static [u8]| pb::RangeRequest {
            key: Bytes::from_static(key),
            range_end: Bytes::from_static(end),
            ..Default::default()
        };
        let keys = |kvs: &[corekv::proto::mvccpb::KeyValue]| -> Vec<String> {
            kvs.iter()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                .collect()
        };
        for (k, e) in [
            (&b"\0"[..], &b"\0"[..]),
            (b"a", b"\0"),
            (b"\0", b"\xff\xff\xff"),
            (b"a", b"zzzz"),
        ] {
            let r = p.range(all(k, e)).await.unwrap();
            assert_eq!(keys(&r.kvs), ["a", "b"], "range {k:?}..{e:?}");
            assert_eq!(r.count, 2);
        }
        assert!(p.range(all(b"", b"")).await.is_err(), "an empty key");
        assert_eq!(p.range(all(b"../outside", b"")).await.unwrap().kvs.len(), 0);

        // A txn that compares, reads, writes and deletes outside: all of it lands inside.
        use pb::request_op::Request as Op;
        let txn = pb::TxnRequest {
            compare: vec![pb::Compare {
                key: "outside".into(),
                result: pb::compare::CompareResult::Equal as i32,
                target: pb::compare::CompareTarget::Value as i32,
                target_union: Some(pb::compare::TargetUnion::Value("out".into())),
                ..Default::default()
            }],
            success: vec![pb::RequestOp {
                request: Some(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                    key: "\0".into(),
                    range_end: "\0".into(),
                    ..Default::default()
                })),
            }],
            failure: vec![
                pb::RequestOp {
                    request: Some(Op::RequestRange(all(b"\0", b"\0"))),
                },
                pb::RequestOp {
                    request: Some(Op::RequestPut(put("outside", "in"))),
                },
            ],
        };
        let t = p.txn(txn).await.unwrap();
        assert!(
            !t.succeeded,
            "\"outside\" is /t/outside, which does not exist"
        );
        use pb::response_op::Response as R;
        match &t.responses[0].response {
            Some(R::ResponseRange(r)) => assert_eq!(keys(&r.kvs), ["a", "b"]),
            other => panic!("{other:?}"),
        }
        // Then every key it can name deleted, in a txn without compares.
        let t = p
            .txn(pb::TxnRequest {
                success: vec![pb::RequestOp {
                    request: Some(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                        key: "\0".into(),
                        range_end: "\0".into(),
                        prev_kv: true,
                    })),
                }],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(t.succeeded);
        match &t.responses[0].response {
            Some(R::ResponseDeleteRange(r)) => {
                assert_eq!(r.deleted, 3);
                assert_eq!(keys(&r.prev_kvs), ["a", "b", "outside"]);
            }
            other => panic!("{other:?}"),
        }
        // What is outside is untouched.
        let everything = d.range(all(b"\0", b"\0")).await.unwrap();
        assert_eq!(
            keys(&everything.kvs),
            ["/s", "/t", "/t0", "/u/x", "outside", "\u{ff}"]
        );

        // The watch saw only the namespace's events, stripped; writes outside made none.
        d.put(put("/u/y", "out")).await.unwrap();
        d.put(put("/t/last", "in")).await.unwrap();
        let mut seen = Vec::new();
        while !seen.iter().any(|(k, _): &(String, i32)| k == "last") {
            let r = wr.message().await.unwrap().unwrap();
            for e in r.events {
                seen.push((
                    String::from_utf8_lossy(&e.kv.unwrap().key).into_owned(),
                    e.r#type,
                ));
            }
        }
        let names: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["a", "b", "outside", "a", "b", "outside", "last"],
            "{seen:?}"
        );
    });
}

#[test]
fn watches_resume_without_gap_or_duplicate_when_the_member_dies() {
    let mut cluster = Cluster::start(Kind::Corekv, 3, &[]);
    cluster.wait_all_healthy();
    let endpoints = cluster.endpoints();
    let proxy = Proxy::start(Kind::Corekv, &endpoints, &[]);
    let (keys, per_stream, streams, rounds) = (5usize, 20usize, 5usize, 40usize);
    let ep = proxy.endpoint();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let watchers = std::thread::spawn(move || {
        run_local(move || async move {
            let mut all = Vec::new();
            for s in 0..streams {
                let c = Client::connect(ClientOptions::new(vec![ep.clone()]))
                    .await
                    .unwrap();
                // Half from revision 1 (history), half from now.
                let start = if s % 2 == 0 { 1 } else { 0 };
                let (send, recv, ids) =
                    open_watchers(&c, per_stream, |i| format!("f{}", i % keys), start).await;
                all.push((c, send, recv, ids));
            }
            ready_tx.send(()).unwrap();
            let got = collect(&mut all, rounds).await;
            done_tx.send(got).unwrap();
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("watchers created");
    // The proxy uses the first endpoint; it dies halfway through the writes, which go to
    // the other two members.
    let writers: Vec<String> = endpoints[1..].to_vec();
    let write_round = |from: usize, to: usize| {
        let writers = writers.clone();
        run_local(move || async move {
            let c = Client::connect(ClientOptions::new(writers)).await.unwrap();
            for v in from..to {
                for k in 0..keys {
                    // A put refused while the cluster elects is tried again, unless it was
                    // applied after all (a second copy would be a duplicate event).
                    let (key, value) = (format!("f{k}"), v.to_string());
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while c.put(put(&key, &value)).await.is_err() {
                        assert!(Instant::now() < deadline, "a put within 60 s");
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                        let now = c
                            .range(pb::RangeRequest {
                                key: key.clone().into(),
                                ..Default::default()
                            })
                            .await;
                        if now.is_ok_and(|r| r.kvs.first().is_some_and(|kv| kv.value == value)) {
                            break;
                        }
                    }
                }
            }
        })
    };
    write_round(0, rounds / 2);
    cluster.kill(0);
    write_round(rounds / 2, rounds);
    let got = done_rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| {
            panic!(
                "every event after the failover; proxy log:\n{}",
                proxy.log()
            )
        });
    watchers.join().unwrap();
    let want: Vec<String> = (0..rounds).map(|v| v.to_string()).collect();
    assert_eq!(got.len(), streams * per_stream);
    for (w, values) in got {
        assert_eq!(values, want, "watcher {w:?}: a gap or a duplicate");
    }
}

#[test]
fn garbage_and_half_open_connections_on_the_proxy_port_hold_up_nobody() {
    let server = Server::start(Kind::Corekv);
    let proxy = Proxy::start(Kind::Corekv, &[server.endpoint()], &[]);
    // Connections that never send a byte, one that stops inside the HTTP/2 preface.
    let mut idle: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap())
        .collect();
    let mut half = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    std::io::Write::write_all(&mut half, b"PRI * HTTP/2.0\r\n").unwrap();
    idle.push(half);
    for garbage in common::GARBAGE {
        common::send_garbage(proxy.port, garbage);
    }
    let out =
        common::ctl::Spawned::start(Tool::Etcdctl, &proxy.endpoint(), &["put", "k", "v"]).finish();
    assert_eq!(out.stdout, "OK\n", "{out:?}");
    assert!(server.etcdctl(&["get", "k"]).status.success());
    drop(idle);
    // Flags etcd refuses together: one line and exit code 1, as etcd.
    let bad = std::process::Command::new(common::corekv_bin())
        .args(["grpc-proxy", "start", "--resolver-prefix=/p"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("resolver-ttl"), "{err}");
}

/// A grpc_server_* counter of one method in a /metrics page (0 when not shown yet).
fn method_counter(port: u16, family: &str, method: &str) -> u64 {
    let page = http_get(port, "/metrics").expect("/metrics answers");
    let label = format!("grpc_method=\"{method}\"");
    page.lines()
        .filter(|l| l.starts_with(family) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn keep_alives_of_one_lease_from_many_clients_share_one_upstream_stream() {
    let server = Server::start(Kind::Corekv);
    let proxy = Proxy::start(Kind::Corekv, &[server.endpoint()], &[]);
    let (clients, rounds) = (40usize, 3usize);
    let streams_before =
        method_counter(server.client_port, "grpc_server_started", "LeaseKeepAlive");
    let ep = proxy.endpoint();
    let (lease, replies) = run_local(move || async move {
        let first = Client::connect(ClientOptions::new(vec![ep.clone()]))
            .await
            .unwrap();
        let lease = first
            .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
            .await
            .unwrap()
            .id;
        let mut pairs = Vec::new();
        for _ in 0..clients {
            let c = Client::connect(ClientOptions::new(vec![ep.clone()]))
                .await
                .unwrap();
            let (tx, rx) = c.lease_keep_alive().await.unwrap();
            pairs.push((c, tx, rx));
        }
        // Every client sends a keep-alive, then every client reads its reply: round by round.
        let mut replies = Vec::new();
        for _ in 0..rounds {
            for (_, tx, _) in pairs.iter_mut() {
                tx.send(&pb::LeaseKeepAliveRequest { id: lease })
                    .await
                    .unwrap();
            }
            for (_, _, rx) in pairs.iter_mut() {
                replies.push(rx.message().await.unwrap().expect("a reply"));
            }
        }
        (lease, replies)
    });
    assert_eq!(replies.len(), clients * rounds);
    for r in &replies {
        assert_eq!(r.id, lease);
        assert!(r.ttl > 0 && r.ttl <= 60, "{r:?}");
        assert!(r.header.as_ref().is_some_and(|h| h.revision > 0), "{r:?}");
    }
    let streams = method_counter(server.client_port, "grpc_server_started", "LeaseKeepAlive")
        - streams_before;
    assert_eq!(
        streams, 1,
        "upstream keep-alive streams for {clients} client streams"
    );
    let upstream = method_counter(
        server.client_port,
        "grpc_server_msg_received",
        "LeaseKeepAlive",
    );
    assert!(
        (1..=(clients * rounds) as u64).contains(&upstream),
        "{upstream} upstream keep-alives for {} from clients",
        clients * rounds
    );
}

fn get(key: &str, serializable: bool) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_string().into(),
        serializable,
        ..Default::default()
    }
}

async fn value_of(c: &Client, key: &str, serializable: bool) -> String {
    let r = c.range(get(key, serializable)).await.unwrap();
    assert_eq!(r.kvs.len(), 1, "{r:?}");
    String::from_utf8(r.kvs[0].value.to_vec()).unwrap()
}

#[test]
fn serializable_reads_come_from_the_cache_until_a_write_through_the_proxy() {
    let server = Server::start(Kind::Corekv);
    let proxy = Proxy::start(Kind::Corekv, &[server.endpoint()], &[]);
    let (pep, sep) = (proxy.endpoint(), server.endpoint());
    run_local(move || async move {
        let via = Client::connect(ClientOptions::new(vec![pep]))
            .await
            .unwrap();
        let direct = Client::connect(ClientOptions::new(vec![sep]))
            .await
            .unwrap();
        via.put(put("cached", "v1")).await.unwrap();
        assert_eq!(value_of(&via, "cached", true).await, "v1");
        // A write that bypasses the proxy: its serializable reads still see the cached value
        // (as etcd's proxy's; README), linearizable ones go upstream.
        direct.put(put("cached", "v2")).await.unwrap();
        assert_eq!(value_of(&via, "cached", true).await, "v1");
        assert_eq!(value_of(&via, "cached", false).await, "v2");
        // A write through the proxy drops the cached range.
        via.put(put("cached", "v3")).await.unwrap();
        assert_eq!(value_of(&via, "cached", true).await, "v3");
        // So does a txn or a delete touching it.
        direct.put(put("cached", "v4")).await.unwrap();
        via.delete_range(pb::DeleteRangeRequest {
            key: "cached".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let r = via.range(get("cached", true)).await.unwrap();
        assert!(r.kvs.is_empty(), "{r:?}");
    });
}

/// A proxy of `kind` in front of `endpoint` that advertises a free port's address (returned)
/// and registers it under `prefix` with a `ttl`-second lease.
fn registered_proxy(kind: Kind, endpoint: &str, prefix: &str, ttl: i64) -> (Proxy, String) {
    let url = format!("127.0.0.1:{}", common::free_port());
    let proxy = Proxy::start(
        kind,
        &[endpoint.to_string()],
        &[
            &format!("--resolver-prefix={prefix}"),
            &format!("--resolver-ttl={ttl}"),
            &format!("--advertise-client-url={url}"),
        ],
    );
    (proxy, url)
}

/// The keys under `prefix` on the server at `endpoint`, once there are `n` of them.
fn registrations(endpoint: &str, prefix: &str, n: usize) -> Vec<corekv::proto::mvccpb::KeyValue> {
    let (ep, prefix) = (endpoint.to_string(), prefix.to_string());
    run_local(move || async move {
        let c = Client::connect(ClientOptions::new(vec![ep])).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = c
                .range(pb::RangeRequest {
                    key: prefix.clone().into(),
                    range_end: corekv::client::prefix_range_end(prefix.as_bytes()).into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            if r.kvs.len() == n {
                return r.kvs;
            }
            assert!(
                Instant::now() < deadline,
                "{} registrations under {prefix} after 60 s, not {n}",
                r.kvs.len()
            );
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[test]
fn resolver_registration_is_written_as_etcds_proxy_writes_it() {
    let ttl = 7;
    let registered = |kind: Kind| {
        let server = Server::start(kind);
        let (proxy, url) = registered_proxy(kind, &server.endpoint(), "/proxies", ttl);
        let kv = registrations(&server.endpoint(), "/proxies", 1).remove(0);
        let sep = server.endpoint();
        let lease = run_local(move || async move {
            let c = Client::connect(ClientOptions::new(vec![sep]))
                .await
                .unwrap();
            c.lease_time_to_live(pb::LeaseTimeToLiveRequest {
                id: kv.lease,
                keys: true,
            })
            .await
            .unwrap()
        });
        drop(proxy);
        (url, kv, lease)
    };
    let (curl, ckv, clease) = registered(Kind::Corekv);
    let (eurl, ekv, elease) = registered(Kind::Etcd);
    // The same key and value, but for the address each proxy advertises.
    let norm = |b: &[u8], url: &str| String::from_utf8_lossy(b).replace(url, "ADDR");
    assert_eq!(norm(&ckv.key, &curl), norm(&ekv.key, &eurl));
    assert_eq!(norm(&ckv.key, &curl), "/proxies/ADDR");
    let (cv, ev) = (norm(&ckv.value, &curl), norm(&ekv.value, &eurl));
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    assert_eq!(parse(&cv), parse(&ev), "corekv {cv} / etcd {ev}");
    // Under a lease of the TTL asked for, holding only that key.
    assert_ne!(ckv.lease, 0);
    assert_eq!((clease.granted_ttl, elease.granted_ttl), (ttl, ttl));
    assert_eq!((clease.keys.len(), elease.keys.len()), (1, 1));
}

/// `etcdctl member list` at `endpoint`, as JSON (members sorted by client URL) and in the
/// default format (lines sorted), each address of `urls` replaced by `ADDR<i>`.
fn member_list(endpoint: &str, urls: &[&str]) -> (serde_json::Value, Vec<String>) {
    let run = |args: &[&str]| {
        let out = common::ctl::Spawned::start(Tool::Etcdctl, endpoint, args).finish();
        assert!(out.stderr.is_empty(), "{args:?} at {endpoint}: {out:?}");
        let mut text = out.stdout;
        // The longest first: one address may be the start of another.
        let mut by_len: Vec<(usize, &&str)> = urls.iter().enumerate().collect();
        by_len.sort_by_key(|(_, u)| std::cmp::Reverse(u.len()));
        for (i, u) in by_len {
            text = text.replace(*u, &format!("ADDR{i}"));
        }
        text
    };
    let mut json: serde_json::Value =
        serde_json::from_str(&run(&["member", "list", "-w", "json"])).expect("member list JSON");
    if let Some(members) = json["members"].as_array_mut() {
        members.sort_by_key(|m| m["clientURLs"].to_string());
    }
    let mut lines: Vec<String> = run(&["member", "list"]).lines().map(String::from).collect();
    lines.sort();
    (json, lines)
}

/// The client URLs of a member list's members.
fn client_urls(list: &(serde_json::Value, Vec<String>)) -> Vec<String> {
    list.0["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["clientURLs"][0].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn member_list_through_the_proxy_follows_etcds_rules() {
    type List = (serde_json::Value, Vec<String>);
    // Each case's answer, by proxy kind: (case, answer).
    let answers = |kind: Kind| -> Vec<(&'static str, List)> {
        let server = Server::start(kind);
        let ep = server.endpoint();
        let mut got = Vec::new();
        // No advertised URL: the cluster's own list, exactly as the member answers it.
        let forwarding = Proxy::start(
            kind,
            std::slice::from_ref(&ep),
            &["--advertise-client-url="],
        );
        let direct = member_list(&ep, &[]);
        assert_eq!(
            member_list(&forwarding.endpoint(), &[]),
            direct,
            "{kind:?}: forwarded"
        );
        assert_eq!(direct.0["members"].as_array().map(Vec::len), Some(1));
        got.push(("forwarded", direct));
        drop(forwarding);
        // An advertised URL without a prefix: the proxy alone.
        let url = format!("127.0.0.1:{}", common::free_port());
        let alone = Proxy::start(
            kind,
            std::slice::from_ref(&ep),
            &[&format!("--advertise-client-url={url}")],
        );
        got.push(("advertised", member_list(&alone.endpoint(), &[&url])));
        drop(alone);
        // Two proxies registered under one prefix: each lists both once it has seen them.
        let (prefix, ttl) = ("/proxies", 5);
        let (first, url1) = registered_proxy(kind, &ep, prefix, ttl);
        let (mut second, url2) = registered_proxy(kind, &ep, prefix, ttl);
        let urls = [url1.as_str(), url2.as_str()];
        for p in [&first, &second] {
            eventually("both registered proxies listed", || {
                client_urls(&member_list(&p.endpoint(), &urls)) == ["ADDR0", "ADDR1"]
            });
            got.push(("two registered", member_list(&p.endpoint(), &urls)));
        }
        // The second stops; once its lease has expired and a third has registered, the first
        // lists the first and the third (it saw the delete before the third's put).
        second.kill();
        registrations(&ep, prefix, 1);
        let (_third, url3) = registered_proxy(kind, &ep, prefix, ttl);
        let urls = [url1.as_str(), url2.as_str(), url3.as_str()];
        eventually("the third proxy listed", || {
            client_urls(&member_list(&first.endpoint(), &urls)).contains(&"ADDR2".to_string())
        });
        got.push(("one stopped", member_list(&first.endpoint(), &urls)));
        got
    };
    let corekv = answers(Kind::Corekv);
    let etcd = answers(Kind::Etcd);
    assert_eq!(corekv.len(), etcd.len());
    let host = corekv::proxy::register::hostname();
    for ((case, c), (_, e)) in corekv.iter().zip(&etcd) {
        match *case {
            // Each kind's own member: the same shape, its own IDs and URLs.
            "forwarded" => {
                assert!(c.0["header"]["member_id"].is_u64(), "{c:?}");
                assert!(e.0["header"]["member_id"].is_u64(), "{e:?}");
            }
            // etcd before 3.4.32 (Debian's 3.4.23) keeps listing a proxy whose key was deleted
            // (etcd-io/etcd#17887); corekv has the fix.
            "one stopped" => {
                assert_eq!(client_urls(c), ["ADDR0", "ADDR2"], "corekv: {c:?}");
                let urls = client_urls(e);
                assert!(
                    urls == ["ADDR0", "ADDR2"] || urls == ["ADDR0", "ADDR1", "ADDR2"],
                    "etcd: {e:?}"
                );
                let without_stopped = |l: &List| {
                    let mut l = l.clone();
                    if let Some(m) = l.0["members"].as_array_mut() {
                        m.retain(|m| m["clientURLs"][0] != "ADDR1");
                    }
                    l.1.retain(|line| !line.contains("ADDR1"));
                    l
                };
                assert_eq!(*c, without_stopped(e), "{case}: corekv / etcd");
            }
            _ => assert_eq!(c, e, "{case}: corekv / etcd"),
        }
    }
    // The proxies' own members: the host's name, the address, no ID, no peer URLs, no header.
    let (_, alone) = &corekv[1];
    assert_eq!(
        alone.0,
        serde_json::json!({ "members": [{ "name": host, "clientURLs": ["ADDR0"] }] })
    );
    assert_eq!(alone.1, [format!("0, started, {host}, , ADDR0, false")]);
}

/// The values of the next `n` events on a stream.
async fn values(recv: &mut WatchStream, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let r = recv.message().await.unwrap().expect("events");
        assert!(!r.canceled, "{r:?}");
        for e in r.events {
            got.push(String::from_utf8(e.kv.unwrap().value.to_vec()).unwrap());
        }
    }
    got
}

#[test]
fn a_client_that_does_not_read_holds_up_no_other_and_loses_nothing() {
    let server = Server::start(Kind::Corekv);
    let proxy = Proxy::start(Kind::Corekv, &[server.endpoint()], &[]);
    // Enough replies to fill the slow stream's HTTP/2 window (the client's, 1 MiB) and the
    // proxy's queue for it (1,024 replies): 3,000 events of 2 KB.
    let puts = 3000usize;
    let value = |i: usize| format!("{i:02000}");
    let (pep, sep, port) = (proxy.endpoint(), server.endpoint(), server.client_port);
    run_local(move || async move {
        let slow = Client::connect(ClientOptions::new(vec![pep.clone()]))
            .await
            .unwrap();
        let fast = Client::connect(ClientOptions::new(vec![pep]))
            .await
            .unwrap();
        let (_ss, mut srecv, _) = open_watchers(&slow, 1, |_| "slow".into(), 0).await;
        let (_fs, mut frecv, _) = open_watchers(&fast, 1, |_| "slow".into(), 0).await;
        let direct = Client::connect(ClientOptions::new(vec![sep]))
            .await
            .unwrap();
        let want: Vec<String> = (0..puts).map(value).collect();
        let writer = async {
            for i in 0..puts {
                direct.put(put("slow", &value(i))).await.unwrap();
            }
        };
        // The fast client reads while the puts go on; the slow one has not read anything yet.
        let (_, got) = futures_lite::future::zip(writer, values(&mut frecv, puts)).await;
        assert_eq!(got, want, "the fast watcher: a gap or a duplicate");
        // The slow one was given an upstream watcher of its own.
        assert_eq!(
            gauge(port, "etcd_debugging_mvcc_watcher_total"),
            Some(2),
            "watchers on the member once one client fell behind"
        );
        let got = values(&mut srecv, puts).await;
        assert_eq!(got, want, "the slow watcher: a gap or a duplicate");
    });
}
