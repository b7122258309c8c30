//! etcdctl's printers: `-w simple|fields|json|protobuf|table` for every command's response,
//! byte for byte as etcdctl 3.4 prints them.

use std::io::Write;

use prost::Message;

use super::gofmt::{self, hex16, quote};
use super::json::Json;
use super::table;
use super::{CtlError, EXIT_BAD_ARGS, EXIT_BAD_FEATURE};
use crate::proto::authpb::Permission;
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};

/// An output format (`-w`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Simple,
    Fields,
    Json,
    Protobuf,
    Table,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, CtlError> {
        Ok(match s {
            "simple" => Format::Simple,
            "fields" => Format::Fields,
            "json" => Format::Json,
            "protobuf" => Format::Protobuf,
            "table" => Format::Table,
            _ => return Err(CtlError::new(EXIT_BAD_FEATURE, "unsupported output format")),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Format::Simple => "simple",
            Format::Fields => "fields",
            Format::Json => "json",
            Format::Protobuf => "protobuf",
            Format::Table => "table",
        }
    }
}

/// One endpoint's `endpoint health` result.
pub struct EpHealth {
    pub ep: String,
    pub health: bool,
    pub took: String,
    pub error: String,
}

/// One endpoint's `endpoint status` result.
pub struct EpStatus {
    pub ep: String,
    pub resp: pb::StatusResponse,
}

/// One endpoint's `endpoint hashkv` result.
pub struct EpHashKv {
    pub ep: String,
    pub resp: pb::HashKvResponse,
}

/// Writes to stdout and flushes (output must appear as it happens: watch, keep-alive).
pub fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.flush();
}

pub fn out_bytes(b: &[u8]) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(b);
    let _ = o.flush();
}

pub fn err(s: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(s.as_bytes());
    let _ = e.flush();
}

/// Prints responses in one format.
#[derive(Clone, Copy, Debug)]
pub struct Printer {
    pub format: Format,
    pub hex: bool,
    /// `get --print-value-only` (simple format only).
    pub value_only: bool,
}

fn unsupported(format: Format) -> CtlError {
    CtlError::new(
        EXIT_BAD_FEATURE,
        format!("{} not supported as output format", format.name()),
    )
}

// ---- simple ----------------------------------------------------------------------------------

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|c| format!("\\x{c:02x}")).collect()
}

impl Printer {
    fn kv(&self, s: &mut Vec<u8>, kv: &KeyValue) {
        if self.hex {
            if !self.value_only {
                s.extend_from_slice(hex_bytes(&kv.key).as_bytes());
                s.push(b'\n');
            }
            s.extend_from_slice(hex_bytes(&kv.value).as_bytes());
            s.push(b'\n');
        } else {
            if !self.value_only {
                s.extend_from_slice(&kv.key);
                s.push(b'\n');
            }
            s.extend_from_slice(&kv.value);
            s.push(b'\n');
        }
    }

    fn simple_get(&self, s: &mut Vec<u8>, r: &pb::RangeResponse) {
        for kv in &r.kvs {
            self.kv(s, kv);
        }
    }

    fn simple_put(&self, s: &mut Vec<u8>, r: &pb::PutResponse) {
        s.extend_from_slice(b"OK\n");
        if let Some(kv) = &r.prev_kv {
            self.kv(s, kv);
        }
    }

    fn simple_del(&self, s: &mut Vec<u8>, r: &pb::DeleteRangeResponse) {
        s.extend_from_slice(format!("{}\n", r.deleted).as_bytes());
        for kv in &r.prev_kvs {
            self.kv(s, kv);
        }
    }
}

// ---- fields ----------------------------------------------------------------------------------

fn f_hdr(s: &mut String, h: Option<&pb::ResponseHeader>) {
    let d = pb::ResponseHeader::default();
    let h = h.unwrap_or(&d);
    s.push_str(&format!(
        "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
        h.cluster_id, h.member_id, h.revision, h.raft_term
    ));
}

fn f_kv(s: &mut String, pfx: &str, kv: &KeyValue) {
    s.push_str(&format!("\"{pfx}Key\" : {}\n", quote(&kv.key)));
    s.push_str(&format!(
        "\"{pfx}CreateRevision\" : {}\n",
        kv.create_revision
    ));
    s.push_str(&format!("\"{pfx}ModRevision\" : {}\n", kv.mod_revision));
    s.push_str(&format!("\"{pfx}Version\" : {}\n", kv.version));
    s.push_str(&format!("\"{pfx}Value\" : {}\n", quote(&kv.value)));
    s.push_str(&format!("\"{pfx}Lease\" : {}\n", kv.lease));
}

fn f_get(s: &mut String, r: &pb::RangeResponse) {
    f_hdr(s, r.header.as_ref());
    for kv in &r.kvs {
        f_kv(s, "", kv);
    }
    s.push_str(&format!("\"More\" : {}\n\"Count\" : {}\n", r.more, r.count));
}

fn f_put(s: &mut String, r: &pb::PutResponse) {
    f_hdr(s, r.header.as_ref());
    if let Some(kv) = &r.prev_kv {
        f_kv(s, "Prev", kv);
    }
}

