//! Moving a backup group, or a namespace with everything below it, to another namespace of the
//! same datastore (PBS 4.2's `move-group` and `move-namespace`).
//!
//! A move copies every object of a group to its new keys and then removes the old ones; the
//! chunks stay where they are (they are shared by key digest, not by namespace). This works
//! the same on every backend. While objects are copied:
//! * garbage collection does not run on the datastore: its mark phase could otherwise miss an
//!   index that is between its old and its new place and sweep chunks that are still in use;
//! * the group is locked like for a backup (no backup, prune or forget of it meanwhile), and
//!   each snapshot like for a removal (refused while a reader or a backup's base holds it).
//!
//! Refused, before anything is copied: a target group that exists (unless merging, which needs
//! the same owner and no snapshot time present in both), a running backup, a snapshot in use,
//! and a snapshot under a retention lock. A retention lock binds the snapshot's objects to
//! their keys: on S3 the Object Lock keeps every version of the old objects, so a move could
//! not remove them, and the copies would not carry the lock. Protected snapshots move with
//! their protection (the `.protected` marker is one of the copied objects).

use bytes::Bytes;

use crate::backend::PutOptions;
use crate::format::names::{BackupGroup, BackupNamespace, MAX_NAMESPACE_DEPTH};

use super::SnapshotTree;
use crate::datastore::layout::{
    group_prefix, ns_label, ns_marker_key, ns_prefix, MANIFEST, NOTES, OWNER,
};
use crate::datastore::locks::{GroupGuard, MoveActive, SnapshotGuard};
use crate::datastore::DatastoreError;

/// Log sink of a move (the task log).
pub type MoveLog<'a> = &'a (dyn Fn(String) + Send + Sync);

/// What a namespace move did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceMoveStats {
    pub namespaces: u64,
    pub groups: u64,
    pub snapshots: u64,
    /// Source namespaces removed afterwards (`delete-source`).
    pub removed_namespaces: u64,
}

/// `'a/b'` as PBS quotes namespaces in move logs (`''` for the root).
fn quoted(ns: &BackupNamespace) -> String {
    format!("'{}'", ns.display_path())
}

/// `ns` with its first `from.depth()` components replaced by `to`.
fn rebase(
    ns: &BackupNamespace,
    from: &BackupNamespace,
    to: &BackupNamespace,
) -> Result<BackupNamespace, DatastoreError> {
    let mut out = to.clone();
    for c in &ns.components()[from.depth()..] {
        out = out.child(c)?;
    }
    Ok(out)
}

/// True when `inner` is `outer` or lies below it.
fn is_within(inner: &BackupNamespace, outer: &BackupNamespace) -> bool {
    inner.components().starts_with(outer.components())
}

/// Locks held while one group moves.
struct GroupMoveGuard {
    _source: GroupGuard,
    _target: GroupGuard,
    _snapshots: Vec<SnapshotGuard>,
}

