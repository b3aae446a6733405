//! `GET resumable_chunks`, our extension of the backup protocol (docs/protocol.md#resumable-chunks):
//! a session takes over the chunks the same user's last session of the group uploaded before
//! it was cut, so a resumed sync push need not send them again. Stock clients never call it;
//! our push calls it only on a remote that reports itself as this server.

use bytes::Bytes;
use http::Response;

use crate::net::{octet_stream, Body, HttpError};
use crate::protocol::error::ProtocolError;

use super::BackupSession;

/// Registers the resume record's chunks that are still stored as known to this session (each
/// within the session's known-chunk budget) and answers their digests, 32 bytes each.
pub(super) async fn resumable_chunks(session: &BackupSession) -> Result<Response<Body>, HttpError> {
    let lease = session.lease().await?;
    let record = lease
        .take_resume_record()
        .await
        .map_err(ProtocolError::from)?;
    let mut digests = Vec::with_capacity(record.len() * 32);
    for (digest, size) in &record {
        session.check_known_budget(&lease, digest)?;
        if lease
            .adopt_resumable_chunk(digest, *size)
            .await
            .map_err(ProtocolError::from)?
        {
            digests.extend_from_slice(digest);
        }
    }
    if !record.is_empty() {
        session.log.log(format!(
            "resume: {} of {} chunks uploaded by an interrupted session are still stored",
            digests.len() / 32,
            record.len()
        ));
    }
    Ok(octet_stream(Bytes::from(digests)))
}
