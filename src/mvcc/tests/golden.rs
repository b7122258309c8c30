//! Golden test: replays the steps that `testdata/record.sh` ran against a real etcd 3.4
//! (`testdata/cases.jsonl`) against KvStore, and compares the answers with etcd's
//! (`testdata/golden.json`): revisions, kvs (create/mod revision, version, value, lease),
//! more, count, deleted, prev_kvs, succeeded, nested responses and error messages.
//!
//! etcdctl steps are turned into requests as etcdctl 3.4 and its client library build them
//! (prefix ends, from-key, WithSort dropping KEY+ASCEND, hex lease IDs, txn syntax); gateway
//! steps are JSON requests with plain-string bytes fields.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::*;
use crate::mvcc::{
    validate_compaction, validate_delete_range, validate_put, validate_range, validate_txn,
    WriteEffects,
};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{
    response_op, CompactionResponse, DeleteRangeResponse, PutResponse, RangeResponse,
    ResponseHeader, TxnResponse,
};
use crate::proto::mvccpb::KeyValue;

const GOLDEN: &str = include_str!("../testdata/golden.json");
const MAX_TXN_OPS: usize = 128;

enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
}

// ----- etcd's answers in the canonical JSON form of record.sh -----

fn text(b: &Bytes) -> Value {
    Value::String(String::from_utf8_lossy(b).into_owned())
}

/// Inserts `v` unless it is the proto3 default (omitted on the wire and in JSON).
fn set(m: &mut Map<String, Value>, k: &str, v: Value) {
    let default = match &v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    };
    if !default {
        m.insert(k.to_string(), v);
    }
}

fn kv_json(kv: &KeyValue) -> Value {
    let mut m = Map::new();
    set(&mut m, "key", text(&kv.key));
    set(&mut m, "create_revision", json!(kv.create_revision));
    set(&mut m, "mod_revision", json!(kv.mod_revision));
    set(&mut m, "version", json!(kv.version));
    set(&mut m, "value", text(&kv.value));
    set(&mut m, "lease", json!(kv.lease));
    Value::Object(m)
}

fn header_json(m: &mut Map<String, Value>, h: &Option<ResponseHeader>) {
    if let Some(h) = h {
        let mut hm = Map::new();
        set(&mut hm, "revision", json!(h.revision));
        m.insert("header".into(), Value::Object(hm));
    }
}

fn kvs_json(kvs: &[KeyValue]) -> Value {
    Value::Array(kvs.iter().map(kv_json).collect())
}

fn range_json(r: &RangeResponse) -> Value {
    let mut m = Map::new();
    header_json(&mut m, &r.header);
    set(&mut m, "kvs", kvs_json(&r.kvs));
    set(&mut m, "more", json!(r.more));
    set(&mut m, "count", json!(r.count));
    Value::Object(m)
}

fn put_json(r: &PutResponse) -> Value {
    let mut m = Map::new();
    header_json(&mut m, &r.header);
    if let Some(p) = &r.prev_kv {
        m.insert("prev_kv".into(), kv_json(p));
    }
    Value::Object(m)
}

fn delete_json(r: &DeleteRangeResponse) -> Value {
    let mut m = Map::new();
    header_json(&mut m, &r.header);
    set(&mut m, "deleted", json!(r.deleted));
    set(&mut m, "prev_kvs", kvs_json(&r.prev_kvs));
    Value::Object(m)
}

fn txn_json(r: &TxnResponse) -> Value {
    let mut m = Map::new();
    header_json(&mut m, &r.header);
    set(&mut m, "succeeded", json!(r.succeeded));
    let responses = r
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(response_op::Response::ResponseRange(x)) => {
                json!({ "response_range": range_json(x) })
            }
            Some(response_op::Response::ResponsePut(x)) => json!({ "response_put": put_json(x) }),
            Some(response_op::Response::ResponseDeleteRange(x)) => {
                json!({ "response_delete_range": delete_json(x) })
            }
            Some(response_op::Response::ResponseTxn(x)) => json!({ "response_txn": txn_json(x) }),
            None => json!({}),
        })
        .collect();
    set(&mut m, "responses", Value::Array(responses));
    Value::Object(m)
}

