//! The Auth service, and who the caller of any service is.
//!
//! Passwords are hashed (bcrypt) and checked on the network executor's blocking thread,
//! never on the consensus core: UserAdd and UserChangePassword propose the hash, and
//! Authenticate checks the password against the hash read linearizably, then proposes only
//! the name and the token's random part, as etcd 3.4 does (no password enters the log).

use bytes::Bytes;

use super::{decode, Api};
use crate::auth::store::AuthResponse;
use crate::auth::{tokens, AuthError, AuthInfo};
use crate::net::grpc::Status;
use crate::proto::corekvpb::{self as corekv, raft_request::Request as R, AuthHeader};
use crate::proto::etcdserverpb as pb;
use crate::server::message::{Request, Response};

/// Longest a request waits for this member to apply the raft index its simple token names.
const TOKEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The Auth service's methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    AuthEnable,
    AuthDisable,
    Authenticate,
    UserAdd,
    UserGet,
    UserList,
    UserDelete,
    UserChangePassword,
    UserGrantRole,
    UserRevokeRole,
    RoleAdd,
    RoleGet,
    RoleList,
    RoleDelete,
    RoleGrantPermission,
    RoleRevokePermission,
}

impl AuthMethod {
    pub fn from_path(method: &str) -> Option<AuthMethod> {
        use crate::proto::path;
        use AuthMethod::*;
        Some(match method {
            path::AUTH_ENABLE => AuthEnable,
            path::AUTH_DISABLE => AuthDisable,
            path::AUTHENTICATE => Authenticate,
            path::USER_ADD => UserAdd,
            path::USER_GET => UserGet,
            path::USER_LIST => UserList,
            path::USER_DELETE => UserDelete,
            path::USER_CHANGE_PASSWORD => UserChangePassword,
            path::USER_GRANT_ROLE => UserGrantRole,
            path::USER_REVOKE_ROLE => UserRevokeRole,
            path::ROLE_ADD => RoleAdd,
            path::ROLE_GET => RoleGet,
            path::ROLE_LIST => RoleList,
            path::ROLE_DELETE => RoleDelete,
            path::ROLE_GRANT_PERMISSION => RoleGrantPermission,
            path::ROLE_REVOKE_PERMISSION => RoleRevokePermission,
            _ => return None,
        })
    }
}

/// An Auth service request as decoded from its gRPC message, before any password is hashed
/// or checked (that happens off the decoding path, on a blocking thread).
pub enum AuthCall {
    Authenticate(pb::AuthenticateRequest),
    UserAdd(pb::AuthUserAddRequest),
    UserChangePassword(pb::AuthUserChangePasswordRequest),
    /// Proposed as it is.
    Propose(R),
}

/// Decodes and checks an Auth service request.
pub fn decode_auth(method: AuthMethod, body: &[u8]) -> Result<AuthCall, Status> {
    use AuthMethod as M;
    let r = match method {
        M::Authenticate => return Ok(AuthCall::Authenticate(decode(body)?)),
        M::UserAdd => {
            let r: pb::AuthUserAddRequest = decode(body)?;
            // etcd refuses an empty name before it spends time hashing.
            if r.name.is_empty() {
                return Err(AuthError::UserEmpty.into());
            }
            return Ok(AuthCall::UserAdd(r));
        }
        M::UserChangePassword => return Ok(AuthCall::UserChangePassword(decode(body)?)),
        M::AuthEnable => R::AuthEnable(decode(body)?),
        M::AuthDisable => R::AuthDisable(decode(body)?),
        M::UserGet => R::UserGet(decode(body)?),
        M::UserList => R::UserList(decode(body)?),
        M::UserDelete => R::UserDelete(decode(body)?),
        M::UserGrantRole => R::UserGrantRole(decode(body)?),
        M::UserRevokeRole => R::UserRevokeRole(decode(body)?),
        M::RoleAdd => R::RoleAdd(decode(body)?),
        M::RoleGet => R::RoleGet(decode(body)?),
        M::RoleList => R::RoleList(decode(body)?),
        M::RoleDelete => R::RoleDelete(decode(body)?),
        M::RoleGrantPermission => R::RoleGrantPermission(decode(body)?),
        M::RoleRevokePermission => R::RoleRevokePermission(decode(body)?),
    };
    Ok(AuthCall::Propose(r))
}

