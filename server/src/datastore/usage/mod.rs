//! Usage metering of one datastore (docs/design.md#usage-and-compliance), owned by
//! [`StoreUsage`]: physical bytes and chunk count of the chunk store, and per finished snapshot its logical bytes (the archive sizes its
//! manifest lists). Counters follow every chunk insert, GC removal, backup commit and snapshot
//! removal, and are persisted in `.usage/counters.json` so that a restart needs no scan.
//!
//! Reconciliation is by scan: a full listing of the chunk store and of the snapshots replaces
//! the counters. It runs at open when the persisted counters are missing or were not written
//! by a clean shutdown (the server may have crashed after changes it had not persisted yet),
//! and after every GC run, which hands over what its sweep's listing left instead of listing
//! the chunk store a second time. Changes made while a scan runs (chunks stored or moved aside,
//! snapshots added or removed) are logged and applied on top of its result, so the scan is
//! exact even with backups and verify running.
//!
//! S3 request counts (billed by most providers) are kept in the same object: the totals
//! persisted by earlier server runs plus this run's, so they do not restart at zero. They are
//! written with the other counters, at a clean shutdown, and otherwise at most every
//! [`persist::REQUESTS_PERSIST_INTERVAL`] while requests other than these writes happen; a crash loses
//! at most that interval's counts.

//!
//! Parts: the counters and their events (here), their daily samples (`history.rs`), the quota
//! of the datastore and of its tenant ([`TenantMeter`], `meter.rs`), the status figures (`capacity.rs`), persistence
//! (`persist.rs`), the change log of a running scan (`scan.rs`) and the recount, which lists the
//! chunk store and the snapshot tree through the datastore (`recount.rs`).

mod capacity;
pub mod history;
mod meter;
mod persist;
mod recount;
mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, RequestCounts};
use crate::format::Digest;

use super::{lock_std, DatastoreError};

pub use meter::{TenantMeter, UsageObserver, DEFAULT_QUOTA_WARN_PERCENT};
#[cfg(test)]
use persist::USAGE_OBJECT;
pub(crate) use recount::reconcile_after_gc;
use scan::ScanLog;
pub(crate) use scan::{chunk_shard, ChunkTally, CHUNK_SHARDS};

/// The five usage figures of a datastore or tenant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct UsageCounters {
    pub logical_bytes: u64,
    pub physical_bytes: u64,
    pub chunks: u64,
    pub snapshots: u64,
    pub groups: u64,
}

impl UsageCounters {
    /// Adds `other` (tenant totals over datastores).
    pub fn add(&mut self, other: &UsageCounters) {
        self.logical_bytes += other.logical_bytes;
        self.physical_bytes += other.physical_bytes;
        self.chunks += other.chunks;
        self.snapshots += other.snapshots;
        self.groups += other.groups;
    }
}

#[derive(Debug, Default)]
struct Inner {
    physical: u64,
    chunks: u64,
    snapshots: BTreeMap<String, u64>,
    dirty: bool,
    needs_rescan: bool,
    scan: Option<ScanLog>,
    /// S3 requests of earlier server runs (from the persisted object).
    requests_before: RequestCounts,
    /// This run's request counts as of the last write, and when that was.
    requests_written: RequestCounts,
    requests_written_at: Option<Instant>,
    /// Daily samples for the usage charts (`history.rs`).
    history: history::UsageHistory,
}

/// Usage counters and quota of one datastore, loaded at open (see the module docs).
pub struct StoreUsage {
    /// Datastore name, for messages and events.
    store: String,
    /// The datastore's backend (request counts, the counters object).
    backend: Arc<dyn Backend>,
    inner: Mutex<Inner>,
    meter: Mutex<Option<Arc<TenantMeter>>>,
    /// Per-datastore quota (`[[datastore]] quota_bytes`).
    store_limit: Mutex<Option<u64>>,
    /// Nominal capacity for the status figures (`[[datastore]] capacity_bytes`).
    capacity_limit: Mutex<Option<u64>>,
    /// A recount holds (or waits for) GC's lock: a GC asked for meanwhile waits for it
    /// instead of being refused as "already running".
    rescan_waiting_or_running: std::sync::atomic::AtomicBool,
    /// One recount at a time; callers arriving while one runs take its result.
    recount: tokio::sync::Mutex<()>,
    /// Recounts completed so far.
    recounts_done: std::sync::atomic::AtomicU64,
    /// A background recount was asked for and has not ended yet.
    recount_queued: AtomicBool,
}

