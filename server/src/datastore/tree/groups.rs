//! Backup groups (`<ns>/<type>/<id>/`) with their `owner` and `notes` objects.

use std::str::FromStr;

use bytes::Bytes;

use crate::backend::PutOptions;
use crate::format::names::{BackupGroup, BackupNamespace, BackupType};

use super::SnapshotTree;
use crate::datastore::layout::{
    group_file_key, group_label, group_prefix, ns_prefix, NOTES, OWNER,
};
use crate::datastore::DatastoreError;

/// What [`SnapshotTree::remove_group`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GroupRemoveStats {
    pub removed_snapshots: u64,
    /// Protected snapshots kept; when non-zero the group (and its owner) is kept too.
    pub protected_snapshots: u64,
}

impl SnapshotTree {
    /// Groups directly in `ns`, sorted like PBS (type ct < host < vm, then id). Names that
    /// do not parse as type or backup id are ignored.
    pub async fn list_groups(
        &self,
        ns: &BackupNamespace,
    ) -> Result<Vec<BackupGroup>, DatastoreError> {
        let base = ns_prefix(ns);
        let top = self.backend.list(&base, Some('/')).await?;
        let mut groups = Vec::new();
        for type_prefix in &top.prefixes {
            let Some(ty) = type_prefix
                .strip_prefix(&base)
                .and_then(|p| p.strip_suffix('/'))
                .and_then(|t| BackupType::from_str(t).ok())
            else {
                continue;
            };
            let ids = self.backend.list(type_prefix, Some('/')).await?;
            for id_prefix in &ids.prefixes {
                let Some(id) = id_prefix
                    .strip_prefix(type_prefix.as_str())
                    .and_then(|p| p.strip_suffix('/'))
                else {
                    continue;
                };
                if let Ok(group) = BackupGroup::new(ty, id) {
                    groups.push(group);
                }
            }
        }
        groups.sort();
        Ok(groups)
    }

    /// The group's owner auth id, `None` if no owner object exists.
    pub async fn group_owner(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
    ) -> Result<Option<String>, DatastoreError> {
        match self.backend.get(&group_file_key(ns, group, OWNER)).await {
            Ok(data) => {
                let text = String::from_utf8_lossy(&data);
                Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Replace the group's owner (written as "authid\n" like PBS).
    pub async fn set_group_owner(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
        owner: &str,
    ) -> Result<(), DatastoreError> {
        validate_owner(owner)?;
        self.backend
            .put(
                &group_file_key(ns, group, OWNER),
                Bytes::from(format!("{owner}\n")),
                PutOptions::default(),
            )
            .await?;
        Ok(())
    }

    /// Write the owner only if none exists; returns whether this call created it.
    pub(crate) async fn create_group_owner(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
        owner: &str,
    ) -> Result<bool, DatastoreError> {
        validate_owner(owner)?;
        let opts = PutOptions {
            if_absent: true,
            sha256: None,
        };
        let outcome = self
            .backend
            .put(
                &group_file_key(ns, group, OWNER),
                Bytes::from(format!("{owner}\n")),
                opts,
            )
            .await?;
        Ok(outcome == crate::backend::PutOutcome::Written)
    }

    /// Group notes, `None` if never set.
    pub async fn group_notes(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
    ) -> Result<Option<String>, DatastoreError> {
        match self.backend.get(&group_file_key(ns, group, NOTES)).await {
            Ok(data) => Ok(Some(String::from_utf8_lossy(&data).into_owned())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Replace the group notes; an empty text removes them.
    pub async fn set_group_notes(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
        notes: &str,
    ) -> Result<(), DatastoreError> {
        let key = group_file_key(ns, group, NOTES);
        if notes.is_empty() {
            self.backend.delete(&key).await?;
        } else {
            self.backend
                .put(&key, Bytes::from(notes.to_string()), PutOptions::default())
                .await?;
        }
        Ok(())
    }

    /// Whether the group has any object (owner, notes or snapshots).
    pub async fn group_exists(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
    ) -> Result<bool, DatastoreError> {
        let listed = self
            .backend
            .list(&group_prefix(ns, group), Some('/'))
            .await?;
        Ok(!listed.objects.is_empty() || !listed.prefixes.is_empty())
    }

    /// Remove every unprotected snapshot of the group, then the group itself (owner, notes)
    /// unless protected snapshots remain. Refused while a backup runs in the group.
    pub async fn remove_group(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
    ) -> Result<GroupRemoveStats, DatastoreError> {
        self.writable.check()?;
        let prefix = group_prefix(ns, group);
        if !self.group_exists(ns, group).await? {
            return Err(DatastoreError::NotFound(format!(
                "backup group {} not found",
                group_label(ns, group)
            )));
        }
        let _group_lock = self.locks.try_group(&prefix).ok_or_else(|| {
            DatastoreError::Busy(format!(
                "unable to remove backup group {} - a backup is running",
                group_label(ns, group)
            ))
        })?;
        let mut stats = GroupRemoveStats::default();
        for snap in self.list_snapshots(ns, group).await? {
            if snap.protected {
                stats.protected_snapshots += 1;
                continue;
            }
            match self.remove_snapshot_files(ns, &snap.dir, false).await {
                Ok(()) => stats.removed_snapshots += 1,
                // Protected or locked in the meantime: keep it like the others.
                Err(DatastoreError::Protected(_) | DatastoreError::Locked(_)) => {
                    stats.protected_snapshots += 1
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        if stats.protected_snapshots == 0 {
            self.backend.delete_prefix(&prefix).await?;
        }
        Ok(stats)
    }

    /// Remove owner and notes when the group has no snapshot left and no backup is running.
    pub(crate) async fn remove_group_if_empty(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
    ) -> Result<bool, DatastoreError> {
        let prefix = group_prefix(ns, group);
        let Some(_lock) = self.locks.try_group(&prefix) else {
            return Ok(false);
        };
        self.remove_group_if_empty_locked(ns, group).await
    }

    /// As [`Self::remove_group_if_empty`], for callers that already hold the group lock.
    pub(crate) async fn remove_group_if_empty_locked(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
    ) -> Result<bool, DatastoreError> {
        let prefix = group_prefix(ns, group);
        let listed = self.backend.list(&prefix, Some('/')).await?;
        if !listed.prefixes.is_empty() {
            return Ok(false);
        }
        let keys: Vec<String> = listed.objects.into_iter().map(|o| o.key).collect();
        self.backend.delete_many(&keys).await?;
        Ok(true)
    }
}

fn validate_owner(owner: &str) -> Result<(), DatastoreError> {
    if owner.is_empty() || owner.contains(['\n', '\r', '\0']) {
        return Err(DatastoreError::Invalid(format!(
            "invalid owner auth id '{}'",
            owner.escape_debug()
        )));
    }
    Ok(())
}