fn compaction_json(r: &CompactionResponse) -> Value {
    let mut m = Map::new();
    header_json(&mut m, &r.header);
    Value::Object(m)
}

// ----- gateway JSON requests -----

fn bytes_field(v: &Value, k: &str) -> Bytes {
    v.get(k).and_then(Value::as_str).map(b).unwrap_or_default()
}

fn int_field(v: &Value, k: &str) -> i64 {
    v.get(k).and_then(Value::as_i64).unwrap_or(0)
}

fn bool_field(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// An enum field given by name or number.
fn enum_field(v: &Value, k: &str, by_name: impl Fn(&str) -> Option<i32>) -> i32 {
    match v.get(k) {
        Some(Value::String(s)) => by_name(s).unwrap_or_else(|| panic!("bad enum {s}")),
        Some(n) => n.as_i64().expect("enum number") as i32,
        None => 0,
    }
}

fn range_from_json(v: &Value) -> RangeRequest {
    RangeRequest {
        key: bytes_field(v, "key"),
        range_end: bytes_field(v, "range_end"),
        limit: int_field(v, "limit"),
        revision: int_field(v, "revision"),
        sort_order: enum_field(v, "sort_order", |s| {
            SortOrder::from_str_name(s).map(|e| e as i32)
        }),
        sort_target: enum_field(v, "sort_target", |s| {
            SortTarget::from_str_name(s).map(|e| e as i32)
        }),
        serializable: bool_field(v, "serializable"),
        keys_only: bool_field(v, "keys_only"),
        count_only: bool_field(v, "count_only"),
        min_mod_revision: int_field(v, "min_mod_revision"),
        max_mod_revision: int_field(v, "max_mod_revision"),
        min_create_revision: int_field(v, "min_create_revision"),
        max_create_revision: int_field(v, "max_create_revision"),
    }
}

fn put_from_json(v: &Value) -> PutRequest {
    PutRequest {
        key: bytes_field(v, "key"),
        value: bytes_field(v, "value"),
        lease: int_field(v, "lease"),
        prev_kv: bool_field(v, "prev_kv"),
        ignore_value: bool_field(v, "ignore_value"),
        ignore_lease: bool_field(v, "ignore_lease"),
    }
}

fn delete_from_json(v: &Value) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: bytes_field(v, "key"),
        range_end: bytes_field(v, "range_end"),
        prev_kv: bool_field(v, "prev_kv"),
    }
}

fn compare_from_json(v: &Value) -> Compare {
    let union = if v.get("version").is_some() {
        Some(TargetUnion::Version(int_field(v, "version")))
    } else if v.get("create_revision").is_some() {
        Some(TargetUnion::CreateRevision(int_field(v, "create_revision")))
    } else if v.get("mod_revision").is_some() {
        Some(TargetUnion::ModRevision(int_field(v, "mod_revision")))
    } else if v.get("value").is_some() {
        Some(TargetUnion::Value(bytes_field(v, "value")))
    } else if v.get("lease").is_some() {
        Some(TargetUnion::Lease(int_field(v, "lease")))
    } else {
        None
    };
    Compare {
        result: enum_field(v, "result", |s| {
            CompareResult::from_str_name(s).map(|e| e as i32)
        }),
        target: enum_field(v, "target", |s| {
            CompareTarget::from_str_name(s).map(|e| e as i32)
        }),
        key: bytes_field(v, "key"),
        range_end: bytes_field(v, "range_end"),
        target_union: union,
    }
}

