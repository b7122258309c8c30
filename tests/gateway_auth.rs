//! Auth over etcd's JSON gateway, differentially: the same HTTP/1.1 requests go to etcd 3.4's
//! gateway and to corekv's — the Auth calls under `/v3/auth/`, and every other call with and
//! without a token in the headers grpc-gateway forwards (`Authorization`,
//! `Grpc-Metadata-Authorization`, `Grpc-Metadata-Token`) — and the answers (status, content
//! type, JSON) must be the same. Each server issues its own tokens: a request that carries one
//! carries that server's; what is normalized is the token in an Authenticate answer (its
//! shape is checked), besides what tests/gateway.rs normalizes.
//!
//! The Lock and Election services run as their caller: a user without permission on the
//! keys under a name can neither lock it nor campaign, look up or observe its leader, as with
//! etcd's (whose services run over an in-process client carrying the caller's token).

mod common;

use std::time::{Duration, Instant};

use common::gateway::{b64, normalize, pair, Pair, Stream};
use serde_json::{json, Value};

/// One user's tokens: etcd's, corekv's.
type Tokens = [String; 2];

/// The same header on both, each with its own server's value.
fn each<'a>(name: &'static str, values: &'a Tokens) -> [[(&'static str, &'a str); 1]; 2] {
    [[(name, values[0].as_str())], [(name, values[1].as_str())]]
}

/// The same request to both as a user (`Authorization: <token>`).
fn as_user(p: &mut Pair, user: &Tokens, path: &str, body: &str) -> Value {
    let h = each("Authorization", user);
    p.same_with(path, body, [&h[0], &h[1]])
}

/// The same request with the same extra headers to both.
fn with(p: &mut Pair, headers: &[(&str, &str)], path: &str, body: &str) -> Value {
    p.same_with(path, body, [headers, headers])
}

/// Authenticates on both (the same answer, tokens aside); returns the two tokens.
fn authenticate(p: &mut Pair, name: &str, password: &str) -> Tokens {
    let body = json!({ "name": name, "password": password }).to_string();
    let [e, c] = p.raw_with("/v3/auth/authenticate", &body, [&[], &[]]);
    common::gateway::same_answer(&format!("authenticate {name}"), &e, &c);
    [&e, &c].map(|r| {
        r.json()["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token for {name}: {}", r.json()))
            .to_owned()
    })
}

