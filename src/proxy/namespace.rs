//! --namespace: every key a client names is prefixed on the way up, every key the cluster
//! returns is stripped on the way down, as etcd's `clientv3/namespace` does for its proxy.
//!
//! A client cannot leave its namespace: a key becomes prefix+key, and a range end becomes
//! prefix+end, or the prefix's own end for "\0" (etcd's "every key from here"), so every range
//! lies inside [prefix, prefix's end). Unlike etcd's proxy, whose Lock and Election services
//! bypass the namespace, lock names and election names are namespaced too. Compaction, leases
//! and auth are cluster-wide: a namespace does not split them (as in etcd).

use bytes::Bytes;
use prost::Message;

use crate::api::decode;
use crate::net::grpc::{encode_message, Status};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::KeyValue;
use crate::proto::{path, v3electionpb as el, v3lockpb as lk};

pub struct Namespace {
    prefix: Vec<u8>,
}

/// Calls whose messages name keys (besides Range, Put, DeleteRange and Txn).
pub fn touches_keys(p: &str) -> bool {
    matches!(
        p,
        path::LOCK
            | path::UNLOCK
            | path::CAMPAIGN
            | path::PROCLAIM
            | path::LEADER
            | path::OBSERVE
            | path::RESIGN
            | path::LEASE_TIME_TO_LIVE
    )
}

fn empty_key() -> Status {
    Status::invalid_argument("etcdserver: key is not provided")
}

/// Encodes `m` as a message body (without the gRPC prefix).
pub fn body(m: &impl Message) -> Bytes {
    let framed = encode_message(m);
    framed.slice(crate::net::grpc::PREFIX_LEN..)
}

