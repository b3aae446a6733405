//! Known chunk digests (docs/design.md#known-chunk-set): deduplication without a request per known
//! chunk.
//!
//! On object storage the set of stored digests is persisted as a compact object,
//! `.chunks/.index` (magic + sorted 32-byte digests), plus small journal objects
//! `.chunks/.index-delta/<seq>` written as new chunks arrive (at every finished backup and
//! periodically), or naming chunks taken out of service (verify's move of a bad chunk, GC),
//! applied in sequence order. Only when `.chunks/.index` is absent is the chunk store listed to
//! rebuild it.
//!
//! In this process the set is layered so that its size costs no heap: the base is a local,
//! memory-mapped copy of `.chunks/.index` ([`DigestFile`]), kept in the cache directory the
//! datastore was opened with and mapped again on restart when it still copies the stored object
//! (else downloaded); additions and removals since sit in small in-memory sets. Past
//! [`MAX_UNMERGED`] of them, or [`MAX_DELTAS`] journal objects, they are merged into a new base
//! file by a streaming merge, which is uploaded as the new `.chunks/.index`: the local base and
//! the persisted index are always the same bytes. A merge freezes the changes it folds in and
//! lets lookups and inserts go on meanwhile, so it never runs under the exclusive chunk lock
//! (at ten million digests it reads and writes 320 MB).
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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use bytes::Bytes;

use crate::backend::{Backend, ObjectMeta, PutOptions};
use crate::format::Digest;

use super::super::layout::{parse_chunk_key, ChunkKey, CHUNK_PREFIX};
use super::super::{lock_std, DatastoreError};
use super::known_file::{blocking, DigestFile, DigestFileWriter, Origin, INDEX_MAGIC};

/// Full persisted digest set.
pub const KNOWN_INDEX: &str = ".chunks/.index";

/// Bytes of `.chunks/.index` fetched per request when it is downloaded (a first open, or a
/// local copy that is out of date): 256 Ki digests.
const DOWNLOAD_PIECE: u64 = 8 * 1024 * 1024;
/// Journal of digests added since the full index was written.
pub const KNOWN_DELTA_PREFIX: &str = ".chunks/.index-delta/";
const MAGIC: &[u8; 8] = INDEX_MAGIC;
/// Magic of a journal object listing digests that are no longer stored.
const REMOVED_MAGIC: &[u8; 8] = b"PBSCKRM1";
/// Journal objects before they are folded into a new full index.
const MAX_DELTAS: usize = 64;
/// Additions plus removals held in memory before they are merged into a new base.
const MAX_UNMERGED: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Persisted {
    next_seq: u64,
    deltas: Vec<String>,
}

/// Where the base came from at open (tests check that a restart maps the local file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BaseSource {
    /// No set (local filesystem).
    None,
    /// The local file still copied `.chunks/.index`.
    LocalFile,
    /// `.chunks/.index` was downloaded into a new local file.
    Downloaded,
    /// `.chunks/.index` was missing or unreadable: rebuilt from a listing.
    Rebuilt,
}

/// Additions and removals being merged into a new base; lookups still see them.
#[derive(Debug, Default)]
struct Frozen {
    added: HashSet<Digest>,
    removed: HashSet<Digest>,
}

/// The set as layers, newest first: `added`/`removed`, then `frozen` (during a merge), then
/// `base`. `added` never holds a digest the lower layers have; `removed` only ones they have.
#[derive(Debug, Default)]
struct Layers {
    base: Option<Arc<DigestFile>>,
    frozen: Option<Frozen>,
    added: HashSet<Digest>,
    removed: HashSet<Digest>,
    len: usize,
}

impl Layers {
    fn below(&self, d: &Digest) -> bool {
        if let Some(f) = &self.frozen {
            if f.added.contains(d) {
                return true;
            }
            if f.removed.contains(d) {
                return false;
            }
        }
        self.base.as_ref().is_some_and(|b| b.contains(d))
    }

    fn contains(&self, d: &Digest) -> bool {
        self.added.contains(d) || (!self.removed.contains(d) && self.below(d))
    }

    fn insert(&mut self, d: &Digest) -> bool {
        if self.contains(d) {
            return false;
        }
        if !self.removed.remove(d) {
            self.added.insert(*d);
        }
        self.len += 1;
        true
    }

    fn remove(&mut self, d: &Digest) -> bool {
        if !self.contains(d) {
            return false;
        }
        if !self.added.remove(d) {
            self.removed.insert(*d);
        }
        self.len -= 1;
        true
    }

