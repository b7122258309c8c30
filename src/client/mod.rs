//! corekv's own etcd v3 client: gRPC over one HTTP/2 connection, on a glommio executor.
//!
//! Used by `corekvctl`, the integration tests and the benchmark tool. It speaks the etcd v3 wire
//! API, so it works against corekv and against etcd alike.
//!
//! # Shape
//!
//! ```no_run
//! use std::time::Duration;
//! use corekv::client::{run_local, Client, ClientOptions};
//! use corekv::proto::etcdserverpb::{PutRequest, RangeRequest};
//!
//! run_local(|| async {
//!     let opts = ClientOptions::new(vec!["127.0.0.1:2379".into()]);
//!     let client = Client::connect(opts).await.unwrap();
//!     client.put(PutRequest { key: "k".into(), value: "v".into(), ..Default::default() }).await.unwrap();
//!     let resp = client.range(RangeRequest { key: "k".into(), ..Default::default() }).await.unwrap();
//!     assert_eq!(resp.kvs[0].value, "v");
//! });
//! ```
//!
//! - [`Client::connect`] dials the endpoints in order and keeps the first that answers the
//!   HTTP/2 handshake. If that connection later breaks, the next call dials again (the failed
//!   call itself is not retried: it may have been applied).
//! - A `Client` is an `Rc` handle: clone it freely and call it from many local tasks at once.
//!   Every call is its own HTTP/2 stream on the one connection, so many calls are in flight
//!   together. It is `!Send`: each executor (thread) makes its own clients.
//! - Unary calls ([`Client::unary`] and the typed wrappers: `range`, `put`, `delete_range`,
//!   `txn`, `compact`, `lease_*`, `member_list`, `status`, `health`, `alarm`, `defragment`,
//!   `hash_kv`, `move_leader`) fail with [`ClientError::Timeout`] after
//!   `ClientOptions::command_timeout`.
//! - Streams ([`Client::watch`], [`Client::lease_keep_alive`], or any method through
//!   [`Client::streaming`]) return a [`StreamSender`] and a [`StreamReceiver`] that can live in
//!   different tasks. Sending waits for HTTP/2 flow-control capacity; receiving releases
//!   capacity as data arrives. They have no timeout.
//! - Auth: with [`ClientOptions::credentials`] the client calls `Auth.Authenticate` once after
//!   dialing (unless given a token already) and sends the token as the `token` metadata on
//!   every call, unary and streaming. A unary call refused with `etcdserver: invalid auth
//!   token`, `etcdserver: user name is empty` or `etcdserver: revision of auth store is old`
//!   re-authenticates (once for all calls in flight) and is retried once, as etcd's clientv3
//!   does. Authentication failing at connect fails [`Client::connect`] with the server's error;
//!   auth not being enabled is not a failure (no token is sent until a refused call finds it
//!   enabled). Without credentials nothing of this runs: no header, no check per call.
//! - Errors: [`ClientError::Status`] carries the server's grpc-status and message; its
//!   `Display` is what etcdctl prints (`etcdserver: ...` for etcd's own errors, `rpc error:
//!   code = ... desc = ...` for the rest).
//!
//! [`concurrency`] holds etcd's coordination recipes (session, mutex, election) with the same key
//! layout as etcd's `clientv3/concurrency`, so they interoperate with etcdctl and Go clients.

use bytes::Bytes;

pub mod concurrency;
mod conn;
mod error;
mod stream;

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

pub use crate::net::grpc::{Code, Status};
use crate::proto::etcdserverpb as pb;
use crate::proto::health;
pub use error::ClientError;
pub use stream::{StreamReceiver, StreamSender};

/// Sends watch requests (create, cancel, progress) on one watch stream.
pub type WatchSender = StreamSender<pb::WatchRequest>;
/// Receives the responses of one watch stream.
pub type WatchStream = StreamReceiver<pb::WatchResponse>;
/// Sends keep-alive requests on one lease keep-alive stream.
pub type KeepAliveSender = StreamSender<pb::LeaseKeepAliveRequest>;
/// Receives keep-alive responses.
pub type KeepAliveStream = StreamReceiver<pb::LeaseKeepAliveResponse>;

