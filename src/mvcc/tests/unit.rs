//! Unit tests of each rule, on the in-memory backend.

use std::collections::HashSet;

use bytes::Bytes;

use super::*;
use crate::mvcc::{
    decode_rev, validate_delete_range, validate_put, validate_range, validate_txn, Bucket,
    KvBackend, Revision, FINISHED_COMPACT_KEY, SCHEDULED_COMPACT_KEY,
};
use crate::proto::etcdserverpb::compare::{
    CompareResult as R, CompareTarget as T, TargetUnion as U,
};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{response_op, ResponseOp, TxnResponse};
use crate::proto::mvccpb::event::EventType;

fn no_leases() -> Leases {
    Leases::default()
}

fn names(v: &[Row]) -> Vec<&str> {
    v.iter().map(|x| x.0.as_str()).collect()
}

fn txn(
    s: &mut KvStore<MemBackend>,
    t: TxnRequest,
) -> Result<(TxnResponse, crate::mvcc::WriteEffects), KvError> {
    s.txn(&t, &no_leases())
}

fn resp_rev(r: &ResponseOp) -> i64 {
    match r.response.as_ref().unwrap() {
        response_op::Response::ResponseRange(x) => x.header.as_ref().unwrap().revision,
        response_op::Response::ResponsePut(x) => x.header.as_ref().unwrap().revision,
        response_op::Response::ResponseDeleteRange(x) => x.header.as_ref().unwrap().revision,
        response_op::Response::ResponseTxn(x) => x.header.as_ref().unwrap().revision,
    }
}

// ----- revisions and put -----

#[test]
fn mvcc_empty_store_is_at_revision_one() {
    let s = new_store();
    assert_eq!(s.current_revision(), 1);
    assert_eq!(s.compact_revision(), -1);
    let r = s.range(&range_req("a", "")).unwrap();
    assert_eq!(r.header.unwrap().revision, 1);
    assert_eq!(r.count, 0);
    assert!(r.kvs.is_empty());
}

#[test]
fn mvcc_put_creates_then_updates_and_same_value_still_bumps() {
    let mut s = new_store();
    assert_eq!(put(&mut s, "foo", "bar"), 2);
    assert_eq!(put(&mut s, "foo", "bar"), 3);
    assert_eq!(put(&mut s, "foo", "baz"), 4);
    assert_eq!(
        kvs(&s, &range_req("foo", "")).unwrap(),
        vec![("foo".into(), "baz".into(), 2, 4, 3)]
    );
    assert_eq!(s.current_revision(), 4);
}

#[test]
fn mvcc_put_prev_kv() {
    let mut s = new_store();
    let mut req = put_req("k", "v1");
    req.prev_kv = true;
    let (r, _) = s.put(&req, &no_leases()).unwrap();
    assert_eq!(r.prev_kv, None);
    req.value = b("v2");
    let (r, _) = s.put(&req, &no_leases()).unwrap();
    let p = r.prev_kv.unwrap();
    assert_eq!((p.value, p.mod_revision, p.version), (b("v1"), 2, 1));
}

#[test]
fn mvcc_put_ignore_value_and_ignore_lease() {
    let mut s = new_store();
    let leases = Leases(HashSet::from([7]));
    let mut req = put_req("k", "");
    req.ignore_value = true;
    assert_eq!(s.put(&req, &leases).unwrap_err(), KvError::KeyNotFound);
    let mut lreq = put_req("k", "v");
    lreq.lease = 7;
    s.put(&lreq, &leases).unwrap();
    // ignore_value keeps the value, takes the new (absent) lease.
    let (_, fx) = s.put(&req, &leases).unwrap();
    let kv = s.range(&range_req("k", "")).unwrap().kvs.remove(0);
    assert_eq!((kv.value, kv.lease, kv.version), (b("v"), 0, 2));
    assert_eq!(fx.lease_changes.len(), 1);
    assert_eq!(
        (fx.lease_changes[0].old_lease, fx.lease_changes[0].new_lease),
        (7, 0)
    );
    // ignore_lease keeps the lease.
    s.put(&lreq, &leases).unwrap();
    let mut req = put_req("k", "new");
    req.ignore_lease = true;
    let (_, fx) = s.put(&req, &leases).unwrap();
    assert!(fx.lease_changes.is_empty());
    let kv = s.range(&range_req("k", "")).unwrap().kvs.remove(0);
    assert_eq!((kv.value, kv.lease), (b("new"), 7));
    let mut req = put_req("missing", "x");
    req.ignore_lease = true;
    assert_eq!(s.put(&req, &leases).unwrap_err(), KvError::KeyNotFound);
}

#[test]
fn mvcc_put_lease_must_exist_and_is_checked_first() {
    let mut s = new_store();
    let mut req = put_req("k", "");
    req.lease = 5;
    req.ignore_value = true;
    assert_eq!(
        s.put(&req, &no_leases()).unwrap_err(),
        KvError::LeaseNotFound
    );
    assert_eq!(s.current_revision(), 1);
    let leases = Leases(HashSet::from([5, 6]));
    req.ignore_value = false;
    let (_, fx) = s.put(&req, &leases).unwrap();
    assert_eq!(fx.lease_changes[0].new_lease, 5);
    req.lease = 6;
    let (_, fx) = s.put(&req, &leases).unwrap();
    assert_eq!(
        (fx.lease_changes[0].old_lease, fx.lease_changes[0].new_lease),
        (5, 6)
    );
    let leased: Vec<_> = s.leased_keys().map(|(k, l)| (k.clone(), l)).collect();
    assert_eq!(leased, vec![(b("k"), 6)]);
}

// ----- range -----

fn abc_store() -> KvStore<MemBackend> {
    let mut s = new_store();
    for k in ["a", "ab", "abc", "b", "c"] {
        put(&mut s, k, &format!("v-{k}"));
    }
    s
}

#[test]
fn mvcc_range_single_prefix_from_key_and_all() {
    let s = abc_store();
    assert_eq!(names(&kvs(&s, &range_req("ab", "")).unwrap()), vec!["ab"]);
    assert_eq!(
        names(&kvs(&s, &range_req("a", "b")).unwrap()),
        vec!["a", "ab", "abc"]
    );
    assert_eq!(
        names(&kvs(&s, &range_req("ab", "\0")).unwrap()),
        vec!["ab", "abc", "b", "c"]
    );
    assert_eq!(names(&kvs(&s, &range_req("\0", "\0")).unwrap()).len(), 5);
    assert!(kvs(&s, &range_req("zz", "")).unwrap().is_empty());
    assert!(kvs(&s, &range_req("c", "a")).unwrap().is_empty());
}

