//! The recount of a datastore's usage, which lists the chunk store and walks the snapshot
//! tree (so it runs on the datastore, excluding GC), and the quota checks that may start one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::format::names::BackupNamespace;

use super::super::layout::{parse_chunk_key, snapshot_prefix, ChunkKey, CHUNK_PREFIX};
use super::super::{Datastore, DatastoreError};
use super::{ChunkTally, UsageCounters};

impl Datastore {
    /// Refuse a new backup when the tenant (or this datastore) is already at its quota. Counters
    /// not trusted yet (just after a crash) are the last ones persisted until the background
    /// recount this starts has finished: a request never waits for a recount.
    pub async fn check_quota_for_backup(self: &Arc<Self>) -> Result<(), DatastoreError> {
        let limited = self.usage.store_quota().is_some()
            || self.usage.meter().is_some_and(|m| m.quota().is_some());
        if limited && self.usage.needs_rescan() {
            self.request_usage_recount();
        }
        self.usage.quota_check(0, "new backup")
    }

    /// Starts a recount in the background unless one is already asked for or running; the
    /// counters stay readable (with their last values) meanwhile.
    pub fn request_usage_recount(self: &Arc<Self>) {
        if self.usage.recount_queued.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.usage.recount_queued.store(false, Ordering::SeqCst);
            return;
        };
        let ds = self.clone();
        handle.spawn(async move {
            match ds.usage_rescan().await {
                Ok(u) => tracing::info!(
                    store = %ds.name,
                    "usage counted: {} physical bytes in {} chunks, {} snapshots",
                    u.physical_bytes, u.chunks, u.snapshots
                ),
                Err(e) => tracing::warn!(store = %ds.name, "usage recount failed: {e}"),
            }
            ds.usage.recount_queued.store(false, Ordering::SeqCst);
        });
    }

    /// Recount everything by listing (excludes GC while it runs; see the module docs). One
    /// recount at a time: a caller that arrives while one runs waits for it and takes its
    /// result instead of starting another.
    pub async fn usage_rescan(&self) -> Result<UsageCounters, DatastoreError> {
        let asked = self.usage.recounts_done.load(Ordering::SeqCst);
        let _one = self.usage.recount.lock().await;
        if self.usage.recounts_done.load(Ordering::SeqCst) != asked {
            return Ok(self.usage.counters());
        }
        let flag = &self.usage.rescan_waiting_or_running;
        flag.store(true, Ordering::SeqCst);
        let result = {
            let _gc = self.gc_running.lock().await;
            self.usage_rescan_locked().await
        };
        flag.store(false, Ordering::SeqCst);
        if result.is_ok() {
            self.usage.recounts_done.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    /// Whether a usage recount holds or waits for GC's lock (GC then waits rather than fail).
    pub(in crate::datastore) fn usage_rescan_active(&self) -> bool {
        self.usage
            .rescan_waiting_or_running
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The scan itself; the caller keeps GC from removing chunks meanwhile.
    pub(in crate::datastore) async fn usage_rescan_locked(
        &self,
    ) -> Result<UsageCounters, DatastoreError> {
        self.usage.scan_begin();
        let chunks = self.scan_chunks().await;
        self.usage_scan_finish(chunks).await
    }

    /// Complete a scan begun with [`StoreUsage::scan_begin`]: `chunks` are the chunk sizes a
    /// listing found (GC passes what its sweep left); snapshots are counted here, and changes
    /// made meanwhile are applied on top.
    pub(in crate::datastore) async fn usage_scan_finish(
        &self,
        chunks: Result<ChunkTally, DatastoreError>,
    ) -> Result<UsageCounters, DatastoreError> {
        let result = match chunks {
            Ok(chunks) => self.scan_snapshots().await.map(|s| (chunks, s)),
            Err(e) => Err(e),
        };
        match result {
            Ok(found) => {
                self.usage.scan_apply(Some(found));
                Ok(self.usage.counters())
            }
            Err(e) => {
                self.usage.scan_apply(None);
                Err(e)
            }
        }
    }

    /// Chunk sizes by digest, as stored now.
    pub(super) async fn scan_chunks(&self) -> Result<ChunkTally, DatastoreError> {
        let mut chunks = HashMap::new();
        for obj in self.backend.list(CHUNK_PREFIX, None).await?.objects {
            if let Some(ChunkKey::Chunk(digest)) = parse_chunk_key(&obj.key) {
                chunks.insert(digest, obj.size);
            }
        }
        Ok(ChunkTally::of_listing(chunks))
    }

    /// Logical bytes by snapshot key, as stored now.
    async fn scan_snapshots(&self) -> Result<BTreeMap<String, u64>, DatastoreError> {
        let known = self.usage.snapshot_logicals();
        let mut snapshots = BTreeMap::new();
        for ns in self.list_namespaces(&BackupNamespace::root(), None).await? {
            for group in self.list_groups(&ns).await? {
                for snap in self.list_snapshots(&ns, &group).await? {
                    if !snap.finished {
                        continue;
                    }
                    let key = snapshot_prefix(&ns, &snap.dir)?;
                    let logical = match known.get(&key) {
                        Some(v) => *v,
                        None => match self.load_manifest(&ns, &snap.dir).await {
                            Ok((m, _)) => m.files.iter().map(|f| f.size).sum(),
                            Err(e) if e.is_not_found() => continue,
                            Err(e) => return Err(e),
                        },
                    };
                    snapshots.insert(key, logical);
                }
            }
        }
        Ok(snapshots)
    }

    /// GC finished its sweep (GC's lock is still held): reconcile the counters with the chunks
    /// the sweep left (`remaining`, from its listing) and a count of the snapshots.
    pub(crate) async fn usage_gc_finished(&self, remaining: ChunkTally) {
        if let Err(e) = self.usage_scan_finish(Ok(remaining)).await {
            tracing::warn!(store = %self.name, "usage rescan after GC failed: {e}");
        }
        if let Err(e) = self.usage.flush(false).await {
            tracing::warn!(store = %self.name, "persisting usage counters failed: {e}");
        }
    }
}
