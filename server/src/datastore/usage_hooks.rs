//! Where usage metering and quotas (issue "WORM, quotas, metering") meet the chunk store: the
//! chunk insert and GC report what they stored and removed, and inserts ask for quota first.
//! The counters and the scan live in `usage.rs`.

use crate::format::Digest;

use super::usage::ChunkTally;
use super::{Datastore, DatastoreError};

pub use super::usage::UsageState;

impl Datastore {
    /// Called before a new chunk of `size` stored bytes is written; refuses
    /// ([`DatastoreError::QuotaExceeded`]) when the owner's quota would be passed.
    /// A chunk that is already stored costs nothing and passes even over the quota.
    pub(crate) async fn usage_check_quota(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<(), DatastoreError> {
        match self.quota_check(size, "chunk upload") {
            Err(e) if self.chunk_exists(digest).await.unwrap_or(false) => {
                tracing::debug!(store = %self.name, "duplicate chunk over quota accepted ({e})");
                Ok(())
            }
            other => other,
        }
    }

    /// A new chunk object of `size` bytes was written.
    pub(crate) fn usage_chunk_stored(&self, digest: &Digest, size: u64) {
        self.usage_add_chunk(digest, size);
    }

    /// GC removed a chunk object of `size` bytes.
    pub(crate) fn usage_chunk_removed(&self, size: u64) {
        self.usage_sub_chunk(None, size);
    }

    /// Verify moved a corrupt chunk of `size` bytes to its `.bad` name (no longer a chunk).
    pub(crate) fn usage_chunk_moved_aside(&self, digest: &Digest, size: u64) {
        self.usage_sub_chunk(Some(digest), size);
    }

    /// GC finished its sweep (GC's lock is still held): reconcile the counters with the chunks
    /// the sweep left (`remaining`, from its listing) and a count of the snapshots.
    pub(crate) async fn usage_gc_finished(&self, remaining: ChunkTally) {
        if let Err(e) = self.usage_scan_finish(Ok(remaining)).await {
            tracing::warn!(store = %self.name, "usage rescan after GC failed: {e}");
        }
        if let Err(e) = self.usage_flush(false).await {
            tracing::warn!(store = %self.name, "persisting usage counters failed: {e}");
        }
    }
}
