//! Namespaces (`ns/<a>/ns/<b>/…`). A namespace exists when its `.namespace` marker exists or
//! anything at all is stored under its prefix (so directories written by PBS count too).

use crate::backend::PutOptions;
use crate::format::names::{BackupNamespace, MAX_NAMESPACE_DEPTH};

use super::SnapshotTree;
use crate::datastore::layout::{ns_children_prefix, ns_label, ns_marker_key, ns_prefix};
use crate::datastore::DatastoreError;

/// What [`SnapshotTree::delete_namespace`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NamespaceDeleteStats {
    /// Namespaces removed (the target and its descendants).
    pub removed_namespaces: u64,
    pub removed_groups: u64,
    pub removed_snapshots: u64,
    /// Protected snapshots that survived (their namespaces survive with them).
    pub protected_snapshots: u64,
}

impl SnapshotTree {
    /// Whether `ns` exists; the root always does.
    pub async fn namespace_exists(&self, ns: &BackupNamespace) -> Result<bool, DatastoreError> {
        if ns.is_root() {
            return Ok(true);
        }
        if self.backend.head(&ns_marker_key(ns)).await?.is_some() {
            return Ok(true);
        }
        let prefix = ns_prefix(ns);
        let listed = self.backend.list(&prefix, Some('/')).await?;
        if !listed.objects.is_empty() || !listed.prefixes.is_empty() {
            return Ok(true);
        }
        // An empty directory (created by PBS) shows up only in its parent's listing.
        let Some(parent) = ns.parent() else {
            return Ok(true);
        };
        let siblings = self
            .backend
            .list(&ns_children_prefix(&parent), Some('/'))
            .await?;
        Ok(siblings.prefixes.contains(&prefix))
    }

    pub(crate) async fn require_namespace(
        &self,
        ns: &BackupNamespace,
    ) -> Result<(), DatastoreError> {
        if self.namespace_exists(ns).await? {
            Ok(())
        } else {
            Err(DatastoreError::NotFound(format!(
                "namespace '{}' not found",
                ns.display_path()
            )))
        }
    }

    /// Create `parent/name`; the parent must exist and the child must not.
    pub async fn create_namespace(
        &self,
        parent: &BackupNamespace,
        name: &str,
    ) -> Result<BackupNamespace, DatastoreError> {
        self.require_namespace(parent).await?;
        let child = parent.child(name)?;
        if self.namespace_exists(&child).await? {
            return Err(DatastoreError::AlreadyExists(format!(
                "namespace '{}' already exists",
                child.display_path()
            )));
        }
        let opts = PutOptions {
            if_absent: true,
            sha256: None,
        };
        self.backend
            .put(&ns_marker_key(&child), bytes::Bytes::new(), opts)
            .await?;
        Ok(child)
    }

    /// Direct child namespaces of `ns`, sorted by name.
    async fn child_namespaces(
        &self,
        ns: &BackupNamespace,
    ) -> Result<Vec<BackupNamespace>, DatastoreError> {
        if ns.depth() >= MAX_NAMESPACE_DEPTH {
            return Ok(Vec::new());
        }
        let base = ns_children_prefix(ns);
        let listed = self.backend.list(&base, Some('/')).await?;
        let mut out = Vec::new();
        for prefix in listed.prefixes {
            let Some(name) = prefix.strip_prefix(&base).and_then(|p| p.strip_suffix('/')) else {
                continue;
            };
            // Names that are not valid namespace components are ignored, like PBS does.
            if let Ok(child) = ns.child(name) {
                out.push(child);
            }
        }
        out.sort();
        Ok(out)
    }

    /// `parent` and its descendants, depth-first with each parent before its children.
    /// `max_depth` counts levels below `parent` (`Some(0)` = only `parent`).
    pub async fn list_namespaces(
        &self,
        parent: &BackupNamespace,
        max_depth: Option<usize>,
    ) -> Result<Vec<BackupNamespace>, DatastoreError> {
        self.require_namespace(parent).await?;
        let limit = max_depth.unwrap_or(MAX_NAMESPACE_DEPTH);
        let mut out = Vec::new();
        // Explicit stack instead of async recursion; children pushed in reverse keep the order.
        let mut stack = vec![parent.clone()];
        while let Some(ns) = stack.pop() {
            let level = ns.depth() - parent.depth();
            if level < limit {
                let children = self.child_namespaces(&ns).await?;
                stack.extend(children.into_iter().rev());
            }
            out.push(ns);
        }
        Ok(out)
    }

    /// Delete `ns` and its descendants. Without `delete_groups` the subtree must hold no
    /// groups. Protected snapshots are kept, and with them their group and namespaces.
    pub async fn delete_namespace(
        &self,
        ns: &BackupNamespace,
        delete_groups: bool,
    ) -> Result<NamespaceDeleteStats, DatastoreError> {
        if ns.is_root() {
            return Err(DatastoreError::Invalid(
                "cannot delete the root namespace".to_string(),
            ));
        }
        self.writable.check()?;
        let tree = self.list_namespaces(ns, None).await?;
        if !delete_groups {
            for sub in &tree {
                if !self.list_groups(sub).await?.is_empty() {
                    return Err(DatastoreError::Invalid(format!(
                        "{} is not empty: it still contains backup groups",
                        ns_label(sub)
                    )));
                }
            }
        }
        let mut stats = NamespaceDeleteStats::default();
        // Deepest first so a parent is only removed once its children are gone.
        for sub in tree.iter().rev() {
            for group in self.list_groups(sub).await? {
                let removed = self.remove_group(sub, &group).await?;
                stats.removed_snapshots += removed.removed_snapshots;
                stats.protected_snapshots += removed.protected_snapshots;
                if removed.protected_snapshots == 0 {
                    stats.removed_groups += 1;
                }
            }
            let still_groups = !self.list_groups(sub).await?.is_empty();
            let still_children = !self.child_namespaces(sub).await?.is_empty();
            if !still_groups && !still_children {
                self.backend.delete_prefix(&ns_prefix(sub)).await?;
                stats.removed_namespaces += 1;
            }
        }
        Ok(stats)
    }
}
