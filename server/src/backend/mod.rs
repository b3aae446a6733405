//! Object storage seen by the datastore (docs/design.md#object-storage-backends).
//!
//! The datastore never touches files or S3 directly: it stores immutable objects by
//! '/'-separated key through [`Backend`]. Both the local filesystem and S3 implement the same
//! semantics, so every datastore behaviour can be tested against either.

mod dir_names;
pub mod local;
pub mod lock;
pub mod s3;

use std::time::SystemTime;

use crate::format::Digest;

pub use local::LocalBackend;
pub use s3::S3Backend;

/// Errors of the storage layer; every variant names the key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("object '{key}' not found")]
    NotFound { key: String },
    #[error("object '{key}' already exists")]
    AlreadyExists { key: String },
    #[error("invalid object key '{key}': {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("checksum mismatch while storing object '{key}'")]
    ChecksumMismatch { key: String },
    #[error("unsupported backend operation: {what}")]
    Unsupported { what: String },
    #[error("I/O error on object '{key}': {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// The object store refused or failed a request (after retries); the message names the
    /// bucket, key and endpoint.
    #[error("{message}")]
    Remote { key: String, message: String },
    #[error("backend task for '{key}' failed: {message}")]
    Internal { key: String, message: String },
    /// The datastore may not write now (writer lease lost or not renewed, or closing).
    #[error("refusing to write '{key}': {reason}")]
    Fenced { key: String, reason: String },
}

impl BackendError {
    /// True for "the object does not exist", which callers usually treat as a normal outcome.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }

    pub(crate) fn io(key: &str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            BackendError::NotFound {
                key: key.to_string(),
            }
        } else {
            BackendError::Io {
                key: key.to_string(),
                source,
            }
        }
    }
}

/// Metadata of one stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Last write or [`Backend::touch`]; GC compares it with its cutoff.
    pub modified: SystemTime,
}

/// Result of a listing: objects in key order, and with a delimiter the common prefixes
/// (each ending in the delimiter, e.g. `"sub/"`).
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    pub objects: Vec<ObjectMeta>,
    pub prefixes: Vec<String>,
}

/// Options of [`Backend::put`].
#[derive(Default, Clone, Debug)]
pub struct PutOptions {
    /// Only write when no object exists under the key (atomically); otherwise report
    /// [`PutOutcome::AlreadyExists`] and leave the stored object untouched.
    pub if_absent: bool,
    /// SHA-256 of the data: the store refuses the write if the bytes do not match.
    pub sha256: Option<Digest>,
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// Only with `if_absent`: the key was taken, nothing was written.
    AlreadyExists,
}

/// Size of the storage behind a backend (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub total: u64,
    pub used: u64,
    pub avail: u64,
}

/// Requests a remote object store has been sent since the backend was opened, by HTTP kind,
/// and body bytes moved. Exposed as `s3-statistics` in the datastore status (PBS 4.2 reports
/// the same counters) and used by the benchmark to compute requests per GiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RequestCounts {
    /// GetObject.
    pub get: u64,
    /// PutObject and UploadPart.
    pub put: u64,
    /// DeleteObjects, CreateMultipartUpload, CompleteMultipartUpload.
    pub post: u64,
    /// HeadObject and HeadBucket.
    pub head: u64,
    /// DeleteObject and AbortMultipartUpload.
    pub delete: u64,
    /// ListObjectsV2 pages.
    pub list: u64,
    /// Body bytes sent (object data of puts and parts).
    pub uploaded: u64,
    /// Body bytes received (object data of gets).
    pub downloaded: u64,
}

impl RequestCounts {
    /// Number of requests of all kinds.
    pub fn total(&self) -> u64 {
        self.get + self.put + self.post + self.head + self.delete + self.list
    }

    /// Counts accumulated since `earlier` (saturating, for before/after measurements).
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            get: self.get.saturating_sub(earlier.get),
            put: self.put.saturating_sub(earlier.put),
            post: self.post.saturating_sub(earlier.post),
            head: self.head.saturating_sub(earlier.head),
            delete: self.delete.saturating_sub(earlier.delete),
            list: self.list.saturating_sub(earlier.list),
            uploaded: self.uploaded.saturating_sub(earlier.uploaded),
            downloaded: self.downloaded.saturating_sub(earlier.downloaded),
        }
    }

    /// Adds `other` into these counts (sums over several measured phases).
    pub fn add(&mut self, other: &RequestCounts) {
        self.get += other.get;
        self.put += other.put;
        self.post += other.post;
        self.head += other.head;
        self.delete += other.delete;
        self.list += other.list;
        self.uploaded += other.uploaded;
        self.downloaded += other.downloaded;
    }
}

/// A remote store's health as last observed (shown as `backend-health` in the datastore status
/// and used by `/readyz`): unhealthy after a store-level failure such as revoked credentials or
/// a missing bucket, healthy again after the next successful request or probe.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackendHealth {
    pub healthy: bool,
    /// What is wrong, naming bucket, endpoint and the store's error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Unix time the current problem was first seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Unix time of the last probe or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<i64>,
}

