//! The single-writer lease of a datastore: one server process writes to a datastore at a time.
//!
//! The lease is a sequence of generations, each an object `.lease.d/<generation>` created
//! only-if-absent (`If-None-Match: *` on S3, an exclusive link on a filesystem). The highest
//! generation says who holds the datastore and until when. Taking over an expired lease and
//! renewing one are the same step: creating the next generation. Exactly one server can create
//! it, so two servers never both believe they hold the lease, and a server whose renewal finds
//! the next generation taken knows at once that it lost. Conditional overwrites (`If-Match`)
//! are not used: Ceph RGW refuses them even when the ETag matches. The newest generation is
//! never deleted, so a late writer cannot recreate a deleted one unnoticed: after creating a
//! generation, a server lists them and backs off unless its own is the highest.
//!
//! A server stops writing on its own once its last successful renewal is older than the TTL
//! minus a margin, before any other server may consider the lease expired (clocks may differ
//! by less than the margin). A successful renewal proves no one took over meanwhile, so writes
//! resume. A lease whose holding process is gone (same machine, process no longer running) is
//! taken over without waiting for expiry.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::backend::{Backend, PutOptions, PutOutcome};

use super::{lock_std, Datastore, DatastoreError};

/// The single lease object of earlier versions: still honoured while it is live.
pub const LEASE: &str = ".lease";
/// Prefix of the lease generations.
pub const LEASE_PREFIX: &str = ".lease.d/";
/// How long a lease stays valid without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(120);
/// Renewal interval (well inside the TTL, so two missed renewals are survived).
pub const LEASE_RENEW: Duration = Duration::from_secs(30);
/// Writes stop this long before the lease would expire without renewal; also the clock
/// difference between servers the lease tolerates.
pub const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// TTL, renewal interval and safety margin of a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    pub ttl: Duration,
    pub renew: Duration,
    pub margin: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            ttl: LEASE_TTL,
            renew: LEASE_RENEW,
            margin: LEASE_MARGIN,
        }
    }
}

/// Identifies a process on a machine: boot, PID namespace, pid and its start time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ProcessStamp {
    boot_id: String,
    pid_ns: u64,
    pid: u32,
    start: u64,
}

impl ProcessStamp {
    fn current() -> Option<Self> {
        let pid = std::process::id();
        Some(Self {
            boot_id: boot_id()?,
            pid_ns: std::fs::metadata("/proc/self/ns/pid").ok()?.ino(),
            pid,
            start: process_start(pid)?,
        })
    }

