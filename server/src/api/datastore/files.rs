//! `GET /admin/datastore/{store}/files`: BackupContent of one snapshot.

use http::Response;

use super::records::{content_list, snapshot_item};
use crate::api::context::{ds_error, Ctx};
use crate::auth::Privileges;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn list(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    ctx.check_group(
        entry,
        &ns,
        &dir.group,
        Privileges::AUDIT | Privileges::READ,
        Privileges::BACKUP,
    )
    .await?;
    let store = &entry.store;
    let info = store
        .tree()
        .list_snapshots(&ns, &dir.group)
        .await
        .map_err(ds_error)?
        .into_iter()
        .find(|s| s.dir == dir)
        .ok_or_else(|| HttpError::not_found(format!("snapshot '{dir}' not found")))?;
    if !info.finished {
        return Ok(json_data(content_list(&info.files, None)));
    }
    let (manifest, raw_len) = store
        .tree()
        .load_manifest(&ns, &dir)
        .await
        .map_err(ds_error)?;
    Ok(json_data(
        snapshot_item(&info, Some((&manifest, raw_len)), None).files,
    ))
}
