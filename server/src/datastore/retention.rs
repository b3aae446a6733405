//! Retention-lock state of one datastore (docs/design.md#retention-locks): the rules in force, the
//! lock of every locked snapshot, and the retain-until date each chunk is known to carry.
//!
//! Persisted outside snapshot directories (clients list those), under `.retention/`:
//! * `.retention/snapshots/<snapshot prefix>lock.json`: one [`SnapshotLockInfo`] per locked
//!   snapshot.
//! * `.retention/chunks/<until>-<c|g>/<seq>`: raw 32-byte digests of chunks whose Object Lock
//!   was set to `until` (compliance or governance) by one backup. Dates are generation
//!   boundaries, so there are few distinct directories; the parts of one directory are merged
//!   at open and directories whose date has passed are dropped. A chunk's record is the latest
//!   date over all parts, so extending a reused chunk needs no HEAD, and GC skips locked
//!   chunks without a request.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::backend::lock::LockMode;
use crate::backend::{Backend, BackendError, PutOptions};
use crate::format::names::{BackupGroup, BackupNamespace};
use crate::format::Digest;

use super::lock_std;

/// How a snapshot is locked, for status and compliance reports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotLockInfo {
    /// `governance` or `compliance`.
    pub mode: String,
    /// Unix seconds.
    pub retain_until: i64,
    pub legal_hold: bool,
    /// `s3-object-lock`, or `server` where only this server enforces it (local backend).
    pub enforced_by: String,
}

/// Where the retention state lives.
pub const RETENTION_PREFIX: &str = ".retention/";
const SNAPSHOTS_PREFIX: &str = ".retention/snapshots/";
const CHUNKS_PREFIX: &str = ".retention/chunks/";
const SNAPSHOT_RECORD: &str = "lock.json";
/// Default generation length (days) when the datastore does not set `lock_generation_days`.
pub const DEFAULT_GENERATION_DAYS: u64 = 10;
const DAY: i64 = 86_400;

/// One `[[retention_lock]]` as it applies to a datastore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRule {
    pub id: String,
    /// Namespace the rule covers, with its descendants (root: the whole datastore).
    pub ns: BackupNamespace,
    /// Groups (`vm/100`) the rule covers; every group in scope when empty.
    pub groups: Vec<String>,
    pub mode: LockMode,
    pub days: u64,
    pub legal_hold: bool,
}

impl LockRule {
    /// Whether a snapshot of `group` in `ns` is in this rule's scope.
    pub fn covers(&self, ns: &BackupNamespace, group: &BackupGroup) -> bool {
        let inside = ns.components().starts_with(self.ns.components());
        inside && (self.groups.is_empty() || self.groups.iter().any(|g| *g == group.path()))
    }
}

/// The lock a new snapshot gets: the strongest of the matching rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotLock {
    pub mode: LockMode,
    pub retain_until: i64,
    pub legal_hold: bool,
}

/// `t` rounded up to the next multiple of `generation_days` days since the epoch.
pub fn round_up_to_generation(t: i64, generation_days: u64) -> i64 {
    let g = (generation_days.max(1) as i64).saturating_mul(DAY);
    t.div_euclid(g)
        .saturating_add(i64::from(t.rem_euclid(g) != 0))
        * g
}

/// The lock `rules` give a snapshot taken at `backup_time`, if any covers it.
pub fn lock_for(
    rules: &[LockRule],
    generation_days: u64,
    ns: &BackupNamespace,
    group: &BackupGroup,
    backup_time: i64,
) -> Option<SnapshotLock> {
    let mut found: Option<SnapshotLock> = None;
    for rule in rules.iter().filter(|r| r.covers(ns, group)) {
        let days = i64::try_from(rule.days).unwrap_or(i64::MAX / DAY);
        let until = round_up_to_generation(
            backup_time.saturating_add(days.saturating_mul(DAY)),
            generation_days,
        );
        found = Some(match found {
            None => SnapshotLock {
                mode: rule.mode,
                retain_until: until,
                legal_hold: rule.legal_hold,
            },
            Some(f) => SnapshotLock {
                mode: f.mode.max(rule.mode),
                retain_until: f.retain_until.max(until),
                legal_hold: f.legal_hold || rule.legal_hold,
            },
        });
    }
    found
}

/// A chunk's recorded Object Lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkLock {
    pub until: i64,
    pub mode: LockMode,
}

impl ChunkLock {
    /// Whether this record already satisfies a lock of `mode` until `until`.
    pub fn covers(&self, until: i64, mode: LockMode) -> bool {
        self.until >= until && self.mode >= mode
    }
}

#[derive(Debug, Default)]
struct Inner {
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

/// Retention state of one datastore, loaded at open.
#[derive(Debug, Default)]
pub struct RetentionState {
    inner: Mutex<Inner>,
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

fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl RetentionState {
    /// Read the persisted retention state of the datastore; merges chunk record parts and
    /// drops those whose date has passed.
    pub async fn load(backend: &dyn Backend) -> Result<Self, BackendError> {
        let mut inner = Inner {
            generation_days: DEFAULT_GENERATION_DAYS,
            ..Inner::default()
        };
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
            inner: Mutex::new(inner),
        })
    }

    /// Replace the rules (config load and reload).
    pub fn set_rules(&self, rules: Vec<LockRule>, generation_days: u64) {
        let mut inner = lock_std(&self.inner);
        inner.rules = rules;
        inner.generation_days = generation_days.max(1);
        inner.error = None;
    }

