//! Snapshot notes (manifest `unprotected.notes`) and group notes.

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
    let (manifest, _) = entry
        .store
        .tree()
        .load_manifest(&ns, &dir)
        .await
        .map_err(ds_error)?;
    Ok(json_data(manifest.notes().unwrap_or("")))
}

pub async fn put(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    let notes = ctx.params.required_str("notes")?;
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
        .update_manifest(&ns, &dir, move |m| m.set_notes(&notes))
        .await
        .map_err(ds_error)?;
    Ok(json_data(serde_json::Value::Null))
}

pub async fn get_group(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let group = ctx.params.group()?;
    ctx.check_group(entry, &ns, &group, Privileges::AUDIT, Privileges::BACKUP)
        .await?;
    let notes = entry
        .store
        .tree()
        .group_notes(&ns, &group)
        .await
        .map_err(ds_error)?;
    Ok(json_data(notes.unwrap_or_default()))
}

pub async fn put_group(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let group = ctx.params.group()?;
    let notes = ctx.params.required_str("notes")?;
    ctx.check_group(entry, &ns, &group, Privileges::MODIFY, Privileges::BACKUP)
        .await?;
    entry
        .store
        .tree()
        .set_group_notes(&ns, &group, &notes)
        .await
        .map_err(ds_error)?;
    Ok(json_data(serde_json::Value::Null))
}
