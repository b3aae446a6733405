//! Backup and reader leases: the datastore side of protocol sessions
//! (docs/protocol.md#backup-upgrade-checks, #session-end;
//! docs/formats.md#backup-session-semantics).
//!
//! A [`BackupLease`] holds the group lock, the new snapshot exclusively and the previous
//! snapshot shared; it is registered for GC with its start time and known chunks. Dropping it
//! without [`BackupLease::commit`] deletes everything written under the snapshot, so a dropped
//! connection never leaves a snapshot behind (docs/design.md#manifest-last).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use crate::backend::PutOptions;
use crate::format::manifest::Manifest;
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace};
use crate::format::Digest;

use super::layout::{
    group_label, group_prefix, is_snapshot_file_name, snapshot_file_key, snapshot_label,
    snapshot_prefix, MANIFEST,
};
use super::locks::{GroupGuard, SnapshotGuard};
use super::{lock_std, Datastore, DatastoreError};

/// Per-lease state GC needs: start time and every chunk the session uploaded or reused.
#[derive(Debug)]
pub(crate) struct LeaseState {
    pub start: SystemTime,
    pub chunks: Mutex<HashMap<Digest, u64>>,
}

/// Running backup sessions of one datastore.
#[derive(Default, Debug)]
pub(crate) struct LeaseRegistry {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<LeaseState>>>,
}

impl LeaseRegistry {
    fn register(&self, state: Arc<LeaseState>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock_std(&self.live).insert(id, state);
        id
    }

    fn unregister(&self, id: u64) {
        lock_std(&self.live).remove(&id);
    }

    /// Start time of the oldest running backup.
    pub fn oldest_start(&self) -> Option<SystemTime> {
        lock_std(&self.live).values().map(|s| s.start).min()
    }

    /// Whether any running backup knows `digest`.
    pub fn contains_chunk(&self, digest: &Digest) -> bool {
        lock_std(&self.live)
            .values()
            .any(|s| lock_std(&s.chunks).contains_key(digest))
    }

    /// Every chunk known to a running backup (GC marks them in use).
    pub fn running_chunks(&self) -> Vec<Digest> {
        let mut chunks = Vec::new();
        for state in lock_std(&self.live).values() {
            chunks.extend(lock_std(&state.chunks).keys().copied());
        }
        chunks
    }
}

/// A running backup of one new snapshot.
pub struct BackupLease {
    ds: Arc<Datastore>,
    ns: BackupNamespace,
    dir: BackupDir,
    owner: String,
    /// Who runs the session (the owner, or a token or user the owner rule admits).
    authid: String,
    /// Chunks this session uploaded or took over from a resume record: what its own resume
    /// record names if it ends without `commit` (`resume.rs`).
    resumable: Mutex<Vec<(Digest, u64)>>,
    created_group: bool,
    previous: Option<BackupDir>,
    state: Arc<LeaseState>,
    lease_id: u64,
    /// Set once the snapshot is known to be ours (locked and absent before): only then may
    /// the drop cleanup delete it.
    owns_snapshot: bool,
    committed: bool,
    group_lock: Option<GroupGuard>,
    snap_lock: Option<SnapshotGuard>,
    prev_lock: Option<SnapshotGuard>,
}

impl std::fmt::Debug for BackupLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupLease")
            .field("store", &self.ds.name())
            .field("ns", &self.ns)
            .field("dir", &self.dir)
            .field("previous", &self.previous)
            .finish()
    }
}

