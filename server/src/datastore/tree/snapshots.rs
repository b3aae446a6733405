//! Snapshots (`<group>/<RFC3339 time>/`): listing, manifest access and edits, protection,
//! client log upload and removal. A snapshot is finished when `index.json.blob` exists.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::backend::{PutOptions, PutOutcome};
use crate::format::blob::BlobView;
use crate::format::manifest::Manifest;
use crate::format::names::{parse_backup_time, BackupDir, BackupGroup, BackupNamespace};

use super::SnapshotTree;
use crate::datastore::layout::{
    group_prefix, is_snapshot_file_name, snapshot_file_key, snapshot_label, snapshot_prefix,
    CLIENT_LOG, MANIFEST, PROTECTED,
};
use crate::datastore::DatastoreError;

/// One snapshot as found in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub dir: BackupDir,
    /// Stored `*.fidx`, `*.didx` and `*.blob` files (including the manifest), sorted.
    pub files: Vec<String>,
    /// `index.json.blob` present.
    pub finished: bool,
    /// `.protected` present.
    pub protected: bool,
}

impl SnapshotTree {
    /// Snapshots of a group, oldest first. Entries whose time does not parse are ignored.
    pub async fn list_snapshots(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
    ) -> Result<Vec<SnapshotInfo>, DatastoreError> {
        let prefix = group_prefix(ns, group);
        let listed = self.backend.list(&prefix, None).await?;
        let mut by_time: BTreeMap<i64, SnapshotInfo> = BTreeMap::new();
        for obj in listed.objects {
            let Some((time_str, file)) = obj
                .key
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.split_once('/'))
            else {
                continue;
            };
            if file.contains('/') {
                continue;
            }
            let Ok(time) = parse_backup_time(time_str) else {
                continue;
            };
            let Ok(dir) = BackupDir::new(group.clone(), time) else {
                continue;
            };
            let info = by_time.entry(time).or_insert_with(|| SnapshotInfo {
                dir,
                files: Vec::new(),
                finished: false,
                protected: false,
            });
            match file {
                MANIFEST => info.finished = true,
                PROTECTED => info.protected = true,
                _ => {}
            }
            if is_snapshot_file_name(file) {
                info.files.push(file.to_string());
            }
        }
        Ok(by_time
            .into_values()
            .map(|mut info| {
                info.files.sort();
                info
            })
            .collect())
    }

    /// Whether anything is stored under the snapshot (finished or not).
    pub async fn snapshot_exists(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<bool, DatastoreError> {
        let listed = self
            .backend
            .list(&snapshot_prefix(ns, dir)?, Some('/'))
            .await?;
        Ok(!listed.objects.is_empty() || !listed.prefixes.is_empty())
    }

    /// Whether the snapshot is finished (its manifest exists).
    pub async fn snapshot_finished(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<bool, DatastoreError> {
        let key = snapshot_file_key(ns, dir, MANIFEST)?;
        Ok(self.backend.head(&key).await?.is_some())
    }

    /// The parsed manifest and the raw length of `index.json.blob`.
    pub async fn load_manifest(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<(Manifest, u64), DatastoreError> {
        let raw = self.read_snapshot_file(ns, dir, MANIFEST).await?;
        let manifest = Manifest::from_blob(&raw).map_err(|source| DatastoreError::Corrupt {
            object: format!("manifest of snapshot {}", snapshot_label(ns, dir)),
            source,
        })?;
        Ok((manifest, raw.len() as u64))
    }

    /// Edit the manifest under the per-snapshot manifest lock and store it atomically.
    /// Callers must only change `unprotected` (the signature does not cover it).
    pub async fn update_manifest(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
        f: impl FnOnce(&mut Manifest) + Send,
    ) -> Result<(), DatastoreError> {
        let prefix = snapshot_prefix(ns, dir)?;
        let _guard = self.manifest_locks.lock(&prefix).await;
        let (mut manifest, _) = self.load_manifest(ns, dir).await?;
        f(&mut manifest);
        let key = snapshot_file_key(ns, dir, MANIFEST)?;
        self.backend
            .put(&key, Bytes::from(manifest.to_blob()), PutOptions::default())
            .await?;
        self.retention.relock_manifest(ns, dir).await?;
        Ok(())
    }

    /// One stored file of a snapshot; `name` must be a plain file name.
    pub async fn read_snapshot_file(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
        name: &str,
    ) -> Result<Bytes, DatastoreError> {
        let key = snapshot_file_key(ns, dir, name)?;
        match self.backend.get(&key).await {
            Ok(data) => Ok(data),
            // PBS's text, with the datastore name where PBS shows its directory
            Err(e) if e.is_not_found() => Err(DatastoreError::NotFound(format!(
                "open file \"{}/{key}\" failed - not found",
                self.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Store `client.log.blob` in a finished snapshot; refused if one exists already.
    pub async fn add_client_log(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
        blob: Bytes,
    ) -> Result<(), DatastoreError> {
        if !self.snapshot_finished(ns, dir).await? {
            return Err(DatastoreError::NotFound(format!(
                "snapshot {} not found or not finished",
                snapshot_label(ns, dir)
            )));
        }
        let key = snapshot_file_key(ns, dir, CLIENT_LOG)?;
        let already = || DatastoreError::AlreadyExists("backup already contains a log.".into());
        if self.backend.head(&key).await?.is_some() {
            return Err(already());
        }
        BlobView::parse(&blob)
            .and_then(|view| view.verify_crc())
            .map_err(|source| DatastoreError::Corrupt {
                object: format!("{CLIENT_LOG} for snapshot {}", snapshot_label(ns, dir)),
                source,
            })?;
        let opts = PutOptions {
            if_absent: true,
            sha256: None,
        };
        match self.backend.put(&key, blob, opts).await? {
            PutOutcome::Written => Ok(()),
            PutOutcome::AlreadyExists => Err(already()),
        }
    }

    /// Whether the snapshot carries the `.protected` marker.
    pub async fn is_protected(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<bool, DatastoreError> {
        let key = snapshot_file_key(ns, dir, PROTECTED)?;
        Ok(self.backend.head(&key).await?.is_some())
    }

    /// Set or clear protection (an empty `.protected` object, like PBS).
    pub async fn set_protected(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
        protected: bool,
    ) -> Result<(), DatastoreError> {
        let prefix = snapshot_prefix(ns, dir)?;
        let _guard = self.manifest_locks.lock(&prefix).await;
        if !self.snapshot_exists(ns, dir).await? {
            return Err(DatastoreError::NotFound(format!(
                "snapshot {} not found",
                snapshot_label(ns, dir)
            )));
        }
        let key = snapshot_file_key(ns, dir, PROTECTED)?;
        if protected {
            self.backend
                .put(&key, Bytes::new(), PutOptions::default())
                .await?;
        } else {
            self.backend.delete(&key).await?;
        }
        Ok(())
    }

    /// Remove a snapshot (all its objects; chunks stay for GC). Refused while it is in use or
    /// protected (unless `force`). Removes the group when this was its last snapshot.
    pub async fn remove_snapshot(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
        force: bool,
    ) -> Result<(), DatastoreError> {
        self.remove_snapshot_files(ns, dir, force).await?;
        self.remove_group_if_empty(ns, &dir.group).await?;
        Ok(())
    }

    /// Snapshot removal without the group cleanup (used by group removal).
    pub(crate) async fn remove_snapshot_files(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
        force: bool,
    ) -> Result<(), DatastoreError> {
        let prefix = snapshot_prefix(ns, dir)?;
        if !self.snapshot_exists(ns, dir).await? {
            return Err(DatastoreError::NotFound(format!(
                "snapshot {} not found",
                snapshot_label(ns, dir)
            )));
        }
        let _lock = self.locks.try_exclusive(&prefix).ok_or_else(|| {
            DatastoreError::Busy(format!(
                "unable to remove snapshot {} - it is in use by a running backup or reader",
                snapshot_label(ns, dir)
            ))
        })?;
        let _guard = self.manifest_locks.lock(&prefix).await;
        if !force && self.is_protected(ns, dir).await? {
            return Err(DatastoreError::Protected(format!(
                "cannot remove protected snapshot {}",
                snapshot_label(ns, dir)
            )));
        }
        self.retention.check_removal(ns, dir).await?;
        self.writable.check()?;
        // The manifest goes first: a removal cut short leaves an unfinished snapshot (cleaned
        // up by GC), never a finished one with files missing.
        self.backend
            .delete(&snapshot_file_key(ns, dir, MANIFEST)?)
            .await?;
        crate::fault::pause_at_async("snapshot-remove", &prefix).await;
        self.backend.delete_prefix(&prefix).await?;
        self.usage.snapshot_removed(&prefix);
        Ok(())
    }

    /// Remove a snapshot whose governance lock still holds: the explicit admin path
    /// (superusers, `bypass-governance`). Compliance locks and legal holds are still refused.
    /// On S3 every version of the snapshot's objects is deleted with governance bypass.
    pub async fn remove_snapshot_bypassing_governance(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<(), DatastoreError> {
        let bypass = self.retention.begin_bypass(ns, dir)?;
        let removed = self.remove_snapshot(ns, dir, false).await;
        self.retention.end_bypass(&bypass, removed.is_ok()).await?;
        removed
    }
}
