//! etcd's JSON gateway, differentially: the same HTTP/1.1 requests go to etcd 3.4's gateway
//! and to corekv's, and the answers (status, content type, JSON) must be the same.
//!
//! Both servers start fresh and advertise the same peer URL, so their member and cluster
//! IDs and every revision are the same; what is normalized is only what must differ: the
//! raft term, the client URLs (other ports), Status's version and sizes and raft indexes,
//! the ID of a member added at a time of its own, and the wording of JSON decoding errors
//! (Go's encoding/json vs serde_json: the status and code must still match).
//!
//! The client and the pair are in tests/common/gateway.rs (shared with tests/gateway_auth.rs).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::gateway::{b64, connect, normalize, pair, Stream};
use common::{free_port, Kind, Server};
use serde_json::{json, Value};

#[test]
fn kv_lease_and_errors_match_etcd() {
    let mut p = pair();
    let foo = b64("foo");
    // KV, on /v3 and /v3beta, with Content-Length and chunked bodies.
    let put = p.same(
        "/v3/kv/put",
        &format!(r#"{{"key":"{foo}","value":"{}"}}"#, b64("bar")),
    );
    assert_eq!(put["header"]["revision"], "2");
    p.same_as(
        "/v3beta/kv/put",
        &format!(
            r#"{{"key":"{foo}","value":"{}","prev_kv":true}}"#,
            b64("baz")
        ),
        true,
    );
    for k in ["foo1", "foo2", "goo"] {
        p.same(
            "/v3/kv/put",
            &format!(r#"{{"key":"{}","value":"{}"}}"#, b64(k), b64(k)),
        );
    }
    let got = p.same("/v3/kv/range", &format!(r#"{{"key":"{foo}"}}"#));
    assert_eq!(got["kvs"][0]["value"], b64("baz"));
    assert_eq!(got["count"], "1");
    p.same(
        "/v3/kv/range",
        &format!(
            r#"{{"key":"{foo}","range_end":"{}","limit":2,"sort_order":"DESCEND","sort_target":"MOD"}}"#,
            b64("fop")
        ),
    );
    p.same(
        "/v3/kv/range",
        &format!(
            r#"{{"key":"{foo}","range_end":"{}","keys_only":true,"serializable":true}}"#,
            b64("fop")
        ),
    );
    p.same(
        "/v3/kv/range",
        r#"{"key":"AA==","range_end":"AA==","count_only":true}"#,
    );
    p.same(
        "/v3/kv/range",
        &format!(r#"{{"key":"{}"}}"#, b64("missing")),
    );
    // Unknown fields are ignored, as etcd's gateway ignores them; field names in camelCase
    // are accepted too; what follows the first JSON value is not read.
    p.same(
        "/v3/kv/range",
        &format!(r#"{{"key":"{foo}","bogus":[1,2]}}"#),
    );
    p.same(
        "/v3/kv/range",
        &format!(r#"{{"key":"{foo}","keysOnly":true}} trailing"#),
    );
    p.same(
        "/v3/kv/deleterange",
        &format!(r#"{{"key":"{}","prev_kv":true}}"#, b64("goo")),
    );
    let txn = format!(
        r#"{{"compare":[{{"key":"{foo}","target":"VERSION","result":"EQUAL","version":"2"}},
            {{"key":"{foo}","target":"VALUE","result":"GREATER","value":"{}"}}],
          "success":[{{"request_put":{{"key":"{}","value":"{}"}}}},{{"request_range":{{"key":"{foo}"}}}},
            {{"request_txn":{{"success":[{{"request_delete_range":{{"key":"{}"}}}}]}}}}],
          "failure":[{{"request_range":{{"key":"{foo}"}}}}]}}"#,
        b64("a"),
        b64("t"),
        b64("1"),
        b64("foo1")
    );
    let t = p.same("/v3/kv/txn", &txn);
    assert_eq!(t["succeeded"], true, "{t}");
    p.same("/v3/kv/txn", &txn); // now the compare fails
    p.same("/v3/kv/compaction", r#"{"revision":"4"}"#);

    // Errors from the server, with grpc-gateway's status per code.
    let compacted = p.same(
        "/v3/kv/range",
        &format!(r#"{{"key":"{foo}","revision":2}}"#),
    );
    assert_eq!(compacted["code"], 11);
    p.same(
        "/v3/kv/range",
        &format!(r#"{{"key":"{foo}","revision":1000}}"#),
    );
    p.same("/v3/kv/compaction", r#"{"revision":"3"}"#);
    p.same("/v3/kv/range", "{}");
    p.same("/v3/kv/range", "");
    p.same(
        "/v3/kv/put",
        &format!(r#"{{"key":"{foo}","lease":"12345"}}"#),
    );
    p.same(
        "/v3/kv/put",
        &format!(r#"{{"key":"{}","ignore_value":true}}"#, b64("nokey")),
    );

    // Leases, on both of etcd's paths.
    let g = p.same("/v3/lease/grant", r#"{"TTL":60,"ID":1000}"#);
    assert_eq!(g["ID"], "1000");
    assert_eq!(
        p.same("/v3/lease/grant", r#"{"TTL":60,"ID":1000}"#)["code"],
        9
    );
    p.same("/v3/lease/grant", r#"{"TTL":"10000000000"}"#);
    p.same(
        "/v3/kv/put",
        &format!(r#"{{"key":"{}","value":"","lease":1000}}"#, b64("leased")),
    );
    // The remaining TTL depends on when each server is asked: checked, then compared without.
    let [e, c] = p.raw(
        "POST",
        "/v3/lease/timetolive",
        r#"{"ID":1000,"keys":true}"#,
        false,
    );
    let mut ttls = [e.json(), c.json()];
    for t in ttls.iter_mut() {
        let left: i64 = t["TTL"].as_str().unwrap().parse().unwrap();
        assert!((50..=60).contains(&left), "{t}");
        t.as_object_mut().unwrap().remove("TTL");
        normalize(t);
    }
    assert_eq!(ttls[0], ttls[1]);
    assert_eq!(ttls[0]["keys"][0], b64("leased"));
    p.same("/v3/kv/lease/timetolive", r#"{"ID":"999"}"#);
    p.same("/v3/lease/leases", "{}");
    p.same("/v3/kv/lease/leases", "{}");
    p.same("/v3/kv/lease/revoke", r#"{"ID":1000}"#);
    assert_eq!(p.same("/v3/lease/revoke", r#"{"ID":1000}"#)["code"], 5);

    // Requests the JSON decoders refuse: same status and code, each decoder's wording.
    for bad in [
        r#"{"key":"#,
        r#"{"key":123}"#,
        r#"{"key":"%%%"}"#,
        r#"{"key":"Zm9v","limit":"abc"}"#,
        r#"{"key":"Zm9v","limit":{}}"#,
        r#"[]"#,
        r#"{"key":"Zm9v","sort_order":"SIDEWAYS"}"#,
    ] {
        assert_eq!(p.same_error("/v3/kv/range", bad), (400, 3), "{bad}");
    }
    // Too large: the request limit (1.5 MiB), then gRPC's receive limit (2 MiB).
    let big = |n: usize| {
        use base64::Engine;
        let value = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; n]);
        format!(r#"{{"key":"{foo}","value":"{value}"}}"#)
    };
    assert_eq!(p.same("/v3/kv/put", &big(1_600_000))["code"], 3);
    let over = p.same("/v3/kv/put", &big(2_200_000));
    assert_eq!(over["code"], 8, "{over}");
    // Paths and methods the gateway does not serve.
    assert_eq!(p.same_text("POST", "/v3/kv/nope").0, 404);
    assert_eq!(p.same_text("POST", "/v3alpha/kv/range").0, 404);
    assert_eq!(p.same_text("GET", "/v3/kv/range").0, 405);
    assert_eq!(p.same_text("PUT", "/v3/kv/put").0, 405);
    // The keep-alive connections served everything above; both still answer.
    p.same("/v3/kv/range", &format!(r#"{{"key":"{foo}"}}"#));
}

#[test]
fn cluster_and_maintenance_match_etcd() {
    let mut p = pair();
    let list = p.same("/v3/cluster/member/list", "{}");
    let me = list["members"][0]["ID"].as_str().unwrap().to_string();
    assert_eq!(list["members"][0]["name"], "default");
    let peer = list["members"][0]["peerURLs"][0]
        .as_str()
        .unwrap()
        .to_string();
    p.same(
        "/v3/cluster/member/update",
        &format!(r#"{{"ID":"{me}","peerURLs":["{peer}"]}}"#),
    );
    p.same(
        "/v3/cluster/member/update",
        r#"{"ID":"12345","peerURLs":["http://127.0.0.1:1"]}"#,
    );
    p.same("/v3/cluster/member/add", r#"{"peerURLs":["not a url"]}"#);
    p.same(
        "/v3/cluster/member/add",
        &format!(r#"{{"peerURLs":["{peer}"]}}"#),
    );
    p.same("/v3/cluster/member/promote", &format!(r#"{{"ID":"{me}"}}"#));
    p.same("/v3/cluster/member/remove", r#"{"ID":"12345"}"#);
    // A learner (its ID includes the time of the add, so it differs between the two).
    let learner_url = format!("http://127.0.0.1:{}", free_port());
    let [e, c] = p.raw(
        "POST",
        "/v3/cluster/member/add",
        &format!(r#"{{"peerURLs":["{learner_url}"],"isLearner":true}}"#),
        false,
    );
    let mut ids = Vec::new();
    let mut shapes = Vec::new();
    for r in [&e, &c] {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let mut j = r.json();
        let id = j["member"]["ID"].as_str().unwrap().to_string();
        for m in j["members"].as_array_mut().unwrap() {
            if m["ID"] == id.as_str() {
                m["ID"] = json!("<learner>");
            }
        }
        j["member"]["ID"] = json!("<learner>");
        normalize(&mut j);
        ids.push(id);
        shapes.push(j);
    }
    assert_eq!(shapes[0], shapes[1]);
    assert_eq!(shapes[0]["member"]["isLearner"], true);
    for (i, id) in ids.iter().enumerate() {
        let body = format!(r#"{{"ID":"{id}"}}"#);
        let mut conn = connect(p.port(i));
        let promote = conn.call("POST", "/v3/cluster/member/promote", body.as_bytes(), false);
        assert_eq!(
            promote.status,
            412,
            "{}",
            String::from_utf8_lossy(&promote.body)
        );
        let removed = conn.call("POST", "/v3/cluster/member/remove", body.as_bytes(), false);
        assert_eq!(
            removed.status,
            200,
            "{}",
            String::from_utf8_lossy(&removed.body)
        );
    }
    p.same("/v3/cluster/member/list", "{}");

    let status = p.same("/v3/maintenance/status", "{}");
    assert_eq!(status["leader"], me.as_str());
    p.same("/v3/maintenance/alarm", "{}");
    p.same("/v3/maintenance/alarm", r#"{"action":"GET"}"#);
    p.same(
        "/v3/maintenance/alarm",
        r#"{"action":"DEACTIVATE","alarm":"NOSPACE"}"#,
    );
    p.same("/v3/maintenance/defragment", "{}");
    p.same("/v3beta/maintenance/status", "{}");
    p.same(
        "/v3/maintenance/transfer-leadership",
        r#"{"targetID":"12345"}"#,
    );
    // etcd's mux serves Maintenance.Hash on /v3/maintenance/hash (HashKV's path too). The
    // hash is over each server's own backend format, so only the shape is compared; it is
    // stable while nothing is written.
    let [e, c] = p.raw("POST", "/v3/maintenance/hash", "{}", false);
    assert_eq!((e.status, c.status), (200, 200));
    let (e, c) = (e.json(), c.json());
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&e), keys(&c), "etcd {e} corekv {c}");
    assert!(c["hash"].is_u64(), "{c}");
    let [_, again] = p.raw("POST", "/v3/maintenance/hash", "{}", false);
    assert_eq!(again.json()["hash"], c["hash"]);
}

#[test]
fn watch_and_keepalive_streams_match_etcd() {
    let mut p = pair();
    let foo = b64("foo");
    p.same(
        "/v3/kv/put",
        &format!(r#"{{"key":"{foo}","value":"{}"}}"#, b64("v1")),
    );
    p.same(
        "/v3/kv/put",
        &format!(r#"{{"key":"{foo}","value":"{}"}}"#, b64("v2")),
    );
    p.same("/v3/lease/grant", r#"{"TTL":60,"ID":7}"#);

    let mut streams = Vec::new();
    for i in 0..2 {
        // History from revision 2, a second watcher with filters and prev_kv, progress.
        let body = format!(
            r#"{{"create_request":{{"key":"{foo}","start_revision":2}}}}
               {{"create_request":{{"key":"{foo}","prev_kv":true,"filters":["NODELETE"],"watch_id":5}}}}
               {{"progress_request":{{}}}}"#
        );
        let (status, mut w) = Stream::open(p.port(i), "/v3/watch", &body);
        assert_eq!(status, 200);
        // created, history, created, progress: read all before writing more.
        let lines: Vec<Value> = (0..4).map(|_| w.next()).collect();
        streams.push((w, lines));
    }
    let (a, b) = (&streams[0].1, &streams[1].1);
    // The history replay and the other watcher's answers may interleave in any order.
    let norm = |v: &[Value]| {
        let mut v = v.to_vec();
        v.iter_mut().for_each(normalize);
        v.sort_by_key(|l| l.to_string());
        v
    };
    assert_eq!(norm(a), norm(b), "watch: etcd (left) vs corekv (right)");
    assert_eq!(a[0]["result"]["created"], true);

    p.same(
        "/v3/kv/put",
        &format!(r#"{{"key":"{foo}","value":"{}"}}"#, b64("v3")),
    );
    p.same("/v3/kv/deleterange", &format!(r#"{{"key":"{foo}"}}"#));
    let mut after = Vec::new();
    for (w, _) in streams.iter_mut() {
        // put: both watchers; delete: the first only (the second filters deletes).
        let mut lines: Vec<Value> = (0..3).map(|_| w.next()).collect();
        // The two watchers' events for one revision may come in either order.
        lines.sort_by_key(|l| l.to_string());
        lines.iter_mut().for_each(normalize);
        after.push(lines);
    }
    assert_eq!(
        after[0], after[1],
        "watch events: etcd (left) vs corekv (right)"
    );

    // A start revision that was compacted: created, then canceled with compact_revision.
    p.same("/v3/kv/compaction", r#"{"revision":"3"}"#);
    let mut compacted = Vec::new();
    for i in 0..2 {
        let body = format!(r#"{{"create_request":{{"key":"{foo}","start_revision":2}}}}"#);
        let (_, mut w) = Stream::open(p.port(i), "/v3/watch", &body);
        let mut lines = vec![w.next(), w.next()];
        lines.iter_mut().for_each(normalize);
        compacted.push(lines);
    }
    assert_eq!(compacted[0], compacted[1]);
    assert_eq!(compacted[0][1]["result"]["compact_revision"], "3");

    // Keep-alive: a live lease gets its TTL, an unknown one none.
    let mut kept = Vec::new();
    for i in 0..2 {
        let (status, mut k) =
            Stream::open(p.port(i), "/v3/lease/keepalive", r#"{"ID":7} {"ID":"8"}"#);
        assert_eq!(status, 200);
        let mut lines = vec![k.next(), k.next()];
        lines.iter_mut().for_each(normalize);
        kept.push(lines);
        // Its body has ended: both answer what was asked and end the stream, and the
        // connection serves the next request.
        assert!(k.conn.chunk().is_none(), "the keep-alive stream ended");
        let r = k.conn.call("POST", "/v3/lease/leases", b"{}", false);
        assert_eq!(r.status, 200);
    }
    assert_eq!(kept[0], kept[1]);
    assert_eq!(kept[0][0]["result"]["TTL"], "60");
    assert!(kept[0][1]["result"].get("TTL").is_none());

    // A first stream request that is not valid JSON: a plain error, 500, code 2.
    for (path, body) in [
        ("/v3/watch", r#"{"create_request":{"key":5}}"#),
        ("/v3/lease/keepalive", r#"{"ID":"x"}"#),
    ] {
        for i in 0..2 {
            let r = connect(p.port(i)).call("POST", path, body.as_bytes(), false);
            assert_eq!(
                r.status,
                500,
                "{path}: {}",
                String::from_utf8_lossy(&r.body)
            );
            let j = r.json();
            assert_eq!(
                (&j["code"], j.as_object().unwrap().len()),
                (&json!(2), 3),
                "{j}"
            );
        }
    }
}

/// The watchers corekv counts (`etcd_debugging_mvcc_watcher_total`, as etcd names it).
fn watchers(port: u16) -> i64 {
    let metrics = common::http_get(port, "/metrics").expect("/metrics answers");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("etcd_debugging_mvcc_watcher_total is exported")
}

/// Waits (bounded) until `f` holds; the wait is for the server to notice a closed socket.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn corekv_gateway_survives_bad_input_serves_http2_and_frees_streams() {
    let s = Server::start(Kind::Corekv);
    let port = s.client_port;
    let foo = b64("foo");
    let put = format!(r#"{{"key":"{foo}","value":"{}"}}"#, b64("bar"));
    let mut c = connect(port);
    assert_eq!(
        c.call("POST", "/v3/kv/put", put.as_bytes(), false).status,
        200
    );

    // Malformed HTTP: a chunk size that is not hex, a Content-Length that is not a number,
    // one far over the limit (refused before the body is read), a body cut short.
    let raw = |req: &[u8]| {
        let mut t = TcpStream::connect(("127.0.0.1", port)).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        t.write_all(req).unwrap();
        let _ = t.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = t.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let r = raw(
        b"POST /v3/kv/range HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw(b"POST /v3/kv/range HTTP/1.1\r\nContent-Length: x\r\n\r\n{}");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw(b"POST /v3/kv/put HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n{}");
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    assert!(r.contains(r#""code":8"#), "{r}");
    let r = raw(b"POST /v3/kv/range HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"key\":");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // The server is fine, and the keep-alive connection from before still works.
    let got = c.call(
        "POST",
        "/v3/kv/range",
        format!(r#"{{"key":"{foo}"}}"#).as_bytes(),
        false,
    );
    assert_eq!(got.json()["kvs"][0]["value"], b64("bar"));

    // HTTP/2 (prior knowledge, as gRPC clients connect): the same JSON as HTTP/1.1.
    let out = std::process::Command::new(common::require_binary("curl"))
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{port}/v3/kv/range"))
        .args(["-d", &format!(r#"{{"key":"{foo}"}}"#)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, version) = text.rsplit_once('\n').unwrap();
    assert_eq!(version, "2 200", "{text}");
    assert_eq!(serde_json::from_str::<Value>(body).unwrap(), got.json());

    // A watch whose client leaves is cancelled on the server: nothing leaks.
    assert_eq!(watchers(port), 0);
    let (_, mut w) = Stream::open(
        port,
        "/v3/watch",
        &format!(r#"{{"create_request":{{"key":"{foo}"}}}}"#),
    );
    // The answer's head comes with the first result, as etcd's gateway sends it: once a client
    // has the head, its watch exists (etcd3gw's `watch()` returns then, and a put made right
    // after must be seen; corekv sent the head before the watch was created).
    assert_eq!(watchers(port), 1);
    assert_eq!(w.next()["result"]["created"], true);
    drop(w);
    eventually("the watcher of a closed connection is removed", || {
        watchers(port) == 0
    });
    // The same over HTTP/2.
    let mut curl = std::process::Command::new(common::require_binary("curl"))
        .args(["-s", "-N", "--http2-prior-knowledge"])
        .arg(format!("http://127.0.0.1:{port}/v3/watch"))
        .args(["-d", &format!(r#"{{"create_request":{{"key":"{foo}"}}}}"#)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(curl.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains(r#""created":true"#), "{first}");
    assert_eq!(watchers(port), 1);
    curl.kill().unwrap();
    curl.wait().unwrap();
    eventually("the watcher of a reset HTTP/2 stream is removed", || {
        watchers(port) == 0
    });
}

/// `/v3/maintenance/snapshot`: lines of `{"result":{"remaining_bytes","blob"}}` counting down,
/// then one whose blob is the SHA-256 of every blob before it, as etcd 3.4's gateway streams
/// them (no header: etcd's Snapshot replies have none). The bytes differ (bolt vs corekv's
/// backend); the shape must not.
#[test]
fn snapshot_stream_has_etcds_shape() {
    use sha2::{Digest, Sha256};
    let p = pair();
    for server in &p.servers {
        let who = server.kind.name();
        let mut conn = connect(server.client_port);
        let r = conn.call("POST", "/v3/maintenance/snapshot", b"{}", false);
        assert_eq!(r.status, 200, "{who}");
        assert_eq!(r.content_type, "application/json", "{who}");
        let lines: Vec<Value> = r
            .body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert!(lines.len() >= 2, "{who}: {} lines", lines.len());
        let mut digest = Sha256::new();
        let mut sent = 0u64;
        let (data, last) = lines.split_at(lines.len() - 1);
        for l in data {
            let result = l["result"]
                .as_object()
                .unwrap_or_else(|| panic!("{who}: {l}"));
            assert!(
                result.keys().all(|k| k == "remaining_bytes" || k == "blob"),
                "{who}: {l}"
            );
            let blob = base64_decode(result["blob"].as_str().unwrap());
            assert!(blob.len() <= 32 * 1024, "{who}: a chunk of {}", blob.len());
            digest.update(&blob);
            sent += blob.len() as u64;
        }
        let total: u64 = sent;
        let remaining: Vec<u64> = data
            .iter()
            .map(|l| {
                l["result"]["remaining_bytes"]
                    .as_str()
                    .map_or(0, |s| s.parse().unwrap())
            })
            .collect();
        assert_eq!(remaining.last(), Some(&0), "{who}");
        assert!(remaining.windows(2).all(|w| w[0] > w[1]), "{who}");
        assert!(remaining[0] < total, "{who}");
        let sha = base64_decode(last[0]["result"]["blob"].as_str().unwrap());
        assert_eq!(sha, digest.finalize().to_vec(), "{who}");
        assert!(last[0]["result"].get("remaining_bytes").is_none(), "{who}");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}