fn op_from_json(v: &Value) -> RequestOp {
    let request = if let Some(r) = v.get("request_range") {
        Some(request_op::Request::RequestRange(range_from_json(r)))
    } else if let Some(r) = v.get("request_put") {
        Some(request_op::Request::RequestPut(put_from_json(r)))
    } else if let Some(r) = v.get("request_delete_range") {
        Some(request_op::Request::RequestDeleteRange(delete_from_json(r)))
    } else {
        v.get("request_txn")
            .map(|r| request_op::Request::RequestTxn(txn_from_json(r)))
    };
    RequestOp { request }
}

fn list<T>(v: &Value, k: &str, f: impl Fn(&Value) -> T) -> Vec<T> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| a.iter().map(f).collect())
        .unwrap_or_default()
}

fn txn_from_json(v: &Value) -> TxnRequest {
    TxnRequest {
        compare: list(v, "compare", compare_from_json),
        success: list(v, "success", op_from_json),
        failure: list(v, "failure", op_from_json),
    }
}

// ----- etcdctl commands, as etcdctl 3.4 builds them -----

struct Flags<'a> {
    positional: Vec<&'a str>,
    named: BTreeMap<&'a str, &'a str>,
}

fn flags<'a>(args: &[&'a str]) -> Flags<'a> {
    let mut f = Flags {
        positional: vec![],
        named: BTreeMap::new(),
    };
    for a in args {
        match a.strip_prefix("--") {
            Some(flag) => {
                let (name, value) = flag.split_once('=').unwrap_or((flag, "true"));
                f.named.insert(name, value);
            }
            None => f.positional.push(a),
        }
    }
    f
}

impl Flags<'_> {
    fn on(&self, name: &str) -> bool {
        self.named.get(name) == Some(&"true")
    }

    fn int(&self, name: &str) -> i64 {
        self.named
            .get(name)
            .map_or(0, |v| v.parse().expect("number"))
    }

    fn text(&self, name: &str) -> String {
        self.named
            .get(name)
            .map_or(String::new(), |v| v.to_uppercase())
    }
}

/// clientv3's GetPrefixRangeEnd.
fn prefix_end(key: &[u8]) -> Bytes {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0")
}

/// etcdctl's --prefix / --from-key handling (an empty key means every key).
fn key_range(f: &Flags<'_>) -> (Bytes, Bytes) {
    let mut key = b(f.positional[0]);
    let mut end = f.positional.get(1).map(|e| b(e)).unwrap_or_default();
    if f.on("prefix") {
        if key.is_empty() {
            key = Bytes::from_static(b"\0");
            end = Bytes::from_static(b"\0");
        } else {
            end = prefix_end(&key);
        }
    }
    if f.on("from-key") {
        if key.is_empty() {
            key = Bytes::from_static(b"\0");
        }
        end = Bytes::from_static(b"\0");
    }
    (key, end)
}

fn ctl_get(args: &[&str]) -> RangeRequest {
    let f = flags(args);
    let (key, range_end) = key_range(&f);
    let mut order = match f.text("order").as_str() {
        "" => SortOrder::None,
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        o => panic!("bad order {o}"),
    };
    let target = match f.text("sort-by").as_str() {
        "" | "KEY" => SortTarget::Key,
        "CREATE" => SortTarget::Create,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        t => panic!("bad sort target {t}"),
    };
    // clientv3.WithSort: KEY ascending is the server's natural order, sent as NONE.
    if target == SortTarget::Key && order == SortOrder::Ascend {
        order = SortOrder::None;
    }
    RangeRequest {
        key,
        range_end,
        limit: f.int("limit"),
        revision: f.int("rev").max(0),
        sort_order: order as i32,
        sort_target: target as i32,
        keys_only: f.on("keys-only"),
        ..Default::default()
    }
}

fn ctl_del(args: &[&str]) -> DeleteRangeRequest {
    let f = flags(args);
    let (key, range_end) = key_range(&f);
    DeleteRangeRequest {
        key,
        range_end,
        prev_kv: f.on("prev-kv"),
    }
}

