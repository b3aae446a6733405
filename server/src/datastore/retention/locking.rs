//! Object Lock requests of retention locks (S3): locking a finished backup's objects and
//! every chunk its indexes reference, re-locking a rewritten manifest, and the admin
//! operations on one snapshot's lock (legal hold, extension, governance bypass).

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};

use crate::backend::lock::{LockMode, ObjectLock, Retention};
use crate::format::index::{index_kind_of, AnyIndex};
use crate::format::names::{BackupDir, BackupNamespace};
use crate::format::Digest;

use super::super::layout::{
    chunk_key, is_index_name, snapshot_file_key, snapshot_label, snapshot_prefix, MANIFEST,
};
use super::super::DatastoreError;
use super::rules::{lock_for, round_up_to_generation, ChunkLock, SnapshotLock};
use super::{time_label, RetentionLocks, SnapshotLockInfo};

/// Object Lock requests in flight while a finished backup's chunks are extended.
const LOCK_CONCURRENCY: usize = 16;
/// One boxed Object Lock request (boxing keeps the backup future `Send`).
type LockRequest<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), crate::backend::BackendError>> + Send + 'a>,
>;

impl RetentionLocks {
    /// Before the manifest of a finished backup is written: the lock the rules give it, with
    /// every object written so far and every chunk its indexes reference locked at least that
    /// long (S3). A reused chunk is extended only when its recorded lock ends earlier.
    pub(in crate::datastore) async fn prepare(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<Option<SnapshotLock>, DatastoreError> {
        let rules = self.rules();
        let generation = self.generation_days();
        let Some(lock) = lock_for(&rules, generation, ns, &dir.group, dir.time) else {
            return Ok(None);
        };
        let now = self.now();
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
    async fn lock_snapshot_objects(
        &self,
        ol: &dyn ObjectLock,
        prefix: &str,
        lock: SnapshotLock,
    ) -> Result<(), DatastoreError> {
        let now = self.now();
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
            let target = match self.chunk(&d) {
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
            self.record_chunks(*target, list).await?;
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
    pub(in crate::datastore) async fn finish(
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
            enforced_by: self.enforced_by().to_string(),
        };
        let prefix = snapshot_prefix(ns, dir)?;
        self.record_snapshot(&prefix, info).await?;
        Ok(())
    }

    /// A rewritten manifest (notes, verify state) of a locked snapshot is locked like the
    /// first one; the earlier versions stay locked in the bucket.
    pub(in crate::datastore) async fn relock_manifest(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<(), DatastoreError> {
        let Some(ol) = self.object_lock() else {
            return Ok(());
        };
        let Some(info) = self.snapshot(&snapshot_prefix(ns, dir)?) else {
            return Ok(());
        };
        if info.retain_until <= self.now() {
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
    fn locked_snapshot(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<(String, SnapshotLockInfo), DatastoreError> {
        let prefix = snapshot_prefix(ns, dir)?;
        match self.snapshot(&prefix) {
            Some(info) => Ok((prefix, info)),
            None => Err(DatastoreError::Invalid(format!(
                "snapshot {} is not under a retention lock",
                snapshot_label(ns, dir)
            ))),
        }
    }

    /// Set or lift the legal hold of a locked snapshot's objects (the current versions).
    pub async fn set_legal_hold(
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
        self.record_snapshot(&prefix, info.clone()).await?;
        Ok(info)
    }

    /// Extend a locked snapshot (its objects and every chunk it references) until at least
    /// `until` (rounded up to a generation boundary). Shortening is refused.
    pub async fn extend_lock(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
        until: i64,
    ) -> Result<SnapshotLockInfo, DatastoreError> {
        let (prefix, mut info) = self.locked_snapshot(ns, dir)?;
        let until = round_up_to_generation(until, self.generation_days());
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
        self.record_snapshot(&prefix, info.clone()).await?;
        Ok(info)
    }

    /// Start removing a snapshot whose governance lock still holds (the admin path,
    /// superusers, `bypass-governance`): compliance locks and legal holds are refused, the
    /// removal checks let the snapshot pass until [`Self::end_bypass`]. Returns the
    /// snapshot's prefix and whether a lock record exists for it.
    pub(in crate::datastore) fn begin_bypass(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<(String, bool), DatastoreError> {
        let prefix = snapshot_prefix(ns, dir)?;
        let info = self.snapshot(&prefix);
        if let Some(info) = &info {
            let active = info.retain_until > self.now();
            if active && info.mode == LockMode::Compliance.as_str() {
                return Err(DatastoreError::Locked(format!(
                    "snapshot {} is retention-locked in compliance mode until {}; compliance \
                     locks cannot be bypassed",
                    snapshot_label(ns, dir),
                    time_label(info.retain_until)
                )));
            }
        }
        self.set_bypass(&prefix, true);
        Ok((prefix, info.is_some()))
    }

    /// End the bypass of [`Self::begin_bypass`] (`bypass` is what it returned); once the
    /// snapshot was `removed`, every version of its objects is deleted with governance bypass
    /// (S3) and its record dropped.
    pub(in crate::datastore) async fn end_bypass(
        &self,
        bypass: &(String, bool),
        removed: bool,
    ) -> Result<(), DatastoreError> {
        let (prefix, recorded) = bypass;
        self.set_bypass(prefix, false);
        if !removed {
            return Ok(());
        }
        if let Some(ol) = self.object_lock() {
            for v in ol.list_versions(prefix).await? {
                ol.delete_version(&v.key, &v.version_id, true).await?;
            }
        }
        if *recorded {
            self.forget_snapshot(prefix).await?;
        }
        Ok(())
    }
}