/// Over HTTP: root with the root role, and `users` (name, password, role or "").
fn set_up(p: &mut Pair, users: &[(&str, &str, &str)]) {
    p.same(
        "/v3/auth/user/add",
        r#"{"name":"root","password":"rootpw"}"#,
    );
    p.same("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#);
    for (name, password, role) in users {
        p.same(
            "/v3/auth/user/add",
            &json!({ "name": name, "password": password }).to_string(),
        );
        if !role.is_empty() {
            p.same(
                "/v3/auth/user/grant",
                &json!({ "user": name, "role": role }).to_string(),
            );
        }
    }
}

#[test]
fn auth_over_the_gateway_answers_like_etcd() {
    let mut p = pair();
    let bogus: Tokens = [String::from("bogus"), String::from("bogus")];
    let foo = b64("foo");
    let range_foo = format!(r#"{{"key":"{foo}"}}"#);

    // Before auth is on: nothing to authenticate against, no root to enable it for.
    p.same("/v3/auth/authenticate", r#"{"name":"root","password":"x"}"#);
    p.same("/v3/auth/enable", "{}");
    p.same("/v3/auth/disable", "{}");

    // Users, roles and permissions over HTTP, with their errors.
    let perm = |role: &str, perm: Value| json!({ "name": role, "perm": perm }).to_string();
    for (path, body) in [
        (
            "/v3/auth/user/add",
            r#"{"name":"root","password":"rootpw"}"#.to_owned(),
        ),
        (
            "/v3/auth/user/add",
            r#"{"name":"root","password":"again"}"#.to_owned(),
        ),
        (
            "/v3/auth/user/add",
            r#"{"name":"","password":"x"}"#.to_owned(),
        ),
        ("/v3/auth/enable", "{}".to_owned()),
        (
            "/v3/auth/user/grant",
            r#"{"user":"root","role":"root"}"#.to_owned(),
        ),
        ("/v3/auth/role/add", r#"{"name":"app"}"#.to_owned()),
        ("/v3/auth/role/add", r#"{"name":"app"}"#.to_owned()),
        (
            "/v3/auth/role/grant",
            perm("app", json!({ "permType": "READWRITE", "key": foo })),
        ),
        (
            "/v3/auth/role/grant",
            perm(
                "app",
                json!({ "permType": "READ", "key": b64("pre/"), "range_end": b64("pre0") }),
            ),
        ),
        (
            "/v3/auth/role/grant",
            perm("app", json!({ "permType": "WRITE", "key": b64("w") })),
        ),
        // No permType: READ, the enum's zero.
        (
            "/v3/auth/role/grant",
            perm("app", json!({ "key": b64("r") })),
        ),
        (
            "/v3/auth/role/grant",
            perm("nope", json!({ "key": b64("r") })),
        ),
        (
            "/v3/auth/role/revoke",
            json!({ "role": "app", "key": b64("r") }).to_string(),
        ),
        (
            "/v3/auth/role/revoke",
            json!({ "role": "app", "key": b64("r") }).to_string(),
        ),
        (
            "/v3/auth/user/add",
            r#"{"name":"alice","password":"apw"}"#.to_owned(),
        ),
        (
            "/v3/auth/user/add",
            r#"{"name":"nopw","options":{"no_password":true}}"#.to_owned(),
        ),
        (
            "/v3/auth/user/grant",
            r#"{"user":"alice","role":"app"}"#.to_owned(),
        ),
        (
            "/v3/auth/user/grant",
            r#"{"user":"alice","role":"missing"}"#.to_owned(),
        ),
        (
            "/v3/auth/user/grant",
            r#"{"user":"nobody","role":"app"}"#.to_owned(),
        ),
        (
            "/v3/auth/user/add",
            r#"{"name":"bob","password":"bpw"}"#.to_owned(),
        ),
        (
            "/v3/auth/user/grant",
            r#"{"user":"bob","role":"app"}"#.to_owned(),
        ),
        (
            "/v3/auth/user/revoke",
            r#"{"name":"bob","role":"app"}"#.to_owned(),
        ),
        (
            "/v3/auth/user/revoke",
            r#"{"name":"bob","role":"app"}"#.to_owned(),
        ),
        (
            "/v3/auth/user/changepw",
            r#"{"name":"bob","password":"bpw2"}"#.to_owned(),
        ),
        (
            "/v3/auth/user/changepw",
            r#"{"name":"nobody","password":"x"}"#.to_owned(),
        ),
        ("/v3/auth/user/get", r#"{"name":"alice"}"#.to_owned()),
        ("/v3/auth/user/get", r#"{"name":"nobody"}"#.to_owned()),
        ("/v3/auth/role/get", r#"{"role":"app"}"#.to_owned()),
        ("/v3/auth/role/get", r#"{"role":"nope"}"#.to_owned()),
        ("/v3/auth/user/list", "{}".to_owned()),
        ("/v3/auth/role/list", "{}".to_owned()),
        ("/v3/auth/role/add", r#"{"name":"spare"}"#.to_owned()),
        ("/v3/auth/role/delete", r#"{"role":"spare"}"#.to_owned()),
        ("/v3/auth/role/delete", r#"{"role":"spare"}"#.to_owned()),
        ("/v3/auth/user/delete", r#"{"name":"bob"}"#.to_owned()),
        ("/v3/auth/user/delete", r#"{"name":"bob"}"#.to_owned()),
        ("/v3/auth/enable", "{}".to_owned()),
    ] {
        p.same(path, &body);
    }

    // No token where a user is needed; tokens that are not tokens; bad passwords.
    p.same("/v3/kv/range", &range_foo);
    p.same(
        "/v3/kv/put",
        &format!(r#"{{"key":"{foo}","value":"{}"}}"#, b64("x")),
    );
    for headers in [
        &[("Authorization", "bogus")][..],
        &[("Authorization", "")],
        &[("Grpc-Metadata-Token", "bogus")],
        &[("Grpc-Metadata-Authorization", "bogus")],
    ] {
        let r = with(&mut p, headers, "/v3/kv/range", &range_foo);
        assert_eq!(r["code"], 16, "{headers:?}: {r}");
    }
    // A header etcd does not read is no token.
    let r = with(&mut p, &[("Token", "bogus")], "/v3/kv/range", &range_foo);
    assert_eq!(r["code"], 3, "{r}");
    for body in [
        r#"{"name":"root","password":"wrong"}"#,
        r#"{"name":"nobody","password":"x"}"#,
        r#"{"name":"nopw","password":""}"#,
    ] {
        p.same("/v3/auth/authenticate", body);
    }
    let root = authenticate(&mut p, "root", "rootpw");
    let alice = authenticate(&mut p, "alice", "apw");
    // Authenticate is refused with a bad token beside the password.
    let r = with(
        &mut p,
        &[("Authorization", "bogus")],
        "/v3/auth/authenticate",
        r#"{"name":"alice","password":"apw"}"#,
    );
    assert_eq!(r["code"], 16, "{r}");

    // Alice's keys: what she may and may not do, as the gateway forwards her token.
    for (path, body) in [
        (
            "/v3/kv/put",
            format!(r#"{{"key":"{foo}","value":"{}"}}"#, b64("a1")),
        ),
        ("/v3/kv/range", range_foo.clone()),
        (
            "/v3/kv/put",
            format!(r#"{{"key":"{}","value":"{}"}}"#, b64("bar"), b64("x")),
        ),
        ("/v3/kv/range", format!(r#"{{"key":"{}"}}"#, b64("bar"))),
        (
            "/v3/kv/range",
            format!(
                r#"{{"key":"{}","range_end":"{}"}}"#,
                b64("pre/"),
                b64("pre0")
            ),
        ),
        (
            "/v3/kv/put",
            format!(r#"{{"key":"{}","value":"{}"}}"#, b64("pre/x"), b64("x")),
        ),
        (
            "/v3/kv/put",
            format!(r#"{{"key":"{}","value":"{}"}}"#, b64("w"), b64("x")),
        ),
        ("/v3/kv/range", format!(r#"{{"key":"{}"}}"#, b64("w"))),
        (
            "/v3/kv/txn",
            format!(
                r#"{{"compare":[{{"key":"{foo}","target":"VALUE","result":"EQUAL","value":"{}"}}],
                    "success":[{{"request_put":{{"key":"{}","value":"{}"}}}}],
                    "failure":[{{"request_range":{{"key":"{foo}"}}}}]}}"#,
                b64("a1"),
                b64("w"),
                b64("t")
            ),
        ),
        (
            "/v3/kv/txn",
            format!(
                r#"{{"success":[{{"request_range":{{"key":"{}"}}}}]}}"#,
                b64("w")
            ),
        ),
        (
            "/v3/kv/deleterange",
            format!(r#"{{"key":"{foo}","prev_kv":true}}"#),
        ),
        ("/v3/auth/user/get", r#"{"name":"alice"}"#.to_owned()),
        ("/v3/auth/user/get", r#"{"name":"root"}"#.to_owned()),
        ("/v3/auth/role/get", r#"{"role":"app"}"#.to_owned()),
        ("/v3/auth/role/get", r#"{"role":"root"}"#.to_owned()),
        ("/v3/auth/user/list", "{}".to_owned()),
        ("/v3/auth/role/add", r#"{"name":"r2"}"#.to_owned()),
        ("/v3/auth/disable", "{}".to_owned()),
        ("/v3/maintenance/hash", "{}".to_owned()),
        ("/v3/maintenance/status", "{}".to_owned()),
        ("/v3/lease/grant", r#"{"TTL":60,"ID":100}"#.to_owned()),
    ] {
        as_user(&mut p, &alice, path, &body);
    }
    // Her token in the other headers grpc-gateway forwards; `token` wins over
    // `authorization`; a scheme before the token makes it no token.
    for name in ["Grpc-Metadata-Token", "Grpc-Metadata-Authorization"] {
        let h = each(name, &alice);
        let r = p.same_with("/v3/kv/range", &range_foo, [&h[0], &h[1]]);
        assert!(r.get("code").is_none(), "{name}: {r}");
    }
    let mixed = [0, 1].map(|i| {
        [
            ("Grpc-Metadata-Token", "bogus"),
            ("Authorization", &alice[i]),
        ]
    });
    let r = p.same_with("/v3/kv/range", &range_foo, [&mixed[0], &mixed[1]]);
    assert_eq!(r["code"], 16, "{r}");
    let bearer = alice.clone().map(|t| format!("Bearer {t}"));
    let r = as_user(&mut p, &bearer, "/v3/kv/range", &range_foo);
    assert_eq!(r["code"], 16, "{r}");
    // Calls etcd serves without looking at a token.
    with(
        &mut p,
        &[("Authorization", "bogus")],
        "/v3/maintenance/status",
        "{}",
    );
    with(
        &mut p,
        &[("Authorization", "bogus")],
        "/v3/lease/grant",
        r#"{"TTL":60,"ID":101}"#,
    );
    as_user(&mut p, &root, "/v3/auth/user/list", "{}");
    // corekv's gateway over HTTP/2 reads the same headers (etcd 3.4 serves its gateway over
    // HTTP/1.1 only on a plain port).
    let h2 = |headers: &[String]| {
        let out = std::process::Command::new(common::require_binary("curl"))
            .args(["-s", "--http2-prior-knowledge", "-w", "\n%{http_version}"])
            .args(headers.iter().flat_map(|h| ["-H", h.as_str()]))
            .arg(format!("http://127.0.0.1:{}/v3/kv/range", p.port(1)))
            .args(["-d", &range_foo])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, version) = text.rsplit_once('\n').unwrap();
        assert_eq!(version, "2", "{text}");
        serde_json::from_str::<Value>(body).unwrap()
    };
    // (foo was deleted above: an answer with a header and no kvs.)
    for header in ["Authorization", "grpc-metadata-token"] {
        let r = h2(&[format!("{header}: {}", alice[1])]);
        assert!(
            r["header"]["revision"].is_string() && r.get("code").is_none(),
            "{r}"
        );
    }
    assert_eq!(h2(&[])["code"], 3);
    assert_eq!(h2(&["Authorization: bogus".to_owned()])["code"], 16);

    // Streams carry the token too: a watch is checked when it is created; a keep-alive is
    // not checked.
    for (headers, key) in [
        (Some(&alice), "foo"),
        (Some(&alice), "bar"),
        (None, "foo"),
        (Some(&bogus), "foo"),
    ] {
        let body = format!(r#"{{"create_request":{{"key":"{}"}}}}"#, b64(key));
        let mut first = [0, 1].map(|i| {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|t| ("Authorization", t[i].as_str()))
                .collect();
            let (status, mut w) = Stream::open_with(p.port(i), "/v3/watch", &h, &body);
            let mut line = w.next();
            normalize(&mut line);
            (status, line)
        });
        assert_eq!(first[0], first[1], "watch {key}: etcd (left) vs corekv");
        let created = first[0].1["result"].as_object_mut().unwrap();
        assert_eq!(created["created"], true, "{created:?}");
    }
    let keepalive = [0, 1].map(|i| {
        let h = [("Authorization", "bogus")];
        let (status, mut k) =
            Stream::open_with(p.port(i), "/v3/lease/keepalive", &h, r#"{"ID":100}"#);
        let mut line = k.next();
        normalize(&mut line);
        (status, line)
    });
    assert_eq!(
        keepalive[0], keepalive[1],
        "keep-alive: etcd (left) vs corekv"
    );
    assert_eq!(keepalive[0].1["result"]["TTL"], "60");

    // A permission taken away holds at once; a new password drops the user's tokens.
    as_user(
        &mut p,
        &root,
        "/v3/auth/role/revoke",
        &json!({ "role": "app", "key": foo }).to_string(),
    );
    let r = as_user(&mut p, &alice, "/v3/kv/range", &range_foo);
    assert_eq!(r["code"], 7, "{r}");
    as_user(
        &mut p,
        &root,
        "/v3/auth/user/changepw",
        r#"{"name":"alice","password":"apw2"}"#,
    );
    let r = as_user(&mut p, &alice, "/v3/kv/range", &range_foo);
    assert_eq!(r["code"], 16, "{r}");
    let alice = authenticate(&mut p, "alice", "apw2");

    // Only root disables auth; then no token is needed, and an old one is refused.
    as_user(&mut p, &alice, "/v3/auth/disable", "{}");
    as_user(&mut p, &root, "/v3/auth/disable", "{}");
    p.same("/v3/kv/range", &range_foo);
    let r = as_user(&mut p, &alice, "/v3/kv/range", &range_foo);
    assert_eq!(r["code"], 16, "{r}");
    p.same(
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"rootpw"}"#,
    );
}

const LEASE_A: i64 = 0x1a;
const LEASE_B: i64 = 0x1b;

#[test]
fn lock_and_election_over_the_gateway_run_as_the_caller() {
    let mut p = pair();
    // Alice may read and write everything under `lk/`; bob nothing.
    p.same("/v3/auth/role/add", r#"{"name":"app"}"#);
    p.same(
        "/v3/auth/role/grant",
        &json!({"name": "app", "perm": {"permType": "READWRITE", "key": b64("lk/"), "range_end": b64("lk0")}})
            .to_string(),
    );
    set_up(&mut p, &[("alice", "apw", "app"), ("bob", "bpw", "")]);
    for id in [LEASE_A, LEASE_B] {
        p.same("/v3/lease/grant", &format!(r#"{{"TTL":60,"ID":{id}}}"#));
    }
    p.same("/v3/auth/enable", "{}");
    let alice = authenticate(&mut p, "alice", "apw");
    let bob = authenticate(&mut p, "bob", "bpw");
    let bogus = [String::from("bogus"), String::from("bogus")];

    let (lock, election) = (b64("lk/l"), b64("lk/e"));
    let lock_with = |lease: i64| format!(r#"{{"name":"{lock}","lease":"{lease}"}}"#);
    let held = as_user(&mut p, &alice, "/v3/lock/lock", &lock_with(LEASE_A));
    assert_eq!(held["key"], b64(&format!("lk/l/{LEASE_A:x}")), "{held}");
    let unlock_held = json!({ "key": held["key"] }).to_string();
    // Refused at the lease grant (a bad token), at the txn (no user, no permission), at
    // the delete: all gRPC's Unknown with etcd's message, as etcd's in-process client
    // returns them.
    for (who, body) in [
        (&bob, lock_with(LEASE_B)),
        (&bob, format!(r#"{{"name":"{lock}"}}"#)),
        (&bogus, format!(r#"{{"name":"{lock}"}}"#)),
    ] {
        let r = as_user(&mut p, who, "/v3/lock/lock", &body);
        assert_eq!(r["code"], 2, "{body}: {r}");
    }
    let r = p.same("/v3/lock/lock", &lock_with(LEASE_B));
    assert_eq!(r["message"], "etcdserver: user name is empty", "{r}");
    let r = as_user(&mut p, &bob, "/v3/lock/unlock", &unlock_held);
    assert_eq!(r["message"], "etcdserver: permission denied", "{r}");

    // Election: bob can neither campaign nor see, proclaim over or resign alice's lead.
    let campaign = |lease: i64, value: &str| {
        format!(
            r#"{{"name":"{election}","lease":"{lease}","value":"{}"}}"#,
            b64(value)
        )
    };
    let r = as_user(
        &mut p,
        &bob,
        "/v3/election/campaign",
        &campaign(LEASE_B, "b"),
    );
    assert_eq!(r["message"], "etcdserver: permission denied", "{r}");
    let leading = as_user(
        &mut p,
        &alice,
        "/v3/election/campaign",
        &campaign(LEASE_A, "a"),
    );
    let leader = leading["leader"].clone();
    assert_eq!(leader["lease"], LEASE_A.to_string(), "{leading}");
    let name = json!({ "name": election }).to_string();
    let proclaim = json!({ "leader": leader, "value": b64("b") }).to_string();
    let resign = json!({ "leader": leader }).to_string();
    for (path, body) in [
        ("/v3/election/leader", &name),
        ("/v3/election/proclaim", &proclaim),
        ("/v3/election/resign", &resign),
    ] {
        let r = as_user(&mut p, &bob, path, body);
        assert_eq!(r["message"], "etcdserver: permission denied", "{path}: {r}");
    }
    p.same("/v3/election/leader", &name);
    as_user(&mut p, &bogus, "/v3/election/leader", &name);
    as_user(&mut p, &alice, "/v3/election/leader", &name);

    // Observe: a caller who may not read the leader gets an empty stream that ends (etcd's
    // observe ends quietly when its first range fails); alice gets the leader.
    for who in [Some(&bob), Some(&bogus), None] {
        let both = [0, 1].map(|i| {
            let h: Vec<(&str, &str)> = who
                .iter()
                .map(|t| ("Authorization", t[i].as_str()))
                .collect();
            let mut conn = common::gateway::connect(p.port(i));
            conn.send_with("POST", "/v3/election/observe", &h, name.as_bytes(), false);
            let r = conn.response();
            (r.status, r.content_type, r.body)
        });
        assert_eq!(
            both[0], both[1],
            "observe as {who:?}: etcd (left) vs corekv"
        );
        assert_eq!((both[0].0, both[0].2.len()), (200, 0));
    }
    let seen = [0, 1].map(|i| {
        let h = [("Authorization", alice[i].as_str())];
        let (status, mut o) = Stream::open_with(p.port(i), "/v3/election/observe", &h, &name);
        let mut line = o.next();
        normalize(&mut line);
        (status, line)
    });
    assert_eq!(seen[0], seen[1], "observe as alice: etcd (left) vs corekv");
    assert_eq!(seen[0].1["result"]["kv"]["value"], b64("a"));

    as_user(&mut p, &alice, "/v3/election/proclaim", &proclaim);
    as_user(&mut p, &alice, "/v3/election/resign", &resign);
    as_user(&mut p, &alice, "/v3/lock/unlock", &unlock_held);

    // corekv: a waiter that leaves takes its key back as itself, so that works with auth
    // on too. (etcd 3.4 sends that delete without the caller's token: with auth on it is
    // refused, and the key stays until its lease ends.)
    let corekv = p.port(1);
    let root = common::gateway::connect(corekv)
        .post_with(
            "/v3/auth/authenticate",
            &[],
            r#"{"name":"root","password":"rootpw"}"#,
        )
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let count = |root: &str| {
        let body = format!(
            r#"{{"key":"{}","range_end":"{}","count_only":true}}"#,
            b64("lk/l/"),
            b64("lk/l0")
        );
        let r = common::gateway::connect(corekv).post_with(
            "/v3/kv/range",
            &[("Authorization", root)],
            &body,
        );
        r.json()["count"]
            .as_str()
            .unwrap_or("0")
            .parse::<i64>()
            .unwrap()
    };
    let until = |n: i64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while count(&root) != n {
            assert!(Instant::now() < deadline, "never {n} keys under lk/l/");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let h = [("Authorization", alice[1].as_str())];
    let mut holder = common::gateway::connect(corekv);
    let r = holder.post_with("/v3/lock/lock", &h, &lock_with(LEASE_A));
    assert_eq!(r.status, 200, "{}", r.json());
    let mut waiter = common::gateway::connect(corekv);
    waiter.send_with(
        "POST",
        "/v3/lock/lock",
        &h,
        lock_with(LEASE_B).as_bytes(),
        false,
    );
    until(2);
    drop(waiter);
    until(1);
}