impl Datastore {
    /// Begin a backup of `group` at `time` (docs/protocol.md#backup-upgrade-checks steps 5, 8 and
    /// 9). The caller checks ownership against [`BackupLease::owner`].
    pub async fn start_backup(
        self: &Arc<Self>,
        ns: &BackupNamespace,
        group: &BackupGroup,
        time: i64,
        authid: &str,
    ) -> Result<BackupLease, DatastoreError> {
        self.check_writable()?;
        self.tree.require_namespace(ns).await?;
        let dir = BackupDir::new(group.clone(), time)?;
        let group_lock = self
            .locks
            .try_group(&group_prefix(ns, group))
            .ok_or_else(|| {
                DatastoreError::Busy(format!(
                "unable to acquire backup group lock for {} - another backup is already running",
                group_label(ns, group)
            ))
            })?;
        let created_group = self.tree.create_group_owner(ns, group, authid).await?;
        let owner = match created_group {
            true => authid.to_string(),
            false => self
                .tree
                .group_owner(ns, group)
                .await?
                .unwrap_or_else(|| authid.to_string()),
        };
        let state = Arc::new(LeaseState {
            start: SystemTime::now(),
            chunks: Mutex::new(HashMap::new()),
        });
        let lease_id = self.leases.register(state.clone());
        // From here on, errors drop the lease, which undoes the group creation.
        let mut lease = BackupLease {
            ds: self.clone(),
            ns: ns.clone(),
            dir: dir.clone(),
            owner,
            authid: authid.to_string(),
            resumable: Mutex::new(Vec::new()),
            created_group,
            previous: None,
            state,
            lease_id,
            owns_snapshot: false,
            committed: false,
            group_lock: Some(group_lock),
            snap_lock: None,
            prev_lock: None,
        };

        let previous = self.previous_snapshot(ns, group).await?;
        if let Some(prev) = &previous {
            if time <= prev.time {
                return Err(DatastoreError::Invalid(
                    "backup timestamp is older than last backup.".to_string(),
                ));
            }
        }
        let prefix = snapshot_prefix(ns, &dir)?;
        let snap_lock = self.locks.try_exclusive(&prefix).ok_or_else(|| {
            DatastoreError::Busy(format!(
                "unable to lock snapshot {} - it is in use",
                snapshot_label(ns, &dir)
            ))
        })?;
        if self.tree.snapshot_exists(ns, &dir).await? {
            return Err(DatastoreError::AlreadyExists(
                "backup directory already exists.".to_string(),
            ));
        }
        lease.snap_lock = Some(snap_lock);
        lease.owns_snapshot = true;
        if let Some(prev) = &previous {
            let prev_lock = self
                .locks
                .try_shared(&snapshot_prefix(ns, prev)?)
                .ok_or_else(|| {
                    DatastoreError::Busy(format!(
                        "unable to lock previous snapshot {} - it is being removed",
                        snapshot_label(ns, prev)
                    ))
                })?;
            lease.prev_lock = Some(prev_lock);
        }
        lease.previous = previous;
        Ok(lease)
    }

    /// Newest finished snapshot, unless its verify state is "failed" (then none at all).
    async fn previous_snapshot(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
    ) -> Result<Option<BackupDir>, DatastoreError> {
        let snapshots = self.tree.list_snapshots(ns, group).await?;
        let Some(last) = snapshots.into_iter().rev().find(|s| s.finished) else {
            return Ok(None);
        };
        // A missing or unreadable verify state counts as OK.
        let failed = match self.tree.load_manifest(ns, &last.dir).await {
            Ok((manifest, _)) => manifest.verify_state().is_some_and(|v| v.state == "failed"),
            Err(_) => false,
        };
        Ok((!failed).then_some(last.dir))
    }

    /// Open a finished snapshot for reading (shared lock: coexists with other readers and
    /// with a backup that uses it as its previous snapshot).
    pub async fn start_reader(
        self: &Arc<Self>,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<ReaderLease, DatastoreError> {
        let prefix = snapshot_prefix(ns, dir)?;
        let lock = self.locks.try_shared(&prefix).ok_or_else(|| {
            DatastoreError::Busy(format!(
                "unable to lock snapshot {} - a backup is writing it or it is being removed",
                snapshot_label(ns, dir)
            ))
        })?;
        if !self.tree.snapshot_finished(ns, dir).await? {
            return Err(DatastoreError::NotFound(format!(
                "snapshot {} not found",
                snapshot_label(ns, dir)
            )));
        }
        Ok(ReaderLease {
            ds: self.clone(),
            ns: ns.clone(),
            dir: dir.clone(),
            _lock: lock,
        })
    }
}

impl BackupLease {
    pub fn datastore(&self) -> &Arc<Datastore> {
        &self.ds
    }

    pub fn ns(&self) -> &BackupNamespace {
        &self.ns
    }

    /// The snapshot being written.
    pub fn dir(&self) -> &BackupDir {
        &self.dir
    }

    /// Owner of the group (the session's auth id if the group is new).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// This session created the group (wrote its owner).
    pub fn created_group(&self) -> bool {
        self.created_group
    }

    /// The base snapshot for incremental backups, if any.
    pub fn previous(&self) -> Option<&BackupDir> {
        self.previous.as_ref()
    }

    pub fn start_time(&self) -> SystemTime {
        self.state.start
    }

    /// A file of the previous snapshot (index download for incremental backups).
    pub async fn read_previous_file(&self, name: &str) -> Result<Bytes, DatastoreError> {
        let Some(prev) = &self.previous else {
            return Err(DatastoreError::NotFound(format!(
                "no previous backup for {}",
                group_label(&self.ns, &self.dir.group)
            )));
        };
        self.ds
            .tree()
            .read_snapshot_file(&self.ns, prev, name)
            .await
    }

