//! etcd's Lock and Election gRPC services, differentially: the same calls, through the Rust
//! `etcd-client` crate (tonic) and through the JSON gateway, go to etcd 3.4 and to corekv, and
//! the transcripts of answers and errors must be the same. Both servers start fresh and
//! advertise one peer URL (same IDs), leases are granted with fixed IDs (same keys), so
//! revisions match too; only the raft term is left out.
//!
//! With auth enabled both services run as their caller (etcd's over an in-process client that
//! carries the caller's token): a user without permission on a name's keys can neither lock
//! nor campaign, see, proclaim over, resign or observe the leader there.
//!
//! Ordering is asserted with handshakes, never with sleeps: a waiter's key is seen in the
//! store before its rival unlocks, and a shared log records "unlocked" before the rival's
//! grant can be logged. Every wait is bounded.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Kind, Server};
use etcd_client::{
    Client, ConnectOptions, GetOptions, LeaderKey, LeaseGrantOptions, LockOptions, Permission,
    ProclaimOptions, ResignOptions,
};

const LEASE_A: i64 = 0x1a;
const LEASE_B: i64 = 0x1b;
/// No step takes this long unless the server under test is broken.
const LIMIT: Duration = Duration::from_secs(20);

async fn connect(s: &Server) -> Client {
    Client::connect([s.endpoint()], None)
        .await
        .expect("connecting with etcd-client")
}

fn error_text(e: etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("error {:?}: {}", s.code(), s.message()),
        other => format!("error {other}"),
    }
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {LIMIT:?}"))
}

/// Waits until `n` keys are under `prefix` (a waiter's key is in: it is waiting).
async fn until_keys(c: &mut Client, prefix: &str, n: i64) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = c
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap()
            .count();
        if got == n {
            return;
        }
        assert!(Instant::now() < deadline, "{prefix}: {got} keys, not {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn leader_key(k: &LeaderKey) -> LeaderKey {
    LeaderKey::new()
        .with_name(k.name())
        .with_key(k.key())
        .with_rev(k.rev())
        .with_lease(k.lease())
}

fn show_leader(k: &LeaderKey) -> String {
    format!(
        "leader name={} key={} rev={} lease={:x}",
        k.name_str().unwrap(),
        k.key_str().unwrap(),
        k.rev(),
        k.lease()
    )
}

