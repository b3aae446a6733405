//! Known chunk digests (docs/design.md#known-chunk-set): deduplication without a request per known
//! chunk.
//!
//! On object storage the set of stored digests is loaded at open from a compact persisted
//! object, `.chunks/.index` (magic + sorted 32-byte digests), plus small journal objects
//! `.chunks/.index-delta/<seq>` written as new chunks arrive (at every finished backup and
//! periodically), or naming chunks taken out of service (verify's move of a bad chunk), applied
//! in sequence order. Only when `.chunks/.index` is absent is the chunk store listed to rebuild it.
//!
//! Invariant: every digest in the set (and in the persisted index) is stored. Digests are
//! added only after a successful write; GC journals the removal of each batch of chunks it is
//! about to delete (and forgets them) under the exclusive chunk lock *before* deleting them,
//! and folds the journal into a new full index after its sweep. After deleting chunks out of
//! band, delete `.chunks/.index` to force a rebuild.
//!
//! The set also records when each chunk was last reused: object stores cannot refresh an
//! object's time for free, so GC asks here instead of relying on [`Backend::touch`].

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use bytes::Bytes;

use crate::backend::{Backend, PutOptions};
use crate::format::Digest;

use super::super::layout::{parse_chunk_key, ChunkKey, CHUNK_PREFIX};
use super::super::{lock_std, DatastoreError};

/// Full persisted digest set.
pub const KNOWN_INDEX: &str = ".chunks/.index";
/// Journal of digests added since the full index was written.
pub const KNOWN_DELTA_PREFIX: &str = ".chunks/.index-delta/";
const MAGIC: &[u8; 8] = b"PBSCKIX1";
/// Magic of a journal object listing digests that are no longer stored.
const REMOVED_MAGIC: &[u8; 8] = b"PBSCKRM1";
/// Journal objects before they are folded into a new full index.
const MAX_DELTAS: usize = 64;

#[derive(Debug, Default)]
struct Persisted {
    next_seq: u64,
    deltas: Vec<String>,
}

/// The in-memory digest set and its persistence.
#[derive(Debug)]
pub(crate) struct KnownChunks {
    /// Off for the local filesystem, where a stat is as cheap as a set lookup.
    enabled: bool,
    set: RwLock<HashSet<Digest>>,
    pending: Mutex<Vec<Digest>>,
    recent: Mutex<HashMap<Digest, SystemTime>>,
    persisted: tokio::sync::Mutex<Persisted>,
}

fn encode(digests: &mut Vec<Digest>) -> Bytes {
    encode_with(MAGIC, digests)
}

fn encode_with(magic: &[u8; 8], digests: &mut Vec<Digest>) -> Bytes {
    digests.sort_unstable();
    digests.dedup();
    let mut out = Vec::with_capacity(magic.len() + digests.len() * 32);
    out.extend_from_slice(magic);
    for d in digests.iter() {
        out.extend_from_slice(d);
    }
    Bytes::from(out)
}

fn decode(key: &str, data: &[u8]) -> Result<Vec<Digest>, DatastoreError> {
    decode_body(key, data.strip_prefix(MAGIC.as_slice()))
}

/// A journal object: `(added, digests)`.
fn decode_delta(key: &str, data: &[u8]) -> Result<(bool, Vec<Digest>), DatastoreError> {
    match data.strip_prefix(REMOVED_MAGIC.as_slice()) {
        Some(body) => Ok((false, decode_body(key, Some(body))?)),
        None => Ok((true, decode(key, data)?)),
    }
}

fn decode_body(key: &str, body: Option<&[u8]>) -> Result<Vec<Digest>, DatastoreError> {
    let body = body
        .filter(|b| b.len() % 32 == 0)
        .ok_or_else(|| DatastoreError::Internal(format!("'{key}' is not a known-chunk index")))?;
    Ok(body
        .chunks_exact(32)
        .map(|c| {
            let mut d = [0u8; 32];
            d.copy_from_slice(c);
            d
        })
        .collect())
}

