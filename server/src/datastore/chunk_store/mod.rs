//! The chunk store (`.chunks/<4 hex>/<64 hex>`): deduplicating insert
//! (docs/formats.md#deduplicating-insert), reads, the known-digest set (`known.rs`), the chunk
//! lock, chunk checks and moving bad chunks aside (`verify.rs`), and the per-chunk part of GC's
//! sweep (`sweep.rs`). Which chunks are in use is decided by the datastore (indexes, running
//! backups, retention); this type only stores, reads, checks and removes chunks.
//!
//! Writes reach it only through [`super::Datastore`], which passes the writer lease and quota
//! first; readers use [`super::Datastore::chunks`].

mod known;
mod known_file;
mod sweep;
mod verify;

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{Backend, PutOptions, PutOutcome};
use crate::format::blob::BlobView;
use crate::format::{digest_to_hex, sha256, Digest};

use super::layout::chunk_key;
use super::DatastoreError;

pub use known::{KNOWN_DELTA_PREFIX, KNOWN_INDEX};
pub use known_file::{DigestFile, DigestFileWriter, Origin as DigestFileOrigin};
pub(in crate::datastore) use sweep::{DELETE_BATCH, DELETE_PARALLELISM};
pub(crate) use verify::bad_chunk_key;
#[cfg(test)]
pub(crate) use verify::check_chunk_bytes;
pub use verify::{ChunkCheck, ChunkVerdict};

/// Result of [`super::Datastore::insert_chunk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInsertOutcome {
    /// The chunk was already stored (nothing new written).
    pub duplicate: bool,
}

/// The chunks of one datastore.
pub struct ChunkStore {
    /// Datastore name, for messages.
    store: String,
    /// The datastore's fenced backend.
    backend: Arc<dyn Backend>,
    /// Digests known to be stored (object stores) and chunk reuse times (all backends).
    known: known::KnownChunks,
    /// Shared by chunk inserts, exclusive for GC while it decides about and deletes one
    /// chunk (and for moving a bad chunk aside): an insert that found the chunk present has
    /// touched it before GC re-checks it.
    lock: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for ChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStore")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl ChunkStore {
    /// Opens the chunk store of datastore `store` on its fenced `backend`; on object storage
    /// (`exclusive`) the known-digest set is loaded, elsewhere it stays off.
    pub(super) async fn open(
        store: &str,
        backend: Arc<dyn Backend>,
        exclusive: bool,
        cache_dir: Option<&std::path::Path>,
    ) -> Result<Self, DatastoreError> {
        let known = match exclusive {
            false => known::KnownChunks::disabled(),
            true => known::KnownChunks::load(backend.as_ref(), store, cache_dir).await?,
        };
        Ok(Self {
            store: store.to_string(),
            backend,
            known,
            lock: tokio::sync::RwLock::new(()),
        })
    }

    /// Store a validated chunk blob, deduplicated by digest, under the shared chunk lock.
    /// `quota` is awaited before anything is written (not for a known digest); `stored` is
    /// told the size of a newly written chunk while the lock is still held.
    ///
    /// * absent: written (only-if-absent);
    /// * same length stored: duplicate, its modified time is refreshed for GC;
    /// * 0-byte stored object: replaced;
    /// * encrypted incoming over a stored plain chunk: refused (possible attack);
    /// * both encrypted and uncompressed with different lengths: refused;
    /// * encrypted incoming otherwise: keep the stored copy (zstd output may differ);
    /// * plain incoming: keep the smaller copy.
    pub(super) async fn insert(
        &self,
        digest: &Digest,
        raw: Bytes,
        encrypted: bool,
        quota: impl std::future::Future<Output = Result<(), DatastoreError>>,
        stored: impl FnOnce(u64),
    ) -> Result<ChunkInsertOutcome, DatastoreError> {
        let key = chunk_key(digest);
        let _shared = self.lock.read().await;
        let duplicate = ChunkInsertOutcome { duplicate: true };
        // Object storage: a known digest needs no request at all (docs/design.md#known-chunk-set).
        if self.known.contains(digest) {
            self.known.note_use(digest);
            return Ok(duplicate);
        }
        let size = raw.len() as u64;
        quota.await?;
        let outcome = self.insert_locked(digest, &key, raw, encrypted).await?;
        if !outcome.duplicate {
            stored(size);
        }
        // Stored now (ours or an equivalent copy): known, and in use for GC.
        self.known.insert(digest);
        if outcome.duplicate {
            self.known.note_use(digest);
        }
        Ok(outcome)
    }

