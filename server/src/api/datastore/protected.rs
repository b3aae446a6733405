//! `GET`/`PUT /admin/datastore/{store}/protected`: the snapshot's `.protected` marker.

use http::Response;

use crate::api::context::{ds_error, Ctx};
use crate::auth::Privileges;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn get(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    ctx.check_group(
        entry,
        &ns,
        &dir.group,
        Privileges::AUDIT,
        Privileges::BACKUP,
    )
    .await?;
    if !entry
        .store
        .tree()
        .snapshot_exists(&ns, &dir)
        .await
        .map_err(ds_error)?
    {
        return Err(HttpError::not_found(format!("snapshot '{dir}' not found")));
    }
    let protected = entry
        .store
        .tree()
        .is_protected(&ns, &dir)
        .await
        .map_err(ds_error)?;
    Ok(json_data(protected))
}

pub async fn put(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    let protected = ctx
        .params
        .bool("protected")?
        .ok_or_else(|| HttpError::missing_param("protected"))?;
    ctx.check_group(
        entry,
        &ns,
        &dir.group,
        Privileges::MODIFY,
        Privileges::BACKUP,
    )
    .await?;
    entry
        .store
        .tree()
        .set_protected(&ns, &dir, protected)
        .await
        .map_err(ds_error)?;
    Ok(json_data(serde_json::Value::Null))
}