fn f_del(s: &mut String, r: &pb::DeleteRangeResponse) {
    f_hdr(s, r.header.as_ref());
    s.push_str(&format!("\"Deleted\" : {}\n", r.deleted));
    for kv in &r.prev_kvs {
        f_kv(s, "Prev", kv);
    }
}

fn f_txn(s: &mut String, r: &pb::TxnResponse) {
    use pb::response_op::Response;
    f_hdr(s, r.header.as_ref());
    s.push_str(&format!("\"Succeeded\" : {}\n", r.succeeded));
    for op in &r.responses {
        match &op.response {
            Some(Response::ResponseRange(g)) => f_get(s, g),
            Some(Response::ResponsePut(p)) => f_put(s, p),
            Some(Response::ResponseDeleteRange(d)) => f_del(s, d),
            other => s.push_str(&format!(
                "\"Unknown\" : {}\n",
                quote(format!("{other:?}").as_bytes())
            )),
        }
    }
}

fn event_name(t: i32) -> &'static str {
    if t == EventType::Delete as i32 {
        "DELETE"
    } else {
        "PUT"
    }
}

// ---- json ------------------------------------------------------------------------------------

fn j_hdr_fields(j: &mut Json, h: &pb::ResponseHeader) {
    j.int_oe("cluster_id", h.cluster_id);
    j.int_oe("member_id", h.member_id);
    j.int_oe("revision", h.revision);
    j.int_oe("raft_term", h.raft_term);
}

fn j_hdr(j: &mut Json, name: &str, h: Option<&pb::ResponseHeader>) {
    if let Some(h) = h {
        j.obj(name);
        j_hdr_fields(j, h);
        j.end_obj();
    }
}

fn j_kv_fields(j: &mut Json, kv: &KeyValue) {
    j.bytes_oe("key", &kv.key);
    j.int_oe("create_revision", kv.create_revision);
    j.int_oe("mod_revision", kv.mod_revision);
    j.int_oe("version", kv.version);
    j.bytes_oe("value", &kv.value);
    j.int_oe("lease", kv.lease);
}

fn j_kv(j: &mut Json, name: &str, kv: Option<&KeyValue>) {
    if let Some(kv) = kv {
        j.obj(name);
        j_kv_fields(j, kv);
        j.end_obj();
    }
}

fn j_kvs(j: &mut Json, name: &str, kvs: &[KeyValue]) {
    if !kvs.is_empty() {
        j.arr(name);
        for kv in kvs {
            j.begin_obj();
            j_kv_fields(j, kv);
            j.end_obj();
        }
        j.end_arr();
    }
}

fn j_get(j: &mut Json, r: &pb::RangeResponse) {
    j_hdr(j, "header", r.header.as_ref());
    j_kvs(j, "kvs", &r.kvs);
    j.bool_oe("more", r.more);
    j.int_oe("count", r.count);
}

fn j_put(j: &mut Json, r: &pb::PutResponse) {
    j_hdr(j, "header", r.header.as_ref());
    j_kv(j, "prev_kv", r.prev_kv.as_ref());
}

fn j_del(j: &mut Json, r: &pb::DeleteRangeResponse) {
    j_hdr(j, "header", r.header.as_ref());
    j.int_oe("deleted", r.deleted);
    j_kvs(j, "prev_kvs", &r.prev_kvs);
}

fn j_txn(j: &mut Json, r: &pb::TxnResponse) {
    use pb::response_op::Response;
    j_hdr(j, "header", r.header.as_ref());
    j.bool_oe("succeeded", r.succeeded);
    if !r.responses.is_empty() {
        j.arr("responses");
        for op in &r.responses {
            j.begin_obj();
            match &op.response {
                None => j.null("Response"),
                Some(resp) => {
                    j.obj("Response");
                    match resp {
                        Response::ResponseRange(g) => {
                            j.obj("ResponseRange");
                            j_get(j, g);
                        }
                        Response::ResponsePut(p) => {
                            j.obj("ResponsePut");
                            j_put(j, p);
                        }
                        Response::ResponseDeleteRange(d) => {
                            j.obj("ResponseDeleteRange");
                            j_del(j, d);
                        }
                        Response::ResponseTxn(t) => {
                            j.obj("ResponseTxn");
                            j_txn(j, t);
                        }
                    }
                    j.end_obj();
                    j.end_obj();
                }
            }
            j.end_obj();
        }
        j.end_arr();
    }
}