    /// The insert decision against the stored object; the caller holds the chunk lock shared.
    async fn insert_locked(
        &self,
        digest: &Digest,
        key: &str,
        raw: Bytes,
        encrypted: bool,
    ) -> Result<ChunkInsertOutcome, DatastoreError> {
        let key = key.to_string();
        let checksum = self
            .backend
            .capabilities()
            .wants_put_checksum
            .then(|| sha256(&raw));
        let opts = PutOptions {
            if_absent: true,
            sha256: checksum,
        };
        let replace = PutOptions {
            if_absent: false,
            sha256: checksum,
        };
        let written = ChunkInsertOutcome { duplicate: false };
        let duplicate = ChunkInsertOutcome { duplicate: true };
        // On a filesystem a stat is cheap and a duplicate must not be written and synced in
        // full before it is noticed: look first. Object stores write only-if-absent at once
        // (known chunks never get here).
        let present = match checksum {
            None => self.backend.head(&key).await?,
            Some(_) => None,
        };
        let meta = match present {
            Some(meta) => meta,
            None => {
                if self.backend.put(&key, raw.clone(), opts).await? == PutOutcome::Written {
                    crate::fault::pause_at_async("chunk-stored", &key).await;
                    return Ok(written);
                }
                let Some(meta) = self.backend.head(&key).await? else {
                    // Removed between the two calls: store ours.
                    self.backend.put(&key, raw, replace).await?;
                    return Ok(written);
                };
                meta
            }
        };
        if meta.size == raw.len() as u64 {
            // A verify that moved this chunk aside as corrupt may have been cut short between
            // its copy to the `.bad` name and the removal: the stored copy is then the corrupt
            // one, and the validated upload replaces it (same size: counted once, as before).
            if self
                .backend
                .head(&bad_chunk_key(digest, 0))
                .await?
                .is_some()
            {
                self.backend.put(&key, raw, replace).await?;
                return Ok(duplicate);
            }
            self.backend.touch(&key).await?;
            return Ok(duplicate);
        }
        if meta.size == 0 {
            self.backend.put(&key, raw, replace).await?;
            return Ok(written);
        }
        let hex = digest_to_hex(digest);
        let new_kind = BlobView::parse(&raw)
            .map_err(|source| DatastoreError::Corrupt {
                object: format!("uploaded chunk {hex}"),
                source,
            })?
            .kind();
        let stored = self.backend.get(&key).await?;
        let Ok(stored_view) = BlobView::parse(&stored) else {
            // The stored object is not a blob at all: the validated upload is better.
            self.backend.put(&key, raw, replace).await?;
            return Ok(written);
        };
        let stored_kind = stored_view.kind();
        if encrypted || new_kind.is_encrypted() {
            if !stored_kind.is_encrypted() {
                return Err(DatastoreError::Invalid(format!(
                    "chunk {hex}: refusing encrypted upload over an existing unencrypted chunk"
                )));
            }
            if !stored_kind.is_compressed() && !new_kind.is_compressed() {
                return Err(DatastoreError::Invalid(format!(
                    "chunk {hex}: encrypted chunk already stored with a different length \
                     ({} != {})",
                    stored.len(),
                    raw.len()
                )));
            }
            self.backend.touch(&key).await?;
            return Ok(duplicate);
        }
        if raw.len() < stored.len() {
            self.backend.put(&key, raw, replace).await?;
            return Ok(written);
        }
        self.backend.touch(&key).await?;
        Ok(duplicate)
    }

    /// The stored chunk blob.
    pub async fn load(&self, digest: &Digest) -> Result<Bytes, DatastoreError> {
        match self.backend.get(&chunk_key(digest)).await {
            Ok(data) => Ok(data),
            Err(e) if e.is_not_found() => Err(DatastoreError::NotFound(format!(
                "chunk {} not found",
                digest_to_hex(digest)
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the chunk is in the in-memory known-chunk set (object stores only; always false
    /// on the local backend): known chunks are stored, no request needed to tell.
    pub fn is_known(&self, digest: &Digest) -> bool {
        self.known.contains(digest)
    }

    /// Number of chunk digests held in memory for deduplication (0 on the local backend).
    pub fn known_count(&self) -> usize {
        self.known.len()
    }

    /// Whether the chunk is stored.
    pub async fn exists(&self, digest: &Digest) -> Result<bool, DatastoreError> {
        Ok(self.backend.head(&chunk_key(digest)).await?.is_some())
    }

    /// Whether a chunk the caller has just registered with a backup lease is stored, and
    /// stays stored while the lease lives. Asked under the shared chunk lock: a GC delete
    /// batch holds it exclusively and re-checks the leases inside it, so the batch either
    /// ended before (a chunk it removed answers false) or begins after and sees the
    /// registration. Without the lock, a batch could remove the chunk between this answer and
    /// the lease's protection.
    pub async fn is_stored_for_lease(&self, digest: &Digest) -> Result<bool, DatastoreError> {
        let _shared = self.lock.read().await;
        Ok(self.is_known(digest) || self.exists(digest).await?)
    }

    /// Persist pending known-set journal entries through this store's (fenced) backend.
    pub(super) async fn flush_known(&self) -> Result<(), DatastoreError> {
        self.known.flush(self.backend.as_ref()).await
    }

    /// Persist pending known-set journal entries through `backend` (the unfenced store, for
    /// the final flush of a closing datastore).
    pub(super) async fn flush_known_to(&self, backend: &dyn Backend) -> Result<(), DatastoreError> {
        self.known.flush(backend).await
    }
}