/// The credentials a call came with.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The simple token, as etcd 3.4's AuthInfoFromCtx finds it: the `token` metadata, else
    /// the `authorization` metadata (the value as sent, no `Bearer` scheme; empty is a
    /// token too, and an invalid one).
    pub token: Option<String>,
    /// The subject common name of the client certificate the connection's TLS handshake
    /// verified; the user of a call without a token when --client-cert-auth is on.
    pub common_name: Option<std::sync::Arc<str>>,
}

impl Caller {
    /// A caller from its metadata: `token` wins over `authorization` (each its first value).
    pub fn from_metadata(token: Option<&str>, authorization: Option<&str>) -> Caller {
        Caller {
            token: token.or(authorization).map(str::to_owned),
            common_name: None,
        }
    }
}

impl Api {
    /// etcd's AuthInfoFromCtx: None without a token; a token this member does not know is
    /// refused. The revision is the auth revision current now, which a write's apply
    /// compares with its own.
    pub fn auth_info(&self, caller: &Caller) -> Result<Option<AuthInfo>, Status> {
        let Some(token) = &caller.token else {
            // etcd's AuthInfoFromTLS: with --client-cert-auth, a verified certificate's CN.
            return Ok(match &caller.common_name {
                Some(cn) if self.auth.options.client_cert_auth => Some(AuthInfo {
                    username: cn.to_string(),
                    revision: self.auth.view().revision,
                }),
                _ => None,
            });
        };
        if let Some(jwt) = &self.auth.options.jwt {
            return match jwt.verify(token) {
                Some(info) => Ok(Some(info)),
                None => Err(AuthError::InvalidAuthToken.into()),
            };
        }
        let user = self
            .auth
            .tokens
            .user(token)
            .ok_or(AuthError::InvalidAuthToken)?;
        Ok(Some(AuthInfo {
            username: user.to_string(),
            revision: self.auth.view().revision,
        }))
    }

