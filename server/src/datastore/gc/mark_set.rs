//! The chunks GC phase 1 marked in use, held in bounded memory.
//!
//! A datastore of ten million chunks marks ten million digests (320 MB as raw digests, more in
//! a hash set), so the set is kept per `.chunks/XX` shard, the unit the sweep works in:
//! digests are appended to their shard's buffer; when the buffers hold `budget` digests they are
//! sorted and deduplicated in place, and if that does not free at least half of them, every
//! buffer is appended to its shard's file in a temporary directory. The sweep takes one shard
//! at a time ([`MarkSet::take_shard`]): the shard's file and buffer, sorted and deduplicated.
//! Memory is the budget plus one shard's distinct marks; disk is at most the marked references.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;

use crate::format::Digest;

use super::super::usage::{chunk_shard, CHUNK_SHARDS};
use super::super::DatastoreError;

/// Digests buffered in memory before they are deduplicated or spilled (32 MiB of digests).
pub const DEFAULT_MARK_BUDGET: usize = 1024 * 1024;

/// The marked digests, partitioned by chunk shard.
#[derive(Debug)]
pub(crate) struct MarkSet {
    buffers: Vec<Vec<Digest>>,
    buffered: usize,
    budget: usize,
    /// Where full buffers go; created at the first spill.
    spill: Option<tempfile::TempDir>,
    /// Marked references, duplicates included.
    references: u64,
    /// Distinct digests of the shards taken so far.
    distinct_taken: u64,
    /// Where the spill directory is made (the system's temporary directory by default).
    spill_parent: Option<PathBuf>,
}

impl Default for MarkSet {
    fn default() -> Self {
        Self::new(DEFAULT_MARK_BUDGET)
    }
}

impl MarkSet {
    /// An empty set that holds at most about `budget` digests in memory while marking.
    pub(crate) fn new(budget: usize) -> Self {
        MarkSet {
            buffers: vec![Vec::new(); CHUNK_SHARDS],
            buffered: 0,
            budget: budget.max(CHUNK_SHARDS),
            spill: None,
            references: 0,
            distinct_taken: 0,
            spill_parent: None,
        }
    }

    /// Spill into a directory made under `parent` instead of the system's temporary directory.
    #[cfg(test)]
    pub(crate) fn spill_under(mut self, parent: PathBuf) -> Self {
        self.spill_parent = Some(parent);
        self
    }

    /// Marked references so far, duplicates included.
    pub(crate) fn references(&self) -> u64 {
        self.references
    }

    /// Distinct digests over the shards taken so far; all of them once every shard is taken.
    pub(crate) fn distinct_taken(&self) -> u64 {
        self.distinct_taken
    }

    /// True once a buffer went to disk.
    #[cfg(test)]
    pub(crate) fn spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// Mark `digests`. Compacts or spills (blocking file I/O, run off the async workers) when
    /// the buffers are full.
    pub(crate) async fn insert_all(
        &mut self,
        digests: impl IntoIterator<Item = Digest>,
    ) -> Result<(), DatastoreError> {
        for digest in digests {
            self.buffers[chunk_shard(&digest)].push(digest);
            self.buffered += 1;
            self.references += 1;
            if self.buffered >= self.budget {
                self.off_the_workers(MarkSet::compact).await?;
            }
        }
        Ok(())
    }

    /// The distinct marks of `shard`, sorted (look up with `binary_search`). Its buffer and
    /// file are released.
    pub(crate) async fn take_shard(&mut self, shard: usize) -> Result<Vec<Digest>, DatastoreError> {
        let mut marks = std::mem::take(&mut self.buffers[shard]);
        self.buffered -= marks.len();
        if let Some(path) = self.spill_path(shard) {
            marks = tokio::task::spawn_blocking(move || read_spilled(&path, marks))
                .await
                .map_err(|e| DatastoreError::Internal(format!("reading GC marks: {e}")))??;
        }
        marks.sort_unstable();
        marks.dedup();
        self.distinct_taken += marks.len() as u64;
        Ok(marks)
    }

