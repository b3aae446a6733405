//! One datastore: snapshots, groups, namespaces and the chunk store on top of a [`Backend`],
//! using PBS's key layout (docs/design.md#pbs-key-layout, docs/formats.md#datastore-layout).
//!
//! Concurrency rules of PBS (one backup per group, shared locks for readers and for the previous
//! snapshot of a running backup, serialised manifest edits) are enforced with in-process locks:
//! one server process owns a datastore (docs/design.md#single-writer-lease).

pub mod archive_source;
mod chunk_store;
mod entry;
mod fence;
mod gc;
pub mod history;
pub mod layout;
mod list_cache;
mod locks;
pub mod prune;
mod resume;
pub mod retention;
mod session;
mod tree;
mod usage;
mod verify;
mod writer_lease;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{Backend, BackendError};
use crate::format::{Digest, FormatError};

pub use archive_source::DidxSource;
pub use chunk_store::{
    ChunkCheck, ChunkInsertOutcome, ChunkStore, ChunkVerdict, KNOWN_DELTA_PREFIX, KNOWN_INDEX,
};
pub use chunk_store::{DigestFile, DigestFileOrigin, DigestFileWriter};
pub use entry::DatastoreEntry;
pub use gc::{
    GarbageCollector, GcCacheStats, GcStatus, DEFAULT_ABANDONED_AFTER, DEFAULT_GC_CUTOFF,
    DEFAULT_INDEX_CACHE_DIGESTS,
};
pub use history::{JobKind, JobRecord};
pub use list_cache::CachedBackend;
pub use prune::{compute_prune, compute_prune_with_tz, KeepOptions, PruneCandidate, PruneMark};
pub use retention::{RetentionLocks, RetentionStatus, SnapshotLockInfo};
pub use session::{BackupLease, ReaderLease};
pub use tree::{
    GroupRemoveStats, NamespaceDeleteStats, NamespaceMoveStats, SnapshotInfo, SnapshotTree,
};
pub use usage::history::{DailySample, UsageHistory, HISTORY_DAYS};
pub use usage::{
    StoreUsage, TenantMeter, UsageCounters, UsageObserver, DEFAULT_QUOTA_WARN_PERCENT,
};
pub use verify::{verify_due, VerifyOptions, VerifySummary};
pub use writer_lease::{LeaseTiming, LEASE, LEASE_MARGIN, LEASE_PREFIX, LEASE_RENEW, LEASE_TTL};

/// Errors of the datastore layer; messages name the namespace, group, snapshot or chunk.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A lock is held by another backup, reader or maintenance task.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Protected(String),
    /// A retention lock (WORM) still holds the object; the message says until when.
    #[error("{0}")]
    Locked(String),
    /// The owner's storage quota would be passed.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Format(#[from] FormatError),
    /// A stored object failed to parse.
    #[error("{object}: {source}")]
    Corrupt {
        object: String,
        #[source]
        source: FormatError,
    },
    #[error("{0}")]
    Internal(String),
}

impl DatastoreError {
    /// True when the namespace/group/snapshot/chunk/object does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            DatastoreError::NotFound(_) => true,
            DatastoreError::Backend(e) => e.is_not_found(),
            _ => false,
        }
    }
}

/// The parts of a datastore that the snapshot tree and garbage collection both hold: its name,
/// the fenced backend, the write check, the in-process locks, retention, usage, and the
/// exclusion between GC and moves.
#[derive(Clone)]
pub(crate) struct StoreParts {
    pub name: String,
    pub backend: Arc<dyn Backend>,
    pub writable: fence::WriteCheck,
    pub locks: Arc<locks::LockTable>,
    pub retention: Arc<RetentionLocks>,
    pub usage: Arc<StoreUsage>,
    pub gc_exclusion: Arc<locks::GcExclusion>,
}

/// A datastore served by this process.
pub struct Datastore {
    name: String,
    /// The store, fenced by the writer lease: every write and delete goes through it.
    backend: Arc<dyn Backend>,
    /// The same store without the fence, for the final flushes of `close`.
    unfenced: Arc<dyn Backend>,
    /// Writes in flight; closed by `close` before the lease is released.
    gate: Arc<fence::WriteGate>,
    /// The write check every operation makes first (writer lease, closing gate).
    writable: fence::WriteCheck,
    /// Group and snapshot locks (in-process), shared with the snapshot tree.
    locks: Arc<locks::LockTable>,
    /// Namespaces, groups, snapshots and their edits.
    tree: Arc<SnapshotTree>,
    /// Running backup sessions, for GC.
    leases: Arc<session::LeaseRegistry>,
    /// Keeps GC, moves and usage recounts apart.
    gc_exclusion: Arc<locks::GcExclusion>,
    /// Garbage collection: its settings, index cache and last status.
    gc: GarbageCollector,
    /// This server's single-writer lease on the datastore.
    writer: Arc<writer_lease::WriterLease>,
    /// The chunk store (with the known-digest set and the chunk lock).
    chunks: Arc<ChunkStore>,
    /// Retention locks (WORM): rules, records, removal checks, Object Lock requests.
    retention: Arc<RetentionLocks>,
    /// Usage counters and quota (shared with the tenant's meter).
    usage: Arc<StoreUsage>,
}

