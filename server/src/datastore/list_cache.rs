//! Listings served from memory: snapshot, group and namespace listings do not send a bucket
//! LIST per API request (docs/design.md#single-writer-lease makes this process the only writer).
//!
//! [`CachedBackend`] wraps the datastore's backend. Listings outside the chunk store are
//! cached by (prefix, delimiter); every write or delete through the wrapper drops the cached
//! listings it could change. A generation counter keeps a listing that raced a write from
//! being cached. Chunk-store listings (GC, index rebuild) always go to the backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::backend::{
    Backend, BackendCapabilities, BackendError, Capacity, ListResult, ObjectMeta, PutOptions,
    PutOutcome, RequestCounts,
};

use super::layout::CHUNK_PREFIX;
use super::lock_std;

/// Most cached listings before the cache starts over (bounds memory on huge stores).
const MAX_ENTRIES: usize = 100_000;

/// A backend whose non-chunk listings are cached.
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    entries: Mutex<HashMap<(String, Option<char>), ListResult>>,
    generation: AtomicU64,
}

impl CachedBackend {
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        CachedBackend {
            inner,
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// The wrapped backend (for backend-specific calls such as request counters).
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    /// Forget every cached listing that could contain `key`.
    fn invalidate_key(&self, key: &str) {
        if key.starts_with(CHUNK_PREFIX) {
            return;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        lock_std(&self.entries).retain(|(prefix, _), _| !key.starts_with(prefix.as_str()));
    }

    /// Forget listings overlapping a whole removed prefix.
    fn invalidate_prefix(&self, removed: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        lock_std(&self.entries).retain(|(prefix, _), _| {
            !(removed.starts_with(prefix.as_str()) || prefix.starts_with(removed))
        });
    }

    /// Drop everything (e.g. after an out-of-band change).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        lock_std(&self.entries).clear();
    }
}

#[async_trait::async_trait]
impl Backend for CachedBackend {
    fn capabilities(&self) -> BackendCapabilities {
        self.inner.capabilities()
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        opts: PutOptions,
    ) -> Result<PutOutcome, BackendError> {
        let result = self.inner.put(key, data, opts).await;
        self.invalidate_key(key);
        result
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, BackendError> {
        self.inner.get_range(key, offset, len).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, BackendError> {
        self.inner.head(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<char>,
    ) -> Result<ListResult, BackendError> {
        if prefix.starts_with(CHUNK_PREFIX) {
            return self.inner.list(prefix, delimiter).await;
        }
        let cache_key = (prefix.to_string(), delimiter);
        if let Some(hit) = lock_std(&self.entries).get(&cache_key) {
            return Ok(hit.clone());
        }
        let before = self.generation.load(Ordering::Acquire);
        let listed = self.inner.list(prefix, delimiter).await?;
        let mut entries = lock_std(&self.entries);
        if self.generation.load(Ordering::Acquire) == before {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(cache_key, listed.clone());
        }
        Ok(listed)
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let result = self.inner.delete(key).await;
        self.invalidate_key(key);
        result
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        let result = self.inner.delete_many(keys).await;
        for key in keys {
            self.invalidate_key(key);
        }
        result
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, BackendError> {
        let result = self.inner.delete_prefix(prefix).await;
        self.invalidate_prefix(prefix);
        result
    }

    async fn touch(&self, key: &str) -> Result<(), BackendError> {
        self.inner.touch(key).await
    }

    async fn capacity(&self) -> Result<Option<Capacity>, BackendError> {
        self.inner.capacity().await
    }

    async fn stored_sha256(
        &self,
        key: &str,
    ) -> Result<Option<crate::backend::ObjectChecksum>, BackendError> {
        self.inner.stored_sha256(key).await
    }

    fn request_counts(&self) -> Option<RequestCounts> {
        self.inner.request_counts()
    }

    fn health(&self) -> Option<crate::backend::BackendHealth> {
        self.inner.health()
    }

    fn object_lock(&self) -> Option<&dyn crate::backend::lock::ObjectLock> {
        self.inner.object_lock()
    }
}
