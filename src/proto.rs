//! Generated protobuf types: the etcd v3 wire API and corekv's internal messages.
#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
}
pub mod corekvpb {
    include!(concat!(env!("OUT_DIR"), "/corekvpb.rs"));
}

/// gRPC method paths of the etcd v3 API: the server routes by them, the client calls them.
pub mod path {
    pub const RANGE: &str = "/etcdserverpb.KV/Range";
    pub const PUT: &str = "/etcdserverpb.KV/Put";
    pub const DELETE_RANGE: &str = "/etcdserverpb.KV/DeleteRange";
    pub const TXN: &str = "/etcdserverpb.KV/Txn";
    pub const COMPACT: &str = "/etcdserverpb.KV/Compact";
    pub const WATCH: &str = "/etcdserverpb.Watch/Watch";
    pub const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
    pub const LEASE_REVOKE: &str = "/etcdserverpb.Lease/LeaseRevoke";
    pub const LEASE_KEEP_ALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";
    pub const LEASE_TIME_TO_LIVE: &str = "/etcdserverpb.Lease/LeaseTimeToLive";
    pub const LEASE_LEASES: &str = "/etcdserverpb.Lease/LeaseLeases";
    pub const MEMBER_ADD: &str = "/etcdserverpb.Cluster/MemberAdd";
    pub const MEMBER_REMOVE: &str = "/etcdserverpb.Cluster/MemberRemove";
    pub const MEMBER_UPDATE: &str = "/etcdserverpb.Cluster/MemberUpdate";
    pub const MEMBER_LIST: &str = "/etcdserverpb.Cluster/MemberList";
    pub const MEMBER_PROMOTE: &str = "/etcdserverpb.Cluster/MemberPromote";
    pub const ALARM: &str = "/etcdserverpb.Maintenance/Alarm";
    pub const STATUS: &str = "/etcdserverpb.Maintenance/Status";
    pub const DEFRAGMENT: &str = "/etcdserverpb.Maintenance/Defragment";
    pub const HASH: &str = "/etcdserverpb.Maintenance/Hash";
    pub const HASH_KV: &str = "/etcdserverpb.Maintenance/HashKV";
    pub const SNAPSHOT: &str = "/etcdserverpb.Maintenance/Snapshot";
    pub const MOVE_LEADER: &str = "/etcdserverpb.Maintenance/MoveLeader";
    pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
    pub const AUTH_ENABLE: &str = "/etcdserverpb.Auth/AuthEnable";
    pub const AUTH_DISABLE: &str = "/etcdserverpb.Auth/AuthDisable";
    pub const AUTHENTICATE: &str = "/etcdserverpb.Auth/Authenticate";
    pub const USER_ADD: &str = "/etcdserverpb.Auth/UserAdd";
    pub const USER_GET: &str = "/etcdserverpb.Auth/UserGet";
    pub const USER_LIST: &str = "/etcdserverpb.Auth/UserList";
    pub const USER_DELETE: &str = "/etcdserverpb.Auth/UserDelete";
    pub const USER_CHANGE_PASSWORD: &str = "/etcdserverpb.Auth/UserChangePassword";
    pub const USER_GRANT_ROLE: &str = "/etcdserverpb.Auth/UserGrantRole";
    pub const USER_REVOKE_ROLE: &str = "/etcdserverpb.Auth/UserRevokeRole";
    pub const ROLE_ADD: &str = "/etcdserverpb.Auth/RoleAdd";
    pub const ROLE_GET: &str = "/etcdserverpb.Auth/RoleGet";
    pub const ROLE_LIST: &str = "/etcdserverpb.Auth/RoleList";
    pub const ROLE_DELETE: &str = "/etcdserverpb.Auth/RoleDelete";
    pub const ROLE_GRANT_PERMISSION: &str = "/etcdserverpb.Auth/RoleGrantPermission";
    pub const ROLE_REVOKE_PERMISSION: &str = "/etcdserverpb.Auth/RoleRevokePermission";
    pub const LOCK: &str = "/v3lockpb.Lock/Lock";
    pub const UNLOCK: &str = "/v3lockpb.Lock/Unlock";
    pub const CAMPAIGN: &str = "/v3electionpb.Election/Campaign";
    pub const PROCLAIM: &str = "/v3electionpb.Election/Proclaim";
    pub const LEADER: &str = "/v3electionpb.Election/Leader";
    pub const OBSERVE: &str = "/v3electionpb.Election/Observe";
    pub const RESIGN: &str = "/v3electionpb.Election/Resign";

    /// Every method path above (the fuzz targets pick from it; a test checks that each
    /// one routes).
    pub const ALL: &[&str] = &[
        RANGE,
        PUT,
        DELETE_RANGE,
        TXN,
        COMPACT,
        WATCH,
        LEASE_GRANT,
        LEASE_REVOKE,
        LEASE_KEEP_ALIVE,
        LEASE_TIME_TO_LIVE,
        LEASE_LEASES,
        MEMBER_ADD,
        MEMBER_REMOVE,
        MEMBER_UPDATE,
        MEMBER_LIST,
        MEMBER_PROMOTE,
        ALARM,
        STATUS,
        DEFRAGMENT,
        HASH,
        HASH_KV,
        SNAPSHOT,
        MOVE_LEADER,
        HEALTH_CHECK,
        AUTH_ENABLE,
        AUTH_DISABLE,
        AUTHENTICATE,
        USER_ADD,
        USER_GET,
        USER_LIST,
        USER_DELETE,
        USER_CHANGE_PASSWORD,
        USER_GRANT_ROLE,
        USER_REVOKE_ROLE,
        ROLE_ADD,
        ROLE_GET,
        ROLE_LIST,
        ROLE_DELETE,
        ROLE_GRANT_PERMISSION,
        ROLE_REVOKE_PERMISSION,
        LOCK,
        UNLOCK,
        CAMPAIGN,
        PROCLAIM,
        LEADER,
        OBSERVE,
        RESIGN,
    ];
}
