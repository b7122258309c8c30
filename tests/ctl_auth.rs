//! Auth from the client side (issue #16).
//!
//! - corekvctl's `user`, `role` and `auth` commands and the global `--user` / `--password`
//!   (and `ETCDCTL_USER` / `ETCDCTL_PASSWORD`) against stock etcdctl: one sequence of steps
//!   (below) run by etcdctl and by corekvctl, each on a fresh server of one kind — corekv and
//!   etcd 3.4 — with stdout, stderr and exit codes compared after `common::ctl`'s
//!   normalizations. It covers every output format, the argument errors, password prompts
//!   (stdin, `--interactive=false`), and what a user may do once auth is on.
//! - corekv's client library with credentials, against corekv and etcd 3.4: it authenticates
//!   at connect, sends the token on unary calls and streams, and when the token is dropped
//!   (auth disabled and enabled again, or auth enabled after it connected) it authenticates
//!   again and the call goes through; with a changed password it fails with the server's
//!   error.

mod common;

use common::ctl::{diff, ids, mode, report, run, with_env, with_stdin, Mode, Side, Step, Tool};
use common::{Kind, Server};
use corekv::client::{run_local, Client, ClientError, ClientOptions, Credentials};
use corekv::proto::authpb::{permission, Permission};
use corekv::proto::etcdserverpb as pb;

const fn code_only(args: &'static [&'static str]) -> Step {
    mode(args, Mode::CodeOnly)
}

const fn env_stdin(
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    stdin: &'static str,
) -> Step {
    Step {
        args,
        stdin: Some(stdin),
        env,
        mode: Mode::Run,
    }
}