    /// Runs `work` on the set on a blocking thread (sorting a million digests or writing them
    /// out must not stall the async workers).
    async fn off_the_workers(
        &mut self,
        work: fn(&mut MarkSet) -> Result<(), DatastoreError>,
    ) -> Result<(), DatastoreError> {
        let placeholder = MarkSet {
            buffers: Vec::new(),
            ..MarkSet::new(0)
        };
        let mut this = std::mem::replace(self, placeholder);
        let (this, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = work(&mut this);
            (this, outcome)
        })
        .await
        .map_err(|e| DatastoreError::Internal(format!("compacting GC marks: {e}")))?;
        *self = this;
        outcome
    }

    /// Sort and deduplicate every buffer; spill them all when that kept more than half.
    fn compact(&mut self) -> Result<(), DatastoreError> {
        let mut kept = 0;
        for buffer in &mut self.buffers {
            buffer.sort_unstable();
            buffer.dedup();
            kept += buffer.len();
        }
        self.buffered = kept;
        if kept > self.budget / 2 {
            self.spill_all()?;
        }
        Ok(())
    }

    fn spill_all(&mut self) -> Result<(), DatastoreError> {
        if self.spill.is_none() {
            let made = match &self.spill_parent {
                Some(parent) => tempfile::Builder::new()
                    .prefix("gc-marks-")
                    .tempdir_in(parent),
                None => tempfile::Builder::new().prefix("gc-marks-").tempdir(),
            };
            self.spill = Some(made.map_err(|e| {
                DatastoreError::Internal(format!("creating a directory for GC marks: {e}"))
            })?);
        }
        let dir = self.spill.as_ref().map(|d| d.path().to_path_buf());
        let dir = dir.expect("spill directory made above");
        for (shard, buffer) in self.buffers.iter_mut().enumerate() {
            if buffer.is_empty() {
                continue;
            }
            let path = dir.join(format!("{shard:02x}"));
            let written = File::options()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut file| file.write_all(buffer.as_flattened()));
            written.map_err(|e| {
                DatastoreError::Internal(format!("writing GC marks to {}: {e}", path.display()))
            })?;
            // Give the memory back, not just the length: the point is a bounded footprint.
            *buffer = Vec::new();
        }
        self.buffered = 0;
        Ok(())
    }

    fn spill_path(&self, shard: usize) -> Option<PathBuf> {
        let path = self.spill.as_ref()?.path().join(format!("{shard:02x}"));
        path.exists().then_some(path)
    }
}

/// Appends the digests of a spill file to `marks` and removes the file.
fn read_spilled(path: &PathBuf, mut marks: Vec<Digest>) -> Result<Vec<Digest>, DatastoreError> {
    let failed = |e: std::io::Error| {
        DatastoreError::Internal(format!("reading GC marks from {}: {e}", path.display()))
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(failed)?;
    if bytes.len() % 32 != 0 {
        return Err(DatastoreError::Internal(format!(
            "GC marks file {} has a partial digest",
            path.display()
        )));
    }
    marks.extend(bytes.chunks_exact(32).map(|d| {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(d);
        digest
    }));
    std::fs::remove_file(path).map_err(failed)?;
    Ok(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(shard: u8, n: u32) -> Digest {
        let mut d = [0u8; 32];
        d[0] = shard;
        d[28..].copy_from_slice(&n.to_be_bytes());
        d
    }

    async fn all_shards(set: &mut MarkSet) -> Vec<Vec<Digest>> {
        let mut shards = Vec::new();
        for shard in 0..CHUNK_SHARDS {
            shards.push(set.take_shard(shard).await.unwrap());
        }
        shards
    }

    #[tokio::test]
    async fn in_memory_set_dedups_per_shard() {
        let mut set = MarkSet::new(1 << 20);
        let marks = [digest(1, 7), digest(1, 3), digest(1, 7), digest(200, 1)];
        set.insert_all(marks).await.unwrap();
        assert_eq!(set.references(), 4);
        assert!(!set.spilled());
        let shards = all_shards(&mut set).await;
        assert_eq!(shards[1], vec![digest(1, 3), digest(1, 7)]);
        assert_eq!(shards[200], vec![digest(200, 1)]);
        assert!(shards[0].is_empty());
        assert_eq!(set.distinct_taken(), 3);
    }

    #[tokio::test]
    async fn duplicates_are_folded_before_they_spill() {
        // 10 references to 2 digests per round: compaction frees the buffers each time.
        let mut set = MarkSet::new(CHUNK_SHARDS);
        for _ in 0..100 {
            set.insert_all([digest(5, 1), digest(6, 2)].repeat(5))
                .await
                .unwrap();
        }
        assert!(!set.spilled());
        assert_eq!(set.references(), 1000);
        let shards = all_shards(&mut set).await;
        assert_eq!(shards[5], vec![digest(5, 1)]);
        assert_eq!(shards[6], vec![digest(6, 2)]);
        assert_eq!(set.distinct_taken(), 2);
    }

    #[tokio::test]
    async fn spilled_marks_come_back_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = MarkSet::new(CHUNK_SHARDS).spill_under(dir.path().to_path_buf());
        // 3 × 2,560 distinct digests over 10 shards, each inserted twice.
        let distinct: Vec<Digest> = (0..7680u32).map(|n| digest((n % 10) as u8, n)).collect();
        set.insert_all(distinct.iter().copied()).await.unwrap();
        set.insert_all(distinct.iter().rev().copied())
            .await
            .unwrap();
        assert!(set.spilled());
        assert!(
            set.buffered <= CHUNK_SHARDS,
            "memory stays within the budget"
        );
        let shards = all_shards(&mut set).await;
        for (shard, marks) in shards.iter().enumerate().take(10) {
            let mut want: Vec<Digest> = distinct
                .iter()
                .filter(|d| d[0] as usize == shard)
                .copied()
                .collect();
            want.sort_unstable();
            assert_eq!(marks, &want, "shard {shard}");
        }
        assert_eq!(set.distinct_taken(), 7680);
        assert_eq!(set.references(), 2 * 7680);
        // Each shard file is removed once taken.
        let left: Vec<_> = std::fs::read_dir(set.spill.as_ref().unwrap().path())
            .unwrap()
            .collect();
        assert!(left.is_empty(), "spill files left behind: {left:?}");
    }
}