    /// A simple token names the raft index it was issued at; a member that has not applied
    /// that index yet (a lagging follower) does not know it. etcd makes the request wait
    /// until the member has applied that index; so does corekv, up to [`TOKEN_WAIT`]. Only a
    /// token this member does not know pays for it.
    pub async fn await_token(&self, caller: &Caller) -> Result<(), Status> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(token) = &caller.token else {
            return Ok(());
        };
        if self.auth.options.jwt.is_some() {
            return Ok(());
        }
        let Some((_, index)) = tokens::parse(token) else {
            return Ok(());
        };
        let applied = || self.metrics.raft_applied_index.load(Relaxed);
        if applied() >= index || self.auth.tokens.user(token).is_some() {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + TOKEN_WAIT;
        while applied() < index && std::time::Instant::now() < deadline {
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// The header a client's write carries through raft.
    pub fn auth_header(&self, caller: &Caller) -> Result<AuthHeader, Status> {
        Ok(match self.auth_info(caller)? {
            Some(i) => AuthHeader {
                username: i.username,
                revision: i.revision,
            },
            None => AuthHeader::default(),
        })
    }

    /// Serves one Auth service call.
    pub async fn auth_unary(
        &self,
        method: AuthMethod,
        body: &[u8],
        caller: &Caller,
    ) -> Result<Bytes, Status> {
        let request = match decode_auth(method, body)? {
            AuthCall::Authenticate(r) => return self.authenticate(r, caller).await,
            AuthCall::UserAdd(r) => {
                let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
                let hashed_password = if no_password {
                    Bytes::new()
                } else {
                    self.hash_password(r.password).await?
                };
                R::UserAdd(corekv::AuthUserAdd {
                    name: r.name,
                    hashed_password,
                    options: r.options,
                })
            }
            AuthCall::UserChangePassword(r) => {
                R::UserChangePassword(corekv::AuthUserChangePassword {
                    name: r.name,
                    hashed_password: self.hash_password(r.password).await?,
                })
            }
            AuthCall::Propose(r) => r,
        };
        let resp = self.propose_auth(request, caller).await?;
        Ok(resp.encode())
    }

    async fn propose_auth(&self, request: R, caller: &Caller) -> Result<AuthResponse, Status> {
        self.until_published().await?;
        if self.learner() {
            return Err(super::not_for_learners());
        }
        self.await_token(caller).await?;
        let header = self.auth_header(caller)?;
        let request = Request::AsUser(header, Box::new(Request::Auth(request)));
        match self.core.call(request).await? {
            Response::Auth(resp) => Ok(resp),
            other => Err(Status::internal(format!(
                "the core answered an auth request with {other:?}"
            ))),
        }
    }

    /// bcrypt at --bcrypt-cost on this executor's blocking thread; Go's `$2a$` form, as
    /// etcd stores it.
    async fn hash_password(&self, password: String) -> Result<Bytes, Status> {
        let cost = self.auth.options.bcrypt_cost;
        let hashed = glommio::executor()
            .spawn_blocking(move || bcrypt::hash_with_result(password, cost))
            .await
            .map_err(|e| Status::internal(format!("bcrypt: {e}")))?;
        Ok(Bytes::from(
            hashed
                .format_for_version(bcrypt::Version::TwoA)
                .into_bytes(),
        ))
    }

    /// etcd's Authenticate: check the password against the hash at auth revision r, then
    /// propose the token; if the auth state moved past r meanwhile, check again.
    async fn authenticate(
        &self,
        r: pb::AuthenticateRequest,
        caller: &Caller,
    ) -> Result<Bytes, Status> {
        self.until_published().await?;
        loop {
            let check = match self
                .core
                .call(Request::PasswordCheck(r.name.clone()))
                .await?
            {
                Response::PasswordCheck(c) => c,
                other => {
                    return Err(Status::internal(format!(
                        "the core answered a password check with {other:?}"
                    )))
                }
            };
            if !check.enabled {
                return Err(AuthError::AuthNotEnabled.into());
            }
            if check.no_password {
                // etcd's ErrNoPasswordUser, which its API layer does not map: gRPC's Unknown.
                return Err(Status::new(
                    crate::net::grpc::Code::Unknown,
                    "auth: authentication failed, password was given for no password user",
                ));
            }
            let password = r.password.clone();
            let matches = match check.hash {
                None => false,
                Some(hash) => {
                    glommio::executor()
                        .spawn_blocking(move || {
                            let hash = String::from_utf8_lossy(&hash);
                            bcrypt::verify(password, &hash).unwrap_or(false)
                        })
                        .await
                }
            };
            if !matches {
                tracing::warn!(user = %r.name, "invalid authentication was requested");
                return Err(AuthError::AuthFailed.into());
            }
            let simple_token_prefix = if self.auth.options.jwt.is_some() {
                String::new()
            } else {
                tokens::random_prefix()
                    .map_err(|e| Status::internal(format!("no random bytes for a token: {e}")))?
            };
            let request = R::Authenticate(corekv::Authenticate {
                name: r.name.clone(),
                simple_token_prefix,
                checked_revision: check.revision,
            });
            match self.propose_auth(request, caller).await? {
                AuthResponse::Authenticate(resp) if resp.token.is_empty() => {
                    tracing::info!("revision when password checked became stale; retrying");
                }
                AuthResponse::Jwt {
                    header,
                    username,
                    revision,
                } => {
                    let jwt = self.auth.options.jwt.as_ref().expect("proposed as JWT");
                    let token = jwt
                        .sign(&username, revision)
                        .map_err(|e| Status::new(crate::net::grpc::Code::Unknown, e))?;
                    let resp = pb::AuthenticateResponse { header, token };
                    return Ok(crate::net::grpc::encode_message(&resp));
                }
                resp => return Ok(resp.encode()),
            }
        }
    }
}
