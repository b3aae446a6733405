//! `POST finish` (docs/protocol.md#backup-endpoints): the last call of a successful session. It
//! checks the session state, that the base snapshot still exists and that the uploaded manifest
//! parses, records the chunk upload statistics in the manifest and commits the snapshot, which
//! makes it visible (the manifest is written last, docs/design.md#manifest-last).

use bytes::Bytes;
use http::Response;

use crate::format::manifest::{ChunkUploadStats, Manifest};
use crate::net::{json_data, Body, HttpError};

use super::session::FinishInput;
use super::BackupSession;
use crate::datastore::BackupLease;
use crate::protocol::error::ProtocolError;

fn manifest_error(why: impl std::fmt::Display) -> HttpError {
    HttpError::bad_request(format!("unable to update manifest blob - {why}"))
}

/// `POST finish` → `null`.
pub(super) async fn finish(session: &BackupSession) -> Result<Response<Body>, HttpError> {
    // Exclusive: waits for in-flight uploads and closes, then consumes the lease.
    let mut guard = session.lease.write().await;
    let input = session.state().begin_finish()?;
    let result = finish_locked(session, &mut guard, input).await;
    match &result {
        Ok(()) => {
            session.state().mark_finished();
            tracing::info!("backup session {}: finish successful", session.label);
            session.log.log("successfully finished backup");
        }
        Err(e) => {
            session.state().cancel_finish();
            tracing::warn!(
                "backup session {}: finish failed: {}",
                session.label,
                e.message
            );
        }
    }
    result.map(|()| json_data(serde_json::Value::Null))
}

/// The checks and the commit of `finish`, with the lease held exclusively.
async fn finish_locked(
    session: &BackupSession,
    guard: &mut Option<BackupLease>,
    input: FinishInput,
) -> Result<(), HttpError> {
    let lease = guard
        .as_ref()
        .ok_or_else(|| HttpError::bad_request("backup already marked as finished."))?;
    if let Some(previous) = lease.previous() {
        let exists = lease.previous_exists().await.map_err(ProtocolError::from)?;
        if !exists {
            return Err(HttpError::bad_request(format!(
                "base snapshot {} was removed during backup, cannot finish as chunks might be missing",
                previous.path()
            )));
        }
    }

    let raw = input
        .manifest
        .ok_or_else(|| manifest_error("index.json.blob was not uploaded"))?;
    let mut manifest = Manifest::from_blob(&raw).map_err(manifest_error)?;
    manifest.set_chunk_upload_stats(&ChunkUploadStats {
        count: input.stats.count,
        size: input.stats.size,
        compressed_size: input.stats.compressed_size,
        duplicates: input.stats.duplicates,
    });
    let blob = Bytes::from(manifest.to_blob());

    let lease = guard
        .take()
        .ok_or_else(|| HttpError::bad_request("backup already marked as finished."))?;
    if session.benchmark {
        // Benchmark snapshots are never kept (docs/protocol.md#session-end): dropping the lease
        // removes it.
        drop(lease);
        return Ok(());
    }
    lease.commit(blob).await.map_err(ProtocolError::from)?;
    Ok(())
}
