//! The recount of a datastore's usage, which lists the chunk store and walks the snapshot
//! tree (so it runs on the datastore, excluding GC), and the quota checks that may start one.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::format::names::BackupNamespace;
use crate::format::Digest;

use super::super::layout::{snapshot_prefix, ChunkKey};
use super::super::{Datastore, DatastoreError, SnapshotTree};
use super::{ChunkTally, StoreUsage, UsageCounters, CHUNK_SHARDS};

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
            let _gc = self.gc_exclusion.running.lock().await;
            self.usage.scan_begin();
            let chunks = self.scan_chunks().await;
            finish_scan(&self.tree, &self.usage, chunks).await
        };
        flag.store(false, Ordering::SeqCst);
        if result.is_ok() {
            self.usage.recounts_done.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    /// The chunks as stored now, counted one `.chunks/XX` shard at a time like GC's sweep:
    /// memory holds one shard's listing (1/256 of the store), not the whole store's, so a
    /// recount after an unclean stop stays small at ten million chunks. Each shard is closed
    /// under the exclusive chunk lock, so an insert or move racing its listing is counted once.
    pub(super) async fn scan_chunks(&self) -> Result<ChunkTally, DatastoreError> {
        let mut tally = ChunkTally::default();
        for shard in 0..CHUNK_SHARDS {
            let sizes: Vec<(Digest, u64)> = self
                .chunks
                .list_shard(shard)
                .await?
                .into_iter()
                .filter_map(|(obj, chunk)| match chunk {
                    ChunkKey::Chunk(digest) => Some((digest, obj.size)),
                    ChunkKey::Bad(_) => None,
                })
                .collect();
            tally.physical += sizes.iter().map(|(_, size)| size).sum::<u64>();
            tally.chunks += sizes.len() as u64;
            let _exclusive = self.chunks.lock_exclusive().await;
            self.usage.scan_close_shard(shard, sizes);
        }
        Ok(tally)
    }
}

impl StoreUsage {
    /// Whether a usage recount holds or waits for GC's lock (GC then waits rather than fail).
    pub(crate) fn rescan_active(&self) -> bool {
        self.rescan_waiting_or_running.load(Ordering::SeqCst)
    }
}

/// Complete a scan begun with [`StoreUsage::scan_begin`]: `chunks` are the chunk sizes a
/// listing found (GC passes what its sweep left); snapshots are counted here, and changes
/// made meanwhile are applied on top.
pub(in crate::datastore) async fn finish_scan(
    tree: &SnapshotTree,
    usage: &StoreUsage,
    chunks: Result<ChunkTally, DatastoreError>,
) -> Result<UsageCounters, DatastoreError> {
    let result = match chunks {
        Ok(chunks) => scan_snapshots(tree, usage).await.map(|s| (chunks, s)),
        Err(e) => Err(e),
    };
    match result {
        Ok(found) => {
            usage.scan_apply(Some(found));
            Ok(usage.counters())
        }
        Err(e) => {
            usage.scan_apply(None);
            Err(e)
        }
    }
}

/// Logical bytes by snapshot key, as stored now.
async fn scan_snapshots(
    tree: &SnapshotTree,
    usage: &StoreUsage,
) -> Result<BTreeMap<String, u64>, DatastoreError> {
    let known = usage.snapshot_logicals();
    let mut snapshots = BTreeMap::new();
    for ns in tree.list_namespaces(&BackupNamespace::root(), None).await? {
        for group in tree.list_groups(&ns).await? {
            for snap in tree.list_snapshots(&ns, &group).await? {
                if !snap.finished {
                    continue;
                }
                let key = snapshot_prefix(&ns, &snap.dir)?;
                let logical = match known.get(&key) {
                    Some(v) => *v,
                    None => match tree.load_manifest(&ns, &snap.dir).await {
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
pub(crate) async fn reconcile_after_gc(
    tree: &SnapshotTree,
    usage: &StoreUsage,
    remaining: ChunkTally,
) {
    if let Err(e) = finish_scan(tree, usage, Ok(remaining)).await {
        tracing::warn!(store = %usage.store, "usage rescan after GC failed: {e}");
    }
    if let Err(e) = usage.flush(false).await {
        tracing::warn!(store = %usage.store, "persisting usage counters failed: {e}");
    }
}
