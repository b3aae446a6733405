//! S3 backend (aws-sdk-s3): every datastore object is `<prefix><key>` in one bucket.
//!
//! * Only-if-absent puts use `If-None-Match: *` (412 = already there). Stores that ignore the
//!   header (Garage) are detected at open by a probe and fall back to HEAD-before-PUT, which is
//!   safe because one server owns a datastore (docs/design.md#single-writer-lease).
//! * Each put carries the body's SHA-256 as `x-amz-checksum-sha256` and as the SigV4 payload
//!   hash: one hashing pass per uploaded byte, and the store rejects damaged bodies.
//! * [`Backend::touch`] is a no-op: refreshing an object's time would cost a CopyObject per
//!   reused chunk. GC does not depend on it; the datastore tracks recently used chunks in
//!   memory instead (it is the only writer).
//! * Objects above 64 MiB are uploaded in 16 MiB parts.
//! * Requests in flight are bounded by a semaphore; the SDK retries 5xx, throttling, timeouts
//!   and connection errors with exponential backoff.
//! * Store-level failures (credentials, bucket, endpoint) are kept as the backend's health,
//!   refreshed by a periodic probe (see `health`), for the datastore status and `/readyz`.
//!
//! Passes over each uploaded chunk in the server (plain, compressed chunk; `b` = blob bytes,
//! `d` = decoded bytes, d ≈ 1.6 b on the benchmark image): the protocol layer checks the blob
//! CRC32 (1 × b) and, to verify the client's digest, decodes and hashes the data (zstd 1 × b→d,
//! SHA-256 1 × d); the datastore hashes the blob once for `x-amz-checksum-sha256` (SHA-256
//! 1 × b), which doubles as the SigV4 payload hash, so the SDK hashes nothing (request
//! checksums `WhenRequired`, no aws-chunked trailer, no Content-MD5). The body is handed to the
//! HTTP client as the same reference-counted `Bytes` (no copy in our code); the kernel copies
//! it once into the socket. So per uploaded blob byte: 2 SHA-256 passes in all, 1 of them for
//! S3, which is the minimum for a store that verifies the object with SHA-256
//! (docs/design.md#verify-without-egress); the digest check over the decoded data is PBS's own rule
//! and not S3's.

mod checksum;
mod client;
mod counters;
mod health;
mod object_lock;
mod ops;
mod settings;
mod sse;
#[cfg(test)]
pub(crate) mod test_env;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use base64::Engine;
use bytes::Bytes;

use self::client::PrecomputedPayloadHash;
pub(crate) use self::counters::{Req, RequestCounters};
use self::health::HealthState;
pub use self::health::DEFAULT_HEALTH_INTERVAL;
use self::ops::Failure;
pub use self::settings::{
    normalize_prefix, ConditionalWrites, S3Credentials, S3Settings, DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES, DEFAULT_REQUEST_TIMEOUT,
};
use super::{
    Backend, BackendCapabilities, BackendError, BackendHealth, Capacity, ListResult, ObjectMeta,
    PutOptions, PutOutcome, RequestCounts,
};

/// Objects larger than this are uploaded with multipart.
pub const MULTIPART_THRESHOLD: usize = 64 * 1024 * 1024;

/// The configured aws-sdk-s3 client for `settings` (TLS and CA bundle, credentials, timeouts,
/// retries, checksum and stalled-stream settings real stores need), for other S3 users such as
/// the operator's purge of a deleted tenant's data.
pub async fn sdk_client(settings: &S3Settings) -> Result<aws_sdk_s3::Client, BackendError> {
    client::build(settings).await
}

/// A datastore's objects in an S3 bucket under a prefix.
pub struct S3Backend {
    client: aws_sdk_s3::Client,
    settings: S3Settings,
    storage_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    conditional: bool,
    limit: tokio::sync::Semaphore,
    counts: RequestCounters,
    health: Arc<HealthState>,
    /// Object Lock requests (see `object_lock.rs`).
    lock_requests: AtomicU64,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("bucket", &self.settings.bucket)
            .field("prefix", &self.settings.prefix)
            .field("endpoint", &self.settings.endpoint)
            .finish()
    }
}

