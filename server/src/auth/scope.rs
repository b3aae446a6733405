//! What a caller may see: the one set of read rules that every listing, report and figure of
//! the API applies, so a snapshot list, a compliance report, a usage document and a metrics
//! scrape never disagree about who sees what.
//!
//! * Tenants: a caller sees its own tenant, a superuser (and its tokens) every tenant. What
//!   belongs to a tenant the caller cannot see is answered as if it did not exist.
//! * Privileges on `/datastore/{store}/{ns…}` come from the ACL with propagation; a token gets
//!   its own entries intersected with its user's (see [`AuthService::privileges`]).
//! * A datastore is listed with Datastore.Audit or Datastore.Backup on it, or with any entry
//!   on a namespace below it. A namespace is listed with any privilege on it.
//! * Groups of a namespace, and their snapshots: every group with Datastore.Audit or
//!   Datastore.Read there; with Datastore.Backup alone only the groups the caller owns (the
//!   owner is the caller itself, or a token of the calling user); none otherwise.
//! * Store figures (usage counters, request counts, job history, event counters) count
//!   everything in a datastore, whoever owns it, so they need Datastore.Audit or
//!   Datastore.Modify on the datastore itself. Capacity (total/used/avail, as PBS reports it)
//!   needs Datastore.Audit or Datastore.Backup there.
//! * Tenant figures (tenant totals, quota, quota warning) need Sys.Audit on `/` and a tenant
//!   the caller sees: a tenant's administrator sees its own, a superuser every tenant. A token
//!   of a superuser is limited by its own ACL entries here too.
//! * Server figures (the webhook queue) belong to superusers only.

use super::ids::Authid;
use super::privileges::Privileges;
use super::service::{owner_matches, AuthService, Identity};
use crate::format::names::BackupNamespace;

/// How many groups of a namespace a caller sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupAccess {
    /// Every group (Datastore.Audit or Datastore.Read).
    All,
    /// Only the caller's own groups (Datastore.Backup alone).
    Owned,
    /// No group.
    Nothing,
}

impl GroupAccess {
    /// The access that `privs` on a namespace give.
    pub fn from_privileges(privs: Privileges) -> Self {
        if privs.intersects(Privileges::AUDIT | Privileges::READ) {
            GroupAccess::All
        } else if privs.contains(Privileges::BACKUP) {
            GroupAccess::Owned
        } else {
            GroupAccess::Nothing
        }
    }

    /// Whether `caller` sees a group whose owner is `owner` (`None`: no owner recorded).
    pub fn admits(self, caller: &Authid, owner: Option<&str>) -> bool {
        match self {
            GroupAccess::All => true,
            GroupAccess::Owned => owner.is_some_and(|o| owner_matches(caller, o)),
            GroupAccess::Nothing => false,
        }
    }

    /// True when the owner decides (so callers only read it then).
    pub fn needs_owner(self) -> bool {
        self == GroupAccess::Owned
    }
}

/// One caller's view of the server.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    auth: &'a AuthService,
    id: &'a Identity,
}

impl<'a> Scope<'a> {
    pub fn new(auth: &'a AuthService, id: &'a Identity) -> Self {
        Self { auth, id }
    }

    pub fn identity(&self) -> &'a Identity {
        self.id
    }

    /// Whether anything of `tenant` exists for the caller.
    pub fn sees_tenant(&self, tenant: &str) -> bool {
        self.auth.can_see_tenant(self.id, tenant)
    }

    /// Whether the caller sees `tenant`'s tenant-wide figures (totals, quota).
    pub fn tenant_figures(&self, tenant: &str) -> bool {
        self.sees_tenant(tenant)
            && self
                .auth
                .root_privileges(self.id)
                .contains(Privileges::SYS_AUDIT)
    }

    /// Whether the caller sees figures of the whole server (the webhook queue).
    pub fn server_figures(&self) -> bool {
        self.id.superuser
            && self
                .auth
                .root_privileges(self.id)
                .contains(Privileges::SYS_AUDIT)
    }

    /// The caller's view of datastore `store` of tenant `tenant`.
    pub fn store(&self, store: &str, tenant: &str) -> StoreScope<'a> {
        StoreScope {
            scope: *self,
            store: store.to_string(),
            tenant: tenant.to_string(),
        }
    }
}