impl KnownChunks {
    /// No persisted set (local filesystem); only the reuse times are kept.
    pub fn disabled() -> Self {
        KnownChunks {
            enabled: false,
            set: RwLock::new(HashSet::new()),
            pending: Mutex::new(Vec::new()),
            recent: Mutex::new(HashMap::new()),
            persisted: tokio::sync::Mutex::new(Persisted::default()),
        }
    }

    /// Load `.chunks/.index` and its journal; rebuild by listing when the index is missing or
    /// unreadable.
    pub async fn load(backend: &dyn Backend, store: &str) -> Result<Self, DatastoreError> {
        let known = KnownChunks {
            enabled: true,
            ..Self::disabled()
        };
        let base = match backend.get(KNOWN_INDEX).await {
            Ok(data) => match decode(KNOWN_INDEX, &data) {
                Ok(digests) => Some(digests),
                Err(e) => {
                    tracing::warn!("datastore '{store}': {e}; rebuilding it");
                    None
                }
            },
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let Some(base) = base else {
            let listed = backend.list(CHUNK_PREFIX, None).await?;
            let rebuilt: HashSet<Digest> = listed
                .objects
                .iter()
                .filter_map(|obj| match parse_chunk_key(&obj.key) {
                    Some(ChunkKey::Chunk(d)) => Some(d),
                    _ => None,
                })
                .collect();
            tracing::info!(
                "datastore '{store}': rebuilt the known-chunk index from a listing ({} chunks)",
                rebuilt.len()
            );
            *lock_write(&known.set) = rebuilt;
            // Old journal objects are folded into the new full index.
            let deltas = backend.list(KNOWN_DELTA_PREFIX, None).await?;
            known.persisted.lock().await.deltas =
                deltas.objects.into_iter().map(|o| o.key).collect();
            known.write_full(backend, &HashSet::new()).await?;
            return Ok(known);
        };
        let mut set: HashSet<Digest> = base.into_iter().collect();
        let deltas = backend.list(KNOWN_DELTA_PREFIX, None).await?;
        let mut state = Persisted::default();
        for obj in deltas.objects {
            let seq = obj
                .key
                .strip_prefix(KNOWN_DELTA_PREFIX)
                .and_then(|s| u64::from_str_radix(s, 16).ok());
            let Some(seq) = seq else { continue };
            match backend.get(&obj.key).await {
                Ok(data) => match decode_delta(&obj.key, &data)? {
                    (true, added) => set.extend(added),
                    (false, removed) => {
                        for d in &removed {
                            set.remove(d);
                        }
                    }
                },
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            }
            state.next_seq = state.next_seq.max(seq + 1);
            state.deltas.push(obj.key);
        }
        tracing::info!(
            "datastore '{store}': {} known chunks loaded ({} journal objects)",
            set.len(),
            state.deltas.len()
        );
        *lock_write(&known.set) = set;
        *known.persisted.lock().await = state;
        Ok(known)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the chunk is known to be stored.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.enabled && lock_read(&self.set).contains(digest)
    }

    /// Number of known chunks.
    pub fn len(&self) -> usize {
        lock_read(&self.set).len()
    }

    /// A chunk was just stored (or found stored): remember it and journal it.
    pub fn insert(&self, digest: &Digest) {
        if !self.enabled {
            return;
        }
        if lock_write(&self.set).insert(*digest) {
            lock_std(&self.pending).push(*digest);
        }
    }

    /// GC is about to delete the chunk (caller holds the exclusive chunk lock).
    pub fn remove(&self, digest: &Digest) {
        lock_write(&self.set).remove(digest);
        lock_std(&self.recent).remove(digest);
    }

    /// A backup reused the chunk now (the in-memory equivalent of touching it).
    pub fn note_use(&self, digest: &Digest) {
        lock_std(&self.recent).insert(*digest, SystemTime::now());
    }

    /// When the chunk was last reused by this process.
    pub fn last_use(&self, digest: &Digest) -> Option<SystemTime> {
        lock_std(&self.recent).get(digest).copied()
    }

    /// Forget reuse times older than `before` (GC no longer needs them).
    pub fn prune_recent(&self, before: SystemTime) {
        lock_std(&self.recent).retain(|_, t| *t >= before);
    }

    /// Write the journal of chunks added since the last flush; fold the journal into a new
    /// full index when it grew long.
    pub async fn flush(&self, backend: &dyn Backend) -> Result<(), DatastoreError> {
        if !self.enabled {
            return Ok(());
        }
        let mut state = self.persisted.lock().await;
        let mut batch = std::mem::take(&mut *lock_std(&self.pending));
        if batch.is_empty() {
            return Ok(());
        }
        let key = format!("{KNOWN_DELTA_PREFIX}{:016x}", state.next_seq);
        if let Err(e) = backend
            .put(&key, encode(&mut batch), PutOptions::default())
            .await
        {
            // Keep them for the next attempt.
            lock_std(&self.pending).extend(batch);
            return Err(DatastoreError::Internal(format!(
                "writing the known-chunk journal '{key}' failed: {e}"
            )));
        }
        state.next_seq += 1;
        state.deltas.push(key);
        let fold = state.deltas.len() > MAX_DELTAS;
        drop(state);
        if fold {
            self.write_full(backend, &HashSet::new()).await?;
        }
        Ok(())
    }

    /// Forget `digests` and journal that they are gone before the caller deletes them, so a
    /// crash right after the delete cannot bring them back as "stored".
    pub async fn journal_removal(
        &self,
        backend: &dyn Backend,
        digests: &[Digest],
    ) -> Result<(), DatastoreError> {
        if !self.enabled || digests.is_empty() {
            return Ok(());
        }
        let mut state = self.persisted.lock().await;
        {
            let mut set = lock_write(&self.set);
            for d in digests {
                set.remove(d);
            }
        }
        // A pending addition written after this record would undo it.
        let gone: HashSet<&Digest> = digests.iter().collect();
        lock_std(&self.pending).retain(|d| !gone.contains(d));
        let key = format!("{KNOWN_DELTA_PREFIX}{:016x}", state.next_seq);
        let mut list = digests.to_vec();
        backend
            .put(
                &key,
                encode_with(REMOVED_MAGIC, &mut list),
                PutOptions::default(),
            )
            .await
            .map_err(|e| {
                DatastoreError::Internal(format!(
                    "writing the known-chunk journal '{key}' failed: {e}"
                ))
            })?;
        state.next_seq += 1;
        state.deltas.push(key);
        Ok(())
    }

    /// Persist the whole set minus `exclude` as `.chunks/.index`, then drop the journal.
    pub async fn write_full(
        &self,
        backend: &dyn Backend,
        exclude: &HashSet<Digest>,
    ) -> Result<(), DatastoreError> {
        if !self.enabled {
            return Ok(());
        }
        let mut state = self.persisted.lock().await;
        let mut all: Vec<Digest> = lock_read(&self.set)
            .iter()
            .filter(|d| !exclude.contains(*d))
            .copied()
            .collect();
        lock_std(&self.pending).clear();
        backend
            .put(KNOWN_INDEX, encode(&mut all), PutOptions::default())
            .await?;
        let old = std::mem::take(&mut state.deltas);
        backend.delete_many(&old).await?;
        Ok(())
    }
}

fn lock_read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn lock_write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_sorted() {
        let mut ds = vec![[3u8; 32], [1u8; 32], [3u8; 32]];
        let data = encode(&mut ds);
        assert_eq!(data.len(), 8 + 64);
        assert_eq!(decode("k", &data).unwrap(), vec![[1u8; 32], [3u8; 32]]);
        assert!(decode("k", b"PBSCKIX1abc").is_err());
        assert!(decode("k", b"nonsense").is_err());
    }
}