/// Runs in order on a fresh server: set-up with auth off, then with it on, then off again.
const AUTH_STEPS: &[Step] = &[
    // ---- arguments etcdctl refuses before dialing ----
    run(&["user", "add"]),
    run(&["user", "add", "a", "b"]),
    run(&["user", "add", ":pw"]),
    run(&["user", "delete"]),
    run(&["user", "get"]),
    run(&["user", "get", "a", "b"]),
    run(&["user", "list", "x"]),
    run(&["user", "passwd"]),
    run(&["user", "grant-role", "a"]),
    run(&["user", "revoke-role", "a", "b", "c"]),
    run(&["role", "add"]),
    run(&["role", "delete", "a", "b"]),
    run(&["role", "get"]),
    run(&["role", "list", "x"]),
    run(&["role", "grant-permission", "r", "read"]),
    run(&["role", "grant-permission", "r", "bogus", "k"]),
    run(&[
        "role",
        "grant-permission",
        "r",
        "read",
        "k",
        "e",
        "--prefix",
    ]),
    run(&[
        "role",
        "grant-permission",
        "r",
        "read",
        "k",
        "e",
        "--from-key",
    ]),
    run(&[
        "role",
        "grant-permission",
        "r",
        "read",
        "k",
        "--prefix",
        "--from-key",
    ]),
    run(&[
        "role",
        "grant-permission",
        "r",
        "read",
        "",
        "--prefix",
        "--from-key",
    ]),
    run(&["role", "revoke-permission", "r"]),
    run(&[
        "role",
        "revoke-permission",
        "r",
        "k",
        "--prefix",
        "--from-key",
    ]),
    run(&["auth", "enable", "x"]),
    run(&["auth", "disable", "x"]),
    run(&["-w", "xml", "user", "list"]),
    code_only(&["user", "add", "x", "--interactive=maybe"]),
    code_only(&["user"]),
    // ---- users, with auth off ----
    run(&["auth", "enable"]),
    run(&["user", "add", "root:rootpw"]),
    run(&["user", "add", "root:again"]),
    run(&["user", "list"]),
    run(&["-w", "json", "user", "list"]),
    run(&["-w", "protobuf", "user", "list"]),
    run(&["-w", "fields", "user", "list"]),
    run(&["-w", "table", "user", "list"]),
    // root without the root role: `auth enable` adds the role and grants it first.
    run(&["auth", "enable"]),
    run(&["role", "list"]),
    run(&["--user=root:rootpw", "role", "list"]),
    run(&["--user=root:rootpw", "-w", "json", "auth", "disable"]),
    run(&["auth", "disable"]),
    // ---- roles and permissions ----
    run(&["role", "add", "r1"]),
    run(&["role", "add", "r1"]),
    run(&["-w", "json", "role", "add", "r2"]),
    run(&["-w", "fields", "role", "add", "r3"]),
    run(&["-w", "protobuf", "role", "add", "r4"]),
    run(&["-w", "table", "role", "add", "r5"]),
    run(&["role", "grant-permission", "r1", "readwrite", "foo"]),
    run(&["role", "grant-permission", "r1", "read", "--prefix", "pre/"]),
    run(&["role", "grant-permission", "r1", "write", "a", "m"]),
    run(&["role", "grant-permission", "r1", "READ", "--from-key", "y"]),
    run(&[
        "role",
        "grant-permission",
        "r1",
        "Write",
        "w1",
        "w3",
        "extra",
    ]),
    run(&["role", "grant-permission", "nope", "read", "k"]),
    run(&["-w", "json", "role", "grant-permission", "r2", "read", ""]),
    run(&[
        "-w",
        "fields",
        "role",
        "grant-permission",
        "r2",
        "write",
        "",
        "--prefix",
    ]),
    run(&[
        "role",
        "grant-permission",
        "r2",
        "readwrite",
        "",
        "--from-key",
    ]),
    run(&[
        "role",
        "grant-permission",
        "r2",
        "read",
        "\u{ff}",
        "--prefix",
    ]),
    run(&["role", "get", "r1"]),
    run(&["role", "get", "r2"]),
    run(&["role", "get", "nope"]),
    run(&["-w", "json", "role", "get", "r1"]),
    run(&["-w", "json", "role", "get", "r2"]),
    run(&["-w", "fields", "role", "get", "r1"]),
    run(&["-w", "fields", "role", "get", "r2"]),
    run(&["-w", "protobuf", "role", "get", "r1"]),
    run(&["-w", "table", "role", "get", "r1"]),
    run(&["role", "list"]),
    run(&["-w", "json", "role", "list"]),
    run(&["-w", "fields", "role", "list"]),
    run(&["-w", "protobuf", "role", "list"]),
    run(&["role", "revoke-permission", "r2", ""]),
    run(&["role", "revoke-permission", "r2", "", "--prefix"]),
    run(&[
        "-w",
        "json",
        "role",
        "revoke-permission",
        "r2",
        "",
        "--from-key",
    ]),
    run(&["role", "revoke-permission", "r2", "\u{ff}", "--prefix"]),
    run(&["role", "revoke-permission", "r1", "w1", "w3"]),
    run(&["role", "revoke-permission", "r1", "w1", "w3"]),
    run(&[
        "-w",
        "fields",
        "role",
        "revoke-permission",
        "r1",
        "y",
        "--from-key",
    ]),
    run(&["role", "grant-permission", "r1", "read", "--from-key", "y"]),
    run(&["role", "revoke-permission", "nope", "k"]),
    run(&["role", "get", "r2"]),
    run(&["role", "delete", "r3"]),
    run(&["role", "delete", "r3"]),
    run(&["-w", "json", "role", "delete", "r4"]),
    run(&["-w", "protobuf", "role", "delete", "r5"]),
    // ---- users: passwords from arguments, flags, stdin and prompts ----
    run(&["user", "add", "alice:apw"]),
    run(&["user", "add", "x:y:z"]),
    run(&["user", "get", "x"]),
    run(&["user", "add", "nopw", "--no-password"]),
    run(&["user", "add", "flag", "--new-user-password=p1"]),
    run(&["user", "add", "flag2:zz", "--new-user-password=p1"]),
    with_stdin(
        &["user", "add", "word", "--interactive=false"],
        "  wpw rest\n",
    ),
    with_stdin(&["user", "add", "blank", "--interactive=false"], "\nnext\n"),
    with_stdin(&["user", "add", "asked"], "pw\npw\n"),
    with_stdin(&["user", "add", "mismatch"], "pw\nother\n"),
    with_stdin(&["user", "add", "empty"], "\n"),
    with_stdin(&["user", "add", ""], "pw\npw\n"),
    run(&["user", "add", "noinput"]),
    run(&["-w", "json", "user", "add", "bob:bpw"]),
    run(&["-w", "fields", "user", "add", "carol:cpw"]),
    run(&["-w", "protobuf", "user", "add", "dave:dpw"]),
    run(&["-w", "table", "user", "add", "erin:epw"]),
    run(&["user", "list"]),
    // ---- roles of users ----
    run(&["user", "grant-role", "alice", "r1"]),
    run(&["user", "grant-role", "alice", "r2"]),
    run(&["user", "grant-role", "alice", "missing"]),
    run(&["user", "grant-role", "nobody", "r1"]),
    run(&["-w", "json", "user", "grant-role", "bob", "r2"]),
    run(&["-w", "fields", "user", "grant-role", "carol", "r2"]),
    run(&["user", "get", "alice"]),
    run(&["user", "get", "alice", "--detail"]),
    run(&["user", "get", "alice", "--detail=false"]),
    run(&["user", "get", "nobody"]),
    run(&["user", "get", "nobody", "--detail"]),
    run(&["user", "get", "nopw"]),
    run(&["-w", "json", "user", "get", "alice"]),
    run(&["-w", "json", "user", "get", "alice", "--detail"]),
    run(&["-w", "fields", "user", "get", "alice"]),
    run(&["-w", "fields", "user", "get", "alice", "--detail"]),
    run(&["-w", "protobuf", "user", "get", "alice"]),
    run(&["-w", "table", "user", "get", "alice", "--detail"]),
    run(&["user", "revoke-role", "bob", "r2"]),
    run(&["user", "revoke-role", "bob", "r2"]),
    run(&["-w", "json", "user", "revoke-role", "carol", "r2"]),
    with_stdin(&["user", "passwd", "bob", "--interactive=false"], "bpw2\n"),
    with_stdin(&["user", "passwd", "bob"], "bpw3\nbpw3\n"),
    with_stdin(&["user", "passwd", "bob"], "x\ny\n"),
    with_stdin(&["user", "passwd", "nobody", "--interactive=false"], "x\n"),
    with_stdin(
        &[
            "-w",
            "json",
            "user",
            "passwd",
            "carol",
            "--interactive=false",
        ],
        "c2\n",
    ),
    run(&["user", "delete", "dave"]),
    run(&["user", "delete", "dave"]),
    run(&["-w", "fields", "user", "delete", "erin"]),
    // ---- auth on ----
    run(&["user", "grant-role", "root", "root"]),
    run(&["auth", "enable"]),
    run(&["auth", "enable"]),
    run(&["--user=root:rootpw", "auth", "enable"]),
    run(&["get", "foo"]),
    run(&["--user=root:rootpw", "put", "foo", "bar"]),
    run(&["--user=alice:apw", "get", "foo"]),
    run(&["--user=alice:wrong", "get", "foo"]),
    run(&["--user=nobody:x", "get", "foo"]),
    run(&["--user=alice:", "get", "foo"]),
    run(&["--user", "alice", "--password", "apw", "get", "foo"]),
    run(&["--user", "alice:apw", "--password", "apw", "get", "foo"]),
    run(&["--password", "apw", "get", "foo"]),
    with_stdin(&["--user", "alice", "get", "foo"], "apw\n"),
    with_stdin(&["--user", "alice", "get", "foo"], ""),
    with_stdin(&["--user", "alice", "-w", "xml", "get", "foo"], "apw\n"),
    with_env(&["get", "foo"], &[("ETCDCTL_USER", "alice:apw")]),
    with_env(
        &["get", "foo"],
        &[("ETCDCTL_USER", "alice"), ("ETCDCTL_PASSWORD", "apw")],
    ),
    env_stdin(&["get", "foo"], &[("ETCDCTL_USER", "alice")], "apw\n"),
    with_env(
        &["--user=alice:apw", "get", "foo"],
        &[("ETCDCTL_USER", "alice:apw")],
    ),
    // What a user may and may not do, over unary calls and streams.
    run(&["--user=alice:apw", "put", "foo", "baz"]),
    run(&["--user=alice:apw", "put", "b", "1"]),
    run(&["--user=alice:apw", "get", "b"]),
    run(&["--user=alice:apw", "put", "zz", "1"]),
    run(&["--user=alice:apw", "get", "", "--prefix"]),
    run(&["--user=bob:bpw3", "get", "foo"]),
    with_stdin(
        &["--user=alice:apw", "txn"],
        "value(\"foo\") = \"baz\"\n\nput b 2\nget foo\n\nget zz\n\n",
    ),
    mode(
        &["--user=alice:apw", "watch", "foo", "--rev", "1"],
        Mode::Stream(6),
    ),
    run(&["--user=bob:bpw3", "watch", "foo"]),
    run(&["--user=alice:apw", "user", "list"]),
    run(&["--user=alice:apw", "user", "get", "alice"]),
    run(&["--user=alice:apw", "user", "get", "alice", "--detail"]),
    run(&["--user=alice:apw", "role", "get", "r1"]),
    run(&["--user=alice:apw", "role", "get", "root"]),
    run(&["--user=alice:apw", "role", "add", "r9"]),
    run(&["--user=alice:apw", "auth", "disable"]),
    run(&["--user=root:rootpw", "user", "list"]),
    run(&["--user=root:rootpw", "user", "get", "root", "--detail"]),
    run(&["--user=root:rootpw", "user", "delete", "root"]),
    run(&["--user=root:rootpw", "role", "delete", "root"]),
    // A password change drops the user's tokens; the new password works at once.
    with_stdin(
        &[
            "--user=root:rootpw",
            "user",
            "passwd",
            "alice",
            "--interactive=false",
        ],
        "apw2\n",
    ),
    run(&["--user=alice:apw", "get", "foo"]),
    run(&["--user=alice:apw2", "get", "foo"]),
    // A permission taken away holds at once.
    run(&[
        "--user=root:rootpw",
        "role",
        "revoke-permission",
        "r1",
        "foo",
    ]),
    run(&["--user=alice:apw2", "get", "foo"]),
    // ---- auth off again ----
    run(&["--user=root:rootpw", "auth", "disable"]),
    run(&["auth", "disable"]),
    run(&["get", "foo"]),
    run(&["--user=alice:apw2", "get", "foo"]),
    run(&["--user=alice:wrong", "get", "foo"]),
];

