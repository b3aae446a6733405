//! The chunk store (`.chunks/<4 hex>/<64 hex>`): deduplicating insert
//! (docs/formats.md#deduplicating-insert) and reads.

use bytes::Bytes;

use crate::backend::{PutOptions, PutOutcome};
use crate::format::blob::BlobView;
use crate::format::{digest_to_hex, sha256, Digest};

use super::layout::chunk_key;
use super::verify_chunks::bad_chunk_key;
use super::{Datastore, DatastoreError};

/// Result of [`Datastore::insert_chunk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInsertOutcome {
    /// The chunk was already stored (nothing new written).
    pub duplicate: bool,
}

impl Datastore {
    /// Store a validated chunk blob, deduplicated by digest.
    ///
    /// * absent: written (only-if-absent);
    /// * same length stored: duplicate, its modified time is refreshed for GC;
    /// * 0-byte stored object: replaced;
    /// * encrypted incoming over a stored plain chunk: refused (possible attack);
    /// * both encrypted and uncompressed with different lengths: refused;
    /// * encrypted incoming otherwise: keep the stored copy (zstd output may differ);
    /// * plain incoming: keep the smaller copy.
    pub async fn insert_chunk(
        &self,
        digest: &Digest,
        raw: Bytes,
        encrypted: bool,
    ) -> Result<ChunkInsertOutcome, DatastoreError> {
        self.check_writable()?;
        let key = chunk_key(digest);
        let _shared = self.chunk_lock.read().await;
        let duplicate = ChunkInsertOutcome { duplicate: true };
        // Object storage: a known digest needs no request at all (docs/design.md#known-chunk-set).
        if self.known.contains(digest) {
            self.known.note_use(digest);
            return Ok(duplicate);
        }
        let size = raw.len() as u64;
        self.usage_check_quota(digest, size).await?;
        let outcome = self
            .insert_chunk_locked(digest, &key, raw, encrypted)
            .await?;
        if !outcome.duplicate {
            self.usage_chunk_stored(digest, size);
        }
        // Stored now (ours or an equivalent copy): known, and in use for GC.
        self.known.insert(digest);
        if outcome.duplicate {
            self.known.note_use(digest);
        }
        Ok(outcome)
    }

    /// The insert decision against the stored object; the caller holds the chunk lock shared.
    async fn insert_chunk_locked(
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
    pub async fn load_chunk(&self, digest: &Digest) -> Result<Bytes, DatastoreError> {
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
    pub fn chunk_known(&self, digest: &Digest) -> bool {
        self.known.contains(digest)
    }

    /// Whether the chunk is stored.
    pub async fn chunk_exists(&self, digest: &Digest) -> Result<bool, DatastoreError> {
        Ok(self.backend.head(&chunk_key(digest)).await?.is_some())
    }
}
