//! What crosses between the network executors and the consensus core.

use crate::auth::store::{AuthResponse, PasswordCheck};
use crate::mvcc::is_txn_readonly;
use crate::net::grpc::Status;
use crate::proto::corekvpb::{raft_request, AuthHeader, RaftRequest};
use crate::proto::etcdserverpb as pb;

/// Where a reply goes: the network executor that sent the request and its slot there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyTo {
    pub executor: u16,
    pub token: u64,
}

/// A client request, decoded and validated by a network executor.
#[derive(Debug)]
pub enum Request {
    Range(pb::RangeRequest),
    Put(pb::PutRequest),
    DeleteRange(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
    LeaseGrant(pb::LeaseGrantRequest),
    LeaseRevoke(pb::LeaseRevokeRequest),
    LeaseKeepAlive(pb::LeaseKeepAliveRequest),
    LeaseTimeToLive(pb::LeaseTimeToLiveRequest),
    LeaseLeases(pb::LeaseLeasesRequest),
    Status(pb::StatusRequest),
    MemberList(pb::MemberListRequest),
    MemberAdd(MemberAdd),
    MemberRemove(pb::MemberRemoveRequest),
    MemberUpdate(pb::MemberUpdateRequest),
    MemberPromote(pb::MemberPromoteRequest),
    Alarm(pb::AlarmRequest),
    HashKv(pb::HashKvRequest),
    Defragment(pb::DefragmentRequest),
    MoveLeader(pb::MoveLeaderRequest),
    Hash(pb::HashRequest),
    /// Maintenance.Snapshot: answered with a copy of the backend that holds every write
    /// applied when the request arrived.
    Snapshot(pb::SnapshotRequest),
    /// A command from a watch stream; its answers come back as [`WatchDelivery`]s.
    Watch {
        stream: u64,
        command: WatchCommand,
    },
    /// An Auth service call in the form it is proposed in (passwords already hashed).
    Auth(raft_request::Request),
    /// Authenticate's first step: the user's password hash at the current auth revision,
    /// read linearizably, for a check off the core.
    PasswordCheck(String),
    /// A client's request with who sent it: a write carries the header through raft and is
    /// checked at apply, as etcd checks writes.
    AsUser(AuthHeader, Box<Request>),
}

/// A MemberAdd, with the time it was asked at: etcd derives the new member's ID from its peer
/// URLs and the time, and the consensus core reads no clock.
#[derive(Debug)]
pub struct MemberAdd {
    pub request: pb::MemberAddRequest,
    pub unix_time: i64,
}

/// What a watch stream asks of the core's watch hub. Nothing is answered by token: every
/// answer, events included, travels as a [`WatchDelivery`] in one ordered channel.
#[derive(Debug)]
pub enum WatchCommand {
    Create(pb::WatchCreateRequest),
    /// A create the stream refused (the caller may not read the range): answered with
    /// created and canceled, and this reason, as etcd answers it.
    Refuse(String),
    Cancel(i64),
    Progress,
    /// The stream wants this watcher's events from `from_rev` on, from history: it dropped
    /// live events while its client was slow, or it consumed a catch-up chunk.
    Resync {
        watch_id: i64,
        from_rev: i64,
    },
    /// The client went away.
    Close,
}

/// How a watch stream treats a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    /// created / canceled / progress: always sent.
    Control,
    /// Events as they are applied; a stream whose client lags may drop them and resync.
    Live,
    /// Events from history; `next_rev` is where the following chunk starts.
    CatchUp { next_rev: i64 },
    /// The last history chunk: live events follow.
    CaughtUp,
}

/// One response for one watch stream.
#[derive(Debug)]
pub struct WatchDelivery {
    pub stream: u64,
    pub kind: DeliveryKind,
    /// The watcher asked for large responses to be split (the stream splits them).
    pub fragment: bool,
    pub response: pb::WatchResponse,
}

