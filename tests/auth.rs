//! Auth (issue #16) through stock etcdctl, against etcd 3.4 and corekv side by side: users,
//! roles, permissions over keys, ranges and prefixes, what a user may and may not do with
//! them (ranges, puts, txns, watches, lease revokes, admin calls), and the errors of each;
//! then that users, roles and permissions survive a restart.

mod common;

use common::differential::Pair;
use common::{stderr, stdout};

const ROOT: &str = "--user=root:rootpw";
const ALICE: &str = "--user=alice:apw";

/// Users and roles as the sequence below sets them up, before auth is enabled.
fn set_up_users(p: &Pair) {
    for cmd in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "root:again"],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "r1"],
        &["role", "add", "r1"],
        &["role", "grant-permission", "r1", "readwrite", "foo"],
        &["role", "grant-permission", "r1", "read", "--prefix", "pre/"],
        &["role", "grant-permission", "r1", "write", "a", "m"],
        &["role", "grant-permission", "r1", "read", "--from-key", "y"],
        &["role", "grant-permission", "nope", "read", "k"],
        &["user", "add", "alice:apw"],
        &["user", "grant-role", "alice", "r1"],
        &["user", "grant-role", "alice", "missing"],
        &["user", "grant-role", "nobody", "r1"],
        &["role", "add", "spare"],
        &["role", "grant-permission", "spare", "read", "s1"],
        &["role", "revoke-permission", "spare", "s1"],
        &["role", "revoke-permission", "spare", "s1"],
        &["user", "add", "bob:bpw"],
        &["user", "grant-role", "bob", "spare"],
        &["user", "revoke-role", "bob", "spare"],
        &["user", "revoke-role", "bob", "spare"],
        &["user", "passwd", "bob", "--interactive=false"],
        &["user", "get", "alice"],
        &["user", "get", "alice", "--detail"],
        &["user", "get", "nobody"],
        &["role", "get", "r1"],
        &["role", "get", "nope"],
        &["role", "list"],
        &["user", "list"],
        &["role", "delete", "spare"],
        &["user", "delete", "bob"],
        &["user", "delete", "bob"],
    ] {
        // `user passwd` reads the new password from stdin.
        p.same_stdin(cmd, "bpw2\n");
    }
}

#[test]
fn auth_sequence_answers_like_etcd() {
    let p = Pair::start();
    // Enabling needs the root user with the root role.
    p.same(&["auth", "enable"]);
    set_up_users(&p);
    p.same(&["auth", "enable"]);
    p.same(&["auth", "enable", ROOT]);

    // No credentials, wrong ones, and a user that is not there.
    p.same(&["put", "foo", "bar"]);
    p.same(&["get", "foo"]);
    p.same(&["--user=alice:wrong", "get", "foo"]);
    p.same(&["--user=nobody:x", "get", "foo"]);

    // A single key, a range [a, m), a prefix, and everything from y on.
    for cmd in [
        &[ALICE, "put", "foo", "bar"][..],
        &[ALICE, "get", "foo"],
        &[ALICE, "get", "foo", "--prev-kv"],
        &[ALICE, "put", "foo", "baz", "--prev-kv"],
        &[ALICE, "put", "b", "1"],
        &[ALICE, "get", "b"],
        &[ALICE, "get", "a", "m"],
        &[ALICE, "del", "b"],
        &[ALICE, "del", "b", "--prev-kv"],
        &[ALICE, "put", "pre/x", "1"],
        &[ROOT, "put", "pre/x", "1"],
        &[ALICE, "get", "pre/x"],
        &[ALICE, "get", "pre/", "--prefix"],
        &[ALICE, "get", "pre", "--prefix"],
        &[ROOT, "put", "yz", "2"],
        &[ALICE, "get", "y", "--from-key"],
        &[ALICE, "get", "x", "--from-key"],
        &[ALICE, "get", "", "--prefix"],
        &[ROOT, "get", "", "--prefix"],
        &[ROOT, "put", "zz", "secret"],
        &[ALICE, "put", "zz", "mine"],
    ] {
        p.same(cmd);
    }

    // A txn is checked compare by compare and op by op, both branches.
    p.same_stdin(
        &[ALICE, "txn"],
        "value(\"foo\") = \"baz\"\n\nput b 2\nget foo\n\nget pre/x\n\n",
    );
    p.same_stdin(
        &[ALICE, "txn"],
        "value(\"foo\") = \"baz\"\n\nput b 3\n\nput zz 1\n\n",
    );
    p.same_stdin(&[ALICE, "txn"], "value(\"zz\") = \"x\"\n\nput b 4\n\n\n");
    p.same_stdin(&[ALICE, "txn"], "\n\nget zz\n\n\n");

    // A watch on a range the user may not read is canceled at creation.
    p.same(&[ALICE, "watch", "b"]);
    p.same(&[ALICE, "watch", "a", "z"]);
    p.same(&["watch", "foo"]);

    // Revoking a lease deletes its keys: it needs write permission on every one.
    lease_revoke(&p);

    // Root's power cannot be taken while auth is on; admin calls need root.
    for cmd in [
        &[ROOT, "user", "delete", "root"][..],
        &[ROOT, "role", "delete", "root"],
        &[ROOT, "user", "revoke-role", "root", "root"],
        &[ALICE, "user", "list"],
        &[ALICE, "role", "list"],
        &[ALICE, "user", "get", "alice"],
        &[ALICE, "user", "get", "root"],
        &[ALICE, "role", "get", "r1"],
        &[ALICE, "role", "get", "root"],
        &[ALICE, "role", "add", "r2"],
        &[ALICE, "user", "add", "carol:c"],
        &[ALICE, "auth", "disable"],
        &[ALICE, "defrag"],
        &[ALICE, "endpoint", "hashkv"],
        &[ALICE, "compaction", "1"],
        &[ROOT, "user", "list"],
        // A permission taken away holds at once, without a new token.
        &[ROOT, "role", "revoke-permission", "r1", "foo"],
        &[ALICE, "get", "foo"],
        &[ROOT, "auth", "disable"],
        &["get", "foo"],
        &["--user=alice:apw", "get", "foo"],
        &["auth", "disable"],
    ] {
        p.same(cmd);
    }
}

