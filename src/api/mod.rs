//! The etcd v3 services: which gRPC method a path names, how its request is decoded and
//! checked, and how the core's answer is encoded. One module per service holds the checks;
//! the Lock and Election services ([`lock`], [`election`], sharing [`concurrency`]) run
//! etcd's recipes on the executor, each step a request made as the caller through the same
//! path as a KV call ([`Api::call_as`]).

pub mod auth;
pub mod concurrency;
pub mod election;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod snapshot;
pub mod watch;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prost::Message;

use self::auth::{AuthMethod, Caller};
use crate::auth::{AuthError, AuthShared};
use crate::net::grpc::{encode_message, Code, Status};
use crate::net::metrics::{Metrics, NetShard};
use crate::proto::health;
use crate::server::link::CoreClient;
use crate::server::message::{Request, Response};

/// Request limits shared by every service.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// --max-request-bytes: larger writes fail with "etcdserver: request is too large".
    pub max_request_bytes: usize,
    /// --max-txn-ops.
    pub max_txn_ops: usize,
    /// --max-concurrent-streams: HTTP/2 streams one client connection may have open.
    pub max_concurrent_streams: u32,
}

impl Limits {
    /// gRPC's own receive limit, as etcd sets it: the request limit plus 512 KiB of slack.
    pub fn grpc_receive_limit(&self) -> usize {
        self.max_request_bytes + 512 * 1024
    }
}

/// Unary methods corekv answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compact,
    LeaseGrant,
    LeaseRevoke,
    LeaseTimeToLive,
    LeaseLeases,
    MemberList,
    Status,
    HealthCheck,
    MemberAdd,
    MemberRemove,
    MemberUpdate,
    MemberPromote,
    Alarm,
    HashKv,
    Hash,
    Defragment,
    MoveLeader,
    Auth(AuthMethod),
    Lock,
    Unlock,
    Campaign,
    Proclaim,
    Leader,
    Resign,
}

impl Unary {
    /// Calls that can wait for others (a lock, a campaign): they end when their client goes
    /// away, and what they put is taken back.
    pub fn may_wait(self) -> bool {
        matches!(self, Unary::Lock | Unary::Campaign)
    }
}

/// Streaming methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streaming {
    Watch,
    LeaseKeepAlive,
    /// Election.Observe: one request, then answers until the client goes away.
    Observe,
    /// Maintenance.Snapshot: one request, a stream of replies.
    Snapshot,
}

pub enum Route {
    Unary(Unary),
    Streaming(Streaming),
}

/// Maps a gRPC path (`/package.Service/Method`) to the method that serves it.
pub fn route(method: &str) -> Option<Route> {
    use crate::proto::path;
    use Unary::*;
    let r = match method {
        path::RANGE => Route::Unary(Range),
        path::PUT => Route::Unary(Put),
        path::DELETE_RANGE => Route::Unary(DeleteRange),
        path::TXN => Route::Unary(Txn),
        path::COMPACT => Route::Unary(Compact),
        path::LEASE_GRANT => Route::Unary(LeaseGrant),
        path::LEASE_REVOKE => Route::Unary(LeaseRevoke),
        path::LEASE_TIME_TO_LIVE => Route::Unary(LeaseTimeToLive),
        path::LEASE_LEASES => Route::Unary(LeaseLeases),
        path::MEMBER_LIST => Route::Unary(MemberList),
        path::STATUS => Route::Unary(Status),
        path::HEALTH_CHECK => Route::Unary(HealthCheck),
        path::MEMBER_ADD => Route::Unary(MemberAdd),
        path::MEMBER_REMOVE => Route::Unary(MemberRemove),
        path::MEMBER_UPDATE => Route::Unary(MemberUpdate),
        path::MEMBER_PROMOTE => Route::Unary(MemberPromote),
        path::ALARM => Route::Unary(Alarm),
        path::HASH_KV => Route::Unary(HashKv),
        path::HASH => Route::Unary(Hash),
        path::DEFRAGMENT => Route::Unary(Defragment),
        path::MOVE_LEADER => Route::Unary(MoveLeader),
        path::LOCK => Route::Unary(Lock),
        path::UNLOCK => Route::Unary(Unlock),
        path::CAMPAIGN => Route::Unary(Campaign),
        path::PROCLAIM => Route::Unary(Proclaim),
        path::LEADER => Route::Unary(Leader),
        path::RESIGN => Route::Unary(Resign),
        path::OBSERVE => Route::Streaming(Streaming::Observe),
        path::WATCH => Route::Streaming(Streaming::Watch),
        path::LEASE_KEEP_ALIVE => Route::Streaming(Streaming::LeaseKeepAlive),
        path::SNAPSHOT => Route::Streaming(Streaming::Snapshot),
        other => Route::Unary(Auth(AuthMethod::from_path(other)?)),
    };
    Some(r)
}