impl SnapshotTree {
    /// Waits until no garbage collection runs and keeps it from starting until the guards
    /// are dropped.
    async fn exclude_gc(
        &self,
        log: MoveLog<'_>,
    ) -> (MoveActive<'_>, tokio::sync::MutexGuard<'_, ()>) {
        let active = self.gc_exclusion.begin_move();
        let guard = match self.gc_exclusion.running.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                log(format!(
                    "waiting for the garbage collection of datastore '{}' to finish",
                    self.name
                ));
                self.gc_exclusion.running.lock().await
            }
        };
        (active, guard)
    }

    /// Refuses a snapshot that a retention lock still holds (our record, and on S3 the Object
    /// Lock retention or legal hold of its manifest), naming the lock.
    async fn check_movable_snapshot(
        &self,
        ns: &BackupNamespace,
        dir: &crate::format::names::BackupDir,
    ) -> Result<(), DatastoreError> {
        let prefix = crate::datastore::layout::snapshot_prefix(ns, dir)?;
        let label = crate::datastore::layout::snapshot_label(ns, dir);
        let now = self.retention.now();
        if let Some(info) = self.retention.snapshot(&prefix) {
            if info.legal_hold || info.retain_until > now {
                return Err(DatastoreError::Locked(format!(
                    "cannot move snapshot {label}: it is retention-locked ({} mode{}, enforced \
                     by {}) until {}; a retention lock binds the snapshot to its place",
                    info.mode,
                    if info.legal_hold { ", legal hold" } else { "" },
                    info.enforced_by,
                    crate::format::names::format_backup_time(info.retain_until)
                        .unwrap_or_else(|_| info.retain_until.to_string()),
                )));
            }
        }
        if let Some(ol) = self.backend.object_lock() {
            let key = crate::datastore::layout::snapshot_file_key(ns, dir, MANIFEST)?;
            // A bucket without Object Lock cannot hold a lock (and refuses the question).
            if ol.object_lock_enabled().await? && self.backend.head(&key).await?.is_some() {
                if let Some(r) = ol.get_retention(&key).await? {
                    if r.retain_until > now {
                        return Err(DatastoreError::Locked(format!(
                            "cannot move snapshot {label}: its objects carry an S3 Object Lock \
                             ({} mode until {}), so the bucket keeps them at their current \
                             keys",
                            r.mode.as_str(),
                            crate::format::names::format_backup_time(r.retain_until)
                                .unwrap_or_else(|_| r.retain_until.to_string()),
                        )));
                    }
                }
                if ol.get_legal_hold(&key).await? {
                    return Err(DatastoreError::Locked(format!(
                        "cannot move snapshot {label}: its objects are under an S3 legal hold"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The checks of a group move, for a quick answer before the move task starts: those of
    /// [`Self::move_group`], with the group locks only probed (the task takes them).
    pub async fn check_move_group(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
        target_ns: &BackupNamespace,
        merge: bool,
    ) -> Result<(), DatastoreError> {
        drop(self.try_move_locks(ns, group, target_ns)?);
        self.check_group_move_target(ns, group, target_ns, merge)
            .await?;
        for snap in self.list_snapshots(ns, group).await? {
            self.check_movable_snapshot(ns, &snap.dir).await?;
        }
        Ok(())
    }

    /// Source group and target namespace exist, and an existing target group may be merged
    /// with.
    async fn check_group_move_target(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
        target_ns: &BackupNamespace,
        merge: bool,
    ) -> Result<(), DatastoreError> {
        if ns == target_ns {
            return Err(DatastoreError::Invalid(format!(
                "source and target namespace of group '{group}' are the same ({})",
                quoted(ns)
            )));
        }
        if !self.group_exists(ns, group).await? {
            return Err(DatastoreError::NotFound(format!(
                "backup group '{group}' not found in {}",
                ns_label(ns)
            )));
        }
        if !self.namespace_exists(target_ns).await? {
            return Err(DatastoreError::NotFound(format!(
                "target {} does not exist",
                ns_label(target_ns)
            )));
        }
        self.check_merge(ns, group, target_ns, merge).await
    }

    /// An existing target group is refused without `merge`; with it, owners must match and no
    /// snapshot time may exist on both sides.
    async fn check_merge(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
        target_ns: &BackupNamespace,
        merge: bool,
    ) -> Result<(), DatastoreError> {
        if !self.group_exists(target_ns, group).await? {
            return Ok(());
        }
        if !merge {
            return Err(DatastoreError::AlreadyExists(format!(
                "backup group '{group}' already exists in target {} (merging was not requested)",
                ns_label(target_ns)
            )));
        }
        let source_owner = self.group_owner(ns, group).await?;
        let target_owner = self.group_owner(target_ns, group).await?;
        if source_owner != target_owner {
            return Err(DatastoreError::Invalid(format!(
                "cannot merge backup group '{group}' into target {}: owners differ ({} != {})",
                ns_label(target_ns),
                source_owner.as_deref().unwrap_or("none"),
                target_owner.as_deref().unwrap_or("none"),
            )));
        }
        let existing: std::collections::HashSet<i64> = self
            .list_snapshots(target_ns, group)
            .await?
            .into_iter()
            .map(|s| s.dir.time)
            .collect();
        if let Some(both) = self
            .list_snapshots(ns, group)
            .await?
            .into_iter()
            .find(|s| existing.contains(&s.dir.time))
        {
            return Err(DatastoreError::Invalid(format!(
                "cannot merge backup group '{group}' into target {}: snapshot {} exists in both",
                ns_label(target_ns),
                both.dir.path()
            )));
        }
        Ok(())
    }

    /// The group locks of source and target (one backup per group: a running backup, prune
    /// or forget of either refuses the move).
    fn try_move_locks(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
        target_ns: &BackupNamespace,
    ) -> Result<(GroupGuard, GroupGuard), DatastoreError> {
        if ns == target_ns {
            return Err(DatastoreError::Invalid(format!(
                "source and target namespace of group '{group}' are the same ({})",
                quoted(ns)
            )));
        }
        let busy = |what: &str| {
            DatastoreError::Busy(format!(
                "unable to move backup group '{group}' from {}: {what}",
                ns_label(ns)
            ))
        };
        let source = self
            .locks
            .try_group(&group_prefix(ns, group))
            .ok_or_else(|| busy("a backup of the group is running"))?;
        let target = self
            .locks
            .try_group(&group_prefix(target_ns, group))
            .ok_or_else(|| busy("a backup of the target group is running"))?;
        Ok((source, target))
    }

    /// Takes the group and snapshot locks and re-runs every check with them held.
    async fn lock_group_for_move(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
        target_ns: &BackupNamespace,
        merge: bool,
    ) -> Result<GroupMoveGuard, DatastoreError> {
        let busy = |what: &str| {
            DatastoreError::Busy(format!(
                "unable to move backup group '{group}' from {}: {what}",
                ns_label(ns)
            ))
        };
        let (source, target) = self.try_move_locks(ns, group, target_ns)?;
        self.check_group_move_target(ns, group, target_ns, merge)
            .await?;
        let mut snapshots = Vec::new();
        for snap in self.list_snapshots(ns, group).await? {
            self.check_movable_snapshot(ns, &snap.dir).await?;
            let prefix = crate::datastore::layout::snapshot_prefix(ns, &snap.dir)?;
            let guard = self.locks.try_exclusive(&prefix).ok_or_else(|| {
                busy(&format!(
                    "snapshot {} is in use by a reader or a running backup",
                    snap.dir.path()
                ))
            })?;
            snapshots.push(guard);
        }
        Ok(GroupMoveGuard {
            _source: source,
            _target: target,
            _snapshots: snapshots,
        })
    }

    /// Copies the group's objects to `target_ns` and removes the originals; the caller holds
    /// the locks and keeps GC out. Returns the number of snapshots moved.
    async fn move_group_locked(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
        target_ns: &BackupNamespace,
        log: MoveLog<'_>,
    ) -> Result<u64, DatastoreError> {
        log(format!(
            "moving group '{group}' from {} to {}",
            quoted(ns),
            quoted(target_ns)
        ));
        let from = group_prefix(ns, group);
        let to = group_prefix(target_ns, group);
        let snapshots = self.list_snapshots(ns, group).await?;
        let listed = self.backend.list(&from, None).await?;
        let mut copied = Vec::new();
        if let Err(e) = self
            .copy_objects(&listed.objects, &from, &to, &mut copied)
            .await
        {
            // Take back what was copied, so a refused or failed move leaves the target as it was.
            if let Err(undo) = self.backend.delete_many(&copied).await {
                log(format!(
                    "WARN: removing the partial copy in {} failed: {undo}",
                    ns_label(target_ns)
                ));
            }
            return Err(e);
        }
        for snap in &snapshots {
            let old = crate::datastore::layout::snapshot_prefix(ns, &snap.dir)?;
            let new = crate::datastore::layout::snapshot_prefix(target_ns, &snap.dir)?;
            self.usage.snapshot_moved(&old, &new);
            // An expired retention record would otherwise outlive the snapshot's old place.
            if self.retention.snapshot(&old).is_some() {
                self.retention.forget_snapshot(&old).await?;
            }
        }
        log(format!(
            "removing backup group \"{}\"",
            from.trim_end_matches('/')
        ));
        self.backend.delete_prefix(&from).await?;
        Ok(snapshots.len() as u64)
    }

    /// Copies `objects` (keys below `from`) to the same keys below `to`, never overwriting:
    /// the target's owner and notes stay when merging; any other existing key is an error.
    /// `copied` receives the keys written.
    async fn copy_objects(
        &self,
        objects: &[crate::backend::ObjectMeta],
        from: &str,
        to: &str,
        copied: &mut Vec<String>,
    ) -> Result<(), DatastoreError> {
        let opts = PutOptions {
            if_absent: true,
            sha256: None,
        };
        for obj in objects {
            let rest = &obj.key[from.len()..];
            let target_key = format!("{to}{rest}");
            let data: Bytes = self.backend.get(&obj.key).await?;
            match self.backend.put(&target_key, data, opts.clone()).await? {
                crate::backend::PutOutcome::Written => copied.push(target_key),
                crate::backend::PutOutcome::AlreadyExists if rest == OWNER || rest == NOTES => {}
                crate::backend::PutOutcome::AlreadyExists => {
                    return Err(DatastoreError::AlreadyExists(format!(
                        "cannot move to '{target_key}': the object already exists in the                          target; the source group is unchanged"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Moves `group` from `ns` to `target_ns` (an existing namespace), merging into an
    /// existing target group when `merge` allows it. Log lines go to `log`.
    pub async fn move_group(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
        target_ns: &BackupNamespace,
        merge: bool,
        log: MoveLog<'_>,
    ) -> Result<u64, DatastoreError> {
        self.writable.check()?;
        let (_active, _gc) = self.exclude_gc(log).await;
        let _locks = self
            .lock_group_for_move(ns, group, target_ns, merge)
            .await?;
        self.move_group_locked(ns, group, target_ns, log).await
    }

    /// The checks of a namespace move that need no lock (shared by the API's quick answer and
    /// the task): the namespaces to move (depth-first, parents first).
    pub async fn check_move_namespace(
        &self,
        ns: &BackupNamespace,
        target_ns: &BackupNamespace,
        max_depth: Option<usize>,
        merge_groups: bool,
    ) -> Result<Vec<BackupNamespace>, DatastoreError> {
        if ns.is_root() {
            return Err(DatastoreError::Invalid(
                "cannot move the root namespace".to_string(),
            ));
        }
        if is_within(target_ns, ns) {
            return Err(DatastoreError::Invalid(format!(
                "cannot move namespace {} into itself or below itself ({})",
                quoted(ns),
                quoted(target_ns)
            )));
        }
        self.require_namespace(ns).await?;
        let parent = target_ns.parent().unwrap_or_else(BackupNamespace::root);
        if !self.namespace_exists(&parent).await? {
            return Err(DatastoreError::NotFound(format!(
                "parent {} of the target does not exist",
                ns_label(&parent)
            )));
        }
        let tree = self.list_namespaces(ns, max_depth).await?;
        let deepest = tree.iter().map(|n| n.depth()).max().unwrap_or(ns.depth());
        let new_depth = deepest - ns.depth() + target_ns.depth();
        if new_depth > MAX_NAMESPACE_DEPTH {
            return Err(DatastoreError::Invalid(format!(
                "moving namespace {} to {} would nest namespaces {new_depth} levels deep \
                 (at most {MAX_NAMESPACE_DEPTH})",
                quoted(ns),
                quoted(target_ns)
            )));
        }
        for sub in &tree {
            let dest = rebase(sub, ns, target_ns)?;
            for group in self.list_groups(sub).await? {
                self.check_merge(sub, &group, &dest, merge_groups).await?;
                for snap in self.list_snapshots(sub, &group).await? {
                    self.check_movable_snapshot(sub, &snap.dir).await?;
                }
            }
        }
        Ok(tree)
    }

    /// Moves `ns` (with its sub-namespaces down to `max_depth` levels) to `target_ns`,
    /// creating target namespaces as needed; with `delete_source` the emptied source
    /// namespaces are removed afterwards.
    pub async fn move_namespace(
        &self,
        ns: &BackupNamespace,
        target_ns: &BackupNamespace,
        max_depth: Option<usize>,
        delete_source: bool,
        merge_groups: bool,
        log: MoveLog<'_>,
    ) -> Result<NamespaceMoveStats, DatastoreError> {
        self.writable.check()?;
        let (_active, _gc) = self.exclude_gc(log).await;
        let tree = self
            .check_move_namespace(ns, target_ns, max_depth, merge_groups)
            .await?;
        log(format!(
            "moving namespace {} -> {}: {} namespace(s)",
            quoted(ns),
            quoted(target_ns),
            tree.len()
        ));
        let mut stats = NamespaceMoveStats::default();
        for sub in &tree {
            let dest = rebase(sub, ns, target_ns)?;
            if !self.namespace_exists(&dest).await? {
                let opts = PutOptions {
                    if_absent: true,
                    sha256: None,
                };
                self.backend
                    .put(&ns_marker_key(&dest), Bytes::new(), opts)
                    .await?;
            }
            stats.namespaces += 1;
            for group in self.list_groups(sub).await? {
                let _locks = self
                    .lock_group_for_move(sub, &group, &dest, merge_groups)
                    .await?;
                stats.snapshots += self.move_group_locked(sub, &group, &dest, log).await?;
                stats.groups += 1;
                log(format!(
                    "moved group {} ('{group}' in {})",
                    stats.groups,
                    quoted(sub)
                ));
            }
        }
        if delete_source {
            // Deepest first; a namespace keeps existing while anything is left in it (such as
            // children beyond `max_depth`).
            for sub in tree.iter().rev() {
                let listed = self.backend.list(&ns_prefix(sub), Some('/')).await?;
                let only_marker = listed.prefixes.is_empty()
                    && listed.objects.iter().all(|o| o.key == ns_marker_key(sub));
                if only_marker {
                    self.backend.delete_prefix(&ns_prefix(sub)).await?;
                    stats.removed_namespaces += 1;
                }
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> BackupNamespace {
        BackupNamespace::parse(s).unwrap()
    }

    #[test]
    fn rebase_and_within() {
        assert_eq!(
            rebase(&ns("a/b/c"), &ns("a/b"), &ns("x")).unwrap(),
            ns("x/c")
        );
        assert_eq!(rebase(&ns("a"), &ns("a"), &ns("x/y")).unwrap(), ns("x/y"));
        assert_eq!(
            rebase(&ns("a/b"), &ns("a"), &BackupNamespace::root()).unwrap(),
            ns("b")
        );
        assert!(is_within(&ns("a/b"), &ns("a")));
        assert!(is_within(&ns("a"), &ns("a")));
        assert!(!is_within(&ns("ab"), &ns("a")));
        assert!(!is_within(&ns("a"), &ns("a/b")));
        assert_eq!(quoted(&BackupNamespace::root()), "''");
        assert_eq!(quoted(&ns("a/b")), "'a/b'");
    }
}
