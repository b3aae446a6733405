//! Retention locks (WORM, docs/design.md#retention-locks, #tenants) of one datastore, owned by
//! [`RetentionLocks`]: the rules in force (`rules.rs`), the lock of every locked snapshot and
//! the retain-until date each chunk is known to carry (persisted, `records.rs`), the checks
//! that removal paths (forget, prune, group and namespace removal, moves, GC) make before they
//! delete anything (here), and the Object Lock requests when a backup in scope finishes, a
//! manifest is rewritten, or an admin extends a lock or sets a legal hold (`locking.rs`).
//!
//! On S3 every object of a locked snapshot and every chunk it references carries an Object
//! Lock retain-until at least as late as the snapshot's, so the bucket refuses version deletes
//! even from a compromised server. On the local backend only this server enforces the lock.

mod locking;
mod records;
mod rules;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::lock::{LifecycleRules, LockMode, ObjectLock};
use crate::backend::Backend;
use crate::format::names::{format_backup_time, BackupDir, BackupNamespace};
use crate::format::Digest;

use super::layout::{snapshot_label, snapshot_prefix};
use super::DatastoreError;

pub use records::RETENTION_PREFIX;
pub use rules::{
    lock_for, round_up_to_generation, ChunkLock, LockRule, SnapshotLock, DEFAULT_GENERATION_DAYS,
};

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

/// `enforced-by` of locks the bucket enforces.
pub const ENFORCED_BY_S3: &str = "s3-object-lock";
/// `enforced-by` on the local backend.
pub const ENFORCED_BY_SERVER: &str = "server";

/// Retention locks of a datastore, for its status.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RetentionStatus {
    /// Ids of the `[[retention_lock]]` rules in force.
    pub rules: Vec<String>,
    pub enforced_by: String,
    pub generation_days: u64,
    pub locked_snapshots: usize,
    pub locked_chunks: usize,
    /// Why configured locks could not be activated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn time_label(t: i64) -> String {
    format_backup_time(t).unwrap_or_else(|_| format!("{t} (Unix time)"))
}

/// The retention locks of one datastore: rules, records, checks and Object Lock requests.
pub struct RetentionLocks {
    /// Datastore name, for messages.
    store: String,
    /// The datastore's fenced backend.
    backend: Arc<dyn Backend>,
    inner: Mutex<records::Inner>,
}

impl RetentionLocks {
    fn object_lock(&self) -> Option<&dyn ObjectLock> {
        self.backend.object_lock()
    }

    /// `s3-object-lock` on object stores, `server` on the local backend.
    pub fn enforced_by(&self) -> &'static str {
        match self.backend.capabilities().retention_needs_object_lock {
            true => ENFORCED_BY_S3,
            false => ENFORCED_BY_SERVER,
        }
    }

    /// Activate the retention-lock rules of this datastore (start and reload). Refused when
    /// there are rules but the bucket has no S3 Object Lock; the reason also shows in status.
    pub async fn set_locks(
        &self,
        rules: Vec<LockRule>,
        generation_days: u64,
    ) -> Result<(), DatastoreError> {
        if !rules.is_empty() && self.backend.capabilities().retention_needs_object_lock {
            let enabled = match self.object_lock() {
                Some(ol) => ol.object_lock_enabled().await?,
                None => false,
            };
            if !enabled {
                let ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
                let why = format!(
                    "retention lock(s) {} cannot be activated on datastore '{}': its S3 bucket \
                     does not have Object Lock enabled, so the bucket could not enforce them. \
                     Use a bucket created with Object Lock (which also turns on versioning), or \
                     remove these [[retention_lock]] entries",
                    ids.join(", "),
                    self.store
                );
                self.set_error(Some(why.clone()));
                return Err(DatastoreError::Invalid(why));
            }
        }
        self.set_rules(rules, generation_days);
        Ok(())
    }

    /// The rules, enforcement and counts, for the datastore status.
    pub fn status(&self) -> RetentionStatus {
        RetentionStatus {
            rules: self.rules().into_iter().map(|r| r.id).collect(),
            enforced_by: self.enforced_by().to_string(),
            generation_days: self.generation_days(),
            locked_snapshots: self.snapshots().len(),
            locked_chunks: self.chunk_count(),
            error: self.error(),
        }
    }

    /// Install `[datastore.lifecycle]` rules for this datastore's prefix (S3 only; merges with
    /// the rules of other prefixes; running it again changes nothing).
    pub async fn install_lifecycle(&self, rules: &LifecycleRules) -> Result<(), DatastoreError> {
        rules.validate().map_err(|why| {
            DatastoreError::Invalid(format!("datastore '{}' lifecycle: {why}", self.store))
        })?;
        match self.object_lock() {
            Some(ol) => Ok(ol.install_lifecycle(rules).await?),
            None => Err(DatastoreError::Invalid(format!(
                "datastore '{}': lifecycle rules need an S3 datastore",
                self.store
            ))),
        }
    }

    /// Refuse to remove a snapshot that a retention lock still holds
    /// ([`DatastoreError::Locked`], naming the date until which it is held).
    pub(in crate::datastore) async fn check_removal(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<(), DatastoreError> {
        let prefix = snapshot_prefix(ns, dir)?;
        let Some(info) = self.snapshot(&prefix) else {
            return Ok(());
        };
        let label = snapshot_label(ns, dir);
        if info.legal_hold {
            return Err(DatastoreError::Locked(format!(
                "snapshot {label} is under legal hold (retention lock, {} until {}, enforced \
                 by {}); lift the hold first",
                info.mode,
                time_label(info.retain_until),
                info.enforced_by
            )));
        }
        if info.retain_until <= self.now() {
            // Passed: the snapshot may go, and its record with it.
            self.forget_snapshot(&prefix).await?;
            return Ok(());
        }
        if info.mode == LockMode::Governance.as_str() && self.bypassing(&prefix) {
            return Ok(());
        }
        Err(DatastoreError::Locked(format!(
            "snapshot {label} is retention-locked ({} mode, enforced by {}) until {}; it \
             cannot be removed before then",
            info.mode,
            info.enforced_by,
            time_label(info.retain_until)
        )))
    }

    /// The lock on a snapshot, if one holds it.
    pub async fn snapshot_lock(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<Option<SnapshotLockInfo>, DatastoreError> {
        Ok(self.snapshot(&snapshot_prefix(ns, dir)?))
    }

    /// The time until which a chunk must be kept because a locked snapshot references it;
    /// GC does not sweep it before then.
    pub(in crate::datastore) fn chunk_retained_until(&self, digest: &Digest) -> Option<SystemTime> {
        let lock = self.chunk(digest)?;
        Some(UNIX_EPOCH + Duration::from_secs(lock.until.max(0) as u64))
    }

    /// Why the snapshot cannot be removed now: a legal hold, or a retention lock whose
    /// retain-until date lies ahead (`None`: no lock holds it). Read-only, unlike the check
    /// a removal makes (which also forgets a passed lock).
    pub fn hold(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<Option<String>, DatastoreError> {
        let Some(info) = self.snapshot(&snapshot_prefix(ns, dir)?) else {
            return Ok(None);
        };
        let until = format_backup_time(info.retain_until)
            .unwrap_or_else(|_| format!("{} (Unix time)", info.retain_until));
        if info.legal_hold {
            return Ok(Some(format!(
                "legal hold ({} mode until {until}, enforced by {})",
                info.mode, info.enforced_by
            )));
        }
        if info.retain_until > self.now() {
            return Ok(Some(format!(
                "{} mode until {until}, enforced by {}",
                info.mode, info.enforced_by
            )));
        }
        Ok(None)
    }
}
