//! The applied auth state, kept in the backend as etcd keeps it: the `auth` bucket holds
//! `authEnabled` (one byte) and `authRevision` (8 bytes big-endian), `authUsers` and
//! `authRoles` hold authpb.User and authpb.Role by name. Only the consensus core changes it,
//! by applying committed requests with etcd 3.4's rules (auth/store.go); every change that
//! etcd counts bumps the auth revision and publishes a new [`AuthView`].

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::perms::RangePerms;
use super::view::UserView;
use super::{AuthError, AuthInfo, AuthShared, AuthView, ROOT_ROLE, ROOT_USER};
use crate::proto::authpb;
use crate::proto::corekvpb::{raft_request::Request as R, AuthHeader};
use crate::proto::etcdserverpb as pb;
use crate::storage::{Bucket, ReadTxn};

const ENABLED_KEY: &[u8] = b"authEnabled";
const REVISION_KEY: &[u8] = b"authRevision";

/// Where the store writes its changes (the core's backend overlay).
pub trait AuthWrites {
    fn put(&mut self, bucket: Bucket, key: &[u8], value: &[u8]);
    fn delete(&mut self, bucket: Bucket, key: &[u8]);
}

/// The answer to an applied auth request.
#[derive(Debug)]
pub enum AuthResponse {
    Enable(pb::AuthEnableResponse),
    Disable(pb::AuthDisableResponse),
    /// An empty token means the auth state changed after the password was checked: the
    /// member that took the request checks it again (etcd's retry loop in Authenticate).
    Authenticate(pb::AuthenticateResponse),
    /// Authenticate with JWT tokens (the request carried no simple token part): the member
    /// that took the request signs a token for this user and auth revision.
    Jwt {
        header: Option<pb::ResponseHeader>,
        username: String,
        revision: u64,
    },
    UserAdd(pb::AuthUserAddResponse),
    UserGet(pb::AuthUserGetResponse),
    UserList(pb::AuthUserListResponse),
    UserDelete(pb::AuthUserDeleteResponse),
    UserChangePassword(pb::AuthUserChangePasswordResponse),
    UserGrantRole(pb::AuthUserGrantRoleResponse),
    UserRevokeRole(pb::AuthUserRevokeRoleResponse),
    RoleAdd(pb::AuthRoleAddResponse),
    RoleGet(pb::AuthRoleGetResponse),
    RoleList(pb::AuthRoleListResponse),
    RoleDelete(pb::AuthRoleDeleteResponse),
    RoleGrantPermission(pb::AuthRoleGrantPermissionResponse),
    RoleRevokePermission(pb::AuthRoleRevokePermissionResponse),
}

impl AuthResponse {
    pub fn encode(&self) -> Bytes {
        use crate::net::grpc::encode_message as e;
        match self {
            AuthResponse::Enable(r) => e(r),
            AuthResponse::Disable(r) => e(r),
            AuthResponse::Authenticate(r) => e(r),
            AuthResponse::Jwt { .. } => unreachable!("a JWT is signed before it is answered"),
            AuthResponse::UserAdd(r) => e(r),
            AuthResponse::UserGet(r) => e(r),
            AuthResponse::UserList(r) => e(r),
            AuthResponse::UserDelete(r) => e(r),
            AuthResponse::UserChangePassword(r) => e(r),
            AuthResponse::UserGrantRole(r) => e(r),
            AuthResponse::UserRevokeRole(r) => e(r),
            AuthResponse::RoleAdd(r) => e(r),
            AuthResponse::RoleGet(r) => e(r),
            AuthResponse::RoleList(r) => e(r),
            AuthResponse::RoleDelete(r) => e(r),
            AuthResponse::RoleGrantPermission(r) => e(r),
            AuthResponse::RoleRevokePermission(r) => e(r),
        }
    }

    pub fn header_mut(&mut self) -> &mut Option<pb::ResponseHeader> {
        match self {
            AuthResponse::Enable(r) => &mut r.header,
            AuthResponse::Disable(r) => &mut r.header,
            AuthResponse::Authenticate(r) => &mut r.header,
            AuthResponse::Jwt { header, .. } => header,
            AuthResponse::UserAdd(r) => &mut r.header,
            AuthResponse::UserGet(r) => &mut r.header,
            AuthResponse::UserList(r) => &mut r.header,
            AuthResponse::UserDelete(r) => &mut r.header,
            AuthResponse::UserChangePassword(r) => &mut r.header,
            AuthResponse::UserGrantRole(r) => &mut r.header,
            AuthResponse::UserRevokeRole(r) => &mut r.header,
            AuthResponse::RoleAdd(r) => &mut r.header,
            AuthResponse::RoleGet(r) => &mut r.header,
            AuthResponse::RoleList(r) => &mut r.header,
            AuthResponse::RoleDelete(r) => &mut r.header,
            AuthResponse::RoleGrantPermission(r) => &mut r.header,
            AuthResponse::RoleRevokePermission(r) => &mut r.header,
        }
    }
}

