//! Where retention locks (WORM, docs/design.md#retention-locks, #tenants) meet the rest of the
//! datastore: the checks that removal paths (forget, prune, group and namespace removal, GC) call
//! before they delete anything, the lock set when a backup in scope finishes, and the admin path
//! that bypasses a governance lock.
//!
//! On S3 every object of a locked snapshot and every chunk it references carries an Object
//! Lock retain-until at least as late as the snapshot's, so the bucket refuses version deletes
//! even from a compromised server. On the local backend only this server enforces the lock.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};

use crate::backend::lock::{LifecycleRules, LockMode, ObjectLock, Retention};
use crate::format::index::{index_kind_of, AnyIndex};
use crate::format::names::{format_backup_time, BackupDir, BackupNamespace};
use crate::format::Digest;

use super::layout::{
    chunk_key, is_index_name, snapshot_file_key, snapshot_label, snapshot_prefix, MANIFEST,
};
pub use super::retention::RetentionState;
use super::retention::{lock_for, ChunkLock, LockRule, SnapshotLock, SnapshotLockInfo};
use super::{Datastore, DatastoreError};

/// Object Lock requests in flight while a finished backup's chunks are extended.
const LOCK_CONCURRENCY: usize = 16;
/// One boxed Object Lock request (boxing keeps the backup future `Send`).
type LockRequest<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), crate::backend::BackendError>> + Send + 'a>,
>;
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

impl Datastore {
    fn object_lock(&self) -> Option<&dyn ObjectLock> {
        self.backend.object_lock()
    }