/// The gRPC walk through both services; returns what a client sees, in order.
async fn grpc_transcript(s: &Server) -> Vec<String> {
    let mut t = Vec::new();
    let mut c = connect(s).await;
    for id in [LEASE_A, LEASE_B] {
        c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(id)))
            .await
            .unwrap();
    }
    let lock = |lease| Some(LockOptions::new().with_lease(lease));

    // A missing lease: etcd's error (through its in-process client: code Unknown).
    t.push(match c.lock("l", lock(0x99)).await {
        Ok(r) => format!("lock with a missing lease granted {:?}", r.key()),
        Err(e) => format!("lock with a missing lease: {}", error_text(e)),
    });

    // Two lockers on one name: the second is granted only after the first unlocks.
    let a = c.lock("l", lock(LEASE_A)).await.unwrap();
    t.push(format!(
        "A locked {} at {}",
        String::from_utf8_lossy(a.key()),
        a.header().unwrap().revision()
    ));
    let log = Arc::new(Mutex::new(Vec::new()));
    let waiter = {
        let (mut c, log) = (c.clone(), log.clone());
        tokio::spawn(async move {
            let b = c.lock("l", lock(LEASE_B)).await.unwrap();
            log.lock().unwrap().push("B granted");
            b
        })
    };
    until_keys(&mut c, "l/", 2).await;
    log.lock().unwrap().push("A unlocks");
    c.unlock(a.key()).await.unwrap();
    let b = bounded("B's lock after A's unlock", waiter).await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["A unlocks", "B granted"]);
    t.push(format!(
        "B locked {} at {}",
        String::from_utf8_lossy(b.key()),
        b.header().unwrap().revision()
    ));
    // The same lease again: the key it holds.
    let again = c.lock("l", lock(LEASE_B)).await.unwrap();
    t.push(format!("B again: {}", String::from_utf8_lossy(again.key())));
    let un = c.unlock(b.key()).await.unwrap();
    t.push(format!("B unlocked at {}", un.header().unwrap().revision()));

    // A revoked lease releases its lock, and the waiter gets it.
    c.lock("r", lock(LEASE_A)).await.unwrap();
    let waiter = {
        let mut c = c.clone();
        tokio::spawn(async move { c.lock("r", lock(LEASE_B)).await.unwrap() })
    };
    until_keys(&mut c, "r/", 2).await;
    c.lease_revoke(LEASE_A).await.unwrap();
    let r = bounded("the lock after a revoke", waiter).await.unwrap();
    t.push(format!(
        "after the revoke B locked {} at {}",
        String::from_utf8_lossy(r.key()),
        r.header().unwrap().revision()
    ));
    c.unlock(r.key()).await.unwrap();
    c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(LEASE_A)))
        .await
        .unwrap();

    // An election with two candidates, observed throughout.
    t.push(match c.leader("e").await {
        Ok(_) => "a leader before any campaign".into(),
        Err(e) => format!("leader before any campaign: {}", error_text(e)),
    });
    let first = c.campaign("e", "a1", LEASE_A).await.unwrap();
    let la = leader_key(first.leader().unwrap());
    t.push(format!(
        "A campaigned: {} at {}",
        show_leader(&la),
        first.header().unwrap().revision()
    ));
    let mut observer = c.observe("e").await.unwrap();
    // Each change is read before the next is made: an observer that fell behind would
    // (as etcd's) skip to the newest value, which is not what this checks.
    let observed = |t: &mut Vec<String>, m: Option<etcd_client::LeaderResponse>| {
        let m = m.expect("observe ended");
        let kv = m.kv().unwrap();
        t.push(format!(
            "observed {} = {} (mod {}) at {}",
            kv.key_str().unwrap(),
            kv.value_str().unwrap(),
            kv.mod_revision(),
            m.header().unwrap().revision()
        ));
    };
    let m = bounded("the first leader", observer.message())
        .await
        .unwrap();
    observed(&mut t, m);
    let waiter = {
        let mut c = c.clone();
        tokio::spawn(async move { c.campaign("e", "b1", LEASE_B).await.unwrap() })
    };
    until_keys(&mut c, "e/", 2).await;
    let p = c
        .proclaim(
            "a2",
            Some(ProclaimOptions::new().with_leader(leader_key(&la))),
        )
        .await
        .unwrap();
    t.push(format!(
        "A proclaimed at {}",
        p.header().unwrap().revision()
    ));
    let m = bounded("A's new value", observer.message()).await.unwrap();
    observed(&mut t, m);
    let now = c.leader("e").await.unwrap();
    let kv = now.kv().unwrap();
    t.push(format!(
        "leader value {} created {} at {}",
        kv.value_str().unwrap(),
        kv.create_revision(),
        now.header().unwrap().revision()
    ));
    let r = c
        .resign(Some(ResignOptions::new().with_leader(leader_key(&la))))
        .await
        .unwrap();
    t.push(format!("A resigned at {}", r.header().unwrap().revision()));
    let m = bounded("the next leader", observer.message())
        .await
        .unwrap();
    observed(&mut t, m);
    let second = bounded("B's campaign after A resigned", waiter)
        .await
        .unwrap();
    let lb = leader_key(second.leader().unwrap());
    t.push(format!(
        "B campaigned: {} at {}",
        show_leader(&lb),
        second.header().unwrap().revision()
    ));
    c.proclaim(
        "b2",
        Some(ProclaimOptions::new().with_leader(leader_key(&lb))),
    )
    .await
    .unwrap();
    let m = bounded("B's new value", observer.message()).await.unwrap();
    observed(&mut t, m);
    // A resigned leader is no longer the leader; a resign without a leader key is refused.
    t.push(
        match c
            .proclaim(
                "a3",
                Some(ProclaimOptions::new().with_leader(leader_key(&la))),
            )
            .await
        {
            Ok(_) => "a resigned leader proclaimed".into(),
            Err(e) => format!("proclaim after resigning: {}", error_text(e)),
        },
    );
    t.push(match c.resign(None).await {
        Ok(_) => "resign without a leader key answered".into(),
        Err(e) => format!("resign without a leader key: {}", error_text(e)),
    });
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_answer_as_etcd_does() {
    let peer = format!("http://127.0.0.1:{}", common::free_port());
    let etcd = Server::start_advertising(Kind::Etcd, &peer);
    let corekv = Server::start_advertising(Kind::Corekv, &peer);
    let want = grpc_transcript(&etcd).await;
    let got = grpc_transcript(&corekv).await;
    assert_eq!(got, want, "corekv (left) and etcd 3.4 (right) differ");
}

