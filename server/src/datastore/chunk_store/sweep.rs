//! The per-chunk part of GC's sweep (docs/formats.md#gc-sweep): listing one `.chunks/XX`
//! shard, reuse times, the exclusive chunk lock, and removing a batch of chunks, journaled out
//! of the known set before the deletes. Which chunks are unused is GC's decision
//! (`gc/sweep.rs`).

use std::collections::HashSet;
use std::time::SystemTime;

use crate::backend::ObjectMeta;
use crate::format::Digest;

use super::super::layout::{parse_chunk_key, ChunkKey, CHUNK_PREFIX};
use super::super::DatastoreError;
use super::ChunkStore;

/// Keys per delete request.
pub(in crate::datastore) const DELETE_BATCH: usize = 1000;
/// Delete requests in flight at once (all under one hold of the exclusive chunk lock).
pub(in crate::datastore) const DELETE_PARALLELISM: usize = 4;

impl ChunkStore {
    /// The chunks and `.bad` files of shard `shard` (`.chunks/XX`), other objects skipped.
    pub(in crate::datastore) async fn list_shard(
        &self,
        shard: usize,
    ) -> Result<Vec<(ObjectMeta, ChunkKey)>, DatastoreError> {
        let prefix = format!("{CHUNK_PREFIX}{shard:02x}");
        let listed = self.backend.list(&prefix, None).await?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|obj| parse_chunk_key(&obj.key).map(|chunk| (obj, chunk)))
            .collect())
    }

    /// The chunk lock, exclusively: no insert or move runs until the guard is dropped.
    pub(in crate::datastore) async fn lock_exclusive(
        &self,
    ) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.lock.write().await
    }

    /// The object's time, or its last reuse by a backup of this process if later (object
    /// stores do not refresh times on reuse; see `known.rs`).
    pub(in crate::datastore) fn last_modified(
        &self,
        obj: &ObjectMeta,
        digest: &Digest,
    ) -> SystemTime {
        match self.known.last_use(digest) {
            Some(used) if used > obj.modified => used,
            _ => obj.modified,
        }
    }

    /// Whether removals are journaled in the persisted known set (object stores).
    pub(in crate::datastore) fn journals_removals(&self) -> bool {
        self.known.enabled()
    }

    /// Removes the objects `keys` (chunks and `.bad` files), whose chunks are `gone`; the
    /// caller holds the exclusive lock, and runs [`Self::merge_known_if_due`] after it. The persisted known set must never name a deleted
    /// chunk: their removal is journaled (which also forgets them in memory) before the first
    /// delete. Object stores get one DeleteObjects per [`DELETE_BATCH`] keys, several in flight.
    pub(in crate::datastore) async fn remove(
        &self,
        gone: &[Digest],
        keys: &[String],
    ) -> Result<(), DatastoreError> {
        self.known
            .journal_removal(self.backend.as_ref(), gone)
            .await?;
        for digest in gone {
            self.known.remove(digest);
        }
        let requests = keys
            .chunks(DELETE_BATCH)
            .map(|batch| self.backend.delete_many(batch));
        futures::future::try_join_all(requests).await?;
        Ok(())
    }

    /// Between groups of deletes, with the exclusive lock let go: merge the removals
    /// journaled so far into a new base once they grew long (see `known.rs`), so that what the
    /// set holds in memory stays bounded during a long sweep without blocking inserts.
    pub(in crate::datastore) async fn merge_known_if_due(&self) -> Result<(), DatastoreError> {
        self.known.merge_if_due(self.backend.as_ref()).await
    }

    /// After a sweep: fold the removal journal written batch by batch into a new full index
    /// (when anything was `journaled`), and forget reuse times older than `min_mtime`.
    pub(in crate::datastore) async fn finish_sweep(
        &self,
        journaled: bool,
        min_mtime: SystemTime,
    ) -> Result<(), DatastoreError> {
        if journaled {
            self.known
                .write_full(self.backend.as_ref(), &HashSet::new())
                .await?;
        }
        self.known.prune_recent(min_mtime);
        Ok(())
    }
}
