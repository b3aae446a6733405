//! `GET /admin/datastore/{store}/download` (raw stored file) and `download-decoded` (blobs
//! decoded; index reassembly is not offered here).

use bytes::Bytes;
use http::Response;

use crate::api::context::{ds_error, Ctx};
use crate::auth::Privileges;
use crate::format::blob::{BlobView, MAX_BLOB_SIZE};
use crate::net::{octet_stream, Body, HttpError};
use crate::state::DatastoreEntry;

async fn read(ctx: &Ctx, entry: &DatastoreEntry) -> Result<(String, Bytes), HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    let name = ctx.params.required_str("file-name")?;
    ctx.check_group(entry, &ns, &dir.group, Privileges::READ, Privileges::BACKUP)
        .await?;
    let data = entry
        .store
        .read_snapshot_file(&ns, &dir, &name)
        .await
        .map_err(ds_error)?;
    Ok((name, data))
}

pub async fn raw(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let (_, data) = read(ctx, entry).await?;
    Ok(octet_stream(data))
}

pub async fn decoded(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let (name, data) = read(ctx, entry).await?;
    if !name.ends_with(".blob") {
        return Err(HttpError::bad_request(format!(
            "cannot decode '{name}' - only blobs are supported"
        )));
    }
    let view = BlobView::parse(&data)?;
    if view.kind().is_encrypted() {
        return Err(HttpError::bad_request(format!(
            "cannot decode '{name}' - is encrypted"
        )));
    }
    view.verify_crc()?;
    Ok(octet_stream(Bytes::from(view.decode(MAX_BLOB_SIZE)?)))
}