impl S3Backend {
    /// Connect and check access: HEAD of the bucket (a missing bucket or bad credentials give
    /// an error naming bucket and endpoint), then the conditional-write probe if `Auto`.
    pub async fn connect(settings: S3Settings) -> Result<Self, BackendError> {
        let mut settings = settings;
        settings.prefix = normalize_prefix(&settings.prefix);
        let client = client::build(&settings).await?;
        let mut backend = S3Backend {
            client,
            storage_class: settings.storage_class.as_deref().map(StorageClass::from),
            sse: settings.sse.as_deref().map(ServerSideEncryption::from),
            conditional: settings.conditional_writes != ConditionalWrites::Off,
            limit: tokio::sync::Semaphore::new(settings.max_concurrency.max(1)),
            counts: RequestCounters::default(),
            health: Arc::default(),
            lock_requests: AtomicU64::new(0),
            settings,
        };
        backend.check_bucket().await?;
        health::spawn_probe(
            &backend.health,
            backend.client.clone(),
            backend.settings.bucket.clone(),
            backend.settings.prefix.clone(),
            backend.store_label(),
            backend.settings.health_interval,
        );
        if backend.settings.conditional_writes == ConditionalWrites::Auto {
            backend.conditional = backend.probe_conditional_writes().await?;
            if !backend.conditional {
                tracing::warn!(
                    "S3 store at {} ignores If-None-Match; using HEAD before PUT",
                    backend.endpoint_label()
                );
            }
        }
        Ok(backend)
    }

    async fn check_bucket(&self) -> Result<(), BackendError> {
        self.count_request(Req::Head);
        let result = self
            .client
            .head_bucket()
            .bucket(&self.settings.bucket)
            .send()
            .await;
        let Err(e) = result else { return Ok(()) };
        let f = Failure::from_sdk(&e);
        let why = match f.status {
            Some(404) => "the bucket does not exist".to_string(),
            Some(403) => "access denied: check the access key, secret and bucket policy".into(),
            Some(301) => "the bucket is in another region (set region)".into(),
            _ => f.text.clone(),
        };
        Err(BackendError::Remote {
            key: format!("s3://{}", self.settings.bucket),
            message: format!(
                "S3 bucket '{}' at {}: {why}",
                self.settings.bucket,
                self.endpoint_label()
            ),
        })
    }

    /// The resolved settings.
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// Whether only-if-absent puts use `If-None-Match`.
    pub fn uses_conditional_writes(&self) -> bool {
        self.conditional
    }

    /// `'bucket' at endpoint`, for store-level messages.
    pub(crate) fn store_label(&self) -> String {
        format!("'{}' at {}", self.settings.bucket, self.endpoint_label())
    }

    fn endpoint_label(&self) -> String {
        self.settings
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS S3 ({})", self.settings.region))
    }

    /// `s3://bucket/prefix/key at endpoint`, for messages.
    pub(crate) fn describe_key(&self, key: &str) -> String {
        format!(
            "s3://{}/{}{key} at {}",
            self.settings.bucket,
            self.settings.prefix,
            self.endpoint_label()
        )
    }

    fn count_request(&self, kind: Req) {
        self.counts.count(kind);
    }

