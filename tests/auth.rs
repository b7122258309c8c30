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
