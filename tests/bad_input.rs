//! Bad input gets a clear answer and costs nothing else: bad flags, a taken port, garbage on
//! the client port, malformed gRPC, oversized requests, unknown methods, a URL as :authority.

mod common;

use std::process::Command;

use bytes::{BufMut, Bytes, BytesMut};
use common::grpc::{frame, raw_call};
use common::{corekv_bin, free_port, http_get, DieWithTest, Kind, Server};
use etcd_client::Client;

fn run_corekv(args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(corekv_bin())
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .args(args)
        .die_with_test()
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_fail_with_one_line() {
    for (args, needle) in [
        (&["--no-such-flag"][..], "--no-such-flag"),
        (
            &["--listen-client-urls", "localhost:2379"],
            "--listen-client-urls",
        ),
        (
            &["--listen-client-urls", "http://127.0.0.1:99999"],
            "--listen-client-urls",
        ),
        (
            &["--initial-cluster-state", "maybe"],
            "--initial-cluster-state",
        ),
        (&["--max-txn-ops", "lots"], "--max-txn-ops"),
    ] {
        let (code, err) = run_corekv(args);
        assert_ne!(code, 0, "{args:?} was accepted");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn a_port_in_use_is_refused_with_one_line() {
    let first = Server::start(Kind::Corekv);
    let peer = format!("http://127.0.0.1:{}", free_port());
    let (code, err) = run_corekv(&[
        "--listen-client-urls",
        &first.url(),
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("in use"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // The first server is unharmed.
    assert!(first.etcdctl(&["put", "k", "v"]).status.success());
}

#[test]
fn garbage_on_the_client_peer_and_metrics_ports_closes_that_connection_only() {
    let metrics_port = free_port();
    let s = Server::start_with(
        Kind::Corekv,
        &[&format!(
            "--listen-metrics-urls=http://127.0.0.1:{metrics_port}"
        )],
    );
    let random = common::random_bytes(64 << 10, 0x9e37_79b9_7f4a_7c15);
    let garbage: [&[u8]; 6] = [
        b"\x00\x01\x02garbage\xff",
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        common::TLS_HELLO,
        &random,
        // (An HTTP/1.1 client on the client or metrics port is answered and kept alive
        // unless it says otherwise.)
        b"GET /raft/stream/message/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /etcdserverpb.KV/Range HTTP/1.1\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    ];
    for port in [s.client_port, s.peer_port, metrics_port] {
        for g in garbage {
            common::send_garbage(port, g);
        }
    }
    // gRPC's path over HTTP/1 gets a clear answer, not silence.
    let answer = common::send_garbage(s.client_port, garbage[5]);
    assert!(
        answer.starts_with(b"HTTP/1.1 405"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(s.etcdctl(&["put", "k", "v"]).status.success());
    assert!(String::from_utf8_lossy(&s.etcdctl(&["get", "k"]).stdout).contains('v'));
    assert_eq!(
        common::http_get(metrics_port, "/health").as_deref(),
        Some(r#"{"health":"true"}"#)
    );
    // What came to the peer port is logged for what it is.
    assert!(s.log().contains("not a corekv peer"), "{}", s.log());
}

#[test]
fn http1_endpoints_answer() {
    let s = Server::start(Kind::Corekv);
    assert_eq!(
        http_get(s.client_port, "/health").unwrap(),
        r#"{"health":"true"}"#
    );
    let v: serde_json::Value =
        serde_json::from_str(&http_get(s.client_port, "/version").unwrap()).unwrap();
    assert!(v["etcdserver"].as_str().unwrap().starts_with("3.4"));
    assert!(s.etcdctl(&["put", "k", "v"]).status.success());
    let m = http_get(s.client_port, "/metrics").unwrap();
    assert!(
        m.contains(
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",\
             grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1\n"
        ),
        "{m}"
    );
    assert!(m.contains("etcd_disk_wal_fsync_duration_seconds_count"));
    assert!(m.contains("etcd_server_proposals_applied_total"));
    assert!(http_get(s.client_port, "/nope").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_fails_that_stream_only() {
    let s = Server::start(Kind::Corekv);
    let port = s.client_port;
    // A protobuf that does not parse (a field with a truncated length).
    let (status, msg) = raw_call(port, "/etcdserverpb.KV/Put", frame(&[0x0a, 0xff, 0x01])).await;
    assert_eq!(status, "13", "{msg}");
    // A frame whose length prefix promises more than arrives.
    let mut short = frame(b"\x0a\x01k").to_vec();
    short[4] = 50;
    let (status, _) = raw_call(port, "/etcdserverpb.KV/Put", Bytes::from(short)).await;
    assert_eq!(status, "13");
    // A frame over the gRPC receive limit is refused before it is buffered.
    let mut huge = BytesMut::new();
    huge.put_u8(0);
    huge.put_u32(u32::MAX);
    let (status, msg) = raw_call(port, "/etcdserverpb.KV/Put", huge.freeze()).await;
    assert_eq!(status, "8", "{msg}");
    let (status, msg) = raw_call(port, "/etcdserverpb.KV/NoSuchMethod", frame(b"")).await;
    assert_eq!(status, "12", "{msg}");
    let (status, _) = raw_call(port, "/grpc.health.v1.Health/Check", frame(b"")).await;
    assert_eq!(status, "0");
    // Everyone else is still served.
    let mut c = Client::connect([s.endpoint()], None).await.unwrap();
    c.put("still", "here", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_get_etcds_errors() {
    let s = Server::start_with(Kind::Corekv, &["--max-request-bytes", "100000"]);
    let mut c = Client::connect([s.endpoint()], None).await.unwrap();
    let err = c.put("big", vec![b'x'; 200_000], None).await.unwrap_err();
    assert!(
        err.to_string().contains("etcdserver: request is too large"),
        "{err}"
    );
    let err = c
        .put("bigger", vec![b'x'; 700_000], None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than max"), "{err}");
    c.put("small", vec![b'x'; 50_000], None).await.unwrap();
    let r = c.get("small", None).await.unwrap();
    assert_eq!(r.kvs()[0].value().len(), 50_000);
}

/// etcdctl 3.4 sends the endpoint as written, `http://host:port`, as the HTTP/2 :authority of
/// its Maintenance calls. That is not a valid authority, but etcd serves it, so corekv does
/// too (third_party/h2/PATCHED.md).
#[test]
fn a_url_as_http2_authority_is_served() {
    let s = Server::start(Kind::Corekv);
    let url = s.url();
    for args in [
        vec!["--endpoints", &url, "endpoint", "status"],
        vec!["--endpoints", &url, "defrag"],
        vec!["endpoint", "status", "--cluster"],
        vec!["--endpoints", &url, "put", "k", "v"],
    ] {
        let out = s.etcdctl(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.is_empty(), "etcdctl {args:?} printed nothing");
    }
    let out = s.etcdctl(&["--endpoints", &url, "endpoint", "status", "-w", "json"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"revision\":2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
