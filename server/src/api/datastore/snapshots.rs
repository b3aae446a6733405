//! `GET`/`DELETE /admin/datastore/{store}/snapshots`.

use http::Response;

use super::records::snapshot_item;
use crate::api::context::{ds_error, Ctx};
use crate::auth::{GroupAccess, Privileges};
use crate::format::names::{BackupGroup, BackupType};
use crate::net::{json_data, streamed, Body, HttpError};
use crate::state::DatastoreEntry;

/// Snapshots (including unfinished ones) of the groups of a namespace the caller sees,
/// optionally filtered by type/id.
pub async fn list(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let access = ctx.store_scope(entry).groups(&ns);
    if access == GroupAccess::Nothing {
        return Err(HttpError::forbidden());
    }
    let ty: Option<BackupType> = match ctx.params.str("backup-type")? {
        Some(t) => Some(
            t.parse()
                .map_err(|e| HttpError::bad_param("backup-type", e))?,
        ),
        None => None,
    };
    let id = ctx.params.str("backup-id")?;
    let store = &entry.store;
    let groups: Vec<BackupGroup> = match (ty, &id) {
        (Some(ty), Some(id)) => {
            vec![BackupGroup::new(ty, id).map_err(|e| HttpError::bad_param("backup-id", e))?]
        }
        _ => store
            .tree()
            .list_groups(&ns)
            .await
            .map_err(ds_error)?
            .into_iter()
            .filter(|g| ty.is_none_or(|t| g.ty == t) && id.as_ref().is_none_or(|i| &g.id == i))
            .collect(),
    };
    let mut items = Vec::new();
    for group in groups {
        let owner = store
            .tree()
            .group_owner(&ns, &group)
            .await
            .map_err(ds_error)?;
        if !access.admits(&ctx.id.authid, owner.as_deref()) {
            continue;
        }
        let snapshots = match store.tree().list_snapshots(&ns, &group).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(ds_error(e)),
        };
        for info in snapshots {
            let manifest = if info.finished {
                match store.tree().load_manifest(&ns, &info.dir).await {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!("snapshot list: {e}");
                        None
                    }
                }
            } else {
                None
            };
            let m = manifest.as_ref().map(|(m, len)| (m, *len));
            items.push(snapshot_item(&info, m, owner.clone()));
        }
    }
    // PBS streams this list (HTTP/1.1: chunked)
    Ok(streamed(json_data(items)))
}

/// Forgets one snapshot; protected snapshots are refused.
pub async fn delete(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    ctx.check_group(
        entry,
        &ns,
        &dir.group,
        Privileges::MODIFY,
        Privileges::PRUNE,
    )
    .await?;
    let store = &entry.store;
    if !store
        .tree()
        .snapshot_exists(&ns, &dir)
        .await
        .map_err(ds_error)?
    {
        return Err(HttpError::not_found(format!("snapshot '{dir}' not found")));
    }
    if store
        .tree()
        .is_protected(&ns, &dir)
        .await
        .map_err(ds_error)?
    {
        // PBS's exact text (the stock client shows it as is)
        return Err(HttpError::bad_request("cannot remove protected snapshot"));
    }
    // `bypass-governance=1`: the explicit admin path past a governance retention lock.
    if ctx.params.bool_or("bypass-governance", false)? {
        if !ctx.id.superuser {
            return Err(HttpError::new(
                http::StatusCode::FORBIDDEN,
                "bypass-governance is reserved to superusers",
            ));
        }
        store
            .tree()
            .remove_snapshot_bypassing_governance(&ns, &dir)
            .await
            .map_err(ds_error)?;
        return Ok(json_data(serde_json::Value::Null));
    }
    store
        .tree()
        .remove_snapshot(&ns, &dir, false)
        .await
        .map_err(ds_error)?;
    Ok(json_data(serde_json::Value::Null))
}
