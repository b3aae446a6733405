//! Garbage collection (DESIGN decision 7, formats.md §6) on object semantics.
//!
//! Mark: every digest of every `*.fidx`/`*.didx` stored anywhere outside `.chunks/` (all
//! namespaces, finished or not) plus every chunk known to a running backup. Sweep: delete
//! unmarked chunks whose modified time lies before
//! `min(gc start − cutoff, oldest running backup start − 5 min)`.
//!
//! Race with a concurrent insert: inserts hold the chunk lock shared and refresh the modified
//! time of a chunk they find present; GC takes it exclusively per candidate and re-checks the
//! running backups and the object's modified time before deleting it.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::backend::{Backend, ObjectMeta, PutOptions};
use crate::format::index::{index_kind_of, AnyIndex};
use crate::format::Digest;

use super::layout::{is_index_name, parse_chunk_key, ChunkKey, CHUNK_PREFIX, GC_STATUS};
use super::{lock_std, Datastore, DatastoreError};

/// PBS's default minimum chunk age: 24 h 5 min.
pub const DEFAULT_GC_CUTOFF: Duration = Duration::from_secs(24 * 3600 + 5 * 60);

/// Safety margin before the oldest running backup's start.
const WRITER_MARGIN: Duration = Duration::from_secs(300);

/// Result of one GC run; stored as `.gc-status` (formats.md §6.5, kebab-case keys).
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

impl Datastore {
    /// Status of the last finished GC (read back from `.gc-status` at open).
    pub async fn last_gc_status(&self) -> Option<GcStatus> {
        lock_std(&self.last_gc).clone()
    }

    /// Run GC; log lines go to `log` (the task log).
    pub async fn garbage_collect(
        &self,
        log: &(dyn Fn(String) + Send + Sync),
    ) -> Result<GcStatus, DatastoreError> {
        self.garbage_collect_as(None, log).await
    }

    /// Run GC on behalf of the task `upid` (recorded in the status).
    pub async fn garbage_collect_as(
        &self,
        upid: Option<String>,
        log: &(dyn Fn(String) + Send + Sync),
    ) -> Result<GcStatus, DatastoreError> {
        self.check_writable()?;
        let _running = self.gc_running.try_lock().map_err(|_| {
            DatastoreError::Busy(format!(
                "garbage collection already running on datastore '{}'",
                self.name
            ))
        })?;
        let say = |line: String| {
            tracing::info!(store = %self.name, "{line}");
            log(line);
        };
        let start = SystemTime::now();
        let mut min_mtime = start
            .checked_sub(self.gc_cutoff())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if let Some(oldest) = self.leases.oldest_start() {
            let writer_limit = oldest
                .checked_sub(WRITER_MARGIN)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            min_mtime = min_mtime.min(writer_limit);
        }
        let mut status = GcStatus {
            upid,
            ..GcStatus::default()
        };

        say(format!(
            "starting garbage collection on store {}",
            self.name
        ));
        say("Start GC phase1 (mark used chunks)".to_string());
        let marked = self.mark_used_chunks(&mut status).await?;
        say(format!(
            "marked {} distinct chunks from {} index files",
            marked.len(),
            status.index_file_count
        ));

        say("Start GC phase2 (sweep unused chunks)".to_string());
        let listed = self.backend.list(CHUNK_PREFIX, None).await?;
        let chunks: Vec<(ObjectMeta, ChunkKey)> = listed
            .objects
            .into_iter()
            .filter_map(|obj| parse_chunk_key(&obj.key).map(|c| (obj, c)))
            .collect();
        if self.known.enabled() {
            // The persisted known set must never name a deleted chunk: write it without
            // every deletion candidate before the first delete.
            let candidates: HashSet<Digest> = chunks
                .iter()
                .filter_map(|(obj, c)| match c {
                    ChunkKey::Chunk(d)
                        if !marked.contains(d) && self.last_modified(obj, d) < min_mtime =>
                    {
                        Some(*d)
                    }
                    _ => None,
                })
                .collect();
            self.known
                .write_full(self.backend.as_ref(), &candidates)
                .await?;
        }
        for (obj, chunk) in chunks {
            self.sweep_one(&obj, chunk, &marked, min_mtime, &mut status)
                .await?;
        }
        self.known.prune_recent(min_mtime);
        self.usage_gc_finished().await;

        summarize(&status, &say);
        let json = serde_json::to_vec_pretty(&status)
            .map_err(|e| DatastoreError::Internal(format!("serialising {GC_STATUS}: {e}")))?;
        self.backend
            .put(GC_STATUS, Bytes::from(json), PutOptions::default())
            .await?;
        *lock_std(&self.last_gc) = Some(status.clone());
        Ok(status)
    }

