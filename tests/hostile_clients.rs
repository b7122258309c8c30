//! Hostile or broken clients on the client and peer ports: thousands of idle connections,
//! slowloris (half a preface, frame, HTTP/1 head or peer handshake, stalled or trickled),
//! clients that never read their replies, 10,000 streams on one connection, a flood of
//! 1.5 MiB puts (also on one connection through the proxy), huge and deeply nested txns, huge
//! range results, garbage on every port. In each case corekv keeps serving a normal client and
//! its heap (RssAnon) stays within a stated bound; nothing here asserts how long anything
//! takes (deadlines only bound failures).
//!
//! `etcd_in_the_same_cases` (ignored; `cargo test --release --test hostile_clients --
//! --ignored --nocapture`) runs the same cases against etcd 3.4 and prints what it does.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::grpc::frame;
use common::proxy::Proxy;
use common::{rss_anon, Kind, Server};
use corekv::proto::etcdserverpb as pb;
use etcd_client::{Client, GetOptions};
use prost::Message as _;

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// How long a case may take before it counts as failed (only a broken server gets near it).
const FAILURE_BOUND: Duration = Duration::from_secs(90);

/// Raises this process's open-file limit (which the servers it starts inherit) to `want`
/// if the hard limit allows; the soft limit now in force.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// A put and a get on a fresh connection: the server still serves everyone else.
async fn still_serves(s: &Server, what: &str) {
    still_serves_at(&s.endpoint(), s.kind.name(), what).await
}

/// A put and a get on a fresh connection to `endpoint` (`who` serves it).
async fn still_serves_at(endpoint: &str, who: &str, what: &str) {
    let serve = async {
        let mut c = Client::connect([endpoint], None).await?;
        c.put("bystander", what, None).await?;
        let r = c.get("bystander", None).await?;
        Ok::<_, etcd_client::Error>(r.kvs()[0].value().to_vec())
    };
    let got = tokio::time::timeout(FAILURE_BOUND, serve)
        .await
        .unwrap_or_else(|_| panic!("{who} stopped serving others ({what})"))
        .unwrap_or_else(|e| panic!("{who} failed a bystander ({what}): {e}"));
    assert_eq!(got, what.as_bytes());
}

/// An HTTP/2 connection (h2 on tokio) to the client port, handshake done.
async fn h2_connect(
    port: u16,
    builder: &h2::client::Builder,
) -> (h2::client::SendRequest<Bytes>, h2::PingPong) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (send, mut conn) = builder.handshake(tcp).await.unwrap();
    let ping = conn.ping_pong().expect("the first ping_pong");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, ping)
}

/// Starts a gRPC call on `send`: (the response to come, the request's body stream).
fn grpc_call(
    send: &mut h2::client::SendRequest<Bytes>,
    port: u16,
    path: &str,
    msg: Bytes,
) -> h2::client::ResponseFuture {
    let req = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    body.send_data(msg, true).unwrap();
    resp
}

/// A call's (grpc-status, grpc-message), its reply read in full.
async fn call_status(resp: h2::client::ResponseFuture) -> (String, String) {
    tokio::time::timeout(FAILURE_BOUND, common::grpc::response_status(resp))
        .await
        .expect("a call went unanswered")
}

/// The server's heap growth over `base`, in MiB (for messages).
fn grown_mib(pid: u32, base: u64) -> f64 {
    rss_anon(pid).saturating_sub(base) as f64 / MIB as f64
}