#[test]
fn mvcc_range_limit_more_and_count() {
    let s = abc_store();
    let mut req = range_req("a", "\0");
    req.limit = 2;
    let r = s.range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (2, true, 5));
    req.limit = 5;
    let r = s.range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (5, false, 5));
    req.limit = -3;
    let r = s.range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.more), (5, false));
    req.limit = i64::MAX;
    let r = s.range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.more), (5, false));
}

#[test]
fn mvcc_range_count_only_and_keys_only() {
    let s = abc_store();
    let mut req = range_req("a", "\0");
    req.count_only = true;
    req.limit = 1;
    let r = s.range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (0, false, 5));
    let mut req = range_req("a", "b");
    req.keys_only = true;
    let r = s.range(&req).unwrap();
    assert!(r
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
    assert_eq!(r.kvs.len(), 3);
}

#[test]
fn mvcc_range_historical_compacted_and_future() {
    let mut s = new_store();
    put(&mut s, "k", "1"); // 2
    put(&mut s, "k", "2"); // 3
    s.delete_range(&del_req("k", "")).unwrap(); // 4
    put(&mut s, "k", "3"); // 5
    let at = |s: &KvStore<MemBackend>, rev| {
        let mut r = range_req("k", "");
        r.revision = rev;
        kvs(s, &r)
    };
    assert_eq!(at(&s, 1).unwrap(), vec![]);
    assert_eq!(at(&s, 2).unwrap(), vec![("k".into(), "1".into(), 2, 2, 1)]);
    assert_eq!(at(&s, 3).unwrap(), vec![("k".into(), "2".into(), 2, 3, 2)]);
    assert_eq!(at(&s, 4).unwrap(), vec![]);
    assert_eq!(at(&s, 5).unwrap(), vec![("k".into(), "3".into(), 5, 5, 1)]);
    assert_eq!(at(&s, 0).unwrap(), at(&s, 5).unwrap());
    assert_eq!(at(&s, -7).unwrap(), at(&s, 5).unwrap());
    assert_eq!(at(&s, 6).unwrap_err(), KvError::FutureRev);
    // The header revision is the current one, also for a historical read.
    let mut r = range_req("k", "");
    r.revision = 2;
    assert_eq!(s.range(&r).unwrap().header.unwrap().revision, 5);
    s.compact(&compact_req(3)).unwrap();
    assert_eq!(at(&s, 2).unwrap_err(), KvError::Compacted);
    assert_eq!(at(&s, 3).unwrap(), vec![("k".into(), "2".into(), 2, 3, 2)]);
    assert_eq!(at(&s, 6).unwrap_err(), KvError::FutureRev);
}

/// Keys with versions: a=3, b=1, c=2 (created in order a, b, c).
fn versioned_store() -> KvStore<MemBackend> {
    let mut s = new_store();
    put(&mut s, "a", "z"); // 2
    put(&mut s, "b", "y"); // 3
    put(&mut s, "c", "x"); // 4
    put(&mut s, "a", "z"); // 5
    put(&mut s, "c", "x"); // 6
    put(&mut s, "a", "z"); // 7
    s
}

fn sorted(
    s: &KvStore<MemBackend>,
    order: SortOrder,
    target: SortTarget,
    limit: i64,
) -> Vec<String> {
    let mut r = range_req("a", "\0");
    r.sort_order = order as i32;
    r.sort_target = target as i32;
    r.limit = limit;
    names(&kvs(s, &r).unwrap())
        .into_iter()
        .map(String::from)
        .collect()
}

#[test]
fn mvcc_range_sort_orders_and_targets() {
    let s = versioned_store();
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(&s, None, Key, 0), ["a", "b", "c"]);
    assert_eq!(sorted(&s, Descend, Key, 0), ["c", "b", "a"]);
    assert_eq!(sorted(&s, Ascend, Version, 0), ["b", "c", "a"]);
    assert_eq!(sorted(&s, Descend, Version, 0), ["a", "c", "b"]);
    assert_eq!(sorted(&s, Ascend, Create, 0), ["a", "b", "c"]);
    assert_eq!(sorted(&s, Descend, Create, 0), ["c", "b", "a"]);
    assert_eq!(sorted(&s, Ascend, Mod, 0), ["b", "c", "a"]);
    assert_eq!(sorted(&s, Descend, Mod, 0), ["a", "c", "b"]);
    assert_eq!(sorted(&s, Ascend, Value, 0), ["c", "b", "a"]);
    assert_eq!(sorted(&s, Descend, Value, 0), ["a", "b", "c"]);
    // A non-key target with no order sorts ascending.
    assert_eq!(sorted(&s, None, Version, 0), ["b", "c", "a"]);
}

#[test]
fn mvcc_range_sort_none_with_target_sorts_only_limit_plus_one() {
    let s = versioned_store();
    use SortOrder::*;
    use SortTarget::*;
    // etcd fetches a, b (limit + 1) in key order, sorts those by version, keeps one.
    assert_eq!(sorted(&s, None, Version, 1), ["b"]);
    // By value ascending over all three would give c; over a, b it gives b.
    assert_eq!(sorted(&s, None, Value, 1), ["b"]);
    assert_eq!(sorted(&s, Ascend, Value, 1), ["c"]);
    let mut r = range_req("a", "\0");
    r.sort_target = Value as i32;
    r.limit = 1;
    let resp = s.range(&r).unwrap();
    assert_eq!((resp.more, resp.count), (true, 3));
}

#[test]
fn mvcc_range_sort_ties_keep_key_order_up_to_twelve() {
    let mut s = new_store();
    for k in ["a", "b", "c", "d"] {
        put(&mut s, k, "same");
    }
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(&s, Descend, Version, 0), ["a", "b", "c", "d"]);
    assert_eq!(sorted(&s, Ascend, Value, 0), ["a", "b", "c", "d"]);
    assert_eq!(sorted(&s, Descend, Value, 0), ["a", "b", "c", "d"]);
}

