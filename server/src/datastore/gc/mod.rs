//! Garbage collection (docs/design.md#garbage-collection, docs/formats.md#garbage-collection) on
//! object semantics.
//!
//! Order of one run: remove abandoned backups (`abandoned.rs`), mark every digest of every
//! index plus every chunk known to a running backup (`mark.rs`), sweep unmarked chunks whose
//! modified time lies before `min(gc start − cutoff, oldest running backup start − 5 min)`
//! (`sweep.rs`). The statistics are PBS's `.gc-status` plus phase durations; each run is
//! recorded in the job history.

mod abandoned;
mod index_cache;
mod mark;
mod mark_set;
mod sweep;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::backend::{Backend, PutOptions};

use super::chunk_store::ChunkStore;
use super::fence::WriteCheck;
use super::history::{self, JobKind, JobRecord};
use super::layout::GC_STATUS;
use super::locks::{GcExclusion, LockTable};
use super::session::LeaseRegistry;
use super::usage::reconcile_after_gc;
use super::{lock_std, DatastoreError, RetentionLocks, SnapshotTree, StoreParts, StoreUsage};

pub use abandoned::DEFAULT_ABANDONED_AFTER;
pub use index_cache::DEFAULT_INDEX_CACHE_DIGESTS;
use sweep::SweepLimits;

/// PBS's default minimum chunk age: 24 h 5 min.
pub const DEFAULT_GC_CUTOFF: Duration = Duration::from_secs(24 * 3600 + 5 * 60);

/// Safety margin before the oldest running backup's start.
const WRITER_MARGIN: Duration = Duration::from_secs(300);

/// Result of one GC run; stored as `.gc-status` (docs/formats.md#gc-status, kebab-case keys) and
/// shown as `gc-status` by the datastore status. Fields after `cache-stats` are ours.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct GcStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upid: Option<String>,
    pub index_file_count: u64,
    pub index_data_bytes: u64,
    pub disk_bytes: u64,
    pub disk_chunks: u64,
    pub removed_bytes: u64,
    pub removed_chunks: u64,
    pub pending_bytes: u64,
    pub pending_chunks: u64,
    pub removed_bad: u64,
    pub still_bad: u64,
    /// Chunk references met while marking: already marked in this run (`hits`) or marked the
    /// first time (`misses`), PBS's counters of its marking cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_stats: Option<GcCacheStats>,
    /// Phase 1 (abandoned-backup cleanup and marking), milliseconds.
    pub mark_duration_ms: u64,
    /// Phase 2 (sweep), milliseconds.
    pub sweep_duration_ms: u64,
    /// Index files whose digests came from the in-memory cache / had to be downloaded.
    pub index_cache_hits: u64,
    pub index_cache_misses: u64,
    /// Snapshots without manifest removed after the grace period, and their bytes.
    pub abandoned_snapshots: u64,
    pub abandoned_bytes: u64,
}

/// `cache-stats` of a [`GcStatus`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GcCacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// Keys of [`GcStatus`] that PBS does not have.
const OWN_STATUS_KEYS: [&str; 6] = [
    "mark-duration-ms",
    "sweep-duration-ms",
    "index-cache-hits",
    "index-cache-misses",
    "abandoned-snapshots",
    "abandoned-bytes",
];

impl GcStatus {
    /// The status with PBS's keys only, as the datastore usage list of PBS shows it
    /// (monitoring tools read it there).
    pub fn pbs_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            for key in OWN_STATUS_KEYS {
                map.remove(key);
            }
        }
        value
    }

    /// `index-data-bytes / disk-bytes` (what PBS prints as "Deduplication factor").
    pub fn dedup_factor(&self) -> Option<f64> {
        (self.disk_bytes > 0).then(|| self.index_data_bytes as f64 / self.disk_bytes as f64)
    }
}

