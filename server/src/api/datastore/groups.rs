//! `GET`/`DELETE /admin/datastore/{store}/groups`.

use http::Response;
use serde_json::json;

use super::records::group_item;
use crate::api::context::{ds_error, Ctx};
use crate::auth::{GroupAccess, Privileges};
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

/// Groups of a namespace the caller sees (all, or with only Backup privilege its own).
pub async fn list(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let access = ctx.store_scope(entry).groups(&ns);
    if access == GroupAccess::Nothing {
        return Err(HttpError::forbidden());
    }
    let store = &entry.store;
    let mut items = Vec::new();
    for group in store.tree().list_groups(&ns).await.map_err(ds_error)? {
        let owner = store
            .tree()
            .group_owner(&ns, &group)
            .await
            .map_err(ds_error)?;
        if !access.admits(&ctx.id.authid, owner.as_deref()) {
            continue;
        }
        let snapshots = store
            .tree()
            .list_snapshots(&ns, &group)
            .await
            .map_err(ds_error)?;
        if snapshots.is_empty() {
            continue;
        }
        let notes = store
            .tree()
            .group_notes(&ns, &group)
            .await
            .map_err(ds_error)?;
        items.push(group_item(&group, &snapshots, owner, notes.as_deref()));
    }
    Ok(json_data(items))
}

/// Removes a group's snapshots (protected ones stay; then PBS 4.2's error unless
/// `error-on-protected=false`) and answers `{"removed-groups","protected-snapshots",
/// "removed-snapshots"}`.
pub async fn delete(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let group = ctx.params.group()?;
    let error_on_protected = ctx.params.bool_or("error-on-protected", true)?;
    ctx.check_group(entry, &ns, &group, Privileges::MODIFY, Privileges::PRUNE)
        .await?;
    let store = &entry.store;
    if !store
        .tree()
        .group_exists(&ns, &group)
        .await
        .map_err(ds_error)?
    {
        return Err(HttpError::not_found(format!(
            "group '{group}' not found - ENOENT: No such file or directory"
        )));
    }
    let stats = store
        .tree()
        .remove_group(&ns, &group)
        .await
        .map_err(ds_error)?;
    if stats.protected_snapshots > 0 && error_on_protected {
        return Err(HttpError::bad_request(format!(
            "group only partially deleted due to protected snapshots ({} of group '{group}' kept)",
            stats.protected_snapshots
        )));
    }
    Ok(json_data(json!({
        "removed-groups": u64::from(stats.protected_snapshots == 0),
        "protected-snapshots": stats.protected_snapshots,
        "removed-snapshots": stats.removed_snapshots,
    })))
}