    /// Whether the previous snapshot still exists (`finish` refuses if it vanished).
    pub async fn previous_exists(&self) -> Result<bool, DatastoreError> {
        match &self.previous {
            Some(prev) => self.ds.tree().snapshot_finished(&self.ns, prev).await,
            None => Ok(false),
        }
    }

    /// Store a blob or a finished index in the new snapshot (not the manifest: see `commit`).
    pub async fn write_file(&self, name: &str, data: Bytes) -> Result<(), DatastoreError> {
        if name == MANIFEST {
            return Err(DatastoreError::Invalid(format!(
                "{MANIFEST} is written by finishing the backup, not as a file"
            )));
        }
        if !is_snapshot_file_name(name) {
            return Err(DatastoreError::Invalid(format!(
                "invalid file name '{name}': must end in .blob, .fidx or .didx"
            )));
        }
        let key = snapshot_file_key(&self.ns, &self.dir, name)?;
        self.ds
            .backend
            .put(&key, data, PutOptions::default())
            .await?;
        Ok(())
    }

    /// Record a chunk this session uploaded or reused; GC keeps it while the lease lives.
    pub fn register_chunk(&self, digest: &Digest, size: u64) {
        lock_std(&self.state.chunks).insert(*digest, size);
    }

    /// Record a chunk this session uploaded (stored now, or found stored): besides GC's
    /// protection, it goes into the resume record should the session end without `commit`.
    pub fn register_uploaded_chunk(&self, digest: &Digest, size: u64) {
        self.register_chunk(digest, size);
        lock_std(&self.resumable).push((*digest, size));
    }

    /// Takes the resume record of this session's user and group (`resume.rs`): the chunks an
    /// earlier session of theirs uploaded before it was cut. Use each through
    /// [`Self::adopt_resumable_chunk`].
    pub async fn take_resume_record(&self) -> Result<Vec<(Digest, u64)>, DatastoreError> {
        self.ds
            .take_resume_record(&self.ns, &self.dir.group, &self.authid)
            .await
    }

    /// Registers a chunk of the resume record, as an upload of this session, if it is still
    /// stored (GC does not keep a record's chunks); whether it is. Registration comes first,
    /// then [`ChunkStore::is_stored_for_lease`](super::ChunkStore::is_stored_for_lease), so a
    /// GC running now either removed it (false) or keeps it from here on.
    pub async fn adopt_resumable_chunk(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, DatastoreError> {
        let known_before = self.known_chunk_size(digest).is_some();
        self.register_chunk(digest, size);
        if !self.ds.chunks().is_stored_for_lease(digest).await? {
            if !known_before {
                lock_std(&self.state.chunks).remove(digest);
            }
            return Ok(false);
        }
        lock_std(&self.resumable).push((*digest, size));
        Ok(true)
    }

    /// Decoded size of a chunk known to this session.
    pub fn known_chunk_size(&self, digest: &Digest) -> Option<u64> {
        lock_std(&self.state.chunks).get(digest).copied()
    }

    /// Number of chunks known to this session.
    pub fn known_chunk_count(&self) -> usize {
        lock_std(&self.state.chunks).len()
    }

    /// Write `index.json.blob` last, which makes the snapshot exist; releases all locks.
    pub async fn commit(mut self, manifest_blob: Bytes) -> Result<(), DatastoreError> {
        let manifest =
            Manifest::from_blob(&manifest_blob).map_err(|source| DatastoreError::Corrupt {
                object: format!(
                    "manifest of snapshot {}",
                    snapshot_label(&self.ns, &self.dir)
                ),
                source,
            })?;
        self.ds.check_writable()?;
        let lock = self.ds.retention.prepare(&self.ns, &self.dir).await?;
        let key = snapshot_file_key(&self.ns, &self.dir, MANIFEST)?;
        crate::fault::pause_at_async("finish-commit", &key).await;
        self.ds
            .backend
            .put(&key, manifest_blob, PutOptions::default())
            .await?;
        if let Some(lock) = lock {
            if let Err(e) = self.ds.retention.finish(&self.ns, &self.dir, lock).await {
                // Not locked, so not finished: the snapshot must not appear.
                if let Err(undo) = self.ds.backend.delete(&key).await {
                    tracing::warn!("removing unlocked manifest {key}: {undo}");
                }
                return Err(e);
            }
        }
        self.committed = true;
        // The snapshot is visible now: readers may open it at once (a sync job or a restore
        // right after the backup), so its locks go before the bookkeeping below.
        drop((
            self.snap_lock.take(),
            self.group_lock.take(),
            self.prev_lock.take(),
        ));
        if let Ok(prefix) = snapshot_prefix(&self.ns, &self.dir) {
            let logical = manifest.files.iter().map(|f| f.size).sum();
            self.ds.usage.snapshot_added(&prefix, logical);
        }
        // Journal the chunks this backup added; a failure only costs requests after a
        // restart (the chunks are stored either way).
        if let Err(e) = self.ds.chunks.flush_known().await {
            tracing::warn!("datastore '{}': {e}", self.ds.name());
        }
        Ok(())
    }
}

impl BackupLease {
    /// Ends a session that did not commit, at once: the resume record, the unfinished
    /// snapshot's removal and the group's (if this session created it) are done when this
    /// returns, and the locks released. Dropping the lease does the same in a spawned task.
    pub async fn abort(mut self) {
        if let Some(cleanup) = self.cleanup() {
            cleanup.await;
        }
    }