/// Runs `AUTH_STEPS` with etcdctl and with corekvctl, each on a fresh server of `kind` (two
/// servers advertising one peer URL have the same IDs).
fn corekvctl_answers_like_etcdctl(kind: Kind) {
    let peer = format!("http://127.0.0.1:{}", common::free_port());
    let sa = Server::start_advertising(kind, &peer);
    let sb = Server::start_advertising(kind, &peer);
    assert_eq!(ids(&sa), ids(&sb), "twin servers with different IDs");
    let mut a = Side::new(Tool::Etcdctl, &sa);
    let mut b = Side::new(Tool::Corekvctl, &sb);
    let bad = diff(&mut a, &mut b, AUTH_STEPS);
    assert!(
        bad.is_empty(),
        "{} of {} steps differ:{}",
        bad.len(),
        AUTH_STEPS.len(),
        report(&a, &b, &bad)
    );
}

#[test]
fn corekvctl_auth_commands_print_what_etcdctl_prints_on_corekv() {
    corekvctl_answers_like_etcdctl(Kind::Corekv);
}

#[test]
fn corekvctl_auth_commands_print_what_etcdctl_prints_on_etcd() {
    corekvctl_answers_like_etcdctl(Kind::Etcd);
}

fn options(server: &Server, creds: Option<Credentials>) -> ClientOptions {
    let mut o = ClientOptions::new(vec![server.endpoint()]);
    o.credentials = creds;
    o
}