pub use crate::proto::path;

/// How to reach the cluster.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `host:port` or `http://host:port`, tried in order.
    pub endpoints: Vec<String>,
    /// Limit for one TCP connect plus the HTTP/2 handshake, per endpoint.
    pub dial_timeout: Duration,
    /// Limit for each unary call.
    pub command_timeout: Duration,
    /// TLS for https:// endpoints, and for endpoints given without a scheme (as etcd's
    /// client: http:// is always plaintext). None: https:// endpoints are checked against
    /// the system's roots.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// A user to authenticate as (etcdctl's `--user`); None: no auth metadata at all.
    pub credentials: Option<Credentials>,
}

/// A user name and password to authenticate with, and maybe a token already obtained for them
/// (many connections can share one token instead of each authenticating: a bcrypt check on
/// the server per connection).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    /// Used until the server refuses it; then the client authenticates with the password.
    pub token: Option<String>,
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
            token: None,
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl ClientOptions {
    /// The endpoints with etcdctl's default timeouts (2 s dial, 5 s command).
    pub fn new(endpoints: Vec<String>) -> ClientOptions {
        ClientOptions {
            endpoints,
            dial_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            tls: None,
            credentials: None,
        }
    }
}

/// A cheap-to-clone handle on one HTTP/2 connection to the cluster.
#[derive(Clone)]
pub struct Client {
    inner: Rc<conn::Connection>,
}

impl Client {
    /// Dials the endpoints in order and returns a client on the first that answers.
    pub async fn connect(opts: ClientOptions) -> Result<Client, ClientError> {
        let inner = conn::Connection::connect(opts).await?;
        Ok(Client {
            inner: Rc::new(inner),
        })
    }

    /// The endpoint the current connection goes to (as given in the options).
    pub fn endpoint(&self) -> String {
        self.inner.endpoint()
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        self.inner.options()
    }