impl std::fmt::Debug for Datastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datastore")
            .field("name", &self.name)
            .field("backend", &self.backend.capabilities().kind)
            .finish()
    }
}

impl Datastore {
    /// Open a datastore on `backend` as this process (see [`Self::open_as`]).
    pub async fn open(name: &str, backend: Arc<dyn Backend>) -> Result<Arc<Self>, DatastoreError> {
        Self::open_as(name, backend, process_holder()).await
    }

    /// Open a datastore on `backend` for the writer `holder` (stable per server, e.g. its
    /// instance id): takes the writer lease (refused, naming the holder, while another server
    /// holds it), loads the known-chunk set on object storage, and reads back the last GC
    /// status. On object storage, listings are cached in memory from here on.
    pub async fn open_as(
        name: &str,
        backend: Arc<dyn Backend>,
        holder: &str,
    ) -> Result<Arc<Self>, DatastoreError> {
        let timing = crate::fault::lease_timing()
            .map(|(ttl, renew, margin)| LeaseTiming { ttl, renew, margin })
            .unwrap_or_default();
        Self::open_with(name, backend, holder, timing).await
    }

    /// [`Self::open_as`], keeping the local copy of the known-chunk set in `cache_dir` (the
    /// server passes a directory under its data dir), so that a restart maps it instead of
    /// downloading `.chunks/.index`. Without it the copy lives in the temp dir for one open.
    pub async fn open_cached(
        name: &str,
        backend: Arc<dyn Backend>,
        holder: &str,
        cache_dir: &Path,
    ) -> Result<Arc<Self>, DatastoreError> {
        let timing = crate::fault::lease_timing()
            .map(|(ttl, renew, margin)| LeaseTiming { ttl, renew, margin })
            .unwrap_or_default();
        Self::open_in(name, backend, holder, timing, Some(cache_dir)).await
    }

    /// [`Self::open_as`] with a lease TTL, renewal interval and margin of its own (tests).
    pub async fn open_with(
        name: &str,
        backend: Arc<dyn Backend>,
        holder: &str,
        timing: LeaseTiming,
    ) -> Result<Arc<Self>, DatastoreError> {
        Self::open_in(name, backend, holder, timing, None).await
    }

    async fn open_in(
        name: &str,
        backend: Arc<dyn Backend>,
        holder: &str,
        timing: LeaseTiming,
        cache_dir: Option<&Path>,
    ) -> Result<Arc<Self>, DatastoreError> {
        let opened_at = std::time::SystemTime::now();
        // A local directory may be changed by hand or by PBS; an object-store prefix only by us,
        // so only there may listings be cached and the known-chunk set be trusted.
        let local = !backend.capabilities().exclusive_to_server;
        // The lease reads other servers' writes: never from the listing cache.
        let writer = Arc::new(
            writer_lease::WriterLease::acquire(backend.clone(), name, holder, timing).await?,
        );
        let unfenced: Arc<dyn Backend> = match local {
            true => backend,
            false => Arc::new(CachedBackend::new(backend)),
        };
        let gate = Arc::new(fence::WriteGate::default());
        let backend: Arc<dyn Backend> = Arc::new(fence::FencedBackend::new(
            unfenced.clone(),
            writer.clone(),
            gate.clone(),
        ));
        let chunks = Arc::new(ChunkStore::open(name, backend.clone(), !local, cache_dir).await?);
        let retention = Arc::new(RetentionLocks::load(name, backend.clone()).await?);
        let usage = Arc::new(StoreUsage::load(name, backend.clone()).await?);
        let writable = fence::WriteCheck::new(name, gate.clone(), writer.clone());
        let locks = Arc::new(locks::LockTable::default());
        let gc_exclusion = Arc::new(locks::GcExclusion::default());
        let parts = StoreParts {
            name: name.to_string(),
            backend: backend.clone(),
            writable: writable.clone(),
            locks: locks.clone(),
            retention: retention.clone(),
            usage: usage.clone(),
            gc_exclusion: gc_exclusion.clone(),
        };
        let tree = Arc::new(SnapshotTree::new(parts.clone()));
        let leases = Arc::new(session::LeaseRegistry::default());
        let gc =
            GarbageCollector::open(parts, tree.clone(), chunks.clone(), leases.clone()).await?;
        let ds = Arc::new(Self {
            name: name.to_string(),
            backend,
            unfenced,
            gate,
            writable,
            locks,
            tree,
            leases,
            gc_exclusion,
            gc,
            writer,
            chunks,
            retention,
            usage,
        });
        writer_lease::spawn_maintenance(Arc::downgrade(&ds), ds.writer.renew_interval());
        ds.spawn_temp_file_cleanup(opened_at);
        Ok(ds)
    }

