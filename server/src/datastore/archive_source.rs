//! Random access to the stream a `.didx` describes (a pxar archive, a payload archive or a
//! catalog), for browsing and single-file restore. Only the chunks a read touches are loaded;
//! decoded chunks are kept in a small per-source cache bounded by bytes, because goodbye-table
//! lookups jump back and forth within the same few chunks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::format::blob::{BlobView, MAX_CHUNK_SIZE};
use crate::format::dynamic_index::DynamicIndex;
use crate::format::manifest::FileInfo;
use crate::format::names::{BackupDir, BackupNamespace};
use crate::format::pxar::{PxarError, ReadAt};
use crate::format::{digest_to_hex, sha256};

use super::layout::snapshot_label;
use super::{lock_std, Datastore, DatastoreError};

/// Decoded bytes the cache of one source may hold (plus the chunk being read).
pub const ARCHIVE_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Chunks the cache of one source may hold.
const CACHE_CHUNKS: usize = 8;

/// A `.didx` stream read through the datastore's chunk store.
pub struct DidxSource {
    ds: Arc<Datastore>,
    name: String,
    index: DynamicIndex,
    cache: Mutex<ChunkCache>,
}

#[derive(Default)]
struct ChunkCache {
    /// Most recently used first.
    chunks: VecDeque<(usize, Bytes)>,
    bytes: usize,
}

impl ChunkCache {
    fn get(&mut self, i: usize) -> Option<Bytes> {
        let pos = self.chunks.iter().position(|(k, _)| *k == i)?;
        let hit = self.chunks.remove(pos)?;
        let data = hit.1.clone();
        self.chunks.push_front(hit);
        Some(data)
    }

    fn put(&mut self, i: usize, data: Bytes) {
        if self.get(i).is_some() {
            return;
        }
        self.bytes += data.len();
        self.chunks.push_front((i, data));
        while self.chunks.len() > 1
            && (self.chunks.len() > CACHE_CHUNKS || self.bytes > ARCHIVE_CACHE_BYTES)
        {
            if let Some((_, old)) = self.chunks.pop_back() {
                self.bytes -= old.len();
            }
        }
    }
}

impl DidxSource {
    /// Opens `file` of a snapshot: reads and parses its index and checks its csum and size
    /// against the manifest entry (what the backup client recorded).
    pub async fn open(
        ds: &Arc<Datastore>,
        ns: &BackupNamespace,
        dir: &BackupDir,
        file: &FileInfo,
    ) -> Result<Self, DatastoreError> {
        let raw = ds
            .tree()
            .read_snapshot_file(ns, dir, &file.filename)
            .await?;
        let object = || format!("{} of snapshot {}", file.filename, snapshot_label(ns, dir));
        let index = DynamicIndex::parse(&raw).map_err(|source| DatastoreError::Corrupt {
            object: object(),
            source,
        })?;
        let csum = digest_to_hex(&index.csum());
        if csum != file.csum || index.size() != file.size {
            return Err(DatastoreError::Invalid(format!(
                "{}: index (csum {csum}, size {}) does not match the manifest (csum {}, size {})",
                object(),
                index.size(),
                file.csum,
                file.size
            )));
        }
        Ok(Self {
            ds: ds.clone(),
            name: file.filename.clone(),
            index,
            cache: Mutex::new(ChunkCache::default()),
        })
    }

    /// The archive file name (for messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Loads, checks and decodes chunk `i`: CRC, not encrypted, length as the index says,
    /// SHA-256 equal to the digest.
    async fn chunk(&self, i: usize) -> Result<Bytes, PxarError> {
        if let Some(hit) = lock_std(&self.cache).get(i) {
            return Ok(hit);
        }
        let entry = self.index.entries[i];
        let expect = self.index.chunk_len(i);
        let hex = digest_to_hex(&entry.digest);
        let raw = self
            .ds
            .chunks()
            .load(&entry.digest)
            .await
            .map_err(|e| PxarError::Source(format!("{}: {e}", self.name)))?;
        let name = self.name.clone();
        let decoded = tokio::task::spawn_blocking(move || -> Result<Bytes, String> {
            let view = BlobView::parse(&raw).map_err(|e| e.to_string())?;
            view.verify_crc().map_err(|e| e.to_string())?;
            if view.kind().is_encrypted() {
                return Err("chunk is encrypted".into());
            }
            let data = view
                .decode(MAX_CHUNK_SIZE as usize)
                .map_err(|e| e.to_string())?;
            if data.len() as u64 != expect {
                return Err(format!(
                    "read chunk with wrong size ({} != {expect})",
                    data.len()
                ));
            }
            if sha256(&data) != entry.digest {
                return Err("decoded data does not match the digest".into());
            }
            Ok(Bytes::from(data))
        })
        .await
        .map_err(|e| PxarError::Source(format!("{name}: chunk decode task failed: {e}")))?
        .map_err(|e| PxarError::Source(format!("{name}: chunk {hex}: {e}")))?;
        lock_std(&self.cache).put(i, decoded.clone());
        Ok(decoded)
    }
}

#[async_trait::async_trait]
impl ReadAt for DidxSource {
    fn size(&self) -> u64 {
        self.index.size()
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, PxarError> {
        let entries = &self.index.entries;
        if offset >= self.size() || len == 0 {
            return Ok(Bytes::new());
        }
        let i = entries.partition_point(|e| e.end <= offset);
        let start = if i == 0 { 0 } else { entries[i - 1].end };
        let data = self.chunk(i).await?;
        let from = (offset - start) as usize;
        let to = data.len().min(from.saturating_add(len));
        Ok(data.slice(from..to))
    }
}
