//! GC phase 2 (docs/formats.md#gc-sweep): list the chunk store and delete every chunk that no
//! index or running backup marked and whose last write or reuse lies before `min_mtime`. The
//! store is listed in 256 shards (`.chunks/00` … `.chunks/ff`), one at a time, so the memory of
//! the sweep is one shard's, not the store's (docs/design.md#garbage-collection).
//!
//! Race with a concurrent insert: inserts hold the chunk lock shared and record the reuse of a
//! chunk they find present (`known.note_use`, plus a touch on the filesystem) before they let
//! go of it; GC takes the lock exclusively for each batch of candidates and re-checks running
//! backups and reuse times under it before deleting the batch. Object stores get one
//! DeleteObjects per 1000 keys, several in flight.

use std::time::SystemTime;

use crate::backend::ObjectMeta;
use crate::format::Digest;

use super::super::chunk_store::{DELETE_BATCH, DELETE_PARALLELISM};
use super::super::layout::ChunkKey;
use super::super::usage::{ChunkTally, CHUNK_SHARDS};
use super::super::DatastoreError;
use super::mark_set::MarkSet;
use super::GarbageCollector;
use super::{GcStatus, Progress};

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

impl GarbageCollector {
    /// Phase 2, one `.chunks/XX` shard after the other ([`CHUNK_SHARDS`]), so that what the
    /// sweep holds is one shard's listing and candidates, never the whole chunk store. Returns
    /// the tally of the chunks it left in place (not `.bad` files), which the usage recount
    /// takes instead of listing the chunk store a second time.
    pub(super) async fn sweep_unused_chunks(
        &self,
        marked: &mut MarkSet,
        limits: SweepLimits,
        status: &mut GcStatus,
        say: &(dyn Fn(String) + Send + Sync),
    ) -> Result<ChunkTally, DatastoreError> {
        let mut remaining = ChunkTally::default();
        let progress = Progress::new("processed", CHUNK_SHARDS as u64, "chunk shards");
        let mut journaled = false;
        for shard in 0..CHUNK_SHARDS {
            self.check_abort()?;
            let shard_marks = marked.take_shard(shard).await?;
            let candidates = self
                .sweep_shard_listing(shard, &shard_marks, limits, status, &mut remaining)
                .await?;
            drop(shard_marks);
            journaled |= self.chunks.journals_removals() && !candidates.is_empty();
            for group in candidates.chunks(DELETE_BATCH * DELETE_PARALLELISM) {
                // Between batches every decision made so far is complete.
                self.check_abort()?;
                self.delete_group(group, limits, status, &mut remaining)
                    .await?;
                self.chunks.merge_known_if_due().await?;
            }
            progress.report(shard as u64 + 1, say);
        }
        self.chunks
            .finish_sweep(journaled, limits.min_mtime)
            .await?;
        Ok(remaining)
    }

    /// Lists one shard, counts what stays and returns the deletion candidates; then closes the
    /// shard for the usage recount under the exclusive chunk lock (every store or move that
    /// reached the listing has been logged by then).
    async fn sweep_shard_listing(
        &self,
        shard: usize,
        marked: &[Digest],
        limits: SweepLimits,
        status: &mut GcStatus,
        remaining: &mut ChunkTally,
    ) -> Result<Vec<Candidate>, DatastoreError> {
        let listed = self.chunks.list_shard(shard).await?;
        let mut candidates = Vec::new();
        // (digest, size) of every chunk (not `.bad`) listed
        let mut sizes: Vec<(Digest, u64)> = Vec::with_capacity(listed.len());
        for (obj, chunk) in listed {
            let (digest, bad) = match chunk {
                ChunkKey::Chunk(d) => (d, false),
                ChunkKey::Bad(d) => (d, true),
            };
            if !bad {
                sizes.push((digest, obj.size));
            }
            if marked.binary_search(&digest).is_ok() {
                count_in_use(status, bad, obj.size);
                keep(remaining, bad, obj.size);
                continue;
            }
            if let Some(when) = self.keep_unmarked(&obj, &digest, bad, limits) {
                count_kept(status, bad, obj.size, when, limits);
                keep(remaining, bad, obj.size);
                continue;
            }
            candidates.push(Candidate {
                key: obj.key,
                digest,
                bad,
                size: obj.size,
            });
        }
        let _exclusive = self.chunks.lock_exclusive().await;
        self.usage.scan_close_shard(shard, sizes);
        Ok(candidates)
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
            false => self.chunks.last_modified(obj, digest),
        };
        if modified >= limits.min_mtime {
            return Some(modified);
        }
        if bad {
            return None;
        }
        if self
            .retention
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
        remaining: &mut ChunkTally,
    ) -> Result<(), DatastoreError> {
        let _exclusive = self.chunks.lock_exclusive().await;
        crate::fault::pause_at_async("gc-delete-batch", &self.name).await;
        // Fenced again right before the deletes (the backend refuses them too).
        self.writable.check()?;
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
                keep(remaining, c.bad, c.size);
                continue;
            }
            doomed.push(c);
        }
        let gone: Vec<Digest> = doomed.iter().filter(|c| !c.bad).map(|c| c.digest).collect();
        let keys: Vec<String> = doomed.iter().map(|c| c.key.clone()).collect();
        self.chunks.remove(&gone, &keys).await?;
        for c in doomed {
            self.usage.sub_chunk(None, c.size);
            status.removed_bytes += c.size;
            match c.bad {
                true => status.removed_bad += 1,
                false => status.removed_chunks += 1,
            }
        }
        Ok(())
    }
}

/// Count a chunk the sweep leaves in place (`.bad` files are not chunks to the usage count).
fn keep(remaining: &mut ChunkTally, bad: bool, size: u64) {
    if !bad {
        remaining.physical += size;
        remaining.chunks += 1;
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
