//! Usage metering of one datastore (docs/design.md#usage-and-compliance): physical bytes and chunk
//! count of the chunk store, and per finished snapshot its logical bytes (the archive sizes its
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
//! [`REQUESTS_PERSIST_INTERVAL`] while requests other than these writes happen; a crash loses
//! at most that interval's counts.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, PutOptions, RequestCounts};
use crate::format::names::BackupNamespace;
use crate::format::Digest;

use super::layout::{parse_chunk_key, snapshot_prefix, ChunkKey, CHUNK_PREFIX};
use super::{lock_std, Datastore, DatastoreError};

/// Where the counters are persisted (a dot prefix: GC's index walk and PBS skip it).
pub const USAGE_OBJECT: &str = ".usage/counters.json";

/// Longest time S3 request counts stay unpersisted while nothing else changes.
pub const REQUESTS_PERSIST_INTERVAL: Duration = Duration::from_secs(300);

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

/// Receives the events the billing webhook and the metrics report.
pub trait UsageObserver: Send + Sync {
    /// A backup committed snapshot `snapshot` (its key prefix) with `logical` bytes.
    fn backup_finished(&self, tenant: &str, store: &str, snapshot: &str, logical: u64);
    /// A snapshot was removed (forget, prune, group or namespace removal).
    fn snapshot_removed(&self, tenant: &str, store: &str, snapshot: &str, logical: u64);
    /// A write was refused because the tenant's quota would be passed (once per crossing).
    fn quota_exceeded(&self, tenant: &str, store: &str, used: u64, limit: u64);
}

/// The quota and event sink of one tenant, shared by its datastores.
pub struct TenantMeter {
    tenant: String,
    limit: Mutex<Option<u64>>,
    warn_percent: Mutex<u8>,
    members: Mutex<Vec<Weak<Datastore>>>,
    observer: Mutex<Option<Arc<dyn UsageObserver>>>,
    /// Set when a quota-exceeded event was sent; cleared once usage is below the limit again.
    notified: AtomicBool,
}

/// Warning threshold when the configuration names none.
pub const DEFAULT_QUOTA_WARN_PERCENT: u8 = 90;

