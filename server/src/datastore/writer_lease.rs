//! The single-writer lease of a datastore (DESIGN decision 3): a `.lease` object holding the
//! holder's id and an expiry, created only-if-absent, renewed by a background task.
//!
//! A server that finds a live lease of another holder refuses to open the datastore and names
//! the holder. The same holder (the same server restarting on its data dir) takes its lease
//! back at once; an expired lease (a crashed server) is taken over. If renewal finds another
//! holder, the datastore is fenced: every later write is refused. In-memory caches (known
//! chunks, listings) and GC are safe only because of this lease.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::backend::{Backend, PutOptions, PutOutcome};

use super::{lock_std, Datastore, DatastoreError};

/// Key of the lease object (outside every snapshot, group and the chunk store).
pub const LEASE: &str = ".lease";
/// How long a lease stays valid without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(120);
/// Renewal interval (well inside the TTL, so two missed renewals are survived).
pub const LEASE_RENEW: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LeaseRecord {
    holder: String,
    /// Unix seconds.
    expires: i64,
}

/// Lease state of one open datastore.
#[derive(Debug)]
pub(crate) struct WriterLease {
    holder: String,
    fenced: AtomicBool,
    lost_to: Mutex<Option<String>>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn record_for(holder: &str) -> Result<Bytes, DatastoreError> {
    let record = LeaseRecord {
        holder: holder.to_string(),
        expires: now_secs() + LEASE_TTL.as_secs() as i64,
    };
    serde_json::to_vec(&record)
        .map(Bytes::from)
        .map_err(|e| DatastoreError::Internal(format!("serialising {LEASE}: {e}")))
}

async fn read_record(backend: &dyn Backend) -> Result<Option<LeaseRecord>, DatastoreError> {
    match backend.get(LEASE).await {
        Ok(data) => Ok(serde_json::from_slice(&data).ok().or(Some(LeaseRecord {
            holder: "<unreadable lease>".into(),
            expires: 0,
        }))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl WriterLease {
    /// Take the lease of the datastore `store` for `holder`, or say who has it.
    pub async fn acquire(
        backend: &dyn Backend,
        store: &str,
        holder: &str,
    ) -> Result<Self, DatastoreError> {
        let create = PutOptions {
            if_absent: true,
            sha256: None,
        };
        for _ in 0..3 {
            if backend
                .put(LEASE, record_for(holder)?, create.clone())
                .await?
                == PutOutcome::Written
            {
                return Ok(Self::held(holder));
            }
            let Some(found) = read_record(backend).await? else {
                continue; // released meanwhile: try again
            };
            if found.holder == holder {
                // Our own lease (a restart, or a retried create whose answer was lost).
                backend
                    .put(LEASE, record_for(holder)?, PutOptions::default())
                    .await?;
                return Ok(Self::held(holder));
            }
            if found.expires > now_secs() {
                return Err(DatastoreError::Busy(format!(
                    "datastore '{store}' is in use by another server: its lease is held by \
                     '{}' for {} more seconds; refusing to write (stop that server, or wait \
                     for its lease to expire)",
                    found.holder,
                    found.expires - now_secs()
                )));
            }
            tracing::warn!(
                "datastore '{store}': taking over the expired lease of '{}'",
                found.holder
            );
            backend
                .put(LEASE, record_for(holder)?, PutOptions::default())
                .await?;
            // A server taking over at the same moment: the later write wins; check who.
            tokio::time::sleep(Duration::from_millis(500)).await;
            match read_record(backend).await? {
                Some(r) if r.holder == holder => return Ok(Self::held(holder)),
                Some(r) => {
                    return Err(DatastoreError::Busy(format!(
                        "datastore '{store}' was taken over by '{}' at the same time",
                        r.holder
                    )))
                }
                None => continue,
            }
        }
        Err(DatastoreError::Busy(format!(
            "datastore '{store}': unable to take the writer lease (it keeps changing)"
        )))
    }

    fn held(holder: &str) -> Self {
        WriterLease {
            holder: holder.to_string(),
            fenced: AtomicBool::new(false),
            lost_to: Mutex::new(None),
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Refuse writes once the lease was lost.
    pub fn check(&self, store: &str) -> Result<(), DatastoreError> {
        if !self.fenced.load(Ordering::Acquire) {
            return Ok(());
        }
        let other = lock_std(&self.lost_to).clone().unwrap_or_default();
        Err(DatastoreError::Busy(format!(
            "datastore '{store}': this server lost its writer lease to '{other}'; refusing to write"
        )))
    }

    /// One renewal: re-read the lease; if it is still ours, extend it, else fence.
    pub async fn renew(&self, backend: &dyn Backend, store: &str) -> Result<(), DatastoreError> {
        if self.fenced.load(Ordering::Acquire) {
            return Ok(());
        }
        match read_record(backend).await? {
            Some(r) if r.holder != self.holder => {
                tracing::error!(
                    "datastore '{store}': writer lease now held by '{}'; refusing further writes",
                    r.holder
                );
                *lock_std(&self.lost_to) = Some(r.holder);
                self.fenced.store(true, Ordering::Release);
                Ok(())
            }
            _ => {
                backend
                    .put(LEASE, record_for(&self.holder)?, PutOptions::default())
                    .await?;
                Ok(())
            }
        }
    }

    /// Give the lease up (clean shutdown): delete it if it is still ours.
    pub async fn release(&self, backend: &dyn Backend) -> Result<(), DatastoreError> {
        if let Some(r) = read_record(backend).await? {
            if r.holder == self.holder {
                backend.delete(LEASE).await?;
            }
        }
        self.fenced.store(true, Ordering::Release);
        *lock_std(&self.lost_to) = Some("(released)".into());
        Ok(())
    }
}

/// Background task: renew the lease and flush the known-chunk journal until the datastore is
/// dropped.
pub(crate) fn spawn_maintenance(ds: Weak<Datastore>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let mut tick = tokio::time::interval(LEASE_RENEW);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(ds) = ds.upgrade() else { return };
            if let Err(e) = ds.writer.renew(ds.backend.as_ref(), &ds.name).await {
                tracing::warn!("datastore '{}': lease renewal failed: {e}", ds.name);
            }
            if let Err(e) = ds.known.flush(ds.backend.as_ref()).await {
                tracing::warn!("datastore '{}': {e}", ds.name);
            }
        }
    });
}