    /// Any unary gRPC call: `path` is `/package.Service/Method`.
    pub async fn unary<Req, Resp>(&self, path: &str, req: &Req) -> Result<Resp, ClientError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.inner.unary(path, req).await
    }

    /// Opens a bidirectional (or server-streaming) call. Nothing is sent until the first
    /// message; a server-streaming call sends exactly one and then closes its sender.
    pub async fn streaming<Req, Resp>(
        &self,
        path: &str,
    ) -> Result<(StreamSender<Req>, StreamReceiver<Resp>), ClientError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.inner.open_stream(path, false).await
    }

    /// A unary call of an encoded request, passed on as it is with `metadata` (no timeout,
    /// no retry): the reply's bytes. For a proxy.
    pub async fn unary_raw(
        &self,
        path: &str,
        body: Bytes,
        metadata: &[(http::HeaderName, http::HeaderValue)],
    ) -> Result<Bytes, ClientError> {
        self.inner.unary_raw(path, body, metadata).await
    }

    /// A streaming call whose messages are passed on as bytes, with `metadata`. For a proxy.
    pub async fn streaming_raw(
        &self,
        path: &str,
        metadata: &[(http::HeaderName, http::HeaderValue)],
    ) -> Result<(StreamSender<()>, StreamReceiver<()>), ClientError> {
        self.inner.open_stream_raw(path, metadata).await
    }

    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, ClientError> {
        self.unary(path::RANGE, &req).await
    }

    pub async fn put(&self, req: pb::PutRequest) -> Result<pb::PutResponse, ClientError> {
        self.unary(path::PUT, &req).await
    }

    pub async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, ClientError> {
        self.unary(path::DELETE_RANGE, &req).await
    }

    pub async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse, ClientError> {
        self.unary(path::TXN, &req).await
    }

    pub async fn compact(
        &self,
        req: pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse, ClientError> {
        self.unary(path::COMPACT, &req).await
    }

    /// Opens a watch stream (with etcd's `hasleader` metadata, as etcdctl sends it).
    pub async fn watch(&self) -> Result<(WatchSender, WatchStream), ClientError> {
        self.inner.open_stream(path::WATCH, true).await
    }

    pub async fn lease_grant(
        &self,
        req: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, ClientError> {
        self.unary(path::LEASE_GRANT, &req).await
    }

    pub async fn lease_revoke(
        &self,
        req: pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse, ClientError> {
        self.unary(path::LEASE_REVOKE, &req).await
    }

    pub async fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, ClientError> {
        self.unary(path::LEASE_TIME_TO_LIVE, &req).await
    }

    pub async fn lease_leases(&self) -> Result<pb::LeaseLeasesResponse, ClientError> {
        self.unary(path::LEASE_LEASES, &pb::LeaseLeasesRequest {})
            .await
    }

    /// Opens a lease keep-alive stream.
    pub async fn lease_keep_alive(
        &self,
    ) -> Result<(KeepAliveSender, KeepAliveStream), ClientError> {
        self.inner.open_stream(path::LEASE_KEEP_ALIVE, false).await
    }

    pub async fn member_list(&self) -> Result<pb::MemberListResponse, ClientError> {
        self.unary(path::MEMBER_LIST, &pb::MemberListRequest {})
            .await
    }

    pub async fn member_add(
        &self,
        req: pb::MemberAddRequest,
    ) -> Result<pb::MemberAddResponse, ClientError> {
        self.unary(path::MEMBER_ADD, &req).await
    }

    pub async fn member_remove(
        &self,
        req: pb::MemberRemoveRequest,
    ) -> Result<pb::MemberRemoveResponse, ClientError> {
        self.unary(path::MEMBER_REMOVE, &req).await
    }

    pub async fn member_update(
        &self,
        req: pb::MemberUpdateRequest,
    ) -> Result<pb::MemberUpdateResponse, ClientError> {
        self.unary(path::MEMBER_UPDATE, &req).await
    }

    pub async fn member_promote(
        &self,
        req: pb::MemberPromoteRequest,
    ) -> Result<pb::MemberPromoteResponse, ClientError> {
        self.unary(path::MEMBER_PROMOTE, &req).await
    }

    pub async fn status(&self) -> Result<pb::StatusResponse, ClientError> {
        self.unary(path::STATUS, &pb::StatusRequest {}).await
    }

    /// The standard gRPC health check of service "" (the whole server).
    pub async fn health(&self) -> Result<health::HealthCheckResponse, ClientError> {
        let req = health::HealthCheckRequest {
            service: String::new(),
        };
        self.unary(path::HEALTH_CHECK, &req).await
    }

    pub async fn alarm(&self, req: pb::AlarmRequest) -> Result<pb::AlarmResponse, ClientError> {
        self.unary(path::ALARM, &req).await
    }

    pub async fn defragment(&self) -> Result<pb::DefragmentResponse, ClientError> {
        self.unary(path::DEFRAGMENT, &pb::DefragmentRequest {})
            .await
    }

    pub async fn hash_kv(&self, revision: i64) -> Result<pb::HashKvResponse, ClientError> {
        self.unary(path::HASH_KV, &pb::HashKvRequest { revision })
            .await
    }

    pub async fn move_leader(&self, target_id: u64) -> Result<pb::MoveLeaderResponse, ClientError> {
        self.unary(path::MOVE_LEADER, &pb::MoveLeaderRequest { target_id })
            .await
    }

    /// The token calls carry now (None without credentials, or while auth is disabled).
    pub fn token(&self) -> Option<String> {
        self.inner.token()
    }

    /// Auth.Authenticate: a token for `name` (sent without this client's own token).
    pub async fn authenticate(
        &self,
        name: &str,
        password: &str,
    ) -> Result<pb::AuthenticateResponse, ClientError> {
        let req = pb::AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        };
        self.inner.authenticate(&req).await
    }

    pub async fn auth_enable(&self) -> Result<pb::AuthEnableResponse, ClientError> {
        self.unary(path::AUTH_ENABLE, &pb::AuthEnableRequest {})
            .await
    }

    pub async fn auth_disable(&self) -> Result<pb::AuthDisableResponse, ClientError> {
        self.unary(path::AUTH_DISABLE, &pb::AuthDisableRequest {})
            .await
    }

    pub async fn user_add(
        &self,
        req: pb::AuthUserAddRequest,
    ) -> Result<pb::AuthUserAddResponse, ClientError> {
        self.unary(path::USER_ADD, &req).await
    }

    pub async fn user_get(&self, name: &str) -> Result<pb::AuthUserGetResponse, ClientError> {
        let req = pb::AuthUserGetRequest { name: name.into() };
        self.unary(path::USER_GET, &req).await
    }

    pub async fn user_list(&self) -> Result<pb::AuthUserListResponse, ClientError> {
        self.unary(path::USER_LIST, &pb::AuthUserListRequest {})
            .await
    }

    pub async fn user_delete(&self, name: &str) -> Result<pb::AuthUserDeleteResponse, ClientError> {
        let req = pb::AuthUserDeleteRequest { name: name.into() };
        self.unary(path::USER_DELETE, &req).await
    }

    pub async fn user_change_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<pb::AuthUserChangePasswordResponse, ClientError> {
        let req = pb::AuthUserChangePasswordRequest {
            name: name.into(),
            password: password.into(),
        };
        self.unary(path::USER_CHANGE_PASSWORD, &req).await
    }

    pub async fn user_grant_role(
        &self,
        user: &str,
        role: &str,
    ) -> Result<pb::AuthUserGrantRoleResponse, ClientError> {
        let req = pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        };
        self.unary(path::USER_GRANT_ROLE, &req).await
    }

    pub async fn user_revoke_role(
        &self,
        name: &str,
        role: &str,
    ) -> Result<pb::AuthUserRevokeRoleResponse, ClientError> {
        let req = pb::AuthUserRevokeRoleRequest {
            name: name.into(),
            role: role.into(),
        };
        self.unary(path::USER_REVOKE_ROLE, &req).await
    }

    pub async fn role_add(&self, name: &str) -> Result<pb::AuthRoleAddResponse, ClientError> {
        let req = pb::AuthRoleAddRequest { name: name.into() };
        self.unary(path::ROLE_ADD, &req).await
    }

    pub async fn role_get(&self, role: &str) -> Result<pb::AuthRoleGetResponse, ClientError> {
        let req = pb::AuthRoleGetRequest { role: role.into() };
        self.unary(path::ROLE_GET, &req).await
    }

    pub async fn role_list(&self) -> Result<pb::AuthRoleListResponse, ClientError> {
        self.unary(path::ROLE_LIST, &pb::AuthRoleListRequest {})
            .await
    }

    pub async fn role_delete(&self, role: &str) -> Result<pb::AuthRoleDeleteResponse, ClientError> {
        let req = pb::AuthRoleDeleteRequest { role: role.into() };
        self.unary(path::ROLE_DELETE, &req).await
    }

    /// Grants `perm` (its type, key and range end) to role `name`.
    pub async fn role_grant_permission(
        &self,
        name: &str,
        perm: crate::proto::authpb::Permission,
    ) -> Result<pb::AuthRoleGrantPermissionResponse, ClientError> {
        let req = pb::AuthRoleGrantPermissionRequest {
            name: name.into(),
            perm: Some(perm),
        };
        self.unary(path::ROLE_GRANT_PERMISSION, &req).await
    }

    pub async fn role_revoke_permission(
        &self,
        role: &str,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<pb::AuthRoleRevokePermissionResponse, ClientError> {
        let req = pb::AuthRoleRevokePermissionRequest {
            role: role.into(),
            key: key.to_vec().into(),
            range_end: range_end.to_vec().into(),
        };
        self.unary(path::ROLE_REVOKE_PERMISSION, &req).await
    }
}

pub use crate::recipes::prefix_range_end;

/// Runs `f` to completion on a new single-threaded glommio executor sized for a client
/// (small io_uring buffers, not pinned to a core). For binaries and tests.
pub fn run_local<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(512 << 10)
        .spawn(f)
        .expect("cannot start a glommio executor")
        .join()
        .expect("the glommio executor panicked")
}