    /// The work of an abort, with the locks moved in (so nobody starts on the group before it
    /// is done); `None` after a commit or when the session never got its snapshot.
    fn cleanup(&mut self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        self.ds.leases.unregister(self.lease_id);
        if self.committed || (!self.owns_snapshot && !self.created_group) {
            return None;
        }
        self.committed = true; // nothing left for `drop`
        let locks = (
            self.group_lock.take(),
            self.snap_lock.take(),
            self.prev_lock.take(),
        );
        let ds = self.ds.clone();
        let ns = self.ns.clone();
        let dir = self.dir.clone();
        let owns_snapshot = self.owns_snapshot;
        let created_group = self.created_group;
        let authid = std::mem::take(&mut self.authid);
        let resumable = std::mem::take(&mut *lock_std(&self.resumable));
        Some(async move {
            let label = snapshot_label(&ns, &dir);
            if owns_snapshot && !resumable.is_empty() {
                let count = resumable.len();
                match ds
                    .write_resume_record(&ns, &dir.group, &authid, resumable)
                    .await
                {
                    Ok(()) => tracing::info!(
                        "aborted backup {label}: kept a resume record of {count} uploaded chunks"
                    ),
                    Err(e) => tracing::warn!("resume record of aborted backup {label}: {e}"),
                }
            }
            if owns_snapshot {
                match snapshot_prefix(&ns, &dir) {
                    Ok(prefix) => {
                        if let Err(e) = ds.backend.delete_prefix(&prefix).await {
                            tracing::warn!("cleanup of aborted backup {label} failed: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("cleanup of aborted backup {label} failed: {e}"),
                }
            }
            if created_group {
                if let Err(e) = ds
                    .tree()
                    .remove_group_if_empty_locked(&ns, &dir.group)
                    .await
                {
                    tracing::warn!("removing empty group of aborted backup {label} failed: {e}");
                }
            }
            drop(locks);
        })
    }
}

impl Drop for BackupLease {
    fn drop(&mut self) {
        let Some(cleanup) = self.cleanup() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(cleanup);
            }
            Err(_) => tracing::warn!(
                "backup {} aborted outside a runtime; leftovers stay until the cleanup pass",
                snapshot_label(&self.ns, &self.dir)
            ),
        }
    }
}

/// A reader session on one finished snapshot.
pub struct ReaderLease {
    ds: Arc<Datastore>,
    ns: BackupNamespace,
    dir: BackupDir,
    _lock: SnapshotGuard,
}

impl std::fmt::Debug for ReaderLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderLease")
            .field("store", &self.ds.name())
            .field("ns", &self.ns)
            .field("dir", &self.dir)
            .finish()
    }
}

impl ReaderLease {
    pub fn datastore(&self) -> &Arc<Datastore> {
        &self.ds
    }

    pub fn dir(&self) -> &BackupDir {
        &self.dir
    }

    pub fn ns(&self) -> &BackupNamespace {
        &self.ns
    }

    /// A file of the snapshot.
    pub async fn read_file(&self, name: &str) -> Result<Bytes, DatastoreError> {
        self.ds
            .tree()
            .read_snapshot_file(&self.ns, &self.dir, name)
            .await
    }

    /// A chunk blob.
    pub async fn load_chunk(&self, digest: &Digest) -> Result<Bytes, DatastoreError> {
        self.ds.chunks.load(digest).await
    }
}
