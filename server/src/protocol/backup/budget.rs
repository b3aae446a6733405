//! Memory budget of backup sessions: what a client can make the server hold is a budget with
//! limits per session, per tenant and per server, never a consequence of numbers it sends.
//!
//! Three resources are counted:
//! * **buffered upload bytes**: a chunk, blob or parameter body is read into memory only after
//!   its bytes were reserved (the declared size, plus the decoded size of a compressed chunk).
//!   A request that finds the budget spent waits (its body stays unread, so HTTP/2 flow control
//!   holds the client back) for at most the configured wait, then is refused;
//! * **open index writers**: refused at once when spent;
//! * **index entries** held by open writers (appended entries, or the previous index's entries
//!   copied by `reuse-csum`): refused at once when spent; freed when the writer closes or the
//!   session ends.
//!
//! Every reservation is a guard that gives its share back on drop, so an aborted session
//! returns everything it held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::net::HttpError;

const MIB: u64 = 1024 * 1024;

/// The configured bounds (config section `[upload_limits]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadLimits {
    pub buffer_bytes_per_server: u64,
    pub buffer_bytes_per_tenant: u64,
    /// How long an upload waits for buffer budget before it is refused.
    pub buffer_wait: Duration,
    pub writers_per_server: u64,
    pub writers_per_tenant: u64,
    pub entries_per_session: u64,
    pub entries_per_tenant: u64,
    pub entries_per_server: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            buffer_bytes_per_server: 1024 * MIB,
            buffer_bytes_per_tenant: 256 * MIB,
            buffer_wait: Duration::from_secs(60),
            writers_per_server: 4096,
            writers_per_tenant: 512,
            // 2^22 entries = a 16 TiB image in 4 MiB chunks.
            entries_per_session: 1 << 22,
            entries_per_tenant: 1 << 23,
            entries_per_server: 1 << 24,
        }
    }
}

/// Why a reservation was refused; the message names the scope, the use and the limit.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "upload buffer budget of {scope} spent: {wanted} more bytes did not fit into \
         {limit} bytes within {waited:?} (uploads in progress hold the rest); retry later"
    )]
    Buffer {
        scope: String,
        wanted: u64,
        limit: u64,
        waited: Duration,
    },
    #[error("upload of {wanted} bytes exceeds the whole upload buffer budget of {scope} ({limit} bytes)")]
    BufferTooLarge {
        scope: String,
        wanted: u64,
        limit: u64,
    },
    #[error(
        "open index writer budget of {scope} spent: {used} of {limit} writers are open; \
         close writers or retry later"
    )]
    Writers {
        scope: String,
        used: u64,
        limit: u64,
    },
    #[error(
        "this backup session knows {known} chunks; {adding} more would pass its limit of \
         {limit} (upload_limits.index_entries_per_session)"
    )]
    KnownChunks { known: u64, adding: u64, limit: u64 },
    #[error(
        "index entry budget of {scope} spent: {used} of {limit} entries are held by open \
         index writers, {wanted} more refused"
    )]
    Entries {
        scope: String,
        used: u64,
        limit: u64,
        wanted: u64,
    },
}

impl From<BudgetError> for HttpError {
    fn from(err: BudgetError) -> Self {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
    }
}

/// A count with a limit (writers, entries).
#[derive(Debug)]
struct Counter {
    used: AtomicU64,
    limit: u64,
}

