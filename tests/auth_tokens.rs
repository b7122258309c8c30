//! Auth tokens across a cluster (issue #16): JWT tokens (`--auth-token jwt,…`, keys made
//! here with openssl, as etcd's docs make them) issued by one member and honoured by every
//! member, forged, tampered, expired and stale ones refused; auth changes made through one
//! member holding on the others; a simple token used on a follower that has not yet applied
//! the entry that issued it, which etcd makes wait rather than refuse.
//!
//! Tokens are sent as raw gRPC metadata (tonic), since etcdctl hides them.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::cluster::Cluster;
use common::{require_binary, stderr, stdout, DieWithTest, Kind};
use corekv::proto::etcdserverpb as pb;

/// A unary gRPC call to `endpoint`, with `token` as the `token` metadata when given.
async fn call<Req, Resp>(
    endpoint: &str,
    path: &'static str,
    token: Option<&str>,
    req: Req,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let channel = tonic::transport::Channel::from_shared(format!("http://{endpoint}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(req);
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("token", t.parse().expect("a token is ASCII"));
    }
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(request, path, codec)
        .await
        .map(tonic::Response::into_inner)
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn authenticate(endpoint: &str, name: &str, password: &str) -> Result<String, tonic::Status> {
    let req = pb::AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    };
    block(call::<_, pb::AuthenticateResponse>(
        endpoint,
        "/etcdserverpb.Auth/Authenticate",
        None,
        req,
    ))
    .map(|r| r.token)
}

fn get(endpoint: &str, token: &str, key: &str) -> Result<pb::RangeResponse, tonic::Status> {
    let req = pb::RangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    };
    block(call(endpoint, "/etcdserverpb.KV/Range", Some(token), req))
}

fn put(
    endpoint: &str,
    token: &str,
    key: &str,
    value: &str,
) -> Result<pb::PutResponse, tonic::Status> {
    let req = pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    };
    block(call(endpoint, "/etcdserverpb.KV/Put", Some(token), req))
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, message: &str) {
    match r {
        Err(s) => assert_eq!(s.message(), message, "{s:?}"),
        Ok(v) => panic!("expected {message:?}, got {v:?}"),
    }
}

fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(require_binary("etcdctl"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "--dial-timeout=2s",
            "--command-timeout=10s",
        ])
        .args(args)
        .die_with_test()
        .output()
        .unwrap()
}

#[track_caller]
fn ok(endpoint: &str, args: &[&str]) -> String {
    let o = etcdctl(endpoint, args);
    assert!(
        o.status.success(),
        "etcdctl {args:?} on {endpoint}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new(require_binary("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
}

/// root, and alice who may read and write `app/`, then auth on.
fn set_up_auth(endpoint: &str) {
    for args in common::APP_AUTH {
        ok(endpoint, args);
    }
}

/// The claims of a JWT, without checking it.
fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&json).unwrap()
}

const INVALID_TOKEN: &str = "etcdserver: invalid auth token";
const DENIED: &str = "etcdserver: permission denied";

#[test]
fn jwt_tokens_hold_on_every_member_and_forged_ones_are_refused() {
    let keys = tempfile::tempdir().unwrap();
    openssl(keys.path(), &["genrsa", "-out", "jwt.key", "2048"]);
    openssl(
        keys.path(),
        &["rsa", "-in", "jwt.key", "-pubout", "-out", "jwt.pub"],
    );
    openssl(keys.path(), &["genrsa", "-out", "other.key", "2048"]);
    let k = |f: &str| keys.path().join(f).to_string_lossy().into_owned();
    let flag = format!(
        "--auth-token=jwt,pub-key={},priv-key={},sign-method=RS256,ttl=10m",
        k("jwt.pub"),
        k("jwt.key")
    );
    let c = Cluster::start(Kind::Corekv, 3, &[&flag]);
    let ep: Vec<String> = c.endpoints();
    set_up_auth(&ep[0]);

    // Issued by member 0: a JWT with etcd's claims.
    let token = authenticate(&ep[0], "alice", "apw").unwrap();
    let cl = claims(&token);
    assert_eq!(cl["username"], "alice", "{cl}");
    assert!(cl["revision"].as_u64().is_some_and(|r| r > 0), "{cl}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = cl["exp"].as_u64().expect("exp");
    assert!(exp > now + 500 && exp <= now + 601, "exp {exp}, now {now}");

    // Good on every member at once: no member needs to have seen it issued.
    for (i, e) in ep.iter().enumerate() {
        put(e, &token, &format!("app/{i}"), "v").unwrap();
        assert_eq!(get(e, &token, &format!("app/{i}")).unwrap().count, 1);
        assert_refused(get(e, &token, "other"), DENIED);
    }
    assert_refused(
        authenticate(&ep[1], "alice", "wrong"),
        "etcdserver: authentication failed, invalid user ID or password",
    );

    // Forged: alice's signature over root's claims; signed with another key; expired; not a
    // JWT at all.
    let root = authenticate(&ep[1], "root", "rootpw").unwrap();
    let (a, r): (Vec<&str>, Vec<&str>) = (token.split('.').collect(), root.split('.').collect());
    let tampered = format!("{}.{}.{}", a[0], r[1], a[2]);
    let foreign_key =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(k("other.key")).unwrap()).unwrap();
    let own_key =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(k("jwt.key")).unwrap()).unwrap();
    let sign = |key: &jsonwebtoken::EncodingKey, user: &str, exp: u64| {
        let claims = serde_json::json!({"username": user, "revision": cl["revision"], "exp": exp});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            key,
        )
        .unwrap()
    };
    let foreign = sign(&foreign_key, "root", now + 600);
    let expired = sign(&own_key, "alice", now - 10);
    let unsigned = format!("{}.{}.", a[0], a[1]);
    for bad in [
        &tampered,
        &foreign,
        &expired,
        &unsigned,
        &"abcdefghijklmnop.5".to_string(),
    ] {
        for e in &ep {
            assert_refused(get(e, bad, "app/0"), INVALID_TOKEN);
            assert_refused(put(e, bad, "app/0", "x"), INVALID_TOKEN);
        }
    }
    // The same claims signed with the member's own key are good: the refusals above were
    // about the signature and the expiry, not the claims.
    get(&ep[2], &sign(&own_key, "alice", now + 600), "app/0").unwrap();

    // An auth change made through member 1 holds on members 0 and 2; a token issued before
    // it is stale everywhere (clients re-authenticate on this error, as etcdctl does).
    ok(
        &ep[1],
        &[
            "--user=root:rootpw",
            "role",
            "grant-permission",
            "app",
            "read",
            "other",
        ],
    );
    for e in [&ep[0], &ep[2]] {
        assert_refused(
            get(e, &token, "app/0"),
            "etcdserver: revision of auth store is old",
        );
        let fresh = authenticate(e, "alice", "apw").unwrap();
        assert_eq!(get(e, &fresh, "other").unwrap().count, 0);
    }
    ok(
        &ep[2],
        &["--user=root:rootpw", "user", "revoke-role", "alice", "app"],
    );
    for e in &ep {
        let o = etcdctl(e, &["--user=alice:apw", "get", "app/0"]);
        assert!(
            !o.status.success() && stderr(&o).contains(DENIED),
            "{}",
            stderr(&o)
        );
    }
    ok(&ep[0], &["--user=root:rootpw", "user", "add", "bob:bpw"]);
    for e in &ep {
        authenticate(e, "bob", "bpw").unwrap();
    }
}