impl TenantMeter {
    pub fn new(tenant: &str) -> Arc<Self> {
        Arc::new(Self {
            tenant: tenant.to_string(),
            limit: Mutex::new(None),
            warn_percent: Mutex::new(DEFAULT_QUOTA_WARN_PERCENT),
            members: Mutex::new(Vec::new()),
            observer: Mutex::new(None),
            notified: AtomicBool::new(false),
        })
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Set the quota on physical bytes (None: unlimited) and the warning threshold.
    pub fn set_quota(&self, limit: Option<u64>, warn_percent: Option<u8>) {
        *lock_std(&self.limit) = limit;
        *lock_std(&self.warn_percent) = warn_percent.unwrap_or(DEFAULT_QUOTA_WARN_PERCENT);
    }

    pub fn set_observer(&self, observer: Arc<dyn UsageObserver>) {
        *lock_std(&self.observer) = Some(observer);
    }

    pub fn quota(&self) -> Option<u64> {
        *lock_std(&self.limit)
    }

    pub fn warn_percent(&self) -> u8 {
        *lock_std(&self.warn_percent)
    }

    /// Physical bytes over all live datastores of the tenant.
    pub fn used(&self) -> u64 {
        let mut members = lock_std(&self.members);
        members.retain(|w| w.strong_count() > 0);
        members
            .iter()
            .filter_map(Weak::upgrade)
            .map(|ds| lock_std(&ds.usage.inner).physical)
            .sum()
    }

    /// True when usage reached the warning share of the quota.
    pub fn warning(&self) -> bool {
        match self.quota() {
            Some(limit) => {
                let used = self.used() as u128;
                used * 100 >= limit as u128 * self.warn_percent() as u128
            }
            None => false,
        }
    }

    fn observer(&self) -> Option<Arc<dyn UsageObserver>> {
        lock_std(&self.observer).clone()
    }

    fn refuse(&self, store: &str, used: u64, limit: u64, what: &str) -> DatastoreError {
        if !self.notified.swap(true, Ordering::SeqCst) {
            if let Some(obs) = self.observer() {
                obs.quota_exceeded(&self.tenant, store, used, limit);
            }
        }
        DatastoreError::QuotaExceeded(format!(
            "quota exceeded for tenant '{}': {used} bytes used of a limit of {limit} bytes; \
             {what} refused (datastore '{store}')",
            self.tenant
        ))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Persisted {
    version: u32,
    /// Written at a clean shutdown; anything else means "rescan at open".
    clean: bool,
    physical_bytes: u64,
    chunks: u64,
    /// Snapshot key prefix → logical bytes.
    snapshots: BTreeMap<String, u64>,
    /// S3 requests of all server runs up to this write (absent before they were persisted).
    #[serde(default)]
    s3_requests: RequestCounts,
}

/// What changed while a scan was running.
#[derive(Debug, Default)]
struct ScanLog {
    stored: HashMap<Digest, u64>,
    /// Chunks taken out of service (moved to a `.bad` name) meanwhile.
    moved_aside: HashSet<Digest>,
    added: HashSet<String>,
    removed: HashSet<String>,
    /// A scan listing shard by shard (GC's sweep) has closed the shards below this one
    /// ([`chunk_shard`]): their listing is complete and their logged changes are resolved, so
    /// later changes in them are applied to `late_*` at once instead of being logged.
    closed_shards: usize,
    late_physical: i64,
    late_chunks: i64,
}

/// Shards of a sharded chunk scan: one per first digest byte, i.e. per `.chunks/XX` prefix.
pub(crate) const CHUNK_SHARDS: usize = 256;

/// The shard of a digest in a sharded chunk scan.
pub(crate) fn chunk_shard(digest: &Digest) -> usize {
    digest[0] as usize
}

/// What a scan's listing of the chunk store found.
#[derive(Debug, Default)]
pub(crate) struct ChunkTally {
    pub physical: u64,
    pub chunks: u64,
    /// Sizes of listed chunks, for changes logged in shards the scan did not close itself
    /// (all of them for a plain listing, none after a sharded scan).
    pub listed: HashMap<Digest, u64>,
}

impl ChunkTally {
    /// The tally of a whole listing.
    fn of_listing(listed: HashMap<Digest, u64>) -> Self {
        Self {
            physical: listed.values().sum(),
            chunks: listed.len() as u64,
            listed,
        }
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
}

/// Usage counters of one datastore, loaded at open (see the module docs).
#[derive(Default)]
pub struct UsageState {
    inner: Mutex<Inner>,
    meter: Mutex<Option<Arc<TenantMeter>>>,
    /// Per-datastore quota (`[[datastore]] quota_bytes`).
    store_limit: Mutex<Option<u64>>,
    /// Nominal capacity for the status figures (`[[datastore]] capacity_bytes`).
    pub(super) capacity_limit: Mutex<Option<u64>>,
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

impl std::fmt::Debug for UsageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageState").finish_non_exhaustive()
    }
}

impl UsageState {
    /// Read the persisted counters; marks them for a rescan when missing, unreadable or not
    /// from a clean shutdown, and otherwise marks the object unclean until the next clean close.
    pub async fn load(backend: &dyn Backend) -> Result<Self, BackendError> {
        let mut inner = Inner::default();
        match backend.get(USAGE_OBJECT).await {
            Ok(data) => match serde_json::from_slice::<Persisted>(&data) {
                Ok(p) => {
                    inner.physical = p.physical_bytes;
                    inner.chunks = p.chunks;
                    inner.snapshots = p.snapshots;
                    inner.needs_rescan = !p.clean;
                    inner.requests_before = p.s3_requests;
                    if p.clean {
                        // A crash from here on must not leave "clean" counters behind.
                        let data = encode(&inner, false, &p.s3_requests);
                        backend
                            .put(USAGE_OBJECT, data, PutOptions::default())
                            .await?;
                    }
                }
                Err(e) => {
                    tracing::warn!("{USAGE_OBJECT} unreadable ({e}); usage will be rescanned");
                    inner.needs_rescan = true;
                }
            },
            Err(e) if e.is_not_found() => inner.needs_rescan = true,
            Err(e) => return Err(e),
        }
        Ok(Self {
            inner: Mutex::new(inner),
            ..Default::default()
        })
    }
}

fn encode(inner: &Inner, clean: bool, s3_requests: &RequestCounts) -> Bytes {
    let p = Persisted {
        version: 1,
        clean,
        physical_bytes: inner.physical,
        chunks: inner.chunks,
        snapshots: inner.snapshots.clone(),
        s3_requests: *s3_requests,
    };
    Bytes::from(serde_json::to_vec(&p).unwrap_or_default())
}

/// Group part of a snapshot key prefix (`…/<type>/<id>/<time>/` → `…/<type>/<id>`).
fn group_of(snapshot: &str) -> &str {
    let trimmed = snapshot.trim_end_matches('/');
    trimmed.rsplit_once('/').map_or(trimmed, |(group, _)| group)
}

impl Datastore {
    /// Attach the tenant's quota and event sink (the server does this when it adds the store).
    pub fn attach_meter(self: &Arc<Self>, meter: Arc<TenantMeter>) {
        if let Some(old) = self.meter().filter(|old| !Arc::ptr_eq(old, &meter)) {
            // Moved to another tenant: no longer counts for the old one.
            lock_std(&old.members).retain(|w| !std::ptr::eq(w.as_ptr(), Arc::as_ptr(self)));
        }
        let mut members = lock_std(&meter.members);
        if !members
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(self)))
        {
            members.push(Arc::downgrade(self));
        }
        drop(members);
        *lock_std(&self.usage.meter) = Some(meter);
    }

    /// The tenant meter, if attached.
    pub fn meter(&self) -> Option<Arc<TenantMeter>> {
        lock_std(&self.usage.meter).clone()
    }

    /// Set this datastore's own quota on physical bytes.
    pub fn set_store_quota(&self, limit: Option<u64>) {
        *lock_std(&self.usage.store_limit) = limit;
    }

    /// This datastore's own quota.
    pub fn store_quota(&self) -> Option<u64> {
        *lock_std(&self.usage.store_limit)
    }

    /// Current counters (exact once a scan has run, see the module docs).
    pub fn usage(&self) -> UsageCounters {
        let inner = lock_std(&self.usage.inner);
        let groups: BTreeSet<&str> = inner.snapshots.keys().map(|k| group_of(k)).collect();
        UsageCounters {
            logical_bytes: inner.snapshots.values().sum(),
            physical_bytes: inner.physical,
            chunks: inner.chunks,
            snapshots: inner.snapshots.len() as u64,
            groups: groups.len() as u64,
        }
    }

    /// True when the persisted counters could not be trusted at open and no scan ran yet.
    pub fn usage_needs_rescan(&self) -> bool {
        lock_std(&self.usage.inner).needs_rescan
    }

    /// Refuse a new backup when the tenant (or this datastore) is already at its quota. Counters
    /// not trusted yet (just after a crash) are the last ones persisted until the background
    /// recount this starts has finished: a request never waits for a recount.
    pub async fn check_quota_for_backup(self: &Arc<Self>) -> Result<(), DatastoreError> {
        let limited =
            self.store_quota().is_some() || self.meter().is_some_and(|m| m.quota().is_some());
        if limited && self.usage_needs_rescan() {
            self.request_usage_recount();
        }
        self.quota_check(0, "new backup")
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

    /// Whether a background recount is asked for or running.
    pub fn usage_recount_pending(&self) -> bool {
        self.usage.recount_queued.load(Ordering::SeqCst)
    }

    pub(super) fn quota_check(&self, size: u64, what: &str) -> Result<(), DatastoreError> {
        if let Some(limit) = self.store_quota() {
            let used = lock_std(&self.usage.inner).physical;
            if used.saturating_add(size) > limit || (size == 0 && used >= limit) {
                return Err(DatastoreError::QuotaExceeded(format!(
                    "quota exceeded for datastore '{}': {used} bytes used of a limit of \
                     {limit} bytes; {what} refused",
                    self.name
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
            return Err(meter.refuse(&self.name, used, limit, what));
        }
        meter.notified.store(false, Ordering::SeqCst);
        Ok(())
    }

    pub(super) fn usage_add_chunk(&self, digest: &Digest, size: u64) {
        let mut inner = lock_std(&self.usage.inner);
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
    pub(super) fn usage_sub_chunk(&self, digest: Option<&Digest>, size: u64) {
        let mut inner = lock_std(&self.usage.inner);
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

    /// A sharded scan finished listing `shard` (the caller holds the exclusive chunk lock, so
    /// every insert or move that reached the store before the listing has been logged):
    /// resolve the shard's logged changes against its listing (`listed_size`) and close it.
    pub(super) fn usage_scan_close_shard(
        &self,
        shard: usize,
        listed_size: &dyn Fn(&Digest) -> Option<u64>,
    ) {
        let mut inner = lock_std(&self.usage.inner);
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

    /// A backup committed a snapshot with `logical` bytes.
    pub(crate) fn usage_snapshot_added(&self, key: &str, logical: u64) {
        {
            let mut inner = lock_std(&self.usage.inner);
            inner.snapshots.insert(key.to_string(), logical);
            inner.dirty = true;
            if let Some(scan) = inner.scan.as_mut() {
                scan.removed.remove(key);
                scan.added.insert(key.to_string());
            }
        }
        if let Some(meter) = self.meter() {
            if let Some(obs) = meter.observer() {
                obs.backup_finished(meter.tenant(), &self.name, key, logical);
            }
        }
    }

    /// A snapshot was removed.
    pub(crate) fn usage_snapshot_removed(&self, key: &str) {
        let logical = {
            let mut inner = lock_std(&self.usage.inner);
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
                obs.snapshot_removed(meter.tenant(), &self.name, key, logical);
            }
        }
    }

    /// A snapshot moved from key prefix `old` to `new` (group or namespace move): same bytes,
    /// new place; not a removal and not a new backup for metering.
    pub(crate) fn usage_snapshot_moved(&self, old: &str, new: &str) {
        let mut inner = lock_std(&self.usage.inner);
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

    /// S3 requests sent for this datastore over all server runs (`None` on local storage).
    pub fn s3_request_totals(&self) -> Option<RequestCounts> {
        let this_run = self.backend.request_counts()?;
        let mut totals = lock_std(&self.usage.inner).requests_before;
        totals.add(&this_run);
        Some(totals)
    }

    /// Persist the counters if they changed (or always with `clean`, at shutdown); request
    /// counts alone are written at most every [`REQUESTS_PERSIST_INTERVAL`].
    pub async fn usage_flush(&self, clean: bool) -> Result<(), DatastoreError> {
        self.usage_flush_to(self.backend.as_ref(), clean).await
    }

    /// [`Self::usage_flush`] through `backend` (`close` writes past the closed write gate).
    pub(super) async fn usage_flush_to(
        &self,
        backend: &dyn Backend,
        clean: bool,
    ) -> Result<(), DatastoreError> {
        let this_run = self.backend.request_counts().unwrap_or_default();
        let data = {
            let mut inner = lock_std(&self.usage.inner);
            let requests_due = this_run != inner.requests_written
                && inner
                    .requests_written_at
                    .is_none_or(|at| at.elapsed() >= REQUESTS_PERSIST_INTERVAL);
            if !inner.dirty && !clean && !requests_due {
                return Ok(());
            }
            inner.dirty = false;
            let mut totals = inner.requests_before;
            totals.add(&this_run);
            // Counters that still await their first scan are never declared clean.
            encode(&inner, clean && !inner.needs_rescan, &totals)
        };
        let result = backend.put(USAGE_OBJECT, data, PutOptions::default()).await;
        let mut inner = lock_std(&self.usage.inner);
        match &result {
            Ok(_) => {
                // Read after the write, so that the write itself does not make the next
                // flush due.
                inner.requests_written = self.backend.request_counts().unwrap_or_default();
                inner.requests_written_at = Some(Instant::now());
            }
            Err(_) => inner.dirty = true,
        }
        drop(inner);
        result.map(|_| ()).map_err(DatastoreError::from)
    }

    /// Recount everything by listing (excludes GC while it runs; see the module docs). One
    /// recount at a time: a caller that arrives while one runs waits for it and takes its
    /// result instead of starting another.
    pub async fn usage_rescan(&self) -> Result<UsageCounters, DatastoreError> {
        let asked = self.usage.recounts_done.load(Ordering::SeqCst);
        let _one = self.usage.recount.lock().await;
        if self.usage.recounts_done.load(Ordering::SeqCst) != asked {
            return Ok(self.usage());
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
    pub(super) fn usage_rescan_active(&self) -> bool {
        self.usage
            .rescan_waiting_or_running
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The scan itself; the caller keeps GC from removing chunks meanwhile.
    pub(super) async fn usage_rescan_locked(&self) -> Result<UsageCounters, DatastoreError> {
        self.usage_scan_begin();
        let chunks = self.scan_chunks().await;
        self.usage_scan_finish(chunks).await
    }

    /// Start logging changes for a scan whose chunk listing starts after this call.
    pub(super) fn usage_scan_begin(&self) {
        lock_std(&self.usage.inner).scan = Some(ScanLog::default());
    }

    /// Stop logging without a result (the listing failed).
    pub(super) fn usage_scan_abort(&self) {
        lock_std(&self.usage.inner).scan = None;
    }

    /// Complete a scan begun with [`usage_scan_begin`](Self::usage_scan_begin): `chunks` are
    /// the chunk sizes a listing found (GC passes what its sweep left); snapshots are counted
    /// here, and changes made meanwhile are applied on top.
    pub(super) async fn usage_scan_finish(
        &self,
        chunks: Result<ChunkTally, DatastoreError>,
    ) -> Result<UsageCounters, DatastoreError> {
        let result = match chunks {
            Ok(chunks) => self.scan_snapshots().await.map(|s| (chunks, s)),
            Err(e) => Err(e),
        };
        let mut inner = lock_std(&self.usage.inner);
        let log = inner.scan.take().unwrap_or_default();
        let (tally, mut snapshots) = result?;
        let mut physical = (tally.physical as i64 + log.late_physical).max(0) as u64;
        let mut count = (tally.chunks as i64 + log.late_chunks).max(0) as u64;
        for (digest, size) in &log.stored {
            if !tally.listed.contains_key(digest) {
                physical += size;
                count += 1;
            }
        }
        for digest in &log.moved_aside {
            if let Some(size) = tally.listed.get(digest) {
                physical = physical.saturating_sub(*size);
                count = count.saturating_sub(1);
            }
        }
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
        drop(inner);
        Ok(self.usage())
    }

    /// Chunk sizes by digest, as stored now.
    async fn scan_chunks(&self) -> Result<ChunkTally, DatastoreError> {
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
        let known = lock_std(&self.usage.inner).snapshots.clone();
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
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