/// The answer to a [`Request`].
#[derive(Debug)]
pub enum Response {
    Range(pb::RangeResponse),
    Put(pb::PutResponse),
    DeleteRange(pb::DeleteRangeResponse),
    Txn(pb::TxnResponse),
    Compact(pb::CompactionResponse),
    LeaseGrant(pb::LeaseGrantResponse),
    LeaseRevoke(pb::LeaseRevokeResponse),
    LeaseKeepAlive(pb::LeaseKeepAliveResponse),
    LeaseTimeToLive(pb::LeaseTimeToLiveResponse),
    LeaseLeases(pb::LeaseLeasesResponse),
    Status(pb::StatusResponse),
    MemberList(pb::MemberListResponse),
    MemberAdd(pb::MemberAddResponse),
    MemberRemove(pb::MemberRemoveResponse),
    MemberUpdate(pb::MemberUpdateResponse),
    MemberPromote(pb::MemberPromoteResponse),
    Alarm(pb::AlarmResponse),
    HashKv(pb::HashKvResponse),
    Defragment(pb::DefragmentResponse),
    MoveLeader(pb::MoveLeaderResponse),
    Hash(pb::HashResponse),
    Snapshot(BackendCopy),
    Auth(AuthResponse),
    PasswordCheck(PasswordCheck),
}

/// A consistent copy of the backend, read while writes go on, with the header of the member
/// that took it.
pub struct BackendCopy {
    pub header: Option<pb::ResponseHeader>,
    pub data: crate::storage::Snapshot,
}

impl std::fmt::Debug for BackendCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackendCopy({} bytes)", self.data.len())
    }
}

pub type Reply = Result<Response, Status>;

/// How the consensus core must serve a request.
pub enum Kind {
    /// Goes through the raft log.
    Write(RaftRequest),
    /// A read that must observe every write acknowledged before it arrived (ReadIndex).
    LinearizableRead(Request),
    /// Served from local state at once.
    LocalRead(Request),
    /// Served by the leader's state (lease expiry lives there); forwarded by a follower.
    LeaderOnly(Request),
    /// For the watch hub.
    Watch { stream: u64, command: WatchCommand },
    /// Work on the backend file the driver runs off the consensus core (a defragment, a
    /// snapshot for a client), answered when done.
    ByDriver,
    /// A membership change (MemberAdd, MemberRemove, MemberUpdate, MemberPromote).
    Membership(Request),
}

impl Request {
    pub fn kind(self) -> Kind {
        use raft_request::Request as R;
        let write = |r| {
            Kind::Write(RaftRequest {
                auth: None,
                request: Some(r),
            })
        };
        match self {
            Request::Put(r) => write(R::Put(r)),
            Request::DeleteRange(r) => write(R::DeleteRange(r)),
            // etcd's rule: only a txn of plain ranges is a read (a nested txn goes to raft).
            Request::Txn(r) if !is_txn_readonly(&r) => write(R::Txn(r)),
            Request::Txn(r) if is_serializable_txn(&r) => Kind::LocalRead(Request::Txn(r)),
            Request::Compact(r) => write(R::Compaction(r)),
            Request::LeaseGrant(r) => write(R::LeaseGrant(r)),
            Request::LeaseRevoke(r) => write(R::LeaseRevoke(r)),
            Request::Range(r) if r.serializable => Kind::LocalRead(Request::Range(r)),
            r @ (Request::LeaseKeepAlive(_) | Request::LeaseTimeToLive(_)) => Kind::LeaderOnly(r),
            r @ (Request::Status(_) | Request::MemberList(_)) => Kind::LocalRead(r),
            Request::Watch { stream, command } => Kind::Watch { stream, command },
            Request::Defragment(_) | Request::Snapshot(_) => Kind::ByDriver,
            // Alarm GET reads the applied alarms; ACTIVATE and DEACTIVATE go through raft.
            Request::Alarm(a) if a.action != pb::alarm_request::AlarmAction::Get as i32 => {
                write(R::Alarm(a))
            }
            r @ (Request::Alarm(_)
            | Request::HashKv(_)
            | Request::Hash(_)
            | Request::MoveLeader(_)) => Kind::LocalRead(r),
            r @ (Request::MemberAdd(_)
            | Request::MemberRemove(_)
            | Request::MemberUpdate(_)
            | Request::MemberPromote(_)) => Kind::Membership(r),
            Request::Auth(r) => write(r),
            Request::AsUser(header, inner) => match inner.kind() {
                Kind::Write(mut w) => {
                    w.auth = Some(header);
                    Kind::Write(w)
                }
                other => other,
            },
            r => Kind::LinearizableRead(r),
        }
    }

