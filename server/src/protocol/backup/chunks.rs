//! `POST {fixed,dynamic}_chunk` and `POST blob` (docs/protocol.md#backup-endpoints,
//! docs/formats.md#chunk-upload-checks): bounded body reading, chunk validation, storing, and
//! registering the chunk with its writer.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::format::blob::{check_uploaded_chunk, BlobView};
use crate::format::{digest_to_hex, FormatError};
use crate::net::{json_data, Body, HttpError, Params};

use super::session::{WriterKind, MANIFEST_BLOB_NAME};
use super::BackupSession;
use crate::protocol::body::{read_exact, BodyError};
use crate::protocol::error::ProtocolError;
use crate::protocol::params::{
    archive_name, digest, ranged_u64, wid, MAX_CHUNK_SIZE, MAX_ENCODED_SIZE, MIN_BLOB_ENCODED_SIZE,
    MIN_CHUNK_ENCODED_SIZE,
};

/// Texts PBS uses for chunk bodies that do not match `encoded-size`.
const CHUNK_TOO_LARGE: &str = "uploaded chunk is larger than announced.";
const CHUNK_SHORT: &str = "uploaded chunk has unexpected size.";

fn chunk_body_error(err: BodyError) -> HttpError {
    match err {
        BodyError::TooLarge { .. } => HttpError::bad_request(CHUNK_TOO_LARGE),
        BodyError::Short { .. } => HttpError::bad_request(CHUNK_SHORT),
        BodyError::Io(msg) => HttpError::bad_request(format!("error reading chunk body: {msg}")),
    }
}

/// Client-facing texts for the format layer's chunk check failures.
fn chunk_check_error(err: FormatError) -> HttpError {
    match err {
        FormatError::ChunkDigestMismatch { .. } => {
            HttpError::bad_request("detected chunk with wrong digest.")
        }
        FormatError::ChunkSizeMismatch {
            expected, actual, ..
        } => HttpError::bad_request(format!(
            "detected chunk with wrong length ({actual} != {expected})."
        )),
        FormatError::ChunkEncodedSize { .. } => HttpError::bad_request(CHUNK_SHORT),
        other => HttpError::bad_request(format!("invalid chunk: {other}")),
    }
}

/// `POST {fixed,dynamic}_chunk?wid&digest&size&encoded-size`: answers the digest hex.
pub(super) async fn upload_chunk(
    session: &Arc<BackupSession>,
    kind: WriterKind,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let params = Params::from_query(req.uri().query());
    let wid = wid(&params)?;
    let digest = digest(&params, "digest")?;
    let size = ranged_u64(&params, "size", 1, MAX_CHUNK_SIZE)?;
    let encoded_size = ranged_u64(
        &params,
        "encoded-size",
        MIN_CHUNK_ENCODED_SIZE,
        MAX_ENCODED_SIZE,
    )?;
    session.state().ensure_active()?;

    // The body (≤ 16 MiB + 44) and, for a compressed chunk, its decoded copy (≤ 16 MiB) are
    // held in memory only with budget for both.
    let buffer = session
        .budget()
        .buffer(encoded_size + size)
        .await
        .map_err(ProtocolError::from)?;
    let raw = read_exact(req.into_body(), encoded_size as usize)
        .await
        .map_err(chunk_body_error)?;

    // Decompressing and hashing up to 16 MiB is CPU work: keep it off the I/O threads.
    let (raw, checked) = tokio::task::spawn_blocking(move || {
        let mut raw = raw;
        let checked = check_uploaded_chunk(&mut raw, encoded_size, &digest, size);
        (raw, checked)
    })
    .await
    .map_err(|e| HttpError::internal(format!("chunk check task failed: {e}")))?;
    let checked = checked.map_err(chunk_check_error)?;

    // Storing and registering run to their end in a task of their own: hyper drops this
    // handler when the connection goes, and a chunk stored but never registered would be in
    // neither the snapshot nor the resume record. The task holds the lease from before the
    // insert, so a session that ends meanwhile (finish, or a cut) waits for it.
    let session = session.clone();
    let encrypted = checked.kind.is_encrypted();
    let stored = tokio::spawn(async move {
        let _buffer = buffer;
        let lease = session.lease().await?;
        let outcome = session
            .store
            .insert_chunk(&digest, raw.freeze(), encrypted)
            .await
            .map_err(ProtocolError::from)?;
        session.check_known_budget(&lease, &digest)?;
        session
            .state()
            .register_chunk(kind, wid, size, encoded_size, outcome.duplicate)?;
        lease.register_uploaded_chunk(&digest, size);
        Ok::<_, HttpError>(())
    });
    stored
        .await
        .map_err(|e| HttpError::internal(format!("chunk store task failed: {e}")))??;
    Ok(json_data(digest_to_hex(&digest)))
}