/// One network executor's view of the services.
pub struct Api {
    pub core: Rc<CoreClient>,
    pub watch_streams: Rc<watch::WatchStreams>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// This executor's gRPC counters.
    pub grpc_stats: Arc<NetShard>,
    /// The auth state as the core last published it, and the simple tokens.
    pub auth: Arc<AuthShared>,
}

pub(crate) fn decode<M: Message + Default>(body: &[u8]) -> Result<M, Status> {
    M::decode(body).map_err(|e| {
        Status::new(
            Code::Internal,
            format!("grpc: error unmarshalling request: {e}"),
        )
    })
}

/// How long a request waits for a starting member to publish itself.
const NOT_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Api {
    /// Serves one unary call: the request message in, the encoded reply message out.
    pub async fn unary(
        &self,
        method: Unary,
        body: Bytes,
        caller: &Caller,
    ) -> Result<Bytes, Status> {
        if method == Unary::HealthCheck {
            let _: health::HealthCheckRequest = decode(&body)?;
            return Ok(encode_message(&health::HealthCheckResponse {
                status: health::health_check_response::ServingStatus::Serving as i32,
            }));
        }
        if let Unary::Auth(m) = method {
            return self.auth_unary(m, &body, caller).await;
        }
        // The recipes run as their caller, as etcd's run over an in-process client that
        // carries the caller's context.
        let c = concurrency::Client { api: self, caller };
        match method {
            Unary::Lock => return self.recipe(&body, |r| lock::lock(c, r)).await,
            Unary::Unlock => return self.recipe(&body, |r| lock::unlock(c, r)).await,
            Unary::Campaign => return self.recipe(&body, |r| election::campaign(c, r)).await,
            Unary::Proclaim => return self.recipe(&body, |r| election::proclaim(c, r)).await,
            Unary::Leader => return self.recipe(&body, |r| election::leader(c, r)).await,
            Unary::Resign => return self.recipe(&body, |r| election::resign(c, r)).await,
            _ => {}
        }
        let request = decode_request(&self.limits, method, &body)?;
        self.until_published().await?;
        if self.learner() && !supported_by_learners(&request) {
            return Err(not_for_learners());
        }
        let response = self.call_as(request, caller).await?;
        Ok(encode_response(&response))
    }

    /// Runs one request as `caller`: checked as etcd's API layer checks it (a write tagged
    /// with its sender, to be checked again at apply), then answered by the core. Every
    /// client request and every request of the Lock and Election recipes takes this path.
    pub async fn call_as(&self, request: Request, caller: &Caller) -> Result<Response, Status> {
        self.await_token(caller).await?;
        let (request, read_at) = self.authorize(request, caller)?;
        let response = self.core.call(request).await?;
        // etcd's doSerialize: a read checked at one auth revision is refused if the auth
        // state changed while it ran.
        if read_at.is_some_and(|rev| rev != self.auth.view().revision) {
            return Err(AuthError::OldRevision.into());
        }
        Ok(response)
    }

    /// Checks a request as etcd's API layer does, and tags it with its sender so that a
    /// write is checked again at apply. Returns the auth revision a checked read must still
    /// be at when it is answered.
    fn authorize(&self, req: Request, caller: &Caller) -> Result<(Request, Option<u64>), Status> {
        use crate::mvcc::is_txn_readonly;
        // Calls etcd serves without looking at the caller's token.
        if matches!(
            req,
            Request::Status(_)
                | Request::MemberList(_)
                | Request::LeaseTimeToLive(_)
                | Request::LeaseLeases(_)
                | Request::MoveLeader(_)
        ) {
            return Ok((req, None));
        }
        let maintenance = matches!(
            req,
            Request::Defragment(_) | Request::Hash(_) | Request::HashKv(_) | Request::Snapshot(_)
        );
        if maintenance {
            self.check_maintenance(caller)?;
            return Ok((req, None));
        }
        let info = self.auth_info(caller)?;
        let view = self.auth.view();
        let who = info.as_ref();
        // The revision checked against now (a JWT may carry a newer one than this member has
        // applied).
        let read_at = info.as_ref().map(|_| view.revision);
        match &req {
            Request::Range(r) => {
                view.check_range(who, &r.key, &r.range_end)?;
                return Ok((req, read_at));
            }
            Request::Txn(t) if is_txn_readonly(t) => {
                view.check_txn(who, t)?;
                return Ok((req, read_at));
            }
            // etcd's membership calls need root in the API layer.
            Request::MemberAdd(_)
            | Request::MemberRemove(_)
            | Request::MemberUpdate(_)
            | Request::MemberPromote(_) => view.check_admin(who)?,
            _ => {}
        }
        let header = match info {
            Some(i) => crate::proto::corekvpb::AuthHeader {
                username: i.username,
                revision: i.revision,
            },
            None => Default::default(),
        };
        Ok((Request::AsUser(header, Box::new(req)), None))
    }

    /// etcd's maintenance calls (Defragment, Hash, HashKV, Snapshot) need root, and fail with
    /// auth's unmapped errors (gRPC's Unknown) where the others get etcdserver's.
    fn check_maintenance(&self, caller: &Caller) -> Result<(), Status> {
        let info = self
            .auth_info(caller)
            .map_err(|_| AuthError::InvalidAuthToken.unmapped())?;
        self.auth
            .view()
            .check_admin(info.as_ref())
            .map_err(AuthError::unmapped)
    }

    /// Serves a Lock or Election call: decoded, refused where any write would be (before
    /// publish, on a learner, with those errors' own codes), then run as its recipe.
    async fn recipe<Req, Resp, Fut>(
        &self,
        body: &[u8],
        serve: impl FnOnce(Req) -> Fut,
    ) -> Result<Bytes, Status>
    where
        Req: Message + Default,
        Resp: Message,
        Fut: std::future::Future<Output = Result<Resp, Status>>,
    {
        let request = decode(body)?;
        self.until_published().await?;
        if self.learner() {
            return Err(not_for_learners());
        }
        // etcd's services make their requests through an in-process client, whose errors
        // reach the caller as plain Go errors: gRPC's Unknown, with etcd's message.
        let reply = serve(request)
            .await
            .map_err(|e| Status::new(Code::Unknown, e.message))?;
        Ok(encode_message(&reply))
    }

    /// A watch the server keeps for itself on this executor (see [`watch::OwnWatch`]), made
    /// for `caller` and checked as a client's watch is (refused: created and canceled).
    pub fn own_watch(
        &self,
        create: crate::proto::etcdserverpb::WatchCreateRequest,
        caller: &Caller,
    ) -> watch::OwnWatch {
        let command = watch::create_command(self, caller, create);
        watch::OwnWatch::open(&self.core, &self.watch_streams, command)
    }

    /// etcd serves clients only once the member has published itself through raft (its
    /// ReadyNotify); by then it has applied everything committed before its publish. A
    /// member that joins has no data before that, so its answers would be wrong, not stale.
    /// Waits up to etcd's request timeout.
    async fn until_published(&self) -> Result<(), Status> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.metrics.published.load(Relaxed) {
            return Ok(());
        }
        let deadline = Instant::now() + NOT_READY_WAIT;
        while !self.metrics.published.load(Relaxed) {
            if Instant::now() >= deadline {
                return Err(Status::unavailable("etcdserver: request timed out"));
            }
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(())
    }

    fn learner(&self) -> bool {
        self.metrics
            .is_learner
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Serves a streaming call until either side ends it.
    pub async fn streaming(
        &self,
        method: Streaming,
        incoming: crate::net::conn::Incoming,
        outgoing: &mut crate::net::conn::Outgoing,
        caller: &Caller,
    ) -> Result<(), Status> {
        self.until_published().await?;
        if self.learner() {
            return Err(not_for_learners());
        }
        self.await_token(caller).await?;
        match method {
            Streaming::Watch => {
                let streams = &self.metrics.watch_streams;
                streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let r = watch::serve(self, caller, incoming, outgoing).await;
                streams.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                r
            }
            Streaming::LeaseKeepAlive => lease::keep_alive(&self.core, incoming, outgoing).await,
            Streaming::Observe => {
                let c = concurrency::Client { api: self, caller };
                election::observe(incoming, outgoing, c).await
            }
            Streaming::Snapshot => {
                self.check_maintenance(caller)?;
                snapshot::serve(&self.core, incoming, outgoing).await
            }
        }
    }
}

/// A unary call's request as the core takes it: decoded from the gRPC message and checked
/// (every method but Health, Auth and the Lock and Election recipes, which decode their own).
pub fn decode_request(limits: &Limits, method: Unary, body: &[u8]) -> Result<Request, Status> {
    let write_size_ok = || {
        if body.len() > limits.max_request_bytes {
            Err(Status::invalid_argument("etcdserver: request is too large"))
        } else {
            Ok(())
        }
    };
    let req = match method {
        Unary::Range => Request::Range(kv::check_range(decode(body)?)?),
        Unary::Put => {
            write_size_ok()?;
            Request::Put(kv::check_put(decode(body)?)?)
        }
        Unary::DeleteRange => {
            write_size_ok()?;
            Request::DeleteRange(kv::check_delete_range(decode(body)?)?)
        }
        Unary::Txn => {
            write_size_ok()?;
            Request::Txn(kv::check_txn(decode(body)?, limits.max_txn_ops)?)
        }
        Unary::Compact => Request::Compact(kv::check_compaction(decode(body)?)?),
        Unary::LeaseGrant => Request::LeaseGrant(lease::check_grant(decode(body)?)?),
        Unary::LeaseRevoke => Request::LeaseRevoke(decode(body)?),
        Unary::LeaseTimeToLive => Request::LeaseTimeToLive(decode(body)?),
        Unary::LeaseLeases => Request::LeaseLeases(decode(body)?),
        Unary::MemberList => Request::MemberList(decode(body)?),
        Unary::Status => Request::Status(decode(body)?),
        Unary::MemberAdd => {
            let request: crate::proto::etcdserverpb::MemberAddRequest = decode(body)?;
            check_peer_urls(&request.peer_ur_ls)?;
            let unix_time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            Request::MemberAdd(crate::server::message::MemberAdd { request, unix_time })
        }
        Unary::MemberRemove => Request::MemberRemove(decode(body)?),
        Unary::MemberUpdate => {
            let request: crate::proto::etcdserverpb::MemberUpdateRequest = decode(body)?;
            check_peer_urls(&request.peer_ur_ls)?;
            Request::MemberUpdate(request)
        }
        Unary::MemberPromote => Request::MemberPromote(decode(body)?),
        Unary::Alarm => Request::Alarm(decode(body)?),
        Unary::HashKv => Request::HashKv(decode(body)?),
        Unary::Hash => Request::Hash(decode(body)?),
        Unary::Defragment => Request::Defragment(decode(body)?),
        Unary::MoveLeader => Request::MoveLeader(decode(body)?),
        Unary::HealthCheck | Unary::Auth(_) => unreachable!("answered without decode_request"),
        Unary::Lock
        | Unary::Unlock
        | Unary::Campaign
        | Unary::Proclaim
        | Unary::Leader
        | Unary::Resign => unreachable!("served as recipes"),
    };
    Ok(req)
}

/// etcd's learners answer only Status and serializable ranges (isRPCSupportedForLearner).
fn supported_by_learners(req: &Request) -> bool {
    match req {
        Request::Status(_) => true,
        Request::Range(r) => r.serializable,
        _ => false,
    }
}

pub(crate) fn not_for_learners() -> Status {
    Status::unavailable("etcdserver: rpc not supported for learner")
}

/// etcd's check of a member's peer URLs: each a URL with a scheme, a host and a port, no path.
fn check_peer_urls(urls: &[String]) -> Result<(), Status> {
    let bad = || Status::invalid_argument("etcdserver: given member URLs are invalid");
    if urls.is_empty() {
        return Err(bad());
    }
    for u in urls {
        let rest = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"))
            .ok_or_else(bad)?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || rest.contains('/') || port.parse::<u16>().is_err() {
            return Err(bad());
        }
    }
    Ok(())
}

/// Encodes the core's answer as one gRPC message.
pub fn encode_response(resp: &Response) -> Bytes {
    match resp {
        Response::Range(r) => encode_message(r),
        Response::Put(r) => encode_message(r),
        Response::DeleteRange(r) => encode_message(r),
        Response::Txn(r) => encode_message(r),
        Response::Compact(r) => encode_message(r),
        Response::LeaseGrant(r) => encode_message(r),
        Response::LeaseRevoke(r) => encode_message(r),
        Response::LeaseKeepAlive(r) => encode_message(r),
        Response::LeaseTimeToLive(r) => encode_message(r),
        Response::LeaseLeases(r) => encode_message(r),
        Response::Status(r) => encode_message(r),
        Response::MemberList(r) => encode_message(r),
        Response::MemberAdd(r) => encode_message(r),
        Response::MemberRemove(r) => encode_message(r),
        Response::MemberUpdate(r) => encode_message(r),
        Response::MemberPromote(r) => encode_message(r),
        Response::Alarm(r) => encode_message(r),
        Response::HashKv(r) => encode_message(r),
        Response::Defragment(r) => encode_message(r),
        Response::MoveLeader(r) => encode_message(r),
        Response::Hash(r) => encode_message(r),
        Response::Snapshot(_) => unreachable!("a backend copy is streamed, not encoded whole"),
        Response::Auth(r) => r.encode(),
        Response::PasswordCheck(_) => unreachable!("a password hash never leaves the member"),
    }
}