impl Counter {
    fn new(limit: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            limit,
        }
    }

    /// Takes `n` if they fit; otherwise returns what is in use.
    fn try_take(&self, n: u64) -> Result<(), u64> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .map(|_| ())
    }

    fn give(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// One scope (the server, a tenant, a session) and its three resources.
#[derive(Debug)]
struct Scope {
    label: String,
    buffer: Arc<Semaphore>,
    buffer_limit: u64,
    writers: Counter,
    entries: Counter,
}

impl Scope {
    fn new(label: String, buffer: u64, writers: u64, entries: u64) -> Arc<Self> {
        Arc::new(Self {
            label,
            buffer: Arc::new(Semaphore::new(
                usize::try_from(buffer)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            )),
            buffer_limit: buffer,
            writers: Counter::new(writers),
            entries: Counter::new(entries),
        })
    }
}

/// The server-wide budget; one per server, shared by every backup session.
#[derive(Debug)]
pub struct UploadBudget {
    limits: UploadLimits,
    server: Arc<Scope>,
    tenants: Mutex<HashMap<String, Arc<Scope>>>,
}

impl Default for UploadBudget {
    fn default() -> Self {
        Self::new(UploadLimits::default())
    }
}

impl UploadBudget {
    pub fn new(limits: UploadLimits) -> Self {
        let server = Scope::new(
            "the server".to_string(),
            limits.buffer_bytes_per_server,
            limits.writers_per_server,
            limits.entries_per_server,
        );
        Self {
            limits,
            server,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> &UploadLimits {
        &self.limits
    }

    /// The budget of one new backup session of `tenant`.
    pub fn session(&self, tenant: &str) -> SessionBudget {
        let tenant = self
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.to_string())
            .or_insert_with(|| {
                Scope::new(
                    format!("tenant '{tenant}'"),
                    self.limits.buffer_bytes_per_tenant,
                    self.limits.writers_per_tenant,
                    self.limits.entries_per_tenant,
                )
            })
            .clone();
        let session = Scope::new(
            "this backup session".to_string(),
            0,
            u64::MAX,
            self.limits.entries_per_session,
        );
        SessionBudget {
            scopes: [session, tenant, self.server.clone()],
            wait: self.limits.buffer_wait,
            known_chunk_limit: self.limits.entries_per_session,
        }
    }

    /// Bytes, writers and entries currently held server-wide (for tests and metrics).
    pub fn server_usage(&self) -> BudgetUsage {
        BudgetUsage {
            buffer_bytes: self
                .server
                .buffer_limit
                .saturating_sub(self.server.buffer.available_permits() as u64),
            writers: self.server.writers.used(),
            entries: self.server.entries.used(),
        }
    }
}

/// What a scope currently holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetUsage {
    pub buffer_bytes: u64,
    pub writers: u64,
    pub entries: u64,
}

/// The scopes one session charges: itself, its tenant, the server.
#[derive(Clone, Debug)]
pub struct SessionBudget {
    /// `[session, tenant, server]`; the session scope has no buffer or writer limit of its own.
    scopes: [Arc<Scope>; 3],
    wait: Duration,
    known_chunk_limit: u64,
}

impl SessionBudget {
    /// Reserves `bytes` of upload buffer in the tenant and the server scope, waiting up to the
    /// configured time for uploads in progress to free them.
    pub async fn buffer(&self, bytes: u64) -> Result<BufferPermit, BudgetError> {
        let mut permits = Vec::with_capacity(2);
        let deadline = tokio::time::Instant::now() + self.wait;
        // Always tenant before server, so two sessions never wait for each other in a circle.
        for scope in &self.scopes[1..] {
            if bytes > scope.buffer_limit {
                return Err(BudgetError::BufferTooLarge {
                    scope: scope.label.clone(),
                    wanted: bytes,
                    limit: scope.buffer_limit,
                });
            }
            let n = u32::try_from(bytes).map_err(|_| BudgetError::BufferTooLarge {
                scope: scope.label.clone(),
                wanted: bytes,
                limit: scope.buffer_limit,
            })?;
            let acquire = scope.buffer.clone().acquire_many_owned(n);
            match tokio::time::timeout_at(deadline, acquire).await {
                Ok(Ok(permit)) => permits.push(permit),
                // The semaphore is never closed; treat it like a spent budget.
                Ok(Err(_)) | Err(_) => {
                    return Err(BudgetError::Buffer {
                        scope: scope.label.clone(),
                        wanted: bytes,
                        limit: scope.buffer_limit,
                        waited: self.wait,
                    })
                }
            }
        }
        Ok(BufferPermit { _permits: permits })
    }

    /// Reserves one open index writer.
    pub fn writer(&self) -> Result<WriterSlot, BudgetError> {
        let scopes = &self.scopes[1..];
        for (i, scope) in scopes.iter().enumerate() {
            if let Err(used) = scope.writers.try_take(1) {
                for taken in &scopes[..i] {
                    taken.writers.give(1);
                }
                return Err(BudgetError::Writers {
                    scope: scope.label.clone(),
                    used,
                    limit: scope.writers.limit,
                });
            }
        }
        Ok(WriterSlot {
            scopes: scopes.to_vec(),
        })
    }

    /// Reserves `n` index entries in the session, tenant and server scopes.
    pub fn entries(&self, n: u64) -> Result<EntryCharge, BudgetError> {
        for (i, scope) in self.scopes.iter().enumerate() {
            if let Err(used) = scope.entries.try_take(n) {
                for taken in &self.scopes[..i] {
                    taken.entries.give(n);
                }
                return Err(BudgetError::Entries {
                    scope: scope.label.clone(),
                    used,
                    limit: scope.entries.limit,
                    wanted: n,
                });
            }
        }
        Ok(EntryCharge {
            scopes: self.scopes.to_vec(),
            n,
        })
    }

    /// An empty charge to collect entries into.
    pub fn no_entries(&self) -> EntryCharge {
        EntryCharge {
            scopes: self.scopes.to_vec(),
            n: 0,
        }
    }

    /// Refuses to learn more chunks once the session knows as many as it may hold entries
    /// (uploaded chunks and those of downloaded previous indexes).
    pub fn check_known_chunks(&self, known: usize, adding: usize) -> Result<(), BudgetError> {
        let total = (known as u64).saturating_add(adding as u64);
        if total > self.known_chunk_limit {
            return Err(BudgetError::KnownChunks {
                known: known as u64,
                adding: adding as u64,
                limit: self.known_chunk_limit,
            });
        }
        Ok(())
    }

    /// Entries this session holds now.
    pub fn session_entries(&self) -> u64 {
        self.scopes[0].entries.used()
    }
}

/// Upload buffer bytes held until dropped.
#[derive(Debug)]
pub struct BufferPermit {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// One open writer, given back on drop.
#[derive(Debug)]
pub struct WriterSlot {
    scopes: Vec<Arc<Scope>>,
}

impl Drop for WriterSlot {
    fn drop(&mut self) {
        for scope in &self.scopes {
            scope.writers.give(1);
        }
    }
}

/// Index entries held until dropped.
#[derive(Debug)]
pub struct EntryCharge {
    scopes: Vec<Arc<Scope>>,
    n: u64,
}

impl EntryCharge {
    /// Number of entries held.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Moves `n` entries of `other` into this charge (the rest of `other` is given back when
    /// it is dropped). Both must come from the same session.
    pub fn take_from(&mut self, other: &mut EntryCharge, n: u64) {
        let n = n.min(other.n);
        other.n -= n;
        self.n += n;
    }
}

impl Drop for EntryCharge {
    fn drop(&mut self) {
        if self.n > 0 {
            for scope in &self.scopes {
                scope.entries.give(self.n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> UploadLimits {
        UploadLimits {
            buffer_bytes_per_server: 100,
            buffer_bytes_per_tenant: 60,
            buffer_wait: Duration::from_millis(50),
            writers_per_server: 3,
            writers_per_tenant: 2,
            entries_per_session: 10,
            entries_per_tenant: 15,
            entries_per_server: 20,
        }
    }

    #[tokio::test]
    async fn buffer_waits_then_refuses_and_frees_on_drop() {
        let budget = UploadBudget::new(small());
        let a = budget.session("a");
        let b = budget.session("b");
        let held = a.buffer(60).await.unwrap();
        let err = a.buffer(1).await.unwrap_err().to_string();
        assert!(err.contains("tenant 'a'"), "{err}");
        // Another tenant still fits into the server's remaining 40 bytes.
        let other = b.buffer(40).await.unwrap();
        let err = b.buffer(1).await.unwrap_err().to_string();
        assert!(err.contains("the server"), "{err}");
        assert_eq!(budget.server_usage().buffer_bytes, 100);
        // A waiting upload proceeds as soon as bytes are given back.
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.buffer(30).await.map(|_| ()) }
        });
        drop(held);
        waiter.await.unwrap().unwrap();
        drop(other);
        assert_eq!(budget.server_usage().buffer_bytes, 0);
        let err = a.buffer(61).await.unwrap_err().to_string();
        assert!(
            err.contains("exceeds the whole upload buffer budget"),
            "{err}"
        );
    }

    #[test]
    fn writers_per_tenant_and_server() {
        let budget = UploadBudget::new(small());
        let a = budget.session("a");
        let b = budget.session("b");
        let w1 = a.writer().unwrap();
        let _w2 = a.writer().unwrap();
        let err = a.writer().unwrap_err().to_string();
        assert!(
            err.contains("tenant 'a'") && err.contains("2 of 2"),
            "{err}"
        );
        let _w3 = b.writer().unwrap();
        let err = b.writer().unwrap_err().to_string();
        assert!(
            err.contains("the server") && err.contains("3 of 3"),
            "{err}"
        );
        // The refused tenant-b attempt gave its tenant slot back.
        drop(w1);
        b.writer().unwrap();
        assert_eq!(budget.server_usage().writers, 2);
    }

    #[test]
    fn entries_per_session_tenant_and_server() {
        let budget = UploadBudget::new(small());
        let s1 = budget.session("a");
        let s2 = budget.session("a");
        let s3 = budget.session("b");
        let c1 = s1.entries(10).unwrap();
        let err = s1.entries(1).unwrap_err().to_string();
        assert!(err.contains("this backup session"), "{err}");
        let err = s2.entries(6).unwrap_err().to_string();
        assert!(
            err.contains("tenant 'a'") && err.contains("10 of 15"),
            "{err}"
        );
        let mut c2 = s2.entries(5).unwrap();
        let err = s3.entries(6).unwrap_err().to_string();
        assert!(err.contains("the server"), "{err}");
        // Moving entries between charges keeps the totals.
        let mut kept = s2.no_entries();
        kept.take_from(&mut c2, 3);
        drop(c2);
        assert_eq!(budget.server_usage().entries, 13);
        assert_eq!(s2.session_entries(), 3);
        drop((c1, kept));
        assert_eq!(budget.server_usage().entries, 0);
        s3.entries(10).unwrap();
    }
}