    fn unmerged(&self) -> usize {
        self.added.len() + self.removed.len()
    }

    /// Start a merge: the current additions and removals, sorted, for the new base.
    fn freeze(&mut self) -> (Option<Arc<DigestFile>>, Vec<Digest>, Vec<Digest>) {
        let frozen = Frozen {
            added: std::mem::take(&mut self.added),
            removed: std::mem::take(&mut self.removed),
        };
        let mut added: Vec<Digest> = frozen.added.iter().copied().collect();
        added.sort_unstable();
        let mut removed: Vec<Digest> = frozen.removed.iter().copied().collect();
        removed.sort_unstable();
        self.frozen = Some(frozen);
        (self.base.clone(), added, removed)
    }

    /// The merge is stored: `base` is the old base with the frozen layer applied.
    fn finish(&mut self, base: Arc<DigestFile>) {
        self.base = Some(base);
        self.frozen = None;
    }

    /// The merge failed: fold the frozen layer back under the newer changes.
    fn unfreeze(&mut self) {
        let Some(f) = self.frozen.take() else { return };
        for d in f.added {
            // removed while frozen: both cancel
            if !self.removed.remove(&d) {
                self.added.insert(d);
            }
        }
        for d in f.removed {
            // added again while frozen: present in the base after all
            if !self.added.remove(&d) {
                self.removed.insert(d);
            }
        }
    }
}

/// Where base files are written, and the file a restart looks for.
#[derive(Debug)]
struct BaseFiles {
    dir: PathBuf,
    /// `None`: files stay in the temp dir under temporary names, removed when unused.
    dest: Option<PathBuf>,
}

impl BaseFiles {
    fn new(store: &str, cache_dir: Option<&Path>) -> Self {
        if let Some(dir) = cache_dir {
            match std::fs::create_dir_all(dir) {
                Ok(()) => {
                    let name: String = store
                        .chars()
                        .map(
                            |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                                true => c,
                                false => '_',
                            },
                        )
                        .collect();
                    return BaseFiles {
                        dir: dir.to_path_buf(),
                        dest: Some(dir.join(format!("{name}.known"))),
                    };
                }
                Err(e) => tracing::warn!(
                    "datastore '{store}': cannot create the known-chunk cache dir '{}' ({e}); \
                     using the temp dir",
                    dir.display()
                ),
            }
        }
        BaseFiles {
            dir: std::env::temp_dir(),
            dest: None,
        }
    }
}

/// The digest set and its persistence.
#[derive(Debug)]
pub(crate) struct KnownChunks {
    /// Off for the local filesystem, where a stat is as cheap as a set lookup.
    enabled: bool,
    layers: RwLock<Layers>,
    pending: Mutex<Vec<Digest>>,
    recent: Mutex<HashMap<Digest, SystemTime>>,
    persisted: tokio::sync::Mutex<Persisted>,
    files: BaseFiles,
    source: BaseSource,
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

/// A journal object: `(added, digests)`.
fn decode_delta(key: &str, data: &[u8]) -> Result<(bool, Vec<Digest>), DatastoreError> {
    let (added, body) = match data.strip_prefix(REMOVED_MAGIC.as_slice()) {
        Some(body) => (false, Some(body)),
        None => (true, data.strip_prefix(MAGIC.as_slice())),
    };
    let body = body
        .filter(|b| b.len() % 32 == 0)
        .ok_or_else(|| DatastoreError::Internal(format!("'{key}' is not a known-chunk index")))?;
    let digests = body
        .chunks_exact(32)
        .map(|c| {
            let mut d = [0u8; 32];
            d.copy_from_slice(c);
            d
        })
        .collect();
    Ok((added, digests))
}

fn origin_of(meta: &ObjectMeta) -> Origin {
    Origin {
        size: meta.size,
        modified: meta.modified,
    }
}

impl KnownChunks {
    /// No persisted set (local filesystem); only the reuse times are kept.
    pub fn disabled() -> Self {
        KnownChunks {
            enabled: false,
            layers: RwLock::new(Layers::default()),
            pending: Mutex::new(Vec::new()),
            recent: Mutex::new(HashMap::new()),
            persisted: tokio::sync::Mutex::new(Persisted::default()),
            files: BaseFiles::new("", None),
            source: BaseSource::None,
        }
    }

