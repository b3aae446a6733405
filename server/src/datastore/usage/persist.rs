//! The counters object `.usage/counters.json`: read at open, written when the counters
//! changed, at a clean shutdown, and for S3 request counts at most every
//! [`REQUESTS_PERSIST_INTERVAL`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, PutOptions, RequestCounts};

use super::super::{lock_std, DatastoreError};
use super::history::{day_of, total_requests, DailySample, UsageHistory};
use super::{Inner, StoreUsage};

/// Where the counters are persisted (a dot prefix: GC's index walk and PBS skip it).
pub const USAGE_OBJECT: &str = ".usage/counters.json";

/// Longest time S3 request counts stay unpersisted while nothing else changes.
pub const REQUESTS_PERSIST_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Persisted {
    version: u32,
    /// Written at a clean shutdown; anything else means "rescan at open".
    clean: bool,
    physical_bytes: u64,
    chunks: u64,
    /// Snapshot key prefix → logical bytes.
    snapshots: BTreeMap<String, u64>,
    /// S3 requests of all server runs up to this write (absent before they were persisted).
    #[serde(default)]
    s3_requests: RequestCounts,
    /// Daily samples for the usage charts (absent before they were kept).
    #[serde(default)]
    history: UsageHistory,
}

impl StoreUsage {
    /// Read the persisted counters; marks them for a rescan when missing, unreadable or not
    /// from a clean shutdown, and otherwise marks the object unclean until the next clean close.
    pub(in crate::datastore) async fn load(
        store: &str,
        backend: Arc<dyn Backend>,
    ) -> Result<Self, BackendError> {
        let mut inner = Inner::default();
        match backend.get(USAGE_OBJECT).await {
            Ok(data) => match serde_json::from_slice::<Persisted>(&data) {
                Ok(p) => {
                    inner.physical = p.physical_bytes;
                    inner.chunks = p.chunks;
                    inner.snapshots = p.snapshots;
                    inner.needs_rescan = !p.clean;
                    inner.requests_before = p.s3_requests;
                    inner.history = p.history.normalized();
                    if p.clean {
                        // A crash from here on must not leave "clean" counters behind.
                        let data = encode(&inner, false, &p.s3_requests);
                        backend
                            .put(USAGE_OBJECT, data, PutOptions::default())
                            .await?;
                    }
                }
                Err(e) => {
                    tracing::warn!("{USAGE_OBJECT} unreadable ({e}); usage will be rescanned");
                    inner.needs_rescan = true;
                }
            },
            Err(e) if e.is_not_found() => inner.needs_rescan = true,
            Err(e) => return Err(e),
        }
        Ok(Self {
            store: store.to_string(),
            backend,
            inner: Mutex::new(inner),
            meter: Mutex::new(None),
            store_limit: Mutex::new(None),
            capacity_limit: Mutex::new(None),
            rescan_waiting_or_running: AtomicBool::new(false),
            recount: tokio::sync::Mutex::new(()),
            recounts_done: AtomicU64::new(0),
            recount_queued: AtomicBool::new(false),
        })
    }

    /// Persist the counters if they changed (or always with `clean`, at shutdown); request
    /// counts alone are written at most every [`REQUESTS_PERSIST_INTERVAL`].
    pub async fn flush(&self, clean: bool) -> Result<(), DatastoreError> {
        self.flush_to(self.backend.as_ref(), clean).await
    }

    /// [`Self::flush`] through `backend` (`close` writes past the closed write gate).
    pub(in crate::datastore) async fn flush_to(
        &self,
        backend: &dyn Backend,
        clean: bool,
    ) -> Result<(), DatastoreError> {
        let this_run = self.backend.request_counts().unwrap_or_default();
        let data = {
            let mut inner = lock_std(&self.inner);
            let requests_due = this_run != inner.requests_written
                && inner
                    .requests_written_at
                    .is_none_or(|at| at.elapsed() >= REQUESTS_PERSIST_INTERVAL);
            if !inner.dirty && !clean && !requests_due {
                return Ok(());
            }
            inner.dirty = false;
            let mut totals = inner.requests_before;
            totals.add(&this_run);
            // Counters awaiting their first scan are not figures worth a chart.
            if !inner.needs_rescan {
                let sample = DailySample {
                    day: day_of(chrono::Utc::now().timestamp()),
                    physical_bytes: inner.physical,
                    logical_bytes: inner.snapshots.values().sum(),
                    chunks: inner.chunks,
                    snapshots: inner.snapshots.len() as u64,
                    s3_requests: total_requests(&totals),
                };
                inner.history.record(sample);
            }
            // Counters that still await their first scan are never declared clean.
            encode(&inner, clean && !inner.needs_rescan, &totals)
        };
        let result = backend.put(USAGE_OBJECT, data, PutOptions::default()).await;
        let mut inner = lock_std(&self.inner);
        match &result {
            Ok(_) => {
                // Read after the write, so that the write itself does not make the next
                // flush due.
                inner.requests_written = self.backend.request_counts().unwrap_or_default();
                inner.requests_written_at = Some(Instant::now());
            }
            Err(_) => inner.dirty = true,
        }
        drop(inner);
        result.map(|_| ()).map_err(DatastoreError::from)
    }
}

fn encode(inner: &Inner, clean: bool, s3_requests: &RequestCounts) -> Bytes {
    let p = Persisted {
        version: 1,
        clean,
        physical_bytes: inner.physical,
        chunks: inner.chunks,
        snapshots: inner.snapshots.clone(),
        s3_requests: *s3_requests,
        history: inner.history.clone(),
    };
    Bytes::from(serde_json::to_vec(&p).unwrap_or_default())
}