    /// Removes, in the background, temp files a crashed process left (those older than the
    /// open: newer ones are this process's writes in progress).
    fn spawn_temp_file_cleanup(self: &Arc<Self>, before: std::time::SystemTime) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let ds = Arc::downgrade(self);
        handle.spawn(async move {
            let Some(ds) = ds.upgrade() else { return };
            match ds.backend.remove_stale_temp_files(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    "datastore '{}': removed {n} temp files left by an earlier crash",
                    ds.name
                ),
                Err(e) => tracing::warn!(
                    "datastore '{}': removing temp files left by a crash failed: {e}",
                    ds.name
                ),
            }
        });
    }

    /// Holder id of this datastore's writer lease.
    pub fn lease_holder(&self) -> &str {
        self.writer.holder()
    }

    /// Refuse writes after the writer lease was lost to another server, while it could not be
    /// renewed in time, or once the datastore is closing.
    pub fn check_writable(&self) -> Result<(), DatastoreError> {
        self.writable.check()
    }

    /// Clean shutdown: refuse new writes, wait (at most `drain`) for the writes in flight,
    /// persist pending known-chunk journal entries and the usage counters, then give up the
    /// writer lease. When writes are still in flight after `drain`, the lease is kept and
    /// left to expire, so no other server can start writing next to them.
    pub async fn close_within(&self, drain: Duration) -> Result<(), DatastoreError> {
        if !self.gate.close(drain).await {
            return Err(DatastoreError::Busy(format!(
                "datastore '{}': writes still in progress after {}s; its lease is left to \
                 expire instead of being released",
                self.name,
                drain.as_secs()
            )));
        }
        self.writer.check().map_err(DatastoreError::Busy)?;
        self.chunks.flush_known_to(self.unfenced.as_ref()).await?;
        self.usage.flush_to(self.unfenced.as_ref(), true).await?;
        self.writer.release().await
    }

    /// [`Self::close_within`] with one minute for writes in flight.
    pub async fn close(&self) -> Result<(), DatastoreError> {
        self.close_within(Duration::from_secs(60)).await
    }

    /// Whether `close` has begun (writes are refused).
    pub fn is_closing(&self) -> bool {
        self.gate.is_closing()
    }

    /// The chunk store: reads, checks and the known-digest set. Writes go through
    /// [`Self::insert_chunk`] and [`Self::mark_chunk_bad`], which pass the writer lease first.
    pub fn chunks(&self) -> &ChunkStore {
        &self.chunks
    }

    /// Usage counters, quota and status figures of this datastore.
    pub fn usage(&self) -> &Arc<StoreUsage> {
        &self.usage
    }

    /// Namespaces, groups and snapshots: listing, manifests, notes, owners, protection,
    /// removal and moves.
    pub fn tree(&self) -> &SnapshotTree {
        &self.tree
    }

    /// Garbage collection: run, stop, settings and the last status.
    pub fn gc(&self) -> &GarbageCollector {
        &self.gc
    }

    /// The retention locks (WORM) of this datastore.
    pub fn retention(&self) -> &RetentionLocks {
        &self.retention
    }

    /// Store a validated chunk blob, deduplicated by digest ([`ChunkStore::insert`]), once
    /// the writer lease and the owner's quota allow it; a new chunk is added to the usage.
    pub async fn insert_chunk(
        &self,
        digest: &Digest,
        raw: bytes::Bytes,
        encrypted: bool,
    ) -> Result<ChunkInsertOutcome, DatastoreError> {
        self.check_writable()?;
        let size = raw.len() as u64;
        // A chunk that is already stored costs nothing and passes even over the quota.
        let quota = async {
            match self.usage.quota_check(size, "chunk upload") {
                Err(e) if self.chunks.exists(digest).await.unwrap_or(false) => {
                    tracing::debug!(store = %self.name, "duplicate chunk over quota accepted ({e})");
                    Ok(())
                }
                other => other,
            }
        };
        let stored = |size| self.usage.add_chunk(digest, size);
        self.chunks
            .insert(digest, raw, encrypted, quota, stored)
            .await
    }

    /// Take a missing or corrupt chunk out of service ([`ChunkStore::move_aside`]) once the
    /// writer lease allows it; a moved chunk leaves the usage. Returns its new key.
    pub async fn mark_chunk_bad(&self, digest: &Digest) -> Result<Option<String>, DatastoreError> {
        self.check_writable()?;
        let moved = |size| self.usage.sub_chunk(Some(digest), size);
        self.chunks.move_aside(digest, moved).await
    }

    /// Datastore name (as configured).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `"filesystem"` or `"s3"`.
    pub fn backend_kind(&self) -> &'static str {
        self.backend.capabilities().kind
    }

    /// The backend, for layers that need raw object access (usage accounting, import).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }
}

/// Lease holder id for datastores opened without one: host and process, so that reopening
/// within one process works and two processes exclude each other.
fn process_holder() -> &'static str {
    static HOLDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOLDER.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let nonce: [u8; 4] = rand::random();
        format!("pid-{}-{}@{host}", std::process::id(), hex::encode(nonce))
    })
}

/// Lock a std mutex, tolerating poisoning (the protected data stays consistent per operation).
pub(crate) fn lock_std<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod moves_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod worm_tests;