fn ctl_put(args: &[&str]) -> PutRequest {
    let f = flags(args);
    let ignore_value = f.on("ignore-value");
    PutRequest {
        key: b(f.positional[0]),
        value: if ignore_value {
            Bytes::new()
        } else {
            b(f.positional[1])
        },
        lease: f
            .named
            .get("lease")
            .map_or(0, |l| i64::from_str_radix(l, 16).expect("hex lease")),
        prev_kv: f.on("prev-kv"),
        ignore_value,
        ignore_lease: f.on("ignore-lease"),
    }
}

/// etcdctl txn's argify for op lines: whitespace-separated, "double quotes" group.
fn argify(line: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').expect("closing quote");
            out.push(q[..end].to_string());
            rest = q[end + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    out
}

/// `target("key") op "value"`, as etcdctl txn's parseCompare.
fn ctl_compare(line: &str) -> Compare {
    let (target, rest) = line.split_once('(').expect("compare (");
    let rest = rest.strip_prefix('"').expect("quoted key");
    let (key, rest) = rest.split_once("\")").expect("key\")");
    let mut parts = rest.trim().splitn(2, ' ');
    let op = parts.next().unwrap();
    let val = parts.next().unwrap().trim().trim_matches('"');
    let int = || val.parse::<i64>().expect("number");
    let (t, union) = match target {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(int())),
        "c" | "create" => (CompareTarget::Create, TargetUnion::CreateRevision(int())),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(int())),
        "val" | "value" => (CompareTarget::Value, TargetUnion::Value(b(val))),
        t => panic!("unsupported compare target {t}"),
    };
    let result = match op {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        o => panic!("bad compare op {o}"),
    };
    Compare {
        result: result as i32,
        target: t as i32,
        key: b(key),
        range_end: Bytes::new(),
        target_union: Some(union),
    }
}

fn ctl_op(line: &str) -> RequestOp {
    let args = argify(line);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let request = match args[0] {
        "put" => request_op::Request::RequestPut(ctl_put(&args[1..])),
        "get" => request_op::Request::RequestRange(ctl_get(&args[1..])),
        "del" => request_op::Request::RequestDeleteRange(ctl_del(&args[1..])),
        c => panic!("unsupported txn op {c}"),
    };
    RequestOp {
        request: Some(request),
    }
}

/// etcdctl txn's stdin: compares, blank line, success ops, blank line, failure ops.
fn ctl_txn(stdin: &str) -> TxnRequest {
    let mut sections: Vec<Vec<&str>> = vec![vec![]];
    for line in stdin.split('\n') {
        if line.is_empty() {
            if sections.len() == 3 {
                break;
            }
            sections.push(vec![]);
        } else {
            sections.last_mut().unwrap().push(line);
        }
    }
    TxnRequest {
        compare: sections[0].iter().map(|l| ctl_compare(l)).collect(),
        success: sections[1].iter().map(|l| ctl_op(l)).collect(),
        failure: sections[2].iter().map(|l| ctl_op(l)).collect(),
    }
}

fn ctl_request(step: &Value) -> Request {
    let args: Vec<&str> = step["ctl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    match args[0] {
        "put" => Request::Put(ctl_put(&args[1..])),
        "get" => Request::Range(ctl_get(&args[1..])),
        "del" => Request::Delete(ctl_del(&args[1..])),
        "txn" => Request::Txn(ctl_txn(step["stdin"].as_str().unwrap_or(""))),
        c => panic!("unsupported etcdctl command {c}"),
    }
}

fn rpc_request(name: &str, req: &Value) -> Request {
    match name {
        "range" => Request::Range(range_from_json(req)),
        "put" => Request::Put(put_from_json(req)),
        "deleterange" => Request::Delete(delete_from_json(req)),
        "txn" => Request::Txn(txn_from_json(req)),
        "compaction" => Request::Compact(CompactionRequest {
            revision: int_field(req, "revision"),
            physical: bool_field(req, "physical"),
        }),
        n => panic!("unsupported rpc {n}"),
    }
}

