//! The JSON mapping of each method's request and reply. The serde impls come from
//! pbjson-build (build.rs): proto3 JSON with the proto field names (`create_revision`,
//! `dbSize`, `ID`), 64-bit integers as strings, bytes as base64, enums by name, default
//! values left out; unknown fields are ignored, as etcd's gateway ignores them.

use bytes::Bytes;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::auth::AuthMethod;
use crate::api::{Streaming, Unary};
use crate::net::grpc::{Code, Status};
use crate::proto::etcdserverpb as pb;
use crate::proto::v3electionpb as epb;
use crate::proto::v3lockpb as lockpb;

/// Converts one method's messages.
#[derive(Clone, Copy)]
pub(super) struct Codec {
    /// A JSON request body to the encoded protobuf request.
    pub request: fn(&[u8]) -> Result<Bytes, Status>,
    /// The next JSON request of a stream's body, if a whole one is buffered.
    pub next_request: fn(&[u8]) -> Next,
    /// An encoded protobuf reply to JSON.
    pub response: fn(&[u8]) -> Result<Vec<u8>, Status>,
}

/// What the buffered start of a stream's body holds.
pub(super) enum Next {
    /// An encoded request and how many bytes of the body it took.
    Request(Bytes, usize),
    /// Nothing complete yet (or only white space).
    Incomplete,
    Bad(Status),
}

fn codec<Req, Resp>() -> Codec
where
    Req: DeserializeOwned + Message + Default,
    Resp: Serialize + Message + Default,
{
    Codec {
        request: request::<Req>,
        next_request: next_request::<Req>,
        response: response::<Resp>,
    }
}

pub(super) fn codec_of(method: Unary) -> Codec {
    use crate::proto::health;
    match method {
        Unary::Range => codec::<pb::RangeRequest, pb::RangeResponse>(),
        Unary::Put => codec::<pb::PutRequest, pb::PutResponse>(),
        Unary::DeleteRange => codec::<pb::DeleteRangeRequest, pb::DeleteRangeResponse>(),
        Unary::Txn => codec::<pb::TxnRequest, pb::TxnResponse>(),
        Unary::Compact => codec::<pb::CompactionRequest, pb::CompactionResponse>(),
        Unary::LeaseGrant => codec::<pb::LeaseGrantRequest, pb::LeaseGrantResponse>(),
        Unary::LeaseRevoke => codec::<pb::LeaseRevokeRequest, pb::LeaseRevokeResponse>(),
        Unary::LeaseTimeToLive => {
            codec::<pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse>()
        }
        Unary::LeaseLeases => codec::<pb::LeaseLeasesRequest, pb::LeaseLeasesResponse>(),
        Unary::MemberList => codec::<pb::MemberListRequest, pb::MemberListResponse>(),
        Unary::Status => codec::<pb::StatusRequest, pb::StatusResponse>(),
        Unary::MemberAdd => codec::<pb::MemberAddRequest, pb::MemberAddResponse>(),
        Unary::MemberRemove => codec::<pb::MemberRemoveRequest, pb::MemberRemoveResponse>(),
        Unary::MemberUpdate => codec::<pb::MemberUpdateRequest, pb::MemberUpdateResponse>(),
        Unary::MemberPromote => codec::<pb::MemberPromoteRequest, pb::MemberPromoteResponse>(),
        Unary::Alarm => codec::<pb::AlarmRequest, pb::AlarmResponse>(),
        Unary::HashKv => codec::<pb::HashKvRequest, pb::HashKvResponse>(),
        Unary::Hash => codec::<pb::HashRequest, pb::HashResponse>(),
        Unary::Defragment => codec::<pb::DefragmentRequest, pb::DefragmentResponse>(),
        Unary::MoveLeader => codec::<pb::MoveLeaderRequest, pb::MoveLeaderResponse>(),
        Unary::Auth(m) => auth_codec(m),
        Unary::Lock => codec::<lockpb::LockRequest, lockpb::LockResponse>(),
        Unary::Unlock => codec::<lockpb::UnlockRequest, lockpb::UnlockResponse>(),
        Unary::Campaign => codec::<epb::CampaignRequest, epb::CampaignResponse>(),
        Unary::Proclaim => codec::<epb::ProclaimRequest, epb::ProclaimResponse>(),
        Unary::Leader => codec::<epb::LeaderRequest, epb::LeaderResponse>(),
        Unary::Resign => codec::<epb::ResignRequest, epb::ResignResponse>(),
        // The health service has no gateway path; its messages have no JSON mapping here.
        Unary::HealthCheck => Codec {
            request: |_| Ok(health::HealthCheckRequest::default().encode_to_vec().into()),
            next_request: |_| Next::Incomplete,
            response: |_| Ok(b"{}".to_vec()),
        },
    }
}

