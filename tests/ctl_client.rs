//! The Rust client (`corekv::client`) against a real etcd: many concurrent calls on one
//! connection, errors, timeouts, watch and keep-alive streams, and the concurrency recipes.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use common::{Kind, Server};
use corekv::client::concurrency::{election_leader, Election, Mutex, Session};
use corekv::client::{run_local, Client, ClientError, ClientOptions, Code};
use corekv::proto::etcdserverpb as pb;
use corekv::proto::mvccpb::event::EventType;

fn options(server: &Server) -> ClientOptions {
    let mut o = ClientOptions::new(vec![server.endpoint()]);
    // Generous: these tests must not fail on a slow machine; none waits for a timeout.
    o.command_timeout = Duration::from_secs(30);
    o
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

fn get(key: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

#[test]
fn concurrent_unary_calls_share_one_connection() {
    let etcd = Server::start(Kind::Etcd);
    let opts = options(&etcd);
    run_local(move || async move {
        let client = Client::connect(opts).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let c = client.clone();
            tasks.push(glommio::spawn_local(async move {
                let key = format!("k{i:03}");
                c.put(put(&key, &format!("v{i}"))).await.unwrap();
                let r = c.range(get(&key)).await.unwrap();
                assert_eq!(r.kvs.len(), 1);
                assert_eq!(r.kvs[0].value, format!("v{i}").into_bytes());
            }));
        }
        for t in tasks {
            t.await;
        }
        // 200 writes, one revision each, on top of the empty store's revision 1.
        let all = client
            .range(pb::RangeRequest {
                key: "k".into(),
                range_end: "l".into(),
                count_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.count, 200);
        assert_eq!(all.header.unwrap().revision, 201);
        // Other services on the same connection.
        assert_eq!(client.health().await.unwrap().status, 1);
        assert_eq!(client.member_list().await.unwrap().members.len(), 1);
        assert!(client.status().await.unwrap().version.starts_with("3."));
    });
}

#[test]
fn errors_carry_the_servers_status() {
    let etcd = Server::start(Kind::Etcd);
    let opts = options(&etcd);
    run_local(move || async move {
        let client = Client::connect(opts).await.unwrap();
        let e = client.range(get("")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.to_string(), "etcdserver: key is not provided");
        let e = client
            .lease_revoke(pb::LeaseRevokeRequest { id: 42 })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = client
            .unary::<_, pb::RangeResponse>("/etcdserverpb.KV/NoSuchMethod", &get("a"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented);
        assert!(e
            .to_string()
            .starts_with("rpc error: code = Unimplemented desc = "));
        // The connection survives failed calls.
        client.put(put("a", "1")).await.unwrap();
    });
}

/// A server that speaks HTTP/2 but never answers a request.
async fn mute_http2_server(listener: glommio::net::TcpListener) {
    use tokio_util::compat::FuturesAsyncReadCompatExt;
    let stream = listener.accept().await.unwrap();
    let mut conn = h2::server::handshake(stream.compat()).await.unwrap();
    let mut held = Vec::new();
    while let Some(Ok(req)) = conn.accept().await {
        held.push(req);
    }
}

#[test]
fn dial_failures_and_timeouts() {
    // Nothing listens on a port we just took and released: the dial fails fast.
    let port = common::free_port();
    let refused = ClientOptions::new(vec![format!("127.0.0.1:{port}")]);
    // A listener that accepts and never answers: the HTTP/2 handshake never completes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut mute = ClientOptions::new(vec![silent.local_addr().unwrap().to_string()]);
    mute.dial_timeout = Duration::from_millis(300);
    run_local(move || async move {
        assert!(matches!(
            Client::connect(refused).await,
            Err(ClientError::Transport(_))
        ));
        match Client::connect(mute).await {
            Err(ClientError::Transport(m)) => assert!(m.contains("timeout"), "{m}"),
            Err(e) => panic!("unexpected error {e:?}"),
            Ok(_) => panic!("a silent server completed an HTTP/2 handshake"),
        }
        // A server that never answers a call: the call times out, nothing else does.
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut opts = ClientOptions::new(vec![listener.local_addr().unwrap().to_string()]);
        opts.command_timeout = Duration::from_millis(200);
        let _server = glommio::spawn_local(mute_http2_server(listener));
        let client = Client::connect(opts).await.unwrap();
        assert_eq!(client.range(get("k")).await, Err(ClientError::Timeout));
        assert_eq!(
            ClientError::Timeout.to_string(),
            "context deadline exceeded"
        );
    });
    drop(silent);
}

#[test]
fn endpoints_are_tried_in_order() {
    let etcd = Server::start(Kind::Etcd);
    let dead = format!("127.0.0.1:{}", common::free_port());
    let opts = ClientOptions::new(vec![dead, format!("http://{}", etcd.endpoint())]);
    run_local(move || async move {
        let client = Client::connect(opts).await.unwrap();
        assert!(client.endpoint().starts_with("http://"));
        client.put(put("x", "y")).await.unwrap();
    });
}

#[test]
fn a_broken_connection_is_redialed_by_the_next_call() {
    let mut etcd = Server::start(Kind::Etcd);
    let opts = options(&etcd);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let client_thread = std::thread::spawn(move || {
        run_local(move || async move {
            let client = Client::connect(opts).await.unwrap();
            client.put(put("persist", "yes")).await.unwrap();
            done_tx.send(()).unwrap();
            // Wait (off the executor) until the test has restarted etcd.
            let rx = std::sync::Mutex::new(rx);
            glommio::executor()
                .spawn_blocking(move || rx.lock().unwrap().recv().unwrap())
                .await;
            // The first call may still see the old connection fail; the next one redials.
            let first = client.range(get("persist")).await;
            let resp = match first {
                Ok(r) => r,
                Err(ClientError::Transport(_)) => client.range(get("persist")).await.unwrap(),
                Err(e) => panic!("unexpected error {e:?}"),
            };
            assert_eq!(resp.kvs[0].value, "yes");
        })
    });
    done_rx.recv().unwrap();
    etcd.restart();
    tx.send(()).unwrap();
    client_thread.join().unwrap();
}

#[test]
fn watch_stream_delivers_events_in_order() {
    let etcd = Server::start(Kind::Etcd);
    let opts = options(&etcd);
    run_local(move || async move {
        let client = Client::connect(opts).await.unwrap();
        let (mut tx, mut rx) = client.watch().await.unwrap();
        let create = pb::WatchCreateRequest {
            key: "w/".into(),
            range_end: "w0".into(),
            prev_kv: true,
            ..Default::default()
        };
        tx.send(&pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        })
        .await
        .unwrap();
        let created = rx.message().await.unwrap().unwrap();
        assert!(created.created);
        for i in 0..5 {
            client.put(put(&format!("w/{i}"), "a")).await.unwrap();
        }
        client.put(put("w/0", "b")).await.unwrap();
        client
            .delete_range(pb::DeleteRangeRequest {
                key: "w/".into(),
                range_end: "w0".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut events = Vec::new();
        while events.len() < 11 {
            let r = rx.message().await.unwrap().unwrap();
            assert_eq!(r.watch_id, created.watch_id);
            events.extend(r.events);
        }
        let revs: Vec<i64> = events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect();
        // Puts at revisions 2..=7; the delete of all five keys is one revision, 8.
        assert_eq!(revs, vec![2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 8]);
        assert!(events[..6]
            .iter()
            .all(|e| e.r#type == EventType::Put as i32));
        assert!(events[6..]
            .iter()
            .all(|e| e.r#type == EventType::Delete as i32));
        assert_eq!(events[5].prev_kv.as_ref().unwrap().value, "a");
        // Cancel it, then a watch from a compacted revision is canceled by the server.
        client
            .compact(pb::CompactionRequest {
                revision: 5,
                physical: true,
            })
            .await
            .unwrap();
        tx.send(&pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
                pb::WatchCancelRequest {
                    watch_id: created.watch_id,
                },
            )),
        })
        .await
        .unwrap();
        let canceled = rx.message().await.unwrap().unwrap();
        assert!(canceled.canceled);
        let old = pb::WatchCreateRequest {
            key: "w/0".into(),
            start_revision: 2,
            ..Default::default()
        };
        tx.send(&pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(old)),
        })
        .await
        .unwrap();
        let mut r = rx.message().await.unwrap().unwrap();
        if r.created && !r.canceled {
            r = rx.message().await.unwrap().unwrap();
        }
        assert!(r.canceled);
        assert_eq!(r.compact_revision, 5);
        tx.close();
    });
}

#[test]
fn keep_alive_stream_renews_and_reports_revocation() {
    let etcd = Server::start(Kind::Etcd);
    let opts = options(&etcd);
    run_local(move || async move {
        let client = Client::connect(opts).await.unwrap();
        let lease = client
            .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
            .await
            .unwrap();
        assert_eq!(lease.ttl, 60);
        let (mut tx, mut rx) = client.lease_keep_alive().await.unwrap();
        for _ in 0..3 {
            tx.send(&pb::LeaseKeepAliveRequest { id: lease.id })
                .await
                .unwrap();
            let r = rx.message().await.unwrap().unwrap();
            assert_eq!((r.id, r.ttl), (lease.id, 60));
        }
        client
            .lease_revoke(pb::LeaseRevokeRequest { id: lease.id })
            .await
            .unwrap();
        tx.send(&pb::LeaseKeepAliveRequest { id: lease.id })
            .await
            .unwrap();
        let r = rx.message().await.unwrap().unwrap();
        assert_eq!(r.ttl, 0);
        tx.close();
        assert!(rx.message().await.unwrap().is_none());
    });
}

/// Polls until `prefix` holds `n` keys (a contender queues by writing its key).
async fn wait_for_keys(client: &Client, prefix: &str, n: i64) {
    let end = corekv::client::prefix_range_end(prefix.as_bytes());
    loop {
        let r = client
            .range(pb::RangeRequest {
                key: prefix.as_bytes().to_vec().into(),
                range_end: end.clone().into(),
                count_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        if r.count == n {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn mutex_excludes_and_hands_over_in_order() {
    let etcd = Server::start(Kind::Etcd);
    let opts = options(&etcd);
    run_local(move || async move {
        let client = Client::connect(opts).await.unwrap();
        let s1 = Session::new(&client, 30).await.unwrap();
        let mut m1 = Mutex::new(&s1, "mtx");
        m1.lock().await.unwrap();
        assert_eq!(m1.key(), format!("mtx/{:x}", s1.lease()).as_bytes());

        let acquired = Rc::new(Cell::new(false));
        let flag = acquired.clone();
        let c2 = client.clone();
        let waiter = glommio::spawn_local(async move {
            let s2 = Session::new(&c2, 30).await.unwrap();
            let mut m2 = Mutex::new(&s2, "mtx");
            m2.lock().await.unwrap();
            flag.set(true);
            m2.unlock().await.unwrap();
            s2.close().await.unwrap();
        });
        // Wait until the second contender's key is there: it is now queued behind us.
        wait_for_keys(&client, "mtx/", 2).await;
        assert!(!acquired.get(), "two holders of one lock");
        m1.unlock().await.unwrap();
        waiter.await;
        assert!(acquired.get());
        s1.close().await.unwrap();
    });
}

#[test]
fn election_leader_changes_on_resign() {
    let etcd = Server::start(Kind::Etcd);
    let opts = options(&etcd);
    run_local(move || async move {
        let client = Client::connect(opts).await.unwrap();
        let s1 = Session::new(&client, 30).await.unwrap();
        let mut e1 = Election::new(&s1, "el");
        e1.campaign(b"one").await.unwrap();
        let leader = election_leader(&client, "el").await.unwrap().unwrap();
        assert_eq!(leader.kvs[0].value, "one");
        e1.proclaim(b"uno").await.unwrap();

        let c2 = client.clone();
        let second = glommio::spawn_local(async move {
            let s2 = Session::new(&c2, 30).await.unwrap();
            let mut e2 = Election::new(&s2, "el");
            e2.campaign(b"two").await.unwrap();
            let leader = election_leader(&c2, "el").await.unwrap().unwrap();
            assert_eq!(leader.kvs[0].value, "two");
            e2.resign().await.unwrap();
            s2.close().await.unwrap();
        });
        wait_for_keys(&client, "el/", 2).await;
        let leader = election_leader(&client, "el").await.unwrap().unwrap();
        assert_eq!(leader.kvs[0].value, "uno");
        e1.resign().await.unwrap();
        second.await;
        assert!(election_leader(&client, "el").await.unwrap().is_none());
        s1.close().await.unwrap();
    });
}