#[test]
fn mvcc_range_unknown_sort_target_keeps_key_order() {
    let s = versioned_store();
    let mut r = range_req("a", "\0");
    r.sort_order = SortOrder::Descend as i32;
    r.sort_target = 9;
    assert_eq!(names(&kvs(&s, &r).unwrap()), ["a", "b", "c"]);
    r.sort_order = 7;
    r.sort_target = SortTarget::Version as i32;
    assert_eq!(names(&kvs(&s, &r).unwrap()), ["a", "b", "c"]);
}

#[test]
fn mvcc_range_mod_and_create_filters() {
    let s = versioned_store();
    let base = || {
        let mut r = range_req("a", "\0");
        r.limit = 1;
        r
    };
    let mut r = base();
    r.min_mod_revision = 6;
    let resp = s.range(&r).unwrap();
    // Filters apply before the limit; count ignores them.
    assert_eq!(names(&kvs(&s, &r).unwrap()), ["a"]);
    assert_eq!((resp.more, resp.count), (true, 3));
    let mut r = base();
    r.max_mod_revision = 4;
    let resp = s.range(&r).unwrap();
    assert_eq!(names(&kvs(&s, &r).unwrap()), ["b"]);
    assert_eq!((resp.more, resp.count), (false, 3));
    let mut r = base();
    r.limit = 0;
    r.min_create_revision = 3;
    r.max_create_revision = 3;
    assert_eq!(names(&kvs(&s, &r).unwrap()), ["b"]);
}

// ----- delete -----

#[test]
fn mvcc_delete_range_prev_kv_count_and_no_op() {
    let mut s = abc_store();
    let mut req = del_req("a", "b");
    req.prev_kv = true;
    let (r, fx) = s.delete_range(&req).unwrap();
    assert_eq!(r.deleted, 3);
    assert_eq!(r.header.unwrap().revision, 7);
    assert_eq!(
        r.prev_kvs
            .iter()
            .map(|kv| kv.key.clone())
            .collect::<Vec<_>>(),
        [b("a"), b("ab"), b("abc")]
    );
    assert_eq!(fx.revision, 7);
    assert_eq!(fx.events.len(), 3);
    // Deleting nothing adds no revision and answers the current one.
    let (r, fx) = s.delete_range(&req).unwrap();
    assert_eq!((r.deleted, r.header.unwrap().revision), (0, 7));
    assert!(r.prev_kvs.is_empty() && fx.events.is_empty());
    assert_eq!((s.current_revision(), fx.revision), (7, 7));
    // Recreating starts a new generation.
    put(&mut s, "a", "again");
    assert_eq!(
        kvs(&s, &range_req("a", "")).unwrap(),
        vec![("a".into(), "again".into(), 8, 8, 1)]
    );
    let (r, _) = s.delete_range(&del_req("\0", "\0")).unwrap();
    assert_eq!(r.deleted, 3);
}

#[test]
fn mvcc_delete_keys_is_one_revision_in_key_order() {
    let mut s = abc_store();
    let fx = s.delete_keys(&[b("c"), b("a"), b("zz"), b("a")]).unwrap();
    assert_eq!(fx.revision, 7);
    let keys: Vec<_> = fx
        .events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().key.clone())
        .collect();
    assert_eq!(keys, [b("a"), b("c")]);
    let fx = s.delete_keys(&[b("zz")]).unwrap();
    assert_eq!((fx.revision, fx.events.len()), (7, 0));
    assert_eq!(s.current_revision(), 7);
}

// ----- events -----