/// One caller's view of one datastore.
#[derive(Clone)]
pub struct StoreScope<'a> {
    scope: Scope<'a>,
    store: String,
    tenant: String,
}

impl StoreScope<'_> {
    /// Privileges on `/datastore/{store}/{ns…}` (empty for another tenant's store).
    pub fn privileges(&self, ns: &BackupNamespace) -> Privileges {
        self.scope
            .auth
            .privileges(self.scope.id, &self.store, &self.tenant, ns)
    }

    fn root_privileges(&self) -> Privileges {
        self.privileges(&BackupNamespace::root())
    }

    /// Whether the datastore appears in the caller's lists.
    pub fn listed(&self) -> bool {
        let id = self.scope.id;
        if !self.scope.sees_tenant(&self.tenant) {
            return false;
        }
        if self
            .root_privileges()
            .intersects(Privileges::AUDIT | Privileges::BACKUP)
        {
            return true;
        }
        let auth = self.scope.auth;
        let user = Authid::from(id.authid.user().clone());
        let user_has = id.superuser || auth.has_acl_entry_below(&user, &self.store);
        if id.authid.is_token() {
            user_has && auth.has_acl_entry_below(&id.authid, &self.store)
        } else {
            user_has
        }
    }

    /// Whether namespace `ns` appears in the caller's namespace list.
    pub fn namespace_listed(&self, ns: &BackupNamespace) -> bool {
        !self.privileges(ns).is_empty()
    }

    /// Which groups of namespace `ns` the caller sees.
    pub fn groups(&self, ns: &BackupNamespace) -> GroupAccess {
        GroupAccess::from_privileges(self.privileges(ns))
    }

    /// Whether the caller sees a group of `ns` owned by `owner`.
    pub fn sees_group(&self, ns: &BackupNamespace, owner: Option<&str>) -> bool {
        self.groups(ns).admits(&self.scope.id.authid, owner)
    }

    /// Whether the caller sees the datastore's capacity (total, used, available).
    pub fn capacity(&self) -> bool {
        self.root_privileges()
            .intersects(Privileges::AUDIT | Privileges::BACKUP)
    }

    /// Whether the caller sees figures that count the whole datastore.
    pub fn figures(&self) -> bool {
        self.root_privileges()
            .intersects(Privileges::AUDIT | Privileges::MODIFY)
    }

    /// The caller's authid (owner comparisons).
    pub fn caller(&self) -> &Authid {
        &self.scope.id.authid
    }
}

impl AuthService {
    /// The view of `id` (see the module documentation for the rules).
    pub fn scope<'a>(&'a self, id: &'a Identity) -> Scope<'a> {
        Scope::new(self, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_access_follows_the_privileges() {
        let alice: Authid = "alice@pbs".parse().unwrap();
        let token: Authid = "alice@pbs!ci".parse().unwrap();
        let all = GroupAccess::from_privileges(Privileges::AUDIT | Privileges::BACKUP);
        assert_eq!(all, GroupAccess::All);
        assert_eq!(
            GroupAccess::from_privileges(Privileges::READ),
            GroupAccess::All
        );
        assert!(all.admits(&alice, None) && !all.needs_owner());
        let owned = GroupAccess::from_privileges(Privileges::BACKUP | Privileges::PRUNE);
        assert_eq!(owned, GroupAccess::Owned);
        assert!(owned.admits(&alice, Some("alice@pbs")));
        // a user sees its tokens' groups, a token not its user's
        assert!(owned.admits(&alice, Some("alice@pbs!ci")));
        assert!(!owned.admits(&token, Some("alice@pbs")));
        assert!(!owned.admits(&alice, Some("bob@pbs")));
        assert!(!owned.admits(&alice, None));
        let none = GroupAccess::from_privileges(Privileges::MODIFY | Privileges::VERIFY);
        assert_eq!(none, GroupAccess::Nothing);
        assert!(!none.admits(&alice, Some("alice@pbs")));
    }
}
