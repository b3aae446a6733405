//! `GET previous_backup_time` and `GET previous` (docs/protocol.md#backup-endpoints): access to the
//! previous snapshot of the group. Downloading a previous index registers all its chunks as known
//! **before** the answer is sent, which is what lets the client skip re-uploading them.

use http::{Request, Response};
use hyper::body::Incoming;

use crate::format::index::{index_kind_of, AnyIndex};
use crate::net::{json_data, octet_stream, streamed, Body, HttpError, Params};

use super::BackupSession;
use crate::protocol::error::ProtocolError;
use crate::protocol::params::archive_name;

/// `GET previous_backup_time` → epoch of the previous snapshot, or null.
pub(super) async fn previous_backup_time(
    session: &BackupSession,
) -> Result<Response<Body>, HttpError> {
    let lease = session.lease().await?;
    Ok(json_data(lease.previous().map(|dir| dir.time)))
}

/// `GET previous?archive-name=X` → raw bytes of `X` from the previous snapshot.
pub(super) async fn download_previous(
    session: &BackupSession,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let params = Params::from_query(req.uri().query());
    let name = archive_name(&params, "archive-name")?;
    let lease = session.lease().await?;
    if lease.previous().is_none() {
        return Err(HttpError::bad_request("no valid previous backup"));
    }
    let kind = index_kind_of(&name);
    if kind.is_none() && !name.ends_with(".blob") {
        return Err(HttpError::bad_request(format!(
            "unknown archive type '{name}'"
        )));
    }
    let bytes = lease
        .read_previous_file(&name)
        .await
        .map_err(ProtocolError::from)?;
    if let Some(kind) = kind {
        let index = AnyIndex::parse(kind, &bytes).map_err(|e| {
            HttpError::bad_request(format!("unable to open previous index '{name}': {e}"))
        })?;
        for (digest, size) in index.chunks() {
            session.check_known_budget(&lease, &digest)?;
            lease.register_chunk(&digest, size);
        }
    }
    // PBS streams file downloads: no content-length
    Ok(streamed(octet_stream(bytes)))
}