    /// Map the local copy of `.chunks/.index` from `cache_dir` (the temp dir without one) if it
    /// still copies the stored object, else download it; apply the journal; rebuild by listing
    /// when the index is missing or unreadable.
    pub async fn load(
        backend: &dyn Backend,
        store: &str,
        cache_dir: Option<&Path>,
    ) -> Result<Self, DatastoreError> {
        let mut known = KnownChunks {
            enabled: true,
            files: BaseFiles::new(store, cache_dir),
            ..Self::disabled()
        };
        let base = match backend.head(KNOWN_INDEX).await? {
            Some(meta) => known.open_base(backend, store, &meta).await?,
            None => None,
        };
        let Some((base, source)) = base else {
            known.source = BaseSource::Rebuilt;
            let listed = backend.list(CHUNK_PREFIX, None).await?;
            {
                let mut layers = lock_write(&known.layers);
                for obj in &listed.objects {
                    if let Some(ChunkKey::Chunk(d)) = parse_chunk_key(&obj.key) {
                        layers.insert(&d);
                    }
                }
                tracing::info!(
                    "datastore '{store}': rebuilt the known-chunk index from a listing ({} chunks)",
                    layers.len
                );
            }
            drop(listed);
            // Old journal objects are folded into the new full index.
            let deltas = backend.list(KNOWN_DELTA_PREFIX, None).await?;
            known.persisted.lock().await.deltas =
                deltas.objects.into_iter().map(|o| o.key).collect();
            known.write_full(backend, &HashSet::new()).await?;
            return Ok(known);
        };
        known.source = source;
        let mut layers = Layers {
            len: base.len(),
            base: Some(Arc::new(base)),
            ..Layers::default()
        };
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
                    (true, added) => added.iter().for_each(|d| {
                        layers.insert(d);
                    }),
                    (false, removed) => removed.iter().for_each(|d| {
                        layers.remove(d);
                    }),
                },
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            }
            state.next_seq = state.next_seq.max(seq + 1);
            state.deltas.push(obj.key);
        }
        tracing::info!(
            "datastore '{store}': {} known chunks loaded ({:?} base, {} journal objects)",
            layers.len,
            known.source,
            state.deltas.len()
        );
        *lock_write(&known.layers) = layers;
        *known.persisted.lock().await = state;
        Ok(known)
    }

    /// The local file if it copies the stored `.chunks/.index` (`meta`), else a new copy;
    /// `None` when the stored index is unreadable.
    async fn open_base(
        &self,
        backend: &dyn Backend,
        store: &str,
        meta: &ObjectMeta,
    ) -> Result<Option<(DigestFile, BaseSource)>, DatastoreError> {
        let origin = origin_of(meta);
        if let Some(dest) = self.files.dest.clone() {
            let shown = dest.display().to_string();
            match blocking(move || DigestFile::open(&dest)).await {
                Ok(Some(file)) if file.origin() == origin => {
                    return Ok(Some((file, BaseSource::LocalFile)))
                }
                Ok(Some(_)) => tracing::info!(
                    "datastore '{store}': '{shown}' copies an older {KNOWN_INDEX}; downloading it"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!("datastore '{store}': {e}; downloading {KNOWN_INDEX}"),
            }
        }
        let download = DigestFileWriter::download(
            backend,
            KNOWN_INDEX,
            meta.size,
            DOWNLOAD_PIECE,
            &self.files.dir,
        );
        let unsealed = match download.await {
            Ok(unsealed) => unsealed,
            Err(DatastoreError::Backend(e)) if e.is_not_found() => return Ok(None),
            Err(e @ DatastoreError::Backend(_)) => return Err(e),
            Err(e) => {
                tracing::warn!("datastore '{store}': {e}; rebuilding it");
                return Ok(None);
            }
        };
        let dest = self.files.dest.clone();
        let file = blocking(move || unsealed.seal(origin, dest.as_deref())).await?;
        Ok(Some((file, BaseSource::Downloaded)))
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Where the base came from at open.
    #[cfg(test)]
    pub(crate) fn source(&self) -> BaseSource {
        self.source
    }

    /// Path of the mapped base file.
    #[cfg(test)]
    pub(crate) fn base_path(&self) -> Option<PathBuf> {
        let layers = lock_read(&self.layers);
        layers.base.as_ref().map(|b| b.path().to_path_buf())
    }

    /// Whether the chunk is known to be stored.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.enabled && lock_read(&self.layers).contains(digest)
    }

    /// Number of known chunks.
    pub fn len(&self) -> usize {
        lock_read(&self.layers).len
    }

    /// A chunk was just stored (or found stored): remember it and journal it.
    pub fn insert(&self, digest: &Digest) {
        if !self.enabled {
            return;
        }
        if lock_write(&self.layers).insert(digest) {
            lock_std(&self.pending).push(*digest);
        }
    }

    /// GC is about to delete the chunk (caller holds the exclusive chunk lock).
    pub fn remove(&self, digest: &Digest) {
        lock_write(&self.layers).remove(digest);
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

    fn merge_due(&self, state: &Persisted) -> bool {
        state.deltas.len() > MAX_DELTAS || lock_read(&self.layers).unmerged() > MAX_UNMERGED
    }

    /// Count the journal object just written as `key`.
    fn journal_written(state: &mut Persisted, key: String) {
        state.next_seq += 1;
        state.deltas.push(key);
    }

    /// Once the journal or the in-memory changes grew long, merge them into a new base and
    /// full index. Lookups and inserts go on during the merge (it works on a frozen layer),
    /// so callers run it while they hold no chunk lock.
    pub async fn merge_if_due(&self, backend: &dyn Backend) -> Result<(), DatastoreError> {
        if !self.enabled {
            return Ok(());
        }
        let due = self.merge_due(&*self.persisted.lock().await);
        if due {
            self.write_full(backend, &HashSet::new()).await?;
        }
        Ok(())
    }

    /// Write the journal of chunks added since the last flush; merge the changes into a new
    /// base and full index when the journal or the in-memory changes grew long.
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
            .put(&key, encode_with(MAGIC, &mut batch), PutOptions::default())
            .await
        {
            // Keep them for the next attempt.
            lock_std(&self.pending).extend(batch);
            return Err(DatastoreError::Internal(format!(
                "writing the known-chunk journal '{key}' failed: {e}"
            )));
        }
        Self::journal_written(&mut state, key);
        drop(state);
        self.merge_if_due(backend).await
    }

    /// Forget `digests` and journal that they are gone before the caller deletes them, so a
    /// crash right after the delete cannot bring them back as "stored". The caller holds the
    /// exclusive chunk lock, so this never merges (which would block every insert for the
    /// length of a merge): the caller runs [`Self::merge_if_due`] once it let go of the lock.
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
            let mut layers = lock_write(&self.layers);
            for d in digests {
                layers.remove(d);
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
        Self::journal_written(&mut state, key);
        Ok(())
    }

    /// Forget `exclude`, merge the changes held in memory into a new base file, store it as
    /// `.chunks/.index`, then drop the journal.
    pub async fn write_full(
        &self,
        backend: &dyn Backend,
        exclude: &HashSet<Digest>,
    ) -> Result<(), DatastoreError> {
        if !self.enabled {
            return Ok(());
        }
        let mut state = self.persisted.lock().await;
        let (base, added, removed) = {
            let mut layers = lock_write(&self.layers);
            for d in exclude {
                layers.remove(d);
            }
            layers.freeze()
        };
        // Everything pending is in the frozen layer, hence in the new index.
        let pending = std::mem::take(&mut *lock_std(&self.pending));
        match self.store_merge(backend, base, added, removed).await {
            Ok(file) => lock_write(&self.layers).finish(Arc::new(file)),
            Err(e) => {
                lock_write(&self.layers).unfreeze();
                lock_std(&self.pending).extend(pending);
                return Err(e);
            }
        }
        let old = std::mem::take(&mut state.deltas);
        backend.delete_many(&old).await?;
        Ok(())
    }

    /// Streaming merge into a new local file, uploaded as `.chunks/.index` from the mapping.
    async fn store_merge(
        &self,
        backend: &dyn Backend,
        base: Option<Arc<DigestFile>>,
        added: Vec<Digest>,
        removed: Vec<Digest>,
    ) -> Result<DigestFile, DatastoreError> {
        let dir = self.files.dir.clone();
        let unsealed =
            blocking(move || DigestFileWriter::merge(&dir, base.as_deref(), &added, &removed))
                .await?;
        let opts = PutOptions {
            sha256: Some(unsealed.sha256()),
            ..PutOptions::default()
        };
        backend.put(KNOWN_INDEX, unsealed.object(), opts).await?;
        let meta = backend.head(KNOWN_INDEX).await?.ok_or_else(|| {
            DatastoreError::Internal(format!("'{KNOWN_INDEX}' is missing right after its write"))
        })?;
        let origin = origin_of(&meta);
        let dest = self.files.dest.clone();
        blocking(move || unsealed.seal(origin, dest.as_deref())).await
    }
}

fn lock_read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn lock_write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[path = "known_tests.rs"]
mod tests;