#[test]
fn mvcc_write_effects_events_and_prev_kv() {
    let mut s = new_store();
    let leases = Leases(HashSet::from([9]));
    let mut req = put_req("k", "v1");
    req.lease = 9;
    let (_, fx) = s.put(&req, &leases).unwrap();
    let e = &fx.events[0];
    assert_eq!(e.r#type, EventType::Put as i32);
    assert_eq!(e.prev_kv, None);
    assert_eq!(e.kv.as_ref().unwrap().lease, 9);
    let (_, fx) = s.put(&put_req("k", "v2"), &leases).unwrap();
    assert_eq!(fx.events[0].prev_kv.as_ref().unwrap().value, b("v1"));
    assert_eq!(fx.lease_changes[0].old_lease, 9);
    // put then delete of the same key in one txn (allowed across nested txns): both events
    // carry the key as it was before the txn.
    let t = TxnRequest {
        success: vec![
            op_txn(TxnRequest {
                success: vec![op_put("k", "v3")],
                ..Default::default()
            }),
            op_txn(TxnRequest {
                success: vec![op_del("k", "")],
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    validate_txn(&t, 128).unwrap();
    let (_, fx) = txn(&mut s, t).unwrap();
    assert_eq!(fx.revision, 4);
    assert_eq!(fx.events.len(), 2);
    assert_eq!(fx.events[0].prev_kv.as_ref().unwrap().value, b("v2"));
    assert_eq!(fx.events[1].r#type, EventType::Delete as i32);
    let dkv = fx.events[1].kv.as_ref().unwrap();
    assert_eq!(
        (dkv.key.clone(), dkv.mod_revision, dkv.version),
        (b("k"), 4, 0)
    );
    assert_eq!(fx.events[1].prev_kv.as_ref().unwrap().value, b("v2"));
    assert!(kvs(&s, &range_req("k", "")).unwrap().is_empty());
    // A from-key deletion then a put of the same key: the put is a creation, no prev_kv.
    put(&mut s, "k", "v4");
    let t = TxnRequest {
        success: vec![op_del("a", "\0"), op_put("k", "v5")],
        ..Default::default()
    };
    validate_txn(&t, 128).unwrap();
    let (_, fx) = txn(&mut s, t).unwrap();
    assert_eq!(fx.events[0].prev_kv.as_ref().unwrap().value, b("v4"));
    assert_eq!(fx.events[1].prev_kv, None);
    assert_eq!(
        kvs(&s, &range_req("k", "")).unwrap(),
        vec![("k".into(), "v5".into(), 6, 6, 1)]
    );
}

// ----- txn -----

fn cmp_store() -> KvStore<MemBackend> {
    let mut s = new_store();
    let leases = Leases(HashSet::from([3]));
    put(&mut s, "a", "1"); // 2
    put(&mut s, "a", "2"); // 3
    let mut req = put_req("b", "5");
    req.lease = 3;
    s.put(&req, &leases).unwrap(); // 4
    s
}

fn holds(s: &mut KvStore<MemBackend>, c: Compare) -> bool {
    let (r, _) = txn(
        s,
        TxnRequest {
            compare: vec![c],
            ..Default::default()
        },
    )
    .unwrap();
    r.succeeded
}

#[test]
fn mvcc_txn_compare_targets_and_results() {
    let mut s = cmp_store();
    let cases: Vec<(Compare, bool)> = vec![
        (cmp("a", "", T::Version, R::Equal, U::Version(2)), true),
        (cmp("a", "", T::Version, R::Greater, U::Version(1)), true),
        (cmp("a", "", T::Version, R::Less, U::Version(2)), false),
        (cmp("a", "", T::Version, R::NotEqual, U::Version(2)), false),
        (
            cmp("a", "", T::Create, R::Equal, U::CreateRevision(2)),
            true,
        ),
        (cmp("a", "", T::Mod, R::Equal, U::ModRevision(3)), true),
        (cmp("a", "", T::Mod, R::Less, U::ModRevision(4)), true),
        (cmp("a", "", T::Value, R::Equal, U::Value(b("2"))), true),
        (cmp("a", "", T::Value, R::Greater, U::Value(b("1"))), true),
        (cmp("a", "", T::Value, R::Less, U::Value(b("10"))), false),
        (cmp("b", "", T::Lease, R::Equal, U::Lease(3)), true),
        (cmp("a", "", T::Lease, R::Equal, U::Lease(0)), true),
        // Missing key: compares as zeros; VALUE always fails.
        (
            cmp("zz", "", T::Create, R::Equal, U::CreateRevision(0)),
            true,
        ),
        (cmp("zz", "", T::Version, R::Less, U::Version(1)), true),
        (cmp("zz", "", T::Value, R::Equal, U::Value(b(""))), false),
        (
            cmp("zz", "", T::Value, R::NotEqual, U::Value(b("x"))),
            false,
        ),
        // Range compares hold for every key in the range.
        (cmp("a", "c", T::Mod, R::Greater, U::ModRevision(2)), true),
        (cmp("a", "c", T::Version, R::Equal, U::Version(2)), false),
        (cmp("a", "\0", T::Value, R::Less, U::Value(b("6"))), true),
        (cmp("x", "z", T::Value, R::Less, U::Value(b("6"))), false),
        (cmp("x", "z", T::Mod, R::Equal, U::ModRevision(0)), true),
        // A target union of another kind counts as zero.
        (cmp("a", "", T::Version, R::Equal, U::ModRevision(2)), false),
        (
            cmp("a", "", T::Version, R::Greater, U::ModRevision(99)),
            true,
        ),
    ];
    for (i, (c, want)) in cases.into_iter().enumerate() {
        assert_eq!(holds(&mut s, c), want, "case {i}");
    }
    let mut c = cmp("a", "", T::Version, R::Equal, U::Version(2));
    c.result = 42; // unknown result holds
    assert!(holds(&mut s, c));
    let mut c = cmp("a", "", T::Version, R::Greater, U::Version(2));
    c.target = 42; // unknown target compares equal
    assert!(!holds(&mut s, c.clone()));
    c.result = R::Equal as i32;
    assert!(holds(&mut s, c));
    assert_eq!(s.current_revision(), 4);
}

#[test]
fn mvcc_txn_one_revision_sub_revisions_and_response_revisions() {
    let mut s = cmp_store();
    let t = TxnRequest {
        compare: vec![cmp("a", "", T::Value, R::Equal, U::Value(b("2")))],
        success: vec![
            op_range("a", ""),
            op_del("nothing", ""),
            op_put("a", "3"),
            op_range("a", ""),
            op_del("nothing", ""),
            op_put("c", "1"),
        ],
        failure: vec![op_put("failed", "1")],
    };
    validate_txn(&t, 128).unwrap();
    let (r, fx) = txn(&mut s, t).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.header.as_ref().unwrap().revision, 5);
    let revs: Vec<i64> = r.responses.iter().map(resp_rev).collect();
    // Before the first write ops see the old revision, after it the new one.
    assert_eq!(revs, [4, 4, 5, 5, 5, 5]);
    match r.responses[3].response.as_ref().unwrap() {
        response_op::Response::ResponseRange(x) => assert_eq!(x.kvs[0].value, b("3")),
        _ => panic!(),
    }
    assert_eq!(fx.revision, 5);
    assert_eq!(s.current_revision(), 5);
    // Sub-revisions in the backend: (5, 0) for a, (5, 1) for c.
    let keys: Vec<_> = s
        .backend()
        .range(
            Bucket::Key,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
        )
        .map(|kv| decode_rev(&kv.unwrap().0).unwrap().0)
        .filter(|r| r.main == 5)
        .collect();
    assert_eq!(keys, [Revision::new(5, 0), Revision::new(5, 1)]);
    assert_eq!(names(&kvs(&s, &range_req("failed", "")).unwrap()).len(), 0);
}

#[test]
fn mvcc_txn_read_only_and_no_op_add_no_revision() {
    let mut s = cmp_store();
    let t = TxnRequest {
        success: vec![op_range("a", "")],
        ..Default::default()
    };
    let (r, fx) = txn(&mut s, t.clone()).unwrap();
    assert_eq!(
        (r.header.unwrap().revision, fx.revision, fx.events.len()),
        (4, 4, 0)
    );
    assert_eq!(s.txn_read(&t).unwrap().responses.len(), 1);
    // A write txn whose writes change nothing.
    let t = TxnRequest {
        success: vec![op_del("none", ""), op_txn(TxnRequest::default())],
        ..Default::default()
    };
    let (r, fx) = txn(&mut s, t.clone()).unwrap();
    assert_eq!((r.header.unwrap().revision, fx.revision), (4, 4));
    assert!(s.txn_read(&t).is_err());
    // An empty txn succeeds.
    let (r, _) = txn(&mut s, TxnRequest::default()).unwrap();
    assert!(r.succeeded && r.responses.is_empty());
    assert_eq!(s.current_revision(), 4);
}

#[test]
fn mvcc_txn_nested_paths_and_headers() {
    let mut s = cmp_store();
    let inner_true = TxnRequest {
        compare: vec![cmp("a", "", T::Version, R::Equal, U::Version(2))],
        success: vec![op_put("x", "1")],
        failure: vec![op_put("y", "1")],
    };
    let t = TxnRequest {
        success: vec![
            op_txn(TxnRequest {
                compare: vec![cmp("a", "", T::Version, R::Equal, U::Version(9))],
                success: vec![op_put("x2", "1")],
                failure: vec![op_put("y2", "1"), op_txn(inner_true)],
            }),
            op_range("x", "\0"),
        ],
        ..Default::default()
    };
    validate_txn(&t, 128).unwrap();
    let (r, fx) = txn(&mut s, t).unwrap();
    assert_eq!(r.header.as_ref().unwrap().revision, 5);
    let response_txn = |op: &ResponseOp| match op.response.as_ref().unwrap() {
        response_op::Response::ResponseTxn(t) => t.clone(),
        _ => panic!("not a txn"),
    };
    let outer = response_txn(&r.responses[0]);
    assert!(!outer.succeeded);
    assert_eq!(outer.header.as_ref().unwrap(), &Default::default());
    assert_eq!(outer.responses.len(), 2);
    let inner = response_txn(&outer.responses[1]);
    assert!(inner.succeeded);
    assert_eq!(inner.responses.len(), 1);
    assert_eq!(resp_rev(&inner.responses[0]), 5);
    match r.responses[1].response.as_ref().unwrap() {
        response_op::Response::ResponseRange(x) => {
            assert_eq!(
                x.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
                [b("x"), b("y2")]
            )
        }
        _ => panic!(),
    }
    assert_eq!(fx.events.len(), 2);
}

#[test]
fn mvcc_txn_checks_puts_then_ranges_before_writing() {
    let mut s = cmp_store();
    s.compact(&compact_req(3)).unwrap();
    let mut leased = put_req("n", "1");
    leased.lease = 77;
    let at = |rev| {
        let mut r = range_req("a", "");
        r.revision = rev;
        op_range_req(r)
    };
    let cases = vec![
        (
            vec![op_put("first", "1"), at(2), op_put_req(leased)],
            KvError::LeaseNotFound,
        ),
        (vec![op_put("first", "1"), at(2)], KvError::Compacted),
        (vec![op_put("first", "1"), at(5)], KvError::FutureRev),
        // Negative revisions inside a txn fail below the compaction revision.
        (vec![at(-1)], KvError::Compacted),
    ];
    for (ops, want) in cases {
        assert_eq!(txn(&mut s, then(ops)).unwrap_err(), want);
    }
    // The branch not taken is not checked.
    let mut ign = put_req("missing", "");
    ign.ignore_value = true;
    let t = TxnRequest {
        compare: vec![cmp("a", "", T::Version, R::Equal, U::Version(100))],
        success: vec![op_put_req(ign.clone())],
        failure: vec![op_put("ok", "1")],
    };
    assert!(!txn(&mut s, t).unwrap().0.succeeded);
    let t = then(vec![op_put("first", "1"), op_put_req(ign)]);
    assert_eq!(txn(&mut s, t).unwrap_err(), KvError::KeyNotFound);
    assert_eq!(s.current_revision(), 5);
    assert!(kvs(&s, &range_req("first", "")).unwrap().is_empty());
}

#[test]
fn mvcc_txn_ignore_value_after_from_key_delete_fails_cleanly() {
    let mut s = cmp_store();
    let mut ign = put_req("b", "");
    ign.ignore_value = true;
    let t = TxnRequest {
        success: vec![op_del("a", "\0"), op_put_req(ign.clone())],
        ..Default::default()
    };
    validate_txn(&t, 128).unwrap(); // etcd lets this through and then crashes applying it
    assert_eq!(txn(&mut s, t).unwrap_err(), KvError::KeyNotFound);
    assert_eq!(s.current_revision(), 4);
    // A put of the key earlier in the txn makes it exist again.
    let t = TxnRequest {
        success: vec![
            op_txn(TxnRequest {
                success: vec![op_put("q", "1")],
                ..Default::default()
            }),
            op_put_req(ign),
        ],
        ..Default::default()
    };
    validate_txn(&t, 128).unwrap();
    txn(&mut s, t).unwrap();
}

// ----- validation -----

#[test]
fn mvcc_validate_single_requests() {
    assert_eq!(
        validate_range(&range_req("", "")).unwrap_err(),
        KvError::EmptyKey
    );
    assert_eq!(
        validate_delete_range(&del_req("", "z")).unwrap_err(),
        KvError::EmptyKey
    );
    assert_eq!(
        validate_put(&put_req("", "v")).unwrap_err(),
        KvError::EmptyKey
    );
    let mut p = put_req("k", "v");
    p.ignore_value = true;
    assert_eq!(validate_put(&p).unwrap_err(), KvError::ValueProvided);
    let mut p = put_req("k", "");
    p.ignore_lease = true;
    p.lease = 1;
    assert_eq!(validate_put(&p).unwrap_err(), KvError::LeaseProvided);
    validate_range(&range_req("k", "")).unwrap();
}

#[test]
fn mvcc_validate_txn_op_counts_keys_and_empty_ops() {
    let ops = |n: usize| {
        (0..n)
            .map(|i| op_put(&format!("k{i}"), "v"))
            .collect::<Vec<_>>()
    };
    let t = TxnRequest {
        success: ops(3),
        failure: ops(2),
        ..Default::default()
    };
    validate_txn(&t, 3).unwrap();
    assert_eq!(validate_txn(&t, 2).unwrap_err(), KvError::TooManyOps);
    let t = TxnRequest {
        compare: vec![cmp("k", "", T::Version, R::Equal, U::Version(0)); 4],
        ..Default::default()
    };
    assert_eq!(validate_txn(&t, 3).unwrap_err(), KvError::TooManyOps);
    // A nested txn gets what its parent's largest list leaves.
    let nested = TxnRequest {
        success: ops(2),
        ..Default::default()
    };
    let t = TxnRequest {
        success: vec![op_txn(nested.clone()), op_range("a", "")],
        ..Default::default()
    };
    validate_txn(&t, 4).unwrap();
    assert_eq!(validate_txn(&t, 3).unwrap_err(), KvError::TooManyOps);
    let t = TxnRequest {
        compare: vec![cmp("", "", T::Version, R::Equal, U::Version(0))],
        ..Default::default()
    };
    assert_eq!(validate_txn(&t, 128).unwrap_err(), KvError::EmptyKey);
    let t = TxnRequest {
        failure: vec![op_range("", "")],
        ..Default::default()
    };
    assert_eq!(validate_txn(&t, 128).unwrap_err(), KvError::EmptyKey);
    let t = TxnRequest {
        success: vec![RequestOp { request: None }],
        ..Default::default()
    };
    assert_eq!(validate_txn(&t, 128).unwrap_err(), KvError::KeyNotFound);
    // Too many ops is checked before keys.
    let t = TxnRequest {
        compare: vec![cmp("", "", T::Version, R::Equal, U::Version(0)); 2],
        ..Default::default()
    };
    assert_eq!(validate_txn(&t, 1).unwrap_err(), KvError::TooManyOps);
}

#[test]
fn mvcc_validate_txn_duplicate_keys() {
    let n = |s: Vec<RequestOp>, f: Vec<RequestOp>| {
        op_txn(TxnRequest {
            success: s,
            failure: f,
            ..Default::default()
        })
    };
    let (p, d) = (op_put, op_del);
    let dup = Err(KvError::DuplicateKey);
    let cases: Vec<(Vec<RequestOp>, Result<(), KvError>)> = vec![
        (vec![p("a", "1"), p("a", "2")], dup.clone()),
        (vec![p("a", "1"), d("a", "")], dup.clone()),
        (vec![d("a", "c"), p("b", "2")], dup.clone()),
        (vec![d("a", "c"), p("c", "2")], Ok(())),
        (vec![d("a", "c"), d("b", "")], Ok(())),
        // A from-key deletion is not seen as overlapping (etcd quirk).
        (vec![d("a", "\0"), p("b", "2")], Ok(())),
        // Nested: then/else may repeat a key; otherwise a nested put conflicts.
        (vec![n(vec![p("a", "1")], vec![p("a", "2")])], Ok(())),
        (vec![n(vec![p("a", "1")], vec![]), p("a", "2")], dup.clone()),
        (
            vec![n(vec![p("a", "1")], vec![]), n(vec![p("a", "1")], vec![])],
            dup.clone(),
        ),
        (
            vec![n(vec![p("a", "1")], vec![]), n(vec![], vec![p("a", "1")])],
            dup.clone(),
        ),
        (vec![d("a", ""), n(vec![p("a", "1")], vec![])], dup.clone()),
        (vec![n(vec![d("a", "")], vec![]), p("a", "1")], dup.clone()),
        (
            vec![n(vec![d("a", "")], vec![]), n(vec![p("a", "1")], vec![])],
            dup.clone(),
        ),
        // A put in an earlier nested txn and a deletion in a later one do not conflict.
        (
            vec![n(vec![p("a", "1")], vec![]), n(vec![d("a", "")], vec![])],
            Ok(()),
        ),
        (vec![n(vec![p("a", "1"), p("a", "2")], vec![])], dup.clone()),
    ];
    for (i, (success, want)) in cases.into_iter().enumerate() {
        let t = TxnRequest {
            success,
            ..Default::default()
        };
        assert_eq!(validate_txn(&t, 128), want, "case {i}");
    }
    // success and failure are checked separately.
    let t = TxnRequest {
        success: vec![p("a", "1")],
        failure: vec![p("a", "1")],
        ..Default::default()
    };
    assert_eq!(validate_txn(&t, 128), Ok(()));
}

// ----- compaction -----

#[test]
fn mvcc_compact_errors_and_fresh_store_zero() {
    let mut s = new_store();
    assert_eq!(s.compact(&compact_req(2)).unwrap_err(), KvError::FutureRev);
    s.compact(&compact_req(0)).unwrap();
    assert_eq!(s.compact_revision(), 0);
    assert_eq!(s.compact(&compact_req(0)).unwrap_err(), KvError::Compacted);
    assert_eq!(s.compact(&compact_req(-5)).unwrap_err(), KvError::Compacted);
    let r = s.compact(&compact_req(1)).unwrap();
    assert_eq!(r.header.unwrap().revision, 1);
    assert_eq!(s.compact(&compact_req(1)).unwrap_err(), KvError::Compacted);
}

#[test]
fn mvcc_compact_keeps_latest_and_removes_old_revisions_from_backend() {
    let mut s = new_store();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "a", "2"); // 3
    put(&mut s, "b", "1"); // 4
    s.delete_range(&del_req("b", "")).unwrap(); // 5
    put(&mut s, "c", "1"); // 6
    put(&mut s, "a", "3"); // 7
    assert_eq!(s.backend().len(Bucket::Key), 6);
    let r = s.compact(&compact_req(5)).unwrap();
    assert_eq!(r.header.unwrap().revision, 7);
    // a@3 (latest at 5) and a@7, c@6 remain; b's put and tombstone are gone.
    let revs: Vec<i64> = s
        .backend()
        .range(
            Bucket::Key,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
        )
        .map(|kv| decode_rev(&kv.unwrap().0).unwrap().0.main)
        .collect();
    assert_eq!(revs, [3, 6, 7]);
    let mut r = range_req("a", "\0");
    r.revision = 5;
    assert_eq!(
        kvs(&s, &r).unwrap(),
        vec![("a".into(), "2".into(), 2, 3, 2)]
    );
    assert_eq!(s.indexed_key_count(), 2);
    s.check_consistency();
    s.compact(&compact_req(7)).unwrap();
    assert_eq!(s.backend().len(Bucket::Key), 2);
    assert_eq!(
        kvs(&s, &range_req("a", "")).unwrap(),
        vec![("a".into(), "3".into(), 2, 7, 3)]
    );
}

// ----- reopen and encoding -----

#[test]
fn mvcc_reopen_rebuilds_index_revision_and_leases() {
    let mut s = new_store();
    let leases = Leases(HashSet::from([4]));
    put(&mut s, "a", "1");
    let mut req = put_req("b", "x");
    req.lease = 4;
    s.put(&req, &leases).unwrap();
    put(&mut s, "a", "2");
    s.delete_range(&del_req("a", "")).unwrap();
    put(&mut s, "a", "3");
    put(&mut s, "c", "1");
    s.delete_range(&del_req("c", "")).unwrap(); // 8
    s.compact(&compact_req(8)).unwrap();
    let before = kvs(&s, &range_req("\0", "\0")).unwrap();
    let s2 = KvStore::open(s.backend().clone()).unwrap();
    assert_eq!(s2.current_revision(), 8);
    assert_eq!(s2.compact_revision(), 8);
    assert_eq!(kvs(&s2, &range_req("\0", "\0")).unwrap(), before);
    assert_eq!(
        s2.leased_keys()
            .map(|(k, l)| (k.clone(), l))
            .collect::<Vec<_>>(),
        vec![(b("b"), 4)]
    );
    s2.check_consistency();
    // Fresh store: revision 1, never compacted.
    let s3 = KvStore::open(MemBackend::new()).unwrap();
    assert_eq!((s3.current_revision(), s3.compact_revision()), (1, -1));
}

#[test]
fn mvcc_reopen_finishes_a_scheduled_compaction() {
    let mut s = new_store();
    put(&mut s, "a", "1");
    put(&mut s, "a", "2");
    s.delete_range(&del_req("a", "")).unwrap(); // 4
    let mut backend = s.backend().clone();
    let (rb, n) = crate::mvcc::encode_rev(Revision::new(4, 0), false);
    backend
        .put(Bucket::Meta, SCHEDULED_COMPACT_KEY, &rb[..n])
        .unwrap();
    let s2 = KvStore::open(backend).unwrap();
    assert_eq!((s2.current_revision(), s2.compact_revision()), (4, 4));
    assert_eq!(s2.backend().len(Bucket::Key), 0);
    assert!(s2
        .backend()
        .get(Bucket::Meta, FINISHED_COMPACT_KEY)
        .unwrap()
        .is_some());
    let s3 = KvStore::open(s2.backend().clone()).unwrap();
    assert_eq!((s3.current_revision(), s3.compact_revision()), (4, 4));
}

#[test]
fn mvcc_on_disk_encoding_is_etcds() {
    use prost::Message;
    let mut s = new_store();
    put(&mut s, "k", "v");
    s.delete_range(&del_req("k", "")).unwrap();
    let entries: Vec<(Vec<u8>, Vec<u8>)> = s
        .backend()
        .range(
            Bucket::Key,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
        )
        .map(|e| e.unwrap())
        .collect();
    let mut k0 = vec![0, 0, 0, 0, 0, 0, 0, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(entries[0].0, k0);
    let kv = crate::proto::mvccpb::KeyValue::decode(&entries[0].1[..]).unwrap();
    assert_eq!(
        (
            kv.key,
            kv.value,
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
        (b("k"), b("v"), 2, 2, 1)
    );
    k0[7] = 3;
    k0.push(b't');
    assert_eq!(entries[1].0, k0);
    // A tombstone's value is a KeyValue holding only the key.
    assert_eq!(entries[1].1, [0x0a, 0x01, b'k']);
    s.compact(&compact_req(2)).unwrap();
    assert_eq!(
        s.backend()
            .get(Bucket::Meta, FINISHED_COMPACT_KEY)
            .unwrap()
            .unwrap(),
        vec![0, 0, 0, 0, 0, 0, 0, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn mvcc_backend_failure_poisons_the_store() {
    let mut s = new_store();
    put(&mut s, "a", "1");
    s.backend_mut().fail_writes_after(Some(1));
    let t = TxnRequest {
        success: vec![op_put("b", "1"), op_put("c", "1")],
        ..Default::default()
    };
    let e = txn(&mut s, t).unwrap_err();
    assert_eq!(e.grpc_code(), 13);
    s.backend_mut().fail_writes_after(None);
    assert!(matches!(
        s.range(&range_req("a", "")),
        Err(KvError::Internal(_))
    ));
    assert!(matches!(
        s.put(&put_req("x", "1"), &no_leases()),
        Err(KvError::Internal(_))
    ));
    assert_eq!(s.current_revision(), 2);
}

#[test]
fn mvcc_large_values_and_binary_keys() {
    let mut s = new_store();
    let key = Bytes::from_static(&[0xff, 0x00, 0x01]);
    let value = Bytes::from(vec![7u8; 100_000]);
    let req = crate::proto::etcdserverpb::PutRequest {
        key: key.clone(),
        value: value.clone(),
        ..Default::default()
    };
    s.put(&req, &no_leases()).unwrap();
    let r = s
        .range(&crate::proto::etcdserverpb::RangeRequest {
            key: Bytes::from_static(&[0xff]),
            range_end: Bytes::from_static(&[0]),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.kvs[0].key, key);
    assert_eq!(r.kvs[0].value, value);
}

#[test]
fn mvcc_events_between_replays_history_and_respects_compaction() {
    let mut s = new_store();
    put(&mut s, "a", "1"); // 2
    s.delete_range(&del_req("a", "")).unwrap(); // 3
    put(&mut s, "b", "1"); // 4
    put(&mut s, "b", "2"); // 5
    let evs = s.events_between(2, 100, true).unwrap();
    let kinds: Vec<(i32, i64, bool)> = evs
        .iter()
        .map(|e| {
            (
                e.r#type,
                e.kv.as_ref().unwrap().mod_revision,
                e.prev_kv.is_some(),
            )
        })
        .collect();
    let (p, d) = (EventType::Put as i32, EventType::Delete as i32);
    assert_eq!(
        kinds,
        [(p, 2, false), (d, 3, true), (p, 4, false), (p, 5, true)]
    );
    assert_eq!(s.events_between(3, 5, false).unwrap().len(), 2);
    assert!(s.events_between(6, 9, false).unwrap().is_empty());
    s.compact(&compact_req(3)).unwrap();
    assert_eq!(
        s.events_between(2, 100, false).unwrap_err(),
        KvError::Compacted
    );
    // Starting at the compaction revision is allowed; the deletion at it is gone (as etcd).
    let evs = s.events_between(3, 100, true).unwrap();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].prev_kv, None);
    assert_eq!(s.live_key_count(), 1);
}

/// Not a test: a quick throughput probe of the read and write paths on the in-memory
/// backend. `cargo test --release --lib mvcc_probe -- --ignored --nocapture`
#[test]
#[ignore]
fn mvcc_probe_throughput() {
    use std::time::Instant;
    let mut s = new_store();
    let n = 200_000;
    let t = Instant::now();
    for i in 0..n {
        put(
            &mut s,
            &format!("key/{i:08}"),
            "value-of-some-length-0123456789",
        );
    }
    let put_rate = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut found = 0;
    for i in 0..n {
        let r = s
            .range(&range_req(&format!("key/{:08}", (i * 7919) % n), ""))
            .unwrap();
        found += r.kvs.len();
    }
    let get_rate = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(found, n);
    let t = Instant::now();
    let mut req = range_req("key/", "key0");
    req.limit = 100;
    for _ in 0..200 {
        assert_eq!(s.range(&req).unwrap().kvs.len(), 100);
    }
    let prefix_ms = t.elapsed().as_secs_f64() * 1000.0 / 200.0;
    let t = Instant::now();
    let r = s.compact(&compact_req(s.current_revision())).unwrap();
    assert!(r.header.is_some());
    let compact_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let s2 = KvStore::open(s.backend().clone()).unwrap();
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(s2.live_key_count(), n);
    eprintln!(
        "puts/s {put_rate:.0}, point gets/s {get_rate:.0}, prefix limit-100 over {n} keys \
         {prefix_ms:.2} ms, compact {compact_ms:.0} ms, reopen {open_ms:.0} ms"
    );
}

/// A compaction done in steps, with writes and a newer compaction in between, leaves exactly
/// what one done at once leaves; reads below it fail from the moment it is scheduled.
#[test]
fn mvcc_compaction_in_steps_equals_compaction_at_once() {
    let build = || {
        let mut s = new_store();
        for round in 0..5 {
            for k in 0..40 {
                put(&mut s, &format!("k{k:02}"), &format!("v{round}"));
            }
        }
        s
    };
    let mut at_once = build();
    let mut in_steps = build();
    let rev = at_once.current_revision() - 30;
    at_once.compact(&compact_req(rev)).unwrap();
    in_steps.start_compaction(&compact_req(rev)).unwrap();
    assert_eq!(in_steps.compaction_in_progress(), Some(rev));
    let mut old = range_req("k00", "");
    old.revision = rev - 1;
    assert_eq!(in_steps.range(&old).unwrap_err(), KvError::Compacted);
    let mut steps = 0;
    loop {
        steps += 1;
        // Writes between steps, to keys already done and still to do.
        put(&mut at_once, "k03", "between");
        put(&mut in_steps, "k03", "between");
        put(&mut at_once, "k37", "between");
        put(&mut in_steps, "k37", "between");
        let step = in_steps.compact_step(7).unwrap();
        in_steps.check_consistency();
        if let Some(done) = step.finished {
            assert_eq!(done, rev);
            break;
        }
    }
    assert_eq!(steps, 6, "40 keys in steps of 7");
    assert_eq!(in_steps.compaction_in_progress(), None);
    let all = |s: &KvStore<MemBackend>| -> Vec<(Vec<u8>, Vec<u8>)> {
        [Bucket::Key, Bucket::Meta]
            .into_iter()
            .flat_map(|b| {
                s.backend()
                    .range(
                        b,
                        std::ops::Bound::Unbounded,
                        std::ops::Bound::Unbounded,
                        false,
                    )
                    .map(|kv| kv.unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(all(&in_steps), all(&at_once));
    // A newer compaction takes over one in progress.
    let rev2 = in_steps.current_revision() - 2;
    in_steps.start_compaction(&compact_req(rev2 - 5)).unwrap();
    in_steps.compact_step(3).unwrap();
    in_steps.start_compaction(&compact_req(rev2)).unwrap();
    while in_steps.compact_step(3).unwrap().finished.is_none() {}
    at_once.compact(&compact_req(rev2)).unwrap();
    assert_eq!(all(&in_steps), all(&at_once));
    assert_eq!(in_steps.compact_revision(), rev2);
}

#[test]
fn mvcc_range_within_refuses_a_reply_over_the_limit_and_sizes_it_exactly() {
    let mut s = new_store();
    for k in ["a", "b", "c"] {
        s.put(
            &PutRequest {
                key: b(k),
                value: Bytes::from(vec![b'x'; 1000]),
                ..Default::default()
            },
            &no_leases(),
        )
        .unwrap();
    }
    let all = range_req("a", "d");
    let full = s.range(&all).unwrap();
    let kvs_bytes: usize = full
        .kvs
        .iter()
        .map(|kv| {
            let n = prost::Message::encoded_len(kv);
            1 + prost::length_delimiter_len(n) + n
        })
        .sum();
    // The limit counts the key-values exactly as they are encoded in the reply.
    assert_eq!(s.range_within(&all, kvs_bytes).unwrap(), full);
    let err = s.range_within(&all, kvs_bytes - 1).unwrap_err();
    assert_eq!(err.grpc_code(), 8);
    assert!(
        err.message().contains("range response is too large"),
        "{err}"
    );
    // A limit, keys-only and count-only replies are sized as they are sent.
    let two = RangeRequest {
        limit: 2,
        ..all.clone()
    };
    assert_eq!(
        s.range_within(&two, kvs_bytes * 2 / 3 + 1)
            .unwrap()
            .kvs
            .len(),
        2
    );
    let keys = RangeRequest {
        keys_only: true,
        ..all.clone()
    };
    assert_eq!(s.range_within(&keys, 300).unwrap().kvs.len(), 3);
    let count = RangeRequest {
        count_only: true,
        ..all.clone()
    };
    assert_eq!(s.range_within(&count, 0).unwrap().count, 3);
    // A read-only txn's ranges share one limit.
    let get = |k: &str| RequestOp {
        request: Some(request_op::Request::RequestRange(range_req(k, ""))),
    };
    let txn = TxnRequest {
        success: vec![get("a"), get("b")],
        ..Default::default()
    };
    assert!(s.txn_read_within(&txn, kvs_bytes * 2 / 3 + 1).is_ok());
    assert!(s.txn_read_within(&txn, kvs_bytes / 2).is_err());
}
