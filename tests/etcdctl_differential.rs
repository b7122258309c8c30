//! The same stock etcdctl commands against real etcd and against corekv: the answers must
//! match, apart from the IDs and raft terms that differ between any two clusters.

mod common;

use common::differential::Pair;

#[test]
fn kv_commands_answer_like_etcd() {
    let p = Pair::start();
    let j = ["-w", "json"];
    let with =
        |a: &[&'static str]| -> Vec<&'static str> { a.iter().chain(j.iter()).copied().collect() };
    for cmd in [
        &["put", "a", "1"][..],
        &["put", "a", "2", "--prev-kv"],
        &["put", "b", "x"],
        &["put", "c", "y"],
        &["put", "d", "z"],
        &["get", "a"],
        &["get", "a", "--rev", "2"],
        &["get", "a", "c"],
        &["get", "", "--prefix", "--limit", "2"],
        &["get", "b", "--from-key"],
        &[
            "get",
            "",
            "--prefix",
            "--sort-by",
            "MODIFY",
            "--order",
            "DESCEND",
        ],
        &[
            "get",
            "",
            "--prefix",
            "--sort-by",
            "VALUE",
            "--order",
            "ASCEND",
        ],
        &["get", "", "--prefix", "--sort-by", "VERSION"],
        &["get", "", "--prefix", "--keys-only"],
        &["get", "", "--prefix", "--count-only"],
        &["get", "missing"],
        &["del", "b", "--prev-kv"],
        &["del", "nothing"],
        &["del", "c", "--from-key"],
        &["put", "x", "1"],
        &["put", "y", "2"],
        &["get", "", "--from-key"],
    ] {
        p.same(&with(cmd));
    }
    p.same(&["put", "--ignore-value", "nokey"]);
    p.same(&["put", "--ignore-lease", "nokey", "v"]);
    p.same(&["put", "--lease", "1234", "k", "v"]);
    p.same(&["get", "a", "--rev", "1000"]);
    p.same(&["compaction", "5"]);
    p.same(&["get", "a", "--rev", "3"]);
    p.same(&["compaction", "4"]);
    p.same(&with(&["get", "a", "--rev", "5"]));
    p.same(&["get", "", "--prefix"]);
    p.same(&["get", "", "--prefix", "--print-value-only"]);
    p.same(&["get", "x", "-w", "fields"]);
}

#[test]
fn txn_answers_like_etcd() {
    let p = Pair::start();
    p.same(&["put", "k", "v1"]);
    p.same_stdin(
        &["txn", "-w", "json"],
        "value(\"k\") = \"v1\"\n\nput k v2\nget k\n\nput k nope\n\n",
    );
    p.same_stdin(
        &["txn", "-w", "json"],
        "value(\"k\") = \"v1\"\n\nput k v3\n\nget k\ndel k\n\n",
    );
    p.same_stdin(
        &["txn", "-w", "json"],
        "mod(\"k\") > \"0\"\nversion(\"missing\") = \"0\"\ncreate(\"k\") < \"100\"\n\nput k v4\nput j w\n\n\n",
    );
    p.same_stdin(&["txn"], "version(\"k\") = \"2\"\n\nput a 1\n\nput b 2\n\n");
    // A key twice in one branch is refused before raft.
    p.same_stdin(&["txn"], "\nput k 1\nput k 2\n\n\n");
    p.same(&["get", "", "--prefix", "-w", "json"]);
}

#[test]
fn lease_commands_answer_like_etcd() {
    let p = Pair::start();
    p.same(&["lease", "revoke", "1234"]);
    p.same(&["lease", "timetolive", "1234"]);
    p.same(&["lease", "keep-alive", "--once", "1234"]);
    p.same(&["lease", "list"]);
}
