//! Stored checksums of S3 objects (docs/design.md#verify-without-egress): HeadObject with checksum
//! mode enabled returns the SHA-256 the store checked at upload, so a cheap verify needs no
//! download.

use aws_sdk_s3::types::ChecksumMode;
use base64::Engine;

use super::ops::Failure;
use super::{Req, S3Backend};
use crate::backend::{BackendError, ObjectChecksum};

/// A full-object SHA-256 from `x-amz-checksum-sha256`; composite (multipart, `...-N`) or
/// malformed values give `None`.
pub(super) fn decode_sha256(value: &str) -> Option<crate::format::Digest> {
    if value.contains('-') {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    raw.try_into().ok()
}

impl S3Backend {
    /// Size and stored SHA-256 of `key` from its attributes; `None` when missing.
    pub(super) async fn head_checksum(
        &self,
        key: &str,
    ) -> Result<Option<ObjectChecksum>, BackendError> {
        let full = self.full_key(key)?;
        let _permit = self.permit().await?;
        self.count_request(Req::Head);
        match self
            .client
            .head_object()
            .bucket(&self.settings.bucket)
            .key(&full)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectChecksum {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                sha256: out.checksum_sha256().and_then(decode_sha256),
            })),
            Err(e) => {
                let f = Failure::from_sdk(&e);
                if f.is_not_found() {
                    Ok(None)
                } else {
                    Err(self.remote_error("HEAD", key, f))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_object_checksums_decode_and_composites_do_not() {
        let digest = crate::format::sha256(b"abc");
        let text = base64::engine::general_purpose::STANDARD.encode(digest);
        assert_eq!(decode_sha256(&text), Some(digest));
        assert_eq!(decode_sha256(&format!("{text}-3")), None);
        assert_eq!(decode_sha256("not base64!"), None);
        assert_eq!(decode_sha256("YWJj"), None);
    }

    /// Against the test S3 server: size always, the SHA-256 when the store keeps one (Ceph
    /// RGW before Squid does not), and `None` for a missing object.
    #[tokio::test]
    async fn stored_checksum_from_attributes() {
        use crate::backend::{Backend, PutOptions};
        let backend = S3Backend::connect(super::super::test_env::settings("checksum"))
            .await
            .expect("connect to the test S3 server");
        let data = bytes::Bytes::from_static(b"checksummed object");
        backend
            .put("a/obj", data.clone(), PutOptions::default())
            .await
            .unwrap();
        let info = backend.stored_sha256("a/obj").await.unwrap().unwrap();
        assert_eq!(info.size, data.len() as u64);
        if let Some(sha) = info.sha256 {
            assert_eq!(sha, crate::format::sha256(&data));
        }
        assert_eq!(backend.stored_sha256("a/missing").await.unwrap(), None);
        backend.delete("a/obj").await.unwrap();
    }
}