/// A counter from the server's /metrics (summed over its label sets).
fn metric(s: &Server, name: &str) -> f64 {
    common::http_get(s.client_port, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ----- thousands of idle connections -----

/// Opens `n` HTTP/2 connections that finish their handshake and then say nothing; returns
/// the server's heap growth per connection in bytes.
async fn idle_connections(s: &Server, n: usize) -> u64 {
    still_serves(s, "before").await;
    let before = rss_anon(s.pid());
    let mut conns = Vec::with_capacity(n);
    let builder = h2::client::Builder::new();
    for _ in 0..n {
        conns.push(h2_connect(s.client_port, &builder).await);
    }
    // A ping answered on each: the server has taken each connection's preface and settings.
    for (_, ping) in &mut conns {
        tokio::time::timeout(FAILURE_BOUND, ping.ping(h2::Ping::opaque()))
            .await
            .expect("an idle connection's ping went unanswered")
            .unwrap();
    }
    let after = rss_anon(s.pid());
    still_serves(s, "with idle connections open").await;
    drop(conns);
    let per_conn = after.saturating_sub(before) / n as u64;
    eprintln!(
        "{}: {n} idle HTTP/2 connections: heap {} -> {} MiB, {:.1} KiB each",
        s.kind.name(),
        before / MIB,
        after / MIB,
        per_conn as f64 / KIB as f64
    );
    per_conn
}

const IDLE_CONNECTIONS: usize = 3000;

fn enough_files() -> bool {
    // Both ends of every connection are in this process's or the server's table.
    let have = raise_nofile(2 * IDLE_CONNECTIONS as u64 + 1000);
    if have < IDLE_CONNECTIONS as u64 + 500 {
        eprintln!(
            "SKIPPED: the open-file limit is {have} and cannot be raised to hold \
             {IDLE_CONNECTIONS} connections (raise the hard limit: ulimit -Hn)"
        );
        return false;
    }
    true
}

/// Idle connections cost a bounded amount each (measured 81 KiB: h2's buffers and a task;
/// etcd 3.4: 53 KiB), and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_cost_little_each() {
    if !enough_files() {
        return;
    }
    let s = Server::start(Kind::Corekv);
    let per_conn = idle_connections(&s, IDLE_CONNECTIONS).await;
    assert!(
        per_conn < 128 * KIB,
        "an idle connection costs {per_conn} bytes of heap"
    );
    still_serves(&s, "after the idle connections left").await;
}

// ----- slowloris -----

/// A connection that sends `first` at once, then `drip` a byte a second, and reads whatever
/// the server sends; how long until the server closed it, or None if it still had not after
/// `bound`.
fn hold_open(port: u16, first: &[u8], drip: &[u8], bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    if c.write_all(first).is_err() {
        return Some(start.elapsed());
    }
    let mut drip = drip.iter();
    let mut buf = [0u8; 4096];
    while start.elapsed() < bound {
        match c.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if let Some(b) = drip.next() {
                    if c.write_all(std::slice::from_ref(b)).is_err() {
                        return Some(start.elapsed());
                    }
                }
            }
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame_header(len: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut h = len.to_be_bytes()[1..].to_vec();
    h.push(kind);
    h.push(flags);
    h.extend_from_slice(&stream.to_be_bytes());
    h
}

/// Connections that stop or trickle part-way through a handshake, a frame or a request head
/// on the client port, and part-way through the handshake on the peer port.
fn slowloris_cases(s: &Server) -> Vec<(&'static str, u16, Vec<u8>, Vec<u8>)> {
    let empty_settings = h2_frame_header(0, 4, 0, 0);
    let with = |parts: &[&[u8]]| parts.concat();
    let trickle = vec![b'a'; 300];
    let peer_header = |len: u32| with(&[&len.to_be_bytes(), &[0, 0, 0, 0]]);
    vec![
        ("nothing at all", s.client_port, vec![], vec![]),
        (
            "half the HTTP/2 preface",
            s.client_port,
            H2_PREFACE[..16].to_vec(),
            vec![],
        ),
        (
            "the HTTP/2 preface a byte a second",
            s.client_port,
            H2_PREFACE[..4].to_vec(),
            H2_PREFACE[4..].to_vec(),
        ),
        (
            "half a SETTINGS frame",
            s.client_port,
            with(&[H2_PREFACE, &[0, 0, 6, 4]]),
            vec![],
        ),
        (
            "a HEADERS frame a byte a second",
            s.client_port,
            with(&[H2_PREFACE, &empty_settings, &h2_frame_header(250, 1, 4, 1)]),
            trickle.clone(),
        ),
        (
            "half an HTTP/1 request head",
            s.client_port,
            b"GET /health HTTP/1.1\r\nHost: x\r\n".to_vec(),
            vec![],
        ),
        (
            "an HTTP/1 header a byte a second",
            s.client_port,
            b"GET /health HTTP/1.1\r\nX-Slow: ".to_vec(),
            trickle.clone(),
        ),
        (
            "half the peer preamble",
            s.peer_port,
            b"CKVP".to_vec(),
            vec![],
        ),
        (
            "a peer hello a byte a second",
            s.peer_port,
            with(&[b"CKVPEER\x01", &peer_header(200)]),
            trickle.clone(),
        ),
        (
            "a peer hello claiming 60 MiB",
            s.peer_port,
            with(&[b"CKVPEER\x01", &peer_header(60 << 20), b"abc"]),
            vec![],
        ),
    ]
}

/// Runs every slowloris case at once; (case, closed after) for each.
async fn slowloris(s: &Server, bound: Duration) -> Vec<(&'static str, Option<Duration>)> {
    let held: Vec<_> = slowloris_cases(s)
        .into_iter()
        .map(|(name, port, first, drip)| {
            let t = std::thread::spawn(move || hold_open(port, &first, &drip, bound));
            (name, t)
        })
        .collect();
    // While they hang on, everyone else is served.
    still_serves(s, "while slowloris connections hang on").await;
    let out: Vec<_> = held
        .into_iter()
        .map(|(name, t)| (name, t.join().unwrap()))
        .collect();
    for (name, closed) in &out {
        eprintln!("{}: {name}: closed after {closed:?}", s.kind.name());
    }
    still_serves(s, "after the slowloris connections").await;
    out
}

/// Each is closed (the handshake within 10 s of the accept, a frame within 30 s of its first
/// byte, an HTTP/1 head within 10 s of its first byte); others are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_others_served() {
    let s = Server::start(Kind::Corekv);
    for (name, closed) in slowloris(&s, FAILURE_BOUND).await {
        assert!(
            closed.is_some(),
            "{name}: still open after {FAILURE_BOUND:?}"
        );
    }
}

// ----- clients that never read, many streams, floods -----

/// Writes `n` keys of `size`-byte values under `prefix` (with 8 clients).
async fn fill(s: &Server, prefix: &str, n: usize, size: usize) {
    let c = Client::connect([s.endpoint()], None).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let mut c = c.clone();
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                for i in (t..n).step_by(8) {
                    c.put(format!("{prefix}{i:06}"), vec![b'v'; size], None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn range_prefix(prefix: &str) -> Bytes {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    frame(
        &pb::RangeRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: end.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

/// A builder for a client whose windows hold 64 KiB: a client that does not read gets no
/// more than that from the server.
fn stingy_client() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(65_535)
        .initial_connection_window_size(65_535);
    b
}

/// One connection opens `streams` Range calls whose replies are 1 MiB each and never reads
/// them. Waits until the server has run `ran` of them, then (a bystander served) returns the
/// server's heap growth in MiB.
async fn never_reads(s: &Server, streams: usize, ran: usize) -> f64 {
    fill(s, "big/", 4, 256 << 10).await;
    still_serves(s, "before the client that does not read").await;
    let base = rss_anon(s.pid());
    let ranges = metric(s, "etcd_mvcc_range_total");
    let (mut send, _ping) = h2_connect(s.client_port, &stingy_client()).await;
    let mut pending = Vec::with_capacity(streams);
    for _ in 0..streams {
        send = send.ready().await.unwrap();
        pending.push(grpc_call(
            &mut send,
            s.client_port,
            "/etcdserverpb.KV/Range",
            range_prefix("big/"),
        ));
    }
    let deadline = Instant::now() + FAILURE_BOUND;
    while metric(s, "etcd_mvcc_range_total") - ranges < ran as f64 {
        assert!(
            Instant::now() < deadline,
            "the server did not run {ran} ranges"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_serves(s, "while a client does not read its replies").await;
    let grown = grown_mib(s.pid(), base);
    eprintln!(
        "{}: {streams} unread 1 MiB Range replies on one connection ({} ran): heap +{grown:.0} MiB",
        s.kind.name(),
        metric(s, "etcd_mvcc_range_total") - ranges
    );
    drop(pending);
    drop(send);
    still_serves(s, "after the client that does not read").await;
    grown
}

/// 2,000 unread 1 MiB replies would be 2 GB (etcd 3.4: +2.4 GiB); the server runs a
/// connection's calls 256 at a time and sends replies only as the client reads, so it holds
/// at most 256 of them (measured +381-408 MiB with the copies made on the way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_holds_bounded_memory() {
    let s = Server::start(Kind::Corekv);
    let grown = never_reads(&s, 2000, 256).await;
    assert!(grown < 640.0, "the server's heap grew by {grown:.0} MiB");
}

/// A watch whose client never reads, while 256 MiB of events for it are written; the heap's
/// growth over what the same writes cost without it (written first) in MiB.
async fn unread_watch(s: &Server) -> f64 {
    fill(s, "warm/", 256, 1 << 20).await;
    still_serves(s, "before the unread watch").await;
    let base = rss_anon(s.pid());
    let (mut send, _ping) = h2_connect(s.client_port, &stingy_client()).await;
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"w/".to_vec().into(),
                range_end: b"w0".to_vec().into(),
                ..Default::default()
            },
        )),
    };
    let req = http::Request::post(format!(
        "http://127.0.0.1:{}/etcdserverpb.Watch/Watch",
        s.client_port
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (_resp, mut body) = send.send_request(req, false).unwrap();
    body.send_data(frame(&create.encode_to_vec()), false)
        .unwrap();
    let deadline = Instant::now() + FAILURE_BOUND;
    while metric(s, "etcd_debugging_mvcc_watcher_total") < 1.0 {
        assert!(Instant::now() < deadline, "the watch was not created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fill(s, "w/", 256, 1 << 20).await;
    still_serves(s, "while a watcher does not read").await;
    let grown = grown_mib(s.pid(), base);
    eprintln!(
        "{}: 256 MiB of events for a watcher that does not read: heap +{grown:.0} MiB over \
         the same writes unwatched",
        s.kind.name()
    );
    grown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_reads_holds_bounded_memory() {
    let s = Server::start_with(Kind::Corekv, SMALL_LOG);
    let grown = unread_watch(&s).await;
    assert!(grown < 128.0, "the server's heap grew by {grown:.0} MiB");
}

/// 10,000 Range calls open at once on one connection, each answered; the server's heap
/// growth in MiB.
async fn ten_thousand_streams(s: &Server) -> f64 {
    fill(s, "small/", 10, 100).await;
    let base = rss_anon(s.pid());
    let mut b = h2::client::Builder::new();
    b.initial_window_size(1 << 20)
        .initial_connection_window_size(64 << 20);
    let (mut send, _ping) = h2_connect(s.client_port, &b).await;
    let mut pending = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        send = send.ready().await.unwrap();
        pending.push(grpc_call(
            &mut send,
            s.client_port,
            "/etcdserverpb.KV/Range",
            range_prefix("small/"),
        ));
    }
    assert!(
        send.current_max_send_streams() >= 10_000,
        "{} lets {} streams be open",
        s.kind.name(),
        send.current_max_send_streams()
    );
    still_serves(s, "while 10,000 streams are open on one connection").await;
    let mut peak = rss_anon(s.pid());
    let mut ok = 0;
    for resp in pending {
        ok += usize::from(call_status(resp).await.0 == "0");
        peak = peak.max(rss_anon(s.pid()));
    }
    assert_eq!(ok, 10_000, "{}: not every call was answered", s.kind.name());
    let grown = peak.saturating_sub(base) as f64 / MIB as f64;
    eprintln!(
        "{}: 10,000 streams on one connection: heap +{grown:.0} MiB at most",
        s.kind.name()
    );
    grown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_on_one_connection_are_served_in_bounded_memory() {
    let s = Server::start(Kind::Corekv);
    let grown = ten_thousand_streams(&s).await;
    assert!(grown < 256.0, "the server's heap grew by {grown:.0} MiB");
}

/// What SETTINGS_MAX_CONCURRENT_STREAMS the server advertises.
async fn advertised_streams(s: &Server) -> usize {
    let (send, mut ping) = h2_connect(s.client_port, &h2::client::Builder::new()).await;
    // The server's SETTINGS arrive before its answer to a ping.
    ping.ping(h2::Ping::opaque()).await.unwrap();
    send.current_max_send_streams()
}

/// --max-concurrent-streams is advertised as etcd advertises it (etcd 3.4's default,
/// math.MaxUint32, included), and a client is held to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_is_advertised_as_etcd_does() {
    let etcd = Server::start(Kind::Etcd);
    let corekv = Server::start(Kind::Corekv);
    assert_eq!(advertised_streams(&etcd).await, u32::MAX as usize);
    assert_eq!(advertised_streams(&corekv).await, u32::MAX as usize);
    drop((etcd, corekv));
    let etcd = Server::start_with(Kind::Etcd, &["--max-concurrent-streams", "100"]);
    let corekv = Server::start_with(Kind::Corekv, &["--max-concurrent-streams", "100"]);
    assert_eq!(advertised_streams(&etcd).await, 100);
    assert_eq!(advertised_streams(&corekv).await, 100);
}

/// Samples the server's heap every few milliseconds while `work` runs; the largest growth
/// over what it held before, in MiB.
async fn peak_growth<F: std::future::Future>(s: &Server, work: F) -> (F::Output, f64) {
    let pid = s.pid();
    let base = rss_anon(pid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(common::try_rss_anon(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(common::try_rss_anon(pid).unwrap_or(0))
        })
    };
    let out = work.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    (out, peak.saturating_sub(base) as f64 / MIB as f64)
}

/// Both servers keep the raft log since their last snapshot in memory (corekv at most 256
/// MiB of it): tests of what clients make a server hold snapshot every 20 writes, so what the
/// log holds does not hide it.
const SMALL_LOG: &[&str] = &["--snapshot-count", "20"];

/// Just under --max-request-bytes (1.5 MiB) with the put's key and framing.
const BIG_VALUE: usize = 1_500_000;

/// 32 clients, each on its own connection, put 1.5 MiB values one after another, while one
/// more connection fires 200 such puts at once without waiting: 780 MB in all. The peak heap
/// growth in MiB.
async fn put_flood(s: &Server) -> (Answers, Vec<String>, f64) {
    still_serves(s, "before the flood").await;
    let port = s.client_port;
    let rounds: usize = std::env::var("FLOOD_ROUNDS").map_or(10, |v| v.parse().unwrap());
    let flood = async {
        let sequential: Vec<_> = (0..32)
            .map(|c| {
                let ep = s.endpoint();
                tokio::spawn(async move {
                    let mut client = Client::connect([ep], None).await.unwrap();
                    let mut errors = Vec::new();
                    for i in 0..rounds {
                        if let Err(e) = client
                            .put(format!("flood/{c}/{}", i % 2), vec![b'f'; BIG_VALUE], None)
                            .await
                        {
                            errors.push(e.to_string());
                        }
                    }
                    errors
                })
            })
            .collect();
        let pipelined = tokio::spawn(pipelined_puts(port, 200));
        let mut errors = Vec::new();
        for t in sequential {
            errors.extend(t.await.unwrap());
        }
        let pipelined = pipelined.await.map_err(|e| {
            let e = e.into_panic();
            e.downcast_ref::<String>().cloned().unwrap_or_default()
        });
        (pipelined, errors)
    };
    let (ok, grown) = peak_growth(s, tokio::time::timeout(FAILURE_BOUND * 3, flood)).await;
    let (answers, errors) = ok.expect("the flood did not finish");
    eprintln!(
        "{}: a flood of 1.5 MiB puts (32 clients x {rounds} one at a time, 200 at once on one \
         connection): heap +{grown:.0} MiB at most; {} of the sequential puts failed {:?}; \
         the 200: {answers:?}",
        s.kind.name(),
        errors.len(),
        errors.first(),
    );
    still_serves(s, "after the flood").await;
    (answers, errors, grown)
}

/// `n` puts of 1.5 MiB fired at once on one connection to `port`, without waiting for an
/// answer: each answer (grpc-status, grpc-message) and how many got it.
async fn pipelined_puts(
    port: u16,
    n: usize,
) -> std::collections::BTreeMap<(String, String), usize> {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(1 << 20);
    let (mut send, _ping) = h2_connect(port, &b).await;
    let put = frame(
        &pb::PutRequest {
            key: b"flood/pipelined".to_vec().into(),
            value: vec![b'p'; BIG_VALUE].into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let mut calls = Vec::new();
    for _ in 0..n {
        send = send.ready().await.unwrap();
        calls.push(grpc_call(
            &mut send,
            port,
            "/etcdserverpb.KV/Put",
            put.clone(),
        ));
    }
    let mut answers = std::collections::BTreeMap::new();
    for call in calls {
        *answers.entry(call_status(call).await).or_insert(0) += 1;
    }
    answers
}

/// The pipelined puts: each answer and how many got it, or why the connection failed.
type Answers = Result<std::collections::BTreeMap<(String, String), usize>, String>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_big_puts_is_held_back_not_buffered() {
    let s = Server::start_with(Kind::Corekv, SMALL_LOG);
    let (answers, errors, grown) = put_flood(&s).await;
    assert!(
        errors.is_empty(),
        "{} puts failed: {errors:?}",
        errors.len()
    );
    // The pipelined puts past the connection's 64 MiB are refused with etcd's error for a
    // member that cannot keep up; the rest are applied.
    let answers = answers.unwrap();
    let too_many = ("8".to_string(), "etcdserver: too many requests".to_string());
    for (answer, n) in &answers {
        assert!(answer.0 == "0" || *answer == too_many, "{n} × {answer:?}");
    }
    assert!(
        answers.contains_key(&("0".into(), String::new())),
        "{answers:?}"
    );
    // Measured 0.8-0.9 GiB whether each client puts 3 or 16 values (etcd 3.4: 1.6-1.7 GiB):
    // what the flood's requests and the write path hold, not what it wrote.
    assert!(grown < 1536.0, "the server's heap grew by {grown:.0} MiB");
}

/// The same flood on one connection to the proxy: the proxy refuses what goes past the
/// connection's 64 MiB with the member's error, so its one upstream connection never carries
/// more than the member takes on one connection (the admitted puts, at most 44 whole ones,
/// leave over 1 MB of it for everyone else's calls): the member refuses nothing, and a client
/// on another connection to the proxy is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_proxy_connection_is_refused_there_and_others_are_served() {
    let s = Server::start_with(Kind::Corekv, SMALL_LOG);
    let proxy = Proxy::start(Kind::Corekv, &[s.endpoint()], &[]);
    let ep = proxy.endpoint();
    still_serves_at(&ep, "the proxy", "before the flood").await;
    let flood = tokio::spawn(pipelined_puts(proxy.port, 200));
    // A bystander puts and reads through the proxy until the flood has been answered.
    let mut served = 0;
    while served == 0 || !flood.is_finished() {
        still_serves_at(&ep, "the proxy", &format!("during the flood {served}")).await;
        served += 1;
    }
    let answers = flood.await.unwrap();
    let too_many = ("8".to_string(), "etcdserver: too many requests".to_string());
    let ok = ("0".to_string(), String::new());
    for (answer, n) in &answers {
        assert!(*answer == ok || *answer == too_many, "{n} × {answer:?}");
    }
    assert!(
        answers.contains_key(&ok) && answers.contains_key(&too_many),
        "{answers:?}"
    );
    let refused_by_member: f64 = common::http_get(s.client_port, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains("ResourceExhausted"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        refused_by_member, 0.0,
        "calls of the proxy's connection the member refused"
    );
    still_serves_at(&ep, "the proxy", "after the flood").await;
    eprintln!("through the proxy: the 200 puts {answers:?}; {served} bystander rounds meanwhile");
}

// ----- txns -----

/// A txn `depth` txns deep whose innermost op is a put, encoded without recursion (a deep
/// message would overflow the encoder's stack).
fn nested_txn(depth: usize) -> Bytes {
    let put = pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: b"nested".to_vec().into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        })),
    }
    .encode_to_vec();
    // TxnRequest.success (2) holds a RequestOp, RequestOp.request_txn (4) a TxnRequest.
    let mut lens = vec![put.len()];
    for _ in 0..2 * depth - 1 {
        let inner = *lens.last().unwrap();
        lens.push(1 + prost::length_delimiter_len(inner) + inner);
    }
    let mut out = BytesMut::with_capacity(*lens.last().unwrap());
    for (i, len) in lens.iter().rev().skip(1).enumerate() {
        out.put_u8(if i % 2 == 0 { 0x12 } else { 0x22 });
        prost::encode_length_delimiter(*len, &mut out).unwrap();
    }
    out.put_slice(&put);
    frame(&out)
}

/// (grpc-status, grpc-message) for txns of 129 ops and of nesting `depths`.
async fn txn_limits(s: &Server, depths: &[usize]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let ops = pb::TxnRequest {
        success: (0..129)
            .map(|i| pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: format!("op{i}").into_bytes().into(),
                    ..Default::default()
                })),
            })
            .collect(),
        ..Default::default()
    };
    let port = s.client_port;
    out.push(
        common::grpc::raw_call(port, "/etcdserverpb.KV/Txn", frame(&ops.encode_to_vec())).await,
    );
    for depth in depths {
        let r = tokio::time::timeout(
            FAILURE_BOUND,
            common::grpc::raw_call(port, "/etcdserverpb.KV/Txn", nested_txn(*depth)),
        )
        .await
        .unwrap_or_else(|_| panic!("a txn {depth} deep went unanswered"));
        eprintln!("{}: a txn nested {depth} deep: {r:?}", s.kind.name());
        out.push(r);
    }
    still_serves(s, "after huge and deep txns").await;
    out
}