/// What a user's password check needs, read at one auth revision.
#[derive(Clone, Debug)]
pub struct PasswordCheck {
    pub enabled: bool,
    pub revision: u64,
    /// The bcrypt hash; None when the user is missing or has no password.
    pub hash: Option<Vec<u8>>,
    /// The user exists and was added without a password (etcd refuses it with its own
    /// error, not the failed-authentication one).
    pub no_password: bool,
}

pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, authpb::User>,
    roles: BTreeMap<String, authpb::Role>,
    view: Arc<AuthView>,
    shared: Arc<AuthShared>,
}

fn decode_error(what: &str, e: prost::DecodeError) -> String {
    format!("a stored auth {what} does not decode: {e}")
}

fn name_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl AuthStore {
    /// Reads the auth state from a backend and publishes it.
    pub fn load(txn: &ReadTxn, shared: Arc<AuthShared>) -> Result<AuthStore, String> {
        let get = |k: &[u8]| txn.get(Bucket::Auth, k).map_err(|e| e.to_string());
        let enabled = get(ENABLED_KEY)? == Some(&[1u8][..]);
        let revision = match get(REVISION_KEY)? {
            Some(b) if b.len() == 8 => u64::from_be_bytes(b.try_into().expect("8 bytes")),
            Some(b) => return Err(format!("the auth revision has {} bytes, not 8", b.len())),
            None => 0,
        };
        let mut users = BTreeMap::new();
        for item in txn.range(Bucket::AuthUsers, Bound::Unbounded, Bound::Unbounded, false) {
            let (k, v) = item.map_err(|e| e.to_string())?;
            let u = authpb::User::decode(v).map_err(|e| decode_error("user", e))?;
            users.insert(name_of(k), u);
        }
        let mut roles = BTreeMap::new();
        for item in txn.range(Bucket::AuthRoles, Bound::Unbounded, Bound::Unbounded, false) {
            let (k, v) = item.map_err(|e| e.to_string())?;
            let r = authpb::Role::decode(v).map_err(|e| decode_error("role", e))?;
            roles.insert(name_of(k), r);
        }
        let mut store = AuthStore {
            enabled,
            // etcd starts a store that never changed at revision 1: revision 0 in a request
            // means "no user".
            revision: revision.max(1),
            users,
            roles,
            view: Arc::default(),
            shared,
        };
        store.publish();
        if !store.enabled {
            store.shared.tokens.clear();
        }
        Ok(store)
    }

    pub fn view(&self) -> &Arc<AuthView> {
        &self.view
    }

    pub fn shared(&self) -> &Arc<AuthShared> {
        &self.shared
    }

    fn publish(&mut self) {
        let users = self
            .users
            .iter()
            .map(|(name, u)| {
                let perms = RangePerms::merge(
                    u.roles
                        .iter()
                        .filter_map(|r| self.roles.get(r))
                        .flat_map(|r| &r.key_permission),
                );
                let view = UserView {
                    root: u.roles.iter().any(|r| r == ROOT_ROLE),
                    roles: u.roles.clone(),
                    perms,
                };
                (name.clone(), view)
            })
            .collect();
        self.view = Arc::new(AuthView {
            enabled: self.enabled,
            revision: self.revision,
            users,
        });
        self.shared.publish(self.view.clone());
    }

    /// A user's password hash, for Authenticate's check off the core.
    pub fn password_check(&self, name: &str) -> PasswordCheck {
        let user = self.users.get(name);
        let no_password = user.is_some_and(|u| u.options.as_ref().is_some_and(|o| o.no_password));
        let hash = user.filter(|_| !no_password).map(|u| u.password.to_vec());
        PasswordCheck {
            enabled: self.enabled,
            revision: self.revision,
            hash,
            no_password,
        }
    }

    fn commit_revision(&mut self, w: &mut dyn AuthWrites) {
        self.revision += 1;
        w.put(Bucket::Auth, REVISION_KEY, &self.revision.to_be_bytes());
    }

    fn put_user(&mut self, u: authpb::User, w: &mut dyn AuthWrites) {
        w.put(Bucket::AuthUsers, &u.name, &u.encode_to_vec());
        self.users.insert(name_of(&u.name), u);
    }

    fn put_role(&mut self, r: authpb::Role, w: &mut dyn AuthWrites) {
        w.put(Bucket::AuthRoles, &r.name, &r.encode_to_vec());
        self.roles.insert(name_of(&r.name), r);
    }

    /// Applies one auth request committed at raft index `index`. `header` is who sent it
    /// (None: the core itself). Requests other than auth ones are refused.
    pub fn apply(
        &mut self,
        index: u64,
        header: Option<&AuthHeader>,
        req: R,
        w: &mut dyn AuthWrites,
    ) -> Result<AuthResponse, AuthError> {
        let caller = header.map(|h| AuthInfo {
            username: h.username.clone(),
            revision: h.revision,
        });
        let admin = || match &caller {
            Some(c) => self.view.check_admin(Some(c)),
            None => Ok(()),
        };
        match &req {
            R::Authenticate(_) => {}
            // A user may read themselves, and the roles they hold, without root.
            R::UserGet(g) => {
                if let Err(e) = admin() {
                    if caller.as_ref().map(|c| c.username.as_str()) != Some(&g.name) {
                        return Err(e);
                    }
                }
            }
            R::RoleGet(g) => {
                if let Err(e) = admin() {
                    let holder = caller.as_ref().map_or("", |c| c.username.as_str());
                    if !self.view.has_role(holder, &g.role) {
                        return Err(e);
                    }
                }
            }
            _ => admin()?,
        }
        let resp = self.apply_unchecked(index, req, w)?;
        Ok(resp)
    }

    fn apply_unchecked(
        &mut self,
        index: u64,
        req: R,
        w: &mut dyn AuthWrites,
    ) -> Result<AuthResponse, AuthError> {
        use AuthResponse as A;
        let resp = match req {
            R::AuthEnable(_) => {
                if !self.enabled {
                    let root = self
                        .users
                        .get(ROOT_USER)
                        .ok_or(AuthError::RootUserNotExist)?;
                    if !root.roles.iter().any(|r| r == ROOT_ROLE) {
                        return Err(AuthError::RootRoleNotExist);
                    }
                    w.put(Bucket::Auth, ENABLED_KEY, &[1]);
                    self.enabled = true;
                    self.publish();
                }
                A::Enable(Default::default())
            }
            R::AuthDisable(_) => {
                if self.enabled {
                    w.put(Bucket::Auth, ENABLED_KEY, &[0]);
                    self.enabled = false;
                    self.commit_revision(w);
                    self.publish();
                    self.shared.tokens.clear();
                }
                A::Disable(Default::default())
            }
            R::Authenticate(a) => {
                if !self.enabled {
                    return Err(AuthError::AuthNotEnabled);
                }
                let user = self.users.get(&a.name).ok_or(AuthError::AuthFailed)?;
                if user.options.as_ref().is_some_and(|o| o.no_password) {
                    return Err(AuthError::AuthFailed);
                }
                if a.checked_revision != self.revision {
                    A::Authenticate(pb::AuthenticateResponse::default())
                } else if a.simple_token_prefix.is_empty() {
                    A::Jwt {
                        header: None,
                        username: a.name,
                        revision: self.revision,
                    }
                } else {
                    let token = self
                        .shared
                        .tokens
                        .assign(&a.simple_token_prefix, index, &a.name);
                    A::Authenticate(pb::AuthenticateResponse {
                        header: None,
                        token,
                    })
                }
            }
            R::UserAdd(u) => {
                if u.name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(&u.name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                let user = authpb::User {
                    name: Bytes::from(u.name.into_bytes()),
                    password: u.hashed_password,
                    roles: vec![],
                    options: Some(u.options.unwrap_or_default()),
                };
                self.put_user(user, w);
                self.commit_revision(w);
                self.publish();
                A::UserAdd(Default::default())
            }
            R::UserDelete(d) => {
                if self.enabled && d.name == ROOT_USER {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                if self.users.remove(&d.name).is_none() {
                    return Err(AuthError::UserNotFound);
                }
                w.delete(Bucket::AuthUsers, d.name.as_bytes());
                self.commit_revision(w);
                self.publish();
                self.shared.tokens.invalidate_user(&d.name);
                A::UserDelete(Default::default())
            }
            R::UserChangePassword(c) => {
                let mut user = self
                    .users
                    .get(&c.name)
                    .ok_or(AuthError::UserNotFound)?
                    .clone();
                user.password = c.hashed_password;
                self.put_user(user, w);
                self.commit_revision(w);
                self.publish();
                self.shared.tokens.invalidate_user(&c.name);
                A::UserChangePassword(Default::default())
            }
            R::UserGrantRole(g) => {
                let mut user = self
                    .users
                    .get(&g.user)
                    .ok_or(AuthError::UserNotFound)?
                    .clone();
                if g.role != ROOT_ROLE && !self.roles.contains_key(&g.role) {
                    return Err(AuthError::RoleNotFound);
                }
                if let Err(at) = user.roles.binary_search(&g.role) {
                    user.roles.insert(at, g.role);
                    self.put_user(user, w);
                    self.commit_revision(w);
                    self.publish();
                }
                A::UserGrantRole(Default::default())
            }
            R::UserRevokeRole(r) => {
                if self.enabled && r.name == ROOT_USER && r.role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let mut user = self
                    .users
                    .get(&r.name)
                    .ok_or(AuthError::UserNotFound)?
                    .clone();
                let before = user.roles.len();
                user.roles.retain(|x| *x != r.role);
                if user.roles.len() == before {
                    return Err(AuthError::RoleNotGranted);
                }
                self.put_user(user, w);
                self.commit_revision(w);
                self.publish();
                A::UserRevokeRole(Default::default())
            }
            R::UserGet(g) => {
                let user = self.users.get(&g.name).ok_or(AuthError::UserNotFound)?;
                A::UserGet(pb::AuthUserGetResponse {
                    header: None,
                    roles: user.roles.clone(),
                })
            }
            R::UserList(_) => A::UserList(pb::AuthUserListResponse {
                header: None,
                users: self.users.keys().cloned().collect(),
            }),
            R::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(&r.name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                let role = authpb::Role {
                    name: Bytes::from(r.name.into_bytes()),
                    key_permission: vec![],
                };
                self.put_role(role, w);
                self.commit_revision(w);
                self.publish();
                A::RoleAdd(Default::default())
            }
            R::RoleGet(g) => {
                let role = self.roles.get(&g.role).ok_or(AuthError::RoleNotFound)?;
                A::RoleGet(pb::AuthRoleGetResponse {
                    header: None,
                    perm: role.key_permission.clone(),
                })
            }
            R::RoleList(_) => A::RoleList(pb::AuthRoleListResponse {
                header: None,
                roles: self.roles.keys().cloned().collect(),
            }),
            R::RoleDelete(d) => {
                if self.enabled && d.role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                if self.roles.remove(&d.role).is_none() {
                    return Err(AuthError::RoleNotFound);
                }
                w.delete(Bucket::AuthRoles, d.role.as_bytes());
                let holders: Vec<authpb::User> = self
                    .users
                    .values()
                    .filter(|u| u.roles.contains(&d.role))
                    .cloned()
                    .collect();
                for mut u in holders {
                    u.roles.retain(|r| *r != d.role);
                    self.put_user(u, w);
                }
                self.commit_revision(w);
                self.publish();
                A::RoleDelete(Default::default())
            }
            R::RoleGrantPermission(g) => {
                let mut role = self
                    .roles
                    .get(&g.name)
                    .ok_or(AuthError::RoleNotFound)?
                    .clone();
                let perm = g.perm.unwrap_or_default();
                // As etcd: only the first permission at or after the key is looked at; the
                // same key and range end there is updated, anything else is added.
                let at = role.key_permission.partition_point(|p| p.key < perm.key);
                match role.key_permission.get_mut(at) {
                    Some(p) if p.key == perm.key && p.range_end == perm.range_end => {
                        p.perm_type = perm.perm_type;
                    }
                    _ => {
                        role.key_permission.push(perm);
                        role.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                self.put_role(role, w);
                self.commit_revision(w);
                self.publish();
                A::RoleGrantPermission(Default::default())
            }
            R::RoleRevokePermission(r) => {
                let mut role = self
                    .roles
                    .get(&r.role)
                    .ok_or(AuthError::RoleNotFound)?
                    .clone();
                let before = role.key_permission.len();
                role.key_permission
                    .retain(|p| p.key != r.key || p.range_end != r.range_end);
                if role.key_permission.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
                self.put_role(role, w);
                self.commit_revision(w);
                self.publish();
                A::RoleRevokePermission(Default::default())
            }
            // Not an auth request: apply.rs routes only auth requests here.
            _ => return Err(AuthError::InvalidAuthMgmt),
        };
        Ok(resp)
    }
}