impl std::fmt::Debug for StoreUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUsage").finish_non_exhaustive()
    }
}

/// Group part of a snapshot key prefix (`…/<type>/<id>/<time>/` → `…/<type>/<id>`).
fn group_of(snapshot: &str) -> &str {
    let trimmed = snapshot.trim_end_matches('/');
    trimmed.rsplit_once('/').map_or(trimmed, |(group, _)| group)
}

impl StoreUsage {
    /// Attach the tenant's quota and event sink (the server does this when it adds the store).
    pub fn attach_meter(self: &Arc<Self>, meter: Arc<TenantMeter>) {
        if let Some(old) = self.meter().filter(|old| !Arc::ptr_eq(old, &meter)) {
            // Moved to another tenant: no longer counts for the old one.
            old.remove_member(self);
        }
        meter.add_member(self);
        *lock_std(&self.meter) = Some(meter);
    }

    /// The tenant meter, if attached.
    pub fn meter(&self) -> Option<Arc<TenantMeter>> {
        lock_std(&self.meter).clone()
    }

    /// Set this datastore's own quota on physical bytes.
    pub fn set_store_quota(&self, limit: Option<u64>) {
        *lock_std(&self.store_limit) = limit;
    }

    /// This datastore's own quota.
    pub fn store_quota(&self) -> Option<u64> {
        *lock_std(&self.store_limit)
    }

    /// Current counters (exact once a scan has run, see the module docs).
    pub fn counters(&self) -> UsageCounters {
        let inner = lock_std(&self.inner);
        let groups: BTreeSet<&str> = inner.snapshots.keys().map(|k| group_of(k)).collect();
        UsageCounters {
            logical_bytes: inner.snapshots.values().sum(),
            physical_bytes: inner.physical,
            chunks: inner.chunks,
            snapshots: inner.snapshots.len() as u64,
            groups: groups.len() as u64,
        }
    }

    /// Daily samples of the figures, oldest first (persisted with the counters).
    pub fn history(&self) -> history::UsageHistory {
        lock_std(&self.inner).history.clone()
    }

    /// Physical bytes stored (what quotas limit).
    pub fn physical(&self) -> u64 {
        lock_std(&self.inner).physical
    }

    /// True when the persisted counters could not be trusted at open and no scan ran yet.
    pub fn needs_rescan(&self) -> bool {
        lock_std(&self.inner).needs_rescan
    }

    /// Whether a background recount is asked for or running.
    pub fn recount_pending(&self) -> bool {
        self.recount_queued.load(Ordering::SeqCst)
    }

    /// S3 requests sent for this datastore over all server runs (`None` on local storage).
    pub fn s3_request_totals(&self) -> Option<RequestCounts> {
        let this_run = self.backend.request_counts()?;
        let mut totals = lock_std(&self.inner).requests_before;
        totals.add(&this_run);
        Some(totals)
    }

    /// Refuses ([`DatastoreError::QuotaExceeded`]) `what` when `size` more bytes would pass the
    /// datastore's or its tenant's quota (with `size` 0: when either is already reached).
    pub(in crate::datastore) fn quota_check(
        &self,
        size: u64,
        what: &str,
    ) -> Result<(), DatastoreError> {
        if let Some(limit) = self.store_quota() {
            let used = self.physical();
            if used.saturating_add(size) > limit || (size == 0 && used >= limit) {
                return Err(DatastoreError::QuotaExceeded(format!(
                    "quota exceeded for datastore '{}': {used} bytes used of a limit of \
                     {limit} bytes; {what} refused",
                    self.store
                )));
            }
        }
        let Some(meter) = self.meter() else {
            return Ok(());
        };
        let Some(limit) = meter.quota() else {
            return Ok(());
        };
        let used = meter.used();
        if used.saturating_add(size) > limit || (size == 0 && used >= limit) {
            return Err(meter.refuse(&self.store, used, limit, what));
        }
        meter.clear_notified();
        Ok(())
    }