    /// `s3-object-lock` on object stores, `server` on the local backend.
    pub fn retention_enforced_by(&self) -> &'static str {
        match self.backend.capabilities().retention_needs_object_lock {
            true => ENFORCED_BY_S3,
            false => ENFORCED_BY_SERVER,
        }
    }

    /// Activate the retention-lock rules of this datastore (start and reload). Refused when
    /// there are rules but the bucket has no S3 Object Lock; the reason also shows in status.
    pub async fn set_retention_locks(
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
                    self.name
                );
                self.retention.set_error(Some(why.clone()));
                return Err(DatastoreError::Invalid(why));
            }
        }
        self.retention.set_rules(rules, generation_days);
        Ok(())
    }

    /// Use a simulated clock (Unix seconds) for lock decisions, or the system clock (`None`).
    pub fn set_retention_clock(&self, now: Option<i64>) {
        self.retention.set_clock(now);
    }

    /// The rules, enforcement and counts, for the datastore status.
    pub fn retention_status(&self) -> RetentionStatus {
        RetentionStatus {
            rules: self.retention.rules().into_iter().map(|r| r.id).collect(),
            enforced_by: self.retention_enforced_by().to_string(),
            generation_days: self.retention.generation_days(),
            locked_snapshots: self.retention.snapshots().len(),
            locked_chunks: self.retention.chunk_count(),
            error: self.retention.error(),
        }
    }

    /// Install `[datastore.lifecycle]` rules for this datastore's prefix (S3 only; merges with
    /// the rules of other prefixes; running it again changes nothing).
    pub async fn install_lifecycle(&self, rules: &LifecycleRules) -> Result<(), DatastoreError> {
        rules.validate().map_err(|why| {
            DatastoreError::Invalid(format!("datastore '{}' lifecycle: {why}", self.name))
        })?;
        match self.object_lock() {
            Some(ol) => Ok(ol.install_lifecycle(rules).await?),
            None => Err(DatastoreError::Invalid(format!(
                "datastore '{}': lifecycle rules need an S3 datastore",
                self.name
            ))),
        }
    }

    /// Refuse to remove a snapshot that a retention lock still holds
    /// ([`DatastoreError::Locked`], naming the date until which it is held).
    pub(crate) async fn check_snapshot_removal(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<(), DatastoreError> {
        let prefix = snapshot_prefix(ns, dir)?;
        let Some(info) = self.retention.snapshot(&prefix) else {
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
        if info.retain_until <= self.retention.now() {
            // Passed: the snapshot may go, and its record with it.
            self.retention
                .forget_snapshot(self.backend.as_ref(), &prefix)
                .await?;
            return Ok(());
        }
        if info.mode == LockMode::Governance.as_str() && self.retention.bypassing(&prefix) {
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

    /// Remove a snapshot whose governance lock still holds: the explicit admin path
    /// (superusers, `bypass-governance`). Compliance locks and legal holds are still refused.
    /// On S3 every version of the snapshot's objects is deleted with governance bypass.
    pub async fn remove_snapshot_bypassing_governance(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<(), DatastoreError> {
        let prefix = snapshot_prefix(ns, dir)?;
        let info = self.retention.snapshot(&prefix);
        if let Some(info) = &info {
            let active = info.retain_until > self.retention.now();
            if active && info.mode == LockMode::Compliance.as_str() {
                return Err(DatastoreError::Locked(format!(
                    "snapshot {} is retention-locked in compliance mode until {}; compliance \
                     locks cannot be bypassed",
                    snapshot_label(ns, dir),
                    time_label(info.retain_until)
                )));
            }
        }
        self.retention.set_bypass(&prefix, true);
        let removed = self.remove_snapshot(ns, dir, false).await;
        self.retention.set_bypass(&prefix, false);
        removed?;
        if let Some(ol) = self.object_lock() {
            for v in ol.list_versions(&prefix).await? {
                ol.delete_version(&v.key, &v.version_id, true).await?;
            }
        }
        if info.is_some() {
            self.retention
                .forget_snapshot(self.backend.as_ref(), &prefix)
                .await?;
        }
        Ok(())
    }

    /// The lock on a snapshot, if one holds it.
    pub async fn snapshot_lock_info(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<Option<SnapshotLockInfo>, DatastoreError> {
        Ok(self.retention.snapshot(&snapshot_prefix(ns, dir)?))
    }

    /// The time until which a chunk must be kept because a locked snapshot references it;
    /// GC does not sweep it before then.
    pub(crate) fn chunk_retained_until(&self, digest: &Digest) -> Option<SystemTime> {
        let lock = self.retention.chunk(digest)?;
        Some(UNIX_EPOCH + Duration::from_secs(lock.until.max(0) as u64))
    }

    /// Before the manifest of a finished backup is written: the lock the rules give it, with
    /// every object written so far and every chunk its indexes reference locked at least that
    /// long (S3). A reused chunk is extended only when its recorded lock ends earlier.
    pub(crate) async fn retention_prepare(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<Option<SnapshotLock>, DatastoreError> {
        let rules = self.retention.rules();
        let generation = self.retention.generation_days();
        let Some(lock) = lock_for(&rules, generation, ns, &dir.group, dir.time) else {
            return Ok(None);
        };
        let now = self.retention.now();
        if lock.retain_until <= now {
            return Ok(None);
        }
        if let Some(ol) = self.object_lock() {
            let prefix = snapshot_prefix(ns, dir)?;
            self.lock_snapshot_objects(ol, &prefix, lock).await?;
        }
        Ok(Some(lock))
    }

    /// Lock every current object under a snapshot's `prefix` and every chunk its indexes
    /// reference until `lock.retain_until` (chunks first; reused chunks only when their
    /// recorded lock ends earlier or is weaker).
    pub(crate) async fn lock_snapshot_objects(
        &self,
        ol: &dyn ObjectLock,
        prefix: &str,
        lock: SnapshotLock,
    ) -> Result<(), DatastoreError> {
        let now = self.retention.now();
        let objects = self.backend.list(prefix, None).await?.objects;
        let retention = Retention {
            mode: lock.mode,
            retain_until: lock.retain_until,
        };
        let mut digests = HashSet::new();
        for obj in &objects {
            let name = obj.key.rsplit('/').next().unwrap_or(&obj.key);
            if is_index_name(name) {
                if let Some(kind) = index_kind_of(name) {
                    let data = self.backend.get(&obj.key).await?;
                    let index =
                        AnyIndex::parse(kind, &data).map_err(|source| DatastoreError::Corrupt {
                            object: format!("index file '{}'", obj.key),
                            source,
                        })?;
                    digests.extend(index.chunks().into_iter().map(|(d, _)| d));
                }
            }
        }
        // Chunks first: a snapshot is never locked while a chunk it needs is not.
        let mut extend: HashMap<ChunkLock, Vec<Digest>> = HashMap::new();
        for d in digests {
            let target = match self.retention.chunk(&d) {
                Some(rec) if rec.covers(lock.retain_until, lock.mode) => continue,
                // Compliance cannot become governance: keep the stronger mode.
                Some(rec) if rec.until > now => ChunkLock {
                    until: rec.until.max(lock.retain_until),
                    mode: rec.mode.max(lock.mode),
                },
                _ => ChunkLock {
                    until: lock.retain_until,
                    mode: lock.mode,
                },
            };
            extend.entry(target).or_default().push(d);
        }
        for (target, list) in &extend {
            let r = Retention {
                mode: target.mode,
                retain_until: target.until,
            };
            let requests: Vec<LockRequest<'_>> = list
                .iter()
                .map(|d| -> LockRequest<'_> {
                    let key = chunk_key(d);
                    Box::pin(async move { ol.set_retention(&key, r, false).await })
                })
                .collect();
            futures::stream::iter(requests)
                .buffer_unordered(LOCK_CONCURRENCY)
                .try_collect::<Vec<()>>()
                .await?;
            self.retention
                .record_chunks(self.backend.as_ref(), *target, list)
                .await?;
        }
        for obj in &objects {
            ol.set_retention(&obj.key, retention, false).await?;
            if lock.legal_hold {
                ol.set_legal_hold(&obj.key, true).await?;
            }
        }
        Ok(())
    }

    /// After the manifest is written: lock it too and record the snapshot's lock. On error
    /// the caller removes the manifest again (the backup fails rather than stay unlocked).
    pub(crate) async fn retention_finish(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
        lock: SnapshotLock,
    ) -> Result<(), DatastoreError> {
        if let Some(ol) = self.object_lock() {
            let key = snapshot_file_key(ns, dir, MANIFEST)?;
            let r = Retention {
                mode: lock.mode,
                retain_until: lock.retain_until,
            };
            ol.set_retention(&key, r, false).await?;
            if lock.legal_hold {
                ol.set_legal_hold(&key, true).await?;
            }
        }
        let info = SnapshotLockInfo {
            mode: lock.mode.as_str().to_string(),
            retain_until: lock.retain_until,
            legal_hold: lock.legal_hold,
            enforced_by: self.retention_enforced_by().to_string(),
        };
        let prefix = snapshot_prefix(ns, dir)?;
        self.retention
            .record_snapshot(self.backend.as_ref(), &prefix, info)
            .await?;
        Ok(())
    }

    /// A rewritten manifest (notes, verify state) of a locked snapshot is locked like the
    /// first one; the earlier versions stay locked in the bucket.
    pub(crate) async fn relock_manifest(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<(), DatastoreError> {
        let Some(ol) = self.object_lock() else {
            return Ok(());
        };
        let Some(info) = self.retention.snapshot(&snapshot_prefix(ns, dir)?) else {
            return Ok(());
        };
        if info.retain_until <= self.retention.now() {
            return Ok(());
        }
        let mode = LockMode::parse(&info.mode).unwrap_or(LockMode::Compliance);
        let key = snapshot_file_key(ns, dir, MANIFEST)?;
        let r = Retention {
            mode,
            retain_until: info.retain_until,
        };
        ol.set_retention(&key, r, false).await?;
        if info.legal_hold {
            ol.set_legal_hold(&key, true).await?;
        }
        Ok(())
    }
}