// ----- replay -----

struct Replay {
    store: KvStore<MemBackend>,
    leases: Leases,
    /// lease → keys attached, followed through WriteEffects::lease_changes.
    attached: BTreeMap<i64, BTreeSet<Bytes>>,
}

impl Replay {
    fn follow(&mut self, fx: &WriteEffects) {
        for c in &fx.lease_changes {
            if c.old_lease != 0 {
                self.attached.entry(c.old_lease).or_default().remove(&c.key);
            }
            if c.new_lease != 0 {
                self.attached
                    .entry(c.new_lease)
                    .or_default()
                    .insert(c.key.clone());
            }
        }
    }

    fn execute(&mut self, req: Request) -> Result<Value, KvError> {
        let s = &mut self.store;
        match req {
            Request::Range(r) => {
                validate_range(&r)?;
                Ok(range_json(&s.range(&r)?))
            }
            Request::Put(r) => {
                validate_put(&r)?;
                let (resp, fx) = s.put(&r, &self.leases)?;
                self.follow(&fx);
                Ok(put_json(&resp))
            }
            Request::Delete(r) => {
                validate_delete_range(&r)?;
                let (resp, fx) = s.delete_range(&r)?;
                self.follow(&fx);
                Ok(delete_json(&resp))
            }
            Request::Txn(r) => {
                validate_txn(&r, MAX_TXN_OPS)?;
                let (resp, fx) = s.txn(&r, &self.leases)?;
                self.follow(&fx);
                Ok(txn_json(&resp))
            }
            Request::Compact(r) => {
                validate_compaction(&r)?;
                Ok(compaction_json(&s.compact(&r)?))
            }
        }
    }

    /// A lease revoke: its keys are deleted in one revision (the revoke's header revision).
    fn revoke(&mut self, id: i64) -> Value {
        self.leases.0.remove(&id);
        let keys: Vec<Bytes> = self
            .attached
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let fx = self.store.delete_keys(&keys).expect("revoke");
        self.follow(&fx);
        json!({ "header": { "revision": fx.revision } })
    }
}

#[test]
fn mvcc_golden_matches_recorded_etcd() {
    let steps: Vec<Value> = serde_json::from_str(GOLDEN).expect("golden.json");
    assert!(steps.len() > 150, "golden.json looks truncated");
    let mut replay = Replay {
        store: new_store(),
        leases: Leases::default(),
        attached: BTreeMap::new(),
    };
    let mut failures = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let (step, expect) = (&s["step"], &s["expect"]);
        let got = if step.get("ctl").is_some() {
            match replay.execute(ctl_request(step)) {
                Ok(v) => v,
                Err(e) => json!({ "error": e.message() }),
            }
        } else {
            let name = step["rpc"].as_str().unwrap();
            let req = &step["req"];
            match name {
                "lease_grant" => {
                    assert!(
                        expect.get("error").is_none(),
                        "step {i}: grant failed in etcd"
                    );
                    replay.leases.0.insert(int_field(req, "ID"));
                    continue;
                }
                "lease_revoke" => replay.revoke(int_field(req, "ID")),
                _ => match replay.execute(rpc_request(name, req)) {
                    Ok(v) => v,
                    Err(e) => json!({ "error": e.message(), "code": e.grpc_code() }),
                },
            }
        };
        if &got != expect {
            failures.push(format!(
                "step {i}: {step}\n  etcd:   {expect}\n  corekv: {got}"
            ));
        }
    }
    replay.store.check_consistency();
    assert!(
        failures.is_empty(),
        "{} of {} steps differ from etcd:\n{}",
        failures.len(),
        steps.len(),
        failures.join("\n")
    );
}