    /// A new chunk object of `size` bytes was written.
    pub(in crate::datastore) fn add_chunk(&self, digest: &Digest, size: u64) {
        let mut inner = lock_std(&self.inner);
        inner.physical += size;
        inner.chunks += 1;
        inner.dirty = true;
        if let Some(scan) = inner.scan.as_mut() {
            if chunk_shard(digest) < scan.closed_shards {
                // its shard was listed before this write: not in the listing
                scan.late_physical += size as i64;
                scan.late_chunks += 1;
                return;
            }
            scan.moved_aside.remove(digest);
            scan.stored.insert(*digest, size);
        }
    }

    /// A chunk object was deleted (by GC, which never overlaps a scan, or moved aside by
    /// verify, which may: `digest` is then logged).
    pub(in crate::datastore) fn sub_chunk(&self, digest: Option<&Digest>, size: u64) {
        let mut inner = lock_std(&self.inner);
        inner.physical = inner.physical.saturating_sub(size);
        inner.chunks = inner.chunks.saturating_sub(1);
        inner.dirty = true;
        if let (Some(scan), Some(digest)) = (inner.scan.as_mut(), digest) {
            if chunk_shard(digest) < scan.closed_shards {
                // listed as a chunk, or stored later and counted in `late_*` since
                scan.late_physical -= size as i64;
                scan.late_chunks -= 1;
                return;
            }
            scan.stored.remove(digest);
            scan.moved_aside.insert(*digest);
        }
    }

    /// A backup committed a snapshot with `logical` bytes.
    pub(in crate::datastore) fn snapshot_added(&self, key: &str, logical: u64) {
        {
            let mut inner = lock_std(&self.inner);
            inner.snapshots.insert(key.to_string(), logical);
            inner.dirty = true;
            if let Some(scan) = inner.scan.as_mut() {
                scan.removed.remove(key);
                scan.added.insert(key.to_string());
            }
        }
        if let Some(meter) = self.meter() {
            if let Some(obs) = meter.observer() {
                obs.backup_finished(meter.tenant(), &self.store, key, logical);
            }
        }
    }

    /// A snapshot was removed.
    pub(in crate::datastore) fn snapshot_removed(&self, key: &str) {
        let logical = {
            let mut inner = lock_std(&self.inner);
            let logical = inner.snapshots.remove(key).unwrap_or(0);
            inner.dirty = true;
            if let Some(scan) = inner.scan.as_mut() {
                scan.added.remove(key);
                scan.removed.insert(key.to_string());
            }
            logical
        };
        if let Some(meter) = self.meter() {
            if let Some(obs) = meter.observer() {
                obs.snapshot_removed(meter.tenant(), &self.store, key, logical);
            }
        }
    }

    /// A snapshot moved from key prefix `old` to `new` (group or namespace move): same bytes,
    /// new place; not a removal and not a new backup for metering.
    pub(in crate::datastore) fn snapshot_moved(&self, old: &str, new: &str) {
        let mut inner = lock_std(&self.inner);
        // Unfinished snapshots are not counted, here or there.
        let Some(logical) = inner.snapshots.remove(old) else {
            return;
        };
        inner.snapshots.insert(new.to_string(), logical);
        inner.dirty = true;
        if let Some(scan) = inner.scan.as_mut() {
            scan.added.remove(old);
            scan.removed.insert(old.to_string());
            scan.removed.remove(new);
            scan.added.insert(new.to_string());
        }
    }
}

#[cfg(test)]
mod tests;
