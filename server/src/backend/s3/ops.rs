//! Request helpers of the S3 backend: error mapping, paginated listing, batched deletes,
//! multipart upload and the conditional-write probe.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;

use super::client::PrecomputedPayloadHash;
use super::{Req, S3Backend};
use crate::backend::{BackendError, ObjectMeta};

/// DeleteObjects takes at most this many keys per request.
pub(super) const DELETE_BATCH: usize = 1000;
/// Part size of multipart uploads.
pub(super) const PART_SIZE: usize = 16 * 1024 * 1024;

/// What a failed request means to the backend.
pub(super) struct Failure {
    pub status: Option<u16>,
    pub code: Option<String>,
    /// The store's error message, when it sent one.
    pub message: Option<String>,
    pub text: String,
}

impl Failure {
    pub fn from_sdk<E, R>(err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HasStatus,
    {
        let status = err.raw_response().map(|r| r.status_code());
        let code = err.code().map(str::to_string);
        Failure {
            status,
            code,
            message: err.message().map(str::to_string),
            text: DisplayErrorContext(err).to_string(),
        }
    }

    /// `InvalidAccessKeyId (HTTP 403): <message>` when the store answered with an error code,
    /// `HTTP 503` for a bare status, else the SDK's description (connection or TLS errors).
    pub fn summary(&self) -> String {
        match (&self.code, self.status) {
            (Some(code), status) => {
                let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
                match &self.message {
                    Some(m) if !m.is_empty() => format!("{code}{status}: {m}"),
                    _ => format!("{code}{status}"),
                }
            }
            (None, Some(status)) => format!("HTTP {status}: {}", self.text),
            (None, None) => self.text.clone(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code.as_deref() != Some("NoSuchBucket") && self.status == Some(404)
            || matches!(self.code.as_deref(), Some("NoSuchKey") | Some("NotFound"))
    }

    pub fn is_precondition_failed(&self) -> bool {
        self.status == Some(412) || self.code.as_deref() == Some("PreconditionFailed")
    }

    /// A concurrent conditional write of the same key is in flight (AWS answers 409).
    pub fn is_conditional_conflict(&self) -> bool {
        self.status == Some(409) || self.code.as_deref() == Some("ConditionalRequestConflict")
    }

    pub fn is_checksum_mismatch(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("BadDigest") | Some("XAmzContentSHA256Mismatch") | Some("InvalidDigest")
        )
    }

    pub fn is_not_implemented(&self) -> bool {
        self.status == Some(501) || self.code.as_deref() == Some("NotImplemented")
    }
}

/// Status code access for the raw response types the SDK hands back.
pub(super) trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

impl S3Backend {
    /// The error for a failed request on `key`, naming bucket, endpoint and the store's answer.
    pub(super) fn remote_error(&self, op: &str, key: &str, f: Failure) -> BackendError {
        self.health.failed(&f, &self.store_label());
        if f.is_not_found() {
            return BackendError::NotFound {
                key: key.to_string(),
            };
        }
        if f.is_checksum_mismatch() {
            return BackendError::ChecksumMismatch {
                key: key.to_string(),
            };
        }
        BackendError::Remote {
            key: key.to_string(),
            message: format!("S3 {op} {} failed: {}", self.describe_key(key), f.summary()),
        }
    }

    /// Every object under `full_prefix` (a bucket key prefix), all pages.
    pub(super) async fn list_raw(
        &self,
        full_prefix: &str,
        delimiter: Option<char>,
        shown: &str,
    ) -> Result<(Vec<ObjectMeta>, Vec<String>), BackendError> {
        let mut objects = Vec::new();
        let mut prefixes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let _permit = self.permit().await?;
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.settings.bucket)
                .prefix(full_prefix);
            if let Some(d) = delimiter {
                req = req.delimiter(d.to_string());
            }
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            self.count_request(Req::List);
            let page = req
                .send()
                .await
                .map_err(|e| self.remote_error("LIST", shown, Failure::from_sdk(&e)))?;
            self.health.ok();
            for obj in page.contents() {
                let Some(full) = obj.key() else { continue };
                let Some(key) = self.strip(full) else {
                    continue;
                };
                objects.push(ObjectMeta {
                    key: key.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    modified: obj
                        .last_modified()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                        .unwrap_or(std::time::UNIX_EPOCH),
                });
            }
            for cp in page.common_prefixes() {
                if let Some(p) = cp.prefix().and_then(|p| self.strip(p)) {
                    prefixes.push(p.to_string());
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        prefixes.sort();
        prefixes.dedup();
        Ok((objects, prefixes))
    }

    /// DeleteObjects in batches of 1000; keys are datastore keys (not yet prefixed).
    pub(super) async fn delete_batches(&self, keys: &[String]) -> Result<(), BackendError> {
        for batch in keys.chunks(DELETE_BATCH) {
            let mut ids = Vec::with_capacity(batch.len());
            for key in batch {
                let full = self.full_key(key)?;
                let id = ObjectIdentifier::builder()
                    .key(full)
                    .build()
                    .map_err(|e| self.internal(key, format!("building delete request: {e}")))?;
                ids.push(id);
            }
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| self.internal(&batch[0], format!("building delete request: {e}")))?;
            let _permit = self.permit().await?;
            self.count_request(Req::Post);
            let out = self
                .client
                .delete_objects()
                .bucket(&self.settings.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| {
                    self.remote_error("DeleteObjects", &batch[0], Failure::from_sdk(&e))
                })?;
            if let Some(err) = out.errors().iter().find(|e| e.code() != Some("NoSuchKey")) {
                let key = err
                    .key()
                    .and_then(|k| self.strip(k))
                    .unwrap_or(&batch[0])
                    .to_string();
                return Err(BackendError::Remote {
                    message: format!(
                        "S3 DeleteObjects of {} failed: {} {}",
                        self.describe_key(&key),
                        err.code().unwrap_or("?"),
                        err.message().unwrap_or("")
                    ),
                    key,
                });
            }
        }
        Ok(())
    }

    /// Upload a large object in parts; aborts the upload on any failure.
    pub(super) async fn put_multipart(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        let full = self.full_key(key)?;
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(&full);
        if let Some(class) = &self.storage_class {
            create = create.storage_class(class.clone());
        }
        if let Some(sse) = &self.sse {
            create = create.server_side_encryption(sse.clone());
            if let Some(kms) = &self.settings.sse_kms_key_id {
                create = create.ssekms_key_id(kms);
            }
        }
        let created = {
            let _permit = self.permit().await?;
            self.count_request(Req::Post);
            create.send().await.map_err(|e| {
                self.remote_error("CreateMultipartUpload", key, Failure::from_sdk(&e))
            })?
        };
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                self.internal(key, "CreateMultipartUpload returned no upload id".into())
            })?
            .to_string();
        match self.upload_parts(key, &full, &upload_id, data).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _permit = self.permit().await;
                self.count_request(Req::Delete);
                if let Err(abort) = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.settings.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .send()
                    .await
                {
                    tracing::warn!(
                        "aborting multipart upload of {} failed: {}",
                        self.describe_key(key),
                        DisplayErrorContext(&abort)
                    );
                }
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        data: Bytes,
    ) -> Result<(), BackendError> {
        let mut parts = Vec::new();
        let mut offset = 0usize;
        let mut number = 1i32;
        while offset < data.len() {
            let end = (offset + PART_SIZE).min(data.len());
            let part = data.slice(offset..end);
            let hash = crate::format::sha256(&part);
            let _permit = self.permit().await?;
            self.count_request(Req::Put);
            self.count_uploaded(part.len());
            let out = self
                .client
                .upload_part()
                .bucket(&self.settings.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(part))
                .customize()
                .interceptor(PrecomputedPayloadHash(hex::encode(hash)))
                .send()
                .await
                .map_err(|e| self.remote_error("UploadPart", key, Failure::from_sdk(&e)))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
            offset = end;
            number += 1;
        }
        let permit = self.permit().await?;
        self.count_request(Req::Post);
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                self.remote_error("CompleteMultipartUpload", key, Failure::from_sdk(&e))
            })?;
        drop(permit);
        self.check_sse_applied(full, done.server_side_encryption())
            .await
            .map_err(|f| self.remote_error("CompleteMultipartUpload", key, f))
    }

    /// Whether the store honours `If-None-Match: *`: a second conditional PUT of a probe
    /// object must be refused. Garage, for one, silently overwrites.
    pub(super) async fn probe_conditional_writes(&self) -> Result<bool, BackendError> {
        let name = format!(
            ".pbs-cloud-probe-{}",
            hex::encode(rand::random::<[u8; 8]>())
        );
        let mut supported = true;
        for attempt in 0..2 {
            let full = self.full_key(&name)?;
            let _permit = self.permit().await?;
            self.count_request(Req::Put);
            self.count_uploaded(5);
            let result = self
                .client
                .put_object()
                .bucket(&self.settings.bucket)
                .key(&full)
                .if_none_match("*")
                .body(ByteStream::from(Bytes::from_static(b"probe")))
                .send()
                .await;
            match result {
                Ok(_) if attempt == 1 => supported = false,
                Ok(_) => {}
                Err(e) => {
                    let f = Failure::from_sdk(&e);
                    if attempt == 1 && f.is_precondition_failed() {
                        break;
                    }
                    if f.is_not_implemented() {
                        supported = false;
                        break;
                    }
                    return Err(self.remote_error("PUT", &name, f));
                }
            }
        }
        let _permit = self.permit().await?;
        self.count_request(Req::Delete);
        let full = self.full_key(&name)?;
        self.client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.remote_error("DELETE", &name, Failure::from_sdk(&e)))?;
        Ok(supported)
    }

    pub(super) fn internal(&self, key: &str, message: String) -> BackendError {
        BackendError::Internal {
            key: self.describe_key(key),
            message,
        }
    }
}