/// `POST blob?file-name&encoded-size`: stored byte-for-byte after a CRC check; the manifest
/// stays in memory until `finish` rewrites and commits it.
pub(super) async fn upload_blob(
    session: &BackupSession,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let params = Params::from_query(req.uri().query());
    let file_name = archive_name(&params, "file-name")?;
    let encoded_size = ranged_u64(
        &params,
        "encoded-size",
        MIN_BLOB_ENCODED_SIZE,
        MAX_ENCODED_SIZE,
    )?;
    if !file_name.ends_with(".blob") {
        return Err(HttpError::bad_request(format!(
            "wrong blob file extension: '{file_name}'"
        )));
    }
    session.state().ensure_active()?;

    let buffer = session
        .budget()
        .buffer(encoded_size)
        .await
        .map_err(ProtocolError::from)?;
    let expected = encoded_size as usize;
    let data = read_exact(req.into_body(), expected)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { received, .. } | BodyError::Short { received, .. } => {
                HttpError::bad_request(format!(
                    "got blob with unexpected length ({received} != {expected})"
                ))
            }
            BodyError::Io(msg) => HttpError::bad_request(format!("error reading blob body: {msg}")),
        })?
        .freeze();
    check_blob(&file_name, &data)?;

    let logged = format!(
        "add blob {} ({} bytes, comp: {})",
        session.file_path(&file_name),
        data.len(),
        data.len()
    );
    if file_name == MANIFEST_BLOB_NAME {
        session.state().add_blob(&file_name, Some(data))?;
        // Kept until `finish`: so is its budget (a re-upload replaces both).
        *session
            .manifest_budget
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(buffer);
        session.log.log(logged);
        return Ok(json_data(serde_json::Value::Null));
    }
    let lease = session.lease().await?;
    session.state().ensure_active()?;
    lease
        .write_file(&file_name, data)
        .await
        .map_err(ProtocolError::from)?;
    session.state().add_blob(&file_name, None)?;
    session.log.log(logged);
    Ok(json_data(serde_json::Value::Null))
}

/// A blob must parse (known magic, complete header) and carry a valid CRC.
fn check_blob(file_name: &str, data: &Bytes) -> Result<(), HttpError> {
    let view = BlobView::parse(data)
        .map_err(|e| HttpError::bad_request(format!("invalid blob '{file_name}': {e}")))?;
    view.verify_crc()
        .map_err(|e| HttpError::bad_request(format!("invalid blob '{file_name}': {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::blob::encode_blob;

    #[test]
    fn blob_check_requires_valid_crc() {
        let good = Bytes::from(encode_blob(b"hello", false));
        assert!(check_blob("a.blob", &good).is_ok());
        let mut bad = good.to_vec();
        bad[8] ^= 0xff;
        let err = check_blob("a.blob", &Bytes::from(bad)).unwrap_err();
        assert!(
            err.message.contains("invalid blob 'a.blob'"),
            "{}",
            err.message
        );
        assert!(check_blob("a.blob", &Bytes::from_static(b"short")).is_err());
    }

    #[test]
    fn chunk_error_texts() {
        let e = chunk_check_error(FormatError::ChunkDigestMismatch {
            expected: "a".into(),
            computed: "b".into(),
        });
        assert_eq!(e.message, "detected chunk with wrong digest.");
        assert_eq!(
            chunk_body_error(BodyError::TooLarge {
                limit: 1,
                received: 2
            })
            .message,
            CHUNK_TOO_LARGE
        );
        assert_eq!(
            chunk_body_error(BodyError::Short {
                expected: 2,
                received: 1
            })
            .message,
            CHUNK_SHORT
        );
    }
}
