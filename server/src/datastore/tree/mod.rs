//! The snapshot tree of a datastore: namespaces → backup groups → snapshots, in PBS's key
//! layout (`layout.rs`). It owns everything stored outside `.chunks/`: namespace markers,
//! group `owner` and `notes`, snapshot files, manifests and their edits, protection, the
//! client log, removal, and moves between namespaces.
//!
//! A snapshot is finished when its manifest `index.json.blob` exists; removal deletes the
//! manifest first, so an interrupted removal leaves an unfinished snapshot (which GC cleans
//! up), never a finished one with files missing.
//!
//! What the tree needs from the rest of the datastore is held explicitly: the write check
//! (writer lease and closing gate), the in-process group and snapshot locks it shares with
//! backup and reader sessions, the retention locks that may refuse a removal or move, the
//! usage counters a removal updates, and the exclusion that keeps GC out during a move.

mod groups;
mod moves;
mod namespaces;
mod snapshots;

use std::sync::Arc;

use crate::backend::Backend;

use super::fence::WriteCheck;
use super::locks::{GcExclusion, KeyedMutex, LockTable};
use super::{RetentionLocks, StoreParts, StoreUsage};

pub use groups::GroupRemoveStats;
pub use moves::NamespaceMoveStats;
pub use namespaces::NamespaceDeleteStats;
pub use snapshots::SnapshotInfo;

/// Namespaces, groups and snapshots of one datastore (see the module documentation).
pub struct SnapshotTree {
    /// Datastore name, for messages.
    name: String,
    /// The fenced backend: every write passes the writer lease.
    backend: Arc<dyn Backend>,
    writable: WriteCheck,
    /// Group and snapshot locks, shared with backup and reader sessions.
    locks: Arc<LockTable>,
    /// Serialises manifest and `.protected` edits per snapshot.
    manifest_locks: KeyedMutex,
    retention: Arc<RetentionLocks>,
    usage: Arc<StoreUsage>,
    gc_exclusion: Arc<GcExclusion>,
}

impl SnapshotTree {
    pub(crate) fn new(parts: StoreParts) -> Self {
        Self {
            name: parts.name,
            backend: parts.backend,
            writable: parts.writable,
            locks: parts.locks,
            manifest_locks: KeyedMutex::default(),
            retention: parts.retention,
            usage: parts.usage,
            gc_exclusion: parts.gc_exclusion,
        }
    }
}
