//! The persisted retention records of a datastore and their in-memory copy, under
//! `.retention/`:
//! * `.retention/snapshots/<snapshot prefix>lock.json`: one [`SnapshotLockInfo`] per locked
//!   snapshot.
//! * `.retention/chunks/<until>-<c|g>/<seq>`: raw 32-byte digests of chunks whose Object Lock
//!   was set to `until` (compliance or governance) by one backup. Dates are generation
//!   boundaries, so there are few distinct directories; the parts of one directory are merged
//!   at open and directories whose date has passed are dropped. A chunk's record is the latest
//!   date over all parts, so extending a reused chunk needs no HEAD, and GC skips locked
//!   chunks without a request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::backend::lock::LockMode;
use crate::backend::{Backend, BackendError, PutOptions};
use crate::format::Digest;

use super::super::lock_std;
use super::rules::{ChunkLock, LockRule, DEFAULT_GENERATION_DAYS};
use super::{RetentionLocks, SnapshotLockInfo};

/// Where the retention state lives.
pub const RETENTION_PREFIX: &str = ".retention/";
const SNAPSHOTS_PREFIX: &str = ".retention/snapshots/";
const CHUNKS_PREFIX: &str = ".retention/chunks/";
const SNAPSHOT_RECORD: &str = "lock.json";

#[derive(Debug, Default)]
pub(super) struct Inner {
    rules: Vec<LockRule>,
    generation_days: u64,
    /// Snapshot prefix → its lock.
    snapshots: HashMap<String, SnapshotLockInfo>,
    chunks: HashMap<Digest, ChunkLock>,
    /// Snapshot prefixes whose governance lock the admin path is bypassing right now.
    bypass: HashSet<String>,
    /// Simulated clock (Unix seconds) for benchmarks; the system clock when `None`.
    clock: Option<i64>,
    /// Why the configured locks could not be activated, for status.
    error: Option<String>,
}

fn mode_letter(mode: LockMode) -> char {
    match mode {
        LockMode::Compliance => 'c',
        LockMode::Governance => 'g',
    }
}

fn parse_chunk_dir(name: &str) -> Option<ChunkLock> {
    let (until, mode) = name.split_once('-')?;
    let mode = match mode {
        "c" => LockMode::Compliance,
        "g" => LockMode::Governance,
        _ => return None,
    };
    Some(ChunkLock {
        until: until.parse().ok()?,
        mode,
    })
}