/// What a backend is and how the datastore must treat it: the answers code asks instead of
/// comparing backend names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendCapabilities {
    /// `"filesystem"` or `"s3"`: the name status output shows.
    pub kind: &'static str,
    /// Whether nothing but this server changes the stored objects (an object-store prefix
    /// reserved for it), so in-memory views of them (cached listings, the known-chunk set)
    /// stay true. A local directory is not: an administrator or a stock PBS may change it.
    pub exclusive_to_server: bool,
    /// Whether a SHA-256 sent with a put ([`PutOptions::sha256`]) is worth computing: the
    /// data crosses a network to a store that checks it on arrival. A local backend would only
    /// re-hash bytes it already holds in memory.
    pub wants_put_checksum: bool,
    /// Whether retention locks on this backend hold only if the store enforces them itself
    /// (S3 Object Lock, through [`Backend::object_lock`]): anyone with the store's credentials
    /// could otherwise delete locked objects. `false` where the server's own refusal is the
    /// enforcement (a local directory).
    pub retention_needs_object_lock: bool,
}

/// Single answers of [`Backend::capabilities`], for every backend (not overridable: a wrapper
/// cannot answer one of them differently from the capabilities it forwards).
pub trait BackendExt {
    /// [`BackendCapabilities::kind`].
    fn kind(&self) -> &'static str;
    /// [`BackendCapabilities::exclusive_to_server`].
    fn exclusive_to_server(&self) -> bool;
    /// [`BackendCapabilities::wants_put_checksum`].
    fn wants_put_checksum(&self) -> bool;
    /// [`BackendCapabilities::retention_needs_object_lock`].
    fn retention_needs_object_lock(&self) -> bool;
}

impl<B: Backend + ?Sized> BackendExt for B {
    fn kind(&self) -> &'static str {
        self.capabilities().kind
    }
    fn exclusive_to_server(&self) -> bool {
        self.capabilities().exclusive_to_server
    }
    fn wants_put_checksum(&self) -> bool {
        self.capabilities().wants_put_checksum
    }
    fn retention_needs_object_lock(&self) -> bool {
        self.capabilities().retention_needs_object_lock
    }
}

/// Immutable-object storage keyed by '/'-separated relative keys.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// What this backend is and how the datastore must treat it. Wrappers (fence, listing
    /// cache) forward this one method; [`BackendExt`] reads single answers from it.
    fn capabilities(&self) -> BackendCapabilities;
    /// Store `data` under `key` atomically (readers see the old or the new object, never a mix).
    async fn put(
        &self,
        key: &str,
        data: bytes::Bytes,
        opts: PutOptions,
    ) -> Result<PutOutcome, BackendError>;
    /// Whole object; `NotFound` when missing.
    async fn get(&self, key: &str) -> Result<bytes::Bytes, BackendError>;
    /// Up to `len` bytes of an object from `offset` (fewer at its end), so that a large object
    /// can be read in bounded pieces; `NotFound` when missing. Wrappers must forward it; the
    /// default reads the whole object.
    async fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> Result<bytes::Bytes, BackendError> {
        let data = self.get(key).await?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
            .min(data.len());
        Ok(data.slice(start..end))
    }
    /// Metadata, or `None` when missing.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, BackendError>;
    /// Every object whose key starts with `prefix` (all pages). With a delimiter, keys that
    /// contain it after the prefix are folded into `prefixes`. A missing prefix lists empty.
    async fn list(&self, prefix: &str, delimiter: Option<char>)
        -> Result<ListResult, BackendError>;
    /// Remove one object; a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), BackendError>;
    /// Remove several objects; missing keys are not errors.
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError>;
    /// Remove every object under `prefix`; returns how many were removed.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, BackendError>;
    /// Refresh the modified time of an existing object (GC uses it as "recently used").
    async fn touch(&self, key: &str) -> Result<(), BackendError>;
    /// Remove leftovers of writes a crashed process never finished (temp files) that were
    /// last changed before `before`; returns how many. Backends whose writes leave nothing
    /// behind do nothing.
    async fn remove_stale_temp_files(&self, before: SystemTime) -> Result<u64, BackendError> {
        let _ = before;
        Ok(0)
    }
    /// Capacity of the underlying storage, if the backend can tell.
    async fn capacity(&self) -> Result<Option<Capacity>, BackendError>;
    /// Requests sent so far, for backends that talk to a remote store (`None` otherwise).
    fn request_counts(&self) -> Option<RequestCounts> {
        None
    }
    /// Whether a remote store currently answers (`None` for backends that do not track it).
    fn health(&self) -> Option<BackendHealth> {
        None
    }
    /// Object Lock and lifecycle operations, for stores that have them (`None`: the local
    /// backend, where the datastore enforces retention locks itself).
    fn object_lock(&self) -> Option<&dyn lock::ObjectLock> {
        None
    }
    /// Size and the SHA-256 the store recorded (and checked) at upload, read from object
    /// attributes without downloading the data; `None` when the object is missing. Backends
    /// that keep no checksum report only the size.
    async fn stored_sha256(&self, key: &str) -> Result<Option<ObjectChecksum>, BackendError> {
        Ok(self.head(key).await?.map(|meta| ObjectChecksum {
            size: meta.size,
            sha256: None,
        }))
    }
}

/// What [`Backend::stored_sha256`] reports about an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectChecksum {
    pub size: u64,
    /// SHA-256 of the whole object as stored with it; `None` when the store has none (written
    /// without a checksum, multipart composite, or a backend that keeps none).
    pub sha256: Option<Digest>,
}