/// A lease holding a key alice may write, then also one she may not.
fn lease_revoke(p: &Pair) {
    let grant = |s: &common::Server| {
        let out = s.etcdctl(&[ROOT, "lease", "grant", "600"]);
        let text = stdout(&out);
        let id = text
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no lease ID in {text:?} ({})", stderr(&out)))
            .to_owned();
        id
    };
    let (le, lc) = (grant(&p.etcd), grant(&p.corekv));
    let both = |args: &dyn Fn(&str) -> Vec<String>| {
        let (e, c) = (args(&le), args(&lc));
        let e: Vec<&str> = e.iter().map(String::as_str).collect();
        let c: Vec<&str> = c.iter().map(String::as_str).collect();
        let (oe, oc) = (p.etcd.etcdctl(&e), p.corekv.etcdctl(&c));
        assert_eq!(oe.status.success(), oc.status.success(), "{c:?}");
        let strip = |s: String, id: &str| s.replace(id, "<lease>");
        assert_eq!(
            strip(stdout(&oc), &lc),
            strip(stdout(&oe), &le),
            "stdout of {c:?}"
        );
        assert_eq!(
            common::differential::normalize(&stderr(&oc)),
            common::differential::normalize(&stderr(&oe)),
            "stderr of {c:?}"
        );
    };
    let args = |a: &[&str]| {
        let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        move |id: &str| {
            a.iter()
                .map(|s| s.replace("<lease>", id))
                .collect::<Vec<_>>()
        }
    };
    both(&args(&[ROOT, "put", "b", "leased", "--lease=<lease>"]));
    both(&args(&[ROOT, "put", "zz", "leased", "--lease=<lease>"]));
    both(&args(&[ALICE, "lease", "revoke", "<lease>"]));
    both(&args(&[ALICE, "get", "b"]));
    both(&args(&[ROOT, "put", "zz", "unleased"]));
    both(&args(&[ALICE, "lease", "revoke", "<lease>"]));
    both(&args(&[ROOT, "get", "b"]));
}