    /// True only when the process certainly ended: it ran on this boot of this machine, in
    /// our PID namespace, and no process with its pid and start time exists now.
    fn is_gone(&self) -> bool {
        let Some(me) = Self::current() else {
            return false;
        };
        me.boot_id == self.boot_id
            && me.pid_ns == self.pid_ns
            && process_start(self.pid) != Some(self.start)
    }
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LeaseRecord {
    holder: String,
    /// Unix seconds.
    expires: i64,
    /// Written by a clean shutdown: anyone may take over at once.
    #[serde(default)]
    released: bool,
    /// Random per opened datastore: recognises our own write after a lost answer.
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    process: Option<ProcessStamp>,
}

impl LeaseRecord {
    fn live(&self) -> bool {
        !self.released
            && self.expires > now_secs()
            && !self.process.as_ref().is_some_and(ProcessStamp::is_gone)
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn generation_key(generation: u64) -> String {
    format!("{LEASE_PREFIX}{generation:016x}")
}

/// Generations present, ascending.
async fn generations(backend: &dyn Backend) -> Result<Vec<u64>, DatastoreError> {
    let listed = backend.list(LEASE_PREFIX, None).await?;
    let mut out: Vec<u64> = listed
        .objects
        .iter()
        .filter_map(|o| o.key.strip_prefix(LEASE_PREFIX))
        .filter_map(|g| u64::from_str_radix(g, 16).ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

fn parse_record(data: &[u8]) -> LeaseRecord {
    serde_json::from_slice(data).unwrap_or(LeaseRecord {
        holder: "<unreadable lease>".into(),
        expires: 0,
        released: false,
        nonce: String::new(),
        process: None,
    })
}

async fn read_generation(
    backend: &dyn Backend,
    generation: u64,
) -> Result<Option<LeaseRecord>, DatastoreError> {
    match backend.get(&generation_key(generation)).await {
        Ok(data) => Ok(Some(parse_record(&data))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The newest generation and its record.
async fn newest(backend: &dyn Backend) -> Result<Option<(u64, LeaseRecord)>, DatastoreError> {
    for _ in 0..5 {
        let Some(&top) = generations(backend).await?.last() else {
            return Ok(None);
        };
        // Removed between listing and reading (an old generation being cleaned up): again.
        if let Some(record) = read_generation(backend, top).await? {
            return Ok(Some((top, record)));
        }
    }
    Err(DatastoreError::Busy(
        "the writer lease keeps changing; try again".to_string(),
    ))
}

/// Lease state of one open datastore.
pub(crate) struct WriterLease {
    /// The backend the lease objects live on (not fenced by the lease itself).
    backend: Arc<dyn Backend>,
    store: String,
    holder: String,
    nonce: String,
    timing: LeaseTiming,
    /// The generation this server created last.
    generation: AtomicU64,
    /// When the request that created it was sent.
    renewed_at: Mutex<Instant>,
    /// Set for good once another server holds the lease, or at release.
    lost_to: Mutex<Option<String>>,
    renewing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for WriterLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterLease")
            .field("store", &self.store)
            .field("holder", &self.holder)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl WriterLease {
    /// Take the lease of the datastore `store` for `holder`, or say who has it.
    pub async fn acquire(
        backend: Arc<dyn Backend>,
        store: &str,
        holder: &str,
        timing: LeaseTiming,
    ) -> Result<Self, DatastoreError> {
        let lease = WriterLease {
            backend,
            store: store.to_string(),
            holder: holder.to_string(),
            nonce: hex::encode(rand::random::<[u8; 8]>()),
            timing,
            generation: AtomicU64::new(0),
            renewed_at: Mutex::new(Instant::now()),
            lost_to: Mutex::new(None),
            renewing: tokio::sync::Mutex::new(()),
        };
        lease.check_legacy().await?;
        for _ in 0..5 {
            let current = newest(lease.backend.as_ref()).await?;
            let next = match &current {
                None => 1,
                Some((generation, record)) => {
                    if record.holder != holder && record.live() {
                        return Err(DatastoreError::Busy(format!(
                            "datastore '{store}' is in use by another server: its lease is held \
                             by '{}' for {} more seconds; refusing to write (stop that server, \
                             or wait for its lease to expire)",
                            record.holder,
                            record.expires - now_secs()
                        )));
                    }
                    if record.holder != holder && !record.released {
                        tracing::warn!(
                            "datastore '{store}': taking over the expired lease of '{}'",
                            record.holder
                        );
                    }
                    generation + 1
                }
            };
            if lease.create(next, false).await? {
                *lock_std(&lease.renewed_at) = Instant::now();
                lease.generation.store(next, Ordering::Release);
                let old: Vec<String> = generations(lease.backend.as_ref())
                    .await?
                    .into_iter()
                    .filter(|g| *g < next)
                    .map(generation_key)
                    .collect();
                lease.backend.delete_many(&old).await?;
                if let Err(e) = lease.backend.delete(LEASE).await {
                    tracing::warn!("datastore '{store}': removing the old {LEASE} object: {e}");
                }
                return Ok(lease);
            }
        }
        Err(DatastoreError::Busy(format!(
            "datastore '{store}': unable to take the writer lease (it keeps changing)"
        )))
    }

    /// An earlier version's single `.lease` object held by someone else and still valid.
    async fn check_legacy(&self) -> Result<(), DatastoreError> {
        let record = match self.backend.get(LEASE).await {
            Ok(data) => parse_record(&data),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if record.holder != self.holder && record.live() {
            return Err(DatastoreError::Busy(format!(
                "datastore '{}' is in use by another server: its lease ({LEASE}) is held by \
                 '{}' for {} more seconds; refusing to write",
                self.store,
                record.holder,
                record.expires - now_secs()
            )));
        }
        Ok(())
    }

    /// Creates generation `generation` for us. `Ok(true)` when it is ours and the highest;
    /// `Ok(false)` when another server created it or a higher one.
    async fn create(&self, generation: u64, released: bool) -> Result<bool, DatastoreError> {
        let record = LeaseRecord {
            holder: self.holder.clone(),
            expires: match released {
                true => 0,
                false => now_secs() + self.timing.ttl.as_secs() as i64,
            },
            released,
            nonce: self.nonce.clone(),
            process: ProcessStamp::current(),
        };
        let data = serde_json::to_vec(&record)
            .map(Bytes::from)
            .map_err(|e| DatastoreError::Internal(format!("serialising the lease: {e}")))?;
        let key = generation_key(generation);
        let create = PutOptions {
            if_absent: true,
            sha256: None,
        };
        if self.backend.put(&key, data, create).await? == PutOutcome::AlreadyExists {
            // Our own earlier attempt whose answer was lost counts as ours.
            let mine = read_generation(self.backend.as_ref(), generation)
                .await?
                .is_some_and(|r| r.nonce == self.nonce);
            if !mine {
                return Ok(false);
            }
        }
        let top = generations(self.backend.as_ref()).await?.last().copied();
        if top != Some(generation) {
            // A newer generation exists (ours was a deleted old one): not ours after all.
            self.backend.delete(&key).await?;
            return Ok(false);
        }
        Ok(true)
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Refuse writes once the lease was lost, or while its last renewal is too old.
    pub fn check(&self) -> Result<(), String> {
        if let Some(other) = lock_std(&self.lost_to).clone() {
            return Err(format!(
                "datastore '{}': this server lost its writer lease to '{other}'; refusing to \
                 write",
                self.store
            ));
        }
        let age = lock_std(&self.renewed_at).elapsed();
        let limit = self.timing.ttl.saturating_sub(self.timing.margin);
        if age > limit {
            return Err(format!(
                "datastore '{}': the writer lease was last renewed {}s ago (writes stop after \
                 {}s without renewal, before another server may take over); refusing to write \
                 until it is renewed",
                self.store,
                age.as_secs(),
                limit.as_secs()
            ));
        }
        Ok(())
    }

    fn lose(&self, to: String) {
        tracing::error!(
            "datastore '{}': writer lease now held by '{to}'; refusing further writes",
            self.store
        );
        *lock_std(&self.lost_to) = Some(to);
    }

    /// One renewal: create the next generation. Finding it taken means another server holds
    /// the lease now: this one is fenced for good.
    pub async fn renew(&self) -> Result<(), DatastoreError> {
        let _one = self.renewing.lock().await;
        if lock_std(&self.lost_to).is_some() {
            return Ok(());
        }
        let current = self.generation.load(Ordering::Acquire);
        let next = current + 1;
        let sent = Instant::now();
        if !self.create(next, false).await? {
            let holder = match newest(self.backend.as_ref()).await {
                Ok(Some((_, r))) => r.holder,
                _ => "another server".to_string(),
            };
            self.lose(holder);
            return Ok(());
        }
        self.generation.store(next, Ordering::Release);
        *lock_std(&self.renewed_at) = sent;
        if let Err(e) = self.backend.delete(&generation_key(current)).await {
            tracing::warn!(
                "datastore '{}': removing lease generation {current}: {e}",
                self.store
            );
        }
        Ok(())
    }

    /// Give the lease up (clean shutdown, after writes stopped): a released generation lets
    /// the next server take over at once. Writes are refused from here on.
    pub async fn release(&self) -> Result<(), DatastoreError> {
        let _one = self.renewing.lock().await;
        if lock_std(&self.lost_to).is_some() {
            return Ok(());
        }
        *lock_std(&self.lost_to) = Some("(released)".to_string());
        let current = self.generation.load(Ordering::Acquire);
        if self.create(current + 1, true).await? {
            self.backend.delete(&generation_key(current)).await?;
        }
        Ok(())
    }

    /// Time between renewals.
    pub fn renew_interval(&self) -> Duration {
        self.timing.renew
    }
}

/// Background task: renew the lease and flush the known-chunk journal until the datastore is
/// dropped. A failed renewal is retried after a few seconds.
pub(crate) fn spawn_maintenance(ds: Weak<Datastore>, interval: Duration) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let retry = interval.min(Duration::from_secs(5));
        let mut wait = interval;
        loop {
            tokio::time::sleep(wait).await;
            let Some(ds) = ds.upgrade() else { return };
            wait = interval;
            if let Err(e) = ds.writer.renew().await {
                tracing::warn!("datastore '{}': lease renewal failed: {e}", ds.name);
                wait = retry;
            }
            if ds.writer.check().is_ok() {
                if let Err(e) = ds.chunks.flush_known().await {
                    tracing::warn!("datastore '{}': {e}", ds.name);
                }
            }
        }
    });
}

#[cfg(test)]
#[path = "writer_lease_tests.rs"]
mod tests;
