//! `POST /admin/datastore/{store}/upload-backup-log`: raw blob body stored as
//! `client.log.blob` in a finished snapshot (not added to the manifest).

use http::Response;

use crate::api::context::{ds_error, Ctx};
use crate::auth::Privileges;
use crate::format::blob::BlobView;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn post(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    let privs = ctx.require_any(entry, &ns, Privileges::BACKUP)?;
    if !privs.contains(Privileges::MODIFY) && !ctx.owns(&entry.store, &ns, &dir.group).await? {
        return Err(HttpError::forbidden());
    }
    check_log_blob(&ctx.body)?;
    entry
        .store
        .tree()
        .add_client_log(&ns, &dir, ctx.body.clone())
        .await
        .map_err(ds_error)?;
    Ok(json_data(serde_json::Value::Null))
}

/// The body must be a complete DataBlob with a valid CRC. Checked here so a broken upload is
/// the client's error (400), not a storage fault.
fn check_log_blob(body: &[u8]) -> Result<(), HttpError> {
    BlobView::parse(body)
        .and_then(|view| view.verify_crc())
        .map_err(|e| HttpError::bad_request(format!("invalid log blob: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::blob::encode_blob;

    #[test]
    fn log_blob_needs_valid_crc() {
        let good = encode_blob(b"vzdump log", true);
        assert!(check_log_blob(&good).is_ok());
        let mut bad = good.clone();
        bad[8] ^= 1;
        let err = check_log_blob(&bad).unwrap_err();
        assert_eq!(err.status, http::StatusCode::BAD_REQUEST);
        assert!(check_log_blob(b"plain text log").is_err());
    }
}
