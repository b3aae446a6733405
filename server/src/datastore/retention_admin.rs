//! Admin operations on the lock of one snapshot (superusers, through the API): lift or set
//! its legal hold, and extend its retain-until date (never shorten it).

use crate::backend::lock::LockMode;
use crate::format::names::{BackupDir, BackupNamespace};

use super::layout::{snapshot_label, snapshot_prefix};
use super::retention::SnapshotLockInfo;
use super::retention::{round_up_to_generation, SnapshotLock};
use super::{Datastore, DatastoreError};

impl Datastore {
    fn locked_snapshot(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<(String, SnapshotLockInfo), DatastoreError> {
        let prefix = snapshot_prefix(ns, dir)?;
        match self.retention.snapshot(&prefix) {
            Some(info) => Ok((prefix, info)),
            None => Err(DatastoreError::Invalid(format!(
                "snapshot {} is not under a retention lock",
                snapshot_label(ns, dir)
            ))),
        }
    }

    /// Set or lift the legal hold of a locked snapshot's objects (the current versions).
    pub async fn set_snapshot_legal_hold(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
        on: bool,
    ) -> Result<SnapshotLockInfo, DatastoreError> {
        let (prefix, mut info) = self.locked_snapshot(ns, dir)?;
        if let Some(ol) = self.backend.object_lock() {
            for obj in self.backend.list(&prefix, None).await?.objects {
                ol.set_legal_hold(&obj.key, on).await?;
            }
        }
        info.legal_hold = on;
        self.retention
            .record_snapshot(self.backend.as_ref(), &prefix, info.clone())
            .await?;
        Ok(info)
    }

    /// Extend a locked snapshot (its objects and every chunk it references) until at least
    /// `until` (rounded up to a generation boundary). Shortening is refused.
    pub async fn extend_snapshot_lock(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
        until: i64,
    ) -> Result<SnapshotLockInfo, DatastoreError> {
        let (prefix, mut info) = self.locked_snapshot(ns, dir)?;
        let until = round_up_to_generation(until, self.retention.generation_days());
        if until < info.retain_until {
            return Err(DatastoreError::Invalid(format!(
                "snapshot {} is locked ({}) until {}: a retention lock can be extended, never \
                 shortened",
                snapshot_label(ns, dir),
                info.mode,
                info.retain_until
            )));
        }
        let lock = SnapshotLock {
            mode: LockMode::parse(&info.mode).unwrap_or(LockMode::Compliance),
            retain_until: until,
            legal_hold: info.legal_hold,
        };
        if let Some(ol) = self.backend.object_lock() {
            self.lock_snapshot_objects(ol, &prefix, lock).await?;
        }
        info.retain_until = until;
        self.retention
            .record_snapshot(self.backend.as_ref(), &prefix, info.clone())
            .await?;
        Ok(info)
    }
}