async fn connect_as(s: &Server, user: &str, password: &str) -> Client {
    let options = ConnectOptions::new().with_user(user, password);
    Client::connect([s.endpoint()], Some(options))
        .await
        .unwrap_or_else(|e| panic!("connecting as {user}: {e}"))
}

/// What a call answered, for a transcript: `ok` and what `show` makes of the answer, or the
/// error.
fn outcome<T>(what: &str, r: Result<T, etcd_client::Error>, show: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => format!("{what}: ok {}", show(&v)),
        Err(e) => format!("{what}: {}", error_text(e)),
    }
}

/// Both services as a permitted user (alice: read and write under `a/`), one without
/// permissions (bob), one without a token; returns what each saw, in order.
async fn auth_transcript(s: &Server) -> Vec<String> {
    let mut root = connect(s).await;
    root.user_add("root", "rootpw", None).await.unwrap();
    root.user_grant_role("root", "root").await.unwrap();
    root.role_add("app").await.unwrap();
    root.role_grant_permission("app", Permission::read_write("a/").with_prefix())
        .await
        .unwrap();
    root.user_add("alice", "apw", None).await.unwrap();
    root.user_grant_role("alice", "app").await.unwrap();
    root.user_add("bob", "bpw", None).await.unwrap();
    for id in [LEASE_A, LEASE_B] {
        root.lease_grant(60, Some(LeaseGrantOptions::new().with_id(id)))
            .await
            .unwrap();
    }
    root.auth_enable().await.unwrap();
    let mut alice = connect_as(s, "alice", "apw").await;
    let mut bob = connect_as(s, "bob", "bpw").await;
    let mut anon = connect(s).await;
    let lock = |lease| Some(LockOptions::new().with_lease(lease));
    let key = |r: &etcd_client::LockResponse| {
        format!(
            "{} at {}",
            String::from_utf8_lossy(r.key()),
            r.header().unwrap().revision()
        )
    };
    let header = |h: Option<&etcd_client::ResponseHeader>| format!("at {}", h.unwrap().revision());
    let mut t = Vec::new();

    let held = alice.lock("a/l", lock(LEASE_A)).await.unwrap();
    t.push(format!("alice locks a/l: ok {}", key(&held)));
    t.push(outcome(
        "bob locks a/l",
        bob.lock("a/l", lock(LEASE_B)).await,
        key,
    ));
    // With lease 0 the session's lease is granted (not checked), then the txn is refused.
    t.push(outcome("bob locks b", bob.lock("b", None).await, key));
    t.push(outcome(
        "anon locks a/l",
        anon.lock("a/l", lock(LEASE_B)).await,
        key,
    ));
    t.push(outcome(
        "bob unlocks alice's key",
        bob.unlock(held.key()).await,
        |r| header(r.header()),
    ));

    let campaign = |r: &etcd_client::CampaignResponse| show_leader(r.leader().unwrap());
    t.push(outcome(
        "bob campaigns",
        bob.campaign("a/e", "b", LEASE_B).await,
        campaign,
    ));
    let leading = alice.campaign("a/e", "a", LEASE_A).await.unwrap();
    t.push(format!("alice campaigns: ok {}", campaign(&leading)));
    let la = leader_key(leading.leader().unwrap());
    let leader = |r: &etcd_client::LeaderResponse| {
        let kv = r.kv().unwrap();
        format!("{} = {}", kv.key_str().unwrap(), kv.value_str().unwrap())
    };
    for (who, c) in [
        ("bob", &mut bob),
        ("anon", &mut anon),
        ("alice", &mut alice),
    ] {
        t.push(outcome(
            &format!("{who} asks the leader"),
            c.leader("a/e").await,
            leader,
        ));
    }
    let on_behalf = || Some(ProclaimOptions::new().with_leader(leader_key(&la)));
    t.push(outcome(
        "bob proclaims for alice",
        bob.proclaim("x", on_behalf()).await,
        |r| header(r.header()),
    ));
    t.push(outcome(
        "bob resigns for alice",
        bob.resign(Some(ResignOptions::new().with_leader(leader_key(&la))))
            .await,
        |r| header(r.header()),
    ));
    // An observer who may not read the leader gets a stream that ends without a message.
    for (who, c) in [
        ("bob", &mut bob),
        ("anon", &mut anon),
        ("alice", &mut alice),
    ] {
        let seen = match c.observe("a/e").await {
            Ok(mut stream) => match bounded("an observed leader", stream.message()).await {
                Ok(Some(m)) => format!("observes {}", leader(&m)),
                Ok(None) => "observes nothing; the stream ended".to_owned(),
                Err(e) => format!("observe: {}", error_text(e)),
            },
            Err(e) => format!("observe: {}", error_text(e)),
        };
        t.push(format!("{who} {seen}"));
    }
    t.push(outcome(
        "alice proclaims",
        alice.proclaim("a2", on_behalf()).await,
        |r| header(r.header()),
    ));
    t.push(outcome(
        "alice resigns",
        alice
            .resign(Some(ResignOptions::new().with_leader(leader_key(&la))))
            .await,
        |r| header(r.header()),
    ));
    t.push(outcome(
        "alice unlocks",
        alice.unlock(held.key()).await,
        |r| header(r.header()),
    ));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_run_as_their_caller() {
    let peer = format!("http://127.0.0.1:{}", common::free_port());
    let etcd = Server::start_advertising(Kind::Etcd, &peer);
    let corekv = Server::start_advertising(Kind::Corekv, &peer);
    let want = auth_transcript(&etcd).await;
    let got = auth_transcript(&corekv).await;
    assert_eq!(got, want, "corekv (left) and etcd 3.4 (right) differ");
    assert!(
        want.iter()
            .any(|l| l.starts_with("bob locks a/l: error Unknown: etcdserver: permission denied")),
        "{want:#?}"
    );
}

/// A client that goes away while it waits for a lock or a leadership takes its key with it,
/// and the waiting leaves nothing behind on the server (its watchers are gone).
async fn check_abandoned_waits(s: &Server) {
    let mut c = connect(s).await;
    for id in [LEASE_A, LEASE_B] {
        c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(id)))
            .await
            .unwrap();
    }
    let a = c
        .lock("l", Some(LockOptions::new().with_lease(LEASE_A)))
        .await
        .unwrap();
    // Over gRPC: the waiting call is dropped (tonic resets its stream).
    let waiter = {
        let mut c = connect(s).await;
        tokio::spawn(async move {
            c.lock("l", Some(LockOptions::new().with_lease(LEASE_B)))
                .await
                .ok()
        })
    };
    until_keys(&mut c, "l/", 2).await;
    waiter.abort();
    until_keys(&mut c, "l/", 1).await;
    // Over the gateway: the HTTP client closes its connection while it waits.
    let body = format!(r#"{{"name":"bA==","lease":"{LEASE_B}"}}"#);
    let http = post(s.client_port, "/v3/lock/lock", &body);
    until_keys(&mut c, "l/", 2).await;
    drop(http);
    until_keys(&mut c, "l/", 1).await;
    // A campaign abandoned the same way resigns.
    c.campaign("e", "a", LEASE_A).await.unwrap();
    let candidate = {
        let mut c = connect(s).await;
        tokio::spawn(async move { c.campaign("e", "b", LEASE_B).await.ok() })
    };
    until_keys(&mut c, "e/", 2).await;
    candidate.abort();
    until_keys(&mut c, "e/", 1).await;
    // An observer that leaves.
    let observer = c.observe("e").await.unwrap();
    drop(observer);
    // The server is not stuck: the lock is free again once unlocked.
    c.unlock(a.key()).await.unwrap();
    let b = bounded(
        "a lock after the waiters left",
        c.lock("l", Some(LockOptions::new().with_lease(LEASE_B))),
    )
    .await
    .unwrap();
    assert_eq!(b.key(), format!("l/{LEASE_B:x}").as_bytes());
    // Every watcher the waits and the observer opened is gone.
    let deadline = Instant::now() + LIMIT;
    loop {
        let watchers = metric(s.client_port, "etcd_debugging_mvcc_watcher_total");
        if watchers == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} still has {watchers} watchers",
            s.kind.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_while_waiting_leave_nothing_behind() {
    for kind in [Kind::Etcd, Kind::Corekv] {
        let s = Server::start(kind);
        check_abandoned_waits(&s).await;
    }
}

fn metric(port: u16, name: &str) -> f64 {
    let text = common::http_get(port, "/metrics").expect("a /metrics scrape");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in the scrape"))
}

/// Sends a gateway POST on a new connection and returns it unread.
fn post(port: u16, path: &str, body: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    BufReader::new(s)
}

/// Reads a response head: the status and whether the body is chunked (else its length).
fn read_head(r: &mut BufReader<TcpStream>) -> (u16, Option<usize>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("a status line");
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let mut length = None;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            return (status, length);
        }
        if let Some(n) = l.strip_prefix("content-length:") {
            length = n.trim().parse().ok();
        }
    }
}