    fn count_uploaded(&self, bytes: usize) {
        self.counts.add_uploaded(bytes);
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, BackendError> {
        self.limit
            .acquire()
            .await
            .map_err(|_| BackendError::Internal {
                key: format!("s3://{}", self.settings.bucket),
                message: "request limiter closed".into(),
            })
    }

    /// Bucket key of a datastore key; refuses keys that could alias or escape the prefix.
    fn full_key(&self, key: &str) -> Result<String, BackendError> {
        let invalid = |reason: &str| BackendError::InvalidKey {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        if key.is_empty() {
            return Err(invalid("empty key"));
        }
        if key.starts_with('/') || key.contains('\\') || key.contains('\0') {
            return Err(invalid("absolute key or forbidden character"));
        }
        if key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(invalid("empty, '.' or '..' path component"));
        }
        Ok(format!("{}{key}", self.settings.prefix))
    }

    /// Bucket prefix for a datastore list prefix (may be "" or end mid-name).
    fn full_prefix(&self, prefix: &str) -> Result<String, BackendError> {
        if prefix.starts_with('/') || prefix.contains('\\') || prefix.contains('\0') {
            return Err(BackendError::InvalidKey {
                key: prefix.to_string(),
                reason: "invalid list prefix".into(),
            });
        }
        Ok(format!("{}{prefix}", self.settings.prefix))
    }

    /// Datastore key of a bucket key; `None` for keys outside the prefix.
    fn strip<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.settings.prefix.as_str())
    }

    async fn put_once(
        &self,
        full: &str,
        data: &Bytes,
        sha: &crate::format::Digest,
        conditional: bool,
    ) -> Result<PutOutcome, Failure> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(full)
            .content_length(data.len() as i64)
            .checksum_sha256(base64::engine::general_purpose::STANDARD.encode(sha))
            .body(ByteStream::from(data.clone()));
        if conditional {
            req = req.if_none_match("*");
        }
        if let Some(class) = &self.storage_class {
            req = req.storage_class(class.clone());
        }
        if let Some(sse) = &self.sse {
            req = req.server_side_encryption(sse.clone());
            if let Some(kms) = &self.settings.sse_kms_key_id {
                req = req.ssekms_key_id(kms);
            }
        }
        let _permit = self.permit().await.map_err(|e| Failure {
            status: None,
            code: None,
            message: None,
            text: e.to_string(),
        })?;
        self.count_request(Req::Put);
        self.count_uploaded(data.len());
        match req
            .customize()
            .interceptor(PrecomputedPayloadHash(hex::encode(sha)))
            .send()
            .await
        {
            Ok(out) => {
                self.check_sse_applied(full, out.server_side_encryption())
                    .await?;
                self.health.ok();
                Ok(PutOutcome::Written)
            }
            Err(e) => Err(Failure::from_sdk(&e)),
        }
    }
}