    /// Phase 1: every digest referenced by any stored index, plus running backups' chunks.
    async fn mark_used_chunks(
        &self,
        status: &mut GcStatus,
    ) -> Result<HashSet<Digest>, DatastoreError> {
        let mut marked = HashSet::new();
        let top = self.backend.list("", Some('/')).await?;
        let mut keys: Vec<String> = top.objects.into_iter().map(|o| o.key).collect();
        for prefix in &top.prefixes {
            // `.chunks/` and other dot entries hold no indexes (PBS's walk skips them too).
            if prefix.starts_with('.') {
                continue;
            }
            let listed = self.backend.list(prefix, None).await?;
            keys.extend(listed.objects.into_iter().map(|o| o.key));
        }
        for key in keys {
            let name = key.rsplit('/').next().unwrap_or(&key);
            if !is_index_name(name) {
                continue;
            }
            let Some(kind) = index_kind_of(name) else {
                continue;
            };
            let data = match self.backend.get(&key).await {
                Ok(data) => data,
                // Removed by prune meanwhile: its chunks are no longer needed by it.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            // An unreadable index aborts GC: sweeping without it could delete live chunks.
            let index = AnyIndex::parse(kind, &data).map_err(|source| DatastoreError::Corrupt {
                object: format!("index file '{key}'"),
                source,
            })?;
            status.index_file_count += 1;
            status.index_data_bytes += index.size();
            marked.extend(index.chunks().into_iter().map(|(digest, _)| digest));
        }
        self.leases.collect_chunks(&mut marked);
        Ok(marked)
    }

    /// Phase 2 for one chunk-store object.
    async fn sweep_one(
        &self,
        obj: &ObjectMeta,
        chunk: ChunkKey,
        marked: &HashSet<Digest>,
        min_mtime: SystemTime,
        status: &mut GcStatus,
    ) -> Result<(), DatastoreError> {
        let (digest, bad) = match chunk {
            ChunkKey::Chunk(d) => (d, false),
            ChunkKey::Bad(d) => (d, true),
        };
        if marked.contains(&digest) {
            count_in_use(status, bad, obj.size);
            return Ok(());
        }
        if self.last_modified(obj, &digest) >= min_mtime {
            count_pending(status, bad, obj.size);
            return Ok(());
        }
        if !bad
            && self
                .chunk_retained_until(&digest)
                .is_some_and(|until| until > SystemTime::now())
        {
            // A retention lock still needs it.
            count_in_use(status, bad, obj.size);
            return Ok(());
        }
        let _exclusive = self.chunk_lock.write().await;
        if !bad && self.leases.contains_chunk(&digest) {
            count_in_use(status, bad, obj.size);
            return Ok(());
        }
        match self.backend.head(&obj.key).await? {
            None => {
                if !bad {
                    self.known.remove(&digest);
                }
            }
            Some(now) if self.last_modified(&now, &digest) >= min_mtime => {
                count_pending(status, bad, now.size)
            }
            Some(now) => {
                if !bad {
                    self.known.remove(&digest);
                }
                self.backend.delete(&obj.key).await?;
                self.usage_chunk_removed(now.size);
                status.removed_bytes += now.size;
                match bad {
                    true => status.removed_bad += 1,
                    false => status.removed_chunks += 1,
                }
            }
        }
        Ok(())
    }
}

impl Datastore {
    /// The object's time, or its last reuse by a backup of this process if later (object
    /// stores do not refresh times on reuse; see `known.rs`).
    fn last_modified(&self, obj: &ObjectMeta, digest: &Digest) -> SystemTime {
        match self.known.last_use(digest) {
            Some(used) if used > obj.modified => used,
            _ => obj.modified,
        }
    }
}

fn count_in_use(status: &mut GcStatus, bad: bool, size: u64) {
    status.disk_bytes += size;
    match bad {
        true => status.still_bad += 1,
        false => status.disk_chunks += 1,
    }
}

fn count_pending(status: &mut GcStatus, bad: bool, size: u64) {
    status.pending_bytes += size;
    match bad {
        true => status.still_bad += 1,
        false => status.pending_chunks += 1,
    }
}

fn summarize(status: &GcStatus, say: &dyn Fn(String)) {
    say(format!("Removed garbage: {} bytes", status.removed_bytes));
    say(format!("Removed chunks: {}", status.removed_chunks));
    if status.removed_bad > 0 {
        say(format!("Removed bad chunks: {}", status.removed_bad));
    }
    say(format!(
        "Pending removals: {} bytes (in {} chunks)",
        status.pending_bytes, status.pending_chunks
    ));
    if status.still_bad > 0 {
        say(format!("Leftover bad chunks: {}", status.still_bad));
    }
    say(format!(
        "Original data usage: {} bytes",
        status.index_data_bytes
    ));
    say(format!("On-Disk usage: {} bytes", status.disk_bytes));
    say(format!("On-Disk chunks: {}", status.disk_chunks));
    if status.disk_bytes > 0 {
        say(format!(
            "Deduplication factor: {:.2}",
            status.index_data_bytes as f64 / status.disk_bytes as f64
        ));
    }
    if let Some(avg) = status.disk_bytes.checked_div(status.disk_chunks) {
        say(format!("Average chunk size: {avg} bytes"));
    }
}