/// etcd's verify-only mode: a member given only the public key checks tokens another member
/// signed, and cannot issue any. ES256 with OpenSSL's default (SEC1) EC key format.
#[test]
fn a_verify_only_member_checks_tokens_it_cannot_issue() {
    let keys = tempfile::tempdir().unwrap();
    openssl(
        keys.path(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.key",
        ],
    );
    openssl(
        keys.path(),
        &["ec", "-in", "ec.key", "-pubout", "-out", "ec.pub"],
    );
    let k = |f: &str| keys.path().join(f).to_string_lossy().into_owned();
    let signer = common::Server::start_with(
        Kind::Corekv,
        &[&format!(
            "--auth-token=jwt,priv-key={},sign-method=ES256",
            k("ec.key")
        )],
    );
    let verifier = common::Server::start_with(
        Kind::Corekv,
        &[&format!(
            "--auth-token=jwt,pub-key={},sign-method=ES256",
            k("ec.pub")
        )],
    );
    for s in [&signer, &verifier] {
        set_up_auth(&s.endpoint());
    }
    let token = authenticate(&signer.endpoint(), "alice", "apw").unwrap();
    assert_eq!(claims(&token)["username"], "alice");
    // Two separate single-member clusters with the same users: the verifier's auth revision
    // is the same, so the signer's token is good there.
    put(&verifier.endpoint(), &token, "app/x", "1").unwrap();
    assert_refused(get(&verifier.endpoint(), &token, "other"), DENIED);
    let e = authenticate(&verifier.endpoint(), "alice", "apw").unwrap_err();
    assert!(e.message().contains("verify-only"), "{e:?}");
}

/// A simple token is `<random>.<raft index>`. A follower cut off from the leader has not
/// applied the entry that issued it; etcd makes a request with that token wait until the
/// member has, instead of refusing it as unknown.
#[test]
fn a_simple_token_waits_for_a_follower_to_catch_up() {
    let mut c = Cluster::start_isolated(Kind::Corekv, 3, &[]);
    let ep = c.endpoints();
    let leader = c.wait_leader();
    let lagging = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    set_up_auth(&ep[leader]);
    ok(
        &ep[lagging],
        &["--user=root:rootpw", "put", "app/before", "1"],
    );
    c.isolate(lagging);
    let token = authenticate(&ep[other], "alice", "apw").unwrap();
    let index: u64 = token.split('.').nth(1).unwrap().parse().unwrap();
    assert!(index > 0, "{token}");
    // Sent while the member is cut off: it cannot know the token yet.
    let (tx, rx) = std::sync::mpsc::channel();
    let (e, t) = (ep[lagging].clone(), token.clone());
    let asker = std::thread::spawn(move || tx.send(get(&e, &t, "app/before")).unwrap());
    if let Ok(early) = rx.recv_timeout(Duration::from_millis(500)) {
        panic!("answered while cut off from the leader: {early:?}");
    }
    c.heal();
    let answer = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no answer after healing");
    asker.join().unwrap();
    // The member rejoining can cost a leader change, which fails the read itself
    // (Unavailable); never the token. Then the same token reads.
    let answer = match answer {
        Err(s) if s.code() == tonic::Code::Unavailable => get(&ep[lagging], &token, "app/before"),
        other => other,
    };
    assert_eq!(
        answer.expect("the token once the member caught up").count,
        1
    );
    // A token no member issued is still refused, after the same wait.
    assert_refused(
        get(
            &ep[lagging],
            &format!("zzzzzzzzzzzzzzzz.{index}"),
            "app/before",
        ),
        INVALID_TOKEN,
    );
}