/// Garbage collection of one datastore: its settings, the index cache kept between runs, the
/// status of the last run, and the parts of the datastore a run reads and changes (held
/// explicitly, so that what GC touches is visible here).
pub struct GarbageCollector {
    name: String,
    /// The fenced backend: every delete passes the writer lease.
    backend: Arc<dyn Backend>,
    writable: WriteCheck,
    /// Namespaces, groups and snapshots (the usage recount after the sweep walks them).
    tree: Arc<SnapshotTree>,
    chunks: Arc<ChunkStore>,
    /// Snapshot locks: an abandoned snapshot is only removed when nobody holds it.
    locks: Arc<LockTable>,
    /// Running backups: their start bounds the cutoff, their known chunks are kept.
    leases: Arc<LeaseRegistry>,
    retention: Arc<RetentionLocks>,
    usage: Arc<StoreUsage>,
    /// Held for a whole run; moves and usage recounts take it too.
    gc_exclusion: Arc<GcExclusion>,
    /// Minimum chunk age before a chunk may be swept (PBS: 24 h 5 min).
    cutoff: Mutex<Duration>,
    /// Status of the last finished run (read back from `.gc-status` at open).
    last: Mutex<Option<GcStatus>>,
    /// Set by a stop request; the running GC checks it between safe steps.
    abort: std::sync::atomic::AtomicBool,
    index_cache: index_cache::IndexCache,
    abandoned_after: Mutex<Duration>,
    writer_margin: Mutex<Duration>,
    /// Marked digests held in memory before they spill to disk (`mark_set.rs`).
    mark_budget: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for GarbageCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GarbageCollector")
            .field("name", &self.name)
            .finish()
    }
}