fn j_event(j: &mut Json, e: &Event) {
    j.begin_obj();
    j.int_oe("type", e.r#type);
    j_kv(j, "kv", e.kv.as_ref());
    j_kv(j, "prev_kv", e.prev_kv.as_ref());
    j.end_obj();
}

fn j_member(j: &mut Json, m: &pb::Member) {
    j.begin_obj();
    j.int_oe("ID", m.id);
    j.str_oe("name", &m.name);
    j.strs_oe("peerURLs", &m.peer_ur_ls);
    j.strs_oe("clientURLs", &m.client_ur_ls);
    j.bool_oe("isLearner", m.is_learner);
    j.end_obj();
}

/// A top-level JSON object built by `body`, printed on one line.
fn json_line(body: impl FnOnce(&mut Json)) -> String {
    let mut j = Json::new();
    j.begin_obj();
    body(&mut j);
    j.end_obj();
    let mut s = j.finish();
    s.push('\n');
    s
}

// ---- tables ----------------------------------------------------------------------------------

fn member_rows(r: &pb::MemberListResponse) -> Vec<Vec<String>> {
    r.members
        .iter()
        .map(|m| {
            vec![
                format!("{:x}", m.id),
                if m.name.is_empty() {
                    "unstarted"
                } else {
                    "started"
                }
                .to_string(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect()
}

const MEMBER_HEADER: [&str; 6] = [
    "ID",
    "Status",
    "Name",
    "Peer Addrs",
    "Client Addrs",
    "Is Learner",
];

fn status_rows(list: &[EpStatus]) -> Vec<Vec<String>> {
    list.iter()
        .map(|st| {
            let r = &st.resp;
            let member = r.header.as_ref().map_or(0, |h| h.member_id);
            vec![
                st.ep.clone(),
                format!("{member:x}"),
                r.version.clone(),
                gofmt::humanize_bytes(r.db_size as u64),
                (r.leader == member).to_string(),
                r.is_learner.to_string(),
                r.raft_term.to_string(),
                r.raft_index.to_string(),
                r.raft_applied_index.to_string(),
                r.errors.join(", "),
            ]
        })
        .collect()
}

const STATUS_HEADER: [&str; 10] = [
    "endpoint",
    "ID",
    "version",
    "db size",
    "is leader",
    "is learner",
    "raft term",
    "raft index",
    "raft applied index",
    "errors",
];

fn health_rows(list: &[EpHealth]) -> Vec<Vec<String>> {
    list.iter()
        .map(|h| {
            vec![
                h.ep.clone(),
                h.health.to_string(),
                h.took.clone(),
                h.error.clone(),
            ]
        })
        .collect()
}

fn hash_rows(list: &[EpHashKv]) -> Vec<Vec<String>> {
    list.iter()
        .map(|h| vec![h.ep.clone(), h.resp.hash.to_string()])
        .collect()
}

fn simple_rows(rows: &[Vec<String>]) -> String {
    rows.iter().map(|r| format!("{}\n", r.join(", "))).collect()
}

fn alarm_name(a: i32) -> &'static str {
    match a {
        1 => "NOSPACE",
        2 => "CORRUPT",
        _ => "NONE",
    }
}

// ---- the printer -----------------------------------------------------------------------------

/// How one response prints in each format; a format it does not support fails with etcdctl's
/// error for it.
struct Shapes<S, F, J, P, T> {
    simple: S,
    fields: F,
    json: J,
    protobuf: P,
    table: T,
}

type Unsupported = fn() -> Result<Vec<u8>, CtlError>;

/// For responses whose table format is unsupported (all but member and endpoint commands).
fn no_table() -> Result<Vec<u8>, CtlError> {
    Err(unsupported(Format::Table))
}

fn no_protobuf() -> Result<Vec<u8>, CtlError> {
    Err(unsupported(Format::Protobuf))
}

/// The wire bytes of a message, for `-w protobuf`.
fn wire(m: &impl Message) -> impl FnOnce() -> Result<Vec<u8>, CtlError> + '_ {
    move || Ok(m.encode_to_vec())
}

/// A top-level JSON object, built by `body`, as one line.
fn json_obj(body: impl FnOnce(&mut Json)) -> impl FnOnce() -> Vec<u8> {
    move || json_line(body).into_bytes()
}

fn fields_of(body: impl FnOnce(&mut String)) -> impl FnOnce() -> Vec<u8> {
    move || {
        let mut s = String::new();
        body(&mut s);
        s.into_bytes()
    }
}

impl Printer {
    fn emit<S, F, J, P, T>(&self, shapes: Shapes<S, F, J, P, T>) -> Result<(), CtlError>
    where
        S: FnOnce() -> Vec<u8>,
        F: FnOnce() -> Vec<u8>,
        J: FnOnce() -> Vec<u8>,
        P: FnOnce() -> Result<Vec<u8>, CtlError>,
        T: FnOnce() -> Result<Vec<u8>, CtlError>,
    {
        let bytes = match self.format {
            Format::Simple => (shapes.simple)(),
            Format::Fields => (shapes.fields)(),
            Format::Json => (shapes.json)(),
            Format::Protobuf => (shapes.protobuf)()?,
            Format::Table => (shapes.table)()?,
        };
        out_bytes(&bytes);
        Ok(())
    }

    /// Simple-format bytes built by `body`.
    fn simple_of<'a>(
        &'a self,
        body: impl FnOnce(&Self, &mut Vec<u8>) + 'a,
    ) -> impl FnOnce() -> Vec<u8> + 'a {
        move || {
            let mut s = Vec::new();
            body(self, &mut s);
            s
        }
    }

    pub fn get(&self, r: &pb::RangeResponse) -> Result<(), CtlError> {
        if self.value_only && self.format != Format::Simple {
            return Err(CtlError::new(
                EXIT_BAD_ARGS,
                "print-value-only is only for `--write-out=simple`",
            ));
        }
        self.emit(Shapes {
            simple: self.simple_of(|p, s| p.simple_get(s, r)),
            fields: fields_of(|s| f_get(s, r)),
            json: json_obj(|j| j_get(j, r)),
            protobuf: wire(r),
            table: no_table as Unsupported,
        })
    }

    pub fn put(&self, r: &pb::PutResponse) -> Result<(), CtlError> {
        self.emit(Shapes {
            simple: self.simple_of(|p, s| p.simple_put(s, r)),
            fields: fields_of(|s| f_put(s, r)),
            json: json_obj(|j| j_put(j, r)),
            protobuf: wire(r),
            table: no_table as Unsupported,
        })
    }

    pub fn del(&self, r: &pb::DeleteRangeResponse) -> Result<(), CtlError> {
        self.emit(Shapes {
            simple: self.simple_of(|p, s| p.simple_del(s, r)),
            fields: fields_of(|s| f_del(s, r)),
            json: json_obj(|j| j_del(j, r)),
            protobuf: wire(r),
            table: no_table as Unsupported,
        })
    }

    pub fn txn(&self, r: &pb::TxnResponse) -> Result<(), CtlError> {
        use pb::response_op::Response;
        let simple = self.simple_of(|p, s| {
            s.extend_from_slice(if r.succeeded {
                b"SUCCESS\n"
            } else {
                b"FAILURE\n"
            });
            for op in &r.responses {
                s.push(b'\n');
                match &op.response {
                    Some(Response::ResponseRange(g)) => p.simple_get(s, g),
                    Some(Response::ResponsePut(x)) => p.simple_put(s, x),
                    Some(Response::ResponseDeleteRange(d)) => p.simple_del(s, d),
                    other => {
                        s.extend_from_slice(format!("unexpected response {other:?}\n").as_bytes())
                    }
                }
            }
        });
        self.emit(Shapes {
            simple,
            fields: fields_of(|s| f_txn(s, r)),
            json: json_obj(|j| j_txn(j, r)),
            protobuf: wire(r),
            table: no_table as Unsupported,
        })
    }

    /// One watch response as clientv3 delivers it (the "created" reply is never shown).
    pub fn watch(&self, r: &pb::WatchResponse) -> Result<(), CtlError> {
        let none = KeyValue::default();
        let simple = self.simple_of(|p, s| {
            for e in &r.events {
                s.extend_from_slice(event_name(e.r#type).as_bytes());
                s.push(b'\n');
                if let Some(prev) = &e.prev_kv {
                    p.kv(s, prev);
                }
                p.kv(s, e.kv.as_ref().unwrap_or(&none));
            }
        });
        let fields = fields_of(|s| {
            f_hdr(s, r.header.as_ref());
            for e in &r.events {
                s.push_str(&format!("\"Type\" : {}\n", event_name(e.r#type)));
                if let Some(p) = &e.prev_kv {
                    f_kv(s, "Prev", p);
                }
                f_kv(s, "", e.kv.as_ref().unwrap_or(&none));
            }
        });
        let json = json_obj(|j| {
            j.obj("Header");
            j_hdr_fields(j, &r.header.unwrap_or_default());
            j.end_obj();
            j.arr("Events");
            for e in &r.events {
                j_event(j, e);
            }
            j.end_arr();
            j.int("CompactRevision", r.compact_revision);
            j.bool("Canceled", r.canceled);
            j.bool("Created", r.created);
        });
        // etcdctl re-encodes what clientv3 kept of the response: no watch id.
        let shown = pb::WatchResponse {
            header: Some(r.header.unwrap_or_default()),
            events: r.events.clone(),
            compact_revision: r.compact_revision,
            canceled: r.canceled,
            created: r.created,
            ..Default::default()
        };
        self.emit(Shapes {
            simple,
            fields,
            json,
            protobuf: wire(&shown),
            table: no_table as Unsupported,
        })
    }

    /// Lease replies print through clientv3's wrapper structs: header fields inline in JSON,
    /// no protobuf.
    fn emit_lease(
        &self,
        h: Option<&pb::ResponseHeader>,
        simple: String,
        fields: impl FnOnce(&mut String),
        json: impl FnOnce(&mut Json),
    ) -> Result<(), CtlError> {
        self.emit(Shapes {
            simple: || simple.into_bytes(),
            fields: fields_of(|s| {
                f_hdr(s, h);
                fields(s)
            }),
            json: json_obj(|j| {
                if let Some(h) = h {
                    j_hdr_fields(j, h);
                }
                json(j)
            }),
            // clientv3's wrappers embed *ResponseHeader, whose Marshal is promoted: etcdctl
            // prints the header's bytes alone.
            protobuf: || Ok(h.map(|h| h.encode_to_vec()).unwrap_or_default()),
            table: no_table as Unsupported,
        })
    }

    pub fn grant(&self, r: &pb::LeaseGrantResponse) -> Result<(), CtlError> {
        self.emit_lease(
            r.header.as_ref(),
            format!("lease {} granted with TTL({}s)\n", hex16(r.id), r.ttl),
            |s| s.push_str(&format!("\"ID\" : {}\n\"TTL\" : {}\n", r.id, r.ttl)),
            |j| {
                j.int("ID", r.id);
                j.int("TTL", r.ttl);
                j.str("Error", &r.error);
            },
        )
    }

    pub fn keep_alive(&self, r: &pb::LeaseKeepAliveResponse) -> Result<(), CtlError> {
        self.emit_lease(
            r.header.as_ref(),
            format!("lease {} keepalived with TTL({})\n", hex16(r.id), r.ttl),
            |s| s.push_str(&format!("\"ID\" : {}\n\"TTL\" : {}\n", r.id, r.ttl)),
            |j| {
                j.int("ID", r.id);
                j.int("TTL", r.ttl);
            },
        )
    }

    pub fn time_to_live(
        &self,
        r: &pb::LeaseTimeToLiveResponse,
        keys: bool,
    ) -> Result<(), CtlError> {
        let simple = if r.granted_ttl == 0 && r.ttl == -1 {
            format!("lease {} already expired\n", hex16(r.id))
        } else {
            let mut s = format!(
                "lease {} granted with TTL({}s), remaining({}s)",
                hex16(r.id),
                r.granted_ttl,
                r.ttl
            );
            if keys {
                let ks: Vec<String> = r
                    .keys
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                s.push_str(&format!(", attached keys([{}])", ks.join(" ")));
            }
            s + "\n"
        };
        self.emit_lease(
            r.header.as_ref(),
            simple,
            |s| {
                s.push_str(&format!(
                    "\"ID\" : {}\n\"TTL\" : {}\n\"GrantedTTL\" : {}\n",
                    r.id, r.ttl, r.granted_ttl
                ));
                for k in &r.keys {
                    s.push_str(&format!("\"Key\" : {}\n", quote(k)));
                }
            },
            |j| {
                j.int("id", r.id);
                j.int("ttl", r.ttl);
                j.int("granted-ttl", r.granted_ttl);
                if r.keys.is_empty() {
                    j.null("keys");
                } else {
                    j.arr("keys");
                    for k in &r.keys {
                        j.elem_bytes(k);
                    }
                    j.end_arr();
                }
            },
        )
    }

    pub fn leases(&self, r: &pb::LeaseLeasesResponse) -> Result<(), CtlError> {
        let mut simple = format!("found {} leases\n", r.leases.len());
        for l in &r.leases {
            simple.push_str(&format!("{}\n", hex16(l.id)));
        }
        self.emit_lease(
            r.header.as_ref(),
            simple,
            |s| {
                for l in &r.leases {
                    s.push_str(&format!("\"ID\" : {}\n", l.id));
                }
            },
            |j| {
                j.arr("leases");
                for l in &r.leases {
                    j.begin_obj();
                    j.int("id", l.id);
                    j.end_obj();
                }
                j.end_arr();
            },
        )
    }

    pub fn revoke(&self, id: i64, r: &pb::LeaseRevokeResponse) -> Result<(), CtlError> {
        self.emit(Shapes {
            simple: || format!("lease {} revoked\n", hex16(id)).into_bytes(),
            fields: fields_of(|s| f_hdr(s, r.header.as_ref())),
            json: json_obj(|j| j_hdr(j, "header", r.header.as_ref())),
            protobuf: wire(r),
            table: no_table as Unsupported,
        })
    }

    pub fn member_list(&self, r: &pb::MemberListResponse) -> Result<(), CtlError> {
        let fields = fields_of(|s| {
            f_hdr(s, r.header.as_ref());
            for m in &r.members {
                s.push_str(&format!("\"ID\" : {}\n", m.id));
                s.push_str(&format!("\"Name\" : {}\n", quote(m.name.as_bytes())));
                for u in &m.peer_ur_ls {
                    s.push_str(&format!("\"PeerURL\" : {}\n", quote(u.as_bytes())));
                }
                for u in &m.client_ur_ls {
                    s.push_str(&format!("\"ClientURL\" : {}\n", quote(u.as_bytes())));
                }
                s.push_str(&format!("\"IsLearner\" : {}\n\n", m.is_learner));
            }
        });
        self.emit(Shapes {
            simple: || simple_rows(&member_rows(r)).into_bytes(),
            fields,
            json: json_obj(|j| {
                j_hdr(j, "header", r.header.as_ref());
                if !r.members.is_empty() {
                    j.arr("members");
                    for m in &r.members {
                        j_member(j, m);
                    }
                    j.end_arr();
                }
            }),
            protobuf: wire(r),
            table: || Ok(table::render(&MEMBER_HEADER, &member_rows(r)).into_bytes()),
        })
    }

    /// `endpoint health` (the simple format goes to stderr, as etcdctl's does).
    pub fn endpoint_health(&self, list: &[EpHealth]) -> Result<(), CtlError> {
        if self.format == Format::Simple {
            let mut s = String::new();
            for h in list {
                if h.error.is_empty() {
                    s.push_str(&format!(
                        "{} is healthy: successfully committed proposal: took = {}\n",
                        h.ep, h.took
                    ));
                } else {
                    s.push_str(&format!(
                        "{} is unhealthy: failed to commit proposal: {}\n",
                        h.ep, h.error
                    ));
                }
            }
            err(&s);
            return Ok(());
        }
        let fields = fields_of(|s| {
            for h in list {
                s.push_str(&format!("\"Endpoint\" : {}\n", quote(h.ep.as_bytes())));
                s.push_str(&format!("\"Health\" : {}\n", h.health));
                s.push_str(&format!("\"Took\" : {}\n", h.took));
                s.push_str(&format!("\"Error\" : {}\n\n", h.error));
            }
        });
        let json = json_array(list, |j, h| {
            j.str("endpoint", &h.ep);
            j.bool("health", h.health);
            j.str("took", &h.took);
            j.str_oe("error", &h.error);
        });
        self.emit(Shapes {
            simple: Vec::new,
            fields,
            json,
            protobuf: no_protobuf as Unsupported,
            table: || {
                let t = table::render(&["endpoint", "health", "took", "error"], &health_rows(list));
                Ok(t.into_bytes())
            },
        })
    }

    pub fn endpoint_status(&self, list: &[EpStatus]) -> Result<(), CtlError> {
        let fields = fields_of(|s| {
            for st in list {
                let r = &st.resp;
                f_hdr(s, r.header.as_ref());
                s.push_str(&format!("\"Version\" : {}\n", quote(r.version.as_bytes())));
                s.push_str(&format!("\"DBSize\" : {}\n", r.db_size));
                s.push_str(&format!("\"Leader\" : {}\n", r.leader));
                s.push_str(&format!("\"IsLearner\" : {}\n", r.is_learner));
                s.push_str(&format!("\"RaftIndex\" : {}\n", r.raft_index));
                s.push_str(&format!("\"RaftTerm\" : {}\n", r.raft_term));
                s.push_str(&format!(
                    "\"RaftAppliedIndex\" : {}\n",
                    r.raft_applied_index
                ));
                s.push_str(&format!("\"Errors\" : [{}]\n", r.errors.join(" ")));
                s.push_str(&format!("\"Endpoint\" : {}\n\n", quote(st.ep.as_bytes())));
            }
        });
        let json = json_array(list, |j, st| {
            let r = &st.resp;
            j.str("Endpoint", &st.ep);
            j.obj("Status");
            j_hdr(j, "header", r.header.as_ref());
            j.str_oe("version", &r.version);
            j.int_oe("dbSize", r.db_size);
            j.int_oe("leader", r.leader);
            j.int_oe("raftIndex", r.raft_index);
            j.int_oe("raftTerm", r.raft_term);
            j.int_oe("raftAppliedIndex", r.raft_applied_index);
            j.strs_oe("errors", &r.errors);
            j.int_oe("dbSizeInUse", r.db_size_in_use);
            j.bool_oe("isLearner", r.is_learner);
            j.end_obj();
        });
        self.emit(Shapes {
            simple: || simple_rows(&status_rows(list)).into_bytes(),
            fields,
            json,
            protobuf: no_protobuf as Unsupported,
            table: || Ok(table::render(&STATUS_HEADER, &status_rows(list)).into_bytes()),
        })
    }

    pub fn endpoint_hashkv(&self, list: &[EpHashKv]) -> Result<(), CtlError> {
        let fields = fields_of(|s| {
            for h in list {
                f_hdr(s, h.resp.header.as_ref());
                s.push_str(&format!("\"Endpoint\" : {}\n", quote(h.ep.as_bytes())));
                s.push_str(&format!("\"Hash\" : {}\n\n", h.resp.hash));
            }
        });
        let json = json_array(list, |j, h| {
            j.str("Endpoint", &h.ep);
            j.obj("HashKV");
            j_hdr(j, "header", h.resp.header.as_ref());
            j.int_oe("hash", h.resp.hash);
            j.int_oe("compact_revision", h.resp.compact_revision);
            j.end_obj();
        });
        self.emit(Shapes {
            simple: || simple_rows(&hash_rows(list)).into_bytes(),
            fields,
            json,
            protobuf: no_protobuf as Unsupported,
            table: || Ok(table::render(&["endpoint", "hash"], &hash_rows(list)).into_bytes()),
        })
    }

    pub fn snapshot_status(&self, st: &super::snapshot::SnapshotStatus) -> Result<(), CtlError> {
        let row = || {
            vec![vec![
                format!("{:x}", st.hash),
                st.revision.to_string(),
                st.total_key.to_string(),
                super::gofmt::humanize_bytes(st.total_size),
            ]]
        };
        self.emit(Shapes {
            simple: || simple_rows(&row()).into_bytes(),
            fields: || {
                format!(
                    "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
                    st.hash, st.revision, st.total_key, st.total_size
                )
                .into_bytes()
            },
            json: || {
                let mut j = Json::new();
                j.begin_obj();
                j.int("hash", st.hash);
                j.int("revision", st.revision);
                j.int("totalKey", st.total_key);
                j.int("totalSize", st.total_size);
                j.end_obj();
                (j.finish() + "\n").into_bytes()
            },
            protobuf: no_protobuf as Unsupported,
            table: || {
                let header = ["hash", "revision", "total keys", "total size"];
                Ok(table::render(&header, &row()).into_bytes())
            },
        })
    }

    pub fn alarm(&self, r: &pb::AlarmResponse) -> Result<(), CtlError> {
        let simple = || {
            let mut s = String::new();
            for a in &r.alarms {
                s.push_str(&format!(
                    "memberID:{} alarm:{} \n",
                    a.member_id,
                    alarm_name(a.alarm)
                ));
            }
            s.into_bytes()
        };
        let fields = fields_of(|s| {
            f_hdr(s, r.header.as_ref());
            for a in &r.alarms {
                s.push_str(&format!(
                    "\"MemberID\" : {}\n\"AlarmType\" : {}\n\n",
                    a.member_id,
                    alarm_name(a.alarm)
                ));
            }
        });
        self.emit(Shapes {
            simple,
            fields,
            json: json_obj(|j| {
                j_hdr(j, "header", r.header.as_ref());
                if !r.alarms.is_empty() {
                    j.arr("alarms");
                    for a in &r.alarms {
                        j.begin_obj();
                        j.int_oe("memberID", a.member_id);
                        j.int_oe("alarm", a.alarm);
                        j.end_obj();
                    }
                    j.end_arr();
                }
            }),
            protobuf: wire(r),
            table: no_table as Unsupported,
        })
    }
}

/// A JSON array of objects, one per item, as one line.
fn json_array<'a, T>(
    items: &'a [T],
    each: impl Fn(&mut Json, &T) + 'a,
) -> impl FnOnce() -> Vec<u8> + 'a {
    move || {
        let mut j = Json::new();
        j.begin_arr();
        for it in items {
            j.begin_obj();
            each(&mut j, it);
            j.end_obj();
        }
        j.end_arr();
        (j.finish() + "\n").into_bytes()
    }
}

// ---- auth ------------------------------------------------------------------------------------

fn perm_type_name(t: i32) -> &'static str {
    match t {
        1 => "WRITE",
        2 => "READWRITE",
        _ => "READ",
    }
}

/// One permission's line of `role get` (simple): a key, or a range with `(prefix …)` when
/// it is one.
fn simple_perm(s: &mut Vec<u8>, p: &Permission) {
    s.push(b'\t');
    if p.range_end.is_empty() {
        s.extend_from_slice(&p.key);
        s.push(b'\n');
        return;
    }
    s.push(b'[');
    s.extend_from_slice(&p.key);
    s.extend_from_slice(b", ");
    if p.range_end.as_ref() != b"\x00" {
        s.extend_from_slice(&p.range_end);
        s.push(b')');
    } else {
        s.extend_from_slice(b"<open ended>");
    }
    if crate::client::prefix_range_end(&p.key) == p.range_end.as_ref() {
        s.extend_from_slice(b" (prefix ");
        s.extend_from_slice(&p.key);
        s.push(b')');
    }
    s.push(b'\n');
}

impl Printer {
    /// An auth reply that prints one line (simple), its header (fields and JSON) or its bytes.
    fn emit_auth(
        &self,
        simple: String,
        h: Option<&pb::ResponseHeader>,
        r: &impl Message,
    ) -> Result<(), CtlError> {
        self.emit(Shapes {
            simple: || simple.into_bytes(),
            fields: fields_of(|s| f_hdr(s, h)),
            json: json_obj(|j| j_hdr(j, "header", h)),
            protobuf: wire(r),
            table: no_table as Unsupported,
        })
    }

    pub fn role_add(&self, role: &str, r: &pb::AuthRoleAddResponse) -> Result<(), CtlError> {
        self.emit_auth(format!("Role {role} created\n"), r.header.as_ref(), r)
    }

    pub fn role_delete(&self, role: &str, r: &pb::AuthRoleDeleteResponse) -> Result<(), CtlError> {
        self.emit_auth(format!("Role {role} deleted\n"), r.header.as_ref(), r)
    }

    pub fn role_grant_permission(
        &self,
        role: &str,
        r: &pb::AuthRoleGrantPermissionResponse,
    ) -> Result<(), CtlError> {
        self.emit_auth(format!("Role {role} updated\n"), r.header.as_ref(), r)
    }

    /// `key` is the key argument as given, `end` the range end sent.
    pub fn role_revoke_permission(
        &self,
        role: &str,
        key: &str,
        end: &[u8],
        r: &pb::AuthRoleRevokePermissionResponse,
    ) -> Result<(), CtlError> {
        let simple = if end.is_empty() {
            format!("Permission of key {key} is revoked from role {role}\n")
        } else if end != b"\x00" {
            format!(
                "Permission of range [{key}, {}) is revoked from role {role}\n",
                String::from_utf8_lossy(end)
            )
        } else {
            format!("Permission of range [{key}, <open ended> is revoked from role {role}\n")
        };
        self.emit_auth(simple, r.header.as_ref(), r)
    }

    pub fn role_get(&self, role: &str, r: &pb::AuthRoleGetResponse) -> Result<(), CtlError> {
        let simple = || {
            let mut s = format!("Role {role}\nKV Read:\n").into_bytes();
            for p in r.perm.iter().filter(|p| p.perm_type != 1) {
                simple_perm(&mut s, p);
            }
            s.extend_from_slice(b"KV Write:\n");
            for p in r.perm.iter().filter(|p| p.perm_type != 0) {
                simple_perm(&mut s, p);
            }
            s
        };
        let fields = fields_of(|s| {
            f_hdr(s, r.header.as_ref());
            for p in &r.perm {
                s.push_str(&format!(
                    "\"PermType\" :  {}\n\"Key\" : {}\n\"RangeEnd\" : {}\n",
                    perm_type_name(p.perm_type),
                    quote(&p.key),
                    quote(&p.range_end)
                ));
            }
        });
        self.emit(Shapes {
            simple,
            fields,
            json: json_obj(|j| {
                j_hdr(j, "header", r.header.as_ref());
                if !r.perm.is_empty() {
                    j.arr("perm");
                    for p in &r.perm {
                        j.begin_obj();
                        j.int_oe("permType", p.perm_type);
                        j.bytes_oe("key", &p.key);
                        j.bytes_oe("range_end", &p.range_end);
                        j.end_obj();
                    }
                    j.end_arr();
                }
            }),
            protobuf: wire(r),
            table: no_table as Unsupported,
        })
    }

    pub fn role_list(&self, r: &pb::AuthRoleListResponse) -> Result<(), CtlError> {
        self.emit(Shapes {
            simple: || {
                r.roles
                    .iter()
                    .map(|x| format!("{x}\n"))
                    .collect::<String>()
                    .into_bytes()
            },
            fields: fields_of(|s| {
                f_hdr(s, r.header.as_ref());
                s.push_str("\"Roles\" :");
                for x in &r.roles {
                    s.push(' ');
                    s.push_str(&quote(x.as_bytes()));
                }
                s.push('\n');
            }),
            json: json_obj(|j| {
                j_hdr(j, "header", r.header.as_ref());
                j.strs_oe("roles", &r.roles);
            }),
            protobuf: wire(r),
            table: no_table as Unsupported,
        })
    }

    pub fn user_add(&self, user: &str, r: &pb::AuthUserAddResponse) -> Result<(), CtlError> {
        self.emit_auth(format!("User {user} created\n"), r.header.as_ref(), r)
    }

    pub fn user_delete(&self, user: &str, r: &pb::AuthUserDeleteResponse) -> Result<(), CtlError> {
        self.emit_auth(format!("User {user} deleted\n"), r.header.as_ref(), r)
    }

    pub fn user_change_password(
        &self,
        r: &pb::AuthUserChangePasswordResponse,
    ) -> Result<(), CtlError> {
        self.emit_auth("Password updated\n".into(), r.header.as_ref(), r)
    }

    pub fn user_grant_role(
        &self,
        user: &str,
        role: &str,
        r: &pb::AuthUserGrantRoleResponse,
    ) -> Result<(), CtlError> {
        let simple = format!("Role {role} is granted to user {user}\n");
        self.emit_auth(simple, r.header.as_ref(), r)
    }

    pub fn user_revoke_role(
        &self,
        user: &str,
        role: &str,
        r: &pb::AuthUserRevokeRoleResponse,
    ) -> Result<(), CtlError> {
        let simple = format!("Role {role} is revoked from user {user}\n");
        self.emit_auth(simple, r.header.as_ref(), r)
    }

    /// etcdctl's fields printer has no user get or user list.
    pub fn user_get(&self, user: &str, r: &pb::AuthUserGetResponse) -> Result<(), CtlError> {
        self.fields_unsupported()?;
        self.emit(Shapes {
            simple: || {
                let mut s = format!("User: {user}\nRoles:");
                for x in &r.roles {
                    s.push(' ');
                    s.push_str(x);
                }
                s.push('\n');
                s.into_bytes()
            },
            fields: Vec::new,
            json: json_obj(|j| {
                j_hdr(j, "header", r.header.as_ref());
                j.strs_oe("roles", &r.roles);
            }),
            protobuf: wire(r),
            table: no_table as Unsupported,
        })
    }

    pub fn user_list(&self, r: &pb::AuthUserListResponse) -> Result<(), CtlError> {
        self.fields_unsupported()?;
        self.emit(Shapes {
            simple: || {
                r.users
                    .iter()
                    .map(|x| format!("{x}\n"))
                    .collect::<String>()
                    .into_bytes()
            },
            fields: Vec::new,
            json: json_obj(|j| {
                j_hdr(j, "header", r.header.as_ref());
                j.strs_oe("users", &r.users);
            }),
            protobuf: wire(r),
            table: no_table as Unsupported,
        })
    }

    fn fields_unsupported(&self) -> Result<(), CtlError> {
        if self.format == Format::Fields {
            return Err(unsupported(Format::Fields));
        }
        Ok(())
    }
}
