//! Users, roles, permissions and tokens, as etcd 3.4's auth store.
//!
//! - `store`: the applied auth state (users, roles, enabled flag, auth revision) in the
//!   backend's auth buckets; the consensus core changes it only by applying committed
//!   requests.
//! - `view`: an immutable copy of what permission checks need, published by the core after
//!   every change, so network executors check reads without crossing to the core.
//! - `perms`: the merged key ranges a user may read or write.
//! - `tokens`: simple tokens and their TTL, which live outside the consensus core (it reads
//!   no clock): the core registers and invalidates them, network executors look them up.

pub mod jwt;
pub mod perms;
pub mod store;
pub mod tokens;
pub mod view;

use std::sync::{Arc, RwLock};

use crate::net::grpc::{Code, Status};

pub use view::AuthView;

/// The user etcd gives every power to, and the role that carries it.
pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

/// Who a request comes from: the user its token names, and the auth revision current when
/// the token was looked up (a request checked at apply against a newer revision fails with
/// [`AuthError::OldRevision`], as in etcd).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub username: String,
    pub revision: u64,
}

/// etcd's auth errors, with the gRPC status its API answers each with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    OldRevision,
}

impl AuthError {
    pub fn code(self) -> Code {
        use AuthError::*;
        match self {
            UserEmpty | RoleEmpty | AuthFailed | InvalidAuthMgmt | OldRevision => {
                Code::InvalidArgument
            }
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            RootUserNotExist | RootRoleNotExist | UserAlreadyExist | UserNotFound
            | RoleAlreadyExist | RoleNotFound | RoleNotGranted | PermissionNotGranted
            | AuthNotEnabled => Code::FailedPrecondition,
        }
    }
}

impl AuthError {
    /// The status etcd's maintenance calls (Defragment, Hash, HashKV, Snapshot) answer a
    /// refused caller with: etcd returns its auth store's error there without mapping it to
    /// a gRPC error, so clients see code Unknown and the store's own text.
    pub fn unmapped(self) -> Status {
        let text = match self {
            AuthError::UserNotFound => "auth: user not found".to_owned(),
            other => other.to_string().replace("etcdserver: ", "auth: "),
        };
        Status::new(Code::Unknown, text)
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// Settings from the flags.
#[derive(Clone, Debug)]
pub struct AuthOptions {
    /// --bcrypt-cost.
    pub bcrypt_cost: u32,
    /// --auth-token-ttl, in seconds.
    pub token_ttl_secs: u64,
    /// --auth-token jwt,…: tokens are JWTs signed and checked with these keys (else simple).
    pub jwt: Option<Arc<jwt::JwtTokens>>,
    /// --client-cert-auth: a verified client certificate's CN is the user of a call that
    /// carries no token.
    pub client_cert_auth: bool,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            bcrypt_cost: 10,
            token_ttl_secs: 300,
            jwt: None,
            client_cert_auth: false,
        }
    }
}

/// What the consensus core and every network executor share: the published view of the
/// auth state and the simple tokens.
pub struct AuthShared {
    view: RwLock<Arc<AuthView>>,
    pub tokens: tokens::SimpleTokens,
    pub options: AuthOptions,
}

impl AuthShared {
    pub fn new(options: AuthOptions) -> AuthShared {
        AuthShared {
            view: RwLock::new(Arc::new(AuthView::default())),
            tokens: tokens::SimpleTokens::new(options.token_ttl_secs),
            options,
        }
    }

    /// The auth state as last applied.
    pub fn view(&self) -> Arc<AuthView> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Called by the core after it applied a change (or loaded the state).
    pub fn publish(&self, view: Arc<AuthView>) {
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