fn auth_codec(method: AuthMethod) -> Codec {
    use AuthMethod as M;
    match method {
        M::AuthEnable => codec::<pb::AuthEnableRequest, pb::AuthEnableResponse>(),
        M::AuthDisable => codec::<pb::AuthDisableRequest, pb::AuthDisableResponse>(),
        M::Authenticate => codec::<pb::AuthenticateRequest, pb::AuthenticateResponse>(),
        M::UserAdd => codec::<pb::AuthUserAddRequest, pb::AuthUserAddResponse>(),
        M::UserGet => codec::<pb::AuthUserGetRequest, pb::AuthUserGetResponse>(),
        M::UserList => codec::<pb::AuthUserListRequest, pb::AuthUserListResponse>(),
        M::UserDelete => codec::<pb::AuthUserDeleteRequest, pb::AuthUserDeleteResponse>(),
        M::UserChangePassword => {
            codec::<pb::AuthUserChangePasswordRequest, pb::AuthUserChangePasswordResponse>()
        }
        M::UserGrantRole => codec::<pb::AuthUserGrantRoleRequest, pb::AuthUserGrantRoleResponse>(),
        M::UserRevokeRole => {
            codec::<pb::AuthUserRevokeRoleRequest, pb::AuthUserRevokeRoleResponse>()
        }
        M::RoleAdd => codec::<pb::AuthRoleAddRequest, pb::AuthRoleAddResponse>(),
        M::RoleGet => codec::<pb::AuthRoleGetRequest, pb::AuthRoleGetResponse>(),
        M::RoleList => codec::<pb::AuthRoleListRequest, pb::AuthRoleListResponse>(),
        M::RoleDelete => codec::<pb::AuthRoleDeleteRequest, pb::AuthRoleDeleteResponse>(),
        M::RoleGrantPermission => {
            codec::<pb::AuthRoleGrantPermissionRequest, pb::AuthRoleGrantPermissionResponse>()
        }
        M::RoleRevokePermission => {
            codec::<pb::AuthRoleRevokePermissionRequest, pb::AuthRoleRevokePermissionResponse>()
        }
    }
}

pub(super) fn stream_codec(method: Streaming) -> Codec {
    match method {
        Streaming::Watch => codec::<pb::WatchRequest, pb::WatchResponse>(),
        Streaming::LeaseKeepAlive => {
            codec::<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse>()
        }
        Streaming::Observe => codec::<epb::LeaderRequest, epb::LeaderResponse>(),
        Streaming::Snapshot => codec::<pb::SnapshotRequest, pb::SnapshotResponse>(),
    }
}

/// Decodes a unary body as etcd's gateway does: the first JSON value only (what follows it is
/// not read), and an empty body or `null` is the empty request.
fn request<M: DeserializeOwned + Message + Default>(body: &[u8]) -> Result<Bytes, Status> {
    let start = body.trim_ascii_start();
    let msg = if start.is_empty() || start.starts_with(b"null") {
        M::default()
    } else {
        match serde_json::Deserializer::from_slice(body)
            .into_iter::<M>()
            .next()
        {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(Status::invalid_argument(e.to_string())),
            None => M::default(),
        }
    };
    Ok(msg.encode_to_vec().into())
}

fn next_request<M: DeserializeOwned + Message + Default>(buf: &[u8]) -> Next {
    let mut values = serde_json::Deserializer::from_slice(buf).into_iter::<M>();
    match values.next() {
        Some(Ok(m)) => Next::Request(m.encode_to_vec().into(), values.byte_offset()),
        Some(Err(e)) if e.is_eof() => Next::Incomplete,
        Some(Err(e)) => Next::Bad(Status::new(Code::Unknown, e.to_string())),
        None => Next::Incomplete,
    }
}

fn response<M: Serialize + Message + Default>(proto: &[u8]) -> Result<Vec<u8>, Status> {
    let msg = M::decode(proto).map_err(|e| Status::internal(e.to_string()))?;
    serde_json::to_vec(&msg).map_err(|e| Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_use_etcds_field_names_and_string_integers() {
        let resp = pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 3,
                raft_term: 0,
            }),
            kvs: vec![crate::proto::mvccpb::KeyValue {
                key: Bytes::from_static(b"foo"),
                create_revision: 2,
                ..Default::default()
            }],
            more: false,
            count: 1,
        };
        let json = response::<pb::RangeResponse>(&resp.encode_to_vec()).unwrap();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"3"},"kvs":[{"key":"Zm9v","create_revision":"2"}],"count":"1"}"#
        );
    }

    #[test]
    fn requests_take_the_first_value_and_ignore_unknown_fields() {
        let bytes =
            request::<pb::RangeRequest>(br#"{"key":"Zm9v","bogus":1,"limit":5} {"x"#).unwrap();
        let r = pb::RangeRequest::decode(bytes).unwrap();
        assert_eq!(&r.key[..], b"foo");
        assert_eq!(r.limit, 5);
        assert!(request::<pb::RangeRequest>(b"").is_ok());
        let e = request::<pb::RangeRequest>(br#"{"key":5}"#).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
    }

    #[test]
    fn stream_requests_are_cut_from_a_growing_body() {
        let body = br#"{"ID":"5"} {"ID":6}"#;
        match next_request::<pb::LeaseKeepAliveRequest>(&body[..7]) {
            Next::Incomplete => {}
            _ => panic!("half a value is incomplete"),
        }
        match next_request::<pb::LeaseKeepAliveRequest>(body) {
            Next::Request(b, used) => {
                assert_eq!(pb::LeaseKeepAliveRequest::decode(b).unwrap().id, 5);
                assert_eq!(used, 10);
            }
            _ => panic!("a whole value is a request"),
        }
    }
}
