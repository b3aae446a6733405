//! Chunk checks of verify (docs/formats.md#verify-chunk-checks) and PBS's bad-chunk handling.
//!
//! * cheap: the chunk exists and is not empty; on object storage the store's recorded SHA-256
//!   (checked by the store at upload, docs/design.md#verify-without-egress) is read from the
//!   object's attributes, no download. Stores that return no checksum (Ceph RGW before Squid, the
//!   local filesystem) only tell existence and size; such chunks are counted as "present" in the
//!   summary.
//! * deep: download, check CRC and the crypt mode of the magic against the index; plain chunks
//!   are decoded and re-hashed (digest = SHA-256 of the data) and their length compared.
//!
//! A missing or corrupt chunk is dropped from the known-chunk set, so the next backup uploads
//! it again; a corrupt one is moved aside to `<digest>.<n>.bad` (lowest free n in 0..9, `.9.bad`
//! overwritten when all exist). Transient read errors count as failures but move nothing.

use std::collections::HashSet;

use crate::backend::PutOptions;
use crate::format::blob::{BlobView, MAX_CHUNK_SIZE};
use crate::format::{digest_to_hex, sha256, Digest};

use super::super::layout::chunk_key;
use super::super::DatastoreError;
use super::ChunkStore;

/// How far a chunk is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkCheck {
    Cheap,
    Deep,
}

/// Outcome of checking one chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkVerdict {
    /// Checked: decoded and re-hashed, or vouched for by the store's checksum.
    Ok,
    /// Cheap check without a stored checksum: the object exists and is not empty.
    Present,
    Missing,
    /// Stored but wrong; the reason says what failed.
    Corrupt(String),
    /// Could not be read (network, permissions): a failure, but nothing is moved.
    Unreadable(String),
}

/// The `.bad` key for slot `n` of a chunk.
pub(crate) fn bad_chunk_key(digest: &Digest, n: u8) -> String {
    format!("{}.{n}.bad", chunk_key(digest))
}

/// Checks of a blob's bytes against the digest and the index's expectations.
pub(crate) fn check_chunk_bytes(
    digest: &Digest,
    raw: &[u8],
    expect_encrypted: bool,
    expect_len: Option<u64>,
) -> Result<(), String> {
    let view = BlobView::parse(raw).map_err(|e| format!("not a valid blob: {e}"))?;
    view.verify_crc()
        .map_err(|e| format!("CRC check failed: {e}"))?;
    let encrypted = view.kind().is_encrypted();
    if encrypted != expect_encrypted {
        return Err(match expect_encrypted {
            true => "unencrypted chunk in an encrypted index".to_string(),
            false => "encrypted chunk in an unencrypted index".to_string(),
        });
    }
    if encrypted {
        return Ok(());
    }
    let data = view
        .decode(MAX_CHUNK_SIZE as usize)
        .map_err(|e| format!("cannot decode: {e}"))?;
    if sha256(&data) != *digest {
        return Err("SHA-256 of the decoded data does not match the digest".to_string());
    }
    if let Some(len) = expect_len {
        if data.len() as u64 != len {
            return Err(format!(
                "decoded length {} differs from the index's {len}",
                data.len()
            ));
        }
    }
    Ok(())
}

impl ChunkStore {
    /// Check one chunk (see the module text for what each level does).
    pub async fn check(
        &self,
        digest: &Digest,
        level: ChunkCheck,
        expect_encrypted: bool,
        expect_len: Option<u64>,
    ) -> ChunkVerdict {
        let key = chunk_key(digest);
        if level == ChunkCheck::Cheap {
            match self.backend.stored_sha256(&key).await {
                Ok(None) => return ChunkVerdict::Missing,
                Ok(Some(info)) if info.size == 0 => {
                    return ChunkVerdict::Corrupt("empty object".to_string())
                }
                Ok(Some(info)) if info.sha256.is_some() => return ChunkVerdict::Ok,
                // No stored checksum (local filesystem, or a store that does not return one):
                // existence and a non-empty object is all a cheap check can tell.
                Ok(Some(_)) => return ChunkVerdict::Present,
                Err(e) => return ChunkVerdict::Unreadable(e.to_string()),
            }
        }
        let raw = match self.backend.get(&key).await {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => return ChunkVerdict::Missing,
            Err(e) => return ChunkVerdict::Unreadable(e.to_string()),
        };
        match check_chunk_bytes(digest, &raw, expect_encrypted, expect_len) {
            Ok(()) => ChunkVerdict::Ok,
            Err(reason) => ChunkVerdict::Corrupt(reason),
        }
    }

    /// Take a missing or corrupt chunk out of service: forget it as stored (so the next backup
    /// uploads it again) and, if it exists, move it to its `.bad` name. Returns the new key;
    /// `moved` is told the chunk's size while the exclusive chunk lock is still held.
    pub(in crate::datastore) async fn move_aside(
        &self,
        digest: &Digest,
        moved: impl FnOnce(u64),
    ) -> Result<Option<String>, DatastoreError> {
        let key = chunk_key(digest);
        // Exclusive: no insert may find the chunk present (or known) while it is moved.
        let _exclusive = self.lock.write().await;
        self.known.remove(digest);
        let data = match self.backend.get(&key).await {
            Ok(data) => data,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut target = bad_chunk_key(digest, 9);
        for n in 0..9u8 {
            let candidate = bad_chunk_key(digest, n);
            if self.backend.head(&candidate).await?.is_none() {
                target = candidate;
                break;
            }
        }
        let size = data.len() as u64;
        self.backend
            .put(&target, data, PutOptions::default())
            .await?;
        // Durably not "stored" any more before the original goes.
        self.known
            .journal_removal(self.backend.as_ref(), std::slice::from_ref(digest))
            .await?;
        crate::fault::pause_at_async("verify-move-bad", &key).await;
        self.backend.delete(&key).await?;
        moved(size);
        tracing::warn!(
            store = %self.store,
            "chunk {} moved to {target}",
            digest_to_hex(digest)
        );
        Ok(Some(target))
    }

    /// Persist the known-chunk set after chunks were dropped from it, so that a restart does
    /// not bring them back from the journal.
    pub(in crate::datastore) async fn persist_known_after_removal(
        &self,
    ) -> Result<(), DatastoreError> {
        self.known
            .write_full(self.backend.as_ref(), &HashSet::new())
            .await
    }
}