/// Read `.gc-status`; a missing or unparsable object gives `None`.
pub(crate) async fn load_status(backend: &dyn Backend) -> Result<Option<GcStatus>, DatastoreError> {
    match backend.get(GC_STATUS).await {
        Ok(data) => match serde_json::from_slice(&data) {
            Ok(status) => Ok(Some(status)),
            Err(e) => {
                tracing::warn!("ignoring unparsable {GC_STATUS}: {e}");
                Ok(None)
            }
        },
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl GarbageCollector {
    /// Reads back the status of the last run. Besides the parts the snapshot tree shares, GC
    /// needs the tree itself, the chunk store and the running backups.
    pub(crate) async fn open(
        parts: StoreParts,
        tree: Arc<SnapshotTree>,
        chunks: Arc<ChunkStore>,
        leases: Arc<LeaseRegistry>,
    ) -> Result<Self, DatastoreError> {
        let last = load_status(parts.backend.as_ref()).await?;
        let index_cache_digests =
            index_cache::IndexCache::default_capacity(&parts.backend.capabilities());
        Ok(Self {
            name: parts.name,
            backend: parts.backend,
            writable: parts.writable,
            tree,
            chunks,
            locks: parts.locks,
            leases,
            retention: parts.retention,
            usage: parts.usage,
            gc_exclusion: parts.gc_exclusion,
            cutoff: Mutex::new(DEFAULT_GC_CUTOFF),
            last: Mutex::new(last),
            abort: std::sync::atomic::AtomicBool::new(false),
            index_cache: index_cache::IndexCache::new(index_cache_digests),
            abandoned_after: Mutex::new(DEFAULT_ABANDONED_AFTER),
            writer_margin: Mutex::new(WRITER_MARGIN),
            mark_budget: std::sync::atomic::AtomicUsize::new(mark_set::DEFAULT_MARK_BUDGET),
        })
    }

    /// Status of the last finished GC (read back from `.gc-status` at open).
    pub async fn last_status(&self) -> Option<GcStatus> {
        lock_std(&self.last).clone()
    }

    /// Change GC's minimum chunk age (default 24 h 5 min; tests use 0).
    pub fn set_cutoff(&self, cutoff: Duration) {
        *lock_std(&self.cutoff) = cutoff;
    }

    /// Current GC minimum chunk age.
    pub fn cutoff(&self) -> Duration {
        *lock_std(&self.cutoff)
    }

    fn mark_budget(&self) -> usize {
        self.mark_budget.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Grace period after which a snapshot without manifest is removed by GC (config
    /// `abandoned_after_hours`, default 24 h).
    pub fn set_abandoned_after(&self, grace: Duration) {
        *lock_std(&self.abandoned_after) = grace;
    }

    /// Current grace period for abandoned backups.
    pub fn abandoned_after(&self) -> Duration {
        *lock_std(&self.abandoned_after)
    }

    /// Bound of the index cache in digests (default [`DEFAULT_INDEX_CACHE_DIGESTS`] on object
    /// storage, 0 on a local directory; see `index_cache.rs`); 0 disables it.
    pub fn set_index_cache_capacity(&self, digests: usize) {
        self.index_cache.set_capacity(digests);
    }

    /// The index cache's bound in digests.
    pub fn index_cache_capacity(&self) -> usize {
        self.index_cache.capacity()
    }

    /// Marked digests GC holds in memory before spilling them to temporary files (default
    /// 1 Mi digests, 32 MiB).
    pub fn set_mark_budget(&self, digests: usize) {
        self.mark_budget
            .store(digests, std::sync::atomic::Ordering::Relaxed);
    }

    /// Index files whose digest lists are cached in memory.
    pub fn index_cache_entries(&self) -> usize {
        self.index_cache.len()
    }

    /// Margin before the oldest running backup's start (5 min; tests shrink it to make a
    /// race observable within seconds).
    #[cfg(test)]
    pub(crate) fn set_writer_margin(&self, margin: Duration) {
        *lock_std(&self.writer_margin) = margin;
    }

    /// Asks a running GC to stop at its next safe point: between index files while marking
    /// (nothing deleted yet) or between delete batches while sweeping. No effect otherwise.
    pub fn request_abort(&self) {
        if self.gc_exclusion.running.try_lock().is_err() {
            self.abort.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    pub(super) fn check_abort(&self) -> Result<(), DatastoreError> {
        if self.abort.load(std::sync::atomic::Ordering::Acquire) {
            return Err(DatastoreError::Internal(
                "garbage collection aborted on request".to_string(),
            ));
        }
        Ok(())
    }

    /// Run GC; log lines go to `log` (the task log).
    pub async fn run(
        &self,
        log: &(dyn Fn(String) + Send + Sync),
    ) -> Result<GcStatus, DatastoreError> {
        self.run_as(None, log).await
    }

    /// Run GC on behalf of the task `upid` (recorded in the status and the job history).
    pub async fn run_as(
        &self,
        upid: Option<String>,
        log: &(dyn Fn(String) + Send + Sync),
    ) -> Result<GcStatus, DatastoreError> {
        self.writable.check()?;
        let _running = match self.gc_exclusion.running.try_lock() {
            Ok(guard) => guard,
            // A usage recount (after an unclean stop) is not a GC: wait for it to finish.
            Err(_) if self.usage.rescan_active() => {
                log("waiting for the usage recount of this datastore to finish".to_string());
                self.gc_exclusion.running.lock().await
            }
            // A group or namespace move keeps GC out while indexes change their keys.
            Err(_) if self.gc_exclusion.move_active() => {
                log("waiting for a running group or namespace move to finish".to_string());
                self.gc_exclusion.running.lock().await
            }
            Err(_) => {
                return Err(DatastoreError::Busy(format!(
                    "garbage collection already running on datastore '{}'",
                    self.name
                )))
            }
        };
        self.abort
            .store(false, std::sync::atomic::Ordering::Release);
        let say = |line: String| {
            tracing::info!(store = %self.name, "{line}");
            log(line);
        };
        let started = SystemTime::now();
        let result = self.run_gc(upid.clone(), &say).await;
        let record = JobRecord {
            kind: JobKind::GarbageCollection,
            job_id: "garbage-collection".to_string(),
            upid,
            started: unix(started),
            finished: unix(SystemTime::now()),
            outcome: match &result {
                Ok(_) => "OK".to_string(),
                Err(e) => e.to_string(),
            },
            dry_run: false,
            summary: match &result {
                Ok(status) => serde_json::to_value(status).unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            },
        };
        if let Err(e) = history::record(self.backend.as_ref(), &record).await {
            say(format!(
                "WARN: recording the GC run in the job history failed: {e}"
            ));
        }
        result
    }

    async fn run_gc(
        &self,
        upid: Option<String>,
        say: &(dyn Fn(String) + Send + Sync),
    ) -> Result<GcStatus, DatastoreError> {
        let start = SystemTime::now();
        let mut min_mtime = start.checked_sub(self.cutoff()).unwrap_or(UNIX_EPOCH);
        let oldest_writer = self.leases.oldest_start().unwrap_or(start);
        if self.leases.oldest_start().is_some() {
            let margin = *lock_std(&self.writer_margin);
            min_mtime = min_mtime.min(oldest_writer.checked_sub(margin).unwrap_or(UNIX_EPOCH));
        }
        let limits = SweepLimits {
            min_mtime,
            oldest_writer,
        };
        let mut status = GcStatus {
            upid: upid.clone(),
            ..GcStatus::default()
        };

        say(format!(
            "starting garbage collection on store {}",
            self.name
        ));
        let phase1 = Instant::now();
        let objects = self.list_snapshot_objects().await?;
        let gone = self
            .remove_abandoned(&objects, &mut status, upid, say)
            .await?;
        let objects: Vec<_> = objects
            .into_iter()
            .filter(|o| !gone.iter().any(|p| o.key.starts_with(p.as_str())))
            .collect();
        say("Start GC phase1 (mark used chunks)".to_string());
        let mut marked = self.mark_used_chunks(&objects, &mut status, say).await?;
        status.mark_duration_ms = phase1.elapsed().as_millis() as u64;
        say(format!(
            "marked {} chunk references from {} index files ({} from the index cache) in {:.3}s",
            marked.references(),
            status.index_file_count,
            status.index_cache_hits,
            status.mark_duration_ms as f64 / 1000.0
        ));

        say("Start GC phase2 (sweep unused chunks)".to_string());
        let phase2 = Instant::now();
        // The sweep's listing doubles as the usage recount's (changes from here on are logged).
        self.usage.scan_begin();
        let remaining = match self
            .sweep_unused_chunks(&mut marked, limits, &mut status, say)
            .await
        {
            Ok(remaining) => remaining,
            Err(e) => {
                self.usage.scan_abort();
                return Err(e);
            }
        };
        status.sweep_duration_ms = phase2.elapsed().as_millis() as u64;
        // Every shard was taken, so the set knows its distinct count now.
        let distinct = marked.distinct_taken();
        status.cache_stats = Some(GcCacheStats {
            hits: marked.references() - distinct,
            misses: distinct,
        });
        // Reconcile the usage counters while GC's lock is still held.
        reconcile_after_gc(&self.tree, &self.usage, remaining).await;

        summarize(&status, say);
        let json = serde_json::to_vec_pretty(&status)
            .map_err(|e| DatastoreError::Internal(format!("serialising {GC_STATUS}: {e}")))?;
        self.backend
            .put(GC_STATUS, Bytes::from(json), PutOptions::default())
            .await?;
        *lock_std(&self.last) = Some(status.clone());
        Ok(status)
    }
}

/// Progress lines at every 10 % (PBS prints `marked 10% (3 of 30 index files)` and
/// `processed 10% (1234 chunks)`).
pub(super) struct Progress {
    verb: &'static str,
    total: u64,
    unit: &'static str,
    last: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new(verb: &'static str, total: u64, unit: &'static str) -> Self {
        Self {
            verb,
            total,
            unit,
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn report(&self, done: u64, say: &(dyn Fn(String) + Send + Sync)) {
        use std::sync::atomic::Ordering;
        if self.total == 0 {
            return;
        }
        let percent = done.min(self.total) * 100 / self.total;
        let step = percent / 10 * 10;
        if step == 0 || step <= self.last.load(Ordering::Relaxed) {
            return;
        }
        self.last.store(step, Ordering::Relaxed);
        say(match self.verb {
            "marked" => format!("marked {step}% ({done} of {} {})", self.total, self.unit),
            verb => format!("{verb} {step}% ({done} {})", self.unit),
        });
    }
}

/// Bytes as PBS prints them (binary units, two decimals).
fn human(bytes: u64) -> String {
    crate::format::human_bytes(bytes, 2)
}

fn summarize(status: &GcStatus, say: &(dyn Fn(String) + Send + Sync)) {
    say(format!("Removed garbage: {}", human(status.removed_bytes)));
    say(format!("Removed chunks: {}", status.removed_chunks));
    if status.removed_bad > 0 {
        say(format!("Removed bad chunks: {}", status.removed_bad));
    }
    if status.still_bad > 0 {
        say(format!("Leftover bad chunks: {}", status.still_bad));
    }
    say(format!(
        "Pending removals: {} (in {} chunks)",
        human(status.pending_bytes),
        status.pending_chunks
    ));
    say(format!(
        "Original data usage: {}",
        human(status.index_data_bytes)
    ));
    match status.index_data_bytes {
        0 => say(format!("On-Disk usage: {}", human(status.disk_bytes))),
        orig => say(format!(
            "On-Disk usage: {} ({:.2}%)",
            human(status.disk_bytes),
            status.disk_bytes as f64 * 100.0 / orig as f64
        )),
    }
    say(format!("On-Disk chunks: {}", status.disk_chunks));
    if let Some(factor) = status.dedup_factor() {
        say(format!("Deduplication factor: {factor:.2}"));
    }
    if let Some(avg) = status.disk_bytes.checked_div(status.disk_chunks) {
        say(format!("Average chunk size: {}", human(avg)));
    }
    if status.abandoned_snapshots > 0 {
        say(format!(
            "Removed abandoned backups: {} ({})",
            status.abandoned_snapshots,
            human(status.abandoned_bytes)
        ));
    }
    say(format!(
        "Mark phase: {:.3}s, sweep phase: {:.3}s",
        status.mark_duration_ms as f64 / 1000.0,
        status.sweep_duration_ms as f64 / 1000.0
    ));
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn bytes_print_in_binary_units() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.50 KiB");
        assert_eq!(human(5 * 1024 * 1024 * 1024), "5.00 GiB");
    }
}
