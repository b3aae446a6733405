//! GC phase 2 (docs/formats.md#gc-sweep): list the chunk store and delete every chunk that no
//! index or running backup marked and whose last write or reuse lies before `min_mtime`.
//!
//! Race with a concurrent insert: inserts hold the chunk lock shared and record the reuse of a
//! chunk they find present (`known.note_use`, plus a touch on the filesystem) before they let
//! go of it; GC takes the lock exclusively for each batch of candidates and re-checks running
//! backups and reuse times under it before deleting the batch. Object stores get one
//! DeleteObjects per 1000 keys, several in flight.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use crate::backend::ObjectMeta;
use crate::format::Digest;

use super::super::layout::{parse_chunk_key, ChunkKey, CHUNK_PREFIX};
use super::super::{Datastore, DatastoreError};
use super::{GcStatus, Progress};

/// Keys per delete request.
const DELETE_BATCH: usize = 1000;
/// Delete requests in flight at once (all under one hold of the exclusive chunk lock).
const DELETE_PARALLELISM: usize = 4;

/// Time limits of one sweep (docs/formats.md#gc-cutoff).
#[derive(Clone, Copy, Debug)]
pub(super) struct SweepLimits {
    /// Unmarked chunks last written or reused before this are removed.
    pub min_mtime: SystemTime,
    /// Unmarked chunks between `min_mtime` and this are "pending", later ones in use.
    pub oldest_writer: SystemTime,
}

struct Candidate {
    key: String,
    digest: Digest,
    bad: bool,
    size: u64,
}

impl Datastore {
    /// Phase 2. Returns the sizes of the chunks it left in place (not `.bad` files), which
    /// the usage recount takes instead of listing the chunk store a second time.
    pub(super) async fn sweep_unused_chunks(
        &self,
        marked: &HashSet<Digest>,
        limits: SweepLimits,
        status: &mut GcStatus,
        say: &(dyn Fn(String) + Send + Sync),
    ) -> Result<HashMap<Digest, u64>, DatastoreError> {
        let listed = self.backend.list(CHUNK_PREFIX, None).await?;
        let mut remaining = HashMap::new();
        let progress = Progress::new("processed", listed.objects.len() as u64, "chunks");
        let mut candidates = Vec::new();
        let mut seen = 0u64;
        for obj in listed.objects {
            let Some(chunk) = parse_chunk_key(&obj.key) else {
                continue;
            };
            let (digest, bad) = match chunk {
                ChunkKey::Chunk(d) => (d, false),
                ChunkKey::Bad(d) => (d, true),
            };
            seen += 1;
            if marked.contains(&digest) {
                count_in_use(status, bad, obj.size);
                keep(&mut remaining, bad, digest, obj.size);
                continue;
            }
            if let Some(when) = self.keep_unmarked(&obj, &digest, bad, limits) {
                count_kept(status, bad, obj.size, when, limits);
                keep(&mut remaining, bad, digest, obj.size);
                continue;
            }
            candidates.push(Candidate {
                key: obj.key,
                digest,
                bad,
                size: obj.size,
            });
        }
        if self.known.enabled() {
            // The persisted known set must never name a deleted chunk: write it without
            // every deletion candidate before the first delete.
            let doomed: HashSet<Digest> = candidates
                .iter()
                .filter(|c| !c.bad)
                .map(|c| c.digest)
                .collect();
            self.known
                .write_full(self.backend.as_ref(), &doomed)
                .await?;
        }
        let kept = seen - candidates.len() as u64;
        progress.report(kept, say);
        let mut done = kept;
        for group in candidates.chunks(DELETE_BATCH * DELETE_PARALLELISM) {
            // Between batches every decision made so far is complete.
            self.check_gc_abort()?;
            self.delete_group(group, limits, status, &mut remaining)
                .await?;
            done += group.len() as u64;
            progress.report(done, say);
        }
        self.known.prune_recent(limits.min_mtime);
        Ok(remaining)
    }

