//! Counting by scan: while a listing of the chunk store and of the snapshots runs, changes
//! are logged ([`ScanLog`]) and applied on top of its result, so the scan is exact even with
//! backups and verify running. Both scans (the recount and GC's sweep) list the chunk store one
//! shard at a time.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::format::Digest;

use super::super::lock_std;
use super::StoreUsage;

/// What changed while a scan was running.
#[derive(Debug, Default)]
pub(super) struct ScanLog {
    pub(super) stored: HashMap<Digest, u64>,
    /// Chunks taken out of service (moved to a `.bad` name) meanwhile.
    pub(super) moved_aside: HashSet<Digest>,
    pub(super) added: HashSet<String>,
    pub(super) removed: HashSet<String>,
    /// The scan has closed the shards below this one
    /// ([`chunk_shard`]): their listing is complete and their logged changes are resolved, so
    /// later changes in them are applied to `late_*` at once instead of being logged.
    pub(super) closed_shards: usize,
    pub(super) late_physical: i64,
    pub(super) late_chunks: i64,
}

/// Shards of a sharded chunk scan: one per first digest byte, i.e. per `.chunks/XX` prefix.
pub(crate) const CHUNK_SHARDS: usize = 256;

/// The shard of a digest in a sharded chunk scan.
pub(crate) fn chunk_shard(digest: &Digest) -> usize {
    digest[0] as usize
}

/// What a scan's listing of the chunk store found. Scans list shard by shard and close each
/// shard ([`StoreUsage::scan_close_shard`]), so the changes logged during a listing are
/// resolved shard by shard and no whole-store listing is ever held.
#[derive(Debug, Default)]
pub(crate) struct ChunkTally {
    pub physical: u64,
    pub chunks: u64,
}

impl StoreUsage {
    /// Start logging changes for a scan whose chunk listing starts after this call.
    pub(in crate::datastore) fn scan_begin(&self) {
        lock_std(&self.inner).scan = Some(ScanLog::default());
    }

    /// Stop logging without a result (the listing failed).
    pub(in crate::datastore) fn scan_abort(&self) {
        lock_std(&self.inner).scan = None;
    }

    /// A sharded scan finished listing `shard`, whose chunks and sizes are `listed` (the caller
    /// holds the exclusive chunk lock, so every insert or move that reached the store before
    /// the listing has been logged): resolve the shard's logged changes against its listing and
    /// close it.
    pub(in crate::datastore) fn scan_close_shard(
        &self,
        shard: usize,
        mut listed: Vec<(Digest, u64)>,
    ) {
        listed.sort_unstable_by_key(|(digest, _)| *digest);
        let listed_size = |d: &Digest| {
            listed
                .binary_search_by_key(d, |(digest, _)| *digest)
                .ok()
                .map(|i| listed[i].1)
        };
        let mut inner = lock_std(&self.inner);
        let Some(scan) = inner.scan.as_mut() else {
            return;
        };
        let mut late = (0i64, 0i64);
        scan.stored.retain(|digest, size| {
            if chunk_shard(digest) != shard {
                return true;
            }
            if listed_size(digest).is_none() {
                late.0 += *size as i64;
                late.1 += 1;
            }
            false
        });
        scan.moved_aside.retain(|digest| {
            if chunk_shard(digest) != shard {
                return true;
            }
            if let Some(size) = listed_size(digest) {
                late.0 -= size as i64;
                late.1 -= 1;
            }
            false
        });
        scan.late_physical += late.0;
        scan.late_chunks += late.1;
        scan.closed_shards = scan.closed_shards.max(shard + 1);
    }

    /// The logical bytes of every counted snapshot (a scan reads manifests only for others).
    pub(in crate::datastore) fn snapshot_logicals(&self) -> BTreeMap<String, u64> {
        lock_std(&self.inner).snapshots.clone()
    }

    /// Replace the counters by a scan's result: `tally` from its chunk listing and `snapshots`
    /// from its snapshot walk, with the changes logged meanwhile applied on top. Without a
    /// result (`None`: the scan failed) only the log is dropped.
    pub(in crate::datastore) fn scan_apply(
        &self,
        result: Option<(ChunkTally, BTreeMap<String, u64>)>,
    ) {
        let mut inner = lock_std(&self.inner);
        let log = inner.scan.take();
        let Some((tally, mut snapshots)) = result else {
            return;
        };
        // Every shard was closed: what changed during a shard's listing was resolved then.
        debug_assert!(
            log.as_ref().is_none_or(|l| l.closed_shards == CHUNK_SHARDS),
            "scan applied before every shard was closed"
        );
        let log = log.unwrap_or_default();
        let physical = (tally.physical as i64 + log.late_physical).max(0) as u64;
        let count = (tally.chunks as i64 + log.late_chunks).max(0) as u64;
        for key in &log.removed {
            snapshots.remove(key);
        }
        for key in &log.added {
            if let Some(v) = inner.snapshots.get(key) {
                snapshots.insert(key.clone(), *v);
            }
        }
        inner.physical = physical;
        inner.chunks = count;
        inner.snapshots = snapshots;
        inner.needs_rescan = false;
        inner.dirty = true;
    }
}
