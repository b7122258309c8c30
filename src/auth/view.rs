//! The auth state as permission checks need it, immutable once built: the core builds one
//! after every auth change and checks writes at apply with it; network executors hold the
//! published copy and check reads, watches and admin calls with it before they reach the
//! core (as etcd checks those in its API layer).

use std::collections::HashMap;

use super::perms::{Access, RangePerms};
use super::{AuthError, AuthInfo};
use crate::proto::etcdserverpb as pb;

/// One user as the checks see them.
#[derive(Clone, Debug, Default)]
pub struct UserView {
    /// Holds the root role: may do everything.
    pub root: bool,
    pub roles: Vec<String>,
    pub perms: RangePerms,
}

#[derive(Clone, Debug, Default)]
pub struct AuthView {
    pub enabled: bool,
    /// The auth revision: grows with every change to users, roles or permissions.
    pub revision: u64,
    pub users: HashMap<String, UserView>,
}

impl AuthView {
    /// etcd's isOpPermitted. `info` None is a request without credentials.
    pub fn check_op(
        &self,
        info: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(info) = info.filter(|i| i.revision != 0) else {
            return Err(AuthError::UserEmpty);
        };
        if info.revision < self.revision {
            return Err(AuthError::OldRevision);
        }
        let Some(user) = self.users.get(&info.username) else {
            return Err(AuthError::PermissionDenied);
        };
        if user.root || user.perms.permits(key, range_end, access) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    pub fn check_range(
        &self,
        info: Option<&AuthInfo>,
        key: &[u8],
        end: &[u8],
    ) -> Result<(), AuthError> {
        self.check_op(info, key, end, Access::Read)
    }

    pub fn check_put(&self, info: Option<&AuthInfo>, key: &[u8]) -> Result<(), AuthError> {
        self.check_op(info, key, &[], Access::Write)
    }

    /// etcd's IsAdminPermitted: the caller holds the root role.
    pub fn check_admin(&self, info: Option<&AuthInfo>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(info) = info.filter(|i| !i.username.is_empty()) else {
            return Err(AuthError::UserEmpty);
        };
        match self.users.get(&info.username) {
            None => Err(AuthError::UserNotFound),
            Some(u) if !u.root => Err(AuthError::PermissionDenied),
            Some(_) => Ok(()),
        }
    }

    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    pub fn check_delete_range(
        &self,
        info: Option<&AuthInfo>,
        r: &pb::DeleteRangeRequest,
    ) -> Result<(), AuthError> {
        self.check_op(info, &r.key, &r.range_end, Access::Write)?;
        if r.prev_kv {
            self.check_range(info, &r.key, &r.range_end)?;
        }
        Ok(())
    }

    /// etcd's checkTxnAuth: every compare reads, every op of both branches as itself
    /// (nested txns are not looked into, as in etcd 3.4).
    pub fn check_txn(&self, info: Option<&AuthInfo>, t: &pb::TxnRequest) -> Result<(), AuthError> {
        use pb::request_op::Request as Op;
        for c in &t.compare {
            self.check_range(info, &c.key, &c.range_end)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Op::RequestRange(r)) => self.check_range(info, &r.key, &r.range_end)?,
                Some(Op::RequestPut(p)) => self.check_put(info, &p.key)?,
                Some(Op::RequestDeleteRange(d)) => {
                    if d.prev_kv {
                        self.check_range(info, &d.key, &d.range_end)?;
                    }
                    self.check_op(info, &d.key, &d.range_end, Access::Write)?;
                }
                Some(Op::RequestTxn(_)) | None => {}
            }
        }
        Ok(())
    }
}
