//! Fencing: every write and delete of a datastore goes through [`FencedBackend`], which checks
//! the writer lease right before it and counts the request while it runs.
//!
//! So GC's delete batches, forget, prune, group and namespace removal, verify's move of a bad
//! chunk, backups and imports all stop the moment this server lost its lease or could not
//! renew it in time, without each of them having to remember a check. Closing a datastore
//! first refuses new writes, then waits for those in flight to end, and only then gives the
//! lease up: another server never writes while one of ours is still landing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::backend::{
    Backend, BackendCapabilities, BackendError, BackendHealth, Capacity, ListResult,
    ObjectChecksum, ObjectMeta, PutOptions, PutOutcome, RequestCounts,
};

use super::writer_lease::WriterLease;
use super::DatastoreError;

/// Writes in flight and whether new ones are still admitted.
#[derive(Debug, Default)]
pub(crate) struct WriteGate {
    closing: AtomicBool,
    in_flight: AtomicU64,
    idle: tokio::sync::Notify,
}

/// One admitted write; ends it on drop.
struct Admitted<'a>(&'a WriteGate);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl WriteGate {
    /// Refuse new writes from now on and wait (at most `limit`) for those in flight; true
    /// when none is left.
    pub async fn close(&self, limit: Duration) -> bool {
        self.closing.store(true, Ordering::SeqCst);
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}

/// The check an operation makes before its first write, so that it is refused with a clear
/// error before it starts rather than by the fence halfway through: refused once the
/// datastore is closing, and while this server does not hold (or could not renew) the writer
/// lease. Each part of the datastore that writes keeps a clone.
#[derive(Clone, Debug)]
pub(crate) struct WriteCheck {
    store: String,
    gate: Arc<WriteGate>,
    lease: Arc<WriterLease>,
}

impl WriteCheck {
    pub fn new(store: &str, gate: Arc<WriteGate>, lease: Arc<WriterLease>) -> Self {
        Self {
            store: store.to_string(),
            gate,
            lease,
        }
    }

    pub fn check(&self) -> Result<(), DatastoreError> {
        if self.gate.is_closing() {
            return Err(DatastoreError::Busy(format!(
                "datastore '{}' is closing; refusing to write",
                self.store
            )));
        }
        self.lease.check().map_err(DatastoreError::Busy)
    }
}

/// A backend that refuses writes unless this server holds the datastore's writer lease.
pub(crate) struct FencedBackend {
    inner: Arc<dyn Backend>,
    lease: Arc<WriterLease>,
    gate: Arc<WriteGate>,
}

impl FencedBackend {
    pub fn new(inner: Arc<dyn Backend>, lease: Arc<WriterLease>, gate: Arc<WriteGate>) -> Self {
        Self { inner, lease, gate }
    }

    fn admit(&self, key: &str) -> Result<Admitted<'_>, BackendError> {
        // Counted before the checks, so a close that saw no write in flight never misses one.
        self.gate.in_flight.fetch_add(1, Ordering::SeqCst);
        let admitted = Admitted(&self.gate);
        if self.gate.is_closing() {
            return Err(BackendError::Fenced {
                key: key.to_string(),
                reason: "the datastore is closing".to_string(),
            });
        }
        self.lease.check().map_err(|reason| BackendError::Fenced {
            key: key.to_string(),
            reason,
        })?;
        Ok(admitted)
    }
}

#[async_trait::async_trait]
impl Backend for FencedBackend {
    fn capabilities(&self) -> BackendCapabilities {
        self.inner.capabilities()
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        opts: PutOptions,
    ) -> Result<PutOutcome, BackendError> {
        let _w = self.admit(key)?;
        self.inner.put(key, data, opts).await
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
        self.inner.list(prefix, delimiter).await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let _w = self.admit(key)?;
        self.inner.delete(key).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        let first = keys.first().map(String::as_str).unwrap_or("<none>");
        let _w = self.admit(first)?;
        self.inner.delete_many(keys).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, BackendError> {
        let _w = self.admit(prefix)?;
        self.inner.delete_prefix(prefix).await
    }

    async fn touch(&self, key: &str) -> Result<(), BackendError> {
        let _w = self.admit(key)?;
        self.inner.touch(key).await
    }

    async fn remove_stale_temp_files(&self, before: SystemTime) -> Result<u64, BackendError> {
        let _w = self.admit("<temp files>")?;
        self.inner.remove_stale_temp_files(before).await
    }

    async fn capacity(&self) -> Result<Option<Capacity>, BackendError> {
        self.inner.capacity().await
    }

    async fn stored_sha256(&self, key: &str) -> Result<Option<ObjectChecksum>, BackendError> {
        self.inner.stored_sha256(key).await
    }

    fn request_counts(&self) -> Option<RequestCounts> {
        self.inner.request_counts()
    }

    fn health(&self) -> Option<BackendHealth> {
        self.inner.health()
    }

    fn object_lock(&self) -> Option<&dyn crate::backend::lock::ObjectLock> {
        self.inner.object_lock()
    }
}