pub(super) fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl RetentionLocks {
    /// Read the persisted retention state of the datastore; merges chunk record parts and
    /// drops those whose date has passed.
    pub(in crate::datastore) async fn load(
        store: &str,
        backend: Arc<dyn Backend>,
    ) -> Result<Self, BackendError> {
        let mut inner = Inner {
            generation_days: DEFAULT_GENERATION_DAYS,
            ..Inner::default()
        };
        let store_backend = backend.clone();
        let backend = store_backend.as_ref();
        for obj in backend.list(SNAPSHOTS_PREFIX, None).await?.objects {
            let Some(prefix) = obj
                .key
                .strip_prefix(SNAPSHOTS_PREFIX)
                .and_then(|k| k.strip_suffix(SNAPSHOT_RECORD))
            else {
                continue;
            };
            let raw = backend.get(&obj.key).await?;
            let info: SnapshotLockInfo =
                serde_json::from_slice(&raw).map_err(|e| BackendError::Internal {
                    key: obj.key.clone(),
                    message: format!("unreadable snapshot lock record: {e}"),
                })?;
            inner.snapshots.insert(prefix.to_string(), info);
        }
        let now = system_now();
        let mut parts: HashMap<String, Vec<String>> = HashMap::new();
        for obj in backend.list(CHUNKS_PREFIX, None).await?.objects {
            let rest = obj.key.strip_prefix(CHUNKS_PREFIX).unwrap_or(&obj.key);
            if let Some((dir, _)) = rest.split_once('/') {
                parts.entry(dir.to_string()).or_default().push(obj.key);
            }
        }
        for (dir, keys) in parts {
            let Some(lock) = parse_chunk_dir(&dir) else {
                continue;
            };
            if lock.until <= now {
                // Passed: no chunk needs this record any more.
                backend.delete_many(&keys).await?;
                continue;
            }
            let mut digests = Vec::new();
            for key in &keys {
                let raw = backend.get(key).await?;
                digests.extend(
                    raw.chunks_exact(32)
                        .filter_map(|c| Digest::try_from(c).ok()),
                );
            }
            for d in &digests {
                merge_chunk(&mut inner.chunks, d, lock);
            }
            if keys.len() > 1 {
                // Merge the parts: one object per generation and mode.
                write_chunk_part(backend, lock, &digests).await?;
                backend.delete_many(&keys).await?;
            }
        }
        Ok(Self {
            store: store.to_string(),
            backend: store_backend,
            inner: Mutex::new(inner),
        })
    }

    /// Replace the rules (config load and reload).
    pub(in crate::datastore) fn set_rules(&self, rules: Vec<LockRule>, generation_days: u64) {
        let mut inner = lock_std(&self.inner);
        inner.rules = rules;
        inner.generation_days = generation_days.max(1);
        inner.error = None;
    }

    /// Remember why the configured locks could not be activated.
    pub(in crate::datastore) fn set_error(&self, error: Option<String>) {
        lock_std(&self.inner).error = error;
    }

    pub(in crate::datastore) fn error(&self) -> Option<String> {
        lock_std(&self.inner).error.clone()
    }

    pub(in crate::datastore) fn rules(&self) -> Vec<LockRule> {
        lock_std(&self.inner).rules.clone()
    }

    pub(in crate::datastore) fn generation_days(&self) -> u64 {
        lock_std(&self.inner).generation_days
    }

    /// Set (or with `None` clear) a simulated clock.
    pub fn set_clock(&self, now: Option<i64>) {
        lock_std(&self.inner).clock = now;
    }

    /// Unix seconds, simulated or real.
    pub(in crate::datastore) fn now(&self) -> i64 {
        lock_std(&self.inner).clock.unwrap_or_else(system_now)
    }

    pub(in crate::datastore) fn snapshot(&self, prefix: &str) -> Option<SnapshotLockInfo> {
        lock_std(&self.inner).snapshots.get(prefix).cloned()
    }

    /// Every locked snapshot (prefix, lock).
    pub(in crate::datastore) fn snapshots(&self) -> Vec<(String, SnapshotLockInfo)> {
        let inner = lock_std(&self.inner);
        let mut all: Vec<_> = inner
            .snapshots
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub(in crate::datastore) fn chunk(&self, digest: &Digest) -> Option<ChunkLock> {
        lock_std(&self.inner).chunks.get(digest).copied()
    }

    /// Number of chunks with a recorded lock.
    pub(in crate::datastore) fn chunk_count(&self) -> usize {
        lock_std(&self.inner).chunks.len()
    }

    pub(in crate::datastore) fn bypassing(&self, prefix: &str) -> bool {
        lock_std(&self.inner).bypass.contains(prefix)
    }

    pub(in crate::datastore) fn set_bypass(&self, prefix: &str, on: bool) {
        let mut inner = lock_std(&self.inner);
        match on {
            true => inner.bypass.insert(prefix.to_string()),
            false => inner.bypass.remove(prefix),
        };
    }

    /// Persist and remember the lock of a snapshot.
    pub(in crate::datastore) async fn record_snapshot(
        &self,
        prefix: &str,
        info: SnapshotLockInfo,
    ) -> Result<(), BackendError> {
        let key = format!("{SNAPSHOTS_PREFIX}{prefix}{SNAPSHOT_RECORD}");
        let json = serde_json::to_vec(&info).map_err(|e| BackendError::Internal {
            key: key.clone(),
            message: format!("encoding snapshot lock record: {e}"),
        })?;
        self.backend
            .put(&key, Bytes::from(json), PutOptions::default())
            .await?;
        lock_std(&self.inner)
            .snapshots
            .insert(prefix.to_string(), info);
        Ok(())
    }

    /// Forget the lock of a removed snapshot.
    pub(in crate::datastore) async fn forget_snapshot(
        &self,
        prefix: &str,
    ) -> Result<(), BackendError> {
        self.backend
            .delete(&format!("{SNAPSHOTS_PREFIX}{prefix}{SNAPSHOT_RECORD}"))
            .await?;
        lock_std(&self.inner).snapshots.remove(prefix);
        Ok(())
    }

    /// Persist that `digests` now carry `lock`, then remember it.
    pub(in crate::datastore) async fn record_chunks(
        &self,
        lock: ChunkLock,
        digests: &[Digest],
    ) -> Result<(), BackendError> {
        if digests.is_empty() {
            return Ok(());
        }
        write_chunk_part(self.backend.as_ref(), lock, digests).await?;
        let mut inner = lock_std(&self.inner);
        for d in digests {
            merge_chunk(&mut inner.chunks, d, lock);
        }
        Ok(())
    }
}

fn merge_chunk(chunks: &mut HashMap<Digest, ChunkLock>, digest: &Digest, lock: ChunkLock) {
    let entry = chunks.entry(*digest).or_insert(lock);
    entry.until = entry.until.max(lock.until);
    entry.mode = entry.mode.max(lock.mode);
}

async fn write_chunk_part(
    backend: &dyn Backend,
    lock: ChunkLock,
    digests: &[Digest],
) -> Result<(), BackendError> {
    let mut sorted = digests.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut data = Vec::with_capacity(sorted.len() * 32);
    for d in &sorted {
        data.extend_from_slice(d);
    }
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let key = format!(
        "{CHUNKS_PREFIX}{}-{}/{stamp:032x}-{}",
        lock.until,
        mode_letter(lock.mode),
        hex::encode(rand::random::<[u8; 4]>())
    );
    backend
        .put(&key, Bytes::from(data), PutOptions::default())
        .await?;
    Ok(())
}