fn status_text(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// The first response of a new watch on `[key, end)`.
async fn watch_created(c: &Client, key: &str, end: &str) -> pb::WatchResponse {
    use pb::watch_request::RequestUnion;
    let (mut tx, mut rx) = c.watch().await.expect("open a watch stream");
    let create = pb::WatchCreateRequest {
        key: key.as_bytes().to_vec().into(),
        range_end: end.as_bytes().to_vec().into(),
        ..Default::default()
    };
    tx.send(&pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    })
    .await
    .expect("send the create request");
    let resp = rx
        .message()
        .await
        .expect("a watch response")
        .expect("the stream is open");
    tx.cancel();
    resp
}

/// The client library's token handling against a server of `kind`.
fn client_authenticates_and_renews_its_token(kind: Kind) {
    let server = Server::start(kind);
    let plain = options(&server, None);
    let alice = options(&server, Some(Credentials::new("alice", "apw")));
    let root = options(&server, Some(Credentials::new("root", "rootpw")));
    let alice_new = options(&server, Some(Credentials::new("alice", "apw2")));
    run_local(move || async move {
        let admin = Client::connect(plain).await.expect("connect");
        admin
            .user_add(pb::AuthUserAddRequest {
                name: "root".into(),
                password: "rootpw".into(),
                options: None,
            })
            .await
            .unwrap();
        admin.user_grant_role("root", "root").await.unwrap();
        admin.role_add("r1").await.unwrap();
        let perm = Permission {
            perm_type: permission::Type::Readwrite as i32,
            key: "a/".into(),
            range_end: "a0".into(),
        };
        admin.role_grant_permission("r1", perm).await.unwrap();
        admin
            .user_add(pb::AuthUserAddRequest {
                name: "alice".into(),
                password: "apw".into(),
                options: None,
            })
            .await
            .unwrap();
        admin.user_grant_role("alice", "r1").await.unwrap();
        let put = |k: &str| pb::PutRequest {
            key: k.as_bytes().to_vec().into(),
            value: "v".into(),
            ..Default::default()
        };

        // Auth is off: credentials are no reason not to connect, and no token is sent.
        let a = Client::connect(alice.clone())
            .await
            .expect("connect with auth off");
        assert_eq!(a.token(), None);
        a.put(put("a/1")).await.unwrap();

        // Auth turned on: the call without a token is refused ("user name is empty"), the
        // client authenticates and the call goes through.
        admin.auth_enable().await.unwrap();
        a.put(put("a/2")).await.expect("put after auth was enabled");
        let first = a.token().expect("a token once auth is on");
        // The token is alice's: her permissions apply.
        assert_eq!(
            status_text(a.put(put("b")).await),
            "etcdserver: permission denied"
        );
        // ... on streams too.
        let w = watch_created(&a, "a/", "a0").await;
        assert!(w.created && !w.canceled, "{w:?}");
        let w = watch_created(&a, "b", "").await;
        assert!(w.canceled, "{w:?}");

        // Tokens dropped (auth disabled and enabled again): calls, several at once, renew it.
        let r = Client::connect(root.clone()).await.expect("root connects");
        r.auth_disable().await.unwrap();
        r.auth_enable()
            .await
            .expect("root's token is gone, renewed");
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let a = a.clone();
                let req = put(&format!("a/c{i}"));
                glommio::spawn_local(async move { a.put(req).await })
            })
            .collect();
        for c in calls {
            c.await.expect("a put with a renewed token");
        }
        let second = a.token().expect("a token");
        assert_ne!(first, second);

        // A token given to the client is used until refused.
        let mut given = alice.clone();
        if let Some(c) = given.credentials.as_mut() {
            c.token = Some(second.clone());
        }
        let g = Client::connect(given).await.expect("connect with a token");
        assert_eq!(g.token().as_deref(), Some(second.as_str()));
        g.put(put("a/g")).await.unwrap();

        // A changed password drops alice's tokens, and hers no longer authenticates.
        r.user_change_password("alice", "apw2").await.unwrap();
        assert_eq!(
            status_text(a.put(put("a/3")).await),
            "etcdserver: authentication failed, invalid user ID or password"
        );
        assert_eq!(
            status_text(Client::connect(alice).await.map(|_| ())),
            "etcdserver: authentication failed, invalid user ID or password"
        );
        let n = Client::connect(alice_new).await.expect("the new password");
        n.put(put("a/4")).await.unwrap();
        let got = n
            .range(pb::RangeRequest {
                key: "a/".into(),
                range_end: "a0".into(),
                count_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(got.count, 24);

        // Without credentials nothing is retried.
        assert_eq!(
            status_text(admin.put(put("a/5")).await),
            "etcdserver: user name is empty"
        );
        r.auth_disable().await.unwrap();
    });
}

#[test]
fn client_authenticates_and_renews_its_token_on_corekv() {
    client_authenticates_and_renews_its_token(Kind::Corekv);
}

#[test]
fn client_authenticates_and_renews_its_token_on_etcd() {
    client_authenticates_and_renews_its_token(Kind::Etcd);
}
