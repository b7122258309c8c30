//! The Cluster service through the proxy, by etcd 3.4's clusterProxy rules. MemberList:
//!
//! - --advertise-client-url empty: passed on to the cluster.
//! - --advertise-client-url and --resolver-prefix set: the proxies registered under the prefix
//!   (as [`super::register`] writes them), each a member with the name of its metadata and its
//!   address as client URL (no ID, no peer URLs, no header); until one has been seen, as below.
//! - --advertise-client-url set, no prefix: this proxy alone, named by the host's name.
//!
//! Members leave the list when their key goes (lease expired or revoked): etcd 3.4 before
//! 3.4.32 kept them, keyed by address while deletes carry none (etcd-io/etcd#17887; fixed by
//! keying by the key, as here). MemberPromote is refused as etcd's proxy refuses it; the other
//! calls are passed on.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use crate::client::{concurrency::watch_until, prefix_range_end, Client};
use crate::net::grpc::{Code, Status};
use crate::proto::etcdserverpb as pb;

/// A registered proxy: its address and the metadata it registered with.
#[derive(Clone, Debug)]
struct Endpoint {
    addr: String,
    metadata: serde_json::Value,
}

/// What MemberList answers from.
pub struct Members {
    advertise: String,
    /// The registrations' prefix (under --namespace), with --resolver-prefix.
    prefix: Option<String>,
    /// Registered proxies by key, as last seen under the prefix.
    seen: RefCell<BTreeMap<Bytes, Endpoint>>,
}

impl Members {
    /// With both an advertised URL and a prefix, the prefix is watched from now on.
    pub fn new(upstream: &Client, advertise: &str, prefix: Option<String>) -> Rc<Members> {
        let m = Rc::new(Members {
            advertise: advertise.to_string(),
            prefix,
            seen: RefCell::new(BTreeMap::new()),
        });
        if !advertise.is_empty() && m.prefix.is_some() {
            glommio::spawn_local(follow(upstream.clone(), Rc::downgrade(&m))).detach();
        }
        m
    }

    /// MemberList's answer; None when it goes to the cluster.
    pub fn list(&self) -> Option<Result<Bytes, Status>> {
        if self.advertise.is_empty() {
            return None;
        }
        let seen = self.seen.borrow();
        let members = if self.prefix.is_none() || seen.is_empty() {
            vec![pb::Member {
                name: super::register::hostname(),
                client_ur_ls: vec![self.advertise.clone()],
                ..Default::default()
            }]
        } else {
            let mut members = Vec::with_capacity(seen.len());
            for e in seen.values() {
                members.push(pb::Member {
                    name: match name_of(&e.metadata) {
                        Ok(name) => name,
                        Err(status) => return Some(Err(status)),
                    },
                    client_ur_ls: vec![e.addr.clone()],
                    ..Default::default()
                });
            }
            members
        };
        let reply = pb::MemberListResponse {
            header: None,
            members,
        };
        Some(Ok(reply.encode_to_vec().into()))
    }

    /// A key under the prefix was put (None: deleted).
    fn update(&self, key: &Bytes, value: Option<&[u8]>) {
        let mut seen = self.seen.borrow_mut();
        match value {
            None => {
                seen.remove(key);
            }
            Some(v) => match serde_json::from_slice::<serde_json::Value>(v) {
                Ok(u) => {
                    let addr = u["Addr"].as_str().unwrap_or_default().to_string();
                    let metadata = u.get("Metadata").cloned().unwrap_or_default();
                    seen.insert(key.clone(), Endpoint { addr, metadata });
                }
                Err(e) => tracing::warn!("unmarshal endpoint update failed: {key:?}: {e}"),
            },
        }
    }
}

/// The name in a proxy's metadata (etcd decodes the metadata printed as a string: a JSON
/// object in a string, as proxies register it; anything else fails the call, as etcd's).
fn name_of(metadata: &serde_json::Value) -> Result<String, Status> {
    let text = match metadata {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(default)]
        name: String,
    }
    serde_json::from_str::<Meta>(&text)
        .map(|m| m.name)
        .map_err(|e| Status::new(Code::Unknown, e.to_string()))
}

/// Reads the prefix, then follows its changes; after a failure, again (at most once a second,
/// as etcd's proxy). What was seen is kept meanwhile.
async fn follow(client: Client, members: std::rc::Weak<Members>) {
    let mut last = None::<Instant>;
    loop {
        if let Some(t) = last {
            glommio::timer::sleep(Duration::from_secs(1).saturating_sub(t.elapsed())).await;
        }
        last = Some(Instant::now());
        let Some(m) = members.upgrade() else { return };
        let prefix = m.prefix.clone().unwrap_or_default().into_bytes();
        let end = prefix_range_end(&prefix);
        drop(m);
        let got = client
            .range(pb::RangeRequest {
                key: prefix.clone().into(),
                range_end: end.clone().into(),
                serializable: true,
                ..Default::default()
            })
            .await;
        let r = match got {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    "failed to resolve {:?} ({e})",
                    String::from_utf8_lossy(&prefix)
                );
                continue;
            }
        };
        let Some(m) = members.upgrade() else { return };
        for kv in &r.kvs {
            m.update(&kv.key, Some(&kv.value));
        }
        drop(m);
        let rev = r.header.map_or(0, |h| h.revision) + 1;
        let watched = watch_until(&client, &prefix, &end, rev, |resp| {
            let Some(m) = members.upgrade() else {
                return true;
            };
            for e in &resp.events {
                let Some(kv) = &e.kv else { continue };
                let put = e.r#type == crate::proto::mvccpb::event::EventType::Put as i32;
                m.update(&kv.key, put.then_some(&kv.value[..]));
            }
            false
        })
        .await;
        if let Err(e) = watched {
            tracing::warn!(
                "watching endpoints under {:?}: {e}",
                String::from_utf8_lossy(&prefix)
            );
        }
    }
}