impl S3Backend {
    /// GET of a whole object, or of the inclusive byte range `range`.
    async fn fetch(&self, key: &str, range: Option<(u64, u64)>) -> Result<Bytes, BackendError> {
        let full = self.full_key(key)?;
        let mut attempt = 0u32;
        loop {
            let permit = self.permit().await?;
            self.count_request(Req::Get);
            let out = self
                .client
                .get_object()
                .bucket(&self.settings.bucket)
                .key(&full)
                .set_range(range.map(|(first, last)| format!("bytes={first}-{last}")))
                .send()
                .await
                .map_err(|e| self.remote_error("GET", key, Failure::from_sdk(&e)))?;
            match out.body.collect().await {
                Ok(data) => {
                    self.health.ok();
                    let data = data.into_bytes();
                    self.counts.add_downloaded(data.len());
                    return Ok(data);
                }
                // The SDK retries the request, not a body cut mid-way: do that here.
                Err(e) if attempt < self.settings.max_retries => {
                    drop(permit);
                    attempt += 1;
                    tracing::warn!(
                        "reading {} failed (attempt {attempt}): {e}; retrying",
                        self.describe_key(key)
                    );
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                }
                Err(e) => {
                    return Err(BackendError::Remote {
                        key: key.to_string(),
                        message: format!("S3 GET {} body: {e}", self.describe_key(key)),
                    })
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Backend for S3Backend {
    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            kind: "s3",
            exclusive_to_server: true,
            wants_put_checksum: true,
            retention_needs_object_lock: true,
        }
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        opts: PutOptions,
    ) -> Result<PutOutcome, BackendError> {
        let full = self.full_key(key)?;
        let check_first = opts.if_absent && (!self.conditional || data.len() > MULTIPART_THRESHOLD);
        if check_first && self.head(key).await?.is_some() {
            return Ok(PutOutcome::AlreadyExists);
        }
        if data.len() > MULTIPART_THRESHOLD {
            self.put_multipart(key, data).await?;
            return Ok(PutOutcome::Written);
        }
        let sha = match opts.sha256 {
            Some(sha) => sha,
            None => crate::format::sha256(&data),
        };
        let conditional = opts.if_absent && self.conditional;
        let mut conflicts = 0u32;
        loop {
            match self.put_once(&full, &data, &sha, conditional).await {
                Ok(outcome) => return Ok(outcome),
                Err(f) if conditional && f.is_precondition_failed() => {
                    self.health.ok();
                    return Ok(PutOutcome::AlreadyExists);
                }
                // Another conditional write of the key is in flight: wait and ask again.
                Err(f) if conditional && f.is_conditional_conflict() && conflicts < 5 => {
                    conflicts += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(conflicts))).await;
                }
                Err(f) => return Err(self.remote_error("PUT", key, f)),
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.fetch(key, None).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, BackendError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        self.fetch(key, Some((offset, offset.saturating_add(len - 1))))
            .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, BackendError> {
        let full = self.full_key(key)?;
        let _permit = self.permit().await?;
        self.count_request(Req::Head);
        match self
            .client
            .head_object()
            .bucket(&self.settings.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => {
                self.health.ok();
                Ok(Some(ObjectMeta {
                    key: key.to_string(),
                    size: out.content_length().unwrap_or(0).max(0) as u64,
                    modified: out
                        .last_modified()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                        .unwrap_or(std::time::UNIX_EPOCH),
                }))
            }
            Err(e) => {
                let f = Failure::from_sdk(&e);
                if f.is_not_found() {
                    self.health.ok();
                    Ok(None)
                } else {
                    Err(self.remote_error("HEAD", key, f))
                }
            }
        }
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<char>,
    ) -> Result<ListResult, BackendError> {
        let full = self.full_prefix(prefix)?;
        let (objects, prefixes) = self.list_raw(&full, delimiter, prefix).await?;
        Ok(ListResult { objects, prefixes })
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let full = self.full_key(key)?;
        let _permit = self.permit().await?;
        self.count_request(Req::Delete);
        match self
            .client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => {
                self.health.ok();
                Ok(())
            }
            Err(e) => {
                let f = Failure::from_sdk(&e);
                if f.is_not_found() {
                    Ok(())
                } else {
                    Err(self.remote_error("DELETE", key, f))
                }
            }
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.delete_batches(keys).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, BackendError> {
        let listed = self.list(prefix, None).await?;
        let keys: Vec<String> = listed.objects.into_iter().map(|o| o.key).collect();
        self.delete_batches(&keys).await?;
        Ok(keys.len() as u64)
    }

    /// No request: see the module documentation.
    async fn touch(&self, key: &str) -> Result<(), BackendError> {
        self.full_key(key)?;
        Ok(())
    }

    async fn stored_sha256(
        &self,
        key: &str,
    ) -> Result<Option<super::ObjectChecksum>, BackendError> {
        self.head_checksum(key).await
    }

    async fn capacity(&self) -> Result<Option<Capacity>, BackendError> {
        Ok(None)
    }

    fn request_counts(&self) -> Option<RequestCounts> {
        let mut counts = self.counts.snapshot();
        counts.list += self.health.probes.load(Ordering::Relaxed);
        Some(counts)
    }

    fn health(&self) -> Option<BackendHealth> {
        Some(self.health.report())
    }

    fn object_lock(&self) -> Option<&dyn super::lock::ObjectLock> {
        Some(self)
    }
}