/// etcd's limit and error for too many ops; nesting as deep as a message decodes (prost
/// stops at 100 levels, 50 txns) is served, deeper is refused as a message that does not
/// decode, and nothing deep reaches a recursion that could overflow the server's stack.
/// (etcd 3.4 serves up to --max-txn-ops deep and refuses deeper with too many operations.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_deeply_nested_txns_are_refused_with_clear_errors() {
    let s = Server::start(Kind::Corekv);
    let answers = txn_limits(&s, &[1, 40, 60, 1000, 150_000]).await;
    assert_eq!(
        answers[0],
        (
            "3".into(),
            "etcdserver: too many operations in txn request".into()
        )
    );
    assert_eq!(answers[1].0, "0", "{:?}", answers[1]);
    assert_eq!(answers[2].0, "0", "{:?}", answers[2]);
    for deep in &answers[3..] {
        assert_eq!(deep.0, "13", "{deep:?}");
        assert!(deep.1.contains("recursion limit"), "{deep:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_txn_ops_fail_as_in_etcd() {
    let etcd = Server::start(Kind::Etcd);
    let corekv = Server::start(Kind::Corekv);
    let e = txn_limits(&etcd, &[1, 40]).await;
    let c = txn_limits(&corekv, &[1, 40]).await;
    assert_eq!(e, c);
}

// ----- huge range results -----

/// 300 MiB of values under `huge/`; a Range over all of it, then the server's heap growth
/// over the range in MiB, with the call's result.
async fn huge_range(s: &Server) -> (Result<usize, String>, f64) {
    fill(s, "huge/", 300, 1 << 20).await;
    still_serves(s, "before the huge range").await;
    let mut c = Client::connect([s.endpoint()], None).await.unwrap();
    let (r, grown) = peak_growth(s, async {
        c.get("huge/", Some(GetOptions::new().with_prefix()))
            .await
            .map(|r| r.kvs().len())
            .map_err(|e| e.to_string())
    })
    .await;
    eprintln!(
        "{}: a Range over 300 MiB of values: {:?}, heap +{grown:.0} MiB at most",
        s.kind.name(),
        r.as_ref()
            .map_err(|e| e.chars().take(120).collect::<String>())
    );
    still_serves(s, "after the huge range").await;
    (r, grown)
}

/// Above --max-range-bytes a Range is refused with a clear error before anything is copied:
/// the heap does not grow with the result. Below it, paging, keys-only and count-only work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_range_is_refused_before_it_is_built() {
    let s = Server::start_with(Kind::Corekv, &["--max-range-bytes", "67108864"]);
    let (r, grown) = huge_range(&s).await;
    let err = r.unwrap_err();
    assert!(
        err.contains("range response is too large") && err.contains("67108864"),
        "{err}"
    );
    assert!(
        grown < 32.0,
        "the refused range grew the heap by {grown:.0} MiB"
    );
    let mut c = Client::connect([s.endpoint()], None).await.unwrap();
    let prefix = || GetOptions::new().with_prefix();
    // (3 MiB: the client takes at most 4 MiB in a reply.)
    let page = c.get("huge/", Some(prefix().with_limit(3))).await.unwrap();
    assert_eq!(
        (page.kvs().len(), page.more(), page.count()),
        (3, true, 300)
    );
    let keys = c
        .get("huge/", Some(prefix().with_keys_only()))
        .await
        .unwrap();
    assert_eq!(keys.kvs().len(), 300);
    assert!(keys.kvs().iter().all(|kv| kv.value().is_empty()));
    let count = c
        .get("huge/", Some(prefix().with_count_only()))
        .await
        .unwrap();
    assert_eq!(count.count(), 300);
    // A read-only txn's ranges share the limit: two of 40 MiB are too much together.
    let half = |from: &str, to: &str| {
        etcd_client::TxnOp::get(from, Some(GetOptions::new().with_range(to)))
    };
    let err = c
        .txn(etcd_client::Txn::new().and_then([
            half("huge/000000", "huge/000040"),
            half("huge/000100", "huge/000140"),
        ]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("range response is too large"),
        "{err}"
    );
    let one = c
        .txn(etcd_client::Txn::new().and_then([half("huge/000000", "huge/000003")]))
        .await
        .unwrap();
    assert!(one.succeeded());
}

/// etcd 3.4 in the same cases, for comparison: prints what it does, asserts nothing of its
/// own (run with `--ignored --nocapture`; takes a few minutes, slowloris waits 150 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reports etcd 3.4's behaviour; run with --ignored --nocapture"]
async fn etcd_in_the_same_cases() {
    async fn case<F: std::future::Future<Output = ()> + Send + 'static>(what: &str, f: F) {
        if let Err(e) = tokio::spawn(f).await {
            eprintln!("etcd: {what}: the case failed: {e}");
        }
    }
    case("idle connections", async {
        if enough_files() {
            idle_connections(&Server::start(Kind::Etcd), IDLE_CONNECTIONS).await;
        }
    })
    .await;
    case("slowloris", async {
        slowloris(&Server::start(Kind::Etcd), Duration::from_secs(150)).await;
    })
    .await;
    case("never reads", async {
        never_reads(&Server::start(Kind::Etcd), 2000, 2000).await;
    })
    .await;
    case("unread watch", async {
        unread_watch(&Server::start_with(Kind::Etcd, SMALL_LOG)).await;
    })
    .await;
    case("10,000 streams", async {
        ten_thousand_streams(&Server::start(Kind::Etcd)).await;
    })
    .await;
    case("flood", async {
        let _ = put_flood(&Server::start_with(Kind::Etcd, SMALL_LOG)).await;
    })
    .await;
    case("txns", async {
        txn_limits(&Server::start(Kind::Etcd), &[60, 1000, 150_000]).await;
    })
    .await;
    case("huge range", async {
        let _ = huge_range(&Server::start(Kind::Etcd)).await;
    })
    .await;
}