    /// `Some(time)` when an unmarked chunk must stay: its last write or reuse (at or after
    /// `min_mtime`), a retention lock, or a running backup that knows it.
    fn keep_unmarked(
        &self,
        obj: &ObjectMeta,
        digest: &Digest,
        bad: bool,
        limits: SweepLimits,
    ) -> Option<SystemTime> {
        let modified = match bad {
            true => obj.modified,
            false => self.last_modified(obj, digest),
        };
        if modified >= limits.min_mtime {
            return Some(modified);
        }
        if bad {
            return None;
        }
        if self
            .chunk_retained_until(digest)
            .is_some_and(|until| until > SystemTime::now())
        {
            // A retention lock still needs it: in use.
            return Some(SystemTime::now());
        }
        if self.leases.contains_chunk(digest) {
            return Some(SystemTime::now());
        }
        None
    }

    /// Re-check one group of candidates under the exclusive chunk lock and delete the rest.
    async fn delete_group(
        &self,
        group: &[Candidate],
        limits: SweepLimits,
        status: &mut GcStatus,
        remaining: &mut HashMap<Digest, u64>,
    ) -> Result<(), DatastoreError> {
        let _exclusive = self.chunk_lock.write().await;
        crate::fault::pause_at_async("gc-delete-batch", &self.name).await;
        // Fenced again right before the deletes (the backend refuses them too).
        self.check_writable()?;
        let mut doomed: Vec<&Candidate> = Vec::with_capacity(group.len());
        for c in group {
            let meta = ObjectMeta {
                key: String::new(),
                size: c.size,
                modified: SystemTime::UNIX_EPOCH,
            };
            // Only reuse times can have changed (inserts wait for the lock we hold).
            if let Some(when) = self.keep_unmarked(&meta, &c.digest, c.bad, limits) {
                count_kept(status, c.bad, c.size, when, limits);
                keep(remaining, c.bad, c.digest, c.size);
                continue;
            }
            doomed.push(c);
        }
        for c in &doomed {
            if !c.bad {
                self.known.remove(&c.digest);
            }
        }
        let keys: Vec<String> = doomed.iter().map(|c| c.key.clone()).collect();
        let requests = keys
            .chunks(DELETE_BATCH)
            .map(|batch| self.backend.delete_many(batch));
        futures::future::try_join_all(requests).await?;
        for c in doomed {
            self.usage_chunk_removed(c.size);
            status.removed_bytes += c.size;
            match c.bad {
                true => status.removed_bad += 1,
                false => status.removed_chunks += 1,
            }
        }
        Ok(())
    }

    /// The object's time, or its last reuse by a backup of this process if later (object
    /// stores do not refresh times on reuse; see `known.rs`).
    fn last_modified(&self, obj: &ObjectMeta, digest: &Digest) -> SystemTime {
        match self.known.last_use(digest) {
            Some(used) if used > obj.modified => used,
            _ => obj.modified,
        }
    }
}

/// Note a chunk the sweep leaves in place (`.bad` files are not chunks to the usage count).
fn keep(remaining: &mut HashMap<Digest, u64>, bad: bool, digest: Digest, size: u64) {
    if !bad {
        remaining.insert(digest, size);
    }
}

/// A marked chunk (docs/formats.md#gc-sweep "in use"): bad files add only their bytes.
fn count_in_use(status: &mut GcStatus, bad: bool, size: u64) {
    status.disk_bytes += size;
    if !bad {
        status.disk_chunks += 1;
    }
}

/// An unmarked chunk that stays: pending before the oldest writer's start, else in use.
fn count_kept(status: &mut GcStatus, bad: bool, size: u64, when: SystemTime, l: SweepLimits) {
    if when >= l.oldest_writer {
        return count_in_use(status, bad, size);
    }
    status.pending_bytes += size;
    match bad {
        true => status.still_bad += 1,
        false => status.pending_chunks += 1,
    }
}
