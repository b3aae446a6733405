//! What every handler gets (state, caller, parameters, raw body) and the shared checks:
//! datastore lookup with tenant isolation, privilege checks with PBS's ownership rule, and the
//! mapping of lower-layer errors to HTTP answers.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use crate::auth::{owner_matches, Identity, Privileges, Scope, StoreScope};
use crate::datastore::{Datastore, DatastoreError};
use crate::format::names::{BackupGroup, BackupNamespace};
use crate::net::{HttpError, Params};
use crate::state::{AppState, DatastoreEntry};

/// One authenticated API call.
pub struct Ctx {
    pub state: Arc<AppState>,
    pub id: Identity,
    pub params: Params,
    /// Raw request body (only meaningful for raw uploads).
    pub body: Bytes,
}

/// Maps datastore errors to status codes: missing things are 404, server faults 500, and
/// everything the caller can fix 400.
pub fn ds_error(err: DatastoreError) -> HttpError {
    let status = match &err {
        e if e.is_not_found() => StatusCode::NOT_FOUND,
        DatastoreError::Backend(_)
        | DatastoreError::Internal(_)
        | DatastoreError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    HttpError::new(status, err.to_string())
}

impl Ctx {
    /// The datastore `name` if the caller's tenant may see it; a store of another tenant is
    /// reported exactly like a missing one.
    pub fn store(&self, name: &str) -> Result<Arc<DatastoreEntry>, HttpError> {
        match self.state.datastore(name) {
            Some(entry) if self.state.auth.can_see_tenant(&self.id, &entry.tenant) => Ok(entry),
            _ => Err(HttpError::not_found(format!(
                "datastore '{name}' does not exist"
            ))),
        }
    }

    /// What the caller may see (the shared read rules of [`crate::auth::scope`]).
    pub fn scope(&self) -> Scope<'_> {
        self.state.auth.scope(&self.id)
    }

    /// What the caller may see of one datastore.
    pub fn store_scope(&self, entry: &DatastoreEntry) -> StoreScope<'_> {
        self.scope().store(&entry.name, &entry.tenant)
    }

    /// The caller's privileges on `/datastore/{store}/{ns}`.
    pub fn privs(&self, entry: &DatastoreEntry, ns: &BackupNamespace) -> Privileges {
        self.state
            .auth
            .privileges(&self.id, &entry.name, &entry.tenant, ns)
    }

    /// Requires at least one privilege of `any` on the namespace; returns all privileges.
    pub fn require_any(
        &self,
        entry: &DatastoreEntry,
        ns: &BackupNamespace,
        any: Privileges,
    ) -> Result<Privileges, HttpError> {
        let privs = self.privs(entry, ns);
        if privs.intersects(any) {
            Ok(privs)
        } else {
            Err(HttpError::forbidden())
        }
    }

    /// PBS's group rule: one of the `full` privileges allows access to any group; one of the
    /// `owned` privileges only to groups the caller owns.
    pub async fn check_group(
        &self,
        entry: &DatastoreEntry,
        ns: &BackupNamespace,
        group: &BackupGroup,
        full: Privileges,
        owned: Privileges,
    ) -> Result<(), HttpError> {
        let privs = self.privs(entry, ns);
        if privs.intersects(full) {
            return Ok(());
        }
        if privs.intersects(owned) && self.owns(&entry.store, ns, group).await? {
            return Ok(());
        }
        Err(HttpError::forbidden())
    }

    /// Whether the caller owns `group` (token-of-user rule, docs/protocol.md#group-ownership).
    pub async fn owns(
        &self,
        store: &Datastore,
        ns: &BackupNamespace,
        group: &BackupGroup,
    ) -> Result<bool, HttpError> {
        let owner = store
            .tree()
            .group_owner(ns, group)
            .await
            .map_err(ds_error)?;
        Ok(owner.is_some_and(|o| owner_matches(&self.id.authid, &o)))
    }
}