impl Namespace {
    pub fn new(prefix: &[u8]) -> Namespace {
        Namespace {
            prefix: prefix.to_vec(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.prefix.is_empty()
    }

    pub fn key(&self, key: &[u8]) -> Bytes {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k.into()
    }

    /// etcd's prefixInterval: a key and range end inside the namespace.
    pub fn interval(&self, key: &[u8], end: &[u8]) -> (Bytes, Bytes) {
        let k = self.key(key);
        let e = if end == [0] {
            crate::recipes::prefix_range_end(&self.prefix).into()
        } else if end.is_empty() {
            Bytes::new()
        } else {
            self.key(end)
        };
        (k, e)
    }

    /// A key from the cluster, without the prefix. Every key the proxy asked for lies inside
    /// the namespace, so every key it gets back does.
    pub fn strip(&self, key: &mut Bytes) {
        debug_assert!(
            key.starts_with(&self.prefix),
            "a key outside the namespace came back"
        );
        if key.starts_with(&self.prefix) {
            let _ = key.split_to(self.prefix.len());
        }
    }

    pub fn strip_kv(&self, kv: &mut KeyValue) {
        self.strip(&mut kv.key);
    }

    /// A range request as the namespace sends it up. An empty key means no key, unless the
    /// range is "every key" (etcd's namespace refuses it before the prefix would hide it).
    pub fn range(&self, r: &mut pb::RangeRequest) -> Result<(), Status> {
        if r.key.is_empty() && r.range_end.as_ref() != [0] {
            return Err(empty_key());
        }
        (r.key, r.range_end) = self.interval(&r.key, &r.range_end);
        Ok(())
    }

    fn put(&self, r: &mut pb::PutRequest) -> Result<(), Status> {
        if r.key.is_empty() {
            return Err(empty_key());
        }
        r.key = self.key(&r.key);
        Ok(())
    }

    fn delete(&self, r: &mut pb::DeleteRangeRequest) -> Result<(), Status> {
        if r.key.is_empty() && r.range_end.as_ref() != [0] {
            return Err(empty_key());
        }
        (r.key, r.range_end) = self.interval(&r.key, &r.range_end);
        Ok(())
    }

    fn txn(&self, t: &mut pb::TxnRequest) -> Result<(), Status> {
        use pb::request_op::Request as Op;
        for c in &mut t.compare {
            (c.key, c.range_end) = self.interval(&c.key, &c.range_end);
        }
        for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
            match &mut op.request {
                Some(Op::RequestRange(r)) => self.range(r)?,
                Some(Op::RequestPut(r)) => self.put(r)?,
                Some(Op::RequestDeleteRange(r)) => self.delete(r)?,
                Some(Op::RequestTxn(r)) => self.txn(r)?,
                None => {}
            }
        }
        Ok(())
    }

    fn txn_response(&self, t: &mut pb::TxnResponse) {
        use pb::response_op::Response as Op;
        for r in &mut t.responses {
            match &mut r.response {
                Some(Op::ResponseRange(r)) => r.kvs.iter_mut().for_each(|kv| self.strip_kv(kv)),
                Some(Op::ResponsePut(r)) => r.prev_kv.iter_mut().for_each(|kv| self.strip_kv(kv)),
                Some(Op::ResponseDeleteRange(r)) => {
                    r.prev_kvs.iter_mut().for_each(|kv| self.strip_kv(kv))
                }
                Some(Op::ResponseTxn(t)) => self.txn_response(t),
                None => {}
            }
        }
    }

    fn leader_key(&self, l: &mut Option<el::LeaderKey>, up: bool) {
        if let Some(l) = l {
            if up {
                l.name = self.key(&l.name);
                l.key = self.key(&l.key);
            } else {
                self.strip(&mut l.name);
                self.strip(&mut l.key);
            }
        }
    }

    /// A client's request message for call `p`, as it goes up.
    pub fn request(&self, p: &str, msg: Bytes) -> Result<Bytes, Status> {
        if self.is_empty() {
            return Ok(msg);
        }
        Ok(match p {
            path::RANGE => {
                let mut r: pb::RangeRequest = decode(&msg)?;
                self.range(&mut r)?;
                body(&r)
            }
            path::PUT => {
                let mut r: pb::PutRequest = decode(&msg)?;
                self.put(&mut r)?;
                body(&r)
            }
            path::DELETE_RANGE => {
                let mut r: pb::DeleteRangeRequest = decode(&msg)?;
                self.delete(&mut r)?;
                body(&r)
            }
            path::TXN => {
                let mut r: pb::TxnRequest = decode(&msg)?;
                self.txn(&mut r)?;
                body(&r)
            }
            path::LOCK => {
                let mut r: lk::LockRequest = decode(&msg)?;
                r.name = self.key(&r.name);
                body(&r)
            }
            path::UNLOCK => {
                let mut r: lk::UnlockRequest = decode(&msg)?;
                r.key = self.key(&r.key);
                body(&r)
            }
            path::CAMPAIGN => {
                let mut r: el::CampaignRequest = decode(&msg)?;
                r.name = self.key(&r.name);
                body(&r)
            }
            path::PROCLAIM => {
                let mut r: el::ProclaimRequest = decode(&msg)?;
                self.leader_key(&mut r.leader, true);
                body(&r)
            }
            path::LEADER | path::OBSERVE => {
                let mut r: el::LeaderRequest = decode(&msg)?;
                r.name = self.key(&r.name);
                body(&r)
            }
            path::RESIGN => {
                let mut r: el::ResignRequest = decode(&msg)?;
                self.leader_key(&mut r.leader, true);
                body(&r)
            }
            _ => msg,
        })
    }

    /// The cluster's reply message for call `p`, as it goes down.
    pub fn response(&self, p: &str, msg: Bytes) -> Result<Bytes, Status> {
        if self.is_empty() {
            return Ok(msg);
        }
        Ok(match p {
            path::RANGE => {
                let mut r: pb::RangeResponse = decode(&msg)?;
                r.kvs.iter_mut().for_each(|kv| self.strip_kv(kv));
                body(&r)
            }
            path::PUT => {
                let mut r: pb::PutResponse = decode(&msg)?;
                r.prev_kv.iter_mut().for_each(|kv| self.strip_kv(kv));
                body(&r)
            }
            path::DELETE_RANGE => {
                let mut r: pb::DeleteRangeResponse = decode(&msg)?;
                r.prev_kvs.iter_mut().for_each(|kv| self.strip_kv(kv));
                body(&r)
            }
            path::TXN => {
                let mut r: pb::TxnResponse = decode(&msg)?;
                self.txn_response(&mut r);
                body(&r)
            }
            path::LOCK => {
                let mut r: lk::LockResponse = decode(&msg)?;
                self.strip(&mut r.key);
                body(&r)
            }
            path::CAMPAIGN => {
                let mut r: el::CampaignResponse = decode(&msg)?;
                self.leader_key(&mut r.leader, false);
                body(&r)
            }
            path::LEADER | path::OBSERVE => {
                let mut r: el::LeaderResponse = decode(&msg)?;
                r.kv.iter_mut().for_each(|kv| self.strip_kv(kv));
                body(&r)
            }
            path::LEASE_TIME_TO_LIVE => {
                // A lease is cluster-wide: only its keys inside the namespace are shown.
                let mut r: pb::LeaseTimeToLiveResponse = decode(&msg)?;
                r.keys.retain(|k| k.starts_with(&self.prefix));
                for k in &mut r.keys {
                    self.strip(k);
                }
                body(&r)
            }
            _ => msg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stay_inside_the_namespace() {
        let ns = Namespace::new(b"/t/");
        assert_eq!(ns.interval(b"a", b""), ("/t/a".into(), Bytes::new()));
        assert_eq!(ns.interval(b"a", b"\0"), ("/t/a".into(), "/t0".into()));
        assert_eq!(ns.interval(b"", b"\0"), ("/t/".into(), "/t0".into()));
        assert_eq!(
            ns.interval(b"a", b"\xff"),
            ("/t/a".into(), Bytes::from_static(b"/t/\xff"))
        );
        let all = Namespace::new(b"\xff");
        assert_eq!(all.interval(b"", b"\0").1, Bytes::from_static(b"\0"));
        let mut r = pb::RangeRequest::default();
        assert!(ns.range(&mut r).is_err(), "an empty key is no key");
    }
}