/// The next line of a chunked body (None at its end).
fn next_line(r: &mut BufReader<TcpStream>, pending: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            return Some(String::from_utf8(line).unwrap().trim_end().to_owned());
        }
        let mut size = String::new();
        r.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return None;
        }
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).ok()?;
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// A gateway answer with the raft term taken out.
fn normalized(status: u16, body: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(body) else {
        return format!("{status} {body:?}");
    };
    for header in ["/header", "/result/header"] {
        if let Some(h) = v.pointer_mut(header).and_then(|h| h.as_object_mut()) {
            h.remove("raft_term");
        }
    }
    format!("{status} {v}")
}

fn call(port: u16, path: &str, body: &str) -> String {
    let mut r = post(port, path, body);
    let (status, length) = read_head(&mut r);
    let body = match length {
        Some(n) => {
            let mut buf = vec![0; n];
            r.read_exact(&mut buf).unwrap();
            String::from_utf8(buf).unwrap()
        }
        // Go's server may chunk a short answer too.
        None => {
            let mut pending = Vec::new();
            let mut body = String::new();
            while let Some(line) = next_line(&mut r, &mut pending) {
                body.push_str(&line);
            }
            body + &String::from_utf8(pending).unwrap()
        }
    };
    normalized(status, &body)
}

/// The same calls through the JSON gateway, Observe's stream included.
fn gateway_transcript(s: &Server) -> Vec<String> {
    let port = s.client_port;
    let mut t = Vec::new();
    for id in [LEASE_A, LEASE_B] {
        call(
            port,
            "/v3/lease/grant",
            &format!(r#"{{"TTL":60,"ID":{id}}}"#),
        );
    }
    // Observe waits for a first leader; its status comes with its first result.
    let mut observer = post(port, "/v3/election/observe", r#"{"name":"Zw=="}"#);
    // Handshake: the observer found no leader and watches for one.
    let deadline = Instant::now() + LIMIT;
    while metric(port, "etcd_debugging_mvcc_watcher_total") != 1.0 {
        assert!(Instant::now() < deadline, "the observer never watched");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (mut observe_status, mut pending) = (0, Vec::new());
    for (i, (path, body)) in [
        (
            "/v3/lock/lock",
            format!(r#"{{"name":"Zw==","lease":{LEASE_A}}}"#),
        ),
        ("/v3/lock/lock", r#"{"name":"Zw==","lease":153}"#.to_owned()),
        ("/v3/lock/lock", r#"{"name":5}"#.to_owned()),
        ("/v3/lock", r#"{"name":"Zw=="}"#.to_owned()),
        ("/v3/lock/unlock", r#"{"key":"Zy8xYQ=="}"#.to_owned()),
        ("/v3/lock/unlock", "{}".to_owned()),
        ("/v3/election/leader", r#"{"name":"Zw=="}"#.to_owned()),
        (
            "/v3/election/campaign",
            format!(r#"{{"name":"Zw==","lease":{LEASE_A},"value":"djE="}}"#),
        ),
        ("/v3/election/leader", r#"{"name":"Zw=="}"#.to_owned()),
        (
            "/v3/election/proclaim",
            r#"{"leader":{"name":"Zw==","key":"Zy8xYQ==","rev":"5","lease":"26"},"value":"djI="}"#
                .to_owned(),
        ),
        (
            "/v3/election/proclaim",
            r#"{"leader":{"name":"Zw==","key":"Zy8xYQ==","rev":"4","lease":"26"},"value":"djM="}"#
                .to_owned(),
        ),
        ("/v3/election/proclaim", r#"{"value":"djM="}"#.to_owned()),
        (
            "/v3/election/resign",
            r#"{"leader":{"name":"Zw==","key":"Zy8xYQ==","rev":"5","lease":"26"}}"#.to_owned(),
        ),
        ("/v3/election/leader", r#"{"name":"Zw=="}"#.to_owned()),
    ]
    .into_iter()
    .enumerate()
    {
        t.push(format!("{path} {body} -> {}", call(port, path, &body)));
        // The observer is read after each new leader, before the next change: one that fell
        // behind would (as etcd's) skip to the newest value, which is not what this checks.
        if i == 0 {
            let (status, length) = read_head(&mut observer);
            assert_eq!(length, None, "observe answers with a chunked stream");
            observe_status = status;
        }
        if i == 0 || i == 7 {
            let line = next_line(&mut observer, &mut pending).expect("an observed leader");
            t.push(format!("observe -> {}", normalized(observe_status, &line)));
        }
    }
    t.push(format!(
        "observe with bad JSON -> {}",
        call(port, "/v3/election/observe", r#"{"name":5}"#)
    ));
    t
}

#[test]
fn the_gateway_serves_lock_and_election_as_etcds_does() {
    let peer = format!("http://127.0.0.1:{}", common::free_port());
    let etcd = Server::start_advertising(Kind::Etcd, &peer);
    let corekv = Server::start_advertising(Kind::Corekv, &peer);
    let want = gateway_transcript(&etcd);
    let got = gateway_transcript(&corekv);
    // JSON decoding errors are worded by Go's encoding/json and serde_json each their own way.
    let wording = |t: &[String]| -> Vec<String> {
        t.iter()
            .map(|l| {
                match l
                    .find("\"error\":\"json: ")
                    .or(l.find("\"error\":\"invalid"))
                {
                    Some(_) => l.split(" -> ").next().unwrap().to_owned() + " -> a JSON error",
                    None => l.clone(),
                }
            })
            .collect()
    };
    assert_eq!(
        wording(&got),
        wording(&want),
        "corekv (left) and etcd 3.4 (right) differ"
    );
    assert!(
        want.iter().any(|l| l.contains("code\":3")),
        "bad JSON is code 3"
    );
}