    /// Remember why the configured locks could not be activated.
    pub fn set_error(&self, error: Option<String>) {
        lock_std(&self.inner).error = error;
    }

    pub fn error(&self) -> Option<String> {
        lock_std(&self.inner).error.clone()
    }

    pub fn rules(&self) -> Vec<LockRule> {
        lock_std(&self.inner).rules.clone()
    }

    pub fn generation_days(&self) -> u64 {
        lock_std(&self.inner).generation_days
    }

    /// Set (or with `None` clear) a simulated clock.
    pub fn set_clock(&self, now: Option<i64>) {
        lock_std(&self.inner).clock = now;
    }

    /// Unix seconds, simulated or real.
    pub fn now(&self) -> i64 {
        lock_std(&self.inner).clock.unwrap_or_else(system_now)
    }

    pub fn snapshot(&self, prefix: &str) -> Option<SnapshotLockInfo> {
        lock_std(&self.inner).snapshots.get(prefix).cloned()
    }

    /// Every locked snapshot (prefix, lock).
    pub fn snapshots(&self) -> Vec<(String, SnapshotLockInfo)> {
        let inner = lock_std(&self.inner);
        let mut all: Vec<_> = inner
            .snapshots
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn chunk(&self, digest: &Digest) -> Option<ChunkLock> {
        lock_std(&self.inner).chunks.get(digest).copied()
    }

    /// Number of chunks with a recorded lock.
    pub fn chunk_count(&self) -> usize {
        lock_std(&self.inner).chunks.len()
    }

    pub fn bypassing(&self, prefix: &str) -> bool {
        lock_std(&self.inner).bypass.contains(prefix)
    }

    pub fn set_bypass(&self, prefix: &str, on: bool) {
        let mut inner = lock_std(&self.inner);
        match on {
            true => inner.bypass.insert(prefix.to_string()),
            false => inner.bypass.remove(prefix),
        };
    }

    /// Persist and remember the lock of a snapshot.
    pub async fn record_snapshot(
        &self,
        backend: &dyn Backend,
        prefix: &str,
        info: SnapshotLockInfo,
    ) -> Result<(), BackendError> {
        let key = format!("{SNAPSHOTS_PREFIX}{prefix}{SNAPSHOT_RECORD}");
        let json = serde_json::to_vec(&info).map_err(|e| BackendError::Internal {
            key: key.clone(),
            message: format!("encoding snapshot lock record: {e}"),
        })?;
        backend
            .put(&key, Bytes::from(json), PutOptions::default())
            .await?;
        lock_std(&self.inner)
            .snapshots
            .insert(prefix.to_string(), info);
        Ok(())
    }

    /// Forget the lock of a removed snapshot.
    pub async fn forget_snapshot(
        &self,
        backend: &dyn Backend,
        prefix: &str,
    ) -> Result<(), BackendError> {
        backend
            .delete(&format!("{SNAPSHOTS_PREFIX}{prefix}{SNAPSHOT_RECORD}"))
            .await?;
        lock_std(&self.inner).snapshots.remove(prefix);
        Ok(())
    }

    /// Persist that `digests` now carry `lock`, then remember it.
    pub async fn record_chunks(
        &self,
        backend: &dyn Backend,
        lock: ChunkLock,
        digests: &[Digest],
    ) -> Result<(), BackendError> {
        if digests.is_empty() {
            return Ok(());
        }
        write_chunk_part(backend, lock, digests).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::names::BackupType;

    #[test]
    fn dates_round_up_to_generation_boundaries() {
        let g = 10 * DAY;
        assert_eq!(round_up_to_generation(0, 10), 0);
        assert_eq!(round_up_to_generation(1, 10), g);
        assert_eq!(round_up_to_generation(g, 10), g);
        assert_eq!(round_up_to_generation(g + 1, 10), 2 * g);
        assert_eq!(round_up_to_generation(5 * DAY + 7, 1), 6 * DAY);
    }

    #[test]
    fn rules_cover_scope_and_the_strongest_wins() {
        let g100 = BackupGroup::new(BackupType::Vm, "100").unwrap();
        let g200 = BackupGroup::new(BackupType::Vm, "200").unwrap();
        let a = BackupNamespace::parse("a").unwrap();
        let ab = BackupNamespace::parse("a/b").unwrap();
        let rules = vec![
            LockRule {
                id: "store".into(),
                ns: BackupNamespace::root(),
                groups: vec![],
                mode: LockMode::Governance,
                days: 30,
                legal_hold: false,
            },
            LockRule {
                id: "vm100".into(),
                ns: a.clone(),
                groups: vec!["vm/100".into()],
                mode: LockMode::Compliance,
                days: 5,
                legal_hold: true,
            },
        ];
        let t = 100 * DAY + 5;
        let l = lock_for(&rules, 10, &ab, &g100, t).unwrap();
        assert_eq!(l.mode, LockMode::Compliance);
        assert!(l.legal_hold);
        assert_eq!(l.retain_until, 140 * DAY);
        let l = lock_for(&rules, 10, &ab, &g200, t).unwrap();
        assert_eq!(l.mode, LockMode::Governance);
        assert!(!l.legal_hold);
        assert!(lock_for(&rules[1..], 10, &BackupNamespace::root(), &g100, t).is_none());
    }

    #[test]
    fn chunk_records_cover_weaker_locks_only() {
        let c = ChunkLock {
            until: 20,
            mode: LockMode::Governance,
        };
        assert!(c.covers(10, LockMode::Governance));
        assert!(!c.covers(30, LockMode::Governance));
        assert!(!c.covers(10, LockMode::Compliance));
    }
}