#[test]
fn users_roles_and_permissions_survive_a_restart() {
    let mut p = Pair::start();
    set_up_users(&p);
    p.same(&["auth", "enable"]);
    p.etcd.restart();
    p.corekv.restart();
    for cmd in [
        &["get", "foo"][..],
        &[ALICE, "put", "foo", "1"],
        &[ALICE, "get", "zz"],
        &["--user=alice:wrong", "get", "foo"],
        &[ROOT, "user", "list"],
        &[ROOT, "role", "get", "r1"],
        &[ROOT, "user", "get", "alice"],
        &[ROOT, "auth", "disable"],
    ] {
        p.same(cmd);
    }
    p.etcd.restart();
    p.corekv.restart();
    p.same(&["get", "foo"]);
}

/// One raw Range: what it shows, its metadata, its key.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [u8]);

/// etcd 3.4 reads a gRPC call's token from its `token` metadata or, without one, from its
/// `authorization` metadata (as sent: no scheme); corekv does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_takes_the_token_from_authorization_metadata_too() {
    let p = Pair::start();
    set_up_users(&p);
    p.same(&["auth", "enable"]);
    let mut seen = Vec::new();
    for s in [&p.etcd, &p.corekv] {
        let alice = common::gateway::connect(s.client_port)
            .post_with(
                "/v3/auth/authenticate",
                &[],
                r#"{"name":"alice","password":"apw"}"#,
            )
            .json()["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{} gave alice no token", s.kind.name()))
            .to_owned();
        let bearer = format!("Bearer {alice}");
        let cases: [Case; 8] = [
            ("authorization", &[("authorization", &alice)], b"foo"),
            ("token", &[("token", &alice)], b"foo"),
            ("no metadata", &[], b"foo"),
            (
                "authorization, a key not hers",
                &[("authorization", &alice)],
                b"other",
            ),
            ("a bad authorization", &[("authorization", "bogus")], b"foo"),
            (
                "a bad token, a good authorization",
                &[("token", "bogus"), ("authorization", &alice)],
                b"foo",
            ),
            (
                "a good token, a bad authorization",
                &[("token", &alice), ("authorization", "bogus")],
                b"foo",
            ),
            ("a scheme", &[("authorization", &bearer)], b"foo"),
        ];
        let mut answers = Vec::new();
        for (what, metadata, key) in cases {
            // A RangeRequest of one key (field 1).
            let mut range = vec![0x0a, key.len() as u8];
            range.extend_from_slice(key);
            let body = common::grpc::frame(&range);
            let (status, message) = common::grpc::raw_call_with(
                s.client_port,
                "/etcdserverpb.KV/Range",
                metadata,
                body,
            )
            .await;
            answers.push(format!("{what}: {status} {message}"));
        }
        seen.push(answers);
    }
    assert_eq!(
        seen[1], seen[0],
        "corekv (left) and etcd 3.4 (right) differ"
    );
    assert_eq!(seen[0][0], "authorization: 0 ", "{:#?}", seen[0]);
    assert!(
        seen[0][3].ends_with(": 7 etcdserver: permission denied"),
        "{:#?}",
        seen[0]
    );
}

/// etcdctl's `lock` and `elect` are client-side recipes (KV, Lease, Watch) in etcdctl 3.4:
/// a user may lock where she may read and write, and nobody else may.
#[test]
fn etcdctl_lock_and_elect_need_permission() {
    let p = Pair::start();
    for cmd in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "locker"],
        &[
            "role",
            "grant-permission",
            "locker",
            "readwrite",
            "--prefix",
            "lk/",
        ],
        &["user", "add", "alice:apw"],
        &["user", "grant-role", "alice", "locker"],
        &["user", "add", "bob:bpw"],
        &["auth", "enable"],
        &[ALICE, "lock", "lk", "echo", "held"],
        &["--user=bob:bpw", "lock", "lk", "echo", "held"],
        &["lock", "lk", "echo", "held"],
        &["--user=bob:bpw", "elect", "lk", "v"],
        &["--user=bob:bpw", "elect", "--listen", "lk"],
        &[ROOT, "get", "lk/", "--prefix"],
    ] {
        p.same(cmd);
    }
    // What both said: alice held the lock, bob was refused.
    let alice = p.corekv.etcdctl(&[ALICE, "lock", "lk", "echo", "held"]);
    assert_eq!(stdout(&alice), "held\n", "{}", stderr(&alice));
    let bob = p
        .corekv
        .etcdctl(&["--user=bob:bpw", "lock", "lk", "echo", "held"]);
    assert!(
        stderr(&bob).contains("Error: etcdserver: permission denied"),
        "{}",
        stderr(&bob)
    );
}