    /// The metric label of this request's RPC.
    pub fn method(&self) -> &'static str {
        match self {
            Request::Range(_) => "Range",
            Request::Put(_) => "Put",
            Request::DeleteRange(_) => "DeleteRange",
            Request::Txn(_) => "Txn",
            Request::Compact(_) => "Compact",
            Request::LeaseGrant(_) => "LeaseGrant",
            Request::LeaseRevoke(_) => "LeaseRevoke",
            Request::LeaseKeepAlive(_) => "LeaseKeepAlive",
            Request::LeaseTimeToLive(_) => "LeaseTimeToLive",
            Request::LeaseLeases(_) => "LeaseLeases",
            Request::Status(_) => "Status",
            Request::MemberList(_) => "MemberList",
            Request::Watch { .. } => "Watch",
            Request::MemberAdd(_) => "MemberAdd",
            Request::MemberRemove(_) => "MemberRemove",
            Request::MemberUpdate(_) => "MemberUpdate",
            Request::MemberPromote(_) => "MemberPromote",
            Request::Alarm(_) => "Alarm",
            Request::HashKv(_) => "HashKV",
            Request::Defragment(_) => "Defragment",
            Request::MoveLeader(_) => "MoveLeader",
            Request::Hash(_) => "Hash",
            Request::Snapshot(_) => "Snapshot",
            Request::Auth(r) => auth_method(r),
            Request::PasswordCheck(_) => "Authenticate",
            Request::AsUser(_, inner) => inner.method(),
        }
    }
}

/// The Auth service method a raft request comes from.
fn auth_method(r: &raft_request::Request) -> &'static str {
    use raft_request::Request as R;
    match r {
        R::AuthEnable(_) => "AuthEnable",
        R::AuthDisable(_) => "AuthDisable",
        R::UserAdd(_) => "UserAdd",
        R::UserDelete(_) => "UserDelete",
        R::UserChangePassword(_) => "UserChangePassword",
        R::UserGrantRole(_) => "UserGrantRole",
        R::UserRevokeRole(_) => "UserRevokeRole",
        R::RoleAdd(_) => "RoleAdd",
        R::RoleDelete(_) => "RoleDelete",
        R::RoleGrantPermission(_) => "RoleGrantPermission",
        R::RoleRevokePermission(_) => "RoleRevokePermission",
        R::UserGet(_) => "UserGet",
        R::UserList(_) => "UserList",
        R::RoleGet(_) => "RoleGet",
        R::RoleList(_) => "RoleList",
        R::Authenticate(_) => "Authenticate",
        R::Alarm(_) => "Alarm",
        _ => "Internal",
    }
}

/// A read-only txn whose every range is serializable is served locally, like etcd's
/// isTxnSerializable.
fn is_serializable_txn(txn: &pb::TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).all(|op| {
        matches!(&op.request, Some(pb::request_op::Request::RequestRange(r)) if r.serializable)
    })
}

impl Response {
    pub fn header_mut(&mut self) -> Option<&mut pb::ResponseHeader> {
        let h = match self {
            Response::Range(r) => &mut r.header,
            Response::Put(r) => &mut r.header,
            Response::DeleteRange(r) => &mut r.header,
            Response::Txn(r) => &mut r.header,
            Response::Compact(r) => &mut r.header,
            Response::LeaseGrant(r) => &mut r.header,
            Response::LeaseRevoke(r) => &mut r.header,
            Response::LeaseKeepAlive(r) => &mut r.header,
            Response::LeaseTimeToLive(r) => &mut r.header,
            Response::LeaseLeases(r) => &mut r.header,
            Response::Status(r) => &mut r.header,
            Response::MemberList(r) => &mut r.header,
            Response::MemberAdd(r) => &mut r.header,
            Response::MemberRemove(r) => &mut r.header,
            Response::MemberUpdate(r) => &mut r.header,
            Response::MemberPromote(r) => &mut r.header,
            // etcd answers Alarm without a header.
            Response::Alarm(_) => return None,
            Response::HashKv(r) => &mut r.header,
            Response::Defragment(r) => &mut r.header,
            Response::MoveLeader(r) => &mut r.header,
            Response::Hash(r) => &mut r.header,
            Response::Snapshot(r) => &mut r.header,
            Response::Auth(r) => r.header_mut(),
            Response::PasswordCheck(_) => return None,
        };
        Some(h.get_or_insert_with(Default::default))
    }
}
